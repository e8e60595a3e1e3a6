//! The adapters under madsim: the coordinator, the WAL channel servers, the
//! metadata store and the clients run as simulated nodes (the very adapter
//! code: actors, file catalog on a simulated disk, TCP transport), while the
//! supervisor kills and restarts the coordinator at seeded random points,
//! loses and delays packets, and partitions links. After a heal phase the
//! store's record must show every broadcast's callback applied exactly once,
//! conflicting callbacks in control-tick order, and every broadcast done.
//!
//! Run it with `cargo xtask madsim [--seeds N] [--start S] [--mutant M]`
//! (which sets `RUSTFLAGS="--cfg madsim"` and the variables below):
//! - `SIMCAST_MADSIM_SEEDS` (default 20), `SIMCAST_MADSIM_START` (default 0):
//!   the seeds; `MADSIM_TEST_SEED=N` runs that one seed;
//! - `SIMCAST_MADSIM_MUTANT`: `ack-before-fsync` (the catalog writer
//!   acknowledges before its fsync) or `store-no-dedup` (the store applies
//!   every invocation); a mutant run stops at its first failing seed;
//! - `SIMCAST_MADSIM_JOBS` (default 2): seeds run in parallel;
//! - `SIMCAST_MADSIM_KEEP_GOING`: a mutant run goes on after a failure;
//! - `SIMCAST_MADSIM_CHECK_DETERMINISM`: every seed runs twice and madsim
//!   compares their random draws (the first seed of a run always does);
//! - `SIMCAST_MADSIM_FIGURES=FILE`: measure throughput instead (what
//!   `cargo xtask bench` runs): the seeds run one at a time on one thread,
//!   without the determinism double run, once as a warm-up and then
//!   `SIMCAST_MADSIM_REPEAT` times (default 3); a failing seed still fails
//!   the test. FILE gets one JSON
//!   object whose `figures` (`[{name, value, unit, spread}]`, as `simcast
//!   bench --json`) are `madsim seeds/s` and `madsim messages/s` (frames
//!   sent by the transport per wall-clock second), each the median over the
//!   repetitions with spread (max - min) / median.
//!
//! A failing seed is printed with the command that replays it.
//!
//! Addresses are madsim's simulated ones (192.0.2.0/24, a documentation
//! range): nothing here opens a real socket.
#![cfg(madsim)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use madsim::net::NetSim;
use madsim::rand::{Rng, thread_rng};
use madsim::runtime::{Handle, Runtime};
use simcast_adapters::actor::broadcaster::BroadcasterConfig;
use simcast_adapters::catalog::CatalogFlaw;
use simcast_adapters::check::{Verdict, check};
use simcast_adapters::disk::{Disk, MemDisk, MemLatency};
use simcast_adapters::node::{ChannelServer, Coordinator, CoordinatorConfig, Store, StoreFlaw};
use simcast_adapters::transport::{RpcClient, RpcConfig, fixed, frames_sent};
use simcast_adapters::wire::{ClientReply, ClientRequest};
use simcast_adapters::workload::{ClientReport, WorkloadConfig, payload, run_client};
use simcast_machines::broadcast::{ChannelId, Config, GcConfig};

const MUTANTS: &[(&str, &str)] = &[
    (
        "ack-before-fsync",
        "the catalog writer acknowledges a write before its fsync completes",
    ),
    (
        "store-no-dedup",
        "the metadata store applies every invocation, without dedup by broadcast id",
    ),
];

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(last), port)
}

const VCHANNELS: u32 = 2;
const CLIENTS: u32 = 4;
const BROADCASTS: u32 = 20;

/// What one seed did.
struct Run {
    verdict: Verdict,
    kills: u32,
    lost_bytes: usize,
    loss: f64,
}

fn machine_config() -> Config {
    let mut cfg = Config::new(ChannelId(0), (1..=VCHANNELS).map(ChannelId));
    cfg.gc = GcConfig {
        max_count: 8,
        max_lifetime: Duration::from_secs(3600),
        check_interval: Duration::from_millis(100),
    };
    cfg
}

