//! MQTT against a real Mosquitto broker on loopback, in a private network namespace: retained
//! state and Home Assistant discovery as a real subscriber (mosquitto_sub) sees them, with and
//! without a password file and over TLS, and the bound on what an unreachable broker costs.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 8443;
const MQTT_PORT: u16 = 18830;

/// A mosquitto process on 127.0.0.1:MQTT_PORT, killed on drop.
struct Broker {
    child: Child,
    log: PathBuf,
}

impl Broker {
    /// Starts mosquitto with `extra` config lines and waits until it accepts connections.
    fn start(dir: &Path, extra: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        fs::write(
            &conf,
            format!(
                "user root\npersistence false\nlog_dest stderr\nlistener {MQTT_PORT} 127.0.0.1\n{extra}\n"
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("mosquitto (Debian package mosquitto)");
        let broker = Broker { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", MQTT_PORT)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start: {}",
                fs::read_to_string(&broker.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every retained message under our topics as mosquitto_sub receives it: topic → payload.
fn retained(extra: &[&str]) -> BTreeMap<String, String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &MQTT_PORT.to_string()])
        .args(["-t", "nftables-failover/#", "-t", "homeassistant/#"])
        .args(["-v", "--retained-only", "-W", "1"])
        .args(extra)
        .output()
        .expect("mosquitto_sub (Debian package mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t.to_string(), p.to_string()))
        .collect()
}

fn json(msgs: &BTreeMap<String, String>, topic: &str) -> Value {
    let payload = msgs
        .get(topic)
        .unwrap_or_else(|| panic!("no retained {topic} in {msgs:#?}"));
    serde_json::from_str(payload).unwrap()
}

fn web_config(mqtt: &str, addrs: &[&str]) -> String {
    format!(
        r#"{{"settings": {{"mqtt": {{"broker": "127.0.0.1", "port": {MQTT_PORT}, "node_id": "testnode", {mqtt}}}}},
            "failover": {{"web": {{"ip4": {}, "port": {PORT}}}}}}}"#,
        serde_json::to_string(addrs).unwrap()
    )
}

const STATE: &str = "nftables-failover/testnode/web_v4";

#[test]
fn retained_state_and_discovery_arrive_and_follow_a_failover() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        let broker = Broker::start(f.dir.path(), "allow_anonymous true");
        f.write_config(&web_config(
            r#""timeout_ms": 1000"#,
            &["127.0.0.1", "127.0.0.2"],
        ));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");

        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("mqtt"), "{}", stderr(&out));
        let msgs = retained(&[]);
        let sensor = json(&msgs, "homeassistant/sensor/testnode/web_v4/config");
        assert_eq!(sensor["unique_id"], "nftables_failover_testnode_web_v4");
        assert_eq!(sensor["state_topic"], STATE);
        assert_eq!(sensor["expire_after"], 300);
        assert_eq!(
            sensor["device"]["identifiers"][0],
            "nftables_failover_testnode"
        );
        let binary = json(
            &msgs,
            "homeassistant/binary_sensor/testnode/web_v4_127_0_0_1/config",
        );
        assert_eq!(binary["device_class"], "connectivity");
        assert_eq!(
            binary["unique_id"],
            "nftables_failover_testnode_web_v4_127_0_0_1"
        );
        assert_eq!(binary["state_topic"], format!("{STATE}/127_0_0_1"));
        assert_eq!(binary["device"], sensor["device"]);
        let state = json(&msgs, STATE);
        assert_eq!(state["value"], "127.0.0.1");
        assert_eq!(state["candidate"], "127.0.0.1:8443");
        assert_eq!(state["reason"], "preferred");
        let since = state["since"].as_u64().unwrap();
        assert_eq!(json(&msgs, &format!("{STATE}/127_0_0_1"))["up"], true);
        assert_eq!(json(&msgs, &format!("{STATE}/127_0_0_1"))["in_use"], true);
        // A family without addresses has nothing to show.
        assert!(!msgs.keys().any(|t| t.contains("web_v6")), "{msgs:#?}");

        std::thread::sleep(Duration::from_millis(1100)); // so `since` can move
        drop(primary);
        assert_exit(&f.run(&[]), 0);
        let msgs = retained(&[]);
        let state = json(&msgs, STATE);
        assert_eq!(state["value"], "127.0.0.2");
        assert_eq!(state["candidate"], "127.0.0.2:8443");
        assert_eq!(state["reason"], "failed_over");
        assert_eq!(state["status"], "failed_over");
        assert!(state["since"].as_u64().unwrap() > since, "{state}");
        assert_eq!(json(&msgs, &format!("{STATE}/127_0_0_1"))["up"], false);
        assert_eq!(json(&msgs, &format!("{STATE}/127_0_0_2"))["in_use"], true);

