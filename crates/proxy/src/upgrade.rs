//! HTTP/1.1 protocol upgrades (WebSocket) through a sidecar: one request on a fresh,
//! unpooled HTTP/1.1 connection to the next hop, and, when it answers `101 Switching
//! Protocols`, a byte splice between the two upgraded connections.
//!
//! Both sidecars do this: the caller's outbound to the peer sidecar (mTLS, ALPN
//! `http/1.1` only), the peer's inbound to its app. Why a dedicated HTTP/1.1 connection
//! rather than the pooled HTTP/2 one with extended CONNECT (RFC 8441): the app speaks
//! HTTP/1.1 Upgrade on both ends, so an h2 leg would translate `GET + Upgrade` into
//! `CONNECT :protocol websocket` and back (different headers: no `Sec-WebSocket-Key`/
//! `Accept` on h2), and hyper's h2 client and server must both opt into extended CONNECT.
//! An upgraded connection is used by one client only anyway, so it cannot share a
//! multiplexed connection's benefits: one TLS handshake per WebSocket is the price of a
//! byte-exact, end-to-end HTTP/1.1 handshake.
//!
//! The request goes through every layer of both stacks (classification, telemetry,
//! authorization, identity stamping) like any request; only the last hop differs.

use http::{Request, Response, StatusCode};
use hyper::client::conn::http1;
use hyper::rt::{Read, Write};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{ProxyBody, boxed};
use crate::pool::forms;

/// Sends the upgrade `request` (its client's upgrade is `client`) on `io`, a fresh
/// connection to the next hop; on `101`, splices the two upgraded connections on a task of
/// its own. Any other answer goes back as it is.
pub async fn exchange<I>(
    io: I,
    request: Request<ProxyBody>,
    client: OnUpgrade,
) -> Result<Response<ProxyBody>, hyper::Error>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upgrade connection ended with an error");
        }
    });
    let mut response = sender.send_request(forms::http1(request)).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let next = hyper::upgrade::on(&mut response);
        tokio::spawn(splice(client, next));
    }
    Ok(response.map(boxed))
}

/// Copies bytes both ways between two upgraded connections until both sides close.
async fn splice(client: OnUpgrade, next: OnUpgrade) {
    let (client, next) = match tokio::try_join!(client, next) {
        Ok(both) => both,
        Err(error) => return tracing::debug!(%error, "an upgrade did not complete"),
    };
    let (mut client, mut next) = (TokioIo::new(client), TokioIo::new(next));
    match tokio::io::copy_bidirectional(&mut client, &mut next).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(error) => tracing::debug!(%error, "upgraded connection ended with an error"),
    }
}
