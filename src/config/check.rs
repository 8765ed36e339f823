//! The uplink keys of a variable: `check` (what to probe instead of the candidate's own
//! address), `checks` (per-candidate overrides), `paths` (which way each candidate's probes
//! leave) and `conntrack_cleanup`. Pure, like the rest of `config`.

use super::fields::{lookup, report_duplicates, unknown_key};
use super::values::{Family, Value};
use crate::jsonc::Json;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The keys this module reads from a variable's object.
pub const KEYS: [&str; 4] = ["check", "checks", "paths", "conntrack_cleanup"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Tcp,
    Icmp,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Tcp => "tcp",
            Method::Icmp => "icmp",
        }
    }
}

/// One candidate's check: up when `quorum` of the targets of its family answer within
/// `max_latency_ms` (or the timeout, if lower).
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub method: Method,
    /// `host:port` for TCP; for ICMP the port is 0 and unused.
    pub targets: Vec<SocketAddr>,
    pub quorum: usize,
    pub max_latency_ms: Option<u64>,
}

impl Check {
    /// The targets a candidate of `family` probes: only that family's.
    pub fn targets(&self, family: Family) -> impl Iterator<Item = SocketAddr> + '_ {
        self.targets
            .iter()
            .copied()
            .filter(move |t| t.is_ipv4() == (family == Family::V4))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let targets: Vec<String> = self
            .targets
            .iter()
            .map(|t| match self.method {
                Method::Tcp => t.to_string(),
                Method::Icmp => t.ip().to_string(),
            })
            .collect();
        write!(
            f,
            "{} {} quorum {}",
            self.method.name(),
            targets.join(","),
            self.quorum
        )?;
        if let Some(ms) = self.max_latency_ms {
            write!(f, " max {ms} ms")?;
        }
        Ok(())
    }
}

/// Which way a candidate's probes leave the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbePath {
    /// `SO_BINDTODEVICE`: out of this interface whatever the routing table says.
    pub interface: Option<String>,
    /// `SO_MARK`: routed by the policy-routing rules for this mark.
    pub mark: Option<u32>,
    /// Bound source address per family (also selects `ip rule from …` tables).
    pub source4: Option<IpAddr>,
    pub source6: Option<IpAddr>,
}

impl ProbePath {
    pub fn source(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.source4,
            Family::V6 => self.source6,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == ProbePath::default()
    }
}

