//! The router: the subscription table, and the forwarding of each event to
//! the recipients fixed at its acceptance.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    Action, ActorId, Channel, ControlOp, Event, EventId, Mode, PubsubConfig, RouterOutput,
    Subscription, ToPeer, ToRouter,
};
use crate::coverage::Coverage;
use crate::time::Time;

/// The transitions of the router, as recorded in [`Router::coverage`].
pub const ROUTER_TRANSITIONS: &[&str] = &[
    "control: in order -> applied",
    "control: early -> buffered",
    "control: duplicate -> acknowledged again",
    "control: beyond the window -> dropped",
    "subscribe: new subscription",
    "subscribe: action replaced",
    "unsubscribe: removed",
    "unsubscribe: not subscribed, nothing",
    "publish: accepted (fire-and-forget)",
    "publish: early -> pending",
    "publish: pending -> accepted in order",
    "publish: duplicate -> acknowledged again",
    "publish: beyond the window -> dropped",
    "publish: held back by a full link",
    "accept: no recipient",
    "deliver ack: link freed",
    "deliver ack: nothing new",
    "redeliver unacknowledged events",
    "recover from durable state",
];

/// Indices into [`ROUTER_TRANSITIONS`].
#[derive(Clone, Copy)]
pub(super) enum Tr {
    ControlApplied,
    ControlEarly,
    ControlDuplicate,
    ControlBeyondWindow,
    SubscribeNew,
    SubscribeReplaced,
    UnsubscribeRemoved,
    UnsubscribeNothing,
    AcceptedFireAndForget,
    PublishEarly,
    PublishAcceptedInOrder,
    PublishDuplicate,
    PublishBeyondWindow,
    PublishHeldBack,
    NoRecipient,
    DeliverAckFreed,
    DeliverAckNothing,
    Redeliver,
    Recover,
}

/// Reliable mode: the router's end of the link to one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Link {
    /// The link sequence number the next event gets (from 1).
    next_seq: u64,
    /// Forwarded and not yet acknowledged, by link sequence number.
    unacked: BTreeMap<u64, (Event, Arc<[Subscription]>)>,
}

impl Default for Link {
    /// A link that has forwarded nothing: the first event gets number 1.
    fn default() -> Self {
        Link {
            next_seq: 1,
            unacked: BTreeMap::new(),
        }
    }
}

/// What the router keeps across a crash: the subscription table, how far it
/// applied each peer's control operations and accepted each publisher's
/// events, and every link's unacknowledged events. Save
/// [`Router::durable`] after each call; rebuild with [`Router::recover`].
/// Early (out-of-order) publishes and control operations are volatile: their
/// senders retransmit them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouterDurable {
    subscriptions: BTreeMap<Channel, BTreeMap<ActorId, Option<Action>>>,
    control_applied: BTreeMap<ActorId, u64>,
    accepted: BTreeMap<ActorId, u64>,
    links: BTreeMap<ActorId, Link>,
}

/// The router: applies subscription changes, accepts events, fixes their
/// recipients and forwards them (see the module docs for the rules).
///
/// Mutate ([`Router::handle_message`], [`Router::handle_timeout`]), then
/// drain [`Router::poll_output`] until it returns `None`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Router {
    cfg: PubsubConfig,
    d: RouterDurable,
    /// Control operations that arrived ahead of the next expected one.
    early_control: BTreeMap<ActorId, BTreeMap<u64, ControlOp>>,
    /// Reliable: publishes not accepted yet (early, or held back by a full
    /// link), per publisher.
    pending: BTreeMap<ActorId, BTreeMap<u64, Event>>,
    redeliver_at: Option<Time>,
    outputs: VecDeque<RouterOutput>,
    cov: Coverage,
}

impl Router {
    /// A router with no subscriptions.
    pub fn new(cfg: PubsubConfig) -> Self {
        Router::build(cfg, Time::ZERO, &RouterDurable::default())
    }

