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
    // The common case, a state this build wrote, in one pass; anything else (an older format
    // to migrate, or a broken file to describe) through a generic document.
    if let Ok(s) = serde_json::from_slice::<State>(&text)
        && s.version == VERSION
    {
        return Ok(s);
    }
    let mut doc: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| LoadProblem::Unusable(format!("it is not valid state: {e}")))?;
    if doc.get("version").and_then(serde_json::Value::as_u64) == Some(1) {
        migrate_from_1(&mut doc);
    }
    match serde_json::from_value::<State>(doc) {
        Ok(s) if s.version == VERSION => Ok(s),
        Ok(s) => Err(LoadProblem::Unusable(format!(
            "it has format version {}, this build reads {VERSION} (and 1)",
            s.version
        ))),
        Err(e) => Err(LoadProblem::Unusable(format!("it is not valid state: {e}"))),
    }
}

/// Version 1 kept `since` in whole seconds; version 2 keeps `since_ms`. Nothing else changed,
/// so counters, results and publish history carry over.
fn migrate_from_1(doc: &mut serde_json::Value) {
    let variables = doc.get_mut("variables").and_then(|v| v.as_object_mut());
    for var in variables.into_iter().flat_map(|m| m.values_mut()) {
        for family in ["v4", "v6"] {
            let candidates = var
                .get_mut(family)
                .and_then(|f| f.get_mut("candidates"))
                .and_then(|c| c.as_array_mut());
            for c in candidates.into_iter().flatten() {
                let Some(counted) = c.get_mut("counted").and_then(|k| k.as_object_mut()) else {
                    continue;
                };
                if let Some(secs) = counted.remove("since").and_then(|v| v.as_u64()) {
                    counted.insert("since_ms".into(), (secs.saturating_mul(1000)).into());
                }
            }
        }
    }
    doc["version"] = VERSION.into();
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
    let dir = crate::files::dir_of(path);
    if let Ok(m) = std::fs::symlink_metadata(dir)
        && !m.is_dir()
    {
        anyhow::bail!(
            "{} is {}, not a directory; the state directory must be a real directory: remove it, \
             it is created again",
            dir.display(),
            if m.file_type().is_symlink() {
                format!(
                    "a symlink to {}",
                    std::fs::read_link(dir)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default()
                )
            } else {
                "a file".to_string()
            }
        );
    }
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new()
        .prefix(".state-probe.")
        .tempfile_in(dir)?;
    Ok(())
}

/// Writes the state atomically (temp file + rename), creating its directory if missing.
/// Not fsynced: it is rewritten every run, and losing it in a crash only loses history.
pub fn save(path: &Path, state: &State) -> anyhow::Result<()> {
    std::fs::create_dir_all(crate::files::dir_of(path))?;
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
                            since_ms: 5,
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

        // A state file of the previous release (format 1, whole seconds) is migrated.
        std::fs::write(
            &path,
            r#"{"version":1,"last_apply":null,"variables":{"web":{"fingerprint":"port=1","v4":
              {"candidates":[{"address":"127.0.0.1","counted":{"up":true,"streak":1,"since":5},
              "last":{"at":5,"up":true,"latency_ms":0.1,"error":null}}],"selected":0,
              "rendered":"127.0.0.1"},"v6":{"candidates":[],"selected":null,"rendered":null}}},
              "publish":{"reloads":3}}"#,
        )
        .unwrap();
        let old = load(&path).ok().unwrap();
        let c = old.variables["web"].v4.candidates[0].counted.unwrap();
        assert_eq!((c.up, c.streak, c.since_ms), (true, 1, 5000));
        assert_eq!((old.version, old.publish.reloads), (VERSION, 3));

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
