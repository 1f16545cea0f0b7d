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
        Databases: postgres://user@host:port/db?sslmode=…, 'host=… dbname=…' or '' (libpq's PG* variables, ~/.pgpass, pg_service.conf), and sqlite://PATH, as source or target in any pair for sync, verify, status and cleanup; copy on its own, switch and rollback between two PostgreSQL databases.\n\
        Settings also come from CUTOVER_SOURCE, CUTOVER_TARGET and a --config TOML file; --source-env-prefix/--target-env-prefix give each side its own PG* variables.",
    propagate_version = true
)]
struct Cli {
    /// Log level for diagnostics on stderr: error, warn, info, debug, trace.
    #[arg(long, global = true, env = "CUTOVER_LOG", default_value = "warn")]
    log: String,
    /// Diagnostics on stderr as text lines, or one JSON object per line (for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        value_name = "text|json"
    )]
    log_format: LogFormat,
    /// No progress output (bars or status lines); summaries, reports and errors still print.
    /// Progress is drawn as bars only when stdout is a terminal and cutover runs in its
    /// foreground; a background run (`cutover sync … &`) prints a line every 30 s, a
    /// redirected one every 2 s. NO_COLOR turns colours off.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole migration on embedded SQLite under a live workload: copy, follow changes,
    /// switch with a measured write pause, verify row by row.
    #[command(
        after_help = "Examples:\n  cutover demo                                   # ./cutover-demo, 200,000 rows, < 1 min\n  cutover demo --rows 20000 --seconds 2 --rate 100\n  cutover demo --target postgres://me@localhost/demo   # into an empty PostgreSQL database\n\nEngines: the source is always SQLite; the target SQLite (default) or PostgreSQL.\nExit codes: 0 both sides equal, 1 they differ, 2 error."
    )]
    Demo(demo::DemoArgs),
    /// Copy every table once, fast: parallel chunks, resumable after any crash, optionally
    /// throttled. Creates the schema on the target first and builds indexes and constraints
    /// after the data.
    #[command(
        after_help = "Examples:\n  cutover copy --source postgres://app@old/app --target postgres://app@new/app --jobs 8\n  cutover copy --capture --source \"$OLD\" --target \"$NEW\"   # then `cutover sync` follows on without copying again\n  cutover copy --config migration.toml --json\n\nEngines: PostgreSQL → PostgreSQL (binary COPY in one snapshot). Other pairs copy with\n`cutover sync --stop-when-caught-up`.\nExit codes: 0 copied, 2 error, 130 stopped by Ctrl-C/SIGTERM before it could stop cleanly (finished chunks are kept: run the same command to resume)."
    )]
    Copy(copy::CopyArgs),
    /// Copy what is not yet copied, then follow every change until interrupted (Ctrl-C or
    /// SIGTERM stops cleanly, with the position saved) or, with --stop-when-caught-up, until the
    /// target has caught up. PostgreSQL: logical replication (slot and publication cutover_NAME
    /// on the source; needs wal_level=logical).
    #[command(
        after_help = "Examples:\n  cutover sync --source postgres://app@old/app --target postgres://app@new/app &\n  cutover sync --source sqlite://app.db --target postgres://app@new/app --stop-when-caught-up\n  cutover sync --source mysql://repl@old/shop --target postgres://app@new/shop   # MariaDB's binlog\n  cutover sync --source postgres://app@old/app --target sqlite://copy.db --tables students,sessions\n  cutover sync --source postgres://app@old/app --target 'redis://cache:6379/0?prefix=app:'   # rows as hashes\n\nCopy: PostgreSQL → PostgreSQL copies with binary COPY in the replication slot's snapshot, then follows the changes from there; every other pair (or --copy-method rows) copies chunk by chunk beside the change stream through the applier.\nEngines: any source with any target among SQLite, PostgreSQL and MySQL/MariaDB (MySQL 8: as a target; MariaDB 10.6+: both); Redis as a target (redis://host:port/db?prefix=…&format=hash|json, password from REDISCLI_AUTH).\nExit codes: 0 caught up (--stop-when-caught-up) or stopped cleanly, 2 error (what was applied is kept: run the same command to resume), 130 stopped by a second Ctrl-C."
    )]
    Sync(sync::SyncArgs),
    /// Prove source and target equal by checksum bisection (only digests cross the network
    /// until a range differs); list and record every difference; exit 0 equal, 1 different.
    #[command(
        after_help = "Examples:\n  cutover verify --source postgres://app@old/app --target postgres://app@new/app\n  cutover verify --live --source \"$OLD\" --target \"$NEW\"    # while sync runs: re-checks what the applier has not passed\n  cutover verify --source sqlite://app.db --target postgres://app@new/app --json\n  cutover verify --repair --source \"$OLD\" --target \"$NEW\"  # rewrite the differing rows from the source\n\nEngines: any pair of SQLite, PostgreSQL and MySQL/MariaDB, and Redis as a target side (hashed client-side) (--live: PostgreSQL sources).\nExit codes: 0 equal, 1 different (each difference listed with table and key), 2 error."
    )]
    Verify(verify::VerifyArgs),
    /// Move the application's writes to the target: check lag, fence the source, drain the last
    /// changes, verify the rows changed last, prepare reverse replication, flip. Measures and
    /// prints the write pause; undoes everything if a step before the flip fails.
    #[command(
        after_help = "Examples (with `cutover sync` running):\n  cutover switch --source \"$OLD\" --target \"$NEW\" --on-switch ./point-app-at-new-db.sh\n  cutover switch --source \"$OLD\" --target \"$NEW\" --fence revoke --max-pause-ms 2000 --json\n  cutover switch --abort --source \"$OLD\" --target \"$NEW\"   # finish or undo a switch a crash interrupted\n\nEngines: PostgreSQL → PostgreSQL.\nExit codes: 0 switched (the target takes the writes), 2 refused or undone (the source still takes them; the message says why), 130 interrupted (finished or undone by the next switch, sync or --abort)."
    )]
    Switch(switch::SwitchArgs),
    /// Move writes back to the source after a switch, with the writes made on the target since
    /// (they were replicated back): the switch's steps in the other direction. Give the same
    /// --source and --target as to the switch: the source becomes the primary again.
    #[command(
        after_help = "Examples (after a switch, with `cutover sync` following the way back):\n  cutover rollback --source \"$OLD\" --target \"$NEW\" --on-switch ./point-app-at-old-db.sh\n  cutover rollback --abort --source \"$OLD\" --target \"$NEW\"   # finish or undo a rollback a crash interrupted\n\nEngines: PostgreSQL → PostgreSQL.\nExit codes: 0 rolled back (the source takes the writes again), 2 refused or undone (the target still takes them), 130 interrupted."
    )]
    Rollback(switch::SwitchArgs),
    /// Show a migration's phase, copy progress per table, replication lag (bytes and seconds),
    /// applied position, changes/s, and warnings (slot retaining WAL, sync not running).
    #[command(
        after_help = "Examples:\n  cutover status --target postgres://app@new/app\n  cutover status --target sqlite://copy.db --json\n  cutover status --target \"$NEW\" --source \"$OLD\"   # also whether the source refuses writes\n\nEngines: PostgreSQL, SQLite, MySQL/MariaDB and Redis targets (their control stores).\nExit codes: 0 shown, 2 error (no migration there, unreachable)."
    )]
    Status(sync::StatusArgs),
    /// Remove what cutover installed: capture triggers and change log (SQLite) or replication
    /// slot and publication (PostgreSQL) on the source, the control store on the target.
    /// Migrated data stays.
    #[command(
        after_help = "Examples:\n  cutover cleanup --source postgres://app@old/app --target postgres://app@new/app\n  cutover cleanup --source sqlite://app.db --target postgres://app@new/app\n\nEngines: any pair of SQLite, PostgreSQL and MySQL/MariaDB; Redis targets (the state's keys; rows stay).\nExit codes: 0 removed, 2 error."
    )]
    Cleanup(sync::CleanupArgs),
}

