//! Runs the benchmarks' smoke modes (`bench/run --smoke`, `bench/watch --smoke`) against the
//! binary cargo just built, so the benchmarks cannot rot unnoticed. It checks only that the benchmark ran, validated its own
//! measurements (it exits non-zero when one is invalid) and printed its tables: timing claims
//! belong to the benchmark's report, never to a test on a shared CI machine.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The smoke mode takes a few seconds; this only guards against a hang.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `bench/NAME --smoke`; returns its exit status, stdout and stderr, or `None` when not
/// root (the benchmarks create network namespaces and nft rules; CI runs as root, so there
/// they always run, and only an unprivileged developer run skips them, saying so).
fn smoke(name: &str) -> Option<(std::process::ExitStatus, String, String)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping bench/{name} smoke test: needs root (network namespaces, nft)");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new("python3")
            .arg(root.join("bench").join(name))
            .args([
                "--smoke",
                "--binary",
                env!("CARGO_BIN_EXE_nftables-failover"),
            ])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            // Own process group, so a hang can be killed with everything the benchmark started
            // (it re-executes itself under `unshare`).
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 bench/{name}: {e}"))
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            // SAFETY: kill has no memory-safety preconditions; the group is the child's own.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "bench/{name} --smoke did not finish within {LIMIT:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Some((
        status,
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap(),
    ))
}

#[test]
fn bench_smoke_mode_runs_and_prints_its_tables() {
    let Some((status, stdout, stderr)) = smoke("run") else {
        return;
    };
    assert!(
        status.success(),
        "bench/run --smoke failed ({status}):\n{stderr}\n{stdout}"
    );
    for heading in [
        "### Process start",
        "### Steady state",
        "### Blackholed candidates",
        "### Uplinks",
        "### Failover latency",
        "### Apply time",
        "### Live mode against reload",
    ] {
        assert!(
            stdout.contains(heading),
            "no {heading:?} table in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("| 100 up | 50 | 100 |"),
        "no 100-candidate row in:\n{stdout}"
    );
    assert!(
        stderr.lines().any(|l| l == "bench: OK"),
        "no 'bench: OK' in:\n{stderr}"
    );
}

#[test]
fn watch_bench_smoke_mode_runs_and_prints_its_tables() {
    let Some((status, stdout, stderr)) = smoke("watch") else {
        return;
    };
    assert!(
        status.success(),
        "bench/watch --smoke failed ({status}):\n{stderr}\n{stdout}"
    );
    for row in [
        "| watch, reload | 2 |",
        "| watch, live | 2 |",
        "| interval runs | RSS |",
        "Storm: 1,000 route changes",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
}
