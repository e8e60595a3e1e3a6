//! The bench baseline: a committed file of figures (`bench/baseline.json`)
//! that each run is compared against, figure by figure, by name.
//!
//! A figure is *worse* when it moved the wrong way for its unit by more
//! than [`THRESHOLD`]: down for throughput and ratios, up for allocations
//! per event and memory. Spread is not subtracted: a figure whose spread
//! is near the threshold is noise, and the table shows both.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Unit;

/// How far (as a fraction of the baseline) a figure may move the wrong way
/// before it is flagged.
pub const THRESHOLD: f64 = 0.10;

/// The version of the file format written by [`save`].
pub const FORMAT: u32 = 1;

/// A baseline file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// [`FORMAT`].
    pub format: u32,
    /// Whether the figures were measured with `--quick`.
    pub quick: bool,
    /// The threads of the all-cores figures.
    pub threads: usize,
    /// Seeds per repetition.
    pub seeds: u64,
    /// Repetitions.
    pub repeat: u32,
    /// The figures.
    pub figures: Vec<Saved>,
}

impl Baseline {
    /// The figure called `name`, if the baseline has one.
    pub fn get(&self, name: &str) -> Option<&Saved> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// A figure as saved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// What was measured.
    pub name: String,
    /// Median.
    pub value: f64,
    /// Unit, as [`Unit::as_str`] spells it.
    pub unit: String,
    /// (max - min) / median.
    pub spread: f64,
}

/// Why a baseline could not be read or written.
#[derive(Debug)]
pub enum BaselineError {
    /// The file exists but cannot be read, or cannot be written.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a baseline: not JSON, a missing or mistyped field, a
    /// format this binary does not know.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::Io { path, source } => {
                write!(f, "bench baseline {}: {source}", path.display())
            }
            BaselineError::Corrupt { path, message } => write!(
                f,
                "bench baseline {} is not a baseline file: {message} (rewrite it with `bench --save`)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for BaselineError {}

/// Where the baseline lives unless `--baseline` says otherwise:
/// `bench/baseline.json` in the workspace, the nearest directory above the
/// current one that has a `sim-scenarios/` (as scenarios are found), else
/// the source tree's.
pub fn default_path() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join("sim-scenarios").is_dir() {
                return dir.join("bench").join("baseline.json");
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("bench")
        .join("baseline.json")
}

/// Reads the baseline at `path`; `Ok(None)` if there is no such file.
///
/// # Errors
/// [`BaselineError`]: unreadable, or not a baseline of [`FORMAT`].
pub fn load(path: &Path) -> Result<Option<Baseline>, BaselineError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BaselineError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |message: String| BaselineError::Corrupt {
        path: path.to_owned(),
        message,
    };
    // The format first, so a future format is named as such rather than
    // as whichever field it changed.
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        Some(f) if f == u64::from(FORMAT) => {}
        Some(f) => return Err(corrupt(format!("format {f}, this binary reads {FORMAT}"))),
        None => return Err(corrupt("no numeric `format` field".to_owned())),
    }
    let baseline: Baseline = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    if let Some(f) = baseline
        .figures
        .iter()
        .find(|f| !f.value.is_finite() || !f.spread.is_finite())
    {
        return Err(corrupt(format!(
            "figure `{}` is not a finite number",
            f.name
        )));
    }
    Ok(Some(baseline))
}

/// Writes `baseline` to `path` (pretty JSON, one figure per line, so that
/// diffs of the committed file are readable), creating its directory.
///
/// # Errors
/// [`BaselineError::Io`].
pub fn save(path: &Path, baseline: &Baseline) -> Result<(), BaselineError> {
    let io = |source| BaselineError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = format!(
        "{{\n  \"format\": {},\n  \"quick\": {},\n  \"threads\": {},\n  \"seeds\": {},\n  \"repeat\": {},\n  \"figures\": [\n",
        baseline.format, baseline.quick, baseline.threads, baseline.seeds, baseline.repeat
    );
    for (i, f) in baseline.figures.iter().enumerate() {
        let line = serde_json::to_string(f).expect("figures serialize");
        let comma = if i + 1 < baseline.figures.len() {
            ","
        } else {
            ""
        };
        text.push_str(&format!("    {line}{comma}\n"));
    }
    text.push_str("  ]\n}\n");
    std::fs::write(path, text).map_err(io)
}

/// A figure against its baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    /// The baseline's value.
    pub baseline: f64,
    /// (current - baseline) / baseline; `None` when the baseline is 0.
    pub change: Option<f64>,
    /// Whether it moved the wrong way for its unit by more than
    /// [`THRESHOLD`].
    pub worse: bool,
}

/// Compares a figure in `unit` with its baseline value.
pub fn compare(unit: Unit, current: f64, baseline: f64) -> Change {
    let change = (baseline != 0.0).then(|| (current - baseline) / baseline.abs());
    let worse = change.is_some_and(|c| {
        if unit.higher_is_better() {
            c < -THRESHOLD
        } else {
            c > THRESHOLD
        }
    });
    Change {
        baseline,
        change,
        worse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_and_ratios_are_worse_when_lower() {
        for unit in [
            Unit::EventsPerSec,
            Unit::SeedsPerSec,
            Unit::StatesPerSec,
            Unit::MsgsPerSec,
            Unit::Ratio,
        ] {
            assert!(compare(unit, 85.0, 100.0).worse, "{unit:?} down 15%");
            assert!(!compare(unit, 95.0, 100.0).worse, "{unit:?} down 5%");
            assert!(!compare(unit, 150.0, 100.0).worse, "{unit:?} up 50%");
        }
    }

    #[test]
    fn allocations_and_memory_are_worse_when_higher() {
        for unit in [Unit::AllocsPerEvent, Unit::MiB] {
            assert!(compare(unit, 115.0, 100.0).worse, "{unit:?} up 15%");
            assert!(!compare(unit, 105.0, 100.0).worse, "{unit:?} up 5%");
            assert!(!compare(unit, 50.0, 100.0).worse, "{unit:?} down 50%");
        }
    }

    #[test]
    fn the_change_is_a_fraction_of_the_baseline_and_absent_for_a_zero_baseline() {
        let c = compare(Unit::EventsPerSec, 80.0, 100.0);
        assert_eq!(c.baseline, 100.0);
        assert!((c.change.unwrap() + 0.2).abs() < 1e-12);
        let z = compare(Unit::AllocsPerEvent, 3.0, 0.0);
        assert_eq!(z.change, None);
        assert!(!z.worse);
        // Exactly at the threshold is not flagged.
        assert!(!compare(Unit::MiB, 110.0, 100.0).worse);
    }

    fn sample() -> Baseline {
        Baseline {
            format: FORMAT,
            quick: false,
            threads: 2,
            seeds: 200,
            repeat: 5,
            figures: vec![Saved {
                name: "locks-contended events/s".to_owned(),
                value: 2.5e6,
                unit: "events/s".to_owned(),
                spread: 0.03,
            }],
        }
    }

    #[test]
    fn a_saved_baseline_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/baseline.json");
        assert!(load(&path).unwrap().is_none());
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        assert!(load(&path).unwrap().unwrap().get("nope").is_none());
    }

    #[test]
    fn a_corrupt_or_future_baseline_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.json");
        for (text, says) in [
            ("{ not json", "key must be a string"),
            ("{\"figures\": []}", "`format`"),
            ("{\"format\": 99, \"figures\": []}", "format 99"),
            ("{\"format\": 1, \"quick\": false}", "missing field"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(&path.display().to_string()), "{e}");
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
