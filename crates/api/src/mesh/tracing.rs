//! `Mesh` `spec.tracing`: where sidecars export spans (OTLP), how many new traces they record,
//! and which trace headers they write (docs/telemetry.md, "Tracing"). Each field is optional;
//! what a `Mesh` leaves out comes from the OpenTelemetry SDK environment variables the sidecar
//! sees, then from the defaults (`meshwork proxy`'s flags document the order).
//!
//! These are the resource's types: the sidecar's own (`proxy::TracingConfig`) are built from
//! them by the cli, since this crate must not import `proxy`.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// `spec.tracing` of a `Mesh`. Present (even empty, `tracing: {}`) means every sidecar records
/// and exports spans.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingSpec {
    /// The OTLP collector; when omitted, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` /
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` as the sidecar sees them, else the OpenTelemetry default
    /// (`http://localhost:4317` for gRPC, `http://localhost:4318` for HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpSpec>,
    /// How many of the traces that start in the mesh are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSpec>,
    /// The trace headers sidecars write on the requests they forward (default `asReceived`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
}

/// `tracing.otlp`: the collector and the protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpSpec {
    /// `http(s)://host[:port][/path]`. For gRPC the collector's address; for `http/protobuf`
    /// the base URL, to which `/v1/traces` is appended unless it already ends with it.
    pub endpoint: OtlpEndpoint,
    /// `grpc` (the default) or `http/protobuf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<OtlpProtocol>,
}

/// `tracing.sampling`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamplingSpec {
    /// The share of traces *starting* in the mesh that are recorded, 0.0–1.0 (default 1.0). A
    /// request that arrives with a sampled parent is always recorded, one with an unsampled
    /// parent never (parent-based sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<SamplingRatio>,
}

/// The OTLP wire protocol, named as `OTEL_EXPORTER_OTLP_PROTOCOL` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP/gRPC (port 4317 by convention).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318 by convention, path `/v1/traces`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol's name in resources, flags and `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::Grpc => "grpc",
            OtlpProtocol::HttpProtobuf => "http/protobuf",
        }
    }

    /// The OpenTelemetry SDKs' endpoint when none is configured.
    pub fn default_endpoint(self) -> OtlpEndpoint {
        OtlpEndpoint(
            match self {
                OtlpProtocol::Grpc => "http://localhost:4317",
                OtlpProtocol::HttpProtobuf => "http://localhost:4318",
            }
            .to_owned(),
        )
    }
}

impl fmt::Display for OtlpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An OTLP protocol other than `grpc` and `http/protobuf`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OTLP protocol {0:?} is not supported: use \"grpc\" or \"http/protobuf\"")]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for OtlpProtocol {
    type Err = UnknownProtocol;
    fn from_str(s: &str) -> Result<Self, UnknownProtocol> {
        match s {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(UnknownProtocol(other.to_owned())),
        }
    }
}

/// The trace headers a sidecar writes on the requests it forwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Propagation {
    /// The format the request came in (W3C for a trace that starts in the mesh).
    #[default]
    AsReceived,
    /// W3C `traceparent`/`tracestate` only.
    W3c,
    /// B3 multi-header (`X-B3-*`) only.
    B3,
    /// W3C and B3 both.
    Both,
}

impl Propagation {
    /// The value's name in a resource.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::AsReceived => "asReceived",
            Propagation::W3c => "w3c",
            Propagation::B3 => "b3",
            Propagation::Both => "both",
        }
    }
}

/// `sampling.ratio`: a number from 0.0 (no new trace recorded) to 1.0 (every one).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct SamplingRatio(f64);

impl SamplingRatio {
    /// Every new trace recorded: the default.
    pub const ALWAYS: SamplingRatio = SamplingRatio(1.0);

    /// The ratio, `0.0..=1.0`.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl Default for SamplingRatio {
    fn default() -> Self {
        Self::ALWAYS
    }
}

/// A sampling ratio outside 0.0–1.0 (or not a number).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0} is out of range: a sampling ratio must be between 0.0 and 1.0")]
pub struct RatioOutOfRange(pub f64);

impl TryFrom<f64> for SamplingRatio {
    type Error = RatioOutOfRange;
    fn try_from(ratio: f64) -> Result<Self, RatioOutOfRange> {
        // NaN is in no range, so it is refused too.
        match (0.0..=1.0).contains(&ratio) {
            true => Ok(SamplingRatio(ratio)),
            false => Err(RatioOutOfRange(ratio)),
        }
    }
}

impl From<SamplingRatio> for f64 {
    fn from(r: SamplingRatio) -> f64 {
        r.0
    }
}

