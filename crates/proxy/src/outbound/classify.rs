//! The outermost outbound layer: classifies every request once — its target, whether it
//! is for a mesh service (and which), its normalised path when anything needs it, the
//! route-template label and the selected route rule — into one [`Classified`] request
//! extension that every layer below reads (telemetry, steer, split, balance, endpoint).
//! Nothing below parses the target or normalises the path again.
//!
//! Cheap when no route is configured: the path is normalised only for a service with
//! route templates or route rules, or for egress (whose policy decides on it).
//!
//! Requests inside a `CONNECT` tunnel to a mesh service re-enter this stack with a
//! [`TunnelTo`] connection extension: they are classified for the tunnel's service,
//! whatever their own target says.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{PathAndQuery, Uri};
use http::{Method, Request};
use policy::NormalizedPath;
use tower::{Layer, Service};

use super::target::Target;
use crate::body::ProxyBody;
use crate::label::{Label, UNMATCHED};
use crate::routes::{RouteTable, Routes};

/// Request extension: what one outbound request is (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Classified {
    /// The route table the request was classified against (one version per request).
    pub table: Arc<RouteTable>,
    /// The parsed target, or why it is unusable (a 400).
    pub target: Result<Target, String>,
    /// The mesh service the target names (its index in `table`), if any.
    pub service: Option<usize>,
    /// The normalised path, when something needed it; `Err` when the normaliser refused
    /// the path (the raw query is the target's).
    pub path: Option<Result<NormalizedPath, String>>,
    /// The route-template label.
    pub route: Label,
    /// The route rule a match selected (index into the service's rules).
    pub rule: Option<usize>,
    /// The service the request goes to: set by the split layer (a rule's backend), else
    /// the target's service.
    pub backend: Option<usize>,
}

/// Connection extension on the HTTP served inside a mesh tunnel: every request on it is
/// for `service` (as `CONNECT service:port` named it).
#[derive(Debug, Clone)]
pub struct TunnelTo(pub Arc<(String, u16)>);

impl crate::server::ConnectionExtensions for TunnelTo {
    fn insert_into(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.clone());
    }
}

/// Connection extension on HTTP captured from a pod's app ([`crate::ProxyConfig::pod`]):
/// where the app connected, decided once when the connection was captured. Every request on
/// it goes there, whatever its own target says; a `Host` naming another name is refused.
#[derive(Debug, Clone)]
pub struct CapturedTo(pub Arc<CapturedTarget>);

/// The destination of a captured connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedTarget {
    /// The name the app resolved (canonical: lower case, no trailing dot), or the IP it
    /// connected to when it resolved no name through the pod's resolver.
    pub host: String,
    /// The port it connected to.
    pub port: u16,
    /// Whether `host` is a name (else an IP literal: egress by CIDR rules only).
    pub by_name: bool,
}

impl crate::server::ConnectionExtensions for CapturedTo {
    fn insert_into(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.clone());
    }
}

impl Classified {
    /// Classifies `request` against `table`; inside a tunnel or on a captured connection,
    /// first points it at the tunnel's service or the captured destination.
    pub fn of(table: Arc<RouteTable>, request: &mut Request<ProxyBody>) -> Classified {
        let tunnel = request.extensions().get::<TunnelTo>().cloned();
        let captured = request.extensions().get::<CapturedTo>().cloned();
        let target = match (tunnel, captured) {
            (Some(tunnel), _) => pin_to_tunnel(&tunnel, request),
            (None, Some(captured)) => pin_to_capture(&captured.0, request),
            (None, None) => Target::of(request).map_err(|e| e.to_string()),
        };
        let service = target
            .as_ref()
            .ok()
            .and_then(|t| table.service_index(t.host()));
        let mut classified = Classified {
            table,
            target,
            service,
            path: None,
            route: UNMATCHED,
            rule: None,
            backend: service,
        };
        classified.match_path(request);
        classified
    }

    /// Normalises the path when templates, rules or egress policy need it, and labels and
    /// selects a rule with it.
    fn match_path(&mut self, request: &Request<ProxyBody>) {
        let Ok(Target::Http { path_and_query, .. }) = &self.target else {
            return;
        };
        let mesh = self.service.and_then(|i| {
            let labels = self.table.classifier().labels_at(i)?;
            let traffic = self.table.service_at(i)?.traffic();
            Some((labels.has_templates(), traffic.has_routes()))
        });
        if mesh == Some((false, false)) {
            return;
        }
        let parsed = NormalizedPath::parse_request_target(path_and_query.as_str())
            .map(|(path, _query)| path)
            .map_err(|e| format!("request path {:?} refused: {e}", path_and_query.as_str()));
        if let (Some(i), Ok(path)) = (self.service, &parsed) {
            if let Some(labels) = self.table.classifier().labels_at(i) {
                self.route = labels.route_of(path);
            }
            if let Some(service) = self.table.service_at(i) {
                self.rule = service
                    .traffic()
                    .select(request.method(), path, request.headers());
            }
        }
        self.path = Some(parsed);
    }

