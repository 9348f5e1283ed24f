//! `meshwork token create`: a one-time, expiring join token for `meshwork agent`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use api::contract::admin::{CreateToken, TokenRequest};
use api::contract::client::{Client, UnixConnect};

/// Arguments of `meshwork token`.
#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
    /// State directory of the control plane (its socket is `control.sock` there).
    #[arg(
        long,
        default_value = ".meshwork",
        env = "MESHWORK_STATE_DIR",
        global = true
    )]
    state_dir: PathBuf,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Create a join token and print it (once; only its hash is stored).
    Create {
        /// How long it stays valid, e.g. 10m, 1h.
        #[arg(long, default_value = "10m")]
        ttl: api::duration::HumanDuration,
    },
}

/// Runs `meshwork token`.
pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(UnixConnect(args.state_dir.join("control.sock")));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting tokio")?;
    match args.command {
        TokenCommand::Create { ttl } => {
            let request = TokenRequest {
                ttl_secs: Some(ttl.get().as_secs().max(1)),
            };
            let token = rt.block_on(client.call(&CreateToken, &request))?;
            println!("{}", token.token);
            eprintln!(
                "expires at {} (unix seconds); use it once: meshwork agent --join-token ...",
                token.expires_at
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
