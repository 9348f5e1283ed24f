//! `meshwork up DIR`: the whole mesh of a resource directory on one machine.
//!
//! Starts the control plane, then every workload's sidecar, then every
//! application (with `HTTP_PROXY` pointing at its sidecar), then the dashboard
//! (`meshwork dashboard`, on loopback), prefixes their logs,
//! prints where everything listens, and on Ctrl-C/SIGTERM (or when a child that is not
//! restarted dies) stops them all. A workload with `spec.replicas` N runs N copies of
//! its application, each with its own sidecar (`instances.rs`). Children run in their own process groups so a
//! terminal's Ctrl-C reaches only `up`, which then stops them in order.
//!
//! Every path out of `up` goes through [`Supervisor::stop_all`]: a stop signal at any
//! stage of the startup (the handlers are installed before the first child), a child
//! that ends before `up` is ready (reported with its last output), a startup step that
//! fails or does not finish within `--ready-timeout`, and a child dying later.
//!
//! The top of the `cli` layering (`layering.rs`): uses `state`, `claims`, `broker_cmd`,
//! `logging`, `parent`; nothing but `main` imports `up`.

mod apps;
mod claims;
pub mod control;
mod control_plane;
mod dashboard;
mod group;
pub mod guard;
mod hosts;
mod instances;
mod isolation;
mod node_agent;
mod ports;
pub mod proxy;
mod sidecars;
mod signals;
mod supervisor;
mod table;
pub mod trace_flags;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use api::ResourceSet;

use crate::pods::{IsolationArg, PodPlan};
use crate::state::StateDir;
use instances::Instance;
use signals::StopSignals;
use supervisor::{Ends, Supervisor};

/// How long children have to stop after SIGTERM before `up` SIGKILLs them.
const GRACE: Duration = Duration::from_secs(5);

const UP_HELP: &str = "\
Output: `up` prints its own progress lines and, once everything serves, a table of each
workload's identity and addresses (APP, INBOUND, OUTBOUND, ADMIN) and the dashboard's
address (`meshwork dashboard`: a live page of the mesh, on loopback), then `[up] ready`.
meshwork's own children (control plane, node agent, sidecars, broker) print only warnings
and errors (and policy reloads and audit-mode findings), each line prefixed with [name];
-v shows all their INFO logs, -vv DEBUG. RUST_LOG
(e.g. RUST_LOG=info,proxy=debug) overrides both and is passed on to them. Applications'
own output is always shown, prefixed with [<workload>/app].

Replicas: a Workload with `replicas: N` runs N copies of its application, each with its own
PORT (and MESHWORK_REPLICA=0..N-1), sidecar and ready file, all with the workload's one SPIFFE
ID; they are named <workload>-0 … <workload>-N-1 in logs and the table. `meshwork exec
<workload>` acts through replica 0's sidecar (`--replica N` picks another).

Isolation (--isolation): `pods` runs each workload replica in a network namespace of its own
(`mw<slot>-<workload>-<replica>`, an address from Mesh spec.pods.network on the bridge
mwbr<slot>), its app unprivileged (a uid of its own, no capabilities) and captured by its sidecar; `off` is proxy mode
(apps share the host network and reach their sidecar through HTTP_PROXY); `auto` (the default)
is pods where `up` can create them (root, `ip`, `nft`), else off, said in one line. Workloads
with `hostNetwork: true` run as in proxy mode. Everything pods use is recorded in
<state>/pods.json and removed when `up` stops; after a `kill -9`, the next `up` on the same
state directory removes it first.

