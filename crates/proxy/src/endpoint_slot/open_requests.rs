//! The circuit breaker's `maxRequests`: requests open on an endpoint, from the moment one is
//! sent until its response body ends or is dropped, counted on the endpoint's slot.
//!
//! Why not a semaphore permit (`tower::limit`, or a layer of its own): the count must live
//! as long as the response body, which leaves the stack long before it ends, and the slot
//! already survives snapshots. So the response body carries the count: the wrapper is
//! boxed together with the pooled body (one box, as before), and its drop — at the end of
//! the stream, or when the caller goes away mid-body — gives the place back.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};

use super::EndpointSlot;

/// One open request on an endpoint; dropping it closes it.
pub struct OpenRequest(Arc<EndpointSlot>);

impl OpenRequest {
    /// Opens a request on `slot`.
    pub fn begin(slot: &Arc<EndpointSlot>) -> Self {
        slot.open_requests_add(1);
        OpenRequest(Arc::clone(slot))
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open_requests_add(-1);
    }
}

/// A response body that holds its request open until it ends or is dropped.
pub struct Counted<B> {
    inner: B,
    _open: OpenRequest,
}

impl<B> Counted<B> {
    /// `inner`, holding `open` for as long as it lives.
    pub fn new(inner: B, open: OpenRequest) -> Self {
        Counted { inner, _open: open }
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;
    use crate::resilience::EndpointKey;

    #[tokio::test]
    async fn a_request_is_open_until_its_body_is_read_to_the_end_or_dropped() {
        let key = EndpointKey {
            addr: ([127, 0, 0, 1], 4001).into(),
            identity: "spiffe://meshwork.local/ns/default/sa/billing"
                .parse()
                .unwrap(),
        };
        let slot = Arc::new(EndpointSlot::new(key));
        let body = Counted::new(Full::new(Bytes::from("hi")), OpenRequest::begin(&slot));
        let dropped = Counted::new(Full::new(Bytes::new()), OpenRequest::begin(&slot));
        assert_eq!(slot.open_requests(), 2);
        drop(dropped);
        assert_eq!(slot.open_requests(), 1, "a body dropped mid-way closes it");
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hi");
        assert_eq!(slot.open_requests(), 0, "read to the end and gone");
    }
}
