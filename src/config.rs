//! The config file: `failover.json` in the reference addon's format, validated strictly.
//!
//! Everything here is pure: text in, a `Config` or a list of every problem out. Whatever passes
//! validation is safe to print into an nftables file verbatim: names are nft identifiers and values
//! are integers, addresses or identifiers, so no config can inject nft syntax.

pub mod check;

use crate::jsonc::{self, Json};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Connect timeout when neither `--timeout` nor `settings.timeout_ms` says otherwise
/// (the reference addon's value).
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    pub variables: Vec<Variable>,
    /// `on_change`, `metrics`, `mqtt` from the top-level settings (see `publish::config`).
    pub publish: crate::publish::config::Publish,
}

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
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub port: u16,
    pub ip4: Vec<IpAddr>,
    pub ip6: Vec<IpAddr>,
    /// Rendered instead of the address at the same index (e.g. fwmarks).
    pub values: Option<Vec<Value>>,
    /// Settings in force for this variable (overrides applied over the global settings).
    pub policy: Policy,
    /// `check`, `paths`, `conntrack_cleanup`: empty unless configured (see `check`).
    pub uplink: check::Uplink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The suffix of the rendered define: `NAME_v4`, `NAME_v6`.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// What a family without addresses renders, so rules using the define still load.
    pub fn unspecified(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0",
            Family::V6 => "::",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Family::V4 => "ip4",
            Family::V6 => "ip6",
        }
    }
}

impl Variable {
    pub fn addrs(&self, family: Family) -> &[IpAddr] {
        match family {
            Family::V4 => &self.ip4,
            Family::V6 => &self.ip6,
        }
    }

    /// What to render for the candidate at `index` of `family`: its mapped value or its address.
    pub fn rendered(&self, family: Family, index: usize) -> String {
        match &self.values {
            Some(values) => values[index].to_string(),
            None => self.addrs(family)[index].to_string(),
        }
    }

    /// What `all_down: "fallback"` renders for `family` (validated to exist at load time).
    pub fn fallback(&self, family: Family) -> Option<String> {
        match self.policy.fallback.as_ref()? {
            Fallback::Value(v) => Some(v.to_string()),
            Fallback::PerFamily { ip4, ip6 } => match family {
                Family::V4 => ip4.map(|a| a.to_string()),
                Family::V6 => ip6.map(|a| a.to_string()),
            },
        }
    }

    /// What a candidate's history is only valid for: the port checked. Within it, history
    /// follows each address (see `select::Inputs`), so adding, removing or reordering
    /// candidates keeps what is known about the others.
    pub fn fingerprint(&self) -> String {
        format!("port={}{}", self.port, self.uplink.fingerprint())
    }
}

