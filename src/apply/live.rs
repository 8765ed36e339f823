//! Live mode: a change of a live variable reaches the kernel as one nftables transaction that
//! rewrites only the elements of the sets and maps in `table inet nftables_failover`; nothing
//! else in the ruleset is flushed, reloaded or reordered.
//!
//! The same objects are declared in the include (filled from its defines), so a boot or a full
//! reload loads exactly what a live update left behind. The batch is built from the `nftables`
//! crate's typed schema, checked with `nft -c -j -f` and applied with `nft -j -f`; a `list table`
//! request staged in the same fixed file reads the objects back, so sudoers allows two fixed
//! command lines.

use crate::command::Runner;
use crate::config::{ApplyMode, Config, Family, Value};
use crate::files::write_atomically;
use crate::select::Choice;
use anyhow::{Context, Result, anyhow, bail};
use nftables::expr::Expression;
use nftables::schema::{
    Element, FlushObject, Map, NfCmd, NfListObject, NfObject, Nftables, Set, SetType, SetTypeValue,
    Table,
};
use nftables::types::NfFamily;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The table that holds every object this tool updates live. Other tables cannot reference
/// its sets (nft sets are per table), so rules that use them are chains in this table.
pub const TABLE: &str = "nftables_failover";
/// File name of the staged batch (and of the listing request) inside the staging directory.
pub const LIVE_FILE: &str = "live.json";

/// What a live define's value is, which fixes the type of its set and map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ipv4,
    Ipv6,
    Mark,
}

impl Kind {
    fn set_type(self) -> SetType {
        match self {
            Kind::Ipv4 => SetType::Ipv4Addr,
            Kind::Ipv6 => SetType::Ipv6Addr,
            Kind::Mark => SetType::Mark,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Ipv4 => "ipv4_addr",
            Kind::Ipv6 => "ipv6_addr",
            Kind::Mark => "mark",
        }
    }
}

/// One live define: `NAME_v4` of a variable in live mode, for a family it has candidates in.
/// It owns a set `NAME_v4` (addresses only: `ip daddr @NAME_v4`) and a map `NAME_v4_map` from
/// the variable's port to the value (`dnat ip to tcp dport map @NAME_v4_map`,
/// `meta mark set tcp dport map @NAME_v4_map`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub define: String,
    pub port: u16,
    pub kind: Kind,
    pub value: String,
}

impl Object {
    fn has_set(&self) -> bool {
        self.kind != Kind::Mark
    }

    fn map_name(&self) -> String {
        format!("{}_map", self.define)
    }

    fn element(&self) -> Result<Expression<'static>> {
        Ok(match self.kind {
            Kind::Ipv4 | Kind::Ipv6 => Expression::String(self.value.clone().into()),
            Kind::Mark => Expression::Number(parse_mark(&self.value).with_context(|| {
                format!(
                    "{}: {:?} is not a 32-bit mark; live mode stores marks as 32-bit integers",
                    self.define, self.value
                )
            })?),
        })
    }

    fn map_element(&self) -> Result<Expression<'static>> {
        Ok(Expression::List(vec![
            Expression::Number(u32::from(self.port)),
            self.element()?,
        ]))
    }
}

fn parse_mark(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The live defines of a run, in config order. Pure.
pub fn objects(config: &Config, choices: &[Choice]) -> Vec<Object> {
    let mut out = Vec::new();
    for c in choices {
        let var = &config.variables[c.variable];
        if var.policy.apply != ApplyMode::Live || var.addrs(c.family).is_empty() {
            continue;
        }
        let kind = match (&var.values, c.family) {
            (Some(values), _) => match values.first() {
                Some(Value::Address(IpAddr::V6(_))) => Kind::Ipv6,
                Some(Value::Address(IpAddr::V4(_))) => Kind::Ipv4,
                _ => Kind::Mark,
            },
            (None, Family::V4) => Kind::Ipv4,
            (None, Family::V6) => Kind::Ipv6,
        };
        out.push(Object {
            define: format!("{}_{}", var.name, c.family.suffix()),
            port: var.port,
            kind,
            value: c.rendered.clone(),
        });
    }
    out
}

/// The include's declaration of the live objects, filled from the defines above it. The
/// flushes make a reload without `flush ruleset` converge too, instead of adding elements.
pub fn declarations(objects: &[Object]) -> String {
    if objects.is_empty() {
        return String::new();
    }
    let mut decl = String::new();
    let mut fill = String::new();
    for o in objects {
        let (d, t) = (&o.define, o.kind.name());
        if o.has_set() {
            let _ = write!(decl, "\tset {d} {{\n\t\ttype {t}\n\t}}\n");
            let _ = writeln!(fill, "flush set inet {TABLE} {d}");
            let _ = writeln!(fill, "add element inet {TABLE} {d} {{ ${d} }}");
        }
        let m = o.map_name();
        let _ = write!(decl, "\tmap {m} {{\n\t\ttype inet_service : {t}\n\t}}\n");
        let _ = writeln!(fill, "flush map inet {TABLE} {m}");
        let _ = writeln!(fill, "add element inet {TABLE} {m} {{ {} : ${d} }}", o.port);
    }
    format!(
        "\n# Live mode: nftables-failover updates these elements in place (README, \"Live mode\").\n\
         table inet {TABLE} {{\n{decl}}}\n{fill}"
    )
}

/// Whether going from `old` to `new` changes only the values of live defines, so that a
/// transaction on the live objects brings the kernel where a reload of `new` would.
pub fn only_values_changed(old: &[u8], new: &[u8], objects: &[Object]) -> bool {
    let mask = |text: &[u8]| -> Option<String> {
        let text = std::str::from_utf8(text).ok()?;
        Some(
            text.lines()
                .map(
                    |l| match l.strip_prefix("define ").and_then(|r| r.split_once(" = ")) {
                        Some((name, _)) if objects.iter().any(|o| o.define == name) => {
                            format!("define {name} = *")
                        }
                        _ => l.to_string(),
                    },
                )
                .collect::<Vec<_>>()
                .join("\n"),
        )
    };
    mask(old).is_some() && mask(old) == mask(new)
}

fn table() -> Table<'static> {
    Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    }
}

