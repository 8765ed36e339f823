//! Telling the rest of the network what a run decided: the on-change hook ([`hook`]), the
//! Prometheus textfile ([`metrics`]) and MQTT with Home Assistant discovery ([`mqtt`]).
//!
//! Everything here runs after the apply, and nothing here can fail a run: each problem is a
//! warning, the exit code and the applied include stay as they are. The messages, the change
//! set and the metrics text are built by pure functions; only `hook::run`, `metrics::write` and
//! `mqtt::publish` do effects.

pub mod hook;
pub mod metrics;
pub mod mqtt;

use crate::config::{AllDown, Config};
use crate::model::{Choice, PublishState, Reason, Results, Since, State};
use crate::{clock, describe};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// What a run did, as far as publishing is concerned.
pub struct Run<'a> {
    pub choices: &'a [Choice],
    pub results: &'a Results,
    /// `Some(ok)` if this run applied a changed include (or tried to), `None` if unchanged.
    pub applied: Option<bool>,
    /// The apply went through as a live update of the tool's table alone, without a reload.
    pub live: bool,
    pub started: Instant,
}

/// Runs hook, MQTT and metrics as configured, after the apply; keeps their counters in `state`.
pub fn after_run(config: &Config, previous: &State, state: &mut State, run: &Run) {
    let publish = &config.publish;
    if publish.on_change.is_none() && publish.metrics.is_none() && publish.mqtt.is_none() {
        return;
    }
    let now = clock::unix_now();
    let mut p = previous.publish.clone();
    count(&mut p, config, run, publish.mqtt.is_some(), now);
    if let (Some(hook), Some(true)) = (&publish.on_change, run.applied) {
        let changes = changes(config, run.choices);
        if !changes.is_empty() && !hook::run(hook, &changes, now) {
            p.hook_failures += 1;
        }
    }
    if let Some(m) = &publish.mqtt {
        mqtt::after_run(m, config, run, state, &mut p, now);
    }
    state.publish = p;
    if let Some(m) = &publish.metrics {
        let text = metrics::render(config, run, state, now);
        if let Err(e) = metrics::write(&m.path, &text) {
            crate::log::warn(&format!(
                "metrics: cannot write {}: {e:#}",
                m.path.display()
            ));
        }
    }
}

/// Counts this run into the counters: apply outcome, check results, values in effect.
fn count(p: &mut PublishState, config: &Config, run: &Run, track_since: bool, now: u64) {
    match run.applied {
        Some(true) => {
            if run.live {
                p.live_updates += 1;
            } else {
                p.reloads += 1;
            }
            p.last_ok_apply_at = Some(now);
        }
        Some(false) => p.apply_failures += 1,
        None => {}
    }
    let mut checks = BTreeMap::new();
    for c in run.choices {
        let var = &config.variables[c.variable];
        let define = c.define(config).to_string();
        for (i, outcome) in run.results[c.variable][c.family].iter().enumerate() {
            let key = format!("{define} {}", var.addrs(c.family)[i]);
            let mut n = p.checks.get(&key).copied().unwrap_or_default();
            match outcome {
                Some(h) if h.is_up() => n[0] += 1,
                Some(_) => n[1] += 1,
                None => {}
            }
            checks.insert(key, n);
        }
    }
    // Only configured candidates: removed ones would otherwise be kept forever.
    p.checks = checks;
    if track_since {
        let mut since = BTreeMap::new();
        for c in run.choices {
            let Some(value) = in_effect(c, run) else {
                continue;
            };
            let define = c.define(config).to_string();
            let at = match p.since.get(&define) {
                Some(s) if s.value == value => s.at,
                _ => now,
            };
            since.insert(
                define,
                Since {
                    value: value.to_string(),
                    at,
                },
            );
        }
        p.since = since;
    }
}

/// The value in effect after this run: the new one unless this run's apply failed.
pub fn in_effect<'a>(c: &'a Choice, run: &Run) -> Option<&'a str> {
    match run.applied {
        Some(false) => c.effective.as_deref(),
        _ => Some(&c.rendered),
    }
}

/// The candidate in effect after this run: the new pick unless this run's apply failed.
pub fn in_effect_index(c: &Choice, run: &Run) -> Option<usize> {
    match run.applied {
        Some(false) => c.effective_index,
        _ => c.index,
    }
}

/// Why the define has no healthy standby after this run, if so (see `standby::missing`).
pub fn missing_standby(config: &Config, c: &Choice, run: &Run, state: &State) -> Option<String> {
    let var = &config.variables[c.variable];
    let fam = state.variables.get(&var.name).map(|v| v.family(c.family));
    let addrs = var.addrs(c.family);
    let drained = |i: usize| state.is_drained(&var.name, &addrs[i]);
    crate::standby::missing(var, c.family, fam, in_effect_index(c, run), drained)
}

/// The candidate (`ADDRESS:PORT`) rendered by a choice, if it renders one.
pub fn candidate(config: &Config, c: &Choice) -> Option<String> {
    c.index.map(|i| describe::candidate(config, c, i))
}

/// A stable machine-readable name for why a choice was made: `drained` when it failed over
/// because a better candidate is drained, not down.
pub fn reason_name(c: &Choice) -> &'static str {
    let drained_ahead = c.drained.iter().any(|&d| c.index.is_some_and(|i| d < i));
    match c.reason.as_ref() {
        Some(Reason::FailedOver) if drained_ahead => "drained",
        None => "no_addresses",
        Some(Reason::Preferred) => "preferred",
        Some(Reason::FailedOver) => "failed_over",
        Some(Reason::PreemptOff { .. }) => "preempt_off",
        Some(Reason::PreemptDelay { .. }) => "preempt_delay",
        Some(Reason::AllDown(AllDown::First)) => "all_down_first",
        Some(Reason::AllDown(AllDown::Keep)) => "all_down_keep",
        Some(Reason::AllDown(AllDown::Fallback)) => "all_down_fallback",
    }
}

/// One changed define, as the hook sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub define: String,
    pub variable: String,
    pub family: &'static str,
    /// The value in effect before; `None` if the include had no such define.
    pub old: Option<String>,
    pub new: String,
    /// `ADDRESS:PORT` of the new value's candidate; `None` for a kept or fallback literal.
    pub candidate: Option<String>,
    pub reason: &'static str,
    pub reason_text: String,
}

/// The defines whose value in effect differs from the new one, in config order.
pub fn changes(config: &Config, choices: &[Choice]) -> Vec<Change> {
    choices
        .iter()
        .filter(|c| c.effective.as_deref() != Some(c.rendered.as_str()))
        .map(|c| Change {
            define: c.define(config).to_string(),
            variable: config.variables[c.variable].name.clone(),
            family: c.family.suffix(),
            old: c.effective.clone(),
            new: c.rendered.clone(),
            candidate: candidate(config, c),
            reason: reason_name(c),
            reason_text: describe::reason_text(config, c),
        })
        .collect()
}

/// Where a define stands after this run: on its preferred candidate, failed over, or all
/// down. After a failed apply that is what the old value in effect stands for.
pub fn status(c: &Choice, run: &Run) -> Option<&'static str> {
    if run.applied == Some(false) {
        return c.reason.as_ref().map(|_| match c.effective_index {
            Some(0) => "preferred",
            Some(_) => "failed_over",
            None => "all_down",
        });
    }
    match c.reason.as_ref()? {
        Reason::Preferred => Some("preferred"),
        Reason::AllDown(_) => Some("all_down"),
        Reason::FailedOver | Reason::PreemptOff { .. } | Reason::PreemptDelay { .. } => {
            Some("failed_over")
        }
    }
}
