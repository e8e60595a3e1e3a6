//! The coordinator: the broadcaster actor over a file catalog, reaching the
//! WAL channels and the metadata store over TCP, serving clients over TCP.
//!
//! Starting it is recovering it: [`Coordinator::start`] opens the catalog
//! (reporting any damaged tail), rebuilds the broadcaster from it, spawns
//! the actor and binds the client API. A crash is a kill of the process (or,
//! under madsim, of the node); the next start recovers from the files left.
//!
//! Client connections own the handles they started: when a connection
//! ends, every handle it started and did not use is closed, so a client that
//! vanishes cannot hold keys forever.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use simcast_machines::broadcast::{AckInfo, BroadcastId, ChannelId, IoError, Message};
use tokio::net::TcpListener;

use crate::actor::ActorError;
use crate::actor::broadcaster::{
    BoxFuture, BroadcastIo, BroadcasterActor, BroadcasterConfig, BroadcasterHandle,
};
use crate::catalog::{CatalogError, FileCatalog, OpenReport};
use crate::disk::Disk;
use crate::frame::MAX_FRAME;
use crate::transport::{RpcClient, RpcConfig, Service, Target, fixed, serve};
use crate::wire::{
    Applied, ChannelReply, ChannelRequest, ClientReply, ClientRequest, StoreReply, StoreRequest,
};

/// The broadcaster's IO over TCP: one [`RpcClient`] per channel server and
/// one to the store.
pub struct TcpIo {
    channels: BTreeMap<ChannelId, RpcClient<ChannelRequest, ChannelReply>>,
    store: RpcClient<StoreRequest, StoreReply>,
    /// Per-call timeout (the actor applies its own as well).
    timeout: Duration,
}

impl TcpIo {
    /// Clients of the given servers (they connect on first use).
    pub fn new(
        channels: &BTreeMap<ChannelId, SocketAddr>,
        store: SocketAddr,
        timeout: Duration,
        rpc: RpcConfig,
    ) -> TcpIo {
        let mut seed = rpc.seed;
        let mut next = || {
            seed = seed.wrapping_add(1);
            RpcConfig { seed, ..rpc }
        };
        TcpIo {
            channels: channels
                .iter()
                .map(|(c, a)| (*c, RpcClient::new(fixed(*a), next())))
                .collect(),
            store: RpcClient::new(fixed(store), next()),
            timeout,
        }
    }
}

impl BroadcastIo for TcpIo {
    fn append(
        &self,
        id: BroadcastId,
        channel: ChannelId,
        message: Message,
    ) -> BoxFuture<Result<AckInfo, IoError>> {
        let client = self.channels.get(&channel).cloned();
        let timeout = self.timeout;
        Box::pin(async move {
            let Some(client) = client else {
                return Err(IoError::Failed);
            };
            match client
                .call(
                    ChannelRequest::Append {
                        id,
                        channel,
                        message,
                    },
                    timeout,
                )
                .await
            {
                Ok(ChannelReply::Appended(info)) => Ok(info),
                Ok(_) => Err(IoError::Failed),
                Err(crate::transport::RpcError::TimedOut) => Err(IoError::TimedOut),
                // A lost connection may have carried the append: the outcome
                // is unknown, which the machine treats like a timeout.
                Err(_) => Err(IoError::TimedOut),
            }
        })
    }

    fn invoke(&self, applied: Applied) -> BoxFuture<Result<(), IoError>> {
        let client = self.store.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            match client.call(StoreRequest::Invoke(applied), timeout).await {
                Ok(StoreReply::Applied { .. }) => Ok(()),
                Ok(_) => Err(IoError::Failed),
                Err(_) => Err(IoError::TimedOut),
            }
        })
    }
}

/// Everything a coordinator needs.
#[derive(Clone, Debug)]
pub struct CoordinatorConfig {
    /// Where the client API listens (port 0: any).
    pub listen: SocketAddr,
    /// The WAL channel servers.
    pub channels: BTreeMap<ChannelId, SocketAddr>,
    /// The metadata store.
    pub store: SocketAddr,
    /// Where the catalog lives.
    pub disk: Disk,
    /// The catalog's file name.
    pub catalog: String,
    /// Compact the catalog after this many records (`None`: the default).
    pub compact_after: Option<u64>,
    /// The actor.
    pub actor: BroadcasterConfig,
    /// Transport settings.
    pub rpc: RpcConfig,
}

