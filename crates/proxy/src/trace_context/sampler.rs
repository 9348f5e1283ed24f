//! Parent-based sampling with a ratio for new traces.
//!
//! A caller's decision is kept (accept and debug are recorded, deny is not). A new trace,
//! or a B3 caller that deferred, is sampled by its trace id the way OpenTelemetry's
//! `TraceIdRatioBased` sampler now specifies it: the right-most 56 bits of the id (the
//! bits W3C level 2's random flag promises are random) are compared with a rejection
//! threshold `(1 - ratio) * 2^56`. Every hop computing this from the same id and ratio
//! decides the same way, and a trace sampled at one ratio is sampled at every higher one.

use super::{Sampling, TraceContext, TraceId};

/// 2^56: the span of the randomness the decision reads.
const RANDOMNESS: u64 = 1 << 56;

/// A sampling ratio outside `0.0..=1.0` (or not a number).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("sampling ratio {ratio} is not between 0.0 and 1.0")]
pub struct RatioError {
    /// The ratio given.
    pub ratio: f64,
}

/// The decision whether a request's trace is recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    ratio: f64,
    /// Sample when the trace id's right-most 56 bits are at least this.
    threshold: u64,
}

impl Sampler {
    /// Samples new traces with probability `ratio` (`0.0` none, `1.0` all).
    pub fn new(ratio: f64) -> Result<Self, RatioError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(RatioError { ratio });
        }
        // In range, so the product is in 0..=2^56 and the cast is exact or rounds down by
        // less than one (f64 holds 53 bits).
        let threshold = ((1.0 - ratio) * RANDOMNESS as f64).round() as u64;
        Ok(Self {
            ratio,
            threshold: threshold.min(RANDOMNESS),
        })
    }

    /// Samples every new trace.
    pub fn always() -> Self {
        Self {
            ratio: 1.0,
            threshold: 0,
        }
    }

    /// Samples no new trace (callers' accept decisions are still kept).
    pub fn never() -> Self {
        Self {
            ratio: 0.0,
            threshold: RANDOMNESS,
        }
    }

    /// The ratio for new traces.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Whether to record: the parent's decision if it made one, else by trace id — the
    /// parent's (a deferred B3 caller) or `new_trace_id` for a trace starting here.
    pub fn decide(&self, parent: Option<&TraceContext>, new_trace_id: TraceId) -> bool {
        match parent {
            Some(parent) => match parent.sampling {
                Sampling::Accept | Sampling::Debug => true,
                Sampling::Deny => false,
                Sampling::Defer => self.by_trace_id(parent.trace_id),
            },
            None => self.by_trace_id(new_trace_id),
        }
    }

    /// The ratio decision for one trace id.
    pub fn by_trace_id(&self, trace_id: TraceId) -> bool {
        // Truncating to the low 64 bits is the point: the mask then keeps 56 of them.
        let randomness = (trace_id.to_u128() as u64) & (RANDOMNESS - 1);
        randomness >= self.threshold
    }
}

impl Default for Sampler {
    /// Every new trace sampled (the "100 %" default until `Mesh` sets a ratio).
    fn default() -> Self {
        Self::always()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::trace_context::{SpanId, TraceState};

    fn id(low56: u64) -> TraceId {
        // The upper bytes are set to show they are not read.
        TraceId::from_bytes((u128::MAX << 56 | u128::from(low56)).to_be_bytes()).unwrap()
    }

    fn parent(sampling: Sampling, trace_id: TraceId) -> TraceContext {
        TraceContext {
            trace_id,
            parent_span_id: Some(SpanId::random()),
            sampling,
            random_trace_id: true,
            tracestate: TraceState::default(),
        }
    }

    #[test]
    fn sampler_ratio_must_be_between_0_and_1() {
        for ratio in [-0.1, 1.000_001, f64::NAN, f64::INFINITY] {
            assert!(Sampler::new(ratio).is_err(), "{ratio}");
        }
        assert_eq!(
            Sampler::new(2.0).unwrap_err().to_string(),
            "sampling ratio 2 is not between 0.0 and 1.0"
        );
        assert_eq!(Sampler::new(1.0).unwrap(), Sampler::always());
        assert_eq!(Sampler::new(0.0).unwrap(), Sampler::never());
        assert_eq!(Sampler::new(0.25).unwrap().ratio(), 0.25);
    }

    #[test]
    fn sampler_threshold_reads_the_right_most_56_bits() {
        let half = Sampler::new(0.5).unwrap();
        assert!(!half.by_trace_id(id((1 << 55) - 1)));
        assert!(half.by_trace_id(id(1 << 55)));
        let always = Sampler::always();
        let never = Sampler::never();
        for low in [1, 1 << 55, RANDOMNESS - 1] {
            assert!(always.by_trace_id(id(low)));
            assert!(!never.by_trace_id(id(low)));
        }
        // The smallest possible id, too.
        assert!(!never.by_trace_id(TraceId::from_bytes(1u128.to_be_bytes()).unwrap()));
    }

    #[test]
    fn sampler_decisions_nest_across_ratios() {
        let mut rng = StdRng::seed_from_u64(12);
        let ids: Vec<TraceId> = (0..2000).map(|_| TraceId::random_with(&mut rng)).collect();
        let low = Sampler::new(0.1).unwrap();
        let high = Sampler::new(0.3).unwrap();
        let sampled_low = ids.iter().filter(|id| low.by_trace_id(**id)).count();
        let sampled_high = ids.iter().filter(|id| high.by_trace_id(**id)).count();
        for id in &ids {
            assert!(!low.by_trace_id(*id) || high.by_trace_id(*id));
        }
        // Seeded, so exact; roughly 10 % and 30 % of 2000.
        assert!((150..250).contains(&sampled_low), "{sampled_low}");
        assert!((500..700).contains(&sampled_high), "{sampled_high}");
    }

    #[test]
    fn sampler_is_parent_based() {
        let never = Sampler::never();
        let always = Sampler::always();
        let trace = id(1 << 40);
        assert!(never.decide(Some(&parent(Sampling::Accept, trace)), trace));
        assert!(never.decide(Some(&parent(Sampling::Debug, trace)), trace));
        assert!(!always.decide(Some(&parent(Sampling::Deny, trace)), trace));
        // A deferred parent is decided by its own trace id, not the new one.
        let half = Sampler::new(0.5).unwrap();
        let deferred = parent(Sampling::Defer, id(RANDOMNESS - 1));
        assert!(half.decide(Some(&deferred), id(0)));
        let deferred = parent(Sampling::Defer, id(1));
        assert!(!half.decide(Some(&deferred), id(RANDOMNESS - 1)));
        // No parent: the new trace's id.
        assert!(half.decide(None, id(RANDOMNESS - 1)));
        assert!(!half.decide(None, id(1)));
    }
}
