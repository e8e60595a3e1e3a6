//! The replica-sender actor: one task owns a replication [`Sender`].
//!
//! The sender performs no IO of its own (the driver connects, ships entries
//! and reports back), so the actor's only effect is its budget timer: when
//! the active catch-up session's budget falls due
//! ([`Sender::budget_deadline`]) the actor checks it at that instant, and a
//! violation invalidates the session (recorded, and visible to the next
//! query). Every call is a typed command through the bounded mailbox, run
//! against the machine with the current time; queries are barrier calls.

use std::time::Duration;

use simcast_machines::replication::{
    BudgetViolation, Endpoint, Epoch, ReplicaId, ReplicaState, Sender, SessionId,
};
use simcast_machines::time::Time;

use super::{ActorError, call};
use crate::clock::Clock;
use crate::mailbox::{MailReceiver, MailSender, ReplyTx, mailbox};

type Job = Box<dyn FnOnce(&mut Sender, Time) + Send>;

enum Command {
    Exec(Job),
    Shutdown {
        reply: ReplyTx<Result<(), ActorError>>,
    },
}

/// A caller's handle on a sender actor; cheap to clone.
#[derive(Clone)]
pub struct SenderHandle {
    tx: MailSender<Command>,
}

/// A budget violation the actor's timer found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerViolation {
    /// The session invalidated.
    pub session: SessionId,
    /// Which limit.
    pub violation: BudgetViolation,
    /// When.
    pub at: Time,
}

impl SenderHandle {
    /// Runs `f` on the sender, with the current time, after every earlier
    /// command; returns its result. Every typed call below is one of these.
    ///
    /// # Errors
    /// [`ActorError::ShuttingDown`].
    pub async fn exec<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Sender, Time) -> R + Send + 'static,
    ) -> Result<R, ActorError> {
        call(&self.tx, false, |reply: ReplyTx<Result<R, ActorError>>| {
            Command::Exec(Box::new(move |s: &mut Sender, now: Time| {
                let _ = reply.send(Ok(f(s, now)));
            }))
        })
        .await
    }

    /// The replica's state (barrier query).
    ///
    /// # Errors
    /// [`ActorError::ShuttingDown`].
    pub async fn state(&self) -> Result<ReplicaState, ActorError> {
        self.exec(|s, _| s.state()).await
    }

    /// The active session's id, if any (barrier query).
    ///
    /// # Errors
    /// [`ActorError::ShuttingDown`].
    pub async fn active_session(&self) -> Result<Option<SessionId>, ActorError> {
        self.exec(|s, _| s.active_session().map(|x| x.id())).await
    }

    /// The sender's epoch (barrier query).
    ///
    /// # Errors
    /// [`ActorError::ShuttingDown`].
    pub async fn epoch(&self) -> Result<Epoch, ActorError> {
        self.exec(|s, _| s.epoch()).await
    }

    /// Stops the actor; idempotent.
    ///
    /// # Errors
    /// None in practice (kept for symmetry with the other actors).
    pub async fn shutdown(&self) -> Result<(), ActorError> {
        match call(&self.tx, false, |reply| Command::Shutdown { reply }).await {
            Err(ActorError::ShuttingDown) => Ok(()),
            other => other,
        }
    }
}

/// The sender actor.
pub struct SenderActor {
    sender: Sender,
    clock: Clock,
    mailbox: MailReceiver<Command>,
    /// The last budget deadline checked (a deadline is armed only once).
    checked: Option<Time>,
    violations: Vec<TimerViolation>,
}

impl SenderActor {
    /// An actor over a new sender for `replica`.
    pub fn spawn(
        replica: ReplicaId,
        endpoint: Endpoint,
        epoch: Epoch,
        mailbox_capacity: usize,
    ) -> (SenderHandle, tokio::task::JoinHandle<Vec<TimerViolation>>) {
        let (tx, rx) = mailbox(mailbox_capacity);
        let actor = SenderActor {
            sender: Sender::new(replica, endpoint, epoch),
            clock: Clock::new(),
            mailbox: rx,
            checked: None,
            violations: Vec::new(),
        };
        (SenderHandle { tx }, tokio::spawn(actor.run()))
    }

    /// Runs until shut down or every handle is dropped; returns the budget
    /// violations its timer found.
    pub async fn run(mut self) -> Vec<TimerViolation> {
        let mut shutdown = Vec::new();
        loop {
            let due = self
                .sender
                .budget_deadline()
                .filter(|d| self.checked.is_none_or(|c| *d > c));
            let deadline = due.map(|d| self.clock.instant_of(d));
            tokio::select! {
                biased;
                cmd = self.mailbox.recv() => match cmd {
                    Some(Command::Exec(job)) => job(&mut self.sender, self.clock.now()),
                    Some(Command::Shutdown { reply }) => {
                        shutdown.push(reply);
                        break;
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() =>
                {
                    self.check_budget(due);
                }
            }
        }
        self.mailbox.close();
        while let Some(cmd) = self.mailbox.try_recv() {
            match cmd {
                // Dropping the job drops its reply slot: the caller hears
                // `ShuttingDown`.
                Command::Exec(job) => drop(job),
                Command::Shutdown { reply } => shutdown.push(reply),
            }
        }
        for reply in shutdown {
            let _ = reply.send(Ok(()));
        }
        self.violations
    }

    fn check_budget(&mut self, due: Option<Time>) {
        self.checked = due;
        let now = self.clock.now();
        let Some(session) = self.sender.active_session().map(|s| s.id()) else {
            return;
        };
        if let Ok(Some(violation)) = self.sender.check_budget(session, now) {
            tracing::info!(%session, ?violation, "catch-up budget exceeded");
            self.violations.push(TimerViolation {
                session,
                violation,
                at: now,
            });
        }
    }
}

/// How long after a deadline the timer may fire on a busy runtime; tests use
/// it as their slack.
pub const TIMER_SLACK: Duration = Duration::from_millis(50);
