//! The dataplane's test rig, shared by the test files that run the real
//! `detour-dataplane` on the gateway of a namespace testbed
//! (`forwarding.rs`, `hostile.rs`): a route snapshot installed over its
//! API, frames crafted on the peer and the host.
//!
//! ```text
//!   peer: node 2 (192.0.2.1 / 2001:db8::1), node 3 (.99 / ::99)
//!     │ eth0
//!     │ wan 192.0.2.2 / 2001:db8::2
//!   [gw: detour-dataplane, node 1]
//!     │ lan 10.1.0.1
//!     │ eth0
//!   host 10.1.0.5 (site prefix 10.1.0.0/24)
//! ```
//!
//! Node 2 serves 10.2.0.0/24, node 3 10.3.0.0/24; both live in the peer
//! namespace, so the peer sees what the gateway sends to either.

// Each test file uses part of the rig.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use detour_common::api::{Client, RouteSnapshot, Stats};
use detour_common::wire::{
    DetourOptionRepr, EncapRepr, EtherType, Ipv4Packet, MacAddr, NodeId, OverlayFrame, Seal,
    UdpPacket, UdpRepr, checksum,
};
use detour_testkit::frames::{self, OVERLAY_PORT};
use detour_testkit::packet::PacketSocket;
use detour_testkit::{Family, Gateway, Process, ScratchPath, eventually, require_root};

pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
/// A host at node 2's site, and one at node 3's.
pub const SITE2_HOST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 7);
pub const SITE3_HOST: Ipv4Addr = Ipv4Addr::new(10, 3, 0, 7);
/// The host and a host at node 2's site on IPv6 (IPv6 tests only).
pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5);
pub const GW_LAN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const SITE2_HOST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 7);
pub const HOST_PORT: u16 = 40000;
pub const REMOTE_PORT: u16 = 7000;
pub const WAIT: Duration = Duration::from_secs(3);

/// The testbed with the dataplane running on the gateway.
pub struct Rig {
    pub net: Gateway,
    pub family: Family,
    pub api: ScratchPath,
    pub dataplane: Process,
    pub gw_wan: MacAddr,
    pub gw_lan: MacAddr,
    pub peer: MacAddr,
    pub host: MacAddr,
}

impl Rig {
    pub fn up(family: Family) -> Rig {
        Rig::up_with(family, |_| {})
    }

    /// The testbed, with `before_dataplane` setting more of it up before
    /// the dataplane starts (it reads the interfaces' addresses once, at
    /// start).
    pub fn up_with(family: Family, before_dataplane: impl FnOnce(&Gateway)) -> Rig {
        Rig::start(family, 1, before_dataplane)
    }

    /// The testbed with `queues` queues on every link, a worker on each.
    pub fn up_with_queues(family: Family, queues: u32) -> Rig {
        Rig::start(family, queues, |_| {})
    }

    fn start(family: Family, queues: u32, before_dataplane: impl FnOnce(&Gateway)) -> Rig {
        require_root();
        let net = Gateway::up_with(queues, 1500);
        let (gw, peer, host) = (&net.gw, &net.peer, &net.host);
        let peer_mac = peer.mac_addr("eth0").unwrap();
        let gw_wan = gw.mac_addr("wan").unwrap();
        if family == Family::V6 {
            for (ns, dev) in [(gw, "wan"), (peer, "eth0")] {
                ns.sysctl(&format!("net.ipv6.conf.{dev}.accept_dad"), "0")
                    .unwrap();
                ns.sysctl(&format!("net.ipv6.conf.{dev}.router_solicitations"), "0")
                    .unwrap();
                ns.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "0")
                    .unwrap();
            }
            gw.ip(&["addr", "add", "2001:db8::2/64", "dev", "wan", "nodad"])
                .unwrap();
            for a in ["2001:db8::1/64", "2001:db8::99/64"] {
                peer.ip(&["addr", "add", a, "dev", "eth0", "nodad"])
                    .unwrap();
            }
            peer.static_neighbour("eth0", "2001:db8::2", &gw_wan.to_string())
                .unwrap();
        }
        for id in [2, 3] {
            gw.static_neighbour("wan", &family.node(id).to_string(), &peer_mac.to_string())
                .unwrap();
        }
        let host_mac = host.mac_addr("eth0").unwrap();
        gw.static_neighbour("lan", &HOST.to_string(), &host_mac.to_string())
            .unwrap();
        before_dataplane(&net);

