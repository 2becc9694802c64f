//! The data keys of every peer, as the workers use them.
//!
//! Built from the snapshot's [`SessionKeys`] whenever one is installed; a
//! key that the previous table had already (same peer, same id) is carried
//! over whole, so that its replay window and its counter go on. Keys the
//! control process no longer lists are kept for a grace of
//! [`RETIRE_AFTER`]: frames sealed under a session in the moment the
//! sender's control process moved on (a rekey, its restart) still arrive;
//! after it they count as `expired_key`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use detour_common::api::{HeldKeys, SessionKeys};
use detour_common::wire::NodeId;

use super::{DataKey, ReplayWindow};

/// How long a key the control process dropped still opens frames.
pub const RETIRE_AFTER: Duration = Duration::from_secs(2);
/// How many retired key ids per peer are remembered, to count what comes
/// under them as expired rather than unknown.
const RETIRED_KEPT: usize = 8;
/// The highest counter a sender takes: far beyond any session's life (the
/// control process rekeys every two minutes); past it the key refuses.
const LAST_COUNTER: u64 = u64::MAX - (1 << 16);

/// The key frames to one peer are sealed under, and its counter.
#[derive(Debug)]
pub struct TxKey {
    pub id: u32,
    key: DataKey,
    next: AtomicU64,
}

impl TxKey {
    /// A counter no frame under this key had; `None` once they are spent.
    ///
    /// One atomic add per frame on the key's cache line, shared by the
    /// workers that send to this peer at once.
    #[inline]
    pub fn next_counter(&self) -> Option<u64> {
        let c = self.next.fetch_add(1, Ordering::Relaxed);
        (c < LAST_COUNTER).then_some(c)
    }

    #[inline]
    pub fn key(&self) -> &DataKey {
        &self.key
    }
}

/// A key frames from one peer may be sealed under, and its window.
#[derive(Debug)]
pub struct RxKey {
    pub id: u32,
    key: DataKey,
    pub window: ReplayWindow,
}

impl RxKey {
    #[inline]
    pub fn key(&self) -> &DataKey {
        &self.key
    }
}

#[derive(Debug, Default)]
struct PeerKeys {
    tx: Option<Arc<TxKey>>,
    /// The control process no longer lists `tx`: it seals until then, for
    /// the moment between a session's end and the next one's first use.
    tx_until: Option<Instant>,
    rx: Vec<Arc<RxKey>>,
    /// Dropped by the control process, still open until then.
    retiring: Vec<(Arc<RxKey>, Instant)>,
    retired: Vec<u32>,
    /// The ids of the tx keys before this one, never to seal again.
    sealed_with: Vec<u32>,
}

/// What the key id of a frame from a peer names.
#[derive(Debug)]
pub enum Opened<'a> {
    Key(&'a RxKey),
    /// A key of this peer that is no longer accepted.
    Expired,
    /// No key this node knows of that peer.
    Unknown,
}

/// Every peer's keys, indexed by node id.
#[derive(Debug, Default)]
pub struct KeyTable {
    peers: Vec<Option<PeerKeys>>,
}

