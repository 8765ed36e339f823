//! Live mode against the real `nft` in private network namespaces: a failover updates only
//! `table inet nftables_failover`, traffic follows it, and owned objects flushed by hand come back.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

const PORT: u16 = 8443;

const UPLINK_PORT: u16 = 3129;
const TABLE: &str = "inet nftables_failover";

/// web: 127.0.0.1 then 127.0.0.2; uplink: marks 200 (127.0.0.3) then 201 (127.0.0.4).
fn config(apply: &str) -> String {
    format!(
        r#"{{"settings": {{"apply": "{apply}"}}, "failover": {{
            "web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}},
            "uplink": {{"ip4": ["127.0.0.3", "127.0.0.4"], "port": {UPLINK_PORT}, "values": [200, 201]}}
        }}}}"#
    )
}

/// A live-mode fixture after its first apply, with web's two candidates and the first uplink
/// answering.
fn applied_live() -> (Fixture, Listener, Listener, Listener) {
    applied_live_with("")
}

/// `applied_live` with more of the admin's config at the end of the main config.
fn applied_live_with(extra: &str) -> (Fixture, Listener, Listener, Listener) {
    let primary = listen("127.0.0.1", PORT);
    let backup = listen("127.0.0.2", PORT);
    let up = listen("127.0.0.3", UPLINK_PORT);
    let f = Fixture::new();
    f.write_config(&config("live"));
    write_main_with(&f, extra);
    assert_exit(&f.run(&[]), 0);
    (f, primary, backup, up)
}

/// A main config with `flush ruleset`, the addons, and the admin's rules that use the live
/// objects: chains in the tool's table (sets are per table), with counters.
fn write_main(f: &Fixture) {
    write_main_with(f, "");
}

/// `write_main` with more of the admin's config at its end.
fn write_main_with(f: &Fixture, extra: &str) {
    fs::write(
        &f.main_config,
        format!(
            r#"flush ruleset
include "{addons}/*.nft"
table inet nftables_failover {{
	chain nat_out {{
		type nat hook output priority -100; policy accept;
		ip daddr 198.51.100.80 tcp dport {PORT} dnat ip to tcp dport map @web_v4_map
	}}
	chain mark_out {{
		type route hook output priority -150; policy accept;
		meta mark set tcp dport map @uplink_v4_map
	}}
	chain count {{
		type filter hook output priority filter; policy accept;
		ct state new ip daddr @web_v4 tcp dport {PORT} counter comment "to_live_web"
		ct state new meta mark 200 counter comment "mark_200"
		ct state new meta mark 201 counter comment "mark_201"
	}}
}}
{extra}"#,
            addons = f.addon_dir.display()
        ),
    )
    .unwrap();
}

/// The "foreign" table: another tool's dynamic ban set and a rule counter, added at run time.
fn add_foreign() {
    nft_apply(
        "table ip foreign {\n set bans {\n  type ipv4_addr\n  flags dynamic,timeout\n }\n \
         chain out {\n  type filter hook output priority 5; policy accept;\n  \
         tcp dport 9 counter comment \"discard\"\n  update @bans { ip daddr timeout 1h }\n }\n}\n",
    );
    sh("nft add element ip foreign bans '{ 203.0.113.5 timeout 1h }'");
    // One refused connect to the discard port: the counter moves, the set learns 127.0.0.1.
    let _ = TcpStream::connect_timeout(&"127.0.0.1:9".parse().unwrap(), Duration::from_secs(1));
}

/// Packets of the rule with this comment, or `None` if it is not in the ruleset.
fn counter(comment: &str) -> Option<u64> {
    let rules = ruleset();
    let line = rules
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))?;
    let packets = line.split("packets ").nth(1)?.split(' ').next()?;
    Some(packets.parse().unwrap())
}

