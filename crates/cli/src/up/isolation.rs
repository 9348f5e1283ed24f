//! Pod mode in `up` (issue 10): whether it runs, the pods of a resource set, the sidecar
//! arguments of a pod and the command line of an app in one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use api::ResourceSet;

use super::instances::Instance;
use super::supervisor::Child;
use crate::pods::{self, Isolation, IsolationArg, PodPlan};
use crate::state::StateDir;

/// Removes the pods a killed `up` left in this state directory, then decides whether this
/// one runs pods (saying in one line when it does not).
pub fn prepare(state: &StateDir, arg: IsolationArg) -> anyhow::Result<bool> {
    if let Some(line) = crate::pods::clean_stale(state.path())? {
        println!("[up] {line}");
    }
    Ok(match resolve(arg)? {
        Isolation::Pods => {
            println!("[up] isolation: pods (a network namespace per workload replica)");
            let_apps_traverse(state.path())?;
            true
        }
        Isolation::Off(reason) => {
            println!("[up] {}", crate::pods::off_line(&reason));
            false
        }
    })
}

/// Apps in pods run as an unprivileged user: they may pass through the state directory
/// (`MESHWORK_STATE_DIR`, e.g. to the demo's `demo/stripe-ca.pem`) but not list it; what is
/// private in it stays private by its own mode (keys, bindings and the control socket are
/// root's alone).
fn let_apps_traverse(state: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state)
        .with_context(|| format!("reading {}", state.display()))?
        .permissions()
        .mode();
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(mode | 0o001))
        .with_context(|| format!("letting apps in pods through {}", state.display()))
}

/// What `--isolation` means on this machine.
pub fn resolve(arg: IsolationArg) -> anyhow::Result<Isolation> {
    pods::decide(arg)
}

/// The replicas that get a pod: all but those of `hostNetwork: true` workloads.
pub fn members(set: &ResourceSet, instances: &[Instance]) -> Vec<(String, u16)> {
    instances
        .iter()
        .filter(|i| {
            set.workload(&i.workload)
                .is_some_and(|w| !w.spec.host_network)
        })
        .map(|i| (i.workload.clone(), i.replica))
        .collect()
}

/// Creates the pods of `instances` in the Mesh's pod network; by instance name.
pub fn create_pods(
    set: &ResourceSet,
    state_dir: &Path,
    instances: &[Instance],
) -> anyhow::Result<BTreeMap<String, PodPlan>> {
    let spec = set.mesh().map(|m| m.spec.pods()).unwrap_or_default();
    let record = pods::create(state_dir, &spec.network, 0, &members(set, instances))
        .context("creating the pods")?;
    if let Some(slot) = record.slot {
        let list: Vec<String> = record
            .pods
            .iter()
            .map(|p| format!("{}={}", p.netns, p.ip))
            .collect();
        println!(
            "[up] pods on {} ({}/24): {}",
            slot.bridge(),
            slot.base,
            list.join(" ")
        );
    }
    let mut by_name = BTreeMap::new();
    for i in instances {
        if let Some(pod) = record.pod(&i.workload, i.replica) {
            by_name.insert(i.name.clone(), pod.clone());
        }
    }
    Ok(by_name)
}

/// The arguments that put a sidecar in front of `pod` (`meshwork proxy --pod …`).
pub fn sidecar_pod_args(pod: &PodPlan, set: &ResourceSet, state: &Path) -> Vec<String> {
    let spec = set.mesh().map(|m| m.spec.pods()).unwrap_or_default();
    let bindings = crate::claims::delivery::binding_root(state, &pod.workload);
    vec![
        "--claim-bindings".to_owned(),
        bindings.display().to_string(),
        "--pod".to_owned(),
        pod.netns_path().display().to_string(),
        "--pod-ip".to_owned(),
        pod.ip.to_string(),
        "--pod-virtual-addresses".to_owned(),
        spec.virtual_addresses.to_string(),
    ]
}

/// The argv `meshwork guard` runs for an app in `netns`: `ip netns exec … setpriv … --`,
/// then the app's command (`meshwork` as argv\[0\] means `exe`).
pub fn pod_app_argv(exe: &Path, argv: &[String], netns: &str) -> anyhow::Result<Vec<String>> {
    let program = match argv.first().map(String::as_str) {
        Some("meshwork") | None => exe
            .to_str()
            .with_context(|| format!("{} is not UTF-8", exe.display()))?,
        Some(other) => other,
    };
    let command: Vec<std::ffi::OsString> = std::iter::once(program)
        .chain(argv.iter().skip(1).map(String::as_str))
        .map(Into::into)
        .collect();
    pods::app::in_pod(netns, &command)
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| anyhow::anyhow!("{a:?} is not UTF-8"))
        })
        .collect()
}

/// An app in its pod under `meshwork guard`, with `MESHWORK_POD_IP` and no proxy variables.
pub fn pod_app(exe: &Path, argv: &[String], cwd: &Path, pod: &PodPlan) -> anyhow::Result<Child> {
    let wrapped = pod_app_argv(exe, argv, &pod.netns)?;
    let mut child = Child::app(exe, &wrapped, cwd).env("MESHWORK_POD_IP", &pod.ip.to_string());
    for var in pods::app::PROXY_VARS {
        child = child.env_remove(var);
    }
    Ok(child)
}

/// After every child stopped: removes the pods (if any), saying so or what is left.
pub fn remove_pods(state_dir: &Path) {
    match pods::teardown(state_dir) {
        Ok(Some(r)) => println!(
            "[up] removed {} pod(s){} and everything they used",
            r.pods,
            r.bridge.map(|b| format!(" on {b}")).unwrap_or_default()
        ),
        Ok(None) => {}
        Err(e) => eprintln!("[up] error: {e:#}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_app_in_a_pod_is_run_unprivileged_in_its_namespace() {
        let exe = Path::new("/usr/bin/meshwork");
        let argv = pod_app_argv(
            exe,
            &["meshwork".into(), "demo".into(), "store".into()],
            "mw1-store-0",
        )
        .unwrap();
        assert_eq!(
            argv.join(" "),
            "ip netns exec mw1-store-0 setpriv --reuid=65534 --regid=65534 --clear-groups \
             --inh-caps=-all --bounding-set=-all -- /usr/bin/meshwork demo store"
        );
        let argv = pod_app_argv(exe, &["python3".into(), "app.py".into()], "mw1-a-1").unwrap();
        assert_eq!(argv[3], "mw1-a-1");
        assert_eq!(argv[argv.len() - 2..], ["python3", "app.py"]);
    }

    #[test]
    fn the_sidecar_is_told_its_pod() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("m.yaml"),
            "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  \
             trustDomain: meshwork.local\n  pods: {virtualAddresses: 100.64.0.0/16}\n",
        )
        .unwrap();
        let set = api::load_dir(dir.path()).unwrap();
        let slot = pods::plan::Slot::of(&"198.18.0.0/16".parse().unwrap(), 1).unwrap();
        let pod = PodPlan::new(&slot, 2, "billing", 0);
        assert_eq!(
            sidecar_pod_args(&pod, &set, Path::new("/s")).join(" "),
            "--claim-bindings /s/bindings/billing --pod /run/netns/mw1-billing-0 \
             --pod-ip 198.18.1.4 --pod-virtual-addresses 100.64.0.0/16"
        );
    }
}
