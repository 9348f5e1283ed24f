//! Recent denials: the dashboard keeps one `GET /tap?denied=true` stream open per sidecar
//! (the only tapper it adds, whatever the number of browsers) and the last [`RING`] denials
//! in memory, each explained as it arrives: re-decided with the policies the running mesh
//! serves (its control plane's snapshot), which names the policy, rule and matcher.
//!
//! The tap carries route templates, never raw paths: a denial is re-decided on its route
//! template (`/charges/{id}` as the path `/charges/{id}`), which is what the sidecar's own
//! decision was about only for routes without parameters; the explanation says so.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use api::contract::observe::{Decision, Direction, TapEvent};
use http_body_util::BodyExt;
use identity::SpiffeId;
use policy::{DecisionReason, Engine, NormalizedPath, Request};
use serde::Serialize;

use super::sidecars::{self, Sidecar};
use crate::policy_cmd::RunningPolicies;

/// How many denials the dashboard remembers.
pub const RING: usize = 50;
/// A tap line longer than this is dropped (the sidecar writes a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;
/// How long a fetched copy of the mesh's policies is used for explanations.
const POLICIES_FRESH: Duration = Duration::from_secs(2);

/// A request some policy refused, as a sidecar's tap reported it.
#[derive(Debug, Clone, Serialize)]
pub struct Denial {
    /// The decision id (as in the 403 body and the sidecar's log line), when there is one.
    pub decision_id: Option<String>,
    /// When the answer was ready (RFC 3339).
    pub time: String,
    /// The sidecar that refused: its workload and replica.
    pub workload: String,
    /// Its replica.
    pub replica: u16,
    /// Inbound (authorization) or outbound (egress policy).
    pub direction: Direction,
    /// The caller's SPIFFE ID.
    pub caller: String,
    /// The caller's workload name, when it is one of the mesh's sidecars.
    pub caller_workload: Option<String>,
    /// The service called (`[egress]` for egress).
    pub service: String,
    /// The method.
    pub method: String,
    /// The route template (or `[unmatched]`).
    pub route: String,
    /// The status the caller got.
    pub status_code: u16,
    /// The trace id, when tracing is on.
    pub trace_id: Option<String>,
    /// What decided, re-decided with the mesh's policies; `None` with `note` saying why not.
    pub reason: Option<DecisionReason>,
    /// How `reason` was found, or why there is none.
    pub note: String,
}

/// The last [`RING`] denials, newest last, and how many tap events the sidecars dropped
/// because the dashboard fell behind.
#[derive(Default)]
pub struct Ring {
    inner: Mutex<(VecDeque<Denial>, u64)>,
}

impl Ring {
    /// Adds a denial (one already there with the same decision id is not added twice).
    pub fn push(&self, denial: Denial) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = &mut inner.0;
        if denial.decision_id.is_some() && ring.iter().any(|d| d.decision_id == denial.decision_id)
        {
            return;
        }
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back(denial);
    }

    /// Counts events a sidecar dropped.
    pub fn lost(&self, n: u64) {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).1 += n;
    }

    /// The denials, newest first, and the count of dropped events.
    pub fn recent(&self) -> (Vec<Denial>, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.0.iter().rev().cloned().collect(), inner.1)
    }

    /// The denial with decision id `id`.
    pub fn find(&self, id: &str) -> Option<Denial> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .0
            .iter()
            .find(|d| d.decision_id.as_deref() == Some(id))
            .cloned()
    }
}

/// The running mesh's policies, fetched from its control plane when older than
/// [`POLICIES_FRESH`].
pub struct Explainer {
    state: PathBuf,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<Engine>)>>,
}

