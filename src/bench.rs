//! `simcast bench`: throughput, scaling, allocations and memory, each
//! compared with a committed baseline.
//!
//! For every swept scenario (default: every default scenario) the same
//! seeds run once as a warm-up on one thread and once on all cores, then
//! `--repeat` times on one thread and as many times on all cores. A timed
//! run goes over the seeds as many times as it takes to last
//! [`MIN_RUN_SECS`] (once with `--quick`); on all cores each worker (one
//! per available core, taking the next run not yet taken) does that much,
//! so both runs last about as long and do equal work per thread. The
//! workers stay up from the warm-up to the last run, as a sweep's do.
//! Figures: events/s and seeds/s on one core and on all cores, the scaling
//! (all cores / one core), allocations per event (one core, after the
//! warm-up), and events/s as a multiple of the *empty world*'s (a protocol
//! with no machines: the engine's ceiling). Every `*-explore` (or
//! `*-explore-*`) scenario is explored for states/s. Peak RSS is read
//! after sweeps of N and 10 x N seeds of one scenario, the way `sweep`
//! runs them, to show that memory stays flat. `cargo xtask bench` adds the
//! madsim workload's figures (`--madsim-figures`).
//!
//! A figure is the median over the repetitions; its spread is (max - min) /
//! median. A ratio of two figures measured apart (vs empty, vs madsim)
//! carries the sum of their spreads. Each figure is compared by name with
//! the baseline ([`baseline`]) and flagged when more than 10% worse.

mod baseline;
mod memory;

use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use simcast_sim::engine::RunOptions;
use simcast_sim::protocols::empty;
use simcast_sim::runner::{RunSpec, run as run_spec};
use simcast_sim::scenario::Scenario;

use crate::common::{Failure, ScenarioDir, Stopwatch, Verdict, print_json, usage};
use crate::outln;
use crate::sweep::{Plan, execute};
use baseline::{Baseline, Saved};

/// Arguments of `simcast bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Scenario to measure (repeatable): a `*-explore` (or `*-explore-*`)
    /// scenario is explored, any other swept [default: every default
    /// scenario, and every such explore scenario].
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Seeds per repetition, run as many times over as it takes a
    /// repetition to last 0.25 s (once with --quick) [default: 200; 20 with
    /// --quick].
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// Repetitions, after one warm-up [default: 5; 3 with --quick].
    #[arg(long, value_name = "R")]
    repeat: Option<u32>,
    /// A smoke test of a few seconds: fewer seeds and repetitions, smaller
    /// memory sweeps, explorations cut at 5000 states.
    #[arg(long)]
    quick: bool,
    /// Peak RSS after a sweep of N seeds and after one of 10 x N (0: not
    /// measured) [default: 10000; 1000 with --quick].
    #[arg(long, value_name = "N")]
    rss_seeds: Option<u64>,
    /// The baseline to compare with (and to --save to) [default:
    /// bench/baseline.json in the workspace].
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Write this run's figures to the baseline file (replacing it).
    #[arg(long)]
    save: bool,
    /// Exit 1 if a figure is more than 10% worse than the baseline.
    #[arg(long)]
    fail_on_regression: bool,
    /// The madsim workload's figures: a JSON object with `figures`
    /// (`cargo xtask bench` measures and passes them).
    #[arg(long, value_name = "FILE")]
    madsim_figures: Option<PathBuf>,
    /// Why there are no madsim figures (`cargo xtask bench` says so when it
    /// could not measure them).
    #[arg(long, value_name = "REASON", conflicts_with = "madsim_figures")]
    madsim_missing: Option<String>,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// What a figure counts, and so which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Simulated events per wall-clock second.
    EventsPerSec,
    /// Seeds (whole runs) per second.
    SeedsPerSec,
    /// Explored states per second.
    StatesPerSec,
    /// Network messages (frames) per second.
    MsgsPerSec,
    /// A ratio of two figures.
    Ratio,
    /// Heap allocations per simulated event.
    AllocsPerEvent,
    /// Memory, in MiB.
    MiB,
}

impl Unit {
    const ALL: [Unit; 7] = [
        Unit::EventsPerSec,
        Unit::SeedsPerSec,
        Unit::StatesPerSec,
        Unit::MsgsPerSec,
        Unit::Ratio,
        Unit::AllocsPerEvent,
        Unit::MiB,
    ];

    /// As printed and saved.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::EventsPerSec => "events/s",
            Unit::SeedsPerSec => "seeds/s",
            Unit::StatesPerSec => "states/s",
            Unit::MsgsPerSec => "msgs/s",
            Unit::Ratio => "x",
            Unit::AllocsPerEvent => "allocs/event",
            Unit::MiB => "MiB",
        }
    }

    /// The unit spelled `s`.
    pub fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// Throughput and ratios (of throughputs) are better higher;
    /// allocations and memory lower.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Unit::AllocsPerEvent | Unit::MiB)
    }
}

/// A measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Median value.
    pub value: f64,
    /// Unit.
    pub unit: Unit,
    /// (max - min) / median over the repetitions.
    pub spread: f64,
}

impl Figure {
    /// The median of `samples` (at least one) and their spread.
    fn of(name: impl Into<String>, unit: Unit, mut samples: Vec<f64>) -> Figure {
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let spread = if median > 0.0 {
            (samples[samples.len() - 1] - samples[0]) / median
        } else {
            0.0
        };
        Figure {
            name: name.into(),
            value: median,
            unit,
            spread,
        }
    }

