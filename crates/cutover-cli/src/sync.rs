//! `cutover sync`, `cutover status` and `cutover cleanup`: copy and follow changes, show where a
//! migration stands, and remove what cutover installed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use clap::Args;
use cutover_connector::{CancellationToken, OpenOptions, SourceFactory, Switchover, TargetFactory};
use cutover_postgres::{PgConnect, PgEndpoint};

use crate::endpoint;
use crate::{signals, ui, Endpoints};

#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tables: crate::TableArgs,
    /// Parallel chunk readers [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Exit 0 once the copy is done and the target has applied every change the source had
    /// when last checked (for scripts that drain, e.g. before a switch).
    #[arg(long)]
    stop_when_caught_up: bool,
    /// PostgreSQL: empty target tables that already exist (otherwise refused, unless the target
    /// holds a migration of cutover's to resume).
    #[arg(long)]
    truncate: bool,
    /// When the source's columns change during sync: `auto` adds, drops and widens them on the
    /// target at the point in the change stream where they happened; `stop` stops sync there,
    /// naming the change and the statement to run on the target (then run sync again). A type
    /// change the target's column cannot hold without loss always stops.
    /// [default: auto]
    #[arg(long, value_enum, value_name = "auto|stop")]
    ddl: Option<DdlArg>,
    /// PostgreSQL: the migration's name; the source's replication slot and publication are
    /// `cutover_<name>` [default: the target's database name]. Give concurrent migrations from
    /// one source different names.
    #[arg(long)]
    name: Option<String>,
    /// When a connection breaks, a server restarts or refuses connections, or a lock or
    /// statement times out: reconnect and try again with backoff for up to this long before
    /// stopping with an error [default: 300].
    #[arg(long, value_name = "SECONDS")]
    retry_for: Option<u64>,
    /// How the existing rows are copied. `auto`: with the two engines' own bulk path where the
    /// pair has one (PostgreSQL → PostgreSQL: binary COPY in the replication slot's snapshot,
    /// then the changes from there), else chunk by chunk through the change applier; `rows`:
    /// always through the applier (chunks read beside the change stream, as for any pair).
    /// [default: auto]
    #[arg(long, value_enum, value_name = "auto|rows")]
    copy_method: Option<CopyMethod>,
    /// Chunk size of the copy, in MB of table data [default: 64 on the bulk path, 4 through
    /// the applier].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_mb: Option<u64>,
    /// Cap the copy's rate, in rows per second across all readers, to spare a busy source
    /// (changes are never held back).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_rows_per_sec: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMethod {
    Auto,
    Rows,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DdlArg {
    Auto,
    Stop,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The target of the migration: postgres://… (its control store holds the status).
    #[arg(long, env = "CUTOVER_TARGET")]
    target: Option<String>,
    /// The source too (optional): then status also says whether the source refuses writes.
    #[arg(long, env = "CUTOVER_SOURCE")]
    source: Option<String>,
    /// The source's libpq variables under this prefix (OLD_PGHOST, OLD_PGPASSWORD, …), as for sync.
    #[arg(long, env = "CUTOVER_SOURCE_ENV_PREFIX", value_name = "PREFIX")]
    source_env_prefix: Option<String>,
    /// The target's libpq variables under this prefix (NEW_PGHOST, NEW_PGPASSWORD, …).
    #[arg(long, env = "CUTOVER_TARGET_ENV_PREFIX", value_name = "PREFIX")]
    target_env_prefix: Option<String>,
    /// Read the target from a TOML file (`target = "…"`).
    #[arg(long, env = "CUTOVER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Targets without transactions (nats://): the state store sync was given (--state).
    #[arg(long, env = "CUTOVER_STATE", value_name = "URL")]
    state: Option<String>,
    /// The migration's name, as given to sync (names the default state file).
    #[arg(long)]
    name: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Warn when the source's slot retains more WAL than this many MB.
    #[arg(long, default_value_t = 1024)]
    warn_wal_mb: u64,
}

#[derive(Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tables: crate::TableArgs,
    /// PostgreSQL: the migration's name, as given to sync [default: the target's database name].
    #[arg(long)]
    name: Option<String>,
}

