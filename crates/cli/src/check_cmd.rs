//! `meshwork check`: SVID and CA expiry, agent <-> control connectivity, clock skew.
//! Exits 1 when anything is wrong now; warnings (e.g. a CA expiring soon) exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use api::contract::admin::Status;
use api::contract::client::{Client, NoBody, UnixConnect};
use control::check::{CheckInput, Level, evaluate};

/// Arguments of `meshwork check`.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// State directory of the control plane.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// An agent's admin address; `<state-dir>/agent-admin.addr` when present.
    #[arg(long)]
    pub agent: Option<SocketAddr>,
    /// Warn this long before a CA expires.
    #[arg(long, default_value = "30d")]
    pub ca_warn: api::duration::HumanDuration,
}

/// Runs the checks and prints one line per finding.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let client = Client::new(UnixConnect(args.state_dir.join("control.sock")));
    let agent = args.agent.or_else(|| {
        let text = std::fs::read_to_string(args.state_dir.join("agent-admin.addr")).ok()?;
        text.trim().parse().ok()
    });
    let input = rt.block_on(async {
        CheckInput {
            control: client.call(&Status, &NoBody).await.map_err(|e| e.chain()),
            agent: match agent {
                Some(addr) => Some(control::agent::fetch_status(addr).await),
                None => None,
            },
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
            ca_warn_secs: i64::try_from(args.ca_warn.get().as_secs()).unwrap_or(i64::MAX),
        }
    });
    let findings = evaluate(&input);
    for f in &findings {
        println!("{f}");
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    Ok(if worst == Level::Error {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
