//! The `broadcast` protocol: the broadcaster on a coordinator with a durable
//! catalog, WAL channels, consumers, a metadata store, and optionally a
//! secondary cluster fed by replication.
//!
//! World:
//! - cluster A: node `coord-a` hosting a [`Broadcaster`]; its catalog (a
//!   write is durable only once its completion is delivered); WAL channels
//!   (control `ch0` and vchannels) whose appends get a message id and a
//!   globally increasing time tick; consumers that ack each message under
//!   `ack_sync_up`; a metadata store that applies callback effects, each
//!   broadcast id at most once (unless mutated);
//! - cluster B (optional, `secondary = true`): node `coord-b`, always
//!   secondary, fed by one FIFO replication stream per channel from A's
//!   channels; its consumers ack with the replicate header, so B creates
//!   `Replicated` tasks; on restart they re-read B's channel copies;
//! - clients that start broadcasts on A with random keys over all five
//!   domains, then broadcast (or close the handle).
//!
//! Faults: coordinator crashes (volatile state, timers and in-flight
//! completions lost; restart recovers from the catalog), append failures,
//! appends whose reply is lost (a retry appends a duplicate), duplicated and
//! late consumer acks, callback failures and lost callback replies, catalog
//! write failures, role changes (A demoted, later promoted), replication
//! lag.

use std::collections::BTreeSet;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use simcast_machines::broadcast::{
    Ack, AckInfo, Body, BroadcastError, BroadcastFlaw, BroadcastId, Broadcaster, Caller, CatalogOp,
    CatalogState, ChannelId, Config, GcConfig, IoError, Jitter, Message, MessageId, Output, Role,
    TaskState, TimeTick, WriteId,
};
use simcast_machines::coverage::Coverage;
use simcast_machines::locks::{LockRequest, RequestId, ResourceKey};
use simcast_machines::time::Time;
use simcast_machines::vecmap::{VecMap, VecSet};

use crate::engine::{Cx, NodeId, Protocol, Shared};
use crate::faults::ppm;
use crate::protocols::checks::{self, us};
use crate::protocols::keys::{KeyConfig, KeySpace, clash};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

const EXACTLY_ONCE: &str = "broadcast.callback_exactly_once";
const ORDER: &str = "broadcast.callback_order";
const AFTER_ALL_ACKS: &str = "broadcast.callback_after_all_acks";
const PERSIST_FIRST: &str = "broadcast.persist_before_append";
const EVENTUALLY_DONE: &str = "broadcast.eventually_done";
const ALL_DELIVERED: &str = "broadcast.all_channels_delivered";
const NO_RESURRECTION: &str = "broadcast.no_resurrection";
const KEYS_RELEASED: &str = "broadcast.keys_released";
const NOT_PRIMARY: &str = "broadcast.not_primary_rejected";
const EXCLUSION: &str = "broadcast.keys_exclusive";

/// Names of the broadcast protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "broadcast",
    doc: "cross-channel atomic broadcast with ordered ack callbacks, tombstones and recovery",
    invariants: &[
        InvariantInfo {
            name: EXACTLY_ONCE,
            kind: InvariantKind::Safety,
            doc: "each store applies a broadcast's effect at most once, and a tombstone's callback never runs again",
        },
        InvariantInfo {
            name: ORDER,
            kind: InvariantKind::Safety,
            doc: "conflicting callbacks apply in control-channel time-tick order and never overlap",
        },
        InvariantInfo {
            name: AFTER_ALL_ACKS,
            kind: InvariantKind::Safety,
            doc: "a callback runs only once every target channel holds the message",
        },
        InvariantInfo {
            name: PERSIST_FIRST,
            kind: InvariantKind::Safety,
            doc: "a task is in the catalog before its first append",
        },
        InvariantInfo {
            name: EXCLUSION,
            kind: InvariantKind::Safety,
            doc: "no two requests held in a broadcaster's lock table conflict, and recovery finds no two pending tasks with conflicting keys",
        },
        InvariantInfo {
            name: NO_RESURRECTION,
            kind: InvariantKind::Safety,
            doc: "a deleted tombstone never comes back into the catalog",
        },
        InvariantInfo {
            name: NOT_PRIMARY,
            kind: InvariantKind::Safety,
            doc: "a non-primary cluster accepts no new broadcast",
        },
        InvariantInfo {
            name: EVENTUALLY_DONE,
            kind: InvariantKind::Liveness,
            doc: "after healing, every persisted task is a tombstone (or deleted) and its effect applied exactly once",
        },
        InvariantInfo {
            name: ALL_DELIVERED,
            kind: InvariantKind::Liveness,
            doc: "every target channel holds every completed broadcast at least once; consumers see it once after dedup",
        },
        InvariantInfo {
            name: KEYS_RELEASED,
            kind: InvariantKind::Liveness,
            doc: "no keys are held once every task is a tombstone",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "store-no-dedup",
            invariant: EXACTLY_ONCE,
            doc: "the metadata store applies every invocation, without dedup by broadcast id",
        },
        MutantInfo {
            name: "callback-overtake",
            invariant: ORDER,
            doc: "a waiting callback does not reserve its keys (the reference scheduler)",
        },
        MutantInfo {
            name: "persist-after-append",
            invariant: PERSIST_FIRST,
            doc: "the task is persisted after its first append instead of before",
        },
        MutantInfo {
            name: "recovery-reruns-tombstones",
            invariant: EXACTLY_ONCE,
            doc: "recovery queues tombstones for their callback again",
        },
        MutantInfo {
            name: "callback-before-all-acks",
            invariant: AFTER_ALL_ACKS,
            doc: "the callback runs once the control channel is acked",
        },
        MutantInfo {
            name: "broadcast-keys-shared-in-identity",
            invariant: EXCLUSION,
            doc: "the broadcaster's lock table takes K@R and K@X for different locks",
        },
    ],
    faults: &[
        FaultInfo {
            name: "coordinator_crash",
            doc: "a coordinator crashes as it handles an event, and restarts later",
        },
        FaultInfo {
            name: "append_fail",
            doc: "an append fails without appending",
        },
        FaultInfo {
            name: "append_reply_lost",
            doc: "an append succeeds but its reply is lost (the caller times out)",
        },
        FaultInfo {
            name: "ack_duplicate",
            doc: "a consumer acks a message twice",
        },
        FaultInfo {
            name: "ack_lost",
            doc: "a consumer's ack is lost (the consumer acks again later)",
        },
        FaultInfo {
            name: "ack_late",
            doc: "a consumer ack is delayed by late_factor",
        },
        FaultInfo {
            name: "callback_fail",
            doc: "the metadata store rejects a callback without applying it",
        },
        FaultInfo {
            name: "callback_reply_lost",
            doc: "the store applies a callback but the reply is lost (the caller times out)",
        },
        FaultInfo {
            name: "catalog_write_fail",
            doc: "a catalog write fails",
        },
        FaultInfo {
            name: "role_change",
            doc: "the primary cluster is demoted to secondary for a while",
        },
        FaultInfo {
            name: "coordinator_stop",
            doc: "coordinator A stops (graceful shutdown) and exits after stop_ms, then restarts",
        },
        FaultInfo {
            name: "replication_lag",
            doc: "one channel's replication stream to the secondary stalls by late_factor",
        },
    ],
    sites: &[
        SiteInfo {
            name: "coordinator_event",
            doc: "a coordinator is about to handle an event",
            params: &["cluster"],
            faults: &["coordinator_crash", "coordinator_stop"],
        },
        SiteInfo {
            name: "tombstone_persisted",
            doc: "a coordinator has just made a tombstone durable",
            params: &["cluster"],
            faults: &["coordinator_crash"],
        },
        SiteInfo {
            name: "catalog_write",
            doc: "a coordinator issues a catalog write",
            params: &["cluster"],
            faults: &["catalog_write_fail"],
        },
        SiteInfo {
            name: "append",
            doc: "coordinator A issues an append to a channel",
            params: &["channel"],
            faults: &["append_fail"],
        },
        SiteInfo {
            name: "append_landed",
            doc: "an append has reached its channel and is about to be answered",
            params: &["channel"],
            faults: &["append_reply_lost"],
        },
        SiteInfo {
            name: "ack",
            doc: "a consumer sends an ack (cluster 0 = A, 1 = B)",
            params: &["cluster", "channel"],
            faults: &["ack_lost", "ack_late", "ack_duplicate"],
        },
        SiteInfo {
            name: "callback",
            doc: "a callback invocation reaches a metadata store",
            params: &["cluster"],
            faults: &["callback_fail", "callback_reply_lost"],
        },
        SiteInfo {
            name: "client_wake",
            doc: "a client starts a broadcast (client 1 = client-1)",
            params: &["client"],
            faults: &["role_change"],
        },
        SiteInfo {
            name: "replication",
            doc: "a message is sent down a channel's replication stream",
            params: &["channel"],
            faults: &["replication_lag"],
        },
    ],
    machines: &[
        ("broadcaster", simcast_machines::broadcast::TRANSITIONS),
        ("lock table", simcast_machines::locks::TRANSITIONS),
    ],
    unreachable: &[
        (
            "broadcaster: recover: pending keys conflict",
            "pending tasks hold their keys, so no two of them conflict; this transition marks a bug",
        ),
        (
            "lock table: try -> refused (holder)",
            "the broadcaster try-acquires only in recovery, where a refusal is the conflict above",
        ),
        (
            "lock table: try -> refused (waiter)",
            "recovery try-acquires before anything waits",
        ),
        (
            "lock table: owner release: held -> released",
            "the broadcaster releases by request, never by owner",
        ),
        (
            "lock table: owner release: waiting -> cancelled",
            "the broadcaster releases by request, never by owner",
        ),
    ],
};

