//! Bounded child processes and stop signals during an apply, with the real binary, real nft and
//! real listeners, each test in its own network namespace: a hanging nft is killed after
//! --command-timeout, SIGTERM stops the running command, and either way the previous include is
//! back, byte for byte, and nothing the run started is left alive; through sudo as an
//! unprivileged user too, where only sudo, not its root child, can be signalled.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 8443;

/// The include a previous run left; every test's new choice (127.0.0.2) differs from it.
const OLD: &str = "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\ndefine web_v4 = 127.0.0.1\ndefine web_v6 = ::\n";

/// `web`: 127.0.0.1 (not listening, or blackholed), then 127.0.0.2; the old include in place.
fn web_fixture() -> Fixture {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    f.write_main("  ip daddr $web_v4 accept");
    fs::write(&f.output, OLD).unwrap();
    f
}

fn script(path: &Path, body: &str) {
    fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Shell lines that start a long sleep in the background and publish the shell's and the
/// sleep's pids in `pids` (renamed into place, so a reader sees both or nothing), then wait.
fn hang(pids: &Path) -> String {
    format!(
        "sleep 1000 &\nprintf '%s\\n%s\\n' $$ $! > '{p}.tmp'\nmv '{p}.tmp' '{p}'\nwait\n",
        p = pids.display()
    )
}

/// Replaces the fixture's nft with one that hangs (see `hang`) when called with `-c` on a file
/// matching the shell pattern `target`, and is the real nft otherwise.
fn nft_hanging_on(f: &Fixture, target: &str) -> PathBuf {
    let pids = f.dir.path().join("nft-pids");
    script(
        &f.nft,
        &format!(
            "case \"$1 $3\" in\n\"-c \"{target})\n{}exit 0;;\nesac\nexec /usr/sbin/nft \"$@\"\n",
            hang(&pids)
        ),
    );
    pids
}

fn read_pids(path: &Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Whether `pid` is gone. Processes of the group that were not the binary's own children are
/// reaped by init shortly after they die, so allow a moment.
fn gone(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(2);
    // SAFETY: signal 0 only checks whether the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// Kills, when dropped, whatever is left of the processes listed in `pids`, so that a failing
/// test (e.g. with the timeout broken) does not leave sleeps behind. Only processes that are
/// still one of this test's (a `sleep 1000` or a command naming the fixture's directory) are
/// touched, in case a pid was reused.
struct Reaper {
    pids: PathBuf,
    dir: PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(text) = fs::read_to_string(&self.pids) else {
            return;
        };
        for pid in text.lines().filter_map(|l| l.parse::<i32>().ok()) {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline == "sleep\x001000\x00" || cmdline.contains(self.dir.to_str().unwrap()) {
                // SAFETY: the pid was checked to be one of this test's processes just above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn reaper(f: &Fixture, pids: &Path) -> Reaper {
    Reaper {
        pids: pids.to_path_buf(),
        dir: f.dir.path().to_path_buf(),
    }
}

/// Asserts that neither the processes nor the process group of the command are left.
fn assert_all_gone(pids: &[i32]) {
    for &pid in pids {
        assert!(gone(pid), "process {pid} of the command is still alive");
    }
    // The command's shell led its own group: no member of it may be left.
    assert!(
        gone(-pids[0]),
        "process group {} still has members",
        pids[0]
    );
}

/// Starts the binary with the fixture's paths without waiting for it.
fn spawn(f: &Fixture, reload: &str, extra: &[&str]) -> Child {
    f.command(&[], reload)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (the command it names is running), at most 20 s.
fn wait_for(path: &Path, child: &mut Child) {
    let until = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the binary exited ({status}) before {} appeared",
                path.display()
            );
        }
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM to the binary and collects its output; kills it if it is still alive after
/// 20 s, so a binary that ignores the signal fails the test instead of hanging it. Returns the
/// output and how long the binary took to exit after the signal.
fn terminate(child: Child) -> (Output, Duration) {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let guard = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            // SAFETY: killing our own child, which has not been waited for yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let sent = Instant::now();
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let took = sent.elapsed();
    let _ = tx.send(());
    guard.join().unwrap();
    (out, took)
}

#[test]
fn hanging_nft_is_killed_after_the_command_timeout_and_nothing_is_installed() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        let pids = nft_hanging_on(&f, "*/main.nft");
        let _reaper = reaper(&f, &pids);

        let started = Instant::now();
        let out = f.run(&["--command-timeout", "1s"]);
        let took = started.elapsed();
        assert_exit(&out, 1);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let log = stderr(&out);
        assert!(log.contains("check of the staged config failed"), "{log}");
        assert!(
            log.contains("did not finish within 1s and was killed; if it needs longer, raise --command-timeout"),
            "{log}"
        );
        assert!(log.contains("the new include was not installed"), "{log}");
        assert_eq!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        assert_all_gone(&read_pids(&pids));
    });
}

#[test]
fn real_nft_blocked_on_a_fifo_include_is_killed_after_the_command_timeout() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        // nft opens an included FIFO and waits for a writer that never comes. The FIFO itself
        // is not a regular *.nft file, so a main-config part includes it.
        let fifo = f.dir.path().join("blocker");
        sh(&format!("mkfifo '{}'", fifo.display()));
        fs::write(
            f.base_dir.join("parts.nft"),
            format!("include \"{}\"\n", fifo.display()),
        )
        .unwrap();
        // The real nft, exec'd by a shell that first records its pid (which nft keeps).
        let pids = f.dir.path().join("nft-pids");
        let _reaper = reaper(&f, &pids);
        script(
            &f.nft,
            &format!(
                "echo $$ >> '{}'\nexec /usr/sbin/nft \"$@\"\n",
                pids.display()
            ),
        );

        let started = Instant::now();
        let out = f.run(&["--command-timeout", "1s"]);
        let took = started.elapsed();
        assert_exit(&out, 1);
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        let log = stderr(&out);
        assert!(log.contains("check of the staged config failed"), "{log}");
        assert!(
            log.contains("did not finish within 1s and was killed"),
            "{log}"
        );
        assert_eq!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        let pids = read_pids(&pids);
        assert_eq!(pids.len(), 1, "only the staged check ran: {pids:?}");
        assert_all_gone(&pids);
    });
}

