//! What a worker spends per packet on each forwarding path: the route lookup
//! and the header rewrite, in place in a frame buffer
//! (`detour_dataplane::rewrite`). `cargo bench -p detour-benches --bench
//! forwarding`.
//!
//! The rewrite changes the frame (TTLs, hop limits), so each iteration also
//! restores a copy; `restore_only` measures that copy alone, the baseline to
//! subtract. The frames are a batch of 64 in their own buffers, as a worker
//! takes them off its RX ring, each restored right after its rewrite and
//! rewritten again 63 iterations later: rewriting a frame right after
//! copying it in would make the CPU read back bytes still in its store
//! buffer, a stall (store-forwarding failure) a worker never meets, since
//! the kernel wrote its frames long before.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use detour_common::api::{Cipher, KeySpec, SecretKey, SessionKeys};
use detour_common::wire::{EtherType, MacAddr, NodeId, Underlay};
use detour_dataplane::crypto::KeyTable;
use detour_dataplane::rewrite::{encap, from_wan};
use detour_dataplane::table::{
    LanNeighbours, Links, NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec, RouteTable,
};
use detour_testkit::frames;

const HEADROOM: usize = 256;
/// Frames per batch, and the room each has in the batch's buffer.
const BATCH: usize = 64;
const SLOT: usize = 2048;
const INNER: usize = 64;

/// We are node 1 of 4; 2 direct, 3 through 2; 64 site prefixes per node so
/// the tries are not trivially small.
fn table(v6: bool) -> RouteTable {
    table_of(1, v6, &[(2, 2), (3, 2), (4, 4)])
}

/// Node `local` of the same 4 nodes, with `routes` (destination, via).
fn table_of(local: u16, v6: bool, routes: &[(u16, u16)]) -> RouteTable {
    let addr = |n: u16| -> IpAddr {
        if v6 {
            format!("2001:db8::{n}").parse().unwrap()
        } else {
            format!("192.0.2.{n}").parse().unwrap()
        }
    };
    let mut prefixes = Vec::new();
    for node in 1..=4u16 {
        for i in 0..64u16 {
            prefixes.push(PrefixSpec {
                prefix: format!("10.{}.{}.0/24", node, i).parse().unwrap(),
                node: NodeId(node),
            });
        }
    }
    let snapshot = RouteSnapshot {
        version: 1,
        local: NodeId(local),
        nodes: (1..=4)
            .map(|n| NodeSpec {
                id: NodeId(n),
                underlay: addr(n),
            })
            .collect(),
        routes: routes
            .iter()
            .map(|&(dst, via)| RouteSpec {
                dst: NodeId(dst),
                via: NodeId(via),
            })
            .collect(),
        prefixes,
        control_port: None,
        sessions: None,
        dataplane_instance: None,
    };
    let mut links = Links::new(
        MacAddr([2, 0, 0, 0, 0, 1]),
        Some(MacAddr([2, 0, 0, 0, 1, 1])),
    );
    links.vni = 7;
    let mut lan = LanNeighbours::default();
    lan.insert("10.1.0.0/16".parse().unwrap(), MacAddr([2, 1, 1, 1, 1, 5]));
    RouteTable::compile(&snapshot, &links, lan, |a| match a {
        IpAddr::V4(a) => Some(MacAddr([2, 0, 0, 0, 0, a.octets()[3]])),
        IpAddr::V6(a) => Some(MacAddr([2, 0, 0, 0, 0, a.octets()[15]])),
    })
    .unwrap()
}

fn inner(src: &str, dst: &str) -> Vec<u8> {
    frames::ipv4_packet(src.parse().unwrap(), dst.parse().unwrap(), INNER)
}

fn lan_frame() -> Vec<u8> {
    frames::ethernet(EtherType::IPV4, &inner("10.1.0.5", "10.2.7.9"))
}

