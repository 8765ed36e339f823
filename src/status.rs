//! `nftables-failover status`: what each variable points at and why, for admins and for
//! monitoring (monitoring-plugin exit codes, stable JSON).

use crate::apply;
use crate::cli::StatusArgs;
use crate::clock::unix_now;
use crate::config::{Config, Variable};
use crate::describe::{candidate, reason_text};
use crate::model::{ApplyOutcome, Choice, FamilyState, Level, State};
use crate::options::Options;
use crate::standby;
use crate::state::{self, LoadProblem};
use crate::{drains, evaluate};
use serde::Serialize;

/// A result older than this describes no longer the present: a few timer runs (5 s apart by
/// default) have missed it. `status` shows such a candidate as `stale`, not as up or down.
pub const STALE_AFTER_S: u64 = 60;

/// The `--json` document. Field names and meanings are part of the interface (README).
#[derive(Debug, Serialize)]
pub struct Report {
    /// "OK", "WARNING", "CRITICAL" or "UNKNOWN".
    pub status: Level,
    pub exit_code: u8,
    pub summary: String,
    /// Whether fresh checks were run for this report (`--check`).
    pub checked_now: bool,
    /// The last run that had a change to apply, and how it went (null: none recorded).
    pub last_apply: Option<ApplyOutcome>,
    pub defines: Vec<DefineReport>,
}

#[derive(Debug, Serialize)]
pub struct DefineReport {
    pub define: String,
    pub variable: String,
    pub family: &'static str,
    /// Judged on what is in effect (`rendered`), not on what the next run would do.
    pub status: Level,
    /// The define's value in the include in effect (what nftables was last loaded with);
    /// null if none is in effect yet.
    pub rendered: Option<String>,
    /// Index of the candidate in effect, null for a fallback literal or none.
    pub selected: Option<usize>,
    /// Why the define has this status, and what the next run would do about it.
    pub reason: String,
    /// What the next run would render, and which candidate that is (null: a literal).
    pub next: String,
    pub next_selected: Option<usize>,
    /// The next run would change this define.
    pub pending: bool,
    pub candidates: Vec<CandidateReport>,
}

