//! The `replication` protocol: a primary's replica senders driving real data
//! movement to replicas with their own durable logs.
//!
//! World:
//! - node `primary`: the log (entries `1..=head`, each stamped with the epoch
//!   that wrote it; `(committed, head]` is not yet flushed and is lost in a
//!   crash), retention (entries `<= tail` recycled from the log, though still
//!   in the primary's base data), checkpoints (a base image at a committed
//!   LSN, trusted or not: an untrusted image is corrupt), the epoch history,
//!   and, volatile, a [`Registry`] of senders plus the driver that carries out
//!   their sessions. Durable: the committed log, tail, checkpoints, and the
//!   session-id floor, so a restarted primary never reissues an id;
//! - nodes `replica-N`: a durable log (its length is the flushed LSN), the
//!   highest session id seen (the replica ignores messages from older
//!   sessions) and the rebuild it last wiped its log for;
//! - the network: one FIFO link per direction per replica, with loss,
//!   duplication (the copy arrives late), reordering and long delays, and
//!   partitions that cut both directions for a while;
//! - the control plane (environment): the epoch, each replica's endpoint
//!   version and whether it is assigned; it bumps epochs, moves endpoints,
//!   unassigns and reassigns replicas, and fails the primary over;
//! - clients (environment) appending entries to the primary.
//!
//! Data movement:
//! - catch-up ships chunks of the retained log from the session's recovered
//!   point. The log reader seeks: it starts at the first retained entry after
//!   the point, and the replica places what it receives right after the point
//!   the message names. Retention never recycles what an active catch-up or
//!   snapshot+tail rebuild still needs (pins), so a sender that classified by
//!   the retained history never ships a hole; one that trusted a stale
//!   advertised retention start does, and the replica's log then differs from
//!   the primary's. A lost catch-up message is not retransmitted: the
//!   session's budget (its progress deadline) is what notices the stall.
//! - truncation cuts the replica's log to the committed LSN the handshake
//!   required; the driver asks the sender to complete first and truncates
//!   when told it must;
//! - rebuild copies the base (the checkpoint image for snapshot+tail, the
//!   primary's committed data for full base) in chunks, wiping the replica's
//!   log at the first chunk, then replays the retained tail; chunks are
//!   retransmitted on a timer.
//! - In sync, the primary streams every new entry live and sends heartbeats;
//!   a replica found behind gets a catch-up session.
//! - Divergence: a replica answering a handshake first drops any suffix that
//!   conflicts with the primary's epoch history (the leader-epoch check) and
//!   says how far the history reached; if it kept entries beyond that and the
//!   primary has written there since, the driver asks again rather than
//!   record a handshake on stale information. What the replica keeps beyond
//!   the committed LSN (shipped but never flushed by a primary that failed
//!   over, or simply not yet committed) is what the session's truncation
//!   cuts. (The sender compares LSNs only; without this check a replica
//!   holding an old epoch's entry at the committed LSN would look in sync.)
//!
//! Faults: `msg_loss`, `msg_duplicate`, `msg_reorder`, `msg_delay` at every
//! send; `partition`, `endpoint_change`, `reassign` (per replica) and
//! `epoch_bump`, `retention_advance` (global) at control-plane ticks;
//! `epoch_bump` and `endpoint_change` also just before the primary handles a
//! session's message (mid-catch-up, mid-rebuild); `retention_advance` also as
//! the primary takes in a handshake; `primary_crash` (failover: restart from
//! the committed log at a new epoch) and `replica_crash`, `replica_stall`
//! (a slow disk) at every event of the node; `checkpoint_untrusted` when a
//! checkpoint is written.
//!
//! Invariants are checked against the world's own record: which session of
//! each replica it attached, at which epoch, and whether the sender reported
//! it finished (a call naming any other is stale and must be rejected, and
//! change nothing); what every handshake required and what every replica
//! really did; the contents of the logs, entry by entry. The driver does not
//! filter by session id itself: a late or duplicated reply, or a timer armed
//! for an earlier session, becomes a call naming that session, and the sender
//! is the authority that must refuse it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use core::time::Duration;

use serde::{Deserialize, Serialize};
use simcast_machines::coverage::Coverage;
use simcast_machines::replication::{
    Budget, BudgetViolation, Endpoint, Epoch, Handshake, Invalidation, Lsn, REGISTRY_TRANSITIONS,
    RebuildPhase, RebuildSource, RecoverabilityProof, RecoveryOutcome, Registry, ReplicaAssignment,
    ReplicaId, ReplicaState, ReplicationError, ReplicationFlaw, RetainedHistory, Sender, SessionId,
    SessionKind, SessionPhase, TRANSITIONS,
};
use simcast_machines::time::Time;

use crate::engine::{Cx, NodeId, Phase, Protocol};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

const STALE: &str = "replication.stale_session_rejected";
const SINGLE: &str = "replication.single_active_session";
const MONOTONIC: &str = "replication.progress_monotonic";
const FROZEN: &str = "replication.within_frozen_target";
const TRUNCATE_FIRST: &str = "replication.truncate_before_complete";
const CONVERGED: &str = "replication.converged_matches_primary";
const IN_SYNC: &str = "replication.eventually_in_sync";

/// Names of the replication protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "replication",
    doc: "replica senders: sessions, catch-up, truncation, rebuilds, budgets, epochs and failover",
    invariants: &[
        InvariantInfo {
            name: STALE,
            kind: InvariantKind::Safety,
            doc: "a call naming a session that is not the replica's live session of the current epoch is rejected and changes nothing",
        },
        InvariantInfo {
            name: SINGLE,
            kind: InvariantKind::Safety,
            doc: "a replica never has two active sessions: a session is attached only once the previous one was reported finished",
        },
        InvariantInfo {
            name: MONOTONIC,
            kind: InvariantKind::Safety,
            doc: "a session's recovery, transfer and tail progress never move backwards, and an accepted progress report moves them forward",
        },
        InvariantInfo {
            name: FROZEN,
            kind: InvariantKind::Safety,
            doc: "a frozen target never changes and progress never passes it (or the snapshot LSN for a snapshot transfer)",
        },
        InvariantInfo {
            name: TRUNCATE_FIRST,
            kind: InvariantKind::Safety,
            doc: "a session whose replica was ahead completes only after the replica really truncated to the committed LSN",
        },
        InvariantInfo {
            name: CONVERGED,
            kind: InvariantKind::Safety,
            doc: "a replica reported in sync holds exactly the primary's entries up to the target (contents compared), and no divergent entry after it",
        },
        InvariantInfo {
            name: IN_SYNC,
            kind: InvariantKind::Liveness,
            doc: "after healing, every assigned replica is in sync at the current epoch and holds exactly the primary's committed log",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "ignore-session-id",
            invariant: STALE,
            doc: "the sender's authority check ignores the session id",
        },
        MutantInfo {
            name: "complete-without-truncation",
            invariant: TRUNCATE_FIRST,
            doc: "completion does not require the required truncation to be recorded",
        },
        MutantInfo {
            name: "epoch-bump-keeps-session",
            invariant: STALE,
            doc: "an epoch advance does not invalidate the older epoch's session",
        },
        MutantInfo {
            name: "trust-caller-retention",
            invariant: CONVERGED,
            doc: "the handshake trusts the advertised retention start instead of the retained history",
        },
        MutantInfo {
            name: "budget-underflow",
            invariant: IN_SYNC,
            doc: "budget tick arithmetic wraps, so a stalled catch-up is never escalated to a rebuild",
        },
    ],
    faults: &[
        FaultInfo {
            name: "msg_loss",
            doc: "a message is lost",
        },
        FaultInfo {
            name: "msg_duplicate",
            doc: "a message is delivered twice, the copy late_factor times later",
        },
        FaultInfo {
            name: "msg_reorder",
            doc: "a message skips its link's FIFO order",
        },
        FaultInfo {
            name: "msg_delay",
            doc: "a message is delivered late_factor times later than usual (out of order)",
        },
        FaultInfo {
            name: "partition",
            doc: "the link between the primary and a replica is cut both ways for partition_ms",
        },
        FaultInfo {
            name: "replica_crash",
            doc: "a replica crashes and restarts from its durable log after restart_ms",
        },
        FaultInfo {
            name: "primary_crash",
            doc: "the primary crashes, losing unflushed entries; it restarts after restart_ms at a new epoch (failover)",
        },
        FaultInfo {
            name: "epoch_bump",
            doc: "the control plane advances the epoch",
        },
        FaultInfo {
            name: "endpoint_change",
            doc: "a replica moves to a new endpoint; messages to the old one are lost",
        },
        FaultInfo {
            name: "reassign",
            doc: "the control plane unassigns a replica and assigns it again after reassign_ms",
        },
        FaultInfo {
            name: "retention_advance",
            doc: "retention recycles all but the last committed entry, as far as active sessions' pins allow",
        },
        FaultInfo {
            name: "checkpoint_untrusted",
            doc: "a checkpoint is written untrusted (its image is corrupt)",
        },
        FaultInfo {
            name: "replica_stall",
            doc: "a replica's disk stalls: it handles nothing for stall_ms",
        },
    ],
    sites: &[
        SiteInfo {
            name: "send",
            doc: "a message is sent (dir 0 = to the replica, 1 = to the primary; replica 1 = replica-1)",
            params: &["replica", "dir"],
            faults: &["msg_loss", "msg_duplicate", "msg_reorder", "msg_delay"],
        },
        SiteInfo {
            name: "primary_event",
            doc: "the primary is about to handle an event",
            params: &[],
            faults: &["primary_crash"],
        },
        SiteInfo {
            name: "replica_event",
            doc: "a replica is about to handle an event",
            params: &["replica"],
            faults: &["replica_crash", "replica_stall"],
        },
        SiteInfo {
            name: "session_step",
            doc: "the primary is about to handle a session's message (rebuild 1 = the replica's current session is a rebuild)",
            params: &["replica", "rebuild"],
            faults: &["epoch_bump", "endpoint_change"],
        },
        SiteInfo {
            name: "control_tick",
            doc: "the control plane's periodic tick",
            params: &[],
            faults: &["epoch_bump", "retention_advance"],
        },
        SiteInfo {
            name: "control_replica",
            doc: "the control plane's periodic tick, for one replica",
            params: &["replica"],
            faults: &["partition", "endpoint_change", "reassign"],
        },
        SiteInfo {
            name: "handshake",
            doc: "the primary takes in a replica's handshake",
            params: &["replica"],
            faults: &["retention_advance"],
        },
        SiteInfo {
            name: "checkpoint",
            doc: "the primary writes a checkpoint",
            params: &[],
            faults: &["checkpoint_untrusted"],
        },
    ],
    machines: &[
        ("replication sender", TRANSITIONS),
        ("replication registry", REGISTRY_TRANSITIONS),
    ],
    unreachable: &[
        (
            "replication sender: authority: rejected, sender stopped",
            "the world stops a sender only by unassigning its replica, and the registry drops it at once",
        ),
        (
            "replication registry: reconcile: stopped sender replaced",
            "the world stops a sender only by unassigning its replica, which removes it",
        ),
        (
            "replication registry: reconcile: rejected",
            "the control plane never names a replica twice nor lowers the epoch",
        ),
    ],
};

const F_LOSS: usize = 0;
const F_DUP: usize = 1;
const F_REORDER: usize = 2;
const F_DELAY: usize = 3;
const F_PARTITION: usize = 4;
const F_REPLICA_CRASH: usize = 5;
const F_PRIMARY_CRASH: usize = 6;
const F_EPOCH: usize = 7;
const F_ENDPOINT: usize = 8;
const F_REASSIGN: usize = 9;
const F_RETENTION: usize = 10;
const F_CHECKPOINT: usize = 11;
const F_STALL: usize = 12;

