//! One evaluation of the config, shared by the timer run and `status`: check (or not), count
//! the results into the previous state, pick, render; plus the words that explain a pick.

use crate::config::{Config, Family};
use crate::model::{self, Choice, Health, Results, State};
use crate::select::{self, Inputs};
use crate::{links, netlink, probe, render, runtime, signals};
use std::time::Duration;

/// How much checking an evaluation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// None: decide from history alone (`status` without `--check`).
    No,
    /// Until every choice is final; the checks still in flight go on in [`Pending`].
    UntilDecided,
    /// Every candidate, each up to its timeout (`status --check`).
    All,
}

/// What one evaluation of the config produced: this run's choices and the state to keep.
pub struct Evaluation {
    pub results: Results,
    pub choices: Vec<Choice>,
    pub state: State,
    /// The include's text as rendered from `choices`.
    pub text: String,
    /// The checks that had not answered when the choices were made (`Probe::UntilDecided`).
    pub pending: Option<Pending>,
    /// The time the evaluation counted with, in milliseconds.
    pub now: u64,
}

/// The checks of a run still in flight after its choices were made.
pub struct Pending {
    checks: probe::Checks,
}

impl Pending {
    /// Waits for the checks still in flight (each ends at its timeout; a stop signal ends the
    /// wait), and counts what came in into `state` as if it had come in time: standbys get
    /// their counters, last result and reason every run. The choices stay as they were made.
    /// Returns every result of the run.
    pub fn finish(
        mut self,
        config: &Config,
        early: &Results,
        state: &mut State,
        now: u64,
    ) -> Results {
        let all = runtime::block_on(self.checks.rest(signals::stopped())).clone();
        select::count_late(config, state, early, &all, now);
        all
    }
}

/// Checks as `probe` says, counts the results into `previous` and picks. `in_effect` is the
/// include in effect (what nftables was last loaded with); `now` the run's time in
/// milliseconds, on the timeline of `previous` (see `clock`).
pub fn evaluate(
    config: &Config,
    previous: &State,
    in_effect: Option<&[u8]>,
    probe: Probe,
    timeout: Option<Duration>,
    now: u64,
) -> std::io::Result<Evaluation> {
    let text = in_effect.map(String::from_utf8_lossy).unwrap_or_default();
    let inputs = Inputs::new(config, previous, &render::parse_defines(&text));
    let (results, pending) = match probe {
        Probe::No => (model::empty_results(config), None),
        Probe::UntilDecided => {
            let checks = check(
                config,
                timeout,
                |v, f, o| inputs.decided(config, v, f, o, now),
                false,
            )?;
            let results = checks.results().clone();
            let complete = results.iter().flatten().flatten().all(Option::is_some);
            (results, (!complete).then_some(Pending { checks }))
        }
        Probe::All => {
            let checks = check(config, timeout, |_, _, _| false, true)?;
            (checks.results().clone(), None)
        }
    };
    let (choices, state) = select::decide(config, &results, &inputs, now);
    let text = render::include(config, &choices);
    Ok(Evaluation {
        results,
        choices,
        state,
        text,
        pending,
        now,
    })
}

/// Starts every check on the process's runtime and waits until `decided` (or, with `all`, for
/// every answer) or a stop signal; returns the checks, for the rest to come in later.
fn check(
    config: &Config,
    timeout: Option<Duration>,
    decided: impl Fn(usize, Family, &[Option<Health>]) -> bool,
    all: bool,
) -> std::io::Result<probe::Checks> {
    let in_flight = probe::raise_fd_limit();
    runtime::block_on(async {
        let known = kernel_word(config).await;
        let mut checks = probe::start(config, timeout, in_flight, known)?;
        if all {
            checks.rest(signals::stopped()).await;
        } else {
            checks.until_decided(decided, signals::stopped()).await;
        }
        Ok(checks)
    })
}

/// The candidates the kernel rules out before any probe (see `links`); none if no path names
/// an interface or source address, or if the kernel cannot be asked (then the probes decide,
/// as they always could).
async fn kernel_word(config: &Config) -> Results {
    if !links::needed(config) {
        return model::empty_results(config);
    }
    match netlink::snapshot().await {
        Ok(view) => links::verdicts(config, &view),
        Err(e) => {
            crate::log::warn(&format!(
                "cannot read the links and addresses from the kernel: {e}; \
                 the probes alone decide this run"
            ));
            model::empty_results(config)
        }
    }
}
