//! Issue 14, part 4: the install manifests of `deploy/`. The ClusterRoles grant exactly the
//! table below (what the control plane asks the API server for; the fake API server's request
//! log is to be checked against the same table), every meshwork CRD is readable, the pods run
//! locked down, the flags the manifests pass are the binary's, and the broker starts from its
//! manifest as written and serves the taxonomy the ConfigMap gives it. `kubernetes-validate`
//! and kustomize check the manifests' shape (.ci/deploy.sh).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;

use super::curl_json;
use crate::harness::{example, meshwork};

const READ: &[&str] = &["get", "list", "watch"];

/// Every permission of the control plane's ServiceAccount: (ClusterRole, API group, resource,
/// verbs). `meshwork-control` is the mesh configuration it reads; `meshwork-claims` is the
/// ServiceClaim reconciler's (finalizer and status patches, the binding Secrets).
pub(crate) const CONTROL_PLANE_RBAC: &[(&str, &str, &str, &[&str])] = &[
    (
        "meshwork-control",
        "meshwork.dev",
        "authorizationpolicies",
        READ,
    ),
    ("meshwork-control", "meshwork.dev", "egresspolicies", READ),
    ("meshwork-control", "meshwork.dev", "environments", READ),
    ("meshwork-control", "meshwork.dev", "meshes", READ),
    (
        "meshwork-control",
        "meshwork.dev",
        "registrationentries",
        READ,
    ),
    ("meshwork-control", "meshwork.dev", "serviceclaims", READ),
    ("meshwork-control", "meshwork.dev", "serviceclasses", READ),
    ("meshwork-control", "meshwork.dev", "servicepolicies", READ),
    ("meshwork-control", "meshwork.dev", "services", READ),
    ("meshwork-control", "meshwork.dev", "workloads", READ),
    (
        "meshwork-control",
        "gateway.networking.k8s.io",
        "grpcroutes",
        READ,
    ),
    (
        "meshwork-control",
        "gateway.networking.k8s.io",
        "httproutes",
        READ,
    ),
    (
        "meshwork-claims",
        "meshwork.dev",
        "serviceclaims",
        &["patch"],
    ),
    (
        "meshwork-claims",
        "meshwork.dev",
        "serviceclaims/status",
        &["patch"],
    ),
    (
        "meshwork-claims",
        "meshwork.dev",
        "serviceclaims/finalizers",
        &["update"],
    ),
    (
        "meshwork-claims",
        "",
        "secrets",
        &["create", "delete", "get", "list", "patch", "watch"],
    ),
];

/// Flags the manifests pass that the binary does not have yet: controller mode is being
/// written in parallel (issue 14, part 3). The test fails once one of them exists, so that
/// whoever merges it checks the manifest against the real flag and empties this list.
const PLANNED_FLAGS: &[(&str, &str)] = &[];

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// Every document of `deploy/<file>`.
fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(deploy().join(file)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn object(file: &str, kind: &str, name: &str) -> Value {
    documents(file)
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} in deploy/{file}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn cluster_roles_grant_exactly_what_the_control_plane_needs() {
    let rbac = documents("install/rbac.yaml");
    let mut granted = BTreeSet::new();
    for role in rbac
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in role["rules"].as_array().unwrap() {
            let keys: BTreeSet<&str> = rule.as_object().unwrap().keys().map(|k| &**k).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["apiGroups", "resources", "verbs"]),
                "{name}: a rule with resourceNames or nonResourceURLs is not in the table: {rule}"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        assert!(![group, resource, verb].contains(&"*"), "{name}: {rule}");
                        granted.insert((name.to_owned(), group, resource, verb));
                    }
                }
            }
        }
    }
    let table: BTreeSet<_> = CONTROL_PLANE_RBAC
        .iter()
        .flat_map(|(role, group, resource, verbs)| {
            verbs
                .iter()
                .map(|verb| ((*role).to_owned(), *group, *resource, *verb))
        })
        .collect();
    let extra: Vec<_> = granted.difference(&table).collect();
    let missing: Vec<_> = table.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "deploy/install/rbac.yaml grants {extra:?} beyond the table and lacks {missing:?}"
    );
    // Both roles go to the control plane's ServiceAccount and to nobody else.
    for role in ["meshwork-control", "meshwork-claims"] {
        let binding = object("install/rbac.yaml", "ClusterRoleBinding", role);
        assert_eq!(binding["roleRef"]["name"], role);
        let subjects = binding["subjects"].as_array().unwrap();
        assert_eq!(subjects.len(), 1, "{binding}");
        assert_eq!(subjects[0]["kind"], "ServiceAccount");
        assert_eq!(subjects[0]["name"], "meshwork-control");
        assert_eq!(subjects[0]["namespace"], "meshwork-system");
    }
    // The broker has no API access at all: no token, no binding.
    let broker = object("install/rbac.yaml", "ServiceAccount", "meshwork-broker");
    assert_eq!(broker["automountServiceAccountToken"], false);
    let deployment = object("install/broker.yaml", "Deployment", "meshwork-broker");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let text = std::fs::read_to_string(deploy().join("install/rbac.yaml")).unwrap();
    assert_eq!(text.matches("name: meshwork-broker\n").count(), 1, "{text}");
}

