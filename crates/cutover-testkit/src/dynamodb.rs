//! Throwaway DynamoDB Local (Amazon's own emulator, which enforces the real 400 KB item
//! limit), from the jar of the npm package `amplify-dynamodb-simulator` that
//! `scripts/ensure-servers.sh` unpacks into `~/.cache/cutover-test-tools/dynamodb-local`.

use std::fs::OpenOptions;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::postgres::find_in_path;
use crate::sys::{self, Stop};
use crate::HarnessError;

const FIX_MISSING: &str = "run scripts/ensure-servers.sh (it unpacks the npm package \
     amplify-dynamodb-simulator into ~/.cache/cutover-test-tools/dynamodb-local and needs Java \
     17), or set CUTOVER_DYNAMODB_LOCAL to the directory holding DynamoDBLocal.jar";

/// A throwaway DynamoDB Local owned by this process: in memory, one database for every
/// client (`-sharedDb`), on a free port (DynamoDB Local has no option to listen on loopback
/// only; it is reached at `http://127.0.0.1:PORT`); stopped when the process exits, also if
/// it is killed (its watchdog).
#[derive(Debug)]
pub struct DynamoLocal {
    port: u16,
    log: PathBuf,
}

static SHARED: OnceLock<Result<DynamoLocal, HarnessError>> = OnceLock::new();

/// The directory holding `DynamoDBLocal.jar` and `DynamoDBLocal_lib`.
fn jar_dir() -> Result<PathBuf, HarnessError> {
    let dir = match std::env::var_os("CUTOVER_DYNAMODB_LOCAL") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            cache.join("cutover-test-tools/dynamodb-local/package/emulator")
        }
    };
    if dir.join("DynamoDBLocal.jar").is_file() {
        Ok(dir)
    } else {
        Err(HarnessError::MissingProgram {
            program: "DynamoDBLocal.jar".to_owned(),
            searched: dir.display().to_string(),
            fix: FIX_MISSING.to_owned(),
        })
    }
}

impl DynamoLocal {
    /// The process-wide throwaway server, started on first use.
    pub fn shared() -> Result<&'static DynamoLocal, HarnessError> {
        crate::limit::start()?;
        SHARED
            .get_or_init(DynamoLocal::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    fn start() -> Result<DynamoLocal, HarnessError> {
        let jars = jar_dir()?;
        let java = match std::env::var_os("JAVA_HOME") {
            Some(h) if PathBuf::from(&h).join("bin/java").exists() => {
                PathBuf::from(h).join("bin/java")
            }
            _ => find_in_path("java").ok_or_else(|| HarnessError::MissingProgram {
                program: "java".to_owned(),
                searched: "JAVA_HOME, PATH".to_owned(),
                fix: "install Java 17: apt-get install -y openjdk-17-jre-headless".to_owned(),
            })?,
        };
        let dir = sys::make_server_dir("ddb", None)?;
        let pidfile = dir.top.join("ddb.pid");
        let watchdog = match sys::spawn_watchdog(&dir, "TERM", &pidfile) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.top);
                return Err(e);
            }
        };
        let id = sys::register(dir.clone(), pidfile.clone(), watchdog);
        let log = dir.top.join("ddb.log");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = sys::free_port()?;
            let out = match OpenOptions::new().create(true).append(true).open(&log) {
                Ok(f) => f,
                Err(e) => {
                    sys::teardown(id);
                    return Err(HarnessError::io("opening the DynamoDB Local log", e));
                }
            };
            let err = out
                .try_clone()
                .map_err(|e| HarnessError::io("opening the DynamoDB Local log", e))?;
            let mut cmd = Command::new(&java);
            cmd.arg(format!(
                "-Djava.library.path={}",
                jars.join("DynamoDBLocal_lib").display()
            ))
            .arg("-Xmx512m")
            .arg("-jar")
            .arg(jars.join("DynamoDBLocal.jar"))
            .args(["-inMemory", "-sharedDb", "-port", &port.to_string()])
            // The watchdog recognises its server by this working directory.
            .current_dir(&dir.data)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let command = sys::describe(&cmd, None);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    sys::teardown(id);
                    return Err(HarnessError::io(format!("spawning `{command}`"), e));
                }
            };
            let _ = std::fs::write(&pidfile, format!("{}\n", child.id()));
            sys::report_pid(id, child.id());
            let deadline = Instant::now() + Duration::from_secs(60);
            let outcome = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("it exited with {status}"));
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break Ok(());
                }
                if Instant::now() > deadline {
                    break Err("not listening within 60 s".to_owned());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            match outcome {
                Ok(()) => {
                    sys::set_stop(id, Stop::Child(child));
                    return Ok(DynamoLocal { port, log });
                }
                Err(reason) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains("Address already in use") && attempt < 3 {
                        continue;
                    }
                    sys::teardown(id);
                    return Err(HarnessError::StartFailed {
                        server: "DynamoDB Local",
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