        // Unchanged runs do not connect: with the broker gone they do not even notice.
        drop(broker);
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("mqtt"), "{}", stderr(&out));
        // A change with the broker down: applied, a warning, the same exit code.
        let primary = listen("127.0.0.1", PORT);
        let started = Instant::now();
        let out = f.run(&[]);
        // A stopped broker refuses at once; in any case it costs at most timeout_ms (1 s).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_exit(&out, 0);
        assert!(ruleset().contains("ip daddr 127.0.0.1 tcp dport 8443"));
        assert!(
            stderr(&out).contains("warning: mqtt: cannot publish to 127.0.0.1:18830"),
            "{}",
            stderr(&out)
        );
        // The broker is back (empty: no persistence): the next run, although unchanged,
        // publishes what failed.
        let _broker = Broker::start(f.dir.path(), "allow_anonymous true");
        assert_exit(&f.run(&[]), 0);
        assert_eq!(json(&retained(&[]), STATE)["value"], "127.0.0.1");

        // A candidate removed from the config: its retained topics are cleared, so Home
        // Assistant drops its entity.
        drop(primary);
        f.write_config(&web_config(r#""timeout_ms": 1000"#, &["127.0.0.2"]));
        assert_exit(&f.run(&[]), 0);
        let msgs = retained(&[]);
        assert!(!msgs.keys().any(|t| t.contains("127_0_0_1")), "{msgs:#?}");
        assert_eq!(json(&msgs, STATE)["value"], "127.0.0.2");
        assert!(msgs.contains_key(&format!("{STATE}/127_0_0_2")));
    });
}

#[test]
fn password_file_and_credentials_file() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let dir = f.dir.path();
        let passwd = dir.join("passwd");
        sh(&format!(
            "mosquitto_passwd -b -c {} failover s3cret:x",
            passwd.display()
        ));
        let _broker = Broker::start(
            dir,
            &format!("allow_anonymous false\npassword_file {}", passwd.display()),
        );
        let creds = dir.join("mqtt.credentials");
        fs::write(&creds, "failover:wrong\n").unwrap();
        fs::set_permissions(&creds, fs::Permissions::from_mode(0o600)).unwrap();
        f.write_config(&web_config(
            &format!(r#""credentials_file": "{}""#, creds.display()),
            &["127.0.0.1"],
        ));
        f.write_main("");
        let out = f.run(&[]);
        assert_exit(&out, 0);
        let log = stderr(&out);
        assert!(
            log.contains("warning: mqtt: cannot publish to 127.0.0.1:18830"),
            "{log}"
        );
        assert!(!log.contains("readable by every user"), "{log}");
        let auth = ["-u", "failover", "-P", "s3cret:x"];
        assert!(retained(&auth).is_empty());

        // The right password (with a colon in it): the next run publishes, though unchanged.
        fs::write(&creds, "failover:s3cret:x\n").unwrap();
        let out = f.run(&[]);
        assert_exit(&out, 0);
        // Published, with the one warning that the password went without TLS.
        let log = stderr(&out);
        let mqtt: Vec<&str> = log.lines().filter(|l| l.contains("mqtt")).collect();
        assert_eq!(mqtt.len(), 1, "{log}");
        assert!(
            mqtt[0].contains("goes to 127.0.0.1:18830 in plain text; set ca_file"),
            "{mqtt:?}"
        );
        assert_eq!(json(&retained(&auth), STATE)["value"], "127.0.0.1");
        // Anonymous subscribers see nothing.
        assert!(retained(&[]).is_empty());
    });
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn make_certs(dir: &Path, ca: &str) {
    let d = dir.display();
    sh(&format!(
        "cd {d} && \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
           -keyout {ca}.key -out {ca}.pem -subj /CN={ca} \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null && \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
           -keyout {ca}-server.key -out {ca}-server.csr -subj /CN=127.0.0.1 2>/dev/null && \
         printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > {ca}-ext.cnf && \
         openssl x509 -req -in {ca}-server.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial \
           -days 1 -extfile {ca}-ext.cnf -out {ca}-server.pem 2>/dev/null"
    ));
}

#[test]
fn tls_with_the_configured_ca_and_refused_with_another() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let dir = f.dir.path();
        make_certs(dir, "ca");
        make_certs(dir, "other");
        let _broker = Broker::start(
            dir,
            &format!(
                "allow_anonymous true\ncafile {0}/ca.pem\ncertfile {0}/ca-server.pem\nkeyfile {0}/ca-server.key",
                dir.display()
            ),
        );
        let tls = ["--cafile", &format!("{}/ca.pem", dir.display())];
        f.write_main("");
        // A broker whose certificate the configured CA did not sign is refused.
        f.write_config(&web_config(
            &format!(r#""ca_file": "{}/other.pem""#, dir.display()),
            &["127.0.0.1"],
        ));
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(
            stderr(&out).contains("warning: mqtt: cannot publish to 127.0.0.1:18830"),
            "{}",
            stderr(&out)
        );
        assert!(retained(&tls).is_empty());

        f.write_config(&web_config(
            &format!(r#""ca_file": "{}/ca.pem""#, dir.display()),
            &["127.0.0.1"],
        ));
        let out = f.run(&[]);
        assert_exit(&out, 0);
        assert!(!stderr(&out).contains("mqtt"), "{}", stderr(&out));
        let msgs = retained(&tls);
        assert_eq!(json(&msgs, STATE)["value"], "127.0.0.1");
        assert!(msgs.contains_key("homeassistant/sensor/testnode/web_v4/config"));
    });
}