/// A `values` entry: only these three shapes can be rendered without quoting or escaping.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Integer(u64),
    Hex(String),
    Address(IpAddr),
    Identifier(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Value::Integer(n) => write!(f, "{n}"),
            Value::Hex(s) | Value::Identifier(s) => f.write_str(s),
            // IpAddr's Display is the canonical form (RFC 5952 for IPv6).
            Value::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Why a config file was refused: a syntax error with its position, or every semantic problem.
#[derive(Debug)]
pub enum ConfigError {
    /// The file is missing, not a regular file, too large, unreadable or not UTF-8.
    Read(PathBuf, String),
    Syntax(PathBuf, jsonc::SyntaxError),
    Invalid(PathBuf, Vec<String>),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            ConfigError::Read(path, e) => write!(f, "cannot read config {}: {e}", path.display()),
            ConfigError::Syntax(path, e) => write!(
                f,
                "{}:{}:{}: {} (the config is JSON; // and /* */ comments are allowed)",
                path.display(),
                e.line,
                e.column,
                e.message
            ),
            ConfigError::Invalid(path, problems) => {
                let n = problems.len();
                write!(
                    f,
                    "{}: {n} problem{} in config:",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(f, "\n  {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The most the config may have: 10,000 candidates take well under 1 MiB.
const CONFIG_CAP: u64 = crate::files::READ_CAP;

/// Reads and validates the config. A symlink is followed (an admin may keep the config
/// elsewhere); a FIFO, a device or a file over `CONFIG_CAP` is refused without blocking.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let refused = |why: String| ConfigError::Read(path.to_path_buf(), why);
    let bytes = match crate::files::read_regular(path, CONFIG_CAP, true) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(refused("it does not exist".into())),
        Err(e) => return Err(refused(e.reason)),
    };
    let text =
        String::from_utf8(bytes).map_err(|e| refused(format!("it is not UTF-8 text ({e})")))?;
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let tree = jsonc::parse(text).map_err(|e| ConfigError::Syntax(path.to_path_buf(), e))?;
    let mut problems = Vec::new();
    let config = validate(&tree, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError::Invalid(path.to_path_buf(), problems)),
    }
}

/// Checks the whole tree, pushing every problem found; returns a config only if it is usable.
fn validate(tree: &Json, problems: &mut Vec<String>) -> Option<Config> {
    let Json::Object(top) = tree else {
        problems.push(format!(
            "top level: expected an object with a \"failover\" key, found {}",
            tree.describe()
        ));
        return None;
    };
    report_duplicates(top, "top level", problems);
    let mut publish = crate::publish::config::Publish::default();
    let settings = match lookup(top, "settings") {
        Some(Json::Object(entries)) => {
            report_duplicates(entries, "settings", problems);
            let mut settings = Settings::default();
            for (key, value) in entries {
                if !crate::publish::config::setting(&mut publish, key, value, "settings", problems)
                    && !setting(&mut settings, key, value, "settings", problems)
                {
                    problems.push(format!(
                        "settings: unknown key {key:?}; expected one of: {SETTING_KEYS}"
                    ));
                }
            }
            settings
        }
        Some(other) => {
            problems.push(format!(
                "settings: expected an object, found {}",
                other.describe()
            ));
            Settings::default()
        }
        None => Settings::default(),
    };
    let Some(failover) = lookup(top, "failover") else {
        problems.push("top level: missing the \"failover\" object of variables".into());
        return None;
    };
    let Json::Object(entries) = failover else {
        problems.push(format!(
            "failover: expected an object of variables, found {}",
            failover.describe()
        ));
        return None;
    };
    if entries.is_empty() {
        problems.push("failover: no variables configured; add at least one".into());
    }
    report_duplicates(entries, "failover", problems);
    let mut variables = Vec::new();
    let mut seen = HashSet::with_capacity(entries.len());
    for (name, body) in entries {
        if !seen.insert(name.as_str()) {
            continue; // reported as duplicate above
        }
        if let Some(v) = validate_variable(name, body, &settings, problems) {
            variables.push(v);
        }
    }
    Some(Config {
        settings,
        variables,
        publish,
    })
}

const SETTING_KEYS: &str = "timeout_ms, fall, rise, preempt, preempt_delay_s, all_down, fallback, \
                            apply (and at the top level: on_change, metrics, mqtt)";

/// Parses one settings key into `settings`; returns false if the key is not a setting.
fn setting(
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
        "timeout_ms" => settings.timeout_ms = integer(1, 600_000, "milliseconds"),
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
                problems.push(format!(
                    "{at}.fallback: unknown key {key:?}; expected ip4 and/or ip6"
                ));
                continue;
            }
        };
        match item {
            Json::String(text) => match text.parse::<IpAddr>() {
                Ok(addr) if addr.is_ipv4() == (family == Family::V4) => *slot = Some(addr),
                _ => problems.push(format!(
                    "{at}.fallback.{key}: expected an {} address, found {text:?}",
                    if family == Family::V4 { "IPv4" } else { "IPv6" }
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

/// Checks that the settings in force for a variable fit its shape (e.g. its fallback).
fn check_policy(var: &Variable, at: &str, problems: &mut Vec<String>) {
    let p = &var.policy;
    match (&p.fallback, p.all_down, &var.values) {
        (None, AllDown::Fallback, _) => problems.push(format!(
            "{at}: all_down is \"fallback\" but no \"fallback\" is set; give the literal to render"
        )),
        (Some(Fallback::PerFamily { .. }), AllDown::Fallback, Some(_)) => problems.push(format!(
            "{at}.fallback: this variable renders values, so the fallback must be one value, not addresses"
        )),
        (Some(Fallback::Value(_)), AllDown::Fallback, None) => problems.push(format!(
            "{at}.fallback: expected {{\"ip4\": ADDRESS, \"ip6\": ADDRESS}} for a variable without values"
        )),
        (Some(Fallback::PerFamily { ip4, ip6 }), AllDown::Fallback, None) => {
            for (family, given) in [(Family::V4, ip4.is_some()), (Family::V6, ip6.is_some())] {
                if !var.addrs(family).is_empty() && !given {
                    problems.push(format!(
                        "{at}.fallback: missing \"{}\"; every configured family needs a fallback address",
                        family.key()
                    ));
                }
            }
        }
        _ => {}
    }
    if p.apply == ApplyMode::Live {
        // Live mode stores the value in a typed set or map: an address or a mark.
        let values: Vec<&Value> = var
            .values
            .iter()
            .flatten()
            .chain(match &p.fallback {
                Some(Fallback::Value(v)) => Some(v),
                _ => None,
            })
            .collect();
        let marks = values
            .iter()
            .filter(|v| matches!(v, Value::Integer(_) | Value::Hex(_)))
            .count();
        if marks != 0 && marks != values.len() {
            problems.push(format!(
                "{at}.apply: live mode needs all values of a variable to be of one type (all marks or all addresses)"
            ));
        }
        if let Some(v) = values.iter().find(|v| matches!(v, Value::Identifier(_))) {
            problems.push(format!(
                "{at}.apply: live mode stores addresses and integer marks only, not the identifier {v}; \
                 use \"apply\": \"reload\" for this variable"
            ));
        }
    }
}

const VARIABLE_KEYS: &str =
    "ip4, ip6, port, values, check, checks, paths, conntrack_cleanup, or a setting";

fn validate_variable(
    name: &str,
    body: &Json,
    global: &Settings,
    problems: &mut Vec<String>,
) -> Option<Variable> {
    // Escaped: the name comes from the file and must not break the message into lines.
    let at = format!("failover.{}", crate::log::escape_controls(name));
    let before = problems.len();
    if !is_identifier(name) {
        problems.push(format!(
            "{at}: variable name {name:?} is not an nft identifier \
             (letters, digits and _, not starting with a digit)"
        ));
    }
    let Json::Object(entries) = body else {
        problems.push(format!(
            "{at}: expected an object with {VARIABLE_KEYS}, found {}",
            body.describe()
        ));
        return None;
    };
    report_duplicates(entries, &at, problems);
    let mut overrides = Settings::default();
    for (key, value) in entries {
        if !matches!(key.as_str(), "ip4" | "ip6" | "port" | "values")
            && !check::KEYS.contains(&key.as_str())
            && !setting(&mut overrides, key, value, &at, problems)
        {
            problems.push(format!(
                "{at}: unknown key {key:?}; expected one of: ip4, ip6, port, values, \
                 check, checks, paths, conntrack_cleanup, {SETTING_KEYS}"
            ));
        }
    }
    // With a check, probes go to its targets, so the candidate's own port is not needed.
    let checked = lookup(entries, "check").is_some() || lookup(entries, "checks").is_some();
    let port = match lookup(entries, "port") {
        None if checked => Some(0),
        None => {
            problems.push(format!(
                "{at}: missing \"port\" (the TCP port to check, 1-65535)"
            ));
            None
        }
        Some(Json::Number(n)) if n.as_u64().is_some_and(|p| (1..=65535).contains(&p)) => {
            n.as_u64().map(|p| p as u16)
        }
        Some(other) => {
            problems.push(format!(
                "{at}.port: expected a TCP port number from 1 to 65535, found {}",
                other.describe()
            ));
            None
        }
    };
    let ip4 = addresses(entries, &at, Family::V4, problems);
    let ip6 = addresses(entries, &at, Family::V6, problems);
    if ip4.is_empty() && ip6.is_empty() && problems.len() == before {
        problems.push(format!(
            "{at}: no addresses; give \"ip4\" and/or \"ip6\" with at least one address"
        ));
    }
    let values = lookup(entries, "values").and_then(|v| {
        let values = values(v, &at, problems)?;
        for (family, list) in [(Family::V4, &ip4), (Family::V6, &ip6)] {
            if !list.is_empty() && list.len() != values.len() {
                problems.push(format!(
                    "{at}.values: has {} entries but \"{}\" has {}; values map 1-to-1 to each address list",
                    values.len(),
                    family.key(),
                    list.len()
                ));
            }
        }
        Some(values)
    });
    let uplink = check::parse(
        entries,
        &at,
        [ip4.len(), ip6.len()],
        values.as_deref(),
        problems,
    );
    let var = Variable {
        name: name.to_string(),
        port: port.unwrap_or_default(),
        ip4,
        ip6,
        values,
        policy: overrides.resolve(global),
        uplink,
    };
    if overrides.fallback.is_some() && var.policy.all_down != AllDown::Fallback {
        problems.push(format!(
            "{at}.fallback: set, but all_down is \"{}\"; add \"all_down\": \"fallback\" to use it",
            var.policy.all_down.name()
        ));
    }
    // Only on an otherwise valid variable: a refused fallback must not also read as a missing one.
    if problems.len() == before {
        check_policy(&var, &at, problems);
    }
    (problems.len() == before).then_some(var)
}

/// `ip4`/`ip6`: a string or a list of strings, each an address of that family.
fn addresses(
    entries: &[(String, Json)],
    at: &str,
    family: Family,
    problems: &mut Vec<String>,
) -> Vec<IpAddr> {
    let key = family.key();
    let items: Vec<(String, &Json)> = match lookup(entries, key) {
        None => return Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{at}.{key}[{i}]"), v))
            .collect(),
        Some(single) => vec![(format!("{at}.{key}"), single)],
    };
    let expected = match family {
        Family::V4 => "an IPv4 address",
        Family::V6 => "an IPv6 address",
    };
    let mut out = Vec::new();
    for (where_, item) in items {
        let Json::String(text) = item else {
            problems.push(format!(
                "{where_}: expected {expected} as a string, found {}",
                item.describe()
            ));
            continue;
        };
        match text.parse::<IpAddr>() {
            Ok(addr) if addr.is_ipv4() == (family == Family::V4) => {
                if out.contains(&addr) {
                    problems.push(format!(
                        "{where_}: {addr} is listed twice; each candidate once, in priority order"
                    ));
                }
                out.push(addr)
            }
            Ok(addr) => problems.push(format!(
                "{where_}: expected {expected}, found {addr}; put it under \"{}\"",
                if addr.is_ipv4() { "ip4" } else { "ip6" }
            )),
            Err(_) if looks_like_hostname(text) => problems.push(format!(
                "{where_}: expected {expected}, found hostname {text:?}; hostnames are not \
                 supported, list the addresses instead"
            )),
            Err(_) if family == Family::V6 && text.contains(':') => problems.push(format!(
                "{where_}: expected {expected}, found {text:?} (IPv6 has eight groups, or :: for a run of zero groups)"
            )),
            Err(_) => problems.push(format!("{where_}: expected {expected}, found {text:?}")),
        }
    }
    out
}

fn values(tree: &Json, at: &str, problems: &mut Vec<String>) -> Option<Vec<Value>> {
    let Json::Array(items) = tree else {
        problems.push(format!(
            "{at}.values: expected a list, found {}",
            tree.describe()
        ));
        return None;
    };
    let before = problems.len();
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_value(item) {
            Some(v) => out.push(v),
            None => problems.push(format!(
                "{at}.values[{i}]: expected a non-negative integer, an IP address or a plain \
                 identifier ([A-Za-z_][A-Za-z0-9_]*), found {}",
                item.describe()
            )),
        }
    }
    (problems.len() == before).then_some(out)
}

/// Parses one `values` entry (also used for fallback literals).
pub fn parse_value(item: &Json) -> Option<Value> {
    match item {
        Json::Number(n) => n.as_u64().map(Value::Integer),
        Json::String(s) => {
            if let Ok(n) = s.parse::<u64>() {
                Some(Value::Integer(n))
            } else if let Some(hex) = s.strip_prefix("0x") {
                (!hex.is_empty() && hex.len() <= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Value::Hex(s.clone()))
            } else if let Ok(addr) = s.parse::<IpAddr>() {
                Some(Value::Address(addr))
            } else {
                is_identifier(s).then(|| Value::Identifier(s.clone()))
            }
        }
        _ => None,
    }
}

/// An nft identifier as used for define names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn looks_like_hostname(s: &str) -> bool {
    s.contains('.')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

pub(crate) fn lookup<'a>(entries: &'a [(String, Json)], key: &str) -> Option<&'a Json> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn report_duplicates(entries: &[(String, Json)], at: &str, problems: &mut Vec<String>) {
    // Counted, not compared pairwise: a config may have thousands of variables.
    let mut count: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (key, _) in entries {
        *count.entry(key).or_default() += 1;
    }
    // Once per key, in order of first occurrence.
    for (key, _) in entries {
        if count.remove(key.as_str()).is_some_and(|n| n > 1) {
            problems.push(format!(
                "{at}: duplicate key {key:?}; JSON objects take each key once"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("f.json")) {
            Err(ConfigError::Invalid(_, p)) => p,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn one_problem(text: &str) -> String {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:#?}");
        p.into_iter().next().unwrap()
    }

    /// Each variable body must give exactly one problem containing the expected text.
    fn assert_each_refused(cases: &[(&str, &str)]) {
        for (body, expected) in cases {
            let p = one_problem(&var(body));
            assert!(
                p.contains(expected),
                "{body}\n  got: {p}\n  want: {expected}"
            );
        }
    }

    fn var(body: &str) -> String {
        format!(r#"{{"failover": {{"v": {body}}}}}"#)
    }

    #[test]
    fn reference_example_with_comment_loads_in_order() {
        let text = include_str!("../tests/data/reference-example-fixed.json");
        let config = parse(text, Path::new("f.json")).unwrap();
        let names: Vec<_> = config.variables.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["endpoint_filer", "endpoint_print", "mark_proxy"]);
        let mark = &config.variables[2];
        assert_eq!(mark.port, 3129);
        assert_eq!(mark.rendered(Family::V4, 1), "201");
        assert!(mark.ip6.is_empty());
    }

    #[test]
    fn single_string_address_is_a_one_item_list() {
        let c = parse(&var(r#"{"ip4": "10.0.0.1", "port": 22}"#), Path::new("f")).unwrap();
        assert_eq!(c.variables[0].ip4, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let err = parse("{\n\"failover\": {,}\n}", Path::new("/etc/x.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/x.json:2:14: "), "{msg}");
    }

    #[test]
    fn refusals_name_the_variable_and_key() {
        let cases = [
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "prot": 2}"#,
                "failover.v: unknown key \"prot\"",
            ),
            (r#"{"ip4": ["1.2.3.4"]}"#, "failover.v: missing \"port\""),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 0}"#,
                "failover.v.port: expected a TCP port number from 1 to 65535, found number 0",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 65536}"#,
                "failover.v.port: expected a TCP port",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": "443"}"#,
                "found string \"443\"",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 44.5}"#,
                "failover.v.port: expected a TCP port",
            ),
            (
                r#"{"ip4": ["2001:db8::1"], "port": 1}"#,
                "failover.v.ip4[0]: expected an IPv4 address, found 2001:db8::1; put it under \"ip6\"",
            ),
            (
                r#"{"ip6": ["10.0.0.1"], "port": 1}"#,
                "failover.v.ip6[0]: expected an IPv6 address, found 10.0.0.1; put it under \"ip4\"",
            ),
            (
                r#"{"ip4": ["db.example.com"], "port": 1}"#,
                "hostnames are not supported",
            ),
            (
                r#"{"ip4": ["1.2.3.4/24"], "port": 1}"#,
                "failover.v.ip4[0]: expected an IPv4 address, found \"1.2.3.4/24\"",
            ),
            (
                r#"{"ip4": [5], "port": 1}"#,
                "failover.v.ip4[0]: expected an IPv4 address as a string, found number 5",
            ),
            (
                r#"{"ip4": ["1.2.3.4", "1.2.3.4"], "port": 1}"#,
                "listed twice",
            ),
            (r#"{"port": 1}"#, "failover.v: no addresses"),
            (r#"{"ip4": [], "port": 1}"#, "failover.v: no addresses"),
            (
                r#"{"ip4": ["1.2.3.4", "1.2.3.5"], "port": 1, "values": [1]}"#,
                "failover.v.values: has 1 entries but \"ip4\" has 2",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": ["1; flush ruleset"]}"#,
                "failover.v.values[0]: expected a non-negative integer",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": ["a\"b"]}"#,
                "failover.v.values[0]",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": ["}"]}"#,
                "failover.v.values[0]",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": [-1]}"#,
                "failover.v.values[0]",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": [1.5]}"#,
                "failover.v.values[0]",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "values": 7}"#,
                "failover.v.values: expected a list",
            ),
            (
                r#"{"ip4": ["1.2.3.4"], "port": 1, "port": 2}"#,
                "failover.v: duplicate key \"port\"",
            ),
            (r#"["1.2.3.4"]"#, "failover.v: expected an object"),
        ];
        assert_each_refused(&cases);
    }

    #[test]
    fn bad_variable_names_are_refused() {
        for name in ["1abc", "a-b", "a b", "a;flush", "", "ä"] {
            let text = format!(r#"{{"failover": {{"{name}": {{"ip4": "1.1.1.1", "port": 1}}}}}}"#);
            let p = one_problem(&text);
            assert!(p.contains("is not an nft identifier"), "{name}: {p}");
        }
    }

    #[test]
    fn control_characters_in_names_are_escaped_in_messages() {
        let text = r#"{"failover": {"a\nerror: forged\u001b[31m": {"ip4": "1.1.1.1", "port": 0}}}"#;
        let p = problems(text);
        assert_eq!(p.len(), 2, "{p:#?}");
        for line in &p {
            assert!(!line.contains(['\n', '\x1b']), "{line:?}");
            assert!(
                line.starts_with(r"failover.a\nerror: forged\x1b[31m"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn top_level_refusals() {
        assert!(one_problem(r#"{"failover": {}}"#).contains("no variables configured"));
        assert!(one_problem(r#"{}"#).contains("missing the \"failover\" object"));
        assert!(one_problem(r#"[]"#).contains("expected an object"));
        assert!(one_problem(r#"{"failover": []}"#).contains("expected an object of variables"));
        let dup = r#"{"failover": {"a": {"ip4": "1.1.1.1", "port": 1}, "a": {"ip4": "1.1.1.2", "port": 1}}}"#;
        assert!(one_problem(dup).contains("failover: duplicate key \"a\""));
        let bad_setting =
            r#"{"settings": {"timeout": 5}, "failover": {"a": {"ip4": "1.1.1.1", "port": 1}}}"#;
        assert!(one_problem(bad_setting).contains("settings: unknown key \"timeout\""));
        let bad_timeout =
            r#"{"settings": {"timeout_ms": 0}, "failover": {"a": {"ip4": "1.1.1.1", "port": 1}}}"#;
        assert!(one_problem(bad_timeout).contains("settings.timeout_ms: expected milliseconds"));
    }

    #[test]
    fn apply_mode_is_reload_unless_live_is_asked_for() {
        let text = r#"{"settings": {"apply": "live"}, "failover": {
            "a": {"ip4": "192.0.2.1", "port": 1},
            "b": {"ip4": "192.0.2.2", "port": 1, "apply": "reload"},
            "m": {"ip4": "192.0.2.3", "port": 1, "values": [200]}}}"#;
        let c = parse(text, Path::new("f.json")).unwrap();
        let modes: Vec<_> = c.variables.iter().map(|v| v.policy.apply).collect();
        assert_eq!(modes, [ApplyMode::Live, ApplyMode::Reload, ApplyMode::Live]);
        let plain = parse(&var(r#"{"ip4": "192.0.2.1", "port": 1}"#), Path::new("f")).unwrap();
        assert_eq!(plain.variables[0].policy.apply, ApplyMode::Reload);
        assert_each_refused(&[
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "apply": "fast"}"#,
                "failover.v.apply: expected \"reload\" or \"live\", found string \"fast\"",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "apply": "live", "values": ["wan"]}"#,
                "failover.v.apply: live mode stores addresses and integer marks only, not the identifier wan",
            ),
            (
                r#"{"ip4": ["1.1.1.1", "1.1.1.2"], "port": 1, "apply": "live", "values": [1, "192.0.2.1"]}"#,
                "failover.v.apply: live mode needs all values of a variable to be of one type",
            ),
        ]);
    }

    #[test]
    fn settings_are_validated_globally_and_per_variable() {
        let cases = [
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "fall": 0}"#,
                "failover.v.fall: expected a number of checks from 1 to 1000, found number 0",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "rise": "2"}"#,
                "failover.v.rise: expected a number of checks",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "preempt": "no"}"#,
                "failover.v.preempt: expected true or false",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "preempt_delay_s": -1}"#,
                "failover.v.preempt_delay_s: expected seconds",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "drop"}"#,
                "failover.v.all_down: expected \"first\", \"keep\" or \"fallback\"",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "fallback"}"#,
                "failover.v: all_down is \"fallback\" but no \"fallback\" is set",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "fallback": {"ip4": "192.0.2.1"}}"#,
                "failover.v.fallback: set, but all_down is \"first\"",
            ),
            (
                r#"{"ip4": "1.1.1.1", "ip6": "::1", "port": 1, "all_down": "fallback", "fallback": {"ip4": "192.0.2.1"}}"#,
                "failover.v.fallback: missing \"ip6\"",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "fallback", "fallback": {"ip4": "::1"}}"#,
                "failover.v.fallback.ip4: expected an IPv4 address",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "fallback", "fallback": {"ip4": "1.1.1.1; flush ruleset"}}"#,
                "failover.v.fallback.ip4",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "fallback", "fallback": {"ipv4": "1.1.1.1"}}"#,
                "failover.v.fallback: unknown key \"ipv4\"",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "all_down": "fallback", "fallback": 7}"#,
                "for a variable without values",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "values": [1], "all_down": "fallback", "fallback": {"ip4": "192.0.2.1"}}"#,
                "must be one value",
            ),
            (
                r#"{"ip4": "1.1.1.1", "port": 1, "values": [1], "all_down": "fallback", "fallback": "x y"}"#,
                "failover.v.fallback: expected",
            ),
        ];
        assert_each_refused(&cases);
    }

    #[test]
    fn per_variable_settings_override_global_ones_and_defaults_match_the_reference() {
        let c = parse(
            r#"{"settings": {"fall": 3, "rise": 2, "all_down": "keep", "timeout_ms": 500},
                "failover": {
                  "a": {"ip4": "1.1.1.1", "port": 1},
                  "b": {"ip4": "1.1.1.1", "port": 1, "fall": 1, "preempt": false, "preempt_delay_s": 60}
                }}"#,
            Path::new("f"),
        )
        .unwrap();
        let (a, b) = (&c.variables[0].policy, &c.variables[1].policy);
        assert_eq!(
            (a.fall, a.rise, a.preempt, a.all_down, a.timeout_ms),
            (3, 2, true, AllDown::Keep, 500)
        );
        assert_eq!(
            (b.fall, b.rise, b.preempt, b.preempt_delay_s),
            (1, 2, false, 60)
        );
        let d = parse(
            r#"{"failover": {"a": {"ip4": "1.1.1.1", "port": 1}}}"#,
            Path::new("f"),
        )
        .unwrap();
        let p = &d.variables[0].policy;
        assert_eq!(
            (
                p.fall,
                p.rise,
                p.preempt,
                p.preempt_delay_s,
                p.all_down,
                p.timeout_ms
            ),
            (1, 1, true, 0, AllDown::First, DEFAULT_TIMEOUT_MS)
        );
    }

    #[test]
    fn other_top_level_keys_are_ignored() {
        let c = parse(
            r#"{"comment": "x", "failover": {"a": {"ip4": "1.1.1.1", "port": 1}}}"#,
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c.variables.len(), 1);
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let text = r#"{"failover": {
            "a": {"ip4": ["x"], "port": 0},
            "b-c": {"ip4": "1.1.1.1", "port": 1},
            "d": {"ip4": "1.1.1.1", "port": 1, "valuez": [1]}
        }}"#;
        let p = problems(text);
        assert_eq!(p.len(), 4, "{p:#?}");
        let msg = parse(text, Path::new("/etc/f.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/etc/f.json: 4 problems in config:\n  "),
            "{msg}"
        );
    }

    #[test]
    fn values_accept_integers_hex_addresses_and_identifiers() {
        let text = var(
            r#"{"ip4": ["1.1.1.1","1.1.1.2","1.1.1.3","1.1.1.4","1.1.1.5"], "port": 1,
                "values": [200, "0x1F", "2001:DB8:0:0::1", "wan_a", "4294967296"]}"#,
        );
        let v = &parse(&text, Path::new("f")).unwrap().variables[0];
        let rendered: Vec<_> = (0..5).map(|i| v.rendered(Family::V4, i)).collect();
        assert_eq!(
            rendered,
            ["200", "0x1F", "2001:db8::1", "wan_a", "4294967296"]
        );
    }

    #[test]
    fn ipv6_renders_canonically() {
        let text = var(r#"{"ip6": ["2001:DB8:0:0:0:0:0:2"], "port": 1}"#);
        let v = &parse(&text, Path::new("f")).unwrap().variables[0];
        assert_eq!(v.rendered(Family::V6, 0), "2001:db8::2");
    }
}
