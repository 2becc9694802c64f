//! The topology most dataplane tests share: a gateway between an underlay
//! peer and a site host.

use std::net::{IpAddr, Ipv4Addr};

use detour_common::api::{NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec};
use detour_common::wire::{NodeId, Underlay};

use crate::{Netns, require_root};

/// A gateway namespace between a peer (underlay, "wan") and a site host
/// ("lan"), IPv6 off and neighbours static so that the only frames on the
/// wires are the test's. The gateway's kernel knows the peer's MAC too, the
/// peer and the host route through the gateway.
///
/// ```text
///   peer 192.0.2.1, .99 ── wan 192.0.2.2 [gw] lan 10.1.0.1 ── host 10.1.0.5
/// ```
#[derive(Debug)]
pub struct Gateway {
    pub gw: Netns,
    pub peer: Netns,
    pub host: Netns,
}

impl Gateway {
    /// Builds it; everything goes when the value drops.
    pub fn up() -> Gateway {
        Gateway::up_with(1, 1500)
    }

    /// [`Gateway::up`] with `queues` queues on every link and an MTU of
    /// `wan_mtu` on the WAN link (room for encapsulated full-size frames).
    pub fn up_with(queues: u32, wan_mtu: u32) -> Gateway {
        require_root();
        let gw = Netns::new("gw").unwrap();
        let peer = Netns::new("peer").unwrap();
        let host = Netns::new("host").unwrap();
        for ns in [&gw, &peer, &host] {
            ns.quiet().unwrap();
        }
        gw.veth_with_queues("wan", &peer, "eth0", queues).unwrap();
        gw.veth_with_queues("lan", &host, "eth0", queues).unwrap();
        let mtu = wan_mtu.to_string();
        gw.ip(&["link", "set", "wan", "mtu", &mtu]).unwrap();
        peer.ip(&["link", "set", "eth0", "mtu", &mtu]).unwrap();
        gw.ip(&["addr", "add", "192.0.2.2/24", "dev", "wan"])
            .unwrap();
        gw.ip(&["addr", "add", "10.1.0.1/24", "dev", "lan"])
            .unwrap();
        peer.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
            .unwrap();
        peer.ip(&["addr", "add", "192.0.2.99/24", "dev", "eth0"])
            .unwrap();
        host.ip(&["addr", "add", "10.1.0.5/24", "dev", "eth0"])
            .unwrap();
        host.ip(&["route", "add", "default", "via", "10.1.0.1"])
            .unwrap();
        peer.static_neighbour("eth0", "192.0.2.2", &gw.mac("wan").unwrap())
            .unwrap();
        host.static_neighbour("eth0", "10.1.0.1", &gw.mac("lan").unwrap())
            .unwrap();
        gw.static_neighbour("wan", "192.0.2.1", &peer.mac("eth0").unwrap())
            .unwrap();
        Gateway { gw, peer, host }
    }
}

/// The underlay's address family on the gateway testbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The underlay addresses of overlay nodes 1 (the gateway), 2 (the
    /// peer) and 3 (the peer's second address): .2, .1 and .99 of
    /// 192.0.2.0/24, or ::2, ::1 and ::99 of 2001:db8::/64.
    pub fn node(self, id: u16) -> IpAddr {
        let last = match id {
            1 => 2,
            2 => 1,
            3 => 99,
            _ => panic!("no node {id}"),
        };
        match self {
            Family::V4 => Ipv4Addr::new(192, 0, 2, last).into(),
            Family::V6 => format!("2001:db8::{last}").parse().unwrap(),
        }
    }

    /// The outer addresses from node `src` to node `dst`.
    pub fn underlay(self, src: u16, dst: u16) -> Underlay {
        match (self.node(src), self.node(dst)) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Underlay::V4 { src, dst },
            (IpAddr::V6(src), IpAddr::V6(dst)) => Underlay::V6 { src, dst },
            _ => unreachable!("one family"),
        }
    }
}

impl Gateway {
    /// The gateway's route table as node 1: nodes 1 to 3 at
    /// [`Family::node`], site prefixes 10.1–3.0.0/24, node 3 reached
    /// directly and node 2 through `via_for_2`, and the control port
    /// [`crate::frames::CONTROL_PORT`] kept from strangers.
    pub fn snapshot(family: Family, version: u64, via_for_2: u16) -> RouteSnapshot {
        let node = |id: u16| NodeSpec {
            id: NodeId(id),
            underlay: family.node(id),
        };
        let route = |dst: u16, via: u16| RouteSpec {
            dst: NodeId(dst),
            via: NodeId(via),
        };
        let prefix = |id: u16| PrefixSpec {
            prefix: format!("10.{id}.0.0/24").parse().unwrap(),
            node: NodeId(id),
        };
        RouteSnapshot {
            version,
            local: NodeId(1),
            nodes: vec![node(1), node(2), node(3)],
            routes: vec![route(2, via_for_2), route(3, 3)],
            prefixes: vec![prefix(1), prefix(2), prefix(3)],
            control_port: Some(crate::frames::CONTROL_PORT),
            sessions: None,
            dataplane_instance: None,
        }
    }
}
