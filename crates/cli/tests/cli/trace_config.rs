//! Issue 12, the configuration path: the sidecars `meshwork up` starts inherit its
//! environment, so `OTEL_EXPORTER_OTLP_*` set for `up` reach them; a `Mesh`'s
//! `spec.tracing` reaches them as flags and wins over that environment; `OTEL_SDK_DISABLED`
//! switches it all off. Each sidecar says at startup (an INFO line, shown by `up -v`) what it
//! was told. Whether spans then arrive is the tracing end-to-end test's business.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use crate::harness::Up;

const WAIT: Duration = Duration::from_secs(60);

/// A directory with a Mesh (`spec.tracing` given as `tracing`, YAML lines under `spec:`)
/// and one workload, `billing`, the demo app.
fn mesh_dir(tracing: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mesh = format!(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: traced}}\nspec:\n  trustDomain: meshwork.local\n{tracing}---\napiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {{name: billing}}\nspec:\n  command: [meshwork, demo, billing]\n"
    );
    std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
    dir
}

/// The `[billing/proxy]` line that says what tracing does, once `up` has started it.
fn sidecar_tracing_line(dir: &std::path::Path, vars: &[(&str, &str)]) -> String {
    let up = Up::spawn_with_env(dir, &["-v"], vars);
    let line = up.wait_for_line("tracing o", WAIT);
    assert!(line.starts_with("[billing/proxy]"), "{line}");
    up.wait_for_line("[up] ready", WAIT);
    line
}

#[test]
fn otel_variables_given_to_up_reach_its_sidecars() {
    let dir = mesh_dir("");
    let line = sidecar_tracing_line(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ],
    );
    assert!(
        line.ends_with("tracing on: OTLP http/protobuf to http://127.0.0.1:4318, sampling 0.25 of new traces, propagation AsReceived"),
        "{line}"
    );
}

#[test]
fn the_mesh_wins_over_ups_environment_and_otel_sdk_disabled_over_both() {
    let dir = mesh_dir(
        "  tracing:\n    otlp: {endpoint: 'http://127.0.0.1:4317'}\n    sampling: {ratio: 0.5}\n    propagation: both\n",
    );
    let env = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:14318",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ];
    let line = sidecar_tracing_line(dir.path(), &env);
    assert!(
        line.ends_with("tracing on: OTLP grpc to http://127.0.0.1:4317, sampling 0.5 of new traces, propagation Both"),
        "{line}"
    );
    let line = sidecar_tracing_line(dir.path(), &[env[0], ("OTEL_SDK_DISABLED", "true")]);
    assert!(line.ends_with("tracing off"), "{line}");
}
