//! Writing an overlay encapsulation into a frame's headroom.
//!
//! The outer headers toward one next hop differ from packet to packet only in
//! a few fields: lengths, the copied TOS or traffic class, the UDP source port
//! (flow entropy), the GENEVE protocol type and, on IPv6, the UDP checksum.
//! [`EncapTemplate`] therefore emits the whole header once, when a route is
//! installed, and per packet copies it in front of the inner packet and
//! patches those fields. The IPv4 header checksum is finished from a sum
//! precomputed over the fixed words, so the per-packet cost is a copy of at
//! most 94 bytes and a handful of stores. On an IPv6 underlay the UDP checksum
//! is mandatory (RFC 8200, section 8.1) and covers the payload, so it is the
//! one per-packet cost that grows with the packet.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ethernet::{self, EtherType, EthernetRepr, MacAddr};
use super::field::set_u16;
use super::geneve::{
    DETOUR_GENEVE_LEN, DETOUR_OPTION_LEN, DetourOptionRepr, GeneveRepr, HEADER_LEN as GENEVE_LEN,
    Seal,
};
use super::ipv4::{self, Ipv4Repr};
use super::ipv6::{self, Ipv6Repr};
use super::udp::{self, UdpRepr};
use super::{Error, Result, ip_protocol};

/// Outer headers on an IPv4 underlay: Ethernet, IPv4, UDP, GENEVE, option.
pub const ENCAP_LEN_V4: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + DETOUR_GENEVE_LEN;
/// Outer headers on an IPv6 underlay.
pub const ENCAP_LEN_V6: usize =
    ethernet::HEADER_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN + DETOUR_GENEVE_LEN;
/// The most headroom an encapsulation needs.
pub const MAX_ENCAP_LEN: usize = ENCAP_LEN_V6;

/// What the outer IP header adds to the inner IP packet's length: the number
/// to subtract from the underlay MTU to get the overlay MTU.
pub const IP_OVERHEAD_V4: usize = ipv4::HEADER_LEN + udp::HEADER_LEN + DETOUR_GENEVE_LEN;
pub const IP_OVERHEAD_V6: usize = ipv6::HEADER_LEN + udp::HEADER_LEN + DETOUR_GENEVE_LEN;

/// Default TTL / hop limit of the outer header.
pub const DEFAULT_OUTER_TTL: u8 = 64;

/// The outer IP addresses of an encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Underlay {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// The fields of an encapsulation toward one next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncapRepr {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub underlay: Underlay,
    /// Outer TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// The overlay's UDP port, normally [`super::geneve::DEFAULT_PORT`].
    pub dst_port: u16,
    pub vni: u32,
    pub option: DetourOptionRepr,
}

/// A pre-built encapsulation, ready to be written in front of inner packets.
#[derive(Debug, Clone)]
pub struct EncapTemplate {
    bytes: [u8; MAX_ENCAP_LEN],
    v6: bool,
    /// IPv4: running sum of the header's words other than TOS and total
    /// length. IPv6: running sum of the pseudo-header's addresses and next
    /// header.
    partial_sum: u64,
}

// Offsets inside the template.
const IP: usize = ethernet::HEADER_LEN;
const UDP_V4: usize = IP + ipv4::HEADER_LEN;
const UDP_V6: usize = IP + ipv6::HEADER_LEN;

impl EncapTemplate {
    #[inline]
    pub fn new(repr: &EncapRepr) -> Self {
        let mut bytes = [0u8; MAX_ENCAP_LEN];
        let (v6, ethertype, udp_at) = match repr.underlay {
            Underlay::V4 { .. } => (false, EtherType::IPV4, UDP_V4),
            Underlay::V6 { .. } => (true, EtherType::IPV6, UDP_V6),
        };
        // Fixed-size headers into a buffer sized for the largest set: the
        // emits cannot fail.
        let emitted = emit_headers(repr, ethertype, udp_at, &mut bytes);
        debug_assert!(emitted.is_ok());

        let partial_sum = match repr.underlay {
            Underlay::V4 { .. } => {
                // Total length and checksum are written per packet; TOS is
                // already zero.
                let header = &mut bytes[IP..UDP_V4];
                set_u16(header, 2, 0);
                set_u16(header, 10, 0);
                checksum::sum(header, 0)
            }
            Underlay::V6 { src, dst } => {
                checksum::pseudo_header_v6(&src.octets(), &dst.octets(), ip_protocol::UDP, 0)
            }
        };
        EncapTemplate {
            bytes,
            v6,
            partial_sum,
        }
    }

    /// The outer headers, with the per-packet fields (lengths, TOS, source
    /// port, protocol type, checksums) zero.
    #[inline]
    pub fn headers(&self) -> &[u8] {
        &self.bytes[..self.header_len()]
    }

