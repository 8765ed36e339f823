//! The ground floor: plain data that more than one layer reads. Check results, what a run
//! picked and why, and the records kept in the state file between runs.
//!
//! No logic beyond small accessors and formatting, and no effects: every other module may
//! import this one, and it imports only the config's types.

use crate::config::{AllDown, Config, Family, PerFamily};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// The result of checking one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Up { latency: Duration },
    Down(DownReason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum DownReason {
    Refused,
    Timeout(Duration),
    Error(String),
    /// The kernel's word, not a probe's: the candidate's path interface has no carrier, is
    /// down or is gone, or its source address is not on the host ("carrier lost on r-isp1").
    /// Such a candidate counts as down at once, without waiting for `fall`.
    Kernel(String),
}

impl Health {
    pub fn is_up(&self) -> bool {
        matches!(self, Health::Up { .. })
    }

    /// Down on the kernel's word (see [`DownReason::Kernel`]).
    pub fn is_kernel_down(&self) -> bool {
        matches!(self, Health::Down(DownReason::Kernel(_)))
    }
}

/// The kernel's view of the host's links and addresses, as far as candidates' paths care.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkView {
    /// By interface name.
    pub links: BTreeMap<String, Link>,
    /// Every address configured on the host (any interface, any scope).
    pub addresses: BTreeSet<IpAddr>,
}

/// One interface as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// `IFF_UP`: the admin set it up.
    pub up: bool,
    /// `IFF_LOWER_UP`: carrier.
    pub carrier: bool,
    pub oper: OperState,
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    Up,
    /// Drivers that do not report it (tunnels, WireGuard): carrier and `IFF_UP` decide.
    Unknown,
    Down,
    LowerLayerDown,
    NotPresent,
    Dormant,
    Testing,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Health::Up { latency } => write!(f, "up in {:.1} ms", latency.as_secs_f64() * 1e3),
            Health::Down(DownReason::Refused) => f.write_str("connection refused"),
            Health::Down(DownReason::Timeout(t)) => {
                write!(f, "no answer within {} ms", t.as_millis())
            }
            Health::Down(DownReason::Error(e) | DownReason::Kernel(e)) => f.write_str(e),
        }
    }
}

/// Check results for one variable and family, index-aligned with its address list;
/// `None` means the candidate was not checked (its variable was decided without it).
pub type Outcomes = Vec<Option<Health>>;

/// Check results for a whole config: `[variable][family]`.
pub type Results = Vec<PerFamily<Outcomes>>;

pub fn empty_results(config: &Config) -> Results {
    config
        .variables
        .iter()
        .map(|v| PerFamily::from_fn(|f| vec![None; v.addrs(f).len()]))
        .collect()
}

/// What was picked for one variable and family.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub variable: usize,
    pub family: Family,
    /// Index of the rendered candidate; `None` for a kept or fallback literal or no addresses.
    pub index: Option<usize>,
    /// Why; `None` if the family has no addresses.
    pub reason: Option<Reason>,
    /// The literal rendered after `define NAME_vX =`.
    pub rendered: String,
    /// The define's value in the include in effect now, and which candidate that is.
    pub effective: Option<String>,
    pub effective_index: Option<usize>,
    /// The candidates left out because they are drained (usually none).
    pub drained: Vec<usize>,
    /// Why the kernel ruled out the preferred candidate in this run, if it did ("carrier lost
    /// on wan1"): a failover then says so instead of counting checks.
    pub preferred_gone: Option<String>,
}

impl Choice {
    /// The define this choice renders: `NAME_v4`, `NAME_v6`.
    pub fn define<'a>(&self, config: &'a Config) -> crate::config::variables::DefineName<'a> {
        config.variables[self.variable].define_name(self.family)
    }
}

impl Choice {
    /// No candidate counts as up.
    pub fn all_down(&self) -> bool {
        matches!(self.reason, Some(Reason::AllDown(_)))
    }
}

/// Why a candidate (or literal) was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The first candidate counts as up.
    Preferred,
    /// Earlier candidates count as down; this is the first one that counts as up.
    FailedOver,
    /// A better candidate is up again, but `preempt` is off.
    PreemptOff { better: usize },
    /// A better candidate is up again, but not yet for `preempt_delay_s`.
    PreemptDelay { better: usize, left_ms: u64 },
    /// No candidate counts as up; `all_down` decides.
    AllDown(AllDown),
}

/// A candidate's counted health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counted {
    /// Whether the candidate counts as up.
    pub up: bool,
    /// Consecutive checks that contradict `up` so far (toward `fall` if up, `rise` if down).
    pub streak: u32,
    /// When `up` last changed (or the candidate was first checked), in milliseconds of the
    /// run's timeline (Unix time, kept free of wall-clock jumps, see `clock`).
    pub since_ms: u64,
}

