//! A whole overlay data frame: Ethernet, IPv4 or IPv6, UDP, GENEVE, the
//! detour option, and the inner IP packet.
//!
//! detour sends exactly one GENEVE option, its own, first. A receiver accepts
//! no other option layout: RFC 8926 obliges an endpoint to drop packets with
//! critical options it does not understand, and a fixed layout keeps the
//! receive path free of loops (the XDP verifier) and of surprises.

use core::net::IpAddr;

use super::ethernet::{EtherType, EthernetFrame};
use super::geneve::{
    DETOUR_OPTION_LEN, DetourOption, DetourOptionRepr, GeneveHeader, HEADER_LEN as GENEVE_LEN,
};
use super::ipv4::Ipv4Packet;
use super::ipv6::{HEADER_LEN as IPV6_LEN, Ipv6Packet};
use super::udp::{HEADER_LEN as UDP_LEN, UdpPacket};
use super::{Error, Result, ip_protocol};

/// Where the headers of an overlay frame are and what they say.
///
/// Offsets count from the start of the Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayFrame {
    /// Offset of the outer IP header (14, or 18 behind a VLAN tag).
    pub ip_offset: usize,
    /// Offset of the UDP header.
    pub udp_offset: usize,
    /// Offset of the GENEVE header.
    pub geneve_offset: usize,
    /// Offset of the inner IP packet.
    pub inner_offset: usize,
    /// Length of the inner IP packet (to the end of the UDP payload).
    pub inner_len: usize,
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    pub src_port: u16,
    pub vni: u32,
    /// The EtherType of the inner packet, from the GENEVE header.
    pub protocol_type: u16,
    pub option: DetourOptionRepr,
}

