//! Link state: every node's measured row of the link table, as flooded.
//!
//! Each node sends its row (its estimate of the link to every peer) straight
//! to every peer it can reach; nobody forwards another's row. One-hop
//! routing needs no more: a node weighs the path through relay `r` with its
//! own link to `r` and `r`'s row, and it only ever relays through a node it
//! can reach itself, whose row therefore reaches it too.
//!
//! [`Advertiser`] decides when this node's row changes and what goes out.
//! The row is sticky: an entry moves only when the link changed materially
//! (went up or down, or its RTT or loss moved past
//! [`MATERIAL_RTT_FRACTION`], [`MATERIAL_RTT`] or [`MATERIAL_LOSS`]), so
//! that the estimates' wander costs neither bytes nor route computations
//! downstream. Each change makes a new version of the row, at most one per
//! `min_interval`, which gathers the changes of a burst (a node coming up,
//! a peer failing) into one version, and goes out as a *delta*: only the
//! links that changed since the version before.
//!
//! Delivery is reliable, as in OSPF's flooding (RFC 2328, section 13),
//! over one hop: the receiver of a row acknowledges the version it now
//! holds, and a peer that has not acknowledged the current version within
//! a probe timeout gets the row whole (`node` does this). A delta applies
//! only on top of the version just before it; a receiver that lacks that
//! version (it lost a delta, or just started) asks for the row whole. So
//! a steady overlay sends no link state at all, and a change costs one
//! small delta and one acknowledgement per peer, where re-sending whole
//! rows costs `9N` bytes per peer: the quadratic cost of full-mesh link
//! state that kept RON to tens of nodes.
//!
//! [`LinkStateDb`] keeps the rows of the other nodes. A row replaces the
//! one it has if its version is newer and is refused as stale if older (a
//! reordered or delayed datagram). A row whose origin has not been heard
//! from (any message, probes included) for `max_age` is dropped, and its
//! links read as unknown (down): its origin is gone or cut off from us.
//!
//! ## Cost
//!
//! A row or delta of `n` links is `45 + 9n` bytes, an acknowledgement 40
//! (`message::Message::wire_len`). A node whose link to one peer changes
//! sends a 53-byte delta to each of its `N − 1` peers and gets as many
//! acknowledgements back; a whole row (`44 + 9(N − 1)` bytes) goes only to
//! a peer that comes up, asks, or missed a version.

use std::collections::BTreeSet;
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::{LinkEstimate, Time};
use crate::members::Members;
use crate::message::{
    LinkState, Reject, RowKind, link_fields, loss_from_wire, quantise, rtt_from_wire,
};

/// When a node sends its row, and how long it trusts the rows of others.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStateConfig {
    /// The shortest gap between two versions of this node's row: changes
    /// within it go out together.
    pub min_interval: Duration,
    /// A row whose origin has not been heard from for this long is
    /// dropped: its origin is gone.
    pub max_age: Duration,
}

impl Default for LinkStateConfig {
    fn default() -> Self {
        LinkStateConfig {
            min_interval: Duration::from_millis(50),
            max_age: Duration::from_secs(16),
        }
    }
}

/// An RTT change is material past this fraction of the advertised RTT...
pub const MATERIAL_RTT_FRACTION: f64 = 0.05;
/// ...and this much: half the path hysteresis (`paths::Hysteresis`), so
/// that an advertised row is never off by enough to hide a clear gain.
pub const MATERIAL_RTT: Duration = Duration::from_millis(2);
/// A loss change is material from this much: five probes of the default
/// 100-probe window, so that a few stray losses go unannounced.
pub const MATERIAL_LOSS: f64 = 0.05;