/// The state file's records (see `state` for loading and saving them).
/// 2: `Counted::since_ms` in milliseconds (1 had whole seconds in `since`) and `clock`.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The last run that had something to apply, and how it went.
    #[serde(default)]
    pub last_apply: Option<ApplyOutcome>,
    #[serde(default)]
    pub variables: BTreeMap<String, VariableState>,
    /// Counters and publish history of hook, metrics and MQTT (see `publish`).
    #[serde(default)]
    pub publish: PublishState,
    /// Candidates taken out by `nftables-failover drain`, per variable: checked, never chosen,
    /// until `undrain`. Their record is `drains.json` (see `drains`); a run adds it here, and
    /// states written before that file existed carry their drains here alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drained: Drained,
    /// The clocks when this state was made, to measure the time to the next run on a clock
    /// that does not jump (see `clock`).
    #[serde(default)]
    pub clock: Option<ClockMark>,
}

/// Drained candidates by variable.
pub type Drained = BTreeMap<String, BTreeSet<IpAddr>>;

/// The three clocks at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockMark {
    /// `/proc/sys/kernel/random/boot_id`, where readable.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// CLOCK_BOOTTIME: milliseconds since boot, suspend included; never jumps.
    pub boottime_ms: u64,
    /// CLOCK_REALTIME in milliseconds: Unix time, which an admin or NTP may set.
    pub wall_ms: u64,
}

impl State {
    /// Whether `address` of `variable` is drained.
    pub fn is_drained(&self, variable: &str, address: &IpAddr) -> bool {
        self.drained
            .get(variable)
            .is_some_and(|set| set.contains(address))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// Unix time of the attempt.
    pub at: u64,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariableState {
    /// The candidate list this history belongs to (see `Variable::fingerprint`).
    pub fingerprint: String,
    pub v4: FamilyState,
    pub v6: FamilyState,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FamilyState {
    pub candidates: Vec<CandidateState>,
    /// Index of the rendered candidate, if a candidate (not a kept or fallback literal) is rendered.
    #[serde(default)]
    pub selected: Option<usize>,
    #[serde(default)]
    pub rendered: Option<String>,
    /// No candidate counted as up in that run: the all-down warning is logged when this
    /// starts, not on every run it lasts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_down: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateState {
    pub address: IpAddr,
    /// How it was probed (its check and path, see `Variable::probe_key`), for variables with
    /// `check`/`paths`: history follows the address and the way it is probed together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// `None` until the candidate has been checked once.
    #[serde(default)]
    pub counted: Option<Counted>,
    #[serde(default)]
    pub last: Option<LastCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    /// Unix time of the check.
    pub at: u64,
    pub up: bool,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
}

impl VariableState {
    pub fn family(&self, family: Family) -> &FamilyState {
        match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    pub fn family_mut(&mut self, family: Family) -> &mut FamilyState {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }
}

/// Kept in the state file between runs: counters must not restart with every run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishState {
    /// Applies that went through with a reload of nftables.
    #[serde(default)]
    pub reloads: u64,
    /// Applies that went through as a live update of the tool's table, without a reload.
    #[serde(default)]
    pub live_updates: u64,
    #[serde(default)]
    pub apply_failures: u64,
    /// Unix time of the last successful apply.
    #[serde(default)]
    pub last_ok_apply_at: Option<u64>,
    /// Checks per candidate, `"DEFINE ADDRESS"` → `[up, down]`.
    #[serde(default)]
    pub checks: BTreeMap<String, [u64; 2]>,
    #[serde(default)]
    pub hook_failures: u64,
    #[serde(default)]
    pub mqtt_failures: u64,
    /// Per define the value in effect and since when (Unix time); only kept with MQTT.
    #[serde(default)]
    pub since: BTreeMap<String, Since>,
    /// What was last published to MQTT successfully.
    #[serde(default)]
    pub mqtt: Option<Published>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Since {
    pub value: String,
    pub at: u64,
}

/// The last successful publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Unix time.
    pub at: u64,
    /// MD5 of every topic and payload, to tell an unchanged run from a changed one.
    pub digest: String,
    /// Every retained topic published, to clear those whose define or candidate is gone.
    pub topics: Vec<String>,
}

/// A status in the monitoring-plugin convention. Ordered worst last, so the worst of several
/// is their `max`: OK < WARNING < UNKNOWN < CRITICAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl Level {
    /// The plugin's exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
            Level::Unknown => 3,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Unknown => "UNKNOWN",
            Level::Critical => "CRITICAL",
        })
    }
}
