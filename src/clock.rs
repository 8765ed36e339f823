//! The clocks a run reads. Rules that count time (`preempt_delay_s`, `since`) run on a timeline
//! in Unix milliseconds that wall-clock jumps do not move: between two runs of one boot, the
//! time that passed is taken from CLOCK_BOOTTIME, which never jumps; when the wall clock
//! disagrees with it (an admin or NTP set it back or forward), the stored times are shifted by
//! the jump so that durations stay what they were. After a reboot only the wall clock spans
//! the gap.

use crate::model::ClockMark;
use std::time::SystemTime;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The wall clock, CLOCK_BOOTTIME and the boot id, now.
pub fn mark() -> ClockMark {
    let wall_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ClockMark {
        boot_id: boot_id(),
        boottime_ms: boottime_ms(),
        wall_ms,
    }
}

fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_BOOTTIME exists since Linux 2.6.39.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The kernel's boot id; `None` where /proc/sys is hidden (the service's `ProcSubset=pid`).
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_string())
}

/// The largest disagreement between the two clocks that is not taken for a jump: both are read
/// back to back, and NTP slews them alike, so anything above a few milliseconds is a step.
const TOLERANCE_MS: i128 = 5;

/// By how many milliseconds the wall clock jumped since `previous` was marked (0 if it did not,
/// within a few milliseconds, or if the machine rebooted since). Adding this to every time stored at
/// `previous` puts them on today's wall clock with the durations since then as CLOCK_BOOTTIME
/// measured them.
///
/// Same boot: the boot ids match, or, where they cannot be read, CLOCK_BOOTTIME has not gone
/// back. Without boot ids a reboot after a longer uptime looks like the same boot; the time
/// CLOCK_BOOTTIME then measures is shorter than the real one, so a delay can only last longer,
/// never end early.
pub fn jump_ms(previous: Option<&ClockMark>, now: &ClockMark) -> i64 {
    let Some(p) = previous else { return 0 };
    let same_boot = match (&p.boot_id, &now.boot_id) {
        (Some(a), Some(b)) => a == b && now.boottime_ms >= p.boottime_ms,
        _ => now.boottime_ms >= p.boottime_ms,
    };
    if !same_boot {
        return 0;
    }
    let expected = p.wall_ms as i128 + (now.boottime_ms - p.boottime_ms) as i128;
    let jump = now.wall_ms as i128 - expected;
    if jump.abs() <= TOLERANCE_MS {
        0
    } else {
        jump.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(boot: &str, boottime_ms: u64, wall_ms: u64) -> ClockMark {
        ClockMark {
            boot_id: Some(boot.into()),
            boottime_ms,
            wall_ms,
        }
    }

    #[test]
    fn a_jump_is_the_wall_clock_against_boottime() {
        let before = at("a", 10_000, 100_000_000);
        // 5 s later by both clocks: no jump.
        assert_eq!(jump_ms(Some(&before), &at("a", 15_000, 100_005_000)), 0);
        // Set back by an hour: -3,600,000 (5 s passed).
        assert_eq!(
            jump_ms(Some(&before), &at("a", 15_000, 96_405_000)),
            -3_600_000
        );
        assert_eq!(
            jump_ms(Some(&before), &at("a", 15_000, 107_205_000)),
            7_200_000
        );
        // Rebooted: the wall clock is all there is.
        assert_eq!(jump_ms(Some(&before), &at("b", 15_000, 9_000_000)), 0);
        let no_id = |b, w| ClockMark {
            boot_id: None,
            boottime_ms: b,
            wall_ms: w,
        };
        assert_eq!(
            jump_ms(Some(&no_id(10_000, 1_000_000)), &no_id(5_000, 9_000_000)),
            0
        );
        assert_eq!(jump_ms(None, &at("a", 1, 1)), 0);
    }

    #[test]
    fn a_step_of_under_a_second_is_a_jump_too() {
        let before = at("a", 10_000, 100_000_000);
        // 5 s by CLOCK_BOOTTIME, 5.9 s by the wall clock: stepped forward by 0.9 s.
        assert_eq!(jump_ms(Some(&before), &at("a", 15_000, 100_005_900)), 900);
        assert_eq!(jump_ms(Some(&before), &at("a", 15_000, 100_004_500)), -500);
        // Reads a few milliseconds apart are no jump.
        assert_eq!(jump_ms(Some(&before), &at("a", 15_000, 100_005_004)), 0);
    }

    #[test]
    fn the_clocks_are_read() {
        let m = mark();
        assert!(m.wall_ms > 1_700_000_000_000 && m.boottime_ms > 0, "{m:?}");
    }
}
