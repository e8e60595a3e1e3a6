//! `cargo xtask ...`: the front door.
//!
//! Simulator commands (`sim`, `sweep`, `replay`, `list`, `bench`, ...) are
//! forwarded, arguments untouched, to the `simcast` binary built in release
//! mode; its stdout, stderr and exit code pass through, so the `--json` last
//! line and the exit codes of DESIGN.md hold for `cargo xtask` too. `ci`
//! runs `.ci/run`; `madsim` and `loom` run the adapters' checks
//! (`adapters.rs`); `bench` measures the madsim workload first and passes
//! its figures on (`bench.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod adapters;
mod bench;

/// Commands the `simcast` binary implements.
const FORWARDED: &[(&str, &str)] = &[
    ("sim", "run one seed of one scenario"),
    (
        "sweep",
        "run many seeds over scenarios; failures become seed files",
    ),
    ("replay", "re-run a seed file; check its digest and verdict"),
    ("shrink", "minimize a failing seed file's decisions"),
    (
        "explore",
        "explore every run of a small configuration within bounds",
    ),
    (
        "nightly",
        "the nightly job: fresh seeds for a time budget, a report",
    ),
    (
        "list",
        "list scenarios, invariants, mutants, fault kinds and sites",
    ),
    (
        "bench",
        "throughput, scaling, allocations, memory and madsim figures vs bench/baseline.json",
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "usage: cargo xtask <command> [args...]\n\ncommands (forwarded to the release `simcast` binary; `<command> --help` for flags):\n",
    );
    for (name, what) in FORWARDED {
        s.push_str(&format!("  {name:<8} {what}\n"));
    }
    s.push_str("  ci       run .ci/run (format, lints, tests)\n");
    s.push_str(adapters::USAGE);
    s
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn exit_of(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(2)),
        // Killed by a signal.
        None => ExitCode::from(2),
    }
}

fn forward(args: &[String]) -> ExitCode {
    let root = workspace_root();
    let build = Command::new(cargo())
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "simcast",
            "--bin",
            "simcast",
        ])
        .current_dir(&root)
        .status();
    match build {
        Ok(s) if s.success() => {}
        Ok(_) => {
            eprintln!("error: building simcast failed");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            return ExitCode::from(2);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("release").join("simcast");
    match Command::new(&bin).args(args).status() {
        Ok(s) => exit_of(s),
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", bin.display());
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first().map(String::as_str) else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    match command {
        "-h" | "--help" | "help" => {
            print!("{}", usage());
            ExitCode::SUCCESS
        }
        "ci" => match Command::new("bash")
            .arg(workspace_root().join(".ci/run"))
            .current_dir(workspace_root())
            .status()
        {
            Ok(s) => exit_of(s),
            Err(e) => {
                eprintln!("error: cannot run .ci/run: {e}");
                ExitCode::from(2)
            }
        },
        "madsim" => adapters::madsim(&workspace_root(), &args[1..]),
        "loom" => adapters::loom(&workspace_root(), &args[1..]),
        "bench" => bench::bench(&workspace_root(), &args),
        c if FORWARDED.iter().any(|(name, _)| *name == c) => forward(&args),
        other => {
            eprintln!("error: unknown command `{other}`\n\n{}", usage());
            ExitCode::from(2)
        }
    }
}
