//! Throwaway Redis servers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::guard::KillOnDrop;
use crate::postgres::find_in_path;
use crate::{sys, HarnessError};

const FIX_MISSING: &str = "install it: apt-get install -y redis-server, or set CUTOVER_REDIS_BIN \
                           to the redis-server program";

/// A throwaway Redis server owned by the test that started it.
///
/// * Started from the local `redis-server` (`CUTOVER_REDIS_BIN`, else `PATH`) with no
///   configuration file, listening only on `127.0.0.1:`[`port`](Self::port) (a free port, never
///   the machine's 6379), its files in a fresh private directory;
/// * durable by default: `--appendonly yes --appendfsync always --save ''` (no RDB snapshots);
///   [`Redis::start_with`] replaces those settings (e.g. to test a refusal);
/// * killed (SIGKILL) and its directory removed when dropped, and killed by the kernel when the
///   thread that started it ends (see [`KillOnDrop`]): start it from the test's own thread.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<KillOnDrop>,
}

impl Redis {
    /// A server with an append-only file fsynced on every write.
    pub fn start() -> Result<Redis, HarnessError> {
        Redis::start_with(&[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ])
    }

    /// A server with these settings (redis-server's `--name value` arguments) instead of the
    /// default durability settings.
    pub fn start_with(settings: &[&str]) -> Result<Redis, HarnessError> {
        crate::limit::start()?;
        let program = match std::env::var_os("CUTOVER_REDIS_BIN") {
            Some(p) => PathBuf::from(p),
            None => find_in_path("redis-server").ok_or_else(|| HarnessError::MissingProgram {
                program: "redis-server".into(),
                searched: "CUTOVER_REDIS_BIN, PATH".into(),
                fix: FIX_MISSING.into(),
            })?,
        };
        let dir =
            std::env::temp_dir().join(format!("cutover-testkit-redis-{}", sys::fresh_name("")));
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = sys::free_port()?;
            let log = dir.join("redis.log");
            let mut cmd = Command::new(&program);
            cmd.arg("--port")
                .arg(port.to_string())
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(&log)
                .args(settings)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = KillOnDrop::spawn(&mut cmd)
                .map_err(|e| HarnessError::io(format!("starting {}", program.display()), e))?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "redis-server exited ({status}):\n{}",
                        sys::log_tail(&log, 20)
                    );
                    break;
                }
                if ping(port) {
                    return Ok(Redis {
                        port,
                        dir,
                        child: Some(child),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if last.is_empty() {
                last = format!(
                    "redis-server did not answer PING in 20 s:\n{}",
                    sys::log_tail(&log, 20)
                );
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(HarnessError::io("starting a throwaway Redis", last))
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's directory (its append-only file is there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server answers `PING` on `127.0.0.1:port`.
fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}
