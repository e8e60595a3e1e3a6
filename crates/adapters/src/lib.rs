//! Production adapters: the sans-IO machines of `simcast-machines` driven
//! by tokio actors with real files and sockets.
//!
//! - [`actor`]: one task owns each machine ([`actor::broadcaster`] with its
//!   lock table, [`actor::sender`] for a replica sender), fed by a bounded
//!   typed [`mailbox`]; queries are barrier calls.
//! - [`catalog`]: the broadcaster's durable records in an append-only log of
//!   checksummed, length-prefixed records, on a [`disk`] (a real directory,
//!   or a simulated one under madsim).
//! - [`frame`], [`wire`], [`transport`]: TCP framing (length, version,
//!   checksum, bincode 2), the messages, and request/reply with reconnects.
//! - [`node`]: WAL channel servers, the metadata store and the coordinator,
//!   as TCP services; [`workload`] and [`check`] drive and judge a cluster;
//!   [`cluster`] is the runnable example's orchestration.
//! - [`lock_service`]: a blocking lock table shared by threads.
//!
//! # The madsim and loom switches
//! With `RUSTFLAGS="--cfg madsim"` the crate compiles against madsim's
//! simulated tokio (`madsim-tokio`, renamed `tokio` in `Cargo.toml`): the
//! same actors, catalog and transport run as simulated nodes that a test
//! kills and restarts (`tests/madsim.rs`, `cargo xtask madsim`). The
//! library's only `cfg(madsim)` choices: how blocking file IO is run
//! ([`disk`]), and leaving out `cluster` (the example's process
//! orchestration, which spawns real processes). With `RUSTFLAGS="--cfg
//! loom"` the shared-memory pieces ([`mailbox`], [`lock_service`]) use loom's
//! primitives and `tests/loom.rs` model-checks them (`cargo xtask loom`);
//! tokio has no `net` under loom, so the TCP modules are left out of that
//! build.

pub mod actor;
pub mod catalog;
#[cfg(not(loom))]
pub mod check;
pub mod clock;
#[cfg(not(any(madsim, loom)))]
pub mod cluster;
pub mod crc32;
pub mod disk;
pub mod frame;
pub mod lock_service;
pub mod mailbox;
#[cfg(not(loom))]
pub mod node;
pub mod rng;
mod sync;
#[cfg(not(loom))]
pub mod transport;
pub mod wire;
#[cfg(not(loom))]
pub mod workload;