#[derive(Debug, Serialize)]
pub struct CandidateReport {
    pub address: String,
    pub port: u16,
    /// What the candidate renders (its address or its mapped value).
    pub value: String,
    /// "up", "down", "drained" (taken out by `drain`: checked, never chosen), "stale" (its last
    /// result is older than `STALE_AFTER_S`, so it says nothing about now) or "unknown" (no
    /// result at all: never checked since the config or the state was new).
    pub state: &'static str,
    /// Seconds since its last result (null: none).
    pub result_age_s: Option<u64>,
    /// Unix time since when it counts as up/down.
    pub since: Option<u64>,
    /// Consecutive checks so far that contradict `state`, and how many change it (rise or fall).
    pub streak: u32,
    pub needed: u32,
    pub last_check: Option<u64>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

pub fn main(opts: &Options, args: &StatusArgs) -> u8 {
    let report = match build(opts, args) {
        Ok(r) => r,
        Err((level, why)) => Report {
            status: level,
            exit_code: level.exit_code(),
            summary: why,
            checked_now: false,
            last_apply: None,
            defines: Vec::new(),
        },
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", text(&report, unix_now()));
    }
    report.exit_code
}

fn build(opts: &Options, args: &StatusArgs) -> Result<Report, (Level, String)> {
    let unknown = |why: String| (Level::Unknown, why);
    let config = crate::files::load_config(&opts.config).map_err(|e| unknown(e.to_string()))?;
    // Runs apply nothing while the drains cannot be read: that is the first thing to say.
    let drained = drains::load(&drains::path_beside(&opts.state)).map_err(|why| {
        (
            Level::Critical,
            format!("{why}; runs apply no change until it is fixed or removed"),
        )
    })?;
    let mut previous = match state::load(&opts.state) {
        Ok(s) => s,
        Err(LoadProblem::Missing) if args.check => State::default(),
        Err(LoadProblem::Missing) => {
            return Err(unknown(format!(
                "no state at {} yet: the timer has not run, or use --check",
                opts.state.display()
            )));
        }
        Err(LoadProblem::Unusable(why)) => {
            return Err(unknown(format!(
                "state file {}: {why}",
                opts.state.display()
            )));
        }
    };
    drains::merge(&mut previous.drained, &drained);
    let on_disk = crate::files::read_include(&opts.output).ok().flatten();
    let record = apply::read_record(&opts.output).map_err(|e| unknown(format!("{e:#}")))?;
    let in_effect = apply::in_effect(on_disk.as_deref(), record.as_ref());
    let probe = if args.check {
        evaluate::Probe::All
    } else {
        evaluate::Probe::No
    };
    let clock = crate::clock::mark();
    let jump = crate::clock::jump_ms(previous.clock.as_ref(), &clock);
    crate::select::shift_times(&mut previous, jump);
    let eval = evaluate::evaluate(
        &config,
        &previous,
        in_effect,
        probe,
        opts.timeout,
        clock.wall_ms,
    )
    .map_err(|e| unknown(format!("cannot run the checks: {e}")))?;
    let mut report = report(&config, &eval.choices, &eval.state, args.check, unix_now());
    if let Some(failed) = previous.last_apply.as_ref().filter(|a| !a.ok) {
        let error = failed.error.as_deref().unwrap_or("unknown error");
        let first_line = error.lines().next().unwrap_or(error);
        for d in report.defines.iter_mut().filter(|d| d.pending) {
            d.reason
                .push_str(&format!("; the last apply failed: {first_line}"));
        }
    }
    report.last_apply = previous.last_apply;
    Ok(report)
}

/// A define's status, judged on what is in effect, and why in words.
fn judge(
    config: &Config,
    c: &Choice,
    fam: Option<&FamilyState>,
    drained: &dyn Fn(usize) -> bool,
) -> (Level, String) {
    let var = &config.variables[c.variable];
    let endpoint = |i: usize| candidate(config, c, i);
    let counted = |i: usize| {
        fam.and_then(|f| f.candidates.get(i))
            .and_then(|s| s.counted)
    };
    let (status, now) = match (&c.effective, c.effective_index) {
        (None, _) => (Level::Unknown, "not applied yet".to_string()),
        (Some(_), Some(i)) => match counted(i) {
            None => (Level::Unknown, format!("{} never checked", endpoint(i))),
            Some(k) if !k.up => (
                Level::Critical,
                format!("traffic goes to {}, which is down", endpoint(i)),
            ),
            Some(_) if i == 0 => (Level::Ok, "preferred candidate up".to_string()),
            Some(_) => (
                Level::Warning,
                format!(
                    "on a lower-priority candidate ({} is preferred)",
                    endpoint(0)
                ),
            ),
        },
        (Some(e), None) if var.fallback(c.family).as_deref() == Some(e.as_str()) => (
            Level::Critical,
            "the all-down fallback is in effect".to_string(),
        ),
        (Some(e), None) => (
            Level::Warning,
            format!("{e} is not a candidate of the config"),
        ),
    };
    let standby = standby::missing(var, c.family, fam, c.effective_index, drained);
    let left_out: Vec<String> = (0..var.addrs(c.family).len())
        .filter(|&i| drained(i))
        .map(|i| format!("{} drained", endpoint(i)))
        .collect();
    let notes = |mut reason: String| {
        if !left_out.is_empty() {
            reason.push_str(&format!(" ({} left out)", left_out.join(", ")));
        }
        if let Some(s) = &standby {
            reason.push_str(&format!("; {s}"));
        }
        reason
    };
    // No healthy standby left, or a change pending: at least a warning.
    let status = if standby.is_some() {
        status.max(Level::Warning)
    } else {
        status
    };
    if c.effective.as_deref() == Some(c.rendered.as_str()) {
        return (status, notes(reason_text(config, c)));
    }
    let status = status.max(Level::Warning);
    (
        status,
        notes(format!(
            "{now}; next run renders {} ({})",
            c.rendered,
            reason_text(config, c)
        )),
    )
}

/// Builds the report from this evaluation's choices and counted state.
pub fn report(
    config: &Config,
    choices: &[Choice],
    state: &State,
    checked_now: bool,
    now: u64,
) -> Report {
    let mut defines = Vec::new();
    for c in choices.iter().filter(|c| c.reason.is_some()) {
        let var = &config.variables[c.variable];
        let fam = state.variables.get(&var.name).map(|v| v.family(c.family));
        let addrs = var.addrs(c.family);
        let drained = |i: usize| state.is_drained(&var.name, &addrs[i]);
        let last_of = |i: usize| {
            fam.and_then(|f| f.candidates.get(i))
                .filter(|s| s.address == addrs[i])
                .and_then(|s| s.last.as_ref())
        };
        // Without fresh checks, a candidate with no result at all leaves the next run's choice
        // open: say so instead of predicting one from nothing.
        let unresulted: Vec<String> = (0..addrs.len())
            .filter(|&i| last_of(i).is_none() && !drained(i))
            .map(|i| candidate(config, c, i))
            .collect();
        let (status, reason, next, next_selected) = if !checked_now && !unresulted.is_empty() {
            (
                Level::Unknown,
                format!(
                    "no check result yet for {}; the next run checks and decides \
                     (status --check checks now)",
                    unresulted.join(", ")
                ),
                c.effective.clone().unwrap_or_default(),
                c.effective_index,
            )
        } else {
            let (status, reason) = judge(config, c, fam, &drained);
            (status, reason, c.rendered.clone(), c.index)
        };
        let candidates = candidate_reports(var, c, fam, &drained, now);
        let (status, reason) = match stale_for(&candidates) {
            // Nothing checked for a while: what the state says is history, not the present.
            Some(age) if !checked_now => (
                status.max(Level::Unknown),
                format!(
                    "the newest check result is {} old: no run has checked since (is \
                     nftables-failover.timer or nftables-failover-watch running, and allowed \
                     to check? journalctl -u 'nftables-failover*'); {reason}",
                    ago(age)
                ),
            ),
            _ => (status, reason),
        };
        defines.push(DefineReport {
            define: var.define(c.family),
            variable: var.name.clone(),
            family: c.family.suffix(),
            status,
            rendered: c.effective.clone(),
            selected: c.effective_index,
            reason,
            pending: c.effective.as_deref() != Some(next.as_str()),
            next,
            next_selected,
            candidates,
        });
    }
    let status = defines.iter().map(|d| d.status).max().unwrap_or(Level::Ok);
    let n = defines.iter().filter(|d| d.status == status).count();
    let summary = match status {
        Level::Critical => format!("{n} define(s) point at a candidate that is down"),
        Level::Unknown => {
            format!("{n} define(s) not applied, or without check results yet or for a while")
        }
        Level::Warning => format!(
            "{n} define(s) failed over, with a change pending, or without a healthy standby"
        ),
        Level::Ok => format!("{} define(s) on their preferred candidate", defines.len()),
    };
    let exit_code = status.exit_code();
    Report {
        status,
        exit_code,
        summary,
        checked_now,
        last_apply: None,
        defines,
    }
}

/// Each candidate of a define as the report shows it.
fn candidate_reports(
    var: &Variable,
    c: &Choice,
    fam: Option<&FamilyState>,
    drained: &dyn Fn(usize) -> bool,
    now: u64,
) -> Vec<CandidateReport> {
    var.addrs(c.family)
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let cs = fam
                .and_then(|f| f.candidates.get(i))
                .filter(|s| s.address == *addr);
            let counted = cs.and_then(|s| s.counted);
            let last = cs.and_then(|s| s.last.as_ref());
            let age = last.map(|l| now.saturating_sub(l.at));
            CandidateReport {
                address: addr.to_string(),
                port: var.port,
                value: var.rendered(c.family, i),
                state: match (counted, age) {
                    _ if drained(i) => "drained",
                    (None, _) | (_, None) => "unknown",
                    (_, Some(a)) if a > STALE_AFTER_S => "stale",
                    (Some(k), _) if k.up => "up",
                    (Some(_), _) => "down",
                },
                result_age_s: age,
                since: counted.map(|k| k.since_ms / 1000),
                streak: counted.map_or(0, |k| k.streak),
                needed: match counted {
                    Some(k) if k.up => var.policy.fall,
                    _ => var.policy.rise,
                },
                last_check: last.map(|l| l.at),
                latency_ms: last.and_then(|l| l.latency_ms),
                error: last.and_then(|l| l.error.clone()),
            }
        })
        .collect()
}

