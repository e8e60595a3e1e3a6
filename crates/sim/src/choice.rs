//! Every nondeterministic decision of a run goes through one [`Chooser`].
//!
//! A decision picks one of `n` alternatives; alternative 0 is always the
//! boring one (no fault, in order, earliest, shortest). Because a run is a
//! pure function of its decisions, the same engine serves three purposes:
//! - **random** ([`Source::random`]): ChaCha8 seeded from the run's `u64`
//!   seed, for simulation and sweeps;
//! - **recorded** ([`Source::recorded`]): a stored sequence, replayed exactly
//!   and defaulting to 0 once exhausted, for replay and shrinking;
//! - **enumerated**: the explorer drives recorded prefixes and reads the
//!   arities logged here to enumerate the alternatives systematically.
//!
//! Decisions with a single alternative are not decisions: they consume
//! nothing and are not logged, so recorded sequences stay short.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// The name of the algorithm that turns a seed into decisions. Stored in seed
/// files: a file made by another algorithm is refused, not replayed wrongly.
pub const ALGORITHM: &str = "chacha8-seed_from_u64/lemire-u64";
/// The version of [`ALGORITHM`]'s use here (how draws map to decisions).
pub const ALGORITHM_VERSION: u32 = 1;

/// One decision as logged: the alternative taken and how many there were.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// The alternative taken, `< arity`.
    pub value: u32,
    /// The number of alternatives (at least 2).
    pub arity: u32,
    /// Whether a non-zero value of this decision injects a fault.
    pub fault: bool,
}

/// Where decisions come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Pseudo-random, from a seed.
    Random(Box<ChaCha8Rng>),
    /// A stored sequence; 0 once exhausted. Out-of-range values are clamped to
    /// the last alternative.
    Recorded {
        /// The values, in decision order.
        values: Vec<u32>,
        /// The next one to use.
        pos: usize,
    },
}

impl Source {
    /// The random source for `seed`.
    pub fn random(seed: u64) -> Source {
        Source::Random(Box::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    /// A source replaying `values`.
    pub fn recorded(values: Vec<u32>) -> Source {
        Source::Recorded { values, pos: 0 }
    }

    #[inline]
    fn uniform(&mut self, n: u32) -> u32 {
        match self {
            // Lemire's multiply-shift: unbiased to within n / 2^64.
            Source::Random(rng) => ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u32,
            Source::Recorded { values, pos } => {
                let v = values.get(*pos).copied().unwrap_or(0);
                *pos += 1;
                v.min(n - 1)
            }
        }
    }

    #[inline]
    fn bernoulli(&mut self, ppm: u32) -> u32 {
        match self {
            Source::Random(rng) => {
                let draw = ((u128::from(rng.next_u64()) * 1_000_000u128) >> 64) as u32;
                u32::from(draw < ppm)
            }
            Source::Recorded { .. } => self.uniform(2),
        }
    }
}

/// Hands out decisions and logs every one of them (unless told not to).
#[derive(Debug)]
pub struct Chooser {
    source: Source,
    log: Vec<Decision>,
    /// Whether decisions are logged (see [`Chooser::set_logging`]).
    logging: bool,
    faults_taken: u64,
}

impl Clone for Chooser {
    fn clone(&self) -> Self {
        Chooser {
            source: self.source.clone(),
            log: self.log.clone(),
            logging: self.logging,
            faults_taken: self.faults_taken,
        }
    }

    /// Reuses this chooser's buffers (a recorded source's values, the log).
    fn clone_from(&mut self, source: &Self) {
        match (&mut self.source, &source.source) {
            (
                Source::Recorded { values, pos },
                Source::Recorded {
                    values: from,
                    pos: at,
                },
            ) => {
                values.clone_from(from);
                *pos = *at;
            }
            (mine, theirs) => *mine = theirs.clone(),
        }
        self.log.clone_from(&source.log);
        self.logging = source.logging;
        self.faults_taken = source.faults_taken;
    }
}

impl Chooser {
    /// A chooser over `source`.
    pub fn new(source: Source) -> Chooser {
        Chooser {
            source,
            log: Vec::new(),
            logging: true,
            faults_taken: 0,
        }
    }

    /// Turns the log on or off (on by default). Decisions taken while it is
    /// off are the same decisions, drawn the same way; they are only not
    /// kept. For runs whose decisions nobody reads: a sweep's runs (it runs
    /// a failing seed again, logging, to write its seed file).
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    #[inline]
    fn push(&mut self, decision: Decision) {
        if self.logging {
            self.log.push(decision);
        }
    }

    /// Replaces the source; the log continues (the explorer switches to a
    /// recorded prefix for each alternative of a step).
    pub fn set_source(&mut self, source: Source) {
        self.source = source;
    }

    /// Replaces the source with a recorded one replaying `values`, reusing
    /// the current source's buffer if it is recorded too.
    pub fn set_recorded(&mut self, values: &[u32]) {
        match &mut self.source {
            Source::Recorded { values: v, pos } => {
                v.clear();
                v.extend_from_slice(values);
                *pos = 0;
            }
            Source::Random(_) => self.source = Source::recorded(values.to_vec()),
        }
    }

    /// Picks one of `n` equally likely alternatives. `n == 0` is treated as 1.
    #[inline]
    pub fn choose(&mut self, n: u32) -> u32 {
        if n <= 1 {
            return 0;
        }
        let value = self.source.uniform(n);
        self.push(Decision {
            value,
            arity: n,
            fault: false,
        });
        value
    }

    /// A uniform pick in `lo..=hi` (order of the bounds does not matter).
    #[inline]
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        let span = (hi - lo).min(u64::from(u32::MAX - 1));
        lo + u64::from(self.choose(span as u32 + 1))
    }

    /// `true` with probability `ppm` parts per million; `true` is alternative
    /// 1. Certain outcomes (0 or 1,000,000 ppm) are not decisions.
    #[inline]
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.bernoulli(ppm, false)
    }

