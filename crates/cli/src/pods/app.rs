//! How a process is started inside a pod: in its namespace, as an unprivileged user with no
//! capabilities, so that it cannot change the pod's rules or leave the namespace.

use std::ffi::OsString;

/// The user and group pod processes run as (`nobody`/`nogroup` on Debian).
pub const POD_UID: u32 = 65534;

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
/// namespace as uid/gid 65534, no supplementary groups, no inheritable or bounding
/// capabilities.
pub fn in_pod(netns: &str, command: &[OsString]) -> Vec<OsString> {
    let uid = format!("--reuid={POD_UID}");
    let gid = format!("--regid={POD_UID}");
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
        let argv = in_pod("mw3-store-0", &["/bin/app".into(), "--flag".into()]);
        let line: Vec<&str> = argv.iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            line,
            [
                "ip",
                "netns",
                "exec",
                "mw3-store-0",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--",
                "/bin/app",
                "--flag",
            ]
        );
    }
}
