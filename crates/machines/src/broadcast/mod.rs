//! The broadcaster: cross-channel atomic broadcast with resource-key locks,
//! ack tracking, ordered ack callbacks, tombstones and crash recovery.
//!
//! # Flow
//! 1. [`Broadcaster::start`] takes the caller's resource keys (blocking, in
//!    the [`LockTable`](crate::locks::LockTable)), then allocates a broadcast
//!    id (ids come after locking, so conflicting broadcasts get increasing
//!    ids) and reports [`Output::Started`].
//! 2. [`Broadcaster::broadcast`] creates a `Pending` task and persists it;
//!    nothing is appended before that write completes.
//! 3. The message is appended to every target channel not yet acked; a
//!    failed append is retried with backoff, forever.
//! 4. Acks record `{message id, time tick}` per channel and are persisted.
//!    With fast ack (default) the broadcaster acks a channel itself from the
//!    append result; with `ack_sync_up` it waits for the channel's consumers.
//! 5. When the control channel is acked the task is queued for its ack
//!    callback, once; the callback runs when every target is acked (and those
//!    acks are durable) and no earlier conflicting task is still queued or
//!    running. It is retried with backoff until it succeeds.
//! 6. Then the task becomes a `Tombstone`; once that is durable its keys are
//!    released and the caller gets [`Output::Done`]. Tombstones are deleted
//!    oldest first by a periodic check.
//!
//! # Shape
//! Sans-IO: inputs are method calls carrying `now`; everything the world must
//! do comes out of [`Broadcaster::poll_output`] (drain it after every call),
//! and [`Broadcaster::poll_timeout`] says when to call
//! [`Broadcaster::handle_timeout`]. Nothing is assumed done until its
//! completion comes back. After a crash, [`Broadcaster::recover`] rebuilds the
//! machine from its [`CatalogState`] alone.

pub mod acks;
pub mod backoff;
pub mod catalog;
mod gc;
mod recovery;
mod scheduler;

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::acks::{AckInfo, AckOutcome, AckSet};
pub use self::backoff::{Backoff, Jitter};
pub use self::catalog::{CatalogOp, CatalogState, IdRanges, TaskRecord, TaskState};
use self::scheduler::CallbackQueue;
use crate::coverage::Coverage;
use crate::locks::{LockEvent, LockFlaw, LockRequest, LockTable, OwnerId, RequestId, ResourceKey};
use crate::time::Time;
use crate::vecmap::{DequeMap, VecMap, VecSet};

/// A broadcast, and the handle its caller holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BroadcastId(pub u64);

impl crate::vecmap::SeqKey for BroadcastId {
    #[inline]
    fn past(self, first: Self) -> Option<usize> {
        self.0.past(first.0)
    }
}

impl fmt::Display for BroadcastId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A virtual channel (a WAL stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId(pub u32);

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ch{}", self.0)
    }
}

/// The id of one copy of a message on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// A globally increasing time tick assigned by an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimeTick(pub u64);

/// Who asked: an opaque token of the driver's, echoed in outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Caller(pub u64);

/// Identifies one catalog write, to match its completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteId(pub u64);

/// What a caller broadcasts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Body {
    /// The effect the ack callback applies to the metadata store (opaque).
    pub payload: u64,
    /// Target channels; must include the control channel.
    pub targets: BTreeSet<ChannelId>,
}

/// A message as appended and persisted: the body plus the resource keys.
///
/// Shared: a message is copied into every append, catalog write and
/// replicate header and never changes, so a copy costs one reference
/// count. Its fields are read through it ([`MessageData`]); it hashes,
/// compares and serializes as they do.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Message(Arc<MessageData>);

/// What a [`Message`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageData {
    /// The callback's effect.
    pub payload: u64,
    /// Target channels, including the control channel.
    pub targets: BTreeSet<ChannelId>,
    /// The broadcast's resource keys (replicated tasks order by them).
    pub keys: LockRequest,
}

impl Message {
    /// A message of `payload` to `targets`, under `keys`.
    pub fn new(payload: u64, targets: BTreeSet<ChannelId>, keys: LockRequest) -> Message {
        Message(Arc::new(MessageData {
            payload,
            targets,
            keys,
        }))
    }
}

impl std::ops::Deref for Message {
    type Target = MessageData;

    fn deref(&self) -> &MessageData {
        &self.0
    }
}

/// An ack of one channel of one broadcast.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ack {
    /// The broadcast.
    pub id: BroadcastId,
    /// The channel acknowledged.
    pub channel: ChannelId,
    /// What was acknowledged.
    pub info: AckInfo,
    /// The replicate header: present on a message replicated from another
    /// cluster; lets a secondary create a `Replicated` task for an unknown id.
    pub replicate: Option<Message>,
}

