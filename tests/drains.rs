//! The operator's word is durable: a drain lives in `drains.json` beside the state, written
//! with fsync of the file and its directory, and survives whatever happens to the state file
//! (a full disk during a save, a corrupt or oversized file). When the drains themselves cannot
//! be read, no run moves traffic and `status` says CRITICAL. Real binary, real nft, real
//! listeners, each test in its own network and mount namespace (the full disk is a small tmpfs).

mod common;

use common::*;
use std::fs;
use std::process::Output;

const PORT: u16 = 8443;
const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";

/// `web`: A then B, both answering; the include on A.
fn applied() -> (Fixture, Listener, Listener) {
    let a = listen(A, PORT);
    let b = listen(B, PORT);
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"failover": {{"web": {{"ip4": ["{A}", "{B}"], "port": {PORT}}}}}}}"#
    ));
    f.write_main(&format!("  ip daddr $web_v4 tcp dport {PORT} accept"));
    assert_exit(&f.run(&[]), 0);
    assert_eq!(web(&f), A);
    (f, a, b)
}

fn web(f: &Fixture) -> String {
    define(&f.output_text().unwrap(), "web_v4")
        .unwrap()
        .to_string()
}

fn drain(f: &Fixture, address: &str) -> Output {
    command(f, "drain", address)
}

fn undrain(f: &Fixture, address: &str) -> Output {
    command(f, "undrain", address)
}

/// `drain` or `undrain` of `web`'s `address` with the fixture's paths.
fn command(f: &Fixture, verb: &str, address: &str) -> Output {
    let mut cmd = f.command(&[], &f.reload());
    cmd.args([verb, "web", address]);
    output_within(cmd, std::time::Duration::from_secs(30))
}

/// Drains A and lets a run move traffic to B.
fn drained(f: &Fixture) {
    assert_exit(&drain(f, A), 0);
    assert_exit(&f.run(&[]), 0);
    assert_eq!(web(f), B);
    assert!(drains_file(f).contains(A), "{}", drains_file(f));
}

fn drains_file(f: &Fixture) -> String {
    fs::read_to_string(f.state.with_file_name("drains.json")).unwrap_or_default()
}

/// A private mount namespace for this thread and what it starts, with a tmpfs of `kib` KiB on
/// the fixture's state directory.
fn small_state_disk(f: &Fixture, kib: u32) {
    // SAFETY: unshare and mount affect only this thread's (new) mount namespace.
    unsafe {
        assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare(CLONE_NEWNS)");
        let none = c"none";
        let root = c"/";
        assert_eq!(
            libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            ),
            0
        );
    }
    let dir = f.state.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size={kib}k tmpfs '{}'",
        dir.display()
    ));
}

#[test]
fn a_drain_survives_a_state_save_that_fails_on_a_full_disk() {
    in_netns(|| {
        let (f, _a, _b) = applied();
        small_state_disk(&f, 64);
        assert_exit(&f.run(&[]), 0);
        drained(&f);
        let state_before = fs::read(&f.state).unwrap();
        // Fill the disk: the next save fails.
        let filler = f.state.with_file_name("filler");
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
            .output();
        let out = f.run(&[]);
        let log = stderr(&out);
        assert!(log.contains("cannot save the state to"), "{log}");
        assert!(log.contains("the previous state stays"), "{log}");
        assert_eq!(
            fs::read(&f.state).unwrap(),
            state_before,
            "a failed save touched the previous state file"
        );
        assert_eq!(web(&f), B);
        // Space again: traffic stays off the drained candidate.
        fs::remove_file(&filler).unwrap();
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), B);
        assert!(ruleset().contains(&format!("ip daddr {B} tcp dport {PORT}")));
    });
}

#[test]
fn a_drain_survives_a_corrupt_or_oversized_state_file() {
    in_netns(|| {
        let (f, _a, _b) = applied();
        drained(&f);
        fs::write(&f.state, "{ this is not json").unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("ignoring the state file"),
            "{}",
            stderr(&out)
        );
        assert_eq!(web(&f), B);
        // Over the 16 MiB read cap.
        fs::write(&f.state, vec![b' '; 17 << 20]).unwrap();
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), B);
        // And gone altogether.
        fs::remove_file(&f.state).unwrap();
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), B);
        // Undrain puts it back under the usual rules.
        assert_exit(&undrain(&f, A), 0);
        assert!(!drains_file(&f).contains(A), "{}", drains_file(&f));
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), A);
    });
}

