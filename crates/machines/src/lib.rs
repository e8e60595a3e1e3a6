//! Sans-IO protocol state machines.
//!
//! Every machine here is a plain struct driven by inputs and producing
//! effects. None of them reads a clock, draws a random number, performs IO,
//! spawns a thread or awaits anything: time comes in as a [`time::Time`]
//! argument, randomness (such as backoff jitter) comes in as a value, and
//! everything the outside world must do is returned as data for the driver
//! to carry out. The simulator (`simcast-sim`) and the production adapters
//! drive the very same code.
//!
//! The shape, at every level: mutate through `handle_*`/command methods, then
//! drain the resulting effects with `poll_*` until it returns `None`.

pub mod broadcast;
pub mod coverage;
pub mod fanout;
pub mod locks;
pub mod pubsub;
pub mod replication;
pub mod scratch;
pub mod tick;
pub mod time;
pub mod vecmap;
