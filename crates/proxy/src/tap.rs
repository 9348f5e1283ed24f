//! The tap: finished requests, handed to whoever watches the admin `GET /tap` stream.
//!
//! The telemetry layer asks [`TapHub::is_tapped`] (one relaxed atomic load) per request and
//! builds nothing more while nobody taps. While someone does, it captures the request
//! headers some tapper listed (and only those; never a body; no lock is taken unless a
//! tap lists headers, [`TapHub::lists_headers`]) and, when the response head is ready,
//! publishes a [`Tapped`] to a bounded broadcast queue of [`CAPACITY`] events (while only
//! denied-only taps are open, only denials are published).
//!
//! Bounded: the queue holds at most [`CAPACITY`] events whatever the readers do, each with
//! at most [`MAX_HEADER_VALUES`] header values of at most [`MAX_HEADER_VALUE_BYTES`] bytes
//! plus a 3-byte `…` marking a cut ([`capture`]; values are copied, never sharing the
//! request's buffers): a stalled tapper pins at most 1024 × 16 × 259 bytes ≈ 4.1 MiB of
//! header values, plus a few hundred bytes of labels per event. The bytes of header values
//! held are counted (`meshwork_tap_queued_header_bytes`). A reader
//! that falls behind (a slow or stalled `/tap` client) loses the oldest events — its stream
//! says how many (`RecvError::Lagged`) — and never slows the data path: publishing never
//! waits. The hub counts what it published and what it evicted before every reader had it
//! (`meshwork_tap_events_lost_total`), so the admin `/metrics` shows a lagging tapper.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::broadcast;

use crate::denial::Denied;
use crate::exposition::{self, Kind};
use crate::label::{Label, MethodLabel};
use crate::metrics::Direction;
use crate::trace_context::TraceId;

/// Events the broadcast queue holds: the memory a tap can pin is this many [`Tapped`]
/// (a few hundred bytes each, plus the listed header values) whatever its readers do.
pub const CAPACITY: usize = 1024;

/// Header values one event carries, at most.
pub const MAX_HEADER_VALUES: usize = 16;

/// Bytes of one captured header value, at most (longer ones are cut and end in `…`).
pub const MAX_HEADER_VALUE_BYTES: usize = 256;

/// What marks a cut value.
const CUT: &str = "…";

/// One finished request, as the telemetry layer saw it. Labels are interned; nothing here
/// is a raw path or a body.
#[derive(Debug)]
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
    /// The policy denial, when it was one (its policy and rule only when this sidecar
    /// refused; a caller's side saw just the peer's 403 and its decision id).
    pub denied: Option<Denied>,
    /// The request's trace id, when tracing is on.
    pub trace_id: Option<TraceId>,
    /// The request headers some tapper listed, in request order ([`capture`]d).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A published [`Tapped`] while queued: gives back its header bytes to the hub's count
/// when the queue (and every reader) lets go of it.
#[derive(Debug)]
pub struct Queued {
    tapped: Tapped,
    bytes: usize,
    held: Arc<AtomicUsize>,
}

impl std::ops::Deref for Queued {
    type Target = Tapped;