impl fmt::Display for SamplingRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why text is no sampling ratio.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RatioError {
    /// Not a number.
    #[error("{0:?} is not a number: a sampling ratio is written like 0.1")]
    NotANumber(String),
    /// Outside 0.0–1.0.
    #[error(transparent)]
    OutOfRange(#[from] RatioOutOfRange),
}

impl std::str::FromStr for SamplingRatio {
    type Err = RatioError;
    fn from_str(s: &str) -> Result<Self, RatioError> {
        let ratio: f64 = s
            .trim()
            .parse()
            .map_err(|_| RatioError::NotANumber(s.to_owned()))?;
        Ok(SamplingRatio::try_from(ratio)?)
    }
}

impl JsonSchema for SamplingRatio {
    fn schema_name() -> Cow<'static, str> {
        "SamplingRatio".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0, "maximum": 1})
    }
}

/// An OTLP endpoint: `http://`, a host, an optional port and path; no credentials, query or
/// fragment. Built only through [`std::str::FromStr`]. `https://` is refused: the sidecar's
/// exporter is built without TLS (docs/telemetry.md says to point it at a collector on the
/// host or its network), and accepting the URL would only move the failure to run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OtlpEndpoint(String);

/// The longest endpoint accepted.
pub const MAX_ENDPOINT_LEN: usize = 2048;

/// What the JSON schema states of [`OtlpEndpoint`] (the port's range only the loader checks).
pub const OTLP_ENDPOINT_PATTERN: &str = "^http://[^\\s/?#@]+(/[^\\s?#]*)?$";

/// Why text is no OTLP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No `http://` in front (`localhost:4317`, `grpc://…`, `unix:…`).
    #[error("OTLP endpoint {0:?} must start with http:// (e.g. http://127.0.0.1:4317)")]
    Scheme(String),
    /// `https://`: the exporter has no TLS.
    #[error(
        "OTLP endpoint {0:?}: https is not supported (the sidecar exports without TLS); use a collector on this host or its network over http://"
    )]
    Tls(String),
    /// Not a URL.
    #[error("OTLP endpoint {text:?} is not a URL: {reason}")]
    Malformed {
        /// The text as written.
        text: String,
        /// What the URI parser said.
        reason: String,
    },
    /// `user:password@` in the URL: it would be printed and logged as configuration.
    #[error("OTLP endpoint {0:?} must not carry credentials (user@)")]
    Credentials(String),
    /// `?query` or `#fragment`: OTLP has no use for them.
    #[error("OTLP endpoint {0:?} must not have a query or fragment")]
    Query(String),
    /// Port 0 or above 65535.
    #[error("OTLP endpoint {0:?} has no valid port: a port is 1-65535")]
    Port(String),
    /// Longer than [`MAX_ENDPOINT_LEN`].
    #[error("OTLP endpoint is {0} bytes long; at most 2048 are accepted")]
    TooLong(usize),
}

impl OtlpEndpoint {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for OtlpEndpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if s.len() > MAX_ENDPOINT_LEN {
            return Err(EndpointError::TooLong(s.len()));
        }
        if s.starts_with("https://") {
            return Err(EndpointError::Tls(s.to_owned()));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| EndpointError::Scheme(s.to_owned()))?;
        if s.contains(['?', '#']) {
            return Err(EndpointError::Query(s.to_owned()));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(EndpointError::Credentials(s.to_owned()));
        }
        let uri: http::Uri =
            s.parse()
                .map_err(|e: http::uri::InvalidUri| EndpointError::Malformed {
                    text: s.to_owned(),
                    reason: e.to_string(),
                })?;
        let host = uri.host().unwrap_or_default();
        if host.is_empty() || host == "[]" {
            return Err(EndpointError::Malformed {
                text: s.to_owned(),
                reason: "no host".to_owned(),
            });
        }
        // `http::Uri` accepts any digits as a port; only 1-65535 can be connected to.
        if let Some(port) = authority.rsplit_once(':').map(|(_, p)| p)
            && !port.ends_with(']')
            && !port.parse::<u16>().is_ok_and(|p| p > 0)
        {
            return Err(EndpointError::Port(s.to_owned()));
        }
        Ok(OtlpEndpoint(s.to_owned()))
    }
}

impl TryFrom<String> for OtlpEndpoint {
    type Error = EndpointError;
    fn try_from(s: String) -> Result<Self, EndpointError> {
        s.parse()
    }
}

impl From<OtlpEndpoint> for String {
    fn from(e: OtlpEndpoint) -> String {
        e.0
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for OtlpEndpoint {
    fn schema_name() -> Cow<'static, str> {
        "OtlpEndpoint".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "maxLength": MAX_ENDPOINT_LEN, "pattern": OTLP_ENDPOINT_PATTERN})
    }
}

#[cfg(test)]
mod tests;
