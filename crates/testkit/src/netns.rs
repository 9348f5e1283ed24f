//! A network namespace wired like a pod, for tests of pod mode (root only).
//!
//! [`TestPod::create`] makes a uniquely named namespace (`/run/netns/mwt<random>`), a veth
//! pair to the host's namespace with a `/30` of its own from `198.18.200.0/21` (claimed by
//! creating a slot file, so parallel tests and processes never share one), IPv6 off inside,
//! a default route to the host side, `/etc/netns/<name>/resolv.conf` naming `127.0.0.1`
//! (which `ip netns exec` mounts over `/etc/resolv.conf`), and the nftables ruleset it is
//! given applied inside. Dropping it removes all of that.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where slot claims live (one file per `/30` in use, holding the namespace's name).
const SLOTS: &str = "/run/meshwork-test-pods";

/// The range test pods take their `/30`s from: 512 of them.
const RANGE_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 0);
const RANGE_SLOTS: u32 = 512;

/// Why a test pod could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestPodError {
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or how it could not run).
        stderr: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Every `/30` of the range is claimed.
    #[error("no free /30 in 198.18.200.0/21 (slot files in {SLOTS})")]
    NoSlot,
}

/// Why pod tests cannot run here (`None`: they can): not root, or `ip`/`nft` missing.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (network namespaces and nftables need it)".to_owned());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// A namespace wired like a pod; removed on drop.
#[derive(Debug)]
pub struct TestPod {
    name: String,
    slot: u32,
    host_ip: Ipv4Addr,
    pod_ip: Ipv4Addr,
}

impl TestPod {
    /// Makes a pod with `ruleset` (as `nft -f -` reads it) applied inside.
    pub fn create(ruleset: &str) -> Result<TestPod, TestPodError> {
        let name = format!("mwt{:08x}", rand_u32());
        // The namespace first: a slot file naming a namespace that does not exist is stale.
        run("ip", &["netns", "add", &name], None)?;
        let slot = claim_slot(&name).inspect_err(|_| {
            let _ = run("ip", &["netns", "del", &name], None);
        })?;
        let base = RANGE_BASE.to_bits() + slot * 4;
        let pod = TestPod {
            name,
            slot,
            host_ip: Ipv4Addr::from_bits(base + 1),
            pod_ip: Ipv4Addr::from_bits(base + 2),
        };
        // From here on, a failure drops `pod`, which removes what was made.
        pod.wire(ruleset)?;
        Ok(pod)
    }

    fn wire(&self, ruleset: &str) -> Result<(), TestPodError> {
        let (ns, host, peer) = (&self.name, self.host_link(), format!("{}p", self.name));
        let host_cidr = format!("{}/30", self.host_ip);
        let pod_cidr = format!("{}/30", self.pod_ip);
        let host_ip = self.host_ip.to_string();
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
            None,
        )?;
        run("ip", &["link", "set", &peer, "netns", ns], None)?;
        run("ip", &["addr", "add", &host_cidr, "dev", &host], None)?;
        run("ip", &["link", "set", &host, "up"], None)?;
        run(
            "ip",
            &["-n", ns, "link", "set", &peer, "name", "eth0"],
            None,
        )?;
        run(
            "ip",
            &["-n", ns, "addr", "add", &pod_cidr, "dev", "eth0"],
            None,
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"], None)?;
        run("ip", &["-n", ns, "link", "set", "lo", "up"], None)?;
        run(
            "ip",
            &["-n", ns, "route", "add", "default", "via", &host_ip],
            None,
        )?;
        let sysctl = ["netns", "exec", ns, "sysctl", "-qw"];
        run(
            "ip",
            &[&sysctl[..], &["net.ipv6.conf.all.disable_ipv6=1"]].concat(),
            None,
        )?;
        run(
            "ip",
            &["netns", "exec", ns, "nft", "-f", "-"],
            Some(ruleset),
        )?;
        let etc = self.etc_dir();
        let io = |source| TestPodError::Io {
            path: etc.clone(),
            source,
        };
        std::fs::create_dir_all(&etc).map_err(io)?;
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n").map_err(io)?;
        Ok(())
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's path (`/run/netns/<name>`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The pod's address (its `eth0`).
    pub fn pod_ip(&self) -> Ipv4Addr {
        self.pod_ip
    }

    /// The host side's address.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// A command run inside the pod (`ip netns exec <name> program ...`), with the pod's
    /// `resolv.conf` mounted over `/etc/resolv.conf`.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn host_link(&self) -> String {
        format!("{}h", self.name)
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }
}

impl Drop for TestPod {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so the pair.
        let _ = run("ip", &["netns", "del", &self.name], None);
        let _ = run("ip", &["link", "del", &self.host_link()], None);
        let _ = std::fs::remove_dir_all(self.etc_dir());
        let _ = std::fs::remove_file(PathBuf::from(SLOTS).join(self.slot.to_string()));
    }
}

/// Claims a free `/30` by creating its slot file; a slot whose namespace is gone (a test
/// killed before its drop) is taken over.
fn claim_slot(name: &str) -> Result<u32, TestPodError> {
    let dir = PathBuf::from(SLOTS);
    std::fs::create_dir_all(&dir).map_err(|source| TestPodError::Io {
        path: dir.clone(),
        source,
    })?;
    let start = rand_u32() % RANGE_SLOTS;
    for i in 0..RANGE_SLOTS {
        let slot = (start + i) % RANGE_SLOTS;
        let path = dir.join(slot.to_string());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match created {
            Ok(mut file) => {
                let _ = file.write_all(name.as_bytes());
                return Ok(slot);
            }
            Err(_) => {
                // Stale when its owner's namespace is gone (an empty file is being claimed
                // right now). Freed for later; this claim moves on.
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let gone = !PathBuf::from("/run/netns").join(&owner).exists();
                if !owner.is_empty() && gone {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    Err(TestPodError::NoSlot)
}

fn rand_u32() -> u32 {
    let id = uuid::Uuid::new_v4();
    let bytes = id.as_bytes();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Runs `program args` (with `stdin` fed if given); its stderr on failure.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), TestPodError> {
    let failed = |stderr: String| TestPodError::Command {
        command: format!("{program} {}", args.join(" ")),
        stderr,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(String::from_utf8_lossy(&output.stderr).into_owned()))
    }
}
