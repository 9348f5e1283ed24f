//! The client→server half of an HTTP/2 connection (RFC 9113), rewritten frame by frame,
//! without I/O: bytes in, bytes out.
//!
//! After the 24-byte client preface every frame is a 9-byte header and a payload.
//! HEADERS and CONTINUATION frames are collected into one header block, rewritten by
//! [`HeaderBlockCodec`] and sent on as a HEADERS frame (END_STREAM and PRIORITY kept,
//! padding dropped) plus CONTINUATION frames when the block outgrew one frame. Every
//! other frame is passed through byte for byte as it arrives, so DATA is streamed, not
//! buffered. What the server would treat as a connection error in a header block
//! (interleaved frames, a stray CONTINUATION, bad padding, PUSH_PROMISE from a client,
//! an HPACK error) is an error here too: the connection is closed.

use super::RewriteError;
use super::block::HeaderBlockCodec;

/// RFC 9113 §3.4.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

/// The server's `SETTINGS_MAX_FRAME_SIZE`: tonic leaves it at the protocol's initial
/// value, so a client may not send a larger frame and every frame we emit fits.
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;
/// The largest compressed header block (HEADERS + CONTINUATIONs) we collect; more is a
/// CONTINUATION flood, not a request.
pub(crate) const MAX_BLOCK: usize = 64 * 1024;
/// Output held before [`AuthorityRewriter::feed`] stops taking input, so a few input
/// bytes can never make the output grow without bound.
const HIGH_WATER: usize = 64 * 1024;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    raw: [u8; FRAME_HEADER_LEN],
    length: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(raw: [u8; FRAME_HEADER_LEN]) -> Self {
        FrameHead {
            raw,
            length: usize::from(raw[0]) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]),
            kind: raw[3],
            flags: raw[4],
            // The reserved high bit is ignored (RFC 9113 §4.1).
            stream: u32::from_be_bytes([raw[5] & 0x7f, raw[6], raw[7], raw[8]]),
        }
    }
}

fn write_head(length: usize, kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>) {
    // invariant: callers pass length <= MAX_FRAME_SIZE, which fits in 24 bits.
    let len = (length as u32).to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// Where in the byte stream we are.
enum State {
    /// Matching the client preface; `matched` bytes so far.
    Preface { matched: usize },
    /// Not HTTP/2 (no preface): everything is passed through for the server to refuse.
    Transparent,
    /// Reading a frame header.
    Head {
        buf: [u8; FRAME_HEADER_LEN],
        len: usize,
    },
    /// Passing `remaining` payload bytes of a frame we do not touch.
    Pass { remaining: usize },
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect { head: FrameHead, payload: Vec<u8> },
}

impl State {
    fn head() -> Self {
        State::Head {
            buf: [0; FRAME_HEADER_LEN],
            len: 0,
        }
    }
}

/// A header block whose END_HEADERS has not arrived yet.
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
}

/// Rewrites a client's HTTP/2 byte stream so that h2 accepts the `:authority` of
/// gRPC C-core, grpc-java and grpc-swift Workload API clients (the socket path; see
/// the module docs of `h2_authority`).
pub struct AuthorityRewriter {
    state: State,
    open: Option<OpenBlock>,
    codec: HeaderBlockCodec,
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    /// A rewriter for a new connection (expecting the client preface).
    pub fn new() -> Self {
        AuthorityRewriter {
            state: State::Preface { matched: 0 },
            open: None,
            codec: HeaderBlockCodec::new(),
        }
    }

