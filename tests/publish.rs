//! The on-change hook and the Prometheus textfile, with the real binary, real listeners and
//! real nft in a private network namespace; the textfile is read by the official Prometheus
//! Python client's parser.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

const PORT: u16 = 8443;

fn web_config(settings: &str) -> String {
    format!(
        r#"{{"settings": {{{settings}}},
            "failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    )
}

/// `KEY=VALUE` lines as the hook's `env` printed them.
fn env_of(path: &std::path::Path) -> Vec<(String, String)> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the hook did not run?)", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn hook_is_told_what_changed_and_its_failure_leaves_the_apply_alone() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        let env_file = f.dir.path().join("hook.env");
        let stdin_file = f.dir.path().join("hook.stdin");
        // Fails on purpose: a failing hook must change neither the apply nor the exit code.
        let script = format!(
            "env | grep ^FAILOVER_ | sort > {}; cat > {}; echo hello from the hook; echo oops >&2; exit 3",
            env_file.display(),
            stdin_file.display()
        );
        f.write_config(&web_config(&format!(
            r#""on_change": {{"command": ["/bin/sh", "-c", {}], "timeout_ms": 5000}}"#,
            serde_json::to_string(&script).unwrap()
        )));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");

        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("on_change: hello from the hook"), "{log}");
        assert!(log.contains("on_change: oops"), "{log}");
        assert!(
            log.contains("warning: on_change: /bin/sh failed (exit status: 3)"),
            "{log}"
        );
        assert!(ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"));
        let env = env_of(&env_file);
        // The first apply creates both defines.
        assert_eq!(get(&env, "FAILOVER_CHANGES"), Some("2"), "{env:?}");
        assert_eq!(get(&env, "FAILOVER_DEFINE"), Some("web_v4"));
        assert_eq!(get(&env, "FAILOVER_1_OLD"), Some(""));
        assert_eq!(get(&env, "FAILOVER_1_NEW"), Some("127.0.0.1"));
        assert_eq!(get(&env, "FAILOVER_1_REASON"), Some("preferred"));
        assert_eq!(get(&env, "FAILOVER_2_DEFINE"), Some("web_v6"));
        assert_eq!(get(&env, "FAILOVER_2_REASON"), Some("no_addresses"));

        drop(primary);
        fs::remove_file(&env_file).unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(ruleset().contains("ip daddr 127.0.0.2 tcp dport 8443"));
        let env = env_of(&env_file);
        let expected = [
            ("FAILOVER_CHANGES", "1"),
            ("FAILOVER_DEFINE", "web_v4"),
            ("FAILOVER_VARIABLE", "web"),
            ("FAILOVER_FAMILY", "v4"),
            ("FAILOVER_OLD", "127.0.0.1"),
            ("FAILOVER_NEW", "127.0.0.2"),
            ("FAILOVER_CANDIDATE", "127.0.0.2:8443"),
            ("FAILOVER_REASON", "failed_over"),
            (
                "FAILOVER_REASON_TEXT",
                "preferred candidate 127.0.0.1:8443 down 1/1",
            ),
            ("FAILOVER_1_DEFINE", "web_v4"),
            ("FAILOVER_1_OLD", "127.0.0.1"),
            ("FAILOVER_1_NEW", "127.0.0.2"),
        ];
        for (k, v) in expected {
            assert_eq!(get(&env, k), Some(v), "{k} in {env:?}");
        }
        let stdin: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&stdin_file).unwrap()).unwrap();
        let changes = stdin["changes"].as_array().unwrap();
        assert_eq!(changes.len(), 1, "{stdin}");
        assert_eq!(changes[0]["define"], "web_v4");
        assert_eq!(changes[0]["variable"], "web");
        assert_eq!(changes[0]["family"], "v4");
        assert_eq!(changes[0]["old"], "127.0.0.1");
        assert_eq!(changes[0]["new"], "127.0.0.2");
        assert_eq!(changes[0]["reason"], "failed_over");
        assert!(stdin["at"].as_u64().unwrap() > 1_700_000_000);

        // Unchanged: no apply, no hook.
        fs::remove_file(&env_file).unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!env_file.exists(), "the hook ran on an unchanged run");
        // The next change is applied although the hook failed every time.
        let _primary = listen("127.0.0.1", PORT);
        assert_exit(&f.run(&[]), 0);
        assert!(ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"));
        assert_eq!(
            get(&env_of(&env_file), "FAILOVER_REASON"),
            Some("preferred")
        );
    });
}

