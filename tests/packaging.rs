//! The shipped packaging: systemd units, sudoers rules, the .deb, and the least-privilege path
//! (the binary as the unprivileged service user, through the shipped sudoers rules, in the
//! unit's sandbox) end to end.
//!
//! Needs root (CI runs as root) for the namespaces and sudo, and `systemd-analyze`, `visudo`,
//! `dpkg-deb`, `unshare`, `setpriv`, `nft`, `sudo` and `cargo-deb` (`.ci/run` installs them).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_nftables-failover");
const WATCH_UNIT: &str = "systemd/watch/nftables-failover-watch.service";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// The commands the binary runs through `sudo -n` when not root (src/command.rs,
/// src/apply/mod.rs, src/apply/live.rs); the sudoers file must allow exactly these.
const SUDO_COMMANDS: [&str; 7] = [
    "/usr/sbin/nft -c -f /run/nftables-failover/main.nft",
    "/usr/sbin/nft -c -f /etc/nftables.conf",
    "/usr/bin/systemctl reload nftables.service",
    "/usr/bin/systemctl is-active nftables.service",
    "/usr/bin/systemctl start nftables.service",
    "/usr/sbin/nft -c -j -f /run/nftables-failover/live.json",
    "/usr/sbin/nft -j -f /run/nftables-failover/live.json",
];

/// Settings that make systemd set NoNewPrivileges for a unit with User= (systemd.exec(5)),
/// which stops sudo and with it every change. None may appear in the service.
const IMPLY_NO_NEW_PRIVILEGES: [&str; 17] = [
    "NoNewPrivileges",
    "DynamicUser",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "PrivateDevices",
    "ProtectClock",
    "ProtectHostname",
    "ProtectKernelLogs",
    "ProtectKernelModules",
    "ProtectKernelTunables",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "SystemCallLog",
];

/// Tests here need root. Under CI (or as root) they run and must pass; a developer without root
/// gets a loud skip instead of a silent pass.
fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test} needs root and CI is set: run the tests as root (CI runs .ci/run as root)");
    }
    eprintln!("SKIPPED {test}: needs root (run `sudo cargo test` or set CI to make this fatal)");
    false
}

/// Runs a command with a time limit, capturing its output. Panics with what to install if the
/// program is missing.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {what}: {e} (is it installed? .ci/run installs it)")
        });
    // Drain both pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).map(|_| v)
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).map(|_| v)
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Non-comment, non-empty lines of a systemd unit or sudoers file, with continuations joined.
fn directives(path: &Path) -> Vec<String> {
    let body = fs::read_to_string(path).unwrap();
    let joined = body.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

/// Fails unless every one of `expected` is a directive line of `lines`.
fn assert_has(lines: &[String], expected: &[&str], what: &str) {
    for e in expected {
        assert!(lines.iter().any(|l| l == e), "{what} lacks {e:?}");
    }
}

#[test]
fn units_pass_systemd_analyze_verify_without_any_warning() {
    let dir = tempfile::tempdir().unwrap();
    // The unit names /usr/bin/nftables-failover, which verify requires to exist; point the copy
    // at the binary just built. Nothing else is changed.
    let service = fs::read_to_string(repo("systemd/nftables-failover.service")).unwrap();
    let exec = "ExecStart=/usr/bin/nftables-failover\n";
    assert_eq!(service.matches(exec).count(), 1, "ExecStart line changed?");
    fs::write(
        dir.path().join("nftables-failover.service"),
        service.replace(exec, &format!("ExecStart={BIN}\n")),
    )
    .unwrap();
    let watch = fs::read_to_string(repo(WATCH_UNIT)).unwrap();
    let exec_watch = "ExecStart=/usr/bin/nftables-failover watch\n";
    assert_eq!(
        watch.matches(exec_watch).count(),
        1,
        "ExecStart line changed?"
    );
    fs::write(
        dir.path().join("nftables-failover-watch.service"),
        watch.replace(exec_watch, &format!("ExecStart={BIN} watch\n")),
    )
    .unwrap();
    fs::copy(
        repo("systemd/nftables-failover.timer"),
        dir.path().join("nftables-failover.timer"),
    )
    .unwrap();
    // The nftables.service override, as a drop-in of the system's own nftables.service.
    let nftables = Path::new("/lib/systemd/system/nftables.service");
    assert!(
        nftables.exists(),
        "{} is missing; install the nftables package",
        nftables.display()
    );
    fs::copy(nftables, dir.path().join("nftables.service")).unwrap();
    fs::create_dir(dir.path().join("nftables.service.d")).unwrap();
    fs::copy(
        repo("systemd/nftables.service.d/override.conf"),
        dir.path().join("nftables.service.d/override.conf"),
    )
    .unwrap();

    let out = run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(dir.path().join("nftables-failover.service"))
            .arg(dir.path().join("nftables-failover.timer"))
            .arg(dir.path().join("nftables-failover-watch.service"))
            .arg(dir.path().join("nftables.service")),
        Duration::from_secs(60),
    );
    // verify exits 0 on unknown keys and unparsable values, so any output at all is a failure.
    let output = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && output.trim().is_empty(),
        "systemd-analyze verify complained ({}):\n{output}",
        out.status
    );
}

