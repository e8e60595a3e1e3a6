//! The command contract, end to end: names, flags, `--json` last lines and
//! exit codes (0 held, 1 violated or diverged, 2 bad input).

mod support;

use std::fs;

use serde_json::Value;
use simcast_sim::scenario::Catalog;
use support::{code, fixture, last_json, simcast, simcast_in, stderr, stdout};

const LOCKS_SCENARIOS: [&str; 2] = ["locks-contended", "locks-wide"];
/// The locks mutants and the invariants that must catch them.
const LOCKS_MUTANTS: [(&str, &str); 3] = [
    ("ignore-earlier-waiters", "locks.fifo"),
    ("shared-in-identity", "locks.exclusion"),
    ("lost-wakeup", "locks.eventually_granted"),
];

#[test]
fn help_is_available_for_every_command() {
    for cmd in ["sim", "sweep", "replay", "list", "bench"] {
        let o = simcast(&[cmd, "--help"]);
        assert_eq!(code(&o), 0, "{cmd} --help");
        assert!(
            stdout(&o).contains("Usage:"),
            "{cmd} --help: {}",
            stdout(&o)
        );
    }
    let o = simcast(&["no-such-command"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn list_json_names_scenarios_invariants_and_mutants() {
    let o = simcast(&["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = last_json(&o);
    assert_eq!(j["command"], "list");
    let names = |key: &str| -> Vec<String> {
        j[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for s in LOCKS_SCENARIOS {
        assert!(names("scenarios").contains(&s.to_owned()), "{s}");
    }
    for (m, inv) in LOCKS_MUTANTS {
        let entry = j["mutants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == m)
            .unwrap_or_else(|| panic!("mutant {m} listed"));
        assert_eq!(entry["invariant"], inv);
        assert_eq!(entry["protocol"], "locks");
    }
    let kinds: Vec<(&str, &str)> = j["invariants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap(), i["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("locks.exclusion", "safety")));
    assert!(kinds.contains(&("locks.eventually_granted", "liveness")));
}

#[test]
fn sim_prints_the_same_digest_in_two_processes() {
    for (scenario, _) in default_scenarios() {
        let scenario = scenario.as_str();
        let a = last_json(&simcast(&[
            "sim",
            "--scenario",
            scenario,
            "--seed",
            "42",
            "--json",
        ]));
        let b = last_json(&simcast(&[
            "sim",
            "--scenario",
            scenario,
            "--seed",
            "42",
            "--json",
        ]));
        assert_eq!(a["digest"], b["digest"], "{scenario}");
        assert_eq!(a["events"], b["events"]);
        assert!(a["events"].as_u64().unwrap() > 100, "a real run: {a}");
        let other = last_json(&simcast(&[
            "sim",
            "--scenario",
            scenario,
            "--seed",
            "43",
            "--json",
        ]));
        assert_ne!(
            a["digest"], other["digest"],
            "different seeds, different runs"
        );
    }
}

#[test]
fn sim_json_has_the_contract_fields() {
    let o = simcast(&[
        "sim",
        "--scenario",
        "locks-contended",
        "--seed",
        "5",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = last_json(&o);
    for field in [
        "command",
        "wall_ms",
        "scenario",
        "seed",
        "mutant",
        "events",
        "digest",
        "violation",
        "faults",
    ] {
        assert!(j.get(field).is_some(), "missing {field}: {j}");
    }
    assert_eq!(j["command"], "sim");
    assert_eq!(j["violation"], Value::Null);
    assert_eq!(j["digest"].as_str().unwrap().len(), 16);
}

#[test]
fn sim_check_determinism_reports_identical_runs() {
    let o = simcast(&[
        "sim",
        "--scenario",
        "locks-contended",
        "--seed",
        "9",
        "--check-determinism",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let j = last_json(&o);
    assert_eq!(j["deterministic"], true);
    assert_eq!(j["divergence"], Value::Null);
}

/// Every default scenario, with the fault kinds its profile turns on.
fn default_scenarios() -> Vec<(String, Vec<String>)> {
    let catalog = Catalog::load(&support::root().join("sim-scenarios")).expect("scenarios parse");
    catalog
        .defaults(None)
        .into_iter()
        .map(|s| {
            let on = s
                .faults
                .rates
                .iter()
                .filter(|(_, p)| **p > 0.0)
                .map(|(k, _)| k.clone())
                .collect();
            (s.name.clone(), on)
        })
        .collect()
}

#[test]
fn clean_sweep_of_each_default_scenario_exits_zero_and_injects_every_enabled_fault() {
    for (scenario, kinds) in default_scenarios() {
        let out = tempfile::tempdir().unwrap();
        let o = simcast(&[
            "sweep",
            "--scenario",
            &scenario,
            "--seeds",
            "120",
            "--out",
            out.path().to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code(&o), 0, "{scenario}: {}", stdout(&o));
        let j = last_json(&o);
        assert_eq!(j["command"], "sweep");
        assert_eq!(j["seeds"], 120);
        assert_eq!(j["failures"], 0);
        assert_eq!(j["failure_files"], serde_json::json!([]));
        for kind in kinds {
            assert!(
                j["faults"][&kind].as_u64().unwrap() > 0,
                "{scenario}: no {kind} fault injected: {}",
                j["faults"]
            );
        }
        assert!(
            fs::read_dir(out.path()).unwrap().next().is_none(),
            "no files written"
        );
    }
}

#[test]
fn every_mutant_is_caught_and_its_seed_file_replays_bit_exactly() {
    let list = last_json(&simcast(&["list", "--json"]));
    let mutants = list["mutants"].as_array().unwrap();
    assert!(mutants.len() >= LOCKS_MUTANTS.len() + 5);
    for m in mutants {
        let mutant = m["name"].as_str().unwrap();
        let invariant = m["invariant"].as_str().unwrap();
        let out = tempfile::tempdir().unwrap();
        let o = simcast(&[
            "sweep",
            "--mutant",
            mutant,
            "--seeds",
            "2000",
            "--shrink-budget",
            "2",
            "--out",
            out.path().to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(code(&o), 1, "{mutant} not caught: {}", stdout(&o));
        let j = last_json(&o);
        assert!(
            j["violations"][invariant].as_u64().unwrap_or(0) >= 1,
            "{mutant}: {j}"
        );
        let files = j["failure_files"].as_array().unwrap();
        assert!(!files.is_empty());
        for f in files {
            let f = f.as_str().unwrap();
            let stored: Value = serde_json::from_str(&fs::read_to_string(f).unwrap()).unwrap();
            let r = simcast(&["replay", f, "--json"]);
            assert_eq!(code(&r), 1, "replay of {f}: {}", stdout(&r));
            let rj = last_json(&r);
            assert_eq!(rj["diverged"], false, "{rj}");
            assert_eq!(rj["digest"], stored["digest"]);
            assert_eq!(
                rj["violation"]["invariant"],
                stored["violation"]["invariant"]
            );
            assert_eq!(rj["violation"]["step"], stored["violation"]["step"]);
            assert_eq!(rj["violation"]["time"], stored["violation"]["time"]);
            assert_eq!(stored["mutant"], mutant);
            // The written file is shrunk; the original seed through `sim`
            // still fails the same way.
            let sim = last_json(&simcast(&[
                "sim",
                "--scenario",
                stored["scenario"]["name"].as_str().unwrap(),
                "--seed",
                &stored["seed"].to_string(),
                "--mutant",
                mutant,
                "--json",
            ]));
            assert_eq!(
                sim["violation"]["invariant"],
                stored["violation"]["invariant"]
            );
        }
    }
}

#[test]
fn a_mutant_of_another_protocol_is_exit_2() {
    let o = simcast(&[
        "sim",
        "--scenario",
        "locks-contended",
        "--seed",
        "1",
        "--mutant",
        "store-no-dedup",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("belongs to protocol broadcast"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn replay_of_an_edited_choice_sequence_names_the_first_differing_step() {
    let out = tempfile::tempdir().unwrap();
    let o = simcast(&[
        "sweep",
        "--mutant",
        "lost-wakeup",
        "--scenario",
        "locks-contended",
        "--seeds",
        "200",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&o), 1);
    let file = last_json(&o)["failure_files"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seed: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    // Flip a decision late in the run: the replay must follow the recording
    // up to there, then depart.
    let choices = seed["choices"].as_array_mut().unwrap();
    let k = choices.len() * 3 / 4;
    let flipped = if choices[k] == 0 { 1 } else { 0 };
    choices[k] = flipped.into();
    let edited = out.path().join("edited.json");
    fs::write(&edited, serde_json::to_string(&seed).unwrap()).unwrap();
    let r = simcast(&["replay", edited.to_str().unwrap(), "--json"]);
    assert_eq!(code(&r), 1);
    let j = last_json(&r);
    assert_eq!(j["diverged"], true, "{j}");
    let step = j["divergence_step"].as_u64().expect("a step is named");
    assert!(
        step > 0 && step <= seed["events"].as_u64().unwrap(),
        "{step}"
    );
    let text = simcast(&["replay", edited.to_str().unwrap()]);
    assert!(stdout(&text).contains(&format!("departs from the recording at step {step}")));
}

#[test]
fn sweep_totals_do_not_depend_on_the_number_of_jobs() {
    let run = |jobs: &str, mutant: Option<&str>| {
        let out = tempfile::tempdir().unwrap();
        let mut args = vec![
            "sweep",
            "--scenario",
            "locks-contended",
            "--seeds",
            "60",
            "--jobs",
            jobs,
            "--max-failures",
            "3",
            "--out",
            out.path().to_str().unwrap(),
            "--json",
        ];
        if let Some(m) = mutant {
            args.extend(["--mutant", m]);
        }
        let mut j = last_json(&simcast(&args));
        for volatile in [
            "wall_ms",
            "seeds_per_sec",
            "events_per_sec",
            "failure_files",
            "failure_details",
        ] {
            j.as_object_mut().unwrap().remove(volatile);
        }
        j
    };
    assert_eq!(run("1", None), run("2", None));
    assert_eq!(run("1", Some("lost-wakeup")), run("3", Some("lost-wakeup")));
}

#[test]
fn shards_cover_disjoint_seeds_that_add_up_to_the_whole() {
    let seeds = |shard: Option<&str>| {
        let mut args = vec![
            "sweep",
            "--scenario",
            "locks-contended",
            "--seeds",
            "40",
            "--json",
        ];
        if let Some(s) = shard {
            args.extend(["--shard", s]);
        }
        let j = last_json(&simcast(&args));
        (j["seeds"].as_u64().unwrap(), j["events"].as_u64().unwrap())
    };
    let (all, all_events) = seeds(None);
    let (a, ea) = seeds(Some("1/3"));
    let (b, eb) = seeds(Some("2/3"));
    let (c, ec) = seeds(Some("3/3"));
    assert_eq!(a + b + c, all);
    assert_eq!(
        ea + eb + ec,
        all_events,
        "the shards ran exactly the same seeds"
    );
    assert_eq!(code(&simcast(&["sweep", "--shard", "4/3"])), 2);
    assert_eq!(code(&simcast(&["sweep", "--shard", "x"])), 2);
}

#[test]
fn unknown_scenario_is_exit_2_with_the_known_names() {
    let o = simcast(&["sim", "--scenario", "no-such", "--seed", "1"]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(
        e.contains("unknown scenario") && e.contains("locks-contended"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    let o = simcast(&["sweep", "--scenario", "no-such"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn unknown_mutant_is_exit_2_with_the_known_names() {
    let o = simcast(&[
        "sim",
        "--scenario",
        "locks-contended",
        "--seed",
        "1",
        "--mutant",
        "nope",
    ]);
    assert_eq!(code(&o), 2);
    let e = stderr(&o);
    assert!(
        e.contains("unknown mutant `nope`") && e.contains("lost-wakeup"),
        "{e}"
    );
    let o = simcast(&["sweep", "--mutant", "nope"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("unknown mutant `nope`"));
}

#[test]
fn scenario_files_with_unknown_keys_or_bad_values_are_exit_2_naming_the_key() {
    let base = fs::read_to_string(fixture("locks-tiny.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("colour = \"red\"\n", "unknown key `colour`"),
        ("[faults]\nmeteor = 0.5\n", "unknown key `meteor`"),
        ("[workload]\nbogus = 1\n", "unknown field `bogus`"),
        ("[run]\nspeed = 2\n", "unknown field `speed`"),
    ];
    for (i, (edit, needle)) in cases.iter().enumerate() {
        // Put the edit under the right table by appending a fresh copy of it.
        let text = if edit.starts_with('[') {
            let table = edit.lines().next().unwrap();
            let line = edit.lines().nth(1).unwrap();
            base.replacen(table, &format!("{table}\n{line}"), 1)
        } else {
            format!("{edit}{base}")
        };
        let path = dir.path().join(format!("case{i}.toml"));
        fs::write(&path, text).unwrap();
        let o = simcast(&["sim", "--scenario", path.to_str().unwrap(), "--seed", "1"]);
        assert_eq!(code(&o), 2, "case {i}");
        assert!(stderr(&o).contains(needle), "case {i}: {}", stderr(&o));
    }
    let bad_values = [
        ("clients = 2", "clients = 0", "`clients` must be at least 1"),
        (
            "cancel = 0.5",
            "cancel = 1.5",
            "`cancel` must be a probability",
        ),
        (
            "think_ms = [0, 10]",
            "think_ms = [10, 0]",
            "`think_ms` must be [min, max]",
        ),
        (
            "protocol = \"locks\"",
            "protocol = \"paxos\"",
            "unknown protocol `paxos`",
        ),
    ];
    for (i, (from, to, needle)) in bad_values.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        fs::write(&path, base.replace(from, to)).unwrap();
        let o = simcast(&["sim", "--scenario", path.to_str().unwrap(), "--seed", "1"]);
        assert_eq!(code(&o), 2, "{to}");
        assert!(stderr(&o).contains(needle), "{to}: {}", stderr(&o));
    }
    // A broken file in the scenario directory is named, not skipped.
    let only = dir.path().join("only");
    fs::create_dir(&only).unwrap();
    fs::write(only.join("good.toml"), &base).unwrap();
    fs::write(only.join("broken.toml"), "protocol = \n").unwrap();
    let o = simcast(&["list", "--scenario-dir", only.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("broken.toml"), "{}", stderr(&o));
}

#[test]
fn corrupt_seed_files_are_exit_2_naming_the_problem() {
    let out = tempfile::tempdir().unwrap();
    let o = simcast(&[
        "sim",
        "--scenario",
        "locks-contended",
        "--seed",
        "3",
        "--save",
        out.path().join("good.json").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0);
    let good = fs::read_to_string(out.path().join("good.json")).unwrap();
    let r = simcast(&[
        "replay",
        out.path().join("good.json").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&r), 0, "a clean saved run replays clean");
    assert_eq!(last_json(&r)["diverged"], false);

    let edited_scenario = good.replacen("\"rounds\": 25", "\"rounds\": 26", 1);
    assert_ne!(edited_scenario, good);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            good[..good.len() / 2].to_owned(),
            "not a valid seed file",
        ),
        ("not-json", "hello".to_owned(), "not a valid seed file"),
        ("empty", String::new(), "not a valid seed file"),
        (
            "future-format",
            good.replace("simcast-seed/1", "simcast-seed/99"),
            "format `simcast-seed/99` is not supported",
        ),
        (
            "edited-scenario",
            edited_scenario,
            "the file was edited or is corrupt",
        ),
        (
            "bad-digest",
            good.replacen("\"digest\": \"", "\"digest\": \"zz", 1),
            "`digest` is not 16 hex digits",
        ),
        (
            "unknown-field",
            good.replacen("{", "{\n  \"surprise\": 1,", 1),
            "unknown field `surprise`",
        ),
        (
            "bad-mutant",
            good.replacen("\"mutant\": null", "\"mutant\": \"nope\"", 1),
            "unknown mutant `nope`",
        ),
    ];
    for (name, text, needle) in cases {
        let path = out.path().join(format!("{name}.json"));
        fs::write(&path, text).unwrap();
        let o = simcast(&["replay", path.to_str().unwrap(), "--json"]);
        assert_eq!(code(&o), 2, "{name}: {}", stdout(&o));
        let e = stderr(&o);
        assert!(e.contains(needle), "{name}: {e}");
        assert!(
            e.contains(&format!("{name}.json")),
            "{name}: names the file: {e}"
        );
        assert!(!e.contains("panicked"), "{name}: {e}");
    }
    let o = simcast(&["replay", "/no/such/file.json"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("cannot read"));
}

#[test]
fn commands_find_the_scenarios_from_a_subdirectory() {
    let o = simcast_in(&support::root().join("crates"), &["list", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(last_json(&o)["scenarios"].as_array().unwrap().len() >= 2);
}

#[test]
fn explore_finds_a_reachable_mutant_and_its_counterexample_replays_and_shrinks() {
    let out = tempfile::tempdir().unwrap();
    let o = simcast(&[
        "explore",
        "--scenario",
        "locks-explore",
        "--mutant",
        "lost-wakeup",
        "--out",
        out.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let j = last_json(&o);
    assert_eq!(j["command"], "explore");
    assert_eq!(j["violation"]["invariant"], "locks.eventually_granted");
    assert_eq!(j["complete"], false, "stopped at the violation");
    let file = j["failure_files"][0].as_str().unwrap().to_owned();
    let r = simcast(&["replay", &file, "--json"]);
    assert_eq!(code(&r), 1);
    let rj = last_json(&r);
    assert_eq!(rj["diverged"], false);
    assert_eq!(rj["violation"]["invariant"], "locks.eventually_granted");
    let small = out.path().join("small.json");
    let s = simcast(&[
        "shrink",
        &file,
        "-o",
        small.to_str().unwrap(),
        "--time-budget",
        "5",
        "--json",
    ]);
    assert_eq!(code(&s), 0, "{}", stdout(&s));
    let sj = last_json(&s);
    assert!(sj["choices_after"].as_u64() <= sj["choices_before"].as_u64());
    assert_eq!(sj["violation"]["invariant"], "locks.eventually_granted");
}

#[test]
fn explore_reports_completeness_and_the_cost_of_no_dedup() {
    let min = support::fixture("locks-explore-min.toml");
    let o = simcast(&[
        "explore",
        "--scenario",
        min.to_str().unwrap(),
        "--no-dedup",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let j = last_json(&o);
    for field in [
        "states",
        "transitions",
        "max_depth",
        "complete",
        "states_per_sec",
        "violation",
        "failure_files",
    ] {
        assert!(j.get(field).is_some(), "missing {field}");
    }
    assert_eq!(j["states"], 26);
    assert_eq!(j["complete"], true);
    assert!(j["no_dedup"]["runs"].as_u64().unwrap() > j["runs"].as_u64().unwrap());
    let o = simcast(&[
        "explore",
        "--scenario",
        min.to_str().unwrap(),
        "--max-depth",
        "3",
        "--json",
    ]);
    assert_eq!(code(&o), 0);
    assert_eq!(
        last_json(&o)["complete"],
        false,
        "paths cut by the depth bound"
    );
}

/// `bench --quick` on one small scenario, kept tiny for a debug build.
fn quick_bench(baseline: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "bench",
        "--quick",
        "--json",
        "--scenario",
        "broadcast-small",
        "--seeds",
        "2",
        "--repeat",
        "2",
        "--rss-seeds",
        "10",
        "--baseline",
        baseline.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    simcast(&args)
}

#[test]
fn bench_quick_reports_every_kind_of_figure_and_compares_with_its_saved_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("bench/baseline.json");
    let madsim = dir.path().join("madsim.json");
    fs::write(
        &madsim,
        r#"{"figures":[{"name":"madsim seeds/s","value":200.0,"unit":"seeds/s","spread":0.1},
                       {"name":"madsim messages/s","value":150000.0,"unit":"msgs/s","spread":0.1}]}"#,
    )
    .unwrap();
    let o = quick_bench(&baseline, &["--save"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = last_json(&o);
    assert_eq!(j["command"], "bench");
    assert!(j["wall_ms"].is_u64());
    assert_eq!(j["quick"], true);
    assert!(j["threads"].as_u64().unwrap() >= 1);
    assert_eq!(j["baseline"]["found"], false);
    assert_eq!(j["baseline"]["saved"], true);
    assert!(baseline.is_file(), "--save wrote the baseline");
    let notes = j["notes"].to_string();
    assert!(notes.contains("madsim figures not measured"), "{notes}");
    let figures = j["figures"].as_array().unwrap();
    let unit_of = |name: &str| -> String {
        let f = figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure `{name}` in {figures:?}"));
        let value = f["value"].as_f64().unwrap();
        assert!(value.is_finite() && value > 0.0, "{name} = {value}");
        assert!(f["spread"].as_f64().unwrap() >= 0.0, "{name}");
        assert!(f.get("baseline").is_none(), "no baseline yet: {f}");
        f["unit"].as_str().unwrap().to_owned()
    };
    for (name, unit) in [
        ("broadcast-small events/s", "events/s"),
        ("broadcast-small seeds/s", "seeds/s"),
        ("broadcast-small events/s, all cores", "events/s"),
        ("broadcast-small seeds/s, all cores", "seeds/s"),
        ("broadcast-small scaling", "x"),
        ("broadcast-small events/s vs empty", "x"),
        ("broadcast-small allocs/event", "allocs/event"),
        ("empty world events/s", "events/s"),
        ("simulated events/s", "events/s"),
        ("scaling", "x"),
        ("peak RSS after 10 seeds of broadcast-small", "MiB"),
        ("peak RSS after 100 seeds of broadcast-small", "MiB"),
    ] {
        assert_eq!(unit_of(name), unit, "{name}");
    }

    // Again, against the baseline just saved, with madsim figures.
    let o = quick_bench(&baseline, &["--madsim-figures", madsim.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = last_json(&o);
    assert_eq!(j["baseline"]["found"], true);
    assert_eq!(j["baseline"]["saved"], false);
    let figures = j["figures"].as_array().unwrap();
    let get = |name: &str| {
        figures
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure `{name}`"))
    };
    let events = get("broadcast-small events/s");
    assert!(events["baseline"].as_f64().unwrap() > 0.0);
    assert!(events["change"].is_f64());
    assert!(events["slower"].is_boolean());
    assert_eq!(get("madsim messages/s")["value"], 150000.0);
    assert_eq!(get("madsim messages/s")["unit"], "msgs/s");
    let ratio = get("broadcast events/s vs madsim messages/s");
    assert_eq!(ratio["unit"], "x");
    let native = get("broadcast events/s")["value"].as_f64().unwrap();
    assert!((ratio["value"].as_f64().unwrap() - native / 150000.0).abs() < 1e-9);
    // Figures the baseline does not have are not compared.
    assert!(get("madsim seeds/s").get("baseline").is_none());

    // People get a table with the change and the flag columns.
    let o = quick_bench(&baseline, &["--madsim-missing", "the build failed"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = last_json(&o);
    assert_eq!(j["madsim"]["missing"], "the build failed");
    assert!(j["notes"].to_string().contains("madsim figures MISSING"));
}

#[test]
fn bench_human_output_is_a_table_against_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    fs::write(
        &baseline,
        r#"{"format": 1, "quick": true, "threads": 2, "seeds": 2, "repeat": 2, "figures": [
            {"name": "empty world events/s", "value": 1e15, "unit": "events/s", "spread": 0.0},
            {"name": "empty world allocs/event", "value": 1e-9, "unit": "allocs/event", "spread": 0.0},
            {"name": "explored states/s", "value": 1e15, "unit": "states/s", "spread": 0.0},
            {"name": "gone", "value": 1.0, "unit": "x", "spread": 0.0}
        ]}"#,
    )
    .unwrap();
    let o = simcast(&[
        "bench",
        "--quick",
        "--scenario",
        "tick-explore",
        "--seeds",
        "2",
        "--repeat",
        "2",
        "--rss-seeds",
        "0",
        "--baseline",
        baseline.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("vs baseline"), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .to_owned()
    };
    assert!(line("empty world events/s ").ends_with("SLOWER"), "{out}");
    assert!(line("empty world allocs/event").ends_with("WORSE"), "{out}");
    assert!(line("tick-explore states/s").contains("states/s"), "{out}");
    // A total over named scenarios sums another set than the baseline's.
    assert!(!line("explored states/s").ends_with("SLOWER"), "{out}");
    assert!(
        out.contains("totals are over the named scenarios only"),
        "{out}"
    );
    assert!(out.contains("not measured in this run: gone"), "{out}");
    assert!(
        out.contains("more than 10% worse than the baseline"),
        "{out}"
    );
    // ... which is a report, unless asked to fail.
    let o = simcast(&[
        "bench",
        "--quick",
        "--scenario",
        "tick-explore",
        "--seeds",
        "2",
        "--repeat",
        "2",
        "--rss-seeds",
        "0",
        "--baseline",
        baseline.to_str().unwrap(),
        "--fail-on-regression",
    ]);
    assert_eq!(code(&o), 1, "{}", stdout(&o));
}

#[test]
fn bench_with_a_corrupt_baseline_or_madsim_file_or_bad_counts_is_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("baseline.json");
    fs::write(&corrupt, "{ \"format\": 1, \"figures\": [ oops").unwrap();
    let base = [
        "bench",
        "--quick",
        "--scenario",
        "tick-bursty",
        "--rss-seeds",
        "0",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        simcast(&args)
    };
    let o = with(&["--baseline", corrupt.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", stdout(&o));
    assert!(
        stderr(&o).contains(corrupt.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).is_empty(), "nothing measured: {}", stdout(&o));

    let missing = dir.path().join("none.json");
    let madsim = dir.path().join("madsim.json");
    fs::write(
        &madsim,
        r#"{"figures":[{"name":"m","value":1.0,"unit":"furlongs","spread":0.0}]}"#,
    )
    .unwrap();
    let o = with(&[
        "--baseline",
        missing.to_str().unwrap(),
        "--madsim-figures",
        madsim.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains(madsim.to_str().unwrap()),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("furlongs"), "{}", stderr(&o));

    let o = with(&["--baseline", missing.to_str().unwrap(), "--seeds", "0"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--seeds"), "{}", stderr(&o));
}
