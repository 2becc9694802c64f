//! Drives every wire view and the XDP classifier's decisions over arbitrary
//! bytes, for the property tests and the fuzz target: whatever the bytes,
//! nothing here may panic, and the classifier never contradicts the parser.

use detour_common::classify;
use detour_common::wire::{
    self, DetourOption, EtherType, EthernetFrame, GeneveHeader, Ipv4Packet, Ipv6Packet,
    OverlayFrame, UdpPacket,
};

/// How deep into a frame the parsers got.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub ethernet: bool,
    pub ip: bool,
    pub udp: bool,
    pub geneve: bool,
    pub overlay: bool,
}

/// Parses `bytes` as a frame, layer by layer, calls every accessor and every
/// setter of each view that accepted it, and parses it as each header kind on
/// its own too. Returns how deep the frame parse went.
pub fn exercise_views(bytes: &[u8]) -> Depth {
    let mut depth = Depth::default();
    if let Ok(eth) = EthernetFrame::new_checked(bytes) {
        depth.ethernet = true;
        let _ = (eth.dst_addr(), eth.src_addr(), eth.vlan(), eth.header_len());
        let l3 = eth.payload();
        let l4 = match eth.ethertype() {
            EtherType::IPV4 => Ipv4Packet::new_checked(l3).ok().map(|p| {
                touch_ipv4(&p);
                p.payload().to_vec()
            }),
            EtherType::IPV6 => Ipv6Packet::new_checked(l3).ok().map(|p| {
                touch_ipv6(&p);
                p.payload().to_vec()
            }),
            _ => None,
        };
        if let Some(l4) = l4 {
            depth.ip = true;
            if let Ok(udp) = UdpPacket::new_checked(&l4[..]) {
                depth.udp = true;
                touch_udp(&udp);
                if touch_geneve(udp.payload()) {
                    depth.geneve = true;
                }
            }
        }
    }
    depth.overlay = OverlayFrame::parse(bytes, wire::geneve::DEFAULT_PORT).is_ok();

    // The XDP classifier's decisions: never send unparsable data to a
    // worker, and read the LAN destination exactly when the header is whole.
    let port = wire::geneve::DEFAULT_PORT;
    if classify::classify_wan(bytes, port, 0, |_| true) == classify::WanVerdict::Overlay {
        assert!(
            depth.overlay,
            "the classifier accepted what the parser refuses"
        );
    }
    if classify::lan_destination(bytes).is_some() {
        assert!(depth.ip, "a LAN destination read from a broken IP header");
    }

    // Each parser on its own, and each setter on a copy.
    let mut copy = bytes.to_vec();
    if let Ok(mut p) = Ipv4Packet::new_checked(&mut copy[..]) {
        touch_ipv4(&p);
        p.set_ttl(p.ttl().wrapping_sub(1));
        p.set_src_addr(p.dst_addr());
        p.fill_checksum();
        let _ = p.payload_mut();
    }
    if let Ok(mut p) = Ipv6Packet::new_checked(&mut copy[..]) {
        touch_ipv6(&p);
        p.set_hop_limit(0);
        let _ = p.payload_mut();
    }
    if let Ok(mut u) = UdpPacket::new_checked(&mut copy[..]) {
        touch_udp(&u);
        u.set_src_port(u.dst_port());
        u.fill_checksum(0);
        u.update_checksum_bytes(&[1, 2, 3], &[4, 5]);
    }
    touch_geneve(bytes);
    if let Ok(mut o) = DetourOption::new_checked(&mut copy[..]) {
        o.set_hop_limit(o.hop_limit().wrapping_sub(1));
        o.set_flags(o.flags());
    }
    depth
}

fn touch_ipv4<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) {
    let _ = (p.header_len(), p.options(), p.tos(), p.dscp(), p.ecn());
    let _ = (p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset());
    let _ = (p.is_fragment(), p.ttl(), p.protocol(), p.checksum());
    let _ = (p.src_addr(), p.dst_addr(), p.verify_checksum(), p.payload());
}

fn touch_ipv6<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) {
    let _ = (p.traffic_class(), p.flow_label(), p.payload_len());
    let _ = (p.next_header(), p.hop_limit(), p.src_addr(), p.dst_addr());
    let _ = (p.has_extension_headers(), p.payload());
}

fn touch_udp<T: AsRef<[u8]>>(u: &UdpPacket<T>) {
    let _ = (u.src_port(), u.dst_port(), u.len(), u.checksum());
    let _ = (u.payload(), u.verify_checksum(0));
}

fn touch_geneve(bytes: &[u8]) -> bool {
    let Ok(g) = GeneveHeader::new_checked(bytes) else {
        return false;
    };
    let _ = (g.options_len(), g.header_len(), g.oam(), g.critical());
    let _ = (g.protocol_type(), g.vni(), g.payload());
    for option in g.option_iter().flatten() {
        let _ = (option.class, option.kind, option.data, option.is_critical());
    }
    if let Ok(o) = DetourOption::new_checked(g.options()) {
        let _ = (o.src_node(), o.dst_node(), o.hop_limit(), o.flags());
    }
    true
}