/// Live mode's unchanged run reads the live objects back with `nft -j -f`: that listing obeys
/// --command-timeout like every other child (it once ran with the 15 s default).
#[test]
fn a_hanging_listing_in_live_mode_s_unchanged_run_obeys_the_command_timeout() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        fs::remove_file(&f.output).unwrap();
        f.write_config(&format!(
            r#"{{"settings": {{"apply": "live"}}, "failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("");
        assert_exit(&f.run(&[]), 0);
        let applied = fs::read(&f.output).unwrap();
        // From now on, nft hangs when asked for the JSON listing (`nft -j -f live.json`).
        let pids = f.dir.path().join("nft-pids");
        let _reaper = reaper(&f, &pids);
        script(
            &f.nft,
            &format!(
                "case \"$1 $2\" in\n\"-j -f\")\n{}exit 0;;\nesac\nexec /usr/sbin/nft \"$@\"\n",
                hang(&pids)
            ),
        );

        let started = Instant::now();
        let out = f.run(&["--command-timeout", "1s"]);
        let took = started.elapsed();
        let log = stderr(&out);
        assert_exit(&out, 1);
        assert!(log.contains("unchanged"), "{log}");
        assert!(
            log.contains("did not finish within 1s and was killed"),
            "{log}"
        );
        assert!(took < Duration::from_secs(4), "{took:?}\n{log}");
        assert_eq!(fs::read(&f.output).unwrap(), applied);
        assert_all_gone(&read_pids(&pids));
    });
}

#[test]
fn sigterm_during_the_reload_stops_it_and_restores_the_previous_include() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        let pids = f.dir.path().join("reload-pids");
        let _reaper = reaper(&f, &pids);
        let reload = f.dir.path().join("reload");
        script(&reload, &hang(&pids));

        let mut child = spawn(&f, reload.to_str().unwrap(), &[]);
        wait_for(&pids, &mut child);
        // The new include is installed while the reload runs.
        assert_ne!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        let (out, took) = terminate(child);
        assert_exit(&out, 1);
        assert!(took < Duration::from_secs(2), "{took:?}");
        let log = stderr(&out);
        assert!(
            log.contains("reload failed:") && log.contains("was stopped: interrupted by SIGTERM"),
            "{log}"
        );
        // Whichever include the apply calls the rollback target; its bytes are checked below.
        assert!(log.contains("restored the "), "{log}");
        assert!(log.contains("stopped by SIGTERM"), "{log}");
        assert_eq!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        assert_all_gone(&read_pids(&pids));
    });
}

