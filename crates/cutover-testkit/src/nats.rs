//! Throwaway NATS server with JetStream, from the local `nats-server` binary.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::postgres::find_in_path;
use crate::sys::{self, Stop};
use crate::HarnessError;

const FIX_MISSING: &str =
    "install it: apt-get install -y nats-server (or run scripts/ensure-servers.sh), \
     or set CUTOVER_NATS_SERVER to the nats-server program";

/// A throwaway `nats-server -js` owned by this process: listens only on
/// `127.0.0.1:`[`port`](Self::port) (a free port, never 4222), JetStream's files in its own
/// temp directory, no authentication; stopped and deleted when the process exits (see the
/// crate docs), also if the process is killed (its watchdog).
#[derive(Debug)]
pub struct Nats {
    port: u16,
    log: PathBuf,
}

static SHARED: OnceLock<Result<Nats, HarnessError>> = OnceLock::new();

impl Nats {
    /// The process-wide throwaway server, started on first use.
    pub fn shared() -> Result<&'static Nats, HarnessError> {
        crate::limit::start()?;
        SHARED
            .get_or_init(Nats::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    fn start() -> Result<Nats, HarnessError> {
        let program = match std::env::var_os("CUTOVER_NATS_SERVER") {
            Some(p) => PathBuf::from(p),
            None => find_in_path("nats-server")
                .or_else(|| {
                    let p = PathBuf::from("/usr/sbin/nats-server");
                    p.exists().then_some(p)
                })
                .ok_or_else(|| HarnessError::MissingProgram {
                    program: "nats-server".to_owned(),
                    searched: "PATH, /usr/sbin".to_owned(),
                    fix: FIX_MISSING.to_owned(),
                })?,
        };
        let dir = sys::make_server_dir("nats", None)?;
        let pidfile = dir.top.join("nats.pid");
        let watchdog = match sys::spawn_watchdog(&dir, "TERM", &pidfile) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.top);
                return Err(e);
            }
        };
        let id = sys::register(dir.clone(), pidfile.clone(), watchdog);
        let log = dir.top.join("nats.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = sys::free_port()?;
            let mut cmd = Command::new(&program);
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js"])
                .arg("-sd")
                .arg(&dir.data)
                .arg("-P")
                .arg(&pidfile)
                .arg("-l")
                .arg(&log)
                .current_dir(&dir.top)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let _ = OpenOptions::new().create(true).append(true).open(&log);
            let command = sys::describe(&cmd, None);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    sys::teardown(id);
                    return Err(HarnessError::io(format!("spawning `{command}`"), e));
                }
            };
            sys::report_pid(id, child.id());
            let deadline = Instant::now() + Duration::from_secs(20);
            let outcome = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("it exited with {status}"));
                }
                let ready =
                    std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Server is ready"));
                if ready && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    break Err("not ready within 20 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match outcome {
                Ok(()) => {
                    sys::set_stop(id, Stop::Child(child));
                    return Ok(Nats { port, log });
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("address already in use") && attempt < 3 {
                        continue;
                    }
                    sys::teardown(id);
                    return Err(HarnessError::StartFailed {
                        server: "NATS",
                        port,
                        reason,
                        command,
                        log_tail: sys::log_section(&log, 20),
                        fix: "see the log above".to_owned(),
                    });
                }
            }
        }
    }
}
