//! `simcast list`: the names scenarios, scripts and CI refer to.

use clap::Args;

use crate::outln;
use serde_json::json;
use simcast_sim::registry::{ENGINE_INVARIANTS, protocols};

use crate::common::{Failure, ScenarioDir, Stopwatch, Verdict, print_json};

/// Arguments of `simcast list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dir: ScenarioDir,
}

/// Runs `simcast list`.
pub fn run(a: ListArgs) -> Result<Verdict, Failure> {
    let clock = Stopwatch::start();
    let catalog = a.dir.catalog()?;
    let mut invariants = Vec::new();
    let mut mutants = Vec::new();
    let mut faults = Vec::new();
    let mut sites = Vec::new();
    for p in protocols() {
        for i in p.invariants {
            invariants.push((p.name, i));
        }
        for m in p.mutants {
            mutants.push((p.name, m));
        }
        for f in p.faults {
            faults.push((p.name, f));
        }
        for s in p.sites {
            sites.push((p.name, s));
        }
    }
    for i in ENGINE_INVARIANTS {
        invariants.push(("sim", i));
    }
    if a.json {
        print_json(&json!({
            "command": "list",
            "wall_ms": clock.ms(),
            "scenarios": catalog.scenarios.iter().map(|s| json!({
                "name": s.name,
                "protocol": s.protocol().name,
                "default": s.default,
                "description": s.description,
            })).collect::<Vec<_>>(),
            "invariants": invariants.iter().map(|(p, i)| json!({
                "name": i.name, "protocol": p, "kind": i.kind.name(), "doc": i.doc,
            })).collect::<Vec<_>>(),
            "mutants": mutants.iter().map(|(p, m)| json!({
                "name": m.name, "protocol": p, "invariant": m.invariant, "doc": m.doc,
            })).collect::<Vec<_>>(),
            "faults": faults.iter().map(|(p, f)| json!({
                "name": f.name, "protocol": p, "doc": f.doc,
            })).collect::<Vec<_>>(),
            "sites": sites.iter().map(|(p, s)| json!({
                "name": s.name, "protocol": p, "params": s.params, "faults": s.faults, "doc": s.doc,
            })).collect::<Vec<_>>(),
        }));
        return Ok(Verdict::Held);
    }
    outln!("scenarios ({}):", catalog.dir.display());
    for s in &catalog.scenarios {
        let default = if s.default { "default" } else { "" };
        outln!(
            "  {:<28} {:<10} {:<8} {}",
            s.name,
            s.protocol().name,
            default,
            s.description
        );
    }
    outln!("invariants:");
    for (_, i) in &invariants {
        outln!("  {:<36} {:<9} {}", i.name, i.kind.name(), i.doc);
    }
    outln!("mutants:");
    for (p, m) in &mutants {
        outln!(
            "  {:<28} {:<10} caught by {:<32} {}",
            m.name,
            p,
            m.invariant,
            m.doc
        );
    }
    outln!("fault kinds:");
    for (p, f) in &faults {
        outln!("  {:<28} {:<10} {}", f.name, p, f.doc);
    }
    outln!("fault sites (for [[faults.targeted]]):");
    for (p, s) in &sites {
        outln!(
            "  {:<28} {:<10} params [{}] faults [{}]: {}",
            s.name,
            p,
            s.params.join(", "),
            s.faults.join(", "),
            s.doc
        );
    }
    Ok(Verdict::Held)
}
