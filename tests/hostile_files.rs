//! Files that someone else put where the run reads or writes: a FIFO, a device, a huge file or
//! a symlink in place of the config, the state, the include or the lock must end the run in
//! bounded time with a clear error and change nothing. Also: the lock a root run leaves is
//! usable by a later run as the service user, and names from the config cannot forge log lines.

mod common;

use common::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const PORT: u16 = 8443;
const BIG: u64 = 100 << 20;

#[derive(Debug, Clone, Copy)]
enum Hostile {
    Fifo,
    /// A symlink to /dev/zero: endless bytes if read through.
    DevZero,
    /// A sparse 100 MB regular file.
    Big,
    /// A symlink to a regular file elsewhere with the expected contents.
    Link,
}

const ALL: [Hostile; 4] = [Hostile::Fifo, Hostile::DevZero, Hostile::Big, Hostile::Link];

/// A fixture after one successful run: include, state and lock exist, the ruleset is loaded.
fn applied_fixture() -> Fixture {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");
    assert_exit(&f.run(&[]), 0);
    assert!(ruleset().contains("ip daddr 127.0.0.1"), "{}", ruleset());
    f
}

fn lock_path(f: &Fixture) -> PathBuf {
    f.addon_dir.join(".failover.nft.lock")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// Puts `kind` at `path`; a `Link` points at a copy of what was there.
fn plant(f: &Fixture, path: &Path, kind: Hostile) {
    let old = fs::read(path).unwrap_or_default();
    let _ = fs::remove_file(path);
    match kind {
        Hostile::Fifo => mkfifo(path),
        Hostile::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Hostile::Big => fs::File::create(path).unwrap().set_len(BIG).unwrap(),
        Hostile::Link => {
            let target = f.dir.path().join("elsewhere");
            fs::write(&target, old).unwrap();
            std::os::unix::fs::symlink(&target, path).unwrap();
        }
    }
}

/// What is at `path`, in enough detail to see any change: type, link target, size, bytes.
fn fingerprint(path: &Path) -> String {
    let Ok(m) = fs::symlink_metadata(path) else {
        return "missing".into();
    };
    let t = m.file_type();
    if t.is_symlink() {
        let target = fs::read_link(path).unwrap();
        let behind = if target.starts_with("/dev") {
            String::new()
        } else {
            fingerprint(&target)
        };
        format!("symlink to {} ({behind})", target.display())
    } else if t.is_fifo() {
        "fifo".into()
    } else if m.len() > 1 << 20 {
        format!("{} bytes", m.len())
    } else {
        format!("{:?}", String::from_utf8_lossy(&fs::read(path).unwrap()))
    }
}

struct Snapshot {
    config: String,
    include: String,
    state: String,
    lock: String,
    ruleset: String,
    nft_calls: usize,
}

fn snapshot(f: &Fixture) -> Snapshot {
    Snapshot {
        config: fingerprint(&f.config),
        include: fingerprint(&f.output),
        state: fingerprint(&f.state),
        lock: fingerprint(&lock_path(f)),
        ruleset: ruleset(),
        nft_calls: f.nft_calls().len(),
    }
}

/// Plants `kind` in place of the file `which` picks, runs once and checks the time bound and
/// that config, include, lock, ruleset and (if `state_kept`) state are as before.
fn hostile_run(
    which: fn(&Fixture) -> PathBuf,
    kind: Hostile,
    code: i32,
    expected: &[&str],
    state_kept: bool,
) {
    let expected: Vec<String> = expected.iter().map(|e| e.to_string()).collect();
    in_netns(move || {
        let _up = listen("127.0.0.1", PORT);
        let f = applied_fixture();
        plant(&f, &which(&f), kind);
        let before = snapshot(&f);
        let started = Instant::now();
        let out = f.run(&[]);
        let took = started.elapsed();
        let log = stderr(&out);
        assert!(
            took < Duration::from_secs(3),
            "{kind:?}: took {took:?}\n{log}"
        );
        assert_exit(&out, code);
        for e in &expected {
            assert!(log.contains(e.as_str()), "{kind:?}: want {e:?} in:\n{log}");
        }
        let after = snapshot(&f);
        assert_eq!(after.config, before.config, "{kind:?}: config");
        assert_eq!(after.include, before.include, "{kind:?}: include");
        assert_eq!(after.lock, before.lock, "{kind:?}: lock");
        assert_eq!(after.ruleset, before.ruleset, "{kind:?}: ruleset");
        assert_eq!(after.nft_calls, before.nft_calls, "{kind:?}: nft ran");
        if state_kept {
            assert_eq!(after.state, before.state, "{kind:?}: state");
        }
    });
}

#[test]
fn hostile_config_is_refused_and_a_config_symlink_is_followed() {
    let config = |f: &Fixture| f.config.clone();
    for kind in ALL {
        let why = match kind {
            Hostile::Fifo => "it is a FIFO (named pipe), not a regular file",
            Hostile::DevZero => "it is a character device, not a regular file",
            Hostile::Big => "it is 104857600 bytes, more than the 16777216 this reads",
            Hostile::Link => {
                // An admin may keep the config elsewhere and link it.
                hostile_run(config, kind, 0, &["failover.nft: unchanged"], false);
                continue;
            }
        };
        hostile_run(
            config,
            kind,
            2,
            &["error: cannot read config ", "/failover.json: ", why],
            true,
        );
    }
}

#[test]
fn hostile_state_is_ignored_with_an_error_and_never_written_through() {
    let state = |f: &Fixture| f.state.clone();
    for kind in ALL {
        let why = match kind {
            Hostile::Fifo => "it is a FIFO (named pipe), not a regular file",
            Hostile::DevZero => "it is a symlink to /dev/zero, and this file is never read",
            Hostile::Big => "it is 104857600 bytes, more than the 16777216 this reads",
            Hostile::Link => "it is a symlink to ",
        };
        let mut expected = vec![
            "error: ",
            "/state/state.json: ignoring the state file, which is unusable: cannot read it: ",
            why,
            "starting without history",
            "failover.nft: unchanged",
        ];
        // A regular file that is too large is ours and replaced by a good state; anything else
        // is left for the admin, and saving says so.
        let replaced = matches!(kind, Hostile::Big);
        if !replaced {
            expected.push("refusing to replace it: remove it");
        }
        hostile_run(state, kind, 0, &expected, !replaced);
    }
}

#[test]
fn hostile_include_is_refused() {
    let include = |f: &Fixture| f.output.clone();
    for kind in ALL {
        let why = match kind {
            Hostile::Fifo => "it is a FIFO (named pipe), not a regular file",
            Hostile::DevZero => "it is a symlink to /dev/zero, and this file is never read",
            Hostile::Big => "it is 104857600 bytes, more than the 16777216 this reads",
            Hostile::Link => "it is a symlink to ",
        };
        hostile_run(
            include,
            kind,
            1,
            &[
                "error: cannot read ",
                "/failover.nft: ",
                why,
                "; nothing was changed",
            ],
            true,
        );
    }
}

#[test]
fn hostile_last_applied_record_is_refused() {
    let record = |f: &Fixture| f.addon_dir.join(".failover.nft.applied");
    for kind in ALL {
        let why = match kind {
            Hostile::Fifo => "it is a FIFO (named pipe), not a regular file",
            Hostile::DevZero => "it is a symlink to /dev/zero, and this file is never read",
            Hostile::Big => "it is 104857600 bytes, more than the 16777216 this reads",
            Hostile::Link => "it is a symlink to ",
        };
        hostile_run(
            record,
            kind,
            1,
            &["error: cannot read ", "/.failover.nft.applied: ", why],
            true,
        );
    }
}

#[test]
fn hostile_lock_is_refused() {
    for kind in ALL {
        let why = match kind {
            Hostile::Fifo => "it is a FIFO (named pipe), not a regular file",
            Hostile::DevZero => "it is a symlink to /dev/zero",
            Hostile::Link => "it is a symlink to ",
            // The lock is never read, so its size does not matter; but a file that others may
            // open (this one is 0644) could be held by them, so it is refused, not re-moded.
            Hostile::Big => "others may open it (mode 0644)",
        };
        hostile_run(
            lock_path,
            kind,
            1,
            &[
                "error: cannot ",
                "lock file ",
                "/.failover.nft.lock: ",
                why,
                "remove it, the next run creates it again",
            ],
            true,
        );
    }
}

/// The binary with the fixture's paths, started through `wrapper` (e.g. setpriv).
fn run_wrapped(f: &Fixture, wrapper: &[&str]) -> Output {
    output_within(f.command(wrapper, &f.reload()), Duration::from_secs(30))
}

#[test]
fn a_lock_left_by_root_is_usable_by_the_service_user() {
    in_netns(|| {
        let _up = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        // /etc/nftables.d/addons with nogroup for the service group; group-writable (as the
        // package makes it) only after the root run, which refuses a config others can write.
        std::os::unix::fs::chown(&f.addon_dir, Some(0), Some(65534)).unwrap();
        fs::set_permissions(&f.addon_dir, fs::Permissions::from_mode(0o2755)).unwrap();
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
        ));
        fs::set_permissions(&f.config, fs::Permissions::from_mode(0o644)).unwrap();
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");

        // A strict umask must not make the lock unusable for the group.
        let out = run_wrapped(&f, &["sh", "-c", "umask 077; exec \"$@\"", "sh"]);
        assert_exit(&out, 0);
        let lock = fs::metadata(lock_path(&f)).unwrap();
        assert_eq!(
            (lock.mode() & 0o7777, lock.uid(), lock.gid()),
            (0o660, 0, 65534),
            "lock mode, owner, group"
        );
        let include = fs::read(&f.output).unwrap();
        let calls = f.nft_calls().len();
        // The state directory (0700 root, from the umask) is out of nobody's reach.
        let state_dir = f.state.parent().unwrap();
        assert_eq!(fs::metadata(state_dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&f.addon_dir, fs::Permissions::from_mode(0o2775)).unwrap();

        let out = run_wrapped(
            &f,
            &[
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
            ],
        );
        let log = stderr(&out);
        assert_exit(&out, 0);
        // "unchanged" is only logged after the lock was taken.
        assert!(log.contains("failover.nft: unchanged"), "{log}");
        assert!(log.contains("error: cannot write the state in "), "{log}");
        assert_eq!(fs::read(&f.output).unwrap(), include);
        assert_eq!(f.nft_calls().len(), calls);
    });
}

