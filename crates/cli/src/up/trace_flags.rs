//! `meshwork proxy`'s tracing flags and the OpenTelemetry SDK environment variables, turned
//! into the sidecar's `proxy::TracingConfig`; and the flags `meshwork up` gives each sidecar
//! for the `Mesh`'s `spec.tracing`.
//!
//! Each setting is taken from the first of: the flag (which `up` sets from the `Mesh`), the
//! environment variable, the default. Tracing is on when `--tracing` or `--otlp-endpoint` is
//! given (`up` gives `--tracing` for any `spec.tracing`) or an endpoint variable is set, and
//! off, whatever else is said, under `OTEL_SDK_DISABLED=true`. docs/telemetry.md, "Tracing".

use anyhow::Context;
use api::mesh::tracing::{OtlpEndpoint, OtlpProtocol, Propagation, SamplingRatio, TracingSpec};

/// Signal-specific endpoint, used as given.
const TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// Base endpoint of every signal (for HTTP the exporter appends `/v1/traces`).
const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
const PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const SAMPLER: &str = "OTEL_TRACES_SAMPLER";
const SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
const SDK_DISABLED: &str = "OTEL_SDK_DISABLED";

/// The tracing flags of `meshwork proxy`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
#[command(next_help_heading = "Tracing")]
pub struct TraceArgs {
    /// Record spans and export them over OTLP, to the endpoint of --otlp-endpoint, else
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT, else
    /// http://localhost:4317 (grpc) or :4318 (http/protobuf). Also on when an endpoint is
    /// given by flag or variable; always off under OTEL_SDK_DISABLED=true.
    #[arg(long)]
    pub tracing: bool,
    /// The OTLP collector, `http(s)://host:port[/path]`; for http/protobuf the base URL
    /// (`/v1/traces` is appended unless it ends with it).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<OtlpEndpoint>,
    /// `grpc` or `http/protobuf` [default: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
    /// OTEL_EXPORTER_OTLP_PROTOCOL, else grpc].
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// The share of new traces (no sampled or unsampled parent) that are recorded, 0.0-1.0
    /// [default: from OTEL_TRACES_SAMPLER(_ARG), else 1.0]. A request with a sampled parent is
    /// always recorded.
    #[arg(long, value_name = "RATIO", allow_negative_numbers = true)]
    pub trace_sampling: Option<SamplingRatio>,
    /// The trace headers written on forwarded requests [default: as-received].
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub trace_propagation: Option<PropagationFlag>,
}

/// `--trace-propagation`'s values (the resource's `asReceived` is `as-received` here).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropagationFlag {
    /// The format the request came in (W3C for a trace started here).
    AsReceived,
    /// W3C traceparent/tracestate.
    W3c,
    /// B3 multi-header (X-B3-*).
    B3,
    /// W3C and B3.
    Both,
}

impl From<Propagation> for PropagationFlag {
    fn from(p: Propagation) -> Self {
        match p {
            Propagation::AsReceived => PropagationFlag::AsReceived,
            Propagation::W3c => PropagationFlag::W3c,
            Propagation::B3 => PropagationFlag::B3,
            Propagation::Both => PropagationFlag::Both,
        }
    }
}

impl PropagationFlag {
    fn proxy(self) -> proxy::Propagation {
        match self {
            PropagationFlag::AsReceived => proxy::Propagation::AsReceived,
            PropagationFlag::W3c => proxy::Propagation::W3c,
            PropagationFlag::B3 => proxy::Propagation::B3,
            PropagationFlag::Both => proxy::Propagation::Both,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            PropagationFlag::AsReceived => "as-received",
            PropagationFlag::W3c => "w3c",
            PropagationFlag::B3 => "b3",
            PropagationFlag::Both => "both",
        }
    }
}

/// What the environment says, read once: a variable set to the empty string counts as
/// unset, as the OpenTelemetry specification asks.
struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    /// The first of `names` that is set, with its name.
    fn first(&self, names: [&'static str; 2]) -> Option<(&'static str, String)> {
        names
            .into_iter()
            .find_map(|n| self.get(n).map(|v| (n, v.trim().to_owned())))
    }
}

