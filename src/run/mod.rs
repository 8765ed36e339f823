//! One run, in stages with typed hand-offs:
//!
//! 1. [`prepare`]: the config, the run lock, the previous state and clocks, the include in
//!    effect and the one command runner of the run → [`Prepared`];
//! 2. [`decide`]: check, count, pick and render → [`Decided`] (what changed, if anything);
//! 3. [`change::apply_stage`]: apply the change, or keep what is in effect in step →
//!    [`change::Applied`];
//! 4. [`finish`]: the checks still in flight, publication, and the state saved.
//!
//! A stage that ends the run logs why and returns its exit code.

mod change;
mod report;

use crate::apply;
use crate::command::Runner;
use crate::config::Config;
use crate::evaluate::{Evaluation, Probe, evaluate};
use crate::model::{ClockMark, Drained, State};
use crate::options::Options;
use crate::state;
use crate::{clock, drains, files, log, publish, signals};
use change::Applied;
use std::time::{Duration, Instant};

pub use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// How long a run waits for another run holding the lock before giving way to it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A full run. SIGTERM and SIGINT are caught for its duration: a running command is stopped, an
/// apply in progress rolls back, and the run exits 1 even if it got to the end.
pub fn run(opts: &Options) -> u8 {
    signals::install();
    let code = once(opts);
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
pub fn once(opts: &Options) -> u8 {
    let started = Instant::now();
    let prepared = match prepare(opts) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut decided = match decide(opts, &prepared, started) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if opts.dry_run {
        return dry_run(opts, &decided);
    }
    let applied = change::apply_stage(opts, &prepared, &mut decided, started);
    finish(opts, &prepared, decided, applied, started)
}

/// What a run starts from.
pub struct Prepared {
    pub config: Config,
    /// Held for the whole run (none for a dry run).
    _lock: Option<std::fs::File>,
    /// Whether the state can be saved (and so was read).
    keep_state: bool,
    /// The state as the last run left it, its times on this run's timeline.
    pub previous: State,
    pub clocks: ClockMark,
    /// The include on disk, and the record of what was last applied.
    pub on_disk: Option<Vec<u8>>,
    pub record: Option<apply::InEffect>,
    /// The one runner for every command of the run, with the run's `--command-timeout`.
    pub runner: Runner,
    /// Why the drains could not be read, if they could not: then nothing is applied.
    pub drains_unknown: Option<String>,
    /// The drains the state file carried itself (written before drains.json existed).
    legacy_drained: Drained,
}

/// What a run decided.
pub struct Decided {
    pub eval: Evaluation,
    pub need: apply::Need,
}

/// Loads and validates the config, takes the lock, reads the state and the include in effect.
fn prepare(opts: &Options) -> Result<Prepared, u8> {
    let config = match files::load_config(&opts.config) {
        Ok(c) => c,
        Err(e) => {
            log::error(&format!(
                "{e}\nnothing was changed; fix the config and run again"
            ));
            return Err(EXIT_USAGE);
        }
    };
    if let Err(e) = &opts.reload {
        log::error(e);
        return Err(EXIT_USAGE);
    }
    if let Some(problem) = refused(opts, &config) {
        log::error(&format!("{problem}\nnothing was changed"));
        return Err(EXIT_USAGE);
    }
    let lock = lock(opts)?;
    if lock.is_some() {
        files::remove_stale_temps(&opts.output);
    }
    // A state that cannot be saved goes stale; deciding from it would freeze the counters.
    let keep_state = opts.dry_run || state_writable(opts);
    let mut previous = if keep_state {
        state::load_or_empty(&opts.state)
    } else {
        State::default()
    };
    // The operator's word, whatever became of the state: drains.json is read every run. What
    // the state itself carries (drains from before drains.json) is kept apart, to be saved as
    // it was: the state never becomes a second record of drains.json.
    let legacy_drained = previous.drained.clone();
    let drains_unknown = match drains::load(&drains::path_beside(&opts.state)) {
        Ok(drained) => {
            drains::merge(&mut previous.drained, &drained);
            None
        }
        Err(why) => {
            log::error(&format!(
                "{why}; which candidates are drained is unknown, so this run applies no change \
                 (the include in effect stays): fix or remove the file, then drain again"
            ));
            Some(why)
        }
    };
    let clocks = clock::mark();
    let jump = clock::jump_ms(previous.clock.as_ref(), &clocks);
    if jump.abs() >= 1000 {
        log::info(&format!(
            "the wall clock moved by {:+.1} s since the last run; durations are measured on CLOCK_BOOTTIME",
            jump as f64 / 1e3
        ));
    }
    if jump != 0 {
        crate::select::shift_times(&mut previous, jump);
    }
    let (on_disk, record) = match read_include(opts) {
        Ok(x) => x,
        Err(e) => {
            log::error(&format!("{e:#}; nothing was changed"));
            return Err(EXIT_FAILED);
        }
    };
    Ok(Prepared {
        config,
        _lock: lock,
        keep_state,
        previous,
        clocks,
        on_disk,
        record,
        runner: Runner::for_current_user().with_timeout(opts.command_timeout),
        drains_unknown,
        legacy_drained,
    })
}

/// The run lock: the whole run holds it, so concurrent runs neither interleave applies nor
/// lose each other's counter updates. A dry run writes nothing and needs none. Another run
/// holding it past the wait is left the work (exit 0).
fn lock(opts: &Options) -> Result<Option<std::fs::File>, u8> {
    if opts.dry_run {
        return Ok(None);
    }
    match files::lock(&opts.output, LOCK_WAIT) {
        Ok(Some(lock)) => Ok(Some(lock)),
        Ok(None) if signals::received().is_some() => Err(EXIT_FAILED),
        Ok(None) => {
            log::warn(&format!(
                "another run holds {} after {LOCK_WAIT:?}; leaving the work to it",
                files::lock_path(&opts.output).display()
            ));
            Err(EXIT_OK)
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            Err(EXIT_FAILED)
        }
    }
}

/// Checks, counts, picks and renders; says what it found.
fn decide(opts: &Options, p: &Prepared, started: Instant) -> Result<Decided, u8> {
    let in_effect = apply::in_effect(p.on_disk.as_deref(), p.record.as_ref());
    let eval = match evaluate(
        &p.config,
        &p.previous,
        in_effect,
        Probe::UntilDecided,
        opts.timeout,
        p.clocks.wall_ms,
    ) {
        Ok(e) => e,
        Err(e) => {
            log::error(&format!("cannot run the checks: {e}"));
            return Err(EXIT_FAILED);
        }
    };
    if signals::received().is_some() {
        // The checks were cut short: deciding from them could switch on a half-finished picture.
        log::info("stopped before anything was decided; nothing was changed");
        return Err(EXIT_FAILED);
    }
    report::log_results(&p.config, &eval, &p.previous);
    log::debug(&format!(
        "checked and rendered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    let need = apply::need(
        eval.text.as_bytes(),
        p.on_disk.as_deref(),
        p.record.as_ref(),
    );
    Ok(Decided { eval, need })
}

/// The standbys' checks still in flight answer now: the apply never waited for them, and their
/// counters move every run, so a dead standby shows before it is needed. Then hook, metrics
/// and MQTT, which can neither delay nor undo the apply, and the state is saved.
fn finish(opts: &Options, p: &Prepared, mut d: Decided, mut a: Applied, started: Instant) -> u8 {
    let results = match d.eval.pending.take() {
        Some(pending) => {
            let all = pending.finish(&p.config, &d.eval.results, &mut a.state, d.eval.now);
            report::log_late(&p.config, &d.eval.choices, &d.eval.results, &all);
            all
        }
        None => std::mem::take(&mut d.eval.results),
    };
    let done = publish::Run {
        choices: &d.eval.choices,
        results: &results,
        applied: a.applied,
        live: a.live,
        started,
    };
    publish::after_run(&p.config, &p.previous, &mut a.state, &done);
    if p.keep_state {
        a.state.drained = p.legacy_drained.clone();
        save_state(opts, &a.state);
    }
    a.code
}

/// Why this run must not act at all (exit 2), if so: a root run on files others can write, or
/// a staging directory among the includes.
fn refused(opts: &Options, config: &Config) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root
        && !opts.dry_run
        && let Some(problem) = crate::ownership::refuse_root(&opts.config, config)
    {
        return Some(problem);
    }
    let stage = opts.stage_dir.as_deref()?;
    apply::stage_dir_problem(stage, &opts.base_dir, &opts.addon_dir)
}

/// Checks that the state can be saved; says loudly (once per run) what it means if not.
fn state_writable(opts: &Options) -> bool {
    match state::writable(&opts.state) {
        Ok(()) => true,
        Err(e) => {
            log::error(&format!(
                "cannot write the state in {}: {e:#}; deciding from this run's checks alone \
                 (no counters, preempt_delay_s never elapses) until it is writable again",
                files::dir_of(&opts.state).display()
            ));
            false
        }
    }
}

/// The include on disk and the record of what was last applied.
fn read_include(opts: &Options) -> anyhow::Result<(Option<Vec<u8>>, Option<apply::InEffect>)> {
    let on_disk = files::read_include(&opts.output).map_err(|e| {
        // The usual cause: an include the Python addon wrote as root, 0640 or 0600.
        let fix = e.reason.contains("Permission denied").then(|| {
            format!(
                "; the service reads the include it replaces: as root, run `chgrp {SERVICE_GROUP} \
                 {p} && chmod 640 {p}`",
                p = opts.output.display()
            )
        });
        anyhow::anyhow!("{e}{}", fix.unwrap_or_default())
    })?;
    Ok((on_disk, apply::read_record(&opts.output)?))
}

/// The service's group, as the package creates it.
const SERVICE_GROUP: &str = "nftables-failover";

/// A state that cannot be saved leaves the previous one in place (the next run counts from an
/// older history); drains are not in it, so none is lost either way.
fn save_state(opts: &Options, state: &State) {
    if let Err(e) = state::save(&opts.state, state) {
        log::error(&format!(
            "cannot save the state to {}: {e:#}; the previous state stays, and the next run \
             counts from it",
            opts.state.display()
        ));
    }
}

fn dry_run(opts: &Options, d: &Decided) -> u8 {
    print!("{}", d.eval.text);
    log::info(&format!(
        "dry run: {} {}",
        opts.output.display(),
        match d.need {
            apply::Need::Nothing | apply::Need::Record => "is unchanged",
            apply::Need::Apply => "would change",
        }
    ));
    EXIT_OK
}
