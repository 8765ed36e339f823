//! The apply stage of a run: nothing to apply (keep live objects in step), or the change, with
//! the fallback of applying variables apart and the conntrack clean-up after a switch.

use super::report::log_changes;
use super::{Decided, Prepared};
use crate::apply;
use crate::command::Runner;
use crate::config::Config;
use crate::conntrack;
use crate::log;
use crate::model::{ApplyOutcome, Choice, State};
use crate::options::Options;
use crate::{clock, render};
use std::time::Instant;

use crate::cli::{EXIT_FAILED, EXIT_OK};

/// How the apply stage ended: the run's exit code so far, the state to save, and what reached
/// the kernel (for publication's counters).
pub struct Applied {
    pub code: u8,
    pub state: State,
    /// `Some(ok)` if there was a change to apply (or to try), `None` if unchanged.
    pub applied: Option<bool>,
    /// The change went through as a live update, without a reload.
    pub live: bool,
}

/// Applies the decided change, or keeps what is in effect in step when nothing changed.
pub fn apply_stage(opts: &Options, p: &Prepared, d: &mut Decided, started: Instant) -> Applied {
    // The evaluation's state moves on to be saved; nothing reads it from `d` after this.
    let mut state = std::mem::take(&mut d.eval.state);
    state.last_apply = p.previous.last_apply.clone();
    state.clock = Some(p.clocks.clone());
    // Variables in live mode (docs/live-mode.md); empty unless the config opts in.
    let live = render::live::objects(&p.config, &d.eval.choices);
    if d.need == apply::Need::Apply && p.drains_unknown.is_some() {
        // Said in prepare; the include in effect stays, whatever the checks found.
        return Applied {
            code: EXIT_FAILED,
            state,
            applied: None,
            live: false,
        };
    }
    if d.need != apply::Need::Apply {
        let code = keep(opts, p, d, &live);
        return Applied {
            code,
            state,
            applied: None,
            live: false,
        };
    }
    change(opts, p, d, &live, state, started)
}

/// Nothing to apply: records the include on disk as in effect if there was no record, and
/// keeps live objects in step (restores them if flushed by hand).
fn keep(opts: &Options, p: &Prepared, d: &Decided, live: &[render::live::Object]) -> u8 {
    log::info(&format!("{}: unchanged", opts.output.display()));
    if d.need == apply::Need::Record {
        // The include on disk is taken as in effect; from now on it is the rollback target.
        let what = apply::InEffect::Bytes(d.eval.text.clone().into_bytes());
        if let Err(e) = apply::write_record(&opts.output, &what) {
            log::warn(&format!("{e:#}"));
        }
    }
    match apply::keep_live(opts, &p.runner, &d.eval.text, live) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            log::error(&format!("{e:#}"));
            EXIT_FAILED
        }
    }
}

/// Applies the changed include; on failure, applies what the firewall takes of it apart.
fn change(
    opts: &Options,
    p: &Prepared,
    d: &mut Decided,
    live: &[render::live::Object],
    mut state: State,
    started: Instant,
) -> Applied {
    if p.on_disk.as_deref() == Some(d.eval.text.as_bytes()) {
        log::info(&format!(
            "{}: on disk but not applied successfully yet; applying",
            opts.output.display()
        ));
    }
    log_changes(&p.config, &d.eval.results, &d.eval.choices);
    let result = apply::apply_change(
        opts,
        &p.runner,
        &d.eval.text,
        p.on_disk.as_deref(),
        p.record.clone(),
        live,
    );
    state.last_apply = Some(ApplyOutcome {
        at: clock::unix_now(),
        ok: result.is_ok(),
        error: result.as_ref().err().map(|e| format!("{e:#}")),
    });
    let (code, applied, live) = match result {
        Ok(how) => {
            let live = matches!(how, apply::Applied::Live);
            log::info(&format!(
                "{}: {} ({:.0} ms)",
                opts.output.display(),
                match how {
                    apply::Applied::Reloaded(r) => r.describe(),
                    apply::Applied::Live => format!(
                        "applied and table inet {} updated live",
                        render::live::TABLE
                    ),
                },
                started.elapsed().as_secs_f64() * 1e3
            ));
            clean_up_conntrack(&p.runner, &p.config, &d.eval.choices, &state);
            (EXIT_OK, true, live)
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            let partly = apply_apart(opts, &p.runner, &p.config, &mut d.eval.choices, &mut state);
            if partly {
                clean_up_conntrack(&p.runner, &p.config, &d.eval.choices, &state);
            }
            (EXIT_FAILED, partly, false)
        }
    };
    Applied {
        code,
        state,
        applied: Some(applied),
        live,
    }
}

/// After an apply of every change failed: applies the changes the firewall takes, holding the
/// refused variables at their values in effect (in `choices` and `state` too, so publication
/// and the next run see what is live). Returns whether any change went through.
fn apply_apart(
    opts: &Options,
    runner: &Runner,
    config: &Config,
    choices: &mut Vec<Choice>,
    state: &mut State,
) -> bool {
    let apart = apply::settle::apply_apart(opts, runner, config, choices);
    let refused = apart.refused;
    let held: Vec<usize> = refused.iter().map(|(v, _)| *v).collect();
    for (v, e) in &refused {
        let name = &config.variables[*v].name;
        log::error(&format!(
            "{name}: its change was not applied, it keeps the value in effect: {e:#}"
        ));
    }
    *choices = crate::select::hold_back(choices, &held);
    for c in choices.iter().filter(|c| held.contains(&c.variable)) {
        if let Some(v) = state.variables.get_mut(&config.variables[c.variable].name) {
            let fam = v.family_mut(c.family);
            fam.selected = c.effective_index;
            fam.rendered = Some(c.rendered.clone());
        }
    }
    let went = apart.tried - refused.len();
    if went > 0 {
        log::info(&format!(
            "{}: applied the changes of {went} of {} variables",
            opts.output.display(),
            apart.tried
        ));
    }
    went > 0
}

/// After a reload: deletes the tracked connections of each define's old choice, where the
/// variable asks for it. A failure is logged and leaves the switch in place.
fn clean_up_conntrack(runner: &Runner, config: &Config, choices: &[Choice], state: &State) {
    for c in choices {
        let var = &config.variables[c.variable];
        let old_up = c.effective_index.is_some_and(|i| {
            state
                .variables
                .get(&var.name)
                .and_then(|v| v.family(c.family).candidates.get(i))
                .and_then(|s| s.counted.as_ref())
                .is_some_and(|k| k.up)
        });
        let Some(filter) = conntrack::filter(var, c, false) else {
            continue;
        };
        let define = var.define(c.family);
        if old_up {
            log::info(&format!(
                "{define}: conntrack clean-up skipped: the old choice is up, its connections work"
            ));
            continue;
        }
        match conntrack::delete(runner, &filter, c.family) {
            Ok(n) => log::info(&format!(
                "{define}: conntrack clean-up deleted {n} entries ({filter})"
            )),
            Err(e) => log::warn(&format!("{define}: conntrack clean-up: {e}")),
        }
    }
}
