//! `meshwork policy explain|test|replay|record`: policy tools for people and for CI, built on
//! the same engine (`policy::Engine`) and the same files the mesh runs with.
//!
//! Exit codes: `0` allowed / every case held / nothing newly denied, `1` denied / some case
//! did not hold / something newly denied, `2` bad input (unreadable or invalid files,
//! unknown workloads, malformed requests, unreachable sidecars).

mod explain;
mod replay;
mod route;
mod running;
mod template;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use api::ResourceSet;
use identity::SpiffeId;
use policy::Engine;

pub use running::{RunningPolicies, SidecarPolicies};
pub use template::{TemplateRequest, decide_template};

/// Arguments of `meshwork policy`.
#[derive(clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(clap::Subcommand)]
enum PolicyCommand {
    /// Decide one request and show which policy, rule and matcher decided it.
    ///
    /// Inbound: `meshwork policy explain --from store --to billing POST /charges`.
    /// Egress:  `meshwork policy explain --egress --from billing api.stripe.com:443`.
    /// Exit code 0 when allowed, 1 when denied, 2 on bad input.
    Explain(explain::ExplainArgs),
    /// Run a table of expected decisions (policy-tests.yaml) against the resources.
    ///
    /// Exit code 0 when every case holds, 1 on any mismatch, 2 on bad input.
    Test(test::TestArgs),
    /// Decide the traffic the running mesh recorded (or a record file) with candidate
    /// policies; print what would newly be denied or allowed, with counts and rules.
    ///
    /// Exit code 1 when anything would newly be denied, 0 otherwise, 2 on bad input.
    Replay(replay::ReplayArgs),
    /// Export the running mesh's recorded decisions (JSON) for `policy replay --record FILE`.
    Record(replay::RecordArgs),
}

/// Runs a `meshwork policy` subcommand.
pub fn run(args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Explain(args) => explain::run(args),
        PolicyCommand::Test(args) => test::run(args),
        PolicyCommand::Replay(args) => replay::run(args),
        PolicyCommand::Record(args) => replay::record(args),
    }
}

/// A resource directory and the engine compiled from its policies.
pub struct PolicyFiles {
    /// The directory.
    pub dir: PathBuf,
    /// Its resources.
    pub set: ResourceSet,
    /// Its policies, compiled.
    pub engine: Engine,
}

impl PolicyFiles {
    /// Loads and validates `dir`, and compiles its policies.
    pub fn load(dir: &Path) -> anyhow::Result<PolicyFiles> {
        let set = api::load_dir(dir)?;
        let engine = Engine::compile(&set.policy_set())
            .with_context(|| format!("compiling the policies of {}", dir.display()))?;
        Ok(PolicyFiles {
            dir: dir.to_owned(),
            set,
            engine,
        })
    }

    /// The SPIFFE ID of a workload defined in these files.
    pub fn workload_id(&self, name: &str) -> Option<SpiffeId> {
        self.set.workload_id(name)
    }

    /// The names of the workloads, for "unknown workload" errors.
    pub fn workload_names(&self) -> Vec<String> {
        self.set
            .workloads
            .iter()
            .map(|w| w.resource.metadata.name.to_string())
            .collect()
    }
}

/// A caller given as a `spiffe://` ID or as a workload name that `resolve` knows.
pub fn caller_id(
    from: &str,
    resolve: impl Fn(&str) -> Option<SpiffeId>,
    known: &[String],
) -> anyhow::Result<SpiffeId> {
    if from.starts_with("spiffe://") {
        return from
            .parse()
            .with_context(|| format!("--from {from:?} is not a valid SPIFFE ID"));
    }
    match resolve(from) {
        Some(id) => Ok(id),
        None => bail!(
            "--from {from:?} is neither a spiffe:// ID nor a known workload (known: {})",
            known.join(", ")
        ),
    }
}
