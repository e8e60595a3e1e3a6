//! The `tick` protocol: one owner of a `session -> clients` map, fed by a
//! bounded command queue from several sources, sending every session's value
//! to each of its clients on every tick.
//!
//! World:
//! - node `owner` hosting a [`TickBroadcaster`] (all state volatile). The
//!   owner's loop applies queued commands in batches of random size with a
//!   pause between batches, and fires ticks on time; when a tick is due it
//!   goes first. The owner may stall (a pause longer than a tick), after
//!   which a late tick skips the grid points it missed;
//! - sources `source-N` submitting commands (register, unregister, count,
//!   set value) for random sessions and clients, one at a time or in bursts
//!   that fill the queue; a refused submit is retried later;
//! - clients `client-N` receiving the sends over FIFO links. A slow client
//!   drains its link slowly; once too many sends are in flight to it, its
//!   connection handler evicts it (unregisters it from every session it is
//!   in) and it reconnects (registers again) later. A client may also
//!   disconnect, with the same effect. So registrations and unregistrations
//!   come from several places, interleaved with ticks.
//!
//! Invariants, against the world's own model of `session -> clients` and
//! values, updated from each command as it is answered (in submission
//! order):
//! - `tick.barrier_consistent`: replies come in submission order, each
//!   after every earlier command; a count matches the model, and so do the
//!   other answers (registered or session full, was registered or not);
//! - `tick.every_client_each_tick`: each tick sends every registered client
//!   of every session the session's current value, exactly once, and
//!   nothing to anybody else; while anyone is registered a tick fires at
//!   least every tick interval (plus the longest owner stall);
//! - `tick.no_send_after_unregister`: once an unregister is applied, the
//!   client is sent nothing more for that session (until registered again).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use core::time::Duration;
use serde::{Deserialize, Serialize};
use simcast_machines::coverage::Coverage;
use simcast_machines::tick::{
    Answer, ClientId, Command, CommandId, Output, SessionId, TRANSITIONS, TickBroadcaster,
    TickConfig, TickError, TickFlaw,
};
use simcast_machines::time::Time;

use crate::engine::{Cx, NodeId, Protocol};
use crate::faults::ppm;
use crate::protocols::checks::{self, us};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

const NO_SEND_AFTER_UNREGISTER: &str = "tick.no_send_after_unregister";
const EVERY_CLIENT: &str = "tick.every_client_each_tick";
const BARRIER: &str = "tick.barrier_consistent";

/// Names of the tick protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "tick",
    doc: "tick broadcaster: one owner of session -> clients, a bounded command queue, barrier counts, periodic fanout",
    invariants: &[
        InvariantInfo {
            name: NO_SEND_AFTER_UNREGISTER,
            kind: InvariantKind::Safety,
            doc: "once its unregister is applied, a client is sent nothing more for that session",
        },
        InvariantInfo {
            name: EVERY_CLIENT,
            kind: InvariantKind::Safety,
            doc: "each tick sends every registered client each of its sessions' current value, once; ticks keep coming while anyone is registered",
        },
        InvariantInfo {
            name: BARRIER,
            kind: InvariantKind::Safety,
            doc: "every reply (a count above all) comes after all earlier commands are applied and matches them",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "eager-count",
            invariant: BARRIER,
            doc: "a count is answered at submit time from the state applied so far, ignoring queued commands",
        },
        MutantInfo {
            name: "lazy-unregister",
            invariant: NO_SEND_AFTER_UNREGISTER,
            doc: "an unregistered client is still sent the next tick's value",
        },
    ],
    faults: &[
        FaultInfo {
            name: "burst",
            doc: "a source submits `burst` commands at once",
        },
        FaultInfo {
            name: "slow_client",
            doc: "a client drains its link slowly for slow_ms (it may be evicted)",
        },
        FaultInfo {
            name: "client_disconnect",
            doc: "a client disconnects: its connection handler unregisters it everywhere; it reconnects later",
        },
        FaultInfo {
            name: "owner_stall",
            doc: "the owner stalls for stall_ms (ticks due meanwhile fire late, once)",
        },
    ],
    sites: &[
        SiteInfo {
            name: "source_wake",
            doc: "a source is about to submit (source 1 = source-1)",
            params: &["source"],
            faults: &["burst"],
        },
        SiteInfo {
            name: "client_receive",
            doc: "a client receives a value (client 1 = c1)",
            params: &["client"],
            faults: &["slow_client", "client_disconnect"],
        },
        SiteInfo {
            name: "owner_event",
            doc: "the owner is about to apply a batch of commands or fire a tick",
            params: &[],
            faults: &["owner_stall"],
        },
    ],
    machines: &[("tick broadcaster", TRANSITIONS)],
    unreachable: &[],
};

