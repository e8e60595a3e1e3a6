//! An actor's mailbox: a bounded multi-producer, single-consumer async queue,
//! and the one-shot reply slot that answers a call.
//!
//! Built on [`crate::sync`] (a `Mutex` and wakers) rather than on tokio's
//! channels so that the very code the actors run is what the loom models
//! check (`--cfg loom`, `tests/loom.rs`), and so that it runs unchanged under
//! madsim.
//!
//! # Promises
//! - **Bounded, with push-back.** At most `capacity` messages wait. A
//!   [`MailSender::send`] on a full mailbox waits until the actor takes a
//!   message (the caller is pushed back); [`MailSender::try_send`] fails with
//!   [`TrySendError::Full`] instead.
//! - **FIFO.** Messages are received in the order their sends completed, so
//!   a query sent after a command is answered after the command was handled:
//!   replies through [`reply_channel`] make such queries *barriers*.
//! - **No lost wake-up.** Taking a message wakes every sender waiting for
//!   room (each re-checks under the lock), so a sender that gives up waiting
//!   cannot swallow the wake-up another one needed.
//! - **Closing.** [`MailReceiver::close`] refuses new messages but keeps the
//!   queued ones for [`MailReceiver::try_recv`], so an actor shutting down can
//!   answer every caller that is still queued. Dropping the receiver drops the
//!   queue: each queued call's reply slot is dropped and its caller gets
//!   [`Canceled`].

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::sync::{Arc, Mutex, lock};

struct State<T> {
    queue: VecDeque<T>,
    capacity: usize,
    senders: usize,
    /// The receiver closed the mailbox or was dropped: sends fail.
    closed: bool,
    recv_waker: Option<Waker>,
    /// Senders waiting for room; all are woken when a message is taken.
    send_wakers: Vec<Waker>,
}

struct Shared<T> {
    state: Mutex<State<T>>,
}

/// Creates a mailbox holding at most `capacity` (at least 1) messages.
pub fn mailbox<T>(capacity: usize) -> (MailSender<T>, MailReceiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            closed: false,
            recv_waker: None,
            send_wakers: Vec::new(),
        }),
    });
    (
        MailSender {
            shared: shared.clone(),
        },
        MailReceiver { shared },
    )
}

/// Why a send failed; the message comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The mailbox holds `capacity` messages.
    Full(T),
    /// The actor closed its mailbox or is gone.
    Closed(T),
}

/// The actor closed its mailbox or is gone; the message comes back.
#[derive(Debug, PartialEq, Eq)]
pub struct SendError<T>(pub T);

/// The sending side; clone it for each producer.
pub struct MailSender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for MailSender<T> {
    fn clone(&self) -> Self {
        lock(&self.shared.state).senders += 1;
        MailSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for MailSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.shared.state);
            s.senders -= 1;
            if s.senders == 0 {
                s.recv_waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> MailSender<T> {
    /// Queues `value`, waiting for room while the mailbox is full.
    ///
    /// # Errors
    /// [`SendError`] if the mailbox is closed (before or while waiting).
    pub fn send(&self, value: T) -> SendFuture<'_, T> {
        SendFuture {
            sender: self,
            value: Some(value),
        }
    }

    /// Queues `value` if there is room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] or [`TrySendError::Closed`].
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut s = lock(&self.shared.state);
            if s.closed {
                return Err(TrySendError::Closed(value));
            }
            if s.queue.len() >= s.capacity {
                return Err(TrySendError::Full(value));
            }
            s.queue.push_back(value);
            s.recv_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Whether the mailbox no longer accepts messages.
    pub fn is_closed(&self) -> bool {
        lock(&self.shared.state).closed
    }

    /// Messages waiting now.
    pub fn len(&self) -> usize {
        lock(&self.shared.state).queue.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The future of [`MailSender::send`].
pub struct SendFuture<'a, T> {
    sender: &'a MailSender<T>,
    value: Option<T>,
}

// The future never hands out a pinned reference to `value`.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(value) = this.value.take() else {
            panic!("SendFuture polled after completion");
        };
        let waker = {
            let mut s = lock(&this.sender.shared.state);
            if s.closed {
                return Poll::Ready(Err(SendError(value)));
            }
            if s.queue.len() >= s.capacity {
                // Full: wait for the receiver to take something.
                if !s.send_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    s.send_wakers.push(cx.waker().clone());
                }
                drop(s);
                this.value = Some(value);
                return Poll::Pending;
            }
            s.queue.push_back(value);
            s.recv_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

/// The receiving side, owned by the actor.
pub struct MailReceiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Drop for MailReceiver<T> {
    fn drop(&mut self) {
        let (queue, wakers) = {
            let mut s = lock(&self.shared.state);
            s.closed = true;
            (
                std::mem::take(&mut s.queue),
                std::mem::take(&mut s.send_wakers),
            )
        };
        // Dropped outside the lock: a message's reply slot wakes its caller.
        drop(queue);
        for w in wakers {
            w.wake();
        }
    }
}

impl<T> MailReceiver<T> {
    /// The next message; `None` once every sender is gone (or the mailbox
    /// is closed) and the queue is empty.
    pub fn recv(&mut self) -> RecvFuture<'_, T> {
        RecvFuture { receiver: self }
    }

