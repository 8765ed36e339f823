//! When the watcher runs next. Pure: times come in as parameters.
//!
//! A run every `interval` counted from the end of the last one, and a run soon after the kernel
//! reports a change. Changes come in bursts (a cable pulled: the link, then its routes, then
//! its addresses), so a run waits until the burst has been quiet for [`QUIET`], but never more
//! than [`MAX_WAIT`] after its first change. Runs caused by changes start at least [`GAP`]
//! apart, so that a storm (a routing daemon rewriting a thousand routes) costs a few runs, not
//! one per change; changes seen while a run is under way cause one more run after it.

use std::time::{Duration, Instant};

/// How long a burst of changes must be quiet before the run starts.
pub const QUIET: Duration = Duration::from_millis(10);
/// The longest a change waits for its burst to end.
pub const MAX_WAIT: Duration = Duration::from_millis(50);
/// The least time between the starts of two runs caused by changes.
pub const GAP: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct Pace {
    interval: Duration,
    last_start: Option<Instant>,
    last_end: Option<Instant>,
    /// The first and the latest change not yet covered by a run, and how many.
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    changes: usize,
    /// The admin asked for a run (SIGHUP): it starts as soon as no run is under way.
    asked: bool,
}

/// Why a run starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The first run, or `interval` passed without a change.
    Interval,
    /// This many changes reported by the kernel.
    Changes(usize),
    /// The admin asked for it (SIGHUP).
    Asked,
}

impl Pace {
    /// The first run is due at once.
    pub fn new(interval: Duration) -> Pace {
        Pace {
            interval,
            last_start: None,
            last_end: None,
            first_change: None,
            last_change: None,
            changes: 0,
            asked: false,
        }
    }

    /// The admin asked for a run now (SIGHUP).
    pub fn ask(&mut self) {
        self.asked = true;
    }

    /// A change reported by the kernel at `at`.
    pub fn change(&mut self, at: Instant) {
        self.first_change.get_or_insert(at);
        self.last_change = Some(at);
        self.changes += 1;
    }

    /// When the next run is due; `None` for at once (no run yet).
    pub fn due(&self) -> Option<Instant> {
        let end = self.last_end?;
        if self.asked {
            return Some(end);
        }
        let by_interval = end + self.interval;
        let by_change = self.first_change.map(|first| {
            let last = self.last_change.unwrap_or(first);
            let settled = (last + QUIET).min(first + MAX_WAIT);
            match self.last_start {
                Some(start) => settled.max(start + GAP),
                None => settled,
            }
        });
        Some(by_change.map_or(by_interval, |c| c.min(by_interval)))
    }

    /// A run starts at `at`: every change so far is covered by it.
    pub fn start(&mut self, at: Instant) -> Cause {
        let cause = match (self.changes, self.asked) {
            (0, true) => Cause::Asked,
            (0, false) => Cause::Interval,
            (n, _) => Cause::Changes(n),
        };
        self.asked = false;
        self.last_start = Some(at);
        self.first_change = None;
        self.last_change = None;
        self.changes = 0;
        cause
    }

    /// The run that started last ended at `at`.
    pub fn end(&mut self, at: Instant) {
        self.last_end = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs a schedule of changes (ms after t0) with runs of `run_ms` each; returns the start
    /// times of the runs (ms) until `until` ms.
    fn simulate(interval_ms: u64, changes: &[u64], run_ms: u64, until: u64) -> Vec<(u64, Cause)> {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + MS * ms as u32;
        let mut pace = Pace::new(MS * interval_ms as u32);
        let mut runs = Vec::new();
        let mut next_change = 0;
        let mut now = 0;
        loop {
            let due = pace.due().map_or(now, |d| (d - t0).as_millis() as u64);
            // Changes that come before the run is due are seen first.
            if next_change < changes.len() && changes[next_change] < due.max(now) {
                now = now.max(changes[next_change]);
                pace.change(at(now));
                next_change += 1;
                continue;
            }
            now = now.max(due);
            if now >= until {
                return runs;
            }
            runs.push((now, pace.start(at(now))));
            now += run_ms;
            pace.end(at(now));
        }
    }

    #[test]
    fn first_run_at_once_then_every_interval_from_the_end() {
        let runs = simulate(1000, &[], 100, 3500);
        let starts: Vec<u64> = runs.iter().map(|r| r.0).collect();
        assert_eq!(starts, [0, 1100, 2200, 3300]);
        assert!(runs.iter().all(|r| r.1 == Cause::Interval));
    }

    #[test]
    fn a_burst_is_one_run_after_it_settles() {
        // three changes 2 ms apart at 5 s: one run 10 ms after the last
        let runs = simulate(10_000, &[5000, 5002, 5004], 5, 9000);
        assert_eq!(runs, [(0, Cause::Interval), (5014, Cause::Changes(3))]);
    }

    #[test]
    fn a_steady_stream_still_runs_within_max_wait() {
        let stream: Vec<u64> = (0..40).map(|i| 5000 + i * 5).collect();
        let runs = simulate(10_000, &stream, 5, 5100);
        assert_eq!(runs[1], (5050, Cause::Changes(10)));
    }

    #[test]
    fn changes_during_a_run_cause_one_more_run() {
        // the run at 5010 lasts 100 ms; the change at 5050 comes in during it
        let runs = simulate(10_000, &[5000, 5050], 100, 9000);
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!(runs[2].1, Cause::Changes(1));
        assert!(runs[2].0 >= 5110, "{runs:?}");
    }

    #[test]
    fn a_run_asked_for_starts_once_the_last_one_ended() {
        let t0 = Instant::now();
        let mut pace = Pace::new(Duration::from_secs(60));
        pace.start(t0);
        pace.end(t0 + MS * 100);
        pace.ask();
        assert_eq!(pace.due(), Some(t0 + MS * 100));
        assert_eq!(pace.start(t0 + MS * 120), Cause::Asked);
        pace.end(t0 + MS * 150);
        assert_eq!(pace.due(), Some(t0 + MS * 150 + Duration::from_secs(60)));
    }

    proptest! {
        /// Whatever the changes, runs caused by them start at least GAP apart, a change is never
        /// left without a run after it, and none waits longer than GAP + MAX_WAIT + a run.
        #[test]
        fn storms_cost_few_runs_and_no_change_is_lost(
            mut changes in proptest::collection::vec(0u64..2000, 1..1500),
            run_ms in 1u64..200,
        ) {
            changes.sort_unstable();
            let runs = simulate(60_000, &changes, run_ms, 5000);
            let by_change: Vec<u64> = runs.iter().filter(|r| r.1 != Cause::Interval).map(|r| r.0).collect();
            for w in by_change.windows(2) {
                prop_assert!(w[1] - w[0] >= GAP.as_millis() as u64);
            }
            // in 2 s of changes: at most one run per GAP (plus the first)
            prop_assert!(by_change.len() as u64 <= 2000 / GAP.as_millis() as u64 + 2, "{} runs", by_change.len());
            for c in &changes {
                let after = runs.iter().find(|r| r.0 > *c);
                prop_assert!(after.is_some(), "change at {c} has no run after it: {runs:?}");
                let wait = after.unwrap().0 - c;
                let bound = (GAP + MAX_WAIT).as_millis() as u64 + run_ms;
                prop_assert!(wait <= bound, "change at {c} waited {wait} ms");
            }
        }
    }
}
