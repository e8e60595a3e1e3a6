//! The `fanout` protocol: a broker fanning lifecycle operations out to
//! backends over a lossy, duplicating, reordering network.
//!
//! World:
//! - node `broker` hosting a [`Broker`]. All its state is volatile: a crash
//!   loses the fanouts in flight (their caller gets no result); the restart
//!   builds a new broker under a new incarnation (a durable restart counter,
//!   never reused) and registers every backend again from service
//!   discovery;
//! - nodes `backend-N` hosting a [`Backend`] each, with durable storage for
//!   its answers (saved after every call, as the driver applies an operation
//!   and records its answer atomically). Some backends join late; some do
//!   not support every operation kind; a quiesced backend is replaced after
//!   a while by its next version (a new key registered at the end, the old
//!   one marked dead);
//! - service discovery (`discovery`): the registry as the broker is told it,
//!   in registration order. A failure detector reports a backend's death or
//!   return after a detection delay;
//! - a caller that starts fanouts (release handles, or quiesce with each
//!   reason) at random intervals, several in flight at once.
//!
//! Messages between the broker and the backends have random delays (so they
//! reorder) and may be lost or duplicated; an answer may come very late.
//!
//! Invariants, against the world's own record (the registry it told the
//! broker, snapshotted at each start; the answers it carried to the broker
//! and when; what each backend applied; which backends are quiesced or
//! draining):
//! - `fanout.result_partition`: every backend registered at the start is in
//!   exactly one bucket, each bucket in registration order; `skipped_dead`
//!   is exactly the backends dead at the start; `acks` and `failures` hold
//!   the first answer each backend got to the broker before the deadline,
//!   `timeouts` those that got none (and only once the deadline passed);
//! - `fanout.applied_once`: no backend is asked to apply an operation it has
//!   already applied;
//! - `fanout.no_delivery_to_dead`: the broker hands the network no request
//!   for a backend that was dead at the fanout's start, nor a retransmission
//!   to one known dead now;
//! - `fanout.bounded_wait`: every fanout of a live broker reports its result
//!   at most the ack timeout plus one tick (1 ms) after it started;
//! - `fanout.quiesced_accepts_nothing`: a quiesced or draining backend is
//!   never asked to apply anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use core::time::Duration;
use serde::{Deserialize, Serialize};
use simcast_machines::coverage::Coverage;
use simcast_machines::fanout::{
    Answer, ApplyResult, BACKEND_TRANSITIONS, BROKER_TRANSITIONS, Backend, BackendConfig,
    BackendDurable, BackendKey, BackendOutput, Broker, BrokerOutput, FanoutFlaw, FanoutResult,
    Operation, OperationId, OperationKind, Policy, QuiesceReason, Reply, ReplyOutcome, Request,
};
use simcast_machines::time::Time;

use crate::engine::{Cx, NodeId, Protocol, Shared};
use crate::faults::ppm;
use crate::protocols::checks::{self, us};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

const RESULT_PARTITION: &str = "fanout.result_partition";
const APPLIED_ONCE: &str = "fanout.applied_once";
const NO_DELIVERY_TO_DEAD: &str = "fanout.no_delivery_to_dead";
const BOUNDED_WAIT: &str = "fanout.bounded_wait";
const QUIESCED_ACCEPTS_NOTHING: &str = "fanout.quiesced_accepts_nothing";

/// Names of the fanout protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "fanout",
    doc: "lifecycle fanout from a broker to backends: partitioned results, dedup, quiesce",
    invariants: &[
        InvariantInfo {
            name: RESULT_PARTITION,
            kind: InvariantKind::Safety,
            doc: "every backend registered at the start lands in exactly one bucket, in registration order; skipped iff dead; answers as delivered",
        },
        InvariantInfo {
            name: APPLIED_ONCE,
            kind: InvariantKind::Safety,
            doc: "a backend applies each operation at most once",
        },
        InvariantInfo {
            name: NO_DELIVERY_TO_DEAD,
            kind: InvariantKind::Safety,
            doc: "a backend dead at a fanout's start (or known dead since) is sent nothing for it",
        },
        InvariantInfo {
            name: BOUNDED_WAIT,
            kind: InvariantKind::Safety,
            doc: "a live broker reports each fanout's result within the ack timeout plus one tick",
        },
        InvariantInfo {
            name: QUIESCED_ACCEPTS_NOTHING,
            kind: InvariantKind::Safety,
            doc: "a quiesced or draining backend applies no new operation",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "send-to-dead",
            invariant: NO_DELIVERY_TO_DEAD,
            doc: "the broker reports dead backends as skipped but sends them the operation anyway",
        },
        MutantInfo {
            name: "backend-no-dedup",
            invariant: APPLIED_ONCE,
            doc: "a backend forgets which operations it answered and applies a retransmission again",
        },
    ],
    faults: &[
        FaultInfo {
            name: "broker_crash",
            doc: "the broker crashes as it handles an event (fanouts in flight are lost), and restarts later",
        },
        FaultInfo {
            name: "backend_crash",
            doc: "a backend crashes as it handles an event, and comes back later from its durable answers",
        },
        FaultInfo {
            name: "msg_loss",
            doc: "a request or an answer is lost",
        },
        FaultInfo {
            name: "msg_duplicate",
            doc: "a request or an answer is delivered twice",
        },
        FaultInfo {
            name: "late_answer",
            doc: "an answer is delayed by late_factor (often past the deadline)",
        },
        FaultInfo {
            name: "apply_fail",
            doc: "a backend fails to apply an operation (answered backend error)",
        },
        FaultInfo {
            name: "slow_apply",
            doc: "a backend takes late_factor times longer to apply an operation",
        },
        FaultInfo {
            name: "quiesce",
            doc: "the caller's next fanout is a quiesce (with a random reason) instead of a release",
        },
    ],
    sites: &[
        SiteInfo {
            name: "broker_event",
            doc: "the broker is about to handle an answer or a timer",
            params: &[],
            faults: &["broker_crash"],
        },
        SiteInfo {
            name: "backend_event",
            doc: "a backend is about to handle a request or an apply completion (backend 1 = backend-1)",
            params: &["backend"],
            faults: &["backend_crash"],
        },
        SiteInfo {
            name: "request_send",
            doc: "the broker sends a request (or a retransmission) to a backend",
            params: &["backend"],
            faults: &["msg_loss", "msg_duplicate"],
        },
        SiteInfo {
            name: "reply_send",
            doc: "a backend sends its answer to the broker",
            params: &["backend"],
            faults: &["msg_loss", "msg_duplicate", "late_answer"],
        },
        SiteInfo {
            name: "apply",
            doc: "a backend starts applying an operation",
            params: &["backend"],
            faults: &["apply_fail", "slow_apply"],
        },
        SiteInfo {
            name: "caller_start",
            doc: "the caller is about to start a fanout",
            params: &[],
            faults: &["quiesce"],
        },
    ],
    machines: &[
        ("broker", BROKER_TRANSITIONS),
        ("backend", BACKEND_TRANSITIONS),
    ],
    unreachable: &[
        (
            "broker: set live: unknown backend refused",
            "the world changes the liveness of registered backends only",
        ),
        (
            "backend: completion for nothing applying refused",
            "a completion lost in a crash dies with its incarnation; none is reported twice",
        ),
    ],
};

