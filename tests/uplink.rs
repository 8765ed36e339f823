//! Uplink failover end to end, on a real kernel: a router namespace with two veth uplinks to
//! two "ISP" namespaces, each routing to a target host namespace, and a LAN namespace behind
//! the router. The real binary runs in the router with real `nft` reloads; probes leave
//! through each candidate's path (mark, source or interface). Only documentation addresses,
//! and no namespace has a link to the host.
//!
//! ```text
//!  lan 192.0.2.66 ── lan0 [router] wan1 198.51.100.2 ── 198.51.100.1 [isp1] 203.0.113.1 ── 203.0.113.2  [target]
//!                                 wan2 198.51.100.10 ── 198.51.100.9 [isp2] 203.0.113.9 ── 203.0.113.10 192.0.2.10-12:80
//!                                                                                                       192.0.2.20:8080
//! ```

mod common;

use common::*;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// How the router sends a candidate's probes (and its traffic) through uplink 1 or 2.
#[derive(Clone, Copy, Debug)]
enum Via {
    Mark,
    Source,
    Interface,
}

impl Via {
    fn path(self, uplink: u8) -> String {
        match (self, uplink) {
            (Via::Mark, n) => format!(r#"{{"mark": {n}}}"#),
            (Via::Source, 1) => r#"{"source": "198.51.100.2"}"#.into(),
            (Via::Source, _) => r#"{"source": "198.51.100.10"}"#.into(),
            (Via::Interface, n) => format!(r#"{{"interface": "wan{n}"}}"#),
        }
    }
}

/// The namespaces of one test, deleted on drop even when the test fails.
struct Topology {
    prefix: String,
}

impl Topology {
    fn new() -> Topology {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "needs root (CI runs as root)"
        );
        let prefix = format!(
            "nfu{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let t = Topology { prefix };
        for ns in ["router", "isp1", "isp2", "target", "lan"] {
            sh(&format!("ip netns add {}", t.ns(ns)));
            // No duplicate address detection: IPv6 addresses, link-local ones included, are
            // usable at once instead of after a second or two.
            sh(&format!(
                "ip netns exec {} sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
                t.ns(ns)
            ));
            t.ip(ns, "link set lo up");
        }
        let (r, i1, i2, tg, lan) = (
            t.ns("router"),
            t.ns("isp1"),
            t.ns("isp2"),
            t.ns("target"),
            t.ns("lan"),
        );
        sh(&format!(
            "ip -n {r} link add wan1 type veth peer name r0 netns {i1}"
        ));
        sh(&format!(
            "ip -n {r} link add wan2 type veth peer name r0 netns {i2}"
        ));
        sh(&format!(
            "ip -n {r} link add lan0 type veth peer name eth0 netns {lan}"
        ));
        sh(&format!(
            "ip -n {i1} link add t0 type veth peer name i1 netns {tg}"
        ));
        sh(&format!(
            "ip -n {i2} link add t0 type veth peer name i2 netns {tg}"
        ));
        let script = |ns: &str, lines: &[&str]| {
            for l in lines {
                t.ip(ns, l);
            }
        };
        script(
            "router",
            &[
                "addr add 198.51.100.2/29 dev wan1",
                "addr add 198.51.100.10/29 dev wan2",
                "addr add 192.0.2.65/26 dev lan0",
                "link set wan1 up",
                "link set wan2 up",
                "link set lan0 up",
                // The main route goes via ISP 1; tables 1 and 2 are the uplinks.
                "route add default via 198.51.100.1",
                "route add default via 198.51.100.1 dev wan1 table 1",
                "route add default via 198.51.100.9 dev wan2 table 2",
                // Connected routes (the LAN, for replies) before the uplink tables.
                "rule add pref 100 table main suppress_prefixlength 0",
                "rule add pref 201 fwmark 1 table 1",
                "rule add pref 202 fwmark 2 table 2",
                "rule add pref 211 from 198.51.100.2 table 1",
                "rule add pref 212 from 198.51.100.10 table 2",
                "rule add pref 221 oif wan1 table 1",
                "rule add pref 222 oif wan2 table 2",
            ],
        );
        for (ns, a, b) in [
            ("isp1", "198.51.100.1/29", "203.0.113.1/29"),
            ("isp2", "198.51.100.9/29", "203.0.113.9/29"),
        ] {
            let gw = if ns == "isp1" {
                "203.0.113.2"
            } else {
                "203.0.113.10"
            };
            script(
                ns,
                &[
                    &format!("addr add {a} dev r0"),
                    &format!("addr add {b} dev t0"),
                    "link set r0 up",
                    "link set t0 up",
                    &format!("route add 192.0.2.0/26 via {gw}"),
                ],
            );
        }
        script(
            "target",
            &[
                "addr add 203.0.113.2/29 dev i1",
                "addr add 203.0.113.10/29 dev i2",
                "link set i1 up",
                "link set i2 up",
                "addr add 192.0.2.10/32 dev lo",
                "addr add 192.0.2.11/32 dev lo",
                "addr add 192.0.2.12/32 dev lo",
                "addr add 192.0.2.20/32 dev lo",
                "route add 198.51.100.0/29 via 203.0.113.1",
                "route add 198.51.100.8/29 via 203.0.113.9",
            ],
        );
        script(
            "lan",
            &[
                "addr add 192.0.2.66/26 dev eth0",
                // Pinned to uplink 2 by the router's rules, whatever the define says.
                "addr add 192.0.2.67/26 dev eth0",
                "link set eth0 up",
                "route add default via 192.0.2.65",
            ],
        );
        for ns in [&r, &i1, &i2] {
            sh(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1"
            ));
        }
        // Replies of marked flows come back on wan2 from addresses the main table routes via
        // wan1: strict reverse-path filtering would drop them (README, multi-WAN recipe).
        sh(&format!(
            "ip netns exec {r} sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0"
        ));
        // IPv6 beside it: the same shape in 2001:db8::/32, routed by the same marks.
        for (ns, lines) in [
            (
                "router",
                &[
                    "addr add 2001:db8:1::2/64 dev wan1",
                    "addr add 2001:db8:2::2/64 dev wan2",
                    "route add default via 2001:db8:1::1",
                    "route add default via 2001:db8:1::1 dev wan1 table 1",
                    "route add default via 2001:db8:2::1 dev wan2 table 2",
                    "rule add pref 100 table main suppress_prefixlength 0",
                    "rule add pref 201 fwmark 1 table 1",
                    "rule add pref 202 fwmark 2 table 2",
                ][..],
            ),
            (
                "isp1",
                &[
                    "addr add 2001:db8:1::1/64 dev r0",
                    "addr add 2001:db8:11::1/64 dev t0",
                    "route add 2001:db8:ff::/64 via 2001:db8:11::2",
                ][..],
            ),
            (
                "isp2",
                &[
                    "addr add 2001:db8:2::1/64 dev r0",
                    "addr add 2001:db8:12::1/64 dev t0",
                    "route add 2001:db8:ff::/64 via 2001:db8:12::2",
                ][..],
            ),
            (
                "target",
                &[
                    "addr add 2001:db8:11::2/64 dev i1",
                    "addr add 2001:db8:12::2/64 dev i2",
                    "addr add 2001:db8:ff::10/128 dev lo",
                    "addr add 2001:db8:ff::11/128 dev lo",
                    "route add 2001:db8:1::/64 via 2001:db8:11::1",
                    "route add 2001:db8:2::/64 via 2001:db8:12::1",
                ][..],
            ),
        ] {
            for l in lines {
                sh(&format!("ip -6 -n {} {l}", t.ns(ns)));
            }
        }
        for ns in [&i1, &i2] {
            sh(&format!(
                "ip netns exec {ns} sysctl -qw net.ipv6.conf.all.forwarding=1"
            ));
        }
        // Count the LAN flow (port 8080, never probed) in each ISP.
        for ns in ["isp1", "isp2"] {
            t.nft(
                ns,
                "table inet count {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  tcp dport 8080 counter\n }\n}\n",
            );
        }
        t
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn ip(&self, ns: &str, args: &str) -> String {
        sh(&format!("ip -n {} {args}", self.ns(ns)))
    }

    fn nft(&self, ns: &str, ruleset: &str) {
        self.within(&self.ns(ns), || nft_apply(ruleset));
    }

    /// Runs `f` on a thread inside namespace `ns`; sockets it opens stay in that namespace.
    fn within<T: Send>(&self, ns: &str, f: impl FnOnce() -> T + Send) -> T {
        within_netns(ns, f)
    }

    /// Listeners on the target host: the probe targets on port 80 and the LAN flow's server.
    fn listeners(&self) -> Vec<TcpListener> {
        self.within(&self.ns("target"), || {
            [
                "192.0.2.10:80",
                "192.0.2.11:80",
                "192.0.2.12:80",
                "192.0.2.20:8080",
            ]
            .iter()
            .map(|a| TcpListener::bind(a).unwrap())
            .collect()
        })
    }

    /// ISP `n` loses its way to the targets: it answers with "unreachable", as a broken
    /// upstream does, while the router's link to it stays up.
    fn break_isp(&self, n: u8, dest: &str) {
        self.ip(
            &format!("isp{n}"),
            &format!("route replace unreachable {dest}"),
        );
    }

    fn repair_isp(&self, n: u8, dest: &str) {
        let gw = if n == 1 {
            "203.0.113.2"
        } else {
            "203.0.113.10"
        };
        self.ip(
            &format!("isp{n}"),
            &format!("route replace {dest} via {gw}"),
        );
    }

    /// Packets of the LAN flow forwarded by ISP `n`.
    fn lan_packets(&self, n: u8) -> u64 {
        let out = sh(&format!(
            "ip netns exec {} nft list table inet count",
            self.ns(&format!("isp{n}"))
        ));
        out.split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no counter in:\n{out}"))
    }

    /// A new connection from the LAN host to the target's port 8080, kept open.
    fn lan_connect(&self) -> TcpStream {
        self.lan_connect_from("192.0.2.66")
    }

    fn lan_connect_from(&self, source: &str) -> TcpStream {
        self.lan_connect_to(source, "192.0.2.20:8080")
    }

    fn lan_connect_to(&self, source: &str, dest: &str) -> TcpStream {
        self.within(&self.ns("lan"), || {
            use socket2::{Domain, SockAddr, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            let src: SocketAddr = format!("{source}:0").parse().unwrap();
            s.bind(&SockAddr::from(src)).unwrap();
            let addr: SocketAddr = dest.parse().unwrap();
            s.connect_timeout(&SockAddr::from(addr), Duration::from_secs(2))
                .expect("LAN flow connects");
            TcpStream::from(s)
        })
    }

    /// Tracked LAN flows (to port 8080) in the router with this ct mark.
    fn tracked(&self, mark: u8) -> usize {
        let out = sh(&format!(
            "ip netns exec {} conntrack -L -f ipv4 -p tcp --dport 8080 --mark {mark} 2>/dev/null",
            self.ns("router")
        ));
        out.lines().count()
    }

    /// The binary in the router namespace, with the fixture's paths: its log and the define.
    fn run(&self, f: &Fixture, extra: &[&str]) -> (String, Option<String>) {
        self.within(&self.ns("router"), || {
            let out = f.run(extra);
            assert_exit(&out, 0);
            let text = f.output_text().unwrap();
            (stderr(&out), define(&text, "uplink_v4").map(String::from))
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in ["router", "isp1", "isp2", "target", "lan"] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.ns(ns)])
                .status();
        }
    }
}

/// The router's main config: marks new LAN connections with the rendered define, saves the
/// mark in conntrack and restores it for the rest of the connection, masquerades on the
/// uplinks. The same rules as the README's multi-WAN recipe.
fn main_config(f: &Fixture) {
    fs::write(
        &f.main_config,
        format!(
            r#"flush ruleset
include "{}/*.nft"
table inet wan {{
  chain prerouting {{
    type filter hook prerouting priority mangle; policy accept;
    meta mark set ct mark
    iifname "lan0" ip saddr 192.0.2.67 meta mark 0 meta mark set 2
    iifname "lan0" meta mark 0 meta mark set $uplink_v4
    ct mark set meta mark
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname {{ "wan1", "wan2" }} masquerade
  }}
}}
"#,
            f.addon_dir.display()
        ),
    )
    .unwrap();
}

fn config(via: Via, order: [u8; 2], check: &str, extra: &str) -> String {
    let gw = |n: u8| {
        if n == 1 {
            "198.51.100.1"
        } else {
            "198.51.100.9"
        }
    };
    format!(
        r#"{{"failover": {{"uplink": {{
            "ip4": ["{}", "{}"], "values": [{}, {}],
            "check": {check},
            "paths": [{}, {}]{extra}
        }}}}}}"#,
        gw(order[0]),
        gw(order[1]),
        order[0],
        order[1],
        via.path(order[0]),
        via.path(order[1]),
    )
}

