//! `nftables-failover status`: what each variable points at and why, for admins and for
//! monitoring (monitoring-plugin exit codes, stable JSON).

use crate::cli::{Cli, StatusArgs};
use crate::config::{self, Config};
use crate::evaluate::{self, reason_text, unix_now};
use crate::select::Choice;
use crate::state::{self, LoadProblem, State};
use serde::Serialize;

pub const OK: u8 = 0;
pub const WARNING: u8 = 1;
pub const CRITICAL: u8 = 2;
pub const UNKNOWN: u8 = 3;

/// The `--json` document. Field names and meanings are part of the interface (README).
#[derive(Debug, Serialize)]
pub struct Report {
    /// "OK", "WARNING", "CRITICAL" or "UNKNOWN".
    pub status: &'static str,
    pub exit_code: u8,
    pub summary: String,
    /// Whether fresh checks were run for this report (`--check`).
    pub checked_now: bool,
    pub defines: Vec<DefineReport>,
}

#[derive(Debug, Serialize)]
pub struct DefineReport {
    pub define: String,
    pub variable: String,
    pub family: &'static str,
    pub status: &'static str,
    pub rendered: String,
    /// Index of the rendered candidate, null for a kept or fallback literal.
    pub selected: Option<usize>,
    pub reason: String,
    pub candidates: Vec<CandidateReport>,
}

#[derive(Debug, Serialize)]
pub struct CandidateReport {
    pub address: String,
    pub port: u16,
    /// What the candidate renders (its address or its mapped value).
    pub value: String,
    /// "up", "down" or "unknown" (never checked).
    pub state: &'static str,
    /// Unix time since when it counts as up/down.
    pub since: Option<u64>,
    /// Consecutive checks so far that contradict `state`, and how many change it (rise or fall).
    pub streak: u32,
    pub needed: u32,
    pub last_check: Option<u64>,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

pub fn main(cli: &Cli, args: &StatusArgs) -> u8 {
    let report = match build(cli, args) {
        Ok(r) => r,
        Err(why) => Report {
            status: "UNKNOWN",
            exit_code: UNKNOWN,
            summary: why,
            checked_now: false,
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

fn build(cli: &Cli, args: &StatusArgs) -> Result<Report, String> {
    let config = config::load(&cli.config).map_err(|e| e.to_string())?;
    let previous = match state::load(&cli.state) {
        Ok(s) => s,
        Err(LoadProblem::Missing) if args.check => State::default(),
        Err(LoadProblem::Missing) => {
            return Err(format!(
                "no state at {} yet: the timer has not run, or use --check",
                cli.state.display()
            ));
        }
        Err(LoadProblem::Unusable(why)) => {
            return Err(format!("state file {}: {why}", cli.state.display()));
        }
    };
    let live = std::fs::read(&cli.output).ok();
    let eval = evaluate::evaluate(&config, &previous, live.as_deref(), args.check, cli.timeout)
        .map_err(|e| format!("cannot run the checks: {e}"))?;
    Ok(report(&config, &eval.choices, &eval.state, args.check))
}

/// Builds the report from this evaluation's choices and counted state.
pub fn report(config: &Config, choices: &[Choice], state: &State, checked_now: bool) -> Report {
    let mut defines = Vec::new();
    for c in choices.iter().filter(|c| c.reason.is_some()) {
        let var = &config.variables[c.variable];
        let fam = state.variables.get(&var.name).map(|v| v.family(c.family));
        let status = if c.all_down() {
            "CRITICAL"
        } else if c.index != Some(0) {
            "WARNING"
        } else {
            "OK"
        };
        let candidates = var
            .addrs(c.family)
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let cs = fam.and_then(|f| f.candidates.get(i));
                let counted = cs.and_then(|s| s.counted);
                let last = cs.and_then(|s| s.last.as_ref());
                CandidateReport {
                    address: addr.to_string(),
                    port: var.port,
                    value: var.rendered(c.family, i),
                    state: match counted {
                        Some(k) if k.up => "up",
                        Some(_) => "down",
                        None => "unknown",
                    },
                    since: counted.map(|k| k.since),
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
            .collect();
        defines.push(DefineReport {
            define: format!("{}_{}", var.name, c.family.suffix()),
            variable: var.name.clone(),
            family: c.family.suffix(),
            status,
            rendered: c.rendered.clone(),
            selected: c.index,
            reason: reason_text(config, c, state),
            candidates,
        });
    }
    let count = |s: &str| defines.iter().filter(|d| d.status == s).count();
    let (status, exit_code, summary) = if count("CRITICAL") > 0 {
        let n = count("CRITICAL");
        (
            "CRITICAL",
            CRITICAL,
            format!("{n} define(s) with no healthy candidate"),
        )
    } else if count("WARNING") > 0 {
        let n = count("WARNING");
        (
            "WARNING",
            WARNING,
            format!("{n} define(s) failed over to a lower-priority candidate"),
        )
    } else {
        (
            "OK",
            OK,
            format!("{} define(s) on their preferred candidate", defines.len()),
        )
    };
    Report {
        status,
        exit_code,
        summary,
        checked_now,
        defines,
    }
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
            d.define, d.rendered, d.status, d.reason
        );
        for (i, c) in d.candidates.iter().enumerate() {
            let mark = if d.selected == Some(i) { '>' } else { ' ' };
            let ip = c.address.parse::<std::net::IpAddr>().ok();
            let endpoint = ip.map_or(c.address.clone(), |ip| {
                std::net::SocketAddr::new(ip, c.port).to_string()
            });
            let since = c.since.map_or(String::new(), |s| {
                format!(" for {}", ago(now.saturating_sub(s)))
            });
            let toward = match c.state {
                "up" => format!("fall {}/{}", c.streak, c.needed),
                "down" => format!("rise {}/{}", c.streak, c.needed),
                _ => "never checked".to_string(),
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
