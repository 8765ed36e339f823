//! The Prometheus textfile for node_exporter's textfile collector, rewritten every run.

use super::{Run, status};
use crate::config::Config;
use crate::model::State;
use std::fmt::Write;
use std::path::Path;

const PREFIX: &str = "nftables_failover";

/// A metric family being written: HELP and TYPE once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(PREFIX);
        self.out.push('_');
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}_{name} {kind}");
    Family { out }
}

/// Label values: backslash, double quote and newline escaped (exposition format).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole file. Candidates are labelled with their define, variable, family and
/// `ADDRESS:PORT`; `state` is the state after this run, with its publish counters.
pub fn render(config: &Config, run: &Run, state: &State, now: u64) -> String {
    let mut out = String::with_capacity(4096);
    let p = &state.publish;
    // (define, variable, family, candidate, candidate state) for every configured candidate.
    let mut candidates = Vec::new();
    for c in run.choices {
        let var = &config.variables[c.variable];
        let define = c.define(config);
        let fam = var
            .addrs(c.family)
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let kept = state
                    .variables
                    .get(&var.name)
                    .and_then(|v| v.family(c.family).candidates.get(i))
                    .filter(|s| s.address == *addr);
                let checks = p
                    .checks
                    .get(&format!("{define} {addr}"))
                    .copied()
                    .unwrap_or_default();
                (
                    define.clone(),
                    crate::describe::candidate(config, c, i),
                    kept,
                    checks,
                )
            })
            .collect::<Vec<_>>();
        candidates.push((c, var.name.as_str(), fam));
    }

    let mut f = family(
        &mut out,
        "candidate_up",
        "gauge",
        "Whether the candidate counts as up (1) or down (0) after fall/rise.",
    );
    for (c, var, fam) in &candidates {
        for (define, cand, kept, _) in fam {
            if let Some(counted) = kept.and_then(|k| k.counted.as_ref()) {
                f.sample(
                    "candidate_up",
                    &[
                        ("define", define),
                        ("variable", var),
                        ("family", c.family.suffix()),
                        ("candidate", cand),
                    ],
                    u8::from(counted.up),
                );
            }
        }
    }
    let mut f = family(
        &mut out,
        "candidate_last_check_up",
        "gauge",
        "Result of the candidate's last check: 1 answered, 0 did not.",
    );
    for (c, var, fam) in &candidates {
        for (define, cand, kept, _) in fam {
            if let Some(last) = kept.and_then(|k| k.last.as_ref()) {
                f.sample(
                    "candidate_last_check_up",
                    &[
                        ("define", define),
                        ("variable", var),
                        ("family", c.family.suffix()),
                        ("candidate", cand),
                    ],
                    u8::from(last.up),
                );
            }
        }
    }
    let mut f = family(
        &mut out,
        "candidate_last_check_latency_seconds",
        "gauge",
        "Connect time of the candidate's last check that answered.",
    );
    for (c, var, fam) in &candidates {
        for (define, cand, kept, _) in fam {
            if let Some(ms) = kept
                .and_then(|k| k.last.as_ref())
                .and_then(|l| l.latency_ms)
            {
                f.sample(
                    "candidate_last_check_latency_seconds",
                    &[
                        ("define", define),
                        ("variable", var),
                        ("family", c.family.suffix()),
                        ("candidate", cand),
                    ],
                    ms / 1e3,
                );
            }
        }
    }
    let mut f = family(
        &mut out,
        "candidate_last_check_timestamp_seconds",
        "gauge",
        "Unix time of the candidate's last check.",
    );
    for (c, var, fam) in &candidates {
        for (define, cand, kept, _) in fam {
            if let Some(last) = kept.and_then(|k| k.last.as_ref()) {
                f.sample(
                    "candidate_last_check_timestamp_seconds",
                    &[
                        ("define", define),
                        ("variable", var),
                        ("family", c.family.suffix()),
                        ("candidate", cand),
                    ],
                    last.at,
                );
            }
        }
    }
    let mut f = family(
        &mut out,
        "candidate_checks_total",
        "counter",
        "Checks of the candidate by result (up: answered, down: refused, timed out or failed).",
    );
    for (c, var, fam) in &candidates {
        for (define, cand, _, checks) in fam {
            for (result, n) in [("up", checks[0]), ("down", checks[1])] {
                f.sample(
                    "candidate_checks_total",
                    &[
                        ("define", define),
                        ("variable", var),
                        ("family", c.family.suffix()),
                        ("candidate", cand),
                        ("result", result),
                    ],
                    n,
                );
            }
        }
    }
    let mut f = family(
        &mut out,
        "define_status",
        "gauge",
        "Where each define stands: 1 for its current status (preferred, failed_over, all_down), \
         0 for the others.",
    );
    for (c, var, _) in &candidates {
        let Some(current) = status(c, run) else {
            continue;
        };
        let define = c.define(config);
        for s in ["preferred", "failed_over", "all_down"] {
            f.sample(
                "define_status",
                &[
                    ("define", &define),
                    ("variable", var),
                    ("family", c.family.suffix()),
                    ("status", s),
                ],
                u8::from(s == current),
            );
        }
    }
    let mut f = family(
        &mut out,
        "define_standby_missing",
        "gauge",
        "1 if every other candidate of the define is down or drained (no healthy standby), \
         0 if one is up; only for defines with two or more candidates and warn_no_standby on.",
    );
    for (c, var, fam) in &candidates {
        let config_var = &config.variables[c.variable];
        if fam.len() < 2 || !config_var.policy.warn_no_standby {
            continue;
        }
        f.sample(
            "define_standby_missing",
            &[
                ("define", &c.define(config)),
                ("variable", var),
                ("family", c.family.suffix()),
            ],
            u8::from(super::missing_standby(config, c, run, state).is_some()),
        );
    }
    let mut f = family(
        &mut out,
        "candidate_drained",
        "gauge",
        "1 if the candidate is drained (taken out by `nftables-failover drain`), else 0.",
    );
    for (c, var, fam) in &candidates {
        let addrs = config.variables[c.variable].addrs(c.family);
        for (i, (define, cand, _, _)) in fam.iter().enumerate() {
            f.sample(
                "candidate_drained",
                &[
                    ("define", define),
                    ("variable", var),
                    ("family", c.family.suffix()),
                    ("candidate", cand),
                ],
                u8::from(state.is_drained(var, &addrs[i])),
            );
        }
    }
    family(
        &mut out,
        "run_duration_seconds",
        "gauge",
        "How long the last run took, from start to writing this file.",
    )
    .sample(
        "run_duration_seconds",
        &[],
        run.started.elapsed().as_secs_f64(),
    );
    family(
        &mut out,
        "last_run_timestamp_seconds",
        "gauge",
        "Unix time of the last run.",
    )
    .sample("last_run_timestamp_seconds", &[], now);
    if let Some(at) = p.last_ok_apply_at {
        family(
            &mut out,
            "last_successful_apply_timestamp_seconds",
            "gauge",
            "Unix time of the last apply that went through.",
        )
        .sample("last_successful_apply_timestamp_seconds", &[], at);
    }
    for (name, help, n) in [
        (
            "reloads_total",
            "Applies that installed a changed include and reloaded nftables.",
            p.reloads,
        ),
        (
            "live_updates_total",
            "Applies that updated table inet nftables_failover live, without a reload.",
            p.live_updates,
        ),
        (
            "apply_failures_total",
            "Applies that failed; the previous include was kept.",
            p.apply_failures,
        ),
        (
            "hook_failures_total",
            "on_change hook runs that failed or timed out.",
            p.hook_failures,
        ),
        (
            "mqtt_failures_total",
            "MQTT publishes that failed or timed out.",
            p.mqtt_failures,
        ),
    ] {
        family(&mut out, name, "counter", help).sample(name, &[], n);
    }
    out
}

/// Writes the file atomically (temp file and rename): node_exporter never reads half a file.
/// A new file is made readable by all, since node_exporter runs as another user.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    // A new file is 0644 for node_exporter from the moment it appears (its mode is set on the
    // temporary file, before the rename); an existing one keeps its mode.
    crate::files::write_atomically_with_mode(path, text.as_bytes(), false, 0o644)
}
