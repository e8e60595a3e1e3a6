//! Shrinking: the smallest decision sequence that still violates the same
//! invariant.
//!
//! A run is a pure function of its decisions, so a failure is minimized by
//! editing its recorded sequence, Hypothesis-style, and replaying: delete
//! spans, zero spans, lower single values, sort spans. A candidate is kept
//! when it is smaller in shortlex order (shorter, or as long and
//! lexicographically smaller) and its run still violates the *same*
//! invariant. After each kept candidate the sequence is cut to the decisions
//! the run actually consumed (a shorter run reads fewer), with values
//! clamped as the run read them, so the result replays bit-exactly.
//!
//! The caller bounds the work with a `keep_going` callback (a time budget
//! lives in the CLI: nothing here reads a clock).

use std::cmp::Ordering;

use crate::engine::{Outcome, RunOptions};
use crate::runner::{RunSpec, run};

/// How a candidate runs: its decisions and verdict are what counts; its
/// digest is never read (the shrunk run is run again, digesting, for its
/// seed file).
const CANDIDATE_RUN: RunOptions = RunOptions {
    keep_trace: false,
    record_steps: false,
    skip_decisions: false,
    skip_digest: true,
};

/// What a shrink achieved.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The minimized decisions.
    pub choices: Vec<u32>,
    /// The run they produce (it violates the target invariant), without
    /// its digest: run the choices again, digesting, for a seed file.
    pub outcome: Outcome,
    /// Decisions before.
    pub choices_before: usize,
    /// Events before.
    pub events_before: u64,
    /// Runs tried.
    pub runs: u64,
    /// Whether a full pass found nothing more (false: stopped by the budget).
    pub converged: bool,
}

fn shortlex(a: &[u32], b: &[u32]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

struct Shrinker<'a, 'k> {
    spec: RunSpec<'a>,
    invariant: String,
    best: Vec<u32>,
    best_outcome: Outcome,
    choices_before: usize,
    events_before: u64,
    runs: u64,
    keep_going: &'k mut dyn FnMut() -> bool,
    stopped: bool,
}

impl Shrinker<'_, '_> {
    /// Tries a candidate; keeps it if it is smaller and still fails the same
    /// way. Returns whether it was kept.
    fn attempt(&mut self, candidate: Vec<u32>) -> bool {
        if self.stopped || shortlex(&candidate, &self.best) != Ordering::Less {
            return false;
        }
        if !(self.keep_going)() {
            self.stopped = true;
            return false;
        }
        self.runs += 1;
        self.spec.choices = Some(candidate);
        let o = run(&self.spec, CANDIDATE_RUN);
        let same = o
            .violation
            .as_ref()
            .is_some_and(|v| v.invariant == self.invariant);
        if !same {
            return false;
        }
        // What the run actually read: consumed prefix, clamped values.
        let consumed: Vec<u32> = o.decisions.iter().map(|d| d.value).collect();
        if shortlex(&consumed, &self.best) != Ordering::Less {
            return false;
        }
        self.best = consumed;
        self.best_outcome = o;
        true
    }

    /// Deletes spans, largest first.
    fn delete_spans(&mut self) -> bool {
        let mut improved = false;
        let mut k = (self.best.len() / 2).max(1);
        loop {
            let mut i = 0;
            while i + k <= self.best.len() && !self.stopped {
                let mut c = self.best.clone();
                c.drain(i..i + k);
                if self.attempt(c) {
                    improved = true;
                } else {
                    i += k.max(1);
                }
            }
            if k == 1 || self.stopped {
                return improved;
            }
            k /= 2;
        }
    }

    /// Sets spans to zero (the boring alternative), largest first.
    fn zero_spans(&mut self) -> bool {
        let mut improved = false;
        let mut k = self.best.len().max(1);
        loop {
            let mut i = 0;
            while i < self.best.len() && !self.stopped {
                let end = (i + k).min(self.best.len());
                if self.best[i..end].iter().any(|v| *v != 0) {
                    let mut c = self.best.clone();
                    c[i..end].iter_mut().for_each(|v| *v = 0);
                    improved |= self.attempt(c);
                }
                i += k;
            }
            if k == 1 || self.stopped {
                return improved;
            }
            k /= 2;
        }
    }

    /// Lowers single values: to zero, else the smallest value that still
    /// fails, by binary search.
    fn lower_values(&mut self) -> bool {
        let mut improved = false;
        let mut i = 0;
        while i < self.best.len() && !self.stopped {
            let v = self.best[i];
            if v > 0 {
                let mut c = self.best.clone();
                c[i] = 0;
                if self.attempt(c) {
                    improved = true;
                } else {
                    // `hi` fails (it is the current value); find the least.
                    let (mut lo, mut hi) = (1u32, v);
                    while lo < hi && !self.stopped && i < self.best.len() {
                        let mid = lo + (hi - lo) / 2;
                        let mut c = self.best.clone();
                        c[i] = mid;
                        if self.attempt(c) {
                            improved = true;
                            hi = mid;
                        } else {
                            lo = mid + 1;
                        }
                    }
                }
            }
            i += 1;
        }
        improved
    }

    /// Sorts short windows ascending (moves small values first where it
    /// does not matter to the failure).
    fn sort_windows(&mut self) -> bool {
        let mut improved = false;
        for k in [8usize, 4, 2] {
            let mut i = 0;
            while i + k <= self.best.len() && !self.stopped {
                let mut c = self.best.clone();
                c[i..i + k].sort_unstable();
                improved |= self.attempt(c);
                i += k;
            }
        }
        improved
    }
}

/// Minimizes `choices` while the run keeps violating `invariant`.
/// `keep_going` is asked before every run; when it says no, the best
/// sequence so far is returned.
///
/// Returns `None` if the initial sequence does not violate `invariant`.
pub fn shrink(
    spec: &RunSpec<'_>,
    choices: Vec<u32>,
    invariant: &str,
    keep_going: &mut dyn FnMut() -> bool,
) -> Option<Shrunk> {
    let mut spec = spec.clone();
    spec.choices = Some(choices.clone());
    let initial = run(&spec, CANDIDATE_RUN);
    if initial
        .violation
        .as_ref()
        .is_none_or(|v| v.invariant != invariant)
    {
        return None;
    }
    let best: Vec<u32> = initial.decisions.iter().map(|d| d.value).collect();
    let mut s = Shrinker {
        spec,
        invariant: invariant.to_owned(),
        best,
        choices_before: choices.len(),
        events_before: initial.events,
        best_outcome: initial,
        runs: 1,
        keep_going,
        stopped: false,
    };
    let mut converged = false;
    while !s.stopped {
        let mut improved = s.delete_spans();
        improved |= s.zero_spans();
        improved |= s.lower_values();
        improved |= s.sort_windows();
        if !improved {
            converged = !s.stopped;
            break;
        }
    }
    Some(Shrunk {
        choices: s.best,
        outcome: s.best_outcome,
        choices_before: s.choices_before,
        events_before: s.events_before,
        runs: s.runs,
        converged,
    })
}
