//! The fake API server's HTTP side: paths to resources, verbs to store operations, the
//! request log, and watch responses streamed as newline-delimited JSON.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::Value;
use tokio::sync::mpsc;

use super::patch::FakePatch;
use super::selector::Filter;
use super::status::{Cause, FakeStatus, Subject};
use super::store::{Part, Store};
use super::{FakeRequest, FakeVerb};

/// A response body: a whole JSON document or a watch stream.
pub(crate) type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    pub token: String,
}

impl Shared {
    pub(crate) fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A parsed path: which resource, where, which object, which subresource.
#[derive(Debug, Clone)]
struct Route {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(store: &Store, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, rest @ ..] if !rest.is_empty() => (Some(*namespace), rest),
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return None,
    };
    let resource = store
        .resources
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    let info = &store.resources[resource];
    if namespace.is_some() != info.namespaced && name.is_some() {
        return None;
    }
    if namespace.is_some() && !info.namespaced {
        return None;
    }
    Some(Route {
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

fn json(status: u16, value: &Value) -> Response<FakeBody> {
    let body = Full::new(Bytes::from(value.to_string())).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(status: &FakeStatus) -> Response<FakeBody> {
    json(status.code(), &status.body())
}

/// Serves one request.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<FakeBody>, Infallible> {
    let authorized = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bearer ") == Some(shared.token.as_str()));
    if !authorized {
        return Ok(failure(&FakeStatus::Unauthorized));
    }
    let found = route(&shared.store(), request.uri().path());
    let Some(route) = found else {
        return Ok(failure(&FakeStatus::NoRoute));
    };
    let params = query(&request);
    if params.contains_key("dryRun") {
        let why = "dryRun is not supported by the fake API server".to_owned();
        return Ok(failure(&FakeStatus::BadRequest(why)));
    }
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Ok(failure(&FakeStatus::BadRequest("unreadable body".into()))),
    };
    let verb = match verb(&method, &route, &params) {
        Ok(verb) => verb,
        Err(status) => return Ok(failure(&status)),
    };
    // Logged when routed, before the store's lock is taken for the operation: concurrent
    // requests are logged in arrival order, which may differ from the order their writes
    // commit (and so from the order watches see them).
    log(&shared, verb, &route);
    let result = match verb {
        FakeVerb::Watch => return Ok(watch(&shared, &route, &params)),
        FakeVerb::List => list(&shared, &route, &params),
        _ => write(&shared, verb, &route, (&content_type, &body), &params),
    };
    Ok(match result {
        Ok((status, value)) => json(status, &value),
        Err(status) => failure(&status),
    })
}

fn verb(
    method: &Method,
    route: &Route,
    params: &HashMap<String, String>,
) -> Result<FakeVerb, FakeStatus> {
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let status_ok = match route.subresource.as_deref() {
        None => true,
        Some("status") => true,
        Some(_) => return Err(FakeStatus::NoRoute),
    };
    Ok(match (method.as_str(), route.name.is_some()) {
        ("GET", false) if watching => FakeVerb::Watch,
        ("GET", false) => FakeVerb::List,
        ("GET", true) if status_ok => FakeVerb::Get,
        ("POST", false) => FakeVerb::Create,
        ("PUT", true) => FakeVerb::Update,
        ("PATCH", true) => FakeVerb::Patch,
        ("DELETE", true) if route.subresource.is_none() => FakeVerb::Delete,
        _ => return Err(FakeStatus::MethodNotAllowed),
    })
}

fn log(shared: &Shared, verb: FakeVerb, route: &Route) {
    let mut store = shared.store();
    let info = &store.resources[route.resource];
    let request = FakeRequest {
        verb,
        group: info.group.clone(),
        resource: info.plural.clone(),
        subresource: route.subresource.clone(),
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    };
    store.requests.push(request);
}

type Answer = Result<(u16, Value), FakeStatus>;

fn write(
    shared: &Shared,
    verb: FakeVerb,
    route: &Route,
    (content_type, body): (&str, &Bytes),
    params: &HashMap<String, String>,
) -> Answer {
    let mut store = shared.store();
    let info = store.resources[route.resource].clone();
    if info.namespaced && route.namespace.is_none() && verb != FakeVerb::Get {
        return Err(FakeStatus::MethodNotAllowed);
    }
    let namespace = route.namespace.clone().unwrap_or_default();
    let part = match route.subresource.as_deref() {
        Some(_) if !info.has_status_subresource => return Err(FakeStatus::NoRoute),
        Some(_) => Part::Status,
        None => Part::Main,
    };
    if verb == FakeVerb::Create {
        if route.subresource.is_some() {
            return Err(FakeStatus::MethodNotAllowed);
        }
        return Ok((
            201,
            store.create((route.resource, namespace), parse(body)?)?,
        ));
    }
    let key = (
        route.resource,
        namespace,
        route.name.clone().unwrap_or_default(),
    );
    match verb {
        FakeVerb::Get => Ok((200, store.get(&key)?)),
        FakeVerb::Update => Ok((200, store.replace(&key, parse(body)?, part)?)),
        FakeVerb::Patch => {
            let patch = FakePatch::parse(content_type, body).map_err(|e| match e {
                super::patch::PatchError::MediaType => {
                    FakeStatus::UnsupportedMediaType(e.to_string())
                }
                _ => FakeStatus::BadRequest(e.to_string()),
            })?;
            // fieldManager and force are checked; field ownership is not modelled (patch.rs).
            patch_options(&patch, params)?;
            let created = patch.is_apply() && !store.objects.contains_key(&key);
            let object = store.patch(&key, &patch, part)?;
            Ok((if created { 201 } else { 200 }, object))
        }
        FakeVerb::Delete => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse(body)?
            };
            propagation(&options, params)?;
            Ok((200, store.delete(&key, &options)?))
        }
        _ => Err(FakeStatus::MethodNotAllowed),
    }
}

