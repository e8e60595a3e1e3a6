//! Bounded exhaustive exploration of small configurations, on the same
//! engine as simulation.
//!
//! States are worlds between steps. From a state, every decision sequence of
//! the next step is enumerated: the step is replayed on a clone of the state
//! from a recorded prefix (alternative 0 for whatever follows the prefix),
//! and each decision it took beyond the prefix opens its other alternatives
//! as new prefixes: a depth-first enumeration of the step's decision tree,
//! whose leaves are the state's successors. Construction (fault options,
//! the first events) is enumerated the same way. Successors are
//! deduplicated by the world's fingerprint (a stable 64-bit hash of
//! everything that affects what happens next): a state is expanded again
//! only when it is reached with more of the fault budget left than before
//! (fewer faults spent can only reach more), so a state reached along
//! several paths is expanded at most once per improvement.
//!
//! Bounds: the number of steps from the start, the number of injected
//! faults along a path (a fault decision's non-zero alternatives are not
//! opened once the path has used them all), and virtual time (the
//! scenario's run length). A run that stops (violation, quiet, settled,
//! time limit) ends its path; liveness is judged there as in a simulation.
//! A violation ends the exploration with its path of decisions, which a
//! recorded source replays exactly.

use crate::choice::{Decision, Source};
use crate::engine::{Protocol, Stop, Violation, World};

/// Limits of an exploration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Steps from the start along any path.
    pub max_depth: u64,
    /// Faults injected along any path.
    pub max_faults: u64,
    /// Unique states to visit before giving up (a safety net).
    pub max_states: u64,
    /// Deduplicate states by fingerprint (off: every path is a tree).
    pub dedup: bool,
}

/// What an exploration found.
#[derive(Clone, Debug, Default)]
pub struct Exploration {
    /// States expanded (a fingerprint counts again only when reached with
    /// more fault budget left; without dedup, every node of the path tree).
    pub states: u64,
    /// Successor edges computed (one per leaf of a step's decision tree).
    pub transitions: u64,
    /// Steps executed (the work: a step is replayed once per leaf).
    pub runs: u64,
    /// The deepest path, in steps.
    pub max_depth: u64,
    /// Paths that ended (run stopped) within the bounds.
    pub terminals: u64,
    /// States at the depth bound whose run had not stopped.
    pub depth_cut: u64,
    /// Whether the state limit stopped the exploration.
    pub state_limit_hit: bool,
    /// Whether the caller asked to stop.
    pub interrupted: bool,
    /// The first violation found, with the decisions that reach it.
    pub violation: Option<(Violation, Vec<u32>)>,
}

impl Exploration {
    /// Whether every state reachable within the bounds was explored and no
    /// path was cut by the depth bound.
    pub fn complete(&self) -> bool {
        self.depth_cut == 0
            && !self.state_limit_hit
            && !self.interrupted
            && self.violation.is_none()
    }
}

struct Node<P: Protocol> {
    /// The state, with an empty decision log (the path is in [`Paths`]).
    world: Box<World<P>>,
    depth: u64,
    faults: u64,
    path: u32,
}

/// The decision paths of admitted states, as a tree: each entry is a step's
/// decision values and its parent's entry. Kept apart from the worlds so
/// that copying a world does not copy its history.
#[derive(Default)]
struct Paths {
    /// `(parent, start, len)` into `values`; entry 0 is the empty root.
    steps: Vec<(u32, u32, u32)>,
    values: Vec<u32>,
}

impl Paths {
    fn new() -> Paths {
        Paths {
            steps: vec![(0, 0, 0)],
            values: Vec::new(),
        }
    }

    fn push(&mut self, parent: u32, decisions: &[Decision]) -> u32 {
        let start = self.values.len() as u32;
        self.values.extend(decisions.iter().map(|d| d.value));
        self.steps.push((parent, start, decisions.len() as u32));
        (self.steps.len() - 1) as u32
    }

