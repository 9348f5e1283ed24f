//! Log setup for the long-running subcommands.

/// The log filter `meshwork up` hands its meshwork children ([`UP_QUIET`] by default,
/// `info` with `up -v`, `debug` with `-vv`), so that a healthy start shows `up`'s own
/// summary rather than every child's INFO lines. `RUST_LOG`, when set, wins over it.
pub const MESHWORK_LOG_ENV: &str = "MESHWORK_LOG";

/// `up`'s default filter for its children: warnings and errors, plus the INFO events a
/// person caused and wants confirmed while the mesh runs — a policy edit applied
/// (`control::feed`) and what a policy in audit mode would have decided
/// (`proxy::inbound::authorize`). The policy e2e tests wait for both lines under `up`.
pub const UP_QUIET: &str = "warn,control::feed=info,proxy::inbound::authorize=info";

/// Logs to stderr, filtered by `RUST_LOG`, else `MESHWORK_LOG`, else `info`; colours only
/// on a terminal (under `up`, stderr is a pipe into the prefixed log).
pub fn init() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env(MESHWORK_LOG_ENV))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        // Under `up`, stderr is a pipe to `up`; when `up` is killed, reporting the failed
        // write would panic (eprintln! on a broken pipe) and skip the child's clean shutdown
        // (the broker stopping its PostgreSQL cluster). Lost log lines are the lesser harm.
        .log_internal_errors(false)
        .try_init();
}
