//! The process's one tokio runtime: probes, netlink, MQTT and `watch` all run on it.
//!
//! The entry point builds it ([`build`]); synchronous code reaches async code through
//! [`block_on`], which drives the runtime on the calling thread when no other thread does (a
//! timer run, `status`: one thread does everything, which keeps a run cheap), and otherwise
//! polls its future there while the thread driving the runtime does the I/O (a run of
//! `watch` on its [`Worker`], while the watcher's loop holds the runtime).

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Builds the process's runtime, once. One thread is plenty: the work is waiting on sockets.
pub fn build() -> std::io::Result<&'static tokio::runtime::Runtime> {
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion from synchronous code.
///
/// # Panics
/// Before [`build`], or inside an async task: both are programming errors.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME
        .get()
        .expect("the entry point builds the runtime first (runtime::build)")
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
