//! Anti-flapping and failure policy for one variable and family. Pure: time comes in as a
//! parameter, so every rule is testable with an injected clock.
//!
//! The counter model is keepalived's and HAProxy's: `fall` consecutive failures take an up
//! candidate down, `rise` consecutive successes bring a down one up; a success while going
//! down resets to fully up, a failure while going up resets to fully down.

use crate::config::{AllDown, Policy};
use serde::{Deserialize, Serialize};

/// A candidate's counted health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Whether the candidate counts as up.
    pub up: bool,
    /// Consecutive checks that contradict `up` so far (toward `fall` if up, `rise` if down).
    pub streak: u32,
    /// Unix time when `up` last changed (or the candidate was first checked).
    pub since: u64,
}

/// Counts one check result. `None` (not checked this run) changes nothing; a candidate with
/// no history is decided by its first check.
pub fn observe(
    prev: Option<Counted>,
    ok: Option<bool>,
    rise: u32,
    fall: u32,
    now: u64,
) -> Option<Counted> {
    let Some(ok) = ok else { return prev };
    let Some(prev) = prev else {
        return Some(Counted {
            up: ok,
            streak: 0,
            since: now,
        });
    };
    if ok == prev.up {
        return Some(Counted { streak: 0, ..prev });
    }
    let streak = prev.streak + 1;
    let needed = if prev.up { fall } else { rise };
    Some(if streak >= needed {
        Counted {
            up: ok,
            streak: 0,
            since: now,
        }
    } else {
        Counted { streak, ..prev }
    })
}

/// Why a candidate (or literal) was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The first candidate counts as up.
    Preferred,
    /// Earlier candidates count as down; this is the first one that counts as up.
    FailedOver,
    /// A better candidate is up again, but `preempt` is off.
    PreemptOff { better: usize },
    /// A better candidate is up again, but not yet for `preempt_delay_s`.
    PreemptDelay { better: usize, left_s: u64 },
    /// No candidate counts as up; `all_down` decides.
    AllDown(AllDown),
}

/// What to render: a candidate by index, what was rendered last (`all_down: keep`), or the
/// fallback literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Candidate(usize),
    Keep,
    Fallback,
}

