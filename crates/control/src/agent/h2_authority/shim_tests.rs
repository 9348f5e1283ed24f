#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::block::tests::{C_CORE_BLOCK, hex};
use super::*;

/// Serves one h2 connection with hyper (h2 inside, as under tonic), answering every
/// request with its authority in `x-authority`.
fn serve<S>(io: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| {
        let authority = req.uri().authority().map(|a| a.to_string());
        async move {
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .header("x-authority", authority.unwrap_or_default())
                    .body(Full::new(Bytes::from_static(b"ok")))
                    .unwrap(),
            )
        }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    });
}

/// Sends the C-core request as raw frames; returns the first frame the server sends
/// about stream 1: (type, payload).
async fn c_core_request(mut client: UnixStream) -> (u8, Vec<u8>) {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend([0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS
    let block = hex(C_CORE_BLOCK);
    let len = (block.len() as u32).to_be_bytes();
    out.extend(&len[1..]);
    out.extend([0x1, 0x5, 0, 0, 0, 1]); // HEADERS, END_STREAM | END_HEADERS, stream 1
    out.extend(block);
    client.write_all(&out).await.unwrap();
    loop {
        let mut head = [0u8; 9];
        client.read_exact(&mut head).await.unwrap();
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        client.read_exact(&mut payload).await.unwrap();
        if u32::from_be_bytes([head[5], head[6], head[7], head[8]]) == 1 {
            return (head[3], payload);
        }
    }
}

#[tokio::test]
async fn h2_refuses_the_c_core_request_without_the_shim() {
    let (client, server) = UnixStream::pair().unwrap();
    serve(server);
    let (kind, payload) = c_core_request(client).await;
    // RST_STREAM with PROTOCOL_ERROR (1): hyperium/h2#487.
    assert_eq!((kind, payload), (0x3, vec![0, 0, 0, 1]));
}

#[tokio::test]
async fn through_the_shim_h2_answers_the_c_core_request() {
    let (client, server) = UnixStream::pair().unwrap();
    serve(AuthorityShim::new(server));
    let (kind, payload) = c_core_request(client).await;
    assert_eq!(kind, 0x1, "HEADERS, not RST_STREAM");
    let headers = loona_hpack::Decoder::new().decode(&payload).unwrap();
    assert!(headers.contains(&(b":status".to_vec(), b"200".to_vec())));
    assert!(headers.contains(&(b"x-authority".to_vec(), b"localhost".to_vec())));
}

#[tokio::test]
async fn the_shim_keeps_the_peer_credentials() {
    let (_client, server) = UnixStream::pair().unwrap();
    let info = AuthorityShim::new(server).connect_info();
    let cred = info.peer_cred.expect("peer credentials");
    assert_eq!(cred.pid(), Some(std::process::id() as i32));
}
