//! `meshwork guard -- CMD…`: how `up` runs an application, so that nothing outlives `up`.
//!
//! meshwork's own children watch `MESHWORK_PARENT_PID` and stop when `up` is gone, but an
//! application (a Python server, a shell script, a `sleep`) knows nothing of it: with `up`
//! killed by `kill -9` it would keep running, re-parented to init. So `up` starts every
//! application under this guard, which leads the application's process group:
//!
//! - it asks the kernel to SIGTERM it when its parent dies (`PR_SET_PDEATHSIG`, set on
//!   itself after exec: no `pre_exec`, so no `unsafe`), and polls its parent pid as well;
//! - when `up` is gone, or sends SIGTERM/SIGINT/SIGHUP, it SIGTERMs its whole process group
//!   (the application and whatever it started that stayed in the group), waits up to
//!   `--grace` for the group to empty, then SIGKILLs the group — itself included;
//! - when the application ends on its own, it clears what is left of the group the same way
//!   and exits with the application's status (128+N for signal N), which `up` reports.
//!
//! The application gets the guard's environment (so `MESHWORK_PARENT_PID` names the guard,
//! which is what a `meshwork demo` application must watch) and no stdin. Limits: a process
//! that leaves the group on purpose (`setsid`, a daemon's double fork) escapes it — a
//! cgroup would not, but needs privileges `up` does not assume — and so does the group of
//! a guard that someone else SIGKILLs (while `up` lives, `up` still stops that group).
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the guard ends; `up` spawns from
//! the thread running its main future, which lives as long as `up` (the pid poll covers
//! the rest).

use std::process::{ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::process::Command;
use tokio::time::Instant;

use super::group;
use super::signals::StopSignals;
use crate::parent::{self, PARENT_PID_ENV};

/// Arguments of `meshwork guard` (hidden: `up` runs it).
#[derive(clap::Args)]
pub struct GuardArgs {
    /// How long the group has after SIGTERM before SIGKILL.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    grace: u64,
    /// The application and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs the application until it ends or `up` stops it; exits with its status.
pub fn run(args: GuardArgs) -> anyhow::Result<ExitCode> {
    // First: from here on, `up` dying means a SIGTERM here, whatever killed it.
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM) {
        eprintln!("meshwork guard: PR_SET_PDEATHSIG failed ({e}); watching the parent pid only");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(guard(args))
}

async fn guard(args: GuardArgs) -> anyhow::Result<ExitCode> {
    let mut signals = StopSignals::install().context("installing signal handlers")?;
    // `up` may have died before PR_SET_PDEATHSIG took effect: then nothing would tell us.
    if parent::is_gone() {
        return Ok(ExitCode::FAILURE);
    }
    let (program, rest) = args.command.split_first().context("no command given")?;
    let grace = Duration::from_secs(args.grace);
    let me = std::process::id();
    let spawned = Command::new(program)
        .args(rest)
        .env(PARENT_PID_ENV, me.to_string())
        .stdin(Stdio::null())
        .spawn();
    let mut app = match spawned {
        Ok(app) => app,
        Err(e) => {
            eprintln!("cannot run {program:?}: {e}");
            // The shell's convention: 127 not found, 126 found but not runnable.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return Ok(ExitCode::from(code));
        }
    };
    let ended_alone = tokio::select! {
        status = app.wait() => Some(status),
        _ = signals.recv() => None,
        () = parent::gone() => None,
    };
    let status = match ended_alone {
        Some(status) => Some(status),
        None => {
            group::signal(me, Signal::SIGTERM);
            tokio::time::timeout(grace, app.wait()).await.ok()
        }
    };
    clear_group(me, grace).await;
    Ok(match status {
        Some(Ok(status)) => exit_code(status),
        _ => ExitCode::FAILURE,
    })
}

/// Makes sure nothing but the guard is left in its group: SIGTERM, up to `grace`, SIGKILL.
async fn clear_group(me: u32, grace: Duration) {
    if group::members(me, Some(me)).is_empty() {
        return;
    }
    group::signal(me, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if group::members(me, Some(me)).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // This ends the guard too; `up` then reports a SIGKILL, which is what happened.
    group::signal(me, Signal::SIGKILL);
}

/// The application's status as ours: its code, or 128+N when signal N ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn the_app_status_is_passed_on() {
        let code = |raw| format!("{:?}", exit_code(ExitStatus::from_raw(raw)));
        assert_eq!(code(3 << 8), format!("{:?}", ExitCode::from(3)));
        assert_eq!(code(15), format!("{:?}", ExitCode::from(128 + 15)));
    }
}
