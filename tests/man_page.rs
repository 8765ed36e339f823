//! The man page nftables-failover(8) is generated from the clap definition (`cli::Cli`), so it
//! cannot drift from the real options. The generated page is committed as
//! `man/nftables-failover.8` (packaged by cargo-deb, readable without a build); this test
//! regenerates it and fails if the committed file differs.
//!
//! After changing the command line (options, help texts, a subcommand, the version):
//!
//!     UPDATE_MAN=1 cargo test --test man_page
//!
//! and commit the updated `man/nftables-failover.8`.

use clap::{Command, CommandFactory};
use clap_mangen::Man;
use nftables_failover::cli::Cli;
use nftables_failover::cli::EXIT_MEANINGS;
use roff::{Inline, Roff, bold, italic, roman};
use std::path::Path;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/man/nftables-failover.8");

#[test]
fn committed_man_page_matches_the_cli() {
    let generated = render();
    if std::env::var_os("UPDATE_MAN").is_some() {
        std::fs::create_dir_all(Path::new(COMMITTED).parent().unwrap()).unwrap();
        std::fs::write(COMMITTED, &generated).unwrap();
        eprintln!("wrote {COMMITTED}");
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    if committed != generated {
        let first_difference = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(generated.lines().count()));
        panic!(
            "{COMMITTED} is out of date with the command line (first difference at line {}).\n\
             Regenerate it with\n    UPDATE_MAN=1 cargo test --test man_page\nand commit it.",
            first_difference + 1
        );
    }
}

/// Sanity checks on the page itself, so a broken generator cannot pass by regenerating.
#[test]
fn man_page_documents_options_files_and_exit_status() {
    let page = render();
    for needle in [
        ".TH nftables-failover 8",
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        "\\-\\-dry\\-run",
        "\\-\\-stage\\-dir",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        ".SH CONFIGURATION",
        "/etc/sudoers.d/nftables\\-failover",
        "/etc/nftables.d/addons/failover.json",
        ".SH SUBCOMMANDS",
        "nftables\\-failover watch [\\-\\-interval DURATION]",
        "/usr/share/doc/nftables\\-failover/",
    ] {
        assert!(page.contains(needle), "man page lacks {needle:?}:\n{page}");
    }
    // Only this page exists: no reference to a page per subcommand.
    assert!(
        !page.contains("nftables\\-failover\\-status(8)") && !page.contains("\\-help(8)"),
        "the man page names pages that are not shipped"
    );
}

fn render() -> String {
    let cmd = Cli::command();
    let man = Man::new(cmd.clone())
        .section("8")
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out).unwrap();
    man.render_name_section(&mut out).unwrap();
    man.render_synopsis_section(&mut out).unwrap();
    man.render_description_section(&mut out).unwrap();
    man.render_options_section(&mut out).unwrap();
    out.extend(subcommands(&cmd).render().into_bytes());
    out.extend(extra_sections(&cmd).render().into_bytes());
    man.render_version_section(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The default value of a long option, straight from the clap definition.
fn default_of(cmd: &Command, id: &str) -> String {
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == id)
        .unwrap_or_else(|| panic!("no option {id:?} in the CLI"));
    arg.get_default_values()
        .first()
        .unwrap_or_else(|| panic!("option {id:?} has no default"))
        .to_string_lossy()
        .into_owned()
}

fn paragraph(roff: &mut Roff, text: impl Into<Vec<Inline>>) {
    roff.control("PP", []);
    roff.text(text);
}

fn item(roff: &mut Roff, term: impl Into<Vec<Inline>>, text: &str) {
    roff.control("TP", []);
    roff.text(term);
    roff.text([roman(text)]);
}

/// Every subcommand in this page, with its options: there are no separate pages for them.
fn subcommands(cmd: &Command) -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["SUBCOMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut usage = format!("nftables-failover {}", sub.get_name());
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_id() != "help")
        {
            usage.push(' ');
            let takes_value = arg.get_action().takes_values();
            usage.push_str(&match (arg.get_long(), arg.get_value_names()) {
                (Some(long), Some(names)) if takes_value => format!("[--{long} {}]", names[0]),
                (Some(long), _) => format!("[--{long}]"),
                (None, _) => arg.get_id().to_string().to_uppercase(),
            });
        }
        r.control("TP", []);
        r.text([bold(usage)]);
        let about = sub
            .get_long_about()
            .or(sub.get_about())
            .map(|a| a.to_string())
            .unwrap_or_default();
        r.text([roman(about.replace('\n', " "))]);
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_id() != "help")
        {
            let name = match arg.get_long() {
                Some(long) => format!("--{long}"),
                None => arg.get_id().to_string().to_uppercase(),
            };
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            r.control("IP", [name.as_str(), "4"]);
            r.text([roman(help)]);
        }
    }
    r
}

