//! The kernel's word on candidates' paths. Pure.
//!
//! A probe through an interface that has lost its carrier, or from a source address that is no
//! longer on the host, can only fail; waiting for it to time out `fall` times leaves traffic on
//! a dead uplink for seconds that the kernel already knew about. So a candidate whose path the
//! kernel rules out counts as down at once ([`DownReason::Kernel`]); when the path is back, its
//! checks and the usual `rise`/preempt rules decide. Candidates without an interface or source
//! in their path (a plain TCP check, a firewall mark alone) are never judged here.

use crate::config::check::ProbePath;
use crate::config::{Config, Family};
use crate::model::{self, DownReason, Health, LinkView, OperState, Results};

/// Whether any candidate's path names an interface or a source address, i.e. whether the
/// kernel's view is worth asking for.
pub fn needed(config: &Config) -> bool {
    config
        .variables
        .iter()
        .filter_map(|v| v.uplink.paths.as_ref())
        .flatten()
        .any(|p| p.interface.is_some() || p.source4.is_some() || p.source6.is_some())
}

/// The candidates the kernel rules out, as results (down with the reason); every other
/// candidate is `None`, left to its checks.
pub fn verdicts(config: &Config, view: &LinkView) -> Results {
    let mut results = model::empty_results(config);
    for (vi, var) in config.variables.iter().enumerate() {
        let Some(paths) = &var.uplink.paths else {
            continue;
        };
        for family in Family::ALL {
            let outcomes = &mut results[vi][family];
            for (i, slot) in outcomes.iter_mut().enumerate() {
                if let Some(why) = paths.get(i).and_then(|p| verdict(p, family, view)) {
                    *slot = Some(Health::Down(DownReason::Kernel(why)));
                }
            }
        }
    }
    results
}

/// Why the kernel rules out `path` for `family`, if it does.
pub fn verdict(path: &ProbePath, family: Family, view: &LinkView) -> Option<String> {
    if let Some(name) = &path.interface {
        let Some(link) = view.links.get(name) else {
            return Some(format!("interface {name} gone"));
        };
        if !link.up {
            return Some(format!("interface {name} is down"));
        }
        if !link.carrier {
            return Some(format!("carrier lost on {name}"));
        }
        let state = match link.oper {
            OperState::Up | OperState::Unknown => None,
            OperState::Down | OperState::NotPresent => Some("carrier lost on"),
            OperState::LowerLayerDown => Some("lower layer down under"),
            OperState::Dormant => Some("dormant:"),
            OperState::Testing => Some("in test mode:"),
        };
        if let Some(state) = state {
            return Some(format!("{state} {name}"));
        }
    }
    let source = path.source(family)?;
    (!view.addresses.contains(&source))
        .then(|| format!("source address {source} is not on this host"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Link;

    fn view(links: &[(&str, Link)], addresses: &[&str]) -> LinkView {
        LinkView {
            links: links.iter().map(|(n, l)| (n.to_string(), *l)).collect(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    const UP: Link = Link {
        up: true,
        carrier: true,
        oper: OperState::Up,
    };

    fn dev(name: &str) -> ProbePath {
        ProbePath {
            interface: Some(name.into()),
            ..ProbePath::default()
        }
    }

    #[test]
    fn interface_states() {
        let v4 = Family::V4;
        let tunnel = Link {
            oper: OperState::Unknown,
            ..UP
        };
        let no_carrier = Link {
            carrier: false,
            oper: OperState::LowerLayerDown,
            ..UP
        };
        let admin_down = Link {
            up: false,
            carrier: false,
            oper: OperState::Down,
        };
        let dormant = Link {
            oper: OperState::Dormant,
            ..UP
        };
        let v = view(
            &[
                ("wan", UP),
                ("wg0", tunnel),
                ("cut", no_carrier),
                ("off", admin_down),
                ("wifi", dormant),
            ],
            &[],
        );
        assert_eq!(verdict(&dev("wan"), v4, &v), None);
        assert_eq!(verdict(&dev("wg0"), v4, &v), None);
        assert_eq!(verdict(&dev("cut"), v4, &v).unwrap(), "carrier lost on cut");
        assert_eq!(
            verdict(&dev("off"), v4, &v).unwrap(),
            "interface off is down"
        );
        assert_eq!(verdict(&dev("wifi"), v4, &v).unwrap(), "dormant: wifi");
        assert_eq!(
            verdict(&dev("ppp0"), v4, &v).unwrap(),
            "interface ppp0 gone"
        );
    }

    #[test]
    fn source_addresses_per_family() {
        let path = ProbePath {
            source4: Some("198.51.100.2".parse().unwrap()),
            source6: Some("2001:db8::2".parse().unwrap()),
            ..ProbePath::default()
        };
        let v = view(&[], &["198.51.100.2"]);
        assert_eq!(verdict(&path, Family::V4, &v), None);
        assert_eq!(
            verdict(&path, Family::V6, &v).unwrap(),
            "source address 2001:db8::2 is not on this host"
        );
        // A mark alone is for the routing rules to judge, not for this.
        let mark = ProbePath {
            mark: Some(1),
            ..ProbePath::default()
        };
        assert_eq!(verdict(&mark, Family::V4, &view(&[], &[])), None);
    }

    #[test]
    fn verdicts_mark_only_the_ruled_out_candidates() {
        let parse = |text: &str| crate::config::parse(text, std::path::Path::new("t.json"));
        let config = parse(
            r#"{"failover": {"wan": {"ip4": ["192.0.2.1", "192.0.2.2", "192.0.2.3"],
                "paths": [{"interface": "isp1"}, {"interface": "isp2"}, {"mark": 2}],
                "check": {"method": "icmp", "targets": ["203.0.113.1"]}},
              "web": {"ip4": ["127.0.0.1"], "port": 80}}}"#,
        )
        .unwrap();
        assert!(needed(&config));
        let v = view(&[("isp2", UP)], &[]);
        let r = verdicts(&config, &v);
        assert_eq!(
            r[0][Family::V4],
            vec![
                Some(Health::Down(DownReason::Kernel(
                    "interface isp1 gone".into()
                ))),
                None,
                None
            ]
        );
        assert_eq!(r[1][Family::V4], vec![None]);
        let plain = parse(r#"{"failover": {"web": {"ip4": ["127.0.0.1"], "port": 80}}}"#);
        assert!(!needed(&plain.unwrap()));
    }
}
