//! `meshwork fanout` (hidden; `bench/fanout` runs it): N simulated sidecars long-poll the
//! control plane's snapshot route, a policy change is made, and the tool reports how long
//! the change took to reach all of them, and what the control plane spent on it.
//!
//! Each simulated sidecar does what `proxy::discovery` does on the wire: one connection
//! per call on the control socket, `GET /v1/snapshot?since=V`, again at once with the new
//! version. It decodes only the version (a real sidecar also compiles the policies; that
//! is its own CPU, not the control plane's).
//!
//! A round: write `fanout-probe.yaml` (an `AuthorizationPolicy` whose content changes each
//! round) into the control plane's resource directory; its directory poll (≤ 1 s) applies
//! it and publishes a new snapshot. Fan-out of sidecar i = when it received the new version
//! − when the first sidecar did (the publish, within one answer's time). The poll delay
//! (first receipt − file write) is reported apart, not hidden in the curve.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::contract::SnapshotSince;
use api::contract::client::{Call, Client, NoBody, UnixConnect};
use hyper::http::Method;
use serde::{Deserialize, Serialize};

mod proc_stat;

/// The sidecars' snapshot long poll, answered with only the version decoded: the same
/// route, client and transport as [`SnapshotSince`]; decoding the rest is the sidecar's
/// own CPU, which on this one machine would compete with the control plane measured.
struct SnapshotVersion(u64);

impl Call for SnapshotVersion {
    const METHOD: Method = SnapshotSince::METHOD;
    const LONG_POLL: bool = SnapshotSince::LONG_POLL;
    type Request = NoBody;
    type Response = VersionOnly;
    fn path(&self) -> std::borrow::Cow<'static, str> {
        SnapshotSince(self.0).path()
    }
}

#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// The control plane's contract socket; repeat it for each replica's (sidecar i polls
    /// socket i mod the number given).
    #[arg(long, required = true)]
    socket: Vec<PathBuf>,
    /// How many sidecars to simulate.
    #[arg(long)]
    sidecars: usize,
    /// The control plane's resource directory (the probe policy is written there).
    #[arg(long)]
    resources: PathBuf,
    /// The service the probe policy targets (must exist in the resources).
    #[arg(long, default_value = "billing")]
    target_service: String,
    /// The mesh's trust domain (for the probe policy's SPIFFE ID prefix).
    #[arg(long, default_value = "meshwork.local")]
    trust_domain: String,
    /// Measured changes (after one warm-up change).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The control plane's pid, to report its CPU and memory; repeat it for each replica
    /// (their sum is reported).
    #[arg(long)]
    control_pid: Vec<u32>,
    /// An etcd member's pid (repeatable), to report the store's CPU and memory apart.
    #[arg(long)]
    etcd_pid: Vec<u32>,
    /// Seconds to measure the attached-but-idle control plane (the 25 s poll refresh).
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Write the result as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One simulated sidecar's newest version and when it arrived.
#[derive(Default)]
struct Slot {
    version: AtomicU64,
    /// Nanoseconds since the run's start.
    at: AtomicU64,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    sidecars: usize,
    rounds: Vec<Round>,
    fanout_ms: Quantiles,
    poll_delay_ms: Quantiles,
    missed: usize,
    errors: usize,
    replicas: usize,
    control: Option<proc_stat::ControlCost>,
    etcd: Option<proc_stat::StoreCost>,
}

#[derive(Debug, Serialize)]
struct Round {
    version: u64,
    poll_delay_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    missed: usize,
}

#[derive(Debug, Serialize)]
struct Quantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

