//! The module layering of the sidecar, checked by a test (see `testkit::layering` for what
//! the check sees and what it does not).
//!
//! Bottom to top:
//! - the leaves, importing nothing of the crate: `body`, `label`,
//!   `control_client`, `exposition`, `hop_by_hop`, `ready`, `opaque_preamble` (the 8 bytes
//!   that open an opaque TCP connection between sidecars), `trace_context` (W3C and B3
//!   context, sampling), and `config` (only the sampler type of `trace_context`);
//! - `span_notes` (what the trace layer leaves on a request for the layers below: the trace
//!   id for their logs, notes for the span), below everything that writes notes;
//! - errors, metrics and plumbing: `forward_error`, `denial`, `retry` → `metrics`, `pool`,
//!   `reserved_headers`, `start_error`, `upgrade` (an HTTP/1.1 upgrade's last hop and splice)
//!   → `server` (what both listeners share, including the
//!   connection's verified `PeerIdentity`), `prometheus`, `workload_api`, `tap` (the bounded
//!   queue of finished requests for the admin's `/tap`), `sample_ring` (the once-a-second
//!   samples of the request counters for `/stats` and `/decisions`);
//! - the data the stacks read: `resilience` (its layers and the outlier state, keyed by
//!   `EndpointKey`) and `route_classifier` → `endpoint_slot` (per-endpoint load and open
//!   requests) → `routes` (the snapshot's route table: services, their endpoint slots and
//!   compiled route rules, and the policies);
//! - `telemetry` (the layer; each stack hands it its own `RequestLabels`) and `discovery`
//!   (keeps `routes` current) → `trace` (the span layer, below telemetry in both stacks and
//!   reading its labels; each stack hands it its own `SpanAttributes`; and the OTLP export);
//! - the listeners, `inbound` and `outbound`, which never import each other → `pod` (pod
//!   mode's capture listener and resolver, serving into the outbound stack) and `admin` →
//!   `proxy` (wiring).
//!
//! So nothing below a listener knows the listeners' types: what both read (the route table,
//! endpoint state, the caller's identity) lives below them, and what only one produces
//! (the outbound classification and its labels) stays in it.

/// Each top-level module and the modules it may use.
pub(crate) const LAYERS: &[testkit::layering::Layer<'static>] = &[
    ("body", &[]),
    ("label", &[]),
    ("config", &["trace_context"]),
    ("control_client", &[]),
    ("exposition", &[]),
    ("hop_by_hop", &[]),
    ("ready", &[]),
    ("opaque_preamble", &[]),
    ("trace_context", &[]),
    ("layering", &[]),
    ("span_notes", &["trace_context"]),
    ("forward_error", &["body"]),
    ("denial", &["body"]),
    ("retry", &["body"]),
    ("metrics", &["forward_error", "label"]),
    ("pool", &["body", "retry"]),
    // An upgraded request's last hop (both listeners): the HTTP/1.1 form of `pool`.
    ("upgrade", &["body", "pool"]),
    ("reserved_headers", &["body", "denial"]),
    ("start_error", &["body", "control_client", "ready"]),
    (
        "server",
        &["body", "forward_error", "metrics", "trace_context"],
    ),
    (
        "prometheus",
        &["exposition", "forward_error", "label", "metrics"],
    ),
    (
        "tap",
        &["denial", "exposition", "label", "metrics", "trace_context"],
    ),
    // `prometheus` and `label` in its tests only: a real recorder to sample.
    ("sample_ring", &["label", "metrics", "prometheus"]),
    ("workload_api", &["start_error"]),
    (
        "resilience",
        &[
            "body",
            "forward_error",
            "label",
            "metrics",
            "retry",
            "span_notes",
        ],
    ),
    ("route_classifier", &["label"]),
    ("endpoint_slot", &["forward_error", "label", "resilience"]),
    (
        "routes",
        &["endpoint_slot", "resilience", "route_classifier"],
    ),
    (
        "telemetry",
        &[
            "body",
            "denial",
            "forward_error",
            "label",
            "metrics",
            "routes",
            "server",
            "tap",
            "trace_context",
        ],
    ),
    (
        "trace",
        &[
            "body",
            "config",
            "forward_error",
            "label",
            "metrics",
            "server",
            "span_notes",
            "telemetry",
            "trace_context",
        ],
    ),
    (
        "discovery",
        &[
            "config",
            "control_client",
            "routes",
            "start_error",
            "workload_api",
        ],
    ),
    (
        "inbound",
        &[
            "body",
            "config",
            "denial",
            "forward_error",
            "hop_by_hop",
            "label",
            "metrics",
            "opaque_preamble",
            "pool",
            "reserved_headers",
            "routes",
            "server",
            "span_notes",
            "tap",
            "telemetry",
            "trace",
            "trace_context",
            "upgrade",
        ],
    ),
    (
        "outbound",
        &[
            "body",
            "config",
            "denial",
            "endpoint_slot",
            "forward_error",
            "hop_by_hop",
            "label",
            "metrics",
            "opaque_preamble",
            "pool",
            "reserved_headers",
            "resilience",
            "routes",
            "server",
            "span_notes",
            "tap",
            "telemetry",
            "trace",
            "upgrade",
        ],
    ),
    // Pod mode's capture path serves into the outbound stack; `proxy` wires it.
    (
        "pod",
        &[
            "config",
            "forward_error",
            "label",
            "metrics",
            "outbound",
            "routes",
            "server",
        ],
    ),
    (
        "admin",
        &[
            "body",
            "exposition",
            "inbound",
            "label",
            "metrics",
            "reserved_headers",
            "routes",
            "sample_ring",
            "server",
            "tap",
        ],
    ),
    (
        "proxy",
        &[
            "admin",
            "config",
            "discovery",
            "inbound",
            "metrics",
            "outbound",
            "pod",
            "prometheus",
            "ready",
            "routes",
            "start_error",
            "tap",
            "trace",
        ],
    ),
];

#[test]
fn modules_depend_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    testkit::layering::assert_layers(&src, LAYERS);
}
