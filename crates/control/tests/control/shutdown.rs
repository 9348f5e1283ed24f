//! Stopping the control plane: `serve` returns only once everything it started has ended.

use super::workload_api::{Mesh, wait_for_socket};

/// `serve` returns only once every task it started has ended, so the state file can be opened
/// at once: a restart in the same process never finds it "already open". Held open at
/// shutdown: node API peers stalled in their TLS handshake and an agent's long poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_control_plane_has_closed_its_state_file() {
    let mut mesh = Mesh::start("1h").await;
    let addr = std::fs::read_to_string(mesh.state.path().join("node-api.addr")).expect("addr");
    let addr: std::net::SocketAddr = addr.trim().parse().expect("addr");
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // The agent joins over a later connection: once it is served, the node API has accepted
    // the stalled ones (one accept loop, in order).
    let sock = mesh.state.path().join("agent.sock");
    let (stop, agent) = mesh.agent(mesh.agent_config(mesh.token(600).await, &sock));
    wait_for_socket(&sock).await;

    mesh.control.take().expect("control").shutdown().await;
    control::store::redb::RedbStore::open(mesh.state.path()).expect("closed when serve returned");
    drop(stalled);
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}
