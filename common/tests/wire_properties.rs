//! Properties of the wire format over random inputs: representations
//! round-trip, incremental checksums equal recomputation, parsers never panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use detour_common::wire::checksum;
use detour_common::wire::encap::{EncapRepr, EncapTemplate, MAX_ENCAP_LEN, Underlay};
use detour_common::wire::{
    DetourOption, DetourOptionRepr, EtherType, EthernetFrame, EthernetRepr, GeneveHeader,
    GeneveRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, MacAddr, NodeId, OverlayFrame, Seal,
    UdpPacket, UdpRepr, VlanTag,
};
use detour_testkit::wire::exercise_views;
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(MacAddr)
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn ipv6() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

prop_compose! {
    fn ethernet_repr()(dst in mac(), src in mac(), ethertype in any::<u16>(),
                       vlan in proptest::option::of((0u8..8, any::<bool>(), 0u16..4096))) -> EthernetRepr {
        // A frame whose type is 0x8100 is tagged by definition; an untagged
        // repr cannot carry that type.
        let ethertype = if ethertype == EtherType::VLAN.0 { 0x0800 } else { ethertype };
        EthernetRepr {
            dst, src,
            vlan: vlan.map(|(pcp, dei, vid)| VlanTag { pcp, dei, vid }),
            ethertype: EtherType(ethertype),
        }
    }
}

prop_compose! {
    fn ipv4_repr()(src in ipv4(), dst in ipv4(), protocol in any::<u8>(), ttl in any::<u8>(),
                   tos in any::<u8>(), ident in any::<u16>(), dont_frag in any::<bool>(),
                   payload_len in 0u16..1500) -> Ipv4Repr {
        Ipv4Repr { src, dst, protocol, ttl, tos, ident, dont_frag, payload_len }
    }
}

prop_compose! {
    fn ipv6_repr()(src in ipv6(), dst in ipv6(), next_header in any::<u8>(), hop_limit in any::<u8>(),
                   traffic_class in any::<u8>(), flow_label in 0u32..(1 << 20),
                   payload_len in 0u16..1500) -> Ipv6Repr {
        Ipv6Repr { src, dst, next_header, hop_limit, traffic_class, flow_label, payload_len }
    }
}

prop_compose! {
    fn option_repr()(src in any::<u16>(), dst in any::<u16>(), hop_limit in any::<u8>(),
                     flags in any::<u8>(), key_id in any::<u32>(),
                     counter in any::<u64>()) -> DetourOptionRepr {
        DetourOptionRepr { src: NodeId(src), dst: NodeId(dst), hop_limit, flags, seal: Seal { key_id, counter } }
    }
}

fn underlay() -> impl Strategy<Value = Underlay> {
    prop_oneof![
        (ipv4(), ipv4()).prop_map(|(src, dst)| Underlay::V4 { src, dst }),
        (ipv6(), ipv6()).prop_map(|(src, dst)| Underlay::V6 { src, dst }),
    ]
}

prop_compose! {
    fn encap_repr()(src_mac in mac(), dst_mac in mac(), underlay in underlay(), ttl in any::<u8>(),
                    dst_port in any::<u16>(), vni in 0u32..(1 << 24), option in option_repr()) -> EncapRepr {
        EncapRepr { src_mac, dst_mac, underlay, ttl, dst_port, vni, option }
    }
}

