//! The broadcaster actor: one task owns a [`Broadcaster`] (and with it its
//! lock table), turns its effects into IO and feeds the completions back.
//!
//! | effect | carried out by | completion fed back |
//! |---|---|---|
//! | [`Output::Write`] | the [`CatalogWriter`] task (group commit, fsync) | `handle_write_done` |
//! | [`Output::Append`] | a task calling [`BroadcastIo::append`] with a timeout | `handle_append_result` |
//! | [`Output::InvokeCallback`] | a task calling [`BroadcastIo::invoke`] with a timeout | `handle_callback_result` |
//! | [`Output::Started`], [`Output::StartFailed`], [`Output::Done`] | the waiting caller's reply slot | — |
//! | the next timer ([`Broadcaster::poll_timeout`]) | a `tokio::time::sleep_until` in the loop | `handle_timeout` |
//!
//! Completions come back through an unbounded channel that only the actor's
//! own IO tasks write to: its occupancy is bounded by the effects in flight,
//! which the machine bounds (one write per task, one append per channel per
//! task, one callback per task). Keeping them apart from the bounded mailbox
//! means a full mailbox can never block an IO task, so completions cannot
//! deadlock against commands; the loop takes completions first.
//!
//! Times: the machine's [`Time`](simcast_machines::time::Time) comes from
//! a [`Clock`]; backoff jitter from a seeded generator, as a value.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use simcast_machines::broadcast::{
    AckInfo, Body, BroadcastId, Broadcaster, Caller, CatalogOp, CatalogState, ChannelId, Config,
    IoError, Jitter, Message, Output, Role, TaskState, WriteId,
};
use simcast_machines::locks::ResourceKey;
use tokio::sync::mpsc;

use super::{ActorError, call};
use crate::catalog::{CatalogFlaw, CatalogWriter, FileCatalog};
use crate::clock::Clock;
use crate::mailbox::{MailReceiver, MailSender, ReplyTx, mailbox};
use crate::rng::SplitMix64;
use crate::wire::{Applied, TaskStatus};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The external systems the broadcaster's effects reach: WAL channels and
/// the metadata store. [`crate::node::TcpIo`] reaches them over TCP; tests
/// can use in-memory fakes.
pub trait BroadcastIo: Send + Sync + 'static {
    /// Appends `message` to `channel`: the copy's message id and time tick.
    fn append(
        &self,
        id: BroadcastId,
        channel: ChannelId,
        message: Message,
    ) -> BoxFuture<Result<AckInfo, IoError>>;

    /// Applies a callback effect on the metadata store.
    fn invoke(&self, applied: Applied) -> BoxFuture<Result<(), IoError>>;
}

/// How the actor runs.
#[derive(Clone, Debug)]
pub struct BroadcasterConfig {
    /// The machine's configuration.
    pub machine: Config,
    /// The cluster's role at start.
    pub role: Role,
    /// Commands that may wait in the mailbox.
    pub mailbox: usize,
    /// How long an append or a callback may take before it counts as
    /// [`IoError::TimedOut`] (and is retried by the machine).
    pub io_timeout: Duration,
    /// Seeds the backoff jitter.
    pub seed: u64,
    /// Largest jitter drawn, per mille of a backoff delay.
    pub jitter_permille: u32,
    /// A deliberate flaw of the catalog writer (`None` in production).
    pub catalog_flaw: Option<CatalogFlaw>,
}

impl BroadcasterConfig {
    /// Defaults around a machine configuration: primary, a mailbox of 256,
    /// 500 ms IO timeout, 20 % jitter.
    pub fn new(machine: Config) -> Self {
        BroadcasterConfig {
            machine,
            role: Role::Primary,
            mailbox: 256,
            io_timeout: Duration::from_millis(500),
            seed: 0,
            jitter_permille: 200,
            catalog_flaw: None,
        }
    }
}