/// The highest overall exposure `systemd-analyze security` may rate the service (0 safest, 10
/// most exposed). The unit as first shipped rated 8.5 EXPOSED; the bounding set, PrivateMounts=,
/// ProtectProc=, ProcSubset=, RemoveIPC= and UMask=0077 bring it to 6.5 MEDIUM (systemd 252). Most of the rest
/// is settings that imply NoNewPrivileges (which would stop sudo) or PrivateNetwork= (nft must see
/// the host's ruleset), so a lower threshold is not reachable with the sudo design.
const MAX_EXPOSURE: f64 = 6.5;

/// The overall exposure from `systemd-analyze security` output:
/// "→ Overall exposure level for NAME.service: 6.3 MEDIUM 😐".
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, after) = line.rsplit_once(".service:")?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn overall_exposure_parses_the_summary_line() {
    let report = "✓ UMask=  Files created by service are accessible only by service's own user by default\n\n\
                  → Overall exposure level for nftables-failover.service: 6.3 MEDIUM 😐\n";
    assert_eq!(overall_exposure(report), Some(6.3));
    assert_eq!(overall_exposure("no summary here"), None);
}

/// `systemd-analyze security`'s overall exposure of a unit file.
fn exposure_of(unit: &Path) -> f64 {
    let out = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
        Duration::from_secs(60),
    );
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "systemd-analyze security failed ({}):\n{report}",
        out.status
    );
    overall_exposure(&report).unwrap_or_else(|| panic!("no overall exposure level in:\n{report}"))
}

#[test]
fn the_watch_unit_is_the_service_with_a_loop() {
    let service = directives(&repo("systemd/nftables-failover.service"));
    let watch = directives(&repo(WATCH_UNIT));
    // Sandbox, directories and resources: every one of the service's, the same.
    let own = ["Description=", "Type=", "ExecStart=", "TimeoutStartSec="];
    for line in service
        .iter()
        .filter(|l| !own.iter().any(|o| l.starts_with(o)))
    {
        assert!(
            watch.contains(line),
            "the watch unit lacks the service's {line:?}"
        );
    }
    for line in &watch {
        let key = line.split('=').next().unwrap();
        assert!(
            !IMPLY_NO_NEW_PRIVILEGES.contains(&key),
            "{line:?} implies NoNewPrivileges, which stops sudo"
        );
    }
    assert_has(
        &watch,
        &[
            "Type=notify",
            "NotifyAccess=main",
            "ExecStart=/usr/bin/nftables-failover watch",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "WatchdogSec=10s",
            "Restart=on-failure",
            // Both name /run/nftables-failover; neither may remove it when it stops.
            "RuntimeDirectoryPreserve=yes",
            "WantedBy=multi-user.target",
        ],
        "the watch unit",
    );
    assert!(service.iter().any(|l| l == "RuntimeDirectoryPreserve=yes"));
    let (w, s) = (
        exposure_of(&repo(WATCH_UNIT)),
        exposure_of(&repo("systemd/nftables-failover.service")),
    );
    assert!(
        w <= s,
        "systemd-analyze security rates the watch unit {w}, the service {s}"
    );
}

#[test]
fn service_exposure_stays_at_most_the_threshold() {
    let unit = repo("systemd/nftables-failover.service");
    let exposure = exposure_of(&unit);
    assert!(
        exposure <= MAX_EXPOSURE,
        "systemd-analyze security rates {} {exposure}, above {MAX_EXPOSURE}; tighten the unit \
         again (without implying NoNewPrivileges, see its comments; `systemd-analyze security \
         --offline=true` lists each setting)",
        unit.display()
    );
    // docs/security.md states the figure this systemd gives.
    let readme = fs::read_to_string(repo("docs/security.md")).unwrap();
    let stated = readme
        .split("`systemd-analyze security` rates it ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .expect("docs/security.md: \"`systemd-analyze security` rates it N\"");
    assert_eq!(
        stated, exposure,
        "docs/security.md says {stated}, systemd-analyze says {exposure}"
    );
}

