//! `meshwork up DIR`: the whole mesh of a resource directory on one machine.
//!
//! Starts the control plane, then every workload's sidecar, then every
//! application (with `HTTP_PROXY` pointing at its sidecar), prefixes their logs,
//! prints where everything listens, and on Ctrl-C/SIGTERM (or when any child
//! dies) stops them all. Children run in their own process groups so a
//! terminal's Ctrl-C reaches only `up`, which then stops them in order.

mod claims;
pub mod control;
mod node_agent;
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
    /// The environment `ServiceClaim`s are provisioned in (the broker's policy maps it to
    /// providers and sizes; sent as the OSB context's `clusterid`).
    #[arg(long, default_value = "dev", env = "MESHWORK_ENVIRONMENT")]
    pub environment: String,
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
        .args(["--socket".as_ref(), state.control_socket().as_os_str()])
        // A fixed port, so a restarted control plane is where the agent last saw it.
        .args([
            "--node-api",
            &format!(
                "127.0.0.1:{}",
                state::free_port().context("allocating the node API port")?
            ),
        ]);
    sup.spawn_restartable("control", control)?;
    sup.wait_for_socket("control", &state.control_socket(), timeout)
        .await?;
    let agent_socket = node_agent::start(sup, &exe, state, timeout).await?;

    let ports = app_ports(set)?;
    let dns = egress_dns(set, &ports);
    let mut apps = Vec::new();
    for w in &set.workloads {
        let w = &w.resource;
        let name = w.metadata.name.to_string();
        let port = ports
            .get(&name)
            .copied()
            .context("no port for a workload")?;
        let ready = state.ready_file(&name);
        let _ = std::fs::remove_file(&ready);
        let mut proxy = Child::meshwork(&exe, "proxy")
            .args(["--workload", &name, "--app", &format!("127.0.0.1:{port}")])
            .args([
                "--control-socket".as_ref(),
                state.control_socket().as_os_str(),
            ])
            .args(["--ready-file".as_ref(), ready.as_os_str()])
            .args(["--workload-api".as_ref(), agent_socket.as_os_str()]);
        if w.spec.protocol == api::mesh::AppProtocol::Http2 {
            proxy = proxy.args(["--app-http2"]);
        }
        if let Some(dns) = dns {
            proxy = proxy.args(["--dns", &dns.to_string()]);
        }
        sup.spawn(&format!("{name}/proxy"), proxy)?;
        let id = set
            .workload_id(&name)
            .context("workload without an identity")?;
        node_agent::register(
            sup,
            state,
            &format!("{name}/proxy"),
            &format!("up-{name}"),
            id,
        )
        .await?;
        apps.push((name, port, ready));
    }
    let claims_ctx = claims::ClaimsContext {
        exe: &exe,
        dir: &dir,
        environment: &args.environment,
        timeout,
    };
    let bindings = claims::deliver(sup, set, state, &claims_ctx).await?;
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
            .envs(&bindings.env_for(&name))
            .env("PORT", &port.to_string())
            .env("MESHWORK_WORKLOAD", &name)
            .env("MESHWORK_STATE_DIR", &state.path().to_string_lossy())
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

/// Every workload's application port: its `spec.port`, or a free one.
fn app_ports(set: &ResourceSet) -> anyhow::Result<std::collections::BTreeMap<String, u16>> {
    set.workloads
        .iter()
        .map(|w| {
            let port = match w.resource.spec.port {
                Some(p) => p,
                None => state::free_port().context("allocating an application port")?,
            };
            Ok((w.resource.metadata.name.to_string(), port))
        })
        .collect()
}

/// The DNS server sidecars resolve egress names with (`Mesh` `spec.dns`), if any.
fn egress_dns(
    set: &ResourceSet,
    ports: &std::collections::BTreeMap<String, u16>,
) -> Option<std::net::SocketAddr> {
    match set.mesh()?.spec.dns.as_ref()? {
        api::mesh::DnsSpec::Server(addr) => Some(*addr),
        api::mesh::DnsSpec::Workload(name) => {
            let port = ports.get(name.as_str())?;
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], *port)))
        }
    }
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
        "[up] {:<w$}  {:<id$}  {:<15}  {:<15}  OUTBOUND (proxy)",
        "WORKLOAD", "SPIFFE ID", "APP", "INBOUND (mTLS)"
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
