//! The tests' nodes: node `id`'s key is `id` in every byte, its control
//! port 192.0.2.`id`:6082.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use detour_common::wire::NodeId;

use super::PeerKeys;
use crate::keys::{PresharedKey, PrivateKey};

pub fn addr(id: NodeId) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, id.0 as u8)), 6082)
}

pub fn private(id: NodeId) -> PrivateKey {
    PrivateKey::from_bytes([id.0 as u8; 32])
}

/// What its peers know of node `id`.
pub fn keys(id: NodeId) -> PeerKeys {
    PeerKeys {
        id,
        public: private(id).public_key(),
        psk: PresharedKey::default(),
    }
}
