//! The `pubsub` protocol: actors on several nodes publishing to and
//! subscribing to named channels through a router, over a network that
//! loses, duplicates and reorders messages.
//!
//! World:
//! - node `router` hosting a [`Router`], with durable storage for its
//!   [`RouterDurable`] (saved after every call); a crash loses the early
//!   buffers, the restart recovers from the durable state;
//! - nodes `node-N`, each hosting one actor's [`Peer`] with durable storage
//!   for its [`PeerDurable`] (saved after every call, so a delivery and the
//!   progress it records are atomic);
//! - each actor subscribes to a channel or two at the start, then runs its
//!   actions at random think times: publish to one or two channels, or (with
//!   `churn_ratio`) subscribe to or unsubscribe from a random channel, with
//!   or without a handling action. A burst publishes (or changes
//!   subscriptions) many times at once, against the bounded outbox and
//!   control backlog.
//!
//! The mode (`reliable` or `fire_and_forget`) is the scenario's.
//!
//! Invariants, against the world's own record of each actor's subscription
//! changes (in the order issued; acknowledgements matched to them in
//! order), of each publication and of each delivery:
//! - `pubsub.only_subscribers`: when the router accepts an event, each
//!   recipient could be subscribed to one of its channels at that moment
//!   (the router applies an actor's changes in order, so its table holds a
//!   prefix of them, at least the acknowledged ones and at most the issued
//!   ones), and is not the publisher; an actor is delivered only events it
//!   was a recipient of, matching the event's channels;
//! - `pubsub.no_duplicates`: no actor is delivered the same event twice;
//! - `pubsub.per_publisher_fifo`: an actor is delivered each publisher's
//!   events in publication order;
//! - `pubsub.every_subscriber_receives` (reliable mode only: declared and
//!   checked only when the scenario's mode is reliable): after healing,
//!   every publication was accepted, and delivered to every recipient and to
//!   every actor certainly subscribed to one of its channels when accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use core::time::Duration;
use serde::{Deserialize, Serialize};
use simcast_machines::coverage::Coverage;
use simcast_machines::pubsub::{
    Action, ActorId, Channel, ControlOp, Delivery, EventId, Mode, PEER_TRANSITIONS, Peer,
    PeerDurable, PeerOutput, PubsubConfig, PubsubFlaw, ROUTER_TRANSITIONS, Router, RouterDurable,
    RouterOutput, ToPeer, ToRouter,
};
use simcast_machines::time::Time;

use crate::engine::{Cx, NodeId, Protocol, Shared};
use crate::faults::ppm;
use crate::protocols::checks::{self, us};
use crate::registry::{
    FaultInfo, InvariantInfo, InvariantKind, MutantInfo, ProtocolInfo, SiteInfo,
};

const ONLY_SUBSCRIBERS: &str = "pubsub.only_subscribers";
const NO_DUPLICATES: &str = "pubsub.no_duplicates";
const FIFO: &str = "pubsub.per_publisher_fifo";
const EVERY_SUBSCRIBER: &str = "pubsub.every_subscriber_receives";

/// Names of the pub/sub protocol.
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "pubsub",
    doc: "channel pub/sub through a router: fire-and-forget or reliable (acks, redelivery, dedup)",
    invariants: &[
        InvariantInfo {
            name: ONLY_SUBSCRIBERS,
            kind: InvariantKind::Safety,
            doc: "an event reaches only actors that could be subscribed to one of its channels when it was accepted, never its publisher",
        },
        InvariantInfo {
            name: NO_DUPLICATES,
            kind: InvariantKind::Safety,
            doc: "no actor is delivered the same event twice",
        },
        InvariantInfo {
            name: FIFO,
            kind: InvariantKind::Safety,
            doc: "each actor is delivered each publisher's events in publication order",
        },
        InvariantInfo {
            name: EVERY_SUBSCRIBER,
            kind: InvariantKind::Liveness,
            doc: "reliable mode: after healing, every event is accepted and delivered to each of its recipients and certain subscribers",
        },
    ],
    mutants: &[
        MutantInfo {
            name: "peer-no-dedup",
            invariant: NO_DUPLICATES,
            doc: "a peer delivers duplicate copies again (an old link number, or the last event of a publisher)",
        },
        MutantInfo {
            name: "peer-no-reorder-buffer",
            invariant: FIFO,
            doc: "a peer delivers early events as they arrive (reliable) or older ones after newer (fire-and-forget)",
        },
    ],
    faults: &[
        FaultInfo {
            name: "msg_loss",
            doc: "a message between a peer and the router is lost",
        },
        FaultInfo {
            name: "msg_duplicate",
            doc: "a message between a peer and the router is delivered twice",
        },
        FaultInfo {
            name: "msg_delay",
            doc: "a message between a peer and the router is delayed by late_factor (reordering it)",
        },
        FaultInfo {
            name: "peer_crash",
            doc: "a node crashes as it handles an event, and recovers its peer from its durable state later",
        },
        FaultInfo {
            name: "router_crash",
            doc: "the router crashes as it handles an event, and recovers from its durable state later",
        },
        FaultInfo {
            name: "burst",
            doc: "an actor publishes (or changes subscriptions) `burst` times at once",
        },
    ],
    sites: &[
        SiteInfo {
            name: "send",
            doc: "a message leaves a peer (to_router = 1) or the router (to_router = 0); node 1 = node-1",
            params: &["node", "to_router"],
            faults: &["msg_loss", "msg_duplicate", "msg_delay"],
        },
        SiteInfo {
            name: "peer_event",
            doc: "a node is about to handle a message, a timer or its actor's next action",
            params: &["node"],
            faults: &["peer_crash"],
        },
        SiteInfo {
            name: "router_event",
            doc: "the router is about to handle a message or a timer",
            params: &[],
            faults: &["router_crash"],
        },
        SiteInfo {
            name: "action",
            doc: "an actor is about to act",
            params: &["node"],
            faults: &["burst"],
        },
    ],
    machines: &[("router", ROUTER_TRANSITIONS), ("peer", PEER_TRANSITIONS)],
    unreachable: &[],
};

