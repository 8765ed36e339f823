//! Property tests: only validated literals reach the failover include, whatever the config, the
//! state file or the include on disk hold, and no input makes the parsers panic.
//!
//! Rendered lines are checked against an oracle written here, independent of
//! `render::is_literal` and `config::parse_value`, so a bug in either shows up. A sample of the
//! rendered includes is also loaded with the real `nft -c`, inside a private network namespace.

use nftables_failover::config::{self, Config, Family};
use nftables_failover::model::{self, DownReason, Health};
use nftables_failover::model::{FamilyState, State, VariableState};
use nftables_failover::render;
use nftables_failover::select;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, TestCaseError, TestRunner};
use serde_json::{Map, Value as J, json};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cases per property. With 100 each, a reintroduced bug (`is_literal` taking `;`, `parse_value`
/// taking any string, `include` without its check) already fails most runs; these leave margin
/// and keep the file at about 10 s.
const CONFIG_CASES: u32 = 3000;
const PARSER_CASES: u32 = 4000;
const DEFINES_CASES: u32 = 3000;
/// Includes from accepted configs that are also loaded with `nft -c`, in batches.
const NFT_CASES: usize = 1000;
const NFT_BATCH: usize = 250;

const HEADER: [&str; 2] = ["# Auto-Generated config - DO NOT EDIT MANUALLY!", ""];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(RunConfig {
        cases,
        // Many configs are refused; that is expected and not a reason to stop.
        max_global_rejects: cases * 10,
        failure_persistence: None,
        ..RunConfig::default()
    })
}

// ---------- the oracle ----------

fn oracle_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The literal forms a config renders, each in its canonical text.
fn oracle_literal(s: &str) -> bool {
    if let Some(hex) = s.strip_prefix("0x") {
        return (1..=16).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    s.parse::<u64>().is_ok_and(|n| n.to_string() == s)
        || s.parse::<Ipv4Addr>().is_ok_and(|a| a.to_string() == s)
        || s.parse::<Ipv6Addr>().is_ok_and(|a| a.to_string() == s)
        || oracle_identifier(s)
}

/// `define NAME_v4|v6 = LITERAL`, split into name and literal, or why not.
fn oracle_define(line: &str) -> Result<(&str, &str), String> {
    let (name, value) = line
        .strip_prefix("define ")
        .and_then(|l| l.split_once(" = "))
        .ok_or_else(|| format!("not a define line: {line:?}"))?;
    let stem = name
        .strip_suffix("_v4")
        .or_else(|| name.strip_suffix("_v6"))
        .ok_or_else(|| format!("define name without _v4/_v6: {line:?}"))?;
    if !oracle_identifier(stem) {
        return Err(format!("define name is not an identifier: {line:?}"));
    }
    if !oracle_literal(value) {
        return Err(format!("define value is not a literal: {line:?}"));
    }
    Ok((name, value))
}

// ---------- generators ----------

/// Strings nothing should render: nft syntax, whitespace, unicode, near-misses of literals.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1; flush ruleset",
            "a\n table x {}",
            "a\ntable inet x { }",
            "10.0.0.1; flush ruleset",
            "a\"b",
            "}",
            "{",
            "a;b",
            "$x",
            "@set",
            "# x",
            "ä",
            "a b",
            "a\tb",
            "",
            " ",
            "1abc",
            "0x",
            "0X1F",
            "0x12345678901234567",
            "-1",
            "+1",
            "007",
            "1.5",
            "1e3",
            "18446744073709551616",
            "2001:DB8::1",
            "2001:db8:0:0::1",
            "::FFFF:1.2.3.4",
            "10.0.0.1/24",
            "10.0.0.1 ",
            " 10.0.0.1",
            "010.0.0.1",
            "256.0.0.1",
            "db.example.com",
            "include \"/etc/shadow\"",
            "\u{202e}x",
            "x\u{0}",
            "x\r",
            "a-b",
        ])
        .prop_map(String::from),
        "[ -~]{0,12}",
        "(?s).{0,10}",
    ]
}

fn identifier() -> impl Strategy<Value = String> {
    "[A-Za-z_][A-Za-z0-9_]{0,8}"
}

