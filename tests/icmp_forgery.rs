//! Spoofed ICMP echo replies do not make a dead uplink look up: a host on the uplink's link
//! (its own network namespace) sprays forged replies from the target's address with every
//! identifier and the sequence numbers a run used to start with, and the payload the tool
//! used to send. The run's random identifier, sequence start and payload cookie refuse them.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The forger: every identifier with sequence numbers 1..=4, from 192.0.2.1 to 198.51.100.1,
/// carrying the payload that used to be fixed, until killed.
const FORGER: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
src, dst = socket.inet_aton("192.0.2.1"), socket.inet_aton("198.51.100.1")
sys.stdout.write("ready\n"); sys.stdout.flush()
while True:
    for seq in range(1, 5):
        for ident in range(65536):
            icmp = struct.pack("!BBHHH", 0, 0, 0, ident, seq) + b"nftfailv"
            icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, dst)
            s.sendto(ip + icmp, ("198.51.100.1", 0))
"#;

struct Evil {
    ns: String,
    forger: Child,
}

impl Drop for Evil {
    fn drop(&mut self) {
        let _ = self.forger.kill();
        let _ = self.forger.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A second namespace on a veth link: this one is 198.51.100.1, the other 198.51.100.2, and
/// the target 192.0.2.1 is routed there, where nothing answers it.
fn evil_neighbour() -> Evil {
    let ns = format!("nftfo-evil-{}", std::process::id());
    sh(&format!(
        "ip netns add {ns} && ip link add vp type veth peer name ve netns {ns} && \
         ip addr add 198.51.100.1/24 dev vp && ip link set vp up && \
         ip -n {ns} addr add 198.51.100.2/24 dev ve && ip -n {ns} link set ve up && \
         ip -n {ns} link set lo up && ip route add 192.0.2.0/24 via 198.51.100.2"
    ));
    let mut forger = Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-u", "-c", FORGER])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(forger.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    Evil { ns, forger }
}

#[test]
fn forged_echo_replies_do_not_count() {
    in_netns(|| {
        let _evil = evil_neighbour();
        let f = Fixture::new();
        f.write_config(
            r#"{"failover": {"up": {"ip4": ["198.51.100.2"], "values": [1],
                "check": {"method": "icmp", "targets": ["192.0.2.1"]},
                "paths": [{"interface": "vp"}]}}}"#,
        );
        // Three runs, each 1.5 s long under the spray: never up.
        for _ in 0..3 {
            let mut cmd = f.command(&[], &f.reload());
            cmd.args(["--dry-run", "-v", "--timeout", "1500ms"]);
            let out = output_within(cmd, Duration::from_secs(20));
            assert_exit(&out, 0);
            let log = stderr(&out);
            assert!(
                log.contains("no answer within 1500 ms"),
                "a forged reply counted: {log}"
            );
            assert!(!log.contains(" up in "), "a forged reply counted: {log}");
        }
    });
}

/// With an interface path, a genuine reply that arrives on another interface (asymmetric
/// routing, or a spoofer on another link) is not the probe's: the uplink's own link must carry
/// it. Here the target answers, but its replies come back over a second link.
#[test]
fn a_reply_on_another_interface_does_not_count_for_an_interface_path() {
    in_netns(|| {
        let ns = format!("nftfo-asym-{}", std::process::id());
        let _guard = NsGuard(ns.clone());
        sh(&format!(
            "ip netns add {ns} && ip link add vp type veth peer name ve netns {ns} && \
             ip link add vx type veth peer name vy netns {ns} && \
             ip addr add 198.51.100.1/24 dev vp && ip link set vp up && \
             ip addr add 203.0.113.1/24 dev vx && ip link set vx up && \
             ip -n {ns} addr add 198.51.100.2/24 dev ve && ip -n {ns} link set ve up && \
             ip -n {ns} addr add 203.0.113.2/24 dev vy && ip -n {ns} link set vy up && \
             ip -n {ns} addr add 192.0.2.1/32 dev lo && ip -n {ns} link set lo up && \
             ip -n {ns} route add 198.51.100.1/32 via 203.0.113.1 dev vy && \
             ip route add 192.0.2.0/24 via 198.51.100.2 && \
             sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.vx.rp_filter=0"
        ));
        let f = Fixture::new();
        let run = |path: &str| {
            f.write_config(&format!(
                r#"{{"failover": {{"up": {{"ip4": ["198.51.100.2"], "values": [1],
                    "check": {{"method": "icmp", "targets": ["192.0.2.1"]}},
                    "paths": [{path}]}}}}}}"#
            ));
            let mut cmd = f.command(&[], &f.reload());
            cmd.args(["--dry-run", "-v", "--timeout", "1s"]);
            let out = output_within(cmd, Duration::from_secs(20));
            assert_exit(&out, 0);
            stderr(&out)
        };
        // The source path sends the same way; its replies, wherever they arrive, count.
        let log = run(r#"{"source": "198.51.100.1"}"#);
        assert!(
            log.contains(" up in "),
            "control: the target does answer: {log}"
        );
        // Bound to vp, the reply arriving on vx is not the probe's.
        let log = run(r#"{"interface": "vp"}"#);
        assert!(log.contains("no answer within 1000 ms"), "{log}");
    });
}

/// Deletes the namespace when dropped, also when the test fails.
struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
