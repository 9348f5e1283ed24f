//! Issue 4's "done when", end to end: policies enforced by real sidecars of a real
//! `meshwork up examples/store-billing`, egress to the offline api.stripe.com stand-in through
//! `HTTPS_PROXY`, live policy updates, and `meshwork policy test|explain` as CI would run them.

#![allow(clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::curl_json;
use crate::harness::{Up, eventually, example, meshwork};

const READ_ONLY: &str = "default/billing-reporting-read-only";

/// `curl -sS -X POST --path-as-is -w '\n%{http_code}' http://billing<path>` as `workload`.
fn charge(up: &Up, workload: &str, path: &str) -> (u16, serde_json::Value) {
    let url = format!("http://billing{path}");
    let args = [
        "curl",
        "-sS",
        "-X",
        "POST",
        "--path-as-is",
        "-w",
        "\n%{http_code}",
        &url,
    ];
    curl_json(&up.exec(workload, &args))
}

#[test]
fn only_store_may_charge_whatever_the_path_spelling() {
    let up = Up::start(&example("store-billing"));
    for path in [
        "/charges",
        "/charges/",
        "//charges",
        "/%63harges",
        "/x/../charges",
    ] {
        let (code, json) = charge(&up, "store", path);
        assert_eq!(code, 201, "store {path}: {json}");
        assert_eq!(
            json["caller"],
            "spiffe://meshwork.local/ns/default/sa/store"
        );

        let (code, json) = charge(&up, "reporting", path);
        assert_eq!(code, 403, "reporting {path}: {json}");
        assert_eq!(json["error"], "forbidden");
        assert_eq!(json["policy"], READ_ONLY, "{json}");
        assert_eq!(json["rule"], 0, "{json}");
        let id = json["decision_id"].as_str().expect("decision_id");
        let line = up.wait_for_line(id, Duration::from_secs(10));
        assert!(
            line.contains("[billing/proxy]")
                && line.contains("denied by policy")
                && line.contains(READ_ONLY),
            "{line}"
        );
    }
    assert_requests_counted_by_route_template(&up);
    assert_audit_logs_but_does_not_refuse(&up);
}

/// Both sidecars counted the five spellings under the one template `/charges`
/// (docs/telemetry.md), denials included, and no raw spelling became a label.
fn assert_requests_counted_by_route_template(up: &Up) {
    let td = "spiffe://meshwork.local/ns/default/sa";
    let billing = scrape_metrics(up, "billing");
    for (status, caller) in [(201, "store"), (403, "reporting")] {
        let series = format!(
            "meshwork_requests_total{{direction=\"inbound\",service=\"billing\",route=\"/charges\",method=\"POST\",status_code=\"{status}\",peer=\"{td}/{caller}\"}} 5\n"
        );
        assert!(
            billing.contains(&series),
            "{series} missing from\n{billing}"
        );
    }
    let store = scrape_metrics(up, "store");
    let series = format!(
        "meshwork_requests_total{{direction=\"outbound\",service=\"billing\",route=\"/charges\",method=\"POST\",status_code=\"201\",peer=\"{td}/billing\"}} 5\n"
    );
    assert!(store.contains(&series), "{series} missing from\n{store}");
    for text in [&billing, &store] {
        for raw in ["%63harges", "/x/", "//charges", "/charges/\""] {
            assert!(!text.contains(raw), "raw path {raw:?} in a label:\n{text}");
        }
    }
}

/// `GET /metrics` from `workload`'s sidecar admin listener (address from its ready file).
fn scrape_metrics(up: &Up, workload: &str) -> String {
    let admin = up.ready(workload)["admin"]
        .as_str()
        .expect("admin address in the ready file")
        .to_owned();
    let mut stream = TcpStream::connect(&admin).expect("connect to the admin listener");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// reporting -> store is not refused: store has only an audit-mode policy, which logs.
fn assert_audit_logs_but_does_not_refuse(up: &Up) {
    let out = up.exec(
        "reporting",
        &[
            "curl",
            "-sS",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
            "http://store/checkout",
        ],
    );
    assert_eq!(curl_json(&out).0, 200);
    let line = up.wait_for_line(
        "audit: policy in audit mode would decide otherwise",
        Duration::from_secs(10),
    );
    assert!(line.contains("default/store-checkout-audit"), "{line}");
}

#[test]
fn only_billing_may_reach_stripe_through_https_proxy() {
    let up = Up::start(&example("store-billing"));
    let ca = up.state.path().join("demo/stripe-ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let curl = [
        "curl",
        "-sS",
        "-v",
        "--cacert",
        ca,
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        "https://api.stripe.com/v1/charges",
    ];

    let out = up.exec("billing", &curl);
    let (code, json) = curl_json(&out);
    assert_eq!(code, 200, "{json} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json["object"], "charge");
    assert!(
        json["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ch_demo_")),
        "{json}"
    );

    let out = up.exec("store", &curl);
    assert!(!out.status.success(), "store reached stripe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CONNECT tunnel failed, response 403"),
        "{stderr}"
    );
    let line = up.wait_for_line(decision_id_header(&stderr), Duration::from_secs(10));
    assert!(
        line.contains("[store/proxy]")
            && line.contains("egress denied by policy")
            && line.contains("api.stripe.com"),
        "{line}"
    );

    assert_plain_http_egress_is_refused_in_the_body(&up);
}

