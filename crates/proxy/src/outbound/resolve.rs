//! Name resolution for egress. The proxy resolves destination names itself and connects to
//! what *it* resolved: the application's own view of DNS never decides where bytes go, and a
//! policy written for `api.stripe.com` is checked against the name, not against an IP cache
//! that could drift (the failure mode of IP-based DNS policy).

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use policy::Host;

use crate::body::BoxError;
use crate::config::EgressDns;

/// Resolves egress destinations.
#[derive(Clone)]
pub struct HostResolver {
    server: Option<Arc<TokioResolver>>,
}

impl std::fmt::Debug for HostResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.server.is_some() {
            "HostResolver(server)"
        } else {
            "HostResolver(system)"
        })
    }
}

impl HostResolver {
    /// A resolver for `dns`.
    pub fn new(dns: EgressDns) -> Result<HostResolver, BoxError> {
        let EgressDns::Server(addr) = dns else {
            return Ok(HostResolver { server: None });
        };
        let connection = |mut c: ConnectionConfig| {
            c.port = addr.port();
            c
        };
        let server = NameServerConfig::new(
            addr.ip(),
            true,
            vec![
                connection(ConnectionConfig::udp()),
                connection(ConnectionConfig::tcp()),
            ],
        );
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            TokioRuntimeProvider::default(),
        );
        // Only the given server answers: no hosts file, no search domains.
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder.options_mut().ndots = 0;
        Ok(HostResolver {
            server: Some(Arc::new(builder.build()?)),
        })
    }

    /// The addresses to try for `host:port`; an IP literal is used as is.
    pub async fn resolve(&self, host: &Host, port: u16) -> Result<Vec<SocketAddr>, BoxError> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Dns(name) => name.as_str(),
        };
        let addrs: Vec<SocketAddr> = match &self.server {
            // Fully qualified: never subject to search domains.
            Some(resolver) => resolver
                .lookup_ip(format!("{name}."))
                .await?
                .iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect(),
            None => tokio::net::lookup_host((name, port)).await?.collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{name} has no addresses").into());
        }
        Ok(addrs)
    }
}
