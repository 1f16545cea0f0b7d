//! Throwaway PostgreSQL server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::sys::{self, RunAs, ServerDir, Stop};
use crate::HarnessError;

const INSTALL: &str = "apt-get install -y postgresql";
const FIX_MISSING: &str =
    "install it: apt-get install -y postgresql (or run scripts/ensure-servers.sh), \
     or set CUTOVER_PG_BIN to the directory holding initdb, pg_ctl and postgres";

/// A throwaway PostgreSQL server owned by this process.
///
/// * Listens only on `127.0.0.1:`[`port`](Self::port) (a free port, never 5432) and on
///   a unix socket inside its own data directory; it never reads or touches the
///   machine's shared cluster or its configuration.
/// * Superuser `postgres`, `trust` authentication, no password.
/// * `wal_level=logical`, 20 replication slots / WAL senders, `max_connections=200`,
///   durability off (`fsync`, `synchronous_commit`, `full_page_writes`).
/// * Stopped and deleted when the process exits (see the crate docs).
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    bin_dir: PathBuf,
    psql: PathBuf,
    data_dir: PathBuf,
    /// The registry handle (clean-up at exit) and what restarts need; `None` for the probe
    /// used while booting.
    owner: Option<Owner>,
}

#[derive(Debug)]
struct Owner {
    id: u64,
    run_as: Option<RunAs>,
    log: PathBuf,
    /// Stopped and removed when dropped (servers from [`Postgres::dedicated`]).
    dedicated: bool,
}

static SHARED: OnceLock<Result<Postgres, HarnessError>> = OnceLock::new();

/// What a [`Postgres::dedicated_with`] server needs beyond the defaults (TLS, password
/// authentication): written into its data directory after `initdb`, before the first start,
/// so they hold across restarts.
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// `name = 'value'` lines appended to `postgresql.conf` (`ssl`, `ssl_cert_file`, …).
    pub settings: Vec<(String, String)>,
    /// `pg_hba.conf` lines placed before initdb's own `trust` lines (the first match wins):
    /// `host all app 127.0.0.1/32 scram-sha-256`, `hostssl all cert_user 127.0.0.1/32 cert`.
    pub hba: Vec<String>,
    /// Files written into the data directory, owned by the server's user, mode 0600
    /// (certificates and keys named by `settings`).
    pub files: Vec<(String, Vec<u8>)>,
}

impl Postgres {
    /// The process-wide throwaway server, started on first use and stopped at exit.
    ///
    /// Concurrent first callers block until the one start finishes. If the start
    /// fails, this and every later call return the same error (no retry per test).
    /// Starts the process's [time limit](crate::time_limit).
    pub fn shared() -> Result<&'static Postgres, HarnessError> {
        crate::limit::start()?;
        SHARED
            .get_or_init(|| Postgres::start(None))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A server of the caller's own, for tests that restart, stop or reconfigure it (the shared
    /// one must keep running for everyone). Same settings as [`Postgres::shared`]; stopped and
    /// deleted when dropped, or at exit. Starts the process's [time limit](crate::time_limit).
    pub fn dedicated() -> Result<Postgres, HarnessError> {
        Postgres::dedicated_with(&ServerSetup::default())
    }

    /// A [`Postgres::dedicated`] server with extra settings, `pg_hba.conf` lines and files.
    pub fn dedicated_with(setup: &ServerSetup) -> Result<Postgres, HarnessError> {
        crate::limit::start()?;
        let mut pg = Postgres::start(Some(setup))?;
        if let Some(o) = pg.owner.as_mut() {
            o.dedicated = true;
        }
        Ok(pg)
    }

    /// `pg_ctl restart -m MODE` (`fast` ends sessions, `immediate` crashes on purpose): every
    /// connection is cut, and the server is back on the same port when this returns.
    pub fn restart(&self, mode: &str) -> Result<(), HarnessError> {
        self.pg_ctl(&["-w", "-t", "60", "-m", mode, "restart"])?;
        self.report_pid();
        Ok(())
    }

