//! One run: load, check, count, select, render, and apply only if the include changed.

use crate::apply::{self, Plan};
use crate::cli::Cli;
use crate::command::{self, Runner};
use crate::config::Config;
use crate::conntrack;
use crate::describe::{candidate, reason_text};
use crate::evaluate::{Evaluation, Probe, evaluate};
use crate::model::{ApplyOutcome, Choice, Results, State};
use crate::state;
use crate::{clock, files, log, publish, signals};
use std::time::{Duration, Instant};

pub use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// How long a run waits for another run holding the lock before giving way to it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A full run. SIGTERM and SIGINT are caught for its duration: a running command is stopped, an
/// apply in progress rolls back, and the run exits 1 even if it got to the end.
pub fn run(cli: &Cli) -> u8 {
    signals::install();
    let code = once(cli);
    match signals::received() {
        Some(signal) if code != EXIT_USAGE => {
            log::error(&format!(
                "stopped by {}: {}",
                signals::name(signal),
                if code == EXIT_OK {
                    "it came when the work was done; nothing was left half-way"
                } else {
                    "the change was not applied; the error above says whether the previous include was restored"
                }
            ));
            EXIT_FAILED
        }
        _ => code,
    }
}

/// One run without its own signal handling (the caller installs it and reports a stop): the
/// timer's run above, and each run of `watch`.
pub fn once(cli: &Cli) -> u8 {
    let started = Instant::now();
    let config = match files::load_config(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            log::error(&format!(
                "{e}\nnothing was changed; fix the config and run again"
            ));
            return EXIT_USAGE;
        }
    };
    let reload = match command::parse_command_line(&cli.reload_command) {
        Ok(argv) => argv,
        Err(e) => {
            log::error(&format!("--reload-command {:?}: {e}", cli.reload_command));
            return EXIT_USAGE;
        }
    };
    if let Some(problem) = refused(cli, &config) {
        log::error(&format!("{problem}\nnothing was changed"));
        return EXIT_USAGE;
    }
    // The whole run holds the lock, so concurrent runs neither interleave applies nor lose
    // each other's counter updates. A dry run writes nothing and needs none.
    let _lock = if cli.dry_run {
        None
    } else {
        match files::lock(&cli.output, LOCK_WAIT) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) if signals::received().is_some() => return EXIT_FAILED,
            Ok(None) => {
                log::warn(&format!(
                    "another run holds {} after {LOCK_WAIT:?}; leaving the work to it",
                    files::lock_path(&cli.output).display()
                ));
                return EXIT_OK;
            }
            Err(e) => {
                log::error(&format!("{e:#}"));
                return EXIT_FAILED;
            }
        }
    };
    if _lock.is_some() {
        files::remove_stale_temps(&cli.output);
    }
    // A state that cannot be saved goes stale; deciding from it would freeze the counters.
    let keep_state = cli.dry_run || state_writable(cli);
    let mut previous = if keep_state {
        state::load_or_empty(&cli.state)
    } else {
        State::default()
    };
    let clocks = clock::mark();
    let jump = clock::jump_ms(previous.clock.as_ref(), &clocks);
    if jump != 0 {
        log::info(&format!(
            "the wall clock moved by {:+.1} s since the last run; durations are measured on CLOCK_BOOTTIME",
            jump as f64 / 1e3
        ));
        crate::select::shift_times(&mut previous, jump);
    }
    let (on_disk, record) = match read_include(cli) {
        Ok(x) => x,
        Err(e) => {
            log::error(&format!("{e:#}; nothing was changed"));
            return EXIT_FAILED;
        }
    };
    let in_effect = apply::in_effect(on_disk.as_deref(), record.as_ref());
    let mut eval = match evaluate(
        &config,
        &previous,
        in_effect,
        Probe::UntilDecided,
        cli.timeout,
        clocks.wall_ms,
    ) {
        Ok(e) => e,
        Err(e) => {
            log::error(&format!("cannot run the checks: {e}"));
            return EXIT_FAILED;
        }
    };
    if signals::received().is_some() {
        // The checks were cut short: deciding from them could switch on a half-finished picture.
        log::info("stopped before anything was decided; nothing was changed");
        return EXIT_FAILED;
    }
    log_results(&config, &eval, &previous);
    log::debug(&format!(
        "checked and rendered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    let need = apply::need(eval.text.as_bytes(), on_disk.as_deref(), record.as_ref());
    if cli.dry_run {
        return dry_run(cli, &eval.text, need);
    }

    let mut new_state = eval.state;
    new_state.last_apply = previous.last_apply.clone();
    new_state.clock = Some(clocks);
    let plan = Plan {
        output: cli.output.clone(),
        addon_dir: cli.addon_dir.clone(),
        base_dir: cli.base_dir.clone(),
        main_config: cli.main_config.clone(),
        stage_dir: cli.stage_dir.clone(),
        nft: cli.nft.clone(),
        reload,
    };
    // Variables in live mode (README, "Live mode"); empty unless the config opts in.
    let live = crate::render::live::objects(&config, &eval.choices);
    let mut partly_applied = false;
    let mut live_update = false;
    let command_runner = Runner::for_current_user().with_timeout(cli.command_timeout);
    let code = match need {
        apply::Need::Nothing | apply::Need::Record => {
            log::info(&format!("{}: unchanged", cli.output.display()));
            if need == apply::Need::Record {
                // The include on disk is taken as in effect; from now on it is the rollback target.
                let what = apply::InEffect::Bytes(eval.text.clone().into_bytes());
                if let Err(e) = apply::write_record(&cli.output, &what) {
                    log::warn(&format!("{e:#}"));
                }
            }
            match apply::keep_live(&plan, &command_runner, &eval.text, &live) {
                Ok(()) => EXIT_OK,
                Err(e) => {
                    log::error(&format!("{e:#}"));
                    EXIT_FAILED
                }
            }
        }
        apply::Need::Apply => {
            if on_disk.as_deref() == Some(eval.text.as_bytes()) {
                log::info(&format!(
                    "{}: on disk but not applied successfully yet; applying",
                    cli.output.display()
                ));
            }
            log_changes(&config, &eval.results, &eval.choices);
            let result = apply::apply_change(
                &plan,
                &command_runner,
                &eval.text,
                on_disk.as_deref(),
                record,
                &live,
            );
            new_state.last_apply = Some(ApplyOutcome {
                at: clock::unix_now(),
                ok: result.is_ok(),
                error: result.as_ref().err().map(|e| format!("{e:#}")),
            });
            match result {
                Ok(how) => {
                    live_update = matches!(how, apply::Applied::Live);
                    log::info(&format!(
                        "{}: {} ({:.0} ms)",
                        plan.output.display(),
                        match how {
                            apply::Applied::Reloaded(r) => r.describe(),
                            apply::Applied::Live => format!(
                                "applied and table inet {} updated live",
                                crate::render::live::TABLE
                            ),
                        },
                        started.elapsed().as_secs_f64() * 1e3
                    ));
                    clean_up_conntrack(&command_runner, &config, &eval.choices, &new_state);
                    EXIT_OK
                }
                Err(e) => {
                    log::error(&format!("{e:#}"));
                    if apply_apart(
                        &plan,
                        &command_runner,
                        &config,
                        &mut eval.choices,
                        &mut new_state,
                    ) {
                        clean_up_conntrack(&command_runner, &config, &eval.choices, &new_state);
                        partly_applied = true;
                    }
                    EXIT_FAILED
                }
            }
        }
    };
    // The standbys' checks still in flight answer now: the apply never waited for them, and
    // their counters move every run, so a dead standby shows before it is needed.
    let results = match eval.pending.take() {
        Some(pending) => {
            let all = pending.finish(&config, &eval.results, &mut new_state, eval.now);
            log_late(&config, &eval.choices, &eval.results, &all);
            all
        }
        None => eval.results.clone(),
    };
    // Hook, metrics and MQTT come after the apply: they can neither delay nor undo it.
    let applied = (need == apply::Need::Apply).then_some(code == EXIT_OK || partly_applied);
    let done = publish::Run {
        choices: &eval.choices,
        results: &results,
        applied,
        live: live_update,
        started,
    };
    publish::after_run(&config, &previous, &mut new_state, &done);
    if keep_state {
        save_state(cli, &new_state);
    }
    code
}

/// After an apply of every change failed: applies the changes the firewall takes, holding the
/// refused variables at their values in effect (in `choices` and `state` too, so publication
/// and the next run see what is live). Returns whether any change went through.
fn apply_apart(
    plan: &Plan,
    runner: &Runner,
    config: &Config,
    choices: &mut Vec<Choice>,
    state: &mut State,
) -> bool {
    let apart = apply::settle::apply_apart(plan, runner, config, choices);
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
            plan.output.display(),
            apart.tried
        ));
    }
    went > 0
}

