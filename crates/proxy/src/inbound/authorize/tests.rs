use api::contract::{Endpoint, ServiceRoute, Snapshot};
use http_body_util::BodyExt;

use super::*;

const TD: &str = "spiffe://meshwork.local/ns/default/sa";

fn id(name: &str) -> SpiffeId {
    format!("{TD}/{name}").parse().unwrap()
}

/// billing (served by the billing identity) with the example's ALLOW policy.
fn table() -> RouteTable {
    let policies: policy::PolicySet = serde_json::from_value(json!({
        "authorization": {
            "default/billing-charges": {
                "targetService": "billing", "action": "ALLOW",
                "rules": [{"from": [{"spiffeId": format!("{TD}/store")}],
                           "to": [{"methods": ["POST"], "paths": [{"exact": "/charges"}]}]}]},
            "default/store-audit": {
                "targetService": "store", "action": "DENY", "mode": "audit",
                "rules": [{"from": [{"spiffeId": format!("{TD}/reporting")}]}]}
        }
    }))
    .unwrap();
    let route = |name: &str| ServiceRoute {
        name: name.to_owned(),
        endpoints: vec![Endpoint {
            addr: ([127, 0, 0, 1], 1).into(),
            identity: id(name),
        }],
        routes: Vec::new(),
        traffic: Default::default(),
    };
    RouteTable::new(&Snapshot {
        version: 1,
        services: [
            ("billing".to_owned(), route("billing")),
            ("store".to_owned(), route("store")),
        ]
        .into(),
        policy_hash: policies.hash().to_string(),
        policies,
    })
}

fn request(caller: &str, method: &str, target: &str) -> Request<()> {
    let mut request = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "billing")
        .body(())
        .unwrap();
    request.extensions_mut().insert(PeerIdentity(id(caller)));
    request
}

async fn json_of(response: Box<Response<ProxyBody>>) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn store_may_charge_in_every_spelling_and_the_app_sees_the_normalised_path() {
    let table = table();
    for target in [
        "/charges",
        "/charges/",
        "//charges",
        "/%63harges",
        "/x/../charges?amount=5",
    ] {
        let mut req = request("store", "POST", target);
        assert!(
            authorize(&table, &id("billing"), &mut req).is_ok(),
            "{target}"
        );
        assert_eq!(req.uri().path(), "/charges", "{target}");
    }
    let mut req = request("store", "POST", "/x/../charges?amount=5");
    authorize(&table, &id("billing"), &mut req).unwrap();
    assert_eq!(req.uri().query(), Some("amount=5"));
}

#[tokio::test]
async fn reporting_gets_403_naming_the_decision() {
    let table = table();
    for target in ["/charges", "/%63harges", "/x/../charges"] {
        let mut req = request("reporting", "POST", target);
        let refusal = authorize(&table, &id("billing"), &mut req).unwrap_err();
        let (status, body) = json_of(refusal).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["kind"], "default_deny");
        assert_eq!(body["service"], "billing");
        assert_eq!(body["caller"], id("reporting").as_str());
        assert_eq!(body["decision_id"].as_str().unwrap().len(), 16);
        assert!(body["policy"].is_null() && body["rule"].is_null(), "{body}");
    }
}

#[tokio::test]
async fn the_host_cannot_pick_a_more_lenient_service() {
    // billing's workload backs only billing: claiming `Host: store` changes nothing.
    let table = table();
    let mut req = request("reporting", "POST", "/charges");
    req.headers_mut().insert("host", "store".parse().unwrap());
    let refusal = authorize(&table, &id("billing"), &mut req).unwrap_err();
    assert_eq!(json_of(refusal).await.1["service"], "billing");
}