const F_CRASH: usize = 0;
const F_APPEND_FAIL: usize = 1;
const F_APPEND_REPLY_LOST: usize = 2;
const F_ACK_DUP: usize = 3;
const F_ACK_LOST: usize = 4;
const F_ACK_LATE: usize = 5;
const F_CALLBACK_FAIL: usize = 6;
const F_CALLBACK_REPLY_LOST: usize = 7;
const F_WRITE_FAIL: usize = 8;
const F_ROLE_CHANGE: usize = 9;
const F_STOP: usize = 10;
const F_REPL_LAG: usize = 11;

/// The `[workload]` table of a broadcast scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastWorkload {
    /// Clients starting broadcasts on cluster A.
    pub clients: u32,
    /// Broadcast attempts per client.
    pub broadcasts: u32,
    /// Vchannels besides the control channel.
    pub vchannels: u32,
    /// Each vchannel is a target of a broadcast with this probability.
    #[serde(default = "half")]
    pub vchannel_ratio: f64,
    /// Probability that a client closes its handle instead of broadcasting.
    #[serde(default)]
    pub close_ratio: f64,
    /// Run a secondary cluster fed by replication.
    #[serde(default)]
    pub secondary: bool,
    /// Wait for consumers' acks instead of fast ack.
    #[serde(default)]
    pub ack_sync_up: bool,
    /// How keys are drawn.
    #[serde(flatten)]
    pub keys: KeyConfig,
    /// Pause between a client's broadcasts.
    pub think_ms: [u64; 2],
    /// Client <-> coordinator latency.
    pub net_ms: [u64; 2],
    /// Latency of appends, consumer acks, callbacks and catalog writes.
    pub io_ms: [u64; 2],
    /// Replication latency per message.
    pub replication_ms: [u64; 2],
    /// After this long without a reply an operation times out.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// A late ack or a lagging replication stream is this many times slower.
    #[serde(default = "default_late")]
    pub late_factor: u64,
    /// How long a crashed coordinator stays down.
    #[serde(default = "default_restart")]
    pub restart_ms: [u64; 2],
    /// How long a stopped coordinator lingers before its process exits.
    #[serde(default = "default_stop")]
    pub stop_ms: [u64; 2],
    /// How long a demoted primary stays secondary.
    #[serde(default = "default_demotion")]
    pub demotion_ms: [u64; 2],
    /// Backoff jitter, per mille, at most.
    #[serde(default)]
    pub jitter_permille: u32,
    /// Tombstone GC: keep at most this many.
    #[serde(default = "default_gc_count")]
    pub gc_max_count: usize,
    /// Tombstone GC: delete tombstones older than this.
    #[serde(default = "default_gc_lifetime")]
    pub gc_lifetime_ms: u64,
    /// Tombstone GC: check this often.
    #[serde(default = "default_gc_interval")]
    pub gc_interval_ms: u64,
}

fn half() -> f64 {
    0.5
}
fn default_timeout() -> u64 {
    50
}
fn default_late() -> u64 {
    20
}
fn default_restart() -> [u64; 2] {
    [10, 200]
}
fn default_stop() -> [u64; 2] {
    [5, 50]
}
fn default_demotion() -> [u64; 2] {
    [50, 500]
}
fn default_gc_count() -> usize {
    8
}
fn default_gc_lifetime() -> u64 {
    2_000
}
fn default_gc_interval() -> u64 {
    250
}

impl BroadcastWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.keys.validate()?;
        checks::at_least_one(&[
            ("clients", u64::from(self.clients)),
            ("broadcasts", u64::from(self.broadcasts)),
            ("timeout_ms", self.timeout_ms),
            ("late_factor", self.late_factor),
            ("gc_interval_ms", self.gc_interval_ms),
        ])?;
        if self.vchannels > 64 {
            return Err("`vchannels` must be at most 64".to_owned());
        }
        checks::probabilities(&[
            ("vchannel_ratio", self.vchannel_ratio),
            ("close_ratio", self.close_ratio),
        ])?;
        checks::ranges(&[
            ("think_ms", self.think_ms),
            ("net_ms", self.net_ms),
            ("io_ms", self.io_ms),
            ("replication_ms", self.replication_ms),
            ("restart_ms", self.restart_ms),
            ("stop_ms", self.stop_ms),
            ("demotion_ms", self.demotion_ms),
        ])?;
        if self.io_ms[1] >= self.timeout_ms {
            return Err("`timeout_ms` must exceed the largest `io_ms`".to_owned());
        }
        if self.jitter_permille > 1000 {
            return Err("`jitter_permille` must be at most 1000".to_owned());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash)]
struct Params {
    clients: u32,
    broadcasts: u32,
    vchannels: u32,
    vchannel_ppm: u32,
    close_ppm: u32,
    secondary: bool,
    keys: KeySpace,
    think_us: (u64, u64),
    net_us: (u64, u64),
    io_us: (u64, u64),
    repl_us: (u64, u64),
    timeout_us: u64,
    late: u64,
    restart_us: (u64, u64),
    stop_us: (u64, u64),
    demotion_us: (u64, u64),
    jitter: u64,
    store_dedup: bool,
}

/// Which cluster: 0 = A (primary), 1 = B (secondary).
type Cl = u8;
const A: Cl = 0;
const B: Cl = 1;

fn cl_name(c: Cl) -> &'static str {
    if c == A { "A" } else { "B" }
}

/// What a client hears back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// The start succeeded.
    Started(BroadcastId),
    /// The broadcast completed.
    Done(BroadcastId),
    /// The call was refused.
    Refused(BroadcastError),
    /// The coordinator went away before answering.
    Unavailable,
}

/// Events of the broadcast world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BcEvent {
    /// A client's think time is over.
    ClientWake {
        /// Client.
        client: u32,
    },
    /// A client's `start` reaches coordinator A.
    CallStart {
        /// Client.
        client: u32,
        /// Call number.
        call: u64,
        /// Keys.
        keys: Vec<ResourceKey>,
    },
    /// A client's `broadcast` reaches coordinator A.
    CallBroadcast {
        /// Client.
        client: u32,
        /// Call number.
        call: u64,
        /// Handle.
        id: BroadcastId,
        /// What.
        body: Body,
    },
    /// A client's `close` reaches coordinator A.
    CallClose {
        /// Client.
        client: u32,
        /// Handle.
        id: BroadcastId,
    },
    /// An answer reaches a client.
    Reply {
        /// Client.
        client: u32,
        /// Call number.
        call: u64,
        /// What.
        reply: Reply,
    },
    /// A catalog write completes at a coordinator. The catalog applies it
    /// now: the operation waits in the cluster's writes in flight (the
    /// event is small; it carries what the trace shows).
    WriteDone {
        /// Cluster.
        cluster: Cl,
        /// Write.
        write: WriteId,
        /// What was written, or that the write failed.
        written: Written,
    },
    /// An append reaches a channel of A.
    AppendArrive {
        /// Broadcast.
        id: BroadcastId,
        /// Channel.
        channel: ChannelId,
        /// Message.
        message: Message,
    },
    /// An append's result reaches coordinator A.
    AppendDone {
        /// Broadcast.
        id: BroadcastId,
        /// Channel.
        channel: ChannelId,
        /// Result.
        result: Result<AckInfo, IoError>,
    },
    /// A's consumer of a message copy acks it (again, until it is durable).
    AckSend {
        /// Broadcast.
        id: BroadcastId,
        /// Channel.
        channel: ChannelId,
        /// The copy.
        info: AckInfo,
    },
    /// A consumer's ack reaches a coordinator.
    ConsumerAck {
        /// Cluster.
        cluster: Cl,
        /// The ack.
        ack: Ack,
    },
    /// A callback invocation reaches a cluster's metadata store.
    CallbackArrive {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
        /// Keys.
        keys: LockRequest,
        /// Control tick.
        tick: TimeTick,
    },
    /// A callback's result reaches a coordinator.
    CallbackDone {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
        /// Result.
        result: Result<(), IoError>,
    },
    /// The next message of A's channel reaches B's copy of it.
    Replicate {
        /// Channel.
        channel: ChannelId,
    },
    /// B's consumer of a channel checks its checkpoint and (re)delivers the
    /// first message B has not durably recorded.
    ConsumerStep {
        /// Channel.
        channel: ChannelId,
    },
    /// A coordinator's timer.
    Timer {
        /// Cluster.
        cluster: Cl,
    },
    /// A crashed coordinator comes back.
    Restart {
        /// Cluster.
        cluster: Cl,
    },
    /// The demoted primary is promoted again.
    Promote,
    /// A stopped coordinator's process exits (it restarts later).
    Exit {
        /// Cluster.
        cluster: Cl,
    },
}