fn foreign_state() -> (Option<u64>, bool, bool) {
    let bans = std::process::Command::new("nft")
        .args(["list", "set", "ip", "foreign", "bans"])
        .output()
        .unwrap();
    let bans = String::from_utf8_lossy(&bans.stdout).into_owned();
    (
        counter("discard"),
        bans.contains("203.0.113.5"),
        bans.contains("127.0.0.1"),
    )
}

fn elements(object: &str) -> String {
    let out = sh(&format!("nft list {object}"));
    out.lines()
        .filter(|l| l.contains("elements"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The nft calls of a live update, by what they do: the batch checked, applied, read back.
const TRANSACTION: [&str; 3] = ["check live", "apply live", "read live"];

/// Names each nft call of a run, and fails on one that a live run never makes (a reload, or
/// nft on anything but the staged files).
fn live_calls(calls: &[String]) -> Vec<&'static str> {
    calls
        .iter()
        .map(|c| {
            let file = c.rsplit('/').next().unwrap_or("");
            match (c.split(" /").next().unwrap_or(""), file) {
                ("-c -j -f", "live.json") => "check live",
                // The batch and the listing share the file; the listing follows the batch.
                ("-j -f", "live.json") => "apply live",
                ("-c -f", "nftables.conf") => "check main config",
                _ => panic!("a live run ran `nft {c}`: {calls:?}"),
            }
        })
        .scan(None, |prev: &mut Option<&str>, name| {
            let name = match (*prev, name) {
                (Some("apply live"), "apply live") => "read live",
                _ => name,
            };
            *prev = Some(name);
            Some(name)
        })
        .collect()
}

#[test]
fn live_failover_keeps_foreign_tables_where_a_reload_loses_them() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let _up = listen("127.0.0.3", UPLINK_PORT);
        let f = Fixture::new();
        f.write_config(&config("live"));
        write_main(&f);
        // The first apply has nothing in effect to compare with: a reload.
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("nftables reloaded"),
            "{}",
            stderr(&out)
        );
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.1"));

        add_foreign();
        let before = foreign_state();
        assert!(before.0 >= Some(1) && before.1 && before.2, "{before:?}");
        let calls = f.nft_calls().len();

        drop(primary);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("web_v4: 127.0.0.1 -> 127.0.0.2"), "{log}");
        assert!(log.contains("updated live"), "{log}");
        // Checked, applied, read back, then the include checked with the whole config.
        let mut expect = TRANSACTION.to_vec();
        expect.push("check main config");
        assert_eq!(live_calls(&f.nft_calls()[calls..]), expect);
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.2"));
        assert!(elements(&format!("map {TABLE} web_v4_map")).contains("8443 : 127.0.0.2"));
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.2")
        );
        // The foreign table, its dynamic elements and its counter are untouched.
        assert_eq!(foreign_state(), before);
        // The include now loads exactly the live state: a full reload changes no element.
        let live = elements(&format!("map {TABLE} web_v4_map"));
        sh(&format!("nft -f {}", f.main_config.display()));
        assert_eq!(elements(&format!("map {TABLE} web_v4_map")), live);

        // The same failover (back to the primary) in reload mode, the rules using the define.
        f.write_config(&config("reload"));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 counter accept");
        assert_exit(&f.run(&[]), 0);
        add_foreign();
        assert!(foreign_state().1);
        let _primary = listen("127.0.0.1", PORT);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("nftables reloaded"),
            "{}",
            stderr(&out)
        );
        assert_eq!(
            define(&f.output_text().unwrap(), "web_v4"),
            Some("127.0.0.1")
        );
        assert_eq!(foreign_state(), (None, false, false), "{}", ruleset());
    });
}

/// Connects to `addr` and returns the address of the listener that accepted.
fn served_by(addr: &str, listeners: &[&Listener]) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = stream.read(&mut [0; 1]);
    for l in listeners {
        l.0.set_nonblocking(true).unwrap();
        if let Ok((conn, _)) = l.0.accept() {
            return conn.local_addr().unwrap().ip().to_string();
        }
    }
    panic!("no listener accepted the connection to {addr}");
}

