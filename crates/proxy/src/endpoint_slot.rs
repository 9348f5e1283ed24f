//! Per-endpoint state: one [`EndpointSlot`] per endpoint of a mesh service, made by the route
//! table and carried across snapshots that keep the endpoint, read and updated by the
//! balancer on every request.
//!
//! - [`load`]: the peak-EWMA load power-of-two-choices compares (its in-flight count is the
//!   circuit breaker's `maxPendingRequests`).
//! - [`open_requests`]: requests open until their response body ends (`maxRequests`).
//!
//! Below both the route table (`routes`, which owns the slots) and the outbound balancer
//! (which reads them): neither imports the other for it.

pub mod load;
pub mod open_requests;

use std::sync::atomic::{AtomicU32, Ordering};

use crate::forward_error::OverloadLimit;
use crate::label::Label;
use crate::resilience::EndpointKey;
use load::PeakEwma;

/// One endpoint of a mesh service and the state balancing keeps about it.
#[derive(Debug)]
pub struct EndpointSlot {
    key: EndpointKey,
    peer: Label,
    load: PeakEwma,
    /// Requests sent and not yet ended (`maxRequests`).
    open: AtomicU32,
}

impl EndpointSlot {
    /// A fresh slot for the endpoint `key`.
    pub fn new(key: EndpointKey) -> Self {
        EndpointSlot {
            peer: Label::intern(key.identity.as_str()),
            key,
            load: PeakEwma::default(),
            open: AtomicU32::new(0),
        }
    }

    /// Where it is and who must answer.
    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    /// The endpoint's identity as a metric label (interned once, with the slot).
    pub fn peer(&self) -> Label {
        self.peer
    }

    /// The endpoint's load.
    pub fn load(&self) -> &PeakEwma {
        &self.load
    }

    /// Requests sent to the endpoint whose response has not ended.
    pub fn open_requests(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Opens (`1`) or closes (`-1`) a request; only [`open_requests`] calls it.
    fn open_requests_add(&self, delta: i32) {
        match delta {
            1 => self.open.fetch_add(1, Ordering::Relaxed),
            _ => self.open.fetch_sub(1, Ordering::Relaxed),
        };
    }

    /// Which cap, if any, is full: `(pending, requests)` are the service's caps.
    pub fn full(&self, (max_pending, max_requests): (u32, u32)) -> Option<(OverloadLimit, u32)> {
        if self.load.in_flight() >= max_pending {
            Some((OverloadLimit::Pending, max_pending))
        } else if self.open_requests() >= max_requests {
            Some((OverloadLimit::Requests, max_requests))
        } else {
            None
        }
    }
}
