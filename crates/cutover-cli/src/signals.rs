//! Ctrl-C and SIGTERM. The first asks the running command to stop cleanly (it stops at its next
//! safe point and says what was kept); if it has not stopped within its grace period (say,
//! stuck connecting to a server that does not answer), or at a second signal, the process ends
//! with exit code 130. Ending there is safe: everything cutover writes is committed with its
//! checkpoint (and a switch is journaled), so the same command resumes, finishes or undoes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cutover_connector::CancellationToken;

/// Exit code of a process ended by a signal it could not honour in time.
pub const EXIT_SIGNAL: i32 = 130;

/// Installs the handler (once per process); the returned token is cancelled at the first
/// signal, which wakes every wait of the command at once. `kept` tells the user what is kept if
/// the process must end before stopping cleanly.
pub fn install(grace: Duration, kept: &'static str) -> CancellationToken {
    install_saying(grace, kept, "stopping…".to_owned())
}

/// [`install`], acknowledging the first signal with `stopping` (what the command finishes
/// before it stops).
pub fn install_saying(grace: Duration, kept: &'static str, stopping: String) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let seen = AtomicBool::new(false);
    // `ctrlc` calls this on a thread of its own, not in the signal handler: cancelling (which
    // takes a lock and wakes tasks) is safe there.
    let installed = ctrlc::set_handler(move || {
        if seen.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping at once. {kept}");
            std::process::exit(EXIT_SIGNAL);
        }
        eprintln!(
            "\n{stopping} (at most {} s; press Ctrl-C again to stop at once)",
            grace.as_secs()
        );
        cancel.cancel();
        // The process's last resort: not a task of the command's, it only ends the process.
        std::thread::spawn(move || {
            std::thread::sleep(grace);
            eprintln!(
                "did not stop cleanly within {} s; stopping now. {kept}",
                grace.as_secs()
            );
            std::process::exit(EXIT_SIGNAL);
        });
    });
    if let Err(e) = installed {
        tracing::warn!(error = %e, "cannot handle Ctrl-C and SIGTERM; they end the process at once");
    }
    token
}
