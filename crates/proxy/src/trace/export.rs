//! Getting finished spans to the collector: a bounded queue the data path pushes into
//! without waiting, and one task that sends them in batches over OTLP.
//!
//! Not the SDK's `BatchSpanProcessor`: it drops spans when its queue is full without
//! telling anyone but its own log, and the issue wants drops counted in `/metrics`; it also
//! sits behind the SDK tracer, which would pick span ids itself (ours are written into the
//! forwarded headers before the span is finished). The exporters themselves (protobuf
//! encoding, gRPC through tonic, HTTP through hyper) are `opentelemetry-otlp`'s.
//!
//! The exporter dials the collector itself, never through this sidecar's listeners, so its
//! own requests are never traced.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{ExporterBuildError, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{OtlpExport, OtlpProtocol};
use crate::metrics::{ProxyMetrics, SpanDrop};

/// An export request that has not answered by then counts as failed (the OTel default is
/// 10 s; a sidecar's queue should not wait that long behind a dead collector).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans still queued at shutdown get this long to reach the collector (after the export in
/// flight, if any, which [`EXPORT_TIMEOUT`] bounds).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The OTLP/HTTP path for traces.
const TRACES_PATH: &str = "/v1/traces";

/// Where the data path puts finished spans: never waits, counts what it had to drop.
#[derive(Clone)]
pub struct SpanQueue {
    sender: mpsc::Sender<SpanData>,
    metrics: Arc<dyn ProxyMetrics>,
}

impl SpanQueue {
    /// Queues `span` for export, or drops and counts it when the queue is full.
    pub fn push(&self, span: SpanData) {
        if self.sender.try_send(span).is_err() {
            self.metrics.spans_dropped(SpanDrop::QueueFull, 1);
        }
    }
}

/// The export task, to be run until shutdown ([`Exporting::run`]).
pub struct Exporting {
    receiver: mpsc::Receiver<SpanData>,
    exporter: SpanExporter,
    batch_size: usize,
    batch_timeout: Duration,
    metrics: Arc<dyn ProxyMetrics>,
}

/// Builds the exporter `config` names and the queue in front of it. Must run inside a tokio
/// runtime (the gRPC channel connects lazily on it).
pub fn start(
    config: &OtlpExport,
    resource: Vec<KeyValue>,
    metrics: Arc<dyn ProxyMetrics>,
) -> Result<(SpanQueue, Exporting), ExporterBuildError> {
    let mut exporter = build_exporter(config)?;
    exporter.set_resource(
        &Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes(resource)
            .build(),
    );
    // Zero, so the trace families are served from the start.
    metrics.spans_exported(0);
    let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
    let queue = SpanQueue {
        sender,
        metrics: Arc::clone(&metrics),
    };
    let exporting = Exporting {
        receiver,
        exporter,
        batch_size: config.batch_size.max(1),
        batch_timeout: config.batch_timeout,
        metrics,
    };
    Ok((queue, exporting))
}

fn build_exporter(config: &OtlpExport) -> Result<SpanExporter, ExporterBuildError> {
    match config.protocol {
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_http_client(
                opentelemetry_http::hyper::HyperClient::with_default_connector(
                    EXPORT_TIMEOUT,
                    None,
                ),
            )
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(if config.signal_url {
                config.endpoint.clone()
            } else {
                traces_url(&config.endpoint)
            })
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
}

/// The OTLP/HTTP URL for traces: `endpoint` as given when it already ends in `/v1/traces`,
/// else with that path appended (the base-URL rule of `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn traces_url(endpoint: &str) -> String {
    if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_owned()
    } else {
        format!("{}{TRACES_PATH}", endpoint.trim_end_matches('/'))
    }
}