const F_BROKER_CRASH: usize = 0;
const F_BACKEND_CRASH: usize = 1;
const F_LOSS: usize = 2;
const F_DUP: usize = 3;
const F_LATE: usize = 4;
const F_APPLY_FAIL: usize = 5;
const F_SLOW_APPLY: usize = 6;
const F_QUIESCE: usize = 7;

/// The slack of `fanout.bounded_wait` beyond the ack timeout: one tick of
/// the policy's clock (its 1 ms floor).
const WAIT_SLACK_US: u64 = 1_000;

/// The `[workload]` table of a fanout scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutWorkload {
    /// Backends registered from the start.
    pub backends: u32,
    /// Backends that join (register at the end) at a random time during the
    /// first half of the chaos phase.
    #[serde(default)]
    pub late_backends: u32,
    /// Fanouts the caller starts (attempts: a refused or unavailable start
    /// counts).
    pub operations: u32,
    /// Pause between the caller's starts.
    pub interval_ms: [u64; 2],
    /// The broker's ack timeout.
    pub ack_timeout_ms: u64,
    /// The broker's retransmit interval.
    pub retransmit_ms: u64,
    /// Fanouts in flight at once.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// One-way network delay.
    pub net_ms: [u64; 2],
    /// How long a backend takes to apply an operation.
    pub apply_ms: [u64; 2],
    /// Probability that a backend does not support one of the operation
    /// kinds (drawn per backend).
    #[serde(default)]
    pub unsupported_ratio: f64,
    /// A late answer or a slow apply is this many times slower.
    #[serde(default = "default_late")]
    pub late_factor: u64,
    /// How long a crashed node stays down.
    pub restart_ms: [u64; 2],
    /// How long the failure detector takes to notice a death or a return.
    pub detect_ms: [u64; 2],
    /// How long after its quiesce a backend is replaced by its next version.
    pub replace_ms: [u64; 2],
}

fn default_in_flight() -> u32 {
    4
}
fn default_late() -> u64 {
    20
}

impl FanoutWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        checks::at_least_one(&[
            ("operations", u64::from(self.operations)),
            ("ack_timeout_ms", self.ack_timeout_ms),
            ("retransmit_ms", self.retransmit_ms),
            ("max_in_flight", u64::from(self.max_in_flight)),
            ("late_factor", self.late_factor),
        ])?;
        if self.backends + self.late_backends == 0 {
            return Err("`backends` plus `late_backends` must be at least 1".to_owned());
        }
        if self.backends + self.late_backends > 64 {
            return Err("`backends` plus `late_backends` must be at most 64".to_owned());
        }
        checks::probabilities(&[("unsupported_ratio", self.unsupported_ratio)])?;
        checks::ranges(&[
            ("interval_ms", self.interval_ms),
            ("net_ms", self.net_ms),
            ("apply_ms", self.apply_ms),
            ("restart_ms", self.restart_ms),
            ("detect_ms", self.detect_ms),
            ("replace_ms", self.replace_ms),
        ])?;
        if self.net_ms[0] == 0 {
            return Err("`net_ms` must be at least 1 ms".to_owned());
        }
        if self.interval_ms[1] == 0 {
            return Err("`interval_ms` must allow a pause of at least 1 ms".to_owned());
        }
        Ok(())
    }
}

/// The workload in engine units, hashable.
#[derive(Clone, Debug, Hash)]
struct Params {
    backends: u32,
    late_backends: u32,
    operations: u32,
    interval_us: (u64, u64),
    timeout_us: u64,
    policy: Policy,
    net_us: (u64, u64),
    apply_us: (u64, u64),
    unsupported_ppm: u32,
    late: u64,
    restart_us: (u64, u64),
    detect_us: (u64, u64),
    replace_us: (u64, u64),
    flaw: Option<FanoutFlaw>,
    /// The callers' release-handles paths, `/data/0` to `/data/7`, built
    /// once (constant: adds nothing to the world's identity).
    paths: Shared<Vec<Arc<str>>>,
}

/// A backend slot and its version: which backend instance a message is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    /// The slot (node `backend-<slot+1>`).
    pub slot: u32,
    /// The version running in the slot (from 1; a replacement bumps it).
    pub version: u32,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend-{}@v{}", self.slot + 1, self.version)
    }
}

fn key_of(a: Addr) -> BackendKey {
    BackendKey::new(
        format!("host-{}", a.slot + 1),
        format!("backend-{}", a.slot + 1),
        format!("v{}", a.version),
    )
}

/// The key of `a`: the slot's, if `a` is its current version.
fn key(slots: &[Slot], a: Addr) -> BackendKey {
    match slots.get(a.slot as usize) {
        Some(s) if s.version == a.version => s.key.clone(),
        _ => key_of(a),
    }
}

fn addr_of(key: &BackendKey) -> Option<Addr> {
    let slot: u32 = key.name.strip_prefix("backend-")?.parse().ok()?;
    let version: u32 = key.version.strip_prefix('v')?.parse().ok()?;
    Some(Addr {
        slot: slot.checked_sub(1)?,
        version,
    })
}

