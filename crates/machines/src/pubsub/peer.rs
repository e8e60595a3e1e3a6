//! The peer: one actor's end of the pub/sub system.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    Action, ActorId, Channel, ControlOp, Delivery, Event, EventId, Mode, PeerOutput, PubsubConfig,
    PubsubError, PubsubFlaw, Subscription, ToPeer, ToRouter,
};
use crate::coverage::Coverage;
use crate::time::Time;

/// The transitions of a peer, as recorded in [`Peer::coverage`].
pub const PEER_TRANSITIONS: &[&str] = &[
    "publish: sent once (fire-and-forget)",
    "publish: kept until acknowledged (reliable)",
    "publish: refused, outbox full",
    "control: sent until acknowledged",
    "control: refused, backlog full",
    "publish ack: outbox -> published",
    "control ack: -> subscribed",
    "control ack: -> unsubscribed",
    "fire-and-forget: newer -> delivered",
    "fire-and-forget: not newer -> dropped",
    "reliable: next in link order -> delivered",
    "reliable: early -> buffered",
    "reliable: buffered -> delivered",
    "reliable: duplicate -> dropped",
    "reliable: beyond the window -> dropped",
    "retransmit unacknowledged publishes and controls",
    "recover from durable state",
];

/// Indices into [`PEER_TRANSITIONS`].
#[derive(Clone, Copy)]
pub(super) enum Tr {
    PublishOnce,
    PublishKept,
    OutboxFull,
    ControlSent,
    ControlBacklogFull,
    Published,
    Subscribed,
    Unsubscribed,
    FreshDelivered,
    StaleDropped,
    InOrderDelivered,
    EarlyBuffered,
    BufferedDelivered,
    DuplicateDropped,
    BeyondWindow,
    Retransmit,
    Recover,
}

/// What a peer keeps across a crash: its sequence counters, its outbox of
/// unacknowledged publishes and control operations, and how far it has
/// delivered. Save [`Peer::durable`] after each call; rebuild with
/// [`Peer::recover`]. The reorder buffer is volatile (the router
/// retransmits what it held).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerDurable {
    next_pub_seq: u64,
    outbox: BTreeMap<u64, Event>,
    next_control_seq: u64,
    control: BTreeMap<u64, ControlOp>,
    /// Reliable: the next link sequence number to deliver.
    next_link: u64,
    /// Fire-and-forget: the last sequence number delivered per publisher.
    last_from: BTreeMap<ActorId, u64>,
}

impl Default for PeerDurable {
    /// A peer that has done nothing yet.
    fn default() -> Self {
        PeerDurable {
            next_pub_seq: 1,
            outbox: BTreeMap::new(),
            next_control_seq: 1,
            control: BTreeMap::new(),
            next_link: 1,
            last_from: BTreeMap::new(),
        }
    }
}

/// One actor's pub/sub endpoint: publishes, manages its subscriptions and
/// delivers the events the router forwards to it (see the module docs for
/// the rules of each mode).
///
/// Mutate ([`Peer::publish`], [`Peer::subscribe`], [`Peer::unsubscribe`],
/// [`Peer::handle_message`], [`Peer::handle_timeout`]), then drain
/// [`Peer::poll_output`] until it returns `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    id: ActorId,
    cfg: PubsubConfig,
    d: PeerDurable,
    /// Reliable: events that arrived ahead of `next_link`.
    reorder: BTreeMap<u64, (Event, Arc<[Subscription]>)>,
    /// Flaw `NoReorderBuffer`: link numbers already delivered out of order.
    ahead: BTreeSet<u64>,
    retransmit_at: Option<Time>,
    outputs: VecDeque<PeerOutput>,
    cov: Coverage,
}

