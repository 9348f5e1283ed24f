//! Child processes of `up`: spawning with prefixed logs, readiness, ordered stop.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::ReadyFile;
use crate::parent::PARENT_PID_ENV;

/// A command to run under `up`.
pub struct Child(Command);

impl Child {
    /// `meshwork <sub>` from this very binary.
    pub fn meshwork(exe: &Path, sub: &str) -> Child {
        let mut cmd = Command::new(exe);
        cmd.arg(sub);
        Child(cmd)
    }

    /// A workload's application; `meshwork` as argv\[0\] means this binary.
    pub fn app(exe: &Path, argv: &[String], cwd: &Path) -> Child {
        let program = match argv.first().map(String::as_str) {
            Some("meshwork") | None => exe.as_os_str().to_owned(),
            Some(other) => other.into(),
        };
        let mut cmd = Command::new(program);
        cmd.args(argv.iter().skip(1)).current_dir(cwd);
        Child(cmd)
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.0.args(args);
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Child {
        self.0.env(k, v);
        self
    }

    /// Sets environment variables.
    pub fn envs(mut self, vars: &BTreeMap<String, String>) -> Child {
        self.0.envs(vars);
        self
    }

    /// Sends the child's HTTP(S) traffic through a sidecar (see [`crate::exec::proxy_vars`]).
    pub fn proxy_env(mut self, outbound: &str) -> Child {
        self.0.envs(crate::exec::proxy_vars(outbound));
        self
    }
}

struct Running {
    name: String,
    child: tokio::process::Child,
    /// For children restarted when they die (the control plane): how to start them again.
    restart: Option<Command>,
    restarts: u32,
}

/// A restartable child that dies more often than this is given up on.
const MAX_RESTARTS: u32 = 5;

/// The set of running children, stopped in reverse start order.
pub struct Supervisor {
    children: Vec<Running>,
}

impl Supervisor {
    /// No children yet.
    pub fn new() -> Supervisor {
        Supervisor {
            children: Vec::new(),
        }
    }

    /// Starts `child` in its own process group with its output prefixed by `[name]`.
    pub fn spawn(&mut self, name: &str, Child(mut cmd): Child) -> anyhow::Result<()> {
        let child = start(name, &mut cmd)?;
        self.children.push(Running {
            name: name.to_owned(),
            child,
            restart: None,
            restarts: 0,
        });
        Ok(())
    }

    /// As [`Supervisor::spawn`], and restarted (up to [`MAX_RESTARTS`] times) when it
    /// dies: the control plane, whose loss the data plane rides out (static stability).
    pub fn spawn_restartable(&mut self, name: &str, Child(mut cmd): Child) -> anyhow::Result<()> {
        let child = start(name, &mut cmd)?;
        self.children.push(Running {
            name: name.to_owned(),
            child,
            restart: Some(cmd),
            restarts: 0,
        });
        Ok(())
    }

    /// The pid of a running child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.iter().find(|c| c.name == name)?.child.id()
    }

    /// Waits until a unix socket accepts connections.
    pub async fn wait_for_socket(
        &mut self,
        name: &str,
        path: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_until(name, timeout, || {
            std::os::unix::net::UnixStream::connect(path)
                .is_ok()
                .then_some(())
        })
        .await
    }

    /// Waits until an application accepts connections on its loopback port.
    pub async fn wait_for_port(
        &mut self,
        name: &str,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        self.wait_until(name, timeout, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        })
        .await
    }

    /// Waits until a sidecar has written its ready file.
    pub async fn wait_for_ready(
        &mut self,
        name: &str,
        path: &Path,
        timeout: Duration,
    ) -> anyhow::Result<ReadyFile> {
        self.wait_until(name, timeout, || ReadyFile::read(path).ok())
            .await
    }

    async fn wait_until<T>(
        &mut self,
        name: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = probe() {
                return Ok(v);
            }
            if let Some(status) = self.exited(name) {
                bail!("{name} exited ({status}) before it was ready; see its log above");
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} was not ready within {}s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let c = self.children.iter_mut().find(|c| c.name == name)?;
        c.child.try_wait().ok().flatten()
    }

    /// Waits for SIGINT/SIGTERM (exit 0) or any child's exit (exit 1).
    pub async fn wait_for_stop(&mut self) -> ExitCode {
        let any_exit = async {
            loop {
                for c in &mut self.children {
                    let Ok(Some(status)) = c.child.try_wait() else {
                        continue;
                    };
                    match c.restart.as_mut().filter(|_| c.restarts < MAX_RESTARTS) {
                        Some(cmd) => {
                            c.restarts += 1;
                            eprintln!("[up] {} exited ({status}); restarting it", c.name);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            match start(&c.name, cmd) {
                                Ok(child) => c.child = child,
                                Err(e) => eprintln!("[up] restarting {} failed: {e:#}", c.name),
                            }
                        }
                        None => return (c.name.clone(), status),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            _ = crate::parent::shutdown_signal() => {
                println!("[up] stopping");
                ExitCode::SUCCESS
            }
            (name, status) = any_exit => {
                eprintln!("[up] {name} exited ({status}); stopping everything");
                ExitCode::from(1)
            }
        }
    }

    /// SIGTERMs every child's process group (last started first), then SIGKILLs
    /// whatever is still running after `grace`.
    pub async fn stop_all(&mut self, grace: Duration) {
        for c in self.children.iter().rev() {
            signal_group(&c.child, Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + grace;
        for c in self.children.iter_mut().rev() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, c.child.wait()).await.is_err() {
                eprintln!(
                    "[up] {} did not stop within {}s; killing it",
                    c.name,
                    grace.as_secs()
                );
                signal_group(&c.child, Signal::SIGKILL);
                let _ = c.child.wait().await;
            }
        }
    }
}

/// Spawns `cmd` in its own process group, its output prefixed by `[name]`.
fn start(name: &str, cmd: &mut Command) -> anyhow::Result<tokio::process::Child> {
    cmd.env(PARENT_PID_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(prefix_lines(name.to_owned(), out, false));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(prefix_lines(name.to_owned(), err, true));
    }
    Ok(child)
}

fn signal_group(child: &tokio::process::Child, sig: Signal) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

async fn prefix_lines(name: String, stream: impl AsyncRead + Unpin, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if to_stderr {
            eprintln!("[{name}] {line}");
        } else {
            println!("[{name}] {line}");
        }
    }
}
