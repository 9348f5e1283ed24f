//! `meshwork proxy`: one workload's sidecar as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::trace_flags;
use crate::{logging, parent};

/// Arguments of `meshwork proxy`.
#[derive(clap::Args)]
pub struct ProxyArgs {
    /// The workload this sidecar fronts (its `metadata.name`).
    #[arg(long)]
    pub workload: String,
    /// Which replica of the workload this sidecar fronts (`spec.replicas`), from 0; each
    /// replica registers its own endpoint.
    #[arg(long, default_value = "0", value_name = "N")]
    pub replica: u16,
    /// The control plane's unix socket; repeat it for each control replica's (tried in
    /// turn when the current one stops answering; SVIDs from the control socket use the
    /// first only).
    #[arg(long, required = true)]
    pub control_socket: Vec<PathBuf>,
    /// Get SVIDs from the SPIFFE Workload API at this socket (`unix:/path` or a path),
    /// like any workload, instead of by CSR from the control socket.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    pub workload_api: Option<String>,
    /// Inbound (mTLS) listen address; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub inbound: SocketAddr,
    /// Outbound (HTTP proxy) listen address; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub outbound: SocketAddr,
    /// Serve the admin endpoint (`/metrics`, `/snapshot`, `/ready`; plain HTTP, keep it on
    /// loopback) here; port 0 picks one. Its address goes into the ready file.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// The local application's address.
    #[arg(long)]
    pub app: SocketAddr,
    /// Speak HTTP/2 (prior knowledge) to the application instead of HTTP/1.1.
    #[arg(long)]
    pub app_http2: bool,
    /// Offer only HTTP/1.1 to peer sidecars (default: h2, multiplexed).
    #[arg(long)]
    pub peer_http1: bool,
    /// Write `{"inbound","outbound","spiffe_id"}` (and `"admin"` with --admin) here once
    /// serving.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Run the data path on one thread (as the benchmarks do).
    #[arg(long)]
    pub single_thread: bool,
    /// Resolve egress destinations with this DNS server (e.g. 127.0.0.1:5353) instead of the
    /// system resolver.
    #[arg(long, value_name = "ADDR")]
    pub dns: Option<SocketAddr>,
    /// Pod mode: the app runs in this network namespace (`/run/netns/NAME`); the inbound
    /// listener, the capture listener (instead of --outbound), the pod's DNS resolver and the
    /// connections to --app (then `127.0.0.1:PORT` inside the pod) are made there.
    #[arg(long, value_name = "PATH", requires = "pod_ip")]
    pub pod: Option<PathBuf>,
    /// Pod mode: the pod's address (the mTLS listener binds `<IP>:4143` in the pod).
    #[arg(long, value_name = "IP", requires = "pod")]
    pub pod_ip: Option<std::net::Ipv4Addr>,
    /// Pod mode: the range the pod's resolver hands out one address per name from.
    #[arg(
        long,
        value_name = "CIDR",
        default_value = "198.19.0.0/16",
        requires = "pod"
    )]
    pub pod_virtual_addresses: proxy::VirtualCidr,
    /// Pod mode: destination ports carried as opaque TCP without protocol detection
    /// (server-speaks-first protocols), comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "25,587,3306,4444,5432,6379,9300,11211",
        requires = "pod"
    )]
    pub opaque_ports: proxy::OpaquePorts,
    /// Pod mode: this workload's binding root (`<state>/bindings/<workload>`); the app's
    /// connections to a claimed service's name (`<claim>.<namespace>.claims.meshwork`) are
    /// admitted by a binding there and go to the instance it names; without one, refused.
    #[arg(long, value_name = "DIR", requires = "pod")]
    pub claim_bindings: Option<PathBuf>,
    /// Pod mode, `up --hosts`: the network namespace of the simulated host the pod is on
    /// (`/run/netns/NAME`); connections to peer sidecars are opened there, so they leave from
    /// that host (loopback peers excepted).
    #[arg(long, value_name = "PATH", requires = "pod")]
    pub pod_host_netns: Option<PathBuf>,
    // Distributed tracing: off unless asked for (up/trace_flags.rs).
    #[command(flatten)]
    pub trace: trace_flags::TraceArgs,
}

/// The pod of `--pod PATH --pod-ip IP` (clap requires both or neither).
fn pod_config(args: &mut ProxyArgs) -> Option<proxy::PodConfig> {
    let (netns, ip) = (args.pod.take()?, args.pod_ip?);
    Some(proxy::PodConfig {
        virtual_addresses: args.pod_virtual_addresses,
        opaque_ports: args.opaque_ports.clone(),
        claim_bindings: args.claim_bindings.take(),
        host_netns: args.pod_host_netns.take(),
        ..proxy::PodConfig::new(netns, ip)
    })
}

