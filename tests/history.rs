//! Decisions over histories of real runs: the binary, real listeners, the real nft and the live
//! ruleset of a private network namespace. Each test is one sequence an admin could live through.
//! The number in each test's name is the item of the issue it reproduces.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const PORT: u16 = 9555;

fn fixture(addrs: &[&str], extra: &str) -> Fixture {
    let f = Fixture::new();
    f.write_config(&config(addrs, extra));
    f.write_main("  ip daddr $web_v4 tcp dport 9555 accept");
    f
}

fn config(addrs: &[&str], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{"failover": {{"web": {{"ip4": [{}], "port": {PORT}{extra}}}}}}}"#,
        list.join(", ")
    )
}

/// The address the live ruleset's rule points at.
fn live() -> String {
    let rules = ruleset();
    let line = rules
        .lines()
        .find(|l| l.contains("tcp dport 9555 accept"))
        .unwrap_or_else(|| panic!("rule missing from the live ruleset:\n{rules}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

fn ok_run(f: &Fixture) -> String {
    let out = f.run(&[]);
    assert_exit(&out, 0);
    stderr(&out)
}

fn status_json(f: &Fixture, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = f.status(&[&["--json"], extra].concat());
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), json)
}

#[test]
fn item1_a_dying_backup_is_left_under_preempt_false_and_preempt_delay() {
    for extra in [r#", "preempt": false"#, r#", "preempt_delay_s": 30"#] {
        in_netns(move || {
            let f = fixture(&["127.0.0.1", "127.0.0.2"], extra);
            let b = listen("127.0.0.2", PORT);
            ok_run(&f);
            assert_eq!(live(), "127.0.0.2", "{extra}: A down, on B");
            let _a = listen("127.0.0.1", PORT);
            ok_run(&f);
            assert_eq!(live(), "127.0.0.2", "{extra}: A back, policy keeps B");
            drop(b);
            let log = ok_run(&f);
            assert_eq!(live(), "127.0.0.1", "{extra}: B died, A is up:\n{log}");
            assert!(log.contains("web_v4: 127.0.0.2 -> 127.0.0.1"), "{log}");
        });
    }
}

#[test]
fn item2_a_stale_up_never_attracts_traffic() {
    in_netns(|| {
        let f = fixture(
            &["127.0.0.1", "127.0.0.2", "127.0.0.3"],
            r#", "preempt_delay_s": 1"#,
        );
        let _c = listen("127.0.0.3", PORT);
        ok_run(&f);
        assert_eq!(live(), "127.0.0.3");
        let b = listen("127.0.0.2", PORT);
        ok_run(&f); // B is back, the delay holds traffic on C
        assert_eq!(live(), "127.0.0.3");
        // B's delay elapses; then B dies again as A comes back.
        std::thread::sleep(Duration::from_millis(1100));
        drop(b);
        let _a = listen("127.0.0.1", PORT);
        let log = ok_run(&f); // B died again, A came back: never onto the dead B
        assert_eq!(live(), "127.0.0.3", "{log}");
        let (_, json) = status_json(&f, &[]);
        let reason = json["defines"][0]["reason"].as_str().unwrap().to_string();
        assert!(
            reason.starts_with("preempt delay: 127.0.0.1:9555 is up again"),
            "{reason}"
        );
    });
}

#[test]
fn item3_a_healthy_current_candidate_survives_config_edits_and_lost_state() {
    in_netns(|| {
        let extra = r#", "preempt": false, "rise": 2"#;
        let f = fixture(&["127.0.0.1", "127.0.0.2"], extra);
        let _b = listen("127.0.0.2", PORT);
        ok_run(&f);
        assert_eq!(live(), "127.0.0.2");
        let _a = listen("127.0.0.1", PORT);
        ok_run(&f);
        // An ip6 list added, and a candidate appended.
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "ip6": "::1", "port": {PORT}{extra}}}}}}}"#
        ));
        let _v6 = listen("::1", PORT);
        ok_run(&f);
        assert_eq!(live(), "127.0.0.2", "config edit made it jump back");
        // The state file lost.
        fs::remove_file(&f.state).unwrap();
        ok_run(&f);
        assert_eq!(live(), "127.0.0.2", "lost state made it jump back");
        // A foreign (corrupt) state file.
        fs::write(&f.state, "{\"version\": 1, \"variables\": 7}").unwrap();
        ok_run(&f);
        assert_eq!(live(), "127.0.0.2", "foreign state made it jump back");
    });
}

/// Runs the binary with the state directory mounted read-only (a private mount namespace).
fn run_read_only_state(f: &Fixture) -> std::process::Output {
    let dir = f.state.parent().unwrap().to_str().unwrap();
    let remount =
        r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@""#;
    let wrapper = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        remount,
        "sh",
        dir,
    ];
    output_within(f.command(&wrapper, &f.reload()), Duration::from_secs(30))
}

