//! Scenarios: a protocol, its workload and topology, a fault profile and a
//! run length, read from a TOML file in `sim-scenarios/`.
//!
//! ```toml
//! protocol = "locks"
//! description = "four clients fighting over two keys per domain"
//! default = true          # part of the default sweep
//!
//! [run]
//! chaos_ms = 2000         # faults on
//! heal_ms = 20000         # faults off; liveness judged at the end
//! max_steps = 200000      # optional; 1 to 2^31
//!
//! [faults]
//! swarm = true            # optional, default true
//! max = 50                # optional fault budget per run
//! client_fail = 0.01      # probability per opportunity, per fault kind
//!
//! [workload]              # protocol-specific
//! clients = 4
//! ```
//!
//! Unknown keys anywhere are errors naming the key; so are bad values. The
//! name of a scenario is its file stem. A scenario is also stored, as JSON,
//! inside every seed file, with a stable hash of its canonical form.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use simcast_machines::time::Time;

use crate::engine::RunLimits;
use crate::faults::FaultConfig;
use crate::hash::stable_hash;
use crate::protocols::Workload;
use crate::registry::{self, ProtocolInfo, one_of};

/// Timing of a run, as written in `[run]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Length of the chaos phase (faults on), in virtual milliseconds.
    pub chaos_ms: u64,
    /// Length of the heal phase (faults off), in virtual milliseconds.
    pub heal_ms: u64,
    /// The most events one run may take.
    #[serde(default = "default_max_steps")]
    pub max_steps: u64,
}

/// The most events a scenario may run: the engine numbers the events it
/// schedules in one run in 32 bits, and a run schedules at most the
/// events it handles plus those still pending at its end.
pub const MAX_STEPS: u64 = 1 << 31;

fn default_max_steps() -> u64 {
    1_000_000
}

impl RunConfig {
    /// The engine's limits for this configuration.
    pub fn limits(&self) -> RunLimits {
        let chaos_end = Time::from_millis(self.chaos_ms);
        RunLimits {
            chaos_end,
            end: Time::from_millis(self.chaos_ms.saturating_add(self.heal_ms)),
            max_steps: self.max_steps,
        }
    }
}

/// Default bounds for exploring a scenario, as written in `[explore]`
/// (command-line flags override them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExploreConfig {
    /// Steps from the start along any path.
    #[serde(default = "default_explore_depth")]
    pub max_depth: u64,
    /// Faults injected along any path.
    #[serde(default = "default_explore_faults")]
    pub max_faults: u64,
}

fn default_explore_depth() -> u64 {
    400
}

fn default_explore_faults() -> u64 {
    1
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            max_depth: default_explore_depth(),
            max_faults: default_explore_faults(),
        }
    }
}

/// A scenario, parsed and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The file stem.
    pub name: String,
    /// What it exercises, one line.
    pub description: String,
    /// Whether the default sweep runs it.
    pub default: bool,
    /// Timing.
    pub run: RunConfig,
    /// The fault profile.
    pub faults: FaultConfig,
    /// The protocol's workload and topology.
    pub workload: Workload,
    /// Bounds for `explore`, if the scenario is a small configuration.
    pub explore: Option<ExploreConfig>,
}

/// A scenario that could not be read, with where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ScenarioError {
    /// The file or scenario name concerned.
    pub origin: String,
    /// What is wrong, naming the key.
    pub message: String,
}

const TOP_KEYS: [&str; 7] = [
    "protocol",
    "description",
    "default",
    "run",
    "faults",
    "workload",
    "explore",
];