impl fmt::Display for ProbePath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(i) = &self.interface {
            parts.push(format!("dev {i}"));
        }
        if let Some(m) = self.mark {
            parts.push(format!("mark {m}"));
        }
        for s in [self.source4, self.source6].into_iter().flatten() {
            parts.push(format!("from {s}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// Which connection-tracking entries of the old choice to delete when a define changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Entries whose `ct mark` is the old value (the ruleset saves the mark in conntrack).
    Mark,
    /// Entries whose reply comes from the old address (the old server or DNAT target).
    Address,
}

/// A variable's uplink keys after validation. All `None`: the reference behaviour.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Uplink {
    /// Per candidate index (shared by `ip4` and `ip6`, like `values`).
    pub checks: Option<Vec<Check>>,
    pub paths: Option<Vec<ProbePath>>,
    pub cleanup: Option<Cleanup>,
}

impl Uplink {
    /// What history is valid for besides the port: another check or path says nothing about
    /// the old counters.
    pub fn fingerprint(&self) -> String {
        let mut out = String::new();
        if let Some(checks) = &self.checks {
            let c: Vec<String> = checks.iter().map(Check::to_string).collect();
            out.push_str(&format!(";check={}", c.join("|")));
        }
        if let Some(paths) = &self.paths {
            let p: Vec<String> = paths.iter().map(ProbePath::to_string).collect();
            out.push_str(&format!(";path={}", p.join("|")));
        }
        out
    }
}

/// A `check` object before merging with per-candidate overrides; targets stay text until the
/// method (which decides whether they carry a port) is known.
#[derive(Default, Clone)]
struct Partial {
    method: Option<Method>,
    targets: Option<Vec<(String, String)>>,
    quorum: Option<usize>,
    max_latency_ms: Option<u64>,
}

/// Reads the uplink keys of one variable. `counts` are the lengths of its `ip4` and `ip6`
/// lists; per-candidate lists must match each non-empty one, like `values`.
pub fn parse(
    entries: &[(String, Json)],
    at: &str,
    counts: [usize; 2],
    values: Option<&[Value]>,
    problems: &mut Vec<String>,
) -> Uplink {
    let before = problems.len();
    let base = lookup(entries, "check").and_then(|v| partial(v, &format!("{at}.check"), problems));
    let n = counts.into_iter().max().unwrap_or(0);
    let aligned = |key: &str, list: &[Json], problems: &mut Vec<String>| {
        for (family, count) in Family::ALL.iter().zip(counts) {
            if count != 0 && count != list.len() {
                problems.push(format!(
                    "{at}.{key}: has {} entries but \"{}\" has {count}; {key} map 1-to-1 to each address list",
                    list.len(),
                    family.key()
                ));
            }
        }
    };
    let overrides: Option<Vec<Option<Partial>>> = match lookup(entries, "checks") {
        None => None,
        Some(Json::Array(items)) => {
            aligned("checks", items, problems);
            Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Json::Null => None,
                        other => partial(other, &format!("{at}.checks[{i}]"), problems),
                    })
                    .collect(),
            )
        }
        Some(other) => {
            problems.push(format!(
                "{at}.checks: expected a list of check objects (or null) index-aligned with the \
                 addresses, found {}",
                other.describe()
            ));
            None
        }
    };
    let checks = if base.is_none() && overrides.is_none() {
        None
    } else {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let local = overrides.as_ref().and_then(|o| o.get(i).cloned().flatten());
            let where_ = match &local {
                Some(_) => format!("{at}.checks[{i}]"),
                None => format!("{at}.check"),
            };
            let merged = merge(base.clone(), local);
            if let Some(c) = resolve(merged, &where_, i, counts, problems) {
                out.push(c);
            }
        }
        Some(out)
    };
    let paths = match lookup(entries, "paths") {
        None => None,
        Some(Json::Array(items)) => {
            aligned("paths", items, problems);
            let paths: Vec<ProbePath> = items
                .iter()
                .enumerate()
                .map(|(i, item)| path(item, &format!("{at}.paths[{i}]"), counts, problems))
                .collect();
            Some(paths)
        }
        Some(other) => {
            problems.push(format!(
                "{at}.paths: expected a list of path objects ({{\"interface\": NAME, \"mark\": N, \
                 \"source\": ADDRESS}}) index-aligned with the addresses, found {}",
                other.describe()
            ));
            None
        }
    };
    let cleanup = match lookup(entries, "conntrack_cleanup") {
        None => None,
        Some(Json::String(s)) if s == "mark" => {
            let marks = values.is_some_and(|v| v.iter().all(|v| mark_of(v).is_some()));
            if !marks {
                problems.push(format!(
                    "{at}.conntrack_cleanup: \"mark\" deletes entries by the old value as ct mark, \
                     so \"values\" must be marks (integers or 0x hex up to 32 bits)"
                ));
            }
            Some(Cleanup::Mark)
        }
        Some(Json::String(s)) if s == "address" => Some(Cleanup::Address),
        Some(other) => {
            problems.push(format!(
                "{at}.conntrack_cleanup: expected \"mark\" or \"address\", found {}",
                other.describe()
            ));
            None
        }
    };
    if problems.len() != before {
        return Uplink::default();
    }
    Uplink {
        checks,
        paths,
        cleanup,
    }
}

/// A `values` entry as a firewall mark, if it is one.
pub fn mark_of(v: &Value) -> Option<u32> {
    match v {
        Value::Integer(n) => u32::try_from(*n).ok(),
        Value::Hex(s) => u32::from_str_radix(&s[2..], 16).ok(),
        _ => None,
    }
}

fn merge(base: Option<Partial>, local: Option<Partial>) -> Partial {
    let base = base.unwrap_or_default();
    let Some(local) = local else { return base };
    Partial {
        method: local.method.or(base.method),
        targets: local.targets.or(base.targets),
        quorum: local.quorum.or(base.quorum),
        max_latency_ms: local.max_latency_ms.or(base.max_latency_ms),
    }
}

const CHECK_KEYS: &str = "targets, method, quorum, max_latency_ms";

