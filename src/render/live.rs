//! What live mode's objects look like: one set and one map per live define, declared in
//! the include and filled from its defines. Pure; `apply::live` turns them into nftables
//! transactions.

use super::Define;
use crate::config::{ApplyMode, Config, Family, Value};
use crate::model::Choice;
use std::fmt::Write;
use std::net::IpAddr;

/// The table that holds every object this tool updates live. Other tables cannot reference
/// its sets (nft sets are per table), so rules that use them are chains in this table.
pub const TABLE: &str = "nftables_failover";

/// The comment that opens live mode's block in the include.
pub const LIVE_MARKER: &str =
    "# Live mode: nftables-failover updates these elements in place (README, \"Live mode\").";
/// What a live define's value is, which fixes the type of its set and map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ipv4,
    Ipv6,
    Mark,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ipv4 => "ipv4_addr",
            Kind::Ipv6 => "ipv6_addr",
            Kind::Mark => "mark",
        }
    }
}

/// One live define: `NAME_v4` of a variable in live mode, for a family it has candidates in.
/// It owns a set `NAME_v4` (addresses only: `ip daddr @NAME_v4`) and a map `NAME_v4_map` from
/// the variable's port to the value (`dnat ip to tcp dport map @NAME_v4_map`,
/// `meta mark set tcp dport map @NAME_v4_map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub define: String,
    pub port: u16,
    pub kind: Kind,
    pub value: String,
}

impl Object {
    pub fn has_set(&self) -> bool {
        self.kind != Kind::Mark
    }

    pub fn map_name(&self) -> String {
        format!("{}_map", self.define)
    }
}

