//! The one tokio runtime of a process.
//!
//! The binary builds a multi-threaded runtime at start and [`install`]s its handle; everything
//! that does I/O through an async driver (tokio-postgres, and the async clients of later
//! engines) runs on it, found through [`handle`]. No connection, engine or command builds a
//! runtime of its own. Library users and tests that never install one get a shared runtime built
//! on first use (two worker threads), so there is still exactly one per process.
//!
//! The contracts ([`Source`](crate::Source), [`Sink`](crate::Sink), …) are synchronous: the core
//! calls them on blocking threads (`spawn_blocking`), and an engine whose driver is async waits
//! for it there with [`block_on`]. Waiting like that from inside an async task would stall a
//! worker; [`block_on`] moves such a wait off the worker (`block_in_place`) instead of
//! panicking, but the core never does it.

use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

static INSTALLED: OnceLock<Handle> = OnceLock::new();
static FALLBACK: OnceLock<Runtime> = OnceLock::new();

thread_local! {
    /// This thread's own I/O runtime while a [`LocalIo`] guard lives.
    static LOCAL: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// While it lives, the connections this thread opens are driven by this thread alone, on a
/// current-thread runtime of its own, instead of by the process's runtime's workers. Meant for
/// the one place where sharing cost measurably: the bulk copy's COPY streams (BENCHMARKS.md,
/// run E: the copy's CPU 17–21 % higher by median with them on the shared runtime; the
/// expected cause, each socket event waking this thread from a worker, was not measured). Everything else shares the process's runtime. Not `Send`: it belongs to the
/// thread that made it; connections opened under it must be dropped before it.
pub struct LocalIo {
    _thread: PhantomData<*const ()>,
}

/// Gives this thread an I/O runtime of its own until the guard drops (see [`LocalIo`]).
pub fn local_io() -> std::io::Result<LocalIo> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LOCAL.with(|l| *l.borrow_mut() = Some(rt));
    Ok(LocalIo {
        _thread: PhantomData,
    })
}

impl Drop for LocalIo {
    fn drop(&mut self) {
        // Taken out first: dropping a runtime must not happen while the cell is borrowed.
        let rt = LOCAL.with(|l| l.borrow_mut().take());
        drop(rt);
    }
}

/// Whether this thread drives its own I/O now ([`local_io`]).
pub fn is_local() -> bool {
    LOCAL.with(|l| l.borrow().is_some())
}

/// Makes `handle` the process's runtime. The first call wins; returns whether this one did.
pub fn install(handle: Handle) -> bool {
    INSTALLED.set(handle).is_ok()
}

/// The runtime to run async I/O on: the one this thread is in, else the installed one, else the
/// shared fallback (built on first use).
pub fn handle() -> Handle {
    if let Some(h) = LOCAL.with(|l| l.borrow().as_ref().map(|rt| rt.handle().clone())) {
        return h;
    }
    if let Ok(h) = Handle::try_current() {
        return h;
    }
    if let Some(h) = INSTALLED.get() {
        return h.clone();
    }
    FALLBACK
        .get_or_init(|| {
            build(2).unwrap_or_else(|e| {
                // Without threads or an I/O driver nothing in cutover can run; there is no
                // caller to hand an error to from a lazy initialiser.
                panic!("cutover cannot start its I/O runtime: {e}")
            })
        })
        .handle()
        .clone()
}

/// The runtime the binary builds: multi-threaded, `workers` worker threads, I/O and time
/// drivers, threads named `cutover-rt`.
pub fn build(workers: usize) -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name("cutover-rt")
        .enable_all()
        .build()
}

/// Runs `future` to completion on the process's runtime and waits for it on this thread.
///
/// Meant for blocking threads (the core's `spawn_blocking` tasks, tests, plain threads). Called
/// from inside an async task of a multi-threaded runtime, it first moves the task off its worker
/// (`block_in_place`); on a current-thread runtime that is impossible and it panics, as tokio
/// does.
pub fn block_on<F: Future>(future: F) -> F::Output {
    // This thread's own runtime, if it has one: only `Runtime::block_on` drives a
    // current-thread runtime's I/O. Taken out of the cell while it runs, so that a nested call
    // (which would be a bug) falls through to the shared runtime instead of panicking.
    if let Some(rt) = LOCAL.with(|l| l.borrow_mut().take()) {
        let out = rt.block_on(future);
        LOCAL.with(|l| *l.borrow_mut() = Some(rt));
        return out;
    }
    let handle = handle();
    if tokio::task::try_id().is_some() && handle.runtime_flavor() == RuntimeFlavor::MultiThread {
        return tokio::task::block_in_place(|| handle.block_on(future));
    }
    handle.block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_outside_any_runtime_uses_the_shared_one() {
        let a = block_on(async { tokio::runtime::Handle::current().id() });
        let b = block_on(async { tokio::runtime::Handle::current().id() });
        assert_eq!(a, b, "one runtime per process");
    }

    #[test]
    fn a_local_runtime_drives_this_threads_io_until_its_guard_drops() {
        let shared = block_on(async { tokio::runtime::Handle::current().id() });
        std::thread::spawn(move || {
            let guard = local_io().unwrap();
            assert!(is_local());
            let local = block_on(async {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                tokio::runtime::Handle::current().id()
            });
            assert_ne!(local, shared, "this thread's own runtime");
            assert_eq!(handle().id(), local);
            drop(guard);
            assert!(!is_local());
            assert_eq!(
                block_on(async { tokio::runtime::Handle::current().id() }),
                shared
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn block_on_inside_a_task_does_not_panic() {
        let rt = build(2).unwrap();
        let got =
            rt.block_on(async { tokio::spawn(async { block_on(async { 7 }) }).await.unwrap() });
        assert_eq!(got, 7);
    }
}