const F_LOSS: usize = 0;
const F_DUP: usize = 1;
const F_DELAY: usize = 2;
const F_PEER_CRASH: usize = 3;
const F_ROUTER_CRASH: usize = 4;
const F_BURST: usize = 5;

/// How events travel, as written in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    /// At most once, no ack, no retry.
    FireAndForget,
    /// Acks, redelivery and dedup: exactly once, in per-publisher order.
    Reliable,
}

/// The `[workload]` table of a pub/sub scenario. Durations in virtual
/// milliseconds; ranges are `[min, max]`, inclusive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubWorkload {
    /// `reliable` or `fire_and_forget`.
    pub mode: ModeName,
    /// Nodes, one actor (a peer) each.
    pub nodes: u32,
    /// Channels, `ch0`...
    pub channels: u32,
    /// Actions (publish or subscription change) per actor.
    pub actions: u32,
    /// Pause between an actor's actions.
    pub think_ms: [u64; 2],
    /// Probability that an action is a subscription change.
    #[serde(default)]
    pub churn_ratio: f64,
    /// Probability that a publish names two channels.
    #[serde(default)]
    pub multi_channel_ratio: f64,
    /// How many nodes publish (the first ones; default: all). The others
    /// only subscribe and, with `churn_ratio`, change their subscriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publishers: Option<u32>,
    /// One-way network delay.
    pub net_ms: [u64; 2],
    /// How often unacknowledged messages are retransmitted.
    pub retransmit_ms: u64,
    /// How far ahead receivers buffer.
    #[serde(default = "default_window")]
    pub window: u64,
    /// Bound on a peer's unacknowledged publishes.
    #[serde(default = "default_bound")]
    pub max_outbox: usize,
    /// Bound on a peer's unacknowledged subscription changes.
    #[serde(default = "default_bound")]
    pub max_control_backlog: usize,
    /// Bound on the router's unacknowledged events per recipient.
    #[serde(default = "default_bound")]
    pub max_link_queue: usize,
    /// Actions in a burst (fault `burst`).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// A delayed message is this many times slower.
    #[serde(default = "default_late")]
    pub late_factor: u64,
    /// How long a crashed node stays down.
    pub restart_ms: [u64; 2],
}

fn default_window() -> u64 {
    8
}
fn default_bound() -> usize {
    16
}
fn default_burst() -> u32 {
    8
}
fn default_late() -> u64 {
    10
}

impl PubsubWorkload {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// A message naming the key.
    pub fn validate(&self) -> Result<(), String> {
        checks::at_least_one(&[
            ("nodes", u64::from(self.nodes)),
            ("channels", u64::from(self.channels)),
            ("actions", u64::from(self.actions)),
            ("retransmit_ms", self.retransmit_ms),
            ("window", self.window),
            ("max_outbox", self.max_outbox as u64),
            ("max_control_backlog", self.max_control_backlog as u64),
            ("max_link_queue", self.max_link_queue as u64),
            ("burst", u64::from(self.burst)),
            ("late_factor", self.late_factor),
        ])?;
        if self.nodes > 32 {
            return Err("`nodes` must be at most 32".to_owned());
        }
        if self.publishers.is_some_and(|p| p > self.nodes) {
            return Err("`publishers` must be at most `nodes`".to_owned());
        }
        if self.channels > 64 {
            return Err("`channels` must be at most 64".to_owned());
        }
        checks::probabilities(&[
            ("churn_ratio", self.churn_ratio),
            ("multi_channel_ratio", self.multi_channel_ratio),
        ])?;
        checks::ranges(&[
            ("think_ms", self.think_ms),
            ("net_ms", self.net_ms),
            ("restart_ms", self.restart_ms),
        ])?;
        if self.net_ms[0] == 0 {
            return Err("`net_ms` must be at least 1 ms".to_owned());
        }
        Ok(())
    }
}

