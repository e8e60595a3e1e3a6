//! Lifecycle fanout: a broker fans a lifecycle operation out to its backends
//! and collects one answer per live backend.
//!
//! Two machines, one per side of the wire:
//! - [`Broker`] keeps the backend registry (key, liveness, registration
//!   order) and runs fanouts. Each fanout has a unique [`OperationId`], walks
//!   the registry in registration order, skips dead backends, sends the
//!   [`Request`] to live ones, retransmits over a lossy network until the ack
//!   timeout, and reports one [`FanoutResult`] partitioning the registry into
//!   `acks`, `timeouts`, `failures` and `skipped_dead`.
//! - [`Backend`] answers requests: it applies each operation at most once
//!   (dedup by operation id, re-answering duplicates with the original
//!   answer), refuses what it does not support, and once quiesced accepts no
//!   new work.
//!
//! # Rules
//! - **Policy:** the ack timeout defaults to 5 s; zero is clamped to 1 ms.
//!   Retransmissions go out every `retransmit_interval` (default 500 ms,
//!   zero clamped to 1 ms) while the deadline has not passed.
//! - **Registry:** registering an existing key replaces its liveness in place,
//!   keeping its position. Liveness is the broker's knowledge, set by the
//!   driver.
//! - **Partition:** a backend dead when the fanout starts is in
//!   `skipped_dead` and receives nothing; a live one receives the operation
//!   and lands in exactly one of `acks`, `timeouts` (no answer strictly before
//!   the deadline `start + ack_timeout`) or `failures` (with the backend's
//!   reason). A failure does not stop the fanout. Each bucket is in
//!   registration order.
//! - **Result:** `sent = acks + timeouts + failures`; `all_live_acked` means
//!   no timeouts and no failures (so it holds with no backends). The result
//!   is reported as soon as every live backend answered, and at the latest
//!   when [`Broker::handle_timeout`] is called at or after the deadline.
//! - **Late answers** (at or after the deadline, or for a finished fanout)
//!   are ignored. A backend that dies during a fanout gets no more
//!   retransmissions; unless its answer was already on its way, it times out.
//!
//! # Shape
//! Mutate, then drain: every `handle_*`/command method may queue outputs;
//! drain [`Broker::poll_output`] / [`Backend::poll_output`] until `None`
//! after each call, and call [`Broker::handle_timeout`] at
//! [`Broker::poll_timeout`]. The backend has no timers.

mod backend;

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::backend::{
    ApplyResult, BACKEND_TRANSITIONS, Backend, BackendConfig, BackendDurable, BackendOutput,
};
use crate::coverage::Coverage;
use crate::time::Time;

/// The default time one backend has to answer a fanout: 5 s.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The default interval between retransmissions to silent backends: 500 ms.
pub const DEFAULT_RETRANSMIT_INTERVAL: Duration = Duration::from_millis(500);
/// The default bound on fanouts in flight at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// The floor a zero duration in a [`Policy`] is clamped to: 1 ms.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// Identifies one fanout. Unique across broker restarts because it carries
/// the broker's incarnation, which the driver must never reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OperationId {
    /// The broker instance that started the fanout.
    pub incarnation: u64,
    /// Counts fanouts within the incarnation, from 1.
    pub seq: u64,
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}.{}", self.incarnation, self.seq)
    }
}

/// Identifies a backend: service instance, name, version.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendKey {
    /// The service instance hosting the backend.
    pub instance: Arc<str>,
    /// The backend's name.
    pub name: Arc<str>,
    /// The backend's version.
    pub version: Arc<str>,
}

impl BackendKey {
    /// A key from its three parts.
    pub fn new(
        instance: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
        version: impl Into<Arc<str>>,
    ) -> Self {
        BackendKey {
            instance: instance.into(),
            name: name.into(),
            version: version.into(),
        }
    }
}

impl fmt::Display for BackendKey {
    /// `instance/name@version`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.instance, self.name, self.version)
    }
}

/// Why a broker asks its backends to quiesce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum QuiesceReason {
    /// The backend crossed its idle threshold.
    IdleTimeout,
    /// The broker is shutting down gracefully.
    BrokerShutdown,
    /// An operator or a maintenance policy asked for a drain.
    Maintenance,
}

