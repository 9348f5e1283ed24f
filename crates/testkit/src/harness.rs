//! Small client-side helpers for tests that drive proxies over real sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Anything that can go wrong in a test helper.
pub type HarnessError = Box<dyn std::error::Error + Send + Sync>;

/// Sends `request` as-is (its URI is written verbatim, so absolute-form stays
/// absolute-form) over a fresh HTTP/1.1 connection to `addr`, e.g. a forward proxy.
pub async fn send_http1<B>(
    addr: SocketAddr,
    request: Request<B>,
) -> Result<Response<Incoming>, HarnessError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<HarnessError>,
{
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}

/// `GET`-style helper: sends `method url` with `headers` and an in-memory body through
/// the HTTP proxy at `proxy`; returns the status and the whole body.
pub async fn via_proxy(
    proxy: SocketAddr,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(http::StatusCode, Bytes), HarnessError> {
    let mut builder = Request::builder().method(method).uri(url);
    if let Some(host) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
    {
        builder = builder.header(hyper::header::HOST, host);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into()))?;
    let response = send_http1(proxy, request).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

/// Writes `bytes` to a fresh TCP connection to `addr`, then reads everything the
/// server sends until it closes the connection (or `limit` passes: a guard against
/// hanging, not a timing assertion).
pub async fn raw_exchange(
    addr: SocketAddr,
    bytes: &[u8],
    limit: Duration,
) -> Result<Vec<u8>, HarnessError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut received = Vec::new();
    let read = stream.read_to_end(&mut received);
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(_)) => Ok(received),
        // A reset after the server's alert is still "the server closed it".
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionReset => Ok(received),
        Ok(Err(error)) => Err(error.into()),
        Err(_) => Err(format!("{addr} kept the connection open for {limit:?}").into()),
    }
}
