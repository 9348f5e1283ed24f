//! `meshwork control`: the control plane as its own process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::{logging, parent};

/// Arguments of `meshwork control`.
#[derive(clap::Args)]
pub struct ControlArgs {
    /// Directory of *.yaml resources.
    #[arg(long)]
    pub resources: PathBuf,
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
}

/// Runs the control plane until SIGINT/SIGTERM.
pub fn run(args: ControlArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    if args.claims.broker_url.is_some() {
        anyhow::bail!("--broker-url: claims become Secrets only in Kubernetes mode");
    }
    let resources = api::load_dir(&args.resources)?;
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
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    // Policy edits in the resource directory apply live (polled every second).
    let watch = Some(args.resources);
    rt.block_on(control::serve_watching(
        config,
        watch,
        parent::shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