    /// Like [`Chooser::chance`], logged as a fault decision (the explorer
    /// bounds how many of these come out `true`).
    #[inline]
    pub fn fault_chance(&mut self, ppm: u32) -> bool {
        let hit = self.bernoulli(ppm, true);
        if hit {
            self.faults_taken += 1;
        }
        hit
    }

    /// A targeted fault's decision: the random source always fires it
    /// (without drawing); a recorded sequence replays the value, so a
    /// shrinker can drop the fault by setting it to 0.
    pub fn forced_fault(&mut self) -> bool {
        let value = match &mut self.source {
            Source::Random(_) => 1,
            Source::Recorded { .. } => self.source.uniform(2),
        };
        self.push(Decision {
            value,
            arity: 2,
            fault: true,
        });
        if value == 1 {
            self.faults_taken += 1;
        }
        value == 1
    }

    #[inline]
    fn bernoulli(&mut self, ppm: u32, fault: bool) -> bool {
        if ppm == 0 {
            return false;
        }
        if ppm >= 1_000_000 {
            return true;
        }
        let value = self.source.bernoulli(ppm);
        self.push(Decision {
            value,
            arity: 2,
            fault,
        });
        value == 1
    }

    /// Every decision taken so far, in order.
    pub fn log(&self) -> &[Decision] {
        &self.log
    }

    /// The values of every decision taken so far: what a seed file stores.
    pub fn values(&self) -> Vec<u32> {
        self.log.iter().map(|d| d.value).collect()
    }

    /// How many fault decisions came out `true`.
    pub fn faults_taken(&self) -> u64 {
        self.faults_taken
    }

    /// Empties the log (the explorer keeps paths itself and logs one step
    /// at a time); the source and the count of faults taken are kept.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }

    /// Consumes the chooser, returning its log.
    pub fn into_log(self) -> Vec<Decision> {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_source_is_a_pure_function_of_the_seed() {
        let draw = |seed| {
            let mut c = Chooser::new(Source::random(seed));
            (0..100).map(|i| c.choose(i % 7 + 2)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    const PINNED_DRAWS: [u32; 8] = [681, 950, 427, 627, 288, 149, 308, 803];

    #[test]
    fn random_draws_are_pinned() {
        // Seed files replay by seed too: these values must never change
        // without bumping ALGORITHM_VERSION.
        let mut c = Chooser::new(Source::random(42));
        let got: Vec<u32> = (0..8).map(|_| c.choose(1000)).collect();
        assert_eq!(got, PINNED_DRAWS);
    }

    #[test]
    fn recording_replays_exactly() {
        let mut a = Chooser::new(Source::random(3));
        let first: Vec<u32> = (0..50)
            .map(|i| {
                if i % 3 == 0 {
                    u32::from(a.chance(250_000))
                } else {
                    a.choose(i + 2)
                }
            })
            .collect();
        let mut b = Chooser::new(Source::recorded(a.values()));
        let second: Vec<u32> = (0..50)
            .map(|i| {
                if i % 3 == 0 {
                    u32::from(b.chance(250_000))
                } else {
                    b.choose(i + 2)
                }
            })
            .collect();
        assert_eq!(first, second);
        assert_eq!(a.log(), b.log());
    }

    #[test]
    fn exhausted_recording_takes_the_boring_alternative() {
        let mut c = Chooser::new(Source::recorded(vec![]));
        assert_eq!(c.choose(5), 0);
        assert!(!c.chance(999_999));
    }

    #[test]
    fn out_of_range_recorded_values_are_clamped() {
        let mut c = Chooser::new(Source::recorded(vec![9]));
        assert_eq!(c.choose(3), 2);
    }

    #[test]
    fn single_alternatives_and_certainties_are_not_logged() {
        let mut c = Chooser::new(Source::random(1));
        assert_eq!(c.choose(1), 0);
        assert!(!c.chance(0));
        assert!(c.chance(1_000_000));
        assert!(c.log().is_empty());
    }

    #[test]
    fn chance_tracks_its_probability() {
        let mut c = Chooser::new(Source::random(5));
        let hits = (0..10_000).filter(|_| c.chance(100_000)).count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
