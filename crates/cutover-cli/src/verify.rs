//! `cutover verify`: prove the two sides equal by checksum bisection; list, record, re-check
//! and optionally repair every difference.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use cutover_connector::canonical::{value_text, CanonicalError};
use cutover_connector::ConnectorError;
use cutover_model::{TableSchema, Value};
use cutover_verify::bisect::{self, Options, VerifyProgress};
use cutover_verify::{DifferenceKind, VerifyReport};

use crate::{ui, Endpoints, EXIT_DIFFERENT};

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Only these tables (comma-separated; `name` or `schema.name`).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Leave these tables out (comma-separated; `name` or `schema.name`).
    #[arg(long = "exclude-tables", value_delimiter = ',')]
    exclude_tables: Vec<String>,
    /// Parallel workers, each with a connection to each side [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Cap the rows hashed per second on each side, to spare a busy source.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_rows_per_sec: Option<u64>,
    /// While `cutover sync` runs (PostgreSQL): re-check each difference once the applier has
    /// passed the source position at which it was seen, and report only those that persist.
    #[arg(long)]
    live: bool,
    /// How long --live waits for the applier, in seconds.
    #[arg(long, default_value_t = 300)]
    live_timeout: u64,
    /// Rewrite the differing target rows from the source (one transaction per batch), delete
    /// extra ones, and re-check them. Exits 0 when the target is equal afterwards.
    #[arg(long)]
    repair: bool,
    /// Print one JSON document on stdout (tables, differences with table, key, kind, columns).
    #[arg(long)]
    json: bool,
}

fn selected(t: &TableSchema, list: &[String]) -> bool {
    let schema = t.name.schema.as_deref().unwrap_or("main");
    list.iter().any(|n| match n.split_once('.') {
        Some((s, name)) => s == schema && name == t.name.name,
        None => n == &t.name.name,
    })
}

fn select(all: Vec<TableSchema>, args: &VerifyArgs) -> anyhow::Result<Vec<TableSchema>> {
    if let Some(missing) = args
        .tables
        .iter()
        .find(|n| !all.iter().any(|t| selected(t, std::slice::from_ref(n))))
    {
        bail!("table {missing} (from --tables) does not exist on the source");
    }
    let tables: Vec<TableSchema> = all
        .into_iter()
        .filter(|t| args.tables.is_empty() || selected(t, &args.tables))
        .filter(|t| !selected(t, &args.exclude_tables))
        .collect();
    if tables.is_empty() {
        bail!("no tables to verify: the source has none, or --tables/--exclude-tables left none");
    }
    Ok(tables)
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<u8> {
    let (ends, file) = args.endpoints.resolve()?;
    let (source, target) = (ends.source.clone(), ends.target.clone());
    // Verify reads; with --repair each batch of repaired rows commits on its own.
    crate::signals::install(
        Duration::from_secs(1),
        "Verify changed nothing (with --repair: the batches of rows repaired so far are kept; verify again to see what still differs).",
    );
    let mut opts = Options {
        max_rows_per_sec: args
            .max_rows_per_sec
            .or(file.max_rows_per_sec.map(u64::from)),
        live: args.live.then(|| Duration::from_secs(args.live_timeout)),
        repair: args.repair,
        ..Options::default()
    };
    if let Some(j) = args.jobs.or(file.jobs) {
        opts.jobs = j.max(1);
    }
    let progress = VerifyProgress::default();
    let started = Instant::now();
    let engines = crate::endpoint::engines();
    let open = cutover_connector::OpenOptions::default();
    let mut a = engines
        .verifier(&source, &ends.opts(cutover_connector::Side::Source, &open))
        .context("--source")?;
    let mut b = engines
        .verifier(&target, &ends.opts(cutover_connector::Side::Target, &open))
        .context("--target")?;
    if args.live && !(a.live() && b.live()) {
        bail!(
            "--live waits on the sync applier's change-stream position, which {} does not \
             record; stop the writes or run `cutover sync --stop-when-caught-up` first",
            if a.live() { b.describe() } else { a.describe() }
        );
    }
    // Two sides of one engine may agree on a cheaper row hash (PostgreSQL's native one).
    a.negotiate(b.as_ref());
    b.negotiate(a.as_ref());
    let tables = select(a.tables()?, args)?;
    let (open_s, open_t) = (|| a.open(), || b.open());
    let report = with_progress(&progress, args.json, || {
        bisect::verify(&open_s, &open_t, &tables, &opts, &progress)
    })
    .with_context(|| format!("verifying {} against {}", a.describe(), b.describe()))?;
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", json(&report, secs)?);
    } else {
        ui::print_verify(&report);
        println!("({secs:.1}s)");
    }
    Ok(if report.is_equal_now() {
        0
    } else {
        EXIT_DIFFERENT
    })
}