/// The real server's checks of `PatchOptions`: server-side apply needs a `fieldManager`, and
/// `force` is for apply patches only (both 422 `Invalid` about `PatchOptions.meta.k8s.io`).
/// Which manager owns which field is not modelled (`patch.rs`): the name is required and
/// then ignored, and `force` changes nothing since there are no conflicts to override.
fn patch_options(patch: &FakePatch, params: &HashMap<String, String>) -> Result<(), FakeStatus> {
    let options = Subject {
        group: "meta.k8s.io".into(),
        kind: "PatchOptions".into(),
        ..Subject::default()
    };
    let manager = params.get("fieldManager").filter(|m| !m.is_empty());
    if patch.is_apply() && manager.is_none() {
        let cause = Cause::new(
            "FieldValueRequired",
            "fieldManager",
            "Required value: is required for apply patch",
        );
        return Err(FakeStatus::invalid(options, &[cause]));
    }
    let forced = params.get("force").is_some_and(|f| f != "false");
    if !patch.is_apply() && forced {
        let cause = Cause::new(
            "FieldValueForbidden",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        );
        return Err(FakeStatus::invalid(options, &[cause]));
    }
    Ok(())
}

/// Only background propagation is modelled (`gc.rs`); `Foreground` and `Orphan` would
/// silently behave as `Background`, so they are refused.
fn propagation(options: &Value, params: &HashMap<String, String>) -> Result<(), FakeStatus> {
    let asked = options["propagationPolicy"]
        .as_str()
        .or(params.get("propagationPolicy").map(String::as_str));
    match asked {
        None | Some("Background") => Ok(()),
        Some(other) => Err(FakeStatus::BadRequest(format!(
            "propagationPolicy {other:?} is not supported by the fake API server (only Background)"
        ))),
    }
}

fn parse(body: &Bytes) -> Result<Value, FakeStatus> {
    serde_json::from_slice(body).map_err(|e| {
        FakeStatus::BadRequest(format!("the body of the request could not be decoded: {e}"))
    })
}

fn filter(params: &HashMap<String, String>) -> Result<Filter, FakeStatus> {
    Filter::parse(
        params.get("labelSelector").map(String::as_str),
        params.get("fieldSelector").map(String::as_str),
    )
}

