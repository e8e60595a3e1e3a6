//! `simcast bench`: throughput figures on one core.
//!
//! Each scenario runs the same seeds several times on one thread; a figure
//! is the median over the repetitions and its spread is (max - min) /
//! median. One core keeps the figures comparable between machines with
//! different core counts and between runs on a busy machine.

use clap::Args;
use serde_json::json;
use simcast_sim::engine::RunOptions;
use simcast_sim::runner::{RunSpec, run as run_spec};

use crate::common::{Failure, ScenarioDir, Stopwatch, Verdict, print_json, usage};
use crate::outln;

/// Arguments of `simcast bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Scenario to measure (repeatable) [default: every default scenario].
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Seeds per repetition.
    #[arg(long, value_name = "N", default_value_t = 200)]
    seeds: u64,
    /// Repetitions.
    #[arg(long, value_name = "R", default_value_t = 5)]
    repeat: u32,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// A measured figure.
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Median value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
    /// (max - min) / median over the repetitions.
    pub spread: f64,
}

fn figure(name: String, unit: &'static str, mut samples: Vec<f64>) -> Figure {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let spread = if median > 0.0 {
        (samples[samples.len() - 1] - samples[0]) / median
    } else {
        0.0
    };
    Figure {
        name,
        value: median,
        unit,
        spread,
    }
}

/// Runs `simcast bench`.
pub fn run(a: BenchArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    if a.seeds == 0 || a.repeat == 0 {
        return Err(usage("--seeds and --repeat must be at least 1"));
    }
    let scenarios = if a.scenarios.is_empty() {
        let c = a.dir.catalog()?;
        c.defaults(None).into_iter().cloned().collect::<Vec<_>>()
    } else {
        a.scenarios
            .iter()
            .map(|n| a.dir.scenario(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut figures = Vec::new();
    let mut all_events = vec![0.0; a.repeat as usize];
    let mut all_seeds = vec![0.0; a.repeat as usize];
    let mut all_secs = vec![0.0; a.repeat as usize];
    for s in &scenarios {
        let mut events_per_sec = Vec::new();
        let mut seeds_per_sec = Vec::new();
        for r in 0..a.repeat as usize {
            let t = Stopwatch::start();
            let mut events = 0;
            for seed in 0..a.seeds {
                let spec = RunSpec {
                    scenario: s,
                    mutant: None,
                    seed,
                    choices: None,
                };
                events += run_spec(&spec, RunOptions::default()).events;
            }
            let secs = t.secs().max(1e-9);
            events_per_sec.push(events as f64 / secs);
            seeds_per_sec.push(a.seeds as f64 / secs);
            all_events[r] += events as f64;
            all_seeds[r] += a.seeds as f64;
            all_secs[r] += secs;
        }
        figures.push(figure(
            format!("{} events/s", s.name),
            "events/s",
            events_per_sec,
        ));
        figures.push(figure(
            format!("{} seeds/s", s.name),
            "seeds/s",
            seeds_per_sec,
        ));
    }
    let per = |v: &[f64]| {
        v.iter()
            .zip(&all_secs)
            .map(|(x, s)| x / s)
            .collect::<Vec<_>>()
    };
    figures.push(figure(
        "simulated events/s".to_owned(),
        "events/s",
        per(&all_events),
    ));
    figures.push(figure("seeds/s".to_owned(), "seeds/s", per(&all_seeds)));
    // Exploration: every small configuration (`*-explore` scenarios).
    let catalog = a.dir.catalog()?;
    let mut all_states = vec![0.0; a.repeat as usize];
    let mut all_explore_secs = vec![0.0; a.repeat as usize];
    for s in catalog
        .scenarios
        .iter()
        .filter(|s| s.name.ends_with("-explore"))
    {
        let mut states_per_sec = Vec::new();
        for r in 0..a.repeat as usize {
            let t = Stopwatch::start();
            let ex = crate::explore::explore_quietly(s, None);
            let secs = t.secs().max(1e-9);
            states_per_sec.push(ex.states as f64 / secs);
            all_states[r] += ex.states as f64;
            all_explore_secs[r] += secs;
        }
        figures.push(figure(
            format!("{} states/s", s.name),
            "states/s",
            states_per_sec,
        ));
    }
    if all_explore_secs.iter().any(|s| *s > 0.0) {
        let v = all_states
            .iter()
            .zip(&all_explore_secs)
            .map(|(x, s)| x / s)
            .collect();
        figures.push(figure("explored states/s".to_owned(), "states/s", v));
    }
    if a.json {
        print_json(&json!({
            "command": "bench",
            "wall_ms": clock.ms(),
            "seeds": a.seeds,
            "repeat": a.repeat,
            "threads": 1,
            "figures": figures.iter().map(|f| json!({
                "name": f.name, "value": f.value, "unit": f.unit, "spread": f.spread,
            })).collect::<Vec<_>>(),
        }));
    } else {
        outln!(
            "one thread, {} seeds x {} repetitions per scenario; median (spread)",
            a.seeds,
            a.repeat
        );
        for f in &figures {
            outln!(
                "  {:<40} {:>14.0} {:<9} ({:.1}%)",
                f.name,
                f.value,
                f.unit,
                f.spread * 100.0
            );
        }
    }
    Ok(Verdict::Held)
}
