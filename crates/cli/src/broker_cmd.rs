//! `meshwork broker`: the Open Service Broker (OSB v2.17) as its own process, and
//! `meshwork broker purge`. `meshwork up` runs it as a child when a directory has
//! `ServiceClaim`s.
//!
//! The catalog and policy come from `--resources DIR` (`ServiceClass`, `Environment`,
//! `ServicePolicy`), or the broker's built-in demo taxonomy when the directory defines none.
//! Providers are fixed by configuration, never by requests: the local servers of
//! [`broker::ProviderConfig::local`] (admin URLs from `MESHWORK_BROKER_POSTGRES_URL`, `…_MYSQL_URL`,
//! `…_REDIS_URL`) plus [`PRIVATE_POSTGRES`], a private PostgreSQL cluster beside the state file.
//! The password comes from a file or the environment, never from argv, and is never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use api::ResourceSet;
use api::taxonomy::Problem;
use broker::taxonomy::Named;
use broker::{
    BasicCredentials, BrokerConfig, ProviderConfig, RunningBroker, Secret, StepGate, Taxonomy,
};

use crate::{logging, parent};

/// Env var with the platform's user name (or `--username`).
pub const USERNAME_ENV: &str = "MESHWORK_BROKER_USERNAME";
/// Env var with the platform's password (or `--password-file`).
pub const PASSWORD_ENV: &str = "MESHWORK_BROKER_PASSWORD";
/// The provider name of the private PostgreSQL cluster (under `<state dir>/postgres-private/`).
pub const PRIVATE_POSTGRES: &str = "postgres-private";

/// Arguments of `meshwork broker`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BrokerArgs {
    #[command(subcommand)]
    action: Option<BrokerAction>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Subcommand)]
enum BrokerAction {
    /// Deprovision every instance the state file records (bindings included) and forget them.
    Purge(PurgeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Where to serve the OSB API (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8099")]
    listen: SocketAddr,
    /// The redb state file (instances, bindings, their credentials: kept mode 0600).
    #[arg(long, default_value = ".meshwork/broker.redb")]
    state: PathBuf,
    /// Directory with ServiceClass/Environment/ServicePolicy resources; built-in demo
    /// taxonomy when omitted or when it defines none.
    #[arg(long)]
    resources: Option<PathBuf>,
    /// The user name platforms authenticate with (else $MESHWORK_BROKER_USERNAME).
    #[arg(long)]
    username: Option<String>,
    /// File holding the password platforms authenticate with (else $MESHWORK_BROKER_PASSWORD).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Crash-test seam only, never for real use: every operation that reaches this progress
    /// step (e.g. "instance created") hangs there forever, so a test can `kill -9` the broker
    /// at a known point and check that a restart recovers (see `broker::StepGate`).
    #[arg(long, hide = true, value_name = "STEP")]
    test_hold_at_step: Option<String>,
}

#[derive(clap::Args)]
struct PurgeArgs {
    /// The redb state file to purge.
    #[arg(long, default_value = ".meshwork/broker.redb")]
    state: PathBuf,
    /// The taxonomy the instances were made under (as for serving).
    #[arg(long)]
    resources: Option<PathBuf>,
}

/// Runs `meshwork broker` (until SIGINT/SIGTERM) or `meshwork broker purge`.
pub fn run(args: BrokerArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match args.action {
        Some(BrokerAction::Purge(p)) => rt.block_on(purge(p)),
        None => rt.block_on(serve(args.serve)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let username = match args.username {
        Some(u) => u,
        None => std::env::var(USERNAME_ENV)
            .map_err(|_| anyhow!("no broker user name: set {USERNAME_ENV} or pass --username"))?,
    };
    let credentials = BasicCredentials {
        username,
        password: password(args.password_file.as_deref())?,
    };
    let mut config = config(
        args.listen,
        &args.state,
        credentials,
        args.resources.as_deref(),
    )?;
    if let Some(step) = args.test_hold_at_step {
        tracing::warn!(
            step,
            "crash-test seam: operations reaching this step hang forever"
        );
        config.step_gate = Some(StepGate::new(step));
    }
    let running = RunningBroker::start(config).await?;
    if running.resumed_operations() > 0 {
        tracing::info!(
            operations = running.resumed_operations(),
            "resumed interrupted operations"
        );
    }
    println!("listening on http://{}", running.local_addr());
    parent::shutdown_signal().await;
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn purge(args: PurgeArgs) -> anyhow::Result<ExitCode> {
    // Purging talks to providers only; the credentials guard an HTTP API that is not served.
    let unused = BasicCredentials {
        username: String::new(),
        password: Secret::random_password(),
    };
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = config(listen, &args.state, unused, args.resources.as_deref())?;
    let removed = broker::purge(config).await?;
    println!("purged {removed} instance(s)");
    Ok(ExitCode::SUCCESS)
}

/// The broker configuration `meshwork broker` (and `meshwork claims`) use for a state file.
pub fn config(
    listen: SocketAddr,
    state: &Path,
    credentials: BasicCredentials,
    resources: Option<&Path>,
) -> anyhow::Result<BrokerConfig> {
    let set = match resources {
        Some(dir) => api::taxonomy::load_taxonomy_dir(dir)?,
        None => ResourceSet::default(),
    };
    let providers = providers(state);
    let taxonomy = taxonomy(&set, &providers)?;
    Ok(BrokerConfig::new(
        listen,
        state.to_owned(),
        credentials,
        taxonomy,
        providers,
    ))
}

/// The providers: the local servers, plus [`PRIVATE_POSTGRES`] in `<state dir>/postgres-private`.
pub fn providers(state: &Path) -> ProviderConfig {
    let dir = state
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default()
        .join(PRIVATE_POSTGRES);
    ProviderConfig::local().with_private_postgres(PRIVATE_POSTGRES, dir)
}

fn named<S: Clone>(items: &[api::Loaded<S>]) -> Vec<Named<S>> {
    items
        .iter()
        .map(|l| Named::new(l.resource.metadata.name.as_str(), l.resource.spec.clone()))
        .collect()
}

/// The set's taxonomy (the built-in demo one when the set defines no class, environment or
/// policy), checked against the providers; problems name file, line, resource and field.
pub fn taxonomy(set: &ResourceSet, providers: &ProviderConfig) -> anyhow::Result<Taxonomy> {
    let none = set.service_classes.is_empty()
        && set.environments.is_empty()
        && set.service_policies.is_empty();
    let taxonomy = match none {
        true => Taxonomy::demo(),
        false => Taxonomy::new(
            named(&set.service_classes),
            named(&set.environments),
            named(&set.service_policies),
        )
        .map_err(|e| located(set, &e.problems))?,
    };
    taxonomy
        .check_providers(|name| providers.kind_of(name))
        .map_err(|e| located(set, &e.problems))?;
    Ok(taxonomy)
}

fn located(set: &ResourceSet, problems: &[Problem]) -> anyhow::Error {
    let lines: Vec<String> = problems.iter().map(|p| set.locate(p).to_string()).collect();
    anyhow!("invalid service taxonomy:\n{}", lines.join("\n"))
}

/// The password from `file` (trailing newline ignored) or `$MESHWORK_BROKER_PASSWORD`.
pub fn password(file: Option<&Path>) -> anyhow::Result<Secret> {
    let value = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the password file {}", path.display()))?,
        None => std::env::var(PASSWORD_ENV).map_err(|_| {
            anyhow!("no broker password: set {PASSWORD_ENV} or pass --password-file")
        })?,
    };
    let value = value.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!value.is_empty(), "the broker password is empty");
    Ok(Secret::new(value))
}
