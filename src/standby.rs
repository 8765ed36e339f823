//! Whether a define has a healthy standby: a dead backup must show before it is needed, as
//! HAProxy's and keepalived's checks of every backend do. Pure.

use crate::config::{Family, Variable};
use crate::model::FamilyState;
use std::fmt::Write;

/// Why `family` of `var` has no healthy standby, if so: it has two or more candidates, one is
/// in effect (`current`), and every other one counts as down or is drained. `None` if a
/// standby is up, if some standby has no result yet, or if the variable turns the warning off
/// (`warn_no_standby: false`). With nothing in effect, all are down: that is worse, and
/// reported as such elsewhere.
pub fn missing(
    var: &Variable,
    family: Family,
    fam: Option<&FamilyState>,
    current: Option<usize>,
    drained: impl Fn(usize) -> bool,
) -> Option<String> {
    let addrs = var.addrs(family);
    if !var.policy.warn_no_standby || addrs.len() < 2 {
        return None;
    }
    let current = current?;
    let mut why = String::new();
    for i in (0..addrs.len()).filter(|&i| i != current) {
        let state = fam
            .and_then(|f| f.candidates.get(i))
            .filter(|c| c.address == addrs[i]);
        let what = if drained(i) {
            "drained".to_string()
        } else {
            match state.and_then(|c| c.counted) {
                Some(k) if k.up => return None,
                Some(_) => {
                    let last = state.and_then(|c| c.last.as_ref());
                    match last.and_then(|l| l.error.as_deref()) {
                        Some(e) => format!("down ({e})"),
                        None => "down".to_string(),
                    }
                }
                None => return None,
            }
        };
        let sep = if why.is_empty() { "" } else { ", " };
        let _ = write!(why, "{sep}{} {what}", addrs[i]);
    }
    Some(format!("no healthy standby: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CandidateState, Counted, LastCheck};
    use std::path::Path;

    fn var(json: &str) -> Variable {
        crate::config::parse(json, Path::new("f"))
            .unwrap()
            .variables[0]
            .clone()
    }

    fn fam(states: &[Option<bool>]) -> FamilyState {
        FamilyState {
            candidates: states
                .iter()
                .enumerate()
                .map(|(i, s)| CandidateState {
                    address: format!("10.0.0.{}", i + 1).parse().unwrap(),
                    probe: None,
                    counted: s.map(|up| Counted {
                        up,
                        streak: 0,
                        since_ms: 0,
                    }),
                    last: s.filter(|up| !up).map(|_| LastCheck {
                        at: 0,
                        up: false,
                        latency_ms: None,
                        error: Some("connection refused".into()),
                    }),
                })
                .collect(),
            ..FamilyState::default()
        }
    }

    #[test]
    fn warns_only_when_every_other_candidate_is_down_or_drained() {
        let v =
            var(r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2", "10.0.0.3"], "port": 1}}}"#);
        let none = |_| false;
        let f = fam(&[Some(true), Some(false), Some(true)]);
        assert_eq!(missing(&v, Family::V4, Some(&f), Some(0), none), None);
        let f = fam(&[Some(true), Some(false), Some(false)]);
        assert_eq!(
            missing(&v, Family::V4, Some(&f), Some(0), none).as_deref(),
            Some(
                "no healthy standby: 10.0.0.2 down (connection refused), 10.0.0.3 down (connection refused)"
            )
        );
        // A drained standby is no standby either; one without a result is not judged.
        let f = fam(&[Some(true), Some(false), Some(true)]);
        assert!(
            missing(&v, Family::V4, Some(&f), Some(0), |i| i == 2)
                .unwrap()
                .contains("10.0.0.3 drained")
        );
        let f = fam(&[Some(true), Some(false), None]);
        assert_eq!(missing(&v, Family::V4, Some(&f), Some(0), none), None);
        // Off by setting; a single candidate has no standby to miss.
        let off = var(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "warn_no_standby": false}}}"#,
        );
        assert_eq!(
            missing(
                &off,
                Family::V4,
                Some(&fam(&[Some(true), Some(false)])),
                Some(0),
                none
            ),
            None
        );
        let one = var(r#"{"failover": {"a": {"ip4": ["10.0.0.1"], "port": 1}}}"#);
        assert_eq!(
            missing(&one, Family::V4, Some(&fam(&[Some(true)])), Some(0), none),
            None
        );
    }
}