/// The `[workload]` table of a replication scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationWorkload {
    /// Number of replicas.
    pub replicas: u32,
    /// Entries the clients append during the chaos phase.
    pub appends: u32,
    /// Pause between two appends.
    pub append_every_ms: [u64; 2],
    /// Committed entries the primary holds when the run starts.
    #[serde(default)]
    pub initial_entries: u64,
    /// Each replica starts with a prefix of the primary's log of a length
    /// drawn in this range (clamped to `initial_entries`).
    #[serde(default)]
    pub initial_prefix: [u64; 2],
    /// ...followed by at most this many entries of an older epoch (a
    /// divergent suffix from a primary that failed over before the run).
    #[serde(default)]
    pub stale_suffix: u64,
    /// Retention keeps at least this many committed entries in the log.
    pub retain_entries: u64,
    /// A checkpoint is written every this many committed entries.
    pub checkpoint_every: u64,
    /// Entries per catch-up, transfer or tail message.
    pub chunk_entries: u64,
    /// One-way network delay.
    pub net_ms: [u64; 2],
    /// Time for the primary to flush (commit) an appended entry.
    pub flush_ms: [u64; 2],
    /// A delayed message or a duplicate's copy is this many times later.
    #[serde(default = "default_late")]
    pub late_factor: u64,
    /// Heartbeats to in-sync replicas, this often.
    pub heartbeat_ms: u64,
    /// A session not handshaken after this long is given up.
    pub connect_timeout_ms: u64,
    /// A truncation or rebuild chunk without an answer is resent after this.
    pub retry_ms: u64,
    /// Delay before a replica's next session starts.
    pub session_delay_ms: [u64; 2],
    /// The control plane's tick during the chaos phase.
    pub control_ms: [u64; 2],
    /// Catch-up budget: longest duration (0 = unlimited).
    #[serde(default)]
    pub budget_duration_ms: u64,
    /// Catch-up budget: most entries replayed (0 = unlimited).
    #[serde(default)]
    pub budget_entries: u64,
    /// Catch-up budget: longest time without progress (at least 1: it is what
    /// notices a stalled catch-up).
    pub budget_stall_ms: u64,
    /// How long a crashed node stays down.
    #[serde(default = "default_restart")]
    pub restart_ms: [u64; 2],
    /// How long a partition lasts.
    #[serde(default = "default_partition")]
    pub partition_ms: [u64; 2],
    /// How long an unassigned replica stays out.
    #[serde(default = "default_reassign")]
    pub reassign_ms: [u64; 2],
    /// How long a replica's disk stalls.
    #[serde(default = "default_stall")]
    pub stall_ms: [u64; 2],
}

fn default_late() -> u64 {
    20
}
fn default_restart() -> [u64; 2] {
    [10, 100]
}
fn default_partition() -> [u64; 2] {
    [20, 200]
}
fn default_reassign() -> [u64; 2] {
    [10, 100]
}
fn default_stall() -> [u64; 2] {
    [20, 150]
}

impl ReplicationWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("replicas", u64::from(self.replicas)),
            ("checkpoint_every", self.checkpoint_every),
            ("chunk_entries", self.chunk_entries),
            ("late_factor", self.late_factor),
            ("heartbeat_ms", self.heartbeat_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("retry_ms", self.retry_ms),
            ("budget_stall_ms", self.budget_stall_ms),
        ] {
            if v == 0 {
                return Err(format!("`{key}` must be at least 1"));
            }
        }
        if self.replicas > 16 {
            return Err("`replicas` must be at most 16".to_owned());
        }
        for (key, [lo, hi]) in [
            ("append_every_ms", self.append_every_ms),
            ("initial_prefix", self.initial_prefix),
            ("net_ms", self.net_ms),
            ("flush_ms", self.flush_ms),
            ("session_delay_ms", self.session_delay_ms),
            ("control_ms", self.control_ms),
            ("restart_ms", self.restart_ms),
            ("partition_ms", self.partition_ms),
            ("reassign_ms", self.reassign_ms),
            ("stall_ms", self.stall_ms),
        ] {
            if lo > hi {
                return Err(format!("`{key}` must be [min, max] with min <= max"));
            }
        }
        for (key, [lo, _]) in [
            ("net_ms", self.net_ms),
            ("flush_ms", self.flush_ms),
            ("control_ms", self.control_ms),
            ("append_every_ms", self.append_every_ms),
        ] {
            if lo == 0 {
                return Err(format!("`{key}` must be at least 1 ms"));
            }
        }
        if self.connect_timeout_ms <= 2 * self.net_ms[1] {
            return Err(
                "`connect_timeout_ms` must exceed a round trip (2 x the largest `net_ms`)"
                    .to_owned(),
            );
        }
        if self.retry_ms <= 2 * self.net_ms[1] {
            return Err(
                "`retry_ms` must exceed a round trip (2 x the largest `net_ms`)".to_owned(),
            );
        }
        if self.budget_stall_ms <= 2 * self.net_ms[1] {
            return Err(
                "`budget_stall_ms` must exceed a round trip (2 x the largest `net_ms`)".to_owned(),
            );
        }
        Ok(())
    }
}

fn us(r: [u64; 2]) -> (u64, u64) {
    (r[0] * 1000, r[1] * 1000)
}

/// The workload in engine units, hashable.
#[derive(Clone, Debug, Hash)]
struct Params {
    replicas: u32,
    appends: u32,
    append_us: (u64, u64),
    initial_entries: u64,
    initial_prefix: (u64, u64),
    stale_suffix: u64,
    retain: u64,
    checkpoint_every: u64,
    chunk: u64,
    net_us: (u64, u64),
    flush_us: (u64, u64),
    late: u64,
    heartbeat_us: u64,
    connect_timeout_us: u64,
    retry_us: u64,
    session_delay_us: (u64, u64),
    control_us: (u64, u64),
    budget: Budget,
    restart_us: (u64, u64),
    partition_us: (u64, u64),
    reassign_us: (u64, u64),
    stall_us: (u64, u64),
}

/// One log entry: the LSN and epoch it was written at, and its payload. Two
/// entries are the same entry iff all three agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Where the primary wrote it.
    pub lsn: Lsn,
    /// The epoch that wrote it.
    pub epoch: Epoch,
    /// The payload.
    pub value: u64,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.lsn, self.epoch, self.value)
    }
}

/// What a data message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Catch-up from the retained log.
    CatchUp,
    /// A rebuild's base transfer (checkpoint image or full base).
    Base,
    /// A snapshot+tail rebuild's tail replay.
    Tail,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::CatchUp => "catch-up",
            Stage::Base => "base",
            Stage::Tail => "tail",
        }
    }
}

/// Primary to replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Down {
    /// A session connects: handshake, please.
    Connect {
        /// The session.
        session: SessionId,
        /// The primary's epoch history: each epoch and the first LSN it wrote.
        history: Vec<(Epoch, Lsn)>,
        /// The primary's log head (the history says nothing beyond it).
        head: Lsn,
        /// The retention start the primary advertises now.
        retention_start: Lsn,
    },
    /// Entries to place right after `after`.
    Data {
        /// The session.
        session: SessionId,
        /// What this is.
        stage: Stage,
        /// The position the entries follow.
        after: Lsn,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Cut the log to `to`.
    Truncate {
        /// The session.
        session: SessionId,
        /// The committed LSN the handshake required.
        to: Lsn,
    },
    /// New entries, streamed to an in-sync replica.
    Live {
        /// The session that brought the replica in sync.
        session: SessionId,
        /// The position the entries follow.
        after: Lsn,
        /// The entries.
        entries: Vec<Entry>,
    },
    /// Are you keeping up?
    Heartbeat {
        /// The session that brought the replica in sync.
        session: SessionId,
        /// The primary's committed LSN now.
        committed: Lsn,
    },
}

/// Replica to primary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Up {
    /// The handshake: the replica's flushed LSN, how far it checked its log
    /// against the primary's epoch history, and the retention start the
    /// primary advertised when it asked (echoed).
    Handshake {
        /// The session.
        session: SessionId,
        /// The replica's flushed LSN.
        flushed: Lsn,
        /// Entries up to here agree with the connect's epoch history (the
        /// history said nothing beyond the head it was sent with).
        checked: Lsn,
        /// As advertised in the connect.
        retention_start: Lsn,
    },
    /// Data placed: the replica's log now ends at `flushed`.
    Ack {
        /// The session.
        session: SessionId,
        /// What was acked.
        stage: Stage,
        /// The replica's flushed LSN.
        flushed: Lsn,
    },
    /// The log was cut.
    Truncated {
        /// The session.
        session: SessionId,
        /// To where.
        to: Lsn,
    },
    /// A heartbeat's answer.
    HeartbeatAck {
        /// The session named by the heartbeat.
        session: SessionId,
        /// The replica's flushed LSN.
        flushed: Lsn,
        /// The committed LSN the heartbeat carried.
        committed: Lsn,
    },
    /// A replica restarted and reconnects.
    Hello {
        /// Its flushed LSN.
        flushed: Lsn,
    },
}

/// The primary's timers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Heartbeat the in-sync replicas.
    Heartbeat,
    /// Start the replica's next session.
    StartSession {
        /// Replica index.
        replica: u32,
    },
    /// Give up a session still connecting.
    ConnectTimeout {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
    },
    /// A catch-up budget is due for a check.
    BudgetCheck {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
    },
    /// Resend a truncation or rebuild chunk unless progress was made.
    Retry {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
        /// The progress mark when it was armed.
        mark: u64,
    },
}

/// Events of the replication world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReplEvent {
    /// A client appends an entry to the primary.
    Append,
    /// The primary's flush reached `lsn`: it is committed.
    Flushed {
        /// The flushed LSN.
        lsn: Lsn,
    },
    /// A message arrives at a replica's endpoint.
    ToReplica {
        /// Replica index.
        replica: u32,
        /// The endpoint version it was sent to.
        version: u64,
        /// The message.
        msg: Down,
    },
    /// A message from a replica arrives at the primary.
    ToPrimary {
        /// Replica index.
        replica: u32,
        /// The message.
        msg: Up,
    },
    /// A primary timer.
    Timer(Timer),
    /// The control plane's tick.
    ControlTick,
    /// A partition heals.
    PartitionHealed {
        /// Replica index.
        replica: u32,
    },
    /// An unassigned replica is assigned again.
    AddBack {
        /// Replica index.
        replica: u32,
    },
    /// The crashed primary comes back (at a new epoch).
    PrimaryRestart,
    /// A crashed replica comes back.
    ReplicaRestart {
        /// Replica index.
        replica: u32,
    },
}

fn rname(r: u32) -> String {
    format!("replica-{}", r + 1)
}

struct Entries<'a>(&'a [Entry]);

impl fmt::Display for Entries<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [] => f.write_str("nothing"),
            [one] => write!(f, "[{one}]"),
            [first, .., last] => write!(f, "[{first} .. {last}] ({})", self.0.len()),
        }
    }
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::Connect {
                session,
                head,
                retention_start,
                ..
            } => write!(
                f,
                "connect {session} (head {head}, retention from {retention_start})"
            ),
            Down::Data {
                session,
                stage,
                after,
                entries,
            } => write!(
                f,
                "{} {session} after {after}: {}",
                stage.name(),
                Entries(entries)
            ),
            Down::Truncate { session, to } => write!(f, "truncate {session} to {to}"),
            Down::Live {
                session,
                after,
                entries,
            } => write!(f, "live {session} after {after}: {}", Entries(entries)),
            Down::Heartbeat { session, committed } => {
                write!(f, "heartbeat {session} (committed {committed})")
            }
        }
    }
}

impl fmt::Display for Up {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Up::Handshake {
                session,
                flushed,
                checked,
                retention_start,
            } => write!(
                f,
                "handshake {session}: flushed {flushed}, checked to {checked} (retention from {retention_start})"
            ),
            Up::Ack {
                session,
                stage,
                flushed,
            } => write!(f, "{} ack {session}: flushed {flushed}", stage.name()),
            Up::Truncated { session, to } => write!(f, "truncated {session} to {to}"),
            Up::HeartbeatAck {
                session,
                flushed,
                committed,
            } => write!(
                f,
                "heartbeat ack {session}: flushed {flushed} (committed {committed})"
            ),
            Up::Hello { flushed } => write!(f, "hello after restart: flushed {flushed}"),
        }
    }
}

