//! The capture listener: `127.0.0.1:CAPTURE_PORT` inside the pod, where the pod's rules
//! redirect every TCP connection the app opens. Each connection's original destination
//! (`SO_ORIGINAL_DST`) is mapped back to the name the app resolved it from
//! ([`VirtualAddresses`]), or kept as an IP, once; [`Dispatch`] takes it from there.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::dispatch::Dispatch;
use super::virtual_addresses::VirtualAddresses;
use crate::server;

/// Where a captured connection was going, decided once when it is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// To a virtual address: the name it was handed out for.
    Name {
        /// The name (canonical: lower case, no trailing dot).
        name: Arc<str>,
        /// The port the app connected to.
        port: u16,
    },
    /// To an address the pod's resolver did not hand out.
    Ip(SocketAddrV4),
}

impl Destination {
    /// The destination of a connection to `original`; `None` for a virtual address the
    /// resolver never handed out (nothing could have learnt it from the resolver).
    pub fn of(original: SocketAddrV4, table: &VirtualAddresses) -> Option<Destination> {
        if !table.range().contains(*original.ip()) {
            return Some(Destination::Ip(original));
        }
        let name = table.name_of(*original.ip())?;
        Some(Destination::Name {
            name,
            port: original.port(),
        })
    }

    /// The port the app connected to.
    pub fn port(&self) -> u16 {
        match self {
            Destination::Name { port, .. } => *port,
            Destination::Ip(addr) => addr.port(),
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Name { name, port } => write!(f, "{name}:{port}"),
            Destination::Ip(addr) => write!(f, "{addr}"),
        }
    }
}

/// Where the connection was going before the pod's rules redirected it (`SO_ORIGINAL_DST`);
/// an error for a connection made to the capture listener itself (nothing redirected it).
pub fn original_destination(stream: &TcpStream) -> io::Result<SocketAddrV4> {
    let raw = getsockopt(stream, OriginalDst).map_err(io::Error::from)?;
    // The kernel fills it in network byte order.
    let ip = Ipv4Addr::from_bits(u32::from_be(raw.sin_addr.s_addr));
    Ok(SocketAddrV4::new(ip, u16::from_be(raw.sin_port)))
}

/// The capture listener, ready to serve.
pub struct Capture {
    /// The bound listener (inside the pod).
    pub listener: TcpListener,
    /// What serves each captured connection.
    pub dispatch: Dispatch,
    /// The pod's name table.
    pub table: VirtualAddresses,
}

impl Capture {
    /// Serves until `shutdown` is cancelled, then drains (HTTP connections finish their
    /// requests; spliced connections are closed after the drain timeout).
    pub async fn serve(self, shutdown: CancellationToken) {
        let Capture {
            listener,
            dispatch,
            table,
        } = self;
        server::accept_loop(listener, shutdown, move |stream, watcher| {
            let dispatch = dispatch.clone();
            let destination = original_destination(&stream)
                .map(|original| (original, Destination::of(original, &table)));
            async move {
                match destination {
                    Ok((_, Some(to))) => dispatch.handle(stream, to, watcher).await,
                    Ok((original, None)) => tracing::warn!(%original,
                        "captured connection to a virtual address the pod's resolver never \
                         handed out: closed"),
                    Err(error) => tracing::warn!(%error, peer = ?stream.peer_addr().ok(),
                        "connection to the capture listener that no rule redirected (no \
                         original destination): closed"),
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_map_back_to_their_names_and_others_stay_ips() {
        let table = VirtualAddresses::new(Default::default());
        let billing = table.assign("billing").unwrap();
        assert_eq!(
            Destination::of(SocketAddrV4::new(billing, 80), &table),
            Some(Destination::Name {
                name: Arc::from("billing"),
                port: 80
            })
        );
        let outside = SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 443);
        assert_eq!(
            Destination::of(outside, &table),
            Some(Destination::Ip(outside))
        );
        let unknown = SocketAddrV4::new(Ipv4Addr::new(198, 19, 200, 1), 80);
        assert_eq!(Destination::of(unknown, &table), None);
    }
}