const TCP3: &str =
    r#"{"targets": ["192.0.2.10:80", "192.0.2.11:80", "192.0.2.12:80"], "quorum": 2}"#;

fn fixture(json: &str) -> Fixture {
    let f = Fixture::new();
    f.write_config(json);
    main_config(&f);
    f
}

/// ISP 2 breaks while the router's main route goes via ISP 1, and uplink 2 is preferred: the
/// bound probe sees it and the define moves to uplink 1; an unbound probe goes out via ISP 1
/// and keeps the broken uplink.
fn broken_isp2_is_seen(via: Via) {
    let t = Topology::new();
    let _l = t.listeners();
    let f = fixture(&config(via, [2, 1], TCP3, ""));
    let (_, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("2"), "both up: the preferred uplink 2");
    t.break_isp(2, "192.0.2.0/26");
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"), "{via:?}: {log}");
    assert!(log.contains("uplink_v4: 2 -> 1 (198.51.100.9 ["), "{log}");
    assert!(log.contains("targets down, quorum 2"), "{log}");

    // The same check without paths follows the main route, via ISP 1, and misses it.
    let plain = fixture(&format!(
        r#"{{"failover": {{"uplink": {{"ip4": ["198.51.100.9", "198.51.100.1"], "values": [2, 1], "check": {TCP3}}}}}}}"#
    ));
    let (log, v) = t.run(&plain, &["--timeout", "1s"]);
    assert_eq!(
        v.as_deref(),
        Some("2"),
        "the unbound probe counts broken uplink 2 up: {log}"
    );
}

