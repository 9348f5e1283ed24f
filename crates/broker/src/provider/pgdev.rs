//! PostgreSQL "dev" flavour: a private cluster under the broker's state directory, created and
//! started on first use from the installed PostgreSQL server binaries, so a demo works on a
//! machine where no database server runs. Once the cluster is up, instances and bindings are
//! exactly the `postgres` provider's.
//!
//! The cluster listens on 127.0.0.1 only (a free port chosen at creation, remembered in the
//! directory), has no Unix socket, and its superuser has a generated password kept in a 0600
//! file beside the data directory. PostgreSQL refuses to run as root; when the broker runs as
//! root the binaries run as the `postgres` user via `runuser`, which then needs to be able to
//! traverse to the directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::sync::OnceCell;

use super::ProviderError;
use super::postgres::PostgresProvider;
use crate::secret::Secret;

const INSTALL_HINT: &str = "install the PostgreSQL server binaries \
    (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; \
    macOS: brew install postgresql), or set MESHWORK_PG_BIN_DIR to the directory holding \
    initdb and pg_ctl";

/// A private PostgreSQL cluster in `dir` (`data/`, `superuser.pw`, `port`).
#[derive(Debug)]
pub struct PostgresDevProvider {
    name: String,
    dir: PathBuf,
    cluster: OnceCell<PostgresProvider>,
    /// The postmaster's pid once the cluster runs, to stop it even when its data directory
    /// has been removed under it (`pg_ctl` finds the server through `postmaster.pid`).
    postmaster: std::sync::OnceLock<u32>,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The newest directory holding both `initdb` and `pg_ctl`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("MESHWORK_PG_BIN_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
    candidates.extend(versioned.into_iter().map(|(_, p)| p));
    candidates.push(PathBuf::from("/usr/local/pgsql/bin"));
    candidates.extend(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    candidates
        .iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
        .cloned()
        .ok_or_else(|| format!("initdb and pg_ctl were not found (looked in $MESHWORK_PG_BIN_DIR, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, $PATH); {INSTALL_HINT}"))
}

impl PostgresDevProvider {
    /// A provider whose cluster lives in `dir` (created on first use).
    pub fn new(name: &str, dir: &Path) -> Self {
        PostgresDevProvider {
            name: name.to_owned(),
            dir: dir.to_owned(),
            cluster: OnceCell::new(),
            postmaster: std::sync::OnceLock::new(),
        }
    }

    fn failed(&self, action: &str, message: impl Into<String>) -> ProviderError {
        ProviderError::Command {
            provider: self.name.clone(),
            action: action.to_owned(),
            message: message.into(),
        }
    }

    /// Runs a PostgreSQL binary (as `postgres` when we are root); its stderr names failures.
    async fn run(
        &self,
        action: &str,
        bin: &Path,
        args: &[&str],
    ) -> Result<std::process::Output, ProviderError> {
        let mut cmd = match is_root() {
            true => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin);
                c
            }
            false => Command::new(bin),
        };
        let out = cmd
            .args(args)
            .output()
            .await
            .map_err(|e| self.failed(action, format!("cannot run {}: {e}", bin.display())))?;
        Ok(out)
    }

    async fn check(&self, action: &str, bin: &Path, args: &[&str]) -> Result<(), ProviderError> {
        let out = self.run(action, bin, args).await?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(self.failed(
            action,
            format!(
                "{} exited with {}: {}",
                bin.display(),
                out.status,
                stderr.trim()
            ),
        ))
    }

    /// The running cluster's provider, creating and starting the cluster if needed.
    pub(crate) async fn cluster(&self) -> Result<&PostgresProvider, ProviderError> {
        self.cluster.get_or_try_init(|| self.bring_up()).await
    }