/// Why a coordinator did not start.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The catalog could not be opened.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The client API could not be bound.
    #[error("binding the client API: {0}")]
    Bind(#[from] std::io::Error),
}

/// A running coordinator.
pub struct Coordinator {
    /// The client API's address.
    pub addr: SocketAddr,
    /// What opening the catalog found.
    pub report: OpenReport,
    /// The actor.
    pub handle: BroadcasterHandle,
    actor: tokio::task::JoinHandle<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Coordinator {
    /// Opens the catalog, recovers, spawns the actor and serves the client
    /// API.
    ///
    /// # Errors
    /// [`CoordinatorError`].
    pub async fn start(cfg: CoordinatorConfig) -> Result<Coordinator, CoordinatorError> {
        let (mut catalog, report) = FileCatalog::open(cfg.disk.clone(), &cfg.catalog).await?;
        if let Some(n) = cfg.compact_after {
            catalog.set_compact_after(n);
        }
        let io = TcpIo::new(&cfg.channels, cfg.store, cfg.actor.io_timeout, cfg.rpc);
        let (handle, actor) = BroadcasterActor::spawn(cfg.actor.clone(), catalog, io);
        let listener = TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(
            listener,
            ClientApi {
                handle: handle.clone(),
            },
            MAX_FRAME,
        ));
        Ok(Coordinator {
            addr,
            report,
            handle,
            actor,
            server,
        })
    }

    /// Stops serving, shuts the actor down and waits for it.
    pub async fn stop(self) {
        self.server.abort();
        let _ = self.handle.shutdown().await;
        let _ = self.actor.await;
    }
}

/// The client API: a [`Service`] over the actor's handle.
#[derive(Clone)]
pub struct ClientApi {
    /// The actor.
    pub handle: BroadcasterHandle,
}

fn refused(e: &ActorError) -> ClientReply {
    ClientReply::Refused(e.to_string())
}

impl Service for ClientApi {
    type Req = ClientRequest;
    type Rep = ClientReply;
    /// Handles started on this connection and not used yet.
    type Conn = BTreeSet<BroadcastId>;

    async fn call(&self, open: &mut BTreeSet<BroadcastId>, req: ClientRequest) -> ClientReply {
        match req {
            ClientRequest::Start { keys } => match self.handle.start(keys).await {
                Ok(id) => {
                    open.insert(id);
                    ClientReply::Started(id)
                }
                Err(e) => refused(&e),
            },
            ClientRequest::Broadcast { id, body } => {
                open.remove(&id);
                match self.handle.broadcast(id, body).await {
                    Ok(()) => ClientReply::Done(id),
                    // Accepted, perhaps persisted: not a refusal.
                    Err(ActorError::ShuttingDown) => ClientReply::OutcomeUnknown,
                    Err(e) => refused(&e),
                }
            }
            ClientRequest::Close { id } => {
                open.remove(&id);
                match self.handle.close(id).await {
                    Ok(()) => ClientReply::Closed,
                    Err(e) => refused(&e),
                }
            }
            ClientRequest::Status { id } => match self.handle.status(id).await {
                Ok(s) => ClientReply::Status(s),
                Err(e) => refused(&e),
            },
            ClientRequest::Unfinished => match self.handle.unfinished().await {
                Ok(ids) => ClientReply::Unfinished(ids),
                Err(e) => refused(&e),
            },
        }
    }

    async fn disconnected(&self, open: BTreeSet<BroadcastId>) {
        for id in open {
            let _ = self.handle.close(id).await;
        }
    }
}

/// A client of a coordinator's API.
pub fn client(target: Target, rpc: RpcConfig) -> RpcClient<ClientRequest, ClientReply> {
    RpcClient::new(target, rpc)
}
