//! The discrete-event engine every protocol runs on.
//!
//! A [`World`] is a protocol's state ([`Protocol`]) plus the [`Core`]: an event
//! queue ordered by (virtual time, sequence number), the virtual clock, the
//! nodes (up or down, and an incarnation number that a crash bumps), the
//! [`Chooser`] through which every decision goes, the fault state drawn for
//! this run, and the trace.
//!
//! A run is a chaos phase (faults on) followed by a heal phase (faults off;
//! the protocol restarts what crashed and heals what is split). Safety
//! invariants are checked during every event (the protocol reports a breach
//! with [`Core::violate`]); liveness invariants once the run stops
//! ([`Protocol::check_liveness`]). Events bound to a node incarnation
//! (timers, in-flight effects, messages to it) are dropped once that node
//! crashes: volatile state, timers and in-flight effects are lost.
//!
//! Determinism: the queue is ordered by (time, seq); simultaneous
//! events are ordered by a decision, never by insertion or hashing; the trace
//! digest chains a stable hash of every record, step by step.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};

use simcast_machines::coverage::Coverage;
use simcast_machines::time::Time;
use tracing::Level;

use crate::choice::{Chooser, Decision, Source};
use crate::faults::{FaultConfig, FaultState};
use crate::hash::{Fingerprinter, StableHasher, chain, stable_hash};
use crate::registry::{PANIC_INVARIANT, ProtocolInfo};

/// A node hosted by the world (a server, a client, a replica...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

/// A world's configuration (its workload in engine units): shared between
/// the copies the explorer makes, and not part of the world's fingerprint,
/// since it is the same in every state of a run or an exploration.
#[derive(Debug)]
pub struct Shared<T>(std::sync::Arc<T>);

impl<T> Shared<T> {
    /// Wraps a configuration.
    pub fn new(value: T) -> Shared<T> {
        Shared(std::sync::Arc::new(value))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Hash for Shared<T> {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

/// Who an event is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The environment: always delivered.
    Env,
    /// A node incarnation: dropped if the node is down or has restarted since
    /// the event was scheduled.
    Node {
        /// The node.
        node: NodeId,
        /// Its incarnation when the event was scheduled.
        incarnation: u32,
    },
}

/// The phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Faults are injected.
    Chaos,
    /// Faults are off; everything must settle.
    Heal,
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stop {
    /// No event left.
    Quiet,
    /// The protocol reported, in the heal phase, that all its work is done.
    Settled,
    /// The next event lies beyond the end of the heal phase.
    TimeLimit,
    /// The run reached its maximum number of events.
    StepLimit,
    /// An invariant was violated.
    Violation,
}

impl Stop {
    /// A stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Quiet => "quiet",
            Stop::Settled => "settled",
            Stop::TimeLimit => "time_limit",
            Stop::StepLimit => "step_limit",
            Stop::Violation => "violation",
        }
    }
}

/// The invariant reported when a run does not finish within its step limit.
pub const STEP_LIMIT_INVARIANT: &str = "sim.step_limit";

/// A protocol's world: its nodes' machines, the external systems they talk
/// to, the workload, and the history its invariants are checked against.
///
/// `Hash` is the world's fingerprint: it must cover everything that affects
/// future behaviour and may skip pure bookkeeping (counters, histories kept
/// only for reporting).
pub trait Protocol: Clone + Hash + fmt::Debug {
    /// What the queue carries: messages, timer firings, completions.
    type Event: Clone + Hash + fmt::Debug + fmt::Display;
    /// Trace notes the protocol adds while handling an event.
    type Note: Clone + Hash + fmt::Debug + fmt::Display;

    /// The protocol's names: invariants, mutants, fault kinds.
    fn info() -> &'static ProtocolInfo;

    /// Hashes a pending event into a world's fingerprint: by default its
    /// `Hash`, which also feeds trace digests and so must stay as it is; a
    /// protocol may hash large parts more cheaply here (a cached digest),
    /// as long as everything that affects what happens next is covered.
    fn fingerprint_event(event: &Self::Event, h: &mut Fingerprinter) {
        event.hash(h);
    }

    /// Creates the nodes and schedules the first events.
    fn start(&mut self, cx: &mut Cx<Self>);

    /// Handles one event. `node` is the node it was delivered to, if any.
    fn handle(&mut self, cx: &mut Cx<Self>, node: Option<NodeId>, event: Self::Event);

    /// Called once when the chaos phase ends: restart what crashed, heal
    /// what is split. Faults are already off.
    fn heal(&mut self, cx: &mut Cx<Self>);

    /// Whether, after healing, all work is done and the run may stop early.
    fn settled(&self) -> bool {
        false
    }

    /// Checks the liveness invariants once the run has stopped; returns the
    /// first one that does not hold, with a message saying what is pending.
    /// If the run stopped settled ([`Core::settled`]), what
    /// [`Protocol::settled`] checked holds and may be skipped.
    fn check_liveness(&self, cx: &Cx<Self>) -> Option<(&'static str, String)>;

    /// Where an event goes, as (sender lane, receiver lane), for pictures of
    /// a run: nodes by name, external systems by a name of their own (a
    /// timer is a message from a lane to itself). Called only when a trace
    /// is rendered.
    fn route(&self, event: &Self::Event) -> (String, String) {
        let _ = event;
        ("env".to_owned(), "env".to_owned())
    }

    /// The transitions this world's machines have taken, one set per entry
    /// of [`ProtocolInfo::machines`], including those of machines lost in
    /// crashes.
    fn coverage(&self) -> Vec<Coverage>;
}

/// The core a protocol `P` sees while handling events.
pub type Cx<P> = Core<<P as Protocol>::Event, <P as Protocol>::Note>;

/// One thing that happened, as kept in a trace.
#[derive(Clone, Debug, Hash)]
pub enum Entry<E, N> {
    /// An event was delivered.
    Deliver {
        /// To whom.
        target: Target,
        /// What.
        event: E,
    },
    /// An event was dropped because its node crashed or restarted.
    Drop {
        /// To whom it was.
        target: Target,
        /// What it was.
        event: E,
    },
    /// A protocol note.
    Note(N),
    /// A node crashed.
    Crash(NodeId),
    /// A node restarted.
    Restart(NodeId),
    /// A fault was injected.
    Fault {
        /// Its kind.
        kind: &'static str,
        /// Where (empty if the world named no site).
        site: &'static str,
        /// Whether a targeted fault of the scenario fired.
        targeted: bool,
    },
    /// The run entered a phase.
    Phase(Phase),
    /// The fault options drawn for this run.
    Options(String),
    /// An invariant was violated.
    Violation {
        /// Which.
        invariant: &'static str,
        /// Why.
        message: String,
    },
}

/// A trace record: what happened, at which step and virtual time.
#[derive(Clone, Debug)]
pub struct Record<E, N> {
    /// The step (event number, from 1; 0 = before the first event).
    pub step: u64,
    /// Virtual time.
    pub time: Time,
    /// What happened.
    pub entry: Entry<E, N>,
}

/// A record rendered for people: plain strings, no protocol types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// The step.
    pub step: u64,
    /// Virtual time.
    pub time: Time,
    /// `deliver`, `drop`, `note`, `crash`, `restart`, `fault`, `phase`,
    /// `options` or `violation`.
    pub kind: &'static str,
    /// The node concerned, if any.
    pub node: Option<String>,
    /// The rest, human-readable.
    pub text: String,
    /// For a delivered or dropped event: (sender lane, receiver lane).
    pub route: Option<(String, String)>,
}

impl fmt::Display for TraceLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = self.time.to_string();
        write!(f, "{:>6} {:>12} {:<9}", self.step, time, self.kind)?;
        if let Some(node) = &self.node {
            write!(f, " {node}:")?;
        }
        write!(f, " {}", self.text)
    }
}