/// The workload in engine units, hashable.
#[derive(Clone, Debug, Hash)]
struct Params {
    cfg: PubsubConfig,
    reliable: bool,
    nodes: u32,
    publishers: u32,
    channels: u32,
    actions: u32,
    think_us: (u64, u64),
    churn_ppm: u32,
    multi_ppm: u32,
    net_us: (u64, u64),
    burst: u32,
    late: u64,
    restart_us: (u64, u64),
    /// `ch{i}` and `on-ch{i}` for every channel, built once (a function
    /// of `channels`: adds nothing to the world's identity).
    names: Shared<Vec<(Channel, Action)>>,
}

fn channel(i: u32) -> Channel {
    Channel::new(format!("ch{i}"))
}

impl Params {
    fn channel(&self, i: u32) -> Channel {
        self.names[i as usize].0.clone()
    }

    fn action(&self, i: u32) -> Action {
        self.names[i as usize].1.clone()
    }
}

fn channel_index(c: &Channel) -> Option<u32> {
    c.0.strip_prefix("ch")?.parse().ok()
}

fn node_name(a: ActorId) -> String {
    format!("node-{}", a.0 + 1)
}

/// Events of the pub/sub world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PubsubEvent {
    /// An actor's next action.
    Act {
        /// The actor.
        actor: ActorId,
    },
    /// A message reaches the router.
    ToRouter {
        /// The sender.
        from: ActorId,
        /// The message.
        msg: ToRouter,
    },
    /// A message reaches a peer.
    ToPeer {
        /// The addressee.
        to: ActorId,
        /// The message.
        msg: ToPeer,
    },
    /// A peer's retransmit timer.
    PeerTimer {
        /// The actor.
        actor: ActorId,
    },
    /// The router's redelivery timer.
    RouterTimer,
    /// A crashed node comes back.
    PeerRestart {
        /// The actor.
        actor: ActorId,
    },
    /// The crashed router comes back.
    RouterRestart,
}

struct Channels<'a>(&'a BTreeSet<Channel>);

impl fmt::Display for Channels<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.0.iter().enumerate() {
            write!(f, "{}{c}", if i > 0 { "," } else { "" })?;
        }
        Ok(())
    }
}

impl fmt::Display for PubsubEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubsubEvent::Act { actor } => write!(f, "{actor} acts"),
            PubsubEvent::ToRouter { from, msg } => {
                write!(f, "router gets from {from}: ")?;
                match msg {
                    ToRouter::Publish(e) => {
                        write!(f, "publish {} to {}", e.id, Channels(&e.channels))
                    }
                    ToRouter::Control { seq, op } => match op {
                        ControlOp::Subscribe(s) => {
                            write!(f, "control #{seq} subscribe {}", s.channel)?;
                            if let Some(a) = &s.action {
                                write!(f, " (action {})", a.0)?;
                            }
                            Ok(())
                        }
                        ControlOp::Unsubscribe(c) => write!(f, "control #{seq} unsubscribe {c}"),
                    },
                    ToRouter::DeliverAck { upto } => write!(f, "deliver ack upto {upto}"),
                }
            }
            PubsubEvent::ToPeer { to, msg } => {
                write!(f, "{to} gets: ")?;
                match msg {
                    ToPeer::PublishAck { upto } => write!(f, "publish ack upto {upto}"),
                    ToPeer::ControlAck { upto } => write!(f, "control ack upto {upto}"),
                    ToPeer::Deliver { link, event, .. } => {
                        write!(f, "deliver {}", event.id)?;
                        if let Some(l) = link {
                            write!(f, " (link {l})")?;
                        }
                        Ok(())
                    }
                }
            }
            PubsubEvent::PeerTimer { actor } => write!(f, "{actor} retransmit timer"),
            PubsubEvent::RouterTimer => f.write_str("router redelivery timer"),
            PubsubEvent::PeerRestart { actor } => write!(f, "{} restarts", node_name(*actor)),
            PubsubEvent::RouterRestart => f.write_str("router restarts"),
        }
    }
}

/// What the pub/sub world writes in the trace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PubsubNote {
    /// An actor published an event.
    Published {
        /// The event.
        id: EventId,
    },
    /// A publish or a subscription change was refused (backlog full).
    Refused {
        /// The actor.
        actor: ActorId,
    },
    /// An actor asked for a subscription change.
    Control {
        /// The actor.
        actor: ActorId,
        /// The channel.
        channel: u32,
        /// Subscribe (or unsubscribe).
        subscribe: bool,
    },
    /// The router accepted an event.
    Accepted {
        /// The event.
        id: EventId,
        /// How many recipients.
        recipients: u32,
    },
    /// An actor was delivered an event.
    Delivered {
        /// The actor.
        actor: ActorId,
        /// The event.
        id: EventId,
    },
    /// A node or the router recovered from its durable state.
    Recovered {
        /// The actor, or `None` for the router.
        actor: Option<ActorId>,
    },
}