#[test]
fn the_control_plane_may_read_every_meshwork_crd() {
    let readable: BTreeSet<&str> = CONTROL_PLANE_RBAC
        .iter()
        .filter(|(role, group, _, verbs)| {
            *role == "meshwork-control" && *group == "meshwork.dev" && *verbs == READ
        })
        .map(|(_, _, resource, _)| *resource)
        .collect();
    let mut crds = BTreeSet::new();
    for entry in std::fs::read_dir(deploy().join("crds")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let crd = &documents(&format!("crds/{file}"))[0];
        assert_eq!(crd["spec"]["group"], "meshwork.dev", "{file}");
        crds.insert(crd["spec"]["names"]["plural"].as_str().unwrap().to_owned());
    }
    let crds: BTreeSet<&str> = crds.iter().map(|s| &**s).collect();
    assert_eq!(
        readable, crds,
        "the ClusterRole meshwork-control must read every kind of deploy/crds/"
    );
}

#[test]
fn kustomization_lists_every_crd_and_install_manifest() {
    let kustomization = &documents("kustomization.yaml")[0];
    let listed: BTreeSet<&str> = strings(&kustomization["resources"]).into_iter().collect();
    let mut files = BTreeSet::new();
    for dir in ["crds", "install"] {
        for entry in std::fs::read_dir(deploy().join(dir)).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            files.insert(format!("{dir}/{name}"));
        }
    }
    let files: BTreeSet<&str> = files.iter().map(|s| &**s).collect();
    assert_eq!(listed, files, "deploy/kustomization.yaml resources");
}

/// The two Deployments and their one container each.
fn deployments() -> Vec<(&'static str, Value)> {
    [
        ("install/control.yaml", "meshwork-control"),
        ("install/broker.yaml", "meshwork-broker"),
    ]
    .into_iter()
    .map(|(file, name)| (name, object(file, "Deployment", name)))
    .collect()
}

#[test]
fn pods_run_locked_down_one_replica_at_a_time() {
    for (name, deployment) in deployments() {
        let spec = &deployment["spec"];
        // One redb state file, held by one process: never two pods at once.
        assert_eq!(spec["replicas"], 1, "{name}");
        assert_eq!(spec["strategy"]["type"], "Recreate", "{name}");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        assert_eq!(c["image"], "meshwork:dev", "{name}: the placeholder image");
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        assert!(sc["capabilities"]["add"].is_null(), "{name}");
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][bound][resource].is_string(),
                    "{name}: resources.{bound}.{resource}"
                );
            }
        }
        // The state directory is on a PersistentVolumeClaim, not the (read-only) image.
        let state = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "state")
            .unwrap_or_else(|| panic!("{name}: no state volume"));
        assert!(
            state["persistentVolumeClaim"]["claimName"].is_string(),
            "{name}"
        );
    }
}

/// `--flag` of each `--flag=value` argument (and bare `--flag`).
fn flags(args: &[&str]) -> Vec<String> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_owned())
        .collect()
}

fn container_args(deployment: &Value) -> Vec<&str> {
    strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
}