    /// `a / b`, with the sum of their spreads.
    fn ratio(name: impl Into<String>, a: &Figure, b: &Figure) -> Figure {
        let value = if b.value > 0.0 {
            a.value / b.value
        } else {
            0.0
        };
        Figure {
            name: name.into(),
            value,
            unit: Unit::Ratio,
            spread: a.spread + b.spread,
        }
    }
}

/// One repetition's work: events handled in so many seconds.
#[derive(Clone, Copy, Debug)]
struct Rep {
    seeds: u64,
    events: u64,
    secs: f64,
}

impl Rep {
    fn events_per_sec(self) -> f64 {
        self.events as f64 / self.secs
    }

    /// This repetition scaled to one pass over `seeds` seeds (it ran them
    /// `self.seeds / seeds` times over), so that totals weigh every
    /// scenario by its `seeds` seeds, however many passes it took.
    fn one_pass(self, seeds: u64) -> Rep {
        let passes = (self.seeds as f64 / seeds.max(1) as f64).max(1e-9);
        Rep {
            seeds,
            events: (self.events as f64 / passes).round() as u64,
            secs: self.secs / passes,
        }
    }
}

/// A swept scenario (or the empty world), measured.
struct Measured {
    /// On one thread, per repetition.
    one: Vec<Rep>,
    /// On all cores, per repetition (empty if not measured).
    all: Vec<Rep>,
    /// Allocations per event on one thread, per repetition.
    allocs: Vec<f64>,
}

/// Runs seeds `0..seeds` on this thread; the events handled.
fn run_seeds(run_one: &(dyn Fn(u64) -> u64 + Sync), seeds: u64) -> u64 {
    (0..seeds).map(run_one).sum()
}

/// Workers that stay up for a whole measurement (warm-up included), so
/// that each timed run on all cores pays for no thread start and runs on
/// warm caches and allocator arenas, as a long sweep's workers do.
struct Pool<'a> {
    shared: &'a PoolShared,
}

/// What the main thread and the workers of a [`Pool`] share.
struct PoolShared {
    /// The next run to take: run `i` is seed `i % seeds`.
    next: AtomicU64,
    /// Seeds of the current run: `0..seeds`, `rounds` times over.
    seeds: AtomicU64,
    rounds: AtomicU64,
    /// Events handled in the current run.
    events: AtomicU64,
    /// Set (before the last `start`) to send the workers home.
    stop: AtomicBool,
    /// Set by a worker whose run panicked (it still reaches `done`).
    panicked: AtomicBool,
    /// Every worker and the main thread: a run starts.
    start: Barrier,
    /// Every worker and the main thread: the run is over.
    done: Barrier,
}

impl PoolShared {
    fn new(threads: usize) -> PoolShared {
        PoolShared {
            next: AtomicU64::new(0),
            seeds: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            events: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            start: Barrier::new(threads + 1),
            done: Barrier::new(threads + 1),
        }
    }

    /// A worker: for each run of the pool, takes the next seed run not yet
    /// taken until none is left (workers run disjoint shares).
    fn work(&self, run_one: &(dyn Fn(u64) -> u64 + Sync)) {
        loop {
            self.start.wait();
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            let seeds = self.seeds.load(Ordering::Acquire);
            let runs = seeds * self.rounds.load(Ordering::Acquire);
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| {
                let mut events = 0;
                loop {
                    let i = self.next.fetch_add(1, Ordering::Relaxed);
                    if i >= runs {
                        return events;
                    }
                    events += run_one(i % seeds);
                }
            }));
            match ran {
                Ok(events) => {
                    self.events.fetch_add(events, Ordering::AcqRel);
                }
                Err(_) => self.panicked.store(true, Ordering::Release),
            }
            self.done.wait();
        }
    }
}

impl<'a> Pool<'a> {
    /// Starts `threads` workers in `scope`; they wait for [`Pool::run`].
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, 'a>,
        shared: &'a PoolShared,
        threads: usize,
        run_one: &'a (dyn Fn(u64) -> u64 + Sync),
    ) -> Pool<'a> {
        for _ in 0..threads {
            scope.spawn(move || shared.work(run_one));
        }
        Pool { shared }
    }

    /// Runs seeds `0..seeds`, `rounds` times over, on the workers: the
    /// runs, the events handled, and the seconds from the start signal to
    /// the last worker's end.
    fn run(&self, seeds: u64, rounds: u64) -> Rep {
        let s = self.shared;
        s.next.store(0, Ordering::Release);
        s.seeds.store(seeds.max(1), Ordering::Release);
        s.rounds
            .store(if seeds == 0 { 0 } else { rounds }, Ordering::Release);
        s.events.store(0, Ordering::Release);
        let t = Stopwatch::start();
        s.start.wait();
        s.done.wait();
        if s.panicked.load(Ordering::Acquire) {
            // Send the workers home first, or the scope would wait for them.
            s.stop.store(true, Ordering::Release);
            s.start.wait();
            panic!("bench worker panicked");
        }
        Rep {
            seeds: seeds * rounds,
            events: s.events.load(Ordering::Acquire),
            secs: t.secs().max(1e-9),
        }
    }

    /// Sends the workers home (the scope then joins them).
    fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.start.wait();
    }
}

/// Runs seeds `0..seeds` on `threads` workers of a fresh pool; the events
/// handled.
#[cfg(test)]
fn run_seeds_on(run_one: &(dyn Fn(u64) -> u64 + Sync), seeds: u64, threads: usize) -> u64 {
    let shared = PoolShared::new(threads);
    std::thread::scope(|scope| {
        let pool = Pool::start(scope, &shared, threads, run_one);
        let a = pool.run(seeds, 1).events;
        let b = pool.run(seeds, 1).events;
        pool.stop();
        assert_eq!(a, b, "two runs of the same seeds");
        a
    })
}