    /// A router rebuilt after a crash from what it saved. Unacknowledged
    /// events are forwarded again at the first `handle_timeout`.
    pub fn recover(cfg: PubsubConfig, now: Time, durable: &RouterDurable) -> Self {
        let mut r = Router::build(cfg, now, durable);
        r.hit(Tr::Recover);
        r
    }

    fn build(cfg: PubsubConfig, now: Time, durable: &RouterDurable) -> Self {
        let unacked = durable.links.values().any(|l| !l.unacked.is_empty());
        Router {
            cfg,
            d: durable.clone(),
            early_control: BTreeMap::new(),
            pending: BTreeMap::new(),
            redeliver_at: unacked.then_some(now),
            outputs: VecDeque::new(),
            cov: Coverage::new(),
        }
    }

    /// The transitions taken so far (indices into [`ROUTER_TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    // ----- queries -------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &PubsubConfig {
        &self.cfg
    }

    /// What must survive a crash.
    pub fn durable(&self) -> &RouterDurable {
        &self.d
    }

    /// Subscribers of `channel` with their actions, ascending.
    pub fn subscribers(&self, channel: &Channel) -> Vec<(ActorId, Option<Action>)> {
        self.d
            .subscriptions
            .get(channel)
            .map(|m| m.iter().map(|(a, act)| (*a, act.clone())).collect())
            .unwrap_or_default()
    }

    /// The subscriptions of `actor`, by channel.
    pub fn subscriptions_of(&self, actor: ActorId) -> Vec<Subscription> {
        self.d
            .subscriptions
            .iter()
            .filter_map(|(channel, m)| {
                m.get(&actor).map(|action| Subscription {
                    channel: channel.clone(),
                    action: action.clone(),
                })
            })
            .collect()
    }

    /// Reliable mode: the highest sequence number accepted from `publisher`
    /// (0 if none).
    pub fn accepted_upto(&self, publisher: ActorId) -> u64 {
        self.d.accepted.get(&publisher).copied().unwrap_or(0)
    }

    /// Reliable mode: events forwarded to `actor` and not yet acknowledged.
    pub fn unacked(&self, actor: ActorId) -> usize {
        self.d.links.get(&actor).map_or(0, |l| l.unacked.len())
    }

    /// Whether nothing is in flight: no unacknowledged event, nothing
    /// waiting for acceptance or application.
    pub fn is_idle(&self) -> bool {
        self.d.links.values().all(|l| l.unacked.is_empty())
            && self.pending.values().all(BTreeMap::is_empty)
            && self.early_control.values().all(BTreeMap::is_empty)
    }

    /// When [`Router::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.redeliver_at
    }

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<RouterOutput> {
        self.outputs.pop_front()
    }

    // ----- inputs --------------------------------------------------------

    /// A message from the peer of actor `from`. Ignored: a publish whose
    /// event names another publisher, sequence number 0, anything beyond the
    /// receive window (it comes again), and acknowledgements of nothing.
    pub fn handle_message(&mut self, now: Time, from: ActorId, msg: ToRouter) {
        match msg {
            ToRouter::Publish(event) => {
                if event.id.publisher != from || event.id.seq == 0 {
                    return;
                }
                match self.cfg.mode {
                    Mode::FireAndForget => {
                        self.hit(Tr::AcceptedFireAndForget);
                        self.accept(now, event);
                    }
                    Mode::Reliable => self.receive_publish(now, from, event),
                }
            }
            ToRouter::Control { seq, op } => self.receive_control(now, from, seq, op),
            ToRouter::DeliverAck { upto } => {
                let Some(link) = self.d.links.get_mut(&from) else {
                    self.hit(Tr::DeliverAckNothing);
                    return;
                };
                let before = link.unacked.len();
                while let Some(first) = link.unacked.first_entry()
                    && *first.key() <= upto
                {
                    first.remove();
                }
                let freed = link.unacked.len() < before;
                if freed {
                    self.hit(Tr::DeliverAckFreed);
                    self.accept_all_pending(now);
                } else {
                    self.hit(Tr::DeliverAckNothing);
                }
                self.disarm_if_idle();
            }
        }
    }

    fn receive_publish(&mut self, now: Time, from: ActorId, event: Event) {
        let accepted = self.accepted_upto(from);
        let seq = event.id.seq;
        if seq > accepted && seq - accepted <= self.cfg.window() {
            if seq > accepted + 1 {
                self.hit(Tr::PublishEarly);
            }
            self.pending.entry(from).or_default().insert(seq, event);
            self.accept_pending(now, from);
        } else if seq <= accepted {
            self.hit(Tr::PublishDuplicate);
        } else {
            self.hit(Tr::PublishBeyondWindow);
        }
        let upto = self.accepted_upto(from);
        if upto > 0 {
            self.send(from, ToPeer::PublishAck { upto });
        }
    }

    fn receive_control(&mut self, now: Time, from: ActorId, seq: u64, op: ControlOp) {
        let applied = self.d.control_applied.get(&from).copied().unwrap_or(0);
        if seq == 0 {
            return;
        }
        if seq <= applied {
            self.hit(Tr::ControlDuplicate);
        } else if seq - applied > self.cfg.window() {
            self.hit(Tr::ControlBeyondWindow);
        } else if seq > applied + 1 {
            self.hit(Tr::ControlEarly);
        }
        if seq > applied && seq - applied <= self.cfg.window() {
            let early = self.early_control.entry(from).or_default();
            early.insert(seq, op);
            let mut upto = applied;
            let mut ops = Vec::new();
            while let Some(op) = early.remove(&(upto + 1)) {
                upto += 1;
                ops.push(op);
            }
            if early.is_empty() {
                self.early_control.remove(&from);
            }
            if !ops.is_empty() {
                for op in ops {
                    self.hit(Tr::ControlApplied);
                    self.apply(from, op);
                }
                self.d.control_applied.insert(from, upto);
                // An unsubscription may release an event held back by a
                // full link.
                self.accept_all_pending(now);
            }
        }
        let upto = self.d.control_applied.get(&from).copied().unwrap_or(0);
        if upto > 0 {
            self.send(from, ToPeer::ControlAck { upto });
        }
    }

    fn apply(&mut self, from: ActorId, op: ControlOp) {
        match op {
            ControlOp::Subscribe(s) => {
                let replaced = self
                    .d
                    .subscriptions
                    .entry(s.channel)
                    .or_default()
                    .insert(from, s.action)
                    .is_some();
                self.hit(if replaced {
                    Tr::SubscribeReplaced
                } else {
                    Tr::SubscribeNew
                });
            }
            ControlOp::Unsubscribe(channel) => {
                let mut removed = false;
                if let Some(m) = self.d.subscriptions.get_mut(&channel) {
                    removed = m.remove(&from).is_some();
                    if m.is_empty() {
                        self.d.subscriptions.remove(&channel);
                    }
                }
                self.hit(if removed {
                    Tr::UnsubscribeRemoved
                } else {
                    Tr::UnsubscribeNothing
                });
            }
        }
    }

    /// The recipients of `event` now, with their matching subscriptions: the
    /// subscribers of any of its channels, except its publisher.
    fn recipients(&self, event: &Event) -> BTreeMap<ActorId, Vec<Subscription>> {
        let mut out: BTreeMap<ActorId, Vec<Subscription>> = BTreeMap::new();
        for channel in event.channels.iter() {
            let Some(subs) = self.d.subscriptions.get(channel) else {
                continue;
            };
            for (actor, action) in subs {
                if *actor != event.id.publisher {
                    out.entry(*actor).or_default().push(Subscription {
                        channel: channel.clone(),
                        action: action.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether `f` holds for any recipient of `event` now (see
    /// [`Router::recipients`]), without listing them.
    fn any_recipient(&self, event: &Event, mut f: impl FnMut(ActorId) -> bool) -> bool {
        event.channels.iter().any(|channel| {
            self.d.subscriptions.get(channel).is_some_and(|subs| {
                subs.keys()
                    .any(|actor| *actor != event.id.publisher && f(*actor))
            })
        })
    }

    /// Fixes the recipients of `event` and forwards it to each.
    fn accept(&mut self, now: Time, event: Event) {
        let recipients = self.recipients(&event);
        if recipients.is_empty() {
            self.hit(Tr::NoRecipient);
        }
        let reliable = self.cfg.mode == Mode::Reliable;
        self.outputs.push_back(RouterOutput::Accepted {
            event: event.id,
            recipients: recipients.keys().copied().collect(),
        });
        for (to, matched) in recipients {
            let matched: Arc<[Subscription]> = matched.into();
            let link = if reliable {
                let link = self.d.links.entry(to).or_default();
                let seq = link.next_seq;
                link.next_seq += 1;
                link.unacked.insert(seq, (event.clone(), matched.clone()));
                Some(seq)
            } else {
                None
            };
            self.send(
                to,
                ToPeer::Deliver {
                    link,
                    event: event.clone(),
                    matched,
                },
            );
        }
        if reliable && self.redeliver_at.is_none() && !self.link_queues_empty() {
            self.redeliver_at = Some(now + self.cfg.interval());
        }
    }

    /// Reliable: accepts `publisher`'s pending events in sequence order while
    /// the next one is there and every one of its recipients' links has
    /// room. Returns whether anything was accepted.
    fn accept_pending(&mut self, now: Time, publisher: ActorId) -> bool {
        let mut any = false;
        loop {
            let next = self.accepted_upto(publisher) + 1;
            let Some(event) = self.pending.get(&publisher).and_then(|p| p.get(&next)) else {
                break;
            };
            let max = self.cfg.max_link_queue.max(1);
            let full = self.any_recipient(event, |a| self.unacked(a) >= max);
            if full {
                self.hit(Tr::PublishHeldBack);
                break;
            }
            let event = self
                .pending
                .get_mut(&publisher)
                .and_then(|p| p.remove(&next))
                .expect("present");
            self.d.accepted.insert(publisher, next);
            self.hit(Tr::PublishAcceptedInOrder);
            self.accept(now, event);
            any = true;
        }
        if self.pending.get(&publisher).is_some_and(BTreeMap::is_empty) {
            self.pending.remove(&publisher);
        }
        any
    }

    /// Retries every publisher with pending events; acknowledges the ones
    /// that advanced.
    fn accept_all_pending(&mut self, now: Time) {
        let publishers: Vec<ActorId> = self.pending.keys().copied().collect();
        for p in publishers {
            if self.accept_pending(now, p) {
                let upto = self.accepted_upto(p);
                self.send(p, ToPeer::PublishAck { upto });
            }
        }
    }

    fn link_queues_empty(&self) -> bool {
        self.d.links.values().all(|l| l.unacked.is_empty())
    }

    fn disarm_if_idle(&mut self) {
        if self.link_queues_empty() {
            self.redeliver_at = None;
        }
    }

    fn send(&mut self, to: ActorId, msg: ToPeer) {
        self.outputs.push_back(RouterOutput::Send { to, msg });
    }

    /// Forwards every unacknowledged event again, per recipient in link
    /// order, if the redelivery timer is due. Spurious or early calls do
    /// nothing.
    pub fn handle_timeout(&mut self, now: Time) {
        let Some(at) = self.redeliver_at else {
            return;
        };
        if at > now {
            return;
        }
        self.redeliver_at = None;
        self.hit(Tr::Redeliver);
        let mut resend = Vec::new();
        for (to, link) in &self.d.links {
            for (seq, (event, matched)) in &link.unacked {
                resend.push((
                    *to,
                    ToPeer::Deliver {
                        link: Some(*seq),
                        event: event.clone(),
                        matched: matched.clone(),
                    },
                ));
            }
        }
        for (to, msg) in resend {
            self.send(to, msg);
        }
        if !self.link_queues_empty() {
            self.redeliver_at = Some(now + self.cfg.interval());
        }
    }

    /// The ids of events accepted and still unacknowledged by `actor`, in
    /// link order (for inspection).
    pub fn unacked_events(&self, actor: ActorId) -> Vec<EventId> {
        self.d
            .links
            .get(&actor)
            .map(|l| l.unacked.values().map(|(e, _)| e.id).collect())
            .unwrap_or_default()
    }
}