/// The `x-meshwork-decision-id` response header in `curl -v` output.
fn decision_id_header(stderr: &str) -> &str {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("< x-meshwork-decision-id: "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no decision id header: {stderr}"))
}

fn assert_plain_http_egress_is_refused_in_the_body(up: &Up) {
    let url = "http://api.stripe.com/v1/charges";
    let out = up.exec("store", &["curl", "-sS", "-w", "\n%{http_code}", url]);
    let (code, json) = curl_json(&out);
    let got = (code, json["error"].as_str(), json["kind"].as_str());
    assert_eq!(
        got,
        (403, Some("egress_denied"), Some("default_deny")),
        "{json}"
    );
}

/// One HTTP/1.1 keep-alive connection from a plain TCP client to a sidecar's outbound
/// listener. Every request goes over the same socket; a closed socket fails the test.
struct KeptAlive {
    reader: BufReader<TcpStream>,
}

impl KeptAlive {
    fn open(up: &Up, workload: &str) -> KeptAlive {
        let outbound = up.ready(workload)["outbound"]
            .as_str()
            .expect("outbound")
            .to_owned();
        let stream = TcpStream::connect(outbound).expect("connect to the sidecar");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        KeptAlive {
            reader: BufReader::new(stream),
        }
    }

    /// `POST /charges` (origin-form, routed by `Host: billing`); the status code.
    fn charge(&mut self) -> u16 {
        let request = "POST /charges HTTP/1.1\r\nHost: billing\r\nContent-Length: 0\r\n\r\n";
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("the kept-alive connection was closed");
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let (mut length, mut chunked) = (0, false);
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().expect("content-length"),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => assert!(!value.eq_ignore_ascii_case("close"), "{line}"),
                _ => {}
            }
        }
        if chunked {
            self.skip_chunks();
        } else {
            self.skip(length);
        }
        status
    }

    /// One CRLF-terminated line, without the CRLF.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read from sidecar");
        assert!(n > 0, "the sidecar closed the kept-alive connection");
        line.trim_end_matches(['\r', '\n']).to_owned()
    }

    fn skip(&mut self, n: usize) {
        let mut body = vec![0; n];
        self.reader.read_exact(&mut body).expect("response body");
    }

    fn skip_chunks(&mut self) {
        loop {
            let size = self.line();
            let size = size.split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            self.skip(size);
            self.line();
            if size == 0 {
                return;
            }
        }
    }
}

/// A copy of the example to edit while it runs.
pub(super) fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(example("store-billing"))
        .expect("example")
        .flatten()
    {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

pub(super) const OPEN_CHARGES: &str = "apiVersion: meshwork.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: billing-charges}
spec:
  targetService: billing
  action: ALLOW
  rules:
    - from: [{spiffeIdPrefix: 'spiffe://meshwork.local/ns/default/'}]
      to: [{methods: [POST], paths: [{exact: /charges}]}]
";

fn explain(dir: &Path, state: Option<&Path>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = meshwork();
    cmd.args(["policy", "explain", "--dir"]).arg(dir);
    if let Some(state) = state {
        cmd.arg("--state-dir").arg(state);
    }
    let out = cmd.args(args).output().expect("run explain");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn policy_edits_apply_live_and_invalid_edits_keep_the_old_policies() {
    let dir = example_copy();
    let up = Up::start(dir.path());
    let billing_sidecar = up.ready("billing");
    assert_eq!(charge(&up, "reporting", "/charges").0, 403);
    let reporting = ["--from", "reporting", "--to", "billing", "POST", "/charges"];
    let (code, text) = explain(dir.path(), Some(up.state.path()), &reporting);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("match the running mesh"), "{text}");
    // The route rule comes from the running control plane's snapshot (routes.yaml).
    assert!(
        text.contains("route     HTTPRoute/default/billing rule charges: timeout 3s"),
        "{text}"
    );
    // billing's sidecar decides `--to billing`: its admin endpoint names the same policies.
    assert!(
        text.contains("running sidecar billing has policy hash")
            && text.contains("(matches the files; same as the control plane"),
        "{text}"
    );

    // One keep-alive connection to reporting's sidecar, kept open across the edit:
    // it sees the new decision without any reconnect or sidecar restart.
    let mut kept = KeptAlive::open(&up, "reporting");
    assert_eq!(kept.charge(), 403);

    let policies = dir.path().join("policies.yaml");
    std::fs::write(&policies, OPEN_CHARGES).expect("write");
    eventually(
        "reporting to be allowed after the edit",
        Duration::from_secs(30),
        || charge(&up, "reporting", "/charges").0 == 201,
    );
    eventually(
        "the kept-alive connection to get the new decision",
        Duration::from_secs(10),
        || kept.charge() == 201,
    );
    up.wait_for_line("policies reloaded and published", Duration::from_secs(10));
    assert_eq!(
        up.ready("billing"),
        billing_sidecar,
        "the sidecar kept its listeners: no restart"
    );
    let (code, text) = explain(dir.path(), Some(up.state.path()), &reporting);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("match the running mesh"), "{text}");
    assert!(
        text.contains("(matches the files; same as the control plane"),
        "the sidecar enforces the edited policies: {text}"
    );

    std::fs::write(
        &policies,
        OPEN_CHARGES.replace("exact: /charges", "exact: charges"),
    )
    .expect("write");
    let line = up.wait_for_line("resources not reloaded", Duration::from_secs(30));
    assert!(line.contains("[control]"), "{line}");
    up.wait_for_line("policies.yaml:9:", Duration::from_secs(10));
    assert_eq!(
        charge(&up, "reporting", "/charges").0,
        201,
        "the previous policies keep serving"
    );
}

