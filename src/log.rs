//! One line per event on stderr. Under systemd (JOURNAL_STREAM set) lines carry `<N>` syslog
//! priority prefixes, which journald turns into real priorities; on a terminal they read
//! `warning: …` like other command-line tools.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static MAX: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_verbosity(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => Level::Warn,
        (false, 0) => Level::Info,
        (false, _) => Level::Debug,
    };
    MAX.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX.load(Ordering::Relaxed)
}

pub fn log(level: Level, msg: &str) {
    if !enabled(level) {
        return;
    }
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    // Multi-line messages (nft's error output) get a priority on every line in the journal,
    // and a prefix on the first line only on a terminal.
    for (i, line) in msg.lines().enumerate() {
        if journal {
            let prio = match level {
                Level::Error => 3,
                Level::Warn => 4,
                Level::Info => 6,
                Level::Debug => 7,
            };
            eprintln!("<{prio}>{line}");
        } else if i > 0 {
            eprintln!("{line}");
        } else {
            match level {
                Level::Error => eprintln!("error: {line}"),
                Level::Warn => eprintln!("warning: {line}"),
                Level::Info | Level::Debug => eprintln!("{line}"),
            }
        }
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
