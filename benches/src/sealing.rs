//! The sealed paths (`encryption = "aead"`): the session keys the gateway
//! is given, and the tester's side of them, a peer's worker that seals
//! overlay frames toward the gateway
//! ([`detour_dataplane::generator::sealer`]).
//!
//! A frame the gateway opens must carry a counter it has not seen: the
//! decap path's generator seals every frame afresh as it queues it
//! ([`crate::measure::Pacer::load_sealed`]), the cost of a peer's worker,
//! on the tester's core. A relay opens nothing and checks no counter, so
//! its frame is sealed once and sent over and over.
//!
//! The keys are fixed bytes: the benchmark measures the cipher, not the
//! handshake that would agree them.

use anyhow::{Result, anyhow};
use detour_common::api::{Cipher, KeySpec, SecretKey, SessionKeys};
use detour_common::wire::{MacAddr, NodeId};
use detour_dataplane::generator::sealer::PeerSealer;
use detour_dataplane::table::{Links, RouteSpec};
use detour_testkit::{Family, Gateway};

/// The cipher a session between two ends of this machine agrees on.
pub fn cipher() -> Cipher {
    if Cipher::aes_in_hardware() {
        Cipher::Aes256Gcm
    } else {
        Cipher::Chacha20Poly1305
    }
}

/// The key of one direction between two nodes, as both ends hold it: the
/// key id and bytes are made from the pair.
fn key(from: u16, to: u16) -> KeySpec {
    let id = u32::from(from) << 16 | u32::from(to);
    KeySpec {
        id,
        cipher: cipher(),
        key: SecretKey::new([(from * 16 + to) as u8; 32]),
    }
}

/// The gateway's (node 1's) sessions with nodes 2 and 3: a key each way.
/// None with the 3 → 2 session that the relay path carries: a relay holds
/// no key of the sites it relays between.
pub fn gateway_sessions() -> Vec<SessionKeys> {
    [2, 3]
        .into_iter()
        .map(|peer| SessionKeys {
            peer: NodeId(peer),
            tx: Some(key(1, peer)),
            rx: vec![key(peer, 1)],
        })
        .collect()
}

/// Node `node` of the gateway's overlay (testkit's three nodes and their
/// site prefixes) sealing toward node `dst` through `via`, its frames from
/// `own_mac` to the gateway's WAN MAC `gateway_mac`, on a WAN of
/// `wan_mtu`.
pub fn peer_sealer(
    node: u16,
    dst: u16,
    via: u16,
    own_mac: MacAddr,
    gateway_mac: MacAddr,
    wan_mtu: u16,
) -> Result<PeerSealer> {
    let mut view = Gateway::snapshot(Family::V4, 1, 2);
    view.local = NodeId(node);
    // The route to dst, and the relay's own (direct) if it is one.
    view.routes = [(dst, via), (via, via)]
        .into_iter()
        .take(if dst == via { 1 } else { 2 })
        .map(|(dst, via)| RouteSpec {
            dst: NodeId(dst),
            via: NodeId(via),
        })
        .collect();
    let mut links = Links::new(own_mac, None);
    links.wan_mtu = wan_mtu;
    PeerSealer::new(&view, &links, gateway_mac, NodeId(dst), key(node, dst))
        .map_err(|e| anyhow!("the tester's route table as node {node}: {e}"))
}