const F_BURST: usize = 0;
const F_SLOW: usize = 1;
const F_DISCONNECT: usize = 2;
const F_STALL: usize = 3;

/// The `[workload]` table of a tick scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickWorkload {
    /// Sessions, `s1`...
    pub sessions: u32,
    /// Clients, `c1`...
    pub clients: u32,
    /// Sources submitting commands.
    pub sources: u32,
    /// Commands each source submits.
    pub commands: u32,
    /// Pause between a source's submits.
    pub think_ms: [u64; 2],
    /// Probability that a source's command is a register...
    #[serde(default = "default_register")]
    pub register_ratio: f64,
    /// ...an unregister...
    #[serde(default = "default_unregister")]
    pub unregister_ratio: f64,
    /// ...a count (the rest set values).
    #[serde(default = "default_count")]
    pub count_ratio: f64,
    /// The tick interval.
    pub tick_ms: u64,
    /// The command queue's capacity.
    pub queue_capacity: usize,
    /// Clients per session.
    pub max_clients_per_session: usize,
    /// The owner's pause between batches of commands.
    pub process_ms: [u64; 2],
    /// The most commands in one batch.
    pub batch: u32,
    /// One-way delay from a source or the owner.
    pub net_ms: [u64; 2],
    /// Commands in a burst (fault `burst`).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// How long a slow client stays slow.
    pub slow_ms: [u64; 2],
    /// How long a slow client takes per value.
    pub slow_cost_ms: u64,
    /// A client with more values than this in flight is evicted.
    pub evict_backlog: u32,
    /// How long an evicted or disconnected client stays away.
    pub reconnect_ms: [u64; 2],
    /// How long an owner stall lasts.
    pub stall_ms: [u64; 2],
}

fn default_register() -> f64 {
    0.4
}
fn default_unregister() -> f64 {
    0.25
}
fn default_count() -> f64 {
    0.2
}
fn default_burst() -> u32 {
    16
}

impl TickWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        checks::at_least_one(&[
            ("sessions", u64::from(self.sessions)),
            ("clients", u64::from(self.clients)),
            ("sources", u64::from(self.sources)),
            ("commands", u64::from(self.commands)),
            ("tick_ms", self.tick_ms),
            ("queue_capacity", self.queue_capacity as u64),
            (
                "max_clients_per_session",
                self.max_clients_per_session as u64,
            ),
            ("batch", u64::from(self.batch)),
            ("burst", u64::from(self.burst)),
            ("evict_backlog", u64::from(self.evict_backlog)),
        ])?;
        for (key, v) in [
            ("sessions", self.sessions),
            ("clients", self.clients),
            ("sources", self.sources),
        ] {
            if v > 64 {
                return Err(format!("`{key}` must be at most 64"));
            }
        }
        checks::probabilities(&[
            ("register_ratio", self.register_ratio),
            ("unregister_ratio", self.unregister_ratio),
            ("count_ratio", self.count_ratio),
        ])?;
        if self.register_ratio + self.unregister_ratio + self.count_ratio > 1.0 {
            return Err(
                "`register_ratio` + `unregister_ratio` + `count_ratio` must be at most 1"
                    .to_owned(),
            );
        }
        checks::ranges(&[
            ("think_ms", self.think_ms),
            ("process_ms", self.process_ms),
            ("net_ms", self.net_ms),
            ("slow_ms", self.slow_ms),
            ("reconnect_ms", self.reconnect_ms),
            ("stall_ms", self.stall_ms),
        ])?;
        if self.process_ms[0] == 0 {
            return Err("`process_ms` must be at least 1 ms".to_owned());
        }
        if self.think_ms[1] == 0 {
            return Err("`think_ms` must allow a pause of at least 1 ms".to_owned());
        }
        Ok(())
    }
}

/// The workload in engine units, hashable.
#[derive(Clone, Debug, Hash)]
struct Params {
    cfg: TickConfig,
    sessions: u32,
    clients: u32,
    sources: u32,
    commands: u32,
    think_us: (u64, u64),
    /// The command mix as a chain of decisions: register, else unregister,
    /// else count, else set a value (each conditional on the previous
    /// ones failing, so every decision has two alternatives).
    register_ppm: u32,
    unregister_ppm: u32,
    count_ppm: u32,
    tick_us: u64,
    process_us: (u64, u64),
    batch: u32,
    net_us: (u64, u64),
    burst: u32,
    slow_us: (u64, u64),
    slow_cost_us: u64,
    evict_backlog: u32,
    reconnect_us: (u64, u64),
    stall_us: (u64, u64),
}