#[derive(Args)]
struct Endpoints {
    /// The database to migrate from: postgres://user@host:5432/db?sslmode=verify-full, a libpq
    /// keyword/value string ('host=db dbname=app sslmode=require'), '' (everything from PG*
    /// variables or a service), sqlite://app.db, or mysql://user@host:3306/db (MariaDB; also
    /// mariadb://). Passwords need not be here: PGPASSWORD, ~/.pgpass and service files are read
    /// as libpq reads them (README: Connecting), MYSQL_PWD for MySQL.
    #[arg(long, env = "CUTOVER_SOURCE")]
    source: Option<String>,
    /// The database to migrate to, same forms (a SQLite file is created if missing), or a
    /// change stream: nats://host:4222?stream=NAME (NATS JetStream), kafka://host:9092?prefix=NAME
    /// (Kafka), or Parquet files: parquet:///path/to/lake (the state of these goes to --state).
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
    /// tables, exclude_tables, jobs, max_rows_per_sec, truncate, snapshot, name, capture,
    /// chunk_mb, ddl, retry_for, skip_foreign_keys, grants, state, copy_method); flags and
    /// CUTOVER_* variables override it.
    #[arg(long, env = "CUTOVER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Targets without transactions (nats://, kafka://, parquet://): where the migration's state (checkpoint, chunk
    /// plan, status) is kept — a SQLite file (sqlite://state.db or a path), or a PostgreSQL or
    /// MySQL database. Default: NAME.cutover-state.sqlite beside the --config file, else in the
    /// current directory. Keep it: it is what a resumed sync starts from.
    #[arg(long, env = "CUTOVER_STATE", value_name = "URL")]
    state: Option<String>,
}

