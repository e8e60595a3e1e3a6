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
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};

use serde::Serialize;
use serde_json::Value;

use crate::choice::Chooser;
use crate::registry::{ProtocolInfo, one_of};
use simcast_machines::time::Time;

/// A fault that fires on a typed predicate instead of at random: at every
/// opportunity of `kind` at site `at` whose parameters match `params`,
/// within `[from_ms, until_ms)`, at most `count` times.
///
/// ```toml
/// [[faults.targeted]]
/// kind = "coordinator_crash"
/// at = "tombstone_persisted"
/// cluster = 0
/// count = 1
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetedFault {
    /// The fault kind.
    pub kind: String,
    /// The site (opportunity) it fires at.
    pub at: String,
    /// Site parameters that must match.
    #[serde(flatten)]
    pub params: BTreeMap<String, u64>,
    /// Not before this virtual time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    /// Not at or after this virtual time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// At most this many times (unbounded if absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl TargetedFault {
    fn from_value(v: &Value, protocol: &ProtocolInfo) -> Result<TargetedFault, String> {
        let Value::Object(t) = v else {
            return Err("each targeted fault must be a table".to_owned());
        };
        let text = |key: &str| -> Result<String, String> {
            t.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("targeted fault: `{key}` (a string) is required"))
        };
        let kind = text("kind")?;
        let at = text("at")?;
        let site = protocol.site(&at).ok_or_else(|| {
            format!(
                "targeted fault: unknown site `{at}` (protocol {} has {})",
                protocol.name,
                one_of(protocol.sites.iter().map(|s| s.name))
            )
        })?;
        if !site.faults.contains(&kind.as_str()) {
            return Err(format!(
                "targeted fault: `{kind}` cannot be injected at `{at}` (it takes {})",
                one_of(site.faults.iter().copied())
            ));
        }
        let mut f = TargetedFault {
            kind,
            at,
            params: BTreeMap::new(),
            from_ms: None,
            until_ms: None,
            count: None,
        };
        for (key, v) in t {
            let n = || {
                v.as_u64().ok_or_else(|| {
                    format!("targeted fault: `{key}` must be a non-negative integer, not {v}")
                })
            };
            match key.as_str() {
                "kind" | "at" => {}
                "from_ms" => f.from_ms = Some(n()?),
                "until_ms" => f.until_ms = Some(n()?),
                "count" => f.count = Some(n()?),
                p if site.params.contains(&p) => {
                    f.params.insert(p.to_owned(), n()?);
                }
                other => {
                    return Err(format!(
                        "targeted fault at `{}`: unknown key `{other}` (site parameters: {}; and kind, at, from_ms, until_ms, count)",
                        f.at,
                        one_of(site.params.iter().copied())
                    ));
                }
            }
        }
        Ok(f)
    }
}

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
    /// Faults that fire on a predicate instead of at random.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targeted: Vec<TargetedFault>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            swarm: true,
            max: None,
            rates: BTreeMap::new(),
            targeted: Vec::new(),
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
                "targeted" => {
                    let Value::Array(items) = v else {
                        return Err(
                            "`targeted` must be an array of tables ([[faults.targeted]])"
                                .to_owned(),
                        );
                    };
                    for item in items {
                        cfg.targeted
                            .push(TargetedFault::from_value(item, protocol)?);
                    }
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

/// Writes a rate in parts per million as the probability it stands for,
/// exactly as `f64` displays `ppm / 1e6` ("0.025", "1", "0.000001"), from
/// integers: a sweep draws (and so writes) the options of every seed.
fn write_rate(text: &mut String, ppm: u32) {
    // Pushed digit by digit: no formatting machinery.
    let (whole, frac) = (ppm / 1_000_000, ppm % 1_000_000);
    push_digits(text, whole, 1);
    if frac != 0 {
        // Six decimals, trailing zeros dropped.
        let (mut frac, mut width) = (frac, 6);
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        text.push('.');
        push_digits(text, frac, width);
    }
}

/// Writes `n` in decimal, zero-padded to at least `width` digits.
fn push_digits(text: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let (mut n, mut i) = (n, buf.len());
    while n > 0 || buf.len() - i < width.max(1) {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    text.extend(buf[i..].iter().map(|&b| char::from(b)));
}

const SWARM_FACTORS: [(u32, u32, &str); 3] = [(1, 2, "x0.5"), (1, 1, "x1"), (2, 1, "x2")];

/// A targeted fault, armed for a run.
#[derive(Clone, Debug, Hash)]
struct Armed {
    kind: usize,
    site: &'static str,
    params: Vec<(&'static str, u64)>,
    from: Time,
    until: Time,
    remaining: Option<u64>,
}

/// The fault options in force for one run, and what was injected.
#[derive(Debug)]
pub struct FaultState {
    ppm: Vec<u32>,
    counts: Vec<u64>,
    budget: Option<u64>,
    used: u64,
    targeted: Vec<Armed>,
}

impl Clone for FaultState {
    fn clone(&self) -> Self {
        FaultState {
            ppm: self.ppm.clone(),
            counts: self.counts.clone(),
            budget: self.budget,
            used: self.used,
            targeted: self.targeted.clone(),
        }
    }

    /// Reuses this state's buffers.
    fn clone_from(&mut self, source: &Self) {
        self.ppm.clone_from(&source.ppm);
        self.counts.clone_from(&source.counts);
        self.budget = source.budget;
        self.used = source.used;
        self.targeted.clone_from(&source.targeted);
    }
}

impl FaultState {
    /// Draws this run's options from `config` (swarm decisions go through
    /// `chooser`). Returns them with a one-line description for the trace.
    pub fn draw(
        protocol: &ProtocolInfo,
        config: &FaultConfig,
        chooser: &mut Chooser,
    ) -> (FaultState, String) {
        // The configured rates by kind (one pass over the map), replaced
        // in place by the drawn rates.
        let mut ppms = vec![0; protocol.faults.len()];
        for (name, rate) in &config.rates {
            if let Some(i) = protocol.faults.iter().position(|k| k.name == name) {
                ppms[i] = ppm(*rate);
            }
        }
        let mut text = String::with_capacity(32 * protocol.faults.len());
        text.push_str(if config.swarm { "swarm:" } else { "faults:" });
        for (kind, slot) in protocol.faults.iter().zip(&mut ppms) {
            let base = *slot;
            // Written in place: a run draws its options once, but a sweep
            // runs many short seeds.
            text.push(' ');
            text.push_str(kind.name);
            text.push('=');
            let rate = if base == 0 {
                text.push_str("off");
                0
            } else if !config.swarm {
                write_rate(&mut text, base);
                base
            } else if chooser.choose(2) == 0 {
                text.push_str("off");
                0
            } else {
                let (num, den, label) = SWARM_FACTORS[chooser.choose(3) as usize];
                let rate =
                    (u64::from(base) * u64::from(num) / u64::from(den)).min(1_000_000) as u32;
                write_rate(&mut text, rate);
                text.push('(');
                text.push_str(label);
                text.push(')');
                rate
            };
            *slot = rate;
        }
        if let Some(max) = config.max {
            let _ = write!(text, " max={max}");
        }
        let targeted: Vec<Armed> = config
            .targeted
            .iter()
            .map(|t| {
                let site = protocol.site(&t.at).expect("validated site");
                Armed {
                    kind: protocol.fault_index(&t.kind).expect("validated kind"),
                    site: site.name,
                    params: t
                        .params
                        .iter()
                        .map(|(k, v)| {
                            let name = site.params.iter().find(|p| *p == k).expect("validated");
                            (*name, *v)
                        })
                        .collect(),
                    from: Time::from_millis(t.from_ms.unwrap_or(0)),
                    until: t.until_ms.map_or(Time::MAX, Time::from_millis),
                    remaining: t.count,
                }
            })
            .collect();
        for t in &config.targeted {
            text.push_str(&format!(" targeted:{}@{}", t.kind, t.at));
        }
        (
            FaultState {
                counts: vec![0; ppms.len()],
                ppm: ppms,
                budget: config.max,
                used: 0,
                targeted,
            },
            text,
        )
    }

    /// Whether a fault of `kind` can fire at all in this run: its rate is
    /// on, or some fault is targeted. `false` settles an opportunity
    /// without a look at sites, parameters or the budget.
    #[inline]
    pub fn may_fire(&self, kind: usize) -> bool {
        self.ppm[kind] != 0 || !self.targeted.is_empty()
    }

    /// The rate of `kind` if it is on and the budget is not spent.
    pub fn armed(&self, kind: usize) -> Option<u32> {
        let rate = self.ppm[kind];
        if rate == 0 || self.budget.is_some_and(|b| self.used >= b) {
            return None;
        }
        Some(rate)
    }

    /// The first targeted fault of `kind` armed for this opportunity, if any.
    #[inline]
    pub fn targeted(
        &self,
        kind: usize,
        site: &str,
        params: &[(&'static str, u64)],
        now: Time,
    ) -> Option<usize> {
        if self.targeted.is_empty() {
            // Most scenarios target nothing: no search, no call.
            return None;
        }
        self.targeted_search(kind, site, params, now)
    }

    fn targeted_search(
        &self,
        kind: usize,
        site: &str,
        params: &[(&'static str, u64)],
        now: Time,
    ) -> Option<usize> {
        self.targeted.iter().position(|t| {
            t.kind == kind
                && t.site == site
                && t.remaining != Some(0)
                && now >= t.from
                && now < t.until
                && t.params
                    .iter()
                    .all(|(p, v)| params.iter().any(|(q, w)| q == p && w == v))
        })
    }

    /// Counts one firing of targeted fault `index` (a fault of its kind).
    pub fn fire_targeted(&mut self, index: usize) {
        let t = &mut self.targeted[index];
        if let Some(r) = t.remaining.as_mut() {
            *r -= 1;
        }
        let kind = t.kind;
        self.counts[kind] += 1;
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
    pub fn fingerprint<H: Hasher>(&self, h: &mut H) {
        self.ppm.hash(h);
        self.budget.map(|b| b.saturating_sub(self.used)).hash(h);
        self.targeted.hash(h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_are_written_as_f64_displays_them() {
        let mut ppms: Vec<u32> = (0..=1_000_000).step_by(997).collect();
        ppms.extend([
            1, 10, 100, 1000, 25_000, 50_000, 100_000, 999_999, 1_000_000, 123_450,
        ]);
        for ppm in ppms {
            let mut text = String::new();
            super::write_rate(&mut text, ppm);
            assert_eq!(text, format!("{}", f64::from(ppm) / 1e6), "{ppm} ppm");
        }
    }

    fn parse(v: Value) -> Result<FaultConfig, String> {
        FaultConfig::from_value(&v, &crate::protocols::broadcast::INFO)
    }

    #[test]
    fn targeted_faults_are_validated_against_the_protocol() {
        let ok = parse(json!({"targeted": [{"kind": "coordinator_crash", "at": "tombstone_persisted", "cluster": 0, "count": 1}]}))
            .unwrap();
        assert_eq!(ok.targeted[0].params["cluster"], 0);
        assert_eq!(ok.targeted[0].count, Some(1));
        let err = |v| parse(v).unwrap_err();
        assert!(
            err(json!({"targeted": [{"kind": "coordinator_crash", "at": "moon"}]}))
                .contains("unknown site `moon`")
        );
        assert!(
            err(json!({"targeted": [{"kind": "append_fail", "at": "ack"}]}))
                .contains("`append_fail` cannot be injected at `ack`")
        );
        assert!(
            err(json!({"targeted": [{"kind": "ack_lost", "at": "ack", "replica": 1}]}))
                .contains("unknown key `replica`")
        );
        assert!(
            err(json!({"targeted": [{"kind": "ack_lost", "at": "ack", "channel": -1}]}))
                .contains("`channel` must be a non-negative integer")
        );
        assert!(
            err(json!({"targeted": [{"at": "ack"}]})).contains("`kind` (a string) is required")
        );
        assert!(err(json!({"targeted": {"kind": "ack_lost"}})).contains("array of tables"));
    }

    #[test]
    fn rates_are_validated() {
        assert!(
            parse(json!({"meteor": 0.1}))
                .unwrap_err()
                .contains("unknown key `meteor`")
        );
        assert!(
            parse(json!({"ack_lost": 2.0}))
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(
            parse(json!({"max": "x"}))
                .unwrap_err()
                .contains("`max` must be")
        );
    }
}
