//! Property tests of "one variable's problem never freezes the others": after an apply of every
//! change failed, `select::settle` applies the changes apart. Each case is a random number of
//! changed variables, a random subset of which the firewall refuses (an attempt fails if it
//! holds any of them). Checked for every case:
//! - exactly the refused variables are held back, every other change is applied;
//! - what is applied only grows: an attempt always keeps every change already applied;
//! - the attempts stay few: at most 2·b·(log2(n)+1) for b refused among n;
//! - with fewer than two variables there is nothing to try apart.
//!
//! Together with `hold_back`: the include of the final attempt renders the refused variables at
//! their values in effect and the others at their new values.
//!
//! Cases: `PROPTEST_CASES` (default 3000).

use nftables_failover::config::Family;
use nftables_failover::model::{Choice, Reason};
use nftables_failover::select::{changed_variables, hold_back, settle};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn choice(variable: usize, family: Family, new: &str, old: Option<&str>) -> Choice {
    Choice {
        variable,
        family,
        index: Some(1),
        reason: Some(Reason::FailedOver),
        rendered: new.to_string(),
        effective: old.map(str::to_string),
        effective_index: old.map(|_| 0),
        drained: Vec::new(),
        preferred_gone: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
    ))]

    #[test]
    fn refused_changes_hold_back_no_other(
        n in 0usize..40,
        refused_bits in proptest::collection::vec(any::<bool>(), 40),
    ) {
        let changed: Vec<usize> = (0..n).collect();
        let bad: BTreeSet<usize> = changed.iter().copied().filter(|&v| refused_bits[v]).collect();
        let mut applied: BTreeSet<usize> = BTreeSet::new();
        let mut attempts = 0usize;
        let mut shrank = None;
        let refused = settle(&changed, |trial| {
            attempts += 1;
            let trial: BTreeSet<usize> = trial.iter().copied().collect();
            // Monotonic: a trial never drops a change that is already applied.
            if !applied.is_subset(&trial) {
                shrank = Some((applied.clone(), trial.clone()));
            }
            if trial.is_disjoint(&bad) {
                applied = trial;
                Ok(())
            } else {
                Err("refused")
            }
        });
        prop_assert_eq!(shrank, None);
        let refused: BTreeSet<usize> = refused.into_iter().map(|(v, _)| v).collect();
        if n < 2 {
            prop_assert_eq!(attempts, 0);
            prop_assert!(refused.is_empty());
        } else {
            prop_assert_eq!(&refused, &bad);
            let good: BTreeSet<usize> = changed.iter().copied().filter(|v| !bad.contains(v)).collect();
            prop_assert_eq!(&applied, &good);
            let log2 = (usize::BITS - (n - 1).leading_zeros()) as usize;
            let bound = 2 + 2 * bad.len() * (log2 + 1);
            prop_assert!(attempts <= bound, "{attempts} attempts for {} refused of {n}", bad.len());
        }
    }

    #[test]
    fn held_back_variables_render_the_values_in_effect(
        n in 1usize..12,
        held_bits in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let choices: Vec<Choice> = (0..n)
            .flat_map(|v| {
                [
                    choice(v, Family::V4, &format!("192.0.2.{}", v + 100), Some(&format!("192.0.2.{v}"))),
                    choice(v, Family::V6, "::", Some("::")),
                ]
            })
            .collect();
        prop_assert_eq!(changed_variables(&choices), (0..n).collect::<Vec<_>>());
        let held: Vec<usize> = (0..n).filter(|&v| held_bits[v]).collect();
        let out = hold_back(&choices, &held);
        for (before, after) in choices.iter().zip(&out) {
            if held.contains(&before.variable) {
                prop_assert_eq!(Some(&after.rendered), before.effective.as_ref());
                prop_assert_eq!(after.index, before.effective_index);
            } else {
                prop_assert_eq!(after, before);
            }
        }
        let still: Vec<usize> = (0..n).filter(|v| !held.contains(v)).collect();
        prop_assert_eq!(changed_variables(&out), still);
    }
}
