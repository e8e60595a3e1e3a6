//! The runnable example's orchestration: `cargo run -p simcast-adapters
//! --example cluster`.
//!
//! On 127.0.0.1: WAL channel servers and the metadata store run as tasks of
//! this process; the coordinator runs as a **child process** (the same
//! program with the `coordinator` argument) over a catalog in a temporary
//! directory. Clients run a stream of broadcasts with conflicting keys.
//! Mid-stream the coordinator is killed with SIGKILL and started again; it
//! recovers from the files it left, and the clients carry on. At the end the
//! store's record is checked: every broadcast's callback ran exactly once,
//! and conflicting callbacks ran in control-channel time-tick order.
//! Everything stops by itself (with an overall deadline).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use simcast_machines::broadcast::{ChannelId, Config, GcConfig};
use tokio::sync::mpsc;

use crate::actor::broadcaster::BroadcasterConfig;
use crate::check::{Verdict, check};
use crate::disk::Disk;
use crate::node::{ChannelServer, Coordinator, CoordinatorConfig, Store};
use crate::transport::{RpcClient, RpcConfig, Target};
use crate::wire::{ClientReply, ClientRequest};
use crate::workload::{ClientReport, WorkloadConfig, payload, run_client};

/// The example's shape.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Concurrent clients.
    pub clients: u32,
    /// Broadcasts per client.
    pub broadcasts: u32,
    /// Channels besides the control channel.
    pub vchannels: u32,
    /// Collections keys are drawn from (few: many conflicts).
    pub collections: u32,
    /// Kill the coordinator once this many callbacks were applied.
    pub kill_after: usize,
    /// How long the coordinator stays down.
    pub down_for: Duration,
    /// Give up after this long.
    pub deadline: Duration,
    /// Seeds the workload.
    pub seed: u64,
}

impl Default for ClusterConfig {
    /// 3 clients x 20 broadcasts over 4 collections and 3 channels; the
    /// kill after 20 callbacks; a 60 s deadline.
    fn default() -> Self {
        ClusterConfig {
            clients: 3,
            broadcasts: 20,
            vchannels: 2,
            collections: 4,
            kill_after: 20,
            down_for: Duration::from_millis(200),
            deadline: Duration::from_secs(60),
            seed: 7,
        }
    }
}

/// What the example reports.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The checks' counts.
    pub verdict: Verdict,
    /// Coordinator kills (SIGKILL) and restarts.
    pub kills: u32,
    /// Lines the restarted coordinator printed about its recovery.
    pub recovery: Vec<String>,
}

fn machine_config(vchannels: u32) -> Config {
    let mut cfg = Config::new(ChannelId(0), (1..=vchannels).map(ChannelId));
    cfg.gc = GcConfig {
        max_count: 16,
        max_lifetime: Duration::from_secs(3600),
        check_interval: Duration::from_millis(200),
    };
    cfg
}

/// The arguments of a coordinator process.
fn coordinator_args(
    dir: &std::path::Path,
    store: SocketAddr,
    channels: &BTreeMap<ChannelId, SocketAddr>,
    seed: u64,
) -> Vec<String> {
    let mut args = vec![
        "coordinator".to_owned(),
        "--dir".to_owned(),
        dir.display().to_string(),
        "--store".to_owned(),
        store.to_string(),
        "--seed".to_owned(),
        seed.to_string(),
    ];
    for (c, a) in channels {
        args.push("--channel".to_owned());
        args.push(format!("{}={a}", c.0));
    }
    args
}

