#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use super::*;
use crate::contract::admin::DeleteEntry;
use crate::contract::{EndpointRegistration, ErrorBody, RegisterEndpoint, Snapshot, SnapshotSince};

/// A real hyper server on a unix socket, standing in for the control plane:
/// `/v1/snapshot` answers a snapshot one version past `since`, `/v1/endpoints` and
/// `DELETE /v1/admin/entries/x` answer 204 after checking what they were sent, `/refuse`
/// a contract error, `/busy` a 503 without one, `/garbage` 200 with non-JSON, `/big`
/// 2 KiB, `/hang` never answers; anything else closes the connection unanswered.
async fn serve(dir: &Path) -> PathBuf {
    let path = dir.join("control.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    path
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let json = request.headers().get(header::CONTENT_TYPE).cloned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let (status, answer) = match (method, uri.path()) {
        (Method::GET, "/v1/snapshot") => {
            let since: u64 = uri
                .query()
                .unwrap()
                .strip_prefix("since=")
                .unwrap()
                .parse()
                .unwrap();
            let snapshot = Snapshot {
                version: since + 1,
                ..Snapshot::default()
            };
            (StatusCode::OK, json_body(&snapshot))
        }
        (Method::POST, "/v1/endpoints") => {
            assert_eq!(json.unwrap(), "application/json");
            let registration: EndpointRegistration = serde_json::from_slice(&body).unwrap();
            assert_eq!(registration.workload, "billing");
            (StatusCode::NO_CONTENT, Bytes::new())
        }
        (Method::DELETE, "/v1/admin/entries/x") => {
            assert!(
                json.is_none() && body.is_empty(),
                "a call without a body sent one"
            );
            (StatusCode::NO_CONTENT, Bytes::new())
        }
        (_, "/refuse") => (
            StatusCode::NOT_FOUND,
            json_body(&ErrorBody {
                error: "unknown_workload".into(),
                description: "no workload named x".into(),
            }),
        ),
        (_, "/busy") => (StatusCode::SERVICE_UNAVAILABLE, Bytes::from("busy")),
        (_, "/garbage") => (StatusCode::OK, Bytes::from("<html>")),
        (_, "/big") => (StatusCode::OK, Bytes::from(vec![b' '; 2048])),
        (_, "/hang") => std::future::pending().await,
        _ => panic!("the test server drops this connection"),
    };
    let mut response = Response::new(Full::new(answer));
    *response.status_mut() = status;
    Ok(response)
}

/// `GET` of any path, answering any JSON; a long poll when `LONG`.
struct Get<const LONG: bool>(&'static str);

impl<const LONG: bool> Call for Get<LONG> {
    const METHOD: Method = Method::GET;
    const LONG_POLL: bool = LONG;
    type Request = NoBody;
    type Response = serde_json::Value;
    fn path(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.0)
    }
}

async fn get(path: &'static str) -> CallError {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(UnixConnect(serve(dir.path()).await));
    client.call(&Get::<false>(path), &NoBody).await.unwrap_err()
}

#[tokio::test]
async fn calls_send_their_route_and_body_and_decode_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(UnixConnect(serve(dir.path()).await));
    let snapshot = client.call(&SnapshotSince(7), &NoBody).await.unwrap();
    assert_eq!(snapshot.version, 8);
    let registration = EndpointRegistration {
        workload: "billing".into(),
        inbound: "127.0.0.1:4000".parse().unwrap(),
        replica: 0,
    };
    let NoBody = client.call(&RegisterEndpoint, &registration).await.unwrap();
    let NoBody = client.call(&DeleteEntry("x"), &NoBody).await.unwrap();
}

#[tokio::test]
async fn a_refusal_carries_the_contract_error_body_and_is_permanent() {
    let err = get("/refuse").await;
    let CallError::Status { status, error, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (*status, error.as_str()),
        (StatusCode::NOT_FOUND, "unknown_workload")
    );
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "control answered /refuse with 404 Not Found: unknown_workload: no workload named x"
    );
}

#[tokio::test]
async fn server_errors_are_transient_and_keep_the_raw_answer() {
    let err = get("/busy").await;
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .ends_with("503 Service Unavailable: unknown: busy"),
        "{err}"
    );
}

#[tokio::test]
async fn an_answer_that_is_not_the_contract_json_is_a_permanent_decode_error() {
    let err = get("/garbage").await;
    assert!(matches!(err, CallError::Decode { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "control answered /garbage with a body that is not valid JSON for the contract"
    );
}

#[tokio::test]
async fn an_answer_over_the_cap_is_refused_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let connect = UnixConnect(serve(dir.path()).await);
    let capped = Exchange::new("localhost").with_max_answer_bytes(1024);
    let client = Client::with_exchange(connect, capped);
    let err = client
        .call(&Get::<false>("/big"), &NoBody)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "control's answer to /big exceeds 1024 bytes"
    );
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_transient_transport_error() {
    let err = get("/drop").await;
    assert!(matches!(err, CallError::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .starts_with("HTTP exchange with control socket /"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_a_transient_connect_error_naming_it() {
    let client = Client::new(UnixConnect("/nonexistent/meshwork/control.sock".into()));
    let err = client.call(&SnapshotSince(0), &NoBody).await.unwrap_err();
    assert!(matches!(err, CallError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(
        err.to_string(),
        "cannot connect to control socket /nonexistent/meshwork/control.sock"
    );
    assert!(
        err.chain().starts_with(
            "cannot connect to control socket /nonexistent/meshwork/control.sock: \
             connecting failed: No such file or directory"
        ),
        "{}",
        err.chain()
    );
}

#[tokio::test(start_paused = true)]
async fn calls_time_out_after_10_s_and_long_polls_after_the_poll_period_plus_15_s() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(UnixConnect(serve(dir.path()).await));
    let start = tokio::time::Instant::now();
    let err = client
        .call(&Get::<false>("/hang"), &NoBody)
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert!(elapsed >= CALL_TIMEOUT && elapsed < CALL_TIMEOUT + Duration::from_millis(10));
    assert!(err.is_transient());
    assert!(
        err.to_string().ends_with("did not answer /hang within 10s"),
        "{err}"
    );

    let start = tokio::time::Instant::now();
    let err = client
        .call(&Get::<true>("/hang"), &NoBody)
        .await
        .unwrap_err();
    let elapsed = start.elapsed();
    assert_eq!(POLL_TIMEOUT, Duration::from_secs(40));
    assert!(elapsed >= POLL_TIMEOUT && elapsed < POLL_TIMEOUT + Duration::from_millis(10));
    assert!(matches!(err, CallError::Timeout { .. }), "{err:?}");
}
