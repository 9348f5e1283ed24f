//! The trace export counters of [`super::PrometheusMetrics`] (issue 12):
//!
//! - `meshwork_trace_spans_exported_total`: spans the collector accepted;
//! - `meshwork_trace_spans_dropped_total{reason}`: spans lost, because the export queue was
//!   full (`queue_full`) or the export request failed (`export_failed`).
//!
//! Written only when tracing has counted something, so a sidecar without tracing serves no
//! trace families.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::exposition::{self, Kind};
use crate::metrics::SpanDrop;

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct SpanCounters {
    exported: AtomicU64,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    /// Set once anything was counted.
    used: std::sync::atomic::AtomicBool,
}

impl SpanCounters {
    pub(super) fn exported(&self, count: u64) {
        // Relaxed: independent counters.
        self.exported.fetch_add(count, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    pub(super) fn dropped(&self, reason: SpanDrop, count: u64) {
        let counter = match reason {
            SpanDrop::QueueFull => &self.queue_full,
            SpanDrop::ExportFailed => &self.export_failed,
        };
        counter.fetch_add(count, Ordering::Relaxed);
        self.used.store(true, Ordering::Relaxed);
    }

    pub(super) fn encode(&self, out: &mut String) {
        if !self.used.load(Ordering::Relaxed) {
            return;
        }
        let family = "meshwork_trace_spans_exported";
        exposition::family(
            out,
            family,
            Kind::Counter,
            "Spans the OTLP collector accepted",
        );
        let exported = self.exported.load(Ordering::Relaxed);
        exposition::sample(out, &format!("{family}_total"), &[], exported);
        let family = "meshwork_trace_spans_dropped";
        exposition::family(
            out,
            family,
            Kind::Counter,
            "Finished spans that never reached the collector, by reason",
        );
        for (reason, counter) in [
            (SpanDrop::QueueFull, &self.queue_full),
            (SpanDrop::ExportFailed, &self.export_failed),
        ] {
            let count = counter.load(Ordering::Relaxed);
            let labels = [("reason", reason.as_str())];
            exposition::sample(out, &format!("{family}_total"), &labels, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_until_tracing_counts_then_every_reason_is() {
        let counters = SpanCounters::default();
        let mut out = String::new();
        counters.encode(&mut out);
        assert_eq!(out, "");
        counters.exported(3);
        counters.dropped(SpanDrop::QueueFull, 2);
        counters.encode(&mut out);
        assert!(
            out.contains("meshwork_trace_spans_exported_total 3\n"),
            "{out}"
        );
        assert!(
            out.contains("meshwork_trace_spans_dropped_total{reason=\"queue_full\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("meshwork_trace_spans_dropped_total{reason=\"export_failed\"} 0\n"),
            "{out}"
        );
    }
}