/// The probability of `p` given that an event of probability `before` did
/// not happen (1 if nothing is left).
fn conditional(p: f64, before: f64) -> f64 {
    let left = 1.0 - before;
    if left <= 0.0 {
        1.0
    } else {
        (p / left).clamp(0.0, 1.0)
    }
}

/// Where a command comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A source (0-based).
    Source(u32),
    /// The connection handler of an evicted client (0-based index).
    Evict(u32),
    /// The connection handler of a disconnected client.
    Disconnect(u32),
    /// A client reconnecting.
    Reconnect(u32),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Source(s) => write!(f, "source-{}", s + 1),
            Origin::Evict(c) => write!(f, "eviction of c{}", c + 1),
            Origin::Disconnect(c) => write!(f, "disconnect of c{}", c + 1),
            Origin::Reconnect(c) => write!(f, "reconnect of c{}", c + 1),
        }
    }
}

struct CommandShow(Command);

impl fmt::Display for CommandShow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Command::Register { session, client } => write!(f, "register {client} in {session}"),
            Command::Unregister { session, client } => {
                write!(f, "unregister {client} from {session}")
            }
            Command::Count {
                session: Some(session),
            } => write!(f, "count {session}"),
            Command::Count { session: None } => f.write_str("count all"),
            Command::SetValue { session, value } => write!(f, "set {session} = {value}"),
        }
    }
}

/// Events of the tick world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TickEvent {
    /// A source's next submit.
    SourceWake {
        /// The source.
        source: u32,
    },
    /// A command reaches the owner's queue.
    Submit {
        /// Who sent it.
        origin: Origin,
        /// What.
        command: Command,
        /// Earlier refusals of this command (the sender backs off).
        attempt: u32,
    },
    /// The owner applies its next batch.
    Process,
    /// The owner's tick timer.
    Timer,
    /// A value reaches a client.
    Receive {
        /// The client (0-based).
        client: u32,
        /// The session.
        session: SessionId,
        /// The tick it was sent at.
        tick: u64,
        /// The value.
        value: i64,
    },
    /// An evicted or disconnected client comes back.
    Reconnect {
        /// The client (0-based).
        client: u32,
    },
}

impl fmt::Display for TickEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TickEvent::SourceWake { source } => write!(f, "source-{} wakes", source + 1),
            TickEvent::Submit {
                origin, command, ..
            } => {
                write!(
                    f,
                    "owner queue gets {} from {origin}",
                    CommandShow(*command)
                )
            }
            TickEvent::Process => f.write_str("owner applies a batch"),
            TickEvent::Timer => f.write_str("owner tick timer"),
            TickEvent::Receive {
                client,
                session,
                tick,
                value,
            } => write!(f, "c{} gets {session} = {value} (tick {tick})", client + 1),
            TickEvent::Reconnect { client } => write!(f, "c{} reconnects", client + 1),
        }
    }
}

/// What the tick world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TickNote {
    /// A command was queued.
    Queued {
        /// Its id.
        id: CommandId,
    },
    /// The queue was full; the sender retries.
    QueueFull,
    /// A command was answered.
    Replied {
        /// Its id.
        id: CommandId,
        /// The answer.
        result: Result<Answer, TickError>,
    },
    /// A tick fired.
    Tick {
        /// Its grid index.
        tick: u64,
        /// Values sent.
        sends: u32,
    },
    /// The owner stalls until the given time.
    Stalled {
        /// Until when.
        until: Time,
    },
    /// A client is evicted (or disconnected) from its sessions.
    Gone {
        /// The client (0-based).
        client: u32,
        /// Sessions it is unregistered from.
        sessions: u32,
    },
}

impl fmt::Display for TickNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TickNote::Queued { id } => write!(f, "queued as {id}"),
            TickNote::QueueFull => f.write_str("queue full: refused, will retry"),
            TickNote::Replied { id, result } => write!(f, "{id} answered {result:?}"),
            TickNote::Tick { tick, sends } => write!(f, "tick {tick}: {sends} values sent"),
            TickNote::Stalled { until } => write!(f, "owner stalls until {until}"),
            TickNote::Gone { client, sessions } => {
                write!(f, "c{} leaves {sessions} sessions", client + 1)
            }
        }
    }
}

