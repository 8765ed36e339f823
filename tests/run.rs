//! The real binary against the real `nft` and real listeners, each test in its own network
//! namespace: checks, selection, apply, rollback and the unchanged path.

mod common;

use common::*;
use std::fs;
use std::time::{Duration, Instant};

const PORT: u16 = 8443;

/// An include as a previous run left it, with the first candidate selected.
const OLD: &str = "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\ndefine web_v4 = 127.0.0.1\ndefine web_v6 = ::\n";

/// A fixture with one variable `web`: 127.0.0.1, then 127.0.0.2.
fn web_fixture() -> Fixture {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    f
}

fn config_three_vars() -> String {
    format!(
        r#"{{"failover": {{
            // first refused, second up
            "refused_first": {{"ip4": ["127.0.0.1", "127.0.0.3"], "port": {PORT}}},
            // first blackholed, second up
            "blackholed_first": {{"ip4": ["127.0.0.4", "127.0.0.3"], "ip6": "::1", "port": {PORT}}},
            // first up: decided without waiting for the blackholed second
            "up_first": {{"ip4": ["127.0.0.3", "127.0.0.4"], "port": {PORT}, "values": [200, 201]}}
        }}}}"#
    )
}

#[test]
fn up_refused_and_blackholed_candidates() {
    in_netns(|| {
        let _up = listen("127.0.0.3", PORT);
        let _up6 = listen("::1", PORT);
        blackhole(&["127.0.0.4"], PORT);
        let f = Fixture::new();
        f.write_config(&config_three_vars());
        f.write_main("  ip daddr $refused_first_v4 tcp dport 8443 accept");

        let started = Instant::now();
        let out = f.run(&["--timeout", "1s"]);
        let took = started.elapsed();
        assert_exit(&out, 0);
        let text = f.output_text().unwrap();
        assert_eq!(define(&text, "refused_first_v4"), Some("127.0.0.3"));
        assert_eq!(define(&text, "refused_first_v6"), Some("::"));
        assert_eq!(define(&text, "blackholed_first_v4"), Some("127.0.0.3"));
        assert_eq!(define(&text, "blackholed_first_v6"), Some("::1"));
        assert_eq!(define(&text, "up_first_v4"), Some("200"));
        // The blackholed first candidate costs one timeout, not more.
        assert!(took >= Duration::from_millis(950), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let log = stderr(&out);
        assert!(
            log.contains(
                "refused_first_v4: (none) -> 127.0.0.3 (127.0.0.1:8443 connection refused)"
            ),
            "{log}"
        );
        assert!(
            log.contains(
                "blackholed_first_v4: (none) -> 127.0.0.3 (127.0.0.4:8443 no answer within 1000 ms)"
            ),
            "{log}"
        );
    });
}

#[test]
fn decided_variables_do_not_wait_for_lower_priority_timeouts() {
    in_netns(|| {
        let _up = listen("127.0.0.3", PORT);
        blackhole(&["127.0.0.4", "127.0.0.5"], PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"failover": {{"a": {{"ip4": ["127.0.0.3", "127.0.0.4", "127.0.0.5"], "port": {PORT}}}}}}}"#
        ));
        let started = Instant::now();
        let out = f.run(&["--dry-run", "--timeout", "10s"]);
        assert_exit(&out, 0);
        // With a 10 s timeout, waiting for either blackholed candidate would take 10 s.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            define(&String::from_utf8_lossy(&out.stdout), "a_v4"),
            Some("127.0.0.3")
        );
    });
}

#[test]
fn end_to_end_failover_reaches_the_live_ruleset_and_unchanged_runs_invoke_no_nft() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = web_fixture();
        f.write_main("  ip daddr $web_v4 tcp dport 8443 counter accept");

        assert_exit(&f.run(&[]), 0);
        assert!(
            ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"),
            "{}",
            ruleset()
        );
        // staged check, main check, reload
        assert_eq!(f.nft_calls().len(), 3, "{:?}", f.nft_calls());

        drop(primary);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            ruleset().contains("ip daddr 127.0.0.2 tcp dport 8443"),
            "{}",
            ruleset()
        );
        assert!(
            stderr(&out)
                .contains("web_v4: 127.0.0.1 -> 127.0.0.2 (127.0.0.1:8443 connection refused)"),
            "{}",
            stderr(&out)
        );
        assert_eq!(f.nft_calls().len(), 6);

        let mtime = fs::metadata(&f.output).unwrap().modified().unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
        assert_eq!(f.nft_calls().len(), 6, "an unchanged run must not run nft");
        assert_eq!(fs::metadata(&f.output).unwrap().modified().unwrap(), mtime);
    });
}

#[test]
fn staged_check_failure_leaves_the_include_untouched() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        f.write_main("");
        fs::write(&f.output, OLD).unwrap();

        // A main-config part that references a variable nothing defines.
        fs::write(
            f.base_dir.join("rules.nft"),
            "table inet t {\n chain c {\n  ip daddr $undefined_v4 accept\n }\n}\n",
        )
        .unwrap();

        let out = f.run(&[]);
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(log.contains("check of the staged config failed"), "{log}");
        assert!(
            log.contains("undefined_v4"),
            "nft's own error must be passed through:\n{log}"
        );
        assert!(log.contains("the new include was not installed"), "{log}");
        assert_eq!(f.output_text().as_deref(), Some(OLD));
        assert_eq!(f.nft_calls().len(), 1, "{:?}", f.nft_calls());
    });
}

