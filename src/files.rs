//! Files the run keeps: atomic replacement of the include and the state, and the lock that
//! serialises runs. Effects only; callers decide what to write.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Mode of an include we create; an existing one keeps its own mode and owner.
const NEW_FILE_MODE: u32 = 0o640;

/// Replaces a file durably and atomically, see `write_atomically`.
pub fn replace_file(path: &Path, contents: &[u8]) -> Result<()> {
    write_atomically(path, contents, true)
}

/// Replaces a file atomically: a temporary file in the same directory, renamed over the
/// target, so readers see the old or the new bytes, never a mix. `durable` also fsyncs the file
/// and the directory so the new bytes survive a power cut. An existing file's mode and owner are
/// kept; a new one gets mode 0640.
pub fn write_atomically(path: &Path, contents: &[u8], durable: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().context("no file name")?.to_string_lossy();
    let existing = fs::metadata(path).ok();
    // The leading dot and trailing .tmp keep a leftover out of `include "*.nft"` globs.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    let mode = existing
        .as_ref()
        .map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    if let Some(m) = &existing {
        keep_owner(tmp.as_file(), m, path);
    }
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

/// Serialises runs that write the same include: a lock file beside it, held until dropped.
/// Returns `None` if another run still holds it after `wait`.
pub fn lock(output: &Path, wait: Duration) -> Result<Option<File>> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let name = output.file_name().context("--output has no file name")?;
    let path = dir.join(format!(".{}.lock", name.to_string_lossy()));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("failover.nft");
        let held = lock(&out, Duration::ZERO).unwrap();
        assert!(held.is_some());
        assert!(lock(&out, Duration::from_millis(50)).unwrap().is_none());
        drop(held);
        assert!(lock(&out, Duration::ZERO).unwrap().is_some());
    }
}