/// Why this run must not act at all (exit 2), if so: a root run on files others can write, or
/// a staging directory among the includes.
fn refused(cli: &Cli, config: &Config) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root
        && !cli.dry_run
        && let Some(problem) = crate::ownership::refuse_root(&cli.config, config)
    {
        return Some(problem);
    }
    let stage = cli.stage_dir.as_deref()?;
    apply::stage_dir_problem(stage, &cli.base_dir, &cli.addon_dir)
}

/// Checks that the state can be saved; says loudly (once per run) what it means if not.
fn state_writable(cli: &Cli) -> bool {
    match state::writable(&cli.state) {
        Ok(()) => true,
        Err(e) => {
            log::error(&format!(
                "cannot write the state in {}: {e:#}; deciding from this run's checks alone \
                 (no counters, preempt_delay_s never elapses) until it is writable again",
                files::dir_of(&cli.state).display()
            ));
            false
        }
    }
}

/// The include on disk and the record of what was last applied.
fn read_include(cli: &Cli) -> anyhow::Result<(Option<Vec<u8>>, Option<apply::InEffect>)> {
    let on_disk = files::read_include(&cli.output)?;
    Ok((on_disk, apply::read_record(&cli.output)?))
}

fn save_state(cli: &Cli, state: &State) {
    if let Err(e) = state::save(&cli.state, state) {
        state::discard(&cli.state);
        log::error(&format!(
            "cannot save the state to {}: {e:#}; the next run starts without history",
            cli.state.display()
        ));
    }
}

