//! The deterministic simulator.
//!
//! A run is a pure function of its scenario, its mutant and its decisions:
//! - [`choice`]: the one interface every nondeterministic decision goes
//!   through (random from a seed, or recorded);
//! - [`engine`]: the discrete-event world (queue ordered by virtual time and
//!   sequence, nodes that crash and restart, chaos then heal, invariants,
//!   trace digest);
//! - [`faults`]: fault profiles and per-seed swarm selection;
//! - [`protocols`]: the worlds of each protocol;
//! - [`scenario`], [`seedfile`]: the files users keep;
//! - [`runner`]: run a scenario, check determinism, find divergences;
//! - [`shrink`]: minimize a failing decision sequence;
//! - [`explore`]: bounded exhaustive exploration of small configurations.
//!
//! Nothing here reads a clock, spawns a thread or iterates a hash map: the
//! same seed gives the same trace digest in every process and build profile.

pub mod choice;
pub mod engine;
pub mod explore;
pub mod faults;
pub mod hash;
pub mod protocols;
pub mod registry;
pub mod runner;
pub mod scenario;
pub mod seedfile;
pub mod shrink;
