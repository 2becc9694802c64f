//! The bench topology and the frames each path is fed.
//!
//! ```text
//!   peer 192.0.2.1, .99 ── wan [gw: the device under test] lan ── host 10.1.0.5
//! ```
//!
//! The generator and the sink sit in `peer` or `host`, the path under test
//! in `gw` (testkit's [`Gateway`], here with as many queues as workers and
//! a WAN MTU that fits an encapsulated 1500-byte frame).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

use detour_common::wire::{
    DetourOptionRepr, EncapRepr, EtherType, MacAddr, NodeId, Seal, Underlay,
};
use detour_testkit::frames::{self, OVERLAY_PORT};
use detour_testkit::{Gateway, Netns};

use detour_dataplane::generator::sealer::PeerSealer;

use crate::sealing;

/// Room for a 1500-byte LAN frame once encapsulated.
const WAN_MTU: u32 = 1600;
/// The UDP port the userspace relay listens on and sends to.
pub const RELAY_PORT: u16 = 7000;
/// The smallest frame the harness builds: it carries a 16-byte stamp.
pub const MIN_FRAME: usize = 64;
/// The largest: a full Ethernet payload (an encapsulated one fits the WAN).
pub const MAX_FRAME: usize = 1514;

/// Which end of the gateway a generator or a sink sits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The underlay peer, on the gateway's WAN link.
    Peer,
    /// The site host, on the gateway's LAN link.
    Host,
}

pub struct Bed {
    pub net: Gateway,
    pub queues: u32,
    pub peer_mac: MacAddr,
    host_mac: MacAddr,
    pub gw_wan: MacAddr,
    pub gw_lan: MacAddr,
    node_2_sealer: OnceLock<Arc<PeerSealer>>,
}

impl Bed {
    pub fn up(queues: u32) -> anyhow::Result<Bed> {
        let net = Gateway::up_with(queues, WAN_MTU);
        let peer_mac = net.peer.mac_addr("eth0")?;
        let host_mac = net.host.mac_addr("eth0")?;
        // The relays send to the peer's second address (node 3 in the
        // dataplane's table), the LAN side to the host.
        net.gw
            .static_neighbour("wan", "192.0.2.99", &peer_mac.to_string())?;
        net.gw
            .static_neighbour("lan", "10.1.0.5", &host_mac.to_string())?;
        let (gw_wan, gw_lan) = (net.gw.mac_addr("wan")?, net.gw.mac_addr("lan")?);
        Ok(Bed {
            net,
            queues,
            peer_mac,
            host_mac,
            gw_wan,
            gw_lan,
            node_2_sealer: OnceLock::new(),
        })
    }

    pub fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::Peer => &self.net.peer,
            Side::Host => &self.net.host,
        }
    }

    /// A UDP frame of `size` bytes from the host to `dst`, through the
    /// gateway's LAN side.
    pub fn host_frame(&self, dst: Ipv4Addr, size: usize) -> Vec<u8> {
        let ip = udp(Ipv4Addr::new(10, 1, 0, 5), dst, 7000, size);
        frames::ethernet_between(self.host_mac, self.gw_lan, EtherType::IPV4, &ip[14..])
    }

    /// A UDP frame of `size` bytes from the peer to the gateway's WAN
    /// address, port [`RELAY_PORT`].
    pub fn peer_frame(&self, size: usize) -> Vec<u8> {
        let ip = udp(
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            RELAY_PORT,
            size,
        );
        frames::ethernet_between(self.peer_mac, self.gw_wan, EtherType::IPV4, &ip[14..])
    }

    /// The `size`-byte frame a host at node `node`'s site sends to
    /// `inner_dst`, as that node's worker takes it off its LAN.
    pub fn site_frame(&self, node: u16, inner_dst: Ipv4Addr, size: usize) -> Vec<u8> {
        udp(Ipv4Addr::new(10, node as u8, 0, 7), inner_dst, 7000, size)
    }

    /// Node `node`'s worker sealing toward node `dst` through `via`, its
    /// frames from the peer's MAC to the gateway's WAN.
    pub fn sealer(&self, node: u16, dst: u16, via: u16) -> anyhow::Result<PeerSealer> {
        sealing::peer_sealer(node, dst, via, self.peer_mac, self.gw_wan, WAN_MTU as u16)
    }

    /// Node 2's worker sealing to the gateway, one for the whole run: its
    /// counters must never start again, or the gateway takes every frame
    /// for a replay.
    pub fn node_2_sealer(&self) -> anyhow::Result<Arc<PeerSealer>> {
        if let Some(sealer) = self.node_2_sealer.get() {
            return Ok(Arc::clone(sealer));
        }
        let sealer = Arc::new(self.sealer(2, 1, 1)?);
        Ok(Arc::clone(self.node_2_sealer.get_or_init(|| sealer)))
    }

    /// The overlay frame from node `node` at underlay `src` to the gateway
    /// (node 1) that carries a `size`-byte site frame (its IP packet) for
    /// node `dst_node`'s host `inner_dst`: frame sizes are the site's, as
    /// users count them; the overlay adds its headers on the WAN.
    pub fn overlay(
        &self,
        node: u16,
        src: Ipv4Addr,
        dst_node: u16,
        inner_dst: Ipv4Addr,
        size: usize,
    ) -> Vec<u8> {
        let repr = EncapRepr {
            src_mac: self.peer_mac,
            dst_mac: self.gw_wan,
            underlay: Underlay::V4 {
                src,
                dst: Ipv4Addr::new(192, 0, 2, 2),
            },
            ttl: 64,
            dst_port: OVERLAY_PORT,
            vni: 0,
            option: DetourOptionRepr {
                src: NodeId(node),
                dst: NodeId(dst_node),
                hop_limit: 4,
                flags: 0,
                seal: Seal::NONE,
            },
        };
        let inner = udp(Ipv4Addr::new(10, 2, 0, 7), inner_dst, 7000, size);
        frames::encapsulate(&repr, &inner[14..])
    }
}

/// An Ethernet frame of `size` bytes holding a UDP datagram.
fn udp(src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16, size: usize) -> Vec<u8> {
    const HEADERS: usize = 14 + 20 + 8;
    frames::udp(
        IpAddr::V4(src),
        IpAddr::V4(dst),
        40000,
        dst_port,
        size - HEADERS,
    )
}
