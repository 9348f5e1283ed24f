//! Loopback ports `up` allocates for its children (the broker, the agent's admin listener).
//!
//! Must not import any other module of this crate.

/// Ports handed out by [`free_port`]: below Linux's default ephemeral range
/// (32768-60999), so no socket bound to port 0 (a sidecar's listener, any client)
/// can take one between its allocation and the moment its process binds it.
const ALLOCATED_PORTS: std::ops::Range<u16> = 20_000..32_768;

/// A loopback port that was free a moment ago (the app binds it right after).
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..64 {
        let port = rng.random_range(ALLOCATED_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
