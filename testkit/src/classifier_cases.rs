//! The classifier's test table: crafted frames and what must become of
//! them. The pure decision functions (`detour_common::classify`) and the
//! kernel programs (BPF_PROG_TEST_RUN) are both held to it.

use std::net::IpAddr;

use detour_common::classify::{DropReason, WanVerdict};
use detour_common::maps::PeerKey;
use detour_common::wire::{EtherType, ip_protocol};

use crate::frames::*;

/// A frame for the WAN program and the verdict it must get.
#[derive(Debug, Clone)]
pub struct WanCase {
    pub name: String,
    pub frame: Vec<u8>,
    pub verdict: WanVerdict,
}

/// A frame for the LAN program; `remote` when its destination is in one of
/// [`REMOTE_PREFIXES`] (then it goes to a worker).
#[derive(Debug, Clone)]
pub struct LanCase {
    pub name: String,
    pub frame: Vec<u8>,
    pub remote: bool,
}

/// The underlay addresses the WAN tables treat as peers.
pub const PEERS: [IpAddr; 2] = [IpAddr::V4(PEER_V4), IpAddr::V6(PEER_V6)];

/// The remote prefixes the LAN tables install, with the node serving each.
pub const REMOTE_PREFIXES: [(&str, u16); 4] = [
    ("10.2.0.0/16", 2),
    ("10.2.5.0/24", 3),
    ("198.51.100.7/32", 4),
    ("2001:db8:2::/48", 2),
];

/// Whether `key` is one of [`PEERS`].
pub fn is_peer(key: &PeerKey) -> bool {
    PEERS.iter().any(|p| PeerKey::from(*p) == *key)
}

use DropReason::*;
use WanVerdict::{Drop, Overlay, Pass};

