//! `cutover`: move a live database to another with zero downtime and proof that nothing was
//! lost. This binary is the only place that knows argv, terminals and exit codes.

mod config;
mod copy;
mod demo;
mod endpoint;
mod ui;
mod verify;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Exit codes: 0 ok, 1 differences found (verify, demo), 2 error.
const EXIT_DIFFERENT: u8 = 1;
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(
    name = "cutover",
    version,
    about = "Move a live database to another with zero downtime, and prove nothing was lost.",
    long_about = "Move a live database to another with zero downtime, and prove nothing was lost.\n\n\
        A migration copies existing rows in parallel chunks while change capture records every \
        later write; one ordered applier writes both to the target, committing each batch with \
        its checkpoint, so a crash or kill at any moment resumes where it stopped. verify then \
        compares both sides row by row.\n\n\
        Try it: `cutover demo` runs a whole migration of a school platform's SQLite database \
        under live writes, in well under a minute.",
    after_help = "Exit codes: 0 success, 1 the two sides differ, 2 error.\n\
        Databases: postgres://user:pass@host:port/db?sslmode=… (copy), sqlite://PATH (all commands).\n\
        Settings also come from CUTOVER_SOURCE, CUTOVER_TARGET and a --config TOML file.",
    propagate_version = true
)]
struct Cli {
    /// Log level for diagnostics on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "CUTOVER_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole migration on embedded SQLite under a live workload: copy, follow changes,
    /// switch with a measured write pause, verify row by row.
    Demo(demo::DemoArgs),
    /// Copy every table once, fast: parallel chunks, resumable after any crash, optionally
    /// throttled. Creates the schema on the target first and builds indexes and constraints
    /// after the data.
    Copy(copy::CopyArgs),
    /// Copy every table, then follow changes until interrupted (Ctrl-C stops cleanly, with the
    /// position saved) or, with --stop-when-caught-up, until the target has caught up.
    Sync(SyncArgs),
    /// Prove source and target equal by checksum bisection (only digests cross the network
    /// until a range differs); list and record every difference; exit 0 equal, 1 different.
    Verify(verify::VerifyArgs),
    /// Remove what cutover installed: capture triggers and change log on the source, the
    /// control store on the target. Migrated data stays.
    Cleanup(Endpoints),
}

#[derive(Args)]
struct Endpoints {
    /// The database to migrate from: postgres://user:pass@host:5432/db?sslmode=require, or
    /// sqlite://app.db.
    #[arg(long, env = "CUTOVER_SOURCE")]
    source: Option<String>,
    /// The database to migrate to, same forms (a SQLite file is created if missing).
    #[arg(long, env = "CUTOVER_TARGET")]
    target: Option<String>,
    /// Read settings from a TOML file (source, target, tables, exclude_tables, jobs,
    /// max_rows_per_sec, truncate, snapshot); flags and CUTOVER_* variables override it.
    #[arg(long, env = "CUTOVER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

impl Endpoints {
    /// The source and target URLs from flags, environment or the config file, and the file's
    /// other settings.
    fn resolve(&self) -> anyhow::Result<(String, String, config::FileConfig)> {
        let file = match &self.config {
            Some(p) => config::load(p)?,
            None => config::FileConfig::default(),
        };
        let pick = |flag: &Option<String>, from_file: &Option<String>, what: &str, var: &str| {
            flag.clone().or_else(|| from_file.clone()).ok_or_else(|| {
                anyhow::anyhow!(
                    "no {what} database: pass --{what} URL, set {var}, or put {what} = \"URL\" in a --config file"
                )
            })
        };
        let source = pick(&self.source, &file.source, "source", "CUTOVER_SOURCE")?;
        let target = pick(&self.target, &file.target, "target", "CUTOVER_TARGET")?;
        Ok((source, target, file))
    }
}

#[derive(Args)]
struct SyncArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Leave these tables out (comma-separated).
    #[arg(long = "exclude-tables", value_delimiter = ',')]
    exclude_tables: Vec<String>,
    /// Parallel chunk readers [default: number of CPUs].
    #[arg(long)]
    jobs: Option<usize>,
    /// Exit 0 once the copy is done and the target has applied every change made so far.
    #[arg(long)]
    stop_when_caught_up: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors exit 2.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Copy(args) => copy::run(&args),
        Command::Sync(args) => sync(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Cleanup(args) => cleanup(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn init_tracing(level: &str) {
    let filter: tracing_subscriber::filter::Targets = level.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .with(filter)
        .try_init();
}

fn sync(args: &SyncArgs) -> anyhow::Result<u8> {
    use cutover_connector::Connect;
    use std::sync::Arc;
    let (source, target, _) = args.endpoints.resolve()?;
    let source = endpoint::sqlite(&source, endpoint::Role::Source)?;
    let target = endpoint::sqlite(&target, endpoint::Role::Target)?;
    let mut opts = cutover_pipeline::SyncOptions {
        stop_when_caught_up: args.stop_when_caught_up,
        tables: args.tables.clone(),
        exclude: args.exclude_tables.clone(),
        ..Default::default()
    };
    if let Some(j) = args.jobs {
        opts.jobs = j.max(1);
    }
    let control = Arc::new(cutover_pipeline::Control::default());
    {
        let control = Arc::clone(&control);
        ctrlc::set_handler(move || control.stop()).context("installing the Ctrl-C handler")?;
    }
    let progress = cutover_pipeline::Progress::default();
    let ui_done = std::sync::atomic::AtomicBool::new(false);
    let report = std::thread::scope(|s| {
        let ui = s.spawn(|| ui::follow(&progress, &ui_done));
        let r = cutover_pipeline::run(&source, &target, &opts, &control, &progress);
        ui_done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = ui.join();
        r
    })
    .with_context(|| {
        format!(
            "sync from {} to {} stopped; what was applied is kept, run the same command to resume",
            source.describe(),
            target.describe()
        )
    })?;
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
    Ok(0)
}

fn cleanup(args: &Endpoints) -> anyhow::Result<u8> {
    use cutover_connector::{Connect, Sink, Source};
    let (source, target, _) = args.resolve()?;
    let source = endpoint::sqlite(&source, endpoint::Role::Existing)?;
    let target = endpoint::sqlite(&target, endpoint::Role::Existing)?;
    let mut src = source.source()?;
    let tables = src.tables()?;
    src.stop_capture(&tables)?;
    target.sink()?.cleanup()?;
    println!(
        "removed change capture from {} and the control store from {}",
        source.describe(),
        target.describe()
    );
    Ok(0)
}
