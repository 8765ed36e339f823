//! Ordinary admin actions at the edges, each in a private network namespace with the real `nft`:
//! a config edit in live mode, one variable the firewall refuses, an upgrade from the Python
//! addon. Each must leave every other variable free to fail over.

mod common;

use common::*;
use std::fs;

const PORT: u16 = 8443;
const TABLE: &str = "inet nftables_failover";

fn elements(object: &str) -> String {
    sh(&format!("nft list {object}"))
        .lines()
        .filter(|l| l.contains("elements") || l.contains("type"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `svc` in live mode with or without marks as values; `db` live too, used by the admin's rule.
fn live_config(svc_values: bool) -> String {
    let values = if svc_values {
        r#", "values": [200, 201]"#
    } else {
        ""
    };
    format!(
        r#"{{"settings": {{"apply": "live"}}, "failover": {{
            "svc": {{"ip4": ["127.0.0.5", "127.0.0.6"], "port": {PORT}{values}}},
            "db": {{"ip4": ["127.0.0.7", "127.0.0.8"], "port": {PORT}}}
        }}}}"#
    )
}

fn write_live_main(f: &Fixture) {
    fs::write(
        &f.main_config,
        format!(
            r#"flush ruleset
include "{addons}/*.nft"
table inet nftables_failover {{
	chain count {{
		type filter hook output priority filter; policy accept;
		ip daddr @db_v4 tcp dport {PORT} counter comment "to_db"
	}}
}}
"#,
            addons = f.addon_dir.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_live_values_edit_never_freezes_another_variable() {
    in_netns(|| {
        let _svc_a = listen("127.0.0.5", PORT);
        let _svc_b = listen("127.0.0.6", PORT);
        let db_a = listen("127.0.0.7", PORT);
        let _db_b = listen("127.0.0.8", PORT);
        let f = Fixture::new();
        f.write_config(&live_config(true));
        write_live_main(&f);
        assert_exit(&f.run(&[]), 0);
        assert!(elements(&format!("map {TABLE} svc_v4_map")).contains("inet_service : mark"));

        // The admin drops `values` (marks → addresses) while db's primary dies.
        f.write_config(&live_config(false));
        drop(db_a);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let text = f.output_text().unwrap();
        assert_eq!(
            define(&text, "db_v4"),
            Some("127.0.0.8"),
            "{}",
            stderr(&out)
        );
        assert_eq!(define(&text, "svc_v4"), Some("127.0.0.5"));
        assert!(elements(&format!("set {TABLE} db_v4")).contains("127.0.0.8"));
        let map = elements(&format!("map {TABLE} svc_v4_map"));
        assert!(map.contains("inet_service : ipv4_addr"), "{map}");
        assert!(map.contains("8443 : 127.0.0.5"), "{map}");

        // And back (addresses → marks) while db's primary returns and svc's dies.
        f.write_config(&live_config(true));
        let _db_a = listen("127.0.0.7", PORT);
        drop(_svc_a);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let text = f.output_text().unwrap();
        assert_eq!(
            define(&text, "db_v4"),
            Some("127.0.0.7"),
            "{}",
            stderr(&out)
        );
        assert_eq!(define(&text, "svc_v4"), Some("201"));
        let map = elements(&format!("map {TABLE} svc_v4_map"));
        assert!(map.contains("inet_service : mark"), "{map}");
        assert!(map.contains("8443 : 0x000000c9"), "{map}");
        assert!(elements(&format!("set {TABLE} db_v4")).contains("127.0.0.7"));
        // Next run: nothing left to do.
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
    });
}

fn three_variables(apply: &str) -> String {
    format!(
        r#"{{"settings": {{"apply": "{apply}"}}, "failover": {{
            "web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}},
            "db": {{"ip4": ["127.0.0.7", "127.0.0.8"], "port": {PORT}}},
            "api": {{"ip4": ["127.0.0.9", "127.0.0.10"], "port": {PORT}}}
        }}}}"#
    )
}