async fn scenario(seed: u64, mutant: Option<&'static str>) -> Result<Run, String> {
    let handle = Handle::current();
    let mut rng = thread_rng();
    let store_flaw = (mutant == Some("store-no-dedup")).then_some(StoreFlaw::NoDedup);
    let catalog_flaw = (mutant == Some("ack-before-fsync")).then_some(CatalogFlaw::AckBeforeFsync);

    // The store and the channels: never killed.
    let store = Store::new(store_flaw);
    let store_addr = addr(2, 7000);
    let mut peers = Vec::new();
    {
        let store = store.clone();
        let node = handle
            .create_node()
            .name("store")
            .ip(ip(2))
            .init(move || {
                let store = store.clone();
                async move {
                    store.serve(store_addr).await.expect("bind");
                    std::future::pending::<()>().await;
                }
            })
            .build();
        peers.push(node.id());
    }
    let mut channels = BTreeMap::new();
    for c in 0..=VCHANNELS {
        let a = addr(10 + c as u8, 7100);
        channels.insert(ChannelId(c), a);
        let node = handle
            .create_node()
            .name(format!("ch{c}"))
            .ip(ip(10 + c as u8))
            .init(move || async move {
                ChannelServer::new(ChannelId(c))
                    .serve(a)
                    .await
                    .expect("bind");
                std::future::pending::<()>().await;
            })
            .build();
        peers.push(node.id());
    }

    // The coordinator: a restartable node over a simulated disk that
    // survives it. Its factory re-runs recovery from the disk's files.
    let disk = MemDisk::new(MemLatency {
        write: Duration::from_micros(50),
        sync: Duration::from_micros(rng.gen_range(500..3000)),
    });
    let coord_addr = addr(1, 7200);
    let mut machine = machine_config();
    // Small id blocks: reservations are frequent, so a lost one (a write
    // acknowledged before it was durable) shows up as a reused id.
    machine.id_block = rng.gen_range(1..=8);
    let mut actor = BroadcasterConfig::new(machine);
    actor.seed = seed;
    actor.io_timeout = Duration::from_millis(rng.gen_range(40..150));
    actor.catalog_flaw = catalog_flaw;
    let cfg = CoordinatorConfig {
        listen: coord_addr,
        channels: channels.clone(),
        store: store_addr,
        disk: Disk::Mem(disk.clone()),
        catalog: "catalog.log".to_owned(),
        compact_after: Some(rng.gen_range(16..128)),
        actor,
        rpc: RpcConfig {
            seed,
            ..RpcConfig::default()
        },
    };
    let incarnation = Arc::new(AtomicU64::new(0));
    let recovery_failed = Arc::new(AtomicBool::new(false));
    let coordinator = {
        let incarnation = incarnation.clone();
        let recovery_failed = recovery_failed.clone();
        handle
            .create_node()
            .name("coordinator")
            .ip(ip(1))
            .init(move || {
                let mut cfg = cfg.clone();
                let n = incarnation.fetch_add(1, Ordering::SeqCst);
                cfg.actor.seed = cfg.actor.seed.wrapping_add(n << 32);
                cfg.rpc.seed = cfg.rpc.seed.wrapping_add(n << 32);
                let recovery_failed = recovery_failed.clone();
                async move {
                    match Coordinator::start(cfg).await {
                        Ok(c) => {
                            let _keep = c;
                            std::future::pending::<()>().await;
                        }
                        Err(e) => {
                            eprintln!("coordinator failed to start: {e}");
                            recovery_failed.store(true, Ordering::SeqCst);
                        }
                    }
                }
            })
            .build()
    };

    // The clients.
    let mut clients = Vec::new();
    let mut expected = BTreeSet::new();
    for client in 0..CLIENTS {
        for i in 0..BROADCASTS {
            expected.insert(payload(client, i));
        }
        let node = handle
            .create_node()
            .name(format!("client{client}"))
            .ip(ip(20 + client as u8))
            .build();
        let w = WorkloadConfig {
            client,
            broadcasts: BROADCASTS,
            collections: rng.gen_range(2..=4),
            shared_permille: 300,
            control: ChannelId(0),
            vchannels: (1..=VCHANNELS).map(ChannelId).collect(),
            seed,
            retry_delay: Duration::from_millis(20),
            think_max: Duration::from_millis(rng.gen_range(1..100)),
        };
        clients.push(node.spawn(async move {
            let api: RpcClient<ClientRequest, ClientReply> = RpcClient::new(
                fixed(coord_addr),
                RpcConfig {
                    seed: seed ^ u64::from(client),
                    ..RpcConfig::default()
                },
            );
            run_client(api, w).await
        }));
    }

    // Chaos: kills at seeded random points, packet loss, partitions.
    let net = NetSim::current();
    let loss = [0.0, 0.01, 0.05, 0.15][rng.gen_range(0..4)];
    net.update_config(|c| c.packet_loss_rate = loss);
    let kills = rng.gen_range(1..=4u32);
    let mut lost_bytes = 0;
    for _ in 0..kills {
        madsim::time::sleep(Duration::from_millis(rng.gen_range(20..700))).await;
        if rng.gen_bool(0.5) {
            // Partition the coordinator from the store or a channel.
            let peer_node = peers[rng.gen_range(0..peers.len())];
            net.clog_link(coordinator.id(), peer_node);
            net.clog_link(peer_node, coordinator.id());
            madsim::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
            net.unclog_link(coordinator.id(), peer_node);
            net.unclog_link(peer_node, coordinator.id());
        }
        handle.kill(coordinator.id());
        madsim::time::sleep(Duration::from_millis(rng.gen_range(1..200))).await;
        // What the disk keeps: its synced bytes and a random (torn) prefix
        // of the rest.
        lost_bytes += disk.crash(|_, n| rng.gen_range(0..=n));
        handle.restart(coordinator.id());
    }

    // Heal, then everything must finish.
    net.update_config(|c| c.packet_loss_rate = 0.0);
    let mut reports: Vec<ClientReport> = Vec::new();
    for c in clients {
        match madsim::time::timeout(Duration::from_secs(120), c).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => return Err(format!("a client task failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "broadcast.eventually_done: clients not done 120 s after healing ({} of {CLIENTS} done); recovery failed: {}",
                    reports.len(),
                    recovery_failed.load(Ordering::SeqCst)
                ));
            }
        }
    }
    // A barrier query: nothing left unfinished on the coordinator.
    let probe = handle.create_node().name("probe").ip(ip(30)).build();
    let unfinished = probe
        .spawn(async move {
            let api: RpcClient<ClientRequest, ClientReply> =
                RpcClient::new(fixed(coord_addr), RpcConfig::default());
            let mut last = Vec::new();
            for _ in 0..600 {
                if let Ok(ClientReply::Unfinished(ids)) = api
                    .call(ClientRequest::Unfinished, Duration::from_secs(1))
                    .await
                {
                    if ids.is_empty() {
                        return Vec::new();
                    }
                    last = ids;
                }
                madsim::time::sleep(Duration::from_millis(100)).await;
            }
            last
        })
        .await
        .map_err(|e| format!("probe failed: {e}"))?;
    if !unfinished.is_empty() {
        return Err(format!(
            "broadcast.eventually_done: tasks {unfinished:?} still unfinished after healing"
        ));
    }
    reports.sort_by_key(|r| r.client);
    let verdict = check(&store.record(), &reports, &expected).map_err(|v| v.to_string())?;
    Ok(Run {
        verdict,
        kills,
        lost_bytes,
        loss,
    })
}