#[test]
fn an_unreachable_broker_costs_at_most_the_timeout_after_the_apply() {
    in_netns(|| {
        let primary = listen("127.0.0.1", PORT);
        let _backup = listen("127.0.0.2", PORT);
        let f = Fixture::new();
        f.write_config(&format!(
            r#"{{"settings": {{"mqtt": {{"broker": "127.0.0.9", "timeout_ms": 500}}}},
                "failover": {{"web": {{"ip4": ["127.0.0.1", "127.0.0.2"], "port": {PORT}}}}}}}"#
        ));
        // SYNs to the broker are dropped, in the main config so that every reload keeps it:
        // the connect hangs until our timeout.
        f.write_main(
            "  ip daddr $web_v4 tcp dport 8443 accept\n  ip daddr 127.0.0.9 tcp dport 1883 drop",
        );
        assert_exit(&f.run(&[]), 0);
        drop(primary);
        let started = Instant::now();
        let out = f.run(&[]);
        let took = started.elapsed();
        assert_exit(&out, 0);
        assert!(ruleset().contains("ip daddr 127.0.0.2 tcp dport 8443"));
        let log = stderr(&out);
        let applied = log.find("applied and nftables reloaded").expect(&log);
        let warned = log
            .find(
                "warning: mqtt: cannot publish to 127.0.0.9:1883: no complete answer within 500 ms",
            )
            .expect(&log);
        assert!(applied < warned, "the apply must come first:\n{log}");
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_millis(2000), "{took:?}");
    });
}

/// The node id defaults to the host name, read with gethostname(2): under the unit's
/// `ProcSubset=pid` there is no /proc/sys, and two routers must not share one node.
#[test]
fn the_node_id_is_the_host_name_under_the_units_proc_subset() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        let _broker = Broker::start(f.dir.path(), "allow_anonymous true");
        f.write_config(&format!(
            r#"{{"settings": {{"mqtt": {{"broker": "127.0.0.1", "port": {MQTT_PORT}}}}},
                "failover": {{"web": {{"ip4": ["127.0.0.1"], "port": {PORT}}}}}}}"#
        ));
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");
        // A host name of its own and the unit's /proc (ProtectProc=invisible, ProcSubset=pid).
        let script = "hostname router-a.example && \
                      mount -t proc -o hidepid=invisible,subset=pid proc /proc && \
                      test ! -e /proc/sys/kernel/hostname && exec \"$0\" \"$@\"";
        let mut cmd = f.command(
            &[
                "unshare",
                "--uts",
                "--mount",
                "--pid",
                "--fork",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
            ],
            &f.reload(),
        );
        cmd.arg("-v");
        let out = output_within(cmd, Duration::from_secs(30));
        assert_exit(&out, 0);
        let msgs = retained(&[]);
        assert!(
            msgs.contains_key("nftables-failover/router-a_example/web_v4"),
            "{msgs:#?}\n{}",
            stderr(&out)
        );
        assert!(!msgs.keys().any(|t| t.contains("localhost")), "{msgs:#?}");
    });
}

/// Files the config names are read like the config: a FIFO or a device as `credentials_file`
/// or `ca_file` is refused at once with a warning naming it, never read (a FIFO blocked the run
/// for good, /dev/zero read until memory ran out).
#[test]
fn a_fifo_or_device_named_by_the_config_is_refused_at_once() {
    in_netns(|| {
        let _primary = listen("127.0.0.1", PORT);
        let f = Fixture::new();
        f.write_main("  ip daddr $web_v4 tcp dport 8443 accept");
        let fifo = f.dir.path().join("fifo");
        // A /dev/zero of root's own (the real one is writable by everyone, which a root run
        // refuses before reading anything).
        let zero = f.dir.path().join("zero");
        sh(&format!(
            "mkfifo -m 600 {} && mknod -m 600 {} c 1 5",
            fifo.display(),
            zero.display()
        ));
        for (key, path, says) in [
            ("credentials_file", fifo.display().to_string(), "a FIFO"),
            (
                "credentials_file",
                zero.display().to_string(),
                "not a regular file",
            ),
            ("ca_file", fifo.display().to_string(), "a FIFO"),
            ("ca_file", zero.display().to_string(), "not a regular file"),
        ] {
            f.write_config(&web_config(
                &format!(r#""timeout_ms": 1000, "{key}": "{path}""#),
                &["127.0.0.1"],
            ));
            let _ = std::fs::remove_file(&f.output);
            let started = Instant::now();
            let out = f.run(&[]);
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{key} {path}: {:?}",
                started.elapsed()
            );
            assert_exit(&out, 0);
            let log = stderr(&out);
            assert!(
                log.contains(&format!("{key} {path}: ")) && log.contains(says),
                "{key} {path}: {log}"
            );
        }
    });
}
