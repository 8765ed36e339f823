//! TCP connect checks for every candidate, all at once.
//!
//! A run must take about one timeout however many candidates there are, so every connect is in
//! flight concurrently (bounded by the open-file limit), and the run stops waiting as soon as every
//! variable is decided: the caller says when no result still pending could change its choice
//! (`select::Inputs::decided`), so stopping early never changes a decision.

use crate::config::{Config, Family};
use crate::select::{self, DownReason, Health, Results};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// File descriptors kept free for everything that is not a probe socket.
const FD_RESERVE: u64 = 64;
/// More sockets in flight than this gains nothing and only costs kernel memory.
const MAX_IN_FLIGHT: u64 = 16_384;

/// Raises the soft open-file limit to the hard limit and returns how many connects may be
/// in flight at once. A 1024 soft limit is the default for services, far below what a
/// config with thousands of candidates needs.
pub fn raise_fd_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    let soft = if lim.rlim_cur == 0 {
        1024
    } else {
        lim.rlim_cur
    };
    soft.saturating_sub(FD_RESERVE).clamp(1, MAX_IN_FLIGHT) as usize
}

/// One candidate to check, with where its result goes.
struct Target {
    variable: usize,
    family: Family,
    index: usize,
    addr: SocketAddr,
    timeout: Duration,
}

/// Checks candidates until `decided(variable, family, results so far)` holds for every variable
/// and family. Candidates not needed for a decision may be left unchecked (`None`). Each
/// variable's `timeout_ms` applies unless `timeout` overrides it for all.
pub async fn check_all(
    config: &Config,
    timeout: Option<Duration>,
    max_in_flight: usize,
    decided: impl Fn(usize, Family, &[Option<Health>]) -> bool,
) -> Results {
    let mut results = select::empty_results(config);
    let mut undecided: usize = 0;
    for (vi, per_var) in results.iter().enumerate() {
        for family in Family::ALL {
            undecided += usize::from(!decided(vi, family, &per_var[family as usize]));
        }
    }
    if undecided == 0 {
        return results;
    }

    // Rank order: every variable's first candidate, then every second one, ... so that with
    // more candidates than sockets, the checks that decide variables start first.
    let mut targets: Vec<Target> = Vec::new();
    for (vi, var) in config.variables.iter().enumerate() {
        let timeout = timeout.unwrap_or(Duration::from_millis(var.policy.timeout_ms));
        for family in Family::ALL {
            for (index, ip) in var.addrs(family).iter().enumerate() {
                targets.push(Target {
                    variable: vi,
                    family,
                    index,
                    addr: SocketAddr::new(*ip, var.port),
                    timeout,
                });
            }
        }
    }
    targets.sort_by_key(|t| t.index);

    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    // Checks that start at once share one deadline: opening thousands of sockets one after
    // another takes a noticeable fraction of a second, which must not add to the run time.
    // Only a check that had to wait for a free socket gets a fresh full timeout.
    let start = Instant::now();
    for target in targets {
        let (permits, tx) = (permits.clone(), tx.clone());
        let deadline = start + target.timeout;
        tasks.spawn(async move {
            let (_permit, until) = match permits.clone().try_acquire_owned() {
                Ok(p) => (p, deadline),
                Err(_) => match permits.acquire_owned().await {
                    Ok(p) => (p, Instant::now() + target.timeout),
                    Err(_) => return,
                },
            };
            let health = check_until(target.addr, until, target.timeout).await;
            let _ = tx.send((target, health));
        });
    }
    drop(tx);

    while let Some((t, health)) = rx.recv().await {
        let outcomes = &mut results[t.variable][t.family as usize];
        let was_decided = decided(t.variable, t.family, outcomes);
        outcomes[t.index] = Some(health);
        if !was_decided && decided(t.variable, t.family, outcomes) {
            undecided -= 1;
            if undecided == 0 {
                break;
            }
        }
    }
    // Dropping the set aborts the checks still waiting on lower-priority candidates.
    tasks.abort_all();
    results
}

/// One TCP connect: up once the handshake completes, down on refusal, error or timeout.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Health {
    check_until(addr, Instant::now() + timeout, timeout).await
}

/// `check` with an absolute deadline; `timeout` is what a timeout is reported as.
async fn check_until(addr: SocketAddr, until: Instant, timeout: Duration) -> Health {
    let start = Instant::now();
    match tokio::time::timeout_at(until.into(), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let latency = start.elapsed();
            // Close with RST, as HAProxy does for its checks: no FIN handshake and no TIME_WAIT
            // entry per check on the router, which a check every few seconds would pile up.
            let _ = stream.set_zero_linger();
            Health::Up { latency }
        }
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => Health::Down(DownReason::Refused),
        Ok(Err(e)) => Health::Down(DownReason::Error(describe_io_error(&e))),
        Err(_) => Health::Down(DownReason::Timeout(timeout)),
    }
}

/// The OS error text without Rust's " (os error N)" suffix, lower-case as in the rest of the log.
fn describe_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn up_and_refused_on_loopback() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let rt = runtime();
        assert!(rt.block_on(check(open, Duration::from_secs(2))).is_up());
        assert_eq!(
            rt.block_on(check(closed, Duration::from_secs(2))),
            Health::Down(DownReason::Refused)
        );
    }

    #[test]
    fn an_up_check_closes_with_a_reset_leaving_no_time_wait() {
        use std::io::Read;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(
            runtime()
                .block_on(check(addr, Duration::from_secs(2)))
                .is_up()
        );
        let (mut conn, _) = listener.accept().unwrap();
        let err = conn.read(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }

    #[test]
    fn check_all_fills_results_by_variable_family_and_index() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // 127.0.0.2 has no listener on that port: refused. 127.0.0.1 is up.
        let text = format!(
            r#"{{"failover": {{"a": {{"ip4": ["127.0.0.2", "127.0.0.1"], "port": {port}}}}}}}"#
        );
        let config = crate::config::parse(&text, std::path::Path::new("f")).unwrap();
        // Never decided early: every candidate is checked.
        let results = runtime().block_on(check_all(
            &config,
            Some(Duration::from_secs(2)),
            8,
            |_, _, o| o.iter().all(Option::is_some),
        ));
        let v4 = &results[0][Family::V4 as usize];
        assert_eq!(v4[0], Some(Health::Down(DownReason::Refused)));
        assert!(v4[1].as_ref().unwrap().is_up());
    }

    #[test]
    fn fd_limit_leaves_a_reserve() {
        let n = raise_fd_limit();
        assert!(n >= 1 && n as u64 <= MAX_IN_FLIGHT);
    }
}
