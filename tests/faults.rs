//! The last applied include is always recoverable: a run killed at every step of an apply,
//! followed by a run whose new value fails the real config check, leaves exactly the include
//! nftables was last loaded with. Real nft, real listeners, a private network namespace each.
//!
//! The candidates are A 127.0.0.1, B 127.0.0.2 and C 127.0.0.3. The main config (not the staged
//! one) holds an interval set with the range 127.0.0.3-127.0.0.4, so rendering C passes the staged check and
//! fails `nft -c` of the main config. A wrapper around nft (and one as the reload command)
//! signals the binary at the chosen step. Live mode gets the same matrix over its own steps, and
//! must also leave the kernel's live set holding what the recorded include says.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;

const PORT: u16 = 9666;

/// Where a run is interrupted: the step and whether before, during or after its command.
const STEPS: &[&str] = &[
    "staged-before",
    "staged-after",
    "main-before", // the new include has just been renamed into place
    "main-during",
    "reload-before",
    "reload-during", // the reload goes through; the binary dies before recording it
];

struct Setup {
    f: Fixture,
    stage: std::path::PathBuf,
    trigger: std::path::PathBuf,
}

fn setup() -> Setup {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "port": {PORT}}}}}}}"#
    ));
    fs::write(
        &f.main_config,
        format!(
            "flush ruleset\ninclude \"{}/*.nft\"\ntable inet filter {{\n set conflicts {{ type ipv4_addr; flags interval; elements = {{ $web_v4, 127.0.0.3-127.0.0.4 }} }}\n chain output {{\n  type filter hook output priority 10; policy accept;\n  ip daddr $web_v4 tcp dport {PORT} accept\n }}\n}}\n",
            f.addon_dir.display()
        ),
    )
    .unwrap();
    let stage = f.dir.path().join("stage");
    fs::create_dir(&stage).unwrap();
    fs::set_permissions(&stage, fs::Permissions::from_mode(0o700)).unwrap();
    let trigger = f.dir.path().join("interrupt");
    // Replaces the fixture's logging wrapper: same log, plus the interruption.
    let wrapper = |step_of: &str, run: &str| {
        format!(
            r#"#!/bin/sh
echo "$*" >> '{log}'
{step_of}
set -- "$@"
at=""; sig=""
[ -f '{trigger}' ] && read at sig < '{trigger}'
if [ "$at" = "$step-before" ]; then rm -f '{trigger}'; kill -$sig $PPID; sleep 0.3; [ "$sig" = KILL ] && exit 1; fi
if [ "$at" = "$step-during" ]; then rm -f '{trigger}'; kill -$sig $PPID; fi
{run}
rc=$?
if [ "$at" = "$step-after" ]; then rm -f '{trigger}'; kill -$sig $PPID; sleep 0.3; fi
exit $rc
"#,
            log = f.nft_log.display(),
            trigger = trigger.display(),
        )
    };
    let nft = wrapper(
        &format!(
            r#"case "$*" in *'{}/main.nft'*) step=staged;; *'-c -f {}'*) step=main;; *) step=other;; esac"#,
            stage.display(),
            f.main_config.display()
        ),
        r#"/usr/sbin/nft "$@""#,
    );
    fs::write(&f.nft, nft).unwrap();
    let reload = f.dir.path().join("reload");
    fs::write(
        &reload,
        wrapper(
            "step=reload",
            &format!("/usr/sbin/nft -f '{}'", f.main_config.display()),
        ),
    )
    .unwrap();
    fs::set_permissions(&reload, fs::Permissions::from_mode(0o755)).unwrap();
    Setup { f, stage, trigger }
}

impl Setup {
    fn run(&self) -> Output {
        let reload = self.f.dir.path().join("reload");
        self.f.run_with_reload(
            reload.to_str().unwrap(),
            &["--stage-dir", self.stage.to_str().unwrap()],
        )
    }

    fn interrupt_at(&self, step: &str, signal: &str) {
        fs::write(&self.trigger, format!("{step} {signal}\n")).unwrap();
    }

    /// A run whose new value (C) the main config refuses.
    fn refused_run(&self, what: &str) -> Output {
        let out = self.run();
        assert_exit(&out, 1);
        assert!(
            stderr(&out).contains("check of the main config failed"),
            "{what}: {}",
            stderr(&out)
        );
        out
    }

