//! The text of the failover include and of the staged check config. Pure.

pub mod live;

use crate::config::{self, Config};
use crate::jsonc::Json;
use crate::model::Choice;
use live::LIVE_MARKER;
use md5::{Digest, Md5};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::path::Path;

const INCLUDE_TEMPLATE: &str = include_str!("../../templates/failover.nft");
const STAGED_MAIN_TEMPLATE: &str = include_str!("../../templates/staged-main.nft");

/// The include file: the header, then `define NAME_v4 = …` and `define NAME_v6 = …` per variable
/// in config order. Nothing in it depends on time, so equal health renders equal bytes.
///
/// A rendered value can come from the config, the state file or the include on disk. Whatever
/// its source, a define whose name is not an identifier or whose value is not a [`is_literal`]
/// is left out rather than written: the include then cannot carry nft syntax, and a ruleset
/// that uses the missing define fails the staged `nft -c`, so nothing is installed.
pub fn include(config: &Config, choices: &[Choice]) -> String {
    let mut defines = String::new();
    for c in choices {
        let var = &config.variables[c.variable];
        if config::is_identifier(&var.name) && is_literal(&c.rendered) {
            let define = Define::new(var.define_name(c.family), c.rendered.as_str());
            let _ = writeln!(defines, "{define}");
        }
    }
    defines.push_str(&live::declarations(&live::objects(config, choices)));
    INCLUDE_TEMPLATE.replace("{defines}\n", &defines)
}

/// Whether `s` is one of the literals a config may render, in the form it renders them: a
/// non-negative integer, `0x` and up to 16 hex digits, an IPv4 address, a canonical IPv6
/// address (RFC 5952) or a plain identifier `[A-Za-z_][A-Za-z0-9_]*`. None of these can hold a
/// space, quote, `;`, brace or newline, so a define with such a value stays one nft token.
pub fn is_literal(s: &str) -> bool {
    // The config's own parser, plus a round trip: "+1", "007" or "2001:DB8::1" parse, but are
    // never what a validated config renders.
    config::parse_value(&Json::String(s.to_string())).is_some_and(|v| v.to_string() == s)
}

/// Checks that `text` is an include as [`include`] writes it: the header lines of the template,
/// then only `define NAME_v4 = LITERAL` / `define NAME_v6 = LITERAL` lines, each name once, and
/// optionally live mode's table of sets and maps filled from those defines (see
/// [`live_block_line`]). The error names the first offending line, for the caller to log
/// before refusing the text.
pub fn validate_include(text: &str) -> Result<(), String> {
    let (head, tail) = INCLUDE_TEMPLATE
        .split_once("{defines}\n")
        .expect("the include template has a {defines} line");
    let body = text
        .strip_prefix(head)
        .ok_or("it does not start with the failover include header")?;
    let body = body
        .strip_suffix(tail)
        .ok_or("it does not end with the failover include footer")?;
    if !body.is_empty() && !body.ends_with('\n') {
        return Err("its last line is not terminated by a newline".into());
    }
    let first = head.lines().count() + 1;
    let mut seen = HashSet::new();
    let mut lines = body.lines().enumerate();
    for (i, line) in lines.by_ref() {
        let at = first + i;
        if line.is_empty() {
            // Only live mode's block may follow the defines, after one empty line.
            match lines.next() {
                Some((_, LIVE_MARKER)) => break,
                _ => {
                    return Err(format!(
                        "line {at}: an empty line not followed by live mode's table"
                    ));
                }
            }
        }
        let Some((name, _)) = define_line(line) else {
            return Err(format!(
                "line {at}: {line:?} is not `define NAME_v4 = LITERAL` or `define NAME_v6 = LITERAL`"
            ));
        };
        if !seen.insert(name) {
            return Err(format!("line {at}: {name} is defined twice"));
        }
    }
    for (i, line) in lines {
        if !live_block_line(line, &seen) {
            return Err(format!(
                "line {}: {line:?} is not a line of live mode's table as nftables-failover writes it",
                first + i
            ));
        }
    }
    Ok(())
}