/// Whether the link moved from `advertised` to `now` by enough to tell the
/// overlay.
pub fn is_material(advertised: &LinkEstimate, now: &LinkEstimate) -> bool {
    if advertised.up != now.up {
        return true;
    }
    if !now.up {
        // A down link's figures mean nothing to anyone.
        return false;
    }
    let (a, b) = (advertised.rtt.as_secs_f64(), now.rtt.as_secs_f64());
    let rtt_moved = (a - b).abs();
    let rtt = rtt_moved > MATERIAL_RTT.as_secs_f64() && rtt_moved > MATERIAL_RTT_FRACTION * a;
    rtt || (advertised.loss - now.loss).abs() >= MATERIAL_LOSS
}

/// This node's row: when it changes, and what goes out.
#[derive(Debug, Clone)]
pub struct Advertiser {
    config: LinkStateConfig,
    origin: NodeId,
    /// The row as last changed: by ascending peer id, quantised as the
    /// wire carries it; `peers` indexes it.
    row: Vec<(NodeId, LinkEstimate)>,
    peers: Members,
    /// The entries changed since the last version, by index in `row`, and
    /// a mark on each to keep them unique.
    pending: Vec<usize>,
    is_pending: Vec<bool>,
    /// Whether this node relays for no one, and whether that changed since
    /// the last version.
    drained: bool,
    drained_pending: bool,
    /// The current version.
    version: u64,
    last_change: Option<Time>,
}

impl Advertiser {
    /// `peers` start down. The row as it starts (every link down) is
    /// version `version_base`, which must exceed every version this origin
    /// used before (microseconds since the Unix epoch at start, as for the
    /// message sequence numbers), so that a restarted node's rows are not
    /// refused as stale.
    pub fn new(
        config: LinkStateConfig,
        origin: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        version_base: u64,
    ) -> Advertiser {
        let peers = Members::new(peers.into_iter().filter(|p| *p != origin));
        let row: Vec<_> = peers
            .ids()
            .iter()
            .map(|p| (*p, quantise(LinkEstimate::DOWN)))
            .collect();
        Advertiser {
            peers,
            config,
            origin,
            is_pending: vec![false; row.len()],
            row,
            pending: Vec::new(),
            drained: false,
            drained_pending: false,
            version: version_base.max(1),
            last_change: None,
        }
    }

    /// The overlay's peers changed (a reload): the row keeps its entries
    /// for the peers that stay, starts the new ones down, and drops those
    /// that left, as a new version (a delta cannot say a link is gone, so
    /// it goes out whole).
    pub fn set_peers(&mut self, peers: impl IntoIterator<Item = NodeId>) {
        let peers = Members::new(peers.into_iter().filter(|p| *p != self.origin));
        self.row = peers
            .ids()
            .iter()
            .map(|p| {
                let kept = self.peers.index(*p).map(|i| self.row[i].1);
                (*p, kept.unwrap_or(quantise(LinkEstimate::DOWN)))
            })
            .collect();
        self.is_pending = vec![false; self.row.len()];
        self.pending.clear();
        self.peers = peers;
        self.version += 1;
    }

    /// The link to `peer` is now `estimate`; true if that is a material
    /// change, which goes out with the next version.
    pub fn update(&mut self, peer: NodeId, estimate: LinkEstimate) -> bool {
        let Some(i) = self.peers.index(peer) else {
            return false;
        };
        let entry = &mut self.row[i].1;
        if !is_material(entry, &estimate) {
            return false;
        }
        *entry = quantise(estimate);
        if !std::mem::replace(&mut self.is_pending[i], true) {
            self.pending.push(i);
        }
        true
    }

    /// Drains this node (it asks the others not to relay through it) or
    /// undrains it; true if that is a change, which goes out with the next
    /// version.
    pub fn set_drained(&mut self, drained: bool) -> bool {
        if self.drained == drained {
            return false;
        }
        self.drained = drained;
        self.drained_pending = !self.drained_pending;
        true
    }

    /// Whether this node is drained, as advertised or about to be.
    pub fn is_drained(&self) -> bool {
        self.drained
    }

    /// The link to `peer` as advertised, or about to be.
    pub fn link(&self, peer: NodeId) -> Option<LinkEstimate> {
        self.peers.index(peer).map(|i| self.row[i].1)
    }

