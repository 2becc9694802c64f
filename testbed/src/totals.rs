//! What every node's daemons counted, summed over the overlay, and what
//! they counted between two readings: the demo's and the soak's tallies.

use std::collections::BTreeMap;

use crate::bed::Testbed;

/// Counters of every node, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Datagrams the dataplanes relayed.
    pub relayed: u64,
    /// The dataplanes' drops by reason.
    pub dropped: BTreeMap<String, u64>,
    /// What the kernel dropped before a worker, by reason.
    pub socket_dropped: BTreeMap<String, u64>,
    /// Control messages rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
}

impl Totals {
    /// Reads every node's dataplane and control process.
    pub fn read(bed: &Testbed) -> anyhow::Result<Totals> {
        let mut t = Totals::default();
        for id in bed.topology().ids() {
            let stats = bed.dataplane_stats(id)?;
            t.relayed += stats.total.relayed;
            add(&mut t.dropped, stats.total.dropped);
            add(&mut t.socket_dropped, stats.total.socket_dropped);
            add(&mut t.rejected, bed.control_status(id)?.rejected);
        }
        Ok(t)
    }

    /// What was counted from `before` to this reading, zeros left out.
    pub fn since(&self, before: &Totals) -> Totals {
        Totals {
            relayed: self.relayed - before.relayed,
            dropped: difference(&self.dropped, &before.dropped),
            socket_dropped: difference(&self.socket_dropped, &before.socket_dropped),
            rejected: difference(&self.rejected, &before.rejected),
        }
    }
}

fn add(into: &mut BTreeMap<String, u64>, counts: BTreeMap<String, u64>) {
    for (reason, n) in counts {
        *into.entry(reason).or_default() += n;
    }
}

/// `after - before` per key, zeros left out.
fn difference(
    after: &BTreeMap<String, u64>,
    before: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_subtracts_per_reason_and_leaves_out_zeros() {
        let map = |kv: &[(&str, u64)]| kv.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let before = Totals {
            relayed: 5,
            dropped: map(&[("malformed", 2), ("no_route", 1)]),
            ..Totals::default()
        };
        let after = Totals {
            relayed: 9,
            dropped: map(&[("malformed", 2), ("no_route", 4), ("hop_limit", 1)]),
            rejected: map(&[("bad_mac", 3)]),
            ..Totals::default()
        };
        assert_eq!(
            after.since(&before),
            Totals {
                relayed: 4,
                dropped: map(&[("hop_limit", 1), ("no_route", 3)]),
                socket_dropped: BTreeMap::new(),
                rejected: map(&[("bad_mac", 3)]),
            }
        );
    }
}