#[test]
fn a_variable_the_firewall_refuses_holds_back_no_other() {
    for apply in ["reload", "live"] {
        in_netns(move || {
            let web_a = listen("127.0.0.1", PORT);
            let _web_b = listen("127.0.0.2", PORT);
            let db_a = listen("127.0.0.7", PORT);
            let _db_b = listen("127.0.0.8", PORT);
            let api_a = listen("127.0.0.9", PORT);
            let _api_b = listen("127.0.0.10", PORT);
            let f = Fixture::new();
            f.write_config(&three_variables(apply));
            f.write_main("  ip daddr $db_v4 counter\n  ip daddr $api_v4 counter");
            fs::write(
                &f.main_config,
                fs::read_to_string(&f.main_config).unwrap() + GUARD,
            )
            .unwrap();
            assert_exit(&f.run(&[]), 0);

            // All three primaries die; the firewall refuses web's backup.
            drop((web_a, db_a, api_a));
            for round in 0..2 {
                let out = f.run(&[]);
                let log = stderr(&out);
                assert_exit(&out, 1);
                assert!(log.contains("conflicting intervals"), "{apply}: {log}");
                // The first run tries the changes apart; from then on only web's is pending.
                assert_eq!(
                    log.contains("web: its change was not applied, it keeps the value in effect"),
                    round == 0,
                    "{apply}: {log}"
                );
                let text = f.output_text().unwrap();
                assert_eq!(define(&text, "web_v4"), Some("127.0.0.1"), "{apply}: {log}");
                assert_eq!(define(&text, "db_v4"), Some("127.0.0.8"), "{apply}: {log}");
                assert_eq!(
                    define(&text, "api_v4"),
                    Some("127.0.0.10"),
                    "{apply}: {log}"
                );
                if round == 0 {
                    assert!(
                        log.contains("applied the changes of 2 of 3 variables"),
                        "{log}"
                    );
                }
                // The kernel runs the others' new values, and what a boot would load.
                let rules = ruleset();
                match apply {
                    "reload" => {
                        assert!(rules.contains("ip daddr 127.0.0.8 counter"), "{rules}");
                        assert!(rules.contains("ip daddr 127.0.0.10 counter"), "{rules}");
                    }
                    _ => {
                        let db = sh(&format!("nft list set {TABLE} db_v4"));
                        assert!(db.contains("127.0.0.8"), "{db}");
                        let web = sh(&format!("nft list set {TABLE} web_v4"));
                        assert!(web.contains("127.0.0.1"), "{web}");
                    }
                }
                sh(&format!("nft -c -f {}", f.main_config.display()));
            }
        });
    }
}

#[test]
fn a_misspelt_top_level_key_exits_2_with_a_hint_and_changes_nothing() {
    in_netns(|| {
        let _a = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let body = format!(
            r#""failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}"#
        );
        f.write_config(&format!("{{{body}}}"));
        f.write_main("  ip daddr $web_v4 counter");
        assert_exit(&f.run(&[]), 0);
        let include = f.output_text().unwrap();
        let state = fs::read(&f.state).unwrap();

        // The fail-closed policy the admin meant to write, one letter short.
        f.write_config(&format!(
            r#"{{"setings": {{"all_down": "fallback", "fallback": {{"ip4": "192.0.2.1"}}}}, {body}}}"#
        ));
        let out = f.run(&[]);
        assert_exit(&out, 2);
        let log = stderr(&out);
        assert!(
            log.contains(&format!(
                "{}: 1 problem in config:\n  top level: unknown key \"setings\"; did you mean \"settings\"?",
                f.config.display()
            )),
            "{log}"
        );
        assert!(log.contains("nothing was changed"), "{log}");
        assert_eq!(f.output_text().unwrap(), include);
        assert_eq!(fs::read(&f.state).unwrap(), state);

        // A setting put at the top level is refused too, with where it belongs.
        f.write_config(&format!(
            r#"{{"on_change": {{"command": ["/bin/true"]}}, {body}}}"#
        ));
        let out = f.run(&[]);
        assert_exit(&out, 2);
        assert!(
            stderr(&out)
                .contains("top level: \"on_change\" is a setting; move it into \"settings\""),
            "{}",
            stderr(&out)
        );
    });
}

/// The include as the Python addon writes it: values as the config spells them.
const PYTHON_INCLUDE: &str = "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\n\
    define web_v4 = 127.0.0.2\ndefine web_v6 = 2001:DB8::2:3\n";

