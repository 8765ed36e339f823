//! Running `nft` and the reload command, through `sudo -n` when not root.
//!
//! Commands run without a shell and always by absolute path, with a fixed argument form, so the
//! shipped sudoers file can allow each one exactly, with no wildcards.

use crate::signals;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Default of `--command-timeout`. A healthy `nft -c` or reload takes well under a second, a very
/// large ruleset a few seconds; 15 s leaves room for that on a loaded host while keeping the worst
/// run (10 s lock wait, a connect timeout, three commands) inside the service's
/// TimeoutStartSec=60s, so that a hang is ended by this binary, which rolls back, and not by
/// systemd, which would kill it mid-apply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// After SIGTERM, how long a command may take to exit before its process group gets SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

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
        self.execute(what, command, Extra::capture(Capture::Stdout))
    }

    /// Runs a command and returns its messages: stderr, then stdout (e.g. conntrack's count).
    pub fn messages(&self, what: &str, command: &[OsString]) -> Result<String, CommandError> {
        self.execute(what, command, Extra::capture(Capture::Messages))
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A runner for commands that need no root (or hold their own capability): never sudo.
    pub fn direct(&self) -> Runner {
        Runner {
            sudo: None,
            ..*self
        }
    }

    /// Runs a command with `input` on its stdin and `env` added to its environment, stdout and
    /// stderr through one pipe (in the order it wrote them, capped at 64 KiB); returns that
    /// output. For the on-change hook: not privileged (see `direct`), bounded by this runner's
    /// timeout, and nothing it leaves behind in its process group outlives it.
    pub fn merged(
        &self,
        what: &str,
        command: &[OsString],
        input: &[u8],
        env: &[(String, String)],
    ) -> Result<Vec<u8>, CommandError> {
        let extra = Extra {
            input,
            env,
            capture: Capture::Merged,
        };
        self.execute(what, command, extra)
    }

    fn execute(
        &self,
        what: &str,
        command: &[OsString],
        extra: Extra,
    ) -> Result<Vec<u8>, CommandError> {
        let argv = self.argv(command);
        crate::log::debug(&format!("running: {}", shown(&argv)));
        let fail = |failure: Failure, status: String, output: String| CommandError {
            what: what.to_string(),
            argv: shown(&argv),
            failure,
            status,
            output,
            sudo_denied: false,
        };
        if let Some(signal) = signals::received().filter(|_| self.interruptible) {
            return Err(fail(
                Failure::NotStarted,
                format!("was not started: interrupted by {}", signals::name(signal)),
                String::new(),
            ));
        }
        let not_started = |e: std::io::Error| {
            fail(
                Failure::NotStarted,
                format!("could not be started: {e}"),
                String::new(),
            )
        };
        let (child, streams) = spawn(&argv, &extra).map_err(not_started)?;
        let done = supervise(
            child,
            streams,
            extra.input,
            self.timeout,
            self.interruptible,
        );
        let (failure, mut status) = match (&done.ended, &done.status) {
            (Ended::Exited, Ok(s)) if s.success() => {
                return Ok(match extra.capture {
                    Capture::Stdout => done.stdout,
                    Capture::Messages | Capture::Merged => done.output.into_bytes(),
                });
            }
            (Ended::Exited, Ok(s)) => (Failure::Exited(*s), describe_status(*s)),
            (Ended::Exited, Err(e)) => (Failure::Lost, format!("could not be waited for: {e}")),
            (Ended::TimedOut, _) => (
                Failure::TimedOut,
                format!(
                    "did not finish within {} and was killed; if it needs longer, raise --command-timeout",
                    shown_duration(self.timeout)
                ),
            ),
            (Ended::Interrupted(signal), _) => (
                Failure::Interrupted(*signal),
                format!("was stopped: interrupted by {}", signals::name(*signal)),
            ),
            (Ended::Unwatched(e), _) => {
                (Failure::Lost, format!("was killed: cannot watch it ({e})"))
            }
        };
        if done.survivors {
            status.push_str(&format!(
                "\n  a process it started as another user (root, through sudo) ignored SIGTERM and \
                 still runs in process group {}; stop it as root (e.g. `pkill -KILL -g {}`)",
                done.pgid, done.pgid
            ));
        }
        let mut err = fail(failure, status, done.output);
        err.sudo_denied = self.sudo.is_some() && is_sudo_refusal(&err.output);
        Err(err)
    }
}

/// What a command gets and gives beyond its argv.
struct Extra<'a> {
    input: &'a [u8],
    env: &'a [(String, String)],
    capture: Capture,
}