/// Identifiers for `values`. nft reserves many lowercase words (`drop`, `table`, `meta`, ...) and
/// refuses them as a define's value; none of its keywords holds an upper-case letter or `_`, so
/// these identifiers always parse. (The config accepts a keyword too; nft -c then refuses the
/// include before it is installed.)
fn value_identifier() -> impl Strategy<Value = String> {
    identifier().prop_map(|s| {
        if s.chars().any(|c| c == '_' || c.is_ascii_uppercase()) {
            s
        } else {
            format!("{s}_")
        }
    })
}

fn v4() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => any::<[u8; 4]>().prop_map(|o| Ipv4Addr::from(o).to_string()),
        1 => prop::sample::select(vec!["0.0.0.0", "127.0.0.1", "255.255.255.255", "192.0.2.1"])
            .prop_map(String::from),
    ]
}

fn v6() -> impl Strategy<Value = String> {
    let group = prop_oneof![3 => Just(0u16), 1 => Just(1u16), 2 => any::<u16>()];
    let groups = prop::array::uniform8(group);
    prop_oneof![
        4 => groups.clone().prop_map(|g| Ipv6Addr::from(g).to_string()),
        // Not canonical: the config takes it, and must render it canonically.
        2 => groups.prop_map(|g| g.map(|x| format!("{x:X}")).join(":")),
        1 => prop::sample::select(vec!["::", "::1", "::ffff:1.2.3.4", "2001:DB8::2:2", "fe80::1"])
            .prop_map(String::from),
    ]
}

/// Canonical literals, as a state file or an include might hold them.
fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..1000).prop_map(|n| n.to_string()),
        "0x[0-9a-fA-F]{1,16}",
        v4(),
        v6().prop_map(|s| s.parse::<Ipv6Addr>().map_or(s, |a| a.to_string())),
        value_identifier(),
    ]
}

fn address(family: Family) -> impl Strategy<Value = J> {
    let (own, other) = match family {
        Family::V4 => (v4().boxed(), v6().boxed()),
        Family::V6 => (v6().boxed(), v4().boxed()),
    };
    prop_oneof![
        200 => own.prop_map(J::String),
        1 => other.prop_map(J::String),
        1 => hostile().prop_map(J::String),
        1 => Just(json!("db.example.com")),
        1 => any::<u32>().prop_map(|n| json!(n)),
    ]
}

fn value() -> impl Strategy<Value = J> {
    prop_oneof![
        40 => any::<u64>().prop_map(|n| json!(n)),
        40 => (0u64..1000).prop_map(|n| json!(n)),
        20 => any::<u64>().prop_map(|n| json!(n.to_string())),
        30 => "0x[0-9a-fA-F]{1,16}".prop_map(J::String),
        30 => value_identifier().prop_map(J::String),
        20 => v4().prop_map(J::String),
        20 => v6().prop_map(J::String),
        1 => "0x[0-9a-f]{17,18}".prop_map(J::String),
        1 => (-1000i64..0).prop_map(|n| json!(n)),
        1 => Just(json!(1.5)),
        1 => Just(json!(null)),
        3 => hostile().prop_map(J::String),
    ]
}

/// `ip4`/`ip6`: absent, `n` addresses, one address as a string, or a list of any length.
fn address_list(family: Family, n: usize) -> impl Strategy<Value = Option<J>> {
    prop_oneof![
        4 => Just(None),
        20 => prop::collection::vec(address(family), n).prop_map(|v| Some(J::Array(v))),
        2 => address(family).prop_map(Some),
        1 => prop::collection::vec(address(family), 0..5).prop_map(|v| Some(J::Array(v))),
    ]
}

fn values_list(n: usize) -> impl Strategy<Value = Option<J>> {
    prop_oneof![
        1 => Just(None),
        20 => prop::collection::vec(value(), n).prop_map(|v| Some(J::Array(v))),
        1 => prop::collection::vec(value(), 0..5).prop_map(|v| Some(J::Array(v))),
        1 => value().prop_map(Some),
    ]
}

