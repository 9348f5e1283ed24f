//! `meshwork`: the one binary. Subcommands run the control plane, a sidecar
//! proxy, the broker, or a whole directory of resources (`up`).
//!
//! The only crate allowed to use `anyhow`, and the only one that wires the
//! others together; it owns no protocol logic of its own.

mod agent_cmd;
mod broker_cmd;
mod ca_cmd;
mod check_cmd;
mod claims;
mod columns;
mod crds_cmd;
mod dashboard;
mod demo;
mod entry_cmd;
mod exec;
mod fanout_cmd;
mod kubernetes;
#[cfg(test)]
mod layering;
mod logging;
mod observe;
mod parent;
mod pod_ruleset_cmd;
mod pods;
mod policy_cmd;
mod sidecar_admin;
mod state;
mod token_cmd;
mod up;
mod validate_cmd;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: fewer instructions per allocation on the data path
/// (the sidecar allocates per request: hyper, h2, tower), measured in issue 16.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A service mesh with SPIFFE workload identity, L7 policy, and a service broker.
#[derive(Parser)]
#[command(name = "meshwork", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a control plane, every workload and its sidecar from a resource directory.
    Up(up::UpArgs),
    /// Run a command as a workload: its HTTP(S)_PROXY points at the workload's sidecar.
    Exec(exec::ExecArgs),
    /// Check a resource directory and print what it defines.
    Validate {
        /// Directory of *.yaml resources.
        dir: PathBuf,
    },
    /// Print the CustomResourceDefinition of every kind (`--dir deploy/crds` writes the files).
    Crds(crds_cmd::CrdsArgs),
    /// Run the control plane (normally started by `up`).
    Control(up::control::ControlArgs),
    /// Run one workload's sidecar proxy (normally started by `up`).
    Proxy(up::proxy::ProxyArgs),
    /// Explain and test policies: `policy explain`, `policy test FILE` (exit 1 on deny/mismatch).
    Policy(policy_cmd::PolicyArgs),
    /// Run a node agent: joins the control plane, serves the SPIFFE Workload API.
    Agent(agent_cmd::AgentArgs),
    /// Join tokens for agents: `token create [--ttl 10m]`.
    Token(token_cmd::TokenArgs),
    /// Registration entries: `entry create|list|delete`.
    Entry(entry_cmd::EntryArgs),
    /// The CA: `ca rotate`, `ca status`.
    Ca(ca_cmd::CaArgs),
    /// Check SVID/CA expiry, agent-control connectivity and clock skew (exit 1 on a problem).
    Check(check_cmd::CheckArgs),
    /// Success rate, requests per second and latency per workload, route or peer, from every
    /// sidecar of the running mesh (docs/observe.md).
    Stat(observe::stat::StatArgs),
    /// `stat`, redrawn every second, busiest first, until Ctrl-C.
    Top(observe::top::TopArgs),
    /// Who calls whom: caller and callee SPIFFE IDs, mTLS, requests, success rate.
    Edges(observe::edges::EdgesArgs),
    /// Stream the requests passing a workload's sidecars as they finish.
    Tap(observe::tap::TapArgs),
    /// Serve a live web page of the running mesh (graph, golden metrics, denials, identities,
    /// claims) on loopback; `up` starts one too.
    Dashboard(dashboard::DashboardArgs),
    /// Run the Open Service Broker (OSB v2.17); `broker purge` deprovisions a state file's instances.
    Broker(broker_cmd::BrokerArgs),
    /// Service claims: `claims delete DIR NAME…` deprovisions (database and users dropped).
    Claims(claims::ClaimsArgs),
    /// Demo applications for examples/store-billing (plain HTTP, mesh-unaware).
    #[command(hide = true)]
    Demo(demo::DemoArgs),
    /// Run an application for `up`, stopping its process group when `up` is gone.
    #[command(hide = true)]
    Guard(up::guard::GuardArgs),
    #[command(hide = true)]
    PodRuleset,
    /// Create and remove pods (network namespaces) without the rest of `up` (tests).
    #[command(hide = true)]
    Pods(pods::cmd::PodsArgs),
    /// Simulate N sidecars long-polling the control plane and measure a change's fan-out
    /// (bench/fanout).
    #[command(hide = true)]
    Fanout(fanout_cmd::FanoutArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Validate { dir } => validate_cmd::run(&dir),
        Command::Crds(args) => crds_cmd::run(args),
        Command::Control(args) => up::control::run(args),
        Command::Proxy(args) => up::proxy::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Agent(args) => agent_cmd::run(args),
        Command::Token(args) => token_cmd::run(args),
        Command::Entry(args) => entry_cmd::run(args),
        Command::Ca(args) => ca_cmd::run(args),
        Command::Check(args) => check_cmd::run(args),
        Command::Stat(args) => observe::stat::run(args),
        Command::Top(args) => observe::top::run(args),
        Command::Edges(args) => observe::edges::run(args),
        Command::Tap(args) => observe::tap::run(args),
        Command::Broker(args) => broker_cmd::run(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Claims(args) => claims::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Guard(args) => up::guard::run(args),
        Command::PodRuleset => pod_ruleset_cmd::run(),
        Command::Pods(args) => pods::cmd::run(args),
        Command::Fanout(args) => fanout_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshwork: error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