fn partial(value: &Json, at: &str, problems: &mut Vec<String>) -> Option<Partial> {
    let Json::Object(entries) = value else {
        problems.push(format!(
            "{at}: expected an object with {CHECK_KEYS}, found {}",
            value.describe()
        ));
        return None;
    };
    report_duplicates(entries, at, problems);
    let mut p = Partial::default();
    for (key, item) in entries {
        match key.as_str() {
            "method" => match item {
                Json::String(s) if s == "tcp" => p.method = Some(Method::Tcp),
                Json::String(s) if s == "icmp" => p.method = Some(Method::Icmp),
                other => problems.push(format!(
                    "{at}.method: expected \"tcp\" or \"icmp\", found {}",
                    other.describe()
                )),
            },
            "targets" => {
                let list: Vec<(String, &Json)> = match item {
                    Json::Array(items) => items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{at}.targets[{i}]"), v))
                        .collect(),
                    single => vec![(format!("{at}.targets"), single)],
                };
                if list.is_empty() {
                    problems.push(format!("{at}.targets: empty; give at least one target"));
                }
                let mut out = Vec::new();
                for (where_, v) in list {
                    match v {
                        Json::String(s) => out.push((where_, s.clone())),
                        other => problems.push(format!(
                            "{where_}: expected a target as a string (\"HOST:PORT\" for tcp, \
                             \"HOST\" for icmp), found {}",
                            other.describe()
                        )),
                    }
                }
                p.targets = Some(out);
            }
            "quorum" => match item {
                Json::Number(n) if n.as_u64().is_some_and(|q| (1..=64).contains(&q)) => {
                    p.quorum = n.as_u64().map(|q| q as usize)
                }
                other => problems.push(format!(
                    "{at}.quorum: expected a number of targets from 1 to 64, found {}",
                    other.describe()
                )),
            },
            "max_latency_ms" => match item {
                Json::Number(n) if n.as_u64().is_some_and(|q| (1..=600_000).contains(&q)) => {
                    p.max_latency_ms = n.as_u64()
                }
                other => problems.push(format!(
                    "{at}.max_latency_ms: expected milliseconds from 1 to 600000, found {}",
                    other.describe()
                )),
            },
            _ => problems.push(unknown_key(
                at,
                key,
                &["targets", "method", "quorum", "max_latency_ms"],
            )),
        }
    }
    Some(p)
}

/// A merged check for candidate `index`, with its targets parsed for its method.
fn resolve(
    p: Partial,
    at: &str,
    index: usize,
    counts: [usize; 2],
    problems: &mut Vec<String>,
) -> Option<Check> {
    let method = p.method.unwrap_or(Method::Tcp);
    let Some(raw) = p.targets else {
        problems.push(format!(
            "{at}: missing \"targets\" for candidate {index}; give one or more \
             (\"HOST:PORT\" for tcp, \"HOST\" for icmp)"
        ));
        return None;
    };
    let before = problems.len();
    let mut targets = Vec::new();
    for (where_, text) in raw {
        let parsed = match method {
            Method::Tcp => text.parse::<SocketAddr>().ok().filter(|s| s.port() != 0),
            Method::Icmp => text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0)),
        };
        match parsed {
            Some(t) if targets.contains(&t) => {
                problems.push(format!("{where_}: {text} is listed twice"))
            }
            Some(t) => targets.push(t),
            None => problems.push(match method {
                Method::Tcp => format!(
                    "{where_}: expected \"ADDRESS:PORT\" (IPv6 as \"[ADDRESS]:PORT\") for a tcp \
                     check, found {}",
                    crate::text::quoted(&text, 64)
                ),
                Method::Icmp => format!(
                    "{where_}: expected an IP address (no port) for an icmp check, found {}",
                    crate::text::quoted(&text, 64)
                ),
            }),
        }
    }
    if problems.len() != before {
        return None;
    }
    let quorum = p.quorum.unwrap_or(1);
    let check = Check {
        method,
        targets,
        quorum,
        max_latency_ms: p.max_latency_ms,
    };
    for (family, count) in Family::ALL.into_iter().zip(counts) {
        if count == 0 {
            continue;
        }
        let have = check.targets(family).count();
        if have == 0 {
            problems.push(format!(
                "{at}.targets: no {} target, but the variable has \"{}\" candidates; probes of a \
                 family go to targets of that family",
                if family == Family::V4 { "IPv4" } else { "IPv6" },
                family.key()
            ));
        } else if quorum > have {
            problems.push(format!(
                "{at}.quorum: {quorum} but only {have} {} target(s); the candidate could never \
                 count as up",
                if family == Family::V4 { "IPv4" } else { "IPv6" }
            ));
        }
    }
    (problems.len() == before).then_some(check)
}