    /// The whole path to `at`, then `last`.
    fn full(&self, mut at: u32, last: &[Decision]) -> Vec<u32> {
        let mut parts = Vec::new();
        while at != 0 {
            let (parent, start, len) = self.steps[at as usize];
            parts.push(&self.values[start as usize..(start + len) as usize]);
            at = parent;
        }
        let mut out: Vec<u32> = parts.into_iter().rev().flatten().copied().collect();
        out.extend(last.iter().map(|d| d.value));
        out
    }
}

/// The visited set: fingerprint -> fewest faults spent reaching it, in an
/// open-addressing table of single words with linear probing from the
/// fingerprint's top bits (fingerprints are well-mixed 64-bit hashes
/// already). A word is the fingerprint with its lowest bits replaced by the
/// faults: as many bits as the fault bound needs (none without faults, one
/// for a bound of 1), so a word is 8 bytes, not 16, and the table (which
/// outgrows the caches long before an exploration ends: a lookup is a cache
/// miss, mostly) half as large. Fault counts are exact up to 65,535; beyond,
/// they saturate there. Only looked up, never iterated (but to grow), so its
/// layout cannot reach the exploration.
struct Visited {
    /// `0` is an empty slot; a fingerprint whose kept bits are all zero
    /// lives in `zero`.
    slots: Vec<u64>,
    len: usize,
    /// `64 - log2(slots.len())`: a fingerprint's home slot is its top bits.
    shift: u32,
    /// The low bits of a word that hold the faults.
    fault_mask: u64,
    zero: Option<u64>,
}

impl Visited {
    fn new(max_faults: u64) -> Visited {
        const BITS: u32 = 16;
        let fault_bits = (64 - max_faults.leading_zeros()).min(16);
        Visited {
            slots: vec![0; 1 << BITS],
            len: 0,
            shift: 64 - BITS,
            fault_mask: (1u64 << fault_bits) - 1,
            zero: None,
        }
    }

