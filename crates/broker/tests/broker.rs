//! Integration tests: real HTTP against a broker on 127.0.0.1:0, real PostgreSQL, MariaDB
//! and Redis on this machine (the CI script starts them; an unreachable server fails the
//! test rather than skipping it). Every test uses its own ids and state file, so they run in
//! parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "broker/harness.rs"]
mod harness;
#[path = "broker/lifecycle.rs"]
mod lifecycle;
#[path = "broker/negotiation.rs"]
mod negotiation;
#[path = "broker/pgdev.rs"]
mod pgdev;
#[path = "broker/providers.rs"]
mod providers;
#[path = "broker/recovery.rs"]
mod recovery;
#[path = "broker/semantics.rs"]
mod semantics;