Simulated hosts (--hosts a,b, pod mode only): each host is a network namespace
(`mw<f>-host-<name>`) with an address on a fabric bridge (mwbr<f>, whose .1 is where the
control plane's node API listens), its own /24 of pods on a bridge inside it, and its own node
agent (`meshwork agent`, run in the host, joined over the fabric; socket and data under
<state>/hosts/<name>/). Hosts route to each other's pods over the fabric and nowhere else.
`--place W=H` puts workload W's pods on host H; the rest go on the first host. Sidecars run
beside `up` but dial peer sidecars from their pod's host, so a call between pods on two hosts
crosses the fabric (mTLS); `hostNetwork` workloads are on no host.

Stopping: Ctrl-C (SIGINT), SIGTERM or SIGHUP stops every process `up` started, at any
stage: SIGTERM to each process group, 5 s grace, then SIGKILL (a second Ctrl-C kills at
once). A child that exits during startup, or is not ready within --ready-timeout, stops
everything and `up` exits 1 naming it. Once ready, the control plane, the node agent, the
dashboard and each replica's application (of a Workload with replicas above 1) are restarted
when they die, up to 5 times each, while the rest serves; any other child's end stops
everything (exit 1). Applications run under `meshwork guard`, which
stops them (and what they started) even when `up` itself is killed with SIGKILL.";

/// Arguments of `meshwork up`.
#[derive(clap::Args)]
#[command(after_long_help = UP_HELP)]
pub struct UpArgs {
    /// Directory of *.yaml resources (e.g. examples/store-billing).
    pub dir: PathBuf,
    /// Where the CA, sockets, pids and ready files live.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// How long to wait for each meshwork process (control plane, agent, sidecars, broker) to
    /// become ready, and for each call to the control plane during startup; past it, `up`
    /// stops everything and exits 1. Applications have `--app-timeout`.
    #[arg(long, default_value = "20", value_name = "SECONDS")]
    pub ready_timeout: u64,
    /// How long an application may take to open its port once started; past that, `up`
    /// names the workload and stops everything.
    #[arg(long, default_value = "30", value_name = "SECONDS")]
    pub app_timeout: u64,
    /// The environment `ServiceClaim`s are provisioned in (the broker's policy maps it to
    /// providers and sizes; sent as the OSB context's `clusterid`).
    #[arg(long, default_value = "dev", env = "MESHWORK_ENVIRONMENT")]
    pub environment: String,
    /// Show the children's logs: -v their INFO lines, -vv DEBUG (default: warnings and
    /// errors only; RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Pod mode: `pods` runs each workload replica in a network namespace of its own, its
    /// traffic captured by its sidecar (needs root, `ip` and `nft`); `off` is proxy mode
    /// (apps reach their sidecar through HTTP_PROXY); `auto` is pods where possible.
    #[arg(long, value_enum, default_value_t = IsolationArg::Auto, env = "MESHWORK_ISOLATION")]
    pub isolation: IsolationArg,
    /// Pod mode on several simulated hosts (comma-separated names): each a network namespace
    /// with its own address on a fabric bridge, its own pod subnet and its own node agent;
    /// a request between pods on two hosts crosses the fabric.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub hosts: Vec<String>,
    /// With --hosts: run workload W's pods on host H (repeatable); workloads not placed go
    /// on the first host.
    #[arg(long, value_name = "W=H", requires = "hosts")]
    pub place: Vec<String>,
    /// Control-plane replicas and their shared store.
    #[command(flatten)]
    pub control: control_plane::ControlPlaneArgs,
}

/// Runs `up` until a signal or a child's exit.
pub fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let set = api::load_dir(&args.dir)?;
    let placement = hosts::Placement::from_args(&set, &args.hosts, &args.place)?;
    let state = StateDir::claim(&args.state_dir)?;
    let pods = match isolation::prepare(&state, args.isolation) {
        Ok(false) if placement.is_some() => Err(anyhow::anyhow!(
            "--hosts needs pod mode (root, `ip` and `nft`), which is off here"
        )),
        Ok(pods) => Ok(pods.then_some(placement)),
        Err(e) => Err(e),
    };
    let pods = match pods {
        Ok(pods) => pods,
        Err(e) => {
            state.release();
            return Err(e);
        }
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let code = rt.block_on(supervise(&set, &args, &state, pods));
    state.release();
    Ok(code)
}

/// Starts everything, runs until a stop, and stops everything — on every path.
async fn supervise(set: &ResourceSet, args: &UpArgs, state: &StateDir, pods: Pods) -> ExitCode {
    let mut signals = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("[up] error: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let level = match args.verbose {
        0 => crate::logging::UP_QUIET,
        1 => "info",
        _ => "debug",
    };
    let (mut sup, mut ends) = Supervisor::new(Some(level.to_owned()));
    let code = match startup(&mut sup, &mut ends, &mut signals, set, args, state, pods).await {
        Ok(()) => run_until_stop(&mut sup, &mut ends, &mut signals).await,
        Err(code) => code,
    };
    sup.stop_all(GRACE, &mut signals).await;
    stop_private_postgres(state).await;
    // Once nothing runs in them.
    isolation::remove_pods(state.path());
    code
}

/// The broker stops its private PostgreSQL cluster when it stops; one it could not stop
/// (killed by a second Ctrl-C, or by anyone) leaves a postmaster that is in no process group
/// `up` started. Stop it here, so that nothing `up` caused outlives it.
async fn stop_private_postgres(state: &StateDir) {
    let home = state.path().join("postgres-private");
    if !home.exists() {
        return;
    }
    let cluster = broker::provider::pgdev::PostgresDevProvider::new(
        crate::broker_cmd::PRIVATE_POSTGRES,
        &home,
    );
    match cluster.stop_left_running().await {
        Ok(true) => {
            eprintln!("[up] stopped the private PostgreSQL cluster the broker left running")
        }
        Ok(false) => {}
        Err(e) => eprintln!("[up] warning: the private PostgreSQL cluster may still run: {e}"),
    }
}

/// Pod mode: `None` off, `Some(None)` pods on this machine, `Some(Some(_))` on simulated
/// hosts.
type Pods = Option<Option<hosts::Placement>>;

/// Why the startup did not finish.
enum Cut {
    Signal(signals::Caught),
    Ended(supervisor::Ended),
    Error(anyhow::Error),
}

/// [`start_all`], raced against the stop signals and the end of any child. On failure,
/// reports what happened and returns `up`'s exit status.
async fn startup(
    sup: &mut Supervisor,
    ends: &mut Ends,
    signals: &mut StopSignals,
    set: &ResourceSet,
    args: &UpArgs,
    state: &StateDir,
    pods: Pods,
) -> Result<(), ExitCode> {
    let cut = {
        let start = start_all(sup, set, args, state, pods);
        tokio::select! {
            biased;
            caught = signals.recv() => Cut::Signal(caught),
            ended = ends.next() => Cut::Ended(ended),
            started = start => match started {
                Ok(()) => return Ok(()),
                Err(e) => Cut::Error(e),
            },
        }
    };
    let code = match cut {
        Cut::Signal(caught) => {
            eprintln!("[up] {caught} before meshwork was ready; stopping everything it started");
            return Err(ExitCode::from(caught.exit_status()));
        }
        Cut::Ended(ended) => {
            eprintln!(
                "[up] error: {} exited with {} during startup{}",
                ended.name,
                ended.how,
                sup.quoted_tail(&ended.name)
            );
            ExitCode::FAILURE
        }
        Cut::Error(e) => {
            eprintln!("[up] error: {e:#}");
            for (name, how) in sup.ended() {
                eprintln!(
                    "[up] {name} exited with {how} during startup{}",
                    sup.quoted_tail(&name)
                );
            }
            ExitCode::FAILURE
        }
    };
    eprintln!("[up] stopping everything it started");
    Err(code)
}

/// Once ready: until a stop signal (exit 0) or a child's end that is not restarted (exit 1).
async fn run_until_stop(
    sup: &mut Supervisor,
    ends: &mut Ends,
    signals: &mut StopSignals,
) -> ExitCode {
    loop {
        tokio::select! {
            caught = signals.recv() => {
                println!("[up] {caught}: stopping");
                return ExitCode::SUCCESS;
            }
            ended = ends.next() => {
                if sup.restart(&ended).await {
                    continue;
                }
                eprintln!(
                    "[up] {} exited with {}; stopping everything{}",
                    ended.name,
                    ended.how,
                    sup.quoted_tail(&ended.name)
                );
                return ExitCode::FAILURE;
            }
        }
    }
}

/// What `start_all` needs at every step.
struct Launch<'a> {
    exe: PathBuf,
    dir: PathBuf,
    timeout: Duration,
    app_timeout: Duration,
    set: &'a ResourceSet,
    state: &'a StateDir,
    control: control_plane::ControlPlaneArgs,
}

