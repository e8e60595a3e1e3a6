//! Seed files: everything needed to reproduce a run without the scenario
//! file, as versioned JSON.
//!
//! A seed file records what it depends on: its format, the simcast version
//! that wrote it, the algorithm that turns seeds into decisions, and a hash
//! of the scenario it embeds. A file that cannot be replayed faithfully is
//! refused with a message saying why, never replayed wrongly. The file keeps
//! the decision sequence (so it replays even if the random algorithm
//! changes, and so it can be shrunk), the expected verdict, the trace
//! digest, and a short hash per step so that a replay that departs from the
//! recording names the first step that differs.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::choice;
use crate::engine::{Outcome, Violation};
use crate::hash::{hex64, parse_hex64, stable_hash};
use crate::registry::MutantInfo;
use crate::runner::{RunSpec, first_difference, resolve_mutant};
use crate::scenario::Scenario;

/// The format identifier this version reads and writes.
pub const FORMAT: &str = "simcast-seed/1";

/// The simcast version stored in files written by this build.
pub const SIMCAST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The choice-source algorithm a file's seed must be replayed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceSourceInfo {
    /// Algorithm name.
    pub algorithm: String,
    /// Its version.
    pub version: u32,
}

/// A violation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViolationRecord {
    /// Invariant name.
    pub invariant: String,
    /// Step.
    pub step: u64,
    /// Virtual time, microseconds.
    pub time: u64,
    /// What was wrong.
    pub message: String,
}

impl From<&Violation> for ViolationRecord {
    fn from(v: &Violation) -> Self {
        ViolationRecord {
            invariant: v.invariant.clone(),
            step: v.step,
            time: v.time.as_micros(),
            message: v.message.clone(),
        }
    }
}

/// The on-disk form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The simcast version that wrote the file.
    pub simcast_version: String,
    /// How `seed` becomes decisions.
    pub choice_source: ChoiceSourceInfo,
    /// Stable hash of `scenario`'s canonical form, hex.
    pub scenario_hash: String,
    /// The scenario, canonical JSON.
    pub scenario: Value,
    /// The seed.
    pub seed: u64,
    /// The mutant, if any.
    pub mutant: Option<String>,
    /// The decision sequence; replayed instead of the seed when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<u32>>,
    /// The verdict the run reached: `null` for a clean run.
    pub violation: Option<ViolationRecord>,
    /// Events in the run.
    pub events: u64,
    /// The trace digest, hex.
    pub digest: String,
    /// The low 32 bits of the digest after each step (step 0 first), 8 hex
    /// digits each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_digests: Option<String>,
    /// Free text: where the file came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// Why a seed file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SeedFileError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a well-formed seed file.
    #[error("{path}: not a valid seed file: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The file is well formed but cannot be replayed faithfully here.
    #[error("{path}: refused: {message}")]
    Incompatible {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// A seed file checked and ready to replay.
#[derive(Clone, Debug)]
pub struct LoadedSeed {
    /// The raw file.
    pub file: SeedFile,
    /// Its scenario.
    pub scenario: Scenario,
    /// Its mutant.
    pub mutant: Option<&'static MutantInfo>,
    /// Its digest.
    pub digest: u64,
    /// Its per-step short digests.
    pub step_digests: Option<Vec<u32>>,
}

impl LoadedSeed {
    /// What to run to replay it.
    pub fn spec(&self) -> RunSpec<'_> {
        RunSpec {
            scenario: &self.scenario,
            mutant: self.mutant,
            seed: self.file.seed,
            choices: self.file.choices.clone(),
        }
    }

    /// The first step at which `outcome` departs from the recording, if it
    /// does. `Some(None)` when it departs but the file keeps no per-step
    /// digests to say where.
    pub fn divergence(&self, outcome: &Outcome) -> Option<Option<u64>> {
        if outcome.digest == Some(self.digest) && outcome.events == self.file.events {
            return None;
        }
        let recorded = self.step_digests.as_ref()?;
        let replayed: Vec<u32> = outcome.step_digests.iter().map(|d| *d as u32).collect();
        Some(Some(first_difference(recorded, &replayed) as u64))
    }
}

impl SeedFile {
    /// Describes a finished run as a seed file.
    pub fn from_run(spec: &RunSpec<'_>, outcome: &Outcome, origin: Option<String>) -> SeedFile {
        let step_digests = (!outcome.step_digests.is_empty()).then(|| {
            let mut s = String::with_capacity(outcome.step_digests.len() * 8);
            for d in &outcome.step_digests {
                s.push_str(&format!("{:08x}", *d as u32));
            }
            s
        });
        SeedFile {
            format: FORMAT.to_owned(),
            simcast_version: SIMCAST_VERSION.to_owned(),
            choice_source: ChoiceSourceInfo {
                algorithm: choice::ALGORITHM.to_owned(),
                version: choice::ALGORITHM_VERSION,
            },
            scenario_hash: hex64(spec.scenario.hash()),
            scenario: spec.scenario.to_json(),
            seed: spec.seed,
            mutant: spec.mutant.map(|m| m.name.to_owned()),
            choices: Some(
                spec.choices
                    .clone()
                    .unwrap_or_else(|| outcome.decisions.iter().map(|d| d.value).collect()),
            ),
            violation: outcome.violation.as_ref().map(ViolationRecord::from),
            events: outcome.events,
            digest: hex64(outcome.trace_digest()),
            step_digests,
            origin,
        }
    }