fn dry_run(cli: &Cli, text: &str, need: apply::Need) -> u8 {
    print!("{text}");
    log::info(&format!(
        "dry run: {} {}",
        cli.output.display(),
        match need {
            apply::Need::Nothing | apply::Need::Record => "is unchanged",
            apply::Need::Apply => "would change",
        }
    ));
    EXIT_OK
}

/// Every check result at debug level; the all-down warning when a define enters that state
/// (every few seconds in the journal would bury it), and a line when it leaves it.
fn log_results(config: &Config, eval: &Evaluation, previous: &State) {
    for c in &eval.choices {
        let name = &config.variables[c.variable].name;
        let define = c.define(config);
        if log::enabled(log::Level::Debug) {
            let outcomes = &eval.results[c.variable][c.family];
            for (i, o) in outcomes.iter().enumerate() {
                let state = o
                    .as_ref()
                    .map_or("not checked (decided earlier)".to_string(), |h| {
                        h.to_string()
                    });
                log::debug(&format!("{define}: {} {state}", candidate(config, c, i)));
            }
        }
        let was = previous
            .variables
            .get(name)
            .is_some_and(|v| v.family(c.family).all_down);
        match (was, c.all_down()) {
            (false, true) => log::warn(&format!("{define}: {}", reason_text(config, c))),
            (true, true) => log::debug(&format!("{define}: still {}", reason_text(config, c))),
            (true, false) => log::info(&format!(
                "{define}: no longer all down: {}",
                reason_text(config, c)
            )),
            (false, false) => {}
        }
    }
}

/// The results that came in after the choices were made, at debug level like the others.
fn log_late(config: &Config, choices: &[Choice], early: &Results, all: &Results) {
    if !log::enabled(log::Level::Debug) {
        return;
    }
    for c in choices {
        let (early, all) = (&early[c.variable][c.family], &all[c.variable][c.family]);
        for (i, h) in all.iter().enumerate() {
            if let (None, Some(h)) = (&early[i], h) {
                let define = c.define(config);
                log::debug(&format!(
                    "{define}: {} {h} (after the choice)",
                    candidate(config, c, i)
                ));
            }
        }
    }
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

/// One line per changed define: `NAME_v4: OLD -> NEW (why the preferred candidate lost)`.
fn log_changes(config: &Config, results: &Results, choices: &[Choice]) {
    for c in choices {
        let define = c.define(config);
        let before = c.effective.as_deref().unwrap_or("(none)");
        if before == c.rendered {
            continue;
        }
        let outcomes = &results[c.variable][c.family];
        // The candidates ahead of the pick that were seen down this run.
        let ahead = if c.all_down() {
            outcomes.len()
        } else {
            c.index.unwrap_or(0)
        };
        let down: Vec<String> = outcomes[..ahead.min(outcomes.len())]
            .iter()
            .enumerate()
            .filter_map(|(j, o)| o.as_ref().filter(|h| !h.is_up()).map(|h| (j, h)))
            .map(|(j, h)| format!("{} {h}", candidate(config, c, j)))
            .collect();
        let why = match (&c.reason, down.is_empty()) {
            (None, _) => "no addresses configured".to_string(),
            (_, false) => down.join(", "),
            (Some(_), true) => reason_text(config, c),
        };
        log::info(&format!("{define}: {before} -> {} ({why})", c.rendered));
    }
}
