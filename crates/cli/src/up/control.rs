//! `meshwork control`: the control plane as its own process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::kubernetes::client::ClusterArgs;
use crate::{kubernetes, logging, parent};

/// Arguments of `meshwork control`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["resources", "kubernetes"]))]
pub struct ControlArgs {
    /// Directory of *.yaml resources (edits to policies and routes apply live).
    #[arg(long)]
    pub resources: Option<PathBuf>,
    /// Read the resources from a Kubernetes cluster (meshwork's custom resources and the
    /// Gateway API's HTTPRoute/GRPCRoute) instead of a directory: controller mode,
    /// docs/kubernetes.md.
    #[arg(long)]
    pub kubernetes: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// State directory (`control.redb` holds the CA, entries and join tokens).
    #[arg(long, default_value = ".meshwork")]
    pub state_dir: PathBuf,
    /// Unix socket to serve the proxy contract on; `<state-dir>/control.sock` by default.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Serve the agent API (mTLS) here; the bound address goes to `<state-dir>/node-api.addr`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub node_api: std::net::SocketAddr,
    /// The broker `ServiceClaim`s are provisioned through (Kubernetes mode).
    #[command(flatten)]
    pub claims: crate::kubernetes::claims::BrokerArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the control plane keeps its state: `<state-dir>/control.redb` by default, or a
/// shared etcd cluster for several replicas (docs/scale.md).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StoreArgs {
    /// An etcd member's client URL (`http://127.0.0.1:2379`); repeat for each member.
    /// Every replica started with the same members and prefix shares one state.
    #[arg(long = "etcd", value_name = "URL")]
    pub etcd: Vec<String>,
    /// The key prefix in etcd; `/meshwork/<trust domain>` by default.
    #[arg(long, requires = "etcd")]
    pub etcd_prefix: Option<String>,
    /// The key-encryption key file (required with --etcd; the same file on every
    /// replica; never in etcd): CA and JWT private keys are sealed with it. Create one
    /// with `meshwork ca kek create PATH`.
    #[arg(long, requires = "etcd")]
    pub kek_file: Option<PathBuf>,
    /// This replica's name in elections and logs; the host name and process id by default.
    #[arg(long, requires = "etcd")]
    pub replica_id: Option<String>,
}

impl StoreArgs {
    /// The store configuration these arguments select.
    pub fn config(&self) -> anyhow::Result<control::StoreConfig> {
        if self.etcd.is_empty() {
            return Ok(control::StoreConfig::Redb);
        }
        let Some(kek_file) = self.kek_file.clone() else {
            anyhow::bail!(
                "--etcd needs --kek-file: CA and JWT private keys are sealed before they go \
                 into etcd (create the file once with `meshwork ca kek create PATH` and give \
                 every replica the same one)"
            );
        };
        let replica_id = self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        Ok(control::StoreConfig::Etcd(control::EtcdConfig {
            endpoints: self.etcd.clone(),
            prefix: self.etcd_prefix.clone(),
            kek_file,
            replica_id,
        }))
    }
}

/// Runs the control plane until SIGINT/SIGTERM.
pub fn run(args: ControlArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    if args.claims.broker_url.is_some() && !args.kubernetes {
        anyhow::bail!("--broker-url: claims become Secrets only with --kubernetes");
    }
    let resources = match &args.resources {
        Some(dir) => api::load_dir(dir)?,
        // Filled in from the cluster once every kind is listed.
        None => api::ResourceSet::default(),
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state directory {}", args.state_dir.display()))?;
    let socket = args
        .socket
        .unwrap_or_else(|| args.state_dir.join("control.sock"));
    let config = control::ControlConfig {
        socket,
        state_dir: args.state_dir,
        resources,
        node_api: Some(args.node_api),
        store: args.store.config()?,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match args.resources {
        // Policy edits in the resource directory apply live (polled every second).
        Some(dir) => rt.block_on(control::serve_watching(
            config,
            Some(dir),
            parent::shutdown_signal(),
        ))?,
        None => rt.block_on(async {
            let client = kubernetes::client::connect(args.cluster.kubeconfig.as_deref()).await?;
            let namespace = args.cluster.namespace;
            let claims = args.claims.context(client.clone(), &config.state_dir)?;
            // ServiceClaims become Secrets beside the resource source, until it stops.
            let controller = claims.map(|ctx| {
                let namespace = namespace.clone();
                tokio::spawn(async move {
                    let shutdown = parent::shutdown_signal();
                    kubernetes::claims::run_controller(ctx, namespace.as_deref(), shutdown).await;
                })
            });
            let shutdown = parent::shutdown_signal();
            let served =
                kubernetes::source::serve_control(client, namespace.as_deref(), config, shutdown)
                    .await;
            if let Some(controller) = controller {
                controller.abort();
            }
            served
        })?,
    }
    Ok(ExitCode::SUCCESS)
}
