//! A scripted HTTP upstream for resiliency tests: a real server on a loopback TCP port
//! whose next answers a test decides — answer, fail with a status, stall, reset the
//! connection, or die in the middle of the body — and which counts what it saw.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use testkit::upstream::{Behaviour, Upstream};
//! let billing = Upstream::start("billing-0").await?;
//! billing.fail_next(2, 503); // the next two requests get a 503
//! billing.then(1, Behaviour::Reset); // the third is answered by a TCP reset
//! // … point a proxy at billing.addr() and send `x-request-id: r1` …
//! billing.wait_for_requests(4).await;
//! assert_eq!(billing.seen("r1"), 4); // the app saw that request four times
//! # Ok(()) }
//! ```
//!
//! # Script
//! Each request, once read whole (head and body), takes the next [`Behaviour`] from a
//! queue ([`Upstream::then`] and its shorthands append to it); with the queue empty it gets
//! the standing behaviour ([`Upstream::always`], [`Behaviour::Answer`] unless changed).
//! Requests are scripted in the order they finish arriving, across all connections.
//!
//! # Counters
//! A request is *seen* once its head and body have been read, before its behaviour runs:
//! a request that is then reset or stalled counts, one cut off by the client before its
//! body ended does not. [`Upstream::seen`] counts by the [`REQUEST_ID`] header (the test
//! sets it; a retry of the same request carries the same id), [`Upstream::requests`]
//! counts everything, [`Upstream::log`] lists each request with the behaviour it got.
//! Connections are counted when accepted ([`Upstream::connections`]); a proxy's readiness
//! probe (connect, then close) is a connection without requests.
//!
//! # Wire
//! HTTP/1.1 is written by hand on the socket (`upstream/h1.rs`), so each fault is
//! byte-exact: keep-alive after answers, `content-length` request bodies and chunked ones.
//! HTTP/2 with prior knowledge (h2c) is detected on the same port by its preface and
//! served by hyper (`upstream/h2.rs`), where a reset or a death mid-body is a stream reset
//! (`RST_STREAM`), the connection living on. See [`Behaviour`] for each fault on each wire.
//!
//! Dropping the [`Upstream`] closes the listener and every connection.

mod h1;
mod h2;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The header whose value keys [`Upstream::seen`]: the test gives each logical request an
/// id, and every attempt at it (a retry) carries the same one.
pub const REQUEST_ID: &str = "x-request-id";

/// The response header naming the upstream that answered (its [`Upstream::start`] name),
/// so a test behind a balancer can tell instances apart.
pub const UPSTREAM_HEADER: &str = "x-upstream";

/// The body length of the faults that send a head and then only part of the body
/// ([`Behaviour::StallBody`], [`Behaviour::DieMidBody`]): `content-length` announces this
/// many bytes, [`PARTIAL_BODY`] of them are sent.
pub const ANNOUNCED_BODY: usize = 64;

/// How many body bytes a mid-body fault sends before stalling or dying.
pub const PARTIAL_BODY: usize = 16;

/// What the upstream does with one request (read whole first, and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// `200` with a JSON body describing what arrived: `{"upstream", "method", "path",
    /// "headers" (how many header fields), "request_id", "seen" (times this id was seen,
    /// this attempt included), "body_bytes"}`; headers [`UPSTREAM_HEADER`] and `x-seen`.
    /// The connection stays open for the next request (unless the client asked to close).
    Answer,
    /// This status (e.g. 503) with the same JSON plus `"error": "scripted"`; keep-alive.
    Status(u16),
    /// Never answers: holds the exchange until the client gives up, or until
    /// [`Upstream::release_stalls`] or the drop of the upstream close it (FIN; on h2 the
    /// stream is reset). Counted in [`Upstream::stalled`] while held.
    Stall,
    /// Sends a `200` head announcing [`ANNOUNCED_BODY`] bytes and [`PARTIAL_BODY`] of
    /// them, then nothing more, held like [`Behaviour::Stall`].
    StallBody,
    /// Resets the connection without answering: `SO_LINGER` 0 and close, so the client
    /// gets a TCP RST (`ECONNRESET`). On h2: `RST_STREAM` for this stream only.
    Reset,
    /// Sends a `200` head announcing [`ANNOUNCED_BODY`] bytes and [`PARTIAL_BODY`] of
    /// them, then closes the connection (FIN): the response is cut short. On h2: the
    /// partial body, then `RST_STREAM`.
    DieMidBody,
}

