//! The process's one tokio runtime: probes, netlink, MQTT and `watch` all run on it.
//!
//! The entry point builds it ([`build`]) and keeps its own thread inside `Runtime::block_on`
//! for the life of the process, so the runtime's I/O and timers are always driven: tasks (a
//! run's checks still in flight, the watcher's netlink subscription, its watchdog) go on while
//! synchronous work, such as an apply waiting for `nft`, runs on a blocking thread. That
//! synchronous work reaches async code through [`block_on`].

use std::future::Future;

/// One thread is plenty: the work is waiting on sockets, and it keeps a run cheap.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs `future` to completion from synchronous code on one of the runtime's blocking threads
/// (see `spawn_blocking` in `main`), while the entry point's thread drives its I/O and timers.
///
/// # Panics
/// Outside the runtime, or on its own thread: both are programming errors.
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Handle::try_current()
        .expect("synchronous code runs on the runtime's blocking threads (see main)")
        .block_on(future)
}

type Job = Box<dyn FnOnce() + Send>;

/// A thread of its own for synchronous work (a run, `status`), started once and reused: a
/// watcher never needs a new thread per run, so a host at its task limit cannot make a run
/// fail, and a thread that cannot be started is an error, not a panic.
pub struct Worker {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Worker {
    /// Starts the thread; it runs inside the runtime's context, so [`block_on`] works there.
    /// Must be called inside the runtime.
    pub fn start(name: &str) -> std::io::Result<Worker> {
        let handle = tokio::runtime::Handle::current();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _context = handle.enter();
                for job in queue {
                    job();
                }
            })?;
        Ok(Worker { jobs })
    }

    /// Runs `work` on the worker's thread; the caller's task waits without blocking the
    /// runtime. A panic in `work` goes on in the caller.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
        });
        self.jobs
            .send(job)
            .expect("the worker's thread lives as long as the Worker");
        match rx.await.expect("the worker's thread answers every job") {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