    /// The version of the last change sent (or of the row as it started).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the next version is due: `None` while nothing changed.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.pending.is_empty() && !self.drained_pending {
            return None;
        }
        Some(
            self.last_change
                .map_or(Time::ZERO, |last| last + self.config.min_interval),
        )
    }

    /// The delta that makes the next version, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Time) -> Option<LinkState> {
        if self.poll_timeout().is_none_or(|due| now < due) {
            return None;
        }
        self.pending.sort_unstable();
        let links = self
            .pending
            .drain(..)
            .map(|i| {
                self.is_pending[i] = false;
                self.row[i]
            })
            .collect();
        self.version += 1;
        self.last_change = Some(now);
        self.drained_pending = false;
        Some(LinkState {
            origin: self.origin,
            version: self.version,
            kind: RowKind::Delta,
            drained: self.drained,
            links,
        })
    }

    /// The row whole, as of [`Self::version`], for a peer that lacks it.
    /// Changes not yet sent may be in it already; the delta that sends
    /// them then changes nothing at that peer.
    pub fn whole(&self) -> LinkState {
        LinkState {
            origin: self.origin,
            version: self.version,
            kind: RowKind::Full,
            drained: self.drained,
            links: self.row.clone(),
        }
    }
}

/// A link as stored: the wire's fields (`message::link_fields`), in 8
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredLink {
    rtt_us: u32,
    loss: u16,
    /// 0 unknown (not in the row), 1 down, 2 up.
    state: u8,
}

impl StoredLink {
    const UNKNOWN: StoredLink = StoredLink {
        rtt_us: 0,
        loss: u16::MAX,
        state: 0,
    };

    fn new(estimate: &LinkEstimate) -> StoredLink {
        let (up, rtt_us, loss) = link_fields(estimate);
        StoredLink {
            rtt_us,
            loss,
            state: 1 + up,
        }
    }

    fn estimate(self) -> Option<LinkEstimate> {
        (self.state != 0).then(|| LinkEstimate {
            up: self.state == 2,
            rtt: rtt_from_wire(self.rtt_us),
            loss: loss_from_wire(self.loss),
        })
    }
}

/// The rows of every other member, as last heard.
///
/// Dense, by destination: the links from every member to the `j`-th
/// member are the `j`-th run of `members.len()` entries. A lookup is two
/// index computations, and the path selector, which weighs every relay's
/// leg toward one destination in turn, reads adjacent entries.
#[derive(Debug, Clone)]
pub struct LinkStateDb {
    local: NodeId,
    members: Members,
    /// The destinations whose link changed in the last row accepted.
    changed: Vec<NodeId>,
    /// Per member, in `members` order: the row's version and when its
    /// origin was last heard from; `None` for no row.
    rows: Vec<Option<(u64, Time)>>,
    /// Per member: its row says it is drained (relays for no one).
    drained: Vec<bool>,
    /// Whether the last row accepted drained or undrained its origin.
    drain_changed: bool,
    links: Vec<StoredLink>,
    /// One entry per row held: a time by which it may expire, earliest
    /// first. Hearing from an origin only moves its `rows` time; the entry
    /// is checked, and moved on, when it comes due.
    expiries: BTreeSet<(Time, NodeId)>,
    max_age: Duration,
}

/// The version a row is held at once its origin restarted: below every
/// real version (an origin's first is 1 or more).
const RESTARTED: u64 = 0;

/// What a received row did to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new row, or one that differs from the stored one: routes may
    /// change.
    Changed,
    /// Nothing new: the version held already, or a row with the same links.
    Unchanged,
    /// A delta on a version not held (one was lost, or this node just
    /// started): it was not applied, and the row must come whole.
    NeedsWholeRow,
}

