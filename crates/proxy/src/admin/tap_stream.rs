//! `GET /tap`: an NDJSON stream of [`TapEvent`]s, one line per finished request that passes
//! the tapper's filters, written as it comes (each line is its own body frame, so hyper
//! sends it at once).
//!
//! The stream reads from the tap's bounded broadcast queue ([`crate::tap`]): when it falls
//! behind (the client reads slower than requests finish, or not at all), the oldest events
//! are evicted for it and the next line it gets is a marker, `lost: N` (N events of any
//! kind, filtered or not; the marker's other fields are placeholders: `time` is when it was
//! written, `direction` inbound, strings empty, status 0). It then continues with the
//! oldest event still queued. A client that goes away drops the stream, which closes the
//! tap. The stream ends after `limit` events, or when the sidecar shuts down.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use api::contract::observe::{self, Decision, TapEvent};
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body::Frame;
use http_body_util::StreamBody;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use super::query::TapFilter;
use crate::body::{ProxyBody, boxed};
use crate::label::NONE;
use crate::metrics::Direction;
use crate::tap::{Queued, TapGuard, TapHub, Tapped};

/// The streaming `200` answering `GET /tap` with `filter`, until `shutdown`.
pub fn response(
    hub: &Arc<TapHub>,
    filter: TapFilter,
    shutdown: CancellationToken,
) -> Response<ProxyBody> {
    let denied_only = filter.denied == Some(true);
    let subscription = hub.subscribe(filter.headers.clone(), denied_only);
    let state = TapState {
        receiver: subscription.receiver,
        remaining: filter.limit,
        filter,
        shutdown,
        _guard: subscription.guard,
    };
    let lines = futures_util::stream::unfold(state, next_line);
    let mut response = Response::new(boxed(StreamBody::new(lines)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// One open stream: its place in the queue and what it still wants.
struct TapState {
    receiver: broadcast::Receiver<Arc<Queued>>,
    filter: TapFilter,
    /// Events left before `limit` ends the stream.
    remaining: Option<u64>,
    shutdown: CancellationToken,
    /// Closes the tap when the stream is dropped.
    _guard: TapGuard,
}

type Line = Result<Frame<Bytes>, Infallible>;

/// The next line to send: an event that passes the filters, or a lost-event marker; `None`
/// ends the stream.
async fn next_line(mut state: TapState) -> Option<(Line, TapState)> {
    if state.remaining == Some(0) {
        return None;
    }
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return None,
            received = state.receiver.recv() => received,
        };
        let event = match received {
            Ok(tapped) if state.filter.matches(&tapped) => {
                if let Some(remaining) = &mut state.remaining {
                    *remaining -= 1;
                }
                tap_event(&tapped, &state.filter)
            }
            Ok(_) => continue,
            Err(RecvError::Lagged(lost)) => lost_marker(lost),
            Err(RecvError::Closed) => return None,
        };
        return Some((Ok(Frame::data(ndjson(&event))), state));
    }
}

fn ndjson(event: &TapEvent) -> Bytes {
    // invariant: a TapEvent is strings, numbers and enums; it always serialises.
    let mut line = serde_json::to_vec(event).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn rfc3339(time: SystemTime) -> String {
    OffsetDateTime::from(time)
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn direction(direction: Direction) -> observe::Direction {
    match direction {
        Direction::Inbound => observe::Direction::Inbound,
        Direction::Outbound => observe::Direction::Outbound,
    }
}

/// The contract's form of `tapped`, with the header values `filter` asked for.
fn tap_event(tapped: &Tapped, filter: &TapFilter) -> TapEvent {
    let (caller, callee) = match tapped.direction {
        Direction::Inbound => (tapped.peer, Some(tapped.own)),
        Direction::Outbound => (tapped.own, Some(tapped.peer).filter(|p| *p != NONE)),
    };
    let headers = tapped
        .headers
        .iter()
        .filter(|(name, _)| filter.headers.contains(name))
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let denied = tapped.denied.as_ref();
    TapEvent {
        time: rfc3339(tapped.time),
        direction: direction(tapped.direction),
        caller: caller.as_str().to_owned(),
        callee: callee.map(|c| c.as_str().to_owned()),
        service: tapped.service.as_str().to_owned(),
        method: tapped.method.as_str().to_owned(),
        route: tapped.route.as_str().to_owned(),
        status_code: tapped.status.as_u16(),
        latency_ms: tapped.elapsed.as_secs_f64() * 1000.0,
        decision: match tapped.denied {
            Some(_) => Decision::Deny,
            None => Decision::Allow,
        },
        decision_id: denied.map(|d| String::from_utf8_lossy(d.decision_id.as_bytes()).into_owned()),
        // This sidecar's own denial names them; a peer's, seen outbound, does not.
        policy: denied.and_then(|d| d.policy.clone()),
        rule: denied.and_then(|d| d.rule),
        trace_id: tapped.trace_id.map(|id| id.to_string()),
        headers,
        lost: None,
    }
}

/// The marker line for `lost` events this stream missed.
fn lost_marker(lost: u64) -> TapEvent {
    TapEvent {
        time: rfc3339(SystemTime::now()),
        direction: observe::Direction::Inbound,
        caller: String::new(),
        callee: None,
        service: String::new(),
        method: String::new(),
        route: String::new(),
        status_code: 0,
        latency_ms: 0.0,
        decision: Decision::Allow,
        decision_id: None,
        policy: None,
        rule: None,
        trace_id: None,
        headers: Vec::new(),
        lost: Some(lost),
    }
}
