//! One variable of the `failover` section: its candidates, port, values and the settings in
//! force for it. Pure.

use super::check;
use super::fields::{lookup, report_duplicates, unknown_key};
use super::settings::{AllDown, ApplyMode, Fallback, Policy, SETTING_KEYS, Settings, setting};
use super::values::{Family, Value, is_identifier, parse_value};
use crate::jsonc::Json;
use std::collections::HashSet;
use std::net::IpAddr;

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

/// A define's name, `NAME_v4` or `NAME_v6` (see [`Variable::define_name`]).
#[derive(Debug, Clone, Copy)]
pub struct DefineName<'a> {
    variable: &'a str,
    family: Family,
}

impl std::fmt::Display for DefineName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}_{}", self.variable, self.family.suffix())
    }
}

impl Variable {
    /// The name of the define this variable renders for `family`: `NAME_v4`, `NAME_v6`.
    pub fn define(&self, family: Family) -> String {
        self.define_name(family).to_string()
    }

    /// The same name, to be written without a String of its own.
    pub fn define_name(&self, family: Family) -> DefineName<'_> {
        DefineName {
            variable: &self.name,
            family,
        }
    }

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
        format!("port={}", self.port)
    }

    /// The fingerprint state files of earlier releases used, which also held every candidate's
    /// check and path by position: history under it is valid as long as it equals this.
    pub fn legacy_fingerprint(&self) -> String {
        format!("port={}{}", self.port, self.uplink.fingerprint())
    }

    /// How the candidate at `index` is probed, for variables with `check` or `paths`: another
    /// check or path says nothing about its old counters. `None` for plain TCP checks.
    pub fn probe_key(&self, index: usize) -> Option<String> {
        let check = self.uplink.checks.as_ref().map(|c| c[index].to_string());
        let path = self.uplink.paths.as_ref().map(|p| p[index].to_string());
        match (check, path) {
            (None, None) => None,
            (c, p) => Some(format!(
                "check={};path={}",
                c.unwrap_or_default(),
                p.unwrap_or_default()
            )),
        }
    }
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

/// The longest variable name: far above real use, and `NAME_v4_map` stays well inside nft's
/// 255-byte set names.
pub const MAX_NAME: usize = 64;

/// A variable's own keys; it also takes `check::KEYS` and the `SETTING_KEYS` it overrides.
pub const OWN_KEYS: [&str; 5] = ["ip4", "ip6", "port", "values", "comment"];

/// Every key a variable takes, for messages and suggestions.
pub fn all_keys() -> Vec<&'static str> {
    OWN_KEYS
        .iter()
        .chain(&check::KEYS)
        .chain(&SETTING_KEYS)
        .copied()
        .collect()
}

pub fn validate_variable(
    name: &str,
    body: &Json,
    global: &Settings,
    problems: &mut Vec<String>,
) -> Option<Variable> {
    // Escaped: the name comes from the file and must not break the message into lines.
    let at = format!("failover.{}", crate::text::shorten(name, 64));
    let before = problems.len();
    check_name(name, &at, problems);
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
        if !OWN_KEYS.contains(&key.as_str())
            && !check::KEYS.contains(&key.as_str())
            && !setting(&mut overrides, key, value, &at, problems)
        {
            problems.push(unknown_key(&at, key, &all_keys()));
        }
    }
    let port = port(entries, &at, problems);
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

/// The variable's name names nft defines, sets and maps: an identifier of bounded length.
fn check_name(name: &str, at: &str, problems: &mut Vec<String>) {
    if name.len() > MAX_NAME {
        problems.push(format!(
            "{at}: the variable name is {} bytes long; at most {MAX_NAME} (it names nft defines, \
             sets and maps)",
            name.len()
        ));
    } else if !is_identifier(name) {
        problems.push(format!(
            "{at}: variable name {} is not an nft identifier \
             (letters, digits and _, not starting with a digit)",
            crate::text::quoted(name, 64)
        ));
    }
}

/// `port`: the TCP port to check; not needed with a check, whose probes go to its targets.
fn port(entries: &[(String, Json)], at: &str, problems: &mut Vec<String>) -> Option<u16> {
    let checked = lookup(entries, "check").is_some() || lookup(entries, "checks").is_some();
    match lookup(entries, "port") {
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
    }
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
    let mut out = Vec::with_capacity(items.len());
    // A set, not `out.contains`: one variable may list tens of thousands of candidates.
    let mut seen = HashSet::with_capacity(items.len());
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
                if !seen.insert(addr) {
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
                "{where_}: expected {expected}, found hostname {}; hostnames are not \
                 supported, list the addresses instead",
                crate::text::quoted(text, 64)
            )),
            Err(_) if family == Family::V6 && text.contains(':') => problems.push(format!(
                "{where_}: expected {expected}, found {} (IPv6 has eight groups, or :: for a run of zero groups)",
                crate::text::quoted(text, 64)
            )),
            Err(_) => problems.push(format!("{where_}: expected {expected}, found {}", crate::text::quoted(text, 64))),
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

fn looks_like_hostname(s: &str) -> bool {
    s.contains('.')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}
