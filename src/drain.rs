//! `nftables-failover drain` / `undrain`: take a candidate out for maintenance and put it back,
//! without editing the config. The drain is kept in `drains.json` beside the state file (see
//! `drains`), written durably under the run lock.

use crate::cli::DrainArgs;
use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{AllDown, Config, Family, Variable};
use crate::model::{Drained, State};
use crate::options::Options;
use crate::state::{self, LoadProblem};
use crate::{drains, files, log};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Who may drain: the state directory is the service user's alone.
const WHO: &str = "run it as root or as the service user \
                   (sudo -u nftables-failover nftables-failover drain|undrain …)";

fn verb(drain: bool) -> &'static str {
    if drain { "drain" } else { "undrain" }
}

/// How long to wait for a run holding the lock (a run takes about one check timeout).
const LOCK_WAIT: Duration = Duration::from_secs(30);

pub fn main(opts: &Options, args: &DrainArgs, drain: bool) -> u8 {
    match change(opts, args, drain) {
        Ok(done) => {
            log::info(&done);
            EXIT_OK
        }
        Err((code, why)) => {
            log::error(&format!("{why}\nnothing was changed"));
            code
        }
    }
}

fn change(opts: &Options, args: &DrainArgs, drain: bool) -> Result<String, (u8, String)> {
    let usage = |why: String| (EXIT_USAGE, why);
    let config = files::load_config(&opts.config).map_err(|e| usage(e.to_string()))?;
    let (var, address) = candidate(opts, &config, args).map_err(usage)?;
    let name = crate::text::shorten(&args.variable, 64);
    let failed = |why: String| (EXIT_FAILED, why);
    let Some(_lock) = files::lock(&opts.output, LOCK_WAIT).map_err(|e| failed(format!("{e:#}")))?
    else {
        return Err(failed(format!(
            "a run has held {} for {LOCK_WAIT:?}; try again",
            files::lock_path(&opts.output).display()
        )));
    };
    let path = drains::path_beside(&opts.state);
    // Never replace a list of drains this build cannot read: it may hold someone's drain.
    let mut drained = drains::load(&path).map_err(|why| {
        failed(format!(
            "{why}; fix or remove it, then {} again",
            verb(drain)
        ))
    })?;
    // Drains from before drains.json, kept in the state alone, move to it now.
    let mut st = match state::load(&opts.state) {
        Ok(s) => Some(s),
        Err(LoadProblem::Missing) => None,
        Err(LoadProblem::Unusable(why)) => {
            log::warn(&format!(
                "{}: {why}; its drains, if it had any, are not carried over",
                opts.state.display()
            ));
            None
        }
    };
    if let Some(st) = &mut st {
        drains::merge(&mut drained, &std::mem::take(&mut st.drained));
    }
    let was = drained
        .get(&var.name)
        .is_some_and(|set| set.contains(&address));
    let message = match (drain, was) {
        (true, true) => format!("{name} {address} is already drained"),
        (false, false) => format!("{name} {address} is not drained"),
        (true, false) => {
            drained.entry(var.name.clone()).or_default().insert(address);
            let mut said = format!(
                "drained {name} {address}: from the next run on it is not chosen (status shows it as drained)"
            );
            if let Some(st) = &st {
                said.push_str(&all_down_note(var, address, st, &drained));
            }
            said
        }
        (false, true) => {
            if let Some(set) = drained.get_mut(&var.name) {
                set.remove(&address);
                if set.is_empty() {
                    drained.remove(&var.name);
                }
            }
            if let Some(st) = &mut st {
                forget_history(st, &var.name, address);
            }
            format!("undrained {name} {address}: it returns under the usual rise and preempt rules")
        }
    };
    let existed = path.exists();
    drains::save(&path, &drained)
        .map_err(|e| failed(format!("cannot write {}: {e:#}; {WHO}", path.display())))?;
    if !existed {
        hand_to_directory_owner(&path);
    }
    // The state no longer carries drains of its own (they are in drains.json), and an undrained
    // candidate starts its history over; if the state cannot be written, the next run's
    // decides from drains.json all the same.
    if let Some(st) = st
        && let Err(e) = state::save(&opts.state, &st)
    {
        log::warn(&format!(
            "cannot rewrite {}: {e:#}; the drain is recorded in {} all the same",
            opts.state.display(),
            path.display()
        ));
    }
    Ok(message)
}

