//! The `locks` protocol: clients contending on one lock table.
//!
//! World: a server node hosting a [`LockTable`], and client nodes connected
//! to it by per-link FIFO links with random delay. Each client runs a number
//! of rounds: think, request a random set of keys (shared and exclusive,
//! across all five domains; blocking or try), hold them for a random time,
//! release. A client's requests belong to its session, one per incarnation.
//!
//! Faults:
//! - `cancel`: a waiting client gives up after its patience and cancels
//!   (racing the grant: a refused cancel means the client holds the keys and
//!   releases them at once);
//! - `slow_release`: a client holds its keys many times longer than planned;
//! - `client_fail`: a client crashes; the server expires its session after a
//!   timeout (every hold and wait of that session released in one step),
//!   unless a message from the client's next incarnation closes it first.
//!   Messages from a closed session are ignored.
//!
//! Invariants are checked against a history the world keeps itself, with a
//! naive pairwise conflict test, independently of the table's code.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};
use simcast_machines::coverage::Coverage;
use simcast_machines::locks::{
    LockError, LockEvent, LockFlaw, LockRequest, LockTable, OwnerId, RequestId,
};
use simcast_machines::time::Time;

use crate::engine::{Cx, NodeId, Protocol, Shared};
use crate::faults::ppm;
use crate::hash::Fingerprinter;
use crate::protocols::checks::{self, us};
use crate::protocols::keys::{KeyConfig, KeySpace, clash};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

/// Names of the locks protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "locks",
    doc: "resource-key lock table: shared/exclusive, all-or-nothing, fair",
    invariants: &[
        InvariantInfo {
            name: EXCLUSION,
            kind: InvariantKind::Safety,
            doc: "never two holders of conflicting keys",
        },
        InvariantInfo {
            name: FIFO,
            kind: InvariantKind::Safety,
            doc: "no request is granted while an earlier conflicting request waits",
        },
        InvariantInfo {
            name: EVENTUALLY_GRANTED,
            kind: InvariantKind::Liveness,
            doc: "after healing, every blocking request not cancelled is granted and every client finishes",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "ignore-earlier-waiters",
            invariant: FIFO,
            doc: "the table grants a waiter when no holder conflicts, overtaking earlier waiters",
        },
        MutantInfo {
            name: "shared-in-identity",
            invariant: EXCLUSION,
            doc: "the table treats the shared flag as part of lock identity",
        },
        MutantInfo {
            name: "lost-wakeup",
            invariant: EVENTUALLY_GRANTED,
            doc: "the table does not re-examine waiters on release or cancel",
        },
    ],
    faults: &[
        FaultInfo {
            name: "cancel",
            doc: "a client that starts waiting gives up after its patience and cancels",
        },
        FaultInfo {
            name: "slow_release",
            doc: "a client holds its keys slow_release_factor times longer",
        },
        FaultInfo {
            name: "client_fail",
            doc: "a client crashes as it handles an event; its session is cleaned up",
        },
    ],
    sites: &[
        SiteInfo {
            name: "client_event",
            doc: "a client is about to handle an event (client 1 = client-1)",
            params: &["client"],
            faults: &["client_fail"],
        },
        SiteInfo {
            name: "acquire",
            doc: "a client sends a blocking acquire",
            params: &["client"],
            faults: &["cancel"],
        },
        SiteInfo {
            name: "grant",
            doc: "a client learns it holds its keys",
            params: &["client"],
            faults: &["slow_release"],
        },
    ],
    machines: &[("lock table", simcast_machines::locks::TRANSITIONS)],
    unreachable: &[],
};

const EXCLUSION: &str = "locks.exclusion";
const FIFO: &str = "locks.fifo";
const EVENTUALLY_GRANTED: &str = "locks.eventually_granted";

const F_CANCEL: usize = 0;
const F_SLOW_RELEASE: usize = 1;
const F_CLIENT_FAIL: usize = 2;

/// The `[workload]` table of a locks scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksWorkload {
    /// Number of clients.
    pub clients: u32,
    /// Rounds (request, hold, release) per client.
    pub rounds: u32,
    /// How requests draw their keys.
    #[serde(flatten)]
    pub keys: KeyConfig,
    /// Probability that a round uses try-acquire instead of blocking.
    #[serde(default)]
    pub try_ratio: f64,
    /// Pause between rounds.
    pub think_ms: [u64; 2],
    /// How long keys are held.
    pub hold_ms: [u64; 2],
    /// How long a client waits before giving up (fault `cancel`).
    #[serde(default = "default_patience")]
    pub patience_ms: [u64; 2],
    /// One-way network delay.
    pub net_delay_ms: [u64; 2],
    /// How long the server waits before expiring a failed client's session.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    /// How long a failed client stays down.
    #[serde(default = "default_restart")]
    pub restart_ms: [u64; 2],
    /// How many times longer a slow release holds.
    #[serde(default = "default_slow_factor")]
    pub slow_release_factor: u32,
}

