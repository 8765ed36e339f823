//! Picking a candidate per variable and family from check results and history.
//! Pure: no I/O, and the time comes in as a parameter.

use crate::config::{Config, Family, PerFamily, Variable};
use crate::model::{
    self, CandidateState, Choice, Counted, DownReason, FamilyState, Health, LastCheck, Results,
    State, VariableState,
};
use crate::policy::{self, Pick, Seen};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

/// Everything a decision depends on besides this run's results: per variable and family the
/// counters carried over and the candidate in effect. Built once per run, used both to tell
/// when the checks may stop and to decide, so the two cannot disagree.
pub struct Inputs<'a> {
    families: Vec<PerFamily<FamilyInputs<'a>>>,
    fingerprints: Vec<String>,
    /// Per variable and family, how far `decided` has seen the results in: see [`Progress`].
    progress: RefCell<Vec<PerFamily<Progress>>>,
    /// The drained candidates of the previous state that this config still has.
    drained: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// How far the results of one family are in, kept between calls of `decided` (results only
/// ever arrive, so it only moves forward): the candidates below `failed` all answered and
/// failed.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    failed: usize,
}

struct FamilyInputs<'a> {
    /// History per candidate, index-aligned with the address list (borrowed: this is on the
    /// path of every timer run).
    prev: Vec<Option<&'a CandidateState>>,
    /// The candidate in effect now, if the include in effect renders one of them.
    current: Option<usize>,
    /// The define's value in the include in effect.
    effective: Option<String>,
    /// Per candidate: drained (never chosen), index-aligned with the address list.
    drained: Vec<bool>,
}

impl<'a> Inputs<'a> {
    /// `previous` is the state of the last run, `in_effect` the defines of the include in
    /// effect (see `render::parse_defines`).
    pub fn new<V: AsRef<str>>(
        config: &Config,
        previous: &'a State,
        in_effect: &HashMap<&str, V>,
    ) -> Inputs<'a> {
        let mut families = Vec::with_capacity(config.variables.len());
        let mut fingerprints = Vec::with_capacity(config.variables.len());
        let mut drained = BTreeMap::new();
        // One buffer for every define's name: a lookup key, not worth an allocation each.
        let mut define = String::new();
        for var in &config.variables {
            let fingerprint = var.fingerprint();
            // Counters describe address:port; a new port makes them meaningless. A state file
            // of an earlier release names every check and path in the fingerprint instead of
            // per candidate; it stays valid while those are unchanged.
            let stored = previous.variables.get(&var.name);
            let legacy = stored.is_some_and(|v| {
                v.fingerprint != fingerprint && v.fingerprint == var.legacy_fingerprint()
            });
            let history = stored.filter(|v| v.fingerprint == fingerprint || legacy);
            let kept: BTreeSet<IpAddr> = previous
                .drained
                .get(&var.name)
                .into_iter()
                .flatten()
                .filter(|a| var.ip4.contains(a) || var.ip6.contains(a))
                .copied()
                .collect();
            families.push(PerFamily::from_fn(|family| {
                define.clear();
                let _ = write!(define, "{}", var.define_name(family));
                let mut inputs = family_inputs(
                    var,
                    family,
                    history.map(|h| h.family(family)),
                    legacy,
                    in_effect.get(define.as_str()).map(AsRef::as_ref),
                );
                inputs.drained = var.addrs(family).iter().map(|a| kept.contains(a)).collect();
                inputs
            }));
            if !kept.is_empty() {
                drained.insert(var.name.clone(), kept);
            }
            fingerprints.push(fingerprint);
        }
        let progress = RefCell::new(vec![PerFamily::<Progress>::default(); families.len()]);
        Inputs {
            families,
            fingerprints,
            progress,
            drained,
        }
    }

    /// Whether this variable and family's pick is final given the results so far: no result
    /// still pending could change it. Candidates whose answer cannot matter are not waited for
    /// (a standby ranked below the pick, or one that is down and whose one success could not
    /// make it eligible); their answers are counted when they come in (`count_late`).
    pub fn decided(
        &self,
        config: &Config,
        variable: usize,
        family: Family,
        outcomes: &[Option<Health>],
        now: u64,
    ) -> bool {
        let fam = &self.families[variable][family];
        if fam.prev.is_empty() {
            return true;
        }
        let mut progress = self.progress.borrow_mut();
        let p = &mut progress[variable][family];
        // Outcomes only fill in during a run; if a caller starts over, so does the progress.
        if p.failed > outcomes.len() || (p.failed > 0 && outcomes[p.failed - 1].is_none()) {
            *p = Progress::default();
        }
        while matches!(outcomes.get(p.failed), Some(Some(h)) if !h.is_up()) {
            p.failed += 1;
        }
        let policy = &config.variables[variable].policy;
        let seen = |i: usize| fam.chosen_one(outcomes, i, now);
        // A pick is only returned when no pending result can change it (three-valued logic in
        // `policy`): a candidate still out that is down and needs more than one success, or is
        // drained, cannot. Its answer, when it comes, is counted after the apply like any
        // standby's (`count_late`), so no counter is lost by not waiting for it.
        policy::choose_from(fam.prev.len(), seen, p.failed, fam.current, policy, now).is_some()
    }
}

