//! Throwaway DynamoDB Local (Amazon's own emulator, which enforces the real 400 KB item
//! limit), from the jar of the npm package `amplify-dynamodb-simulator` that
//! `scripts/ensure-servers.sh` unpacks into `~/.cache/cutover-test-tools/dynamodb-local`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::postgres::find_in_path;
use crate::sys;
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
        None => sys::tools_cache("dynamodb-local").join("package/emulator"),
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
        let port = sys::start_listening(
            id,
            "DynamoDB Local",
            &pidfile,
            &log,
            Duration::from_secs(60),
            "Address already in use",
            |port| {
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
                .current_dir(&dir.data);
                cmd
            },
        )?;
        Ok(DynamoLocal { port, log })
    }
}
