//! The package under a real systemd: a minimal Debian 12 root boots with systemd as PID 1 in
//! `systemd-nspawn` (own network namespace and ruleset, throw-away overlay), the freshly built
//! `.deb` is installed as the README says, and tests/boot/inside.py follows the README's Install
//! section and checks failover, failback, the journal, the sandbox, the sudo rules, the
//! nftables.service override and the package life cycle inside it.
//!
//! Needs root, `systemd-nspawn` (systemd-container), `mmdebstrap`, `nsenter` and `cargo-deb`
//! (`.ci/run` installs them). The root file system is built once per machine and cached in
//! /var/cache/nftables-failover-tests; delete that directory to rebuild it.

use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const CACHE: &str = "/var/cache/nftables-failover-tests";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// ansible-core and python3-apt (for its apt module): the Ansible role is applied inside.
const PACKAGES: &str =
    "systemd,systemd-sysv,dbus,nftables,sudo,adduser,iproute2,python3,ansible-core,python3-apt";
/// What a Debian installer writes and mmdebstrap does not: without the host name in /etc/hosts,
/// sudo logs "unable to resolve host" at error priority on every call.
const HOSTS_HOOK: &str = "echo failover-test > \"$1/etc/hostname\"; \
     printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\tfailover-test\\n::1\\tlocalhost ip6-localhost\\n' \
     > \"$1/etc/hosts\"";
/// The whole test, root file system build and package build included.
const DEADLINE: Duration = Duration::from_secs(900);

fn since(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}

/// Why this machine cannot run the test: fatal under CI, a loud skip otherwise (as in
/// tests/packaging.rs).
fn unavailable(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("cannot boot a container, and CI is set: {why}");
    }
    eprintln!("SKIPPED boot test: {why} (set CI to make this fatal)");
}

fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (run `sudo cargo test`; CI runs as root)".into());
    }
    for (cmd, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("mmdebstrap", "mmdebstrap"),
        ("nsenter", "util-linux"),
        ("cargo-deb", "`cargo install cargo-deb --locked`"),
    ] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()));
        if !found {
            return Err(format!("{cmd} not found: install {package} (.ci/run does)"));
        }
    }
    let cgroup = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !cgroup.contains(" /sys/fs/cgroup") {
        return Err(
            "no cgroup file system at /sys/fs/cgroup: systemd cannot run in a container \
                    here"
                .into(),
        );
    }
    Ok(())
}

trait PdeathSig {
    fn pre_exec_pdeathsig(&mut self) -> &mut Self;
}

impl PdeathSig for Command {
    fn pre_exec_pdeathsig(&mut self) -> &mut Self {
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            self.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            })
        }
    }
}

/// Waits for a child with a time limit; kills it and returns None when the limit passes.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command with its output in `log`; returns the exit status (None if it was killed at
/// the limit) and the output.
fn run_logged(cmd: &mut Command, limit: Duration, log: &Path) -> (Option<ExitStatus>, String) {
    let file = File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let status = wait_within(&mut child, limit);
    (status, fs::read_to_string(log).unwrap_or_default())
}

