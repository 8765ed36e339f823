//! The `settings` keys that tell the rest of the network: `on_change`, `metrics`, `mqtt`.
//! Pure, like the rest of the config: JSON in, settings or problems out. Each is off unless
//! configured.

use super::fields::{absolute_path, integer, lookup, object, string};
use crate::jsonc::Json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Publish {
    pub on_change: Option<Hook>,
    pub metrics: Option<Metrics>,
    pub mqtt: Option<Mqtt>,
}

/// `on_change`: a command started after every successful apply that changed a define.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// argv, run without a shell; `command[0]` is an absolute path.
    pub command: Vec<String>,
    pub timeout: Duration,
}

/// `metrics`: a Prometheus textfile rewritten every run.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub path: PathBuf,
}

/// `mqtt`: retained state and Home Assistant discovery on a broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    pub broker: String,
    pub port: u16,
    /// CA certificates (PEM) to verify the broker with; TLS is on when set.
    pub ca_file: Option<PathBuf>,
    /// `USER:PASSWORD` on one line, in a file only the service can read.
    pub credentials_file: Option<PathBuf>,
    /// Defaults to `nftables-failover-NODE`.
    pub client_id: Option<String>,
    /// Defaults to `nftables-failover/NODE`.
    pub base_topic: Option<String>,
    pub discovery_prefix: String,
    /// Identifies this host in topics and unique_ids; defaults to the host name.
    pub node_id: Option<String>,
    /// The most one run spends on the broker (connect, publish, acknowledgements).
    pub timeout: Duration,
    /// An unchanged run publishes only if the last publish is this old.
    pub refresh: Duration,
    /// Home Assistant marks entities unavailable when no state arrived for this long.
    pub expire_after: Duration,
}

pub const HOOK_TIMEOUT_MS: u64 = 10_000;
pub const MQTT_TIMEOUT_MS: u64 = 2_000;
// Both run after the apply but before the state is saved, inside the unit's
// TimeoutStartSec=60s: a run killed there would lose this run's counters.
pub const HOOK_TIMEOUT_MAX_MS: u64 = 30_000;
pub const MQTT_TIMEOUT_MAX_MS: u64 = 10_000;
pub const MQTT_REFRESH_S: u64 = 60;
pub const MQTT_EXPIRE_AFTER_S: u64 = 300;

pub const KEYS: [&str; 3] = ["on_change", "metrics", "mqtt"];

/// Parses `key` of the top-level settings if it is one of ours; returns false otherwise.
pub fn setting(
    publish: &mut Publish,
    key: &str,
    value: &Json,
    at: &str,
    problems: &mut Vec<String>,
) -> bool {
    let at = format!("{at}.{key}");
    match key {
        "on_change" => publish.on_change = hook(value, &at, problems),
        "metrics" => publish.metrics = metrics(value, &at, problems),
        "mqtt" => publish.mqtt = mqtt(value, &at, problems),
        _ => return false,
    }
    true
}

/// The entries of an object setting, every unknown key reported.
fn hook(value: &Json, at: &str, problems: &mut Vec<String>) -> Option<Hook> {
    let before = problems.len();
    let entries = object(value, at, &["command", "timeout_ms"], problems)?;
    let command = match lookup(entries, "command") {
        Some(Json::Array(items)) if !items.is_empty() => {
            let mut argv = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Json::String(s) if !s.contains('\0') => argv.push(s.clone()),
                    other => problems.push(format!(
                        "{at}.command[{i}]: expected a string, found {}",
                        other.describe()
                    )),
                }
            }
            if argv.first().is_some_and(|p| !p.starts_with('/')) {
                problems.push(format!(
                    "{at}.command[0]: expected the program's absolute path (it runs without a \
                     shell or PATH lookup), found {:?}",
                    argv[0]
                ));
            }
            argv
        }
        Some(other) => {
            problems.push(format!(
                "{at}.command: expected a non-empty list of strings (program and arguments, \
                 run without a shell), found {}",
                other.describe()
            ));
            Vec::new()
        }
        None => {
            problems.push(format!(
                "{at}: missing \"command\", a list of strings: program and arguments"
            ));
            Vec::new()
        }
    };
    let timeout_ms = integer(
        lookup(entries, "timeout_ms"),
        &format!("{at}.timeout_ms"),
        1,
        HOOK_TIMEOUT_MAX_MS,
        "milliseconds",
        problems,
    );
    (problems.len() == before).then(|| Hook {
        command,
        timeout: Duration::from_millis(timeout_ms.unwrap_or(HOOK_TIMEOUT_MS)),
    })
}

