//! The backend side of the lifecycle fanout: apply each operation at most
//! once, answer every request, accept no new work once quiesced.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{
    Answer, BackendKey, FailureReason, FanoutError, FanoutFlaw, Operation, OperationId,
    OperationKind, Reply, Request,
};
use crate::coverage::Coverage;

/// The transitions of a backend, as recorded in [`Backend::coverage`].
pub const BACKEND_TRANSITIONS: &[&str] = &[
    "request -> applying",
    "applying -> acked",
    "applying quiesce -> quiesced",
    "applying -> failed (backend error)",
    "duplicate while applying: held",
    "duplicate -> answered again",
    "unsupported -> failed (unsupported operation)",
    "quiesced: quiesce acked again without applying",
    "quiesced -> rejected",
    "draining -> rejected",
    "completion for nothing applying refused",
    "recover from durable answers",
];

/// Indices into [`BACKEND_TRANSITIONS`].
#[derive(Clone, Copy)]
pub(super) enum Tr {
    Applying,
    Acked,
    Quiesced,
    ApplyFailed,
    DuplicateWhileApplying,
    DuplicateAnswered,
    Unsupported,
    QuiescedReacked,
    QuiescedRejected,
    DrainingRejected,
    NotApplying,
    Recover,
}

/// What a backend supports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendConfig {
    /// Operation kinds the backend applies; others are answered
    /// [`FailureReason::UnsupportedOperation`].
    pub supported: BTreeSet<OperationKind>,
}

impl Default for BackendConfig {
    /// Supports every operation kind.
    fn default() -> Self {
        BackendConfig {
            supported: [OperationKind::ReleaseHandles, OperationKind::Quiesce].into(),
        }
    }
}

/// How the driver's application of an operation went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ApplyResult {
    /// Applied: answered [`Answer::Ack`].
    Applied,
    /// Failed: answered [`FailureReason::BackendError`].
    Failed,
}

/// What a backend asks of its driver.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendOutput {
    /// Apply `op` (release the handles, or drain), then report with
    /// [`Backend::handle_applied`]. Each operation id is asked for at most
    /// once (unless flawed); an `Apply` whose completion is never reported
    /// (lost in a crash) did not happen.
    Apply {
        /// The operation id.
        id: OperationId,
        /// What to apply.
        op: Operation,
    },
    /// Send `reply` to the broker.
    Reply(Reply),
}

/// What a backend must keep across a crash: every answer it gave, and
/// whether it is quiesced. Save [`Backend::durable`] after each call (the
/// driver applies an operation and records its answer atomically); rebuild
/// with [`Backend::recover`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackendDurable {
    answers: BTreeMap<OperationId, Answer>,
    quiesced: bool,
}

/// One backend's endpoint for lifecycle operations.
///
/// Rules, in the order they are checked for a [`Request`]:
/// 1. an operation already answered is answered again with the same answer
///    (never re-applied); one being applied is not answered until its
///    completion comes back;
/// 2. an unsupported kind is answered `UnsupportedOperation`;
/// 3. a quiesced or draining backend (a quiesce applied, or being applied)
///    accepts no new work: a `Quiesce` on a quiesced backend is acknowledged
///    without being applied again, anything else is answered `Rejected`;
/// 4. otherwise the operation is applied ([`BackendOutput::Apply`]) and
///    answered by its completion. A failed quiesce leaves the backend
///    accepting work.
///
/// Mutate, then drain [`Backend::poll_output`]. Time plays no part here:
/// retransmission is the broker's job.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    key: BackendKey,
    cfg: BackendConfig,
    flaw: Option<FanoutFlaw>,
    durable: BackendDurable,
    /// Operations handed to the driver, awaiting their completion.
    applying: BTreeMap<OperationId, Operation>,
    outputs: VecDeque<BackendOutput>,
    cov: Coverage,
}

impl Backend {
    /// A correct backend that has answered nothing.
    pub fn new(key: BackendKey, cfg: BackendConfig) -> Self {
        Backend::with_flaw(key, cfg, None)
    }

    /// As [`Backend::new`], with a deliberate flaw (`None` = correct).
    pub fn with_flaw(key: BackendKey, cfg: BackendConfig, flaw: Option<FanoutFlaw>) -> Self {
        Backend::build(key, cfg, flaw, &BackendDurable::default())
    }

