//! `cutover demo`: the whole lifecycle on embedded SQLite under a live workload.
//!
//! 1. create a school platform's database (schools, students, sessions with JSON answers,
//!    annotations, attachments with 1 KB–600 KB blobs);
//! 2. start the application's workload (inserts, updates, deletes across all tables);
//! 3. sync: copy in parallel chunks while capture records every change, then follow;
//! 4. switch: fence the workload's writes, drain to the source's last position, pin the
//!    target's state, move the workload to the target, lift the fence (the pause is measured);
//! 5. verify the frozen source against the target as it was at the switch, row by row.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use cutover_connector::{OpenOptions, Source, SourceFactory};
use cutover_pipeline::{Control, Phase, Progress, SyncOptions};
use cutover_sqlite::demo::{create_dataset, Workload};
use cutover_sqlite::SqliteEndpoint;

use crate::{endpoint, ui, EXIT_DIFFERENT};

#[derive(Args)]
pub struct DemoArgs {
    /// Folder for the demo's two databases; earlier demo databases in it are replaced.
    #[arg(long, default_value = "./cutover-demo")]
    dir: PathBuf,
    /// Rows in the source database, across its five tables.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(100..))]
    rows: u64,
    /// Seconds to keep following the live workload after the copy, before switching.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Workload transactions per second.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Parallel chunk readers [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Migrate into this database instead of a second SQLite file, e.g.
    /// postgres://user@host:5432/demo (an empty database: the demo creates its five tables
    /// there). The workload stays on SQLite: once the target has caught up it is stopped,
    /// the last changes drained, and both sides compared by checksums in their own engines.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
}

/// Stops the workload when dropped, so no exit path leaves its thread running.
struct StopOnDrop<'w>(&'w Workload);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

