//! [`Progress`]: the notes a provider makes at named steps of its work ("database created").
//!
//! Providers only say which step they reached; where the note goes (an operation's
//! `last_operation.description`, a test's step gate) is the operation engine's business,
//! behind [`StepSink`]. That keeps this module, and every provider, free of `ops`.
//!
//! Must not import: `ops`, `store`, `http`, `server` (they sit above `provider`).

use std::future::Future;
use std::pin::Pin;

/// Where [`Progress`] notes go: implemented by the operation engine (`ops`).
pub(crate) trait StepSink: Send + Sync {
    /// Records that `step` is done; may hold the caller (a crash-test gate).
    fn step<'a>(&'a self, step: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Records an operation's progress in its `last_operation.description`.
pub struct Progress {
    sink: Option<Box<dyn StepSink>>,
}

impl Progress {
    /// Progress that goes to `sink`.
    pub(crate) fn new(sink: Box<dyn StepSink>) -> Self {
        Progress { sink: Some(sink) }
    }

    /// Progress that goes nowhere (cleanup work, benchmarks of providers alone).
    pub fn none() -> Self {
        Progress { sink: None }
    }

    /// Notes that `step` is done. Best effort: a progress note that cannot be written is
    /// logged and skipped, it never fails the operation.
    pub async fn step(&self, step: &str) {
        if let Some(sink) = &self.sink {
            sink.step(step).await;
        }
    }
}