impl LinkStateDb {
    /// An empty database for `local` in an overlay of `members` (`local`
    /// may be among them).
    pub fn new(
        local: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        max_age: Duration,
    ) -> Self {
        let members = Members::new(members);
        let n = members.len();
        LinkStateDb {
            local,
            changed: Vec::new(),
            rows: vec![None; n],
            drained: vec![false; n],
            drain_changed: false,
            links: vec![StoredLink::UNKNOWN; n * n],
            members,
            expiries: BTreeSet::new(),
            max_age,
        }
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        self.members.index(node)
    }

    /// Takes in a row or delta heard at `now`. Refused: a row of this node
    /// (ours is never learnt back), of a node outside the overlay, or older
    /// than the one stored. After [`Accepted::Changed`],
    /// [`Self::last_changed`] names the links that changed.
    pub fn accept(&mut self, now: Time, row: &LinkState) -> Result<Accepted, Reject> {
        self.changed.clear();
        self.drain_changed = false;
        if row.origin == self.local {
            return Err(Reject::Stale);
        }
        let origin = self.index(row.origin).ok_or(Reject::UnknownNode)?;
        let stored = self.rows[origin].map(|(version, _)| version);
        match (row.kind, stored) {
            (_, Some(version)) if row.version < version => return Err(Reject::Stale),
            // Its origin restarted: only a whole row of its new run applies.
            (RowKind::Delta, Some(RESTARTED)) => return Ok(Accepted::NeedsWholeRow),
            (RowKind::Delta, Some(version)) if row.version == version => {
                self.heard(now, row.origin);
                return Ok(Accepted::Unchanged);
            }
            (RowKind::Delta, Some(version)) if row.version == version + 1 => {}
            (RowKind::Delta, _) => return Ok(Accepted::NeedsWholeRow),
            (RowKind::Full, _) => {}
        }
        if stored.is_none() {
            self.expiries.insert((now + self.max_age, row.origin));
        }
        self.rows[origin] = Some((row.version, now));
        self.drain_changed =
            std::mem::replace(&mut self.drained[origin], row.drained) != row.drained;

        let n = self.members.len();
        if row.kind == RowKind::Delta {
            // Only the links it names: a few, where a whole row is all.
            for (peer, estimate) in &row.links {
                if let Some(to) = self.index(*peer) {
                    let link = StoredLink::new(estimate);
                    let slot = &mut self.links[to * n + origin];
                    if *slot != link {
                        self.changed.push(*peer);
                        *slot = link;
                    }
                }
            }
        } else {
            // Both sorted by id (the decoder refuses rows out of order):
            // one merging walk, no lookups, no allocation.
            debug_assert!(row.links.is_sorted_by_key(|(peer, _)| *peer));
            let mut entries = row.links.iter().peekable();
            for (slot, member) in self.links[origin..]
                .iter_mut()
                .step_by(n)
                .zip(self.members.ids())
            {
                while entries.next_if(|(peer, _)| peer < member).is_some() {}
                let link = match entries.next_if(|(peer, _)| peer == member) {
                    Some((_, estimate)) => StoredLink::new(estimate),
                    None => StoredLink::UNKNOWN,
                };
                if *slot != link {
                    self.changed.push(*member);
                    *slot = link;
                }
            }
        }
        Ok(
            if stored.is_none() || !self.changed.is_empty() || self.drain_changed {
                Accepted::Changed
            } else {
                Accepted::Unchanged
            },
        )
    }