#[test]
fn manifests_pass_only_flags_the_binary_has() {
    for (name, deployment) in deployments() {
        let args = container_args(&deployment);
        let subcommand = args[0];
        let help = meshwork().args([subcommand, "--help"]).output().unwrap();
        assert!(help.status.success(), "meshwork {subcommand} --help");
        let help = String::from_utf8(help.stdout).unwrap();
        let known: BTreeSet<&str> = help.split_whitespace().collect();
        for flag in flags(&args) {
            let planned = PLANNED_FLAGS.contains(&(subcommand, flag.as_str()));
            match (known.contains(flag.as_str()), planned) {
                (true, false) | (false, true) => {}
                (false, false) => panic!("{name}: `meshwork {subcommand}` has no {flag}"),
                (true, true) => panic!(
                    "{name}: `meshwork {subcommand}` now has {flag}: check the manifest's use \
                     of it against the code and remove it from PLANNED_FLAGS"
                ),
            }
        }
    }
}

/// Writes a ConfigMap's data into `dir` the way the kubelet lays out a ConfigMap volume
/// (files are symlinks through `..data` to a timestamped directory).
fn config_map_volume(data: &Value, dir: &Path) {
    let real = dir.join("..2026_12_05_00_00_00.000000001");
    std::fs::create_dir_all(&real).unwrap();
    for (key, value) in data.as_object().unwrap() {
        std::fs::write(real.join(key), value.as_str().unwrap()).unwrap();
        std::os::unix::fs::symlink(Path::new("..data").join(key), dir.join(key)).unwrap();
    }
    std::os::unix::fs::symlink(real.file_name().unwrap(), dir.join("..data")).unwrap();
}

#[test]
fn the_broker_runs_from_its_manifest_and_serves_the_configmap_taxonomy() {
    let taxonomy = object("install/broker.yaml", "ConfigMap", "meshwork-taxonomy");
    let example_taxonomy =
        std::fs::read_to_string(example("store-billing").join("taxonomy.yaml")).unwrap();
    assert_eq!(
        taxonomy["data"]["taxonomy.yaml"], example_taxonomy,
        "the ConfigMap is a copy of examples/store-billing/taxonomy.yaml"
    );
    let deployment = object("install/broker.yaml", "Deployment", "meshwork-broker");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // Each mounted volume becomes a directory here, filled as the kubelet would fill it.
    let root = tempfile::tempdir().unwrap();
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().unwrap() {
        let volume = mount["name"].as_str().unwrap();
        let dir = root.path().join(volume);
        std::fs::create_dir_all(&dir).unwrap();
        let source = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        if source["configMap"]["name"] == "meshwork-taxonomy" {
            config_map_volume(&taxonomy["data"], &dir);
        }
        if let Some(items) = source["secret"]["items"].as_array() {
            assert_eq!(source["secret"]["secretName"], "meshwork-broker");
            assert_eq!(items[0]["key"], "password");
            let path = items[0]["path"].as_str().unwrap();
            std::fs::write(dir.join(path), "manifest-test-password\n").unwrap();
        }
        mounts.push((mount["mountPath"].as_str().unwrap().to_owned(), dir));
    }
    // A path on a mounted volume moves to that volume's directory here.
    let relocate = |value: &str| {
        let on = mounts.iter().find_map(|(mount, dir)| {
            let rest = value.strip_prefix(mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", dir.display()))
        });
        on.unwrap_or_else(|| value.to_owned())
    };
    let args: Vec<String> = container_args(&deployment)
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--listen", _)) => "--listen=127.0.0.1:0".to_owned(),
            Some((flag, value)) => format!("{flag}={}", relocate(value)),
            None => arg.to_owned(),
        })
        .collect();
    assert!(
        args.iter()
            .all(|a| !a.contains("/var/lib") && !a.contains("/etc/")),
        "every path the broker is given is on a mounted volume: {args:?}"
    );
    let mut broker = meshwork()
        .args(&args)
        .env(
            "MESHWORK_BROKER_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env_remove("MESHWORK_BROKER_USERNAME")
        .env_remove("MESHWORK_BROKER_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("the broker did not start: {first:?}"))
        .to_owned();
    let catalog = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-u",
            "meshwork:manifest-test-password",
        ])
        .args(["-H", "X-Broker-API-Version: 2.17", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}/v2/catalog"))
        .output()
        .unwrap();
    broker.kill().unwrap();
    broker.wait().unwrap();
    let (code, json) = curl_json(&catalog);
    assert_eq!(code, 200, "{json}");
    let services: Vec<&str> = json["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["postgresql"], "the ConfigMap's one ServiceClass");
}
