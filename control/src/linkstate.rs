//! Link state: every node's measured row of the link table, as flooded.
//!
//! Each node sends its row (its estimate of the link to every peer) straight
//! to every peer it can reach; nobody forwards another's row. One-hop
//! routing needs no more: a node weighs the path through relay `r` with its
//! own link to `r` and `r`'s row, and it only ever relays through a node it
//! can reach itself, whose row therefore reaches it too.
//!
//! [`Advertiser`] decides when this node's row goes out. The row it sends
//! is sticky: an entry moves only when the link changed materially (went
//! up or down, or its RTT or loss moved past [`MATERIAL_RTT_FRACTION`],
//! [`MATERIAL_RTT`] or [`MATERIAL_LOSS`]), so that the estimates' wander
//! costs neither bytes nor route computations downstream. A change goes
//! out at once, but at most one advertisement per `min_interval`, which
//! gathers the changes of a burst (a node coming up, a peer failing) into
//! one message. With no change, the same row is sent again every
//! `refresh_interval`: that repairs a lost advertisement and tells the
//! receivers that the origin is alive.
//!
//! [`LinkStateDb`] keeps the rows of the other nodes. A row replaces the
//! one it has if its version is newer, refreshes it if the same, and is
//! refused as stale if older (a reordered or delayed datagram). A row not
//! heard for `max_age` is dropped, and its links read as unknown (down):
//! its origin is gone or cut off from us.
//!
//! ## Cost
//!
//! A row of `n` links is `44 + 9n` bytes (`message::Message::wire_len`). On
//! a steady overlay of `N` nodes each node sends `N − 1` rows every
//! `refresh_interval`: at the default 5 s and N = 50, 485-byte rows to 49
//! peers are 4.8 kB/s; at N = 500 it is about 450 kB/s, the quadratic
//! cost of full-mesh link state that kept RON to tens of nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::{LinkEstimate, Time};
use crate::message::{LinkState, Reject, link_fields, loss_from_wire, quantise, rtt_from_wire};

/// When a node sends its row, and how long it trusts the rows of others.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStateConfig {
    /// The shortest gap between two advertisements of this node's row:
    /// changes within it go out together.
    pub min_interval: Duration,
    /// The row is sent again after this long without a change, so that a
    /// lost advertisement is repaired and receivers know the origin lives.
    pub refresh_interval: Duration,
    /// A row not heard for this long is dropped: its origin is gone.
    pub max_age: Duration,
}

