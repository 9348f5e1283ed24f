//! The dashboard's one reader of the sidecars: a background loop that, once a second,
//! finds the sidecars in the state directory, reads every sidecar's `/stats` of the last
//! [`WINDOW_SECS`] (and every [`IDENTITY_EVERY`] rounds its `/metrics`), keeps one tap per
//! sidecar open (`denials.rs`), and stores the result for the browsers to read.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use api::contract::observe::Stats;
use serde::Serialize;
use tokio::task::{JoinHandle, JoinSet};

use super::aggregate::{self, Graph, ServiceMetrics};
use super::denials::{self, Explainer, Ring};
use super::identities::Identity;
use crate::sidecar_admin::{self, Sidecar};

/// The window of the graph and golden metrics, in seconds.
pub const WINDOW_SECS: u32 = 60;
/// Identities (SVID/CA expiry) are read every this many rounds.
const IDENTITY_EVERY: u64 = 5;
/// How long one sidecar may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);

/// What the last round read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct View {
    /// When it was read (RFC 3339).
    pub updated: String,
    /// The window asked for, in seconds.
    pub window_secs: u32,
    /// The service graph.
    pub graph: Option<Graph>,
    /// Golden metrics per service and route.
    pub services: Vec<ServiceMetrics>,
    /// SVID and CA expiry per sidecar.
    pub identities: Vec<Identity>,
    /// Sidecars that did not answer `/stats`, and why (`workload/replica` → error), and
    /// ready files that name no sidecar to ask (`workloads/FILE` → why).
    pub unreachable: BTreeMap<String, String>,
}

/// The dashboard's state, shared by the loop and the HTTP handlers.
pub struct Dashboard {
    /// The mesh's state directory.
    pub state: PathBuf,
    /// The last round's view.
    pub view: RwLock<View>,
    /// Recent denials.
    pub denials: Arc<Ring>,
    /// The sidecars found in the last round.
    pub sidecars: Arc<RwLock<Vec<Sidecar>>>,
}

impl Dashboard {
    /// Starts the loop for the mesh in `state`.
    pub fn start(state: &Path) -> Arc<Dashboard> {
        let dashboard = Arc::new(Dashboard {
            state: state.to_owned(),
            view: RwLock::new(View::default()),
            denials: Arc::new(Ring::default()),
            sidecars: Arc::new(RwLock::new(Vec::new())),
        });
        tokio::spawn(run(dashboard.clone()));
        dashboard
    }

    /// A copy of the last round's view.
    pub fn view(&self) -> View {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn run(d: Arc<Dashboard>) {
    let explainer = Arc::new(Explainer::new(&d.state));
    let mut taps: BTreeMap<SocketAddr, JoinHandle<()>> = BTreeMap::new();
    let mut identities: Vec<Identity> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for round in 0u64.. {
        tick.tick().await;
        let (found, skipped) = sidecar_admin::scan(&d.state);
        *d.sidecars.write().unwrap_or_else(PoisonError::into_inner) = found.clone();
        keep_taps(&mut taps, &found, &d, &explainer);
        let (stats, mut unreachable) = read_stats(&found).await;
        for s in skipped {
            unreachable.insert(format!("workloads/{}", s.file), s.why);
        }
        if round % IDENTITY_EVERY == 0 || identities.len() != found.len() {
            identities = read_identities(&found).await;
        }
        let view = View {
            updated: now(),
            window_secs: WINDOW_SECS,
            graph: Some(aggregate::graph(&found, &stats)),
            services: aggregate::services(&stats),
            identities: identities.clone(),
            unreachable,
        };
        *d.view.write().unwrap_or_else(PoisonError::into_inner) = view;
    }
}

/// One tap per sidecar: new sidecars get one, gone sidecars' are stopped.
fn keep_taps(
    taps: &mut BTreeMap<SocketAddr, JoinHandle<()>>,
    found: &[Sidecar],
    d: &Dashboard,
    explainer: &Arc<Explainer>,
) {
    taps.retain(|addr, task| {
        let keep = found.iter().any(|s| s.admin == *addr);
        if !keep {
            task.abort();
        }
        keep
    });
    for s in found {
        taps.entry(s.admin).or_insert_with(|| {
            tokio::spawn(denials::tap(
                s.clone(),
                d.denials.clone(),
                explainer.clone(),
                d.sidecars.clone(),
            ))
        });
    }
}

/// Every sidecar's `/stats`, asked at once; the ones that did not answer, with why.
async fn read_stats(found: &[Sidecar]) -> (Vec<Stats>, BTreeMap<String, String>) {
    let path = format!("/stats?window={WINDOW_SECS}");
    let mut asks = JoinSet::new();
    for s in found {
        let (s, path) = (s.clone(), path.clone());
        asks.spawn(async move {
            let got = sidecar_admin::get_json_within::<Stats>(s.admin, &path, ASK_TIMEOUT).await;
            (s, got)
        });
    }
    let (mut stats, mut unreachable) = (Vec::new(), BTreeMap::new());
    while let Some(Ok((s, got))) = asks.join_next().await {
        match got {
            Ok(st) => stats.push(st),
            Err(e) => {
                unreachable.insert(format!("{}/{}", s.workload, s.replica), format!("{e:#}"));
            }
        }
    }
    stats.sort_by(|a, b| (&a.workload, a.replica).cmp(&(&b.workload, b.replica)));
    (stats, unreachable)
}

/// Every sidecar's identity expiry, from its `/metrics`.
async fn read_identities(found: &[Sidecar]) -> Vec<Identity> {
    let mut asks = JoinSet::new();
    for s in found {
        let s = s.clone();
        asks.spawn(async move {
            let got = sidecar_admin::get_within(s.admin, "/metrics", ASK_TIMEOUT).await;
            let text = got
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{e:#}"));
            Identity::from_metrics(&s, text.as_deref().map_err(Clone::clone))
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(identity)) = asks.join_next().await {
        all.push(identity);
    }
    all.sort_by(|a, b| (&a.workload, a.replica).cmp(&(&b.workload, b.replica)));
    all
}

/// The current time, RFC 3339.
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
