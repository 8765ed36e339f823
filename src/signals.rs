//! SIGTERM and SIGINT during a run: instead of dying half-way through an apply (new include in
//! place, reload not done), the run notes the signal, the running command is stopped (its
//! supervisor wakes on [`wake_fd`]), and the apply's own error path restores the previous
//! include before the run exits 1. And SIGHUP for the watcher ([`Hangups`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first SIGTERM/SIGINT received, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The pipe a stop signal writes to: `[read end, write end]`, -1 until [`install`].
static WAKE: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

/// The write end of the pipe SIGHUP writes to, -1 until [`Hangups::catch`].
static HANGUP: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_hangup(_: libc::c_int) {
    let fd = HANGUP.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: as in on_signal; a full pipe already holds a pending hangup.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// SIGHUPs as they come, for a loop on the runtime to await (`systemctl reload` of the
/// watcher). Without it, SIGHUP ends the process.
pub struct Hangups {
    pipe: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl Hangups {
    /// Catches SIGHUP from now on. Must be called inside the runtime.
    pub fn catch() -> io::Result<Hangups> {
        let [read, write] = pipe()?;
        // SAFETY: an OwnedFd stays open, and the same, for as long as the AsyncFd owns it.
        let pipe = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(read, tokio::io::Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        // The write end lives as long as the process: the handler may run at any time.
        HANGUP.store(write.into_raw_fd(), Ordering::SeqCst);
        sigaction(libc::SIGHUP, on_hangup)?;
        Ok(Hangups { pipe })
    }

    /// The next SIGHUP (several close together count as one).
    pub async fn recv(&mut self) {
        loop {
            let Ok(mut guard) = self.pipe.readable().await else {
                return std::future::pending().await;
            };
            let mut buf = [0u8; 64];
            let fd = self.pipe.get_ref().as_raw_fd();
            // SAFETY: reads into a local buffer, at most its length, from a non-blocking pipe.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return;
            }
            guard.clear_ready();
        }
    }
}

/// A non-blocking, close-on-exec pipe: `[read end, write end]`.
fn pipe() -> io::Result<[OwnedFd; 2]> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    Ok(fds.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Sets `handler` for `signal`. SA_RESTART keeps blocking calls elsewhere (file I/O) from
/// failing with EINTR.
fn sigaction(signal: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handlers only do
    // atomic operations and write(2), which are async-signal-safe.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

extern "C" fn on_signal(signal: libc::c_int) {
    // Async-signal-safe: a lock-free atomic store and a write(2), nothing else. The first
    // signal wins so the log names the one that stopped the run.
    let _ = RECEIVED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    let fd = WAKE[1].load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writing one byte from a static to a non-blocking pipe; a full pipe means a
        // wake-up is already pending, so the result does not matter.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Catches SIGTERM and SIGINT for the rest of the process. Idempotent.
pub fn install() {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return;
    }
    // The pipe lives as long as the process: a handler may write to it at any time.
    if let Ok([read, write]) = pipe() {
        WAKE[0].store(read.into_raw_fd(), Ordering::SeqCst);
        WAKE[1].store(write.into_raw_fd(), Ordering::SeqCst);
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        if let Err(e) = sigaction(signal, on_signal) {
            crate::log::warn(&format!(
                "cannot catch {}: {e}; a stop signal will end the run without rollback",
                name(signal),
            ));
        }
    }
}

/// Whether [`install`] ran, i.e. whether a signal can arrive without killing the process.
pub fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The read end of the self-pipe that becomes readable when a stop signal arrives (and stays
/// so), for a `poll(2)` that must wake on one; `None` without [`install`].
pub fn wake_fd() -> Option<i32> {
    Some(WAKE[0].load(Ordering::SeqCst)).filter(|&fd| fd >= 0)
}

/// Resolves once SIGTERM or SIGINT has been received; never without [`install`] (the signal
/// then ends the process anyway). Waits on the self-pipe through the runtime, so nothing polls.
pub async fn stopped() {
    if received().is_some() {
        return;
    }
    // A duplicate of the read end: epoll registers a descriptor once, and several waits
    // (the watcher's loop, a run's checks) may be under way at the same time.
    let Some(fd) = wake_fd().and_then(|fd| {
        // SAFETY: fd is the pipe's read end, open for the rest of the process.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .ok()
    }) else {
        return std::future::pending().await;
    };
    // SAFETY: an OwnedFd stays open, and the same descriptor, for as long as the AsyncFd owns it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    let Ok(fd) = registered else {
        return std::future::pending().await;
    };
    // The pipe is never drained: once a signal wrote to it, it stays readable.
    while received().is_none() {
        match fd.readable().await {
            Ok(mut guard) if received().is_none() => guard.clear_ready(),
            Ok(_) => {}
            Err(_) => return std::future::pending().await,
        }
    }
}

/// The first SIGTERM or SIGINT received since [`install`], if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGHUP => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}