proptest! {
    #[test]
    fn ethernet_parse_of_emit_is_identity(repr in ethernet_repr()) {
        let mut buf = [0u8; 18];
        let n = repr.emit(&mut buf).unwrap();
        let frame = EthernetFrame::new_checked(&buf[..n]).unwrap();
        prop_assert_eq!(EthernetRepr::parse(&frame), repr);
        prop_assert_eq!(frame.header_len(), n);
    }

    #[test]
    fn ipv4_parse_of_emit_is_identity(repr in ipv4_repr()) {
        let mut buf = vec![0u8; 20 + usize::from(repr.payload_len)];
        repr.emit(&mut buf).unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(Ipv4Repr::parse(&p), repr);
    }

    #[test]
    fn ipv6_parse_of_emit_is_identity(repr in ipv6_repr()) {
        let mut buf = vec![0u8; 40 + usize::from(repr.payload_len)];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()), repr);
    }

    #[test]
    fn udp_parse_of_emit_is_identity(src_port in any::<u16>(), dst_port in any::<u16>(),
                                     payload_len in 0u16..1500) {
        let repr = UdpRepr { src_port, dst_port, payload_len };
        let mut buf = vec![0u8; 8 + usize::from(payload_len)];
        repr.emit(&mut buf).unwrap();
        prop_assert_eq!(UdpRepr::parse(&UdpPacket::new_checked(&buf[..]).unwrap()), repr);
    }

    #[test]
    fn geneve_and_option_parse_of_emit_is_identity(
        oam in any::<bool>(), critical in any::<bool>(), protocol_type in any::<u16>(),
        vni in 0u32..(1 << 24), option in option_repr(),
    ) {
        let repr = GeneveRepr { oam, critical, protocol_type, vni, options_len: 24 };
        let mut buf = [0u8; 32];
        repr.emit(&mut buf).unwrap();
        option.emit(&mut buf[8..]).unwrap();
        let g = GeneveHeader::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(GeneveRepr::parse(&g), repr);
        let o = DetourOption::new_checked(g.options()).unwrap();
        prop_assert_eq!(DetourOptionRepr::parse(&o), option);
    }

    #[test]
    fn encapsulation_parses_back_to_what_was_written(
        repr in encap_repr(), inner in ipv4_repr(), headroom in 94usize..140, src_port in any::<u16>(),
    ) {
        let inner_len = 20 + usize::from(inner.payload_len);
        let mut frame = vec![0u8; headroom + inner_len];
        inner.emit(&mut frame[headroom..]).unwrap();
        let template = EncapTemplate::new(&repr);
        let start = template.write(&mut frame, headroom, inner_len, src_port).unwrap();
        let o = OverlayFrame::parse(&frame[start..], repr.dst_port).unwrap();
        prop_assert_eq!(o.option, repr.option);
        prop_assert_eq!((o.vni, o.src_port, o.protocol_type), (repr.vni, src_port, 0x0800));
        prop_assert_eq!((o.inner_offset, o.inner_len), (template.header_len(), inner_len));
        let (src, dst) = match repr.underlay {
            Underlay::V4 { src, dst } => (src.into(), dst.into()),
            Underlay::V6 { src, dst } => (src.into(), dst.into()),
        };
        prop_assert_eq!((o.outer_src, o.outer_dst), (src, dst));
        prop_assert_eq!(&frame[start + o.inner_offset..], &frame[headroom..]);
        match repr.underlay {
            Underlay::V4 { .. } => {
                prop_assert!(Ipv4Packet::new_checked(&frame[start + 14..]).unwrap().verify_checksum());
            }
            Underlay::V6 { src, dst } => {
                let udp = UdpPacket::new_checked(&frame[start + 54..]).unwrap();
                let ph = checksum::pseudo_header_v6(&src.octets(), &dst.octets(), 17, udp.len().into());
                prop_assert!(udp.verify_checksum(ph));
            }
        }
    }

    /// RFC 1624 against RFC 1071: edit any word of a real header but its
    /// checksum, and the updated checksum equals the recomputed one.
    #[test]
    fn incremental_ipv4_checksum_equals_recomputation(
        repr in ipv4_repr(), edits in prop::collection::vec((0usize..10, any::<u16>()), 1..8),
    ) {
        let mut header = [0u8; 20];
        repr.emit(&mut header).unwrap();
        for (word, value) in edits {
            if word == 5 {
                continue; // the checksum itself
            }
            let at = 2 * word;
            let old = u16::from_be_bytes([header[at], header[at + 1]]);
            let hc = u16::from_be_bytes([header[10], header[11]]);
            header[at..at + 2].copy_from_slice(&value.to_be_bytes());
            header[10..12].copy_from_slice(&checksum::update(hc, old, value).to_be_bytes());
            let mut zeroed = header;
            zeroed[10..12].fill(0);
            prop_assert_eq!(u16::from_be_bytes([header[10], header[11]]), checksum::checksum(&zeroed));
        }
    }

    /// The UDP setters and the pseudo-header update keep the checksum equal to
    /// a full recomputation, for IPv4 and IPv6 pseudo-headers alike.
    #[test]
    fn incremental_udp_checksum_follows_ports_and_addresses(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        ports in (any::<u16>(), any::<u16>(), any::<u16>(), any::<u16>()),
        addrs in prop_oneof![
            (ipv4(), ipv4(), ipv4()).prop_map(|(a, b, c)| (a.octets().to_vec(), b.octets().to_vec(), c.octets().to_vec())),
            (ipv6(), ipv6(), ipv6()).prop_map(|(a, b, c)| (a.octets().to_vec(), b.octets().to_vec(), c.octets().to_vec())),
        ],
    ) {
        let (src, dst, new_dst) = addrs;
        let len = 8 + payload.len() as u16;
        let pseudo = |s: &[u8], d: &[u8]| match (s.try_into(), d.try_into()) {
            (Ok(s), Ok(d)) => checksum::pseudo_header_v4(s, d, 17, len),
            _ => checksum::pseudo_header_v6(s.try_into().unwrap(), d.try_into().unwrap(), 17, len.into()),
        };
        let mut buf = vec![0u8; usize::from(len)];
        UdpRepr { src_port: ports.0, dst_port: ports.1, payload_len: payload.len() as u16 }
            .emit(&mut buf).unwrap();
        buf[8..].copy_from_slice(&payload);
        let mut udp = UdpPacket::new_checked(&mut buf[..]).unwrap();
        udp.fill_checksum(pseudo(&src, &dst));
        udp.set_src_port(ports.2);
        udp.set_dst_port(ports.3);
        udp.update_checksum_bytes(&dst, &new_dst);
        let incremental = udp.checksum();
        udp.fill_checksum(pseudo(&src, &new_dst));
        let full = udp.checksum();
        // 0x0000 and 0xffff are the same ones' complement value; on the wire
        // RFC 768 turns a computed zero into 0xffff, which both paths do.
        prop_assert_eq!(incremental, full);
        prop_assert!(udp.verify_checksum(pseudo(&src, &new_dst)));
    }

    #[test]
    fn parsers_never_panic_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_views(&bytes);
    }

    /// Random bytes rarely get past Ethernet; mutating real overlay frames
    /// reaches the deeper parsers. The frame must parse as overlay before
    /// the edit, so the property is not vacuous.
    #[test]
    fn parsers_never_panic_on_damaged_overlay_frames(
        repr in encap_repr(), inner in ipv4_repr(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let repr = EncapRepr { dst_port: 6081, ..repr };
        let inner = Ipv4Repr { payload_len: inner.payload_len % 64, ..inner };
        let inner_len = 20 + usize::from(inner.payload_len);
        let mut frame = vec![0u8; MAX_ENCAP_LEN + inner_len];
        inner.emit(&mut frame[MAX_ENCAP_LEN..]).unwrap();
        let start = EncapTemplate::new(&repr).write(&mut frame, MAX_ENCAP_LEN, inner_len, 1).unwrap();
        let mut frame = frame.split_off(start);
        prop_assert!(exercise_views(&frame).overlay);
        for (at, value) in edits {
            let at = at.index(frame.len());
            frame[at] = value;
        }
        exercise_views(&frame);
        exercise_views(&frame[..cut.index(frame.len() + 1)]);
    }
}