/// Every WAN case, for a classifier with overlay port [`OVERLAY_PORT`] and
/// control port [`CONTROL_PORT`]: each verdict and drop reason, truncation
/// at every header boundary, both underlays, VLAN, options, fragments,
/// extension headers.
pub fn wan_cases() -> Vec<WanCase> {
    let mut cases = Vec::new();
    let mut case = |name: &str, frame: Vec<u8>, verdict| {
        cases.push(WanCase {
            name: name.to_owned(),
            frame,
            verdict,
        })
    };
    let v4 = overlay_v4();
    let v6 = overlay_v6();
    let opt4 = option_offset(&v4);
    let opt6 = option_offset(&v6);
    let geneve4 = opt4 - 8;
    let geneve6 = opt6 - 8;

    // Well-formed overlay data.
    case("v4 overlay", v4.clone(), Overlay);
    case("v6 overlay", v6.clone(), Overlay);
    case("v4 overlay, VLAN tag", with_vlan(&v4, 100), Overlay);
    case("v6 overlay, VLAN tag", with_vlan(&v6, 4094), Overlay);
    case(
        "v4 overlay, 8 bytes of IP options",
        with_ipv4_options(&v4, 2),
        Overlay,
    );
    case(
        "v4 overlay, 40 bytes of IP options",
        with_ipv4_options(&v4, 10),
        Overlay,
    );
    case("v4 overlay, hop limit 1", set_u8(&v4, opt4 + 8, 1), Overlay);
    case(
        "v4 overlay, relayed flag",
        set_u8(&v4, opt4 + 9, 1),
        Overlay,
    );
    case(
        "v6 overlay, inner IPv6",
        set_u16(&v6, geneve6 + 2, 0x86dd),
        Overlay,
    );
    let mut padded = overlay(PEER_V4.into(), LOCAL_V4.into(), 20);
    padded.resize(padded.len() + 18, 0xee);
    case(
        "v4 overlay, Ethernet padding after the IP packet",
        padded,
        Overlay,
    );
    case(
        "v4 overlay, empty inner packet",
        v4_with_empty_inner(),
        Overlay,
    );
    // The largest linear frame BPF_PROG_TEST_RUN and a non-multi-buffer XDP
    // program take: 4096 minus headroom and skb_shared_info.
    let jumbo = overlay(PEER_V4.into(), LOCAL_V4.into(), 3500 - 74);
    case("v4 overlay, 3500-byte jumbo", jumbo, Overlay);

    // Not overlay data: the kernel's.
    case("runt: Ethernet header only", v4[..14].to_vec(), Pass);
    case("runt: 6 bytes", v4[..6].to_vec(), Pass);
    case("empty frame", Vec::new(), Pass);
    case("ARP", arp(), Pass);
    case(
        "v4 UDP to another port from a peer",
        udp(PEER_V4.into(), LOCAL_V4.into(), 5000, OTHER_PORT, 32),
        Pass,
    );
    case(
        "v4 UDP to another port from a stranger",
        udp(STRANGER_V4.into(), LOCAL_V4.into(), 5000, OTHER_PORT, 32),
        Pass,
    );
    case(
        "v6 UDP to another port",
        udp(PEER_V6.into(), LOCAL_V6.into(), 5000, OTHER_PORT, 32),
        Pass,
    );
    let vxlan_port = set_u16(&v4, 34 + 2, 4789);
    case("v4 overlay frame to the VXLAN port", vxlan_port, Pass);
    case(
        "v4 TCP to the overlay port",
        set_u8(&v4, 14 + 9, ip_protocol::TCP),
        Pass,
    );
    case("v4 ICMP", set_u8(&v4, 14 + 9, ip_protocol::ICMP), Pass);
    case(
        "v6 TCP to the overlay port",
        set_u8(&v6, 14 + 6, ip_protocol::TCP),
        Pass,
    );
    case(
        "v6 hop-by-hop extension header before UDP",
        with_ipv6_extension(&v6, 0),
        Pass,
    );
    case(
        "v6 fragment header before UDP",
        with_ipv6_extension(&v6, 44),
        Pass,
    );
    case("v4 header with IP version 5", set_u8(&v4, 14, 0x55), Pass);
    case("v4 header with IHL 4", set_u8(&v4, 14, 0x44), Pass);
    case("v6 EtherType, IPv4 header", set_u16(&v4, 12, 0x86dd), Pass);
    case(
        "v4 later fragment (offset 1480)",
        set_u16(&v4, 14 + 6, 185),
        Pass,
    );
    case("EtherType TEB", set_u16(&v4, 12, EtherType::TEB.0), Pass);

    // The control port: peers reach the kernel (the control process),
    // strangers nothing, whatever the way their datagram is wrapped.
    let control = |src: IpAddr| {
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(LOCAL_V4),
            IpAddr::V6(_) => IpAddr::V6(LOCAL_V6),
        };
        udp(src, dst, CONTROL_PORT, CONTROL_PORT, 40)
    };
    let stranger4 = control(STRANGER_V4.into());
    let stranger6 = control(STRANGER_V6.into());
    case("v4 control from a peer", control(PEER_V4.into()), Pass);
    case("v6 control from a peer", control(PEER_V6.into()), Pass);
    case(
        "v4 control from a stranger",
        stranger4.clone(),
        Drop(ControlStranger),
    );
    case(
        "v6 control from a stranger",
        stranger6.clone(),
        Drop(ControlStranger),
    );
    case(
        "v4 control from a stranger, VLAN tag",
        with_vlan(&stranger4, 7),
        Drop(ControlStranger),
    );
    case(
        "v4 control from a stranger, 40 bytes of IP options",
        with_ipv4_options(&stranger4, 10),
        Drop(ControlStranger),
    );
    case(
        "v4 control from a stranger, first fragment",
        set_u16(&stranger4, 14 + 6, 0x2000),
        Drop(ControlStranger),
    );
    case(
        "v4 control from a stranger, later fragment (no port to tell by)",
        set_u16(&stranger4, 14 + 6, 185),
        Pass,
    );
    case(
        "v4 control from a stranger, lengths that lie",
        set_u16(&stranger4, 16, 1000),
        Drop(ControlStranger),
    );
    case(
        "v4 control from a stranger, cut before the port",
        stranger4[..37].to_vec(),
        Pass,
    );
    case(
        "v4 control from a peer, first fragment",
        set_u16(&control(PEER_V4.into()), 14 + 6, 0x2000),
        Pass,
    );
    let fragmented6 = with_ipv6_extension(&stranger6, ip_protocol::IPV6_FRAGMENT);
    case(
        "v6 control from a stranger, first fragment",
        set_u16(&fragmented6, 54 + 2, 0x0001),
        Drop(ControlStranger),
    );
    case(
        "v6 control from a stranger, later fragment",
        fragmented6,
        Pass,
    );
    case(
        "v6 control from a stranger behind hop-by-hop options (the kernel's)",
        with_ipv6_extension(&stranger6, 0),
        Pass,
    );
    let mapped = IpAddr::V6(PEER_V4.to_ipv6_mapped());
    let forged = udp(mapped, IpAddr::V6(LOCAL_V6), CONTROL_PORT, CONTROL_PORT, 40);
    case(
        "v6 control from an IPv4-mapped peer address",
        forged,
        Drop(ControlStranger),
    );

    // Truncation at every header boundary (the IP length still claims the
    // whole packet). Before the UDP destination port can be read, the frame
    // is not provably overlay traffic and goes to the kernel.
    for (cut, verdict) in [
        (13, Pass),
        (14, Pass),
        (33, Pass),
        (34, Pass),
        (37, Pass),
        (38, Drop(Truncated)),
        (42, Drop(Truncated)),
        (50, Drop(Truncated)),
        (61, Drop(Truncated)),
        (62, Drop(Truncated)),
        (73, Drop(Truncated)),
        (74, Drop(Truncated)),
    ] {
        case(
            &format!("v4 overlay cut at {cut}"),
            v4[..cut].to_vec(),
            verdict,
        );
    }
    for (cut, verdict) in [
        (53, Pass),
        (54, Pass),
        (57, Pass),
        (58, Drop(Truncated)),
        (62, Drop(Truncated)),
        (70, Drop(Truncated)),
        (82, Drop(Truncated)),
        (93, Drop(Truncated)),
        (94, Drop(Truncated)),
    ] {
        case(
            &format!("v6 overlay cut at {cut}"),
            v6[..cut].to_vec(),
            verdict,
        );
    }
    let tagged = with_vlan(&v4, 9);
    case("tagged v4 overlay cut at 17", tagged[..17].to_vec(), Pass);
    case(
        "tagged v4 overlay cut at 42",
        tagged[..42].to_vec(),
        Drop(Truncated),
    );

    // Lengths that lie.
    let total = get_u16(&v4, 16);
    case(
        "v4 total length beyond the frame",
        set_u16(&v4, 16, total + 1),
        Drop(Truncated),
    );
    case(
        "v4 total length shorter than IP+UDP",
        set_u16(&v4, 16, 27),
        Drop(Length),
    );
    case("v4 UDP length 7", set_u16(&v4, 38, 7), Drop(Length));
    let udp_len = get_u16(&v4, 38);
    case(
        "v4 UDP length past the IP packet",
        set_u16(&v4, 38, udp_len + 1),
        Drop(Length),
    );
    case(
        "v4 UDP length covering GENEVE base only",
        set_u16(&v4, 38, 16),
        Drop(Truncated),
    );
    case(
        "v4 UDP length covering part of the option",
        set_u16(&v4, 38, 8 + 8 + 6),
        Drop(Truncated),
    );
    let payload = get_u16(&v6, 18);
    case(
        "v6 payload length beyond the frame",
        set_u16(&v6, 18, payload + 1),
        Drop(Truncated),
    );
    case("v6 payload length 4", set_u16(&v6, 18, 4), Drop(Length));

    // Fragments of overlay frames.
    case(
        "v4 first fragment to the overlay port",
        set_u16(&v4, 14 + 6, 0x2000),
        Drop(Fragment),
    );
    case(
        "v4 first fragment to another port",
        set_u16(
            &udp(PEER_V4.into(), LOCAL_V4.into(), 1, OTHER_PORT, 64),
            14 + 6,
            0x2000,
        ),
        Pass,
    );

    // GENEVE and the detour option.
    case(
        "GENEVE version 1",
        set_u8(&v4, geneve4, 0x40 | 3),
        Drop(GeneveVersion),
    );
    case(
        "GENEVE version 3, v6",
        set_u8(&v6, geneve6, 0xc0 | 3),
        Drop(GeneveVersion),
    );
    case(
        "GENEVE without options",
        set_u8(&v4, geneve4, 0),
        Drop(GeneveOptions),
    );
    case(
        "GENEVE options length 16",
        set_u8(&v4, geneve4, 4),
        Drop(GeneveOptions),
    );
    case(
        "GENEVE options length 252",
        set_u8(&v4, geneve4, 63),
        Drop(GeneveOptions),
    );
    case(
        "option class 0x0101",
        set_u16(&v4, opt4, 0x0101),
        Drop(GeneveOptions),
    );
    case(
        "option type not critical",
        set_u8(&v4, opt4 + 2, 0x01),
        Drop(GeneveOptions),
    );
    case(
        "option length 3 words",
        set_u8(&v4, opt4 + 3, 3),
        Drop(GeneveOptions),
    );
    case(
        "option length 1 word, v6",
        set_u8(&v6, opt6 + 3, 1),
        Drop(GeneveOptions),
    );
    case(
        "GENEVE OAM bit",
        set_u8(&v4, geneve4 + 1, 0x80),
        Drop(GenevePayload),
    );
    case(
        "GENEVE carrying Ethernet (TEB)",
        set_u16(&v4, geneve4 + 2, EtherType::TEB.0),
        Drop(GenevePayload),
    );
    case(
        "GENEVE carrying ARP",
        set_u16(&v6, geneve6 + 2, 0x0806),
        Drop(GenevePayload),
    );
    case("hop limit 0", set_u8(&v4, opt4 + 8, 0), Drop(HopLimit));
    case(
        "hop limit 0, v6, tagged",
        with_vlan(&set_u8(&v6, opt6 + 8, 0), 3),
        Drop(HopLimit),
    );

    // Strangers.
    case(
        "v4 overlay from an unknown peer",
        overlay(STRANGER_V4.into(), LOCAL_V4.into(), 64),
        Drop(UnknownPeer),
    );
    case(
        "v6 overlay from an unknown peer",
        overlay(STRANGER_V6.into(), LOCAL_V6.into(), 64),
        Drop(UnknownPeer),
    );
    case(
        "v6 overlay from the v4 peer's IPv4-mapped address",
        overlay(IpAddr::V6(PEER_V4.to_ipv6_mapped()), LOCAL_V6.into(), 64),
        Drop(UnknownPeer),
    );
    case(
        "malformed GENEVE from an unknown peer",
        set_u8(
            &overlay(STRANGER_V4.into(), LOCAL_V4.into(), 64),
            geneve4,
            0x40,
        ),
        Drop(UnknownPeer),
    );
    cases
}