/// A migration's two sides as given: connection strings and where each side's environment
/// variables come from.
struct Ends {
    source: String,
    target: String,
    env: cutover_connector::EnvPrefixes,
    /// `--state` (or the file's `state`), and where the default state file goes.
    state: Option<String>,
    state_dir: Option<std::path::PathBuf>,
}

impl Ends {
    /// `opts` with where a target without transactions keeps its state.
    fn with_state(&self, opts: cutover_connector::OpenOptions) -> cutover_connector::OpenOptions {
        cutover_connector::OpenOptions {
            state: self.state.clone(),
            state_dir: self.state_dir.clone(),
            ..opts
        }
    }

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
                state: self.state.clone().or_else(|| file.state.clone()),
                state_dir: config_dir(self.config.as_deref()),
            },
            file,
        ))
    }
}

/// The directory of a config file (where the default state file goes), if one is given.
pub(crate) fn config_dir(config: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    config.map(|p| match p.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    })
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
    /// PostgreSQL: leave foreign keys that reference tables outside --tables/--exclude-tables
    /// off the target (they are listed); without it such keys refuse the migration before any
    /// row is copied.
    #[arg(long)]
    skip_foreign_keys: bool,
    /// PostgreSQL → PostgreSQL: also grant on the target the privileges granted on the
    /// source's tables, views, sequences, functions and schemas (the roles must exist there;
    /// grants to missing roles are named as not made).
    #[arg(long)]
    grants: bool,
}

impl TableArgs {
    /// `--skip-foreign-keys`, else the config file's `skip_foreign_keys`.
    fn skip_foreign_keys(&self, file: &config::FileConfig) -> bool {
        self.skip_foreign_keys || file.skip_foreign_keys.unwrap_or(false)
    }

    /// `--grants`, else the config file's `grants`.
    fn grants(&self, file: &config::FileConfig) -> bool {
        self.grants || file.grants.unwrap_or(false)
    }

    /// What the engines open both sides with: these tables, the migration's `name` (the flag,
    /// else the config file's), the foreign-key and grant choices; the rest as `rest` says.
    fn open_options(
        &self,
        file: &config::FileConfig,
        name: Option<&String>,
        rest: cutover_connector::OpenOptions,
    ) -> cutover_connector::OpenOptions {
        let (tables, exclude) = self.resolve(file);
        cutover_connector::OpenOptions {
            tables,
            exclude,
            skip_foreign_keys: self.skip_foreign_keys(file),
            grants: self.grants(file),
            name: name.cloned().or(file.name.clone()),
            ..rest
        }
    }

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
    ui::configure(ui::Settings {
        quiet: cli.quiet,
        color: ui::colors_wanted(),
    });
    init_tracing(&cli.log, cli.log_format);
    #[cfg(feature = "failpoints")]
    let _failpoints = failpoints();
    // The process's one runtime: every connection's I/O, timer and cancellation runs on it
    // (`cutover_connector::runtime`). Commands run on this thread, which is not one of its
    // workers, so blocking engine calls never hold a worker up.
    let runtime = match cutover_connector::runtime::build(2) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the I/O runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    cutover_connector::runtime::install(runtime.handle().clone());
    let _entered = runtime.enter();
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

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(level: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter: tracing_subscriber::filter::Targets = level.parse().unwrap_or_else(|_| {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::WARN)
    });
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Colour codes only for a person at a terminal, and never with NO_COLOR.
    let ansi = ui::colors_wanted() && std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}
