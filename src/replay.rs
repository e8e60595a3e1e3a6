//! `simcast replay`: re-run a seed file and check it reproduces.

use std::path::PathBuf;

use clap::Args;

use crate::outln;
use serde_json::json;
use simcast_sim::engine::RunOptions;
use simcast_sim::hash::hex64;
use simcast_sim::runner::run as run_spec;
use simcast_sim::seedfile::{SIMCAST_VERSION, SeedFile, ViolationRecord};

use crate::common::{
    Failure, Stopwatch, Verdict, faults_json, print_json, show_violation, usage, violation_json,
};

/// Arguments of `simcast replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The seed file.
    file: PathBuf,
    /// Print the trace.
    #[arg(long)]
    trace: bool,
    /// Write a picture of the run (a self-contained HTML sequence diagram).
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `simcast replay`.
pub fn run(a: ReplayArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    let seed = SeedFile::load(&a.file).map_err(|e| usage(e.to_string()))?;
    if seed.file.simcast_version != SIMCAST_VERSION {
        eprintln!(
            "note: {} was written by simcast {}, this is {}; a changed digest means behaviour changed",
            a.file.display(),
            seed.file.simcast_version,
            SIMCAST_VERSION
        );
    }
    let spec = seed.spec();
    let outcome = run_spec(
        &spec,
        RunOptions {
            keep_trace: a.trace || a.html.is_some(),
            record_steps: true,
            skip_decisions: false,
            skip_digest: false,
        },
    );
    if let Some(path) = &a.html {
        let title = format!(
            "replay of {} ({} seed {}{})",
            a.file.display(),
            seed.scenario.name,
            seed.file.seed,
            seed.mutant
                .map(|m| format!(" mutant {}", m.name))
                .unwrap_or_default()
        );
        crate::sim::write_html(path, title, &outcome)?;
    }
    let got = outcome.violation.as_ref().map(ViolationRecord::from);
    let divergence = seed.divergence(&outcome);
    // Equal digests imply equal verdicts; compare anyway, a file can lie.
    let diverged = divergence.is_some() || got != seed.file.violation;
    if a.trace {
        for line in &outcome.trace {
            outln!("{line}");
        }
    }
    if a.json {
        print_json(&json!({
            "command": "replay",
            "wall_ms": clock.ms(),
            "file": a.file.display().to_string(),
            "scenario": seed.scenario.name,
            "protocol": seed.scenario.protocol().name,
            "seed": seed.file.seed,
            "mutant": seed.mutant.map(|m| m.name),
            "events": outcome.events,
            "digest": hex64(outcome.trace_digest()),
            "expected_digest": seed.file.digest,
            "violation": violation_json(outcome.violation.as_ref()),
            "expected_violation": seed.file.violation,
            "faults": faults_json(&outcome),
            "diverged": diverged,
            "divergence_step": divergence.flatten(),
        }));
    } else {
        outln!(
            "replay {}: scenario {} ({}), seed {}, mutant {}, {} recorded choices",
            a.file.display(),
            seed.scenario.name,
            seed.scenario.protocol().name,
            seed.file.seed,
            seed.mutant.map_or("none", |m| m.name),
            seed.file.choices.as_ref().map_or(0, Vec::len),
        );
        outln!(
            "{} events, digest {}",
            outcome.events,
            hex64(outcome.trace_digest())
        );
        match divergence {
            None if !diverged => outln!("reproduced: same digest, same verdict"),
            None => outln!("DIVERGED: same digest but a different verdict than recorded"),
            Some(Some(step)) => outln!(
                "DIVERGED: the replay departs from the recording at step {step} (recorded digest {})",
                seed.file.digest
            ),
            Some(None) => outln!(
                "DIVERGED: digest {} differs from the recorded {} (the file keeps no per-step digests)",
                hex64(outcome.trace_digest()),
                seed.file.digest
            ),
        }
        match &outcome.violation {
            None => outln!("ok: every invariant held"),
            Some(v) => outln!("VIOLATION: {}", show_violation(v)),
        }
    }
    Ok(if diverged || outcome.violation.is_some() {
        Verdict::Violated
    } else {
        Verdict::Held
    })
}
