//! Flags and OpenTelemetry variables to `proxy::TracingConfig`: when tracing is on, which
//! source wins for each setting, the kill switch, and the flags `up` derives from a `Mesh`
//! read back by `meshwork proxy`'s own parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Parser;

use super::*;

/// `meshwork proxy`'s tracing flags on their own.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    trace: TraceArgs,
}

fn flags(argv: &[&str]) -> TraceArgs {
    Cli::try_parse_from(std::iter::once("proxy").chain(argv.iter().copied()))
        .unwrap()
        .trace
}

fn flag_error(argv: &[&str]) -> String {
    match Cli::try_parse_from(std::iter::once("proxy").chain(argv.iter().copied())) {
        Ok(_) => panic!("{argv:?} parsed"),
        Err(e) => e.to_string(),
    }
}

/// `config` for workload `billing` with exactly the variables `vars` set.
fn with_env(
    args: &TraceArgs,
    vars: &[(&str, &str)],
) -> anyhow::Result<Option<proxy::TracingConfig>> {
    config(args, "billing", |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
}

/// `export` as the traces URL itself (from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
fn signal(mut export: proxy::OtlpExport) -> proxy::OtlpExport {
    export.signal_url = true;
    export
}

fn on(args: &TraceArgs, vars: &[(&str, &str)]) -> proxy::TracingConfig {
    with_env(args, vars).unwrap().expect("tracing on")
}

fn export(endpoint: &str, protocol: proxy::OtlpProtocol) -> proxy::OtlpExport {
    proxy::OtlpExport::new(endpoint, protocol, "billing")
}

use proxy::OtlpProtocol::{Grpc, HttpProtobuf};

#[test]
fn off_unless_asked_for() {
    let none = TraceArgs::default();
    assert_eq!(with_env(&none, &[]).unwrap(), None);
    // Settings without anything that turns tracing on change nothing.
    let settings = flags(&["--trace-sampling", "0.5", "--otlp-protocol", "grpc"]);
    let vars = [
        (PROTOCOL, "grpc"),
        (SAMPLER, "parentbased_traceidratio"),
        (SAMPLER_ARG, "0.5"),
    ];
    assert_eq!(with_env(&settings, &vars).unwrap(), None);
    // An endpoint variable set to the empty string is unset (OpenTelemetry's rule).
    assert_eq!(
        with_env(&none, &[(ENDPOINT, ""), (TRACES_ENDPOINT, " ")]).unwrap(),
        None
    );
}

#[test]
fn the_tracing_flag_alone_uses_the_opentelemetry_defaults() {
    let c = on(&flags(&["--tracing"]), &[]);
    assert_eq!(
        c,
        proxy::TracingConfig {
            sampler: proxy::trace_context::Sampler::always(),
            propagation: proxy::Propagation::AsReceived,
            otlp: export("http://localhost:4317", Grpc),
        }
    );
    let c = on(
        &flags(&["--tracing", "--otlp-protocol", "http/protobuf"]),
        &[],
    );
    assert_eq!(c.otlp, export("http://localhost:4318", HttpProtobuf));
    // The default endpoint follows the protocol whichever source gave it.
    let c = on(&flags(&["--tracing"]), &[(PROTOCOL, "http/protobuf")]);
    assert_eq!(c.otlp, export("http://localhost:4318", HttpProtobuf));
}

#[test]
fn an_endpoint_in_the_environment_turns_tracing_on() {
    let none = TraceArgs::default();
    let c = on(
        &none,
        &[
            (ENDPOINT, "http://127.0.0.1:4318"),
            (PROTOCOL, "http/protobuf"),
        ],
    );
    // The base goes through unchanged: the exporter appends /v1/traces for HTTP.
    assert_eq!(c.otlp, export("http://127.0.0.1:4318", HttpProtobuf));
    assert_eq!(c.otlp.service_name, "billing");
    // The signal-specific variables win over the general ones.
    let c = on(
        &none,
        &[
            (ENDPOINT, "http://127.0.0.1:4318"),
            (TRACES_ENDPOINT, "http://127.0.0.1:14317"),
            (PROTOCOL, "http/protobuf"),
            (TRACES_PROTOCOL, "grpc"),
        ],
    );
    // The traces variable is the traces URL itself: nothing is appended to it.
    assert_eq!(c.otlp, signal(export("http://127.0.0.1:14317", Grpc)));
    assert!(!on(&none, &[(ENDPOINT, "http://c:4318")]).otlp.signal_url);
}

#[test]
fn flags_win_over_the_environment() {
    let vars = [
        (TRACES_ENDPOINT, "http://127.0.0.1:14317"),
        (PROTOCOL, "grpc"),
        (SAMPLER, "parentbased_traceidratio"),
        (SAMPLER_ARG, "0.25"),
    ];
    let args = flags(&[
        "--otlp-endpoint",
        "http://otel.example/otlp",
        "--otlp-protocol",
        "http/protobuf",
        "--trace-sampling",
        "0.5",
        "--trace-propagation",
        "b3",
    ]);
    let c = on(&args, &vars);
    assert_eq!(c.otlp, export("http://otel.example/otlp", HttpProtobuf));
    assert_eq!(c.sampler.ratio(), 0.5);
    assert_eq!(c.propagation, proxy::Propagation::B3);
    // Without the flags, the environment's values.
    let c = on(&TraceArgs::default(), &vars);
    assert_eq!(c.otlp, signal(export("http://127.0.0.1:14317", Grpc)));
    assert_eq!(c.sampler.ratio(), 0.25);
    assert_eq!(c.propagation, proxy::Propagation::AsReceived);
}

#[test]
fn otel_sdk_disabled_turns_tracing_off_whatever_else_says_on() {
    let all_on = flags(&["--tracing", "--otlp-endpoint", "http://127.0.0.1:4317"]);
    for yes in ["true", "TRUE", " True "] {
        let vars = [(SDK_DISABLED, yes), (ENDPOINT, "http://127.0.0.1:4317")];
        assert_eq!(with_env(&all_on, &vars).unwrap(), None, "{yes:?}");
    }
    // Anything but true is false (the specification's boolean rule).
    for no in ["false", "1", "yes", ""] {
        assert!(
            with_env(&all_on, &[(SDK_DISABLED, no)]).unwrap().is_some(),
            "{no:?}"
        );
    }
}

#[test]
fn samplers_from_the_environment_are_read_as_parent_based() {
    let args = flags(&["--tracing"]);
    let ratio = |vars: &[(&str, &str)]| on(&args, vars).sampler.ratio();
    assert_eq!(
        ratio(&[(SAMPLER, "parentbased_traceidratio"), (SAMPLER_ARG, "0.1")]),
        0.1
    );
    assert_eq!(ratio(&[(SAMPLER, "traceidratio"), (SAMPLER_ARG, "0")]), 0.0);
    assert_eq!(ratio(&[(SAMPLER, "parentbased_always_off")]), 0.0);
    assert_eq!(ratio(&[(SAMPLER, "always_on")]), 1.0);
    // A ratio sampler without its argument is 1.0 (the specification's default).
    assert_eq!(ratio(&[(SAMPLER, "parentbased_traceidratio")]), 1.0);
    // Bad values are warned about and fall back to the default, never fail the sidecar.
    assert_eq!(
        ratio(&[(SAMPLER, "traceidratio"), (SAMPLER_ARG, "1.5")]),
        1.0
    );
    assert_eq!(
        ratio(&[(SAMPLER, "traceidratio"), (SAMPLER_ARG, "half")]),
        1.0
    );
    assert_eq!(ratio(&[(SAMPLER, "jaeger_remote")]), 1.0);
    // The argument alone selects nothing: the default sampler takes none.
    assert_eq!(ratio(&[(SAMPLER_ARG, "0.1")]), 1.0);
}

#[test]
fn a_bad_protocol_or_endpoint_variable_is_an_error_naming_it() {
    let args = flags(&["--tracing"]);
    let err = format!(
        "{:#}",
        with_env(&args, &[(PROTOCOL, "http/json")]).unwrap_err()
    );
    assert!(
        err.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: set --otlp-protocol"),
        "{err}"
    );
    assert!(err.contains("\"http/json\" is not supported"), "{err}");
    // A flag makes the variable irrelevant.
    let grpc = flags(&["--tracing", "--otlp-protocol", "grpc"]);
    assert!(with_env(&grpc, &[(PROTOCOL, "http/json")]).is_ok());

    let err = format!(
        "{:#}",
        with_env(&args, &[(TRACES_ENDPOINT, "localhost:4317")]).unwrap_err()
    );
    assert!(
        err.starts_with("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: OTLP endpoint \"localhost:4317\" must start with http://"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_refused_by_the_parser() {
    for (argv, says) in [
        (["--trace-sampling", "1.5"], "1.5 is out of range"),
        (["--trace-sampling", "-0.1"], "-0.1 is out of range"),
        (
            ["--otlp-protocol", "http/json"],
            "\"http/json\" is not supported",
        ),
        (
            ["--otlp-endpoint", "localhost:4317"],
            "must start with http://",
        ),
        (["--otlp-endpoint", "ftp://x"], "must start with http://"),
        (
            ["--otlp-endpoint", "https://otel.example"],
            "https is not supported",
        ),
        (
            ["--trace-propagation", "asReceived"],
            "possible values: as-received, w3c, b3, both",
        ),
    ] {
        let err = flag_error(&argv);
        assert!(err.contains(says), "{argv:?}: {err}");
    }
}

/// A `Mesh`'s `spec.tracing`, as YAML, through `up`'s flags and `proxy`'s parser.
fn through_up(tracing: &str, vars: &[(&str, &str)]) -> Option<proxy::TracingConfig> {
    let spec: TracingSpec = serde_saphyr::from_str(tracing).unwrap();
    let argv = proxy_args(&spec);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    with_env(&flags(&argv), vars).unwrap()
}

#[test]
fn the_mesh_reaches_the_sidecar_through_ups_flags() {
    let c = through_up(
        "otlp: {endpoint: 'http://127.0.0.1:4318/otlp', protocol: http/protobuf}\nsampling: {ratio: 0.1}\npropagation: asReceived\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.otlp, export("http://127.0.0.1:4318/otlp", HttpProtobuf));
    assert_eq!(c.sampler.ratio(), 0.1);
    assert_eq!(c.propagation, proxy::Propagation::AsReceived);
    for (yaml, want) in [
        ("propagation: w3c", proxy::Propagation::W3c),
        ("propagation: b3", proxy::Propagation::B3),
        ("propagation: both", proxy::Propagation::Both),
    ] {
        assert_eq!(through_up(yaml, &[]).unwrap().propagation, want, "{yaml}");
    }
    // `tracing: {}`: on, everything else from the environment or the defaults.
    assert_eq!(
        through_up("{}", &[]).unwrap().otlp,
        export("http://localhost:4317", Grpc)
    );
    let vars = [
        (ENDPOINT, "http://127.0.0.1:4318"),
        (PROTOCOL, "http/protobuf"),
        (SAMPLER, "always_off"),
    ];
    let c = through_up("{}", &vars).unwrap();
    assert_eq!(c.otlp, export("http://127.0.0.1:4318", HttpProtobuf));
    assert_eq!(c.sampler.ratio(), 0.0);
}

#[test]
fn the_mesh_wins_over_the_environment_and_keeps_endpoint_and_protocol_together() {
    let vars = [
        (TRACES_ENDPOINT, "http://127.0.0.1:14318"),
        (TRACES_PROTOCOL, "http/protobuf"),
        (SAMPLER, "parentbased_traceidratio"),
        (SAMPLER_ARG, "0.5"),
    ];
    // The Mesh's endpoint without a protocol is gRPC's, not the environment's HTTP.
    let c = through_up(
        "otlp: {endpoint: 'http://127.0.0.1:4317'}\nsampling: {ratio: 0.2}",
        &vars,
    )
    .unwrap();
    assert_eq!(c.otlp, export("http://127.0.0.1:4317", Grpc));
    assert_eq!(c.sampler.ratio(), 0.2);
    // What the Mesh leaves out still comes from the environment.
    let c = through_up("propagation: both", &vars).unwrap();
    assert_eq!(
        c.otlp,
        signal(export("http://127.0.0.1:14318", HttpProtobuf))
    );
    assert_eq!(c.sampler.ratio(), 0.5);
    // The kill switch wins over the Mesh too.
    assert_eq!(
        through_up(
            "otlp: {endpoint: 'http://127.0.0.1:4317'}",
            &[(SDK_DISABLED, "true")]
        ),
        None
    );
}

#[test]
fn the_startup_line_says_where_spans_go() {
    let c = on(&flags(&["--tracing", "--trace-sampling", "0.1"]), &[]);
    assert_eq!(
        describe(Some(&c)),
        "tracing on: OTLP grpc to http://localhost:4317, sampling 0.1 of new traces, propagation AsReceived"
    );
    assert_eq!(describe(None), "tracing off");
}
