//! One line per event on stderr. Under systemd (JOURNAL_STREAM set) lines carry `<N>` syslog
//! priority prefixes, which journald turns into real priorities; on a terminal they read
//! `warning: …` like other command-line tools.

use crate::text::escape;
use std::fmt::Write;
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
    eprint!("{}", render(level, msg, journal));
}

/// The lines `log` writes for one message. Multi-line messages (nft's error output) get a
/// priority on every line in the journal, and a prefix on the first line only on a terminal.
/// Other control characters are escaped, so that text from files or commands cannot rewrite a
/// line (`\r`) or the terminal (ESC).
fn render(level: Level, msg: &str, journal: bool) -> String {
    let mut out = String::with_capacity(msg.len() + 16);
    for (i, line) in msg.lines().enumerate() {
        let line = escape(line, true);
        let prefix = if journal {
            match level {
                Level::Error => "<3>",
                Level::Warn => "<4>",
                Level::Info => "<6>",
                Level::Debug => "<7>",
            }
        } else if i > 0 {
            ""
        } else {
            match level {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                Level::Info | Level::Debug => "",
            }
        };
        let _ = writeln!(out, "{prefix}{line}");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_keep_newlines_and_tabs_and_escape_the_rest() {
        let msg = "nft said:\n\tline 1\x1b[2K\rerror: forged\r\nend";
        assert_eq!(
            render(Level::Warn, msg, false),
            "warning: nft said:\n\tline 1\\x1b[2K\\rerror: forged\nend\n"
        );
        assert_eq!(
            render(Level::Error, msg, true),
            "<3>nft said:\n<3>\tline 1\\x1b[2K\\rerror: forged\n<3>end\n"
        );
    }
}