impl Extra<'_> {
    fn capture(capture: Capture) -> Extra<'static> {
        Extra {
            input: &[],
            env: &[],
            capture,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// stdout and stderr apart: the result is stdout (nft's JSON listing), errors carry both.
    Stdout,
    /// stdout and stderr apart: the result is stderr, then stdout (conntrack's count).
    Messages,
    /// One pipe for both, in the order they were written (the hook's log lines).
    Merged,
}

/// Starts `argv` in a process group of its own with pipes for what `extra` asks; returns the
/// child and our ends of its output pipes (stderr, or the merged pipe, first).
fn spawn(argv: &[OsString], extra: &Extra) -> std::io::Result<(Child, Vec<Stream>)> {
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .envs(extra.env.iter().map(|(k, v)| (k, v)))
        .stdin(if extra.input.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        // Own process group: the whole command (a wrapper script and what it starts, or sudo
        // and its child) can be signalled at once, and a Ctrl-C on a terminal reaches only
        // this process, which then stops the command itself.
        .process_group(0);
    if extra.capture != Capture::Merged {
        // Untranslated messages: callers match nft's (e.g. a missing table's ENOENT), and
        // logs read the same everywhere. sudo keeps LC_* (env_check). The hook keeps the
        // admin's locale.
        command.env("LC_ALL", "C");
    }
    let mut streams = Vec::new();
    if extra.capture == Capture::Merged {
        let (reader, writer) = std::io::pipe()?;
        command.stdout(writer.try_clone()?).stderr(writer);
        let child = command.spawn()?;
        // Our copies of the write end must go, or the reader never sees end of file.
        drop(command);
        streams.push(Stream::new(reader.into(), STDERR_CAP));
        return Ok((child, streams));
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // stderr is for messages; stdout may be nft's JSON listing of our table.
    if let Some(pipe) = child.stderr.take() {
        streams.push(Stream::new(pipe.into(), STDERR_CAP));
    }
    if let Some(pipe) = child.stdout.take() {
        streams.push(Stream::new(pipe.into(), STDOUT_CAP));
    }
    Ok((child, streams))
}

/// How a supervised command ended.
enum Ended {
    Exited,
    TimedOut,
    Interrupted(i32),
    /// The exit could not be watched (no pidfd); the command was stopped at once.
    Unwatched(String),
}

/// Why a command failed, for callers that word it themselves (the hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    NotStarted,
    Exited(ExitStatus),
    TimedOut,
    Interrupted(i32),
    /// It could not be watched or waited for.
    Lost,
}

struct Done {
    ended: Ended,
    status: std::io::Result<ExitStatus>,
    /// stderr then stdout (or the merged pipe), as far as they could be read.
    output: String,
    /// stdout alone (e.g. nft's JSON listing).
    stdout: Vec<u8>,
    pgid: i32,
    /// Members of the command's process group that this user may not signal were still alive
    /// after it was stopped.
    survivors: bool,
}

/// Our end of one of a command's output pipes, read as it comes and kept up to a cap.
struct Stream {
    fd: OwnedFd,
    kept: Vec<u8>,
    cap: usize,
    dropped: u64,
    open: bool,
}

impl Stream {
    fn new(fd: OwnedFd, cap: usize) -> Stream {
        set_nonblocking(fd.as_raw_fd());
        Stream {
            fd,
            kept: Vec::new(),
            cap,
            dropped: 0,
            open: true,
        }
    }

    /// Reads what is there without blocking; notes the end of file.
    fn read(&mut self) {
        let mut buf = [0u8; 64 << 10];
        loop {
            // SAFETY: reads into a buffer owned by this frame, at most its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => {
                    self.open = false;
                    return;
                }
                n if n > 0 => {
                    let n = n as usize;
                    let room = self.cap.saturating_sub(self.kept.len()).min(n);
                    self.kept.extend_from_slice(&buf[..room]);
                    self.dropped += (n - room) as u64;
                }
                _ => match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN) => return,
                    _ => {
                        self.open = false;
                        return;
                    }
                },
            }
        }
    }

    fn into_bytes(mut self) -> Vec<u8> {
        if self.dropped > 0 {
            let note = format!("\n… ({} more bytes not kept)\n", self.dropped);
            self.kept.extend_from_slice(note.as_bytes());
        }
        self.kept
    }
}

/// Waits for `child` (the leader of its own process group) with a bound, stops the group if it
/// outlives the timeout or a stop signal arrives, reaps it, and collects its output.
///
/// One thread, one `poll(2)` over everything that can happen: the child's exit (a pidfd), its
/// output pipes (drained as they fill, so a chatty command cannot block on a full pipe), its
/// stdin, and the stop signals' self-pipe. Nothing is polled on a clock and no helper thread
/// is left behind, whatever the command leaves running.
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
fn supervise(
    mut child: Child,
    streams: Vec<Stream>,
    input: &[u8],
    timeout: Duration,
    interruptible: bool,
) -> Done {
    let mut watch = Watch::new(&mut child, streams, timeout, interruptible);
    while watch.act(Instant::now()) {
        watch.wait(input);
    }
    watch.finish(child)
}