impl fmt::Display for BcEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BcEvent::ClientWake { client } => write!(f, "client-{} wakes", client + 1),
            BcEvent::CallStart { client, call, keys } => {
                write!(f, "start from client-{}#{call} [", client + 1)?;
                for (i, k) in keys.iter().enumerate() {
                    write!(f, "{}{k}", if i > 0 { " " } else { "" })?;
                }
                f.write_str("]")
            }
            BcEvent::CallBroadcast {
                client,
                call,
                id,
                body,
            } => write!(
                f,
                "broadcast {id} from client-{}#{call} payload {} to {}",
                client + 1,
                body.payload,
                ChannelList(&body.targets)
            ),
            BcEvent::CallClose { client, id } => write!(f, "close {id} from client-{}", client + 1),
            BcEvent::Reply {
                client,
                call,
                reply,
            } => {
                write!(f, "client-{}#{call} hears {reply:?}", client + 1)
            }
            BcEvent::WriteDone {
                cluster,
                write,
                written,
            } => match written {
                Written::Failed => {
                    write!(f, "{} catalog write w{} failed", cl_name(*cluster), write.0)
                }
                done => write!(
                    f,
                    "{} catalog write w{} done: {done}",
                    cl_name(*cluster),
                    write.0
                ),
            },
            BcEvent::AppendArrive { id, channel, .. } => write!(f, "{id} lands on A/{channel}"),
            BcEvent::AppendDone {
                id,
                channel,
                result,
            } => match result {
                Ok(a) => write!(
                    f,
                    "append {id} to {channel} ok: m{} tick {}",
                    a.message_id.0, a.time_tick.0
                ),
                Err(e) => write!(f, "append {id} to {channel} {e}"),
            },
            BcEvent::ConsumerAck { cluster, ack } => write!(
                f,
                "{} consumer acks {} on {} (tick {}){}",
                cl_name(*cluster),
                ack.id,
                ack.channel,
                ack.info.time_tick.0,
                if ack.replicate.is_some() {
                    " [replicated]"
                } else {
                    ""
                }
            ),
            BcEvent::CallbackArrive {
                cluster, id, tick, ..
            } => {
                write!(
                    f,
                    "callback {id} (tick {}) reaches store {}",
                    tick.0,
                    cl_name(*cluster)
                )
            }
            BcEvent::CallbackDone {
                cluster,
                id,
                result,
            } => {
                write!(f, "{} callback {id} result {result:?}", cl_name(*cluster))
            }
            BcEvent::Replicate { channel } => write!(f, "replication of {channel} delivers"),
            BcEvent::AckSend { id, channel, .. } => write!(f, "A consumer of {channel} acks {id}"),
            BcEvent::ConsumerStep { channel } => {
                write!(f, "B consumer of {channel} checks its checkpoint")
            }
            BcEvent::Timer { cluster } => write!(f, "{} timer", cl_name(*cluster)),
            BcEvent::Restart { cluster } => write!(f, "coordinator {} restarts", cl_name(*cluster)),
            BcEvent::Promote => f.write_str("A is promoted to primary"),
            BcEvent::Exit { cluster } => {
                write!(f, "stopped coordinator {} exits", cl_name(*cluster))
            }
        }
    }
}

struct ChannelList<'a>(&'a BTreeSet<ChannelId>);

impl fmt::Display for ChannelList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, c) in self.0.iter().enumerate() {
            write!(f, "{}{c}", if i > 0 { "," } else { "" })?;
        }
        f.write_str("}")
    }
}

/// What a completed catalog write did, as the trace shows it: the
/// operation itself waits in its cluster's writes in flight until then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Written {
    /// The write failed: nothing was applied.
    Failed,
    /// A task record was put.
    Put {
        /// Broadcast.
        id: BroadcastId,
        /// Its state.
        state: TaskState,
        /// How many acks it records.
        acks: u32,
    },
    /// A tombstone was deleted.
    Delete(BroadcastId),
    /// The broadcast-id reservation was raised to this.
    Reserve(u64),
}

impl Written {
    /// What applying `op` does.
    fn of(op: &CatalogOp) -> Written {
        match op {
            CatalogOp::PutTask(r) => Written::Put {
                id: r.id,
                state: r.state,
                acks: r.acks.len() as u32,
            },
            CatalogOp::DeleteTask(id) => Written::Delete(*id),
            CatalogOp::ReserveIds(n) => Written::Reserve(*n),
        }
    }
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Written::Failed => f.write_str("failed"),
            Written::Put { id, state, acks } => write!(f, "put {id} {state:?} acks {acks}"),
            Written::Delete(id) => write!(f, "delete {id}"),
            Written::Reserve(n) => write!(f, "reserve ids < {n}"),
        }
    }
}

/// What the broadcast world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BcNote {
    /// A store applied a callback effect.
    Applied {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
    },
    /// A store skipped an effect it had already applied.
    Deduplicated {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
    },
    /// A coordinator invoked a callback.
    Invoked {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
        /// Attempt.
        attempt: u32,
    },
    /// A coordinator recovered from its catalog.
    Recovered {
        /// Cluster.
        cluster: Cl,
        /// Tasks in the catalog.
        tasks: usize,
    },
    /// Cluster A's role changed.
    Role(Role),
    /// A task became a durable tombstone and its caller was answered.
    Done {
        /// Cluster.
        cluster: Cl,
        /// Broadcast.
        id: BroadcastId,
    },
}

impl fmt::Display for BcNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BcNote::Applied { cluster, id } => {
                write!(f, "store {} applies {id}", cl_name(*cluster))
            }
            BcNote::Deduplicated { cluster, id } => {
                write!(
                    f,
                    "store {} already applied {id}: skipped",
                    cl_name(*cluster)
                )
            }
            BcNote::Invoked {
                cluster,
                id,
                attempt,
            } => {
                write!(
                    f,
                    "{} invokes callback {id} (attempt {attempt})",
                    cl_name(*cluster)
                )
            }
            BcNote::Recovered { cluster, tasks } => {
                write!(
                    f,
                    "{} recovered {tasks} tasks from its catalog",
                    cl_name(*cluster)
                )
            }
            BcNote::Role(r) => write!(f, "A is now {r:?}"),
            BcNote::Done { cluster, id } => write!(f, "{} completed {id}", cl_name(*cluster)),
        }
    }
}

/// One copy of a message on a channel.
#[derive(Clone, Debug, Hash)]
struct LogEntry {
    id: BroadcastId,
    info: AckInfo,
    message: Message,
}

/// What a store has applied.
#[derive(Clone, Debug, Default, Hash)]
struct Store {
    /// Per broadcast: how many times applied, its tick and keys.
    applied: VecMap<BroadcastId, (u32, TimeTick, LockRequest)>,
}

#[derive(Clone, Debug, Hash)]
struct Cluster {
    node: NodeId,
    cfg: Config,
    role: Role,
    broadcaster: Option<Broadcaster>,
    catalog: CatalogState,
    /// Channel copies: A's logs, or B's replicas of them.
    logs: Vec<Vec<LogEntry>>,
    store: Store,
    /// Callbacks invoked and not yet answered (this incarnation).
    in_flight: VecMap<BroadcastId, LockRequest>,
    /// Catalog writes handed to the store and not yet done (this
    /// incarnation): applied by their `WriteDone`.
    writing: VecMap<WriteId, CatalogOp>,
    /// Ids ever durable in the catalog.
    persisted: VecSet<BroadcastId>,
    /// Times at which a timer event is queued for this incarnation.
    timers: VecSet<Time>,
    /// What `broadcast.keys_exclusive` already checked (this incarnation).
    held_checked: HeldChecked,
}