    /// The mesh service the target names.
    pub fn mesh_service(&self) -> Option<&crate::routes::MeshService> {
        self.table.service_at(self.service?)
    }

    /// The selected route rule.
    pub fn route_rule(&self) -> Option<&api::contract::traffic::RouteRule> {
        let rule = self.rule?;
        self.mesh_service()?.traffic().rule(rule)
    }
}

/// Points a request inside a tunnel at the tunnel's service, whatever its own target says.
fn pin_to_tunnel(tunnel: &TunnelTo, request: &mut Request<ProxyBody>) -> Result<Target, String> {
    let (service, port) = &*tunnel.0;
    if request.method() == Method::CONNECT {
        return Err(format!(
            "CONNECT inside the tunnel to mesh service {service:?}"
        ));
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let uri = Uri::builder()
        .scheme("http")
        .authority(format!("{service}:{port}"))
        .path_and_query(path_and_query.clone())
        .build()
        .map_err(|error| format!("request inside the tunnel to {service:?}: {error}"))?;
    *request.uri_mut() = uri;
    Ok(Target::Http {
        host: service.clone(),
        port: Some(*port),
        path_and_query,
    })
}

/// Points a captured request at where its connection went. The request's own host (its
/// `Host` header, or its `:authority`/absolute-form authority) may only repeat the name the
/// connection was made to: naming another host is refused, never followed (the app could
/// otherwise resolve an allowed name and ask for a forbidden one).
fn pin_to_capture(to: &CapturedTarget, request: &mut Request<ProxyBody>) -> Result<Target, String> {
    let CapturedTarget {
        host,
        port,
        by_name,
    } = to;
    if request.method() == Method::CONNECT {
        return Err(format!("CONNECT on a connection captured to {host}:{port}"));
    }
    let asked = request.uri().host().map(str::to_owned).or_else(|| {
        let header = request.headers().get(http::header::HOST)?.to_str().ok()?;
        let authority: http::uri::Authority = header.parse().ok()?;
        Some(authority.host().to_owned())
    });
    if let Some(asked) = asked {
        let asked = asked
            .strip_suffix('.')
            .unwrap_or(&asked)
            .to_ascii_lowercase();
        if *by_name && asked != *host {
            return Err(format!(
                "the request names host {asked:?} on a connection the app opened to {host:?} \
                 (resolved from that name): refused, never followed"
            ));
        }
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if !*by_name {
        // By IP: the request keeps its own Host (egress forwards it), the IP decides.
        return Ok(Target::Http {
            host: host.clone(),
            port: Some(*port),
            path_and_query,
        });
    }
    let authority = if *port == 80 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(path_and_query.clone())
        .build()
        .map_err(|error| format!("request captured to {host}:{port}: {error}"))?;
    *request.uri_mut() = uri;
    Ok(Target::Http {
        host: host.clone(),
        port: Some(*port),
        path_and_query,
    })
}

/// Tower layer inserting [`Classified`] into every request.
#[derive(Debug, Clone)]
pub struct ClassifyLayer {
    routes: Routes,
}

impl ClassifyLayer {
    /// Classifies against the current table of `routes`.
    pub fn new(routes: Routes) -> Self {
        ClassifyLayer { routes }
    }
}

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Classify {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// The service produced by [`ClassifyLayer`].
#[derive(Debug, Clone)]
pub struct Classify<S> {
    inner: S,
    routes: Routes,
}

impl<S> Service<Request<ProxyBody>> for Classify<S>
where
    S: Service<Request<ProxyBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let classified = Classified::of(self.routes.load(), &mut request);
        request.extensions_mut().insert(classified);
        self.inner.call(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use api::contract::traffic::{PathMatch, RouteRule, RuleMatch, ServiceTraffic};
    use api::contract::{Endpoint, ServiceRoute, Snapshot};

    use super::*;
    use crate::body::empty;

    fn table(templates: &[&str], traffic: ServiceTraffic) -> Arc<RouteTable> {
        let route = ServiceRoute {
            name: "billing".to_owned(),
            endpoints: vec![Endpoint {
                addr: ([127, 0, 0, 1], 1).into(),
                identity: "spiffe://meshwork.local/ns/default/sa/billing"
                    .parse()
                    .unwrap(),
            }],
            routes: templates.iter().map(|t| t.parse().unwrap()).collect(),
            traffic,
        };
        Arc::new(RouteTable::new(&Snapshot {
            version: 1,
            services: [("billing".to_owned(), route)].into(),
            ..Snapshot::default()
        }))
    }

    fn classify(table: &Arc<RouteTable>, method: &str, uri: &str) -> Classified {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(empty())
            .unwrap();
        Classified::of(Arc::clone(table), &mut request)
    }

    #[test]
    fn a_mesh_request_without_templates_or_routes_is_not_normalised() {
        let table = table(&[], ServiceTraffic::default());
        let classified = classify(&table, "GET", "http://billing/charges/7");
        assert_eq!(classified.service, Some(0));
        assert_eq!(classified.backend, Some(0));
        assert!(classified.path.is_none());
        assert_eq!(classified.route.as_str(), "[unmatched]");
        assert_eq!(classified.rule, None);
    }

    #[test]
    fn templates_label_and_matches_select_once() {
        let traffic = ServiceTraffic {
            rules: vec![RouteRule::default()],
            matches: vec![RuleMatch {
                rule: 0,
                path: Some(PathMatch::PathPrefix("/charges".to_owned())),
                ..RuleMatch::default()
            }],
            ..ServiceTraffic::default()
        };
        let table = table(&["/charges/{id}"], traffic);
        let classified = classify(&table, "GET", "http://billing//charges/./7?x=1");
        assert_eq!(classified.route.as_str(), "/charges/{id}");
        assert_eq!(classified.rule, Some(0));
        assert_eq!(classified.path.unwrap().unwrap().as_str(), "/charges/7");
        assert_eq!(classify(&table, "GET", "http://billing/other").rule, None);
    }

    #[test]
    fn egress_gets_its_path_and_bad_targets_their_reason() {
        let table = table(&[], ServiceTraffic::default());
        let egress = classify(&table, "GET", "http://example.com/a/../b");
        assert_eq!(egress.service, None);
        assert_eq!(egress.path.unwrap().unwrap().as_str(), "/b");
        let bad = classify(&table, "GET", "/no-host");
        assert!(bad.target.unwrap_err().contains("origin-form"));
    }

    #[test]
    fn requests_inside_a_tunnel_go_to_its_service() {
        let table = table(&[], ServiceTraffic::default());
        let mut request = Request::post("/charges")
            .header("host", "elsewhere")
            .body(empty())
            .unwrap();
        let tunnel = TunnelTo(Arc::new(("billing".to_owned(), 80)));
        request.extensions_mut().insert(tunnel.clone());
        let classified = Classified::of(Arc::clone(&table), &mut request);
        assert_eq!(classified.service, Some(0));
        assert_eq!(request.uri(), "http://billing:80/charges");
        let mut connect = Request::connect("billing:80").body(empty()).unwrap();
        connect.extensions_mut().insert(tunnel);
        assert!(Classified::of(table, &mut connect).target.is_err());
    }

    fn captured(host: &str, port: u16, by_name: bool) -> CapturedTo {
        CapturedTo(Arc::new(CapturedTarget {
            host: host.to_owned(),
            port,
            by_name,
        }))
    }

    #[test]
    fn captured_requests_go_where_the_connection_went() {
        let table = table(&[], ServiceTraffic::default());
        let mut request = Request::get("/charges")
            .header("host", "Billing.")
            .body(empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(captured("billing", 80, true));
        let classified = Classified::of(Arc::clone(&table), &mut request);
        assert_eq!(classified.service, Some(0));
        assert_eq!(request.uri(), "http://billing/charges");
        let mut other = Request::get("/")
            .header("host", "api.stripe.com")
            .body(empty())
            .unwrap();
        other.extensions_mut().insert(captured("billing", 80, true));
        let refused = Classified::of(Arc::clone(&table), &mut other)
            .target
            .unwrap_err();
        assert!(refused.contains("never followed"), "{refused}");
        let mut by_ip = Request::get("/x")
            .header("host", "anything")
            .body(empty())
            .unwrap();
        by_ip
            .extensions_mut()
            .insert(captured("10.1.2.3", 8080, false));
        let classified = Classified::of(Arc::clone(&table), &mut by_ip);
        assert_eq!(classified.target.unwrap().host(), "10.1.2.3");
        assert_eq!(by_ip.uri(), "/x", "by IP, the request keeps its Host");
    }
}
