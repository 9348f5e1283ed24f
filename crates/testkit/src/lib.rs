//! Dev-only test support for meshwork: a test CA built on `identity`, an echo HTTP
//! upstream, a scripted upstream that fails, stalls, resets or dies mid-body on cue
//! (`upstream`), small client helpers for driving proxies over real sockets, and a real
//! OTLP receiver (`otlp`: the rotel collector) whose received spans tests read back, and a
//! fake Kubernetes API server (`kube_fake`) for the controller mode's tests.
//!
//! Only ever a `[dev-dependencies]` entry. Must not import `proxy`, `control`,
//! `broker` or `cli` (their tests import this crate).

pub mod ca;
pub mod echo;
pub mod etcd;
pub mod harness;
pub mod kube_fake;
pub mod layering;
pub mod netns;
pub mod otlp;
pub mod upstream;

pub use ca::TestCa;
pub use echo::EchoServer;
pub use kube_fake::FakeApiServer;
pub use upstream::Upstream;
