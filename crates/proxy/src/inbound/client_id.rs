//! The header-stamping layer: the application learns who called it from
//! `x-meshwork-client-id`, which only the inbound proxy may set.
//!
//! Every mesh-reserved field the caller sent (`x-meshwork-*`, [`crate::reserved_headers`])
//! is removed first, so a caller cannot claim another identity, then the SPIFFE ID
//! verified in the mTLS handshake is set. Without a verified identity the request is
//! refused (fail closed). Reserved fields in the caller's trailers are removed as the body
//! streams, by the listener's body adaptor (`reserved_headers::inbound_body`).

use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::{HeaderName, HeaderValue, Request};
use tower::{Layer, Service};

use crate::forward_error::ForwardError;
use crate::reserved_headers::strip_reserved;
use crate::server::PeerIdentity;

/// The header carrying the verified caller identity to the application.
pub const CLIENT_ID_HEADER: HeaderName = HeaderName::from_static("x-meshwork-client-id");

/// Removes every caller-sent reserved field (`x-meshwork-client-id` among them, and any
/// `Trailer` declaration of one), then sets the verified [`PeerIdentity`].
pub fn stamp_client_id<B>(request: &mut Request<B>) -> Result<(), ForwardError> {
    strip_reserved(request.headers_mut());
    let peer = request
        .extensions()
        .get::<PeerIdentity>()
        .ok_or(ForwardError::MissingPeerIdentity)?;
    // A parsed SpiffeId is ASCII without control characters, so it is a valid value;
    // refuse rather than forward unstamped if that ever stops being true.
    let value =
        HeaderValue::from_str(peer.0.as_str()).map_err(|_| ForwardError::MissingPeerIdentity)?;
    request.headers_mut().insert(CLIENT_ID_HEADER, value);
    Ok(())
}

/// Tower layer applying [`stamp_client_id`] to every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientIdLayer;

impl<S> Layer<S> for ClientIdLayer {
    type Service = ClientId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientId { inner }
    }
}

/// The service produced by [`ClientIdLayer`].
#[derive(Debug, Clone)]
pub struct ClientId<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ClientId<S>
where
    S: Service<Request<B>, Error = ForwardError>,
{
    type Response = S::Response;
    type Error = ForwardError;
    type Future = Either<S::Future, Ready<Result<S::Response, ForwardError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match stamp_client_id(&mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(error) => Either::Right(future::ready(Err(error))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use identity::SpiffeId;

    use super::*;

    fn store() -> SpiffeId {
        "spiffe://meshwork.local/ns/default/sa/store"
            .parse()
            .unwrap()
    }

    #[test]
    fn the_client_id_header_is_reserved() {
        // Else a caller's own copy would not be stripped before the verified one is set.
        assert!(crate::reserved_headers::is_reserved(&CLIENT_ID_HEADER));
    }

    #[test]
    fn spoofed_header_is_replaced_by_the_verified_identity() {
        let mut request = Request::builder()
            .header(
                "x-meshwork-client-id",
                "spiffe://meshwork.local/ns/default/sa/admin",
            )
            .header("X-Meshwork-Client-Id", "second copy")
            .body(())
            .unwrap();
        request.extensions_mut().insert(PeerIdentity(store()));
        stamp_client_id(&mut request).unwrap();
        let values: Vec<_> = request
            .headers()
            .get_all(&CLIENT_ID_HEADER)
            .iter()
            .collect();
        assert_eq!(values, ["spiffe://meshwork.local/ns/default/sa/store"]);
    }

    #[test]
    fn missing_identity_fails_closed_and_strips_the_header() {
        let mut request = Request::builder()
            .header(
                "x-meshwork-client-id",
                "spiffe://meshwork.local/ns/default/sa/admin",
            )
            .body(())
            .unwrap();
        let error = stamp_client_id(&mut request).unwrap_err();
        assert!(matches!(error, ForwardError::MissingPeerIdentity));
        assert!(request.headers().get(&CLIENT_ID_HEADER).is_none());
    }

    #[tokio::test]
    async fn layer_stamps_before_calling_inner() {
        use tower::ServiceExt;
        let inner = tower::service_fn(|request: Request<()>| async move {
            let value = request.headers()[&CLIENT_ID_HEADER]
                .to_str()
                .unwrap()
                .to_owned();
            Ok::<_, ForwardError>(value)
        });
        let mut request = Request::new(());
        request.extensions_mut().insert(PeerIdentity(store()));
        let seen = ClientIdLayer.layer(inner).oneshot(request).await.unwrap();
        assert_eq!(seen, store().as_str());
    }
}