fn family_inputs<'a>(
    var: &Variable,
    family: Family,
    prev: Option<&'a FamilyState>,
    legacy: bool,
    effective: Option<&str>,
) -> FamilyInputs<'a> {
    let addrs = var.addrs(family);
    // History follows the address and the way it is probed (its check and path), not the
    // position: adding, removing or reordering candidates keeps what is known about the others.
    let old = prev.map_or(&[][..], |p| &p.candidates[..]);
    let key = |c: &'a CandidateState, probe: Option<String>| {
        (c.address, if legacy { None } else { probe })
    };
    let keys: Vec<(IpAddr, Option<String>)> = (0..addrs.len())
        .map(|i| (addrs[i], if legacy { None } else { var.probe_key(i) }))
        .collect();
    // Usually the list did not change: match by position first, by key otherwise.
    let history: Vec<_> = if old
        .iter()
        .map(|c| key(c, c.probe.clone()))
        .eq(keys.iter().cloned())
    {
        old.iter().map(Some).collect()
    } else {
        let mut by_key: HashMap<(IpAddr, Option<String>), &CandidateState> = HashMap::new();
        for c in old {
            by_key.entry(key(c, c.probe.clone())).or_insert(c);
        }
        keys.iter().map(|k| by_key.get(k).copied()).collect()
    };
    // The include in effect is the truth about what is live; the last selection only tells
    // apart candidates that render the same value.
    let renders = |i: usize| var.rendered(family, i);
    let current = effective.and_then(|text| {
        let last = prev
            .and_then(|p| p.selected)
            .and_then(|i| prev?.candidates.get(i))
            .and_then(|c| addrs.iter().position(|a| *a == c.address));
        last.filter(|&i| renders(i) == text)
            .or_else(|| (0..addrs.len()).find(|&i| renders(i) == text))
    });
    FamilyInputs {
        prev: history,
        current,
        effective: effective.map(str::to_string),
        drained: Vec::new(),
    }
}

impl FamilyInputs<'_> {
    fn seen_one(&self, outcomes: &[Option<Health>], i: usize, now: u64) -> Seen {
        let prev = self.prev[i].and_then(|c| c.counted);
        let result = outcomes.get(i).and_then(|o| o.as_ref());
        Seen {
            prev: match result {
                Some(h) if h.is_kernel_down() => Some(kernel_down(prev, now)),
                _ => prev,
            },
            ok: result.map(Health::is_up),
        }
    }

    /// A candidate as the choice sees it: a drained one has failed, whatever its check said
    /// (its counters still follow its real checks, see `seen_one`).
    fn chosen_one(&self, outcomes: &[Option<Health>], i: usize, now: u64) -> Seen {
        if self.drained.get(i).copied().unwrap_or(false) {
            return Seen {
                prev: Some(Counted {
                    up: false,
                    streak: 0,
                    since_ms: now,
                }),
                ok: Some(false),
            };
        }
        self.seen_one(outcomes, i, now)
    }

    fn seen(&self, outcomes: &[Option<Health>], now: u64) -> Vec<Seen> {
        (0..self.prev.len())
            .map(|i| self.seen_one(outcomes, i, now))
            .collect()
    }
}

