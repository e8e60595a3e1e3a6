//! The catch-up budget: how long, how much, and how long without progress a
//! catch-up may go before it is escalated to a rebuild.
//!
//! # Rules
//! - Three limits, each zero for "unlimited", checked in this order:
//!   1. duration: time since catch-up began **exceeds** `max_duration`;
//!   2. entries: entries this session replayed **exceed** `max_entries`;
//!   3. progress deadline: time since the last progress (or since catch-up
//!      began, before any progress) **exceeds** `progress_deadline`.
//!
//!   Strictly: reaching a limit exactly is within budget; one microsecond or
//!   one entry more is a violation.
//! - Entries count only what this session replayed: recovery starts from the
//!   replica's flushed LSN, not from zero.
//! - **simcast:** tick arithmetic never underflows. A `now` before the
//!   catch-up start or the last progress counts as no time elapsed (the
//!   reference computed `now - start` in wrapping unsigned arithmetic).

use core::fmt;
use core::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Time;

/// Limits on one catch-up. Zero in any field means no limit on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Budget {
    /// Longest the catch-up may run, from `begin_catch_up`.
    pub max_duration: Duration,
    /// Most entries the session may replay.
    pub max_entries: u64,
    /// Longest the catch-up may go without progress.
    pub progress_deadline: Duration,
}

/// Which limit a catch-up overran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BudgetViolation {
    /// Ran longer than `max_duration`.
    DurationExceeded,
    /// Replayed more than `max_entries`.
    EntriesExceeded,
    /// Went longer than `progress_deadline` without progress.
    ProgressStalled,
}

impl BudgetViolation {
    /// The name used in invalidation reasons (`budget_<name>`).
    pub const fn name(self) -> &'static str {
        match self {
            BudgetViolation::DurationExceeded => "duration_exceeded",
            BudgetViolation::EntriesExceeded => "entries_exceeded",
            BudgetViolation::ProgressStalled => "progress_stalled",
        }
    }
}

impl fmt::Display for BudgetViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a catch-up has used so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BudgetUsage {
    /// When catch-up began.
    pub started_at: Time,
    /// When progress was last recorded (`started_at` before any). Never moves
    /// backwards.
    pub last_progress_at: Time,
    /// Entries this session replayed.
    pub entries_replayed: u64,
}

/// How tick differences are computed: correctly, or as the
/// [`BudgetUnderflow`](super::ReplicationFlaw::BudgetUnderflow) flaw does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum TickArithmetic {
    /// Elapsed time saturates at zero; an overdrawn limit has no remainder.
    Checked,
    /// Both differences wrap: an overdrawn limit leaves a huge remainder.
    Wrapping,
}

impl Budget {
    /// No limit at all.
    pub const UNLIMITED: Budget = Budget {
        max_duration: Duration::ZERO,
        max_entries: 0,
        progress_deadline: Duration::ZERO,
    };

    /// The first limit `usage` violates at `now`, in rule order.
    pub fn check(&self, usage: &BudgetUsage, now: Time) -> Option<BudgetViolation> {
        self.check_with(usage, now, TickArithmetic::Checked)
    }

    pub(super) fn check_with(
        &self,
        usage: &BudgetUsage,
        now: Time,
        arithmetic: TickArithmetic,
    ) -> Option<BudgetViolation> {
        if overdrawn(self.max_duration, usage.started_at, now, arithmetic) {
            return Some(BudgetViolation::DurationExceeded);
        }
        if self.max_entries > 0 && usage.entries_replayed > self.max_entries {
            return Some(BudgetViolation::EntriesExceeded);
        }
        if overdrawn(
            self.progress_deadline,
            usage.last_progress_at,
            now,
            arithmetic,
        ) {
            return Some(BudgetViolation::ProgressStalled);
        }
        None
    }

