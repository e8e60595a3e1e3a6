//! loom models of the adapters' shared-memory pieces: the blocking
//! lock-table service and the actor mailbox with barrier queries. Under
//! `--cfg loom` those modules use loom's `Mutex`/`Condvar`/`Arc`, so loom
//! explores the thread interleavings of the very code production runs.
//!
//! Run with `cargo xtask loom` (sets `RUSTFLAGS="--cfg loom"` and a bounded
//! `LOOM_MAX_PREEMPTIONS`). Each model is small so that it finishes in
//! seconds. The broken lock-service variants must be caught: their tests run
//! the flawed model in a child process (loom aborts the process when it
//! finds a deadlock) and pass only if loom reported the deadlock.
//! `SIMCAST_LOOM_FLAW=notify-before-grant|notify-one` makes
//! `lock_service_flaw_model` run that variant's model, which then fails
//! (`cargo xtask loom --flaw NAME`).
#![cfg(loom)]

use std::process::Command;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use simcast_adapters::lock_service::{LockService, LockServiceFlaw};
use simcast_adapters::mailbox::{ReplyTx, mailbox, reply_channel};
use simcast_machines::locks::{LockRequest, OwnerId, ResourceKey};

fn key(name: &str, shared: bool) -> LockRequest {
    LockRequest::new([ResourceKey::collection("db", name, shared)]).expect("one key")
}

fn flaw_from_env() -> Option<LockServiceFlaw> {
    match std::env::var("SIMCAST_LOOM_FLAW").ok().as_deref() {
        None | Some("") | Some("none") => None,
        Some("notify-before-grant") => Some(LockServiceFlaw::NotifyBeforeGrant),
        Some("notify-one") => Some(LockServiceFlaw::NotifyOne),
        Some(other) => panic!("unknown flaw `{other}`; known: notify-before-grant, notify-one"),
    }
}

