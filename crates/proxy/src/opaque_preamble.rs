//! The preamble of an opaque TCP connection between sidecars (ALPN `meshwork.opaque`):
//! right after the mTLS handshake the client sends 8 bytes, `b"MWO1"`, the destination port
//! (u16, big-endian) and a reserved u16 that must be 0; then both sides splice bytes.
//!
//! Fixed length, so the server reads exactly 8 bytes with a deadline and never buffers
//! past them: everything after the preamble is the app's. Peer input never panics: any
//! other magic, a non-zero reserved field or port 0 is refused with a [`PreambleError`].

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The preamble's length on the wire.
pub const PREAMBLE_LEN: usize = 8;

/// The first four bytes: protocol and version.
const MAGIC: &[u8; 4] = b"MWO1";

/// What the client asks for: the port of the app to splice to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble {
    /// The destination port (never 0).
    pub port: u16,
}

/// Why a preamble was refused.
#[derive(Debug, Error)]
pub enum PreambleError {
    /// The client sent nothing complete within the deadline.
    #[error("no complete preamble within {0:?}")]
    Timeout(Duration),
    /// The connection ended or failed before 8 bytes arrived.
    #[error("reading the preamble")]
    Read(#[source] std::io::Error),
    /// Not `MWO1`.
    #[error("the preamble does not start with MWO1 (got {0:02x?})")]
    Magic([u8; 4]),
    /// The reserved field is not 0 (a later version's preamble).
    #[error("the preamble's reserved field is {0}, not 0")]
    Reserved(u16),
    /// Port 0.
    #[error("the preamble names port 0")]
    PortZero,
}

impl Preamble {
    /// The 8 bytes on the wire.
    pub fn encode(self) -> [u8; PREAMBLE_LEN] {
        let [p0, p1] = self.port.to_be_bytes();
        let [m0, m1, m2, m3] = *MAGIC;
        [m0, m1, m2, m3, p0, p1, 0, 0]
    }

    /// Parses the 8 bytes of a preamble.
    pub fn decode(bytes: [u8; PREAMBLE_LEN]) -> Result<Preamble, PreambleError> {
        let [m0, m1, m2, m3, p0, p1, r0, r1] = bytes;
        if [m0, m1, m2, m3] != *MAGIC {
            return Err(PreambleError::Magic([m0, m1, m2, m3]));
        }
        let reserved = u16::from_be_bytes([r0, r1]);
        if reserved != 0 {
            return Err(PreambleError::Reserved(reserved));
        }
        match u16::from_be_bytes([p0, p1]) {
            0 => Err(PreambleError::PortZero),
            port => Ok(Preamble { port }),
        }
    }

    /// Reads exactly one preamble from `io` within `timeout`.
    pub async fn read<I: AsyncRead + Unpin>(
        io: &mut I,
        timeout: Duration,
    ) -> Result<Preamble, PreambleError> {
        let mut bytes = [0; PREAMBLE_LEN];
        tokio::time::timeout(timeout, io.read_exact(&mut bytes))
            .await
            .map_err(|_| PreambleError::Timeout(timeout))?
            .map_err(PreambleError::Read)?;
        Preamble::decode(bytes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_wire_form() {
        let preamble = Preamble { port: 5432 };
        assert_eq!(preamble.encode(), *b"MWO1\x15\x38\0\0");
        assert_eq!(Preamble::decode(preamble.encode()).unwrap(), preamble);
    }

    #[test]
    fn bad_magic_reserved_and_port_zero_are_refused() {
        assert!(matches!(
            Preamble::decode(*b"GET / HT"),
            Err(PreambleError::Magic(_))
        ));
        assert!(matches!(
            Preamble::decode(*b"MWO1\x00\x50\x00\x01"),
            Err(PreambleError::Reserved(1))
        ));
        assert!(matches!(
            Preamble::decode(*b"MWO1\0\0\0\0"),
            Err(PreambleError::PortZero)
        ));
    }

    #[tokio::test]
    async fn short_and_silent_peers_are_refused_and_nothing_past_8_bytes_is_read() {
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"MWO1")
            .await
            .unwrap();
        drop(client);
        assert!(matches!(
            Preamble::read(&mut server, Duration::from_secs(5)).await,
            Err(PreambleError::Read(_))
        ));
        let (_client, mut silent) = tokio::io::duplex(64);
        tokio::time::pause();
        assert!(matches!(
            Preamble::read(&mut silent, Duration::from_secs(5)).await,
            Err(PreambleError::Timeout(_))
        ));
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut bytes = Preamble { port: 7 }.encode().to_vec();
        bytes.extend_from_slice(b"app bytes");
        tokio::io::AsyncWriteExt::write_all(&mut client, &bytes)
            .await
            .unwrap();
        let preamble = Preamble::read(&mut server, Duration::from_secs(5)).await;
        assert_eq!(preamble.unwrap().port, 7);
        let mut rest = [0; 9];
        server.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"app bytes");
    }
}
