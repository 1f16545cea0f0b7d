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

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

static INSTALLED: OnceLock<Handle> = OnceLock::new();
static FALLBACK: OnceLock<Runtime> = OnceLock::new();

/// Makes `handle` the process's runtime. The first call wins; returns whether this one did.
pub fn install(handle: Handle) -> bool {
    INSTALLED.set(handle).is_ok()
}

/// The runtime to run async I/O on: the one this thread is in, else the installed one, else the
/// shared fallback (built on first use).
pub fn handle() -> Handle {
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
    fn block_on_inside_a_task_does_not_panic() {
        let rt = build(2).unwrap();
        let got =
            rt.block_on(async { tokio::spawn(async { block_on(async { 7 }) }).await.unwrap() });
        assert_eq!(got, 7);
    }
}
