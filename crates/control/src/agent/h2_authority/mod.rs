//! Lets the Workload API's h2 server accept the `:authority` that gRPC C-core (Python,
//! C++, Ruby, grpcurl-style clients), grpc-java and grpc-swift send on a unix socket.
//!
//! Those clients derive `:authority` from the target: gRPC C-core 1.85 sends
//! `tmp%2Fagent.sock` for both `unix:/tmp/agent.sock` and `unix:///tmp/agent.sock`
//! (the path, leading `/` dropped, percent-encoded), grpc-java the raw path. h2 parses
//! `:authority` as a URI authority and answers these with RST_STREAM PROTOCOL_ERROR
//! (hyperium/h2#487). SPIRE serves them, so we must too. The authority means nothing
//! on a unix socket, so [`AuthorityShim`] sits between the accepted socket and the
//! server and rewrites an `:authority` that is not a valid URI authority to
//! `localhost`; every other byte the client sends reaches the server unchanged except
//! that header blocks are re-encoded (see `block`), and nothing the server sends is
//! touched. The shim keeps the socket itself, so the peer credentials used for
//! attestation are the kernel's, as before.

mod block;
mod frames;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

pub use frames::AuthorityRewriter;

/// Why a client's connection was closed.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The HPACK block did not decode (a COMPRESSION_ERROR in RFC 9113 terms).
    #[error("header block does not decode")]
    Hpack(#[source] loona_hpack::decoder::DecoderError),
    /// A HEADERS or CONTINUATION frame above the server's SETTINGS_MAX_FRAME_SIZE.
    #[error("frame of type {kind:#x} is {length} bytes, above the 16384 the server allows")]
    FrameTooLarge {
        /// Frame type.
        kind: u8,
        /// Its length.
        length: usize,
    },
    /// A header block's fragments add up to more than 64 KiB.
    #[error("header block above 64 KiB")]
    BlockTooLarge,
    /// The decoded header list is larger than we re-encode.
    #[error("decoded header list of {size} bytes is too large")]
    HeaderListTooLarge {
        /// Its size (names + values + 32 per field).
        size: usize,
    },
    /// Another frame arrived inside a header block.
    #[error("frame of type {kind:#x} inside the header block of stream {stream}")]
    ContinuationExpected {
        /// The stream whose block is open.
        stream: u32,
        /// The type of the intruding frame.
        kind: u8,
    },
    /// CONTINUATION without an open header block on its stream.
    #[error("CONTINUATION outside a header block")]
    UnexpectedContinuation,
    /// Pad length or priority fields longer than the HEADERS payload.
    #[error("HEADERS padding or priority fields exceed the payload")]
    Padding,
    /// HEADERS on stream 0.
    #[error("HEADERS on stream 0")]
    StreamZero,
    /// A client may not push.
    #[error("PUSH_PROMISE from a client")]
    PushPromise,
}

/// How much to read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// An accepted Workload API connection whose client→server bytes go through an
/// [`AuthorityRewriter`]; writes go straight to the socket.
pub struct AuthorityShim {
    socket: UnixStream,
    rewriter: AuthorityRewriter,
    /// Read from the socket, not yet taken by the rewriter.
    input: Vec<u8>,
    input_pos: usize,
    /// Rewritten, not yet read by the server.
    output: Vec<u8>,
    output_pos: usize,
}

impl AuthorityShim {
    /// Wraps an accepted connection.
    pub fn new(socket: UnixStream) -> Self {
        AuthorityShim {
            socket,
            rewriter: AuthorityRewriter::new(),
            input: Vec::new(),
            input_pos: 0,
            output: Vec::new(),
            output_pos: 0,
        }
    }

    /// Runs the rewriter over buffered input; false when there was none.
    fn rewrite_buffered(&mut self) -> io::Result<bool> {
        if self.input_pos == self.input.len() {
            return Ok(false);
        }
        if self.output_pos == self.output.len() {
            self.output.clear();
            self.output_pos = 0;
        }
        let used = self
            .rewriter
            .feed(&self.input[self.input_pos..], &mut self.output)
            .map_err(|error| {
                tracing::warn!(%error, "closing a Workload API connection: malformed HTTP/2");
                io::Error::new(io::ErrorKind::InvalidData, error)
            })?;
        self.input_pos += used;
        if self.input_pos == self.input.len() {
            self.input.clear();
            self.input_pos = 0;
        }
        Ok(true)
    }
}

impl AsyncRead for AuthorityShim {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_pos < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.output_pos);
                buf.put_slice(&this.output[this.output_pos..this.output_pos + n]);
                this.output_pos += n;
                return Poll::Ready(Ok(()));
            }
            // With `output` drained, `feed` takes at least one byte, so this loop ends.
            if this.rewrite_buffered()? {
                continue;
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.socket).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // EOF
            }
            this.input.extend_from_slice(read.filled());
        }
    }
}

impl AsyncWrite for AuthorityShim {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

impl Connected for AuthorityShim {
    type ConnectInfo = UdsConnectInfo;

    /// The socket's own peer credentials: attestation sees the kernel's answer.
    fn connect_info(&self) -> UdsConnectInfo {
        self.socket.connect_info()
    }
}

#[cfg(test)]
#[path = "shim_tests.rs"]
mod tests;