impl fmt::Display for ReplEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplEvent::Append => f.write_str("client append"),
            ReplEvent::Flushed { lsn } => write!(f, "flushed to {lsn}"),
            ReplEvent::ToReplica {
                replica,
                version,
                msg,
            } => write!(f, "to {} (v{version}): {msg}", rname(*replica)),
            ReplEvent::ToPrimary { replica, msg } => write!(f, "from {}: {msg}", rname(*replica)),
            ReplEvent::Timer(t) => match t {
                Timer::Heartbeat => f.write_str("heartbeat timer"),
                Timer::StartSession { replica } => {
                    write!(f, "start a session for {}", rname(*replica))
                }
                Timer::ConnectTimeout { replica, session } => {
                    write!(f, "connect timeout {session} of {}", rname(*replica))
                }
                Timer::BudgetCheck { replica, session } => {
                    write!(f, "budget check {session} of {}", rname(*replica))
                }
                Timer::Retry {
                    replica,
                    session,
                    mark,
                } => write!(f, "retry {session} of {} (mark {mark})", rname(*replica)),
            },
            ReplEvent::ControlTick => f.write_str("control tick"),
            ReplEvent::PartitionHealed { replica } => {
                write!(f, "partition of {} heals", rname(*replica))
            }
            ReplEvent::AddBack { replica } => write!(f, "{} is assigned again", rname(*replica)),
            ReplEvent::PrimaryRestart => f.write_str("primary restarts"),
            ReplEvent::ReplicaRestart { replica } => write!(f, "{} restarts", rname(*replica)),
        }
    }
}

/// What the replication world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReplNote {
    /// A session was attached.
    Attached {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
        /// Its kind.
        kind: SessionKind,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A handshake was recorded.
    Handshaken {
        /// Replica index.
        replica: u32,
        /// The outcome.
        outcome: RecoveryOutcome,
        /// The history's proof.
        proof: RecoverabilityProof,
    },
    /// A session was invalidated.
    Invalidated {
        /// Replica index.
        replica: u32,
        /// Which and why.
        invalidation: Invalidation,
    },
    /// A session completed: the replica is in sync.
    Completed {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
        /// Its target.
        target: Lsn,
    },
    /// A rebuild source was selected.
    Source {
        /// Replica index.
        replica: u32,
        /// The source.
        source: RebuildSource,
        /// The frozen target.
        target: Lsn,
    },
    /// The sender refused a call.
    Refused {
        /// Replica index.
        replica: u32,
        /// The call.
        call: &'static str,
        /// The error.
        error: ReplicationError,
        /// Whether the world knew the session named to be stale.
        stale: bool,
    },
    /// A catch-up budget was exceeded.
    Budget {
        /// Replica index.
        replica: u32,
        /// The limit.
        violation: BudgetViolation,
    },
    /// Retention advanced.
    Retention {
        /// The new tail (exclusive).
        tail: Lsn,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Its LSN.
        lsn: Lsn,
        /// Whether its image is good.
        trusted: bool,
    },
    /// The primary restarted from its durable state at a new epoch.
    Failover {
        /// The new epoch.
        epoch: Epoch,
        /// The committed log it kept.
        committed: Lsn,
        /// Unflushed entries it lost.
        lost: u64,
    },
    /// The control plane advanced the epoch.
    EpochBumped {
        /// The new epoch.
        epoch: Epoch,
    },
    /// A replica moved to a new endpoint.
    EndpointMoved {
        /// Replica index.
        replica: u32,
        /// The new endpoint version.
        version: u64,
    },
    /// A replica was unassigned.
    Unassigned {
        /// Replica index.
        replica: u32,
    },
    /// A replica's link was cut.
    Partitioned {
        /// Replica index.
        replica: u32,
    },
    /// A replica's disk stalls.
    Stalled {
        /// Replica index.
        replica: u32,
        /// Until when.
        until: Time,
    },
    /// A replica dropped a suffix that conflicts with the epoch history.
    DivergentSuffixDropped {
        /// Replica index.
        replica: u32,
        /// The first dropped LSN.
        from: Lsn,
        /// How many entries.
        count: u64,
    },
    /// A replica cut its log for a session's truncation.
    ReplicaTruncated {
        /// Replica index.
        replica: u32,
        /// The session.
        session: SessionId,
        /// To where.
        to: Lsn,
    },
    /// A replica wiped its log for a rebuild.
    Wiped {
        /// Replica index.
        replica: u32,
        /// The rebuild session.
        session: SessionId,
    },
    /// A heartbeat found a replica behind.
    Lagging {
        /// Replica index.
        replica: u32,
        /// Its flushed LSN.
        flushed: Lsn,
        /// The committed LSN.
        committed: Lsn,
    },
    /// A message reached an endpoint nobody listens on any more.
    WrongEndpoint {
        /// Replica index.
        replica: u32,
    },
}

impl fmt::Display for ReplNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplNote::Attached {
                replica,
                session,
                kind,
                epoch,
            } => write!(
                f,
                "{}: {kind} session {session} at {epoch}",
                rname(*replica)
            ),
            ReplNote::Handshaken {
                replica,
                outcome,
                proof,
            } => write!(f, "{}: handshake {outcome} ({proof})", rname(*replica)),
            ReplNote::Invalidated {
                replica,
                invalidation,
            } => write!(
                f,
                "{}: session {} invalidated: {}",
                rname(*replica),
                invalidation.session,
                invalidation.reason
            ),
            ReplNote::Completed {
                replica,
                session,
                target,
            } => write!(
                f,
                "{}: session {session} completed, in sync at {target}",
                rname(*replica)
            ),
            ReplNote::Source {
                replica,
                source,
                target,
            } => match source {
                RebuildSource::SnapshotTail { snapshot } => write!(
                    f,
                    "{}: rebuild from snapshot {snapshot} + tail to {target}",
                    rname(*replica)
                ),
                RebuildSource::FullBase => {
                    write!(f, "{}: rebuild from full base to {target}", rname(*replica))
                }
            },
            ReplNote::Refused {
                replica,
                call,
                error,
                stale,
            } => write!(
                f,
                "{}: {call} refused{}: {error}",
                rname(*replica),
                if *stale { " (stale)" } else { "" }
            ),
            ReplNote::Budget { replica, violation } => {
                write!(f, "{}: budget {violation}", rname(*replica))
            }
            ReplNote::Retention { tail } => write!(f, "retention: log now starts after {tail}"),
            ReplNote::Checkpoint { lsn, trusted } => write!(
                f,
                "checkpoint at {lsn}{}",
                if *trusted { "" } else { " (untrusted)" }
            ),
            ReplNote::Failover {
                epoch,
                committed,
                lost,
            } => write!(
                f,
                "primary back at {epoch} with {committed} committed entries ({lost} unflushed lost)"
            ),
            ReplNote::EpochBumped { epoch } => write!(f, "control plane: epoch {epoch}"),
            ReplNote::EndpointMoved { replica, version } => {
                write!(f, "control plane: {} moves to v{version}", rname(*replica))
            }
            ReplNote::Unassigned { replica } => {
                write!(f, "control plane: {} unassigned", rname(*replica))
            }
            ReplNote::Partitioned { replica } => write!(f, "{} partitioned", rname(*replica)),
            ReplNote::Stalled { replica, until } => {
                write!(f, "{}: disk stalls until {until}", rname(*replica))
            }
            ReplNote::DivergentSuffixDropped {
                replica,
                from,
                count,
            } => write!(
                f,
                "{}: drops {count} divergent entries from {from}",
                rname(*replica)
            ),
            ReplNote::ReplicaTruncated {
                replica,
                session,
                to,
            } => write!(f, "{}: truncated to {to} for {session}", rname(*replica)),
            ReplNote::Wiped { replica, session } => {
                write!(f, "{}: log wiped for rebuild {session}", rname(*replica))
            }
            ReplNote::Lagging {
                replica,
                flushed,
                committed,
            } => write!(
                f,
                "{}: behind (flushed {flushed}, committed {committed})",
                rname(*replica)
            ),
            ReplNote::WrongEndpoint { replica } => {
                write!(f, "{}: nobody listens on that endpoint", rname(*replica))
            }
        }
    }
}

/// A replica node.
#[derive(Clone, Debug, Hash)]
struct Replica {
    node: NodeId,
    /// Durable: the log; its length is the flushed LSN.
    log: Vec<Entry>,
    /// Durable: the highest session id seen; older sessions are ignored.
    session_seen: SessionId,
    /// Durable: the rebuild session the log was last wiped for.
    wiped_for: SessionId,
    /// The endpoint version it listens on (set by the control plane).
    version: u64,
    /// Whether the node is up (mirrors the engine).
    up: bool,
    /// Volatile: the disk handles nothing before this.
    stalled_until: Time,
    /// Volatile: the last time a deferred event was re-queued (keeps order).
    deferred_last: Time,
}

impl Replica {
    fn flushed(&self) -> Lsn {
        Lsn(self.log.len() as u64)
    }

    /// Places `entries` right after `after` (trusting the stream's position):
    /// an entry equal to the one already there is skipped, a different one
    /// cuts the log there. Returns whether `after` was reachable.
    fn place(&mut self, after: Lsn, entries: &[Entry]) -> bool {
        if (self.log.len() as u64) < after.0 {
            return false;
        }
        for (i, e) in entries.iter().enumerate() {
            let pos = after.0 as usize + i;
            if pos < self.log.len() {
                if self.log[pos] == *e {
                    continue;
                }
                self.log.truncate(pos);
            }
            self.log.push(*e);
        }
        true
    }
}

/// The primary's per-replica driver state (volatile).
#[derive(Clone, Debug, Default, Hash)]
struct Driver {
    /// A session start is scheduled, of this kind.
    pending: Option<SessionKind>,
    /// When the one queued budget check fires, if one is queued.
    budget_timer: Option<Time>,
    /// Bumped by every accepted progress: a retry armed before is moot.
    mark: u64,
}

/// The primary node.
#[derive(Clone, Debug, Hash)]
struct Primary {
    node: NodeId,
    /// Entries `1..=head`; `(committed, head]` is volatile.
    log: Vec<Entry>,
    committed: Lsn,
    tail: Lsn,
    checkpoint: Lsn,
    checkpoint_trusted: bool,
    /// Checkpoints written untrusted: their images are corrupt.
    corrupt: BTreeSet<Lsn>,
    /// Each epoch that wrote entries and the first LSN it wrote.
    epochs: Vec<(Epoch, Lsn)>,
    /// Durable: every session id issued so far is below it.
    session_floor: SessionId,
    /// Volatile: the senders; `None` while the primary is down.
    registry: Option<Registry>,
    drivers: Vec<Driver>,
    flush_last: Time,
}

impl Primary {
    fn head(&self) -> Lsn {
        Lsn(self.log.len() as u64)
    }

    fn history(&self) -> RetainedHistory {
        RetainedHistory {
            head: self.head(),
            tail: self.tail,
            committed: self.committed,
            checkpoint: self.checkpoint,
            checkpoint_trusted: self.checkpoint_trusted,
        }
    }

    /// The log reader: up to `count` retained entries, starting at the first
    /// retained one after `after`, never past `limit`.
    fn read_log(&self, after: Lsn, count: u64, limit: Lsn) -> Vec<Entry> {
        let start = after.max(self.tail).0;
        let end = start.saturating_add(count).min(limit.0).min(self.head().0);
        (start..end).map(|i| self.log[i as usize]).collect()
    }

    /// The base image `(after, min(after + count, limit)]`: the checkpoint
    /// image at `snapshot` (corrupt if that checkpoint is untrusted) or the
    /// committed data.
    fn read_base(&self, after: Lsn, count: u64, limit: Lsn, snapshot: Option<Lsn>) -> Vec<Entry> {
        let end = after
            .0
            .saturating_add(count)
            .min(limit.0)
            .min(self.head().0);
        let corrupt = snapshot.filter(|s| self.corrupt.contains(s));
        (after.0..end)
            .map(|i| {
                let mut e = self.log[i as usize];
                if corrupt == Some(e.lsn) {
                    e.value ^= 0xdead;
                }
                e
            })
            .collect()
    }

    fn sender(&self, r: u32) -> Option<&Sender> {
        self.registry.as_ref()?.sender(ReplicaId(r))
    }

    fn sender_mut(&mut self, r: u32) -> Option<&mut Sender> {
        self.registry.as_mut()?.sender_mut(ReplicaId(r))
    }
}

/// The control plane's state.
#[derive(Clone, Debug, Hash)]
struct Control {
    epoch: Epoch,
    assigned: Vec<bool>,
    versions: Vec<u64>,
    partitioned: Vec<bool>,
}

