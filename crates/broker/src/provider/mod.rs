//! Providers: the real servers instances and bindings live on.
//!
//! Every operation is idempotent (create-if-missing, drop-if-exists), so an operation
//! interrupted by a crash can simply run again, and `DELETE` works on half-created resources.
//! Admin credentials come from [`ProviderConfig`], never from requests; generated passwords
//! travel as [`Secret`]s and reach servers only as hashes where the server allows it.
//!
//! Must not import: `ops`, `store`, `http`, `server` (the operation engine calls providers,
//! never the other way round; progress notes go through [`Progress`]).

pub mod mysql;
pub mod pgdev;
pub mod postgres;
pub mod progress;
pub mod redis;

/// The progress step every provider records once the instance's main resource exists
/// (database, or Redis owner user) and before it is fully configured: the point where a
/// crash leaves the most to clean up.
pub const STEP_INSTANCE_CREATED: &str = "instance created";

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::taxonomy::{ServiceKind, SizeLimits};
pub use progress::Progress;

/// RFC 3339 in UTC, as OSB `expires_at` wants it (and PostgreSQL `VALID UNTIL` accepts).
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    t.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A provider failure; always the upstream (server) side.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The admin URL is unusable.
    #[error("provider {provider}: invalid admin URL: {reason}")]
    Config {
        /// Provider name.
        provider: String,
        /// What is wrong (never the URL itself: it may hold a password).
        reason: String,
    },
    /// Could not reach or authenticate to the server.
    #[error("provider {provider}: cannot connect to {server}: {message}; retrying is safe")]
    Connect {
        /// Provider name.
        provider: String,
        /// `host:port`.
        server: String,
        /// The client library's message.
        message: String,
    },
    /// A statement or command failed.
    #[error(
        "provider {provider}: {action} failed: {message}; the operation is idempotent, retrying is safe"
    )]
    Command {
        /// Provider name.
        provider: String,
        /// What the broker was doing, e.g. `create database mw_x`.
        action: String,
        /// The server's message (passwords never appear in commands, only hashes).
        message: String,
    },
    /// The provider cannot run on this machine as configured; nothing was created. Retrying
    /// helps only once `remedy` is done.
    #[error("provider {provider} cannot run here: {reason}; to fix: {remedy}; then retry")]
    Unavailable {
        /// Provider name.
        provider: String,
        /// What is missing or in the way.
        reason: String,
        /// Exactly what to change.
        remedy: String,
    },
}

/// Where a provider's admin connection goes. `Debug` redacts the URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderSpec {
    /// A PostgreSQL server; the URL's user needs CREATEDB, CREATEROLE and pg_signal_backend
    /// (a superuser has all three).
    Postgres {
        /// e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
        admin_url: Secret,
    },
    /// A MySQL/MariaDB server; the URL's user needs CREATE USER, GRANT OPTION and
    /// CONNECTION ADMIN (root has them).
    Mysql {
        /// e.g. `mysql://root@127.0.0.1:3306`.
        admin_url: Secret,
    },
    /// A Redis server (6+, ACLs); the URL's user needs `+acl +scan +unlink`.
    Redis {
        /// e.g. `redis://127.0.0.1:6379`.
        admin_url: Secret,
    },
    /// A private PostgreSQL cluster in `dir`, created and started on first use from the
    /// installed server binaries (see [`pgdev`]); for demos without a database server.
    PostgresDev {
        /// Cluster directory, normally under the broker's state directory.
        dir: std::path::PathBuf,
    },
}

impl ProviderSpec {
    /// The kind of service this provider provisions.
    pub fn kind(&self) -> ServiceKind {
        match self {
            ProviderSpec::Postgres { .. } | ProviderSpec::PostgresDev { .. } => {
                ServiceKind::Postgresql
            }
            ProviderSpec::Mysql { .. } => ServiceKind::Mysql,
            ProviderSpec::Redis { .. } => ServiceKind::Redis,
        }
    }
}

/// Named providers, referenced by `ServicePolicy` rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Providers by name.
    pub providers: BTreeMap<String, ProviderSpec>,
}

