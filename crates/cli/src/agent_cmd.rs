//! `meshwork agent`: the node agent (SPIFFE Workload API) as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::{logging, parent};

/// Arguments of `meshwork agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// One-time join token from `meshwork token create` (not needed to resume with a
    /// node SVID saved in --data-dir). Tokens are base64url, so one may start with `-`.
    #[arg(
        long,
        env = "MESHWORK_JOIN_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true
    )]
    pub join_token: Option<String>,
    /// Where the node SVID and key are kept (0600); `<state-dir>/agent` by default.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// State directory of the control plane (for the defaults below).
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The control plane's node API, `IP:PORT` or `HOST:PORT` (a name is resolved once, at
    /// start: a Kubernetes Service's cluster IP does not move); repeat it for each
    /// control-plane replica (the agent fails over between them). Read from
    /// `<state-dir>/node-api.addr` (one address per line) by default.
    #[arg(long, value_name = "ADDR")]
    pub control: Vec<String>,
    /// Roots to trust the control plane with before joining; `<state-dir>/bundle.pem` by default.
    #[arg(long)]
    pub trust_bundle: Option<PathBuf>,
    /// The Workload API socket to serve; `<state-dir>/agent.sock` by default.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Serve `/metrics` and `/status` here (loopback only).
    #[arg(long)]
    pub admin: Option<SocketAddr>,
}

/// `--control`: an `IP:PORT`, or a `HOST:PORT` resolved once (its first address).
fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs as _;
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    addr.to_socket_addrs()
        .with_context(|| format!("--control {addr}: not IP:PORT, and HOST:PORT does not resolve"))?
        .next()
        .with_context(|| format!("--control {addr}: the name has no address"))
}

/// The node API addresses in `path`, one per line (blank lines ignored).
fn read_addrs(path: &std::path::Path) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (is the control plane running? or pass --control)",
            path.display()
        )
    })?;
    let addrs = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            line.trim()
                .parse()
                .with_context(|| format!("{}:{}: not IP:PORT", path.display(), n + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!addrs.is_empty(), "{} holds no address", path.display());
    Ok(addrs)
}

/// Runs the agent until SIGINT/SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let control = match args.control.as_slice() {
        [] => read_addrs(&args.state_dir.join("node-api.addr"))?,
        given => given
            .iter()
            .map(|a| resolve(a))
            .collect::<anyhow::Result<_>>()?,
    };
    if let Some(admin) = args.admin
        && !admin.ip().is_loopback()
    {
        bail!("--admin {admin}: only loopback addresses are allowed");
    }
    let bundle_path = args
        .trust_bundle
        .unwrap_or_else(|| args.state_dir.join("bundle.pem"));
    let pem = std::fs::read_to_string(&bundle_path)
        .with_context(|| format!("reading {}", bundle_path.display()))?;
    let trust_domain = control::agent::trust_domain_of(&pem).with_context(|| {
        format!(
            "{} holds no root with a spiffe://<trust domain> URI SAN",
            bundle_path.display()
        )
    })?;
    let bootstrap_bundle = identity::TrustBundle::from_pem(trust_domain.clone(), &pem)
        .with_context(|| format!("reading {}", bundle_path.display()))?;
    let config = control::agent::AgentConfig {
        control,
        trust_domain,
        bootstrap_bundle,
        join_token: args.join_token,
        data_dir: Some(
            args.data_dir
                .unwrap_or_else(|| args.state_dir.join("agent")),
        ),
        socket: args
            .socket
            .unwrap_or_else(|| args.state_dir.join("agent.sock")),
        admin: args.admin,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(control::agent::run(config, parent::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn control_takes_an_address_or_a_name() {
        let ip = resolve("127.0.0.1:8443").map(|a| a.to_string());
        assert_eq!(ip.ok().as_deref(), Some("127.0.0.1:8443"));
        let named = resolve("localhost:8443").map(|a| a.port());
        assert_eq!(named.ok(), Some(8443));
        let error = resolve("no-port").map_err(|e| format!("{e:#}"));
        assert!(error.is_err_and(|e| e.contains("--control no-port")));
    }
}
