//! Running `nft` and the reload command, through `sudo -n` when not root.
//!
//! Commands run without a shell and always by absolute path, with a fixed argument form, so the
//! shipped sudoers file can allow each one exactly, with no wildcards.

use crate::signals;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Default of `--command-timeout`. A healthy `nft -c` or reload takes well under a second, a very
/// large ruleset a few seconds; 15 s leaves room for that on a loaded host while keeping the worst
/// run (10 s lock wait, a connect timeout, three commands) inside the service's
/// TimeoutStartSec=60s, so that a hang is ended by this binary, which rolls back, and not by
/// systemd, which would kill it mid-apply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// After SIGTERM, how long a command may take to exit before its process group gets SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

/// While a stop signal can arrive, waits look at `signals::received` this often. The wait still
/// returns the moment the command exits; this only bounds how late a signal is noticed.
const SIGNAL_SLICE: Duration = Duration::from_millis(50);

pub struct Runner {
    /// `Some(path to sudo)` when privileged commands must go through `sudo -n`.
    sudo: Option<PathBuf>,
    /// How long one command may run before it is killed.
    timeout: Duration,
    /// Whether a stop signal stops the command (or keeps it from starting). Steps that may
    /// change the kernel, and those that put it back, run to their end (still bounded by
    /// `timeout`), so the run knows what the kernel holds when it exits.
    interruptible: bool,
}

impl Runner {
    /// Root runs commands directly; anyone else through `sudo -n` (never prompting).
    pub fn for_current_user() -> Runner {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        Runner {
            sudo: (!root).then(|| find_program("sudo").unwrap_or_else(|| "/usr/bin/sudo".into())),
            timeout: DEFAULT_TIMEOUT,
            interruptible: true,
        }
    }

    pub fn with_timeout(self, timeout: Duration) -> Runner {
        Runner { timeout, ..self }
    }

    /// The same runner for commands a stop signal must not cut short: see `interruptible`.
    pub fn uninterruptible(&self) -> Runner {
        Runner {
            sudo: self.sudo.clone(),
            interruptible: false,
            ..*self
        }
    }

    /// The exact argv that will be executed for a privileged command.
    pub fn argv(&self, command: &[OsString]) -> Vec<OsString> {
        match &self.sudo {
            Some(sudo) => [sudo.as_os_str(), OsStr::new("-n")]
                .into_iter()
                .map(OsString::from)
                .chain(command.iter().cloned())
                .collect(),
            None => command.to_vec(),
        }
    }

    /// Runs a privileged command; `what` says what it is for in error messages.
    ///
    /// The command runs in a process group of its own and is bounded: past the timeout, or when
    /// SIGTERM/SIGINT reaches this process (see `signals`), the group is stopped and an error
    /// returned, which the apply treats like any failed step (it rolls back). A signal that
    /// arrived before the call fails it without starting anything.
    pub fn run(&self, what: &str, command: &[OsString]) -> Result<(), CommandError> {
        self.output(what, command).map(drop)
    }

    /// Runs a privileged command and returns its stdout (e.g. nft's JSON listing).
    pub fn output(&self, what: &str, command: &[OsString]) -> Result<Vec<u8>, CommandError> {
        self.execute(what, command, false)
    }

    /// Runs a command and returns its messages: stderr, then stdout (e.g. conntrack's count).
    pub fn messages(&self, what: &str, command: &[OsString]) -> Result<String, CommandError> {
        self.execute(what, command, true)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A runner for commands that need no root (or hold their own capability): never sudo.
    pub fn direct(&self) -> Runner {
        Runner {
            sudo: None,
            ..*self
        }
    }

    fn execute(
        &self,
        what: &str,
        command: &[OsString],
        messages: bool,
    ) -> Result<Vec<u8>, CommandError> {
        let argv = self.argv(command);
        crate::log::debug(&format!("running: {}", shown(&argv)));
        let fail = |status: String, output: String| CommandError {
            what: what.to_string(),
            argv: shown(&argv),
            status,
            output,
            sudo_denied: false,
        };
        if let Some(signal) = signals::received().filter(|_| self.interruptible) {
            return Err(fail(
                format!("was not started: interrupted by {}", signals::name(signal)),
                String::new(),
            ));
        }
        // Own process group: the whole command (a wrapper script and what it starts, or sudo
        // and its child) can be signalled at once, and a Ctrl-C on a terminal reaches only
        // this process, which then stops the command itself.
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            // Untranslated messages: callers match nft's (e.g. a missing table's ENOENT), and
            // logs read the same everywhere. sudo keeps LC_* (env_check).
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("could not be started: {e}"), String::new()))?;
        let done = supervise(child, self.timeout, self.interruptible);
        let mut status = match (&done.ended, &done.status) {
            (Ended::Exited, Ok(s)) if s.success() => {
                return Ok(if messages {
                    done.output.into_bytes()
                } else {
                    done.stdout
                });
            }
            (Ended::Exited, Ok(s)) => describe_status(*s),
            (Ended::Exited, Err(e)) => format!("could not be waited for: {e}"),
            (Ended::TimedOut, _) => format!(
                "did not finish within {} and was killed; if it needs longer, raise --command-timeout",
                shown_duration(self.timeout)
            ),
            (Ended::Interrupted(signal), _) => {
                format!("was stopped: interrupted by {}", signals::name(*signal))
            }
            (Ended::Unwatched(e), _) => format!("was killed: cannot watch it ({e})"),
        };
        if done.survivors {
            status.push_str(&format!(
                "\n  a process it started as another user (root, through sudo) ignored SIGTERM and \
                 still runs in process group {}; stop it as root (e.g. `pkill -KILL -g {}`)",
                done.pgid, done.pgid
            ));
        }
        let mut err = fail(status, done.output);
        err.sudo_denied = self.sudo.is_some() && is_sudo_refusal(&err.output);
        Err(err)
    }
}

