//! Fault profiles and per-seed swarm selection.
//!
//! A scenario's `[faults]` table gives, per fault kind of its protocol, the
//! probability that one opportunity of that kind injects the fault, and
//! optionally a budget (`max`) on the number of faults in a run. With
//! `swarm = true` (the default) every run first draws which kinds are on and
//! how likely (half, once or twice the given rate), so different seeds
//! stress different corners. The draws are ordinary decisions: alternative
//! 0 is "off", so shrinking turns off kinds a failure does not need.

use std::collections::BTreeMap;
use std::hash::Hash;

use serde::Serialize;
use serde_json::Value;

use crate::choice::Chooser;
use crate::hash::StableHasher;
use crate::registry::{ProtocolInfo, one_of};

/// A scenario's fault profile, as written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultConfig {
    /// Draw which kinds are on, and their rates, per seed.
    pub swarm: bool,
    /// At most this many faults per run (`None` = unbounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Probability per opportunity, by fault kind. Kinds not named are off.
    #[serde(flatten)]
    pub rates: BTreeMap<String, f64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            swarm: true,
            max: None,
            rates: BTreeMap::new(),
        }
    }
}

impl FaultConfig {
    /// Reads a `[faults]` table for `protocol`: `swarm` (bool), `max`
    /// (non-negative integer), and one probability in `[0, 1]` per fault kind.
    ///
    /// # Errors
    /// A message naming the offending key.
    pub fn from_value(value: &Value, protocol: &ProtocolInfo) -> Result<FaultConfig, String> {
        let Value::Object(table) = value else {
            return Err("must be a table".to_owned());
        };
        let mut cfg = FaultConfig::default();
        for (key, v) in table {
            match key.as_str() {
                "swarm" => {
                    cfg.swarm = v
                        .as_bool()
                        .ok_or_else(|| format!("`swarm` must be true or false, not {v}"))?;
                }
                "max" => {
                    cfg.max =
                        Some(v.as_u64().ok_or_else(|| {
                            format!("`max` must be a non-negative integer, not {v}")
                        })?);
                }
                kind => {
                    if protocol.fault_index(kind).is_none() {
                        return Err(format!(
                            "unknown key `{kind}`: protocol {} has fault kinds {} (and the keys swarm, max)",
                            protocol.name,
                            one_of(protocol.faults.iter().map(|f| f.name))
                        ));
                    }
                    let p = v.as_f64().ok_or_else(|| {
                        format!("`{kind}` must be a probability between 0 and 1, not {v}")
                    })?;
                    if !(0.0..=1.0).contains(&p) {
                        return Err(format!(
                            "`{kind}` must be a probability between 0 and 1, not {p}"
                        ));
                    }
                    cfg.rates.insert(kind.to_owned(), p);
                }
            }
        }
        Ok(cfg)
    }
}

/// Probability to parts per million.
pub fn ppm(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

const SWARM_FACTORS: [(u32, u32, &str); 3] = [(1, 2, "x0.5"), (1, 1, "x1"), (2, 1, "x2")];

/// The fault options in force for one run, and what was injected.
#[derive(Clone, Debug)]
pub struct FaultState {
    ppm: Vec<u32>,
    counts: Vec<u64>,
    budget: Option<u64>,
    used: u64,
}

impl FaultState {
    /// Draws this run's options from `config` (swarm decisions go through
    /// `chooser`). Returns them with a one-line description for the trace.
    pub fn draw(
        protocol: &ProtocolInfo,
        config: &FaultConfig,
        chooser: &mut Chooser,
    ) -> (FaultState, String) {
        let mut ppms = Vec::with_capacity(protocol.faults.len());
        let mut text = String::from(if config.swarm { "swarm:" } else { "faults:" });
        for kind in protocol.faults {
            let base = config.rates.get(kind.name).copied().map_or(0, ppm);
            let (rate, shown) = if base == 0 {
                (0, "off".to_owned())
            } else if !config.swarm {
                (base, format!("{}", f64::from(base) / 1e6))
            } else if chooser.choose(2) == 0 {
                (0, "off".to_owned())
            } else {
                let (num, den, label) = SWARM_FACTORS[chooser.choose(3) as usize];
                let rate =
                    (u64::from(base) * u64::from(num) / u64::from(den)).min(1_000_000) as u32;
                (rate, format!("{}({label})", f64::from(rate) / 1e6))
            };
            ppms.push(rate);
            text.push_str(&format!(" {}={shown}", kind.name));
        }
        if let Some(max) = config.max {
            text.push_str(&format!(" max={max}"));
        }
        (
            FaultState {
                counts: vec![0; ppms.len()],
                ppm: ppms,
                budget: config.max,
                used: 0,
            },
            text,
        )
    }

    /// The rate of `kind` if it is on and the budget is not spent.
    pub fn armed(&self, kind: usize) -> Option<u32> {
        let rate = self.ppm[kind];
        if rate == 0 || self.budget.is_some_and(|b| self.used >= b) {
            return None;
        }
        Some(rate)
    }

    /// Counts one injected fault of `kind`.
    pub fn count(&mut self, kind: usize) {
        self.counts[kind] += 1;
        self.used += 1;
    }

    /// Faults injected, per kind name (every kind, zeros included).
    pub fn counts(&self, protocol: &ProtocolInfo) -> BTreeMap<&'static str, u64> {
        protocol
            .faults
            .iter()
            .zip(&self.counts)
            .map(|(k, c)| (k.name, *c))
            .collect()
    }

    /// Whether `kind` is on in this run.
    pub fn enabled(&self, kind: usize) -> bool {
        self.ppm[kind] > 0
    }

    /// Hashes what affects future behaviour: the rates and the budget left.
    pub fn fingerprint(&self, h: &mut StableHasher) {
        self.ppm.hash(h);
        self.budget.map(|b| b.saturating_sub(self.used)).hash(h);
    }
}