impl Default for LinkStateConfig {
    fn default() -> Self {
        LinkStateConfig {
            min_interval: Duration::from_millis(50),
            refresh_interval: Duration::from_secs(5),
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

/// When this node's row goes out, and what it says.
#[derive(Debug, Clone)]
pub struct Advertiser {
    config: LinkStateConfig,
    origin: NodeId,
    /// The row as last changed: by ascending peer id, quantised as the
    /// wire carries it.
    row: Vec<(NodeId, LinkEstimate)>,
    /// The version of the next advertisement.
    next_version: u64,
    /// A material change not yet sent.
    changed: bool,
    last_sent: Option<Time>,
}

impl Advertiser {
    /// `peers` start down. `version_base` must exceed every version this
    /// origin used before (microseconds since the Unix epoch at start, as
    /// for the message sequence numbers), so that a restarted node's rows
    /// are not refused as stale.
    pub fn new(
        config: LinkStateConfig,
        origin: NodeId,
        peers: impl IntoIterator<Item = NodeId>,
        version_base: u64,
    ) -> Advertiser {
        let mut row: Vec<_> = peers
            .into_iter()
            .filter(|p| *p != origin)
            .map(|p| (p, quantise(LinkEstimate::DOWN)))
            .collect();
        row.sort_unstable_by_key(|(p, _)| *p);
        row.dedup_by_key(|(p, _)| *p);
        Advertiser {
            config,
            origin,
            row,
            next_version: version_base.max(1),
            changed: false,
            last_sent: None,
        }
    }

    /// The link to `peer` is now `estimate`; true if that is a material
    /// change, which goes out with the next advertisement.
    pub fn update(&mut self, peer: NodeId, estimate: LinkEstimate) -> bool {
        let Ok(i) = self.row.binary_search_by_key(&peer, |(p, _)| *p) else {
            return false;
        };
        let entry = &mut self.row[i].1;
        if !is_material(entry, &estimate) {
            return false;
        }
        *entry = quantise(estimate);
        self.changed = true;
        true
    }

    /// The row as advertised (or about to be).
    pub fn row(&self) -> &[(NodeId, LinkEstimate)] {
        &self.row
    }

    /// When the next advertisement is due.
    pub fn poll_timeout(&self) -> Time {
        match self.last_sent {
            None => Time::ZERO,
            Some(last) if self.changed => last + self.config.min_interval,
            Some(last) => last + self.config.refresh_interval,
        }
    }

    /// The row to send to every reachable peer, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Time) -> Option<LinkState> {
        if now < self.poll_timeout() {
            return None;
        }
        let version = self.next_version;
        self.next_version += 1;
        self.changed = false;
        self.last_sent = Some(now);
        Some(LinkState {
            origin: self.origin,
            version,
            links: self.row.clone(),
        })
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
/// Dense: the links of the `i`-th member's row are the `i`-th run of
/// `members.len()` entries, so that the path selector's lookups (one per
/// relay and destination) are two index computations.
#[derive(Debug, Clone)]
pub struct LinkStateDb {
    local: NodeId,
    /// The overlay's members, ascending.
    members: Vec<NodeId>,
    /// Each member's index in `members`, by `NodeId.0`; `u32::MAX` for
    /// none. Lookups are the path selector's inner loop, so no search.
    slots: Vec<u32>,
    /// The destinations whose link changed in the last row accepted.
    changed: Vec<NodeId>,
    /// Per member, in `members` order: the row's version and when it was
    /// last heard; `None` for no row.
    rows: Vec<Option<(u64, Time)>>,
    links: Vec<StoredLink>,
    /// When each row expires, earliest first.
    expiries: BTreeSet<(Time, NodeId)>,
    max_age: Duration,
}

/// What a received row did to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// A new row, or one that differs from the stored one: routes may
    /// change.
    Changed,
    /// The same links as stored: the origin is alive, nothing more.
    Refreshed,
}

impl LinkStateDb {
    /// An empty database for `local` in an overlay of `members` (`local`
    /// may be among them).
    pub fn new(
        local: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        max_age: Duration,
    ) -> Self {
        let mut members: Vec<_> = members.into_iter().collect();
        members.sort_unstable();
        members.dedup();
        let n = members.len();
        let top = members.last().map_or(0, |m| usize::from(m.0));
        let mut slots = vec![u32::MAX; top + 1];
        for (i, m) in members.iter().enumerate() {
            slots[usize::from(m.0)] = i as u32;
        }
        LinkStateDb {
            local,
            slots,
            changed: Vec::new(),
            rows: vec![None; n],
            links: vec![StoredLink::UNKNOWN; n * n],
            members,
            expiries: BTreeSet::new(),
            max_age,
        }
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        match self.slots.get(usize::from(node.0)) {
            Some(&slot) if slot != u32::MAX => Some(slot as usize),
            _ => None,
        }
    }

    /// Takes in a row heard at `now`. Refused: a row of this node (ours is
    /// never learnt back), of a node outside the overlay, or older than
    /// the one stored. After [`Accepted::Changed`], [`Self::last_changed`]
    /// names the links that changed.
    pub fn accept(&mut self, now: Time, row: &LinkState) -> Result<Accepted, Reject> {
        self.changed.clear();
        if row.origin == self.local {
            return Err(Reject::Stale);
        }
        let origin = self.index(row.origin).ok_or(Reject::UnknownNode)?;
        let n = self.members.len();
        let stored = self.rows[origin];
        if let Some((version, heard)) = stored {
            if row.version < version {
                return Err(Reject::Stale);
            }
            self.expiries.remove(&(heard + self.max_age, row.origin));
        }
        self.expiries.insert((now + self.max_age, row.origin));
        let same_version = stored.is_some_and(|(version, _)| version == row.version);
        self.rows[origin] = Some((row.version, now));
        if same_version {
            return Ok(Accepted::Refreshed);
        }

        // Both sorted by id (the decoder refuses rows out of order): one
        // merging walk, no lookups, no allocation.
        debug_assert!(row.links.is_sorted_by_key(|(peer, _)| *peer));
        let links = &mut self.links[origin * n..(origin + 1) * n];
        let mut changed = stored.is_none();
        let mut entries = row.links.iter().peekable();
        for (slot, member) in links.iter_mut().zip(&self.members) {
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
        changed |= !self.changed.is_empty();
        Ok(if changed {
            Accepted::Changed
        } else {
            Accepted::Refreshed
        })
    }

    /// The destinations toward which the origin of the last row accepted
    /// reported a changed link (all it names, for a first row).
    pub fn last_changed(&self) -> &[NodeId] {
        &self.changed
    }

    /// When the next row expires.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Drops the rows not heard for `max_age`; how many were.
    pub fn expire(&mut self, now: Time) -> usize {
        let n = self.members.len();
        let mut dropped = 0;
        while let Some(&(at, origin)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            let i = self.index(origin).expect("only members have rows");
            self.rows[i] = None;
            self.links[i * n..(i + 1) * n].fill(StoredLink::UNKNOWN);
            dropped += 1;
        }
        dropped
    }

    /// The link from `from` to `to` as `from` last reported it; `None`
    /// when there is no row of `from` or it does not name `to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate> {
        let (f, t) = (self.index(from)?, self.index(to)?);
        self.links[f * self.members.len() + t].estimate()
    }

    /// The version and last-heard time of `origin`'s row.
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
            links: links.to_vec(),
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
    fn advertiser_sends_at_once_then_batches_changes_then_refreshes() {
        let config = LinkStateConfig::default();
        let mut adv = Advertiser::new(config.clone(), A, [A, B, C], 1000);
        // The first row (all down) goes out at once, so peers learn of us.
        let first = adv.poll_transmit(Time::ZERO).expect("first row");
        assert_eq!(first.version, 1000);
        assert_eq!(first.links.len(), 2, "not the origin itself");
        assert!(first.links.iter().all(|(_, l)| !l.up));
        assert!(adv.poll_transmit(ms(1)).is_none());

        // Two changes 10 ms apart go out together, min_interval after the
        // last advertisement.
        assert!(adv.update(B, up(10, 0.0)));
        assert!(adv.update(C, up(20, 0.0)));
        assert!(!adv.update(B, up(10, 0.0)), "no change, nothing to send");
        assert_eq!(adv.poll_timeout(), config.min_interval);
        let second = adv.poll_transmit(config.min_interval).expect("batched");
        assert_eq!(second.version, 1001);
        assert_eq!(second.links, vec![(B, up(10, 0.0)), (C, up(20, 0.0))]);

        // Wander below the thresholds is not news: the sticky row stays,
        // and the refresh repeats it.
        assert!(!adv.update(B, up(11, 0.0)));
        assert_eq!(
            adv.poll_timeout(),
            config.min_interval + config.refresh_interval
        );
        let refresh = adv.poll_transmit(adv.poll_timeout()).expect("refresh");
        assert_eq!(refresh.links, second.links);
        assert_eq!(refresh.version, 1002);
        assert!(!adv.update(NodeId(9), up(1, 0.0)), "not a peer");
    }

    #[test]
    fn db_replaces_newer_refreshes_same_refuses_older() {
        let mut db = LinkStateDb::new(A, [A, B, C], ms(1000));
        let v1 = row(B, 5, &[(A, up(10, 0.0)), (C, up(20, 0.1))]);
        assert_eq!(db.accept(ms(0), &v1), Ok(Accepted::Changed));
        assert_eq!(db.link(B, C), Some(quantise(up(20, 0.1))));
        assert_eq!(db.link(B, A), Some(up(10, 0.0)));
        assert_eq!(db.link(C, B), None, "no row of C");

        assert_eq!(db.accept(ms(10), &v1), Ok(Accepted::Refreshed));
        let same_links = row(B, 6, &v1.links);
        assert_eq!(db.accept(ms(20), &same_links), Ok(Accepted::Refreshed));
        assert_eq!(db.accept(ms(30), &v1), Err(Reject::Stale));

        let v7 = row(B, 7, &[(A, up(10, 0.0)), (C, LinkEstimate::DOWN)]);
        assert_eq!(db.accept(ms(40), &v7), Ok(Accepted::Changed));
        assert_eq!(db.last_changed(), [C]);
        assert_eq!(db.link(B, C).map(|l| l.up), Some(false));

        // A link the row no longer names is unknown, not kept from before.
        let v8 = row(B, 8, &[(A, up(10, 0.0))]);
        assert_eq!(db.accept(ms(50), &v8), Ok(Accepted::Changed));
        assert_eq!(db.link(B, C), None);
        assert_eq!(db.row_info(B), Some((8, ms(50))));
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
    fn silent_rows_age_out_and_heard_ones_stay() {
        let mut db = LinkStateDb::new(A, [A, B, C], ms(1000));
        db.accept(ms(0), &row(B, 1, &[(C, up(5, 0.0))])).unwrap();
        db.accept(ms(100), &row(C, 1, &[(B, up(5, 0.0))])).unwrap();
        db.accept(ms(600), &row(B, 1, &[(C, up(5, 0.0))])).unwrap();
        assert_eq!(db.poll_timeout(), Some(ms(1100)));
        assert_eq!(db.expire(ms(1099)), 0);
        assert_eq!(db.expire(ms(1100)), 1, "C went silent");
        assert_eq!(db.link(C, B), None);
        assert_eq!(db.link(B, C).map(|l| l.up), Some(true));
        assert_eq!(db.poll_timeout(), Some(ms(1600)));
        // A row that comes back after expiring is news again.
        assert_eq!(
            db.accept(ms(1200), &row(C, 2, &[(B, up(5, 0.0))])),
            Ok(Accepted::Changed)
        );
    }
}