/// Counters and a view of the machine, answered as a barrier query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Tasks known (tombstones included).
    pub tasks: usize,
    /// Tasks not yet tombstones.
    pub unfinished: usize,
    /// Lock requests holding keys.
    pub locks_held: usize,
    /// Lock requests waiting for keys.
    pub locks_waiting: usize,
    /// Started handles not yet used.
    pub open_handles: usize,
    /// Whether nothing is in progress.
    pub quiescent: bool,
    /// Recovery conflicts reported (a bug if non-zero).
    pub recovery_conflicts: u64,
    /// Catalog writes completed, and failed.
    pub writes: (u64, u64),
}

type Reply<T> = ReplyTx<Result<T, ActorError>>;

enum Command {
    Start {
        keys: Vec<ResourceKey>,
        reply: Reply<BroadcastId>,
    },
    Broadcast {
        id: BroadcastId,
        body: Body,
        reply: Reply<()>,
    },
    Close {
        id: BroadcastId,
        reply: Reply<()>,
    },
    Status {
        id: BroadcastId,
        reply: Reply<TaskStatus>,
    },
    Unfinished {
        reply: Reply<Vec<BroadcastId>>,
    },
    Stats {
        reply: Reply<Stats>,
    },
    SetRole {
        role: Role,
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

impl Command {
    /// Answers the command with an error, whatever it is (shutdown).
    fn refuse(self, e: ActorError) {
        match self {
            Command::Start { reply, .. } => drop(reply.send(Err(e))),
            Command::Broadcast { reply, .. }
            | Command::Close { reply, .. }
            | Command::SetRole { reply, .. } => drop(reply.send(Err(e))),
            Command::Status { reply, .. } => drop(reply.send(Err(e))),
            Command::Unfinished { reply } => drop(reply.send(Err(e))),
            Command::Stats { reply } => drop(reply.send(Err(e))),
            // Shutting down is what was asked: that succeeded.
            Command::Shutdown { reply } => drop(reply.send(Ok(()))),
        }
    }
}

enum Completion {
    Write(WriteId, Result<(), IoError>),
    Append(BroadcastId, ChannelId, Result<AckInfo, IoError>),
    Callback(BroadcastId, Result<(), IoError>),
}

/// A caller's handle on the actor. Cheap to clone; the actor shuts down
/// when every handle is dropped (or on [`BroadcasterHandle::shutdown`]).
#[derive(Clone)]
pub struct BroadcasterHandle {
    tx: MailSender<Command>,
    fail_fast: bool,
}

impl BroadcasterHandle {
    /// The same handle, but calls fail with [`ActorError::Busy`] instead of
    /// waiting when the mailbox is full.
    pub fn fail_fast(&self) -> BroadcasterHandle {
        BroadcasterHandle {
            tx: self.tx.clone(),
            fail_fast: true,
        }
    }

    /// Takes `keys` and allocates a broadcast id (after the keys are held).
    ///
    /// # Errors
    /// [`ActorError`]; a refusal by the broadcaster is
    /// [`ActorError::Broadcast`].
    pub async fn start(&self, keys: Vec<ResourceKey>) -> Result<BroadcastId, ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Start {
            keys,
            reply,
        })
        .await
    }

