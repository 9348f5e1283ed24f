//! What the inbound stack puts on its server spans (the trace layer's [`SpanAttributes`]):
//! the path, the host the caller named, the caller's address and verified identity, and this
//! workload's identity as the callee.

use http::Request;
use opentelemetry::{KeyValue, StringValue};

use crate::body::ProxyBody;
use crate::server::{PeerAddr, PeerIdentity};
use crate::span_notes::{attr, bounded_value};
use crate::telemetry::{Labelled, request_host};
use crate::trace::{Side, SpanAttributes};

/// The inbound stack's span attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct InboundSpan;

impl SpanAttributes for InboundSpan {
    const SIDE: Side = Side::Inbound;

    fn attributes(
        &self,
        request: &Request<ProxyBody>,
        _labelled: Option<&Labelled>,
        own: &StringValue,
        out: &mut Vec<KeyValue>,
    ) {
        out.push(KeyValue::new("url.scheme", "http"));
        out.push(KeyValue::new(
            "url.path",
            bounded_value(request.uri().path()),
        ));
        if let Some(host) = request_host(request) {
            out.push(KeyValue::new("server.address", bounded_value(host)));
        }
        if let Some(PeerAddr(addr)) = request.extensions().get::<PeerAddr>() {
            out.push(KeyValue::new("network.peer.address", addr.ip().to_string()));
            out.push(KeyValue::new("network.peer.port", i64::from(addr.port())));
        }
        if let Some(PeerIdentity(caller)) = request.extensions().get::<PeerIdentity>() {
            out.push(KeyValue::new(attr::CALLER, caller.as_str().to_owned()));
        }
        out.push(KeyValue::new(attr::CALLEE, own.clone()));
    }
}
