//! The time limit of a test binary: a test that hangs ends the process, with a message,
//! instead of making CI wait until its own limit.

use std::io::Write;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// The environment variable that sets a test binary's time limit, in whole seconds
/// (`0` = no limit).
pub const TIMEOUT_ENV: &str = "CUTOVER_TEST_TIMEOUT_SECS";

/// The time limit when [`TIMEOUT_ENV`] is not set: 15 minutes, about four times what the
/// slowest test binary took on a loaded 2-core machine.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(900);

static STARTED: OnceLock<Result<(), HarnessError>> = OnceLock::new();

/// Starts this process's time limit, once; later calls do nothing (they return the first
/// call's outcome).
///
/// After [`TIMEOUT_ENV`] seconds (default [`DEFAULT_TIMEOUT`]) counted from the first call,
/// a thread of its own writes to stderr which limit was exceeded and which threads still
/// run, then aborts the process (no core file). The servers this crate started are then
/// stopped and removed by their watchdogs, as after any abnormal end, and child processes
/// spawned with [`end_with_test`](crate::end_with_test) get SIGKILL from the kernel.
///
/// [`Postgres::shared`](crate::Postgres::shared), [`Postgres::dedicated`](crate::Postgres::dedicated)
/// and [`MariaDb::shared`](crate::MariaDb::shared) call it; tests that start no server call
/// it themselves.
///
/// # Panics
///
/// If [`TIMEOUT_ENV`] is set to something other than a number of seconds.
pub fn time_limit() {
    if let Err(e) = start() {
        panic!("{e}");
    }
}

/// [`time_limit`], with a bad [`TIMEOUT_ENV`] value as an error.
pub(crate) fn start() -> Result<(), HarnessError> {
    STARTED.get_or_init(arm).clone()
}

fn arm() -> Result<(), HarnessError> {
    let limit = match std::env::var(TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => DEFAULT_TIMEOUT,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => return Ok(()),
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => {
                return Err(HarnessError::InvalidArgument(format!(
                    "{TIMEOUT_ENV}={v:?} is not a whole number of seconds \
                     (the test binary's time limit; 0 turns it off)"
                )))
            }
        },
        Err(e) => {
            return Err(HarnessError::InvalidArgument(format!(
                "{TIMEOUT_ENV} is not valid: {e}"
            )))
        }
    };
    let deadline = Instant::now() + limit;
    thread::Builder::new()
        .name("cutover-testkit-time-limit".into())
        .spawn(move || {
            // `sleep` may return early; wait for the deadline itself.
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                thread::sleep(left);
            }
            expire(limit);
        })
        .map_err(|e| HarnessError::io("starting the test time limit thread", e))?;
    Ok(())
}

fn expire(limit: Duration) -> ! {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "this test binary".into());
    let message = format!(
        "\ncutover-testkit: {exe} is still running {secs} s after its first use of \
         cutover-testkit: over its time limit ({TIMEOUT_ENV}={secs}; default {default}), so \
         a test hangs. \
         Aborting, so that CI does not wait for it. Threads still running (names cut to 15 \
         characters by Linux): {threads}\n\
         The throwaway servers are stopped and removed by their watchdogs.\n",
        secs = limit.as_secs(),
        default = DEFAULT_TIMEOUT.as_secs(),
        threads = thread_names().join(", "),
    );
    // Straight to file descriptor 2: `eprintln!` in a thread spawned by a test is captured
    // by the test harness, and would never be shown.
    let mut err = std::io::stderr();
    let _ = err.write_all(message.as_bytes());
    let _ = err.flush();
    // A hung test binary is no crash worth a core file.
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass; it has no other preconditions.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &none);
    }
    std::process::abort()
}

/// The names of this process's threads (what libtest names its test threads after).
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .filter(|n| n != "cutover-testkit")
        .collect();
    names.sort();
    names
}
