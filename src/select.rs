//! Picking a candidate per variable and family from check results and history.
//! Pure: no I/O, and the time comes in as a parameter.

use crate::config::{Config, Family, Variable};
use crate::policy::{self, Pick, Reason};
use crate::state::{self, CandidateState, FamilyState, LastCheck, State, VariableState};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The result of checking one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Up { latency: Duration },
    Down(DownReason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DownReason {
    Refused,
    Timeout(Duration),
    Error(String),
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up { .. })
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Health::Up { latency } => write!(f, "up in {:.1} ms", latency.as_secs_f64() * 1e3),
            Health::Down(DownReason::Refused) => f.write_str("connection refused"),
            Health::Down(DownReason::Timeout(t)) => {
                write!(f, "no answer within {} ms", t.as_millis())
            }
            Health::Down(DownReason::Error(e)) => f.write_str(e),
        }
    }
}

/// Check results for one variable and family, index-aligned with its address list;
/// `None` means the candidate was not checked (its variable was decided without it).
pub type Outcomes = Vec<Option<Health>>;

/// Check results for a whole config: `[variable][family]`.
pub type Results = Vec<[Outcomes; 2]>;

pub fn empty_results(config: &Config) -> Results {
    config
        .variables
        .iter()
        .map(|v| Family::ALL.map(|f| vec![None; v.addrs(f).len()]))
        .collect()
}

/// The first candidate that is up, provided every earlier one is known to be down.
/// `Some(None)`: every candidate is down. `None`: not decided yet (an earlier result is pending).
pub fn first_up(outcomes: &[Option<Health>]) -> Option<Option<usize>> {
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Some(h) if h.is_up() => return Some(Some(i)),
            Some(_) => continue,
            None => return None,
        }
    }
    Some(None)
}

/// What was picked for one variable and family.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub variable: usize,
    pub family: Family,
    /// Index of the rendered candidate; `None` for a kept or fallback literal or no addresses.
    pub index: Option<usize>,
    /// Why; `None` if the family has no addresses.
    pub reason: Option<Reason>,
    /// The literal rendered after `define NAME_vX =`.
    pub rendered: String,
}

impl Choice {
    /// No candidate counts as up.
    pub fn all_down(&self) -> bool {
        matches!(self.reason, Some(Reason::AllDown(_)))
    }
}

/// Counts this run's results into the previous state and picks per variable and family.
/// `live` holds the defines of the include on disk (what is rendered now). Returns the choices
/// in render order and the new state (without `applied_md5`, which the caller carries over).
pub fn decide(
    config: &Config,
    results: &Results,
    previous: &State,
    live: &HashMap<&str, &str>,
    now: u64,
) -> (Vec<Choice>, State) {
    let mut choices = Vec::with_capacity(config.variables.len() * 2);
    let mut state = State {
        version: state::VERSION,
        ..State::default()
    };
    for (vi, var) in config.variables.iter().enumerate() {
        let fingerprint = var.fingerprint();
        // A changed candidate list starts from scratch: old counters describe other hosts.
        let history = previous
            .variables
            .get(&var.name)
            .filter(|v| v.fingerprint == fingerprint);
        let mut var_state = VariableState {
            fingerprint,
            ..VariableState::default()
        };
        for family in Family::ALL {
            let prev = history.map(|h| h.family(family));
            let define = format!("{}_{}", var.name, family.suffix());
            let (choice, fam_state) = decide_family(
                var,
                family,
                &results[vi][family as usize],
                prev,
                live.get(define.as_str()).copied(),
                now,
            );
            choices.push(Choice {
                variable: vi,
                ..choice
            });
            match family {
                Family::V4 => var_state.v4 = fam_state,
                Family::V6 => var_state.v6 = fam_state,
            }
        }
        state.variables.insert(var.name.clone(), var_state);
    }
    (choices, state)
}