/// Settings keys, valid most of the time, to merge into "settings" or a variable. A fallback
/// comes mostly with `all_down: "fallback"`, as the config requires.
fn settings(with_values: bool) -> impl Strategy<Value = Map<String, J>> {
    let count = prop_oneof![
        20 => (1u64..5).prop_map(|n| json!(n)),
        1 => prop::sample::select(vec![json!(0), json!("2"), json!(1001)]),
    ];
    let all_down = prop_oneof![
        18 => Just(None),
        6 => Just(Some("first")),
        12 => Just(Some("keep")),
        20 => Just(Some("fallback")),
        1 => Just(Some("drop")),
    ];
    let per_family = || (v4(), v6()).prop_map(|(a, b)| json!({"ip4": a, "ip6": b}));
    let fallback = if with_values {
        prop_oneof![20 => value(), 1 => per_family()].boxed()
    } else {
        prop_oneof![
            40 => per_family(),
            1 => (address(Family::V4), address(Family::V6)).prop_map(|(a, b)| json!({"ip4": a, "ip6": b})),
            1 => value(),
        ]
        .boxed()
    };
    (
        prop::option::weighted(0.2, count.clone()),
        prop::option::weighted(0.2, count),
        prop::option::weighted(0.2, any::<bool>()),
        prop::option::weighted(
            0.1,
            prop_oneof![20 => (0u64..100).prop_map(|n| json!(n)), 1 => Just(json!(-1))],
        ),
        all_down,
        fallback,
        prop::bool::weighted(0.03),
    )
        .prop_map(|(fall, rise, preempt, delay, all_down, fallback, stray)| {
            let wants_fallback = all_down == Some("fallback");
            let fallback = (wants_fallback != stray).then_some(fallback);
            let mut m = Map::new();
            let keys = [
                "fall",
                "rise",
                "preempt",
                "preempt_delay_s",
                "all_down",
                "fallback",
            ];
            let vals = [
                fall,
                rise,
                preempt.map(J::Bool),
                delay,
                all_down.map(|s| json!(s)),
                fallback,
            ];
            for (k, v) in keys.into_iter().zip(vals) {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            m
        })
}

fn variable() -> impl Strategy<Value = J> {
    (1usize..5, any::<bool>()).prop_flat_map(|(n, with_values)| {
        let port = prop_oneof![
            40 => (1u32..=65535).prop_map(|p| json!(p)),
            1 => prop::sample::select(vec![json!(0), json!(65536), json!("443"), json!(-1), json!(1.5)]),
        ];
        (
            address_list(Family::V4, n),
            address_list(Family::V6, n),
            if with_values { values_list(n).boxed() } else { Just(None).boxed() },
            port,
            settings(with_values),
            prop::option::weighted(0.01, hostile()),
        )
            .prop_map(|(ip4, ip6, values, port, mut body, extra_key)| {
                for (k, v) in [("ip4", ip4), ("ip6", ip6), ("values", values)] {
                    if let Some(v) = v {
                        body.insert(k.into(), v);
                    }
                }
                body.insert("port".into(), port);
                if let Some(k) = extra_key {
                    body.insert(k, json!(1));
                }
                J::Object(body)
            })
    })
}

fn variable_name() -> impl Strategy<Value = String> {
    prop_oneof![40 => identifier(), 1 => hostile()]
}

/// A config as JSON text: accepted by `config::parse` about half the time.
fn config_text() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.2, settings(false)),
        prop::collection::vec((variable_name(), variable()), 1..5),
    )
        .prop_map(|(settings, vars)| {
            let mut top = Map::new();
            if let Some(s) = settings {
                // Global settings apply to every variable; a value fallback there is fine only
                // when every all_down: fallback variable maps values, which the config decides.
                top.insert("settings".into(), J::Object(s));
            }
            top.insert("failover".into(), J::Object(vars.into_iter().collect()));
            J::Object(top).to_string()
        })
}

/// What the state file and the include on disk say for one variable and family.
#[derive(Debug, Clone)]
struct History {
    state_rendered: Option<String>,
    selected: Option<usize>,
    live: Option<String>,
}

fn history(hostile_history: bool) -> impl Strategy<Value = History> {
    let text = if hostile_history {
        prop_oneof![literal(), hostile()].boxed()
    } else {
        literal().boxed()
    };
    (
        prop::option::of(text.clone()),
        prop::option::of(0usize..5),
        prop::option::of(text),
    )
        .prop_map(|(state_rendered, selected, live)| History {
            state_rendered,
            selected,
            live,
        })
}

