//! Putting a new include in place without ever leaving a broken firewall config behind:
//! stage and check, replace atomically, check the real config, reload, and restore the previous
//! include byte for byte if any step after the replacement fails.

use crate::command::Runner;
use crate::files::replace_file;
use crate::render;
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn shared_staging_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("writable by no one else"), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(dir.path()).unwrap();
    }
}