    /// Whether the underlay is IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }

    /// Length of the outer headers this template writes.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.v6 { ENCAP_LEN_V6 } else { ENCAP_LEN_V4 }
    }

    /// Offset of the GENEVE header in the headers this template writes.
    #[inline]
    pub fn geneve_at(&self) -> usize {
        self.udp_at() + udp::HEADER_LEN
    }

    #[inline]
    fn udp_at(&self) -> usize {
        if self.v6 { UDP_V6 } else { UDP_V4 }
    }

    /// Encapsulates the inner IP packet `frame[inner_start..inner_start +
    /// inner_len]`, not encrypted, by writing the outer headers into the
    /// `header_len()` bytes before it; returns the offset where the frame
    /// now starts. [`Self::write_headers`] and [`Self::finish`] in one.
    #[inline]
    pub fn write(
        &self,
        frame: &mut [u8],
        inner_start: usize,
        inner_len: usize,
        src_port: u16,
    ) -> Result<usize> {
        let start = self.write_headers(frame, inner_start, inner_len, src_port, Seal::NONE)?;
        self.finish(frame, start, inner_start + inner_len);
        Ok(start)
    }

    /// Writes the outer headers in front of a payload of `payload_len`
    /// bytes at `inner_start` (the inner IP packet, and its tag when
    /// `seal` says it is sealed); returns the offset where the frame now
    /// starts. The IPv6 UDP checksum, which covers the payload, is left to
    /// [`Self::finish`], once the payload is what goes out.
    ///
    /// The GENEVE protocol type and the outer TOS / traffic class (DSCP and
    /// ECN, copied as RFC 6040's normal mode asks) come from the inner
    /// packet's first bytes, so they must still be plaintext; `src_port` is
    /// the flow's entropy (RFC 8926, section 3.3).
    ///
    /// Errors: [`Error::NoRoom`] without enough headroom or when the
    /// payload runs past the buffer, [`Error::Protocol`] when the inner
    /// packet is not IPv4 or IPv6, [`Error::Length`] when the result would
    /// exceed 64 KiB.
    #[inline]
    pub fn write_headers(
        &self,
        frame: &mut [u8],
        inner_start: usize,
        payload_len: usize,
        src_port: u16,
        seal: Seal,
    ) -> Result<usize> {
        let fits = inner_start >= self.header_len()
            && inner_start
                .checked_add(payload_len)
                .is_some_and(|end| end <= frame.len());
        if !fits {
            return Err(Error::NoRoom);
        }
        let (ethertype, tos) = match frame.get(inner_start..inner_start + 2) {
            Some(&[b0, b1]) if b0 >> 4 == 4 => (EtherType::IPV4, b1),
            Some(&[b0, b1]) if b0 >> 4 == 6 => (EtherType::IPV6, (b0 << 4) | (b1 >> 4)),
            _ => return Err(Error::Protocol),
        };
        let outer = Outer {
            src_port,
            seal,
            ethertype,
            tos,
        };
        self.write_headers_as(frame, inner_start, payload_len, &outer)
    }

    /// [`Self::write_headers`] with the per-packet fields given rather than
    /// read from the inner packet: for a relay, whose payload may be
    /// ciphertext.
    #[inline]
    pub fn write_headers_as(
        &self,
        frame: &mut [u8],
        inner_start: usize,
        payload_len: usize,
        outer: &Outer,
    ) -> Result<usize> {
        let hl = self.header_len();
        let start = inner_start.checked_sub(hl).ok_or(Error::NoRoom)?;
        let end = inner_start.checked_add(payload_len).ok_or(Error::NoRoom)?;
        let frame = frame.get_mut(start..end).ok_or(Error::NoRoom)?;
        let udp_len = udp::HEADER_LEN + DETOUR_GENEVE_LEN + payload_len;
        let udp_at = self.udp_at();
        let ip_len = udp_at - IP + udp_len;
        if ip_len > usize::from(u16::MAX) {
            return Err(Error::Length);
        }
        let (udp_len, ip_len) = (udp_len as u16, ip_len as u16);
        let tos = outer.tos;

        frame[..hl].copy_from_slice(&self.bytes[..hl]);
        let udp = &mut frame[udp_at..];
        set_u16(udp, 0, outer.src_port);
        set_u16(udp, 4, udp_len);
        set_u16(udp, udp::HEADER_LEN + 2, outer.ethertype.0);
        if outer.seal.is_sealed() {
            outer.seal.emit(&mut udp[udp::HEADER_LEN + GENEVE_LEN..]);
        }

        let ip = &mut frame[IP..udp_at];
        if self.v6 {
            // Version 6, the traffic class, a zero flow label.
            ip[0] = 0x60 | (tos >> 4);
            ip[1] = tos << 4;
            set_u16(ip, 4, udp_len);
        } else {
            ip[1] = tos;
            set_u16(ip, 2, ip_len);
            let c = checksum::finish(self.partial_sum + u64::from(tos) + u64::from(ip_len));
            set_u16(ip, 10, c);
            // UDP checksum stays zero: optional over IPv4 (RFC 8926, 3.3).
        }
        Ok(start)
    }

    /// Finishes the frame at `frame[start..end]` that [`Self::write_headers`]
    /// began, once its payload is final: on an IPv6 underlay, the UDP
    /// checksum; on IPv4, nothing.
    #[inline]
    pub fn finish(&self, frame: &mut [u8], start: usize, end: usize) {
        if !self.v6 {
            return;
        }
        let udp = &mut frame[start + UDP_V6..end];
        let acc = self.partial_sum + udp.len() as u64;
        set_u16(udp, 6, 0);
        let c = checksum::finish(checksum::sum(udp, acc));
        set_u16(udp, 6, if c == 0 { 0xffff } else { c });
    }
}

