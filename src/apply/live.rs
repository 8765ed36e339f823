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
use crate::files::write_atomically;
use crate::render::live::{Kind, Object, TABLE, parse_mark};
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
use std::path::Path;
use std::time::{Duration, Instant};

/// File name of the staged batch (and of the listing request) inside the staging directory.
pub const LIVE_FILE: &str = "live.json";

fn set_type(kind: Kind) -> SetType {
    match kind {
        Kind::Ipv4 => SetType::Ipv4Addr,
        Kind::Ipv6 => SetType::Ipv6Addr,
        Kind::Mark => SetType::Mark,
    }
}

/// The element a live object holds in its set.
fn element_of(o: &Object) -> Result<Expression<'static>> {
    Ok(match o.kind {
        Kind::Ipv4 | Kind::Ipv6 => Expression::String(o.value.clone().into()),
        Kind::Mark => Expression::Number(parse_mark(&o.value).with_context(|| {
            format!(
                "{}: {:?} is not a 32-bit mark; live mode stores marks as 32-bit integers",
                o.define, o.value
            )
        })?),
    })
}

/// The element a live object holds in its map: port : value.
fn map_element_of(o: &Object) -> Result<Expression<'static>> {
    Ok(Expression::List(vec![
        Expression::Number(u32::from(o.port)),
        element_of(o)?,
    ]))
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
        set_type: SetTypeValue::Single(set_type(kind)),
        ..Set::default()
    }
}

fn map(name: &str, kind: Kind) -> Map<'static> {
    Map {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.to_string().into(),
        set_type: SetTypeValue::Single(SetType::InetService),
        map: SetTypeValue::Single(set_type(kind)),
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
            cmds.push(Add(element(&o.define, element_of(o)?)));
        }
        let m = map(&o.map_name(), o.kind);
        cmds.push(Add(NfListObject::Map(Box::new(m.clone()))));
        cmds.push(Flush(FlushObject::Map(Box::new(m))));
        cmds.push(Add(element(&o.map_name(), map_element_of(o)?)));
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
            live.insert(o.define.clone(), vec![element_of(o)?]);
        }
        live.insert(o.map_name(), vec![map_element_of(o)?]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::live::obj;

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
}
