//! Children of `meshwork up` exit when `up` dies, even by `kill -9`.
//!
//! `up` puts its pid in `MESHWORK_PARENT_PID`; meshwork child processes poll
//! their parent pid and shut down once it changes (the parent is gone and they
//! were re-parented). This avoids `PR_SET_PDEATHSIG`, which needs `unsafe`
//! `pre_exec`, and the workspace forbids unsafe code.

use std::time::Duration;

/// Env var naming the supervising `meshwork up` process.
pub const PARENT_PID_ENV: &str = "MESHWORK_PARENT_PID";

/// The supervising parent named by [`PARENT_PID_ENV`], if any.
fn supervisor() -> Option<u32> {
    std::env::var(PARENT_PID_ENV).ok()?.parse().ok()
}

/// Whether this process has a supervising parent that is no longer its parent (it died,
/// and this process was re-parented).
pub fn is_gone() -> bool {
    supervisor().is_some_and(|want| std::os::unix::process::parent_id() != want)
}

/// Resolves when the supervising parent (if any) has gone; never otherwise.
pub async fn gone() {
    if supervisor().is_none() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        if is_gone() {
            return;
        }
    }
}

/// Resolves on SIGINT, SIGTERM, or when the supervising parent is gone.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = gone() => tracing::warn!("supervising meshwork up is gone; shutting down"),
    }
}