    /// Broadcasts `body` under the started `id`; returns once its callback
    /// has completed and its tombstone is durable.
    ///
    /// # Errors
    /// [`ActorError`]. [`ActorError::ShuttingDown`] after the broadcast was
    /// accepted means its outcome is unknown here: it completes after a
    /// restart if it was persisted ([`BroadcasterHandle::status`]).
    pub async fn broadcast(&self, id: BroadcastId, body: Body) -> Result<(), ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Broadcast {
            id,
            body,
            reply,
        })
        .await
    }

    /// Releases a started id without broadcasting.
    ///
    /// # Errors
    /// [`ActorError`].
    pub async fn close(&self, id: BroadcastId) -> Result<(), ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Close {
            id,
            reply,
        })
        .await
    }

    /// What became of `id` (barrier query).
    ///
    /// # Errors
    /// [`ActorError::Busy`], [`ActorError::ShuttingDown`].
    pub async fn status(&self, id: BroadcastId) -> Result<TaskStatus, ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Status {
            id,
            reply,
        })
        .await
    }

    /// Tasks that are not tombstones yet (barrier query).
    ///
    /// # Errors
    /// [`ActorError::Busy`], [`ActorError::ShuttingDown`].
    pub async fn unfinished(&self) -> Result<Vec<BroadcastId>, ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Unfinished {
            reply,
        })
        .await
    }

    /// Counters and a view of the machine (barrier query).
    ///
    /// # Errors
    /// [`ActorError::Busy`], [`ActorError::ShuttingDown`].
    pub async fn stats(&self) -> Result<Stats, ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::Stats { reply }).await
    }

    /// Changes the cluster's role.
    ///
    /// # Errors
    /// [`ActorError::Busy`], [`ActorError::ShuttingDown`].
    pub async fn set_role(&self, role: Role) -> Result<(), ActorError> {
        call(&self.tx, self.fail_fast, |reply| Command::SetRole {
            role,
            reply,
        })
        .await
    }

    /// Stops the actor: the broadcaster stops accepting work, every caller
    /// still waiting (queued commands, pending starts, broadcasts not done)
    /// is answered with [`ActorError::ShuttingDown`] (or the broadcaster's
    /// `TaskNotCreated`), and the task ends. Idempotent: returns `Ok` once
    /// the actor is gone, however many times it is called.
    ///
    /// # Errors
    /// [`ActorError::Busy`] on a fail-fast handle whose mailbox is full.
    pub async fn shutdown(&self) -> Result<(), ActorError> {
        match call(&self.tx, self.fail_fast, |reply| Command::Shutdown {
            reply,
        })
        .await
        {
            Err(ActorError::ShuttingDown) => Ok(()),
            other => other,
        }
    }

    /// Whether the actor no longer takes commands.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The actor, before it runs: [`BroadcasterActor::new`] gives it and its
/// first handle; [`BroadcasterActor::run`] it (or use
/// [`BroadcasterActor::spawn`]).
pub struct BroadcasterActor<Io> {
    machine: Broadcaster,
    clock: Clock,
    rng: SplitMix64,
    jitter_permille: u32,
    io_timeout: Duration,
    io: Arc<Io>,
    writer: CatalogWriter,
    mailbox: MailReceiver<Command>,
    completions_tx: mpsc::UnboundedSender<Completion>,
    completions: mpsc::UnboundedReceiver<Completion>,
    next_caller: u64,
    starting: BTreeMap<Caller, Reply<BroadcastId>>,
    /// Started handles not yet used, by id.
    open: BTreeMap<BroadcastId, Caller>,
    broadcasting: BTreeMap<Caller, Reply<()>>,
    /// Catalog writes in flight, to mirror the durable state.
    writes: BTreeMap<WriteId, CatalogOp>,
    durable: CatalogState,
    recovery_conflicts: u64,
    writes_done: (u64, u64),
}

impl<Io: BroadcastIo> BroadcasterActor<Io> {
    /// Recovers the broadcaster from `catalog` (the machine's `recover` over
    /// its durable state) and prepares the actor; the catalog moves into a
    /// writer task (spawned now, so call this inside a runtime).
    pub fn new(cfg: BroadcasterConfig, catalog: FileCatalog, io: Io) -> (Self, BroadcasterHandle) {
        let clock = Clock::new();
        let durable = catalog.state().clone();
        let machine = Broadcaster::recover(cfg.machine.clone(), cfg.role, clock.now(), &durable);
        let (completions_tx, completions) = mpsc::unbounded_channel();
        let done = completions_tx.clone();
        let writer = CatalogWriter::spawn(catalog, cfg.catalog_flaw, move |w, r| {
            let _ = done.send(Completion::Write(w, r));
        });
        let (tx, rx) = mailbox(cfg.mailbox);
        let actor = BroadcasterActor {
            machine,
            clock,
            rng: SplitMix64::new(cfg.seed),
            jitter_permille: cfg.jitter_permille,
            io_timeout: cfg.io_timeout,
            io: Arc::new(io),
            writer,
            mailbox: rx,
            completions_tx,
            completions,
            next_caller: 0,
            starting: BTreeMap::new(),
            open: BTreeMap::new(),
            broadcasting: BTreeMap::new(),
            writes: BTreeMap::new(),
            durable,
            recovery_conflicts: 0,
            writes_done: (0, 0),
        };
        let handle = BroadcasterHandle {
            tx,
            fail_fast: false,
        };
        (actor, handle)
    }

