//! The actors: effects carried out and completions fed back, barrier
//! queries, push-back, idempotent shutdown that answers waiting callers, and
//! recovery from the files a stopped actor left. The broadcaster's external
//! systems are in-memory fakes here; its catalog is a real temporary
//! directory.
#![cfg(not(any(madsim, loom)))]

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use simcast_adapters::actor::ActorError;
use simcast_adapters::actor::broadcaster::{
    BoxFuture, BroadcastIo, BroadcasterActor, BroadcasterConfig, BroadcasterHandle,
};
use simcast_adapters::actor::sender::SenderActor;
use simcast_adapters::catalog::FileCatalog;
use simcast_adapters::disk::Disk;
use simcast_adapters::node::Store;
use simcast_adapters::wire::{Applied, TaskStatus};
use simcast_machines::broadcast::{
    AckInfo, Body, BroadcastError, BroadcastId, ChannelId, Config, IoError, Message, MessageId,
    TaskState, TimeTick,
};
use simcast_machines::locks::ResourceKey;
use simcast_machines::replication::{
    Budget, Endpoint, Epoch, Handshake, Lsn, ReplicaId, ReplicaState, RetainedHistory, SessionKind,
};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// WAL channels and a store in memory. Callbacks can be held back.
#[derive(Clone, Default)]
struct FakeIo {
    tick: Arc<AtomicU64>,
    store: Store,
    hold_callbacks: Arc<AtomicBool>,
    append_delay_ms: Arc<AtomicU64>,
}

impl BroadcastIo for FakeIo {
    fn append(
        &self,
        _: BroadcastId,
        _: ChannelId,
        _: Message,
    ) -> BoxFuture<Result<AckInfo, IoError>> {
        let tick = self.tick.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = self.append_delay_ms.load(Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok(AckInfo {
                message_id: MessageId(tick),
                time_tick: TimeTick(tick),
            })
        })
    }

    fn invoke(&self, applied: Applied) -> BoxFuture<Result<(), IoError>> {
        let io = self.clone();
        Box::pin(async move {
            while io.hold_callbacks.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            io.store.apply(applied);
            Ok(())
        })
    }
}

fn config(mailbox: usize) -> BroadcasterConfig {
    let mut cfg = BroadcasterConfig::new(Config::new(ChannelId(0), [ChannelId(1)]));
    cfg.mailbox = mailbox;
    cfg.io_timeout = Duration::from_secs(30);
    cfg
}

async fn open(dir: &std::path::Path) -> FileCatalog {
    FileCatalog::open(Disk::dir(dir), "catalog.log")
        .await
        .unwrap()
        .0
}

fn x(key: &str) -> Vec<ResourceKey> {
    vec![ResourceKey::collection("db", key, false)]
}

fn body(payload: u64) -> Body {
    Body {
        payload,
        targets: BTreeSet::from([ChannelId(0), ChannelId(1)]),
    }
}

async fn spawn(
    dir: &std::path::Path,
    io: FakeIo,
    mailbox: usize,
) -> (BroadcasterHandle, tokio::task::JoinHandle<()>) {
    BroadcasterActor::spawn(config(mailbox), open(dir).await, io)
}

/// Polls `f` once: enough to get a command into the mailbox.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

#[test]
fn a_broadcast_completes_once_its_callback_ran_and_its_tombstone_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let io = FakeIo::default();
        let (h, task) = spawn(dir.path(), io.clone(), 16).await;
        let id = h.start(x("c")).await.unwrap();
        assert_eq!(h.status(id).await, Ok(TaskStatus::Open));
        h.broadcast(id, body(42)).await.unwrap();
        assert_eq!(io.store.record().len(), 1);
        assert_eq!(io.store.record()[0].payload, 42);
        assert_eq!(h.status(id).await, Ok(TaskStatus::Completed));
        let stats = h.stats().await.unwrap();
        assert!(stats.quiescent, "{stats:?}");
        assert_eq!(stats.locks_held, 0, "keys released");
        h.shutdown().await.unwrap();
        task.await.unwrap();
    });
    // The tombstone is on disk.
    block_on(async {
        let c = open(dir.path()).await;
        assert_eq!(c.state().tasks.len(), 1);
        assert!(
            c.state()
                .tasks
                .values()
                .all(|t| t.state == TaskState::Tombstone)
        );
    });
}

#[test]
fn a_query_answers_only_after_every_earlier_command() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let io = FakeIo::default();
        io.append_delay_ms.store(200, Ordering::SeqCst);
        let (h, _task) = spawn(dir.path(), io, 16).await;
        let id = h.start(x("c")).await.unwrap();
        // Queue the broadcast (it will not be done for a while), then ask.
        let mut broadcast = Box::pin(h.broadcast(id, body(1)));
        assert!(poll_once(&mut broadcast).await.is_pending());
        assert_eq!(
            h.status(id).await,
            Ok(TaskStatus::InProgress(TaskState::Pending)),
            "the query saw the broadcast queued before it"
        );
        broadcast.await.unwrap();
    });
}

