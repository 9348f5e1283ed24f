//! `meshwork validate`: a configuration that would break a process is refused with the file,
//! line and field, before anything starts; a valid directory is summarised kind by kind.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;

use crate::harness::{example, meshwork};

/// The example, copied, with `from` replaced by `to` in every file.
fn example_with(from: &str, to: &str) -> tempfile::TempDir {
    example_with_all(&[(from, to)])
}

/// The example, copied, with each `(from, to)` replaced in turn in every file.
fn example_with_all(replacements: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example("store-billing")).unwrap() {
        let path = entry.unwrap().path();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in replacements {
            text = text.replace(from, to);
        }
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    dir
}

fn validate(dir: &Path) -> (Option<i32>, String, String) {
    let out = meshwork().arg("validate").arg(dir).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const HUGE_TTL_ERROR: &str = "mesh.yaml:9:12: Mesh/store-billing field `spec.svidTtl`: duration \"99999999999999h\" is out of range: must be between 1s and 30d";

#[test]
fn an_svid_ttl_out_of_range_is_refused_by_validate_and_up_before_anything_starts() {
    let dir = example_with("svidTtl: 1h", "svidTtl: 99999999999999h");
    let (code, stdout, stderr) = validate(dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains(HUGE_TTL_ERROR), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // `up` reads the same way: it exits at once with the same error, and never starts a
    // control plane that would panic on the value.
    let state = tempfile::tempdir().unwrap();
    let out = meshwork()
        .arg("up")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(HUGE_TTL_ERROR), "{stderr}");
    assert!(!state.path().join("control.sock").exists());
}

#[test]
fn the_example_validates_and_every_kind_is_summarised() {
    let (code, stdout, stderr) = validate(&example("store-billing"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for line in [
        "mesh store-billing (trust domain meshwork.local, SVID lifetime 1h)",
        "workload billing      spiffe://meshwork.local/ns/default/sa/billing",
        "service  billing      -> billing",
        "authz    default/billing-charges -> billing (ALLOW, 2 rules)",
        "authz    default/store-checkout-audit -> store (DENY, 1 rule, audit only)",
        "egress   default/billing-to-stripe 1 destination",
        "class    postgresql   postgresql [small: 20 connections, 1024 MB storage; medium: 100 connections, 10240 MB storage]",
        "env      dev          1 match rule",
        "svcpol   store-billing dev-postgresql: postgresql in dev -> postgres-private; prod-postgresql: postgresql in prod -> postgres-prod",
        "claim    charges-db   postgresql (size small) -> billing",
        "route    HTTPRoute/billing -> billing (1 rule: timeout 3s, 2 retries)",
        "traffic  billing      connect timeout 1s, idle 1m30s, retry budget 20% + 10 per 1s, eject after 3 failures for 2s to 20s (at most 50%)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        "18 resources: 1 Mesh, 4 Workload, 3 Service, 3 AuthorizationPolicy, 1 EgressPolicy, 1 ServiceClass, 2 Environment, 1 ServicePolicy, 1 ServiceClaim, 1 HTTPRoute"
    );
}

#[test]
fn a_missing_directory_is_one_error_said_once() {
    let (code, stdout, stderr) = validate(Path::new("/nonexistent/meshwork-resources"));
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert_eq!(
        stderr,
        "meshwork: error: /nonexistent/meshwork-resources: cannot read: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_bad_cross_reference_points_at_the_referring_field() {
    let dir = example_with("bindTo: billing", "bindTo: payroll");
    let (code, _, stderr) = validate(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "claims.yaml:12:3: ServiceClaim/charges-db field `spec.bindTo`: \"payroll\" names no Workload"
        ),
        "{stderr}"
    );
}

/// The example's commented-out `tracing:` block, uncommented.
const UNCOMMENT_TRACING: [(&str, &str); 2] = [("  # tracing:", "  tracing:"), ("  #   ", "    ")];

#[test]
fn the_examples_tracing_block_validates_and_is_summarised() {
    let (_, stdout, _) = validate(&example("store-billing"));
    assert!(!stdout.contains("tracing"), "commented out: {stdout}");

    let dir = example_with_all(&UNCOMMENT_TRACING);
    let (code, stdout, stderr) = validate(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let want = "tracing  OTLP grpc to http://127.0.0.1:4317, sampling 1 of new traces, propagation asReceived";
    assert!(
        stdout.lines().any(|l| l == want),
        "missing {want:?} in:\n{stdout}"
    );

    // What the Mesh leaves out is named as the environment's.
    let dir = example_with_all(&[
        UNCOMMENT_TRACING[0],
        UNCOMMENT_TRACING[1],
        (
            "    otlp:\n      endpoint: http://127.0.0.1:4317\n      protocol: grpc\n",
            "",
        ),
        ("    sampling:\n      ratio: 1.0\n", ""),
        ("propagation: asReceived", "propagation: b3"),
    ]);
    let (code, stdout, stderr) = validate(dir.path());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let want = "tracing  OTLP to the sidecars' OTEL_EXPORTER_OTLP_* endpoint, else grpc to http://localhost:4317, sampling per OTEL_TRACES_SAMPLER, else every new trace, propagation b3";
    assert!(
        stdout.lines().any(|l| l == want),
        "missing {want:?} in:\n{stdout}"
    );
}

#[test]
fn a_bad_sampling_ratio_names_file_line_and_field() {
    let dir = example_with_all(&[
        UNCOMMENT_TRACING[0],
        UNCOMMENT_TRACING[1],
        ("ratio: 1.0", "ratio: 1.5"),
    ]);
    let (code, stdout, stderr) = validate(dir.path());
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("mesh.yaml:24:14: Mesh/store-billing field `spec.tracing.sampling.ratio`: 1.5 is out of range: a sampling ratio must be between 0.0 and 1.0"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}
