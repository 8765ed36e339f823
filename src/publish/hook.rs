//! The on-change hook: a command started after an apply that changed defines, told what
//! changed in its environment and, as JSON, on its stdin.

use super::Change;
use crate::config::publish::Hook;
use crate::log;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The most output of a hook that goes to the log.
const OUTPUT_LIMIT: usize = 64 * 1024;

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

/// Runs the hook to completion or until its timeout, then kills its process group. Its output
/// goes to the log. Returns whether it exited 0; every failure is logged as a warning.
pub fn run(hook: &Hook, changes: &[Change], at: u64) -> bool {
    let started = Instant::now();
    let name = &hook.command[0];
    match run_inner(hook, changes, at) {
        Ok((status, output)) => {
            // A failing hook's own words belong with its warning, also under -q.
            let failed = !status.is_some_and(|s| s.success());
            for line in String::from_utf8_lossy(&output).lines() {
                let line = format!("on_change: {line}");
                if failed {
                    log::warn(&line)
                } else {
                    log::info(&line)
                }
            }
            let took = started.elapsed().as_secs_f64() * 1e3;
            match status {
                Some(s) if s.success() => {
                    log::debug(&format!("on_change: {name} done in {took:.0} ms"));
                    true
                }
                Some(s) => {
                    log::warn(&format!(
                        "on_change: {name} failed ({s}) after {took:.0} ms; the apply stands"
                    ));
                    false
                }
                None => {
                    log::warn(&format!(
                        "on_change: {name} still running after {} ms; killed it and its process \
                         group; the apply stands",
                        hook.timeout.as_millis()
                    ));
                    false
                }
            }
        }
        Err(e) => {
            log::warn(&format!(
                "on_change: cannot run {name}: {e}; the apply stands"
            ));
            false
        }
    }
}

/// `None` for the status means it timed out and was killed.
fn run_inner(
    hook: &Hook,
    changes: &[Change],
    at: u64,
) -> std::io::Result<(Option<std::process::ExitStatus>, Vec<u8>)> {
    // One pipe for stdout and stderr keeps the lines in the order the hook wrote them.
    let (mut reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(&hook.command[0]);
    cmd.args(&hook.command[1..])
        .envs(environment(changes))
        .stdin(Stdio::piped())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0);
    let mut child = cmd.spawn()?;
    // Our copies of the write end must go, or the reader never sees end of file.
    drop(cmd);
    let input = stdin_json(changes, at);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Written from a thread: a hook that never reads must not block us past the timeout.
    std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    // Collected as it comes: a descendant that left the process group may keep the pipe open
    // after the hook is gone, and what was written so far still belongs in the log.
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
            let room = OUTPUT_LIMIT.saturating_sub(out.len());
            out.extend_from_slice(&buf[..n.min(room)]);
        }
        let _ = done_tx.send(());
    });
    let deadline = Instant::now() + hook.timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = done_rx.recv_timeout(Duration::from_millis(200));
    let output = std::mem::take(&mut *output.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((status, output))
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
