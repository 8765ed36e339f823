//! Flapping and failure policy end to end: the real binary, real listeners and the live ruleset
//! of a private network namespace, across many runs sharing one state file.

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const PORT: u16 = 9443;

fn web_config(extra: &str) -> String {
    format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}{extra}}}}}}}"#
    )
}

fn fixture(extra: &str) -> Fixture {
    let f = Fixture::new();
    f.write_config(&web_config(extra));
    f.write_main("  ip daddr $web_v4 tcp dport 9443 accept");
    f
}

fn live_web() -> String {
    let rules = ruleset();
    let line = rules
        .lines()
        .find(|l| l.contains("tcp dport 9443 accept"))
        .unwrap_or_else(|| panic!("rule missing from the live ruleset:\n{rules}"));
    line.split_whitespace().nth(2).unwrap().to_string()
}

/// Runs the binary `runs` times with the primary listener alternating up/down; returns how
/// many times nft was invoked after the first (initial) apply.
fn flap(f: &Fixture, runs: usize) -> usize {
    let _backup = listen("127.0.0.2", PORT);
    let mut primary: Option<Listener> = Some(listen("127.0.0.1", PORT));
    assert_exit(&f.run(&[]), 0);
    let after_first = f.nft_calls().len();
    for i in 0..runs {
        primary = match primary {
            Some(_) => None,
            None => Some(listen("127.0.0.1", PORT)),
        };
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let _ = i;
    }
    f.nft_calls().len() - after_first
}

#[test]
fn flapping_candidate_with_fall_3_rise_2_causes_no_reload_in_20_runs() {
    in_netns(|| {
        let f = fixture(r#", "fall": 3, "rise": 2"#);
        assert_eq!(flap(&f, 20), 0, "{:?}", f.nft_calls());
        assert_eq!(live_web(), "127.0.0.1");
    });
}

#[test]
fn flapping_candidate_with_defaults_switches_every_run_like_the_reference() {
    in_netns(|| {
        let f = fixture("");
        // Every run changes the include: staged check, main check and reload each time.
        assert_eq!(flap(&f, 20), 20 * 3, "{:?}", f.nft_calls());
    });
}

#[test]
fn all_down_keep_keeps_the_last_address() {
    in_netns(|| {
        let f = fixture(r#", "all_down": "keep""#);
        let backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.2");
        drop(backup);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("all down: keeping what is in effect (127.0.0.2)"),
            "{}",
            stderr(&out)
        );
        assert_eq!(live_web(), "127.0.0.2");
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.2")
        );
    });
}

#[test]
fn all_down_fallback_reaches_the_live_ruleset() {
    in_netns(|| {
        let f = fixture(r#", "all_down": "fallback", "fallback": {"ip4": "192.0.2.1"}"#);
        let primary = listen("127.0.0.1", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.1");
        drop(primary);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "192.0.2.1");
        // status: CRITICAL, exit 2
        let out = f.status(&[]);
        assert_exit(&out, 2);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("CRITICAL: "), "{text}");
        assert!(
            text.contains("all down: rendering the fallback (192.0.2.1)"),
            "{text}"
        );
    });
}

#[test]
fn preempt_false_stays_on_the_backup_after_the_primary_returns() {
    in_netns(|| {
        let f = fixture(r#", "preempt": false"#);
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.2");
        let _primary = listen("127.0.0.1", PORT);
        for _ in 0..3 {
            assert_exit(&f.run(&[]), 0);
            assert_eq!(live_web(), "127.0.0.2");
        }
        let out = f.status(&[]);
        assert_exit(&out, 1);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("preempt off: staying here although 127.0.0.1:9443 is up again"),
            "{text}"
        );
    });
}

#[test]
fn preempt_delay_is_honoured() {
    in_netns(|| {
        let f = fixture(r#", "preempt_delay_s": 2"#);
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.2");
        let _primary = listen("127.0.0.1", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.2", "must wait for the delay");
        let out = f.status(&["--json"]);
        assert_exit(&out, 1);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let reason = json["defines"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("preempt delay: 127.0.0.1:9443 is up again"),
            "{reason}"
        );
        // Unix time has 1 s resolution: up "for 2 s" can take just under 3 s.
        std::thread::sleep(Duration::from_millis(3100));
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.1");
    });
}

#[test]
fn corrupt_or_foreign_state_is_ignored_not_fatal() {
    in_netns(|| {
        let f = fixture(r#", "fall": 3"#);
        let _primary = listen("127.0.0.1", PORT);
        fs::create_dir_all(f.state.parent().unwrap()).unwrap();
        fs::write(&f.state, "{ this is not json").unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("ignoring the state file"),
            "{}",
            stderr(&out)
        );
        assert_eq!(live_web(), "127.0.0.1");
        // the run rewrote a valid state
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&f.state).unwrap()).unwrap();
        assert_eq!(state["variables"]["web"]["v4"]["selected"], 0);
    });
}

