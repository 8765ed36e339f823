//! Reloading nftables, and what a refused reload means on a first install.
//!
//! `systemctl reload` refuses a unit that is not running. Whether to start it depends on why it
//! is not running, and the tool never starts nftables.service unless the admin asked for it
//! (its `flush ruleset` would wipe the rules of Docker, ufw or firewalld):
//! - `failed`: the admin enabled or started it, and it failed, typically because its
//!   nftables.conf uses a define of the include that did not exist yet. It is started.
//! - `activating`: it is starting (or waiting to restart, `Restart=on-failure`) and loads the
//!   include that is now in place.
//! - `inactive` (or not installed): nftables.service is not in use here. The include is checked
//!   and in place; nothing is reloaded, and nftables loads it whenever it is started.

use crate::command::Runner;
use anyhow::{Result, bail};
use std::ffi::{OsStr, OsString};
use std::path::Path;

/// How a new include reached the firewall, or why it did not have to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The reload command succeeded.
    Reloaded,
    /// The unit was `failed` and has been started with the new include.
    Started(String),
    /// The unit is starting and loads the new include itself.
    Starting(String),
    /// The unit is not in use (`inactive`, or unknown to systemd); nothing loaded the include.
    NotInUse(String, String),
}

/// `systemctl reload UNIT`, the default reload command: the program and the unit.
fn systemctl_reload(argv: &[OsString]) -> Option<(&OsStr, &OsStr)> {
    match argv {
        [program, verb, unit]
            if Path::new(program).file_name() == Some(OsStr::new("systemctl"))
                && verb == "reload" =>
        {
            Some((program, unit))
        }
        _ => None,
    }
}

/// Runs the reload command; for `systemctl reload UNIT` that fails, asks systemd for the
/// unit's state and acts as the module explains. Every other failure is an error (the caller
/// restores the previous include).
pub fn reload(runner: &Runner, argv: &[OsString]) -> Result<Reloaded> {
    let refused = match runner.run("reload", argv) {
        Ok(()) => return Ok(Reloaded::Reloaded),
        Err(e) => e,
    };
    let Some((systemctl, unit)) = systemctl_reload(argv) else {
        return Err(refused.into());
    };
    let name = unit.to_string_lossy().into_owned();
    let query = [systemctl.into(), "is-active".into(), unit.into()];
    // is-active exits 3 for any state but active; the state is its output either way.
    let state = match runner.output("query of the state of nftables", &query) {
        Ok(out) => String::from_utf8_lossy(&out).trim().to_string(),
        Err(e) if !e.sudo_denied && !e.output.trim().is_empty() => e.output.trim().to_string(),
        Err(e) => {
            return Err(anyhow::Error::new(refused)
                .context(format!("and asking systemd why failed too: {e}")));
        }
    };
    let state = state.lines().last().unwrap_or_default().to_string();
    match state.as_str() {
        "active" | "reloading" => Err(refused.into()),
        "failed" => {
            let start = [systemctl.into(), "start".into(), unit.into()];
            runner
                .run(&format!("start of {name}, which had failed"), &start)
                .map_err(|e| anyhow::Error::new(e).context(format!("{name} is failed")))?;
            Ok(Reloaded::Started(name))
        }
        "activating" => Ok(Reloaded::Starting(name)),
        "inactive" | "unknown" => Ok(Reloaded::NotInUse(name, state)),
        other => bail!("{refused}\n  {name} is {other:?}; expected active, failed or inactive"),
    }
}

impl Reloaded {
    /// One line for the log: what happened to the new include.
    pub fn describe(&self) -> String {
        match self {
            Reloaded::Reloaded => "applied and nftables reloaded".into(),
            Reloaded::Started(unit) => {
                format!("applied and {unit} started: it had failed (e.g. for lack of this include)")
            }
            Reloaded::Starting(unit) => format!("applied; {unit} is starting and loads it"),
            Reloaded::NotInUse(unit, state) => format!(
                "installed, not loaded: {unit} is {state}, so it does not manage the firewall \
                 here and was not started; the include is checked and loads when it starts"
            ),
        }
    }
}
