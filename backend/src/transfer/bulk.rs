//! Where a file's work runs: below chat, when the CPU is short.
//!
//! A file keeps both cores of a small machine busy (sealing, opening,
//! hashing, writing), and chat's tasks, at the same priority, waited their
//! turn behind it: a chat message's p99 during a 1 GiB transfer was 3-5x
//! its p99 without one. So everything a file does runs at a lower
//! priority ([`Priority`], `roundtable node --file-priority`):
//! - [`runtime`]: a tokio runtime of its own for the transfers' tasks and
//!   connections (an outgoing transfer's worker, a receiving connection
//!   the chat port hands over), where the cipher runs;
//! - [`thread`]: a thread of its own for each blocking part (reading the
//!   file, hashing, writing), not one of a runtime's blocking threads,
//!   which are reused for other work and could not be raised back without
//!   privilege.
//!
//! Measured (`BENCH_ONLY=chat cargo bench -p roundtable --bench transfer`,
//! in memory, 2-core AMD EPYC, 3 runs each): with the file at nice 10 a
//! chat message's p99 during the transfer was 1.9-2.9x its p99 alone; at
//! `SCHED_IDLE`, 1.5-1.6x, for the same transfer speed.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// How a file's work gives way to the rest of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Priority {
    /// Linux's `SCHED_IDLE`: files take only the CPU nothing else wants,
    /// and any other thread that wakes (chat's first) preempts them at
    /// once. On a host whose other work keeps every core busy, files all
    /// but stop until it eases: choose `low` there.
    #[default]
    Idle,
    /// nice 10: about a tenth of a normal thread's share when both want
    /// the CPU, so files keep moving beside a busy CPU, and chat waits a
    /// little more behind them.
    Low,
}

/// The [`Priority`] of threads started from now on.
static PRIORITY: AtomicU8 = AtomicU8::new(0);

/// Sets the priority of a file's threads started from now on; the node
/// sets it at start, before its first transfer starts the runtime.
pub fn set_priority(p: Priority) {
    PRIORITY.store(p as u8, Ordering::Relaxed);
}

fn priority() -> Priority {
    match PRIORITY.load(Ordering::Relaxed) {
        0 => Priority::Idle,
        _ => Priority::Low,
    }
}

/// Niceness of a file's threads (under either policy).
const NICE: i32 = 10;

/// Worker threads of the transfers' runtime: one per core of the machines
/// this is measured on (2), enough to seal on one while the other opens.
const WORKERS: usize = 2;

/// Lowers the calling thread's priority (logged if it cannot).
fn lower_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), NICE) {
        tracing::debug!(%e, "cannot lower a file thread's priority");
    }
    if priority() == Priority::Idle {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` is a valid sched_param that outlives the call;
        // pid 0 is the calling thread. Unprivileged threads may always
        // move to SCHED_IDLE.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(%e, "cannot make a file thread SCHED_IDLE");
        }
    }
}

/// The transfers' runtime, started on first use, its worker and blocking
/// threads at the file priority. It lives as long as the process; what runs on it
/// is tracked and stopped by the node's shutdown like the rest.
pub fn runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(WORKERS)
                .thread_name("file-io")
                .on_thread_start(lower_priority)
                .enable_all()
                .build()
                .expect("the transfers' runtime starts")
        })
        .handle()
}

/// Runs `f`, blocking file work, on a thread of its own at the file
/// priority. The thread starts at once; the future only waits for its
/// result (an error if `f` panicked), and dropping it leaves the thread to
/// finish.
pub fn thread<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<T>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("file-{name}"))
        .spawn(move || {
            lower_priority();
            let _ = tx.send(f());
        });
    async move {
        spawned?;
        rx.await
            .map_err(|_| std::io::Error::other("a file thread stopped (panicked)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (policy, niceness) of the calling thread.
    fn scheduling() -> (i32, i32) {
        // SAFETY: no arguments but pid 0, the calling thread.
        let policy = unsafe { libc::sched_getscheduler(0) };
        let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        (policy, nice)
    }

    #[tokio::test]
    async fn file_work_runs_below_the_callers_priority() {
        // The default, as a node that is not told otherwise runs it.
        let mine = scheduling();
        let want = (libc::SCHED_IDLE, mine.1.max(NICE));
        let on_thread = thread("test", scheduling).await.unwrap();
        let on_runtime = runtime().spawn(async { scheduling() }).await.unwrap();
        let blocking = runtime().spawn_blocking(scheduling).await.unwrap();
        assert_eq!((on_thread, on_runtime, blocking), (want, want, want));
        assert_eq!(scheduling(), mine, "the caller is untouched");
        // `--file-priority low`, for threads started from then on.
        set_priority(Priority::Low);
        let low = thread("test", scheduling).await.unwrap();
        set_priority(Priority::Idle);
        assert_eq!(low, (libc::SCHED_OTHER, mine.1.max(NICE)));
    }
}