impl fmt::Display for PubsubNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PubsubNote::Published { id } => write!(f, "{} publishes {id}", id.publisher),
            PubsubNote::Refused { actor } => write!(f, "{actor}: refused, backlog full"),
            PubsubNote::Control {
                actor,
                channel,
                subscribe,
            } => write!(
                f,
                "{actor} {} ch{channel}",
                if *subscribe {
                    "subscribes to"
                } else {
                    "unsubscribes from"
                }
            ),
            PubsubNote::Accepted { id, recipients } => {
                write!(f, "router accepts {id} for {recipients} recipients")
            }
            PubsubNote::Delivered { actor, id } => write!(f, "{actor} delivers {id}"),
            PubsubNote::Recovered { actor: Some(a) } => {
                write!(f, "{} recovered its peer", node_name(*a))
            }
            PubsubNote::Recovered { actor: None } => f.write_str("router recovered"),
        }
    }
}

/// One subscription change, as issued.
#[derive(Clone, Copy, Debug, Hash)]
struct ControlRec {
    channel: u32,
    subscribe: bool,
}

/// One node and the world's record of its actor.
#[derive(Clone, Debug, Hash)]
struct Node {
    node: NodeId,
    peer: Option<Peer>,
    /// The peer's storage while it is down (empty while it is up; copied
    /// at the crash, as for the router).
    durable: PeerDurable,
    actions_done: u32,
    /// Subscription changes issued, in order.
    control: Vec<ControlRec>,
    /// How many of them were acknowledged (always a prefix).
    acked: usize,
    /// Per publisher, the sequence numbers delivered.
    delivered: BTreeMap<ActorId, BTreeSet<u64>>,
    /// Times at which a timer event is queued (this incarnation).
    timers: BTreeSet<Time>,
}

/// One acceptance of an event by the router.
#[derive(Clone, Debug, Hash)]
struct Acceptance {
    recipients: Vec<ActorId>,
    /// Actors certainly subscribed to one of its channels then: bit `a` for
    /// actor `a` (a world has at most 32).
    certain: u32,
}

impl Acceptance {
    /// The actors of [`Acceptance::certain`], in id order.
    fn certain(&self) -> impl Iterator<Item = ActorId> + '_ {
        (0..32)
            .filter(|a| self.certain & (1 << a) != 0)
            .map(ActorId)
    }
}

/// What the world knows of one publication.
#[derive(Clone, Debug, Hash)]
struct PubRec {
    /// Its channels: bit `c` for channel `c` (a world has at most 64).
    channels: u64,
    acceptances: Vec<Acceptance>,
}

/// The pub/sub world.
#[derive(Clone, Debug, Hash)]
pub struct PubsubWorld {
    p: Params,
    router_node: NodeId,
    router: Option<Router>,
    /// The router's storage while it is down (empty while it is up). The
    /// router saves its durable state after every call and crashes only
    /// between calls, so its state at the crash is its last save: it is
    /// copied then, not after every call.
    router_durable: RouterDurable,
    router_timers: BTreeSet<Time>,
    nodes: Vec<Node>,
    events: BTreeMap<EventId, PubRec>,
    next_payload: u64,
    /// Transitions of machines lost in crashes (not state).
    lost_coverage: [Coverage; 2],
}

impl PubsubWorld {
    /// A world for `w`, with the mutant applied.
    pub fn new(w: &PubsubWorkload, mutant: Option<&'static MutantInfo>) -> PubsubWorld {
        let flaw = mutant.map(|m| match m.name {
            "peer-no-dedup" => PubsubFlaw::NoDedup,
            "peer-no-reorder-buffer" => PubsubFlaw::NoReorderBuffer,
            other => unreachable!("mutant {other} is not a pubsub mutant"),
        });
        let mode = match w.mode {
            ModeName::FireAndForget => Mode::FireAndForget,
            ModeName::Reliable => Mode::Reliable,
        };
        let mut cfg = PubsubConfig::new(mode);
        cfg.retransmit_interval = Duration::from_millis(w.retransmit_ms);
        cfg.window = w.window;
        cfg.max_outbox = w.max_outbox;
        cfg.max_control_backlog = w.max_control_backlog;
        cfg.max_link_queue = w.max_link_queue;
        cfg.flaw = flaw;
        PubsubWorld {
            p: Params {
                cfg,
                reliable: mode == Mode::Reliable,
                nodes: w.nodes,
                publishers: w.publishers.unwrap_or(w.nodes),
                channels: w.channels,
                actions: w.actions,
                think_us: us(w.think_ms),
                churn_ppm: ppm(w.churn_ratio),
                multi_ppm: ppm(w.multi_channel_ratio),
                net_us: us(w.net_ms),
                burst: w.burst,
                late: w.late_factor,
                restart_us: us(w.restart_ms),
                names: Shared::new(
                    (0..w.channels)
                        .map(|c| (channel(c), Action::new(format!("on-ch{c}"))))
                        .collect(),
                ),
            },
            router_node: NodeId(0),
            router: None,
            router_durable: RouterDurable::default(),
            router_timers: BTreeSet::new(),
            nodes: Vec::new(),
            events: BTreeMap::new(),
            next_payload: 0,
            lost_coverage: [Coverage::new(); 2],
        }
    }

