//! The messages the nodes exchange, each carried in one frame
//! ([`crate::frame`]) inside an [`Envelope`] that pairs a reply with its
//! request.

use serde::{Deserialize, Serialize};
use simcast_machines::broadcast::{
    AckInfo, Body, BroadcastId, ChannelId, Message, TaskState, TimeTick,
};
use simcast_machines::locks::{LockRequest, ResourceKey};

/// A request or reply with its correlation id (the reply echoes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Chosen by the requester, echoed by the reply.
    pub corr: u64,
    /// The message.
    pub body: T,
}

// ----- WAL channel servers ---------------------------------------------------

/// To a WAL channel server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelRequest {
    /// Append a broadcast's message. Not idempotent: a retry appends a
    /// second copy (consumers dedup by broadcast id).
    Append {
        /// The broadcast.
        id: BroadcastId,
        /// The channel (must be the server's).
        channel: ChannelId,
        /// The message.
        message: Message,
    },
    /// How many copies of each broadcast the channel holds.
    Contents,
}

/// From a WAL channel server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelReply {
    /// Appended: the copy's message id and time tick.
    Appended(AckInfo),
    /// This server does not serve that channel.
    WrongChannel(ChannelId),
    /// `(broadcast, copies)` in first-append order.
    Contents(Vec<(BroadcastId, u32)>),
}

// ----- the metadata store ----------------------------------------------------

/// One application of a callback effect, as the store records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The broadcast.
    pub id: BroadcastId,
    /// The effect.
    pub payload: u64,
    /// The broadcast's resource keys.
    pub keys: LockRequest,
    /// Its control-channel time tick.
    pub control_tick: TimeTick,
}

/// To the metadata store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRequest {
    /// Apply a broadcast's callback effect (at most once per broadcast id).
    Invoke(Applied),
    /// Every application so far, in order.
    Record,
}

/// From the metadata store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReply {
    /// The effect is applied (now, or `duplicate`: before).
    Applied {
        /// It had been applied already; nothing changed.
        duplicate: bool,
    },
    /// The record.
    Record(Vec<Applied>),
}

// ----- the coordinator's client API ------------------------------------------

/// What a coordinator knows of a broadcast id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskStatus {
    /// Started and not yet broadcast (the handle is open).
    Open,
    /// In progress, in this state.
    InProgress(TaskState),
    /// Its callback ran; the tombstone is durable.
    Completed,
    /// Completed, and its tombstone was garbage-collected.
    Deleted,
    /// No task and no open handle: it was never persisted (an earlier run
    /// allocated it and crashed, or its handle was closed) and, since ids are
    /// never reused, it never will be. The caller may broadcast again.
    Lost,
}

/// To the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Take `keys` and allocate a broadcast id (answered `Started`).
    Start {
        /// The resource keys.
        keys: Vec<ResourceKey>,
    },
    /// Broadcast under a started id (answered `Done` once the callback
    /// completed).
    Broadcast {
        /// The handle.
        id: BroadcastId,
        /// What to broadcast.
        body: Body,
    },
    /// Release a started id without broadcasting.
    Close {
        /// The handle.
        id: BroadcastId,
    },
    /// What became of a broadcast id (a barrier query).
    Status {
        /// The broadcast.
        id: BroadcastId,
    },
    /// Ids of tasks not yet tombstones (a barrier query).
    Unfinished,
}

/// From the coordinator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The keys are held under this id.
    Started(BroadcastId),
    /// The broadcast completed: callback done, tombstone durable.
    Done(BroadcastId),
    /// The handle was released.
    Closed,
    /// The request was refused (the message says why); for a `Broadcast`,
    /// no task was created.
    Refused(String),
    /// The coordinator shut down after accepting the `Broadcast`: the task
    /// may still complete (after a restart); ask its `Status`.
    OutcomeUnknown,
    /// The answer to `Status`.
    Status(TaskStatus),
    /// The answer to `Unfinished`.
    Unfinished(Vec<BroadcastId>),
}