fn default_patience() -> [u64; 2] {
    [1, 50]
}
fn default_session_timeout() -> u64 {
    100
}
fn default_restart() -> [u64; 2] {
    [10, 200]
}
fn default_slow_factor() -> u32 {
    10
}

impl LocksWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        self.keys.validate()?;
        checks::at_least_one(&[
            ("clients", u64::from(self.clients)),
            ("rounds", u64::from(self.rounds)),
            ("slow_release_factor", u64::from(self.slow_release_factor)),
        ])?;
        if self.clients > 1000 {
            return Err("`clients` must be at most 1000".to_owned());
        }
        checks::probabilities(&[("try_ratio", self.try_ratio)])?;
        checks::ranges(&[
            ("think_ms", self.think_ms),
            ("hold_ms", self.hold_ms),
            ("patience_ms", self.patience_ms),
            ("net_delay_ms", self.net_delay_ms),
            ("restart_ms", self.restart_ms),
        ])?;
        if self.net_delay_ms[0] == 0 {
            return Err("`net_delay_ms` must be at least 1 ms".to_owned());
        }
        Ok(())
    }
}

/// The workload in engine units, hashable.
#[derive(Clone, Debug, Hash)]
struct Params {
    clients: u32,
    rounds: u32,
    keys: KeySpace,
    try_ppm: u32,
    think_us: (u64, u64),
    hold_us: (u64, u64),
    patience_us: (u64, u64),
    net_us: (u64, u64),
    session_timeout_us: u64,
    restart_us: (u64, u64),
    slow_factor: u64,
}

/// A client's request id, chosen by the client (unique per client).
type Crid = u32;

/// Client to server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Up {
    /// Acquire these keys, blocking or try.
    Acquire {
        /// Client request id.
        crid: Crid,
        /// The keys.
        request: LockRequest,
        /// Blocking (queue) or try (all or nothing now).
        blocking: bool,
    },
    /// Give up waiting.
    Cancel {
        /// Client request id.
        crid: Crid,
    },
    /// Release held keys.
    Release {
        /// Client request id.
        crid: Crid,
    },
}

/// Server to client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Down {
    /// The request holds its keys.
    Granted {
        /// Client request id.
        crid: Crid,
    },
    /// The try-acquire failed.
    TryFailed {
        /// Client request id.
        crid: Crid,
    },
    /// The cancel took effect.
    Cancelled {
        /// Client request id.
        crid: Crid,
    },
    /// The cancel came too late: the request was already granted.
    CancelRefused {
        /// Client request id.
        crid: Crid,
    },
}

/// Events of the locks world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocksEvent {
    /// A client's think time is over.
    Wake {
        /// Client index.
        client: u32,
    },
    /// A waiting client's patience ran out.
    GiveUp {
        /// Client index.
        client: u32,
        /// The request it waits on.
        crid: Crid,
    },
    /// A client's hold time is over.
    ReleaseDue {
        /// Client index.
        client: u32,
        /// The held request.
        crid: Crid,
    },
    /// A message arrives at the server.
    Up {
        /// Sender.
        client: u32,
        /// The sender's incarnation (its session).
        incarnation: u32,
        /// The message.
        msg: Up,
    },
    /// A message arrives at a client.
    Down {
        /// Receiver.
        client: u32,
        /// The message.
        msg: Down,
    },
    /// The server's failure detector expires a session.
    SessionExpired {
        /// Client index.
        client: u32,
        /// The incarnation whose session expires.
        incarnation: u32,
    },
    /// A failed client comes back.
    Restart {
        /// Client index.
        client: u32,
    },
}

fn cname(client: u32) -> String {
    format!("client-{}", client + 1)
}

impl fmt::Display for LocksEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocksEvent::Wake { .. } => f.write_str("wake"),
            LocksEvent::GiveUp { crid, .. } => write!(f, "patience over for #{crid}"),
            LocksEvent::ReleaseDue { crid, .. } => write!(f, "hold over for #{crid}"),
            LocksEvent::Up {
                client,
                incarnation,
                msg,
            } => {
                write!(f, "from {}/{incarnation}: ", cname(*client))?;
                match msg {
                    Up::Acquire {
                        crid,
                        request,
                        blocking,
                    } => write!(
                        f,
                        "{} #{crid} {request}",
                        if *blocking { "acquire" } else { "try-acquire" }
                    ),
                    Up::Cancel { crid } => write!(f, "cancel #{crid}"),
                    Up::Release { crid } => write!(f, "release #{crid}"),
                }
            }
            LocksEvent::Down { msg, .. } => match msg {
                Down::Granted { crid } => write!(f, "granted #{crid}"),
                Down::TryFailed { crid } => write!(f, "try failed #{crid}"),
                Down::Cancelled { crid } => write!(f, "cancelled #{crid}"),
                Down::CancelRefused { crid } => write!(f, "cancel refused #{crid}"),
            },
            LocksEvent::SessionExpired {
                client,
                incarnation,
            } => write!(f, "session of {}/{incarnation} expires", cname(*client)),
            LocksEvent::Restart { client } => write!(f, "{} comes back", cname(*client)),
        }
    }
}