    /// Writes the file (pretty JSON), creating its directory.
    ///
    /// # Errors
    /// IO errors.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = serde_json::to_string_pretty(self).expect("seed files serialize");
        text.push('\n');
        std::fs::write(path, text)
    }

    /// Reads and checks a seed file.
    ///
    /// # Errors
    /// Unreadable, malformed or incompatible files, saying why.
    pub fn load(path: &Path) -> Result<LoadedSeed, SeedFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SeedFileError::Io {
            path: shown.clone(),
            source,
        })?;
        SeedFile::parse(&shown, &text)
    }

    /// Parses and checks the text of a seed file; `origin` names it in errors.
    ///
    /// # Errors
    /// Malformed or incompatible files, saying why.
    pub fn parse(origin: &str, text: &str) -> Result<LoadedSeed, SeedFileError> {
        let malformed = |message: String| SeedFileError::Malformed {
            path: origin.to_owned(),
            message,
        };
        let refused = |message: String| SeedFileError::Incompatible {
            path: origin.to_owned(),
            message,
        };
        let raw: Value = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
        match raw.get("format").and_then(Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(refused(format!(
                    "format `{other}` is not supported (this simcast reads {FORMAT})"
                )));
            }
            None => return Err(malformed("missing `format`".to_owned())),
        }
        let file: SeedFile = serde_json::from_value(raw).map_err(|e| malformed(e.to_string()))?;
        let digest = parse_hex64(&file.digest)
            .ok_or_else(|| malformed(format!("`digest` is not 16 hex digits: {}", file.digest)))?;
        let step_digests = match &file.step_digests {
            None => None,
            Some(s) => Some(parse_step_digests(s).ok_or_else(|| {
                malformed("`step_digests` is not a sequence of 8-hex-digit values".to_owned())
            })?),
        };
        if file.choices.is_none()
            && (file.choice_source.algorithm != choice::ALGORITHM
                || file.choice_source.version != choice::ALGORITHM_VERSION)
        {
            return Err(refused(format!(
                "it has no recorded choices and its seed was drawn with {} v{}; this simcast draws with {} v{}",
                file.choice_source.algorithm,
                file.choice_source.version,
                choice::ALGORITHM,
                choice::ALGORITHM_VERSION
            )));
        }
        // The hash covers the scenario exactly as stored (object keys are
        // kept sorted), so a key added later with a default does not make
        // older files look edited.
        let expected = hex64(stable_hash(file.scenario.to_string().as_str()));
        if file.scenario_hash != expected {
            return Err(refused(format!(
                "the embedded scenario hashes to {expected}, not the recorded {}: the file was edited or is corrupt",
                file.scenario_hash
            )));
        }
        let scenario =
            Scenario::from_json(&file.scenario).map_err(|e| malformed(format!("scenario: {e}")))?;
        let mutant = resolve_mutant(&scenario, file.mutant.as_deref()).map_err(refused)?;
        Ok(LoadedSeed {
            file,
            scenario,
            mutant,
            digest,
            step_digests,
        })
    }
}

fn parse_step_digests(s: &str) -> Option<Vec<u32>> {
    if s.len() % 8 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len() / 8)
        .map(|i| u32::from_str_radix(&s[i * 8..i * 8 + 8], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RunOptions;
    use crate::protocols::Workload;
    use crate::runner::run;

    fn sample() -> (Scenario, SeedFile) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sim-scenarios");
        let scenario = Scenario::from_file(&dir.join("locks-contended.toml")).unwrap();
        let spec = RunSpec {
            scenario: &scenario,
            mutant: None,
            seed: 3,
            choices: None,
        };
        let outcome = run(
            &spec,
            RunOptions {
                keep_trace: false,
                record_steps: true,
                skip_decisions: false,
                skip_digest: false,
            },
        );
        let file = SeedFile::from_run(&spec, &outcome, None);
        (scenario, file)
    }

    #[test]
    fn a_written_file_parses_back() {
        let (scenario, file) = sample();
        let text = serde_json::to_string(&file).unwrap();
        let loaded = SeedFile::parse("t", &text).unwrap();
        assert_eq!(loaded.scenario, scenario);
        assert_eq!(
            loaded.step_digests.as_ref().map(Vec::len),
            Some(file.events as usize + 1)
        );
    }

    #[test]
    fn files_written_before_a_key_got_a_default_still_load() {
        let (_, mut file) = sample();
        // An older simcast did not know `patience_ms`.
        file.scenario["workload"]
            .as_object_mut()
            .unwrap()
            .remove("patience_ms");
        file.scenario_hash = hex64(stable_hash(file.scenario.to_string().as_str()));
        let text = serde_json::to_string(&file).unwrap();
        let loaded = SeedFile::parse("t", &text).expect("loads, with the default filled in");
        let Workload::Locks(w) = &loaded.scenario.workload else {
            panic!()
        };
        assert_eq!(w.patience_ms, [1, 50]);
    }
}
