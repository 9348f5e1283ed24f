//! A scripted HTTP/1.1 upstream (raw bytes on a real socket, plain TCP or mTLS) that
//! loses the keep-alive race on purpose: on its first connection it answers
//! `answered_first` requests with keep-alive, then reads the next request and closes
//! without answering. Every later connection answers everything. A connection that
//! closes before sending a request (a sidecar's readiness probe of its app) is not
//! counted: "first connection" means the first to carry a request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How the first connection ends after reading the request it will not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Dropped: a FIN (over TLS without `close_notify`, like a server that just closes
    /// its socket).
    Drop,
    /// Shut down: TLS `close_notify`, then a FIN.
    Shutdown,
    /// A TCP reset (`SO_LINGER` 0).
    Reset,
}

/// What the upstream saw: per request, `(connection index, "METHOD /path")`; connections
/// are counted from their first request.
#[derive(Clone, Default)]
pub struct Seen {
    requests: Arc<Mutex<Vec<(usize, String)>>>,
    connections: Arc<AtomicUsize>,
}

impl Seen {
    pub fn requests(&self) -> Vec<(usize, String)> {
        self.requests.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy)]
struct Script {
    answered_first: usize,
    ending: Ending,
}

/// Starts the upstream on a loopback port, over TLS if `tls` is given.
pub async fn start(
    answered_first: usize,
    ending: Ending,
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let script = Script {
        answered_first,
        ending,
    };
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(connection(tcp, script, tls.clone(), log.clone()));
        }
    });
    (addr, seen)
}

async fn connection(tcp: TcpStream, script: Script, tls: Option<TlsAcceptor>, seen: Seen) {
    // Which connection is the first is known only at its first request, so every
    // connection ends with a reset under that script (the others end when the client
    // has closed, where a reset changes nothing).
    if script.ending == Ending::Reset {
        tcp.set_zero_linger().unwrap();
    }
    match tls {
        Some(acceptor) => {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            exchange(stream, script, &seen).await;
        }
        None => exchange(tcp, script, &seen).await,
    }
}

/// Serves requests until the client closes; on the first connection to carry a request,
/// reads request number `answered_first + 1` and ends the connection as the script says
/// without answering it.
async fn exchange<S>(stream: S, script: Script, seen: &Seen)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    let Some(mut request) = read_request(&mut stream).await else {
        return;
    };
    let index = seen.connections.fetch_add(1, Ordering::SeqCst);
    // The script only misbehaves on the first connection.
    let limit = (index == 0).then_some(script.answered_first);
    let ending = script.ending;
    let mut answered = 0;
    loop {
        seen.requests.lock().unwrap().push((index, request.clone()));
        if limit == Some(answered) {
            if ending == Ending::Shutdown {
                let _ = stream.get_mut().shutdown().await;
            }
            return;
        }
        let body = format!("{request} on connection {index}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
        answered += 1;
        match read_request(&mut stream).await {
            Some(next) => request = next,
            None => return,
        }
    }
}

/// Reads one request (head and `content-length` body); returns "METHOD /path", or
/// `None` once the client closed the connection.
async fn read_request<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> Option<String> {
    let mut request_line = String::new();
    if stream.read_line(&mut request_line).await.ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        assert!(
            !name.eq_ignore_ascii_case("transfer-encoding"),
            "the script reads content-length bodies only"
        );
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    let mut words = request_line.split_whitespace();
    Some(format!("{} {}", words.next()?, words.next()?))
}
