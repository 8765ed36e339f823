//! The config file: `failover.json` in the reference addon's format, validated strictly.
//!
//! Everything here is pure: text in, a `Config` or a list of every problem out. Whatever passes
//! validation is safe to print into an nftables file verbatim: names are nft identifiers and values
//! are integers, addresses or identifiers, so no config can inject nft syntax.
//!
//! This file puts the sections together; each section parses in its own file, and none of them
//! imports this one: [`fields`] (shared helpers), [`values`] (families and literals),
//! [`settings`], [`variables`], [`check`] (uplink checks and paths), [`publish`].

pub mod check;
pub mod fields;
pub mod publish;
pub mod settings;
pub mod values;
pub mod variables;

pub use settings::{AllDown, ApplyMode, DEFAULT_TIMEOUT_MS, Fallback, Policy, Settings};
pub use values::{Family, PerFamily, Value, is_identifier, parse_value};
pub use variables::Variable;

use crate::jsonc::{self, Json};
use fields::{lookup, report_duplicates, unknown_key};
use settings::{SETTING_KEYS, setting};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use variables::validate_variable;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub settings: Settings,
    pub variables: Vec<Variable>,
    /// `on_change`, `metrics`, `mqtt` from the top-level settings (see [`publish`]).
    pub publish: publish::Publish,
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
                for p in problems.iter().take(MAX_SHOWN) {
                    write!(f, "\n  {p}")?;
                }
                if n > MAX_SHOWN {
                    write!(f, "\n  … and {} more", n - MAX_SHOWN)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

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
    for (key, _) in top {
        if let Some(problem) = misplaced_top_level_key(key) {
            problems.push(problem);
        }
    }
    let mut publish = publish::Publish::default();
    let settings = match lookup(top, "settings") {
        Some(Json::Object(entries)) => {
            report_duplicates(entries, "settings", problems);
            let mut settings = Settings::default();
            for (key, value) in entries {
                if !publish::setting(&mut publish, key, value, "settings", problems)
                    && !setting(&mut settings, key, value, "settings", problems)
                {
                    let known: Vec<&str> =
                        SETTING_KEYS.iter().chain(&publish::KEYS).copied().collect();
                    problems.push(unknown_key("settings", key, &known));
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
    check_run_budget(&variables, &publish, problems);
    Some(Config {
        settings,
        variables,
        publish,
    })
}

/// The slowest check, the hook and the MQTT publish happen one after the other in a run, which
/// the shipped unit ends at 60 s: together they must leave room for the lock and the apply.
fn check_run_budget(
    variables: &[Variable],
    publish: &publish::Publish,
    problems: &mut Vec<String>,
) {
    let slowest = variables.iter().max_by_key(|v| v.policy.timeout_ms);
    let check = slowest.map_or(0, |v| v.policy.timeout_ms);
    let hook = publish
        .on_change
        .as_ref()
        .map_or(0, |h| h.timeout.as_millis() as u64);
    let mqtt = publish
        .mqtt
        .as_ref()
        .map_or(0, |m| m.timeout.as_millis() as u64);
    if check + hook + mqtt <= settings::RUN_BUDGET_MS {
        return;
    }
    let mut parts = vec![format!(
        "timeout_ms {check}{}",
        slowest.map_or(String::new(), |v| format!(
            " (failover.{})",
            crate::text::shorten(&v.name, 64)
        ))
    )];
    if hook > 0 {
        parts.push(format!("on_change.timeout_ms {hook}"));
    }
    if mqtt > 0 {
        parts.push(format!("mqtt.timeout_ms {mqtt}"));
    }
    problems.push(format!(
        "settings: {} add up to {} ms, more than the {} ms a run may spend on them: the shipped \
         units end a run at 60 s (TimeoutStartSec=), and the lock wait and the apply need the \
         rest; lower one of them",
        parts.join(" + "),
        check + hook + mqtt,
        settings::RUN_BUDGET_MS
    ));
}

/// The most problems an error lists; the count says how many more there are.
const MAX_SHOWN: usize = 20;

/// The keys the top level takes. Comments are `//` and `/* */`, or a `"comment"` key.
const TOP_KEYS: [&str; 3] = ["failover", "settings", "comment"];

/// The problem with a top-level key, if it is not one of `TOP_KEYS`: a setting or a variable's
/// key put one level too high, or a misspelling. Never ignored: a lost `settings` would
/// silently drop the admin's failure policy.
fn misplaced_top_level_key(key: &str) -> Option<String> {
    if TOP_KEYS.contains(&key) {
        return None;
    }
    let shown = crate::text::shorten(key, 64);
    Some(
        if SETTING_KEYS.contains(&key) || publish::KEYS.contains(&key) {
            format!(
                "top level: {shown:?} is a setting; move it into \"settings\": {{\"settings\": {{\"{key}\": …}}}}"
            )
        } else if variables::all_keys().contains(&key) {
            format!(
                "top level: {shown:?} belongs to a variable; move it into one: {{\"failover\": {{\"NAME\": {{\"{key}\": …}}}}}}"
            )
        } else {
            unknown_key("top level", key, &TOP_KEYS)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn check_hook_and_mqtt_timeouts_fit_a_run_under_the_unit() {
        let var = |t: u64| {
            format!(r#""failover": {{"a": {{"ip4": "192.0.2.1", "port": 1, "timeout_ms": {t}}}}}"#)
        };
        let over = problems(&format!("{{{}}}", var(30_001)));
        assert_eq!(
            over,
            ["failover.a.timeout_ms: expected milliseconds from 1 to 30000, found number 30001"]
        );
        let hook = r#""on_change": {"command": ["/bin/true"], "timeout_ms": 20000}"#;
        let together = problems(&format!("{{\"settings\": {{{hook}}}, {}}}", var(30_000)));
        assert_eq!(
            together,
            [
                "settings: timeout_ms 30000 (failover.a) + on_change.timeout_ms 20000 add up to \
              50000 ms, more than the 45000 ms a run may spend on them: the shipped units end a \
              run at 60 s (TimeoutStartSec=), and the lock wait and the apply need the rest; \
              lower one of them"
            ]
        );
        let fits = format!("{{\"settings\": {{{hook}}}, {}}}", var(25_000));
        assert!(parse(&fits, Path::new("f.json")).is_ok());
    }

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
        let text = include_str!("../../tests/data/reference-example-fixed.json");
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
    fn unknown_top_level_keys_are_refused_with_a_hint() {
        // A comment key is fine, at the top level and in a variable.
        let c = parse(
            r#"{"comment": "x", "failover": {"a": {"comment": "y", "ip4": "1.1.1.1", "port": 1}}}"#,
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(c.variables.len(), 1);
        let var = r#""failover": {"a": {"ip4": "1.1.1.1", "port": 1}}"#;
        let one = |top: &str| one_problem(&format!("{{{top}, {var}}}"));
        assert_eq!(
            one(r#""setings": {"all_down": "first"}"#),
            "top level: unknown key \"setings\"; did you mean \"settings\"? Expected one of: failover, settings, comment"
        );
        assert_eq!(
            one(r#""mqtt": {"broker": "x"}"#),
            "top level: \"mqtt\" is a setting; move it into \"settings\": {\"settings\": {\"mqtt\": …}}"
        );
        assert!(one(r#""on_change": {}"#).contains("is a setting"));
        assert!(one(r#""all_down": "keep""#).contains("is a setting"));
        assert!(one(r#""port": 1"#).contains("belongs to a variable"));
        assert_eq!(
            one(r#""xyz": 1"#),
            "top level: unknown key \"xyz\"; expected one of: failover, settings, comment"
        );
        // Suggestions inside the sections too.
        assert!(
            one_problem(r#"{"settings": {"all_dwon": "keep"}, "failover": {"a": {"ip4": "1.1.1.1", "port": 1}}}"#)
                .contains("did you mean \"all_down\"?")
        );
        assert!(
            one_problem(r#"{"failover": {"a": {"ip4": "1.1.1.1", "prot": 1, "port": 1}}}"#)
                .contains("failover.a: unknown key \"prot\"; did you mean \"port\"?")
        );
        // A huge key is echoed shortened.
        let long = "k".repeat(100_000);
        let p = one(&format!("\"{long}\": 1"));
        assert!(p.len() < 300, "{}", p.len());
    }

    #[test]
    fn nearest_keys_are_close_misspellings_only() {
        use fields::nearest;
        let known = ["settings", "failover", "comment"];
        assert_eq!(nearest("setings", &known), Some("settings"));
        assert_eq!(nearest("Settings", &known), Some("settings"));
        assert_eq!(nearest("failvoer", &known), Some("failover"));
        assert_eq!(nearest("fail", &known), Some("failover"));
        assert_eq!(nearest("xyz", &known), None);
        assert_eq!(
            nearest("timeout", &["command", "timeout_ms"]),
            Some("timeout_ms")
        );
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