/// An overlay frame from node `src` (node 4's underlay address) for node
/// `dst`.
fn overlay_frame(v6: bool, src: u16, dst: u16, inner: &[u8]) -> Vec<u8> {
    let underlay = if v6 {
        Underlay::V6 {
            src: "2001:db8::4".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
        }
    } else {
        Underlay::V4 {
            src: "192.0.2.4".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
        }
    };
    let mut repr = frames::encap_repr(underlay);
    repr.option.src = NodeId(src);
    repr.option.dst = NodeId(dst);
    frames::encapsulate(&repr, inner)
}

fn paths(c: &mut Criterion) {
    let v4 = table(false);
    let v6 = table(true);
    let lan = lan_frame();
    let relay4 = overlay_frame(false, 4, 2, &inner("10.4.0.9", "10.2.0.5"));
    let relay6 = overlay_frame(true, 4, 2, &inner("10.4.0.9", "10.2.0.5"));
    let decap4 = overlay_frame(false, 4, 1, &inner("10.4.0.9", "10.1.0.5"));
    let decap6 = overlay_frame(true, 4, 1, &inner("10.4.0.9", "10.1.0.5"));
    let mut batch = Batch::default();

    let mut g = c.benchmark_group("forwarding");
    g.bench_function("restore_only", |b| {
        batch.fill(&relay6);
        b.iter(|| {
            let (buf, at) = batch.next();
            black_box(&buf[at]);
            batch.restore(&relay6);
        })
    });
    for (name, table, frame) in [("encap_v4", &v4, &lan), ("encap_v6", &v6, &lan)] {
        g.bench_function(name, |b| {
            batch.fill(frame);
            b.iter(|| {
                let (buf, at) = batch.next();
                black_box(encap(table, buf, at, frame.len()).unwrap());
                batch.restore(frame);
            })
        });
    }
    for (name, table, frame) in [
        ("relay_v4", &v4, &relay4),
        ("relay_v6", &v6, &relay6),
        ("decap_v4", &v4, &decap4),
        ("decap_v6", &v6, &decap6),
    ] {
        g.bench_function(name, |b| {
            batch.fill(frame);
            b.iter(|| {
                let (buf, at) = batch.next();
                black_box(from_wan(table, buf, at, frame.len()).unwrap());
                batch.restore(frame);
            })
        });
    }
    // Sealing on encap, against the same encap in the clear, by size: the
    // AEAD's cost per packet on the forwarding path (each iteration takes
    // a new counter of the key, as a worker does).
    let sealed = table(false).with_keys(keys(2, 7, true));
    for size in [64usize, 512, 1400] {
        let frame = frames::ethernet(
            EtherType::IPV4,
            &frames::ipv4_packet(
                "10.1.0.5".parse().unwrap(),
                "10.2.7.9".parse().unwrap(),
                size,
            ),
        );
        for (name, table) in [("plain", &v4), ("sealed", &sealed)] {
            g.bench_function(format!("encap_v4_{name}_{size}"), |b| {
                batch.fill(&frame);
                b.iter(|| {
                    let (buf, at) = batch.next();
                    black_box(encap(table, buf, at, frame.len()).unwrap());
                    batch.restore(&frame);
                })
            });
        }
    }
    // Opening on decap, against the same decap in the clear, by size. A
    // window takes each counter once, so every frame is sealed afresh by
    // node 4's worker (`encap` on its table) in the benchmark's untimed
    // setup, and the timed part is node 1's decap alone.
    let opening = table(false).with_keys(keys(4, 9, false));
    // One sender for every size: a counter must not come twice.
    let node_4 = table_of(4, false, &[(1, 1)]);
    let sealing_node_4 = table_of(4, false, &[(1, 1)]).with_keys(keys(1, 9, true));
    for size in [64usize, 512, 1400] {
        let site_frame = frames::ethernet(
            EtherType::IPV4,
            &frames::ipv4_packet(
                "10.4.0.9".parse().unwrap(),
                "10.1.0.5".parse().unwrap(),
                size,
            ),
        );
        for (name, sender, receiver) in [
            ("plain", &node_4, &v4),
            ("sealed", &sealing_node_4, &opening),
        ] {
            let overlay = || {
                let mut buf = vec![0u8; SLOT];
                buf[HEADROOM..HEADROOM + site_frame.len()].copy_from_slice(&site_frame);
                let f = encap(sender, &mut buf, HEADROOM, site_frame.len()).unwrap();
                (buf, f.start, f.len)
            };
            g.bench_function(format!("decap_v4_{name}_{size}"), |b| {
                b.iter_batched_ref(
                    overlay,
                    |(buf, start, len)| black_box(from_wan(receiver, buf, *start, *len).unwrap()),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    // A relay forwards a sealed frame as it does one in the clear: it holds
    // no key of the two ends and reads no payload.
    let node_4_to_2 = table_of(4, false, &[(2, 1), (1, 1)]).with_keys(keys(2, 9, true));
    for size in [64usize, 1400] {
        let site_frame = frames::ethernet(
            EtherType::IPV4,
            &frames::ipv4_packet(
                "10.4.0.9".parse().unwrap(),
                "10.2.0.5".parse().unwrap(),
                size,
            ),
        );
        let mut buf = vec![0u8; SLOT];
        buf[HEADROOM..HEADROOM + site_frame.len()].copy_from_slice(&site_frame);
        let f = encap(&node_4_to_2, &mut buf, HEADROOM, site_frame.len()).unwrap();
        let sealed_frame = buf[f.start..f.start + f.len].to_vec();
        let clear_frame = overlay_frame(false, 4, 2, &site_frame[14..]);
        for (name, frame) in [("plain", &clear_frame), ("sealed", &sealed_frame)] {
            g.bench_function(format!("relay_v4_{name}_{size}"), |b| {
                batch.fill(frame);
                b.iter(|| {
                    let (buf, at) = batch.next();
                    black_box(from_wan(&sealed, buf, at, frame.len()).unwrap());
                    batch.restore(frame);
                })
            });
        }
    }
    // Parse and lookup only: a frame for a node without a route.
    let unreachable = overlay_frame(false, 2, 5, &inner("10.4.0.9", "10.2.0.5"));
    g.bench_function("parse_and_drop_v4", |b| {
        batch.fill(&unreachable);
        b.iter(|| {
            let (buf, at) = batch.next();
            black_box(from_wan(&v4, buf, at, unreachable.len()).unwrap_err());
            batch.restore(&unreachable);
        })
    });
    g.finish();
}

/// A key table holding one AES-256-GCM key of `peer`'s, id `id`: to seal
/// to it (`tx`) or to open what it sealed.
fn keys(peer: u16, id: u32, tx: bool) -> Option<std::sync::Arc<KeyTable>> {
    let key = KeySpec {
        id,
        cipher: Cipher::Aes256Gcm,
        key: SecretKey::new([0x42; 32]),
    };
    let session = SessionKeys {
        peer: NodeId(peer),
        tx: tx.then(|| key.clone()),
        rx: if tx { Vec::new() } else { vec![key] },
    };
    Some(std::sync::Arc::new(KeyTable::build(
        &[session],
        None,
        std::time::Instant::now(),
    )))
}

/// A batch of frame buffers, used round robin.
struct Batch {
    slots: Vec<u8>,
    current: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            slots: vec![0; BATCH * SLOT],
            current: 0,
        }
    }
}

impl Batch {
    /// Puts `frame` in every slot, after the headroom.
    fn fill(&mut self, frame: &[u8]) {
        for slot in self.slots.chunks_exact_mut(SLOT) {
            slot[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        }
    }

    /// The next slot's buffer and where its frame starts.
    fn next(&mut self) -> (&mut [u8], usize) {
        self.current = (self.current + 1) % BATCH;
        let at = self.current * SLOT;
        (&mut self.slots[at..at + SLOT], HEADROOM)
    }

    /// Restores the current slot's frame after its rewrite.
    fn restore(&mut self, frame: &[u8]) {
        let at = self.current * SLOT + HEADROOM;
        self.slots[at..at + frame.len()].copy_from_slice(black_box(frame));
    }
}

criterion_group!(benches, paths);
criterion_main!(benches);
