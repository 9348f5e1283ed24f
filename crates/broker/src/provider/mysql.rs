//! MySQL/MariaDB: an instance is a database; a binding is a user (`'u'@'%'` and
//! `'u'@'localhost'`, so an anonymous localhost account can never shadow it) with
//! `MAX_USER_CONNECTIONS` from the size and data privileges on `db.*` only.
//! Passwords are sent as `mysql_native_password` hashes, never in plaintext.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use sha1::{Digest, Sha1};

use super::{BindingPlan, Credentials, InstancePlan, Progress, ProviderError};
use crate::secret::Secret;
use crate::taxonomy::ServiceKind;

/// Data privileges for a binding: everything an application needs on its own schema, none
/// of the administrative ones (GRANT OPTION, EVENT, global privileges).
const PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, \
    CREATE TEMPORARY TABLES, LOCK TABLES, CREATE VIEW, SHOW VIEW, EXECUTE, CREATE ROUTINE, \
    ALTER ROUTINE, TRIGGER";

/// MySQL error 1094: unknown thread id (the session ended before KILL arrived).
const ER_NO_SUCH_THREAD: u16 = 1094;

/// A MySQL/MariaDB server reached through an admin URL.
pub struct MysqlProvider {
    name: String,
    opts: Opts,
}

/// By hand: `Opts`'s own `Debug` prints the admin password.
impl std::fmt::Debug for MysqlProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlProvider")
            .field("name", &self.name)
            .field("host", &self.opts.ip_or_hostname())
            .field("port", &self.opts.tcp_port())
            .finish_non_exhaustive()
    }
}

fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// In GRANT, `_` and `%` in a database name are wildcards; escape them so `mw_a` cannot
/// match `mwxa`.
fn grant_db(name: &str) -> String {
    ident(&name.replace('_', "\\_").replace('%', "\\%"))
}

fn accounts(user: &str) -> String {
    format!("'{user}'@'%', '{user}'@'localhost'")
}

/// `mysql_native_password` hash: `*` + HEX(SHA1(SHA1(password))).
fn native_hash(password: &Secret) -> String {
    let stage2 = Sha1::digest(Sha1::digest(password.expose().as_bytes()));
    format!("*{}", super::hex(&stage2).to_uppercase())
}

impl MysqlProvider {
    /// Parses the admin URL (`mysql://user:pass@host:port`).
    pub fn new(name: &str, admin_url: &Secret) -> Result<Self, ProviderError> {
        let opts = Opts::from_url(admin_url.expose()).map_err(|e| ProviderError::Config {
            provider: name.to_owned(),
            reason: format!("not a MySQL URL: {e}"),
        })?;
        Ok(MysqlProvider {
            name: name.to_owned(),
            opts,
        })
    }

    async fn connect(&self) -> Result<Conn, ProviderError> {
        Conn::new(self.opts.clone())
            .await
            .map_err(|e| ProviderError::Connect {
                provider: self.name.clone(),
                server: format!("{}:{}", self.opts.ip_or_hostname(), self.opts.tcp_port()),
                message: e.to_string(),
            })
    }

    fn failed(&self, action: &str, e: mysql_async::Error) -> ProviderError {
        ProviderError::Command {
            provider: self.name.clone(),
            action: action.to_owned(),
            message: e.to_string(),
        }
    }

    async fn exec(&self, conn: &mut Conn, action: &str, sql: &str) -> Result<(), ProviderError> {
        conn.query_drop(sql)
            .await
            .map_err(|e| self.failed(action, e))
    }