    fn node(&self, a: ActorId) -> &Node {
        &self.nodes[a.0 as usize]
    }

    /// Sends a message over the lossy network (`to_router`: which way).
    fn send(&mut self, cx: &mut Cx<Self>, actor: ActorId, to_router: bool, event: PubsubEvent) {
        let site = [
            ("node", u64::from(actor.0) + 1),
            ("to_router", u64::from(to_router)),
        ];
        if cx.fault_at(F_LOSS, "send", &site) {
            return;
        }
        let target = if to_router {
            self.router_node
        } else {
            self.node(actor).node
        };
        if cx.fault_at(F_DUP, "send", &site) {
            let d = cx.between(self.p.net_us.0, self.p.net_us.1);
            cx.node_after(target, d, event.clone());
        }
        let mut d = cx.between(self.p.net_us.0, self.p.net_us.1);
        if cx.fault_at(F_DELAY, "send", &site) {
            d = d.saturating_mul(self.p.late);
        }
        cx.node_after(target, d, event);
    }

    // ----- the router ------------------------------------------------------

    fn with_router(&mut self, cx: &mut Cx<Self>, f: impl FnOnce(&mut Router, Time)) {
        let now = cx.now();
        let Some(r) = self.router.as_mut() else {
            return;
        };
        f(r, now);
        while let Some(out) = self.router.as_mut().and_then(Router::poll_output) {
            match out {
                RouterOutput::Send { to, msg } => {
                    self.send(cx, to, false, PubsubEvent::ToPeer { to, msg });
                }
                RouterOutput::Accepted { event, recipients } => {
                    self.on_accepted(cx, event, recipients);
                }
            }
        }
        let Some(r) = self.router.as_ref() else {
            return;
        };
        if let Some(due) = r.poll_timeout().map(|t| t.max(cx.now()))
            && self.router_timers.first().is_none_or(|first| due < *first)
        {
            self.router_timers.insert(due);
            cx.node_at(self.router_node, due, PubsubEvent::RouterTimer);
        }
    }

    /// Whether `actor`'s subscriptions could (and certainly did) include one
    /// of `channels` at this moment: the router holds a prefix of its
    /// changes, at least the acknowledged ones, at most the issued ones.
    fn subscribed(&self, actor: ActorId, channels: u64) -> (bool, bool) {
        let n = self.node(actor);
        // Bit c: subscribed to channel c after the changes so far (there
        // are at most 64 channels); only `channels` are tracked.
        let apply = |on: u64, c: &ControlRec| {
            let bit = 1u64 << c.channel;
            if c.subscribe { on | bit } else { on & !bit }
        };
        let mut on = 0u64;
        for c in &n.control[..n.acked] {
            if channels & (1 << c.channel) != 0 {
                on = apply(on, c);
            }
        }
        let mut possible = on != 0;
        let mut certain = possible;
        for c in &n.control[n.acked..] {
            if channels & (1 << c.channel) != 0 {
                on = apply(on, c);
                let now = on != 0;
                possible |= now;
                certain &= now;
            }
        }
        (possible, certain)
    }

    /// The router fixed an event's recipients: `only_subscribers`.
    fn on_accepted(&mut self, cx: &mut Cx<Self>, id: EventId, recipients: Vec<ActorId>) {
        cx.note(PubsubNote::Accepted {
            id,
            recipients: recipients.len() as u32,
        });
        cx.count("event.accepted");
        let Some(rec) = self.events.get(&id) else {
            cx.violate(
                ONLY_SUBSCRIBERS,
                format!("router accepted {id}, which was never published"),
            );
            return;
        };
        let channels = rec.channels;
        let mut certain = 0u32;
        for a in 0..self.p.nodes {
            let a = ActorId(a);
            let (possible, sure) = self.subscribed(a, channels);
            let listed = recipients.contains(&a);
            if listed && a == id.publisher {
                cx.violate(
                    ONLY_SUBSCRIBERS,
                    format!("router lists publisher {a} as a recipient of its own {id}"),
                );
            } else if listed && !possible {
                cx.violate(
                    ONLY_SUBSCRIBERS,
                    format!(
                        "router lists {a} as a recipient of {id} (to {}), but no subscription of {a} to those channels can be in force",
                        ChannelIdx(channels)
                    ),
                );
            }
            if sure && a != id.publisher {
                certain |= 1 << a.0;
            }
        }
        if let Some(rec) = self.events.get_mut(&id) {
            rec.acceptances.push(Acceptance {
                recipients,
                certain,
            });
        }
    }