#[test]
fn service_keeps_the_sudo_path_possible() {
    let lines = directives(&repo("systemd/nftables-failover.service"));
    for line in &lines {
        let key = line.split('=').next().unwrap().trim();
        assert!(
            !IMPLY_NO_NEW_PRIVILEGES.contains(&key),
            "{line:?}: {key}= implies NoNewPrivileges for a unit with User=, which stops sudo; \
             see the comments in the unit"
        );
    }
    assert_has(
        &lines,
        &[
            "Type=oneshot",
            "ExecStart=/usr/bin/nftables-failover",
            "User=nftables-failover",
            "Group=nftables-failover",
            // The sudoers rule names /run/nftables-failover/main.nft.
            "RuntimeDirectory=nftables-failover",
            "RuntimeDirectoryMode=0700",
            "StateDirectory=nftables-failover",
            "ProtectSystem=strict",
            "ReadWritePaths=-/etc/nftables.d/addons",
            // Not scored by systemd-analyze security, so checked here.
            "MemoryMax=256M",
            "TasksMax=32",
        ],
        "the service",
    );
    let timer = directives(&repo("systemd/nftables-failover.timer"));
    assert_has(
        &timer,
        &[
            "OnUnitActiveSec=5s",
            "AccuracySec=1s",
            "WantedBy=timers.target",
        ],
        "the timer",
    );
}

#[test]
fn sudoers_file_parses_and_allows_exactly_the_listed_commands() {
    let path = repo("sudoers.d/nftables-failover");
    let out = run(
        Command::new("visudo").arg("-cf").arg(&path),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "visudo -cf {} failed:\n{}{}",
        path.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    let body = fs::read_to_string(&path).unwrap();
    assert!(
        !body.contains('*'),
        "the sudoers file must not contain '*' (not even in comments, so a grep proves it)"
    );
    let rules = directives(&path).join("\n");
    for glob in ['?', '[', ']'] {
        assert!(
            !rules.contains(glob),
            "sudoers wildcard {glob:?} in:\n{rules}"
        );
    }
    let alias = rules
        .lines()
        .find_map(|l| l.strip_prefix("Cmnd_Alias NFTABLES_FAILOVER ="))
        .expect("no Cmnd_Alias NFTABLES_FAILOVER");
    let normalised: Vec<String> = alias
        .split(',')
        .map(|c| c.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(normalised, SUDO_COMMANDS, "the allowed commands changed");
    assert!(
        rules
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")
                == "nftables-failover ALL = (root) TIMEOUT=20s NOPASSWD: NFTABLES_FAILOVER"),
        "the rule must give only user nftables-failover the alias, as root, bounded in time, without password:\n{rules}"
    );
}

#[test]
fn example_nftables_conf_loads_with_the_rendered_example_include() {
    if !require_root("example_nftables_conf_loads_with_the_rendered_example_include") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let addons = dir.path().join("addons");
    fs::create_dir(&addons).unwrap();
    // Render the example config's include without touching anything (dry run prints it).
    // Nothing answers on the example's 192.168.x addresses; the first candidates are used.
    let out = run(
        Command::new(BIN)
            .args([
                "--dry-run",
                "-q",
                "--timeout",
                "50ms",
                "--output",
                "/nonexistent/failover.nft",
                "--config",
            ])
            .arg(repo("etc/nftables.d/addons/failover.json")),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "dry run failed: {}",
        text(&out.stderr)
    );
    fs::write(addons.join("failover.nft"), &out.stdout).unwrap();
    let conf = fs::read_to_string(repo("etc/nftables.conf")).unwrap();
    let include = "include \"/etc/nftables.d/addons/*.nft\"";
    assert!(
        conf.contains(include),
        "the example must include the addons"
    );
    let conf = conf.replace(include, &format!("include \"{}/*.nft\"", addons.display()));
    let main = dir.path().join("nftables.conf");
    fs::write(&main, conf).unwrap();
    let out = run(
        Command::new("nft").arg("-c").arg("-f").arg(&main),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "nft -c -f of the example nftables.conf failed:\n{}",
        text(&out.stderr)
    );
}

#[test]
fn least_privilege_path_end_to_end() {
    if !require_root("least_privilege_path_end_to_end") {
        return;
    }
    // New mount, network and PID namespaces: everything the script mounts, the user it creates
    // (in a private copy of /etc) and the ruleset it loads vanish when it exits, and as PID 1 its
    // exit kills every process it started.
    let out = run(
        Command::new("unshare")
            .args([
                "--mount",
                "--net",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "bash",
            ])
            .arg(repo("tests/sudo_path.sh"))
            .arg(BIN)
            .arg(REPO),
        Duration::from_secs(120),
    );
    let log = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && log.contains("sudo_path: ALL OK"),
        "tests/sudo_path.sh failed ({}):\n{log}",
        out.status
    );
}