/// Picks for one variable and family. `current` is the candidate rendered now, if known.
pub fn choose(
    counted: &[Option<Counted>],
    current: Option<usize>,
    policy: &Policy,
    now: u64,
) -> (Pick, Reason) {
    let up = |i: usize| counted.get(i).copied().flatten().is_some_and(|c| c.up);
    let up_for = |i: usize| counted[i].map_or(0, |c| now.saturating_sub(c.since));
    let ranked = |i: usize| {
        if i == 0 {
            Reason::Preferred
        } else {
            Reason::FailedOver
        }
    };
    let Some(best) = (0..counted.len()).find(|&i| up(i)) else {
        let pick = match policy.all_down {
            AllDown::First => Pick::Candidate(0),
            AllDown::Keep => Pick::Keep,
            AllDown::Fallback => Pick::Fallback,
        };
        return (pick, Reason::AllDown(policy.all_down));
    };
    match current {
        // Staying on a healthy current candidate unless preemption says to move up.
        Some(cur) if up(cur) && best < cur => {
            if !policy.preempt {
                return (Pick::Candidate(cur), Reason::PreemptOff { better: best });
            }
            let delay = policy.preempt_delay_s;
            match (best..cur).find(|&i| up(i) && up_for(i) >= delay) {
                Some(i) => (Pick::Candidate(i), ranked(i)),
                None => (
                    Pick::Candidate(cur),
                    Reason::PreemptDelay {
                        better: best,
                        left_s: delay - up_for(best),
                    },
                ),
            }
        }
        // No current candidate, or it went down: fail over to the best one that is up.
        _ => (Pick::Candidate(best), ranked(best)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_TIMEOUT_MS, Fallback};

    fn policy() -> Policy {
        Policy {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            fall: 1,
            rise: 1,
            preempt: true,
            preempt_delay_s: 0,
            all_down: AllDown::First,
            fallback: None::<Fallback>,
        }
    }

    /// Runs a sequence of check results (`+` up, `-` down, `.` not checked) and returns the
    /// counted state after each, as `U`/`D` plus the streak.
    fn run(seq: &str, rise: u32, fall: u32) -> Vec<String> {
        let mut state = None;
        seq.chars()
            .enumerate()
            .map(|(t, c)| {
                let ok = match c {
                    '+' => Some(true),
                    '-' => Some(false),
                    _ => None,
                };
                state = observe(state, ok, rise, fall, t as u64);
                state.map_or("?".into(), |s| {
                    format!("{}{}", if s.up { 'U' } else { 'D' }, s.streak)
                })
            })
            .collect()
    }

    #[test]
    fn counter_model_table() {
        // (sequence, rise, fall, expected states)
        let table: &[(&str, u32, u32, &[&str])] = &[
            // defaults: every check decides (the reference addon's behaviour)
            ("+-+-", 1, 1, &["U0", "D0", "U0", "D0"]),
            // no history: the first check decides, whatever rise/fall say
            ("-", 2, 3, &["D0"]),
            ("+", 2, 3, &["U0"]),
            // fall 3: two failures keep it up, the third takes it down
            ("+---", 1, 3, &["U0", "U1", "U2", "D0"]),
            // a success while going down resets to fully up
            ("+--+--", 1, 3, &["U0", "U1", "U2", "U0", "U1", "U2"]),
            // rise 2: one success is not enough, two are
            ("-++", 2, 1, &["D0", "D1", "U0"]),
            // a failure while going up resets to fully down
            ("-+-+", 2, 1, &["D0", "D1", "D0", "D1"]),
            // alternating with fall 3 / rise 2 never changes state
            (
                "+-+-+-+-",
                2,
                3,
                &["U0", "U1", "U0", "U1", "U0", "U1", "U0", "U1"],
            ),
            // unchecked runs change nothing
            ("+.-.-.-", 1, 3, &["U0", "U0", "U1", "U1", "U2", "U2", "D0"]),
            ("..", 1, 1, &["?", "?"]),
        ];
        for (seq, rise, fall, expected) in table {
            assert_eq!(
                run(seq, *rise, *fall),
                *expected,
                "{seq} rise {rise} fall {fall}"
            );
        }
    }

    #[test]
    fn since_moves_only_on_a_state_change() {
        let s = observe(None, Some(true), 1, 2, 100).unwrap();
        let s = observe(Some(s), Some(false), 1, 2, 105).unwrap();
        assert_eq!((s.up, s.since), (true, 100));
        let s = observe(Some(s), Some(false), 1, 2, 110).unwrap();
        assert_eq!((s.up, s.since), (false, 110));
    }

    fn up(since: u64) -> Option<Counted> {
        Some(Counted {
            up: true,
            streak: 0,
            since,
        })
    }
    fn down() -> Option<Counted> {
        Some(Counted {
            up: false,
            streak: 0,
            since: 0,
        })
    }

    #[test]
    fn picks_first_up_and_fails_over() {
        let p = policy();
        assert_eq!(
            choose(&[up(0), up(0)], None, &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        assert_eq!(
            choose(&[down(), up(0)], Some(0), &p, 10),
            (Pick::Candidate(1), Reason::FailedOver)
        );
        assert_eq!(
            choose(&[None, up(0)], None, &p, 10),
            (Pick::Candidate(1), Reason::FailedOver)
        );
    }

    #[test]
    fn preemption_on_off_and_delayed() {
        let mut p = policy();
        // default: move back to the preferred candidate at once
        assert_eq!(
            choose(&[up(9), up(0)], Some(1), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // nopreempt: stay on the healthy backup
        p.preempt = false;
        assert_eq!(
            choose(&[up(9), up(0)], Some(1), &p, 10),
            (Pick::Candidate(1), Reason::PreemptOff { better: 0 })
        );
        // ... but leave it when it goes down
        assert_eq!(
            choose(&[up(9), down()], Some(1), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // preempt delay: up since t=90, delay 60: at t=100 stay (50 s left), at t=150 move
        p.preempt = true;
        p.preempt_delay_s = 60;
        assert_eq!(
            choose(&[up(90), up(0)], Some(1), &p, 100),
            (
                Pick::Candidate(1),
                Reason::PreemptDelay {
                    better: 0,
                    left_s: 50
                }
            )
        );
        assert_eq!(
            choose(&[up(90), up(0)], Some(1), &p, 150),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // a middle candidate that has been up long enough is taken meanwhile
        assert_eq!(
            choose(&[up(90), up(0), up(0)], Some(2), &p, 100),
            (Pick::Candidate(1), Reason::FailedOver)
        );
        // the delay never holds traffic on a candidate that is down
        assert_eq!(
            choose(&[up(99), down()], Some(1), &p, 100),
            (Pick::Candidate(0), Reason::Preferred)
        );
    }

    #[test]
    fn all_down_modes() {
        let mut p = policy();
        let all_down = [down(), down()];
        assert_eq!(
            choose(&all_down, Some(1), &p, 0),
            (Pick::Candidate(0), Reason::AllDown(AllDown::First))
        );
        p.all_down = AllDown::Keep;
        assert_eq!(
            choose(&all_down, Some(1), &p, 0),
            (Pick::Keep, Reason::AllDown(AllDown::Keep))
        );
        p.all_down = AllDown::Fallback;
        assert_eq!(
            choose(&all_down, Some(1), &p, 0),
            (Pick::Fallback, Reason::AllDown(AllDown::Fallback))
        );
        // never checked counts as not up
        assert_eq!(
            choose(&[None], None, &p, 0),
            (Pick::Fallback, Reason::AllDown(AllDown::Fallback))
        );
    }
}
