//! One run: load, check, count, select, render, and apply only if the include changed.

use crate::apply::{self, Plan};
use crate::cli::Cli;
use crate::command::{self, Runner};
use crate::config::{self, Config};
use crate::evaluate::{self, Evaluation, candidate, evaluate};
use crate::select::{Choice, Results};
use crate::state::{self, State};
use crate::{files, log, render, signals};
use std::time::{Duration, Instant};

/// Exit codes: the contract with systemd and admins' scripts.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How long a run waits for another run holding the lock before giving way to it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A full run. SIGTERM and SIGINT are caught for its duration: a running command is stopped, an
/// apply in progress rolls back, and the run exits 1 even if it got to the end.
pub fn run(cli: &Cli) -> u8 {
    signals::install();
    let code = run_once(cli);
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

fn run_once(cli: &Cli) -> u8 {
    let started = Instant::now();
    let config = match config::load(&cli.config) {
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
    // The whole run holds the lock, so concurrent runs neither interleave applies nor lose
    // each other's counter updates. A dry run writes nothing and needs none.
    let _lock = if cli.dry_run {
        None
    } else {
        match files::lock(&cli.output, LOCK_WAIT) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                log::info("another run is still going; leaving this one to it");
                return EXIT_OK;
            }
            Err(e) => {
                log::error(&format!("{e:#}"));
                return EXIT_FAILED;
            }
        }
    };
    let previous = state::load_or_empty(&cli.state);
    let live = match std::fs::read(&cli.output) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            log::error(&format!("cannot read {}: {e}", cli.output.display()));
            return EXIT_FAILED;
        }
    };
    let eval = match evaluate(&config, &previous, live.as_deref(), true, cli.timeout) {
        Ok(e) => e,
        Err(e) => {
            log::error(&format!("cannot run the checks: {e}"));
            return EXIT_FAILED;
        }
    };
    log_results(&config, &eval);
    log::debug(&format!(
        "checked and rendered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));

    if cli.dry_run {
        return dry_run(cli, &eval.text, live.as_deref());
    }

    let mut new_state = eval.state;
    let new_md5 = render::md5_hex(eval.text.as_bytes());
    let on_disk = live.as_deref().map(render::md5_hex);
    // Unchanged means: the include on disk is this text, and it is what was last applied (a
    // run after a failed or interrupted apply retries). No record at all trusts the disk, so
    // losing the state file never causes a reload.
    let applied = previous.applied_md5.as_deref().is_none_or(|a| a == new_md5);
    if on_disk.as_deref() == Some(new_md5.as_str()) && applied {
        log::info(&format!("{}: unchanged", cli.output.display()));
        save_state(cli, &new_state);
        return EXIT_OK;
    }
    if on_disk.as_deref() == Some(new_md5.as_str()) {
        log::info(&format!(
            "{}: on disk but not applied successfully yet; applying",
            cli.output.display()
        ));
    }
    log_changes(&config, &eval.results, &eval.choices, live.as_deref());

    let plan = Plan {
        output: cli.output.clone(),
        addon_dir: cli.addon_dir.clone(),
        base_dir: cli.base_dir.clone(),
        main_config: cli.main_config.clone(),
        stage_dir: cli.stage_dir.clone(),
        nft: cli.nft.clone(),
        reload,
    };
    let code = match apply::apply(
        &plan,
        &Runner::for_current_user().with_timeout(cli.command_timeout),
        &eval.text,
        live.as_deref(),
    ) {
        Ok(()) => {
            new_state.applied_md5 = Some(new_md5);
            log::info(&format!(
                "{}: applied and nftables reloaded ({:.0} ms)",
                plan.output.display(),
                started.elapsed().as_secs_f64() * 1e3
            ));
            EXIT_OK
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            EXIT_FAILED
        }
    };
    save_state(cli, &new_state);
    code
}

fn save_state(cli: &Cli, state: &State) {
    if let Err(e) = state::save(&cli.state, state) {
        log::warn(&format!(
            "cannot save state to {}: {e:#}; counters start over next run",
            cli.state.display()
        ));
    }
}

fn dry_run(cli: &Cli, text: &str, live: Option<&[u8]>) -> u8 {
    print!("{text}");
    let differs = live != Some(text.as_bytes());
    log::info(&format!(
        "dry run: {} {}",
        cli.output.display(),
        if differs {
            "would change"
        } else {
            "is unchanged"
        }
    ));
    EXIT_OK
}

fn log_results(config: &Config, eval: &Evaluation) {
    for c in &eval.choices {
        let name = &config.variables[c.variable].name;
        let define = format!("{name}_{}", c.family.suffix());
        if log::enabled(log::Level::Debug) {
            let outcomes = &eval.results[c.variable][c.family as usize];
            for (i, o) in outcomes.iter().enumerate() {
                let state = o
                    .as_ref()
                    .map_or("not checked (decided earlier)".to_string(), |h| {
                        h.to_string()
                    });
                log::debug(&format!("{define}: {} {state}", candidate(config, c, i)));
            }
        }
        if c.all_down() {
            log::warn(&format!(
                "{define}: {}",
                evaluate::reason_text(config, c, &eval.state)
            ));
        }
    }
}

/// One line per changed define: `NAME_v4: OLD -> NEW (why the preferred candidate lost)`.
fn log_changes(config: &Config, results: &Results, choices: &[Choice], previous: Option<&[u8]>) {
    let old_text = previous.map(String::from_utf8_lossy).unwrap_or_default();
    let old = render::parse_defines(&old_text);
    for c in choices {
        let define = format!(
            "{}_{}",
            config.variables[c.variable].name,
            c.family.suffix()
        );
        let before = old.get(define.as_str()).copied().unwrap_or("(none)");
        if before == c.rendered {
            continue;
        }
        let outcomes = &results[c.variable][c.family as usize];
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
            (Some(_), true) => evaluate::reason_text(config, c, &State::default()).to_string(),
        };
        log::info(&format!("{define}: {before} -> {} ({why})", c.rendered));
    }
}
