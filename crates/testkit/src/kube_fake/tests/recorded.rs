//! The fake API server against recordings of real API servers (`../recorded/*.json`, each
//! naming its source): the recorded requests are replayed against the fake and its answers
//! compared with the recorded ones — status codes, the shape of every body (the same fields
//! with the same JSON types), and the exact values wherever they do not depend on uids,
//! timestamps or resourceVersions.
//!
//! What the recordings have and the fake deliberately does not: `managedFields` (removed from
//! the recordings) and the `kubernetes.io/initial-events-list-blueprint` annotation and typed zero
//! `spec`/`status` on a core kind's bookmark.

use serde_json::{Map, Value, json};

use super::client::{Watch, call, call_as};
use crate::kube_fake::{FakeApiServer, FakeResource};

const K8S_OPENAPI: &str = include_str!("../recorded/k8s-openapi-v1-33.json");
const ERRORS: &str = include_str!("../recorded/status-errors.json");

/// The JSON types of `value`, recursively (arrays by their first element).
fn shape(value: &Value) -> Value {
    match value {
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
        Value::Array(items) => json!(items.first().map(shape).into_iter().collect::<Vec<_>>()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), shape(v)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn exchanges(fixture: &str) -> Vec<Value> {
    let fixture: Value = serde_json::from_str(fixture).unwrap();
    fixture["exchanges"].as_array().unwrap().clone()
}

fn recorded<'a>(all: &'a [Value], method: &str, url_end: &str) -> &'a Value {
    all.iter()
        .find(|e| e["method"] == method && e["url"].as_str().unwrap().ends_with(url_end))
        .unwrap_or_else(|| panic!("no recorded {method} …{url_end}"))
}

/// The CRD the recordings were made with (k8s-openapi-tests' `custom_resource_definition`
/// test: `prop1` and `prop2` required; the recorded creates also carry `prop4` and `prop5`,
/// which the real server kept, so the schema had them: as int-or-string, since the recorded
/// values are a number and strings).
fn foobars() -> FakeResource {
    let int_or_string = json!({"x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}]});
    FakeResource::namespaced(
        "k8s-openapi-tests-custom-resource-definition.com",
        "v1",
        "foobars",
        "FooBar",
    )
    .with_status()
    .with_schema(json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "required": ["prop1", "prop2"],
            "properties": {
                "prop1": {"type": "string"},
                "prop2": {"type": "array", "items": {"type": "boolean"}},
                "prop3": {"type": "integer", "format": "int32"},
                "prop4": int_or_string,
                "prop5": int_or_string,
            },
        }},
    }))
}

