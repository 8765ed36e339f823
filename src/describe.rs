//! The words a run, `status` and publication use for candidates and picks. Pure.

use crate::config::{AllDown, Config};
use crate::model::{Choice, Reason};

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
    let text = match reason {
        Reason::Preferred => "preferred candidate up".into(),
        Reason::FailedOver if c.drained.contains(&0) => {
            format!("preferred candidate {} drained", addr(0))
        }
        Reason::FailedOver if c.preferred_gone.is_some() => format!(
            "preferred candidate {} down: {}",
            addr(0),
            c.preferred_gone.as_deref().unwrap_or_default()
        ),
        Reason::FailedOver => {
            let fall = var.policy.fall;
            format!("preferred candidate {} down {fall}/{fall}", addr(0))
        }
        Reason::PreemptOff { better } => format!(
            "preempt off: staying here although {} is up again",
            addr(*better)
        ),
        Reason::PreemptDelay { better, left_ms } => format!(
            "preempt delay: {} is up again, {:.1} s left",
            addr(*better),
            *left_ms as f64 / 1e3
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
    };
    if !matches!(reason, Reason::AllDown(_)) || c.drained.is_empty() {
        return text;
    }
    // The words must agree with what is rendered: "first" and "keep" may render a drained
    // candidate, when nothing else answers.
    let rendered_drained = c
        .drained
        .iter()
        .copied()
        .find(|&i| var.rendered(c.family, i) == c.rendered);
    let left: Vec<String> = c
        .drained
        .iter()
        .filter(|&&i| Some(i) != rendered_drained)
        .map(|&i| addr(i))
        .collect();
    let mut text = match rendered_drained {
        Some(i) => format!(
            "{text}, although {} is drained: no other candidate answers",
            addr(i)
        ),
        None => text,
    };
    if !left.is_empty() {
        text.push_str(&format!("; drained, so left out: {}", left.join(", ")));
    }
    text
}
