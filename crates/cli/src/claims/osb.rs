//! A minimal Open Service Broker API client: what a platform sends (API version, basic auth,
//! originating identity) over plain HTTP/1.1 to a broker on loopback (`up`) or at a
//! `host:port` name (controller mode: a Service in the cluster).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

/// The OSB API version meshwork speaks as a platform.
const API_VERSION: &str = "2.17";

fn timed_out(what: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what)
}

/// Whether `error` (from [`OsbClient::call`] or anything built on it) says the broker could not
/// be reached or did not answer, rather than that it answered with a refusal.
pub fn is_unreachable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<std::io::Error>() || cause.is::<hyper::Error>())
}

/// One request's answer: status and JSON body (`{}` when the body is empty).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
}

impl Answer {
    /// The broker's `{error, description}` as one line, for error messages.
    pub fn reason(&self) -> String {
        let description = self.body["description"].as_str().unwrap_or("");
        match self.body["error"].as_str() {
            Some(code) => format!("{} {code}: {description}", self.status),
            None => format!("{}: {description}", self.status),
        }
    }
}

/// A broker reached at `addr` with basic-auth credentials. `Debug` is not derived: the
/// authorization header holds the password.
pub struct OsbClient {
    /// `host:port`, resolved on each connection.
    addr: String,
    authorization: String,
    identity: String,
}

impl OsbClient {
    /// A client for the broker at `addr`; `who` is recorded by the broker as the
    /// originating identity (`meshwork {"username": who}`).
    pub fn new(addr: SocketAddr, username: &str, password: &str, who: &str) -> OsbClient {
        OsbClient::at(&addr.to_string(), username, password, who)
    }

    /// A client for the broker at `authority` (`host:port`; the host may be a DNS name).
    pub fn at(authority: &str, username: &str, password: &str, who: &str) -> OsbClient {
        let b64 = base64::engine::general_purpose::STANDARD;
        let identity = serde_json::json!({ "username": who }).to_string();
        OsbClient {
            addr: authority.to_owned(),
            authorization: format!("Basic {}", b64.encode(format!("{username}:{password}"))),
            identity: format!("meshwork {}", b64.encode(identity)),
        }
    }

    /// Sends one request; transport failures are errors, any HTTP status is an [`Answer`].
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let what = || format!("{method} {path} to the broker at {}", self.addr);
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&self.addr))
            .await
            .unwrap_or_else(|_| Err(timed_out("connect timed out")))
            .with_context(what)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(what)?;
        tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("x-broker-api-version", API_VERSION)
            .header("x-broker-api-originating-identity", &self.identity)
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .with_context(what)?;
        // Provisioning a database can take a while; the broker answers 202 for long ones.
        let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
            .await
            .map_err(|_| anyhow::Error::from(timed_out("no answer within 120 s")))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(what)?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.with_context(what)?;
        let bytes = bytes.to_bytes();
        let body = match bytes.is_empty() {
            true => Value::Object(Default::default()),
            false => serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: the answer ({status}) is not JSON", what()))?,
        };
        Ok(Answer { status, body })
    }

    /// `GET /v2/catalog`: the service id and plan id of class `class`, plan `plan`
    /// (`default` or a size).
    pub async fn catalog_ids(&self, class: &str, plan: &str) -> anyhow::Result<(String, String)> {
        let answer = self.call("GET", "/v2/catalog", None).await?;
        if answer.status != 200 {
            bail!("the broker's catalog: {}", answer.reason());
        }
        let services = answer.body["services"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = services.iter().filter_map(|s| s["name"].as_str()).collect();
        let Some(service) = services.iter().find(|s| s["name"] == class) else {
            bail!(
                "class {class:?} is not in the broker's catalog (classes: {})",
                names.join(", ")
            );
        };
        let plans = service["plans"].as_array().cloned().unwrap_or_default();
        let Some(p) = plans.iter().find(|p| p["name"] == plan) else {
            let names: Vec<&str> = plans.iter().filter_map(|p| p["name"].as_str()).collect();
            bail!(
                "class {class} has no plan {plan:?} (plans: {})",
                names.join(", ")
            );
        };
        let id = |v: &Value| v["id"].as_str().map(str::to_owned);
        let sid = id(service).context("catalog service without id")?;
        let pid = id(p).context("catalog plan without id")?;
        Ok((sid, pid))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_broker_that_does_not_answer_is_unreachable_a_refusal_is_not() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let osb = OsbClient::at(&addr.to_string(), "u", "p", "test");
        let error = osb.catalog_ids("postgresql", "default").await.unwrap_err();
        assert!(is_unreachable(&error), "{error:#}");
        assert!(
            format!("{error:#}").contains(&addr.to_string()),
            "{error:#}"
        );
        let refused = anyhow::anyhow!("the broker's catalog: 401 Unauthorized");
        assert!(!is_unreachable(&refused));
    }
}