/// The requests of a broadcaster's lock table that were held at the last
/// `broadcast.keys_exclusive` check, sorted: they were pairwise checked then (a
/// clash ends the run), and a request's keys never change, so only pairs
/// with a newly held request need checking. Not state: ignored by
/// equality and hashing. Emptied when the broadcaster is lost (a new
/// table numbers its requests afresh).
#[derive(Clone, Debug, Default)]
struct HeldChecked {
    ids: Vec<RequestId>,
    /// The table's
    /// [`grant_count`](simcast_machines::locks::LockTable::grant_count) at
    /// that check: while it is the same, nothing new is held and there is
    /// nothing to check.
    grants: u64,
    /// Reused for the held requests of the next check.
    scratch: Vec<RequestId>,
}

/// The first pair `(held[i], held[j])`, `i < j`, that is not made of two
/// `checked` ids and satisfies `bad`: all sorted. If no pair of `checked`
/// ids satisfies `bad`, this is the first of all pairs that does.
fn first_new_pair<T: Ord + Copy>(
    held: &[T],
    checked: &[T],
    mut bad: impl FnMut(T, T) -> bool,
) -> Option<(T, T)> {
    let old = |id: &T| checked.binary_search(id).is_ok();
    for (i, &x) in held.iter().enumerate() {
        let x_old = old(&x);
        for &y in &held[i + 1..] {
            if !(x_old && old(&y)) && bad(x, y) {
                return Some((x, y));
            }
        }
    }
    None
}

impl Hash for HeldChecked {
    /// Hashes nothing: not state.
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ClientState {
    Idle,
    /// Waiting for the answer to `call`.
    Calling {
        call: u64,
    },
    Done,
}

#[derive(Clone, Debug, Hash)]
struct Client {
    state: ClientState,
    attempts: u32,
}

/// The broadcast world.
#[derive(Clone, Debug, Hash)]
pub struct BroadcastWorld {
    p: Shared<Params>,
    clusters: Vec<Cluster>,
    clients: Vec<Client>,
    next_call: u64,
    next_tick: u64,
    /// Replication to B: per channel, the last delivery time (FIFO).
    repl_last: Vec<Time>,
    /// Transitions of broadcasters lost in crashes (not state: ignored by
    /// equality and hashing).
    lost_coverage: [Coverage; 2],
    /// B's consumers: per channel, the first message not known durable in
    /// B's catalog, and whether a step is scheduled.
    b_cursor: Vec<usize>,
    b_step_scheduled: Vec<bool>,
}

fn caller(client: u32, call: u64) -> Caller {
    Caller((u64::from(client) << 40) | call)
}

fn split_caller(c: Caller) -> (u32, u64) {
    ((c.0 >> 40) as u32, c.0 & ((1 << 40) - 1))
}

impl BroadcastWorld {
    /// A world for `w`, with the mutant applied.
    pub fn new(w: &BroadcastWorkload, mutant: Option<&'static MutantInfo>) -> BroadcastWorld {
        let flaw = mutant.and_then(|m| match m.name {
            "callback-overtake" => Some(BroadcastFlaw::CallbackOvertake),
            "persist-after-append" => Some(BroadcastFlaw::PersistAfterAppend),
            "recovery-reruns-tombstones" => Some(BroadcastFlaw::RecoveryRerunsTombstones),
            "callback-before-all-acks" => Some(BroadcastFlaw::CallbackBeforeAllAcks),
            "broadcast-keys-shared-in-identity" => Some(BroadcastFlaw::KeysSharedInIdentity),
            "store-no-dedup" => None,
            other => unreachable!("mutant {other} is not a broadcast mutant"),
        });
        let channels: Vec<ChannelId> = (0..=w.vchannels).map(ChannelId).collect();
        let mut cfg = Config::new(ChannelId(0), channels.iter().copied());
        cfg.ack_sync_up = w.ack_sync_up;
        cfg.flaw = flaw;
        cfg.gc = GcConfig {
            max_count: w.gc_max_count,
            max_lifetime: core::time::Duration::from_millis(w.gc_lifetime_ms),
            check_interval: core::time::Duration::from_millis(w.gc_interval_ms),
        };
        let cluster = |role, ack_sync_up| {
            let mut cfg = cfg.clone();
            cfg.ack_sync_up = ack_sync_up;
            Cluster {
                node: NodeId(0),
                cfg,
                role,
                broadcaster: None,
                catalog: CatalogState::new(),
                logs: vec![Vec::new(); channels.len()],
                store: Store::default(),
                in_flight: VecMap::default(),
                writing: VecMap::default(),
                persisted: VecSet::default(),
                timers: VecSet::default(),
                held_checked: HeldChecked::default(),
            }
        };
        let mut clusters = vec![cluster(Role::Primary, w.ack_sync_up)];
        if w.secondary {
            // The secondary learns of every message from its consumers.
            clusters.push(cluster(Role::Secondary, true));
        }
        BroadcastWorld {
            p: Shared::new(Params {
                clients: w.clients,
                broadcasts: w.broadcasts,
                vchannels: w.vchannels,
                vchannel_ppm: ppm(w.vchannel_ratio),
                close_ppm: ppm(w.close_ratio),
                secondary: w.secondary,
                keys: w.keys.space(),
                think_us: us(w.think_ms),
                net_us: us(w.net_ms),
                io_us: us(w.io_ms),
                repl_us: us(w.replication_ms),
                timeout_us: w.timeout_ms * 1000,
                late: w.late_factor,
                restart_us: us(w.restart_ms),
                stop_us: us(w.stop_ms),
                demotion_us: us(w.demotion_ms),
                jitter: u64::from(w.jitter_permille),
                store_dedup: mutant.is_none_or(|m| m.name != "store-no-dedup"),
            }),
            clusters,
            clients: Vec::new(),
            next_call: 0,
            next_tick: 0,
            repl_last: vec![Time::ZERO; channels.len()],
            lost_coverage: [Coverage::new(); 2],
            b_cursor: vec![0; channels.len()],
            b_step_scheduled: vec![false; channels.len()],
        }
    }

    fn io(&self, cx: &mut Cx<Self>) -> u64 {
        cx.between(self.p.io_us.0, self.p.io_us.1)
    }

    fn net(&self, cx: &mut Cx<Self>) -> u64 {
        cx.between(self.p.net_us.0, self.p.net_us.1)
    }

    fn jitter(&self, cx: &mut Cx<Self>) -> Jitter {
        Jitter(cx.between(0, self.p.jitter) as u32)
    }

    fn think(&self, cx: &mut Cx<Self>, client: u32) {
        let d = cx.between(self.p.think_us.0, self.p.think_us.1);
        cx.env_after(d, BcEvent::ClientWake { client });
    }

    fn reply(&self, cx: &mut Cx<Self>, client: u32, call: u64, reply: Reply) {
        let d = self.net(cx);
        cx.env_after(
            d,
            BcEvent::Reply {
                client,
                call,
                reply,
            },
        );
    }

    // ----- clients ---------------------------------------------------------

    fn on_client_wake(&mut self, cx: &mut Cx<Self>, client: u32) {
        let c = &self.clients[client as usize];
        if c.state != ClientState::Idle {
            return;
        }
        if c.attempts >= self.p.broadcasts {
            self.clients[client as usize].state = ClientState::Done;
            return;
        }
        if self.clusters[A as usize].role == Role::Primary
            && cx.fault_at(
                F_ROLE_CHANGE,
                "client_wake",
                &[("client", u64::from(client) + 1)],
            )
        {
            self.set_role(cx, Role::Secondary);
            let d = cx.between(self.p.demotion_us.0, self.p.demotion_us.1);
            cx.env_after(d, BcEvent::Promote);
        }
        self.next_call += 1;
        let call = self.next_call;
        let c = &mut self.clients[client as usize];
        c.attempts += 1;
        c.state = ClientState::Calling { call };
        let keys = self.p.keys.draw(cx);
        self.call_a(cx, client, call, BcEvent::CallStart { client, call, keys });
    }

