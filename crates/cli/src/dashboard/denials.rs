//! Recent denials: the dashboard keeps one `GET /tap?denied=true` stream open per sidecar
//! (the only tapper it adds, whatever the number of browsers) and the last [`RING`] denials
//! in memory. A denial names the policy and rule the deciding sidecar reported
//! (`TapEvent::policy`/`rule`). When it reported none (a default deny, or a sidecar older
//! than those fields), the denial is re-decided with the policies the running mesh serves
//! now (its control plane's snapshot) through `policy_cmd::decide_template`, as
//! `policy replay` decides: on the route template with `_param_` for parameters and no
//! headers. That can name another rule than the 403 did (header rules, exact ids, policies
//! changed since); the note says it is a re-decision.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use api::contract::observe::{Decision, Direction, TapEvent};
use policy::{DecisionReason, Engine};
use serde::Serialize;

use crate::policy_cmd::{RunningPolicies, TemplateRequest, decide_template};
use crate::sidecar_admin::{self, Sidecar, StreamLine};

/// How many denials the dashboard remembers.
pub const RING: usize = 50;
/// The one tap the dashboard keeps open per sidecar.
const TAP: &str = "/tap?denied=true";
/// How long a fetched copy of the mesh's policies is used for explanations.
const POLICIES_FRESH: Duration = Duration::from_secs(2);
/// How long the control plane may take to answer (a hung one must not hold up denials).
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a failure to fetch the policies is answered from memory before asking again.
const FAILURE_KEPT: Duration = Duration::from_secs(5);

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
    /// The policy that refused (`namespace/name`): the one the sidecar reported, else the
    /// re-decision's.
    pub policy: Option<String>,
    /// Its rule, from 0.
    pub rule: Option<u32>,
    /// Where `policy` and `rule` come from: `sidecar` or `re-decision`.
    pub named_by: Option<&'static str>,
    /// The re-decision with the mesh's current policies (only when the sidecar named no
    /// policy); `None` with `note` saying why not.
    pub reason: Option<DecisionReason>,
    /// How `policy` and `reason` were found, or why there are none.
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

/// A fetch of the mesh's policies, successful or not, and when it was made.
type Fetched = (Instant, Result<Arc<Engine>, String>);

/// The running mesh's policies, fetched from its control plane when older than
/// [`POLICIES_FRESH`] (a failure is kept for [`FAILURE_KEPT`]); only asked for denials their
/// sidecar did not name.
pub struct Explainer {
    state: PathBuf,
    cached: tokio::sync::Mutex<Option<Fetched>>,
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
        if let Some((at, fetched)) = cached.as_ref() {
            let kept = match fetched {
                Ok(_) => POLICIES_FRESH,
                Err(_) => FAILURE_KEPT,
            };
            if at.elapsed() < kept {
                return fetched.clone();
            }
        }
        let state = self.state.clone();
        // `fetch_within` runs its own small runtime, and gives up after FETCH_TIMEOUT: the
        // lock is held no longer than that.
        let fetched = tokio::task::spawn_blocking(move || {
            RunningPolicies::fetch_within(&state, FETCH_TIMEOUT)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|fetched| fetched.map_err(|e| format!("{e:#}")))
        .map(|running| Arc::new(running.engine));
        *cached = Some((Instant::now(), fetched.clone()));
        fetched
    }

    /// The denial `event` reported by `sidecar`, explained.
    pub async fn explain(&self, event: TapEvent, sidecar: &Sidecar, all: &[Sidecar]) -> Denial {
        let (named_by, policy, rule, reason, note) = match (&event.policy, event.rule) {
            (Some(policy), rule) => (
                Some("sidecar"),
                Some(policy.clone()),
                rule,
                None,
                "named by the sidecar that refused".to_owned(),
            ),
            (None, _) => match self.redecide(&event).await {
                Ok((reason, note)) => (
                    Some("re-decision"),
                    reason.policy.clone(),
                    reason.rule.and_then(|r| u32::try_from(r).ok()),
                    Some(reason),
                    note,
                ),
                Err(why) => (None, None, None, None, why),
            },
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
            policy,
            rule,
            named_by,
            reason,
            note,
        }
    }

