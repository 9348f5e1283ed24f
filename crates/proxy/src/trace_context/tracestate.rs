//! W3C `tracestate`: vendors' `key=value` list members, passed on unchanged.
//!
//! Rules (Trace Context level 2, and its test suite): several header fields are one list
//! joined by commas (RFC 9110 §5.3); empty and whitespace-only members are allowed and
//! dropped; optional whitespace around members is dropped; at most 32 members, more makes
//! the whole list invalid; a key is 1 to 256 of `a-z 0-9 _ - * / @`, starting with a letter
//! or digit; a value is 1 to 256 printable ASCII characters other than `,` and `=`, not
//! ending in a space. One invalid member discards the whole list (never the
//! `traceparent`). A repeated key keeps its first (left-most, most recent) member.
//!
//! Bounded: what is kept is at most 512 characters (the spec's "at least 512" that vendors
//! propagate), trimmed by its truncation rule: members over 128 characters go first, then
//! members from the end.

use std::fmt;
use std::str::FromStr;

use super::TraceContextError;
use super::traceparent::trim_ows;

/// The most list members a `tracestate` may have.
pub const MAX_MEMBERS: usize = 32;
/// The most characters of `tracestate` kept and sent on.
pub const MAX_LENGTH: usize = 512;
/// Members longer than this are the first dropped when the list is over [`MAX_LENGTH`].
const LONG_MEMBER: usize = 128;
const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 256;

/// A valid `tracestate` list, normalised (`key=value` members joined by `,`, no
/// whitespace) and at most [`MAX_LENGTH`] characters. Empty when none was sent or the one
/// sent was invalid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceState(String);

impl TraceState {
    /// Parses the list carried by one or more `tracestate` header values, in order.
    pub fn parse_values<'a>(
        values: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Self, TraceContextError> {
        let mut kept: Vec<&[u8]> = Vec::new();
        let mut count = 0;
        let mut position = 0;
        for value in values {
            for member in value.split(|&byte| byte == b',') {
                position += 1;
                let member = trim_ows(member);
                if member.is_empty() {
                    continue;
                }
                count += 1;
                if count > MAX_MEMBERS {
                    return Err(TraceContextError::TraceStateMembers);
                }
                let key =
                    check_member(member).map_err(|rule| TraceContextError::TraceStateMember {
                        member: position,
                        rule,
                    })?;
                if !kept.iter().any(|seen| key_of(seen) == key) {
                    kept.push(member);
                }
            }
        }
        truncate(&mut kept);
        Ok(Self(join(&kept)))
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The list as sent: `key=value` members joined by `,`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The members as `(key, value)`, left (most recent) first.
    pub fn members(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .split(',')
            .filter(|member| !member.is_empty())
            .filter_map(|member| member.split_once('='))
    }

    /// The value of `key`'s member.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.members()
            .find(|(member_key, _)| *member_key == key)
            .map(|(_, value)| value)
    }
}

/// Checks one trimmed, non-empty member; returns its key.
fn check_member(member: &[u8]) -> Result<&[u8], &'static str> {
    let equals = member
        .iter()
        .position(|&byte| byte == b'=')
        .ok_or("has no '='")?;
    let (key, value) = (&member[..equals], &member[equals + 1..]);
    check_key(key)?;
    check_value(value)?;
    Ok(key)
}

fn check_key(key: &[u8]) -> Result<(), &'static str> {
    let Some((&first, _)) = key.split_first() else {
        return Err("key is empty");
    };
    if key.len() > MAX_KEY {
        return Err("key is longer than 256 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("key must start with a lower-case letter or a digit");
    }
    let key_char =
        |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-*/@".contains(byte);
    if !key.iter().all(key_char) {
        return Err("key may hold only a-z 0-9 _ - * / @");
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("value is empty");
    }
    if value.len() > MAX_VALUE {
        return Err("value is longer than 256 characters");
    }
    // `,` cannot occur here: the list was split on it.
    if !value
        .iter()
        .all(|&byte| (0x20..=0x7e).contains(&byte) && byte != b'=')
    {
        return Err("value may hold only printable ASCII other than ',' and '='");
    }
    // The member was trimmed, so the value cannot end in a space.
    Ok(())
}