#[test]
fn sigterm_during_the_main_config_check_stops_it_and_restores_the_previous_include() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        let f = web_fixture();
        let pids = nft_hanging_on(&f, &format!("'{}'", f.main_config.display()));
        let _reaper = reaper(&f, &pids);
        let reload = format!("{} -f {}", f.nft.display(), f.main_config.display());

        let mut child = spawn(&f, &reload, &[]);
        wait_for(&pids, &mut child);
        assert_ne!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        let (out, took) = terminate(child);
        assert_exit(&out, 1);
        assert!(took < Duration::from_secs(2), "{took:?}");
        let log = stderr(&out);
        assert!(
            log.contains("check of the main config failed:")
                && log.contains("was stopped: interrupted by SIGTERM"),
            "{log}"
        );
        // Whichever include the apply calls the rollback target; its bytes are checked below.
        assert!(log.contains("restored the "), "{log}");
        assert_eq!(fs::read(&f.output).unwrap(), OLD.as_bytes());
        assert_all_gone(&read_pids(&pids));
        assert_eq!(ruleset().trim(), "", "the reload must never have run");
    });
}

#[test]
fn sigterm_during_the_checks_decides_and_starts_nothing() {
    in_netns(|| {
        let _up = listen("127.0.0.2", PORT);
        // The preferred candidate takes the whole connect timeout; the signal comes meanwhile.
        blackhole(&["127.0.0.1"], PORT);
        let f = web_fixture();
        let child = spawn(
            &f,
            &format!("{} -f x", f.nft.display()),
            &["--timeout", "1s"],
        );
        std::thread::sleep(Duration::from_millis(300));
        let (out, took) = terminate(child);
        assert_exit(&out, 1);
        assert!(took < Duration::from_secs(2), "{took:?}");
        let log = stderr(&out);
        // The checks stop at the signal, and nothing is decided from half of them.
        assert!(
            log.contains("stopped before anything was decided; nothing was changed"),
            "{log}"
        );
        assert!(f.nft_calls().is_empty(), "{:?}", f.nft_calls());
        assert_eq!(fs::read(&f.output).unwrap(), OLD.as_bytes());
    });
}

/// The unprivileged path, where the user cannot signal the root nft itself: it runs the binary
/// as a fresh user whose only sudo rules are the commands below, and checks that a root nft
/// blocked on a FIFO and a root reload stopped by SIGTERM are really gone afterwards (sudo relays
/// the SIGTERM the binary sends first), and that a root child ignoring SIGTERM is reported.
/// Everything runs in private mount, PID and network namespaces (the user exists only in a copy
/// of /etc; the script is PID 1, so its exit kills whatever it started).
const SUDO_SCRIPT: &str = r#"
set -euo pipefail
BIN=$1
fail() { echo "FAIL: $*" >&2; exit 1; }
[ "$$" = 1 ] || fail "must run as PID 1 of new PID and mount namespaces"
ip link set lo up
mount -t tmpfs -o mode=0755 tmpfs /mnt
cp -a /etc /mnt/etc
mount --bind /mnt/etc /etc
install -m 0755 "$BIN" /mnt/nftables-failover
U=nftfo-children
useradd -M -s /usr/sbin/nologin "$U"
W=/mnt/w
mkdir -p "$W/stage" "$W/addons" "$W/base" "$W/state"
chown "$U:" "$W/stage" "$W/addons" "$W/state"
chmod 0700 "$W/stage"
printf 'flush ruleset\ninclude "%s/addons/*.nft"\n' "$W" > "$W/nftables.conf"
echo '{"failover": {"web": {"ip4": ["127.0.0.1"], "port": 8443}}}' > "$W/addons/failover.json"
printf 'define web_v4 = 192.0.2.1\ndefine web_v6 = ::\n' > "$W/addons/failover.nft"
chown "$U:" "$W/addons/failover.nft"
cp -p "$W/addons/failover.nft" "$W/old.nft"
cat > "$W/stubborn" <<'EOF'
#!/bin/sh
trap '' TERM
sleep 1000
EOF
chmod 0755 "$W/stubborn"
find /etc/sudoers.d -mindepth 1 -delete
cat > /etc/sudoers.d/children <<EOF
Defaults:$U !requiretty
$U ALL = (root) NOPASSWD: /usr/sbin/nft -c -f $W/stage/main.nft, /usr/sbin/nft -c -f $W/nftables.conf, /usr/bin/sleep 1000, $W/stubborn
EOF
chmod 0440 /etc/sudoers.d/children
visudo -c >/dev/null || fail "test sudoers does not parse"
ARGS=(--config "$W/addons/failover.json" --output "$W/addons/failover.nft" --addon-dir "$W/addons"
      --base-dir "$W/base" --main-config "$W/nftables.conf" --stage-dir "$W/stage" --state "$W/state/s.json")
