//! One evaluation of the config, shared by the timer run and `status`: check (or not), count
//! the results into the previous state, pick, render; plus the words that explain a pick.

use crate::config::{Config, Family};
use crate::model::{self, Choice, Health, Results, State};
use crate::select::{self, Inputs};
use crate::{clock, probe, render};
use std::time::Duration;

/// What one evaluation of the config produced: this run's choices and the state to keep.
pub struct Evaluation {
    pub results: Results,
    pub choices: Vec<Choice>,
    pub state: State,
    /// The include's text as rendered from `choices`.
    pub text: String,
}

/// Checks (if `probe`), counts the results into `previous` and picks. `in_effect` is the
/// include in effect (what nftables was last loaded with).
pub fn evaluate(
    config: &Config,
    previous: &State,
    in_effect: Option<&[u8]>,
    probe: bool,
    timeout: Option<Duration>,
) -> std::io::Result<Evaluation> {
    let now = clock::unix_now();
    let text = in_effect.map(String::from_utf8_lossy).unwrap_or_default();
    let inputs = Inputs::new(config, previous, &render::parse_defines(&text));
    let results = if probe {
        check(config, timeout, |v, f, o| {
            inputs.decided(config, v, f, o, now)
        })?
    } else {
        model::empty_results(config)
    };
    let (choices, state) = select::decide(config, &results, &inputs, now);
    let text = render::include(config, &choices);
    Ok(Evaluation {
        results,
        choices,
        state,
        text,
    })
}

fn check(
    config: &Config,
    timeout: Option<Duration>,
    decided: impl Fn(usize, Family, &[Option<Health>]) -> bool,
) -> std::io::Result<Results> {
    let in_flight = probe::raise_fd_limit();
    // One thread is plenty: the work is waiting on sockets, and it keeps the run cheap.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(probe::check_all(config, timeout, in_flight, decided))
}