#[tokio::test]
async fn custom_resources_are_created_listed_got_watched_and_deleted_as_recorded() {
    let all = exchanges(K8S_OPENAPI);
    let server = FakeApiServer::start(&[foobars()]).await.unwrap();
    let collection =
        "/apis/k8s-openapi-tests-custom-resource-definition.com/v1/namespaces/default/foobars";
    for exchange in all
        .iter()
        .filter(|e| e["method"] == "POST" && e["status"] == 201)
    {
        let (status, body) =
            call(&server, "POST", collection, Some(&exchange["request_body"])).await;
        assert_eq!(status, 201);
        let want = &exchange["response"];
        assert_eq!(shape(&body), shape(want), "create: {body}");
        for stable in ["apiVersion", "kind", "spec"] {
            assert_eq!(body[stable], want[stable]);
        }
        for stable in ["name", "namespace", "generation"] {
            assert_eq!(body["metadata"][stable], want["metadata"][stable]);
        }
    }
    let (status, list) = call(&server, "GET", collection, None).await;
    let want = recorded(&all, "GET", "/namespaces/default/foobars");
    assert_eq!(status, want["status"].as_u64().unwrap() as u16);
    assert_eq!(shape(&list), shape(&want["response"]));
    assert_eq!(list["kind"], want["response"]["kind"]);
    assert_eq!(
        list["metadata"]["continue"],
        want["response"]["metadata"]["continue"]
    );
    let names = |l: &Value| {
        l["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&list), names(&want["response"]));

    let (status, got) = call(&server, "GET", &format!("{collection}/fb1"), None).await;
    let want = recorded(&all, "GET", "/foobars/fb1");
    assert_eq!((status, shape(&got)), (200, shape(&want["response"])));

    let mut watch = Watch::open(&server, &format!("{collection}?&watch=true")).await;
    let want = recorded(&all, "GET", "foobars?&watch=true")["response"]
        .as_array()
        .unwrap()
        .clone();
    for want in &want {
        let event = watch.next().await.unwrap();
        assert_eq!(shape(&event), shape(want));
        assert_eq!(event["type"], want["type"]);
        assert_eq!(
            event["object"]["metadata"]["name"],
            want["object"]["metadata"]["name"]
        );
    }

    let (status, deleted) = call(&server, "DELETE", &format!("{collection}/fb1"), None).await;
    let want = recorded(&all, "DELETE", "/foobars/fb1");
    assert_eq!((status, shape(&deleted)), (200, shape(&want["response"])));
    let mut stable = deleted.clone();
    stable["details"]["uid"] = want["response"]["details"]["uid"].clone();
    assert_eq!(stable, want["response"]);
}

#[tokio::test]
async fn a_schema_422_is_answered_exactly_as_recorded() {
    let all = exchanges(K8S_OPENAPI);
    let want = all.iter().find(|e| e["status"] == 422).unwrap();
    let server = FakeApiServer::start(&[foobars()]).await.unwrap();
    let url = want["url"].as_str().unwrap();
    let (status, body) = call(&server, "POST", url, Some(&want["request_body"])).await;
    assert_eq!((status, &body), (422, &want["response"]));
}

#[tokio::test]
async fn a_422_has_the_recorded_shape() {
    let all = exchanges(K8S_OPENAPI);
    let want = all.iter().find(|e| e["status"] == 422).unwrap();
    let server = FakeApiServer::start(&[foobars()]).await.unwrap();
    let path =
        "/apis/k8s-openapi-tests-custom-resource-definition.com/v1/namespaces/default/foobars";
    let held = json!({"metadata":{"name":"fb3","finalizers":["a"]},
                      "spec":{"prop1":"a","prop2":[]}});
    call(&server, "POST", path, Some(&held)).await;
    call(&server, "DELETE", &format!("{path}/fb3"), None).await;
    let more = json!({"metadata":{"finalizers":["a","b"]}});
    let (status, body) = call_as(
        &server,
        "PATCH",
        &format!("{path}/fb3"),
        "application/merge-patch+json",
        Some(&more),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(shape(&body), shape(&want["response"]));
    for stable in ["kind", "apiVersion", "metadata", "status", "reason", "code"] {
        assert_eq!(body[stable], want["response"][stable], "{stable}");
    }
    for stable in ["name", "group", "kind"] {
        assert_eq!(
            body["details"][stable], want["response"]["details"][stable],
            "details.{stable}: Invalid names the kind, not the plural"
        );
    }
}

#[tokio::test]
async fn an_initial_events_bookmark_is_shaped_as_recorded() {
    let all = exchanges(K8S_OPENAPI);
    let want = &recorded(&all, "GET", "sendInitialEvents=true&watch=true");
    let url = want["url"].as_str().unwrap();
    let pods = FakeResource::namespaced("", "v1", "pods", "Pod");
    let server = FakeApiServer::start(&[pods]).await.unwrap();
    let pod = json!({"metadata":{"name":"coredns"}});
    call(
        &server,
        "POST",
        "/api/v1/namespaces/kube-system/pods",
        Some(&pod),
    )
    .await;
    let mut watch = Watch::open(&server, url).await;
    assert_eq!(watch.status, 200);
    let events = want["response"].as_array().unwrap();
    let added = watch.next().await.unwrap();
    assert_eq!(
        (&added["type"], &added["object"]["kind"]),
        (&events[0]["type"], &events[0]["object"]["kind"])
    );
    let bookmark = watch.next().await.unwrap();
    let recorded = events.last().unwrap();
    assert_eq!(bookmark["type"], recorded["type"]);
    let (ours, theirs) = (&bookmark["object"], &recorded["object"]);
    assert_eq!(
        (&ours["kind"], &ours["apiVersion"]),
        (&theirs["kind"], &theirs["apiVersion"])
    );
    for (name, value) in ours["metadata"].as_object().unwrap() {
        if name == "annotations" {
            continue;
        }
        assert_eq!(
            shape(value),
            shape(&theirs["metadata"][name]),
            "metadata.{name}"
        );
    }
    assert_eq!(
        ours["metadata"]["annotations"]["k8s.io/initial-events-end"],
        theirs["metadata"]["annotations"]["k8s.io/initial-events-end"]
    );
    assert!(ours["metadata"].get("name").is_none() && theirs["metadata"].get("name").is_none());
}

fn error(name: &str) -> Value {
    exchanges(ERRORS)
        .into_iter()
        .find(|e| e["name"] == name)
        .unwrap()
}

fn core(plural: &str, kind: &str) -> FakeResource {
    FakeResource::namespaced("", "v1", plural, kind)
}

#[tokio::test]
async fn conflicts_are_answered_exactly_as_recorded() {
    let server = FakeApiServer::start(&[
        core("services", "Service"),
        core("resourcequotas", "ResourceQuota"),
    ])
    .await
    .unwrap();
    let services = "/api/v1/namespaces/default/services";
    call(
        &server,
        "POST",
        services,
        Some(&json!({"metadata":{"name":"mock-2"}})),
    )
    .await;
    let (status, body) = call(
        &server,
        "POST",
        services,
        Some(&json!({"metadata":{"name":"mock-2"}})),
    )
    .await;
    let want = error("already_exists");
    assert_eq!((status, &body), (409, &want["response"]));

    let quotas = "/api/v1/namespaces/default/resourcequotas";
    let (_, quota) = call(
        &server,
        "POST",
        quotas,
        Some(&json!({"metadata":{"name":"quota"},"spec":{}})),
    )
    .await;
    let mut changed = quota.clone();
    changed["spec"]["hard"] = json!({"pods": "1"});
    call(&server, "PUT", &format!("{quotas}/quota"), Some(&changed)).await;
    let (status, body) = call(&server, "PUT", &format!("{quotas}/quota"), Some(&changed)).await;
    let want = error("conflict");
    assert_eq!((status, &body), (409, &want["response"]));
}

#[tokio::test]
async fn expiry_is_answered_as_recorded() {
    let server = FakeApiServer::start(&[core("pods", "Pod")]).await.unwrap();
    let pods = "/api/v1/namespaces/default/pods";
    call(
        &server,
        "POST",
        pods,
        Some(&json!({"metadata":{"name":"p"}})),
    )
    .await;
    server.expire_watches();
    let mut watch = Watch::open(&server, &format!("{pods}?watch=true&resourceVersion=2")).await;
    let event = watch.next().await.unwrap();
    let want = error("watch_expired")["response"].clone();
    assert_eq!(shape(&event), shape(&want));
    let message = event["object"]["message"].as_str().unwrap().to_owned();
    let mut stable = event.clone();
    stable["object"]["message"] = want["object"]["message"].clone();
    assert_eq!(stable, want);
    let numbers: Vec<&str> = message
        .strip_prefix("too old resource version: ")
        .unwrap()
        .split([' ', '(', ')'])
        .filter(|s| !s.is_empty())
        .collect();
    assert!(
        numbers.len() == 2 && numbers.iter().all(|n| n.parse::<u64>().is_ok()),
        "{message}"
    );

    let (status, body) = call(
        &server,
        "GET",
        &format!("{pods}?resourceVersion=2&resourceVersionMatch=Exact"),
        None,
    )
    .await;
    let want = error("list_expired");
    assert_eq!((status, &body), (410, &want["response"]));
}
