//! Crafted frames for the classifier's tests: a valid overlay frame built by
//! the real encoder, plain UDP and other traffic, and the edits that break
//! them one field at a time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use detour_common::wire::{
    DetourOptionRepr, EncapRepr, EncapTemplate, EtherType, EthernetRepr, Ipv4Packet, Ipv4Repr,
    Ipv6Repr, MacAddr, NodeId, OverlayFrame, Seal, UdpRepr, Underlay, ip_protocol,
};

/// The overlay port the tables use (the GENEVE default).
pub const OVERLAY_PORT: u16 = 6081;
/// detour's control port (the control process's default).
pub const CONTROL_PORT: u16 = 6082;
/// A UDP port that is neither detour's overlay nor its control port.
pub const OTHER_PORT: u16 = 7000;

pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const STRANGER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
pub const STRANGER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);

pub const SRC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
pub const DST_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 2]);

/// The UDP source port (flow entropy) of the frames [`encapsulate`] builds.
pub const FLOW_PORT: u16 = 50000;

/// An overlay frame from `src` to `dst` (both IPv4 or both IPv6) carrying an
/// inner IPv4 packet of `inner_len` bytes (at least 20), hop limit 4.
pub fn overlay(src: IpAddr, dst: IpAddr, inner_len: usize) -> Vec<u8> {
    let underlay = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Underlay::V4 { src, dst },
        (IpAddr::V6(src), IpAddr::V6(dst)) => Underlay::V6 { src, dst },
        _ => panic!("underlay addresses of two families: {src} -> {dst}"),
    };
    let inner = ipv4_packet(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        inner_len,
    );
    encapsulate(&encap_repr(underlay), &inner)
}

/// The encapsulation the tables use: [`SRC_MAC`] to [`DST_MAC`], outer TTL
/// 64, the overlay port, VNI 7, from node 1 to node 2 with hop limit 4.
/// Tests change the fields they look at.
pub fn encap_repr(underlay: Underlay) -> EncapRepr {
    EncapRepr {
        src_mac: SRC_MAC,
        dst_mac: DST_MAC,
        underlay,
        ttl: 64,
        dst_port: OVERLAY_PORT,
        vni: 7,
        option: DetourOptionRepr {
            src: NodeId(1),
            dst: NodeId(2),
            hop_limit: 4,
            flags: 0,
            seal: Seal::NONE,
        },
    }
}

/// The IP packet `inner` behind the outer headers `repr` describes, written
/// by the real encoder (UDP source port [`FLOW_PORT`]).
pub fn encapsulate(repr: &EncapRepr, inner: &[u8]) -> Vec<u8> {
    encapsulate_from_port(repr, inner, FLOW_PORT)
}

/// [`encapsulate`] with UDP source port `src_port`.
pub fn encapsulate_from_port(repr: &EncapRepr, inner: &[u8], src_port: u16) -> Vec<u8> {
    let template = EncapTemplate::new(repr);
    let header_len = template.header_len();
    let mut frame = vec![0; header_len];
    frame.extend_from_slice(inner);
    let start = template
        .write(&mut frame, header_len, inner.len(), src_port)
        .expect("room for the outer headers, an IP packet inside");
    assert_eq!(start, 0);
    frame
}

/// An IPv4 packet of `len` bytes (at least 20): UDP, TTL 64, DF, the payload
/// counting 0, 1, 2, ...; the header checksum filled in.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    Ipv4Repr {
        src,
        dst,
        protocol: ip_protocol::UDP,
        ttl: 64,
        tos: 0,
        ident: 1,
        dont_frag: true,
        payload_len: u16::try_from(len - 20).expect("an IP packet under 64 KiB"),
    }
    .emit(&mut p)
    .expect("room for the header");
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// The IPv4-underlay overlay frame from the peer the tables trust.
pub fn overlay_v4() -> Vec<u8> {
    overlay(PEER_V4.into(), LOCAL_V4.into(), 64)
}

/// The IPv6-underlay overlay frame from the peer the tables trust.
pub fn overlay_v6() -> Vec<u8> {
    overlay(PEER_V6.into(), LOCAL_V6.into(), 64)
}

/// Where the headers of a (valid) overlay frame lie.
pub fn layout(frame: &[u8]) -> OverlayFrame {
    OverlayFrame::parse(frame, OVERLAY_PORT).expect("a valid overlay frame")
}

/// Offset of the detour option (after the 8-byte GENEVE base header).
pub fn option_offset(frame: &[u8]) -> usize {
    layout(frame).geneve_offset + 8
}

/// A UDP datagram in an Ethernet frame, IPv4 or IPv6 by the addresses.
pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, payload_len: usize) -> Vec<u8> {
    let payload_len = u16::try_from(payload_len).expect("payload under 64 KiB");
    let udp = UdpRepr {
        src_port,
        dst_port,
        payload_len,
    };
    let ip_payload = 8 + payload_len;
    let (ethertype, mut frame, ip_len) = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => (
            EtherType::IPV4,
            ipv4_packet(src, dst, 20 + usize::from(ip_payload)),
            20,
        ),
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut ip = vec![0; 40 + usize::from(ip_payload)];
            Ipv6Repr {
                src,
                dst,
                next_header: ip_protocol::UDP,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
                payload_len: ip_payload,
            }
            .emit(&mut ip)
            .unwrap();
            (EtherType::IPV6, ip, 40)
        }
        _ => panic!("addresses of two families: {src} -> {dst}"),
    };
    udp.emit(&mut frame[ip_len..]).unwrap();
    ethernet(ethertype, &frame)
}

