//! The names users see: protocols, their invariants, mutants and fault kinds.
//!
//! Names are stable identifiers (`locks.exclusion`, `lost-wakeup`, ...): seed
//! files, scripts and CI refer to them. An unknown name is an error that
//! lists the valid ones.

use std::fmt;

/// When an invariant is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvariantKind {
    /// After every event.
    Safety,
    /// Once the run has stopped, after the heal phase.
    Liveness,
}

impl InvariantKind {
    /// `safety` or `liveness`.
    pub fn name(self) -> &'static str {
        match self {
            InvariantKind::Safety => "safety",
            InvariantKind::Liveness => "liveness",
        }
    }
}

/// A named property a protocol's runs must keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvariantInfo {
    /// Stable name, `protocol.property`.
    pub name: &'static str,
    /// When it is checked.
    pub kind: InvariantKind,
    /// What it promises, one line.
    pub doc: &'static str,
}

/// A deliberately broken variant, off by default, that a sweep must catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MutantInfo {
    /// Stable name, kebab-case, unique across protocols.
    pub name: &'static str,
    /// The invariant that must catch it.
    pub invariant: &'static str,
    /// What is broken, one line.
    pub doc: &'static str,
}

/// A kind of fault a protocol's world can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// Stable name, snake_case; the key of its probability in a scenario's
    /// `[faults]` table.
    pub name: &'static str,
    /// What one opportunity of it does, one line.
    pub doc: &'static str,
}

/// A place in a protocol's world where faults can be injected: the
/// opportunity a targeted fault names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteInfo {
    /// Stable name, snake_case.
    pub name: &'static str,
    /// When the opportunity arises, one line.
    pub doc: &'static str,
    /// The parameters a targeted fault may filter on (e.g. `channel`).
    pub params: &'static [&'static str],
    /// The fault kinds injectable here.
    pub faults: &'static [&'static str],
}

/// Everything named about one protocol.
#[derive(Debug)]
pub struct ProtocolInfo {
    /// Stable name, e.g. `locks`.
    pub name: &'static str,
    /// One line.
    pub doc: &'static str,
    /// Its invariants.
    pub invariants: &'static [InvariantInfo],
    /// Its mutants.
    pub mutants: &'static [MutantInfo],
    /// Its fault kinds, indexed by position.
    pub faults: &'static [FaultInfo],
    /// Where its faults are injected (what targeted faults can name).
    pub sites: &'static [SiteInfo],
    /// The machines whose transitions a run records: a name and the
    /// machine's declared transitions, in the order
    /// [`Protocol::coverage`](crate::engine::Protocol::coverage) reports them.
    pub machines: &'static [(&'static str, &'static [&'static str])],
    /// Transitions (`machine: transition`) this protocol's world cannot take
    /// by design, each with the reason. Coverage reports leave them out.
    pub unreachable: &'static [(&'static str, &'static str)],
}

impl ProtocolInfo {
    /// The invariant called `name`, among this protocol's and the engine's.
    pub fn invariant(&self, name: &str) -> Option<&'static InvariantInfo> {
        self.invariants
            .iter()
            .chain(ENGINE_INVARIANTS)
            .find(|i| i.name == name)
    }

    /// The mutant called `name`.
    pub fn mutant(&self, name: &str) -> Option<&'static MutantInfo> {
        self.mutants.iter().find(|m| m.name == name)
    }

    /// Why a transition cannot be reached, if it cannot by design.
    pub fn unreachable_reason(&self, name: &str) -> Option<&'static str> {
        self.unreachable
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, why)| *why)
    }

    /// Every transition, as `machine: transition`, in coverage order.
    pub fn transition_names(&self) -> Vec<String> {
        self.machines
            .iter()
            .flat_map(|(m, ts)| ts.iter().map(move |t| format!("{m}: {t}")))
            .collect()
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Option<&'static SiteInfo> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The index of the fault kind called `name`.
    pub fn fault_index(&self, name: &str) -> Option<usize> {
        self.faults.iter().position(|f| f.name == name)
    }
}

/// Invariants the engine itself judges, for every protocol.
pub static ENGINE_INVARIANTS: &[InvariantInfo] = &[
    InvariantInfo {
        name: crate::engine::STEP_LIMIT_INVARIANT,
        kind: InvariantKind::Liveness,
        doc: "a run finishes within its scenario's max_steps events",
    },
    InvariantInfo {
        name: PANIC_INVARIANT,
        kind: InvariantKind::Safety,
        doc: "no machine or world code panics",
    },
];

/// The invariant reported when machine or world code panics during a run.
pub const PANIC_INVARIANT: &str = "sim.panic";

/// Every protocol, in a fixed order.
pub fn protocols() -> &'static [&'static ProtocolInfo] {
    static ALL: &[&ProtocolInfo] = &[
        &crate::protocols::locks::INFO,
        &crate::protocols::broadcast::INFO,
        &crate::protocols::fanout::INFO,
        &crate::protocols::pubsub::INFO,
        &crate::protocols::tick::INFO,
        &crate::protocols::replication::INFO,
    ];
    ALL
}

/// The protocol called `name`.
pub fn protocol(name: &str) -> Option<&'static ProtocolInfo> {
    protocols().iter().copied().find(|p| p.name == name)
}

/// The protocol a mutant belongs to, and the mutant.
pub fn mutant(name: &str) -> Option<(&'static ProtocolInfo, &'static MutantInfo)> {
    protocols()
        .iter()
        .find_map(|p| p.mutant(name).map(|m| (*p, m)))
}

/// `a, b, c`: for error messages that list the valid names.
pub fn one_of<'a>(names: impl IntoIterator<Item = &'a str>) -> OneOf {
    OneOf(names.into_iter().map(str::to_owned).collect())
}

/// A list of names, displayed comma-separated.
#[derive(Debug)]
pub struct OneOf(Vec<String>);

impl fmt::Display for OneOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_mutants_name_a_real_invariant() {
        let mut invariants = BTreeSet::new();
        let mut mutants = BTreeSet::new();
        for p in protocols() {
            for i in p.invariants {
                assert!(
                    i.name.starts_with(&format!("{}.", p.name)),
                    "{} not prefixed by its protocol",
                    i.name
                );
                assert!(invariants.insert(i.name), "duplicate invariant {}", i.name);
            }
            for m in p.mutants {
                assert!(mutants.insert(m.name), "duplicate mutant {}", m.name);
                assert!(
                    p.invariant(m.invariant).is_some(),
                    "mutant {} names unknown invariant {}",
                    m.name,
                    m.invariant
                );
            }
            assert!(!p.mutants.is_empty(), "{} keeps no mutant", p.name);
            for site in p.sites {
                for f in site.faults {
                    assert!(
                        p.fault_index(f).is_some(),
                        "{}: site {} names unknown fault {f}",
                        p.name,
                        site.name
                    );
                }
            }
            for f in p.faults {
                assert!(
                    p.sites.iter().any(|s| s.faults.contains(&f.name)),
                    "{}: fault {} has no site",
                    p.name,
                    f.name
                );
            }
            let names = p.transition_names();
            for (t, _) in p.unreachable {
                assert!(
                    names.iter().any(|n| n == t),
                    "{}: unreachable `{t}` is not a transition",
                    p.name
                );
            }
        }
    }
}
