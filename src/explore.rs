//! `simcast explore`: bounded exhaustive exploration of a small
//! configuration.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use simcast_sim::choice::Source;
use simcast_sim::engine::{Protocol, RunOptions, World};
use simcast_sim::explore::{Bounds, Exploration, explore};
use simcast_sim::protocols::{Builder, FactoryVisitor, with_factory};
use simcast_sim::runner::{RunSpec, run as run_spec};
use simcast_sim::scenario::Scenario;
use simcast_sim::seedfile::SeedFile;

use crate::common::{
    Failure, ScenarioDir, Stopwatch, Verdict, mutant_for, print_json, show_violation,
    stdout_is_terminal, usage, violation_json,
};
use crate::outln;

/// Arguments of `simcast explore`.
#[derive(Args, Debug)]
pub struct ExploreArgs {
    /// Scenario name or path (a small configuration: fixed delays, swarm off).
    #[arg(long, value_name = "NAME")]
    scenario: String,
    /// Steps from the start along any path [default: the scenario's
    /// `[explore] max_depth`, else 400].
    #[arg(long, value_name = "D")]
    max_depth: Option<u64>,
    /// Faults injected along any path [default: the scenario's
    /// `[explore] max_faults`, else 1].
    #[arg(long, value_name = "F")]
    max_faults: Option<u64>,
    /// Give up after this many distinct states.
    #[arg(long, value_name = "N", default_value_t = 20_000_000)]
    max_states: u64,
    /// Explore with this mutant.
    #[arg(long, value_name = "M")]
    mutant: Option<String>,
    /// Also explore without state deduplication and report both.
    #[arg(long)]
    no_dedup: bool,
    /// Where a counterexample's seed file goes.
    #[arg(long, value_name = "DIR", default_value = "target/simcast/failures")]
    out: PathBuf,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

struct Explore {
    bounds: Bounds,
    show_progress: bool,
}

impl FactoryVisitor for Explore {
    type Output = Exploration;
    fn visit<P: Protocol>(self, make: &dyn Fn(Source) -> World<P>) -> Exploration {
        let clock = Stopwatch::start();
        let mut shown = false;
        let mut progress = |e: &Exploration| {
            if self.show_progress && clock.secs() > 1.0 {
                shown = true;
                eprint!(
                    "\rexplore: {} states, {} transitions, depth {}, {:.0} states/s   ",
                    e.states,
                    e.transitions,
                    e.max_depth,
                    e.states as f64 / clock.secs()
                );
                let _ = std::io::stderr().flush();
            }
            true
        };
        let ex = explore(make, self.bounds, &mut progress);
        if shown {
            eprintln!();
        }
        ex
    }
}

fn run_exploration(
    scenario: &Scenario,
    mutant: Option<&'static simcast_sim::registry::MutantInfo>,
    bounds: Bounds,
    show_progress: bool,
) -> Exploration {
    let build = |source| Builder {
        limits: scenario.run.limits(),
        faults: scenario.faults.clone(),
        source,
        opts: RunOptions::default(),
    };
    with_factory(
        &scenario.workload,
        mutant,
        &build,
        Explore {
            bounds,
            show_progress,
        },
    )
}

/// Explores a scenario with its default depth and fault bounds, at most
/// `max_states` states, and no progress output (for `bench`).
pub fn explore_quietly(
    scenario: &Scenario,
    mutant: Option<&'static simcast_sim::registry::MutantInfo>,
    max_states: u64,
) -> Exploration {
    let defaults = scenario.explore.unwrap_or_default();
    let bounds = Bounds {
        max_depth: defaults.max_depth,
        max_faults: defaults.max_faults,
        max_states,
        dedup: true,
    };
    run_exploration(scenario, mutant, bounds, false)
}

/// Runs `simcast explore`: exit 1 if a violation is reachable within the
/// bounds (its seed file is written), else 0.
pub fn run(a: ExploreArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    let scenario = a.dir.scenario(&a.scenario)?;
    let mutant = mutant_for(&scenario, a.mutant.as_deref())?;
    if a.max_states == 0 {
        return Err(usage("--max-states must be at least 1"));
    }
    let defaults = scenario.explore.unwrap_or_default();
    let bounds = Bounds {
        max_depth: a.max_depth.unwrap_or(defaults.max_depth),
        max_faults: a.max_faults.unwrap_or(defaults.max_faults),
        max_states: a.max_states,
        dedup: true,
    };
    let show = stdout_is_terminal() && !a.json;
    let ex = run_exploration(&scenario, mutant, bounds, show);
    let secs = clock.secs().max(1e-6);
    let no_dedup = a.no_dedup.then(|| {
        run_exploration(
            &scenario,
            mutant,
            Bounds {
                dedup: false,
                ..bounds
            },
            show,
        )
    });
    let mut failure_files = Vec::new();
    let mut verdict = Verdict::Held;
    let mut replayed = None;
    if let Some((v, path)) = &ex.violation {
        verdict = Verdict::Violated;
        let spec = RunSpec {
            scenario: &scenario,
            mutant,
            seed: 0,
            choices: Some(path.clone()),
        };
        let outcome = run_spec(
            &spec,
            RunOptions {
                keep_trace: false,
                record_steps: true,
                skip_decisions: false,
                skip_digest: false,
            },
        );
        if outcome.violation.as_ref().map(|x| &x.invariant) != Some(&v.invariant) {
            return Err(usage(format!(
                "the counterexample for {} did not replay to the same violation: the world is not deterministic",
                v.invariant
            )));
        }
        let file = a.out.join(format!(
            "{}.{}.explore.json",
            scenario.name,
            mutant.map_or("clean", |m| m.name)
        ));
        SeedFile::from_run(&spec, &outcome, Some("simcast explore".to_owned()))
            .write(&file)
            .map_err(|e| usage(format!("{}: cannot write: {e}", file.display())))?;
        failure_files.push(file.display().to_string());
        replayed = Some(outcome);
    }
    if a.json {
        let mut out = json!({
            "command": "explore",
            "wall_ms": clock.ms(),
            "scenario": scenario.name,
            "protocol": scenario.protocol().name,
            "mutant": mutant.map(|m| m.name),
            "max_depth_bound": bounds.max_depth,
            "max_faults": bounds.max_faults,
            "states": ex.states,
            "transitions": ex.transitions,
            "runs": ex.runs,
            "max_depth": ex.max_depth,
            "terminals": ex.terminals,
            "depth_cut": ex.depth_cut,
            "complete": ex.complete(),
            "states_per_sec": ex.states as f64 / secs,
            "violation": violation_json(ex.violation.as_ref().map(|(v, _)| v)),
            "failure_files": failure_files,
        });
        if let Some(nd) = &no_dedup {
            out["no_dedup"] = json!({
                "states": nd.states,
                "transitions": nd.transitions,
                "runs": nd.runs,
                "complete": nd.complete(),
            });
            out["dedup_saves_runs"] = json!(nd.runs.saturating_sub(ex.runs));
        }
        print_json(&out);
    } else {
        outln!(
            "explore {} ({}){}: {} states, {} transitions, {} step runs, max depth {}, {} terminal paths",
            scenario.name,
            scenario.protocol().name,
            mutant
                .map(|m| format!(" mutant {}", m.name))
                .unwrap_or_default(),
            ex.states,
            ex.transitions,
            ex.runs,
            ex.max_depth,
            ex.terminals
        );
        outln!(
            "bounds: depth {}, faults {}; {} ({:.0} states/s)",
            bounds.max_depth,
            bounds.max_faults,
            if ex.complete() {
                "complete within the bounds".to_owned()
            } else if ex.violation.is_some() {
                "stopped at the first violation".to_owned()
            } else if ex.state_limit_hit {
                "INCOMPLETE: the state limit was hit".to_owned()
            } else {
                format!("INCOMPLETE: {} paths cut by the depth bound", ex.depth_cut)
            },
            ex.states as f64 / secs
        );
        if let Some(nd) = &no_dedup {
            outln!(
                "without dedup: {} states, {} step runs ({} more runs than with dedup)",
                nd.states,
                nd.runs,
                nd.runs.saturating_sub(ex.runs)
            );
        }
        match (&ex.violation, &replayed) {
            (Some((v, path)), Some(_)) => {
                outln!(
                    "VIOLATION: {} ({} decisions)",
                    show_violation(v),
                    path.len()
                );
                for f in &failure_files {
                    outln!("  seed file: {f}");
                    outln!("  replay:    cargo xtask replay {f} --trace");
                }
            }
            _ => outln!("ok: no invariant can be violated within the bounds"),
        }
    }
    Ok(verdict)
}