    /// A backend rebuilt after a crash from what it saved. Operations that
    /// were being applied are forgotten: a retransmission applies them anew.
    pub fn recover(
        key: BackendKey,
        cfg: BackendConfig,
        flaw: Option<FanoutFlaw>,
        durable: &BackendDurable,
    ) -> Self {
        let mut b = Backend::build(key, cfg, flaw, durable);
        b.hit(Tr::Recover);
        b
    }

    fn build(
        key: BackendKey,
        cfg: BackendConfig,
        flaw: Option<FanoutFlaw>,
        durable: &BackendDurable,
    ) -> Self {
        Backend {
            key,
            cfg,
            flaw,
            durable: durable.clone(),
            applying: BTreeMap::new(),
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    /// The transitions taken so far (indices into [`BACKEND_TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// The backend's key.
    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    /// What must survive a crash.
    pub fn durable(&self) -> &BackendDurable {
        &self.durable
    }

    /// Whether a quiesce has been applied.
    pub fn is_quiesced(&self) -> bool {
        self.durable.quiesced
    }

    /// Whether a quiesce is being applied (no new work is accepted).
    pub fn is_draining(&self) -> bool {
        self.applying
            .values()
            .any(|op| op.kind() == OperationKind::Quiesce)
    }

    /// The answer given to `id`, if any.
    pub fn answer(&self, id: OperationId) -> Option<Answer> {
        self.durable.answers.get(&id).copied()
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<BackendOutput> {
        self.outputs.pop_front()
    }

    /// A request from the broker (possibly a retransmission or a network
    /// duplicate). See the type's rules.
    pub fn handle_request(&mut self, request: Request) {
        let Request { id, op } = request;
        if self.applying.contains_key(&id) {
            self.hit(Tr::DuplicateWhileApplying);
            return;
        }
        let dedup = self.flaw != Some(FanoutFlaw::BackendNoDedup);
        if let Some(&answer) = self.durable.answers.get(&id) {
            if dedup || !self.accepts(&op) {
                self.hit(Tr::DuplicateAnswered);
                self.reply(id, answer);
                return;
            }
        }
        if !self.cfg.supported.contains(&op.kind()) {
            self.hit(Tr::Unsupported);
            self.answer_with(id, Answer::Failure(FailureReason::UnsupportedOperation));
            return;
        }
        if self.durable.quiesced || self.is_draining() {
            let answer = if self.durable.quiesced && op.kind() == OperationKind::Quiesce {
                self.hit(Tr::QuiescedReacked);
                Answer::Ack
            } else {
                self.hit(if self.durable.quiesced {
                    Tr::QuiescedRejected
                } else {
                    Tr::DrainingRejected
                });
                Answer::Failure(FailureReason::Rejected)
            };
            self.answer_with(id, answer);
            return;
        }
        self.hit(Tr::Applying);
        self.applying.insert(id, op.clone());
        self.outputs.push_back(BackendOutput::Apply { id, op });
    }

    /// Whether `op` would be applied now (supported, not quiesced, not
    /// draining).
    fn accepts(&self, op: &Operation) -> bool {
        self.cfg.supported.contains(&op.kind()) && !self.durable.quiesced && !self.is_draining()
    }

    /// The driver finished applying `id`: record the answer and send it.
    ///
    /// # Errors
    /// [`FanoutError::NotApplying`] if no [`BackendOutput::Apply`] for `id`
    /// is awaiting its completion (nothing changes).
    pub fn handle_applied(
        &mut self,
        id: OperationId,
        result: ApplyResult,
    ) -> Result<(), FanoutError> {
        let Some(op) = self.applying.remove(&id) else {
            self.hit(Tr::NotApplying);
            return Err(FanoutError::NotApplying(id));
        };
        let answer = match result {
            ApplyResult::Applied => {
                if op.kind() == OperationKind::Quiesce {
                    self.durable.quiesced = true;
                    self.hit(Tr::Quiesced);
                } else {
                    self.hit(Tr::Acked);
                }
                Answer::Ack
            }
            ApplyResult::Failed => {
                self.hit(Tr::ApplyFailed);
                Answer::Failure(FailureReason::BackendError)
            }
        };
        self.answer_with(id, answer);
        Ok(())
    }

    fn answer_with(&mut self, id: OperationId, answer: Answer) {
        self.durable.answers.insert(id, answer);
        self.reply(id, answer);
    }

    fn reply(&mut self, id: OperationId, answer: Answer) {
        self.outputs
            .push_back(BackendOutput::Reply(Reply { id, answer }));
    }
}
