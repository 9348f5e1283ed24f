//! What a sidecar is told about tracing: how to sample, which headers to write, where to
//! export. Built by the CLI from the `Mesh` resource's `spec.tracing` (or the OpenTelemetry
//! SDK environment variables); `ProxyConfig::tracing` is `None` when tracing is off.

use std::fmt;
use std::time::Duration;

use crate::trace_context::{Format, Formats, Sampler};

/// Tracing settings of one sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Parent-based sampling with a ratio for traces that start at this sidecar.
    pub sampler: Sampler,
    /// The trace headers written on the requests the sidecar sends.
    pub propagation: Propagation,
    /// Where recorded spans go.
    pub otlp: OtlpExport,
}

/// The trace headers a sidecar writes on the requests it forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// The format the request came in (W3C for a trace started here): what the app's own
    /// instrumentation reads back without configuration.
    #[default]
    AsReceived,
    /// W3C `traceparent`/`tracestate` only.
    W3c,
    /// B3 only: the single `b3` header to a caller that sent it, else `X-B3-*`.
    B3,
    /// W3C and B3 both (B3 as for [`Propagation::B3`]).
    Both,
}

impl Propagation {
    /// The formats to write for a request whose context came in `received`.
    pub fn formats(self, received: Format) -> Formats {
        match self {
            Propagation::AsReceived => match received {
                Format::None => Formats::W3C,
                other => Formats::from(other),
            },
            Propagation::W3c => Formats::W3C,
            Propagation::B3 => b3_like(received),
            Propagation::Both => Formats::W3C | b3_like(received),
        }
    }
}

/// B3 in the caller's B3 style: the single `b3` header for a caller that sent it, else the
/// multi-header `X-B3-*`.
fn b3_like(received: Format) -> Formats {
    match received {
        Format::B3Single => Formats::B3_SINGLE,
        _ => Formats::B3_MULTI,
    }
}

/// The OTLP wire protocol, as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (`grpc`; default port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`; default port 4318, path
    /// `/v1/traces`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The name `OTEL_EXPORTER_OTLP_PROTOCOL` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OtlpProtocol {
    type Err = UnknownOtlpProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(UnknownOtlpProtocol(other.to_owned())),
        }
    }
}

/// An OTLP protocol name other than `grpc` and `http/protobuf` (`http/json` is not
/// supported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OTLP protocol {0:?} is not supported (use \"grpc\" or \"http/protobuf\")")]
pub struct UnknownOtlpProtocol(pub String);

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpExport {
    /// The collector: `http://host:port` (gRPC), or for HTTP the base URL (`/v1/traces` is
    /// appended unless the URL already ends with it) or, with [`OtlpExport::signal_url`], the
    /// traces URL itself.
    pub endpoint: String,
    /// The HTTP endpoint is the traces URL as given (what `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// means), not a base URL.
    pub signal_url: bool,
    /// The wire protocol.
    pub protocol: OtlpProtocol,
    /// `service.name` of the exported resource (the workload's name).
    pub service_name: String,
    /// Spans waiting for export beyond this many are dropped and counted.
    pub queue_capacity: usize,
    /// Spans sent per export request, at most.
    pub batch_size: usize,
    /// A batch that is not full is sent after this long.
    pub batch_timeout: Duration,
}

impl OtlpExport {
    /// The OpenTelemetry SDK's batch defaults (queue 2048, batches of 512), sent every
    /// second rather than every five: a sidecar's spans should reach the collector while
    /// someone is still looking at the request.
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol, service_name: &str) -> Self {
        OtlpExport {
            endpoint: endpoint.into(),
            signal_url: false,
            protocol,
            service_name: service_name.to_owned(),
            queue_capacity: 2048,
            batch_size: 512,
            batch_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_received_writes_back_the_callers_format_and_w3c_for_new_traces() {
        let p = Propagation::AsReceived;
        assert_eq!(p.formats(Format::None), Formats::W3C);
        assert_eq!(p.formats(Format::B3Single), Formats::B3_SINGLE);
        assert_eq!(p.formats(Format::B3Multi), Formats::B3_MULTI);
        assert_eq!(
            Propagation::Both.formats(Format::B3Single),
            Formats::W3C | Formats::B3_SINGLE
        );
        assert_eq!(Propagation::B3.formats(Format::W3c), Formats::B3_MULTI);
        assert_eq!(
            Propagation::B3.formats(Format::B3Single),
            Formats::B3_SINGLE
        );
    }

    #[test]
    fn protocol_names_are_the_otel_sdk_ones() {
        for p in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            assert_eq!(p.as_str().parse::<OtlpProtocol>(), Ok(p));
        }
        assert!("http/json".parse::<OtlpProtocol>().is_err());
    }
}