/// A client and its link.
#[derive(Clone, Debug, Hash)]
struct Client {
    /// Values sent to it and not yet received.
    in_flight: u32,
    /// When the last value on its link arrives (keeps the link FIFO).
    last_arrival: Time,
    /// Slow until this time.
    slow_until: Time,
    connected: bool,
}

/// The tick being checked while its sends are drained.
#[derive(Clone, Debug, Hash)]
struct OpenTick {
    tick: u64,
    /// Pairs sent so far in this tick.
    sent: BTreeSet<(SessionId, ClientId)>,
}

/// The tick world.
#[derive(Clone, Debug, Hash)]
pub struct TickWorld {
    p: Params,
    owner_node: NodeId,
    owner: TickBroadcaster,
    stalled_until: Time,
    process_scheduled: bool,
    /// Times at which a timer event is queued.
    timers: BTreeSet<Time>,
    /// Per source: commands submitted so far.
    issued: Vec<u32>,
    clients: Vec<Client>,
    /// Submits and reconnects not yet arrived or retried.
    in_transit: u32,
    /// Commands queued and not yet answered, by id.
    pending: BTreeMap<CommandId, (Origin, Command)>,
    /// The model, as applied: session -> clients, and values.
    model: BTreeMap<SessionId, BTreeSet<ClientId>>,
    values: BTreeMap<SessionId, i64>,
    /// Pairs unregistered (and not registered again since).
    unregistered: BTreeSet<(SessionId, ClientId)>,
    /// Since when the model has had a client, if it has.
    audience_since: Option<Time>,
    last_tick: Option<(u64, Time)>,
    open_tick: Option<OpenTick>,
}

fn cid(client: u32) -> ClientId {
    ClientId(u64::from(client) + 1)
}

impl TickWorld {
    /// A world for `w`, with the mutant applied.
    pub fn new(w: &TickWorkload, mutant: Option<&'static MutantInfo>) -> TickWorld {
        let flaw = mutant.map(|m| match m.name {
            "eager-count" => TickFlaw::EagerCount,
            "lazy-unregister" => TickFlaw::LazyUnregister,
            other => unreachable!("mutant {other} is not a tick mutant"),
        });
        let cfg = TickConfig {
            tick_interval: Duration::from_millis(w.tick_ms),
            queue_capacity: w.queue_capacity,
            max_clients_per_session: w.max_clients_per_session,
            flaw,
        };
        TickWorld {
            p: Params {
                cfg,
                sessions: w.sessions,
                clients: w.clients,
                sources: w.sources,
                commands: w.commands,
                think_us: us(w.think_ms),
                register_ppm: ppm(w.register_ratio),
                unregister_ppm: ppm(conditional(w.unregister_ratio, w.register_ratio)),
                count_ppm: ppm(conditional(
                    w.count_ratio,
                    w.register_ratio + w.unregister_ratio,
                )),
                tick_us: w.tick_ms.saturating_mul(1000),
                process_us: us(w.process_ms),
                batch: w.batch,
                net_us: us(w.net_ms),
                burst: w.burst,
                slow_us: us(w.slow_ms),
                slow_cost_us: w.slow_cost_ms.saturating_mul(1000),
                evict_backlog: w.evict_backlog,
                reconnect_us: us(w.reconnect_ms),
                stall_us: us(w.stall_ms),
            },
            owner_node: NodeId(0),
            owner: TickBroadcaster::new(cfg, Time::ZERO),
            stalled_until: Time::ZERO,
            process_scheduled: false,
            timers: BTreeSet::new(),
            issued: Vec::new(),
            clients: Vec::new(),
            in_transit: 0,
            pending: BTreeMap::new(),
            model: BTreeMap::new(),
            values: BTreeMap::new(),
            unregistered: BTreeSet::new(),
            audience_since: None,
            last_tick: None,
            open_tick: None,
        }
    }

    fn net(&self, cx: &mut Cx<Self>) -> u64 {
        cx.between(self.p.net_us.0, self.p.net_us.1)
    }

    fn submit_later(&mut self, cx: &mut Cx<Self>, origin: Origin, command: Command, delay: u64) {
        self.resubmit(cx, origin, command, delay, 0);
    }

    fn resubmit(
        &mut self,
        cx: &mut Cx<Self>,
        origin: Origin,
        command: Command,
        delay: u64,
        attempt: u32,
    ) {
        self.in_transit += 1;
        cx.node_after(
            self.owner_node,
            delay,
            TickEvent::Submit {
                origin,
                command,
                attempt,
            },
        );
    }

