//! The route classifier: which route template of a service a request path belongs to, for
//! the `route` label of request metrics. Compiled once per snapshot (with the route table)
//! from each service's `routes` (`Service` `spec.routes`).
//!
//! The path is normalised by the one normaliser policy uses ([`NormalizedPath`]), then the
//! service's templates are tried in their declared order and the first match names the
//! route. No match — or a path the normaliser refuses — is [`UNMATCHED`]: a raw path never
//! becomes a label. A service without templates skips normalisation altogether.

use std::collections::HashMap;

use api::contract::Snapshot;
use http::uri::PathAndQuery;
use identity::SpiffeId;
use policy::{NormalizedPath, RouteTemplate};

use crate::label::{Label, UNMATCHED};
use policy::hasher::FxBuildHasher as FxBuild;

/// Every service's compiled templates, found by lower-case name (outbound) or by the
/// identity of the endpoints backing it (inbound). Fx-hashed: looked up on every request.
#[derive(Debug, Default)]
pub struct RouteClassifier {
    services: Vec<ServiceLabels>,
    by_name: HashMap<String, usize, FxBuild>,
    /// SPIFFE ID → the services whose endpoints present it, in snapshot (name) order.
    by_identity: HashMap<String, Vec<usize>, FxBuild>,
}

/// One service's labels: its name, the identity its endpoints present, its templates.
#[derive(Debug)]
pub struct ServiceLabels {
    service: Label,
    /// The identity every endpoint presents, when they agree (the common case); `None`
    /// when endpoints of several identities back the service, or there are none.
    peer: Option<Label>,
    routes: Vec<(RouteTemplate, Label)>,
}

impl RouteClassifier {
    /// Compiles the routes of every service in `snapshot`.
    pub fn compile(snapshot: &Snapshot) -> RouteClassifier {
        let mut classifier = RouteClassifier::default();
        for (name, route) in &snapshot.services {
            let name = name.to_ascii_lowercase();
            let index = classifier.services.len();
            for endpoint in &route.endpoints {
                let backed = classifier
                    .by_identity
                    .entry(endpoint.identity.as_str().to_owned())
                    .or_default();
                if !backed.contains(&index) {
                    backed.push(index);
                }
            }
            let mut identities = route.endpoints.iter().map(|e| &e.identity);
            let first = identities.next();
            let peer = first
                .filter(|first| identities.all(|other| other == *first))
                .map(|id| Label::intern(id.as_str()));
            let routes = route
                .routes
                .iter()
                .map(|template| (template.clone(), Label::intern(template.as_str())))
                .collect();
            classifier.services.push(ServiceLabels {
                service: Label::intern(&name),
                peer,
                routes,
            });
            classifier.by_name.insert(name, index);
        }
        classifier
    }

    /// The mesh service `host` names (compared case-insensitively), if it is one.
    #[cfg(test)]
    pub fn service(&self, host: &str) -> Option<&ServiceLabels> {
        self.index(host).map(|i| &self.services[i])
    }

    /// The index of the mesh service `host` names (compared case-insensitively): services
    /// are numbered in snapshot order, as the route table numbers its services.
    pub fn index(&self, host: &str) -> Option<usize> {
        let index = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            // Rare (clients send lower-case hosts): only then pay for a lower-case copy.
            self.by_name.get(&host.to_ascii_lowercase())
        } else {
            self.by_name.get(host)
        };
        index.copied()
    }

    /// The labels of the service at `index` (see [`RouteClassifier::index`]).
    pub fn labels_at(&self, index: usize) -> Option<&ServiceLabels> {
        self.services.get(index)
    }

    /// The service an inbound request to the workload `own` is for: the one `host` names
    /// among those it backs, else the first it backs (as authorization decides); `None`
    /// when it backs none. `host` is only asked for when `own` backs several services.
    pub fn inbound_service<'h>(
        &self,
        own: &SpiffeId,
        host: impl FnOnce() -> Option<&'h str>,
    ) -> Option<&ServiceLabels> {
        let backed = self.by_identity.get(own.as_str())?;
        let index = match backed.as_slice() {
            [only] => *only,
            several => {
                let named = host().and_then(|host| {
                    several
                        .iter()
                        .find(|&&i| self.services[i].service.as_str().eq_ignore_ascii_case(host))
                });
                *named.or(several.first())?
            }
        };
        Some(&self.services[index])
    }
}

impl ServiceLabels {
    /// The `service` label.
    pub fn service(&self) -> Label {
        self.service
    }

    /// The identity all of the service's endpoints present, if they agree.
    pub fn peer(&self) -> Option<Label> {
        self.peer
    }

