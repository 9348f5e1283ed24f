//! `meshwork up DIR`: the whole mesh of a resource directory on one machine.
//!
//! Starts the control plane, then every workload's sidecar, then every
//! application (with `HTTP_PROXY` pointing at its sidecar), prefixes their logs,
//! prints where everything listens, and on Ctrl-C/SIGTERM (or when any child
//! dies) stops them all. Children run in their own process groups so a
//! terminal's Ctrl-C reaches only `up`, which then stops them in order.

pub mod control;
pub mod proxy;
mod state;
mod supervisor;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::ResourceSet;

pub use state::{ReadyFile, StateDir};
use supervisor::{Child, Supervisor};

/// Arguments of `meshwork up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Directory of *.yaml resources (e.g. examples/store-billing).
    pub dir: PathBuf,
    /// Where the CA, sockets, pids and ready files live.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// How long to wait for each process to become ready.
    #[arg(long, default_value = "20", value_name = "SECONDS")]
    pub ready_timeout: u64,
}

/// Runs `up` until a signal or a child's exit.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let set = api::load_dir(&args.dir)?;
    let state = StateDir::claim(&args.state_dir)?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let code = rt.block_on(async {
        let mut sup = Supervisor::new();
        let started = start_all(&mut sup, &set, &args, &state).await;
        let code = match started {
            Ok(()) => sup.wait_for_stop().await,
            Err(e) => {
                eprintln!("[up] error: {e:#}");
                ExitCode::from(1)
            }
        };
        sup.stop_all(Duration::from_secs(5)).await;
        code
    });
    state.release();
    Ok(code)
}

async fn start_all(
    sup: &mut Supervisor,
    set: &ResourceSet,
    args: &UpArgs,
    state: &StateDir,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the meshwork binary")?;
    let timeout = Duration::from_secs(args.ready_timeout);
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let control = Child::meshwork(&exe, "control")
        .args(["--resources".as_ref(), dir.as_os_str()])
        .args(["--state-dir".as_ref(), state.path().as_os_str()])
        .args(["--socket".as_ref(), state.control_socket().as_os_str()]);
    sup.spawn("control", control)?;
    sup.wait_for_socket("control", &state.control_socket(), timeout)
        .await?;

    let mut apps = Vec::new();
    for w in &set.workloads {
        let w = &w.resource;
        let name = w.metadata.name.to_string();
        let port = match w.spec.port {
            Some(p) => p,
            None => state::free_port().context("allocating an application port")?,
        };
        let ready = state.ready_file(&name);
        let _ = std::fs::remove_file(&ready);
        let mut proxy = Child::meshwork(&exe, "proxy")
            .args(["--workload", &name, "--app", &format!("127.0.0.1:{port}")])
            .args([
                "--control-socket".as_ref(),
                state.control_socket().as_os_str(),
            ])
            .args(["--ready-file".as_ref(), ready.as_os_str()]);
        if w.spec.protocol == api::mesh::AppProtocol::Http2 {
            proxy = proxy.args(["--app-http2"]);
        }
        sup.spawn(&format!("{name}/proxy"), proxy)?;
        apps.push((name, port, ready));
    }
    let mut table = Vec::new();
    for (name, port, ready) in apps {
        let info = sup
            .wait_for_ready(&format!("{name}/proxy"), &ready, timeout)
            .await?;
        let Some(w) = set.workload(&name) else {
            continue;
        };
        let app = Child::app(&exe, &w.spec.command, &dir)
            .envs(&w.spec.env)
            .env("PORT", &port.to_string())
            .env("MESHWORK_WORKLOAD", &name)
            .proxy_env(&info.outbound.to_string());
        sup.spawn(&format!("{name}/app"), app)?;
        table.push((name, port, info));
    }
    for (name, port, _) in &table {
        sup.wait_for_port(&format!("{name}/app"), *port, timeout)
            .await?;
    }
    print_table(&table, state);
    Ok(())
}

fn print_table(rows: &[(String, u16, ReadyFile)], state: &StateDir) {
    println!("[up] meshwork is up; state in {}", state.path().display());
    let w = rows.iter().map(|(n, ..)| n.len()).max().unwrap_or(8).max(8);
    let id = rows
        .iter()
        .map(|(.., i)| i.spiffe_id.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "[up] {:<w$}  {:<id$}  {:<15}  {:<15}  {}",
        "WORKLOAD", "SPIFFE ID", "APP", "INBOUND (mTLS)", "OUTBOUND (proxy)"
    );
    for (name, port, info) in rows {
        let app = format!("127.0.0.1:{port}");
        println!(
            "[up] {name:<w$}  {:<id$}  {app:<15}  {:<15}  {}",
            info.spiffe_id,
            info.inbound.to_string(),
            info.outbound
        );
    }
    println!("[up] try: meshwork exec store -- curl -s -X POST http://billing/charges");
    println!("[up] ready");
}