/// Three threads take the same exclusive key: never two inside at once, and
/// every one gets in (a lost wake-up would be a deadlock, which loom reports).
fn contended_exclusive_model(flaw: Option<LockServiceFlaw>) {
    loom::model(move || {
        let service = LockService::with_flaw(flaw);
        let inside = Arc::new(AtomicUsize::new(0));
        let worker = |owner: u64| {
            let service = service.clone();
            let inside = inside.clone();
            move || {
                let _g = service.acquire(OwnerId(owner), key("k", false));
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "locks.exclusion");
                inside.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let t1 = thread::spawn(worker(1));
        let t2 = thread::spawn(worker(2));
        worker(3)();
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(service.held_len(), 0);
        assert_eq!(service.waiting_len(), 0);
    });
}

#[test]
fn lock_service_excludes_and_never_loses_a_wake_up() {
    contended_exclusive_model(None);
}

#[test]
fn lock_service_lets_shared_holders_in_together_but_not_with_a_writer() {
    loom::model(|| {
        let service = LockService::new();
        let readers = Arc::new(AtomicUsize::new(0));
        let writers = Arc::new(AtomicUsize::new(0));
        let reader = |owner: u64| {
            let (service, readers, writers) = (service.clone(), readers.clone(), writers.clone());
            move || {
                let _g = service.acquire(OwnerId(owner), key("k", true));
                readers.fetch_add(1, Ordering::SeqCst);
                assert_eq!(writers.load(Ordering::SeqCst), 0, "a reader with a writer");
                readers.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let t = thread::spawn(reader(1));
        let w = {
            let (service, readers, writers) = (service.clone(), readers.clone(), writers.clone());
            thread::spawn(move || {
                let _g = service.acquire(OwnerId(2), key("k", false));
                writers.fetch_add(1, Ordering::SeqCst);
                assert_eq!(readers.load(Ordering::SeqCst), 0, "a writer with a reader");
                writers.fetch_sub(1, Ordering::SeqCst);
            })
        };
        reader(3)();
        t.join().unwrap();
        w.join().unwrap();
    });
}

/// One holder, one waiter: with `NotifyBeforeGrant` the holder's release
/// notifies before it records the grant; a waiter that checks in between
/// sleeps forever.
fn one_waiter_model(flaw: Option<LockServiceFlaw>) {
    loom::model(move || {
        let service = LockService::with_flaw(flaw);
        let g = service.acquire(OwnerId(1), key("k", false));
        let s = service.clone();
        let t = thread::spawn(move || drop(s.acquire(OwnerId(2), key("k", false))));
        drop(g);
        t.join().unwrap();
    });
}

/// Two waiters on different keys: with `NotifyOne` a release grants one of
/// them but may wake the other, which goes back to sleep.
fn two_waiters_model(flaw: Option<LockServiceFlaw>) {
    loom::model(move || {
        let service = LockService::with_flaw(flaw);
        let ga = service.acquire(OwnerId(1), key("a", false));
        let gb = service.acquire(OwnerId(1), key("b", false));
        let (sa, sb) = (service.clone(), service.clone());
        let ta = thread::spawn(move || drop(sa.acquire(OwnerId(2), key("a", false))));
        let tb = thread::spawn(move || drop(sb.acquire(OwnerId(3), key("b", false))));
        drop(gb);
        drop(ga);
        ta.join().unwrap();
        tb.join().unwrap();
    });
}

#[test]
fn lock_service_wakes_the_right_waiters() {
    one_waiter_model(None);
    two_waiters_model(None);
}

/// Runs the model of the variant named by `SIMCAST_LOOM_FLAW` (nothing
/// without it): loom must fail it.
#[test]
fn lock_service_flaw_model() {
    match flaw_from_env() {
        None => {}
        Some(f @ LockServiceFlaw::NotifyBeforeGrant) => one_waiter_model(Some(f)),
        Some(f @ LockServiceFlaw::NotifyOne) => two_waiters_model(Some(f)),
    }
}

/// Runs `lock_service_flaw_model` on `flaw` in a child process; returns
/// what loom said, if it failed the model.
fn caught(flaw: &str) -> Option<String> {
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([
            "--exact",
            "lock_service_flaw_model",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SIMCAST_LOOM_FLAW", flaw)
        .output()
        .expect("run the child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return None;
    }
    Some(
        text.lines()
            .find(|l| l.contains("deadlock"))
            .unwrap_or("failed")
            .to_owned(),
    )
}

#[test]
fn a_notify_before_the_grant_is_caught_as_a_lost_wake_up() {
    let message = caught("notify-before-grant").expect("loom must find the lost wake-up");
    assert!(message.contains("deadlock"), "{message}");
    println!("notify-before-grant caught: {message}");
}

#[test]
fn a_notify_one_is_caught_waking_the_wrong_waiter() {
    let message = caught("notify-one").expect("loom must find the wrong wake-up");
    assert!(message.contains("deadlock"), "{message}");
    println!("notify-one caught: {message}");
}

enum Cmd {
    Add(usize),
    Query(usize, ReplyTx<usize>),
}

/// The actor's loop in miniature: it owns a counter per client and answers
/// queries with it.
fn actor_loop(mut rx: simcast_adapters::mailbox::MailReceiver<Cmd>) -> [usize; 2] {
    let mut counts = [0usize; 2];
    loom::future::block_on(async {
        while let Some(cmd) = rx.recv().await {
            match cmd {
                Cmd::Add(c) => counts[c] += 1,
                Cmd::Query(c, reply) => {
                    let _ = reply.send(counts[c]);
                }
            }
        }
    });
    counts
}

/// A client sends two commands through a mailbox of capacity 1 (so the
/// second send is pushed back until the actor takes the first), then a
/// barrier query, which must see both. Everyone finishes.
#[test]
fn mailbox_pushes_back_and_a_barrier_query_sees_earlier_commands() {
    loom::model(|| {
        let (tx, rx) = mailbox::<Cmd>(1);
        let client = thread::spawn(move || {
            loom::future::block_on(async {
                tx.send(Cmd::Add(0)).await.ok().expect("open");
                tx.send(Cmd::Add(0)).await.ok().expect("open");
                let (reply, answer) = reply_channel();
                tx.send(Cmd::Query(0, reply)).await.ok().expect("open");
                assert_eq!(answer.await, Ok(2), "a barrier sees every earlier command");
            });
        });
        assert_eq!(actor_loop(rx), [2, 0]);
        client.join().unwrap();
    });
}

/// Two clients contend for a mailbox of capacity 1: whichever waits is
/// woken when the actor makes room (no lost wake-up between senders), and
/// the actor sees both commands.
#[test]
fn mailbox_wakes_every_pushed_back_sender() {
    loom::model(|| {
        let (tx, rx) = mailbox::<Cmd>(1);
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let tx = tx.clone();
                thread::spawn(move || {
                    loom::future::block_on(tx.send(Cmd::Add(c)))
                        .ok()
                        .expect("open");
                })
            })
            .collect();
        drop(tx);
        assert_eq!(actor_loop(rx), [1, 1]);
        for c in clients {
            c.join().unwrap();
        }
    });
}

/// Shutting down: the actor takes one message, closes its mailbox and
/// answers what is still queued with an error. A caller is answered, or
/// refused at send: never left waiting.
#[test]
fn mailbox_shutdown_answers_or_refuses_every_caller() {
    loom::model(|| {
        let (tx, mut rx) = mailbox::<ReplyTx<Result<(), ()>>>(1);
        let actor = thread::spawn(move || {
            loom::future::block_on(async {
                if let Some(reply) = rx.recv().await {
                    let _ = reply.send(Ok(()));
                }
            });
            rx.close();
            while let Some(reply) = rx.try_recv() {
                let _ = reply.send(Err(()));
            }
        });
        let caller = |tx: simcast_adapters::mailbox::MailSender<ReplyTx<Result<(), ()>>>| {
            move || {
                loom::future::block_on(async {
                    let (reply, answer) = reply_channel();
                    match tx.send(reply).await {
                        Ok(()) => {
                            // Answered Ok or Err, or canceled if the actor
                            // dropped it: never a hang (loom would report it).
                            let _ = answer.await;
                        }
                        Err(_) => {}
                    }
                });
            }
        };
        let t = thread::spawn(caller(tx.clone()));
        caller(tx)();
        t.join().unwrap();
        actor.join().unwrap();
    });
}
