//! `simcast sweep`: many seeds over many scenarios, on all cores.
//!
//! Seeds `start..start+seeds` run against every selected scenario; with
//! `--shard K/N` only the seeds `s` with `s % N == K - 1`, so N shards cover
//! disjoint seeds. Each scenario stops after its `--max-failures` lowest
//! failing seeds; the summary counts exactly the seeds up to that cut, so it
//! is the same whatever `--jobs` is (unless a time budget stops it early).
//! Every failure is re-run with per-step digests and written as a seed file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;

use crate::outln;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use simcast_sim::engine::{RunOptions, Violation};
use simcast_sim::registry::{self, MutantInfo};
use simcast_sim::runner::{RunSpec, run as run_spec};
use simcast_sim::scenario::Scenario;

use crate::common::{
    Failure, ScenarioDir, Stopwatch, Verdict, mutant_for, print_json, show_violation,
    stdout_is_terminal, usage,
};
use crate::failure::{Written, shrink_and_write};

/// `K/N`: this worker is shard K (1-based) of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based index.
    pub k: u64,
    /// Number of shards.
    pub n: u64,
}

impl Shard {
    /// Whether `seed` belongs to this shard.
    pub fn owns(self, seed: u64) -> bool {
        seed % self.n == self.k - 1
    }
}

/// Parses `K/N` with `1 <= K <= N`.
pub fn parse_shard(s: &str) -> Result<Shard, String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not K/N"))?;
    let k: u64 = k
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: K is not a number"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: N is not a number"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!("`{s}`: need 1 <= K <= N"));
    }
    Ok(Shard { k, n })
}

