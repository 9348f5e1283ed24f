//! Pods (issue 10): a network namespace per workload replica, created and removed by `up`.
//!
//! One `up` takes one /24 slot of `Mesh` `spec.pods.network` (`plan.rs`: names, addresses,
//! the steps in order), runs the steps as `ip`/`nft` commands (`kernel.rs`), and records
//! every object in `<state>/pods.json` before creating it (`record.rs`), so that [`teardown`]
//! removes all of them on every way out of `up` and [`clean_stale`] those of an `up` that was
//! killed. Inside each pod goes the ruleset of `proxy::pod::PodRules`; processes run there
//! unprivileged (`app.rs`). Whether pod mode can run at all is [`probe`]'s question.
//!
//! Layering (`layering.rs`): uses `state` only; `up` and `exec` use it.

pub mod app;
pub mod cmd;
pub mod hosts;
pub mod kernel;
pub mod plan;
pub mod probe;
pub mod record;

use std::path::Path;

use anyhow::{Context, bail};
use api::mesh::pods::PodNetwork;

pub use plan::PodPlan;
pub use probe::{Isolation, probe};
pub use record::PodsRecord;

use hosts::HostPlan;
use plan::{Object, Slot, Step};

/// `up --isolation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IsolationArg {
    /// Pods when this process may create them, else proxy mode (saying so in one line).
    #[default]
    Auto,
    /// Proxy mode: apps share the host's network and reach their sidecar via HTTP_PROXY.
    Off,
    /// Pods, or an error naming what is missing.
    Pods,
}

/// What `--isolation` resolves to here: `pods` without what it needs is an error naming it.
pub fn decide(arg: IsolationArg) -> anyhow::Result<Isolation> {
    match arg {
        IsolationArg::Off => Ok(Isolation::Off("--isolation=off".to_owned())),
        IsolationArg::Auto => Ok(probe()),
        IsolationArg::Pods => match probe() {
            Isolation::Pods => Ok(Isolation::Pods),
            Isolation::Off(reason) => bail!("--isolation=pods: {reason}"),
        },
    }
}

/// The one line `up` prints when isolation is off, and what that means.
pub fn off_line(reason: &str) -> String {
    format!(
        "isolation: off ({reason}); apps share the host network and reach their sidecar \
         through HTTP_PROXY; any local process can use a workload's outbound listener"
    )
}

/// Creates one pod per `(workload, replica)` in a free slot of `network` (the first from
/// `first_slot`, which is 0 but for tests), recording each
/// object in `<state_dir>/pods.json` before it is created. On an error, what was created
/// stays recorded: the caller removes it with [`teardown`].
pub fn create(
    state_dir: &Path,
    network: &PodNetwork,
    first_slot: u32,
    members: &[(String, u16)],
) -> anyhow::Result<PodsRecord> {
    if members.len() > plan::MAX_PODS {
        bail!(
            "{} pods asked for; one slot of the pod network holds {}",
            members.len(),
            plan::MAX_PODS
        );
    }
    let mut record = new_record(state_dir)?;
    let slot = claim_slot(state_dir, &mut record, network, first_slot, &bridge)?;
    record.slot = Some(slot);
    record.save(state_dir)?;
    for step in plan::slot_steps(&slot) {
        apply(state_dir, &mut record, step)?;
    }
    for (i, (workload, replica)) in members.iter().enumerate() {
        let pod = PodPlan::new(&slot, i, workload, *replica);
        add_pod(state_dir, &mut record, &slot, pod, None)?;
    }
    Ok(record)
}

/// `up --hosts`: the fabric in a free slot of `network` (from `first_slot`), then one
/// simulated host per `(name, members)` in a slot of its own, routes between them, and one
/// pod per member on its host (`hosts.rs`). Recorded as [`create`] records.
pub fn create_hosts(
    state_dir: &Path,
    network: &PodNetwork,
    first_slot: u32,
    hosts: &[(String, Vec<(String, u16)>)],
) -> anyhow::Result<PodsRecord> {
    if hosts.is_empty() || hosts.len() > plan::MAX_PODS {
        bail!(
            "{} hosts asked for; the fabric holds 1 to {}",
            hosts.len(),
            plan::MAX_PODS
        );
    }
    for (name, members) in hosts {
        hosts::check_name(name)?;
        if members.len() > plan::MAX_PODS {
            bail!(
                "host {name}: {} pods; a host holds {}",
                members.len(),
                plan::MAX_PODS
            );
        }
    }
    let mut record = new_record(state_dir)?;
    let fabric = claim_slot(state_dir, &mut record, network, first_slot, &bridge)?;
    record.slot = Some(fabric);
    record.save(state_dir)?;
    for step in hosts::fabric_steps(&fabric) {
        apply(state_dir, &mut record, step)?;
    }
    let mut next = fabric.index + 1;
    for (k, (name, _)) in hosts.iter().enumerate() {
        let host = add_host(state_dir, &mut record, network, &fabric, (k, name), next)
            .with_context(|| format!("creating host {name}"))?;
        next = host.slot.index + 1;
    }
    for step in hosts::route_steps(&record.hosts) {
        apply(state_dir, &mut record, step)?;
    }
    for (host, (name, members)) in record.hosts.clone().iter().zip(hosts) {
        for (i, (workload, replica)) in members.iter().enumerate() {
            let pod = PodPlan::new(&host.slot, i, workload, *replica).on_host(name);
            add_pod(state_dir, &mut record, &host.slot, pod, Some(&host.netns))?;
        }
    }
    Ok(record)
}