/// The per-packet fields of the outer headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    /// The flow's entropy.
    pub src_port: u16,
    pub seal: Seal,
    /// The inner packet's EtherType, for the GENEVE header.
    pub ethertype: EtherType,
    /// The outer TOS / traffic class.
    pub tos: u8,
}

/// Writes the outer headers with every per-packet field zero.
fn emit_headers(
    repr: &EncapRepr,
    ethertype: EtherType,
    udp_at: usize,
    bytes: &mut [u8; MAX_ENCAP_LEN],
) -> Result<()> {
    EthernetRepr {
        dst: repr.dst_mac,
        src: repr.src_mac,
        vlan: None,
        ethertype,
    }
    .emit(bytes)?;
    match repr.underlay {
        Underlay::V4 { src, dst } => Ipv4Repr {
            src,
            dst,
            protocol: ip_protocol::UDP,
            ttl: repr.ttl,
            tos: 0,
            ident: 0,
            dont_frag: true,
            payload_len: 0,
        }
        .emit(&mut bytes[IP..])?,
        Underlay::V6 { src, dst } => Ipv6Repr {
            src,
            dst,
            next_header: ip_protocol::UDP,
            hop_limit: repr.ttl,
            traffic_class: 0,
            flow_label: 0,
            payload_len: 0,
        }
        .emit(&mut bytes[IP..])?,
    };
    UdpRepr {
        src_port: 0,
        dst_port: repr.dst_port,
        payload_len: 0,
    }
    .emit(&mut bytes[udp_at..])?;
    let geneve_at = udp_at + udp::HEADER_LEN;
    GeneveRepr {
        oam: false,
        critical: true,
        protocol_type: 0,
        vni: repr.vni,
        options_len: DETOUR_OPTION_LEN as u8,
    }
    .emit(&mut bytes[geneve_at..])?;
    repr.option.emit(&mut bytes[geneve_at + GENEVE_LEN..])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::geneve::{NodeId, flags};
    use crate::wire::{Ipv4Packet, Ipv6Packet, OverlayFrame, UdpPacket};
    use core::net::IpAddr;

    fn repr(underlay: Underlay) -> EncapRepr {
        EncapRepr {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            underlay,
            ttl: DEFAULT_OUTER_TTL,
            dst_port: 6081,
            vni: 42,
            option: DetourOptionRepr {
                src: NodeId(1),
                dst: NodeId(3),
                hop_limit: 4,
                flags: 0,
                seal: Seal::NONE,
            },
        }
    }

    const V4: Underlay = Underlay::V4 {
        src: Ipv4Addr::new(203, 0, 113, 1),
        dst: Ipv4Addr::new(198, 51, 100, 2),
    };

    fn v6() -> Underlay {
        Underlay::V6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
        }
    }

    /// A frame with `headroom` bytes free, then an inner IPv4/UDP packet.
    fn frame_with_inner(headroom: usize) -> ([u8; 256], usize) {
        let mut f = [0u8; 256];
        let inner = Ipv4Repr {
            src: Ipv4Addr::new(10, 1, 0, 5),
            dst: Ipv4Addr::new(10, 3, 0, 9),
            protocol: 17,
            ttl: 63,
            tos: 0x2e,
            ident: 1,
            dont_frag: false,
            payload_len: 12,
        };
        inner.emit(&mut f[headroom..]).unwrap();
        (f, 32)
    }

    #[test]
    fn overhead_and_mtu_arithmetic_match_the_documented_numbers() {
        assert_eq!((ENCAP_LEN_V4, ENCAP_LEN_V6), (74, 94));
        assert_eq!((IP_OVERHEAD_V4, IP_OVERHEAD_V6), (60, 80));
        assert_eq!(1500 - IP_OVERHEAD_V4, 1440);
        assert_eq!(1500 - IP_OVERHEAD_V6, 1420);
    }

    #[test]
    fn ipv4_encapsulation_parses_back_with_valid_checksum() {
        let (mut f, inner_len) = frame_with_inner(128);
        let t = EncapTemplate::new(&repr(V4));
        let start = t.write(&mut f, 128, inner_len, 51234).unwrap();
        assert_eq!(start, 128 - 74);
        let frame = &f[start..128 + inner_len];
        let o = OverlayFrame::parse(frame, 6081).unwrap();
        assert_eq!(o.outer_src, IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)));
        assert_eq!((o.inner_offset, o.inner_len), (74, inner_len));
        assert_eq!((o.src_port, o.vni, o.protocol_type), (51234, 42, 0x0800));
        assert_eq!(o.option, repr(V4).option);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum() && ip.dont_frag());
        assert_eq!(ip.tos(), 0x2e);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(udp.checksum(), 0);
    }

    #[test]
    fn ipv6_encapsulation_carries_a_valid_udp_checksum() {
        let (mut f, inner_len) = frame_with_inner(128);
        let underlay = v6();
        let t = EncapTemplate::new(&repr(underlay));
        let start = t.write(&mut f, 128, inner_len, 7).unwrap();
        let frame = &f[start..128 + inner_len];
        let o = OverlayFrame::parse(frame, 6081).unwrap();
        assert_eq!(o.inner_offset, 94);
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        assert_eq!(ip.traffic_class(), 0x2e);
        let Underlay::V6 { src, dst } = underlay else {
            unreachable!()
        };
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let ph = checksum::pseudo_header_v6(&src.octets(), &dst.octets(), 17, udp.len().into());
        assert_ne!(udp.checksum(), 0);
        assert!(udp.verify_checksum(ph));
    }

    #[test]
    fn template_is_reusable_across_packets_of_different_sizes() {
        let t = EncapTemplate::new(&repr(V4));
        for len in [20usize, 21, 100, 150] {
            let mut f = [0u8; 256];
            let inner = Ipv4Repr {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                protocol: 6,
                ttl: 1,
                tos: 0,
                ident: 0,
                dont_frag: true,
                payload_len: (len - 20) as u16,
            };
            inner.emit(&mut f[96..]).unwrap();
            let start = t.write(&mut f, 96, len, 1).unwrap();
            let ip = Ipv4Packet::new_checked(&f[start + 14..96 + len]).unwrap();
            assert!(ip.verify_checksum(), "inner length {len}");
            assert_eq!(usize::from(ip.total_len()), 60 + len);
        }
    }

    #[test]
    fn missing_headroom_or_non_ip_inner_is_refused() {
        let t = EncapTemplate::new(&repr(V4));
        let (mut f, inner_len) = frame_with_inner(40);
        assert_eq!(t.write(&mut f, 40, inner_len, 1), Err(Error::NoRoom));
        assert_eq!(t.write(&mut f, 200, 100, 1), Err(Error::NoRoom));
        let mut f = [0u8; 256];
        f[100] = 0x11;
        assert_eq!(t.write(&mut f, 100, 40, 1), Err(Error::Protocol));
    }

    #[test]
    fn a_sealed_payload_is_stamped_and_checksummed_once_final() {
        let (mut f, inner_len) = frame_with_inner(128);
        let underlay = v6();
        let t = EncapTemplate::new(&repr(underlay));
        let seal = Seal {
            key_id: 9,
            counter: 77,
        };
        let payload_len = inner_len + 16;
        let start = t.write_headers(&mut f, 128, payload_len, 7, seal).unwrap();
        // The payload changes after the headers (as sealing does).
        for b in &mut f[128..128 + payload_len] {
            *b ^= 0x5a;
        }
        let end = 128 + payload_len;
        t.finish(&mut f, start, end);
        let frame = &f[start..end];
        let o = OverlayFrame::parse(frame, 6081).unwrap();
        assert_eq!(o.option.seal, seal);
        assert_eq!(o.inner_len, payload_len);
        assert_eq!(o.protocol_type, 0x0800, "read before the payload changed");
        let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
        let Underlay::V6 { src, dst } = underlay else {
            unreachable!()
        };
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        let ph = checksum::pseudo_header_v6(&src.octets(), &dst.octets(), 17, udp.len().into());
        assert!(udp.verify_checksum(ph));
    }

    #[test]
    fn relayed_flag_round_trips() {
        let mut r = repr(V4);
        r.option.flags = flags::RELAYED;
        let (mut f, inner_len) = frame_with_inner(128);
        let start = EncapTemplate::new(&r)
            .write(&mut f, 128, inner_len, 1)
            .unwrap();
        let o = OverlayFrame::parse(&f[start..128 + inner_len], 6081).unwrap();
        assert_eq!(o.option.flags, flags::RELAYED);
    }
}