/// Events of the fanout world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FanoutEvent {
    /// The caller starts its next fanout.
    CallerWake,
    /// A request reaches a backend.
    Request {
        /// The addressee.
        to: Addr,
        /// The request.
        request: Request,
    },
    /// An answer reaches the broker.
    Reply {
        /// The sender.
        from: Addr,
        /// The answer.
        reply: Reply,
    },
    /// A backend finished applying an operation.
    Applied {
        /// The backend.
        at: Addr,
        /// The operation.
        id: OperationId,
        /// How it went.
        result: ApplyResult,
    },
    /// The broker's timer.
    BrokerTimer,
    /// The crashed broker comes back.
    BrokerRestart,
    /// A crashed backend comes back.
    BackendRestart {
        /// Its slot.
        slot: u32,
    },
    /// The failure detector reports a slot's current state to discovery.
    Detect {
        /// The slot.
        slot: u32,
    },
    /// A late backend joins.
    Join {
        /// Its slot.
        slot: u32,
    },
    /// A quiesced backend is replaced by its next version.
    Replace {
        /// Its slot.
        slot: u32,
    },
}

struct OpShow<'a>(&'a Operation);

impl fmt::Display for OpShow<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Operation::ReleaseHandles { path_prefix } => write!(f, "release {path_prefix}"),
            Operation::Quiesce { reason } => write!(f, "quiesce ({reason:?})"),
        }
    }
}

fn answer_show(a: Answer) -> String {
    match a {
        Answer::Ack => "ack".to_owned(),
        Answer::Failure(r) => format!("{r:?}"),
    }
}

impl fmt::Display for FanoutEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FanoutEvent::CallerWake => f.write_str("caller wakes"),
            FanoutEvent::Request { to, request } => {
                write!(f, "{} {} reaches {to}", request.id, OpShow(&request.op))
            }
            FanoutEvent::Reply { from, reply } => write!(
                f,
                "{} answer {} from {from}",
                reply.id,
                answer_show(reply.answer)
            ),
            FanoutEvent::Applied { at, id, result } => {
                write!(f, "{at} finished applying {id}: {result:?}")
            }
            FanoutEvent::BrokerTimer => f.write_str("broker timer"),
            FanoutEvent::BrokerRestart => f.write_str("broker restarts"),
            FanoutEvent::BackendRestart { slot } => write!(f, "backend-{} restarts", slot + 1),
            FanoutEvent::Detect { slot } => {
                write!(f, "failure detector checks backend-{}", slot + 1)
            }
            FanoutEvent::Join { slot } => write!(f, "backend-{} joins", slot + 1),
            FanoutEvent::Replace { slot } => {
                write!(f, "quiesced backend-{} is replaced", slot + 1)
            }
        }
    }
}

/// What the fanout world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FanoutNote {
    /// The broker started a fanout.
    Started {
        /// The fanout.
        id: OperationId,
        /// Live backends at the start.
        live: u32,
        /// Dead backends at the start.
        dead: u32,
    },
    /// The broker refused a start (too many in flight).
    Refused,
    /// The broker is down: the caller's start failed.
    Unavailable,
    /// A fanout's result.
    Result {
        /// The fanout.
        id: OperationId,
        /// Bucket sizes: acks, timeouts, failures, skipped dead.
        sizes: [u32; 4],
    },
    /// The broker ignored an answer.
    Ignored {
        /// The fanout answered.
        id: OperationId,
        /// The sender.
        from: Addr,
        /// Why.
        outcome: ReplyOutcome,
    },
    /// Discovery changed a backend's liveness (and told the broker, if up).
    Liveness {
        /// The backend.
        backend: Addr,
        /// Now live or dead.
        live: bool,
    },
    /// A request reached a slot whose backend version has changed.
    Stale {
        /// The addressee.
        to: Addr,
    },
    /// Fanouts lost with a crashed broker.
    Abandoned {
        /// How many.
        count: u32,
    },
    /// The broker came back under a new incarnation.
    BrokerRecovered {
        /// Its incarnation.
        incarnation: u64,
    },
    /// A backend came back from its durable answers.
    BackendRecovered {
        /// The backend.
        backend: Addr,
        /// Whether it is quiesced.
        quiesced: bool,
    },
}

impl fmt::Display for FanoutNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FanoutNote::Started { id, live, dead } => {
                write!(f, "broker starts {id}: {live} live, {dead} dead")
            }
            FanoutNote::Refused => f.write_str("broker refuses: too many fanouts in flight"),
            FanoutNote::Unavailable => f.write_str("broker down: start failed"),
            FanoutNote::Result { id, sizes } => write!(
                f,
                "{id} done: {} acks, {} timeouts, {} failures, {} skipped dead",
                sizes[0], sizes[1], sizes[2], sizes[3]
            ),
            FanoutNote::Ignored { id, from, outcome } => {
                write!(f, "broker ignores {id} answer from {from}: {outcome:?}")
            }
            FanoutNote::Liveness { backend, live } => write!(
                f,
                "discovery: {backend} is {}",
                if *live { "live" } else { "dead" }
            ),
            FanoutNote::Stale { to } => write!(f, "{to} is gone: request dropped"),
            FanoutNote::Abandoned { count } => {
                write!(f, "{count} fanouts lost with the broker")
            }
            FanoutNote::BrokerRecovered { incarnation } => {
                write!(f, "broker back as incarnation {incarnation}")
            }
            FanoutNote::BackendRecovered { backend, quiesced } => write!(
                f,
                "{backend} recovered its answers{}",
                if *quiesced { " (quiesced)" } else { "" }
            ),
        }
    }
}

/// One backend slot: a node hosting successive versions of a backend.
#[derive(Clone, Debug, Hash)]
struct Slot {
    node: NodeId,
    version: u32,
    /// The current version's key (a function of the slot and `version`).
    key: BackendKey,
    cfg: BackendConfig,
    /// Up and running (`None` while down or before joining).
    backend: Option<Backend>,
    /// The current version's storage while it is down (empty while it is
    /// up). A backend saves its durable state after every call and crashes
    /// only between calls, so its state at the crash is its last save: it
    /// is copied then, not after every call.
    durable: BackendDurable,
    joined: bool,
    /// Apply effects in flight in this incarnation (the world's record).
    applying: BTreeMap<OperationId, Operation>,
    /// A replacement is scheduled.
    replacing: bool,
}