#[derive(Debug, Clone)]
struct Case {
    config: String,
    /// Check results, used in turn for every candidate; `None`: not checked.
    health: Vec<Option<bool>>,
    /// Half the cases only hold literals here, half also hostile text.
    history: Vec<History>,
}

fn case() -> impl Strategy<Value = Case> {
    (config_text(), any::<bool>()).prop_flat_map(|(config, hostile_history)| {
        (
            prop::collection::vec(
                prop_oneof![4 => Just(Some(true)), 4 => Just(Some(false)), 1 => Just(None)],
                1..12,
            ),
            prop::collection::vec(history(hostile_history), 8),
        )
            .prop_map(move |(health, history)| Case {
                config: config.clone(),
                health,
                history,
            })
    })
}

// ---------- (a) rendered configs ----------

fn results(config: &Config, health: &[Option<bool>], offset: usize) -> model::Results {
    let mut results = model::empty_results(config);
    let mut k = offset;
    for per_variable in results.iter_mut() {
        for outcomes in per_variable.iter_mut() {
            for slot in outcomes.iter_mut() {
                *slot = health[k % health.len()].map(|up| {
                    if up {
                        Health::Up {
                            latency: Duration::from_millis(1),
                        }
                    } else {
                        Health::Down(DownReason::Refused)
                    }
                });
                k += 1;
            }
        }
    }
    results
}

/// The previous state and the include on disk, from the generated history.
fn previous(config: &Config, history: &[History]) -> (State, String) {
    let mut state = State {
        version: 1,
        variables: BTreeMap::new(),
        ..State::default()
    };
    let mut live = String::from("# Auto-Generated config - DO NOT EDIT MANUALLY!\n\n");
    let mut h = history.iter().cycle();
    for var in &config.variables {
        let mut family_state = |family: Family| {
            let h = h.next().unwrap();
            if let Some(text) = &h.live {
                live.push_str(&format!(
                    "define {}_{} = {text}\n",
                    var.name,
                    family.suffix()
                ));
            }
            FamilyState {
                candidates: Vec::new(),
                selected: h.selected,
                rendered: h.state_rendered.clone(),
                all_down: false,
            }
        };
        let v4 = family_state(Family::V4);
        let v6 = family_state(Family::V6);
        state.variables.insert(
            var.name.clone(),
            VariableState {
                fingerprint: var.fingerprint(),
                v4,
                v6,
            },
        );
    }
    (state, live)
}

/// One run's decision, from the previous state and the defines of the include on disk.
fn decide(
    config: &Config,
    results: &model::Results,
    previous: &State,
    on_disk: &HashMap<&str, std::borrow::Cow<'_, str>>,
    now: u64,
) -> (Vec<model::Choice>, State) {
    let inputs = select::Inputs::new(config, previous, on_disk);
    select::decide(config, results, &inputs, now)
}

/// A validated config yields only literals, whatever the state and the include on disk say.
fn check_choices(choices: &[model::Choice]) -> Result<(), TestCaseError> {
    for c in choices {
        prop_assert!(oracle_literal(&c.rendered), "chose {:?}", c);
    }
    Ok(())
}

/// Every line is the header or a define the oracle accepts, and exactly the choices with a
/// literal value are rendered, in order.
fn check_include(
    config: &Config,
    choices: &[model::Choice],
    text: &str,
) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    prop_assert!(text.ends_with('\n'), "unterminated include: {text:?}");
    prop_assert!(lines.len() >= HEADER.len(), "no header: {text:?}");
    for (line, header) in lines.iter().zip(HEADER) {
        prop_assert_eq!(line.trim_end_matches('\n'), header);
    }
    let mut defines = Vec::new();
    for line in &lines[HEADER.len()..] {
        let line = line.strip_suffix('\n').unwrap_or(line);
        match oracle_define(line) {
            Ok(_) => defines.push(line.to_string()),
            Err(e) => return Err(TestCaseError::fail(format!("{e}\ninclude:\n{text}"))),
        }
    }
    let expected: Vec<String> = choices
        .iter()
        .filter(|c| oracle_literal(&c.rendered))
        .map(|c| {
            format!(
                "define {}_{} = {}",
                config.variables[c.variable].name,
                c.family.suffix(),
                c.rendered
            )
        })
        .collect();
    prop_assert_eq!(&defines, &expected, "include:\n{}", text);
    prop_assert_eq!(render::validate_include(text), Ok(()));
    Ok(())
}