/// What the world knows of a session, from what the sender reported and what
/// the replica did.
#[derive(Clone, Debug, Hash)]
struct SessionRecord {
    epoch: Epoch,
    kind: SessionKind,
    finished: bool,
    /// The committed LSN the handshake requires the replica to truncate to.
    truncation: Option<Lsn>,
    /// Whether the replica really cut its log for this session.
    truncated: bool,
    /// Whether catch-up entries were shipped.
    shipped: bool,
    frozen: Option<Lsn>,
    recovered: Lsn,
    transferred: Lsn,
    tail: Lsn,
}

/// Why the world holds a session stale.
#[derive(Clone, Copy, Debug)]
enum Stale {
    NotCurrent(Option<SessionId>),
    Finished,
    OldEpoch(Epoch),
}

/// The world's own record of sessions.
#[derive(Clone, Debug, Default, Hash)]
struct Oracle {
    sessions: BTreeMap<(u32, SessionId), SessionRecord>,
    /// Per replica: the last session attached (`None` once its sender died).
    current: Vec<Option<SessionId>>,
}

impl Oracle {
    fn stale(&self, r: u32, id: SessionId, epoch: Epoch) -> Option<Stale> {
        let current = self.current[r as usize];
        if current != Some(id) {
            return Some(Stale::NotCurrent(current));
        }
        let rec = &self.sessions[&(r, id)];
        if rec.finished {
            return Some(Stale::Finished);
        }
        if rec.epoch < epoch {
            return Some(Stale::OldEpoch(rec.epoch));
        }
        None
    }

    fn finish(&mut self, r: u32, id: SessionId) {
        if let Some(rec) = self.sessions.get_mut(&(r, id)) {
            rec.finished = true;
        }
    }
}

/// The replication world.
#[derive(Clone, Debug, Hash)]
pub struct ReplicationWorld {
    p: Params,
    flaw: Option<ReplicationFlaw>,
    primary: Primary,
    replicas: Vec<Replica>,
    control: Control,
    oracle: Oracle,
    /// Appends issued so far.
    appended: u32,
    /// Last delivery time per link: `[replica][0 = down, 1 = up]`.
    links: Vec<[Time; 2]>,
    /// Transitions of senders and registries lost in crashes (not state).
    lost: [Coverage; 2],
}

impl ReplicationWorld {
    /// A world for `w`, with the senders flawed as `mutant` says.
    pub fn new(w: &ReplicationWorkload, mutant: Option<&'static MutantInfo>) -> ReplicationWorld {
        let flaw = mutant.map(|m| match m.name {
            "ignore-session-id" => ReplicationFlaw::IgnoreSessionId,
            "complete-without-truncation" => ReplicationFlaw::CompleteWithoutTruncation,
            "epoch-bump-keeps-session" => ReplicationFlaw::EpochBumpKeepsSession,
            "trust-caller-retention" => ReplicationFlaw::TrustCallerRetention,
            "budget-underflow" => ReplicationFlaw::BudgetUnderflow,
            other => unreachable!("mutant {other} is not a replication mutant"),
        });
        let n = w.replicas as usize;
        ReplicationWorld {
            p: Params {
                replicas: w.replicas,
                appends: w.appends,
                append_us: us(w.append_every_ms),
                initial_entries: w.initial_entries,
                initial_prefix: (w.initial_prefix[0], w.initial_prefix[1]),
                stale_suffix: w.stale_suffix,
                retain: w.retain_entries,
                checkpoint_every: w.checkpoint_every,
                chunk: w.chunk_entries,
                net_us: us(w.net_ms),
                flush_us: us(w.flush_ms),
                late: w.late_factor,
                heartbeat_us: w.heartbeat_ms * 1000,
                connect_timeout_us: w.connect_timeout_ms * 1000,
                retry_us: w.retry_ms * 1000,
                session_delay_us: us(w.session_delay_ms),
                control_us: us(w.control_ms),
                budget: Budget {
                    max_duration: Duration::from_millis(w.budget_duration_ms),
                    max_entries: w.budget_entries,
                    progress_deadline: Duration::from_millis(w.budget_stall_ms),
                },
                restart_us: us(w.restart_ms),
                partition_us: us(w.partition_ms),
                reassign_us: us(w.reassign_ms),
                stall_us: us(w.stall_ms),
            },
            flaw,
            primary: Primary {
                node: NodeId(0),
                log: Vec::new(),
                committed: Lsn(0),
                tail: Lsn(0),
                checkpoint: Lsn(0),
                checkpoint_trusted: false,
                corrupt: BTreeSet::new(),
                epochs: Vec::new(),
                session_floor: SessionId(1),
                registry: None,
                drivers: vec![Driver::default(); n],
                flush_last: Time::ZERO,
            },
            replicas: Vec::with_capacity(n),
            control: Control {
                epoch: Epoch(1),
                assigned: vec![true; n],
                versions: vec![1; n],
                partitioned: vec![false; n],
            },
            oracle: Oracle {
                sessions: BTreeMap::new(),
                current: vec![None; n],
            },
            appended: 0,
            links: vec![[Time::ZERO; 2]; n],
            lost: [Coverage::new(); 2],
        }
    }

    fn endpoint(&self, r: u32) -> Endpoint {
        let v = self.control.versions[r as usize];
        Endpoint::new(
            format!("{}:data:v{v}", rname(r)),
            format!("{}:ctrl:v{v}", rname(r)),
            v,
        )
    }

    fn assignment(&self) -> Vec<ReplicaAssignment> {
        (0..self.p.replicas)
            .filter(|r| self.control.assigned[*r as usize])
            .map(|r| ReplicaAssignment {
                replica: ReplicaId(r),
                endpoint: self.endpoint(r),
            })
            .collect()
    }

    fn primary_up(&self) -> bool {
        self.primary.registry.is_some()
    }

    // ----- the network -----------------------------------------------------

    /// Sends `event` over replica `r`'s link in direction `dir` to `node`:
    /// an opportunity for loss, delay, reordering and duplication. Nothing
    /// reaches a node that is down or a link that is cut.
    fn transmit(&mut self, cx: &mut Cx<Self>, r: u32, dir: usize, node: NodeId, event: ReplEvent) {
        if !cx.is_up(node) {
            return;
        }
        if self.control.partitioned[r as usize] {
            cx.count("net.partition_drops");
            return;
        }
        let site = [("replica", u64::from(r) + 1), ("dir", dir as u64)];
        if cx.fault_at(F_LOSS, "send", &site) {
            return;
        }
        let d = cx.between(self.p.net_us.0, self.p.net_us.1);
        let now = cx.now().as_micros();
        let at = if cx.fault_at(F_DELAY, "send", &site) {
            Time::from_micros(now + d.saturating_mul(self.p.late))
        } else if cx.fault_at(F_REORDER, "send", &site) {
            Time::from_micros(now + cx.between(0, d))
        } else {
            let last = &mut self.links[r as usize][dir];
            let at = Time::from_micros(now + d).max(Time::from_micros(last.as_micros() + 1));
            *last = at;
            at
        };
        if cx.fault_at(F_DUP, "send", &site) {
            let late = Time::from_micros(now + d.saturating_mul(self.p.late));
            cx.node_at(node, late, event.clone());
        }
        cx.node_at(node, at, event);
    }

    fn send_down(&mut self, cx: &mut Cx<Self>, r: u32, msg: Down) {
        let version = self.control.versions[r as usize];
        let node = self.replicas[r as usize].node;
        self.transmit(
            cx,
            r,
            0,
            node,
            ReplEvent::ToReplica {
                replica: r,
                version,
                msg,
            },
        );
    }

    fn send_up(&mut self, cx: &mut Cx<Self>, r: u32, msg: Up) {
        let node = self.primary.node;
        self.transmit(cx, r, 1, node, ReplEvent::ToPrimary { replica: r, msg });
    }

    /// Arms a primary timer (none while the primary is down: it would fire
    /// in the next incarnation).
    fn timer(&self, cx: &mut Cx<Self>, delay_us: u64, t: Timer) {
        if self.primary_up() {
            cx.node_after(self.primary.node, delay_us, ReplEvent::Timer(t));
        }
    }

    // ----- calls into the senders, checked against the world's record ------

    /// Calls replica `r`'s sender naming session `id`. If the world holds
    /// `id` stale, the call must be rejected and change nothing.
    fn call<T>(
        &mut self,
        cx: &mut Cx<Self>,
        r: u32,
        id: SessionId,
        what: &'static str,
        f: impl FnOnce(&mut Sender) -> Result<T, ReplicationError>,
    ) -> Option<Result<T, ReplicationError>> {
        let stale = self.oracle.stale(r, id, self.control.epoch);
        let sender = self.primary.sender_mut(r)?;
        let before = stale.map(|_| sender.clone());
        let result = f(sender);
        match (&result, stale) {
            (Ok(_), Some(why)) => {
                let why = match why {
                    Stale::NotCurrent(Some(c)) => format!("the replica's session is {c}"),
                    Stale::NotCurrent(None) => "the replica has no session".to_owned(),
                    Stale::Finished => "it was reported finished".to_owned(),
                    Stale::OldEpoch(e) => format!(
                        "it belongs to {e} and the epoch is now {}",
                        self.control.epoch
                    ),
                };
                cx.violate(
                    STALE,
                    format!("{what} naming {id} accepted for {}: {why}", rname(r)),
                );
            }
            (Err(error), stale) => {
                if stale.is_some() {
                    cx.count("stale.rejected");
                    if before.as_ref() != Some(&*sender) {
                        cx.violate(
                            STALE,
                            format!(
                                "{what} naming stale {id} was rejected but changed the sender of {}",
                                rname(r)
                            ),
                        );
                    }
                }
                cx.note(ReplNote::Refused {
                    replica: r,
                    call: what,
                    error: error.clone(),
                    stale: stale.is_some(),
                });
            }
            (Ok(_), None) => {}
        }
        Some(result)
    }

    /// The current session of `r`'s sender, active or not.
    fn session_id(&self, r: u32) -> Option<SessionId> {
        self.primary.sender(r)?.session().map(|s| s.id())
    }

    /// Checks the sender's current session against the world's record:
    /// progress never moves back, frozen targets never change, nothing
    /// passes its limit.
    fn observe(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(s) = self.primary.sender(r).and_then(Sender::session) else {
            return;
        };
        let Some(rec) = self.oracle.sessions.get_mut(&(r, s.id())) else {
            return;
        };
        if let Some(f) = s.frozen_target() {
            match rec.frozen {
                None => rec.frozen = Some(f),
                Some(old) if old != f => cx.violate(
                    FROZEN,
                    format!(
                        "{}: {} frozen target moved from {old} to {f}",
                        rname(r),
                        s.id()
                    ),
                ),
                Some(_) => {}
            }
        }
        let limit = rec.frozen;
        let mut check = |name: &str, was: &mut Lsn, now: Lsn, bound: Option<Lsn>| {
            if now < *was {
                cx.violate(
                    MONOTONIC,
                    format!(
                        "{}: {} {name} went back from {was} to {now}",
                        rname(r),
                        s.id()
                    ),
                );
            }
            *was = now;
            if let Some(b) = bound
                && now > b
            {
                cx.violate(
                    FROZEN,
                    format!("{}: {} {name} {now} passes its limit {b}", rname(r), s.id()),
                );
            }
        };
        check("recovery", &mut rec.recovered, s.recovered_to(), limit);
        if let Some(rb) = s.rebuild() {
            let transfer_limit = match rb.source() {
                RebuildSource::SnapshotTail { snapshot } => snapshot,
                RebuildSource::FullBase => rb.target(),
            };
            check(
                "transfer",
                &mut rec.transferred,
                rb.transferred_to(),
                Some(transfer_limit),
            );
            check("tail replay", &mut rec.tail, rb.tail_replayed_to(), limit);
        }
    }

    /// Records a session the sender attached.
    fn attached(&mut self, cx: &mut Cx<Self>, r: u32, id: SessionId, kind: SessionKind) {
        if let Some(old) = self.oracle.current[r as usize]
            && self
                .oracle
                .sessions
                .get(&(r, old))
                .is_some_and(|rec| !rec.finished)
        {
            cx.violate(
                SINGLE,
                format!(
                    "{} attached {id} while {old} was never reported finished",
                    rname(r)
                ),
            );
        }
        let epoch = self.control.epoch;
        self.oracle.current[r as usize] = Some(id);
        self.oracle.sessions.insert(
            (r, id),
            SessionRecord {
                epoch,
                kind,
                finished: false,
                truncation: None,
                truncated: false,
                shipped: false,
                frozen: None,
                recovered: Lsn(0),
                transferred: Lsn(0),
                tail: Lsn(0),
            },
        );
        if let Some(reg) = &self.primary.registry {
            self.primary.session_floor = reg.session_floor();
        }
        cx.note(ReplNote::Attached {
            replica: r,
            session: id,
            kind,
            epoch,
        });
    }