/// The fixture's lock file as root creates it by hand: 0660, root's group.
fn root_lock(f: &Fixture) -> fs::File {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o660)
        .open(lock_path(f))
        .unwrap()
}

/// A user who may not open the lock is told who may run the command, not to delete the file.
#[test]
fn a_user_who_may_not_take_the_lock_is_told_who_may() {
    let f = Fixture::new();
    fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&f.base_dir, &f.addon_dir] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": "127.0.0.1", "port": {PORT}}}}}}}"#
    ));
    fs::set_permissions(&f.config, fs::Permissions::from_mode(0o644)).unwrap();
    // root's lock, 0660 root:root: nobody may not open it.
    root_lock(&f);
    let mut cmd = f.command(
        &[
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ],
        &f.reload(),
    );
    cmd.args(["drain", "web", "127.0.0.1"]);
    let out = output_within(cmd, Duration::from_secs(30));
    assert_exit(&out, 1);
    let log = stderr(&out);
    assert!(
        log.contains(
            "run this as root or as the service user (sudo -u nftables-failover …), who may"
        ),
        "{log}"
    );
    assert!(!log.contains("remove it"), "{log}");
    assert!(lock_path(&f).exists());
}

#[test]
fn a_run_that_cannot_get_the_lock_warns_and_names_it() {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": "127.0.0.1", "port": {PORT}}}}}}}"#
    ));
    let held = root_lock(&f);
    held.lock().unwrap();
    let started = Instant::now();
    let out = f.run(&[]);
    // The run waits 10 s for the holder, then gives way.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_exit(&out, 0);
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "warning: another run holds {} after 10s; leaving the work to it",
            lock_path(&f).display()
        )),
        "{log}"
    );
    assert!(f.output_text().is_none());
}

