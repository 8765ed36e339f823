//! Checks for every candidate, all at once: a TCP connect to the candidate itself, or, with a
//! `check`, TCP connects or ICMP echoes to its targets through its path (see `path`).
//!
//! A run must take about one timeout however many candidates there are, so every connect is in
//! flight concurrently (bounded by the open-file limit), and the run stops waiting as soon as every
//! variable is decided: the caller says when no result still pending could change its choice
//! (`select::Inputs::decided`), so stopping early never changes a decision.

pub mod icmp;
pub mod path;
pub mod tcp;

use crate::config::check::{Method, ProbePath};
use crate::config::{Config, Family, PerFamily};
use crate::model::{self, DownReason, Health, Results};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

/// One probe: a target of one candidate, with where its result goes.
struct Job {
    /// Index into the candidate tallies.
    candidate: usize,
    target: SocketAddr,
    method: Method,
    path: Option<Arc<ProbePath>>,
    timeout: Duration,
    /// `max_latency_ms`, if lower than the timeout: waiting longer cannot make it count.
    limit: Option<Duration>,
    /// ICMP on raw sockets: where the replies are received.
    hub: Option<Arc<icmp::Hub>>,
}

/// A candidate's answers so far, until its quorum is reached or can no longer be.
struct Tally {
    variable: usize,
    family: Family,
    index: usize,
    targets: usize,
    quorum: usize,
    /// Without a `check`: one TCP connect to the candidate itself, whose result is passed
    /// through unchanged (the reference behaviour).
    plain: bool,
    up: Vec<Duration>,
    down: Vec<String>,
}

impl Tally {
    /// The candidate's health once it is known: up with `quorum` answers, down once so many
    /// targets failed that the quorum is out of reach.
    fn add(&mut self, target: SocketAddr, method: Method, health: Health) -> Option<Health> {
        if self.plain {
            return Some(health);
        }
        match health {
            Health::Up { latency } => self.up.push(latency),
            down => self
                .down
                .push(format!("{} {down}", show_target(target, method))),
        }
        if self.up.len() >= self.quorum {
            // The latency at which the quorum was reached.
            let latency = self.up.iter().copied().max().unwrap_or_default();
            Some(Health::Up { latency })
        } else if self.down.len() > self.targets - self.quorum {
            Some(Health::Down(DownReason::Error(format!(
                "{}/{} targets down, quorum {}: {}",
                self.down.len(),
                self.targets,
                self.quorum,
                self.down.join(", ")
            ))))
        } else {
            None
        }
    }
}

fn show_target(target: SocketAddr, method: Method) -> String {
    match method {
        Method::Tcp => target.to_string(),
        Method::Icmp => format!("icmp {}", target.ip()),
    }
}

/// Every check of a run, started at once: results so far, and the checks still in flight.
/// A run waits with [`Checks::until_decided`] only until its choices are final, applies them,
/// and then lets the rest come in with [`Checks::rest`], so that every candidate, standbys
/// included, has a result each run while a switch never waits for a slow standby.
pub struct Checks {
    results: Results,
    tallies: Vec<Tally>,
    rx: mpsc::UnboundedReceiver<(Job, Health)>,
    /// Dropping the set aborts the checks still in flight.
    tasks: JoinSet<()>,
    _hubs: Hubs,
}

