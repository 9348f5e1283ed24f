//! The sidecars of a running mesh, found through their ready files, and the observation
//! endpoints of their admin listeners (`api::contract::observe`): `GET /stats`, `/tap` and
//! `/decisions`, plain HTTP on loopback. Shared by `stat`, `top`, `edges`, `tap` and
//! `policy replay|record`.
//!
//! Must import only `state` (see `layering.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use api::contract::exchange::Exchange;
use api::duration::HumanDuration;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::state::{ReadyFile, StateDir, workload_of};

/// How long one admin request may take before the sidecar counts as unreachable.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Requests of the JSON endpoints, as `Host: localhost` (the admin listener answers loopback hosts only).
const EXCHANGE: Exchange = Exchange::new("localhost");

/// One running sidecar, from its ready file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// The workload it fronts.
    pub workload: String,
    /// Its replica (0 for a single-copy workload).
    pub replica: u16,
    /// The identity it holds.
    pub spiffe_id: String,
    /// Its admin listener.
    pub admin: SocketAddr,
    /// How to name it to a person: `billing-1` when the workload has replicas (as `up`'s
    /// log prefixes do), else `store`.
    pub label: String,
}

/// A ready file that names no sidecar this CLI can ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file's name in `<state>/workloads/` (`billing.1.json`).
    pub file: String,
    /// Why: no admin listener, or it does not parse.
    pub why: String,
}

/// What the ready files in `<state>/workloads/` say: the sidecars with an admin listener,
/// sorted by workload and replica, and the files that name none. Prints nothing and never
/// fails (a missing directory is no sidecar), for the dashboard's background loop. A file
/// gone while being read is a sidecar that just exited (it takes its file along): not
/// skipped, just absent; the proxy's temporary siblings (`*.json.tmp.PID`) are ignored.
pub fn scan(state_dir: &Path) -> (Vec<Sidecar>, Vec<Skipped>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let entries = std::fs::read_dir(state_dir.join("workloads"));
    for entry in entries.into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(stem) = file.strip_suffix(".json") else {
            continue;
        };
        match read_sidecar(stem, &path) {
            Ok(Some(sidecar)) => found.push(sidecar),
            Ok(None) => {}
            Err(why) => skipped.push(Skipped {
                file: file.to_owned(),
                why,
            }),
        }
    }
    found.sort();
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    (labelled(found), skipped)
}

/// Names each sidecar (`billing-1` among replicas, `store` alone).
fn labelled(found: Vec<(String, u16, String, SocketAddr)>) -> Vec<Sidecar> {
    found
        .iter()
        .map(|(workload, replica, spiffe_id, admin)| {
            let copies = found.iter().filter(|f| f.0 == *workload).count();
            Sidecar {
                label: match copies {
                    1 => workload.clone(),
                    _ => format!("{workload}-{replica}"),
                },
                workload: workload.clone(),
                replica: *replica,
                spiffe_id: spiffe_id.clone(),
                admin: *admin,
            }
        })
        .collect()
}

/// The sidecars of the mesh running in `state_dir` that have an admin listener, sorted by
/// workload and replica (the ready files that name none are said on stderr); an error when
/// `up` is gone or no sidecar serves.
pub fn discover(state_dir: &Path) -> anyhow::Result<Vec<Sidecar>> {
    let (sidecars, skipped) = discover_quietly(state_dir)?;
    for s in &skipped {
        eprintln!("meshwork: workloads/{}: {}; skipped", s.file, s.why);
    }
    Ok(sidecars)
}

/// Every sidecar of the mesh running in `state_dir`, for what must see all of them
/// (`policy replay|record`: a partial record would report fewer changes than there are):
/// an error naming the ready files that name no sidecar it can ask.
pub fn discover_all(state_dir: &Path) -> anyhow::Result<Vec<Sidecar>> {
    let (sidecars, skipped) = discover_quietly(state_dir)?;
    if !skipped.is_empty() {
        let named: Vec<String> = skipped
            .iter()
            .map(|s| format!("workloads/{}: {}", s.file, s.why))
            .collect();
        bail!(
            "the record would miss sidecars that cannot be asked ({})",
            named.join("; ")
        );
    }
    Ok(sidecars)
}