    /// Sends a call to coordinator A; a coordinator that is down refuses
    /// the connection.
    fn call_a(&mut self, cx: &mut Cx<Self>, client: u32, call: u64, event: BcEvent) {
        let d = self.net(cx);
        let node = self.clusters[A as usize].node;
        if cx.is_up(node) {
            cx.node_after(node, d, event);
        } else {
            cx.env_after(
                d,
                BcEvent::Reply {
                    client,
                    call,
                    reply: Reply::Unavailable,
                },
            );
        }
    }

    fn on_reply(&mut self, cx: &mut Cx<Self>, client: u32, call: u64, reply: Reply) {
        let c = &mut self.clients[client as usize];
        if c.state != (ClientState::Calling { call }) {
            // An answer to a call the client already gave up on.
            return;
        }
        match reply {
            Reply::Started(id) => {
                // The broadcast is answered under the start's call: the
                // broadcaster answers `Done` to the caller that started it.
                let node = self.clusters[A as usize].node;
                if cx.chance(self.p.close_ppm) {
                    c.state = ClientState::Idle;
                    let d = self.net(cx);
                    if cx.is_up(node) {
                        cx.node_after(node, d, BcEvent::CallClose { client, id });
                    }
                    self.think(cx, client);
                    return;
                }
                let mut targets: BTreeSet<ChannelId> = [ChannelId(0)].into();
                for v in 1..=self.p.vchannels {
                    if cx.chance(self.p.vchannel_ppm) {
                        targets.insert(ChannelId(v));
                    }
                }
                let body = Body {
                    payload: u64::from(client) * 1_000_000 + call,
                    targets,
                };
                self.call_a(
                    cx,
                    client,
                    call,
                    BcEvent::CallBroadcast {
                        client,
                        call,
                        id,
                        body,
                    },
                );
            }
            Reply::Done(_) | Reply::Refused(_) | Reply::Unavailable => {
                c.state = ClientState::Idle;
                self.think(cx, client);
            }
        }
    }

    // ----- coordinators ----------------------------------------------------

    fn set_role(&mut self, cx: &mut Cx<Self>, role: Role) {
        let a = &mut self.clusters[A as usize];
        a.role = role;
        if let Some(b) = a.broadcaster.as_mut() {
            b.set_role(role);
        }
        cx.note(BcNote::Role(role));
    }

    /// Runs `f` on cluster `c`'s broadcaster (if up), then carries out what
    /// it asks for.
    fn with<R>(
        &mut self,
        cx: &mut Cx<Self>,
        c: Cl,
        f: impl FnOnce(&mut Broadcaster, Time) -> R,
    ) -> Option<R> {
        let now = cx.now();
        let r = f(self.clusters[c as usize].broadcaster.as_mut()?, now);
        self.drive(cx, c);
        Some(r)
    }

    fn drive(&mut self, cx: &mut Cx<Self>, c: Cl) {
        while let Some(out) = self.clusters[c as usize]
            .broadcaster
            .as_mut()
            .and_then(Broadcaster::poll_output)
        {
            self.effect(cx, c, out);
        }
        let cl = &mut self.clusters[c as usize];
        if let Some(due) = cl.broadcaster.as_ref().and_then(Broadcaster::poll_timeout)
            && cl.timers.first().is_none_or(|first| due < *first)
        {
            cl.timers.insert(due);
            let node = cl.node;
            cx.node_at(node, due, BcEvent::Timer { cluster: c });
        }
        if c == A {
            self.check_exclusion(cx);
        }
    }

    /// `broadcast.keys_exclusive` on the broadcaster's own lock table: no two held
    /// requests clash (pairs in id order; pairs already checked skipped).
    fn check_exclusion(&mut self, cx: &mut Cx<Self>) {
        let cl = &mut self.clusters[A as usize];
        let Some(b) = cl.broadcaster.as_ref() else {
            return;
        };
        let table = b.lock_table();
        let checked = &mut cl.held_checked;
        if table.grant_count() == checked.grants {
            return;
        }
        checked.grants = table.grant_count();
        let mut held = std::mem::take(&mut checked.scratch);
        held.clear();
        held.extend(table.held());
        if held != checked.ids {
            let clashing = first_new_pair(&held, &checked.ids, |x, y| {
                clash(
                    table.request(x).expect("held"),
                    table.request(y).expect("held"),
                )
            });
            if let Some((x, y)) = clashing {
                let (rx, ry) = (
                    table.request(x).expect("held"),
                    table.request(y).expect("held"),
                );
                cx.violate(
                    EXCLUSION,
                    format!("{x} {rx} and {y} {ry} are held together"),
                );
            }
        }
        checked.scratch = std::mem::replace(&mut checked.ids, held);
    }

    fn effect(&mut self, cx: &mut Cx<Self>, c: Cl, out: Output) {
        let node = self.clusters[c as usize].node;
        match out {
            Output::Write { write, op } => {
                let d = self.io(cx);
                let written =
                    if cx.fault_at(F_WRITE_FAIL, "catalog_write", &[("cluster", u64::from(c))]) {
                        Written::Failed
                    } else {
                        let written = Written::of(&op);
                        self.clusters[c as usize].writing.insert(write, op);
                        written
                    };
                cx.node_after(
                    node,
                    d,
                    BcEvent::WriteDone {
                        cluster: c,
                        write,
                        written,
                    },
                );
            }
            Output::Append {
                id,
                channel,
                message,
                ..
            } => {
                debug_assert_eq!(c, A, "only A appends");
                if !self.clusters[A as usize].catalog.tasks.contains_key(&id) {
                    cx.violate(
                        PERSIST_FIRST,
                        format!("{id} appended to {channel} before it is in the catalog"),
                    );
                }
                let d = self.io(cx);
                if cx.fault_at(
                    F_APPEND_FAIL,
                    "append",
                    &[("channel", u64::from(channel.0))],
                ) {
                    cx.node_after(
                        node,
                        d,
                        BcEvent::AppendDone {
                            id,
                            channel,
                            result: Err(IoError::Failed),
                        },
                    );
                } else {
                    cx.env_after(
                        d,
                        BcEvent::AppendArrive {
                            id,
                            channel,
                            message,
                        },
                    );
                }
            }
            Output::InvokeCallback {
                id,
                keys,
                control_tick,
                attempt,
                ..
            } => self.invoke(cx, c, id, keys, control_tick, attempt),
            Output::Started { caller: who, id } => {
                let (client, call) = split_caller(who);
                self.reply(cx, client, call, Reply::Started(id));
            }
            Output::StartFailed { caller: who, error } => {
                let (client, call) = split_caller(who);
                self.reply(cx, client, call, Reply::Refused(error));
            }
            Output::Done { caller: who, id } => {
                cx.note(BcNote::Done { cluster: c, id });
                let (client, call) = split_caller(who);
                self.reply(cx, client, call, Reply::Done(id));
            }
            Output::RecoveryConflict { id } => {
                cx.violate(
                    EXCLUSION,
                    format!(
                        "recovery of {} found {id}'s keys held by another pending task",
                        cl_name(c)
                    ),
                );
            }
        }
    }

    fn invoke(
        &mut self,
        cx: &mut Cx<Self>,
        c: Cl,
        id: BroadcastId,
        keys: LockRequest,
        tick: TimeTick,
        attempt: u32,
    ) {
        let cl = &self.clusters[c as usize];
        cx.note(BcNote::Invoked {
            cluster: c,
            id,
            attempt,
        });
        if cl
            .catalog
            .tasks
            .get(&id)
            .is_some_and(|r| r.state == TaskState::Tombstone)
        {
            cx.violate(
                EXACTLY_ONCE,
                format!(
                    "callback of {id} invoked on {} although it is a durable tombstone",
                    cl_name(c)
                ),
            );
        }
        if let Some(missing) = cl
            .catalog
            .tasks
            .get(&id)
            .into_iter()
            .flat_map(|r| r.message.targets.iter())
            .find(|ch| !cl.logs[ch.0 as usize].iter().any(|e| e.id == id))
        {
            cx.violate(
                AFTER_ALL_ACKS,
                format!(
                    "callback of {id} invoked on {} before {missing} holds the message",
                    cl_name(c)
                ),
            );
        }
        if let Some((other, _)) = cl
            .in_flight
            .iter()
            .find(|(o, k)| **o != id && clash(k, &keys))
        {
            cx.violate(
                ORDER,
                format!(
                    "callbacks of conflicting {other} and {id} overlap on {}",
                    cl_name(c)
                ),
            );
        }
        self.clusters[c as usize].in_flight.insert(id, keys.clone());
        let d = self.io(cx);
        cx.env_after(
            d,
            BcEvent::CallbackArrive {
                cluster: c,
                id,
                keys,
                tick,
            },
        );
    }

