//! Running a scenario: one seed, a recorded choice sequence, or the same
//! seed twice to check determinism.

use simcast_machines::time::Time;

use crate::choice::Source;
use crate::engine::{Outcome, Protocol, RunOptions, TraceLine, World};
use crate::protocols::{BuildWorld, WorldVisitor, build_protocol};
use crate::registry::{MutantInfo, one_of};
use crate::scenario::Scenario;

/// What to run.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// The mutant, if any (must belong to the scenario's protocol).
    pub mutant: Option<&'static MutantInfo>,
    /// The seed of the random source.
    pub seed: u64,
    /// A recorded decision sequence; when given, it is replayed instead of
    /// drawing from the seed.
    pub choices: Option<Vec<u32>>,
}

impl RunSpec<'_> {
    fn source(&self) -> Source {
        match &self.choices {
            Some(values) => Source::recorded(values.clone()),
            None => Source::random(self.seed),
        }
    }
}

/// Resolves a mutant name for a scenario.
///
/// # Errors
/// An unknown name (listing the protocol's mutants) or a mutant of another
/// protocol.
pub fn resolve_mutant(
    scenario: &Scenario,
    name: Option<&str>,
) -> Result<Option<&'static MutantInfo>, String> {
    let Some(name) = name else { return Ok(None) };
    let protocol = scenario.protocol();
    if let Some(m) = protocol.mutant(name) {
        return Ok(Some(m));
    }
    match crate::registry::mutant(name) {
        Some((other, _)) => Err(format!(
            "mutant `{name}` belongs to protocol {}, but scenario {} runs {}",
            other.name, scenario.name, protocol.name
        )),
        None => Err(format!(
            "unknown mutant `{name}` (protocol {} has: {})",
            protocol.name,
            one_of(protocol.mutants.iter().map(|m| m.name))
        )),
    }
}

struct Build<'a> {
    spec: &'a RunSpec<'a>,
    opts: RunOptions,
}

impl BuildWorld for Build<'_> {
    fn build<P: Protocol>(self, proto: P) -> World<P> {
        World::new(
            proto,
            self.spec.scenario.run.limits(),
            &self.spec.scenario.faults,
            self.spec.source(),
            self.opts,
        )
    }
}

struct RunToEnd;

impl WorldVisitor for RunToEnd {
    type Output = Outcome;
    fn visit<P: Protocol>(self, world: World<P>) -> Outcome {
        world.run()
    }
}

/// Runs a scenario to the end.
pub fn run(spec: &RunSpec<'_>, opts: RunOptions) -> Outcome {
    build_protocol(
        &spec.scenario.workload,
        spec.mutant,
        Build { spec, opts },
        RunToEnd,
    )
}

/// Where two runs that should be identical first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The first step whose records differ.
    pub step: u64,
    /// That step's records in the first run.
    pub first: Vec<TraceLine>,
    /// That step's records in the second run.
    pub second: Vec<TraceLine>,
}

/// The first step at which two runs' per-step digests differ, with that
/// step's records from each (when the runs kept their traces). `None` if
/// the runs are identical.
pub fn divergence(a: &Outcome, b: &Outcome) -> Option<Divergence> {
    if a.digest == b.digest && a.events == b.events {
        return None;
    }
    let step = first_difference(&a.step_digests, &b.step_digests) as u64;
    let at = |o: &Outcome| {
        o.trace
            .iter()
            .filter(|l| l.step == step)
            .cloned()
            .collect::<Vec<_>>()
    };
    Some(Divergence {
        step,
        first: at(a),
        second: at(b),
    })
}

/// The index of the first differing element, or the shorter length.
pub fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

/// The result of running one seed twice in one process.
#[derive(Clone, Debug)]
pub struct DeterminismCheck {
    /// The first run.
    pub first: Outcome,
    /// Where the second run departed from the first, if it did.
    pub divergence: Option<Divergence>,
}

/// Runs `spec` twice, keeping traces and per-step digests, and compares.
pub fn check_determinism(spec: &RunSpec<'_>) -> DeterminismCheck {
    let opts = RunOptions {
        keep_trace: true,
        record_steps: true,
        skip_decisions: false,
        skip_digest: false,
    };
    let first = run(spec, opts);
    let second = run(spec, opts);
    let divergence = divergence(&first, &second);
    DeterminismCheck { first, divergence }
}

/// Runs two worlds built the same way and compares them: the same check for
/// any world, including ones built by tests.
pub fn check_worlds_determinism<P: Protocol>(
    mut make: impl FnMut() -> World<P>,
) -> Option<Divergence> {
    let a = make().run();
    let b = make().run();
    divergence(&a, &b)
}