    fn invalidated(&mut self, cx: &mut Cx<Self>, r: u32, inv: Invalidation) {
        self.oracle.finish(r, inv.session);
        cx.note(ReplNote::Invalidated {
            replica: r,
            invalidation: inv,
        });
    }

    // ----- sessions ----------------------------------------------------------

    /// Schedules a session start for `r` (one at a time).
    fn request_session(&mut self, cx: &mut Cx<Self>, r: u32, kind: SessionKind) {
        if !self.primary_up() {
            return;
        }
        let d = &mut self.primary.drivers[r as usize];
        if d.pending.is_some() {
            return;
        }
        d.pending = Some(kind);
        let delay = cx.between(self.p.session_delay_us.0, self.p.session_delay_us.1);
        self.timer(cx, delay, Timer::StartSession { replica: r });
    }

    fn budget_for(&self, kind: SessionKind) -> Option<Budget> {
        (!kind.is_rebuild()).then_some(self.p.budget)
    }

    fn start_session(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(kind) = self.primary.drivers[r as usize].pending.take() else {
            return;
        };
        let epoch = self.control.epoch;
        let Some(sender) = self.primary.sender_mut(r) else {
            return;
        };
        if sender.is_stopped() {
            return;
        }
        let kind = if sender.state() == ReplicaState::NeedsRebuild {
            SessionKind::Rebuild
        } else {
            kind
        };
        let budget = (!kind.is_rebuild()).then_some(self.p.budget);
        match sender.attach_session(epoch, kind, budget) {
            Ok(id) => {
                self.attached(cx, r, id, kind);
                self.connect(cx, r, id);
            }
            Err(error) => cx.note(ReplNote::Refused {
                replica: r,
                call: "attach_session",
                error,
                stale: false,
            }),
        }
    }

    /// Replaces whatever session `r` has with a new one (a replica that
    /// restarted reconnects).
    fn supersede(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(sender) = self.primary.sender_mut(r) else {
            return;
        };
        if sender.is_stopped() {
            return;
        }
        let rebuilding = sender.state() == ReplicaState::NeedsRebuild
            || sender
                .active_session()
                .is_some_and(|s| s.kind().is_rebuild());
        let kind = if rebuilding {
            SessionKind::Rebuild
        } else {
            SessionKind::CatchUp
        };
        let budget = self.budget_for(kind);
        let Some(sender) = self.primary.sender_mut(r) else {
            return;
        };
        match sender.supersede_session(kind, budget) {
            Ok((id, old)) => {
                if let Some(inv) = old {
                    self.invalidated(cx, r, inv);
                }
                self.attached(cx, r, id, kind);
                self.connect(cx, r, id);
            }
            Err(error) => cx.note(ReplNote::Refused {
                replica: r,
                call: "supersede_session",
                error,
                stale: false,
            }),
        }
    }

    fn connect(&mut self, cx: &mut Cx<Self>, r: u32, id: SessionId) {
        if !matches!(
            self.call(cx, r, id, "begin_connect", |s| s.begin_connect(id)),
            Some(Ok(()))
        ) {
            return;
        }
        self.send_connect(cx, r, id);
        self.timer(
            cx,
            self.p.connect_timeout_us,
            Timer::ConnectTimeout {
                replica: r,
                session: id,
            },
        );
    }

    fn send_connect(&mut self, cx: &mut Cx<Self>, r: u32, id: SessionId) {
        let msg = Down::Connect {
            session: id,
            history: self.primary.epochs.clone(),
            head: self.primary.head(),
            retention_start: self.primary.history().retention_start(),
        };
        self.send_down(cx, r, msg);
    }

    /// Takes the next step of `r`'s active session.
    fn advance(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(s) = self.primary.sender(r).and_then(Sender::active_session) else {
            return;
        };
        let (id, kind, phase) = (s.id(), s.kind(), s.phase());
        let converged = s.is_converged();
        let rebuild = s.rebuild().copied();
        let now = cx.now();
        match (kind.is_rebuild(), phase) {
            (false, SessionPhase::Handshake | SessionPhase::CatchUp) if converged => {
                match self.call(cx, r, id, "complete_session", |s| s.complete_session(id)) {
                    Some(Ok(target)) => self.completed(cx, r, target),
                    Some(Err(ReplicationError::TruncationNotRecorded { to })) => {
                        self.send_down(cx, r, Down::Truncate { session: id, to });
                        self.arm_retry(cx, r, id);
                    }
                    _ => {}
                }
            }
            (false, SessionPhase::Handshake) => {
                if matches!(
                    self.call(cx, r, id, "begin_catch_up", |s| s.begin_catch_up(id, now)),
                    Some(Ok(()))
                ) {
                    self.observe(cx, r);
                    self.ship(cx, r);
                    self.arm_budget(cx, r);
                }
            }
            (false, SessionPhase::CatchUp) => self.ship(cx, r),
            (true, SessionPhase::Handshake) => match rebuild {
                None => {
                    let history = self.primary.history();
                    if let Some(Ok(source)) = self.call(cx, r, id, "select_rebuild_source", |s| {
                        s.select_rebuild_source(id, &history)
                    }) {
                        self.observe(cx, r);
                        cx.note(ReplNote::Source {
                            replica: r,
                            source,
                            target: history.committed,
                        });
                        self.ship(cx, r);
                    }
                }
                Some(rb) => {
                    let done = match (rb.phase(), rb.source()) {
                        (RebuildPhase::Transfer, RebuildSource::SnapshotTail { snapshot })
                            if rb.transferred_to() >= snapshot =>
                        {
                            if matches!(
                                self.call(cx, r, id, "begin_tail_replay", |s| s
                                    .begin_tail_replay(id)),
                                Some(Ok(()))
                            ) {
                                self.observe(cx, r);
                            }
                            rb.target() <= snapshot
                        }
                        (RebuildPhase::Transfer, RebuildSource::FullBase) => {
                            rb.transferred_to() >= rb.target()
                        }
                        (RebuildPhase::TailReplay, _) => rb.tail_replayed_to() >= rb.target(),
                        _ => false,
                    };
                    if done {
                        if let Some(Ok(target)) =
                            self.call(cx, r, id, "complete_rebuild", |s| s.complete_rebuild(id))
                        {
                            self.completed(cx, r, target);
                        }
                    } else {
                        self.ship(cx, r);
                    }
                }
            },
            _ => {}
        }
    }

    /// Ships the next chunk of `r`'s active session.
    fn ship(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(s) = self.primary.sender(r).and_then(Sender::active_session) else {
            return;
        };
        let id = s.id();
        let chunk = self.p.chunk;
        let (stage, after, entries) = match s.rebuild() {
            None => {
                let target = s.frozen_target().unwrap_or(s.target());
                let after = s.recovered_to();
                let entries = self.primary.read_log(after, chunk, target);
                if let Some(rec) = self.oracle.sessions.get_mut(&(r, id)) {
                    rec.shipped = true;
                }
                (Stage::CatchUp, after, entries)
            }
            Some(rb) => match (rb.phase(), rb.source()) {
                (RebuildPhase::Transfer, source) => {
                    let (limit, snapshot) = match source {
                        RebuildSource::SnapshotTail { snapshot } => (snapshot, Some(snapshot)),
                        RebuildSource::FullBase => (rb.target(), None),
                    };
                    let after = rb.transferred_to();
                    let entries = self.primary.read_base(after, chunk, limit, snapshot);
                    (Stage::Base, after, entries)
                }
                (RebuildPhase::TailReplay, _) => {
                    let after = rb.tail_replayed_to();
                    (
                        Stage::Tail,
                        after,
                        self.primary.read_log(after, chunk, rb.target()),
                    )
                }
                (RebuildPhase::Completed, _) => return,
            },
        };
        let rebuild = stage != Stage::CatchUp;
        self.send_down(
            cx,
            r,
            Down::Data {
                session: id,
                stage,
                after,
                entries,
            },
        );
        if rebuild {
            self.arm_retry(cx, r, id);
        }
    }

    fn arm_retry(&mut self, cx: &mut Cx<Self>, r: u32, id: SessionId) {
        let mark = self.primary.drivers[r as usize].mark;
        self.timer(
            cx,
            self.p.retry_us,
            Timer::Retry {
                replica: r,
                session: id,
                mark,
            },
        );
    }

    /// Arms a budget check at the active session's deadline, if it lies
    /// ahead (a deadline already past was checked: under a wrapping budget it
    /// stays past) and no check is queued before it.
    fn arm_budget(&mut self, cx: &mut Cx<Self>, r: u32) {
        let Some(s) = self.primary.sender(r) else {
            return;
        };
        let (Some(deadline), Some(id)) = (s.budget_deadline(), s.active_session().map(|s| s.id()))
        else {
            return;
        };
        if deadline <= cx.now() {
            return;
        }
        let queued = &mut self.primary.drivers[r as usize].budget_timer;
        if queued.is_none_or(|at| at > deadline) {
            *queued = Some(deadline);
            cx.node_at(
                self.primary.node,
                deadline,
                ReplEvent::Timer(Timer::BudgetCheck {
                    replica: r,
                    session: id,
                }),
            );
        }
    }

    /// Checks `id`'s budget now; a violation escalates to a rebuild.
    fn check_budget(&mut self, cx: &mut Cx<Self>, r: u32, id: SessionId) {
        let now = cx.now();
        match self.call(cx, r, id, "check_budget", |s| s.check_budget(id, now)) {
            Some(Ok(Some(violation))) => {
                if let Some(cur) = self.session_id(r) {
                    self.oracle.finish(r, cur);
                }
                cx.count(match violation {
                    BudgetViolation::DurationExceeded => "budget.duration_exceeded",
                    BudgetViolation::EntriesExceeded => "budget.entries_exceeded",
                    BudgetViolation::ProgressStalled => "budget.progress_stalled",
                });
                cx.note(ReplNote::Budget {
                    replica: r,
                    violation,
                });
                self.request_session(cx, r, SessionKind::Rebuild);
            }
            _ => self.arm_budget(cx, r),
        }
    }

    /// A session of `r` completed at `target`: the replica is reported in
    /// sync. Checks the truncation and the contents, then streams what the
    /// primary wrote since the target.
    fn completed(&mut self, cx: &mut Cx<Self>, r: u32, target: Lsn) {
        let Some(s) = self.primary.sender(r).and_then(Sender::session) else {
            return;
        };
        let (id, source) = (s.id(), s.rebuild().map(|rb| rb.source()));
        cx.note(ReplNote::Completed {
            replica: r,
            session: id,
            target,
        });
        let rec = self
            .oracle
            .sessions
            .get(&(r, id))
            .cloned()
            .expect("completed sessions are recorded");
        self.oracle.finish(r, id);
        if let Some(to) = rec.truncation
            && !rec.truncated
        {
            cx.violate(
                TRUNCATE_FIRST,
                format!(
                    "{} reported in sync by {id} at {target} although it was ahead and never truncated to {to} (it holds {} entries)",
                    rname(r),
                    self.replicas[r as usize].log.len()
                ),
            );
        }
        if let Some(why) = self.divergence(r, target) {
            cx.violate(
                CONVERGED,
                format!("{} reported in sync by {id} at {target}: {why}", rname(r)),
            );
        }
        cx.count(match source {
            Some(RebuildSource::SnapshotTail { .. }) => "rebuild.snapshot_tail.completed",
            Some(RebuildSource::FullBase) => "rebuild.full_base.completed",
            None if rec.truncated => "truncation.completed",
            None if rec.shipped => "catch_up.completed",
            None => "zero_gap.completed",
        });
        // Stream what was written after the target.
        let head = self.primary.head();
        if head > target {
            let entries = self.primary.log[target.0 as usize..].to_vec();
            self.send_down(
                cx,
                r,
                Down::Live {
                    session: id,
                    after: target,
                    entries,
                },
            );
        }
    }

