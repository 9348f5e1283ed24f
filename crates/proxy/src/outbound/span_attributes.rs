//! What the outbound stack puts on its client spans (the trace layer's [`SpanAttributes`]),
//! read from the request's [`Classified`]: the host and port the app asked for, the egress
//! host for a destination outside the mesh, this workload as the caller and the service's
//! identity as the callee (when one identity backs it; else the balancer's answer says).

use http::Request;
use opentelemetry::{KeyValue, StringValue};

use super::classify::Classified;
use super::target::Target;
use crate::body::ProxyBody;
use crate::label::{EGRESS, NONE};
use crate::span_notes::{attr, bounded_value};
use crate::telemetry::Labelled;
use crate::trace::{Side, SpanAttributes};

/// The outbound stack's span attributes.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutboundSpan;

impl SpanAttributes for OutboundSpan {
    const SIDE: Side = Side::Outbound;

    fn attributes(
        &self,
        request: &Request<ProxyBody>,
        labelled: Option<&Labelled>,
        own: &StringValue,
        out: &mut Vec<KeyValue>,
    ) {
        out.push(KeyValue::new(attr::CALLER, own.clone()));
        if let Some(peer) = labelled.and_then(|l| l.peer).filter(|p| *p != NONE) {
            out.push(KeyValue::new(attr::CALLEE, peer.as_str()));
        }
        let target = request
            .extensions()
            .get::<Classified>()
            .and_then(|c| c.target.as_ref().ok());
        let Some(target) = target else {
            return;
        };
        let host = bounded_value(target.host());
        // No port in `http://host/…`: HTTP's default (the conventions ask for it).
        let port = target.port().unwrap_or(80);
        out.push(KeyValue::new("server.port", i64::from(port)));
        if let Target::Http { path_and_query, .. } = target {
            let path = bounded_value(path_and_query.path());
            out.push(KeyValue::new(
                "url.full",
                format!("http://{host}:{port}{path}"),
            ));
        }
        if labelled.is_some_and(|l| l.service == EGRESS) {
            out.push(KeyValue::new(attr::EGRESS_HOST, host.clone()));
        }
        out.push(KeyValue::new("server.address", host));
    }
}