#[test]
fn unreadable_drains_apply_nothing_and_status_says_critical() {
    in_netns(|| {
        let (f, _a, b) = applied();
        drained(&f);
        fs::write(f.state.with_file_name("drains.json"), "garbage").unwrap();
        // B goes down: A would be chosen, but whether A is drained is unknown.
        drop(b);
        let out = f.run(&[]);
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(
            log.contains("drains.json is not a list of drains")
                && log.contains("this run applies no change (the include in effect stays)"),
            "{log}"
        );
        assert_eq!(web(&f), B);
        let status = f.status(&[]);
        assert_exit(&status, 2);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.starts_with("CRITICAL: ") && text.contains("drains.json is not a list of drains"),
            "{text}"
        );
        // The state is no second record of the drains: removing drains.json undrains.
        assert!(!fs::read_to_string(&f.state).unwrap().contains("drained"));
        fs::remove_file(f.state.with_file_name("drains.json")).unwrap();
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), A);
    });
}

/// The drain is on disk for good once the command returns: the new file is fsynced, renamed
/// into place, and its directory fsynced (seen with strace).
#[test]
fn drain_writes_durably() {
    in_netns(|| {
        let (f, _a, _b) = applied();
        let trace = f.dir.path().join("strace.txt");
        let mut cmd = f.command(
            &[
                "strace",
                "-f",
                "-e",
                "trace=fsync,fdatasync,rename,renameat,renameat2,openat",
                "-o",
                trace.to_str().unwrap(),
            ],
            &f.reload(),
        );
        cmd.args(["drain", "web", A]);
        assert_exit(&output_within(cmd, std::time::Duration::from_secs(30)), 0);
        let text = fs::read_to_string(&trace).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let rename = lines
            .iter()
            .position(|l| l.contains("rename") && l.contains("drains.json\""))
            .unwrap_or_else(|| panic!("no rename to drains.json:\n{text}"));
        assert!(
            lines[..rename].iter().any(|l| l.contains("fsync(")),
            "no fsync of the new file before its rename:\n{text}"
        );
        assert!(
            lines[rename..].iter().any(|l| l.contains("fsync(")),
            "no fsync of the directory after the rename:\n{text}"
        );
    });
}

/// A drain kept in the state file by an earlier release still counts, and stays there until
/// the next drain or undrain moves it to drains.json.
#[test]
fn a_drain_from_the_state_of_an_earlier_release_still_counts() {
    in_netns(|| {
        let (f, _a, _b) = applied();
        let mut state: serde_json::Value =
            serde_json::from_slice(&fs::read(&f.state).unwrap()).unwrap();
        state["drained"] = serde_json::json!({ "web": [A] });
        fs::write(&f.state, state.to_string()).unwrap();
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), B);
        assert!(
            fs::read_to_string(&f.state)
                .unwrap()
                .contains("\"drained\"")
        );
        assert_exit(&undrain(&f, A), 0);
        assert!(
            !fs::read_to_string(&f.state)
                .unwrap()
                .contains("\"drained\"")
        );
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), A);
    });
}

/// Draining the last candidate that answers: the command says what the all-down policy will
/// render, and the run's words agree with what it renders.
#[test]
fn draining_the_last_healthy_candidate_says_what_will_be_rendered() {
    in_netns(|| {
        let (f, _a, b) = applied();
        drop(b);
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), A);
        let out = drain(&f, A);
        assert_exit(&out, 0);
        let said = stderr(&out);
        assert!(
            said.contains(&format!(
                "no other candidate of web_v4 is up, so the all-down policy \"first\" decides: the next run renders the first candidate, {A}, drained or not, until one answers"
            )),
            "{said}"
        );
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert_eq!(web(&f), A);
        let log = stderr(&out);
        assert!(
            log.contains(&format!(
                "all down: using the first candidate ({A}), although {A}:{PORT} is drained: no other candidate answers"
            )),
            "{log}"
        );
        assert!(!log.contains("left out"), "{log}");
    });
}

/// No history means no credit: an undrained candidate earns `rise` successes before it takes
/// traffic back, however long its history was before the drain.
#[test]
fn an_undrained_candidate_earns_rise_before_it_takes_traffic_back() {
    in_netns(|| {
        let _a = listen(A, PORT);
        let _b = listen(B, PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"settings": {{"rise": 3}}, "failover": {{"web": {{"ip4": ["{A}", "{B}"], "port": {PORT}}}}}}}"#
        ));
        f.write_main(&format!("  ip daddr $web_v4 tcp dport {PORT} accept"));
        // Three runs: B, new like A, earns its credit (A has traffic and kept it).
        for _ in 0..3 {
            assert_exit(&f.run(&[]), 0);
        }
        drained(&f);
        assert_exit(&undrain(&f, A), 0);
        // Its first two successes are not enough; the third is.
        for run in 1..=2 {
            assert_exit(&f.run(&[]), 0);
            assert_eq!(web(&f), B, "run {run} after undrain");
        }
        assert_exit(&f.run(&[]), 0);
        assert_eq!(web(&f), A);
    });
}
