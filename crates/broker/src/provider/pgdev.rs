//! PostgreSQL "dev" flavour: a private cluster under the broker's state directory, created and
//! started on first use from the installed PostgreSQL server binaries, so a demo works on a
//! machine where no database server runs. Once the cluster is up, instances and bindings are
//! exactly the `postgres` provider's.
//!
//! The cluster listens on 127.0.0.1 only (a free port chosen at creation, remembered in the
//! directory), has no Unix socket, and its superuser has a generated password kept in a 0600
//! file beside the data directory. PostgreSQL refuses to run as root; when the broker runs as
//! root the binaries run as the `postgres` user via `runuser`, which must be able to reach the
//! cluster's files.
//!
//! Where the cluster lives ([`PostgresDevProvider::locate`]): in the configured directory
//! (`<state>/postgres-private`) when the broker is not root, or when `postgres` can traverse
//! to it. A root user's state directory often sits under a 0700 directory (root's home, a
//! `mktemp -d`), which `postgres` cannot traverse, and the broker never loosens the user's
//! permissions; the cluster then lives in a postgres-owned directory outside it,
//! `/var/lib/meshwork/postgres-private/<hash of the configured directory>/` (0700), whose
//! path is recorded in `<configured dir>/location` so later runs find it, and `broker purge`
//! or deleting the last claim removes it ([`PostgresDevProvider::discard`]). When neither can work, the error names what
//! to change.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::process::Command;
use tokio::sync::OnceCell;

use sha2::Digest as _;

use super::ProviderError;
use super::postgres::PostgresProvider;
use crate::secret::Secret;

const INSTALL_HINT: &str = "install the PostgreSQL server binaries \
    (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; \
    macOS: brew install postgresql), or set MESHWORK_PG_BIN_DIR to the directory holding \
    initdb and pg_ctl";

/// Where clusters live when `postgres` cannot reach the configured directory.
const OUTSIDE_ROOT: &str = "/var/lib/meshwork/postgres-private";

/// The file in the configured directory naming a cluster kept outside it.
const LOCATION_FILE: &str = "location";

