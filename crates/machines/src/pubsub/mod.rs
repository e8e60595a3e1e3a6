//! Channel pub/sub: actors subscribe to named channels and publish events to
//! one or several channels at once, through a router.
//!
//! Two machines:
//! - a [`Peer`] per actor (node): publishes, subscribes, unsubscribes, and
//!   delivers the events it receives to its actor;
//! - one [`Router`]: keeps the subscription table, fixes each event's
//!   recipients and forwards it to them.
//!
//! Every message is addressed peer -> router ([`ToRouter`]) or router -> peer
//! ([`ToPeer`]); the network may lose, duplicate and reorder them. Nodes may
//! crash: each machine names what it keeps ([`PeerDurable`],
//! [`RouterDurable`]) and is rebuilt from it by `recover`.
//!
//! # Rules, both modes
//! - An [`Event`] is identified by [`EventId`] `(publisher, seq)`; a
//!   publisher's sequence numbers start at 1, increase by one per publish and
//!   survive crashes, so an id is never reused.
//! - **Subscriptions** map `(channel, actor)` to an optional [`Action`] (the
//!   handler named by the subscriber). Subscribing again replaces the action;
//!   unsubscribing a channel one is not subscribed to does nothing. Control
//!   operations ([`ControlOp`]) are reliable in both modes: each peer numbers
//!   them, retransmits them until acknowledged, and the router applies them
//!   exactly once, in the peer's order, acknowledging only what it applied.
//! - **Recipients** of an event are fixed when the router accepts it: every
//!   actor subscribed at that moment to at least one of the event's channels,
//!   except the publisher, which never receives its own event. Each recipient
//!   gets the event once (not once per matching channel), with its matching
//!   subscriptions. [`RouterOutput::Accepted`] reports each acceptance.
//! - **Unsubscribe (simcast).** The router applies control operations and
//!   acceptances one at a time, so every event is accepted either before or
//!   after a given unsubscribe. An event accepted after the router applied
//!   `unsubscribe(c)` of actor `s` does not count `s` as a subscriber of `c`.
//!   The acknowledgement ([`PeerOutput::Unsubscribed`]) is sent only after
//!   that point, so **an event published after `s` saw the acknowledgement
//!   is never delivered to `s` because of `c`** (it reaches the router, and is
//!   accepted, later still). An event accepted before the unsubscribe keeps
//!   `s` as a recipient and may still arrive after the acknowledgement.
//!
//! # Fire-and-forget mode ([`Mode::FireAndForget`], the reference)
//! At most once: a publish is sent once, the router forwards it once to each
//! recipient, nobody acks or retries. Ordered only per publisher-subscriber
//! pair: a peer drops an event whose sequence number is not above the last it
//! delivered from that publisher (so late, reordered and duplicated copies are
//! dropped).
//!
//! # Reliable mode ([`Mode::Reliable`], simcast)
//! Exactly once, in per-publisher order, to every recipient:
//! - a peer keeps each publish in its outbox and retransmits it until the
//!   router acknowledges it; [`PeerOutput::Published`] then reports it;
//! - the router accepts each publisher's events in sequence order (buffering
//!   ones that arrive early, dropping duplicates) and acknowledges
//!   cumulatively;
//! - per recipient, the router numbers the events it forwards (a link
//!   sequence) and retransmits unacknowledged ones; the peer delivers them in
//!   link order, buffering out-of-order ones and dropping duplicates, and
//!   acknowledges cumulatively.
//!
//! Since the router accepts a publisher's events in order and each link
//! preserves the router's order, every subscriber sees every publisher's
//! events in publication order.
//!
//! **Backpressure:** a peer's outbox and control backlog are bounded (typed
//! errors when full); the router accepts an event only when every recipient's
//! link has room, otherwise the event waits (unacknowledged) and the
//! publisher keeps retransmitting.
//!
//! # Shape
//! Mutate, then drain: call `handle_message`, `handle_timeout` or a command,
//! then drain `poll_output` until `None`; call `handle_timeout` at
//! `poll_timeout`.

mod peer;
mod router;

use core::fmt;
use core::time::Duration;
use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::peer::{PEER_TRANSITIONS, Peer, PeerDurable};
pub use self::router::{ROUTER_TRANSITIONS, Router, RouterDurable};

/// An actor (one per peer). The router is not an actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ActorId(pub u32);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

/// A named channel, e.g. `order.events`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Channel(pub Arc<str>);

impl Channel {
    /// A channel by name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Channel(name.into())
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The action a subscriber names to handle a channel's events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Action(pub Arc<str>);

impl Action {
    /// An action by name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Action(name.into())
    }
}

/// One subscription of an actor: a channel and, optionally, its handler.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subscription {
    /// The channel.
    pub channel: Channel,
    /// The action handling it, if the subscriber named one.
    pub action: Option<Action>,
}

/// Identifies an event: its publisher and the publisher's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    /// Who published it.
    pub publisher: ActorId,
    /// The publisher's sequence number, from 1.
    pub seq: u64,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.publisher, self.seq)
    }
}

/// A published event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Its identity.
    pub id: EventId,
    /// The channels it is published to (never empty when built by a peer).
    /// Shared: an event is copied to every recipient and every retransmit.
    pub channels: Arc<BTreeSet<Channel>>,
    /// The payload (opaque).
    pub payload: u64,
}

/// How events travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// At most once, no ack, no retry; ordered per publisher-subscriber pair
    /// by dropping older events.
    FireAndForget,
    /// Acks, redelivery and dedup: exactly once, in per-publisher order.
    Reliable,
}