/// The mutant of this run, for [`scenario_of_current_seed`] (madsim's
/// determinism check takes a plain `fn`).
static MUTANT: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();

async fn scenario_of_current_seed() -> Result<Run, String> {
    scenario(Handle::current().seed(), MUTANT.get().copied().flatten()).await
}

fn run_seed(
    seed: u64,
    mutant: Option<&'static str>,
    check_determinism: bool,
) -> Result<Run, String> {
    let join = std::thread::spawn(move || {
        if check_determinism {
            // Runs the seed twice and compares every random draw: a
            // divergence panics, naming the seed.
            return Runtime::check_determinism(
                seed,
                madsim::Config::default(),
                scenario_of_current_seed,
            );
        }
        let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
        rt.set_time_limit(Duration::from_secs(900));
        rt.block_on(scenario(seed, mutant))
    });
    match join.join() {
        Ok(r) => r,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        )),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn replay_command(seed: u64, mutant: Option<&str>) -> String {
    match mutant {
        Some(m) => format!("cargo xtask madsim --seed {seed} --mutant {m}"),
        None => format!("cargo xtask madsim --seed {seed}"),
    }
}

/// A median and its spread, (max - min) / median.
fn median_and_spread(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let spread = if median > 0.0 {
        (samples[samples.len() - 1] - samples[0]) / median
    } else {
        0.0
    };
    (median, spread)
}

