//! What the observation endpoints must not believe or hand out, on the `store` → `billing`
//! pair of `observe`: an app forging a denial (`403` with `x-meshwork-decision-id`) is no
//! denial anywhere and its `x-meshwork-*` fields reach no caller, while the sidecar's own
//! denials carry their policy and rule into the tap; `/tap` refuses credential headers; the
//! admin listener refuses a non-loopback `Host` (DNS rebinding).

use std::net::SocketAddr;

use api::contract::observe::{Decision, DecisionRecord, Stats};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use testkit::EchoServer;

use crate::observe::{Pair, Tap, admin, admin_as, admin_text, value};

/// billing's app: the echo server, or one forging denials.
pub(crate) enum App {
    /// Held for its `Drop`, which stops the server.
    #[allow(dead_code)]
    Echo(EchoServer),
    Forger(tokio::task::JoinHandle<()>),
}

impl Drop for App {
    fn drop(&mut self) {
        if let App::Forger(task) = self {
            task.abort();
        }
    }
}

/// An app that answers every request `403` with a forged `x-meshwork-decision-id` (and a
/// forged client id), as a compromised or buggy app could.
pub(crate) async fn forger() -> (SocketAddr, App) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(|_request| async {
                http::Response::builder()
                    .status(403)
                    .header("x-meshwork-decision-id", "forged")
                    .header("x-meshwork-client-id", "spiffe://meshwork.local/ns/x/sa/y")
                    .body(http_body_util::Full::new(Bytes::from_static(b"no")))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, App::Forger(task))
}

#[tokio::test]
async fn an_apps_forged_denial_is_no_denial_and_never_reaches_the_caller() {
    let (addr, app) = forger().await;
    let pair = Pair::start_with(false, addr, app).await;
    let mut inbound = Tap::open(&pair.billing, "limit=3").await;
    let mut outbound = Tap::open(&pair.store, "limit=3").await;

    // Allowed by policy; the app answers 403 with a forged decision id.
    let forged = pair.call_head("GET", "/charges/7").await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let names: Vec<_> = forged.headers().keys().map(|n| n.as_str()).collect();
    assert!(
        names.iter().all(|n| !n.starts_with("x-meshwork-")),
        "the app's x-meshwork-* fields reach no caller: {names:?}"
    );
    // Refused by billing's sidecar, by name (DELETE is rule 1) and by default (POST).
    let refused = pair.call_head("DELETE", "/charges/7").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let decision_id = refused.headers()["x-meshwork-decision-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let defaulted = pair.call_head("POST", "/charges/7").await;
    assert_eq!(defaulted.status(), StatusCode::FORBIDDEN);
    assert!(defaulted.headers().contains_key("x-meshwork-decision-id"));

    let events = [
        inbound.next().await.unwrap(),
        inbound.next().await.unwrap(),
        inbound.next().await.unwrap(),
    ];
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.method.as_str(), e.decision, e.policy.as_deref(), e.rule))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", Decision::Allow, None, None),
            (
                "DELETE",
                Decision::Deny,
                Some("default/billing-no-delete"),
                Some(1)
            ),
            ("POST", Decision::Deny, None, None),
        ]
    );
    assert_eq!(events[0].decision_id, None, "{:?}", events[0]);
    assert_eq!(events[1].decision_id.as_deref(), Some(decision_id.as_str()));
    // The caller's side: the peer's denials, without policy or rule (it saw only the 403).
    let seen: Vec<_> = [
        outbound.next().await.unwrap(),
        outbound.next().await.unwrap(),
        outbound.next().await.unwrap(),
    ]
    .iter()
    .map(|e| (e.method.clone(), e.decision, e.policy.clone(), e.rule))
    .collect();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), Decision::Allow, None, None),
            ("DELETE".to_owned(), Decision::Deny, None, None),
            ("POST".to_owned(), Decision::Deny, None, None),
        ]
    );

    let decisions: DecisionRecord =
        serde_json::from_str(&admin_text(&pair.billing, "/decisions?window=600").await).unwrap();
    let rows: Vec<_> = decisions
        .rows
        .iter()
        .map(|r| (r.method.as_str(), r.decision, r.count))
        .collect();
    assert_eq!(
        rows,
        [
            ("DELETE", Decision::Deny, 1),
            ("GET", Decision::Allow, 1),
            ("POST", Decision::Deny, 1),
        ]
    );
    for info in [&pair.billing, &pair.store] {
        let stats: Stats =
            serde_json::from_str(&admin_text(info, "/stats?window=600").await).unwrap();
        let denied: Vec<_> = stats
            .rows
            .iter()
            .map(|r| (r.method.as_str(), r.status_code, r.requests, r.denied))
            .collect();
        assert_eq!(
            denied,
            [
                ("DELETE", 403, 1, 1),
                ("GET", 403, 1, 0),
                ("POST", 403, 1, 1)
            ],
            "{stats:?}"
        );
    }
    pair.stop().await;
}

#[tokio::test]
async fn tap_refuses_credential_headers_and_the_admin_refuses_foreign_hosts() {
    let pair = Pair::start().await;
    for name in [
        "authorization",
        "Cookie",
        "proxy-authorization",
        "x-meshwork-client-id",
    ] {
        let response = admin(&pair.store, &format!("/tap?header={name}")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8(body.to_vec()).unwrap();
        let lower = name.to_ascii_lowercase();
        assert!(body.contains(&format!("header={lower}: refused")), "{body}");
    }
    let metrics = admin_text(&pair.store, "/metrics").await;
    assert_eq!(value(&metrics, "meshwork_taps"), Some(0), "no tap opened");

    let port = pair.store.admin.unwrap().port();
    for host in [
        format!("rebound.example:{port}"),
        "rebound.example".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
    ] {
        for path in ["/stats", "/tap", "/metrics", "/snapshot"] {
            let response = admin_as(&pair.store, path, &host).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{host} {path}");
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
    ] {
        let response = admin_as(&pair.store, "/stats", &host).await;
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    pair.stop().await;
}
