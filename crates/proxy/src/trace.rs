//! Distributed tracing in the sidecar (issue 12): a span per request per hop, exported over
//! OTLP. The headers themselves are [`crate::trace_context`]'s.

mod config;

pub use config::{OtlpExport, OtlpProtocol, Propagation, TracingConfig, UnknownOtlpProtocol};
