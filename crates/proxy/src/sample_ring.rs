//! The admin's windowed view of the request counters: a sampler task copies the recorder's
//! cumulative counts ([`ProxyMetrics::sample`]) once a second, off the data path, into a
//! bounded ring; `/stats` and `/decisions` ask the ring for what happened in the last
//! `window` seconds.
//!
//! The ring keeps, per sample, only the series that changed since the sample before (their
//! increments), plus one cumulative copy of every series (the last sample). A window is the
//! increments of the samples taken in it plus what the counters gained since the last
//! sample (read at query time), so a window covers requests up to the moment it is asked.
//! A sample covers the time since the sample before it and is included when that whole
//! span lies in the window, so the covered time (`Windowed::covered`) is at most the
//! window asked (give or take a late sampler) and says what was actually covered —
//! shorter right after start, or at most [`RING_SAMPLES`] seconds.
//!
//! Memory: at most [`RING_SAMPLES`] samples, each holding the series that saw requests in
//! its second (a [`SeriesSample`] is under 200 bytes), plus one cumulative copy per series.
//! Series are bounded because their labels are: direction × service × route template ×
//! method × status × peer, all interned from the mesh's own snapshot and verified
//! identities (`crate::label`), never raw paths or hosts. 600 samples is the longest window
//! `/stats` offers (10 minutes); e.g. 50 series busy every second cost 600 × 50 × 200 B ≈
//! 6 MB, an idle sidecar almost nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use policy::hasher::FxBuildHasher as FxBuild;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ProxyMetrics, SeriesKey, SeriesSample};

/// Samples kept: one a second for the longest window offered.
pub const RING_SAMPLES: usize = 600;

/// How often the sampler reads the counters.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// The bounded ring of samples (see the [module docs](self)).
#[derive(Debug)]
pub struct SampleRing {
    /// Every series' cumulative counts at `last_at` (series never disappear).
    last: HashMap<SeriesKey, SeriesSample, FxBuild>,
    last_at: Instant,
    /// Oldest first; at most [`RING_SAMPLES`].
    samples: VecDeque<Increment>,
}

/// What the counters gained between `start` and the next sample's start (or `last_at`).
#[derive(Debug)]
struct Increment {
    start: Instant,
    series: Vec<SeriesSample>,
}

/// The requests of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct Windowed {
    /// The time actually covered.
    pub covered: Duration,
    /// What each series gained in it (series that gained nothing are left out).
    pub series: Vec<SeriesSample>,
}

impl SampleRing {
    /// An empty ring whose counters started (at zero) at `start`.
    pub fn new(start: Instant) -> SampleRing {
        SampleRing {
            last: HashMap::default(),
            last_at: start,
            samples: VecDeque::new(),
        }
    }

    /// Adds the sample `cumulative`, read at `now`; drops the oldest beyond
    /// [`RING_SAMPLES`].
    pub fn record(&mut self, now: Instant, cumulative: Vec<SeriesSample>) {
        let series = self.gained(&cumulative);
        for sample in cumulative {
            self.last.insert(sample.key, sample);
        }
        self.samples.push_back(Increment {
            start: self.last_at,
            series,
        });
        self.last_at = now;
        while self.samples.len() > RING_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// The requests of the `window` before `now`, where `cumulative` are the counters as
    /// read at `now`.
    pub fn window(&self, now: Instant, window: Duration, cumulative: &[SeriesSample]) -> Windowed {
        let mut totals: HashMap<SeriesKey, SeriesSample, FxBuild> = HashMap::default();
        for sample in self.gained(cumulative) {
            add(&mut totals, &sample);
        }
        let from = now.checked_sub(window);
        let mut covered_from = self.last_at;
        for increment in self.samples.iter().rev() {
            if from.is_some_and(|from| increment.start < from) {
                break;
            }
            for sample in &increment.series {
                add(&mut totals, sample);
            }
            covered_from = increment.start;
        }
        Windowed {
            covered: now.saturating_duration_since(covered_from),
            series: totals.into_values().collect(),
        }
    }

    /// What `cumulative` gained over the last sample, for the series that gained anything.
    fn gained(&self, cumulative: &[SeriesSample]) -> Vec<SeriesSample> {
        cumulative
            .iter()
            .filter_map(|now| {
                let before = self.last.get(&now.key);
                let slots = std::array::from_fn(|i| {
                    now.slots[i].saturating_sub(before.map_or(0, |b| b.slots[i]))
                });
                let sum_nanos = now
                    .sum_nanos
                    .saturating_sub(before.map_or(0, |b| b.sum_nanos));
                let gained = SeriesSample {
                    key: now.key,
                    slots,
                    sum_nanos,
                };
                (gained.requests() > 0).then_some(gained)
            })
            .collect()
    }
}

fn add(totals: &mut HashMap<SeriesKey, SeriesSample, FxBuild>, sample: &SeriesSample) {
    let total = totals.entry(sample.key).or_insert(SeriesSample {
        key: sample.key,
        slots: [0; crate::metrics::SLOTS],
        sum_nanos: 0,
    });
    for (into, add) in total.slots.iter_mut().zip(sample.slots) {
        *into += add;
    }
    total.sum_nanos += sample.sum_nanos;
}

/// Samples `metrics` into `ring` every [`SAMPLE_PERIOD`] until `shutdown` (or at once
/// when `metrics` keeps no samples). The counters are read before the lock is taken.
pub async fn run_sampler(
    metrics: Arc<dyn ProxyMetrics>,
    ring: Arc<Mutex<SampleRing>>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + SAMPLE_PERIOD, SAMPLE_PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let Some(sample) = metrics.sample() else {
            return;
        };
        let now = Instant::now();
        ring.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now, sample);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