/// A subscription change, sent reliably by a peer to the router.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ControlOp {
    /// Subscribe to a channel (or replace the action of a subscription).
    Subscribe(Subscription),
    /// Unsubscribe from a channel.
    Unsubscribe(Channel),
}

/// A message from a peer to the router. The sender is given to
/// [`Router::handle_message`] by the network, not carried here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToRouter {
    /// An event to publish (a retransmission in reliable mode is the same
    /// message again).
    Publish(Event),
    /// A subscription change, numbered per peer from 1.
    Control {
        /// The peer's control sequence number.
        seq: u64,
        /// The change.
        op: ControlOp,
    },
    /// Reliable mode: every link sequence number up to `upto` was delivered.
    DeliverAck {
        /// Cumulative acknowledgement.
        upto: u64,
    },
}

/// A message from the router to a peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ToPeer {
    /// Reliable mode: the peer's events up to sequence `upto` are accepted.
    PublishAck {
        /// Cumulative acknowledgement.
        upto: u64,
    },
    /// The peer's control operations up to `upto` are applied.
    ControlAck {
        /// Cumulative acknowledgement.
        upto: u64,
    },
    /// An event for this peer.
    Deliver {
        /// Reliable mode: the link sequence number (from 1); `None` in
        /// fire-and-forget mode.
        link: Option<u64>,
        /// The event.
        event: Event,
        /// The recipient's subscriptions matching the event's channels, when
        /// it was accepted (shared with the router's copy for redelivery).
        matched: Arc<[Subscription]>,
    },
}

/// An event handed to the actor.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// The subscriptions it matched (channel and handling action).
    pub matched: Arc<[Subscription]>,
}

/// What a peer asks of its driver, or reports to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerOutput {
    /// Send this message to the router.
    Send(ToRouter),
    /// Hand this event to the actor.
    Deliver(Delivery),
    /// Reliable mode: the router accepted this event of ours.
    Published(EventId),
    /// The router applied our subscription to this channel.
    Subscribed(Channel),
    /// The router applied our unsubscription from this channel.
    Unsubscribed(Channel),
}

/// What the router asks of its driver, or reports to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouterOutput {
    /// Send `msg` to the peer of actor `to`.
    Send {
        /// The addressee.
        to: ActorId,
        /// The message.
        msg: ToPeer,
    },
    /// The router accepted `event` and fixed its recipients (ascending).
    Accepted {
        /// The event.
        event: EventId,
        /// Who must receive it (reliable mode: exactly once each).
        recipients: Vec<ActorId>,
    },
}

/// Errors of the pub/sub machines. None of them changes any state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PubsubError {
    /// A publish naming no channel.
    #[error("a publish must name at least one channel")]
    NoChannels,
    /// Reliable mode: the peer's outbox of unacknowledged publishes is full.
    #[error("outbox full: {max} publishes await acknowledgement")]
    OutboxFull {
        /// The bound.
        max: usize,
    },
    /// The peer's backlog of unacknowledged control operations is full.
    #[error("control backlog full: {max} operations await acknowledgement")]
    ControlBacklogFull {
        /// The bound.
        max: usize,
    },
}

/// Deliberately broken variants of the pub/sub machines, for mutation
/// testing of the simulator; never enable one outside a simulation. Off by
/// default. Both live in the peer's receive path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PubsubFlaw {
    /// The peer delivers duplicate copies again (reliable: an already
    /// delivered link sequence; fire-and-forget: a copy of the last event
    /// delivered from a publisher). Breaks `pubsub.no_duplicates`.
    NoDedup,
    /// The peer delivers events as they arrive instead of buffering early
    /// ones (reliable), or delivers events older than the last one from the
    /// same publisher (fire-and-forget). Breaks `pubsub.per_publisher_fifo`.
    NoReorderBuffer,
}

/// Configuration shared by the router and the peers of one system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PubsubConfig {
    /// Fire-and-forget or reliable.
    pub mode: Mode,
    /// How often unacknowledged messages are retransmitted.
    pub retransmit_interval: Duration,
    /// How far ahead of the next expected sequence number a receiver buffers
    /// (reliable events, control operations); further ones are dropped and
    /// come again by retransmission.
    pub window: u64,
    /// Bound on a peer's unacknowledged publishes (reliable mode).
    pub max_outbox: usize,
    /// Bound on a peer's unacknowledged control operations.
    pub max_control_backlog: usize,
    /// Bound on the router's unacknowledged events per recipient (reliable
    /// mode); a full link holds back acceptance.
    pub max_link_queue: usize,
    /// A deliberate flaw (`None` in production).
    pub flaw: Option<PubsubFlaw>,
}

impl PubsubConfig {
    /// Defaults for `mode`: retransmit every 200 ms, window 64, outbox and
    /// control backlog 256, link queue 1024, no flaw.
    pub fn new(mode: Mode) -> Self {
        PubsubConfig {
            mode,
            retransmit_interval: Duration::from_millis(200),
            window: 64,
            max_outbox: 256,
            max_control_backlog: 256,
            max_link_queue: 1024,
            flaw: None,
        }
    }

    /// The retransmit interval, at least 1 ms.
    fn interval(&self) -> Duration {
        self.retransmit_interval.max(Duration::from_millis(1))
    }

    /// The window, at least 1.
    fn window(&self) -> u64 {
        self.window.max(1)
    }
}

#[cfg(test)]
mod tests;