/// A registry entry as discovery knows it (and told the broker).
#[derive(Clone, Debug, Hash)]
struct Registered {
    addr: Addr,
    live: bool,
    /// An old version, replaced: dead for good.
    retired: bool,
}

/// What the world knows of one fanout.
#[derive(Clone, Debug, Hash)]
struct FanoutRec {
    op: Operation,
    started_at: Time,
    /// The registry at the start, in registration order, with liveness.
    registry: Vec<(Addr, bool)>,
    /// The first answer of each backend delivered to the broker before the
    /// deadline while the fanout was open.
    answers: BTreeMap<Addr, Answer>,
    open: bool,
}

/// The fanout world.
#[derive(Clone, Debug, Hash)]
pub struct FanoutWorld {
    p: Params,
    broker_node: NodeId,
    broker: Option<Broker>,
    /// Durable restart counter: the next broker incarnation.
    next_incarnation: u64,
    /// Times at which a broker timer event is queued (this incarnation).
    timers: BTreeSet<Time>,
    slots: Vec<Slot>,
    /// Discovery: the registry in registration order.
    registry: Vec<Registered>,
    caller_attempts: u32,
    caller_done: bool,
    fanouts: BTreeMap<OperationId, FanoutRec>,
    /// Fanouts not yet finished, of the current broker incarnation.
    open: BTreeSet<OperationId>,
    /// Completed applications, per backend and operation.
    applied: BTreeSet<(Addr, OperationId)>,
    /// Backends whose quiesce was applied, and when.
    quiesced: BTreeMap<Addr, Time>,
    /// Transitions of machines lost in crashes (not state).
    lost_coverage: [Coverage; 2],
}

impl FanoutWorld {
    /// A world for `w`, with the mutant applied.
    pub fn new(w: &FanoutWorkload, mutant: Option<&'static MutantInfo>) -> FanoutWorld {
        let flaw = mutant.map(|m| match m.name {
            "send-to-dead" => FanoutFlaw::SendToDead,
            "backend-no-dedup" => FanoutFlaw::BackendNoDedup,
            other => unreachable!("mutant {other} is not a fanout mutant"),
        });
        let policy = Policy::new(Duration::from_millis(w.ack_timeout_ms))
            .with_retransmit_interval(Duration::from_millis(w.retransmit_ms))
            .with_max_in_flight(w.max_in_flight as usize);
        FanoutWorld {
            p: Params {
                paths: Shared::new((0..8).map(|i| format!("/data/{i}").into()).collect()),
                backends: w.backends,
                late_backends: w.late_backends,
                operations: w.operations,
                interval_us: us(w.interval_ms),
                timeout_us: w.ack_timeout_ms.saturating_mul(1000),
                policy,
                net_us: us(w.net_ms),
                apply_us: us(w.apply_ms),
                unsupported_ppm: ppm(w.unsupported_ratio),
                late: w.late_factor,
                restart_us: us(w.restart_ms),
                detect_us: us(w.detect_ms),
                replace_us: us(w.replace_ms),
                flaw,
            },
            broker_node: NodeId(0),
            broker: None,
            next_incarnation: 1,
            timers: BTreeSet::new(),
            slots: Vec::new(),
            registry: Vec::new(),
            caller_attempts: 0,
            caller_done: false,
            fanouts: BTreeMap::new(),
            open: BTreeSet::new(),
            applied: BTreeSet::new(),
            quiesced: BTreeMap::new(),
            lost_coverage: [Coverage::new(); 2],
        }
    }

    fn addr(&self, slot: u32) -> Addr {
        Addr {
            slot,
            version: self.slots[slot as usize].version,
        }
    }

    fn net(&self, cx: &mut Cx<Self>) -> u64 {
        cx.between(self.p.net_us.0, self.p.net_us.1)
    }

    fn flaw(&self) -> Option<FanoutFlaw> {
        self.p.flaw
    }

    // ----- the broker ------------------------------------------------------

    /// Runs `f` on the broker (if up), then carries out what it asks for.
    fn with_broker<R>(
        &mut self,
        cx: &mut Cx<Self>,
        f: impl FnOnce(&mut Broker, Time) -> R,
    ) -> Option<R> {
        let now = cx.now();
        let r = f(self.broker.as_mut()?, now);
        self.drive_broker(cx);
        Some(r)
    }

    fn drive_broker(&mut self, cx: &mut Cx<Self>) {
        while let Some(out) = self.broker.as_mut().and_then(Broker::poll_output) {
            match out {
                BrokerOutput::Send { backend, request } => self.on_send(cx, &backend, request),
                BrokerOutput::Done(result) => self.on_result(cx, &result),
            }
        }
        if let Some(due) = self
            .broker
            .as_ref()
            .and_then(Broker::poll_timeout)
            .map(|t| t.max(cx.now()))
            && self.timers.first().is_none_or(|first| due < *first)
        {
            self.timers.insert(due);
            cx.node_at(self.broker_node, due, FanoutEvent::BrokerTimer);
        }
    }

    /// The broker hands the network a request: `no_delivery_to_dead`, then
    /// the lossy, duplicating network.
    fn on_send(&mut self, cx: &mut Cx<Self>, key: &BackendKey, request: Request) {
        let Some(to) = addr_of(key) else {
            cx.violate(
                NO_DELIVERY_TO_DEAD,
                format!("{} sent to {key}, which was never registered", request.id),
            );
            return;
        };
        if let Some(rec) = self.fanouts.get(&request.id) {
            match rec.registry.iter().find(|(a, _)| *a == to) {
                Some((_, false)) => {
                    cx.violate(
                        NO_DELIVERY_TO_DEAD,
                        format!(
                            "{} sent to {to}, which was dead when it started",
                            request.id
                        ),
                    );
                    return;
                }
                None => {
                    cx.violate(
                        NO_DELIVERY_TO_DEAD,
                        format!(
                            "{} sent to {to}, which was not registered when it started",
                            request.id
                        ),
                    );
                    return;
                }
                Some((_, true)) => {}
            }
        }
        if self.registry.iter().any(|r| r.addr == to && !r.live) {
            cx.violate(
                NO_DELIVERY_TO_DEAD,
                format!("{} retransmitted to {to}, known dead now", request.id),
            );
            return;
        }
        let site = [("backend", u64::from(to.slot) + 1)];
        if cx.fault_at(F_LOSS, "request_send", &site) {
            return;
        }
        let node = self.slots[to.slot as usize].node;
        if cx.fault_at(F_DUP, "request_send", &site) {
            let d = self.net(cx);
            cx.node_after(
                node,
                d,
                FanoutEvent::Request {
                    to,
                    request: request.clone(),
                },
            );
        }
        let d = self.net(cx);
        cx.node_after(node, d, FanoutEvent::Request { to, request });
    }