/// A private PostgreSQL cluster (`data/`, `superuser.pw`, `port`) in `home`, or in the
/// directory `home/location` names.
#[derive(Debug)]
pub struct PostgresDevProvider {
    name: String,
    home: PathBuf,
    /// The cluster directory once located.
    dir: std::sync::OnceLock<PathBuf>,
    cluster: OnceCell<PostgresProvider>,
    /// The postmaster's pid once the cluster runs, to stop it even when its data directory
    /// has been removed under it (`pg_ctl` finds the server through `postmaster.pid`).
    postmaster: std::sync::OnceLock<u32>,
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where ports for new clusters are drawn from when the kernel's ephemeral range starts at or
/// below it: then any free port.
const CLUSTER_PORTS_FROM: u16 = 20_000;

/// A port for a new cluster that is free now and stays so until the server starts (initdb
/// takes seconds): drawn below the kernel's ephemeral range, so no outgoing connection or
/// `:0` bind (every other process of a busy machine, `meshwork up`'s own allocator) can be
/// handed it meanwhile. A port from the ephemeral range was seen taken by the time
/// `pg_ctl start` ran.
fn cluster_port() -> std::io::Result<u16> {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_from > CLUSTER_PORTS_FROM {
        let span = ephemeral_from - CLUSTER_PORTS_FROM;
        for _ in 0..64 {
            let port = CLUSTER_PORTS_FROM + rand::random_range(0..span);
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
    }
    let any = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(any.local_addr()?.port())
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
        .ok_or_else(|| "initdb and pg_ctl were not found (looked in $MESHWORK_PG_BIN_DIR, /usr/lib/postgresql/*/bin, /usr/local/pgsql/bin, $PATH)".to_owned())
}

impl PostgresDevProvider {
    /// A provider whose cluster lives in `dir` (created on first use).
    pub fn new(name: &str, dir: &Path) -> Self {
        PostgresDevProvider {
            name: name.to_owned(),
            home: dir.to_owned(),
            dir: std::sync::OnceLock::new(),
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

    fn unavailable(&self, reason: impl Into<String>, remedy: impl Into<String>) -> ProviderError {
        ProviderError::Unavailable {
            provider: self.name.clone(),
            reason: reason.into(),
            remedy: remedy.into(),
        }
    }

    /// Whether the `postgres` user can traverse to `dir` (every ancestor searchable; ACLs and
    /// groups included, as the kernel decides).
    async fn postgres_reaches(&self, dir: &Path) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "test", "-x"])
            .arg(dir)
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// The cluster directory: see the module documentation.
    async fn locate(&self) -> Result<PathBuf, ProviderError> {
        let location = self.home.join(LOCATION_FILE);
        if let Ok(text) = std::fs::read_to_string(&location) {
            return Ok(PathBuf::from(text.trim()));
        }
        if !is_root() {
            return Ok(self.home.clone());
        }
        let has_user = Command::new("id").args(["-u", "postgres"]).output().await;
        if !has_user.is_ok_and(|o| o.status.success()) {
            return Err(self.unavailable(
                "PostgreSQL refuses to run as root, and there is no `postgres` user to run it as",
                "create the user (Debian/Ubuntu: installing the postgresql package does; otherwise `useradd --system --home-dir /var/lib/postgresql postgres`), or run meshwork as a user other than root",
            ));
        }
        let parent = self.home.parent().unwrap_or(Path::new("/"));
        if self.postgres_reaches(parent).await {
            return Ok(self.home.clone());
        }
        if self.home.join("data/PG_VERSION").is_file() {
            return Err(self.unavailable(
                format!("the cluster in {} was created when the postgres user could reach it, and now it cannot traverse {}", self.home.display(), parent.display()),
                format!("give the postgres user search (x) permission on {} and its parents again, or remove {} to start a new cluster (its databases are lost)", parent.display(), self.home.display()),
            ));
        }
        self.outside(&location).await
    }

    /// Creates the postgres-owned cluster directory outside the state directory and records it.
    async fn outside(&self, location: &Path) -> Result<PathBuf, ProviderError> {
        let home = std::path::absolute(&self.home).unwrap_or_else(|_| self.home.clone());
        let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
        let root = Path::new(OUTSIDE_ROOT);
        let dir = root.join(&super::hex(&digest)[..16]);
        let action = "create the cluster directory outside the state directory";
        let io = |e: std::io::Error, p: &Path| self.failed(action, format!("{}: {e}", p.display()));
        std::fs::create_dir_all(root).map_err(|e| io(e, root))?;
        if !self.postgres_reaches(root).await {
            return Err(self.unavailable(
                format!("the postgres user can reach neither the state directory's parent {} nor {}", self.home.parent().unwrap_or(Path::new("/")).display(), root.display()),
                format!("give the postgres user search (x) permission on {} (e.g. `chmod o+x` on each of its parents), or use a state directory postgres can traverse (--state-dir)", root.display()),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| io(e, &dir))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(e, &dir))?;
        let note = format!("private PostgreSQL cluster of {}\n", home.display());
        std::fs::write(dir.join("OWNER"), note).map_err(|e| io(e, &dir))?;
        std::fs::create_dir_all(&self.home).map_err(|e| io(e, &self.home))?;
        std::fs::write(location, format!("{}\n", dir.display())).map_err(|e| io(e, location))?;
        Ok(dir)
    }

    /// The located cluster directory (`home` until [`Self::locate`] ran).
    fn dir(&self) -> &Path {
        self.dir.get().map(PathBuf::as_path).unwrap_or(&self.home)
    }

    async fn bring_up(&self) -> Result<PostgresProvider, ProviderError> {
        let bins = bin_dir().map_err(|e| self.unavailable(e, INSTALL_HINT))?;
        let dir = self.locate().await?;
        let _ = self.dir.set(dir.clone());
        let data = dir.join("data");
        if !data.join("PG_VERSION").is_file() {
            self.init(&bins, &data).await?;
        }
        let port = std::fs::read_to_string(dir.join("port"))
            .map_err(|e| self.failed("read port", e.to_string()))?;
        let password = std::fs::read_to_string(dir.join("superuser.pw"))
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
        let dir = self.dir();
        std::fs::create_dir_all(dir).map_err(self.io("create cluster directory"))?;
        let pwfile = dir.join("superuser.pw");
        std::fs::write(&pwfile, Secret::random_password().expose())
            .map_err(self.io("write password file"))?;
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600))
            .map_err(self.io("protect password file"))?;
        let port = cluster_port().map_err(self.io("pick a port"))?;
        std::fs::write(dir.join("port"), port.to_string()).map_err(self.io("write port file"))?;
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
                .arg(self.dir())
                .status()
                .await;
            if !owned.is_ok_and(|s| s.success()) {
                let action = "hand the cluster directory to the postgres user";
                return Err(self.failed(action, "chown -R postgres: failed"));
            }
        }
        let data_arg = data.to_string_lossy().into_owned();
        let pw_arg = format!("--pwfile={}", self.dir().join("superuser.pw").display());
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
        let data = self.dir().join("data").to_string_lossy().into_owned();
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

    /// Stops a cluster that a broker which was killed left running (`pg_ctl start` puts the
    /// postmaster in its own session, so it outlives the broker's process group); `true` when
    /// there was one. `meshwork up` calls it on its way out, and `discard` before removing files.
    pub async fn stop_left_running(&self) -> Result<bool, ProviderError> {
        let dir = match std::fs::read_to_string(self.home.join(LOCATION_FILE)) {
            Ok(text) => PathBuf::from(text.trim()),
            Err(_) => self.home.clone(),
        };
        let data = dir.join("data");
        if !data.join("postmaster.pid").is_file() {
            return Ok(false);
        }
        let bins = bin_dir().map_err(|e| self.failed("find PostgreSQL binaries", e))?;
        let data = data.to_string_lossy().into_owned();
        let status = self
            .run(
                "check cluster",
                &bins.join("pg_ctl"),
                &["status", "-D", &data],
            )
            .await?;
        if !status.status.success() {
            return Ok(false); // a stale postmaster.pid: nothing runs
        }
        let args = ["stop", "-m", "fast", "-D", data.as_str()];
        self.check("stop cluster", &bins.join("pg_ctl"), &args)
            .await?;
        Ok(true)
    }

    /// Stops the cluster and removes it when it lives outside the state directory (nothing
    /// else would: removing the state directory leaves it). Called by `broker purge` and
    /// `claims delete` once every instance is gone; a cluster inside the state directory goes
    /// with that directory.
    pub async fn discard(&self) -> Result<(), ProviderError> {
        let location = self.home.join(LOCATION_FILE);
        let Ok(text) = std::fs::read_to_string(&location) else {
            return Ok(());
        };
        let dir = PathBuf::from(text.trim());
        if self.cluster.get().is_some() {
            self.stop().await?;
        } else {
            self.stop_left_running().await?;
        }
        let action = "remove the cluster outside the state directory";
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.failed(action, format!("{}: {e}", dir.display()))),
        }
        std::fs::remove_file(&location).map_err(|e| self.failed(action, e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ports_are_free_and_below_the_ephemeral_range() {
        let ephemeral_from: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
            .unwrap_or(32_768);
        for _ in 0..20 {
            let port = cluster_port().unwrap();
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            if ephemeral_from > CLUSTER_PORTS_FROM {
                assert!(
                    (CLUSTER_PORTS_FROM..ephemeral_from).contains(&port),
                    "{port}"
                );
            }
        }
    }
}
