//! `cutover copy`: the existing rows, fast, resumable, throttled.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context};
use clap::Args;
use cutover_connector::{BulkCopyOptions, BulkCopyReport as CopyReport, Progress};

use crate::{ui, Endpoints, EXIT_ERROR};

#[derive(Args)]
pub struct CopyArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tables: crate::TableArgs,
    /// Parallel workers across all tables [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Cap the total copy rate, in rows per second, to spare a busy source.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_rows_per_sec: Option<u32>,
    /// Empty target tables that already exist and copy again (otherwise a target that holds
    /// any of the tables, outside a copy of cutover's to resume, is refused).
    #[arg(long)]
    truncate: bool,
    /// Do not read the whole copy in one exported snapshot (for engines without
    /// pg_export_snapshot, e.g. CockroachDB); each chunk is still consistent.
    #[arg(long)]
    no_snapshot: bool,
    /// Target chunk size in MB of table data [default: 64].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_mb: Option<u64>,
    /// Print a JSON summary on stdout at the end (tables, rows, bytes, seconds, MB/s).
    #[arg(long)]
    json: bool,
    /// Start change capture before copying (a replication slot and publication cutover_NAME on
    /// the source, wal_level=logical) and copy in the slot's snapshot, so that a later
    /// `cutover sync` follows on from there without copying again. The slot keeps WAL on the
    /// source until sync follows it or `cutover cleanup` drops it.
    #[arg(long)]
    capture: bool,
    /// With --capture: the migration's name [default: the target's database name].
    #[arg(long)]
    name: Option<String>,
}

pub fn run(args: &CopyArgs) -> anyhow::Result<u8> {
    let (ends, file) = args.endpoints.resolve()?;
    let (source, target) = (ends.source.clone(), ends.target.clone());
    let open = args
        .tables
        .open_options(&file, args.name.as_ref(), Default::default());
    let (s, t) = crate::endpoint::engines().pair(&source, &target, &open, &ends.env)?;
    // The copy on its own is a bulk path two engines share (PostgreSQL → PostgreSQL: binary
    // COPY, one exported snapshot); other pairs copy and catch up in one go with sync.
    let Some(bulk) = t.bulk_copy(s.as_ref()) else {
        bail!(
            "`cutover copy` on its own is the bulk path two engines share (PostgreSQL → \
             PostgreSQL so far); for {} → {} use `cutover sync --stop-when-caught-up` with the \
             same --source and --target: it copies and catches up in one go",
            s.describe(),
            t.describe()
        );
    };
    let mut opts = BulkCopyOptions {
        truncate: args.truncate || file.truncate.unwrap_or(false),
        consistent_snapshot: !args.no_snapshot && file.snapshot.unwrap_or(true),
        chunk_bytes: Some(args.chunk_mb.or(file.chunk_mb).unwrap_or(64).max(1) << 20),
        max_rows_per_sec: args
            .max_rows_per_sec
            .or(file.max_rows_per_sec)
            .and_then(NonZeroU32::new),
        ..BulkCopyOptions::default()
    };
    if let Some(j) = args.jobs.or(file.jobs) {
        opts.jobs = j.max(1);
    }
    opts.capture = args.capture || file.capture.unwrap_or(false);
    if opts.capture && !opts.consistent_snapshot {
        bail!("--capture copies in the replication slot's snapshot; it cannot be combined with --no-snapshot");
    }
    let stop = crate::signals::install_saying(
        std::time::Duration::from_secs(10),
        "Finished chunks are kept: run the same command to resume.",
        format!(
            "stopping: finishing the chunks in flight (at most {}, one per worker); finished chunks are kept",
            opts.jobs.max(1)
        ),
    );
    let progress = Progress::default();
    let ui_done = AtomicBool::new(false);
    let result = std::thread::scope(|sc| {
        let ui =
            (!args.json || ui::is_terminal()).then(|| sc.spawn(|| ui::follow(&progress, &ui_done)));
        let r = bulk.run(&opts, &progress, &stop);
        ui_done.store(true, Ordering::Relaxed);
        if let Some(ui) = ui {
            let _ = ui.join();
        }
        r
    });
    let report =
        result.with_context(|| format!("copy from {} to {} failed", s.describe(), t.describe()))?;
    if args.json {
        println!("{}", json(&report));
    } else {
        print_report(&report);
    }
    if let (Some(capture), false, false) = (&report.capture, args.json, report.interrupted) {
        let again = match report.outside_snapshot {
            Some((0, _)) | None => "nothing is copied again".to_owned(),
            Some((chunks, rows)) => format!(
                "it copies again the {chunks} chunks ({rows} rows) read outside change capture's snapshot \
                 (before an interruption, or resumed), since changes made meanwhile could be missing; the rest is not copied again"
            ),
        };
        eprintln!(
            "change capture runs since the copy's snapshot: {capture} on the source from now on. \
             Run `cutover sync` with the same --source/--target to follow the changes ({again}), \
             or `cutover cleanup` to drop it"
        );
    }
    if report.interrupted {
        eprintln!("interrupted: chunks copied so far are kept; run the same command to resume");
        return Ok(EXIT_ERROR);
    }
    Ok(0)
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn json(r: &CopyReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let tables: Vec<serde_json::Value> = r
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "schema": t.name.schema,
                "table": t.name.name,
                "rows": t.rows,
                "bytes": t.bytes,
                "chunks": t.chunks,
                "resumed_chunks": t.resumed_chunks,
            })
        })
        .collect();
    serde_json::json!({
        "tables": tables,
        "rows": r.rows,
        "bytes": r.bytes,
        "seconds": (secs * 1000.0).round() / 1000.0,
        "mb_per_s": (mb_per_s(r.bytes, secs) * 10.0).round() / 10.0,
        "resumed": r.resumed,
        "chunks_copied_again_by_sync": r.outside_snapshot.map(|(c, _)| c),
        "rows_copied_again_by_sync": r.outside_snapshot.map(|(_, n)| n),
        "interrupted": r.interrupted,
        "post_data_steps": r.post_data_steps,
        "not_copied": r.not_copied,
    })
    .to_string()
}

fn print_report(r: &CopyReport) {
    let secs = r.elapsed.as_secs_f64();
    println!(
        "{:<40} {:>12} {:>10} {:>7}",
        "table", "rows", "bytes", "chunks"
    );
    for t in &r.tables {
        let chunks = if t.resumed_chunks > 0 {
            format!("{} ({} resumed)", t.chunks, t.resumed_chunks)
        } else {
            t.chunks.to_string()
        };
        println!(
            "{:<40} {:>12} {:>10} {:>7}",
            t.name.to_string(),
            t.rows,
            ui::bytes(t.bytes),
            chunks
        );
    }
    println!(
        "{} {} rows, {} in {:.1}s ({:.1} MB/s){}; {} index/constraint steps",
        if r.interrupted {
            "stopped before the end, having copied"
        } else {
            "copied"
        },
        r.rows,
        ui::bytes(r.bytes),
        secs,
        mb_per_s(r.bytes, secs),
        if r.resumed { ", resumed" } else { "" },
        r.post_data_steps
    );
    if !r.not_copied.is_empty() {
        println!(
            "not created on the target (create them by hand; switch refuses while they are missing): {}",
            r.not_copied.join(", ")
        );
    }
}