fn extra_sections(cmd: &Command) -> Roff {
    let config = default_of(cmd, "config");
    let output = default_of(cmd, "output");
    let main_config = default_of(cmd, "main_config");
    let output_path = Path::new(&output);
    let lock = output_path.with_file_name(format!(
        ".{}.lock",
        output_path.file_name().unwrap().to_string_lossy()
    ));
    let record = output_path.with_file_name(format!(
        ".{}.applied",
        output_path.file_name().unwrap().to_string_lossy()
    ));

    let mut r = Roff::new();

    r.control("SH", ["EXIT STATUS"]);
    // The same words as --help, from the same definition.
    for (code, text) in EXIT_MEANINGS {
        item(&mut r, [bold(code.to_string())], &format!("{text}."));
    }
    paragraph(
        &mut r,
        [
            bold("status"),
            roman(
                " exits like a monitoring plugin, judged on the include in effect: 0 OK (every \
                 define on its preferred candidate, which is up), 1 WARNING (some define on a \
                 lower-priority candidate, or a change pending), 2 CRITICAL (some define points \
                 at a candidate that is down, or the all-down fallback is in effect), 3 UNKNOWN \
                 (nothing applied or checked yet, config or state unreadable, or no state yet).",
            ),
        ],
    );

    r.control("SH", ["CONFIGURATION"]);
    paragraph(
        &mut r,
        [
            roman("The config ("),
            bold("--config"),
            roman(format!(
                ", default {config}) is JSON with // and /* */ comments, the format of the \
                 Python nftables failover addon. Unknown keys are errors, at the top level too; \
                 check-config validates a config without running anything."
            )),
        ],
    );
    item(
        &mut r,
        [bold("failover"), roman("."), italic("NAME")],
        "One variable. NAME must match [A-Za-z_][A-Za-z0-9_]* and is rendered as \
         `define NAME_v4 = ...` and `define NAME_v6 = ...`, in config order.",
    );
    item(
        &mut r,
        [bold("ip4"), roman(", "), bold("ip6")],
        "An address or a list of addresses of that family, most preferred first; at least one \
         of the two. A family without addresses renders 0.0.0.0 or ::.",
    );
    item(
        &mut r,
        [bold("port")],
        "The TCP port to check, 1-65535. Required, unless the variable has a check.",
    );
    item(
        &mut r,
        [bold("check"), roman(", "), bold("checks")],
        "Optional; probe targets instead of the candidate's own address: {\"targets\": \
         [\"ADDRESS:PORT\" for tcp or \"ADDRESS\" for icmp, ...], \"method\": \"tcp\" \
         (default) or \"icmp\", \"quorum\": targets that must answer (default 1), \
         \"max_latency_ms\": slower answers count as down}. checks: per-candidate overrides, \
         index-aligned like values, null for \"as check\".",
    );
    item(
        &mut r,
        [bold("paths")],
        "Optional; per candidate, index-aligned like values, which way its probes leave: \
         {\"interface\": NAME (SO_BINDTODEVICE), \"mark\": N (SO_MARK, needs CAP_NET_RAW), \
         \"source\": ADDRESS}.",
    );
    item(
        &mut r,
        [bold("conntrack_cleanup")],
        "Optional; \"mark\" or \"address\": after a failover away from a candidate that is \
         down, delete its conntrack entries (ct mark = old value, or replies from the old \
         address) with /usr/sbin/conntrack (needs CAP_NET_ADMIN).",
    );
    item(
        &mut r,
        [bold("values")],
        "Optional; rendered instead of the address at the same index (e.g. fwmarks). As long \
         as each address list; each a non-negative integer, a 0x hex integer, an IP address or \
         a plain identifier.",
    );
    item(
        &mut r,
        [bold("settings")],
        "Optional, for all variables; each key may also be set inside a variable to override \
         it there. timeout_ms: connect timeout (default 2000; --timeout overrides it). fall, \
         rise: consecutive failed/successful checks before a candidate counts as down/up \
         (default 1). preempt: move back to a better candidate once it is up again (default \
         true). preempt_delay_s: how long it must have been up first (default 0). all_down: \
         \"first\" (default), \"keep\" or \"fallback\", what to render when no candidate is \
         up. fallback: {\"ip4\": ADDRESS, \"ip6\": ADDRESS}, or one value for variables with \
         values. apply: \"reload\" (default) checks the whole config and reloads nftables on a \
         change; \"live\" replaces only the elements of the variable's set and map in table inet \
         nftables_failover, in one nft transaction (docs/live-mode.md).",
    );
    item(
        &mut r,
        [
            bold("settings.on_change"),
            roman(", "),
            bold("settings.metrics"),
            roman(", "),
            bold("settings.mqtt"),
        ],
        "Optional, top level only, each off unless set; all run after the apply and never \
         change its outcome or the exit status. on_change: {\"command\": [ARGV...], \
         \"timeout_ms\": 10000}, run without a shell after an apply that changed defines, \
         with FAILOVER_* environment variables and the changes as JSON on stdin. metrics: \
         {\"path\": FILE.prom}, a Prometheus textfile rewritten every run. mqtt: {\"broker\": \
         HOST, ...}, retained state and Home Assistant discovery; at most timeout_ms (default \
         2000) per run. See docs/status-and-publishing.md.",
    );
    paragraph(
        &mut r,
        [roman(
            "Per variable and family the first candidate that counts as up (its check \
             succeeded, counted with fall and rise) is used, or its value; traffic moves back \
             to a better candidate under preempt and preempt_delay_s. A candidate whose path \
             interface has lost its carrier or is gone, or whose path source address is not on \
             the host, is down at once. If none is up, all_down decides: the first candidate \
             (default, with a warning), the value in effect (keep) or the fallback.",
        )],
    );
    r.control("PP", []);
    r.control("EX", []);
    r.text([roman(
        "{\n  \"failover\": {\n    \"endpoint_filer\": {\n      \"ip4\": [\"192.168.87.100\", \
         \"192.168.87.101\"],\n      \"port\": 443\n    },\n    \"mark_proxy\": {\n      \
         \"ip4\": [\"192.168.132.2\", \"192.168.132.3\"],\n      \"port\": 3129,\n      \
         \"values\": [200, 201]\n    }\n  },\n  \"settings\": {\"timeout_ms\": 1500}\n}",
    )]);
    r.control("EE", []);

    r.control("SH", ["FILES"]);
    item(&mut r, [bold(config.as_str())], "The config.");
    item(
        &mut r,
        [bold(output.as_str())],
        "The rendered include; replaced atomically (temporary file and rename in its \
         directory), so the service user needs write access to that directory.",
    );
    item(
        &mut r,
        [bold(lock.display().to_string())],
        "Lock file serialising runs that write the same include.",
    );
    item(
        &mut r,
        [bold(record.display().to_string())],
        "The last applied include: a copy of what nftables was last loaded with (empty: none). \
         Every failed apply restores exactly this; the include on disk counts as applied only \
         while it equals this copy.",
    );
    item(
        &mut r,
        [bold(main_config.as_str())],
        "The main nftables config, checked with nft -c -f before the reload. It must include \
         the rendered file, e.g. include \"/etc/nftables.d/addons/*.nft\".",
    );
    item(
        &mut r,
        [bold("/run/nftables-failover/")],
        "Staging directory (systemd RuntimeDirectory=, passed as $RUNTIME_DIRECTORY): \
         main.nft and the candidate include for the staged check.",
    );
    item(
        &mut r,
        [bold("/var/lib/nftables-failover/state.json")],
        "State (--state): counters, last results, the rendered choices and how the last apply \
         went. Missing, corrupt or not writable means no history, never a failed run.",
    );
    item(
        &mut r,
        [bold("/etc/sudoers.d/nftables-failover")],
        "Allows the service user exactly the command lines it runs through sudo -n: \
         nft -c -f /run/nftables-failover/main.nft, nft -c -f /etc/nftables.conf, \
         systemctl reload nftables.service, systemctl is-active nftables.service and \
         systemctl start nftables.service (only after a refused reload) and, for live mode, \
         nft -c -j -f and nft -j -f /run/nftables-failover/live.json.",
    );
    item(
        &mut r,
        [
            bold("/usr/lib/systemd/system/nftables-failover.service"),
            roman(", "),
            bold(".timer"),
        ],
        "One run as user nftables-failover, every 5 seconds. Enable with systemctl enable \
         --now nftables-failover.timer; logs: journalctl -u nftables-failover.",
    );
    item(
        &mut r,
        [bold(
            "/usr/lib/systemd/system/nftables-failover-watch.service",
        )],
        "The watcher (the watch subcommand) as user nftables-failover, Type=notify with a \
         watchdog; not enabled on install.",
    );
    item(
        &mut r,
        [bold("/usr/share/doc/nftables-failover/")],
        "README.md and the manual in docs/: configuration.md (every key), \
         selection-and-flapping.md, uplinks.md, watch.md, live-mode.md, \
         apply-and-rollback.md, status-and-publishing.md, operations.md (troubleshooting), \
         security.md; examples/.",
    );

    r.control("SH", ["ENVIRONMENT"]);
    item(
        &mut r,
        [bold("RUNTIME_DIRECTORY")],
        "Default for --stage-dir; set by systemd from RuntimeDirectory=.",
    );
    item(
        &mut r,
        [bold("JOURNAL_STREAM")],
        "When set (by systemd), log lines carry <N> syslog priority prefixes.",
    );

    r.control("SH", ["SEE ALSO"]);
    r.text([
        roman("The manual: /usr/share/doc/nftables-failover/README.md and docs/. "),
        bold("nft"),
        roman("(8), "),
        bold("sudoers"),
        roman("(5), "),
        bold("systemd.timer"),
        roman("(5), "),
        bold("journalctl"),
        roman("(1)"),
    ]);
    r
}
