//! Throwaway Kafka-compatible broker: tansu (crates.io), storing in memory, built by
//! `scripts/ensure-tansu.sh` into `~/.cache/cutover-test-tools/tansu`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::sys;
use crate::HarnessError;

const FIX_MISSING: &str = "run scripts/ensure-tansu.sh (it builds the crates.io package tansu \
     into ~/.cache/cutover-test-tools/tansu with cargo install), or set CUTOVER_TANSU to a tansu \
     program";

/// A throwaway tansu broker owned by this process: listens only on `127.0.0.1:`[`port`]
/// (a free port, never 9092) and advertises that address, keeps its topics in memory
/// (`memory://`), no authentication; stopped when the process exits, also if it is killed (its
/// watchdog).
///
/// [`port`]: Self::port
#[derive(Debug)]
pub struct Kafka {
    port: u16,
    log: PathBuf,
}

static SHARED: OnceLock<Result<Kafka, HarnessError>> = OnceLock::new();

/// The tansu program: `CUTOVER_TANSU`, else the cache `scripts/ensure-tansu.sh` builds into.
fn program() -> Result<PathBuf, HarnessError> {
    let path = match std::env::var_os("CUTOVER_TANSU") {
        Some(p) => PathBuf::from(p),
        None => sys::tools_cache("tansu").join("bin/tansu"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingProgram {
            program: "tansu".to_owned(),
            searched: path.display().to_string(),
            fix: FIX_MISSING.to_owned(),
        })
    }
}

impl Kafka {
    /// The process-wide throwaway broker, started on first use.
    pub fn shared() -> Result<&'static Kafka, HarnessError> {
        crate::limit::start()?;
        SHARED
            .get_or_init(Kafka::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// `kafka://127.0.0.1:PORT`, cutover's URL of the broker.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the bootstrap address Kafka clients take.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The loopback TCP port the broker listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's log file.
    pub fn log(&self) -> &std::path::Path {
        &self.log
    }

    fn start() -> Result<Kafka, HarnessError> {
        let program = program()?;
        let dir = sys::make_server_dir("kafka", None)?;
        let pidfile = dir.top.join("tansu.pid");
        let watchdog = match sys::spawn_watchdog(&dir, "TERM", &pidfile) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir.top);
                return Err(e);
            }
        };
        let id = sys::register(dir.clone(), pidfile.clone(), watchdog);
        let log = dir.top.join("tansu.log");
        let port = sys::start_listening(
            id,
            "Kafka (tansu)",
            &pidfile,
            &log,
            Duration::from_secs(30),
            "in use",
            |port| {
                let listener = format!("tcp://127.0.0.1:{port}");
                let mut cmd = Command::new(&program);
                cmd.arg("broker")
                    .args(["--listener-url", &listener])
                    .args(["--advertised-listener-url", &listener])
                    .args(["--storage-engine", "memory://tansu/"])
                    .args(["--cluster-id", "cutover-test"])
                    // Settings tansu would otherwise take from the environment.
                    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .env_remove("SCHEMA_REGISTRY")
                    .env_remove("DATA_LAKE")
                    .env("RUST_LOG", "warn")
                    // The watchdog recognises its server by this working directory.
                    .current_dir(&dir.data);
                cmd
            },
        )?;
        Ok(Kafka { port, log })
    }
}
