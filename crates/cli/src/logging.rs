//! Log setup for the long-running subcommands.

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on a
/// terminal (under `up`, stderr is a pipe into the prefixed log).
pub fn init() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
