//! `up`'s part in service claims: when the directory has `ServiceClaim`s, start
//! `meshwork broker` as a child, provision and bind each claim through the OSB API as a
//! platform would, and deliver the credentials (files + environment) to the bound workload
//! before its app starts. Credentials are never printed; only where they are.
//!
//! Claims outlive `up`: instances stay provisioned across restarts (the re-`PUT` answers
//! 200), and each run rotates the binding (unbind, bind: a new user password, the old one
//! stops working; tables belong to the instance, so data stays). `meshwork claims delete`
//! deprovisions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use api::ResourceSet;

use super::supervisor::{Child, Supervisor};
use crate::claims::delivery::{self, Delivered};
use crate::claims::osb::OsbClient;
use crate::claims::platform::{self, ClaimIds, Patience};
use crate::claims::pod_view;
use crate::claims::record::ClaimRecord;
use crate::claims::{self as claims, ClaimScope};
use crate::state::StateDir;

/// What `up` needs to start the broker and provision.
pub struct ClaimsContext<'a> {
    /// The `meshwork` binary.
    pub exe: &'a Path,
    /// The (canonical) resource directory.
    pub dir: &'a Path,
    /// The environment claims are provisioned in (`--environment`).
    pub environment: &'a str,
    /// How long to wait for the broker to listen, and for each operation.
    pub timeout: Duration,
}

/// The environment each bound workload's app gets, by workload name.
#[derive(Default)]
pub struct Bindings {
    env: BTreeMap<String, BTreeMap<String, String>>,
    /// The same for an app in a pod: URIs name the claim (`claims::pod_view`), and no
    /// `SERVICE_BINDING_ROOT` (its files are root's; the app runs unprivileged).
    pod_env: BTreeMap<String, BTreeMap<String, String>>,
}

impl Bindings {
    /// The variables for `workload`'s app (none when nothing is bound to it).
    pub fn env_for(&self, workload: &str) -> BTreeMap<String, String> {
        self.env.get(workload).cloned().unwrap_or_default()
    }

    /// The variables for `workload`'s app in a pod.
    pub fn pod_env_for(&self, workload: &str) -> BTreeMap<String, String> {
        self.pod_env.get(workload).cloned().unwrap_or_default()
    }
}

/// Provisions and binds every claim of `set`; returns the environment to give the apps.
pub async fn deliver(
    sup: &mut Supervisor,
    set: &ResourceSet,
    state: &StateDir,
    ctx: &ClaimsContext<'_>,
) -> anyhow::Result<Bindings> {
    if set.service_claims.is_empty() {
        return Ok(Bindings::default());
    }
    let osb = start_broker(sup, state.path(), ctx).await?;
    let mesh = set.mesh().map(|m| m.metadata.name.to_string());
    let id = claims::platform_id(state.path())?;
    let scope = ClaimScope {
        mesh: mesh.as_deref().unwrap_or("meshwork"),
        environment: ctx.environment,
        platform_id: &id,
    };
    let patience = Patience(ctx.timeout.max(Duration::from_secs(60)));
    let mut by_workload: BTreeMap<String, Vec<(Delivered, Delivered)>> = BTreeMap::new();
    for claim in &set.service_claims {
        let ids = claims::claim_ids(&osb, &scope, claim).await?;
        let delivered = deliver_one(&osb, &ids, state.path(), patience).await?;
        let name =
            api::taxonomy::claim_host(&ids.claim, claim.resource.metadata.namespace.as_str());
        let in_pod = Delivered {
            uri: pod_view::with_host(&delivered.uri, &name),
            ..delivered.clone()
        };
        by_workload
            .entry(ids.app)
            .or_default()
            .push((delivered, in_pod));
    }
    let mut bindings = Bindings::default();
    for (w, delivered) in by_workload {
        let root = delivery::binding_root(state.path(), &w);
        let (host, pod): (Vec<_>, Vec<_>) = delivered.into_iter().unzip();
        bindings
            .env
            .insert(w.clone(), delivery::environment(&root, &host));
        let mut pod_env = delivery::environment(&root, &pod);
        pod_env.remove("SERVICE_BINDING_ROOT");
        bindings.pod_env.insert(w, pod_env);
    }
    Ok(bindings)
}

/// Provisions (idempotently) and rebinds one claim, and writes its binding files.
async fn deliver_one(
    osb: &OsbClient,
    ids: &ClaimIds,
    state: &Path,
    patience: Patience,
) -> anyhow::Result<Delivered> {
    let metadata = platform::provision(osb, ids, patience).await?;
    let credentials = platform::rebind(osb, ids, patience).await?;
    let root = delivery::binding_root(state, &ids.app);
    let dir = delivery::write_binding(&root, &ids.claim, &credentials)?;
    ClaimRecord::new(ids, &metadata, &credentials, &dir).write(state)?;
    println!(
        "[up] claim {}: {} → bound to {} (files in {}; database {})",
        ids.claim,
        metadata["attributes"]["resolution"]
            .as_str()
            .unwrap_or("provisioned"),
        ids.app,
        dir.display(),
        credentials["database"].as_str().unwrap_or("-"),
    );
    Ok(Delivered {
        claim: ids.claim.clone(),
        kind: credentials["type"].as_str().unwrap_or_default().to_owned(),
        uri: credentials["uri"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Starts `meshwork broker` on `<state>/broker.redb` with this directory's taxonomy and a
/// password from a 0600 file (never argv), and waits until it listens.
async fn start_broker(
    sup: &mut Supervisor,
    state: &Path,
    ctx: &ClaimsContext<'_>,
) -> anyhow::Result<OsbClient> {
    let password = claims::platform_password(state)?;
    let port = super::ports::free_port().context("allocating the broker's port")?;
    let listen = format!("127.0.0.1:{port}");
    let broker = Child::meshwork(ctx.exe, "broker")
        .args(["--listen", &listen])
        .args(["--state".as_ref(), claims::broker_store(state).as_os_str()])
        .args(["--resources".as_ref(), ctx.dir.as_os_str()])
        .args([
            "--password-file".as_ref(),
            claims::password_file(state).as_os_str(),
        ])
        .env(crate::broker_cmd::USERNAME_ENV, claims::PLATFORM_USER);
    sup.spawn("broker", broker)?;
    sup.wait_for_port("broker", port, ctx.timeout).await?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let addr_file = claims::addr_file(state);
    std::fs::write(&addr_file, addr.to_string())
        .with_context(|| format!("writing {}", addr_file.display()))?;
    Ok(OsbClient::new(
        addr,
        claims::PLATFORM_USER,
        password.expose(),
        &claims::requester(),
    ))
}
