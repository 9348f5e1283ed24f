//! `meshwork dashboard`: a live web page of a running mesh, served on loopback (issue 13),
//! also started by `meshwork up`.
//!
//! One process reads the sidecars for every browser: once a second it asks each sidecar's
//! admin listener for `/stats?window=60` (and every few seconds for `/metrics`), keeps one
//! `/tap?denied=true` stream open per sidecar, and answers browsers from what it last
//! read. A browser that is slow or gone costs the sidecars nothing; the sidecars' own
//! endpoints are bounded (see `api::contract::observe`).
//!
//! Pages and endpoints (`server.rs`): `/` (one server-rendered page with inline script and
//! SVG, no external assets), `/api/graph`, `/api/services`, `/api/denials`,
//! `/api/identities`, `/api/claims`, and `/explain?decision=ID`. docs/dashboard.md is the
//! reference.
//!
//! Reads the state directory only (`state`, `claims::record`) and asks the control plane
//! for its policies (`policy_cmd`) to explain denials.

mod aggregate;
mod denials;
mod identities;
mod page;
mod poll;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::{logging, parent, state::StateDir};

/// Arguments of `meshwork dashboard`.
#[derive(clap::Args)]
pub struct DashboardArgs {
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Where to serve the page: a loopback address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Write the address it serves on to this file once it listens.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
}

/// Serves the dashboard until SIGINT/SIGTERM (or until `up`, if it started it, is gone).
pub fn run(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the dashboard has no authentication and serves on loopback only \
             (127.0.0.1 or ::1)",
            args.listen
        );
    }
    let state = StateDir::open(&args.state_dir)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        match &args.ready_file {
            Some(file) => std::fs::write(file, addr.to_string())
                .with_context(|| format!("writing {}", file.display()))?,
            None => println!("dashboard on http://{addr}/ for {}", state.path().display()),
        }
        let dashboard = poll::Dashboard::start(state.path());
        axum::serve(listener, server::router(dashboard))
            .with_graceful_shutdown(parent::shutdown_signal())
            .await
            .context("serving the dashboard")
    })?;
    Ok(ExitCode::SUCCESS)
}
