//! Workload attestation: what the kernel says about a Workload API caller.
//!
//! uid, gid and pid come from `SO_PEERCRED` (taken by the kernel at `connect()`,
//! so the caller cannot forge them); the executable path and the process start
//! time are read from `/proc/<pid>`. The start time is read before and after the
//! path and must not change, so a pid that was reused between the connect and our
//! reads cannot lend its new process's path to the old caller.

use std::path::PathBuf;

use api::entry::ProcessFacts;
use tokio::net::unix::UCred;

/// The facts about the peer of a unix-socket connection, or `None` when the kernel
/// gave no pid (then no process-specific selector can match, and we refuse).
pub fn facts(cred: &UCred) -> Option<ProcessFacts> {
    let pid = u32::try_from(cred.pid()?).ok()?;
    let before = start_time(pid);
    let path = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let after = start_time(pid);
    if before != after {
        return None;
    }
    Some(ProcessFacts {
        uid: cred.uid(),
        gid: cred.gid(),
        pid,
        path: path.map(strip_deleted),
        start_time: after,
    })
}

/// `/proc/<pid>/stat` field 22: start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or ')';
    // fields after the last ')' are space-separated, starting at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A binary replaced on disk while running shows as `"/path (deleted)"`; the path
/// selector names the file the process was started from.
fn strip_deleted(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(s) => PathBuf::from(s),
        None => path,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_socket_peer_is_this_process() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let facts = facts(&a.peer_cred().unwrap()).unwrap();
        assert_eq!(facts.pid, std::process::id());
        assert_eq!(
            facts.path.as_deref(),
            Some(std::env::current_exe().unwrap().as_path())
        );
        assert_eq!(facts.start_time, start_time(std::process::id()));
        assert!(facts.start_time.is_some());
    }
}
