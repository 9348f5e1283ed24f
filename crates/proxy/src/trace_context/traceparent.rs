//! W3C `traceparent`: `version-traceid-parentid-flags`, lower-case hex, exact lengths.
//!
//! Version `00` is exactly 55 characters. A higher version (not `ff`, which is forbidden)
//! is read by the spec's forward-compatible rule: at least 55 characters, the four known
//! fields where version 00 has them, and after the flags either the end or a `-` that
//! starts fields this version does not know (ignored). It is written back as version `00`
//! (the spec's "downgrade the version" mutation).

use std::fmt;
use std::str::FromStr;

use http::HeaderValue;

use super::TraceContextError;
use super::ids::{SpanId, TraceId, lower_hex};

const HEADER: &str = "traceparent";
/// The length of a version-00 value: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const LENGTH: usize = 55;

/// W3C `trace-flags`, keeping only the flags this implementation knows (the spec: "Vendors
/// MUST set those to zero").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The caller may have recorded trace data.
    pub const SAMPLED: u8 = 0x01;
    /// Level 2: at least the right-most 7 bytes of the trace id are random.
    pub const RANDOM: u8 = 0x02;

    /// The flags in `bits` this implementation knows; the others are dropped.
    pub fn from_bits_known(bits: u8) -> Self {
        Self(bits & (Self::SAMPLED | Self::RANDOM))
    }

    /// The flags as one byte.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The `sampled` flag.
    pub fn sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }

    /// The `random-trace-id` flag (W3C level 2).
    pub fn random(self) -> bool {
        self.0 & Self::RANDOM != 0
    }

    /// These flags with `sampled` set or unset.
    #[must_use]
    pub fn with_sampled(self, sampled: bool) -> Self {
        self.with(Self::SAMPLED, sampled)
    }

    /// These flags with `random-trace-id` set or unset.
    #[must_use]
    pub fn with_random(self, random: bool) -> Self {
        self.with(Self::RANDOM, random)
    }

    fn with(self, flag: u8, on: bool) -> Self {
        if on {
            Self(self.0 | flag)
        } else {
            Self(self.0 & !flag)
        }
    }
}

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Traceparent {
    /// The trace's id.
    pub trace_id: TraceId,
    /// The sender's span: the parent of the receiver's.
    pub parent_id: SpanId,
    /// The known flags (for a version above 00, only `sampled`: the spec reads nothing else
    /// of a version it does not know).
    pub flags: TraceFlags,
}

impl Traceparent {
    /// Parses one header value's bytes, after trimming optional whitespace (spaces and tabs)
    /// around it.
    pub fn parse_bytes(value: &[u8]) -> Result<Self, TraceContextError> {
        let value = trim_ows(value);
        let shape = |rule| TraceContextError::Shape {
            header: HEADER,
            rule,
        };
        let field = |field, rule| TraceContextError::Field {
            header: HEADER,
            field,
            rule,
        };
        if value.len() < 3 || value[2] != b'-' {
            return Err(shape("must start with a 2-digit version and '-'"));
        }
        let version =
            lower_hex(&value[..2]).ok_or(field("version", "must be 2 lower-case hex digits"))?;
        if version == 0xff {
            return Err(field("version", "ff is forbidden"));
        }
        if version == 0 && value.len() != LENGTH {
            return Err(shape("version 00 must be exactly 55 characters"));
        }
        if value.len() < LENGTH {
            return Err(shape("must be at least 55 characters"));
        }
        if value[35] != b'-' || value[52] != b'-' {
            return Err(shape(
                "trace-id (32 digits), parent-id (16) and trace-flags (2) must be separated by '-'",
            ));
        }
        if value.len() > LENGTH && value[LENGTH] != b'-' {
            return Err(shape("trace-flags must be followed by the end or '-'"));
        }
        let trace_id = TraceId::parse_hex32(&value[3..35])
            .map_err(|rule| rule.at(HEADER, "trace-id", "must be 32 lower-case hex digits"))?;
        let parent_id = SpanId::parse_hex16(&value[36..52])
            .map_err(|rule| rule.at(HEADER, "parent-id", "must be 16 lower-case hex digits"))?;
        let bits = lower_hex(&value[53..55])
            .ok_or(field("trace-flags", "must be 2 lower-case hex digits"))?;
        let bits = u8::try_from(bits).map_err(|_| field("trace-flags", "must be one byte"))?;
        let flags = if version == 0 {
            TraceFlags::from_bits_known(bits)
        } else {
            TraceFlags::from_bits_known(bits & TraceFlags::SAMPLED)
        };
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// Removes RFC 9110's optional whitespace (spaces and horizontal tabs) at both ends.
pub(super) fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

impl FromStr for Traceparent {
    type Err = TraceContextError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_bytes(s.as_bytes())
    }
}

impl TryFrom<&http::HeaderValue> for Traceparent {
    type Error = TraceContextError;