/// The entry point of a coordinator process: `coordinator --dir DIR --store
/// ADDR --channel N=ADDR... [--listen ADDR] [--seed N]`. Prints what its
/// recovery found, then `listening ADDR`, and serves until its standard
/// input closes (or it is killed).
pub fn coordinator_main(args: &[String]) -> ExitCode {
    match parse_coordinator(args) {
        Ok(cfg) => run_coordinator_process(cfg),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn parse_coordinator(args: &[String]) -> Result<CoordinatorConfig, String> {
    let mut dir = None;
    let mut store = None;
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let mut channels = BTreeMap::new();
    let mut seed = 0u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "coordinator" => {}
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--store" => store = Some(value()?.parse().map_err(|e| format!("--store: {e}"))?),
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--channel" => {
                let v = value()?;
                let (n, addr) = v
                    .split_once('=')
                    .ok_or(format!("--channel {v}: expected N=ADDR"))?;
                let n: u32 = n.parse().map_err(|e| format!("--channel {v}: {e}"))?;
                let addr: SocketAddr = addr.parse().map_err(|e| format!("--channel {v}: {e}"))?;
                channels.insert(ChannelId(n), addr);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    let store = store.ok_or("--store is required")?;
    if !channels.contains_key(&ChannelId(0)) {
        return Err("--channel 0=ADDR (the control channel) is required".to_owned());
    }
    let vchannels = channels.len() as u32 - 1;
    let mut actor = BroadcasterConfig::new(machine_config(vchannels));
    actor.seed = seed;
    actor.io_timeout = Duration::from_millis(300);
    Ok(CoordinatorConfig {
        listen,
        channels,
        store,
        disk: Disk::dir(dir),
        catalog: "catalog.log".to_owned(),
        compact_after: Some(64),
        actor,
        rpc: RpcConfig {
            seed,
            ..RpcConfig::default()
        },
    })
}

fn run_coordinator_process(cfg: CoordinatorConfig) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: no runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let coordinator = match Coordinator::start(cfg).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        let r = &coordinator.report;
        let stats = coordinator.handle.stats().await.ok();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "recovered {} from {} catalog records: {} tasks, {} unfinished{}",
            r.path,
            r.records,
            stats.as_ref().map_or(0, |s| s.tasks),
            stats.as_ref().map_or(0, |s| s.unfinished),
            match &r.tail {
                Some(t) => format!("; {t}"),
                None => String::new(),
            }
        );
        let _ = writeln!(out, "listening {}", coordinator.addr);
        let _ = out.flush();
        drop(out);
        // Serve until the parent closes our standard input (or kills us).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {
                sink.clear();
            }
        })
        .await;
        coordinator.stop().await;
        ExitCode::SUCCESS
    })
}

/// A coordinator child process and the lines it printed.
struct CoordinatorProcess {
    child: Child,
    addr: SocketAddr,
    lines: Vec<String>,
}

fn spawn_coordinator(program: &Path, args: &[String]) -> Result<CoordinatorProcess, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the coordinator exited early: {lines:?}"));
            }
            Ok(_) => {}
        }
        let line = line.trim_end().to_owned();
        if let Some(addr) = line.strip_prefix("listening ") {
            let addr = addr
                .parse()
                .map_err(|e| format!("bad address {addr}: {e}"))?;
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return Ok(CoordinatorProcess { child, addr, lines });
        }
        lines.push(line);
    }
}

/// Starts a coordinator process without blocking the runtime.
async fn start_coordinator(program: &Path, args: &[String]) -> Result<CoordinatorProcess, String> {
    let (program, args) = (program.to_path_buf(), args.to_vec());
    tokio::task::spawn_blocking(move || spawn_coordinator(&program, &args))
        .await
        .map_err(|e| format!("starting the coordinator: {e}"))?
}

/// Runs the example: starts the cluster, runs the workload, kills and
/// restarts the coordinator (`program coordinator ...`) mid-stream, checks.
///
/// # Errors
/// A message: a node did not start, the deadline passed, or a check failed.
pub fn run(cfg: &ClusterConfig, program: PathBuf) -> Result<Summary, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    rt.block_on(run_async(cfg.clone(), program))
}

