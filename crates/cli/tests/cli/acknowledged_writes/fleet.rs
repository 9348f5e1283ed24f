//! The three `meshwork control` replicas of `acknowledged_writes.rs`: processes the test
//! starts, kills (`kill -9`) and restarts with the same command line.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::harness::{alive, meshwork};
use crate::policy::example_copy;

/// How many replicas run.
pub const REPLICAS: usize = 3;
/// The longest a single admin command may take: the cli's own call timeout is 10 s, so
/// a command still running after this hangs, which is a bug of its own.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);

/// One `meshwork control` process the test starts, kills and restarts.
struct Replica {
    child: Option<Child>,
    spawned_at: Instant,
}

/// The replicas and what they share. Dropping it kills every replica (also when the
/// test panics); it is declared after the etcd cluster, so it goes first.
pub struct Fleet {
    dir: tempfile::TempDir,
    resources: tempfile::TempDir,
    kek: PathBuf,
    /// The etcd members' client URLs.
    pub endpoints: Vec<String>,
    /// Each replica's state directory (its `control.sock` and `node-api.addr`).
    pub states: Vec<PathBuf>,
    replicas: Vec<Mutex<Replica>>,
}

impl Fleet {
    /// A new KEK (`meshwork ca kek create`) and the replicas on `endpoints`, each serving.
    pub fn start(endpoints: Vec<String>) -> Fleet {
        let dir = tempfile::tempdir().expect("tempdir");
        let kek = dir.path().join("kek");
        let made = meshwork()
            .args(["ca", "kek", "create"])
            .arg(&kek)
            .output()
            .expect("meshwork ca kek create");
        assert!(made.status.success(), "{made:?}");
        let states = (0..REPLICAS)
            .map(|i| dir.path().join(format!("r{i}")))
            .collect();
        let replicas = (0..REPLICAS)
            .map(|_| {
                Mutex::new(Replica {
                    child: None,
                    spawned_at: Instant::now(),
                })
            })
            .collect();
        let fleet = Fleet {
            dir,
            resources: example_copy(),
            kek,
            endpoints,
            states,
            replicas,
        };
        // One after the other: the first bootstraps the CA in etcd, the others load it.
        for i in 0..REPLICAS {
            fleet.spawn(i);
            fleet.wait_serving(i, Duration::from_secs(60));
        }
        fleet
    }

    /// Starts replica `i` (killing a previous process first) with the same command line
    /// as every time before; its socket and node API address appear once it serves.
    pub fn spawn(&self, i: usize) {
        let mut replica = self.replicas[i].lock().unwrap();
        Fleet::kill_locked(&mut replica);
        let state = &self.states[i];
        std::fs::create_dir_all(state).expect("state dir");
        for stale in ["control.sock", "node-api.addr"] {
            let _ = std::fs::remove_file(state.join(stale));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("r{i}.log")))
            .expect("log");
        let mut control = meshwork();
        control
            .arg("control")
            .arg("--resources")
            .arg(self.resources.path())
            .arg("--state-dir")
            .arg(state)
            .args(["--node-api", "127.0.0.1:0"])
            .arg("--kek-file")
            .arg(&self.kek)
            .args(["--replica-id", &format!("r{i}")]);
        for url in &self.endpoints {
            control.args(["--etcd", url]);
        }
        let child = control
            .env_remove("RUST_LOG")
            // If the test process dies without unwinding, the replicas notice and stop.
            .env("MESHWORK_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn meshwork control");
        replica.child = Some(child);
        replica.spawned_at = Instant::now();
    }

    /// `kill -9` replica `i` (a process this test started) and reaps it; whether it
    /// was running.
    pub fn kill(&self, i: usize) -> bool {
        Fleet::kill_locked(&mut self.replicas[i].lock().unwrap())
    }

    fn kill_locked(replica: &mut Replica) -> bool {
        let Some(mut child) = replica.child.take() else {
            return false;
        };
        let running = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        running
    }

    /// Restarts replica `i` if it exited by itself (e.g. it started while etcd had no
    /// quorum and gave up), at most every half second; whether it did.
    pub fn supervise(&self, i: usize) -> bool {
        let exited = {
            let mut replica = self.replicas[i].lock().unwrap();
            let gone = match replica.child.as_mut() {
                Some(child) => child.try_wait().expect("try_wait").is_some(),
                None => true,
            };
            gone && replica.spawned_at.elapsed() > Duration::from_millis(500)
        };
        if exited {
            self.spawn(i);
        }
        exited
    }

    /// Waits until replica `i` answers `entry list`, restarting it if it exits.
    pub fn wait_serving(&self, i: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.supervise(i);
            if self.states[i].join("control.sock").exists()
                && admin(&self.states[i], &["entry", "list"]).is_some_and(|o| o.status.success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replica r{i} does not serve after {limit:?}; its log:\n{}",
                self.log_tail(i)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines replica `i` logged (every run of it).
    pub fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(format!("r{i}.log")));
        let log = log.unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..REPLICAS {
            let mut replica = self.replicas[i].lock().unwrap_or_else(|p| p.into_inner());
            Fleet::kill_locked(&mut replica);
        }
    }
}

/// `meshwork ARGS… --state-dir STATE`, killed (and `None`) if it runs past
/// [`COMMAND_LIMIT`].
pub fn admin(state: &Path, args: &[&str]) -> Option<Output> {
    let child = meshwork()
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshwork");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(COMMAND_LIMIT) {
        Ok(output) => Some(output.expect("wait for meshwork")),
        Err(_) => {
            if alive(pid) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            None
        }
    }
}
