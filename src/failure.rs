//! Turning a failing run into a small seed file: shared by `sweep`,
//! `nightly` and `shrink`.

use std::path::Path;

use simcast_sim::engine::{Outcome, RunOptions, Violation};
use simcast_sim::runner::{RunSpec, run};
use simcast_sim::seedfile::SeedFile;
use simcast_sim::shrink::shrink;

use crate::common::{Failure, Stopwatch, usage};

/// What was written for one failure.
#[derive(Clone, Debug)]
pub struct Written {
    /// The violation the written file reproduces.
    pub violation: Violation,
    /// Decisions of the original run.
    pub choices_before: usize,
    /// Decisions of the written run.
    pub choices_after: usize,
    /// Events of the original run.
    pub events_before: u64,
    /// Events of the written run.
    pub events_after: u64,
    /// Shrinking runs tried.
    pub runs: u64,
    /// Whether shrinking finished before its budget.
    pub converged: bool,
}

/// Shrinks the failing run of `spec` (whose `outcome` is given) for at most
/// `budget_secs` (0: do not shrink), then writes the result, with per-step
/// digests, to `path`.
pub fn shrink_and_write(
    spec: &RunSpec<'_>,
    outcome: &Outcome,
    budget_secs: f64,
    path: &Path,
    origin: &str,
) -> Result<Written, Failure> {
    let violation = outcome
        .violation
        .clone()
        .ok_or_else(|| usage("internal: shrink_and_write of a clean run"))?;
    let choices: Vec<u32> = outcome.decisions.iter().map(|d| d.value).collect();
    let clock = Stopwatch::start();
    let mut keep_going = || clock.secs() < budget_secs;
    let shrunk = if budget_secs > 0.0 {
        shrink(spec, choices.clone(), &violation.invariant, &mut keep_going)
    } else {
        None
    };
    let (choices_after, runs, converged) = match &shrunk {
        Some(s) => (s.choices.clone(), s.runs, s.converged),
        None => (choices.clone(), 0, false),
    };
    let mut final_spec = spec.clone();
    final_spec.choices = Some(choices_after.clone());
    let final_outcome = run(
        &final_spec,
        RunOptions {
            keep_trace: false,
            record_steps: true,
            skip_decisions: false,
            skip_digest: false,
        },
    );
    let final_violation = final_outcome.violation.clone().ok_or_else(|| {
        usage(format!(
            "{}: the shrunk run no longer fails: the simulation is not deterministic",
            spec.scenario.name
        ))
    })?;
    let note = format!(
        "{origin}; shrunk from {} choices and {} events to {} choices and {} events",
        choices.len(),
        outcome.events,
        choices_after.len(),
        final_outcome.events
    );
    let file = SeedFile::from_run(&final_spec, &final_outcome, Some(note));
    file.write(path)
        .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))?;
    Ok(Written {
        violation: final_violation,
        choices_before: choices.len(),
        choices_after: choices_after.len(),
        events_before: outcome.events,
        events_after: final_outcome.events,
        runs,
        converged,
    })
}
