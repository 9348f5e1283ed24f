//! Starting and running one sidecar: bind, get identity and routes, serve both
//! listeners, drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, AdminParts, Workload};
use crate::config::{ProxyConfig, TracingConfig};
use crate::discovery::{self, ControlLoops};
use crate::inbound::app_readiness::{self, AppConnect, AppReadiness};
use crate::inbound::{self, Inbound, app::AppService, opaque::OpaqueInbound};
use crate::metrics::ProxyMetrics;
use crate::outbound::claim_binding::ClaimBindings;
use crate::outbound::connect::{PeerConnector, PeerPool, PeerTcp};
use crate::outbound::resolve::HostResolver;
use crate::outbound::{self, Outbound, egress::Egress};
use crate::pod::{self, Capture, Dispatch, OpaqueContext, PodNetns, PodSide, PodSockets};
use crate::prometheus::PrometheusMetrics;
use crate::ready::{PodInfo, ReadyInfo};
use crate::start_error::ProxyError;
use crate::tap::TapHub;
use crate::trace::{Exporting, Tracer};

/// A started sidecar: listeners bound, SVID in hand, routes loaded; not yet serving.
pub struct Proxy {
    inbound: Inbound,
    /// The HTTP-proxy listener (not in pod mode).
    outbound: Option<Outbound>,
    /// Pod mode: the capture listener and the pod's resolver.
    pod: Option<PodSide>,
    admin: Option<Admin>,
    loops: Option<ControlLoops>,
    info: ReadyInfo,
    readiness: Arc<AppReadiness>,
    /// The OTLP export task, when tracing is on.
    exporting: Option<Exporting>,
}

