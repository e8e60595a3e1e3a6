//! Canonical traces of fixed seeds, pinned with insta. A change to a
//! machine, a world or the engine that alters behaviour shows up here as a
//! reviewable diff (`cargo insta review`).
//!
//! The digests in these snapshots are the same in debug and release builds:
//! `cargo test --release --test golden` checks the same snapshots.

mod support;

use simcast_sim::engine::RunOptions;
use simcast_sim::hash::hex64;
use simcast_sim::runner::{RunSpec, run};
use simcast_sim::scenario::Scenario;

fn trace_of(fixture: &str, seed: u64) -> String {
    let scenario = Scenario::from_file(&support::fixture(fixture)).expect("fixture parses");
    let spec = RunSpec {
        scenario: &scenario,
        mutant: None,
        seed,
        choices: None,
    };
    let o = run(
        &spec,
        RunOptions {
            keep_trace: true,
            record_steps: false,
            skip_decisions: false,
            skip_digest: false,
        },
    );
    let mut text = format!(
        "scenario {} seed {seed}: {} events, stop {}, digest {}\n",
        scenario.name,
        o.events,
        o.stop.name(),
        hex64(o.trace_digest())
    );
    for line in &o.trace {
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

#[test]
fn locks_tiny_seed_7_trace() {
    insta::assert_snapshot!(trace_of("locks-tiny.toml", 7));
}

/// A crash between the callback's effect and the tombstone write: after
/// recovery the callback runs again and the store, deduplicating by
/// broadcast id, applies nothing twice.
#[test]
fn broadcast_crash_between_callback_effect_and_tombstone() {
    let trace = trace_of("broadcast-crash.toml", 4);
    let lines: Vec<&str> = trace.lines().collect();
    let find = |from: usize, needle: &str| {
        (from..lines.len())
            .find(|&i| lines[i].contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` after line {from}:\n{trace}"))
    };
    let applied = find(0, "store A applies b1");
    let crash = find(applied, "crash     coord-a");
    let tombstone = find(0, "put b1 Tombstone");
    assert!(crash < tombstone, "the crash precedes the tombstone write");
    let recovered = find(crash, "A recovered");
    let rerun = find(recovered, "A invokes callback b1");
    find(rerun, "store A already applied b1: skipped");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("store A applies b1"))
            .count(),
        1,
        "the effect is applied once"
    );
    insta::assert_snapshot!(trace);
}
