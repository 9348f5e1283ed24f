//! `Mesh` `spec.tracing`: the documented shape loads, omitted fields stay unset (the cli fills
//! them from the environment), and every invalid value is refused naming file, line, resource
//! and field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::{ResourceSet, load_str};

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  trustDomain: meshwork.local\n  tracing:\n";

/// Loads a Mesh whose `spec.tracing` is `tracing` (indented for `tracing:`) as r.yaml.
fn load(tracing: &str) -> Result<TracingSpec, String> {
    let mut set = ResourceSet::default();
    load_str(Path::new("r.yaml"), &format!("{MESH}{tracing}"), &mut set)
        .and_then(|()| set.validate())
        .map_err(|e| e.to_string())?;
    Ok(set.mesh().unwrap().spec.tracing.clone().unwrap())
}

#[test]
fn the_documented_shape_loads() {
    let spec = load(
        "    otlp:\n      endpoint: http://127.0.0.1:4317\n      protocol: http/protobuf\n    sampling:\n      ratio: 0.1\n    propagation: both\n",
    )
    .unwrap();
    let otlp = spec.otlp.unwrap();
    assert_eq!(otlp.endpoint.as_str(), "http://127.0.0.1:4317");
    assert_eq!(otlp.protocol, Some(OtlpProtocol::HttpProtobuf));
    assert_eq!(
        spec.sampling.unwrap().ratio.map(SamplingRatio::get),
        Some(0.1)
    );
    assert_eq!(spec.propagation, Some(Propagation::Both));

    // Everything optional: `tracing: {}` switches tracing on with nothing else said.
    assert_eq!(load("    {}\n").unwrap(), TracingSpec::default());
    let spec = load("    otlp: {endpoint: 'http://otel.example:4318/otlp'}\n    sampling: {ratio: 1}\n    propagation: asReceived\n").unwrap();
    assert_eq!(spec.otlp.unwrap().protocol, None);
    assert_eq!(spec.sampling.unwrap().ratio, Some(SamplingRatio::ALWAYS));
    for (text, want) in [("w3c", Propagation::W3c), ("b3", Propagation::B3)] {
        let spec = load(&format!("    propagation: {text}\n")).unwrap();
        assert_eq!(
            spec.propagation.map(Propagation::as_str),
            Some(want.as_str())
        );
    }
    let spec = load("    sampling: {ratio: 0}\n").unwrap();
    assert_eq!(
        spec.sampling.unwrap().ratio.map(SamplingRatio::get),
        Some(0.0)
    );
}