    fn on_callback_arrive(
        &mut self,
        cx: &mut Cx<Self>,
        c: Cl,
        id: BroadcastId,
        keys: LockRequest,
        tick: TimeTick,
    ) {
        let node = self.clusters[c as usize].node;
        let d = self.io(cx);
        if cx.fault_at(F_CALLBACK_FAIL, "callback", &[("cluster", u64::from(c))]) {
            cx.node_after(
                node,
                d,
                BcEvent::CallbackDone {
                    cluster: c,
                    id,
                    result: Err(IoError::Failed),
                },
            );
            return;
        }
        let dedup = self.p.store_dedup;
        let store = &mut self.clusters[c as usize].store;
        match store.applied.get_mut(&id) {
            Some(entry) if dedup => {
                let _ = entry;
                cx.note(BcNote::Deduplicated { cluster: c, id });
            }
            Some(entry) => {
                entry.0 += 1;
                cx.note(BcNote::Applied { cluster: c, id });
                cx.violate(
                    EXACTLY_ONCE,
                    format!("store {} applied {id} {} times", cl_name(c), entry.0),
                );
            }
            None => {
                if let Some((later, (_, t, _))) = store
                    .applied
                    .iter()
                    .find(|(_, (_, t, k))| *t > tick && clash(k, &keys))
                {
                    cx.violate(
                        ORDER,
                        format!(
                            "store {} applies {id} (tick {}) after conflicting {later} (tick {})",
                            cl_name(c),
                            tick.0,
                            t.0
                        ),
                    );
                }
                store.applied.insert(id, (1, tick, keys));
                cx.note(BcNote::Applied { cluster: c, id });
            }
        }
        if cx.fault_at(
            F_CALLBACK_REPLY_LOST,
            "callback",
            &[("cluster", u64::from(c))],
        ) {
            cx.node_after(
                node,
                self.p.timeout_us,
                BcEvent::CallbackDone {
                    cluster: c,
                    id,
                    result: Err(IoError::TimedOut),
                },
            );
        } else {
            cx.node_after(
                node,
                d,
                BcEvent::CallbackDone {
                    cluster: c,
                    id,
                    result: Ok(()),
                },
            );
        }
    }

    fn on_append_arrive(
        &mut self,
        cx: &mut Cx<Self>,
        id: BroadcastId,
        channel: ChannelId,
        message: Message,
    ) {
        self.next_tick += 1;
        let log = &mut self.clusters[A as usize].logs[channel.0 as usize];
        let info = AckInfo {
            message_id: MessageId(log.len() as u64 + 1),
            time_tick: TimeTick(self.next_tick),
        };
        log.push(LogEntry { id, info, message });
        let node = self.clusters[A as usize].node;
        if cx.fault_at(
            F_APPEND_REPLY_LOST,
            "append_landed",
            &[("channel", u64::from(channel.0))],
        ) {
            cx.node_after(
                node,
                self.p.timeout_us,
                BcEvent::AppendDone {
                    id,
                    channel,
                    result: Err(IoError::TimedOut),
                },
            );
        } else {
            let d = self.io(cx);
            cx.node_after(
                node,
                d,
                BcEvent::AppendDone {
                    id,
                    channel,
                    result: Ok(info),
                },
            );
        }
        if self.clusters[A as usize].cfg.ack_sync_up {
            cx.env_after(0, BcEvent::AckSend { id, channel, info });
        }
        if self.p.secondary {
            self.replicate_next(cx, channel);
        }
    }

    /// Sends one ack from a consumer of cluster `c` (an opportunity for the
    /// ack to be lost, late or duplicated). Returns the delay used, so the
    /// consumer can check back once the ack had time to be recorded.
    fn send_ack(&mut self, cx: &mut Cx<Self>, c: Cl, ack: Ack) -> u64 {
        let node = self.clusters[c as usize].node;
        let site = [
            ("cluster", u64::from(c)),
            ("channel", u64::from(ack.channel.0)),
        ];
        let mut d = self.io(cx);
        if cx.fault_at(F_ACK_LATE, "ack", &site) {
            d = d.saturating_mul(self.p.late);
        }
        if !cx.is_up(node) || cx.fault_at(F_ACK_LOST, "ack", &site) {
            return d;
        }
        if cx.fault_at(F_ACK_DUP, "ack", &site) {
            // The duplicate trails: it may land after the task completed.
            let late = d.saturating_mul(self.p.late);
            cx.node_after(
                node,
                late,
                BcEvent::ConsumerAck {
                    cluster: c,
                    ack: ack.clone(),
                },
            );
        }
        cx.node_after(node, d, BcEvent::ConsumerAck { cluster: c, ack });
        d
    }

    /// Whether cluster `c`'s catalog durably holds the ack of `id` on
    /// `channel` (or no longer needs it).
    fn ack_durable(&self, c: Cl, id: BroadcastId, channel: ChannelId) -> bool {
        let cat = &self.clusters[c as usize].catalog;
        cat.graveyard.contains(id)
            || cat
                .tasks
                .get(&id)
                .is_some_and(|r| r.state == TaskState::Tombstone || r.acks.get(channel).is_some())
    }

    /// One of A's consumers (`ack_sync_up`) acks a message copy, and keeps
    /// acking it until A has durably recorded the ack. A's acks are
    /// independent: they may arrive in any order.
    fn on_ack_send(
        &mut self,
        cx: &mut Cx<Self>,
        id: BroadcastId,
        channel: ChannelId,
        info: AckInfo,
    ) {
        if self.ack_durable(A, id, channel) {
            return;
        }
        let d = self.send_ack(
            cx,
            A,
            Ack {
                id,
                channel,
                info,
                replicate: None,
            },
        );
        cx.env_after(
            d + self.p.timeout_us,
            BcEvent::AckSend { id, channel, info },
        );
    }

    /// Schedules the next entry of a channel's replication stream, FIFO.
    fn replicate_next(&mut self, cx: &mut Cx<Self>, channel: ChannelId) {
        let ch = channel.0 as usize;
        let mut d = cx.between(self.p.repl_us.0, self.p.repl_us.1);
        if cx.fault_at(
            F_REPL_LAG,
            "replication",
            &[("channel", u64::from(channel.0))],
        ) {
            d = d.saturating_mul(self.p.late);
        }
        let at = Time::from_micros(cx.now().as_micros() + d)
            .max(Time::from_micros(self.repl_last[ch].as_micros() + 1));
        self.repl_last[ch] = at;
        cx.env_at(at, BcEvent::Replicate { channel });
    }

    fn on_replicate(&mut self, cx: &mut Cx<Self>, channel: ChannelId) {
        let ch = channel.0 as usize;
        let n = self.clusters[B as usize].logs[ch].len();
        let src = self.clusters[A as usize].logs[ch][n].clone();
        self.next_tick += 1;
        let info = AckInfo {
            message_id: MessageId(n as u64 + 1),
            time_tick: TimeTick(self.next_tick),
        };
        self.clusters[B as usize].logs[ch].push(LogEntry { info, ..src });
        self.wake_b_consumer(cx, channel, 0);
    }

    fn wake_b_consumer(&mut self, cx: &mut Cx<Self>, channel: ChannelId, delay_us: u64) {
        let ch = channel.0 as usize;
        if !self.b_step_scheduled[ch] {
            self.b_step_scheduled[ch] = true;
            cx.env_after(delay_us, BcEvent::ConsumerStep { channel });
        }
    }

    /// B's consumer of a channel reads in order and advances its checkpoint
    /// only past messages B has durably recorded; the first one not recorded
    /// is (re)delivered, so a later message is never known before an earlier
    /// one, across crashes too.
    fn on_consumer_step(&mut self, cx: &mut Cx<Self>, channel: ChannelId) {
        let ch = channel.0 as usize;
        self.b_step_scheduled[ch] = false;
        while let Some(e) = self.clusters[B as usize].logs[ch].get(self.b_cursor[ch]) {
            if !self.ack_durable(B, e.id, channel) {
                break;
            }
            self.b_cursor[ch] += 1;
        }
        let Some(e) = self.clusters[B as usize].logs[ch].get(self.b_cursor[ch]) else {
            return;
        };
        let ack = Ack {
            id: e.id,
            channel,
            info: e.info,
            replicate: Some(e.message.clone()),
        };
        let d = self.send_ack(cx, B, ack);
        // Check again once the ack had time to be recorded.
        self.wake_b_consumer(cx, channel, d + self.p.timeout_us);
    }

