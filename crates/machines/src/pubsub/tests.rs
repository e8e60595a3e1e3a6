//! The pub/sub rules, one test each, on a tiny harness (a router, a few
//! peers, a network list the test controls); then the machines against a
//! naive model over random lossy, duplicating, reordering schedules with
//! crashes.

use core::time::Duration;
use std::collections::BTreeMap;

use super::*;
use crate::time::Time;

const A: ActorId = ActorId(0);
const B: ActorId = ActorId(1);
const C: ActorId = ActorId(2);

fn ch(name: &str) -> Channel {
    Channel::new(name)
}

/// A message on the wire.
#[derive(Clone, Debug, PartialEq)]
enum Wire {
    Up(ActorId, ToRouter),
    Down(ActorId, ToPeer),
}

/// A router, peers, and the network between them.
struct Sys {
    now: Time,
    cfg: PubsubConfig,
    router: Router,
    peers: BTreeMap<ActorId, Peer>,
    net: Vec<Wire>,
    /// Per peer: every delivery, in order.
    delivered: BTreeMap<ActorId, Vec<Delivery>>,
    /// Per peer: every report other than deliveries and sends.
    reports: BTreeMap<ActorId, Vec<PeerOutput>>,
    accepted: Vec<(EventId, Vec<ActorId>)>,
}

impl Sys {
    fn new(mode: Mode, actors: &[ActorId]) -> Sys {
        Sys::with_config(PubsubConfig::new(mode), actors)
    }

    fn with_config(cfg: PubsubConfig, actors: &[ActorId]) -> Sys {
        Sys {
            now: Time::ZERO,
            router: Router::new(cfg.clone()),
            peers: actors
                .iter()
                .map(|a| (*a, Peer::new(*a, cfg.clone())))
                .collect(),
            cfg,
            net: Vec::new(),
            delivered: actors.iter().map(|a| (*a, Vec::new())).collect(),
            reports: actors.iter().map(|a| (*a, Vec::new())).collect(),
            accepted: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Some(o) = self.router.poll_output() {
            match o {
                RouterOutput::Send { to, msg } => self.net.push(Wire::Down(to, msg)),
                RouterOutput::Accepted { event, recipients } => {
                    self.accepted.push((event, recipients))
                }
            }
        }
        for (a, p) in &mut self.peers {
            while let Some(o) = p.poll_output() {
                match o {
                    PeerOutput::Send(m) => self.net.push(Wire::Up(*a, m)),
                    PeerOutput::Deliver(d) => self.delivered.get_mut(a).unwrap().push(d),
                    other => self.reports.get_mut(a).unwrap().push(other),
                }
            }
        }
    }

    fn peer(&mut self, a: ActorId) -> &mut Peer {
        self.peers.get_mut(&a).unwrap()
    }

    fn publish(&mut self, a: ActorId, channels: &[&str], payload: u64) -> EventId {
        let now = self.now;
        let id = self
            .peer(a)
            .publish(now, channels.iter().map(|c| ch(c)), payload)
            .unwrap();
        self.drain();
        id
    }

    fn subscribe(&mut self, a: ActorId, c: &str, action: Option<&str>) {
        let now = self.now;
        self.peer(a)
            .subscribe(now, ch(c), action.map(Action::new))
            .unwrap();
        self.drain();
    }

    fn unsubscribe(&mut self, a: ActorId, c: &str) {
        let now = self.now;
        self.peer(a).unsubscribe(now, ch(c)).unwrap();
        self.drain();
    }

    /// Delivers the message at `i`.
    fn deliver(&mut self, i: usize) {
        let now = self.now;
        match self.net.remove(i) {
            Wire::Up(from, m) => self.router.handle_message(now, from, m),
            Wire::Down(to, m) => self.peer(to).handle_message(now, m),
        }
        self.drain();
    }

    /// Delivers everything in FIFO order until the network is empty.
    fn flush(&mut self) {
        let mut budget = 10_000;
        while !self.net.is_empty() {
            budget -= 1;
            assert!(budget > 0, "flush does not converge");
            self.deliver(0);
        }
    }

    /// Advances time and fires every due timer.
    fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        let now = self.now;
        self.router.handle_timeout(now);
        for p in self.peers.values_mut() {
            p.handle_timeout(now);
        }
        self.drain();
    }

    fn settle(&mut self) {
        for _ in 0..100 {
            self.flush();
            if self.router.is_idle() && self.peers.values().all(Peer::is_idle) {
                return;
            }
            self.advance(self.cfg.retransmit_interval.as_millis() as u64);
        }
        panic!("does not settle");
    }

    fn got(&self, a: ActorId) -> Vec<EventId> {
        self.delivered[&a].iter().map(|d| d.event.id).collect()
    }

