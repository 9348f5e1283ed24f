//! Metrics hook points. The proxy calls these at the moments worth counting; every
//! sidecar records them with [`crate::PrometheusMetrics`] (served on the admin `/metrics`).
//! Every method defaults to doing nothing, so implementors override only what they record.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use identity::SpiffeId;

use crate::forward_error::{ForwardError, OverloadLimit, TimeoutKind};
use crate::label::{Label, MethodLabel};

/// Which listener a request or connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Calls from other sidecars into the local app.
    Inbound,
    /// Calls from the local app out to the mesh.
    Outbound,
}

impl Direction {
    /// The `direction` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The HTTP version negotiated on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

impl Protocol {
    /// The protocol ALPN selected (`h2` → HTTP/2; anything else or none → HTTP/1.1).
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }

    /// The `protocol` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// Why a request was sent again (the `reason` of `meshwork_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Connecting to the endpoint failed, or the service had no endpoint to connect to:
    /// nothing was sent.
    Connect,
    /// The HTTP client handed the request back unsent (e.g. a reused connection the peer
    /// was closing): nothing was sent.
    Unsent,
    /// The endpoint was at a circuit-breaker cap: nothing was sent.
    Overloaded,
    /// The connection closed or was reset before the response head.
    Reset,
    /// The per-try timeout fired.
    Timeout,
    /// The response status is one of the rule's `codes`.
    Status,
    /// The `grpc-status` of a trailers-only response is one of the rule's gRPC codes.
    GrpcStatus,
}

impl RetryReason {
    /// Every reason, in label order.
    pub const ALL: [RetryReason; 7] = [
        RetryReason::Connect,
        RetryReason::Unsent,
        RetryReason::Overloaded,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status,
        RetryReason::GrpcStatus,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Unsent => "unsent",
            RetryReason::Overloaded => "overloaded",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
            RetryReason::GrpcStatus => "grpc_status",
        }
    }

    /// Whether the failure proves the request was never sent, so that sending it again is
    /// safe whatever its method.
    pub fn never_sent(self) -> bool {
        matches!(
            self,
            RetryReason::Connect | RetryReason::Unsent | RetryReason::Overloaded
        )
    }
}

/// How an opaque TCP connection (ALPN `meshwork.opaque`) ended its setup (the `outcome` of
/// `meshwork_opaque_connections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpaqueOutcome {
    /// Authorized (inbound) or opened (outbound): bytes are spliced.
    Spliced,
    /// Refused by `AuthorizationPolicy` (inbound), with a decision id in the log.
    Denied,
    /// Refused before any decision: a bad or late preamble, or the app's HTTP port.
    Refused,
    /// The app (inbound) or every endpoint (outbound) could not be reached.
    Unreachable,
}

impl OpaqueOutcome {
    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OpaqueOutcome::Spliced => "spliced",
            OpaqueOutcome::Denied => "denied",
            OpaqueOutcome::Refused => "refused",
            OpaqueOutcome::Unreachable => "unreachable",
        }
    }
}

/// Why finished spans did not reach the collector (the `reason` of
/// `meshwork_trace_spans_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanDrop {
    /// The export queue was full (the collector is slower than the traffic, or away).
    QueueFull,
    /// The export request failed (collector unreachable, refused, timed out).
    ExportFailed,
}

impl SpanDrop {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanDrop::QueueFull => "queue_full",
            SpanDrop::ExportFailed => "export_failed",
        }
    }
}

/// One answered request as the telemetry layer labelled it (docs/telemetry.md). Every
/// label is interned or an enum, so building and passing a record allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord {
    /// Which listener the request came in on.
    pub direction: Direction,
    /// The mesh service (lower case), `[none]` or `[egress]`.
    pub service: Label,
    /// The first of the service's route templates the normalised path matches, else
    /// `[unmatched]`; never the raw path.
    pub route: Label,
    /// The method, extension methods as `OTHER`.
    pub method: MethodLabel,
    /// The status the caller received (a proxy error's status when forwarding failed).
    pub status: StatusCode,
    /// Inbound: the verified caller's SPIFFE ID. Outbound: the identity of the peer the
    /// request went to. `[none]` when there is none (egress, failure before any peer).
    pub peer: Label,
    /// From the request head's arrival at the listener's stack to the response head.
    pub elapsed: Duration,
    /// A policy refused the request: a `403` carrying the decision-id header (inbound
    /// authorization, egress policy, or — outbound — the peer's authorization).
    pub denied: bool,
}