/// A lifecycle operation fanned out to backends.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// Release the file handles held below a path prefix.
    ReleaseHandles {
        /// The path prefix (a `/`-separated path, kept as text so that the
        /// value is the same on every platform; shared: an operation is
        /// copied into every backend's request and answer record).
        path_prefix: Arc<str>,
    },
    /// Stop accepting new work and drain.
    Quiesce {
        /// Why.
        reason: QuiesceReason,
    },
}

impl Operation {
    /// A release-handles operation for `path_prefix`.
    pub fn release_handles(path_prefix: impl Into<Arc<str>>) -> Self {
        Operation::ReleaseHandles {
            path_prefix: path_prefix.into(),
        }
    }

    /// A quiesce operation.
    pub fn quiesce(reason: QuiesceReason) -> Self {
        Operation::Quiesce { reason }
    }

    /// The kind of operation, without its arguments.
    pub fn kind(&self) -> OperationKind {
        match self {
            Operation::ReleaseHandles { .. } => OperationKind::ReleaseHandles,
            Operation::Quiesce { .. } => OperationKind::Quiesce,
        }
    }
}

/// The kind of an [`Operation`], for support tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    /// [`Operation::ReleaseHandles`].
    ReleaseHandles,
    /// [`Operation::Quiesce`].
    Quiesce,
}

/// Why a backend did not acknowledge an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// The backend does not support this kind of operation.
    UnsupportedOperation,
    /// The backend refused it (for example: it is quiesced).
    Rejected,
    /// The backend tried and failed.
    BackendError,
}

/// A backend's answer to one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// Done.
    Ack,
    /// Not done, and why.
    Failure(FailureReason),
}

/// The message a broker sends to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Request {
    /// The fanout; the backend dedups by it.
    pub id: OperationId,
    /// What to do.
    pub op: Operation,
}

/// The message a backend sends back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reply {
    /// The fanout answered.
    pub id: OperationId,
    /// The answer.
    pub answer: Answer,
}

/// Timing and bounds of a broker's fanouts. Durations are clamped to at least
/// [`MIN_DURATION`], so a policy can never wait zero time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Policy {
    ack_timeout: Duration,
    retransmit_interval: Duration,
    max_in_flight: usize,
}

impl Policy {
    /// A policy with `ack_timeout` (zero clamped to 1 ms) and the default
    /// retransmit interval and in-flight bound.
    pub fn new(ack_timeout: Duration) -> Self {
        Policy {
            ack_timeout: ack_timeout.max(MIN_DURATION),
            retransmit_interval: DEFAULT_RETRANSMIT_INTERVAL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }

    /// The same policy retransmitting every `interval` (zero clamped to 1 ms).
    #[must_use]
    pub fn with_retransmit_interval(mut self, interval: Duration) -> Self {
        self.retransmit_interval = interval.max(MIN_DURATION);
        self
    }

    /// The same policy allowing `max` fanouts in flight (at least 1).
    #[must_use]
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// How long each backend has to answer, from the start of the fanout.
    pub fn ack_timeout(&self) -> Duration {
        // Clamped here too: a deserialized policy skipped the constructor.
        self.ack_timeout.max(MIN_DURATION)
    }

    /// How often silent live backends get the request again.
    pub fn retransmit_interval(&self) -> Duration {
        self.retransmit_interval.max(MIN_DURATION)
    }

    /// How many fanouts may be in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.max(1)
    }
}

impl Default for Policy {
    /// 5 s ack timeout, 500 ms retransmit interval, 64 fanouts in flight.
    fn default() -> Self {
        Policy::new(DEFAULT_ACK_TIMEOUT)
    }
}

/// A live backend that answered with a failure.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendFailure {
    /// The backend.
    pub key: BackendKey,
    /// Its reason.
    pub reason: FailureReason,
}

