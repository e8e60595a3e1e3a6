//! The runnable example: a cluster on 127.0.0.1 whose coordinator (a real
//! child process) is killed with SIGKILL and restarted mid-stream, then the
//! exactly-once and order check.
#![cfg(not(any(madsim, loom)))]

use std::path::PathBuf;
use std::process::Command;

use simcast_adapters::cluster::{ClusterConfig, run};

#[test]
fn the_cluster_survives_a_coordinator_kill_and_every_callback_runs_once_in_order() {
    let cfg = ClusterConfig::default();
    let summary = run(&cfg, PathBuf::from(env!("CARGO_BIN_EXE_simcast-node"))).expect("the check");
    assert_eq!(summary.kills, 1);
    assert_eq!(
        summary.verdict.done,
        (cfg.clients * cfg.broadcasts) as usize
    );
    assert_eq!(summary.verdict.applied, summary.verdict.done);
    assert!(summary.verdict.ordered_pairs > 0, "keys conflicted");
    assert!(
        summary.recovery.iter().any(|l| l.starts_with("recovered")),
        "{:?}",
        summary.recovery
    );
}

/// `cargo test` builds the examples next to the test binaries: run the
/// example itself, as a person would, and read its verdict.
#[test]
fn the_cluster_example_binary_prints_its_passing_check() {
    let exe = std::env::current_exe().unwrap();
    let Some(example) = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("cluster"))
        .filter(|p| p.exists())
    else {
        eprintln!("the example is not built (run `cargo test` without a target filter); skipped");
        return;
    };
    let out = Command::new(&example).output().expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("killed the coordinator"), "{stdout}");
    assert!(stdout.contains("check passed"), "{stdout}");
}