/// How a supervised command ended.
enum Ended {
    Exited,
    TimedOut,
    Interrupted(i32),
    /// A watcher thread could not be started; the command was killed at once.
    Unwatched(String),
}

struct Done {
    ended: Ended,
    status: std::io::Result<ExitStatus>,
    /// stderr then stdout, as far as they could be read.
    output: String,
    /// stdout alone (e.g. nft's JSON listing).
    stdout: Vec<u8>,
    pgid: i32,
    /// Members of the command's process group that this user may not signal were still alive
    /// after it was stopped.
    survivors: bool,
}

/// Waits for `child` (the leader of its own process group) with a bound, stops the group if it
/// outlives the timeout or a stop signal arrives, reaps it, and collects its output.
///
/// Threads do the blocking: one waits for the exit, two drain stdout and stderr (so a chatty
/// command cannot fill a pipe and deadlock against us). The exit is noticed the moment it
/// happens, through a channel, with no sleeping in between.
///
/// Through `sudo -n` as an unprivileged user (tested on Debian 12, sudo 1.9.13p3, sudo's default
/// `!use_pty`): sudo runs with the user's real uid (ruid=user, euid=suid=0), so the user may
/// signal it; its child (nft, systemctl) runs with all uids 0 in the same process group, and the
/// user may not signal that (EPERM; `killpg` still reports success because sudo was reached).
/// SIGTERM to sudo is relayed to its child, which exits, and sudo exits with the same signal.
/// SIGKILL cannot be relayed: it kills sudo alone and leaves the root child running, orphaned.
/// Hence SIGTERM first, SIGKILL only after a grace period; and afterwards a `killpg(pgid, 0)`
/// that fails with EPERM reveals a root process that ignored SIGTERM, which is reported because
/// only root can end it. sudoers can bound it as root: a per-command `TIMEOUT=` option or
/// `Defaults command_timeout` (neither needs `user_command_timeouts`, which only allows the user's
/// own `sudo -T`) makes sudo send the command SIGHUP and SIGTERM, then SIGKILL 2 s later.
fn supervise(mut child: Child, timeout: Duration, interruptible: bool) -> Done {
    let pid = child.id() as i32;
    let started = Instant::now();
    let (out_tx, out_rx) = mpsc::channel();
    let mut watchers = Ok(());
    for (index, pipe) in [
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .enumerate()
    {
        let Some(mut pipe) = pipe else { continue };
        let tx = out_tx.clone();
        // stderr is for messages; stdout may be nft's JSON listing of our table.
        let cap = if index == 0 { STDERR_CAP } else { STDOUT_CAP };
        let spawned = std::thread::Builder::new().spawn(move || {
            let _ = tx.send((index, read_capped(&mut pipe, cap)));
        });
        watchers = watchers.and(spawned.map(drop));
    }
    drop(out_tx);
    let exit_rx = watchers.and_then(|()| watch_exit(pid));

    let ended = match &exit_rx {
        Ok(rx) => wait(rx, started + timeout, interruptible),
        Err(e) => Ended::Unwatched(e.to_string()),
    };
    if !matches!(ended, Ended::Exited) {
        killpg(pid, libc::SIGTERM);
        if let Ok(rx) = &exit_rx {
            let _ = rx.recv_timeout(GRACE);
        }
    }
    // The leader has exited (or had its grace period), but is not reaped yet, so its pid, and
    // with it the process group id, cannot be reused: whatever else is left in the group gets
    // SIGKILL. For a command that exited normally that is only leftovers holding our pipes.
    killpg(pid, libc::SIGKILL);
    let status = child.wait();
    // With the leader reaped, the group exists only while other members do; EPERM means some
    // are alive and not ours to signal.
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let survivors = unsafe { libc::kill(-pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);

    // The pipes close when the last process holding them exits; a surviving root process may
    // keep them open, so do not wait for its output forever.
    let mut parts = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + GRACE;
    while let Ok((index, bytes)) =
        out_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        parts[index] = bytes;
    }
    let mut output = String::from_utf8_lossy(&parts[0]).into_owned();
    output.push_str(&String::from_utf8_lossy(&parts[1]));
    let [_, stdout] = parts;
    Done {
        ended,
        status,
        output,
        stdout,
        pgid: pid,
        survivors,
    }
}

/// The most of a command's stderr that is kept (and logged); the rest is read and dropped, so
/// the command never blocks on a full pipe and a flood cannot fill memory or the journal.
const STDERR_CAP: usize = 64 << 10;
/// The most of its stdout that is kept: nft's JSON listing of the tool's table.
const STDOUT_CAP: usize = 16 << 20;

/// Reads `pipe` to its end, keeping the first `cap` bytes and a note of how many followed.
fn read_capped(pipe: &mut dyn Read, cap: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let mut dropped: u64 = 0;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += (n - room) as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if dropped > 0 {
        kept.extend_from_slice(format!("\n… ({dropped} more bytes not kept)\n").as_bytes());
    }
    kept
}

/// Waits until the command exits, the deadline passes, or a stop signal arrives.
fn wait(exited: &Receiver<()>, deadline: Instant, interruptible: bool) -> Ended {
    loop {
        if let Some(signal) = signals::received().filter(|_| interruptible) {
            return Ended::Interrupted(signal);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ended::TimedOut;
        }
        // Without handlers a stop signal kills this process anyway, so one plain wait suffices.
        let slice = if interruptible && signals::installed() {
            left.min(SIGNAL_SLICE)
        } else {
            left
        };
        match exited.recv_timeout(slice) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ended::Exited,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// A channel that gets a message when process `pid` (our child) has exited. The child is left
/// unreaped (WNOWAIT), so its pid stays reserved until `Child::wait`.
fn watch_exit(pid: i32) -> std::io::Result<Receiver<()>> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new().spawn(move || {
        loop {
            // SAFETY: waitid writes only into `info`; WNOWAIT leaves the child for Child::wait.
            let rc = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
        }
        let _ = tx.send(());
    })?;
    Ok(rx)
}

fn killpg(pgid: i32, signal: i32) {
    // SAFETY: signals only the process group we created for the command, whose leader we have
    // not reaped yet (so the id cannot belong to anyone else). Errors (ESRCH: nothing left,
    // EPERM: only processes of other users left) need no handling here.
    unsafe { libc::killpg(pgid, signal) };
}

/// `15s`, `1.5s`, `500ms`: the forms `--command-timeout` accepts.
fn shown_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[derive(Debug)]
pub struct CommandError {
    pub what: String,
    pub argv: String,
    pub status: String,
    /// The command's own stderr and stdout, passed through verbatim (nft's error lines).
    pub output: String,
    pub sudo_denied: bool,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} failed: `{}` {}", self.what, self.argv, self.status)?;
        for line in self.output.lines().filter(|l| !l.trim().is_empty()) {
            write!(f, "\n  {line}")?;
        }
        if self.sudo_denied {
            write!(
                f,
                "\n  hint: sudo refused to run this without a password; allow exactly this command \
                 for this user, e.g. with the shipped /etc/sudoers.d/nftables-failover"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {}

fn is_sudo_refusal(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        l.starts_with("sudo:")
            && (l.contains("password is required")
                || l.contains("not allowed to execute")
                || l.contains("not in the sudoers")
                || l.contains("may not run sudo"))
    })
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => format!("was killed ({status})"),
    }
}

/// A command line for logs: arguments with spaces are quoted so it can be read back.
pub fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a command given as one string (e.g. `--reload-command`) on whitespace, without a shell,
/// and makes its program absolute via PATH so a sudoers rule can name it exactly.
pub fn parse_command_line(line: &str) -> Result<Vec<OsString>, String> {
    let mut words = line.split_whitespace();
    let program = words.next().ok_or("the command is empty")?;
    let path = find_program(program).ok_or_else(|| {
        format!("program {program:?} not found (searched PATH); give an absolute path")
    })?;
    Ok(std::iter::once(path.into_os_string())
        .chain(words.map(OsString::from))
        .collect())
}

/// Resolves a program name like the shell would: paths as given (made absolute), bare names via PATH.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = std::path::absolute(name).ok()?;
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_absolute() && executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn non_root_prefixes_sudo_non_interactive() {
        let r = Runner {
            sudo: Some("/usr/bin/sudo".into()),
            timeout: DEFAULT_TIMEOUT,
            interruptible: true,
        };
        assert_eq!(
            r.argv(&os(&["/usr/sbin/nft", "-c", "-f", "/etc/nftables.conf"])),
            os(&[
                "/usr/bin/sudo",
                "-n",
                "/usr/sbin/nft",
                "-c",
                "-f",
                "/etc/nftables.conf"
            ])
        );
        let root = Runner {
            sudo: None,
            timeout: DEFAULT_TIMEOUT,
            interruptible: true,
        };
        assert_eq!(root.argv(&os(&["/bin/true"])), os(&["/bin/true"]));
    }

    #[test]
    fn command_lines_resolve_the_program_via_path() {
        let argv = parse_command_line("sh -c true").unwrap();
        assert!(Path::new(&argv[0]).is_absolute(), "{argv:?}");
        assert_eq!(&argv[1..], &os(&["-c", "true"])[..]);
        assert!(parse_command_line("   ").is_err());
        let err = parse_command_line("no-such-program-xyz reload").unwrap_err();
        assert!(err.contains("\"no-such-program-xyz\" not found"), "{err}");
    }

    #[test]
    fn failing_command_reports_status_and_output() {
        let r = Runner {
            sudo: None,
            timeout: DEFAULT_TIMEOUT,
            interruptible: true,
        };
        let err = r
            .run(
                "test step",
                &os(&["/bin/sh", "-c", "echo 'Error: bad' >&2; exit 3"]),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("test step failed: `/bin/sh -c 'echo"),
            "{msg}"
        );
        assert!(msg.contains("exited with status 3\n  Error: bad"), "{msg}");
        assert!(!err.sudo_denied);
    }

    #[test]
    fn output_is_drained_in_full_and_stderr_kept_to_its_cap() {
        let r = Runner::for_current_user();
        // More than a pipe buffer (64 KiB) on both streams: a command that fills one pipe while
        // nobody drains it would never exit. stderr beyond its cap is read and dropped.
        let script = "head -c 200000 /dev/zero | tr '\\0' o; head -c 100000 /dev/zero | tr '\\0' e >&2; exit 1";
        let err = Runner { sudo: None, ..r }
            .run("big output", &os(&["/bin/sh", "-c", script]))
            .unwrap_err();
        assert_eq!(err.status, "exited with status 1");
        let note = format!("\n… ({} more bytes not kept)\n", 100_000 - STDERR_CAP);
        let want = "e".repeat(STDERR_CAP) + &note + &"o".repeat(200_000);
        assert!(err.output == want, "{} bytes", err.output.len());
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The shell and a child of it, each recording its pid; output first, to see it kept.
        let script = format!(
            "echo started; sleep 30 & echo $! >> {p}; echo $$ >> {p}; wait",
            p = pids.display()
        );
        let r = Runner {
            sudo: None,
            timeout: Duration::from_millis(300),
            interruptible: true,
        };
        let started = Instant::now();
        let err = r
            .run("slow step", &os(&["/bin/sh", "-c", &script]))
            .unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("did not finish within 300ms and was killed; if it needs longer, raise --command-timeout"),
            "{msg}"
        );
        assert!(msg.starts_with("slow step failed: `/bin/sh -c"), "{msg}");
        assert_eq!(err.output, "started\n");
        for pid in std::fs::read_to_string(&pids).unwrap().lines() {
            let pid: i32 = pid.parse().unwrap();
            assert!(gone(pid), "pid {pid} survived");
        }
    }

    /// Killed processes of the group that are not our children are reaped by init, not at once.
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

    #[test]
    fn a_quick_command_returns_when_it_exits_not_at_the_timeout() {
        let r = Runner {
            sudo: None,
            timeout: Duration::from_secs(20),
            interruptible: true,
        };
        let started = Instant::now();
        r.run("quick", &os(&["/bin/sh", "-c", "sleep 0.1"]))
            .unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "{took:?}");
    }

    #[test]
    fn durations_are_shown_as_the_option_takes_them() {
        assert_eq!(shown_duration(Duration::from_secs(15)), "15s");
        assert_eq!(shown_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(shown_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn recognises_sudo_refusals() {
        assert!(is_sudo_refusal("sudo: a password is required\n"));
        assert!(is_sudo_refusal(
            "sudo: sorry, user x is not allowed to execute '/usr/sbin/nft list ruleset' as root on h.\n"
        ));
        assert!(!is_sudo_refusal("Error: syntax error\n"));
    }
}