pub fn sync(args: &SyncArgs) -> anyhow::Result<u8> {
    let (ends, file) = args.endpoints.resolve()?;
    let (source, target) = (ends.source.clone(), ends.target.clone());
    let mut opts = cutover_pipeline::SyncOptions {
        stop_when_caught_up: args.stop_when_caught_up,
        // Recorded when sync stops or hands over: the rows a switch verifies first.
        recent_keys: 2_000,
        ddl: match args.ddl.or(file.ddl) {
            Some(DdlArg::Stop) => cutover_pipeline::DdlPolicy::Stop,
            Some(DdlArg::Auto) | None => cutover_pipeline::DdlPolicy::Auto,
        },
        retry_budget: Duration::from_secs(args.retry_for.or(file.retry_for).unwrap_or(300)),
        ..Default::default()
    };
    if let Some(j) = args.jobs.or(file.jobs) {
        opts.jobs = j.max(1);
    }
    opts.max_rows_per_sec = args
        .max_rows_per_sec
        .or(file.max_rows_per_sec)
        .and_then(std::num::NonZeroU32::new);
    if let Some(mb) = args.chunk_mb.or(file.chunk_mb) {
        opts.chunk_bytes = mb.max(1) << 20;
    }
    let (tables, exclude) = args.tables.resolve(&file);
    let stop = signals::install(
        Duration::from_secs(3),
        "What was applied is kept: run the same command to resume.",
    );
    let control = cutover_pipeline::Control::with_token(stop.clone());
    (opts.tables, opts.exclude) = (tables, exclude);
    let open = ends.with_state(args.tables.open_options(
        &file,
        args.name.as_ref(),
        OpenOptions {
            truncate: args.truncate || file.truncate.unwrap_or(false),
            jobs: opts.jobs,
            ..OpenOptions::default()
        },
    ));
    let engines = endpoint::engines();
    loop {
        let (s, t) = engines
            .pair(&source, &target, &open, &ends.env)
            .context("opening the migration's two sides")?;
        // After a switch, changes flow back from the new primary.
        let mut back = None;
        if let Some(pair) = t.switchover(s.as_ref()) {
            // A switch that was interrupted (crash, kill) is finished or undone first, so that
            // exactly one side takes writes; one running elsewhere is waited for.
            settle_switch(pair.as_ref(), &stop)?;
            if stop.is_cancelled() {
                println!("stopped before following changes; nothing to resume");
                return Ok(0);
            }
            if pair.direction()? == cutover_connector::Direction::Reverse {
                back = Some(pair.sides(cutover_connector::Orientation::Rollback)?);
            }
        }
        let report = match back {
            Some((from, to)) => {
                eprintln!(
                    "the migration is switched: following changes back from {} to {}",
                    SourceFactory::describe(from.as_ref()),
                    TargetFactory::describe(to.as_ref())
                );
                run(from.as_ref(), to.as_ref(), &opts, &control)?
            }
            None => {
                let copied = bulk_copy(s.as_ref(), t.as_ref(), args, &file, &opts, &stop)?;
                if stop.is_cancelled() {
                    print_bulk_stop(copied.as_ref());
                    return Ok(0);
                }
                let mut report = run(s.as_ref(), t.as_ref(), &opts, &control)?;
                if let Some(c) = copied {
                    report.rows_copied += c.rows;
                    report.bytes_copied += c.bytes;
                }
                report
            }
        };
        if report.handed_over && !stop.is_cancelled() {
            eprintln!(
                "handed over to a switch at {}; following changes again once it is done, in the direction it leaves",
                report.position
            );
            continue;
        }
        print_report(&report);
        return Ok(0);
    }
}