/// A host's namespace, its slot (claimed from `first`) and its links.
fn add_host(
    state_dir: &Path,
    record: &mut PodsRecord,
    network: &PodNetwork,
    fabric: &Slot,
    (k, name): (usize, &str),
    first: u32,
) -> anyhow::Result<HostPlan> {
    let netns = hosts::netns(fabric, name);
    for step in hosts::netns_steps(&netns) {
        apply(state_dir, record, step)?;
    }
    let veth = |slot: &Slot| {
        (
            Object::HostVeth(slot.bridge()),
            hosts::claim_argv(slot, &netns),
        )
    };
    let slot = claim_slot(state_dir, record, network, first, &veth)?;
    let host = HostPlan::new(fabric, k, name, slot);
    record.hosts.push(host.clone());
    record.save(state_dir)?;
    for step in hosts::host_steps(fabric, &host) {
        apply(state_dir, record, step)?;
    }
    Ok(host)
}

/// An empty record, saved, where none is.
fn new_record(state_dir: &Path) -> anyhow::Result<PodsRecord> {
    if PodsRecord::load(state_dir)?.is_some() {
        bail!(
            "{} exists: remove its pods first",
            PodsRecord::path(state_dir).display()
        );
    }
    let record = PodsRecord::new();
    record.save(state_dir)?;
    Ok(record)
}

/// Records `pod`, then makes it in `slot` (on the simulated host `host`, if any).
fn add_pod(
    state_dir: &Path,
    record: &mut PodsRecord,
    slot: &Slot,
    pod: PodPlan,
    host: Option<&str>,
) -> anyhow::Result<()> {
    let ruleset = proxy::pod::PodRules::default().ruleset();
    record.pods.push(pod.clone());
    record.save(state_dir)?;
    for step in plan::pod_steps(slot, &pod, &ruleset, host) {
        apply(state_dir, record, step).with_context(|| {
            format!(
                "creating the pod of {} replica {}",
                pod.workload, pod.replica
            )
        })?;
    }
    Ok(())
}

/// Records what `step` creates, then runs it.
fn apply(state_dir: &Path, record: &mut PodsRecord, step: Step) -> anyhow::Result<()> {
    if let Some(object) = step.creates {
        record.objects.push(object);
        record.save(state_dir)?;
    }
    kernel::perform(&step.action)
}

/// The bridge's alias (`ip link set … alias`): `meshwork:<state dir>`, so that a slot whose
/// `up` was killed can be found and reclaimed from another state directory.
const ALIAS_PREFIX: &str = "meshwork:";

/// How a slot is claimed: the object to record and the command that creates the link named
/// `mwbr<slot>` in the root namespace (failing with EEXIST where it exists).
type Claim<'a> = &'a dyn Fn(&Slot) -> (Object, Vec<String>);

/// A slot's bridge, in the root namespace.
fn bridge(slot: &Slot) -> (Object, Vec<String>) {
    let name = slot.bridge();
    let argv = ["ip", "link", "add", &name, "type", "bridge"].map(str::to_owned);
    (Object::Bridge(name), argv.to_vec())
}

