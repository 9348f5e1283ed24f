//! How a process is started inside a pod: in its namespace, as an unprivileged user with no
//! capabilities, so that it cannot change the pod's rules or leave the namespace.

use std::ffi::OsString;

/// The first of the users pod processes run as: each pod has its own ([`pod_uid`]), so that
/// one pod's app cannot ptrace another's, read its `/proc/<pid>/environ` (its binding's
/// credentials) or signal it. A range no distribution allocates from.
pub const POD_UID_BASE: u32 = 2_000_000_000;

/// The user (and group) of the pod at `ip`: one per pod address, so distinct across pods of
/// one `up` and across the slots of concurrent `up`s.
pub fn pod_uid(ip: std::net::Ipv4Addr) -> u32 {
    POD_UID_BASE + (u32::from(ip) & 0x00ff_ffff)
}

/// The environment variables that would send a process to a sidecar's outbound proxy; in a
/// pod, capture does that, and an inherited proxy address would be the host's.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// `ip netns exec <netns> setpriv … -- <command>`: `command` run inside the named
/// namespace as the pod's own uid/gid, no supplementary groups, no inheritable or bounding
/// capabilities, no new privileges (set-uid programs stay unprivileged).
pub fn in_pod(netns: &str, uid: u32, command: &[OsString]) -> Vec<OsString> {
    let gid = format!("--regid={uid}");
    let uid = format!("--reuid={uid}");
    let mut argv: Vec<OsString> = [
        "ip",
        "netns",
        "exec",
        netns,
        "setpriv",
        &uid,
        &gid,
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    argv.extend(command.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_runs_unprivileged_in_its_namespace() {
        let uid = pod_uid("198.18.3.4".parse().unwrap());
        assert_eq!(uid, 2_000_000_000 + (18 << 16) + (3 << 8) + 4);
        assert_ne!(uid, pod_uid("198.18.3.5".parse().unwrap()));
        let argv = in_pod("mw3-store-0", uid, &["/bin/app".into(), "--flag".into()]);
        let line: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            line,
            [
                "ip",
                "netns",
                "exec",
                "mw3-store-0",
                "setpriv",
                "--reuid=2001180420",
                "--regid=2001180420",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "--",
                "/bin/app",
                "--flag",
            ]
        );
    }
}
