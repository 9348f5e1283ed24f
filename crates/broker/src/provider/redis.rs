//! Redis: an instance is a key prefix `<resource>:` (recorded as a disabled ACL user of the
//! same name that owns the pattern); a binding is an ACL user restricted to keys and channels
//! under that prefix, with `+@all -@admin -@dangerous` minus the global script/function
//! caches. Passwords are sent as SHA-256 hashes (`#<hex>`), never in plaintext.
//!
//! Size limits are advisory here: Redis has no per-user memory or connection limits.

use redis::aio::MultiplexedConnection;
use std::time::Duration;

use redis::{AsyncConnectionConfig, Client, ConnectionAddr};
use sha2::{Digest, Sha256};

use super::{BindingPlan, Credentials, InstancePlan, Progress, ProviderError};
use crate::secret::Secret;
use crate::taxonomy::ServiceKind;

/// What a binding user may run: everything but administration, dangerous commands
/// (FLUSHALL, KEYS, CONFIG, ...) and the server-global script and function caches.
const COMMANDS: [&str; 5] = ["+@all", "-@admin", "-@dangerous", "-script", "-function"];

/// A Redis server reached through an admin URL.
#[derive(Debug)]
pub struct RedisProvider {
    name: String,
    client: Client,
    host: String,
    port: u16,
}

fn key_prefix(resource: &str) -> String {
    format!("{resource}:")
}

impl RedisProvider {
    /// Parses the admin URL (`redis://[user:pass@]host:port`); TCP only.
    pub fn new(name: &str, admin_url: &Secret) -> Result<Self, ProviderError> {
        let config_err = |reason: String| ProviderError::Config {
            provider: name.to_owned(),
            reason,
        };
        let client = Client::open(admin_url.expose())
            .map_err(|e| config_err(format!("not a Redis URL: {e}")))?;
        let (host, port) = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            _ => return Err(config_err("a plain TCP address is required".to_owned())),
        };
        Ok(RedisProvider {
            name: name.to_owned(),
            client,
            host,
            port,
        })
    }

    async fn connect(&self) -> Result<MultiplexedConnection, ProviderError> {
        // The client's default 500 ms response timeout is for caches; ACL changes over
        // thousands of users and SCAN/UNLINK of a large key space take longer.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(60)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| ProviderError::Connect {
                provider: self.name.clone(),
                server: format!("{}:{}", self.host, self.port),
                message: e.to_string(),
            })
    }

    fn failed(&self, action: &str, e: redis::RedisError) -> ProviderError {
        ProviderError::Command {
            provider: self.name.clone(),
            action: action.to_owned(),
            message: e.to_string(),
        }
    }

    async fn acl(
        &self,
        conn: &mut MultiplexedConnection,
        action: &str,
        args: &[String],
    ) -> Result<(), ProviderError> {
        redis::cmd("ACL")
            .arg(args)
            .exec_async(conn)
            .await
            .map_err(|e| self.failed(action, e))
    }

    /// Persists ACL changes when the server has an ACL file; without one they live in memory
    /// (and the server's own persistence story applies).
    async fn save(&self, conn: &mut MultiplexedConnection) -> Result<(), ProviderError> {
        match redis::cmd("ACL").arg("SAVE").exec_async(conn).await {
            Err(e) if e.to_string().contains("ACL file") => Ok(()),
            other => other.map_err(|e| self.failed("save ACLs", e)),
        }
    }

    /// The disabled owner user that records the instance's key pattern.
    pub async fn provision(
        &self,
        inst: &InstancePlan,
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        let prefix = key_prefix(&inst.resource);
        let args = [
            "SETUSER",
            &inst.resource,
            "reset",
            "off",
            "resetkeys",
            &format!("~{prefix}*"),
            "resetchannels",
            &format!("&{prefix}*"),
            "-@all",
        ]
        .map(str::to_owned);
        self.acl(&mut conn, "create owner user", &args).await?;
        progress.step(super::STEP_INSTANCE_CREATED).await;
        self.save(&mut conn).await
    }

    /// Nothing to apply: Redis cannot limit memory or connections per user.
    pub async fn resize(
        &self,
        _inst: &InstancePlan,
        _users: &[String],
    ) -> Result<(), ProviderError> {
        Ok(())
    }

    /// (Re-)creates the binding's ACL user.
    pub async fn bind(
        &self,
        inst: &InstancePlan,
        b: &BindingPlan,
        progress: &Progress,
    ) -> Result<Credentials, ProviderError> {
        let mut conn = self.connect().await?;
        let prefix = key_prefix(&inst.resource);
        let hash = super::hex(&Sha256::digest(b.password.expose().as_bytes()));
        let mut args: Vec<String> = [
            "SETUSER",
            &b.username,
            "reset",
            "on",
            &format!("#{hash}"),
            &format!("~{prefix}*"),
            &format!("&{prefix}*"),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(COMMANDS.map(str::to_owned));
        self.acl(&mut conn, "create binding user", &args).await?;
        progress.step("binding user created").await;
        self.save(&mut conn).await?;
        Ok(Credentials {
            kind: ServiceKind::Redis,
            provider: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            database: None,
            key_prefix: Some(prefix),
            username: b.username.clone(),
            password: b.password.clone(),
        })
    }

    /// `ACL DELUSER` (which also disconnects the user's clients).
    pub async fn unbind(&self, _inst: &InstancePlan, username: &str) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        self.acl(
            &mut conn,
            "delete binding user",
            &["DELUSER".to_owned(), username.to_owned()],
        )
        .await?;
        self.save(&mut conn).await
    }

    /// Deletes every user owning the instance's pattern, then every key under the prefix.
    pub async fn deprovision(
        &self,
        inst: &InstancePlan,
        users: &[String],
        progress: &Progress,
    ) -> Result<(), ProviderError> {
        let mut conn = self.connect().await?;
        let mut all = self.pattern_owners(&mut conn, &inst.resource).await?;
        all.extend(users.iter().cloned());
        all.push(inst.resource.clone());
        all.sort();
        all.dedup();
        let mut args = vec!["DELUSER".to_owned()];
        args.extend(all);
        self.acl(&mut conn, "delete users", &args).await?;
        self.save(&mut conn).await?;
        progress.step("users deleted").await;
        self.delete_keys(&mut conn, &key_prefix(&inst.resource))
            .await
    }

    async fn pattern_owners(
        &self,
        conn: &mut MultiplexedConnection,
        resource: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let lines: Vec<String> = redis::cmd("ACL")
            .arg("LIST")
            .query_async(conn)
            .await
            .map_err(|e| self.failed("list users", e))?;
        let pattern = format!("~{}*", key_prefix(resource));
        Ok(lines
            .iter()
            .filter(|l| l.split_whitespace().any(|t| t == pattern))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .collect())
    }

    async fn delete_keys(
        &self,
        conn: &mut MultiplexedConnection,
        prefix: &str,
    ) -> Result<(), ProviderError> {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| self.failed("scan keys", e))?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(keys)
                    .exec_async(conn)
                    .await
                    .map_err(|e| self.failed("delete keys", e))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