/// Upper bounds of the request-duration buckets (seconds as written in `le`, and
/// nanoseconds), 0.5 ms to 10 s; slower requests land in `+Inf` only.
pub const BUCKETS: [(&str, u64); 14] = [
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1.0", 1_000_000_000),
    ("2.5", 2_500_000_000),
    ("5.0", 5_000_000_000),
    ("10.0", 10_000_000_000),
];

/// [`BUCKETS`] plus the overflow (`+Inf` only) slot.
pub const SLOTS: usize = BUCKETS.len() + 1;

/// One recorded request series: the full label set of a [`RequestRecord`] (a few words,
/// hashed as such), denials apart from other `403`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The listener.
    pub direction: Direction,
    /// The mesh service, `[none]` or `[egress]`.
    pub service: Label,
    /// The route template, or `[unmatched]`.
    pub route: Label,
    /// The method.
    pub method: MethodLabel,
    /// The status the caller got.
    pub status: StatusCode,
    /// The peer identity, or `[none]`.
    pub peer: Label,
    /// Refused by a policy ([`RequestRecord::denied`]).
    pub denied: bool,
}

impl SeriesKey {
    /// The series `record` counts into.
    pub fn of(record: &RequestRecord) -> SeriesKey {
        SeriesKey {
            direction: record.direction,
            service: record.service,
            route: record.route,
            method: record.method,
            status: record.status,
            peer: record.peer,
            denied: record.denied,
        }
    }
}

/// The cumulative counts of one series at one moment: requests per duration bucket
/// ([`SLOTS`], not cumulative across buckets; their sum is the request count) and the
/// total duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesSample {
    /// The label set.
    pub key: SeriesKey,
    /// Requests per bucket of [`BUCKETS`], then `+Inf`.
    pub slots: [u64; SLOTS],
    /// Their summed durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl SeriesSample {
    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.slots.iter().sum()
    }
}

/// Receives the proxy's measurement events. Must be cheap: called on the data path.
pub trait ProxyMetrics: Send + Sync + 'static {
    /// A sidecar completed an mTLS handshake on the inbound listener.
    fn inbound_connection(&self, _peer: &SpiffeId, _protocol: Protocol) {}

    /// This proxy opened a new mTLS connection to a peer sidecar.
    fn outbound_connection(&self, _peer: &SpiffeId, _addr: SocketAddr, _protocol: Protocol) {}

    /// A request was answered (by the upstream or by the proxy itself).
    fn response(&self, _direction: Direction, _status: StatusCode) {}

    /// A request failed in the proxy; [`ProxyMetrics::response`] is called as well.
    fn forward_error(&self, _direction: Direction, _error: &ForwardError) {}

    /// A request was answered, with its labels and duration (called by the telemetry
    /// layer, once per request whose response head was produced; before
    /// [`ProxyMetrics::response`]). Must not block: it runs on the data path.
    fn request(&self, _record: &RequestRecord) {}

    /// A request to `service` is being sent again, for `reason` (once per retry).
    fn retry(&self, _service: Label, _reason: RetryReason) {}

    /// A retry `service`'s retry budget did not allow (the failure went to the caller).
    fn retry_budget_exhausted(&self, _service: Label) {}

    /// A route's timeout fired on a request to `service`.
    fn timeout(&self, _service: Label, _kind: TimeoutKind) {}

    /// Outlier detection ejected the endpoint at `endpoint` from `service`'s balancer.
    fn ejection(&self, _service: Label, _endpoint: SocketAddr) {}

    /// The endpoint at `endpoint` of `service` was at its circuit-breaker `limit`, so a
    /// request was refused with a `503` instead of being sent to it.
    fn circuit_open(&self, _service: Label, _endpoint: SocketAddr, _limit: OverloadLimit) {}

    /// An opaque TCP connection to (outbound) or of (inbound) mesh service `service` was set
    /// up or refused.
    fn opaque_connection(&self, _direction: Direction, _service: Label, _outcome: OpaqueOutcome) {}

    /// `count` spans reached the collector.
    fn spans_exported(&self, _count: u64) {}

    /// `count` finished spans were dropped, for `reason`.
    fn spans_dropped(&self, _reason: SpanDrop, _count: u64) {}

    /// The cumulative counts of every request series recorded so far, for the admin's
    /// windowed `/stats` and `/decisions` (read once a second, off the data path). `None`:
    /// this implementation keeps none.
    fn sample(&self) -> Option<Vec<SeriesSample>> {
        None
    }

    /// Appends this implementation's metric families to an admin `/metrics` answer, in
    /// OpenMetrics text (`# HELP`/`# TYPE` lines and samples, without the final `# EOF`).
    fn encode_text(&self, _out: &mut String) {}
}

/// The default: records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl ProxyMetrics for NoMetrics {}
