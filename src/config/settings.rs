//! The `settings` section, global or inside a variable: timeouts, flapping rules, the
//! all-down policy and the apply mode. Pure.

use super::fields::{report_duplicates, unknown_key};
use super::values::{Family, Value, parse_value};
use crate::jsonc::Json;
use std::net::IpAddr;

/// Connect timeout when neither `--timeout` nor `settings.timeout_ms` says otherwise
/// (the reference addon's value).
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
/// The longest check timeout: a run waits at most one, and the shipped units give a whole run
/// 60 s (`TimeoutStartSec=`), of which the lock wait may take 10 s and an apply a few more.
pub const TIMEOUT_MAX_MS: u64 = 30_000;
/// What a run's checks, hook and MQTT publish may take together within the unit's 60 s: the
/// rest is for the lock wait (10 s) and the apply's commands.
pub const RUN_BUDGET_MS: u64 = 45_000;

/// Top-level `"settings"`, or the same keys inside a variable to override them there.
/// Every key is optional; unset keys fall back to the global setting, then to the default,
/// and the defaults reproduce the reference addon.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub timeout_ms: Option<u64>,
    pub fall: Option<u32>,
    pub rise: Option<u32>,
    pub preempt: Option<bool>,
    pub preempt_delay_s: Option<u64>,
    pub all_down: Option<AllDown>,
    pub fallback: Option<Fallback>,
    pub apply: Option<ApplyMode>,
    pub warn_no_standby: Option<bool>,
}

/// How a change of a variable reaches the running firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Check the whole config and reload nftables (the reference addon's behaviour).
    Reload,
    /// Update only the sets and maps this tool owns, in one nftables transaction.
    Live,
}

impl ApplyMode {
    pub fn name(self) -> &'static str {
        match self {
            ApplyMode::Reload => "reload",
            ApplyMode::Live => "live",
        }
    }
}

/// What to render when no candidate counts as up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// The first candidate (the reference addon's behaviour).
    First,
    /// Whatever was rendered last: never switch to a path that is also down.
    Keep,
    /// The `fallback` literal, e.g. a blackhole address, so traffic fails closed.
    Fallback,
}

impl AllDown {
    pub fn name(self) -> &'static str {
        match self {
            AllDown::First => "first",
            AllDown::Keep => "keep",
            AllDown::Fallback => "fallback",
        }
    }
}

/// The `fallback` literal: an address per family, or one value for variables with `values`.
#[derive(Debug, Clone, PartialEq)]
pub enum Fallback {
    PerFamily {
        ip4: Option<IpAddr>,
        ip6: Option<IpAddr>,
    },
    Value(Value),
}

/// The settings in force for one variable, after overrides and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
    pub preempt: bool,
    pub preempt_delay_s: u64,
    pub all_down: AllDown,
    pub fallback: Option<Fallback>,
    pub apply: ApplyMode,
    /// A define whose other candidates are all down or drained is a warning in `status`.
    pub warn_no_standby: bool,
}

impl Settings {
    /// This variable's settings, falling back to `global`, then to the defaults.
    pub fn resolve(&self, global: &Settings) -> Policy {
        Policy {
            timeout_ms: self
                .timeout_ms
                .or(global.timeout_ms)
                .unwrap_or(DEFAULT_TIMEOUT_MS),
            fall: self.fall.or(global.fall).unwrap_or(1),
            rise: self.rise.or(global.rise).unwrap_or(1),
            preempt: self.preempt.or(global.preempt).unwrap_or(true),
            preempt_delay_s: self.preempt_delay_s.or(global.preempt_delay_s).unwrap_or(0),
            all_down: self.all_down.or(global.all_down).unwrap_or(AllDown::First),
            fallback: self.fallback.clone().or_else(|| global.fallback.clone()),
            apply: self.apply.or(global.apply).unwrap_or(ApplyMode::Reload),
            warn_no_standby: self
                .warn_no_standby
                .or(global.warn_no_standby)
                .unwrap_or(true),
        }
    }
}

/// The keys of `settings` that a variable may override too.
pub const SETTING_KEYS: [&str; 9] = [
    "timeout_ms",
    "fall",
    "rise",
    "preempt",
    "preempt_delay_s",
    "all_down",
    "fallback",
    "apply",
    "warn_no_standby",
];