    /// `pg_ctl stop -m fast`: the server is down until [`Postgres::start_again`].
    pub fn stop(&self) -> Result<(), HarnessError> {
        self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "stop"])
    }

    /// Starts a server stopped with [`Postgres::stop`], with the same settings and port.
    pub fn start_again(&self) -> Result<(), HarnessError> {
        // `pg_ctl start` does not remember the options; `restart` would, but needs it running.
        let opts = server_options(self.port, &self.data_dir);
        self.pg_ctl(&["-w", "-t", "60", "-o", &opts, "start"])?;
        self.report_pid();
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), HarnessError> {
        let Some(o) = &self.owner else {
            return Err(HarnessError::InvalidArgument(
                "this server handle cannot be restarted".into(),
            ));
        };
        let dir = ServerDir {
            top: o
                .log
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| self.data_dir.clone()),
            data: self.data_dir.clone(),
        };
        let mut cmd = pg_command(self.bin_dir.join("pg_ctl"), &dir, o.run_as.as_ref());
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&o.log)
            .args(args);
        let command = sys::describe(&cmd, o.run_as.as_ref());
        let out = sys::run_captured(&mut cmd, &command)?;
        if out.status.success() {
            return Ok(());
        }
        Err(HarnessError::SetupFailed {
            command,
            status: out.status.to_string(),
            output: format!(
                "{}\n{}",
                sys::combined_output(&out),
                sys::log_section(&o.log, 20)
            ),
            fix: "see the server log above".into(),
        })
    }

    /// Tells the watchdog about the (new) postmaster, so it is stopped if this process dies.
    fn report_pid(&self) {
        if let (Some(o), Some(pid)) = (
            &self.owner,
            sys::pid_from_file(&self.data_dir.join("postmaster.pid")),
        ) {
            sys::report_pid(o.id, pid as u32);
        }
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (no password needed). `db` is inserted
    /// verbatim.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty, randomly named database `t_<prefix>_<16 hex digits>`
    /// (prefix lower-cased, non-alphanumerics replaced by `_`, cut to 40 chars) and
    /// returns its name. Two calls never return the same name.
    pub fn fresh_database(&self, prefix: &str) -> Result<String, HarnessError> {
        let name = sys::fresh_name(prefix);
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(name)
    }

    /// Runs `sql` (one or more `;`-separated statements, fed to psql's stdin) in
    /// database `db` (empty = `postgres`) with
    /// `psql -X -q -v ON_ERROR_STOP=1 -At -h 127.0.0.1 -p PORT -U postgres -d DB`.
    ///
    /// Returns the result rows (columns separated by `|`, rows by `\n`, no command
    /// tags) without leading/trailing newlines. Stops at the first error, which is
    /// returned as [`HarnessError::Sql`] carrying psql's stderr.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let db = if db.is_empty() { "postgres" } else { db };
        if db.contains('=') || db.starts_with("postgres://") || db.starts_with("postgresql://") {
            return Err(HarnessError::InvalidArgument(format!(
                "database name {db:?} would be read by psql as a connection string"
            )));
        }
        let mut cmd = Command::new(&self.psql);
        sys::scrub_env(&mut cmd, &["PG"]);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-f", "-"]);
        sys::run_sql(cmd, sql)
    }

    /// The directory holding the PostgreSQL programs in use (`initdb`, `pg_ctl`,
    /// `psql`, `pg_dump`, `pg_recvlogical`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's data directory (inside a private temp dir that is deleted at exit).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn start(setup: Option<&ServerSetup>) -> Result<Postgres, HarnessError> {
        let bin_dir = find_bin_dir()?;
        for prog in ["initdb", "pg_ctl", "postgres"] {
            if !bin_dir.join(prog).is_file() {
                return Err(HarnessError::MissingProgram {
                    program: prog.to_string(),
                    searched: bin_dir.display().to_string(),
                    fix: FIX_MISSING.to_string(),
                });
            }
        }
        let psql = if bin_dir.join("psql").is_file() {
            bin_dir.join("psql")
        } else {
            find_in_path("psql").ok_or_else(|| HarnessError::MissingProgram {
                program: "psql".to_string(),
                searched: format!("{} and PATH", bin_dir.display()),
                fix: "install it: apt-get install -y postgresql-client".to_string(),
            })?
        };
        let run_as = sys::run_as("postgres", "PostgreSQL", INSTALL)?;
        let dir = sys::make_server_dir("pg", run_as.as_ref())?;
        let pidfile = dir.data.join("postmaster.pid");
        let watchdog = match sys::spawn_watchdog(&dir, "QUIT", &pidfile) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.top);
                return Err(e);
            }
        };
        let id = sys::register(dir.clone(), pidfile, watchdog);
        match boot(id, &dir, &bin_dir, run_as.as_ref(), psql.clone(), setup) {
            Ok(port) => Ok(Postgres {
                port,
                bin_dir,
                psql,
                owner: Some(Owner {
                    id,
                    run_as: run_as.clone(),
                    log: dir.top.join("postgres.log"),
                    dedicated: false,
                }),
                data_dir: dir.data,
            }),
            Err(e) => {
                sys::teardown(id);
                Err(e)
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(o) = self.owner.as_ref().filter(|o| o.dedicated) {
            sys::teardown(o.id);
        }
    }
}

