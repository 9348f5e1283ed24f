//! [`RetryBudget`]: how many retries one service's callers may add (GEP-3388's
//! `retryConstraint`): at most `percent` % of the requests seen over `interval`, plus
//! `minRetryRate.count` per `minRetryRate.interval` regardless, so a quiet service can still
//! retry and a failure storm cannot multiply its own load. Every request on a route with a
//! retry rule deposits (requests no rule covers are never retried, so they do not count);
//! every retry withdraws, and a retry the budget refuses is not made.
//!
//! It implements tower's [`Budget`] trait, but is not tower's `TpsBudget`, whose shape does
//! not fit the contract's: it charges a retry `⌊1 / ratio⌋` deposits (so 40 % behaves as
//! 50 % and 70 % as 100 %), takes its minimum as whole retries per second (1 per 10 s cannot
//! be said), and asserts a window of 1–60 s (a panic on the data path for any other
//! `interval`). This one keeps the same sliding window of ten slots with exact integer
//! units, and the minimum rate as a token bucket of its own interval.
//!
//! Cost: a request's deposit is one uncontended lock and an add; the window advances only
//! when a slot's time is up.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use api::contract::traffic;
use tokio::time::Instant;
use tower::retry::budget::Budget;

/// Slots of the sliding window: requests age out a tenth of the interval at a time.
const SLOTS: usize = 10;
/// What a retry costs in the window's units; a request deposits `percent` of them.
const RETRY_COST: i64 = 100;
/// The shortest slot, so a zero interval cannot make the window spin.
const MIN_SLOT: Duration = Duration::from_millis(1);

/// One service's retry budget (see the [module docs](self)).
#[derive(Debug)]
pub(crate) struct RetryBudget {
    state: Mutex<State>,
    percent: i64,
    slot: Duration,
    /// Minimum rate: `count` tokens per `interval`, in units where one token is
    /// `interval` nanoseconds, so refilling is exact integer arithmetic.
    floor_count: u128,
    floor_interval_nanos: u128,
}

#[derive(Debug)]
struct State {
    /// Net units per slot: `percent` per request, minus [`RETRY_COST`] per retry it paid for.
    slots: [i64; SLOTS],
    current: usize,
    current_started: Instant,
    /// The minimum-rate bucket's tokens, scaled (see [`RetryBudget::floor_count`]).
    floor_tokens: u128,
    floor_refilled: Instant,
}

impl RetryBudget {
    /// A budget from the service's `retryBudget`, starting now with an empty window and a
    /// full minimum-rate bucket (a service that just started may retry at once).
    pub(crate) fn new(config: &traffic::RetryBudget) -> Self {
        let now = Instant::now();
        let interval = Duration::from_millis(config.interval_ms);
        let floor_count = u128::from(config.min_retry_rate_count);
        let floor_interval_nanos =
            Duration::from_millis(config.min_retry_rate_interval_ms.max(1)).as_nanos();
        let state = State {
            slots: [0; SLOTS],
            current: 0,
            current_started: now,
            floor_tokens: floor_count * floor_interval_nanos,
            floor_refilled: now,
        };
        RetryBudget {
            state: Mutex::new(state),
            percent: i64::from(config.percent),
            slot: (interval / SLOTS as u32).max(MIN_SLOT),
            floor_count,
            floor_interval_nanos,
        }
    }

    /// Counts a request (first tries of requests on a route with a retry rule).
    pub(crate) fn deposit_at(&self, now: Instant) {
        let mut state = self.lock();
        self.advance(&mut state, now);
        let current = state.current;
        state.slots[current] = state.slots[current].saturating_add(self.percent);
    }

    /// Takes one retry's worth, if the budget has it: from the share of recent requests
    /// first, else from the minimum rate.
    pub(crate) fn withdraw_at(&self, now: Instant) -> bool {
        let mut state = self.lock();
        self.advance(&mut state, now);
        let balance = state
            .slots
            .iter()
            .fold(0i64, |sum, n| sum.saturating_add(*n));
        if balance >= RETRY_COST {
            let current = state.current;
            state.slots[current] = state.slots[current].saturating_sub(RETRY_COST);
            return true;
        }
        self.refill(&mut state, now);
        if state.floor_tokens >= self.floor_interval_nanos {
            state.floor_tokens -= self.floor_interval_nanos;
            return true;
        }
        false
    }

