//! `nftables-failover drain` / `undrain`: take a candidate out for maintenance and put it back,
//! without editing the config. The drain is kept in the state file, written under the run lock
//! so a run in progress never overwrites it.

use crate::cli::DrainArgs;
use crate::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, Variable};
use crate::model::{State, VERSION};
use crate::options::Options;
use crate::state::{self, LoadProblem};
use crate::{files, log};
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
    let mut st = match state::load(&opts.state) {
        Ok(s) => s,
        Err(LoadProblem::Missing) => State {
            version: VERSION,
            ..State::default()
        },
        // Never replace a state file this build cannot read: it may be newer, or someone's.
        Err(LoadProblem::Unusable(why)) => {
            return Err(failed(format!(
                "{}: {why}; {} reads and rewrites the state: {WHO}",
                opts.state.display(),
                verb(drain)
            )));
        }
    };
    let was = st.is_drained(&var.name, &address);
    let message = if drain {
        if was {
            return Ok(format!("{name} {address} is already drained"));
        }
        st.drained
            .entry(var.name.clone())
            .or_default()
            .insert(address);
        format!(
            "drained {name} {address}: from the next run on it is not chosen (status shows it as drained)"
        )
    } else {
        if !was {
            return Ok(format!("{name} {address} is not drained"));
        }
        if let Some(set) = st.drained.get_mut(&var.name) {
            set.remove(&address);
            if set.is_empty() {
                st.drained.remove(&var.name);
            }
        }
        // It comes back like a new candidate: `rise` checks first, its preempt delay from now.
        if let Some(v) = st.variables.get_mut(&var.name) {
            for family in crate::config::Family::ALL {
                for c in v.family_mut(family).candidates.iter_mut() {
                    if c.address == address {
                        c.counted = None;
                    }
                }
            }
        }
        format!("undrained {name} {address}: it returns under the usual rise and preempt rules")
    };
    let existed = opts.state.exists();
    state::save(&opts.state, &st).map_err(|e| {
        failed(format!(
            "cannot write {}: {e:#}; {WHO}",
            opts.state.display()
        ))
    })?;
    if !existed {
        hand_to_directory_owner(&opts.state);
    }
    Ok(message)
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
