//! TCP transport: request/reply over framed connections ([`crate::frame`]).
//!
//! - [`serve`] accepts connections and answers each request frame through a
//!   [`Service`], one request at a time per connection (so replies come back
//!   in request order). A frame that is rejected (malformed, oversized, wrong
//!   version, bad checksum, cut short) closes its connection at once, and
//!   nothing from it reaches the service; [`Service::rejected`] hears why.
//! - [`RpcClient`] keeps one connection to a peer, multiplexes calls over it
//!   (an [`Envelope`]'s correlation id pairs each reply with its call), and
//!   reconnects with jittered exponential backoff when the connection fails.
//!   A call that outlives its timeout is abandoned (its reply, if one comes,
//!   is dropped): the caller gets [`RpcError::TimedOut`] and cannot know
//!   whether the request took effect.
//! - [`frames_sent`] counts the frames both sides have written, process
//!   wide (a throughput figure for benchmarks: messages per second).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{self, FrameError};
use crate::rng::SplitMix64;
use crate::wire::Envelope;

/// Frames written by every [`serve`]d connection and [`RpcClient`] of the
/// process. A plain std atomic under madsim too: it is reporting only,
/// never read by the adapters, so it cannot change what a seed does.
static FRAMES_SENT: AtomicU64 = AtomicU64::new(0);

/// Frames (requests and replies) written in full by this process's
/// transports so far; a frame that failed to send is not counted.
pub fn frames_sent() -> u64 {
    FRAMES_SENT.load(Ordering::Relaxed)
}

fn sent_one() {
    FRAMES_SENT.fetch_add(1, Ordering::Relaxed);
}

/// A request/reply protocol served on a listener.
pub trait Service: Clone + Send + Sync + 'static {
    /// Requests.
    type Req: DeserializeOwned + Send + 'static;
    /// Replies.
    type Rep: Serialize + Send + Sync + 'static;
    /// Per-connection state.
    type Conn: Default + Send + 'static;

    /// Answers one request.
    fn call(&self, conn: &mut Self::Conn, req: Self::Req)
    -> impl Future<Output = Self::Rep> + Send;

    /// The connection ended (cleanly or not); its state is handed back.
    fn disconnected(&self, conn: Self::Conn) -> impl Future<Output = ()> + Send {
        let _ = conn;
        async {}
    }

    /// A frame from `peer` was rejected; its connection is being closed.
    fn rejected(&self, peer: SocketAddr, error: &FrameError) {
        tracing::warn!(%peer, reason = error.reason(), "closing connection: {error}");
    }
}

/// Serves `service` on `listener` until the task is dropped: each
/// connection in its own task.
pub async fn serve<S: Service>(listener: TcpListener, service: S, max_frame: u32) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(serve_connection(stream, peer, service, max_frame));
    }
}

/// Serves one connection: read a request, answer it, repeat.
pub async fn serve_connection<S: Service>(
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    max_frame: u32,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut conn = S::Conn::default();
    loop {
        match frame::read_frame::<_, Envelope<S::Req>>(&mut rd, max_frame).await {
            Ok(Some(env)) => {
                let body = service.call(&mut conn, env.body).await;
                let reply = Envelope {
                    corr: env.corr,
                    body,
                };
                if let Err(e) = frame::write_frame(&mut wr, &reply, max_frame).await {
                    tracing::debug!(%peer, "reply not sent: {e}");
                    break;
                }
                sent_one();
            }
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                tracing::debug!(%peer, "connection failed: {e}");
                break;
            }
            Err(e) => {
                service.rejected(peer, &e);
                break;
            }
        }
    }
    // Dropping both halves closes the socket.
    drop((rd, wr));
    service.disconnected(conn).await;
}

/// Why a call got no reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// The connection failed before the reply came (the request may or may
    /// not have taken effect).
    #[error("connection lost")]
    Unavailable,
    /// No reply in time (the request may or may not have taken effect).
    #[error("timed out")]
    TimedOut,
    /// The client is shut down.
    #[error("client closed")]
    Closed,
}

/// Reconnection and framing settings.
#[derive(Clone, Copy, Debug)]
pub struct RpcConfig {
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Largest frame sent or accepted.
    pub max_frame: u32,
    /// Seeds the backoff jitter.
    pub seed: u64,
}

impl Default for RpcConfig {
    /// 10 ms doubling to 1 s, 1 MiB frames.
    fn default() -> Self {
        RpcConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_secs(1),
            max_frame: frame::MAX_FRAME,
            seed: 0,
        }
    }
}

struct Call<Req, Rep> {
    req: Req,
    reply: oneshot::Sender<Result<Rep, RpcError>>,
}

