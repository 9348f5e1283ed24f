//! `ServiceClaim`s as Secrets (issue 14): a kube-runtime `Controller` over the cluster's
//! `ServiceClaim`s that owns `Secret`s. For each claim it drives the Open Service Broker as
//! `meshwork up` does (provision, bind: `crate::claims`), writes the binding as a Secret in the
//! servicebinding.io layout ([`secret`]), and reports `Provisioned`, `Bound` and `Ready` in the
//! claim's status ([`status`]). Deleting a claim deprovisions it through a finalizer
//! ([`reconcile`]). docs/kubernetes.md, "ServiceClaims as Secrets".

pub mod backoff;
pub mod identity;
pub mod object;
pub mod reconcile;
pub mod secret;
pub mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{Controller, controller, watcher};
use kube::{Api, Client};

use crate::claims::osb::OsbClient;
use crate::claims::platform::Patience;
use crate::claims::{self, ClaimScope};
use backoff::Backoff;
use object::ServiceClaim;
use reconcile::Step;

/// The broker flags of `meshwork control` (claims are reconciled when `--broker-url` is set).
#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    /// The Open Service Broker that provisions `ServiceClaim`s, `http://host:port` (a Service
    /// name resolves in the cluster). With it, each claim becomes an instance and a
    /// servicebinding.io Secret.
    #[arg(long, value_name = "URL")]
    pub broker_url: Option<BrokerUrl>,
    /// File holding the broker password of user `meshwork` (a mounted Secret, never argv).
    #[arg(long, value_name = "FILE", requires = "broker_url")]
    pub broker_password_file: Option<PathBuf>,
    /// The environment claims are provisioned in (sent as the OSB context's `clusterid`; the
    /// broker's policy maps it to a provider and size).
    #[arg(long, default_value = "dev")]
    pub environment: String,
    /// This platform's id, part of every OSB instance id (so two clusters sharing a broker never
    /// share a database). Default: `<state-dir>/platform-id` (created on first use). Only new
    /// claims use it: a claim keeps the instance id recorded on it (`meshwork.dev/instance-id`).
    #[arg(long)]
    pub platform_id: Option<String>,
    /// How often a settled claim is checked again (a broker outage or a deleted binding shows
    /// up in its status within this).
    #[arg(long, default_value = "60s")]
    pub claims_recheck: api::duration::HumanDuration,
    /// The longest wait between retries of a failing claim (exponential backoff from 1 s).
    #[arg(long, default_value = "5m")]
    pub claims_backoff_max: api::duration::HumanDuration,
    /// Crash-test seam only, never for real use: reconciles reaching this step hang forever
    /// (a test `kill -9`s the controller there and checks that a restart recovers).
    #[arg(long, hide = true, value_name = "STEP")]
    pub test_hold_at_step: Option<Step>,
}

/// What every reconcile shares.
pub struct Context {
    /// The cluster.
    pub client: Client,
    /// The broker.
    pub osb: OsbClient,
    /// `--environment`.
    pub environment: String,
    /// The platform id in instance ids.
    pub platform_id: String,
    /// How long one broker operation may take.
    pub patience: Patience,
    /// Requeue interval of a settled claim.
    pub recheck: Duration,
    /// Per-claim retry delays.
    pub backoff: Backoff,
    /// The crash-test seam.
    pub hold: Option<Step>,
}

impl Context {
    /// The platform's side of every claim's ids (the organization is `meshwork`: a cluster's
    /// claims belong to no `Mesh` resource).
    pub fn scope(&self) -> ClaimScope<'_> {
        ClaimScope {
            mesh: "meshwork",
            environment: &self.environment,
            platform_id: &self.platform_id,
        }
    }

    /// Hangs forever when the crash-test seam names `step`.
    async fn hold_at(&self, step: Step, claim: &str) {
        if self.hold == Some(step) {
            eprintln!("test seam: holding claim {claim} at step {step:?}");
            std::future::pending::<()>().await;
        }
    }
}

/// A broker's `http://host:port` (https is not spoken: the broker runs beside the control
/// plane, inside the cluster network); holds `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl(String);

impl std::str::FromStr for BrokerUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<BrokerUrl, String> {
        let wrong = || format!("{url:?}: expected http://host:port");
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(wrong)?
            .trim_end_matches('/');
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok || authority.contains('/') {
            return Err(wrong());
        }
        Ok(BrokerUrl(authority.to_owned()))
    }
}

impl BrokerArgs {
    /// The controller's context, or `None` when no broker is configured.
    pub fn context(
        &self,
        client: Client,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Option<Context>> {
        let Some(url) = &self.broker_url else {
            return Ok(None);
        };
        let password = crate::broker_cmd::password(self.broker_password_file.as_deref())?;
        let platform_id = match &self.platform_id {
            Some(id) => id.clone(),
            None => {
                std::fs::create_dir_all(state_dir)
                    .with_context(|| format!("creating {}", state_dir.display()))?;
                claims::platform_id(state_dir)?
            }
        };
        let who = format!("meshwork-controller@{}", self.environment);
        Ok(Some(Context {
            client,
            osb: OsbClient::at(&url.0, claims::PLATFORM_USER, password.expose(), &who),
            environment: self.environment.clone(),
            platform_id,
            patience: Patience(Duration::from_secs(300)),
            recheck: self.claims_recheck.get(),
            backoff: Backoff::new(Duration::from_secs(1), self.claims_backoff_max.get()),
            hold: self.test_hold_at_step,
        }))
    }
}

/// Runs the claims controller until `shutdown` resolves (claims in `namespace`, or all).
pub async fn run_controller(
    ctx: Context,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let (claims, secrets): (Api<ServiceClaim>, Api<Secret>) = match namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let (managed_key, managed_value) = secret::MANAGED_BY;
    let owned = watcher::Config::default().labels(&format!("{managed_key}={managed_value}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(());
    });
    tracing::info!(
        environment = %ctx.environment,
        platform_id = %ctx.platform_id,
        "reconciling ServiceClaims into servicebinding.io Secrets"
    );
    Controller::new(claims, watcher::Config::default())
        // kube-runtime 5's `owns` is a `metadata_watcher` (PartialObjectMetadata, no reflector):
        // the controller holds no Secret's data, only the owner references that map a change
        // back to its claim.
        .owns(secrets, owned)
        .graceful_shutdown_on(async move {
            let _ = stopped.await;
        })
        .run(reconcile::reconcile, reconcile::error_policy, Arc::new(ctx))
        .for_each(|result| async move {
            match result {
                Ok((claim, _)) => tracing::debug!(claim = %claim, "reconciled"),
                // `error_policy` has logged it, with the claim and the retry delay.
                Err(e @ controller::Error::ReconcilerFailed(..)) => {
                    tracing::debug!("controller: {e}")
                }
                // The watches, the queue: claims are not being reconciled while these last.
                Err(e) => tracing::warn!("claims controller: {e}"),
            }
        })
        .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_are_http_host_port() {
        let authority = |url: &str| url.parse::<BrokerUrl>().map(|u| u.0);
        assert_eq!(
            authority("http://broker.meshwork:8099/").unwrap(),
            "broker.meshwork:8099"
        );
        assert_eq!(authority("http://127.0.0.1:1").unwrap(), "127.0.0.1:1");
        for bad in [
            "https://b:1",
            "b:1",
            "http://b",
            "http://b:x",
            "http://b:1/v2",
            "http://:1",
        ] {
            assert!(authority(bad).is_err(), "{bad}");
        }
    }
}