#[derive(Clone, Debug)]
struct Trace<E, N> {
    keep: bool,
    record_steps: bool,
    records: Vec<Record<E, N>>,
    step_hasher: StableHasher,
    /// Whether records are hashed into the digest (the explorer, which
    /// never reads digests, turns it off).
    hashing: bool,
    digest: u64,
    step_digests: Vec<u64>,
}

impl<E: Hash + fmt::Display, N: Hash + fmt::Display> Trace<E, N> {
    fn push(&mut self, step: u64, time: Time, entry: Entry<E, N>) {
        if self.hashing {
            time.hash(&mut self.step_hasher);
            entry.hash(&mut self.step_hasher);
        }
        if tracing::enabled!(target: "simcast::trace", Level::TRACE) {
            tracing::trace!(target: "simcast::trace", step, time_us = time.as_micros(), "{}", EntryDisplay(&entry));
        }
        if self.keep {
            self.records.push(Record { step, time, entry });
        }
    }

    /// Records the delivery of `event` to `target` without taking (or
    /// cloning) the event unless the record is kept or traced: it hashes
    /// exactly as `Entry::Deliver { target, event }` would.
    fn push_deliver(&mut self, step: u64, time: Time, target: Target, event: &E)
    where
        E: Clone,
    {
        if self.hashing {
            time.hash(&mut self.step_hasher);
            EntryRef::Deliver {
                target: &target,
                event,
            }
            .hash(&mut self.step_hasher);
        }
        if tracing::enabled!(target: "simcast::trace", Level::TRACE) {
            tracing::trace!(target: "simcast::trace", step, time_us = time.as_micros(), "{}", event);
        }
        if self.keep {
            let entry = Entry::Deliver {
                target,
                event: event.clone(),
            };
            self.records.push(Record { step, time, entry });
        }
    }

    /// Closes a step: chains its hash onto the digest and, if asked, keeps
    /// the digest so that `step_digests[s]` is the digest after step `s`.
    fn end_step(&mut self) {
        self.seal();
        if self.record_steps {
            self.step_digests.push(self.digest);
        }
    }

    /// Chains what was recorded since the last step onto the digest, without
    /// making it a step (the final liveness verdict).
    fn seal(&mut self) {
        if !self.hashing {
            return;
        }
        let h = std::mem::take(&mut self.step_hasher).finish();
        self.digest = chain(self.digest, h);
    }
}

/// The first variants of [`Entry`], borrowed: declared in the same order so
/// that their derived hashes are those of the owned entries (a test checks).
#[derive(Hash)]
enum EntryRef<'a, E> {
    Deliver {
        target: &'a Target,
        event: &'a E,
    },
    #[allow(dead_code)]
    Drop {
        target: &'a Target,
        event: &'a E,
    },
}

struct EntryDisplay<'a, E, N>(&'a Entry<E, N>);

impl<E: fmt::Display, N: fmt::Display> fmt::Display for EntryDisplay<'_, E, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Entry::Deliver { event, .. } => write!(f, "{event}"),
            Entry::Drop { event, .. } => write!(f, "{event} (node crashed)"),
            Entry::Note(n) => write!(f, "{n}"),
            Entry::Crash(n) => write!(f, "node {} crashed", n.0),
            Entry::Restart(n) => write!(f, "node {} restarted", n.0),
            Entry::Fault {
                kind,
                site,
                targeted,
            } => {
                write!(f, "{kind}")?;
                if !site.is_empty() {
                    write!(f, " at {site}")?;
                }
                if *targeted {
                    f.write_str(" (targeted)")?;
                }
                Ok(())
            }
            Entry::Phase(Phase::Chaos) => f.write_str("chaos"),
            Entry::Phase(Phase::Heal) => f.write_str("heal: faults off"),
            Entry::Options(s) => f.write_str(s),
            Entry::Violation { invariant, message } => write!(f, "{invariant}: {message}"),
        }
    }
}

#[derive(Clone, Debug, Hash)]
enum Item<E> {
    Event(E),
    Heal,
}

#[derive(Clone, Debug)]
struct Queued<E> {
    target: Target,
    item: Item<E>,
}

/// At most this many simultaneous events are considered for one tie-break
/// decision; the rest wait for a later step.
const MAX_TIE: usize = 64;

/// The pending events' keys, each the time, the sequence number and the
/// slot as one integer ([`order_key`]); sequence numbers are unique, so
/// the order is that of `(time, seq)` and slots never decide it. A vector
/// sorted latest first rather than a heap: queues hold a few to a few dozen
/// events (a bursty one a few hundred), the next event is the last entry
/// (taking it moves nothing), and the simultaneous ones are a run at the
/// end in scheduling order from the back (the `k`-th alternative of a
/// tie-break is the `k`-th entry from the end).
#[derive(Debug, Default)]
struct Order {
    v: Vec<u128>,
}

impl Clone for Order {
    fn clone(&self) -> Self {
        Order { v: self.v.clone() }
    }

    fn clone_from(&mut self, source: &Self) {
        self.v.clone_from(&source.v);
    }
}

/// An order key: time, then sequence number, then slot, as one 16-byte
/// integer (ordered by time, then sequence number: those are unique).
///
/// # Panics
/// If `seq` needs more than 32 bits: more than 4 billion events scheduled
/// in one run (in protocol code, so it becomes a `sim.panic` violation).
/// Scenarios cap a run at [`MAX_STEPS`](crate::scenario::MAX_STEPS)
/// events, so only a world holding billions of pending events gets here.
#[inline]
fn order_key(at: Time, seq: u64, slot: u32) -> u128 {
    let seq = u32::try_from(seq).expect("at most 2^32 events are scheduled in one run");
    (u128::from(at.as_micros()) << 64) | (u128::from(seq) << 32) | u128::from(slot)
}

/// The time of an order key.
#[inline]
fn key_time(key: u128) -> Time {
    Time::from_micros((key >> 64) as u64)
}

/// The slot of an order key.
#[inline]
fn key_slot(key: u128) -> u32 {
    key as u32
}

/// The same time and sequence number in another slot.
#[inline]
fn with_slot(key: u128, slot: u32) -> u128 {
    (key & !u128::from(u32::MAX)) | u128::from(slot)
}

impl Order {
    /// Inserts a key in its place.
    #[inline]
    fn push(&mut self, e: u128) {
        let i = self.v.partition_point(|&k| k > e);
        self.v.insert(i, e);
    }

    /// The first key.
    #[inline]
    fn first(&self) -> Option<u128> {
        self.v.last().copied()
    }

    /// How many keys, of the first `max`, are at the first key's time.
    #[inline]
    fn ties(&self, max: usize) -> usize {
        let Some(&first) = self.v.last() else {
            return 0;
        };
        self.v
            .iter()
            .rev()
            .take(max)
            .take_while(|&&k| k >> 64 == first >> 64)
            .count()
    }

    /// Removes the `k`-th key in order.
    #[inline]
    fn take(&mut self, k: usize) -> u128 {
        if k == 0 {
            // The first key (no tie, or the first alternative): nothing to
            // shift.
            return self.v.pop().expect("taking a key from a non-empty order");
        }
        let i = self.v.len() - 1 - k;
        self.v.remove(i)
    }
}

/// The pending events: their `(time, seq, slot)` keys in order over a slab
/// of events, so that scheduling and delivering move a key, not events,
/// and reuse the slab's free slots instead of allocating.
#[derive(Debug)]
struct Queue<E> {
    order: Order,
    slots: Vec<Slot<E>>,
    /// The first free slot ([`NO_SLOT`] if none); free slots chain on.
    free: u32,
    next_seq: u64,
    /// Incremental fingerprints ([`Queue::track`]), for the explorer: how
    /// an event is hashed, each full slot's element hash, and their
    /// wrapping sum over the queued events. Off (`None`) in sweeps.
    track: Option<fn(&E, &mut Fingerprinter)>,
    hashes: Vec<u64>,
    sum: u64,
}

