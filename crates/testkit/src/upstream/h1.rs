//! HTTP/1.1 by hand on the socket, so every fault is exactly the bytes (or the RST) the
//! script asks for; hyper would add its own flushing and closing behaviour in between.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{
    ANNOUNCED_BODY, Arrived, Behaviour, PARTIAL_BODY, REQUEST_ID, Shared, UPSTREAM_HEADER,
};

/// A request head is refused past this size (a guard for tests, not a server limit).
const MAX_HEAD: usize = 64 * 1024;

type Conn = BufReader<TcpStream>;

/// A request read whole, and what the connection does after answering it.
struct Request {
    arrived: Arrived,
    /// `Connection: close` or HTTP/1.0: close after the answer.
    close: bool,
}

/// Serves requests on `stream` until the client closes or a fault ends the connection.
pub(super) async fn serve(stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    let mut conn = BufReader::new(stream);
    // Any read error or malformed request ends the connection: the kit answers what the
    // script says, not protocol errors.
    while let Ok(Some(request)) = read_request(&mut conn, connection).await {
        let verdict = shared.arrive(&request.arrived);
        let keep_going = match verdict.behaviour {
            Behaviour::Answer | Behaviour::Status(_) => {
                let status = match verdict.behaviour {
                    Behaviour::Status(code) => code,
                    _ => 200,
                };
                let body = shared.answer_body(&request.arrived, &verdict).to_string();
                let head = head(
                    status,
                    &shared.name,
                    body.len(),
                    verdict.seen,
                    request.close,
                );
                let sent = write(&mut conn, &[head.as_bytes(), body.as_bytes()]).await;
                sent.is_ok() && !request.close
            }
            Behaviour::Stall => {
                held(&mut conn, &shared).await;
                false
            }
            Behaviour::StallBody => {
                if write_partial(&mut conn, &shared.name, verdict.seen)
                    .await
                    .is_ok()
                {
                    held(&mut conn, &shared).await;
                }
                false
            }
            Behaviour::Reset => {
                // Closing a socket whose linger is zero sends RST instead of FIN.
                let _ = conn.get_ref().set_zero_linger();
                false
            }
            Behaviour::DieMidBody => {
                let _ = write_partial(&mut conn, &shared.name, verdict.seen).await;
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// The head of an answer with a JSON body of `len` bytes.
fn head(status: u16, name: &str, len: usize, seen: usize, close: bool) -> String {
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Scripted");
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\
         {UPSTREAM_HEADER}: {name}\r\nx-seen: {seen}\r\n{connection}\r\n"
    )
}

/// A `200` head announcing [`ANNOUNCED_BODY`] bytes, and [`PARTIAL_BODY`] of them.
async fn write_partial(conn: &mut Conn, name: &str, seen: usize) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {ANNOUNCED_BODY}\r\n\
         {UPSTREAM_HEADER}: {name}\r\nx-seen: {seen}\r\n\r\n"
    );
    write(conn, &[head.as_bytes(), &[b'p'; PARTIAL_BODY]]).await
}

async fn write(conn: &mut Conn, parts: &[&[u8]]) -> io::Result<()> {
    let stream = conn.get_mut();
    for part in parts {
        stream.write_all(part).await?;
    }
    stream.flush().await
}

/// Holds the exchange until the test releases stalls or the client goes away (whatever
/// it sends meanwhile is read and ignored, so its close is noticed).
async fn held(conn: &mut Conn, shared: &Shared) {
    let closed = async {
        let mut scratch = [0u8; 1024];
        while let Ok(n) = conn.read(&mut scratch).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::select! {
        () = shared.hold() => {}
        () = closed => {}
    }
}

/// Reads one request, head and body; `None` when the client closed between requests.
async fn read_request(conn: &mut Conn, connection: usize) -> io::Result<Option<Request>> {
    let Some(head) = read_head(conn).await? else {
        return Ok(None);
    };
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut fields);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(invalid("malformed request head")),
    }
    let header = |name: &str| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: usize = match header("content-length") {
        Some(v) if !chunked => v.parse().map_err(|_| invalid("bad content-length"))?,
        _ => 0,
    };
    let close = parsed.version == Some(0)
        || header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        write(conn, &[b"HTTP/1.1 100 Continue\r\n\r\n"]).await?;
    }
    let target = parsed.path.unwrap_or("/");
    let arrived = Arrived {
        method: parsed.method.unwrap_or("").to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        request_id: header(REQUEST_ID),
        headers: parsed.headers.len(),
        body_bytes: 0,
        connection,
    };
    let body_bytes = if chunked {
        read_chunked(conn).await?
    } else {
        discard(conn, length).await?
    };
    Ok(Some(Request {
        arrived: Arrived {
            body_bytes,
            ..arrived
        },
        close,
    }))
}

/// The bytes up to and including the blank line; `None` at a clean end of stream.
async fn read_head(conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        if conn.read_until(b'\n', &mut head).await? == 0 {
            return match head.is_empty() {
                true => Ok(None),
                false => Err(invalid("connection closed inside a request head")),
            };
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear(); // blank lines before a request line are ignored (RFC 9112 2.2)
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(invalid("request head too large"));
        }
    }
}

/// Reads and drops exactly `len` body bytes.
async fn discard<R: AsyncRead + Unpin>(conn: &mut R, len: usize) -> io::Result<usize> {
    let want = u64::try_from(len).map_err(|_| invalid("body too large"))?;
    let got = tokio::io::copy(&mut conn.take(want), &mut tokio::io::sink()).await?;
    if got < want {
        return Err(invalid("connection closed inside a request body"));
    }
    Ok(len)
}

/// Reads a chunked body (and its trailer section); returns its data length.
async fn read_chunked(conn: &mut Conn) -> io::Result<usize> {
    let mut total = 0usize;
    loop {
        let line = read_line(conn).await?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailer fields, up to the blank line.
            while !read_line(conn).await?.is_empty() {}
            return Ok(total);
        }
        total += discard(conn, size).await?;
        if !read_line(conn).await?.is_empty() {
            return Err(invalid("chunk data longer than its size"));
        }
    }
}

async fn read_line(conn: &mut Conn) -> io::Result<String> {
    let mut line = Vec::new();
    if conn.read_until(b'\n', &mut line).await? == 0 {
        return Err(invalid("connection closed inside a chunked body"));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}
