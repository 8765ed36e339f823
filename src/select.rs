//! Picking a candidate per variable and family from check results. Pure: no I/O, no clock.

use crate::config::{Config, Family};
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
    /// Index into the family's address list; `None` if the family has no addresses.
    pub index: Option<usize>,
    /// No candidate was up (the first one is used, as the reference addon does).
    pub all_down: bool,
    /// The literal rendered after `define NAME_vX =`.
    pub rendered: String,
}

pub fn select(config: &Config, results: &Results) -> Vec<Choice> {
    let mut choices = Vec::with_capacity(config.variables.len() * 2);
    for (vi, var) in config.variables.iter().enumerate() {
        for family in Family::ALL {
            let choice = if var.addrs(family).is_empty() {
                Choice {
                    variable: vi,
                    family,
                    index: None,
                    all_down: false,
                    rendered: family.unspecified().to_string(),
                }
            } else {
                let picked = first_up(&results[vi][family as usize]).flatten();
                let index = picked.unwrap_or(0);
                Choice {
                    variable: vi,
                    family,
                    index: Some(index),
                    all_down: picked.is_none(),
                    rendered: var.rendered(family, index),
                }
            };
            choices.push(choice);
        }
    }
    choices
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
        let picked: Vec<_> = select(&config, &results)
            .into_iter()
            .map(|c| (c.rendered, c.all_down))
            .collect();
        assert_eq!(
            picked,
            [
                ("10.0.0.2".to_string(), false),
                ("2001:db8::1".to_string(), true),
                ("201".to_string(), false),
                ("::".to_string(), false),
            ]
        );
    }
}