fn metrics(value: &Json, at: &str, problems: &mut Vec<String>) -> Option<Metrics> {
    let before = problems.len();
    let entries = object(value, at, &["path"], problems)?;
    let path = match lookup(entries, "path") {
        None => {
            problems.push(format!(
                "{at}: missing \"path\", the .prom file in node_exporter's textfile directory"
            ));
            None
        }
        some => absolute_path(some, &format!("{at}.path"), problems),
    };
    if let Some(p) = &path
        && p.extension().is_none_or(|e| e != "prom")
    {
        problems.push(format!(
            "{at}.path: expected a file name ending in .prom (node_exporter reads only those), \
             found {:?}",
            p.display().to_string()
        ));
    }
    let path = path?;
    (problems.len() == before).then_some(Metrics { path })
}

/// A topic prefix: levels separated by '/', no wildcards, no empty level.
fn topic(value: Option<&Json>, at: &str, problems: &mut Vec<String>) -> Option<String> {
    let s = string(value, at, problems)?;
    if s.split('/').any(|level| level.is_empty()) || s.contains(['+', '#', '\0']) {
        problems.push(format!(
            "{at}: expected topic levels separated by '/', without wildcards (+, #), empty \
             levels or a leading or trailing '/', found {s:?}"
        ));
        return None;
    }
    Some(s.to_string())
}

const MQTT_KEYS: [&str; 11] = [
    "broker",
    "port",
    "ca_file",
    "credentials_file",
    "client_id",
    "base_topic",
    "discovery_prefix",
    "node_id",
    "timeout_ms",
    "refresh_s",
    "expire_after_s",
];

fn mqtt(value: &Json, at: &str, problems: &mut Vec<String>) -> Option<Mqtt> {
    let before = problems.len();
    let entries = object(value, at, &MQTT_KEYS, problems)?;
    let key = |k: &str| format!("{at}.{k}");
    let broker = match lookup(entries, "broker") {
        None => {
            problems.push(format!(
                "{at}: missing \"broker\", the broker's host name or address"
            ));
            None
        }
        some => string(some, &key("broker"), problems).map(str::to_string),
    };
    let ca_file =
        lookup(entries, "ca_file").and_then(|v| absolute_path(Some(v), &key("ca_file"), problems));
    let credentials_file = lookup(entries, "credentials_file")
        .and_then(|v| absolute_path(Some(v), &key("credentials_file"), problems));
    let port = integer(
        lookup(entries, "port"),
        &key("port"),
        1,
        65535,
        "a port",
        problems,
    );
    let client_id = string(lookup(entries, "client_id"), &key("client_id"), problems);
    let base_topic = topic(lookup(entries, "base_topic"), &key("base_topic"), problems);
    let discovery_prefix = topic(
        lookup(entries, "discovery_prefix"),
        &key("discovery_prefix"),
        problems,
    );
    let node_id = string(lookup(entries, "node_id"), &key("node_id"), problems);
    if let Some(n) = node_id
        && !is_node_id(n)
    {
        problems.push(format!(
            "{at}.node_id: expected letters, digits, _ and - only (it goes into topics and \
             unique_ids), found {n:?}"
        ));
    }
    let timeout_ms = integer(
        lookup(entries, "timeout_ms"),
        &key("timeout_ms"),
        100,
        MQTT_TIMEOUT_MAX_MS,
        "milliseconds",
        problems,
    );
    let refresh_s = integer(
        lookup(entries, "refresh_s"),
        &key("refresh_s"),
        0,
        86_400,
        "seconds",
        problems,
    )
    .unwrap_or(MQTT_REFRESH_S);
    let expire_after_s = integer(
        lookup(entries, "expire_after_s"),
        &key("expire_after_s"),
        1,
        604_800,
        "seconds",
        problems,
    )
    .unwrap_or(MQTT_EXPIRE_AFTER_S);
    if expire_after_s <= refresh_s {
        problems.push(format!(
            "{at}.expire_after_s: expected more than refresh_s ({refresh_s}), found \
             {expire_after_s}; otherwise Home Assistant marks the entities unavailable between \
             two refreshes"
        ));
    }
    if problems.len() != before {
        return None;
    }
    Some(Mqtt {
        broker: broker?,
        port: port.map_or(if ca_file.is_some() { 8883 } else { 1883 }, |p| p as u16),
        ca_file,
        credentials_file,
        client_id: client_id.map(str::to_string),
        base_topic,
        discovery_prefix: discovery_prefix.unwrap_or_else(|| "homeassistant".into()),
        node_id: node_id.map(str::to_string),
        timeout: Duration::from_millis(timeout_ms.unwrap_or(MQTT_TIMEOUT_MS)),
        refresh: Duration::from_secs(refresh_s),
        expire_after: Duration::from_secs(expire_after_s),
    })
}