/// The outcome of one fanout: every backend registered when it started, in
/// exactly one bucket, each bucket in registration order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FanoutResult {
    /// The fanout.
    pub id: OperationId,
    /// What was fanned out.
    pub operation: Operation,
    /// Live backends that acknowledged.
    pub acks: Vec<BackendKey>,
    /// Live backends that did not answer before the deadline.
    pub timeouts: Vec<BackendKey>,
    /// Live backends that answered with a failure.
    pub failures: Vec<BackendFailure>,
    /// Backends dead at the start: they received nothing.
    pub skipped_dead: Vec<BackendKey>,
    /// The ack timeout of the policy in force.
    pub ack_timeout: Duration,
    /// When the fanout started.
    pub started_at: Time,
    /// When the result was produced (at most `started_at + ack_timeout`
    /// when the driver calls `handle_timeout` on time).
    pub finished_at: Time,
}

impl FanoutResult {
    /// How many live backends were sent the operation.
    pub fn sent_count(&self) -> usize {
        self.acks.len() + self.timeouts.len() + self.failures.len()
    }

    /// Whether every live backend acknowledged (true with no live backend).
    pub fn all_live_acked(&self) -> bool {
        self.timeouts.is_empty() && self.failures.is_empty()
    }
}

/// What a broker asks of its driver, or reports to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BrokerOutput {
    /// Send `request` to `backend` (it may be lost; the broker retransmits).
    /// Feed the backend's [`Reply`] to [`Broker::handle_reply`].
    Send {
        /// The addressee.
        backend: BackendKey,
        /// The message.
        request: Request,
    },
    /// A fanout finished; the answer to [`Broker::start`].
    Done(FanoutResult),
}

/// What [`Broker::handle_reply`] did with a reply. Only `Recorded` changes
/// the fanout; the others are ignored replies, reported for tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyOutcome {
    /// The first answer of this backend in this fanout, in time: recorded.
    Recorded,
    /// This backend already answered this fanout: ignored.
    Duplicate,
    /// The fanout is finished (or its deadline passed): ignored.
    Late,
    /// Not an answer the broker waits for (unknown operation, a backend not
    /// part of the fanout, or one skipped as dead): ignored.
    Unexpected,
}

/// Errors of the fanout machines. None of them changes any state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FanoutError {
    /// [`Broker::start`] while the policy's bound of fanouts is in flight.
    #[error("{max} fanouts already in flight")]
    TooManyInFlight {
        /// The bound.
        max: usize,
    },
    /// A liveness change for a key that was never registered.
    #[error("backend {0} is not registered")]
    UnknownBackend(BackendKey),
    /// [`Backend::handle_applied`] for an operation that is not being applied
    /// (caller misuse: a completion for no `Apply` effect).
    #[error("operation {0} is not being applied")]
    NotApplying(OperationId),
}

/// Deliberately broken variants of the fanout machines, for mutation testing
/// of the simulator; never enable one outside a simulation. Off by default.
/// Each machine ignores the flaws that are not about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FanoutFlaw {
    /// Broker: a backend dead at the start is still reported in
    /// `skipped_dead` but is sent the operation anyway. Breaks
    /// `fanout.no_delivery_to_dead`.
    SendToDead,
    /// Backend: forgets which operations it answered, so a retransmitted
    /// request is applied again. Breaks `fanout.applied_once`.
    BackendNoDedup,
}

/// The transitions of the broker's registry and fanouts, as recorded in
/// [`Broker::coverage`].
pub const BROKER_TRANSITIONS: &[&str] = &[
    "register: new backend -> last",
    "register: existing backend replaced in place",
    "set live: unknown backend refused",
    "start: refused, too many in flight",
    "start: dead backend -> skipped",
    "start: live backend -> awaiting answer",
    "start: no live backend -> done at once",
    "awaiting answer -> acked",
    "awaiting answer -> failed",
    "awaiting answer -> timed out",
    "retransmit to a silent live backend",
    "retransmit withheld from a backend now dead",
    "reply: duplicate ignored",
    "reply: late ignored",
    "reply: unexpected ignored",
    "done: every live backend answered",
    "done: at the deadline",
];