/// One line of live mode's block, as `apply::live::declarations` writes it. Every part that
/// varies is an identifier, a port or a set type, and every `$NAME` is a define above, so the
/// block can only declare and fill the tool's own table.
fn live_block_line(line: &str, defines: &HashSet<&str>) -> bool {
    use live::TABLE;
    let ident = |s: &str| config::is_identifier(s);
    let typ = |s: &str| matches!(s, "ipv4_addr" | "ipv6_addr" | "mark");
    let var = |s: &str| s.strip_prefix('$').is_some_and(|d| defines.contains(d));
    let words: Vec<&str> = line.split(' ').collect();
    match (line.strip_prefix('\t'), words.as_slice()) {
        (None, ["table", "inet", t, "{"]) => *t == TABLE,
        _ if line == "}" => true,
        (Some("}"), _) => true,
        (Some(inner), _) => {
            let w: Vec<&str> = inner.trim_start_matches('\t').split(' ').collect();
            match w.as_slice() {
                ["set" | "map", name, "{"] => ident(name),
                ["type", t] => typ(t),
                ["type", "inet_service", ":", t] => typ(t),
                _ => false,
            }
        }
        (None, ["flush", "set" | "map", "inet", t, name]) => *t == TABLE && ident(name),
        (None, ["add", "element", "inet", t, name, "{", v, "}"]) => {
            *t == TABLE && ident(name) && var(v)
        }
        (None, ["add", "element", "inet", t, name, "{", port, ":", v, "}"]) => {
            *t == TABLE && ident(name) && port.parse::<u16>().is_ok() && var(v)
        }
        _ => false,
    }
}

/// One `define NAME = VALUE` line of an include: how [`include`] writes it and how it is read
/// back (the value as written, untrimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Define<'a, N = &'a str> {
    pub name: N,
    pub value: &'a str,
}

impl<'a, N: std::fmt::Display> Define<'a, N> {
    pub fn new(name: N, value: &'a str) -> Define<'a, N> {
        Define { name, value }
    }
}

impl<'a> Define<'a> {
    /// The line's name and value, if it is a define line.
    pub fn parse(line: &'a str) -> Option<Define<'a>> {
        let (name, value) = line.strip_prefix("define ")?.split_once(" = ")?;
        Some(Define { name, value })
    }
}

impl<N: std::fmt::Display> std::fmt::Display for Define<'_, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "define {} = {}", self.name, self.value)
    }
}

/// `define NAME_vX = LITERAL` exactly as [`include`] writes it, split into name and literal.
fn define_line(line: &str) -> Option<(&str, &str)> {
    let Define { name, value } = Define::parse(line)?;
    let stem = name
        .strip_suffix("_v4")
        .or_else(|| name.strip_suffix("_v6"))?;
    (config::is_identifier(stem) && is_literal(value)).then_some((name, value))
}

/// The staged main config: includes the candidate include first, then the other files.
/// Paths are quoted for nft; a path nft cannot quote is refused by the caller.
///
/// With `redeclare` (the live objects change shape, see [`live::shape_changed`]) the check
/// first drops this tool's table inside the checked transaction: nft checks a batch against
/// the running ruleset, which still holds the old types, while the reload that follows starts
/// from `flush ruleset`. The check aborts its transaction, so nothing live is touched.
pub fn staged_main(candidate: &Path, includes: &[&Path], redeclare: bool) -> String {
    let mut lines = String::new();
    for p in includes {
        let _ = writeln!(lines, "include \"{}\"", p.display());
    }
    let preamble = if redeclare {
        format!(
            "# The live objects change type: checked as if redeclared.\n\
             table inet {t} {{}}\ndelete table inet {t}\n",
            t = live::TABLE
        )
    } else {
        String::new()
    };
    STAGED_MAIN_TEMPLATE
        .replace("{redeclare}", &preamble)
        .replace("{candidate}", &candidate.display().to_string())
        .replace("{includes}\n", &lines)
}

/// Whether nft can include this path: its include statement takes a double-quoted string
/// with no escapes.
pub fn includable(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|s| !s.contains(['"', '\n', '\r']))
}

/// Hex MD5 of a text, as the reference addon compares old and new includes.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `define NAME = VALUE` pairs of an include rendered earlier (by this tool or the Python
/// addon): to log what changed, and to know which candidate is in effect. Values are compared as
/// values, not as text: each is parsed and returned in the canonical form this tool renders
/// (`2001:DB8::2:3`, as the Python addon copies it from the config, is `2001:db8::2:3`). Only
/// identifier names with values that parse as literals are returned, and only in [`is_literal`]
/// form, so whatever else the file on disk holds is never carried into a new include.
pub fn parse_defines(text: &str) -> HashMap<&str, Cow<'_, str>> {
    text.lines()
        .filter_map(Define::parse)
        .map(|d| (d.name.trim(), d.value.trim()))
        .filter(|(k, _)| config::is_identifier(k))
        .filter_map(|(k, v)| Some((k, canonical(v)?)))
        .collect()
}