/// A sidecar that was started and whose app waits for it.
struct Pending {
    instance: Instance,
    ready: PathBuf,
    /// Its pod, in pod mode (not for `hostNetwork` workloads).
    pod: Option<PodPlan>,
}

async fn start_all(
    sup: &mut Supervisor,
    set: &ResourceSet,
    args: &UpArgs,
    state: &StateDir,
    pods: Pods,
) -> anyhow::Result<()> {
    let launch = Launch {
        exe: std::env::current_exe().context("finding the meshwork binary")?,
        dir: args
            .dir
            .canonicalize()
            .with_context(|| format!("resolving {}", args.dir.display()))?,
        timeout: Duration::from_secs(args.ready_timeout),
        app_timeout: Duration::from_secs(args.app_timeout),
        set,
        state,
        control: args.control.clone(),
    };
    println!(
        "[up] starting {} workload(s) of {} (state in {}; -v shows the children's logs)",
        set.workloads.len(),
        args.dir.display(),
        state.path().display()
    );
    let instances = instances::plan(set)?;
    let (plane, agents) = start_identity(sup, &launch, &instances, pods).await?;
    let pending = sidecars::start(sup, &launch, &instances, &agents).await?;
    let claims_ctx = claims::ClaimsContext {
        exe: &launch.exe,
        dir: &launch.dir,
        environment: &args.environment,
        timeout: launch.timeout,
    };
    let bindings = claims::deliver(sup, set, state, &claims_ctx).await?;
    let table = apps::start_apps(sup, &launch, pending, &bindings).await?;
    let dashboard = dashboard::start(sup, &launch).await?;
    let agent_socket = agents.socket(None).unwrap_or(Path::new("")).to_owned();
    table::print_table(
        &table,
        &launch,
        &plane.node_api_list(),
        &agent_socket,
        dashboard,
    );
    Ok(())
}