/// An IPv4-underlay overlay frame whose UDP payload is the GENEVE header and
/// option alone.
fn v4_with_empty_inner() -> Vec<u8> {
    let full = overlay(PEER_V4.into(), LOCAL_V4.into(), 20);
    let mut f = full[..74].to_vec();
    f = set_u16(&f, 16, 74 - 14);
    set_u16(&f, 38, 74 - 34)
}

/// Every LAN case: remote and local destinations of both families, longest
/// prefixes, VLAN, ARP, ND, truncated and malformed headers.
pub fn lan_cases() -> Vec<LanCase> {
    let mut cases = Vec::new();
    let mut case = |name: &str, frame: Vec<u8>, remote| {
        cases.push(LanCase {
            name: name.to_owned(),
            frame,
            remote,
        })
    };
    let host: IpAddr = "10.1.0.5".parse().unwrap();
    let host6: IpAddr = "2001:db8:1::5".parse().unwrap();
    let to = |dst: &str| udp(host, dst.parse().unwrap(), 40000, 443, 100);
    let to6 = |dst: &str| udp(host6, dst.parse().unwrap(), 40000, 443, 100);

    case("v4 to a remote /16", to("10.2.9.9"), true);
    case("v4 to a remote /24 inside the /16", to("10.2.5.1"), true);
    case("v4 to a remote /32", to("198.51.100.7"), true);
    case("v4 next to the remote /32", to("198.51.100.8"), false);
    case("v4 to the local site", to("10.1.0.9"), false);
    case("v4 just outside the remote /16", to("10.3.0.1"), false);
    case("v4 broadcast", to("255.255.255.255"), false);
    case(
        "v4 to a remote prefix, VLAN tag",
        with_vlan(&to("10.2.0.1"), 10),
        true,
    );
    case("v6 to a remote /48", to6("2001:db8:2:ffff::1"), true);
    case("v6 to the local site", to6("2001:db8:1::9"), false);
    case(
        "v6 to all-nodes multicast (as ND sends)",
        to6("ff02::1"),
        false,
    );
    case("ARP", arp(), false);
    let remote = to("10.2.9.9");
    case(
        "v4 to a remote prefix cut at 33",
        remote[..33].to_vec(),
        false,
    );
    case(
        "v4 to a remote prefix cut inside UDP",
        remote[..40].to_vec(),
        false,
    );
    case(
        "v4 to a remote prefix, total length beyond the frame",
        set_u16(&remote, 16, 200),
        false,
    );
    case(
        "v4 to a remote prefix, IHL 3",
        set_u8(&remote, 14, 0x43),
        false,
    );
    case(
        "v4 to a remote prefix, version 6",
        set_u8(&remote, 14, 0x65),
        false,
    );
    let remote6 = to6("2001:db8:2::1");
    case(
        "v6 to a remote prefix cut at 53",
        remote6[..53].to_vec(),
        false,
    );
    case(
        "v6 to a remote prefix, payload length beyond the frame",
        set_u16(&remote6, 18, 200),
        false,
    );
    case("runt", remote[..10].to_vec(), false);
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_large_and_names_unique() {
        fn unique(names: Vec<&str>) -> bool {
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            sorted.len() == names.len()
        }
        let wan = wan_cases();
        let lan = lan_cases();
        assert!(wan.len() >= 40, "{} WAN cases", wan.len());
        assert!(unique(wan.iter().map(|c| c.name.as_str()).collect()));
        assert!(unique(lan.iter().map(|c| c.name.as_str()).collect()));
    }
}
