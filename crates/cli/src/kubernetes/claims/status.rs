//! `status` of a claim: `binding.name` (Service Binding spec duck type) and the conditions
//! `Provisioned`, `Bound` and `Ready` with a CamelCase reason and a message (the environment
//! decision chain `up` prints). `lastTransitionTime` moves only when a condition's status
//! changes; the status is written (status subresource, merge patch) only when it differs.

use api::taxonomy::claim::{BindingReference, Condition, ConditionStatus, ServiceClaimStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::object::ServiceClaim;

/// Why a step did not succeed: a CamelCase reason and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// e.g. `BrokerUnreachable`, `ProvisionFailed`.
    pub reason: &'static str,
    /// What happened, with the broker's or the API server's words.
    pub message: String,
}

impl Failure {
    /// A failure with this reason.
    pub fn new(reason: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            reason,
            message: message.into(),
        }
    }
}

/// A bound claim: where its credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The Secret's name.
    pub secret: String,
    /// The bound workload.
    pub workload: String,
    /// The binding's database, when it has one.
    pub database: Option<String>,
}

/// How far one reconcile got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Provisioning failed (or could not be tried).
    NotProvisioned(Failure),
    /// Provisioned (the decision chain), but binding failed.
    NotBound(String, Failure),
    /// Provisioned (the decision chain) and bound.
    Ready(String, Bound),
    /// Being deleted, and deprovisioning failed: `Provisioned` and `Bound` stay as they were.
    Deleting(Failure),
    /// A new claim: the broker is asked (and may take a while).
    Provisioning,
}

impl Progress {
    /// The failure, if any.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Progress::NotProvisioned(f) | Progress::NotBound(_, f) | Progress::Deleting(f) => {
                Some(f)
            }
            Progress::Ready(..) | Progress::Provisioning => None,
        }
    }
}

type Triple = (ConditionStatus, &'static str, String);

/// (Provisioned, Bound, Ready) as (status, reason, message); `None`: keep the previous one.
fn triples(progress: &Progress) -> [Option<Triple>; 3] {
    use ConditionStatus::False;
    if let Progress::Deleting(f) = progress {
        return [None, None, Some((False, f.reason, f.message.clone()))];
    }
    all_three(progress).map(Some)
}

fn all_three(progress: &Progress) -> [Triple; 3] {
    use ConditionStatus::{False, True, Unknown};
    match progress {
        Progress::NotProvisioned(f) => [
            (False, f.reason, f.message.clone()),
            (
                Unknown,
                f.reason,
                "not checked: provisioning did not succeed".to_owned(),
            ),
            (False, f.reason, f.message.clone()),
        ],
        Progress::NotBound(chain, f) => [
            (True, "Provisioned", chain.clone()),
            (False, f.reason, f.message.clone()),
            (False, f.reason, f.message.clone()),
        ],
        Progress::Ready(chain, b) => {
            let database = b.database.as_deref().unwrap_or("-");
            let bound = format!(
                "bound to {}: Secret {} (database {database})",
                b.workload, b.secret
            );
            [
                (True, "Provisioned", chain.clone()),
                (True, "Bound", bound.clone()),
                (True, "Ready", format!("{chain} → {bound}")),
            ]
        }
        Progress::Deleting(f) => {
            let unknown = || (Unknown, f.reason, f.message.clone());
            [unknown(), unknown(), (False, f.reason, f.message.clone())]
        }
        Progress::Provisioning => {
            let asked = || "the broker is provisioning the instance".to_owned();
            [
                (Unknown, "Provisioning", asked()),
                (Unknown, "Provisioning", "not bound yet".to_owned()),
                (False, "Provisioning", asked()),
            ]
        }
    }
}

/// The status to write after `progress`, keeping the transition times of `previous`'s
/// conditions whose status did not change.
pub fn next(
    previous: Option<&ServiceClaimStatus>,
    progress: &Progress,
    generation: Option<i64>,
    now: &str,
) -> ServiceClaimStatus {
    let types = ["Provisioned", "Bound", "Ready"];
    let previous_of = |type_: &str| {
        previous
            .into_iter()
            .flat_map(|p| p.conditions.iter())
            .find(|c| c.type_ == type_)
    };
    let conditions = types
        .iter()
        .zip(triples(progress))
        .filter_map(|(type_, triple)| {
            let Some((status, reason, message)) = triple else {
                return previous_of(type_).cloned();
            };
            let same = previous_of(type_).filter(|c| c.status == status);
            Some(Condition {
                type_: (*type_).to_owned(),
                status,
                reason: reason.to_owned(),
                message,
                last_transition_time: same
                    .map(|c| c.last_transition_time.clone())
                    .unwrap_or_else(|| now.to_owned()),
                observed_generation: generation,
            })
        })
        .collect();
    let binding = match progress {
        Progress::Ready(_, b) => Some(BindingReference {
            name: b.secret.clone(),
        }),
        // A failed rebind keeps pointing at the Secret that is still there, if any.
        _ => previous.and_then(|p| p.binding.clone()),
    };
    ServiceClaimStatus {
        binding,
        conditions,
        observed_generation: generation,
    }
}

/// RFC 3339 now, to the second (as Kubernetes writes `metav1.Time`).
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Whether `status` has a `Provisioned` condition at all (a claim without one is new).
pub fn has_provisioned(status: Option<&ServiceClaimStatus>) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Provisioned"))
}

