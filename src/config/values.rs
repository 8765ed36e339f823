//! The config's basic types: address families and the literals a variable may render. Pure.

use crate::jsonc::Json;
use std::fmt;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The suffix of the rendered define: `NAME_v4`, `NAME_v6`.
    pub fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// What a family without addresses renders, so rules using the define still load.
    pub fn unspecified(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0",
            Family::V6 => "::",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Family::V4 => "ip4",
            Family::V6 => "ip6",
        }
    }

    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// One value per address family, indexed by [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerFamily<T>([T; 2]);

impl<T> PerFamily<T> {
    pub fn new(v4: T, v6: T) -> PerFamily<T> {
        PerFamily([v4, v6])
    }

    /// The value of each family from `make`.
    pub fn from_fn(mut make: impl FnMut(Family) -> T) -> PerFamily<T> {
        PerFamily(Family::ALL.map(&mut make))
    }

    /// The values in family order, v4 first.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.0.iter_mut()
    }
}

impl<T> std::ops::Index<Family> for PerFamily<T> {
    type Output = T;
    fn index(&self, family: Family) -> &T {
        &self.0[family as usize]
    }
}

impl<T> std::ops::IndexMut<Family> for PerFamily<T> {
    fn index_mut(&mut self, family: Family) -> &mut T {
        &mut self.0[family as usize]
    }
}

impl<'a, T> IntoIterator for &'a PerFamily<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a, T> IntoIterator for &'a mut PerFamily<T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

/// A `values` entry: only these three shapes can be rendered without quoting or escaping.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Integer(u64),
    Hex(String),
    Address(IpAddr),
    Identifier(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Value::Integer(n) => write!(f, "{n}"),
            Value::Hex(s) | Value::Identifier(s) => f.write_str(s),
            // IpAddr's Display is the canonical form (RFC 5952 for IPv6).
            Value::Address(a) => write!(f, "{a}"),
        }
    }
}

/// Parses one `values` entry (also used for fallback literals).
pub fn parse_value(item: &Json) -> Option<Value> {
    match item {
        Json::Number(n) => n.as_u64().map(Value::Integer),
        Json::String(s) => {
            if let Ok(n) = s.parse::<u64>() {
                Some(Value::Integer(n))
            } else if let Some(hex) = s.strip_prefix("0x") {
                (!hex.is_empty() && hex.len() <= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| Value::Hex(s.clone()))
            } else if let Ok(addr) = s.parse::<IpAddr>() {
                Some(Value::Address(addr))
            } else {
                is_identifier(s).then(|| Value::Identifier(s.clone()))
            }
        }
        _ => None,
    }
}

/// An nft identifier as used for define names: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
