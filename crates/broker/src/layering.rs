//! The module layering of the broker, checked by a test (see `testkit::layering` for what
//! the check sees and what it does not).
//!
//! Bottom to top: `names`, `secret`, `originating` → `taxonomy` → `provider` (servers;
//! reports progress through `provider::Progress`, never into `ops`) → `store` (records hold
//! provider credentials) → `error` (one `BrokerError` over every module's error) → `ops` (the
//! operation engine) → `http` (the OSB surface) → `server` (wiring).

/// Each top-level module and the modules it may use.
pub(crate) const LAYERS: &[testkit::layering::Layer<'static>] = &[
    ("names", &[]),
    ("secret", &[]),
    ("originating", &[]),
    ("layering", &[]),
    ("taxonomy", &["originating"]),
    ("provider", &["secret", "taxonomy"]),
    ("store", &["originating", "provider", "taxonomy"]),
    ("error", &["provider", "store", "taxonomy"]),
    (
        "ops",
        &[
            "error",
            "names",
            "originating",
            "provider",
            "secret",
            "store",
            "taxonomy",
        ],
    ),
    (
        "http",
        &["error", "ops", "originating", "secret", "store", "taxonomy"],
    ),
    (
        "server",
        &[
            "error", "http", "ops", "provider", "secret", "store", "taxonomy",
        ],
    ),
];

#[test]
fn modules_depend_one_way() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    testkit::layering::assert_layers(&src, LAYERS);
}