/// The cluster's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Accepts new broadcasts.
    Primary,
    /// Rejects new broadcasts with [`BroadcastError::NotPrimary`].
    Secondary,
}

/// Tombstone garbage collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcConfig {
    /// Keep at most this many tombstones.
    pub max_count: usize,
    /// Delete tombstones older than this.
    pub max_lifetime: Duration,
    /// How often to check.
    pub check_interval: Duration,
}

impl Default for GcConfig {
    /// 8192 tombstones, 24 h, every 5 min.
    fn default() -> Self {
        GcConfig {
            max_count: 8192,
            max_lifetime: Duration::from_secs(24 * 3600),
            check_interval: Duration::from_secs(300),
        }
    }
}

/// Deliberately broken variants, for the simulator's mutation testing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BroadcastFlaw {
    /// A waiting callback does not reserve its keys: a later conflicting task
    /// whose acks are complete overtakes it (the reference implementation's
    /// behaviour).
    CallbackOvertake,
    /// The first append is issued before the task is persisted.
    PersistAfterAppend,
    /// Recovery queues tombstones for their callback again.
    RecoveryRerunsTombstones,
    /// The callback runs as soon as the control channel is acked.
    CallbackBeforeAllAcks,
    /// The broadcaster's lock table treats a key's shared flag as part of
    /// its identity ([`LockFlaw::SharedInIdentity`]): `K@R` and `K@X` are
    /// held together.
    KeysSharedInIdentity,
}

/// Configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Config {
    /// The control channel (CChannel): every broadcast targets it.
    pub control: ChannelId,
    /// Every channel a broadcast may target.
    pub channels: BTreeSet<ChannelId>,
    /// Wait for consumers' acks instead of acking from append results.
    pub ack_sync_up: bool,
    /// Append retries.
    pub append_backoff: Backoff,
    /// Ack-callback retries.
    pub callback_backoff: Backoff,
    /// Catalog-write retries.
    pub write_backoff: Backoff,
    /// Tombstone garbage collection.
    pub gc: GcConfig,
    /// Broadcast ids reserved per catalog write.
    pub id_block: u64,
    /// A deliberate flaw (`None` in production).
    pub flaw: Option<BroadcastFlaw>,
}

impl Config {
    /// Defaults for a control channel and its vchannels.
    pub fn new(control: ChannelId, channels: impl IntoIterator<Item = ChannelId>) -> Self {
        let mut channels: BTreeSet<ChannelId> = channels.into_iter().collect();
        channels.insert(control);
        Config {
            control,
            channels,
            ack_sync_up: false,
            append_backoff: Backoff::APPEND,
            callback_backoff: Backoff::CALLBACK,
            write_backoff: Backoff::APPEND,
            gc: GcConfig::default(),
            id_block: 64,
            flaw: None,
        }
    }
}

/// Why a message cannot be broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BadMessage {
    /// No target channel.
    #[error("the message targets no channel")]
    NoTargets,
    /// The control channel is not among the targets.
    #[error("the targets must include the control channel {0}")]
    MissingControlChannel(ChannelId),
    /// A target is not a channel of this broadcaster.
    #[error("{0} is not a channel of this broadcaster")]
    UnknownChannel(ChannelId),
}

/// Errors returned to callers. Each rejected `broadcast` consumes its handle
/// and releases its keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BroadcastError {
    /// This cluster is not primary.
    #[error("not primary")]
    NotPrimary,
    /// The broadcaster is stopped.
    #[error("task not created: the broadcaster is stopped")]
    TaskNotCreated,
    /// No started, unused handle with this id (caller misuse).
    #[error("no open handle {0}")]
    UnknownHandle(BroadcastId),
    /// The message is malformed (caller misuse).
    #[error("bad message: {0}")]
    BadMessage(#[from] BadMessage),
}

/// Why an append, a callback or a catalog write did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum IoError {
    /// The operation failed.
    #[error("failed")]
    Failed,
    /// No reply in time: it may or may not have taken effect.
    #[error("timed out")]
    TimedOut,
}

