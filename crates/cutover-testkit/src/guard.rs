//! What a test started ends with the test, also when it panics: threads are told to stop and
//! child processes are killed.

use std::io;
use std::ops::{Deref, DerefMut};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs a closure when dropped: at the end of its block, or while a panic unwinds through it.
///
/// In `std::thread::scope`, create it inside the scope's closure and *before* spawning the
/// threads it stops. A panic in the closure then runs it (e.g. sets the writer's stop flag)
/// before the scope joins its threads; created outside, it would run only after the join,
/// and the scope would wait forever for a writer that nobody stops.
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
///
/// let stop = AtomicBool::new(false);
/// std::thread::scope(|s| {
///     let _stop = cutover_testkit::stop_on_drop(&stop);
///     s.spawn(|| while !stop.load(Ordering::Relaxed) { std::thread::yield_now() });
///     // ... assertions that may panic ...
/// });
/// ```
#[must_use = "dropped at once, it runs at once"]
pub struct OnDrop<F: FnOnce()>(Option<F>);

/// A guard that runs `f` when it is dropped (see [`OnDrop`]).
pub fn on_drop<F: FnOnce()>(f: F) -> OnDrop<F> {
    OnDrop(Some(f))
}

/// A guard that sets `flag` when it is dropped (see [`OnDrop`]).
pub fn stop_on_drop(flag: &AtomicBool) -> OnDrop<impl FnOnce() + '_> {
    on_drop(move || flag.store(true, Ordering::SeqCst))
}

impl<F: FnOnce()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Makes the process `cmd` starts get SIGKILL from the kernel when the thread that starts
/// it ends (Linux `PR_SET_PDEATHSIG`): with the test, however it ends — also when the whole
/// test binary is killed or aborted by its [time limit](crate::time_limit), when no
/// destructor runs. Start the process from the test's own thread (or one that outlives it).
pub fn end_with_test(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only calls prctl and
    // getppid, which are async-signal-safe, and builds an io::Error from errno.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have gone between fork and prctl: then nobody would kill us.
            if libc::getppid() != parent {
                return Err(io::Error::other("the test process is gone"));
            }
            Ok(())
        })
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped, e.g. when the test
/// panics; started with [`end_with_test`], so it also dies with the test binary.
///
/// Derefs to the [`Child`], for `try_wait`, `kill`, `wait`, `id` and its pipes.
#[derive(Debug)]
pub struct KillOnDrop(Child);

impl KillOnDrop {
    /// Spawns `cmd` (with [`end_with_test`]).
    pub fn spawn(cmd: &mut Command) -> io::Result<KillOnDrop> {
        end_with_test(cmd).spawn().map(KillOnDrop)
    }
}

impl Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