    /// Whether replica `r`'s log is not exactly the primary's up to
    /// `target` (with nothing divergent after it): [`Self::divergence`]'s
    /// verdict without its message.
    fn diverges(&self, r: u32, target: Lsn) -> bool {
        let mine = &self.replicas[r as usize].log;
        let theirs = &self.primary.log;
        let t = target.0 as usize;
        mine.len() < t
            || mine[..t] != theirs[..t]
            || (t..mine.len()).any(|i| theirs.get(i) != Some(&mine[i]))
    }

    /// Why replica `r`'s log is not exactly the primary's up to `target`
    /// (with nothing divergent after it), if it is not.
    fn divergence(&self, r: u32, target: Lsn) -> Option<String> {
        let mine = &self.replicas[r as usize].log;
        let theirs = &self.primary.log;
        let t = target.0 as usize;
        if mine.len() < t {
            return Some(format!("it holds only {} entries", mine.len()));
        }
        if let Some(i) = (0..t).find(|&i| mine[i] != theirs[i]) {
            return Some(format!(
                "entry {} is {} but the primary's is {}",
                i + 1,
                mine[i],
                theirs[i]
            ));
        }
        if let Some(i) = (t..mine.len()).find(|&i| theirs.get(i) != Some(&mine[i])) {
            return Some(format!(
                "it holds {} after the target at {}, the primary {}",
                mine[i],
                i + 1,
                theirs
                    .get(i)
                    .map_or("nothing".to_owned(), ToString::to_string)
            ));
        }
        None
    }

    // ----- the primary ---------------------------------------------------------

    fn on_primary(&mut self, cx: &mut Cx<Self>, event: ReplEvent) {
        if cx.fault_at(F_PRIMARY_CRASH, "primary_event", &[]) {
            self.crash_primary(cx);
            return;
        }
        match event {
            ReplEvent::Flushed { lsn } => self.on_flushed(cx, lsn),
            ReplEvent::ToPrimary { replica, msg } => self.on_up(cx, replica, msg),
            ReplEvent::Timer(t) => self.on_timer(cx, t),
            other => unreachable!("not a primary event: {other}"),
        }
    }

    fn on_append(&mut self, cx: &mut Cx<Self>) {
        if cx.phase() != Phase::Chaos || self.appended >= self.p.appends {
            return;
        }
        self.appended += 1;
        let d = cx.between(self.p.append_us.0, self.p.append_us.1);
        cx.env_after(d, ReplEvent::Append);
        if !self.primary_up() {
            return;
        }
        let epoch = self.control.epoch;
        let lsn = Lsn(self.primary.head().0 + 1);
        let entry = Entry {
            lsn,
            epoch,
            value: u64::from(self.appended),
        };
        if self.primary.epochs.last().is_none_or(|(e, _)| *e != epoch) {
            self.primary.epochs.push((epoch, lsn));
        }
        self.primary.log.push(entry);
        let d = cx.between(self.p.flush_us.0, self.p.flush_us.1);
        let at = Time::from_micros(cx.now().as_micros() + d)
            .max(Time::from_micros(self.primary.flush_last.as_micros() + 1));
        self.primary.flush_last = at;
        cx.node_at(self.primary.node, at, ReplEvent::Flushed { lsn });
        for r in 0..self.p.replicas {
            let Some(s) = self.primary.sender(r) else {
                continue;
            };
            if s.state() != ReplicaState::InSync {
                continue;
            }
            let Some(session) = s.session().map(|s| s.id()) else {
                continue;
            };
            self.send_down(
                cx,
                r,
                Down::Live {
                    session,
                    after: Lsn(lsn.0 - 1),
                    entries: vec![entry],
                },
            );
        }
    }

    fn on_flushed(&mut self, cx: &mut Cx<Self>, lsn: Lsn) {
        if lsn > self.primary.head() || lsn <= self.primary.committed {
            return;
        }
        self.primary.committed = lsn;
        self.advance_retention(cx, false);
        if lsn.0 >= self.primary.checkpoint.0 + self.p.checkpoint_every {
            let trusted = !cx.fault_at(F_CHECKPOINT, "checkpoint", &[]);
            self.primary.checkpoint = lsn;
            self.primary.checkpoint_trusted = trusted;
            if !trusted {
                self.primary.corrupt.insert(lsn);
            }
            cx.count(if trusted {
                "checkpoint.trusted"
            } else {
                "checkpoint.untrusted"
            });
            cx.note(ReplNote::Checkpoint { lsn, trusted });
        }
    }

    /// Where retention may not pass: every active catch-up's recovered
    /// point, every snapshot+tail rebuild's snapshot.
    fn pin(&self) -> Lsn {
        let mut pin = self.primary.committed;
        let Some(reg) = &self.primary.registry else {
            return pin;
        };
        for s in reg.senders().filter_map(Sender::active_session) {
            match (s.kind().is_rebuild(), s.phase(), s.rebuild()) {
                (false, SessionPhase::Handshake | SessionPhase::CatchUp, _) => {
                    pin = pin.min(s.recovered_to());
                }
                (true, _, Some(rb)) => {
                    if let RebuildSource::SnapshotTail { snapshot } = rb.source() {
                        pin = pin.min(snapshot);
                    }
                }
                _ => {}
            }
        }
        pin
    }

    /// Advances the tail to keep `retain` committed entries (or, `jump`, only
    /// the last committed entry), never past a pin.
    fn advance_retention(&mut self, cx: &mut Cx<Self>, jump: bool) {
        let committed = self.primary.committed;
        let wanted = if jump {
            Lsn(committed.0.saturating_sub(1))
        } else {
            Lsn(committed.0.saturating_sub(self.p.retain))
        };
        let tail = wanted.min(self.pin());
        if tail > self.primary.tail {
            self.primary.tail = tail;
            if jump {
                cx.note(ReplNote::Retention { tail });
            }
        }
    }

    fn on_up(&mut self, cx: &mut Cx<Self>, r: u32, msg: Up) {
        let session = match &msg {
            Up::Handshake { session, .. }
            | Up::Ack { session, .. }
            | Up::Truncated { session, .. } => Some(*session),
            Up::HeartbeatAck { .. } | Up::Hello { .. } => None,
        };
        if session.is_some() {
            let rebuild = self
                .primary
                .sender(r)
                .and_then(Sender::session)
                .is_some_and(|s| s.kind().is_rebuild());
            let site = [
                ("replica", u64::from(r) + 1),
                ("rebuild", u64::from(rebuild)),
            ];
            if cx.fault_at(F_EPOCH, "session_step", &site) {
                self.bump_epoch(cx, false);
            }
            if self.control.assigned[r as usize] && cx.fault_at(F_ENDPOINT, "session_step", &site) {
                self.move_endpoint(cx, r);
            }
        }
        if self.primary.sender(r).is_none() {
            return;
        }
        match msg {
            Up::Handshake {
                session,
                flushed,
                checked,
                retention_start,
            } => self.on_handshake(cx, r, session, flushed, checked, retention_start),
            Up::Ack {
                session,
                stage,
                flushed,
            } => self.on_ack(cx, r, session, stage, flushed),
            Up::Truncated { session, to } => {
                if let Some(Ok(())) = self.call(cx, r, session, "record_truncation", |s| {
                    s.record_truncation(session, to)
                }) {
                    self.primary.drivers[r as usize].mark += 1;
                    self.advance(cx, r);
                }
            }
            Up::HeartbeatAck {
                session,
                flushed,
                committed,
            } => {
                let s = self.primary.sender(r).expect("checked");
                let current = s.state() == ReplicaState::InSync
                    && s.session().is_some_and(|s| s.id() == session);
                if current && flushed < committed {
                    cx.count("lag.detected");
                    cx.note(ReplNote::Lagging {
                        replica: r,
                        flushed,
                        committed,
                    });
                    self.request_session(cx, r, SessionKind::CatchUp);
                }
            }
            Up::Hello { .. } => self.supersede(cx, r),
        }
    }

    fn on_handshake(
        &mut self,
        cx: &mut Cx<Self>,
        r: u32,
        session: SessionId,
        flushed: Lsn,
        checked: Lsn,
        retention_start: Lsn,
    ) {
        let connecting = self
            .primary
            .sender(r)
            .and_then(Sender::active_session)
            .is_some_and(|s| s.id() == session && s.phase() == SessionPhase::Connecting);
        if connecting && flushed > checked && self.primary.head() > checked {
            // The replica kept entries the history it checked against said
            // nothing about, and the primary has written there since: they
            // may conflict. Ask again with the current history.
            cx.count("handshake.rechecked");
            self.send_connect(cx, r, session);
            return;
        }
        if cx.fault_at(F_RETENTION, "handshake", &[("replica", u64::from(r) + 1)]) {
            self.advance_retention(cx, true);
        }
        let history = self.primary.history();
        let hs = Handshake {
            replica_flushed: flushed,
            advertised_retention_start: retention_start,
        };
        let Some(Ok(record)) = self.call(cx, r, session, "record_handshake", |s| {
            s.record_handshake(session, hs, &history)
        }) else {
            return;
        };
        cx.note(ReplNote::Handshaken {
            replica: r,
            outcome: record.outcome,
            proof: record.proof,
        });
        let s = self
            .primary
            .sender(r)
            .and_then(Sender::session)
            .expect("a handshake was recorded");
        let (id, kind, phase) = (s.id(), s.kind(), s.phase());
        if let Some(rec) = self.oracle.sessions.get_mut(&(r, id))
            && !kind.is_rebuild()
            && flushed > history.committed
        {
            rec.truncation = Some(history.committed);
        }
        self.observe(cx, r);
        if !kind.is_rebuild() && phase == SessionPhase::Invalidated {
            // Gap beyond retention: the sender wants a rebuild.
            self.oracle.finish(r, id);
            cx.count("handshake.needs_rebuild");
            self.request_session(cx, r, SessionKind::Rebuild);
            return;
        }
        self.advance(cx, r);
    }

    fn on_ack(
        &mut self,
        cx: &mut Cx<Self>,
        r: u32,
        session: SessionId,
        stage: Stage,
        flushed: Lsn,
    ) {
        let now = cx.now();
        let cur = self.primary.sender(r).and_then(Sender::session);
        let frozen = cur.and_then(|s| s.frozen_target()).unwrap_or(Lsn(u64::MAX));
        let transfer_limit =
            cur.and_then(|s| s.rebuild())
                .map_or(Lsn(u64::MAX), |rb| match rb.source() {
                    RebuildSource::SnapshotTail { snapshot } => snapshot,
                    RebuildSource::FullBase => rb.target(),
                });
        let before = cur.map(|s| {
            (
                s.recovered_to(),
                s.rebuild().map_or(Lsn(0), |rb| rb.transferred_to()),
                s.rebuild().map_or(Lsn(0), |rb| rb.tail_replayed_to()),
            )
        });
        let result = match stage {
            Stage::CatchUp => {
                let to = flushed.min(frozen);
                self.call(cx, r, session, "record_catch_up_progress", |s| {
                    s.record_catch_up_progress(session, to, now)
                })
            }
            Stage::Base => {
                let to = flushed.min(transfer_limit);
                self.call(cx, r, session, "record_transfer_progress", |s| {
                    s.record_transfer_progress(session, to)
                })
            }
            Stage::Tail => {
                let to = flushed.min(frozen);
                self.call(cx, r, session, "record_tail_progress", |s| {
                    s.record_tail_progress(session, to)
                })
            }
        };
        if !matches!(result, Some(Ok(()))) {
            return;
        }
        // An accepted progress report moves progress forward.
        if let (Some((rec, tr, tl)), Some(s)) =
            (before, self.primary.sender(r).and_then(Sender::session))
        {
            let after = (
                s.recovered_to(),
                s.rebuild().map_or(Lsn(0), |rb| rb.transferred_to()),
                s.rebuild().map_or(Lsn(0), |rb| rb.tail_replayed_to()),
            );
            let moved = match stage {
                Stage::CatchUp => after.0 > rec,
                Stage::Base => after.1 > tr,
                Stage::Tail => after.2 > tl,
            };
            if !moved {
                cx.violate(
                    MONOTONIC,
                    format!(
                        "{}: {} progress to {flushed} accepted without moving forward",
                        rname(r),
                        stage.name()
                    ),
                );
            }
        }
        self.observe(cx, r);
        self.primary.drivers[r as usize].mark += 1;
        if stage == Stage::CatchUp {
            self.check_budget(cx, r, session);
            if !self
                .primary
                .sender(r)
                .is_some_and(Sender::has_active_session)
            {
                return;
            }
        }
        self.advance(cx, r);
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>, t: Timer) {
        match t {
            Timer::Heartbeat => {
                let committed = self.primary.committed;
                for r in 0..self.p.replicas {
                    let Some(s) = self.primary.sender(r) else {
                        continue;
                    };
                    if s.state() != ReplicaState::InSync {
                        continue;
                    }
                    if let Some(session) = s.session().map(|s| s.id()) {
                        self.send_down(cx, r, Down::Heartbeat { session, committed });
                    }
                }
                self.timer(cx, self.p.heartbeat_us, Timer::Heartbeat);
            }
            Timer::StartSession { replica } => self.start_session(cx, replica),
            Timer::ConnectTimeout { replica, session } => {
                let Some(kind) = self
                    .primary
                    .sender(replica)
                    .and_then(Sender::session)
                    .filter(|s| s.id() == session && s.phase() == SessionPhase::Connecting)
                    .map(|s| s.kind())
                else {
                    return;
                };
                let retry = if kind.is_rebuild() {
                    SessionKind::Rebuild
                } else {
                    SessionKind::CatchUp
                };
                if let Some(Ok(inv)) = self.call(cx, replica, session, "invalidate_session", |s| {
                    s.invalidate_session(session, "connect_timeout", ReplicaState::Degraded)
                }) {
                    cx.count("connect.timeout");
                    self.invalidated(cx, replica, inv);
                    self.request_session(cx, replica, retry);
                }
            }
            Timer::BudgetCheck { replica, session } => {
                let queued = &mut self.primary.drivers[replica as usize].budget_timer;
                if *queued == Some(cx.now()) {
                    *queued = None;
                }
                self.check_budget(cx, replica, session);
            }
            Timer::Retry {
                replica,
                session,
                mark,
            } => {
                if self.primary.drivers[replica as usize].mark != mark {
                    return;
                }
                let Some(s) = self
                    .primary
                    .sender(replica)
                    .and_then(Sender::active_session)
                else {
                    return;
                };
                if s.id() != session {
                    return;
                }
                match s.truncation() {
                    Some(t) if !t.recorded && !s.kind().is_rebuild() => {
                        self.send_down(cx, replica, Down::Truncate { session, to: t.to });
                        self.arm_retry(cx, replica, session);
                    }
                    _ if s.kind().is_rebuild() => self.ship(cx, replica),
                    _ => {}
                }
            }
        }
    }