pub fn is_node_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;
    use std::time::Duration;

    fn load(settings: &str) -> Result<super::Publish, String> {
        let text = format!(
            r#"{{"settings": {{{settings}}}, "failover": {{"a": {{"ip4": "10.0.0.1", "port": 1}}}}}}"#
        );
        parse(&text, Path::new("f.json"))
            .map(|c| c.publish)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn all_off_unless_configured_and_defaults_filled_in() {
        assert_eq!(load("").unwrap(), super::Publish::default());
        let p = load(
            r#""on_change": {"command": ["/usr/local/bin/notify", "--all"]},
               "metrics": {"path": "/var/lib/node_exporter/failover.prom"},
               "mqtt": {"broker": "mqtt.lan", "ca_file": "/etc/ssl/ca.pem"}"#,
        )
        .unwrap();
        let hook = p.on_change.unwrap();
        assert_eq!(hook.command, ["/usr/local/bin/notify", "--all"]);
        assert_eq!(hook.timeout, Duration::from_secs(10));
        assert!(p.metrics.is_some());
        let m = p.mqtt.unwrap();
        assert_eq!(m.port, 8883, "TLS has its own default port");
        assert_eq!(m.discovery_prefix, "homeassistant");
        assert_eq!(m.timeout, Duration::from_secs(2));
        assert_eq!(m.refresh, Duration::from_secs(60));
        assert_eq!(m.expire_after, Duration::from_secs(300));
        assert_eq!(
            load(r#""mqtt": {"broker": "b"}"#)
                .unwrap()
                .mqtt
                .unwrap()
                .port,
            1883
        );
    }

    #[test]
    fn every_problem_names_its_key() {
        let e = load(
            r#""on_change": {"command": "/bin/x", "timeout": 5},
               "mqtt": {"broker": "b", "base_topic": "a/#", "node_id": "my host",
                        "credentials_file": "creds", "timeout_ms": 0}"#,
        )
        .unwrap_err();
        for expected in [
            "settings.on_change.command: expected a non-empty list of strings",
            "settings.on_change: unknown key \"timeout\"; did you mean \"timeout_ms\"? Expected one of: command, timeout_ms",
            "settings.mqtt.base_topic: expected topic levels separated by '/', without wildcards",
            "settings.mqtt.node_id: expected letters, digits, _ and - only",
            "settings.mqtt.credentials_file: expected an absolute path, found \"creds\"",
            "settings.mqtt.timeout_ms: expected milliseconds from 100 to 10000, found number 0",
        ] {
            assert!(e.contains(expected), "no {expected:?} in:\n{e}");
        }
        // Only at the top level: a variable cannot have its own broker.
        let e = parse(
            r#"{"failover": {"a": {"ip4": "10.0.0.1", "port": 1, "mqtt": {"broker": "b"}}}}"#,
            Path::new("f.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("failover.a: unknown key \"mqtt\""), "{e}");
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../etc/examples/publish.json");
        let config = crate::config::parse(text, std::path::Path::new("publish.json")).unwrap();
        let p = config.publish;
        assert!(p.on_change.is_some() && p.metrics.is_some() && p.mqtt.is_some());
    }
}
