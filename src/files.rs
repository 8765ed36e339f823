//! Files the run keeps: bounded reads of the config, state and include, atomic replacement of
//! the include and the state, and the lock that serialises runs. Effects only; callers decide
//! what to read and write.
//!
//! Every path here sits in a directory that others may be able to write (the addon directory is
//! group-writable), so nothing may block, read without bound or act through a link that the
//! caller did not ask to follow.

use crate::config::{self, Config, ConfigError};
use anyhow::{Context, Result, bail};
use std::fmt;
use std::fs::{self, File, FileType, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mode of an include we create; an existing one keeps its own mode and owner.
const NEW_FILE_MODE: u32 = 0o640;

/// The bits a copied mode keeps: never world-writable, never setuid, setgid or sticky.
const COPIED_MODE_MASK: u32 = 0o775;

/// Mode of the lock file: only the owner and the directory's group may open it, since anyone
/// who can open it can hold it and make every run give way.
const LOCK_MODE: u32 = 0o660;

/// The most this reads of the config, the state or the include. A config with 10,000
/// candidates is well under 1 MiB, its state a few MiB.
pub const READ_CAP: u64 = 16 << 20;

/// Why a file was not read: the path and what is wrong with it.
#[derive(Debug)]
pub struct ReadError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "cannot read {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for ReadError {}

/// Reads a regular file of at most `cap` bytes; `None` if it does not exist.
///
/// The open never blocks (`O_NONBLOCK`: a FIFO opens at once and is then refused) and, unless
/// `follow_links`, does not follow a symlink in the last path component. Anything but a regular
/// file is refused, and so is a file larger than `cap`, without reading it.
pub fn read_regular(
    path: &Path,
    cap: u64,
    follow_links: bool,
) -> Result<Option<Vec<u8>>, ReadError> {
    let refuse = |reason: String| ReadError {
        path: path.to_path_buf(),
        reason,
    };
    let nofollow = if follow_links { 0 } else { libc::O_NOFOLLOW };
    // std adds O_CLOEXEC itself.
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e)
            if !follow_links
                && fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            return Err(refuse(format!(
                "{}, and this file is never read through a symlink; replace the link with the \
                 file itself",
                open_failure(path, &e, false)
            )));
        }
        Err(e) => return Err(refuse(open_failure(path, &e, follow_links))),
    };
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "it is {}, not a regular file",
            kind(meta.file_type())
        )));
    }
    if meta.len() > cap {
        return Err(refuse(format!(
            "it is {} bytes, more than the {cap} this reads",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte over the cap tells a file that grew since the fstat from one that fits.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(e.to_string()))?;
    if bytes.len() as u64 > cap {
        return Err(refuse(format!(
            "it is more than the {cap} bytes this reads"
        )));
    }
    Ok(Some(bytes))
}

/// Reads the include on disk (`--output`): never through a symlink, at most `READ_CAP` bytes.
pub fn read_include(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    read_regular(path, READ_CAP, false)
}

/// Why an open failed, in words: a symlink or other non-regular file says what it is.
fn open_failure(path: &Path, error: &std::io::Error, follow_links: bool) -> String {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() && !follow_links => {
            format!("it is a symlink to {}", link_target(path))
        }
        Ok(m) if !m.is_file() && !m.file_type().is_symlink() => {
            format!("it is {}, not a regular file", kind(m.file_type()))
        }
        _ => error.to_string(),
    }
}

/// What a file is, for messages: "a FIFO (named pipe)", "a directory", ...
fn kind(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symlink"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    }
}

fn link_target(path: &Path) -> String {
    fs::read_link(path).map_or_else(|_| "(unreadable)".into(), |t| t.display().to_string())
}

/// Replaces a file durably and atomically, see `write_atomically`.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically(path, contents, true)
}