    fn record(&self) -> Option<Vec<u8>> {
        fs::read(self.f.addon_dir.join(".failover.nft.applied")).ok()
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

/// One row of the fault matrix: A applied, then a switch to B interrupted at `step` by
/// `signal`, then a run that wants C (which fails the real check).
fn interrupted_then_failing(step: &'static str, signal: &'static str, first_apply: bool) {
    in_netns(move || {
        let s = setup();
        let a = listen("127.0.0.1", PORT);
        let b = listen("127.0.0.2", PORT);
        let _c = listen("127.0.0.3", PORT);
        let applied = if first_apply {
            // An include nobody recorded (e.g. the reference addon's), never reloaded by us.
            let text = "# Auto-Generated config - DO NOT EDIT MANUALLY!\n\ndefine web_v4 = 127.0.0.1\ndefine web_v6 = ::\n";
            fs::write(&s.f.output, text).unwrap();
            sh(&format!("nft -f {}", s.f.main_config.display()));
            text.as_bytes().to_vec()
        } else {
            assert_exit(&s.run(), 0);
            fs::read(&s.f.output).unwrap()
        };
        drop(a);

        s.interrupt_at(step, signal);
        let out = s.run();
        assert!(!s.trigger.exists(), "{step}: the interruption never fired");
        match signal {
            "KILL" => assert_eq!(out.status.signal(), Some(9), "{step}: {}", stderr(&out)),
            _ => {
                assert_ne!(out.status.code(), Some(0), "{step}: {}", stderr(&out));
                // The handler finishes the apply or its rollback before exiting: what is on
                // disk is what is recorded as applied, never a half-applied include.
                assert_eq!(
                    fs::read(&s.f.output).ok(),
                    s.record(),
                    "{step} TERM: include and record differ: {}",
                    stderr(&out)
                );
            }
        }
        let which = |b: Option<Vec<u8>>| match b {
            None => "none".to_string(),
            Some(b) => define(&String::from_utf8_lossy(&b), "web_v4")
                .unwrap_or("?")
                .to_string(),
        };
        let interrupted = format!(
            "exit {:?}/signal {:?}, include {}, record {}",
            out.status.code(),
            out.status.signal(),
            which(fs::read(&s.f.output).ok()),
            which(s.record())
        );
        // Only a reload that went through may have made B the last applied include.
        let applied = match s.record() {
            Some(r) if step == "reload-during" && signal == "TERM" => r,
            _ => applied,
        };

        drop(b);
        let out = s.refused_run(&format!("{step} {signal}"));
        assert_eq!(
            fs::read(&s.f.output).unwrap(),
            applied,
            "{step} {signal}: the include is not the last applied one:\n{}",
            stderr(&out)
        );
        assert_eq!(s.record(), Some(applied.clone()), "{step} {signal}");
        sh(&format!("nft -c -f {}", s.f.main_config.display()));
        assert!(temp_files(&s.f.addon_dir).is_empty(), "{step} {signal}");
        assert!(temp_files(&s.stage).is_empty(), "{step} {signal}");
        // One row of the fault matrix (`cargo test --test faults -- --nocapture`).
        println!(
            "fault {signal:<4} {step:<14} first_apply={first_apply}: after the interrupted run: {interrupted}; after the failing run: exit 1, include {}",
            which(fs::read(&s.f.output).ok())
        );
    });
}

#[test]
fn sigkill_at_every_step_of_an_apply_keeps_the_last_applied_include() {
    for step in STEPS {
        interrupted_then_failing(step, "KILL", false);
    }
}

#[test]
fn sigkill_during_the_first_apply_restores_the_unrecorded_include() {
    for step in ["main-before", "reload-before"] {
        interrupted_then_failing(step, "KILL", true);
    }
}

#[test]
fn sigterm_at_every_step_of_an_apply_rolls_back_and_exits_non_zero() {
    for step in STEPS {
        interrupted_then_failing(step, "TERM", false);
    }
}

/// Live mode's steps, as the nft wrapper sees them: the batch checked, committed, read back, and
/// the main config checked with the new include.
const LIVE_STEPS: &[&str] = &[
    "check-before",
    "check-during",
    "commit-before",
    "commit-during",
    "commit-after", // the kernel switched; nothing else knows yet
    "read-after",
    "main-before", // the new include has just been renamed into place
    "main-during",
    "main-after", // accepted; the binary dies before recording it
];

/// A live-mode setup: the same candidates and guard set as `setup`, `"apply": "live"`, and an
/// nft wrapper that tells the live steps apart by the staged file's content.
fn live_setup() -> Setup {
    let s = setup();
    s.f.write_config(&format!(
        r#"{{"settings": {{"apply": "live"}}, "failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "port": {PORT}}}}}}}"#
    ));
    let nft = fs::read_to_string(&s.f.nft).unwrap().replace(
        "*) step=other;;",
        r#"'-c -j -f '*) step=check;; '-j -f '*) if grep -q '"list"' "$3"; then step=read; else step=commit; fi;; *) step=other;;"#,
    );
    fs::write(&s.f.nft, nft).unwrap();
    s
}

/// What the kernel's live set holds for web_v4.
fn live_web() -> String {
    let out = sh("nft list set inet nftables_failover web_v4");
    out.split("elements = { ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or("none")
        .to_string()
}

/// Kernel, include and record agree: the kernel runs what the recorded include says, and that
/// is the include on disk, which the main config loads.
fn consistent(s: &Setup, what: &str, out: &Output) -> String {
    let include = fs::read(&s.f.output).unwrap();
    assert_eq!(Some(include.clone()), s.record(), "{what}: {}", stderr(out));
    let value = define(&String::from_utf8_lossy(&include), "web_v4")
        .unwrap()
        .to_string();
    assert_eq!(live_web(), value, "{what}: {}", stderr(out));
    sh(&format!("nft -c -f {}", s.f.main_config.display()));
    assert!(temp_files(&s.f.addon_dir).is_empty(), "{what}");
    value
}

/// A live switch from A to B interrupted at `step`, then a run that wants C, which the live set
/// takes and the main config refuses.
fn live_interrupted_then_refused(step: &'static str, signal: &'static str) {
    in_netns(move || {
        let s = live_setup();
        let a = listen("127.0.0.1", PORT);
        let b = listen("127.0.0.2", PORT);
        let _c = listen("127.0.0.3", PORT);
        assert_exit(&s.run(), 0);
        assert_eq!(live_web(), "127.0.0.1");
        drop(a);

        s.interrupt_at(step, signal);
        let out = s.run();
        assert!(!s.trigger.exists(), "{step}: the interruption never fired");
        // What the refused run must come back to: A, unless a stopped run finished B first.
        let (after, applied) = match signal {
            "KILL" => {
                assert_eq!(out.status.signal(), Some(9), "{step}: {}", stderr(&out));
                (format!("killed; kernel {}", live_web()), "127.0.0.1")
            }
            _ => {
                // Stopped before the switch, switched and set back, or (a signal that came as
                // the last step ended) finished: kernel, include and record agree on exit.
                assert_exit(&out, 1);
                let v = consistent(&s, &format!("{step} TERM"), &out);
                let finished = stderr(&out).contains("when the work was done");
                let want = if finished { "127.0.0.2" } else { "127.0.0.1" };
                assert_eq!(v, want, "{step} TERM: {}", stderr(&out));
                (
                    format!("exit 1; kernel = include = record = {v}"),
                    if finished { "127.0.0.2" } else { "127.0.0.1" },
                )
            }
        };

        drop(b);
        let out = s.refused_run(&format!("{step} {signal}"));
        let v = consistent(&s, &format!("{step} {signal}, refused run"), &out);
        assert_eq!(v, applied, "{step} {signal}: {}", stderr(&out));
        println!(
            "live fault {signal:<4} {step:<14}: after the interrupted run: {after}; after the refused run: exit 1, kernel = include = record = {v}"
        );
    });
}

#[test]
fn live_switch_killed_at_every_step_converges_to_the_last_applied_include() {
    for step in LIVE_STEPS {
        live_interrupted_then_refused(step, "KILL");
    }
}

#[test]
fn live_switch_stopped_at_every_step_exits_with_kernel_include_and_record_agreeing() {
    for step in LIVE_STEPS {
        live_interrupted_then_refused(step, "TERM");
    }
}