impl Quantiles {
    fn of(mut values: Vec<f64>) -> Quantiles {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((values.len() as f64 - 1.0) * q).round() as usize;
            values.get(i).copied().unwrap_or(f64::NAN)
        };
        Quantiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// Runs the measurement.
pub fn run(args: FanoutArgs) -> anyhow::Result<std::process::ExitCode> {
    proc_stat::raise_open_files(args.sidecars)?;
    for &pid in &args.control_pid {
        proc_stat::check_control_limit(pid, args.sidecars.div_ceil(args.socket.len()))?;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let report = runtime.block_on(measure(&args))?;
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(match report.missed {
        0 => std::process::ExitCode::SUCCESS,
        _ => std::process::ExitCode::FAILURE,
    })
}

async fn measure(args: &FanoutArgs) -> anyhow::Result<FanoutReport> {
    let start = Instant::now();
    let clients: Vec<Arc<Client<UnixConnect>>> = args
        .socket
        .iter()
        .map(|s| Arc::new(Client::new(UnixConnect(s.clone()))))
        .collect();
    let first = clients[0].call(&SnapshotVersion(0), &NoBody).await?.version;
    let sample = || proc_stat::Samples::take(&args.control_pid, &args.etcd_pid);
    let before = sample()?;
    let slots: Arc<Vec<Slot>> = Arc::new((0..args.sidecars).map(|_| Slot::default()).collect());
    let errors = Arc::new(AtomicUsize::new(0));
    for i in 0..args.sidecars {
        let client = Arc::clone(&clients[i % clients.len()]);
        let (slots, errors) = (Arc::clone(&slots), Arc::clone(&errors));
        tokio::spawn(async move { poll(&client, &slots[i], first, start, &errors).await });
    }
    // Warm-up: every sidecar has connected and re-polls once it has this change.
    let warm = change(args, 0, &slots, start).await?;
    anyhow::ensure!(warm.missed == 0, "{} sidecars never attached", warm.missed);
    let attached = sample()?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle = sample()?;
    let mut rounds = Vec::new();
    let (mut fanout, mut delays) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let (r, spread) = measure_round(args, round, &slots, start).await?;
        delays.push(r.poll_delay_ms);
        fanout.extend(spread);
        rounds.push(r);
    }
    let after = sample()?;
    let samples = [&before, &attached, &idle, &after];
    Ok(FanoutReport {
        sidecars: args.sidecars,
        missed: rounds.iter().map(|r| r.missed).sum(),
        rounds,
        fanout_ms: Quantiles::of(fanout),
        poll_delay_ms: Quantiles::of(delays),
        errors: errors.load(Ordering::Relaxed),
        replicas: args.socket.len(),
        control: proc_stat::Samples::control_cost(args.sidecars, args.rounds, samples),
        etcd: proc_stat::Samples::store_cost(args.rounds, samples),
    })
}

/// One measured change: its summary and every sidecar's fan-out (ms).
async fn measure_round(
    args: &FanoutArgs,
    round: usize,
    slots: &[Slot],
    start: Instant,
) -> anyhow::Result<(Round, Vec<f64>)> {
    // Each round's file must differ in mtime from the last for the directory poll.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = change(args, round, slots, start).await?;
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let spread: Vec<f64> = seen
        .arrivals
        .iter()
        .map(|&at| ms(at - seen.first))
        .collect();
    let q = Quantiles::of(spread.clone());
    let r = Round {
        version: seen.version,
        poll_delay_ms: ms(seen.first.saturating_sub(seen.written)),
        p50_ms: q.p50,
        p99_ms: q.p99,
        max_ms: q.max,
        missed: seen.missed,
    };
    Ok((r, spread))
}

/// What one change looked like from the sidecars.
struct Seen {
    version: u64,
    written: u64,
    first: u64,
    arrivals: Vec<u64>,
    missed: usize,
}

/// Writes round `round`'s probe policy and waits (up to 10 s) until every sidecar has a
/// newer version than all had before.
async fn change(
    args: &FanoutArgs,
    round: usize,
    slots: &[Slot],
    start: Instant,
) -> anyhow::Result<Seen> {
    let before = slots
        .iter()
        .map(|s| s.version.load(Ordering::Acquire))
        .max()
        .unwrap_or(0);
    let written = start.elapsed().as_nanos() as u64;
    write_probe(args, round)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let behind = slots
            .iter()
            .filter(|s| s.version.load(Ordering::Acquire) <= before)
            .count();
        if behind == 0 || Instant::now() > deadline {
            let arrivals: Vec<u64> = slots
                .iter()
                .filter(|s| s.version.load(Ordering::Acquire) > before)
                .map(|s| s.at.load(Ordering::Acquire))
                .collect();
            let version = slots
                .iter()
                .map(|s| s.version.load(Ordering::Acquire))
                .max()
                .unwrap_or(0);
            return Ok(Seen {
                version,
                written,
                first: arrivals.iter().copied().min().unwrap_or(written),
                arrivals,
                missed: behind,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn write_probe(args: &FanoutArgs, round: usize) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `meshwork fanout`: a change per round for the fan-out measurement.\n\
         apiVersion: meshwork.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: fanout-probe\n\
         spec:\n  targetService: {svc}\n  action: DENY\n  rules:\n    - from:\n\
         \x20       - spiffeIdPrefix: spiffe://{td}/ns/fanout-probe-{round}/\n",
        svc = args.target_service,
        td = args.trust_domain,
    );
    let path = probe_path(&args.resources);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))
}

/// Where the probe policy goes (`bench/fanout` removes it afterwards).
pub fn probe_path(resources: &Path) -> PathBuf {
    resources.join("fanout-probe.yaml")
}

/// One simulated sidecar: long polls forever, recording each new version's arrival.
async fn poll(
    client: &Client<UnixConnect>,
    slot: &Slot,
    mut since: u64,
    start: Instant,
    errors: &AtomicUsize,
) {
    loop {
        match client.call(&SnapshotVersion(since), &NoBody).await {
            Ok(VersionOnly { version }) if version > since => {
                slot.at
                    .store(start.elapsed().as_nanos() as u64, Ordering::Release);
                slot.version.store(version, Ordering::Release);
                since = version;
            }
            Ok(_) => {}
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
