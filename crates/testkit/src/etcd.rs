//! A real etcd cluster on loopback for tests: Debian's `etcd-server` (3.4), `n` members
//! on free ports, data in a temporary directory, fast elections (heartbeat 50 ms,
//! election timeout 500 ms). Members can be killed (`SIGKILL`) and restarted on their
//! data to test what a replica sees when etcd loses a member or its quorum.
//!
//! ```no_run
//! let Some(cluster) = testkit::etcd::EtcdCluster::start_or_skip(3) else { return };
//! let endpoints = cluster.endpoints();
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a cluster has to become healthy.
const START_LIMIT: Duration = Duration::from_secs(20);
/// How long a member has to stop on SIGTERM before it is killed. A last member without
/// quorum ignores SIGTERM (seen with 3.4.23).
const STOP_LIMIT: Duration = Duration::from_secs(5);

/// Why a cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// `etcd` is not on `PATH` (or `MESHWORK_ETCD` names no file).
    #[error("etcd is not installed ({0}); Debian: apt-get install etcd-server")]
    NotInstalled(String),
    /// Starting or waiting failed.
    #[error("etcd member {member} did not become healthy: {reason}\n{log}")]
    Start {
        /// Which member.
        member: usize,
        /// Why.
        reason: String,
        /// Its log.
        log: String,
    },
    /// Ports, files or processes.
    #[error("etcd test cluster: {0}")]
    Io(#[from] std::io::Error),
}

struct Member {
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A running etcd cluster; dropping it stops every member and removes the data.
pub struct EtcdCluster {
    binary: PathBuf,
    members: Vec<Member>,
    dir: tempfile::TempDir,
    token: String,
}

impl EtcdCluster {
    /// Starts `n` members and waits until each answers `/health`. The ports are free when
    /// picked but released before etcd binds them, so another test may take one in between:
    /// such a start is tried again on new ports (up to 3 times).
    pub fn start(n: usize) -> Result<EtcdCluster, EtcdError> {
        let binary = locate()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match EtcdCluster::start_on_free_ports(&binary, n) {
                Err(EtcdError::Start { log, .. })
                    if attempt < 3 && log.contains("address already in use") => {}
                done => return done,
            }
        }
    }

    fn start_on_free_ports(binary: &Path, n: usize) -> Result<EtcdCluster, EtcdError> {
        let binary = binary.to_owned();
        let mut held = Vec::new();
        let mut members = Vec::new();
        for _ in 0..n {
            let client = TcpListener::bind("127.0.0.1:0")?;
            let peer = TcpListener::bind("127.0.0.1:0")?;
            members.push(Member {
                client: client.local_addr()?,
                peer: peer.local_addr()?,
                child: None,
            });
            held.extend([client, peer]);
        }
        drop(held);
        let dir = tempfile::tempdir()?;
        let token = format!("mw-test-{}", uuid::Uuid::new_v4().simple());
        let mut cluster = EtcdCluster {
            binary,
            members,
            dir,
            token,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_healthy(i, START_LIMIT)?;
        }
        Ok(cluster)
    }

    /// [`start`](Self::start) for a test that needs etcd: `None` (after printing that the
    /// test is skipped) when etcd is not installed, except under `CI=true`, where
    /// `.ci/run` installs it and its absence panics. Any other failure panics.
    pub fn start_or_skip(n: usize) -> Option<EtcdCluster> {
        match EtcdCluster::start(n) {
            Ok(cluster) => Some(cluster),
            Err(EtcdError::NotInstalled(why)) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "etcd not installed: .ci/run installs it ({why})"
                );
                eprintln!("SKIPPED: etcd not installed ({why}); this test did not run");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Every member's client URL, `http://127.0.0.1:PORT`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://{}", self.members[i].client)
    }

    /// Kills member `i` with SIGKILL (as a crash would) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory and waits until it is healthy
    /// (which needs a quorum of members running).
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(i, START_LIMIT)
    }

    fn initial_cluster(&self) -> String {
        let urls: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://{}", m.peer))
            .collect();
        urls.join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdError> {
        let (client, peer) = (self.members[i].client, self.members[i].peer);
        let data = self.dir.path().join(format!("m{i}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = Command::new(&self.binary)
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{client}")])
            .args(["--advertise-client-urls", &format!("http://{client}")])
            .args(["--listen-peer-urls", &format!("http://{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.members[i].child = Some(child);
        Ok(())
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn wait_healthy(&mut self, i: usize, limit: Duration) -> Result<(), EtcdError> {
        let deadline = Instant::now() + limit;
        loop {
            let exited = match self.members[i].child.as_mut() {
                Some(child) => child.try_wait()?.map(|s| s.to_string()),
                None => Some("not running".to_owned()),
            };
            if let Some(status) = exited {
                return Err(self.start_error(i, &format!("it exited ({status})")));
            }
            if healthy(self.members[i].client) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.start_error(i, &format!("not healthy after {limit:?}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_error(&self, member: usize, reason: &str) -> EtcdError {
        EtcdError::Start {
            member,
            reason: reason.to_owned(),
            log: std::fs::read_to_string(self.log_path(member)).unwrap_or_default(),
        }
    }

    /// The data directory (for tests that inspect or corrupt it).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &self.members {
            if let Some(child) = &member.child {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_LIMIT;
        for member in &mut self.members {
            let Some(mut child) = member.child.take() else {
                continue;
            };
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether the member answers `GET /health` with `"health":"true"` (it needs a leader).
fn healthy(client: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&client, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {client}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains(r#""health":"true""#)
}

/// `MESHWORK_ETCD`, else `etcd` on `PATH`.
fn locate() -> Result<PathBuf, EtcdError> {
    if let Some(path) = std::env::var_os("MESHWORK_ETCD") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(EtcdError::NotInstalled(format!(
                "MESHWORK_ETCD={} is no file",
                path.display()
            ))),
        };
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| EtcdError::NotInstalled("no etcd on PATH".to_owned()))
}