    fn take_net(&mut self) -> Vec<Wire> {
        std::mem::take(&mut self.net)
    }
}

fn ev(publisher: ActorId, seq: u64) -> EventId {
    EventId { publisher, seq }
}

fn both_modes() -> [Mode; 2] {
    [Mode::FireAndForget, Mode::Reliable]
}

// ----- both modes --------------------------------------------------------

#[test]
fn a_publish_must_name_a_channel() {
    let mut p = Peer::new(A, PubsubConfig::new(Mode::Reliable));
    let before = p.clone();
    assert_eq!(p.publish(Time::ZERO, [], 1), Err(PubsubError::NoChannels));
    assert_eq!(p, before);
}

#[test]
fn event_ids_count_from_one_per_publisher() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    assert_eq!(s.publish(A, &["x"], 0), ev(A, 1));
    assert_eq!(s.publish(A, &["x"], 0), ev(A, 2));
    assert_eq!(s.publish(B, &["x"], 0), ev(B, 1));
}

#[test]
fn subscribers_receive_events_of_their_channels_and_nobody_else_does() {
    for mode in both_modes() {
        let mut s = Sys::new(mode, &[A, B, C]);
        s.subscribe(B, "x", None);
        s.subscribe(C, "y", None);
        s.settle();
        let id = s.publish(A, &["x"], 42);
        s.settle();
        assert_eq!(s.got(B), [id], "{mode:?}");
        assert_eq!(s.delivered[&B][0].event.payload, 42);
        assert_eq!(s.got(C), [], "{mode:?}: not subscribed to x");
        assert_eq!(s.accepted, [(id, vec![B])]);
    }
}

#[test]
fn the_publisher_never_receives_its_own_event() {
    for mode in both_modes() {
        let mut s = Sys::new(mode, &[A, B]);
        s.subscribe(A, "x", None);
        s.subscribe(B, "x", None);
        s.settle();
        let id = s.publish(A, &["x"], 0);
        s.settle();
        assert_eq!(s.got(A), [], "{mode:?}");
        assert_eq!(s.got(B), [id]);
    }
}

#[test]
fn a_multi_channel_publish_reaches_each_subscriber_once_with_its_matching_subscriptions() {
    for mode in both_modes() {
        let mut s = Sys::new(mode, &[A, B, C]);
        s.subscribe(B, "user.events", Some("handle_user"));
        s.subscribe(B, "audit.events", Some("log"));
        s.subscribe(C, "analytics.events", None);
        s.settle();
        let id = s.publish(A, &["user.events", "analytics.events", "audit.events"], 7);
        s.settle();
        assert_eq!(s.got(B), [id], "{mode:?}: once, not once per channel");
        assert_eq!(
            *s.delivered[&B][0].matched,
            [
                Subscription {
                    channel: ch("audit.events"),
                    action: Some(Action::new("log"))
                },
                Subscription {
                    channel: ch("user.events"),
                    action: Some(Action::new("handle_user"))
                },
            ]
        );
        assert_eq!(s.got(C), [id]);
        assert_eq!(s.delivered[&C][0].matched[0].action, None);
    }
}

#[test]
fn subscribing_again_replaces_the_action() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", Some("old"));
    s.subscribe(B, "x", Some("new"));
    s.settle();
    assert_eq!(
        s.router.subscribers(&ch("x")),
        [(B, Some(Action::new("new")))]
    );
    s.publish(A, &["x"], 0);
    s.settle();
    assert_eq!(s.delivered[&B].len(), 1);
    assert_eq!(
        s.delivered[&B][0].matched[0].action,
        Some(Action::new("new"))
    );
}

#[test]
fn subscription_changes_are_acknowledged_in_order() {
    let mut s = Sys::new(Mode::FireAndForget, &[B]);
    s.subscribe(B, "x", None);
    s.unsubscribe(B, "y");
    s.settle();
    assert_eq!(
        s.reports[&B],
        [
            PeerOutput::Subscribed(ch("x")),
            PeerOutput::Unsubscribed(ch("y"))
        ]
    );
    assert_eq!(
        s.router.subscriptions_of(B).len(),
        1,
        "unknown unsubscribe: no-op"
    );
}

#[test]
fn control_operations_apply_in_the_peers_order_despite_reordering() {
    let mut s = Sys::new(Mode::Reliable, &[B]);
    s.subscribe(B, "x", None);
    s.unsubscribe(B, "x");
    // Deliver the unsubscribe first.
    s.deliver(1);
    assert_eq!(s.router.subscriptions_of(B), [], "held back: not applied");
    s.settle();
    assert_eq!(
        s.router.subscriptions_of(B),
        [],
        "subscribe, then unsubscribe"
    );
}