    /// Decides `event` again with the mesh's current policies, as `policy replay` does.
    async fn redecide(&self, event: &TapEvent) -> Result<(DecisionReason, String), String> {
        if event.direction == Direction::Outbound {
            return Err(
                "an egress denial the sidecar named no policy for (a default deny): \
                        the tap does not carry the destination host; \
                        `meshwork policy explain --egress` decides one"
                    .to_owned(),
            );
        }
        let engine = self.engine().await?;
        let decision = decide_template(
            &engine,
            TemplateRequest {
                service: &event.service,
                caller: &event.caller,
                method: &event.method,
                route: &event.route,
            },
        )
        .map_err(|why| {
            format!("the sidecar named no policy, and it cannot be re-decided: {why}")
        })?;
        let note = match decision.allowed {
            true => {
                "the sidecar named no policy, and the mesh's current policies allow this \
                     request on its route template: they changed since, or the rule depends \
                     on the raw path or on headers"
            }
            false => {
                "the sidecar named no policy: re-decided with the mesh's current policies \
                      on the route template (parameters as `_param_`, no headers), which may \
                      name another rule than the 403 did"
            }
        };
        Ok((decision.reason, note.to_owned()))
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
        let (lines, mut read) = tokio::sync::mpsc::channel(64);
        // Both in this task: aborting it stops the stream too.
        let stream = sidecar_admin::stream_lines(0, sidecar.admin, TAP.to_owned(), lines);
        let takes = async {
            while let Some(StreamLine::Line(_, line)) = read.recv().await {
                take(line.as_bytes(), &sidecar, &ring, &explainer, &all).await;
            }
        };
        tokio::join!(stream, takes);
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

    fn sidecar() -> Sidecar {
        Sidecar {
            workload: "billing".into(),
            replica: 0,
            spiffe_id: "spiffe://meshwork.local/ns/default/sa/billing".into(),
            admin: "127.0.0.1:1".parse().unwrap(),
            label: "billing".into(),
        }
    }

    fn refused(policy: Option<&str>, rule: Option<u32>) -> TapEvent {
        TapEvent {
            time: String::new(),
            direction: Direction::Inbound,
            caller: "spiffe://meshwork.local/ns/default/sa/reporting".into(),
            callee: None,
            service: "billing".into(),
            method: "POST".into(),
            route: "/charges".into(),
            status_code: 403,
            latency_ms: 1.0,
            decision: Decision::Deny,
            decision_id: Some("00ff00ff00ff00ff".into()),
            policy: policy.map(str::to_owned),
            rule,
            trace_id: None,
            headers: Vec::new(),
            lost: None,
        }
    }

    #[tokio::test]
    async fn the_sidecars_policy_and_rule_are_shown_without_re_deciding() {
        // No mesh here: a re-decision could not fetch any policies.
        let gone = tempfile::tempdir().unwrap();
        let explainer = Explainer::new(&gone.path().join("nope"));
        let event = refused(Some("default/billing-reporting-read-only"), Some(0));
        let d = explainer.explain(event, &sidecar(), &[]).await;
        assert_eq!(
            (d.policy.as_deref(), d.rule, d.named_by),
            (
                Some("default/billing-reporting-read-only"),
                Some(0),
                Some("sidecar")
            ),
            "{d:?}"
        );
        assert!(d.reason.is_none(), "{d:?}");
    }

    #[tokio::test]
    async fn a_failed_fetch_of_the_policies_is_remembered() {
        let gone = tempfile::tempdir().unwrap();
        let explainer = Explainer::new(&gone.path().join("nope"));
        let d = explainer
            .explain(refused(None, None), &sidecar(), &[])
            .await;
        assert_eq!((d.policy, d.named_by), (None, None));
        assert!(d.note.contains("does not exist"), "{}", d.note);
        // The failure is kept: the next denials do not wait for the control plane again.
        let cached = explainer.cached.lock().await;
        assert!(matches!(cached.as_ref(), Some((_, Err(_)))));
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
            policy: None,
            rule: None,
            named_by: None,
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