    fn try_from(value: &http::HeaderValue) -> Result<Self, Self::Error> {
        Self::parse_bytes(value.as_bytes())
    }
}

impl Traceparent {
    /// The header value (version 00), written without `fmt`: this runs for every request a
    /// tracing sidecar forwards, and `write!` of the hex ids cost ~4.5k instructions there.
    pub fn to_header_value(&self) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&self.trace_id.to_bytes(), &mut text[3..35]);
        text[35] = b'-';
        write_hex(&self.parent_id.to_bytes(), &mut text[36..52]);
        text[52] = b'-';
        write_hex(&[self.flags.bits()], &mut text[53..55]);
        // invariant: lower-case hex digits and '-' are visible ASCII, always a valid value.
        #[allow(clippy::expect_used)]
        HeaderValue::from_bytes(&text).expect("hex and '-' form a valid header value")
    }
}

/// `bytes` as lower-case hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

impl fmt::Display for Traceparent {
    /// Version 00, whatever version was read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags.bits()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_header_value_is_the_display_text() {
        for text in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-ffffffffffffffffffffffffffffffff-0000000000000001-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
        ] {
            let tp: super::Traceparent = text.parse().unwrap();
            assert_eq!(tp.to_header_value(), tp.to_string().as_str());
            assert_eq!(tp.to_header_value(), text);
        }
    }

    use super::*;

    const TRACE: &str = "12345678901234567890123456789012";

    fn parse(value: &str) -> Result<Traceparent, TraceContextError> {
        value.parse()
    }

    #[test]
    fn traceparent_spec_examples_parse() {
        let sampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sampled.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sampled.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(sampled.flags.sampled());
        assert!(!sampled.flags.random());
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.flags.sampled());
        assert_eq!(
            unsampled.to_string(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn traceparent_flags_are_a_bit_field_and_unknown_bits_are_dropped() {
        let both = parse(&format!("00-{TRACE}-1234567890123456-03")).unwrap();
        assert!(both.flags.sampled() && both.flags.random());
        let random_only = parse(&format!("00-{TRACE}-1234567890123456-02")).unwrap();
        assert!(!random_only.flags.sampled() && random_only.flags.random());
        let unknown = parse(&format!("00-{TRACE}-1234567890123456-09")).unwrap();
        assert_eq!(unknown.flags.bits(), TraceFlags::SAMPLED);
        assert!(unknown.to_string().ends_with("-01"));
    }

    #[test]
    fn traceparent_ows_around_the_value_is_ignored() {
        for value in [
            format!(" 00-{TRACE}-1234567890123456-01"),
            format!("\t00-{TRACE}-1234567890123456-01"),
            format!("00-{TRACE}-1234567890123456-01 "),
            format!("00-{TRACE}-1234567890123456-01\t"),
            format!("\t 00-{TRACE}-1234567890123456-01 \t"),
        ] {
            assert_eq!(
                parse(&value).unwrap().trace_id.to_string(),
                TRACE,
                "{value:?}"
            );
        }
    }

    #[test]
    fn traceparent_higher_versions_are_read_forward_compatibly() {
        for value in [
            format!("cc-{TRACE}-1234567890123456-01"),
            format!("cc-{TRACE}-1234567890123456-01-what-the-future-will-be-like"),
        ] {
            let tp = parse(&value).unwrap();
            assert_eq!(tp.trace_id.to_string(), TRACE);
            assert!(tp.flags.sampled());
            assert_eq!(tp.to_string(), format!("00-{TRACE}-1234567890123456-01"));
        }
        // Only `sampled` is read from a version this implementation does not know.
        let future = parse(&format!("01-{TRACE}-1234567890123456-03")).unwrap();
        assert_eq!(future.flags, TraceFlags::default().with_sampled(true));
        assert_eq!(
            parse(&format!(
                "cc-{TRACE}-1234567890123456-01.what-the-future-will-be-like"
            )),
            Err(TraceContextError::Shape {
                header: HEADER,
                rule: "trace-flags must be followed by the end or '-'"
            })
        );
        assert!(parse(&format!("cc-{TRACE}-1234567890123456-0")).is_err());
    }

    /// The W3C test suite's invalid `traceparent` values (test/test.py): each one restarts
    /// the trace.
    #[test]
    fn traceparent_w3c_suite_invalid_values_are_rejected() {
        let cases = [
            format!("00-{TRACE}-1234567890123456-01."),
            format!("00-{TRACE}-1234567890123456-01-what-the-future-will-be-like"),
            format!("ff-{TRACE}-1234567890123456-01"),
            format!(".0-{TRACE}-1234567890123456-01"),
            format!("0.-{TRACE}-1234567890123456-01"),
            format!("000-{TRACE}-1234567890123456-01"),
            format!("0000-{TRACE}-1234567890123456-01"),
            format!("0-{TRACE}-1234567890123456-01"),
            "00-00000000000000000000000000000000-1234567890123456-01".to_owned(),
            "00-.2345678901234567890123456789012-1234567890123456-01".to_owned(),
            "00-1234567890123456789012345678901.-1234567890123456-01".to_owned(),
            "00-123456789012345678901234567890123-1234567890123456-01".to_owned(),
            "00-1234567890123456789012345678901-1234567890123456-01".to_owned(),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00-{TRACE}-.234567890123456-01"),
            format!("00-{TRACE}-123456789012345.-01"),
            format!("00-{TRACE}-12345678901234567-01"),
            format!("00-{TRACE}-123456789012345-01"),
            format!("00-{TRACE}-1234567890123456-.0"),
            format!("00-{TRACE}-1234567890123456-0."),
            format!("00-{TRACE}-1234567890123456-001"),
            format!("00-{TRACE}-1234567890123456-1"),
            // Upper-case hex, in each field.
            format!("0A-{TRACE}-1234567890123456-01"),
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".to_owned(),
            format!("00-{TRACE}-00F067AA0BA902B7-01"),
            format!("00-{TRACE}-1234567890123456-0A"),
            // A higher version is still held to the known fields.
            "cc-00000000000000000000000000000000-1234567890123456-01".to_owned(),
            format!("cc-{TRACE}-1234567890123456_01"),
            String::new(),
            "00".to_owned(),
        ];
        for value in cases {
            assert!(parse(&value).is_err(), "{value:?} was accepted");
        }
    }

    #[test]
    fn traceparent_errors_name_the_field_and_rule() {
        assert_eq!(
            parse(&format!("ff-{TRACE}-1234567890123456-01")),
            Err(TraceContextError::Field {
                header: HEADER,
                field: "version",
                rule: "ff is forbidden"
            })
        );
        assert_eq!(
            parse(&format!("00-{TRACE}-0000000000000000-01"))
                .unwrap_err()
                .to_string(),
            "traceparent: parent-id must not be all zeros"
        );
        assert_eq!(
            parse(&format!("00-{TRACE}-1234567890123456-001"))
                .unwrap_err()
                .to_string(),
            "traceparent: version 00 must be exactly 55 characters"
        );
    }

    #[test]
    fn trim_ows_handles_all_whitespace_and_empty() {
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" a b\t"), b"a b");
    }
}
