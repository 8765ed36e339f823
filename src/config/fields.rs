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
                "{at}: duplicate key {}; JSON objects take each key once",
                crate::text::quoted(key, 64)
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
            problems.push(unknown_key(at, key, known));
        }
    }
    Some(entries)
}

/// The problem for a key that `at` does not take: the key, the nearest known one if it looks
/// like a misspelling of it, and what is expected.
pub fn unknown_key(at: &str, key: &str, known: &[&str]) -> String {
    let shown = crate::text::shorten(key, 64);
    match nearest(key, known) {
        Some(near) => format!(
            "{at}: unknown key {shown:?}; did you mean {near:?}? Expected one of: {}",
            known.join(", ")
        ),
        None => format!(
            "{at}: unknown key {shown:?}; expected one of: {}",
            known.join(", ")
        ),
    }
}

/// The known key `key` is most likely a misspelling of: the one at the smallest edit distance
/// (letters inserted, removed, replaced or swapped), if that is at most a third of its length
/// (at least 1), or one that starts with it or that it starts with.
pub fn nearest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key = key.to_ascii_lowercase();
    if key.len() > 64 {
        return None;
    }
    known
        .iter()
        .filter_map(|k| {
            let limit = (k.len() / 3).max(1);
            let prefix = key.len() >= 3 && (k.starts_with(key.as_str()) || key.starts_with(k));
            // The distance is at least the difference in length: skip the table when that
            // alone rules the key out (a config may have 100,000 unknown keys).
            let d = if key.len().abs_diff(k.len()) > limit {
                usize::MAX
            } else {
                edit_distance(&key, k)
            };
            (d <= limit || prefix).then_some((d, *k))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// neighbours each cost 1.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
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