impl Peer {
    /// A fresh peer for actor `id`.
    pub fn new(id: ActorId, cfg: PubsubConfig) -> Self {
        Peer {
            id,
            cfg,
            d: PeerDurable::default(),
            reorder: BTreeMap::new(),
            ahead: BTreeSet::new(),
            retransmit_at: None,
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    /// A peer rebuilt after a crash from what it saved. Anything
    /// unacknowledged is retransmitted at the first `handle_timeout`.
    pub fn recover(id: ActorId, cfg: PubsubConfig, now: Time, durable: &PeerDurable) -> Self {
        let mut peer = Peer::new(id, cfg);
        peer.hit(Tr::Recover);
        peer.d = durable.clone();
        if peer.has_unacked() {
            peer.retransmit_at = Some(now);
        }
        peer
    }

    /// The transitions taken so far (indices into [`PEER_TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    // ----- queries -------------------------------------------------------

    /// The actor.
    pub fn id(&self) -> ActorId {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &PubsubConfig {
        &self.cfg
    }

    /// What must survive a crash.
    pub fn durable(&self) -> &PeerDurable {
        &self.d
    }

    /// Reliable mode: publishes not yet acknowledged by the router.
    pub fn unacked_publishes(&self) -> impl Iterator<Item = EventId> + '_ {
        self.d.outbox.values().map(|e| e.id)
    }

    /// Control operations not yet acknowledged by the router.
    pub fn pending_control(&self) -> usize {
        self.d.control.len()
    }

    /// Whether nothing awaits acknowledgement.
    pub fn is_idle(&self) -> bool {
        !self.has_unacked()
    }

    /// When [`Peer::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.retransmit_at
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<PeerOutput> {
        self.outputs.pop_front()
    }

    fn has_unacked(&self) -> bool {
        !self.d.outbox.is_empty() || !self.d.control.is_empty()
    }

    fn arm(&mut self, now: Time) {
        if self.retransmit_at.is_none() && self.has_unacked() {
            self.retransmit_at = Some(now + self.cfg.interval());
        }
    }

    // ----- commands ------------------------------------------------------

    /// Publishes an event to `channels` and returns its id. Reliable mode:
    /// kept and retransmitted until the router accepts it
    /// ([`PeerOutput::Published`]). Fire-and-forget: sent once.
    ///
    /// # Errors
    /// [`PubsubError::NoChannels`]; [`PubsubError::OutboxFull`] (reliable).
    pub fn publish(
        &mut self,
        now: Time,
        channels: impl IntoIterator<Item = Channel>,
        payload: u64,
    ) -> Result<EventId, PubsubError> {
        let channels: BTreeSet<Channel> = channels.into_iter().collect();
        if channels.is_empty() {
            return Err(PubsubError::NoChannels);
        }
        let reliable = self.cfg.mode == Mode::Reliable;
        if reliable && self.d.outbox.len() >= self.cfg.max_outbox {
            self.hit(Tr::OutboxFull);
            return Err(PubsubError::OutboxFull {
                max: self.cfg.max_outbox,
            });
        }
        let id = EventId {
            publisher: self.id,
            seq: self.d.next_pub_seq,
        };
        self.d.next_pub_seq += 1;
        let event = Event {
            id,
            channels: Arc::new(channels),
            payload,
        };
        if reliable {
            self.hit(Tr::PublishKept);
            self.d.outbox.insert(id.seq, event.clone());
            self.arm(now);
        } else {
            self.hit(Tr::PublishOnce);
        }
        self.outputs
            .push_back(PeerOutput::Send(ToRouter::Publish(event)));
        Ok(id)
    }

    /// Subscribes to `channel`, handled by `action` (replacing the action of
    /// an existing subscription). Acknowledged by
    /// [`PeerOutput::Subscribed`].
    ///
    /// # Errors
    /// [`PubsubError::ControlBacklogFull`].
    pub fn subscribe(
        &mut self,
        now: Time,
        channel: Channel,
        action: Option<Action>,
    ) -> Result<(), PubsubError> {
        self.control(now, ControlOp::Subscribe(Subscription { channel, action }))
    }

    /// Unsubscribes from `channel`. Once [`PeerOutput::Unsubscribed`] is
    /// reported, no event published afterwards is delivered because of
    /// `channel`.
    ///
    /// # Errors
    /// [`PubsubError::ControlBacklogFull`].
    pub fn unsubscribe(&mut self, now: Time, channel: Channel) -> Result<(), PubsubError> {
        self.control(now, ControlOp::Unsubscribe(channel))
    }

    fn control(&mut self, now: Time, op: ControlOp) -> Result<(), PubsubError> {
        if self.d.control.len() >= self.cfg.max_control_backlog {
            self.hit(Tr::ControlBacklogFull);
            return Err(PubsubError::ControlBacklogFull {
                max: self.cfg.max_control_backlog,
            });
        }
        self.hit(Tr::ControlSent);
        let seq = self.d.next_control_seq;
        self.d.next_control_seq += 1;
        self.d.control.insert(seq, op.clone());
        self.outputs
            .push_back(PeerOutput::Send(ToRouter::Control { seq, op }));
        self.arm(now);
        Ok(())
    }

    // ----- inputs --------------------------------------------------------

    /// A message from the router. Messages that do not fit the mode (a
    /// `PublishAck` in fire-and-forget mode, a `Deliver` without a link
    /// number in reliable mode) and acknowledgements of nothing pending are
    /// ignored.
    pub fn handle_message(&mut self, now: Time, msg: ToPeer) {
        let _ = now;
        match msg {
            ToPeer::PublishAck { upto } => {
                if self.cfg.mode == Mode::Reliable {
                    let rest = self.d.outbox.split_off(&upto.saturating_add(1));
                    let acked = core::mem::replace(&mut self.d.outbox, rest);
                    for event in acked.into_values() {
                        self.cov.hit(Tr::Published as usize);
                        self.outputs.push_back(PeerOutput::Published(event.id));
                    }
                }
            }
            ToPeer::ControlAck { upto } => {
                let rest = self.d.control.split_off(&upto.saturating_add(1));
                let acked = core::mem::replace(&mut self.d.control, rest);
                for op in acked.into_values() {
                    let (t, out) = match op {
                        ControlOp::Subscribe(s) => {
                            (Tr::Subscribed, PeerOutput::Subscribed(s.channel))
                        }
                        ControlOp::Unsubscribe(c) => {
                            (Tr::Unsubscribed, PeerOutput::Unsubscribed(c))
                        }
                    };
                    self.hit(t);
                    self.outputs.push_back(out);
                }
            }
            ToPeer::Deliver {
                link,
                event,
                matched,
            } => match self.cfg.mode {
                Mode::FireAndForget => self.receive_unreliable(event, matched),
                Mode::Reliable => {
                    if let Some(link) = link {
                        self.receive_reliable(link, event, matched);
                    }
                }
            },
        }
        if !self.has_unacked() {
            self.retransmit_at = None;
        }
    }

    /// Fire-and-forget: deliver only what is newer than the last event
    /// delivered from the same publisher.
    fn receive_unreliable(&mut self, event: Event, matched: Arc<[Subscription]>) {
        let publisher = event.id.publisher;
        let seq = event.id.seq;
        let last = self.d.last_from.get(&publisher).copied().unwrap_or(0);
        let fresh = match self.cfg.flaw {
            None => seq > last,
            Some(PubsubFlaw::NoDedup) => seq >= last && seq > 0,
            Some(PubsubFlaw::NoReorderBuffer) => seq != last,
        };
        if fresh {
            self.hit(Tr::FreshDelivered);
            self.d.last_from.insert(publisher, last.max(seq));
            self.deliver(event, matched);
        } else {
            self.hit(Tr::StaleDropped);
        }
    }

    /// Reliable: deliver in link order, exactly once; acknowledge
    /// cumulatively.
    fn receive_reliable(&mut self, link: u64, event: Event, matched: Arc<[Subscription]>) {
        let next = self.d.next_link;
        if link == 0 {
            return;
        }
        if link < next {
            self.hit(Tr::DuplicateDropped);
            if self.cfg.flaw == Some(PubsubFlaw::NoDedup) {
                self.deliver(event, matched);
            }
        } else if link == next {
            self.hit(Tr::InOrderDelivered);
            if !self.ahead.remove(&link) {
                self.deliver(event, matched);
            }
            self.d.next_link += 1;
            self.drain_reorder();
        } else if link - next < self.cfg.window() {
            self.hit(Tr::EarlyBuffered);
            if self.cfg.flaw == Some(PubsubFlaw::NoReorderBuffer) {
                if self.ahead.insert(link) {
                    self.deliver(event, matched);
                }
            } else {
                self.reorder.insert(link, (event, matched));
            }
        } else {
            self.hit(Tr::BeyondWindow);
        }
        // Beyond the window: dropped; the router sends it again later.
        let upto = self.d.next_link - 1;
        if upto > 0 {
            self.outputs
                .push_back(PeerOutput::Send(ToRouter::DeliverAck { upto }));
        }
    }

    /// Delivers what the reorder buffer holds from `next_link` on.
    fn drain_reorder(&mut self) {
        loop {
            let next = self.d.next_link;
            if let Some((event, matched)) = self.reorder.remove(&next) {
                self.hit(Tr::BufferedDelivered);
                self.deliver(event, matched);
            } else if !self.ahead.remove(&next) {
                break;
            }
            self.d.next_link += 1;
        }
        debug_assert!(self.reorder.keys().all(|l| *l > self.d.next_link));
    }

    fn deliver(&mut self, event: Event, matched: Arc<[Subscription]>) {
        self.outputs
            .push_back(PeerOutput::Deliver(Delivery { event, matched }));
    }

    /// Retransmits every unacknowledged publish and control operation, in
    /// sequence order, if the retransmit timer is due. Spurious or early
    /// calls do nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(at) = self.retransmit_at else {
            return;
        };
        if at > now {
            return;
        }
        self.retransmit_at = None;
        self.hit(Tr::Retransmit);
        for event in self.d.outbox.values() {
            self.outputs
                .push_back(PeerOutput::Send(ToRouter::Publish(event.clone())));
        }
        for (seq, op) in &self.d.control {
            self.outputs.push_back(PeerOutput::Send(ToRouter::Control {
                seq: *seq,
                op: op.clone(),
            }));
        }
        self.arm(now);
    }
}
