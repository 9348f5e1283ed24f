//! `meshwork exec WORKLOAD -- CMD...`: run a command as a workload.
//!
//! Reads the state directory (`state`); must not import `up` or `claims`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::state::{ReadyFile, StateDir, proxy_vars};

/// Arguments of `meshwork exec`.
#[derive(clap::Args)]
pub struct ExecArgs {
    /// The workload to act as.
    pub workload: String,
    /// Which replica's sidecar to go through, for a workload with `replicas` (default: 0).
    #[arg(long, value_name = "N")]
    pub replica: Option<u16>,
    /// The state directory of the running `meshwork up`.
    #[arg(long, default_value = ".meshwork", env = "MESHWORK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Replaces this process with the command, its HTTP(S)_PROXY set to the workload's sidecar.
pub fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let state = StateDir::open(&args.state_dir)?;
    if let Some(pid) = state.dead_owner() {
        bail!(
            "the `meshwork up` that ran in {} (pid {pid}) is gone, and its sidecars with it; \
             start it again",
            state.path().display()
        );
    }
    let replica = args.replica.unwrap_or(0);
    let ready_path = state.replica_ready_file(&args.workload, replica);
    if !ready_path.exists() {
        if replica > 0 && state.ready_file(&args.workload).exists() {
            bail!(
                "workload {:?} has no replica {replica} running under {}",
                args.workload,
                state.path().display()
            );
        }
        bail!("{}", not_running(&args.workload, &state));
    }
    let ready = ReadyFile::read(&ready_path)?;
    let (program, rest) = args.command.split_first().context("no command given")?;
    let err = std::process::Command::new(program)
        .args(rest)
        .envs(proxy_vars(&ready.outbound.to_string()))
        .env("MESHWORK_WORKLOAD", &args.workload)
        .env("MESHWORK_REPLICA", replica.to_string())
        .exec();
    bail!("running {program:?}: {err}")
}

/// Why `workload` cannot be acted as, and what can.
fn not_running(workload: &str, state: &StateDir) -> String {
    let running = state.running_workloads();
    let dir = state.path().display();
    if running.is_empty() {
        return format!(
            "no workload is running under {dir} (is `meshwork up` running with this state \
             directory? pass --state-dir DIR or set MESHWORK_STATE_DIR)"
        );
    }
    format!(
        "workload {workload:?} is not running under {dir}; running workloads: {}",
        running.join(", ")
    )
}
