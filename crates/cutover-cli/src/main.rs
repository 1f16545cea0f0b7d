//! `cutover`: move a live database to another with zero downtime and proof that nothing was
//! lost. This binary is the only place that knows argv, terminals and exit codes.

mod config;
mod copy;
mod demo;
mod endpoint;
mod signals;
mod switch;
mod sync;
mod ui;
mod verify;

use std::process::ExitCode;

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
    after_help = "Exit codes: 0 success, 1 the two sides differ, 2 error, 130 stopped by Ctrl-C/SIGTERM before it could stop cleanly (resumable).\n\
        Databases: postgres://user@host:port/db?sslmode=…, 'host=… dbname=…' or '' (libpq's PG* variables, ~/.pgpass, pg_service.conf) (copy, sync, status, cleanup), sqlite://PATH (all but copy and status).\n\
        Settings also come from CUTOVER_SOURCE, CUTOVER_TARGET and a --config TOML file; --source-env-prefix/--target-env-prefix give each side its own PG* variables.",
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
    /// Copy what is not yet copied, then follow every change until interrupted (Ctrl-C or
    /// SIGTERM stops cleanly, with the position saved) or, with --stop-when-caught-up, until the
    /// target has caught up. PostgreSQL: logical replication (slot and publication cutover_NAME
    /// on the source; needs wal_level=logical).
    Sync(sync::SyncArgs),
    /// Prove source and target equal by checksum bisection (only digests cross the network
    /// until a range differs); list and record every difference; exit 0 equal, 1 different.
    Verify(verify::VerifyArgs),
    /// Move the application's writes to the target: check lag, fence the source, drain the last
    /// changes, verify the rows changed last, prepare reverse replication, flip. Measures and
    /// prints the write pause; undoes everything if a step before the flip fails.
    Switch(switch::SwitchArgs),
    /// Move writes back to the source after a switch, with the writes made on the target since
    /// (they were replicated back): the switch's steps in the other direction.
    Rollback(switch::SwitchArgs),
    /// Show a migration's phase, copy progress per table, replication lag (bytes and seconds),
    /// applied position, changes/s, and warnings (slot retaining WAL, sync not running).
    Status(sync::StatusArgs),
    /// Remove what cutover installed: capture triggers and change log (SQLite) or replication
    /// slot and publication (PostgreSQL) on the source, the control store on the target.
    /// Migrated data stays.
    Cleanup(sync::CleanupArgs),
}

#[derive(Args)]
struct Endpoints {
    /// The database to migrate from: postgres://user@host:5432/db?sslmode=verify-full, a libpq
    /// keyword/value string ('host=db dbname=app sslmode=require'), '' (everything from PG*
    /// variables or a service), or sqlite://app.db. Passwords need not be here: PGPASSWORD,
    /// ~/.pgpass and service files are read as libpq reads them (README: Connecting).
    #[arg(long, env = "CUTOVER_SOURCE")]
    source: Option<String>,
    /// The database to migrate to, same forms (a SQLite file is created if missing).
    #[arg(long, env = "CUTOVER_TARGET")]
    target: Option<String>,
    /// Read the source's libpq variables with this prefix: `--source-env-prefix OLD_` reads
    /// OLD_PGHOST, OLD_PGPASSWORD, OLD_PGSERVICE, OLD_PGPASSFILE, … for the source, and no plain
    /// PG* variable. Without it, the plain PG* variables fill in what the string leaves out.
    #[arg(long, env = "CUTOVER_SOURCE_ENV_PREFIX", value_name = "PREFIX")]
    source_env_prefix: Option<String>,
    /// The same for the target (`--target-env-prefix NEW_`: NEW_PGHOST, NEW_PGPASSWORD, …).
    #[arg(long, env = "CUTOVER_TARGET_ENV_PREFIX", value_name = "PREFIX")]
    target_env_prefix: Option<String>,
    /// Read settings from a TOML file (source, target, source_env_prefix, target_env_prefix,
    /// tables, exclude_tables, jobs, max_rows_per_sec, truncate, snapshot); flags and CUTOVER_*
    /// variables override it.
    #[arg(long, env = "CUTOVER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

/// A migration's two sides as given: connection strings and where each side's environment
/// variables come from.
struct Ends {
    source: String,
    target: String,
    env: cutover_connector::EnvPrefixes,
}

impl Ends {
    /// Options for opening the source (`Side::Source`) or the target alone, with its prefix.
    fn opts(
        &self,
        side: cutover_connector::Side,
        base: &cutover_connector::OpenOptions,
    ) -> cutover_connector::OpenOptions {
        cutover_connector::OpenOptions {
            env_prefix: match side {
                cutover_connector::Side::Source => self.env.source.clone(),
                cutover_connector::Side::Target => self.env.target.clone(),
            },
            ..base.clone()
        }
    }
}

/// A side's connection string: the flag or the file's; with an environment prefix and no
/// string, the empty string (everything from that prefix's variables or service).
fn pick_side(
    flag: &Option<String>,
    from_file: &Option<String>,
    prefix: &Option<String>,
    what: &str,
    var: &str,
) -> anyhow::Result<String> {
    flag.clone()
        .or_else(|| from_file.clone())
        .or_else(|| prefix.as_ref().map(|_| String::new()))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no {what} database: pass --{what} URL (or --{what} '' to take everything from the PG* variables), set {var}, or put {what} = \"URL\" in a --config file"
            )
        })
}