#[test]
fn broken_isp2_is_seen_through_its_mark() {
    broken_isp2_is_seen(Via::Mark);
}

#[test]
fn broken_isp2_is_seen_through_its_source_address() {
    broken_isp2_is_seen(Via::Source);
}

#[test]
fn broken_isp2_is_seen_through_its_interface() {
    broken_isp2_is_seen(Via::Interface);
}

/// ISP 1 breaks: the define moves to uplink 2 and new LAN connections leave via ISP 2. Once
/// repaired, uplink 1 must answer `rise` runs and then wait `preempt_delay_s` before failback.
#[test]
fn failover_moves_lan_traffic_and_failback_honours_rise_and_preempt_delay() {
    let t = Topology::new();
    let _l = t.listeners();
    let f = fixture(&config(
        Via::Mark,
        [1, 2],
        TCP3,
        r#", "rise": 2, "preempt_delay_s": 2"#,
    ));
    let (_, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"));
    let _c1 = t.lan_connect();
    assert!(t.lan_packets(1) > 0);
    assert_eq!(t.lan_packets(2), 0);

    t.break_isp(1, "192.0.2.0/26");
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("2"), "{log}");
    assert!(
        log.contains("uplink_v4: 1 -> 2 (198.51.100.1 [mark 1] 2/3 targets down, quorum 2: "),
        "{log}"
    );
    let before = t.lan_packets(2);
    let _c2 = t.lan_connect();
    assert!(t.lan_packets(2) > before, "the new flow leaves via ISP 2");

    t.repair_isp(1, "192.0.2.0/26");
    // rise 2: one good answer is not enough.
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("2"), "rise 1/2: {log}");
    // Counted up now, but the preempt delay holds uplink 2.
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("2"), "preempt delay: {log}");
    std::thread::sleep(Duration::from_millis(2100));
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"), "failback after the delay: {log}");
    assert!(log.contains("uplink_v4: 2 -> 1"), "{log}");
}

