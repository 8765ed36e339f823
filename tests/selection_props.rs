//! Property tests of the selection engine over random histories of runs.
//!
//! Each case is one variable with 1–4 candidates and random settings. It goes through 1–30
//! runs. In each run every candidate is up, refused or timing out, answers arrive in a random
//! order (timeouts last), and the state may be lost or fail to save. Applies may fail too.
//! Every run is simulated as `run` does it: the include in effect decides what is current, the
//! checks stop as soon as `Inputs::decided` says so, and `apply::need` decides whether to reload.
//! Checked for every run:
//! - the early-stopped decision equals the decision with every result in hand;
//! - a rendered candidate that counts as down is never kept unless all are down;
//! - `preempt: false` never moves off a current candidate that counts as up;
//! - a switch never lands on a candidate that failed its check in this run (all-down picks
//!   aside: `all_down: first` renders the first candidate by definition);
//! - a lost state never makes a run leave a current candidate that answered, when the run
//!   with history would have stayed;
//! - no reload without a change of rendered text, and every change is reloaded;
//! - no history means no credit: a candidate without counters that has no traffic does not
//!   count as up after one check when `rise` asks for more;
//! - over history: a current candidate that failed its check in `fall` runs in a row is no
//!   longer rendered (unless all are down), and with preemption on and no delay, a better
//!   candidate that answered in `rise` runs in a row takes the traffic back. Both fail if a
//!   run stops before the candidates that decide were checked, freezing their counters.
//!
//! Cases: `PROPTEST_CASES` (default 3000; CI runs the default).

use nftables_failover::apply::{self, InEffect, Need};
use nftables_failover::config::{self, Config, Family};
use nftables_failover::model::{self, Choice, DownReason, Health, Results, State};
use nftables_failover::render;
use nftables_failover::select::{self, Inputs};
use proptest::prelude::*;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Up,
    Refused,
    Timeout,
}

#[derive(Debug, Clone)]
struct Run {
    answers: Vec<Answer>,
    /// Sort keys giving the arrival order of the answered checks.
    order: Vec<u32>,
    dt: u64,
    lose_state: bool,
    save_fails: bool,
    apply_fails: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    config: String,
    candidates: usize,
    preempt: bool,
    fall: u32,
    rise: u32,
    delay: u64,
    runs: Vec<Run>,
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        3 => Just(Answer::Up),
        2 => Just(Answer::Refused),
        1 => Just(Answer::Timeout)
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        1usize..=4,
        1u32..=3,
        1u32..=3,
        any::<bool>(),
        prop_oneof![Just(0u64), Just(5), Just(30)],
        0usize..3,
        any::<bool>(),
    )
        .prop_flat_map(|(n, fall, rise, preempt, delay, all_down, values)| {
            let run = (
                proptest::collection::vec(answer(), n),
                proptest::collection::vec(any::<u32>(), n),
                1u64..=15,
                proptest::bool::weighted(0.1),
                proptest::bool::weighted(0.05),
                proptest::bool::weighted(0.1),
            )
                .prop_map(
                    |(answers, order, dt, lose_state, save_fails, apply_fails)| Run {
                        answers,
                        order,
                        dt,
                        lose_state,
                        save_fails,
                        apply_fails,
                    },
                );
            let addrs: Vec<String> = (1..=n).map(|i| format!("\"192.0.2.{i}\"")).collect();
            let values = if values {
                let v: Vec<String> = (0..n).map(|i| (100 + i).to_string()).collect();
                format!(", \"values\": [{}]", v.join(", "))
            } else {
                String::new()
            };
            let all_down = match all_down {
                0 => r#""first""#.to_string(),
                1 => r#""keep""#.to_string(),
                _ if values.is_empty() => {
                    r#""fallback", "fallback": {"ip4": "198.51.100.9"}"#.into()
                }
                _ => r#""fallback", "fallback": 666"#.into(),
            };
            let config = format!(
                r#"{{"failover": {{"web": {{"ip4": [{}], "port": 443{values},
                    "fall": {fall}, "rise": {rise}, "preempt": {preempt},
                    "preempt_delay_s": {delay}, "all_down": {all_down}}}}}}}"#,
                addrs.join(", ")
            );
            proptest::collection::vec(run, 1..=30).prop_map(move |runs| Scenario {
                config: config.clone(),
                candidates: n,
                preempt,
                fall,
                rise,
                delay,
                runs,
            })
        })
}

fn health(a: Answer) -> Health {
    match a {
        Answer::Up => Health::Up {
            latency: Duration::from_millis(1),
        },
        Answer::Refused => Health::Down(DownReason::Refused),
        Answer::Timeout => Health::Down(DownReason::Timeout(Duration::from_secs(2))),
    }
}

fn all_decided(config: &Config, inputs: &Inputs, results: &Results, now: u64) -> bool {
    (0..config.variables.len()).all(|v| {
        Family::ALL
            .iter()
            .all(|&f| inputs.decided(config, v, f, &results[v][f], now))
    })
}

/// The v4 choice of the one variable.
fn v4(choices: &[Choice]) -> &Choice {
    choices.iter().find(|c| c.family == Family::V4).unwrap()
}