impl Scenario {
    /// The protocol the scenario runs.
    pub fn protocol(&self) -> &'static ProtocolInfo {
        self.workload.protocol()
    }

    /// Parses the TOML text of a scenario called `name`.
    ///
    /// # Errors
    /// Syntax errors, unknown keys and bad values, naming the key.
    pub fn from_toml(name: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let err = |message: String| ScenarioError {
            origin: name.to_owned(),
            message,
        };
        let table: toml::Table = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let value = serde_json::to_value(&table).map_err(|e| err(e.to_string()))?;
        Scenario::from_value(name, value).map_err(err)
    }

    /// Reads a scenario file; its name is the file stem.
    ///
    /// # Errors
    /// Unreadable file, or any error of [`Scenario::from_toml`].
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Scenario::from_toml(&name, &text).map_err(|mut e| {
            e.origin = path.display().to_string();
            e
        })
    }

    /// Parses the canonical JSON form (as stored in seed files).
    ///
    /// # Errors
    /// As [`Scenario::from_toml`].
    pub fn from_json(value: &Value) -> Result<Scenario, ScenarioError> {
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_owned();
        let mut body = value.clone();
        if let Value::Object(m) = &mut body {
            m.remove("name");
        }
        Scenario::from_value(&name, body).map_err(|message| ScenarioError {
            origin: format!("scenario {name}"),
            message,
        })
    }

    fn from_value(name: &str, value: Value) -> Result<Scenario, String> {
        let Value::Object(mut top) = value else {
            return Err("a scenario must be a table".to_owned());
        };
        if let Some(k) = top.keys().find(|k| !TOP_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key `{k}` (expected one of {})",
                one_of(TOP_KEYS)
            ));
        }
        let protocol_name = match top.remove("protocol") {
            Some(Value::String(s)) => s,
            Some(v) => return Err(format!("`protocol` must be a string, not {v}")),
            None => return Err("missing key `protocol`".to_owned()),
        };
        let protocol = registry::protocol(&protocol_name).ok_or_else(|| {
            format!(
                "unknown protocol `{protocol_name}` (expected one of {})",
                one_of(registry::protocols().iter().map(|p| p.name))
            )
        })?;
        let description = match top.remove("description") {
            None => String::new(),
            Some(Value::String(s)) => s,
            Some(v) => return Err(format!("`description` must be a string, not {v}")),
        };
        let default = match top.remove("default") {
            None => false,
            Some(Value::Bool(b)) => b,
            Some(v) => return Err(format!("`default` must be true or false, not {v}")),
        };
        let run: RunConfig = serde_json::from_value(
            top.remove("run")
                .ok_or_else(|| "missing table [run]".to_owned())?,
        )
        .map_err(|e| format!("[run]: {e}"))?;
        if run.chaos_ms == 0 && run.heal_ms == 0 {
            return Err("[run]: chaos_ms and heal_ms cannot both be 0".to_owned());
        }
        if run.max_steps == 0 {
            return Err("[run]: max_steps must be at least 1".to_owned());
        }
        if run.max_steps > MAX_STEPS {
            return Err(format!(
                "[run]: max_steps is {}, at most {MAX_STEPS} (the engine numbers a run's events in 32 bits)",
                run.max_steps
            ));
        }
        let faults = match top.remove("faults") {
            None => FaultConfig::default(),
            Some(v) => {
                FaultConfig::from_value(&v, protocol).map_err(|e| format!("[faults]: {e}"))?
            }
        };
        let workload = Workload::from_value(
            protocol,
            top.remove("workload").unwrap_or(Value::Object(Map::new())),
        )
        .map_err(|e| format!("[workload]: {e}"))?;
        let explore = match top.remove("explore") {
            None => None,
            Some(v) => Some(serde_json::from_value(v).map_err(|e| format!("[explore]: {e}"))?),
        };
        Ok(Scenario {
            name: name.to_owned(),
            description,
            default,
            run,
            faults,
            workload,
            explore,
        })
    }

    /// The canonical JSON form: what seed files store and what is hashed.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "protocol": self.protocol().name,
            "description": self.description,
            "default": self.default,
            "run": self.run,
            "faults": self.faults,
            "workload": self.workload.to_value(),
        });
        if let Some(e) = &self.explore {
            v["explore"] = json!(e);
        }
        v
    }

    /// A stable hash of the canonical form (object keys sorted).
    pub fn hash(&self) -> u64 {
        stable_hash(self.to_json().to_string().as_str())
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.protocol().name)
    }
}