impl ProviderConfig {
    /// The providers the demo taxonomy names, all on this machine's servers: `postgres-shared`
    /// and `postgres-prod` (`$MESHWORK_BROKER_POSTGRES_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/postgres`), `mysql-shared` and `mysql-prod`
    /// (`$MESHWORK_BROKER_MYSQL_URL`, default `mysql://root@127.0.0.1:3306`), `redis-shared` and
    /// `redis-prod` (`$MESHWORK_BROKER_REDIS_URL`, default `redis://127.0.0.1:6379`).
    pub fn local() -> Self {
        let env = |var: &str, default: &str| {
            Secret::new(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
        };
        let pg = env(
            "MESHWORK_BROKER_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        );
        let my = env("MESHWORK_BROKER_MYSQL_URL", "mysql://root@127.0.0.1:3306");
        let rd = env("MESHWORK_BROKER_REDIS_URL", "redis://127.0.0.1:6379");
        let mut providers = BTreeMap::new();
        for tier in ["shared", "prod"] {
            let pg = ProviderSpec::Postgres {
                admin_url: pg.clone(),
            };
            let my = ProviderSpec::Mysql {
                admin_url: my.clone(),
            };
            let rd = ProviderSpec::Redis {
                admin_url: rd.clone(),
            };
            providers.insert(format!("postgres-{tier}"), pg);
            providers.insert(format!("mysql-{tier}"), my);
            providers.insert(format!("redis-{tier}"), rd);
        }
        ProviderConfig { providers }
    }

    /// Replaces (or adds) provider `name` with a private PostgreSQL cluster in `dir`.
    pub fn with_private_postgres(mut self, name: &str, dir: std::path::PathBuf) -> Self {
        self.providers
            .insert(name.to_owned(), ProviderSpec::PostgresDev { dir });
        self
    }

    /// The kind a named provider provisions.
    pub fn kind_of(&self, name: &str) -> Option<ServiceKind> {
        self.providers.get(name).map(ProviderSpec::kind)
    }
}

/// Credentials of one binding, as returned to the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    /// `postgresql`, `mysql` or `redis` (servicebinding.io `type`).
    pub kind: ServiceKind,
    /// Provider name (servicebinding.io `provider`).
    pub provider: String,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name (postgresql, mysql).
    pub database: Option<String>,
    /// Redis key prefix every key must start with.
    pub key_prefix: Option<String>,
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

impl Credentials {
    /// A connection URI with the credentials embedded.
    pub fn uri(&self) -> Secret {
        let (scheme, path) = match self.kind {
            ServiceKind::Postgresql => ("postgresql", self.database.clone().unwrap_or_default()),
            ServiceKind::Mysql => ("mysql", self.database.clone().unwrap_or_default()),
            ServiceKind::Redis => ("redis", "0".to_owned()),
        };
        Secret::new(format!(
            "{scheme}://{}:{}@{}:{}/{path}",
            self.username,
            self.password.expose(),
            self.host,
            self.port
        ))
    }

    /// The OSB `credentials` object (also the servicebinding.io file set).
    pub fn to_osb(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "type": self.kind.as_str(),
            "provider": self.provider,
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password.expose(),
            "uri": self.uri().expose(),
        });
        if let Some(db) = &self.database {
            v["database"] = db.clone().into();
        }
        if let Some(prefix) = &self.key_prefix {
            v["keyPrefix"] = prefix.clone().into();
        }
        v
    }
}

/// What a provider needs to know about an instance.
#[derive(Debug, Clone)]
pub struct InstancePlan {
    /// The resource name (see [`crate::names`]).
    pub resource: String,
    /// The size's limits.
    pub limits: SizeLimits,
}

/// What a provider needs to know about a binding.
#[derive(Debug, Clone)]
pub struct BindingPlan {
    /// The user to create.
    pub username: String,
    /// Its password.
    pub password: Secret,
    /// When the credentials stop working, if the policy sets a TTL.
    pub valid_until: Option<time::OffsetDateTime>,
}