/// Formats a violation time for people: virtual milliseconds.
pub fn show_time(t: Time) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Stop;
    use crate::scenario::Catalog;

    /// Runs a world to its stop; says whether it settled, and what the full
    /// liveness check finds then.
    struct Settle;

    impl WorldVisitor for Settle {
        type Output = (bool, Option<(&'static str, String)>);
        fn visit<P: Protocol>(self, mut world: World<P>) -> Self::Output {
            while world.step().is_none() {}
            (
                world.stopped() == Some(Stop::Settled),
                world.liveness_in_full(),
            )
        }
    }

    /// The scenarios shipped in `sim-scenarios/`.
    fn shipped() -> Catalog {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sim-scenarios");
        Catalog::load(&dir).expect("shipped scenarios parse")
    }

    /// A run that stops settled skips the liveness checks `settled` made:
    /// made in full, they find nothing either, with or without a mutant.
    /// (A `settled` that skipped them would stop runs whose liveness fails
    /// and hide the failure: seed 262 of broadcast-chaos is one.)
    #[test]
    fn a_settled_run_passes_the_full_liveness_check() {
        let catalog = shipped();
        for scenario in catalog.defaults(None) {
            let mut settled = 0;
            let mutants = scenario.protocol().mutants.iter().map(Some);
            for mutant in std::iter::once(None).chain(mutants) {
                // A settle-time liveness failure of a correct world is rare
                // (broadcast-chaos: one seed in a few hundred).
                let seeds = if mutant.is_none() { 400 } else { 12 };
                for seed in 0..seeds {
                    let spec = RunSpec {
                        scenario,
                        mutant,
                        seed,
                        choices: None,
                    };
                    let opts = RunOptions::default();
                    let (stopped_settled, full) = build_protocol(
                        &scenario.workload,
                        mutant,
                        Build { spec: &spec, opts },
                        Settle,
                    );
                    if stopped_settled {
                        settled += 1;
                        let name = mutant.map_or("none", |m| m.name);
                        assert_eq!(full, None, "{} mutant {name} seed {seed}", scenario.name);
                    }
                }
            }
            assert!(
                settled > 0 || !["broadcast", "replication"].contains(&scenario.protocol().name),
                "{}: no seed settled",
                scenario.name
            );
        }
    }

    /// A sweep's runs skip the digest and the decision log: the run is the
    /// same (events, end, verdict, faults, coverage, counts) as the one a
    /// seed file is written from, in every default scenario, with and
    /// without each mutant; only the digest is missing.
    #[test]
    fn a_run_without_its_digest_is_the_same_run() {
        let catalog = shipped();
        let sweep = RunOptions {
            skip_decisions: true,
            skip_digest: true,
            ..RunOptions::default()
        };
        let mut violations = 0;
        for scenario in catalog.defaults(None) {
            let mutants = scenario.protocol().mutants.iter().map(Some);
            for mutant in std::iter::once(None).chain(mutants) {
                for seed in 0..6 {
                    let spec = RunSpec {
                        scenario,
                        mutant,
                        seed,
                        choices: None,
                    };
                    let full = run(&spec, RunOptions::default());
                    let swept = run(&spec, sweep);
                    let what = format!("{} {mutant:?} seed {seed}", scenario.name);
                    assert!(full.digest.is_some(), "{what}");
                    assert_eq!(swept.digest, None, "{what}");
                    assert_eq!(
                        (swept.events, swept.end_time, swept.stop),
                        (full.events, full.end_time, full.stop),
                        "{what}"
                    );
                    assert_eq!(swept.violation, full.violation, "{what}");
                    assert_eq!(swept.faults, full.faults, "{what}");
                    assert_eq!(swept.coverage, full.coverage, "{what}");
                    assert_eq!(swept.counters, full.counters, "{what}");
                    violations += usize::from(full.violation.is_some());
                }
            }
        }
        assert!(violations > 0, "some mutant fails in six seeds");
    }

    /// Per-step digests need the digest: asking for them keeps it.
    #[test]
    fn recording_steps_keeps_the_digest() {
        let catalog = shipped();
        let scenario = catalog
            .get("locks-contended")
            .expect("locks-contended ships");
        let spec = RunSpec {
            scenario,
            mutant: None,
            seed: 7,
            choices: None,
        };
        let plain = run(&spec, RunOptions::default());
        let stepped = run(
            &spec,
            RunOptions {
                record_steps: true,
                skip_digest: true,
                ..RunOptions::default()
            },
        );
        assert_eq!(stepped.digest, plain.digest);
        assert_eq!(stepped.step_digests.len() as u64, plain.events + 1);
    }
}
