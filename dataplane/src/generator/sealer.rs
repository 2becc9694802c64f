//! A peer's worker, sealing: overlay frames toward a gateway under test
//! exactly as a detour peer sends them with `encryption = "aead"`, for the
//! benchmark's generators and the tests (the dataplane never uses it).
//!
//! It is detour's own encap ([`rewrite::encap`]) on the peer's route table,
//! holding the peer's key: every frame sealed takes the key's next counter,
//! so a gateway opens each one once (a counter seen before is a replay).

use std::sync::Arc;
use std::time::Instant;

use detour_common::api::{KeySpec, SessionKeys};
use detour_common::wire::{MacAddr, NodeId};

use crate::crypto::KeyTable;
use crate::rewrite::{self, Discard};
use crate::table::{LanNeighbours, Links, RouteSnapshot, RouteTable, SnapshotError};

/// Room a buffer must leave before the site frame for the outer headers.
pub const HEADROOM: usize = 256;
/// Room it must leave after it for the tag (and a little more).
pub const TAILROOM: usize = 64;

pub struct PeerSealer {
    table: RouteTable,
}

impl PeerSealer {
    /// The peer whose view of the overlay `snapshot` is (its `local`, a
    /// route to `to`), on the WAN `links` describes, sending every frame
    /// to `gateway_mac`, sealing to `to` under `key`.
    pub fn new(
        snapshot: &RouteSnapshot,
        links: &Links,
        gateway_mac: MacAddr,
        to: NodeId,
        key: KeySpec,
    ) -> Result<PeerSealer, SnapshotError> {
        let sessions = [SessionKeys {
            peer: to,
            tx: Some(key),
            rx: Vec::new(),
        }];
        let keys = KeyTable::build(&sessions, None, Instant::now());
        let table = RouteTable::compile(snapshot, links, LanNeighbours::default(), |_| {
            Some(gateway_mac)
        })?
        .with_keys(Some(Arc::new(keys)));
        Ok(PeerSealer { table })
    }

    /// Seals the site frame (an Ethernet frame from the peer's LAN) that
    /// `buf` holds from [`HEADROOM`] on, `len` bytes, under the next
    /// counter: the overlay frame's start and length in `buf`, which needs
    /// [`TAILROOM`] after the frame.
    pub fn seal(&self, buf: &mut [u8], len: usize) -> Result<(usize, usize), Discard> {
        let forward = rewrite::encap(&self.table, buf, HEADROOM, len)?;
        Ok((forward.start, forward.len))
    }

    /// The overlay frame carrying `site_frame`, sealed under the next
    /// counter.
    pub fn sealed(&self, site_frame: &[u8]) -> Result<Vec<u8>, Discard> {
        let mut buf = vec![0; HEADROOM + site_frame.len() + TAILROOM];
        buf[HEADROOM..HEADROOM + site_frame.len()].copy_from_slice(site_frame);
        let (start, len) = self.seal(&mut buf, site_frame.len())?;
        Ok(buf[start..start + len].to_vec())
    }
}