#[test]
fn random_configs_render_only_literals() {
    // The nested config strategy is deep; unoptimized, it needs more than the default stack.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(render_random_configs)
        .unwrap()
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn render_random_configs() {
    let started = Instant::now();
    let accepted = Mutex::new(0u32);
    let for_nft = Mutex::new(Vec::<String>::new());
    runner(CONFIG_CASES)
        .run(&case(), |case| {
            let Ok(config) = config::parse(&case.config, Path::new("failover.json")) else {
                return Ok(());
            };
            *accepted.lock().unwrap() += 1;
            // Every name and value in an accepted config is a literal.
            for var in &config.variables {
                prop_assert!(oracle_identifier(&var.name), "{:?}", var.name);
                for f in Family::ALL {
                    for i in 0..var.addrs(f).len() {
                        let r = var.rendered(f, i);
                        prop_assert!(oracle_literal(&r), "{}: {:?}", var.name, r);
                    }
                    if let Some(r) = var.fallback(f) {
                        prop_assert!(oracle_literal(&r), "{} fallback: {:?}", var.name, r);
                    }
                }
            }
            // Two runs: from the generated history, then from what the first one left.
            let (state, live_text) = previous(&config, &case.history);
            let live = render::parse_defines(&live_text);
            let (choices, state) = decide(
                &config,
                &results(&config, &case.health, 0),
                &state,
                &live,
                100,
            );
            check_choices(&choices)?;
            let text = render::include(&config, &choices);
            check_include(&config, &choices, &text)?;

            let live = render::parse_defines(&text);
            let (choices2, _) = decide(
                &config,
                &results(&config, &case.health, 1),
                &state,
                &live,
                200,
            );
            check_choices(&choices2)?;
            check_include(&config, &choices2, &render::include(&config, &choices2))?;

            // Should a value that is not a literal ever reach the renderer, its define is left
            // out and nothing else changes.
            let mut tampered = choices2;
            let mut with = case.history.iter().cycle();
            for c in tampered.iter_mut() {
                if let Some(text) = with.next().unwrap().state_rendered.clone() {
                    c.rendered = text;
                }
            }
            check_include(&config, &tampered, &render::include(&config, &tampered))?;

            let mut for_nft = for_nft.lock().unwrap();
            if for_nft.len() < NFT_CASES {
                for_nft.push(text);
            }
            Ok(())
        })
        .unwrap();
    let accepted = accepted.into_inner().unwrap();
    let includes = for_nft.into_inner().unwrap();
    eprintln!(
        "{CONFIG_CASES} configs, {accepted} accepted and rendered twice, in {:.1?}",
        started.elapsed()
    );
    // A generator that no longer produces valid configs would make this test vacuous.
    assert!(
        accepted >= CONFIG_CASES / 5,
        "only {accepted} of {CONFIG_CASES} generated configs were valid"
    );
    assert!(includes.len() >= NFT_CASES.min(accepted as usize));

    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    for (b, batch) in includes.chunks(NFT_BATCH).enumerate() {
        nft_check(dir.path(), b, batch);
    }
    eprintln!(
        "{} includes accepted by nft -c in {:.1?}",
        includes.len(),
        started.elapsed()
    );
}

/// How a rule uses a define with this literal, so nft checks it in a context of its type.
fn use_of(name: &str, value: &str) -> String {
    let number = value.strip_prefix("0x").map_or_else(
        || value.parse::<u64>().ok(),
        |h| u64::from_str_radix(h, 16).ok(),
    );
    if let Some(n) = number {
        // A fwmark, as the reference config uses values; larger numbers in a 64-bit field.
        if n <= u32::MAX.into() {
            format!("meta mark set ${name}")
        } else {
            format!("ct bytes > ${name}")
        }
    } else if value.parse::<Ipv4Addr>().is_ok() {
        format!("ip daddr ${name}")
    } else if value.parse::<Ipv6Addr>().is_ok() {
        format!("ip6 daddr ${name}")
    } else {
        format!("iifname ${name}")
    }
}

/// Loads each include with the real `nft -c`, from one main file per batch: each include is
/// followed by a table whose rules use all of its defines, then its defines are undefined for
/// the next one. `nft -c` only checks, and runs in a fresh network namespace all the same.
fn nft_check(dir: &Path, batch_no: usize, includes: &[String]) {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs nft -c in a network namespace and needs root (CI runs as root)"
    );
    let mut main = String::new();
    for (i, text) in includes.iter().enumerate() {
        let path = dir.join(format!("b{batch_no}-{i}.nft"));
        std::fs::write(&path, text).unwrap();
        let defines: Vec<(&str, &str)> =
            text.lines().filter_map(|l| oracle_define(l).ok()).collect();
        main.push_str(&format!(
            "include \"{}\"\ntable inet t{i} {{\n  chain c {{\n",
            path.display()
        ));
        for (name, value) in &defines {
            main.push_str(&format!("    {}\n", use_of(name, value)));
        }
        main.push_str("  }\n}\n");
        for (name, _) in &defines {
            main.push_str(&format!("undefine {name}\n"));
        }
    }
    let main_path = dir.join(format!("main{batch_no}.nft"));
    std::fs::write(&main_path, &main).unwrap();
    let out = Command::new("unshare")
        .args(["--net", "/usr/sbin/nft", "-c", "-f"])
        .arg(&main_path)
        .output()
        .expect("run unshare --net nft");
    assert!(
        out.status.success(),
        "nft -c refused a rendered include:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------- (b) parsers never panic ----------

const EXAMPLE: &str = include_str!("../etc/nftables.d/addons/failover.json");

/// The example with `all_down: "keep"`: with every candidate down, what the state says is
/// rendered is what gets rendered again.
fn keep_config() -> String {
    let text = EXAMPLE.replacen(
        "\"failover\": {",
        "\"settings\": {\"all_down\": \"keep\"}, \"failover\": {",
        1,
    );
    assert_ne!(text, EXAMPLE);
    text
}

/// A state file as a run of the shipped example writes it.
fn example_state() -> String {
    let config = config::parse(EXAMPLE, Path::new("failover.json")).unwrap();
    let health: Vec<Option<bool>> = vec![Some(false), Some(true)];
    let (_, state) = decide(
        &config,
        &results(&config, &health, 0),
        &State::default(),
        &HashMap::new(),
        100,
    );
    serde_json::to_string(&state).unwrap()
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Replace(usize, u8),
    Duplicate(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = prop_oneof![
        hostile().prop_map(String::into_bytes),
        prop::sample::select(vec![
            "\"",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "//",
            "/*",
            "*/",
            "\\",
            "\\u0000",
            "\\ud800",
            "null",
            "-",
            "0",
            "1e999",
            "99999999999999999999",
            "\"keep\"",
            "\"fallback\"",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 1..6),
    ];
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(p, n)| Edit::Delete(p, n)),
        (any::<usize>(), snippet).prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Replace(p, b)),
        (any::<usize>(), 1usize..20, any::<usize>())
            .prop_map(|(p, n, to)| Edit::Duplicate(p, n, to)),
    ]
}

fn mutate(text: &str, edits: &[Edit]) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let len = b.len().max(1);
        match e {
            Edit::Delete(p, n) => {
                let p = p % len;
                let end = (p + n).min(b.len());
                if p < end {
                    b.drain(p..end);
                }
            }
            Edit::Insert(p, s) => {
                let p = p % (b.len() + 1);
                b.splice(p..p, s.iter().copied());
            }
            Edit::Replace(p, x) => {
                if !b.is_empty() {
                    let p = p % b.len();
                    b[p] = *x;
                }
            }
            Edit::Duplicate(p, n, to) => {
                let p = p % len;
                let slice: Vec<u8> = b[p.min(b.len())..(p + n).min(b.len())].to_vec();
                let to = to % (b.len() + 1);
                b.splice(to..to, slice);
            }
        }
    }
    b
}