/// Where a client connects: a fixed address or one that can change (a
/// restarted peer on a new port).
pub type Target = Arc<dyn Fn() -> SocketAddr + Send + Sync>;

/// A fixed target.
pub fn fixed(addr: SocketAddr) -> Target {
    Arc::new(move || addr)
}

/// A client of one peer; cheap to clone.
pub struct RpcClient<Req, Rep> {
    tx: mpsc::UnboundedSender<Call<Req, Rep>>,
}

impl<Req, Rep> Clone for RpcClient<Req, Rep> {
    fn clone(&self) -> Self {
        RpcClient {
            tx: self.tx.clone(),
        }
    }
}

impl<Req, Rep> RpcClient<Req, Rep>
where
    Req: Serialize + Send + Sync + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// A client of `target`. It connects on its first call, and again (with
    /// backoff) whenever the connection fails; it stops when every clone is
    /// dropped.
    pub fn new(target: Target, cfg: RpcConfig) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_client(target, cfg, rx));
        RpcClient { tx }
    }

    /// Sends `req` and waits at most `timeout` for the reply.
    ///
    /// # Errors
    /// [`RpcError`].
    pub async fn call(&self, req: Req, timeout: Duration) -> Result<Rep, RpcError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Call { req, reply })
            .map_err(|_| RpcError::Closed)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => Err(RpcError::TimedOut),
        }
    }
}

async fn run_client<Req, Rep>(
    target: Target,
    cfg: RpcConfig,
    mut calls: mpsc::UnboundedReceiver<Call<Req, Rep>>,
) where
    Req: Serialize + Send + Sync + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    let mut rng = SplitMix64::new(cfg.seed);
    let mut backoff = cfg.backoff_initial;
    let mut waiting: Option<Call<Req, Rep>> = None;
    let mut corr: u64 = 0;
    loop {
        // Connect only when there is something to send.
        let first = match waiting.take() {
            Some(c) => c,
            None => match calls.recv().await {
                Some(c) => c,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let addr = target();
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}; retrying in {backoff:?}");
                waiting = Some(first);
                let jitter = rng.below(backoff.as_micros() as u64 / 2 + 1);
                tokio::time::sleep(backoff + Duration::from_micros(jitter)).await;
                backoff = (backoff * 2).min(cfg.backoff_max);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (replies_tx, mut replies) = mpsc::unbounded_channel::<Envelope<Rep>>();
        let max = cfg.max_frame;
        let reader = tokio::spawn(async move {
            loop {
                match frame::read_frame::<_, Envelope<Rep>>(&mut rd, max).await {
                    Ok(Some(env)) => {
                        if replies_tx.send(env).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(%addr, reason = e.reason(), "closing connection: {e}");
                        return;
                    }
                }
            }
        });
        let mut inflight: BTreeMap<u64, oneshot::Sender<Result<Rep, RpcError>>> = BTreeMap::new();
        let mut next = Some(first);
        let mut stop = false;
        loop {
            if let Some(call) = next.take() {
                if call.reply.is_closed() {
                    continue;
                }
                corr += 1;
                let env = Envelope {
                    corr,
                    body: call.req,
                };
                match frame::write_frame(&mut wr, &env, max).await {
                    Ok(()) => {
                        sent_one();
                        inflight.insert(corr, call.reply);
                        if inflight.len() > 1024 {
                            inflight.retain(|_, r| !r.is_closed());
                        }
                    }
                    Err(FrameError::Io(e)) => {
                        tracing::debug!(%addr, "send failed: {e}");
                        let _ = call.reply.send(Err(RpcError::Unavailable));
                        break;
                    }
                    Err(e) => {
                        // Never sent (e.g. too large): only this call fails.
                        tracing::warn!(%addr, "request not sent: {e}");
                        let _ = call.reply.send(Err(RpcError::Unavailable));
                    }
                }
            }
            tokio::select! {
                biased;
                reply = replies.recv() => match reply {
                    Some(env) => {
                        // The peer answers: the connection is healthy.
                        backoff = cfg.backoff_initial;
                        if let Some(r) = inflight.remove(&env.corr) {
                            let _ = r.send(Ok(env.body));
                        }
                    }
                    None => break,
                },
                call = calls.recv() => match call {
                    Some(c) => next = Some(c),
                    None => {
                        stop = true;
                        break;
                    }
                },
            }
        }
        reader.abort();
        for (_, r) in std::mem::take(&mut inflight) {
            let _ = r.send(Err(RpcError::Unavailable));
        }
        if stop {
            return;
        }
        // A peer that accepts and then fails must not be hammered either.
        let jitter = rng.below(backoff.as_micros() as u64 / 2 + 1);
        tokio::time::sleep(backoff + Duration::from_micros(jitter)).await;
        backoff = (backoff * 2).min(cfg.backoff_max);
    }
}