    /// `CREATE DATABASE IF NOT EXISTS`.
    pub async fn provision(
        &self,
        inst: &InstancePlan,
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        let sql = format!("CREATE DATABASE IF NOT EXISTS {}", ident(&inst.resource));
        self.exec(&mut conn, "create database", &sql).await?;
        progress.step(super::STEP_INSTANCE_CREATED).await;
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// New `MAX_USER_CONNECTIONS` for every binding user.
    pub async fn resize(&self, inst: &InstancePlan, users: &[String]) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        for user in users {
            let sql = format!(
                "ALTER USER IF EXISTS {} WITH MAX_USER_CONNECTIONS {}",
                accounts(user),
                inst.limits.max_connections
            );
            self.exec(&mut conn, "set connection limit", &sql).await?;
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// (Re-)creates the user and grants data privileges on the instance database only.
    pub async fn bind(
        &self,
        inst: &InstancePlan,
        b: &BindingPlan,
        progress: &Progress,
    ) -> Result<Credentials, ProviderError> {
        let mut conn = self.connect().await?;
        let who = accounts(&b.username);
        self.exec(
            &mut conn,
            "drop stale user",
            &format!("DROP USER IF EXISTS {who}"),
        )
        .await?;
        let hash = native_hash(&b.password);
        let sql = format!(
            "CREATE USER '{u}'@'%' IDENTIFIED BY PASSWORD '{hash}', '{u}'@'localhost' IDENTIFIED BY PASSWORD '{hash}' \
             WITH MAX_USER_CONNECTIONS {}",
            inst.limits.max_connections,
            u = b.username
        );
        self.exec(&mut conn, "create binding user", &sql).await?;
        progress.step("binding user created").await;
        let sql = format!(
            "GRANT {PRIVILEGES} ON {}.* TO {who}",
            grant_db(&inst.resource)
        );
        self.exec(&mut conn, "grant privileges", &sql).await?;
        let _ = conn.disconnect().await;
        Ok(Credentials {
            kind: ServiceKind::Mysql,
            provider: self.name.clone(),
            host: self.opts.ip_or_hostname().to_owned(),
            port: self.opts.tcp_port(),
            database: Some(inst.resource.clone()),
            key_prefix: None,
            username: b.username.clone(),
            password: b.password.clone(),
        })
    }

    /// Locks the account, kills its sessions, drops it.
    pub async fn unbind(&self, _inst: &InstancePlan, username: &str) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        self.drop_user(&mut conn, username).await?;
        let _ = conn.disconnect().await;
        Ok(())
    }

    async fn drop_user(&self, conn: &mut Conn, username: &str) -> Result<(), ProviderError> {
        let who = accounts(username);
        self.exec(
            conn,
            "lock account",
            &format!("ALTER USER IF EXISTS {who} ACCOUNT LOCK"),
        )
        .await?;
        let ids: Vec<u64> = conn
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ?",
                (username,),
            )
            .await
            .map_err(|e| self.failed("list sessions", e))?;
        self.kill(conn, &ids).await?;
        self.exec(conn, "drop user", &format!("DROP USER IF EXISTS {who}"))
            .await
    }

    async fn kill(&self, conn: &mut Conn, ids: &[u64]) -> Result<(), ProviderError> {
        for id in ids {
            match conn.query_drop(format!("KILL CONNECTION {id}")).await {
                Err(mysql_async::Error::Server(e)) if e.code == ER_NO_SUCH_THREAD => {}
                other => other.map_err(|e| self.failed("kill session", e))?,
            }
        }
        Ok(())
    }

    /// Drops every user with privileges on the database, then the database.
    pub async fn deprovision(
        &self,
        inst: &InstancePlan,
        users: &[String],
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        let escaped = inst.resource.replace('_', "\\_");
        let mut all: Vec<String> = conn
            .exec(
                "SELECT DISTINCT User FROM mysql.db WHERE Db IN (?, ?)",
                (&inst.resource, &escaped),
            )
            .await
            .map_err(|e| self.failed("list database users", e))?;
        all.extend(users.iter().cloned());
        all.sort();
        all.dedup();
        for user in &all {
            self.drop_user(&mut conn, user).await?;
        }
        let ids: Vec<u64> = conn
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ?",
                (&inst.resource,),
            )
            .await
            .map_err(|e| self.failed("list sessions", e))?;
        self.kill(&mut conn, &ids).await?;
        let sql = format!("DROP DATABASE IF EXISTS {}", ident(&inst.resource));
        self.exec(&mut conn, "drop database", &sql).await?;
        progress.step("database dropped").await;
        let _ = conn.disconnect().await;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn native_password_hash_matches_mysql() {
        // SELECT PASSWORD('secret') on MariaDB.
        assert_eq!(
            native_hash(&Secret::new("secret")),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
    }

    #[test]
    fn grant_names_escape_wildcards() {
        assert_eq!(grant_db("mw_a_1"), "`mw\\_a\\_1`");
    }
}