#[test]
fn control_operations_are_retransmitted_until_acknowledged_and_applied_once() {
    let mut s = Sys::new(Mode::FireAndForget, &[B]);
    s.subscribe(B, "x", Some("h"));
    s.take_net(); // lost
    assert!(s.peer(B).poll_timeout().is_some());
    s.advance(200);
    assert_eq!(s.net.len(), 1, "resent");
    s.net.push(s.net[0].clone()); // duplicated
    s.flush();
    assert_eq!(s.router.subscriptions_of(B).len(), 1);
    assert_eq!(s.reports[&B], [PeerOutput::Subscribed(ch("x"))]);
    assert_eq!(s.peer(B).poll_timeout(), None);
}

#[test]
fn the_control_backlog_is_bounded() {
    let mut cfg = PubsubConfig::new(Mode::Reliable);
    cfg.max_control_backlog = 2;
    let mut p = Peer::new(B, cfg);
    p.subscribe(Time::ZERO, ch("x"), None).unwrap();
    p.subscribe(Time::ZERO, ch("y"), None).unwrap();
    assert_eq!(
        p.unsubscribe(Time::ZERO, ch("x")),
        Err(PubsubError::ControlBacklogFull { max: 2 })
    );
}

#[test]
fn an_event_published_after_the_unsubscribe_is_acknowledged_is_never_delivered() {
    for mode in both_modes() {
        let mut s = Sys::new(mode, &[A, B]);
        s.subscribe(B, "x", None);
        s.settle();
        s.unsubscribe(B, "x");
        s.settle();
        assert_eq!(
            s.reports[&B].last(),
            Some(&PeerOutput::Unsubscribed(ch("x")))
        );
        s.publish(A, &["x"], 0);
        s.settle();
        assert_eq!(s.got(B), [], "{mode:?}");
        assert_eq!(s.accepted[0].1, [], "no recipient");
    }
}

#[test]
fn an_event_accepted_before_the_unsubscribe_is_still_delivered_reliably() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let id = s.publish(A, &["x"], 0);
    s.deliver(0); // accepted at the router; the delivery to B is in flight
    s.take_net(); // and lost, with the publish ack
    s.unsubscribe(B, "x");
    s.flush();
    assert_eq!(
        s.reports[&B].last(),
        Some(&PeerOutput::Unsubscribed(ch("x")))
    );
    assert_eq!(s.got(B), []);
    s.settle();
    assert_eq!(s.got(B), [id], "recipients are fixed at acceptance");
}

#[test]
fn a_subscription_applied_after_an_event_was_accepted_does_not_receive_it() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.publish(A, &["x"], 0);
    s.flush();
    s.subscribe(B, "x", None);
    s.settle();
    assert_eq!(s.got(B), []);
}

#[test]
fn forged_and_malformed_messages_are_ignored() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let forged = Event {
        id: ev(C, 1),
        channels: std::sync::Arc::new([ch("x")].into()),
        payload: 0,
    };
    s.router
        .handle_message(s.now, A, ToRouter::Publish(forged.clone()));
    s.router.handle_message(
        s.now,
        A,
        ToRouter::Control {
            seq: 0,
            op: ControlOp::Unsubscribe(ch("x")),
        },
    );
    s.router
        .handle_message(s.now, C, ToRouter::DeliverAck { upto: 9 });
    s.drain();
    assert!(s.net.is_empty() && s.accepted.is_empty());
    // Reliable peer: a delivery without a link number does not fit the mode.
    s.peer(B).handle_message(
        Time::ZERO,
        ToPeer::Deliver {
            link: None,
            event: forged,
            matched: Vec::new().into(),
        },
    );
    s.drain();
    assert_eq!(s.got(B), []);
}

// ----- fire-and-forget ---------------------------------------------------

