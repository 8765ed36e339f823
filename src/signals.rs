//! SIGTERM and SIGINT during a run: instead of dying half-way through an apply (new include in
//! place, reload not done), the run notes the signal, the running command is stopped
//! (`command::Runner` polls [`received`]), and the apply's own error path restores the previous
//! include before the run exits 1.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The first SIGTERM/SIGINT received, 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The pipe that [`wait`] blocks on: `[read end, write end]`, -1 until [`install`].
static WAKE: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];

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
    let mut fds = [-1; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } == 0 {
        WAKE[0].store(fds[0], Ordering::SeqCst);
        WAKE[1].store(fds[1], Ordering::SeqCst);
    }
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // does an atomic store, which is async-signal-safe. SA_RESTART keeps blocking calls
        // elsewhere (file I/O, the lock wait) from failing with EINTR.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            crate::log::warn(&format!(
                "cannot catch {}: {}; a stop signal will end the run without rollback",
                name(signal),
                std::io::Error::last_os_error()
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
        other => format!("signal {other}"),
    }
}
