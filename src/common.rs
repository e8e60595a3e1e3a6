//! What every command shares: finding scenarios, exit codes, JSON output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;
use serde_json::{Value, json};
use simcast_sim::engine::{Outcome, Violation};
use simcast_sim::registry::MutantInfo;
use simcast_sim::scenario::{Catalog, Scenario};

/// A command's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Held,
    /// An invariant was violated, or a replay diverged.
    Violated,
}

impl From<Verdict> for ExitCode {
    fn from(v: Verdict) -> ExitCode {
        match v {
            Verdict::Held => ExitCode::SUCCESS,
            Verdict::Violated => ExitCode::from(1),
        }
    }
}

/// Why a command could not do its job: bad input or usage (exit 2).
#[derive(Debug)]
pub enum Failure {
    /// A message naming the problem.
    Usage(String),
}

/// Shorthand for a usage failure.
pub fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// Where scenarios come from.
#[derive(Args, Debug, Clone)]
pub struct ScenarioDir {
    /// Directory of scenario files [default: $SIMCAST_SCENARIOS, else the
    /// nearest `sim-scenarios/` above the current directory, else the one in
    /// the source tree].
    #[arg(long = "scenario-dir", value_name = "DIR")]
    pub scenario_dir: Option<PathBuf>,
}

impl ScenarioDir {
    fn dir(&self) -> PathBuf {
        if let Some(d) = &self.scenario_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("SIMCAST_SCENARIOS") {
            return PathBuf::from(d);
        }
        if let Ok(cwd) = std::env::current_dir() {
            for dir in cwd.ancestors() {
                let candidate = dir.join("sim-scenarios");
                if candidate.is_dir() {
                    return candidate;
                }
            }
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sim-scenarios")
    }

    /// Loads every scenario of the directory.
    pub fn catalog(&self) -> Result<Catalog, Failure> {
        Catalog::load(&self.dir()).map_err(|e| usage(e.to_string()))
    }

    /// A scenario by name, or by path to a `.toml` file.
    pub fn scenario(&self, name: &str) -> Result<Scenario, Failure> {
        if name.ends_with(".toml") || name.contains('/') {
            return Scenario::from_file(Path::new(name)).map_err(|e| usage(e.to_string()));
        }
        let catalog = self.catalog()?;
        catalog.get(name).cloned().map_err(|e| usage(e.to_string()))
    }
}

/// Resolves `--mutant` for a scenario, as a usage error if it does not fit.
pub fn mutant_for(
    scenario: &Scenario,
    name: Option<&str>,
) -> Result<Option<&'static MutantInfo>, Failure> {
    simcast_sim::runner::resolve_mutant(scenario, name).map_err(usage)
}

/// Wall-clock stopwatch for `wall_ms` (the CLI's business, never the
/// simulator's).
pub struct Stopwatch(Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Stopwatch {
        Stopwatch(Instant::now())
    }

    /// Milliseconds since start.
    pub fn ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    /// Seconds since start.
    pub fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Writes a line to stdout. A closed pipe (`simcast ... | head`) ends the
/// process quietly instead of panicking.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::common::write_line(format_args!($($arg)*))
    };
}

/// The body of [`outln!`].
pub fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// Prints the one JSON object that ends a `--json` command's output.
pub fn print_json(value: &Value) {
    outln!("{value}");
}

/// A violation as JSON: `{invariant, step, time, message}`; time in virtual
/// microseconds.
pub fn violation_json(v: Option<&Violation>) -> Value {
    match v {
        None => Value::Null,
        Some(v) => json!({
            "invariant": v.invariant,
            "step": v.step,
            "time": v.time.as_micros(),
            "message": v.message,
        }),
    }
}

/// Fault counts as JSON: `{kind: count}`.
pub fn faults_json(o: &Outcome) -> Value {
    json!(o.faults)
}

/// One line summarizing a violation for people.
pub fn show_violation(v: &Violation) -> String {
    format!(
        "{} violated at step {} ({}): {}",
        v.invariant, v.step, v.time, v.message
    )
}

/// Whether stdout is a terminal (progress bars only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// The command that reproduces a seed of a scenario.
pub fn sim_command(scenario: &str, seed: u64, mutant: Option<&MutantInfo>) -> String {
    let mut s = format!("cargo xtask sim --scenario {scenario} --seed {seed}");
    if let Some(m) = mutant {
        s.push_str(&format!(" --mutant {}", m.name));
    }
    s
}