#[test]
fn policy_test_passes_and_a_wrong_expectation_fails_with_a_diff() {
    let tests = example("store-billing").join("policy-tests.yaml");
    let out = meshwork()
        .args(["policy", "test"])
        .arg(&tests)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 failed"), "{text}");
    assert!(
        text.contains("ok      allow   allow  store: /x/../charges"),
        "{text}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = std::fs::read_to_string(&tests).expect("read").replacen(
        "path: /charges\n    expect: deny",
        "path: /charges\n    expect: allow",
        1,
    );
    let wrong_file = dir.path().join("wrong.yaml");
    std::fs::write(&wrong_file, wrong).expect("write");
    let out = policy_test(&wrong_file);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL    allow   deny   reporting may not create charges"),
        "{text}"
    );
    assert!(text.contains("  reporting may not create charges\n  - allow\n  + deny (policy default/billing-reporting-read-only rule 0"), "{text}");

    std::fs::write(&wrong_file, "cases: [{name: x, expect: perhaps}]").expect("write");
    let out = policy_test(&wrong_file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrong.yaml:1:"),
        "{out:?}"
    );
}

fn policy_test(file: &Path) -> std::process::Output {
    let dir = example("store-billing");
    meshwork()
        .args(["policy", "test"])
        .arg(file)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run")
}

#[test]
fn policy_explain_names_the_deciding_rule_from_files() {
    let dir = example("store-billing");
    let (code, text) = explain(
        &dir,
        None,
        &[
            "--from",
            "store",
            "--to",
            "billing",
            "POST",
            "/x/../charges",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("decision  allow (explicit_allow)")
            && text.contains("policy    default/billing-charges"),
        "{text}"
    );
    assert!(
        text.contains("rule      0") && text.contains("normalised to /charges"),
        "{text}"
    );

    let (code, text) = explain(
        &dir,
        None,
        &[
            "--json",
            "--egress",
            "--from",
            "spiffe://meshwork.local/ns/default/sa/billing",
            "api.stripe.com:443",
        ],
    );
    assert_eq!(code, Some(0), "{text}");
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        json["decision"]["reason"]["policy"],
        "default/billing-to-stripe"
    );
    assert_eq!(json["decision"]["reason"]["rule"], 0);
    assert_eq!(json["engine"]["source"], "files");
    assert_eq!(json["engine"]["hash"].as_str().map(str::len), Some(32));
}

#[test]
fn policy_explain_names_the_route_rule_or_the_default_route() {
    let dir = example("store-billing");
    let ask = |method: &str, path: &str| {
        explain(
            &dir,
            None,
            &["--from", "store", "--to", "billing", method, path],
        )
        .1
    };
    // The HTTPRoute of routes.yaml, element-wise on /charges, after normalisation.
    let rule = "route     HTTPRoute/default/billing rule charges: timeout 3s, per try 1s, 2 retries on 502, 503, 504 (backoff 25ms up to 250ms)\n";
    for path in ["/charges", "/charges/42", "/x/../charges"] {
        let text = ask("POST", path);
        assert!(text.contains(rule), "{path}: {text}");
    }
    for path in ["/chargesX", "/healthz"] {
        let text = ask("GET", path);
        assert!(
            text.contains("route     default route (no timeout, no retries)\n"),
            "{path}: {text}"
        );
    }
    let (_, text) = explain(
        &dir,
        None,
        &[
            "--json",
            "--from",
            "store",
            "--to",
            "billing",
            "GET",
            "/charges/1",
        ],
    );
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        json["route"]["rule"],
        "HTTPRoute/default/billing rule charges"
    );
    assert_eq!(json["route"]["request_timeout_ms"], 3000);
    assert_eq!(
        json["route"]["retry"]["codes"],
        serde_json::json!([502, 503, 504])
    );
}

#[test]
fn policy_explain_exits_1_on_deny_and_2_on_bad_input() {
    let dir = example("store-billing");

    let (code, text) = explain(
        &dir,
        None,
        &["--egress", "--from", "store", "api.stripe.com:443"],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("default deny: no EgressPolicy allows"),
        "{text}"
    );
    let (code, text) = explain(
        &dir,
        None,
        &["--from", "nobody", "--to", "billing", "GET", "/"],
    );
    assert_eq!(code, Some(2), "{text}");
}
