//! The outbound stack's telemetry labels, read from the request's [`Classified`] (see the
//! telemetry layer for what each label holds): here, above the telemetry layer, because
//! the classification is the outbound stack's.

use http::Request;

use super::classify::Classified;
use crate::body::ProxyBody;
use crate::label::{EGRESS, Label, NONE, UNMATCHED};
use crate::metrics::Direction;
use crate::telemetry::RequestLabels;

/// Labels an outbound request from its [`Classified`] (the classify layer runs above
/// telemetry).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifiedLabels;

impl RequestLabels for ClassifiedLabels {
    const DIRECTION: Direction = Direction::Outbound;
    const PEER_DENIALS: bool = true;

    /// Service, route and (when known up front) peer of an outbound request, as classified.
    fn labels(&self, request: &Request<ProxyBody>) -> (Label, Label, Option<Label>) {
        let Some(classified) = request.extensions().get::<Classified>() else {
            return (NONE, UNMATCHED, Some(NONE));
        };
        if classified.target.is_err() {
            return (NONE, UNMATCHED, Some(NONE));
        }
        let labels = classified
            .service
            .and_then(|i| classified.table.classifier().labels_at(i));
        match labels {
            Some(labels) => (labels.service(), classified.route, labels.peer()),
            None => (EGRESS, UNMATCHED, Some(NONE)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use http::Response;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::forward_error::ForwardError;
    use crate::metrics::ProxyMetrics;
    use crate::outbound::classify::{Classify, ClassifyLayer};
    use crate::server::Stack;
    use crate::telemetry::test_support::{Recorder, TD, request, routes, seen, through};
    use crate::telemetry::{Telemetry, TelemetryLayer};

    /// The outbound telemetry layer below the classify layer it reads.
    fn outbound(
        metrics: Arc<dyn ProxyMetrics>,
    ) -> impl Layer<Stack, Service = Classify<Telemetry<Stack, ClassifiedLabels>>> + Clone {
        tower::layer::util::Stack::new(
            TelemetryLayer::new(ClassifiedLabels, metrics),
            ClassifyLayer::new(routes()),
        )
    }

    #[tokio::test]
    async fn outbound_requests_carry_the_target_identity_and_never_external_hosts() {
        let recorder = Arc::new(Recorder::default());
        let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
        let layer = outbound(metrics);
        for (method, uri, host, status) in [
            ("POST", "http://billing/charges", None, 201),
            ("GET", "/charges/3", Some("billing"), 200),
            ("POST", "http://pay/pay", None, 200),
            ("GET", "http://store/x", None, 200),
            ("GET", "http://example.com/charges/7", None, 403),
            ("CONNECT", "billing:443", None, 200),
            ("GET", "/no-host", None, 400),
        ] {
            through(layer.clone(), request(method, uri, host, None), status).await;
        }
        let (billing, pay_b, store) = (
            format!("{TD}/billing"),
            format!("{TD}/pay-b"),
            format!("{TD}/store"),
        );
        assert_eq!(
            seen(&recorder),
            [
                (
                    "outbound",
                    "billing",
                    "/charges",
                    "POST",
                    201,
                    billing.as_str()
                ),
                (
                    "outbound",
                    "billing",
                    "/charges/{id}",
                    "GET",
                    200,
                    billing.as_str()
                ),
                // Two identities behind `pay`: the one that answered.
                ("outbound", "pay", "/pay", "POST", 200, pay_b.as_str()),
                (
                    "outbound",
                    "store",
                    "[unmatched]",
                    "GET",
                    200,
                    store.as_str()
                ),
                ("outbound", "[egress]", "[unmatched]", "GET", 403, "[none]"),
                (
                    "outbound",
                    "billing",
                    "[unmatched]",
                    "CONNECT",
                    200,
                    billing.as_str()
                ),
                ("outbound", "[none]", "[unmatched]", "GET", 400, "[none]"),
            ]
        );
    }

    #[tokio::test]
    async fn a_forwarding_error_counts_with_its_status() {
        let recorder = Arc::new(Recorder::default());
        let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
        let layer = outbound(metrics);
        let failing = tower::service_fn(|_: Request<ProxyBody>| {
            std::future::ready(Err::<Response<ProxyBody>, _>(
                ForwardError::PeerUnavailable {
                    service: "pay".to_owned(),
                    reason: "no endpoint answered".to_owned(),
                },
            ))
        });
        let request = request("GET", "http://pay/pay", None, None);
        let failing = crate::server::box_stack(failing);
        assert!(layer.layer(failing).oneshot(request).await.is_err());
        assert_eq!(
            seen(&recorder),
            [("outbound", "pay", "/pay", "GET", 502, "[none]")]
        );
    }
}
