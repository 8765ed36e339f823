//! What a run, `status`, `drain`, `check-config` and `watch` need from the command line: built
//! once by the entry point from the parsed arguments, and the only form in which they reach
//! the code below it. Plain data.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    /// `failover.json`.
    pub config: PathBuf,
    /// The include the defines are rendered into.
    pub output: PathBuf,
    /// The state file: counters, last results, the last apply.
    pub state: PathBuf,
    /// Addon includes checked together with the new include.
    pub addon_dir: PathBuf,
    /// Main-config parts checked together with the new include.
    pub base_dir: PathBuf,
    /// The main nftables config, checked after the include is replaced.
    pub main_config: PathBuf,
    /// The nft binary, by absolute path (what sudoers names).
    pub nft: PathBuf,
    /// Fixed staging directory (e.g. systemd's RuntimeDirectory) so that sudoers can name the
    /// staged path exactly; without one, a private temporary directory is used.
    pub stage_dir: Option<PathBuf>,
    /// The reload command's argv with its program made absolute, or why it cannot be run (a
    /// run refuses to start then; `status` and `drain` never reload).
    pub reload: Result<Vec<OsString>, String>,
    /// Overrides every variable's check timeout.
    pub timeout: Option<Duration>,
    /// How long each command (nft, the reload, conntrack) may run.
    pub command_timeout: Duration,
    /// Check and render, write nothing.
    pub dry_run: bool,
}
