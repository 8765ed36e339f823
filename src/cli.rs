//! Command-line interface. Also the source of the man page, so the two cannot drift.

use crate::options::Options;
use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Exit codes: the contract with systemd and admins' scripts.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// What each exit status of a run means; `--help` and the man page both print these.
pub const EXIT_MEANINGS: [(u8, &str); 3] = [
    (
        EXIT_OK,
        "applied or unchanged, however many candidates are down; also when another run holds \
         the lock and is left to apply the change",
    ),
    (
        EXIT_FAILED,
        "runtime failure (a check, the write, the reload or sudo failed): the last applied \
         include is in place or was restored, and the next run retries; or stopped by \
         SIGTERM/SIGINT (`watch` exits 0 then)",
    ),
    (EXIT_USAGE, "bad config or usage; nothing was touched"),
];

fn after_help() -> String {
    let codes: Vec<String> = EXIT_MEANINGS
        .iter()
        .map(|(code, text)| format!("{code} {text}"))
        .collect();
    format!(
        "Exit status: {}.\nWhen not run as root, `nft -c`, the reload command and live mode's \
         `nft -j` run through `sudo -n`.\nThe manual: /usr/share/doc/nftables-failover/README.md \
         and docs/ beside it.",
        codes.join("; ")
    )
}

#[derive(Debug, Parser)]
#[command(
    name = "nftables-failover",
    version,
    about = "Point nftables variables at the first healthy server or uplink",
    long_about = "Checks every candidate address of every variable in the config with a TCP \
connect, all at once (or, for a variable with a `check`, probes its TCP or ICMP targets through \
each candidate's path: interface, source address or firewall mark, up at a quorum), picks per \
variable and address family the first one that answers (or its mapped value), and renders `define NAME_v4 = …` / `define NAME_v6 = …` into an nftables include. \
Only when that text changes is the new include checked with `nft -c` in a staged config, put in \
place atomically, the main config checked, and nftables reloaded; if any step fails the previous \
include is restored and the run exits 1. Then it waits for the checks still in flight (standbys), \
so every candidate has a result each run: a run takes at most one check timeout plus the apply. \
Meant to be started by a systemd timer every few seconds.",
    after_help = after_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Config file: variables with their candidate addresses, port and optional values.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/nftables.d/addons/failover.json"
    )]
    pub config: PathBuf,

    /// The include file to render the defines into.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/nftables.d/addons/failover.nft"
    )]
    pub output: PathBuf,

    /// State file: counters, last results and how the last apply went.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/var/lib/nftables-failover/state.json"
    )]
    pub state: PathBuf,

    /// Directory of addon includes (*.nft) checked together with the new include.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/etc/nftables.d/addons"
    )]
    pub addon_dir: PathBuf,

    /// Directory of main-config parts (*.nft) checked together with the new include.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/etc/nftables.d"
    )]
    pub base_dir: PathBuf,

    /// The main nftables config, checked with `nft -c -f` after the include is replaced.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "/etc/nftables.conf"
    )]
    pub main_config: PathBuf,

    /// The nft binary (absolute path; that is what sudoers rules name).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/usr/sbin/nft"
    )]
    pub nft: PathBuf,

    /// Command that reloads nftables, split on whitespace and run without a shell.
    #[arg(
        long,
        global = true,
        value_name = "COMMAND",
        default_value = "systemctl reload nftables.service"
    )]
    pub reload_command: String,

    /// Directory for the staged check files (default: systemd's $RUNTIME_DIRECTORY, else a
    /// private temporary directory). Must be owned by this user and writable by no one else.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "RUNTIME_DIRECTORY",
        hide_env_values = true
    )]
    pub stage_dir: Option<PathBuf>,

    /// Connect timeout per check, e.g. 2s, 500ms, 1.5 (seconds) [default: settings.timeout_ms, else 2s]
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// How long each nft check and the reload may run before it is killed and the apply rolled
    /// back, e.g. 15s, 500ms. The default leaves big rulesets room and keeps a whole run within
    /// the service's 60 s start timeout.
    #[arg(long, global = true, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// Check and render, print the would-be include and whether it differs; write nothing,
    /// run no nft and no reload.
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Print only warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Print every check result and command run.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what each define points at now, whether that candidate is healthy, and what the
    /// next run would do.
    ///
    /// Judged on the include in effect (the last applied one), from the config and state file.
    /// Each candidate is up, down, drained, stale (its last result is older than 60 s) or
    /// unknown (no result yet), with the age of its result.
    /// Checks nothing and changes nothing unless --check is given. Exit status follows the
    /// monitoring-plugin convention: 0 OK (every define on its preferred candidate, which is
    /// up), 1 WARNING (some define on a lower-priority candidate, a change pending, or no
    /// healthy standby left),
    /// 2 CRITICAL (some define points at a candidate that is down, or the all-down fallback is
    /// in effect, or drains.json unreadable), 3 UNKNOWN (nothing applied or checked yet, every
    /// result of a define older than 60 s, config or state unreadable).
    Status(StatusArgs),
    /// Load and validate the config exactly as a run does, and nothing else: no checks, no
    /// writes, no privilege needed.
    ///
    /// Prints one line saying what it found and exits 0, or every problem with its location
    /// and exits 2. For Ansible's `validate:`, `ExecStartPre=` and pre-commit hooks.
    CheckConfig,
    /// Take a candidate out for maintenance: from the next run on it is never chosen.
    ///
    /// It is still checked, and `status`, the metrics and MQTT show it as drained. If it is in
    /// effect, the next run moves the variable to the best other candidate at once (with all
    /// others down, the all-down policy applies). Survives restarts, reboots and a lost state (it
    /// is kept in drains.json beside the state file, written durably). Run it as root or as the
    /// service user; it holds the run lock while it writes, so it never races a run.
    Drain(DrainArgs),
    /// Put a drained candidate back: it returns under the usual `rise` and preempt rules, its
    /// history starting over as if it were new.
    Undrain(DrainArgs),
    /// Stay running: a run at start, every --interval, and at once when the kernel reports a
    /// link, address or route change.
    ///
    /// Each run is the one the timer starts (same lock, state, checks, apply and publication),
    /// so the timer may stay enabled as a safety net. A candidate whose path interface has lost
    /// its carrier, is down or is gone, or whose path source address is no longer on the host,
    /// counts as down in that run without waiting for `fall` or a timeout. Takes the options of
    /// a run (before or after `watch`). Under systemd (nftables-failover-watch.service) it
    /// reports ready and feeds the watchdog. SIGTERM or SIGINT ends it with exit 0 once no apply is in
    /// progress (an apply under way finishes or rolls back first). SIGHUP (systemctl reload)
    /// re-reads the config and runs at once.
    Watch(WatchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// How long to wait for the next run when the kernel reports nothing, e.g. 5s, 1.5
    /// (the timer's interval).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The variable, as named in the config's "failover" object.
    pub variable: String,
    /// The candidate's address, as listed in the variable's ip4 or ip6.
    pub address: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON (see docs/status-and-publishing.md, "Status JSON").
    #[arg(long)]
    pub json: bool,

    /// Run fresh checks of every candidate first and count them in (nothing is applied or
    /// saved).
    #[arg(long)]
    pub check: bool,
}