/// Indices into [`BROKER_TRANSITIONS`].
#[derive(Clone, Copy)]
enum Tr {
    RegisterNew,
    RegisterReplaced,
    SetLiveUnknown,
    StartRefused,
    StartSkipped,
    StartAwaiting,
    StartDoneAtOnce,
    Acked,
    Failed,
    TimedOut,
    Retransmit,
    RetransmitWithheld,
    ReplyDuplicate,
    ReplyLate,
    ReplyUnexpected,
    DoneAllAnswered,
    DoneAtDeadline,
}

/// One registry entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Registration {
    key: BackendKey,
    live: bool,
}

/// Where one backend of a fanout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TargetState {
    /// Dead at the start: skipped.
    SkippedDead,
    /// Sent the operation; waiting for its answer.
    AwaitingAnswer,
    /// Answered in time.
    Answered(Answer),
}

/// A fanout in flight.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Fanout {
    op: Operation,
    started_at: Time,
    deadline: Time,
    /// The next retransmission, if one is armed (always before `deadline`).
    retransmit_at: Option<Time>,
    /// The registry at the start, in registration order.
    targets: Vec<(BackendKey, TargetState)>,
}

impl Fanout {
    fn awaiting(&self) -> usize {
        self.targets
            .iter()
            .filter(|(_, s)| *s == TargetState::AwaitingAnswer)
            .count()
    }
}

/// The closed set of broker timers. A deadline sorts before a
/// retransmission due at the same instant, so nothing is resent at the
/// deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    Deadline(OperationId),
    Retransmit(OperationId),
}

/// The broker side: backend registry and fanouts.
///
/// Mutate (register, [`Broker::start`], [`Broker::handle_reply`],
/// [`Broker::handle_timeout`]), then drain [`Broker::poll_output`] until it
/// returns `None`. All state is volatile: after a crash, build a new broker
/// with a new incarnation; fanouts in flight are lost (their callers get no
/// result) and their late replies are `Unexpected`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Broker {
    policy: Policy,
    incarnation: u64,
    flaw: Option<FanoutFlaw>,
    registry: Vec<Registration>,
    next_seq: u64,
    fanouts: BTreeMap<OperationId, Fanout>,
    timers: BTreeSet<(Time, Timer)>,
    outputs: VecDeque<BrokerOutput>,
    cov: Coverage,
}

impl Broker {
    /// A correct broker with an empty registry. `incarnation` must differ
    /// from every earlier broker's that the same backends may have answered
    /// (for example a durable restart counter): operation ids are unique only
    /// because of it.
    pub fn new(policy: Policy, incarnation: u64) -> Self {
        Broker::with_flaw(policy, incarnation, None)
    }

    /// As [`Broker::new`], with a deliberate flaw (`None` = correct).
    pub fn with_flaw(policy: Policy, incarnation: u64, flaw: Option<FanoutFlaw>) -> Self {
        Broker {
            policy,
            incarnation,
            flaw,
            registry: Vec::new(),
            next_seq: 1,
            fanouts: BTreeMap::new(),
            timers: BTreeSet::new(),
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    // ----- queries -------------------------------------------------------

    /// The transitions taken so far (indices into [`BROKER_TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The incarnation given at construction.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The flaw this broker was built with, if any.
    pub fn flaw(&self) -> Option<FanoutFlaw> {
        self.flaw
    }

    /// Registered backends with their liveness, in registration order.
    pub fn backends(&self) -> impl Iterator<Item = (&BackendKey, bool)> + '_ {
        self.registry.iter().map(|r| (&r.key, r.live))
    }

    /// Liveness of `key`, or `None` if it is not registered.
    pub fn is_live(&self, key: &BackendKey) -> Option<bool> {
        self.registry.iter().find(|r| &r.key == key).map(|r| r.live)
    }

    /// Fanouts started and not finished, in start order.
    pub fn in_flight(&self) -> impl Iterator<Item = OperationId> + '_ {
        self.fanouts.keys().copied()
    }