/// The shortest timed run of a full bench, in seconds: shorter runs
/// measure this machine's hiccups (a few milliseconds lost to a neighbour
/// is 10% of a 30 ms run) more than the simulator.
const MIN_RUN_SECS: f64 = 0.25;

/// A warm-up (on one thread, and on all cores if `threads` is given), then
/// `repeat` x (one thread, then all cores): interleaved, so that both see
/// the same machine load. The workers stay up from the warm-up on.
///
/// Each timed run on one thread runs seeds `0..seeds` as many times over
/// as it takes to last `min_run_secs` (from the warm-up's time); on all
/// cores, that many times per worker: equal work per worker, so both runs
/// last about as long, and the scaling compares equal work.
fn measure(
    run_one: &(dyn Fn(u64) -> u64 + Sync),
    seeds: u64,
    repeat: u32,
    threads: Option<usize>,
    min_run_secs: f64,
) -> Measured {
    let shared = PoolShared::new(threads.unwrap_or(0));
    std::thread::scope(|scope| {
        let pool = threads.map(|t| Pool::start(scope, &shared, t, run_one));
        let t = Stopwatch::start();
        run_seeds(run_one, seeds);
        let rounds = (min_run_secs / t.secs().max(1e-6)).ceil().clamp(1.0, 1e6) as u64;
        let all_rounds = rounds * threads.unwrap_or(1) as u64;
        if let Some(pool) = &pool {
            pool.run(seeds, all_rounds);
        }
        let mut m = Measured {
            one: Vec::new(),
            all: Vec::new(),
            allocs: Vec::new(),
        };
        for _ in 0..repeat {
            let before = crate::alloc::allocations();
            let t = Stopwatch::start();
            let events: u64 = (0..rounds).map(|_| run_seeds(run_one, seeds)).sum();
            let secs = t.secs().max(1e-9);
            let allocated = crate::alloc::allocations() - before;
            m.one.push(Rep {
                seeds: seeds * rounds,
                events,
                secs,
            });
            m.allocs.push(allocated as f64 / events.max(1) as f64);
            if let Some(pool) = &pool {
                m.all.push(pool.run(seeds, all_rounds));
            }
        }
        if let Some(pool) = pool {
            pool.stop();
        }
        m
    })
}

/// Per-repetition sums over several measurements, as rates.
#[derive(Default)]
struct Totals {
    one: Vec<Rep>,
    all: Vec<Rep>,
    /// Allocations on one thread, per repetition.
    allocated: Vec<f64>,
}

impl Totals {
    /// Adds a measurement of seeds `0..seeds`, one pass of them.
    fn add(&mut self, m: &Measured, seeds: u64) {
        let one: Vec<Rep> = m.one.iter().map(|r| r.one_pass(seeds)).collect();
        let all: Vec<Rep> = m.all.iter().map(|r| r.one_pass(seeds)).collect();
        fn sum_into(acc: &mut Vec<Rep>, reps: &[Rep]) {
            if acc.is_empty() {
                acc.resize(
                    reps.len(),
                    Rep {
                        seeds: 0,
                        events: 0,
                        secs: 0.0,
                    },
                );
            }
            for (a, r) in acc.iter_mut().zip(reps) {
                a.seeds += r.seeds;
                a.events += r.events;
                a.secs += r.secs;
            }
        }
        sum_into(&mut self.one, &one);
        sum_into(&mut self.all, &all);
        self.allocated
            .resize(m.allocs.len().max(self.allocated.len()), 0.0);
        for ((a, per_event), rep) in self.allocated.iter_mut().zip(&m.allocs).zip(&one) {
            *a += per_event * rep.events as f64;
        }
    }

    /// Allocations per event over everything added, per repetition.
    fn allocs_per_event(&self) -> Vec<f64> {
        self.allocated
            .iter()
            .zip(&self.one)
            .map(|(a, rep)| a / rep.events.max(1) as f64)
            .collect()
    }
}

fn events_figure(name: String, reps: &[Rep]) -> Figure {
    Figure::of(
        name,
        Unit::EventsPerSec,
        reps.iter().map(|r| r.events_per_sec()).collect(),
    )
}

fn seeds_figure(name: String, reps: &[Rep]) -> Figure {
    Figure::of(
        name,
        Unit::SeedsPerSec,
        reps.iter().map(|r| r.seeds as f64 / r.secs).collect(),
    )
}

/// All cores over one core, repetition by repetition.
fn scaling_figure(name: String, one: &[Rep], all: &[Rep]) -> Figure {
    Figure::of(
        name,
        Unit::Ratio,
        one.iter()
            .zip(all)
            .map(|(o, a)| a.events_per_sec() / o.events_per_sec())
            .collect(),
    )
}

/// How a sweep runs a seed: no trace, no digest, no decision log.
const SWEEP_RUN: RunOptions = RunOptions {
    keep_trace: false,
    record_steps: false,
    skip_decisions: true,
    skip_digest: true,
};

/// Why the madsim figures are, or are not, part of this run.
enum Madsim {
    /// Neither flag: `simcast bench` run directly.
    NotAsked,
    /// `--madsim-missing REASON`.
    Missing(String),
    /// `--madsim-figures FILE`, read.
    Figures(PathBuf, Vec<Figure>),
}