#[test]
fn fire_and_forget_sends_once_and_never_retries() {
    let mut s = Sys::new(Mode::FireAndForget, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    s.publish(A, &["x"], 0);
    assert_eq!(s.peer(A).poll_timeout(), None, "no retransmit timer");
    s.deliver(0);
    assert_eq!(s.router.poll_timeout(), None, "no redelivery timer");
    assert!(
        s.net
            .iter()
            .all(|w| matches!(w, Wire::Down(_, ToPeer::Deliver { link: None, .. }))),
        "no publish ack: {:?}",
        s.net
    );
    s.take_net(); // lost
    s.advance(10_000);
    s.flush();
    assert_eq!(s.got(B), [], "at most once");
}

#[test]
fn fire_and_forget_drops_events_older_than_the_last_delivered_from_that_publisher() {
    let mut s = Sys::new(Mode::FireAndForget, &[A, B, C]);
    s.subscribe(B, "x", None);
    s.settle();
    s.publish(A, &["x"], 1);
    s.publish(A, &["x"], 2);
    s.publish(C, &["x"], 3);
    s.flush();
    assert_eq!(s.got(B), [ev(A, 1), ev(A, 2), ev(C, 1)]);
    // Replay what B got, reordered and duplicated: only newer ones pass.
    let mut fresh = Sys::new(Mode::FireAndForget, &[B]);
    let msg = |e: EventId| ToPeer::Deliver {
        link: None,
        event: Event {
            id: e,
            channels: std::sync::Arc::new([ch("x")].into()),
            payload: 0,
        },
        matched: Vec::new().into(),
    };
    for e in [ev(A, 2), ev(A, 1), ev(C, 1), ev(A, 2), ev(A, 3)] {
        fresh.peer(B).handle_message(Time::ZERO, msg(e));
    }
    fresh.drain();
    assert_eq!(fresh.got(B), [ev(A, 2), ev(C, 1), ev(A, 3)]);
}

#[test]
fn fire_and_forget_ignores_publish_acks() {
    let mut p = Peer::new(A, PubsubConfig::new(Mode::FireAndForget));
    p.publish(Time::ZERO, [ch("x")], 0).unwrap();
    while p.poll_output().is_some() {}
    p.handle_message(Time::ZERO, ToPeer::PublishAck { upto: 1 });
    assert_eq!(p.poll_output(), None);
}

// ----- reliable ------------------------------------------------------------

#[test]
fn reliable_publishes_are_retransmitted_until_accepted() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let id = s.publish(A, &["x"], 0);
    s.take_net(); // lost
    assert_eq!(s.peer(A).unacked_publishes().collect::<Vec<_>>(), [id]);
    s.advance(200);
    s.settle();
    assert_eq!(s.got(B), [id]);
    assert_eq!(s.reports[&A], [PeerOutput::Published(id)]);
    assert_eq!(s.peer(A).poll_timeout(), None);
}

#[test]
fn the_router_accepts_a_publishers_events_in_order_and_once() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let e1 = s.publish(A, &["x"], 1);
    let e2 = s.publish(A, &["x"], 2);
    s.net.push(s.net[1].clone()); // e2 twice
    s.deliver(1); // e2 first: held back
    assert!(s.accepted.is_empty());
    s.settle();
    let order: Vec<EventId> = s.accepted.iter().map(|(e, _)| *e).collect();
    assert_eq!(order, [e1, e2]);
    assert_eq!(s.got(B), [e1, e2]);
    assert_eq!(s.router.accepted_upto(A), 2);
}

#[test]
fn the_router_redelivers_until_acknowledged() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let id = s.publish(A, &["x"], 0);
    s.deliver(0);
    s.net.retain(|w| !matches!(w, Wire::Down(B, _))); // delivery lost
    assert_eq!(s.router.unacked(B), 1);
    s.advance(200);
    s.flush();
    assert_eq!(s.got(B), [id]);
    assert_eq!(s.router.unacked(B), 0);
    assert_eq!(s.router.poll_timeout(), None);
}

#[test]
fn a_reliable_peer_delivers_in_order_buffering_early_events_and_dropping_duplicates() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let ids: Vec<EventId> = (0..3).map(|i| s.publish(A, &["x"], i)).collect();
    // Accept all three at the router, keep the deliveries.
    while let Some(i) = s.net.iter().position(|w| matches!(w, Wire::Up(..))) {
        s.deliver(i);
    }
    let mut down: Vec<Wire> = s
        .take_net()
        .into_iter()
        .filter(|w| matches!(w, Wire::Down(B, ToPeer::Deliver { .. })))
        .collect();
    down.reverse();
    down.push(down[0].clone());
    s.net = down;
    s.deliver(0); // link 3: buffered
    assert_eq!(s.got(B), []);
    s.flush();
    assert_eq!(s.got(B), ids, "in order, once");
}