/// Replaces a file atomically: a temporary file in the same directory, renamed over the
/// target, so readers see the old or the new bytes, never a mix. `durable` also fsyncs the file
/// and the directory so the new bytes survive a power cut.
///
/// An existing regular file's owner and mode are kept, the mode without world-write,
/// setuid, setgid and sticky bits; a new file gets mode 0640. An existing symlink or other
/// non-regular file is refused, never replaced: it is the admin's, not ours.
pub fn write_atomically(path: &Path, contents: &[u8], durable: bool) -> Result<()> {
    write_atomically_with_mode(path, contents, durable, NEW_FILE_MODE)
}

/// [`write_atomically`], with `new_mode` for a file that does not exist yet, set on the
/// temporary file before the rename.
pub fn write_atomically_with_mode(
    path: &Path,
    contents: &[u8],
    durable: bool,
    new_mode: u32,
) -> Result<()> {
    let dir = dir_of(path);
    let name = path.file_name().context("no file name")?.to_string_lossy();
    // lstat: the mode and owner to keep are the file's own, never a link target's.
    let existing = match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Some(m),
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symlink to {}; refusing to replace it: remove it to let nftables-failover \
             manage the file",
            path.display(),
            link_target(path)
        ),
        Ok(m) => bail!(
            "{} is {}, not a regular file; refusing to replace it: remove it to let \
             nftables-failover manage the file",
            path.display(),
            kind(m.file_type())
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    // The leading dot and trailing .tmp keep a leftover out of `include "*.nft"` globs, and
    // `remove_stale_temps` finds it by this pattern.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    let mode = existing
        .as_ref()
        .map_or(new_mode, |m| m.mode() & COPIED_MODE_MASK);
    if let Some(m) = &existing {
        // Owner first, then the mode: a chown may clear mode bits.
        keep_owner(tmp.as_file(), m, path);
    }
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    if durable {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if durable {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn keep_owner(file: &File, old: &fs::Metadata, path: &Path) {
    let current = file.metadata().ok();
    if current.is_some_and(|c| c.uid() == old.uid() && c.gid() == old.gid()) {
        return;
    }
    if let Err(e) = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())) {
        crate::log::warn(&format!(
            "cannot keep owner {}:{} of {} ({e}); it is now owned by this user",
            old.uid(),
            old.gid(),
            path.display()
        ));
    }
}

/// Deletes the temporary files that an atomic write of `target` left behind when it was
/// killed (`.NAME.XXXXXX.tmp` beside it). Only regular files are removed; links and anything
/// else are left alone. Call it under the lock, so that no other run is writing one.
pub fn remove_stale_temps(target: &Path) {
    let dir = dir_of(target);
    let Some(name) = target.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(dir) else {
        return; // a missing or unreadable directory has nothing we could clean
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        let is_temp =
            n.len() > prefix.len() + ".tmp".len() && n.starts_with(&prefix) && n.ends_with(".tmp");
        // DirEntry::file_type does not follow links.
        if !is_temp || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        match fs::remove_file(&path) {
            Ok(()) => crate::log::info(&format!(
                "removed {}, left over from an interrupted write",
                path.display()
            )),
            Err(e) => crate::log::warn(&format!(
                "cannot remove {}, left over from an interrupted write: {e}",
                path.display()
            )),
        }
    }
}

/// The lock file of an include: `.NAME.lock` beside it.
/// The directory a file is in: its parent, or `.` for a bare file name.
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

pub fn lock_path(output: &Path) -> PathBuf {
    let dir = dir_of(output);
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    dir.join(format!(".{name}.lock"))
}

/// Serialises runs that write the same include: a lock file beside it, held until dropped.
/// Returns `None` if another run still holds it after `wait`.
pub fn lock(output: &Path, wait: Duration) -> Result<Option<File>> {
    output.file_name().context("--output has no file name")?;
    let path = lock_path(output);
    let file = open_lock(&path)?;
    let deadline = Instant::now() + wait;
    // Watched before the first try, so that a release between the try and the wait wakes it.
    let closes = Closes::watch(&path);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            // A stop signal ends the wait as if the time were up: there is nothing to do yet.
            Err(fs::TryLockError::WouldBlock)
                if Instant::now() < deadline && crate::signals::received().is_none() =>
            {
                closes.wait(deadline)
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

/// Closes of the lock file, through inotify: a holder releases its lock by closing the file
/// (or by exiting), so each close is the moment to try again, and the wait needs no clock.
struct Closes(Option<std::os::fd::OwnedFd>);

impl Closes {
    fn watch(path: &Path) -> Closes {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return Closes(None);
        };
        // SAFETY: inotify_init1 takes flags; the fd it returns is owned by nothing else.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Closes(None);
        }
        // SAFETY: as above.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: a live inotify descriptor and a NUL-terminated path.
        let wd =
            unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), libc::IN_CLOSE) };
        Closes((wd >= 0).then_some(fd))
    }

    /// Blocks until the file is closed by someone, a stop signal arrives, or `deadline`.
    /// Without inotify (its limits reached), it looks again after a short sleep.
    fn wait(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(fd) = &self.0 else {
            std::thread::sleep(left.min(Duration::from_millis(20)));
            return;
        };
        let mut fds = vec![libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(wake) = crate::signals::wake_fd() {
            fds.push(libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: a live array of pollfds; EINTR just means try again.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        // The events themselves say nothing more: drain them.
        let mut buf = [0u8; 4096];
        // SAFETY: reads into a local buffer, at most its length, from a non-blocking fd.
        while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

/// Opens (creating if needed) the lock file without following a link or blocking on a FIFO.
/// A lock this run creates gets mode 0660 and the directory's group, so that runs as root and
/// as the service user share it and nobody else can open it. An existing one is used as it is,
/// never re-owned or re-moded: one with a second hard link (it may be another file under a
/// second name) or owned by someone else is refused.
fn open_lock(path: &Path) -> Result<File> {
    let open = |create_new: bool| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create_new)
            .mode(LOCK_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
    };
    let failed = |e: std::io::Error| {
        // Not allowed is about who runs the command, not about the file: keep it.
        let advice = if e.kind() == ErrorKind::PermissionDenied {
            "run this as root or as the service user (sudo -u nftables-failover …), who may"
        } else {
            "remove it, the next run creates it again"
        };
        anyhow::anyhow!(
            "cannot open lock file {}: {}; {advice}",
            path.display(),
            open_failure(path, &e, false)
        )
    };
    let (file, created) = match open(true) {
        Ok(f) => (f, true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => (open(false).map_err(failed)?, false),
        Err(e) => return Err(failed(e)),
    };
    let meta = file.metadata()?;
    let refuse = |why: String| {
        anyhow::anyhow!(
            "cannot use lock file {}: {why}; remove it, the next run creates it again",
            path.display()
        )
    };
    if !meta.is_file() {
        return Err(refuse(format!(
            "it is {}, not a regular file",
            kind(meta.file_type())
        )));
    }
    if meta.nlink() > 1 {
        return Err(refuse(format!(
            "it has {} hard links, so it may be another file under a second name",
            meta.nlink()
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let dir_gid = fs::metadata(dir_of(path)).map(|d| d.gid()).ok();
    if !created && meta.uid() != 0 && meta.uid() != euid && Some(meta.gid()) != dir_gid {
        return Err(refuse(format!(
            "it belongs to uid {} and group {}, neither this user, root nor the directory's group",
            meta.uid(),
            meta.gid()
        )));
    }
    if !created && meta.mode() & 0o007 != 0 {
        return Err(refuse(format!(
            "others may open it (mode {:04o}) and hold it, which would stop every run",
            meta.mode() & 0o7777
        )));
    }
    if created {
        // Root's lock must stay usable by a later run as the service user: give it the
        // directory's group (the package makes the addon directory root:nftables-failover).
        if let Some(gid) = dir_gid.filter(|g| euid == 0 && *g != meta.gid())
            && let Err(e) = std::os::unix::fs::fchown(&file, None, Some(gid))
        {
            crate::log::warn(&format!(
                "cannot give lock file {} the directory's group {gid}: {e}",
                path.display()
            ));
        }
        // The umask may have taken bits.
        file.set_permissions(fs::Permissions::from_mode(LOCK_MODE))
            .with_context(|| format!("cannot set mode 0660 on lock file {}", path.display()))?;
    }
    Ok(file)
}

/// The most a file the config names (credentials, CA certificates) may have.
pub const NAMED_FILE_CAP: u64 = 1 << 20;

/// Reads a file the config names (`what`, e.g. "credentials_file") as the config itself is read:
/// a regular file only (a link to one is followed), opened without blocking, at most
/// `NAMED_FILE_CAP` bytes. A FIFO or a device is refused at once, never read.
pub fn read_named(path: &Path, what: &str) -> Result<Vec<u8>> {
    match read_regular(path, NAMED_FILE_CAP, true) {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => bail!("{what} {}: it does not exist", path.display()),
        Err(e) => bail!("{what} {}: {}", path.display(), e.reason),
    }
}

/// The most the config may have: 10,000 candidates take well under 1 MiB.
const CONFIG_CAP: u64 = READ_CAP;

/// Reads and validates the config. A symlink is followed (an admin may keep the config
/// elsewhere); a FIFO, a device or a file over `CONFIG_CAP` is refused without blocking.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let refused = |why: String| ConfigError::Read(path.to_path_buf(), why);
    let bytes = match read_regular(path, CONFIG_CAP, true) {
        Ok(Some(b)) => b,
        Ok(None) => return Err(refused("it does not exist".into())),
        Err(e) => return Err(refused(e.reason)),
    };
    let text =
        String::from_utf8(bytes).map_err(|e| refused(format!("it is not UTF-8 text ({e})")))?;
    config::parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn replace_file_keeps_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failover.nft");
        replace_file(&path, b"one").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        replace_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o604);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["failover.nft"]);
    }

    #[test]
    fn a_copied_mode_loses_world_write_and_special_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failover.nft");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o7777)).unwrap();
        replace_file(&path, b"new").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o775);
    }

    #[test]
    fn write_atomically_refuses_links_and_other_non_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "theirs").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o666)).unwrap();
        let link = dir.path().join("failover.nft");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = replace_file(&link, b"ours").unwrap_err().to_string();
        assert!(
            err.contains("is a symlink to") && err.contains("refusing to replace it: remove it"),
            "{err}"
        );
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&target).unwrap(), b"theirs");

        let fifo = dir.path().join("state.json");
        mkfifo(&fifo);
        let err = write_atomically(&fifo, b"{}", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a FIFO (named pipe), not a regular file"),
            "{err}"
        );
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        // No temporary file was left behind by either refusal.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn read_regular_reads_regular_files_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(read_regular(&path, 10, false).unwrap().is_none());
        fs::write(&path, "0123456789").unwrap();
        assert_eq!(
            read_regular(&path, 10, false).unwrap().unwrap(),
            b"0123456789"
        );
        let err = read_regular(&path, 9, false).unwrap_err().to_string();
        assert!(
            err.ends_with("it is 10 bytes, more than the 9 this reads"),
            "{err}"
        );
    }

    #[test]
    fn read_regular_refuses_without_blocking_or_reading_much() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let big = dir.path().join("big");
        File::create(&big).unwrap().set_len(100 << 20).unwrap();
        let regular = dir.path().join("regular");
        fs::write(&regular, "x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&regular, &link).unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();

        let started = Instant::now();
        let cases = [
            (
                fifo.as_path(),
                true,
                "it is a FIFO (named pipe), not a regular file",
            ),
            (dir.path(), true, "it is a directory, not a regular file"),
            (&zero, true, "it is a character device, not a regular file"),
            (
                &zero,
                false,
                "it is a symlink to /dev/zero, and this file is never read through a symlink",
            ),
            (&link, false, "it is a symlink to "),
            (
                &big,
                true,
                "it is 104857600 bytes, more than the 16777216 this reads",
            ),
        ];
        for (path, follow, expected) in cases {
            let err = read_regular(path, READ_CAP, follow).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("cannot read {}: ", path.display())),
                "{msg}"
            );
            assert!(msg.contains(expected), "{msg}\nwant: {expected}");
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        // A link is fine where links are followed.
        assert_eq!(read_regular(&link, 10, true).unwrap().unwrap(), b"x");
    }

    #[test]
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("failover.nft");
        let held = lock(&out, Duration::ZERO).unwrap();
        assert!(held.is_some());
        assert!(lock(&out, Duration::from_millis(50)).unwrap().is_none());
        drop(held);
        assert!(lock(&out, Duration::ZERO).unwrap().is_some());
    }

    /// A waiting run gets the lock once the holder lets go, woken by the holder's close; a stop
    /// signal would end the wait the same way (the signals' pipe is in the same poll).
    #[test]
    fn a_waiting_lock_is_taken_when_the_holder_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("failover.nft");
        let held = lock(&out, Duration::ZERO).unwrap().unwrap();
        let waiter = {
            let out = out.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let got = lock(&out, Duration::from_secs(20)).unwrap();
                (got.is_some(), started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        let (got, took) = waiter.join().unwrap();
        assert!(got);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn lock_refuses_links_and_fifos_and_fixes_a_readable_mode() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("failover.nft");
        let path = lock_path(&out);
        assert_eq!(path, dir.path().join(".failover.nft.lock"));

        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        let err = lock(&out, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("it is a symlink to"), "{err}");
        fs::remove_file(&path).unwrap();

        mkfifo(&path);
        let started = Instant::now();
        let err = lock(&out, Duration::ZERO).unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(err.contains("it is a FIFO (named pipe)"), "{err}");
        fs::remove_file(&path).unwrap();

        // One that others may open is refused, not re-moded: it is not this run's file.
        fs::write(&path, "").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = lock(&out, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("others may open it (mode 0644)"), "{err}");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
        fs::remove_file(&path).unwrap();

        // A second name of another file (a hard link) is refused, and that file left alone.
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
        fs::hard_link(&victim, &path).unwrap();
        let err = lock(&out, Duration::ZERO).unwrap_err().to_string();
        assert!(err.contains("it has 2 hard links"), "{err}");
        assert_eq!(fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
        fs::remove_file(&path).unwrap();

        // A new one is this run's: 0660.
        assert!(lock(&out, Duration::ZERO).unwrap().is_some());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o660);
        // And reused as it is.
        assert!(lock(&out, Duration::ZERO).unwrap().is_some());
    }

    #[test]
    fn root_gives_the_lock_the_directory_group() {
        if !is_root() {
            eprintln!("skipped: needs root to chown");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // No setgid bit: the group must come from the fchown, not from the directory.
        std::os::unix::fs::chown(dir.path(), None, Some(65534)).unwrap();
        let out = dir.path().join("failover.nft");
        assert!(lock(&out, Duration::ZERO).unwrap().is_some());
        let meta = fs::metadata(lock_path(&out)).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o7777), (65534, 0o660));
    }

    #[test]
    fn stale_temps_are_removed_but_links_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("failover.nft");
        let keep = [
            "failover.nft",
            ".failover.nft.lock",
            ".other.nft.abc123.tmp",
            ".failover.nft.tmp",
            ".failover.nft.link01.tmp",
        ];
        for n in &keep[..4] {
            fs::write(dir.path().join(n), "").unwrap();
        }
        let victim = dir.path().join("victim");
        fs::write(&victim, "x").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(keep[4])).unwrap();
        fs::write(dir.path().join(".failover.nft.abc123.tmp"), "half").unwrap();
        fs::create_dir(dir.path().join(".failover.nft.dir999.tmp")).unwrap();

        remove_stale_temps(&out);
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected: Vec<_> = keep
            .iter()
            .map(|s| s.to_string())
            .chain(["victim".into(), ".failover.nft.dir999.tmp".into()])
            .collect();
        expected.sort();
        assert_eq!(names, expected);
        assert_eq!(fs::read(&victim).unwrap(), b"x");
    }
}
