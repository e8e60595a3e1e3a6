//! A client workload: a stream of broadcasts with conflicting keys against
//! a coordinator, each seen through to its end exactly once.
//!
//! Each broadcast carries a unique payload. A client starts it, broadcasts
//! it and waits for `Done`. When the connection fails first (the coordinator
//! was killed) the outcome is unknown, so the client asks the coordinator
//! for the id's [`TaskStatus`] until it is known: `Completed`/`Deleted` mean
//! done; `Lost` means it was never persisted and never will be, so the
//! client broadcasts the same payload again under a new id. The client never
//! re-broadcasts a payload that may still complete: that is what makes
//! "every payload applied exactly once" checkable end to end.

use std::collections::BTreeSet;
use std::time::Duration;

use simcast_machines::broadcast::{Body, BroadcastId, ChannelId};
use simcast_machines::locks::ResourceKey;

use crate::rng::SplitMix64;
use crate::transport::RpcClient;
use crate::wire::{ClientReply, ClientRequest, TaskStatus};

/// What a client does.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    /// The client's number (payloads are unique per client).
    pub client: u32,
    /// Broadcasts to complete.
    pub broadcasts: u32,
    /// Collections keys are drawn from (fewer: more conflicts).
    pub collections: u32,
    /// Probability (per mille) that a key is shared rather than exclusive.
    pub shared_permille: u32,
    /// The control channel (always a target).
    pub control: ChannelId,
    /// The other channels (each a target with probability 1/2).
    pub vchannels: Vec<ChannelId>,
    /// Seeds the draws.
    pub seed: u64,
    /// Pause after a failure before trying again.
    pub retry_delay: Duration,
    /// Longest pause between broadcasts.
    pub think_max: Duration,
}

/// What a client saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientReport {
    /// The client.
    pub client: u32,
    /// Payloads completed, with the id that completed each.
    pub done: Vec<(u64, BroadcastId)>,
    /// Payloads broadcast again after their first id was `Lost`.
    pub rebroadcasts: u32,
    /// Calls that failed (connection lost, refused).
    pub failures: u32,
}

/// The payload of a client's `i`-th broadcast.
pub fn payload(client: u32, i: u32) -> u64 {
    (u64::from(client) << 32) | u64::from(i)
}

fn draw_keys(rng: &mut SplitMix64, cfg: &WorkloadConfig) -> Vec<ResourceKey> {
    let n = 1 + rng.below(2);
    (0..n)
        .map(|_| {
            let c = rng.below(u64::from(cfg.collections.max(1)));
            let shared = rng.chance(cfg.shared_permille);
            ResourceKey::collection("db", &format!("c{c}"), shared)
        })
        .collect()
}

fn draw_body(rng: &mut SplitMix64, cfg: &WorkloadConfig, payload: u64) -> Body {
    let mut targets = BTreeSet::from([cfg.control]);
    for c in &cfg.vchannels {
        if rng.chance(500) {
            targets.insert(*c);
        }
    }
    Body { payload, targets }
}

const FOREVER: Duration = Duration::from_secs(3600);

/// Runs the workload to its end; returns what the client saw.
pub async fn run_client(
    api: RpcClient<ClientRequest, ClientReply>,
    cfg: WorkloadConfig,
) -> ClientReport {
    let mut rng = SplitMix64::new(cfg.seed ^ (u64::from(cfg.client) << 40));
    let mut report = ClientReport {
        client: cfg.client,
        ..ClientReport::default()
    };
    for i in 0..cfg.broadcasts {
        let p = payload(cfg.client, i);
        let keys = draw_keys(&mut rng, &cfg);
        let body = draw_body(&mut rng, &cfg, p);
        let think = rng.below(cfg.think_max.as_micros() as u64 + 1);
        tokio::time::sleep(Duration::from_micros(think)).await;
        let mut first = true;
        'attempt: loop {
            if !first {
                report.rebroadcasts += 1;
            }
            let id = match api
                .call(ClientRequest::Start { keys: keys.clone() }, FOREVER)
                .await
            {
                Ok(ClientReply::Started(id)) => id,
                _ => {
                    report.failures += 1;
                    tokio::time::sleep(cfg.retry_delay).await;
                    continue 'attempt;
                }
            };
            first = false;
            match api
                .call(
                    ClientRequest::Broadcast {
                        id,
                        body: body.clone(),
                    },
                    FOREVER,
                )
                .await
            {
                Ok(ClientReply::Done(_)) => {
                    report.done.push((p, id));
                    break 'attempt;
                }
                // The connection failed, or the coordinator shut down after
                // accepting it: the outcome is unknown.
                Ok(ClientReply::OutcomeUnknown) | Err(_) => report.failures += 1,
                // Refused before a task was created: nothing to wait for.
                Ok(_) => {
                    report.failures += 1;
                    tokio::time::sleep(cfg.retry_delay).await;
                    continue 'attempt;
                }
            }
            // The outcome is unknown: ask until it is known.
            loop {
                tokio::time::sleep(cfg.retry_delay).await;
                match api.call(ClientRequest::Status { id }, FOREVER).await {
                    Ok(ClientReply::Status(TaskStatus::Completed | TaskStatus::Deleted)) => {
                        report.done.push((p, id));
                        break 'attempt;
                    }
                    Ok(ClientReply::Status(TaskStatus::Lost)) => continue 'attempt,
                    _ => {}
                }
            }
        }
    }
    report
}
