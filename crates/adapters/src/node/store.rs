//! The metadata store: applies broadcasts' callback effects, each broadcast
//! id at most once, and records every application in order (the record the
//! checks read).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;

use crate::frame::{FrameError, MAX_FRAME};
use crate::transport::{Service, serve};
use crate::wire::{Applied, StoreReply, StoreRequest};

/// Deliberately broken variants, for the madsim mutation check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoreFlaw {
    /// Applies every invocation, without dedup by broadcast id: a callback
    /// retried after a lost reply (or after a coordinator crash) applies
    /// twice.
    NoDedup,
}

#[derive(Debug, Default)]
struct State {
    seen: BTreeSet<u64>,
    record: Vec<Applied>,
    rejected: Vec<&'static str>,
}

/// The store (a cheap handle on shared state).
#[derive(Clone, Default)]
pub struct Store {
    flaw: Option<StoreFlaw>,
    state: Arc<Mutex<State>>,
}

impl Store {
    /// An empty store.
    pub fn new(flaw: Option<StoreFlaw>) -> Store {
        Store {
            flaw,
            state: Arc::default(),
        }
    }

    /// Binds `listen` and serves this store on it in a new task; returns
    /// the bound address.
    ///
    /// # Errors
    /// Binding failed.
    pub async fn serve(&self, listen: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, self.clone(), MAX_FRAME));
        Ok(addr)
    }

    /// A new store served on `listen`: the store and the bound address.
    ///
    /// # Errors
    /// Binding failed.
    pub async fn start(
        flaw: Option<StoreFlaw>,
        listen: SocketAddr,
    ) -> std::io::Result<(Store, SocketAddr)> {
        let store = Store::new(flaw);
        let addr = store.serve(listen).await?;
        Ok((store, addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Applies one invocation; whether it was a duplicate.
    pub fn apply(&self, a: Applied) -> bool {
        let mut s = self.lock();
        let duplicate = !s.seen.insert(a.id.0);
        if duplicate && self.flaw != Some(StoreFlaw::NoDedup) {
            return true;
        }
        s.record.push(a);
        duplicate
    }

    /// Every application so far, in order.
    pub fn record(&self) -> Vec<Applied> {
        self.lock().record.clone()
    }

    /// Reasons of the frames rejected so far (see [`crate::frame`]).
    pub fn rejected(&self) -> Vec<&'static str> {
        self.lock().rejected.clone()
    }
}

impl Service for Store {
    type Req = StoreRequest;
    type Rep = StoreReply;
    type Conn = ();

    async fn call(&self, _conn: &mut (), req: StoreRequest) -> StoreReply {
        match req {
            StoreRequest::Invoke(a) => StoreReply::Applied {
                duplicate: self.apply(a),
            },
            StoreRequest::Record => StoreReply::Record(self.record()),
        }
    }

    fn rejected(&self, peer: SocketAddr, error: &FrameError) {
        tracing::warn!(%peer, reason = error.reason(), "store: closing connection: {error}");
        self.lock().rejected.push(error.reason());
    }
}