#[test]
fn every_invalid_tracing_value_is_located() {
    // (row, spec.tracing, line, field, what the message says)
    let rows = [
        (
            "ratio 1.5",
            "    sampling: {ratio: 1.5}\n",
            7,
            "spec.tracing.sampling.ratio",
            "1.5 is out of range: a sampling ratio must be between 0.0 and 1.0",
        ),
        (
            "ratio -0.1",
            "    sampling:\n      ratio: -0.1\n",
            8,
            "spec.tracing.sampling.ratio",
            "-0.1 is out of range",
        ),
        // The YAML parser refuses non-finite floats before the resource's kind is known.
        (
            "ratio NaN",
            "    sampling: {ratio: .nan}\n",
            7,
            "resource field `spec.tracing.sampling.ratio`",
            "non-finite float `.nan` rejected",
        ),
        (
            "ratio a string",
            "    sampling: {ratio: ten}\n",
            7,
            "spec.tracing.sampling.ratio",
            "invalid floating point",
        ),
        (
            "protocol http/json",
            "    otlp:\n      endpoint: http://127.0.0.1:4318\n      protocol: http/json\n",
            9,
            "spec.tracing.otlp.protocol",
            "unknown variant `http/json`, expected one of grpc, http/protobuf",
        ),
        (
            "endpoint without scheme",
            "    otlp:\n      endpoint: 127.0.0.1:4317\n",
            8,
            "spec.tracing.otlp.endpoint",
            "\"127.0.0.1:4317\" must start with http://",
        ),
        (
            "endpoint grpc scheme",
            "    otlp: {endpoint: 'grpc://127.0.0.1:4317'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "must start with http://",
        ),
        (
            "endpoint unix scheme",
            "    otlp: {endpoint: 'unix:///run/otel.sock'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "must start with http://",
        ),
        (
            "endpoint no host",
            "    otlp: {endpoint: 'http://:4317'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "is not a URL",
        ),
        (
            "endpoint port 0",
            "    otlp: {endpoint: 'http://127.0.0.1:0'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "a port is 1-65535",
        ),
        (
            "endpoint port 70000",
            "    otlp: {endpoint: 'http://127.0.0.1:70000'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "a port is 1-65535",
        ),
        (
            "endpoint credentials",
            "    otlp: {endpoint: 'http://user:secret@otel.example'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "must not carry credentials",
        ),
        (
            "endpoint query",
            "    otlp: {endpoint: 'http://otel.example/v1/traces?x=1'}\n",
            7,
            "spec.tracing.otlp.endpoint",
            "must not have a query",
        ),
        (
            "otlp without endpoint",
            "    otlp: {protocol: grpc}\n",
            7,
            "spec.tracing.otlp",
            "missing field `endpoint`",
        ),
        (
            "propagation b3single",
            "    propagation: b3single\n",
            7,
            "spec.tracing.propagation",
            "unknown variant `b3single`",
        ),
        (
            "propagation as-received",
            "    propagation: as-received\n",
            7,
            "spec.tracing.propagation",
            "expected one of asReceived, w3c, b3, both",
        ),
        (
            "unknown field",
            "    sampler: {ratio: 0.5}\n",
            7,
            "spec.tracing.sampler",
            "unknown field `sampler`",
        ),
        (
            "unknown otlp field",
            "    otlp:\n      endpoint: http://127.0.0.1:4317\n      headers: {x: y}\n",
            9,
            "spec.tracing.otlp.headers",
            "unknown field `headers`",
        ),
    ];
    let mut failures = Vec::new();
    for (row, tracing, line, field, says) in rows {
        let err = match load(tracing) {
            Ok(spec) => {
                failures.push(format!("{row}: loaded as {spec:?}"));
                continue;
            }
            Err(e) => e,
        };
        let at = format!("r.yaml:{line}:");
        let field = match field.contains('`') {
            true => field.to_owned(),
            false => format!("Mesh/m field `{field}`"),
        };
        if !(err.starts_with(&at) && err.contains(&field) && err.contains(says)) {
            failures.push(format!(
                "{row}: want {at} … {field} … {says:?}\n    got {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn endpoints_take_hosts_ports_and_paths() {
    for ok in [
        "http://localhost:4317",
        "http://127.0.0.1:4318/",
        "http://otel.example",
        "http://otel.example:4318/otlp/v1/traces",
        "http://[::1]:4317",
        "http://[::1]",
    ] {
        assert_eq!(
            ok.parse::<OtlpEndpoint>().map(String::from),
            Ok(ok.to_owned())
        );
    }
    for bad in [
        "",
        "https://otel.example",
        "localhost:4317",
        "HTTP//x",
        "http://",
        "http://a b:1",
        "http://x:65536",
        "http://x:-1",
        "http://x#frag",
    ] {
        assert!(bad.parse::<OtlpEndpoint>().is_err(), "{bad:?} accepted");
    }
    let long = format!("http://x/{}", "a".repeat(MAX_ENDPOINT_LEN));
    assert!(matches!(
        long.parse::<OtlpEndpoint>(),
        Err(EndpointError::TooLong(_))
    ));
}

#[test]
fn ratios_and_protocols_parse_from_flag_text() {
    assert_eq!(
        "0.25".parse::<SamplingRatio>().map(SamplingRatio::get),
        Ok(0.25)
    );
    assert_eq!("1".parse::<SamplingRatio>(), Ok(SamplingRatio::ALWAYS));
    assert!(matches!(
        "1.01".parse::<SamplingRatio>(),
        Err(RatioError::OutOfRange(_))
    ));
    assert!(matches!(
        "half".parse::<SamplingRatio>(),
        Err(RatioError::NotANumber(_))
    ));
    assert!("NaN".parse::<SamplingRatio>().is_err());
    for p in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        assert_eq!(p.as_str().parse::<OtlpProtocol>(), Ok(p));
    }
    assert_eq!(
        "http/json".parse::<OtlpProtocol>().unwrap_err().to_string(),
        "OTLP protocol \"http/json\" is not supported: use \"grpc\" or \"http/protobuf\""
    );
    assert_eq!(
        OtlpProtocol::Grpc.default_endpoint().as_str(),
        "http://localhost:4317"
    );
    assert_eq!(
        OtlpProtocol::HttpProtobuf.default_endpoint().as_str(),
        "http://localhost:4318"
    );
}
