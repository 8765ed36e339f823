//! Making text from files and commands safe to echo in one line of a message. Pure.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character written as an escape (`\n`, `\r`, `\t`, `\x1b`), for
/// names and values from files that a message echoes: they cannot start a new line or drive
/// the terminal.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

/// Like [`escape_controls`], keeping tabs if `keep_tab` (log lines may indent with them).
pub fn escape(text: &str, keep_tab: bool) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && !(keep_tab && c == '\t');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            _ if !escaped(c) => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// `text` in double quotes with escapes, as `{:?}` shows it, cut to its first `max`
/// characters (then "… (N bytes)" follows the quotes): for echoing a bad value from a file.
pub fn quoted(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// `text` cut to its first `max` characters, with "…" and the full length in bytes after a
/// cut, and control characters escaped: for echoing a name or value from a file, which may be
/// megabytes long, in one line of a message.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => escape_controls(text).into_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", escape_controls(&text[..cut]), text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert!(matches!(escape_controls("plain"), Cow::Borrowed("plain")));
        assert_eq!(
            escape_controls("a\nb\rc\td\x1b[2Je\u{7f}f\u{85}"),
            r"a\nb\rc\td\x1b[2Je\x7ff\u{85}"
        );
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcd", 3), "abc… (4 bytes)");
        assert_eq!(shorten("a\nbcd", 2), "a\\n… (5 bytes)");
    }
}
