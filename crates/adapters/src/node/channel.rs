//! A WAL channel server: appends broadcast messages and assigns each copy a
//! message id and a time tick.
//!
//! Ticks are hybrid: `max(previous + 1, microseconds since the Unix epoch)`,
//! so they increase on each channel even across a restart of the server and
//! roughly agree across channels. (The broadcaster orders callbacks by the
//! control channel's ticks only, which one server assigns.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use simcast_machines::broadcast::{AckInfo, BroadcastId, ChannelId, MessageId, TimeTick};
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::frame::MAX_FRAME;
use crate::transport::{Service, serve};
use crate::wire::{ChannelReply, ChannelRequest};

#[derive(Debug, Default)]
struct Log {
    /// Broadcast of each copy, in append order.
    copies: Vec<BroadcastId>,
    count: BTreeMap<BroadcastId, u32>,
    first_seen: Vec<BroadcastId>,
    last_tick: u64,
}

/// A running channel server.
#[derive(Clone)]
pub struct ChannelServer {
    channel: ChannelId,
    clock: Clock,
    log: Arc<Mutex<Log>>,
}

impl ChannelServer {
    /// An empty channel (not serving yet).
    pub fn new(channel: ChannelId) -> ChannelServer {
        ChannelServer {
            channel,
            clock: Clock::new(),
            log: Arc::default(),
        }
    }

    /// Binds `listen` and serves this channel on it in a new task; returns
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

    /// A new channel served on `listen`: the server (to inspect) and the
    /// bound address.
    ///
    /// # Errors
    /// Binding failed.
    pub async fn start(
        channel: ChannelId,
        listen: SocketAddr,
    ) -> std::io::Result<(ChannelServer, SocketAddr)> {
        let server = ChannelServer::new(channel);
        let addr = server.serve(listen).await?;
        Ok((server, addr))
    }

    /// `(broadcast, copies)` in first-append order.
    pub fn contents(&self) -> Vec<(BroadcastId, u32)> {
        let log = self.lock();
        log.first_seen
            .iter()
            .map(|id| (*id, log.count[id]))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        match self.log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Service for ChannelServer {
    type Req = ChannelRequest;
    type Rep = ChannelReply;
    type Conn = ();

    async fn call(&self, _conn: &mut (), req: ChannelRequest) -> ChannelReply {
        match req {
            ChannelRequest::Append { id, channel, .. } => {
                if channel != self.channel {
                    return ChannelReply::WrongChannel(self.channel);
                }
                let now = self.clock.now().as_micros();
                let mut log = self.lock();
                log.last_tick = (log.last_tick + 1).max(now);
                let tick = log.last_tick;
                log.copies.push(id);
                let n = log.count.entry(id).or_insert(0);
                *n += 1;
                if *n == 1 {
                    log.first_seen.push(id);
                }
                ChannelReply::Appended(AckInfo {
                    message_id: MessageId(log.copies.len() as u64),
                    time_tick: TimeTick(tick),
                })
            }
            ChannelRequest::Contents => ChannelReply::Contents(self.contents()),
        }
    }
}
