#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;

use super::*;

/// rotel 0.0.1a15's output for one batch, with its JSON log lines around it, a second
/// resource, a link and a string broken over lines (verbatim; time stamps shortened).
const SAMPLE: &str = r#"{"v":0,"name":"rotel","msg":"Starting Rotel.","level":30}
ResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(t)
     -> k8s: Bool(true)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope meshwork 1
Span #0
    Trace ID       : 5b8efff798038103d269b633813fc60c
    Parent ID      : eee19b7ec3c1b173
    ID             : eee19b7ec3c1b174
    Name           : GET /x
    Kind           : SPAN_KIND_SERVER
Start time: 1544712660000000000
End time: 1544712661000000000
    Status code    : STATUS_CODE_ERROR
    Status message : denied
Attributes:
     -> http.route: Str(/charges/{id})
     -> http.response.status_code: Int(403)
     -> ok: Bool(false)
     -> ratio: Double(0.5)
     -> multi: Str(a
b: c)
     -> arr: Slice(Str(x), Int(2))
Events:
SpanEvent #0
     -> Name: retry
     -> Timestamp: 1544712660500000000
     -> DroppedAttributesCount: 0
     -> Attributes::
          -> attempt: Int(2)
          -> reason: Str(503)
SpanEvent #1
     -> Name: noattrs
     -> Timestamp: 1544712660600000000
     -> DroppedAttributesCount: 0
Span #1
    Trace ID       : 5b8efff798038103d269b633813fc60c
    Parent ID      : 
    ID             : eee19b7ec3c1b175
    Name           : root
    Kind           : SPAN_KIND_CLIENT
Start time: 1544712660000000000
End time: 1544712661000000000
Links:
SpanLink #0
     -> Trace ID: 5b8efff798038103d269b633813fc60c
     -> ID: eee19b7ec3c1b175
     -> TraceState: 
     -> DroppedAttributesCount: 0
{"v":0,"name":"rotel","msg":"something else","level":40}
ResourceSpans #1
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(b)
ScopeSpans #0
ScopeSpans SchemaURL: 
InstrumentationScope y 
Span #0
    Trace ID       : 5b8efff798038103d269b633813fc60d
    Parent ID      : 
    ID             : eee19b7ec3c1b177
    Name           : ok
    Kind           : SPAN_KIND_INTERNAL
Start time: 1
End time: 2
    Status code    : STATUS_CODE_OK
    Status message : 
"#;

#[test]
fn parses_the_detailed_debug_output() {
    let spans = parse_spans(SAMPLE).unwrap();
    assert_eq!(spans.len(), 3);
    let s = &spans[0];
    assert_eq!(s.service_name(), Some("t"));
    assert_eq!(s.resource.get("k8s"), Some(&AttrValue::Bool(true)));
    assert_eq!(s.scope, "meshwork");
    assert_eq!(s.trace_id, "5b8efff798038103d269b633813fc60c");
    assert_eq!(s.parent_span_id.as_deref(), Some("eee19b7ec3c1b173"));
    assert_eq!(s.span_id, "eee19b7ec3c1b174");
    assert_eq!(s.name, "GET /x");
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.status_code, StatusCode::Error);
    assert_eq!(s.status_message.as_deref(), Some("denied"));
    assert_eq!(s.attr_str("http.route"), Some("/charges/{id}"));
    assert_eq!(s.attr_i64("http.response.status_code"), Some(403));
    assert_eq!(s.attributes["ok"], AttrValue::Bool(false));
    assert_eq!(s.attributes["ratio"], AttrValue::Double(0.5));
    assert_eq!(s.attr_str("multi"), Some("a\nb: c"));
    assert_eq!(
        s.attributes["arr"],
        AttrValue::Other("Slice(Str(x), Int(2))".into())
    );
    let names: Vec<&str> = s.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["retry", "noattrs"]);
    assert_eq!(s.events[0].attributes["attempt"], AttrValue::Int(2));
    assert_eq!(
        s.events[0].attributes["reason"],
        AttrValue::Str("503".into())
    );
    assert!(s.events[1].attributes.is_empty());

    let root = &spans[1];
    assert_eq!(
        (root.parent_span_id.as_deref(), root.kind),
        (None, SpanKind::Client)
    );
    assert_eq!(
        (root.status_code, root.status_message.as_deref()),
        (StatusCode::Unset, None)
    );
    assert!(root.attributes.is_empty() && root.events.is_empty());
    assert_eq!(root.service_name(), Some("t"));

    let other = &spans[2];
    assert_eq!(other.service_name(), Some("b"));
    assert_eq!(other.resource.get("k8s"), None, "resources do not leak");
    assert_eq!(other.scope, "y");
    assert_eq!(
        (other.kind, other.status_code),
        (SpanKind::Internal, StatusCode::Ok)
    );
    assert_eq!(other.status_message, None);
}

