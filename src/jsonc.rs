//! JSON with `//` and `/* */` comments, parsed into an order-preserving tree.
//!
//! The reference addon's own example config carries a `//` comment, so plain JSON is not enough.
//! Comments are blanked out (newlines kept) before serde_json sees the text, so the line:column
//! of every syntax error still points into the admin's file. Objects keep their key order (the
//! order of variables is the order of the rendered defines) and every duplicate key, so the
//! validator can refuse duplicates instead of silently taking the last one.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// A short description of the value's kind and content for error messages.
    pub fn describe(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => format!("boolean {b}"),
            Json::Number(n) => format!("number {n}"),
            Json::String(s) => format!("string {}", crate::text::quoted(s, 64)),
            Json::Array(_) => "a list".into(),
            Json::Object(_) => "an object".into(),
        }
    }
}

/// A syntax error with its 1-based position in the original text.
#[derive(Debug, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Json, SyntaxError> {
    let plain = strip_comments(text)?;
    serde_json::from_str::<Json>(&plain).map_err(|e| {
        let full = e.to_string();
        // serde_json appends " at line L column C"; we print the position ourselves.
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_string(),
            None => full,
        };
        SyntaxError {
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

/// Replaces comments with spaces, keeping newlines so positions stay valid.
fn strip_comments(text: &str) -> Result<String, SyntaxError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            out.push(b);
            if b == b'\\' && i + 1 < bytes.len() {
                out.push(bytes[i + 1]);
                i += 1;
            } else if b == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match (b, bytes.get(i + 1)) {
            (b'"', _) => {
                in_string = true;
                out.push(b);
                i += 1;
            }
            (b'/', Some(b'/')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let start = i;
                out.extend_from_slice(b"  ");
                i += 2;
                loop {
                    if i >= bytes.len() {
                        let (line, column) = position(text, start);
                        return Err(SyntaxError {
                            line,
                            column,
                            message: "unterminated /* comment".into(),
                        });
                    }
                    if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        out.extend_from_slice(b"  ");
                        i += 2;
                        break;
                    }
                    out.push(if bytes[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII bytes inside comments were replaced (by ASCII), so this stays UTF-8;
    // multi-byte characters in comments become several spaces, which is harmless.
    Ok(String::from_utf8(out).expect("comment stripping keeps UTF-8 intact"))
}

fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        // NaN/inf cannot come out of JSON text.
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_are_ignored_and_order_kept() {
        let text =
            "{ // line comment\n \"b\": 1, /* block\n comment */ \"a\": \"x // not a comment\" }";
        let Json::Object(entries) = parse(text).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(entries[0], ("b".into(), Json::Number(1.into())));
        assert_eq!(
            entries[1],
            ("a".into(), Json::String("x // not a comment".into()))
        );
    }

    #[test]
    fn duplicate_keys_are_kept_for_the_validator() {
        let Json::Object(entries) = parse(r#"{"a": 1, "a": 2}"#).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn syntax_error_positions_survive_comment_stripping() {
        let err = parse("{\n  /* c */ \"a\": 1\n  \"b\": 2\n}").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(
            err.message.contains("expected `,` or `}`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unterminated_block_comment_is_reported_where_it_starts() {
        let err = parse("{\n \"a\": 1 /* oops\n}").unwrap_err();
        assert_eq!((err.line, err.column), (2, 9));
        assert_eq!(err.message, "unterminated /* comment");
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let Json::Object(entries) = parse(r#"{"a": "q\" // still string"}"#).unwrap() else {
            panic!("object expected")
        };
        assert_eq!(entries[0].1, Json::String("q\" // still string".into()));
    }
}