    /// A result: `result_partition` and `bounded_wait` against the record.
    fn on_result(&mut self, cx: &mut Cx<Self>, result: &FanoutResult) {
        let id = result.id;
        cx.note(FanoutNote::Result {
            id,
            sizes: [
                result.acks.len() as u32,
                result.timeouts.len() as u32,
                result.failures.len() as u32,
                result.skipped_dead.len() as u32,
            ],
        });
        cx.count(if result.sent_count() == 0 {
            "result.none_live"
        } else if !result.timeouts.is_empty() {
            "result.with_timeouts"
        } else if !result.failures.is_empty() {
            "result.with_failures"
        } else {
            "result.all_acked"
        });
        self.open.remove(&id);
        let Some(rec) = self.fanouts.get_mut(&id) else {
            cx.violate(
                RESULT_PARTITION,
                format!("result for {id}, which was never started"),
            );
            return;
        };
        if !rec.open {
            cx.violate(RESULT_PARTITION, format!("a second result for {id}"));
            return;
        }
        rec.open = false;
        let rec = rec.clone();
        let now = cx.now();
        let deadline = rec.started_at.as_micros().saturating_add(self.p.timeout_us);
        if now.as_micros() > deadline.saturating_add(WAIT_SLACK_US) {
            cx.violate(
                BOUNDED_WAIT,
                format!(
                    "{id} started at {} reported its result at {now}, beyond the {} ms timeout",
                    rec.started_at,
                    self.p.timeout_us / 1000
                ),
            );
        }
        if let Some(problem) = partition_problem(&rec, result, now, deadline) {
            cx.violate(RESULT_PARTITION, format!("{id}: {problem}"));
        }
    }

    /// `bounded_wait` as time passes: no open fanout of the live broker is
    /// older than the timeout plus a tick.
    fn check_waits(&self, cx: &mut Cx<Self>) {
        let now = cx.now().as_micros();
        for id in &self.open {
            let rec = &self.fanouts[id];
            if now
                > rec
                    .started_at
                    .as_micros()
                    .saturating_add(self.p.timeout_us)
                    .saturating_add(WAIT_SLACK_US)
            {
                cx.violate(
                    BOUNDED_WAIT,
                    format!(
                        "{id} started at {} has no result at {}",
                        rec.started_at,
                        cx.now()
                    ),
                );
                return;
            }
        }
    }

    fn on_caller_wake(&mut self, cx: &mut Cx<Self>) {
        if self.caller_attempts >= self.p.operations {
            self.caller_done = true;
            return;
        }
        self.caller_attempts += 1;
        let op = if cx.fault_at(F_QUIESCE, "caller_start", &[]) {
            let reason = [
                QuiesceReason::IdleTimeout,
                QuiesceReason::BrokerShutdown,
                QuiesceReason::Maintenance,
            ][cx.choose(3) as usize];
            Operation::quiesce(reason)
        } else {
            Operation::release_handles(self.p.paths[(self.caller_attempts % 8) as usize].clone())
        };
        if self.broker.is_some() {
            let now = cx.now();
            let started = self.broker.as_mut().map(|b| b.start(now, op.clone()));
            match started {
                Some(Ok(id)) => {
                    let registry: Vec<(Addr, bool)> =
                        self.registry.iter().map(|r| (r.addr, r.live)).collect();
                    let live = registry.iter().filter(|(_, l)| *l).count() as u32;
                    cx.note(FanoutNote::Started {
                        id,
                        live,
                        dead: registry.len() as u32 - live,
                    });
                    self.fanouts.insert(
                        id,
                        FanoutRec {
                            op,
                            started_at: now,
                            registry,
                            answers: BTreeMap::new(),
                            open: true,
                        },
                    );
                    self.open.insert(id);
                }
                Some(Err(_)) => {
                    cx.count("start.refused");
                    cx.note(FanoutNote::Refused);
                }
                None => {}
            }
            self.drive_broker(cx);
        } else {
            cx.note(FanoutNote::Unavailable);
        }
        let d = cx.between(self.p.interval_us.0, self.p.interval_us.1);
        cx.env_after(d, FanoutEvent::CallerWake);
    }

