//! The Prometheus textfile for node_exporter's textfile collector, rewritten every run.

use super::{Run, status};
use crate::config::Config;
use crate::model::{CandidateState, Choice, State};
use std::fmt::Write;
use std::path::Path;

const PREFIX: &str = "nftables_failover";

/// One metric family: its name (after the prefix) and type and help, written once, and where
/// its samples come from. A name is spelt only here, so a family and its samples always agree.
struct Metric {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: fn(&Ctx) -> Vec<Sample>,
    /// Whether the family is left out when it has no sample (rather than written bare).
    only_with_samples: bool,
}

/// Labels and value of one sample.
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// Everything the samples are read from.
struct Ctx<'a> {
    config: &'a Config,
    run: &'a Run<'a>,
    state: &'a State,
    now: u64,
    candidates: Vec<Candidate<'a>>,
}

/// One configured candidate of one define, with what the state says of it.
struct Candidate<'a> {
    choice: &'a Choice,
    define: String,
    variable: &'a str,
    /// `ADDRESS:PORT`, or the address with its path for check-based candidates.
    shown: String,
    kept: Option<&'a CandidateState>,
    /// Checks so far: `[up, down]`.
    checks: [u64; 2],
    drained: bool,
}

impl Candidate<'_> {
    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![
            ("define", self.define.clone()),
            ("variable", self.variable.to_string()),
            ("family", self.choice.family.suffix().to_string()),
            ("candidate", self.shown.clone()),
        ]
    }

    /// One sample per candidate for which `value` says something.
    fn each(ctx: &Ctx, value: impl Fn(&Candidate) -> Option<f64>) -> Vec<Sample> {
        ctx.candidates
            .iter()
            .filter_map(|c| {
                Some(Sample {
                    value: value(c)?,
                    labels: c.labels(),
                })
            })
            .collect()
    }
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// A family with one unlabelled sample.
fn single(value: f64) -> Vec<Sample> {
    vec![Sample {
        labels: Vec::new(),
        value,
    }]
}

/// The defines' labels, for define-level families: one per define with a reason.
fn define_labels(ctx: &Ctx, c: &Choice) -> Vec<(&'static str, String)> {
    vec![
        ("define", c.define(ctx.config).to_string()),
        ("variable", ctx.config.variables[c.variable].name.clone()),
        ("family", c.family.suffix().to_string()),
    ]
}

