//! Putting a new include in place without ever leaving a broken firewall config behind:
//! stage and check, replace atomically, check the real config, reload, and restore the previous
//! include byte for byte if any step after the replacement fails.

use crate::command::Runner;
use crate::render;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Mode of an include we create; an existing one keeps its own mode and owner.
const NEW_FILE_MODE: u32 = 0o640;
/// File name of the staged main config inside the staging directory.
pub const STAGED_MAIN: &str = "main.nft";

pub struct Plan {
    pub output: PathBuf,
    pub addon_dir: PathBuf,
    pub base_dir: PathBuf,
    pub main_config: PathBuf,
    /// Fixed staging directory (e.g. systemd's RuntimeDirectory) so that sudoers can name the
    /// staged path exactly; without one, a private temporary directory is used.
    pub stage_dir: Option<PathBuf>,
    pub nft: PathBuf,
    pub reload: Vec<OsString>,
}

/// Checks `new_text` in a staged config, installs it, checks the real config and reloads.
/// On failure after installing, `previous` (the include's old bytes, `None` if there was none)
/// is put back before the error is returned.
pub fn apply(plan: &Plan, runner: &Runner, new_text: &str, previous: Option<&[u8]>) -> Result<()> {
    let started = Instant::now();
    check_staged(plan, runner, new_text)?;
    replace_file(&plan.output, new_text.as_bytes())
        .with_context(|| format!("cannot write {}", plan.output.display()))?;

    let installed = nft_check(plan, runner, &plan.main_config, "check of the main config")
        .and_then(|()| runner.run("reload", &plan.reload).map_err(Into::into));
    if let Err(e) = installed {
        return Err(match restore(&plan.output, previous) {
            Ok(()) => e.context(format!(
                "restored the previous {}; the firewall keeps its running rules and the next run retries",
                plan.output.display()
            )),
            Err(r) => e.context(format!(
                "AND restoring the previous {} failed: {r:#}; fix it by hand before reloading nftables",
                plan.output.display()
            )),
        });
    }
    crate::log::debug(&format!(
        "apply took {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(())
}

fn nft_check(plan: &Plan, runner: &Runner, file: &Path, what: &str) -> Result<()> {
    let argv = [
        plan.nft.clone().into_os_string(),
        "-c".into(),
        "-f".into(),
        file.as_os_str().to_owned(),
    ];
    runner.run(what, &argv)?;
    Ok(())
}

/// Writes the candidate include and a main config that includes it with every other addon and
/// main-config part, and has nft check that, before anything live is touched.
fn check_staged(plan: &Plan, runner: &Runner, new_text: &str) -> Result<()> {
    let _temp;
    let dir = match &plan.stage_dir {
        Some(dir) => {
            check_private_dir(dir)?;
            dir.clone()
        }
        None => {
            _temp = tempfile::Builder::new()
                .prefix("nftables-failover.")
                .tempdir()
                .context("cannot create a staging directory")?;
            _temp.path().to_path_buf()
        }
    };
    let name = plan
        .output
        .file_name()
        .context("--output has no file name")?;
    let candidate = dir.join(name);
    let main = dir.join(STAGED_MAIN);

    let mut includes = nft_files(&plan.addon_dir)?;
    includes.retain(|p| !same_file(p, &plan.output));
    includes.extend(nft_files(&plan.base_dir)?);
    for p in std::iter::once(&candidate).chain(&includes) {
        if !render::includable(p) {
            bail!(
                "cannot include {:?} in the staged check: nft include paths cannot contain quotes or newlines; rename it",
                p
            );
        }
    }
    let refs: Vec<&Path> = includes.iter().map(PathBuf::as_path).collect();
    replace_file(&candidate, new_text.as_bytes())
        .with_context(|| format!("cannot stage {}", candidate.display()))?;
    replace_file(&main, render::staged_main(&candidate, &refs).as_bytes())
        .with_context(|| format!("cannot stage {}", main.display()))?;
    nft_check(plan, runner, &main, "check of the staged config")
        .context("the new include was not installed")
}

/// The `*.nft` files of a directory in name order, as nft's own `include "dir/*.nft"` sees them
/// (hidden files excluded). A missing directory has none.
fn nft_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".nft") && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.metadata(), b.metadata()) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// A staging directory with fixed file names must not be writable by anyone else, or another
/// user could swap the file between our write and root's check.
fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir)
        .with_context(|| format!("staging directory {} is not usable", dir.display()))?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        bail!(
            "staging directory {} must be a directory owned by uid {euid} and writable by no one else",
            dir.display()
        );
    }
    Ok(())
}

fn restore(path: &Path, previous: Option<&[u8]>) -> Result<()> {
    match previous {
        Some(bytes) => replace_file(path, bytes),
        None => match fs::remove_file(path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    }
}

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
    fn nft_files_lists_visible_nft_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.nft", "a.nft", ".hidden.nft", "c.conf", ".x.nft.abc.tmp"] {
            fs::write(dir.path().join(n), "").unwrap();
        }
        fs::create_dir(dir.path().join("d.nft")).unwrap();
        let names: Vec<_> = nft_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["a.nft", "b.nft"]);
        assert!(nft_files(&dir.path().join("missing")).unwrap().is_empty());
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

    #[test]
    fn shared_staging_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("writable by no one else"), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(dir.path()).unwrap();
    }
}