    fn crash(&mut self, cx: &mut Cx<Self>, c: Cl) {
        let cl = &mut self.clusters[c as usize];
        cx.crash(cl.node);
        if let Some(b) = cl.broadcaster.take() {
            self.lost_coverage[0].merge(b.coverage());
            self.lost_coverage[1].merge(b.lock_table().coverage());
        }
        cl.in_flight.clear();
        cl.writing.clear();
        cl.timers.clear();
        cl.held_checked.ids.clear();
        cl.held_checked.grants = 0;
        if c == A {
            // Every caller waiting on A loses its connection.
            for (i, client) in self.clients.iter().enumerate() {
                if let ClientState::Calling { call } = client.state {
                    let d = cx.between(self.p.net_us.0, self.p.net_us.1);
                    cx.env_after(
                        d,
                        BcEvent::Reply {
                            client: i as u32,
                            call,
                            reply: Reply::Unavailable,
                        },
                    );
                }
            }
        }
        let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
        cx.env_after(d, BcEvent::Restart { cluster: c });
    }

    fn restart(&mut self, cx: &mut Cx<Self>, c: Cl) {
        let cl = &mut self.clusters[c as usize];
        if cl.broadcaster.is_some() {
            return;
        }
        cx.restart(cl.node);
        let b = Broadcaster::recover(cl.cfg.clone(), cl.role, cx.now(), &cl.catalog);
        cx.note(BcNote::Recovered {
            cluster: c,
            tasks: cl.catalog.tasks.len(),
        });
        cl.broadcaster = Some(b);
        self.drive(cx, c);
    }

    /// A coordinator event is an opportunity for the coordinator to crash.
    fn on_coordinator(&mut self, cx: &mut Cx<Self>, c: Cl, event: BcEvent) {
        if self.clusters[c as usize].broadcaster.is_none() {
            return;
        }
        if cx.fault_at(F_CRASH, "coordinator_event", &[("cluster", u64::from(c))]) {
            self.crash(cx, c);
            return;
        }
        if c == A
            && !self.clusters[A as usize]
                .broadcaster
                .as_ref()
                .is_some_and(Broadcaster::is_stopped)
            && cx.fault_at(F_STOP, "coordinator_event", &[("cluster", u64::from(c))])
        {
            self.with(cx, A, |b, now| b.stop(now));
            let d = cx.between(self.p.stop_us.0, self.p.stop_us.1);
            cx.env_after(d, BcEvent::Exit { cluster: A });
        }
        match event {
            BcEvent::CallStart { client, call, keys } => {
                let r = self.with(cx, A, |b, now| b.start(now, caller(client, call), keys));
                match r {
                    Some(Err(e)) => self.reply(cx, client, call, Reply::Refused(e)),
                    Some(Ok(())) if self.clusters[A as usize].role != Role::Primary => {
                        cx.violate(
                            NOT_PRIMARY,
                            format!(
                                "client-{}#{call}: start accepted while A is secondary",
                                client + 1
                            ),
                        );
                    }
                    _ => {}
                }
            }
            BcEvent::CallBroadcast {
                client,
                call,
                id,
                body,
            } => {
                let r = self.with(cx, A, |b, now| b.broadcast(now, id, body));
                match r {
                    Some(Err(e)) => self.reply(cx, client, call, Reply::Refused(e)),
                    Some(Ok(())) if self.clusters[A as usize].role != Role::Primary => {
                        cx.violate(
                            NOT_PRIMARY,
                            format!("{id} broadcast accepted while A is secondary"),
                        );
                    }
                    _ => {}
                }
            }
            BcEvent::CallClose { id, .. } => {
                let _ = self.with(cx, A, |b, now| b.close(now, id));
            }
            BcEvent::WriteDone {
                cluster,
                write,
                written,
            } => {
                let tombstone = matches!(
                    written,
                    Written::Put {
                        state: TaskState::Tombstone,
                        ..
                    }
                );
                let result = if written == Written::Failed {
                    Err(IoError::Failed)
                } else {
                    Ok(())
                };
                if written != Written::Failed {
                    let cl = &mut self.clusters[cluster as usize];
                    let op = cl
                        .writing
                        .remove(&write)
                        .expect("a write done was in flight");
                    if let CatalogOp::PutTask(r) = &op {
                        if cl.catalog.graveyard.contains(r.id) {
                            cx.violate(
                                NO_RESURRECTION,
                                format!(
                                    "{} written to {}'s catalog after it was deleted",
                                    r.id,
                                    cl_name(cluster)
                                ),
                            );
                        }
                        cl.persisted.insert(r.id);
                    }
                    cl.catalog.apply_owned(op);
                }
                let j = self.jitter(cx);
                self.with(cx, cluster, |b, now| {
                    b.handle_write_done(now, write, result, j)
                });
                if tombstone
                    && cx.fault_at(
                        F_CRASH,
                        "tombstone_persisted",
                        &[("cluster", u64::from(cluster))],
                    )
                {
                    self.crash(cx, cluster);
                }
            }
            BcEvent::AppendDone {
                id,
                channel,
                result,
            } => {
                let j = self.jitter(cx);
                self.with(cx, A, |b, now| {
                    b.handle_append_result(now, id, channel, result, j)
                });
            }
            BcEvent::ConsumerAck { cluster, ack } => {
                self.with(cx, cluster, |b, now| b.handle_ack(now, ack));
            }
            BcEvent::CallbackDone {
                cluster,
                id,
                result,
            } => {
                self.clusters[cluster as usize].in_flight.remove(&id);
                let j = self.jitter(cx);
                self.with(cx, cluster, |b, now| {
                    b.handle_callback_result(now, id, result, j)
                });
            }
            BcEvent::Timer { cluster } => {
                let now = cx.now();
                self.clusters[cluster as usize].timers.remove(&now);
                self.with(cx, cluster, |b, now| b.handle_timeout(now));
            }
            other => unreachable!("not a coordinator event: {other}"),
        }
    }

    fn cluster_of(&self, node: NodeId) -> Cl {
        if self.clusters[A as usize].node == node {
            A
        } else {
            B
        }
    }

    /// Liveness of one cluster: every task it knows of (or, for B, every
    /// broadcast on A's control channel) completed, applied once, delivered.
    fn cluster_liveness(&self, c: Cl) -> Option<(&'static str, String)> {
        let cl = &self.clusters[c as usize];
        let source = &self.clusters[A as usize];
        let on_control: VecSet<BroadcastId>;
        let expected = if c == A {
            &cl.persisted
        } else {
            on_control = source.logs[0].iter().map(|e| e.id).collect();
            &on_control
        };
        for id in expected.iter() {
            let done = cl.catalog.graveyard.contains(*id)
                || cl
                    .catalog
                    .tasks
                    .get(id)
                    .is_some_and(|r| r.state == TaskState::Tombstone);
            if !done {
                let state = cl.catalog.tasks.get(id).map(|r| format!("{:?}", r.state));
                return Some((
                    EVENTUALLY_DONE,
                    format!(
                        "{id} on {} is {} at the end",
                        cl_name(c),
                        state.as_deref().unwrap_or("not in the catalog")
                    ),
                ));
            }
            match cl.store.applied.get(id) {
                Some((1, _, _)) => {}
                Some((n, _, _)) => {
                    return Some((
                        EVENTUALLY_DONE,
                        format!("{id} applied {n} times by store {}", cl_name(c)),
                    ));
                }
                None => {
                    return Some((
                        EVENTUALLY_DONE,
                        format!(
                            "{id} completed on {} but store never applied it",
                            cl_name(c)
                        ),
                    ));
                }
            }
        }
        // Delivery: every completed broadcast is on each of its targets. One
        // pass over each log: the targets of each id's first copy on the
        // control channel, and the ids on each channel.
        let mut targets_of: Vec<(BroadcastId, &BTreeSet<ChannelId>)> = source.logs[0]
            .iter()
            .map(|e| (e.id, &e.message.targets))
            .collect();
        // Stable: the first copy of each id stays first, and is kept.
        targets_of.sort_by_key(|&(id, _)| id);
        targets_of.dedup_by_key(|&mut (id, _)| id);
        let on_channel: Vec<Vec<BroadcastId>> = cl
            .logs
            .iter()
            .map(|log| {
                let mut ids: Vec<BroadcastId> = log.iter().map(|e| e.id).collect();
                ids.sort_unstable();
                ids
            })
            .collect();
        for id in expected.iter() {
            let Ok(i) = targets_of.binary_search_by_key(id, |&(id, _)| id) else {
                continue;
            };
            for t in targets_of[i].1.iter() {
                if on_channel[t.0 as usize].binary_search(id).is_err() {
                    return Some((
                        ALL_DELIVERED,
                        format!("{id} completed but {}/{t} never got it", cl_name(c)),
                    ));
                }
            }
        }
        None
    }
}

impl Protocol for BroadcastWorld {
    type Event = BcEvent;
    type Note = BcNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        let names = ["coord-a", "coord-b"];
        for (i, cl) in self.clusters.iter_mut().enumerate() {
            cl.node = cx.add_node(names[i]);
            cl.broadcaster = Some(Broadcaster::new(cl.cfg.clone(), cl.role, cx.now()));
        }
        for c in 0..self.clusters.len() {
            self.drive(cx, c as Cl);
        }
        for client in 0..self.p.clients {
            self.clients.push(Client {
                state: ClientState::Idle,
                attempts: 0,
            });
            self.think(cx, client);
        }
    }

