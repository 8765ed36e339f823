//! One evaluation of the config, shared by the timer run and `status`: check (or not), count
//! the results into the previous state, pick, render; plus the words that explain a pick.

use crate::config::{AllDown, Config, Family};
use crate::policy::Reason;
use crate::select::{self, Choice, Health, Inputs, Results};
use crate::state::State;
use crate::{probe, render};
use std::time::{Duration, SystemTime};

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
    let now = unix_now();
    let text = in_effect.map(String::from_utf8_lossy).unwrap_or_default();
    let inputs = Inputs::new(config, previous, &render::parse_defines(&text));
    let results = if probe {
        check(config, timeout, |v, f, o| {
            inputs.decided(config, v, f, o, now)
        })?
    } else {
        select::empty_results(config)
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

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// The address and port of a candidate, as it appears in log lines.
pub fn candidate(config: &Config, choice: &Choice, index: usize) -> String {
    let var = &config.variables[choice.variable];
    let ip = var.addrs(choice.family)[index];
    // With a check the port is not the candidate's: its targets are named in the result.
    let mut text = match var.uplink.checks {
        Some(_) => ip.to_string(),
        None => std::net::SocketAddr::new(ip, var.port).to_string(),
    };
    if let Some(path) = var.uplink.paths.as_ref().map(|p| &p[index])
        && !path.is_empty()
    {
        text.push_str(&format!(" [{path}]"));
    }
    text
}

/// Why a choice was made, in words: "preferred candidate 10.0.0.1:443 down 3/3", …
pub fn reason_text(config: &Config, c: &Choice) -> String {
    let var = &config.variables[c.variable];
    let addr = |i: usize| candidate(config, c, i);
    let Some(reason) = &c.reason else {
        return "no addresses configured".into();
    };
    match reason {
        Reason::Preferred => "preferred candidate up".into(),
        Reason::FailedOver => {
            let fall = var.policy.fall;
            format!("preferred candidate {} down {fall}/{fall}", addr(0))
        }
        Reason::PreemptOff { better } => format!(
            "preempt off: staying here although {} is up again",
            addr(*better)
        ),
        Reason::PreemptDelay { better, left_s } => format!(
            "preempt delay: {} is up again, {left_s} s left",
            addr(*better)
        ),
        Reason::AllDown(AllDown::First) => {
            format!("all down: using the first candidate ({})", c.rendered)
        }
        Reason::AllDown(AllDown::Keep) => {
            format!("all down: keeping what is in effect ({})", c.rendered)
        }
        Reason::AllDown(AllDown::Fallback) => {
            format!("all down: rendering the fallback ({})", c.rendered)
        }
    }
}