/// What the next run renders when draining `address` leaves no other candidate of its family
/// up (as far as the last run counted): the all-down policy decides, and may keep the drained
/// one. Empty when another candidate is up.
fn all_down_note(var: &Variable, address: IpAddr, st: &State, drained: &Drained) -> String {
    let family = Family::of(&address);
    let addrs = var.addrs(family);
    let kept = st.variables.get(&var.name).map(|v| v.family(family));
    let up = |i: usize| {
        kept.and_then(|f| f.candidates.get(i))
            .filter(|c| c.address == addrs[i])
            .and_then(|c| c.counted)
            .is_none_or(|k| k.up)
    };
    let out = |i: usize| {
        drained
            .get(&var.name)
            .is_some_and(|s| s.contains(&addrs[i]))
    };
    if (0..addrs.len()).any(|i| !out(i) && up(i)) {
        return String::new();
    }
    let define = var.define_name(family);
    let renders = match var.policy.all_down {
        AllDown::First => format!("renders the first candidate, {}, drained or not", addrs[0]),
        AllDown::Keep => "keeps what is in effect, drained or not".to_string(),
        AllDown::Fallback => format!(
            "renders the fallback {}",
            var.fallback(family).unwrap_or_default()
        ),
    };
    format!(
        "; no other candidate of {define} is up, so the all-down policy \"{}\" decides: the next \
         run {renders}, until one answers",
        var.policy.all_down.name()
    )
}

/// An undrained candidate comes back like a new one: `rise` checks first, its preempt delay
/// from now.
fn forget_history(st: &mut State, variable: &str, address: IpAddr) {
    if let Some(v) = st.variables.get_mut(variable) {
        for family in crate::config::Family::ALL {
            for c in v.family_mut(family).candidates.iter_mut() {
                if c.address == address {
                    c.counted = None;
                }
            }
        }
    }
}

/// The variable and candidate address the command names, or why they are not in the config.
fn candidate<'a>(
    opts: &Options,
    config: &'a Config,
    args: &DrainArgs,
) -> Result<(&'a Variable, IpAddr), String> {
    let name = crate::text::shorten(&args.variable, 64);
    let Some(var) = config.variables.iter().find(|v| v.name == args.variable) else {
        let names: Vec<&str> = config.variables.iter().map(|v| v.name.as_str()).collect();
        return Err(format!(
            "{}: no variable {name:?}; it has: {}",
            opts.config.display(),
            crate::text::shorten(&names.join(", "), 200)
        ));
    };
    let shown = crate::text::shorten(&args.address, 64);
    let address: IpAddr = args
        .address
        .parse()
        .map_err(|_| format!("{shown:?} is not an IP address; give one of {name}'s candidates"))?;
    if !var.ip4.contains(&address) && !var.ip6.contains(&address) {
        let listed: Vec<String> = var
            .ip4
            .iter()
            .chain(&var.ip6)
            .map(IpAddr::to_string)
            .collect();
        return Err(format!(
            "{address} is not a candidate of {name} in {}; its candidates are {}",
            opts.config.display(),
            crate::text::shorten(&listed.join(", "), 200)
        ));
    }
    Ok((var, address))
}

/// A state file that root created goes to the owner of its directory (the service user), so
/// that the service can still read and rewrite it.
fn hand_to_directory_owner(path: &Path) {
    let dir = crate::files::dir_of(path);
    if let Ok(meta) = std::fs::metadata(dir) {
        let _ = std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()));
    }
}
