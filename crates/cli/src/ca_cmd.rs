//! `meshwork ca`: CA status and rotation with overlap.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use api::contract::admin::{AuthorityState, RotateCa, Status};
use api::contract::client::{Client, NoBody, UnixConnect};

/// Arguments of `meshwork ca`.
#[derive(clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
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
enum CaCommand {
    /// Publish a new root now; it signs after one SVID lifetime, and the old root
    /// leaves the bundle one SVID lifetime after that.
    Rotate,
    /// Show every root and its state.
    Status,
    /// The key-encryption key of a shared (etcd) store.
    #[command(subcommand)]
    Kek(KekCommand),
}

#[derive(clap::Subcommand)]
enum KekCommand {
    /// Create a new key-encryption key file (mode 0600; refuses to overwrite one). Give
    /// every control replica the same file with --kek-file; keep it out of etcd and its
    /// backups.
    Create {
        /// Where to write it.
        path: PathBuf,
    },
}

/// Runs `meshwork ca`.
pub fn run(args: CaArgs) -> anyhow::Result<ExitCode> {
    if let CaCommand::Kek(KekCommand::Create { path }) = &args.command {
        let kek = control::store::seal::Kek::create(path)?;
        println!(
            "key-encryption key {} written to {}",
            kek.id(),
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(UnixConnect(args.state_dir.join("control.sock")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match args.command {
        CaCommand::Rotate => {
            let a = rt.block_on(client.call(&RotateCa, &NoBody))?;
            println!(
                "CA #{} is in the trust bundle now; {}",
                a.seq,
                state(a.state, now)
            );
        }
        CaCommand::Status => {
            let status = rt.block_on(client.call(&Status, &NoBody))?;
            for a in status.authorities {
                let left = control::check::human(a.not_after - status.now);
                println!(
                    "CA #{:<3} {:<45} expires in {left}",
                    a.seq,
                    state(a.state, status.now)
                );
            }
        }
        CaCommand::Kek(_) => {}
    }
    Ok(ExitCode::SUCCESS)
}

fn state(s: AuthorityState, now: i64) -> String {
    let until = |t: i64| control::check::human((t - now).max(0));
    match s {
        AuthorityState::Prepared { activate_at } => {
            format!("prepared: signs in {}", until(activate_at))
        }
        AuthorityState::Active => "active: signing".into(),
        AuthorityState::Retiring { retire_at } => {
            format!("retiring: leaves the bundle in {}", until(retire_at))
        }
    }
}