#[test]
fn a_reliable_peer_drops_what_is_beyond_its_window_and_gets_it_again() {
    let mut cfg = PubsubConfig::new(Mode::Reliable);
    cfg.window = 1;
    let mut s = Sys::with_config(cfg, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let e1 = s.publish(A, &["x"], 0);
    let e2 = s.publish(A, &["x"], 0);
    while let Some(i) = s.net.iter().position(|w| matches!(w, Wire::Up(..))) {
        s.deliver(i);
    }
    s.net
        .retain(|w| matches!(w, Wire::Down(B, ToPeer::Deliver { .. })));
    s.deliver(1); // link 2, beyond a window of 1: dropped
    s.deliver(0);
    assert_eq!(s.got(B), [e1]);
    s.settle();
    assert_eq!(s.got(B), [e1, e2]);
}

#[test]
fn the_outbox_is_bounded_in_reliable_mode() {
    let mut cfg = PubsubConfig::new(Mode::Reliable);
    cfg.max_outbox = 1;
    let mut p = Peer::new(A, cfg.clone());
    p.publish(Time::ZERO, [ch("x")], 0).unwrap();
    assert_eq!(
        p.publish(Time::ZERO, [ch("x")], 0),
        Err(PubsubError::OutboxFull { max: 1 })
    );
    cfg.mode = Mode::FireAndForget;
    let mut p = Peer::new(A, cfg);
    p.publish(Time::ZERO, [ch("x")], 0).unwrap();
    assert!(p.publish(Time::ZERO, [ch("x")], 0).is_ok(), "nothing kept");
}

#[test]
fn a_full_link_holds_back_acceptance_until_acknowledged() {
    let mut cfg = PubsubConfig::new(Mode::Reliable);
    cfg.max_link_queue = 1;
    let mut s = Sys::with_config(cfg, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let e1 = s.publish(A, &["x"], 0);
    let e2 = s.publish(A, &["x"], 0);
    s.deliver(0);
    s.deliver(0);
    assert_eq!(s.router.accepted_upto(A), 1, "B's link is full");
    s.settle();
    assert_eq!(s.got(B), [e1, e2]);
    assert_eq!(
        s.reports[&A],
        [PeerOutput::Published(e1), PeerOutput::Published(e2)]
    );
}

#[test]
fn a_recovered_peer_keeps_its_outbox_counters_and_delivery_point() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let e1 = s.publish(A, &["x"], 0);
    s.settle();
    let e2 = s.publish(A, &["x"], 0);
    s.take_net();
    let cfg = s.cfg.clone();
    let now = s.now;
    let a = Peer::recover(A, cfg.clone(), now, s.peers[&A].durable());
    let b = Peer::recover(B, cfg, now, s.peers[&B].durable());
    s.peers.insert(A, a);
    s.peers.insert(B, b);
    assert_eq!(s.peer(A).poll_timeout(), Some(now), "resends at once");
    s.advance(0);
    s.settle();
    assert_eq!(s.got(B), [e1, e2], "e1 not delivered twice");
    assert_eq!(s.publish(A, &["x"], 0), ev(A, 3), "ids never reused");
}

#[test]
fn a_recovered_router_keeps_subscriptions_and_unacknowledged_events() {
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.settle();
    let e1 = s.publish(A, &["x"], 0);
    s.deliver(0);
    s.take_net();
    s.router = Router::recover(s.cfg.clone(), s.now, s.router.durable());
    assert_eq!(s.router.subscribers(&ch("x")).len(), 1);
    assert_eq!(s.router.unacked_events(B), [e1]);
    s.advance(0);
    s.settle();
    assert_eq!(s.got(B), [e1]);
    assert_eq!(s.accepted.len(), 1, "accepted once");
}

// ----- flaws -------------------------------------------------------------

fn flawed(mode: Mode, flaw: PubsubFlaw) -> Sys {
    let mut cfg = PubsubConfig::new(mode);
    cfg.flaw = Some(flaw);
    Sys::with_config(cfg, &[A, B])
}

#[test]
fn flaw_no_dedup_delivers_a_duplicate() {
    for mode in both_modes() {
        let mut s = flawed(mode, PubsubFlaw::NoDedup);
        s.subscribe(B, "x", None);
        s.settle();
        s.publish(A, &["x"], 0);
        s.deliver(0);
        let copy = s
            .net
            .iter()
            .find(|w| matches!(w, Wire::Down(B, ToPeer::Deliver { .. })));
        let copy = copy.unwrap().clone();
        s.net.push(copy);
        s.flush();
        assert_eq!(s.got(B).len(), 2, "{mode:?}: delivered twice");
    }
}

#[test]
fn flaw_no_reorder_buffer_delivers_out_of_order() {
    for mode in both_modes() {
        let mut s = flawed(mode, PubsubFlaw::NoReorderBuffer);
        s.subscribe(B, "x", None);
        s.settle();
        let e1 = s.publish(A, &["x"], 0);
        let e2 = s.publish(A, &["x"], 0);
        s.deliver(0);
        s.deliver(0);
        s.net
            .retain(|w| matches!(w, Wire::Down(B, ToPeer::Deliver { .. })));
        s.net.reverse();
        s.flush();
        assert_eq!(s.got(B), [e2, e1], "{mode:?}");
    }
}

// ----- coverage --------------------------------------------------------------

#[test]
fn transitions_are_named_and_recorded() {
    assert_eq!(ROUTER_TRANSITIONS.len(), router::Tr::Recover as usize + 1);
    assert_eq!(PEER_TRANSITIONS.len(), peer::Tr::Recover as usize + 1);
    let mut s = Sys::new(Mode::Reliable, &[A, B]);
    s.subscribe(B, "x", None);
    s.flush();
    s.publish(A, &["x"], 1);
    s.flush();
    let cov = s.router.coverage();
    for tr in [
        router::Tr::ControlApplied,
        router::Tr::SubscribeNew,
        router::Tr::PublishAcceptedInOrder,
        router::Tr::DeliverAckFreed,
    ] {
        assert!(cov.has(tr as usize), "{}", ROUTER_TRANSITIONS[tr as usize]);
    }
    assert!(!cov.has(router::Tr::Recover as usize));
    let cov = s.peers[&B].coverage();
    for tr in [
        peer::Tr::ControlSent,
        peer::Tr::Subscribed,
        peer::Tr::InOrderDelivered,
    ] {
        assert!(cov.has(tr as usize), "{}", PEER_TRANSITIONS[tr as usize]);
    }
    let r = Router::recover(s.cfg.clone(), s.now, s.router.durable());
    assert!(r.coverage().has(router::Tr::Recover as usize));
}

// ----- model ---------------------------------------------------------------

mod model {
    //! Random schedules against a naive model that only knows what each
    //! peer asked for and when it was acknowledged:
    //! - `must`: the subscriber's subscription to one of the event's channels
    //!   was acknowledged before the publish, and it never unsubscribed that
    //!   channel afterwards;
    //! - `must_not`: the publisher itself, or a peer that, for every channel
    //!   of the event, was unsubscribed (acknowledged) or never subscribed
    //!   before the publish and did not subscribe afterwards.
    //!
    //! Safety (both modes): a peer gets an event at most once, only if it is
    //! among the recipients fixed at acceptance and not in `must_not`, and
    //! a publisher's events in increasing order. Reliable mode, after healing:
    //! every publish accepted, every subscriber's delivered sequence is
    //! exactly the accepted events naming it, in order, and covers `must`.
    use proptest::prelude::*;

    use super::*;

    const PEERS: u32 = 3;
    const CHANNELS: [&str; 3] = ["c0", "c1", "c2"];

    #[derive(Clone, Debug)]
    enum Step {
        Publish(u32, u8),
        Subscribe(u32, usize),
        Unsubscribe(u32, usize),
        Deliver(usize),
        Drop(usize),
        Duplicate(usize),
        Advance(u64),
        CrashPeer(u32),
        CrashRouter,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..PEERS, 1..8u8).prop_map(|(p, m)| Step::Publish(p, m)),
            3 => (0..PEERS, 0..3usize).prop_map(|(p, c)| Step::Subscribe(p, c)),
            1 => (0..PEERS, 0..3usize).prop_map(|(p, c)| Step::Unsubscribe(p, c)),
            12 => any::<usize>().prop_map(Step::Deliver),
            2 => any::<usize>().prop_map(Step::Drop),
            2 => any::<usize>().prop_map(Step::Duplicate),
            2 => (0..400u64).prop_map(Step::Advance),
            1 => (0..PEERS).prop_map(Step::CrashPeer),
            1 => Just(Step::CrashRouter),
        ]
    }

    /// One control operation a peer issued: (channel, subscribe?, issued at,
    /// acknowledged at).
    type Ctl = (usize, bool, u64, Option<u64>);

    #[derive(Default)]
    struct Model {
        clock: u64,
        /// Per peer, control operations in issue order.
        ctl: BTreeMap<ActorId, Vec<Ctl>>,
        acked: BTreeMap<ActorId, usize>,
        /// Publishes: id -> (channels, published at).
        published: BTreeMap<EventId, (Vec<usize>, u64)>,
        confirmed: Vec<EventId>,
        accepted: BTreeMap<EventId, Vec<ActorId>>,
        got: BTreeMap<ActorId, Vec<EventId>>,
    }

    impl Model {
        fn subscribed_at(&self, s: ActorId, c: usize, at: u64) -> Option<bool> {
            // The last op on `c` issued before `at`, if acknowledged before it.
            let ops = self.ctl.get(&s)?;
            let last = ops
                .iter()
                .rev()
                .find(|(ch, _, issued, _)| *ch == c && *issued < at)?;
            match last.3 {
                Some(acked) if acked < at => Some(last.1),
                _ => None,
            }
        }

        fn later(&self, s: ActorId, c: usize, at: u64, subscribe: bool) -> bool {
            self.ctl.get(&s).is_some_and(|ops| {
                ops.iter()
                    .any(|(ch, sub, issued, _)| *ch == c && *sub == subscribe && *issued > at)
            })
        }

        fn must(&self, s: ActorId, e: EventId) -> bool {
            let (channels, at) = &self.published[&e];
            s != e.publisher
                && channels.iter().any(|c| {
                    self.subscribed_at(s, *c, *at) == Some(true) && !self.later(s, *c, *at, false)
                })
        }

        fn must_not(&self, s: ActorId, e: EventId) -> bool {
            let (channels, at) = &self.published[&e];
            s == e.publisher
                || channels.iter().all(|c| {
                    let never = self.ctl.get(&s).is_none_or(|ops| {
                        !ops.iter()
                            .any(|(ch, sub, issued, _)| *ch == *c && *sub && *issued < *at)
                    });
                    let off = self.subscribed_at(s, *c, *at) == Some(false);
                    (never || off) && !self.later(s, *c, *at, true)
                })
        }
    }

    struct World {
        s: Sys,
        m: Model,
    }

    impl World {
        fn observe(&mut self) -> Result<(), TestCaseError> {
            self.s.drain();
            for (e, recipients) in std::mem::take(&mut self.s.accepted) {
                prop_assert!(
                    self.m.published.contains_key(&e),
                    "accepted an unknown event"
                );
                if self.s.cfg.mode == Mode::Reliable {
                    let later = self
                        .m
                        .accepted
                        .keys()
                        .filter(|x| x.publisher == e.publisher && x.seq > e.seq)
                        .count();
                    prop_assert_eq!(later, 0, "accepted out of publisher order");
                    prop_assert!(
                        self.m.accepted.insert(e, recipients.clone()).is_none(),
                        "accepted twice: {}",
                        e
                    );
                } else {
                    // Fire-and-forget forwards every copy it receives.
                    let all = self.m.accepted.entry(e).or_default();
                    all.extend(recipients.iter().copied());
                    all.sort();
                    all.dedup();
                }
                for r in &recipients {
                    prop_assert!(!self.m.must_not(*r, e), "{} must not receive {}", r, e);
                }
            }
            for (a, ds) in &mut self.s.delivered {
                for d in std::mem::take(ds) {
                    let e = d.event.id;
                    let got = self.m.got.entry(*a).or_default();
                    prop_assert!(
                        !got.contains(&e),
                        "pubsub.no_duplicates: {} got {} twice",
                        a,
                        e
                    );
                    let last = got.iter().rfind(|x| x.publisher == e.publisher);
                    prop_assert!(
                        last.is_none_or(|l| l.seq < e.seq),
                        "pubsub.per_publisher_fifo: {} got {} after {:?}",
                        a,
                        e,
                        last
                    );
                    let rec = self.m.accepted.get(&e);
                    prop_assert!(
                        rec.is_some_and(|r| r.contains(a)),
                        "pubsub.only_subscribers: {} got {}",
                        a,
                        e
                    );
                    got.push(e);
                }
            }
            for (a, rs) in &mut self.s.reports {
                for r in std::mem::take(rs) {
                    match r {
                        PeerOutput::Subscribed(_) | PeerOutput::Unsubscribed(_) => {
                            let k = self.m.acked.entry(*a).or_default();
                            let op = &mut self.m.ctl.get_mut(a).unwrap()[*k];
                            let (c, sub) = (CHANNELS[op.0], op.1);
                            let expect = if sub {
                                PeerOutput::Subscribed(ch(c))
                            } else {
                                PeerOutput::Unsubscribed(ch(c))
                            };
                            prop_assert_eq!(&r, &expect, "acks in issue order");
                            op.3 = Some(self.m.clock);
                            *k += 1;
                        }
                        PeerOutput::Published(e) => {
                            prop_assert!(self.m.accepted.contains_key(&e));
                            prop_assert!(!self.m.confirmed.contains(&e));
                            self.m.confirmed.push(e);
                        }
                        PeerOutput::Send(_) | PeerOutput::Deliver(_) => unreachable!(),
                    }
                }
            }
            Ok(())
        }

        fn step(&mut self, st: Step) -> Result<(), TestCaseError> {
            self.m.clock += 1;
            let now = self.s.now;
            match st {
                Step::Publish(p, mask) => {
                    let a = ActorId(p);
                    let chans: Vec<usize> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
                    let r = self
                        .s
                        .peer(a)
                        .publish(now, chans.iter().map(|i| ch(CHANNELS[*i])), 0);
                    match r {
                        Ok(e) => {
                            self.m.published.insert(e, (chans, self.m.clock));
                        }
                        Err(err) => prop_assert_eq!(
                            err,
                            PubsubError::OutboxFull {
                                max: self.s.cfg.max_outbox
                            }
                        ),
                    }
                }
                Step::Subscribe(p, c) | Step::Unsubscribe(p, c) => {
                    let a = ActorId(p);
                    let sub = matches!(st, Step::Subscribe(..));
                    let r = if sub {
                        self.s.peer(a).subscribe(now, ch(CHANNELS[c]), None)
                    } else {
                        self.s.peer(a).unsubscribe(now, ch(CHANNELS[c]))
                    };
                    if r.is_ok() {
                        self.m
                            .ctl
                            .entry(a)
                            .or_default()
                            .push((c, sub, self.m.clock, None));
                    }
                }
                Step::Deliver(i) => {
                    if !self.s.net.is_empty() {
                        let n = self.s.net.len();
                        self.s.deliver(i % n);
                    }
                }
                Step::Drop(i) => {
                    if !self.s.net.is_empty() {
                        let n = self.s.net.len();
                        self.s.net.remove(i % n);
                    }
                }
                Step::Duplicate(i) => {
                    if !self.s.net.is_empty() {
                        let w = self.s.net[i % self.s.net.len()].clone();
                        self.s.net.push(w);
                    }
                }
                Step::Advance(ms) => self.s.advance(ms),
                Step::CrashPeer(p) => {
                    let a = ActorId(p);
                    let d = self.s.peers[&a].durable().clone();
                    let cfg = self.s.cfg.clone();
                    self.s.peers.insert(a, Peer::recover(a, cfg, now, &d));
                }
                Step::CrashRouter => {
                    let d = self.s.router.durable().clone();
                    self.s.router = Router::recover(self.s.cfg.clone(), now, &d);
                }
            }
            self.observe()
        }

        fn heal(&mut self) -> Result<(), TestCaseError> {
            for _ in 0..200 {
                while !self.s.net.is_empty() {
                    self.m.clock += 1;
                    self.s.deliver(0);
                    self.observe()?;
                }
                if self.s.router.is_idle() && self.s.peers.values().all(Peer::is_idle) {
                    return Ok(());
                }
                self.m.clock += 1;
                self.s.advance(200);
                self.observe()?;
            }
            prop_assert!(false, "does not settle");
            Ok(())
        }

        fn check_reliable_end(&self) -> Result<(), TestCaseError> {
            let published: Vec<EventId> = self.m.published.keys().copied().collect();
            let accepted: Vec<EventId> = self.m.accepted.keys().copied().collect();
            prop_assert_eq!(&accepted, &published, "every publish accepted");
            let mut confirmed = self.m.confirmed.clone();
            confirmed.sort();
            prop_assert_eq!(&confirmed, &published, "every publish confirmed");
            for p in 0..PEERS {
                let s = ActorId(p);
                let got = self.m.got.get(&s).cloned().unwrap_or_default();
                for publisher in 0..PEERS {
                    let expected: Vec<EventId> = self
                        .m
                        .accepted
                        .iter()
                        .filter(|(e, r)| e.publisher == ActorId(publisher) && r.contains(&s))
                        .map(|(e, _)| *e)
                        .collect();
                    let from: Vec<EventId> = got
                        .iter()
                        .filter(|e| e.publisher == ActorId(publisher))
                        .copied()
                        .collect();
                    prop_assert_eq!(
                        &from,
                        &expected,
                        "pubsub.every_subscriber_receives: {} from {}",
                        s,
                        ActorId(publisher)
                    );
                }
                for e in &published {
                    if self.m.must(s, *e) {
                        prop_assert!(got.contains(e), "{} must receive {}", s, e);
                    }
                }
            }
            Ok(())
        }
    }

    fn config(mode: Mode) -> PubsubConfig {
        let mut cfg = PubsubConfig::new(mode);
        cfg.window = 3;
        cfg.max_outbox = 6;
        cfg.max_link_queue = 3;
        cfg
    }

    fn world(mode: Mode) -> World {
        let actors: Vec<ActorId> = (0..PEERS).map(ActorId).collect();
        World {
            s: Sys::with_config(config(mode), &actors),
            m: Model::default(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(384))]
        #[test]
        fn reliable_mode_delivers_every_event_once_in_order_to_exactly_its_recipients(
            steps in prop::collection::vec(step(), 1..120),
        ) {
            let mut w = world(Mode::Reliable);
            for st in steps {
                w.step(st)?;
            }
            w.heal()?;
            w.check_reliable_end()?;
        }

        #[test]
        fn fire_and_forget_mode_never_duplicates_reorders_or_misroutes(
            steps in prop::collection::vec(step(), 1..120),
        ) {
            let mut w = world(Mode::FireAndForget);
            for st in steps {
                w.step(st)?;
            }
            w.heal()?;
        }
    }
}