fn key_of(member: &[u8]) -> &[u8] {
    member.split(|&byte| byte == b'=').next().unwrap_or(member)
}

/// The joined length of `members` (with the commas between them).
fn joined_len(members: &[&[u8]]) -> usize {
    members.iter().map(|member| member.len()).sum::<usize>() + members.len().saturating_sub(1)
}

/// Drops whole members until the list fits [`MAX_LENGTH`]: long ones (from the end) first,
/// then from the end (W3C's truncation rule).
fn truncate(members: &mut Vec<&[u8]>) {
    while joined_len(members) > MAX_LENGTH {
        let last = members.len().saturating_sub(1);
        let drop = members
            .iter()
            .rposition(|member| member.len() > LONG_MEMBER)
            .unwrap_or(last);
        members.remove(drop);
    }
}

fn join(members: &[&[u8]]) -> String {
    let mut joined = String::with_capacity(joined_len(members));
    for (index, member) in members.iter().enumerate() {
        if index > 0 {
            joined.push(',');
        }
        // Members are checked to be ASCII; nothing else is copied.
        joined.extend(member.iter().map(|&byte| char::from(byte)));
    }
    joined
}

impl FromStr for TraceState {
    type Err = TraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_values([s.as_bytes()])
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<TraceState, TraceContextError> {
        TraceState::parse_values(values.iter().map(|value| value.as_bytes()))
    }