fn decide_family(
    var: &Variable,
    family: Family,
    outcomes: &[Option<Health>],
    prev: Option<&FamilyState>,
    live: Option<&str>,
    now: u64,
) -> (Choice, FamilyState) {
    let addrs = var.addrs(family);
    let policy = &var.policy;
    if addrs.is_empty() {
        let choice = Choice {
            variable: 0,
            family,
            index: None,
            reason: None,
            rendered: family.unspecified().to_string(),
        };
        return (choice, FamilyState::default());
    }
    let candidates: Vec<CandidateState> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let old = prev.and_then(|p| p.candidates.get(i));
            let result = outcomes.get(i).and_then(Option::as_ref);
            CandidateState {
                address: *addr,
                counted: policy::observe(
                    old.and_then(|c| c.counted),
                    result.map(Health::is_up),
                    policy.rise,
                    policy.fall,
                    now,
                ),
                last: match result {
                    Some(h) => Some(last_check(h, now)),
                    None => old.and_then(|c| c.last.clone()),
                },
            }
        })
        .collect();
    let counted: Vec<_> = candidates.iter().map(|c| c.counted).collect();
    // What is live now: the include on disk is the truth; the state disambiguates values
    // shared by several candidates.
    let renders = |i: usize| var.rendered(family, i);
    let prev_selected = prev.and_then(|p| p.selected).filter(|&i| i < addrs.len());
    let current = match live {
        Some(text) => prev_selected
            .filter(|&i| renders(i) == text)
            .or_else(|| (0..addrs.len()).find(|&i| renders(i) == text)),
        None => prev_selected,
    };
    let (pick, reason) = policy::choose(&counted, current, policy, now);
    let (index, rendered) = match pick {
        Pick::Candidate(i) => (Some(i), renders(i)),
        Pick::Keep => match live
            .map(str::to_string)
            .or_else(|| prev.and_then(|p| p.rendered.clone()))
        {
            Some(text) => (current, text),
            None => (Some(0), renders(0)),
        },
        Pick::Fallback => (
            None,
            var.fallback(family)
                .expect("config validation guarantees a fallback for all_down: fallback"),
        ),
    };
    let fam_state = FamilyState {
        candidates,
        selected: index,
        rendered: Some(rendered.clone()),
    };
    let choice = Choice {
        variable: 0,
        family,
        index,
        reason: Some(reason),
        rendered,
    };
    (choice, fam_state)
}

