//! The topology most dataplane tests share: a gateway between an underlay
//! peer and a site host.

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
        require_root();
        let gw = Netns::new("gw").unwrap();
        let peer = Netns::new("peer").unwrap();
        let host = Netns::new("host").unwrap();
        for ns in [&gw, &peer, &host] {
            ns.quiet().unwrap();
        }
        gw.veth("wan", &peer, "eth0").unwrap();
        gw.veth("lan", &host, "eth0").unwrap();
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