/// Starts a check of every candidate. Each variable's `timeout_ms` applies unless `timeout`
/// overrides it for all. A candidate with a `check` is probed at each of its targets through its
/// path and counts once its quorum is reached or out of reach, so the caller sees one result
/// per candidate either way.
///
/// Fails only when the host refuses what the config asks for (a capability or sysctl for
/// `SO_MARK` or ICMP): that is not a verdict on any uplink, so nothing may switch on it.
/// Must be called inside a tokio runtime, which runs the checks.
///
/// `known` holds results settled before any probe (the kernel's word, see `links`): those
/// candidates are not probed, their result stands.
pub fn start(
    config: &Config,
    timeout: Option<Duration>,
    max_in_flight: usize,
    known: Results,
) -> io::Result<Checks> {
    let results = known;
    let (tallies, mut jobs) = plan(config, timeout, &results);
    let kinds = preflight(&jobs)?;
    let mut tasks = JoinSet::new();
    let mut hubs = Hubs(PerFamily::default());
    for family in Family::ALL {
        if kinds[family] == Some(icmp::Kind::Raw) {
            hubs.0[family] = Some(icmp::Hub::start(family)?);
        }
    }
    for job in jobs.iter_mut().filter(|j| j.method == Method::Icmp) {
        let family = Family::of(&job.target.ip());
        job.hub = hubs.0[family].clone();
    }
    // Rank order: every variable's first candidate, then every second one, ... so that with
    // more candidates than sockets, the checks that decide variables start first.
    jobs.sort_by_key(|j| tallies[j.candidate].index);

    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (tx, rx) = mpsc::unbounded_channel();
    // Checks that start at once share one deadline: opening thousands of sockets one after
    // another takes a noticeable fraction of a second, which must not add to the run time.
    // Only a check that had to wait for a free socket gets a fresh full timeout.
    let start = Instant::now();
    for job in jobs {
        let (permits, tx) = (permits.clone(), tx.clone());
        let wait = job.limit.unwrap_or(job.timeout);
        let deadline = start + wait;
        tasks.spawn(async move {
            let (_permit, until) = match permits.clone().try_acquire_owned() {
                Ok(p) => (p, deadline),
                Err(_) => match permits.acquire_owned().await {
                    Ok(p) => (p, Instant::now() + wait),
                    Err(_) => return,
                },
            };
            let health = probe(&job, until).await;
            let _ = tx.send((job, health));
        });
    }
    drop(tx);
    Ok(Checks {
        results,
        tallies,
        rx,
        tasks,
        _hubs: hubs,
    })
}

impl Checks {
    /// The results so far: `None` for a candidate whose check has not answered yet.
    pub fn results(&self) -> &Results {
        &self.results
    }

    /// Counts one probe's answer; returns the candidate's (variable, family) if that settled it.
    fn take(&mut self, job: Job, health: Health) -> Option<(usize, Family)> {
        let tally = &mut self.tallies[job.candidate];
        let (variable, family, index) = (tally.variable, tally.family, tally.index);
        let outcome = &mut self.results[variable][family][index];
        if outcome.is_some() {
            return None; // this candidate's quorum was already settled
        }
        *outcome = Some(tally.add(job.target, job.method, health)?);
        Some((variable, family))
    }

    /// Waits until `decided(variable, family, results so far)` holds for every variable and
    /// family, every check has answered, or `stop` resolves (a stop signal).
    pub async fn until_decided(
        &mut self,
        decided: impl Fn(usize, Family, &[Option<Health>]) -> bool,
        stop: impl Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut done: Vec<PerFamily<bool>> = self
            .results
            .iter()
            .enumerate()
            .map(|(vi, per_var)| PerFamily::from_fn(|f| decided(vi, f, &per_var[f])))
            .collect();
        let mut undecided = done.iter().flatten().filter(|d| !**d).count();
        // Results are taken in batches: whatever has arrived by the time the previous batch is
        // counted. Deciding looks at a family's whole candidate list, so doing it once per
        // batch rather than once per result keeps a variable with tens of thousands of
        // candidates linear: the more time deciding takes, the more results the next batch holds.
        let mut touched: Vec<(usize, Family)> = Vec::new();
        while undecided > 0 {
            let (job, health) = tokio::select! {
                answer = self.rx.recv() => match answer {
                    Some(answer) => answer,
                    None => return,
                },
                () = &mut stop => return,
            };
            let mut next = Some((job, health));
            while let Some((job, health)) = next {
                if let Some((v, f)) = self.take(job, health)
                    && !done[v][f]
                {
                    touched.push((v, f));
                }
                next = self.rx.try_recv().ok();
            }
            touched.sort_unstable();
            touched.dedup();
            for (v, f) in touched.drain(..) {
                if decided(v, f, &self.results[v][f]) {
                    done[v][f] = true;
                    undecided -= 1;
                }
            }
        }
    }

    /// Waits for every check still in flight (each ends at its own timeout), or until `stop`
    /// resolves (a stop signal); returns the results, complete unless stopped. The checks are
    /// the ones started with the run, so this never takes longer than one timeout from then.
    pub async fn rest(&mut self, stop: impl Future<Output = ()>) -> &Results {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                answer = self.rx.recv() => match answer {
                    Some((job, health)) => {
                        self.take(job, health);
                    }
                    None => break,
                },
                () = &mut stop => break,
            }
        }
        self.tasks.abort_all();
        &self.results
    }
}

