//! The text of the failover include and of the staged check config. Pure.

use crate::config::Config;
use crate::select::Choice;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

const INCLUDE_TEMPLATE: &str = include_str!("../templates/failover.nft");
const STAGED_MAIN_TEMPLATE: &str = include_str!("../templates/staged-main.nft");

/// The include file: the header, then `define NAME_v4 = …` and `define NAME_v6 = …` per variable
/// in config order. Nothing in it depends on time, so equal health renders equal bytes.
pub fn include(config: &Config, choices: &[Choice]) -> String {
    let mut defines = String::new();
    for c in choices {
        let name = &config.variables[c.variable].name;
        let _ = writeln!(
            defines,
            "define {name}_{} = {}",
            c.family.suffix(),
            c.rendered
        );
    }
    defines.push_str(&crate::apply::live::declarations(
        &crate::apply::live::objects(config, choices),
    ));
    INCLUDE_TEMPLATE.replace("{defines}\n", &defines)
}

/// The staged main config: includes the candidate include first, then the other files.
/// Paths are quoted for nft; a path nft cannot quote is refused by the caller.
pub fn staged_main(candidate: &Path, includes: &[&Path]) -> String {
    let mut lines = String::new();
    for p in includes {
        let _ = writeln!(lines, "include \"{}\"", p.display());
    }
    STAGED_MAIN_TEMPLATE
        .replace("{candidate}", &candidate.display().to_string())
        .replace("{includes}\n", &lines)
}

/// Whether nft can include this path: its include statement takes a double-quoted string
/// with no escapes.
pub fn includable(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|s| !s.contains(['"', '\n', '\r']))
}

/// Hex MD5 of a text, as the reference addon compares old and new includes.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `define NAME = VALUE` pairs of an include we rendered earlier, to log what changed.
pub fn parse_defines(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("define "))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{self, Family};
    use crate::select::{self, DownReason, Health};
    use std::time::Duration;

    /// Renders the shipped example config with every candidate at `up_index` up and all
    /// others refused (`None`: all down).
    fn render_example(up_index: Option<usize>) -> String {
        let text = include_str!("../etc/nftables.d/addons/failover.json");
        let config = config::parse(text, Path::new("failover.json")).unwrap();
        let mut results = select::empty_results(&config);
        for per_variable in results.iter_mut() {
            for f in Family::ALL {
                for (i, slot) in per_variable[f as usize].iter_mut().enumerate() {
                    *slot = Some(if Some(i) == up_index {
                        Health::Up {
                            latency: Duration::from_millis(1),
                        }
                    } else {
                        Health::Down(DownReason::Refused)
                    });
                }
            }
        }
        let inputs = select::Inputs::new(&config, &Default::default(), &Default::default());
        let (choices, _) = select::decide(&config, &results, &inputs, 0);
        include(&config, &choices)
    }

    #[test]
    fn shipped_example_matches_golden_files() {
        let cases = [
            (Some(0), include_str!("../tests/golden/example-all-up.nft")),
            (
                Some(1),
                include_str!("../tests/golden/example-first-down.nft"),
            ),
            (None, include_str!("../tests/golden/example-all-down.nft")),
        ];
        for (up, golden) in cases {
            assert_eq!(render_example(up), golden, "candidate {up:?} up");
        }
    }

    #[test]
    fn md5_matches_known_vector() {
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn staged_main_lists_candidate_first() {
        let text = staged_main(
            Path::new("/run/x/failover.nft"),
            &[
                Path::new("/etc/nftables.d/addons/dns.nft"),
                Path::new("/etc/nftables.d/a.nft"),
            ],
        );
        let includes: Vec<_> = text.lines().filter(|l| l.starts_with("include")).collect();
        assert_eq!(
            includes,
            [
                "include \"/run/x/failover.nft\"",
                "include \"/etc/nftables.d/addons/dns.nft\"",
                "include \"/etc/nftables.d/a.nft\"",
            ]
        );
    }

    #[test]
    fn includable_refuses_quotes_and_newlines() {
        assert!(includable(Path::new("/etc/nftables.d/a b.nft")));
        assert!(!includable(Path::new("/etc/x\".nft")));
        assert!(!includable(Path::new("/etc/x\n.nft")));
    }

    #[test]
    fn parse_defines_reads_rendered_text() {
        let text = "# header\n\ndefine a_v4 = 10.0.0.1\ndefine a_v6 = ::\n";
        let d = parse_defines(text);
        assert_eq!(d["a_v4"], "10.0.0.1");
        assert_eq!(d["a_v6"], "::");
    }
}