#[test]
fn main_config_check_failure_restores_the_previous_include() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        f.write_main("  ip daddr $web_v4 accept\n  ip daddr $undefined_v4 accept");
        fs::write(&f.output, OLD).unwrap();

        fs::set_permissions(
            &f.output,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();

        let out = f.run(&[]);
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(log.contains("check of the main config failed"), "{log}");
        assert!(log.contains("restored the last applied"), "{log}");
        assert_eq!(f.output_text().as_deref(), Some(OLD));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&f.output).unwrap().permissions().mode() & 0o777,
            0o644
        );
    });
}

#[test]
fn first_apply_that_fails_removes_the_new_include() {
    in_netns(|| {
        let _up = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": "127.0.0.1", "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $undefined_v4 accept");
        assert_exit(&f.run(&[]), 1);
        assert!(!f.output.exists());
    });
}

#[test]
fn failed_reload_restores_and_the_next_run_retries() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        f.write_main("  ip daddr $web_v4 accept");
        fs::write(&f.output, OLD).unwrap();

        let out = f.run_with_reload("false", &[]);
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(
            log.contains("reload failed: `/usr/bin/false` exited with status 1"),
            "{log}"
        );
        assert!(log.contains("the next run retries"), "{log}");
        assert_eq!(f.output_text().as_deref(), Some(OLD));

        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.2")
        );
        assert!(
            ruleset().contains("ip daddr 127.0.0.2 accept"),
            "{}",
            ruleset()
        );
    });
}

#[test]
fn bad_configs_exit_2_and_touch_nothing() {
    in_netns(|| {
        let f = Fixture::new();
        f.write_main("");
        fs::write(&f.output, OLD).unwrap();

        for (config, expected) in [
            (
                "{\"failover\": {\"web\": {\"ip4\": \"127.0.0.1\", \"port\": 1,}}}",
                ":1:53: trailing comma",
            ),
            (
                r#"{"failover": {"web": {"ip4": "127.0.0.1", "port": 1, "values": ["1; flush ruleset"]}}}"#,
                "failover.web.values[0]",
            ),
            (
                r#"{"failover": {"web": {"ip4": "127.0.0.1"}}}"#,
                "failover.web: missing \"port\"",
            ),
        ] {
            f.write_config(config);
            let out = f.run(&[]);
            assert_exit(&out, 2);
            let log = stderr(&out);
            assert!(log.contains(path_str(&f.config)), "names the file: {log}");
            assert!(log.contains(expected), "{config}\n{log}");
        }
        fs::remove_file(&f.config).unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out).contains("cannot read config"),
            "{}",
            stderr(&out)
        );

        assert_eq!(f.output_text().as_deref(), Some(OLD));
        assert!(f.nft_calls().is_empty());
        assert_eq!(ruleset().trim(), "", "nothing may have been loaded");
    });
}

#[test]
fn two_concurrent_runs_give_one_consistent_result() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        f.write_main("  ip daddr $web_v4 accept");
        let f = std::sync::Arc::new(f);
        let runs: Vec<_> = (0..2)
            .map(|_| {
                let f = f.clone();
                std::thread::spawn(move || f.run(&[]))
            })
            .collect();
        for r in runs {
            assert_exit(&r.join().unwrap(), 0);
        }
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.2")
        );
        // Exactly one apply (3 nft calls); the other run found it unchanged.
        assert_eq!(f.nft_calls().len(), 3, "{:?}", f.nft_calls());
        let leftovers: Vec<_> = fs::read_dir(&f.addon_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    });
}

#[test]
fn dry_run_prints_the_include_and_writes_nothing() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        let out = f.run(&["--dry-run"]);
        assert_exit(&out, 0);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\ndefine web_v4 = 127.0.0.2\ndefine web_v6 = ::\n"
        );
        assert!(stderr(&out).contains("would change"), "{}", stderr(&out));
        assert!(!f.output.exists());
        assert!(f.nft_calls().is_empty());
    });
}

#[test]
fn usage_errors_exit_2() {
    let out = output_within(
        {
            let mut c = std::process::Command::new(BIN);
            c.arg("--no-such-flag");
            c
        },
        Duration::from_secs(10),
    );
    assert_exit(&out, 2);
    let out = output_within(
        {
            let mut c = std::process::Command::new(BIN);
            c.args(["--timeout", "forever"]);
            c
        },
        Duration::from_secs(10),
    );
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("expected a duration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reference_readme_example_reports_its_invalid_ipv6_addresses() {
    // The reference README's example writes 2001:DB8:2:2, which has 4 groups and no `::`.
    let out = output_within(
        {
            let mut c = std::process::Command::new(BIN);
            c.args(["--dry-run", "--config"]).arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/data/reference-example.json"
            ));
            c
        },
        Duration::from_secs(10),
    );
    assert_exit(&out, 2);
    let log = stderr(&out);
    assert!(log.contains("2 problems"), "{log}");
    assert!(
        log.contains(
            "failover.endpoint_filer.ip6[0]: expected an IPv6 address, found \"2001:DB8:2:2\""
        ),
        "{log}"
    );
}