/// `payload` behind an untagged Ethernet header, [`SRC_MAC`] to [`DST_MAC`].
pub fn ethernet(ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    ethernet_between(SRC_MAC, DST_MAC, ethertype, payload)
}

/// `payload` behind an untagged Ethernet header from `src` to `dst`.
pub fn ethernet_between(
    src: MacAddr,
    dst: MacAddr,
    ethertype: EtherType,
    payload: &[u8],
) -> Vec<u8> {
    let eth = EthernetRepr {
        dst,
        src,
        vlan: None,
        ethertype,
    };
    let mut frame = vec![0; 14 + payload.len()];
    eth.emit(&mut frame).unwrap();
    frame[14..].copy_from_slice(payload);
    frame
}

/// An ARP request (who has 192.0.2.2?).
pub fn arp() -> Vec<u8> {
    let mut arp = [0u8; 28];
    arp[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp[8..14].copy_from_slice(&SRC_MAC.0);
    arp[14..18].copy_from_slice(&PEER_V4.octets());
    arp[24..28].copy_from_slice(&LOCAL_V4.octets());
    let mut frame = ethernet(EtherType::ARP, &arp);
    frame[..6].copy_from_slice(&MacAddr::BROADCAST.0);
    frame
}

/// `frame` with an 802.1Q tag (VLAN `vid`) after the MAC addresses.
pub fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&EtherType::VLAN.0.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// `frame` (untagged, IPv4) with `words` 4-byte words of NOP options added
/// to its IP header; lengths and checksum updated.
pub fn with_ipv4_options(frame: &[u8], words: u8) -> Vec<u8> {
    let extra = usize::from(words) * 4;
    let mut out = frame[..34].to_vec();
    out.extend(std::iter::repeat_n(1u8, extra));
    out.extend_from_slice(&frame[34..]);
    out[14] += words;
    add_u16(&mut out, 16, extra as u16);
    let mut ip = Ipv4Packet::new_checked(&mut out[14..]).expect("a valid IPv4 header");
    ip.fill_checksum();
    out
}

/// `frame` (untagged, IPv6) with an 8-byte hop-by-hop options header (or
/// another extension header, by `next_header`) before its payload.
pub fn with_ipv6_extension(frame: &[u8], next_header: u8) -> Vec<u8> {
    let payload_next = frame[20];
    let mut out = frame[..54].to_vec();
    // Next header, length 0 (8 bytes), PadN of 4 bytes filling the rest.
    out.extend_from_slice(&[payload_next, 0, 1, 4, 0, 0, 0, 0]);
    out.extend_from_slice(&frame[54..]);
    out[20] = next_header;
    add_u16(&mut out, 18, 8);
    out
}

/// `frame` with byte `offset` set to `value`.
pub fn set_u8(frame: &[u8], offset: usize, value: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[offset] = value;
    out
}

/// `frame` with the big-endian u16 at `offset` set to `value`.
pub fn set_u16(frame: &[u8], offset: usize, value: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
    out
}

/// The big-endian u16 at `offset`.
pub fn get_u16(frame: &[u8], offset: usize) -> u16 {
    u16::from_be_bytes([frame[offset], frame[offset + 1]])
}

fn add_u16(frame: &mut [u8], offset: usize, n: u16) {
    let v = get_u16(frame, offset) + n;
    frame[offset..offset + 2].copy_from_slice(&v.to_be_bytes());
}

/// Valid overlay frames of every shape, from peers and from strangers: the
/// starting points of the random frames the differential tests derive.
pub fn overlay_seeds() -> Vec<Vec<u8>> {
    let v4 = overlay_v4();
    let v6 = overlay_v6();
    vec![
        with_vlan(&v4, 1),
        with_vlan(&v6, 2),
        with_ipv4_options(&v4, 3),
        overlay(STRANGER_V4.into(), LOCAL_V4.into(), 40),
        overlay(STRANGER_V6.into(), LOCAL_V6.into(), 40),
        v4,
        v6,
    ]
}

/// The headers span at most this many bytes (a VLAN tag and a 60-byte IPv4
/// header): edits aimed here reach every decision.
pub const HEADER_SPAN: usize = 18 + 60 + 8 + 20;

/// `seed` with each `(position, byte)` edit applied (positions taken modulo
/// the header span, or the frame if shorter), then cut to `cut` bytes if
/// that is shorter.
pub fn mutated(seed: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut out = seed.to_vec();
    let span = HEADER_SPAN.min(out.len()).max(1);
    for &(pos, byte) in edits {
        if let Some(b) = out.get_mut(pos % span) {
            *b = byte;
        }
    }
    out.truncate(cut);
    out
}

/// A small deterministic generator (xorshift64*), for the tests that derive
/// many frames without a property-testing framework.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_parse_as_what_they_claim() {
        for f in [
            overlay_v4(),
            overlay_v6(),
            with_ipv4_options(&overlay_v4(), 2),
        ] {
            let o = layout(&f);
            assert_eq!(o.inner_len, 64);
            assert_eq!(o.option.hop_limit, 4);
        }
        assert_eq!(layout(&with_ipv4_options(&overlay_v4(), 2)).udp_offset, 42);
        let tagged = with_vlan(&overlay_v4(), 5);
        assert_eq!(layout(&tagged).ip_offset, 18);
        let ext = with_ipv6_extension(&overlay_v6(), 0);
        assert_eq!(ext.len(), overlay_v6().len() + 8);
        assert!(OverlayFrame::parse(&ext, OVERLAY_PORT).is_err());
        let u = udp(PEER_V6.into(), LOCAL_V6.into(), 1, OTHER_PORT, 10);
        assert_eq!((u.len(), get_u16(&u, 56)), (14 + 40 + 8 + 10, OTHER_PORT));
    }
}