#[test]
fn traffic_follows_a_live_failover() {
    in_netns(|| {
        // The service address is a documentation address, routed over loopback in this namespace.
        sh("ip route add 198.51.100.0/24 dev lo");
        let primary = listen("127.0.0.1", PORT);
        let backup = listen("127.0.0.2", PORT);
        let uplink_a = listen("127.0.0.3", UPLINK_PORT);
        let _uplink_b = listen("127.0.0.4", UPLINK_PORT);
        let f = Fixture::new();
        f.write_config(&config("live"));
        write_main(&f);
        assert_exit(&f.run(&[]), 0);

        let vip = format!("198.51.100.80:{PORT}");
        let to_live = counter("to_live_web").unwrap();
        assert_eq!(served_by(&vip, &[&primary, &backup]), "127.0.0.1");
        assert_eq!(counter("to_live_web"), Some(to_live + 1));
        let (m200, m201) = (counter("mark_200").unwrap(), counter("mark_201").unwrap());
        let _ = TcpStream::connect(("127.0.0.3", UPLINK_PORT)).unwrap();
        assert!(counter("mark_200").unwrap() > m200);
        assert_eq!(counter("mark_201"), Some(m201));

        // Both fail over in one live transaction; the rules' counters carry on.
        drop(uplink_a);
        drop(primary);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(stderr(&out).contains("updated live"), "{}", stderr(&out));
        assert!(
            counter("to_live_web").unwrap() > to_live,
            "counter was reset"
        );

        let to_live = counter("to_live_web").unwrap();
        assert_eq!(served_by(&vip, &[&backup]), "127.0.0.2");
        assert_eq!(counter("to_live_web"), Some(to_live + 1));
        let (m200, m201) = (counter("mark_200").unwrap(), counter("mark_201").unwrap());
        let _ = TcpStream::connect(("127.0.0.4", UPLINK_PORT)).unwrap();
        assert!(counter("mark_201").unwrap() > m201);
        assert_eq!(counter("mark_200"), Some(m200));
    });
}

#[test]
fn owned_objects_flushed_by_hand_are_restored_by_the_next_run() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let _up = listen("127.0.0.3", UPLINK_PORT);
        let f = Fixture::new();
        f.write_config(&config("live"));
        write_main(&f);
        assert_exit(&f.run(&[]), 0);
        add_foreign();
        let foreign = foreign_state();

        // An unchanged run reads the objects back and leaves them alone.
        let calls = f.nft_calls().len();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("restor"), "{}", stderr(&out));
        assert_eq!(f.nft_calls()[calls..].len(), 1, "{:?}", f.nft_calls());

        sh(&format!(
            "nft flush set {TABLE} web_v4; nft flush map {TABLE} uplink_v4_map"
        ));
        assert_eq!(elements(&format!("set {TABLE} web_v4")), "");
        let calls = f.nft_calls().len();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(
            log.contains("web_v4 holds no element instead of [\"127.0.0.1\"]"),
            "{log}"
        );
        assert!(log.contains("uplink_v4_map holds no element"), "{log}");
        assert!(log.contains("restored"), "{log}");
        // Read back (unchanged run), then the transaction; the include was already checked.
        let mut expect = vec!["apply live"];
        expect.extend(TRANSACTION);
        assert_eq!(live_calls(&f.nft_calls()[calls..]), expect);
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.1"));
        assert!(elements(&format!("map {TABLE} uplink_v4_map")).contains("3129 : 0x000000c8"));
        assert_eq!(foreign_state(), foreign);

        // The whole ruleset flushed: the table and the admin's chains in it come back by a reload.
        sh("nft flush ruleset");
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("not in the running ruleset"), "{log}");
        assert!(log.contains("recreated by the reload"), "{log}");
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.1"));
        assert!(ruleset().contains("chain nat_out"), "{}", ruleset());
    });
}