fn last_check(health: &Health, at: u64) -> LastCheck {
    match health {
        Health::Up { latency } => LastCheck {
            at,
            up: true,
            latency_ms: Some((latency.as_secs_f64() * 1e4).round() / 10.0),
            error: None,
        },
        Health::Down(_) => LastCheck {
            at,
            up: false,
            latency_ms: None,
            error: Some(health.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn up() -> Option<Health> {
        Some(Health::Up {
            latency: Duration::from_millis(1),
        })
    }
    fn down() -> Option<Health> {
        Some(Health::Down(DownReason::Refused))
    }

    #[test]
    fn first_up_waits_only_for_earlier_candidates() {
        assert_eq!(first_up(&[up(), None]), Some(Some(0)));
        assert_eq!(first_up(&[down(), up(), None]), Some(Some(1)));
        assert_eq!(first_up(&[None, up()]), None);
        assert_eq!(first_up(&[down(), None, up()]), None);
        assert_eq!(first_up(&[down(), down()]), Some(None));
        assert_eq!(first_up(&[]), Some(None));
    }

    fn decide_all(config: &Config, results: &Results) -> Vec<(String, bool)> {
        decide(config, results, &State::default(), &HashMap::new(), 0)
            .0
            .into_iter()
            .map(|c| (c.rendered.clone(), c.all_down()))
            .collect()
    }

    #[test]
    fn selects_first_up_or_first_when_all_down_and_maps_values() {
        let config = crate::config::parse(
            r#"{"failover": {
                "a": {"ip4": ["10.0.0.1", "10.0.0.2"], "ip6": ["2001:db8::1", "2001:db8::2"], "port": 1},
                "m": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "values": [200, 201]}
            }}"#,
            Path::new("f"),
        )
        .unwrap();
        let results = vec![
            [vec![down(), up()], vec![down(), down()]],
            [vec![down(), up()], vec![]],
        ];
        assert_eq!(
            decide_all(&config, &results),
            [
                ("10.0.0.2".to_string(), false),
                ("2001:db8::1".to_string(), true),
                ("201".to_string(), false),
                ("::".to_string(), false),
            ]
        );
    }

    fn parse(json: &str) -> Config {
        crate::config::parse(json, Path::new("f")).unwrap()
    }

    /// One run of `decide` with the given v4 results, carrying state and the "live" include.
    fn step(config: &Config, state: &State, live: &str, v4: Outcomes, now: u64) -> (String, State) {
        let defines = crate::render::parse_defines(live);
        let (choices, state) = decide(config, &vec![[v4, vec![]]], state, &defines, now);
        (crate::render::include(config, &choices), state)
    }

    #[test]
    fn all_down_keep_holds_the_last_rendered_address() {
        let config = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "all_down": "keep"}}}"#,
        );
        let (text, state) = step(&config, &State::default(), "", vec![down(), up()], 0);
        assert!(text.contains("a_v4 = 10.0.0.2"));
        let (text, state) = step(&config, &state, &text, vec![down(), down()], 1);
        assert!(text.contains("a_v4 = 10.0.0.2"), "{text}");
        // Even with the state lost, the live include says what to keep.
        let (text, _) = step(&config, &State::default(), &text, vec![down(), down()], 2);
        assert!(text.contains("a_v4 = 10.0.0.2"), "{text}");
        let _ = state;
    }

    #[test]
    fn all_down_fallback_renders_the_literal() {
        let config = parse(
            r#"{"failover": {
                "a": {"ip4": ["10.0.0.1"], "ip6": "2001:db8::1", "port": 1,
                      "all_down": "fallback", "fallback": {"ip4": "192.0.2.1", "ip6": "100::1"}},
                "m": {"ip4": ["10.0.0.1"], "port": 1, "values": [200],
                      "all_down": "fallback", "fallback": 666}
            }}"#,
        );
        let results = vec![[vec![down()], vec![down()]], [vec![down()], vec![]]];
        let (choices, _) = decide(&config, &results, &State::default(), &HashMap::new(), 0);
        let rendered: Vec<_> = choices.iter().map(|c| c.rendered.as_str()).collect();
        assert_eq!(rendered, ["192.0.2.1", "100::1", "666", "::"]);
    }

    #[test]
    fn changed_candidate_list_resets_history() {
        let config = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "fall": 3}}}"#,
        );
        let (text, state) = step(&config, &State::default(), "", vec![up(), up()], 0);
        // fall 3: one failure keeps the first candidate
        let (text, state) = step(&config, &state, &text, vec![down(), up()], 1);
        assert!(text.contains("a_v4 = 10.0.0.1"), "{text}");
        // same hosts, new order: history is dropped, so the failure decides at once
        let reordered = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.3"], "port": 1, "fall": 3}}}"#,
        );
        let (text, _) = step(&reordered, &state, &text, vec![down(), up()], 2);
        assert!(text.contains("a_v4 = 10.0.0.3"), "{text}");
    }

    #[test]
    fn flapping_with_rise_and_fall_never_switches() {
        let config = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "fall": 3, "rise": 2}}}"#,
        );
        let (mut text, mut state) = step(&config, &State::default(), "", vec![up(), up()], 0);
        for t in 1..20 {
            let first = if t % 2 == 0 { up() } else { down() };
            (text, state) = step(&config, &state, &text, vec![first, up()], t);
            assert!(text.contains("a_v4 = 10.0.0.1"), "run {t}: {text}");
        }
    }
}
