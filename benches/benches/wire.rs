//! What the wire code costs per packet: the overlay parse, the encapsulation
//! write, and the checksums, on the frame sizes that matter (a 64-byte
//! minimum and a 1500-byte full frame). `cargo bench -p detour-benches`.

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use detour_common::wire::checksum;
use detour_common::wire::encap::{EncapTemplate, MAX_ENCAP_LEN, Underlay};
use detour_common::wire::{Ipv4Packet, Ipv4Repr, OverlayFrame};
use detour_testkit::frames;

fn underlays() -> [(&'static str, Underlay); 2] {
    [
        (
            "v4",
            Underlay::V4 {
                src: Ipv4Addr::new(192, 0, 2, 1),
                dst: Ipv4Addr::new(192, 0, 2, 2),
            },
        ),
        (
            "v6",
            Underlay::V6 {
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::2".parse().unwrap(),
            },
        ),
    ]
}

/// A frame buffer with encapsulation headroom and an inner IPv4 packet.
fn frame(inner_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; MAX_ENCAP_LEN + inner_len];
    Ipv4Repr {
        src: Ipv4Addr::new(10, 1, 0, 1),
        dst: Ipv4Addr::new(10, 2, 0, 1),
        protocol: 17,
        ttl: 64,
        tos: 0,
        ident: 0,
        dont_frag: true,
        payload_len: (inner_len - 20) as u16,
    }
    .emit(&mut f[MAX_ENCAP_LEN..])
    .unwrap();
    f
}

fn encap_and_parse(c: &mut Criterion) {
    // The floor for an encapsulation: copying its 62 header bytes.
    let header = [0x5au8; 62];
    let mut f = frame(46);
    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("copy_62_bytes", |b| {
        b.iter(|| f[20..82].copy_from_slice(black_box(&header)))
    });
    g.finish();

    for inner_len in [46usize, 1452] {
        for (name, underlay) in underlays() {
            let template = EncapTemplate::new(&frames::encap_repr(underlay));
            let mut f = frame(inner_len);
            let mut g = c.benchmark_group(format!("encap_{name}"));
            g.throughput(Throughput::Elements(1));
            g.bench_function(format!("inner_{inner_len}"), |b| {
                b.iter(|| {
                    template
                        .write(black_box(&mut f), MAX_ENCAP_LEN, inner_len, 1234)
                        .unwrap()
                })
            });
            g.finish();

            let start = template.write(&mut f, MAX_ENCAP_LEN, inner_len, 1).unwrap();
            let wire = f[start..].to_vec();
            let mut g = c.benchmark_group(format!("parse_overlay_{name}"));
            g.throughput(Throughput::Elements(1));
            g.bench_function(format!("inner_{inner_len}"), |b| {
                b.iter(|| OverlayFrame::parse(black_box(&wire), 6081).unwrap())
            });
            g.finish();
        }
    }
}

fn checksums(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 1500] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("full_{len}"), |b| {
            b.iter(|| checksum::checksum(black_box(&data)))
        });
    }
    g.throughput(Throughput::Elements(1));
    g.bench_function("incremental_ttl", |b| {
        b.iter(|| checksum::update(black_box(0xb861), black_box(0x4011), black_box(0x3f11)))
    });
    let mut packet = frame(46)[MAX_ENCAP_LEN..].to_vec();
    g.bench_function("ipv4_set_dst_addr", |b| {
        b.iter(|| {
            let mut p = Ipv4Packet::new_checked(black_box(&mut packet[..])).unwrap();
            p.set_dst_addr(Ipv4Addr::new(10, 9, 9, 9));
        })
    });
    g.finish();
}

criterion_group!(benches, encap_and_parse, checksums);
criterion_main!(benches);
