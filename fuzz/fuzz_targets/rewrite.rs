//! The worker's rewrites over arbitrary frames: encapsulation of what the
//! LAN sends, decapsulation or relay of what the WAN sends. No input may
//! panic, and a frame forwarded must lie within the buffer. Run with
//! `scripts/fuzz rewrite SECONDS`.
#![no_main]

use std::net::IpAddr;
use std::sync::LazyLock;

use detour_common::wire::{MacAddr, NodeId};
use detour_dataplane::rewrite::{encap, from_wan};
use detour_dataplane::table::{
    LanNeighbours, Links, NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec, RouteTable,
};
use libfuzzer_sys::fuzz_target;

/// The room a worker leaves before a received frame, for encapsulation.
const HEADROOM: usize = 256;

/// Node 1 of 3 (2 direct, 3 through 2) on an IPv4 underlay, site prefixes
/// of both families, the overlay on the default port.
static TABLE: LazyLock<RouteTable> = LazyLock::new(|| {
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
});

fuzz_target!(|data: &[u8]| {
    // The first byte picks the side; the rest is the frame.
    let Some((&side, frame)) = data.split_first() else {
        return;
    };
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let result = if side & 1 == 0 {
        encap(&TABLE, &mut buf, HEADROOM, frame.len())
    } else {
        from_wan(&TABLE, &mut buf, HEADROOM, frame.len())
    };
    if let Ok(out) = result {
        assert!(
            out.start
                .checked_add(out.len)
                .is_some_and(|end| end <= buf.len())
        );
    }
});
