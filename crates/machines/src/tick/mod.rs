//! The tick broadcaster: one owner of a `session -> clients` map, fed by a
//! bounded command queue, sending every session's current value to each of
//! its clients on every tick.
//!
//! This is the actor pattern made sans-IO. Callers [`TickBroadcaster::submit`]
//! commands into a bounded FIFO queue (the actor's channel); the owner
//! applies them in order with [`TickBroadcaster::process`] (or one at a time
//! with [`TickBroadcaster::process_next`]); ticks come from
//! [`TickBroadcaster::handle_timeout`]. The driver decides how processing
//! and ticks interleave, as the actor's `select` would.
//!
//! # Rules
//! - **Queue:** at most `queue_capacity` (256) commands wait; a submit to a
//!   full queue is refused with [`TickError::QueueFull`] and enqueues nothing
//!   (backpressure).
//! - **Replies:** every command is answered by one [`Output::Reply`] when it
//!   is applied, in submission order.
//! - **Barrier:** a [`Command::Count`] is answered only when it is applied,
//!   i.e. after every command submitted before it; its answer reflects all of
//!   them and none submitted after it.
//! - **Register** adds a client to a session; registering a client already
//!   there changes nothing. A session holding `max_clients_per_session`
//!   clients refuses another with [`TickError::SessionFull`]. A client may be
//!   in several sessions.
//! - **Unregister** removes a client from a session (answering whether it was
//!   there); from the moment it is applied the client is sent nothing more
//!   for that session.
//! - **Ticks** are on a fixed grid: tick `k` is due at `origin + k *
//!   tick_interval` (50 ms by default). At each tick, every registered client
//!   of every session is sent the session's current value, once
//!   ([`Output::Send`], after an [`Output::Tick`] marker). A session's value
//!   is 0 until a [`Command::SetValue`] sets it, and values outlive clients.
//!   A tick the driver calls late fires once, numbered by the latest due
//!   grid point; missed grid points are skipped, not replayed.
//! - **Idle:** with no client at all there is nothing to send, so
//!   [`TickBroadcaster::poll_timeout`] is `None`; ticking resumes on the grid
//!   after the next registration.
//!
//! All state is volatile: the owner is an in-memory actor; after a crash
//! build a new one (clients must register again).
//!
//! # Shape
//! Mutate (`submit`, `process*`, `handle_timeout`), then drain
//! [`TickBroadcaster::poll_output`] until it returns `None`.

use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::coverage::Coverage;
use crate::time::Time;

/// The transitions of the tick broadcaster, as recorded in
/// [`TickBroadcaster::coverage`].
pub const TRANSITIONS: &[&str] = &[
    "submit -> queued",
    "submit: refused, queue full",
    "register: added",
    "register: already registered",
    "register: refused, session full",
    "unregister: removed",
    "unregister: was not registered",
    "count: answered at its barrier",
    "set value",
    "idle -> ticking (first client)",
    "ticking -> idle (last client gone)",
    "tick: every client sent the value",
    "tick: late, missed grid points skipped",
    "timeout: early, idle or spurious, nothing",
];

/// Indices into [`TRANSITIONS`].
#[derive(Clone, Copy)]
enum Tr {
    Queued,
    QueueFull,
    RegisterAdded,
    RegisterAlready,
    RegisterSessionFull,
    UnregisterRemoved,
    UnregisterAbsent,
    Count,
    SetValue,
    Wake,
    Idle,
    Tick,
    TickLate,
    TimeoutNothing,
}

/// The default tick period: 50 ms.
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_millis(50);
/// The default command queue capacity: 256.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// The default bound on clients per session.
pub const DEFAULT_MAX_CLIENTS_PER_SESSION: usize = 64;

/// A session whose value is broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A connected client (one connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// Identifies a submitted command, to match its reply. Increasing in
/// submission order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub u64);

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cmd{}", self.0)
    }
}

/// A command for the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Command {
    /// Add `client` to `session`.
    Register {
        /// The session.
        session: SessionId,
        /// The client.
        client: ClientId,
    },
    /// Remove `client` from `session`.
    Unregister {
        /// The session.
        session: SessionId,
        /// The client.
        client: ClientId,
    },
    /// A barrier query: the number of clients of `session`, or of all
    /// sessions together (a client in two sessions counts twice) if `None`.
    Count {
        /// Which session, or all.
        session: Option<SessionId>,
    },
    /// Set `session`'s current value, sent from the next tick on.
    SetValue {
        /// The session.
        session: SessionId,
        /// Its value.
        value: i64,
    },
}

/// The answer to an applied command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Answer {
    /// The client is registered (now, or already was).
    Registered,
    /// The client is not registered any more.
    Unregistered {
        /// Whether it was registered before.
        was_registered: bool,
    },
    /// The count, after every earlier command.
    Count(usize),
    /// The value is set.
    ValueSet,
}

/// Errors of the tick broadcaster. None of them changes any state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum TickError {
    /// The command queue is full: nothing was enqueued (backpressure).
    #[error("command queue full ({capacity} commands waiting)")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The session already holds the maximum number of clients.
    #[error("session {session} is full ({limit} clients)")]
    SessionFull {
        /// The session.
        session: SessionId,
        /// The per-session limit.
        limit: usize,
    },
}