    fn crash_primary(&mut self, cx: &mut Cx<Self>) {
        cx.crash(self.primary.node);
        if let Some(reg) = self.primary.registry.take() {
            self.lost[0].merge(reg.sender_coverage());
            self.lost[1].merge(reg.coverage());
        }
        let committed = self.primary.committed;
        self.primary.log.truncate(committed.0 as usize);
        self.primary.epochs.retain(|(_, first)| *first <= committed);
        for d in &mut self.primary.drivers {
            *d = Driver::default();
        }
        for rec in self.oracle.sessions.values_mut() {
            rec.finished = true;
        }
        self.oracle.current.iter_mut().for_each(|c| *c = None);
        let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
        cx.env_after(d, ReplEvent::PrimaryRestart);
    }

    fn restart_primary(&mut self, cx: &mut Cx<Self>) {
        if self.primary_up() {
            return;
        }
        cx.restart(self.primary.node);
        let lost = self
            .primary
            .head()
            .0
            .saturating_sub(self.primary.committed.0);
        self.control.epoch = Epoch(self.control.epoch.0 + 1);
        cx.count("failover");
        cx.note(ReplNote::Failover {
            epoch: self.control.epoch,
            committed: self.primary.committed,
            lost,
        });
        self.primary.flush_last = cx.now();
        let mut reg = Registry::with_flaw(self.flaw).with_session_floor(self.primary.session_floor);
        let report = reg
            .reconcile(&self.assignment(), self.control.epoch)
            .expect("a fresh registry accepts any assignment");
        debug_assert!(report.invalidated.is_empty());
        self.primary.registry = Some(reg);
        for r in 0..self.p.replicas {
            if self.control.assigned[r as usize] {
                self.request_session(cx, r, SessionKind::Reassign);
            }
        }
        self.timer(cx, self.p.heartbeat_us, Timer::Heartbeat);
    }

    // ----- the control plane ---------------------------------------------------

    /// The control plane advances the epoch: as a term change the registry
    /// applies to every sender, or (`publish`) by publishing the whole
    /// assignment at the new epoch.
    fn bump_epoch(&mut self, cx: &mut Cx<Self>, publish: bool) {
        self.control.epoch = Epoch(self.control.epoch.0 + 1);
        let epoch = self.control.epoch;
        cx.count("epoch.bumps");
        cx.note(ReplNote::EpochBumped { epoch });
        if publish {
            self.reconcile(cx);
        } else if let Some(reg) = self.primary.registry.as_mut() {
            let invalidated = reg.advance_epoch(epoch).expect("epochs only move up");
            for (id, inv) in invalidated {
                self.invalidated(cx, id.0, inv);
            }
        }
        for r in 0..self.p.replicas {
            if self.control.assigned[r as usize] {
                self.request_session(cx, r, SessionKind::Reassign);
            }
        }
    }

    /// Applies the control plane's assignment to the registry.
    fn reconcile(&mut self, cx: &mut Cx<Self>) {
        let assignment = self.assignment();
        let epoch = self.control.epoch;
        let Some(reg) = self.primary.registry.as_mut() else {
            return;
        };
        let report = reg
            .reconcile(&assignment, epoch)
            .expect("the control plane's assignments are valid");
        self.primary.session_floor = reg.session_floor();
        for (id, inv) in report.invalidated {
            self.invalidated(cx, id.0, inv);
        }
        for id in report.removed {
            self.oracle.current[id.0 as usize] = None;
        }
    }

    fn move_endpoint(&mut self, cx: &mut Cx<Self>, r: u32) {
        self.control.versions[r as usize] += 1;
        let version = self.control.versions[r as usize];
        self.replicas[r as usize].version = version;
        cx.count("endpoint.moves");
        cx.note(ReplNote::EndpointMoved {
            replica: r,
            version,
        });
        self.reconcile(cx);
        self.request_session(cx, r, SessionKind::Reassign);
    }

    fn on_control_tick(&mut self, cx: &mut Cx<Self>) {
        if cx.phase() != Phase::Chaos {
            return;
        }
        let d = cx.between(self.p.control_us.0, self.p.control_us.1);
        cx.env_after(d, ReplEvent::ControlTick);
        if cx.fault_at(F_EPOCH, "control_tick", &[]) {
            self.bump_epoch(cx, true);
        }
        if self.primary_up() && cx.fault_at(F_RETENTION, "control_tick", &[]) {
            self.advance_retention(cx, true);
        }
        for r in 0..self.p.replicas {
            let i = r as usize;
            let site = [("replica", u64::from(r) + 1)];
            if !self.control.partitioned[i] && cx.fault_at(F_PARTITION, "control_replica", &site) {
                self.control.partitioned[i] = true;
                cx.note(ReplNote::Partitioned { replica: r });
                let d = cx.between(self.p.partition_us.0, self.p.partition_us.1);
                cx.env_after(d, ReplEvent::PartitionHealed { replica: r });
            }
            if !self.control.assigned[i] {
                continue;
            }
            if cx.fault_at(F_ENDPOINT, "control_replica", &site) {
                self.move_endpoint(cx, r);
            }
            if cx.fault_at(F_REASSIGN, "control_replica", &site) {
                self.control.assigned[i] = false;
                cx.count("replica.unassigned");
                cx.note(ReplNote::Unassigned { replica: r });
                self.reconcile(cx);
                self.primary.drivers[i].pending = None;
                let d = cx.between(self.p.reassign_us.0, self.p.reassign_us.1);
                cx.env_after(d, ReplEvent::AddBack { replica: r });
            }
        }
    }

    fn add_back(&mut self, cx: &mut Cx<Self>, r: u32) {
        if self.control.assigned[r as usize] {
            return;
        }
        self.control.assigned[r as usize] = true;
        self.reconcile(cx);
        self.request_session(cx, r, SessionKind::Bootstrap);
    }

    // ----- replicas --------------------------------------------------------------

    fn on_replica(&mut self, cx: &mut Cx<Self>, r: u32, version: u64, msg: Down) {
        let i = r as usize;
        let now = cx.now();
        if now < self.replicas[i].stalled_until {
            self.defer(cx, r, version, msg);
            return;
        }
        let site = [("replica", u64::from(r) + 1)];
        if cx.fault_at(F_REPLICA_CRASH, "replica_event", &site) {
            cx.crash(self.replicas[i].node);
            self.replicas[i].up = false;
            cx.count("replica.crashes");
            let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
            cx.env_after(d, ReplEvent::ReplicaRestart { replica: r });
            return;
        }
        if cx.fault_at(F_STALL, "replica_event", &site) {
            let d = cx.between(self.p.stall_us.0, self.p.stall_us.1);
            let until = Time::from_micros(now.as_micros() + d);
            self.replicas[i].stalled_until = until;
            cx.note(ReplNote::Stalled { replica: r, until });
            self.defer(cx, r, version, msg);
            return;
        }
        if version != self.replicas[i].version {
            cx.note(ReplNote::WrongEndpoint { replica: r });
            return;
        }
        let session = match &msg {
            Down::Connect { session, .. }
            | Down::Data { session, .. }
            | Down::Truncate { session, .. }
            | Down::Live { session, .. }
            | Down::Heartbeat { session, .. } => *session,
        };
        let rep = &mut self.replicas[i];
        if session < rep.session_seen {
            return;
        }
        rep.session_seen = session;
        match msg {
            Down::Connect {
                session,
                history,
                head,
                retention_start,
            } => {
                // The leader-epoch check: drop the first entry (and all after
                // it) that the primary's history says another epoch wrote.
                let epoch_at = |lsn: Lsn| {
                    history
                        .iter()
                        .rev()
                        .find(|(_, first)| *first <= lsn)
                        .map(|(e, _)| *e)
                };
                let upto = (rep.log.len() as u64).min(head.0) as usize;
                if let Some(pos) =
                    (0..upto).find(|&k| Some(rep.log[k].epoch) != epoch_at(Lsn(k as u64 + 1)))
                {
                    let count = rep.log.len() - pos;
                    rep.log.truncate(pos);
                    cx.count("replica.divergent_suffix_dropped");
                    cx.note(ReplNote::DivergentSuffixDropped {
                        replica: r,
                        from: Lsn(pos as u64 + 1),
                        count: count as u64,
                    });
                }
                let flushed = self.replicas[i].flushed();
                self.send_up(
                    cx,
                    r,
                    Up::Handshake {
                        session,
                        flushed,
                        checked: flushed.min(head),
                        retention_start,
                    },
                );
            }
            Down::Data {
                session,
                stage,
                after,
                entries,
            } => {
                if stage == Stage::Base && after == Lsn(0) && rep.wiped_for != session {
                    rep.log.clear();
                    rep.wiped_for = session;
                    cx.note(ReplNote::Wiped {
                        replica: r,
                        session,
                    });
                }
                rep.place(after, &entries);
                let flushed = rep.flushed();
                self.send_up(
                    cx,
                    r,
                    Up::Ack {
                        session,
                        stage,
                        flushed,
                    },
                );
            }
            Down::Truncate { session, to } => {
                if rep.flushed() > to {
                    rep.log.truncate(to.0 as usize);
                }
                if let Some(rec) = self.oracle.sessions.get_mut(&(r, session)) {
                    rec.truncated = true;
                }
                cx.note(ReplNote::ReplicaTruncated {
                    replica: r,
                    session,
                    to,
                });
                self.send_up(cx, r, Up::Truncated { session, to });
            }
            Down::Live { after, entries, .. } => {
                rep.place(after, &entries);
            }
            Down::Heartbeat { session, committed } => {
                let flushed = rep.flushed();
                self.send_up(
                    cx,
                    r,
                    Up::HeartbeatAck {
                        session,
                        flushed,
                        committed,
                    },
                );
            }
        }
    }