/// Parses one settings key into `settings`; returns false if the key is not a setting.
pub fn setting(
    settings: &mut Settings,
    key: &str,
    value: &Json,
    at: &str,
    problems: &mut Vec<String>,
) -> bool {
    let mut integer = |min: u64, max: u64, what: &str| match value {
        Json::Number(n) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => n.as_u64(),
        other => {
            problems.push(format!(
                "{at}.{key}: expected {what} from {min} to {max}, found {}",
                other.describe()
            ));
            None
        }
    };
    match key {
        "timeout_ms" => settings.timeout_ms = integer(1, TIMEOUT_MAX_MS, "milliseconds"),
        "fall" => settings.fall = integer(1, 1000, "a number of checks").map(|v| v as u32),
        "rise" => settings.rise = integer(1, 1000, "a number of checks").map(|v| v as u32),
        "preempt_delay_s" => settings.preempt_delay_s = integer(0, 86_400, "seconds"),
        "preempt" => match value {
            Json::Bool(b) => settings.preempt = Some(*b),
            other => problems.push(format!(
                "{at}.preempt: expected true or false, found {}",
                other.describe()
            )),
        },
        "warn_no_standby" => match value {
            Json::Bool(b) => settings.warn_no_standby = Some(*b),
            other => problems.push(format!(
                "{at}.warn_no_standby: expected true or false, found {}",
                other.describe()
            )),
        },
        "all_down" => match value {
            Json::String(s) if s == "first" => settings.all_down = Some(AllDown::First),
            Json::String(s) if s == "keep" => settings.all_down = Some(AllDown::Keep),
            Json::String(s) if s == "fallback" => settings.all_down = Some(AllDown::Fallback),
            other => problems.push(format!(
                "{at}.all_down: expected \"first\", \"keep\" or \"fallback\", found {}",
                other.describe()
            )),
        },
        "fallback" => settings.fallback = fallback(value, at, problems),
        "apply" => match value {
            Json::String(s) if s == "reload" => settings.apply = Some(ApplyMode::Reload),
            Json::String(s) if s == "live" => settings.apply = Some(ApplyMode::Live),
            other => problems.push(format!(
                "{at}.apply: expected \"reload\" or \"live\", found {}",
                other.describe()
            )),
        },
        _ => return false,
    }
    true
}

/// `fallback`: `{"ip4": "…", "ip6": "…"}` or one value (for variables with `values`).
fn fallback(value: &Json, at: &str, problems: &mut Vec<String>) -> Option<Fallback> {
    let Json::Object(entries) = value else {
        return match parse_value(value) {
            Some(v) => Some(Fallback::Value(v)),
            None => {
                problems.push(format!(
                    "{at}.fallback: expected {{\"ip4\": ADDRESS, \"ip6\": ADDRESS}} or one value \
                     (integer, IP address or identifier) for variables with values, found {}",
                    value.describe()
                ));
                None
            }
        };
    };
    let before = problems.len();
    report_duplicates(entries, &format!("{at}.fallback"), problems);
    let (mut ip4, mut ip6) = (None, None);
    for (key, item) in entries {
        let (family, slot) = match key.as_str() {
            "ip4" => (Family::V4, &mut ip4),
            "ip6" => (Family::V6, &mut ip6),
            _ => {
                problems.push(unknown_key(&format!("{at}.fallback"), key, &["ip4", "ip6"]));
                continue;
            }
        };
        match item {
            Json::String(text) => match text.parse::<IpAddr>() {
                Ok(addr) if addr.is_ipv4() == (family == Family::V4) => *slot = Some(addr),
                _ => problems.push(format!(
                    "{at}.fallback.{key}: expected an {} address, found {}",
                    if family == Family::V4 { "IPv4" } else { "IPv6" },
                    crate::text::quoted(text, 64)
                )),
            },
            other => problems.push(format!(
                "{at}.fallback.{key}: expected an address as a string, found {}",
                other.describe()
            )),
        }
    }
    (problems.len() == before).then_some(Fallback::PerFamily { ip4, ip6 })
}
