//! `meshwork ca`: CA status and rotation with overlap.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

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
}

/// Runs `meshwork ca`.
pub fn run(args: CaArgs) -> anyhow::Result<ExitCode> {
    let client = control::AdminClient::new(args.state_dir.join("control.sock"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match args.command {
        CaCommand::Rotate => {
            let a = rt.block_on(client.rotate_ca())?;
            println!("CA #{} published in the trust bundle: {:?}", a.seq, a.state);
        }
        CaCommand::Status => {
            let status = rt.block_on(client.status())?;
            for a in status.authorities {
                let left = control::check::human(a.not_after - status.now);
                println!(
                    "CA #{:<3} {:<40} expires in {left}",
                    a.seq,
                    format!("{:?}", a.state)
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