const ICMP3: &str =
    r#"{"method": "icmp", "targets": ["192.0.2.10", "192.0.2.11", "192.0.2.12"], "quorum": 2}"#;

/// ICMP echo through each kind of path, quorum 2 of 3: one target lost via ISP 1 changes
/// nothing, a second one fails uplink 1 over.
#[test]
fn icmp_quorum_two_of_three() {
    for via in [Via::Mark, Via::Interface, Via::Source] {
        let t = Topology::new();
        let f = fixture(&config(via, [1, 2], ICMP3, ""));
        let (log, v) = t.run(&f, &["--timeout", "500ms"]);
        assert_eq!(v.as_deref(), Some("1"), "{via:?}: {log}");
        t.break_isp(1, "192.0.2.12/32");
        let (log, v) = t.run(&f, &["--timeout", "500ms"]);
        assert_eq!(
            v.as_deref(),
            Some("1"),
            "{via:?}: 2 of 3 still answer: {log}"
        );
        assert!(log.contains("unchanged"), "{via:?}: {log}");
        t.break_isp(1, "192.0.2.11/32");
        let (log, v) = t.run(&f, &["--timeout", "500ms"]);
        assert_eq!(v.as_deref(), Some("2"), "{via:?}: {log}");
        assert!(
            log.contains("uplink_v4: 1 -> 2 (198.51.100.1 [")
                && log.contains("] 2/3 targets down, quorum 2: icmp 192.0.2.1"),
            "{via:?}: {log}"
        );
    }
}