async fn run_async(cfg: ClusterConfig, program: PathBuf) -> Result<Summary, String> {
    let dir = tempfile::Builder::new()
        .prefix("simcast-cluster-")
        .tempdir()
        .map_err(|e| format!("no temporary directory: {e}"))?;
    let local: SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let mut channels = BTreeMap::new();
    for c in 0..=cfg.vchannels {
        let (_server, addr) = ChannelServer::start(ChannelId(c), local)
            .await
            .map_err(|e| format!("channel server: {e}"))?;
        channels.insert(ChannelId(c), addr);
    }
    let (store, store_addr) = Store::start(None, local)
        .await
        .map_err(|e| format!("store: {e}"))?;
    let args = coordinator_args(dir.path(), store_addr, &channels, cfg.seed);
    let first = start_coordinator(&program, &args).await?;
    println!(
        "cluster on 127.0.0.1: {} WAL channel servers, metadata store {store_addr}, coordinator pid {} at {} (catalog in {})",
        channels.len(),
        first.child.id(),
        first.addr,
        dir.path().display()
    );
    let addr = Arc::new(Mutex::new(first.addr));
    let target: Target = {
        let addr = addr.clone();
        Arc::new(move || *addr.lock().expect("not poisoned"))
    };
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<ClientReport>();
    let mut expected = BTreeSet::new();
    for client in 0..cfg.clients {
        for i in 0..cfg.broadcasts {
            expected.insert(payload(client, i));
        }
        let api: RpcClient<ClientRequest, ClientReply> = RpcClient::new(
            target.clone(),
            RpcConfig {
                seed: cfg.seed + u64::from(client),
                ..RpcConfig::default()
            },
        );
        let w = WorkloadConfig {
            client,
            broadcasts: cfg.broadcasts,
            collections: cfg.collections,
            shared_permille: 300,
            control: ChannelId(0),
            vchannels: (1..=cfg.vchannels).map(ChannelId).collect(),
            seed: cfg.seed,
            retry_delay: Duration::from_millis(20),
            think_max: Duration::from_millis(5),
        };
        let tx = done_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(run_client(api, w).await);
        });
    }
    drop(done_tx);
    let deadline = tokio::time::Instant::now() + cfg.deadline;
    let mut current = first;
    let mut kills = 0;
    let mut recovery = Vec::new();
    let mut reports = Vec::new();
    while reports.len() < cfg.clients as usize {
        if kills == 0 && store.record().len() >= cfg.kill_after {
            let pid = current.child.id();
            current.child.kill().map_err(|e| format!("kill: {e}"))?;
            let _ = current.child.wait();
            kills += 1;
            println!(
                "killed the coordinator (pid {pid}, SIGKILL) after {} callbacks, mid-stream",
                store.record().len()
            );
            tokio::time::sleep(cfg.down_for).await;
            let next = start_coordinator(&program, &args).await?;
            for line in &next.lines {
                println!("restarted coordinator (pid {}): {line}", next.child.id());
            }
            recovery.extend(next.lines.clone());
            *addr.lock().expect("not poisoned") = next.addr;
            current = next;
        }
        tokio::select! {
            r = done_rx.recv() => match r {
                Some(r) => reports.push(r),
                None => break,
            },
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if tokio::time::Instant::now() > deadline {
            let _ = current.child.kill();
            return Err(format!(
                "deadline of {:?} passed with {} of {} clients done",
                cfg.deadline,
                reports.len(),
                cfg.clients
            ));
        }
    }
    // Barrier query: every task the coordinator knows is finished.
    let api: RpcClient<ClientRequest, ClientReply> = RpcClient::new(target, RpcConfig::default());
    loop {
        match api
            .call(ClientRequest::Unfinished, Duration::from_secs(5))
            .await
        {
            Ok(ClientReply::Unfinished(ids)) if ids.is_empty() => break,
            _ if tokio::time::Instant::now() > deadline => {
                let _ = current.child.kill();
                return Err("the coordinator still has unfinished tasks at the deadline".to_owned());
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    // Close its standard input: it shuts down and exits.
    drop(current.child.stdin.take());
    let _ = tokio::task::spawn_blocking(move || current.child.wait()).await;
    reports.sort_by_key(|r| r.client);
    let verdict = check(&store.record(), &reports, &expected).map_err(|v| v.to_string())?;
    Ok(Summary {
        verdict,
        kills,
        recovery,
    })
}

/// The record the crash test's writer appends as its `k`-th write: a
/// pending task `b<k>` with payload `k`.
pub fn crash_test_op(k: u64) -> simcast_machines::broadcast::CatalogOp {
    use simcast_machines::broadcast::{
        AckSet, BroadcastId, CatalogOp, Message, TaskRecord, TaskState,
    };
    use simcast_machines::locks::{LockRequest, ResourceKey};
    CatalogOp::PutTask(TaskRecord {
        id: BroadcastId(k),
        state: TaskState::Pending,
        message: Message::new(
            k,
            BTreeSet::from([ChannelId(0)]),
            LockRequest::for_broadcast([ResourceKey::collection("db", "c", false)]),
        ),
        acks: AckSet::new(),
        tombstoned_at: None,
    })
}

/// The entry point of the crash test's child: `catalog-writer --dir DIR
/// --records N`. Appends [`crash_test_op`]`(1..=N)` to `DIR/catalog.log`,
/// one durable append at a time, printing `durable K` after each.
pub fn catalog_writer_main(args: &[String]) -> ExitCode {
    let mut dir = None;
    let mut records = 1000u64;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--dir", Some(v)) => dir = Some(PathBuf::from(v)),
            ("--records", Some(v)) => match v.parse() {
                Ok(n) => records = n,
                Err(e) => {
                    eprintln!("error: --records: {e}");
                    return ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("usage: catalog-writer --dir DIR [--records N]");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("error: --dir is required");
        return ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: no runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async move {
        let (mut catalog, report) =
            match crate::catalog::FileCatalog::open(Disk::dir(dir), "catalog.log").await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
        let start = report.records + 1;
        let mut out = std::io::stdout().lock();
        for k in start..=records {
            if let Err(e) = catalog.append(&[crash_test_op(k)]).await {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let _ = writeln!(out, "durable {k}");
            let _ = out.flush();
        }
        ExitCode::SUCCESS
    })
}