#[test]
fn a_full_mailbox_pushes_back_and_a_fail_fast_handle_reports_busy() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (actor, h) =
            BroadcasterActor::new(config(2), open(dir.path()).await, FakeIo::default());
        // The actor is not running yet: two queries fill its mailbox.
        let q1 = tokio::spawn({
            let h = h.clone();
            async move { h.stats().await }
        });
        let q2 = tokio::spawn({
            let h = h.clone();
            async move { h.stats().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.fail_fast().stats().await, Err(ActorError::Busy));
        let pushed_back = tokio::spawn({
            let h = h.clone();
            async move { h.stats().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pushed_back.is_finished(), "the caller waits for room");
        tokio::spawn(actor.run());
        for q in [q1, q2, pushed_back] {
            assert!(q.await.unwrap().is_ok());
        }
    });
}

#[test]
fn shutdown_is_idempotent_and_answers_every_waiting_caller_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let io = FakeIo::default();
        io.hold_callbacks.store(true, Ordering::SeqCst);
        let (h, task) = spawn(dir.path(), io, 16).await;
        // One broadcast stuck in its callback, one start waiting for keys.
        let id = h.start(x("c")).await.unwrap();
        let stuck = tokio::spawn({
            let h = h.clone();
            async move { h.broadcast(id, body(1)).await }
        });
        let waiting = tokio::spawn({
            let h = h.clone();
            async move { h.start(x("c")).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(h.stats().await.unwrap().locks_waiting, 1);
        h.shutdown().await.unwrap();
        h.shutdown().await.unwrap();
        assert_eq!(stuck.await.unwrap(), Err(ActorError::ShuttingDown));
        assert_eq!(
            waiting.await.unwrap(),
            Err(ActorError::Broadcast(BroadcastError::TaskNotCreated))
        );
        assert_eq!(h.stats().await, Err(ActorError::ShuttingDown));
        assert!(h.is_closed());
        task.await.unwrap();
        h.shutdown().await.unwrap();
    });
}

#[test]
fn a_caller_that_leaves_while_waiting_for_keys_does_not_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (h, _task) = spawn(dir.path(), FakeIo::default(), 16).await;
        let first = h.start(x("c")).await.unwrap();
        // A second caller gives up while waiting behind the first.
        let gave_up = tokio::time::timeout(Duration::from_millis(50), h.start(x("c"))).await;
        assert!(gave_up.is_err());
        h.close(first).await.unwrap();
        // Its grant is handed back at once: a third caller gets the keys.
        let third = tokio::time::timeout(Duration::from_secs(5), h.start(x("c"))).await;
        assert!(matches!(third, Ok(Ok(_))), "{third:?}");
    });
}

#[test]
fn a_persisted_broadcast_completes_after_a_restart_from_the_catalog_alone() {
    let dir = tempfile::tempdir().unwrap();
    let io = FakeIo::default();
    let id = block_on(async {
        io.hold_callbacks.store(true, Ordering::SeqCst);
        let (h, task) = spawn(dir.path(), io.clone(), 16).await;
        let id = h.start(x("c")).await.unwrap();
        let pending = tokio::spawn({
            let h = h.clone();
            async move { h.broadcast(id, body(7)).await }
        });
        // Wait until the task is durable and its callback was invoked.
        while h.stats().await.unwrap().writes.0 < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A crash: the actor is gone without a word.
        task.abort();
        assert!(pending.await.unwrap().is_err());
        id
    });
    assert!(io.store.record().is_empty());
    io.hold_callbacks.store(false, Ordering::SeqCst);
    block_on(async {
        let (h, _task) = spawn(dir.path(), io.clone(), 16).await;
        for _ in 0..400 {
            if h.status(id).await == Ok(TaskStatus::Completed) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(h.status(id).await, Ok(TaskStatus::Completed));
        assert!(h.unfinished().await.unwrap().is_empty());
        // A new start never reuses an id handed out before the restart.
        assert!(h.start(x("d")).await.unwrap() > id);
    });
    let record = io.store.record();
    assert_eq!(record.len(), 1);
    assert_eq!((record[0].id, record[0].payload), (id, 7));
}

#[test]
fn an_id_that_was_never_persisted_is_reported_lost_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let id = block_on(async {
        let (h, task) = spawn(dir.path(), FakeIo::default(), 16).await;
        let id = h.start(x("c")).await.unwrap();
        task.abort();
        id
    });
    block_on(async {
        let (h, _task) = spawn(dir.path(), FakeIo::default(), 16).await;
        assert_eq!(h.status(id).await, Ok(TaskStatus::Lost));
    });
}

#[test]
fn the_sender_actor_checks_a_catch_up_budget_when_it_falls_due() {
    block_on(async {
        let (h, task) =
            SenderActor::spawn(ReplicaId(1), Endpoint::new("data", "ctrl", 1), Epoch(1), 8);
        let budget = Budget {
            max_duration: Duration::from_millis(30),
            max_entries: 0,
            progress_deadline: Duration::ZERO,
        };
        let session = h
            .exec(move |s, _| s.attach_session(Epoch(1), SessionKind::CatchUp, Some(budget)))
            .await
            .unwrap()
            .unwrap();
        h.exec(move |s, now| {
            s.begin_connect(session)?;
            let history = RetainedHistory {
                head: Lsn(10),
                tail: Lsn(0),
                committed: Lsn(10),
                checkpoint: Lsn(0),
                checkpoint_trusted: false,
            };
            let handshake = Handshake {
                replica_flushed: Lsn(5),
                advertised_retention_start: Lsn(0),
            };
            s.record_handshake(session, handshake, &history)?;
            s.begin_catch_up(session, now)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(h.state().await, Ok(ReplicaState::CatchingUp));
        // No progress: the timer finds the budget exceeded.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(h.state().await, Ok(ReplicaState::NeedsRebuild));
        assert_eq!(h.active_session().await, Ok(None));
        h.shutdown().await.unwrap();
        h.shutdown().await.unwrap();
        let violations = task.await.unwrap();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].session, session);
    });
}
