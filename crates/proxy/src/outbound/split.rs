//! Traffic splitting: a request whose route rule has weighted `backendRefs` goes to one of
//! those services, drawn by weight (a canary gets its share); without backends it stays
//! with the service it named. The choice is written into [`Classified::backend`] for the
//! balancer. Synchronous: the layer adds no future of its own.
//!
//! The layer sits above the route's retries, so the backend is drawn once per request:
//! every retry of it goes to the same service (a replay clones the request's extensions,
//! the choice included), as with Envoy's weighted clusters and Linkerd. Drawn per try, a
//! failing canary's requests would mostly be retried onto the stable backend and its
//! errors hidden.

use std::task::{Context, Poll};

use http::Request;
use rand::Rng;
use tower::{Layer, Service};

use super::classify::Classified;
use crate::body::ProxyBody;
use crate::routes::rule::Backend;

/// The backend whose cumulative weight range holds `draw` (in `0..total weight`); `None`
/// when every weight is 0.
pub fn choose(backends: &[Backend], draw: u64) -> Option<&Backend> {
    let mut left = draw;
    backends.iter().find(|backend| {
        let weight = u64::from(backend.weight);
        if left < weight {
            return true;
        }
        left -= weight;
        false
    })
}

/// Draws a backend of `backends` with `rng`: the service it names (`None`: a name that is
/// no mesh service, or every weight 0 — nothing may receive the request).
pub fn draw(backends: &[Backend], rng: &mut impl Rng) -> Option<usize> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    choose(backends, rng.random_range(0..total))?.service
}

/// Tower layer splitting traffic between a rule's backends.
#[derive(Debug, Clone, Copy, Default)]
pub struct SplitLayer;

impl<S> Layer<S> for SplitLayer {
    type Service = Split<S>;

    fn layer(&self, inner: S) -> Split<S> {
        Split { inner }
    }
}

/// The service produced by [`SplitLayer`].
#[derive(Debug, Clone)]
pub struct Split<S> {
    inner: S,
}

impl<S> Service<Request<ProxyBody>> for Split<S>
where
    S: Service<Request<ProxyBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        if let Some(classified) = request.extensions_mut().get_mut::<Classified>()
            && let (Some(service), Some(rule)) = (classified.service, classified.rule)
            && let Some(mesh) = classified.table.service_at(service)
        {
            let backends = mesh.traffic().backends(rule);
            if !backends.is_empty() {
                // No backend: the balancer answers that nothing may serve the request.
                classified.backend = draw(backends, &mut rand::rng());
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn backend(service: usize, weight: u32) -> Backend {
        Backend {
            service: Some(service),
            weight,
        }
    }

    #[test]
    fn draws_fall_into_cumulative_weight_ranges() {
        let backends = [backend(0, 9), backend(1, 0), backend(2, 1)];
        assert_eq!(choose(&backends, 0).unwrap().service, Some(0));
        assert_eq!(choose(&backends, 8).unwrap().service, Some(0));
        assert_eq!(choose(&backends, 9).unwrap().service, Some(2));
        assert!(choose(&backends, 10).is_none());
        assert_eq!(draw(&[backend(0, 0)], &mut rand::rng()), None);
    }

    /// Issue 11's acceptance: a 90/10 split observed within ±3 % over 10,000 requests
    /// (at the layer, with a seeded generator; end to end it is the same draw).
    #[test]
    fn a_90_10_split_holds_within_3_percent_over_10000_requests() {
        let backends = [backend(0, 90), backend(1, 10)];
        let mut rng = StdRng::seed_from_u64(11);
        let mut counts = [0u32; 2];
        for _ in 0..10_000 {
            counts[draw(&backends, &mut rng).unwrap()] += 1;
        }
        let canary = f64::from(counts[1]) / 10_000.0;
        assert!((canary - 0.10).abs() <= 0.03, "{counts:?}");
        assert!(
            (f64::from(counts[0]) / 10_000.0 - 0.90).abs() <= 0.03,
            "{counts:?}"
        );
    }
}