impl OverlayFrame {
    /// Parses an overlay frame sent to UDP port `port`.
    ///
    /// [`Error::Protocol`] means "not overlay data": another EtherType, IP
    /// protocol or port, an IPv4 fragment or an IPv6 extension header (an
    /// overlay sender produces neither), a GENEVE OAM packet, an inner
    /// protocol other than IPv4 or IPv6, or a GENEVE option not detour's.
    /// The other errors say what is wrong with a header that is there.
    ///
    /// What depends on configuration (the VNI, the peer) or is policy (a hop
    /// limit of zero) is left to the caller.
    ///
    /// Always inlined: a worker parses every frame, and a returned
    /// `OverlayFrame` the caller reads back from the stack right away cost
    /// a store-forwarding stall per frame (perf, benches/forwarding).
    #[inline(always)]
    pub fn parse(frame: &[u8], port: u16) -> Result<Self> {
        let eth = EthernetFrame::new_checked(frame)?;
        let ip_offset = eth.header_len();
        let (udp_offset, ip_end, outer_src, outer_dst) = match eth.ethertype() {
            EtherType::IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload())?;
                if ip.protocol() != ip_protocol::UDP || ip.is_fragment() {
                    return Err(Error::Protocol);
                }
                (
                    ip_offset + ip.header_len(),
                    ip_offset + usize::from(ip.total_len()),
                    IpAddr::V4(ip.src_addr()),
                    IpAddr::V4(ip.dst_addr()),
                )
            }
            EtherType::IPV6 => {
                let ip = Ipv6Packet::new_checked(eth.payload())?;
                if ip.next_header() != ip_protocol::UDP {
                    return Err(Error::Protocol);
                }
                let udp_offset = ip_offset + IPV6_LEN;
                (
                    udp_offset,
                    udp_offset + usize::from(ip.payload_len()),
                    IpAddr::V6(ip.src_addr()),
                    IpAddr::V6(ip.dst_addr()),
                )
            }
            _ => return Err(Error::Protocol),
        };
        let udp = UdpPacket::new_checked(&frame[udp_offset..ip_end])?;
        if udp.dst_port() != port {
            return Err(Error::Protocol);
        }
        let geneve_offset = udp_offset + UDP_LEN;
        let geneve = GeneveHeader::new_checked(udp.payload())?;
        let inner_is_ip = matches!(
            EtherType(geneve.protocol_type()),
            EtherType::IPV4 | EtherType::IPV6
        );
        if geneve.oam() || !inner_is_ip {
            return Err(Error::Protocol);
        }
        if geneve.options_len() != DETOUR_OPTION_LEN {
            return Err(Error::OptionLength);
        }
        let option = DetourOption::new_checked(geneve.options())?;
        let inner_offset = geneve_offset + GENEVE_LEN + DETOUR_OPTION_LEN;
        Ok(OverlayFrame {
            ip_offset,
            udp_offset,
            geneve_offset,
            inner_offset,
            inner_len: geneve.payload().len(),
            outer_src,
            outer_dst,
            src_port: udp.src_port(),
            vni: geneve.vni(),
            protocol_type: geneve.protocol_type(),
            option: DetourOptionRepr::parse(&option),
        })
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::wire::encap::{EncapRepr, EncapTemplate, Underlay};
    use crate::wire::geneve::Seal;
    use crate::wire::{MacAddr, NodeId};

    /// A valid IPv4-underlay overlay frame around a 20-byte inner header.
    fn frame() -> [u8; 94] {
        let mut f = [0u8; 94];
        f[74] = 0x45;
        let t = EncapTemplate::new(&EncapRepr {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            underlay: Underlay::V4 {
                src: Ipv4Addr::new(192, 0, 2, 1),
                dst: Ipv4Addr::new(192, 0, 2, 2),
            },
            ttl: 64,
            dst_port: 6081,
            vni: 9,
            option: DetourOptionRepr {
                src: NodeId(1),
                dst: NodeId(2),
                hop_limit: 4,
                flags: 0,
                seal: Seal::NONE,
            },
        });
        assert_eq!(t.write(&mut f, 74, 20, 1), Ok(0));
        f
    }

    #[test]
    fn each_broken_layer_is_named() {
        type Edit = fn(&mut [u8; 94]);
        let cases: [(&str, Edit, Error); 10] = [
            (
                "ARP",
                |f| f[12..14].copy_from_slice(&[0x08, 0x06]),
                Error::Protocol,
            ),
            ("TCP", |f| f[23] = 6, Error::Protocol),
            ("IPv4 fragment", |f| f[20] = 0x20, Error::Protocol),
            ("IPv4 version", |f| f[14] = 0x55, Error::Version),
            ("other port", |f| f[37] = 0xc2, Error::Protocol),
            ("UDP length past IP", |f| f[39] = 0xff, Error::Truncated),
            ("GENEVE version", |f| f[42] |= 0x40, Error::Version),
            ("OAM packet", |f| f[43] |= 0x80, Error::Protocol),
            (
                "inner Ethernet",
                |f| f[44..46].copy_from_slice(&[0x65, 0x58]),
                Error::Protocol,
            ),
            ("two options", |f| f[42] = 4, Error::OptionLength),
        ];
        assert!(OverlayFrame::parse(&frame(), 6081).is_ok());
        for (what, edit, want) in cases {
            let mut f = frame();
            edit(&mut f);
            assert_eq!(OverlayFrame::parse(&f, 6081), Err(want), "{what}");
        }
    }

    #[test]
    fn truncation_at_every_header_boundary_is_refused() {
        let f = frame();
        for cut in [0, 13, 14, 33, 34, 41, 42, 49, 50, 61, 73] {
            assert!(
                OverlayFrame::parse(&f[..cut], 6081).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn foreign_option_is_not_overlay_data() {
        let mut f = frame();
        f[50..52].copy_from_slice(&0x0101u16.to_be_bytes()); // Open vSwitch's class
        assert_eq!(OverlayFrame::parse(&f, 6081), Err(Error::Protocol));
    }
}