/// The sidecar's tracing settings for `workload` (its `service.name`), from `args` and the
/// environment `env` (`std::env::var` in the binary, a table in tests); `None` is off.
pub fn config(
    args: &TraceArgs,
    workload: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<proxy::TracingConfig>> {
    let env = Env(env);
    if env
        .get(SDK_DISABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let env_endpoint = env.first([TRACES_ENDPOINT, ENDPOINT]);
    if !(args.tracing || args.otlp_endpoint.is_some() || env_endpoint.is_some()) {
        return Ok(None);
    }
    let protocol = match (args.otlp_protocol, env.first([TRACES_PROTOCOL, PROTOCOL])) {
        (Some(p), _) => p,
        (None, Some((name, text))) => text.parse().with_context(|| {
            format!("{name}: set --otlp-protocol or the Mesh's spec.tracing.otlp to override it")
        })?,
        (None, None) => OtlpProtocol::default(),
    };
    // OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the traces URL itself; the others are base URLs.
    let (endpoint, signal_url) = match (&args.otlp_endpoint, env_endpoint) {
        (Some(e), _) => (e.clone(), false),
        (None, Some((name, text))) => (
            text.parse().with_context(|| name.to_owned())?,
            name == TRACES_ENDPOINT,
        ),
        (None, None) => (protocol.default_endpoint(), false),
    };
    let ratio = args
        .trace_sampling
        .unwrap_or_else(|| env_sampling(&env).unwrap_or_default());
    let sampler = proxy::trace_context::Sampler::new(ratio.get())
        .context("the sampling ratio (checked to be 0.0-1.0 when parsed)")?;
    let propagation = args
        .trace_propagation
        .unwrap_or(PropagationFlag::AsReceived)
        .proxy();
    let mut otlp = proxy::OtlpExport::new(endpoint.as_str(), otlp_protocol(protocol), workload);
    otlp.signal_url = signal_url;
    Ok(Some(proxy::TracingConfig {
        sampler,
        propagation,
        otlp,
    }))
}

fn otlp_protocol(p: OtlpProtocol) -> proxy::OtlpProtocol {
    match p {
        OtlpProtocol::Grpc => proxy::OtlpProtocol::Grpc,
        OtlpProtocol::HttpProtobuf => proxy::OtlpProtocol::HttpProtobuf,
    }
}

/// The ratio `OTEL_TRACES_SAMPLER` (and its `_ARG`) give, if any. meshwork's sampler is
/// always parent-based, so `always_on`/`traceidratio` read as their `parentbased_` forms;
/// a sampler or ratio it cannot follow is a warning and the default, as the specification
/// says of bad values.
fn env_sampling<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Option<SamplingRatio> {
    let sampler = env.get(SAMPLER)?;
    let name = sampler.trim().to_ascii_lowercase();
    match name.strip_prefix("parentbased_").unwrap_or(&name) {
        "always_on" => Some(SamplingRatio::ALWAYS),
        "always_off" => SamplingRatio::try_from(0.0).ok(),
        "traceidratio" => {
            let arg = env.get(SAMPLER_ARG)?;
            arg.parse::<SamplingRatio>()
                .inspect_err(|e| tracing::warn!("{SAMPLER_ARG} ignored: {e}"))
                .ok()
        }
        _ => {
            tracing::warn!(
                "{SAMPLER}={sampler} ignored: meshwork's sampler is parent-based with a ratio \
                 (parentbased_always_on, parentbased_always_off, parentbased_traceidratio)"
            );
            None
        }
    }
}

/// The flags `meshwork up` gives a sidecar for the `Mesh`'s `spec.tracing`: `--tracing`,
/// then each setting the `Mesh` makes (an `otlp` block with its protocol, defaulted to grpc,
/// so that a `Mesh`'s endpoint is never read with the environment's protocol).
pub fn proxy_args(spec: &TracingSpec) -> Vec<String> {
    let mut args = vec!["--tracing".to_owned()];
    if let Some(otlp) = &spec.otlp {
        let protocol = otlp.protocol.unwrap_or_default();
        args.extend(["--otlp-endpoint".to_owned(), otlp.endpoint.to_string()]);
        args.extend(["--otlp-protocol".to_owned(), protocol.to_string()]);
    }
    if let Some(ratio) = spec.sampling.as_ref().and_then(|s| s.ratio) {
        args.extend(["--trace-sampling".to_owned(), ratio.to_string()]);
    }
    if let Some(p) = spec.propagation {
        let flag = PropagationFlag::from(p).as_str();
        args.extend(["--trace-propagation".to_owned(), flag.to_owned()]);
    }
    args
}

/// What the sidecars `up` starts do about tracing: the flags `up` gives them for the Mesh's
/// `spec` read back by their own parser, with `up`'s environment (which they inherit).
pub fn for_up(spec: Option<&TracingSpec>) -> anyhow::Result<Option<proxy::TracingConfig>> {
    /// `meshwork proxy`'s tracing flags on their own.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        trace: TraceArgs,
    }
    let argv = spec.map(proxy_args).unwrap_or_default();
    let flags =
        <Flags as clap::Parser>::try_parse_from(std::iter::once("proxy".to_owned()).chain(argv))
            .context("the tracing flags up derives from the Mesh")?;
    config(&flags.trace, "up", |name| std::env::var(name).ok())
}

/// One log line saying what tracing does (or why it is off), for the sidecar's startup.
pub fn describe(config: Option<&proxy::TracingConfig>) -> String {
    match config {
        Some(c) => format!(
            "tracing on: OTLP {} to {}, sampling {} of new traces, propagation {:?}",
            c.otlp.protocol,
            c.otlp.endpoint,
            c.sampler.ratio(),
            c.propagation
        ),
        None => "tracing off".to_owned(),
    }
}

#[cfg(test)]
mod tests;
