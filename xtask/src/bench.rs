//! `cargo xtask bench`: the madsim workload's throughput, then the release
//! `simcast bench` with those figures.
//!
//! The madsim workload (`crates/adapters/tests/madsim.rs`) is built in
//! release with `--cfg madsim` in its own target directory (as `cargo xtask
//! madsim` builds it, so the normal build is never invalidated) and run in
//! its measuring mode, which writes its figures to
//! `target/simcast/bench/madsim.json`; that file is passed on as
//! `--madsim-figures`. If it cannot be built or run, `simcast bench` runs
//! anyway and is told why (`--madsim-missing`), and says so. `--quick`
//! skips madsim (and says so); `--help` and explicit `--madsim-*` flags are
//! passed through untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use crate::adapters::{rustflags, target_dir};

/// Seeds of the madsim workload per repetition.
const MADSIM_SEEDS: u64 = 200;
/// Measured repetitions of the madsim workload (after a warm-up).
const MADSIM_REPEAT: u64 = 5;

/// `cargo xtask bench ...` (`args` starts with `bench`).
pub fn bench(root: &Path, args: &[String]) -> ExitCode {
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    let mut forwarded = args.to_vec();
    if !(has("--help") || has("-h") || has("--madsim-figures") || has("--madsim-missing")) {
        let extra = if has("--quick") {
            eprintln!("bench: --quick: the madsim workload is skipped");
            [
                "--madsim-missing".to_owned(),
                "skipped under --quick".to_owned(),
            ]
        } else {
            match madsim_figures(root) {
                Ok(file) => ["--madsim-figures".to_owned(), file.display().to_string()],
                Err(reason) => {
                    eprintln!("bench: madsim figures missing: {reason}");
                    ["--madsim-missing".to_owned(), reason]
                }
            }
        };
        forwarded.extend(extra);
    }
    super::forward(&forwarded)
}

/// Builds and runs the madsim workload in its measuring mode; the file of
/// figures it wrote, or why there is none.
fn madsim_figures(root: &Path) -> Result<PathBuf, String> {
    let target = target_dir(root, "madsim");
    let test = |extra: &[&str]| {
        let mut c = Command::new(super::cargo());
        c.current_dir(root)
            .env("RUSTFLAGS", rustflags("madsim"))
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "test",
                "--locked",
                "--release",
                "-p",
                "simcast-adapters",
                "--test",
                "madsim",
            ])
            .args(extra);
        c
    };
    eprintln!(
        "bench: building the madsim workload (release, --cfg madsim, in {})",
        target.display()
    );
    match test(&["--no-run"]).status() {
        Ok(s) if s.success() => {}
        Ok(s) => return Err(format!("building the madsim workload failed ({s})")),
        Err(e) => return Err(format!("cannot run cargo: {e}")),
    }
    let dir = root.join("target").join("simcast").join("bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join("madsim.json");
    // A stale file from an earlier run must not pass for this one's.
    match std::fs::remove_file(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot remove {}: {e}", file.display())),
    }
    eprintln!(
        "bench: running the madsim workload: {MADSIM_SEEDS} seeds x {MADSIM_REPEAT} repetitions, one thread"
    );
    // Its report goes to stderr: stdout is `simcast bench`'s, whose last
    // line is the JSON object under --json.
    let status = test(&["--", "--nocapture"])
        .env("SIMCAST_MADSIM_FIGURES", &file)
        .env("SIMCAST_MADSIM_SEEDS", MADSIM_SEEDS.to_string())
        .env("SIMCAST_MADSIM_START", "0")
        .env("SIMCAST_MADSIM_REPEAT", MADSIM_REPEAT.to_string())
        .env("SIMCAST_MADSIM_MUTANT", "")
        .env("MADSIM_TEST_SEED", "")
        .stdout(Stdio::from(std::io::stderr()))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return Err(format!(
                "the madsim workload failed ({s}); its output is above"
            ));
        }
        Err(e) => return Err(format!("cannot run cargo: {e}")),
    }
    if !file.is_file() {
        return Err(format!("the madsim workload wrote no {}", file.display()));
    }
    Ok(file)
}
