//! Child processes of `up`: spawning with prefixed logs, their ends, readiness, stopping.
//!
//! Every child leads its own process group (a terminal's Ctrl-C reaches only `up`) and is
//! watched by a task that reports its end, once, on one channel ([`Ends`]). `up` races that
//! channel and its stop signals against every step of its startup, so a child that ends
//! before `up` is ready fails the start at once, whatever `up` was waiting for; every wait
//! is also bounded in time. Whatever way `up` leaves, [`Supervisor::stop_all`] signals every
//! group it started (SIGTERM, grace, SIGKILL), and dropping the supervisor SIGKILLs any
//! group still alive (the path of a panic).

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::group;
use super::signals::StopSignals;
use crate::logging::MESHWORK_LOG_ENV;
use crate::parent::PARENT_PID_ENV;
use crate::state::ReadyFile;

/// A command to run under `up`.
pub struct Child {
    cmd: Command,
    /// A meshwork service (not an application): gets `up`'s log level.
    service: bool,
}

impl Child {
    /// `meshwork <sub>` from this very binary.
    pub fn meshwork(exe: &Path, sub: &str) -> Child {
        let mut cmd = Command::new(exe);
        cmd.arg(sub);
        Child { cmd, service: true }
    }

    /// `meshwork <sub>` in the named network namespace `netns` (a simulated host's):
    /// `ip netns exec` execs it, so pid, process group and supervision are as for
    /// [`Child::meshwork`].
    pub fn meshwork_in(netns: &str, exe: &Path, sub: &str) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(exe).arg(sub);
        Child { cmd, service: true }
    }

    /// A workload's application (`meshwork` as argv\[0\] means this binary), run under
    /// `meshwork guard`, which stops the application's whole process group when `up` is
    /// gone, even after a `kill -9` (see `up/guard.rs`).
    pub fn app(exe: &Path, argv: &[String], cwd: &Path) -> Child {
        let program = match argv.first().map(String::as_str) {
            Some("meshwork") | None => exe.as_os_str().to_owned(),
            Some(other) => other.into(),
        };
        let mut cmd = Command::new(exe);
        cmd.args(["guard", "--"])
            .arg(program)
            .args(argv.iter().skip(1))
            .current_dir(cwd);
        Child {
            cmd,
            service: false,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Child {
        self.cmd.env(k, v);
        self
    }

    /// Removes one variable from what the child inherits.
    pub fn env_remove(mut self, k: &str) -> Child {
        self.cmd.env_remove(k);
        self
    }

    /// Sets environment variables.
    pub fn envs(mut self, vars: &BTreeMap<String, String>) -> Child {
        self.cmd.envs(vars);
        self
    }

    /// Sends the child's HTTP(S) traffic through a sidecar (see [`crate::state::proxy_vars`]).
    pub fn proxy_env(mut self, outbound: &str) -> Child {
        self.cmd.envs(crate::state::proxy_vars(outbound));
        self
    }
}

/// A child that ended: who, which process, how.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The child's name (`control`, `billing/app`).
    pub name: String,
    /// The pid (and process group) it had.
    pub pid: u32,
    /// How it ended: `status 3`, `signal 9 (SIGKILL)`.
    pub how: String,
}

/// Where children's ends arrive, each once, in the order they happened.
pub struct Ends(mpsc::UnboundedReceiver<Ended>);

impl Ends {
    /// The next child to end (never resolves while none does).
    pub async fn next(&mut self) -> Ended {
        match self.0.recv().await {
            Some(ended) => ended,
            // invariant: the supervisor holds a sender for as long as `up` runs.
            None => std::future::pending().await,
        }
    }
}

/// The last lines a child wrote (stdout and stderr), for reporting its failure.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

/// How many lines of a child's output a report quotes.
const TAIL_LINES: usize = 12;

