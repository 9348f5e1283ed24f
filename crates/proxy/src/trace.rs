//! Distributed tracing in the sidecar (issue 12): every request gets a span per hop, a
//! server span inbound and a client span outbound, exported over OTLP.
//!
//! ```text
//! app A ─▶ outbound: client span ─▶ peer inbound: server span ─▶ app B ─▶ outbound …
//!          (parent: A's span,         (parent: the client span;    (copies the headers:
//!           or a new trace)            the app sees it as parent)   the next client span's
//!                                                                   parent is the server span)
//! ```
//!
//! - [`layer`]: the tower layer on both stacks (extract, sample, inject, record); each stack
//!   hands it its own [`SpanAttributes`] (as telemetry's `RequestLabels`).
//! - [`span`]: a span in flight and the `SpanData` it becomes.
//! - [`export`]: the bounded queue and the OTLP batch exporter.
//! - Elsewhere: what the layer leaves on the request for the layers below (trace id for
//!   their logs, notes for the span: decision, retries, timeouts) is
//!   [`crate::span_notes`]; what the sidecar is told (sampling, propagation, collector) is
//!   [`crate::config::TracingConfig`].
//!
//! Spans are built as OpenTelemetry `SpanData` directly, not through `tracing` spans and
//! `tracing-opentelemetry`: the span id must be known when the request is forwarded (it goes
//! into the next hop's headers), the data path should not pay for a subscriber's span
//! registry, and nothing else (h2, hyper internals) can leak into the export. With tracing
//! off no trace layer is built at all. The header parsers are [`crate::trace_context`]'s.

pub mod export;
pub mod layer;
pub mod span;

use std::sync::Arc;

use identity::SpiffeId;
use opentelemetry::{KeyValue, StringValue};

pub use export::{Exporting, SpanQueue};
pub use layer::{Side, SpanAttributes, TraceLayer};

use crate::config::{Propagation, TracingConfig};
use crate::metrics::ProxyMetrics;
use crate::trace_context::Sampler;

/// What both trace layers of a sidecar share (cheap to clone).
#[derive(Clone)]
pub struct Tracer {
    sampler: Sampler,
    propagation: Propagation,
    queue: SpanQueue,
    /// This workload's SPIFFE ID, as an attribute value.
    own: StringValue,
}

impl Tracer {
    /// This workload's SPIFFE ID, as an attribute value.
    pub fn own(&self) -> &StringValue {
        &self.own
    }
}

impl Tracer {
    /// The tracer of the workload `own` (replica `replica`), and the export task to run:
    /// builds the OTLP exporter `config` names.
    pub fn start(
        config: &TracingConfig,
        own: &SpiffeId,
        replica: u16,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Result<(Tracer, Exporting), opentelemetry_otlp::ExporterBuildError> {
        let resource = vec![
            KeyValue::new(
                "service.instance.id",
                format!("{}-{replica}", config.otlp.service_name),
            ),
            KeyValue::new("meshwork.spiffe_id", own.as_str().to_owned()),
        ];
        let (queue, exporting) = export::start(&config.otlp, resource, metrics)?;
        let tracer = Tracer {
            sampler: config.sampler,
            propagation: config.propagation,
            queue,
            own: StringValue::from(own.as_str().to_owned()),
        };
        Ok((tracer, exporting))
    }
}