/// [`scan`] of a live `up`'s state directory, printing nothing (`top` shows what was
/// skipped inside its frame); an error when `up` is gone or no sidecar serves.
pub fn discover_quietly(state_dir: &Path) -> anyhow::Result<(Vec<Sidecar>, Vec<Skipped>)> {
    let state = StateDir::open(state_dir)?;
    if let Some(pid) = state.dead_owner() {
        bail!(
            "the `meshwork up` that ran in {} (pid {pid}) is gone, and its sidecars with it",
            state.path().display()
        );
    }
    let (sidecars, skipped) = scan(state.path());
    if sidecars.is_empty() && skipped.is_empty() {
        bail!(
            "no sidecar with an admin listener is running under {} (is `meshwork up` running \
             with this state directory? pass --state-dir DIR or set MESHWORK_STATE_DIR)",
            state.path().display()
        );
    }
    Ok((sidecars, skipped))
}

/// Workload, replica, SPIFFE ID and admin address from the ready file of `stem` at `path`;
/// `Ok(None)` when the file is gone (a sidecar that has just exited takes it along), `Err`
/// saying why for a file that names no sidecar with an admin listener.
fn read_sidecar(
    stem: &str,
    path: &Path,
) -> Result<Option<(String, u16, String, SocketAddr)>, String> {
    let replica = match stem.split_once('.') {
        Some((_, n)) => n
            .parse()
            .map_err(|_| format!("{n:?} is no replica number"))?,
        None => 0,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("unreadable: {e}")),
    };
    let ready: ReadyFile =
        serde_json::from_str(&text).map_err(|e| format!("not a ready file: {e}"))?;
    let Some(admin) = ready.admin else {
        return Err("the sidecar runs without an admin listener".to_owned());
    };
    Ok(Some((
        workload_of(stem).to_owned(),
        replica,
        ready.spiffe_id,
        admin,
    )))
}

/// The sidecars of `workload` (every replica); an error naming the running ones if none.
pub fn of_workload(sidecars: Vec<Sidecar>, workload: &str) -> anyhow::Result<Vec<Sidecar>> {
    let mut names: Vec<String> = sidecars.iter().map(|s| s.workload.clone()).collect();
    names.dedup();
    let chosen: Vec<Sidecar> = sidecars
        .into_iter()
        .filter(|s| s.workload == workload)
        .collect();
    if chosen.is_empty() {
        bail!(
            "workload {workload:?} is not running; running workloads: {}",
            names.join(", ")
        );
    }
    Ok(chosen)
}

/// The `window=` of `/stats` and `/decisions`: whole seconds, 1 to 600 (the sidecar's ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window(u16);

impl Window {
    /// The window in seconds.
    pub fn secs(self) -> u16 {
        self.0
    }
}

impl FromStr for Window {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Window> {
        let duration = HumanDuration::from_str(s)?.get();
        let secs = duration.as_secs();
        if duration.subsec_nanos() != 0 || !(1..=600).contains(&secs) {
            bail!(
                "window {s:?}: sidecars keep whole seconds from 1s to 10m (600s); e.g. 10s, 1m, 10m"
            );
        }
        // invariant: 1..=600 fits in a u16.
        Ok(Window(u16::try_from(secs).unwrap_or(600)))
    }
}

/// A query string (`?a=b&c=d`, values percent-encoded), empty without parameters.
pub fn query(params: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect();
    match pairs.is_empty() {
        true => String::new(),
        false => format!("?{}", pairs.join("&")),
    }
}

/// A runtime for one command (the CLI is synchronous around it).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `GET target` on every sidecar at once; each answer parsed as JSON, in `sidecars`' order.
pub async fn gather<T: DeserializeOwned>(
    sidecars: &[Sidecar],
    target: &str,
) -> Vec<(Sidecar, anyhow::Result<T>)> {
    let asks = sidecars.iter().map(|sidecar| async move {
        let answer = get_json(sidecar.admin, target).await.with_context(|| {
            format!(
                "asking the sidecar of {} at {}",
                sidecar.label, sidecar.admin
            )
        });
        (sidecar.clone(), answer)
    });
    futures_util::future::join_all(asks).await
}

/// `GET target` on one admin listener, parsed as JSON, within [`ASK_TIMEOUT`].
async fn get_json<T: DeserializeOwned>(admin: SocketAddr, target: &str) -> anyhow::Result<T> {
    get_json_within(admin, target, ASK_TIMEOUT).await
}

