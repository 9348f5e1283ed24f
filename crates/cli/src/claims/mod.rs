//! `ServiceClaim`s as a platform handles them: OSB ids, the broker's credentials and state
//! under the state directory, and `meshwork claims delete` (deprovisioning). `meshwork up`
//! provisions and binds claims with the same pieces (see `up/claims.rs`).
//!
//! State directory files: `broker.redb` (the broker's store), `broker.password` (0600, the
//! platform password `up` and `claims` use), `broker.addr` (the running broker's address),
//! `platform-id` (8 hex digits in every instance id, so two state directories sharing a
//! database server never share a database), `bindings/<workload>/<claim>/` (the credentials),
//! `claims/<claim>.json` (what `up` bound: [`record::ClaimRecord`], no credentials).
//!
//! Must not import `up` or `exec` (`up` imports this module); the state directory itself is
//! `crate::state`.

pub mod delivery;
pub mod osb;
pub mod platform;
pub mod pod_view;
pub mod record;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use api::Loaded;
use api::taxonomy::ServiceClaimSpec;
use broker::{BasicCredentials, RunningBroker, Secret};
use serde_json::json;

use osb::OsbClient;
use platform::{ClaimIds, Patience};

/// The user name `up` and `claims` authenticate to their broker with.
pub const PLATFORM_USER: &str = "meshwork";

/// `<state>/broker.redb`.
pub fn broker_store(state: &Path) -> PathBuf {
    state.join("broker.redb")
}

/// `<state>/broker.password`.
pub fn password_file(state: &Path) -> PathBuf {
    state.join("broker.password")
}

/// `<state>/broker.addr`.
pub fn addr_file(state: &Path) -> PathBuf {
    state.join("broker.addr")
}

/// Reads `path`, or creates it (mode 0600) with `fresh()` when missing.
fn read_or_create(path: &Path, fresh: impl FnOnce() -> String) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let value = fresh();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

/// The platform password of this state directory (random on first use).
pub fn platform_password(state: &Path) -> anyhow::Result<Secret> {
    let file = password_file(state);
    read_or_create(&file, || Secret::random_password().expose().to_owned()).map(Secret::new)
}

/// This state directory's platform id.
pub fn platform_id(state: &Path) -> anyhow::Result<String> {
    read_or_create(&state.join("platform-id"), || {
        uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
    })
}

/// Who the broker records as having asked (`X-Broker-API-Originating-Identity`).
pub fn requester() -> String {
    std::env::var("USER").unwrap_or_else(|_| "meshwork".to_owned())
}

/// Everything but the catalog ids that identifies a claim to the broker.
pub struct ClaimScope<'a> {
    /// The mesh name (`organization_guid`).
    pub mesh: &'a str,
    /// The `--environment` (sent as `context.clusterid`).
    pub environment: &'a str,
    /// This state directory's [`platform_id`].
    pub platform_id: &'a str,
}

/// The OSB ids of a claim: instance `<claim>.<namespace>.<platform id>`, binding
/// `<workload>.<claim>`, and the catalog ids of its class and size (`default` plan when the
/// claim names no size: the environment's policy decides).
pub async fn claim_ids(
    osb: &OsbClient,
    scope: &ClaimScope<'_>,
    claim: &Loaded<ServiceClaimSpec>,
) -> anyhow::Result<ClaimIds> {
    let meta = &claim.resource.metadata;
    let named = NamedClaim {
        name: meta.name.as_str(),
        namespace: meta.namespace.as_str(),
        spec: &claim.resource.spec,
    };
    ids_of(osb, scope, &named)
        .await
        .with_context(|| format!("claim {} ({})", meta.name, claim.origin))
}

/// A claim wherever it was read: a resource file (`up`) or a cluster (controller mode).
pub struct NamedClaim<'a> {
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    /// The claim's spec.
    pub spec: &'a ServiceClaimSpec,
}

/// [`claim_ids`] of a claim from anywhere.
pub async fn ids_of(
    osb: &OsbClient,
    scope: &ClaimScope<'_>,
    claim: &NamedClaim<'_>,
) -> anyhow::Result<ClaimIds> {
    let (name, namespace, spec) = (claim.name, claim.namespace, claim.spec);
    let plan = spec.size.map(|s| s.as_str()).unwrap_or("default");
    let (service_id, plan_id) = osb.catalog_ids(spec.class.as_str(), plan).await?;
    Ok(ClaimIds {
        claim: name.to_owned(),
        instance_id: format!("{name}.{namespace}.{}", scope.platform_id),
        binding_id: format!("{}.{name}", spec.bind_to),
        service_id,
        plan_id,
        organization: scope.mesh.to_owned(),
        space: namespace.to_owned(),
        context: json!({
            "platform": "meshwork",
            "clusterid": scope.environment,
            "namespace": namespace,
            "instance_name": name,
        }),
        app: spec.bind_to.to_string(),
    })
}

/// Arguments of `meshwork claims`.
#[derive(clap::Args)]
pub struct ClaimsArgs {
    #[command(subcommand)]
    action: ClaimsAction,
}

#[derive(clap::Subcommand)]
enum ClaimsAction {
    /// Deprovision claims: unbind, then delete the instance (database and users are dropped).
    /// Uses the broker of a running `meshwork up`, or starts one on the state directory.
    Delete {
        /// The resource directory the claims are defined in.
        dir: PathBuf,
        /// The claims to delete.
        #[arg(required = true)]
        names: Vec<String>,
        /// The state directory `meshwork up` used.
        #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
        state_dir: PathBuf,
        /// Delete even when the claim's workload is running under `meshwork up` (it loses its
        /// database or cache while it runs).
        #[arg(long)]
        force: bool,
    },
}

