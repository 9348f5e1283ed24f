//! Runs a real `meshwork up` for a test and cleans it up afterwards.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a panic is a failed test

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `meshwork` binary, in proxy mode unless told `--isolation=pods`: the tests of proxy
/// mode stay tests of proxy mode on a machine where `up` could make pods (`pod_mesh.rs` and
/// `pods.rs` test pod mode).
pub fn meshwork() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshwork"));
    command.env("MESHWORK_ISOLATION", "off");
    command
}

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

/// A running `meshwork up` with its own state directory.
pub struct Up {
    pub child: Child,
    pub state: tempfile::TempDir,
    pub output: mpsc::Receiver<String>,
}

impl Up {
    /// Starts `meshwork up dir` and waits for its `[up] ready` line.
    pub fn start(dir: &Path) -> Up {
        let up = Up::spawn(dir, &[]);
        up.wait_for_line("[up] ready", Duration::from_secs(60));
        up
    }

    /// Starts `meshwork up dir ARGS…` without waiting for anything.
    pub fn spawn(dir: &Path, args: &[&str]) -> Up {
        Up::spawn_with_env(dir, args, &[])
    }

    /// [`Up::spawn`] with `vars` added to `up`'s environment.
    pub fn spawn_with_env(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Up {
        let state = tempfile::tempdir().expect("tempdir");
        Up::spawn_in(state, dir, args, vars)
    }

    /// [`Up::spawn_with_env`] on the state directory `state` (e.g. one a killed `up` left).
    pub fn spawn_in(
        state: tempfile::TempDir,
        dir: &Path,
        args: &[&str],
        vars: &[(&str, &str)],
    ) -> Up {
        let mut child = meshwork()
            .arg("up")
            .arg(dir)
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .env_remove("RUST_LOG")
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshwork up");
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    let _ = tx.send(line);
                }
            });
        }
        Up {
            child,
            state,
            output: rx,
        }
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let mut lines = self.lines_until(needle, timeout);
        lines.pop().expect("the matching line")
    }

    /// Every output line (stdout and stderr) up to and including the first containing
    /// `needle`; panics if none comes within `timeout` (or `up` exits first).
    pub fn lines_until(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(line) if line.contains(needle) => {
                    seen.push(line);
                    return seen;
                }
                Ok(line) => seen.push(line),
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Waits for `up` to exit by itself; panics if it is still running after `timeout`
    /// (a hang guard: `up` is expected to end long before).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meshwork up still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line `up` printed until its output closed (after it exited).
    pub fn remaining_output(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.output.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        lines
    }

    /// `meshwork exec WORKLOAD -- args...` against this mesh.
    pub fn exec(&self, workload: &str, args: &[&str]) -> Output {
        self.exec_replica(workload, 0, args)
    }

    /// `meshwork exec WORKLOAD --replica N -- args...` against this mesh.
    pub fn exec_replica(&self, workload: &str, replica: u16, args: &[&str]) -> Output {
        meshwork()
            .arg("exec")
            .arg(workload)
            .args(["--replica", &replica.to_string()])
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("--")
            .args(args)
            .output()
            .expect("run meshwork exec")
    }

    /// A sidecar's ready file as JSON (replica 0's, for a workload with replicas).
    pub fn ready(&self, workload: &str) -> serde_json::Value {
        self.ready_replica(workload, 0)
    }

    /// The ready file of the sidecar of `workload`'s replica `replica`.
    pub fn ready_replica(&self, workload: &str, replica: u16) -> serde_json::Value {
        let file = match replica {
            0 => format!("{workload}.json"),
            n => format!("{workload}.{n}.json"),
        };
        let path = self.state.path().join("workloads").join(file);
        let text = std::fs::read_to_string(&path).expect("ready file");
        serde_json::from_str(&text).expect("ready json")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to `up` and waits for it to exit.
    pub fn signal_and_wait(&mut self, sig: &str, timeout: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meshwork up did not exit after SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    /// SIGTERM first, so that `up` removes what it made outside its state directory (pods),
    /// then SIGKILL if it has not ended within 15 s.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes whose environment names `parent` as their supervising `up`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let needle = format!("MESHWORK_PARENT_PID={parent}");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Waits until `f` holds or panics with `what`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_ascii_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}
