//! The tap: finished requests, handed to whoever watches the admin `GET /tap` stream.
//!
//! The telemetry layer asks [`TapHub::is_tapped`] (one relaxed atomic load) per request and
//! builds nothing more while nobody taps. While someone does, it captures the request
//! headers some tapper listed (and only those; never a body) and, when the response head is
//! ready, publishes a [`Tapped`] to a bounded broadcast queue of [`CAPACITY`] events.
//!
//! Bounded: the queue holds at most [`CAPACITY`] events whatever the readers do. A reader
//! that falls behind (a slow or stalled `/tap` client) loses the oldest events — its stream
//! says how many (`RecvError::Lagged`) — and never slows the data path: publishing never
//! waits. The hub counts what it published and what it evicted before every reader had it
//! (`meshwork_tap_events_lost_total`), so the admin `/metrics` shows a lagging tapper.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::broadcast;

use crate::exposition::{self, Kind};
use crate::label::{Label, MethodLabel};
use crate::metrics::Direction;
use crate::trace_context::TraceId;

/// Events the broadcast queue holds: the memory a tap can pin is this many [`Tapped`]
/// (a few hundred bytes each, plus the listed header values) whatever its readers do.
pub const CAPACITY: usize = 1024;

/// One finished request, as the telemetry layer saw it. Labels are interned; nothing here
/// is a raw path or a body.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// When the response head was ready.
    pub time: SystemTime,
    /// The listener.
    pub direction: Direction,
    /// The mesh service, `[none]` or `[egress]`.
    pub service: Label,
    /// The route template, or `[unmatched]`.
    pub route: Label,
    /// The method.
    pub method: MethodLabel,
    /// The status the caller got.
    pub status: StatusCode,
    /// Inbound: the verified caller; outbound: the peer that answered (`[none]`: none).
    pub peer: Label,
    /// This workload's SPIFFE ID.
    pub own: Label,
    /// From the request head to the response head.
    pub elapsed: Duration,
    /// The decision id of a policy denial.
    pub decision_id: Option<HeaderValue>,
    /// The request's trace id, when tracing is on.
    pub trace_id: Option<TraceId>,
    /// The request headers some tapper listed, in request order.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where finished requests are published to tappers (see the [module docs](self)).
#[derive(Debug)]
pub struct TapHub {
    sender: broadcast::Sender<Arc<Tapped>>,
    /// Open subscriptions: checked (relaxed) on every request.
    taps: AtomicUsize,
    /// The header names each open subscription listed, by subscription id.
    headers: RwLock<Vec<(u64, Vec<HeaderName>)>>,
    next_id: AtomicU64,
    own: Label,
    published: AtomicU64,
    lost: AtomicU64,
}