/// `SIMCAST_MADSIM_FIGURES`: runs the seeds one at a time, once to warm up
/// and then `SIMCAST_MADSIM_REPEAT` times, and writes the throughput
/// figures to `path`.
fn measure_throughput(path: &Path, start: u64, count: u64, mutant: Option<&'static str>) {
    let repeat = env_u64("SIMCAST_MADSIM_REPEAT", 3).max(1);
    println!(
        "madsim: measuring throughput: seeds {start}..{} ({count}) one at a time, {repeat} repetitions",
        start + count
    );
    let run_all = || {
        let frames_before = frames_sent();
        let began = Instant::now();
        for seed in start..start + count {
            if let Err(e) = run_seed(seed, mutant, false) {
                println!("seed {seed} FAILED: {e}");
                println!("  replay: {}", replay_command(seed, mutant));
                panic!("seed {seed} failed while measuring throughput");
            }
        }
        (
            began.elapsed().as_secs_f64().max(1e-9),
            frames_sent() - frames_before,
        )
    };
    // A warm-up, as `simcast bench` does; then the measured repetitions.
    let (_, warm_frames) = run_all();
    let mut seeds_per_sec = Vec::new();
    let mut msgs_per_sec = Vec::new();
    let mut frames_per_repetition = Vec::new();
    for _ in 0..repeat {
        let (secs, frames) = run_all();
        seeds_per_sec.push(count as f64 / secs);
        msgs_per_sec.push(frames as f64 / secs);
        frames_per_repetition.push(frames);
    }
    // The same seeds must send the same frames: a cheap determinism check.
    if frames_per_repetition.iter().any(|f| *f != warm_frames) {
        println!(
            "madsim: WARNING: the same seeds sent different numbers of frames: {warm_frames} (warm-up), then {frames_per_repetition:?}"
        );
    }
    let (seeds, seeds_spread) = median_and_spread(seeds_per_sec);
    let (msgs, msgs_spread) = median_and_spread(msgs_per_sec);
    let json = format!(
        concat!(
            "{{\"command\":\"madsim-bench\",\"start\":{},\"seeds\":{},\"repeat\":{},",
            "\"frames_per_repetition\":{},\"figures\":[",
            "{{\"name\":\"madsim seeds/s\",\"value\":{},\"unit\":\"seeds/s\",\"spread\":{}}},",
            "{{\"name\":\"madsim messages/s\",\"value\":{},\"unit\":\"msgs/s\",\"spread\":{}}}]}}\n"
        ),
        start, count, repeat, frames_per_repetition[0], seeds, seeds_spread, msgs, msgs_spread
    );
    std::fs::write(path, json).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    println!(
        "madsim: {seeds:.1} seeds/s ({:.1}%), {msgs:.0} messages/s ({:.1}%), {} frames per repetition; figures in {}",
        seeds_spread * 100.0,
        msgs_spread * 100.0,
        frames_per_repetition[0],
        path.display()
    );
}

