//! Protocol detection on a captured connection: what the app's first bytes are.
//!
//! The bytes are read (not peeked: a peek that returns data leaves the socket readable, so
//! waiting for more would spin) and handed on with the connection, to be replayed to
//! whatever serves it ([`Replayed`]).

use std::io::Cursor;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// How long the app's first bytes are waited for before the connection is taken as opaque
/// TCP. Client-speaks-first protocols (HTTP, TLS) send at once on connect; a server-speaks-
/// first protocol (SMTP, MySQL) on a port not listed as opaque sends nothing until the
/// server greets it, so it pays this once per connection. Linkerd waits 10 s; one second
/// keeps that cost small while still covering a busy app's scheduling delay.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most bytes read to find a request line's method or a whole TLS ClientHello (one
/// maximal TLS record and its header; post-quantum key shares make hellos of ~1.8 KiB).
const MAX_FIRST_BYTES: usize = 16 * 1024 + 5;

/// The longest method looked for (`PROPPATCH`, `UNSUBSCRIBE`, ... fit).
const MAX_METHOD: usize = 20;

/// The TLS record type of a handshake (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a captured connection's first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// An HTTP/1.x request line or the HTTP/2 preface (`PRI * HTTP/2.0`).
    Http,
    /// A TLS ClientHello, with the server name it asks for (SNI), if any.
    Tls {
        /// The SNI, as sent.
        sni: Option<String>,
    },
    /// A TLS handshake record that is not a ClientHello rustls can read.
    BadTls,
    /// Anything else, or nothing within [`DETECT_TIMEOUT`].
    Opaque,
}

/// Reads the first bytes of `io` (within [`DETECT_TIMEOUT`]) and says what they are; the
/// bytes read are left in `first`.
pub async fn detect<I: AsyncRead + Unpin>(io: &mut I, first: &mut Vec<u8>) -> Detected {
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    loop {
        if let Some(verdict) = classify(first) {
            return verdict;
        }
        if first.len() >= MAX_FIRST_BYTES {
            return give_up(first);
        }
        let mut chunk = vec![0; MAX_FIRST_BYTES - first.len()];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(read)) if read > 0 => first.extend_from_slice(&chunk[..read]),
            // Closed, failed or silent: whatever came so far decides.
            _ => return give_up(first),
        }
    }
}

/// The verdict on the first bytes an app sent, or `None` while more bytes could change it
/// (the pure part of [`detect`]; peer input: `fuzz/fuzz_targets/pod_detect.rs`).
pub fn classify(first: &[u8]) -> Option<Detected> {
    match first.first() {
        None => None,
        Some(&TLS_HANDSHAKE_RECORD) => client_hello(first),
        Some(_) => request_line(first),
    }
}

/// The verdict on bytes that will not grow.
fn give_up(first: &[u8]) -> Detected {
    match first.first() {
        Some(&TLS_HANDSHAKE_RECORD) => Detected::BadTls,
        _ => Detected::Opaque,
    }
}

/// `Some` once `first` surely is, or is not, an HTTP request line or the h2 preface.
fn request_line(first: &[u8]) -> Option<Detected> {
    let method_len = first
        .iter()
        .take(MAX_METHOD + 1)
        .position(|b| !(b.is_ascii_uppercase() || *b == b'-' || *b == b'_'));
    match method_len {
        // Not even one method character, or too long a token: not HTTP.
        Some(0) => Some(Detected::Opaque),
        Some(len) if first[len] == b' ' => http_version(first),
        Some(_) => Some(Detected::Opaque),
        None if first.len() > MAX_METHOD => Some(Detected::Opaque),
        // All method characters so far: wait for more.
        None => None,
    }
}

/// After `METHOD `: HTTP only if the line ends in ` HTTP/1.0`/` HTTP/1.1` (or is the h2
/// preface); an uppercase text protocol (`SET k v` of Redis, STOMP) is opaque. `None` until
/// the line ends, within [`MAX_FIRST_BYTES`].
fn http_version(first: &[u8]) -> Option<Detected> {
    // Only within the bytes `detect` reads at most, so a verdict never depends on later ones.
    let Some(end) = first.iter().take(MAX_FIRST_BYTES).position(|b| *b == b'\n') else {
        return (first.len() >= MAX_FIRST_BYTES).then_some(Detected::Opaque);
    };
    let line = first[..end].strip_suffix(b"\r").unwrap_or(&first[..end]);
    let http = [&b" HTTP/1.1"[..], b" HTTP/1.0", b" HTTP/2.0"]
        .iter()
        .any(|version| line.ends_with(version));
    Some(if http {
        Detected::Http
    } else {
        Detected::Opaque
    })
}