impl TapHub {
    /// A hub for the workload whose SPIFFE ID is `own`.
    pub fn new(own: &str) -> Arc<TapHub> {
        let (sender, _) = broadcast::channel(CAPACITY);
        Arc::new(TapHub {
            sender,
            taps: AtomicUsize::new(0),
            headers: RwLock::new(Vec::new()),
            next_id: AtomicU64::new(0),
            own: Label::intern(own),
            published: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    /// This workload's SPIFFE ID.
    pub fn own(&self) -> Label {
        self.own
    }

    /// Whether anyone taps: the data path's only cost while nobody does.
    pub fn is_tapped(&self) -> bool {
        // Relaxed: a request finishing while a tap opens may or may not be shown.
        self.taps.load(Ordering::Relaxed) > 0
    }

    /// The fields of `headers` whose names some open tap listed.
    pub fn wanted_headers(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let wanted = self.headers.read().unwrap_or_else(PoisonError::into_inner);
        if wanted.iter().all(|(_, names)| names.is_empty()) {
            return Vec::new();
        }
        headers
            .iter()
            .filter(|(name, _)| wanted.iter().any(|(_, names)| names.contains(name)))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// Hands `event` to every open tap; never waits. An event evicted before every tap
    /// read it is counted as lost.
    pub fn publish(&self, event: Tapped) {
        if self.sender.len() >= CAPACITY {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        if self.sender.send(Arc::new(event)).is_ok() {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new tap, receiving events published from now on, wanting the request headers
    /// `headers`. Closes (and stops costing anything) when dropped.
    pub fn subscribe(self: &Arc<Self>, headers: Vec<HeaderName>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.headers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, headers));
        let receiver = self.sender.subscribe();
        self.taps.fetch_add(1, Ordering::Relaxed);
        Subscription {
            receiver,
            guard: TapGuard {
                hub: Arc::clone(self),
                id,
            },
        }
    }

    /// Appends the tap's counters to an admin `/metrics` answer (OpenMetrics text).
    pub fn encode_text(&self, out: &mut String) {
        exposition::family(
            out,
            "meshwork_tap_events",
            Kind::Counter,
            "Finished requests published to admin /tap streams (only while someone taps)",
        );
        let published = self.published.load(Ordering::Relaxed);
        exposition::sample(out, "meshwork_tap_events_total", &[], published);
        exposition::family(
            out,
            "meshwork_tap_events_lost",
            Kind::Counter,
            "Tap events evicted from the bounded queue before every tapper read them (a tapper fell behind)",
        );
        let lost = self.lost.load(Ordering::Relaxed);
        exposition::sample(out, "meshwork_tap_events_lost_total", &[], lost);
        exposition::family(
            out,
            "meshwork_tap_queued_events",
            Kind::Gauge,
            "Tap events held for tappers that have not read them yet (at most the queue capacity, 1024)",
        );
        let queued = self.sender.len();
        exposition::sample(out, "meshwork_tap_queued_events", &[], queued);
        exposition::family(out, "meshwork_taps", Kind::Gauge, "Open admin /tap streams");
        let taps = self.taps.load(Ordering::Relaxed);
        exposition::sample(out, "meshwork_taps", &[], taps);
    }
}

/// One open tap: its receiver, and the guard that closes it when dropped.
#[derive(Debug)]
pub struct Subscription {
    /// Events published since the subscription opened.
    pub receiver: broadcast::Receiver<Arc<Tapped>>,
    /// Closes the tap when dropped.
    pub guard: TapGuard,
}

/// Unregisters a tap (its count and header names) when dropped.
#[derive(Debug)]
pub struct TapGuard {
    hub: Arc<TapHub>,
    id: u64,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.hub.taps.fetch_sub(1, Ordering::Relaxed);
        self.hub
            .headers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::label::NONE;

    fn event(hub: &TapHub) -> Tapped {
        Tapped {
            time: SystemTime::now(),
            direction: Direction::Outbound,
            service: Label::intern("billing"),
            route: Label::intern("/charges"),
            method: MethodLabel::Get,
            status: StatusCode::OK,
            peer: NONE,
            own: hub.own(),
            elapsed: Duration::from_millis(1),
            decision_id: None,
            trace_id: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn only_listed_headers_and_only_while_tapped() {
        let hub = TapHub::new("spiffe://meshwork.local/ns/default/sa/store");
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("r1"));
        headers.insert("authorization", HeaderValue::from_static("secret"));
        assert!(!hub.is_tapped());
        let plain = hub.subscribe(Vec::new());
        assert!(hub.is_tapped());
        assert!(hub.wanted_headers(&headers).is_empty());
        let listing = hub.subscribe(vec![HeaderName::from_static("x-request-id")]);
        let wanted = hub.wanted_headers(&headers);
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].0, "x-request-id");
        drop(listing);
        assert!(hub.wanted_headers(&headers).is_empty());
        drop(plain);
        assert!(!hub.is_tapped());
    }

    #[test]
    fn a_reader_that_falls_behind_loses_the_oldest_and_the_queue_stays_bounded() {
        let hub = TapHub::new("spiffe://meshwork.local/ns/default/sa/store");
        let mut stalled = hub.subscribe(Vec::new());
        let total = CAPACITY + 10;
        for _ in 0..total {
            hub.publish(event(&hub));
        }
        assert_eq!(hub.sender.len(), CAPACITY);
        assert_eq!(hub.lost.load(Ordering::Relaxed), 10);
        assert_eq!(hub.published.load(Ordering::Relaxed), total as u64);
        match stalled.receiver.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert!(stalled.receiver.try_recv().is_ok());
    }
}
