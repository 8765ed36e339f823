//! Helpers every config section uses to read JSON objects and report problems. Pure.

use crate::jsonc::Json;
use std::collections::HashMap;
use std::path::PathBuf;

pub fn lookup<'a>(entries: &'a [(String, Json)], key: &str) -> Option<&'a Json> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub fn report_duplicates(entries: &[(String, Json)], at: &str, problems: &mut Vec<String>) {
    // Counted, not compared pairwise: a config may have thousands of variables.
    let mut count: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (key, _) in entries {
        *count.entry(key).or_default() += 1;
    }
    // Once per key, in order of first occurrence.
    for (key, _) in entries {
        if count.remove(key.as_str()).is_some_and(|n| n > 1) {
            problems.push(format!(
                "{at}: duplicate key {key:?}; JSON objects take each key once"
            ));
        }
    }
}

/// An object whose keys must all be in `known`; reports anything else.
pub fn object<'a>(
    value: &'a Json,
    at: &str,
    known: &[&str],
    problems: &mut Vec<String>,
) -> Option<&'a [(String, Json)]> {
    let Json::Object(entries) = value else {
        problems.push(format!(
            "{at}: expected an object with {}, found {}",
            known.join(", "),
            value.describe()
        ));
        return None;
    };
    report_duplicates(entries, at, problems);
    for (key, _) in entries {
        if !known.contains(&key.as_str()) {
            problems.push(format!(
                "{at}: unknown key {key:?}; expected one of: {}",
                known.join(", ")
            ));
        }
    }
    Some(entries)
}

/// An optional integer from `min` to `max`.
pub fn integer(
    value: Option<&Json>,
    at: &str,
    min: u64,
    max: u64,
    what: &str,
    problems: &mut Vec<String>,
) -> Option<u64> {
    match value? {
        Json::Number(n) if n.as_u64().is_some_and(|v| (min..=max).contains(&v)) => n.as_u64(),
        other => {
            problems.push(format!(
                "{at}: expected {what} from {min} to {max}, found {}",
                other.describe()
            ));
            None
        }
    }
}

/// An optional non-empty string.
pub fn string<'a>(
    value: Option<&'a Json>,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<&'a str> {
    match value? {
        Json::String(s) if !s.is_empty() => Some(s),
        other => {
            problems.push(format!(
                "{at}: expected a non-empty string, found {}",
                other.describe()
            ));
            None
        }
    }
}

/// An optional absolute path.
pub fn absolute_path(
    value: Option<&Json>,
    at: &str,
    problems: &mut Vec<String>,
) -> Option<PathBuf> {
    let s = string(value, at, problems)?;
    if s.starts_with('/') {
        Some(PathBuf::from(s))
    } else {
        problems.push(format!("{at}: expected an absolute path, found {s:?}"));
        None
    }
}
