//! The operator's word: which candidates are drained, in a small file of its own beside the
//! state (`drains.json`). Written only by `drain` and `undrain`, durably (the file and its
//! directory fsynced, replaced by an atomic rename), and never written or deleted by a run, so
//! a drain survives what the state may not: a full disk during a save, a corrupt or oversized
//! state file, a state directory a run cannot write, a crash. Runs read it every time, whatever
//! happened to the state.

use crate::model::Drained;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "drains.json";
const VERSION: u32 = 1;

/// Far above any real list of drains; a file larger than this is not ours.
const READ_CAP: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    drained: Drained,
}

/// Where the drains of a state file are kept: beside it.
pub fn path_beside(state: &Path) -> PathBuf {
    crate::files::dir_of(state).join(FILE_NAME)
}

/// The drains, none if the file does not exist yet; `Err` says why they cannot be known (a
/// run then changes nothing, rather than move traffic onto a drained candidate).
pub fn load(path: &Path) -> Result<Drained, String> {
    let text = match crate::files::read_regular(path, READ_CAP, false) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(Drained::new()),
        Err(e) => return Err(format!("cannot read {}: {}", path.display(), e.reason)),
    };
    match serde_json::from_slice::<File>(&text) {
        Ok(f) if f.version == VERSION => Ok(f.drained),
        Ok(f) => Err(format!(
            "{} has format version {}, this build reads {VERSION}",
            path.display(),
            f.version
        )),
        Err(e) => Err(format!("{} is not a list of drains: {e}", path.display())),
    }
}

/// Replaces the file durably: once this returns, the drains survive a crash or power loss.
pub fn save(path: &Path, drained: &Drained) -> anyhow::Result<()> {
    let file = File {
        version: VERSION,
        drained: drained.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&file)?;
    text.push(b'\n');
    std::fs::create_dir_all(crate::files::dir_of(path))?;
    crate::files::write_atomically(path, &text, true)
}

/// `theirs` added to `into`: the drains of two sources together.
pub fn merge(into: &mut Drained, theirs: &Drained) {
    for (variable, addresses) in theirs {
        into.entry(variable.clone())
            .or_default()
            .extend(addresses.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_drains_load_back_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_beside(&dir.path().join("state.json"));
        assert_eq!(load(&path), Ok(Drained::new()));
        let mut drained = Drained::new();
        drained
            .entry("web".into())
            .or_default()
            .insert("192.0.2.1".parse().unwrap());
        save(&path, &drained).unwrap();
        assert_eq!(load(&path), Ok(drained.clone()));
        std::fs::write(&path, "{\"version\": 1, \"drained\": {\"web\": [\"x\"]}}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.contains("is not a list of drains"), "{err}");
        std::fs::write(&path, "{\"version\": 9, \"drained\": {}}").unwrap();
        assert!(load(&path).unwrap_err().contains("format version 9"));
        let mut other = Drained::new();
        other
            .entry("web".into())
            .or_default()
            .insert("192.0.2.2".parse().unwrap());
        merge(&mut other, &drained);
        assert_eq!(other["web"].len(), 2);
    }
}
