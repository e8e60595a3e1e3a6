//! `simcast`: the command-line front end of the simulator.
//!
//! Commands, flags, `--json` output and exit codes are a contract (see
//! DESIGN.md section 4): `0` all checks held, `1` an invariant was violated
//! or a replay diverged, `2` bad input or usage, with a message on stderr.

mod alloc;
mod bench;
mod common;
mod explore;
mod failure;
mod html;
mod list;
mod nightly;
mod replay;
mod shrink;
mod sim;
mod sweep;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::Failure;

/// Deterministic simulation and model checking for broadcast and
/// replication protocols.
#[derive(Parser, Debug)]
#[command(name = "simcast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one seed of one scenario.
    Sim(sim::SimArgs),
    /// Run many seeds over scenarios (default: every default scenario), on
    /// all cores; write a seed file for each failure.
    Sweep(sweep::SweepArgs),
    /// Re-run a seed file; check its digest and its verdict.
    Replay(replay::ReplayArgs),
    /// Minimize a failing seed file's decisions, keeping the same violated
    /// invariant.
    Shrink(shrink::ShrinkArgs),
    /// List scenarios, invariants, mutants and fault kinds.
    List(list::ListArgs),
    /// Explore every run of a small configuration within bounds (model
    /// checking on the simulator's engine).
    Explore(explore::ExploreArgs),
    /// Throughput figures: events/s and seeds/s on one core and on all
    /// cores, states/s, allocations per event, peak memory; each compared
    /// with a baseline.
    Bench(bench::BenchArgs),
    /// The nightly job: sweep every default scenario with fresh seeds for a
    /// time budget; shrink failures; write a report.
    Nightly(nightly::NightlyArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are not errors; everything else is usage (2).
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Sim(a) => sim::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Shrink(a) => shrink::run(a),
        Command::List(a) => list::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Explore(a) => explore::run(a),
        Command::Nightly(a) => nightly::run(a),
    };
    match result {
        Ok(code) => code.into(),
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
