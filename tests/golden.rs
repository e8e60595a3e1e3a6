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
        },
    );
    let mut text = format!(
        "scenario {} seed {seed}: {} events, stop {}, digest {}\n",
        scenario.name,
        o.events,
        o.stop.name(),
        hex64(o.digest)
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