/// An echo responder in the target namespace that answers requests arriving from `slow`
/// only after `delay`, standing in for a slow ISP (the kernel's own replies are turned off).
/// `tc netem` would do the same, but not every kernel has sch_netem.
struct SlowEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SlowEcho {
    fn start(t: &Topology, targets: &[&str], slow: &str, delay: Duration) -> SlowEcho {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        use std::net::{IpAddr, Ipv4Addr};
        t.ip("target", "link show"); // the namespace exists
        sh(&format!(
            "ip netns exec {} sysctl -qw net.ipv4.icmp_echo_ignore_all=1",
            t.ns("target")
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow: Ipv4Addr = slow.parse().unwrap();
        let mut threads = Vec::new();
        for target in targets {
            let addr: Ipv4Addr = target.parse().unwrap();
            let sock = t.within(&t.ns("target"), || {
                let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
                // Bound: replies leave from the target's address and only its requests arrive.
                s.bind(&SockAddr::from(SocketAddr::new(IpAddr::V4(addr), 0)))
                    .unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                std::sync::Arc::new(s)
            });
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, _)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    // SAFETY: recv_from initialised the first n bytes.
                    let pkt: Vec<u8> =
                        unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) }
                            .to_vec();
                    let ihl = usize::from(pkt[0] & 0x0f) * 4;
                    let from = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
                    let mut icmp = pkt[ihl..].to_vec();
                    if icmp.first() != Some(&8) {
                        continue;
                    }
                    icmp[0] = 0;
                    icmp[2] = 0;
                    icmp[3] = 0;
                    let sum = nftables_failover::probe::icmp::checksum(&icmp);
                    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                    let to = SockAddr::from(SocketAddr::new(IpAddr::V4(from), 0));
                    // Delayed on its own thread, so a slow reply never holds up a fast one.
                    let sock = sock.clone();
                    let wait = if from == slow { delay } else { Duration::ZERO };
                    std::thread::spawn(move || {
                        std::thread::sleep(wait);
                        let _ = sock.send_to(&icmp, &to);
                    });
                }
            }));
        }
        SlowEcho { stop, threads }
    }
}

impl Drop for SlowEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Uplink 2 answers in about 150 ms: with `max_latency_ms` 100 it counts as down and the define
/// moves to uplink 1; without the limit it stays preferred.
#[test]
fn a_latency_limit_fails_a_slow_uplink_over() {
    let t = Topology::new();
    let _echo = SlowEcho::start(
        &t,
        &["192.0.2.10", "192.0.2.11"],
        "198.51.100.10",
        Duration::from_millis(150),
    );
    let check = |limit: &str| {
        format!(r#"{{"method": "icmp", "targets": ["192.0.2.10", "192.0.2.11"]{limit}}}"#)
    };
    let f = fixture(&config(Via::Mark, [2, 1], &check(""), ""));
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(
        v.as_deref(),
        Some("2"),
        "slow but within the timeout: {log}"
    );
    let f = fixture(&config(
        Via::Mark,
        [2, 1],
        &check(r#", "max_latency_ms": 100"#),
        "",
    ));
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"), "{log}");
    assert!(
        log.contains("2/2 targets down, quorum 1: icmp 192.0.2.1")
            && log.contains("no answer within 100 ms (max_latency_ms)"),
        "{log}"
    );
}

/// `status --check` in the router namespace as user nobody, without capabilities: its exit
/// code and its output (status prints errors on stdout, as monitoring plugins do).
fn status_as_nobody(t: &Topology, f: &Fixture) -> (Option<i32>, String) {
    status_as(t, f, "")
}

/// `status --check` as nobody holding only `cap` (e.g. "net_raw"), as the drop-in grants it.
fn status_as(t: &Topology, f: &Fixture, cap: &str) -> (Option<i32>, String) {
    // Let nobody read the fixture (a private temporary directory).
    sh(&format!(
        "chmod 755 {d} {d}/nftables.d {d}/nftables.d/addons && chmod 644 {c}",
        d = f.dir.path().display(),
        c = f.config.display()
    ));
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &t.ns("router")])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(if cap.is_empty() {
            vec!["--inh-caps=-all".to_string(), "--bounding-set=-all".into()]
        } else {
            vec![
                format!("--inh-caps=-all,+{cap}"),
                format!("--ambient-caps=+{cap}"),
                format!("--bounding-set=-all,+{cap}"),
            ]
        })
        .args([BIN, "status", "--check"])
        .arg("--config")
        .arg(&f.config)
        .arg("--output")
        .arg(&f.output)
        .arg("--state")
        .arg(f.dir.path().join("none/state.json"))
        .args(["--timeout", "500ms"]);
    let out = output_within(cmd, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    (out.status.code(), text)
}

/// Without CAP_NET_RAW (or CAP_NET_ADMIN) the kernel refuses SO_MARK: the run stops with an
/// error naming the capability and the drop-in, instead of counting every uplink down.
#[test]
fn a_missing_capability_is_named_with_its_drop_in() {
    let t = Topology::new();
    let f = fixture(&config(Via::Mark, [1, 2], TCP3, ""));
    let (code, err) = status_as_nobody(&t, &f);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("SO_MARK 1: operation not permitted; this needs CAP_NET_RAW"),
        "{err}"
    );
    assert!(
        err.contains("nftables-failover.service.d/uplink.conf"),
        "{err}"
    );
    // CAP_NET_RAW alone, as the shipped drop-in grants it, is enough for SO_MARK.
    let _l = t.listeners();
    let (code, text) = status_as(&t, &f, "net_raw");
    assert!(!text.contains("cannot run the checks"), "{text}");
    assert!(
        text.contains("198.51.100.1 ") && text.contains(" up "),
        "{text}"
    );
    assert_eq!(code, Some(3), "not applied yet: {text}");
    // Bound to an interface, with no mark, needs no capability.
    let f = fixture(&config(Via::Interface, [1, 2], TCP3, ""));
    let (_, text) = status_as_nobody(&t, &f);
    assert!(!text.contains("cannot run the checks"), "{text}");
}

