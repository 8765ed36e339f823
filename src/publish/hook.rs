//! The on-change hook: a command started after an apply that changed defines, told what
//! changed in its environment and, as JSON, on its stdin.

use super::Change;
use crate::command::{Failure, Runner};
use crate::config::publish::Hook;
use crate::log;
use std::ffi::OsString;
use std::time::Instant;

/// The environment the hook gets: `FAILOVER_CHANGES=N`, then per change (1-based)
/// `FAILOVER_<K>_DEFINE`, `_VARIABLE`, `_FAMILY`, `_OLD`, `_NEW`, `_CANDIDATE`, `_REASON`,
/// `_REASON_TEXT`; the first change also without the number (`FAILOVER_DEFINE`, …), which is
/// all a hook needs when one define changed.
pub fn environment(changes: &[Change]) -> Vec<(String, String)> {
    let mut env = vec![("FAILOVER_CHANGES".to_string(), changes.len().to_string())];
    for (k, c) in changes.iter().enumerate() {
        let fields = [
            ("DEFINE", c.define.clone()),
            ("VARIABLE", c.variable.clone()),
            ("FAMILY", c.family.to_string()),
            ("OLD", c.old.clone().unwrap_or_default()),
            ("NEW", c.new.clone()),
            ("CANDIDATE", c.candidate.clone().unwrap_or_default()),
            ("REASON", c.reason.to_string()),
            ("REASON_TEXT", c.reason_text.clone()),
        ];
        for (name, value) in fields {
            if k == 0 {
                env.push((format!("FAILOVER_{name}"), value.clone()));
            }
            env.push((format!("FAILOVER_{}_{name}", k + 1), value));
        }
    }
    env
}

/// The JSON on the hook's stdin: `{"at": UNIX_TIME, "changes": [...]}`.
pub fn stdin_json(changes: &[Change], at: u64) -> String {
    let mut text = serde_json::json!({ "at": at, "changes": changes }).to_string();
    text.push('\n');
    text
}

/// Runs the hook to completion or until its timeout. Its output goes to the log. Whatever it
/// started in its process group is killed once it exits (a hook that hands work to the
/// background must use `systemd-run` or similar): nothing of a hook outlives its run. Returns
/// whether it exited 0; every failure is logged as a warning.
pub fn run(hook: &Hook, changes: &[Change], at: u64) -> bool {
    let started = Instant::now();
    let name = &hook.command[0];
    let runner = Runner::for_current_user()
        .direct()
        .with_timeout(hook.timeout);
    let argv: Vec<OsString> = hook.command.iter().map(OsString::from).collect();
    let input = stdin_json(changes, at);
    let result = runner.merged("on_change", &argv, input.as_bytes(), &environment(changes));
    let output = match &result {
        Ok(output) => String::from_utf8_lossy(output).into_owned(),
        Err(e) => e.output.clone(),
    };
    // A failing hook's own words belong with its warning, also under -q.
    for line in output.lines() {
        let line = format!("on_change: {line}");
        if result.is_err() {
            log::warn(&line)
        } else {
            log::info(&line)
        }
    }
    let took = started.elapsed().as_secs_f64() * 1e3;
    let Err(e) = result else {
        log::debug(&format!("on_change: {name} done in {took:.0} ms"));
        return true;
    };
    log::warn(&match e.failure {
        Failure::Exited(s) => {
            format!("on_change: {name} failed ({s}) after {took:.0} ms; the apply stands")
        }
        Failure::TimedOut => format!(
            "on_change: {name} still running after {} ms; killed it and its process group; the \
             apply stands",
            hook.timeout.as_millis()
        ),
        Failure::NotStarted | Failure::Lost | Failure::Interrupted(_) => {
            let why = e.status.trim_start_matches("could not be started: ");
            format!("on_change: cannot run {name}: {why}; the apply stands")
        }
    });
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(define: &str, old: Option<&str>, new: &str) -> Change {
        Change {
            define: define.into(),
            variable: "web".into(),
            family: "v4",
            old: old.map(Into::into),
            new: new.into(),
            candidate: Some(format!("{new}:443")),
            reason: "failed_over",
            reason_text: "preferred candidate 10.0.0.1:443 down 1/1".into(),
        }
    }

    #[test]
    fn environment_numbers_every_change_and_names_the_first_plainly() {
        let env = environment(&[
            change("web_v4", Some("10.0.0.1"), "10.0.0.2"),
            change("dns_v4", None, "10.0.0.9"),
        ]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("FAILOVER_CHANGES"), Some("2"));
        assert_eq!(get("FAILOVER_DEFINE"), Some("web_v4"));
        assert_eq!(get("FAILOVER_1_OLD"), Some("10.0.0.1"));
        assert_eq!(get("FAILOVER_2_DEFINE"), Some("dns_v4"));
        assert_eq!(get("FAILOVER_2_OLD"), Some(""));
        assert_eq!(get("FAILOVER_2_NEW"), Some("10.0.0.9"));
        assert_eq!(get("FAILOVER_2_CANDIDATE"), Some("10.0.0.9:443"));
        assert_eq!(get("FAILOVER_1_REASON"), Some("failed_over"));
        assert_eq!(get("FAILOVER_3_DEFINE"), None);
    }

    #[test]
    fn stdin_is_the_whole_change_set() {
        let json: serde_json::Value =
            serde_json::from_str(&stdin_json(&[change("web_v4", None, "10.0.0.2")], 7)).unwrap();
        assert_eq!(json["at"], 7);
        assert_eq!(json["changes"][0]["define"], "web_v4");
        assert_eq!(json["changes"][0]["old"], serde_json::Value::Null);
        assert_eq!(json["changes"][0]["new"], "10.0.0.2");
    }
}
