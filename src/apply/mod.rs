//! Putting a new include in place without ever leaving a broken firewall config behind:
//! stage and check, replace atomically, check the real config, reload, and restore the last
//! applied include byte for byte if any step after the replacement fails.

pub mod live;
pub mod reload;
pub mod settle;

use crate::command::Runner;
use crate::files::{self, replace_file};
use crate::options::Options;
use crate::render;
use crate::render::live::{Object, TABLE, only_values_changed, shape_changed, with_values_of};
use anyhow::{Context, Result, bail};
use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// File name of the staged main config inside the staging directory.
pub const STAGED_MAIN: &str = "main.nft";

/// The reload command's argv; a run refuses to start without one, so the error is for
/// callers that skipped that check.
fn reload_argv(opts: &Options) -> Result<&[OsString]> {
    opts.reload.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// What nftables was last loaded with, as far as this tool applied it: the bytes of the
/// include, or `Absent` when no include was in effect. Kept beside the include as
/// `.NAME.applied` (empty: absent) and written before the include is first replaced, so every
/// failed apply, also the one after a run killed between replacing the include and reloading,
/// restores exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEffect {
    Absent,
    Bytes(Vec<u8>),
}

impl InEffect {
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            InEffect::Absent => None,
            InEffect::Bytes(b) => Some(b),
        }
    }
}

/// What a run has to do with the include it rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The include on disk is this text and was applied.
    Nothing,
    /// The include on disk is this text and no record says it was not applied (first run after
    /// an upgrade from the reference addon, or a lost record): trust it, and record it.
    Record,
    /// Stage, install, check and reload.
    Apply,
}

/// Pure: `record` is the last-applied record, `None` if there is none.
pub fn need(rendered: &[u8], on_disk: Option<&[u8]>, record: Option<&InEffect>) -> Need {
    let on_disk_now = on_disk == Some(rendered);
    match record {
        Some(r) if on_disk_now && r.bytes() == Some(rendered) => Need::Nothing,
        Some(_) => Need::Apply,
        None if on_disk_now => Need::Record,
        None => Need::Apply,
    }
}

/// The include nftables runs with: the record if there is one, else what is on disk.
pub fn in_effect<'a>(on_disk: Option<&'a [u8]>, record: Option<&'a InEffect>) -> Option<&'a [u8]> {
    match record {
        Some(r) => r.bytes(),
        None => on_disk,
    }
}

/// Where the last-applied record of `output` lives: beside it, hidden, and not `*.nft`, so no
/// include glob ever loads it.
pub fn record_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.applied"))
}

/// Reads the last-applied record of `output`; `None` if there is none.
/// Read like the include itself: a regular file, never through a link, bounded.
pub fn read_record(output: &Path) -> Result<Option<InEffect>> {
    Ok(
        files::read_include(&record_path(output))?.map(|b| match b.is_empty() {
            true => InEffect::Absent,
            false => InEffect::Bytes(b),
        }),
    )
}