    fn on_reply(&mut self, cx: &mut Cx<Self>, from: Addr, reply: Reply) {
        if self.broker.is_none() {
            return;
        }
        if cx.fault_at(F_BROKER_CRASH, "broker_event", &[]) {
            self.crash_broker(cx);
            return;
        }
        let now = cx.now();
        if let Some(rec) = self.fanouts.get_mut(&reply.id)
            && rec.open
            && now.as_micros() < rec.started_at.as_micros().saturating_add(self.p.timeout_us)
            && rec.registry.iter().any(|(a, live)| *a == from && *live)
        {
            rec.answers.entry(from).or_insert(reply.answer);
        }
        let key = key(&self.slots, from);
        let outcome = self.with_broker(cx, |b, now| b.handle_reply(now, &key, reply));
        if let Some(outcome) = outcome
            && outcome != ReplyOutcome::Recorded
        {
            cx.note(FanoutNote::Ignored {
                id: reply.id,
                from,
                outcome,
            });
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>) {
        let now = cx.now();
        self.timers.remove(&now);
        if self.broker.is_none() {
            return;
        }
        if cx.fault_at(F_BROKER_CRASH, "broker_event", &[]) {
            self.crash_broker(cx);
            return;
        }
        self.with_broker(cx, |b, now| b.handle_timeout(now));
    }

    fn crash_broker(&mut self, cx: &mut Cx<Self>) {
        cx.crash(self.broker_node);
        if let Some(b) = self.broker.take() {
            self.lost_coverage[0].merge(b.coverage());
        }
        self.timers.clear();
        let lost = std::mem::take(&mut self.open);
        for id in &lost {
            if let Some(rec) = self.fanouts.get_mut(id) {
                rec.open = false;
            }
        }
        cx.count("broker.crashed");
        cx.note(FanoutNote::Abandoned {
            count: lost.len() as u32,
        });
        let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
        cx.env_after(d, FanoutEvent::BrokerRestart);
    }

    fn restart_broker(&mut self, cx: &mut Cx<Self>) {
        if self.broker.is_some() {
            return;
        }
        cx.restart(self.broker_node);
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let mut b = Broker::with_flaw(self.p.policy, incarnation, self.flaw());
        for r in &self.registry {
            b.register(key(&self.slots, r.addr), r.live);
        }
        self.broker = Some(b);
        cx.note(FanoutNote::BrokerRecovered { incarnation });
        self.drive_broker(cx);
    }

    // ----- discovery -------------------------------------------------------

    /// Sets a registered backend's liveness in discovery and tells the
    /// broker (a return re-registers the key, replacing it in place).
    fn set_live(&mut self, cx: &mut Cx<Self>, addr: Addr, live: bool) {
        let Some(r) = self.registry.iter_mut().find(|r| r.addr == addr) else {
            return;
        };
        if r.live == live {
            return;
        }
        r.live = live;
        cx.note(FanoutNote::Liveness {
            backend: addr,
            live,
        });
        let key = key(&self.slots, addr);
        if let Some(b) = self.broker.as_mut() {
            if live {
                b.register(key, true);
            } else {
                let known = b.set_live(&key, false);
                debug_assert!(known.is_ok(), "discovery and broker agree on keys");
            }
        }
    }

    fn register(&mut self, cx: &mut Cx<Self>, addr: Addr) {
        self.registry.push(Registered {
            addr,
            live: true,
            retired: false,
        });
        cx.note(FanoutNote::Liveness {
            backend: addr,
            live: true,
        });
        if let Some(b) = self.broker.as_mut() {
            b.register(key(&self.slots, addr), true);
        }
    }

    fn on_detect(&mut self, cx: &mut Cx<Self>, slot: u32) {
        let s = &self.slots[slot as usize];
        let up = s.joined && cx.is_up(s.node);
        let addr = self.addr(slot);
        if self.registry.iter().any(|r| r.addr == addr && !r.retired) {
            self.set_live(cx, addr, up);
        }
    }

    fn detect_later(&self, cx: &mut Cx<Self>, slot: u32) {
        let d = cx.between(self.p.detect_us.0, self.p.detect_us.1);
        cx.env_after(d, FanoutEvent::Detect { slot });
    }

    // ----- backends --------------------------------------------------------

    fn new_backend(&self, slot: u32) -> Backend {
        let s = &self.slots[slot as usize];
        Backend::with_flaw(s.key.clone(), s.cfg.clone(), self.flaw())
    }

    /// Runs `f` on the backend of `slot` (if up), then carries out what it
    /// asks for (its durable state is copied when it crashes).
    fn with_backend<R>(
        &mut self,
        cx: &mut Cx<Self>,
        slot: u32,
        f: impl FnOnce(&mut Backend) -> R,
    ) -> Option<R> {
        let r = f(self.slots[slot as usize].backend.as_mut()?);
        let at = self.addr(slot);
        while let Some(out) = self.slots[slot as usize]
            .backend
            .as_mut()
            .and_then(Backend::poll_output)
        {
            match out {
                BackendOutput::Apply { id, op } => self.on_apply(cx, at, id, op),
                BackendOutput::Reply(reply) => self.send_reply(cx, at, reply),
            }
        }
        Some(r)
    }

    /// A backend asks to apply an operation: `applied_once` and
    /// `quiesced_accepts_nothing`, then the apply runs (maybe slowly, maybe
    /// failing).
    fn on_apply(&mut self, cx: &mut Cx<Self>, at: Addr, id: OperationId, op: Operation) {
        if self.applied.contains(&(at, id)) {
            cx.violate(
                APPLIED_ONCE,
                format!("{at} is asked to apply {id} ({}) again", OpShow(&op)),
            );
        }
        if let Some(t) = self.quiesced.get(&at) {
            cx.violate(
                QUIESCED_ACCEPTS_NOTHING,
                format!(
                    "{at}, quiesced at {t}, is asked to apply {id} ({})",
                    OpShow(&op)
                ),
            );
        }
        let slot = &self.slots[at.slot as usize];
        if let Some((q, _)) = slot
            .applying
            .iter()
            .find(|(_, o)| o.kind() == OperationKind::Quiesce)
        {
            cx.violate(
                QUIESCED_ACCEPTS_NOTHING,
                format!(
                    "{at}, draining for {q}, is asked to apply {id} ({})",
                    OpShow(&op)
                ),
            );
        }
        let node = slot.node;
        let site = [("backend", u64::from(at.slot) + 1)];
        let mut d = cx.between(self.p.apply_us.0, self.p.apply_us.1);
        if cx.fault_at(F_SLOW_APPLY, "apply", &site) {
            d = d.saturating_mul(self.p.late);
        }
        let result = if cx.fault_at(F_APPLY_FAIL, "apply", &site) {
            ApplyResult::Failed
        } else {
            ApplyResult::Applied
        };
        self.slots[at.slot as usize].applying.insert(id, op);
        cx.node_after(node, d, FanoutEvent::Applied { at, id, result });
    }

    fn send_reply(&mut self, cx: &mut Cx<Self>, from: Addr, reply: Reply) {
        let site = [("backend", u64::from(from.slot) + 1)];
        if cx.fault_at(F_LOSS, "reply_send", &site) {
            return;
        }
        if cx.fault_at(F_DUP, "reply_send", &site) {
            let d = self.net(cx);
            cx.node_after(self.broker_node, d, FanoutEvent::Reply { from, reply });
        }
        let mut d = self.net(cx);
        if cx.fault_at(F_LATE, "reply_send", &site) {
            d = d.saturating_mul(self.p.late);
        }
        cx.node_after(self.broker_node, d, FanoutEvent::Reply { from, reply });
    }

    /// A backend event is an opportunity for the backend to crash.
    fn backend_crashes(&mut self, cx: &mut Cx<Self>, slot: u32) -> bool {
        if !cx.fault_at(
            F_BACKEND_CRASH,
            "backend_event",
            &[("backend", u64::from(slot) + 1)],
        ) {
            return false;
        }
        let s = &mut self.slots[slot as usize];
        cx.crash(s.node);
        if let Some(b) = s.backend.take() {
            s.durable = b.durable().clone();
            self.lost_coverage[1].merge(b.coverage());
        }
        s.applying.clear();
        self.detect_later(cx, slot);
        let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
        cx.env_after(d, FanoutEvent::BackendRestart { slot });
        true
    }

    fn restart_backend(&mut self, cx: &mut Cx<Self>, slot: u32) {
        let s = &self.slots[slot as usize];
        if s.backend.is_some() || !s.joined || cx.is_up(s.node) {
            return;
        }
        cx.restart(s.node);
        let addr = self.addr(slot);
        let s = &mut self.slots[slot as usize];
        let durable = std::mem::take(&mut s.durable);
        let b = Backend::recover(s.key.clone(), s.cfg.clone(), self.p.flaw, &durable);
        cx.note(FanoutNote::BackendRecovered {
            backend: addr,
            quiesced: b.is_quiesced(),
        });
        s.backend = Some(b);
        self.detect_later(cx, slot);
    }

    fn on_request(&mut self, cx: &mut Cx<Self>, to: Addr, request: Request) {
        let slot = to.slot;
        if self.slots[slot as usize].backend.is_none() {
            return;
        }
        if self.addr(slot) != to {
            cx.note(FanoutNote::Stale { to });
            return;
        }
        if self.backend_crashes(cx, slot) {
            return;
        }
        self.with_backend(cx, slot, |b| b.handle_request(request));
    }

    fn on_applied(&mut self, cx: &mut Cx<Self>, at: Addr, id: OperationId, result: ApplyResult) {
        let slot = at.slot;
        if self.slots[slot as usize].backend.is_none() || self.addr(slot) != at {
            return;
        }
        if self.backend_crashes(cx, slot) {
            return;
        }
        let op = self.slots[slot as usize].applying.remove(&id);
        if !self.applied.insert((at, id)) {
            cx.violate(APPLIED_ONCE, format!("{at} applied {id} a second time"));
        }
        if result == ApplyResult::Applied
            && op
                .as_ref()
                .is_some_and(|o| o.kind() == OperationKind::Quiesce)
        {
            self.quiesced.entry(at).or_insert(cx.now());
            let s = &mut self.slots[slot as usize];
            if !s.replacing {
                s.replacing = true;
                let d = cx.between(self.p.replace_us.0, self.p.replace_us.1);
                cx.env_after(d, FanoutEvent::Replace { slot });
            }
        }
        let done = self.with_backend(cx, slot, |b| b.handle_applied(id, result));
        debug_assert!(
            done.is_none_or(|r| r.is_ok()),
            "the world reports each apply once"
        );
    }

    fn on_join(&mut self, cx: &mut Cx<Self>, slot: u32) {
        if self.slots[slot as usize].joined {
            return;
        }
        let b = self.new_backend(slot);
        let s = &mut self.slots[slot as usize];
        s.joined = true;
        s.backend = Some(b);
        let addr = self.addr(slot);
        self.register(cx, addr);
    }

    /// The quiesced version retires (dead in discovery for good) and the
    /// next version starts fresh in the same slot, registered at the end.
    fn on_replace(&mut self, cx: &mut Cx<Self>, slot: u32) {
        let s = &self.slots[slot as usize];
        if s.backend.is_none() {
            // Down: try again later.
            let d = cx.between(self.p.replace_us.0, self.p.replace_us.1);
            cx.env_after(d, FanoutEvent::Replace { slot });
            return;
        }
        let old = self.addr(slot);
        self.set_live(cx, old, false);
        if let Some(r) = self.registry.iter_mut().find(|r| r.addr == old) {
            r.retired = true;
        }
        let s = &mut self.slots[slot as usize];
        cx.crash(s.node);
        if let Some(b) = s.backend.take() {
            self.lost_coverage[1].merge(b.coverage());
        }
        cx.restart(s.node);
        s.applying.clear();
        s.version += 1;
        s.key = key_of(Addr {
            slot,
            version: s.version,
        });
        s.durable = BackendDurable::default();
        s.replacing = false;
        let b = self.new_backend(slot);
        self.slots[slot as usize].backend = Some(b);
        let addr = self.addr(slot);
        self.register(cx, addr);
    }
}

/// What is wrong with `result` for the fanout recorded as `rec`, if
/// anything.
fn partition_problem(
    rec: &FanoutRec,
    result: &FanoutResult,
    now: Time,
    deadline_us: u64,
) -> Option<String> {
    if result.operation != rec.op {
        return Some(format!(
            "reports operation {} but {} was started",
            OpShow(&result.operation),
            OpShow(&rec.op)
        ));
    }
    if result.started_at != rec.started_at {
        return Some(format!(
            "reports a start at {} but it started at {}",
            result.started_at, rec.started_at
        ));
    }
    let position = |key: &BackendKey| -> Option<usize> {
        let a = addr_of(key)?;
        rec.registry.iter().position(|(r, _)| *r == a)
    };
    let mut seen: BTreeMap<usize, &'static str> = BTreeMap::new();
    let buckets: [(&'static str, Vec<&BackendKey>); 4] = [
        ("acks", result.acks.iter().collect()),
        ("timeouts", result.timeouts.iter().collect()),
        ("failures", result.failures.iter().map(|f| &f.key).collect()),
        ("skipped_dead", result.skipped_dead.iter().collect()),
    ];
    for (name, keys) in &buckets {
        let mut last = None;
        for key in keys {
            let Some(i) = position(key) else {
                return Some(format!(
                    "{key} is in {name} but was not registered at the start"
                ));
            };
            if let Some(other) = seen.insert(i, name) {
                return Some(format!("{key} is in both {other} and {name}"));
            }
            if last.is_some_and(|l| l > i) {
                return Some(format!("{name} is not in registration order at {key}"));
            }
            last = Some(i);
        }
    }
    if let Some((_, (a, _))) = rec
        .registry
        .iter()
        .enumerate()
        .find(|(i, _)| !seen.contains_key(i))
    {
        return Some(format!("{a}, registered at the start, is in no bucket"));
    }
    for (i, (a, live)) in rec.registry.iter().enumerate() {
        let bucket = seen[&i];
        if !*live && bucket != "skipped_dead" {
            return Some(format!("{a} was dead at the start but is in {bucket}"));
        }
        if *live && bucket == "skipped_dead" {
            return Some(format!("{a} was live at the start but is in skipped_dead"));
        }
        let answered = rec.answers.get(a).copied();
        match bucket {
            "acks" if answered != Some(Answer::Ack) => {
                return Some(format!(
                    "{a} is in acks but its first answer in time was {}",
                    answered.map_or("none".to_owned(), answer_show)
                ));
            }
            "timeouts" => {
                if let Some(ans) = answered {
                    return Some(format!(
                        "{a} timed out although its answer {} reached the broker in time",
                        answer_show(ans)
                    ));
                }
                if now.as_micros() < deadline_us {
                    return Some(format!("{a} timed out at {now}, before the deadline"));
                }
            }
            _ => {}
        }
    }
    for f in &result.failures {
        let a = addr_of(&f.key).expect("checked above");
        let answered = rec.answers.get(&a).copied();
        if answered != Some(Answer::Failure(f.reason)) {
            return Some(format!(
                "{a} is in failures ({:?}) but its first answer in time was {}",
                f.reason,
                answered.map_or("none".to_owned(), answer_show)
            ));
        }
    }
    if result.sent_count() + result.skipped_dead.len() != rec.registry.len() {
        return Some("bucket sizes do not add up to the registry".to_owned());
    }
    None
}

impl Protocol for FanoutWorld {
    type Event = FanoutEvent;
    type Note = FanoutNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        self.broker_node = cx.add_node("broker");
        let total = self.p.backends + self.p.late_backends;
        for slot in 0..total {
            let node = cx.add_node(format!("backend-{}", slot + 1));
            let mut cfg = BackendConfig::default();
            if cx.chance(self.p.unsupported_ppm) {
                let kind = if cx.choose(2) == 0 {
                    OperationKind::ReleaseHandles
                } else {
                    OperationKind::Quiesce
                };
                cfg.supported.remove(&kind);
            }
            self.slots.push(Slot {
                node,
                version: 1,
                key: key_of(Addr { slot, version: 1 }),
                cfg,
                backend: None,
                durable: BackendDurable::default(),
                joined: false,
                applying: BTreeMap::new(),
                replacing: false,
            });
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        self.broker = Some(Broker::with_flaw(self.p.policy, incarnation, self.flaw()));
        for slot in 0..self.p.backends {
            self.on_join(cx, slot);
        }
        let half = cx.chaos_end().as_micros() / 2;
        for slot in self.p.backends..total {
            let at = cx.between(0, half);
            cx.env_after(at, FanoutEvent::Join { slot });
        }
        let d = cx.between(self.p.interval_us.0, self.p.interval_us.1);
        cx.env_after(d, FanoutEvent::CallerWake);
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, event: FanoutEvent) {
        match event {
            FanoutEvent::CallerWake => self.on_caller_wake(cx),
            FanoutEvent::Request { to, request } => self.on_request(cx, to, request),
            FanoutEvent::Reply { from, reply } => self.on_reply(cx, from, reply),
            FanoutEvent::Applied { at, id, result } => self.on_applied(cx, at, id, result),
            FanoutEvent::BrokerTimer => self.on_timer(cx),
            FanoutEvent::BrokerRestart => self.restart_broker(cx),
            FanoutEvent::BackendRestart { slot } => self.restart_backend(cx, slot),
            FanoutEvent::Detect { slot } => self.on_detect(cx, slot),
            FanoutEvent::Join { slot } => self.on_join(cx, slot),
            FanoutEvent::Replace { slot } => self.on_replace(cx, slot),
        }
        self.check_waits(cx);
    }

    fn heal(&mut self, cx: &mut Cx<Self>) {
        self.restart_broker(cx);
        for slot in 0..self.slots.len() as u32 {
            self.restart_backend(cx, slot);
        }
    }

    fn settled(&self) -> bool {
        self.caller_done
            && self.broker.is_some()
            && self.open.is_empty()
            && self.slots.iter().all(|s| !s.joined || s.backend.is_some())
            && self.registry.iter().all(|r| r.retired || r.live)
    }

    fn route(&self, event: &FanoutEvent) -> (String, String) {
        let broker = || "broker".to_owned();
        let backend = |slot: u32| format!("backend-{}", slot + 1);
        match event {
            FanoutEvent::CallerWake => ("caller".to_owned(), broker()),
            FanoutEvent::Request { to, .. } => (broker(), backend(to.slot)),
            FanoutEvent::Reply { from, .. } => (backend(from.slot), broker()),
            FanoutEvent::Applied { at, .. } => (backend(at.slot), backend(at.slot)),
            FanoutEvent::BrokerTimer | FanoutEvent::BrokerRestart => (broker(), broker()),
            FanoutEvent::BackendRestart { slot } | FanoutEvent::Replace { slot } => {
                (backend(*slot), backend(*slot))
            }
            FanoutEvent::Detect { slot } | FanoutEvent::Join { slot } => {
                (backend(*slot), "discovery".to_owned())
            }
        }
    }

    fn coverage(&self) -> Vec<Coverage> {
        let mut cov = self.lost_coverage;
        if let Some(b) = &self.broker {
            cov[0].merge(b.coverage());
        }
        for b in self.slots.iter().filter_map(|s| s.backend.as_ref()) {
            cov[1].merge(b.coverage());
        }
        cov.to_vec()
    }

    fn check_liveness(&self, cx: &Cx<Self>) -> Option<(&'static str, String)> {
        if let Some(id) = self.open.first() {
            let rec = &self.fanouts[id];
            return Some((
                BOUNDED_WAIT,
                format!(
                    "{id} started at {} still has no result at {}",
                    rec.started_at,
                    cx.now()
                ),
            ));
        }
        None
    }
}