/// ICMP without privileges: refused with the sysctl named while `ping_group_range` excludes
/// the user; once it includes the group, unprivileged ping sockets work through the path.
#[test]
fn icmp_uses_ping_sockets_where_the_sysctl_allows() {
    let t = Topology::new();
    let f = fixture(&config(Via::Interface, [1, 2], ICMP3, ""));
    sh(&format!(
        "ip netns exec {} sysctl -qw net.ipv4.ping_group_range='1 0'",
        t.ns("router")
    ));
    let (code, err) = status_as_nobody(&t, &f);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("net.ipv4.ping_group_range does not include group 65534")
            && err.contains("CAP_NET_RAW"),
        "{err}"
    );
    sh(&format!(
        "ip netns exec {} sysctl -qw net.ipv4.ping_group_range='65534 65534'",
        t.ns("router")
    ));
    t.break_isp(1, "192.0.2.0/26");
    let (_, text) = status_as_nobody(&t, &f);
    assert!(!text.contains("cannot run"), "{text}");
    // Uplink 1 is down through its interface, uplink 2 answers: the next run would fail over.
    assert!(
        text.contains("next run renders 2 (preferred candidate 198.51.100.1 [dev wan1] down"),
        "{text}"
    );
    assert!(text.contains("198.51.100.9 "), "{text}");
}

/// With `conntrack_cleanup: "mark"`, the switch deletes the flow pinned to the dead uplink by
/// its ct mark, and keeps the flow on the other uplink; without it, nothing is deleted.
#[test]
fn conntrack_cleanup_deletes_only_the_old_uplinks_flows() {
    for cleanup in [true, false] {
        let t = Topology::new();
        let _l = t.listeners();
        let extra = if cleanup {
            r#", "conntrack_cleanup": "mark""#
        } else {
            ""
        };
        let f = fixture(&config(Via::Mark, [1, 2], TCP3, extra));
        let (_, v) = t.run(&f, &["--timeout", "1s"]);
        assert_eq!(v.as_deref(), Some("1"));
        let _a = t.lan_connect(); // via uplink 1, the define
        let _b = t.lan_connect_from("192.0.2.67"); // pinned to uplink 2
        assert_eq!((t.tracked(1), t.tracked(2)), (1, 1));
        t.break_isp(1, "192.0.2.0/26");
        let (log, v) = t.run(&f, &["--timeout", "1s"]);
        assert_eq!(v.as_deref(), Some("2"), "{log}");
        if cleanup {
            assert!(
                log.contains("uplink_v4: conntrack clean-up deleted 1 entries (ct mark 1)"),
                "{log}"
            );
            assert_eq!((t.tracked(1), t.tracked(2)), (0, 1), "{log}");
            // Failback: uplink 2 still works, so its connections are kept.
            let _c = t.lan_connect(); // a new flow, via uplink 2 now
            t.repair_isp(1, "192.0.2.0/26");
            let (log, v) = t.run(&f, &["--timeout", "1s"]);
            assert_eq!(v.as_deref(), Some("1"), "{log}");
            assert!(
                log.contains("conntrack clean-up skipped: the old choice is up"),
                "{log}"
            );
            assert_eq!(t.tracked(2), 2, "{log}");
        } else {
            assert!(!log.contains("conntrack"), "{log}");
            assert_eq!((t.tracked(1), t.tracked(2)), (1, 1), "{log}");
        }
    }
}