/// What the broadcaster asks of its driver, or reports to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// Apply a catalog write; report with [`Broadcaster::handle_write_done`].
    Write {
        /// To match the completion.
        write: WriteId,
        /// What to write.
        op: CatalogOp,
    },
    /// Append the message to a channel; report with
    /// [`Broadcaster::handle_append_result`].
    Append {
        /// The broadcast.
        id: BroadcastId,
        /// Where.
        channel: ChannelId,
        /// What.
        message: Message,
        /// 1 for the first try.
        attempt: u32,
    },
    /// Run the ack callback on the metadata store; report with
    /// [`Broadcaster::handle_callback_result`].
    InvokeCallback {
        /// The broadcast (the store applies each id at most once).
        id: BroadcastId,
        /// The effect.
        payload: u64,
        /// The resource keys (for the store's own checks).
        keys: LockRequest,
        /// The control channel's time tick.
        control_tick: TimeTick,
        /// 1 for the first try.
        attempt: u32,
    },
    /// `start` succeeded: the caller holds its keys as handle `id`.
    Started {
        /// Who asked.
        caller: Caller,
        /// The handle.
        id: BroadcastId,
    },
    /// `start` was accepted but failed before a handle was allocated.
    StartFailed {
        /// Who asked.
        caller: Caller,
        /// Why.
        error: BroadcastError,
    },
    /// The broadcast completed: callback done, tombstone durable, keys
    /// released. Answers the caller's `broadcast`.
    Done {
        /// Who asked.
        caller: Caller,
        /// The broadcast.
        id: BroadcastId,
    },
    /// Recovery found a pending task whose keys conflict with another's.
    /// That cannot happen unless something is broken; the task then waits
    /// for its keys like a new request.
    RecoveryConflict {
        /// The task.
        id: BroadcastId,
    },
}

/// The transitions of the broadcaster (tasks, appends, acks, the callback
/// scheduler, ids, GC), as recorded in [`Broadcaster::coverage`].
pub const TRANSITIONS: &[&str] = &[
    "start: waits for keys",
    "start -> started",
    "start: rejected, not primary",
    "start: rejected, stopped",
    "broadcast: rejected",
    "close",
    "ids: reserve a block",
    "ids: reservation failed -> retry",
    "task: new -> Pending",
    "task: new -> Replicated",
    "task: Pending -> Tombstone",
    "task: Replicated -> Tombstone",
    "task: Tombstone -> deleted",
    "task write failed -> retry",
    "append: Idle -> Appending",
    "append: Appending -> acked (fast ack)",
    "append: Appending -> AwaitingAck",
    "append: Appending -> Backoff",
    "append: Backoff -> Appending",
    "ack: AwaitingAck -> acked",
    "ack: acked before its append result",
    "ack: duplicate ignored",
    "ack: unknown id ignored",
    "ack: deleted id ignored",
    "ack: tombstone ignored",
    "callback: NotQueued -> Queued",
    "callback: Queued -> Running",
    "callback: Queued held back by an earlier conflicting task",
    "callback: Running -> Backoff",
    "callback: Backoff -> Running",
    "callback: Running -> Done",
    "gc: delete failed, the rest kept",
    "recover: Pending",
    "recover: Replicated",
    "recover: Tombstone",
    "recover: pending keys conflict",
];

/// Indices into [`TRANSITIONS`].
#[derive(Clone, Copy)]
pub(crate) enum Tr {
    StartWaits,
    Started,
    StartNotPrimary,
    StartStopped,
    BroadcastRejected,
    Close,
    ReserveIds,
    ReserveRetry,
    NewPending,
    NewReplicated,
    PendingTombstone,
    ReplicatedTombstone,
    TombstoneDeleted,
    WriteRetry,
    AppendStart,
    AppendFastAck,
    AppendAwaitAck,
    AppendBackoff,
    AppendRetry,
    AckAfterAppend,
    AckBeforeAppendResult,
    AckDuplicate,
    AckUnknown,
    AckDeleted,
    AckTombstone,
    CallbackQueued,
    CallbackRunning,
    CallbackHeldBack,
    CallbackBackoff,
    CallbackRetry,
    CallbackDone,
    GcDeleteFailed,
    RecoverPending,
    RecoverReplicated,
    RecoverTombstone,
    RecoverConflict,
}

/// The closed set of timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Timer {
    AppendRetry(BroadcastId, ChannelId),
    CallbackRetry(BroadcastId),
    WriteRetry(BroadcastId),
    IdReserveRetry,
    TombstoneGc,
}

/// Progress of one target channel that is not acked yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ChannelProgress {
    /// Nothing sent yet (waiting for the first persist).
    Idle,
    /// An append is in flight.
    Appending { attempt: u32 },
    /// The last append failed; a retry timer is armed.
    Backoff { attempt: u32 },
    /// Appended; waiting for the consumers' ack (`ack_sync_up`), or a
    /// replicated task waiting for the replication stream.
    AwaitingAck,
}

/// Where a task's ack callback stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum CallbackProgress {
    /// The control channel is not acked yet.
    NotQueued,
    /// Queued, waiting for acks and for earlier conflicting tasks.
    Queued,
    /// Invoked, waiting for the result.
    Running { attempt: u32 },
    /// Failed; a retry timer is armed.
    Backoff { attempt: u32 },
    /// Succeeded.
    Done,
}

