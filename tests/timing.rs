//! Rules that count time, to the millisecond and safe from wall-clock jumps, with the real
//! binary in a private network namespace: `preempt_delay_s` never ends early, whether the
//! primary came back late in a second or the wall clock was set back or forward between runs
//! (`faketime` moves the wall clock of one run only; CLOCK_BOOTTIME stays real).

mod common;

use common::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PORT: u16 = 8443;

fn fixture() -> Fixture {
    let f = Fixture::new();
    f.write_config(&format!(
        r#"{{"settings": {{"preempt_delay_s": 2, "timeout_ms": 500}}, "failover": {{"web": {{
            "ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
    ));
    f.write_main("  ip daddr $web_v4 counter");
    f
}

fn web(f: &Fixture) -> String {
    define(&f.output_text().unwrap(), "web_v4")
        .unwrap()
        .to_string()
}

/// Runs with the wall clock moved by `offset` (e.g. "-1h") for this run only.
fn run_shifted(f: &Fixture, offset: &str) -> std::process::Output {
    let mut cmd = f.command(&["faketime", "-f", offset], &f.reload());
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    output_within(cmd, Duration::from_secs(30))
}

/// On the backup, with the primary just seen up again by a run: returns the fixture, the
/// listeners, and when that run started.
fn primary_back(at_fraction: Option<u32>) -> (Fixture, Listener, Listener, SystemTime) {
    let backup = listen("127.0.0.2", PORT);
    let f = fixture();
    assert_exit(&f.run(&[]), 0);
    assert_eq!(web(&f), "127.0.0.2");
    let primary = listen("127.0.0.1", PORT);
    // Start the run that first sees the primary at x.9 s of the wall clock.
    if let Some(ms) = at_fraction {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let wait = (1000 + ms - now.subsec_millis()) % 1000;
        std::thread::sleep(Duration::from_millis(wait.into()));
    }
    let seen = SystemTime::now();
    let out = f.run(&[]);
    assert_exit(&out, 0);
    assert_eq!(web(&f), "127.0.0.2", "{}", stderr(&out));
    (f, primary, backup, seen)
}

fn sleep_until(t: SystemTime) {
    if let Ok(d) = t.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn a_preempt_delay_late_in_a_second_never_ends_early() {
    in_netns(|| {
        let (f, _p, _b, seen) = primary_back(Some(900));
        // 1.2 s later: whole seconds would count x.9 as x and x+2.1 as x+2, two seconds.
        sleep_until(seen + Duration::from_millis(1200));
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert_eq!(
            web(&f),
            "127.0.0.2",
            "switched back early: {}",
            stderr(&out)
        );
        sleep_until(seen + Duration::from_millis(2300));
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert_eq!(web(&f), "127.0.0.1", "{}", stderr(&out));
    });
}

#[test]
fn a_wall_clock_set_back_neither_freezes_the_delay() {
    in_netns(|| {
        let (f, _p, _b, seen) = primary_back(None);
        sleep_until(seen + Duration::from_millis(2300));
        // The wall clock now reads an hour earlier: by it, the primary came back in the future.
        let out = run_shifted(&f, "-1h");
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("the wall clock moved by -3600"), "{log}");
        assert_eq!(web(&f), "127.0.0.1", "the delay froze: {log}");
    });
}

/// With the wall clock moved forward by `offset` from now on: a run `first_ms` after the
/// primary came back keeps the backup (the wall clock says the 2 s delay is over, CLOCK_BOOTTIME
/// says it is not), and one 2.3 s after gives the primary its traffic.
fn a_forward_step_never_shortens_the_delay(offset: &str, first_ms: u64) {
    let offset = offset.to_string();
    in_netns(move || {
        let (f, _p, _b, seen) = primary_back(None);
        sleep_until(seen + Duration::from_millis(first_ms));
        let out = run_shifted(&f, &offset);
        assert_exit(&out, 0);
        assert_eq!(
            web(&f),
            "127.0.0.2",
            "the delay ended early: {}",
            stderr(&out)
        );
        sleep_until(seen + Duration::from_millis(2300));
        let out = run_shifted(&f, &offset);
        assert_exit(&out, 0);
        assert_eq!(web(&f), "127.0.0.1", "{}", stderr(&out));
    });
}

#[test]
fn a_wall_clock_set_forward_never_shortens_the_delay() {
    // An hour later by the wall clock, half a second by CLOCK_BOOTTIME.
    a_forward_step_never_shortens_the_delay("+1h", 500);
}

/// A forward step of the wall clock shorter than a second (an NTP step of 0.9 s) does not
/// shorten the delay either: every disagreement between the two clocks above a few
/// milliseconds is compensated.
#[test]
fn a_wall_clock_step_of_under_a_second_never_shortens_the_delay() {
    // 1.3 s after the primary came back, the wall clock says 2.2 s.
    a_forward_step_never_shortens_the_delay("+0.9", 1300);
}