/// Writes `progress` into the claim's status when it changes anything; the status it has now.
pub async fn write(
    api: &Api<ServiceClaim>,
    claim: &ServiceClaim,
    progress: &Progress,
) -> Result<ServiceClaimStatus, kube::Error> {
    let previous = claim.status.as_ref();
    let status = next(previous, progress, claim.metadata.generation, &now());
    if previous == Some(&status) {
        return Ok(status);
    }
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let patch = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bound() -> Progress {
        Progress::Ready(
            "class postgresql → environment dev".into(),
            Bound {
                secret: "charges-db".into(),
                workload: "billing".into(),
                database: Some("mw_x".into()),
            },
        )
    }

    #[test]
    fn ready_carries_the_chain_and_the_binding() {
        let s = next(None, &bound(), Some(3), "T0");
        let ready = &s.conditions[2];
        assert_eq!(
            (ready.type_.as_str(), ready.status),
            ("Ready", ConditionStatus::True)
        );
        assert_eq!(
            ready.message,
            "class postgresql → environment dev → bound to billing: Secret charges-db (database mw_x)"
        );
        assert_eq!(s.binding.unwrap().name, "charges-db");
        assert_eq!(
            (s.observed_generation, ready.observed_generation),
            (Some(3), Some(3))
        );
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let first = next(None, &bound(), Some(1), "T0");
        assert_eq!(next(Some(&first), &bound(), Some(1), "T1"), first);
        let down = Progress::NotProvisioned(Failure::new("BrokerUnreachable", "refused"));
        let second = next(Some(&first), &down, Some(1), "T2");
        let times: Vec<&str> = second
            .conditions
            .iter()
            .map(|c| c.last_transition_time.as_str())
            .collect();
        assert_eq!(times, ["T2", "T2", "T2"]);
        assert_eq!(second.conditions[2].reason, "BrokerUnreachable");
        assert_eq!(second.conditions[1].status, ConditionStatus::Unknown);
        assert_eq!(second.binding.as_ref().unwrap().name, "charges-db");
        let third = next(Some(&second), &down, Some(1), "T3");
        assert_eq!(third, second);
        let stuck = Progress::Deleting(Failure::new("DeprovisionFailed", "422"));
        let fourth = next(Some(&first), &stuck, Some(2), "T4");
        assert_eq!(fourth.conditions[..2], first.conditions[..2]);
        assert_eq!(fourth.conditions[2].reason, "DeprovisionFailed");
    }
}