#[test]
fn a_failed_live_update_changes_nothing_and_is_retried() {
    in_netns(|| {
        let (f, primary, _backup, _up) = applied_live();
        let include = f.output_text().unwrap();
        let record = fs::read(f.addon_dir.join(".failover.nft.applied")).unwrap();

        // A batch the kernel refuses: someone redeclared the uplink's map with another type,
        // so the batch's `add map` conflicts, after its web_v4 updates.
        sh(&format!(
            "nft flush chain {TABLE} mark_out; nft delete map {TABLE} uplink_v4_map; \
             nft 'add map {TABLE} uplink_v4_map {{ type inet_service : ipv4_addr; }}'"
        ));
        drop(primary);
        let calls = f.nft_calls().len();
        let out = f.run(&[]);
        assert_exit(&out, 1);
        let log = stderr(&out);
        assert!(log.contains("check of the live update failed"), "{log}");
        assert!(log.contains("keep their values"), "{log}");
        // The check refused the batch, so it was never applied.
        assert_eq!(live_calls(&f.nft_calls()[calls..]), ["check live"]);
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.1"));
        assert_eq!(f.output_text().unwrap(), include);
        assert_eq!(
            fs::read(f.addon_dir.join(".failover.nft.applied")).unwrap(),
            record
        );
    });
}

#[test]
fn a_failover_while_the_owned_table_is_gone_reloads_and_says_so() {
    in_netns(|| {
        let (f, primary, _backup, _up) = applied_live();

        sh(&format!("nft delete table {TABLE}"));
        drop(primary);
        let calls = f.nft_calls().len();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(log.contains("is not in the running ruleset"), "{log}");
        assert!(log.contains("nftables reloaded"), "{log}");
        // The refused check of the batch, then the reload's staged and main checks.
        let new_calls = &f.nft_calls()[calls..];
        assert!(new_calls[0].starts_with("-c -j -f "), "{new_calls:?}");
        assert!(
            new_calls.iter().any(|c| c.starts_with("-c -f ")),
            "{new_calls:?}"
        );
        assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.2"));
        assert!(ruleset().contains("chain nat_out"), "{}", ruleset());
    });
}

#[test]
fn a_live_value_the_whole_config_refuses_is_set_back_and_never_installed() {
    in_netns(|| {
        let (f, primary, _backup, _up) = applied_live_with(GUARD);
        assert!(ruleset().contains("table ip guard"), "{}", ruleset());
        add_foreign();
        let foreign = foreign_state();
        let include = f.output_text().unwrap();
        let record = fs::read(f.addon_dir.join(".failover.nft.applied")).unwrap();

        drop(primary);
        for _ in 0..2 {
            let calls = f.nft_calls().len();
            let out = f.run(&[]);
            assert_exit(&out, 1);
            let log = stderr(&out);
            assert!(log.contains("conflicting intervals"), "{log}");
            assert!(log.contains("set back to the values in effect"), "{log}");
            // Switched, refused by the whole config, switched back; never a reload.
            let mut expect = TRANSACTION.to_vec();
            expect.push("check main config");
            expect.extend(TRANSACTION);
            assert_eq!(live_calls(&f.nft_calls()[calls..]), expect);
            // The kernel runs what a boot would load, and that still loads.
            assert!(elements(&format!("set {TABLE} web_v4")).contains("127.0.0.1"));
            assert!(elements(&format!("map {TABLE} web_v4_map")).contains("8443 : 127.0.0.1"));
            assert_eq!(f.output_text().unwrap(), include);
            assert_eq!(
                fs::read(f.addon_dir.join(".failover.nft.applied")).unwrap(),
                record
            );
            sh(&format!("nft -c -f {}", f.main_config.display()));
            assert_eq!(foreign_state(), foreign);
        }
    });
}