AS=(setpriv --reuid="$U" --regid="$U" --init-groups /mnt/nftables-failover "${ARGS[@]}")
ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Processes whose command line starts with one of the programs in $1 (an ERE alternation);
# read from /proc, as procps may not be installed.
left() {
  local p args
  for p in /proc/[0-9]*; do
    args=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    if [[ $args =~ ^($1) ]]; then echo "${p#/proc/}: $args"; fi
  done
}
same() { cmp -s "$W/old.nft" "$W/addons/failover.nft" || fail "include changed: $(cat "$W/addons/failover.nft")"; }

echo "--- root nft blocked on a FIFO, timeout 1s"
mkfifo "$W/blocker"
printf 'include "%s"\n' "$W/blocker" > "$W/base/parts.nft"
t=$(ms); rc=0
"${AS[@]}" --command-timeout 1s --reload-command "/usr/bin/sleep 1000" 2> "$W/err" || rc=$?
took=$(( $(ms) - t )); cat "$W/err" >&2
[ "$rc" = 1 ] || fail "exit $rc, expected 1"
[ "$took" -ge 1000 ] && [ "$took" -lt 3000 ] || fail "took $took ms"
grep -q 'sudo -n /usr/sbin/nft -c -f .* did not finish within 1s and was killed' "$W/err" || fail "no timeout error"
same
sleep 0.2
[ -z "$(left /usr/sbin/nft)" ] || fail "root nft left: $(left /usr/sbin/nft)"
rm "$W/base/parts.nft"

echo "--- SIGTERM while the root reload runs"
"${AS[@]}" --reload-command "/usr/bin/sleep 1000" 2> "$W/err" & pid=$!
for _ in $(seq 200); do [ -n "$(left '/usr/bin/sleep 1000')" ] && break; sleep 0.05; done
[ -n "$(left '/usr/bin/sleep 1000')" ] || fail "the reload never started"
t=$(ms); kill -TERM "$pid"; rc=0; wait "$pid" || rc=$?
took=$(( $(ms) - t )); cat "$W/err" >&2
[ "$rc" = 1 ] || fail "exit $rc, expected 1"
[ "$took" -lt 2000 ] || fail "took $took ms after SIGTERM"
grep -q 'interrupted by SIGTERM' "$W/err" || fail "no interruption error"
grep -q 'restored the ' "$W/err" || fail "not restored"
same
sleep 0.2
[ -z "$(left '/usr/bin/sleep|/usr/bin/sudo')" ] || fail "left behind: $(left '/usr/bin/sleep|/usr/bin/sudo')"

echo "--- a root reload that ignores SIGTERM is reported"
rc=0
"${AS[@]}" --command-timeout 1s --reload-command "$W/stubborn" 2> "$W/err" || rc=$?
cat "$W/err" >&2
[ "$rc" = 1 ] || fail "exit $rc, expected 1"
grep -q 'ignored SIGTERM and still runs in process group' "$W/err" || fail "survivor not reported"
same
echo "children_sudo: ALL OK"
"#;

