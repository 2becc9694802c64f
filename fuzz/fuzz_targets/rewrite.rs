//! The worker's rewrites over arbitrary frames: encapsulation of what the
//! LAN sends, decapsulation or relay of what the WAN sends, in the clear
//! and with a table that seals and opens (`encryption = "aead"`). No input
//! may panic, and a frame forwarded must lie within the buffer. Run with
//! `scripts/fuzz rewrite SECONDS`.
#![no_main]

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use detour_common::api::{Cipher, KeySpec, SecretKey, SessionKeys};
use detour_common::wire::{MacAddr, NodeId};
use detour_dataplane::crypto::KeyTable;
use detour_dataplane::rewrite::{encap, from_wan};
use detour_dataplane::table::{
    LanNeighbours, Links, NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec, RouteTable,
};
use libfuzzer_sys::fuzz_target;

/// The room a worker leaves before a received frame, for encapsulation,
/// and after it (a UMEM frame's rest), for the tag.
const HEADROOM: usize = 256;
const TAILROOM: usize = 64;

static TABLE: LazyLock<RouteTable> = LazyLock::new(table);

/// The same sealing to node 2 under key 5 and opening from nodes 2 and 3
/// under keys 5 and 6 (the key ids the seed corpus's frames carry).
static SEALING: LazyLock<RouteTable> = LazyLock::new(|| {
    let key = |id| KeySpec {
        id,
        cipher: Cipher::Aes256Gcm,
        key: SecretKey::new([0x42; 32]),
    };
    let sessions: Vec<SessionKeys> = [2, 3]
        .map(|peer| SessionKeys {
            peer: NodeId(peer),
            tx: Some(key(5)),
            rx: vec![key(5), key(6)],
        })
        .into();
    table().with_keys(Some(Arc::new(KeyTable::build(
        &sessions,
        None,
        Instant::now(),
    ))))
});

/// Node 1 of 3 (2 direct, 3 through 2) on an IPv4 underlay, site prefixes
/// of both families, the overlay on the default port.
fn table() -> RouteTable {
    let addr = |n: u16| -> IpAddr { format!("192.0.2.{n}").parse().unwrap() };
    let snapshot = RouteSnapshot {
        version: 1,
        local: NodeId(1),
        nodes: (1..=3)
            .map(|n| NodeSpec {
                id: NodeId(n),
                underlay: addr(n),
            })
            .collect(),
        routes: vec![
            RouteSpec {
                dst: NodeId(2),
                via: NodeId(2),
            },
            RouteSpec {
                dst: NodeId(3),
                via: NodeId(2),
            },
        ],
        prefixes: vec![
            PrefixSpec {
                prefix: "10.1.0.0/16".parse().unwrap(),
                node: NodeId(1),
            },
            PrefixSpec {
                prefix: "10.2.0.0/16".parse().unwrap(),
                node: NodeId(2),
            },
            PrefixSpec {
                prefix: "fd00:3::/48".parse().unwrap(),
                node: NodeId(3),
            },
        ],
        control_port: None,
        sessions: None,
        dataplane_instance: None,
    };
    let links = Links::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        Some(MacAddr([2, 0, 0, 0, 1, 1])),
    );
    let mut lan = LanNeighbours::default();
    lan.insert("10.1.0.0/16".parse().unwrap(), MacAddr([2, 1, 1, 1, 1, 5]));
    RouteTable::compile(&snapshot, &links, lan, |_| {
        Some(MacAddr([2, 0, 0, 0, 0, 9]))
    })
    .unwrap()
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the side (bit 0) and the table (bit 1); the
    // rest is the frame.
    let Some((&side, frame)) = data.split_first() else {
        return;
    };
    let table = if side & 2 == 0 { &*TABLE } else { &*SEALING };
    let mut buf = vec![0u8; HEADROOM + frame.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let result = if side & 1 == 0 {
        encap(table, &mut buf, HEADROOM, frame.len())
    } else {
        from_wan(table, &mut buf, HEADROOM, frame.len())
    };
    if let Ok(out) = result {
        assert!(
            out.start
                .checked_add(out.len)
                .is_some_and(|end| end <= buf.len())
        );
    }
});
