//! Which target channels of a task have been acknowledged, and with what.
//!
//! Acks are idempotent: the first ack of a channel is kept, later ones (a
//! duplicate consumer ack, a second copy of the message after an append
//! retry) change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ChannelId, MessageId, TimeTick};

/// What an ack recorded for a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AckInfo {
    /// The id of the acknowledged copy of the message on the channel.
    pub message_id: MessageId,
    /// Its time tick.
    pub time_tick: TimeTick,
}

/// The result of offering an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AckOutcome {
    /// First ack of this channel: recorded.
    Recorded,
    /// The channel was already acknowledged: nothing changed.
    Duplicate,
    /// The channel is not a target of the task: nothing changed.
    NotATarget,
}

/// The acks of one task, by channel.
///
/// Kept as a slice sorted by channel, shared until written: a task's acks
/// are copied into each of its catalog writes, and change only when an ack
/// is recorded (which builds the one new slice). It hashes, compares and
/// serializes as the map from channel to ack it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct AckSet {
    acks: Arc<[(ChannelId, AckInfo)]>,
}

impl Serialize for AckSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for AckSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<ChannelId, AckInfo>::deserialize(d)?;
        Ok(AckSet {
            acks: map.into_iter().collect(),
        })
    }
}

impl AckSet {
    /// No channel acknowledged.
    pub fn new() -> Self {
        AckSet::default()
    }

    fn position(&self, channel: ChannelId) -> Result<usize, usize> {
        self.acks.binary_search_by_key(&channel, |&(c, _)| c)
    }

    /// Offers an ack of `channel` for a task targeting `targets`.
    pub fn ack(
        &mut self,
        targets: &BTreeSet<ChannelId>,
        channel: ChannelId,
        info: AckInfo,
    ) -> AckOutcome {
        if !targets.contains(&channel) {
            return AckOutcome::NotATarget;
        }
        match self.position(channel) {
            Ok(_) => AckOutcome::Duplicate,
            Err(i) => {
                let (before, after) = self.acks.split_at(i);
                self.acks = before
                    .iter()
                    .chain(std::iter::once(&(channel, info)))
                    .chain(after)
                    .copied()
                    .collect();
                AckOutcome::Recorded
            }
        }
    }

    /// The ack of `channel`, if any.
    pub fn get(&self, channel: ChannelId) -> Option<&AckInfo> {
        self.position(channel).ok().map(|i| &self.acks[i].1)
    }

    fn contains(&self, channel: ChannelId) -> bool {
        self.position(channel).is_ok()
    }

    /// Whether every target is acknowledged.
    pub fn all(&self, targets: &BTreeSet<ChannelId>) -> bool {
        // Fewer acks than targets cannot cover them (the common case while
        // a task is in flight): no walk.
        self.acks.len() >= targets.len() && targets.iter().all(|&c| self.contains(c))
    }

    /// Targets not yet acknowledged, in channel order.
    pub fn missing<'a>(
        &'a self,
        targets: &'a BTreeSet<ChannelId>,
    ) -> impl Iterator<Item = ChannelId> + 'a {
        targets.iter().copied().filter(|&c| !self.contains(c))
    }

    /// Acknowledged channels, in channel order.
    pub fn iter(&self) -> impl Iterator<Item = (&ChannelId, &AckInfo)> {
        self.acks.iter().map(|(c, i)| (c, i))
    }

    /// Number of acknowledged channels.
    pub fn len(&self) -> usize {
        self.acks.len()
    }

    /// Whether no channel is acknowledged.
    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(m: u64) -> AckInfo {
        AckInfo {
            message_id: MessageId(m),
            time_tick: TimeTick(m * 10),
        }
    }

    #[test]
    fn first_ack_wins_and_duplicates_change_nothing() {
        let targets: BTreeSet<ChannelId> = [ChannelId(0), ChannelId(1)].into();
        let mut a = AckSet::new();
        assert_eq!(a.ack(&targets, ChannelId(1), info(5)), AckOutcome::Recorded);
        assert_eq!(
            a.ack(&targets, ChannelId(1), info(6)),
            AckOutcome::Duplicate
        );
        assert_eq!(a.get(ChannelId(1)), Some(&info(5)));
        assert_eq!(
            a.ack(&targets, ChannelId(7), info(1)),
            AckOutcome::NotATarget
        );
        assert!(!a.all(&targets));
        assert_eq!(a.missing(&targets).collect::<Vec<_>>(), [ChannelId(0)]);
        a.ack(&targets, ChannelId(0), info(1));
        assert!(a.all(&targets));
    }

    #[test]
    fn serializes_as_a_map_from_channel_to_ack() {
        let targets: BTreeSet<ChannelId> = [ChannelId(0), ChannelId(3)].into();
        let mut a = AckSet::new();
        a.ack(&targets, ChannelId(3), info(2));
        a.ack(&targets, ChannelId(0), info(1));
        let json = serde_json::to_string(&a).expect("serialize");
        let map: BTreeMap<ChannelId, AckInfo> =
            [(ChannelId(0), info(1)), (ChannelId(3), info(2))].into();
        assert_eq!(json, serde_json::to_string(&map).expect("serialize"));
        let back: AckSet = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, a);
    }

    proptest! {
        /// Hashes as the map it stands for, whatever the order acks came in:
        /// digests and fingerprints do not depend on the representation.
        /// Up to 24 channels: more than fit on the stack while recording.
        #[test]
        fn hashes_as_the_map_of_its_acks(
            acks in prop::collection::vec((0u32..24, 0u64..100), 0..40),
        ) {
            use std::hash::{BuildHasher, BuildHasherDefault};
            use std::collections::hash_map::DefaultHasher;
            let targets: BTreeSet<ChannelId> = (0..24).map(ChannelId).collect();
            let mut set = AckSet::new();
            let mut map = BTreeMap::new();
            for (c, m) in acks {
                set.ack(&targets, ChannelId(c), info(m));
                map.entry(ChannelId(c)).or_insert(info(m));
            }
            let h = BuildHasherDefault::<DefaultHasher>::default();
            prop_assert_eq!(h.hash_one(&set), h.hash_one(&map));
            prop_assert!(set.iter().map(|(c, i)| (*c, *i)).eq(map.into_iter()));
        }

        /// Against a naive model: a list of (channel, info) pairs where the
        /// first occurrence of a target channel counts.
        #[test]
        fn agrees_with_a_list_of_first_acks(
            targets in prop::collection::btree_set(0u32..6, 1..5),
            acks in prop::collection::vec((0u32..8, 0u64..100), 0..30),
        ) {
            let targets: BTreeSet<ChannelId> = targets.into_iter().map(ChannelId).collect();
            let mut set = AckSet::new();
            let mut model: Vec<(ChannelId, AckInfo)> = Vec::new();
            for (c, m) in acks {
                let c = ChannelId(c);
                let expected = if !targets.contains(&c) {
                    AckOutcome::NotATarget
                } else if model.iter().any(|(mc, _)| *mc == c) {
                    AckOutcome::Duplicate
                } else {
                    model.push((c, info(m)));
                    AckOutcome::Recorded
                };
                prop_assert_eq!(set.ack(&targets, c, info(m)), expected);
                let all = targets.iter().all(|t| model.iter().any(|(mc, _)| mc == t));
                prop_assert_eq!(set.all(&targets), all);
                for (mc, mi) in &model {
                    prop_assert_eq!(set.get(*mc), Some(mi));
                }
                prop_assert_eq!(set.len(), model.len());
            }
        }
    }
}