const PATH_KEYS: &str = "interface, mark, source";

fn path(value: &Json, at: &str, counts: [usize; 2], problems: &mut Vec<String>) -> ProbePath {
    let mut out = ProbePath::default();
    let Json::Object(entries) = value else {
        problems.push(format!(
            "{at}: expected an object with {PATH_KEYS}, found {}",
            value.describe()
        ));
        return out;
    };
    report_duplicates(entries, at, problems);
    for (key, item) in entries {
        match key.as_str() {
            "interface" => match item {
                Json::String(s) if is_interface_name(s) => out.interface = Some(s.clone()),
                other => problems.push(format!(
                    "{at}.interface: expected an interface name (1 to 15 characters, no '/', \
                     ':' or whitespace), found {}",
                    other.describe()
                )),
            },
            "mark" => match super::parse_value(item).as_ref().and_then(mark_of) {
                Some(m) if m != 0 => out.mark = Some(m),
                _ => problems.push(format!(
                    "{at}.mark: expected a firewall mark from 1 to 4294967295 (integer or 0x hex), \
                     found {}",
                    item.describe()
                )),
            },
            "source" => {
                let items: Vec<&Json> = match item {
                    Json::Array(items) => items.iter().collect(),
                    single => vec![single],
                };
                for s in items {
                    match s {
                        Json::String(text) => match text.parse::<IpAddr>() {
                            Ok(ip) => {
                                let slot = if ip.is_ipv4() {
                                    &mut out.source4
                                } else {
                                    &mut out.source6
                                };
                                if slot.replace(ip).is_some() {
                                    problems.push(format!(
                                        "{at}.source: two {} addresses; give at most one per family",
                                        if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                                    ));
                                }
                            }
                            Err(_) => problems.push(format!(
                                "{at}.source: expected an IP address, found {}",
                                crate::text::quoted(text, 64)
                            )),
                        },
                        other => problems.push(format!(
                            "{at}.source: expected an address (or one per family in a list), \
                             found {}",
                            other.describe()
                        )),
                    }
                }
                for (family, count) in Family::ALL.into_iter().zip(counts) {
                    if count != 0 && out.source(family).is_none() {
                        problems.push(format!(
                            "{at}.source: no {} address, but the variable has \"{}\" candidates \
                             whose probes need one",
                            if family == Family::V4 { "IPv4" } else { "IPv6" },
                            family.key()
                        ));
                    }
                }
            }
            _ => problems.push(unknown_key(at, key, &["interface", "mark", "source"])),
        }
    }
    out
}