impl KeyTable {
    /// The table for `sessions`, carrying over from `previous` the keys it
    /// already had; `now` dates what it retires.
    pub fn build(sessions: &[SessionKeys], previous: Option<&KeyTable>, now: Instant) -> KeyTable {
        let mut table = KeyTable::default();
        for s in sessions {
            let old = previous.and_then(|p| p.peer(s.peer));
            let tx = s.tx.as_ref().and_then(|spec| {
                match old.and_then(|o| o.tx.as_ref()) {
                    Some(kept) if kept.id == spec.id => Some(Arc::clone(kept)),
                    // A key this table sealed with and let go: its counter
                    // went with it, and a counter must never come twice.
                    _ if old.is_some_and(|o| o.sealed_with.contains(&spec.id)) => None,
                    _ => Some(Arc::new(TxKey {
                        id: spec.id,
                        key: DataKey::new(spec.cipher, spec.key.as_bytes()),
                        next: AtomicU64::new(0),
                    })),
                }
            });
            // Listed without a tx key: the one it had goes on sealing for
            // its grace (the control process holds a new session's key
            // back for a moment, and a peer restarting drops the old
            // session before the new one may seal).
            let (tx, tx_until) = match (tx, old) {
                (None, Some(old)) if s.tx.is_none() && old.tx.is_some() => (
                    old.tx.clone(),
                    Some(old.tx_until.unwrap_or(now + RETIRE_AFTER)),
                ),
                (tx, _) => (tx, None),
            };
            let mut peer = PeerKeys {
                tx,
                tx_until,
                ..PeerKeys::default()
            };
            for spec in &s.rx {
                let kept = old.and_then(|o| o.rx_key(spec.id));
                peer.rx.push(kept.unwrap_or_else(|| Arc::new(new_rx(spec))));
            }
            if let Some(old) = old {
                peer.carry_retired(old, now);
            }
            table.insert(s.peer, peer);
        }
        // A peer no longer listed at all: its keys retire as well.
        if let Some(previous) = previous {
            for (id, old) in previous.peers.iter().enumerate() {
                let (Some(old), None) = (old, table.peer(NodeId(id as u16))) else {
                    continue;
                };
                let mut peer = PeerKeys::default();
                peer.carry_retired(old, now);
                table.insert(NodeId(id as u16), peer);
            }
        }
        table
    }

    /// The same keys less those whose grace ended by `now`; `None` when
    /// none did (nothing to replace).
    pub fn expire(&self, now: Instant) -> Option<KeyTable> {
        let due = self.peers.iter().flatten().any(|p| {
            p.retiring.iter().any(|(_, at)| *at <= now) || p.tx_until.is_some_and(|at| at <= now)
        });
        if !due {
            return None;
        }
        let peers = self
            .peers
            .iter()
            .map(|p| {
                p.as_ref().map(|p| {
                    let mut retired = p.retired.clone();
                    let mut retiring = Vec::new();
                    for (key, at) in &p.retiring {
                        if *at <= now {
                            remember(&mut retired, key.id);
                        } else {
                            retiring.push((Arc::clone(key), *at));
                        }
                    }
                    let mut sealed_with = p.sealed_with.clone();
                    let (tx, tx_until) = match (&p.tx, p.tx_until) {
                        (Some(tx), Some(at)) if at <= now => {
                            remember(&mut sealed_with, tx.id);
                            (None, None)
                        }
                        (tx, at) => (tx.clone(), at),
                    };
                    PeerKeys {
                        tx,
                        tx_until,
                        rx: p.rx.clone(),
                        retiring,
                        retired,
                        sealed_with,
                    }
                })
            })
            .collect();
        Some(KeyTable { peers })
    }

    /// The ids of the keys held for each peer, by ascending node id.
    pub fn held(&self) -> Vec<HeldKeys> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(id, p)| {
                let p = p.as_ref()?;
                let retiring = p.retiring.iter().map(|(k, _)| k);
                Some(HeldKeys {
                    peer: NodeId(id as u16),
                    tx: p.tx.as_ref().map(|t| t.id),
                    rx: p.rx.iter().chain(retiring).map(|k| k.id).collect(),
                })
            })
            .collect()
    }

    /// What frames to `peer` are sealed under.
    #[inline]
    pub fn tx(&self, peer: NodeId) -> Option<&TxKey> {
        self.peer(peer)?.tx.as_deref()
    }

    /// The key of `peer`'s that `key_id` names.
    #[inline]
    pub fn rx(&self, peer: NodeId, key_id: u32) -> Opened<'_> {
        let Some(p) = self.peer(peer) else {
            return Opened::Unknown;
        };
        if let Some(key) = p.rx_key_ref(key_id) {
            return Opened::Key(key);
        }
        if p.retired.contains(&key_id) {
            Opened::Expired
        } else {
            Opened::Unknown
        }
    }

    #[inline]
    fn peer(&self, id: NodeId) -> Option<&PeerKeys> {
        self.peers.get(usize::from(id.0))?.as_ref()
    }

    fn insert(&mut self, id: NodeId, peer: PeerKeys) {
        let index = usize::from(id.0);
        if self.peers.len() <= index {
            self.peers.resize_with(index + 1, || None);
        }
        self.peers[index] = Some(peer);
    }
}