/// The shipped drop-in passes `systemd-analyze verify` together with the unit, and grants
/// only what the probes need: CAP_NET_RAW, added to the bounding set.
#[test]
fn the_capability_drop_in_verifies_with_the_unit() {
    let repo = |p: &str| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(p);
    let dir = tempfile::tempdir().unwrap();
    let service = fs::read_to_string(repo("systemd/nftables-failover.service")).unwrap();
    fs::write(
        dir.path().join("nftables-failover.service"),
        service.replace(
            "ExecStart=/usr/bin/nftables-failover",
            &format!("ExecStart={BIN}"),
        ),
    )
    .unwrap();
    fs::create_dir(dir.path().join("nftables-failover.service.d")).unwrap();
    let drop_in = repo("systemd/nftables-failover.service.d/uplink.conf");
    fs::copy(
        &drop_in,
        dir.path().join("nftables-failover.service.d/uplink.conf"),
    )
    .unwrap();
    let mut cmd = std::process::Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"])
        .arg(dir.path().join("nftables-failover.service"));
    let out = output_within(cmd, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    let active: Vec<String> = fs::read_to_string(drop_in)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(String::from)
        .collect();
    assert_eq!(
        active,
        [
            "AmbientCapabilities=CAP_NET_RAW",
            "CapabilityBoundingSet=CAP_NET_RAW"
        ]
    );
}

/// The code block that follows `marker` in docs/uplinks.md (the multi-WAN recipe).
fn readme_block(marker: &str) -> String {
    let readme =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/uplinks.md")).unwrap();
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in docs/uplinks.md"))..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// The README's multi-WAN recipe as written: its routing commands, config and nftables rules
/// in the router namespace fail over when ISP 1 breaks (after `fall` 2) and delete the old
/// uplink's connection.
#[test]
fn the_readme_multi_wan_recipe_works_as_written() {
    let t = Topology::new();
    let _l = t.listeners();
    // Replace the topology's own uplink routing by the recipe's.
    for pref in [100, 201, 202, 211, 212, 221, 222] {
        t.ip("router", &format!("rule del pref {pref}"));
    }
    t.ip("router", "route flush table 1");
    t.ip("router", "route flush table 2");
    for line in readme_block("**Routing**").lines() {
        let line = line.split('#').next().unwrap().trim();
        if !line.is_empty() {
            sh(&format!("ip netns exec {} {line}", t.ns("router")));
        }
    }
    let f = Fixture::new();
    f.write_config(&readme_block("**`/etc/nftables.d/addons/failover.json`**"));
    let rules = readme_block("**`/etc/nftables.conf`**").replace(
        "/etc/nftables.d/addons/*.nft",
        &format!("{}/*.nft", f.addon_dir.display()),
    );
    fs::write(&f.main_config, rules).unwrap();

    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"), "{log}");
    let _a = t.lan_connect();
    assert_eq!(t.tracked(1), 1);
    t.break_isp(1, "192.0.2.0/26");
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"), "fall 1/2: {log}");
    let (log, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("2"), "{log}");
    assert!(
        log.contains("uplink_v4: conntrack clean-up deleted 1 entries (ct mark 1)"),
        "{log}"
    );
    let before = t.lan_packets(2);
    let _b = t.lan_connect();
    assert!(
        t.lan_packets(2) > before,
        "new LAN connections leave via ISP 2"
    );
}

/// Server failover with `conntrack_cleanup: "address"`: LAN clients reach a service address
/// that the router DNATs to `$srv_v4`. When the server behind it fails, the DNAT'd connection
/// to it is deleted; a connection to the other server is kept.
#[test]
fn conntrack_cleanup_by_address_deletes_only_the_old_servers_flows() {
    let t = Topology::new();
    let _l = t.listeners();
    let f = Fixture::new();
    f.write_config(
        r#"{"failover": {"srv": {"ip4": ["192.0.2.10", "192.0.2.11"], "port": 80,
            "conntrack_cleanup": "address"}}}"#,
    );
    fs::write(
        &f.main_config,
        format!(
            r#"flush ruleset
include "{}/*.nft"
table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr 203.0.113.100 tcp dport 80 dnat to $srv_v4
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname {{ "wan1", "wan2" }} masquerade
  }}
}}
"#,
            f.addon_dir.display()
        ),
    )
    .unwrap();
    let tracked = |server: &str| {
        sh(&format!(
            "ip netns exec {} conntrack -L -f ipv4 -p tcp -s 192.0.2.66 --reply-src {server} 2>/dev/null",
            t.ns("router")
        ))
        .lines()
        .count()
    };
    let run = |f: &Fixture| {
        t.within(&t.ns("router"), || {
            let out = f.run(&["--timeout", "1s"]);
            assert_exit(&out, 0);
            let text = f.output_text().unwrap();
            (stderr(&out), define(&text, "srv_v4").map(String::from))
        })
    };
    let (log, v) = run(&f);
    assert_eq!(v.as_deref(), Some("192.0.2.10"), "{log}");
    let _a = t.lan_connect_to("192.0.2.66", "203.0.113.100:80"); // DNAT'd to .10
    let _b = t.lan_connect_to("192.0.2.66", "192.0.2.11:80"); // straight to .11
    let (before10, before11) = (tracked("192.0.2.10"), tracked("192.0.2.11"));
    assert_eq!((before10, before11), (1, 1));
    // Server .10 becomes unreachable (its ISP route goes), .11 stays.
    t.break_isp(1, "192.0.2.10/32");
    let (log, v) = run(&f);
    assert_eq!(v.as_deref(), Some("192.0.2.11"), "{log}");
    assert!(
        log.contains("srv_v4: conntrack clean-up deleted")
            && log.contains("(replies from 192.0.2.10)"),
        "{log}"
    );
    assert_eq!(tracked("192.0.2.10"), 0, "{log}");
    assert_eq!(tracked("192.0.2.11"), before11, "{log}");
}