/// A task's in-memory state: the record plus what is lost in a crash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Task {
    record: TaskRecord,
    /// The state of the last completed write (`None`: not in the catalog).
    durable: Option<TaskState>,
    /// The number of acks in the last completed write.
    durable_acks: usize,
    /// The write in flight, and whether the record changed since.
    writing: Option<WriteId>,
    dirty: bool,
    write_failures: u32,
    /// The keys this task holds (Pending tasks on this cluster).
    lock: Option<RequestId>,
    channels: VecMap<ChannelId, ChannelProgress>,
    callback: CallbackProgress,
    /// Who waits for `Done`.
    caller: Option<Caller>,
}

impl Task {
    fn acks_complete_and_durable(&self) -> bool {
        self.record.acks.all(&self.record.message.targets)
            && self.durable_acks == self.record.acks.len()
    }

    fn control_tick(&self, control: ChannelId) -> Option<TimeTick> {
        self.record.acks.get(control).map(|a| a.time_tick)
    }
}

/// A started handle not yet used by `broadcast`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Handle {
    caller: Caller,
    lock: RequestId,
    keys: LockRequest,
}

/// What an in-flight catalog write is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum WriteFor {
    Task {
        id: BroadcastId,
        state: TaskState,
        acks: usize,
    },
    Reserve {
        limit: u64,
    },
    Delete {
        id: BroadcastId,
    },
}

/// The broadcaster. Mutate, then drain [`Broadcaster::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Broadcaster {
    cfg: Config,
    role: Role,
    stopped: bool,
    locks: LockTable,
    /// Lock requests of `start` calls waiting for their keys.
    starting: VecMap<RequestId, (Caller, LockRequest)>,
    /// Keys granted, waiting for an id (reservation in flight).
    awaiting_id: VecDeque<Handle>,
    next_id: u64,
    id_limit: u64,
    reserving: Option<WriteId>,
    reserve_failures: u32,
    handles: VecMap<BroadcastId, Handle>,
    /// By id: created in id order (mostly), deleted oldest first.
    tasks: DequeMap<BroadcastId, Task>,
    queue: CallbackQueue,
    /// Durable tombstones, oldest first: GC candidates.
    tombstones: BTreeSet<(Time, BroadcastId)>,
    graveyard: IdRanges,
    /// Deletes planned by the current GC round, in order.
    gc_round: VecDeque<BroadcastId>,
    deleting: Option<WriteId>,
    writes: VecMap<WriteId, WriteFor>,
    next_write: u64,
    timers: VecSet<(Time, Timer)>,
    outputs: VecDeque<Output>,
    cov: Coverage,
}

impl Broadcaster {
    /// The transitions taken so far (indices into [`TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    pub(crate) fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// A broadcaster with an empty catalog, in `role`, at time `now`.
    pub fn new(cfg: Config, role: Role, now: Time) -> Broadcaster {
        Broadcaster::recover(cfg, role, now, &CatalogState::new())
    }