#[test]
fn debian_package_contents_and_modes() {
    let cargo_deb = run(
        Command::new("cargo-deb").arg("--version"),
        Duration::from_secs(30),
    );
    assert!(cargo_deb.status.success(), "cargo-deb is not usable");
    let out_dir = tempfile::tempdir().unwrap();
    // A target directory of its own: the one `cargo test` uses may be locked while tests run.
    // Under target/ so later runs reuse the release build.
    let out = run(
        Command::new("cargo-deb")
            .arg("--output")
            .arg(out_dir.path())
            .env("CARGO_TARGET_DIR", repo("target/deb-test"))
            .current_dir(REPO),
        Duration::from_secs(400),
    );
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let debs: Vec<PathBuf> = fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb, found {debs:?}");
    let deb = &debs[0];

    let listing = run(
        Command::new("dpkg-deb").arg("-c").arg(deb),
        Duration::from_secs(30),
    );
    assert!(listing.status.success());
    let listing = text(&listing.stdout);
    // "-r--r----- 0/0   2260 2026-01-01 00:00 ./etc/sudoers.d/nftables-failover"
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        let mut fields = line.split_whitespace();
        (
            fields.next().unwrap().to_string(),
            fields.next().unwrap().to_string(),
        )
    };
    for (path, mode) in [
        ("/usr/bin/nftables-failover", "-rwxr-xr-x"),
        ("/etc/sudoers.d/nftables-failover", "-r--r-----"),
        ("/usr/share/man/man8/nftables-failover.8.gz", "-rw-r--r--"),
        (
            "/usr/lib/systemd/system/nftables-failover.service",
            "-rw-r--r--",
        ),
        (
            "/usr/lib/systemd/system/nftables-failover.timer",
            "-rw-r--r--",
        ),
        (
            "/usr/lib/systemd/system/nftables-failover-watch.service",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nftables-failover/examples/failover.json",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nftables-failover/docs/configuration.md",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nftables-failover/docs/watch.md",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nftables-failover/examples/nftables.conf",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/nftables-failover/examples/nftables.service.d/override.conf",
            "-rw-r--r--",
        ),
    ] {
        assert_eq!(entry(path), (mode.to_string(), "0/0".to_string()), "{path}");
    }
    assert!(
        !listing.contains("./etc/nftables.d"),
        "the package must not ship anything into /etc/nftables.d (it would clobber or, on \
         purge, delete the admin's config):\n{listing}"
    );

    let control = tempfile::tempdir().unwrap();
    let extracted = run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()),
        Duration::from_secs(30),
    );
    assert!(extracted.status.success(), "{}", text(&extracted.stderr));
    let read = |name: &str| fs::read_to_string(control.path().join(name)).unwrap_or_default();
    assert_eq!(read("conffiles").trim(), "/etc/sudoers.d/nftables-failover");
    let control_file = read("control");
    for dep in ["nftables", "sudo", "adduser"] {
        assert!(
            control_file
                .lines()
                .any(|l| l.starts_with("Depends:") && l.contains(dep)),
            "Depends lacks {dep}:\n{control_file}"
        );
    }
    let postinst = read("postinst");
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    // The timer is installed but neither enabled nor started on install (README, "Install"):
    // cargo-deb's "dont-enable" snippet only re-enables a unit the admin had enabled before.
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed nftables-failover.timer"),
        "the timer would be enabled on install:\n{postinst}"
    );
    assert!(
        postinst.contains("if deb-systemd-helper debian-installed nftables-failover-watch.service"),
        "the watch unit would be enabled on install:\n{postinst}"
    );
    assert!(
        !listing.contains("nftables-failover-watch.timer"),
        "a second timer slipped in:\n{listing}"
    );
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "units would be started on install:\n{postinst}"
    );
    assert!(read("postrm").contains("deluser --system"));
    assert!(read("prerm").contains(
        "stop nftables-failover-watch.service nftables-failover.service nftables-failover.timer"
    ));
    for script in ["postinst", "postrm", "prerm"] {
        let mode = fs::metadata(control.path().join(script)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o755, "{script} mode");
    }
}