#[test]
fn hook_does_not_run_when_the_apply_failed() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let marker = f.dir.path().join("ran");
        f.write_config(&web_config(&format!(
            r#""on_change": {{"command": ["/usr/bin/touch", "{}"]}}"#,
            marker.display()
        )));
        f.write_main("");
        let out = f.run_with_reload("/bin/false", &[]);
        assert_exit(&out, 1);
        assert!(
            !marker.exists(),
            "the hook ran although nothing was applied"
        );
        assert_exit(&f.run(&[]), 0);
        assert!(marker.exists(), "the hook did not run after the apply");
    });
}

#[test]
fn hung_hook_is_killed_with_its_process_group_at_the_timeout() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let pid_file = f.dir.path().join("child.pid");
        let script = format!(
            "sleep 60 & echo $! > {}; echo started; sleep 60",
            pid_file.display()
        );
        f.write_config(&web_config(&format!(
            r#""on_change": {{"command": ["/bin/sh", "-c", {}], "timeout_ms": 700}}"#,
            serde_json::to_string(&script).unwrap()
        )));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");
        let started = Instant::now();
        let out = f.run(&[]);
        let took = started.elapsed();
        assert_exit(&out, 0);
        assert!(ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"));
        let log = stderr(&out);
        assert!(
            log.contains("on_change: /bin/sh still running after 700 ms; killed it"),
            "{log}"
        );
        assert!(log.contains("on_change: started"), "{log}");
        assert!(took >= Duration::from_millis(700), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // The hook's own child went with it.
        let pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let alive =
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "));
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the hook's child {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Every sample of a textfile as `name{label=value,...} value`, one per line, sorted, as the
/// official Prometheus Python client parses it (it fails on anything malformed).
fn parse_prom(path: &std::path::Path) -> Vec<String> {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import sys\n\
             from prometheus_client.parser import text_string_to_metric_families\n\
             lines = []\n\
             for fam in text_string_to_metric_families(open(sys.argv[1]).read()):\n\
             \x20   assert fam.documentation, fam.name\n\
             \x20   for s in fam.samples:\n\
             \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
             \x20       lines.append(f'{fam.type} {s.name}{{{labels}}} {int(s.value) if s.value == int(s.value) else s.value!r}')\n\
             print('\\n'.join(sorted(lines)))\n",
        )
        .arg(path)
        .output()
        .expect("/usr/bin/python3 with prometheus_client (Debian: python3-prometheus-client)");
    assert!(
        out.status.success(),
        "the Prometheus parser refused {}:\n{}\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(path).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn has(samples: &[String], line: &str) {
    assert!(
        samples.iter().any(|s| s == line),
        "missing `{line}` in:\n{}",
        samples.join("\n")
    );
}

fn value(samples: &[String], prefix: &str) -> f64 {
    let line = samples
        .iter()
        .find(|s| s.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{}", samples.join("\n")));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn metrics_follow_a_known_failover_and_parse_with_the_prometheus_parser() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        let prom_dir = f.dir.path().join("textfile");
        fs::create_dir(&prom_dir).unwrap();
        let prom = prom_dir.join("nftables_failover.prom");
        f.write_config(&web_config(&format!(
            r#""metrics": {{"path": "{}"}}"#,
            prom.display()
        )));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");
        let l =
            |cand: &str| format!("candidate={cand}:{PORT},define=web_v4,family=v4,variable=web");
        let lr = |cand: &str, result: &str| {
            format!("candidate={cand}:{PORT},define=web_v4,family=v4,result={result},variable=web")
        };

        assert_exit(&f.run(&[]), 0);
        let s = parse_prom(&prom);
        // readable by node_exporter, which runs as another user
        assert_eq!(
            fs::metadata(&prom).unwrap().permissions().mode() & 0o777,
            0o644
        );
        has(
            &s,
            &format!(
                "gauge nftables_failover_candidate_up{{{}}} 1",
                l("127.0.0.1")
            ),
        );
        has(
            &s,
            "gauge nftables_failover_define_status{define=web_v4,family=v4,status=preferred,variable=web} 1",
        );
        has(
            &s,
            "gauge nftables_failover_define_status{define=web_v4,family=v4,status=failed_over,variable=web} 0",
        );
        has(&s, "counter nftables_failover_reloads_total{} 1");
        has(&s, "counter nftables_failover_apply_failures_total{} 0");

        drop(primary);
        assert_exit(&f.run(&[]), 0);
        // A failing reload: counted, the previous include kept.
        let _primary = listen("127.0.0.1", PORT);
        assert_exit(&f.run_with_reload("/bin/false", &[]), 1);
        let s = parse_prom(&prom);
        has(
            &s,
            &format!(
                "gauge nftables_failover_candidate_up{{{}}} 1",
                l("127.0.0.2")
            ),
        );
        has(
            &s,
            &format!(
                "gauge nftables_failover_candidate_last_check_up{{{}}} 1",
                l("127.0.0.1")
            ),
        );
        // Checked three times: up, refused, up.
        has(
            &s,
            &format!(
                "counter nftables_failover_candidate_checks_total{{{}}} 2",
                lr("127.0.0.1", "up")
            ),
        );
        has(
            &s,
            &format!(
                "counter nftables_failover_candidate_checks_total{{{}}} 1",
                lr("127.0.0.1", "down")
            ),
        );
        // What is in effect: the apply back to the preferred candidate failed.
        has(
            &s,
            "gauge nftables_failover_define_status{define=web_v4,family=v4,status=failed_over,variable=web} 1",
        );
        has(&s, "counter nftables_failover_reloads_total{} 2");
        has(&s, "counter nftables_failover_apply_failures_total{} 1");
        let latency = value(
            &s,
            &format!(
                "gauge nftables_failover_candidate_last_check_latency_seconds{{{}}}",
                l("127.0.0.1")
            ),
        );
        assert!(latency > 0.0 && latency < 1.0, "{latency}");
        let run = value(&s, "gauge nftables_failover_run_duration_seconds{}");
        assert!(run > 0.0 && run < 10.0, "{run}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let applied = value(
            &s,
            "gauge nftables_failover_last_successful_apply_timestamp_seconds{}",
        );
        assert!((now - applied).abs() < 30.0, "{applied} vs {now}");
        // Still on 127.0.0.2 (the apply back failed): the live ruleset says so.
        assert!(ruleset().contains("ip daddr 127.0.0.2 tcp dport 8443"));

        // An unchanged run rewrites the file, counters carried over.
        assert_exit(&f.run(&[]), 0);
        let s = parse_prom(&prom);
        has(&s, "counter nftables_failover_reloads_total{} 3");
        has(
            &s,
            &format!(
                "counter nftables_failover_candidate_checks_total{{{}}} 3",
                lr("127.0.0.1", "up")
            ),
        );
        assert_exit(&f.run(&[]), 0);
        let s = parse_prom(&prom);
        has(&s, "counter nftables_failover_reloads_total{} 3");
        has(
            &s,
            &format!(
                "counter nftables_failover_candidate_checks_total{{{}}} 4",
                lr("127.0.0.1", "up")
            ),
        );
        // Atomic replacement leaves no temporary files for node_exporter to trip over.
        let names: Vec<_> = fs::read_dir(&prom_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["nftables_failover.prom"]);
    });
}

#[test]
fn publish_settings_are_validated_like_every_other_key() {
    let f = Fixture::new();
    f.write_config(&web_config(
        r#""on_change": {"command": ["notify-send"]}, "metrics": {"path": "/tmp/x.txt"},
           "mqtt": {"port": 70000, "refresh_s": 600}"#,
    ));
    let out = f.run(&[]);
    assert_exit(&out, 2);
    let log = stderr(&out);
    for expected in [
        "settings.on_change.command[0]: expected the program's absolute path",
        "settings.metrics.path: expected a file name ending in .prom",
        "settings.mqtt: missing \"broker\"",
        "settings.mqtt.port: expected a port from 1 to 65535, found number 70000",
        "settings.mqtt.expire_after_s: expected more than refresh_s (600), found 300",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    assert!(f.output_text().is_none());
}

/// A live update is counted as one, not as a reload: `reloads_total` counts reloads alone.
#[test]
fn live_updates_and_reloads_are_counted_apart() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        let prom = f.dir.path().join("nftables_failover.prom");
        f.write_config(&web_config(&format!(
            r#""apply": "live", "metrics": {{"path": "{}"}}"#,
            prom.display()
        )));
        f.write_main("");
        // The first apply creates the tool's table: a reload.
        assert_exit(&f.run(&[]), 0);
        let s = parse_prom(&prom);
        has(&s, "counter nftables_failover_reloads_total{} 1");
        has(&s, "counter nftables_failover_live_updates_total{} 0");
        // A failover of a live variable updates its set and map only.
        drop(primary);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("updated live"), "{}", stderr(&out));
        let s = parse_prom(&prom);
        has(&s, "counter nftables_failover_reloads_total{} 1");
        has(&s, "counter nftables_failover_live_updates_total{} 1");
    });
}