pub fn run(args: &DemoArgs) -> anyhow::Result<u8> {
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        bail!(
            "--seconds must be a number of seconds ≥ 0, got {}",
            args.seconds
        );
    }
    if args.dir.exists() && !args.dir.is_dir() {
        bail!(
            "--dir {} is a file, not a folder; give a folder for the demo's databases",
            args.dir.display()
        );
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the demo folder {}", args.dir.display()))?;
    let source_path = args.dir.join("source.db");
    let target_path = match &args.target {
        Some(url)
            if matches!(
                cutover_connector::scheme_of(url).as_deref(),
                None | Some("sqlite" | "file")
            ) =>
        {
            PathBuf::from(
                url.strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("file://"))
                    .unwrap_or(url),
            )
        }
        _ => args.dir.join("target.db"),
    };
    let into = match &args.target {
        Some(url)
            if cutover_connector::scheme_of(url).is_some_and(|s| s != "sqlite" && s != "file") =>
        {
            Some(other_target(url)?)
        }
        _ => None,
    };
    endpoint::remove_database(&source_path)?;
    if into.is_none() {
        endpoint::remove_database(&target_path)?;
    }
    let started = Instant::now();

    println!(
        "cutover demo: migrating a school platform's SQLite database under live writes\n  source {}\n  target {}",
        source_path.display(),
        target_path.display()
    );
    let shape = {
        let bar = spinner("creating the source database");
        let t = Instant::now();
        let shape = create_dataset(&source_path, args.rows, 42, &mut |n| {
            bar.set_message(format!("creating the source database: {n} rows"))
        })?;
        bar.finish_and_clear();
        let size = std::fs::metadata(&source_path)
            .map(|m| m.len())
            .unwrap_or(0);
        println!(
            "created {} rows ({} schools, {} students, {} sessions, {} annotations, {} attachments), {} in {:.1}s",
            shape.total(),
            shape.schools,
            shape.students,
            shape.sessions,
            shape.annotations,
            shape.attachments,
            ui::bytes(size),
            t.elapsed().as_secs_f64()
        );
        shape
    };

    if let Some(url) = into {
        return run_into(args, &source_path, shape, &url, started);
    }
    let source = SqliteEndpoint::new(&source_path);
    let target = SqliteEndpoint::new(&target_path);
    let workload = Workload::new(&source_path, shape, args.rate);
    let mut opts = SyncOptions::default();
    if let Some(j) = args.jobs {
        opts.jobs = j.max(1);
    }
    let control = Control::default();
    let progress = Progress::default();

    let ui_done = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| -> anyhow::Result<Outcome> {
        let _stop = StopOnDrop(&workload);
        let sync = s.spawn(|| cutover_pipeline::run(&source, &target, &opts, &control, &progress));
        let load = start_workload(s, &workload, &progress, &sync, args.rate);

        // Copy, then follow the workload for a while.
        let copy_started = Instant::now();
        let follow_ui = s.spawn(|| ui::follow(&progress, &ui_done));
        while progress.phase() != Phase::Replicating && !sync.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let copy_time = copy_started.elapsed();
        if sync.is_finished() {
            ui_done.store(true, Ordering::Relaxed);
            let _ = follow_ui.join();
            let r = sync.join();
            return match r {
                Ok(Err(e)) => Err(e).context("sync failed during the copy"),
                _ => bail!("sync stopped before the copy finished"),
            };
        }
        let copied_rows = progress.rows_copied.load(Ordering::Relaxed);
        let copied_bytes = progress.bytes_copied.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        ui_done.store(true, Ordering::Relaxed);
        let _ = follow_ui.join();
        println!(
            "copy done in {:.1}s; followed the live workload for {:.1}s: {} changes applied, lag {}",
            copy_time.as_secs_f64(),
            args.seconds,
            progress.changes_applied.load(Ordering::Relaxed),
            ui::lag_text(&progress)
        );

        // Switch.
        let mut src = source.source()?;
        let mut snapshot = cutover_sqlite::SqliteReader::open(target.path())?;
        workload.reset_gap();
        let mut fence = workload.fence();
        let fenced_at = fence.fenced_at;
        let last = src.current_position()?;
        control.drain_to(last);
        let report = match sync.join() {
            Ok(r) => r.context("sync failed while draining")?,
            Err(_) => bail!("the sync thread panicked"),
        };
        let drained_at = Instant::now();
        snapshot.begin_snapshot()?;
        fence.switch_to(&target_path);
        drop(fence);
        let flipped_at = Instant::now();
        println!(
            "switch: fenced writes, drained to {} in {:.1} ms, workload moved to the target: write pause {:.1} ms",
            report.position,
            (drained_at - fenced_at).as_secs_f64() * 1e3,
            (flipped_at - fenced_at).as_secs_f64() * 1e3
        );

        // Let the application run on the target, then stop it.
        std::thread::sleep(Duration::from_millis(1_000));
        workload.stop();
        match load.join() {
            Ok(r) => r.context("the demo workload failed")?,
            Err(_) => bail!("the workload thread panicked"),
        }

        // Verify the frozen source against the target as it was at the switch.
        let t = Instant::now();
        let bar = spinner("verifying row by row");
        let tables = src.tables()?;
        let mut reader = cutover_sqlite::SqliteReader::open(source.path())?;
        let verify =
            cutover_verify::verify_tables(&mut reader, &mut snapshot, &tables, 5_000, &mut |d| {
                bar.set_message(format!("verifying row by row: {} done", d.table))
            })?;
        bar.finish_and_clear();
        snapshot.end_snapshot()?;
        Ok(Outcome {
            copied_rows,
            copied_bytes,
            copy_time,
            changes: report.changes_applied,
            superseded: report.rows_superseded,
            pause: flipped_at - fenced_at,
            drain: drained_at - fenced_at,
            verify,
            verify_time: t.elapsed(),
        })
    })?;

    let w = &workload.stats;
    let o = &outcome;
    let secs = o.copy_time.as_secs_f64().max(1e-9);
    println!("\nsummary");
    println!(
        "  copied      {} rows, {} in {:.1}s ({:.0} rows/s, {}/s)",
        o.copied_rows,
        ui::bytes(o.copied_bytes),
        secs,
        o.copied_rows as f64 / secs,
        ui::bytes((o.copied_bytes as f64 / secs) as u64)
    );
    print_replicated(o.changes, w, o.superseded);
    println!(
        "  switch      write pause {:.1} ms (fence → drain {:.1} ms → flip); longest gap between the workload's commits {:.1} ms; {} transactions on the target since",
        o.pause.as_secs_f64() * 1e3,
        o.drain.as_secs_f64() * 1e3,
        workload.longest_gap().as_secs_f64() * 1e3,
        w.after_switch.load(Ordering::Relaxed)
    );
    println!(
        "  verify      {}: {} rows compared row by row in {} tables, {} differences ({:.1}s)",
        if o.verify.is_equal() {
            "equal"
        } else {
            "DIFFERENT"
        },
        o.verify.rows_compared(),
        o.verify.tables.len(),
        o.verify.differences(),
        o.verify_time.as_secs_f64()
    );
    println!("  total       {:.1}s", started.elapsed().as_secs_f64());
    if !o.verify.is_equal() {
        ui::print_verify(&o.verify);
        return Ok(EXIT_DIFFERENT);
    }
    println!(
        "\nThe source still carries capture triggers; remove them and the target's control store with:\n  cutover cleanup --source sqlite://{} --target sqlite://{}",
        source_path.display(),
        target_path.display()
    );
    Ok(0)
}