#[test]
fn history_follows_addresses_across_config_edits_and_removed_variables_are_dropped() {
    in_netns(|| {
        let f = fixture(r#", "fall": 3"#);
        let _backup = listen("127.0.0.2", PORT);
        let _other = listen("127.0.0.3", PORT);
        let primary = listen("127.0.0.1", PORT);
        assert_exit(&f.run(&[]), 0);
        drop(primary);
        // fall 3: one failure is not enough
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.1");
        // A new candidate list: 127.0.0.1 keeps its counters (1 of 3 failures), so the
        // second failure still keeps it, and the third moves traffic to the new backup.
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.3"], "port": {PORT}, "fall": 3}},
                "gone": {{"ip4": "127.0.0.9", "port": {PORT}}}}}}}"#
        ));
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.1");
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.3");
        // A variable removed from the config disappears from the state.
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.3"], "port": {PORT}, "fall": 3}}}}}}"#
        ));
        assert_exit(&f.run(&[]), 0);
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&f.state).unwrap()).unwrap();
        let names: Vec<_> = state["variables"].as_object().unwrap().keys().collect();
        assert_eq!(names, ["web"]);
    });
}

#[test]
fn an_interrupted_apply_is_retried_even_if_the_include_is_already_on_disk() {
    in_netns(|| {
        let f = fixture("");
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(live_web(), "127.0.0.1");
        drop(primary);
        // Simulate a run that wrote the new include and died before the reload.
        let new = f.output_text().unwrap().replace("127.0.0.1", "127.0.0.2");
        fs::write(&f.output, &new).unwrap();
        let calls = f.nft_calls().len();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("not applied successfully yet"),
            "{}",
            stderr(&out)
        );
        assert_eq!(f.nft_calls().len(), calls + 3);
        assert_eq!(live_web(), "127.0.0.2");
        // and now it is settled
        let out = f.run(&[]);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
    });
}

#[test]
fn failed_reload_is_retried_with_state() {
    in_netns(|| {
        let f = fixture(r#", "fall": 2"#);
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        drop(primary);
        assert_exit(&f.run(&[]), 0); // 1/2 failures
        assert_exit(&f.run_with_reload("false", &[]), 1); // 2/2: switch, reload fails
        assert_eq!(live_web(), "127.0.0.1");
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.1")
        );
        assert_exit(&f.run(&[]), 0); // retried
        assert_eq!(live_web(), "127.0.0.2");
    });
}

#[test]
fn status_reports_ok_warning_and_unknown_with_json() {
    in_netns(|| {
        let f = fixture(r#", "fall": 3"#);
        // never run: UNKNOWN
        let out = f.status(&[]);
        assert_exit(&out, 3);
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("UNKNOWN: no state"));

        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        assert_exit(&f.run(&[]), 0);
        let out = f.status(&["--json"]);
        assert_exit(&out, 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["status"], "OK");
        assert_eq!(json["checked_now"], false);
        let d = &json["defines"][0];
        assert_eq!(d["define"], "web_v4");
        assert_eq!(d["rendered"], "127.0.0.1");
        assert_eq!(d["selected"], 0);
        assert_eq!(d["candidates"][0]["state"], "up");
        assert_eq!(d["candidates"][0]["needed"], 3);
        assert!(d["candidates"][0]["latency_ms"].as_f64().is_some());

        // --check runs fresh probes: one failure of three shows as a streak, still OK
        drop(primary);
        let out = f.status(&["--check", "--json"]);
        assert_exit(&out, 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["checked_now"], true);
        assert_eq!(json["defines"][0]["candidates"][0]["streak"], 1);
        assert_eq!(
            json["defines"][0]["candidates"][0]["error"],
            "connection refused"
        );
        // ... and saved nothing: the state still has no failure counted
        let state: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&f.state).unwrap()).unwrap();
        assert_eq!(
            state["variables"]["web"]["v4"]["candidates"][0]["counted"]["streak"],
            0
        );

        for _ in 0..3 {
            assert_exit(&f.run(&[]), 0);
        }
        let out = f.status(&[]);
        assert_exit(&out, 1);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("WARNING: 1 define(s) failed over"),
            "{text}"
        );
        assert!(
            text.contains("preferred candidate 127.0.0.1:9443 down 3/3"),
            "{text}"
        );

        // unreadable config: UNKNOWN
        f.write_config("{");
        assert_exit(&f.status(&[]), 3);
    });
}
