//! Independent decoders agree with the wire format: frames built by
//! `EncapTemplate` are written to a pcap file and read back by tcpdump, which
//! must see GENEVE with detour's critical option, the inner packet, and no
//! bad checksum; and by tshark, which must read a sealed frame's GENEVE
//! header and option. Both are installed by scripts/setup.

use std::net::Ipv4Addr;
use std::process::Command;

use detour_common::wire::encap::{EncapRepr, Underlay};
use detour_common::wire::{Ipv4Packet, Ipv4Repr, Seal, UdpPacket, UdpRepr, checksum};
use detour_testkit::frames::{self, FLOW_PORT};

/// An inner IPv4/UDP packet with correct checksums.
fn inner_packet() -> Vec<u8> {
    let payload = b"detour";
    let mut inner = vec![0u8; 20 + 8 + payload.len()];
    let (src, dst) = (Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 3, 0, 9));
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
    .emit(&mut inner)
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
    inner
}

fn encapsulated(underlay: Underlay) -> Vec<u8> {
    let repr = EncapRepr {
        vni: 0x2a,
        ..frames::encap_repr(underlay)
    };
    frames::encapsulate(&repr, &inner_packet())
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

/// Runs `program` with `args` on a pcap file of `frames`; its stdout.
fn decode(program: &str, args: &[&str], frames: &[Vec<u8>]) -> String {
    let path =
        std::env::temp_dir().join(format!("detour-wire-{program}-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap(frames)).unwrap();
    let out = Command::new(program).args(args).arg(&path).output();
    std::fs::remove_file(&path).unwrap();
    let out = out.unwrap_or_else(|e| {
        panic!("{program} is needed for this test (scripts/setup installs it): {e}")
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn tshark_decodes_a_sealed_frames_geneve_header_and_detour_option() {
    let mut repr = EncapRepr {
        vni: 0x2a,
        ..frames::encap_repr(Underlay::V4 {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
        })
    };
    repr.option.seal = Seal {
        key_id: 0x0102_0304,
        counter: 0x0506_0708_090a,
    };
    // The payload of a sealed frame is ciphertext and a tag; what tshark
    // makes of the header does not depend on it (the encoder wants an IP
    // packet to name the protocol type).
    let sealed = frames::encapsulate(&repr, &[inner_packet(), vec![0xa5; 16]].concat());
    let text = decode(
        "tshark",
        &["-V", "-d", "udp.port==6081,geneve", "-r"],
        &[sealed],
    );
    for field in [
        "Generic Network Virtualization Encapsulation, VNI: 0x00002a",
        "Version: 0",
        "Critical Options Present: True",
        "Protocol Type: IPv4 (0x0800)",
        "Options: (24 bytes)",
        "Class: Experimental (0xfffd)",
        "Type: 0x82 (Critical)",
        "Length: 24 bytes",
        // src 1, dst 2, hop limit 4, flags 0, reserved, key id, counter.
        "Unknown Option Data: 000100020400000001020304000005060708090a",
    ] {
        assert!(text.contains(field), "tshark shows no {field:?}:\n{text}");
    }
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
    let text = decode("tcpdump", &["-nn", "-vv", "-r"], &frames);

    // Not encrypted (key id 0, counter 0), so that the inner packet
    // decodes too.
    let option = "Geneve, Flags [C], vni 0x2a, options [class Experimental (0xfffd) \
                  type 0x82(C) len 24 data 00010002 04000000 00000000 00000000 00000000]";
    assert_eq!(text.matches(option).count(), 2, "{text}");
    assert!(
        text.contains(&format!("192.0.2.1.{FLOW_PORT} > 192.0.2.2.6081")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "2001:db8::1.{FLOW_PORT} > 2001:db8::2.6081: [udp sum ok] Geneve"
        )),
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
