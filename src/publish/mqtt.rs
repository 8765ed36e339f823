//! MQTT: retained per-define state and per-candidate health, and Home Assistant discovery for
//! them. A run connects only when something changed or the last publish is `refresh_s` old,
//! publishes everything retained with QoS 1, waits for the acknowledgements and disconnects,
//! all within `timeout_ms`.

use super::{Run, candidate, in_effect, reason_name, status};
use crate::config::Config;
use crate::config::publish::Mqtt;
use crate::log;
use crate::model::{Choice, PublishState, Published, State};
use rumqttc::{
    AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: String,
}

/// Host and node as they appear in topics, unique_ids and the device name.
pub struct Node {
    pub id: String,
    pub host: String,
}

impl Node {
    pub fn of(m: &Mqtt) -> Node {
        let host = hostname();
        let id = m.node_id.clone().unwrap_or_else(|| topic_level(&host));
        Node { id, host }
    }
}

/// The host name from gethostname(2): the service's sandbox (`ProcSubset=pid`) hides
/// /proc/sys, and reading it there gave every router the same "localhost".
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it when the
    // name fits, and the last byte is never written, so the search below always ends.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let name = match rc {
        0 => {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
            String::from_utf8_lossy(&buf[..end]).trim().to_string()
        }
        _ => String::new(),
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Letters, digits, `_` and `-` kept, anything else (`.` and `:` of addresses) becomes `_`:
/// safe in topics, object ids and unique_ids.
pub fn topic_level(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn base_topic(m: &Mqtt, node: &Node) -> String {
    m.base_topic
        .clone()
        .unwrap_or_else(|| format!("nftables-failover/{}", node.id))
}

/// Every retained message of a run: per define its state and a sensor's discovery config, per
/// candidate its health and a connectivity binary_sensor's discovery config; without
/// `discovery` only the states. Families without addresses are left out (their define never
/// changes).
pub fn messages(
    m: &Mqtt,
    node: &Node,
    config: &Config,
    run: &Run,
    state: &State,
    p: &PublishState,
    discovery: bool,
) -> Vec<Message> {
    let base = base_topic(m, node);
    let expire = m.expire_after.as_secs();
    let device = json!({
        "identifiers": [format!("nftables_failover_{}", node.id)],
        "name": format!("nftables-failover {}", node.host),
        "model": "nftables-failover",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let origin = json!({ "name": "nftables-failover", "sw": env!("CARGO_PKG_VERSION") });
    let mut out = Vec::new();
    for c in run.choices {
        let var = &config.variables[c.variable];
        if var.addrs(c.family).is_empty() {
            continue;
        }
        let define = c.define(config).to_string();
        let topic = format!("{base}/{define}");
        let unique = format!("nftables_failover_{}_{define}", node.id);
        let value = in_effect(c, run);
        // The candidate in effect: the new pick, or the old one if this run's apply failed.
        let (current, index) = match run.applied {
            Some(false) => (
                c.effective_index
                    .map(|i| crate::describe::candidate(config, c, i)),
                c.effective_index,
            ),
            _ => (candidate(config, c), c.index),
        };
        out.extend(discovery.then(|| {
            Message {
                topic: format!("{}/sensor/{}/{define}/config", m.discovery_prefix, node.id),
                payload: json!({
                    "name": define,
                    "unique_id": unique,
                    "state_topic": topic,
                    "value_template": "{{ value_json.value }}",
                    "json_attributes_topic": topic,
                    "expire_after": expire,
                    "icon": "mdi:swap-horizontal",
                    "device": device,
                    "origin": origin,
                })
                .to_string(),
            }
        }));
        out.push(Message {
            topic: topic.clone(),
            payload: json!({
                "value": value,
                "candidate": current,
                "status": status(c, run),
                "reason": reason_name(c),
                "since": p.since.get(&define).map(|s| s.at),
                "standby_missing": super::missing_standby(config, c, run, state),
            })
            .to_string(),
        });
        let shared = Shared {
            m,
            node,
            expire,
            device: &device,
            origin: &origin,
            discovery,
        };
        let of = Of {
            c,
            define: &define,
            topic: &topic,
            unique: &unique,
            index,
        };
        candidate_messages(&mut out, &shared, config, state, &of);
    }
    out
}

/// What every message of a run shares.
struct Shared<'a> {
    m: &'a Mqtt,
    node: &'a Node,
    expire: u64,
    device: &'a serde_json::Value,
    origin: &'a serde_json::Value,
    discovery: bool,
}

/// The define the candidates' messages belong to.
struct Of<'a> {
    c: &'a Choice,
    define: &'a str,
    topic: &'a str,
    unique: &'a str,
    /// The candidate in effect.
    index: Option<usize>,
}

/// Per candidate of a define: its health, and a connectivity binary_sensor's discovery config.
fn candidate_messages(out: &mut Vec<Message>, s: &Shared, config: &Config, state: &State, of: &Of) {
    let (c, define) = (of.c, of.define);
    let var = &config.variables[c.variable];
    let kept = state.variables.get(&var.name).map(|v| v.family(c.family));
    for (i, addr) in var.addrs(c.family).iter().enumerate() {
        let cand = crate::describe::candidate(config, c, i);
        let level = topic_level(&addr.to_string());
        let ctopic = format!("{}/{level}", of.topic);
        let cunique = format!("{}_{level}", of.unique);
        let kept_candidate = kept
            .and_then(|k| k.candidates.get(i))
            .filter(|s| s.address == *addr);
        let counted = kept_candidate.and_then(|s| s.counted.as_ref());
        let last = kept_candidate.and_then(|s| s.last.as_ref());
        out.extend(s.discovery.then(|| {
            Message {
                topic: format!(
                    "{}/binary_sensor/{}/{define}_{level}/config",
                    s.m.discovery_prefix, s.node.id
                ),
                payload: json!({
                    "name": format!("{define} {cand}"),
                    "unique_id": cunique,
                    "device_class": "connectivity",
                    "state_topic": ctopic,
                    "value_template": "{{ 'ON' if value_json.up else 'OFF' }}",
                    "json_attributes_topic": ctopic,
                    "expire_after": s.expire,
                    "device": s.device,
                    "origin": s.origin,
                })
                .to_string(),
            }
        }));
        out.push(Message {
            topic: ctopic,
            payload: json!({
                "up": counted.map(|c| c.up),
                "since": counted.map(|c| c.since_ms / 1000),
                "drained": state.is_drained(&var.name, addr),
                // Why it is down; not the time of the check, which would make every run
                // publish (a state is republished every refresh_s anyway).
                "error": last.and_then(|l| l.error.as_deref()),
                "candidate": cand,
                "in_use": of.index == Some(i),
            })
            .to_string(),
        });
    }
}

/// What tells a run with something new to publish from one without: the state messages and
/// everything besides them that the discovery configs are made of (their topics and unique_ids
/// follow the state topics).
pub fn digest(m: &Mqtt, node: &Node, states: &[Message]) -> String {
    // The broker too: a new one gets everything at once, not after refresh_s.
    let mut all = format!(
        "{}:{}\0{}\0{}\0{}\0{}\0{}\0",
        m.broker,
        m.port,
        m.discovery_prefix,
        node.id,
        node.host,
        m.expire_after.as_secs(),
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    for msg in states {
        all.extend_from_slice(msg.topic.as_bytes());
        all.push(0);
        all.extend_from_slice(msg.payload.as_bytes());
        all.push(0);
    }
    crate::render::md5_hex(&all)
}

/// Whether this run has to publish: something changed, or the last publish is `refresh` old
/// (Home Assistant's `expire_after` needs a message now and then).
pub fn due(m: &Mqtt, last: Option<&Published>, digest: &str, now: u64) -> bool {
    last.is_none_or(|l| l.digest != digest || now.saturating_sub(l.at) >= m.refresh.as_secs())
}

/// Publishes if due; a failure is a warning and counted, and the next run tries again.
pub fn after_run(
    m: &Mqtt,
    config: &Config,
    run: &Run,
    state: &State,
    p: &mut PublishState,
    now: u64,
) {
    let node = Node::of(m);
    // Discovery configs are only built when there is something to publish: an unchanged run
    // costs the state payloads and a hash.
    let states = messages(m, &node, config, run, state, p, false);
    let digest = digest(m, &node, &states);
    if !due(m, p.mqtt.as_ref(), &digest, now) {
        log::debug("mqtt: nothing changed since the last publish");
        return;
    }
    let msgs = messages(m, &node, config, run, state, p, true);
    let topics: HashSet<&str> = msgs.iter().map(|m| m.topic.as_str()).collect();
    // An empty retained message deletes the retained one; Home Assistant removes the entity.
    let gone: Vec<Message> = p
        .mqtt
        .iter()
        .flat_map(|l| &l.topics)
        .filter(|t| !topics.contains(t.as_str()))
        .map(|t| Message {
            topic: t.clone(),
            payload: String::new(),
        })
        .collect();
    let started = Instant::now();
    let all: Vec<Message> = gone.into_iter().chain(msgs.iter().cloned()).collect();
    match publish(m, &node, &all) {
        Ok(()) => {
            log::debug(&format!(
                "mqtt: published {} messages to {}:{} in {:.0} ms",
                all.len(),
                m.broker,
                m.port,
                started.elapsed().as_secs_f64() * 1e3
            ));
            p.mqtt = Some(Published {
                at: now,
                digest,
                topics: msgs.into_iter().map(|m| m.topic).collect(),
            });
        }
        Err(e) => {
            p.mqtt_failures += 1;
            log::warn(&format!(
                "mqtt: cannot publish to {}:{}: {e:#}; the next run tries again",
                m.broker, m.port
            ));
        }
    }
}

/// Connects, publishes every message retained with QoS 1, waits for all acknowledgements and
/// disconnects, giving up after `m.timeout` in all.
pub fn publish(m: &Mqtt, node: &Node, messages: &[Message]) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(
        m.client_id
            .clone()
            .unwrap_or_else(|| format!("nftables-failover-{}", node.id)),
        m.broker.clone(),
        m.port,
    );
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some(path) = &m.credentials_file {
        let (user, password) = credentials(path)?;
        options.set_credentials(user, password);
        if m.ca_file.is_none() {
            log::warn(&format!(
                "mqtt: the password from {} goes to {}:{} in plain text; set ca_file to use TLS",
                path.display(),
                m.broker,
                m.port
            ));
        }
    }
    if let Some(ca) = &m.ca_file {
        options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(ca)?,
        ))));
    }
    crate::runtime::block_on(async {
        tokio::time::timeout(m.timeout, session(options, messages))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "no complete answer within {} ms (mqtt.timeout_ms)",
                    m.timeout.as_millis()
                ))
            })
    })
}

