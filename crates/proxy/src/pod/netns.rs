//! Sockets inside a pod's network namespace, made by a process that stays in its own.
//!
//! A socket belongs to the network namespace of the thread that created it, for its whole
//! life: wherever it is used from later, it binds, listens and connects in that namespace.
//! So one dedicated thread per pod enters the pod's namespace once (`setns(2)`, through
//! nix's safe wrapper) and creates sockets on request; the tokio runtime then uses them
//! from its own threads, which stay in the host's namespace (where the sidecar's outgoing
//! connections to peers, egress and the control plane leave from; with a simulated host,
//! `PodConfig::host_netns`, its peer connections are made in that host's namespace the same
//! way).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

/// The listen backlog of listeners made in a pod (tokio's own default).
const BACKLOG: i32 = 1024;

/// Why a socket could not be made in a pod's network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}")]
    Open {
        /// The namespace path (e.g. `/run/netns/mw0-store-0`).
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `setns` refused (not a network namespace, or no `CAP_SYS_ADMIN`).
    #[error("cannot enter network namespace {path}")]
    Enter {
        /// The namespace path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// Creating, binding or connecting a socket there failed.
    #[error("cannot {what} {addr} in network namespace {path}")]
    Socket {
        /// The namespace path.
        path: PathBuf,
        /// `bind a TCP listener on`, `bind a UDP socket on`, `connect to`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// What the namespace's thread is asked to make.
#[derive(Debug, Clone, Copy)]
enum Kind {
    TcpListener,
    Udp,
    TcpUnconnected,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::TcpListener => "bind a TCP listener on",
            Kind::Udp => "bind a UDP socket on",
            Kind::TcpUnconnected => "connect to",
        }
    }
}

struct Ask {
    kind: Kind,
    addr: SocketAddr,
    reply: oneshot::Sender<io::Result<Socket>>,
}

/// A handle on one pod's network namespace (cheap to clone). Its thread ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct PodNetns {
    path: Arc<Path>,
    asks: mpsc::Sender<Ask>,
}

impl std::fmt::Debug for PodNetns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PodNetns").field(&self.path).finish()
    }
}

impl PodNetns {
    /// Opens the network namespace at `path` (`/run/netns/<name>`, or any `/proc/PID/ns/net`)
    /// and starts its thread, which enters it before this returns.
    pub fn open(path: impl Into<PathBuf>) -> Result<PodNetns, NetnsError> {
        let path: PathBuf = path.into();
        let file = std::fs::File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let (asks, requests) = mpsc::channel::<Ask>();
        let (entered, entering) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("pod-netns".to_owned())
            .spawn(move || {
                let result = setns(&file, CloneFlags::CLONE_NEWNET);
                let ok = result.is_ok();
                let _ = entered.send(result);
                drop(file);
                if ok {
                    serve(requests);
                }
            });
        let opened = spawned.map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let result = entering.recv().unwrap_or(Err(nix::Error::EIO));
        if let Err(source) = result {
            let _ = opened.join();
            return Err(NetnsError::Enter { path, source });
        }
        Ok(PodNetns {
            path: Arc::from(path),
            asks,
        })
    }

    /// The namespace's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A TCP listener on `addr` inside the namespace.
    pub async fn tcp_listener(
        &self,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, NetnsError> {
        let socket = self.make(Kind::TcpListener, addr).await?;
        tokio::net::TcpListener::from_std(socket.into())
            .map_err(|e| self.error(Kind::TcpListener, addr, e))
    }

    /// A UDP socket bound to `addr` inside the namespace.
    pub async fn udp_socket(&self, addr: SocketAddr) -> Result<tokio::net::UdpSocket, NetnsError> {
        let socket = self.make(Kind::Udp, addr).await?;
        tokio::net::UdpSocket::from_std(socket.into()).map_err(|e| self.error(Kind::Udp, addr, e))
    }

    /// A TCP connection to `addr` from inside the namespace (the socket is made there, then
    /// connected by tokio).
    pub async fn connect(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream, NetnsError> {
        let socket = self.make(Kind::TcpUnconnected, addr).await?;
        let fail = |e| self.error(Kind::TcpUnconnected, addr, e);
        let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
        socket.connect(addr).await.map_err(fail)
    }

    async fn make(&self, kind: Kind, addr: SocketAddr) -> Result<Socket, NetnsError> {
        let (reply, answer) = oneshot::channel();
        let gone = || io::Error::other("the namespace's thread has stopped");
        self.asks
            .send(Ask { kind, addr, reply })
            .map_err(|_| self.error(kind, addr, gone()))?;
        match answer.await {
            Ok(made) => made.map_err(|e| self.error(kind, addr, e)),
            Err(_) => Err(self.error(kind, addr, gone())),
        }
    }

    fn error(&self, kind: Kind, addr: SocketAddr, source: io::Error) -> NetnsError {
        NetnsError::Socket {
            path: self.path.to_path_buf(),
            what: kind.what(),
            addr,
            source,
        }
    }
}

/// The namespace thread's loop: makes what is asked until every handle is gone.
fn serve(requests: mpsc::Receiver<Ask>) {
    for Ask { kind, addr, reply } in requests {
        let _ = reply.send(make(kind, addr));
    }
}

/// Makes one non-blocking socket in this thread's namespace.
fn make(kind: Kind, addr: SocketAddr) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let socket = match kind {
        Kind::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
        Kind::TcpListener | Kind::TcpUnconnected => {
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?
        }
    };
    socket.set_nonblocking(true)?;
    match kind {
        Kind::TcpListener => {
            socket.set_reuse_address(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
        }
        Kind::Udp => socket.bind(&addr.into())?,
        Kind::TcpUnconnected => socket.set_tcp_nodelay(true)?,
    }
    Ok(socket)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_named_in_the_error() {
        let error = PodNetns::open("/run/netns/meshwork-no-such-namespace").unwrap_err();
        assert!(
            error.to_string().contains("meshwork-no-such-namespace"),
            "{error}"
        );
    }

    /// The process's own namespace (always there, entering it needs no privilege beyond
    /// what `setns` on one's own namespace needs: skip if refused).
    #[tokio::test]
    async fn sockets_made_in_a_namespace_work_from_tokio() {
        let netns = match PodNetns::open("/proc/self/ns/net") {
            Ok(netns) => netns,
            Err(error) => {
                eprintln!("skipped: cannot enter our own network namespace: {error}");
                return;
            }
        };
        let listener = netns
            .tcp_listener(([127, 0, 0, 1], 0).into())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = tokio::join!(netns.connect(addr), listener.accept());
        let (connected, accepted) = (connected.unwrap(), accepted.unwrap().0);
        assert_eq!(
            connected.local_addr().unwrap(),
            accepted.peer_addr().unwrap()
        );
        let udp = netns.udp_socket(([127, 0, 0, 1], 0).into()).await.unwrap();
        assert!(udp.local_addr().unwrap().port() > 0);
        let refused = netns.connect(([127, 0, 0, 1], 1).into()).await.unwrap_err();
        assert!(
            refused.to_string().contains("connect to 127.0.0.1:1"),
            "{refused}"
        );
    }
}
