//! Actors: one tokio task owns each machine.
//!
//! The pattern (`shared/seeds/002`, STYLE.md "Adapters"): the task owns the
//! machine and everything it drives; callers hold a cheap handle that sends
//! typed commands through a bounded [`mailbox`](crate::mailbox). Queries are
//! commands too, answered through a reply slot only after every earlier
//! command was handled: *barrier* calls. A full mailbox pushes back: a call
//! waits for room, or, on a [`fail_fast`](broadcaster::BroadcasterHandle::fail_fast)
//! handle, fails with [`ActorError::Busy`]. Shutting down is idempotent and
//! answers every caller still waiting with [`ActorError::ShuttingDown`].

pub mod broadcaster;
pub mod sender;

use simcast_machines::broadcast::BroadcastError;

use crate::mailbox::{MailSender, ReplyTx, TrySendError, reply_channel};

/// Why an actor call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    /// The mailbox is full (only on a fail-fast handle).
    #[error("busy: the actor's mailbox is full")]
    Busy,
    /// The actor is shutting down or gone; the call was not carried out (or
    /// its outcome is unknown, for a broadcast already accepted).
    #[error("the actor is shutting down")]
    ShuttingDown,
    /// The broadcaster refused the call.
    #[error(transparent)]
    Broadcast(#[from] BroadcastError),
}

/// Sends a command built around a fresh reply slot and waits for the answer.
pub(crate) async fn call<C, T>(
    tx: &MailSender<C>,
    fail_fast: bool,
    make: impl FnOnce(ReplyTx<Result<T, ActorError>>) -> C,
) -> Result<T, ActorError> {
    let (reply, answer) = reply_channel();
    let cmd = make(reply);
    if fail_fast {
        tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => ActorError::Busy,
            TrySendError::Closed(_) => ActorError::ShuttingDown,
        })?;
    } else {
        tx.send(cmd).await.map_err(|_| ActorError::ShuttingDown)?;
    }
    answer.await.unwrap_or(Err(ActorError::ShuttingDown))
}
