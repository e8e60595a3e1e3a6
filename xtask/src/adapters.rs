//! `cargo xtask madsim` and `cargo xtask loom`: the adapters' simulation
//! and model checks, each built with its own `RUSTFLAGS` in its own target
//! directory (`target/madsim`, `target/loom`) so the normal build is never
//! invalidated.
//!
//! Exit codes: `0` every check held, `1` a check failed (a madsim seed, a
//! loom model), `2` bad usage or a build failure.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub const USAGE: &str =
    "  madsim   the adapters under madsim: kills, loss, partitions; exactly-once and order
           [--seeds N] [--start S] [--seed N] [--mutant ack-before-fsync|store-no-dedup]
           [--jobs J] [--keep-going] [--check-determinism]
  loom     loom models of the lock service and the actor mailbox
           [--max-preemptions N] [--flaw notify-before-grant|notify-one]
";

/// The target directory of a configuration (`madsim`, `loom`).
pub(crate) fn target_dir(root: &Path, name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(name)
}

/// `RUSTFLAGS` plus `--cfg CFG`.
pub(crate) fn rustflags(cfg: &str) -> String {
    match std::env::var("RUSTFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} --cfg {cfg}"),
        _ => format!("--cfg {cfg}"),
    }
}

/// `cargo test -p simcast-adapters --test NAME` with the configuration's
/// flags and target directory: built first (a build failure is exit 2), then
/// run (a failure is exit 1).
fn cargo_test(
    root: &Path,
    cfg: &str,
    test: &str,
    release: bool,
    env: &[(String, String)],
    filter: &[&str],
) -> ExitCode {
    let target = target_dir(root, cfg);
    let mut base = Command::new(super::cargo());
    base.current_dir(root)
        .env("RUSTFLAGS", rustflags(cfg))
        .env("CARGO_TARGET_DIR", &target)
        .args(["test", "--locked", "-p", "simcast-adapters", "--test", test]);
    if release {
        base.arg("--release");
    }
    let build = Command::new(super::cargo())
        .current_dir(root)
        .env("RUSTFLAGS", rustflags(cfg))
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "test",
            "--locked",
            "-p",
            "simcast-adapters",
            "--test",
            test,
            "--no-run",
        ])
        .args(if release { &["--release"][..] } else { &[][..] })
        .status();
    match build {
        Ok(s) if s.success() => {}
        Ok(_) => {
            eprintln!("error: building the {cfg} checks failed");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            return ExitCode::from(2);
        }
    }
    base.arg("--").args(filter).arg("--nocapture");
    for (k, v) in env {
        base.env(k, v);
    }
    match base.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            ExitCode::from(2)
        }
    }
}

fn value<'a>(
    args: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<&'a String, String> {
    args.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn number(v: &str, flag: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{flag}: `{v}` is not a number"))
}

const MUTANTS: &[&str] = &["ack-before-fsync", "store-no-dedup"];
const FLAWS: &[&str] = &["notify-before-grant", "notify-one"];

/// `cargo xtask madsim ...`
pub fn madsim(root: &Path, args: &[String]) -> ExitCode {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut mutant = None;
    let mut seed = None;
    let parsed: Result<(), String> = (|| {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--seeds" => {
                    let v = value(&mut it, a)?;
                    number(v, a)?;
                    env.push(("SIMCAST_MADSIM_SEEDS".into(), v.clone()));
                }
                "--start" => {
                    let v = value(&mut it, a)?;
                    number(v, a)?;
                    env.push(("SIMCAST_MADSIM_START".into(), v.clone()));
                }
                "--seed" => {
                    let v = value(&mut it, a)?;
                    number(v, a)?;
                    seed = Some(v.clone());
                    env.push(("MADSIM_TEST_SEED".into(), v.clone()));
                }
                "--jobs" => {
                    let v = value(&mut it, a)?;
                    number(v, a)?;
                    env.push(("SIMCAST_MADSIM_JOBS".into(), v.clone()));
                }
                "--mutant" => {
                    let v = value(&mut it, a)?;
                    if !MUTANTS.contains(&v.as_str()) {
                        return Err(format!(
                            "unknown mutant `{v}`; known: {}",
                            MUTANTS.join(", ")
                        ));
                    }
                    mutant = Some(v.clone());
                    env.push(("SIMCAST_MADSIM_MUTANT".into(), v.clone()));
                }
                "--keep-going" => env.push(("SIMCAST_MADSIM_KEEP_GOING".into(), "1".into())),
                "--check-determinism" => {
                    env.push(("SIMCAST_MADSIM_CHECK_DETERMINISM".into(), "1".into()))
                }
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("error: {e}\n\nusage: cargo xtask madsim ...\n{USAGE}");
        return ExitCode::from(2);
    }
    // A stray MADSIM_TEST_SEED in the environment would pin every run.
    if seed.is_none() {
        env.push(("MADSIM_TEST_SEED".into(), String::new()));
    }
    let code = cargo_test(root, "madsim", "madsim", false, &env, &[]);
    // 1: a run failed (its seeds are printed); 2: nothing ran (a build or
    // cargo error, reported as such).
    if code == ExitCode::from(1) {
        let m = mutant.map(|m| format!(" --mutant {m}")).unwrap_or_default();
        eprintln!(
            "madsim: FAILED; the failing seeds are printed above, each with its replay command (cargo xtask madsim --seed N{m})"
        );
    }
    code
}

/// `cargo xtask loom ...`
pub fn loom(root: &Path, args: &[String]) -> ExitCode {
    let mut preemptions = "3".to_owned();
    let mut flaw = None;
    let parsed: Result<(), String> = (|| {
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--max-preemptions" => {
                    let v = value(&mut it, a)?;
                    number(v, a)?;
                    preemptions = v.clone();
                }
                "--flaw" => {
                    let v = value(&mut it, a)?;
                    if !FLAWS.contains(&v.as_str()) {
                        return Err(format!("unknown flaw `{v}`; known: {}", FLAWS.join(", ")));
                    }
                    flaw = Some(v.clone());
                }
                other => return Err(format!("unknown flag `{other}`")),
            }
        }
        Ok(())
    })();
    if let Err(e) = parsed {
        eprintln!("error: {e}\n\nusage: cargo xtask loom ...\n{USAGE}");
        return ExitCode::from(2);
    }
    let mut env = vec![("LOOM_MAX_PREEMPTIONS".to_owned(), preemptions)];
    let filter: Vec<&str> = match &flaw {
        // Only the flawed model: loom must fail it (exit 1).
        Some(f) => {
            env.push(("SIMCAST_LOOM_FLAW".into(), f.clone()));
            vec!["--exact", "lock_service_flaw_model"]
        }
        None => {
            env.push(("SIMCAST_LOOM_FLAW".into(), String::new()));
            Vec::new()
        }
    };
    let code = cargo_test(root, "loom", "loom", true, &env, &filter);
    if let Some(f) = flaw {
        if code == ExitCode::from(1) {
            eprintln!("loom: the `{f}` lock service failed its model, as it should");
        } else if code == ExitCode::SUCCESS {
            eprintln!("loom: the `{f}` lock service passed its model: loom missed the flaw");
        }
    }
    code
}