    /// A poisoned lock still holds consistent numbers: every update is a single store.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the window to `now`, emptying the slots whose time has passed.
    fn advance(&self, state: &mut State, now: Instant) {
        let elapsed = now.saturating_duration_since(state.current_started);
        if elapsed < self.slot {
            return;
        }
        let steps = elapsed.as_nanos() / self.slot.as_nanos();
        for _ in 0..steps.min(SLOTS as u128) {
            state.current = (state.current + 1) % SLOTS;
            state.slots[state.current] = 0;
        }
        // `steps` whole slots have passed; the current one started at the last boundary.
        let into_slot = elapsed.as_nanos() % self.slot.as_nanos();
        let into_slot = Duration::from_nanos(u64::try_from(into_slot).unwrap_or(0));
        state.current_started = now.checked_sub(into_slot).unwrap_or(now);
    }

    /// Adds the minimum rate's tokens for the time since the last refill, up to `count`.
    fn refill(&self, state: &mut State, now: Instant) {
        let elapsed = now
            .saturating_duration_since(state.floor_refilled)
            .as_nanos();
        let capacity = self.floor_count * self.floor_interval_nanos;
        state.floor_tokens = state
            .floor_tokens
            .saturating_add(elapsed.saturating_mul(self.floor_count))
            .min(capacity);
        state.floor_refilled = now;
    }
}

impl Budget for RetryBudget {
    fn deposit(&self) {
        self.deposit_at(Instant::now());
    }

    fn withdraw(&self) -> bool {
        self.withdraw_at(Instant::now())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(percent: u32, interval_ms: u64, count: u32, per_ms: u64) -> traffic::RetryBudget {
        traffic::RetryBudget {
            percent,
            interval_ms,
            min_retry_rate_count: count,
            min_retry_rate_interval_ms: per_ms,
        }
    }

    /// How many retries the budget allows right now, taking them all.
    fn drain(budget: &RetryBudget) -> usize {
        std::iter::from_fn(|| budget.withdraw().then_some(())).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_the_percentage_of_requests_exactly() {
        // No minimum rate: only the share of requests counts.
        for (percent, requests, allowed) in [
            (20, 100, 20),
            (40, 10, 4),
            (70, 10, 7),
            (15, 20, 3),
            (30, 5, 1),
            (20, 4, 0),
            (250, 2, 5),
        ] {
            let budget = RetryBudget::new(&config(percent, 10_000, 0, 1_000));
            for _ in 0..requests {
                budget.deposit();
            }
            assert_eq!(drain(&budget), allowed, "{percent} % of {requests}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_minimum_rate_allows_retries_without_traffic_and_refills_over_its_interval() {
        let budget = RetryBudget::new(&config(20, 10_000, 10, 1_000));
        assert_eq!(drain(&budget), 10, "a fresh service may retry at once");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(drain(&budget), 5, "half the interval, half the tokens");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(drain(&budget), 10, "the bucket holds at most `count`");
        // Less than one a second is expressible.
        let slow = RetryBudget::new(&config(0, 10_000, 1, 10_000));
        assert_eq!(drain(&slow), 1);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(drain(&slow), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(drain(&slow), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_age_out_of_the_window() {
        let budget = RetryBudget::new(&config(50, 10_000, 0, 1_000));
        for _ in 0..10 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(6)).await;
        for _ in 0..10 {
            budget.deposit();
        }
        // Both batches are within 10 s.
        assert!(budget.withdraw());
        tokio::time::advance(Duration::from_millis(4_500)).await;
        // The first batch has aged out: 5 retries for the second, one already taken.
        assert_eq!(drain(&budget), 4);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(drain(&budget), 0, "everything aged out");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_storm_is_capped_at_the_percentage_plus_the_minimum() {
        // The default: 20 % plus 10 per second. 1,000 requests a second, each failing and
        // asking for a retry, over 10 s.
        let budget = RetryBudget::new(&traffic::RetryBudget::default());
        let mut retries = 0;
        for _ in 0..10 {
            for _ in 0..1_000 {
                budget.deposit();
                retries += usize::from(budget.withdraw());
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // 20 % of 10,000, plus the 10 of the full bucket and 10 per second after.
        assert!((2_000..=2_110).contains(&retries), "{retries} retries");
    }

    #[tokio::test(start_paused = true)]
    async fn odd_intervals_neither_panic_nor_spin() {
        // A zero interval is a window of ten 1 ms slots.
        let zero = RetryBudget::new(&config(100, 0, 0, 0));
        zero.deposit();
        zero.deposit();
        assert!(zero.withdraw());
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(!zero.withdraw(), "the second deposit aged out");
        let long = RetryBudget::new(&config(100, 3_600_000, 0, 1_000));
        long.deposit();
        tokio::time::advance(Duration::from_secs(3_000)).await;
        assert!(long.withdraw(), "an hour-long window keeps its deposits");
    }
}