/// Finishes or undoes a switch of this migration that a crash or kill interrupted; waits while
/// one runs in another process (a sync that handed over waits here for the switch it handed
/// over to).
fn settle_switch(pair: &dyn Switchover, stop: &CancellationToken) -> anyhow::Result<()> {
    let mut waiting = false;
    loop {
        match crate::switch::recover(pair) {
            Ok(Some(done)) => {
                eprintln!("{done}");
                return Ok(());
            }
            Ok(None) => return Ok(()),
            Err(cutover_switch::SwitchError::Running(why)) => {
                if !waiting {
                    eprintln!("waiting: {why}");
                    waiting = true;
                }
                // Asked again every 200 ms; a stop ends the wait at once.
                let stopped = cutover_connector::runtime::block_on(async {
                    tokio::select! {
                        () = stop.cancelled() => true,
                        () = tokio::time::sleep(Duration::from_millis(200)) => false,
                    }
                });
                if stopped {
                    return Ok(());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The pair's bulk copy, when it has one and the migration still needs it (a new migration, or
/// a bulk copy a stop or crash interrupted): the rows copied with the engines' own bulk path
/// and change capture started in its snapshot, so that the pipeline then only follows changes.
/// `None`: nothing to do here (the pipeline copies, or the copy is done).
fn bulk_copy(
    s: &dyn SourceFactory,
    t: &dyn TargetFactory,
    args: &SyncArgs,
    file: &crate::config::FileConfig,
    opts: &cutover_pipeline::SyncOptions,
    stop: &CancellationToken,
) -> anyhow::Result<Option<cutover_connector::BulkCopyReport>> {
    if args.copy_method.or(file.copy_method) == Some(CopyMethod::Rows) {
        return Ok(None);
    }
    let Some(bulk) = t.bulk_copy(s) else {
        return Ok(None);
    };
    if !bulk.pending_for_sync()? {
        return Ok(None);
    }
    eprintln!(
        "copying with {} in change capture's snapshot, then following changes from there",
        bulk.describe()
    );
    let copy_opts = cutover_connector::BulkCopyOptions {
        jobs: opts.jobs,
        chunk_bytes: args.chunk_mb.or(file.chunk_mb).map(|mb| mb.max(1) << 20),
        max_rows_per_sec: opts.max_rows_per_sec,
        truncate: args.truncate || file.truncate.unwrap_or(false),
        consistent_snapshot: true,
        capture: true,
    };
    let progress = cutover_connector::Progress::default();
    let ui_done = AtomicBool::new(false);
    let report = std::thread::scope(|sc| {
        let ui = sc.spawn(|| ui::follow(&progress, &ui_done));
        let r = bulk.run(&copy_opts, &progress, stop);
        ui_done.store(true, Ordering::Relaxed);
        let _ = ui.join();
        r
    })
    .with_context(|| {
        format!(
            "the copy from {} to {} stopped; chunks copied are kept, run the same command to resume",
            s.describe(),
            t.describe()
        )
    })?;
    if !report.interrupted {
        eprintln!(
            "copied {} rows ({}) in {:.1}s{}; following changes",
            report.rows,
            ui::bytes(report.bytes),
            report.elapsed.as_secs_f64(),
            if report.resumed { ", resumed" } else { "" }
        );
        if !report.not_copied.is_empty() {
            eprintln!(
                "not created on the target (create them by hand; switch refuses while they are missing): {}",
                report.not_copied.join(", ")
            );
        }
    }
    Ok(Some(report))
}

fn print_bulk_stop(copied: Option<&cutover_connector::BulkCopyReport>) {
    match copied {
        Some(c) => println!(
            "stopped: {} rows copied ({}) before the stop; chunks copied are kept, run the same command to resume",
            c.rows,
            ui::bytes(c.bytes)
        ),
        None => println!("stopped before following changes; nothing to resume"),
    }
}

fn run(
    source: &dyn SourceFactory,
    target: &dyn TargetFactory,
    opts: &cutover_pipeline::SyncOptions,
    control: &cutover_pipeline::Control,
) -> anyhow::Result<cutover_pipeline::SyncReport> {
    let progress = cutover_pipeline::Progress::default();
    let ui_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let ui = s.spawn(|| ui::follow(&progress, &ui_done));
        let r = cutover_pipeline::run(source, target, opts, control, &progress);
        ui_done.store(true, Ordering::Relaxed);
        let _ = ui.join();
        r
    })
    .with_context(|| {
        format!(
            "sync from {} to {} stopped; what was applied is kept, run the same command to resume",
            source.describe(),
            target.describe()
        )
    })
}

fn print_report(report: &cutover_pipeline::SyncReport) {
    println!(
        "{} {} rows copied ({}), {} changes applied, position {}, {:.1}s",
        if report.interrupted {
            "stopped:"
        } else {
            "caught up:"
        },
        report.rows_copied,
        ui::bytes(report.bytes_copied),
        report.changes_applied,
        report.position,
        report.elapsed.as_secs_f64()
    );
}

pub fn cleanup(args: &CleanupArgs) -> anyhow::Result<u8> {
    let (ends, file) = args.endpoints.resolve()?;
    let (source, target) = (ends.source.clone(), ends.target.clone());
    let open = ends.with_state(args.tables.open_options(
        &file,
        args.name.as_ref(),
        OpenOptions::default(),
    ));
    let (s, t) = endpoint::engines().pair(&source, &target, &open, &ends.env)?;
    if let Some(pair) = t.switchover(s.as_ref()) {
        // Both directions, the fences and the switch's state too.
        println!("{}", pair.cleanup()?);
        return Ok(0);
    }
    let mut src = s.source()?;
    let tables = src.tables()?;
    src.stop_capture(&tables)?;
    t.sink()?.cleanup()?;
    println!(
        "removed change capture from {} and the control store from {}",
        s.describe(),
        t.describe()
    );
    Ok(0)
}

/// What `cutover status` shows, read from the target's control store.
#[derive(Debug, serde::Serialize)]
struct Status {
    target: String,
    mode: String,
    phase: String,
    direction: Option<String>,
    tables: Vec<TableStatus>,
    applied_position: Option<String>,
    source_position: Option<String>,
    lag_bytes: Option<i64>,
    /// Lag in the source's change-log entries (SQLite sources).
    lag_changes: Option<i64>,
    lag_seconds: Option<f64>,
    changes_applied: Option<i64>,
    changes_per_sec: Option<f64>,
    slot: Option<String>,
    slot_retained_wal_bytes: Option<i64>,
    /// Seconds since the running sync last wrote its status.
    updated_seconds_ago: Option<f64>,
    /// Whether a sync reported within the last 10 s; when not, rates and lag are left out
    /// (they would be the last run's, not now's).
    sync_running: bool,
    /// A switch or rollback that began and has not finished (running, or interrupted).
    switch_in_progress: Option<SwitchStatus>,
    /// Whether each side refuses the application's writes (`None`: not known).
    target_fenced: Option<bool>,
    source_fenced: Option<bool>,
    warnings: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct SwitchStatus {
    command: String,
    step: String,
    fence: String,
    pid: i32,
    /// Whether a process holds the switch lock now (the switch is running).
    running: bool,
    started_seconds_ago: f64,
}

#[derive(Debug, serde::Serialize)]
struct TableStatus {
    table: String,
    chunks: i64,
    chunks_done: i64,
    rows_copied: i64,
}

pub fn status(args: &StatusArgs) -> anyhow::Result<u8> {
    let file = match &args.config {
        Some(p) => crate::config::load(p)?,
        None => crate::config::FileConfig::default(),
    };
    let target_env = args
        .target_env_prefix
        .clone()
        .or(file.target_env_prefix.clone());
    let target = crate::pick_side(
        &args.target,
        &file.target,
        &target_env,
        "target",
        "CUTOVER_TARGET",
    )?;
    let engines = endpoint::engines();
    let open = OpenOptions {
        env_prefix: target_env,
        name: args.name.clone().or(file.name.clone()),
        state: args.state.clone().or(file.state.clone()),
        state_dir: crate::config_dir(args.config.as_deref()),
        ..OpenOptions::default()
    };
    let t = engines.target(&target, &open).context("--target")?;
    // PostgreSQL adds what only it has (the slot, fences, a switch under way); every other
    // target is read through the state store it hosts.
    let status = match t.as_any().downcast_ref::<PgConnect>() {
        Some(pt) => pg_status(&engines, &pt.endpoint, args, &file)?,
        None => store_status(t.as_ref())?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(0)
}

/// The status of a migration as its state store tells it (any target that hosts one).
fn store_status(t: &dyn TargetFactory) -> anyhow::Result<Status> {
    let Some(mut store) = t.state()? else {
        bail!(
            "{} hosts no state store of cutover's that status can read",
            t.describe()
        );
    };
    let Some(st) = store.status()? else {
        bail!(
            "{} holds no migration of cutover's (no state store): start one with `cutover sync`",
            t.describe()
        );
    };
    let chunks = store.chunks()?;
    let mut tables: Vec<TableStatus> = Vec::new();
    for c in &chunks {
        let name = c.table.to_string();
        if tables.last().is_none_or(|t| t.table != name) {
            tables.push(TableStatus {
                table: name,
                chunks: 0,
                chunks_done: 0,
                rows_copied: 0,
            });
        }
        if let Some(t) = tables.last_mut() {
            t.chunks += 1;
            t.chunks_done += i64::from(c.done);
            t.rows_copied += c.rows.map_or(0, |r| i64::try_from(r).unwrap_or(i64::MAX));
        }
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let to_i64 = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
    let caught_up = st.lag_bytes.or(st.lag_changes) == Some(0);
    let phase = match store.phase()? {
        Some(p) => p,
        None if chunks.iter().any(|c| !c.done) => "copying".into(),
        None => "replicating".into(),
    };
    let mut s = Status {
        target: store.describe(),
        mode: "sync".into(),
        phase,
        direction: None,
        tables,
        applied_position: st.applied.map(|p| p.to_string()),
        source_position: st.source.map(|p| p.to_string()),
        lag_bytes: to_i64(st.lag_bytes),
        lag_changes: to_i64(st.lag_changes),
        lag_seconds: if caught_up {
            Some(0.0)
        } else {
            st.committed_at
                .map(|t| ((now - t).max(0.0) * 1000.0).round() / 1000.0)
        },
        changes_applied: to_i64(st.changes_applied),
        changes_per_sec: st.changes_per_sec,
        slot: None,
        slot_retained_wal_bytes: None,
        updated_seconds_ago: st.updated_at.map(|t| (now - t).max(0.0)),
        sync_running: false,
        switch_in_progress: None,
        target_fenced: None,
        source_fenced: None,
        warnings: Vec::new(),
    };
    if s.updated_seconds_ago.is_some_and(|a| a > 10.0) {
        s.warnings.push(format!(
            "no sync has reported for {:.0}s: sync is not running (start it again with the same command); the figures above are from when it last ran",
            s.updated_seconds_ago.unwrap_or_default()
        ));
    }
    Ok(without_stale_figures(s))
}

/// A status whose sync has not reported for 10 s says the sync is not running and shows no
/// rate or lag: those would be figures of the last run, and a lag of 0 would be a lie.
fn without_stale_figures(mut s: Status) -> Status {
    s.sync_running = s.updated_seconds_ago.is_some_and(|a| a <= 10.0);
    if !s.sync_running {
        s.changes_per_sec = None;
        s.lag_bytes = None;
        s.lag_changes = None;
        s.lag_seconds = None;
    }
    s
}

fn pg_status(
    engines: &cutover_connector::Engines,
    endpoint: &PgEndpoint,
    args: &StatusArgs,
    file: &crate::config::FileConfig,
) -> anyhow::Result<Status> {
    let open = OpenOptions {
        env_prefix: args
            .source_env_prefix
            .clone()
            .or(file.source_env_prefix.clone()),
        ..OpenOptions::default()
    };
    let endpoint = endpoint.clone();
    // The source only adds whether it refuses writes (PostgreSQL).
    let source = match args.source.clone().or(file.source.clone()) {
        Some(s) => engines
            .source(&s, &open)
            .context("--source")?
            .as_any()
            .downcast_ref::<PgConnect>()
            .map(|p| p.endpoint.clone()),
        None => None,
    };
    Ok(without_stale_figures(read_status(
        &endpoint,
        source.as_ref(),
        args.warn_wal_mb,
    )?))
}

fn read_status(
    endpoint: &PgEndpoint,
    source: Option<&PgEndpoint>,
    warn_wal_mb: u64,
) -> anyhow::Result<Status> {
    let mut c = endpoint.connect_control()?;
    let exists: bool = c
        .query_one("SELECT to_regclass('_cutover.migration') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        bail!(
            "{} holds no migration of cutover's (no _cutover schema): nothing has been copied or synced into it",
            endpoint.redacted()
        );
    }
    let has_mode: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '_cutover' AND table_name = 'migration' AND column_name = 'mode')",
            &[],
        )?
        .get(0);
    let m = c.query_one(
        &format!(
            "SELECT phase, {} FROM _cutover.migration",
            if has_mode { "mode" } else { "'copy'::text" }
        ),
        &[],
    )?;
    let tables = c
        .query(
            "SELECT format('%s.%s', table_schema, table_name), count(*), count(*) FILTER (WHERE done), coalesce(sum(rows) FILTER (WHERE done), 0)::bigint
               FROM _cutover.chunks GROUP BY table_schema, table_name ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| TableStatus {
            table: r.get(0),
            chunks: r.get(1),
            chunks_done: r.get(2),
            rows_copied: r.get(3),
        })
        .collect();
    let has_replication: bool = c
        .query_one(
            "SELECT to_regclass('_cutover.replication') IS NOT NULL",
            &[],
        )?
        .get(0);
    let r = if has_replication {
        c.query_opt(
            "SELECT position, source_position, lag_bytes, committed_at, changes_applied, changes_per_sec,
                    slot, history_bytes, direction, extract(epoch FROM now() - updated_at)::float8,
                    to_jsonb(r) ->> 'lag_changes'
               FROM _cutover.replication r",
            &[],
        )?
    } else {
        None
    };
    let mut s = Status {
        target: endpoint.redacted().to_owned(),
        phase: m.get(0),
        mode: m.get(1),
        direction: None,
        tables,
        applied_position: None,
        source_position: None,
        lag_bytes: None,
        lag_changes: None,
        lag_seconds: None,
        changes_applied: None,
        changes_per_sec: None,
        slot: None,
        slot_retained_wal_bytes: None,
        updated_seconds_ago: None,
        sync_running: false,
        switch_in_progress: None,
        target_fenced: Some(cutover_postgres::refuses_writes(endpoint)?),
        source_fenced: match source {
            Some(e) => Some(cutover_postgres::refuses_writes(e)?),
            None => None,
        },
        warnings: Vec::new(),
    };
    let journal = c
        .query_opt(
            "SELECT CASE want WHEN 'reverse' THEN 'switch' ELSE 'rollback' END, step, fence, pid,
                    extract(epoch FROM now() - started_at)::float8,
                    EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                             AND ((classid::bigint << 32) | objid::bigint) =
                                 hashtextextended('cutover-switch:' || (SELECT slot FROM _cutover.replication), 0))
               FROM _cutover.switch_journal
              WHERE to_regclass('_cutover.replication') IS NOT NULL",
            &[],
        )
        .ok()
        .flatten();
    if let Some(j) = journal {
        let sw = SwitchStatus {
            command: j.try_get(0)?,
            step: j.try_get(1)?,
            fence: j.try_get(2)?,
            pid: j.try_get(3)?,
            started_seconds_ago: j.try_get(4)?,
            running: j.try_get(5)?,
        };
        if !sw.running {
            s.warnings.push(format!(
                "a {} (process {}) was interrupted at step {} and nothing is finishing it: one side may refuse writes. \
                 Run `cutover switch --abort --source … --target …` (or `cutover sync`, which does it first): \
                 past the flip it is finished, before it undone",
                sw.command, sw.pid, sw.step
            ));
        }
        s.switch_in_progress = Some(sw);
    }
    if let Some(r) = r {
        s.applied_position = r.get(0);
        s.source_position = r.get(1);
        s.lag_bytes = r.get(2);
        let committed: Option<SystemTime> = r.get(3);
        s.changes_applied = r.get(4);
        s.changes_per_sec = r.get(5);
        s.slot = r.get(6);
        s.slot_retained_wal_bytes = r.get(7);
        s.direction = r.get(8);
        s.updated_seconds_ago = r.get(9);
        s.lag_changes = r
            .try_get::<_, Option<String>>(10)?
            .and_then(|v| v.parse().ok());
        // Lag in time: how old the last applied source commit is, while anything is pending.
        s.lag_seconds = match (s.lag_bytes.or(s.lag_changes), committed) {
            (Some(0), _) => Some(0.0),
            (_, Some(t)) => SystemTime::now()
                .duration_since(t)
                .ok()
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            _ => None,
        };
        if let Some(b) = s.slot_retained_wal_bytes {
            if b as u64 > warn_wal_mb << 20 {
                s.warnings.push(format!(
                    "the source's replication slot {} retains {} of WAL: keep sync running (or run `cutover cleanup`) before the source's disk fills",
                    s.slot.as_deref().unwrap_or("?"),
                    ui::bytes(b as u64)
                ));
            }
        }
        let switched = s.phase == "switched";
        if switched && s.target_fenced == Some(true) && s.switch_in_progress.is_none() {
            s.warnings.push("the migration is switched, yet the target (the primary now) refuses new sessions' writes: run `cutover switch --abort --source … --target …`, which opens it".into());
        }
        if !switched && s.source_fenced == Some(true) && s.switch_in_progress.is_none() {
            s.warnings.push("the source (the primary) refuses new sessions' writes (read-only), and no switch is running: run `cutover switch --abort --source … --target …`, or lift it by hand (ALTER DATABASE … RESET default_transaction_read_only)".into());
        }
        if s.updated_seconds_ago.is_some_and(|a| a > 10.0) && s.phase != "switched" {
            s.warnings.push(format!(
                "no sync has reported for {:.0}s: sync is not running (start it again with the same command), and the slot retains WAL meanwhile",
                s.updated_seconds_ago.unwrap_or_default()
            ));
        }
    }
    Ok(s)
}

fn print_status(s: &Status) {
    println!("migration into {}", s.target);
    println!(
        "  phase       {} ({}{})",
        s.phase,
        s.mode,
        s.direction
            .as_deref()
            .map(|d| format!(", direction {d}"))
            .unwrap_or_default()
    );
    let (chunks, done): (i64, i64) = s
        .tables
        .iter()
        .fold((0, 0), |(c, d), t| (c + t.chunks, d + t.chunks_done));
    println!(
        "  copy        {done}/{chunks} chunks done in {} tables",
        s.tables.len()
    );
    for t in s.tables.iter().filter(|t| t.chunks_done < t.chunks) {
        println!("    {:<40} {}/{} chunks", t.table, t.chunks_done, t.chunks);
    }
    if let Some(p) = &s.applied_position {
        println!(
            "  applied     {p} (source at {})",
            s.source_position.as_deref().unwrap_or("?")
        );
    }
    if s.applied_position.is_some() && !s.sync_running {
        println!(
            "  sync        not running{}",
            s.updated_seconds_ago
                .map(|a| format!(" (last reported {}s ago)", a.round()))
                .unwrap_or_default()
        );
    }
    if s.applied_position.is_some() && s.sync_running {
        println!(
            "  lag         {} / {}",
            match (s.lag_bytes, s.lag_changes) {
                (Some(b), _) => ui::bytes(b.max(0) as u64),
                (None, Some(c)) => format!("{c} changes"),
                (None, None) => "?".into(),
            },
            s.lag_seconds
                .map(|l| format!("{l:.1}s"))
                .unwrap_or_else(|| "?".into())
        );
        println!(
            "  changes     {} applied, {}/s",
            s.changes_applied.unwrap_or(0),
            s.changes_per_sec
                .map(|r| format!("{r:.0}"))
                .unwrap_or_else(|| "?".into())
        );
        if let Some(b) = s.slot_retained_wal_bytes {
            println!(
                "  slot        {} retains {} of WAL on the source",
                s.slot.as_deref().unwrap_or("?"),
                ui::bytes(b.max(0) as u64)
            );
        }
        if let Some(a) = s.updated_seconds_ago {
            println!(
                "  reported    {}s ago",
                Duration::from_secs_f64(a.max(0.0)).as_secs()
            );
        }
    }
    if let Some(sw) = &s.switch_in_progress {
        println!(
            "  {:<11} at step {} (fence {}, process {}, started {:.0}s ago){}",
            sw.command,
            sw.step,
            sw.fence,
            sw.pid,
            sw.started_seconds_ago,
            if sw.running {
                ", running"
            } else {
                ", INTERRUPTED"
            }
        );
    }
    let fenced = |f: Option<bool>| match f {
        Some(true) => "refuses new sessions' writes",
        Some(false) => "takes writes",
        None => "?",
    };
    println!("  target      {}", fenced(s.target_fenced));
    if s.source_fenced.is_some() {
        println!("  source      {}", fenced(s.source_fenced));
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}