    #[test]
    fn tracestate_spec_examples_parse_in_order() {
        let state = parse(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"]).unwrap();
        assert_eq!(
            state.members().collect::<Vec<_>>(),
            [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
        assert_eq!(state.value("congo"), Some("t61rcWkgMzE"));
        assert_eq!(state.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    }

    #[test]
    fn tracestate_several_fields_are_one_list_and_empty_members_are_dropped() {
        let state = parse(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]).unwrap();
        assert_eq!(state.as_str(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        assert_eq!(parse(&["", "foo=1"]).unwrap().as_str(), "foo=1");
        assert_eq!(parse(&["foo=1", ""]).unwrap().as_str(), "foo=1");
        assert_eq!(
            parse(&["foo=1,, ,\t,bar=2"]).unwrap().as_str(),
            "foo=1,bar=2"
        );
        assert!(parse(&[""]).unwrap().is_empty());
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn tracestate_ows_around_members_is_dropped_and_leading_value_spaces_kept() {
        for value in [
            "foo=1 \t , \t bar=2, \t baz=3",
            "foo=1\t \t,\t \tbar=2,\t \tbaz=3",
        ] {
            assert_eq!(parse(&[value]).unwrap().as_str(), "foo=1,bar=2,baz=3");
        }
        for value in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(
                parse(&[value]).unwrap().value("foo"),
                Some("1"),
                "{value:?}"
            );
        }
        assert_eq!(parse(&["foo= 1"]).unwrap().value("foo"), Some(" 1"));
    }

    #[test]
    fn tracestate_every_allowed_character() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|byte| *byte != b',' && *byte != b'=')
            .map(char::from)
            .collect();
        let with_vendor = format!("{key}@a-z0-9_-*/");
        for key in [key, with_vendor.as_str()] {
            let state = parse(&[&format!("{key}={value}")]).unwrap();
            assert_eq!(state.value(key), Some(value.as_str()));
        }
    }

    #[test]
    fn tracestate_keys_with_at_signs_follow_the_level_2_grammar() {
        for (list, key) in [
            ("foo@=1,bar=2", "foo@"),
            ("foo@@bar=1,bar=2", "foo@@bar"),
            ("foo@bar@baz=1,bar=2", "foo@bar@baz"),
        ] {
            let state = parse(&[list]).unwrap();
            assert_eq!(state.value(key), Some("1"));
            assert_eq!(state.value("bar"), Some("2"));
        }
        assert_eq!(
            parse(&["@foo=1,bar=2"]),
            Err(TraceContextError::TraceStateMember {
                member: 1,
                rule: "key must start with a lower-case letter or a digit"
            })
        );
    }

    #[test]
    fn tracestate_key_length_limit_is_256() {
        let longest = "z".repeat(256);
        let state = parse(&["foo=1", &format!("{longest}=1")]).unwrap();
        assert_eq!(state.value(&longest), Some("1"));
        assert_eq!(state.value("foo"), Some("1"));
        for key in [
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
        ] {
            assert_eq!(
                parse(&["foo=1", &format!("{key}=1")]).unwrap().value(&key),
                Some("1")
            );
        }
        assert_eq!(
            parse(&["foo=1", &format!("{}=1", "z".repeat(257))]),
            Err(TraceContextError::TraceStateMember {
                member: 2,
                rule: "key is longer than 256 characters"
            })
        );
    }

    /// The W3C test suite's invalid lists: the whole `tracestate` is discarded.
    #[test]
    fn tracestate_w3c_suite_invalid_lists_are_discarded() {
        for list in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "foo=bar=baz",
            "foo=,bar=3",
            "foo",
            "=1",
            "foo=1\u{7f}",
            "foo=\u{e9}",
        ] {
            assert!(parse(&[list]).is_err(), "{list:?} was accepted");
        }
        assert!(parse(&[&format!("foo={}", "v".repeat(257))]).is_err());
        assert!(parse(&[&format!("foo={}", "v".repeat(256))]).is_ok());
    }

    #[test]
    fn tracestate_member_count_limit_is_32() {
        let members = |range: std::ops::RangeInclusive<u32>| {
            range
                .map(|n| format!("bar{n:02}={n:02}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let state = parse(&[&members(1..=10), &members(11..=20), &members(21..=32)]).unwrap();
        assert_eq!(state.members().count(), 32);
        assert_eq!(state.value("bar01"), Some("01"));
        assert_eq!(
            parse(&[&members(1..=10), &members(11..=20), &members(21..=33)]),
            Err(TraceContextError::TraceStateMembers)
        );
        // Empty members do not count.
        assert!(parse(&[&format!("{},,,", members(1..=32))]).is_ok());
    }

    #[test]
    fn tracestate_repeated_keys_keep_the_first_member() {
        assert_eq!(parse(&["foo=1,foo=1"]).unwrap().as_str(), "foo=1");
        assert_eq!(parse(&["foo=1,foo=2"]).unwrap().as_str(), "foo=1");
        assert_eq!(parse(&["foo=1", "foo=2"]).unwrap().as_str(), "foo=1");
        assert_eq!(
            parse(&["foo=1,foobar=2,foo=3"]).unwrap().as_str(),
            "foo=1,foobar=2"
        );
    }

    #[test]
    fn tracestate_over_512_characters_drops_long_members_then_from_the_end() {
        // 5 members of 100 characters (504 with commas) fit.
        let short = |n: u32| format!("k{n}={}", "v".repeat(97));
        let five: Vec<String> = (1..=5).map(short).collect();
        assert_eq!(parse(&[&five.join(",")]).unwrap().as_str().len(), 504);
        // A sixth pushes it over: the last member goes.
        let six: Vec<String> = (1..=6).map(short).collect();
        assert_eq!(parse(&[&six.join(",")]).unwrap().as_str(), five.join(","));
        // A long member goes before any short one, wherever it is.
        let long = format!("long={}", "v".repeat(200));
        let list = format!("{},{long},{}", six[..3].join(","), six[3..].join(","));
        let state = parse(&[&list]).unwrap();
        assert_eq!(state.value("long"), None);
        assert_eq!(state.as_str(), five.join(","));
        assert!(state.as_str().len() <= MAX_LENGTH);
    }
}