#[derive(Deserialize)]
struct MadsimFile {
    figures: Vec<Saved>,
}

/// Reads a madsim figures file; a bad one is a usage error naming it.
fn read_madsim(path: &Path) -> Result<Vec<Figure>, Failure> {
    let bad = |m: String| usage(format!("madsim figures {}: {m}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let file: MadsimFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    file.figures
        .into_iter()
        .map(|f| {
            let unit = Unit::parse(&f.unit).ok_or_else(|| {
                bad(format!(
                    "figure `{}` has an unknown unit `{}`",
                    f.name, f.unit
                ))
            })?;
            if !f.value.is_finite() || !f.spread.is_finite() {
                return Err(bad(format!("figure `{}` is not a finite number", f.name)));
            }
            Ok(Figure {
                name: f.name,
                value: f.value,
                unit,
                spread: f.spread,
            })
        })
        .collect()
}

/// The figure's name for the madsim messages rate, as the madsim workload
/// writes it.
const MADSIM_MESSAGES: &str = "madsim messages/s";

/// Figures summed over the scenarios measured: a run over named scenarios
/// (`--scenario`) sums another set than the baseline's, so they are not
/// compared then.
const TOTALS: &[&str] = &[
    "simulated events/s",
    "seeds/s",
    "simulated events/s, all cores",
    "seeds/s, all cores",
    "scaling",
    "simulated events/s vs empty",
    "allocs/event",
    "explored states/s",
    "broadcast events/s",
    "broadcast events/s vs madsim messages/s",
];

/// The knobs of a run, resolved.
struct Setup {
    seeds: u64,
    repeat: u32,
    /// The two memory sweeps (0: none).
    rss_seeds: [u64; 2],
    max_states: u64,
    threads: usize,
    /// The shortest timed run: the seeds run as many times over as the
    /// warm-up says it takes (0 with --quick: once).
    min_run_secs: f64,
    quick: bool,
    progress: bool,
}

impl Setup {
    /// Measures seeds `0..seeds` as this bench is set up to (see
    /// [`measure`]).
    fn measure(&self, run_one: &(dyn Fn(u64) -> u64 + Sync), seeds: u64) -> Measured {
        measure(
            run_one,
            seeds,
            self.repeat,
            Some(self.threads),
            self.min_run_secs,
        )
    }

    fn of(a: &BenchArgs) -> Result<Setup, Failure> {
        let seeds = a.seeds.unwrap_or(if a.quick { 20 } else { 200 });
        let repeat = a.repeat.unwrap_or(if a.quick { 3 } else { 5 });
        if seeds == 0 || repeat == 0 {
            return Err(usage("--seeds and --repeat must be at least 1"));
        }
        let rss = a.rss_seeds.unwrap_or(if a.quick { 1_000 } else { 10_000 });
        let rss_big = rss
            .checked_mul(10)
            .ok_or_else(|| usage("--rss-seeds is too large"))?;
        Ok(Setup {
            seeds,
            repeat,
            rss_seeds: [rss, rss_big],
            max_states: if a.quick { 5_000 } else { 20_000_000 },
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            min_run_secs: if a.quick { 0.0 } else { MIN_RUN_SECS },
            quick: a.quick,
            progress: std::io::stderr().is_terminal() && !a.json,
        })
    }

    /// Progress on stderr, for people at a terminal.
    fn say(&self, what: &str) {
        if self.progress {
            eprintln!("bench: {what}");
        }
    }
}

/// What a run has found so far.
#[derive(Default)]
struct Report {
    figures: Vec<Figure>,
    notes: Vec<String>,
}

/// Runs `simcast bench`.
pub fn run(a: BenchArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    // Everything that can be wrong with the input, before measuring.
    let setup = Setup::of(&a)?;
    let (swept, explored) = select(&a)?;
    let baseline_path = a.baseline.clone().unwrap_or_else(baseline::default_path);
    let base = baseline::load(&baseline_path).map_err(|e| usage(e.to_string()))?;
    let madsim = match (&a.madsim_figures, &a.madsim_missing) {
        (Some(path), _) => Madsim::Figures(path.clone(), read_madsim(path)?),
        (None, Some(reason)) => Madsim::Missing(reason.clone()),
        (None, None) => Madsim::NotAsked,
    };

    let mut report = Report::default();
    // Memory first, while the process is young: the peak of a sweep, not
    // of whatever ran before it.
    measure_memory(&setup, &swept, &mut report)?;
    let empty_events = measure_empty(&setup, &mut report);
    let broadcast = measure_sweeps(&setup, &swept, &empty_events, &mut report);
    measure_explorations(&setup, &explored, &mut report);
    add_madsim(&madsim, &broadcast, &mut report);

    let Report { figures, mut notes } = report;
    let subset = !a.scenarios.is_empty();
    if subset && base.is_some() {
        notes.push(
            "totals are over the named scenarios only: not compared with the baseline".to_owned(),
        );
    }
    let rows: Vec<Row<'_>> = figures
        .iter()
        .map(|f| Row {
            change: base
                .as_ref()
                .filter(|_| !(subset && TOTALS.contains(&f.name.as_str())))
                .and_then(|b| b.get(&f.name))
                .filter(|s| s.unit == f.unit.as_str())
                .map(|s| baseline::compare(f.unit, f.value, s.value)),
            figure: f,
        })
        .collect();
    let worse: Vec<&str> = rows
        .iter()
        .filter(|r| r.change.is_some_and(|c| c.worse))
        .map(|r| r.figure.name.as_str())
        .collect();
    match &base {
        None => notes.push(format!(
            "no baseline at {} (write one with --save)",
            baseline_path.display()
        )),
        Some(b) => notes.extend(baseline_notes(b, &setup, &figures, &worse)),
    }
    if a.save {
        baseline::save(&baseline_path, &to_baseline(&setup, &figures))
            .map_err(|e| usage(e.to_string()))?;
        notes.push(format!(
            "saved {} figures to {}",
            figures.len(),
            baseline_path.display()
        ));
        if let Some(note) = save_noise_note(&figures) {
            notes.push(note);
        }
    }

    if a.json {
        print_json(&json!({
            "command": "bench",
            "wall_ms": clock.ms(),
            "quick": setup.quick,
            "seeds": setup.seeds,
            "repeat": setup.repeat,
            "threads": setup.threads,
            "rss_seeds": setup.rss_seeds,
            "baseline": {
                "path": baseline_path.display().to_string(),
                "found": base.is_some(),
                "saved": a.save,
            },
            "madsim": match &madsim {
                Madsim::NotAsked => Value::Null,
                Madsim::Missing(reason) => json!({ "missing": reason }),
                Madsim::Figures(path, _) => json!({ "file": path.display().to_string() }),
            },
            "worse": worse,
            "notes": notes,
            "figures": rows.iter().map(Row::json).collect::<Vec<_>>(),
        }));
    } else {
        print_header(&setup, swept.len(), explored.len());
        match &base {
            Some(b) => outln!(
                "baseline: {} ({} figures; {} seeds x {} repetitions, {} threads{})",
                baseline_path.display(),
                b.figures.len(),
                b.seeds,
                b.repeat,
                b.threads,
                if b.quick { ", --quick" } else { "" }
            ),
            None => outln!("baseline: none ({})", baseline_path.display()),
        }
        print_table(&rows);
        for n in &notes {
            outln!("note: {n}");
        }
        outln!("bench took {:.1}s", clock.secs());
    }
    Ok(if a.fail_on_regression && !worse.is_empty() {
        Verdict::Violated
    } else {
        Verdict::Held
    })
}

/// Peak RSS after the two memory sweeps of `locks-contended` (or of the
/// first swept scenario if it is not swept).
fn measure_memory(setup: &Setup, swept: &[Scenario], report: &mut Report) -> Result<(), Failure> {
    if setup.rss_seeds[0] == 0 {
        report
            .notes
            .push("peak RSS not measured (--rss-seeds 0)".to_owned());
        return Ok(());
    }
    let Some(s) = swept
        .iter()
        .find(|s| s.name == "locks-contended")
        .or(swept.first())
    else {
        report
            .notes
            .push("peak RSS not measured: no swept scenario".to_owned());
        return Ok(());
    };
    let mut reset_every_time = true;
    for n in setup.rss_seeds {
        setup.say(&format!("peak RSS: sweeping {n} seeds of {}", s.name));
        reset_every_time &= memory::reset_peak();
        let failures = sweep_quietly(s, n, setup.threads)?;
        if failures > 0 {
            report.notes.push(format!(
                "the memory sweep of {} found {failures} failing seed(s): run `cargo xtask sweep --scenario {}`",
                s.name, s.name
            ));
        }
        match memory::peak_rss_mib() {
            Some(mib) => report.figures.push(Figure {
                name: format!("peak RSS after {n} seeds of {}", s.name),
                value: mib,
                unit: Unit::MiB,
                spread: 0.0,
            }),
            None => report.notes.push(format!(
                "peak RSS after {n} seeds of {}: unavailable (no /proc/self/status)",
                s.name
            )),
        }
    }
    if !reset_every_time {
        report.notes.push(
            "peak RSS could not be reset between sweeps (/proc/self/clear_refs): each figure is the process's peak so far".to_owned(),
        );
    }
    Ok(())
}

/// The empty world, on one core and on all cores; its one-core events/s
/// figure. Its seeds are short, so it runs ten times as many. It shares
/// nothing between workers and allocates next to nothing, so its scaling
/// is what this machine's cores give: the ceiling of every scenario's.
fn measure_empty(setup: &Setup, report: &mut Report) -> Figure {
    setup.say("the empty world");
    let run_one = |seed| empty::run(seed, SWEEP_RUN).events;
    let seeds = setup.seeds * 10;
    let m = setup.measure(&run_one, seeds);
    let events = events_figure("empty world events/s".to_owned(), &m.one);
    report.figures.push(events.clone());
    report
        .figures
        .push(seeds_figure("empty world seeds/s".to_owned(), &m.one));
    report.figures.push(scaling_figure(
        "empty world scaling".to_owned(),
        &m.one,
        &m.all,
    ));
    report.figures.push(Figure::of(
        "empty world allocs/event",
        Unit::AllocsPerEvent,
        m.allocs,
    ));
    events
}

/// Every swept scenario, then the totals; returns the broadcast
/// scenarios' totals (for the ratio to madsim).
fn measure_sweeps(
    setup: &Setup,
    swept: &[Scenario],
    empty_events: &Figure,
    report: &mut Report,
) -> Totals {
    let (seeds, figures) = (setup.seeds, &mut report.figures);
    let mut totals = Totals::default();
    let mut broadcast = Totals::default();
    for s in swept {
        setup.say(&format!("sweeping {}", s.name));
        let run_one = |seed| {
            let spec = RunSpec {
                scenario: s,
                mutant: None,
                seed,
                choices: None,
            };
            run_spec(&spec, SWEEP_RUN).events
        };
        let m = setup.measure(&run_one, seeds);
        let name = &s.name;
        let one = events_figure(format!("{name} events/s"), &m.one);
        figures.push(one.clone());
        figures.push(seeds_figure(format!("{name} seeds/s"), &m.one));
        figures.push(events_figure(format!("{name} events/s, all cores"), &m.all));
        figures.push(seeds_figure(format!("{name} seeds/s, all cores"), &m.all));
        figures.push(scaling_figure(format!("{name} scaling"), &m.one, &m.all));
        figures.push(Figure::ratio(
            format!("{name} events/s vs empty"),
            &one,
            empty_events,
        ));
        figures.push(Figure::of(
            format!("{name} allocs/event"),
            Unit::AllocsPerEvent,
            m.allocs.clone(),
        ));
        totals.add(&m, seeds);
        if s.protocol().name == "broadcast" {
            broadcast.add(&m, seeds);
        }
    }
    if !swept.is_empty() {
        let one = events_figure("simulated events/s".to_owned(), &totals.one);
        figures.push(one.clone());
        figures.push(seeds_figure("seeds/s".to_owned(), &totals.one));
        figures.push(events_figure(
            "simulated events/s, all cores".to_owned(),
            &totals.all,
        ));
        figures.push(seeds_figure("seeds/s, all cores".to_owned(), &totals.all));
        figures.push(scaling_figure(
            "scaling".to_owned(),
            &totals.one,
            &totals.all,
        ));
        figures.push(Figure::ratio(
            "simulated events/s vs empty",
            &one,
            empty_events,
        ));
        figures.push(Figure::of(
            "allocs/event",
            Unit::AllocsPerEvent,
            totals.allocs_per_event(),
        ));
    }
    broadcast
}

/// States/s of every explored scenario (a warm-up each), and the total.
fn measure_explorations(setup: &Setup, explored: &[Scenario], report: &mut Report) {
    let repeat = setup.repeat as usize;
    let mut states = vec![0u64; repeat];
    let mut secs = vec![0.0; repeat];
    for s in explored {
        setup.say(&format!("exploring {}", s.name));
        crate::explore::explore_quietly(s, None, setup.max_states);
        let mut states_per_sec = Vec::new();
        for r in 0..repeat {
            let t = Stopwatch::start();
            let ex = crate::explore::explore_quietly(s, None, setup.max_states);
            let took = t.secs().max(1e-9);
            states_per_sec.push(ex.states as f64 / took);
            states[r] += ex.states;
            secs[r] += took;
        }
        report.figures.push(Figure::of(
            format!("{} states/s", s.name),
            Unit::StatesPerSec,
            states_per_sec,
        ));
    }
    if !explored.is_empty() {
        report.figures.push(Figure::of(
            "explored states/s",
            Unit::StatesPerSec,
            states
                .iter()
                .zip(&secs)
                .map(|(n, s)| *n as f64 / s)
                .collect(),
        ));
        if setup.quick {
            report.notes.push(format!(
                "explorations stop at {} states under --quick",
                setup.max_states
            ));
        }
    }
}

/// The madsim figures, and the native broadcast events/s against madsim's
/// messages/s; or a note saying why not.
fn add_madsim(madsim: &Madsim, broadcast: &Totals, report: &mut Report) {
    match madsim {
        Madsim::NotAsked => report.notes.push(
            "madsim figures not measured: `cargo xtask bench` measures them and passes --madsim-figures".to_owned(),
        ),
        Madsim::Missing(reason) => report
            .notes
            .push(format!("madsim figures MISSING: {reason}")),
        Madsim::Figures(path, figures) => {
            report.figures.extend(figures.iter().cloned());
            let messages = figures.iter().find(|f| f.name == MADSIM_MESSAGES);
            match (messages, broadcast.one.is_empty()) {
                (Some(m), false) => {
                    let native = events_figure("broadcast events/s".to_owned(), &broadcast.one);
                    report.figures.push(native.clone());
                    report.figures.push(Figure::ratio(
                        "broadcast events/s vs madsim messages/s",
                        &native,
                        m,
                    ));
                }
                (None, _) => report.notes.push(format!(
                    "no `{MADSIM_MESSAGES}` figure in {}: no ratio to madsim",
                    path.display()
                )),
                (Some(_), true) => report
                    .notes
                    .push("no broadcast scenario swept: no ratio to madsim".to_owned()),
            }
        }
    }
}

/// What people should know when reading this run against `b`.
fn baseline_notes(b: &Baseline, setup: &Setup, figures: &[Figure], worse: &[&str]) -> Vec<String> {
    let mut notes = Vec::new();
    if b.quick != setup.quick {
        notes.push(format!(
            "the baseline was measured {} --quick and this run {}: the figures do not compare one to one",
            if b.quick { "with" } else { "without" },
            if setup.quick { "with it" } else { "without it" }
        ));
    }
    if b.threads != setup.threads {
        notes.push(format!(
            "the baseline's all-cores figures used {} threads, this run {}",
            b.threads, setup.threads
        ));
    }
    let absent: Vec<&str> = b
        .figures
        .iter()
        .filter(|s| !figures.iter().any(|f| f.name == s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !absent.is_empty() {
        notes.push(format!(
            "in the baseline but not measured in this run: {}",
            absent.join(", ")
        ));
    }
    notes.push(if worse.is_empty() {
        "no figure is more than 10% worse than the baseline".to_owned()
    } else {
        format!(
            "{} figure(s) more than 10% worse than the baseline: {}",
            worse.len(),
            worse.join(", ")
        )
    });
    if let Some(note) = noise_note(figures, worse) {
        notes.push(note);
    }
    notes
}

/// The figures (of those `keep` picks) whose own repetitions spread more
/// than the 10% margin: how many, and the widest.
fn spread_wide(figures: &[Figure], keep: impl Fn(&Figure) -> bool) -> Option<(usize, &Figure)> {
    let noisy = || figures.iter().filter(|f| keep(f) && f.spread > 0.10);
    let widest = noisy().max_by(|a, b| a.spread.total_cmp(&b.spread))?;
    Some((noisy().count(), widest))
}

/// A flagged figure whose own repetitions spread more than the 10% margin
/// cannot tell a regression from a busy machine: says how many there are.
fn noise_note(figures: &[Figure], worse: &[&str]) -> Option<String> {
    let (n, widest) = spread_wide(figures, |f| worse.contains(&f.name.as_str()))?;
    Some(format!(
        "{n} of them spread more than 10% across their repetitions (up to {:.0}%): \
         something else was using the machine; run again before reading them as regressions",
        widest.spread * 100.0
    ))
}

/// Saved figures whose own repetitions spread more than the 10% margin
/// make a baseline that later runs are wrongly flagged (or not flagged)
/// against: says how many, and the widest. Ratios are left out: they carry
/// the spreads of both their figures.
fn save_noise_note(figures: &[Figure]) -> Option<String> {
    let (n, widest) = spread_wide(figures, |f| f.unit != Unit::Ratio)?;
    Some(format!(
        "{n} saved figure(s) spread more than 10% across their repetitions (widest: {}, {:.0}%): \
         something else was using the machine; save again when it is quiet",
        widest.name,
        widest.spread * 100.0
    ))
}

/// This run's figures as a baseline.
fn to_baseline(setup: &Setup, figures: &[Figure]) -> Baseline {
    Baseline {
        format: baseline::FORMAT,
        quick: setup.quick,
        threads: setup.threads,
        seeds: setup.seeds,
        repeat: setup.repeat,
        figures: figures
            .iter()
            .map(|f| Saved {
                name: f.name.clone(),
                value: f.value,
                unit: f.unit.as_str().to_owned(),
                spread: f.spread,
            })
            .collect(),
    }
}

/// The swept and the explored scenarios: the named ones (`*-explore` ones
/// explored), or every default scenario and every `*-explore` one.
fn select(a: &BenchArgs) -> Result<(Vec<Scenario>, Vec<Scenario>), Failure> {
    let all: Vec<Scenario> = if a.scenarios.is_empty() {
        let catalog = a.dir.catalog()?;
        catalog
            .scenarios
            .iter()
            .filter(|s| s.default || is_explore(s))
            .cloned()
            .collect()
    } else {
        a.scenarios
            .iter()
            .map(|n| a.dir.scenario(n))
            .collect::<Result<_, _>>()?
    };
    Ok(all.into_iter().partition(|s| !is_explore(s)))
}

/// `*-explore` and `*-explore-*` (a variant such as `locks-explore-large`).
fn is_explore(s: &Scenario) -> bool {
    s.name.ends_with("-explore") || s.name.contains("-explore-")
}

/// Sweeps seeds `0..seeds` of `s` on all cores the way `sweep` does
/// (bounded memory, nothing kept per seed); the failing seeds found.
fn sweep_quietly(s: &Scenario, seeds: u64, threads: usize) -> Result<u64, Failure> {
    let plan = Plan {
        scenarios: vec![s.clone()],
        mutant: None,
        start: 0,
        count: seeds,
        shard: None,
        jobs: threads,
        time_budget: None,
        max_failures: 1,
        out: PathBuf::from("target/simcast/bench/failures"),
        progress_bar: false,
        progress_lines: false,
        origin: "simcast bench".to_owned(),
        shrink_budget: 0.0,
    };
    Ok(execute(&plan)?.failures.len() as u64)
}

/// A figure and how it compares with the baseline.
struct Row<'a> {
    figure: &'a Figure,
    change: Option<baseline::Change>,
}

impl Row<'_> {
    /// The flag for people: `SLOWER` for throughput and ratios, `WORSE`
    /// for allocations and memory.
    fn flag(&self) -> &'static str {
        match self.change {
            Some(c) if c.worse && self.figure.unit.higher_is_better() => "SLOWER",
            Some(c) if c.worse => "WORSE",
            _ => "",
        }
    }

    fn json(&self) -> Value {
        let f = self.figure;
        let mut v = json!({
            "name": f.name,
            "value": f.value,
            "unit": f.unit.as_str(),
            "spread": f.spread,
        });
        if let Some(c) = self.change {
            v["baseline"] = json!(c.baseline);
            v["change"] = json!(c.change);
            v["slower"] = json!(c.worse);
        }
        v
    }
}

/// A value with as many decimals as its size deserves.
fn show(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn print_header(setup: &Setup, swept: usize, explored: usize) {
    outln!(
        "bench{}: {swept} scenarios swept, {explored} explored; {} seeds (run over until a repetition lasts {} s) x {} repetitions after a warm-up; one core, and all cores = {} threads",
        if setup.quick { " --quick" } else { "" },
        setup.seeds,
        setup.min_run_secs,
        setup.repeat,
        setup.threads
    );
}

fn print_table(rows: &[Row<'_>]) {
    let width = rows
        .iter()
        .map(|r| r.figure.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "{:<width$}  {:>12}  {:<12}  {:>7}  {:>11}  flag",
        "name",
        "median",
        "unit",
        "spread",
        "vs baseline"
    );
    for r in rows {
        let f = r.figure;
        let change = match r.change {
            Some(c) => c
                .change
                .map_or("n/a".to_owned(), |c| format!("{:+.1}%", c * 100.0)),
            None => String::new(),
        };
        let line = format!(
            "{:<width$}  {:>12}  {:<12}  {:>6.1}%  {:>11}  {}",
            f.name,
            show(f.value),
            f.unit.as_str(),
            f.spread * 100.0,
            change,
            r.flag()
        );
        outln!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_back_from_their_names() {
        for u in Unit::ALL {
            assert_eq!(Unit::parse(u.as_str()), Some(u));
        }
        assert_eq!(Unit::parse("furlongs"), None);
    }

    #[test]
    fn a_figure_is_the_median_with_its_spread() {
        let f = Figure::of("f", Unit::SeedsPerSec, vec![12.0, 10.0, 8.0]);
        assert_eq!(f.value, 10.0);
        assert!((f.spread - 0.4).abs() < 1e-12);
        let r = Figure::ratio("r", &f, &Figure::of("g", Unit::SeedsPerSec, vec![5.0]));
        assert_eq!((r.value, r.unit), (2.0, Unit::Ratio));
        assert!((r.spread - 0.4).abs() < 1e-12);
    }

    #[test]
    fn flagged_figures_that_spread_wider_than_the_margin_are_called_noisy() {
        let tight = Figure::of("tight", Unit::SeedsPerSec, vec![100.0, 101.0, 102.0]);
        let wide = Figure::of("wide", Unit::SeedsPerSec, vec![70.0, 100.0, 130.0]);
        let figures = [tight, wide];
        assert_eq!(noise_note(&figures, &[]), None);
        assert_eq!(noise_note(&figures, &["tight"]), None);
        let note = noise_note(&figures, &["tight", "wide"]).expect("one noisy figure");
        assert!(note.starts_with("1 of them spread"), "{note}");
        assert!(note.contains("up to 60%"), "{note}");
    }

    #[test]
    fn saving_noisy_figures_says_so_and_ratios_do_not_count() {
        let tight = Figure::of("tight", Unit::SeedsPerSec, vec![100.0, 101.0, 102.0]);
        let wide = Figure::of("wide", Unit::EventsPerSec, vec![70.0, 100.0, 130.0]);
        let wider = Figure::of("wider", Unit::EventsPerSec, vec![50.0, 100.0, 130.0]);
        let ratio = Figure::ratio("ratio", &wider, &tight);
        assert_eq!(save_noise_note(&[tight.clone(), ratio.clone()]), None);
        let note = save_noise_note(&[tight, wide, wider, ratio]).expect("two noisy figures");
        assert!(note.starts_with("2 saved figure(s) spread"), "{note}");
        assert!(note.contains("widest: wider, 80%"), "{note}");
    }

    #[test]
    fn a_panicking_worker_is_reported_not_waited_for() {
        let one = |seed: u64| {
            assert_ne!(seed, 7, "seed 7 fails");
            1
        };
        let shared = PoolShared::new(2);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            std::thread::scope(|scope| Pool::start(scope, &shared, 2, &one).run(10, 1).events)
        }));
        assert!(r.is_err());
    }

    #[test]
    fn a_short_run_is_repeated_to_last_and_all_cores_do_equal_work() {
        let slow = |seed: u64| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            seed + 1
        };
        let m = measure(&slow, 3, 2, Some(2), 0.02);
        for r in &m.one {
            // The warm-up took at least 6 ms: at most 4 rounds of 3 seeds.
            assert!(
                r.seeds % 3 == 0 && (3..=12).contains(&r.seeds),
                "{}",
                r.seeds
            );
            assert_eq!(r.events, r.seeds / 3 * 6);
        }
        for (o, a) in m.one.iter().zip(&m.all) {
            assert_eq!((a.seeds, a.events), (2 * o.seeds, 2 * o.events));
        }
        let once = measure(&slow, 3, 1, None, 0.0);
        assert_eq!((once.one[0].seeds, once.one[0].events), (3, 6));
        assert!(once.all.is_empty());
    }

    #[test]
    fn totals_weigh_each_scenario_by_one_pass_of_its_seeds() {
        let r = Rep {
            seeds: 600,
            events: 3000,
            secs: 0.3,
        };
        let one = r.one_pass(200);
        assert_eq!((one.seeds, one.events), (200, 1000));
        assert!((one.secs - 0.1).abs() < 1e-12);
        assert!((one.events_per_sec() - r.events_per_sec()).abs() < 1e-6);
        let mut totals = Totals::default();
        let m = |reps: Vec<Rep>| Measured {
            one: reps.clone(),
            all: reps,
            allocs: vec![0.5],
        };
        totals.add(&m(vec![r]), 200);
        totals.add(&m(vec![one]), 200);
        assert_eq!((totals.one[0].seeds, totals.one[0].events), (400, 2000));
        assert_eq!(totals.allocs_per_event(), [0.5]);
    }

    #[test]
    fn parallel_runs_cover_every_seed_once() {
        let one = |seed: u64| seed + 1;
        assert_eq!(run_seeds_on(&one, 100, 3), run_seeds(&one, 100));
        assert_eq!(run_seeds_on(&one, 100, 3), (1..=100).sum::<u64>());
    }
}