impl PeerKeys {
    /// The key `id` names, current or retiring.
    #[inline]
    fn find_rx(&self, id: u32) -> Option<&Arc<RxKey>> {
        let retiring = self.retiring.iter().map(|(k, _)| k);
        self.rx.iter().chain(retiring).find(|k| k.id == id)
    }

    #[inline]
    fn rx_key_ref(&self, id: u32) -> Option<&RxKey> {
        self.find_rx(id).map(|k| &**k)
    }

    fn rx_key(&self, id: u32) -> Option<Arc<RxKey>> {
        self.find_rx(id).cloned()
    }

    /// Takes over from `old` what is retiring or retired (rx keys) or was
    /// sealed with (tx keys), and starts the grace of `old`'s keys that
    /// this peer no longer lists.
    fn carry_retired(&mut self, old: &PeerKeys, now: Instant) {
        self.retired = old.retired.clone();
        self.sealed_with = old.sealed_with.clone();
        if let Some(tx) = &old.tx
            && self.tx.as_ref().map(|t| t.id) != Some(tx.id)
        {
            remember(&mut self.sealed_with, tx.id);
        }
        let listed = |id: u32| self.rx.iter().any(|k| k.id == id);
        let mut retiring: Vec<(Arc<RxKey>, Instant)> = old
            .retiring
            .iter()
            .filter(|(k, _)| !listed(k.id))
            .cloned()
            .collect();
        for key in old.rx.iter().filter(|k| !listed(k.id)) {
            retiring.push((Arc::clone(key), now + RETIRE_AFTER));
        }
        self.retiring = retiring;
        self.retired
            .retain(|id| !self.rx.iter().any(|k| k.id == *id));
    }
}

fn new_rx(spec: &detour_common::api::KeySpec) -> RxKey {
    RxKey {
        id: spec.id,
        key: DataKey::new(spec.cipher, spec.key.as_bytes()),
        window: ReplayWindow::default(),
    }
}

fn remember(retired: &mut Vec<u32>, id: u32) {
    if retired.len() == RETIRED_KEPT {
        retired.remove(0);
    }
    retired.push(id);
}

#[cfg(test)]
mod tests {
    use detour_common::api::{Cipher, KeySpec, SecretKey};

    use super::*;

    fn spec(id: u32) -> KeySpec {
        KeySpec {
            id,
            cipher: Cipher::Aes256Gcm,
            key: SecretKey::new([id as u8; 32]),
        }
    }

    fn sessions(tx: u32, rx: &[u32]) -> Vec<SessionKeys> {
        vec![SessionKeys {
            peer: NodeId(2),
            tx: Some(spec(tx)),
            rx: rx.iter().map(|&id| spec(id)).collect(),
        }]
    }