/// Parsing any config bytes returns, and whatever is accepted renders only literals.
fn config_survives(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    if let Ok(config) = config::parse(&text, Path::new("failover.json")) {
        let health = vec![Some(true), Some(false)];
        let (choices, _) = decide(
            &config,
            &results(&config, &health, 0),
            &State::default(),
            &HashMap::new(),
            1,
        );
        check_choices(&choices)?;
        check_include(&config, &choices, &render::include(&config, &choices))?;
    }
    Ok(())
}

/// Parsing any state bytes returns, and a state that parses, used as history for the example
/// config with every candidate down, still renders only literals.
fn state_survives(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(state) = serde_json::from_slice::<State>(bytes) {
        let config = config::parse(&keep_config(), Path::new("failover.json")).unwrap();
        let down = vec![Some(false)];
        let (choices, _) = decide(
            &config,
            &results(&config, &down, 0),
            &state,
            &HashMap::new(),
            1,
        );
        check_choices(&choices)?;
        check_include(&config, &choices, &render::include(&config, &choices))?;
    }
    Ok(())
}

#[test]
fn random_bytes_never_panic_the_parsers() {
    let started = Instant::now();
    let bytes = prop::collection::vec(any::<u8>(), 0..300);
    runner(PARSER_CASES)
        .run(&bytes, |b| {
            config_survives(&b)?;
            state_survives(&b)
        })
        .unwrap();
    runner(PARSER_CASES)
        .run(&"(?s).{0,200}", |s| {
            config_survives(s.as_bytes())?;
            state_survives(s.as_bytes())
        })
        .unwrap();
    eprintln!(
        "{} random inputs to config and state parsing in {:.1?}",
        2 * PARSER_CASES,
        started.elapsed()
    );
}