#[test]
fn leftover_temp_files_are_removed_but_links_are_not_followed() {
    in_netns(|| {
        let _up = listen("127.0.0.1", PORT);
        let f = applied_fixture();
        let leftover = f.addon_dir.join(".failover.nft.Ab12Cd.tmp");
        fs::write(&leftover, "half-written").unwrap();
        let victim = f.dir.path().join("victim");
        fs::write(&victim, "keep me").unwrap();
        let link = f.addon_dir.join(".failover.nft.Ef34Gh.tmp");
        std::os::unix::fs::symlink(&victim, &link).unwrap();

        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!leftover.exists(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("Ab12Cd.tmp, left over from an interrupted write"),
            "{}",
            stderr(&out)
        );
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    });
}

#[test]
fn a_newline_in_a_variable_name_cannot_forge_a_log_line() {
    let f = Fixture::new();
    f.write_config(r#"{"failover": {"web\nerror: forged": {"ip4": "127.0.0.1", "port": 1}}}"#);
    let out = f.run(&[]);
    assert_exit(&out, 2);
    let log = stderr(&out);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("forged")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].starts_with(r#"  failover.web\nerror: forged: variable name "web\nerror: forged" is not an nft identifier"#),
        "{log}"
    );
    assert!(f.output_text().is_none());
}
