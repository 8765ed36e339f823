//! `nftables-failover watch`: the run of the timer, in a loop that also wakes when the kernel
//! reports a link, address or route change, so that a pulled cable or a dropped PPPoE session
//! moves traffic within a fraction of a second instead of after `fall` timer runs.
//!
//! Every run is `run::once`: the same lock, state, checks, apply and publication as the
//! timer's, so both may be enabled and never step on each other. The loop is one `select!` on
//! the process's runtime over the kernel's changes (`netlink::subscribe`), the next due run,
//! the end of the run under way, SIGHUP and the stop signals; a run goes to one worker thread
//! started once, so the loop goes on taking (and coalescing) kernel changes while it runs.

pub mod notify;
pub mod pace;

use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, WatchArgs};
use crate::options::Options;
use crate::runtime::Worker;
use crate::{log, netlink, run, signals};
use notify::Notifier;
use pace::{Cause, Pace};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The longest a run may take before the watchdog stops being fed: far above any correct run
/// (lock wait 10 s, one check timeout, a few nft commands of 15 s at most each).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Slack on the loop's own promise to wake up, for a busy machine.
const SLACK: Duration = Duration::from_secs(2);

/// A run under way on the worker thread.
struct Running {
    done: oneshot::Receiver<u8>,
    started: Instant,
    cause: Cause,
}

pub async fn main(opts: Options, args: WatchArgs) -> u8 {
    if opts.dry_run {
        log::error(
            "watch does not take --dry-run: it applies what it finds; for a look without changes use --dry-run without watch, or status --check",
        );
        return EXIT_USAGE;
    }
    signals::install();
    let mut kernel = match netlink::subscribe().await {
        Ok(k) => k,
        Err(e) => {
            log::error(&format!(
                "cannot subscribe to the kernel's link, address and route changes (rtnetlink): {e}; \
                 without them there is nothing to watch: use nftables-failover.timer instead"
            ));
            return EXIT_FAILED;
        }
    };
    let (mut hangup, worker) = match (signals::Hangups::catch(), Worker::start("run")) {
        (Ok(h), Ok(w)) => (h, Arc::new(w)),
        (Err(e), _) | (_, Err(e)) => {
            log::error(&format!("cannot start watching: {e}"));
            return EXIT_FAILED;
        }
    };
    let notifier = Notifier::from_env().map(Arc::new);
    let alive = Arc::new(Promise::default());
    if let (Some(n), Some(every)) = (&notifier, notify::watchdog()) {
        tokio::spawn(feed_watchdog(n.clone(), alive.clone(), every));
    }
    log::info(&format!(
        "watching links, addresses and routes; a run every {:?} and on each change",
        args.interval
    ));

    let opts = Arc::new(opts);
    let mut pace = Pace::new(args.interval);
    let mut running: Option<Running> = None;
    let mut ready = false;
    let mut stop = std::pin::pin!(signals::stopped());
    loop {
        let now = Instant::now();
        let due = pace.due().unwrap_or(now).max(now);
        alive.until(match &running {
            Some(r) => r.started + RUN_LIMIT,
            None => due + SLACK,
        });
        tokio::select! {
            // During a run the run itself sees the signal (its command stops, it rolls back).
            () = &mut stop, if running.is_none() => break,
            change = kernel.next() => {
                if change.ended {
                    log::error(&format!(
                        "kernel changes: {}; stopping so that systemd starts a new watcher",
                        change.what
                    ));
                    if let Some(r) = running.take() {
                        let _ = r.done.await;
                    }
                    return EXIT_FAILED;
                }
                log::debug(&format!("kernel: {}", change.what));
                pace.change(Instant::now());
            }
            () = hangup.recv() => {
                log::info(&format!(
                    "SIGHUP: re-reading {} and running {}",
                    opts.config.display(),
                    if running.is_some() { "again once this run ends" } else { "now" }
                ));
                pace.ask();
            }
            () = tokio::time::sleep_until(due.into()), if running.is_none() => {
                running = Some(start(&mut pace, &opts, &worker));
            }
            code = finished(&mut running) => {
                let run = running.take().expect("a run was under way");
                pace.end(Instant::now());
                if signals::received().is_some() {
                    break;
                }
                if let Some(n) = &notifier {
                    // READY=1 after the first run: the unit is started once it has acted.
                    if !std::mem::replace(&mut ready, true) {
                        n.send("READY=1");
                    }
                    n.send(&status_line(code, &run));
                }
            }
        }
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    if let Some(signal) = signals::received() {
        log::info(&format!("stopped by {}", signals::name(signal)));
    }
    EXIT_OK
}

/// Starts a run on the worker thread now.
fn start(pace: &mut Pace, opts: &Arc<Options>, worker: &Arc<Worker>) -> Running {
    let started = Instant::now();
    let cause = pace.start(started);
    if let Cause::Changes(n) = cause {
        log::info(&format!("{n} kernel change(s): running now"));
    }
    let (tx, done) = oneshot::channel();
    let (opts, worker) = (opts.clone(), worker.clone());
    tokio::spawn(async move {
        let _ = tx.send(worker.run(move || run::once(&opts)).await);
    });
    Running {
        done,
        started,
        cause,
    }
}

/// The exit code of the run under way once it ends; never resolves without one.
async fn finished(running: &mut Option<Running>) -> u8 {
    match running {
        // A run whose worker went away (it panicked) counts as failed.
        Some(r) => (&mut r.done).await.unwrap_or(EXIT_FAILED),
        None => std::future::pending().await,
    }
}

/// systemd's one-line status of the watcher: how the last run went and why it ran.
fn status_line(code: u8, run: &Running) -> String {
    format!(
        "STATUS=last run {} in {:.0} ms ({})",
        match code {
            EXIT_OK => "succeeded",
            EXIT_USAGE => "refused the config",
            _ => "failed",
        },
        run.started.elapsed().as_secs_f64() * 1e3,
        match run.cause {
            Cause::Interval => "interval".to_string(),
            Cause::Changes(n) => format!("{n} kernel change(s)"),
            Cause::Asked => "SIGHUP".to_string(),
        }
    )
}

/// The main loop's promise of when it will next be back (milliseconds since `origin`): the
/// watchdog is fed only while it holds, so a loop stuck anywhere (or a frozen process) is
/// restarted by systemd.
struct Promise {
    origin: Instant,
    until_ms: AtomicU64,
}

impl Default for Promise {
    fn default() -> Self {
        Promise {
            origin: Instant::now(),
            until_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl Promise {
    fn until(&self, at: Instant) {
        let ms = at.saturating_duration_since(self.origin).as_millis() as u64;
        self.until_ms.store(ms, Ordering::SeqCst);
    }

    fn holds(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) <= self.until_ms.load(Ordering::SeqCst)
    }
}

/// Sends WATCHDOG=1 every half watchdog period while the main loop's promise holds.
async fn feed_watchdog(notifier: Arc<Notifier>, alive: Arc<Promise>, every: Duration) {
    let mut tick = tokio::time::interval(every / 2);
    loop {
        tick.tick().await;
        if alive.holds() {
            notifier.send("WATCHDOG=1");
        }
    }
}