/// Arguments of `simcast sweep`.
#[derive(Args, Debug)]
pub struct SweepArgs {
    /// A scenario to sweep (repeatable) [default: every default scenario, or
    /// with --mutant every default scenario of the mutant's protocol].
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// How many seeds (before sharding).
    #[arg(long, value_name = "N", default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    start: u64,
    /// Run only shard K of N: the seeds s with s % N == K - 1.
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Run with this mutant.
    #[arg(long, value_name = "M")]
    mutant: Option<String>,
    /// Worker threads [default: all cores].
    #[arg(long, value_name = "J")]
    jobs: Option<usize>,
    /// Where failure seed files go.
    #[arg(long, value_name = "DIR", default_value = "target/simcast/failures")]
    out: PathBuf,
    /// Stop starting new seeds after this many seconds.
    #[arg(long, value_name = "SECS")]
    time_budget: Option<f64>,
    /// Stop a scenario after this many failing seeds (0 = never).
    #[arg(long, value_name = "N", default_value_t = 1)]
    max_failures: u64,
    /// Seconds spent shrinking each failure before its seed file is
    /// written (0: write it unshrunk).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    shrink_budget: f64,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// What one seed did.
#[derive(Clone, Debug)]
struct SeedResult {
    events: u64,
    faults: BTreeMap<&'static str, u64>,
    violation: Option<Violation>,
    coverage: Vec<u128>,
    counters: BTreeMap<&'static str, u64>,
}

/// Totals over a set of seeds.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Seeds run.
    pub seeds: u64,
    /// Events handled.
    pub events: u64,
    /// Failing seeds.
    pub failures: u64,
    /// Failing seeds per invariant.
    pub violations: BTreeMap<String, u64>,
    /// Faults injected per kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Transitions taken, one bit set per machine of the protocol.
    pub coverage: Vec<u128>,
    /// The protocols' named counts, summed.
    pub counters: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn add(&mut self, r: &SeedResult) {
        self.seeds += 1;
        or_into(&mut self.coverage, &r.coverage);
        for (k, v) in &r.counters {
            *self.counters.entry(k).or_default() += v;
        }
        self.events += r.events;
        for (k, v) in &r.faults {
            *self.faults.entry(k).or_default() += v;
        }
        if let Some(v) = &r.violation {
            self.failures += 1;
            *self.violations.entry(v.invariant.clone()).or_default() += 1;
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.seeds += o.seeds;
        or_into(&mut self.coverage, &o.coverage);
        for (k, v) in &o.counters {
            *self.counters.entry(k).or_default() += v;
        }
        self.events += o.events;
        self.failures += o.failures;
        for (k, v) in &o.violations {
            *self.violations.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
    }
}

fn or_into(acc: &mut Vec<u128>, bits: &[u128]) {
    if acc.len() < bits.len() {
        acc.resize(bits.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(bits) {
        *a |= b;
    }
}

/// Transition coverage of a protocol over a sweep (transitions its world
/// cannot reach by design are left out).
#[derive(Clone, Debug)]
pub struct ProtocolCoverage {
    /// Protocol name.
    pub protocol: &'static str,
    /// Transitions reached.
    pub covered: usize,
    /// Transitions reachable.
    pub total: usize,
    /// The names of those never reached.
    pub unreached: Vec<String>,
}

/// Coverage per protocol: the union over its scenarios.
pub fn coverage(report: &SweepReport) -> Vec<ProtocolCoverage> {
    let mut by: BTreeMap<&'static str, Vec<u128>> = BTreeMap::new();
    for (_, protocol, t) in &report.per_scenario {
        or_into(by.entry(protocol).or_default(), &t.coverage);
    }
    by.into_iter()
        .map(|(protocol, bits)| {
            let info = registry::protocol(protocol).expect("known protocol");
            let mut unreached = Vec::new();
            let mut total = 0;
            for (m, (machine, transitions)) in info.machines.iter().enumerate() {
                for (i, t) in transitions.iter().enumerate() {
                    let name = format!("{machine}: {t}");
                    if info.unreachable_reason(&name).is_some() {
                        continue;
                    }
                    total += 1;
                    if bits.get(m).is_none_or(|b| b & (1u128 << i) == 0) {
                        unreached.push(name);
                    }
                }
            }
            ProtocolCoverage {
                protocol,
                covered: total - unreached.len(),
                total,
                unreached,
            }
        })
        .collect()
}

/// A failing seed, written as a (shrunk) seed file.
#[derive(Clone, Debug)]
pub struct FoundFailure {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// What broke (in the written, shrunk run).
    pub violation: Violation,
    /// The seed file.
    pub file: PathBuf,
    /// Shrinking figures.
    pub written: Written,
}

/// The selection and the knobs of a sweep, resolved.
pub struct Plan {
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Mutant, if any.
    pub mutant: Option<&'static MutantInfo>,
    /// Seeds `start..start + count`.
    pub start: u64,
    /// How many.
    pub count: u64,
    /// Sharding.
    pub shard: Option<Shard>,
    /// Threads.
    pub jobs: usize,
    /// Seconds before no new seed starts.
    pub time_budget: Option<f64>,
    /// Failing seeds kept per scenario (0 = all).
    pub max_failures: u64,
    /// Where seed files go.
    pub out: PathBuf,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
    /// Print periodic progress lines on stderr.
    pub progress_lines: bool,
    /// Prefix of seed file origins.
    pub origin: String,
    /// Seconds of shrinking per failure.
    pub shrink_budget: f64,
}

/// What a sweep found.
pub struct SweepReport {
    /// Totals per scenario, in plan order.
    pub per_scenario: Vec<(String, &'static str, Tally)>,
    /// Totals.
    pub total: Tally,
    /// Failures written.
    pub failures: Vec<FoundFailure>,
    /// Whether every planned seed ran (no time budget cut).
    pub complete: bool,
}

/// Resolves the scenarios of a sweep: the named ones, or the defaults (of
/// the mutant's protocol if there is a mutant).
pub fn select(
    dir: &ScenarioDir,
    names: &[String],
    mutant: Option<&str>,
) -> Result<(Vec<Scenario>, Option<&'static MutantInfo>), Failure> {
    let scenarios: Vec<Scenario> = if names.is_empty() {
        let catalog = dir.catalog()?;
        let protocol = match mutant {
            None => None,
            Some(m) => Some(
                registry::mutant(m)
                    .ok_or_else(|| {
                        usage(format!(
                            "unknown mutant `{m}` (known: {})",
                            registry::one_of(
                                registry::protocols()
                                    .iter()
                                    .flat_map(|p| p.mutants.iter().map(|m| m.name))
                            )
                        ))
                    })?
                    .0
                    .name,
            ),
        };
        let picked: Vec<Scenario> = catalog.defaults(protocol).into_iter().cloned().collect();
        if picked.is_empty() {
            return Err(usage(format!(
                "no default scenario{} in {}",
                protocol
                    .map(|p| format!(" of protocol {p}"))
                    .unwrap_or_default(),
                catalog.dir.display()
            )));
        }
        picked
    } else {
        names
            .iter()
            .map(|n| dir.scenario(n))
            .collect::<Result<_, _>>()?
    };
    let mut resolved = None;
    for s in &scenarios {
        resolved = mutant_for(s, mutant)?;
    }
    Ok((scenarios, resolved))
}

/// Runs `simcast sweep`.
pub fn run(a: SweepArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    let (scenarios, mutant) = select(&a.dir, &a.scenarios, a.mutant.as_deref())?;
    if a.jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    if a.shrink_budget.is_nan() || a.shrink_budget < 0.0 {
        return Err(usage(
            "--shrink-budget must be a number of seconds, 0 or more",
        ));
    }
    if a.time_budget.is_some_and(|t| t.is_nan() || t <= 0.0) {
        return Err(usage("--time-budget must be a positive number of seconds"));
    }
    let terminal = stdout_is_terminal();
    let plan = Plan {
        scenarios,
        mutant,
        start: a.start,
        count: a.seeds,
        shard: a.shard,
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        time_budget: a.time_budget,
        max_failures: a.max_failures,
        out: a.out.clone(),
        progress_bar: terminal && !a.json,
        progress_lines: !terminal,
        origin: "simcast sweep".to_owned(),
        shrink_budget: a.shrink_budget,
    };
    let report = execute(&plan)?;
    let wall_ms = clock.ms();
    if a.json {
        print_json(&report_json("sweep", &plan, &report, wall_ms));
    } else {
        print_summary(&plan, &report, clock.secs());
    }
    Ok(if report.failures.is_empty() {
        Verdict::Held
    } else {
        Verdict::Violated
    })
}

/// The `--json` object of a sweep (also used by `nightly`).
pub fn report_json(
    command: &str,
    plan: &Plan,
    report: &SweepReport,
    wall_ms: u64,
) -> serde_json::Value {
    let secs = (wall_ms as f64 / 1000.0).max(1e-3);
    json!({
        "command": command,
        "wall_ms": wall_ms,
        "scenarios": plan.scenarios.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "mutant": plan.mutant.map(|m| m.name),
        "start": plan.start,
        "shard": plan.shard.map(|s| format!("{}/{}", s.k, s.n)),
        "seeds": report.total.seeds,
        "events": report.total.events,
        "failures": report.failures.len(),
        "failure_files": report.failures.iter().map(|f| f.file.display().to_string()).collect::<Vec<_>>(),
        "failure_details": report.failures.iter().map(|f| json!({
            "scenario": f.scenario,
            "seed": f.seed,
            "invariant": f.violation.invariant,
            "file": f.file.display().to_string(),
            "choices_before": f.written.choices_before,
            "choices_after": f.written.choices_after,
            "events_before": f.written.events_before,
            "events_after": f.written.events_after,
        })).collect::<Vec<_>>(),
        "violations": report.total.violations,
        "faults": report.total.faults,
        "counters": report.total.counters,
        "complete": report.complete,
        "coverage": coverage(report).iter().map(|c| (c.protocol.to_owned(), json!({
            "covered": c.covered,
            "total": c.total,
            "unreached": c.unreached,
        }))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "seeds_per_sec": report.total.seeds as f64 / secs,
        "events_per_sec": report.total.events as f64 / secs,
        "per_scenario": report.per_scenario.iter().map(|(name, protocol, t)| json!({
            "name": name,
            "protocol": protocol,
            "seeds": t.seeds,
            "events": t.events,
            "failures": t.failures,
            "violations": t.violations,
            "faults": t.faults,
            "counters": t.counters,
        })).collect::<Vec<_>>(),
    })
}

fn print_summary(plan: &Plan, report: &SweepReport, secs: f64) {
    for (name, protocol, t) in &report.per_scenario {
        let faults: Vec<String> = t.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
        outln!(
            "{name:<28} {protocol:<10} {:>7} seeds {:>11} events {:>4} failures  faults: {}",
            t.seeds,
            t.events,
            t.failures,
            faults.join(" ")
        );
        if !t.counters.is_empty() {
            let counts: Vec<String> = t.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!("{:<39} counts: {}", "", counts.join(" "));
        }
    }
    let t = &report.total;
    outln!(
        "total: {} seeds, {} events, {} failures in {:.1}s ({:.0} seeds/s, {:.0} events/s){}",
        t.seeds,
        t.events,
        report.failures.len(),
        secs,
        t.seeds as f64 / secs.max(1e-3),
        t.events as f64 / secs.max(1e-3),
        if report.complete {
            ""
        } else {
            " [stopped by the time budget]"
        }
    );
    for c in coverage(report) {
        outln!(
            "coverage {:<10} {}/{} transitions{}",
            c.protocol,
            c.covered,
            c.total,
            if c.unreached.is_empty() {
                String::new()
            } else {
                format!("; not reached: {}", c.unreached.join("; "))
            }
        );
    }
    for f in &report.failures {
        outln!(
            "FAIL {} seed {}: {}",
            f.scenario,
            f.seed,
            show_violation(&f.violation)
        );
        outln!("  seed file: {}", f.file.display());
        outln!("  replay:    cargo xtask replay {}", f.file.display());
    }
    if plan.mutant.is_some() && report.failures.is_empty() {
        outln!(
            "the mutant {} was NOT caught",
            plan.mutant.map_or("", |m| m.name)
        );
    }
}

/// The seed file name of a failure.
pub fn failure_path(out: &Path, scenario: &str, mutant: Option<&MutantInfo>, seed: u64) -> PathBuf {
    out.join(format!(
        "{scenario}.{}.seed-{seed}.json",
        mutant.map_or("clean", |m| m.name)
    ))
}

/// The seeds a plan runs, in order, without materializing them.
#[derive(Clone, Copy, Debug)]
struct Seeds {
    first: u64,
    step: u64,
    count: u64,
}

impl Seeds {
    fn of(plan: &Plan) -> Seeds {
        let end = plan.start.saturating_add(plan.count);
        let (step, first) = match plan.shard {
            None => (1, plan.start),
            Some(sh) => {
                // The first seed >= start with seed % N == K - 1.
                let r = plan.start % sh.n;
                let want = sh.k - 1;
                (sh.n, plan.start + (want + sh.n - r) % sh.n)
            }
        };
        let count = if first >= end {
            0
        } else {
            (end - first).div_ceil(step)
        };
        debug_assert!(count == 0 || plan.shard.is_none_or(|sh| sh.owns(first)));
        Seeds { first, step, count }
    }

    fn nth(&self, j: u64) -> u64 {
        self.first + j * self.step
    }
}

/// One scenario's progress: results are folded into the tally in seed
/// order, through a watermark, so the totals cover exactly the seeds up to
/// the cut whatever the number of threads, with bounded memory.
#[derive(Default)]
struct Progress {
    /// Index (within the scenario's seeds) of the first seed not folded.
    watermark: u64,
    /// Completed (or skipped: `None`) seeds above the watermark.
    pending: BTreeMap<u64, Option<SeedResult>>,
    tally: Tally,
    /// The lowest failing seeds (at most `max_failures` when that is > 0).
    failing: Vec<u64>,
    /// Seeds above this are not needed.
    cut: u64,
}

impl Progress {
    fn complete(&mut self, j: u64, seed: u64, result: Option<SeedResult>, max_failures: u64) {
        if result.as_ref().is_some_and(|r| r.violation.is_some()) {
            let pos = self.failing.partition_point(|s| *s < seed);
            self.failing.insert(pos, seed);
            if max_failures > 0 {
                self.failing.truncate(max_failures as usize);
                if self.failing.len() as u64 == max_failures {
                    self.cut = self.cut.min(self.failing[max_failures as usize - 1]);
                }
            }
        }
        self.pending.insert(j, result);
    }

    /// Folds results in seed order while they are contiguous (or all of them
    /// at the end). A result folded before the end is final: every lower
    /// seed has completed, so no lower cut can appear later.
    fn fold(&mut self, seeds: &Seeds, until_end: bool) {
        loop {
            let next = if until_end {
                self.pending.pop_first()
            } else {
                self.pending
                    .remove(&self.watermark)
                    .map(|r| (self.watermark, r))
            };
            let Some((j, r)) = next else { return };
            if let Some(r) = r
                && seeds.nth(j) <= self.cut
            {
                self.tally.add(&r);
            }
            self.watermark = j + 1;
        }
    }
}

/// Seconds between two progress lines of a sweep that has no progress bar.
const PROGRESS_EVERY_SECS: f64 = 10.0;

/// Held by a sweep worker: when the last one is dropped (the worker
/// returned or unwound), the main thread is woken.
struct Stopping<'a> {
    running: &'a AtomicUsize,
    main: &'a std::thread::Thread,
}

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.main.unpark();
        }
    }
}

/// Runs a plan: all cores, deterministic totals, failures written.
pub fn execute(plan: &Plan) -> Result<SweepReport, Failure> {
    let clock = Stopwatch::start();
    let seeds = Seeds::of(plan);
    let scenarios = plan.scenarios.len() as u64;
    let total = seeds.count.saturating_mul(scenarios);
    let next = AtomicU64::new(0);
    let out_of_time = AtomicBool::new(false);
    let progress: Vec<Mutex<Progress>> = plan
        .scenarios
        .iter()
        .map(|_| {
            Mutex::new(Progress {
                cut: u64::MAX,
                ..Progress::default()
            })
        })
        .collect();
    let cut: Vec<AtomicU64> = plan
        .scenarios
        .iter()
        .map(|_| AtomicU64::new(u64::MAX))
        .collect();
    let done = AtomicU64::new(0);
    let failing_seen = AtomicUsize::new(0);
    let bar = plan.progress_bar.then(|| {
        let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} runs, eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb
    });
    let jobs = (plan.jobs.max(1) as u64).min(total.max(1)) as usize;
    // Workers still running; the last one to stop (or unwind) wakes the
    // main thread, which otherwise sleeps until its next progress line.
    let running = AtomicUsize::new(jobs);
    let main = std::thread::current();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let _stopping = Stopping {
                        running: &running,
                        main: &main,
                    };
                    loop {
                        if plan.time_budget.is_some_and(|b| clock.secs() > b) {
                            out_of_time.store(true, Ordering::Relaxed);
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        let (si, j) = ((i % scenarios) as usize, i / scenarios);
                        let seed = seeds.nth(j);
                        let result = (seed <= cut[si].load(Ordering::Relaxed)).then(|| {
                            let spec = RunSpec {
                                scenario: &plan.scenarios[si],
                                mutant: plan.mutant,
                                seed,
                                choices: None,
                            };
                            // Neither decisions nor a digest: a failing
                            // seed is run again, logging and digesting, to
                            // write its seed file.
                            let opts = RunOptions {
                                skip_decisions: true,
                                skip_digest: true,
                                ..RunOptions::default()
                            };
                            let o = run_spec(&spec, opts);
                            if o.violation.is_some() {
                                let n = failing_seen.fetch_add(1, Ordering::Relaxed) + 1;
                                if let Some(b) = &bar {
                                    b.set_message(format!("{n} failing"));
                                }
                            }
                            SeedResult {
                                events: o.events,
                                faults: o.faults,
                                violation: o.violation,
                                coverage: o.coverage,
                                counters: o.counters,
                            }
                        });
                        {
                            let mut p = progress[si].lock().expect("not poisoned");
                            p.complete(j, seed, result, plan.max_failures);
                            p.fold(&seeds, false);
                            cut[si].fetch_min(p.cut, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                        if let Some(b) = &bar {
                            b.inc(1);
                        }
                    }
                })
            })
            .collect();
        if plan.progress_lines {
            let mut last = clock.secs();
            while running.load(Ordering::Acquire) > 0 {
                let wait = (last + PROGRESS_EVERY_SECS - clock.secs()).max(0.0);
                std::thread::park_timeout(Duration::from_secs_f64(wait));
                if clock.secs() - last >= PROGRESS_EVERY_SECS {
                    last = clock.secs();
                    eprintln!(
                        "{}: {}/{} runs, {} failing, {:.0}s",
                        plan.origin,
                        done.load(Ordering::Relaxed),
                        total,
                        failing_seen.load(Ordering::Relaxed),
                        last
                    );
                }
            }
        }
        for w in workers {
            w.join().expect("sweep worker panicked");
        }
    });
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let complete = !out_of_time.load(Ordering::Relaxed);
    let mut per = Vec::with_capacity(plan.scenarios.len());
    let mut failing: Vec<(usize, u64)> = Vec::new();
    for (si, p) in progress.into_iter().enumerate() {
        let mut p = p.into_inner().expect("not poisoned");
        p.fold(&seeds, true);
        failing.extend(p.failing.iter().filter(|s| **s <= p.cut).map(|s| (si, *s)));
        per.push(p.tally);
    }
    failing.sort();
    let mut failures = Vec::new();
    for (si, seed) in failing {
        failures.push(write_failure(plan, si, seed)?);
    }
    let mut total = Tally::default();
    for t in &per {
        total.merge(t);
    }
    Ok(SweepReport {
        per_scenario: plan
            .scenarios
            .iter()
            .zip(per)
            .map(|(s, t)| (s.name.clone(), s.protocol().name, t))
            .collect(),
        total,
        failures,
        complete,
    })
}