    fn on_router_event(&mut self, cx: &mut Cx<Self>, event: PubsubEvent) {
        if self.router.is_none() {
            return;
        }
        if cx.fault_at(F_ROUTER_CRASH, "router_event", &[]) {
            cx.crash(self.router_node);
            if let Some(r) = self.router.take() {
                self.router_durable = r.durable().clone();
                self.lost_coverage[0].merge(r.coverage());
            }
            self.router_timers.clear();
            let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
            cx.env_after(d, PubsubEvent::RouterRestart);
            return;
        }
        match event {
            PubsubEvent::ToRouter { from, msg } => {
                self.with_router(cx, |r, now| r.handle_message(now, from, msg));
            }
            PubsubEvent::RouterTimer => {
                let now = cx.now();
                self.router_timers.remove(&now);
                self.with_router(cx, |r, now| r.handle_timeout(now));
            }
            other => unreachable!("not a router event: {other}"),
        }
    }

    fn restart_router(&mut self, cx: &mut Cx<Self>) {
        if self.router.is_some() {
            return;
        }
        cx.restart(self.router_node);
        let durable = std::mem::take(&mut self.router_durable);
        self.router = Some(Router::recover(self.p.cfg.clone(), cx.now(), &durable));
        cx.note(PubsubNote::Recovered { actor: None });
        self.with_router(cx, |_, _| {});
    }

    // ----- peers -----------------------------------------------------------

    fn with_peer<R>(
        &mut self,
        cx: &mut Cx<Self>,
        actor: ActorId,
        f: impl FnOnce(&mut Peer, Time) -> R,
    ) -> Option<R> {
        let now = cx.now();
        let i = actor.0 as usize;
        let r = f(self.nodes[i].peer.as_mut()?, now);
        while let Some(out) = self.nodes[i].peer.as_mut().and_then(Peer::poll_output) {
            match out {
                PeerOutput::Send(msg) => {
                    self.send(cx, actor, true, PubsubEvent::ToRouter { from: actor, msg });
                }
                PeerOutput::Deliver(d) => self.on_deliver(cx, actor, d),
                PeerOutput::Published(_) => {}
                PeerOutput::Subscribed(c) => self.on_control_ack(cx, actor, &c, true),
                PeerOutput::Unsubscribed(c) => self.on_control_ack(cx, actor, &c, false),
            }
        }
        let n = &mut self.nodes[i];
        let peer = n.peer.as_ref().expect("up");
        if let Some(due) = peer.poll_timeout().map(|t| t.max(cx.now()))
            && n.timers.first().is_none_or(|first| due < *first)
        {
            n.timers.insert(due);
            let node = n.node;
            cx.node_at(node, due, PubsubEvent::PeerTimer { actor });
        }
        Some(r)
    }

    /// Acknowledgements come in the order the changes were issued.
    fn on_control_ack(&mut self, cx: &mut Cx<Self>, actor: ActorId, c: &Channel, subscribe: bool) {
        let n = &mut self.nodes[actor.0 as usize];
        let expected = n.control.get(n.acked).copied();
        n.acked += 1;
        let ok = expected
            .is_some_and(|e| Some(e.channel) == channel_index(c) && e.subscribe == subscribe);
        if !ok {
            cx.violate(
                ONLY_SUBSCRIBERS,
                format!(
                    "{actor} is told its change #{} ({} {c}) is applied, but issued {:?}",
                    n.acked,
                    if subscribe {
                        "subscribe"
                    } else {
                        "unsubscribe"
                    },
                    expected
                ),
            );
        }
    }

    /// An actor is delivered an event: `only_subscribers`,
    /// `no_duplicates`, `per_publisher_fifo`.
    fn on_deliver(&mut self, cx: &mut Cx<Self>, actor: ActorId, d: Delivery) {
        let id = d.event.id;
        cx.note(PubsubNote::Delivered { actor, id });
        cx.count("event.delivered");
        let Some(rec) = self.events.get(&id) else {
            cx.violate(
                ONLY_SUBSCRIBERS,
                format!("{actor} is delivered {id}, which was never published"),
            );
            return;
        };
        if !rec
            .acceptances
            .iter()
            .any(|a| a.recipients.contains(&actor))
        {
            cx.violate(
                ONLY_SUBSCRIBERS,
                format!("{actor} is delivered {id}, but was never one of its recipients"),
            );
            return;
        }
        if d.matched.is_empty()
            || d.matched
                .iter()
                .any(|s| channel_index(&s.channel).is_none_or(|c| rec.channels & (1 << c) == 0))
        {
            cx.violate(
                ONLY_SUBSCRIBERS,
                format!(
                    "{actor} is delivered {id} (to {}) with subscriptions {:?}",
                    ChannelIdx(rec.channels),
                    d.matched
                ),
            );
            return;
        }
        let seen = self.nodes[actor.0 as usize]
            .delivered
            .entry(id.publisher)
            .or_default();
        if seen.contains(&id.seq) {
            cx.violate(
                NO_DUPLICATES,
                format!("{actor} is delivered {id} a second time"),
            );
            return;
        }
        if let Some(last) = seen.last()
            && *last > id.seq
        {
            cx.violate(
                FIFO,
                format!("{actor} is delivered {id} after {}#{last}", id.publisher),
            );
        }
        seen.insert(id.seq);
    }

