//! Loopback ports `up` allocates for its children (the broker, the agent's admin listener,
//! the applications).
//!
//! A port is free when it is chosen, but its process binds it only later (an application
//! starts after its sidecar, seconds on). Two `up`s running at once (parallel tests, two
//! meshes on one machine) could draw the same free port in that window. So each allocation
//! is also *reserved*: a file named after the port, holding the pid of the `up` that took
//! it, in a per-user directory under the temporary directory. A reservation whose `up` is
//! still alive makes every other `up` skip the port; one whose `up` is gone is taken over.
//! Without a usable directory, allocation falls back to "free a moment ago".
//!
//! Must not import any other module of this crate.

use std::path::{Path, PathBuf};

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range
/// (32768-60999), so no socket bound to port 0 (a sidecar's listener, any client)
/// can take one between its allocation and the moment its process binds it.
const ALLOCATED_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A loopback port that was free a moment ago and that no other running `up` reserved.
pub fn free_port() -> std::io::Result<u16> {
    free_port_in(&reservations_dir(), std::process::id())
}

fn free_port_in(dir: &Path, owner: u32) -> std::io::Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    let usable = std::fs::create_dir_all(dir).is_ok();
    for _ in 0..64 {
        let port = rng.random_range(ALLOCATED_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        if !usable || reserve(dir, port, owner) {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `$TMPDIR/meshwork-ports-<uid>`.
fn reservations_dir() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    // This process's uid, as the owner of its /proc entry (no libc call needed).
    let uid =
        std::fs::metadata("/proc/self").map_or_else(|_| "any".to_owned(), |m| m.uid().to_string());
    std::env::temp_dir().join(format!("meshwork-ports-{uid}"))
}

/// Takes `port` for `owner` unless a live process (`owner` included) holds it.
fn reserve(dir: &Path, port: u16, owner: u32) -> bool {
    let file = dir.join(port.to_string());
    match std::fs::read_to_string(&file) {
        Ok(held) => {
            let holder = held.trim().parse::<u32>().ok();
            // Our own reservations count too: one `up` never hands a port out twice.
            if holder.is_some_and(alive) {
                return false;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return false,
    }
    // Written whole, then renamed into place: a reader never sees half a pid.
    let staging = dir.join(format!(".{port}.{owner}"));
    std::fs::write(&staging, owner.to_string()).is_ok() && std::fs::rename(&staging, &file).is_ok()
}

fn alive(pid: u32) -> bool {
    // 0 (and anything past i32) would address a process group, not a process.
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // Signal 0: existence check only.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_port_another_live_up_reserved_is_skipped_and_a_dead_ones_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_in(dir.path(), 1).unwrap();
        let file = dir.path().join(port.to_string());
        // Held by a live process (this test): nobody else may take it.
        std::fs::write(&file, std::process::id().to_string()).unwrap();
        assert!(!reserve(dir.path(), port, 1));
        // Its holder is gone (pid 0 is never a live process here): taken over.
        std::fs::write(&file, "0").unwrap();
        assert!(reserve(dir.path(), port, 1));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
    }

    #[test]
    fn allocations_under_one_reservation_directory_never_repeat_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let ports: std::collections::BTreeSet<u16> = (0..200)
            .map(|_| free_port_in(dir.path(), me + 1).unwrap())
            .collect();
        // Reservations by a live pid (this process) block every port handed out.
        for port in &ports {
            std::fs::write(dir.path().join(port.to_string()), me.to_string()).unwrap();
        }
        for _ in 0..200 {
            let port = free_port_in(dir.path(), me + 1).unwrap();
            assert!(
                !ports.contains(&port),
                "{port} was reserved by a live process"
            );
        }
    }
}