        let api = ScratchPath::new("api");
        let dataplane = Process::spawn(
            gw.command(env!("CARGO_BIN_EXE_detour-dataplane"))
                .args(["--node-id", "1", "--wan", "wan", "--lan", "lan"])
                .arg("--queues")
                .arg(
                    (0..queues)
                        .map(|q| q.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .arg("--api-socket")
                .arg(api.path())
                .env("DETOUR_LOG", "warn")
                .stdout(Stdio::null()),
        )
        .unwrap();
        let up = eventually(Duration::from_secs(10), || {
            Client::connect(api.path())
                .and_then(|mut c| c.health())
                .is_ok()
        });
        assert!(
            up,
            "the dataplane's API never answered on {}",
            api.path().display()
        );
        let rig = Rig {
            gw_wan,
            gw_lan: net.gw.mac_addr("lan").unwrap(),
            peer: peer_mac,
            host: host_mac,
            net,
            family,
            api,
            dataplane,
        };
        rig.install(&rig.snapshot(1, 2));
        rig
    }

    /// Nodes 1 to 3, site prefixes, node 3 reached directly and node 2
    /// through `via_for_2`.
    pub fn snapshot(&self, version: u64, via_for_2: u16) -> RouteSnapshot {
        Gateway::snapshot(self.family, version, via_for_2)
    }

    pub fn client(&self) -> Client {
        Client::connect(self.api.path()).unwrap()
    }

    pub fn install(&self, snapshot: &RouteSnapshot) {
        let version = self.client().install(snapshot.clone()).unwrap();
        assert_eq!(version, snapshot.version);
    }

    /// The counters once they have settled: frames sent to the gateway a
    /// moment ago may not have been received yet. (A frame that came out is
    /// already counted: router.rs.)
    pub fn stats(&self) -> Stats {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut last = self.client().stats().unwrap();
        loop {
            std::thread::sleep(Duration::from_millis(10));
            let now = self.client().stats().unwrap();
            if now.total == last.total || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// A raw socket on the peer's or the host's interface.
    pub fn peer_socket(&self) -> PacketSocket {
        self.net
            .peer
            .enter(|| PacketSocket::bind("eth0"))
            .unwrap()
            .unwrap()
    }

    pub fn host_socket(&self) -> PacketSocket {
        self.net
            .host
            .enter(|| PacketSocket::bind("eth0"))
            .unwrap()
            .unwrap()
    }

    /// The overlay frame node `src` sends to the gateway for node `dst`,
    /// carrying `inner`.
    pub fn overlay_to_gateway(&self, src: u16, dst: u16, inner: &[u8]) -> Vec<u8> {
        let repr = EncapRepr {
            src_mac: self.peer,
            dst_mac: self.gw_wan,
            underlay: self.family.underlay(src, 1),
            ttl: 64,
            dst_port: OVERLAY_PORT,
            vni: 0,
            option: DetourOptionRepr {
                src: NodeId(src),
                dst: NodeId(dst),
                hop_limit: 4,
                flags: 0,
                seal: Seal::NONE,
            },
        };
        frames::encapsulate(&repr, inner)
    }
}

impl Rig {
    /// Overlay frames from node 2 that pass the classifier but that no
    /// worker may forward, each with the reason it is dropped under.
    pub fn frames_a_worker_refuses(&self) -> Vec<(&'static str, Vec<u8>)> {
        let inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 40, 0);
        let overlay = self.overlay_to_gateway(2, 1, &inner);
        let o = OverlayFrame::parse(&overlay, OVERLAY_PORT).unwrap();
        let hop_limit_at = o.geneve_offset + 8 + 8;
        let dst_at = o.geneve_offset + 8 + 6;

        let mut refused = Vec::new();
        // Another VNI: not this overlay.
        let mut f = overlay.clone();
        f[o.geneve_offset + 4..o.geneve_offset + 7].copy_from_slice(&[0, 0, 9]);
        refused.push(("malformed", f));
        // For node 4, which the snapshot does not know.
        let mut f = overlay.clone();
        f[dst_at..dst_at + 2].copy_from_slice(&4u16.to_be_bytes());
        refused.push(("unreachable", f));
        // For node 3 with one hop left: a relay may not forward it.
        let mut f = overlay.clone();
        f[dst_at..dst_at + 2].copy_from_slice(&3u16.to_be_bytes());
        f[hop_limit_at] = 1;
        refused.push(("hop_limit", f));
        // An inner packet whose TTL is spent.
        let mut spent = inner.clone();
        spent[8] = 1;
        Ipv4Packet::new_checked(&mut spent[..])
            .unwrap()
            .fill_checksum();
        refused.push(("ttl_expired", self.overlay_to_gateway(2, 1, &spent)));
        // An inner packet that claims more bytes than it has.
        let mut short = inner.clone();
        short[2..4].copy_from_slice(&200u16.to_be_bytes());
        refused.push(("malformed", self.overlay_to_gateway(2, 1, &short)));
        // For node 3, already relayed once: one hop means one hop.
        let mut f = overlay.clone();
        f[dst_at..dst_at + 2].copy_from_slice(&3u16.to_be_bytes());
        f[hop_limit_at + 1] |= detour_common::wire::geneve::flags::RELAYED;
        refused.push(("already_relayed", f));
        // An inner packet for a host the LAN has no neighbour for, and that
        // never answers: held, then dropped when its time is up.
        let unknown = datagram(SITE2_HOST, Ipv4Addr::new(10, 1, 0, 77), 1, 2, 10, 0);
        refused.push(("hold_expired", self.overlay_to_gateway(2, 1, &unknown)));
        refused
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // SIGTERM, so that the dataplane detaches and says why it stopped.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.dataplane.id() as i32, libc::SIGTERM) };
        let _ = eventually(Duration::from_secs(5), || {
            matches!(self.dataplane.child().try_wait(), Ok(Some(_)))
        });
    }
}

/// A UDP datagram as an IPv4 packet, checksums filled, TTL 64; the payload
/// starts with `seq`.
pub fn datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    len: usize,
    seq: u32,
) -> Vec<u8> {
    let mut ip = frames::ipv4_packet(src, dst, 20 + 8 + len);
    UdpRepr {
        src_port: sport,
        dst_port: dport,
        payload_len: len as u16,
    }
    .emit(&mut ip[20..])
    .unwrap();
    let n = len.min(4);
    ip[28..28 + n].copy_from_slice(&seq.to_be_bytes()[..n]);
    let mut udp = UdpPacket::new_checked(&mut ip[20..]).unwrap();
    let udp_len = udp.len();
    udp.fill_checksum(checksum::pseudo_header_v4(
        &src.octets(),
        &dst.octets(),
        17,
        udp_len,
    ));
    ip
}

/// `ip` as a router forwards it: TTL one less, header checksum updated.
pub fn forwarded(ip: &[u8]) -> Vec<u8> {
    let mut out = ip.to_vec();
    let mut p = Ipv4Packet::new_checked(&mut out[..]).unwrap();
    p.set_ttl(p.ttl() - 1);
    out
}

pub fn ethernet(dst: MacAddr, src: MacAddr, ip: &[u8]) -> Vec<u8> {
    frames::ethernet_between(src, dst, EtherType::IPV4, ip)
}

/// A UDP socket in `ns` bound to `addr`, with a timeout.
pub fn udp_socket(ns: &detour_testkit::Netns, addr: SocketAddr) -> UdpSocket {
    let socket = ns.enter(|| UdpSocket::bind(addr)).unwrap().unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    socket
}

/// Frames whose outer UDP destination is the overlay port.
pub fn is_overlay(frame: &[u8]) -> bool {
    OverlayFrame::parse(frame, OVERLAY_PORT).is_ok()
}
