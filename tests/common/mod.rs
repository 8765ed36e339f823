//! Test fixtures: a private network namespace per test, a scratch directory laid out like
//! /etc/nftables.d, and the real binary and `nft` run inside that namespace.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_nftables-failover");

/// Runs `body` on a fresh thread that has its own, empty network namespace with `lo` up.
/// Everything the body starts — listeners, the binary, nft — lives and dies in that namespace,
/// so rulesets applied by a test never touch the host's. Needs root, as CI has.
pub fn in_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test creates a network namespace and needs root (CI runs as root); run `sudo cargo test`"
    );
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only affects the calling thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        sh("ip link set lo up");
        body()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs a shell command in the current thread's namespace and asserts success.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loads an nft ruleset from text (in the current namespace).
pub fn nft_apply(ruleset: &str) {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(ruleset.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "nft -f failed for:\n{ruleset}"
    );
}

/// Drops SYNs to `addr:port` so connects to it time out (a blackholed candidate).
pub fn blackhole(addrs: &[&str], port: u16) {
    let elements = addrs.join(", ");
    nft_apply(&format!(
        "table inet blackhole {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  ip daddr {{ {elements} }} tcp dport {port} drop\n }}\n}}\n"
    ));
}

/// A listener on a loopback address; connects succeed while it lives.
pub fn listen(addr: &str, port: u16) -> Listener {
    Listener(TcpListener::bind((addr, port)).unwrap_or_else(|e| panic!("bind {addr}:{port}: {e}")))
}

/// A listening socket that stops listening when dropped, even if a child process that another
/// test thread is just forking still holds a copy of its descriptor (until that child execs,
/// the socket would otherwise go on accepting, and a "dead" candidate would answer).
pub struct Listener(pub TcpListener);

impl Drop for Listener {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown on a descriptor we own; on a listening TCP socket it stops the
        // listening state for every holder of the socket.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// A scratch tree: config, addon dir with the output, base dir, main config, and an `nft`
/// wrapper that logs every call so tests can prove when nft ran and when it did not.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub output: PathBuf,
    pub addon_dir: PathBuf,
    pub base_dir: PathBuf,
    pub main_config: PathBuf,
    pub nft: PathBuf,
    pub nft_log: PathBuf,
    pub state: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base_dir = dir.path().join("nftables.d");
        let addon_dir = base_dir.join("addons");
        fs::create_dir_all(&addon_dir).unwrap();
        let nft_log = dir.path().join("nft-calls.log");
        let nft = dir.path().join("nft");
        fs::write(
            &nft,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\nexec /usr/sbin/nft \"$@\"\n",
                nft_log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&nft, fs::Permissions::from_mode(0o755)).unwrap();
        Fixture {
            state: dir.path().join("state/state.json"),
            config: addon_dir.join("failover.json"),
            output: addon_dir.join("failover.nft"),
            main_config: dir.path().join("nftables.conf"),
            dir,
            addon_dir,
            base_dir,
            nft,
            nft_log,
        }
    }

    pub fn write_config(&self, json: &str) {
        fs::write(&self.config, json).unwrap();
    }

    /// A main config like a real /etc/nftables.conf: flush, include the addons, use the defines.
    pub fn write_main(&self, rules: &str) {
        fs::write(
            &self.main_config,
            format!(
                "flush ruleset\ninclude \"{}/*.nft\"\ntable inet filter {{\n chain output {{\n  type filter hook output priority 10; policy accept;\n{rules}\n }}\n}}\n",
                self.addon_dir.display()
            ),
        )
        .unwrap();
    }

    /// Runs the binary with this fixture's paths; the reload applies the main config.
    pub fn run(&self, extra: &[&str]) -> Output {
        self.run_with_reload(&self.reload(), extra)
    }

    pub fn run_with_reload(&self, reload: &str, extra: &[&str]) -> Output {
        let mut cmd = self.command(&[], reload);
        cmd.args(extra);
        output_within(cmd, Duration::from_secs(30))
    }

    /// The binary with this fixture's paths and `reload`, started through `wrapper` (e.g.
    /// `["unshare", "--mount", …]`; empty: directly). Callers add arguments and run it.
    pub fn command(&self, wrapper: &[&str], reload: &str) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--output")
            .arg(&self.output)
            .arg("--addon-dir")
            .arg(&self.addon_dir)
            .arg("--base-dir")
            .arg(&self.base_dir)
            .arg("--main-config")
            .arg(&self.main_config)
            .arg("--nft")
            .arg(&self.nft)
            .arg("--reload-command")
            .arg(reload)
            .arg("--state")
            .arg(&self.state)
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("JOURNAL_STREAM");
        cmd
    }

    /// The default reload command: the fixture's nft wrapper loads the main config.
    pub fn reload(&self) -> String {
        format!("{} -f {}", self.nft.display(), self.main_config.display())
    }

    pub fn nft_calls(&self) -> Vec<String> {
        fs::read_to_string(&self.nft_log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Runs `status` with this fixture's paths.
    pub fn status(&self, extra: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.arg("status")
            .arg("--config")
            .arg(&self.config)
            .arg("--output")
            .arg(&self.output)
            .arg("--state")
            .arg(&self.state)
            .args(extra);
        output_within(cmd, Duration::from_secs(30))
    }

    pub fn output_text(&self) -> Option<String> {
        fs::read_to_string(&self.output).ok()
    }
}

/// Runs a command, killing it if it outlives `limit`, so a hung test fails instead of hanging CI.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // SAFETY: sending SIGKILL to our own child's pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    out
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stderr:\n{}\nstdout:\n{}",
        stderr(out),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The rendered value of one define in an include text.
pub fn define<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("define {name} = ")))
}

pub fn ruleset() -> String {
    sh("nft list ruleset")
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An interval set of the admin's that holds `$web_v4`: the whole config refuses 127.0.0.2
/// ("conflicting intervals"), while the live objects would take it.
pub const GUARD: &str = "table ip guard {
	set backends {
		type ipv4_addr
		flags interval
		elements = { 127.0.0.2/31, $web_v4 }
	}
}
";

/// Runs `f` on a thread inside the named network namespace (`ip netns add NAME`); sockets it
/// opens stay in that namespace.
pub fn within_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only, with a valid namespace fd.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Polls `cond` every 2 ms until it holds (returns how long that took) or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}
