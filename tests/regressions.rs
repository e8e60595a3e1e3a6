//! Every seed file in `tests/regressions/` is replayed and must reach its
//! recorded verdict: the same violated invariant (under its mutant), or a
//! clean run for a bug that was fixed. Adding a file is all it takes to pin
//! a failure forever.
//!
//! The digest is not required to match: a benign change to a world moves
//! every digest, and the corpus should survive it. `cargo xtask replay FILE`
//! reports digest divergence when that matters.

mod support;

use std::path::PathBuf;

use simcast_sim::engine::RunOptions;
use simcast_sim::runner::run;
use simcast_sim::seedfile::SeedFile;

fn corpus() -> Vec<PathBuf> {
    let dir = support::root().join("tests/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_regression_seed_reaches_its_recorded_verdict() {
    let files = corpus();
    assert!(!files.is_empty(), "the corpus is empty");
    let mut failures = Vec::new();
    for path in &files {
        let seed = SeedFile::load(path).unwrap_or_else(|e| panic!("{e}"));
        let outcome = run(&seed.spec(), RunOptions::default());
        let expected = seed.file.violation.as_ref().map(|v| v.invariant.as_str());
        let got = outcome.violation.as_ref().map(|v| v.invariant.as_str());
        if expected != got {
            failures.push(format!(
                "{}: expected {}, got {}",
                path.display(),
                expected.unwrap_or("a clean run"),
                outcome
                    .violation
                    .as_ref()
                    .map_or("a clean run".to_owned(), |v| format!(
                        "{} ({})",
                        v.invariant, v.message
                    ))
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_corpus_covers_every_protocol() {
    let protocols: std::collections::BTreeSet<String> = corpus()
        .iter()
        .map(|p| {
            SeedFile::load(p)
                .unwrap()
                .scenario
                .protocol()
                .name
                .to_owned()
        })
        .collect();
    for p in simcast_sim::registry::protocols() {
        assert!(
            protocols.contains(p.name),
            "no regression seed for protocol {}",
            p.name
        );
    }
}