const NO_SLOT: u32 = u32::MAX;

#[derive(Clone, Debug)]
enum Slot<E> {
    Full(Queued<E>),
    /// Free; the next free slot.
    Free(u32),
}

/// A copy (the explorer copies worlds) is compacted: the live events only,
/// in slots renumbered in key order (slots never order events), with room
/// to schedule a few more without growing.
impl<E: Clone> Clone for Queue<E> {
    fn clone(&self) -> Self {
        const ROOM: usize = 8;
        let mut order = Vec::with_capacity(self.order.v.len() + ROOM);
        let mut slots = Vec::with_capacity(self.order.v.len() + ROOM);
        let mut hashes = Vec::new();
        for (i, &key) in self.order.v.iter().enumerate() {
            let slot = key_slot(key) as usize;
            slots.push(self.slots[slot].clone());
            order.push(with_slot(key, i as u32));
            if self.track.is_some() {
                hashes.push(self.hashes[slot]);
            }
        }
        Queue {
            // The same times and sequence numbers: still in order.
            order: Order { v: order },
            slots,
            free: NO_SLOT,
            next_seq: self.next_seq,
            track: self.track,
            hashes,
            sum: self.sum,
        }
    }

    /// A copy into this queue's buffers (the explorer recycles worlds: no
    /// allocation once they are large enough).
    fn clone_from(&mut self, source: &Self) {
        // Not compacted: the keys and the slots (free ones included) as
        // they are.
        self.order.clone_from(&source.order);
        self.slots.clone_from(&source.slots);
        self.free = source.free;
        self.next_seq = source.next_seq;
        self.track = source.track;
        self.hashes.clone_from(&source.hashes);
        self.sum = source.sum;
    }
}

impl<E: Hash> Queue<E> {
    fn new() -> Self {
        Queue {
            order: Order::default(),
            slots: Vec::new(),
            free: NO_SLOT,
            next_seq: 0,
            track: None,
            hashes: Vec::new(),
            sum: 0,
        }
    }

    /// Keeps the fingerprint of the queued events up to date as events come
    /// and go (each hashed once, when scheduled), instead of hashing them
    /// all at every [`Queue::fingerprint`]; `event` must be the one
    /// `fingerprint` is then called with.
    fn track(&mut self, event: fn(&E, &mut Fingerprinter)) {
        self.track = Some(event);
        self.hashes.clear();
        self.hashes.resize(self.slots.len(), 0);
        self.sum = 0;
        for &key in &self.order.v {
            let slot = key_slot(key);
            let h = element_hash(key_time(key), self.queued(slot), event);
            self.hashes[slot as usize] = h;
            self.sum = self.sum.wrapping_add(h);
        }
    }

    fn push(&mut self, at: Time, q: Queued<E>) {
        let hash = self.track.map(|event| element_hash(at, &q, event));
        self.next_seq += 1;
        let slot = if self.free == NO_SLOT {
            self.slots.push(Slot::Full(q));
            (self.slots.len() - 1) as u32
        } else {
            let slot = self.free;
            match std::mem::replace(&mut self.slots[slot as usize], Slot::Full(q)) {
                Slot::Free(next) => self.free = next,
                Slot::Full(_) => unreachable!("a free slot is free"),
            }
            slot
        };
        if let Some(h) = hash {
            if slot as usize >= self.hashes.len() {
                self.hashes.resize(slot as usize + 1, 0);
            }
            self.hashes[slot as usize] = h;
            self.sum = self.sum.wrapping_add(h);
        }
        self.order.push(order_key(at, self.next_seq, slot));
    }

    fn peek_time(&self) -> Option<Time> {
        self.order.first().map(key_time)
    }

    fn queued(&self, slot: u32) -> &Queued<E> {
        match &self.slots[slot as usize] {
            Slot::Full(q) => q,
            Slot::Free(_) => unreachable!("a queued slot is full"),
        }
    }

    /// Removes the next event; among simultaneous ones (the first
    /// [`MAX_TIE`] in scheduling order), a decision picks.
    fn pop(&mut self, chooser: &mut Chooser) -> Option<(Time, Queued<E>)> {
        let first = self.order.first()?;
        let t = key_time(first);
        // The events at the earliest time come first, in scheduling order:
        // the first MAX_TIE of them are the alternatives.
        let n = self.order.ties(MAX_TIE);
        let at = if n > 1 {
            chooser.choose(n as u32) as usize
        } else {
            0
        };
        let slot = key_slot(self.order.take(at));
        if self.track.is_some() {
            self.sum = self.sum.wrapping_sub(self.hashes[slot as usize]);
        }
        match std::mem::replace(&mut self.slots[slot as usize], Slot::Free(self.free)) {
            Slot::Full(q) => {
                self.free = slot;
                Some((t, q))
            }
            Slot::Free(_) => unreachable!("a queued slot is full"),
        }
    }

    /// Hashes the pending events without sequence numbers (they are
    /// counters, not state) and without their order: the queue is a
    /// multiset of `(time, target, event)`, since events at different times
    /// run in time order and which of several simultaneous ones goes first
    /// is a decision anyway. The multiset is hashed as the wrapping sum of
    /// its elements' (well-mixed, 64-bit) hashes: no sorting, no buffer,
    /// and (tracked) kept up to date as events come and go.
    fn fingerprint(&self, h: &mut Fingerprinter, event: fn(&E, &mut Fingerprinter)) {
        let sum = if self.track.is_some() {
            debug_assert_eq!(self.sum, self.element_sum(event), "tracked queue hash");
            self.sum
        } else {
            self.element_sum(event)
        };
        self.order.v.len().hash(h);
        sum.hash(h);
    }

    fn element_sum(&self, event: fn(&E, &mut Fingerprinter)) -> u64 {
        self.order.v.iter().fold(0u64, |sum, &key| {
            sum.wrapping_add(element_hash(
                key_time(key),
                self.queued(key_slot(key)),
                event,
            ))
        })
    }
}

/// The hash of one queued event in a queue's fingerprint: its time, target
/// and event, not its sequence number.
fn element_hash<E>(t: Time, q: &Queued<E>, event: fn(&E, &mut Fingerprinter)) -> u64 {
    let mut e = Fingerprinter::new();
    t.hash(&mut e);
    q.target.hash(&mut e);
    match &q.item {
        Item::Event(ev) => {
            0u8.hash(&mut e);
            event(ev, &mut e);
        }
        Item::Heal => 1u8.hash(&mut e),
    }
    e.finish()
}

#[derive(Clone, Copy, Debug, Hash)]
struct NodeSlot {
    up: bool,
    incarnation: u32,
}

/// Timing of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunLimits {
    /// When the chaos phase ends and the heal phase starts.
    pub chaos_end: Time,
    /// When the heal phase ends: no event after this is delivered.
    pub end: Time,
    /// The most events a run may take.
    pub max_steps: u64,
}

/// What to collect while running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Keep every trace record (for printing); off in sweeps.
    pub keep_trace: bool,
    /// Keep the digest after every step (for divergence reports).
    pub record_steps: bool,
    /// Log no decisions: [`Outcome::decisions`] comes back empty. The run
    /// itself (trace, digest, verdict) is the same. For sweeps, which run
    /// a failing seed again with the log on to write its seed file.
    pub skip_decisions: bool,
    /// Compute no trace digest: [`Outcome::digest`] comes back `None`. The
    /// run itself (events, verdict, decisions) is the same. For sweeps and
    /// the shrinker, which never read a digest: hashing every delivered
    /// event costs a sweep about 6% of its time. Ignored when
    /// [`record_steps`](RunOptions::record_steps) asks for the digests.
    pub skip_digest: bool,
}