#[test]
fn exactly_once_and_in_order_across_kills_loss_and_partitions() {
    let mutant: Option<&'static str> = match std::env::var("SIMCAST_MADSIM_MUTANT") {
        Ok(m) if m.is_empty() || m == "none" => None,
        Ok(m) => match MUTANTS.iter().find(|(name, _)| *name == m) {
            Some((name, _)) => Some(name),
            None => panic!(
                "unknown mutant `{m}`; known: {}",
                MUTANTS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        Err(_) => None,
    };
    let (start, count) = match std::env::var("MADSIM_TEST_SEED") {
        Ok(s) if !s.is_empty() => (s.parse().expect("MADSIM_TEST_SEED is a number"), 1),
        _ => (
            env_u64("SIMCAST_MADSIM_START", 0),
            env_u64("SIMCAST_MADSIM_SEEDS", 20),
        ),
    };
    let jobs = env_u64("SIMCAST_MADSIM_JOBS", 2).max(1);
    let keep_going = std::env::var_os("SIMCAST_MADSIM_KEEP_GOING").is_some();
    let check_all = std::env::var_os("SIMCAST_MADSIM_CHECK_DETERMINISM").is_some();
    MUTANT.set(mutant).expect("set once");
    if let Some(path) = std::env::var_os("SIMCAST_MADSIM_FIGURES").filter(|p| !p.is_empty()) {
        measure_throughput(Path::new(&path), start, count, mutant);
        return;
    }
    println!(
        "madsim: seeds {start}..{} ({count}), {jobs} at a time, mutant: {}",
        start + count,
        mutant.unwrap_or("none")
    );
    let began = Instant::now();
    let next = Arc::new(AtomicU64::new(start));
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, stop, results) = (next.clone(), stop.clone(), results.clone());
            std::thread::spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= start + count || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    // The first seed always runs twice: the adapters must be
                    // deterministic under madsim for a seed to replay.
                    let r = run_seed(seed, mutant, check_all || seed == start);
                    if let Err(e) = &r {
                        println!("seed {seed} FAILED: {e}");
                        println!("  replay: {}", replay_command(seed, mutant));
                        if mutant.is_some() && !keep_going {
                            stop.store(true, Ordering::SeqCst);
                        }
                    }
                    results.lock().unwrap().insert(seed, r);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let results = std::mem::take(&mut *results.lock().unwrap());
    let failed: Vec<u64> = results
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(s, _)| *s)
        .collect();
    let ok: Vec<&Run> = results.values().filter_map(|r| r.as_ref().ok()).collect();
    println!(
        "madsim: {} seeds run, {} failed, in {:.1}s; passing seeds: {} broadcasts done, {} callbacks applied, {} coordinator kills, {} unsynced bytes lost by kills, {} rebroadcasts, packet loss up to {:.0}%",
        results.len(),
        failed.len(),
        began.elapsed().as_secs_f64(),
        ok.iter().map(|r| r.verdict.done).sum::<usize>(),
        ok.iter().map(|r| r.verdict.applied).sum::<usize>(),
        ok.iter().map(|r| r.kills).sum::<u32>(),
        ok.iter().map(|r| r.lost_bytes).sum::<usize>(),
        ok.iter().map(|r| r.verdict.rebroadcasts).sum::<u32>(),
        ok.iter().map(|r| r.loss).fold(0.0, f64::max) * 100.0,
    );
    if let Some(first) = failed.first() {
        println!(
            "madsim: FAILED seeds {failed:?}; replay the first with: {}",
            replay_command(*first, mutant)
        );
        panic!("{} of {} seeds failed", failed.len(), results.len());
    }
}
