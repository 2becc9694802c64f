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
use super::{Error, Result};

/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

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
    /// overlay sender produces neither), or a GENEVE option not detour's.
    /// The other errors say what is wrong with a header that is there.
    pub fn parse(frame: &[u8], port: u16) -> Result<Self> {
        let eth = EthernetFrame::new_checked(frame)?;
        let ip_offset = eth.header_len();
        let (udp_offset, ip_end, outer_src, outer_dst) = match eth.ethertype() {
            EtherType::IPV4 => {
                let ip = Ipv4Packet::new_checked(eth.payload())?;
                if ip.protocol() != IPPROTO_UDP || ip.is_fragment() {
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
                if ip.next_header() != IPPROTO_UDP {
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
