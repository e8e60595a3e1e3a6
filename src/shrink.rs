//! `simcast shrink`: minimize a seed file's decisions.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use simcast_sim::engine::RunOptions;
use simcast_sim::runner::run as run_spec;
use simcast_sim::seedfile::SeedFile;

use crate::common::{
    Failure, Stopwatch, Verdict, print_json, show_violation, usage, violation_json,
};
use crate::failure::shrink_and_write;
use crate::outln;

/// Arguments of `simcast shrink`.
#[derive(Args, Debug)]
pub struct ShrinkArgs {
    /// The seed file of a failing run.
    file: PathBuf,
    /// Where to write the shrunk seed file [default: FILE with `.shrunk.json`].
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,
    /// Stop shrinking after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    time_budget: f64,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `simcast shrink`: exit 0 once a shrunk file reproducing the same
/// invariant is written, 1 if the file no longer reproduces its violation.
pub fn run(a: ShrinkArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    if a.time_budget.is_nan() || a.time_budget <= 0.0 {
        return Err(usage("--time-budget must be a positive number of seconds"));
    }
    let seed = SeedFile::load(&a.file).map_err(|e| usage(e.to_string()))?;
    let Some(expected) = seed.file.violation.clone() else {
        return Err(usage(format!(
            "{}: the file records a clean run: there is nothing to shrink",
            a.file.display()
        )));
    };
    let spec = seed.spec();
    let outcome = run_spec(&spec, RunOptions::default());
    let reproduced = outcome
        .violation
        .as_ref()
        .is_some_and(|v| v.invariant == expected.invariant);
    if !reproduced {
        outln!(
            "{} no longer fails with {}: got {}",
            a.file.display(),
            expected.invariant,
            outcome
                .violation
                .as_ref()
                .map_or("a clean run".to_owned(), show_violation)
        );
        if a.json {
            print_json(&json!({
                "command": "shrink", "wall_ms": clock.ms(), "reproduced": false,
                "violation": violation_json(outcome.violation.as_ref()), "output": null,
            }));
        }
        return Ok(Verdict::Violated);
    }
    let output = a.output.clone().unwrap_or_else(|| {
        let stem = a
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        a.file.with_file_name(format!("{stem}.shrunk.json"))
    });
    let origin = format!("simcast shrink {}", a.file.display());
    let w = shrink_and_write(&spec, &outcome, a.time_budget, &output, &origin)?;
    if a.json {
        print_json(&json!({
            "command": "shrink",
            "wall_ms": clock.ms(),
            "reproduced": true,
            "choices_before": w.choices_before,
            "choices_after": w.choices_after,
            "events_before": w.events_before,
            "events_after": w.events_after,
            "runs": w.runs,
            "converged": w.converged,
            "violation": violation_json(Some(&w.violation)),
            "output": output.display().to_string(),
        }));
    } else {
        outln!(
            "shrunk {}: {} -> {} choices, {} -> {} events ({} runs{})",
            a.file.display(),
            w.choices_before,
            w.choices_after,
            w.events_before,
            w.events_after,
            w.runs,
            if w.converged {
                ""
            } else {
                ", stopped by the time budget"
            }
        );
        outln!("still violates: {}", show_violation(&w.violation));
        outln!("wrote {}", output.display());
        outln!("replay: cargo xtask replay {} --trace", output.display());
    }
    Ok(Verdict::Held)
}