fn set(name: &str, kind: Kind) -> Set<'static> {
    Set {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(kind.set_type()),
        ..Set::default()
    }
}

fn map(name: &str, kind: Kind) -> Map<'static> {
    Map {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::InetService),
        map: SetTypeValue::Single(kind.set_type()),
        ..Map::default()
    }
}

fn element(name: &str, elem: Expression<'static>) -> NfListObject<'static> {
    NfListObject::Element(Element {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.to_string().into(),
        elem: Cow::Owned(vec![elem]),
    })
}

/// The transaction: (re)declare the objects (a no-op when they exist), then replace every
/// element. One batch, so the kernel switches atomically or not at all. It does not create the
/// table: if that is gone, so are the admin's chains in it, and only a reload brings them back.
pub fn batch(objects: &[Object]) -> Result<Nftables<'static>> {
    use NfCmd::{Add, Flush};
    let mut cmds = Vec::new();
    for o in objects {
        if o.has_set() {
            let s = set(&o.define, o.kind);
            cmds.push(Add(NfListObject::Set(Box::new(s.clone()))));
            cmds.push(Flush(FlushObject::Set(Box::new(s))));
            cmds.push(Add(element(&o.define, o.element()?)));
        }
        let m = map(&o.map_name(), o.kind);
        cmds.push(Add(NfListObject::Map(Box::new(m.clone()))));
        cmds.push(Flush(FlushObject::Map(Box::new(m))));
        cmds.push(Add(element(&o.map_name(), o.map_element()?)));
    }
    Ok(Nftables {
        objects: cmds.into_iter().map(NfObject::CmdObject).collect(),
    })
}

/// A request for the kernel's copy of the table (nft prints it as JSON).
fn list_request() -> Nftables<'static> {
    Nftables {
        objects: Cow::Owned(vec![NfObject::CmdObject(NfCmd::List(NfListObject::Table(
            table(),
        )))]),
    }
}

/// The elements of the sets and maps in the kernel's table, by object name.
pub type Live = BTreeMap<String, Vec<Expression<'static>>>;

/// Reads the sets and maps of a `list table` answer. Only those are parsed with the schema:
/// the table may also hold the admin's chains, whose rules this tool does not need to know.
pub fn parse_listing(json: &[u8]) -> Result<Live> {
    let doc: serde_json::Value =
        serde_json::from_slice(json).context("nft printed something that is not JSON")?;
    let items = doc
        .get("nftables")
        .and_then(|v| v.as_array())
        .ok_or_else(|| anyhow!("nft's JSON has no \"nftables\" array"))?;
    let mut live = Live::new();
    for item in items {
        if let Some(v) = item.get("set") {
            let s: Set =
                serde_json::from_value(v.clone()).context("unexpected set in nft's JSON")?;
            live.insert(
                s.name.into_owned(),
                s.elem.map(Cow::into_owned).unwrap_or_default(),
            );
        } else if let Some(v) = item.get("map") {
            let m: Map =
                serde_json::from_value(v.clone()).context("unexpected map in nft's JSON")?;
            live.insert(
                m.name.into_owned(),
                m.elem.map(Cow::into_owned).unwrap_or_default(),
            );
        }
    }
    Ok(live)
}

