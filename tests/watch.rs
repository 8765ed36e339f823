//! `nftables-failover watch` end to end: a router namespace with two veth uplinks to two ISP
//! namespaces, the real binary watching in the router with real `nft` reloads. Every config
//! has `fall: 3` and `--interval 10s`: without the kernel's word a switch takes at least 20 s
//! (three runs), so only the event can explain one within seconds. Documentation addresses
//! only; no namespace has a link to the host.
//!
//! ```text
//!  [router] wan1 198.51.100.2/29  ── r0 198.51.100.1:80  [isp1]
//!           wan2 198.51.100.10/29 ── r0 198.51.100.9:80  [isp2]
//! ```

mod common;

use common::*;
use std::fs;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);
/// Far below what `fall: 3` at `--interval 10s` allows (20 s), far above what the event takes.
const QUICK: Duration = Duration::from_secs(5);
const ISP1: &str = "198.51.100.1";
const ISP2: &str = "198.51.100.9";

struct Topology {
    prefix: String,
    _listeners: Vec<TcpListener>,
}

impl Topology {
    fn new() -> Topology {
        let prefix = format!(
            "nfw{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ns = |n: &str| format!("{prefix}{n}");
        for n in ["router", "isp1", "isp2"] {
            sh(&format!("ip netns add {}", ns(n)));
            sh(&format!("ip -n {} link set lo up", ns(n)));
        }
        let r = ns("router");
        for (i, (local, isp)) in [("198.51.100.2", ISP1), ("198.51.100.10", ISP2)]
            .iter()
            .enumerate()
        {
            let isp_ns = ns(&format!("isp{}", i + 1));
            sh(&format!(
                "ip -n {r} link add wan{n} type veth peer name r0 netns {isp_ns}",
                n = i + 1
            ));
            sh(&format!(
                "ip -n {r} addr add {local}/29 dev wan{n} && ip -n {r} link set wan{n} up",
                n = i + 1
            ));
            sh(&format!(
                "ip -n {isp_ns} addr add {isp}/29 dev r0 && ip -n {isp_ns} link set r0 up"
            ));
        }
        let listeners = ["isp1", "isp2"]
            .iter()
            .zip([ISP1, ISP2])
            .map(|(n, ip)| within_netns(&ns(n), || TcpListener::bind((ip, 80)).unwrap()))
            .collect();
        Topology {
            prefix,
            _listeners: listeners,
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ip(&self, ns: &str, args: &str) {
        sh(&format!("ip -n {} {args}", self.ns(ns)));
    }

    fn ruleset(&self) -> String {
        sh(&format!(
            "ip netns exec {} nft list ruleset",
            self.ns("router")
        ))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in ["router", "isp1", "isp2"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

/// The watcher in the router namespace; killed on drop if a test fails before stopping it.
struct Watcher {
    child: Child,
    log: std::path::PathBuf,
}

impl Watcher {
    fn start(t: &Topology, f: &Fixture, extra: &[&str]) -> Watcher {
        let log = f.dir.path().join("watch.log");
        let router = t.ns("router");
        let mut cmd = f.command(&["ip", "netns", "exec", &router], &f.reload());
        cmd.args(extra)
            .args(["watch", "--interval", "10s"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        Watcher {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; returns the exit code and how long it took.
    fn stop(&mut self) -> (Option<i32>, Duration) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = std::time::Instant::now();
        let took = wait_until(Duration::from_secs(10), || {
            self.child.try_wait().unwrap().is_some()
        });
        let status = self.child.wait().unwrap();
        (status.code(), took.unwrap_or(start.elapsed()))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(paths: &str, extra_vars: &str) -> Fixture {
    let f = Fixture::new();
    // The hook keeps the environment of the last change, to see the reason it was given.
    let hook = format!(
        "env | grep ^FAILOVER_ > {}",
        f.dir.path().join("hook.env").display()
    );
    f.write_config(&format!(
        r#"{{"settings": {{"on_change": {{"command": ["/bin/sh", "-c", {hook:?}]}}}},
            "failover": {{
            "uplink": {{"ip4": ["{ISP1}", "{ISP2}"], "port": 80, "fall": 3, "rise": 1,
                        "paths": {paths}}}{extra_vars}
        }}}}"#
    ));
    f.write_main("  ip daddr $uplink_v4 counter");
    f
}

/// Waits until both the include and the kernel's ruleset point `uplink` at `ip`.
fn switched_to(t: &Topology, f: &Fixture, ip: &str) -> Option<Duration> {
    // The include first (a file read), then the kernel (an nft run): polling nft alone would
    // keep a core busy and slow down the run it waits for.
    wait_until(QUICK, || {
        f.output_text()
            .is_some_and(|text| define(&text, "uplink_v4") == Some(ip))
            && t.ruleset().contains(&format!("ip daddr {ip} counter"))
    })
}

fn started(t: &Topology, f: &Fixture, w: &Watcher) {
    assert!(
        switched_to(t, f, ISP1).is_some(),
        "the first run did not render ISP 1:\n{}",
        w.log()
    );
    // Let the first run end (it waits for every check, then publishes and saves the state).
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn carrier_loss_fails_over_at_once_and_back_when_it_returns() {
    let t = Topology::new();
    let f = fixture(r#"[{"interface": "wan1"}, {"interface": "wan2"}]"#, "");
    let mut w = Watcher::start(&t, &f, &[]);
    started(&t, &f, &w);

    // The ISP's end of the cable goes down: the router's wan1 loses its carrier.
    t.ip("isp1", "link set r0 down");
    let took = switched_to(&t, &f, ISP2);
    assert!(took.is_some(), "no failover on carrier loss:\n{}", w.log());
    eprintln!("carrier lost -> ISP 2 in {:?}\n{}", took.unwrap(), w.log());
    assert!(
        w.log()
            .contains("(198.51.100.1:80 [dev wan1] carrier lost on wan1)"),
        "{}",
        w.log()
    );
    // The reason the hook and MQTT get says what happened, not a count of checks.
    let hook = || fs::read_to_string(f.dir.path().join("hook.env")).unwrap_or_default();
    let said = "FAILOVER_REASON_TEXT=preferred candidate 198.51.100.1:80 [dev wan1] down: \
                carrier lost on wan1";
    assert!(
        wait_until(QUICK, || hook().contains(said)).is_some(),
        "{}",
        hook()
    );

    t.ip("isp1", "link set r0 up");
    let took = switched_to(&t, &f, ISP1);
    assert!(
        took.is_some(),
        "no failback when the carrier returned:\n{}",
        w.log()
    );

    let (code, took) = w.stop();
    assert_eq!(code, Some(0), "{}", w.log());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
}

#[test]
fn a_source_address_removed_from_the_router_fails_over() {
    let t = Topology::new();
    let f = fixture(
        r#"[{"source": "198.51.100.2"}, {"source": "198.51.100.10"}]"#,
        "",
    );
    let w = Watcher::start(&t, &f, &[]);
    started(&t, &f, &w);
    t.ip("router", "addr del 198.51.100.2/29 dev wan1");
    assert!(switched_to(&t, &f, ISP2).is_some(), "{}", w.log());
    assert!(
        w.log()
            .contains("source address 198.51.100.2 is not on this host"),
        "{}",
        w.log()
    );
}

#[test]
fn a_deleted_interface_fails_over_and_other_variables_are_left_alone() {
    let t = Topology::new();
    // A variable without an interface or source path is never judged by the kernel's word.
    let f = fixture(
        r#"[{"interface": "wan1"}, {"interface": "wan2"}]"#,
        &format!(r#", "plain": {{"ip4": ["{ISP1}", "{ISP2}"], "port": 80, "fall": 3}}"#),
    );
    let w = Watcher::start(&t, &f, &[]);
    started(&t, &f, &w);
    t.ip("router", "link del wan1");
    assert!(switched_to(&t, &f, ISP2).is_some(), "{}", w.log());
    assert!(w.log().contains("interface wan1 gone"), "{}", w.log());
    // ISP 1 is unreachable now, but fall 3 at a 10 s interval holds `plain` where it is.
    let text = f.output_text().unwrap();
    assert_eq!(define(&text, "plain_v4"), Some(ISP1), "{text}");
}

#[test]
fn a_storm_of_route_changes_costs_a_few_runs() {
    let t = Topology::new();
    let f = fixture(r#"[{"interface": "wan1"}, {"interface": "wan2"}]"#, "");
    let w = Watcher::start(&t, &f, &[]);
    started(&t, &f, &w);
    let batch = f.dir.path().join("routes");
    let lines: String = (0..1000)
        .map(|i| format!("route add 10.{}.{}.0/24 via {ISP2}\n", i / 256, i % 256))
        .collect();
    fs::write(&batch, lines).unwrap();
    let before = w.log().matches("running now").count();
    sh(&format!(
        "ip -n {} -batch {}",
        t.ns("router"),
        batch.display()
    ));
    std::thread::sleep(Duration::from_millis(1500));
    let runs = w.log().matches("running now").count() - before;
    assert!(
        (1..=8).contains(&runs),
        "1,000 route changes caused {runs} runs:\n{}",
        w.log()
    );
}

#[test]
fn watch_refuses_a_dry_run() {
    let f = fixture("[{}, {}]", "");
    let mut cmd = f.command(&[], &f.reload());
    cmd.args(["--dry-run", "watch"]);
    let out = output_within(cmd, Duration::from_secs(10));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("--dry-run"), "{}", stderr(&out));
}

/// Interfaces named by their alternative names (which udev gives many interfaces): the
/// kernel's word finds them, so a carrier loss still fails over, and neither is taken for gone.
#[test]
fn uplinks_named_by_their_altnames_fail_over_on_carrier_loss() {
    let t = Topology::new();
    t.ip("router", "link property add dev wan1 altname upA");
    t.ip("router", "link property add dev wan2 altname upB");
    let f = fixture(r#"[{"interface": "upA"}, {"interface": "upB"}]"#, "");
    let w = Watcher::start(&t, &f, &[]);
    started(&t, &f, &w);
    assert!(!w.log().contains("gone"), "{}", w.log());

    t.ip("isp1", "link set r0 down");
    assert!(
        switched_to(&t, &f, ISP2).is_some(),
        "no failover on carrier loss under an altname:\n{}",
        w.log()
    );
    assert!(w.log().contains("carrier lost on upA"), "{}", w.log());
    t.ip("isp1", "link set r0 up");
    assert!(switched_to(&t, &f, ISP1).is_some(), "{}", w.log());
}