/// IPv6: ICMPv6 echo to targets beyond each uplink, through its mark. ISP 1 loses its IPv6
/// upstream: the IPv6 define moves to uplink 2 while the IPv4 one, whose probes still answer,
/// stays on uplink 1.
#[test]
fn ipv6_candidates_probe_ipv6_targets_through_their_marks() {
    let t = Topology::new();
    let f = fixture(
        r#"{"failover": {"uplink": {
            "ip4": ["198.51.100.1", "198.51.100.9"],
            "ip6": ["2001:db8:1::1", "2001:db8:2::1"],
            "values": [1, 2],
            "check": {"method": "icmp", "targets": ["192.0.2.10", "2001:db8:ff::10", "2001:db8:ff::11"]},
            "paths": [{"mark": 1}, {"mark": 2}]
        }}}"#,
    );
    let run = || {
        t.within(&t.ns("router"), || {
            let out = f.run(&["--timeout", "500ms"]);
            assert_exit(&out, 0);
            let text = f.output_text().unwrap();
            let d = |n| define(&text, n).map(String::from);
            (stderr(&out), d("uplink_v4"), d("uplink_v6"))
        })
    };
    let (log, v4, v6) = run();
    assert!(!log.contains("all down"), "{log}");
    assert_eq!(
        (v4.as_deref(), v6.as_deref()),
        (Some("1"), Some("1")),
        "{log}"
    );
    t.ip("isp1", "-6 route replace unreachable 2001:db8:ff::/64");
    let (log, v4, v6) = run();
    assert_eq!(
        (v4.as_deref(), v6.as_deref()),
        (Some("1"), Some("2")),
        "{log}"
    );
    assert!(
        log.contains("uplink_v6: 1 -> 2 (2001:db8:1::1 [mark 1] 2/2 targets down, quorum 1: icmp 2001:db8:ff::1"),
        "{log}"
    );
}

/// `status --json` of a fixture in the router namespace: its exit code and the document.
fn status_json(t: &Topology, f: &Fixture) -> (Option<i32>, serde_json::Value) {
    t.within(&t.ns("router"), || {
        let out = f.status(&["--json"]);
        let doc = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", stderr(&out)));
        (out.status.code(), doc)
    })
}

/// The standby uplink's upstream is cut while the preferred one carries: the run decides early
/// as before, but waits for the standby's checks after the apply, so one run later `status`
/// shows it down with its reason and warns that there is no healthy standby.
#[test]
fn a_dead_standby_uplink_shows_after_one_run() {
    let t = Topology::new();
    let _l = t.listeners();
    let f = fixture(&config(Via::Mark, [1, 2], TCP3, ""));
    let (_, v) = t.run(&f, &["--timeout", "1s"]);
    assert_eq!(v.as_deref(), Some("1"));
    let (code, doc) = status_json(&t, &f);
    assert_eq!(code, Some(0), "{doc:#}");

    // Its gateway still answers, but its upstream drops everything silently.
    t.ip("isp2", "route replace blackhole 192.0.2.0/26");
    let (log, v) = t.run(&f, &["--timeout", "1s", "-v"]);
    assert_eq!(v.as_deref(), Some("1"), "{log}");
    assert!(
        log.contains("no answer within 1000 ms (after the choice)"),
        "{log}"
    );
    let (code, doc) = status_json(&t, &f);
    assert_eq!(code, Some(1), "{doc:#}");
    let define = &doc["defines"][0];
    let standby = &define["candidates"][1];
    assert_eq!(standby["state"], "down", "{doc:#}");
    assert!(
        standby["error"]
            .as_str()
            .unwrap()
            .contains("targets down, quorum 2"),
        "{doc:#}"
    );
    assert!(standby["result_age_s"].as_u64().unwrap() < 30, "{doc:#}");
    let reason = define["reason"].as_str().unwrap();
    assert!(
        reason.contains("no healthy standby: 198.51.100.9 down"),
        "{reason}"
    );
    assert!(
        !doc.to_string().contains("\"unknown\""),
        "a candidate reads unknown after a run: {doc:#}"
    );

    t.repair_isp(2, "192.0.2.0/26");
    t.run(&f, &["--timeout", "1s"]);
    let (code, doc) = status_json(&t, &f);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["defines"][0]["candidates"][1]["state"], "up", "{doc:#}");
}
