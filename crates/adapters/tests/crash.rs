//! A real crash: a child process appending to a catalog on a temporary
//! directory is killed with SIGKILL mid-stream, between (or inside) writes;
//! reopening finds every record it reported durable, in order, and nothing
//! else. A writer restarted on the same files picks up where the log ends.
#![cfg(not(any(madsim, loom)))]

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use simcast_adapters::catalog::{Damage, FileCatalog, OpenReport};
use simcast_adapters::cluster::crash_test_op;
use simcast_adapters::disk::Disk;
use simcast_machines::broadcast::{CatalogState, TaskRecord};

/// Runs the writer on `dir` and kills it once it reported `at_least`
/// durable writes; returns the last write it reported durable.
fn run_and_kill(dir: &Path, at_least: u64) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simcast-node"))
        .args(["catalog-writer", "--dir"])
        .arg(dir)
        .args(["--records", "1000000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut durable = 0;
    while durable < at_least {
        let line = lines.next().expect("the writer reports").unwrap();
        durable = line
            .strip_prefix("durable ")
            .and_then(|n| n.parse().ok())
            .expect("a `durable N` line");
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL, not exited");
    // Lines it printed before it died count too.
    for line in lines.map_while(Result::ok) {
        if let Some(n) = line.strip_prefix("durable ").and_then(|n| n.parse().ok()) {
            durable = n;
        }
    }
    durable
}

fn reopen(dir: &Path) -> (CatalogState, OpenReport) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (c, report) = FileCatalog::open(Disk::dir(dir), "catalog.log")
            .await
            .expect("a crash never leaves a catalog that cannot be opened");
        (c.state().clone(), report)
    })
}

/// The tasks are exactly `crash_test_op(1..=k)`: returns `k`.
fn contiguous_prefix(state: &CatalogState) -> u64 {
    let k = state.tasks.len() as u64;
    for (i, (id, record)) in state.tasks.iter().enumerate() {
        let expected = match crash_test_op(i as u64 + 1) {
            simcast_machines::broadcast::CatalogOp::PutTask(r) => r,
            _ => unreachable!(),
        };
        let record: &TaskRecord = record;
        assert_eq!(id.0, i as u64 + 1, "no gap, nothing invented");
        assert_eq!(record, &expected, "each record exactly as written");
    }
    k
}

#[test]
fn a_writer_killed_mid_stream_leaves_every_durable_record_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut reported = 0;
    for round in 1..=3 {
        let durable = run_and_kill(dir.path(), reported + 40 * round);
        assert!(durable > reported);
        let (state, report) = reopen(dir.path());
        let k = contiguous_prefix(&state);
        assert!(
            k >= durable,
            "round {round}: {durable} writes were reported durable, {k} recovered"
        );
        if let Some(tail) = &report.tail {
            // A kill can cut the last write short: reported and cut off.
            assert!(
                matches!(
                    tail.damage,
                    Damage::PartialHeader { .. } | Damage::PartialRecord { .. }
                ),
                "{tail:?}"
            );
        }
        reported = k;
    }
}