/// `GET target` on one admin listener, parsed as JSON, within `timeout`.
pub async fn get_json_within<T: DeserializeOwned>(
    admin: SocketAddr,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<T> {
    let body = get_within(admin, target, timeout).await?;
    serde_json::from_slice(&body).with_context(|| format!("parsing the answer to {target}"))
}

/// `GET target` on one admin listener: the whole 2xx answer within `timeout` (the
/// contract's one exchange: answers capped at `MAX_ANSWER_BYTES`, the connection dropped
/// with the future).
pub async fn get_within(
    admin: SocketAddr,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<Bytes> {
    let ask = async {
        let stream = tokio::net::TcpStream::connect(admin).await?;
        let body = EXCHANGE
            .send(stream, hyper::Method::GET, target, None)
            .await
            .with_context(|| format!("GET {target}"))?;
        anyhow::Ok(body)
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| anyhow::anyhow!("GET {target}: no answer within {timeout:?}"))?
}

/// How much of a refusal's body is quoted.
const MAX_REFUSAL: usize = 4096;

/// Sends `GET target` for a streamed answer; the response, once its status says success and
/// within [`ASK_TIMEOUT`].
async fn get(admin: SocketAddr, target: &str) -> anyhow::Result<hyper::Response<Incoming>> {
    let head = async {
        let stream = tokio::net::TcpStream::connect(admin).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let request = hyper::Request::get(target)
            .header(hyper::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())?;
        anyhow::Ok(sender.send_request(request).await?)
    };
    let response = tokio::time::timeout(ASK_TIMEOUT, head)
        .await
        .map_err(|_| anyhow::anyhow!("{target}: no answer within {ASK_TIMEOUT:?}"))??;
    let status = response.status();
    if !status.is_success() {
        let body = http_body_util::Limited::new(response.into_body(), MAX_REFUSAL)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        bail!(
            "{target}: sidecar answered {status}: {} (is it a meshwork without the \
             observation endpoints of issue 13?)",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(response)
}

/// A line of a streamed answer, or the end of the stream, from the sidecar at `index`.
#[derive(Debug)]
pub enum StreamLine {
    /// One line, without its newline.
    Line(usize, String),
    /// The stream ended: `Ok` when the sidecar closed it, else why.
    End(usize, anyhow::Result<()>),
}

/// Streams `GET target` from `admin` line by line into `lines` until the sidecar closes it
/// or the receiver is gone.
pub async fn stream_lines(
    index: usize,
    admin: SocketAddr,
    target: String,
    lines: mpsc::Sender<StreamLine>,
) {
    let result = stream(index, admin, &target, &lines).await;
    let _ = lines.send(StreamLine::End(index, result)).await;
}

async fn stream(
    index: usize,
    admin: SocketAddr,
    target: &str,
    lines: &mpsc::Sender<StreamLine>,
) -> anyhow::Result<()> {
    let mut body = get(admin, target).await?.into_body();
    let mut split = Ndjson::default();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        for text in split.push(&data) {
            if lines.send(StreamLine::Line(index, text)).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A line of a streamed answer longer than this is dropped (a tap event is a few hundred
/// bytes): a peer cannot make the reader buffer without bound.
const MAX_LINE: usize = 64 * 1024;

/// Splits a stream of bytes into its non-empty lines, dropping lines over [`MAX_LINE`].
#[derive(Default)]
struct Ndjson {
    pending: Vec<u8>,
    /// Inside an over-long line: drop up to its newline.
    skipping: bool,
}

impl Ndjson {
    /// The lines `data` completes, without their newlines.
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            let (part, ends) = match chunk.strip_suffix(b"\n") {
                Some(part) => (part, true),
                None => (chunk, false),
            };
            if !self.skipping {
                self.pending.extend_from_slice(part);
                if self.pending.len() > MAX_LINE {
                    self.pending.clear();
                    self.skipping = true;
                }
            }
            if ends {
                let text = String::from_utf8_lossy(&self.pending).trim_end().to_owned();
                if !self.skipping && !text.is_empty() {
                    out.push(text);
                }
                self.pending.clear();
                self.skipping = false;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