    /// Takes a prefix of `input` and appends what the server should read to `out`;
    /// returns how many bytes it took. With `out` below 64 KiB it takes at least one
    /// byte of a non-empty `input`; above, it stops at the next frame boundary, so the
    /// caller drains `out` before feeding more. An error is a connection error: the
    /// caller must close the connection.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, RewriteError> {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match &mut self.state {
                State::Transparent => {
                    out.extend_from_slice(rest);
                    used = input.len();
                }
                State::Preface { matched } => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(rest.len());
                    if rest[..n] != want[..n] {
                        self.state = State::Transparent;
                        continue;
                    }
                    out.extend_from_slice(&rest[..n]);
                    used += n;
                    *matched += n;
                    if *matched == PREFACE.len() {
                        self.state = State::head();
                    }
                }
                State::Head { buf, len } => {
                    if *len == 0 && out.len() >= HIGH_WATER {
                        break;
                    }
                    let n = (FRAME_HEADER_LEN - *len).min(rest.len());
                    buf[*len..*len + n].copy_from_slice(&rest[..n]);
                    *len += n;
                    used += n;
                    if *len == FRAME_HEADER_LEN {
                        let head = FrameHead::parse(*buf);
                        self.begin(head, out)?;
                    }
                }
                State::Pass { remaining } => {
                    let n = (*remaining).min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    used += n;
                    *remaining -= n;
                    if *remaining == 0 {
                        self.state = State::head();
                    }
                }
                State::Collect { head, payload } => {
                    let n = (head.length - payload.len()).min(rest.len());
                    payload.extend_from_slice(&rest[..n]);
                    used += n;
                    if payload.len() == head.length {
                        let head = *head;
                        let payload = std::mem::take(payload);
                        self.state = State::head();
                        self.header_frame(head, &payload, out)?;
                    }
                }
            }
        }
        Ok(used)
    }

    /// A complete frame header: decide what to do with the payload.
    fn begin(&mut self, head: FrameHead, out: &mut Vec<u8>) -> Result<(), RewriteError> {
        if let Some(open) = &self.open
            && head.kind != CONTINUATION
        {
            return Err(RewriteError::ContinuationExpected {
                stream: open.stream,
                kind: head.kind,
            });
        }
        match head.kind {
            HEADERS | CONTINUATION => {
                if head.length > MAX_FRAME_SIZE {
                    return Err(RewriteError::FrameTooLarge {
                        kind: head.kind,
                        length: head.length,
                    });
                }
                if head.length == 0 {
                    self.state = State::head();
                    return self.header_frame(head, &[], out);
                }
                self.state = State::Collect {
                    head,
                    payload: Vec::with_capacity(head.length),
                };
            }
            PUSH_PROMISE => return Err(RewriteError::PushPromise),
            _ => {
                out.extend_from_slice(&head.raw);
                self.state = if head.length == 0 {
                    State::head()
                } else {
                    State::Pass {
                        remaining: head.length,
                    }
                };
            }
        }
        Ok(())
    }

    /// A complete HEADERS or CONTINUATION frame.
    fn header_frame(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        if head.kind == HEADERS {
            self.open = Some(open_block(head, payload)?);
        } else {
            match &mut self.open {
                Some(open) if open.stream == head.stream => {
                    open.fragments.extend_from_slice(payload);
                    if open.fragments.len() > MAX_BLOCK {
                        return Err(RewriteError::BlockTooLarge);
                    }
                }
                _ => return Err(RewriteError::UnexpectedContinuation),
            }
        }
        if head.flags & END_HEADERS != 0
            && let Some(block) = self.open.take()
        {
            let encoded = self.codec.rewrite(&block.fragments)?;
            emit(&block, &encoded, out);
        }
        Ok(())
    }
}

/// Parses a HEADERS payload (RFC 9113 §6.2): optional pad length and priority fields
/// around the first fragment.
fn open_block(head: FrameHead, payload: &[u8]) -> Result<OpenBlock, RewriteError> {
    if head.stream == 0 {
        return Err(RewriteError::StreamZero);
    }
    let mut body = payload;
    let mut pad = 0;
    if head.flags & PADDED != 0 {
        let (&len, rest) = body.split_first().ok_or(RewriteError::Padding)?;
        pad = usize::from(len);
        body = rest;
    }
    let mut priority = None;
    if head.flags & PRIORITY != 0 {
        let (fields, rest) = body.split_first_chunk::<5>().ok_or(RewriteError::Padding)?;
        priority = Some(*fields);
        body = rest;
    }
    let fragment_len = body.len().checked_sub(pad).ok_or(RewriteError::Padding)?;
    Ok(OpenBlock {
        stream: head.stream,
        end_stream: head.flags & END_STREAM != 0,
        priority,
        fragments: body[..fragment_len].to_vec(),
    })
}

/// Writes a rewritten block as HEADERS (+ CONTINUATION) frames of at most
/// [`MAX_FRAME_SIZE`] bytes; END_HEADERS on the last.
fn emit(block: &OpenBlock, encoded: &[u8], out: &mut Vec<u8>) {
    let prio_len = if block.priority.is_some() { 5 } else { 0 };
    let (first, rest) = encoded.split_at(encoded.len().min(MAX_FRAME_SIZE - prio_len));
    let mut flags = 0;
    if block.end_stream {
        flags |= END_STREAM;
    }
    if block.priority.is_some() {
        flags |= PRIORITY;
    }
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_head(first.len() + prio_len, HEADERS, flags, block.stream, out);
    if let Some(priority) = &block.priority {
        out.extend_from_slice(priority);
    }
    out.extend_from_slice(first);
    let mut chunks = rest.chunks(MAX_FRAME_SIZE).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        write_head(chunk.len(), CONTINUATION, flags, block.stream, out);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
