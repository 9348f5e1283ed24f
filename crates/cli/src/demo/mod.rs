//! The demo applications of `examples/store-billing`: plain HTTP services that
//! know nothing about the mesh. They shipped inside the binary so the example
//! needs no other runtime. `billing` reports the caller identity the mesh
//! stamped into `x-meshwork-client-id`; `store` and `reporting` call billing
//! through `HTTP_PROXY`, as any unmodified application would.

mod charges;
mod dns;
pub mod stripe;
mod web;

use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
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
    /// Reports: `GET /report` tries to read billing (and is denied by policy).
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
        (_, "GET", "/healthz") => Reply::json(200, serde_json::json!({"ok": true})),
        (DemoApp::Billing, "POST", "/charges") => charges::create(&req).await,
        (DemoApp::Billing, "GET", path) if path == "/charges" || path.starts_with("/charges/") => {
            charges::read(&req).await
        }
        (DemoApp::Store, "POST", "/checkout") => call_billing("store").await,
        (DemoApp::Reporting, "GET", "/report") => call_billing("reporting").await,
        _ => Reply::json(
            404,
            serde_json::json!({"error": "not_found", "path": req.path}),
        ),
    }
}

async fn call_billing(who: &str) -> Reply {
    match web::post_via_proxy(
        "http://billing/charges",
        Bytes::from_static(b"{\"amount\":1000}"),
    )
    .await
    {
        Ok((status, body)) => {
            let billing: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&body).into_owned())
            });
            Reply::json(
                if status < 300 { 200 } else { 502 },
                serde_json::json!({
                    "from": who, "billing_status": status, "billing": billing,
                }),
            )
        }
        Err(e) => Reply::json(
            502,
            serde_json::json!({"from": who, "error": e.to_string()}),
        ),
    }
}