    /// The next message if one is queued now.
    pub fn try_recv(&mut self) -> Option<T> {
        let (value, wakers) = {
            let mut s = lock(&self.shared.state);
            let value = s.queue.pop_front()?;
            (value, std::mem::take(&mut s.send_wakers))
        };
        for w in wakers {
            w.wake();
        }
        Some(value)
    }

    /// Refuses further messages; the queued ones stay for
    /// [`MailReceiver::try_recv`]. Senders waiting for room fail. Idempotent.
    pub fn close(&mut self) {
        let wakers = {
            let mut s = lock(&self.shared.state);
            s.closed = true;
            std::mem::take(&mut s.send_wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        lock(&self.shared.state).capacity
    }
}

/// The future of [`MailReceiver::recv`]. Cancel-safe: a message is taken
/// only when the future completes.
pub struct RecvFuture<'a, T> {
    receiver: &'a mut MailReceiver<T>,
}

impl<T> Future for RecvFuture<'_, T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let (value, wakers) = {
            let mut s = lock(&self.receiver.shared.state);
            match s.queue.pop_front() {
                Some(v) => (v, std::mem::take(&mut s.send_wakers)),
                None if s.senders == 0 || s.closed => return Poll::Ready(None),
                None => {
                    s.recv_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        };
        for w in wakers {
            w.wake();
        }
        Poll::Ready(Some(value))
    }
}

// ----- reply slots -----------------------------------------------------------

/// The caller stopped waiting, or the actor dropped the call unanswered
/// (it shut down, or it was killed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the call was dropped without an answer")]
pub struct Canceled;

struct Slot<T> {
    value: Option<T>,
    tx_alive: bool,
    rx_alive: bool,
    waker: Option<Waker>,
}

/// A one-shot reply slot: the actor answers through the [`ReplyTx`], the
/// caller awaits the [`ReplyRx`].
pub fn reply_channel<T>() -> (ReplyTx<T>, ReplyRx<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        tx_alive: true,
        rx_alive: true,
        waker: None,
    }));
    (ReplyTx { slot: slot.clone() }, ReplyRx { slot })
}

/// The answering side of a call.
pub struct ReplyTx<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> std::fmt::Debug for ReplyTx<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyTx").finish_non_exhaustive()
    }
}

impl<T> ReplyTx<T> {
    /// Answers the call.
    ///
    /// # Errors
    /// The value comes back if the caller stopped waiting.
    pub fn send(self, value: T) -> Result<(), T> {
        let waker = {
            let mut s = lock(&self.slot);
            if !s.rx_alive {
                return Err(value);
            }
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
        // `self` drops here: `tx_alive` goes false after the value is in.
    }

    /// Whether the caller stopped waiting.
    pub fn is_closed(&self) -> bool {
        !lock(&self.slot).rx_alive
    }
}

impl<T> Drop for ReplyTx<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = lock(&self.slot);
            s.tx_alive = false;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The waiting side of a call: a future of the answer.
pub struct ReplyRx<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Drop for ReplyRx<T> {
    fn drop(&mut self) {
        lock(&self.slot).rx_alive = false;
    }
}

impl<T> Future for ReplyRx<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = lock(&self.slot);
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if !s.tx_alive {
            return Poll::Ready(Err(Canceled));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn a_full_mailbox_refuses_try_send_and_keeps_fifo_order() {
        let (tx, mut rx) = mailbox(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(3).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn close_refuses_new_messages_but_keeps_queued_ones() {
        let (tx, mut rx) = mailbox(4);
        tx.try_send("queued").unwrap();
        rx.close();
        rx.close();
        assert_eq!(tx.try_send("late"), Err(TrySendError::Closed("late")));
        assert_eq!(rx.try_recv(), Some("queued"));
        assert!(tx.is_closed());
    }

    #[test]
    fn recv_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = mailbox::<u32>(1);
        let tx2 = tx.clone();
        drop(tx);
        tx2.try_send(5).unwrap();
        drop(tx2);
        assert_eq!(block_on(rx.recv()), Some(5));
        assert_eq!(block_on(rx.recv()), None);
    }

    #[test]
    fn a_waiting_sender_proceeds_once_a_message_is_taken() {
        block_on(async {
            let (tx, mut rx) = mailbox(1);
            tx.send(1).await.unwrap();
            let waiting = tokio::spawn(async move { tx.send(2).await });
            tokio::task::yield_now().await;
            assert!(!waiting.is_finished(), "pushed back while full");
            assert_eq!(rx.recv().await, Some(1));
            waiting.await.unwrap().unwrap();
            assert_eq!(rx.recv().await, Some(2));
        });
    }

    #[test]
    fn dropping_the_receiver_cancels_queued_calls() {
        block_on(async {
            let (tx, rx) = mailbox(2);
            let (reply, answer) = reply_channel::<u32>();
            tx.try_send(reply).unwrap();
            drop(rx);
            assert_eq!(answer.await, Err(Canceled));
        });
    }

    #[test]
    fn a_reply_reaches_its_caller_and_a_gone_caller_is_noticed() {
        block_on(async {
            let (reply, answer) = reply_channel();
            reply.send(7).unwrap();
            assert_eq!(answer.await, Ok(7));
            let (reply, answer) = reply_channel::<u8>();
            drop(answer);
            assert!(reply.is_closed());
            assert_eq!(reply.send(1), Err(1));
        });
    }
}