    fn think(&self, cx: &mut Cx<Self>, actor: ActorId) {
        let d = cx.between(self.p.think_us.0, self.p.think_us.1);
        cx.node_after(self.node(actor).node, d, PubsubEvent::Act { actor });
    }

    fn publish(&mut self, cx: &mut Cx<Self>, actor: ActorId) {
        let mut chans = 1u64 << cx.choose(self.p.channels);
        if cx.chance(self.p.multi_ppm) {
            chans |= 1 << cx.choose(self.p.channels);
        }
        self.next_payload += 1;
        let payload = self.next_payload;
        let names: Vec<Channel> = channels_of(chans).map(|c| self.p.channel(c)).collect();
        // The event reaches the router in a later step, so recording it
        // after the call is in time.
        match self.with_peer(cx, actor, |p, now| p.publish(now, names, payload)) {
            Some(Ok(id)) => {
                cx.note(PubsubNote::Published { id });
                self.events.insert(
                    id,
                    PubRec {
                        channels: chans,
                        acceptances: Vec::new(),
                    },
                );
            }
            Some(Err(_)) => cx.note(PubsubNote::Refused { actor }),
            None => {}
        }
    }

    /// A subscription change to channel `c` (with or without an action).
    fn control(&mut self, cx: &mut Cx<Self>, actor: ActorId, c: u32, subscribe: bool) {
        let action = (subscribe && cx.choose(2) == 0).then(|| self.p.action(c));
        let name = self.p.channel(c);
        let r = self.with_peer(cx, actor, |p, now| {
            if subscribe {
                p.subscribe(now, name, action)
            } else {
                p.unsubscribe(now, name)
            }
        });
        match r {
            Some(Ok(())) => {
                cx.note(PubsubNote::Control {
                    actor,
                    channel: c,
                    subscribe,
                });
                self.nodes[actor.0 as usize].control.push(ControlRec {
                    channel: c,
                    subscribe,
                });
            }
            Some(Err(_)) => cx.note(PubsubNote::Refused { actor }),
            None => {}
        }
    }

    fn on_act(&mut self, cx: &mut Cx<Self>, actor: ActorId) {
        if self.node(actor).actions_done >= self.p.actions {
            return;
        }
        let churn = cx.chance(self.p.churn_ppm);
        let times = if cx.fault_at(F_BURST, "action", &[("node", u64::from(actor.0) + 1)]) {
            self.p.burst
        } else {
            1
        };
        for _ in 0..times {
            if churn {
                let c = cx.choose(self.p.channels);
                let subscribe = cx.choose(2) == 0;
                self.control(cx, actor, c, subscribe);
            } else if actor.0 < self.p.publishers {
                self.publish(cx, actor);
            }
        }
        self.nodes[actor.0 as usize].actions_done += 1;
        self.think(cx, actor);
    }

    fn on_peer_event(&mut self, cx: &mut Cx<Self>, actor: ActorId, event: PubsubEvent) {
        if self.node(actor).peer.is_none() {
            return;
        }
        if cx.fault_at(
            F_PEER_CRASH,
            "peer_event",
            &[("node", u64::from(actor.0) + 1)],
        ) {
            let n = &mut self.nodes[actor.0 as usize];
            cx.crash(n.node);
            if let Some(p) = n.peer.take() {
                n.durable = p.durable().clone();
                self.lost_coverage[1].merge(p.coverage());
            }
            n.timers.clear();
            let d = cx.between(self.p.restart_us.0, self.p.restart_us.1);
            cx.env_after(d, PubsubEvent::PeerRestart { actor });
            return;
        }
        match event {
            PubsubEvent::Act { actor } => self.on_act(cx, actor),
            PubsubEvent::ToPeer { msg, .. } => {
                self.with_peer(cx, actor, |p, now| p.handle_message(now, msg));
            }
            PubsubEvent::PeerTimer { .. } => {
                let now = cx.now();
                self.nodes[actor.0 as usize].timers.remove(&now);
                self.with_peer(cx, actor, |p, now| p.handle_timeout(now));
            }
            other => unreachable!("not a peer event: {other}"),
        }
    }

