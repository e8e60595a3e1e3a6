//! The end-to-end checks on a cluster run, read from the metadata store's
//! record: the same invariants the simulator names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::wire::Applied;
use crate::workload::ClientReport;

/// `broadcast.callback_exactly_once`.
pub const EXACTLY_ONCE: &str = "broadcast.callback_exactly_once";
/// `broadcast.callback_order`.
pub const ORDER: &str = "broadcast.callback_order";
/// `broadcast.eventually_done`.
pub const EVENTUALLY_DONE: &str = "broadcast.eventually_done";

/// A failed check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant.
    pub invariant: &'static str,
    /// What was seen.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.message)
    }
}

/// What the checks counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Broadcasts the clients completed.
    pub done: usize,
    /// Applications in the store's record.
    pub applied: usize,
    /// Pairs of conflicting applications whose order was checked.
    pub ordered_pairs: usize,
    /// Payloads broadcast again after a crash lost them.
    pub rebroadcasts: u32,
}

fn violation(invariant: &'static str, message: String) -> Violation {
    Violation { invariant, message }
}

/// Checks the store's `record` against what the clients saw, `expected`
/// being every payload the clients were to broadcast:
/// - every payload in the record is expected, and applied once (by payload
///   and by broadcast id);
/// - every payload a client saw done is in the record, and every expected
///   payload was done;
/// - applications whose keys conflict are in control-tick order.
///
/// # Errors
/// The first [`Violation`] found.
pub fn check(
    record: &[Applied],
    reports: &[ClientReport],
    expected: &BTreeSet<u64>,
) -> Result<Verdict, Violation> {
    let mut by_payload: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut by_id: BTreeMap<u64, usize> = BTreeMap::new();
    for a in record {
        if !expected.contains(&a.payload) {
            return Err(violation(
                EXACTLY_ONCE,
                format!(
                    "the store applied payload {:#x} that no client broadcast",
                    a.payload
                ),
            ));
        }
        by_payload.entry(a.payload).or_default().push(a.id.0);
        *by_id.entry(a.id.0).or_default() += 1;
    }
    if let Some((id, n)) = by_id.iter().find(|(_, n)| **n > 1) {
        return Err(violation(
            EXACTLY_ONCE,
            format!("the store applied broadcast b{id} {n} times"),
        ));
    }
    if let Some((p, ids)) = by_payload.iter().find(|(_, ids)| ids.len() > 1) {
        return Err(violation(
            EXACTLY_ONCE,
            format!(
                "payload {p:#x} was applied {} times, as broadcasts {:?}",
                ids.len(),
                ids.iter().map(|i| format!("b{i}")).collect::<Vec<_>>()
            ),
        ));
    }
    let mut done = BTreeSet::new();
    for r in reports {
        for (p, id) in &r.done {
            match by_payload.get(p) {
                Some(ids) if ids == &[id.0] => {}
                Some(ids) => {
                    return Err(violation(
                        EXACTLY_ONCE,
                        format!(
                            "client {} was told payload {p:#x} completed as {id}, but the store applied it as b{}",
                            r.client, ids[0]
                        ),
                    ));
                }
                None => {
                    return Err(violation(
                        EXACTLY_ONCE,
                        format!(
                            "client {} was told payload {p:#x} completed as {id}, but the store never applied it",
                            r.client
                        ),
                    ));
                }
            }
            done.insert(*p);
        }
    }
    if let Some(p) = expected.iter().find(|p| !done.contains(p)) {
        return Err(violation(
            EVENTUALLY_DONE,
            format!("payload {p:#x} never completed"),
        ));
    }
    let mut ordered_pairs = 0;
    for (i, a) in record.iter().enumerate() {
        for b in &record[i + 1..] {
            if a.keys.conflicts_with(&b.keys) {
                ordered_pairs += 1;
                if a.control_tick >= b.control_tick {
                    return Err(violation(
                        ORDER,
                        format!(
                            "{} (tick {}) was applied before conflicting {} (tick {})",
                            a.id, a.control_tick.0, b.id, b.control_tick.0
                        ),
                    ));
                }
            }
        }
    }
    Ok(Verdict {
        done: done.len(),
        applied: record.len(),
        ordered_pairs,
        rebroadcasts: reports.iter().map(|r| r.rebroadcasts).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use simcast_machines::broadcast::{BroadcastId, TimeTick};
    use simcast_machines::locks::{LockRequest, ResourceKey};

    fn applied(id: u64, payload: u64, key: &str, tick: u64) -> Applied {
        Applied {
            id: BroadcastId(id),
            payload,
            keys: LockRequest::for_broadcast([ResourceKey::collection("db", key, false)]),
            control_tick: TimeTick(tick),
        }
    }

    fn report(done: &[(u64, u64)]) -> ClientReport {
        ClientReport {
            client: 0,
            done: done.iter().map(|(p, id)| (*p, BroadcastId(*id))).collect(),
            ..ClientReport::default()
        }
    }

    #[test]
    fn a_clean_record_passes_and_counts_conflicting_pairs() {
        let record = [
            applied(1, 10, "a", 5),
            applied(2, 20, "b", 3),
            applied(3, 30, "a", 9),
        ];
        let v = check(
            &record,
            &[report(&[(10, 1), (20, 2), (30, 3)])],
            &[10, 20, 30].into(),
        )
        .unwrap();
        assert_eq!((v.done, v.applied, v.ordered_pairs), (3, 3, 1));
    }

    #[test]
    fn each_violation_is_named() {
        let expected: BTreeSet<u64> = [10, 20].into();
        let twice = [applied(1, 10, "a", 1), applied(1, 10, "a", 1)];
        assert_eq!(
            check(&twice, &[], &expected).unwrap_err().invariant,
            EXACTLY_ONCE
        );
        let reused = [applied(1, 10, "a", 1), applied(2, 10, "b", 2)];
        assert_eq!(
            check(&reused, &[], &expected).unwrap_err().invariant,
            EXACTLY_ONCE
        );
        let never = [applied(1, 10, "a", 1)];
        let e = check(&never, &[report(&[(10, 1), (20, 2)])], &expected).unwrap_err();
        assert!(e.message.contains("never applied"), "{e}");
        let missing = [applied(1, 10, "a", 1)];
        let e = check(&missing, &[report(&[(10, 1)])], &expected).unwrap_err();
        assert_eq!(e.invariant, EVENTUALLY_DONE);
        let overtaken = [applied(2, 20, "a", 9), applied(1, 10, "a", 5)];
        let e = check(&overtaken, &[report(&[(10, 1), (20, 2)])], &expected).unwrap_err();
        assert_eq!(e.invariant, ORDER);
    }
}