    fn state(t: &KeyTable, id: u32) -> &'static str {
        match t.rx(NodeId(2), id) {
            Opened::Key(_) => "key",
            Opened::Expired => "expired",
            Opened::Unknown => "unknown",
        }
    }

    #[test]
    fn held_lists_ids_current_and_retiring_and_forgets_the_expired() {
        let now = Instant::now();
        let first = KeyTable::build(&sessions(5, &[5, 6]), None, now);
        let held = |t: &KeyTable| {
            t.held()
                .into_iter()
                .map(|h| (h.peer.0, h.tx, h.rx))
                .collect::<Vec<_>>()
        };
        assert_eq!(held(&first), vec![(2, Some(5), vec![5, 6])]);
        // 6 dropped: still held while it retires, gone after.
        let second = KeyTable::build(&sessions(7, &[5, 7]), Some(&first), now);
        assert_eq!(held(&second), vec![(2, Some(7), vec![5, 7, 6])]);
        let expired = second.expire(now + RETIRE_AFTER).expect("6 retired");
        assert_eq!(held(&expired), vec![(2, Some(7), vec![5, 7])]);
    }

    #[test]
    fn kept_keys_keep_their_window_and_counter() {
        let now = Instant::now();
        let a = KeyTable::build(&sessions(10, &[20]), None, now);
        assert_eq!(a.tx(NodeId(2)).unwrap().next_counter(), Some(0));
        let Opened::Key(k) = a.rx(NodeId(2), 20) else {
            panic!("no key 20");
        };
        assert!(k.window.record(5));
        let b = KeyTable::build(&sessions(10, &[20, 21]), Some(&a), now);
        assert_eq!(b.tx(NodeId(2)).unwrap().next_counter(), Some(1));
        let Opened::Key(k) = b.rx(NodeId(2), 20) else {
            panic!("no key 20");
        };
        assert!(!k.window.record(5), "the window went on");
        assert_eq!(state(&b, 21), "key");
        assert_eq!(state(&b, 99), "unknown");
        assert!(b.tx(NodeId(3)).is_none());
        assert_eq!(KeyTable::default().tx(NodeId(2)).map(|k| k.id), None);
    }

    #[test]
    fn a_dropped_key_opens_for_its_grace_then_counts_as_expired() {
        let t0 = Instant::now();
        let a = KeyTable::build(&sessions(10, &[20, 21]), None, t0);
        let b = KeyTable::build(&sessions(11, &[21]), Some(&a), t0);
        assert_eq!(state(&b, 20), "key", "in its grace");
        assert!(b.expire(t0 + RETIRE_AFTER / 2).is_none());
        let c = b.expire(t0 + RETIRE_AFTER).expect("due");
        assert_eq!(state(&c, 20), "expired");
        assert_eq!(state(&c, 21), "key");
        // Kept expired across the next install, and a peer dropped whole
        // retires too.
        let d = KeyTable::build(&sessions(11, &[21, 22]), Some(&c), t0);
        assert_eq!(state(&d, 20), "expired");
        let e = KeyTable::build(&[], Some(&d), t0);
        assert!(e.tx(NodeId(2)).is_none());
        assert_eq!(state(&e, 21), "key");
        let f = e.expire(t0 + RETIRE_AFTER).unwrap();
        assert_eq!(
            (state(&f, 20), state(&f, 21), state(&f, 22)),
            ("expired", "expired", "expired")
        );
    }

    #[test]
    fn a_tx_key_no_longer_listed_seals_for_its_grace() {
        let t0 = Instant::now();
        let a = KeyTable::build(&sessions(10, &[20]), None, t0);
        let mut none = sessions(10, &[20]);
        none[0].tx = None;
        let b = KeyTable::build(&none, Some(&a), t0);
        assert_eq!(b.tx(NodeId(2)).unwrap().id, 10, "in its grace");
        assert_eq!(b.tx(NodeId(2)).unwrap().next_counter(), Some(0));
        // The grace is not renewed by the next install without a key.
        let c = KeyTable::build(&none, Some(&b), t0 + RETIRE_AFTER / 2);
        assert!(c.expire(t0 + RETIRE_AFTER / 2).is_none());
        let d = c.expire(t0 + RETIRE_AFTER).expect("due");
        assert!(d.tx(NodeId(2)).is_none());
        let e = KeyTable::build(&sessions(10, &[20]), Some(&d), t0);
        assert!(e.tx(NodeId(2)).is_none(), "and never seals again");
        // A new key ends the grace at once.
        let f = KeyTable::build(&sessions(11, &[20]), Some(&b), t0);
        assert_eq!(f.tx(NodeId(2)).unwrap().id, 11);
        assert_eq!(f.tx(NodeId(2)).unwrap().next_counter(), Some(0));
    }

    #[test]
    fn a_tx_key_let_go_never_seals_again() {
        let t0 = Instant::now();
        let a = KeyTable::build(&sessions(10, &[20]), None, t0);
        assert_eq!(a.tx(NodeId(2)).unwrap().next_counter(), Some(0));
        let b = KeyTable::build(&sessions(11, &[20]), Some(&a), t0);
        // Key 10 back (a control process's mistake): its counter would
        // start at 0 again, so it seals nothing.
        let c = KeyTable::build(&sessions(10, &[20]), Some(&b), t0);
        assert!(c.tx(NodeId(2)).is_none());
        let d = c.expire(t0 + RETIRE_AFTER).unwrap_or(c);
        let e = KeyTable::build(&sessions(10, &[20]), Some(&d), t0);
        assert!(e.tx(NodeId(2)).is_none(), "remembered across expiry");
        let f = KeyTable::build(&sessions(12, &[20]), Some(&e), t0);
        assert_eq!(f.tx(NodeId(2)).unwrap().id, 12);
    }
}
