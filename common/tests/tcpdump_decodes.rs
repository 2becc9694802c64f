//! An independent decoder agrees with the wire format: frames built by
//! `EncapTemplate` are written to a pcap file and read back by tcpdump, which
//! must see GENEVE with detour's critical option, the inner packet, and no
//! bad checksum. tcpdump is installed by scripts/setup.

use std::net::Ipv4Addr;
use std::process::Command;

use detour_common::wire::encap::{EncapRepr, EncapTemplate, MAX_ENCAP_LEN, Underlay};
use detour_common::wire::{DetourOptionRepr, Ipv4Packet, Ipv4Repr, MacAddr, NodeId, UdpPacket};
use detour_common::wire::{UdpRepr, checksum};

/// An inner IPv4/UDP packet with correct checksums, after encap headroom.
fn frame_with_inner() -> (Vec<u8>, usize) {
    let payload = b"detour";
    let inner_len = 20 + 8 + payload.len();
    let mut f = vec![0u8; MAX_ENCAP_LEN + inner_len];
    let (src, dst) = (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 3, 0, 9));
    let inner = &mut f[MAX_ENCAP_LEN..];
    Ipv4Repr {
        src,
        dst,
        protocol: 17,
        ttl: 63,
        tos: 0,
        ident: 7,
        dont_frag: true,
        payload_len: (8 + payload.len()) as u16,
    }
    .emit(inner)
    .unwrap();
    UdpRepr {
        src_port: 4242,
        dst_port: 9000,
        payload_len: payload.len() as u16,
    }
    .emit(&mut inner[20..])
    .unwrap();
    inner[28..].copy_from_slice(payload);
    let mut udp = UdpPacket::new_checked(&mut inner[20..]).unwrap();
    udp.fill_checksum(checksum::pseudo_header_v4(
        &src.octets(),
        &dst.octets(),
        17,
        (8 + payload.len()) as u16,
    ));
    assert!(
        Ipv4Packet::new_checked(&inner[..])
            .unwrap()
            .verify_checksum()
    );
    (f, inner_len)
}

fn encapsulated(underlay: Underlay) -> Vec<u8> {
    let (mut f, inner_len) = frame_with_inner();
    let template = EncapTemplate::new(&EncapRepr {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        underlay,
        ttl: 64,
        dst_port: 6081,
        vni: 0x2a,
        option: DetourOptionRepr {
            src: NodeId(1),
            dst: NodeId(2),
            hop_limit: 4,
            flags: 0,
        },
    });
    let start = template
        .write(&mut f, MAX_ENCAP_LEN, inner_len, 50000)
        .unwrap();
    f.split_off(start)
}

/// A classic pcap file (microsecond timestamps, Ethernet link type).
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // time zone, accuracy
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for f in frames {
        out.extend_from_slice(&[0; 8]); // timestamp
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

#[test]
fn tcpdump_decodes_encapsulations_as_geneve_with_the_detour_option() {
    let frames = [
        encapsulated(Underlay::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
        }),
        encapsulated(Underlay::V6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
        }),
    ];
    let path = std::env::temp_dir().join(format!("detour-wire-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(&frames)).unwrap();
    let out = Command::new("tcpdump")
        .args(["-nn", "-vv", "-r"])
        .arg(&path)
        .output();
    std::fs::remove_file(&path).unwrap();
    let out = out.expect("tcpdump is needed for this test; scripts/setup installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");

    let option = "Geneve, Flags [C], vni 0x2a, options [class Experimental (0xfffd) \
                  type 0x81(C) len 12 data 00010002 04000000]";
    assert_eq!(text.matches(option).count(), 2, "{text}");
    assert!(text.contains("192.0.2.1.50000 > 192.0.2.2.6081"), "{text}");
    assert!(
        text.contains("2001:db8::1.50000 > 2001:db8::2.6081: [udp sum ok] Geneve"),
        "{text}"
    );
    assert_eq!(
        text.matches("10.1.0.5.4242 > 10.3.0.9.9000: [udp sum ok]")
            .count(),
        2,
        "{text}"
    );
    // tcpdump checks IPv4 header checksums too, and says "bad cksum".
    assert!(!text.contains("bad"), "{text}");
}