/// Checks candidates until `decided(variable, family, results so far)` holds for every variable
/// and family; candidates not needed for a decision may be left unchecked (`None`). See
/// [`start`].
pub async fn check_all(
    config: &Config,
    timeout: Option<Duration>,
    max_in_flight: usize,
    decided: impl Fn(usize, Family, &[Option<Health>]) -> bool,
) -> io::Result<Results> {
    let mut checks = start(config, timeout, max_in_flight, model::empty_results(config))?;
    checks.until_decided(decided, std::future::pending()).await;
    Ok(checks.results)
}

/// The run's ICMP receivers per family; their reader threads end with the run, however it ends.
struct Hubs(PerFamily<Option<Arc<icmp::Hub>>>);

impl Drop for Hubs {
    fn drop(&mut self) {
        for hub in self.0.iter().flatten() {
            hub.stop();
        }
    }
}

/// One tally per candidate and one job per target of each, but for the candidates `known`.
fn plan(config: &Config, timeout: Option<Duration>, known: &Results) -> (Vec<Tally>, Vec<Job>) {
    let mut tallies = Vec::new();
    let mut jobs = Vec::new();
    for (vi, var) in config.variables.iter().enumerate() {
        let timeout = timeout.unwrap_or(Duration::from_millis(var.policy.timeout_ms));
        let paths: Option<Vec<Arc<ProbePath>>> = var
            .uplink
            .paths
            .as_ref()
            .map(|p| p.iter().cloned().map(Arc::new).collect());
        for family in Family::ALL {
            for (index, ip) in var.addrs(family).iter().enumerate() {
                if known[vi][family][index].is_some() {
                    continue;
                }
                let path = paths.as_ref().map(|p| p[index].clone());
                let check = var.uplink.checks.as_ref().map(|c| &c[index]);
                let targets: Vec<SocketAddr> = match check {
                    Some(c) => c.targets(family).collect(),
                    None => vec![SocketAddr::new(*ip, var.port)],
                };
                let method = check.map_or(Method::Tcp, |c| c.method);
                let limit = check
                    .and_then(|c| c.max_latency_ms)
                    .map(Duration::from_millis)
                    .filter(|l| *l < timeout);
                for target in &targets {
                    jobs.push(Job {
                        candidate: tallies.len(),
                        target: *target,
                        method,
                        path: path.clone(),
                        timeout,
                        limit,
                        hub: None,
                    });
                }
                tallies.push(Tally {
                    variable: vi,
                    family,
                    index,
                    targets: targets.len(),
                    quorum: check.map_or(1, |c| c.quorum),
                    plain: check.is_none(),
                    up: Vec::new(),
                    down: Vec::new(),
                });
            }
        }
    }
    (tallies, jobs)
}

/// Opens one socket per distinct method, family and path the jobs need, so that a missing
/// capability or sysctl stops the run with one clear error instead of marking every uplink
/// down. Other errors (a missing interface, an address not configured) are left to the probes:
/// they say something about that uplink. Returns per family which ICMP sockets the run uses.
fn preflight(jobs: &[Job]) -> io::Result<PerFamily<Option<icmp::Kind>>> {
    let mut kinds = PerFamily::default();
    let mut seen: Vec<(Method, bool, Option<&ProbePath>)> = Vec::new();
    for job in jobs {
        let key = (job.method, job.target.is_ipv4(), job.path.as_deref());
        if seen.contains(&key) || (job.method == Method::Tcp && job.path.is_none()) {
            continue;
        }
        seen.push(key);
        let family = Family::of(&job.target.ip());
        let opened = match job.method {
            Method::Tcp => tcp::socket(job.target, job.path.as_deref().unwrap()).map(drop),
            Method::Icmp => icmp::open(family).and_then(|(sock, kind)| {
                kinds[family] = Some(kind);
                match job.path.as_deref() {
                    Some(p) => path::apply(&sock, p, family),
                    None => Ok(()),
                }
            }),
        };
        if let Err(e) = opened
            && e.kind() == ErrorKind::PermissionDenied
        {
            return Err(e);
        }
    }
    Ok(kinds)
}