/// `text` as this tool renders the same literal, if it is one.
fn canonical(text: &str) -> Option<Cow<'_, str>> {
    if is_literal(text) {
        return Some(Cow::Borrowed(text));
    }
    let value = config::parse_value(&Json::String(text.to_string()))?;
    let shown = value.to_string();
    is_literal(&shown).then_some(Cow::Owned(shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{self, Family};
    use crate::model::{self, DownReason, Health};
    use crate::select;
    use std::time::Duration;

    /// Renders the shipped example config with every candidate at `up_index` up and all
    /// others refused (`None`: all down).
    fn render_example(up_index: Option<usize>) -> String {
        let text = include_str!("../../etc/nftables.d/addons/failover.json");
        let config = config::parse(text, Path::new("failover.json")).unwrap();
        let mut results = model::empty_results(&config);
        for per_variable in results.iter_mut() {
            for f in Family::ALL {
                for (i, slot) in per_variable[f].iter_mut().enumerate() {
                    *slot = Some(if Some(i) == up_index {
                        Health::Up {
                            latency: Duration::from_millis(1),
                        }
                    } else {
                        Health::Down(DownReason::Refused)
                    });
                }
            }
        }
        let empty = Default::default();
        let inputs = select::Inputs::new(&config, &empty, &HashMap::<&str, &str>::new());
        let (choices, _) = select::decide(&config, &results, &inputs, 0);
        include(&config, &choices)
    }

    #[test]
    fn shipped_example_matches_golden_files() {
        let cases = [
            (
                Some(0),
                include_str!("../../tests/golden/example-all-up.nft"),
            ),
            (
                Some(1),
                include_str!("../../tests/golden/example-first-down.nft"),
            ),
            (
                None,
                include_str!("../../tests/golden/example-all-down.nft"),
            ),
        ];
        for (up, golden) in cases {
            assert_eq!(render_example(up), golden, "candidate {up:?} up");
        }
    }

    #[test]
    fn md5_matches_known_vector() {
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn staged_main_lists_candidate_first() {
        let text = staged_main(
            Path::new("/run/x/failover.nft"),
            &[
                Path::new("/etc/nftables.d/addons/dns.nft"),
                Path::new("/etc/nftables.d/a.nft"),
            ],
            false,
        );
        assert!(!text.contains("delete table"));
        let includes: Vec<_> = text.lines().filter(|l| l.starts_with("include")).collect();
        assert_eq!(
            includes,
            [
                "include \"/run/x/failover.nft\"",
                "include \"/etc/nftables.d/addons/dns.nft\"",
                "include \"/etc/nftables.d/a.nft\"",
            ]
        );
    }

    #[test]
    fn a_shape_change_redeclares_the_live_table_before_the_candidate() {
        let text = staged_main(Path::new("/run/x/failover.nft"), &[], true);
        let lines: Vec<_> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "table inet nftables_failover {}",
                "delete table inet nftables_failover",
                "include \"/run/x/failover.nft\"",
            ]
        );
    }

    #[test]
    fn includable_refuses_quotes_and_newlines() {
        assert!(includable(Path::new("/etc/nftables.d/a b.nft")));
        assert!(!includable(Path::new("/etc/x\".nft")));
        assert!(!includable(Path::new("/etc/x\n.nft")));
    }

    #[test]
    fn parse_defines_reads_rendered_text() {
        let text = "# header\n\ndefine a_v4 = 10.0.0.1\ndefine a_v6 = ::\n";
        let d = parse_defines(text);
        assert_eq!(d["a_v4"], "10.0.0.1");
        assert_eq!(d["a_v6"], "::");
    }

    #[test]
    fn is_literal_takes_exactly_the_rendered_forms() {
        for ok in [
            "0",
            "200",
            "18446744073709551615",
            "0x1F",
            "0xffffffffffffffff",
            "10.0.0.1",
            "0.0.0.0",
            "::",
            "2001:db8::1",
            "wan_a",
            "_",
            "A1",
        ] {
            assert!(is_literal(ok), "{ok:?}");
        }
        for bad in [
            "",
            " 1",
            "1 ",
            "+1",
            "007",
            "-1",
            "18446744073709551616",
            "0x",
            "0x12345678901234567",
            "0xg",
            "2001:DB8::1",
            "2001:db8:0::1",
            "10.0.0.1/24",
            "1; flush ruleset",
            "a\n table x {}",
            "a\"b",
            "}",
            "a-b",
            "ä",
            "1.5",
        ] {
            assert!(!is_literal(bad), "{bad:?}");
        }
    }

    #[test]
    fn include_leaves_out_values_that_are_not_literals() {
        let config = config::parse(
            r#"{"failover": {"a": {"ip4": "10.0.0.1", "port": 1}}}"#,
            Path::new("f"),
        )
        .unwrap();
        let choice = |family, rendered: &str| Choice {
            variable: 0,
            family,
            index: None,
            reason: None,
            rendered: rendered.into(),
            effective: None,
            effective_index: None,
            drained: Vec::new(),
            preferred_gone: None,
        };
        let text = include(
            &config,
            &[
                choice(Family::V4, "10.0.0.1; flush ruleset"),
                choice(Family::V6, "::"),
            ],
        );
        assert!(!text.contains("flush"), "{text}");
        assert!(text.ends_with("\ndefine a_v6 = ::\n"), "{text}");
        assert_eq!(validate_include(&text), Ok(()));
    }

    #[test]
    fn validate_include_accepts_live_mode_block_and_nothing_else_after_the_defines() {
        let config = config::parse(
            r#"{"failover": {
                "web": {"ip4": ["192.0.2.1", "192.0.2.2"], "port": 443, "apply": "live"},
                "mark": {"ip4": ["192.0.2.1"], "port": 80, "values": [200], "apply": "live"}
            }}"#,
            Path::new("f"),
        )
        .unwrap();
        let results = crate::model::empty_results(&config);
        let empty = Default::default();
        let inputs = crate::select::Inputs::new(&config, &empty, &HashMap::<&str, &str>::new());
        let (choices, _) = crate::select::decide(&config, &results, &inputs, 0);
        let text = include(&config, &choices);
        assert!(text.contains("table inet nftables_failover {"), "{text}");
        assert_eq!(validate_include(&text), Ok(()), "{text}");
        for (from, to) in [
            (
                "flush set inet nftables_failover web_v4\n",
                "flush ruleset\n",
            ),
            ("{ $web_v4 }", "{ 10.0.0.1 }"),
            ("{ $web_v4 }", "{ $other_v4 }"),
            (
                "flush map inet nftables_failover web_v4_map",
                "flush map inet filter web_v4_map",
            ),
            ("\t\ttype ipv4_addr", "\t\ttype ipv4_addr; flags interval"),
            ("table inet nftables_failover {", "table inet filter {"),
        ] {
            let bad = text.replacen(from, to, 1);
            assert_ne!(bad, text, "{from:?} not in {text}");
            assert!(validate_include(&bad).is_err(), "accepted:\n{bad}");
        }
    }

    #[test]
    fn validate_include_accepts_rendered_text_and_names_the_bad_line() {
        let good = render_example(Some(0));
        assert_eq!(validate_include(&good), Ok(()));
        assert_eq!(validate_include(&render_example(None)), Ok(()), "all down");
        let bad = [
            (format!("{good}define x_v4 = 1; flush ruleset\n"), "line "),
            (format!("{good}flush ruleset\n"), "\"flush ruleset\""),
            (format!("{good}define x_v4 = 1"), "not terminated"),
            (format!("{good}define x = 1\n"), "line "),
            (format!("{good}define x_v4 =  1\n"), "line "),
            (format!("{good}\n"), "line "),
            (good.replacen("# Auto", "# auto", 1), "header"),
            (format!("{good}{}\n", good.lines().last().unwrap()), "twice"),
        ];
        for (text, expected) in bad {
            let err = validate_include(&text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn parse_defines_drops_what_include_would_not_write() {
        let text = "define a_v4 = 10.0.0.1\ndefine b_v4 = 1; flush ruleset\ndefine c d = 1\n\
                    define e_v4 = {1}\ndefine f_v6 = 2001:DB8::1\ndefine g_v4 = 007\n";
        let d = parse_defines(text);
        // Values in another spelling of the same literal come back canonical.
        assert_eq!(
            d,
            HashMap::from([
                ("a_v4", "10.0.0.1".into()),
                ("f_v6", "2001:db8::1".into()),
                ("g_v4", "7".into())
            ])
        );
    }
}