impl Exporting {
    /// Sends batches until `shutdown` is cancelled, then flushes what is queued (bounded by
    /// [`FLUSH_TIMEOUT`]).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                received = self.receiver.recv() => match received {
                    Some(span) => batch.push(span),
                    None => break,
                },
            }
            // Shutdown does not wait for a batch to fill; the spans already taken are flushed.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = self.fill(&mut batch) => {}
            }
            self.send(std::mem::take(&mut batch)).await;
        }
        self.receiver.close();
        while let Ok(span) = self.receiver.try_recv() {
            batch.push(span);
        }
        let flush = async {
            for chunk in batch.chunks(self.batch_size) {
                self.send(chunk.to_vec()).await;
            }
        };
        if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
            tracing::warn!("spans still queued at shutdown were not all exported in time");
        }
    }

    /// Adds to `batch` what arrives within the batch timeout, up to the batch size.
    async fn fill(&mut self, batch: &mut Vec<SpanData>) {
        let deadline = tokio::time::Instant::now() + self.batch_timeout;
        while batch.len() < self.batch_size {
            match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => return,
            }
        }
    }

    async fn send(&self, batch: Vec<SpanData>) {
        let count = batch.len() as u64;
        if count == 0 {
            return;
        }
        // The exporter has its own timeout; this one also bounds its retries, so that one
        // export never holds shutdown longer than EXPORT_TIMEOUT.
        let error = match tokio::time::timeout(EXPORT_TIMEOUT, self.exporter.export(batch)).await {
            Ok(Ok(())) => return self.metrics.spans_exported(count),
            Ok(Err(error)) => error.to_string(),
            Err(_elapsed) => format!("no answer within {EXPORT_TIMEOUT:?}"),
        };
        tracing::warn!(%error, spans = count, "OTLP export failed; spans dropped");
        self.metrics.spans_dropped(SpanDrop::ExportFailed, count);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::metrics::SpanDrop;
    use crate::span_notes::SpanNotes;
    use crate::trace::span::OpenSpan;
    use crate::trace_context::{Sampling, SpanId, TraceContext};

    /// Counts what the exporter reports.
    #[derive(Default)]
    struct Counted(Mutex<(u64, u64, u64)>);

    impl ProxyMetrics for Counted {
        fn spans_exported(&self, count: u64) {
            self.0.lock().unwrap().0 += count;
        }

        fn spans_dropped(&self, reason: SpanDrop, count: u64) {
            let mut counts = self.0.lock().unwrap();
            match reason {
                SpanDrop::QueueFull => counts.1 += count,
                SpanDrop::ExportFailed => counts.2 += count,
            }
        }
    }

    fn span() -> SpanData {
        let context = TraceContext::start(Sampling::Accept);
        let open = OpenSpan::start(
            &context,
            SpanId::random(),
            opentelemetry::trace::SpanKind::Client,
            "GET".into(),
            Vec::new(),
            SpanNotes::default(),
        );
        open.finish(http::StatusCode::OK, None)
    }

    /// An endpoint nothing listens on.
    fn closed() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Counted::default());
        let mut config = OtlpExport::new(closed(), OtlpProtocol::Grpc, "store");
        config.queue_capacity = 2;
        let (queue, _exporting) = start(&config, Vec::new(), metrics.clone()).unwrap();
        for _ in 0..5 {
            queue.push(span());
        }
        assert_eq!(*metrics.0.lock().unwrap(), (0, 3, 0));
    }

    #[tokio::test]
    async fn a_failed_export_drops_and_counts_its_spans() {
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            let metrics = Arc::new(Counted::default());
            let mut config = OtlpExport::new(closed(), protocol, "store");
            config.batch_timeout = Duration::from_millis(10);
            let (queue, exporting) = start(&config, Vec::new(), metrics.clone()).unwrap();
            let stop = CancellationToken::new();
            let task = tokio::spawn(exporting.run(stop.clone()));
            queue.push(span());
            queue.push(span());
            while metrics.0.lock().unwrap().2 < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            stop.cancel();
            task.await.unwrap();
            assert_eq!(*metrics.0.lock().unwrap(), (0, 0, 2), "{protocol}");
        }
    }

    #[test]
    fn http_endpoints_get_the_traces_path_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c/otel/"), "http://c/otel/v1/traces");
    }
}