/// The `postgres` options every test server runs with.
fn server_options(port: u16, data: &Path) -> String {
    format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} \
         -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c max_connections=200 -c shared_buffers=128MB",
        data = data.display()
    )
}

fn pg_command(program: PathBuf, dir: &ServerDir, run_as: Option<&RunAs>) -> Command {
    let mut cmd = Command::new(program);
    sys::scrub_env(&mut cmd, &["PG"]);
    sys::as_user(&mut cmd, run_as);
    // The caller's cwd may not be accessible to the `postgres` user.
    cmd.current_dir(&dir.top);
    cmd
}

/// initdb + start; returns the port.
fn boot(
    id: u64,
    dir: &ServerDir,
    bin_dir: &Path,
    run_as: Option<&RunAs>,
    psql: PathBuf,
    setup: Option<&ServerSetup>,
) -> Result<u16, HarnessError> {
    initdb(dir, bin_dir, run_as)?;
    if let Some(setup) = setup {
        apply_setup(&dir.data, setup, run_as)?;
    }
    let pg_ctl = bin_dir.join("pg_ctl");
    sys::set_stop(
        id,
        Stop::PgCtl {
            pg_ctl: pg_ctl.clone(),
            run_as: run_as.cloned(),
        },
    );
    let log = dir.top.join("postgres.log");
    let mut attempt = 0;
    let port = loop {
        attempt += 1;
        let port = sys::free_port()?;
        let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let opts = server_options(port, &dir.data);
        let mut cmd = pg_command(pg_ctl.clone(), dir, run_as);
        cmd.arg("-D")
            .arg(&dir.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts, "start"]);
        let command = sys::describe(&cmd, run_as);
        let out = sys::run_captured(&mut cmd, &command)?;
        if out.status.success() {
            break port;
        }
        let new_log = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b[(log_before as usize).min(b.len())..]).into_owned())
            .unwrap_or_default();
        let port_taken = new_log.contains("Address already in use")
            || new_log.contains("could not create any TCP/IP sockets");
        if port_taken && attempt < 3 {
            continue;
        }
        return Err(HarnessError::StartFailed {
            server: "PostgreSQL",
            port,
            reason: format!(
                "pg_ctl exited with {}: {}",
                out.status,
                sys::combined_output(&out)
            ),
            command,
            log_tail: sys::log_section(&log, 30),
            fix: if port_taken {
                "the port was taken 3 times in a row; rerun the tests".to_string()
            } else {
                "see the log above (e.g. shared memory limits, or a broken PostgreSQL install: \
                 apt-get install --reinstall postgresql)"
                    .to_string()
            },
        });
    };
    if let Some(pid) = sys::pid_from_file(&dir.data.join("postmaster.pid")) {
        sys::report_pid(id, pid as u32);
    }
    // Sanity check over TCP: the server answering on the port must be ours.
    let probe = Postgres {
        port,
        bin_dir: bin_dir.to_path_buf(),
        psql,
        data_dir: dir.data.clone(),
        owner: None,
    };
    let answer =
        probe
            .psql("postgres", "SHOW data_directory")
            .map_err(|e| HarnessError::StartFailed {
                server: "PostgreSQL",
                port,
                reason: format!("it started but does not answer over TCP: {e}"),
                command: "psql ... -c 'SHOW data_directory'".to_string(),
                log_tail: sys::log_section(&log, 30),
                fix: "check that nothing (firewall, LD_PRELOAD) interferes with loopback TCP"
                    .to_string(),
            })?;
    if Path::new(&answer) != dir.data {
        return Err(HarnessError::StartFailed {
            server: "PostgreSQL",
            port,
            reason: format!(
                "the server on the port reports data_directory {answer:?}, not {}",
                dir.data.display()
            ),
            command: "psql ... -c 'SHOW data_directory'".to_string(),
            log_tail: sys::log_section(&log, 30),
            fix: "another process grabbed the port; rerun the tests".to_string(),
        });
    }
    Ok(port)
}

