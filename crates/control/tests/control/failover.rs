//! An agent given several control-plane replicas: one that is down does not stop it.

use std::time::Duration;

use super::workload_api::{Mesh, wait_for_socket};

/// A loopback address nobody listens on (bound, then released).
fn dead_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_joins_and_syncs_through_whichever_replica_answers() {
    let mesh = Mesh::start("1h").await;
    let sock = mesh.state.path().join("agent.sock");
    let admin = dead_addr();
    let mut config = mesh.agent_config(mesh.token(600).await, &sock);
    let live = config.control[0];
    // Around the live replica: one whose host refuses connections, and one that accepts
    // TCP (the kernel's backlog) but never answers the TLS handshake, as a hung process or
    // a host that drops packets does. Wherever the agent starts in the list, it must get
    // past both within the per-replica connect bound, without waiting out a call timeout.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    config.control = vec![dead_addr(), live, hung.local_addr().expect("addr")];
    config.admin = Some(admin);
    let started = std::time::Instant::now();
    let (stop, agent) = mesh.agent(config);
    tokio::time::timeout(Duration::from_secs(10), wait_for_socket(&sock))
        .await
        .expect("the agent never served its Workload API");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "joining took {:?}",
        started.elapsed()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(s) = control::agent::fetch_status(admin).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no status");
    assert!(status.control_connected);
    assert_eq!(status.control_replica, Some(live.to_string()));
    let _ = stop.send(());
    agent.await.expect("join").expect("agent");
}