impl Proxy {
    /// Binds both listeners, then obtains identity and routes from `config.control`
    /// (for a socket: generating the key, SVID by CSR, registering the inbound address
    /// and fetching the first snapshot, retrying while control is unreachable). Requests,
    /// connections and forwarding errors are recorded by [`PrometheusMetrics`] and served
    /// on the admin `/metrics`.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        Proxy::start_with_metrics(config, Arc::new(PrometheusMetrics::default())).await
    }

    /// As [`Proxy::start`], reporting connection and request events to `metrics` (which
    /// the admin `/metrics` includes through [`ProxyMetrics::encode_text`]).
    pub async fn start_with_metrics(
        config: ProxyConfig,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Result<Proxy, ProxyError> {
        let Bound {
            inbound: inbound_listener,
            outbound: outbound_listener,
            admin: admin_listener,
            inbound_addr,
            outbound_addr,
            admin_addr,
        } = Bound::listeners(&config).await?;
        let (outbound_listener, pod_sockets) = match outbound_listener {
            Outward::Proxy(listener) => (Some(listener), None),
            Outward::Pod(sockets) => (None, Some(sockets)),
        };
        let readiness = match &pod_sockets {
            Some(sockets) => AppReadiness::connecting_with(config.app, in_pod(&sockets.netns)),
            None => AppReadiness::new(config.app),
        };
        let app =
            AppService::new(Arc::clone(&readiness), config.app_protocol).map_err(|source| {
                ProxyError::App {
                    addr: config.app,
                    source,
                }
            })?;
        let (store, routes, loops) = discovery::bootstrap(
            config.control,
            &config.workload,
            config.replica,
            inbound_addr,
        )
        .await?;
        let host_netns = config.pod.as_ref().and_then(|p| p.host_netns.as_ref());
        let peer_tcp = match host_netns {
            Some(path) => Some(from_host(
                PodNetns::open(path).map_err(|e| ProxyError::Pod(e.into()))?,
            )),
            None => None,
        };
        let pool = PeerPool::new(
            PeerConnector::new(
                Arc::clone(&store),
                config.peer_protocol,
                Arc::clone(&metrics),
            )
            .with_tcp(peer_tcp),
        );
        let resolver = HostResolver::new(config.dns).map_err(ProxyError::Resolver)?;
        let info = ReadyInfo {
            inbound: inbound_addr,
            outbound: outbound_addr,
            spiffe_id: store.svid().id().clone(),
            admin: admin_addr,
            app_listening: false,
            pod: config.pod.as_ref().map(|pod| PodInfo {
                netns: pod.netns.clone(),
                ip: pod.ip,
            }),
        };
        let tap = TapHub::new(info.spiffe_id.as_str());
        let admin = admin_listener.map(|l| {
            let parts = AdminParts {
                store: Arc::clone(&store),
                routes: routes.clone(),
                requests: Arc::clone(&metrics),
                app: Arc::clone(&readiness),
                workload: Workload {
                    name: config.workload.clone(),
                    replica: config.replica,
                },
                tap: Arc::clone(&tap),
            };
            Admin::new(l, parts)
        });
        let bindings = config.pod.as_ref().and_then(|p| p.claim_bindings.clone());
        let egress = Egress::new(info.spiffe_id.clone(), resolver)
            .with_bindings(bindings.map(ClaimBindings::new));

        let traces = config.tracing.as_ref();
        let (tracer, exporting) = start_tracing(traces, &info.spiffe_id, config.replica, &metrics)?;
        tracing::info!(workload = %config.workload, id = %info.spiffe_id, inbound = %inbound_addr, outbound = %outbound_addr, admin = ?admin_addr, pod = ?config.pod, "proxy ready");
        let parts = outbound::StackParts {
            routes: routes.clone(),
            pool,
            egress,
            metrics: Arc::clone(&metrics),
            tunnels: outbound::Tunnels::default(),
            tracer: tracer.clone(),
            tap: Arc::clone(&tap),
        };
        let opaque = OpaqueContext {
            parts: parts.clone(),
        };
        let outbound = outbound_listener.map(|listener| outbound_side(listener, parts.clone()));
        let pod = match (pod_sockets, &config.pod) {
            (Some(sockets), Some(pod)) => Some(pod_side(*sockets, pod, parts, opaque)),
            _ => None,
        };
        let mut proxy = Proxy {
            inbound: Inbound {
                listener: inbound_listener,
                stack: inbound::stack(
                    app,
                    routes.clone(),
                    info.spiffe_id.clone(),
                    Arc::clone(&metrics),
                    tracer.clone(),
                    Arc::clone(&tap),
                ),
                store,
                metrics: Arc::clone(&metrics),
                peer_addr: tracer.is_some(),
                opaque: OpaqueInbound::new(
                    routes.clone(),
                    info.spiffe_id.clone(),
                    Arc::clone(&readiness),
                    Arc::clone(&metrics),
                )
                .refusing(match config.pod {
                    Some(_) => &pod::SIDECAR_PORTS,
                    None => &[],
                }),
            },
            outbound: None,
            pod: None,
            admin,
            loops,
            info,
            readiness,
            exporting,
        };
        proxy.outbound = outbound;
        proxy.pod = pod;
        Ok(proxy)
    }

    /// Where the listeners are bound and who this proxy is (the ready file's contents).
    pub fn ready_info(&self) -> &ReadyInfo {
        &self.info
    }

    /// Whether the app has opened its port yet (probed from [`Proxy::serve`] on).
    pub fn app_readiness(&self) -> Arc<AppReadiness> {
        Arc::clone(&self.readiness)
    }

    /// Serves until `shutdown` resolves, then stops accepting and drains in-flight
    /// requests (bounded by [`crate::server::DRAIN_TIMEOUT`]).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let token = CancellationToken::new();
        let inbound = tokio::spawn(self.inbound.serve(token.child_token()));
        let outbound = match (self.outbound, self.pod) {
            (Some(outbound), _) => tokio::spawn(outbound.serve(token.child_token())),
            (None, Some(pod)) => tokio::spawn(pod.serve(token.child_token())),
            // invariant: `start` sets one of the two.
            (None, None) => tokio::spawn(async {}),
        };
        let admin = self
            .admin
            .map(|admin| tokio::spawn(admin.serve(token.child_token())));
        let loops = self
            .loops
            .map(|loops| tokio::spawn(loops.run(token.child_token())));
        let probe = tokio::spawn(app_readiness::probe(self.readiness, token.child_token()));
        // Stopped after the listeners have drained, so their last spans are flushed.
        let export_stop = CancellationToken::new();
        let exporting = self
            .exporting
            .map(|exporting| tokio::spawn(exporting.run(export_stop.clone())));
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        token.cancel();
        // A panicked listener task has nothing left to drain; report and move on.
        for (name, task) in [("inbound", inbound), ("outbound", outbound)] {
            if let Err(error) = task.await {
                tracing::error!(%error, "{name} listener task failed");
            }
        }
        if let Some(admin) = admin
            && let Err(error) = admin.await
        {
            tracing::error!(%error, "admin listener task failed");
        }
        if let Some(loops) = loops {
            let _ = loops.await;
        }
        let _ = probe.await;
        export_stop.cancel();
        if let Some(exporting) = exporting {
            let _ = exporting.await;
        }
    }
}