/// A configured provider, ready to run operations.
#[derive(Debug)]
pub enum Provider {
    /// PostgreSQL.
    Postgres(postgres::PostgresProvider),
    /// MySQL/MariaDB.
    Mysql(mysql::MysqlProvider),
    /// Redis.
    Redis(redis::RedisProvider),
    /// A private PostgreSQL cluster.
    PostgresDev(pgdev::PostgresDevProvider),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Provider::Postgres($p) => $e,
            Provider::Mysql($p) => $e,
            Provider::Redis($p) => $e,
            Provider::PostgresDev(dev) => {
                let $p = dev.cluster().await?;
                $e
            }
        }
    };
}

impl Provider {
    /// Builds a provider from its spec (parses the URL; does not connect).
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, ProviderError> {
        Ok(match spec {
            ProviderSpec::Postgres { admin_url } => {
                Provider::Postgres(postgres::PostgresProvider::new(name, admin_url)?)
            }
            ProviderSpec::Mysql { admin_url } => {
                Provider::Mysql(mysql::MysqlProvider::new(name, admin_url)?)
            }
            ProviderSpec::Redis { admin_url } => {
                Provider::Redis(redis::RedisProvider::new(name, admin_url)?)
            }
            ProviderSpec::PostgresDev { dir } => {
                Provider::PostgresDev(pgdev::PostgresDevProvider::new(name, dir))
            }
        })
    }

    /// Releases what the provider runs itself (the dev PostgreSQL cluster); called on
    /// graceful shutdown.
    pub async fn stop(&self) -> Result<(), ProviderError> {
        match self {
            Provider::PostgresDev(dev) => dev.stop().await,
            _ => Ok(()),
        }
    }

    /// Removes what the provider keeps outside the state directory (the private cluster when
    /// it lives elsewhere; see [`pgdev`]); called by [`crate::purge`] once no instance is left.
    pub async fn discard(&self) -> Result<(), ProviderError> {
        match self {
            Provider::PostgresDev(dev) => dev.discard().await,
            _ => Ok(()),
        }
    }

    /// Creates the instance's resources (idempotent).
    pub async fn provision(
        &self,
        inst: &InstancePlan,
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        dispatch!(self, p => p.provision(inst, progress).await)
    }

    /// Applies new limits to the instance and its users (idempotent).
    pub async fn resize(&self, inst: &InstancePlan, users: &[String]) -> Result<(), ProviderError> {
        dispatch!(self, p => p.resize(inst, users).await)
    }

    /// Drops the instance and every user of it, ending their sessions (idempotent).
    pub async fn deprovision(
        &self,
        inst: &InstancePlan,
        users: &[String],
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        dispatch!(self, p => p.deprovision(inst, users, progress).await)
    }

    /// Creates (or re-creates) a binding's user with least privilege on the instance only.
    pub async fn bind(
        &self,
        inst: &InstancePlan,
        binding: &BindingPlan,
        progress: &Progress,
    ) -> Result<Credentials, ProviderError> {
        dispatch!(self, p => p.bind(inst, binding, progress).await)
    }

    /// Ends a binding user's sessions and drops it (idempotent).
    pub async fn unbind(&self, inst: &InstancePlan, username: &str) -> Result<(), ProviderError> {
        dispatch!(self, p => p.unbind(inst, username).await)
    }
}

/// Lowercase hex, for password hashes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // invariant: writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_render_uri_and_redact_debug() {
        let c = Credentials {
            kind: ServiceKind::Postgresql,
            provider: "pg".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            database: Some("mw_x".into()),
            key_prefix: None,
            username: "mw_u".into(),
            password: Secret::new("pw123"),
        };
        assert_eq!(
            c.uri().expose(),
            "postgresql://mw_u:pw123@127.0.0.1:5432/mw_x"
        );
        assert!(!format!("{c:?}").contains("pw123"));
        assert_eq!(c.to_osb()["database"], "mw_x");
        let spec = ProviderSpec::Postgres {
            admin_url: Secret::new("postgres://u:topsecret@h/db"),
        };
        assert!(!format!("{spec:?}").contains("topsecret"));
    }

    #[test]
    fn local_config_covers_demo_providers() {
        let config = ProviderConfig::local();
        crate::taxonomy::Taxonomy::demo()
            .check_providers(|p| config.kind_of(p))
            .unwrap();
    }
}