/// The control plane, the node agent(s) and the pods (before any process that would run in
/// them; recorded, so every way out removes them); returns the node API's address. With
/// simulated hosts, the hosts come first: the node API listens on their fabric.
async fn start_identity(
    sup: &mut Supervisor,
    l: &Launch<'_>,
    instances: &[Instance],
    pods: Pods,
) -> anyhow::Result<(control_plane::ControlPlane, sidecars::Agents)> {
    if let Some(Some(placement)) = &pods {
        let mut network = hosts::create(l.set, l.state.path(), instances, placement)?;
        let plane = control_plane::start(sup, l, &l.control, network.fabric_gateway.into()).await?;
        let timeout = l.timeout;
        hosts::start_agents(
            sup,
            &l.exe,
            l.state,
            &mut network,
            &plane.node_apis,
            timeout,
        )
        .await?;
        return Ok((plane, sidecars::Agents::Hosts(network)));
    }
    let localhost = std::net::Ipv4Addr::LOCALHOST.into();
    let plane = control_plane::start(sup, l, &l.control, localhost).await?;
    let place = node_agent::AgentPlace::single(l.state);
    let socket = node_agent::start(sup, &l.exe, l.state, place, l.timeout).await?;
    let pods = match pods {
        Some(_) => isolation::create_pods(l.set, l.state.path(), instances)?,
        None => Default::default(),
    };
    Ok((plane, sidecars::Agents::One { socket, pods }))
}

/// Removes a unix socket file left by an earlier run, if any.
pub(super) fn remove_stale(socket: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the stale socket {}", socket.display()))
        }
        _ => Ok(()),
    }
}
