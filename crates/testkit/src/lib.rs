//! Dev-only test support for meshwork: a test CA built on `identity`, an echo HTTP
//! upstream, a scripted upstream that fails, stalls, resets or dies mid-body on cue
//! (`upstream`), and small client helpers for driving proxies over real sockets.
//!
//! Only ever a `[dev-dependencies]` entry. Must not import `proxy`, `control`,
//! `broker` or `cli` (their tests import this crate).

pub mod ca;
pub mod echo;
pub mod harness;
pub mod layering;
pub mod upstream;

pub use ca::TestCa;
pub use echo::EchoServer;
pub use upstream::Upstream;
