use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;
use crate::body::empty;

/// Dials in-memory HTTP/2 connections to a server answering `200`, counting the dials.
#[derive(Default)]
struct InMemoryH2 {
    dials: Arc<AtomicUsize>,
}

impl Dial for InMemoryH2 {
    type Key = ();

    async fn dial(&self, _key: &(), _timeout: Duration) -> Result<Sender, BoxError> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let answer = hyper::service::service_fn(|_request| async {
            Ok::<_, std::convert::Infallible>(Response::new(empty()))
        });
        let serving = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(server), answer);
        tokio::spawn(serving);
        let (sender, connection) =
            http2::handshake(TokioExecutor::new(), TokioIo::new(client)).await?;
        tokio::spawn(connection);
        Ok(Sender::Http2(sender))
    }
}

#[tokio::test(start_paused = true)]
async fn an_http2_connection_without_requests_for_the_idle_timeout_is_closed() {
    let dialer = InMemoryH2::default();
    let dials = Arc::clone(&dialer.dials);
    let pool = Pool::new(dialer);
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        idle: Duration::from_secs(1),
        idle_http2: Duration::from_secs(10),
    };
    let get = || Request::get("http://app/").body(empty()).unwrap();
    let send = |pool: &Pool<InMemoryH2>| {
        let pool = pool.clone();
        async move { pool.send(&(), get(), timeouts).await.unwrap().status() }
    };
    assert_eq!(send(&pool).await, http::StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(send(&pool).await, http::StatusCode::OK);
    assert_eq!(
        dials.load(Ordering::SeqCst),
        1,
        "reused within the idle timeout"
    );
    // A whole idle period without a request (10 s → 20 s): closed.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(send(&pool).await, http::StatusCode::OK);
    assert_eq!(
        dials.load(Ordering::SeqCst),
        2,
        "dialled again after going idle"
    );
}

/// An idle entry on a real (in-memory) HTTP/1.1 connection.
async fn idle_since(since: Instant) -> Idle {
    let (io, _server) = tokio::io::duplex(64);
    let io = hyper_util::rt::TokioIo::new(io);
    let (sender, connection) = http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    Idle { sender, since }
}

#[tokio::test]
async fn connections_idle_for_the_idle_timeout_are_dropped_and_younger_ones_kept() {
    let timeout = Duration::from_secs(15);
    let now = Instant::now() + timeout * 2;
    let mut idle = Vec::new();
    for age in [timeout * 2, timeout, timeout / 2] {
        idle.push(idle_since(now - age).await);
    }
    idle.push(idle_since(now).await);
    drop_expired(&mut idle, now, timeout);
    let ages: Vec<_> = idle.iter().map(|i| now - i.since).collect();
    assert_eq!(ages, [timeout / 2, Duration::ZERO]);
}