    /// Recovers and spawns the actor on the current runtime; returns its
    /// handle and the task (which ends after shutdown).
    pub fn spawn(
        cfg: BroadcasterConfig,
        catalog: FileCatalog,
        io: Io,
    ) -> (BroadcasterHandle, tokio::task::JoinHandle<()>) {
        let (actor, handle) = BroadcasterActor::new(cfg, catalog, io);
        (handle, tokio::spawn(actor.run()))
    }

    /// Runs the actor until it is shut down or every handle is dropped.
    pub async fn run(mut self) {
        let mut shutdown_replies = Vec::new();
        loop {
            self.drive();
            let deadline = self
                .machine
                .poll_timeout()
                .map(|t| self.clock.instant_of(t));
            tokio::select! {
                biased;
                Some(c) = self.completions.recv() => self.on_completion(c),
                cmd = self.mailbox.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        shutdown_replies.push(reply);
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() =>
                {
                    let now = self.clock.now();
                    self.machine.handle_timeout(now);
                }
            }
        }
        self.shutdown(shutdown_replies);
    }

    fn jitter(&mut self) -> Jitter {
        Jitter(self.rng.below(u64::from(self.jitter_permille) + 1) as u32)
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now();
        match cmd {
            Command::Start { keys, reply } => {
                self.next_caller += 1;
                let caller = Caller(self.next_caller);
                match self.machine.start(now, caller, keys) {
                    Ok(()) => {
                        self.starting.insert(caller, reply);
                    }
                    Err(e) => drop(reply.send(Err(e.into()))),
                }
            }
            Command::Broadcast { id, body, reply } => {
                let caller = self.open.remove(&id);
                match (self.machine.broadcast(now, id, body), caller) {
                    (Ok(()), Some(caller)) => {
                        self.broadcasting.insert(caller, reply);
                    }
                    (Ok(()), None) => {
                        // The machine had the handle, so `open` has it too:
                        // both record exactly the `Started` ids not yet used.
                        debug_assert!(false, "{id} open in the machine but not here");
                        let _ = reply.send(Err(ActorError::ShuttingDown));
                    }
                    (Err(e), _) => drop(reply.send(Err(e.into()))),
                }
            }
            Command::Close { id, reply } => {
                self.open.remove(&id);
                let r = self.machine.close(now, id).map_err(ActorError::from);
                let _ = reply.send(r);
            }
            Command::Status { id, reply } => {
                let _ = reply.send(Ok(self.status(id)));
            }
            Command::Unfinished { reply } => {
                let _ = reply.send(Ok(self.machine.unfinished().collect()));
            }
            Command::Stats { reply } => {
                let _ = reply.send(Ok(self.stats()));
            }
            Command::SetRole { role, reply } => {
                self.machine.set_role(role);
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown { .. } => unreachable!("handled by the loop"),
        }
    }

    fn status(&self, id: BroadcastId) -> TaskStatus {
        if self.durable.graveyard.contains(id) {
            return TaskStatus::Deleted;
        }
        if self.open.contains_key(&id) {
            return TaskStatus::Open;
        }
        match self.machine.task_state(id) {
            Some(TaskState::Tombstone)
                if self
                    .durable
                    .tasks
                    .get(&id)
                    .is_some_and(|r| r.state == TaskState::Tombstone) =>
            {
                TaskStatus::Completed
            }
            Some(s) => TaskStatus::InProgress(s),
            // No task and no open handle: with ids never reused, it can
            // never be created now (below the floor: an earlier run allocated
            // it and it was not in the catalog at recovery).
            None => TaskStatus::Lost,
        }
    }

    fn stats(&self) -> Stats {
        let table = self.machine.lock_table();
        Stats {
            tasks: self.machine.task_count(),
            unfinished: self.machine.unfinished().count(),
            locks_held: table.held_len(),
            locks_waiting: table.waiting_len(),
            open_handles: self.open.len(),
            quiescent: self.machine.is_quiescent(),
            recovery_conflicts: self.recovery_conflicts,
            writes: self.writes_done,
        }
    }

    fn on_completion(&mut self, c: Completion) {
        let now = self.clock.now();
        let jitter = self.jitter();
        match c {
            Completion::Write(write, result) => {
                if let Some(op) = self.writes.remove(&write) {
                    if result.is_ok() {
                        self.durable.apply(&op);
                        self.writes_done.0 += 1;
                    } else {
                        self.writes_done.1 += 1;
                    }
                }
                self.machine.handle_write_done(now, write, result, jitter);
            }
            Completion::Append(id, channel, result) => {
                self.machine
                    .handle_append_result(now, id, channel, result, jitter);
            }
            Completion::Callback(id, result) => {
                self.machine.handle_callback_result(now, id, result, jitter);
            }
        }
    }

    /// Drains the machine's outputs and carries each out.
    fn drive(&mut self) {
        while let Some(out) = self.machine.poll_output() {
            self.effect(out);
        }
    }

    fn effect(&mut self, out: Output) {
        match out {
            Output::Write { write, op } => {
                self.writes.insert(write, op.clone());
                if self.writer.submit(write, op).is_err() {
                    let _ = self
                        .completions_tx
                        .send(Completion::Write(write, Err(IoError::Failed)));
                }
            }
            Output::Append {
                id,
                channel,
                message,
                ..
            } => {
                let io = self.io.clone();
                let tx = self.completions_tx.clone();
                let t = self.io_timeout;
                tokio::spawn(async move {
                    let r = tokio::time::timeout(t, io.append(id, channel, message))
                        .await
                        .unwrap_or(Err(IoError::TimedOut));
                    let _ = tx.send(Completion::Append(id, channel, r));
                });
            }
            Output::InvokeCallback {
                id,
                payload,
                keys,
                control_tick,
                ..
            } => {
                let io = self.io.clone();
                let tx = self.completions_tx.clone();
                let t = self.io_timeout;
                let applied = Applied {
                    id,
                    payload,
                    keys,
                    control_tick,
                };
                tokio::spawn(async move {
                    let r = tokio::time::timeout(t, io.invoke(applied))
                        .await
                        .unwrap_or(Err(IoError::TimedOut));
                    let _ = tx.send(Completion::Callback(id, r));
                });
            }
            Output::Started { caller, id } => {
                let Some(reply) = self.starting.remove(&caller) else {
                    return;
                };
                if reply.send(Ok(id)).is_err() {
                    // The caller left while waiting for its keys: give them
                    // back at once rather than hold them forever.
                    let now = self.clock.now();
                    let _ = self.machine.close(now, id);
                } else {
                    self.open.insert(id, caller);
                }
            }
            Output::StartFailed { caller, error } => {
                if let Some(reply) = self.starting.remove(&caller) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            Output::Done { caller, .. } => {
                if let Some(reply) = self.broadcasting.remove(&caller) {
                    let _ = reply.send(Ok(()));
                }
            }
            Output::RecoveryConflict { id } => {
                self.recovery_conflicts += 1;
                tracing::error!(%id, "recovery found a pending task whose keys conflict with another's");
            }
        }
    }

    fn shutdown(&mut self, replies: Vec<Reply<()>>) {
        let now = self.clock.now();
        self.machine.stop(now);
        self.drive();
        self.mailbox.close();
        while let Some(cmd) = self.mailbox.try_recv() {
            cmd.refuse(ActorError::ShuttingDown);
        }
        for (_, reply) in std::mem::take(&mut self.starting) {
            let _ = reply.send(Err(ActorError::ShuttingDown));
        }
        for (_, reply) in std::mem::take(&mut self.broadcasting) {
            let _ = reply.send(Err(ActorError::ShuttingDown));
        }
        for reply in replies {
            let _ = reply.send(Ok(()));
        }
        tracing::debug!(open = self.open.len(), "broadcaster actor stopped");
    }
}