struct Outcome {
    copied_rows: u64,
    copied_bytes: u64,
    copy_time: Duration,
    changes: u64,
    superseded: u64,
    pause: Duration,
    drain: Duration,
    verify: cutover_verify::VerifyReport,
    verify_time: Duration,
}

fn spinner(msg: &str) -> indicatif::ProgressBar {
    let bar = if ui::is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        println!("{msg}…");
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(msg.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The target of `demo --target URL` when it is not SQLite: opened through the engine registry,
/// refused if it already holds a migration (the demo starts from an empty database).
fn other_target(url: &str) -> anyhow::Result<String> {
    let target = endpoint::engines()
        .target(url, &OpenOptions::default())
        .context("--target")?;
    if let Some(pg) = target
        .as_any()
        .downcast_ref::<cutover_postgres::PgConnect>()
    {
        let mut c = pg.endpoint.connect_control().context("--target")?;
        let leftovers: Vec<String> = c
            .query(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p') AND (n.nspname = '_cutover'
                     OR (n.nspname = 'public' AND c.relname IN ('schools', 'students', 'sessions', 'annotations', 'attachments')))
                  ORDER BY 1",
                &[],
            )
            .context("--target")?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        if !leftovers.is_empty() {
            bail!(
                "{} is not empty: it holds {} (a previous demo?). Give an empty database \
                 (createdb …), or remove them: `cutover cleanup --source sqlite://DIR/source.db \
                 --target {}` and DROP TABLE the demo's tables",
                pg.endpoint.redacted(),
                leftovers.join(", "),
                pg.endpoint.redacted()
            );
        }
    }
    Ok(url.to_owned())
}

/// The demo into another engine: the SQLite workload runs while sync copies and follows it
/// into `url`; then the workload stops, the last changes are drained, and verify compares the
/// two engines by checksums pushed into each.
fn run_into(
    args: &DemoArgs,
    source_path: &std::path::Path,
    shape: cutover_sqlite::demo::DatasetShape,
    url: &str,
    started: Instant,
) -> anyhow::Result<u8> {
    let source_url = format!("sqlite://{}", source_path.display());
    let engines = endpoint::engines();
    let mut opts = SyncOptions::default();
    if let Some(j) = args.jobs {
        opts.jobs = j.max(1);
    }
    let open = OpenOptions {
        jobs: opts.jobs,
        ..OpenOptions::default()
    };
    let (source, paired) = engines.pair(&source_url, url, &open, &Default::default())?;
    let workload = Workload::new(source_path, shape, args.rate);
    let control = Control::default();
    let progress = Progress::default();
    let ui_done = AtomicBool::new(false);
    println!("  target {}", paired.describe());
    let (copy_time, drain, report) = std::thread::scope(|s| -> anyhow::Result<_> {
        let _stop = StopOnDrop(&workload);
        let sync = s.spawn(|| {
            cutover_pipeline::run(source.as_ref(), paired.as_ref(), &opts, &control, &progress)
        });
        let load = start_workload(s, &workload, &progress, &sync, args.rate);
        let copy_started = Instant::now();
        let follow_ui = s.spawn(|| ui::follow(&progress, &ui_done));
        while progress.phase() != Phase::Replicating && !sync.is_finished() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let copy_time = copy_started.elapsed();
        if !sync.is_finished() {
            std::thread::sleep(Duration::from_secs_f64(args.seconds));
        }
        ui_done.store(true, Ordering::Relaxed);
        let _ = follow_ui.join();
        if sync.is_finished() {
            return match sync.join() {
                Ok(Err(e)) => Err(e).context("sync failed during the copy"),
                _ => bail!("sync stopped before the copy finished"),
            };
        }
        println!(
            "copy done in {:.1}s; followed the live workload for {:.1}s: {} changes applied, lag {}",
            copy_time.as_secs_f64(),
            args.seconds,
            progress.changes_applied.load(Ordering::Relaxed),
            ui::lag_text(&progress)
        );
        // The application stops writing; sync drains what it wrote last.
        workload.stop();
        match load.join() {
            Ok(r) => r.context("the demo workload failed")?,
            Err(_) => bail!("the workload thread panicked"),
        }
        let stopped = Instant::now();
        control.drain_to(source.source()?.current_position()?);
        let report = match sync.join() {
            Ok(r) => r.context("sync failed while draining")?,
            Err(_) => bail!("the sync thread panicked"),
        };
        Ok((copy_time, stopped.elapsed(), report))
    })?;
    println!(
        "workload stopped; drained to {} in {:.1} ms",
        report.position,
        drain.as_secs_f64() * 1e3
    );

    // Both engines hash their own rows; only digests cross, then the differing rows.
    let t = Instant::now();
    let bar = spinner("verifying by checksums in both engines");
    let mut a = engines.verifier(&source_url, &open)?;
    let mut b = engines.verifier(url, &open)?;
    a.negotiate(b.as_ref());
    b.negotiate(a.as_ref());
    let tables = a.tables()?;
    let verify = cutover_verify::bisect::verify(
        &|| a.open(),
        &|| b.open(),
        &tables,
        &cutover_verify::bisect::Options::default(),
        &cutover_verify::bisect::VerifyProgress::default(),
    )?;
    bar.finish_and_clear();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let w = &workload.stats;
    println!("\nsummary");
    println!(
        "  copied      {} rows, {} in {:.1}s",
        report.rows_copied,
        ui::bytes(report.bytes_copied),
        copy_time.as_secs_f64()
    );
    print_replicated(report.changes_applied, w, report.rows_superseded);
    println!(
        "  drain       {:.1} ms after the workload stopped (sync ran {:.1}s)",
        drain.as_secs_f64() * 1e3,
        secs
    );
    println!(
        "  verify      {}: {} rows compared by checksums in {} tables, {} differences ({:.1}s)",
        if verify.is_equal() {
            "equal"
        } else {
            "DIFFERENT"
        },
        verify.rows_compared(),
        verify.tables.len(),
        verify.differences(),
        t.elapsed().as_secs_f64()
    );
    println!("  total       {:.1}s", started.elapsed().as_secs_f64());
    if !verify.is_equal() {
        ui::print_verify(&verify);
        return Ok(EXIT_DIFFERENT);
    }
    println!(
        "\nRemove the source's capture triggers and the target's control store with:\n  cutover cleanup --source {source_url} --target {}",
        paired.describe()
    );
    Ok(0)
}

/// Starts the application's workload once sync captures changes (it is past preparing), so
/// that every row the workload changes reaches the target as a change and the summary's counts
/// add up; the copy still runs under the workload.
fn start_workload<'s, 'e, T>(
    s: &'s std::thread::Scope<'s, 'e>,
    workload: &'e Workload,
    progress: &Progress,
    sync: &std::thread::ScopedJoinHandle<'s, T>,
    rate: u32,
) -> std::thread::ScopedJoinHandle<'s, Result<(), cutover_connector::ConnectorError>> {
    while progress.phase() == Phase::Preparing && !sync.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let load = s.spawn(move || workload.run(7));
    println!("workload started: about {rate} transactions/s on the source");
    load
}

/// The summary's line on what the workload did on the source and what sync applied of it: the
/// rows it changed there add up to the changes applied (each row change is one change).
fn print_replicated(changes: u64, w: &cutover_sqlite::demo::WorkloadStats, superseded: u64) {
    let (i, u, d) = (
        w.inserts.load(Ordering::Relaxed),
        w.updates.load(Ordering::Relaxed),
        w.deletes.load(Ordering::Relaxed),
    );
    let rows = i + u + d;
    println!(
        "  replicated  {changes} changes: the workload's {} transactions on the source changed {rows} rows ({i} inserted, {u} updated, {d} deleted){}; {superseded} copied rows superseded by newer changes",
        w.transactions.load(Ordering::Relaxed),
        if rows == changes { "" } else { " — not the same count: see `cutover verify`" },
    );
}
