//! The module layering of the control crate, checked by a test (see `testkit::layering`
//! for what the check sees and what it does not).
//!
//! Bottom to top: the leaves (`replica` keys, `connection` tracking, `check`, and `agent`,
//! a client that imports nothing of the server: it can become its own crate) → `store`
//! (the storage interface and its backends) → `keys` (private keys at rest), `versions`
//! (view versions from store revisions) → `authority`, `tokens` → `error` → `issuer`
//! (identity state and issuing) → `registry` (snapshots) → `feed` → `reload`, `duties`
//! (the leader's work) → `open` (a replica's state and its publisher); beside them the
//! servers: `node_api` → `node_tls`, and `admin` → `routes`.

/// Each top-level module and the modules it may use.
pub(crate) const LAYERS: &[testkit::layering::Layer<'static>] = &[
    ("replica", &[]),
    ("connection", &[]),
    ("check", &[]),
    ("layering", &[]),
    ("store", &["replica"]),
    ("keys", &["store"]),
    ("versions", &["store"]),
    ("authority", &["keys", "store"]),
    ("tokens", &["store"]),
    ("error", &["authority", "store"]),
    (
        "issuer",
        &[
            "authority",
            "keys",
            "replica",
            "store",
            "tokens",
            "versions",
        ],
    ),
    (
        "registry",
        &["error", "issuer", "keys", "replica", "store", "versions"],
    ),
    ("feed", &["registry", "store"]),
    ("reload", &["feed", "registry"]),
    ("duties", &["feed", "registry", "store", "tokens"]),
    ("open", &["error", "issuer", "keys", "registry", "store"]),
    ("node_api", &["connection", "error", "issuer", "tokens"]),
    ("node_tls", &["connection", "error", "issuer", "node_api"]),
    ("agent", &[]),
    ("admin", &["error", "registry", "tokens"]),
    ("routes", &["admin", "connection", "error", "registry"]),
];

#[test]
fn modules_depend_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    testkit::layering::assert_layers(&src, LAYERS);
}