    fn restart_peer(&mut self, cx: &mut Cx<Self>, actor: ActorId) {
        let n = &mut self.nodes[actor.0 as usize];
        if n.peer.is_some() {
            return;
        }
        cx.restart(n.node);
        let durable = std::mem::take(&mut n.durable);
        n.peer = Some(Peer::recover(actor, self.p.cfg.clone(), cx.now(), &durable));
        cx.note(PubsubNote::Recovered { actor: Some(actor) });
        self.with_peer(cx, actor, |_, _| {});
        self.think(cx, actor);
    }
}

struct ChannelIdx(u64);

/// The channels of a mask (bit `c` for channel `c`), in order.
fn channels_of(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |c| mask & (1 << c) != 0)
}

impl fmt::Display for ChannelIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in channels_of(self.0).enumerate() {
            write!(f, "{}ch{c}", if i > 0 { "," } else { "" })?;
        }
        Ok(())
    }
}

impl Protocol for PubsubWorld {
    type Event = PubsubEvent;
    type Note = PubsubNote;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        self.router_node = cx.add_node("router");
        self.router = Some(Router::new(self.p.cfg.clone()));
        self.nodes.reserve_exact(self.p.nodes as usize);
        for a in 0..self.p.nodes {
            let actor = ActorId(a);
            let node = cx.add_node(node_name(actor));
            self.nodes.push(Node {
                node,
                peer: Some(Peer::new(actor, self.p.cfg.clone())),
                durable: PeerDurable::default(),
                actions_done: 0,
                control: Vec::new(),
                acked: 0,
                delivered: BTreeMap::new(),
                timers: BTreeSet::new(),
            });
        }
        for a in 0..self.p.nodes {
            let actor = ActorId(a);
            let c = cx.choose(self.p.channels);
            self.control(cx, actor, c, true);
            if a >= self.p.publishers && self.p.churn_ppm == 0 {
                // Nothing to do but listen.
                self.nodes[a as usize].actions_done = self.p.actions;
            } else {
                self.think(cx, actor);
            }
        }
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, event: PubsubEvent) {
        match event {
            PubsubEvent::ToRouter { .. } | PubsubEvent::RouterTimer => {
                self.on_router_event(cx, event);
            }
            PubsubEvent::Act { actor }
            | PubsubEvent::ToPeer { to: actor, .. }
            | PubsubEvent::PeerTimer { actor } => self.on_peer_event(cx, actor, event),
            PubsubEvent::PeerRestart { actor } => self.restart_peer(cx, actor),
            PubsubEvent::RouterRestart => self.restart_router(cx),
        }
    }

    fn heal(&mut self, cx: &mut Cx<Self>) {
        self.restart_router(cx);
        for a in 0..self.p.nodes {
            self.restart_peer(cx, ActorId(a));
        }
    }

    fn settled(&self) -> bool {
        self.router.as_ref().is_some_and(Router::is_idle)
            && self.nodes.iter().all(|n| {
                n.actions_done >= self.p.actions && n.peer.as_ref().is_some_and(Peer::is_idle)
            })
    }

    fn route(&self, event: &PubsubEvent) -> (String, String) {
        let router = || "router".to_owned();
        match event {
            PubsubEvent::Act { actor }
            | PubsubEvent::PeerTimer { actor }
            | PubsubEvent::PeerRestart { actor } => (node_name(*actor), node_name(*actor)),
            PubsubEvent::ToRouter { from, .. } => (node_name(*from), router()),
            PubsubEvent::ToPeer { to, .. } => (router(), node_name(*to)),
            PubsubEvent::RouterTimer | PubsubEvent::RouterRestart => (router(), router()),
        }
    }

    fn coverage(&self) -> Vec<Coverage> {
        let mut cov = self.lost_coverage;
        if let Some(r) = &self.router {
            cov[0].merge(r.coverage());
        }
        for p in self.nodes.iter().filter_map(|n| n.peer.as_ref()) {
            cov[1].merge(p.coverage());
        }
        cov.to_vec()
    }

    fn check_liveness(&self, _cx: &Cx<Self>) -> Option<(&'static str, String)> {
        if !self.p.reliable {
            return None;
        }
        for (id, rec) in &self.events {
            if rec.acceptances.is_empty() {
                return Some((
                    EVERY_SUBSCRIBER,
                    format!("{id} was published but never accepted by the router"),
                ));
            }
            for acc in &rec.acceptances {
                for a in acc.recipients.iter().copied().chain(acc.certain()) {
                    let got = self
                        .node(a)
                        .delivered
                        .get(&id.publisher)
                        .is_some_and(|s| s.contains(&id.seq));
                    if !got {
                        let why = if acc.recipients.contains(&a) {
                            "a recipient"
                        } else {
                            "certainly subscribed when it was accepted, yet not a recipient"
                        };
                        return Some((
                            EVERY_SUBSCRIBER,
                            format!("{a} never received {id} ({why})"),
                        ));
                    }
                }
            }
        }
        None
    }
}