/// One request the upstream saw, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target's path (`/charges`).
    pub path: String,
    /// The [`REQUEST_ID`] header, if the request had one.
    pub request_id: Option<String>,
    /// Which connection (counted from 0, in accept order) carried it.
    pub connection: usize,
    /// What the upstream did with it.
    pub behaviour: Behaviour,
}

/// What the test scripted and what the server saw; shared with every connection task.
struct Shared {
    name: String,
    script: Mutex<Script>,
    seen: Mutex<Seen>,
    /// The number of requests seen, for [`Upstream::wait_for_requests`].
    requests: watch::Sender<usize>,
    /// Bumped by [`Upstream::release_stalls`]: held exchanges end when it changes.
    release: watch::Sender<u64>,
    /// Exchanges held right now ([`Behaviour::Stall`], [`Behaviour::StallBody`]).
    stalled: watch::Sender<usize>,
}

struct Script {
    queue: VecDeque<Behaviour>,
    standing: Behaviour,
}

#[derive(Default)]
struct Seen {
    log: Vec<SeenRequest>,
    by_id: BTreeMap<String, usize>,
    connections: usize,
}

/// What a connection task learns when it hands a request over: what to do with it and how
/// many times its id has been seen (this time included).
struct Verdict {
    behaviour: Behaviour,
    seen: usize,
}

/// The parts of a request the upstream records and answers about.
struct Arrived {
    method: String,
    path: String,
    request_id: Option<String>,
    headers: usize,
    body_bytes: usize,
    connection: usize,
}

impl Shared {
    fn lock_script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request read whole and takes its behaviour from the script.
    fn arrive(&self, request: &Arrived) -> Verdict {
        let behaviour = {
            let mut script = self.lock_script();
            let standing = script.standing;
            script.queue.pop_front().unwrap_or(standing)
        };
        let seen = {
            let mut seen = self.lock_seen();
            let times = match &request.request_id {
                Some(id) => {
                    let n = seen.by_id.entry(id.clone()).or_insert(0);
                    *n += 1;
                    *n
                }
                None => 1,
            };
            seen.log.push(SeenRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                request_id: request.request_id.clone(),
                connection: request.connection,
                behaviour,
            });
            times
        };
        self.requests.send_modify(|n| *n += 1);
        Verdict { behaviour, seen }
    }

    /// A new connection's index.
    fn connected(&self) -> usize {
        let mut seen = self.lock_seen();
        seen.connections += 1;
        seen.connections - 1
    }

    /// The JSON body (and status) of an answer to `request`.
    fn answer_body(&self, request: &Arrived, verdict: &Verdict) -> serde_json::Value {
        let mut body = serde_json::json!({
            "upstream": self.name,
            "method": request.method,
            "path": request.path,
            "headers": request.headers,
            "request_id": request.request_id,
            "seen": verdict.seen,
            "body_bytes": request.body_bytes,
        });
        if let Behaviour::Status(_) = verdict.behaviour {
            body["error"] = serde_json::json!("scripted");
        }
        body
    }

    /// Resolves once [`Upstream::release_stalls`] is called (or the upstream is dropped),
    /// counting the exchange in [`Upstream::stalled`] meanwhile.
    async fn hold(&self) {
        let mut release = self.release.subscribe();
        let _held = Held::new(&self.stalled);
        let _ = release.changed().await;
    }
}

/// One exchange counted in [`Upstream::stalled`] for as long as it lives (an exchange
/// dropped because its client went away stops counting too).
struct Held<'a>(&'a watch::Sender<usize>);