#[test]
fn mutated_config_and_state_never_panic_the_parsers() {
    let started = Instant::now();
    let state = example_state();
    let edits = prop::collection::vec(edit(), 1..6);
    runner(PARSER_CASES)
        .run(&edits, |edits| {
            config_survives(&mutate(EXAMPLE, &edits))?;
            config_survives(&mutate(&keep_config(), &edits))?;
            state_survives(&mutate(&state, &edits))
        })
        .unwrap();
    eprintln!(
        "{PARSER_CASES} mutations each of a config, a keep config and a state in {:.1?}",
        started.elapsed()
    );
}

// ---------- (c) parse_defines ----------

fn define_text() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    let line = prop_oneof![
        // A well-formed define: must be read back.
        4 => (identifier(), literal()).prop_map(|(n, v)| (format!("define {n} = {v}"), Some((n, v)))),
        3 => (prop_oneof![identifier(), hostile()], prop_oneof![literal(), hostile()])
            .prop_map(|(n, v)| (format!("define {n} = {v}"), None)),
        1 => hostile().prop_map(|s| (s, None)),
        1 => "(?s)[ -~\n\r\t]{0,30}".prop_map(|s| (s, None)),
    ];
    (
        prop::collection::vec(line, 0..12),
        prop_oneof![Just("\n"), Just("\r\n")],
    )
        .prop_map(|(lines, sep)| {
            let text = lines
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(sep);
            let good = lines.into_iter().filter_map(|(_, g)| g).collect();
            (text, good)
        })
}

#[test]
fn parse_defines_returns_only_identifier_literal_pairs() {
    let started = Instant::now();
    runner(DEFINES_CASES)
        .run(&define_text(), |(text, good)| {
            let defines = render::parse_defines(&text);
            for (k, v) in &defines {
                prop_assert!(oracle_identifier(k), "name {:?} from {:?}", k, text);
                prop_assert!(oracle_literal(v), "value {:?} from {:?}", v, text);
            }
            // Well-formed defines are read back, unless another line redefined the name.
            for (k, _) in &good {
                prop_assert!(
                    defines.contains_key(k.as_str()),
                    "{:?} lost from {:?}",
                    k,
                    text
                );
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "{DEFINES_CASES} texts through parse_defines in {:.1?}",
        started.elapsed()
    );
}
