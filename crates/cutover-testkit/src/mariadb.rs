//! Throwaway MariaDB server.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::postgres::find_in_path;
use crate::sys::{self, RunAs, ServerDir, Stop};
use crate::HarnessError;

const INSTALL: &str = "apt-get install -y mariadb-server";
const FIX_MISSING: &str =
    "install it: apt-get install -y mariadb-server (or run scripts/ensure-servers.sh), \
     or set CUTOVER_MARIADB_BIN to a directory holding mariadbd, mariadb-install-db and mariadb";
/// Client variables (and `MYSQL_HOME`, which points at option files) that must not leak in.
const ENV_PREFIXES: &[&str] = &["MYSQL", "MARIADB"];

/// A throwaway MariaDB server owned by this process.
///
/// * Started with `--no-defaults`, so no `/etc/mysql` or `~/.my.cnf` option file is
///   read; listens only on `127.0.0.1:`[`port`](Self::port) (a free port, never
///   3306) and on a socket inside its own data directory.
/// * `root@127.0.0.1` (and `root@localhost`) with an empty password.
/// * Binary log on: `log_bin=1`, `binlog_format=ROW`, `binlog_row_image=FULL`,
///   `binlog_row_metadata=FULL`, `server_id=1`.
/// * `character_set_server=utf8mb4` / `collation_server=utf8mb4_general_ci` (the
///   Debian package defaults; the compiled-in default would be latin1),
///   `max_connections=200`, `max_allowed_packet=64M`, small InnoDB buffers and
///   relaxed flushing.
/// * Stopped and deleted when the process exits (see the crate docs).
#[derive(Debug)]
pub struct MariaDb {
    port: u16,
    client: PathBuf,
    data_dir: PathBuf,
}

static SHARED: OnceLock<Result<MariaDb, HarnessError>> = OnceLock::new();

struct Programs {
    server: PathBuf,
    install_db: PathBuf,
    client: PathBuf,
}

