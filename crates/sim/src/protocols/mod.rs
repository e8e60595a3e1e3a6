//! The protocols the simulator knows, and the one place that dispatches from
//! a scenario's workload to a concrete world type.
//!
//! Adding a protocol: a module with its world (implementing
//! [`Protocol`]) and its `INFO`, a [`Workload`]
//! variant, and one arm in each `match` below. Sweeps, replay, shrinking and
//! exploration then work for it unchanged.

pub mod broadcast;
pub mod checks;
pub mod empty;
pub mod fanout;
pub mod keys;
pub mod locks;
pub mod pubsub;
pub mod replication;
pub mod tick;

use serde_json::Value;

use crate::engine::{Protocol, World};
use crate::registry::{MutantInfo, ProtocolInfo};

/// A protocol's workload and topology, as read from a scenario.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Clients contending on a lock table.
    Locks(locks::LocksWorkload),
    /// The broadcaster on a coordinator, channels, stores, a secondary.
    Broadcast(broadcast::BroadcastWorkload),
    /// A broker fanning lifecycle operations out to backends.
    Fanout(fanout::FanoutWorkload),
    /// Actors publishing and subscribing to channels through a router.
    Pubsub(pubsub::PubsubWorkload),
    /// Sources and clients around one tick broadcaster.
    Tick(tick::TickWorkload),
    /// A primary's replica senders, replicas with durable logs, a control plane.
    Replication(replication::ReplicationWorkload),
}

impl Workload {
    /// The protocol this workload runs.
    pub fn protocol(&self) -> &'static ProtocolInfo {
        match self {
            Workload::Locks(_) => &locks::INFO,
            Workload::Broadcast(_) => &broadcast::INFO,
            Workload::Fanout(_) => &fanout::INFO,
            Workload::Pubsub(_) => &pubsub::INFO,
            Workload::Tick(_) => &tick::INFO,
            Workload::Replication(_) => &replication::INFO,
        }
    }

    /// Reads and validates the `[workload]` table of `protocol`.
    ///
    /// # Errors
    /// Unknown keys and bad values, naming the key.
    pub fn from_value(protocol: &ProtocolInfo, value: Value) -> Result<Workload, String> {
        fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, String> {
            serde_json::from_value(value).map_err(|e| e.to_string())
        }
        let workload = match protocol.name {
            "locks" => Workload::Locks(typed(value)?),
            "broadcast" => Workload::Broadcast(typed(value)?),
            "fanout" => Workload::Fanout(typed(value)?),
            "pubsub" => Workload::Pubsub(typed(value)?),
            "tick" => Workload::Tick(typed(value)?),
            "replication" => Workload::Replication(typed(value)?),
            other => return Err(format!("protocol {other} has no workload type")),
        };
        match &workload {
            Workload::Locks(w) => w.validate()?,
            Workload::Broadcast(w) => w.validate()?,
            Workload::Fanout(w) => w.validate()?,
            Workload::Pubsub(w) => w.validate()?,
            Workload::Tick(w) => w.validate()?,
            Workload::Replication(w) => w.validate()?,
        }
        Ok(workload)
    }

    /// The canonical JSON form.
    pub fn to_value(&self) -> Value {
        match self {
            Workload::Locks(w) => serde_json::to_value(w),
            Workload::Broadcast(w) => serde_json::to_value(w),
            Workload::Fanout(w) => serde_json::to_value(w),
            Workload::Pubsub(w) => serde_json::to_value(w),
            Workload::Tick(w) => serde_json::to_value(w),
            Workload::Replication(w) => serde_json::to_value(w),
        }
        .expect("workloads serialize")
    }
}

/// Something to do with a freshly built world, whatever its protocol.
pub trait WorldVisitor {
    /// What it produces.
    type Output;
    /// Does it.
    fn visit<P: Protocol>(self, world: World<P>) -> Self::Output;
}

/// Builds the world of `workload` with `build` (which receives the protocol
/// state) and hands it to `visitor`.
pub fn build_protocol<V: WorldVisitor>(
    workload: &Workload,
    mutant: Option<&'static MutantInfo>,
    build: impl BuildWorld,
    visitor: V,
) -> V::Output {
    match workload {
        Workload::Locks(w) => visitor.visit(build.build(locks::LocksWorld::new(w, mutant))),
        Workload::Broadcast(w) => {
            visitor.visit(build.build(broadcast::BroadcastWorld::new(w, mutant)))
        }
        Workload::Fanout(w) => visitor.visit(build.build(fanout::FanoutWorld::new(w, mutant))),
        Workload::Pubsub(w) => visitor.visit(build.build(pubsub::PubsubWorld::new(w, mutant))),
        Workload::Tick(w) => visitor.visit(build.build(tick::TickWorld::new(w, mutant))),
        Workload::Replication(w) => {
            visitor.visit(build.build(replication::ReplicationWorld::new(w, mutant)))
        }
    }
}

/// Something to do with a way of building a protocol's worlds from a
/// decision source, whatever the protocol (the explorer builds many).
pub trait FactoryVisitor {
    /// What it produces.
    type Output;
    /// Does it.
    fn visit<P: Protocol>(self, make: &dyn Fn(crate::choice::Source) -> World<P>) -> Self::Output;
}

/// Hands `visitor` a factory of worlds of `workload` (with `mutant`),
/// each built by `build` around a fresh protocol state.
pub fn with_factory<V: FactoryVisitor>(
    workload: &Workload,
    mutant: Option<&'static MutantInfo>,
    build: &dyn Fn(crate::choice::Source) -> Builder,
    visitor: V,
) -> V::Output {
    macro_rules! go {
        ($proto:expr) => {{
            let proto = $proto;
            visitor.visit(&|source| build(source).build(proto.clone()))
        }};
    }
    match workload {
        Workload::Locks(w) => go!(locks::LocksWorld::new(w, mutant)),
        Workload::Broadcast(w) => go!(broadcast::BroadcastWorld::new(w, mutant)),
        Workload::Fanout(w) => go!(fanout::FanoutWorld::new(w, mutant)),
        Workload::Pubsub(w) => go!(pubsub::PubsubWorld::new(w, mutant)),
        Workload::Tick(w) => go!(tick::TickWorld::new(w, mutant)),
        Workload::Replication(w) => go!(replication::ReplicationWorld::new(w, mutant)),
    }
}

/// Engine options for building a world (see [`with_factory`]).
pub struct Builder {
    /// Timing.
    pub limits: crate::engine::RunLimits,
    /// Fault profile.
    pub faults: crate::faults::FaultConfig,
    /// Decision source.
    pub source: crate::choice::Source,
    /// What to collect.
    pub opts: crate::engine::RunOptions,
}

impl Builder {
    /// Builds the world around `proto`.
    pub fn build<P: Protocol>(self, proto: P) -> World<P> {
        World::new(proto, self.limits, &self.faults, self.source, self.opts)
    }
}

/// Turns a protocol state into a world (the engine options live here).
pub trait BuildWorld {
    /// Builds it.
    fn build<P: Protocol>(self, proto: P) -> World<P>;
}