    fn empty(cfg: Config, role: Role) -> Broadcaster {
        let lock_flaw = (cfg.flaw == Some(BroadcastFlaw::KeysSharedInIdentity))
            .then_some(LockFlaw::SharedInIdentity);
        Broadcaster {
            cfg,
            role,
            stopped: false,
            locks: LockTable::with_flaw(lock_flaw),
            starting: VecMap::default(),
            awaiting_id: VecDeque::new(),
            next_id: 1,
            id_limit: 1,
            reserving: None,
            reserve_failures: 0,
            handles: VecMap::default(),
            tasks: DequeMap::default(),
            queue: CallbackQueue::default(),
            tombstones: BTreeSet::new(),
            graveyard: IdRanges::default(),
            gc_round: VecDeque::new(),
            deleting: None,
            writes: VecMap::default(),
            next_write: 0,
            timers: VecSet::default(),
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    // ----- queries -------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether [`Broadcaster::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The lock table (for inspection: exclusion can be checked on it).
    pub fn lock_table(&self) -> &LockTable {
        &self.locks
    }

    /// The in-memory state of a task, or `None` if unknown (or deleted).
    pub fn task_state(&self, id: BroadcastId) -> Option<TaskState> {
        self.tasks.get(&id).map(|t| t.record.state)
    }

    /// Ids of tasks that are not tombstones yet.
    pub fn unfinished(&self) -> impl Iterator<Item = BroadcastId> + '_ {
        self.tasks
            .iter()
            .filter(|(_, t)| t.record.state != TaskState::Tombstone)
            .map(|(id, _)| *id)
    }

    /// Number of tasks known (tombstones included).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Whether nothing is in progress: no task short of a durable tombstone,
    /// no pending start, no open handle, no write in flight.
    pub fn is_quiescent(&self) -> bool {
        self.starting.is_empty()
            && self.awaiting_id.is_empty()
            && self.handles.is_empty()
            && self.writes.is_empty()
            && self
                .tasks
                .values()
                .all(|t| t.durable == Some(TaskState::Tombstone))
    }

    /// When [`Broadcaster::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ----- commands ------------------------------------------------------

    /// Changes the role. A secondary rejects new broadcasts; tasks already
    /// created go on either way.
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    /// Stops accepting work: pending and later `start`s, and `broadcast`s of
    /// open handles, fail with [`BroadcastError::TaskNotCreated`] and release
    /// their keys. Tasks already created go on.
    pub fn stop(&mut self, now: Time) {
        self.stopped = true;
        for (rid, (caller, _)) in std::mem::take(&mut self.starting) {
            // Waiting for keys: withdraw the request.
            let _ = self.locks.cancel(rid);
            self.outputs.push_back(Output::StartFailed {
                caller,
                error: BroadcastError::TaskNotCreated,
            });
        }
        for h in std::mem::take(&mut self.awaiting_id) {
            let _ = self.locks.release(h.lock);
            self.outputs.push_back(Output::StartFailed {
                caller: h.caller,
                error: BroadcastError::TaskNotCreated,
            });
        }
        self.drain_locks(now);
    }

    /// Takes `keys` (normalized, with the shared cluster key added) and, once
    /// they are held, allocates a broadcast id: reported by
    /// [`Output::Started`].
    ///
    /// # Errors
    /// [`BroadcastError::TaskNotCreated`] if stopped,
    /// [`BroadcastError::NotPrimary`] if not primary.
    pub fn start(
        &mut self,
        now: Time,
        caller: Caller,
        keys: impl IntoIterator<Item = ResourceKey>,
    ) -> Result<(), BroadcastError> {
        if self.stopped {
            self.hit(Tr::StartStopped);
            return Err(BroadcastError::TaskNotCreated);
        }
        if self.role != Role::Primary {
            self.hit(Tr::StartNotPrimary);
            return Err(BroadcastError::NotPrimary);
        }
        let keys = LockRequest::for_broadcast(keys);
        let rid = self.locks.acquire(OwnerId(caller.0), keys.clone());
        if self.locks.state(rid) == Some(crate::locks::RequestState::Waiting) {
            self.hit(Tr::StartWaits);
        }
        self.starting.insert(rid, (caller, keys));
        self.drain_locks(now);
        Ok(())
    }

    /// Releases a started handle without broadcasting.
    ///
    /// # Errors
    /// [`BroadcastError::UnknownHandle`].
    pub fn close(&mut self, now: Time, id: BroadcastId) -> Result<(), BroadcastError> {
        let h = self
            .handles
            .remove(&id)
            .ok_or(BroadcastError::UnknownHandle(id))?;
        self.hit(Tr::Close);
        self.release_keys(now, h.lock);
        Ok(())
    }

    /// Broadcasts `body` under handle `id`. On success the task is created;
    /// [`Output::Done`] answers the caller once its callback has completed.
    ///
    /// # Errors
    /// [`BroadcastError::UnknownHandle`]; otherwise the handle is consumed
    /// and its keys released: [`BroadcastError::TaskNotCreated`] if stopped,
    /// [`BroadcastError::NotPrimary`], [`BroadcastError::BadMessage`].
    pub fn broadcast(
        &mut self,
        now: Time,
        id: BroadcastId,
        body: Body,
    ) -> Result<(), BroadcastError> {
        let h = self
            .handles
            .remove(&id)
            .ok_or(BroadcastError::UnknownHandle(id))?;
        let rejection = if self.stopped {
            Some(BroadcastError::TaskNotCreated)
        } else if self.role != Role::Primary {
            Some(BroadcastError::NotPrimary)
        } else {
            self.validate(&body).err().map(BroadcastError::from)
        };
        if let Some(e) = rejection {
            self.hit(Tr::BroadcastRejected);
            self.release_keys(now, h.lock);
            return Err(e);
        }
        self.hit(Tr::NewPending);
        let message = Message::new(body.payload, body.targets, h.keys);
        let channels = message
            .targets
            .iter()
            .map(|c| (*c, ChannelProgress::Idle))
            .collect();
        let task = Task {
            record: TaskRecord {
                id,
                state: TaskState::Pending,
                message,
                acks: AckSet::new(),
                tombstoned_at: None,
            },
            durable: None,
            durable_acks: 0,
            writing: None,
            dirty: false,
            write_failures: 0,
            lock: Some(h.lock),
            channels,
            callback: CallbackProgress::NotQueued,
            caller: Some(h.caller),
        };
        self.tasks.insert(id, task);
        if self.cfg.flaw == Some(BroadcastFlaw::PersistAfterAppend) {
            self.append_idle(id);
        }
        self.persist(id);
        Ok(())
    }

    fn validate(&self, body: &Body) -> Result<(), BadMessage> {
        if body.targets.is_empty() {
            return Err(BadMessage::NoTargets);
        }
        if !body.targets.contains(&self.cfg.control) {
            return Err(BadMessage::MissingControlChannel(self.cfg.control));
        }
        if let Some(c) = body.targets.iter().find(|c| !self.cfg.channels.contains(c)) {
            return Err(BadMessage::UnknownChannel(*c));
        }
        Ok(())
    }

    // ----- completions ---------------------------------------------------

    /// A catalog write completed (or failed: it is then retried with
    /// backoff). Unknown write ids are ignored.
    pub fn handle_write_done(
        &mut self,
        now: Time,
        write: WriteId,
        result: Result<(), IoError>,
        jitter: Jitter,
    ) {
        let Some(what) = self.writes.remove(&write) else {
            return;
        };
        match what {
            WriteFor::Task { id, state, acks } => {
                self.on_task_written(now, id, state, acks, result, jitter)
            }
            WriteFor::Reserve { limit } => {
                self.reserving = None;
                match result {
                    Ok(()) => {
                        self.reserve_failures = 0;
                        self.id_limit = self.id_limit.max(limit);
                        self.allocate_ids();
                    }
                    Err(_) => {
                        self.hit(Tr::ReserveRetry);
                        self.reserve_failures += 1;
                        let at = now + self.cfg.write_backoff.delay(self.reserve_failures, jitter);
                        self.timers.insert((at, Timer::IdReserveRetry));
                    }
                }
            }
            WriteFor::Delete { id } => self.on_deleted(now, id, result),
        }
    }

    fn on_task_written(
        &mut self,
        now: Time,
        id: BroadcastId,
        state: TaskState,
        acks: usize,
        result: Result<(), IoError>,
        jitter: Jitter,
    ) {
        let backoff = self.cfg.write_backoff;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.writing = None;
        if result.is_err() {
            self.cov.hit(Tr::WriteRetry as usize);
            task.write_failures += 1;
            task.dirty = true;
            let at = now + backoff.delay(task.write_failures, jitter);
            self.timers.insert((at, Timer::WriteRetry(id)));
            return;
        }
        task.write_failures = 0;
        let first = task.durable.is_none();
        task.durable = Some(state);
        task.durable_acks = acks;
        if task.dirty {
            task.dirty = false;
            self.persist(id);
        }
        if first && state == TaskState::Pending {
            self.append_idle(id);
        }
        if state == TaskState::Tombstone {
            self.finish(now, id);
        }
        self.schedule_callbacks();
    }

    /// Records a task's move to Tombstone, by where it came from.
    fn hit_tombstone(&mut self, id: BroadcastId) {
        let replicated = self
            .tasks
            .get(&id)
            .is_some_and(|t| t.lock.is_none() && t.caller.is_none());
        self.hit(if replicated {
            Tr::ReplicatedTombstone
        } else {
            Tr::PendingTombstone
        });
    }

    /// The result of an append. Stale results (for a channel no longer
    /// appending) are ignored. A failure or timeout is retried with backoff.
    pub fn handle_append_result(
        &mut self,
        now: Time,
        id: BroadcastId,
        channel: ChannelId,
        result: Result<AckInfo, IoError>,
        jitter: Jitter,
    ) {
        let backoff = self.cfg.append_backoff;
        let fast_ack = !self.cfg.ack_sync_up;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(ChannelProgress::Appending { attempt }) = task.channels.get(&channel).copied()
        else {
            return;
        };
        match result {
            Ok(info) => {
                task.channels.insert(channel, ChannelProgress::AwaitingAck);
                if fast_ack {
                    self.hit(Tr::AppendFastAck);
                    self.record_ack(id, channel, info);
                    self.schedule_callbacks();
                } else {
                    self.hit(Tr::AppendAwaitAck);
                }
            }
            Err(_) => {
                task.channels
                    .insert(channel, ChannelProgress::Backoff { attempt });
                let at = now + backoff.delay(attempt, jitter);
                self.timers.insert((at, Timer::AppendRetry(id, channel)));
                self.hit(Tr::AppendBackoff);
            }
        }
    }

    /// An ack from a consumer or the replication stream. Idempotent. An ack
    /// for an unknown id creates a `Replicated` task if it carries a
    /// replicate header and the id was never deleted here; otherwise it is
    /// ignored, as are acks of tombstones.
    pub fn handle_ack(&mut self, now: Time, ack: Ack) {
        let _ = now;
        if !self.tasks.contains_key(&ack.id) {
            let Some(message) = ack.replicate else {
                self.hit(Tr::AckUnknown);
                return;
            };
            if self.graveyard.contains(ack.id) {
                self.hit(Tr::AckDeleted);
                return;
            }
            self.hit(Tr::NewReplicated);
            let channels = message
                .targets
                .iter()
                .map(|c| (*c, ChannelProgress::AwaitingAck))
                .collect();
            self.tasks.insert(
                ack.id,
                Task {
                    record: TaskRecord {
                        id: ack.id,
                        state: TaskState::Replicated,
                        message,
                        acks: AckSet::new(),
                        tombstoned_at: None,
                    },
                    durable: None,
                    durable_acks: 0,
                    writing: None,
                    dirty: false,
                    write_failures: 0,
                    lock: None,
                    channels,
                    callback: CallbackProgress::NotQueued,
                    caller: None,
                },
            );
        }
        if self.tasks[&ack.id].record.state == TaskState::Tombstone {
            self.hit(Tr::AckTombstone);
            return;
        }
        match self.tasks[&ack.id].channels.get(&ack.channel) {
            Some(ChannelProgress::AwaitingAck) => self.hit(Tr::AckAfterAppend),
            Some(ChannelProgress::Appending { .. } | ChannelProgress::Backoff { .. }) => {
                self.hit(Tr::AckBeforeAppendResult);
            }
            _ => {}
        }
        self.record_ack(ack.id, ack.channel, ack.info);
        self.schedule_callbacks();
    }

    /// Records an ack; persists it; queues the callback on the control
    /// channel's ack.
    fn record_ack(&mut self, id: BroadcastId, channel: ChannelId, info: AckInfo) {
        let control = self.cfg.control;
        let task = self.tasks.get_mut(&id).expect("known task");
        let targets = &task.record.message.targets;
        let outcome = task.record.acks.ack(targets, channel, info);
        if outcome != AckOutcome::Recorded {
            if outcome == AckOutcome::Duplicate {
                self.hit(Tr::AckDuplicate);
            }
            return;
        }
        // A retry timer still armed for this channel finds it gone and does
        // nothing.
        task.channels.remove(&channel);
        if channel == control && task.callback == CallbackProgress::NotQueued {
            task.callback = CallbackProgress::Queued;
            self.queue
                .push(info.time_tick, id, task.record.message.keys.clone());
            self.cov.hit(Tr::CallbackQueued as usize);
        }
        self.persist(id);
    }

    /// The result of an ack callback. Stale results are ignored; a failure
    /// is retried with backoff.
    pub fn handle_callback_result(
        &mut self,
        now: Time,
        id: BroadcastId,
        result: Result<(), IoError>,
        jitter: Jitter,
    ) {
        let backoff = self.cfg.callback_backoff;
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let CallbackProgress::Running { attempt } = task.callback else {
            return;
        };
        match result {
            Ok(()) => {
                task.callback = CallbackProgress::Done;
                task.record.state = TaskState::Tombstone;
                task.record.tombstoned_at.get_or_insert(now);
                self.cov.hit(Tr::CallbackDone as usize);
                self.hit_tombstone(id);
                self.queue.remove(id);
                self.persist(id);
                self.schedule_callbacks();
            }
            Err(_) => {
                task.callback = CallbackProgress::Backoff { attempt };
                let at = now + backoff.delay(attempt, jitter);
                self.timers.insert((at, Timer::CallbackRetry(id)));
                self.hit(Tr::CallbackBackoff);
            }
        }
    }

    /// Fires every timer due at `now`. Spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.fire(now, timer);
        }
    }

    fn fire(&mut self, now: Time, timer: Timer) {
        match timer {
            Timer::AppendRetry(id, channel) => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                if let Some(ChannelProgress::Backoff { attempt }) =
                    task.channels.get(&channel).copied()
                {
                    self.hit(Tr::AppendRetry);
                    self.send_append(id, channel, attempt + 1);
                }
            }
            Timer::CallbackRetry(id) => {
                let Some(task) = self.tasks.get_mut(&id) else {
                    return;
                };
                if let CallbackProgress::Backoff { attempt } = task.callback {
                    self.hit(Tr::CallbackRetry);
                    self.invoke(id, attempt + 1);
                }
            }
            Timer::WriteRetry(id) => {
                if self
                    .tasks
                    .get(&id)
                    .is_some_and(|t| t.writing.is_none() && t.dirty)
                {
                    self.tasks.get_mut(&id).expect("checked").dirty = false;
                    self.persist(id);
                }
            }
            Timer::IdReserveRetry => self.allocate_ids(),
            Timer::TombstoneGc => self.gc_check(now),
        }
    }

    // ----- internals -----------------------------------------------------

    fn drain_locks(&mut self, _now: Time) {
        while let Some(LockEvent::Granted { request, .. }) = self.locks.poll_event() {
            if let Some((caller, keys)) = self.starting.remove(&request) {
                self.awaiting_id.push_back(Handle {
                    caller,
                    lock: request,
                    keys,
                });
            }
            // Otherwise: a recovered task that had to wait for its keys.
        }
        self.allocate_ids();
    }

    /// Hands out ids to granted starts, reserving a new block when needed.
    fn allocate_ids(&mut self) {
        while !self.awaiting_id.is_empty() {
            if self.next_id >= self.id_limit {
                if self.reserving.is_none() {
                    self.hit(Tr::ReserveIds);
                    let limit = self.id_limit.max(self.next_id) + self.cfg.id_block.max(1);
                    let write =
                        self.write(WriteFor::Reserve { limit }, CatalogOp::ReserveIds(limit));
                    self.reserving = Some(write);
                }
                return;
            }
            let h = self.awaiting_id.pop_front().expect("non-empty");
            self.hit(Tr::Started);
            let id = BroadcastId(self.next_id);
            self.next_id += 1;
            self.outputs.push_back(Output::Started {
                caller: h.caller,
                id,
            });
            self.handles.insert(id, h);
        }
    }

    fn write(&mut self, what: WriteFor, op: CatalogOp) -> WriteId {
        self.next_write += 1;
        let write = WriteId(self.next_write);
        self.writes.insert(write, what);
        self.outputs.push_back(Output::Write { write, op });
        write
    }

    /// Writes the task's record, or marks it dirty if a write is in flight
    /// (one write per task at a time, so completions cannot reorder).
    fn persist(&mut self, id: BroadcastId) {
        let task = self.tasks.get_mut(&id).expect("known task");
        if task.writing.is_some() {
            task.dirty = true;
            return;
        }
        let record = task.record.clone();
        let what = WriteFor::Task {
            id,
            state: record.state,
            acks: record.acks.len(),
        };
        let write = self.write(what, CatalogOp::PutTask(record));
        self.tasks.get_mut(&id).expect("known task").writing = Some(write);
    }

    /// Appends to every target still idle.
    fn append_idle(&mut self, id: BroadcastId) {
        let task = self.tasks.get_mut(&id).expect("known task");
        for (&channel, progress) in task.channels.iter_mut() {
            if *progress == ChannelProgress::Idle {
                self.cov.hit(Tr::AppendStart as usize);
                let message = &task.record.message;
                push_append(&mut self.outputs, id, channel, progress, message, 1);
            }
        }
    }

    /// Appends again to a channel in backoff.
    fn send_append(&mut self, id: BroadcastId, channel: ChannelId, attempt: u32) {
        let task = self.tasks.get_mut(&id).expect("known task");
        let progress = task
            .channels
            .get_mut(&channel)
            .expect("a channel not acked");
        let message = &task.record.message;
        push_append(&mut self.outputs, id, channel, progress, message, attempt);
    }

    fn invoke(&mut self, id: BroadcastId, attempt: u32) {
        let control = self.cfg.control;
        let task = self.tasks.get_mut(&id).expect("known task");
        task.callback = CallbackProgress::Running { attempt };
        self.outputs.push_back(Output::InvokeCallback {
            id,
            payload: task.record.message.payload,
            keys: task.record.message.keys.clone(),
            control_tick: task.control_tick(control).unwrap_or(TimeTick(0)),
            attempt,
        });
    }

    /// The tombstone is durable: release the keys, answer the caller, hand
    /// the tombstone to GC.
    fn finish(&mut self, now: Time, id: BroadcastId) {
        let task = self.tasks.get_mut(&id).expect("known task");
        let at = task.record.tombstoned_at.unwrap_or(now);
        let lock = task.lock.take();
        let caller = task.caller.take();
        task.channels.clear();
        if !self.tombstones.insert((at, id)) {
            // Already handed over (a rewrite of the same tombstone).
            return;
        }
        if let Some(caller) = caller {
            self.outputs.push_back(Output::Done { caller, id });
        }
        if let Some(lock) = lock {
            self.release_keys(now, lock);
        }
    }

    fn release_keys(&mut self, now: Time, lock: RequestId) {
        match self.locks.state(lock) {
            Some(crate::locks::RequestState::Held) => {
                let _ = self.locks.release(lock);
            }
            Some(crate::locks::RequestState::Waiting) => {
                let _ = self.locks.cancel(lock);
            }
            None => {}
        }
        self.drain_locks(now);
    }
}

/// Marks `channel` appending and asks for the append of `message`.
fn push_append(
    outputs: &mut VecDeque<Output>,
    id: BroadcastId,
    channel: ChannelId,
    progress: &mut ChannelProgress,
    message: &Message,
    attempt: u32,
) {
    *progress = ChannelProgress::Appending { attempt };
    outputs.push_back(Output::Append {
        id,
        channel,
        message: message.clone(),
        attempt,
    });
}

#[cfg(test)]
mod tests;
