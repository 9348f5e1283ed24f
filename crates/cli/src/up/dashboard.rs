//! `up`'s dashboard: `meshwork dashboard` as a child on a loopback port `up` picks, so that a
//! restarted dashboard (it is restarted when it dies: the mesh does not need it) is where
//! the table said. It reads the state directory and the sidecars' admin listeners only.

use std::net::SocketAddr;

use anyhow::Context;

use super::Launch;
use super::supervisor::{Child, Supervisor};

/// `<state>/dashboard.addr`: where the dashboard of the `up` using this directory serves.
pub const ADDR_FILE: &str = "dashboard.addr";

/// Starts the dashboard and waits until it listens; returns its address.
pub async fn start(sup: &mut Supervisor, l: &Launch<'_>) -> anyhow::Result<SocketAddr> {
    let port = super::ports::free_port().context("allocating the dashboard's port")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready = l.state.path().join(ADDR_FILE);
    let _ = std::fs::remove_file(&ready);
    let child = Child::meshwork(&l.exe, "dashboard")
        .args(["--state-dir".as_ref(), l.state.path().as_os_str()])
        .args(["--listen", &addr.to_string()])
        .args(["--ready-file".as_ref(), ready.as_os_str()]);
    sup.spawn_restartable("dashboard", child)?;
    sup.wait_for_port("dashboard", port, l.timeout).await?;
    Ok(addr)
}
