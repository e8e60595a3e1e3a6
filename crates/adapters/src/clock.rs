//! Real time as the machines' [`Time`].
//!
//! A machine's durable records carry times (a tombstone's `tombstoned_at`)
//! that must still make sense after a restart, so the epoch is the Unix
//! epoch, sampled once when the clock is made; from then on time comes from
//! the monotonic clock, so it never goes backwards within a process. Under
//! madsim both clocks are the simulation's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use simcast_machines::time::Time;
use tokio::time::Instant;

/// Converts between real instants and [`Time`].
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    start_micros: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock whose epoch is the Unix epoch as of now.
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock {
            start: Instant::now(),
            start_micros: u64::try_from(wall.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The current time.
    pub fn now(&self) -> Time {
        let elapsed = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        Time::from_micros(self.start_micros.saturating_add(elapsed))
    }

    /// The instant at which [`Clock::now`] reaches `t` (the start, if `t`
    /// is earlier). Deadlines more than a day ahead are capped at a day from
    /// now: for a timer that is "never", and it keeps the arithmetic finite.
    pub fn instant_of(&self, t: Time) -> Instant {
        const DAY: Duration = Duration::from_secs(86_400);
        let after_start = Duration::from_micros(t.as_micros().saturating_sub(self.start_micros));
        let now = Instant::now();
        if after_start > self.start.elapsed() + DAY {
            return now + DAY;
        }
        self.start + after_start
    }
}