    fn deref(&self) -> &Tapped {
        &self.tapped
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A copy of `value` of at most [`MAX_HEADER_VALUE_BYTES`] bytes, cut at a UTF-8 character
/// boundary and ending in `…` when it was longer. A copy, so that it never keeps the
/// request's read buffer alive.
pub fn capture(value: &HeaderValue) -> HeaderValue {
    let bytes = value.as_bytes();
    if bytes.len() <= MAX_HEADER_VALUE_BYTES {
        return HeaderValue::from_bytes(bytes).unwrap_or_else(|_| value.clone());
    }
    let mut end = MAX_HEADER_VALUE_BYTES;
    // Back off continuation bytes (10xxxxxx): at most 3 for UTF-8.
    while end > 0 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    let mut cut = Vec::with_capacity(end + CUT.len());
    cut.extend_from_slice(&bytes[..end]);
    cut.extend_from_slice(CUT.as_bytes());
    // invariant: a prefix of a valid value plus UTF-8 bytes (obs-text) is a valid value;
    // should that ever fail, an empty value is the safe outcome.
    HeaderValue::from_bytes(&cut).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Where finished requests are published to tappers (see the [module docs](self)).
#[derive(Debug)]
pub struct TapHub {
    sender: broadcast::Sender<Arc<Queued>>,
    /// Open subscriptions: checked (relaxed) on every request.
    taps: AtomicUsize,
    /// Open subscriptions that want allowed requests too (not `denied=true`).
    allowed_taps: AtomicUsize,
    /// Open subscriptions that listed headers: no lock is taken while this is 0.
    header_taps: AtomicUsize,
    /// Bytes of header values held by queued events.
    held: Arc<AtomicUsize>,
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
            allowed_taps: AtomicUsize::new(0),
            header_taps: AtomicUsize::new(0),
            held: Arc::new(AtomicUsize::new(0)),
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

    /// Whether an open tap wants allowed requests (else only denials are published).
    pub fn wants_allowed(&self) -> bool {
        self.allowed_taps.load(Ordering::Relaxed) > 0
    }

    /// Whether an open tap listed headers (else [`TapHub::wanted_headers`] finds none).
    pub fn lists_headers(&self) -> bool {
        self.header_taps.load(Ordering::Relaxed) > 0
    }

    /// The fields of `headers` whose names some open tap listed, [`capture`]d, at most
    /// [`MAX_HEADER_VALUES`]. Takes no lock while no tap lists headers.
    pub fn wanted_headers(&self, headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        if !self.lists_headers() {
            return Vec::new();
        }
        let wanted = self.headers.read().unwrap_or_else(PoisonError::into_inner);
        headers
            .iter()
            .filter(|(name, _)| wanted.iter().any(|(_, names)| names.contains(name)))
            .take(MAX_HEADER_VALUES)
            .map(|(name, value)| (name.clone(), capture(value)))
            .collect()
    }

    /// Hands `event` to every open tap; never waits. An event evicted before every tap
    /// read it is counted as lost.
    pub fn publish(&self, event: Tapped) {
        if self.sender.len() >= CAPACITY {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = event.headers.iter().map(|(_, v)| v.len()).sum();
        self.held.fetch_add(bytes, Ordering::Relaxed);
        let queued = Queued {
            tapped: event,
            bytes,
            held: Arc::clone(&self.held),
        };
        if self.sender.send(Arc::new(queued)).is_ok() {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new tap, receiving events published from now on, wanting the request headers
    /// `headers`. Closes (and stops costing anything) when dropped.
    pub fn subscribe(
        self: &Arc<Self>,
        headers: Vec<HeaderName>,
        denied_only: bool,
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let lists = !headers.is_empty();
        self.headers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, headers));
        let receiver = self.sender.subscribe();
        self.taps.fetch_add(1, Ordering::Relaxed);
        if !denied_only {
            self.allowed_taps.fetch_add(1, Ordering::Relaxed);
        }
        if lists {
            self.header_taps.fetch_add(1, Ordering::Relaxed);
        }
        Subscription {
            receiver,
            guard: TapGuard {
                hub: Arc::clone(self),
                id,
                denied_only,
                lists,
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
        exposition::family(
            out,
            "meshwork_tap_queued_header_bytes",
            Kind::Gauge,
            "Bytes of request header values held by queued tap events (at most 1024 x 16 x 259)",
        );
        let held = self.held.load(Ordering::Relaxed);
        exposition::sample(out, "meshwork_tap_queued_header_bytes", &[], held);
        exposition::family(out, "meshwork_taps", Kind::Gauge, "Open admin /tap streams");
        let taps = self.taps.load(Ordering::Relaxed);
        exposition::sample(out, "meshwork_taps", &[], taps);
    }
}

/// One open tap: its receiver, and the guard that closes it when dropped.
#[derive(Debug)]
pub struct Subscription {
    /// Events published since the subscription opened.
    pub receiver: broadcast::Receiver<Arc<Queued>>,
    /// Closes the tap when dropped.
    pub guard: TapGuard,
}

/// Unregisters a tap (its count and header names) when dropped.
#[derive(Debug)]
pub struct TapGuard {
    hub: Arc<TapHub>,
    id: u64,
    denied_only: bool,
    lists: bool,
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        self.hub.taps.fetch_sub(1, Ordering::Relaxed);
        if !self.denied_only {
            self.hub.allowed_taps.fetch_sub(1, Ordering::Relaxed);
        }
        if self.lists {
            self.hub.header_taps.fetch_sub(1, Ordering::Relaxed);
        }
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
            denied: None,
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
        let plain = hub.subscribe(Vec::new(), false);
        assert!(hub.is_tapped() && !hub.lists_headers());
        assert!(hub.wanted_headers(&headers).is_empty());
        let listing = hub.subscribe(vec![HeaderName::from_static("x-request-id")], false);
        let wanted = hub.wanted_headers(&headers);
        assert_eq!(wanted.len(), 1);
        assert_eq!(wanted[0].0, "x-request-id");
        assert!(hub.lists_headers());
        drop(listing);
        assert!(!hub.lists_headers());
        assert!(hub.wanted_headers(&headers).is_empty());
        assert!(hub.wants_allowed());
        drop(plain);
        assert!(!hub.is_tapped());
        let denials = hub.subscribe(Vec::new(), true);
        assert!(hub.is_tapped() && !hub.wants_allowed());
        drop(denials);
    }

    #[test]
    fn a_reader_that_falls_behind_loses_the_oldest_and_the_queue_stays_bounded() {
        let hub = TapHub::new("spiffe://meshwork.local/ns/default/sa/store");
        let mut stalled = hub.subscribe(Vec::new(), false);
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

    #[test]
    fn captured_values_are_cut_at_a_character_boundary_and_marked() {
        let short = HeaderValue::from_static("r-1");
        assert_eq!(capture(&short), short);
        let exact = HeaderValue::from_str(&"a".repeat(MAX_HEADER_VALUE_BYTES)).unwrap();
        assert_eq!(capture(&exact), exact);
        let long = HeaderValue::from_str(&"a".repeat(5000)).unwrap();
        let cut = capture(&long);
        assert_eq!(cut.len(), MAX_HEADER_VALUE_BYTES + CUT.len());
        assert!(cut.as_bytes().ends_with(CUT.as_bytes()));
        // 255 ASCII bytes then 2-byte characters: byte 256 is inside one, so it goes.
        let mut text = "a".repeat(MAX_HEADER_VALUE_BYTES - 1);
        text.push_str(&"é".repeat(10));
        let cut = capture(&HeaderValue::from_bytes(text.as_bytes()).unwrap());
        let cut = std::str::from_utf8(cut.as_bytes()).unwrap();
        assert_eq!(cut, format!("{}…", "a".repeat(MAX_HEADER_VALUE_BYTES - 1)));
    }

    #[test]
    fn events_hold_at_most_sixteen_capped_values_and_give_their_bytes_back() {
        let hub = TapHub::new("spiffe://meshwork.local/ns/default/sa/store");
        let mut headers = HeaderMap::new();
        let big = HeaderValue::from_str(&"x".repeat(4096)).unwrap();
        for _ in 0..40 {
            headers.append("x-pad", big.clone());
        }
        let mut tap = hub.subscribe(vec![HeaderName::from_static("x-pad")], false);
        let wanted = hub.wanted_headers(&headers);
        assert_eq!(wanted.len(), MAX_HEADER_VALUES);
        let mut tapped = event(&hub);
        tapped.headers = wanted;
        hub.publish(tapped);
        let bound = MAX_HEADER_VALUES * (MAX_HEADER_VALUE_BYTES + CUT.len());
        assert_eq!(hub.held.load(Ordering::Relaxed), bound);
        // Read by its only reader, the event leaves the queue and gives its bytes back.
        drop(tap.receiver.try_recv().unwrap());
        assert_eq!(hub.held.load(Ordering::Relaxed), 0);
    }
}