/// A mark as live mode stores it: decimal or `0x` hex, 32 bits.
pub fn parse_mark(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The live defines of a run, in config order. Pure.
pub fn objects(config: &Config, choices: &[Choice]) -> Vec<Object> {
    let mut out = Vec::new();
    for c in choices {
        let var = &config.variables[c.variable];
        if var.policy.apply != ApplyMode::Live || var.addrs(c.family).is_empty() {
            continue;
        }
        let kind = match (&var.values, c.family) {
            (Some(values), _) => match values.first() {
                Some(Value::Address(IpAddr::V6(_))) => Kind::Ipv6,
                Some(Value::Address(IpAddr::V4(_))) => Kind::Ipv4,
                _ => Kind::Mark,
            },
            (None, Family::V4) => Kind::Ipv4,
            (None, Family::V6) => Kind::Ipv6,
        };
        out.push(Object {
            define: var.define(c.family),
            port: var.port,
            kind,
            value: c.rendered.clone(),
        });
    }
    out
}

/// The include's declaration of the live objects, filled from the defines above it. The
/// flushes make a reload without `flush ruleset` converge too, instead of adding elements.
pub fn declarations(objects: &[Object]) -> String {
    if objects.is_empty() {
        return String::new();
    }
    let mut decl = String::new();
    let mut fill = String::new();
    for o in objects {
        let (d, t) = (&o.define, o.kind.name());
        if o.has_set() {
            let _ = write!(decl, "\tset {d} {{\n\t\ttype {t}\n\t}}\n");
            let _ = writeln!(fill, "flush set inet {TABLE} {d}");
            let _ = writeln!(fill, "add element inet {TABLE} {d} {{ ${d} }}");
        }
        let m = o.map_name();
        let _ = write!(decl, "\tmap {m} {{\n\t\ttype inet_service : {t}\n\t}}\n");
        let _ = writeln!(fill, "flush map inet {TABLE} {m}");
        let _ = writeln!(fill, "add element inet {TABLE} {m} {{ {} : ${d} }}", o.port);
    }
    format!(
        "\n{LIVE_MARKER}\n\
         table inet {TABLE} {{\n{decl}}}\n{fill}"
    )
}

/// Whether going from `old` to `new` changes only the values of live defines, so that a
/// transaction on the live objects brings the kernel where a reload of `new` would.
pub fn only_values_changed(old: &[u8], new: &[u8], objects: &[Object]) -> bool {
    let mask = |text: &[u8]| -> Option<String> {
        let text = std::str::from_utf8(text).ok()?;
        Some(
            text.lines()
                .map(|l| match Define::parse(l) {
                    Some(d) if objects.iter().any(|o| o.define == d.name) => {
                        Define::new(d.name, "*").to_string()
                    }
                    _ => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    mask(old).is_some() && mask(old) == mask(new)
}

/// The declaration part of live mode's block in an include (the table with its sets and maps),
/// empty if it has none.
fn declared(include: &[u8]) -> Vec<&[u8]> {
    let head = format!("table inet {TABLE} {{");
    include
        .split(|&b| b == b'\n')
        .skip_while(|l| *l != head.as_bytes())
        .take_while(|l| *l != b"}")
        .collect()
}

/// Whether the sets and maps an include declares differ from those of the include in effect
/// (a variable gained or lost `values`, became live, or left live mode). Then the running
/// objects cannot take the new elements, and the staged check must redeclare them.
pub fn shape_changed(in_effect: Option<&[u8]>, new: &[u8]) -> bool {
    declared(in_effect.unwrap_or_default()) != declared(new)
}

/// `objects` with the values an include (the one in effect) gives their defines; `None` if it
/// lacks one of them.
pub fn with_values_of(objects: &[Object], include: &[u8]) -> Option<Vec<Object>> {
    let text = std::str::from_utf8(include).ok()?;
    let value = |define: &str| {
        text.lines().find_map(|l| {
            let d = Define::parse(l)?;
            (d.name == define).then(|| d.value.trim().to_string())
        })
    };
    objects
        .iter()
        .map(|o| {
            Some(Object {
                value: value(&o.define)?,
                ..o.clone()
            })
        })
        .collect()
}

/// A live object on port 443, for tests here and in `apply::live`.
#[cfg(test)]
pub fn obj(define: &str, kind: Kind, value: &str) -> Object {
    Object {
        define: define.into(),
        port: 443,
        kind,
        value: value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_value_changes_of_live_defines_go_live() {
        let objs = [obj("web_v4", Kind::Ipv4, "192.0.2.11")];
        let old = b"define web_v4 = 192.0.2.10\ndefine db_v4 = 192.0.2.20\n";
        let live = b"define web_v4 = 192.0.2.11\ndefine db_v4 = 192.0.2.20\n";
        let reload = b"define web_v4 = 192.0.2.10\ndefine db_v4 = 192.0.2.21\n";
        assert!(only_values_changed(old, live, &objs));
        assert!(!only_values_changed(old, reload, &objs));
        assert!(!only_values_changed(old, live, &[]));
    }

    #[test]
    fn values_in_effect_come_from_the_include_defines() {
        let objs = [
            obj("web_v4", Kind::Ipv4, "192.0.2.11"),
            obj("up_v4", Kind::Mark, "201"),
        ];
        let old = b"define web_v4 = 192.0.2.10\ndefine up_v4 = 200\ndefine web_v6 = 2001:db8::1\n";
        let back = with_values_of(&objs, old).unwrap();
        assert_eq!(back[0], obj("web_v4", Kind::Ipv4, "192.0.2.10"));
        assert_eq!(back[1], obj("up_v4", Kind::Mark, "200"));
        assert!(with_values_of(&objs, b"define web_v4 = 192.0.2.10\n").is_none());
    }

    #[test]
    fn marks_parse_as_32_bit_integers() {
        assert_eq!(parse_mark("200"), Some(200));
        assert_eq!(parse_mark("0xC8"), Some(200));
        assert_eq!(parse_mark("4294967296"), None);
    }

    #[test]
    fn a_changed_declaration_is_a_shape_change_a_changed_value_is_not() {
        let marks = [obj("svc_v4", Kind::Mark, "200")];
        let addrs = [obj("svc_v4", Kind::Ipv4, "127.0.0.5")];
        let with = |objs: &[Object]| format!("define svc_v4 = x\n{}", declarations(objs));
        let old = with(&marks);
        let other_value = with(&[obj("svc_v4", Kind::Mark, "201")]);
        assert!(!shape_changed(Some(old.as_bytes()), other_value.as_bytes()));
        assert!(shape_changed(Some(old.as_bytes()), with(&addrs).as_bytes()));
        assert!(shape_changed(None, old.as_bytes()));
        assert!(shape_changed(
            Some(old.as_bytes()),
            b"define svc_v4 = 200\n"
        ));
        assert!(!shape_changed(None, b"define svc_v4 = 200\n"));
    }
}