fn check(s: &Scenario) -> Result<(), TestCaseError> {
    let config = config::parse(&s.config, Path::new("failover.json")).unwrap();
    let mut state = State::default();
    // What nftables runs with: the last applied include (the disk always holds it here).
    let mut applied: Option<String> = None;
    let mut now = 1_000_000;
    // Per candidate: failed checks in a row while it was in effect, and answers in a row
    // while it ranked above the candidate in effect.
    let mut fails_current = vec![0u32; s.candidates];
    let mut ups_better = vec![0u32; s.candidates];
    // Whether the last run's state was saved: after a failed save the next run counts from the
    // state before it, so the streaks seen since then say nothing about its counters.
    let mut saved = true;
    for (t, run) in s.runs.iter().enumerate() {
        now += run.dt * 1000;
        let previous = if run.lose_state {
            State::default()
        } else {
            state.clone()
        };
        if previous.variables.is_empty() || !saved {
            fails_current.fill(0);
            ups_better.fill(0);
        }
        let effective = applied.clone().unwrap_or_default();
        let defines = render::parse_defines(&effective);
        let inputs = Inputs::new(&config, &previous, &defines);

        let mut full = model::empty_results(&config);
        for (i, a) in run.answers.iter().enumerate() {
            full[0][Family::V4][i] = Some(health(*a));
        }
        // Answers arrive in random order; timeouts only after everything else.
        let mut order: Vec<usize> = (0..s.candidates).collect();
        order.sort_by_key(|&i| (run.answers[i] == Answer::Timeout, run.order[i], i));
        let mut partial = model::empty_results(&config);
        for &i in &order {
            if all_decided(&config, &inputs, &partial, now) {
                break;
            }
            partial[0][Family::V4][i] = full[0][Family::V4][i].clone();
        }
        let (early, mut new_state) = select::decide(&config, &partial, &inputs, now);
        // As a run does after its apply: the answers that came in after the choice are counted.
        select::count_late(&config, &mut new_state, &partial, &full, now);
        let (complete, _) = select::decide(&config, &full, &inputs, now);
        prop_assert_eq!(
            &early,
            &complete,
            "run {}: early stop changed the decision",
            t
        );

        let c = v4(&early);
        let counted = |i: usize| new_state.variables["web"].v4.candidates[i].counted;
        let answered_up = |i: usize| run.answers[i] == Answer::Up;
        let stays = c.effective.as_deref() == Some(c.rendered.as_str());
        if let (Some(cur), true) = (c.effective_index, stays) {
            prop_assert!(
                counted(cur).is_some_and(|k| k.up) || c.all_down(),
                "run {}: kept {} although it counts as down: {:?}",
                t,
                c.rendered,
                c
            );
        }
        let healthy = |i: &usize| counted(*i).is_some_and(|k| k.up);
        if let Some(cur) = c.effective_index.filter(healthy).filter(|_| !s.preempt) {
            prop_assert_eq!(c.index, Some(cur), "run {}: preempt off moved traffic", t);
        }
        if !stays && !c.all_down() {
            let i = c
                .index
                .expect("a switch that is not all-down lands on a candidate");
            prop_assert!(
                answered_up(i),
                "run {}: switched to {} which failed now",
                t,
                i
            );
        }
        if run.lose_state {
            let with_history = Inputs::new(&config, &state, &defines);
            let (kept, _) = select::decide(&config, &full, &with_history, now);
            let kept = v4(&kept);
            let cur_answered = c.effective_index.is_some_and(answered_up);
            if cur_answered && kept.effective.as_deref() == Some(kept.rendered.as_str()) {
                prop_assert!(
                    stays,
                    "run {}: lost state made it leave {:?}",
                    t,
                    c.effective
                );
            }
        }

        // No history means no credit: a candidate without counters before this run that has
        // no traffic (not in effect, not failed over to) is not up after one success, unless
        // one is all `rise` asks; so it earns `rise` before it can take traffic back.
        for i in 0..s.candidates {
            let had_history = previous
                .variables
                .get("web")
                .and_then(|v| v.v4.candidates.get(i))
                .is_some_and(|c| c.counted.is_some());
            let has_traffic = c.effective_index == Some(i) || c.index == Some(i);
            if !had_history && !has_traffic && s.rise > 1 {
                prop_assert!(
                    !counted(i).is_some_and(|k| k.up),
                    "run {}: candidate {} had no history and counts as up after one check (rise {})",
                    t,
                    i,
                    s.rise
                );
            }
        }

        let current = c.effective_index;
        for i in 0..s.candidates {
            let down = run.answers[i] != Answer::Up;
            fails_current[i] = if current == Some(i) && down {
                fails_current[i] + 1
            } else {
                0
            };
            let better = current.is_some_and(|cur| i < cur);
            ups_better[i] = if better && !down {
                ups_better[i] + 1
            } else {
                0
            };
        }
        if let (Some(cur), true) = (current, stays) {
            prop_assert!(
                fails_current[cur] < s.fall || c.all_down(),
                "run {}: {} failed {} runs in a row (fall {}) and is still rendered",
                t,
                c.rendered,
                fails_current[cur],
                s.fall
            );
            if s.preempt && s.delay == 0 {
                prop_assert!(
                    (0..cur).all(|j| ups_better[j] < s.rise),
                    "run {}: a better candidate answered {:?} runs in a row (rise {}) but traffic stays on {}",
                    t,
                    ups_better,
                    s.rise,
                    cur
                );
            }
        }

        let text = render::include(&config, &early);
        let record = applied
            .as_ref()
            .map(|a| InEffect::Bytes(a.clone().into_bytes()));
        let need = apply::need(
            text.as_bytes(),
            applied.as_deref().map(str::as_bytes),
            record.as_ref(),
        );
        prop_assert_eq!(
            need == Need::Apply,
            applied.as_deref() != Some(text.as_str()),
            "run {}: reload decision does not follow the rendered text",
            t
        );
        if need == Need::Apply && !run.apply_fails {
            applied = Some(text);
        }
        // run/mod.rs: a failed save leaves the previous state file, so the next run counts
        // from the history before this run.
        if !run.save_fails {
            state = new_state;
        }
        saved = !run.save_fails;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn decisions_stay_right_over_any_history(s in scenario()) {
        check(&s)?;
    }
}
