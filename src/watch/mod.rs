//! `nftables-failover watch`: the run of the timer, in a loop that also wakes when the kernel
//! reports a link, address or route change, so that a pulled cable or a dropped PPPoE session
//! moves traffic within a fraction of a second instead of after `fall` timer runs.
//!
//! Every run is `run::once`: the same lock, state, checks, apply and publication as the
//! timer's, so both may be enabled and never step on each other. Three helper threads turn
//! what would otherwise need a poll loop into messages: kernel changes (`netlink::monitor`),
//! a stop signal (`signals::wait`), and the systemd watchdog.

pub mod notify;
pub mod pace;

use crate::cli::{Cli, EXIT_FAILED, EXIT_OK, EXIT_USAGE, WatchArgs};
use crate::{log, netlink, run, signals};
use notify::Notifier;
use pace::{Cause, Pace};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest a run may take before the watchdog stops being fed: far above any correct run
/// (lock wait 10 s, one check timeout, a few nft commands of 15 s at most each).
const RUN_LIMIT: Duration = Duration::from_secs(300);
/// Slack on the loop's own promise to wake up, for a busy machine.
const SLACK: Duration = Duration::from_secs(2);

enum Wake {
    Kernel(netlink::Change),
    Stop,
}

pub fn main(cli: &Cli, args: &WatchArgs) -> u8 {
    if cli.dry_run {
        log::error(
            "watch does not take --dry-run: it applies what it finds; for a look without changes use --dry-run without watch, or status --check",
        );
        return EXIT_USAGE;
    }
    signals::install();
    let (tx, rx) = mpsc::channel();
    let kernel = tx.clone();
    if let Err(e) = netlink::monitor(move |c| kernel.send(Wake::Kernel(c)).is_ok()) {
        log::error(&format!(
            "cannot subscribe to the kernel's link, address and route changes (rtnetlink): {e}; \
             without them there is nothing to watch: use nftables-failover.timer instead"
        ));
        return EXIT_FAILED;
    }
    let stop = tx;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            signals::wait();
            let _ = stop.send(Wake::Stop);
        })
        .expect("spawning a thread");
    let notifier = Notifier::from_env().map(Arc::new);
    let alive = Arc::new(Promise::default());
    if let (Some(n), Some(every)) = (&notifier, notify::watchdog()) {
        feed_watchdog(n.clone(), alive.clone(), every);
    }
    log::info(&format!(
        "watching links, addresses and routes; a run every {:?} and on each change",
        args.interval
    ));

    let mut pace = Pace::new(args.interval);
    let mut ready = false;
    loop {
        let now = Instant::now();
        let due = pace.due().unwrap_or(now);
        if due > now {
            alive.until(due + SLACK);
            match rx.recv_timeout(due - now) {
                Ok(Wake::Kernel(change)) if change.ended => {
                    log::error(&format!(
                        "kernel changes: {}; stopping so that systemd starts a new watcher",
                        change.what
                    ));
                    return EXIT_FAILED;
                }
                Ok(Wake::Kernel(change)) => {
                    log::debug(&format!("kernel: {}", change.what));
                    pace.change(Instant::now());
                    continue;
                }
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => continue,
            }
        }
        let started = Instant::now();
        let cause = pace.start(started);
        alive.until(started + RUN_LIMIT);
        if let Cause::Changes(n) = cause {
            log::info(&format!("{n} kernel change(s): running now"));
        }
        let code = run::once(cli);
        pace.end(Instant::now());
        if signals::received().is_some() {
            break;
        }
        if let Some(n) = &notifier {
            if !ready {
                n.send("READY=1");
                ready = true;
            }
            n.send(&format!(
                "STATUS=last run {} in {:.0} ms ({})",
                match code {
                    EXIT_OK => "succeeded",
                    EXIT_USAGE => "refused the config",
                    _ => "failed",
                },
                started.elapsed().as_secs_f64() * 1e3,
                match cause {
                    Cause::Interval => "interval".to_string(),
                    Cause::Changes(n) => format!("{n} kernel change(s)"),
                }
            ));
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
fn feed_watchdog(notifier: Arc<Notifier>, alive: Arc<Promise>, every: Duration) {
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                if alive.holds() {
                    notifier.send("WATCHDOG=1");
                }
                std::thread::sleep(every / 2);
            }
        })
        .expect("spawning a thread");
}
