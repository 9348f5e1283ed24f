//! What the engine decides about: an inbound [`Request`] or an [`EgressRequest`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use identity::SpiffeId;

use crate::dns::Host;
use crate::path::NormalizedPath;

/// Read access to request headers, so the engine works on `http::HeaderMap` in the proxy and
/// on plain lists in tests and tools.
pub trait HeaderSource {
    /// The field value of header `name` (given in lower case; implementations compare
    /// case-insensitively), several field lines combined with `", "` as RFC 9110 §5.3
    /// allows; `None` when the header is absent.
    fn combined_value(&self, name: &str) -> Option<Cow<'_, [u8]>>;
}

/// A request without headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl HeaderSource for NoHeaders {
    fn combined_value(&self, _name: &str) -> Option<Cow<'_, [u8]>> {
        None
    }
}

/// Combines the values yielded by `values` per RFC 9110 §5.3, borrowing when there is one.
fn combine<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Cow<'a, [u8]>> {
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = first.to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(v);
    }
    Some(Cow::Owned(joined))
}

impl HeaderSource for http::HeaderMap {
    fn combined_value(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        combine(self.get_all(name).iter().map(http::HeaderValue::as_bytes))
    }
}

impl HeaderSource for [(&str, &str)] {
    fn combined_value(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        combine(
            self.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes()),
        )
    }
}

impl HeaderSource for BTreeMap<String, String> {
    fn combined_value(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        combine(
            self.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes()),
        )
    }
}

/// An inbound request to a mesh service, as seen by the callee's proxy.
///
/// `H` is any [`HeaderSource`]: `http::HeaderMap`, `[(&str, &str)]`, or [`NoHeaders`].
#[derive(Debug, Clone, Copy)]
pub struct Request<'a, H: HeaderSource + ?Sized> {
    /// The mesh service being called (e.g. `billing`), as named by `targetService`.
    pub target_service: &'a str,
    /// The caller's SPIFFE ID from its verified client certificate; `None` for a caller that
    /// presented none (only rules with an empty `from` can match it).
    pub caller: Option<&'a SpiffeId>,
    /// HTTP method, case-sensitive (`POST`).
    pub method: &'a str,
    /// The request path, normalised.
    pub path: &'a NormalizedPath,
    /// The request headers.
    pub headers: &'a H,
}

/// An opaque TCP connection to a mesh service (ALPN `meshwork.opaque` between sidecars),
/// as seen by the callee's proxy: no method, path or headers, only the destination port.
#[derive(Debug, Clone, Copy)]
pub struct TcpRequest<'a> {
    /// The mesh service being called (e.g. `billing`), as named by `targetService`.
    pub target_service: &'a str,
    /// The caller's SPIFFE ID from its verified client certificate.
    pub caller: Option<&'a SpiffeId>,
    /// The port the caller asked for (the app's port it is spliced to).
    pub port: u16,
}

/// A request from a mesh workload to a destination outside the mesh.
#[derive(Debug, Clone, Copy)]
pub struct EgressRequest<'a> {
    /// The calling workload (its own SVID's ID; the proxy knows it).
    pub caller: &'a SpiffeId,
    /// Where the workload asked to go: `CONNECT host:port` or the host of an absolute-form URI.
    pub host: &'a Host,
    /// Destination port.
    pub port: u16,
    /// HTTP method, for plain-HTTP egress only (`None` for CONNECT tunnels).
    pub method: Option<&'a str>,
    /// Normalised path, for plain-HTTP egress only (`None` for CONNECT tunnels).
    pub path: Option<&'a NormalizedPath>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiple_field_lines_are_combined() {
        let list: &[(&str, &str)] = &[("Accept", "a"), ("x", "1"), ("accept", "b")];
        assert_eq!(list.combined_value("accept").as_deref(), Some(&b"a, b"[..]));
        assert_eq!(list.combined_value("x").as_deref(), Some(&b"1"[..]));
        assert_eq!(list.combined_value("y"), None);

        let mut map = http::HeaderMap::new();
        map.append("accept", http::HeaderValue::from_static("a"));
        map.append("accept", http::HeaderValue::from_static("b"));
        assert_eq!(map.combined_value("accept").as_deref(), Some(&b"a, b"[..]));
        assert_eq!(NoHeaders.combined_value("accept"), None);
    }
}