/// Runs the sidecar until SIGINT/SIGTERM.
pub fn run(mut args: ProxyArgs) -> anyhow::Result<ExitCode> {
    logging::init();
    no_huge_pages();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trace = trace_flags::config(&args.trace, &args.workload, |name| std::env::var(name).ok())?;
    let pod = pod_config(&mut args);
    tracing::info!("{}", trace_flags::describe(trace.as_ref()));
    let config = proxy::ProxyConfig {
        workload: args.workload,
        replica: args.replica,
        control: match args.workload_api {
            Some(endpoint) => proxy::ControlSource::WorkloadApi {
                control: args.control_socket,
                workload_api: PathBuf::from(endpoint.strip_prefix("unix:").unwrap_or(&endpoint)),
            },
            None => proxy::ControlSource::Socket(
                // invariant: clap requires at least one --control-socket.
                args.control_socket.into_iter().next().unwrap_or_default(),
            ),
        },
        inbound_listen: args.inbound,
        outbound_listen: args.outbound,
        admin_listen: args.admin,
        app: args.app,
        app_protocol: if args.app_http2 {
            proxy::AppProtocol::Http2
        } else {
            proxy::AppProtocol::Http1
        },
        peer_protocol: if args.peer_http1 {
            proxy::PeerProtocol::Http1
        } else {
            proxy::PeerProtocol::Http2
        },
        ready_file: args.ready_file,
        dns: args
            .dns
            .map_or(proxy::EgressDns::System, proxy::EgressDns::Server),
        tracing: trace,
        pod,
    };
    let rt = if args.single_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    }
    .context("starting the tokio runtime")?;
    rt.block_on(proxy::run(config, parent::shutdown_signal()))?;
    Ok(ExitCode::SUCCESS)
}

/// The sidecar's heap is small and short-lived: no transparent huge pages for it. mimalloc
/// (the global allocator) reserves its arenas in large aligned blocks, which a host whose THP
/// setting is `always` backs with 2 MiB pages: measured with mimalloc's own `MADV_HUGEPAGE`, a
/// pair's idle RSS grew by 8 MiB per sidecar (issue 16). Only this process: `up` and the apps
/// it starts keep the host's setting.
fn no_huge_pages() {
    if let Err(error) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(%error, "could not turn transparent huge pages off (prctl)");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn parse(extra: &[&str]) -> Result<ProxyArgs, clap::Error> {
        let base = [
            "proxy",
            "--workload",
            "store",
            "--control-socket",
            "/c",
            "--app",
            "127.0.0.1:8080",
        ];
        Command::try_parse_from(base.iter().chain(extra)).map(|c| c.args)
    }

    #[test]
    fn pod_flags_map_into_the_pod_config() {
        let mut args = parse(&[
            "--pod",
            "/run/netns/p",
            "--pod-ip",
            "198.18.0.2",
            "--opaque-ports",
            "5432",
            "--claim-bindings",
            "/s/bindings/billing",
            "--pod-host-netns",
            "/run/netns/mw0-host-b",
        ])
        .unwrap();
        let pod = pod_config(&mut args).unwrap();
        assert_eq!(pod.host_netns, Some(PathBuf::from("/run/netns/mw0-host-b")));
        assert_eq!(
            pod.claim_bindings,
            Some(PathBuf::from("/s/bindings/billing"))
        );
        assert_eq!(pod.netns, PathBuf::from("/run/netns/p"));
        assert_eq!(pod.ip, std::net::Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(pod.virtual_addresses, proxy::VirtualCidr::default());
        assert!(pod.opaque_ports.contains(5432) && !pod.opaque_ports.contains(3306));
        let mut args = parse(&[]).unwrap();
        assert!(pod_config(&mut args).is_none());
        assert!(
            parse(&["--pod-host-netns", "/run/netns/h"]).is_err(),
            "--pod-host-netns needs --pod"
        );
        assert!(
            parse(&["--pod", "/run/netns/p"]).is_err(),
            "--pod needs --pod-ip"
        );
        assert!(
            parse(&[
                "--pod-virtual-addresses",
                "fd00::/64",
                "--pod",
                "/p",
                "--pod-ip",
                "198.18.0.2"
            ])
            .is_err()
        );
    }
}
