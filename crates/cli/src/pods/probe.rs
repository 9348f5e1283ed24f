//! Whether pod mode can run here: privileges, the commands it runs, and a kernel that lets
//! it create a namespace and load the pod's ruleset into it.

use std::path::Path;

use super::kernel;

/// What `up` does about isolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// A network namespace per workload replica.
    Pods,
    /// Proxy mode; why (for the one line `up` prints).
    Off(String),
}

/// `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (capabilities(7) numbers).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The commands pod mode runs, and the Debian package of each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("setpriv", "util-linux"),
    ("sysctl", "procps"),
];

/// Checks everything pod mode needs, cheapest first; the first thing missing is the reason.
pub fn probe() -> Isolation {
    if let Some(reason) = missing_privileges() {
        return Isolation::Off(reason);
    }
    for (tool, package) in TOOLS {
        if which(tool).is_none() {
            return Isolation::Off(format!(
                "`{tool}` is not on PATH; install Debian's {package}"
            ));
        }
    }
    match try_namespace() {
        Ok(()) => Isolation::Pods,
        Err(e) => Isolation::Off(format!("cannot create a pod here: {e:#}")),
    }
}

/// Why this process may not create namespaces and rules, if it may not.
fn missing_privileges() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = effective_uid(&status).unwrap_or(u32::MAX);
    if euid == 0 {
        return None;
    }
    let effective = effective_caps(&status).unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "not root: euid {euid} without {}; run as root (sudo) for pod mode",
            missing.join(" and ")
        )
    })
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The effective uid of a `/proc/<pid>/status` text (`Uid:` real, effective, saved, fs).
fn effective_uid(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// `tool`'s path on PATH.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Creates a namespace, loads a pod's ruleset into it and removes it.
fn try_namespace() -> anyhow::Result<()> {
    let name = format!("mwprobe-{}", std::process::id());
    let ns = |args: &[&str]| -> Vec<String> { args.iter().map(|s| (*s).to_owned()).collect() };
    kernel::run(&ns(&["ip", "netns", "add", &name]), None)??;
    let rules = proxy::pod::PodRules::default().ruleset();
    let loaded = kernel::run(
        &ns(&["ip", "netns", "exec", &name, "nft", "-f", "-"]),
        Some(&rules),
    );
    let removed = kernel::run(&ns(&["ip", "netns", "del", &name]), None);
    loaded??;
    removed??;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn effective_capabilities_are_read_from_the_status_file() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000201000\n";
        let caps = effective_caps(status).unwrap();
        assert!(caps & (1 << CAP_NET_ADMIN) != 0 && caps & (1 << CAP_SYS_ADMIN) != 0);
        assert_eq!(effective_caps("Name: x\n"), None);
        assert_eq!(effective_uid("Uid:\t1000\t0\t0\t0\n"), Some(0));
    }

    #[test]
    fn which_finds_a_shell_and_not_a_ghost() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-meshwork").is_none());
    }
}