#[test]
fn an_upgrade_from_the_python_addon_keeps_the_backup_in_use() {
    in_netns(|| {
        sh(
            "ip -6 addr add 2001:db8::2:2/128 dev lo nodad; ip -6 addr add 2001:db8::2:3/128 dev lo nodad",
        );
        let _listeners = [
            listen("127.0.0.1", PORT),
            listen("127.0.0.2", PORT),
            listen("2001:db8::2:2", PORT),
            listen("2001:db8::2:3", PORT),
        ];
        let f = Fixture::new();
        // The reference's example spelling, and no preemption: traffic stays where it is.
        f.write_config(&format!(
            r#"{{"settings": {{"preempt": false}}, "failover": {{"web": {{
                "ip4": ["127.0.0.1", "127.0.0.2"],
                "ip6": ["2001:DB8::2:2", "2001:DB8::2:3"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 counter\n  ip6 daddr $web_v6 counter");
        // The Python addon's last include, loaded; no record and no state of ours yet.
        fs::write(&f.output, PYTHON_INCLUDE).unwrap();
        sh(&format!("nft -f {}", f.main_config.display()));

        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        let text = f.output_text().unwrap();
        assert_eq!(define(&text, "web_v4"), Some("127.0.0.2"), "{log}");
        // The same address, now written in the canonical form; no switch to the primary.
        assert_eq!(define(&text, "web_v6"), Some("2001:db8::2:3"), "{log}");
        assert!(!log.contains("->"), "a define changed: {log}");
        assert!(
            ruleset().contains("ip6 daddr 2001:db8::2:3 counter"),
            "{}",
            ruleset()
        );
        // From then on: unchanged.
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
    });
}

#[test]
fn the_all_down_warning_is_logged_when_it_starts_not_on_every_run() {
    in_netns(|| {
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 counter");
        let warned = |out: &std::process::Output| {
            stderr(out).contains("warning: web_v4: all down: using the first candidate (127.0.0.1)")
        };
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(warned(&out), "{}", stderr(&out));
        for _ in 0..2 {
            let out = f.run(&[]);
            assert_exit(&out, 0);
            assert!(!warned(&out), "repeated: {}", stderr(&out));
            assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        }
        let _primary = listen("127.0.0.1", PORT);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("web_v4: no longer all down: preferred candidate up"),
            "{}",
            stderr(&out)
        );
    });
}

#[test]
fn a_staging_directory_among_the_includes_is_refused() {
    in_netns(|| {
        let _a = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 counter");
        for stage in [
            f.addon_dir.clone(),
            f.base_dir.clone(),
            f.base_dir.join("stage"),
        ] {
            let out = f.run(&["--stage-dir", path_str(&stage)]);
            assert_exit(&out, 2);
            let log = stderr(&out);
            assert!(
                log.contains("whose *.nft files the staged check includes"),
                "{log}"
            );
            assert!(f.output_text().is_none(), "{log}");
        }
    });
}

/// A root run refuses a config that the service user (anyone but root) can rewrite: it would
/// run that config's hook as root. The service user's own run obeys it.
#[test]
fn a_root_run_refuses_a_config_others_can_write() {
    in_netns(|| {
        let _a = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let ran = f.dir.path().join("hook-ran");
        let hook = f.dir.path().join("hook.sh");
        fs::write(&hook, format!("#!/bin/sh\nid -u > {}\n", ran.display())).unwrap();
        sh(&format!("chmod 755 {}", hook.display()));
        f.write_config(&format!(
            r#"{{"settings": {{"on_change": {{"command": ["{}"]}}}}, "failover": {{"web": {{"ip4": ["127.0.0.1"], "port": {PORT}}}}}}}"#,
            hook.display()
        ));
        f.write_main("  ip daddr $web_v4 counter");
        // The addon directory writable by the service user's group, as the package makes it.
        sh(&format!(
            "chgrp nogroup {d} && chmod 2775 {d}",
            d = f.addon_dir.display()
        ));
        let out = f.run(&[]);
        assert_exit(&out, 2);
        let log = stderr(&out);
        assert!(log.contains("refusing to run as root: the config"), "{log}");
        assert!(
            log.contains("is writable by its group (mode 2775)"),
            "{log}"
        );
        assert!(!ran.exists(), "the hook ran");
        assert!(f.output_text().is_none());
        // Root's alone again: the run goes ahead, and its hook runs.
        sh(&format!("chmod 755 {}", f.addon_dir.display()));
        assert_exit(&f.run(&[]), 0);
        assert_eq!(fs::read_to_string(&ran).unwrap().trim(), "0");
    });
}

/// Under -q a failing hook's own words still reach the log, with its warning; a state
/// directory replaced by a link is named as such.
#[test]
fn quiet_runs_show_a_failing_hooks_words_and_a_linked_state_directory_is_named() {
    in_netns(|| {
        let _a = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let hook = f.dir.path().join("hook.sh");
        fs::write(
            &hook,
            "#!/bin/sh\necho 'cannot reach the pager' >&2\nexit 3\n",
        )
        .unwrap();
        sh(&format!("chmod 755 {}", hook.display()));
        f.write_config(&format!(
            r#"{{"settings": {{"on_change": {{"command": ["{}"]}}}}, "failover": {{"web": {{"ip4": ["127.0.0.1"], "port": {PORT}}}}}}}"#,
            hook.display()
        ));
        f.write_main("  ip daddr $web_v4 counter");
        let out = f.run(&["-q"]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(
            log.contains("warning: on_change: cannot reach the pager"),
            "{log}"
        );
        assert!(log.contains("failed (exit status: 3)"), "{log}");

        let state_dir = f.state.parent().unwrap();
        fs::remove_dir_all(state_dir).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", state_dir).unwrap();
        let out = f.run(&[]);
        let log = stderr(&out);
        assert!(
            log.contains(&format!(
                "{} is a symlink to /etc/hostname, not a directory",
                state_dir.display()
            )),
            "{log}"
        );
    });
}

/// The Python addon ran as root and left its include root:root 0640: the service user cannot
/// read the include it would replace. The run changes nothing and says exactly what to run.
#[test]
fn an_unreadable_include_from_the_python_addon_says_what_to_run() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&f.base_dir, &f.addon_dir] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o777)).unwrap();
    }
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    fs::set_permissions(&f.config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&f.output, PYTHON_INCLUDE).unwrap();
    fs::set_permissions(&f.output, fs::Permissions::from_mode(0o640)).unwrap();
    let cmd = f.command(
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ],
        &f.reload(),
    );
    let out = output_within(cmd, std::time::Duration::from_secs(30));
    assert_exit(&out, 1);
    let log = stderr(&out);
    let p = f.output.display();
    assert!(
        log.contains(&format!(
            "as root, run `chgrp nftables-failover {p} && chmod 640 {p}`"
        )),
        "{log}"
    );
    assert_eq!(fs::read_to_string(&f.output).unwrap(), PYTHON_INCLUDE);
}
