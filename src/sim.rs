//! `simcast sim`: one seed of one scenario.

use std::path::PathBuf;

use clap::Args;

use crate::outln;
use serde_json::json;
use simcast_sim::engine::RunOptions;
use simcast_sim::hash::hex64;
use simcast_sim::runner::{RunSpec, check_determinism, run as run_spec};
use simcast_sim::seedfile::SeedFile;

use crate::common::{
    Failure, ScenarioDir, Stopwatch, Verdict, faults_json, mutant_for, print_json, show_violation,
    sim_command, usage, violation_json,
};

/// Arguments of `simcast sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Scenario name (a file stem in the scenario directory) or path.
    #[arg(long, value_name = "NAME")]
    scenario: String,
    /// The seed.
    #[arg(long, value_name = "N")]
    seed: u64,
    /// Run with this mutant (a deliberately broken variant).
    #[arg(long, value_name = "M")]
    mutant: Option<String>,
    /// Print the trace.
    #[arg(long)]
    trace: bool,
    /// Run the seed twice in this process and report the first step at
    /// which the two runs differ, if any (exit 1 if they do).
    #[arg(long)]
    check_determinism: bool,
    /// Also write the run as a seed file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Write a picture of the run (a self-contained HTML sequence diagram).
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// Runs `simcast sim`.
pub fn run(a: SimArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    let scenario = a.dir.scenario(&a.scenario)?;
    let mutant = mutant_for(&scenario, a.mutant.as_deref())?;
    let spec = RunSpec {
        scenario: &scenario,
        mutant,
        seed: a.seed,
        choices: None,
    };
    let (outcome, divergence) = if a.check_determinism {
        let check = check_determinism(&spec);
        (check.first, Some(check.divergence))
    } else {
        let opts = RunOptions {
            keep_trace: a.trace || a.html.is_some(),
            record_steps: a.save.is_some(),
            skip_decisions: false,
            skip_digest: false,
        };
        (run_spec(&spec, opts), None)
    };
    if a.trace {
        for line in &outcome.trace {
            outln!("{line}");
        }
    }
    if let Some(path) = &a.save {
        let file = SeedFile::from_run(&spec, &outcome, Some("simcast sim --save".to_owned()));
        file.write(path)
            .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))?;
    }
    if let Some(path) = &a.html {
        let title = format!(
            "{} seed {}{}",
            scenario.name,
            a.seed,
            mutant
                .map(|m| format!(" mutant {}", m.name))
                .unwrap_or_default()
        );
        write_html(path, title, &outcome)?;
    }
    let nondeterministic = matches!(divergence, Some(Some(_)));
    if a.json {
        let mut out = json!({
            "command": "sim",
            "wall_ms": clock.ms(),
            "scenario": scenario.name,
            "protocol": scenario.protocol().name,
            "seed": a.seed,
            "mutant": mutant.map(|m| m.name),
            "events": outcome.events,
            "virtual_ms": outcome.end_time.as_micros() / 1000,
            "stop": outcome.stop.name(),
            "digest": hex64(outcome.trace_digest()),
            "violation": violation_json(outcome.violation.as_ref()),
            "faults": faults_json(&outcome),
            "choices": outcome.decisions.len(),
        });
        if let Some(d) = &divergence {
            out["deterministic"] = json!(d.is_none());
            out["divergence"] = match d {
                None => json!(null),
                Some(d) => json!({
                    "step": d.step,
                    "first": d.first.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "second": d.second.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }),
            };
        }
        print_json(&out);
    } else {
        outln!(
            "scenario {} ({}), seed {}, mutant {}",
            scenario.name,
            scenario.protocol().name,
            a.seed,
            mutant.map_or("none", |m| m.name)
        );
        outln!(
            "{} events, {} virtual, stopped: {}, {} choices",
            outcome.events,
            outcome.end_time,
            outcome.stop.name(),
            outcome.decisions.len()
        );
        let faults: Vec<String> = outcome
            .faults
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!("faults: {}", faults.join(" "));
        outln!("digest {}", hex64(outcome.trace_digest()));
        if let Some(d) = &divergence {
            match d {
                None => outln!("deterministic: two runs gave the same trace"),
                Some(d) => {
                    outln!("NONDETERMINISTIC: the runs differ first at step {}", d.step);
                    for l in &d.first {
                        outln!("  first:  {l}");
                    }
                    for l in &d.second {
                        outln!("  second: {l}");
                    }
                }
            }
        }
        match &outcome.violation {
            None => outln!("ok: every invariant held"),
            Some(v) => {
                outln!("VIOLATION: {}", show_violation(v));
                outln!("reproduce: {}", sim_command(&scenario.name, a.seed, mutant));
            }
        }
    }
    Ok(if outcome.violation.is_some() || nondeterministic {
        Verdict::Violated
    } else {
        Verdict::Held
    })
}

/// Writes the picture of a run.
pub fn write_html(
    path: &std::path::Path,
    title: String,
    outcome: &simcast_sim::engine::Outcome,
) -> Result<(), Failure> {
    let page = crate::html::render(
        &crate::html::Header {
            title,
            facts: vec![
                ("events", outcome.events.to_string()),
                ("virtual time", outcome.end_time.to_string()),
                ("stopped", outcome.stop.name().to_owned()),
                ("digest", hex64(outcome.trace_digest())),
            ],
            violation: outcome.violation.as_ref(),
        },
        &outcome.trace,
    );
    std::fs::write(path, page)
        .map_err(|e| usage(format!("{}: cannot write: {e}", path.display())))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
