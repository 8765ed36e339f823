//! `nftables-failover check-config`: the config loaded and validated as a run loads it, and
//! one line about what it holds. Reads one file; probes, writes and runs nothing.

use crate::cli::{EXIT_OK, EXIT_USAGE};
use crate::config::{ApplyMode, Config, Family, Variable};
use crate::options::Options;
use crate::{files, log};

pub fn main(opts: &Options) -> u8 {
    match files::load_config(&opts.config) {
        Ok(config) => {
            println!("{}: OK: {}", opts.config.display(), summary(&config));
            EXIT_OK
        }
        Err(e) => {
            log::error(&e.to_string());
            EXIT_USAGE
        }
    }
}

/// Which variables use a feature.
type Pick = fn(&Variable) -> bool;

/// "3 variables (v4: 3, v6: 1; 7 candidates), live: web, uplink checks: uplink, publish: metrics"
pub fn summary(config: &Config) -> String {
    let vars = &config.variables;
    let count = |f: Family| vars.iter().filter(|v| !v.addrs(f).is_empty()).count();
    let candidates: usize = vars.iter().map(|v| v.ip4.len() + v.ip6.len()).sum();
    let names = |pick: Pick| {
        let n: Vec<&str> = vars
            .iter()
            .filter(|v| pick(v))
            .map(|v| v.name.as_str())
            .collect();
        match n.len() {
            0 => None,
            1..=5 => Some(n.join(" ")),
            k => Some(format!("{} and {} more", n[..5].join(" "), k - 5)),
        }
    };
    let mut parts = vec![format!(
        "{} variable{} (v4: {}, v6: {}; {candidates} candidate{})",
        vars.len(),
        if vars.len() == 1 { "" } else { "s" },
        count(Family::V4),
        count(Family::V6),
        if candidates == 1 { "" } else { "s" }
    )];
    let features: [(&str, Pick); 4] = [
        ("live", |v| v.policy.apply == ApplyMode::Live),
        ("uplink checks", |v| v.uplink.checks.is_some()),
        ("paths", |v| v.uplink.paths.is_some()),
        ("values", |v| v.values.is_some()),
    ];
    for (what, pick) in features {
        if let Some(n) = names(pick) {
            parts.push(format!("{what}: {n}"));
        }
    }
    let p = &config.publish;
    let publish: Vec<&str> = [
        (p.on_change.is_some(), "on_change"),
        (p.metrics.is_some(), "metrics"),
        (p.mqtt.is_some(), "mqtt"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if !publish.is_empty() {
        parts.push(format!("publish: {}", publish.join(" ")));
    }
    parts.join(", ")
}
