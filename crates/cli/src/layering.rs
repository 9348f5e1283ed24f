//! The module layering of the `meshwork` binary, checked by a test (see `testkit::layering`
//! for what the check sees and what it does not).
//!
//! Bottom to top: `state`, `logging`, `parent`, `columns` (no crate imports) → `sidecar_admin`
//! (the sidecars' admin endpoints, over `state`) → `broker_cmd`, the other `*_cmd` subcommands,
//! `pods` (pod mode's namespaces and rules, over `state`) →
//! `demo`, `exec`, `policy_cmd`, `observe` → `claims` (the OSB platform side:
//! ids, delivery, `claims delete`) → `dashboard` (reads the state directory, the sidecars
//! through `sidecar_admin`, the control plane's policies, `observe`'s quantiles) →
//! `kubernetes` (controller mode: the
//! cluster as the source of resources, claims as Secrets) → `up` (which drives all of them). A subcommand never imports `up`: what `up` shares with `exec`, `claims` or `policy` lives in `state`.

/// Each top-level module and the modules it may use.
pub const LAYERS: &[testkit::layering::Layer<'static>] = &[
    ("state", &[]),
    ("logging", &[]),
    ("parent", &[]),
    ("layering", &[]),
    ("columns", &[]),
    ("sidecar_admin", &["state"]),
    ("pods", &["state"]),
    ("agent_cmd", &["logging", "parent"]),
    ("broker_cmd", &["logging", "parent"]),
    ("ca_cmd", &[]),
    ("check_cmd", &[]),
    ("crds_cmd", &[]),
    ("entry_cmd", &[]),
    ("fanout_cmd", &[]),
    ("token_cmd", &[]),
    ("validate_cmd", &[]),
    ("pod_ruleset_cmd", &[]),
    ("demo", &["parent"]),
    ("exec", &["state", "pods"]),
    ("policy_cmd", &["state", "sidecar_admin", "columns"]),
    ("observe", &["sidecar_admin", "columns"]),
    ("claims", &["state", "broker_cmd"]),
    (
        "dashboard",
        &[
            "state",
            "logging",
            "parent",
            "claims",
            "policy_cmd",
            "sidecar_admin",
            "observe",
        ],
    ),
    (
        "kubernetes",
        &["state", "claims", "broker_cmd", "logging", "parent"],
    ),
    (
        "up",
        &[
            "state",
            "claims",
            "broker_cmd",
            "logging",
            "parent",
            "kubernetes",
            "pods",
        ],
    ),
];

#[test]
fn modules_depend_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    testkit::layering::assert_layers(&src, LAYERS);
}
