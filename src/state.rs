//! The state file: per-candidate counters and last results, per variable the rendered choice,
//! and how the last apply went.
//!
//! State is a convenience, never a reason to fail: a missing, unreadable or corrupt file is
//! logged and treated as no history. So is one that cannot be saved: counters that never move
//! would freeze failover, so a run that cannot save decides from its own checks alone.

use crate::model::{State, VERSION};
use std::path::Path;

/// Why a state file could not be used; the run goes on without history.
pub enum LoadProblem {
    Missing,
    Unusable(String),
}

/// Reads the state file; `Err` says why it is treated as empty. Only a regular file of at
/// most `READ_CAP` bytes is read, never through a symlink: the state directory is the service
/// user's, and a planted link, FIFO or huge file must neither block the run nor be read.
pub fn load(path: &Path) -> Result<State, LoadProblem> {
    let text = match crate::files::read_regular(path, crate::files::READ_CAP, false) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(LoadProblem::Missing),
        Err(e) => {
            return Err(LoadProblem::Unusable(format!(
                "cannot read it: {}",
                e.reason
            )));
        }
    };
    match serde_json::from_slice::<State>(&text) {
        Ok(s) if s.version == VERSION => Ok(s),
        Ok(s) => Err(LoadProblem::Unusable(format!(
            "it has format version {}, this build reads {VERSION}",
            s.version
        ))),
        Err(e) => Err(LoadProblem::Unusable(format!("it is not valid state: {e}"))),
    }
}

/// Like `load`, logging why a state file was not usable.
pub fn load_or_empty(path: &Path) -> State {
    match load(path) {
        Ok(s) => s,
        Err(LoadProblem::Missing) => {
            crate::log::debug(&format!("{}: no state yet", path.display()));
            State::default()
        }
        Err(LoadProblem::Unusable(why)) => {
            // An error, not a warning: history is lost (fall/rise counters start over), and a
            // file that is not ours may mean someone is tampering with the state directory.
            crate::log::error(&format!(
                "{}: ignoring the state file, which is unusable: {why}; starting without history",
                path.display()
            ));
            State::default()
        }
    }
}

/// Whether the state can be saved in this run: its directory exists (it is created if missing)
/// and a file can be created in it. Checked before the old state is used, because a state that
/// cannot be rewritten goes stale and would freeze every counter.
pub fn writable(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new()
        .prefix(".state-probe.")
        .tempfile_in(dir)?;
    Ok(())
}

/// After a failed save: removes the old file, so the next run does not take stale counters for
/// current ones. Never follows a symlink (removing one only removes the link).
pub fn discard(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Writes the state atomically (temp file + rename), creating its directory if missing.
/// Not fsynced: it is rewritten every run, and losing it in a crash only loses history.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // Compact: it is rewritten every run, and `status` is the human-readable view.
    let mut text = serde_json::to_vec(state)?;
    text.push(b'\n');
    crate::files::write_atomically(path, &text, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ApplyOutcome, CandidateState, Counted, FamilyState, VariableState};

    #[test]
    fn round_trip_and_tolerant_loading() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(matches!(load(&path), Err(LoadProblem::Missing)));
        let mut state = State {
            version: VERSION,
            last_apply: Some(ApplyOutcome {
                at: 7,
                ok: false,
                error: Some("reload failed".into()),
            }),
            ..State::default()
        };
        state.variables.insert(
            "web".into(),
            VariableState {
                fingerprint: "f".into(),
                v4: FamilyState {
                    candidates: vec![CandidateState {
                        address: "127.0.0.1".parse().unwrap(),
                        probe: None,
                        counted: Some(Counted {
                            up: true,
                            streak: 1,
                            since: 5,
                        }),
                        last: None,
                    }],
                    selected: Some(0),
                    rendered: Some("127.0.0.1".into()),
                    all_down: false,
                },
                v6: FamilyState::default(),
            },
        );
        save(&path, &state).unwrap();
        assert_eq!(load(&path).ok(), Some(state));

        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(load(&path), Err(LoadProblem::Unusable(_))));
        assert_eq!(load_or_empty(&path), State::default());
        std::fs::write(&path, r#"{"version": 99}"#).unwrap();
        assert!(matches!(load(&path), Err(LoadProblem::Unusable(w)) if w.contains("version 99")));

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(
            matches!(load(&path), Err(LoadProblem::Unusable(w)) if w.contains("symlink to /dev/zero"))
        );
        // Saving refuses to replace the link, so whatever it points at is never written.
        let err = save(&path, &State::default()).unwrap_err().to_string();
        assert!(err.contains("refusing to replace it"), "{err}");
    }
}