impl MariaDb {
    /// The process-wide throwaway server, started on first use and stopped at exit.
    ///
    /// Concurrent first callers block until the one start finishes. If the start
    /// fails, this and every later call return the same error (no retry per test).
    /// Starts the process's [time limit](crate::time_limit).
    pub fn shared() -> Result<&'static MariaDb, HarnessError> {
        crate::limit::start()?;
        SHARED
            .get_or_init(MariaDb::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT/DB` (no password). `db` is inserted verbatim.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty, randomly named database `t_<prefix>_<16 hex digits>`
    /// (prefix lower-cased, non-alphanumerics replaced by `_`, cut to 40 chars) and
    /// returns its name. Two calls never return the same name.
    pub fn fresh_database(&self, prefix: &str) -> Result<String, HarnessError> {
        let name = sys::fresh_name(prefix);
        self.sql("", &format!("CREATE DATABASE `{name}`"))?;
        Ok(name)
    }

    /// Runs `sql` (one or more `;`-separated statements, fed to the client's stdin) in
    /// database `db` (empty = no default database) with
    /// `mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P PORT -uroot -N -B --database=DB`.
    ///
    /// Returns the result rows (tab-separated columns, `\n`-separated rows, no
    /// headers, `NULL` for nulls) without leading/trailing newlines. Stops at the first
    /// error, which is returned as [`HarnessError::Sql`] carrying the client's stderr.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        sys::run_sql(self.client_command(Some(db)), sql)
    }

    /// The server's data directory (inside a private temp dir that is deleted at exit).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn client_command(&self, db: Option<&str>) -> Command {
        let mut cmd = Command::new(&self.client);
        sys::scrub_env(&mut cmd, ENV_PREFIXES);
        cmd.args(["--no-defaults", "--protocol=TCP", "-h127.0.0.1"])
            .arg(format!("-P{}", self.port))
            .args(["-uroot", "--connect-timeout=10", "-N", "-B"]);
        if let Some(db) = db.filter(|d| !d.is_empty()) {
            cmd.arg(format!("--database={db}"));
        }
        cmd
    }

    fn start() -> Result<MariaDb, HarnessError> {
        let programs = find_programs()?;
        let run_as = sys::run_as("mysql", "MariaDB", INSTALL)?;
        let dir = sys::make_server_dir("my", run_as.as_ref())?;
        let pidfile = dir.data.join("mysqld.pid");
        let watchdog = match sys::spawn_watchdog(&dir, "TERM", &pidfile) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.top);
                return Err(e);
            }
        };
        let id = sys::register(dir.clone(), pidfile, watchdog);
        match boot(id, &dir, &programs, run_as.as_ref()) {
            Ok(port) => Ok(MariaDb {
                port,
                client: programs.client,
                data_dir: dir.data,
            }),
            Err(e) => {
                sys::teardown(id);
                Err(e)
            }
        }
    }
}

fn command_as(program: &Path, dir: &ServerDir, run_as: Option<&RunAs>) -> Command {
    let mut cmd = Command::new(program);
    sys::scrub_env(&mut cmd, ENV_PREFIXES);
    sys::as_user(&mut cmd, run_as);
    // The caller's cwd may not be accessible to the `mysql` user.
    cmd.current_dir(&dir.top);
    cmd
}

enum Outcome {
    Ready,
    PortTaken(String),
    Failed(String),
}

/// install-db + start; returns the port.
fn boot(
    id: u64,
    dir: &ServerDir,
    programs: &Programs,
    run_as: Option<&RunAs>,
) -> Result<u16, HarnessError> {
    let tmp = dir.top.join("tmp");
    sys::make_owned_dir(&tmp, run_as)?;

    // We run install-db as the server user directly, so it needs no --user.
    let mut cmd = command_as(&programs.install_db, dir, run_as);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", dir.data.display()))
        .args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
            "--innodb-log-file-size=16M",
            "--innodb-buffer-pool-size=64M",
        ])
        .arg(format!("--tmpdir={}", tmp.display()));
    let command = sys::describe(&cmd, run_as);
    let out = sys::run_captured(&mut cmd, &command)?;
    if !out.status.success() {
        return Err(HarnessError::SetupFailed {
            command,
            status: out.status.to_string(),
            output: sys::combined_output(&out),
            fix: format!("see the output above (reinstall with: {INSTALL})"),
        });
    }

    let error_log = dir.top.join("error.log");
    let console_log = dir.top.join("mariadbd.out");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = sys::free_port()?;
        let d = dir.data.display();
        let mut cmd = command_as(&programs.server, dir, run_as);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={d}"))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={d}/mysqld.sock"))
            .arg(format!("--pid-file={d}/mysqld.pid"))
            .arg(format!("--log-bin={d}/binlog"))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--server-id=1",
            ])
            .arg(format!("--log-error={}", error_log.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args([
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=16M",
                "--innodb-flush-log-at-trx-commit=2",
                "--sync-binlog=0",
                "--max-connections=200",
                "--max-allowed-packet=64M",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ]);
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&console_log)
            .map_err(|e| HarnessError::io(format!("opening {}", console_log.display()), e))?;
        let console2 = console
            .try_clone()
            .map_err(|e| HarnessError::io(format!("opening {}", console_log.display()), e))?;
        // Never our stdout/stderr: a harness reading them to EOF would hang on it.
        cmd.stdin(Stdio::null()).stdout(console).stderr(console2);
        // Its own process group: a Ctrl-C on the terminal hits the test process, and
        // the watchdog then shuts this server down in order.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let command = sys::describe(&cmd, run_as);
        let log_before = std::fs::metadata(&error_log).map(|m| m.len()).unwrap_or(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning `{command}`"), e))?;
        sys::report_pid(id, child.id());

        let fail = |reason: String, fix: &str| HarnessError::StartFailed {
            server: "MariaDB",
            port,
            reason,
            command: command.clone(),
            log_tail: {
                let mut t = sys::log_section(&error_log, 30);
                if std::fs::metadata(&console_log).is_ok_and(|m| m.len() > 0) {
                    t.push('\n');
                    t.push_str(&sys::log_section(&console_log, 10));
                }
                t
            },
            fix: fix.to_string(),
        };
        match wait_ready(
            &mut child,
            dir,
            port,
            &programs.client,
            &error_log,
            log_before,
        ) {
            Outcome::Ready => {
                sys::set_stop(id, Stop::Child(child));
            }
            Outcome::PortTaken(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                if attempt < 3 {
                    continue;
                }
                return Err(fail(
                    reason,
                    "the port was taken 3 times in a row; rerun the tests",
                ));
            }
            Outcome::Failed(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(
                    reason,
                    "see the log above (e.g. a broken install: apt-get install --reinstall mariadb-server)",
                ));
            }
        }

        // Now over TCP, as the tests will connect: proves root@127.0.0.1 works and
        // that the server on the port is ours.
        let me = MariaDb {
            port,
            client: programs.client.clone(),
            data_dir: dir.data.clone(),
        };
        let answer = me.sql("", "SELECT @@datadir, @@port").map_err(|e| {
            fail(
                format!("it started but TCP login as root failed: {e}"),
                "see the log above",
            )
        })?;
        let expected = format!("{}/\t{port}", dir.data.display());
        if answer != expected {
            return Err(fail(
                format!("the server on the port answered {answer:?}, expected {expected:?}"),
                "another process grabbed the port; rerun the tests",
            ));
        }
        return Ok(port);
    }
}

/// Polls until the server answers on its own socket (which lives in our private data
/// dir, so we never talk to another server while waiting), it exits, or 60 s pass.
fn wait_ready(
    child: &mut Child,
    dir: &ServerDir,
    port: u16,
    client: &Path,
    error_log: &Path,
    log_before: u64,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(60);
    let socket = dir.data.join("mysqld.sock");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let new_log = std::fs::read(error_log)
                    .map(|b| {
                        String::from_utf8_lossy(&b[(log_before as usize).min(b.len())..])
                            .into_owned()
                    })
                    .unwrap_or_default();
                let reason = format!("mariadbd exited with {status} before accepting connections");
                return if new_log.contains("Address already in use")
                    || new_log.contains("Bind on TCP/IP port")
                {
                    Outcome::PortTaken(reason)
                } else {
                    Outcome::Failed(reason)
                };
            }
            Ok(None) => {}
            Err(e) => return Outcome::Failed(format!("waiting for mariadbd failed: {e}")),
        }
        if socket.exists() {
            let mut cmd = Command::new(client);
            sys::scrub_env(&mut cmd, ENV_PREFIXES);
            cmd.arg("--no-defaults")
                .arg("--protocol=SOCKET")
                .arg(format!("--socket={}", socket.display()))
                .args([
                    "-uroot",
                    "--connect-timeout=2",
                    "-N",
                    "-B",
                    "-e",
                    "SELECT @@port",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            if let Ok(out) = cmd.output() {
                if out.status.success()
                    && String::from_utf8_lossy(&out.stdout).trim() == port.to_string()
                {
                    return Outcome::Ready;
                }
            }
        }
        if Instant::now() >= deadline {
            return Outcome::Failed("it did not accept connections within 60 s".to_string());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Each program from `CUTOVER_MARIADB_BIN` if set, else the usual system dirs, else PATH.
fn find_programs() -> Result<Programs, HarnessError> {
    let env_dir = std::env::var_os("CUTOVER_MARIADB_BIN").map(PathBuf::from);
    let find = |name: &str| -> Result<PathBuf, HarnessError> {
        if let Some(dir) = &env_dir {
            let p = dir.join(name);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(HarnessError::MissingProgram {
                    program: name.to_string(),
                    searched: format!("CUTOVER_MARIADB_BIN={}", dir.display()),
                    fix: "point CUTOVER_MARIADB_BIN at the directory holding it, or unset it"
                        .to_string(),
                })
            };
        }
        ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
            .or_else(|| find_in_path(name))
            .ok_or_else(|| HarnessError::MissingProgram {
                program: name.to_string(),
                searched: "/usr/sbin, /usr/bin, /usr/local/sbin, /usr/local/bin, PATH".to_string(),
                fix: FIX_MISSING.to_string(),
            })
    };
    Ok(Programs {
        server: find("mariadbd")?,
        install_db: find("mariadb-install-db")?,
        client: find("mariadb")?,
    })
}