/// Takes the first slot from `first` whose link `make` can create (EEXIST: another `up`
/// has it, or had it and was killed: then its objects are removed and the slot taken), and
/// names this state directory in the link's alias.
fn claim_slot(
    state_dir: &Path,
    record: &mut PodsRecord,
    network: &PodNetwork,
    first: u32,
    make: Claim<'_>,
) -> anyhow::Result<Slot> {
    for index in first..plan::slot_count(network) {
        let Some(slot) = Slot::of(network, index) else {
            break;
        };
        let mut taken = try_create(state_dir, record, make(&slot))?;
        if !taken && let Some(line) = reclaim(&slot)? {
            println!("[up] {line}");
            taken = try_create(state_dir, record, make(&slot))?;
        }
        if taken {
            let alias = format!("{ALIAS_PREFIX}{}", state_dir.canonicalize()?.display());
            if alias.len() < 256 {
                let argv = ["ip", "link", "set", &slot.bridge(), "alias", &alias];
                kernel::run(&argv.map(str::to_owned), None)??;
            }
            return Ok(slot);
        }
    }
    bail!(
        "every /24 slot of the pod network {network} from {first} is taken (bridges \
         mwbr{first}…mwbr{}); stop another `meshwork up` or widen Mesh spec.pods.network",
        plan::slot_count(network) - 1
    )
}

/// Creates `object` with `argv`, recorded first; false when it exists (not ours: unrecorded).
fn try_create(
    state_dir: &Path,
    record: &mut PodsRecord,
    (object, argv): (Object, Vec<String>),
) -> anyhow::Result<bool> {
    record.objects.push(object);
    record.save(state_dir)?;
    match kernel::run(&argv, None)? {
        Ok(()) => Ok(true),
        Err(failed) => {
            record.objects.pop();
            record.save(state_dir)?;
            match failed.exists() {
                true => Ok(false),
                false => Err(failed.into()),
            }
        }
    }
}

/// If `slot`'s bridge belongs to a state directory whose `pods.json` records this slot for a
/// process that is gone, removes what that record lists; the line saying so.
fn reclaim(slot: &Slot) -> anyhow::Result<Option<String>> {
    let alias = std::fs::read_to_string(format!("/sys/class/net/{}/ifalias", slot.bridge()))
        .unwrap_or_default();
    let Some(dir) = alias.trim().strip_prefix(ALIAS_PREFIX) else {
        return Ok(None);
    };
    let dir = Path::new(dir);
    let Ok(Some(record)) = PodsRecord::load(dir) else {
        return Ok(None);
    };
    if !record.holds_slot(slot.index) || !record.owner_gone() {
        return Ok(None);
    }
    let Some(removed) = teardown(dir)? else {
        return Ok(None);
    };
    Ok(Some(format!(
        "reclaimed {} from pid {} (gone; state directory {}): removed its {} pod(s)",
        slot.bridge(),
        removed.owner_pid,
        dir.display(),
        removed.pods
    )))
}

/// What [`teardown`] removed.
#[derive(Debug)]
pub struct Removed {
    /// The process that had created them.
    pub owner_pid: u32,
    /// The slot's bridge, if it had one.
    pub bridge: Option<String>,
    /// How many pods.
    pub pods: usize,
    /// How many objects.
    pub objects: usize,
}

/// Removes every object `<state_dir>/pods.json` records (last created first), then the
/// record. None without a record. An object that cannot be removed stays recorded, and
/// the error names each.
pub fn teardown(state_dir: &Path) -> anyhow::Result<Option<Removed>> {
    let Some(mut record) = PodsRecord::load(state_dir)? else {
        return Ok(None);
    };
    let removed = Removed {
        owner_pid: record.owner_pid,
        bridge: record.slot.map(|s| s.bridge()),
        pods: record.pods.len(),
        objects: record.objects.len(),
    };
    let mut left = Vec::new();
    let mut errors = Vec::new();
    for object in record.objects.iter().rev() {
        if let Err(e) = kernel::remove(object) {
            errors.push(format!("{e:#}"));
            left.push(object.clone());
        }
    }
    if errors.is_empty() {
        PodsRecord::remove(state_dir)?;
        return Ok(Some(removed));
    }
    left.reverse();
    record.objects = left;
    record.save(state_dir)?;
    bail!(
        "could not remove everything {} records: {}",
        PodsRecord::path(state_dir).display(),
        errors.join("; ")
    )
}

/// Before anything else: the pods an earlier `up` on this state directory left behind when
/// it was killed (`kill -9`) are removed; returns the one line saying so. A record whose
/// owner still runs is an error.
pub fn clean_stale(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let Some(record) = PodsRecord::load(state_dir)? else {
        return Ok(None);
    };
    if !record.owner_gone() && record.owner_pid != std::process::id() {
        bail!(
            "{} belongs to pid {}, which still runs: stop it first",
            PodsRecord::path(state_dir).display(),
            record.owner_pid
        );
    }
    let Some(r) = teardown(state_dir)? else {
        return Ok(None);
    };
    Ok(Some(format!(
        "removed what pid {} (gone) left in the kernel: {} pod(s){}, {} object(s) in all",
        r.owner_pid,
        r.pods,
        r.bridge.map(|b| format!(" on {b}")).unwrap_or_default(),
        r.objects
    )))
}