    /// The overlay's members changed (a reload): the rows of the members
    /// that stay are kept, with their links to each other; the links to
    /// and from the others are gone.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = NodeId>) {
        let old = std::mem::replace(&mut self.members, Members::new(members));
        let (n_old, n) = (old.len(), self.members.len());
        let kept = |i: usize| old.index(self.members.ids()[i]);
        let mut links = vec![StoredLink::UNKNOWN; n * n];
        for to in 0..n {
            for from in 0..n {
                if let (Some(t), Some(f)) = (kept(to), kept(from)) {
                    links[to * n + from] = self.links[t * n_old + f];
                }
            }
        }
        self.links = links;
        self.rows = (0..n).map(|i| kept(i).and_then(|k| self.rows[k])).collect();
        self.drained = (0..n)
            .map(|i| kept(i).is_some_and(|k| self.drained[k]))
            .collect();
        let members = &self.members;
        self.expiries
            .retain(|(_, origin)| members.index(*origin).is_some());
        self.changed.clear();
        self.drain_changed = false;
    }

    /// `origin` restarted: its versions start again, so the next whole row
    /// it sends replaces the one held, whatever its version. The links
    /// held stay until then, so that routes do not flap meanwhile.
    pub fn restarted(&mut self, origin: NodeId) {
        if let Some(i) = self.index(origin)
            && let Some((version, _)) = &mut self.rows[i]
        {
            *version = RESTARTED;
        }
    }

    /// `origin` was heard from at `now` (any message): its row lives on.
    pub fn heard(&mut self, now: Time, origin: NodeId) {
        if let Some(i) = self.index(origin)
            && let Some((_, heard)) = &mut self.rows[i]
        {
            *heard = now;
        }
    }

    /// The destinations toward which the origin of the last row accepted
    /// reported a changed link (all it names, for a first row).
    pub fn last_changed(&self) -> &[NodeId] {
        &self.changed
    }

    /// Whether the last row accepted changed whether its origin is drained.
    pub fn drain_changed(&self) -> bool {
        self.drain_changed
    }

    /// Whether `node`'s row says it is drained: it relays for no one.
    pub fn is_drained(&self, node: NodeId) -> bool {
        self.index(node).is_some_and(|i| self.drained[i])
    }

    /// The members whose rows say they are drained, ascending.
    pub fn drained(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .ids()
            .iter()
            .zip(&self.drained)
            .filter_map(|(node, drained)| drained.then_some(*node))
    }

    /// When the next row may expire (it is checked then).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Drops the rows whose origin has not been heard from for `max_age`;
    /// how many were.
    pub fn expire(&mut self, now: Time) -> usize {
        let n = self.members.len();
        let mut dropped = 0;
        while let Some(&(at, origin)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            let i = self.index(origin).expect("only members have rows");
            let (_, heard) = self.rows[i].expect("an entry per row held");
            if heard + self.max_age > now {
                self.expiries.insert((heard + self.max_age, origin));
                continue;
            }
            self.rows[i] = None;
            self.drained[i] = false;
            for link in self.links[i..].iter_mut().step_by(n) {
                *link = StoredLink::UNKNOWN;
            }
            dropped += 1;
        }
        dropped
    }

    /// The link from `from` to `to` as `from` last reported it; `None`
    /// when there is no row of `from` or it does not name `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate> {
        let (f, t) = (self.index(from)?, self.index(to)?);
        self.links[t * self.members.len() + f].estimate()
    }

    /// The version of `origin`'s row, and when its origin was last heard
    /// from.
    pub fn row_info(&self, origin: NodeId) -> Option<(u64, Time)> {
        self.rows[self.index(origin)?]
    }

    /// How many rows are held.
    pub fn len(&self) -> usize {
        self.rows.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn up(rtt_ms: u64, loss: f64) -> LinkEstimate {
        LinkEstimate {
            up: true,
            rtt: ms(rtt_ms),
            loss,
        }
    }

    fn row(origin: NodeId, version: u64, links: &[(NodeId, LinkEstimate)]) -> LinkState {
        LinkState {
            origin,
            version,
            kind: RowKind::Full,
            drained: false,
            links: links.to_vec(),
        }
    }

    fn delta(origin: NodeId, version: u64, links: &[(NodeId, LinkEstimate)]) -> LinkState {
        LinkState {
            kind: RowKind::Delta,
            ..row(origin, version, links)
        }
    }

    #[test]
    fn materiality_needs_both_rtt_thresholds_or_a_loss_step_or_a_state_change() {
        let base = up(100, 0.0);
        assert!(!is_material(&base, &up(104, 0.0)), "4 ms is under 5 %");
        assert!(is_material(&base, &up(106, 0.0)));
        assert!(
            !is_material(&up(10, 0.0), &up(11, 0.0)),
            "1 ms is under 2 ms"
        );
        assert!(is_material(&up(10, 0.0), &up(13, 0.0)));
        assert!(!is_material(&base, &up(100, 0.04)));
        assert!(is_material(&base, &up(100, 0.06)));
        assert!(is_material(&base, &LinkEstimate::DOWN));
        assert!(is_material(&LinkEstimate::DOWN, &base));
        let down_later = LinkEstimate {
            loss: 0.5,
            ..LinkEstimate::DOWN
        };
        assert!(!is_material(&LinkEstimate::DOWN, &down_later));
    }

    #[test]
    fn advertiser_sends_changes_as_deltas_batched_and_nothing_when_steady() {
        let config = LinkStateConfig::default();
        let mut adv = Advertiser::new(config.clone(), A, [A, B, C], 1000);
        // The row as it starts (all down) is version 1000, sent to no one
        // unless asked.
        assert_eq!(adv.version(), 1000);
        assert_eq!(adv.poll_timeout(), None);
        let start = adv.whole();
        assert_eq!((start.version, start.kind), (1000, RowKind::Full));
        assert_eq!(start.links.len(), 2, "not the origin itself");
        assert!(start.links.iter().all(|(_, l)| !l.up));

        // The first change goes out at once, as a delta.
        assert!(adv.update(C, up(20, 0.0)));
        let first = adv.poll_transmit(Time::ZERO).expect("first change");
        assert_eq!((first.version, first.kind), (1001, RowKind::Delta));
        assert_eq!(first.links, vec![(C, up(20, 0.0))]);
        assert_eq!(adv.poll_timeout(), None);

        // Two changes 10 ms apart go out together, min_interval after the
        // last version; a link changed twice goes once, as it is now.
        assert!(adv.update(C, up(30, 0.0)));
        assert!(adv.update(B, up(10, 0.0)));
        assert!(adv.update(C, up(40, 0.0)));
        assert!(!adv.update(B, up(10, 0.0)), "no change, nothing to send");
        assert_eq!(adv.poll_timeout(), Some(config.min_interval));
        assert!(adv.poll_transmit(ms(10)).is_none(), "too soon");
        let second = adv.poll_transmit(config.min_interval).expect("batched");
        assert_eq!(second.version, 1002);
        assert_eq!(second.links, vec![(B, up(10, 0.0)), (C, up(40, 0.0))]);

        // Wander below the thresholds is not news: the sticky row stays,
        // and nothing goes out.
        assert!(!adv.update(B, up(11, 0.0)));
        assert_eq!(adv.poll_timeout(), None);
        assert!(adv.poll_transmit(ms(60_000)).is_none());
        assert!(!adv.update(NodeId(9), up(1, 0.0)), "not a peer");
        let whole = adv.whole();
        assert_eq!(whole.version, 1002);
        assert_eq!(whole.links, vec![(B, up(10, 0.0)), (C, up(40, 0.0))]);
    }

    #[test]
    fn db_takes_newer_rows_and_following_deltas_and_refuses_older() {
        let mut db = LinkStateDb::new(A, [A, B, C], ms(1000));
        let v5 = row(B, 5, &[(A, up(10, 0.0)), (C, up(20, 0.1))]);
        assert_eq!(db.accept(ms(0), &v5), Ok(Accepted::Changed));
        assert_eq!(db.link(B, C), Some(quantise(up(20, 0.1))));
        assert_eq!(db.link(B, A), Some(up(10, 0.0)));
        assert_eq!(db.link(C, B), None, "no row of C");

        assert_eq!(db.accept(ms(10), &v5), Ok(Accepted::Unchanged));
        let same_links = row(B, 6, &v5.links);
        assert_eq!(db.accept(ms(20), &same_links), Ok(Accepted::Unchanged));
        assert_eq!(db.accept(ms(30), &v5), Err(Reject::Stale));

        // A delta on the version held changes only the links it names.
        let d7 = delta(B, 7, &[(C, LinkEstimate::DOWN)]);
        assert_eq!(db.accept(ms(40), &d7), Ok(Accepted::Changed));
        assert_eq!(db.last_changed(), [C]);
        assert_eq!(db.link(B, C).map(|l| l.up), Some(false));
        assert_eq!(db.link(B, A), Some(up(10, 0.0)), "kept");
        assert_eq!(db.accept(ms(45), &d7), Ok(Accepted::Unchanged), "again");

        // A delta past a lost one is not applied: the row must come whole.
        let d9 = delta(B, 9, &[(A, LinkEstimate::DOWN)]);
        assert_eq!(db.accept(ms(50), &d9), Ok(Accepted::NeedsWholeRow));
        assert_eq!(db.link(B, A), Some(up(10, 0.0)));
        assert_eq!(db.row_info(B), Some((7, ms(45))), "heard at 45 ms");
        assert_eq!(
            db.accept(ms(50), &delta(C, 2, &[])),
            Ok(Accepted::NeedsWholeRow),
            "no row of C to apply it to"
        );

        // A whole row: a link it no longer names is unknown.
        let v9 = row(B, 9, &[(A, up(10, 0.0))]);
        assert_eq!(db.accept(ms(60), &v9), Ok(Accepted::Changed));
        assert_eq!(db.link(B, C), None);
        assert_eq!(db.row_info(B), Some((9, ms(60))));
    }

    #[test]
    fn db_refuses_our_own_row_and_strangers() {
        let mut db = LinkStateDb::new(A, [A, B], ms(1000));
        assert_eq!(db.accept(ms(0), &row(A, 1, &[])), Err(Reject::Stale));
        assert_eq!(
            db.accept(ms(0), &row(NodeId(77), 1, &[])),
            Err(Reject::UnknownNode)
        );
        // Links to strangers in a member's row are ignored.
        let r = row(B, 1, &[(A, up(1, 0.0)), (NodeId(77), up(1, 0.0))]);
        assert_eq!(db.accept(ms(0), &r), Ok(Accepted::Changed));
        assert_eq!(db.link(B, NodeId(77)), None);
        assert!(!db.is_empty() && db.len() == 1);
    }

    #[test]
    fn rows_of_silent_origins_age_out_and_of_heard_ones_stay() {
        let mut db = LinkStateDb::new(A, [A, B, C], ms(1000));
        db.accept(ms(0), &row(B, 1, &[(C, up(5, 0.0))])).unwrap();
        db.accept(ms(100), &row(C, 1, &[(B, up(5, 0.0))])).unwrap();
        // B is heard from (a probe, say), not with a row.
        db.heard(ms(600), B);
        db.heard(ms(600), NodeId(77));
        assert_eq!(db.poll_timeout(), Some(ms(1000)));
        assert_eq!(db.expire(ms(1000)), 0, "B was heard since");
        assert_eq!(db.poll_timeout(), Some(ms(1100)));
        assert_eq!(db.expire(ms(1099)), 0);
        assert_eq!(db.expire(ms(1100)), 1, "C went silent");
        assert_eq!(db.link(C, B), None);
        assert_eq!(db.link(B, C).map(|l| l.up), Some(true));
        assert_eq!(db.poll_timeout(), Some(ms(1600)));
        assert_eq!(db.expire(ms(1600)), 1, "then B");
        assert!(db.is_empty());
        assert_eq!(db.poll_timeout(), None);
        // A row that comes back after expiring is news again.
        assert_eq!(
            db.accept(ms(1200), &row(C, 2, &[(B, up(5, 0.0))])),
            Ok(Accepted::Changed)
        );
    }
}