/// Records what is in effect now (durably: it is the rollback target).
pub fn write_record(output: &Path, what: &InEffect) -> Result<()> {
    let path = record_path(output);
    replace_file(&path, what.bytes().unwrap_or_default())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The renderer only emits validated literals; this is the last gate before root's nft, in
/// either mode.
fn gate(new_text: &str) -> Result<()> {
    render::validate_include(new_text).map_err(|e| {
        anyhow::anyhow!("refusing to install an include that is not only defines of literals: {e}")
    })
}

/// Checks `new_text` in a staged config, installs it, checks the real config and reloads.
/// `record` is what is in effect (`read_record`; `None`: no record, so the bytes `on_disk` are
/// taken as in effect and recorded before the include is touched). On failure after installing,
/// exactly the recorded include is put back (or the new one removed if none was in effect).
pub fn apply(
    opts: &Options,
    runner: &Runner,
    new_text: &str,
    on_disk: Option<&[u8]>,
    record: Option<InEffect>,
) -> Result<reload::Reloaded> {
    let started = Instant::now();
    gate(new_text)?;
    let redeclare = shape_changed(in_effect(on_disk, record.as_ref()), new_text.as_bytes());
    check_staged(opts, runner, new_text, redeclare)?;
    let rollback = install(opts, new_text, on_disk, record)?;
    let installed = nft_check(opts, runner, &opts.main_config, "check of the main config")
        .and_then(|()| reload::reload(runner, reload_argv(opts)?));
    let reloaded = match installed {
        Ok(r) => r,
        Err(e) => return Err(restore_after(opts, &rollback, e)),
    };
    record_applied(&opts.output, new_text);
    crate::log::debug(&format!(
        "apply took {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(reloaded)
}

/// Replaces the include with `new_text`, first recording what is in effect if no record says
/// so yet; returns what a failure must restore.
fn install(
    opts: &Options,
    new_text: &str,
    on_disk: Option<&[u8]>,
    record: Option<InEffect>,
) -> Result<InEffect> {
    let rollback = match record {
        Some(r) => r,
        None => {
            let r = on_disk.map_or(InEffect::Absent, |b| InEffect::Bytes(b.to_vec()));
            write_record(&opts.output, &r).context("the new include was not installed")?;
            r
        }
    };
    replace_file(&opts.output, new_text.as_bytes())
        .with_context(|| format!("cannot write {}", opts.output.display()))?;
    Ok(rollback)
}

/// Puts the last applied include back after `e` failed a step that followed `install`.
fn restore_after(opts: &Options, rollback: &InEffect, e: anyhow::Error) -> anyhow::Error {
    match restore(&opts.output, rollback.bytes()) {
        Ok(()) if rollback == &InEffect::Absent => e.context(format!(
            "removed the new {} again (there was none before); the firewall keeps its running rules and the next run retries",
            opts.output.display()
        )),
        Ok(()) => e.context(format!(
            "restored the last applied {}; the firewall keeps its running rules and the next run retries",
            opts.output.display()
        )),
        Err(r) => e.context(format!(
            "AND restoring the last applied {} failed: {r:#}; copy {} over it by hand before reloading nftables",
            opts.output.display(),
            record_path(&opts.output).display()
        )),
    }
}

/// How an applied change reached the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Reloaded(reload::Reloaded),
    Live,
}

/// Applies a rendered include: live when every define that changed is a live one and the
/// owned table is there, otherwise by `apply` (check and reload).
pub fn apply_change(
    opts: &Options,
    runner: &Runner,
    new_text: &str,
    on_disk: Option<&[u8]>,
    record: Option<InEffect>,
    objects: &[Object],
) -> Result<Applied> {
    let old = in_effect(on_disk, record.as_ref());
    let live_only = !objects.is_empty()
        && old.is_some_and(|old| only_values_changed(old, new_text.as_bytes(), objects));
    if !live_only {
        return apply(opts, runner, new_text, on_disk, record).map(Applied::Reloaded);
    }
    let old = old
        .expect("live_only implies an include in effect")
        .to_vec();
    gate(new_text)?;
    let (dir, _temp) = staging_dir(opts)?;
    let file = dir.join(live::LIVE_FILE);
    let outcome = live::transact(runner, &opts.nft, &file, objects)
        .context("the live objects keep their values; the next run retries")?;
    let live::Outcome::Applied(steps) = outcome else {
        crate::log::warn(&format!(
            "table inet {} is not in the running ruleset (flushed?); reloading nftables to recreate it",
            TABLE
        ));
        return apply(opts, runner, new_text, on_disk, record).map(Applied::Reloaded);
    };
    // The kernel switched. A boot or a reload must load the same values, so the include is
    // installed only if the main config accepts it, as in reload mode, and otherwise the kernel
    // goes back to the values in effect. This check comes after the switch so that a failover
    // does not wait for nft to parse the whole ruleset.
    let started = Instant::now();
    let installed = install(opts, new_text, on_disk, record).and_then(|rollback| {
        nft_check(opts, runner, &opts.main_config, "check of the main config")
            .map_err(|e| restore_after(opts, &rollback, e))
    });
    if let Err(e) = installed {
        return Err(set_back(opts, runner, &file, objects, &old, e));
    }
    record_applied(&opts.output, new_text);
    crate::log::debug(&format!(
        "live update took {steps}; check of the main config with the new include {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    ));
    Ok(Applied::Live)
}

/// After the new include could not be installed (the main config refuses it, or it could not
/// be written): puts the values in effect back into the live objects, so the kernel runs what
/// a boot would load.
fn set_back(
    opts: &Options,
    runner: &Runner,
    file: &Path,
    objects: &[Object],
    in_effect: &[u8],
    failed: anyhow::Error,
) -> anyhow::Error {
    let back = with_values_of(objects, in_effect)
        .ok_or_else(|| anyhow::anyhow!("the include in effect lacks a live define"))
        .and_then(|back| live::transact(&runner.uninterruptible(), &opts.nft, file, &back));
    match back {
        Ok(live::Outcome::Applied(_)) => failed.context(
            "the new include was not installed, so the live objects were set back to the values \
             in effect",
        ),
        Ok(live::Outcome::TableMissing) => failed.context(
            "the new include was not installed, and the live table vanished before its values \
             could be set back; the next run reloads nftables",
        ),
        Err(e) => failed.context(format!(
            "the new include was not installed, AND setting the live objects back failed: {e:#}; \
             the kernel holds the new values until the next run retries"
        )),
    }
}

/// For a run whose include is unchanged: puts back live objects that differ from it (elements
/// flushed by hand), or reloads if their table is gone. Says what it found and did.
pub fn keep_live(opts: &Options, runner: &Runner, text: &str, objects: &[Object]) -> Result<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let (dir, _temp) = staging_dir(opts)?;
    let file = dir.join(live::LIVE_FILE);
    let Some(kernel) = live::read(runner, &opts.nft, &file)? else {
        crate::log::warn(&format!(
            "table inet {} is not in the running ruleset (flushed?); reloading nftables to recreate it",
            TABLE
        ));
        let record = Some(InEffect::Bytes(text.as_bytes().to_vec()));
        apply(opts, runner, text, Some(text.as_bytes()), record)?;
        if live::read(runner, &opts.nft, &file)?.is_none() {
            bail!(
                "table inet {} is still missing after the reload; make the main config include {}",
                TABLE,
                opts.output.display()
            );
        }
        crate::log::info(&format!("table inet {} recreated by the reload", TABLE));
        return Ok(());
    };
    let diff = live::differences(&live::expected(objects)?, &kernel);
    if diff.is_empty() {
        return Ok(());
    }
    crate::log::warn(&format!(
        "live objects differ from {}: {}; restoring them",
        opts.output.display(),
        diff.join("; ")
    ));
    // The table was there a moment ago; if it vanished since, the next run reloads.
    if live::transact(runner, &opts.nft, &file, objects)? == live::Outcome::TableMissing {
        bail!(
            "table inet {} vanished while restoring it; the next run reloads nftables",
            TABLE
        );
    }
    crate::log::info(&format!("table inet {}: restored", TABLE));
    Ok(())
}

/// Records `text` as applied; a record that cannot be written is removed, see `apply`.
fn record_applied(output: &Path, text: &str) {
    if let Err(e) = write_record(output, &InEffect::Bytes(text.as_bytes().to_vec())) {
        // A stale record would make every later run apply again and restore the old include
        // on a failure. Without a record the disk is trusted.
        let _ = fs::remove_file(record_path(output));
        crate::log::error(&format!("{e:#}; the include on disk is taken as applied"));
    }
}

fn nft_check(opts: &Options, runner: &Runner, file: &Path, what: &str) -> Result<()> {
    let argv = [
        opts.nft.clone().into_os_string(),
        "-c".into(),
        "-f".into(),
        file.as_os_str().to_owned(),
    ];
    runner.run(what, &argv)?;
    Ok(())
}

/// Writes the candidate include and a main config that includes it with every other addon and
/// main-config part, and has nft check that, before anything live is touched.
fn check_staged(opts: &Options, runner: &Runner, new_text: &str, redeclare: bool) -> Result<()> {
    let (dir, _temp) = staging_dir(opts)?;
    let name = opts
        .output
        .file_name()
        .context("--output has no file name")?;
    let candidate = dir.join(name);
    let main = dir.join(STAGED_MAIN);

    let mut includes = nft_files(&opts.addon_dir)?;
    includes.retain(|p| !same_file(p, &opts.output));
    includes.extend(nft_files(&opts.base_dir)?);
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
    replace_file(
        &main,
        render::staged_main(&candidate, &refs, redeclare).as_bytes(),
    )
    .with_context(|| format!("cannot stage {}", main.display()))?;
    nft_check(opts, runner, &main, "check of the staged config")
        .context("the new include was not installed")
}

/// Why `stage` cannot be the staging directory, if so: it is one of the directories whose
/// includes the staged config loads (or inside one), so the staged config would include the
/// staged files again and nft would report a confusing redefinition.
pub fn stage_dir_problem(stage: &Path, base_dir: &Path, addon_dir: &Path) -> Option<String> {
    let real = |p: &Path| {
        fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.to_path_buf()))
    };
    let stage_real = real(stage);
    [("--base-dir", base_dir), ("--addon-dir", addon_dir)]
        .into_iter()
        .find(|(_, dir)| stage_real.starts_with(real(dir)))
        .map(|(option, dir)| {
            format!(
                "--stage-dir {} is {} {option} {}, whose *.nft files the staged check includes; \
                 use a private directory elsewhere (the unit uses /run/nftables-failover)",
                stage.display(),
                if stage_real == real(dir) {
                    "the same directory as"
                } else {
                    "inside"
                },
                dir.display()
            )
        })
}

/// The fixed staging directory, or a private temporary one (removed when the guard drops).
fn staging_dir(opts: &Options) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match &opts.stage_dir {
        Some(dir) => {
            check_private_dir(dir)?;
            Ok((dir.clone(), None))
        }
        None => {
            let temp = tempfile::Builder::new()
                .prefix("nftables-failover.")
                .tempdir()
                .context("cannot create a staging directory")?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
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
    fn an_include_that_is_not_only_defines_is_never_installed() {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            config: dir.path().join("failover.json"),
            output: dir.path().join("failover.nft"),
            state: dir.path().join("state.json"),
            addon_dir: dir.path().into(),
            base_dir: dir.path().into(),
            main_config: dir.path().join("nftables.conf"),
            stage_dir: None,
            // Never reached: running it would fail differently.
            nft: "/nonexistent/nft".into(),
            reload: Ok(vec!["/nonexistent/reload".into()]),
            timeout: None,
            command_timeout: crate::command::DEFAULT_TIMEOUT,
            dry_run: false,
        };
        let text =
            "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\ndefine a_v4 = 1\nflush ruleset\n";
        let err = apply(&opts, &Runner::for_current_user(), text, None, None).unwrap_err();
        assert!(
            format!("{err:#}").contains("refusing to install"),
            "{err:#}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn need_applies_only_what_is_not_in_effect() {
        let (a, b) = (&b"a"[..], &b"b"[..]);
        let rec = |x: &[u8]| InEffect::Bytes(x.to_vec());
        assert_eq!(need(a, Some(a), Some(&rec(a))), Need::Nothing);
        assert_eq!(need(a, Some(b), Some(&rec(b))), Need::Apply);
        // on disk but never applied (a run killed before its reload)
        assert_eq!(need(a, Some(a), Some(&rec(b))), Need::Apply);
        assert_eq!(need(a, Some(a), Some(&InEffect::Absent)), Need::Apply);
        // no record: the disk is trusted, never a reason to reload
        assert_eq!(need(a, Some(a), None), Need::Record);
        assert_eq!(need(a, None, None), Need::Apply);
        assert_eq!(in_effect(Some(a), Some(&rec(b))), Some(b));
        assert_eq!(in_effect(Some(a), Some(&InEffect::Absent)), None);
        assert_eq!(in_effect(Some(a), None), Some(a));
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
    fn shared_staging_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_private_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("writable by no one else"), "{err}");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(dir.path()).unwrap();
    }
}