/// What the broadcaster asks of its driver, or reports to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// The answer to a command, when it was applied.
    Reply {
        /// The command.
        command: CommandId,
        /// Its answer or why it was refused.
        result: Result<Answer, TickError>,
    },
    /// Tick `tick` fires now; its sends follow.
    Tick {
        /// The grid index of the tick.
        tick: u64,
        /// The time it fired at.
        at: Time,
    },
    /// Send `value` of `session` to `client`.
    Send {
        /// The tick this send belongs to.
        tick: u64,
        /// The addressee.
        client: ClientId,
        /// The session.
        session: SessionId,
        /// Its current value.
        value: i64,
    },
}

/// Deliberately broken variants, for mutation testing of the simulator;
/// never enable one outside a simulation. Off by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TickFlaw {
    /// A count is answered when it is submitted, from the state as applied
    /// so far, ignoring the commands queued before it. Breaks
    /// `tick.barrier_consistent`.
    EagerCount,
    /// An unregistered client is dropped from the session lazily: it is still
    /// sent the next tick's value. Breaks `tick.no_send_after_unregister`.
    LazyUnregister,
}

/// Configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TickConfig {
    /// The tick period (zero is clamped to 1 ms).
    pub tick_interval: Duration,
    /// Commands that may wait in the queue (at least 1).
    pub queue_capacity: usize,
    /// Clients per session.
    pub max_clients_per_session: usize,
    /// A deliberate flaw (`None` in production).
    pub flaw: Option<TickFlaw>,
}

impl Default for TickConfig {
    /// 50 ms ticks, 256 queued commands, 64 clients per session, no flaw.
    fn default() -> Self {
        TickConfig {
            tick_interval: DEFAULT_TICK_INTERVAL,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_clients_per_session: DEFAULT_MAX_CLIENTS_PER_SESSION,
            flaw: None,
        }
    }
}

impl TickConfig {
    fn interval_us(&self) -> u64 {
        let us = u64::try_from(self.tick_interval.as_micros()).unwrap_or(u64::MAX);
        us.max(1_000)
    }
}

/// The tick broadcaster (see the module docs for the rules).
///
/// Mutate, then drain [`TickBroadcaster::poll_output`] until it returns
/// `None`; call [`TickBroadcaster::handle_timeout`] at
/// [`TickBroadcaster::poll_timeout`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TickBroadcaster {
    cfg: TickConfig,
    origin: Time,
    /// The grid index of the next tick.
    next_tick: u64,
    next_command: u64,
    queue: VecDeque<(CommandId, Command)>,
    sessions: BTreeMap<SessionId, BTreeSet<ClientId>>,
    values: BTreeMap<SessionId, i64>,
    /// Flaw `LazyUnregister`: unregistered clients still sent the next tick.
    lingering: BTreeSet<(SessionId, ClientId)>,
    outputs: VecDeque<Output>,
    cov: Coverage,
}