/// The scenarios of a directory, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Where they were read from.
    pub dir: PathBuf,
    /// The scenarios, sorted by name.
    pub scenarios: Vec<Scenario>,
}

impl Catalog {
    /// Reads every `*.toml` file of `dir`.
    ///
    /// # Errors
    /// An unreadable directory, or the first file that does not parse.
    pub fn load(dir: &Path) -> Result<Catalog, ScenarioError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError {
            origin: dir.display().to_string(),
            message: format!("cannot read the scenario directory: {e}"),
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let scenarios = paths
            .iter()
            .map(|p| Scenario::from_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Catalog {
            dir: dir.to_owned(),
            scenarios,
        })
    }

    /// The scenario called `name`.
    ///
    /// # Errors
    /// An unknown name, listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Scenario, ScenarioError> {
        self.scenarios
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ScenarioError {
                origin: name.to_owned(),
                message: format!(
                    "unknown scenario (known in {}: {})",
                    self.dir.display(),
                    one_of(self.scenarios.iter().map(|s| s.name.as_str()))
                ),
            })
    }

    /// The scenarios of the default sweep, optionally of one protocol only.
    pub fn defaults(&self, protocol: Option<&str>) -> Vec<&Scenario> {
        self.scenarios
            .iter()
            .filter(|s| s.default && protocol.is_none_or(|p| s.protocol().name == p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Catalog {
        Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sim-scenarios"))
            .expect("shipped scenarios parse")
    }

    #[test]
    fn every_shipped_scenario_parses_and_each_protocol_has_a_default() {
        let c = shipped();
        for p in registry::protocols() {
            assert!(
                !c.defaults(Some(p.name)).is_empty(),
                "protocol {} has no default scenario",
                p.name
            );
        }
    }

    #[test]
    fn json_form_round_trips_with_the_same_hash() {
        for s in shipped().scenarios {
            let back = Scenario::from_json(&s.to_json()).expect("round trip");
            assert_eq!(back, s);
            assert_eq!(back.hash(), s.hash());
        }
    }

    #[test]
    fn the_hash_changes_with_any_value() {
        let c = shipped();
        let s = &c.scenarios[0];
        let mut t = s.clone();
        t.run.heal_ms += 1;
        assert_ne!(s.hash(), t.hash());
    }

    #[test]
    fn errors_name_the_offending_key() {
        let err = |text: &str| Scenario::from_toml("t", text).unwrap_err().message;
        assert!(err("protocol = \"locks\"").contains("missing table [run]"));
        assert!(err("[run]\nchaos_ms = 1\nheal_ms = 1").contains("missing key `protocol`"));
        assert!(
            err("protocol = \"locks\"\nextra = 1\n[run]\nchaos_ms = 1\nheal_ms = 1")
                .contains("unknown key `extra`")
        );
        assert!(
            err("protocol = \"locks\"\n[run]\nchaos_ms = 1\nheal_ms = 1\n[faults]\nswarm = 3")
                .contains("`swarm` must be true or false")
        );
        assert!(err("protocol = [").contains("TOML") || err("protocol = [").contains("line"));
        let steps = |n: u64| {
            format!("protocol = \"locks\"\n[run]\nchaos_ms = 1\nheal_ms = 1\nmax_steps = {n}")
        };
        assert!(err(&steps(0)).contains("max_steps must be at least 1"));
        assert!(err(&steps(MAX_STEPS + 1)).contains("at most 2147483648"));
        let at_most = include_str!("../../../sim-scenarios/locks-contended.toml")
            .replace("[run]\n", &format!("[run]\nmax_steps = {MAX_STEPS}\n"));
        let s = Scenario::from_toml("t", &at_most).expect("max_steps at the bound is valid");
        assert_eq!(s.run.max_steps, MAX_STEPS);
    }
}
