//! Anti-flapping and failure policy for one variable and family. Pure: time comes in as a
//! parameter, so every rule is testable with an injected clock.
//!
//! The counter model is keepalived's and HAProxy's: `fall` consecutive failures take an up
//! candidate down, `rise` consecutive successes bring a down one up; a success while going
//! down resets to fully up, a failure while going up resets to fully down.

use crate::config::{AllDown, Policy};
use crate::model::{Counted, Reason};

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
            since_ms: now,
        });
    };
    if ok == prev.up {
        return Some(Counted { streak: 0, ..prev });
    }
    // Saturating: a state file may hold any number, and a streak never wraps back to 0.
    let streak = prev.streak.saturating_add(1);
    let needed = if prev.up { fall } else { rise };
    Some(if streak >= needed {
        Counted {
            up: ok,
            streak: 0,
            since_ms: now,
        }
    } else {
        Counted { streak, ..prev }
    })
}

/// The counters of a candidate without history that has no traffic: down, no success yet,
/// so it must earn `rise` successes like any candidate coming back.
pub fn no_credit(now: u64) -> Counted {
    Counted {
        up: false,
        streak: 0,
        since_ms: now,
    }
}

/// What to render: a candidate by index, the current choice again (`all_down: keep`), or the
/// fallback literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Candidate(usize),
    Keep,
    Fallback,
}

/// One candidate as the policy sees it in a run: its counters before the run and this run's
/// check result, `None` while the check has not answered (or never will: the run stopped
/// waiting for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub prev: Option<Counted>,
    pub ok: Option<bool>,
}

/// Three-valued logic over results not in yet: `Some(b)` whatever the pending results say,
/// `None` if they decide it.
type Tri = Option<bool>;

impl Seen {
    /// The counters after this run if the check says `ok`.
    fn after(&self, ok: bool, policy: &Policy, now: u64) -> Counted {
        observe(self.prev, Some(ok), policy.rise, policy.fall, now)
            .expect("a result always yields counters")
    }

    /// Whether the candidate counts as up after this run.
    fn up(&self, policy: &Policy, now: u64) -> Tri {
        match self.ok {
            Some(ok) => Some(self.after(ok, policy, now).up),
            None => {
                let (if_up, if_down) = (
                    self.after(true, policy, now),
                    self.after(false, policy, now),
                );
                (if_up.up == if_down.up).then_some(if_up.up)
            }
        }
    }

    /// Whether traffic may move *to* this candidate: it counts as up and answered in this run.
    /// Counters alone are not enough: with `fall` > 1 a candidate that just failed still counts
    /// as up, which may keep traffic where it is but must never attract it.
    fn eligible(&self, policy: &Policy, now: u64) -> Tri {
        match self.ok {
            Some(ok) => Some(ok && self.after(true, policy, now).up),
            None if self.after(true, policy, now).up => None,
            None => Some(false),
        }
    }

    /// Like `eligible`, for moving traffic off a healthy current candidate: without history the
    /// candidate starts as down, so it must earn `rise` first and its preempt delay starts now.
    /// Losing the state thus makes preemption more careful, never more eager.
    fn eligible_to_preempt(&self, policy: &Policy, now: u64) -> Tri {
        let prev = self.prev.unwrap_or(Counted {
            up: false,
            streak: 0,
            since_ms: now,
        });
        Seen {
            prev: Some(prev),
            ..*self
        }
        .eligible(policy, now)
    }

    /// How long it has counted as up, given that it answers in this run.
    fn up_for(&self, policy: &Policy, now: u64) -> u64 {
        now.saturating_sub(self.after(true, policy, now).since_ms)
    }
}

/// The first index in `range` for which `pred` holds; `Err(())` if a pending result decides
/// which one it is.
fn first(range: std::ops::Range<usize>, pred: &dyn Fn(usize) -> Tri) -> Result<Option<usize>, ()> {
    for i in range {
        match pred(i) {
            Some(true) => return Ok(Some(i)),
            Some(false) => continue,
            None => return Err(()),
        }
    }
    Ok(None)
}

/// Picks for one variable and family. `current` is the candidate in effect now (from the
/// include on disk), if any.
///
/// Returns `None` while results not in yet could still change the pick or its reason: a run
/// stops waiting for checks only once every family returns `Some`, so stopping early never
/// changes a decision. With every result in, it always returns `Some`.
pub fn choose(
    seen: &[Seen],
    current: Option<usize>,
    policy: &Policy,
    now: u64,
) -> Option<(Pick, Reason)> {
    choose_from(seen.len(), |i| seen[i], 0, current, policy, now)
}

