//! The nodes of the overlay, ascending, and each one's index among them.
//!
//! The routing core keeps per-node state in arrays by this index, and looks
//! a node up on every message and for every candidate path: in a table by
//! id, one load, rather than a binary search (at 500 nodes the search's
//! nine dependent loads were a fifth of the simulator's time).

use detour_common::wire::NodeId;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// Ascending, no repeats.
    ids: Vec<NodeId>,
    /// Each member's index in `ids`, by `NodeId.0`; `u32::MAX` for none.
    slots: Vec<u32>,
}

impl Members {
    pub fn new(ids: impl IntoIterator<Item = NodeId>) -> Members {
        let mut ids: Vec<_> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let top = ids.last().map_or(0, |m| usize::from(m.0));
        let mut slots = vec![u32::MAX; top + 1];
        for (i, m) in ids.iter().enumerate() {
            slots[usize::from(m.0)] = u32::try_from(i).expect("at most 65535 members");
        }
        Members { ids, slots }
    }

    /// Every member, ascending.
    pub fn ids(&self) -> &[NodeId] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of `node` in [`Self::ids`], if it is a member.
    #[inline]
    pub fn index(&self, node: NodeId) -> Option<usize> {
        match self.slots.get(usize::from(node.0)) {
            Some(&slot) if slot != u32::MAX => Some(slot as usize),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_sorted_unique_and_indexed() {
        let m = Members::new([NodeId(9), NodeId(2), NodeId(9), NodeId(5)]);
        assert_eq!(m.ids(), [NodeId(2), NodeId(5), NodeId(9)]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.index(NodeId(5)), Some(1));
        assert_eq!(m.index(NodeId(9)), Some(2));
        assert_eq!(m.index(NodeId(3)), None);
        assert_eq!(m.index(NodeId(1000)), None);
        assert!(Members::default().is_empty());
    }
}
