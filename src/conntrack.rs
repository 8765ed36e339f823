//! Conntrack clean-up after a switch (`conntrack_cleanup`): deletes only the tracked
//! connections of the old choice, never the whole table, so flows pinned to a dead uplink or
//! server start over on the new one while every other connection lives on.
//!
//! Runs the `conntrack` tool directly, not through sudo: deleting entries needs CAP_NET_ADMIN,
//! which the process holds only where the admin granted it (README, "Privileges for uplink
//! checks"). A sudo rule would need the mark or address as a variable argument.

use crate::command::Runner;
use crate::config::check::{Cleanup, mark_of};
use crate::config::{Family, Variable, parse_value};
use crate::model::Choice;
use std::ffi::OsString;
use std::net::IpAddr;

/// Where Debian's `conntrack` package installs the tool.
pub const CONNTRACK: &str = "/usr/sbin/conntrack";

/// Which entries belong to the old choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `ct mark` equal to the old value.
    Mark(u32),
    /// Replies from the old address: the old server (also behind DNAT) or destination.
    ReplySource(IpAddr),
}

impl Filter {
    fn args(&self, family: Family) -> Vec<String> {
        let family = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        let mut args = vec!["-D".to_string(), "-f".into(), family.into()];
        match self {
            Filter::Mark(m) => args.extend(["--mark".into(), m.to_string()]),
            Filter::ReplySource(a) => args.extend(["--reply-src".into(), a.to_string()]),
        }
        args
    }
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Filter::Mark(m) => write!(f, "ct mark {m}"),
            Filter::ReplySource(a) => write!(f, "replies from {a}"),
        }
    }
}

/// The entries to delete for a changed define, if its variable asks for a clean-up and the
/// old value was one of its candidates (or, by address, an address at all). `old_up`: the old
/// candidate still counts as up (a failback or preemption): then its connections work and are
/// left alone. Pure.
pub fn filter(var: &Variable, choice: &Choice, old_up: bool) -> Option<Filter> {
    let cleanup = var.uplink.cleanup?;
    let old = choice.effective.as_deref()?;
    if old == choice.rendered || old_up {
        return None;
    }
    match cleanup {
        Cleanup::Mark => {
            let value = parse_value(&crate::jsonc::Json::String(old.to_string()))?;
            mark_of(&value).filter(|m| *m != 0).map(Filter::Mark)
        }
        Cleanup::Address => {
            let addr = match choice.effective_index {
                Some(i) => var.addrs(choice.family).get(i).copied(),
                None => old.parse().ok(),
            }?;
            (!addr.is_unspecified()).then_some(Filter::ReplySource(addr))
        }
    }
}

/// Deletes the matching entries of `family`; returns how many were deleted. conntrack runs as
/// the service itself (its drop-in grants CAP_NET_ADMIN), supervised like every other child:
/// bounded by `--command-timeout`, stopped by SIGTERM, its output capped.
pub fn delete(runner: &Runner, filter: &Filter, family: Family) -> Result<u64, String> {
    let mut argv: Vec<OsString> = vec![CONNTRACK.into()];
    argv.extend(filter.args(family).into_iter().map(OsString::from));
    // It exits 1 when nothing matched, but still says "0 flow entries".
    let text = match runner.direct().messages("conntrack clean-up", &argv) {
        Ok(text) => text,
        Err(e) if e.status.starts_with("exited with status") => e.output.clone(),
        Err(e) if e.status.contains("could not be started") => {
            return Err(format!("{e} (Debian package conntrack)"));
        }
        Err(e) => return Err(e.to_string()),
    };
    // "conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted."
    let count = text
        .split("): ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    match count {
        Some(n) => Ok(n),
        None => {
            let hint = if text.contains("Operation not permitted") {
                "; deleting conntrack entries needs CAP_NET_ADMIN (README, \"Privileges for \
                 uplink checks\")"
            } else {
                ""
            };
            let said = if text.trim().is_empty() {
                "it said nothing"
            } else {
                text.trim()
            };
            Err(format!(
                "`{}` failed: {said}{hint}",
                crate::command::shown(&argv)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    fn choice(effective: Option<&str>, index: Option<usize>, rendered: &str) -> Choice {
        Choice {
            variable: 0,
            family: Family::V4,
            index: Some(0),
            reason: None,
            rendered: rendered.into(),
            effective: effective.map(String::from),
            effective_index: index,
            drained: Vec::new(),
            preferred_gone: None,
        }
    }

    #[test]
    fn only_the_old_choice_is_named() {
        let c = parse(
            r#"{"failover": {
                "m": {"ip4": ["198.51.100.1", "198.51.100.9"], "values": [1, "0x2"], "port": 1, "conntrack_cleanup": "mark"},
                "a": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1, "conntrack_cleanup": "address"},
                "n": {"ip4": ["10.0.0.1", "10.0.0.2"], "port": 1}
            }}"#,
            Path::new("f"),
        )
        .unwrap();
        let [m, a, n] = &c.variables[..] else {
            panic!()
        };
        assert_eq!(
            filter(m, &choice(Some("0x2"), Some(1), "1"), false),
            Some(Filter::Mark(2))
        );
        assert_eq!(
            filter(m, &choice(Some("1"), Some(0), "1"), false),
            None,
            "unchanged"
        );
        assert_eq!(
            filter(m, &choice(None, None, "1"), false),
            None,
            "first run"
        );
        assert_eq!(
            filter(a, &choice(Some("10.0.0.1"), Some(0), "10.0.0.2"), false),
            Some(Filter::ReplySource("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            filter(a, &choice(Some("0.0.0.0"), None, "10.0.0.2"), false),
            None
        );
        assert_eq!(
            filter(n, &choice(Some("10.0.0.1"), Some(0), "10.0.0.2"), false),
            None,
            "off"
        );
        assert_eq!(
            filter(m, &choice(Some("0x2"), Some(1), "1"), true),
            None,
            "failback: the old uplink works"
        );
        assert_eq!(
            Filter::Mark(2).args(Family::V4),
            ["-D", "-f", "ipv4", "--mark", "2"]
        );
    }
}