/// The counters of a candidate the kernel rules out (see `links`): down from now on, whatever
/// `fall` says, since no check through that path can succeed; down since before if it was.
fn kernel_down(prev: Option<Counted>, now: u64) -> Counted {
    match prev {
        Some(c) if !c.up => Counted { streak: 0, ..c },
        _ => Counted {
            up: false,
            streak: 0,
            since_ms: now,
        },
    }
}

/// Counts this run's results into the carried-over state and picks per variable and family.
/// Returns the choices in render order and the new state (without the apply record, which
/// the caller keeps).
pub fn decide(
    config: &Config,
    results: &Results,
    inputs: &Inputs,
    now: u64,
) -> (Vec<Choice>, State) {
    let mut choices = Vec::with_capacity(config.variables.len() * 2);
    let mut state = State {
        version: model::VERSION,
        drained: inputs.drained.clone(),
        ..State::default()
    };
    for (vi, var) in config.variables.iter().enumerate() {
        let mut var_state = VariableState {
            fingerprint: inputs.fingerprints[vi].clone(),
            ..VariableState::default()
        };
        for family in Family::ALL {
            let fam = &inputs.families[vi][family];
            let (choice, fam_state) = decide_family(var, family, &results[vi][family], fam, now);
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

/// Every candidate's counters and last result after this run's checks.
fn counted(
    var: &Variable,
    family: Family,
    outcomes: &[Option<Health>],
    fam: &FamilyInputs,
    pick: &Pick,
    now: u64,
) -> Vec<CandidateState> {
    let seen = fam.seen(outcomes, now);
    let policy = &var.policy;
    // No history means no credit: a candidate without counters (new, undrained, or its state
    // lost) starts as down and earns `rise` successes, its preempt delay starting at the last
    // of them, unless it has traffic: the candidate in effect, or the one this run fails over
    // to, is decided by its first check (a lost state never moves traffic, a failover is
    // never delayed).
    let has_traffic = |i: usize| fam.current == Some(i) || *pick == Pick::Candidate(i);
    var.addrs(family)
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let old = fam.prev[i];
            let result = outcomes.get(i).and_then(Option::as_ref);
            CandidateState {
                address: *addr,
                probe: var.probe_key(i),
                counted: policy::observe(
                    seen[i]
                        .prev
                        .or_else(|| (!has_traffic(i)).then(|| policy::no_credit(now))),
                    seen[i].ok,
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
        .collect()
}

fn decide_family(
    var: &Variable,
    family: Family,
    outcomes: &[Option<Health>],
    fam: &FamilyInputs,
    now: u64,
) -> (Choice, FamilyState) {
    let addrs = var.addrs(family);
    let policy = &var.policy;
    let mut choice = Choice {
        variable: 0,
        family,
        index: None,
        reason: None,
        rendered: family.unspecified().to_string(),
        effective: fam.effective.clone(),
        effective_index: fam.current,
        drained: (0..fam.drained.len()).filter(|&i| fam.drained[i]).collect(),
        preferred_gone: match outcomes.first() {
            Some(Some(Health::Down(DownReason::Kernel(why)))) => Some(why.clone()),
            _ => None,
        },
    };
    if addrs.is_empty() {
        return (choice, FamilyState::default());
    }
    // Drained candidates are never chosen; their counters above follow their real checks.
    let chosen: Vec<Seen> = (0..addrs.len())
        .map(|i| fam.chosen_one(outcomes, i, now))
        .collect();
    let (pick, reason) = policy::choose(&chosen, fam.current, policy, now).unwrap_or_else(|| {
        // Only without fresh checks (`status`): predict the next run from each candidate's
        // last result. A run that checks always decides (see `Inputs::decided`).
        let predicted: Vec<Seen> = chosen
            .iter()
            .zip(&fam.prev)
            .map(|(s, c)| Seen {
                ok: s
                    .ok
                    .or_else(|| Some(c.as_ref()?.last.as_ref()?.up))
                    .or(Some(false)),
                ..*s
            })
            .collect();
        policy::choose(&predicted, fam.current, policy, now)
            .expect("with every result in hand the policy always decides")
    });
    let candidates = counted(var, family, outcomes, fam, &pick, now);
    let renders = |i: usize| var.rendered(family, i);
    let fallback = var.fallback(family);
    // `selected` in the state: the candidate in effect after this run, for the next run.
    let (index, rendered, selected) = match pick {
        Pick::Candidate(i) => (Some(i), renders(i), Some(i)),
        // Keep only what this config can render: a candidate's value or the fallback. Anything
        // else on disk (an edited config, a foreign include) is not carried forward.
        Pick::Keep => match (fam.current, &fam.effective) {
            (Some(c), _) => (None, renders(c), Some(c)),
            (None, Some(e)) if fallback.as_deref() == Some(e.as_str()) => (None, e.clone(), None),
            _ => (None, renders(0), Some(0)),
        },
        Pick::Fallback => (
            None,
            fallback.expect("config validation guarantees a fallback for all_down: fallback"),
            None,
        ),
    };
    choice.index = index;
    choice.reason = Some(reason);
    choice.rendered = rendered.clone();
    let fam_state = FamilyState {
        candidates,
        selected,
        rendered: Some(rendered),
        all_down: choice.all_down(),
    };
    (choice, fam_state)
}

/// Counts results that came in after the choices were made (`late`, a superset of `early`)
/// into `state`, as `decide` would have counted them in time: counters and last result of the
/// candidates that had not answered. The choices and what is rendered stay as they are.
pub fn count_late(config: &Config, state: &mut State, early: &Results, late: &Results, now: u64) {
    for (vi, var) in config.variables.iter().enumerate() {
        let Some(vs) = state.variables.get_mut(&var.name) else {
            continue;
        };
        for family in Family::ALL {
            let fam = vs.family_mut(family);
            let (early, late) = (&early[vi][family], &late[vi][family]);
            let selected = fam.selected;
            for (i, c) in fam.candidates.iter_mut().enumerate() {
                if let (Some(None), Some(Some(h))) = (early.get(i), late.get(i)) {
                    let p = &var.policy;
                    // No history, no credit (see `decide_family`).
                    let counted = c
                        .counted
                        .or_else(|| (selected != Some(i)).then(|| policy::no_credit(now)));
                    let prev = match h.is_kernel_down() {
                        true => Some(kernel_down(counted, now)),
                        false => counted,
                    };
                    c.counted = policy::observe(prev, Some(h.is_up()), p.rise, p.fall, now);
                    c.last = Some(last_check(h, now));
                }
            }
        }
    }
}

/// Moves every time stored in `state` by `jump_ms` (see `clock::jump_ms`): after the wall clock
/// jumped, the durations since then stay what CLOCK_BOOTTIME measured.
pub fn shift_times(state: &mut State, jump_ms: i64) {
    let ms = |t: &mut u64| *t = t.saturating_add_signed(jump_ms);
    let secs = |t: &mut u64| *t = t.saturating_add_signed(jump_ms / 1000);
    for v in state.variables.values_mut() {
        for c in v.v4.candidates.iter_mut().chain(v.v6.candidates.iter_mut()) {
            if let Some(k) = c.counted.as_mut() {
                ms(&mut k.since_ms);
            }
            if let Some(l) = c.last.as_mut() {
                secs(&mut l.at);
            }
        }
    }
    if let Some(a) = state.last_apply.as_mut() {
        secs(&mut a.at);
    }
    let p = &mut state.publish;
    if let Some(t) = p.last_ok_apply_at.as_mut() {
        secs(t);
    }
    for s in p.since.values_mut() {
        secs(&mut s.at);
    }
    if let Some(m) = p.mqtt.as_mut() {
        secs(&mut m.at);
    }
}

/// The variables whose rendered value differs from the one in effect, in config order.
pub fn changed_variables(choices: &[Choice]) -> Vec<usize> {
    let mut out: Vec<usize> = choices
        .iter()
        .filter(|c| c.effective.as_deref() != Some(c.rendered.as_str()))
        .map(|c| c.variable)
        .collect();
    out.dedup();
    out
}

/// Whether a variable's change can be held back: every family of it has a value in effect to
/// keep. A variable rendered for the first time cannot wait; it goes with every attempt.
pub fn can_hold_back(choices: &[Choice], variable: usize) -> bool {
    choices
        .iter()
        .filter(|c| c.variable == variable)
        .all(|c| c.effective.is_some())
}

/// `choices` with the variables in `held` kept at the values in effect.
pub fn hold_back(choices: &[Choice], held: &[usize]) -> Vec<Choice> {
    choices
        .iter()
        .map(|c| match (&c.effective, held.contains(&c.variable)) {
            (Some(e), true) => Choice {
                index: c.effective_index,
                rendered: e.clone(),
                ..c.clone()
            },
            _ => c.clone(),
        })
        .collect()
}

/// After an apply of every change failed: finds the changes that can go through without the
/// ones the firewall refuses, by halving. `attempt(accepted)` applies the changes of the listed
/// variables (the rest held back) and says whether that worked; each success is in effect from
/// then on. `changed` are the variables that can be held back. Returns the refused variables
/// with their errors; everything else is accepted. With `b` refused among `n`, it makes at most
/// about `2·b·log2(n)` attempts, and none when `changed` has fewer than two variables.
pub fn settle<E>(
    changed: &[usize],
    mut attempt: impl FnMut(&[usize]) -> Result<(), E>,
) -> Vec<(usize, E)> {
    fn go<E>(
        group: &[usize],
        accepted: &mut Vec<usize>,
        refused: &mut Vec<(usize, E)>,
        attempt: &mut impl FnMut(&[usize]) -> Result<(), E>,
    ) {
        let mut trial = accepted.clone();
        trial.extend_from_slice(group);
        let error = match attempt(&trial) {
            Ok(()) => {
                *accepted = trial;
                return;
            }
            Err(e) => e,
        };
        if let [one] = group {
            refused.push((*one, error));
            return;
        }
        let (a, b) = group.split_at(group.len() / 2);
        go(a, accepted, refused, attempt);
        go(b, accepted, refused, attempt);
    }
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    if changed.len() >= 2 {
        let (a, b) = changed.split_at(changed.len() / 2);
        go(a, &mut accepted, &mut refused, &mut attempt);
        go(b, &mut accepted, &mut refused, &mut attempt);
    }
    refused
}

/// The last result, stamped in whole seconds (`now` is in milliseconds).
fn last_check(health: &Health, now: u64) -> LastCheck {
    let at = now / 1000;
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
    use crate::model::{DownReason, Outcomes};
    use std::path::Path;
    use std::time::Duration;

    fn up() -> Option<Health> {
        Some(Health::Up {
            latency: Duration::from_millis(1),
        })
    }
    fn down() -> Option<Health> {
        Some(Health::Down(DownReason::Refused))
    }

    fn decide_all(config: &Config, results: &Results) -> Vec<(String, bool)> {
        let empty = State::default();
        let inputs = Inputs::new(config, &empty, &HashMap::<&str, &str>::new());
        decide(config, results, &inputs, 0)
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
            PerFamily::new(vec![down(), up()], vec![down(), down()]),
            PerFamily::new(vec![down(), up()], vec![]),
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
        let inputs = Inputs::new(config, state, &defines);
        let (choices, state) = decide(config, &vec![PerFamily::new(v4, vec![])], &inputs, now);
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
        let results = vec![
            PerFamily::new(vec![down()], vec![down()]),
            PerFamily::new(vec![down()], vec![]),
        ];
        let empty = State::default();
        let inputs = Inputs::new(&config, &empty, &HashMap::<&str, &str>::new());
        let (choices, _) = decide(&config, &results, &inputs, 0);
        let rendered: Vec<_> = choices.iter().map(|c| c.rendered.as_str()).collect();
        assert_eq!(rendered, ["192.0.2.1", "100::1", "666", "::"]);
    }

    #[test]
    fn history_follows_the_address_and_a_new_port_resets_it() {
        let config = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "fall": 3}}}"#,
        );
        let (text, state) = step(&config, &State::default(), "", vec![up(), up()], 0);
        // fall 3: one failure keeps the first candidate
        let (text, state) = step(&config, &state, &text, vec![down(), up()], 1);
        assert!(text.contains("a_v4 = 10.0.0.1"), "{text}");
        // a candidate added in front: 10.0.0.1 keeps its counters (up, 1 of 3 failures)
        let added = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.9", "10.0.0.1", "10.0.0.2"], "port": 1, "fall": 3}}}"#,
        );
        let (text2, state2) = step(&added, &state, &text, vec![down(), down(), up()], 2);
        assert!(text2.contains("a_v4 = 10.0.0.1"), "{text2}");
        let c = &state2.variables["a"].v4.candidates[1];
        assert_eq!(c.counted.map(|k| (k.up, k.streak)), Some((true, 2)));
        // another port: the old counters describe another service, so the failure decides
        let moved = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 2, "fall": 3}}}"#,
        );
        let (text, _) = step(&moved, &state, &text, vec![down(), up()], 2);
        assert!(text.contains("a_v4 = 10.0.0.2"), "{text}");
    }

    #[test]
    fn the_kernels_word_takes_a_candidate_down_at_once_and_rise_brings_it_back() {
        let config = parse(
            r#"{"failover": {"a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "fall": 3, "rise": 2}}}"#,
        );
        let gone = || {
            Some(Health::Down(DownReason::Kernel(
                "carrier lost on isp1".into(),
            )))
        };
        let (text, state) = step(&config, &State::default(), "", vec![up(), up()], 0);
        // fall 3, yet the first run without carrier switches
        let (text, state) = step(&config, &state, &text, vec![gone(), up()], 1);
        assert!(text.contains("a_v4 = 10.0.0.2"), "{text}");
        let c = &state.variables["a"].v4.candidates[0];
        assert_eq!(c.counted.map(|k| (k.up, k.since_ms)), Some((false, 1)));
        assert_eq!(
            c.last.as_ref().unwrap().error.as_deref(),
            Some("carrier lost on isp1")
        );
        // still gone: down since the first run, not since each one
        let (text, state) = step(&config, &state, &text, vec![gone(), up()], 2);
        let c = &state.variables["a"].v4.candidates[0];
        assert_eq!(c.counted.map(|k| (k.up, k.since_ms)), Some((false, 1)));
        // carrier back: rise 2 decides, as for any candidate coming back
        let (text, state) = step(&config, &state, &text, vec![up(), up()], 3);
        assert!(text.contains("a_v4 = 10.0.0.2"), "{text}");
        let (text, _) = step(&config, &state, &text, vec![up(), up()], 4);
        assert!(text.contains("a_v4 = 10.0.0.1"), "{text}");
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

    #[test]
    fn with_paths_history_follows_address_and_path_and_old_state_files_keep_it() {
        let json = |addrs: &str, paths: &str| {
            format!(
                r#"{{"failover": {{"up": {{"ip4": [{addrs}], "check": {{"targets": ["192.0.2.53:53"]}},
                    "paths": [{paths}], "fall": 3}}}}}}"#
            )
        };
        let a = r#"{"mark": 1}"#;
        let b = r#"{"mark": 2}"#;
        let config = parse(&json(r#""10.0.0.1", "10.0.0.2""#, &format!("{a}, {b}")));
        let (text, state) = step(&config, &State::default(), "", vec![up(), up()], 0);
        let (text, state) = step(&config, &state, &text, vec![down(), up()], 1);
        assert!(text.contains("up_v4 = 10.0.0.1"), "{text}");
        // Reordered: each candidate keeps its counters (10.0.0.1: up, 1 of 3 failures).
        let reordered = parse(&json(r#""10.0.0.2", "10.0.0.1""#, &format!("{b}, {a}")));
        let (_, after) = step(&reordered, &state, &text, vec![up(), down()], 2);
        let c = &after.variables["up"].v4.candidates[1];
        assert_eq!(c.counted.map(|k| (k.up, k.streak)), Some((true, 2)));
        // The same address through another path is another candidate: no history.
        let repathed = parse(&json(r#""10.0.0.1", "10.0.0.2""#, &format!("{b}, {a}")));
        let (_, after) = step(&repathed, &state, &text, vec![down(), up()], 2);
        let c = &after.variables["up"].v4.candidates[0];
        assert_eq!(c.counted.map(|k| (k.up, k.streak)), Some((false, 0)));
        // A state file of the previous release: the fingerprint names the checks and paths.
        let mut old = state.clone();
        let v = old.variables.get_mut("up").unwrap();
        v.fingerprint = config.variables[0].legacy_fingerprint();
        for c in &mut v.v4.candidates {
            c.probe = None;
        }
        let (_, after) = step(&config, &old, &text, vec![down(), up()], 2);
        let c = &after.variables["up"].v4.candidates[0];
        assert_eq!(c.counted.map(|k| (k.up, k.streak)), Some((true, 2)));
    }
}
