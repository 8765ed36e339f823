//! Standby health and maintenance on loopback, each test in its own network namespace: every
//! candidate has a result after every run, a dead standby is a warning, and `drain`/`undrain`
//! take a candidate out and put it back without editing the config.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

const PORT: u16 = 8443;

fn web(extra: &str) -> String {
    format!(
        r#"{{"settings": {{"timeout_ms": 300{extra}}}, "failover": {{"web": {{
            "ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    )
}

fn status(f: &Fixture) -> (i32, Value) {
    let out = f.status(&["--json"]);
    let doc =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code().unwrap(), doc)
}

fn drain(f: &Fixture, verb: &str, variable: &str, address: &str) -> std::process::Output {
    let mut cmd = f.command(&[], &f.reload());
    cmd.args([verb, variable, address]);
    output_within(cmd, Duration::from_secs(30))
}

/// A fixture with `config` and a main config that uses `$web_v4`, after its first run.
fn applied(config: &str) -> Fixture {
    let f = Fixture::new();
    f.write_config(config);
    f.write_main("  ip daddr $web_v4 counter");
    assert_exit(&f.run(&[]), 0);
    f
}

#[test]
fn a_blackholed_standby_is_down_after_one_run_and_a_warning() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = applied(&web(""));
        // After the first reload (whose `flush ruleset` would remove it): SYNs to it vanish.
        blackhole(&["127.0.0.2"], PORT);
        // An unchanged run now waits for the standby: about one timeout, never more.
        let started = Instant::now();
        let out = f.run(&[]);
        let took = started.elapsed();
        assert_exit(&out, 0);
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
        let (code, doc) = status(&f);
        assert_eq!(code, 1, "{doc:#}");
        let d = &doc["defines"][0];
        assert_eq!(d["status"], "WARNING", "{doc:#}");
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("no healthy standby: 127.0.0.2 down (no answer within 300 ms)"),
            "{doc:#}"
        );
        assert_eq!(d["candidates"][1]["state"], "down");
        // Off by setting: then the same is OK.
        f.write_config(&web(r#", "warn_no_standby": false"#));
        assert_eq!(status(&f).0, 0);
        f.write_config(&web(""));
        // Repaired: up again, and OK.
        sh("nft delete table inet blackhole");
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        let (code, doc) = status(&f);
        assert_eq!(code, 0, "{doc:#}");
        assert_eq!(doc["defines"][0]["candidates"][1]["state"], "up");
    });
}

#[test]
fn status_without_results_says_so_instead_of_predicting() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = applied(&web(""));
        // A state file without results (an old release's, or history reset): no prediction.
        fs::write(&f.state, r#"{"version": 1}"#).unwrap();
        let (code, doc) = status(&f);
        assert_eq!(code, 3, "{doc:#}");
        let d = &doc["defines"][0];
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("no check result yet for 127.0.0.1:8443, 127.0.0.2:8443"),
            "{doc:#}"
        );
        assert_eq!(d["pending"], false, "{doc:#}");
        assert_eq!(d["next"], "127.0.0.1", "{doc:#}");
        // One run later every candidate has a result.
        assert_exit(&f.run(&[]), 0);
        let (_, doc) = status(&f);
        assert!(!doc.to_string().contains("\"unknown\""), "{doc:#}");
    });
}

#[test]
fn drain_moves_traffic_off_and_undrain_brings_it_back() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        let hooked = f.dir.path().join("hook.json");
        f.write_config(&web(&format!(
            r#", "on_change": {{"command": ["/bin/sh", "-c", "cat > {}"]}}"#,
            hooked.display()
        )));
        f.write_main("  ip daddr $web_v4 counter");
        assert_exit(&f.run(&[]), 0);
        let state_before = fs::read(&f.state).unwrap();

        // Refused, with nothing changed: an unknown variable, an address that is no candidate.
        for (var, addr, says) in [
            ("wbe", "127.0.0.1", "no variable \"wbe\"; it has: web"),
            ("web", "127.0.0.9", "127.0.0.9 is not a candidate of web"),
            ("web", "not-an-ip", "\"not-an-ip\" is not an IP address"),
        ] {
            let out = drain(&f, "drain", var, addr);
            assert_exit(&out, 2);
            assert!(stderr(&out).contains(says), "{}", stderr(&out));
            assert_eq!(fs::read(&f.state).unwrap(), state_before);
        }

        let out = drain(&f, "drain", "web", "127.0.0.1");
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("drained web 127.0.0.1"),
            "{}",
            stderr(&out)
        );
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains(
                "web_v4: 127.0.0.1 -> 127.0.0.2 (preferred candidate 127.0.0.1:8443 drained)"
            ),
            "{}",
            stderr(&out)
        );
        assert!(ruleset().contains("ip daddr 127.0.0.2 counter"));
        // The hook is told why: drained, not down.
        let hook = fs::read_to_string(&hooked).unwrap();
        assert!(hook.contains(r#""reason":"drained""#), "{hook}");
        let (_, doc) = status(&f);
        assert_eq!(
            doc["defines"][0]["candidates"][0]["state"], "drained",
            "{doc:#}"
        );
        // It stays out, run after run.
        for _ in 0..2 {
            let out = f.run(&[]);
            assert_exit(&out, 0);
            assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
        }
        // With every other candidate down too, the all-down policy applies and says why.
        drop(_backup);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("all down: using the first candidate (127.0.0.1), although 127.0.0.1:8443 is drained: no other candidate answers"),
            "{}",
            stderr(&out)
        );
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);

        let out = drain(&f, "undrain", "web", "127.0.0.1");
        assert_exit(&out, 0);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("web_v4: 127.0.0.2 -> 127.0.0.1"),
            "{}",
            stderr(&out)
        );
        let (_, doc) = status(&f);
        assert_eq!(doc["defines"][0]["candidates"][0]["state"], "up", "{doc:#}");
    });
}