const METRICS: &[Metric] = &[
    Metric {
        name: "candidate_up",
        kind: "gauge",
        help: "Whether the candidate counts as up (1) or down (0) after fall/rise.",
        samples: |ctx| Candidate::each(ctx, |c| Some(flag(c.kept?.counted.as_ref()?.up))),
        only_with_samples: false,
    },
    Metric {
        name: "candidate_last_check_up",
        kind: "gauge",
        help: "Result of the candidate's last check: 1 answered, 0 did not.",
        samples: |ctx| Candidate::each(ctx, |c| Some(flag(c.kept?.last.as_ref()?.up))),
        only_with_samples: false,
    },
    Metric {
        name: "candidate_last_check_latency_seconds",
        kind: "gauge",
        help: "Connect time of the candidate's last check that answered.",
        samples: |ctx| Candidate::each(ctx, |c| Some(c.kept?.last.as_ref()?.latency_ms? / 1e3)),
        only_with_samples: false,
    },
    Metric {
        name: "candidate_last_check_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the candidate's last check.",
        samples: |ctx| Candidate::each(ctx, |c| Some(c.kept?.last.as_ref()?.at as f64)),
        only_with_samples: false,
    },
    Metric {
        name: "candidate_checks_total",
        kind: "counter",
        help: "Checks of the candidate by result (up: answered, down: refused, timed out or failed).",
        samples: |ctx| {
            let mut out = Vec::new();
            for c in &ctx.candidates {
                for (result, n) in [("up", c.checks[0]), ("down", c.checks[1])] {
                    let mut labels = c.labels();
                    labels.push(("result", result.to_string()));
                    out.push(Sample {
                        labels,
                        value: n as f64,
                    });
                }
            }
            out
        },
        only_with_samples: false,
    },
    Metric {
        name: "define_status",
        kind: "gauge",
        help: "Where each define stands: 1 for its current status (preferred, failed_over, all_down), \
               0 for the others.",
        samples: |ctx| {
            let mut out = Vec::new();
            for c in ctx.run.choices {
                let Some(current) = status(c, ctx.run) else {
                    continue;
                };
                for s in ["preferred", "failed_over", "all_down"] {
                    let mut labels = define_labels(ctx, c);
                    labels.push(("status", s.to_string()));
                    out.push(Sample {
                        labels,
                        value: flag(s == current),
                    });
                }
            }
            out
        },
        only_with_samples: false,
    },
    Metric {
        name: "define_standby_missing",
        kind: "gauge",
        help: "1 if every other candidate of the define is down or drained (no healthy standby), \
               0 if one is up; only for defines with two or more candidates and warn_no_standby on.",
        samples: |ctx| {
            ctx.run
                .choices
                .iter()
                .filter(|c| {
                    let var = &ctx.config.variables[c.variable];
                    var.addrs(c.family).len() >= 2 && var.policy.warn_no_standby
                })
                .map(|c| Sample {
                    labels: define_labels(ctx, c),
                    value: flag(
                        super::missing_standby(ctx.config, c, ctx.run, ctx.state).is_some(),
                    ),
                })
                .collect()
        },
        only_with_samples: false,
    },
    Metric {
        name: "candidate_drained",
        kind: "gauge",
        help: "1 if the candidate is drained (taken out by `nftables-failover drain`), else 0.",
        samples: |ctx| Candidate::each(ctx, |c| Some(flag(c.drained))),
        only_with_samples: false,
    },
    Metric {
        name: "run_duration_seconds",
        kind: "gauge",
        help: "How long the last run took, from start to writing this file.",
        samples: |ctx| single(ctx.run.started.elapsed().as_secs_f64()),
        only_with_samples: false,
    },
    Metric {
        name: "last_run_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last run.",
        samples: |ctx| single(ctx.now as f64),
        only_with_samples: false,
    },
    Metric {
        name: "last_successful_apply_timestamp_seconds",
        kind: "gauge",
        help: "Unix time of the last apply that went through.",
        samples: |ctx| {
            let at = ctx.state.publish.last_ok_apply_at;
            at.map(|at| single(at as f64)).unwrap_or_default()
        },
        only_with_samples: true,
    },
    Metric {
        name: "reloads_total",
        kind: "counter",
        help: "Applies that installed a changed include and reloaded nftables.",
        samples: |ctx| single(ctx.state.publish.reloads as f64),
        only_with_samples: false,
    },
    Metric {
        name: "live_updates_total",
        kind: "counter",
        help: "Applies that updated table inet nftables_failover live, without a reload.",
        samples: |ctx| single(ctx.state.publish.live_updates as f64),
        only_with_samples: false,
    },
    Metric {
        name: "apply_failures_total",
        kind: "counter",
        help: "Applies that failed; the previous include was kept.",
        samples: |ctx| single(ctx.state.publish.apply_failures as f64),
        only_with_samples: false,
    },
    Metric {
        name: "hook_failures_total",
        kind: "counter",
        help: "on_change hook runs that failed or timed out.",
        samples: |ctx| single(ctx.state.publish.hook_failures as f64),
        only_with_samples: false,
    },
    Metric {
        name: "mqtt_failures_total",
        kind: "counter",
        help: "MQTT publishes that failed or timed out.",
        samples: |ctx| single(ctx.state.publish.mqtt_failures as f64),
        only_with_samples: false,
    },
];

/// Label values: backslash, double quote and newline escaped (exposition format).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole file. Candidates are labelled with their define, variable, family and
/// `ADDRESS:PORT`; `state` is the state after this run, with its publish counters.
pub fn render(config: &Config, run: &Run, state: &State, now: u64) -> String {
    let ctx = Ctx {
        config,
        run,
        state,
        now,
        candidates: candidates(config, run, state),
    };
    let mut out = String::with_capacity(4096);
    for m in METRICS {
        let samples = (m.samples)(&ctx);
        if samples.is_empty() && m.only_with_samples {
            continue;
        }
        let _ = writeln!(out, "# HELP {PREFIX}_{} {}", m.name, m.help);
        let _ = writeln!(out, "# TYPE {PREFIX}_{} {}", m.name, m.kind);
        for s in samples {
            let _ = write!(out, "{PREFIX}_{}", m.name);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

/// Every configured candidate of every define, in config order.
fn candidates<'a>(config: &'a Config, run: &'a Run, state: &'a State) -> Vec<Candidate<'a>> {
    let mut out = Vec::new();
    for c in run.choices {
        let var = &config.variables[c.variable];
        let define = c.define(config).to_string();
        for (i, addr) in var.addrs(c.family).iter().enumerate() {
            let kept = state
                .variables
                .get(&var.name)
                .and_then(|v| v.family(c.family).candidates.get(i))
                .filter(|s| s.address == *addr);
            let checks = state
                .publish
                .checks
                .get(&format!("{define} {addr}"))
                .copied()
                .unwrap_or_default();
            out.push(Candidate {
                choice: c,
                define: define.clone(),
                variable: &var.name,
                shown: crate::describe::candidate(config, c, i),
                kept,
                checks,
                drained: state.is_drained(&var.name, addr),
            });
        }
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