#[test]
fn through_sudo_root_children_are_stopped_or_reported() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates namespaces and a user and needs root (CI runs as root)"
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "bash",
        "-c",
        SUDO_SCRIPT,
        "bash",
        BIN,
    ]);
    let out = output_within(cmd, Duration::from_secs(60));
    let log = stderr(&out) + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains("children_sudo: ALL OK"),
        "the sudo script failed ({}):\n{log}",
        out.status
    );
}

/// Peak RSS in KiB of the binary run under GNU time (inside `outer`, around `inner`), and its
/// output.
fn with_peak_rss(f: &Fixture, outer: &[&str], inner: &[&str], extra: &[&str]) -> (u64, Output) {
    let rss = f.dir.path().join("rss");
    let mut wrapper: Vec<&str> = outer.to_vec();
    wrapper.extend(["/usr/bin/time", "-f", "%M", "-o", path_str(&rss)]);
    wrapper.extend(inner);
    let mut cmd = f.command(&wrapper, &f.reload());
    cmd.args(extra);
    let out = output_within(cmd, Duration::from_secs(30));
    let text = fs::read_to_string(&rss).unwrap();
    (text.trim().lines().last().unwrap().parse().unwrap(), out)
}

/// An nft that prints 300 MB and then hangs: the run keeps 64 KiB of it, stays
/// small, and ends at --command-timeout, restoring the include.
#[test]
fn a_flood_of_child_output_is_capped_and_the_time_limit_holds() {
    in_netns(|| {
        let _backup = listen("127.0.0.2", PORT);
        let f = web_fixture();
        let pids = f.dir.path().join("pids");
        script(
            &f.nft,
            &format!(
                "head -c 300000000 /dev/zero | tr '\\0' x >&2\n{}",
                hang(&pids)
            ),
        );
        let started = Instant::now();
        let (kib, out) = with_peak_rss(&f, &[], &[], &["--command-timeout", "3s"]);
        let took = started.elapsed();
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(kib < 50 * 1024, "peak RSS {kib} KiB");
        assert!(took < Duration::from_secs(8), "{took:?}");
        assert!(log.len() < 200_000, "{} bytes of log", log.len());
        // 4 KiB of it in the message, and how much more there was.
        assert!(
            log.lines().any(|l| l
                .trim()
                .strip_prefix("… ")
                .and_then(|l| l.strip_suffix(" bytes more"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 299_000_000)),
            "{}",
            &log[log.len().saturating_sub(2000)..]
        );
        assert_eq!(fs::read_to_string(&f.output).unwrap(), OLD);
    });
}

/// A conntrack that prints 300 MB and hangs: the clean-up after a failover is bounded by
/// --command-timeout like every other child, its output capped, and its failure named.
#[test]
fn a_hanging_chatty_conntrack_is_bounded_like_nft() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT},
                "conntrack_cleanup": "address"}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 accept");
        assert_exit(&f.run(&[]), 0);
        let fake = f.dir.path().join("conntrack");
        let pids = f.dir.path().join("pids");
        script(
            &fake,
            &format!(
                "head -c 300000000 /dev/zero | tr '\\0' x >&2\n{}",
                hang(&pids)
            ),
        );
        drop(primary);
        let mount = format!(
            "mount --bind {} /usr/sbin/conntrack && exec \"$0\" \"$@\"",
            fake.display()
        );
        let started = Instant::now();
        let (kib, out) = with_peak_rss(
            &f,
            &["unshare", "--mount", "--propagation", "private"],
            &["sh", "-c", &mount],
            &["--command-timeout", "2s"],
        );
        let took = started.elapsed();
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(kib < 50 * 1024, "peak RSS {kib} KiB");
        assert!(took < Duration::from_secs(6), "{took:?}: {log}");
        assert!(
            log.contains("conntrack clean-up failed"),
            "{}",
            &log[log.len().saturating_sub(1500)..]
        );
        assert!(
            log.contains("did not finish within 2s"),
            "{}",
            &log[log.len().saturating_sub(1500)..]
        );
        assert!(log.len() < 200_000, "{} bytes of log", log.len());
    });
}
