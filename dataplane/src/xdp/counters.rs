//! The classifier's counters, summed over every CPU.

use detour_common::maps::{Counter, Fate, PacketCount};

/// A reading of every classifier counter, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters([PacketCount; Counter::COUNT as usize]);

impl Counters {
    pub(super) fn from_slots(slots: [PacketCount; Counter::COUNT as usize]) -> Self {
        Counters(slots)
    }

    pub fn get(&self, counter: Counter) -> PacketCount {
        self.0[counter.index() as usize]
    }

    /// Every counter with its reading, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Counter, PacketCount)> + '_ {
        Counter::ALL.iter().map(|c| (*c, self.get(*c)))
    }

    /// The sum of the counters of one program (`wan`: the WAN program's,
    /// else the LAN program's) whose frames met `fate`.
    pub fn total(&self, wan: bool, fate: Fate) -> PacketCount {
        self.iter()
            .filter(|(c, _)| c.is_wan() == wan && c.fate() == fate)
            .fold(PacketCount::default(), |a, (_, n)| a.merge(n))
    }

    /// What moved between `earlier` and this reading.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = *self;
        for (slot, before) in out.0.iter_mut().zip(earlier.0.iter()) {
            slot.packets = slot.packets.wrapping_sub(before.packets);
            slot.bytes = slot.bytes.wrapping_sub(before.bytes);
        }
        out
    }

    /// The counters that are not zero, for messages and test failures.
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        self.iter()
            .filter(|(_, n)| n.packets != 0)
            .map(|(c, n)| (c.name(), n.packets))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_split_by_program_and_fate() {
        let mut slots = [PacketCount::default(); Counter::COUNT as usize];
        for (i, s) in slots.iter_mut().enumerate() {
            *s = PacketCount {
                packets: 1 << i,
                bytes: 100,
            };
        }
        let c = Counters::from_slots(slots);
        let wan = [Fate::ToWorker, Fate::Passed, Fate::Dropped].map(|f| c.total(true, f).packets);
        let lan = [Fate::ToWorker, Fate::Passed, Fate::Dropped].map(|f| c.total(false, f).packets);
        // Every counter falls in exactly one (program, fate) bucket.
        assert_eq!(wan.iter().chain(&lan).sum::<u64>(), (1 << 17) - 1);
        assert_eq!(wan, [1, 2 | 4, (1 << 13) - 1 - 7]);
        assert_eq!(lan, [1 << 13, (1 << 14) | (1 << 15), 1 << 16]);
        assert_eq!(c.since(&c).nonzero(), vec![]);
    }
}