    /// Records that `fp` was reached with `faults` spent; returns whether
    /// that is new (never reached, or only with more faults spent).
    fn admit(&mut self, fp: u64, faults: u64) -> bool {
        let key = fp & !self.fault_mask;
        let faults = faults.min(self.fault_mask);
        if key == 0 {
            return match self.zero {
                Some(f) if f <= faults => false,
                _ => {
                    self.zero = Some(faults);
                    true
                }
            };
        }
        // At most three quarters full: probes stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = (key >> self.shift) as usize;
        loop {
            let word = self.slots[i];
            if word == 0 {
                self.slots[i] = key | faults;
                self.len += 1;
                return true;
            }
            if word & !self.fault_mask == key {
                if word & self.fault_mask <= faults {
                    return false;
                }
                self.slots[i] = key | faults;
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let doubled = vec![0; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        self.shift -= 1;
        let mask = self.slots.len() - 1;
        for word in old.into_iter().filter(|w| *w != 0) {
            let mut i = (word >> self.shift) as usize;
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = word;
        }
    }
}

/// Recycled worlds: a state is copied into one with `clone_from`, which
/// reuses its buffers, instead of a fresh `clone` (a dozen allocations).
struct Pool<P: Protocol> {
    free: Vec<Box<World<P>>>,
}

impl<P: Protocol> Pool<P> {
    fn copy_of(&mut self, from: &World<P>) -> Box<World<P>> {
        match self.free.pop() {
            Some(mut w) => {
                w.as_mut().clone_from(from);
                w
            }
            None => Box::new(from.clone()),
        }
    }

    fn recycle(&mut self, w: Box<World<P>>) {
        self.free.push(w);
    }
}

/// Decision prefixes still to replay, as a stack in one buffer: `ends[i]`
/// is where prefix `i` ends in `values`, which it starts where prefix
/// `i - 1` ends.
#[derive(Default)]
struct Prefixes {
    values: Vec<u32>,
    ends: Vec<usize>,
}

impl Prefixes {
    fn push(&mut self, taken: &[Decision], alt: u32) {
        self.values.extend(taken.iter().map(|d| d.value));
        self.values.push(alt);
        self.ends.push(self.values.len());
    }

    /// Copies the last prefix into `into` and drops it.
    fn pop(&mut self, into: &mut Vec<u32>) -> bool {
        let Some(end) = self.ends.pop() else {
            return false;
        };
        let start = self.ends.last().copied().unwrap_or(0);
        into.clear();
        into.extend_from_slice(&self.values[start..end]);
        self.values.truncate(start);
        true
    }
}

/// Enumerates the decision tree of one step of `from` (or of construction,
/// with `make`) into `out`: each leaf's world, whose decision log holds the
/// decisions of that step only (of construction, for `make`); counts runs.
fn leaves<P: Protocol>(
    from: Option<&World<P>>,
    make: &dyn Fn(Source) -> World<P>,
    faults_left: u64,
    runs: &mut u64,
    pool: &mut Pool<P>,
    prefixes: &mut Prefixes,
    out: &mut Vec<Box<World<P>>>,
) {
    let mut prefix: Vec<u32> = Vec::new();
    let mut first = true;
    while std::mem::take(&mut first) || prefixes.pop(&mut prefix) {
        *runs += 1;
        let world = match from {
            Some(w) => {
                let mut w = pool.copy_of(w);
                debug_assert!(w.decisions().is_empty());
                w.replay(&prefix);
                w.step();
                w
            }
            None => {
                let mut w = Box::new(make(Source::recorded(prefix.clone())));
                w.stop_digest();
                w.track_fingerprint();
                w
            }
        };
        let taken: &[Decision] = world.decisions();
        let faults_in_prefix = taken[..prefix.len().min(taken.len())]
            .iter()
            .filter(|d| d.fault && d.value != 0)
            .count() as u64;
        // Open the siblings of every decision past the prefix (those took
        // alternative 0, so the path's faults up to any of them are the
        // prefix's). A fault decision's other alternative is a fault: only
        // within the bound.
        for (i, d) in taken.iter().enumerate().skip(prefix.len()) {
            if d.fault && faults_in_prefix >= faults_left {
                continue;
            }
            for alt in (1..d.arity).rev() {
                prefixes.push(&taken[..i], alt);
            }
        }
        out.push(world);
    }
}

fn faults_of(decisions: &[Decision]) -> u64 {
    decisions.iter().filter(|d| d.fault && d.value != 0).count() as u64
}

/// Explores every world `make` can build (each from a decision source)
/// within `bounds`. `progress` is called every few hundred states with the
/// figures so far; returning `false` stops the exploration.
pub fn explore<P: Protocol>(
    make: &dyn Fn(Source) -> World<P>,
    bounds: Bounds,
    progress: &mut dyn FnMut(&Exploration) -> bool,
) -> Exploration {
    let mut ex = Exploration::default();
    // Fingerprint -> fewest faults spent reaching it. A state first reached
    // along a path that spent its fault budget (a duplicate that was then
    // ignored, say) must not hide the same state reached with faults still
    // to spend; one reached with as many or more spent adds nothing.
    let mut visited = Visited::new(bounds.max_faults);
    let mut paths = Paths::new();
    let mut stack: Vec<Node<P>> = Vec::new();
    let mut pool = Pool { free: Vec::new() };
    let mut prefixes = Prefixes::default();
    // Admits a leaf reached from the state at `parent` (path entry, faults
    // spent, depth); returns `false` to stop (a violation). A leaf that is
    // not kept goes back to the pool.
    let admit = |ex: &mut Exploration,
                 visited: &mut Visited,
                 paths: &mut Paths,
                 stack: &mut Vec<Node<P>>,
                 pool: &mut Pool<P>,
                 mut world: Box<World<P>>,
                 (parent, parent_faults, depth): (u32, u64, u64)|
     -> bool {
        ex.transitions += 1;
        let faults = parent_faults + faults_of(world.decisions());
        if faults > bounds.max_faults {
            pool.recycle(world);
            return true;
        }
        if bounds.dedup && !visited.admit(world.fingerprint(), faults) {
            pool.recycle(world);
            return true;
        }
        ex.states += 1;
        ex.max_depth = ex.max_depth.max(depth);
        if let Some(stop) = world.stopped() {
            ex.terminals += 1;
            if stop == Stop::Violation {
                let v = world
                    .violation()
                    .cloned()
                    .expect("a violation stop has one");
                ex.violation = Some((v, paths.full(parent, world.decisions())));
                return false;
            }
            pool.recycle(world);
            return true;
        }
        if depth >= bounds.max_depth {
            ex.depth_cut += 1;
            pool.recycle(world);
            return true;
        }
        let path = paths.push(parent, world.decisions());
        world.clear_decisions();
        // Every copy replays a prefix of its own: nothing to copy here.
        world.replay(&[]);
        stack.push(Node {
            world,
            depth,
            faults,
            path,
        });
        true
    };
    let mut out = Vec::new();
    leaves(
        None,
        make,
        bounds.max_faults,
        &mut ex.runs,
        &mut pool,
        &mut prefixes,
        &mut out,
    );
    for w in out.drain(..) {
        if !admit(
            &mut ex,
            &mut visited,
            &mut paths,
            &mut stack,
            &mut pool,
            w,
            (0, 0, 0),
        ) {
            return ex;
        }
    }
    let mut since_report = 0u32;
    while let Some(node) = stack.pop() {
        if ex.states >= bounds.max_states {
            ex.state_limit_hit = true;
            break;
        }
        since_report += 1;
        if since_report >= 256 {
            since_report = 0;
            if !progress(&ex) {
                ex.interrupted = true;
                break;
            }
        }
        let left = bounds.max_faults.saturating_sub(node.faults);
        let at = (node.path, node.faults, node.depth + 1);
        leaves(
            Some(&node.world),
            make,
            left,
            &mut ex.runs,
            &mut pool,
            &mut prefixes,
            &mut out,
        );
        pool.recycle(node.world);
        for w in out.drain(..) {
            if !admit(
                &mut ex,
                &mut visited,
                &mut paths,
                &mut stack,
                &mut pool,
                w,
                at,
            ) {
                return ex;
            }
        }
    }
    ex
}

#[cfg(test)]
mod tests {
    use super::Visited;

    #[test]
    fn a_state_is_new_again_only_with_fewer_faults() {
        let mut v = Visited::new(3);
        let fp = 0xDEAD_BEEF_0000_0000;
        assert!(v.admit(fp, 2));
        assert!(!v.admit(fp, 2), "same faults: seen");
        assert!(!v.admit(fp, 3), "more faults: seen");
        assert!(v.admit(fp, 1), "fewer faults: new");
        assert!(!v.admit(fp, 1));
        assert!(v.admit(fp, 0));
        // The fault bits are the fingerprint's lowest: another fingerprint
        // differing above them is another state.
        assert!(v.admit(fp | 0x4, 3));
    }

    #[test]
    fn growth_keeps_every_state_and_the_all_zero_key_works() {
        let mut v = Visited::new(1);
        let fps: Vec<u64> = (1..200_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) & !1)
            .collect();
        for &fp in &fps {
            assert!(v.admit(fp, 1), "{fp:#x} is new");
        }
        assert!(v.slots.len() > 1 << 16, "the table grew");
        for &fp in &fps {
            assert!(!v.admit(fp, 1), "{fp:#x} kept through growth");
        }
        for &fp in &fps[..100] {
            assert!(v.admit(fp, 0), "{fp:#x} with fewer faults");
        }
        // Zero in every kept bit: the fault bit alone differs.
        assert!(v.admit(0, 1));
        assert!(
            !v.admit(1, 1),
            "fingerprints 0 and 1 agree above the fault bit"
        );
        assert!(v.admit(0, 0));
    }

    #[test]
    fn no_fault_bound_keeps_all_64_bits() {
        let mut v = Visited::new(0);
        assert!(v.admit(2, 0));
        assert!(v.admit(3, 0), "differs in the lowest bit only");
        assert!(!v.admit(3, 0));
    }
}