    /// Whether the service has route templates (else every route is [`UNMATCHED`] and
    /// the path need not be normalised for labels).
    pub fn has_templates(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The `route` label of an already normalised path.
    pub fn route_of(&self, path: &NormalizedPath) -> Label {
        self.routes
            .iter()
            .find(|(template, _)| template.matches(path))
            .map_or(UNMATCHED, |&(_, label)| label)
    }

    /// The `route` label of a request target (origin-form path and query, as in
    /// [`http::Uri::path_and_query`]; `None` for authority-form, e.g. `CONNECT`).
    pub fn route(&self, target: Option<&PathAndQuery>) -> Label {
        if self.routes.is_empty() {
            return UNMATCHED;
        }
        let Some(target) = target else {
            return UNMATCHED;
        };
        let Ok((path, _query)) = NormalizedPath::parse_request_target(target.as_str()) else {
            return UNMATCHED;
        };
        self.route_of(&path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use api::contract::{Endpoint, ServiceRoute};

    use super::*;

    fn endpoint(port: u16, sa: &str) -> Endpoint {
        Endpoint {
            addr: ([127, 0, 0, 1], port).into(),
            identity: format!("spiffe://meshwork.local/ns/default/sa/{sa}")
                .parse()
                .unwrap(),
        }
    }

    fn classifier(routes: &[&str], endpoints: Vec<Endpoint>) -> RouteClassifier {
        let route = ServiceRoute {
            name: "Billing".to_owned(),
            endpoints,
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            traffic: Default::default(),
        };
        RouteClassifier::compile(&Snapshot {
            services: [("Billing".to_owned(), route)].into(),
            ..Snapshot::default()
        })
    }

    fn route_of(labels: &ServiceLabels, target: &str) -> &'static str {
        let target = PathAndQuery::try_from(target).unwrap();
        labels.route(Some(&target)).as_str()
    }

    #[test]
    fn the_first_matching_template_names_the_route_whatever_the_spelling() {
        let compiled = classifier(
            &[
                "/charges",
                "/charges/export",
                "/charges/{id}",
                "/files/{rest...}",
            ],
            vec![endpoint(1, "billing")],
        );
        let billing = compiled.service("BILLING").expect("case-insensitive");
        assert_eq!(route_of(billing, "/charges/7"), "/charges/{id}");
        assert_eq!(route_of(billing, "/charges/8?x=1"), "/charges/{id}");
        assert_eq!(route_of(billing, "//charges/./9/"), "/charges/{id}");
        assert_eq!(route_of(billing, "/%63harges"), "/charges");
        assert_eq!(route_of(billing, "/x/../charges?all"), "/charges");
        // Declared order wins: `/charges/export` is listed before `/charges/{id}`.
        assert_eq!(route_of(billing, "/charges/export"), "/charges/export");
        assert_eq!(route_of(billing, "/files/a/b/c"), "/files/{rest...}");
        assert_eq!(billing.service().as_str(), "billing");
        assert_eq!(
            billing.peer().map(Label::as_str),
            Some("spiffe://meshwork.local/ns/default/sa/billing")
        );
    }

    #[test]
    fn anything_else_is_unmatched_never_the_raw_path() {
        let compiled = classifier(&["/charges/{id}"], vec![]);
        let billing = compiled.service("billing").unwrap();
        for raw in ["/nope/1", "/charges", "/charges/7/refunds", "/a%2Fb", "/"] {
            assert_eq!(route_of(billing, raw), "[unmatched]", "{raw}");
        }
        assert_eq!(billing.route(None), UNMATCHED, "CONNECT has no path");
        assert_eq!(billing.peer(), None, "no endpoints: no peer");
        assert!(compiled.service("ghost").is_none());

        let untemplated = classifier(&[], vec![endpoint(1, "billing")]);
        let billing = untemplated.service("billing").unwrap();
        assert_eq!(route_of(billing, "/charges/7"), "[unmatched]");
    }

    #[test]
    fn inbound_requests_are_for_the_backed_service_the_host_names_else_the_first() {
        let service = |name: &str| {
            let route = ServiceRoute {
                name: name.to_owned(),
                endpoints: vec![endpoint(1, "billing")],
                routes: Vec::new(),
                traffic: Default::default(),
            };
            (name.to_owned(), route)
        };
        let compiled = RouteClassifier::compile(&Snapshot {
            services: [service("billing"), service("payments")].into(),
            ..Snapshot::default()
        });
        let billing = endpoint(1, "billing").identity;
        let name = |host: Option<&'static str>| {
            let found = compiled.inbound_service(&billing, || host);
            found.map(|s| s.service().as_str())
        };
        assert_eq!(name(Some("PAYMENTS")), Some("payments"));
        assert_eq!(name(Some("elsewhere")), Some("billing"));
        assert_eq!(name(None), Some("billing"));
        let store = endpoint(2, "store").identity;
        assert!(compiled.inbound_service(&store, || None).is_none());

        let single = classifier(&[], vec![endpoint(1, "billing")]);
        let found = single.inbound_service(&billing, || unreachable!("one service: no host"));
        assert_eq!(found.map(|s| s.service().as_str()), Some("billing"));
    }

    #[test]
    fn endpoints_of_several_identities_have_no_single_peer() {
        let compiled = classifier(&[], vec![endpoint(1, "billing"), endpoint(2, "billing-v2")]);
        assert_eq!(compiled.service("billing").unwrap().peer(), None);
    }
}