/// Writes a [`ServerSetup`] into a fresh data directory.
fn apply_setup(
    data: &Path,
    setup: &ServerSetup,
    run_as: Option<&RunAs>,
) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    for (name, bytes) in &setup.files {
        let path = data.join(name);
        std::fs::write(&path, bytes)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| HarnessError::io(format!("chmod 600 {}", path.display()), e))?;
        sys::chown_to(&path, run_as)?;
    }
    let append = |file: &str, text: String, front: bool| -> Result<(), HarnessError> {
        let path = data.join(file);
        let old = std::fs::read_to_string(&path)
            .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))?;
        let new = if front {
            format!("{text}{old}")
        } else {
            format!("{old}\n{text}")
        };
        // Written in place: the file keeps its owner and mode.
        std::fs::write(&path, new)
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    };
    if !setup.settings.is_empty() {
        let lines: String = setup
            .settings
            .iter()
            .map(|(k, v)| format!("{k} = '{}'\n", v.replace('\'', "''")))
            .collect();
        append("postgresql.conf", lines, false)?;
    }
    if !setup.hba.is_empty() {
        let lines: String = setup.hba.iter().map(|l| format!("{l}\n")).collect();
        append("pg_hba.conf", lines, true)?;
    }
    Ok(())
}

fn initdb(dir: &ServerDir, bin_dir: &Path, run_as: Option<&RunAs>) -> Result<(), HarnessError> {
    let mut last = None;
    for locale_args in [&["--locale=C.UTF-8"][..], &["--no-locale"][..]] {
        if last.is_some() {
            // initdb may leave files behind; start the retry from an empty dir.
            let _ = std::fs::remove_dir_all(&dir.data);
            sys::make_owned_dir(&dir.data, run_as)?;
        }
        let mut cmd = pg_command(bin_dir.join("initdb"), dir, run_as);
        cmd.arg("-D")
            .arg(&dir.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(locale_args);
        let command = sys::describe(&cmd, run_as);
        let out = sys::run_captured(&mut cmd, &command)?;
        if out.status.success() {
            return Ok(());
        }
        last = Some(HarnessError::SetupFailed {
            command,
            status: out.status.to_string(),
            output: sys::combined_output(&out),
            fix: format!(
                "see initdb's output above; the data dir must be writable by {} \
                 (reinstall with: {INSTALL})",
                run_as.map_or("the current user", |r| r.name.as_str())
            ),
        });
    }
    Err(last.unwrap_or_else(|| HarnessError::io("initdb", "no attempt made")))
}

/// `CUTOVER_PG_BIN`, else `pg_config --bindir`, else the highest
/// `/usr/lib/postgresql/*/bin`, else the first `PATH` entry — each only if it holds
/// `initdb`.
fn find_bin_dir() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("CUTOVER_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(HarnessError::MissingProgram {
            program: "initdb".to_string(),
            searched: format!("CUTOVER_PG_BIN={}", dir.display()),
            fix: "point CUTOVER_PG_BIN at the directory holding initdb, pg_ctl and postgres \
                  (e.g. /usr/lib/postgresql/15/bin), or unset it"
                .to_string(),
        });
    }
    let mut searched = Vec::new();
    let pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match pg_config {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("initdb").is_file() {
                return Ok(dir);
            }
            searched.push(format!("pg_config --bindir ({})", dir.display()));
        }
        _ => searched.push("pg_config --bindir (not available)".to_string()),
    }
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u64>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            match version {
                Some(v) if bin.join("initdb").is_file() => Some((v, bin)),
                _ => None,
            }
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_string());
    if let Some(initdb) = find_in_path("initdb") {
        if let Some(dir) = initdb.parent() {
            return Ok(dir.to_path_buf());
        }
    }
    searched.push("PATH".to_string());
    Err(HarnessError::MissingProgram {
        program: "PostgreSQL server (initdb)".to_string(),
        searched: searched.join(", "),
        fix: FIX_MISSING.to_string(),
    })
}

pub(crate) fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