/// One probe of one target, as a `Health`; a latency limit turns a slow answer into down.
async fn probe(job: &Job, until: Instant) -> Health {
    let start = Instant::now();
    let health = match job.method {
        Method::Tcp => tcp_until(job.target, job.path.as_deref(), until, job.timeout).await,
        // Boxed: the echo's receive buffer would otherwise make every probe task, TCP ones
        // included, that much larger (10,000 tasks: +15 MiB).
        Method::Icmp => {
            match Box::pin(icmp::echo(
                job.target.ip(),
                job.path.as_deref(),
                until,
                job.hub.as_deref(),
            ))
            .await
            {
                Ok(Some(latency)) => Health::Up { latency },
                Ok(None) => Health::Down(DownReason::Timeout(job.timeout)),
                Err(e) => Health::Down(DownReason::Error(describe_io_error(&e))),
            }
        }
    };
    match (job.limit, health) {
        (Some(limit), Health::Down(DownReason::Timeout(_))) if start.elapsed() >= limit => {
            Health::Down(DownReason::Error(format!(
                "no answer within {} ms (max_latency_ms)",
                limit.as_millis()
            )))
        }
        (Some(limit), Health::Up { latency }) if latency > limit => {
            Health::Down(DownReason::Error(format!(
                "answered in {:.1} ms, over max_latency_ms {}",
                latency.as_secs_f64() * 1e3,
                limit.as_millis()
            )))
        }
        (_, health) => health,
    }
}

/// One TCP connect: up once the handshake completes, down on refusal, error or timeout.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Health {
    tcp_until(addr, None, Instant::now() + timeout, timeout).await
}

/// `check` through `path`, with an absolute deadline; `timeout` is what a timeout is
/// reported as.
async fn tcp_until(
    addr: SocketAddr,
    path: Option<&ProbePath>,
    until: Instant,
    timeout: Duration,
) -> Health {
    let start = Instant::now();
    match tokio::time::timeout_at(until.into(), tcp::connect(addr, path)).await {
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
pub(crate) fn describe_io_error(e: &std::io::Error) -> String {
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
        let results = runtime()
            .block_on(check_all(
                &config,
                Some(Duration::from_secs(2)),
                8,
                |_, _, o| o.iter().all(Option::is_some),
            ))
            .unwrap();
        let v4 = &results[0][Family::V4];
        assert_eq!(v4[0], Some(Health::Down(DownReason::Refused)));
        assert!(v4[1].as_ref().unwrap().is_up());
    }

    fn tally(targets: usize, quorum: usize, plain: bool) -> Tally {
        Tally {
            variable: 0,
            family: Family::V4,
            index: 0,
            targets,
            quorum,
            plain,
            up: Vec::new(),
            down: Vec::new(),
        }
    }

    #[test]
    fn a_candidate_is_known_once_its_quorum_is_reached_or_out_of_reach() {
        let t: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let up = |ms| Health::Up {
            latency: Duration::from_millis(ms),
        };
        let down = || Health::Down(DownReason::Refused);
        // 2 of 3: one answer is not enough, the second decides, with the slower latency.
        let mut q = tally(3, 2, false);
        assert_eq!(q.add(t, Method::Tcp, up(5)), None);
        assert_eq!(q.add(t, Method::Tcp, up(9)), Some(up(9)));
        // 2 of 3: one failure leaves the quorum reachable, the second does not.
        let mut q = tally(3, 2, false);
        assert_eq!(q.add(t, Method::Tcp, down()), None);
        assert_eq!(q.add(t, Method::Tcp, up(1)), None);
        let Some(Health::Down(DownReason::Error(why))) = q.add(t, Method::Icmp, down()) else {
            panic!("quorum out of reach");
        };
        assert_eq!(
            why,
            "2/3 targets down, quorum 2: 192.0.2.1:80 connection refused, icmp 192.0.2.1 connection refused"
        );
        // Without a check, the one result passes through unchanged.
        assert_eq!(tally(1, 1, true).add(t, Method::Tcp, down()), Some(down()));
    }

    #[test]
    fn icmp_and_tcp_targets_over_ipv6_loopback() {
        let listener = std::net::TcpListener::bind("[::1]:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let text = format!(
            r#"{{"failover": {{
                "t": {{"ip6": ["2001:db8::1"], "check": {{"targets": ["[::1]:{port}"]}}}},
                "i": {{"ip6": ["2001:db8::1"], "check": {{"method": "icmp", "targets": ["::1"]}}}}
            }}}}"#
        );
        let config = crate::config::parse(&text, std::path::Path::new("f")).unwrap();
        let results = runtime()
            .block_on(check_all(
                &config,
                Some(Duration::from_secs(2)),
                8,
                |_, _, o| o.iter().all(Option::is_some),
            ))
            .unwrap();
        assert!(results[0][Family::V6][0].as_ref().unwrap().is_up());
        assert!(results[1][Family::V6][0].as_ref().unwrap().is_up());
    }

    #[test]
    fn fd_limit_leaves_a_reserve() {
        let n = raise_fd_limit();
        assert!(n >= 1 && n as u64 <= MAX_IN_FLIGHT);
    }
}