fn remaining(deadline: Instant, step: Duration) -> Duration {
    let left = deadline.saturating_duration_since(Instant::now());
    assert!(!left.is_zero(), "the boot test ran out of time");
    left.min(step)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An exclusive lock on a file, released when dropped (flock, so it also goes when the process
/// dies).
struct Lock(File);

impl Lock {
    fn take(path: &Path, deadline: Instant) -> Lock {
        let file = File::create(path).unwrap();
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Lock(file);
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {} (another test building the root?)",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The cached Debian root, built with mmdebstrap when missing. Its name carries a hash of how
/// it is built, so a change of packages or hooks builds a new one. Parallel runs wait on a lock;
/// a root only appears under its final name once complete.
fn rootfs(deadline: Instant) -> PathBuf {
    let recipe = format!("{SUITE} {MIRROR} minbase {PACKAGES} {HOSTS_HOOK}");
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let hash = recipe.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    let root = Path::new(CACHE).join(format!("{SUITE}-{hash:016x}"));
    fs::create_dir_all(CACHE).unwrap();
    let _lock = Lock::take(&Path::new(CACHE).join("lock"), deadline);
    if root.join("usr/lib/systemd/systemd").exists() {
        eprintln!("boot: root file system {} (cached)", root.display());
        return root;
    }
    let start = Instant::now();
    let tmp = root.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    let (status, log) = run_logged(
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--quiet"])
            .arg(format!("--include={PACKAGES}"))
            .arg(format!("--customize-hook={HOSTS_HOOK}"))
            .args([SUITE])
            .arg(&tmp)
            .arg(MIRROR),
        remaining(deadline, Duration::from_secs(600)),
        &Path::new(CACHE).join("mmdebstrap.log"),
    );
    if status.is_none_or(|s| !s.success()) {
        let _ = fs::remove_dir_all(&tmp);
        panic!(
            "mmdebstrap failed ({status:?}); is {MIRROR} reachable?\n{}",
            tail(&log, 30)
        );
    }
    fs::rename(&tmp, &root).unwrap();
    eprintln!(
        "boot: built root file system {} in {}",
        root.display(),
        since(start)
    );
    root
}

/// Builds the .deb as tests/packaging.rs does (same target directory, so the release build is
/// shared) into `dir`.
fn build_deb(dir: &Path, deadline: Instant) -> PathBuf {
    let start = Instant::now();
    let (status, log) = run_logged(
        Command::new("cargo-deb")
            .arg("--output")
            .arg(dir)
            .env("CARGO_TARGET_DIR", Path::new(REPO).join("target/deb-test"))
            .current_dir(REPO),
        remaining(deadline, Duration::from_secs(400)),
        &dir.with_extension("log"),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "cargo deb failed ({status:?}):\n{}",
        tail(&log, 30)
    );
    let debs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "expected one .deb, found {debs:?}");
    eprintln!("boot: built {} in {}", debs[0].display(), since(start));
    debs[0].clone()
}

/// A booted container. Dropping it powers it off and, if that hangs, kills it; the overlay
/// (a tmpfs in nspawn's own mount namespace) goes with it.
struct Container {
    nspawn: Child,
    leader: i32,
    /// The container's pid namespace, to recognise its PID 1 when cleaning up.
    pidns: String,
    log: PathBuf,
}

impl Container {
    /// Boots `root` with `stage` bound read-only at /mnt/test. Err says why it did not boot.
    fn boot(root: &Path, stage: &Path, log: PathBuf, limit: Duration) -> Result<Container, String> {
        let start = Instant::now();
        let file = File::create(&log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--boot",
                "--private-network",
                "--volatile=overlay",
                // No systemd on the host to register with or to make a scope unit.
                "--register=no",
                "--keep-unit",
                "--console=read-only",
            ])
            .arg(format!("--machine=failover-test-{}", std::process::id()))
            .arg("--directory")
            .arg(root)
            .arg(format!("--bind-ro={}:/mnt/test", stage.display()))
            // The cached root is only ever the read-only lower layer, so parallel runs may
            // share it; nspawn's image lock would refuse the second one.
            .env("SYSTEMD_NSPAWN_LOCK", "0")
            // The unified cgroup hierarchy of a Debian 12 host, also where the host mounts a
            // hybrid one.
            .env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1")
            .stdin(Stdio::null())
            // If the test process dies (killed, or a panic outside this guard), nspawn gets
            // SIGTERM and powers the container off.
            .pre_exec_pdeathsig()
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start systemd-nspawn: {e}"))?;
        let mut container = Container {
            leader: 0,
            pidns: String::new(),
            nspawn,
            log,
        };
        let booted = container.wait_booted(start, limit);
        booted.map(|()| container)
    }

    fn wait_booted(&mut self, start: Instant, limit: Duration) -> Result<(), String> {
        let deadline = start + limit;
        // The container's PID 1 is nspawn's child.
        let parent = self.nspawn.id().to_string();
        while self.leader == 0 {
            if let Some(status) = self.nspawn.try_wait().unwrap() {
                return Err(format!(
                    "systemd-nspawn exited ({status}) before the container started:\n{}",
                    tail(&fs::read_to_string(&self.log).unwrap_or_default(), 20)
                ));
            }
            if Instant::now() > deadline {
                return Err("systemd-nspawn started no container".into());
            }
            self.leader = child_of(&parent).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pidns = pid_namespace(self.leader);
        // Until systemd listens on its socket, systemctl fails at once ("offline"); then
        // --wait waits for the boot to finish.
        let state = loop {
            let left = limit.saturating_sub(start.elapsed()).as_secs();
            let out = Command::new("timeout")
                .arg(left.max(1).to_string())
                .args(["nsenter", "-t", &self.leader.to_string(), "-a"])
                .args(["systemctl", "is-system-running", "--wait"])
                .output()
                .unwrap();
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !(state.is_empty() || state == "offline") || left == 0 {
                break state;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if state != "running" {
            let failed = self.exec(&["systemctl", "--failed", "--no-legend"]);
            return Err(format!(
                "systemd in the container is {state:?}, not running; failed units:\n{failed}\n\
                 console:\n{}",
                tail(&fs::read_to_string(&self.log).unwrap_or_default(), 30)
            ));
        }
        eprintln!(
            "boot: container booted in {} (PID 1 is {} on the host)",
            since(start),
            self.leader
        );
        Ok(())
    }

    /// Runs a short command in all the container's namespaces (as its root).
    fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["30", "nsenter", "-t", &self.leader.to_string(), "-a"])
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let start = Instant::now();
        // SIGTERM makes nspawn ask the container's systemd to power off.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.nspawn.id() as i32, libc::SIGTERM) };
        if wait_within(&mut self.nspawn, Duration::from_secs(30)).is_none() {
            eprintln!("boot: container did not power off within 30 s; killed nspawn");
        } else {
            eprintln!("boot: container powered off in {}", since(start));
        }
        // Normally the container's PID 1 is gone with nspawn. If it outlived it, kill it, and
        // with it its pid namespace, but only if that pid is still in the namespace recorded at
        // boot (a reused pid could be anyone's).
        if !self.pidns.is_empty() && pid_namespace(self.leader) == self.pidns {
            // SAFETY: kill by pid, checked just above.
            unsafe { libc::kill(self.leader, libc::SIGKILL) };
            eprintln!("boot: killed the container's PID 1 ({})", self.leader);
        }
    }
}

fn pid_namespace(pid: i32) -> String {
    fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map(|l| l.display().to_string())
        .unwrap_or_default()
}

/// The pid of a child of `parent` that is PID 1 of its own pid namespace, from /proc.
fn child_of(parent: &str) -> Option<i32> {
    fs::read_dir("/proc").ok()?.find_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        let pid: i32 = name.parse().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        // nspawn's first child sets up and exits; PID 1 of the new pid namespace stays.
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        (field("PPid:")? == [parent] && field("NSpid:")?.last() == Some(&"1")).then_some(pid)
    })
}

#[test]
fn package_units_and_hardening_under_systemd_as_pid_1() {
    let start = Instant::now();
    let deadline = start + DEADLINE;
    if let Err(why) = preflight() {
        return unavailable(&why);
    }
    let root = rootfs(deadline);
    let stage = tempfile::tempdir().unwrap();
    fs::create_dir_all(stage.path().join("deb")).unwrap();
    fs::create_dir_all(stage.path().join("boot")).unwrap();
    fs::create_dir_all(stage.path().join("systemd")).unwrap();
    build_deb(&stage.path().join("deb"), deadline);
    fs::copy(
        Path::new(REPO).join("tests/boot/inside.py"),
        stage.path().join("boot/inside.py"),
    )
    .unwrap();
    fs::copy(
        Path::new(REPO).join("systemd/nftables-failover.service"),
        stage.path().join("systemd/nftables-failover.service"),
    )
    .unwrap();
    // The Ansible role, as a site would check it out.
    let status = Command::new("cp")
        .args(["-r", &format!("{REPO}/ansible")])
        .arg(stage.path().join("ansible"))
        .status()
        .unwrap();
    assert!(status.success(), "cannot copy ansible/ into the stage");

    let logs = tempfile::tempdir().unwrap();
    let container = match Container::boot(
        &root,
        stage.path(),
        logs.path().join("console.log"),
        remaining(deadline, Duration::from_secs(90)),
    ) {
        Ok(c) => c,
        Err(why) => return unavailable(&why),
    };
    let inside = Instant::now();
    let (status, output) = run_logged(
        Command::new("nsenter")
            .args(["-t", &container.leader.to_string(), "-a"])
            .args(["python3", "-u", "/mnt/test/boot/inside.py"]),
        remaining(deadline, Duration::from_secs(300)),
        &logs.path().join("inside.log"),
    );
    eprintln!("{output}");
    eprintln!("boot: checks inside the container took {}", since(inside));
    let journal = if status.is_some_and(|s| s.success()) {
        String::new()
    } else {
        container.exec(&["journalctl", "--no-pager", "-n", "60"])
    };
    drop(container);
    eprintln!("boot: whole test {}", since(start));
    assert!(
        status.is_some_and(|s| s.success()) && output.contains("boot: ALL OK"),
        "the checks inside the container failed ({}); last journal lines:\n{journal}",
        status.map_or("killed at the time limit".into(), |s| s.to_string())
    );
}
