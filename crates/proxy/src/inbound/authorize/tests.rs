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