/// A command being supervised: what has happened to it so far, and what is still open.
struct Watch {
    pid: i32,
    deadline: Instant,
    interruptible: bool,
    /// Readable once the command's leader has exited (None: no pidfd; stopped at once).
    pidfd: Option<OwnedFd>,
    streams: Vec<Stream>,
    stdin: Option<OwnedFd>,
    written: usize,
    /// The stop signals' self-pipe, when a signal may stop the command.
    wake: Option<i32>,
    /// Why it was stopped, if it was.
    ended: Option<Ended>,
    /// When SIGTERM went to the group; SIGKILL follows after `GRACE`.
    killed_at: Option<Instant>,
    exited: bool,
    /// Once the leader has exited: how long its pipes may still be drained (a process that
    /// left the group may hold them).
    drain_until: Option<Instant>,
}

impl Watch {
    fn new(
        child: &mut Child,
        streams: Vec<Stream>,
        timeout: Duration,
        interruptible: bool,
    ) -> Watch {
        let pid = child.id() as i32;
        let stdin = child.stdin.take().map(OwnedFd::from);
        if let Some(fd) = &stdin {
            set_nonblocking(fd.as_raw_fd());
        }
        let mut watch = Watch {
            pid,
            deadline: Instant::now() + timeout,
            interruptible,
            pidfd: None,
            streams,
            stdin,
            written: 0,
            wake: signals::wake_fd().filter(|_| interruptible),
            ended: None,
            killed_at: None,
            exited: false,
            drain_until: None,
        };
        match pidfd_open(pid) {
            Ok(fd) => watch.pidfd = Some(fd),
            Err(e) => watch.stop(Ended::Unwatched(e.to_string()), Instant::now()),
        }
        watch
    }

    /// SIGTERM to the group, noting why.
    fn stop(&mut self, why: Ended, now: Instant) {
        self.ended = Some(why);
        killpg(self.pid, libc::SIGTERM);
        self.killed_at = Some(now);
    }

    /// Does what is due at `now`; false once there is nothing left to wait for.
    fn act(&mut self, now: Instant) -> bool {
        if self.exited {
            if self.drain_until.is_none() {
                // The leader has exited but is not reaped yet, so its pid, and with it the
                // process group id, cannot be reused: whatever else is left in the group gets
                // SIGKILL. For a command that exited normally that is only leftovers (a hook's
                // `curl … &`) holding our pipes.
                killpg(self.pid, libc::SIGKILL);
                self.drain_until = Some(now + GRACE);
            }
            return self.streams.iter().any(|s| s.open)
                && self.drain_until.is_some_and(|d| now < d);
        }
        if self.ended.is_none() {
            if let Some(signal) = signals::received().filter(|_| self.interruptible) {
                self.stop(Ended::Interrupted(signal), now);
            } else if now >= self.deadline {
                self.stop(Ended::TimedOut, now);
            }
        } else if let Some(at) = self.killed_at
            && now >= at + GRACE
        {
            killpg(self.pid, libc::SIGKILL);
            self.killed_at = None;
            if self.pidfd.is_none() {
                // Nothing tells of the exit: SIGKILL is as far as it goes.
                self.exited = true;
            }
        }
        true
    }