    fn handle(&mut self, cx: &mut Cx<Self>, node: Option<NodeId>, event: BcEvent) {
        match event {
            BcEvent::ClientWake { client } => self.on_client_wake(cx, client),
            BcEvent::Reply {
                client,
                call,
                reply,
            } => self.on_reply(cx, client, call, reply),
            BcEvent::AppendArrive {
                id,
                channel,
                message,
            } => self.on_append_arrive(cx, id, channel, message),
            BcEvent::CallbackArrive {
                cluster,
                id,
                keys,
                tick,
            } => self.on_callback_arrive(cx, cluster, id, keys, tick),
            BcEvent::Replicate { channel } => self.on_replicate(cx, channel),
            BcEvent::AckSend { id, channel, info } => self.on_ack_send(cx, id, channel, info),
            BcEvent::ConsumerStep { channel } => self.on_consumer_step(cx, channel),
            BcEvent::Restart { cluster } => self.restart(cx, cluster),
            BcEvent::Exit { cluster } => {
                if self.clusters[cluster as usize].broadcaster.is_some() {
                    self.crash(cx, cluster);
                }
            }
            BcEvent::Promote => {
                if self.clusters[A as usize].role != Role::Primary {
                    self.set_role(cx, Role::Primary);
                }
            }
            e => {
                let c = self.cluster_of(node.expect("coordinator events go to a node"));
                self.on_coordinator(cx, c, e);
            }
        }
    }

    fn heal(&mut self, cx: &mut Cx<Self>) {
        for c in 0..self.clusters.len() as Cl {
            self.restart(cx, c);
        }
        if self.clusters[A as usize].role != Role::Primary {
            self.set_role(cx, Role::Primary);
        }
    }

    fn settled(&self) -> bool {
        self.clients.iter().all(|c| c.state == ClientState::Done)
            && self.clusters.iter().all(|cl| {
                cl.broadcaster
                    .as_ref()
                    .is_some_and(Broadcaster::is_quiescent)
            })
            && (!self.p.secondary
                || self.clusters[A as usize]
                    .logs
                    .iter()
                    .zip(&self.clusters[B as usize].logs)
                    .all(|(a, b)| a.len() == b.len()))
            // Every cluster's: `check_liveness` of a settled run skips it.
            && (0..self.clusters.len() as Cl).all(|c| self.cluster_liveness(c).is_none())
    }

    fn route(&self, event: &BcEvent) -> (String, String) {
        let coord = |c: Cl| format!("coord-{}", if c == A { "a" } else { "b" });
        let sys = |what: &str, c: Cl| format!("{what}-{}", if c == A { "a" } else { "b" });
        let client = |c: u32| format!("client-{}", c + 1);
        match event {
            BcEvent::ClientWake { client: c } => (client(*c), client(*c)),
            BcEvent::CallStart { client: c, .. }
            | BcEvent::CallBroadcast { client: c, .. }
            | BcEvent::CallClose { client: c, .. } => (client(*c), coord(A)),
            BcEvent::Reply { client: c, .. } => (coord(A), client(*c)),
            BcEvent::WriteDone { cluster, .. } => (sys("catalog", *cluster), coord(*cluster)),
            BcEvent::AppendArrive { .. } => (coord(A), sys("wal", A)),
            BcEvent::AppendDone { .. } => (sys("wal", A), coord(A)),
            BcEvent::AckSend { .. } => (sys("wal", A), sys("consumers", A)),
            BcEvent::ConsumerAck { cluster, .. } => (sys("consumers", *cluster), coord(*cluster)),
            BcEvent::CallbackArrive { cluster, .. } => (coord(*cluster), sys("store", *cluster)),
            BcEvent::CallbackDone { cluster, .. } => (sys("store", *cluster), coord(*cluster)),
            BcEvent::Replicate { .. } => (sys("wal", A), sys("wal", B)),
            BcEvent::ConsumerStep { .. } => (sys("wal", B), sys("consumers", B)),
            BcEvent::Timer { cluster }
            | BcEvent::Restart { cluster }
            | BcEvent::Exit { cluster } => (coord(*cluster), coord(*cluster)),
            BcEvent::Promote => ("control".to_owned(), coord(A)),
        }
    }

    fn coverage(&self) -> Vec<Coverage> {
        let mut cov = self.lost_coverage;
        for b in self.clusters.iter().filter_map(|c| c.broadcaster.as_ref()) {
            cov[0].merge(b.coverage());
            cov[1].merge(b.lock_table().coverage());
        }
        cov.to_vec()
    }

    fn check_liveness(&self, cx: &Cx<Self>) -> Option<(&'static str, String)> {
        for c in 0..self.clusters.len() as Cl {
            // A settled run passed `cluster_liveness` of every cluster.
            if !cx.settled()
                && let Some(v) = self.cluster_liveness(c)
            {
                return Some(v);
            }
            let Some(b) = self.clusters[c as usize].broadcaster.as_ref() else {
                return Some((
                    EVENTUALLY_DONE,
                    format!("coordinator {} is down at the end", cl_name(c)),
                ));
            };
            if b.unfinished().next().is_none() && !b.lock_table().is_idle() {
                return Some((
                    KEYS_RELEASED,
                    format!(
                        "{} holds {} lock requests with every task a tombstone",
                        cl_name(c),
                        b.lock_table().held_len() + b.lock_table().waiting_len()
                    ),
                ));
            }
            if let Some(id) = b.unfinished().next() {
                return Some((
                    EVENTUALLY_DONE,
                    format!("{id} on {} is unfinished at the end", cl_name(c)),
                ));
            }
        }
        if let Some((i, c)) = self
            .clients
            .iter()
            .enumerate()
            .find(|(_, c)| c.state != ClientState::Done)
        {
            return Some((
                EVENTUALLY_DONE,
                format!(
                    "client-{} is stuck in {:?} after {} of {} broadcasts",
                    i + 1,
                    c.state,
                    c.attempts,
                    self.p.broadcasts
                ),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first clashing pair over all pairs, in the same order.
    fn naive<T: Copy>(held: &[T], bad: impl Fn(T, T) -> bool) -> Option<(T, T)> {
        (0..held.len())
            .flat_map(|i| (i + 1..held.len()).map(move |j| (i, j)))
            .map(|(i, j)| (held[i], held[j]))
            .find(|&(x, y)| bad(x, y))
    }

    proptest! {
        /// With the checked ids clashing with none of themselves (a clash
        /// ends the run), skipping their pairs finds the pair a full check
        /// finds.
        #[test]
        fn skipping_checked_pairs_finds_the_first_clash(
            held in proptest::collection::btree_set(0u8..24, 0..8),
            checked in proptest::collection::btree_set(0u8..24, 0..8),
            clashes in proptest::collection::vec((0u8..24, 0u8..24), 0..6),
        ) {
            let held: Vec<u8> = held.into_iter().collect();
            let checked: Vec<u8> = checked.into_iter().collect();
            let is_old = |x: u8| checked.binary_search(&x).is_ok();
            let bad = |x: u8, y: u8| {
                !(is_old(x) && is_old(y))
                    && clashes.iter().any(|&(a, b)| (a, b) == (x, y) || (a, b) == (y, x))
            };
            prop_assert_eq!(first_new_pair(&held, &checked, bad), naive(&held, bad));
        }
    }

    #[test]
    fn a_pair_of_checked_ids_is_not_looked_at_again() {
        let mut seen = Vec::new();
        let found = first_new_pair(&[1, 2, 3], &[1, 2], |x, y| {
            seen.push((x, y));
            false
        });
        assert_eq!(found, None);
        assert_eq!(seen, [(1, 3), (2, 3)]);
    }
}