/// What the locks world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LocksNote {
    /// The table admitted a blocking request (granted or queued).
    Admitted {
        /// Client.
        client: u32,
        /// Client request id.
        crid: Crid,
        /// Table request id.
        rid: RequestId,
    },
    /// The table granted a request.
    Granted {
        /// Client.
        client: u32,
        /// Client request id.
        crid: Crid,
        /// Table request id.
        rid: RequestId,
    },
    /// A grant went to a session that is gone; it holds until cleanup.
    GrantToDeadSession {
        /// Table request id.
        rid: RequestId,
    },
    /// A session was closed: holds released, waits cancelled.
    SessionClosed {
        /// Client.
        client: u32,
        /// Its incarnation.
        incarnation: u32,
        /// Holds released.
        released: u32,
        /// Waits cancelled.
        cancelled: u32,
    },
    /// A message from a closed session was ignored.
    Stale {
        /// Client.
        client: u32,
        /// Its incarnation.
        incarnation: u32,
    },
    /// A client finished all its rounds.
    Done {
        /// Client.
        client: u32,
    },
}

impl fmt::Display for LocksNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocksNote::Admitted { client, crid, rid } => {
                write!(f, "table admits {} #{crid} as {rid}", cname(*client))
            }
            LocksNote::Granted { client, crid, rid } => {
                write!(f, "table grants {rid} ({} #{crid})", cname(*client))
            }
            LocksNote::GrantToDeadSession { rid } => {
                write!(f, "table grants {rid} to a dead session")
            }
            LocksNote::SessionClosed {
                client,
                incarnation,
                released,
                cancelled,
            } => write!(
                f,
                "session {}/{incarnation} closed: {released} released, {cancelled} cancelled",
                cname(*client)
            ),
            LocksNote::Stale {
                client,
                incarnation,
            } => write!(
                f,
                "ignored: session {}/{incarnation} is closed",
                cname(*client)
            ),
            LocksNote::Done { client } => write!(f, "{} finished its rounds", cname(*client)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ClientState {
    Idle,
    /// Sent an acquire, waiting for the answer.
    Pending {
        crid: Crid,
        blocking: bool,
    },
    /// Sent a cancel, waiting for the answer.
    Cancelling {
        crid: Crid,
    },
    /// Granted while cancelling: released, waiting for the refusal.
    Draining {
        crid: Crid,
    },
    Holding {
        crid: Crid,
    },
    Done,
    Down,
}

#[derive(Clone, Debug, Hash)]
struct Client {
    node: NodeId,
    state: ClientState,
    /// Durable: survives a crash.
    rounds_done: u32,
    /// Durable: request ids are never reused.
    next_crid: Crid,
}

#[derive(Clone, Copy, Debug, Hash)]
struct Session {
    incarnation: u32,
    open: bool,
}

/// The invariants' own view of the table, from what it reported. Small
/// sorted vectors: a copy is an allocation per vector at most, none into a
/// recycled world.
#[derive(Debug, Default)]
struct History {
    next_arrival: u64,
    /// Blocking requests admitted and not yet granted or cancelled, in
    /// arrival order.
    waiting: Vec<Seen>,
    /// Granted requests not yet released, by id (`arrival` unused).
    held: Vec<Seen>,
}

/// A request as the history saw it.
#[derive(Debug)]
struct Seen {
    arrival: u64,
    rid: RequestId,
    request: LockRequest,
    sig: Sig,
}

impl Clone for Seen {
    fn clone(&self) -> Self {
        Seen {
            arrival: self.arrival,
            rid: self.rid,
            request: self.request.clone(),
            sig: self.sig,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.arrival = source.arrival;
        self.rid = source.rid;
        self.request.clone_from(&source.request);
        self.sig = source.sig;
    }
}

/// A screen for [`clash`]: each key sets one of 64 bits, picked by its
/// domain, name length and first and last bytes (so two keys on one lock
/// set the same bit), in `all` and, if exclusive, in `exclusive`. Requests
/// whose signatures do not overlap that way cannot clash; those that do are
/// compared key by key.
#[derive(Clone, Copy, Debug, Default)]
struct Sig {
    all: u64,
    exclusive: u64,
}

impl Sig {
    fn of(request: &LockRequest) -> Sig {
        let mut sig = Sig::default();
        for k in request.keys() {
            let name = k.key.as_bytes();
            let word = (k.domain as u64)
                | (name.len() as u64) << 8
                | u64::from(name.first().copied().unwrap_or(0)) << 24
                | u64::from(name.last().copied().unwrap_or(0)) << 32;
            let bit = 1u64 << (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58);
            sig.all |= bit;
            if !k.shared {
                sig.exclusive |= bit;
            }
        }
        sig
    }

    fn may_clash(self, other: Sig) -> bool {
        (self.exclusive & other.all) | (self.all & other.exclusive) != 0
    }
}

impl Seen {
    /// [`clash`], screened by the signatures.
    fn clashes(&self, request: &LockRequest, sig: Sig) -> bool {
        self.sig.may_clash(sig) && clash(&self.request, request)
    }
}

impl Clone for History {
    fn clone(&self) -> Self {
        History {
            next_arrival: self.next_arrival,
            waiting: self.waiting.clone(),
            held: self.held.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.next_arrival = source.next_arrival;
        self.waiting.clone_from(&source.waiting);
        self.held.clone_from(&source.held);
    }
}

/// Requests by their cached digests (a function of their keys).
impl Hash for History {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.next_arrival.hash(h);
        self.waiting.len().hash(h);
        for w in &self.waiting {
            w.arrival.hash(h);
            w.rid.hash(h);
            w.request.digest().hash(h);
        }
        self.held.len().hash(h);
        for held in &self.held {
            held.rid.hash(h);
            held.request.digest().hash(h);
        }
    }
}

impl History {
    fn admitted(&mut self, rid: RequestId, request: LockRequest) {
        self.next_arrival += 1;
        self.waiting.push(Seen {
            arrival: self.next_arrival,
            rid,
            sig: Sig::of(&request),
            request,
        });
    }

    /// A grant of a waiting request (`arrival` known) or of a try-acquire.
    fn granted(
        &mut self,
        cx: &mut Cx<LocksWorld>,
        rid: RequestId,
        try_request: Option<LockRequest>,
    ) {
        // The waiters that arrived before this request: all of them for a
        // try-acquire, those before it in the queue for a waiter.
        let (earlier, request, sig) = match try_request {
            Some(r) => {
                self.next_arrival += 1;
                let sig = Sig::of(&r);
                (self.waiting.len(), r, sig)
            }
            None => {
                let Some(i) = self.waiting.iter().position(|w| w.rid == rid) else {
                    cx.violate(
                        EXCLUSION,
                        format!("{rid} granted but never admitted as waiting"),
                    );
                    return;
                };
                let w = self.waiting.remove(i);
                (i, w.request, w.sig)
            }
        };
        if let Some(Seen {
            rid: h,
            request: hr,
            ..
        }) = self.held.iter().find(|h| h.clashes(&request, sig))
        {
            cx.violate(
                EXCLUSION,
                format!("{rid} {request} granted while {h} {hr} holds a conflicting key"),
            );
        }
        if let Some(Seen {
            rid: w,
            request: wr,
            ..
        }) = self.waiting[..earlier]
            .iter()
            .find(|w| w.clashes(&request, sig))
        {
            cx.violate(
                FIFO,
                format!(
                    "{rid} {request} granted while earlier {w} {wr} waits on a conflicting key"
                ),
            );
        }
        let at = self.held.partition_point(|h| h.rid < rid);
        let seen = Seen {
            arrival: 0,
            rid,
            request,
            sig,
        };
        if self.held.get(at).is_some_and(|h| h.rid == rid) {
            self.held[at] = seen;
        } else {
            self.held.insert(at, seen);
        }
    }

    fn released(&mut self, rid: RequestId) {
        if let Ok(i) = self.held.binary_search_by(|h| h.rid.cmp(&rid)) {
            self.held.remove(i);
        }
    }

    fn cancelled(&mut self, rid: RequestId) {
        if let Some(i) = self.waiting.iter().position(|w| w.rid == rid) {
            self.waiting.remove(i);
        }
    }
}

/// The locks world.
#[derive(Debug, Hash)]
pub struct LocksWorld {
    p: Shared<Params>,
    server: NodeId,
    table: LockTable,
    clients: Vec<Client>,
    sessions: Vec<Session>,
    /// Table request <-> (client, client request id), sorted by table
    /// request.
    requests: Vec<(RequestId, u32, Crid)>,
    /// Last delivery time per client link, up and down (keeps links FIFO).
    link_up: Vec<Time>,
    link_down: Vec<Time>,
    history: History,
}

impl Clone for LocksWorld {
    fn clone(&self) -> Self {
        LocksWorld {
            p: self.p.clone(),
            server: self.server,
            table: self.table.clone(),
            clients: self.clients.clone(),
            sessions: self.sessions.clone(),
            requests: self.requests.clone(),
            link_up: self.link_up.clone(),
            link_down: self.link_down.clone(),
            history: self.history.clone(),
        }
    }

    /// Field by field into this world's buffers (the explorer recycles
    /// worlds).
    fn clone_from(&mut self, source: &Self) {
        self.p.clone_from(&source.p);
        self.server = source.server;
        self.table.clone_from(&source.table);
        self.clients.clone_from(&source.clients);
        self.sessions.clone_from(&source.sessions);
        self.requests.clone_from(&source.requests);
        self.link_up.clone_from(&source.link_up);
        self.link_down.clone_from(&source.link_down);
        self.history.clone_from(&source.history);
    }
}

fn owner(client: u32, incarnation: u32) -> OwnerId {
    OwnerId((u64::from(client) << 32) | u64::from(incarnation))
}

impl LocksWorld {
    /// A world for `w`, with the table flawed as `mutant` says.
    pub fn new(w: &LocksWorkload, mutant: Option<&'static MutantInfo>) -> LocksWorld {
        let flaw = mutant.map(|m| match m.name {
            "ignore-earlier-waiters" => LockFlaw::IgnoreEarlierWaiters,
            "shared-in-identity" => LockFlaw::SharedInIdentity,
            "lost-wakeup" => LockFlaw::LostWakeup,
            other => unreachable!("mutant {other} is not a locks mutant"),
        });
        let n = w.clients as usize;
        LocksWorld {
            p: Shared::new(Params {
                clients: w.clients,
                rounds: w.rounds,
                keys: w.keys.space(),
                try_ppm: ppm(w.try_ratio),
                think_us: us(w.think_ms),
                hold_us: us(w.hold_ms),
                patience_us: us(w.patience_ms),
                net_us: us(w.net_delay_ms),
                session_timeout_us: w.session_timeout_ms * 1000,
                restart_us: us(w.restart_ms),
                slow_factor: u64::from(w.slow_release_factor),
            }),
            server: NodeId(0),
            table: LockTable::with_flaw(flaw),
            clients: Vec::with_capacity(n),
            sessions: vec![
                Session {
                    incarnation: 0,
                    open: true
                };
                n
            ],
            requests: Vec::new(),
            link_up: vec![Time::ZERO; n],
            link_down: vec![Time::ZERO; n],
            history: History::default(),
        }
    }

    fn delay(&self, cx: &mut Cx<Self>) -> u64 {
        cx.between(self.p.net_us.0, self.p.net_us.1)
    }

    /// Client -> server, FIFO per link.
    fn send_up(&mut self, cx: &mut Cx<Self>, client: u32, msg: Up) {
        let d = self.delay(cx);
        let at = fifo_time(&mut self.link_up[client as usize], cx.now(), d);
        let incarnation = cx.incarnation(self.clients[client as usize].node);
        cx.node_at(
            self.server,
            at,
            LocksEvent::Up {
                client,
                incarnation,
                msg,
            },
        );
    }

    /// Server -> client, FIFO per link, to the client's current incarnation.
    fn send_down(&mut self, cx: &mut Cx<Self>, client: u32, msg: Down) {
        let d = self.delay(cx);
        let at = fifo_time(&mut self.link_down[client as usize], cx.now(), d);
        cx.node_at(
            self.clients[client as usize].node,
            at,
            LocksEvent::Down { client, msg },
        );
    }

    fn think(&mut self, cx: &mut Cx<Self>, client: u32) {
        let d = cx.between(self.p.think_us.0, self.p.think_us.1);
        cx.node_after(
            self.clients[client as usize].node,
            d,
            LocksEvent::Wake { client },
        );
    }

    fn round_done(&mut self, cx: &mut Cx<Self>, client: u32) {
        let c = &mut self.clients[client as usize];
        c.rounds_done += 1;
        c.state = ClientState::Idle;
        self.think(cx, client);
    }

    fn random_request(&self, cx: &mut Cx<Self>) -> LockRequest {
        self.p.keys.draw_request(cx)
    }

    /// A client event is an opportunity for the client to fail.
    fn maybe_fail(&mut self, cx: &mut Cx<Self>, client: u32) -> bool {
        if !cx.fault_at(
            F_CLIENT_FAIL,
            "client_event",
            &[("client", u64::from(client) + 1)],
        ) {
            return false;
        }
        let node = self.clients[client as usize].node;
        let incarnation = cx.incarnation(node);
        cx.crash(node);
        self.clients[client as usize].state = ClientState::Down;
        cx.node_after(
            self.server,
            self.p.session_timeout_us,
            LocksEvent::SessionExpired {
                client,
                incarnation,
            },
        );
        let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
        cx.env_after(d, LocksEvent::Restart { client });
        true
    }

    fn on_client(&mut self, cx: &mut Cx<Self>, event: LocksEvent) {
        let client = match &event {
            LocksEvent::Wake { client }
            | LocksEvent::GiveUp { client, .. }
            | LocksEvent::ReleaseDue { client, .. }
            | LocksEvent::Down { client, .. } => *client,
            _ => unreachable!("not a client event"),
        };
        let state = self.clients[client as usize].state;
        if state == ClientState::Done || self.maybe_fail(cx, client) {
            return;
        }
        match (event, state) {
            (LocksEvent::Wake { .. }, ClientState::Idle) => {
                let c = &mut self.clients[client as usize];
                if c.rounds_done >= self.p.rounds {
                    c.state = ClientState::Done;
                    cx.note(LocksNote::Done { client });
                    return;
                }
                c.next_crid += 1;
                let crid = c.next_crid;
                let blocking = !cx.chance(self.p.try_ppm);
                let request = self.random_request(cx);
                self.clients[client as usize].state = ClientState::Pending { crid, blocking };
                self.send_up(
                    cx,
                    client,
                    Up::Acquire {
                        crid,
                        request,
                        blocking,
                    },
                );
                if blocking
                    && cx.fault_at(F_CANCEL, "acquire", &[("client", u64::from(client) + 1)])
                {
                    let d = cx.between(self.p.patience_us.0, self.p.patience_us.1);
                    cx.node_after(
                        self.clients[client as usize].node,
                        d,
                        LocksEvent::GiveUp { client, crid },
                    );
                }
            }
            (
                LocksEvent::GiveUp { crid, .. },
                ClientState::Pending {
                    crid: p,
                    blocking: true,
                },
            ) if crid == p => {
                self.clients[client as usize].state = ClientState::Cancelling { crid };
                self.send_up(cx, client, Up::Cancel { crid });
            }
            (LocksEvent::ReleaseDue { crid, .. }, ClientState::Holding { crid: h })
                if crid == h =>
            {
                self.send_up(cx, client, Up::Release { crid });
                self.round_done(cx, client);
            }
            (LocksEvent::Down { msg, .. }, state) => self.on_reply(cx, client, msg, state),
            // A stale timer (the request it was for has moved on).
            _ => {}
        }
    }

    fn on_reply(&mut self, cx: &mut Cx<Self>, client: u32, msg: Down, state: ClientState) {
        match (msg, state) {
            (Down::Granted { crid }, ClientState::Pending { crid: p, .. }) if crid == p => {
                let mut hold = cx.between(self.p.hold_us.0, self.p.hold_us.1);
                if cx.fault_at(
                    F_SLOW_RELEASE,
                    "grant",
                    &[("client", u64::from(client) + 1)],
                ) {
                    hold = hold.saturating_mul(self.p.slow_factor);
                }
                let c = &mut self.clients[client as usize];
                c.state = ClientState::Holding { crid };
                cx.node_after(c.node, hold, LocksEvent::ReleaseDue { client, crid });
            }
            (Down::Granted { crid }, ClientState::Cancelling { crid: p }) if crid == p => {
                // Granted before the cancel arrived: give the keys back now.
                self.clients[client as usize].state = ClientState::Draining { crid };
                self.send_up(cx, client, Up::Release { crid });
            }
            (Down::TryFailed { crid }, ClientState::Pending { crid: p, .. })
            | (Down::Cancelled { crid }, ClientState::Cancelling { crid: p })
            | (Down::CancelRefused { crid }, ClientState::Draining { crid: p })
                if crid == p =>
            {
                self.round_done(cx, client);
            }
            (msg, state) => unreachable!(
                "{}: reply {msg:?} in state {state:?}: the links are FIFO and sessions bound to incarnations",
                cname(client)
            ),
        }
    }

    fn on_server(&mut self, cx: &mut Cx<Self>, client: u32, incarnation: u32, msg: Up) {
        let session = self.sessions[client as usize];
        if incarnation > session.incarnation {
            // The client restarted before its old session expired.
            self.close_session(cx, client);
            self.sessions[client as usize] = Session {
                incarnation,
                open: true,
            };
        } else if incarnation < session.incarnation || !session.open {
            cx.note(LocksNote::Stale {
                client,
                incarnation,
            });
            return;
        }
        let who = owner(client, incarnation);
        match msg {
            Up::Acquire {
                crid,
                request,
                blocking: true,
            } => {
                let rid = self.table.acquire(who, request.clone());
                self.map(client, crid, rid);
                cx.note(LocksNote::Admitted { client, crid, rid });
                self.history.admitted(rid, request);
            }
            Up::Acquire {
                crid,
                request,
                blocking: false,
            } => match self.table.try_acquire(who, request.clone()) {
                Ok(rid) => {
                    self.map(client, crid, rid);
                    cx.note(LocksNote::Granted { client, crid, rid });
                    self.history.granted(cx, rid, Some(request));
                    self.send_down(cx, client, Down::Granted { crid });
                }
                Err(LockError::WouldBlock(_)) => {
                    self.send_down(cx, client, Down::TryFailed { crid })
                }
                Err(e) => unreachable!("try-acquire of a valid request: {e}"),
            },
            Up::Cancel { crid } => {
                let rid = self.rid_of(client, crid);
                match self.table.cancel(rid) {
                    Ok(()) => {
                        self.unmap(rid);
                        self.history.cancelled(rid);
                        self.send_down(cx, client, Down::Cancelled { crid });
                    }
                    Err(LockError::NotWaiting(_)) => {
                        self.send_down(cx, client, Down::CancelRefused { crid });
                    }
                    Err(e) => unreachable!("cancel of a mapped request: {e}"),
                }
            }
            Up::Release { crid } => {
                let rid = self.rid_of(client, crid);
                match self.table.release(rid) {
                    Ok(()) => {
                        self.unmap(rid);
                        self.history.released(rid);
                    }
                    Err(e) => unreachable!("release of a granted request: {e}"),
                }
            }
        }
        self.drain(cx);
    }

    fn map(&mut self, client: u32, crid: Crid, rid: RequestId) {
        let at = self.requests.partition_point(|(r, _, _)| *r < rid);
        if self.requests.get(at).is_some_and(|(r, _, _)| *r == rid) {
            self.requests[at] = (rid, client, crid);
        } else {
            self.requests.insert(at, (rid, client, crid));
        }
    }

    fn unmap(&mut self, rid: RequestId) {
        if let Ok(i) = self.requests.binary_search_by(|(r, _, _)| r.cmp(&rid)) {
            self.requests.remove(i);
        }
    }

    /// The table request of a client's request (mapped, or a bug).
    fn rid_of(&self, client: u32, crid: Crid) -> RequestId {
        self.requests
            .iter()
            .find(|(_, c, q)| *c == client && *q == crid)
            .map(|(r, _, _)| *r)
            .expect("a mapped client request")
    }

    /// The client request of a table request (mapped, or a bug).
    fn client_of(&self, rid: RequestId) -> (u32, Crid) {
        let i = self
            .requests
            .binary_search_by(|(r, _, _)| r.cmp(&rid))
            .expect("a mapped table request");
        let (_, client, crid) = self.requests[i];
        (client, crid)
    }

    fn close_session(&mut self, cx: &mut Cx<Self>, client: u32) {
        let s = self.sessions[client as usize];
        if !s.open {
            return;
        }
        self.sessions[client as usize].open = false;
        let out = self.table.release_owner(owner(client, s.incarnation));
        for rid in &out.released {
            self.unmap(*rid);
            self.history.released(*rid);
        }
        for rid in &out.cancelled {
            self.unmap(*rid);
            self.history.cancelled(*rid);
        }
        cx.note(LocksNote::SessionClosed {
            client,
            incarnation: s.incarnation,
            released: out.released.len() as u32,
            cancelled: out.cancelled.len() as u32,
        });
    }

    /// Reports the table's grants.
    fn drain(&mut self, cx: &mut Cx<Self>) {
        while let Some(LockEvent::Granted {
            request: rid,
            owner,
        }) = self.table.poll_event()
        {
            self.history.granted(cx, rid, None);
            let (client, crid) = self.client_of(rid);
            let incarnation = (owner.0 & 0xffff_ffff) as u32;
            let node = self.clients[client as usize].node;
            if cx.is_up(node) && cx.incarnation(node) == incarnation {
                cx.note(LocksNote::Granted { client, crid, rid });
                self.send_down(cx, client, Down::Granted { crid });
            } else {
                cx.note(LocksNote::GrantToDeadSession { rid });
            }
        }
    }

    fn restart(&mut self, cx: &mut Cx<Self>, client: u32) {
        let node = self.clients[client as usize].node;
        if cx.is_up(node) {
            return;
        }
        cx.restart(node);
        self.clients[client as usize].state = ClientState::Idle;
        self.think(cx, client);
    }
}

/// The delivery time of a message on a FIFO link: after the delay, and
/// strictly after the previous message on the link (so no tie can reorder
/// the two).
fn fifo_time(last: &mut Time, now: Time, delay_us: u64) -> Time {
    let at =
        Time::from_micros(now.as_micros() + delay_us).max(Time::from_micros(last.as_micros() + 1));
    *last = at;
    at
}

impl Protocol for LocksWorld {
    type Event = LocksEvent;
    type Note = LocksNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    /// As `Hash`, but an acquire's request by its cached digest.
    fn fingerprint_event(event: &LocksEvent, h: &mut Fingerprinter) {
        match event {
            LocksEvent::Up {
                client,
                incarnation,
                msg:
                    Up::Acquire {
                        crid,
                        request,
                        blocking,
                    },
            } => {
                // A tag no derived hash starts with, then every field.
                u64::MAX.hash(h);
                (*client, *incarnation, *crid, *blocking, request.digest()).hash(h);
            }
            other => other.hash(h),
        }
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        self.server = cx.add_node("server");
        for client in 0..self.p.clients {
            let node = cx.add_node(cname(client));
            self.clients.push(Client {
                node,
                state: ClientState::Idle,
                rounds_done: 0,
                next_crid: 0,
            });
            self.think(cx, client);
        }
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, event: LocksEvent) {
        match event {
            LocksEvent::Up {
                client,
                incarnation,
                msg,
            } => self.on_server(cx, client, incarnation, msg),
            LocksEvent::SessionExpired {
                client,
                incarnation,
            } => {
                if self.sessions[client as usize].incarnation == incarnation {
                    self.close_session(cx, client);
                    self.drain(cx);
                }
            }
            LocksEvent::Restart { client } => self.restart(cx, client),
            e => self.on_client(cx, e),
        }
    }

    fn heal(&mut self, cx: &mut Cx<Self>) {
        for client in 0..self.p.clients {
            self.restart(cx, client);
        }
    }

    fn settled(&self) -> bool {
        self.table.is_idle() && self.clients.iter().all(|c| c.state == ClientState::Done)
    }

    fn coverage(&self) -> Vec<Coverage> {
        vec![self.table.coverage()]
    }

    fn route(&self, event: &LocksEvent) -> (String, String) {
        let server = || "server".to_owned();
        match event {
            LocksEvent::Wake { client }
            | LocksEvent::GiveUp { client, .. }
            | LocksEvent::ReleaseDue { client, .. }
            | LocksEvent::Restart { client } => (cname(*client), cname(*client)),
            LocksEvent::Up { client, .. } => (cname(*client), server()),
            LocksEvent::Down { client, .. } => (server(), cname(*client)),
            LocksEvent::SessionExpired { .. } => (server(), server()),
        }
    }

    fn check_liveness(&self, cx: &Cx<Self>) -> Option<(&'static str, String)> {
        if let Some(Seen { rid, request, .. }) = self.history.waiting.first() {
            let holders: Vec<String> = self
                .history
                .held
                .iter()
                .filter(|h| clash(&h.request, request))
                .map(|h| format!("{} {}", h.rid, h.request))
                .collect();
            return Some((
                EVENTUALLY_GRANTED,
                format!(
                    "{rid} {request} still waits at {}; conflicting holders: [{}]",
                    cx.now(),
                    holders.join(", ")
                ),
            ));
        }
        if let Some((i, c)) = self
            .clients
            .iter()
            .enumerate()
            .find(|(_, c)| c.state != ClientState::Done)
        {
            return Some((
                EVENTUALLY_GRANTED,
                format!(
                    "{} finished {}/{} rounds and is stuck in {:?}",
                    cname(i as u32),
                    c.rounds_done,
                    self.p.rounds,
                    c.state
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
    use simcast_machines::locks::{Domain, ResourceKey};

    fn request(keys: &[(usize, String, bool)]) -> LockRequest {
        LockRequest::new(
            keys.iter()
                .map(|(d, name, shared)| ResourceKey::new(Domain::ALL[*d], name.as_str(), *shared)),
        )
        .expect("a non-empty request")
    }

    proptest! {
        /// The signature screen never hides a clash: requests that clash
        /// have overlapping signatures, whatever the names.
        #[test]
        fn signatures_of_clashing_requests_overlap(
            a in prop::collection::vec((0usize..5, "[a-c:0-2]{0,10}", any::<bool>()), 1..5),
            b in prop::collection::vec((0usize..5, "[a-c:0-2]{0,10}", any::<bool>()), 1..5),
        ) {
            let (a, b) = (request(&a), request(&b));
            if clash(&a, &b) {
                prop_assert!(Sig::of(&a).may_clash(Sig::of(&b)));
            }
        }
    }

    /// The screen does screen: most pairs of distinct exclusive database
    /// keys are told apart without comparing names.
    #[test]
    fn signatures_tell_most_distinct_locks_apart() {
        let keys: Vec<LockRequest> = (0..8)
            .map(|i| request(&[(0, format!("db{i}"), false)]))
            .collect();
        let mut apart = 0;
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert!(!clash(a, b));
                apart += usize::from(!Sig::of(a).may_clash(Sig::of(b)));
            }
        }
        assert!(apart >= 20, "only {apart} of 28 pairs screened out");
        assert!(Sig::of(&keys[0]).may_clash(Sig::of(&keys[0])));
    }
}