impl Cli {
    /// The subcommand, and the options below the entry point work with (built once; the
    /// parsed arguments are moved, not copied).
    pub fn into_parts(self) -> (Option<Command>, Options) {
        let reload = crate::command::parse_command_line(&self.reload_command)
            .map_err(|e| format!("--reload-command {:?}: {e}", self.reload_command));
        let options = Options {
            config: self.config,
            output: self.output,
            state: self.state,
            addon_dir: self.addon_dir,
            base_dir: self.base_dir,
            main_config: self.main_config,
            nft: self.nft,
            stage_dir: self.stage_dir,
            reload,
            timeout: self.timeout,
            command_timeout: self.command_timeout,
            dry_run: self.dry_run,
        };
        (self.command, options)
    }
}

/// `2s`, `500ms`, `1.5s` or a bare number of seconds; between 1 ms and 10 minutes.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        (text, 1.0)
    };
    let secs = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v * scale)
        .ok_or_else(|| format!("expected a duration like 2s or 500ms, found {text:?}"))?;
    if !(0.001..=600.0).contains(&secs) {
        return Err(format!("{text:?} is out of range: use 1ms to 600s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn command_timeout_default_is_the_documented_one() {
        let cli = Cli::try_parse_from(["nftables-failover"]).unwrap();
        assert_eq!(cli.command_timeout, crate::command::DEFAULT_TIMEOUT);
    }

    /// Every option of a run goes before or after the subcommand alike.
    #[test]
    fn run_options_are_taken_after_every_subcommand() {
        for sub in [
            &["watch"][..],
            &["status"],
            &["check-config"],
            &["drain", "web", "10.0.0.1"],
        ] {
            let args = [
                "--addon-dir",
                "/a",
                "--base-dir",
                "/b",
                "--main-config",
                "/m",
                "--nft",
                "/n",
                "--reload-command",
                "true",
                "--stage-dir",
                "/s",
                "--command-timeout",
                "3s",
                "--config",
                "/c",
                "--timeout",
                "1s",
            ];
            let line: Vec<&str> = ["nftables-failover"]
                .iter()
                .chain(sub)
                .chain(&args)
                .copied()
                .collect();
            let cli = Cli::try_parse_from(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!(cli.addon_dir, PathBuf::from("/a"));
            assert_eq!(cli.main_config, PathBuf::from("/m"));
            assert_eq!(cli.stage_dir, Some(PathBuf::from("/s")));
            assert_eq!(cli.command_timeout, Duration::from_secs(3));
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1h").is_err());
    }
}
