//! `meshwork entry`: registration entries (which processes get which SPIFFE ID).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use api::contract::admin::{DeleteEntry, ListEntries, PutEntry};
use api::contract::client::{Client, NoBody, UnixConnect};
use api::entry::{RegistrationEntrySpec, Selector};
use identity::SpiffeId;

/// Arguments of `meshwork entry`.
#[derive(clap::Args)]
pub struct EntryArgs {
    #[command(subcommand)]
    command: EntryCommand,
    /// State directory of the control plane.
    #[arg(
        long,
        default_value = ".meshwork",
        env = "MESHWORK_STATE_DIR",
        global = true
    )]
    state_dir: PathBuf,
}

#[derive(clap::Subcommand)]
enum EntryCommand {
    /// Create (or replace) an entry: every selector must match a caller.
    Create {
        /// Entry id, e.g. billing.
        id: String,
        /// The identity to issue.
        #[arg(long)]
        spiffe_id: SpiffeId,
        /// unix:uid:N, unix:gid:N, unix:path:/abs/exe or unix:process:PID:START (repeatable).
        #[arg(long = "selector", required = true)]
        selectors: Vec<Selector>,
    },
    /// List entries.
    List,
    /// Delete an entry.
    Delete {
        /// Entry id.
        id: String,
    },
}

/// Runs `meshwork entry`.
pub fn run(args: EntryArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(UnixConnect(args.state_dir.join("control.sock")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match args.command {
        EntryCommand::Create {
            id,
            spiffe_id,
            selectors,
        } => {
            let spec = RegistrationEntrySpec {
                spiffe_id,
                selectors,
                hint: None,
            };
            rt.block_on(client.call(&PutEntry(&id), &spec))?;
            println!("entry {id} stored");
        }
        EntryCommand::List => {
            for e in rt.block_on(client.call(&ListEntries, &NoBody))? {
                let selectors: Vec<String> =
                    e.spec.selectors.iter().map(ToString::to_string).collect();
                println!(
                    "{:<20} {:<50} {}",
                    e.id,
                    e.spec.spiffe_id,
                    selectors.join(" ")
                );
            }
        }
        EntryCommand::Delete { id } => {
            rt.block_on(client.call(&DeleteEntry(&id), &NoBody))?;
            println!("entry {id} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