    /// The next moment something is due: the deadline, the end of the grace, of the drain.
    fn due(&self) -> Option<Instant> {
        [
            (self.ended.is_none() && !self.exited).then_some(self.deadline),
            self.killed_at.map(|at| at + GRACE),
            self.drain_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One `poll(2)` until something happens or is due, and what it found handled.
    fn wait(&mut self, input: &[u8]) {
        let mut fds = Vec::with_capacity(self.streams.len() + 3);
        let mut add = |fd: i32, events: i16| {
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            })
        };
        if let Some(fd) = self.pidfd.as_ref().filter(|_| !self.exited) {
            add(fd.as_raw_fd(), libc::POLLIN);
        }
        for s in self.streams.iter().filter(|s| s.open) {
            add(s.fd.as_raw_fd(), libc::POLLIN);
        }
        if let Some(fd) = self.stdin.as_ref().filter(|_| !self.exited) {
            add(fd.as_raw_fd(), libc::POLLOUT);
        }
        if let Some(fd) = self.wake.filter(|_| self.ended.is_none() && !self.exited) {
            add(fd, libc::POLLIN);
        }
        let wait_ms = self.due().map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32
        });
        // SAFETY: `fds` is a live, correctly sized array of pollfd. EINTR just loops.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        let ready =
            |fd: i32, events: i16| fds.iter().any(|p| p.fd == fd && p.revents & events != 0);
        let readable = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
        if let Some(fd) = &self.pidfd
            && !self.exited
            && ready(fd.as_raw_fd(), readable)
        {
            self.exited = true;
        }
        for s in self.streams.iter_mut().filter(|s| s.open) {
            if ready(s.fd.as_raw_fd(), readable) {
                s.read();
            }
        }
        if let Some(fd) = &self.stdin {
            let writable = ready(fd.as_raw_fd(), !0);
            if self.exited || (writable && !write_some(fd, input, &mut self.written)) {
                // Done, or the reader has gone: closing tells it there is no more.
                self.stdin = None;
            }
        }
    }

    /// Reaps the command and collects what it said.
    fn finish(self, mut child: Child) -> Done {
        drop(self.stdin);
        let status = child.wait();
        // With the leader reaped, the group exists only while other members do; EPERM means
        // some are alive and not ours to signal.
        // SAFETY: kill with signal 0 only checks for existence and permission.
        let survivors = unsafe { libc::kill(-self.pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        let mut streams = self.streams.into_iter().map(Stream::into_bytes);
        let first = streams.next().unwrap_or_default();
        let stdout = streams.next().unwrap_or_default();
        let mut output = String::from_utf8_lossy(&first).into_owned();
        output.push_str(&String::from_utf8_lossy(&stdout));
        Done {
            ended: self.ended.unwrap_or(Ended::Exited),
            status,
            output,
            stdout,
            pgid: self.pid,
            survivors,
        }
    }
}

/// Writes what the pipe takes of `input` from `written` on; false once all is written or the
/// reader has gone.
fn write_some(fd: &OwnedFd, input: &[u8], written: &mut usize) -> bool {
    while *written < input.len() {
        let rest = &input[*written..];
        // SAFETY: writes from a live slice, at most its length, to a non-blocking pipe.
        let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            *written += n as usize;
            continue;
        }
        return matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN) | Some(libc::EINTR)
        );
    }
    false
}

/// The most of a command's stderr (or merged output) that is kept (and logged); the rest is
/// read and dropped, so the command never blocks on a full pipe and a flood cannot fill memory
/// or the journal.
const STDERR_CAP: usize = 64 << 10;
/// The most of its stdout that is kept: nft's JSON listing of the tool's table.
const STDOUT_CAP: usize = 16 << 20;

/// A file descriptor that becomes readable when process `pid` (our child) exits, without
/// reaping it: its pid stays reserved until `Child::wait`.
fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a descriptor we own, adding O_NONBLOCK to its status flags.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
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
    pub failure: Failure,
    pub status: String,
    /// The command's own stderr and stdout, passed through verbatim (nft's error lines).
    pub output: String,
    pub sudo_denied: bool,
}

/// The most of a command's output that an error message (and so a log line, or the state's
/// last apply) carries; nft's own error lines are far shorter.
const SHOWN_OUTPUT: usize = 4 << 10;

/// The bytes that `Stream::into_bytes` notes as read and dropped in `text`.
fn not_kept(text: &str) -> u64 {
    text.match_indices(" more bytes not kept)")
        .filter_map(|(at, _)| {
            let before = &text[..at];
            let start = before.rfind('(')? + 1;
            before[start..].parse::<u64>().ok()
        })
        .sum()
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} failed: `{}` {}", self.what, self.argv, self.status)?;
        let mut end = self.output.len().min(SHOWN_OUTPUT);
        while !self.output.is_char_boundary(end) {
            end -= 1;
        }
        for line in self.output[..end].lines().filter(|l| !l.trim().is_empty()) {
            write!(f, "\n  {line}")?;
        }
        if end < self.output.len() {
            let more = (self.output.len() - end) as u64 + not_kept(&self.output[end..]);
            write!(f, "\n  … {more} bytes more")?;
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
    fn an_error_message_carries_at_most_four_kib_of_the_output() {
        let r = Runner::for_current_user().direct();
        let err = r
            .run(
                "chatty step",
                &os(&[
                    "/bin/sh",
                    "-c",
                    "yes 'Error: x' | head -c 20000 >&2; exit 1",
                ]),
            )
            .unwrap_err();
        let msg = err.to_string();
        // Each line of the output is indented by two spaces in the message.
        assert!(msg.len() < 2 * SHOWN_OUTPUT, "{} bytes", msg.len());
        assert!(
            msg.ends_with(&format!("\n  … {} bytes more", 20_000 - SHOWN_OUTPUT)),
            "{msg}"
        );
        assert_eq!(err.output.len(), 20_000, "the output itself is kept whole");
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
