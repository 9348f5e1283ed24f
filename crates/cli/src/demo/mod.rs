//! The demo applications of `examples/store-billing`: plain HTTP services that
//! know nothing about the mesh. They shipped inside the binary so the example
//! needs no other runtime. `billing` reports the caller identity the mesh
//! stamped into `x-meshwork-client-id`; `store` and `reporting` call billing
//! through `HTTP_PROXY`, as any unmodified application would, and billing charges the card
//! at Stripe through `HTTPS_PROXY` (`stripe_client`). Like instrumented apps, each copies the
//! trace context of the request it serves onto the requests it makes (`trace_headers`): the
//! one thing an app must do for the sidecars' spans to join up into one trace.

mod charges;
mod dns;
pub mod stripe;
mod stripe_client;
mod trace_headers;
mod web;

use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};
use trace_headers::TraceHeaders;
use web::{Reply, Request};

/// Arguments of `meshwork demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Which demo application to run.
    #[arg(value_enum)]
    pub app: DemoApp,
}

/// The demo applications.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DemoApp {
    /// Creates charges: `POST /charges`.
    Billing,
    /// A shop: `POST /checkout` charges through billing.
    Store,
    /// Reports: `GET /report` tries to charge through billing (and is denied by policy);
    /// `POST /reconcile` checks out through store, then tries to list billing's charges
    /// (denied) and answers with both outcomes.
    Reporting,
    /// An offline stand-in for api.stripe.com: HTTPS on a loopback :443 plus a DNS server
    /// on `$PORT` resolving it (see `demo/stripe.rs`).
    Stripe,
}

/// Serves the chosen demo app on `127.0.0.1:$PORT` until SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    if let DemoApp::Stripe = args.app {
        return stripe::run(port);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let DemoApp::Billing = args.app {
        rt.block_on(charges::init())?;
    }
    rt.block_on(web::serve(port, move |req| handle(args.app, req)))?;
    Ok(ExitCode::SUCCESS)
}

async fn handle(app: DemoApp, req: Request) -> Reply {
    match (app, req.method.as_str(), req.path.as_str()) {
        (_, "GET", "/healthz") => Reply::json(200, json!({"ok": true})),
        (DemoApp::Billing, "POST", "/charges") => charges::create(&req).await,
        (DemoApp::Billing, "GET", path) if path == "/charges" || path.starts_with("/charges/") => {
            charges::read(&req).await
        }
        (DemoApp::Store, "POST", "/checkout") => call_billing("store", &req.trace).await,
        (DemoApp::Reporting, "GET", "/report") => call_billing("reporting", &req.trace).await,
        (DemoApp::Reporting, "POST", "/reconcile") => reconcile(&req.trace).await,
        _ => Reply::json(404, json!({"error": "not_found", "path": req.path})),
    }
}

/// A JSON body as JSON, anything else as a string.
fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn call_billing(who: &str, trace: &TraceHeaders) -> Reply {
    let body = Bytes::from_static(b"{\"amount\":1000}");
    match web::call_via_proxy(Method::POST, "http://billing/charges", body, trace).await {
        Ok((status, body)) => Reply::json(
            if status < 300 { 200 } else { 502 },
            json!({"from": who, "billing_status": status, "billing": body_json(&body)}),
        ),
        Err(e) => Reply::json(502, json!({"from": who, "error": e.to_string()})),
    }
}

/// reporting's `POST /reconcile`, one trace with an allowed and a forbidden branch: checks
/// out through store (store → billing → Stripe) and then tries to list billing's charges
/// directly, which policy forbids. Answers 200 with both outcomes (`store`, `billing`: each
/// `{status, body}`, billing's body being the sidecar's 403 with its `decision_id`) when both
/// calls got an answer, 502 naming the call that got none.
async fn reconcile(trace: &TraceHeaders) -> Reply {
    let checkout = web::call_via_proxy(Method::POST, "http://store/checkout", Bytes::new(), trace);
    let checkout = checkout.await;
    let listing = web::call_via_proxy(Method::GET, "http://billing/charges", Bytes::new(), trace);
    let listing = listing.await;
    let outcome = |call: anyhow::Result<(u16, Bytes)>| match call {
        Ok((status, body)) => (true, json!({"status": status, "body": body_json(&body)})),
        Err(e) => (false, json!({"error": format!("{e:#}")})),
    };
    let (store_answered, store) = outcome(checkout);
    let (billing_answered, billing) = outcome(listing);
    let status = if store_answered && billing_answered {
        200
    } else {
        502
    };
    Reply::json(
        status,
        json!({"from": "reporting", "store": store, "billing": billing}),
    )
}
