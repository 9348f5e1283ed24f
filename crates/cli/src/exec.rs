//! `meshwork exec WORKLOAD -- CMD...`: run a command as a workload.
//!
//! In proxy mode, with HTTP(S)_PROXY pointing at the workload's sidecar; in pod mode (the
//! state directory's `pods.json` has the workload's pod), inside its pod the way `up` runs
//! its app: unprivileged, captured like it, without proxy variables.
//!
//! Reads the state directory (`state`, `pods`); must not import `up` or `claims`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::pods::{PodPlan, PodsRecord};
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
    if let Some(pod) = pod_of(&state, &args.workload, replica)? {
        return exec_in_pod(&pod, &args.command, replica);
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

/// `workload`'s replica's pod, when `up` runs in pod mode and gave it one.
fn pod_of(state: &StateDir, workload: &str, replica: u16) -> anyhow::Result<Option<PodPlan>> {
    Ok(PodsRecord::load(state.path())?.and_then(|r| r.pod(workload, replica).cloned()))
}

/// Replaces this process with `command` run inside `pod` (`ip netns exec`, `setpriv`).
fn exec_in_pod(pod: &PodPlan, command: &[String], replica: u16) -> anyhow::Result<ExitCode> {
    let command: Vec<std::ffi::OsString> = command.iter().map(Into::into).collect();
    let argv = crate::pods::app::in_pod(&pod.netns, &command);
    let (program, rest) = argv.split_first().context("no command given")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(rest)
        .env("MESHWORK_WORKLOAD", &pod.workload)
        .env("MESHWORK_REPLICA", replica.to_string())
        .env("MESHWORK_POD_IP", pod.ip.to_string());
    for var in crate::pods::app::PROXY_VARS {
        cmd.env_remove(var);
    }
    let err = cmd.exec();
    bail!(
        "running {:?} in the pod {} (pod mode needs root, like `meshwork up`): {err}",
        command
            .first()
            .map(|c| c.to_string_lossy())
            .unwrap_or_default(),
        pod.netns
    )
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