/// [`choose`] over `len` candidates read through `seen`, for a run that asks again after every
/// batch of results: nothing is copied, and the scans start at `skip`. The caller guarantees
/// that every candidate below `skip` has answered in this run and failed (`ok == Some(false)`):
/// such a candidate can neither attract traffic nor preempt, whatever its counters, so
/// skipping it changes no answer, and a variable with many candidates is decided in linear time.
pub fn choose_from(
    len: usize,
    seen: impl Fn(usize) -> Seen,
    skip: usize,
    current: Option<usize>,
    policy: &Policy,
    now: u64,
) -> Option<(Pick, Reason)> {
    let scan = |range: std::ops::Range<usize>, pred: &dyn Fn(usize) -> Tri| {
        first(range.start.max(skip)..range.end, pred)
    };
    let eligible = |i: usize| seen(i).eligible(policy, now);
    let ranked = |i: usize| {
        if i == 0 {
            Reason::Preferred
        } else {
            Reason::FailedOver
        }
    };
    let current = current.filter(|&c| c < len);
    if let Some(cur) = current {
        // A current candidate that still counts as up stays unless preemption moves traffic
        // to a better one; only a better candidate that answered now is a reason to move.
        if seen(cur).up(policy, now)? {
            let eligible = |i: usize| seen(i).eligible_to_preempt(policy, now);
            let Some(best) = scan(0..cur, &eligible).ok()? else {
                return Some((Pick::Candidate(cur), ranked(cur)));
            };
            if !policy.preempt {
                return Some((Pick::Candidate(cur), Reason::PreemptOff { better: best }));
            }
            let delay = policy.preempt_delay_s.saturating_mul(1000);
            let settled = |i: usize| match eligible(i) {
                Some(false) => Some(false),
                e if seen(i).up_for(policy, now) >= delay => e,
                _ => Some(false),
            };
            return Some(match scan(best..cur, &settled).ok()? {
                Some(i) => (Pick::Candidate(i), ranked(i)),
                None => (
                    Pick::Candidate(cur),
                    Reason::PreemptDelay {
                        better: best,
                        left_ms: delay - seen(best).up_for(policy, now),
                    },
                ),
            });
        }
    }
    // No current candidate, or it counts as down: fail over at once (never waiting for
    // preempt_delay_s) to the best candidate that answered.
    Some(match scan(0..len, &eligible).ok()? {
        Some(i) => (Pick::Candidate(i), ranked(i)),
        None => {
            let pick = match policy.all_down {
                AllDown::First => Pick::Candidate(0),
                AllDown::Keep => Pick::Keep,
                AllDown::Fallback => Pick::Fallback,
            };
            (pick, Reason::AllDown(policy.all_down))
        }
    })
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
            apply: crate::config::ApplyMode::Reload,
            warn_no_standby: true,
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
        assert_eq!((s.up, s.since_ms), (true, 100));
        let s = observe(Some(s), Some(false), 1, 2, 110).unwrap();
        assert_eq!((s.up, s.since_ms), (false, 110));
    }

    /// Counted up since `since`, answering now.
    fn up(since: u64) -> Seen {
        Seen {
            prev: Some(Counted {
                up: true,
                streak: 0,
                since_ms: since,
            }),
            ok: Some(true),
        }
    }
    /// Counted down, refused now.
    fn down() -> Seen {
        Seen {
            prev: Some(Counted {
                up: false,
                streak: 0,
                since_ms: 0,
            }),
            ok: Some(false),
        }
    }
    /// `s` with its result not in yet.
    fn pending(s: Seen) -> Seen {
        Seen { ok: None, ..s }
    }

    fn pick(seen: &[Seen], cur: Option<usize>, p: &Policy, now: u64) -> (Pick, Reason) {
        choose(seen, cur, p, now).expect("every result is in")
    }

    #[test]
    fn picks_first_up_and_fails_over() {
        let p = policy();
        assert_eq!(
            pick(&[up(0), up(0)], None, &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        assert_eq!(
            pick(&[down(), up(0)], Some(0), &p, 10),
            (Pick::Candidate(1), Reason::FailedOver)
        );
        let fresh = Seen {
            prev: None,
            ok: Some(true),
        };
        assert_eq!(
            pick(
                &[
                    Seen {
                        prev: None,
                        ok: Some(false)
                    },
                    fresh
                ],
                None,
                &p,
                10
            ),
            (Pick::Candidate(1), Reason::FailedOver)
        );
    }

    #[test]
    fn preemption_on_off_and_delayed() {
        let mut p = policy();
        // default: move back to the preferred candidate at once
        assert_eq!(
            pick(&[up(9), up(0)], Some(1), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // nopreempt: stay on the healthy backup
        p.preempt = false;
        assert_eq!(
            pick(&[up(9), up(0)], Some(1), &p, 10),
            (Pick::Candidate(1), Reason::PreemptOff { better: 0 })
        );
        // ... but leave it when it goes down
        assert_eq!(
            pick(&[up(9), down()], Some(1), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // preempt delay: up since t=90 s, delay 60 s: at t=100 s stay (50 s left), at 150 s
        // move; times in milliseconds, and never a millisecond early
        p.preempt = true;
        p.preempt_delay_s = 60;
        assert_eq!(
            pick(&[up(90_000), up(0)], Some(1), &p, 100_000),
            (
                Pick::Candidate(1),
                Reason::PreemptDelay {
                    better: 0,
                    left_ms: 50_000
                }
            )
        );
        assert_eq!(
            pick(&[up(90_000), up(0)], Some(1), &p, 149_999).1,
            Reason::PreemptDelay {
                better: 0,
                left_ms: 1
            }
        );
        assert_eq!(
            pick(&[up(90_000), up(0)], Some(1), &p, 150_000),
            (Pick::Candidate(0), Reason::Preferred)
        );
        // a middle candidate that has been up long enough is taken meanwhile
        assert_eq!(
            pick(&[up(90_000), up(0), up(0)], Some(2), &p, 100_000),
            (Pick::Candidate(1), Reason::FailedOver)
        );
        // the delay never holds traffic on a candidate that is down
        assert_eq!(
            pick(&[up(99_000), down()], Some(1), &p, 100_000),
            (Pick::Candidate(0), Reason::Preferred)
        );
    }

    #[test]
    fn a_candidate_that_failed_now_never_attracts_traffic() {
        let mut p = policy();
        p.fall = 3;
        // B counts as up (one failure of three) but failed now: A down means all down, not B.
        let b_failing = Seen {
            ok: Some(false),
            ..up(0)
        };
        let a_dead = Seen {
            prev: Some(Counted {
                up: true,
                streak: 2,
                since_ms: 0,
            }),
            ok: Some(false),
        };
        assert_eq!(
            pick(&[a_dead, b_failing], Some(0), &p, 10),
            (Pick::Candidate(0), Reason::AllDown(AllDown::First))
        );
        // ... while the current one, failing once, stays (that is what fall is for)
        assert_eq!(
            pick(&[b_failing, up(0)], Some(0), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
    }

    #[test]
    fn undecided_while_a_pending_result_could_change_the_pick() {
        let p = policy();
        // On A: A's own result decides; B's does not matter.
        assert_eq!(choose(&[pending(up(0)), up(0)], Some(0), &p, 10), None);
        assert_eq!(
            choose(&[up(0), pending(up(0))], Some(0), &p, 10),
            Some((Pick::Candidate(0), Reason::Preferred))
        );
        // On B with A back: B's result decides whether to stay or move (preempt or not).
        let mut nopreempt = policy();
        nopreempt.preempt = false;
        assert_eq!(
            choose(&[up(0), pending(up(0))], Some(1), &nopreempt, 10),
            None
        );
        // Failing over: every better candidate must be known down first.
        assert_eq!(
            choose(&[pending(down()), up(0), down()], Some(2), &p, 10),
            None
        );
        // fall 3: a current candidate counted up with no failures stays up whatever it answers,
        // but a better one must still be known not to answer.
        let mut fall3 = policy();
        fall3.fall = 3;
        assert_eq!(
            choose(&[down(), pending(up(0))], Some(1), &fall3, 10),
            Some((Pick::Candidate(1), Reason::FailedOver))
        );
        // rise 2: a down candidate cannot become eligible this run, so no need to wait for it.
        let mut rise2 = policy();
        rise2.rise = 2;
        assert_eq!(
            choose(&[pending(down()), up(0)], None, &rise2, 10),
            Some((Pick::Candidate(1), Reason::FailedOver))
        );
    }

    #[test]
    fn without_history_a_better_candidate_must_earn_rise_before_preempting() {
        let mut p = policy();
        p.rise = 2;
        let fresh_up = Seen {
            prev: None,
            ok: Some(true),
        };
        // State lost while on B: B answers and stays; A needs two successes first.
        assert_eq!(
            pick(&[fresh_up, fresh_up], Some(1), &p, 10),
            (Pick::Candidate(1), Reason::FailedOver)
        );
        // ... but with B dead, traffic goes to A at once.
        let fresh_down = Seen {
            prev: None,
            ok: Some(false),
        };
        assert_eq!(
            pick(&[fresh_up, fresh_down], Some(1), &p, 10),
            (Pick::Candidate(0), Reason::Preferred)
        );
    }

    #[test]
    fn all_down_modes() {
        let mut p = policy();
        let all_down = [down(), down()];
        assert_eq!(
            pick(&all_down, Some(1), &p, 0),
            (Pick::Candidate(0), Reason::AllDown(AllDown::First))
        );
        p.all_down = AllDown::Keep;
        assert_eq!(
            pick(&all_down, Some(1), &p, 0),
            (Pick::Keep, Reason::AllDown(AllDown::Keep))
        );
        p.all_down = AllDown::Fallback;
        assert_eq!(
            pick(&all_down, Some(1), &p, 0),
            (Pick::Fallback, Reason::AllDown(AllDown::Fallback))
        );
    }

    #[test]
    fn a_streak_at_its_maximum_does_not_wrap() {
        let prev = Counted {
            up: true,
            streak: u32::MAX,
            since_ms: 1,
        };
        // One more failure: the streak stays at its maximum, which is past any fall.
        let after = observe(Some(prev), Some(false), 1, 1000, 2).unwrap();
        assert_eq!((after.up, after.streak, after.since_ms), (false, 0, 2));
        let mid = observe(
            Some(Counted {
                streak: u32::MAX - 1,
                ..prev
            }),
            Some(false),
            1,
            u32::MAX,
            2,
        );
        assert_eq!(mid.map(|c| (c.up, c.streak)), Some((false, 0)));
    }
}