/// Runs `meshwork claims …`.
pub fn run(args: ClaimsArgs) -> anyhow::Result<ExitCode> {
    let ClaimsAction::Delete {
        dir,
        names,
        state_dir,
        force,
    } = args.action;
    let set = api::load_dir(&dir)?;
    let state = crate::state::StateDir::open(&state_dir)?;
    let mut claims = Vec::new();
    for name in &names {
        match set
            .service_claims
            .iter()
            .find(|c| c.resource.metadata.name.as_str() == name)
        {
            Some(c) => claims.push(c),
            None => bail!("{} defines no ServiceClaim {name:?}", dir.display()),
        }
    }
    if !force {
        refuse_if_in_use(state.path(), &claims)?;
    }
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(delete(&set, &dir, state.path(), &claims))?;
    Ok(ExitCode::SUCCESS)
}

async fn delete(
    set: &api::ResourceSet,
    dir: &Path,
    state: &Path,
    claims: &[&Loaded<ServiceClaimSpec>],
) -> anyhow::Result<()> {
    let (osb, own) = broker_for(state, dir).await?;
    let mesh = set.mesh().map(|m| m.metadata.name.to_string());
    let id = platform_id(state)?;
    let scope = ClaimScope {
        mesh: mesh.as_deref().unwrap_or("meshwork"),
        environment: "",
        platform_id: &id,
    };
    let patience = Patience(Duration::from_secs(120));
    let mut result = Ok(());
    for claim in claims {
        let deleted = match claim_ids(&osb, &scope, claim).await {
            Ok(ids) => platform::deprovision(&osb, &ids, patience).await,
            Err(e) => Err(e),
        };
        let name = &claim.resource.metadata.name;
        match deleted {
            Ok(true) => println!("claim {name}: deprovisioned (its database and users are gone)"),
            Ok(false) => println!("claim {name}: nothing to delete"),
            Err(e) => {
                eprintln!("{e:#}"); // names the claim already
                result = Err(anyhow::anyhow!("some claims were not deleted"));
                continue;
            }
        }
        delivery::remove_binding(state, name.as_str());
    }
    if let Some(running) = own {
        running.shutdown().await;
        // No `up` runs here: with the last claim gone, a private cluster kept outside the
        // state directory goes too (nothing else would remove it).
        if result.is_ok() {
            discard_if_unused(state, dir).await?;
        }
    }
    result
}

async fn discard_if_unused(state: &Path, dir: &Path) -> anyhow::Result<()> {
    let unused = BasicCredentials {
        username: String::new(),
        password: Secret::random_password(),
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = crate::broker_cmd::config(listen, &broker_store(state), unused, Some(dir))?;
    let outside = state.join("postgres-private/location").exists();
    if broker::discard_if_unused(config).await? && outside {
        println!(
            "no claims left: removed the private PostgreSQL cluster kept outside the state directory"
        );
    }
    Ok(())
}

/// The broker of the `meshwork up` running on `state`, or one started here on the same store.
async fn broker_for(
    state: &Path,
    dir: &Path,
) -> anyhow::Result<(OsbClient, Option<RunningBroker>)> {
    let password = platform_password(state)?;
    let client = |addr| OsbClient::new(addr, PLATFORM_USER, password.expose(), &requester());
    if let Some(addr) = live_broker(state) {
        return Ok((client(addr), None));
    }
    let credentials = BasicCredentials {
        username: PLATFORM_USER.to_owned(),
        password: password.clone(),
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let store = broker_store(state);
    let config = crate::broker_cmd::config(listen, &store, credentials, Some(dir))?;
    let running = RunningBroker::start(config).await.with_context(|| {
        format!(
            "starting a broker on {} (is another broker using it?)",
            store.display()
        )
    })?;
    Ok((client(running.local_addr()), Some(running)))
}

/// The pid of the `meshwork up` running on `state`, if one is.
fn live_up(state: &Path) -> Option<String> {
    let pid = std::fs::read_to_string(state.join("up.pid")).ok()?;
    let pid = pid.trim().to_owned();
    Path::new("/proc").join(&pid).exists().then_some(pid)
}

/// Refuses to delete a claim whose bound workload runs under a live `up` on `state` (its
/// sidecar's ready file exists while it runs): the app would lose its database mid-flight,
/// and billing would fail on its next write with nothing saying why.
fn refuse_if_in_use(state: &Path, claims: &[&Loaded<ServiceClaimSpec>]) -> anyhow::Result<()> {
    let Some(pid) = live_up(state) else {
        return Ok(());
    };
    let busy: Vec<String> = claims
        .iter()
        .filter(|c| {
            let workload = c.resource.spec.bind_to.as_str();
            state
                .join("workloads")
                .join(format!("{workload}.json"))
                .exists()
        })
        .map(|c| {
            let (name, workload) = (&c.resource.metadata.name, &c.resource.spec.bind_to);
            format!("claim {name} is bound to workload {workload}, which is running")
        })
        .collect();
    if busy.is_empty() {
        return Ok(());
    }
    bail!(
        "{} under `meshwork up` (pid {pid}) on {}; deleting it now drops the data it is using. \
         Stop that `meshwork up` first, or pass --force to delete anyway",
        busy.join("; "),
        state.display()
    )
}

/// The address of the broker a live `meshwork up` runs on `state`, if it answers.
fn live_broker(state: &Path) -> Option<SocketAddr> {
    live_up(state)?;
    let addr: SocketAddr = std::fs::read_to_string(addr_file(state))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    Some(addr)
}