impl Tail {
    fn push(&self, line: &str) {
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    fn lines(&self) -> Vec<String> {
        let lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

struct Running {
    name: String,
    pid: u32,
    /// Set (to how it ended) as soon as the child has been reaped.
    exit: watch::Receiver<Option<String>>,
    tail: Tail,
    /// For children restarted when they die (see [`Supervisor::spawn_restartable`]): how to
    /// start them again.
    restart: Option<Command>,
    restarts: u32,
}

impl Running {
    fn ended(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

/// A restartable child that dies more often than this is given up on.
const MAX_RESTARTS: u32 = 5;

/// How long a child's output may take to drain after it ended before its end is reported.
const DRAIN: Duration = Duration::from_millis(500);

/// The set of running children.
pub struct Supervisor {
    children: Vec<Running>,
    ends: mpsc::UnboundedSender<Ended>,
    /// `MESHWORK_LOG` for meshwork services (None: they inherit `RUST_LOG` or log at info).
    service_log: Option<String>,
}

impl Supervisor {
    /// No children yet; their ends will arrive on the returned [`Ends`]. `service_log` is
    /// the log filter meshwork services get (see `logging.rs`).
    pub fn new(service_log: Option<String>) -> (Supervisor, Ends) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sup = Supervisor {
            children: Vec::new(),
            ends: tx,
            service_log,
        };
        (sup, Ends(rx))
    }

    /// Starts `child` in its own process group with its output prefixed by `[name]`.
    pub fn spawn(&mut self, name: &str, child: Child) -> anyhow::Result<()> {
        self.spawn_inner(name, child, false)
    }

    /// As [`Supervisor::spawn`], and restarted (up to [`MAX_RESTARTS`] times) when it dies
    /// once `up` is ready: the control plane and the node agent, whose loss the data plane
    /// rides out (static stability), and the application of one replica among several,
    /// whose callers balance to the others meanwhile. During startup its end fails the
    /// start like any other child's.
    pub fn spawn_restartable(&mut self, name: &str, child: Child) -> anyhow::Result<()> {
        self.spawn_inner(name, child, true)
    }

    fn spawn_inner(&mut self, name: &str, child: Child, restart: bool) -> anyhow::Result<()> {
        let Child { mut cmd, service } = child;
        if service && let Some(level) = &self.service_log {
            cmd.env(MESHWORK_LOG_ENV, level);
        }
        let (pid, exit, tail) = start(name, &mut cmd, &self.ends)?;
        self.children.push(Running {
            name: name.to_owned(),
            pid,
            exit,
            tail,
            restart: restart.then_some(cmd),
            restarts: 0,
        });
        Ok(())
    }

    /// The pid of a running child.
    pub fn pid(&self, name: &str) -> Option<u32> {
        let c = self.children.iter().find(|c| c.name == name)?;
        (!c.ended()).then_some(c.pid)
    }

    /// Waits until a unix socket accepts connections.
    pub async fn wait_for_socket(
        &self,
        name: &str,
        path: &Path,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("nothing accepted connections on {}", path.display());
        self.wait_until(name, &what, timeout, || {
            std::os::unix::net::UnixStream::connect(path)
                .is_ok()
                .then_some(())
        })
        .await
    }

    /// Waits until a process accepts connections on its loopback port.
    pub async fn wait_for_port(
        &self,
        name: &str,
        port: u16,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("nothing accepted connections on 127.0.0.1:{port}");
        self.wait_until(name, &what, timeout, || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        })
        .await
    }

    /// Waits until a sidecar has written its ready file.
    pub async fn wait_for_ready(
        &self,
        name: &str,
        path: &Path,
        timeout: Duration,
    ) -> anyhow::Result<ReadyFile> {
        let what = format!("no ready file at {}", path.display());
        self.wait_until(name, &what, timeout, || ReadyFile::read(path).ok())
            .await
    }

    /// Polls `probe` until it yields, for at most `timeout`. A child that ends meanwhile is
    /// noticed by whoever races [`Ends`] against the startup (see `up::run`).
    async fn wait_until<T>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut probe: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = probe() {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{name} is running but was not ready within {}s (--ready-timeout): {what}{}",
                    timeout.as_secs(),
                    self.quoted_tail(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `name`'s last output lines, as a block to append to a message (empty without any).
    pub fn quoted_tail(&self, name: &str) -> String {
        let Some(c) = self.children.iter().find(|c| c.name == name) else {
            return String::new();
        };
        let lines = c.tail.lines();
        if lines.is_empty() {
            return format!("; {name} printed nothing");
        }
        let quoted: Vec<String> = lines.iter().map(|l| format!("[up]   | {l}")).collect();
        format!("; its last output:\n{}", quoted.join("\n"))
    }

    /// Children that have ended, with how.
    pub fn ended(&self) -> Vec<(String, String)> {
        self.children
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.exit.borrow().clone()?)))
            .collect()
    }

    /// Restarts `ended` if it is restartable and has restarts left; false when it is not
    /// (then `up` must stop). An end of an earlier incarnation is ignored (true).
    pub async fn restart(&mut self, ended: &Ended) -> bool {
        let ends = self.ends.clone();
        let Some(c) = self.children.iter_mut().find(|c| c.name == ended.name) else {
            return false;
        };
        if c.pid != ended.pid {
            return true;
        }
        let Some(cmd) = c.restart.as_mut().filter(|_| c.restarts < MAX_RESTARTS) else {
            return false;
        };
        c.restarts += 1;
        eprintln!("[up] {} exited with {}; restarting it", c.name, ended.how);
        tokio::time::sleep(Duration::from_millis(200)).await;
        // `cmd` still has everything `spawn_inner` gave it (MESHWORK_LOG included).
        match start(&c.name, cmd, &ends) {
            Ok((pid, exit, tail)) => {
                (c.pid, c.exit, c.tail) = (pid, exit, tail);
                true
            }
            Err(e) => {
                eprintln!("[up] restarting {} failed: {e:#}", c.name);
                false
            }
        }
    }

    /// SIGTERMs every child's process group (last started first) and waits up to `grace`
    /// for every group to empty (leaders first: a group's other members, such as a broker's
    /// `initdb`, may take a moment longer); then SIGKILLs every group with anything left in
    /// it. A second stop signal skips the rest of the grace.
    pub async fn stop_all(&mut self, grace: Duration, signals: &mut StopSignals) {
        for c in self.children.iter().rev() {
            if !c.ended() || !group::members(c.pid, None).is_empty() {
                group::signal(c.pid, Signal::SIGTERM);
            }
        }
        let why = tokio::select! {
            () = self.all_stopped() => String::new(),
            () = tokio::time::sleep(grace) => format!(" within {}s", grace.as_secs()),
            sig = signals.recv() => {
                eprintln!("[up] {sig} again: killing everything now");
                String::new()
            }
        };
        for c in self.children.iter().rev() {
            let left = group::members(c.pid, None);
            if !c.ended() || !left.is_empty() {
                eprintln!(
                    "[up] {} did not stop{why}; killing it (pids {left:?})",
                    c.name
                );
                group::signal(c.pid, Signal::SIGKILL);
            }
        }
        // SIGKILL cannot be refused; the bound only guards against a process stuck in the kernel.
        if tokio::time::timeout(Duration::from_secs(5), self.all_stopped())
            .await
            .is_err()
        {
            eprintln!("[up] some processes were still there 5s after SIGKILL");
        }
    }

    /// Resolves once every child has been reaped and every group is empty.
    async fn all_stopped(&self) {
        let mut exits: Vec<_> = self.children.iter().map(|c| c.exit.clone()).collect();
        for exit in &mut exits {
            let _ = exit.wait_for(Option::is_some).await;
        }
        // Members of a group are not our children: there is nothing to wait on but /proc.
        while self
            .children
            .iter()
            .any(|c| !group::members(c.pid, None).is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Supervisor {
    /// The last resort (a panic in `up`): no group outlives the supervisor.
    fn drop(&mut self) {
        for c in &self.children {
            if !c.ended() {
                group::signal(c.pid, Signal::SIGKILL);
            }
        }
    }
}

/// Spawns `cmd` in its own process group, its output prefixed by `[name]` and kept in a
/// [`Tail`]; a task reaps it and reports its end on `ends`.
fn start(
    name: &str,
    cmd: &mut Command,
    ends: &mpsc::UnboundedSender<Ended>,
) -> anyhow::Result<(u32, watch::Receiver<Option<String>>, Tail)> {
    cmd.env(PARENT_PID_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    // invariant: a child that was just spawned and not yet awaited has a pid.
    let pid = child.id().context("the child has no pid")?;
    let tail = Tail::default();
    let out = child
        .stdout
        .take()
        .map(|s| tokio::spawn(prefix_lines(name.to_owned(), s, tail.clone(), false)));
    let err = child
        .stderr
        .take()
        .map(|s| tokio::spawn(prefix_lines(name.to_owned(), s, tail.clone(), true)));
    let (exit_tx, exit_rx) = watch::channel(None);
    let (ends, name) = (ends.clone(), name.to_owned());
    tokio::spawn(async move {
        let how = match child.wait().await {
            Ok(status) => describe(status),
            Err(e) => format!("an unknown status (waiting for it failed: {e})"),
        };
        let _ = exit_tx.send(Some(how.clone()));
        // Its last lines belong in the report of its end; a grandchild holding the pipe
        // open must not delay that report for long.
        let drained = async {
            for task in [out, err].into_iter().flatten() {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN, drained).await;
        let _ = ends.send(Ended { name, pid, how });
    });
    Ok((pid, exit_rx, tail))
}

/// `status 3`, or `signal 9 (SIGKILL)`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({})", s.as_str()),
            Err(_) => format!("signal {sig}"),
        },
        (None, None) => status.to_string(),
    }
}

async fn prefix_lines(name: String, stream: impl AsyncRead + Unpin, tail: Tail, to_stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tail.push(&line);
        if to_stderr {
            eprintln!("[{name}] {line}");
        } else {
            println!("[{name}] {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_described_by_status_or_signal() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "status 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9 (SIGKILL)");
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let tail = Tail::default();
        for i in 0..TAIL_LINES + 3 {
            tail.push(&format!("line {i}"));
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.first().map(String::as_str), Some("line 3"));
        assert_eq!(
            lines.last().cloned(),
            Some(format!("line {}", TAIL_LINES + 2))
        );
    }
}