impl Endpoints {
    /// The source and target from flags, environment or the config file, and the file's
    /// other settings.
    fn resolve(&self) -> anyhow::Result<(Ends, config::FileConfig)> {
        let file = match &self.config {
            Some(p) => config::load(p)?,
            None => config::FileConfig::default(),
        };
        let env = cutover_connector::EnvPrefixes {
            source: self
                .source_env_prefix
                .clone()
                .or_else(|| file.source_env_prefix.clone()),
            target: self
                .target_env_prefix
                .clone()
                .or_else(|| file.target_env_prefix.clone()),
        };
        let source = pick_side(
            &self.source,
            &file.source,
            &env.source,
            "source",
            "CUTOVER_SOURCE",
        )?;
        let target = pick_side(
            &self.target,
            &file.target,
            &env.target,
            "target",
            "CUTOVER_TARGET",
        )?;
        Ok((
            Ends {
                source,
                target,
                env,
            },
            file,
        ))
    }
}

/// Which tables to take.
#[derive(Args)]
pub struct TableArgs {
    /// Only these tables (comma-separated; `name` or `schema.name`).
    #[arg(long, value_delimiter = ',')]
    tables: Vec<String>,
    /// Leave these tables out (comma-separated; `name` or `schema.name`).
    #[arg(long = "exclude-tables", value_delimiter = ',')]
    exclude_tables: Vec<String>,
}

impl TableArgs {
    /// (tables, exclude): the flags, else the config file's lists.
    fn resolve(&self, file: &config::FileConfig) -> (Vec<String>, Vec<String>) {
        let pick = |flag: &Vec<String>, from_file: &Option<Vec<String>>| {
            if flag.is_empty() {
                from_file.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        (
            pick(&self.tables, &file.tables),
            pick(&self.exclude_tables, &file.exclude_tables),
        )
    }
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
    #[cfg(feature = "failpoints")]
    let _failpoints = failpoints();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Copy(args) => copy::run(&args),
        Command::Sync(args) => sync::sync(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Status(args) => sync::status(&args),
        Command::Switch(args) => switch::switch(&args),
        Command::Rollback(args) => switch::rollback(&args),
        Command::Cleanup(args) => sync::cleanup(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Tests' crash points: `FAILPOINTS=name=panic` ends the process at `name` as `kill -9` would
/// (no unwinding, no undo), so that what follows is the recovery of a real crash.
#[cfg(feature = "failpoints")]
fn failpoints() -> fail::FailScenario<'static> {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        std::process::abort();
    }));
    fail::FailScenario::setup()
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
