//! Exponential backoff with a cap and caller-supplied jitter.

use core::time::Duration;

use serde::{Deserialize, Serialize};

/// Jitter as an input: per mille of the backoff added on top of it
/// (`0..=1000`; larger values are clamped). The driver draws it (the
/// simulator from its chooser, an adapter from its RNG): machines never do.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Jitter(pub u32);

/// Retry delays: `initial * multiplier^(attempt - 1)`, capped at `max`, then
/// stretched by the jitter (never beyond `max`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Growth per attempt, per mille (2000 = x2, 1500 = x1.5).
    pub multiplier_permille: u32,
    /// Largest delay.
    pub max: Duration,
}

impl Backoff {
    /// 10 ms, x2, capped at 10 s: appends and catalog writes.
    pub const APPEND: Backoff = Backoff {
        initial: Duration::from_millis(10),
        multiplier_permille: 2000,
        max: Duration::from_secs(10),
    };

    /// 10 ms, x1.5, capped at 10 s: ack callbacks.
    pub const CALLBACK: Backoff = Backoff {
        initial: Duration::from_millis(10),
        multiplier_permille: 1500,
        max: Duration::from_secs(10),
    };

    /// The delay before retry number `attempt` (1 = the first retry).
    /// Computed in integer microseconds; saturates instead of overflowing.
    pub fn delay(&self, attempt: u32, jitter: Jitter) -> Duration {
        let max_us = self.max.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut us = (self.initial.as_micros().min(u128::from(u64::MAX)) as u64).min(max_us);
        for _ in 1..attempt.max(1) {
            if us >= max_us {
                break;
            }
            us = (u128::from(us) * u128::from(self.multiplier_permille) / 1000)
                .min(u128::from(max_us)) as u64;
        }
        let j = u128::from(jitter.0.min(1000));
        let stretched = (u128::from(us) * (1000 + j) / 1000).min(u128::from(max_us)) as u64;
        Duration::from_micros(stretched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_backoff_doubles_from_10ms_and_caps_at_10s() {
        let b = Backoff::APPEND;
        let ms: Vec<u128> = (1..=12)
            .map(|a| b.delay(a, Jitter(0)).as_millis())
            .collect();
        assert_eq!(
            ms,
            [
                10, 20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10000, 10000
            ]
        );
        assert_eq!(b.delay(u32::MAX, Jitter(0)), Duration::from_secs(10));
    }

    #[test]
    fn callback_backoff_grows_by_half_and_caps_at_10s() {
        let b = Backoff::CALLBACK;
        let us: Vec<u128> = (1..=4).map(|a| b.delay(a, Jitter(0)).as_micros()).collect();
        assert_eq!(us, [10_000, 15_000, 22_500, 33_750]);
        assert_eq!(b.delay(100, Jitter(0)), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stretches_but_never_past_the_cap() {
        let b = Backoff::APPEND;
        assert_eq!(b.delay(1, Jitter(500)), Duration::from_millis(15));
        assert_eq!(
            b.delay(1, Jitter(5000)),
            Duration::from_millis(20),
            "clamped"
        );
        assert_eq!(b.delay(11, Jitter(1000)), Duration::from_secs(10));
    }
}