    // ----- sources -----------------------------------------------------------

    fn random_command(&self, cx: &mut Cx<Self>) -> Command {
        let session = SessionId(u64::from(cx.choose(self.p.sessions)) + 1);
        let client = cid(cx.choose(self.p.clients));
        if cx.chance(self.p.register_ppm) {
            Command::Register { session, client }
        } else if cx.chance(self.p.unregister_ppm) {
            Command::Unregister { session, client }
        } else if cx.chance(self.p.count_ppm) {
            Command::Count {
                session: (cx.choose(3) != 0).then_some(session),
            }
        } else {
            Command::SetValue {
                session,
                value: i64::from(cx.choose(16)) * 10 - 70,
            }
        }
    }

    fn on_source_wake(&mut self, cx: &mut Cx<Self>, source: u32) {
        if self.issued[source as usize] >= self.p.commands {
            return;
        }
        let n = if cx.fault_at(F_BURST, "source_wake", &[("source", u64::from(source) + 1)]) {
            self.p.burst
        } else {
            1
        };
        for _ in 0..n {
            let command = self.random_command(cx);
            let d = self.net(cx);
            self.submit_later(cx, Origin::Source(source), command, d);
        }
        self.issued[source as usize] += 1;
        let d = cx.between(self.p.think_us.0, self.p.think_us.1);
        cx.env_after(d, TickEvent::SourceWake { source });
    }

    // ----- the owner ---------------------------------------------------------

    fn on_submit(&mut self, cx: &mut Cx<Self>, origin: Origin, command: Command, attempt: u32) {
        self.in_transit -= 1;
        match self.owner.submit(command) {
            Ok(id) => {
                cx.note(TickNote::Queued { id });
                self.pending.insert(id, (origin, command));
                if !self.process_scheduled {
                    self.process_scheduled = true;
                    let d = cx.between(self.p.process_us.0, self.p.process_us.1);
                    cx.node_after(self.owner_node, d, TickEvent::Process);
                }
            }
            Err(_) => {
                cx.count("submit.refused");
                cx.note(TickNote::QueueFull);
                // Back off: twice as long after each refusal (at most 32x).
                let d =
                    cx.between(self.p.think_us.0, self.p.think_us.1).max(1_000) << attempt.min(5);
                self.resubmit(cx, origin, command, d, attempt + 1);
            }
        }
        self.drain(cx);
    }

    /// Whether the owner is stalled; if so the event comes back when the
    /// stall ends.
    fn deferred(&mut self, cx: &mut Cx<Self>, event: TickEvent) -> bool {
        if cx.now() >= self.stalled_until {
            return false;
        }
        let until = self.stalled_until;
        if event == TickEvent::Timer {
            self.timers.insert(until);
        }
        cx.node_at(self.owner_node, until, event);
        true
    }

    /// Fires the tick if one is due (a due tick goes before anything else
    /// the owner does).
    fn tick_if_due(&mut self, cx: &mut Cx<Self>) {
        if self.owner.poll_timeout().is_some_and(|at| at <= cx.now()) {
            self.owner.handle_timeout(cx.now());
            self.drain(cx);
        }
    }

    /// An owner event is an opportunity for the owner to stall.
    fn stalls(&mut self, cx: &mut Cx<Self>) -> bool {
        if !cx.fault_at(F_STALL, "owner_event", &[]) {
            return false;
        }
        let d = cx.between(self.p.stall_us.0, self.p.stall_us.1);
        self.stalled_until = Time::from_micros(cx.now().as_micros() + d);
        cx.note(TickNote::Stalled {
            until: self.stalled_until,
        });
        true
    }

    fn on_process(&mut self, cx: &mut Cx<Self>) {
        if self.deferred(cx, TickEvent::Process) {
            return;
        }
        self.tick_if_due(cx);
        if self.stalls(cx) {
            self.deferred(cx, TickEvent::Process);
            return;
        }
        let n = cx.between(1, u64::from(self.p.batch));
        for _ in 0..n {
            if !self.owner.process_next(cx.now()) {
                break;
            }
        }
        self.drain(cx);
        if self.owner.queue_len() > 0 {
            let d = cx.between(self.p.process_us.0, self.p.process_us.1);
            cx.node_after(self.owner_node, d, TickEvent::Process);
        } else {
            self.process_scheduled = false;
        }
    }

