//! `simcast nightly`: what the nightly CI job runs.
//!
//! Sweeps every default scenario with fresh seeds (derived from the UTC
//! date unless `--start` is given, so each night explores new seeds and a
//! night's seeds can be re-run), shrinks failures, writes their seed files,
//! a JSON summary and a Markdown report, and exits 1 if anything failed.
//! `--shard K/N` splits the seeds between N workers.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::common::{
    Failure, ScenarioDir, Stopwatch, Verdict, print_json, stdout_is_terminal, usage,
};
use crate::outln;
use crate::sweep::{Plan, Shard, SweepReport, coverage, execute, parse_shard, report_json, select};

/// Seeds reserved per night: consecutive nights never overlap.
pub const SEEDS_PER_NIGHT: u64 = 1_000_000_000;

/// Arguments of `simcast nightly`.
#[derive(Args, Debug)]
pub struct NightlyArgs {
    /// Stop starting new seeds after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    time_budget: f64,
    /// Run only shard K of N (the seeds s with s % N == K - 1).
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// First seed [default: days since 1970-01-01 (UTC) x 10^9].
    #[arg(long, value_name = "S")]
    start: Option<u64>,
    /// Seeds to plan (the time budget usually ends the run first).
    #[arg(long, value_name = "N", default_value_t = SEEDS_PER_NIGHT)]
    seeds: u64,
    /// Run with this mutant (to check that the job catches it).
    #[arg(long, value_name = "M")]
    mutant: Option<String>,
    /// Worker threads [default: all cores].
    #[arg(long, value_name = "J")]
    jobs: Option<usize>,
    /// Where the report, the summary and the failures' seed files go.
    #[arg(long, value_name = "DIR", default_value = "target/simcast/nightly")]
    out: PathBuf,
    /// Seconds spent shrinking each failure.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    shrink_budget: f64,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// Days since the Unix epoch, UTC (the CLI may read the wall clock; the
/// simulator never does).
fn today() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

/// `YYYY-MM-DD` of a day number (civil-from-days, proleptic Gregorian).
fn date_of(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Runs `simcast nightly`.
pub fn run(a: NightlyArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    if a.time_budget.is_nan() || a.time_budget <= 0.0 {
        return Err(usage("--time-budget must be a positive number of seconds"));
    }
    if a.shrink_budget.is_nan() || a.shrink_budget < 0.0 {
        return Err(usage(
            "--shrink-budget must be a number of seconds, 0 or more",
        ));
    }
    if a.jobs == Some(0) {
        return Err(usage("--jobs must be at least 1"));
    }
    let day = today();
    let start = a.start.unwrap_or(day.saturating_mul(SEEDS_PER_NIGHT));
    let (scenarios, mutant) = select(&a.dir, &[], a.mutant.as_deref())?;
    let suffix = a
        .shard
        .map(|s| format!("-{}-of-{}", s.k, s.n))
        .unwrap_or_default();
    let plan = Plan {
        scenarios,
        mutant,
        start,
        count: a.seeds,
        shard: a.shard,
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        time_budget: Some(a.time_budget),
        max_failures: 1,
        out: a.out.join("failures"),
        progress_bar: stdout_is_terminal() && !a.json,
        progress_lines: !stdout_is_terminal(),
        origin: format!("simcast nightly {}{suffix}", date_of(day)),
        shrink_budget: a.shrink_budget,
    };
    let report = execute(&plan)?;
    let wall_ms = clock.ms();
    let mut summary = report_json("nightly", &plan, &report, wall_ms);
    summary["date"] = date_of(day).into();
    let summary_path = a.out.join(format!("summary{suffix}.json"));
    let report_path = a.out.join(format!("report{suffix}.md"));
    std::fs::create_dir_all(&a.out)
        .map_err(|e| usage(format!("{}: cannot create: {e}", a.out.display())))?;
    summary["summary"] = summary_path.display().to_string().into();
    summary["report"] = report_path.display().to_string().into();
    let mut text = serde_json::to_string_pretty(&summary).expect("json");
    text.push('\n');
    std::fs::write(&summary_path, text)
        .map_err(|e| usage(format!("{}: cannot write: {e}", summary_path.display())))?;
    std::fs::write(
        &report_path,
        markdown(&plan, &report, &date_of(day), wall_ms),
    )
    .map_err(|e| usage(format!("{}: cannot write: {e}", report_path.display())))?;
    if a.json {
        print_json(&summary);
    } else {
        outln!(
            "nightly {}{}: {} seeds, {} events, {} failures in {:.0}s",
            date_of(day),
            suffix,
            report.total.seeds,
            report.total.events,
            report.failures.len(),
            wall_ms as f64 / 1000.0
        );
        for f in &report.failures {
            outln!(
                "FAIL {} seed {}: {} -> {}",
                f.scenario,
                f.seed,
                f.violation.invariant,
                f.file.display()
            );
        }
        outln!("report: {}", report_path.display());
        outln!("summary: {}", summary_path.display());
    }
    Ok(if report.failures.is_empty() {
        Verdict::Held
    } else {
        Verdict::Violated
    })
}

fn markdown(plan: &Plan, report: &SweepReport, date: &str, wall_ms: u64) -> String {
    let mut md = String::new();
    let shard = plan
        .shard
        .map_or("all seeds".to_owned(), |s| format!("shard {}/{}", s.k, s.n));
    let verdict = if report.failures.is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(md, "# simcast nightly {date}: {verdict}\n");
    let _ = writeln!(
        md,
        "Seeds from {} ({shard}), {} seeds and {} events in {:.0} s{}.{}\n",
        plan.start,
        report.total.seeds,
        report.total.events,
        wall_ms as f64 / 1000.0,
        if report.complete {
            ""
        } else {
            ", stopped by the time budget"
        },
        plan.mutant
            .map(|m| format!(" Mutant: `{}`.", m.name))
            .unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| scenario | protocol | seeds | events | failures | faults |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---|");
    for (name, protocol, t) in &report.per_scenario {
        let faults: Vec<String> = t
            .faults
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(
            md,
            "| {name} | {protocol} | {} | {} | {} | {} |",
            t.seeds,
            t.events,
            t.failures,
            faults.join(" ")
        );
    }
    let _ = writeln!(md, "\n## Transition coverage\n");
    for c in coverage(report) {
        let _ = writeln!(
            md,
            "- **{}**: {}/{} transitions reached",
            c.protocol, c.covered, c.total
        );
        for u in &c.unreached {
            let _ = writeln!(md, "  - not reached: {u}");
        }
    }
    if report.failures.is_empty() {
        let _ = writeln!(md, "\nNo invariant was violated.");
        return md;
    }
    let _ = writeln!(md, "\n## Failures\n");
    for f in &report.failures {
        let file = f.file.display();
        let stem = f
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "### {} seed {}: `{}`\n\n{}\n\nAt step {} ({}). Shrunk from {} to {} choices, {} to {} events.\n",
            f.scenario,
            f.seed,
            f.violation.invariant,
            f.violation.message,
            f.violation.step,
            f.violation.time,
            f.written.choices_before,
            f.written.choices_after,
            f.written.events_before,
            f.written.events_after,
        );
        let _ = writeln!(md, "```sh");
        let _ = writeln!(md, "cargo xtask replay {file} --trace       # see it");
        let _ = writeln!(md, "cp {file} tests/regressions/{stem}  # pin it forever");
        let _ = writeln!(md, "```\n");
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc_dates() {
        assert_eq!(date_of(0), "1970-01-01");
        assert_eq!(date_of(19_000), "2022-01-08");
        assert_eq!(date_of(20_781), "2026-11-24");
        assert_eq!(date_of(11_016), "2000-02-29");
    }
}