    /// Re-queues a message for a stalled replica after the stall, in order.
    fn defer(&mut self, cx: &mut Cx<Self>, r: u32, version: u64, msg: Down) {
        let rep = &mut self.replicas[r as usize];
        let at = rep
            .stalled_until
            .max(Time::from_micros(rep.deferred_last.as_micros() + 1));
        rep.deferred_last = at;
        cx.node_at(
            rep.node,
            at,
            ReplEvent::ToReplica {
                replica: r,
                version,
                msg,
            },
        );
    }

    fn restart_replica(&mut self, cx: &mut Cx<Self>, r: u32) {
        let rep = &mut self.replicas[r as usize];
        if rep.up {
            return;
        }
        cx.restart(rep.node);
        rep.up = true;
        rep.stalled_until = Time::ZERO;
        rep.deferred_last = Time::ZERO;
        let flushed = rep.flushed();
        self.send_up(cx, r, Up::Hello { flushed });
    }

    // ----- liveness ----------------------------------------------------------------

    /// Why replica `r` is not in sync with the primary's committed log at the
    /// current epoch, if it is not; and whether that is a divergence. The
    /// message is written only if `explain` (`settled` asks after every
    /// event and needs only the verdict).
    fn out_of_sync(&self, r: u32, explain: bool) -> Option<(&'static str, String)> {
        let i = r as usize;
        let pending = |why: &dyn Fn() -> String| {
            let message = if explain {
                format!("{} {}", rname(r), why())
            } else {
                String::new()
            };
            Some((IN_SYNC, message))
        };
        if !self.control.assigned[i] {
            return pending(&|| "is not assigned".to_owned());
        }
        if !self.replicas[i].up {
            return pending(&|| "is down".to_owned());
        }
        let s = self.primary.sender(r)?;
        let session = s.session();
        let epoch = self.control.epoch;
        if s.state() != ReplicaState::InSync
            || s.epoch() != epoch
            || session.is_none_or(|s| s.phase() != SessionPhase::Completed || s.epoch() != epoch)
        {
            return pending(&|| {
                format!(
                    "is {} at {} (session {})",
                    s.state(),
                    s.epoch(),
                    session.map_or("none".to_owned(), |s| format!(
                        "{} {} {} at {}",
                        s.id(),
                        s.kind(),
                        s.phase(),
                        s.epoch()
                    ))
                )
            });
        }
        let committed = self.primary.committed;
        if !explain && !self.diverges(r, committed) {
            let len = self.replicas[i].log.len() as u64;
            return (len != committed.0).then(|| (IN_SYNC, String::new()));
        }
        if let Some(why) = self.divergence(r, committed) {
            let log = &self.replicas[i].log;
            let lagging = log.len() < committed.0 as usize
                && log.iter().zip(&self.primary.log).all(|(a, b)| a == b);
            return Some((
                if lagging { IN_SYNC } else { CONVERGED },
                format!(
                    "{} is in sync but {why} (primary committed {committed})",
                    rname(r)
                ),
            ));
        }
        let len = self.replicas[i].log.len() as u64;
        if len != committed.0 {
            return pending(&|| format!("holds {len} entries, the primary {committed}"));
        }
        None
    }

    fn all_in_sync(&self) -> Option<(&'static str, String)> {
        if !self.primary_up() {
            return Some((IN_SYNC, "the primary is down".to_owned()));
        }
        if self.primary.head() != self.primary.committed {
            return Some((
                IN_SYNC,
                format!(
                    "the primary has not flushed {} entries",
                    self.primary.head().0 - self.primary.committed.0
                ),
            ));
        }
        (0..self.p.replicas).find_map(|r| self.out_of_sync(r, true))
    }

    /// Whether every replica is in sync (what [`Self::all_in_sync`] checks,
    /// without writing why not).
    fn every_replica_in_sync(&self) -> bool {
        self.primary_up()
            && self.primary.head() == self.primary.committed
            && (0..self.p.replicas).all(|r| self.out_of_sync(r, false).is_none())
    }
}

impl Protocol for ReplicationWorld {
    type Event = ReplEvent;
    type Note = ReplNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        self.primary.node = cx.add_node("primary");
        let epoch = self.control.epoch;
        let initial = self.p.initial_entries;
        self.primary.log = (1..=initial)
            .map(|i| Entry {
                lsn: Lsn(i),
                epoch,
                value: 0,
            })
            .collect();
        if initial > 0 {
            self.primary.epochs.push((epoch, Lsn(1)));
        }
        self.primary.committed = Lsn(initial);
        self.primary.tail = Lsn(initial.saturating_sub(self.p.retain));
        if initial >= self.p.checkpoint_every {
            self.primary.checkpoint = Lsn(initial);
            self.primary.checkpoint_trusted = true;
        }
        for r in 0..self.p.replicas {
            let node = cx.add_node(rname(r));
            let prefix = cx
                .between(self.p.initial_prefix.0, self.p.initial_prefix.1)
                .min(initial);
            let mut log = self.primary.log[..prefix as usize].to_vec();
            let stale = cx.between(0, self.p.stale_suffix);
            log.extend((1..=stale).map(|k| Entry {
                lsn: Lsn(prefix + k),
                epoch: Epoch(0),
                value: 1_000_000 + k,
            }));
            self.replicas.push(Replica {
                node,
                log,
                session_seen: SessionId(0),
                wiped_for: SessionId(0),
                version: 1,
                up: true,
                stalled_until: Time::ZERO,
                deferred_last: Time::ZERO,
            });
        }
        let mut reg = Registry::with_flaw(self.flaw);
        reg.reconcile(&self.assignment(), epoch)
            .expect("the initial assignment is valid");
        self.primary.session_floor = reg.session_floor();
        self.primary.registry = Some(reg);
        for r in 0..self.p.replicas {
            self.request_session(cx, r, SessionKind::Bootstrap);
        }
        let d = cx.between(self.p.append_us.0, self.p.append_us.1);
        cx.env_after(d, ReplEvent::Append);
        let d = cx.between(self.p.control_us.0, self.p.control_us.1);
        cx.env_after(d, ReplEvent::ControlTick);
        self.timer(cx, self.p.heartbeat_us, Timer::Heartbeat);
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, event: ReplEvent) {
        match event {
            ReplEvent::Append => self.on_append(cx),
            ReplEvent::ControlTick => self.on_control_tick(cx),
            ReplEvent::PartitionHealed { replica } => {
                self.control.partitioned[replica as usize] = false;
            }
            ReplEvent::AddBack { replica } => self.add_back(cx, replica),
            ReplEvent::PrimaryRestart => self.restart_primary(cx),
            ReplEvent::ReplicaRestart { replica } => self.restart_replica(cx, replica),
            ReplEvent::ToReplica {
                replica,
                version,
                msg,
            } => self.on_replica(cx, replica, version, msg),
            e @ (ReplEvent::Flushed { .. } | ReplEvent::ToPrimary { .. } | ReplEvent::Timer(_)) => {
                self.on_primary(cx, e);
            }
        }
    }

    fn heal(&mut self, cx: &mut Cx<Self>) {
        for p in &mut self.control.partitioned {
            *p = false;
        }
        self.restart_primary(cx);
        for r in 0..self.p.replicas {
            self.restart_replica(cx, r);
            self.add_back(cx, r);
        }
    }

    fn settled(&self) -> bool {
        let settled = self.every_replica_in_sync();
        debug_assert_eq!(settled, self.all_in_sync().is_none());
        settled
    }

    fn check_liveness(&self, cx: &Cx<Self>) -> Option<(&'static str, String)> {
        // A settled run is in sync: `settled` checked it.
        if cx.settled() {
            return None;
        }
        self.all_in_sync()
    }

    fn route(&self, event: &ReplEvent) -> (String, String) {
        let primary = || "primary".to_owned();
        match event {
            ReplEvent::Append => ("clients".to_owned(), primary()),
            ReplEvent::Flushed { .. } => ("primary-log".to_owned(), primary()),
            ReplEvent::ToReplica { replica, .. } => (primary(), rname(*replica)),
            ReplEvent::ToPrimary { replica, .. } => (rname(*replica), primary()),
            ReplEvent::Timer(_) | ReplEvent::PrimaryRestart => (primary(), primary()),
            ReplEvent::ControlTick => ("control".to_owned(), "control".to_owned()),
            ReplEvent::PartitionHealed { replica } | ReplEvent::AddBack { replica } => {
                ("control".to_owned(), rname(*replica))
            }
            ReplEvent::ReplicaRestart { replica } => (rname(*replica), rname(*replica)),
        }
    }

    fn coverage(&self) -> Vec<Coverage> {
        let [mut senders, mut registry] = self.lost;
        if let Some(reg) = &self.primary.registry {
            senders.merge(reg.sender_coverage());
            registry.merge(reg.coverage());
        }
        vec![senders, registry]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload() -> ReplicationWorkload {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../sim-scenarios/replication-steady.toml"
        ))
        .expect("the steady scenario exists");
        let table: toml::Table = toml::from_str(&text).expect("it parses");
        let w = table["workload"].clone();
        serde_json::from_value(serde_json::to_value(w).unwrap()).expect("a valid workload")
    }

    fn e(lsn: u64, epoch: u64, value: u64) -> Entry {
        Entry {
            lsn: Lsn(lsn),
            epoch: Epoch(epoch),
            value,
        }
    }

    #[test]
    fn workload_errors_name_the_key() {
        assert_eq!(workload().validate(), Ok(()));
        let mut w = workload();
        w.budget_stall_ms = 0;
        assert!(w.validate().unwrap_err().contains("`budget_stall_ms`"));
        let mut w = workload();
        w.net_ms = [5, 1];
        assert!(w.validate().unwrap_err().contains("`net_ms`"));
        let mut w = workload();
        w.retry_ms = 2;
        assert!(w.validate().unwrap_err().contains("`retry_ms`"));
        let mut w = workload();
        w.replicas = 17;
        assert!(w.validate().unwrap_err().contains("`replicas`"));
    }

    #[test]
    fn a_replica_places_entries_after_the_named_position_and_cuts_a_conflict() {
        let mut r = Replica {
            node: NodeId(1),
            log: vec![e(1, 1, 1), e(2, 1, 2), e(3, 0, 9), e(4, 0, 9)],
            session_seen: SessionId(0),
            wiped_for: SessionId(0),
            version: 1,
            up: true,
            stalled_until: Time::ZERO,
            deferred_last: Time::ZERO,
        };
        assert!(!r.place(Lsn(5), &[e(6, 1, 6)]), "a gap is not placed");
        assert_eq!(r.flushed(), Lsn(4));
        assert!(r.place(Lsn(1), &[e(2, 1, 2), e(3, 2, 3)]));
        assert_eq!(
            r.log,
            [e(1, 1, 1), e(2, 1, 2), e(3, 2, 3)],
            "cut at the conflict"
        );
        // The stream's position is trusted: whatever comes is placed there.
        assert!(r.place(Lsn(3), &[e(7, 2, 7)]));
        assert_eq!(r.log[3], e(7, 2, 7));
    }

    #[test]
    fn the_log_reader_starts_at_the_first_retained_entry() {
        let p = Primary {
            node: NodeId(0),
            log: (1..=10).map(|i| e(i, 1, i)).collect(),
            committed: Lsn(10),
            tail: Lsn(6),
            checkpoint: Lsn(4),
            checkpoint_trusted: false,
            corrupt: [Lsn(4)].into(),
            epochs: vec![(Epoch(1), Lsn(1))],
            session_floor: SessionId(1),
            registry: None,
            drivers: Vec::new(),
            flush_last: Time::ZERO,
        };
        let lsns = |v: Vec<Entry>| v.iter().map(|e| e.lsn.0).collect::<Vec<_>>();
        assert_eq!(lsns(p.read_log(Lsn(7), 2, Lsn(10))), [8, 9]);
        assert_eq!(
            lsns(p.read_log(Lsn(2), 2, Lsn(10))),
            [7, 8],
            "recycled entries are skipped"
        );
        assert_eq!(lsns(p.read_log(Lsn(9), 4, Lsn(10))), [10]);
        let base = p.read_base(Lsn(0), 10, Lsn(4), Some(Lsn(4)));
        assert_eq!(lsns(base.clone()), [1, 2, 3, 4], "the base is not the log");
        assert_ne!(base[3], p.log[3], "an untrusted image is corrupt");
        assert_eq!(p.read_base(Lsn(0), 10, Lsn(4), None)[3], p.log[3]);
    }
}
