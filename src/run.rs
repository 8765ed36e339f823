//! One run: load, check, select, render, and apply only if the include changed.

use crate::apply::{self, Plan};
use crate::cli::Cli;
use crate::command::{self, Runner};
use crate::config::{self, Config, DEFAULT_TIMEOUT_MS};
use crate::select::{self, Choice, Results};
use crate::{log, probe, render};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit codes: the contract with systemd and admins' scripts.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How long a run waits for another run holding the lock before giving way to it.
const LOCK_WAIT: Duration = Duration::from_secs(10);

pub fn main(cli: Cli) -> ExitCode {
    log::set_verbosity(cli.quiet, cli.verbose);
    ExitCode::from(run(&cli))
}

fn run(cli: &Cli) -> u8 {
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
    let timeout = cli.timeout.unwrap_or(Duration::from_millis(
        config.settings.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
    ));

    let results = match check(&config, timeout) {
        Ok(r) => r,
        Err(e) => {
            log::error(&format!("cannot run the checks: {e}"));
            return EXIT_FAILED;
        }
    };
    let choices = select::select(&config, &results);
    log_results(&config, &results, &choices);
    let text = render::include(&config, &choices);
    log::debug(&format!(
        "checked and rendered in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));

    if cli.dry_run {
        return dry_run(cli, &text);
    }

    let plan = Plan {
        output: cli.output.clone(),
        addon_dir: cli.addon_dir.clone(),
        base_dir: cli.base_dir.clone(),
        main_config: cli.main_config.clone(),
        stage_dir: cli.stage_dir.clone(),
        nft: cli.nft.clone(),
        reload,
    };
    let _lock = match apply::lock(&plan.output, LOCK_WAIT) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            log::info("another run is applying a change; leaving this one to it");
            return EXIT_OK;
        }
        Err(e) => {
            log::error(&format!("{e:#}"));
            return EXIT_FAILED;
        }
    };
    let previous = match std::fs::read(&plan.output) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            log::error(&format!("cannot read {}: {e}", plan.output.display()));
            return EXIT_FAILED;
        }
    };
    if previous
        .as_deref()
        .is_some_and(|old| render::md5_hex(old) == render::md5_hex(text.as_bytes()))
    {
        log::info(&format!("{}: unchanged", plan.output.display()));
        return EXIT_OK;
    }

    log_changes(&config, &results, &choices, previous.as_deref());
    match apply::apply(
        &plan,
        &Runner::for_current_user(),
        &text,
        previous.as_deref(),
    ) {
        Ok(()) => {
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
    }
}

fn check(config: &Config, timeout: Duration) -> std::io::Result<Results> {
    let in_flight = probe::raise_fd_limit();
    // One thread is plenty: the work is waiting on sockets, and it keeps the run cheap.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(probe::check_all(config, timeout, in_flight)))
}

fn dry_run(cli: &Cli, text: &str) -> u8 {
    print!("{text}");
    let differs = match std::fs::read(&cli.output) {
        Ok(old) => old != text.as_bytes(),
        Err(_) => true,
    };
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

/// The address (and port) of a candidate, as it appears in log lines.
fn candidate(config: &Config, choice: &Choice, index: usize) -> String {
    let var = &config.variables[choice.variable];
    let ip = var.addrs(choice.family)[index];
    std::net::SocketAddr::new(ip, var.port).to_string()
}

fn log_results(config: &Config, results: &Results, choices: &[Choice]) {
    for c in choices {
        let name = &config.variables[c.variable].name;
        let outcomes = &results[c.variable][c.family as usize];
        if log::enabled(log::Level::Debug) {
            for (i, o) in outcomes.iter().enumerate() {
                let state = o
                    .as_ref()
                    .map_or("not checked (decided earlier)".to_string(), |h| {
                        h.to_string()
                    });
                log::debug(&format!(
                    "{name}_{}: {} {state}",
                    c.family.suffix(),
                    candidate(config, c, i)
                ));
            }
        }
        if c.all_down {
            log::warn(&format!(
                "{name}_{}: no candidate is up; using the first one, {}",
                c.family.suffix(),
                c.rendered
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
        let why = match c.index {
            Some(i) if i > 0 || c.all_down => outcomes
                .iter()
                .enumerate()
                .filter_map(|(j, o)| o.as_ref().map(|h| (j, h)))
                .filter(|(_, h)| !h.is_up())
                .take(if c.all_down { usize::MAX } else { i })
                .map(|(j, h)| format!("{} {h}", candidate(config, c, j)))
                .collect::<Vec<_>>()
                .join(", "),
            Some(_) => "preferred candidate is up".into(),
            None => "no addresses configured".into(),
        };
        log::info(&format!("{define}: {before} -> {} ({why})", c.rendered));
    }
}
