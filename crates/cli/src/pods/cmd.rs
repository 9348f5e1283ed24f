//! `meshwork pods` (hidden): create, hold and remove pods without the rest of `up`, for the
//! tests and for looking at a pod network by hand.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use api::mesh::pods::PodNetwork;

/// Arguments of `meshwork pods`.
#[derive(clap::Args)]
pub struct PodsArgs {
    #[command(subcommand)]
    command: PodsCommand,
}

#[derive(clap::Subcommand)]
enum PodsCommand {
    /// Create one pod per workload replica (after removing a dead process's pods); prints
    /// `<workload> <replica> <netns> <ip>` per pod.
    Create {
        /// Where `pods.json` goes.
        #[arg(long)]
        state_dir: PathBuf,
        /// The pod network (as `Mesh` `spec.pods.network`).
        #[arg(long, default_value = "198.18.0.0/16")]
        network: PodNetwork,
        /// Then wait until standard input closes, and remove them.
        #[arg(long)]
        hold: bool,
        /// The first slot to try (0: the lowest free one, as `up`).
        #[arg(long, default_value = "0")]
        first_slot: u32,
        /// `WORKLOAD` or `WORKLOAD:REPLICAS`.
        #[arg(required = true)]
        workloads: Vec<String>,
    },
    /// Remove everything `<state-dir>/pods.json` records.
    Delete {
        /// Where `pods.json` is.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Say whether pod mode can run here, and if not why.
    Probe,
}

/// Runs `meshwork pods …`.
pub fn run(args: PodsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PodsCommand::Create {
            state_dir,
            network,
            hold,
            first_slot,
            workloads,
        } => create(&state_dir, &network, hold, first_slot, &workloads),
        PodsCommand::Delete { state_dir } => {
            let removed = super::teardown(&state_dir)?;
            println!("removed: {removed:?}");
            Ok(ExitCode::SUCCESS)
        }
        PodsCommand::Probe => {
            match super::probe() {
                super::Isolation::Pods => println!("pods"),
                super::Isolation::Off(reason) => println!("off: {reason}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn create(
    state_dir: &std::path::Path,
    network: &PodNetwork,
    hold: bool,
    first_slot: u32,
    workloads: &[String],
) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    if let Some(line) = super::clean_stale(state_dir)? {
        println!("[pods] {line}");
    }
    let members = members(workloads)?;
    let record = match super::create(state_dir, network, first_slot, &members) {
        Ok(record) => record,
        Err(e) => {
            let _ = super::teardown(state_dir);
            return Err(e);
        }
    };
    for pod in &record.pods {
        println!("{} {} {} {}", pod.workload, pod.replica, pod.netns, pod.ip);
    }
    if hold {
        println!("[pods] holding; close standard input to remove them");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        super::teardown(state_dir)?;
        println!("[pods] removed");
    }
    Ok(ExitCode::SUCCESS)
}

/// `billing:2` → billing 0, billing 1.
fn members(workloads: &[String]) -> anyhow::Result<Vec<(String, u16)>> {
    let mut out = Vec::new();
    for w in workloads {
        let (name, n) = match w.split_once(':') {
            Some((name, n)) => (name, n.parse().with_context(|| format!("{w}: bad count"))?),
            None => (w.as_str(), 1u16),
        };
        let name: api::resource::Name = name
            .parse()
            .with_context(|| format!("{w}: not a workload name"))?;
        out.extend((0..n).map(|r| (name.to_string(), r)));
    }
    Ok(out)
}