    /// The first instant from which [`Budget::check`] reports a violation
    /// if nothing else is recorded: [`Time::ZERO`] (any time) if the entries
    /// limit is already exceeded, else one microsecond past the earlier of the
    /// duration and progress deadlines. `None` if no limit can be reached by
    /// waiting. So `check(usage, now)` is a violation iff
    /// `deadline(usage) <= now` (short of the end of time, where deadlines
    /// saturate).
    pub fn deadline(&self, usage: &BudgetUsage) -> Option<Time> {
        if self.max_entries > 0 && usage.entries_replayed > self.max_entries {
            return Some(Time::ZERO);
        }
        let past = |limit: Duration, since: Time| {
            (!limit.is_zero()).then(|| since + limit + Duration::from_micros(1))
        };
        let duration = past(self.max_duration, usage.started_at);
        let stall = past(self.progress_deadline, usage.last_progress_at);
        match (duration, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether more than `limit` has elapsed from `since` to `now` (a zero limit
/// is unlimited). Computed as "no time left": `limit - elapsed` has no
/// non-negative value.
fn overdrawn(limit: Duration, since: Time, now: Time, arithmetic: TickArithmetic) -> bool {
    if limit.is_zero() {
        return false;
    }
    let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
    let (now_us, since_us) = (now.as_micros(), since.as_micros());
    let left = match arithmetic {
        TickArithmetic::Checked => limit_us.checked_sub(now_us.saturating_sub(since_us)),
        TickArithmetic::Wrapping => Some(limit_us.wrapping_sub(now_us.wrapping_sub(since_us))),
    };
    left.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Time {
        Time::from_micros(n)
    }

    fn usage(start: u64, last: u64, entries: u64) -> BudgetUsage {
        BudgetUsage {
            started_at: us(start),
            last_progress_at: us(last),
            entries_replayed: entries,
        }
    }

    #[test]
    fn overdrawn_is_strict_and_zero_is_unlimited() {
        let limit = Duration::from_micros(10);
        let a = TickArithmetic::Checked;
        assert!(!overdrawn(limit, us(100), us(110), a));
        assert!(overdrawn(limit, us(100), us(111), a));
        assert!(!overdrawn(Duration::ZERO, us(0), Time::MAX, a));
    }

    #[test]
    fn checked_arithmetic_treats_time_before_start_as_none_elapsed() {
        let limit = Duration::from_micros(10);
        assert!(!overdrawn(limit, us(100), us(0), TickArithmetic::Checked));
        assert!(!overdrawn(limit, Time::MAX, us(0), TickArithmetic::Checked));
    }

    #[test]
    fn wrapping_arithmetic_never_sees_an_overdrawn_limit() {
        let limit = Duration::from_micros(10);
        assert!(!overdrawn(
            limit,
            us(100),
            us(111),
            TickArithmetic::Wrapping
        ));
        assert!(!overdrawn(
            limit,
            us(0),
            Time::MAX,
            TickArithmetic::Wrapping
        ));
        assert!(!overdrawn(limit, us(100), us(0), TickArithmetic::Wrapping));
    }

    #[test]
    fn deadline_is_the_first_violating_instant() {
        let b = Budget {
            max_duration: Duration::from_micros(100),
            max_entries: 0,
            progress_deadline: Duration::from_micros(30),
        };
        let u = usage(1_000, 1_050, 0);
        assert_eq!(b.deadline(&u), Some(us(1_081)));
        assert_eq!(b.check(&u, us(1_080)), None);
        assert_eq!(
            b.check(&u, us(1_081)),
            Some(BudgetViolation::ProgressStalled)
        );
        assert_eq!(Budget::UNLIMITED.deadline(&u), None);
        let over = Budget {
            max_entries: 5,
            ..Budget::UNLIMITED
        };
        assert_eq!(over.deadline(&usage(0, 7, 6)), Some(Time::ZERO));
        assert_eq!(over.deadline(&usage(0, 7, 5)), None);
    }

    #[test]
    fn deadline_saturates_at_the_end_of_time() {
        let b = Budget {
            max_duration: Duration::from_micros(10),
            ..Budget::UNLIMITED
        };
        assert_eq!(b.deadline(&usage(u64::MAX - 3, 0, 0)), Some(Time::MAX));
    }
}