    fn on_timer(&mut self, cx: &mut Cx<Self>) {
        let now = cx.now();
        self.timers.remove(&now);
        if self.deferred(cx, TickEvent::Timer) {
            return;
        }
        // Fires the due tick; a spurious timer (the tick already fired, or
        // nobody is registered any more) does nothing.
        self.owner.handle_timeout(now);
        self.drain(cx);
        self.stalls(cx);
    }

    /// Carries out the owner's outputs, checking each against the model.
    fn drain(&mut self, cx: &mut Cx<Self>) {
        while let Some(out) = self.owner.poll_output() {
            match out {
                Output::Reply { command, result } => self.on_reply(cx, command, result),
                Output::Tick { tick, at } => {
                    self.close_tick(cx);
                    self.on_tick(cx, tick, at);
                }
                Output::Send {
                    tick,
                    client,
                    session,
                    value,
                } => self.on_send(cx, tick, client, session, value),
            }
        }
        self.close_tick(cx);
        if let Some(due) = self.owner.poll_timeout().map(|t| t.max(cx.now()))
            && self.timers.first().is_none_or(|first| due < *first)
        {
            self.timers.insert(due);
            cx.node_at(self.owner_node, due, TickEvent::Timer);
        }
    }

    /// A reply: `barrier_consistent`, then the model applies the command.
    fn on_reply(&mut self, cx: &mut Cx<Self>, id: CommandId, result: Result<Answer, TickError>) {
        cx.note(TickNote::Replied { id, result });
        let Some((&first, _)) = self.pending.first_key_value() else {
            cx.violate(BARRIER, format!("{id} answered but nothing is pending"));
            return;
        };
        if first != id {
            let what = self
                .pending
                .get(&id)
                .map_or("an unknown command".to_owned(), |(_, c)| {
                    CommandShow(*c).to_string()
                });
            cx.violate(
                BARRIER,
                format!(
                    "{id} ({what}) answered {result:?} before earlier {first} ({}) was applied",
                    CommandShow(self.pending[&first].1)
                ),
            );
            return;
        }
        let (_, command) = self.pending.remove(&id).expect("first");
        let limit = self.p.cfg.max_clients_per_session;
        let problem = match (command, result) {
            (Command::Register { session, client }, Ok(Answer::Registered)) => {
                let clients = self.model.entry(session).or_default();
                let fits = clients.contains(&client) || clients.len() < limit;
                clients.insert(client);
                self.unregistered.remove(&(session, client));
                (!fits).then(|| format!("{session} is full ({limit}) yet {client} registered"))
            }
            (
                Command::Register { session, client },
                Err(TickError::SessionFull { session: s, .. }),
            ) => {
                let clients = self.model.get(&session);
                let full = s == session
                    && clients.is_some_and(|c| !c.contains(&client) && c.len() >= limit);
                (!full).then(|| format!("{client} refused from {session}, which is not full"))
            }
            (
                Command::Unregister { session, client },
                Ok(Answer::Unregistered { was_registered }),
            ) => {
                let was = self
                    .model
                    .get_mut(&session)
                    .is_some_and(|c| c.remove(&client));
                if self.model.get(&session).is_some_and(BTreeSet::is_empty) {
                    self.model.remove(&session);
                }
                if was {
                    self.unregistered.insert((session, client));
                }
                (was != was_registered).then(|| {
                    format!("unregister of {client} from {session} says was_registered = {was_registered}, the model {was}")
                })
            }
            (Command::Count { session }, Ok(Answer::Count(n))) => {
                let expected = match session {
                    Some(s) => self.model.get(&s).map_or(0, BTreeSet::len),
                    None => self.model.values().map(BTreeSet::len).sum(),
                };
                (n != expected).then(|| {
                    format!(
                        "{id} ({}) answered {n}, but the commands applied before it leave {expected}",
                        CommandShow(command)
                    )
                })
            }
            (Command::SetValue { session, value }, Ok(Answer::ValueSet)) => {
                self.values.insert(session, value);
                None
            }
            (command, result) => Some(format!(
                "{id} ({}) answered {result:?}",
                CommandShow(command)
            )),
        };
        if let Some(problem) = problem {
            cx.violate(BARRIER, problem);
        }
        match (self.model.is_empty(), self.audience_since) {
            (false, None) => self.audience_since = Some(cx.now()),
            (true, Some(_)) => self.audience_since = None,
            _ => {}
        }
    }