    /// When [`Broker::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<BrokerOutput> {
        self.outputs.pop_front()
    }

    // ----- registry ------------------------------------------------------

    /// Registers `key` with its liveness. An existing key is replaced in
    /// place (its position in the registry is kept) and its previous
    /// liveness returned; a new key goes last. Fanouts in flight keep the
    /// backends they started with; a liveness change affects their
    /// retransmissions (see [`Broker::set_live`]).
    pub fn register(&mut self, key: BackendKey, live: bool) -> Option<bool> {
        if let Some(r) = self.registry.iter_mut().find(|r| r.key == key) {
            let was = core::mem::replace(&mut r.live, live);
            self.hit(Tr::RegisterReplaced);
            return Some(was);
        }
        self.registry.push(Registration { key, live });
        self.hit(Tr::RegisterNew);
        None
    }

    /// Records that `key` is now dead or alive. A dead backend is skipped by
    /// later fanouts and gets no more retransmissions from fanouts in flight
    /// (it then times out unless its answer still arrives in time); a backend
    /// that comes back alive gets them again.
    ///
    /// # Errors
    /// [`FanoutError::UnknownBackend`] if `key` is not registered.
    pub fn set_live(&mut self, key: &BackendKey, live: bool) -> Result<(), FanoutError> {
        match self.registry.iter_mut().find(|r| &r.key == key) {
            Some(r) => {
                r.live = live;
                Ok(())
            }
            None => {
                self.hit(Tr::SetLiveUnknown);
                Err(FanoutError::UnknownBackend(key.clone()))
            }
        }
    }

    // ----- fanouts -------------------------------------------------------

    /// Starts fanning `op` out to the registry as it is now: one
    /// [`BrokerOutput::Send`] per live backend, in registration order. With
    /// no live backend the [`BrokerOutput::Done`] follows at once.
    ///
    /// # Errors
    /// [`FanoutError::TooManyInFlight`] at the policy's bound.
    pub fn start(&mut self, now: Time, op: Operation) -> Result<OperationId, FanoutError> {
        let max = self.policy.max_in_flight();
        if self.fanouts.len() >= max {
            self.hit(Tr::StartRefused);
            return Err(FanoutError::TooManyInFlight { max });
        }
        let id = OperationId {
            incarnation: self.incarnation,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let request = Request { id, op: op.clone() };
        let send_to_dead = self.flaw == Some(FanoutFlaw::SendToDead);
        let mut targets = Vec::with_capacity(self.registry.len());
        for r in &self.registry {
            let state = if r.live {
                self.cov.hit(Tr::StartAwaiting as usize);
                TargetState::AwaitingAnswer
            } else {
                self.cov.hit(Tr::StartSkipped as usize);
                TargetState::SkippedDead
            };
            if r.live || send_to_dead {
                self.outputs.push_back(BrokerOutput::Send {
                    backend: r.key.clone(),
                    request: request.clone(),
                });
            }
            targets.push((r.key.clone(), state));
        }
        let deadline = now + self.policy.ack_timeout();
        let mut fanout = Fanout {
            op,
            started_at: now,
            deadline,
            retransmit_at: None,
            targets,
        };
        if fanout.awaiting() > 0 {
            self.timers.insert((deadline, Timer::Deadline(id)));
            let at = now + self.policy.retransmit_interval();
            if at < deadline {
                fanout.retransmit_at = Some(at);
                self.timers.insert((at, Timer::Retransmit(id)));
            }
        }
        self.fanouts.insert(id, fanout);
        if self.fanouts[&id].awaiting() == 0 {
            self.hit(Tr::StartDoneAtOnce);
            self.finish(now, id);
        }
        Ok(id)
    }

    /// A reply from backend `from`. Timers due at `now` fire first, so an
    /// answer at or after the deadline is `Late`. Only the first answer of a
    /// backend counts; when every live backend has answered the fanout
    /// finishes at once.
    pub fn handle_reply(&mut self, now: Time, from: &BackendKey, reply: Reply) -> ReplyOutcome {
        self.handle_timeout(now);
        let Some(fanout) = self.fanouts.get_mut(&reply.id) else {
            let ours = reply.id.incarnation == self.incarnation && reply.id.seq < self.next_seq;
            return if ours {
                self.hit(Tr::ReplyLate);
                ReplyOutcome::Late
            } else {
                self.hit(Tr::ReplyUnexpected);
                ReplyOutcome::Unexpected
            };
        };
        debug_assert!(now < fanout.deadline, "due deadlines fired above");
        let Some((_, state)) = fanout.targets.iter_mut().find(|(k, _)| k == from) else {
            self.hit(Tr::ReplyUnexpected);
            return ReplyOutcome::Unexpected;
        };
        match *state {
            TargetState::SkippedDead => {
                self.hit(Tr::ReplyUnexpected);
                ReplyOutcome::Unexpected
            }
            TargetState::Answered(_) => {
                self.hit(Tr::ReplyDuplicate);
                ReplyOutcome::Duplicate
            }
            TargetState::AwaitingAnswer => {
                *state = TargetState::Answered(reply.answer);
                let done = fanout.awaiting() == 0;
                self.hit(match reply.answer {
                    Answer::Ack => Tr::Acked,
                    Answer::Failure(_) => Tr::Failed,
                });
                if done {
                    self.hit(Tr::DoneAllAnswered);
                    self.finish(now, reply.id);
                }
                ReplyOutcome::Recorded
            }
        }
    }

    /// Fires every timer due at `now`: deadlines finish their fanouts (silent
    /// backends time out), retransmissions resend to silent live backends.
    /// Spurious or early calls do nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Deadline(id) => {
                    if self.fanouts.contains_key(&id) {
                        self.hit(Tr::DoneAtDeadline);
                    }
                    self.finish(now, id);
                }
                Timer::Retransmit(id) => self.retransmit(id),
            }
        }
    }

    fn retransmit(&mut self, id: OperationId) {
        let Some(fanout) = self.fanouts.get_mut(&id) else {
            return;
        };
        let Some(at) = fanout.retransmit_at.take() else {
            return;
        };
        let request = Request {
            id,
            op: fanout.op.clone(),
        };
        for (key, state) in &fanout.targets {
            if *state != TargetState::AwaitingAnswer {
                continue;
            }
            let live = self.registry.iter().any(|r| &r.key == key && r.live);
            if live {
                self.cov.hit(Tr::Retransmit as usize);
                self.outputs.push_back(BrokerOutput::Send {
                    backend: key.clone(),
                    request: request.clone(),
                });
            } else {
                self.cov.hit(Tr::RetransmitWithheld as usize);
            }
        }
        let next = at + self.policy.retransmit_interval();
        if next < fanout.deadline {
            fanout.retransmit_at = Some(next);
            self.timers.insert((next, Timer::Retransmit(id)));
        }
    }

    /// Reports the result: answered backends by their answer, the rest
    /// (still awaiting) as timeouts. Disarms the fanout's timers.
    fn finish(&mut self, now: Time, id: OperationId) {
        let Some(fanout) = self.fanouts.remove(&id) else {
            return;
        };
        self.timers.remove(&(fanout.deadline, Timer::Deadline(id)));
        if let Some(at) = fanout.retransmit_at {
            self.timers.remove(&(at, Timer::Retransmit(id)));
        }
        let mut result = FanoutResult {
            id,
            operation: fanout.op,
            acks: Vec::new(),
            timeouts: Vec::new(),
            failures: Vec::new(),
            skipped_dead: Vec::new(),
            ack_timeout: self.policy.ack_timeout(),
            started_at: fanout.started_at,
            finished_at: now,
        };
        let registered = fanout.targets.len();
        for (key, state) in fanout.targets {
            match state {
                TargetState::SkippedDead => result.skipped_dead.push(key),
                TargetState::AwaitingAnswer => {
                    self.cov.hit(Tr::TimedOut as usize);
                    result.timeouts.push(key);
                }
                TargetState::Answered(Answer::Ack) => result.acks.push(key),
                TargetState::Answered(Answer::Failure(reason)) => {
                    result.failures.push(BackendFailure { key, reason })
                }
            }
        }
        debug_assert_eq!(
            result.sent_count() + result.skipped_dead.len(),
            registered,
            "every backend in exactly one bucket"
        );
        debug_assert!(
            result.timeouts.is_empty() || now >= fanout.deadline,
            "timeouts only at the deadline"
        );
        self.outputs.push_back(BrokerOutput::Done(result));
    }
}

#[cfg(test)]
mod tests;