#[test]
fn a_parse_error_names_the_line() {
    let bad = SAMPLE.replace("SPAN_KIND_CLIENT", "SPAN_KIND_SIDEWAYS");
    let err = parse_spans(&bad).unwrap_err();
    let line = bad.lines().position(|l| l.contains("SIDEWAYS")).unwrap() + 1;
    assert_eq!(err.line, line);
    assert!(err.text.contains("SPAN_KIND_SIDEWAYS"), "{err}");
    assert!(err.to_string().contains(&format!("line {line}")), "{err}");

    let err = parse_spans("ResourceSpans #0\nsomething unexpected\n").unwrap_err();
    assert_eq!((err.line, err.text.as_str()), (2, "something unexpected"));
    let err = parse_spans("    Name           : x\n").unwrap_err();
    assert_eq!(err.line, 1, "{err}");
}

#[test]
fn nothing_printed_is_no_spans() {
    assert_eq!(parse_spans("").unwrap(), Vec::new());
    assert_eq!(
        parse_spans("{\"v\":0,\"msg\":\"Starting Rotel.\"}\n").unwrap(),
        Vec::new()
    );
}

fn attr(key: &str, value: serde_json::Value) -> serde_json::Value {
    json!({"key": key, "value": value})
}

/// One server span as OTLP/JSON, as an SDK would send it.
fn one_span() -> serde_json::Value {
    let span = json!({
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": "b7ad6b7169203331",
        "parentSpanId": "00f067aa0ba902b7",
        "name": "POST /charges",
        "kind": 2,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
        "attributes": [
            attr("http.route", json!({"stringValue": "/charges"})),
            attr("http.response.status_code", json!({"intValue": "403"})),
            attr("meshwork.denied", json!({"boolValue": true})),
        ],
        "events": [{
            "timeUnixNano": "1700000000100000000",
            "name": "retry",
            "attributes": [attr("attempt", json!({"intValue": "2"}))],
        }],
        "status": {"code": 2, "message": "denied by default/billing-charges"},
    });
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", json!({"stringValue": "billing"}))]},
        "scopeSpans": [{"scope": {"name": "meshwork"}, "spans": [span]}],
    }]})
}

#[tokio::test]
async fn a_span_sent_over_otlp_http_is_read_back() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    assert!(receiver.spans().unwrap().is_empty());
    let url = format!("{}/v1/traces", receiver.http_endpoint());
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let request = hyper::Request::post(url.as_str())
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(one_span().to_string())))
        .unwrap();
    let response = crate::harness::send_http1(addr, request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    let spans = receiver
        .wait_for_spans(|s| !s.is_empty(), Duration::from_secs(30))
        .unwrap();
    assert_eq!(spans.len(), 1, "{spans:?}");
    let s = &spans[0];
    assert_eq!(s.service_name(), Some("billing"));
    assert_eq!(s.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s.span_id, "b7ad6b7169203331");
    assert_eq!(s.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(
        (s.name.as_str(), s.kind),
        ("POST /charges", SpanKind::Server)
    );
    assert_eq!(s.status_code, StatusCode::Error);
    assert_eq!(
        s.status_message.as_deref(),
        Some("denied by default/billing-charges")
    );
    assert_eq!(s.attr_str("http.route"), Some("/charges"));
    assert_eq!(s.attr_i64("http.response.status_code"), Some(403));
    assert_eq!(s.attributes["meshwork.denied"], AttrValue::Bool(true));
    assert_eq!(s.events.len(), 1);
    assert_eq!(s.events[0].name, "retry");
    assert_eq!(s.events[0].attributes["attempt"], AttrValue::Int(2));
}

#[test]
fn waiting_for_spans_that_never_come_returns_what_came() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let err = receiver
        .wait_for_spans(|s| !s.is_empty(), Duration::from_millis(200))
        .unwrap_err();
    match err {
        OtlpError::Timeout { spans, .. } => assert!(spans.is_empty()),
        other => panic!("{other}"),
    }
}

#[test]
fn dropping_the_receiver_stops_rotel() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let http = receiver.http_endpoint();
    let http = http.trim_start_matches("http://").to_owned();
    drop(receiver);
    assert!(
        std::net::TcpStream::connect(&http).is_err(),
        "rotel still listens on {http}"
    );
}