/// `Some` once rustls has a whole ClientHello from `first` (or has refused it).
/// rustls parses the hello (an `Acceptor` reads the records and stops at the ClientHello;
/// nothing of the connection is consumed, since it reads a copy). A fresh one per attempt:
/// there are few attempts (one per read), each bounded by [`MAX_FIRST_BYTES`].
fn client_hello(first: &[u8]) -> Option<Detected> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = first;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => return Some(Detected::BadTls),
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Some(Detected::Tls {
            sni: accepted.client_hello().server_name().map(str::to_owned),
        }),
        Ok(None) => None,
        Err(_) => Some(Detected::BadTls),
    }
}

/// A connection with the bytes already read put back in front.
pub fn replayed<I>(first: Vec<u8>, io: I) -> impl AsyncRead + AsyncWrite + Send + Unpin + 'static
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(io);
    tokio::io::join(Cursor::new(first).chain(read), write)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn a_verdict_does_not_depend_on_bytes_past_what_detect_reads() {
        let mut line = b"GET /".to_vec();
        line.resize(MAX_FIRST_BYTES - b" HTTP/1.1".len(), b'a');
        line.extend_from_slice(b" HTTP/1.1");
        assert_eq!(
            classify(&line),
            Some(Detected::Opaque),
            "no line end within the limit"
        );
        line.extend_from_slice(b"\r\n");
        assert_eq!(
            classify(&line),
            Some(Detected::Opaque),
            "the same with the line end after it"
        );
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
    }

    async fn detect_bytes(chunks: &[&[u8]]) -> (Detected, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        for chunk in chunks {
            client.write_all(chunk).await.unwrap();
        }
        drop(client);
        let mut first = Vec::new();
        (detect(&mut server, &mut first).await, first)
    }

    #[tokio::test]
    async fn request_lines_and_the_h2_preface_are_http() {
        assert_eq!(
            detect_bytes(&[b"GET / HTTP/1.1\r\n"]).await.0,
            Detected::Http
        );
        assert_eq!(
            detect_bytes(&[b"PRI * HTTP/2.0\r\n\r\nSM"]).await.0,
            Detected::Http
        );
        assert_eq!(
            detect_bytes(&[b"M-SEARCH * HTTP/1.1\r\n"]).await.0,
            Detected::Http
        );
        assert_eq!(
            detect_bytes(&[b"GET /a", b"b HTTP/1.0\n"]).await.0,
            Detected::Http
        );
    }

    #[tokio::test]
    async fn uppercase_text_protocols_are_not_http() {
        assert_eq!(detect_bytes(&[b"SET k v\r\n"]).await.0, Detected::Opaque);
        assert_eq!(
            detect_bytes(&[b"CONNECT\naccept-version:1.2\n\n\0"])
                .await
                .0,
            Detected::Opaque
        );
    }

    #[tokio::test]
    async fn other_bytes_and_silence_are_opaque() {
        assert_eq!(
            detect_bytes(&[b"\x00\x00\x00\x08\x04\xd2\x16\x2f"]).await.0,
            Detected::Opaque
        );
        assert_eq!(detect_bytes(&[b"get / HTTP/1.1"]).await.0, Detected::Opaque);
        assert_eq!(detect_bytes(&[b"GETX"]).await.0, Detected::Opaque);
        assert_eq!(detect_bytes(&[]).await.0, Detected::Opaque);
        let (_client, mut server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        assert_eq!(detect(&mut server, &mut Vec::new()).await, Detected::Opaque);
        assert!(started.elapsed() >= DETECT_TIMEOUT);
    }

    /// A real ClientHello, as rustls' client writes it.
    fn client_hello_bytes(sni: &str) -> Vec<u8> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut bytes = Vec::new();
        client.write_tls(&mut bytes).unwrap();
        bytes
    }

    #[tokio::test]
    async fn a_client_hello_gives_its_sni_even_in_pieces() {
        let hello = client_hello_bytes("api.stripe.com");
        let (detected, first) = detect_bytes(&[&hello]).await;
        assert_eq!(
            detected,
            Detected::Tls {
                sni: Some("api.stripe.com".to_owned())
            }
        );
        assert_eq!(first, hello);
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let writing = tokio::spawn(async move {
            let mut client = client;
            client.write_all(&hello[..7]).await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(&hello[7..]).await.unwrap();
            client
        });
        let mut first = Vec::new();
        let detected = detect(&mut server, &mut first).await;
        assert_eq!(
            detected,
            Detected::Tls {
                sni: Some("api.stripe.com".to_owned())
            }
        );
        drop(writing.await.unwrap());
    }

    #[tokio::test]
    async fn a_broken_or_cut_hello_is_bad_tls() {
        let hello = client_hello_bytes("example.com");
        assert_eq!(detect_bytes(&[&hello[..20]]).await.0, Detected::BadTls);
        assert_eq!(
            detect_bytes(&[b"\x16\x03\x01\x00\x05hello"]).await.0,
            Detected::BadTls
        );
    }
}
