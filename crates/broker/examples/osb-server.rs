//! A minimal embedding of the broker: the demo taxonomy and the local providers in a few lines.
//! The real command is `meshwork broker` (crates/cli), which `conformance/run.sh` runs.
//!
//! usage: osb-server [--listen 127.0.0.1:0] [--state PATH] [--user U] [--password P] [--purge]
//! Prints `listening on http://ADDR` once ready; stops on SIGINT/SIGTERM.
//! `--purge` instead deprovisions everything recorded in the state file and exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use broker::{BasicCredentials, BrokerConfig, ProviderConfig, RunningBroker, Secret, Taxonomy};

struct Args {
    listen: SocketAddr,
    state: PathBuf,
    user: String,
    password: String,
    purge: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state: PathBuf::from(".meshwork/broker.redb"),
        user: "broker".into(),
        password: "broker".into(),
        purge: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--purge" {
            args.purge = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => args.listen = value.parse().map_err(|e| format!("--listen: {e}"))?,
            "--state" => args.state = value.into(),
            "--user" => args.user = value,
            "--password" => args.password = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args()?;
    let config = BrokerConfig::new(
        args.listen,
        args.state,
        BasicCredentials {
            username: args.user,
            password: Secret::new(args.password),
        },
        Taxonomy::demo(),
        ProviderConfig::local(),
    );
    if args.purge {
        let removed = broker::purge(config).await?;
        println!("purged {removed} instance(s)");
        return Ok(());
    }
    let running = RunningBroker::start(config).await?;
    println!("listening on http://{}", running.local_addr());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    running.shutdown().await;
    Ok(())
}