/// `resourceVersion` as a number: `None` for absent, `""` or `"0"` (both mean "any").
fn revision(params: &HashMap<String, String>) -> Result<Option<u64>, FakeStatus> {
    match params.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| FakeStatus::BadRequest(format!("invalid resource version: {text:?}"))),
    }
}

fn list(shared: &Shared, route: &Route, params: &HashMap<String, String>) -> Answer {
    let filter = filter(params)?;
    let asked = revision(params)?;
    let store = shared.store();
    if let (Some(asked), Some("Exact")) = (
        asked,
        params.get("resourceVersionMatch").map(String::as_str),
    ) && asked < store.history.floor()
    {
        return Err(FakeStatus::Expired(
            "The resourceVersion for the provided list is too old.".into(),
        ));
    }
    let info = &store.resources[route.resource];
    let items: Vec<Value> = store
        .select(route.resource, route.namespace.as_deref(), &filter)
        .cloned()
        .collect();
    let mut metadata = serde_json::json!({ "resourceVersion": store.revision.to_string() });
    if !info.group.is_empty() {
        metadata["continue"] = Value::from("");
    }
    let list = serde_json::json!({
        "apiVersion": info.api_version(),
        "items": items,
        "kind": format!("{}List", info.kind),
        "metadata": metadata,
    });
    Ok((200, list))
}

fn watch(shared: &Shared, route: &Route, params: &HashMap<String, String>) -> Response<FakeBody> {
    let filter = match filter(params) {
        Ok(filter) => filter,
        Err(status) => return failure(&status),
    };
    let asked = match revision(params) {
        Ok(asked) => asked,
        Err(status) => return failure(&status),
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = params.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let initial_events_end = params.get("sendInitialEvents").map(String::as_str) == Some("true");
    let (sender, receiver) = mpsc::unbounded_channel();
    let watcher = super::watch::Watcher {
        resource: route.resource,
        namespace: route.namespace.clone(),
        filter,
        bookmarks,
        sender,
    };
    let mut store = shared.store();
    let mut initial = Vec::new();
    match asked {
        None => {
            for object in store.select(route.resource, route.namespace.as_deref(), &watcher.filter)
            {
                initial.push(super::watch::encode("ADDED", object));
            }
            if initial_events_end {
                let end = serde_json::json!({ "k8s.io/initial-events-end": "true" });
                let info = &store.resources[route.resource];
                initial.push(super::watch::bookmark(info, store.revision, Some(end)));
            }
        }
        Some(from) => {
            let floor = store.history.floor();
            if from < floor {
                drop(store);
                let error = super::watch::encode("ERROR", &super::status::too_old(from, floor));
                return stream(vec![error], None, timeout);
            }
            if let Some(changes) = store.history.since(from) {
                initial.extend(changes.filter_map(|c| watcher.event_for(c)));
            }
        }
    }
    store.watch(watcher, Vec::new());
    drop(store);
    stream(initial, Some(receiver), timeout)
}

/// A `200` watch response: `initial`, then whatever `receiver` delivers, until the
/// deadline, the server's end or the fake closing the watch.
fn stream(
    initial: Vec<Bytes>,
    receiver: Option<mpsc::UnboundedReceiver<Bytes>>,
    timeout: Duration,
) -> Response<FakeBody> {
    // A peer's `timeoutSeconds` may be any u64: past what an Instant can hold, the watch
    // simply has no deadline worth the name (a year).
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
    let state = (initial.into_iter(), receiver);
    let events =
        futures_util::stream::unfold(state, move |(mut initial, mut receiver)| async move {
            if let Some(event) = initial.next() {
                return Some((Ok::<_, Infallible>(Frame::data(event)), (initial, receiver)));
            }
            let next = tokio::time::timeout_at(deadline, receiver.as_mut()?.recv()).await;
            match next {
                Ok(Some(event)) => Some((Ok(Frame::data(event)), (initial, receiver))),
                _ => None,
            }
        });
    let body = StreamBody::new(events).boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
