//! First installs in any order, with a stand-in for `systemctl` that keeps a unit state in a
//! file (the real systemd is in tests/boot.rs): nftables.service failed for lack of the include
//! is started; one that is not in use is never started, so the rules of other tools survive.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const PORT: u16 = 8443;

/// A `systemctl` that knows one unit: `reload` and `start` load the main config with nft,
/// `is-active` prints the state kept in `state`.
fn fake_systemctl(f: &Fixture, state: &str) -> (PathBuf, PathBuf) {
    let dir = f.dir.path().join("bin");
    fs::create_dir_all(&dir).unwrap();
    let state_file = f.dir.path().join("unit-state");
    fs::write(&state_file, state).unwrap();
    let script = dir.join("systemctl");
    fs::write(
        &script,
        format!(
            r#"#!/bin/sh
state=$(cat '{state}')
echo "$*" >> '{state}.calls'
case "$1 $2" in
"reload nftables.service")
  [ "$state" = active ] || {{ echo "nftables.service is not active, cannot reload." >&2; exit 1; }}
  exec /usr/sbin/nft -f '{main}' ;;
"is-active nftables.service")
  echo "$state"; [ "$state" = active ] && exit 0; exit 3 ;;
"start nftables.service")
  if /usr/sbin/nft -f '{main}'; then echo active > '{state}'; else echo failed > '{state}'; exit 1; fi ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
"#,
            state = state_file.display(),
            main = f.main_config.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script, state_file)
}

fn calls(state_file: &Path) -> Vec<String> {
    fs::read_to_string(format!("{}.calls", state_file.display()))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn setup() -> (Fixture, Listener) {
    let primary = listen("127.0.0.1", PORT);
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    // The site's nftables.conf came first and already uses the define.
    f.write_main(&format!(
        "  ip daddr $web_v4 tcp dport {PORT} counter accept"
    ));
    (f, primary)
}

#[test]
fn nftables_failed_for_lack_of_the_include_is_started_by_the_first_run() {
    in_netns(|| {
        let (f, _primary) = setup();
        let (systemctl, state) = fake_systemctl(&f, "failed");
        // As at boot: the main config does not load without the include.
        assert!(
            !std::process::Command::new("nft")
                .args(["-c", "-f", path_str(&f.main_config)])
                .status()
                .unwrap()
                .success()
        );
        let out = f.run_with_reload(
            &format!("{} reload nftables.service", systemctl.display()),
            &[],
        );
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(
            log.contains("applied and nftables.service started: it had failed"),
            "{log}"
        );
        assert_eq!(fs::read_to_string(&state).unwrap().trim(), "active");
        assert_eq!(
            calls(&state),
            [
                "reload nftables.service",
                "is-active nftables.service",
                "start nftables.service"
            ]
        );
        assert!(
            ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"),
            "{}",
            ruleset()
        );
        // Converged: the next run has nothing to do.
        let out = f.run_with_reload(
            &format!("{} reload nftables.service", systemctl.display()),
            &[],
        );
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
    });
}

#[test]
fn nftables_not_in_use_is_never_started_and_other_rules_survive() {
    in_netns(|| {
        let (f, _primary) = setup();
        let (systemctl, state) = fake_systemctl(&f, "inactive");
        // Another tool's rules (Docker, ufw, firewalld): a reload would flush them.
        nft_apply(
            "table ip docker_like {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n }\n}\n",
        );
        let reload = format!("{} reload nftables.service", systemctl.display());
        let out = f.run_with_reload(&reload, &[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(
            log.contains("installed, not loaded: nftables.service is inactive"),
            "{log}"
        );
        assert_eq!(fs::read_to_string(&state).unwrap().trim(), "inactive");
        assert!(!calls(&state).iter().any(|c| c.starts_with("start")));
        assert!(ruleset().contains("table ip docker_like"), "{}", ruleset());
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.1")
        );
        // The include is taken as in effect: no retry loop.
        let out = f.run_with_reload(&reload, &[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("unchanged"), "{}", stderr(&out));
        assert_eq!(calls(&state).len(), 2, "{:?}", calls(&state));
    });
}

#[test]
fn a_reload_refused_by_a_running_nftables_still_rolls_back() {
    in_netns(|| {
        let (f, _primary) = setup();
        let (systemctl, state) = fake_systemctl(&f, "active");
        // A running unit whose reload fails (its ExecReload check, a timeout, ...).
        fs::write(
            &systemctl,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}.calls'\n\
                 [ \"$1\" = is-active ] && {{ echo active; exit 0; }}\n\
                 echo 'Job for nftables.service failed.' >&2\nexit 1\n",
                state.display()
            ),
        )
        .unwrap();
        let out = f.run_with_reload(
            &format!("{} reload nftables.service", systemctl.display()),
            &[],
        );
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(log.contains("Job for nftables.service failed."), "{log}");
        // No include was in effect, so the new one is removed again (and said so).
        assert!(log.contains("removed the new"), "{log}");
        assert!(!log.contains("restored the last applied"), "{log}");
        assert!(f.output_text().is_none());
        assert_eq!(
            calls(&state),
            ["reload nftables.service", "is-active nftables.service"]
        );
    });
}