/// The three listeners, bound first so that their addresses can be registered and written to
/// the ready file before anything is served.
struct Bound {
    inbound: TcpListener,
    outbound: Outward,
    admin: Option<TcpListener>,
    inbound_addr: SocketAddr,
    outbound_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

impl Bound {
    async fn listeners(config: &ProxyConfig) -> Result<Bound, ProxyError> {
        let (inbound, outbound) = match &config.pod {
            Some(pod) => {
                let (inbound, sockets) = PodSockets::bind(pod)
                    .await
                    .map_err(|e| ProxyError::Pod(e.into()))?;
                (inbound, Outward::Pod(Box::new(sockets)))
            }
            None => (
                bind("inbound", config.inbound_listen).await?,
                Outward::Proxy(bind("outbound", config.outbound_listen).await?),
            ),
        };
        let admin = match config.admin_listen {
            Some(addr) => Some(bind("admin", addr).await?),
            None => None,
        };
        let outbound_listener = match &outbound {
            Outward::Proxy(listener) => listener,
            Outward::Pod(sockets) => &sockets.capture,
        };
        Ok(Bound {
            inbound_addr: local_addr("inbound", &inbound)?,
            outbound_addr: local_addr("outbound", outbound_listener)?,
            admin_addr: admin.as_ref().map(|l| local_addr("admin", l)).transpose()?,
            inbound,
            outbound,
            admin,
        })
    }
}

/// What the app's outgoing connections meet: the HTTP-proxy listener, or (pod mode) the
/// pod's sockets with the capture listener.
enum Outward {
    Proxy(TcpListener),
    Pod(Box<PodSockets>),
}

/// Connections to the app from inside its pod.
fn in_pod(netns: &PodNetns) -> AppConnect {
    let netns = netns.clone();
    Arc::new(move |addr| {
        let netns = netns.clone();
        Box::pin(async move { netns.connect(addr).await.map_err(std::io::Error::other) })
    })
}

/// Connections to peer sidecars from the simulated host's namespace (`--hosts`), but for
/// loopback peers (a `hostNetwork` workload's sidecar, on this machine's loopback).
fn from_host(netns: PodNetns) -> PeerTcp {
    Arc::new(move |addr| {
        let netns = netns.clone();
        Box::pin(async move {
            if addr.ip().is_loopback() {
                return TcpStream::connect(addr).await;
            }
            netns.connect(addr).await.map_err(std::io::Error::other)
        })
    })
}

/// The capture listener and the pod's resolver, serving with the outbound stack's parts.
fn pod_side(
    sockets: PodSockets,
    pod: &crate::config::PodConfig,
    parts: outbound::StackParts,
    opaque: OpaqueContext,
) -> PodSide {
    let table = pod::VirtualAddresses::new(pod.virtual_addresses);
    let PodSockets {
        capture,
        dns_udp,
        dns_tcp,
        ..
    } = sockets;
    PodSide {
        capture: Capture {
            listener: capture,
            dispatch: Dispatch::new(parts, pod.opaque_ports.clone(), opaque),
            table,
        },
        dns: (dns_udp, dns_tcp),
    }
}

/// The outbound listener with its stack (and the tunnels it tracks for draining).
fn outbound_side(listener: TcpListener, parts: outbound::StackParts) -> Outbound {
    Outbound {
        listener,
        metrics: Arc::clone(&parts.metrics),
        tunnels: parts.tunnels.clone(),
        stack: outbound::stack(parts),
    }
}

/// The tracer both stacks share and its export task, when tracing is on.
fn start_tracing(
    tracing: Option<&TracingConfig>,
    own: &identity::SpiffeId,
    replica: u16,
    metrics: &Arc<dyn ProxyMetrics>,
) -> Result<(Option<Tracer>, Option<Exporting>), ProxyError> {
    let Some(tracing) = tracing else {
        return Ok((None, None));
    };
    let (tracer, exporting) =
        Tracer::start(tracing, own, replica, Arc::clone(metrics)).map_err(|source| {
            ProxyError::Tracing {
                endpoint: tracing.otlp.endpoint.clone(),
                protocol: tracing.otlp.protocol.as_str(),
                source,
            }
        })?;
    Ok((Some(tracer), Some(exporting)))
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(listener: &'static str, bound: &TcpListener) -> Result<SocketAddr, ProxyError> {
    bound.local_addr().map_err(|source| ProxyError::Bind {
        listener,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