/// What the kernel accepts as an interface name (`dev_valid_name`).
fn is_interface_name(s: &str) -> bool {
    (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use crate::config::{Family, parse};
    use std::path::Path;

    fn problems(body: &str) -> Vec<String> {
        let text = format!(r#"{{"failover": {{"v": {body}}}}}"#);
        match parse(&text, Path::new("f")) {
            Err(crate::config::ConfigError::Invalid(_, p)) => p,
            other => panic!("expected problems for {body}, got {other:?}"),
        }
    }

    #[test]
    fn check_paths_and_overrides_resolve_per_candidate() {
        let text = r#"{"failover": {"up": {
            "ip4": ["198.51.100.1", "203.0.113.1"], "values": [100, "0xc8"],
            "check": {"method": "icmp", "targets": ["192.0.2.10", "192.0.2.11", "2001:db8::10"], "quorum": 2},
            "checks": [null, {"max_latency_ms": 150}],
            "paths": [{"interface": "wan1", "mark": 100, "source": "198.51.100.2"}, {"mark": "0xc8"}],
            "conntrack_cleanup": "mark"
        }}}"#;
        let c = parse(text, Path::new("f")).unwrap();
        let v = &c.variables[0];
        let checks = v.uplink.checks.as_ref().unwrap();
        assert_eq!(checks[0].quorum, 2);
        assert_eq!(checks[0].max_latency_ms, None);
        assert_eq!(checks[1].max_latency_ms, Some(150));
        assert_eq!(checks[1].targets(Family::V4).count(), 2);
        let paths = v.uplink.paths.as_ref().unwrap();
        assert_eq!(paths[0].interface.as_deref(), Some("wan1"));
        assert_eq!(paths[1].mark, Some(200));
        assert_eq!(v.port, 0);
        // The variable's history is per port; each candidate's check and path key its own.
        assert_eq!(v.fingerprint(), "port=0");
        assert!(v.probe_key(0).unwrap().contains("check=icmp"));
        assert_ne!(v.probe_key(0), v.probe_key(1));
    }

    #[test]
    fn without_the_new_keys_nothing_changes() {
        let c = parse(
            r#"{"failover": {"a": {"ip4": "10.0.0.1", "port": 1}}}"#,
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c.variables[0].uplink, Default::default());
        assert_eq!(c.variables[0].fingerprint(), "port=1");
    }

    #[test]
    fn refusals_name_the_key_and_what_was_expected() {
        let cases = [
            (
                r#"{"ip4": "10.0.0.1", "check": {"targets": ["192.0.2.1"]}}"#,
                "failover.v.check.targets[0]: expected \"ADDRESS:PORT\"",
            ),
            (
                r#"{"ip4": "10.0.0.1", "check": {"method": "icmp", "targets": "192.0.2.1:80"}}"#,
                "failover.v.check.targets: expected an IP address (no port) for an icmp check",
            ),
            (
                r#"{"ip4": "10.0.0.1", "check": {"method": "udp", "targets": "192.0.2.1:80"}}"#,
                "failover.v.check.method: expected \"tcp\" or \"icmp\"",
            ),
            (
                r#"{"ip4": "10.0.0.1", "check": {"targets": ["192.0.2.1:80"], "quorum": 2}}"#,
                "failover.v.check.quorum: 2 but only 1 IPv4 target(s)",
            ),
            (
                r#"{"ip4": "10.0.0.1", "check": {"targets": ["[2001:db8::1]:80"]}}"#,
                "failover.v.check.targets: no IPv4 target",
            ),
            (
                r#"{"ip4": "10.0.0.1", "check": {"targets": "192.0.2.1:80", "timeout": 1}}"#,
                "failover.v.check: unknown key \"timeout\"",
            ),
            (
                r#"{"ip4": "10.0.0.1", "checks": [{"quorum": 1}]}"#,
                "failover.v.checks[0]: missing \"targets\"",
            ),
            (
                r#"{"ip4": ["10.0.0.1", "10.0.0.2"], "check": {"targets": "192.0.2.1:80"}, "checks": [null]}"#,
                "failover.v.checks: has 1 entries but \"ip4\" has 2",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "paths": [{"interface": "a/b"}]}"#,
                "failover.v.paths[0].interface: expected an interface name",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "paths": [{"mark": -1}]}"#,
                "failover.v.paths[0].mark: expected a firewall mark",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "paths": [{"source": "2001:db8::1"}]}"#,
                "failover.v.paths[0].source: no IPv4 address",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "paths": [{"gateway": "10.0.0.9"}]}"#,
                "failover.v.paths[0]: unknown key \"gateway\"",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "paths": {"mark": 1}}"#,
                "failover.v.paths: expected a list",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "conntrack_cleanup": "mark"}"#,
                "failover.v.conntrack_cleanup: \"mark\" deletes entries by the old value",
            ),
            (
                r#"{"ip4": "10.0.0.1", "port": 1, "conntrack_cleanup": true}"#,
                "failover.v.conntrack_cleanup: expected \"mark\" or \"address\"",
            ),
        ];
        for (body, want) in cases {
            let p = problems(body);
            assert_eq!(p.len(), 1, "{body}: {p:#?}");
            assert!(
                p[0].contains(want),
                "{body}\n  got: {}\n  want: {want}",
                p[0]
            );
        }
    }

    #[test]
    fn port_stays_required_without_a_check() {
        let p = problems(r#"{"ip4": "10.0.0.1", "paths": [{"mark": 1}]}"#);
        assert!(p[0].contains("missing \"port\""), "{p:?}");
    }
}
