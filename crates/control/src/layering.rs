//! The module layering of the control crate, checked by a test (see `testkit::layering`
//! for what the check sees and what it does not).
//!
//! Bottom to top: the leaves (`replica` keys, `connection` tracking, `jwt`, `check`) →
//! `store` (the storage interface and its backends) → `authority`, `tokens` → `error` →
//! `issuer` (identity state and issuing) → `registry` (snapshots) → `feed` → `reload`;
//! beside them the servers: `node_api` → `node_tls`, and `admin` → `routes`. The agent, a
//! client, uses only `jwt` (its bundle type) and `node_tls` (the control plane's SPIFFE ID):
//! moving those two into `identity` is what splitting the agent into its own crate needs
//! (docs/design/scale-out.md §6).

/// Each top-level module and the modules it may use.
pub(crate) const LAYERS: &[testkit::layering::Layer<'static>] = &[
    ("replica", &[]),
    ("connection", &[]),
    ("jwt", &[]),
    ("check", &[]),
    ("layering", &[]),
    ("store", &["replica"]),
    ("authority", &["store"]),
    ("tokens", &["store"]),
    ("error", &["authority", "store"]),
    (
        "issuer",
        &["authority", "jwt", "replica", "store", "tokens"],
    ),
    ("registry", &["error", "issuer", "replica", "store"]),
    ("feed", &["registry"]),
    ("reload", &["feed", "registry"]),
    (
        "node_api",
        &["connection", "error", "issuer", "jwt", "tokens"],
    ),
    ("node_tls", &["connection", "error", "issuer", "node_api"]),
    ("agent", &["jwt", "node_tls"]),
    ("admin", &["error", "registry", "tokens"]),
    ("routes", &["admin", "connection", "error", "registry"]),
];

#[test]
fn modules_depend_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    testkit::layering::assert_layers(&src, LAYERS);
}