/// The engine state a protocol handles events against.
#[derive(Debug)]
pub struct Core<E, N> {
    info: &'static ProtocolInfo,
    now: Time,
    step: u64,
    phase: Phase,
    limits: RunLimits,
    queue: Queue<E>,
    nodes: Vec<NodeSlot>,
    node_names: Shared<Vec<String>>,
    chooser: Chooser,
    faults: FaultState,
    trace: Trace<E, N>,
    violation: Option<(&'static str, String)>,
    verdict: Option<Violation>,
    /// Named counts of things a protocol wants reported (e.g. rebuilds
    /// completed). Reporting only: not state, not in the digest.
    counters: BTreeMap<&'static str, u64>,
    /// Whether the run stopped because the world reported itself settled
    /// (see [`Core::settled`]).
    settled: bool,
}

impl<E: Clone, N: Clone> Clone for Core<E, N> {
    fn clone(&self) -> Self {
        Core {
            info: self.info,
            now: self.now,
            step: self.step,
            phase: self.phase,
            limits: self.limits,
            queue: self.queue.clone(),
            nodes: self.nodes.clone(),
            node_names: self.node_names.clone(),
            chooser: self.chooser.clone(),
            faults: self.faults.clone(),
            trace: self.trace.clone(),
            violation: self.violation.clone(),
            verdict: self.verdict.clone(),
            counters: self.counters.clone(),
            settled: self.settled,
        }
    }

    /// Field by field, reusing this core's buffers.
    fn clone_from(&mut self, source: &Self) {
        self.info = source.info;
        self.now = source.now;
        self.step = source.step;
        self.phase = source.phase;
        self.limits = source.limits;
        self.queue.clone_from(&source.queue);
        self.nodes.clone_from(&source.nodes);
        self.node_names.clone_from(&source.node_names);
        self.chooser.clone_from(&source.chooser);
        self.faults.clone_from(&source.faults);
        self.trace.clone_from(&source.trace);
        self.violation.clone_from(&source.violation);
        self.verdict.clone_from(&source.verdict);
        self.counters.clone_from(&source.counters);
        self.settled = source.settled;
    }
}

impl<E: Clone + Hash + fmt::Display, N: Clone + Hash + fmt::Display> Core<E, N> {
    /// Virtual time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// The current step (the number of the event being handled).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the run stopped because [`Protocol::settled`] returned
    /// `true`. Nothing happens between that call and
    /// [`Protocol::check_liveness`], so what `settled` checked still holds
    /// there and need not be checked again.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// When the chaos phase ends.
    pub fn chaos_end(&self) -> Time {
        self.limits.chaos_end
    }

    /// Adds a node (up, incarnation 0). Call from [`Protocol::start`].
    pub fn add_node(&mut self, name: impl Into<String>) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(NodeSlot {
            up: true,
            incarnation: 0,
        });
        std::sync::Arc::make_mut(&mut self.node_names.0).push(name.into());
        id
    }

    /// The node's name, as shown in traces.
    pub fn node_name(&self, node: NodeId) -> &str {
        &self.node_names[node.0 as usize]
    }

    /// Whether the node is up.
    pub fn is_up(&self, node: NodeId) -> bool {
        self.nodes[node.0 as usize].up
    }

    /// The node's incarnation: bumped by every crash.
    pub fn incarnation(&self, node: NodeId) -> u32 {
        self.nodes[node.0 as usize].incarnation
    }

    /// Crashes a node: it is down, and every event bound to its current
    /// incarnation (timers, in-flight effects, messages to it) will be
    /// dropped. The protocol drops the node's volatile state itself.
    pub fn crash(&mut self, node: NodeId) {
        let slot = &mut self.nodes[node.0 as usize];
        debug_assert!(slot.up, "crashing a node that is down");
        slot.up = false;
        slot.incarnation += 1;
        self.record(Entry::Crash(node));
    }

    /// Restarts a crashed node under its new incarnation. The protocol
    /// rebuilds the node from its durable state itself.
    pub fn restart(&mut self, node: NodeId) {
        let slot = &mut self.nodes[node.0 as usize];
        debug_assert!(!slot.up, "restarting a node that is up");
        slot.up = true;
        self.record(Entry::Restart(node));
    }

    /// Schedules an environment event at `at` (clamped to now).
    pub fn env_at(&mut self, at: Time, event: E) {
        self.push(at, Target::Env, event);
    }

    /// Schedules an environment event after `delay_us` microseconds.
    pub fn env_after(&mut self, delay_us: u64, event: E) {
        let at = Time::from_micros(self.now.as_micros().saturating_add(delay_us));
        self.push(at, Target::Env, event);
    }

    /// Schedules an event for `node`'s current incarnation at `at`: dropped
    /// if the node crashes before then. Timers, effect completions and
    /// messages to the node all go through here.
    pub fn node_at(&mut self, node: NodeId, at: Time, event: E) {
        let incarnation = self.incarnation(node);
        self.push(at, Target::Node { node, incarnation }, event);
    }

    /// [`Core::node_at`] after `delay_us` microseconds.
    pub fn node_after(&mut self, node: NodeId, delay_us: u64, event: E) {
        let at = Time::from_micros(self.now.as_micros().saturating_add(delay_us));
        self.node_at(node, at, event);
    }

    fn push(&mut self, at: Time, target: Target, event: E) {
        let at = at.max(self.now);
        self.queue.push(
            at,
            Queued {
                target,
                item: Item::Event(event),
            },
        );
    }

    /// A workload decision: one of `n` alternatives.
    #[inline]
    pub fn choose(&mut self, n: u32) -> u32 {
        self.chooser.choose(n)
    }