#[test]
fn item4_a_state_that_cannot_be_saved_neither_freezes_failover_nor_reloads_every_run() {
    in_netns(|| {
        let f = fixture(&["127.0.0.1", "127.0.0.2"], r#", "fall": 3"#);
        let a = listen("127.0.0.1", PORT);
        let _b = listen("127.0.0.2", PORT);
        ok_run(&f);
        assert_eq!(live(), "127.0.0.1");
        let saved = fs::read(&f.state).unwrap();
        drop(a);
        // Read-only state: counters cannot move, so the run decides from its own checks.
        let out = run_read_only_state(&f);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert_eq!(
            log.matches("cannot write the state").count(),
            1,
            "one error line per run:\n{log}"
        );
        assert!(
            log.contains("deciding from this run's checks alone"),
            "{log}"
        );
        assert_eq!(live(), "127.0.0.2", "failover must not freeze:\n{log}");
        assert_eq!(
            fs::read(&f.state).unwrap(),
            saved,
            "the state was read-only"
        );
        // Later read-only runs: no reload per run.
        let calls = f.nft_calls().len();
        for _ in 0..3 {
            let out = run_read_only_state(&f);
            assert_exit(&out, 0);
            assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
        }
        assert_eq!(f.nft_calls().len(), calls, "{:?}", f.nft_calls());
    });
}

#[test]
fn item5_status_tells_what_is_in_effect_while_applies_fail() {
    in_netns(|| {
        let f = fixture(&["127.0.0.1", "127.0.0.2"], "");
        let a = listen("127.0.0.1", PORT);
        let _b = listen("127.0.0.2", PORT);
        ok_run(&f);
        // From now on every staged check fails.
        fs::write(
            f.base_dir.join("broken.nft"),
            "table inet t {\n chain c {\n  ip daddr $undefined_v4 accept\n }\n}\n",
        )
        .unwrap();
        drop(a);
        for _ in 0..2 {
            assert_exit(&f.run(&[]), 1);
        }
        assert_eq!(live(), "127.0.0.1");
        let (code, json) = status_json(&f, &[]);
        assert_eq!(code, Some(2), "{json:#}");
        assert_eq!(json["status"], "CRITICAL");
        let d = &json["defines"][0];
        assert_eq!(d["rendered"], "127.0.0.1", "what is in effect: {d:#}");
        assert_eq!(d["selected"], 0);
        assert_eq!(d["next"], "127.0.0.2");
        assert_eq!(d["next_selected"], 1);
        assert_eq!(d["pending"], true);
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("traffic goes to 127.0.0.1:9555, which is down"),
            "{reason}"
        );
        assert!(reason.contains("the last apply failed"), "{reason}");
        assert_eq!(json["last_apply"]["ok"], false);
        assert!(
            json["last_apply"]["error"]
                .as_str()
                .unwrap()
                .contains("undefined_v4"),
            "{json:#}"
        );
        // Repaired: applied, and status follows.
        fs::remove_file(f.base_dir.join("broken.nft")).unwrap();
        ok_run(&f);
        let (code, json) = status_json(&f, &[]);
        assert_eq!(code, Some(1), "{json:#}");
        assert_eq!(json["defines"][0]["rendered"], "127.0.0.2");
        assert_eq!(json["defines"][0]["pending"], false);
        assert_eq!(json["last_apply"]["ok"], true);
    });
}

#[test]
fn item6_a_define_never_checked_is_unknown_not_critical() {
    in_netns(|| {
        let f = fixture(&["127.0.0.1"], "");
        let _a = listen("127.0.0.1", PORT);
        ok_run(&f);
        assert_eq!(status_json(&f, &[]).0, Some(0));
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": "127.0.0.1", "port": {PORT}}},
                "db": {{"ip4": "127.0.0.7", "port": {PORT}}}}}}}"#
        ));
        let (code, json) = status_json(&f, &[]);
        assert_eq!(code, Some(3), "{json:#}");
        let db = json["defines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["define"] == "db_v4")
            .unwrap();
        assert_eq!(db["status"], "UNKNOWN", "{db:#}");
        assert_eq!(db["rendered"], serde_json::Value::Null);
    });
}

#[test]
fn item7_keep_reports_no_index_renders_new_families_and_dry_run_sees_unapplied_changes() {
    in_netns(|| {
        let f = fixture(&["127.0.0.1", "127.0.0.2"], r#", "all_down": "keep""#);
        let b = listen("127.0.0.2", PORT);
        ok_run(&f);
        drop(b);
        ok_run(&f);
        assert_eq!(live(), "127.0.0.2");
        let (_, json) = status_json(&f, &["--check"]);
        assert_eq!(json["defines"][0]["next"], "127.0.0.2");
        assert_eq!(json["defines"][0]["next_selected"], serde_json::Value::Null);
        // The family gains addresses while everything is down: the first candidate, not `::`.
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "ip6": ["::1"], "port": {PORT}, "all_down": "keep"}}}}}}"#
        ));
        ok_run(&f);
        assert_eq!(define(&f.output_text().unwrap(), "web_v6"), Some("::1"));
        // A change whose apply failed: the dry run says it would change.
        let _a = listen("127.0.0.1", PORT);
        assert_exit(&f.run_with_reload("false", &[]), 1);
        let out = f.run(&["--dry-run"]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("would change"), "{}", stderr(&out));
    });
}