/// What the kernel should hold for `objects`.
pub fn expected(objects: &[Object]) -> Result<Live> {
    let mut live = Live::new();
    for o in objects {
        if o.has_set() {
            live.insert(o.define.clone(), vec![o.element()?]);
        }
        live.insert(o.map_name(), vec![o.map_element()?]);
    }
    Ok(live)
}

/// Each object whose kernel elements differ from the expected ones, described for the log.
pub fn differences(expected: &Live, live: &Live) -> Vec<String> {
    let show = |elems: &[Expression]| match elems {
        [] => "no element".to_string(),
        _ => serde_json::to_string(elems).unwrap_or_default(),
    };
    expected
        .iter()
        .filter_map(|(name, want)| match live.get(name) {
            None => Some(format!("{name} is missing")),
            Some(have) if have != want => Some(format!(
                "{name} holds {} instead of {}",
                show(have),
                show(want)
            )),
            Some(_) => None,
        })
        .collect()
}

/// The nft command lines of live mode, always in these forms so sudoers can allow them exactly:
/// `nft -c -j -f FILE` (check) and `nft -j -f FILE` (apply, or list).
fn nft_argv(nft: &Path, file: &Path, check: bool) -> Vec<OsString> {
    let mut argv = vec![nft.as_os_str().to_owned()];
    if check {
        argv.push("-c".into());
    }
    argv.extend(["-j".into(), "-f".into(), file.as_os_str().to_owned()]);
    argv
}

/// nft's answer when a command names a table (or set) that does not exist.
fn is_missing(e: &crate::command::CommandError) -> bool {
    !e.sudo_denied && e.output.contains("No such file or directory")
}

fn stage(file: &Path, doc: &Nftables) -> Result<()> {
    let json = serde_json::to_vec(doc).context("cannot serialise the nftables batch")?;
    // Not fsynced: it only has to outlive the nft call that follows.
    write_atomically(file, &json, false).with_context(|| format!("cannot stage {}", file.display()))
}

/// The kernel's copy of the live objects; `None` if the table does not exist (a `flush ruleset`
/// ran, or the main config does not load the include).
pub fn read(runner: &Runner, nft: &Path, file: &Path) -> Result<Option<Live>> {
    stage(file, &list_request())?;
    match runner.output("listing of the live objects", &nft_argv(nft, file, false)) {
        Ok(out) => parse_listing(&out).map(Some),
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What became of a live update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel holds the rendered elements (read back).
    Applied(Steps),
    /// The table is not in the running ruleset; nothing was changed.
    TableMissing,
}

/// How long each step of a live update took, for the log and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steps {
    pub check: Duration,
    pub transaction: Duration,
    pub read_back: Duration,
}

impl Steps {
    pub fn total(&self) -> Duration {
        self.check + self.transaction + self.read_back
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "{:.1} ms (check {:.1}, transaction {:.1}, read-back {:.1})",
            ms(self.total()),
            ms(self.check),
            ms(self.transaction),
            ms(self.read_back)
        )
    }
}