impl<'a> Held<'a> {
    fn new(counter: &'a watch::Sender<usize>) -> Held<'a> {
        counter.send_modify(|n| *n += 1);
        Held(counter)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A running scripted upstream on `127.0.0.1`; see the module documentation.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Binds `127.0.0.1:0` and serves; `name` is what its answers carry in
    /// [`UPSTREAM_HEADER`] and their JSON `upstream`.
    pub async fn start(name: &str) -> std::io::Result<Upstream> {
        Upstream::start_on(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (e.g. the app port a sidecar already points at) and serves.
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            script: Mutex::new(Script {
                queue: VecDeque::new(),
                standing: Behaviour::Answer,
            }),
            seen: Mutex::new(Seen::default()),
            requests: watch::Sender::new(0),
            release: watch::Sender::new(0),
            stalled: watch::Sender::new(0),
        });
        let task = tokio::spawn(accept(listener, Arc::clone(&shared)));
        Ok(Upstream { addr, shared, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Appends `n` requests that get `behaviour` to the script's queue (after whatever is
    /// queued already).
    pub fn then(&self, n: usize, behaviour: Behaviour) -> &Upstream {
        let mut script = self.shared.lock_script();
        script.queue.extend(std::iter::repeat_n(behaviour, n));
        self
    }

    /// The next `n` requests (after those already queued) get `status`.
    pub fn fail_next(&self, n: usize, status: u16) -> &Upstream {
        self.then(n, Behaviour::Status(status))
    }

    /// The next `n` requests are held without an answer ([`Behaviour::Stall`]).
    pub fn stall_next(&self, n: usize) -> &Upstream {
        self.then(n, Behaviour::Stall)
    }

    /// The next `n` requests are answered by a connection reset ([`Behaviour::Reset`]).
    pub fn reset_next(&self, n: usize) -> &Upstream {
        self.then(n, Behaviour::Reset)
    }

    /// The next `n` responses die after part of their body ([`Behaviour::DieMidBody`]).
    pub fn die_mid_body_next(&self, n: usize) -> &Upstream {
        self.then(n, Behaviour::DieMidBody)
    }

    /// What requests get once the queue is empty (initially [`Behaviour::Answer`]), e.g.
    /// `Status(503)` for a failure storm, `Stall` for a hung replica.
    pub fn always(&self, behaviour: Behaviour) -> &Upstream {
        self.shared.lock_script().standing = behaviour;
        self
    }

    /// Empties the queue and makes every later request answered normally.
    pub fn heal(&self) -> &Upstream {
        let mut script = self.shared.lock_script();
        script.queue.clear();
        script.standing = Behaviour::Answer;
        self
    }

    /// Ends every exchange held right now by [`Behaviour::Stall`] or
    /// [`Behaviour::StallBody`]: its connection is closed (h2: its stream is reset).
    pub fn release_stalls(&self) {
        self.shared
            .release
            .send_modify(|generation| *generation += 1);
    }

    /// How many times a request with [`REQUEST_ID`] `id` was seen.
    pub fn seen(&self, id: &str) -> usize {
        self.shared.lock_seen().by_id.get(id).copied().unwrap_or(0)
    }

    /// How many requests were seen, with or without an id.
    pub fn requests(&self) -> usize {
        *self.shared.requests.borrow()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.shared.lock_seen().connections
    }

    /// How many exchanges are held by a stall right now.
    pub fn stalled(&self) -> usize {
        *self.shared.stalled.borrow()
    }

    /// Every request seen, in order, with what it got.
    pub fn log(&self) -> Vec<SeenRequest> {
        self.shared.lock_seen().log.clone()
    }

    /// Resolves once at least `n` requests have been seen (bound it with a timeout in the
    /// test: this is synchronisation, not a sleep).
    pub async fn wait_for_requests(&self, n: usize) {
        let mut requests = self.shared.requests.subscribe();
        let _ = requests.wait_for(|seen| *seen >= n).await;
    }

    /// Resolves once at least `n` exchanges are held by a stall.
    pub async fn wait_for_stalled(&self, n: usize) {
        let mut stalled = self.shared.stalled.subscribe();
        let _ = stalled.wait_for(|held| *held >= n).await;
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task
        // (their sockets close with them).
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let index = shared.connected();
                connections.spawn(serve(stream, index, Arc::clone(&shared)));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The HTTP/2 connection preface's first line, by which h2c is told from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

async fn serve(stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    if is_h2c(&stream).await {
        h2::serve(stream, connection, shared).await;
    } else {
        h1::serve(stream, connection, shared).await;
    }
}

/// Whether the client opens with the HTTP/2 preface. Peeks (consumes nothing) until the
/// first bytes tell; a client that closes before sending anything is not h2c.
async fn is_h2c(stream: &TcpStream) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    // A client writes its preface (or its request line) in one go; a few more peeks cover
    // a preface split across segments without spinning forever on a silent client.
    for _ in 0..8 {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) if n >= buf.len() || !H2_PREFACE.starts_with(&buf[..n]) => {
                return buf[..n] == H2_PREFACE[..n] && n >= buf.len();
            }
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    false
}