impl Explainer {
    /// Explains with the policies of the mesh in `state`.
    pub fn new(state: &Path) -> Explainer {
        Explainer {
            state: state.to_owned(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn engine(&self) -> Result<Arc<Engine>, String> {
        let mut cached = self.cached.lock().await;
        if let Some((at, engine)) = cached.as_ref()
            && at.elapsed() < POLICIES_FRESH
        {
            return Ok(engine.clone());
        }
        let state = self.state.clone();
        // `fetch` runs its own small runtime: off this one's worker threads.
        let fetched = tokio::task::spawn_blocking(move || RunningPolicies::fetch(&state))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("{e:#}"))?;
        let engine = Arc::new(fetched.engine);
        *cached = Some((Instant::now(), engine.clone()));
        Ok(engine)
    }

    /// The denial `event` reported by `sidecar`, explained.
    pub async fn explain(&self, event: TapEvent, sidecar: &Sidecar, all: &[Sidecar]) -> Denial {
        let (reason, note) = match self.reason(&event).await {
            Ok(found) => found,
            Err(why) => (None, why),
        };
        Denial {
            caller_workload: all
                .iter()
                .find(|s| s.spiffe_id == event.caller)
                .map(|s| s.workload.clone()),
            decision_id: event.decision_id,
            time: event.time,
            workload: sidecar.workload.clone(),
            replica: sidecar.replica,
            direction: event.direction,
            caller: event.caller,
            service: event.service,
            method: event.method,
            route: event.route,
            status_code: event.status_code,
            trace_id: event.trace_id,
            reason,
            note,
        }
    }

    async fn reason(&self, event: &TapEvent) -> Result<(Option<DecisionReason>, String), String> {
        if event.direction == Direction::Outbound {
            return Err(
                "an egress denial: the tap does not carry the destination host; \
                        `meshwork policy explain --egress` decides one"
                    .to_owned(),
            );
        }
        if event.route == "[unmatched]" {
            return Err(
                "the path matched none of the service's routes, and only route \
                        templates are recorded: the rule cannot be re-decided"
                    .to_owned(),
            );
        }
        let path = NormalizedPath::parse(&event.route)
            .map_err(|e| format!("route {:?}: {e}", event.route))?;
        let caller: Option<SpiffeId> = event.caller.parse().ok();
        let engine = self.engine().await?;
        let decision = engine.authorize(&Request {
            target_service: &event.service,
            caller: caller.as_ref(),
            method: &event.method,
            path: &path,
            headers: &policy::NoHeaders,
        });
        let note = match (decision.allowed, event.route.contains('{')) {
            (true, _) => "the mesh's current policies allow this request now: they changed \
                          since, or the rule depends on the raw path or on headers"
                .to_owned(),
            (false, true) => "re-decided with the mesh's current policies on the route \
                              template (the raw path is never recorded)"
                .to_owned(),
            (false, false) => "re-decided with the mesh's current policies".to_owned(),
        };
        Ok((Some(decision.reason), note))
    }
}

/// Keeps `sidecar`'s denied-request tap open (reconnecting every second while it fails),
/// pushing what it reports into `ring`. Runs until aborted.
pub async fn tap(
    sidecar: Sidecar,
    ring: Arc<Ring>,
    explainer: Arc<Explainer>,
    all: Arc<std::sync::RwLock<Vec<Sidecar>>>,
) {
    loop {
        if let Ok(mut body) =
            sidecars::open(sidecar.admin, "/tap?denied=true", Duration::from_secs(5)).await
        {
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    take(&line, &sidecar, &ring, &explainer, &all).await;
                }
                if buf.len() > MAX_LINE {
                    buf.clear();
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn take(
    line: &[u8],
    sidecar: &Sidecar,
    ring: &Ring,
    explainer: &Explainer,
    all: &std::sync::RwLock<Vec<Sidecar>>,
) {
    let Ok(event) = serde_json::from_slice::<TapEvent>(line) else {
        return;
    };
    if let Some(n) = event.lost {
        ring.lost(n);
        return;
    }
    if !decided_here(&event) {
        return;
    }
    let all = all.read().unwrap_or_else(PoisonError::into_inner).clone();
    ring.push(explainer.explain(event, sidecar, &all).await);
}

/// Whether `event` is a denial this sidecar decided: inbound authorization, or its own egress
/// policy. A caller's sidecar may also report the 403 a callee's sidecar decided (its
/// outbound view of a mesh service): that one is listed from the callee's tap.
fn decided_here(event: &TapEvent) -> bool {
    event.decision == Decision::Deny
        && (event.direction == Direction::Inbound || event.service == "[egress]")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_deciding_sidecars_report_is_listed() {
        let event = |direction, service: &str, decision| TapEvent {
            time: String::new(),
            direction,
            caller: String::new(),
            callee: None,
            service: service.to_owned(),
            method: "POST".into(),
            route: "/charges".into(),
            status_code: 403,
            latency_ms: 1.0,
            decision,
            decision_id: Some("00ff00ff00ff00ff".into()),
            policy: None,
            rule: None,
            trace_id: None,
            headers: Vec::new(),
            lost: None,
        };
        use Direction::{Inbound, Outbound};
        assert!(decided_here(&event(Inbound, "billing", Decision::Deny)));
        assert!(decided_here(&event(Outbound, "[egress]", Decision::Deny)));
        assert!(!decided_here(&event(Outbound, "billing", Decision::Deny)));
        assert!(!decided_here(&event(Inbound, "billing", Decision::Allow)));
    }

    fn denial(id: &str) -> Denial {
        Denial {
            decision_id: Some(id.to_owned()),
            time: String::new(),
            workload: "billing".into(),
            replica: 0,
            direction: Direction::Inbound,
            caller: String::new(),
            caller_workload: None,
            service: "billing".into(),
            method: "POST".into(),
            route: "/charges".into(),
            status_code: 403,
            trace_id: None,
            reason: None,
            note: String::new(),
        }
    }

    #[test]
    fn the_ring_keeps_the_last_denials_once_each() {
        let ring = Ring::default();
        for i in 0..RING + 5 {
            ring.push(denial(&format!("{i:016x}")));
        }
        ring.push(denial(&format!("{:016x}", RING + 4)));
        let (recent, lost) = ring.recent();
        assert_eq!((recent.len(), lost), (RING, 0));
        assert_eq!(recent[0].decision_id, Some(format!("{:016x}", RING + 4)));
        assert_eq!(recent[RING - 1].decision_id, Some(format!("{:016x}", 5)));
        assert!(ring.find(&format!("{:016x}", 4)).is_none());
        assert!(ring.find(&format!("{:016x}", 7)).is_some());
    }
}
