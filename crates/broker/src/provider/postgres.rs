//! PostgreSQL: an instance is a database plus a NOLOGIN group role that holds the privileges;
//! a binding is a LOGIN role in that group whose sessions act as the group (`SET role`), so
//! every binding sees the same tables and a rotated binding inherits the data.
//!
//! Least privilege: `CONNECT, TEMPORARY` on the instance database only (revoked from PUBLIC),
//! `USAGE, CREATE` on its `public` schema. Passwords are sent as SCRAM verifiers, so the
//! plaintext never reaches the server (or its statement log).

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use super::{BindingPlan, Credentials, InstancePlan, Progress, ProviderError};
use crate::secret::Secret;
use crate::taxonomy::ServiceKind;

/// A PostgreSQL server reached through an admin URL.
#[derive(Debug)]
pub struct PostgresProvider {
    name: String,
    config: Config,
    host: String,
    port: u16,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl PostgresProvider {
    /// Parses the admin URL (URL or key=value form); TCP hosts only.
    pub fn new(name: &str, admin_url: &Secret) -> Result<Self, ProviderError> {
        let config_err = |reason: String| ProviderError::Config {
            provider: name.to_owned(),
            reason,
        };
        let mut config = Config::from_str(admin_url.expose())
            .map_err(|e| config_err(format!("not a PostgreSQL connection string: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            _ => return Err(config_err("a TCP host is required".to_owned())),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Ok(PostgresProvider {
            name: name.to_owned(),
            config,
            host,
            port,
        })
    }

    async fn connect(&self, database: Option<&str>) -> Result<Client, ProviderError> {
        let mut config = self.config.clone();
        if let Some(db) = database {
            config.dbname(db);
        }
        let (client, connection) =
            config
                .connect(NoTls)
                .await
                .map_err(|e| ProviderError::Connect {
                    provider: self.name.clone(),
                    server: format!("{}:{}", self.host, self.port),
                    message: e.to_string(),
                })?;
        // The connection future drives the socket; it ends when `client` is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn failed(&self, action: &str, e: tokio_postgres::Error) -> ProviderError {
        let message = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        ProviderError::Command {
            provider: self.name.clone(),
            action: action.to_owned(),
            message,
        }
    }

    /// One statement per call: CREATE/DROP DATABASE refuse to run inside the implicit
    /// transaction a multi-statement batch gets.
    async fn exec(&self, client: &Client, action: &str, sql: &str) -> Result<(), ProviderError> {
        client
            .batch_execute(sql)
            .await
            .map_err(|e| self.failed(action, e))
    }

    async fn role_exists(&self, client: &Client, role: &str) -> Result<bool, ProviderError> {
        let rows = client
            .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await
            .map_err(|e| self.failed("look up role", e))?;
        Ok(!rows.is_empty())
    }

    async fn database_exists(&self, client: &Client, db: &str) -> Result<bool, ProviderError> {
        let rows = client
            .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .map_err(|e| self.failed("look up database", e))?;
        Ok(!rows.is_empty())
    }

    /// Group role, database (with CONNECTION LIMIT), and grants; each step create-if-missing.
    pub async fn provision(
        &self,
        inst: &InstancePlan,
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let admin = self.connect(None).await?;
        let (db, group) = (ident(&inst.resource), ident(&inst.resource));
        if !self.role_exists(&admin, &inst.resource).await? {
            self.exec(
                &admin,
                "create group role",
                &format!("CREATE ROLE {group} NOLOGIN"),
            )
            .await?;
        }
        progress.step("group role created").await;
        let limit = inst.limits.max_connections;
        if !self.database_exists(&admin, &inst.resource).await? {
            let sql = format!("CREATE DATABASE {db} CONNECTION LIMIT {limit}");
            self.exec(&admin, "create database", &sql).await?;
        }
        progress.step(super::STEP_INSTANCE_CREATED).await;
        let sql = format!(
            "REVOKE ALL ON DATABASE {db} FROM PUBLIC; \
             GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {group}; \
             ALTER DATABASE {db} CONNECTION LIMIT {limit}"
        );
        self.exec(&admin, "grant database privileges", &sql).await?;
        let inside = self.connect(Some(&inst.resource)).await?;
        let sql = format!(
            "REVOKE ALL ON SCHEMA public FROM PUBLIC; GRANT USAGE, CREATE ON SCHEMA public TO {group}"
        );
        self.exec(&inside, "grant schema privileges", &sql).await?;
        progress.step("privileges granted").await;
        Ok(())
    }

    /// New CONNECTION LIMIT on the database and every binding role.
    pub async fn resize(&self, inst: &InstancePlan, users: &[String]) -> Result<(), ProviderError> {
        let admin = self.connect(None).await?;
        let limit = inst.limits.max_connections;
        let sql = format!(
            "ALTER DATABASE {} CONNECTION LIMIT {limit}",
            ident(&inst.resource)
        );
        self.exec(&admin, "set connection limit", &sql).await?;
        for user in users {
            if self.role_exists(&admin, user).await? {
                let sql = format!("ALTER ROLE {} CONNECTION LIMIT {limit}", ident(user));
                self.exec(&admin, "set role connection limit", &sql).await?;
            }
        }
        Ok(())
    }

    /// A LOGIN role in the instance's group, its sessions acting as the group.
    pub async fn bind(
        &self,
        inst: &InstancePlan,
        b: &BindingPlan,
        progress: &Progress,
    ) -> Result<Credentials, ProviderError> {
        let admin = self.connect(None).await?;
        let user = ident(&b.username);
        let verifier = postgres_protocol::password::scram_sha_256(b.password.expose().as_bytes());
        let until = match b.valid_until {
            Some(t) => literal(&super::rfc3339(t)),
            None => literal("infinity"),
        };
        let options = format!(
            "LOGIN PASSWORD {} CONNECTION LIMIT {} VALID UNTIL {until}",
            literal(&verifier),
            inst.limits.max_connections
        );
        let sql = match self.role_exists(&admin, &b.username).await? {
            true => format!("ALTER ROLE {user} WITH {options}"),
            false => format!("CREATE ROLE {user} WITH {options}"),
        };
        self.exec(&admin, "create binding role", &sql).await?;
        progress.step("binding role created").await;
        let group = ident(&inst.resource);
        let sql = format!(
            "GRANT {group} TO {user}; ALTER ROLE {user} SET role = {}",
            literal(&inst.resource)
        );
        self.exec(&admin, "join group role", &sql).await?;
        Ok(Credentials {
            kind: ServiceKind::Postgresql,
            provider: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            database: Some(inst.resource.clone()),
            key_prefix: None,
            username: b.username.clone(),
            password: b.password.clone(),
        })
    }

    /// NOLOGIN, end sessions, hand objects to the group, drop the role.
    pub async fn unbind(&self, inst: &InstancePlan, username: &str) -> Result<(), ProviderError> {
        let admin = self.connect(None).await?;
        if !self.role_exists(&admin, username).await? {
            return Ok(());
        }
        self.lock_out(&admin, username).await?;
        if self.database_exists(&admin, &inst.resource).await? {
            let inside = self.connect(Some(&inst.resource)).await?;
            if self.role_exists(&admin, &inst.resource).await? {
                let sql = format!(
                    "REASSIGN OWNED BY {} TO {}",
                    ident(username),
                    ident(&inst.resource)
                );
                self.exec(&inside, "reassign owned objects", &sql).await?;
            }
            let sql = format!("DROP OWNED BY {}", ident(username));
            self.exec(&inside, "drop owned privileges", &sql).await?;
        }
        let sql = format!("DROP ROLE IF EXISTS {}", ident(username));
        self.exec(&admin, "drop binding role", &sql).await
    }

    /// Stops new logins, then ends the role's sessions.
    async fn lock_out(&self, admin: &Client, username: &str) -> Result<(), ProviderError> {
        let sql = format!("ALTER ROLE {} NOLOGIN", ident(username));
        self.exec(admin, "disable login", &sql).await?;
        admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&username],
            )
            .await
            .map_err(|e| self.failed("terminate sessions", e))?;
        Ok(())
    }

    /// Drops the database (forcing sessions off), every member role, and the group.
    pub async fn deprovision(
        &self,
        inst: &InstancePlan,
        users: &[String],
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let admin = self.connect(None).await?;
        let mut all = self.members(&admin, &inst.resource).await?;
        all.extend(users.iter().cloned());
        all.sort();
        all.dedup();
        for user in &all {
            if self.role_exists(&admin, user).await? {
                self.lock_out(&admin, user).await?;
            }
        }
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(&inst.resource)
        );
        self.exec(&admin, "drop database", &sql).await?;
        progress.step("database dropped").await;
        for role in all.iter().chain(std::iter::once(&inst.resource)) {
            let sql = format!("DROP ROLE IF EXISTS {}", ident(role));
            self.exec(&admin, "drop role", &sql).await?;
        }
        Ok(())
    }

    async fn members(&self, admin: &Client, group: &str) -> Result<Vec<String>, ProviderError> {
        let rows = admin
            .query(
                "SELECT m.rolname FROM pg_auth_members a \
                 JOIN pg_roles m ON m.oid = a.member JOIN pg_roles g ON g.oid = a.roleid \
                 WHERE g.rolname = $1",
                &[&group],
            )
            .await
            .map_err(|e| self.failed("list group members", e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }
}