/// Runs `f` while a progress line updates on stderr (on a terminal; a line every 5 s
/// otherwise, none with --json off a terminal).
fn with_progress<R>(
    progress: &VerifyProgress,
    json: bool,
    f: impl FnOnce() -> Result<R, ConnectorError>,
) -> Result<R, ConnectorError> {
    let tty = std::io::stderr().is_terminal();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if tty {
                    eprint!("\r\x1b[2K{}", status(progress));
                } else if !json && last.elapsed() >= Duration::from_secs(5) {
                    last = Instant::now();
                    eprintln!("{}", status(progress));
                }
            }
            if tty {
                eprint!("\r\x1b[2K");
            }
        });
        let r = f();
        done.store(true, Ordering::Relaxed);
        r
    })
}

fn status(p: &VerifyProgress) -> String {
    let stage = p.stage.lock().map(|s| s.clone()).unwrap_or_default();
    if !stage.is_empty() {
        return format!("verify: {stage}");
    }
    format!(
        "verify: {}/{} slices hashed, {} of ~{} rows, {} ranges narrowing, {} differences",
        p.slices_done.load(Ordering::Relaxed),
        p.slices_total.load(Ordering::Relaxed),
        p.rows_hashed.load(Ordering::Relaxed),
        p.rows_estimate.load(Ordering::Relaxed),
        p.ranges_open.load(Ordering::Relaxed),
        p.differences.load(Ordering::Relaxed)
    )
}

fn json_value(v: &Value) -> Result<serde_json::Value, CanonicalError> {
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => (*i).into(),
        Value::UInt(u) => (*u).into(),
        Value::Bool(b) => (*b).into(),
        other => value_text(other)?.into(),
    })
}

fn json(report: &VerifyReport, secs: f64) -> anyhow::Result<String> {
    use serde_json::json;
    let tables: Vec<serde_json::Value> = report
        .tables
        .iter()
        .map(|t| {
            json!({
                "table": t.table.to_string(),
                "source_rows": t.source_rows,
                "target_rows": t.target_rows,
                "missing": t.missing,
                "extra": t.extra,
                "different": t.different,
                "note": t.note,
            })
        })
        .collect();
    let mut differences = Vec::new();
    for t in &report.tables {
        for d in &t.differences {
            let key: serde_json::Map<String, serde_json::Value> = t
                .key_columns
                .iter()
                .zip(&d.key)
                .map(|(c, v)| {
                    json_value(v)
                        .map(|j| (c.clone(), j))
                        .map_err(|e| e.at(&t.table, c, &d.key))
                })
                .collect::<Result<_, _>>()?;
            let columns: Vec<serde_json::Value> = match &d.kind {
                DifferenceKind::Different { columns } => columns
                    .iter()
                    .map(|c| {
                        json!({
                            "column": c.column,
                            "source": c.source.as_deref().map(|v| bisect::short(Some(v))),
                            "target": c.target.as_deref().map(|v| bisect::short(Some(v))),
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            differences.push(json!({
                "table": t.table.to_string(),
                "key": key,
                "kind": d.kind.name(),
                "columns": columns,
            }));
        }
    }
    Ok(json!({
        "equal": report.is_equal(),
        "equal_now": report.is_equal_now(),
        "rows_compared": report.rows_compared(),
        "difference_count": report.differences(),
        "tables": tables,
        "differences": differences,
        "live": report.live.as_ref().map(|l| json!({
            "candidates": l.candidates,
            "resolved": l.resolved,
            "waited_for": l.waited_for.as_ref().map(|p| p.to_string()),
        })),
        "repair": report.repair.as_ref().map(|r| json!({
            "upserted": r.upserted,
            "deleted": r.deleted,
            "still_different": r.still_different,
            "skipped_tables": r.skipped_tables,
        })),
        "seconds": (secs * 1000.0).round() / 1000.0,
    })
    .to_string())
}