    fn on_tick(&mut self, cx: &mut Cx<Self>, tick: u64, at: Time) {
        if at != cx.now() {
            cx.violate(
                EVERY_CLIENT,
                format!("tick {tick} claims to fire at {at}, it is {}", cx.now()),
            );
        }
        if let Some((last, _)) = self.last_tick {
            if tick <= last {
                cx.violate(EVERY_CLIENT, format!("tick {tick} fires after tick {last}"));
            } else if tick > last + 1 {
                cx.count("tick.late");
            }
        }
        cx.count("tick.fired");
        self.last_tick = Some((tick, cx.now()));
        self.open_tick = Some(OpenTick {
            tick,
            sent: BTreeSet::new(),
        });
    }

    /// A send: `no_send_after_unregister` and `every_client_each_tick`.
    fn on_send(
        &mut self,
        cx: &mut Cx<Self>,
        tick: u64,
        client: ClientId,
        session: SessionId,
        value: i64,
    ) {
        let pair = (session, client);
        let registered = self
            .model
            .get(&session)
            .is_some_and(|c| c.contains(&client));
        if !registered {
            if self.unregistered.contains(&pair) {
                cx.violate(
                    NO_SEND_AFTER_UNREGISTER,
                    format!(
                        "{client} is sent {session} at tick {tick} after its unregister was applied"
                    ),
                );
            } else {
                cx.violate(
                    EVERY_CLIENT,
                    format!(
                        "{client} is sent {session} at tick {tick} but was never registered there"
                    ),
                );
            }
        }
        match self.open_tick.as_mut() {
            Some(open) if open.tick == tick => {
                if !open.sent.insert(pair) {
                    cx.violate(
                        EVERY_CLIENT,
                        format!("{client} is sent {session} twice at tick {tick}"),
                    );
                }
            }
            _ => cx.violate(
                EVERY_CLIENT,
                format!("{client} is sent {session} for tick {tick}, which is not firing"),
            ),
        }
        let current = self.values.get(&session).copied().unwrap_or(0);
        if value != current {
            cx.violate(
                EVERY_CLIENT,
                format!("{client} is sent {session} = {value} at tick {tick}, but its value is {current}"),
            );
        }
        // The value travels to the client.
        let i = (client.0 - 1) as usize;
        let d = self.net(cx);
        let c = &mut self.clients[i];
        let cost = if cx.now() < c.slow_until {
            self.p.slow_cost_us
        } else {
            0
        };
        let at = Time::from_micros(
            (cx.now().as_micros() + d).max(c.last_arrival.as_micros() + cost.max(1)),
        );
        c.last_arrival = at;
        c.in_flight += 1;
        let evict = c.connected && c.in_flight > self.p.evict_backlog;
        cx.env_at(
            at,
            TickEvent::Receive {
                client: i as u32,
                session,
                tick,
                value,
            },
        );
        if evict {
            self.leave(cx, i as u32, Origin::Evict(i as u32));
        }
    }

    /// The tick's sends are over: every registered pair got one.
    fn close_tick(&mut self, cx: &mut Cx<Self>) {
        let Some(open) = self.open_tick.take() else {
            return;
        };
        cx.note(TickNote::Tick {
            tick: open.tick,
            sends: open.sent.len() as u32,
        });
        for (session, clients) in &self.model {
            for client in clients {
                if !open.sent.contains(&(*session, *client)) {
                    cx.violate(
                        EVERY_CLIENT,
                        format!(
                            "{client}, registered in {session}, is not sent tick {}",
                            open.tick
                        ),
                    );
                    return;
                }
            }
        }
    }

    /// `every_client_each_tick` as time passes: ticks keep coming while
    /// anyone is registered.
    fn check_ticking(&self, cx: &mut Cx<Self>) {
        let Some(since) = self.audience_since else {
            return;
        };
        let from = self
            .last_tick
            .map_or(since, |(_, at)| at.max(since))
            .as_micros();
        let bound = self
            .p
            .tick_us
            .saturating_add(self.p.stall_us.1)
            .saturating_add(1_000);
        if cx.now().as_micros() > from.saturating_add(bound) {
            cx.violate(
                EVERY_CLIENT,
                format!(
                    "no tick since {} with {} clients registered",
                    Time::from_micros(from),
                    self.model.values().map(BTreeSet::len).sum::<usize>()
                ),
            );
        }
    }

    // ----- clients -----------------------------------------------------------