/// Checks the transaction with `nft -c` (the kernel validates it and aborts it), applies it,
/// then reads the objects back to confirm the kernel holds what was rendered. A refused check
/// or a failed apply changes nothing: nft applies a batch atomically or not at all. Once the
/// check has passed, a stop signal no longer cuts the steps short (see `Runner`), so the run
/// never exits not knowing whether the kernel switched.
pub fn transact(runner: &Runner, nft: &Path, file: &Path, objects: &[Object]) -> Result<Outcome> {
    let want = expected(objects)?;
    stage(file, &batch(objects)?)?;
    let committing = runner.uninterruptible();
    // `None`: the table is missing.
    let step = |what: &str, check: bool| -> Result<Option<Duration>> {
        let started = Instant::now();
        let runner = if check { runner } else { &committing };
        match runner.run(what, &nft_argv(nft, file, check)) {
            Ok(()) => Ok(Some(started.elapsed())),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let Some(check) = step("check of the live update", true)? else {
        return Ok(Outcome::TableMissing);
    };
    let Some(transaction) = step("live update", false)? else {
        return Ok(Outcome::TableMissing);
    };
    let started = Instant::now();
    let Some(live) = read(&committing, nft, file)? else {
        bail!("table inet {TABLE} vanished right after the live update");
    };
    let steps = Steps {
        check,
        transaction,
        read_back: started.elapsed(),
    };
    let diff = differences(&want, &live);
    if !diff.is_empty() {
        bail!(
            "the live update went through but the kernel does not hold what was rendered: {}",
            diff.join("; ")
        );
    }
    Ok(Outcome::Applied(steps))
}

/// `objects` with the values an include (the one in effect) gives their defines; `None` if it
/// lacks one of them.
pub fn with_values_of(objects: &[Object], include: &[u8]) -> Option<Vec<Object>> {
    let text = std::str::from_utf8(include).ok()?;
    let value = |define: &str| {
        text.lines().find_map(|l| {
            let (name, value) = l.strip_prefix("define ")?.split_once(" = ")?;
            (name == define).then(|| value.trim().to_string())
        })
    };
    objects
        .iter()
        .map(|o| {
            Some(Object {
                value: value(&o.define)?,
                ..o.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(define: &str, kind: Kind, value: &str) -> Object {
        Object {
            define: define.into(),
            port: 443,
            kind,
            value: value.into(),
        }
    }

    #[test]
    fn batch_replaces_only_owned_elements() {
        let objs = [
            obj("web_v4", Kind::Ipv4, "192.0.2.10"),
            obj("up_v4", Kind::Mark, "0xc8"),
        ];
        let json = serde_json::to_value(batch(&objs).unwrap()).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        // per address: add/flush/fill set and map; per mark: the map only; never the table
        assert_eq!(cmds.len(), 6 + 3, "{json}");
        for c in cmds {
            let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
            assert!(verb == "add" || verb == "flush", "{c}");
            let body = body.as_object().unwrap().values().next().unwrap();
            assert_eq!(body["table"], TABLE, "{c}");
        }
        assert_eq!(
            cmds[2]["add"]["element"]["elem"],
            serde_json::json!(["192.0.2.10"])
        );
        assert_eq!(
            cmds[5]["add"]["element"]["elem"],
            serde_json::json!([[443, "192.0.2.10"]])
        );
        assert_eq!(
            cmds[8]["add"]["element"]["elem"],
            serde_json::json!([[443, 200]])
        );
        assert!(batch(&[obj("m_v4", Kind::Mark, "4294967296")]).is_err());
    }

    #[test]
    fn listing_is_compared_element_by_element() {
        let objs = [obj("web_v4", Kind::Ipv4, "192.0.2.10")];
        let listing = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "nftables_failover", "handle": 1}},
            {"set": {"family": "inet", "name": "web_v4", "table": "nftables_failover", "type": "ipv4_addr", "handle": 2}},
            {"map": {"family": "inet", "name": "web_v4_map", "table": "nftables_failover", "type": "inet_service", "handle": 3, "map": "ipv4_addr", "elem": [[443, "192.0.2.10"]]}},
            {"chain": {"family": "inet", "table": "nftables_failover", "name": "dnat", "handle": 4}}]}"#;
        let live = parse_listing(listing).unwrap();
        let want = expected(&objs).unwrap();
        assert_eq!(
            differences(&want, &live),
            ["web_v4 holds no element instead of [\"192.0.2.10\"]"]
        );
        let mut fixed = live.clone();
        fixed.insert(
            "web_v4".into(),
            vec![Expression::String("192.0.2.10".into())],
        );
        assert!(differences(&want, &fixed).is_empty());
        fixed.remove("web_v4_map");
        assert_eq!(differences(&want, &fixed), ["web_v4_map is missing"]);
    }

    #[test]
    fn only_value_changes_of_live_defines_go_live() {
        let objs = [obj("web_v4", Kind::Ipv4, "192.0.2.11")];
        let old = b"define web_v4 = 192.0.2.10\ndefine db_v4 = 192.0.2.20\n";
        let live = b"define web_v4 = 192.0.2.11\ndefine db_v4 = 192.0.2.20\n";
        let reload = b"define web_v4 = 192.0.2.10\ndefine db_v4 = 192.0.2.21\n";
        assert!(only_values_changed(old, live, &objs));
        assert!(!only_values_changed(old, reload, &objs));
        assert!(!only_values_changed(old, live, &[]));
    }

    #[test]
    fn values_in_effect_come_from_the_include_defines() {
        let objs = [
            obj("web_v4", Kind::Ipv4, "192.0.2.11"),
            obj("up_v4", Kind::Mark, "201"),
        ];
        let old = b"define web_v4 = 192.0.2.10\ndefine up_v4 = 200\ndefine web_v6 = 2001:db8::1\n";
        let back = with_values_of(&objs, old).unwrap();
        assert_eq!(back[0], obj("web_v4", Kind::Ipv4, "192.0.2.10"));
        assert_eq!(back[1], obj("up_v4", Kind::Mark, "200"));
        assert!(with_values_of(&objs, b"define web_v4 = 192.0.2.10\n").is_none());
    }

    #[test]
    fn marks_parse_as_32_bit_integers() {
        assert_eq!(parse_mark("200"), Some(200));
        assert_eq!(parse_mark("0xC8"), Some(200));
        assert_eq!(parse_mark("4294967296"), None);
    }
}