async fn session(options: MqttOptions, messages: &[Message]) -> anyhow::Result<()> {
    let (client, mut events) = AsyncClient::new(options, messages.len() + 2);
    for msg in messages {
        client
            .publish(
                msg.topic.clone(),
                QoS::AtLeastOnce,
                true,
                msg.payload.clone().into_bytes(),
            )
            .await?;
    }
    let mut acked = 0;
    let mut disconnecting = false;
    loop {
        // Its Display already includes its source; anyhow's chain would print it twice.
        let event = events.poll().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        match event {
            Event::Incoming(Packet::ConnAck(ack))
                if ack.code != rumqttc::ConnectReturnCode::Success =>
            {
                anyhow::bail!("the broker refused the connection: {:?}", ack.code)
            }
            Event::Incoming(Packet::PubAck(_)) => {
                acked += 1;
                if acked == messages.len() && !disconnecting {
                    client.disconnect().await?;
                    disconnecting = true;
                }
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
        if messages.is_empty() && !disconnecting {
            client.disconnect().await?;
            disconnecting = true;
        }
    }
}

/// `USER:PASSWORD` on the first line of a file only the service should read.
fn credentials(path: &Path) -> anyhow::Result<(String, String)> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let bytes = crate::files::read_named(path, "credentials_file")?;
    let text = String::from_utf8_lossy(&bytes);
    if std::fs::metadata(path).is_ok_and(|md| md.permissions().mode() & 0o004 != 0) {
        log::warn(&format!(
            "mqtt: {} is readable by every user; chmod o-r it",
            path.display()
        ));
    }
    let line = text.lines().next().unwrap_or("");
    let (user, password) = line.split_once(':').with_context(|| {
        format!(
            "credentials_file {}: expected USER:PASSWORD on the first line",
            path.display()
        )
    })?;
    Ok((user.to_string(), password.to_string()))
}

fn tls_config(ca_file: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use anyhow::Context;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let pem = crate::files::read_named(ca_file, "ca_file")?;
    let certs = CertificateDer::pem_slice_iter(&pem);
    for cert in certs {
        let cert = cert.with_context(|| format!("ca_file {}", ca_file.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("ca_file {}", ca_file.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("ca_file {}: no certificates in it", ca_file.display());
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mqtt(refresh_s: u64) -> Mqtt {
        Mqtt {
            broker: "b".into(),
            port: 1883,
            ca_file: None,
            credentials_file: None,
            client_id: None,
            base_topic: None,
            discovery_prefix: "homeassistant".into(),
            node_id: None,
            timeout: Duration::from_secs(2),
            refresh: Duration::from_secs(refresh_s),
            expire_after: Duration::from_secs(300),
        }
    }

    #[test]
    fn publishes_on_change_and_every_refresh_otherwise_not() {
        let m = mqtt(60);
        let last = Published {
            at: 1000,
            digest: "d".into(),
            topics: vec![],
        };
        assert!(due(&m, None, "d", 1000), "never published");
        assert!(!due(&m, Some(&last), "d", 1059));
        assert!(due(&m, Some(&last), "d", 1060), "refresh for expire_after");
        assert!(due(&m, Some(&last), "e", 1001), "changed");
        assert!(
            due(&mqtt(0), Some(&last), "d", 1000),
            "refresh_s 0: every run"
        );
    }

    #[test]
    fn digest_follows_the_broker_and_discovery_inputs() {
        let node = Node {
            id: "n".into(),
            host: "h".into(),
        };
        let states = [Message {
            topic: "t".into(),
            payload: "{}".into(),
        }];
        let d = digest(&mqtt(60), &node, &states);
        assert_eq!(d, digest(&mqtt(60), &node, &states));
        let mut other = mqtt(60);
        other.broker = "c".into();
        assert_ne!(d, digest(&other, &node, &states));
        let mut other = mqtt(60);
        other.expire_after = Duration::from_secs(600);
        assert_ne!(d, digest(&other, &node, &states));
        assert_ne!(d, digest(&mqtt(60), &node, &[]));
    }

    #[test]
    fn topic_levels_are_safe_in_topics_and_unique_ids() {
        assert_eq!(topic_level("2001:db8::1"), "2001_db8__1");
        assert_eq!(topic_level("10.0.0.1"), "10_0_0_1");
        assert_eq!(topic_level("router.lan"), "router_lan");
    }
}
