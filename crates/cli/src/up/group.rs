//! Process groups: how `up` and `meshwork guard` reach every process a child started.
//!
//! A child of `up` leads its own process group, and whatever it starts stays in that
//! group unless it leaves on purpose (`setsid`, a daemon's double fork). Signalling the
//! group rather than the pid reaches a shell script's children too; listing the group's
//! members (from `/proc`) tells whether anything is left after the leader has ended.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Sends `sig` to every process of group `pgid`; a group that is already empty is fine.
pub fn signal(pgid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pgid)
        && raw > 1
    {
        // ESRCH (no such group) is the normal answer once everything has ended.
        let _ = killpg(Pid::from_raw(raw), sig);
    }
}

/// The live (not zombie) processes of group `pgid`, other than `except`.
pub fn members(pgid: u32, except: Option<u32>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != except)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| live_group_of(&stat))
                == Some(pgid)
        })
        .collect()
}

/// The process group in a `/proc/<pid>/stat` line, unless the process is a zombie.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and `)`,
/// so the fields are counted from the last `)`: state, ppid, pgrp.
fn live_group_of(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    (state != "Z" && state != "X").then_some(pgrp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_paren() {
        let stat = "4242 (sh -c (x) y) S 1 4240 4240 0 -1 4194560 107 0 0 0";
        assert_eq!(live_group_of(stat), Some(4240));
        let zombie = "4243 (sleep) Z 4242 4240 4240 0 -1";
        assert_eq!(live_group_of(zombie), None);
        assert_eq!(live_group_of("garbage"), None);
    }

    #[test]
    fn this_process_is_a_member_of_its_group() {
        let me = std::process::id();
        let pgid = nix::unistd::getpgrp().as_raw().unsigned_abs();
        assert!(members(pgid, None).contains(&me));
        assert!(!members(pgid, Some(me)).contains(&me));
    }
}