/// Re-runs a failing seed, shrinks it within the plan's budget and writes
/// its seed file.
fn write_failure(plan: &Plan, si: usize, seed: u64) -> Result<FoundFailure, Failure> {
    let scenario = &plan.scenarios[si];
    let spec = RunSpec {
        scenario,
        mutant: plan.mutant,
        seed,
        choices: None,
    };
    let outcome = run_spec(&spec, RunOptions::default());
    if outcome.violation.is_none() {
        return Err(usage(format!(
            "{} seed {seed} failed once and then passed: the run is not deterministic",
            scenario.name
        )));
    }
    let path = failure_path(&plan.out, &scenario.name, plan.mutant, seed);
    let origin = format!("{} seed {seed}", plan.origin);
    let written = shrink_and_write(&spec, &outcome, plan.shrink_budget, &path, &origin)?;
    Ok(FoundFailure {
        scenario: scenario.name.clone(),
        seed,
        violation: written.violation.clone(),
        file: path,
        written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(start: u64, count: u64, shard: Option<Shard>) -> Plan {
        Plan {
            scenarios: Vec::new(),
            mutant: None,
            start,
            count,
            shard,
            jobs: 1,
            time_budget: None,
            max_failures: 1,
            out: PathBuf::new(),
            progress_bar: false,
            progress_lines: false,
            origin: String::new(),
            shrink_budget: 0.0,
        }
    }

    #[test]
    fn a_sweep_printing_progress_lines_ends_when_its_workers_do() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sim-scenarios/locks-contended.toml");
        let mut p = plan(0, 6, None);
        p.scenarios = vec![Scenario::from_file(&path).expect("a scenario")];
        p.jobs = 2;
        p.progress_lines = true;
        let t = Stopwatch::start();
        let report = execute(&p).expect("a sweep");
        assert_eq!(report.total.seeds, 6);
        // Woken by its last worker, not by the next progress line.
        assert!(
            t.secs() < PROGRESS_EVERY_SECS / 2.0,
            "{:.1}s for six seeds",
            t.secs()
        );
    }

    #[test]
    fn lazy_seeds_are_exactly_the_sharded_range() {
        for start in 0..12 {
            for count in 0..15 {
                for n in 1..5 {
                    for k in 1..=n {
                        let sh = Shard { k, n };
                        let s = Seeds::of(&plan(start, count, Some(sh)));
                        let lazy: Vec<u64> = (0..s.count).map(|j| s.nth(j)).collect();
                        let filtered: Vec<u64> =
                            (start..start + count).filter(|x| sh.owns(*x)).collect();
                        assert_eq!(lazy, filtered, "start {start} count {count} shard {k}/{n}");
                    }
                }
                let s = Seeds::of(&plan(start, count, None));
                assert_eq!(s.count, count);
            }
        }
    }

    #[test]
    fn shard_syntax() {
        assert_eq!(parse_shard("2/3"), Ok(Shard { k: 2, n: 3 }));
        assert!(parse_shard("0/3").is_err());
        assert!(parse_shard("4/3").is_err());
        assert!(parse_shard("3").is_err());
    }
}
