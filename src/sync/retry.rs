//! Exponential backoff with jitter, between `retry_min_ms` and `retry_max_ms`.

use std::cell::RefCell;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// A seeded source for this thread's jitter (`seed_jitter`); none: the thread's own RNG.
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes this thread's jitter a sequence seeded by `seed`, so a run that retries changes
/// replays exactly (the deterministic simulation: a retry's due time decides what a later
/// batch holds). Production threads never call it.
pub fn seed_jitter(seed: u64) {
    SEEDED.with(|s| *s.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

fn jitter(upto: u64) -> u64 {
    SEEDED.with(|s| match s.borrow_mut().as_mut() {
        Some(r) => r.gen_range(0..=upto),
        None => rand::thread_rng().gen_range(0..=upto),
    })
}

/// How long to wait before attempt number `attempt + 1` (0-based count of failures so far).
/// "Equal jitter": half fixed, half random, so retries of many changes spread out but never
/// come back sooner than half the nominal delay.
pub fn backoff_ms(attempt: u32, min_ms: u64, max_ms: u64) -> u64 {
    let min_ms = min_ms.max(1);
    let max_ms = max_ms.max(min_ms);
    let nominal = min_ms.saturating_mul(1u64 << attempt.min(32)).min(max_ms);
    let half = nominal / 2;
    half + jitter(nominal - half)
}

/// [`backoff_ms`] as a duration.
pub fn backoff(attempt: u32, min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(backoff_ms(attempt, min_ms, max_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_within_bounds() {
        for attempt in 0..40 {
            let d = backoff_ms(attempt, 200, 60_000);
            let nominal = (200u64 << attempt.min(32)).min(60_000);
            assert!(d >= nominal / 2 && d <= nominal, "{attempt}: {d}");
        }
        assert!(backoff_ms(0, 200, 60_000) <= 200);
        assert!(backoff_ms(20, 200, 60_000) >= 30_000);
    }

    #[test]
    fn tolerates_odd_bounds() {
        assert!(backoff_ms(3, 0, 0) <= 1);
        assert!(backoff_ms(3, 500, 100) <= 500);
    }
}
