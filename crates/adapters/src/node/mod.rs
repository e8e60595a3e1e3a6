//! The nodes of a cluster, each a TCP service: WAL channel servers, the
//! metadata store, and the coordinator (the broadcaster actor behind a
//! client API). The example, the tests and the madsim harness all run these.

pub mod channel;
pub mod coordinator;
pub mod store;

pub use channel::ChannelServer;
pub use coordinator::{Coordinator, CoordinatorConfig, CoordinatorError, TcpIo};
pub use store::{Store, StoreFlaw};