    /// A client's connection handler unregisters it from every session it
    /// is in (as applied); it reconnects later.
    fn leave(&mut self, cx: &mut Cx<Self>, client: u32, origin: Origin) {
        self.clients[client as usize].connected = false;
        let c = cid(client);
        let sessions: Vec<SessionId> = self
            .model
            .iter()
            .filter(|(_, cs)| cs.contains(&c))
            .map(|(s, _)| *s)
            .collect();
        cx.count(match origin {
            Origin::Evict(_) => "client.evicted",
            _ => "client.disconnected",
        });
        cx.note(TickNote::Gone {
            client,
            sessions: sessions.len() as u32,
        });
        for session in sessions {
            let d = self.net(cx);
            self.submit_later(cx, origin, Command::Unregister { session, client: c }, d);
        }
        self.in_transit += 1;
        let d = cx.between(self.p.reconnect_us.0, self.p.reconnect_us.1);
        cx.env_after(d, TickEvent::Reconnect { client });
    }

    fn on_receive(&mut self, cx: &mut Cx<Self>, client: u32) {
        let c = &mut self.clients[client as usize];
        c.in_flight -= 1;
        if !c.connected {
            return;
        }
        let site = [("client", u64::from(client) + 1)];
        if cx.now() >= self.clients[client as usize].slow_until
            && cx.fault_at(F_SLOW, "client_receive", &site)
        {
            let d = cx.between(self.p.slow_us.0, self.p.slow_us.1);
            self.clients[client as usize].slow_until = Time::from_micros(cx.now().as_micros() + d);
        }
        if cx.fault_at(F_DISCONNECT, "client_receive", &site) {
            self.leave(cx, client, Origin::Disconnect(client));
        }
    }

    fn on_reconnect(&mut self, cx: &mut Cx<Self>, client: u32) {
        self.in_transit -= 1;
        self.clients[client as usize].connected = true;
        let session = SessionId(u64::from(cx.choose(self.p.sessions)) + 1);
        let d = self.net(cx);
        self.submit_later(
            cx,
            Origin::Reconnect(client),
            Command::Register {
                session,
                client: cid(client),
            },
            d,
        );
    }
}

impl Protocol for TickWorld {
    type Event = TickEvent;
    type Note = TickNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        self.owner_node = cx.add_node("owner");
        self.owner = TickBroadcaster::new(self.p.cfg, cx.now());
        self.issued = vec![0; self.p.sources as usize];
        self.clients = (0..self.p.clients)
            .map(|_| Client {
                in_flight: 0,
                last_arrival: Time::ZERO,
                slow_until: Time::ZERO,
                connected: true,
            })
            .collect();
        for source in 0..self.p.sources {
            let d = cx.between(self.p.think_us.0, self.p.think_us.1);
            cx.env_after(d, TickEvent::SourceWake { source });
        }
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, event: TickEvent) {
        match event {
            TickEvent::SourceWake { source } => self.on_source_wake(cx, source),
            TickEvent::Submit {
                origin,
                command,
                attempt,
            } => self.on_submit(cx, origin, command, attempt),
            TickEvent::Process => self.on_process(cx),
            TickEvent::Timer => self.on_timer(cx),
            TickEvent::Receive { client, .. } => self.on_receive(cx, client),
            TickEvent::Reconnect { client } => self.on_reconnect(cx, client),
        }
        self.check_ticking(cx);
    }

    fn heal(&mut self, _cx: &mut Cx<Self>) {}

    fn settled(&self) -> bool {
        self.issued.iter().all(|n| *n >= self.p.commands)
            && self.in_transit == 0
            && self.pending.is_empty()
            && self.clients.iter().all(|c| c.in_flight == 0)
    }

    fn route(&self, event: &TickEvent) -> (String, String) {
        let owner = || "owner".to_owned();
        match event {
            TickEvent::SourceWake { source } => {
                let s = format!("source-{}", source + 1);
                (s.clone(), s)
            }
            TickEvent::Submit { origin, .. } => {
                let from = match origin {
                    Origin::Source(s) => format!("source-{}", s + 1),
                    Origin::Evict(c) | Origin::Disconnect(c) | Origin::Reconnect(c) => {
                        format!("client-{}", c + 1)
                    }
                };
                (from, owner())
            }
            TickEvent::Process | TickEvent::Timer => (owner(), owner()),
            TickEvent::Receive { client, .. } => (owner(), format!("client-{}", client + 1)),
            TickEvent::Reconnect { client } => {
                let c = format!("client-{}", client + 1);
                (c.clone(), c)
            }
        }
    }

    fn coverage(&self) -> Vec<Coverage> {
        vec![self.owner.coverage()]
    }

    fn check_liveness(&self, _cx: &Cx<Self>) -> Option<(&'static str, String)> {
        None
    }
}