/// How old the newest result of a define is, if every candidate has one and the newest is
/// older than [`STALE_AFTER_S`].
fn stale_for(candidates: &[CandidateReport]) -> Option<u64> {
    let newest = candidates
        .iter()
        .map(|c| c.result_age_s)
        .collect::<Option<Vec<u64>>>()?
        .into_iter()
        .min()?;
    (newest > STALE_AFTER_S).then_some(newest)
}

/// The human-readable report: a monitoring-plugin style first line, then per define its
/// candidates (`>` marks the rendered one).
pub fn text(report: &Report, now: u64) -> String {
    use std::fmt::Write;
    let mut out = format!("{}: {}\n", report.status, report.summary);
    for d in &report.defines {
        let _ = writeln!(
            out,
            "\n{} = {}  [{}] {}",
            d.define,
            d.rendered.as_deref().unwrap_or("(not applied)"),
            d.status,
            d.reason
        );
        for (i, c) in d.candidates.iter().enumerate() {
            let mark = if d.selected == Some(i) { '>' } else { ' ' };
            // Port 0: the candidate has a check, whose targets are probed instead.
            let ip = c
                .address
                .parse::<std::net::IpAddr>()
                .ok()
                .filter(|_| c.port != 0);
            let endpoint = ip.map_or(c.address.clone(), |ip| {
                std::net::SocketAddr::new(ip, c.port).to_string()
            });
            let since = c.since.map_or(String::new(), |s| {
                format!(" for {}", ago(now.saturating_sub(s)))
            });
            let toward = match c.state {
                "up" => format!("fall {}/{}", c.streak, c.needed),
                "down" => format!("rise {}/{}", c.streak, c.needed),
                "drained" => "drained".to_string(),
                "stale" => format!("result {} old", ago(c.result_age_s.unwrap_or(0))),
                _ => "no result yet".to_string(),
            };
            let last = match (&c.latency_ms, &c.error) {
                (Some(ms), _) => format!("last: up in {ms} ms"),
                (_, Some(e)) => format!("last: {e}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {mark} {endpoint:<24} {:<7}{since:<14} {toward:<10} {last}",
                c.state
            );
        }
    }
    out
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