    /// A workload decision: a value in `lo..=hi`.
    #[inline]
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.chooser.between(lo, hi)
    }

    /// A workload decision: `true` with probability `ppm` per million.
    #[inline]
    pub fn chance(&mut self, ppm: u32) -> bool {
        self.chooser.chance(ppm)
    }

    /// Whether to inject a fault of kind `kind` (an index into the
    /// protocol's fault list) at this opportunity. Never in the heal phase,
    /// never for a kind this run has off, never beyond the fault budget.
    pub fn fault(&mut self, kind: usize) -> bool {
        self.random_fault(kind, "")
    }

    fn random_fault(&mut self, kind: usize, site: &'static str) -> bool {
        if self.phase != Phase::Chaos {
            return false;
        }
        let Some(ppm) = self.faults.armed(kind) else {
            return false;
        };
        if !self.chooser.fault_chance(ppm) {
            return false;
        }
        self.faults.count(kind);
        let name = self.info.faults[kind].name;
        self.record(Entry::Fault {
            kind: name,
            site,
            targeted: false,
        });
        true
    }

    /// Whether to inject a fault of kind `kind` at this opportunity, a site
    /// of the protocol with its parameters: a targeted fault of the scenario
    /// that matches fires (still a logged decision, so shrinking can drop
    /// it); otherwise as [`Core::fault`]. Never in the heal phase.
    #[inline]
    pub fn fault_at(
        &mut self,
        kind: usize,
        site: &'static str,
        params: &[(&'static str, u64)],
    ) -> bool {
        // Most opportunities end here (heal phase, or a kind this run has
        // off): inlined, the caller builds no parameters for them.
        if self.phase != Phase::Chaos {
            return false;
        }
        debug_assert!(
            self.info
                .site(site)
                .is_some_and(|s| s.faults.contains(&self.info.faults[kind].name)),
            "fault {} is not declared at site {site}",
            self.info.faults[kind].name
        );
        if !self.faults.may_fire(kind) {
            return false;
        }
        self.fault_at_site(kind, site, params)
    }

    /// [`Core::fault_at`] for a kind that may fire.
    #[inline(never)]
    fn fault_at_site(
        &mut self,
        kind: usize,
        site: &'static str,
        params: &[(&'static str, u64)],
    ) -> bool {
        if let Some(t) = self.faults.targeted(kind, site, params, self.now) {
            if !self.chooser.forced_fault() {
                return false;
            }
            self.faults.fire_targeted(t);
            let name = self.info.faults[kind].name;
            self.record(Entry::Fault {
                kind: name,
                site,
                targeted: true,
            });
            return true;
        }
        self.random_fault(kind, site)
    }

    /// Counts one occurrence of something worth reporting (sweeps sum the
    /// counts per name): e.g. `rebuild.full_base.completed`. Reporting
    /// only: it affects neither the run nor its digest.
    pub fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
    }

    /// Adds a note to the trace.
    pub fn note(&mut self, note: N) {
        self.record(Entry::Note(note));
    }

    /// Reports a safety violation: the run stops after this event. The first
    /// report of a step wins.
    pub fn violate(&mut self, invariant: &'static str, message: impl Into<String>) {
        debug_assert!(
            self.info.invariant(invariant).is_some(),
            "unknown invariant {invariant}"
        );
        if self.violation.is_none() {
            self.violation = Some((invariant, message.into()));
        }
    }

    /// Whether a violation has been reported in this step.
    pub fn violated(&self) -> bool {
        self.violation.is_some()
    }

    fn record(&mut self, entry: Entry<E, N>) {
        self.trace.push(self.step, self.now, entry);
    }

    /// Records the run's violation (once) and keeps it as the verdict.
    fn convict(&mut self, invariant: &'static str, message: String) {
        debug_assert!(self.verdict.is_none());
        self.verdict = Some(Violation {
            invariant: invariant.to_owned(),
            step: self.step,
            time: self.now,
            message: message.clone(),
        });
        self.record(Entry::Violation { invariant, message });
    }

    fn render(&self, r: &Record<E, N>) -> TraceLine {
        let node_of = |t: &Target| match t {
            Target::Env => None,
            Target::Node { node, .. } => Some(self.node_name(*node).to_owned()),
        };
        let (kind, node) = match &r.entry {
            Entry::Deliver { target, .. } => ("deliver", node_of(target)),
            Entry::Drop { target, .. } => ("drop", node_of(target)),
            Entry::Note(_) => ("note", None),
            Entry::Crash(n) => ("crash", Some(self.node_name(*n).to_owned())),
            Entry::Restart(n) => ("restart", Some(self.node_name(*n).to_owned())),
            Entry::Fault { .. } => ("fault", None),
            Entry::Phase(_) => ("phase", None),
            Entry::Options(_) => ("options", None),
            Entry::Violation { .. } => ("violation", None),
        };
        let text = match &r.entry {
            Entry::Crash(_) => "crashed".to_owned(),
            Entry::Restart(_) => "restarted".to_owned(),
            e => EntryDisplay(e).to_string(),
        };
        TraceLine {
            step: r.step,
            time: r.time,
            kind,
            node,
            text,
            route: None,
        }
    }
}

/// A violated invariant, where and when.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Violation {
    /// The invariant's name, e.g. `locks.exclusion`.
    pub invariant: String,
    /// The step at which it was seen.
    pub step: u64,
    /// The virtual time at which it was seen.
    pub time: Time,
    /// What was wrong.
    pub message: String,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Events handled (steps).
    pub events: u64,
    /// The trace digest (`None` if the run was told to
    /// [skip it](RunOptions::skip_digest), or stopped digesting).
    pub digest: Option<u64>,
    /// Virtual time at the end.
    pub end_time: Time,
    /// Why the run stopped.
    pub stop: Stop,
    /// The violation, if any.
    pub violation: Option<Violation>,
    /// Faults injected, per kind (every kind of the protocol, zeros included).
    pub faults: BTreeMap<&'static str, u64>,
    /// Every decision taken, in order (none if the run was told to
    /// [skip them](RunOptions::skip_decisions)).
    pub decisions: Vec<Decision>,
    /// The digest after each step, if recorded.
    pub step_digests: Vec<u64>,
    /// The rendered trace, if kept.
    pub trace: Vec<TraceLine>,
    /// Transitions taken, one bit set per machine of the protocol.
    pub coverage: Vec<u128>,
    /// The protocol's named counts.
    pub counters: BTreeMap<&'static str, u64>,
}

impl Outcome {
    /// The trace digest of a run that kept it (every run but one told to
    /// [skip it](RunOptions::skip_digest)).
    ///
    /// # Panics
    /// If the run skipped it: a caller that reads digests runs with them.
    pub fn trace_digest(&self) -> u64 {
        self.digest
            .expect("the run kept its digest (RunOptions::skip_digest is off)")
    }
}

/// A protocol world on the engine.
#[derive(Debug)]
pub struct World<P: Protocol> {
    proto: P,
    core: Cx<P>,
    stopped: Option<Stop>,
}

impl<P: Protocol> Clone for World<P> {
    fn clone(&self) -> Self {
        World {
            proto: self.proto.clone(),
            core: self.core.clone(),
            stopped: self.stopped,
        }
    }

    /// Reuses this world's buffers where the protocol's `clone_from` does:
    /// the explorer copies states into recycled worlds.
    fn clone_from(&mut self, source: &Self) {
        self.proto.clone_from(&source.proto);
        self.core.clone_from(&source.core);
        self.stopped = source.stopped;
    }
}

impl<P: Protocol> World<P> {
    /// Builds the world: draws the fault options (swarm), starts the protocol.
    pub fn new(
        proto: P,
        limits: RunLimits,
        faults: &FaultConfig,
        source: Source,
        opts: RunOptions,
    ) -> World<P> {
        let info = P::info();
        let mut chooser = Chooser::new(source);
        chooser.set_logging(!opts.skip_decisions);
        let (fault_state, options) = FaultState::draw(info, faults, &mut chooser);
        let mut core = Core {
            info,
            now: Time::ZERO,
            step: 0,
            phase: Phase::Chaos,
            limits,
            queue: Queue::new(),
            nodes: Vec::new(),
            node_names: Shared::new(Vec::new()),
            chooser,
            faults: fault_state,
            trace: Trace {
                keep: opts.keep_trace,
                record_steps: opts.record_steps,
                records: Vec::new(),
                step_hasher: StableHasher::new(),
                hashing: !opts.skip_digest || opts.record_steps,
                digest: stable_hash(&("simcast-trace", 1u32, info.name)),
                step_digests: Vec::new(),
            },
            violation: None,
            verdict: None,
            counters: BTreeMap::new(),
            settled: false,
        };
        core.record(Entry::Options(options));
        core.queue.push(
            limits.chaos_end,
            Queued {
                target: Target::Env,
                item: Item::Heal,
            },
        );
        let mut world = World {
            proto,
            core,
            stopped: None,
        };
        world.guarded(|proto, core| proto.start(core));
        world.close_step();
        world
    }

    /// Takes the decisions of what follows from `source` (the log goes on).
    pub fn set_source(&mut self, source: Source) {
        self.core.chooser.set_source(source);
    }

    /// Stops hashing trace records into the digest, which then stays as it
    /// is: for the explorer, which never reads digests (it replays a path
    /// it reports in a run of its own).
    pub fn stop_digest(&mut self) {
        self.core.trace.hashing = false;
    }

    /// Keeps [`World::fingerprint`] cheap for a world that will be
    /// fingerprinted after every step (the explorer's): pending events are
    /// hashed once, as they are scheduled, not at every fingerprint. The
    /// fingerprint is the same either way; copies keep tracking.
    pub fn track_fingerprint(&mut self) {
        self.core.queue.track(P::fingerprint_event);
    }

    /// Takes the decisions of what follows from `values`, then 0s, as
    /// [`Source::recorded`] would (the log goes on), reusing the buffer of
    /// a recorded source already in place.
    pub fn replay(&mut self, values: &[u32]) {
        self.core.chooser.set_recorded(values);
    }

    /// Every decision taken so far, in order.
    pub fn decisions(&self) -> &[Decision] {
        self.core.chooser.log()
    }

    /// Forgets the decisions logged so far (they stay taken): what
    /// [`World::decisions`] returns next starts here. The explorer keeps each
    /// path's decisions itself and logs one step at a time.
    pub fn clear_decisions(&mut self) {
        self.core.chooser.clear_log();
    }

    /// The violation that stopped the run, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.core.verdict.as_ref()
    }

    /// Virtual time now.
    pub fn now(&self) -> Time {
        self.core.now
    }

    /// The protocol state.
    pub fn protocol(&self) -> &P {
        &self.proto
    }

    /// The engine state.
    pub fn core(&self) -> &Cx<P> {
        &self.core
    }

    /// Why the run stopped, once it has.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped
    }

    /// Handles the next event. Returns why the run stopped, once it has.
    pub fn step(&mut self) -> Option<Stop> {
        if self.stopped.is_some() {
            return self.stopped;
        }
        let Some(next) = self.core.queue.peek_time() else {
            return Some(self.finish(Stop::Quiet));
        };
        if next > self.core.limits.end {
            return Some(self.finish(Stop::TimeLimit));
        }
        if self.core.step >= self.core.limits.max_steps {
            return Some(self.finish(Stop::StepLimit));
        }
        self.core.step += 1;
        let (time, queued) = self
            .core
            .queue
            .pop(&mut self.core.chooser)
            .expect("peeked an event");
        debug_assert!(time >= self.core.now, "time went backwards");
        self.core.now = time;
        match queued.item {
            Item::Heal => {
                self.core.phase = Phase::Heal;
                self.core.record(Entry::Phase(Phase::Heal));
                self.guarded(|proto, core| proto.heal(core));
            }
            Item::Event(event) => match queued.target {
                Target::Env => {
                    let (step, now) = (self.core.step, self.core.now);
                    self.core.trace.push_deliver(step, now, Target::Env, &event);
                    self.guarded(|proto, core| proto.handle(core, None, event));
                }
                Target::Node { node, incarnation } => {
                    let slot = &self.core.nodes[node.0 as usize];
                    if slot.up && slot.incarnation == incarnation {
                        let (step, now) = (self.core.step, self.core.now);
                        self.core
                            .trace
                            .push_deliver(step, now, queued.target, &event);
                        self.guarded(|proto, core| proto.handle(core, Some(node), event));
                    } else {
                        self.core.record(Entry::Drop {
                            target: queued.target,
                            event,
                        });
                    }
                }
            },
        }
        if self.close_step() {
            return self.stopped;
        }
        if self.core.phase == Phase::Heal && self.proto.settled() {
            self.core.settled = true;
            return Some(self.finish(Stop::Settled));
        }
        None
    }

    /// Runs protocol code; a panic in it becomes a `sim.panic` violation of
    /// this step instead of tearing down the sweep, so it gets a seed file,
    /// replays and shrinks like any other failure.
    fn guarded(&mut self, f: impl FnOnce(&mut P, &mut Cx<P>)) {
        let (proto, core) = (&mut self.proto, &mut self.core);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(proto, core)));
        if let Err(payload) = result {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic with a non-string payload".to_owned());
            self.core.violation = Some((PANIC_INVARIANT, message));
        }
    }

    /// Ends the current step; a violation reported during it stops the run.
    /// Returns whether it did.
    fn close_step(&mut self) -> bool {
        let violated = match self.core.violation.take() {
            Some((invariant, message)) => {
                self.core.convict(invariant, message);
                self.stopped = Some(Stop::Violation);
                true
            }
            None => false,
        };
        self.core.trace.end_step();
        violated
    }

    fn finish(&mut self, stop: Stop) -> Stop {
        let liveness = if stop == Stop::StepLimit {
            Some((
                STEP_LIMIT_INVARIANT,
                format!(
                    "the run did not finish within {} events (livelock or runaway workload)",
                    self.core.limits.max_steps
                ),
            ))
        } else {
            let (proto, core) = (&self.proto, &self.core);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| proto.check_liveness(core)))
                .unwrap_or_else(|_| {
                    Some((PANIC_INVARIANT, "panic while checking liveness".to_owned()))
                })
        };
        let stop = match liveness {
            Some((invariant, message)) => {
                self.core.convict(invariant, message);
                self.core.trace.seal();
                Stop::Violation
            }
            None => stop,
        };
        self.stopped = Some(stop);
        stop
    }

    /// [`Protocol::check_liveness`] as if the run had not settled: every
    /// check made (tests hold a settled run to the full check).
    #[cfg(test)]
    pub(crate) fn liveness_in_full(&self) -> Option<(&'static str, String)> {
        let mut core = self.core.clone();
        core.settled = false;
        self.proto.check_liveness(&core)
    }

    /// Runs to the end.
    pub fn run(mut self) -> Outcome {
        while self.step().is_none() {}
        self.into_outcome()
    }

    /// The outcome so far (call once stopped).
    pub fn into_outcome(self) -> Outcome {
        let violation = self.core.verdict.clone();
        let trace = if self.core.trace.keep {
            self.core
                .trace
                .records
                .iter()
                .map(|r| {
                    let mut line = self.core.render(r);
                    if let Entry::Deliver { event, .. } | Entry::Drop { event, .. } = &r.entry {
                        line.route = Some(self.proto.route(event));
                    }
                    line
                })
                .collect()
        } else {
            Vec::new()
        };
        let faults = self.core.faults.counts(self.core.info);
        let coverage = self.proto.coverage().iter().map(Coverage::bits).collect();
        Outcome {
            coverage,
            counters: self.core.counters,
            events: self.core.step,
            digest: self.core.trace.hashing.then_some(self.core.trace.digest),
            end_time: self.core.now,
            stop: self.stopped.unwrap_or(Stop::Quiet),
            violation,
            faults,
            decisions: self.core.chooser.into_log(),
            step_digests: self.core.trace.step_digests,
            trace,
        }
    }

    /// A stable fingerprint of everything that affects what happens next:
    /// the protocol state, the pending events (in order, without sequence
    /// numbers), the nodes, the clock, the phase and the fault budget left.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Fingerprinter::new();
        self.proto.hash(&mut h);
        self.core.queue.fingerprint(&mut h, P::fingerprint_event);
        self.core.nodes.hash(&mut h);
        self.core.now.hash(&mut h);
        self.core.phase.hash(&mut h);
        self.core.faults.fingerprint(&mut h);
        // A run that has stopped (and had its liveness judged) is not the
        // state it stopped in.
        self.stopped.hash(&mut h);
        h.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{FaultInfo, InvariantInfo, InvariantKind};

    static INFO: ProtocolInfo = ProtocolInfo {
        name: "probe",
        doc: "engine test world",
        invariants: &[
            InvariantInfo {
                name: "probe.safe",
                kind: InvariantKind::Safety,
                doc: "",
            },
            InvariantInfo {
                name: "probe.live",
                kind: InvariantKind::Liveness,
                doc: "",
            },
        ],
        mutants: &[],
        faults: &[FaultInfo {
            name: "boom",
            doc: "",
        }],
        sites: &[crate::registry::SiteInfo {
            name: "probe",
            doc: "",
            params: &["n"],
            faults: &["boom"],
        }],
        machines: &[],
        unreachable: &[],
    };

    /// What the probe world does with each event.
    #[derive(Clone, Debug, Hash, PartialEq, Eq)]
    enum Ev {
        /// Log the label.
        Log(u32),
        /// Schedule `Log(label)` for node 0 after `delay` µs, then crash it.
        TimerThenCrash { label: u32, delay: u64 },
        /// Restart node 0.
        Restart,
        /// Ask for a `boom` fault; log 1 if injected, 0 if not.
        TryFault,
        /// Ask for a `boom` fault at site `probe` with `n`.
        TryFaultAt(u64),
        /// Report a safety violation.
        Violate,
        /// Panic.
        Panic,
        /// Schedule itself again (a runaway world).
        Forever,
    }

    impl fmt::Display for Ev {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    #[derive(Clone, Debug, Hash, Default)]
    struct Probe {
        script: Vec<(u64, Ev)>,
        log: Vec<u32>,
        pending_liveness: bool,
    }

    impl Protocol for Probe {
        type Event = Ev;
        type Note = String;
        fn info() -> &'static ProtocolInfo {
            &INFO
        }
        fn start(&mut self, cx: &mut Cx<Self>) {
            cx.add_node("n0");
            for (at, ev) in self.script.clone() {
                cx.env_at(Time::from_micros(at), ev);
            }
        }
        fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, ev: Ev) {
            match ev {
                Ev::Log(l) => self.log.push(l),
                Ev::TimerThenCrash { label, delay } => {
                    cx.node_after(NodeId(0), delay, Ev::Log(label));
                    cx.crash(NodeId(0));
                }
                Ev::Restart => cx.restart(NodeId(0)),
                Ev::TryFault => self.log.push(u32::from(cx.fault(0))),
                Ev::TryFaultAt(n) => self
                    .log
                    .push(u32::from(cx.fault_at(0, "probe", &[("n", n)]))),
                Ev::Violate => cx.violate("probe.safe", "told to"),
                Ev::Panic => panic!("probe panics"),
                Ev::Forever => cx.env_after(1, Ev::Forever),
            }
        }
        fn heal(&mut self, _cx: &mut Cx<Self>) {}
        fn check_liveness(&self, _cx: &Cx<Self>) -> Option<(&'static str, String)> {
            self.pending_liveness
                .then(|| ("probe.live", "still pending".to_owned()))
        }
        fn coverage(&self) -> Vec<Coverage> {
            Vec::new()
        }
    }

    fn limits() -> RunLimits {
        RunLimits {
            chaos_end: Time::from_micros(1_000),
            end: Time::from_micros(10_000),
            max_steps: 100,
        }
    }

    fn faults(p: f64, max: Option<u64>) -> FaultConfig {
        FaultConfig {
            swarm: false,
            max,
            rates: [("boom".to_owned(), p)].into_iter().collect(),
            targeted: Vec::new(),
        }
    }

    fn run(script: Vec<(u64, Ev)>, source: Source, faults: &FaultConfig) -> (Probe, Outcome) {
        let mut w = World::new(
            Probe {
                script,
                ..Probe::default()
            },
            limits(),
            faults,
            source,
            RunOptions {
                keep_trace: true,
                record_steps: true,
                skip_decisions: false,
                skip_digest: false,
            },
        );
        while w.step().is_none() {}
        let p = w.protocol().clone();
        (p, w.into_outcome())
    }

    #[test]
    fn borrowed_entries_hash_as_owned_ones() {
        let target = Target::Node {
            node: NodeId(1),
            incarnation: 2,
        };
        let event = Ev::Log(7);
        let owned = |e: &Entry<Ev, String>| stable_hash(e);
        let borrowed = |e: &EntryRef<'_, Ev>| stable_hash(e);
        assert_eq!(
            owned(&Entry::Deliver {
                target,
                event: event.clone()
            }),
            borrowed(&EntryRef::Deliver {
                target: &target,
                event: &event
            })
        );
        assert_eq!(
            owned(&Entry::Drop {
                target,
                event: event.clone()
            }),
            borrowed(&EntryRef::Drop {
                target: &target,
                event: &event
            })
        );
    }

    #[test]
    fn events_run_in_virtual_time_order() {
        let (p, o) = run(
            vec![(30, Ev::Log(3)), (10, Ev::Log(1)), (20, Ev::Log(2))],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        assert_eq!(p.log, [1, 2, 3]);
        assert_eq!(o.stop, Stop::Quiet);
        assert_eq!(o.step_digests.len() as u64, o.events + 1, "step 0 included");
    }

    #[test]
    fn simultaneous_events_are_ordered_by_a_decision() {
        let script = || vec![(5, Ev::Log(1)), (5, Ev::Log(2)), (5, Ev::Log(3))];
        let (p, o) = run(script(), Source::recorded(vec![]), &FaultConfig::default());
        assert_eq!(p.log, [1, 2, 3], "alternative 0 = earliest scheduled");
        assert_eq!(o.decisions[0].arity, 3);
        let (p, _) = run(
            script(),
            Source::recorded(vec![2, 1]),
            &FaultConfig::default(),
        );
        assert_eq!(p.log, [3, 2, 1]);
    }

    #[test]
    fn a_crash_drops_every_event_bound_to_the_old_incarnation() {
        let (p, o) = run(
            vec![
                (
                    10,
                    Ev::TimerThenCrash {
                        label: 7,
                        delay: 50,
                    },
                ),
                (20, Ev::Restart),
            ],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        assert!(p.log.is_empty(), "the timer died with its incarnation");
        assert!(o.trace.iter().any(|l| l.kind == "drop"));
    }

    #[test]
    fn faults_are_never_injected_after_the_chaos_phase() {
        let (p, o) = run(
            vec![(500, Ev::TryFault), (2_000, Ev::TryFault)],
            Source::recorded(vec![1, 1]),
            &faults(0.5, None),
        );
        assert_eq!(p.log, [1, 0]);
        assert_eq!(o.faults["boom"], 1);
    }

    #[test]
    fn the_fault_budget_caps_injections() {
        let script = (1..=5).map(|t| (t * 10, Ev::TryFault)).collect();
        let (p, o) = run(script, Source::recorded(vec![1; 5]), &faults(0.5, Some(2)));
        assert_eq!(p.log, [1, 1, 0, 0, 0]);
        assert_eq!(o.faults["boom"], 2);
        assert_eq!(
            o.decisions.iter().filter(|d| d.fault).count(),
            2,
            "a spent budget takes no decision"
        );
    }

    #[test]
    fn swarm_decisions_come_first_and_zero_turns_a_kind_off() {
        let mut cfg = faults(0.5, None);
        cfg.swarm = true;
        let (p, o) = run(vec![(10, Ev::TryFault)], Source::recorded(vec![0]), &cfg);
        assert_eq!(p.log, [0], "kind drawn off");
        assert_eq!(o.trace[0].text, "swarm: boom=off");
        let (_, o) = run(
            vec![(10, Ev::TryFault)],
            Source::recorded(vec![1, 2, 1]),
            &cfg,
        );
        assert_eq!(o.trace[0].text, "swarm: boom=1(x2)");
        assert_eq!(o.faults["boom"], 1);
    }

    #[test]
    fn a_safety_violation_stops_the_run_at_its_step() {
        let (p, o) = run(
            vec![(10, Ev::Log(1)), (20, Ev::Violate), (30, Ev::Log(3))],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        assert_eq!(p.log, [1]);
        let v = o.violation.expect("violated");
        assert_eq!((v.invariant.as_str(), v.step), ("probe.safe", 2));
        assert_eq!(v.time, Time::from_micros(20));
        assert_eq!(o.stop, Stop::Violation);
    }

    #[test]
    fn liveness_is_judged_when_the_run_stops() {
        let mut w = World::new(
            Probe {
                pending_liveness: true,
                ..Probe::default()
            },
            limits(),
            &FaultConfig::default(),
            Source::recorded(vec![]),
            RunOptions::default(),
        );
        while w.step().is_none() {}
        let o = w.into_outcome();
        assert_eq!(o.violation.unwrap().invariant, "probe.live");
    }

    #[test]
    fn a_panic_in_protocol_code_is_a_violation_not_a_crash() {
        let (_, o) = run(
            vec![(10, Ev::Panic)],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        let v = o.violation.expect("caught");
        assert_eq!(v.invariant, PANIC_INVARIANT);
        assert_eq!(v.message, "probe panics");
    }

    #[test]
    fn a_runaway_world_hits_the_step_limit() {
        let (_, o) = run(
            vec![(10, Ev::Forever)],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        assert_eq!(o.violation.unwrap().invariant, STEP_LIMIT_INVARIANT);
        assert_eq!(o.events, 100);
    }

    #[test]
    fn nothing_is_delivered_after_the_end() {
        let (p, o) = run(
            vec![(10, Ev::Log(1)), (20_000, Ev::Log(2))],
            Source::recorded(vec![]),
            &FaultConfig::default(),
        );
        assert_eq!(p.log, [1]);
        assert_eq!(o.stop, Stop::TimeLimit);
    }

    #[test]
    fn fingerprints_ignore_sequence_numbers_but_not_pending_events() {
        let build = |script: Vec<(u64, Ev)>| {
            World::new(
                Probe {
                    script,
                    ..Probe::default()
                },
                limits(),
                &FaultConfig::default(),
                Source::recorded(vec![]),
                RunOptions::default(),
            )
        };
        let a = build(vec![(10, Ev::Log(1)), (20, Ev::Log(2))]);
        let b = build(vec![(20, Ev::Log(2)), (10, Ev::Log(1))]);
        let c = build(vec![(10, Ev::Log(1)), (21, Ev::Log(2))]);
        // Same pending events scheduled in another order: same state (but
        // the scripts differ, so compare after both are consumed).
        let mut a2 = a.clone();
        let mut b2 = b.clone();
        a2.proto.script.clear();
        b2.proto.script.clear();
        assert_eq!(a2.fingerprint(), b2.fingerprint());
        let mut c2 = c.clone();
        c2.proto.script.clear();
        assert_ne!(a2.fingerprint(), c2.fingerprint());
    }

    #[test]
    fn a_tracked_fingerprint_is_the_computed_one_through_steps_and_copies() {
        let build = || {
            World::new(
                Probe {
                    script: vec![
                        (10, Ev::Log(1)),
                        (10, Ev::TimerThenCrash { label: 7, delay: 5 }),
                        (12, Ev::Log(2)),
                        (30, Ev::Restart),
                        (30, Ev::Log(3)),
                    ],
                    ..Probe::default()
                },
                limits(),
                &FaultConfig::default(),
                Source::recorded(vec![1, 0, 1]),
                RunOptions::default(),
            )
        };
        let mut plain = build();
        let mut tracked = build();
        tracked.track_fingerprint();
        let mut recycled = build();
        let mut steps = 0;
        while plain.stopped().is_none() {
            assert_eq!(tracked.fingerprint(), plain.fingerprint());
            assert_eq!(tracked.clone().fingerprint(), plain.fingerprint());
            recycled.clone_from(&tracked);
            assert_eq!(recycled.fingerprint(), plain.fingerprint());
            plain.step();
            tracked.step();
            steps += 1;
        }
        assert_eq!(tracked.stopped(), plain.stopped());
        assert_eq!(tracked.fingerprint(), plain.fingerprint());
        assert!(steps >= 5, "the script ran ({steps} steps)");
    }

    #[test]
    fn the_digest_is_a_function_of_the_decisions() {
        let script = || vec![(5, Ev::Log(1)), (5, Ev::Log(2))];
        let (_, a) = run(script(), Source::recorded(vec![0]), &FaultConfig::default());
        let (_, b) = run(script(), Source::recorded(vec![0]), &FaultConfig::default());
        let (_, c) = run(script(), Source::recorded(vec![1]), &FaultConfig::default());
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
    }

    fn targeted(
        n: u64,
        from_ms: Option<u64>,
        until_ms: Option<u64>,
        count: Option<u64>,
    ) -> FaultConfig {
        FaultConfig {
            swarm: false,
            max: None,
            rates: Default::default(),
            targeted: vec![crate::faults::TargetedFault {
                kind: "boom".to_owned(),
                at: "probe".to_owned(),
                params: [("n".to_owned(), n)].into_iter().collect(),
                from_ms,
                until_ms,
                count,
            }],
        }
    }

    #[test]
    fn a_targeted_fault_fires_on_its_predicate_window_and_count() {
        let script = vec![
            (10, Ev::TryFaultAt(2)),
            (20, Ev::TryFaultAt(1)),
            (30, Ev::TryFaultAt(2)),
            (40, Ev::TryFaultAt(2)),
            (50, Ev::TryFaultAt(2)),
        ];
        // n = 2 only, from 15 us... expressed in ms: use a window that
        // admits all but the first, and at most 2 firings.
        let cfg = targeted(2, None, None, Some(2));
        let (p, o) = run(script.clone(), Source::random(1), &cfg);
        assert_eq!(
            p.log,
            [1, 0, 1, 0, 0],
            "matching params only, at most twice"
        );
        assert_eq!(o.faults["boom"], 2);
        assert!(o.trace.iter().any(|l| l.text == "boom at probe (targeted)"));
        let cfg = targeted(2, Some(1), None, None);
        let (p, _) = run(script, Source::random(1), &cfg);
        assert_eq!(p.log, [0, 0, 0, 0, 0], "not before from_ms (1 ms)");
    }

    #[test]
    fn a_targeted_fault_is_a_decision_the_shrinker_can_drop() {
        let script = vec![(10, Ev::TryFaultAt(2)), (20, Ev::TryFaultAt(2))];
        let cfg = targeted(2, None, None, None);
        let (_, o) = run(script.clone(), Source::random(9), &cfg);
        let values: Vec<u32> = o.decisions.iter().map(|d| d.value).collect();
        assert_eq!(values, [1, 1]);
        assert!(o.decisions.iter().all(|d| d.fault && d.arity == 2));
        let (p, _) = run(script, Source::recorded(vec![0, 1]), &cfg);
        assert_eq!(p.log, [0, 1], "a recorded 0 drops the first firing");
    }

    proptest::proptest! {
        /// The queue against a reference: a list of `(time, seq, event)`
        /// where the next event is the `k`-th earliest-scheduled of those
        /// at the earliest time (`k` decided, among at most MAX_TIE). Events
        /// are scheduled at a few times, so ties are common; copies (as the
        /// explorer makes) behave as the original.
        #[test]
        fn the_queue_pops_as_a_reference_model(
            ops in proptest::collection::vec((0u8..3, 0u64..6, 0u32..80), 1..200),
        ) {
            let mut q: Queue<u32> = Queue::new();
            let mut model: Vec<(u64, u64, u32)> = Vec::new();
            let mut seq = 0;
            let mut event = 0u32;
            for (op, t, pick) in ops {
                if op < 2 || model.is_empty() {
                    event += 1;
                    seq += 1;
                    q.push(Time::from_micros(t), Queued { target: Target::Env, item: Item::Event(event) });
                    model.push((t, seq, event));
                    continue;
                }
                if op == 2 && pick % 7 == 0 {
                    q = q.clone();
                }
                model.sort_unstable();
                let earliest = model[0].0;
                let ties = model.iter().take_while(|m| m.0 == earliest).count();
                let n = ties.min(MAX_TIE) as u32;
                let k = if n > 1 { pick % n } else { 0 };
                let mut chooser = Chooser::new(Source::recorded(if n > 1 { vec![k] } else { vec![] }));
                let (time, got) = q.pop(&mut chooser).expect("not empty");
                let (t, _, want) = model.remove(k as usize);
                proptest::prop_assert_eq!(time, Time::from_micros(t));
                proptest::prop_assert!(matches!(got.item, Item::Event(e) if e == want));
                proptest::prop_assert_eq!(q.peek_time(), model.iter().map(|m| Time::from_micros(m.0)).min());
            }
        }
    }
}