#[test]
fn drain_as_root_leaves_drains_the_service_can_read_and_others_are_refused() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        f.write_config(&web(""));
        f.write_main("  ip daddr $web_v4 counter");
        // The state directory belongs to the service user (here: nobody), no state yet.
        let dir = f.state.parent().unwrap();
        fs::create_dir_all(dir).unwrap();
        sh(&format!(
            "chown nobody:nogroup {} && chmod 750 {}",
            dir.display(),
            dir.display()
        ));
        // The addon directory's group is the service's, so the lock root creates is usable by it.
        sh(&format!("chgrp nogroup {}", f.addon_dir.display()));
        let out = drain(&f, "drain", "web", "127.0.0.2");
        assert_exit(&out, 0);
        let drains = f.state.with_file_name("drains.json");
        let meta = fs::metadata(&drains).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "root's drain left a drains.json the service does not own"
        );
        // A member of the state directory's group may read but not write it: refused, and told
        // who may.
        sh(&format!(
            "chmod 755 {d} {d}/nftables.d {d}/nftables.d/addons && chmod 644 {c}",
            d = f.dir.path().display(),
            c = f.config.display()
        ));
        let mut cmd = f.command(
            &["setpriv", "--reuid=1", "--regid=65534", "--clear-groups"],
            &f.reload(),
        );
        cmd.args(["undrain", "web", "127.0.0.2"]);
        let out = output_within(cmd, Duration::from_secs(30));
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("run it as root or as the service user"),
            "{}",
            stderr(&out)
        );
        assert!(fs::read_to_string(&drains).unwrap().contains("127.0.0.2"));
    });
}

/// A watcher or timer that no longer checks (stopped, or without the privilege its checks
/// need) leaves results that age: `status` stops saying OK once every result of a define is
/// older than a minute, names the age, and says where to look.
#[test]
fn status_is_unknown_when_every_result_is_stale() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = applied(&web(""));
        let (code, _) = status(&f);
        assert_eq!(code, 0);
        // Every result 65 s old, as after a minute of runs that could not check.
        let mut state: Value = serde_json::from_slice(&fs::read(&f.state).unwrap()).unwrap();
        for c in state["variables"]["web"]["v4"]["candidates"]
            .as_array_mut()
            .unwrap()
        {
            let at = c["last"]["at"].as_u64().unwrap();
            c["last"]["at"] = (at - 65).into();
        }
        fs::write(&f.state, state.to_string()).unwrap();
        let (code, doc) = status(&f);
        assert_eq!(code, 3, "{doc:#}");
        assert_eq!(doc["status"], "UNKNOWN", "{doc:#}");
        let reason = doc["defines"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("the newest check result is 6")
                && reason.contains("s old: no run has checked since"),
            "{reason}"
        );
        // A fresh check says what is true now.
        let out = f.status(&["--check"]);
        assert_exit(&out, 0);
    });
}

/// `[A, B, C]` with B black-holed and counted down, `rise 2`: when A is lost, B's answer can no
/// longer change the choice (one success cannot make it eligible), so the switch to C does not
/// wait for B's timeout; B's result still counts once it is in.
#[test]
fn a_failover_does_not_wait_for_a_dead_standby_ranked_in_between() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _third = listen("127.0.0.3", PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"settings": {{"timeout_ms": 2000, "rise": 2}}, "failover": {{"web": {{
                "ip4": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 counter");
        assert_exit(&f.run(&[]), 0);
        blackhole(&["127.0.0.2"], PORT);
        // B's timeout counts it down (its result comes in after the choice).
        assert_exit(&f.run(&[]), 0);
        let (_, doc) = status(&f);
        assert_eq!(
            doc["defines"][0]["candidates"][1]["state"], "down",
            "{doc:#}"
        );

        drop(primary);
        let started = Instant::now();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("web_v4: 127.0.0.1 -> 127.0.0.3"), "{log}");
        // The apply happened before B's 2 s timeout: the run's own line says how long it took.
        let applied_ms: f64 = log
            .lines()
            .find_map(|l| l.split("nftables reloaded (").nth(1))
            .and_then(|rest| rest.split(" ms)").next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no apply time in:\n{log}"));
        assert!(
            applied_ms < 1000.0,
            "the switch waited {applied_ms} ms:\n{log}"
        );
        // B's answer is still counted in this run, after the apply.
        assert!(started.elapsed() < Duration::from_secs(10));
        let (_, doc) = status(&f);
        let b = &doc["defines"][0]["candidates"][1];
        assert_eq!(b["state"], "down", "{doc:#}");
        assert!(b["result_age_s"].as_u64().unwrap() <= 2, "{doc:#}");
    });
}