    async fn bring_up(&self) -> Result<PostgresProvider, ProviderError> {
        let bins = bin_dir().map_err(|e| self.failed("find PostgreSQL binaries", e))?;
        let data = self.dir.join("data");
        if !data.join("PG_VERSION").is_file() {
            self.init(&bins, &data).await?;
        }
        let port = std::fs::read_to_string(self.dir.join("port"))
            .map_err(|e| self.failed("read port", e.to_string()))?;
        let password = std::fs::read_to_string(self.dir.join("superuser.pw"))
            .map_err(|e| self.failed("read password", e.to_string()))?;
        let data_arg = data.to_string_lossy().into_owned();
        let status = self
            .run(
                "check cluster",
                &bins.join("pg_ctl"),
                &["status", "-D", &data_arg],
            )
            .await?;
        if !status.status.success() {
            let log = data.join("server.log").to_string_lossy().into_owned();
            let args = ["start", "-w", "-t", "60", "-D", &data_arg, "-l", &log];
            self.check("start cluster", &bins.join("pg_ctl"), &args)
                .await?;
        }
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
        if let Some(pid) = pid {
            let _ = self.postmaster.set(pid);
        }
        let url = format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            password.trim(),
            port.trim()
        );
        PostgresProvider::new(&self.name, &Secret::new(url))
    }

    fn io(&self, action: &'static str) -> impl Fn(std::io::Error) -> ProviderError + '_ {
        move |e| self.failed(action, e.to_string())
    }

    /// Writes the superuser password file and the port file, and an empty data directory;
    /// returns the port.
    fn prepare(&self, data: &Path) -> Result<u16, ProviderError> {
        std::fs::create_dir_all(&self.dir).map_err(self.io("create cluster directory"))?;
        let pwfile = self.dir.join("superuser.pw");
        std::fs::write(&pwfile, Secret::random_password().expose())
            .map_err(self.io("write password file"))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(self.io("protect password file"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(self.io("pick a port"))?
            .port();
        std::fs::write(self.dir.join("port"), port.to_string())
            .map_err(self.io("write port file"))?;
        if data.exists() {
            // A previous initdb was interrupted; it needs an empty directory.
            std::fs::remove_dir_all(data).map_err(self.io("remove incomplete data directory"))?;
        }
        std::fs::create_dir_all(data).map_err(self.io("create data directory"))?;
        Ok(port)
    }

    /// initdb with a generated superuser password and a loopback-only, socket-less config.
    async fn init(&self, bins: &Path, data: &Path) -> Result<(), ProviderError> {
        let port = self.prepare(data)?;
        if is_root() {
            let owned = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&self.dir)
                .status()
                .await;
            if !owned.is_ok_and(|s| s.success()) {
                let action = "hand the cluster directory to the postgres user";
                return Err(self.failed(action, "chown -R postgres: failed"));
            }
        }
        let data_arg = data.to_string_lossy().into_owned();
        let pw_arg = format!("--pwfile={}", self.dir.join("superuser.pw").display());
        let args = [
            "-D",
            &data_arg,
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            &pw_arg,
            "-E",
            "UTF8",
        ];
        self.check("initdb", &bins.join("initdb"), &args).await?;
        let conf = format!(
            "\n# meshwork broker (dev provider)\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
        );
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(self.io("open postgresql.conf"))?;
        file.write_all(conf.as_bytes())
            .map_err(self.io("write postgresql.conf"))
    }

    /// Stops the cluster (graceful broker shutdown); it starts again on next use.
    pub async fn stop(&self) -> Result<(), ProviderError> {
        if self.cluster.get().is_none() {
            return Ok(());
        }
        let bins = bin_dir().map_err(|e| self.failed("find PostgreSQL binaries", e))?;
        let data = self.dir.join("data").to_string_lossy().into_owned();
        let stopped = self
            .check(
                "stop cluster",
                &bins.join("pg_ctl"),
                &["stop", "-m", "fast", "-D", &data],
            )
            .await;
        if let (Err(_), Some(pid)) = (&stopped, self.postmaster.get()) {
            // The data directory is gone (a test's state directory removed while we stop):
            // SIGINT asks the postmaster for the same fast shutdown `pg_ctl stop -m fast` does.
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        stopped
    }
}