impl TickBroadcaster {
    /// A broadcaster with no clients, whose tick grid starts at `now`.
    pub fn new(cfg: TickConfig, now: Time) -> Self {
        TickBroadcaster {
            cfg,
            origin: now,
            next_tick: 1,
            next_command: 1,
            queue: VecDeque::new(),
            sessions: BTreeMap::new(),
            values: BTreeMap::new(),
            lingering: BTreeSet::new(),
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    /// As [`TickBroadcaster::new`] with a deliberate flaw (`None` = correct).
    pub fn with_flaw(cfg: TickConfig, now: Time, flaw: Option<TickFlaw>) -> Self {
        TickBroadcaster::new(TickConfig { flaw, ..cfg }, now)
    }

    // ----- queries -------------------------------------------------------

    /// The transitions taken so far (indices into [`TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// The configuration.
    pub fn config(&self) -> &TickConfig {
        &self.cfg
    }

    /// Commands waiting to be applied.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// The number of clients as applied so far (not a barrier: commands still
    /// queued are not reflected), of one session or of all.
    pub fn client_count(&self, session: Option<SessionId>) -> usize {
        match session {
            Some(s) => self.sessions.get(&s).map_or(0, BTreeSet::len),
            None => self.sessions.values().map(BTreeSet::len).sum(),
        }
    }

    /// The registered clients of `session`, ascending.
    pub fn clients(&self, session: SessionId) -> impl Iterator<Item = ClientId> + '_ {
        self.sessions.get(&session).into_iter().flatten().copied()
    }

    /// Sessions with at least one client, ascending.
    pub fn sessions(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.sessions.keys().copied()
    }

    /// The current value of `session` (0 if never set).
    pub fn value(&self, session: SessionId) -> i64 {
        self.values.get(&session).copied().unwrap_or(0)
    }

    /// When the next tick is due: `None` while nobody is registered.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.has_audience().then(|| self.tick_time(self.next_tick))
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn has_audience(&self) -> bool {
        !self.sessions.is_empty() || !self.lingering.is_empty()
    }

    fn tick_time(&self, k: u64) -> Time {
        Time::from_micros(
            self.origin
                .as_micros()
                .saturating_add(k.saturating_mul(self.cfg.interval_us())),
        )
    }

    /// The grid index of the latest tick due at `now` (0 before the first).
    fn latest_due(&self, now: Time) -> u64 {
        now.as_micros().saturating_sub(self.origin.as_micros()) / self.cfg.interval_us()
    }

    // ----- commands ------------------------------------------------------

    /// Enqueues `command`; its reply comes when it is applied.
    ///
    /// # Errors
    /// [`TickError::QueueFull`] if `queue_capacity` commands are waiting.
    pub fn submit(&mut self, command: Command) -> Result<CommandId, TickError> {
        let capacity = self.cfg.queue_capacity.max(1);
        if self.queue.len() >= capacity {
            self.hit(Tr::QueueFull);
            return Err(TickError::QueueFull { capacity });
        }
        let id = CommandId(self.next_command);
        self.next_command += 1;
        if let (Some(TickFlaw::EagerCount), Command::Count { session }) = (self.cfg.flaw, command) {
            let n = self.client_count(session);
            self.outputs.push_back(Output::Reply {
                command: id,
                result: Ok(Answer::Count(n)),
            });
            return Ok(id);
        }
        self.hit(Tr::Queued);
        self.queue.push_back((id, command));
        debug_assert!(self.queue.len() <= capacity);
        Ok(id)
    }

    /// Applies every queued command, in order; returns how many.
    pub fn process(&mut self, now: Time) -> usize {
        let mut n = 0;
        while self.process_next(now) {
            n += 1;
        }
        n
    }

    /// Applies the oldest queued command, if any; returns whether it did.
    pub fn process_next(&mut self, now: Time) -> bool {
        let Some((id, command)) = self.queue.pop_front() else {
            return false;
        };
        let idle = !self.has_audience();
        let result = self.apply(command);
        self.outputs.push_back(Output::Reply {
            command: id,
            result,
        });
        if idle && self.has_audience() {
            // Resume ticking on the grid, strictly after now.
            self.hit(Tr::Wake);
            self.next_tick = self.next_tick.max(self.latest_due(now) + 1);
        } else if !idle && !self.has_audience() {
            self.hit(Tr::Idle);
        }
        true
    }

    fn apply(&mut self, command: Command) -> Result<Answer, TickError> {
        match command {
            Command::Register { session, client } => {
                let limit = self.cfg.max_clients_per_session;
                let clients = self.sessions.entry(session).or_default();
                if !clients.contains(&client) && clients.len() >= limit {
                    if clients.is_empty() {
                        self.sessions.remove(&session);
                    }
                    self.hit(Tr::RegisterSessionFull);
                    return Err(TickError::SessionFull { session, limit });
                }
                let added = clients.insert(client);
                self.lingering.remove(&(session, client));
                self.hit(if added {
                    Tr::RegisterAdded
                } else {
                    Tr::RegisterAlready
                });
                Ok(Answer::Registered)
            }
            Command::Unregister { session, client } => {
                let was_registered = self
                    .sessions
                    .get_mut(&session)
                    .is_some_and(|c| c.remove(&client));
                if self.sessions.get(&session).is_some_and(BTreeSet::is_empty) {
                    self.sessions.remove(&session);
                }
                if was_registered && self.cfg.flaw == Some(TickFlaw::LazyUnregister) {
                    self.lingering.insert((session, client));
                }
                self.hit(if was_registered {
                    Tr::UnregisterRemoved
                } else {
                    Tr::UnregisterAbsent
                });
                Ok(Answer::Unregistered { was_registered })
            }
            Command::Count { session } => {
                self.hit(Tr::Count);
                Ok(Answer::Count(self.client_count(session)))
            }
            Command::SetValue { session, value } => {
                self.hit(Tr::SetValue);
                self.values.insert(session, value);
                Ok(Answer::ValueSet)
            }
        }
    }

    // ----- ticks ---------------------------------------------------------

    /// Fires the tick if one is due at `now`: an [`Output::Tick`], then one
    /// [`Output::Send`] per registered client of every session (sessions and
    /// clients ascending). Spurious, early or idle calls do nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        if !self.has_audience() || now < self.tick_time(self.next_tick) {
            self.hit(Tr::TimeoutNothing);
            return;
        }
        let tick = self.latest_due(now);
        debug_assert!(tick >= self.next_tick);
        self.hit(if tick > self.next_tick {
            Tr::TickLate
        } else {
            Tr::Tick
        });
        self.next_tick = tick + 1;
        self.outputs.push_back(Output::Tick { tick, at: now });
        for (session, clients) in &self.sessions {
            let value = self.values.get(session).copied().unwrap_or(0);
            for client in clients {
                self.outputs.push_back(Output::Send {
                    tick,
                    client: *client,
                    session: *session,
                    value,
                });
            }
        }
        for (session, client) in std::mem::take(&mut self.lingering) {
            self.outputs.push_back(Output::Send {
                tick,
                client,
                session,
                value: self.values.get(&session).copied().unwrap_or(0),
            });
        }
    }
}

#[cfg(test)]
mod tests;
