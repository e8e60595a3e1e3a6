//! The empty world: a bench-only protocol with no machines, for a ceiling.
//!
//! A few nodes pass wake-ups around: each delivered wake-up schedules the
//! next one for a node picked by [`Cx::choose`] after a delay drawn by
//! [`Cx::between`], so every event costs exactly what the engine charges
//! every protocol (queue, choice source, incarnation check, and the trace
//! digest when the run keeps one) and nothing else. `simcast bench` divides each scenario's events/s by
//! this world's to show how much of the engine's ceiling a protocol
//! reaches.
//!
//! It has no invariants, faults, mutants or scenario file: it is not in the
//! registry, `list` or the default sweep.

use std::convert::Infallible;
use std::fmt;

use simcast_machines::coverage::Coverage;
use simcast_machines::time::Time;

use crate::choice::Source;
use crate::engine::{Cx, NodeId, Outcome, Protocol, RunLimits, RunOptions, World};
use crate::faults::FaultConfig;
use crate::registry::ProtocolInfo;

/// Names of the empty world (none but its own).
pub static INFO: ProtocolInfo = ProtocolInfo {
    name: "empty",
    doc: "bench-only: nodes passing wake-ups around, no machines (the engine's ceiling)",
    invariants: &[],
    mutants: &[],
    faults: &[],
    sites: &[],
    machines: &[],
    unreachable: &[],
};

/// Nodes of the bench's empty world.
pub const NODES: u32 = 4;
/// Longest delay between a wake-up and the next, in virtual microseconds.
pub const MAX_DELAY_US: u64 = 1_000;

/// The bench's run length: 50 ms of chaos (no faults to inject) and 50 ms of
/// heal. With [`NODES`] wake-ups in flight, about 800 events per seed: the
/// order of a default scenario's seed.
pub fn limits() -> RunLimits {
    RunLimits {
        chaos_end: Time::from_millis(50),
        end: Time::from_millis(100),
        max_steps: 1_000_000,
    }
}

/// A wake-up for a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Wake;

impl fmt::Display for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wake")
    }
}

/// The empty world's state: its shape and how many wake-ups it handled.
#[derive(Clone, Debug, Hash)]
pub struct EmptyWorld {
    nodes: u32,
    max_delay_us: u64,
    woken: u64,
}

impl EmptyWorld {
    /// `nodes` nodes (at least one) passing wake-ups with delays in
    /// `1..=max_delay_us` (at least 1) virtual microseconds.
    pub fn new(nodes: u32, max_delay_us: u64) -> EmptyWorld {
        EmptyWorld {
            nodes: nodes.max(1),
            max_delay_us: max_delay_us.max(1),
            woken: 0,
        }
    }

    /// Wake-ups handled so far.
    pub fn woken(&self) -> u64 {
        self.woken
    }

    fn pass_on(&self, cx: &mut Cx<Self>) {
        let to = NodeId(cx.choose(self.nodes));
        let delay = cx.between(1, self.max_delay_us);
        cx.node_after(to, delay, Wake);
    }
}

impl Protocol for EmptyWorld {
    type Event = Wake;
    type Note = Infallible;

    fn info() -> &'static ProtocolInfo {
        &INFO
    }

    fn start(&mut self, cx: &mut Cx<Self>) {
        for n in 0..self.nodes {
            cx.add_node(format!("n{n}"));
        }
        for _ in 0..self.nodes {
            self.pass_on(cx);
        }
    }

    fn handle(&mut self, cx: &mut Cx<Self>, _node: Option<NodeId>, _event: Wake) {
        self.woken += 1;
        self.pass_on(cx);
    }

    fn heal(&mut self, _cx: &mut Cx<Self>) {}

    fn check_liveness(&self, _cx: &Cx<Self>) -> Option<(&'static str, String)> {
        None
    }

    fn coverage(&self) -> Vec<Coverage> {
        Vec::new()
    }
}

/// Runs one seed of the bench's empty world ([`NODES`] nodes, delays up to
/// [`MAX_DELAY_US`], [`limits`]) to the end, drawing from the seed as a
/// scenario's run does.
pub fn run(seed: u64, opts: RunOptions) -> Outcome {
    World::new(
        EmptyWorld::new(NODES, MAX_DELAY_US),
        limits(),
        &FaultConfig::default(),
        Source::random(seed),
        opts,
    )
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Stop;

    #[test]
    fn a_seed_runs_to_its_time_limit_with_hundreds_of_events_and_no_violation() {
        let o = run(7, RunOptions::default());
        assert_eq!(o.stop, Stop::TimeLimit);
        assert!(o.violation.is_none());
        assert!(
            (400..2_000).contains(&o.events),
            "{} events in a seed",
            o.events
        );
    }

    #[test]
    fn a_run_that_skips_its_decisions_is_the_same_run_without_the_log() {
        let logged = run(5, RunOptions::default());
        let skipped = run(
            5,
            RunOptions {
                skip_decisions: true,
                ..RunOptions::default()
            },
        );
        assert_eq!(
            (skipped.digest, skipped.events, skipped.stop),
            (logged.digest, logged.events, logged.stop)
        );
        assert!(logged.decisions.len() as u64 >= logged.events);
        assert!(skipped.decisions.is_empty());
    }

    #[test]
    fn the_same_seed_gives_the_same_digest_and_another_seed_another() {
        let a = run(3, RunOptions::default());
        let b = run(3, RunOptions::default());
        let c = run(4, RunOptions::default());
        assert_eq!((a.digest, a.events), (b.digest, b.events));
        assert_ne!(a.digest, c.digest);
    }
}
