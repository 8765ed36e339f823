//! `nftables-failover check-config`: valid configs of every feature exit 0 with one line; each
//! class of mistake exits 2 with exactly the problems a run reports; and it needs neither
//! privilege nor network.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn check(config: &std::path::Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg("--config").arg(config);
    output_within(cmd, Duration::from_secs(60))
}

fn write(dir: &std::path::Path, name: &str, json: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, json).unwrap();
    path
}

#[test]
fn valid_configs_of_every_feature_pass_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            format!("{REPO}/etc/nftables.d/addons/failover.json").into(),
            "3 variables (v4: 3, v6: 1; 8 candidates), values: mark_proxy",
        ),
        (
            format!("{REPO}/etc/examples/publish.json").into(),
            "publish: on_change metrics mqtt",
        ),
        (
            write(
                dir.path(),
                "live.json",
                r#"{"settings": {"apply": "live", "warn_no_standby": false}, "failover": {
                    "web": {"ip4": ["192.0.2.1", "192.0.2.2"], "ip6": ["2001:db8::1"], "port": 443}}}"#,
            ),
            "1 variable (v4: 1, v6: 1; 3 candidates), live: web",
        ),
        (
            write(
                dir.path(),
                "uplink.json",
                r#"{"failover": {"up": {"ip4": ["198.51.100.1", "203.0.113.1"], "values": [1, 2],
                    "check": {"targets": ["192.0.2.10:80", "192.0.2.11:80"], "quorum": 1},
                    "paths": [{"mark": 1}, {"mark": 2}]}}}"#,
            ),
            "uplink checks: up, paths: up, values: up",
        ),
    ];
    for (path, says) in cases {
        let path: std::path::PathBuf = path;
        let out = check(&path);
        assert_exit(&out, 0);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.starts_with(&format!("{}: OK: ", path.display())),
            "{stdout}"
        );
        assert!(stdout.contains(says), "{stdout}");
        assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    }
}

#[test]
fn each_class_of_mistake_exits_2_with_what_a_run_says() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "syntax",
            r#"{"failover": {"a": {"ip4": "192.0.2.1", "port": 1,}}}"#,
        ),
        (
            "top level",
            r#"{"setings": {}, "failover": {"a": {"ip4": "192.0.2.1", "port": 1}}}"#,
        ),
        (
            "variable key",
            r#"{"failover": {"a": {"ip4": "192.0.2.1", "prot": 1}}}"#,
        ),
        (
            "address",
            r#"{"failover": {"a": {"ip4": ["192.0.2.1", "2001:db8::1"], "port": 1}}}"#,
        ),
        (
            "value",
            r#"{"failover": {"a": {"ip4": "192.0.2.1", "port": 1, "values": ["1; flush ruleset"]}}}"#,
        ),
        (
            "setting",
            r#"{"settings": {"fall": 0}, "failover": {"a": {"ip4": "192.0.2.1", "port": 1}}}"#,
        ),
        (
            "policy",
            r#"{"failover": {"a": {"ip4": "192.0.2.1", "port": 1, "all_down": "fallback"}}}"#,
        ),
        (
            "path",
            r#"{"failover": {"a": {"ip4": "192.0.2.1", "port": 1, "paths": [{"gateway": 1}]}}}"#,
        ),
        (
            "publish",
            r#"{"settings": {"mqtt": {"port": 70000}}, "failover": {"a": {"ip4": "192.0.2.1", "port": 1}}}"#,
        ),
    ];
    for (class, json) in cases {
        let config = write(dir.path(), "failover.json", json);
        let out = check(&config);
        assert_exit(&out, 2);
        let said = stderr(&out);
        assert!(
            said.starts_with("error: ") && said.contains(&config.display().to_string()),
            "{class}: {said}"
        );
        // A run (of the same binary) refuses it with the same lines, and says nothing changed.
        let mut run = Command::new(BIN);
        run.arg("--config").arg(&config).arg("--dry-run");
        let ran = output_within(run, Duration::from_secs(10));
        assert_exit(&ran, 2);
        assert_eq!(
            stderr(&ran),
            format!("{said}nothing was changed; fix the config and run again\n"),
            "{class}"
        );
    }
    // A missing file too.
    let out = check(&dir.path().join("none.json"));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("it does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn it_needs_no_privilege_and_no_network() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let config = write(
        dir.path(),
        "failover.json",
        r#"{"failover": {"a": {"ip4": ["192.0.2.1", "192.0.2.2"], "port": 443}}}"#,
    );
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-n",
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
    .args([
        "--inh-caps=-all",
        "--bounding-set=-all",
        BIN,
        "check-config",
        "--config",
    ])
    .arg(&config);
    let out = output_within(cmd, Duration::from_secs(10));
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: 1 variable"));
    // Nothing was written beside it.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Sizes: a 10 MB variable name is refused in a short message, long bad values are echoed
/// cut, and 100,000 bad keys are listed as the first 20 and a count.
#[test]
fn huge_names_values_and_problem_counts_give_short_messages() {
    let dir = tempfile::tempdir().unwrap();
    let name = "n".repeat(10 << 20);
    let config = write(
        dir.path(),
        "name.json",
        &format!(r#"{{"failover": {{"{name}": {{"ip4": "192.0.2.1", "port": 1}}}}}}"#),
    );
    let out = check(&config);
    assert_exit(&out, 2);
    let said = stderr(&out);
    assert!(said.len() < 1000, "{} bytes", said.len());
    assert!(
        said.contains("the variable name is 10485760 bytes long; at most 64"),
        "{said}"
    );

    let value = "x".repeat(1 << 20);
    let config = write(
        dir.path(),
        "value.json",
        &format!(r#"{{"failover": {{"a": {{"ip4": "{value}", "port": 1}}}}}}"#),
    );
    let out = check(&config);
    assert_exit(&out, 2);
    let said = stderr(&out);
    assert!(said.len() < 1000, "{} bytes", said.len());
    assert!(said.contains("… (1048576 bytes)"), "{said}");

    let keys: Vec<String> = (0..100_000).map(|i| format!(r#""k{i}": 1"#)).collect();
    let config = write(
        dir.path(),
        "keys.json",
        &format!(
            r#"{{"failover": {{"a": {{"ip4": "192.0.2.1", "port": 1, {}}}}}}}"#,
            keys.join(", ")
        ),
    );
    let out = check(&config);
    assert_exit(&out, 2);
    let said = stderr(&out);
    assert!(
        said.contains("100000 problems in config"),
        "{}",
        &said[..200]
    );
    assert!(
        said.contains("\n  … and 99980 more"),
        "{}",
        &said[said.len() - 300..]
    );
    assert_eq!(said.lines().count(), 22, "{}", &said[..500]);
}
