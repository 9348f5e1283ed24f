//! What an app in a pod is told about its binding: the same credentials, with the
//! instance's address replaced by the claim's name (`api::taxonomy::claim_host`).
//!
//! The machine's `127.0.0.1:5432` is not reachable from a pod (its loopback is its own), and
//! the app must not get the real address anyway: it reaches the instance through its
//! sidecar, which resolves the claim's name from the binding's own `host` and `port` (the
//! files under `<state>/bindings/`, readable by root only) and admits only the bound
//! workload.

/// `uri` with its host replaced by `host` (userinfo, port, path and query kept). A URI
/// without `scheme://` authority is returned unchanged.
pub fn with_host(uri: &str, host: &str) -> String {
    let Some(scheme_end) = uri.find("://") else {
        return uri.to_owned();
    };
    let start = scheme_end + 3;
    let rest = &uri[start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    let port = match host_port.strip_prefix('[') {
        // An IPv6 literal: the port follows the closing bracket.
        Some(v6) => v6.find(']').map_or("", |end| &v6[end + 1..]),
        None => host_port.find(':').map_or("", |colon| &host_port[colon..]),
    };
    format!(
        "{}{}{host}{port}{}",
        &uri[..start],
        &authority[..host_start],
        &rest[authority_len..]
    )
}

#[cfg(test)]
mod tests {
    use super::with_host;

    #[test]
    fn only_the_host_changes() {
        let name = "charges-db.default.claims.meshwork";
        for (uri, want) in [
            (
                "postgresql://u:p%40ss@127.0.0.1:5432/db?sslmode=disable",
                "postgresql://u:p%40ss@charges-db.default.claims.meshwork:5432/db?sslmode=disable",
            ),
            (
                "redis://:pw@127.0.0.1:6379/3",
                "redis://:pw@charges-db.default.claims.meshwork:6379/3",
            ),
            (
                "mysql://u:p@[::1]:3306/d",
                "mysql://u:p@charges-db.default.claims.meshwork:3306/d",
            ),
            (
                "postgresql://localhost/db",
                "postgresql://charges-db.default.claims.meshwork/db",
            ),
            ("not a uri", "not a uri"),
        ] {
            assert_eq!(with_host(uri, name), want, "{uri}");
        }
    }
}