#[tokio::test]
async fn refused_paths_get_400_and_unserved_workloads_have_no_policy() {
    let table = table();
    let mut req = request("store", "POST", "/a%2Fcharges");
    let (status, body) = json_of(authorize(&table, &id("billing"), &mut req).unwrap_err()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "bad_path");
    // audit-only policies on store never deny.
    let mut req = request("reporting", "POST", "/checkout");
    assert!(authorize(&table, &id("store"), &mut req).is_ok());
    let mut req = request("reporting", "GET", "/anything");
    assert!(authorize(&table, &id("reporting"), &mut req).is_ok());
}

#[test]
fn the_host_picks_a_backed_service_in_any_case_and_with_a_port() {
    let backed = ["billing".to_owned(), "payments".to_owned()];
    let services = |uri: &str, host: Option<&str>| {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        target_services(&backed, &builder.body(()).unwrap()).to_vec()
    };
    assert_eq!(services("http://Billing:8080/x", None), ["billing"]);
    assert_eq!(services("/x", Some("PAYMENTS:80")), ["payments"]);
    // An absolute target's host wins over `Host`, as `:authority` does.
    assert_eq!(services("http://billing/x", Some("payments")), ["billing"]);
    for host in [Some("other"), Some("bad host"), Some("billing.evil"), None] {
        assert_eq!(services("/x", host), ["billing", "payments"], "{host:?}");
    }
}

/// One recorded event: its message and `decision_id`.
type Logged = (String, Option<String>);

/// Records every event (all levels on).
#[derive(Clone, Default)]
struct Events(Arc<std::sync::Mutex<Vec<Logged>>>);

impl Events {
    fn id_of(&self, message: &str) -> Option<String> {
        let events = self.0.lock().unwrap();
        let event = events.iter().find(|(m, _)| m == message);
        event
            .unwrap_or_else(|| panic!("no {message:?} in {events:?}"))
            .1
            .clone()
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        #[derive(Default)]
        struct Fields(String, Option<String>);
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "decision_id" {
                    self.1 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push((fields.0, fields.1));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn the_403_and_its_log_line_carry_the_same_decision_id() {
    let (table, events) = (table(), Events::default());
    let mut req = request("reporting", "POST", "/charges");
    let refusal = tracing::subscriber::with_default(events.clone(), || {
        authorize(&table, &id("billing"), &mut req).unwrap_err()
    });
    let logged = events.id_of("inbound request denied by policy").unwrap();
    assert_eq!(
        refusal.headers()[crate::denial::DECISION_ID_HEADER],
        &logged[..]
    );
    let (_, body) = json_of(refusal).await;
    assert_eq!(body["decision_id"], logged);
    assert_eq!(logged.len(), 16);
}

#[test]
fn a_decision_id_is_made_only_for_lines_that_are_written() {
    let (table, path) = (table(), NormalizedPath::parse("/charges").unwrap());
    let caller = id("reporting");
    let described = || Described {
        id: OnceCell::new(),
        caller: Some(&caller),
        service: "store",
        method: "POST",
        path: &path,
        policy_hash: &table.policies().hash,
        trace_id: crate::trace_context::TraceIdField::NONE,
    };
    // Allowed, nothing listening: no id.
    let quiet = described();
    quiet.log(&unserved());
    assert!(quiet.id.get().is_none());

    // Allowed with an audit finding, everything written: one id on both lines.
    let req = request("reporting", "POST", "/checkout");
    let engine = table.policies().engine.as_ref().unwrap();
    let store = ["store".to_owned()];
    let (decision, _) = decide(engine, &store, Some(&caller), &req, &path);
    assert!(
        decision.allowed && !decision.audit.is_empty(),
        "{decision:?}"
    );
    let (logged, events) = (described(), Events::default());
    tracing::subscriber::with_default(events.clone(), || logged.log(&decision));
    let made = logged.id.get().cloned();
    assert!(made.is_some());
    let audit = "audit: policy in audit mode would decide otherwise";
    assert_eq!(events.id_of(audit), made);
    assert_eq!(events.id_of("inbound request allowed"), made);
}
