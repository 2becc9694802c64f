//! The dataplane end to end: the real `detour-dataplane` binary on the
//! gateway of a namespace testbed, a route snapshot installed over its API,
//! frames crafted on the peer and the host, and what comes out compared
//! byte for byte with what docs/wire-format.md says, and received by the
//! kernels at the far end (so the checksums are right).
//!
//! ```text
//!   peer: node 2 (192.0.2.1 / 2001:db8::1), node 3 (.99 / ::99)
//!     │ eth0
//!     │ wan 192.0.2.2 / 2001:db8::2
//!   [gw: detour-dataplane, node 1]
//!     │ lan 10.1.0.1
//!     │ eth0
//!   host 10.1.0.5 (site prefix 10.1.0.0/24)
//! ```
//!
//! Node 2 serves 10.2.0.0/24, node 3 10.3.0.0/24; both live in the peer
//! namespace, so the peer sees what the gateway sends to either (the rig is
//! in support/rig.rs).
//!
//! Needs root; fails without it.

#[path = "support/rig.rs"]
mod rig;

use rig::*;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use detour_common::api::{PrefixSpec, Request, Response, RouteSnapshot, Stats};
use detour_common::wire::encap::{IP_OVERHEAD_V4, IP_OVERHEAD_V6};
use detour_common::wire::geneve::{DETOUR_GENEVE_LEN, HEADER_LEN as GENEVE_LEN, flags};
use detour_common::wire::{
    DetourOptionRepr, EncapRepr, Ipv4Packet, Ipv6Packet, NodeId, OverlayFrame, Seal, checksum,
};
use detour_dataplane::rewrite::flow_port;
use detour_testkit::frames::{self, OVERLAY_PORT};
use detour_testkit::{Family, Gateway, eventually};

fn encap_case(family: Family) {
    let rig = Rig::up(family);
    let capture = rig.peer_socket();
    let node2 = udp_socket(&rig.net.peer, SocketAddr::new(family.node(2), OVERLAY_PORT));
    let inner = datagram(HOST, SITE2_HOST, HOST_PORT, REMOTE_PORT, 100, 1);
    rig.host_socket()
        .send(&ethernet(rig.gw_lan, rig.host, &inner))
        .unwrap();

    let got = capture.receive(WAIT, 1, is_overlay);
    let expected = frames::encapsulate_from_port(
        &EncapRepr {
            src_mac: rig.gw_wan,
            dst_mac: rig.peer,
            underlay: family.underlay(1, 2),
            ttl: 64,
            dst_port: OVERLAY_PORT,
            vni: 0,
            option: DetourOptionRepr {
                src: NodeId(1),
                dst: NodeId(2),
                hop_limit: 4,
                flags: 0,
                seal: Seal::NONE,
            },
        },
        &forwarded(&inner),
        flow_port(&inner),
    );
    assert_eq!(got, std::slice::from_ref(&expected), "what node 2 received");
    // The fields docs/wire-format.md fixes, read independently of the
    // encoder the expected frame came from.
    let o = OverlayFrame::parse(&got[0], OVERLAY_PORT).unwrap();
    assert_eq!(
        (o.option.src, o.option.dst, o.option.hop_limit),
        (NodeId(1), NodeId(2), 4)
    );
    assert_eq!(o.vni, 0);
    assert!((0xc001..=0xffff).contains(&o.src_port));
    assert_eq!(&got[0][o.inner_offset..], &forwarded(&inner)[..]);

    let mut buf = [0u8; 2048];
    let (n, from) = node2.recv_from(&mut buf).expect("node 2's kernel took it");
    assert_eq!(from, SocketAddr::new(family.node(1), o.src_port));
    assert_eq!(&buf[..n], &expected[o.udp_offset + 8..]);
    assert_accounted(&rig.stats(), 1, 0);
}

fn decap_case(family: Family) {
    let rig = Rig::up(family);
    let capture = rig.host_socket();
    let host = udp_socket(&rig.net.host, SocketAddr::new(HOST.into(), HOST_PORT));
    let inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 100, 2);
    rig.peer_socket()
        .send(&rig.overlay_to_gateway(2, 1, &inner))
        .unwrap();

    let got = capture.receive(WAIT, 1, |f| f.len() > 34 && f[23] == 17);
    assert_eq!(got, [ethernet(rig.host, rig.gw_lan, &forwarded(&inner))]);
    let mut buf = [0u8; 2048];
    let (n, from) = host.recv_from(&mut buf).expect("the host's kernel took it");
    assert_eq!(from, SocketAddr::new(SITE2_HOST.into(), REMOTE_PORT));
    assert_eq!(&buf[..n], &inner[28..]);
    let stats = rig.stats();
    assert_eq!(stats.total.decapsulated, 1);
    assert_accounted(&stats, 1, 0);
}

fn relay_case(family: Family) {
    let rig = Rig::up(family);
    let capture = rig.peer_socket();
    let node3 = udp_socket(&rig.net.peer, SocketAddr::new(family.node(3), OVERLAY_PORT));
    let inner = datagram(SITE2_HOST, SITE3_HOST, REMOTE_PORT, REMOTE_PORT, 100, 3);
    rig.peer_socket()
        .send(&rig.overlay_to_gateway(2, 3, &inner))
        .unwrap();

    // What node 1 sends node 3 when it relays for node 2: the outer headers
    // of a frame from node 1 to node 3, the option still from node 2, one
    // hop fewer, flagged relayed; the flow port and the inner packet kept.
    let expected = frames::encapsulate_from_port(
        &EncapRepr {
            src_mac: rig.gw_wan,
            dst_mac: rig.peer,
            underlay: family.underlay(1, 3),
            ttl: 64,
            dst_port: OVERLAY_PORT,
            vni: 0,
            option: DetourOptionRepr {
                src: NodeId(2),
                dst: NodeId(3),
                hop_limit: 3,
                flags: flags::RELAYED,
                seal: Seal::NONE,
            },
        },
        &inner,
        frames::FLOW_PORT,
    );
    let to_node3 =
        |f: &[u8]| OverlayFrame::parse(f, OVERLAY_PORT).is_ok_and(|o| o.option.dst == NodeId(3));
    let got = capture.receive(WAIT, 1, |f| to_node3(f) && f[6..12] == rig.gw_wan.0);
    assert_eq!(got, std::slice::from_ref(&expected), "what node 3 received");
    let mut buf = [0u8; 2048];
    let (n, from) = node3.recv_from(&mut buf).expect("node 3's kernel took it");
    assert_eq!(from, SocketAddr::new(family.node(1), frames::FLOW_PORT));
    let o = OverlayFrame::parse(&expected, OVERLAY_PORT).unwrap();
    assert_eq!(&buf[..n], &expected[o.udp_offset + 8..]);
    let stats = rig.stats();
    assert_eq!(stats.total.relayed, 1);
    assert_accounted(&stats, 1, 0);
}

/// Every frame a worker took is accounted for, and `received` and
/// `dropped` are as the test sent.
fn assert_accounted(stats: &Stats, received: u64, dropped: u64) {
    let t = &stats.total;
    assert_eq!(t.received, received, "{stats:#?}");
    assert_eq!(t.dropped_total(), dropped, "{stats:#?}");
    assert_eq!(
        t.received,
        t.forwarded() + t.answered + t.dropped_total() + t.holding,
        "{stats:#?}"
    );
}

#[test]
fn netns_encap_over_ipv4() {
    encap_case(Family::V4);
}

#[test]
fn netns_encap_over_ipv6() {
    encap_case(Family::V6);
}

#[test]
fn netns_decap_over_ipv4() {
    decap_case(Family::V4);
}

#[test]
fn netns_decap_over_ipv6() {
    decap_case(Family::V6);
}

#[test]
fn netns_relay_over_ipv4() {
    relay_case(Family::V4);
}

#[test]
fn netns_relay_over_ipv6() {
    relay_case(Family::V6);
}

/// A LAN host the gateway's kernel has never heard from (no neighbour
/// entry, and decapsulated frames never pass through the kernel): the
/// frames for it are held while the dataplane has the kernel solicit it,
/// and go out, all of them, in order and byte for byte, as soon as it
/// answered; later frames go straight through.
#[test]
fn netns_decap_to_a_silent_lan_host_holds_its_frames_until_it_answers() {
    const SILENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 6);
    const BURST: u32 = 10;
    let rig = Rig::up(Family::V4);
    let (gw, host) = (&rig.net.gw, &rig.net.host);
    host.ip(&["addr", "add", "10.1.0.6/24", "dev", "eth0"])
        .unwrap();
    gw.ip(&["neigh", "flush", "to", "10.1.0.6", "dev", "lan"])
        .unwrap();
    let known = gw
        .ip(&["neigh", "show", "to", "10.1.0.6", "dev", "lan"])
        .unwrap();
    assert!(
        known.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&known.stdout)
    );
    // Bound, so that the host's kernel takes the datagrams quietly rather
    // than answering port unreachable through the gateway.
    let socket = udp_socket(host, SocketAddr::new(SILENT.into(), HOST_PORT));
    let capture = rig.host_socket();
    let peer = rig.peer_socket();
    let datagram_to = |seq: u32| datagram(SITE2_HOST, SILENT, REMOTE_PORT, HOST_PORT, 32, seq);
    let seq_of = |f: &[u8]| u32::from_be_bytes(f[14 + 28..14 + 32].try_into().unwrap());
    let to_silent = |f: &[u8]| {
        f.len() >= 14 + 28 + 32
            && f[12..14] == [8, 0]
            && f[14 + 9] == 17
            && f[30..34] == SILENT.octets()
    };
    let expected = |seq: u32| ethernet(rig.host, rig.gw_lan, &forwarded(&datagram_to(seq)));

    // A burst before anything is known of the host.
    let started = Instant::now();
    for seq in 0..BURST {
        peer.send(&rig.overlay_to_gateway(2, 1, &datagram_to(seq)))
            .unwrap();
    }
    let got = capture.receive(WAIT, BURST as usize, to_silent);
    eprintln!(
        "{} of {BURST} datagrams at the host after {:?}",
        got.len(),
        started.elapsed()
    );
    let want: Vec<_> = (0..BURST).map(expected).collect();
    assert_eq!(got, want, "every one, in order, with the host's MAC");
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("the host's kernel took it");
    assert_eq!(&buf[..n], &datagram_to(0)[28..]);
    let settled = eventually(WAIT, || rig.stats().total.decapsulated == u64::from(BURST));
    let stats = rig.stats();
    assert!(settled, "{stats:#?}");
    let t = &stats.total;
    assert!(t.held >= 1, "the first one at least waited: {stats:#?}");
    assert_eq!((t.released, t.holding), (t.held, 0), "{stats:#?}");
    assert_accounted(&stats, u64::from(BURST), 0);

    // Resolved: later datagrams go straight through.
    let held = t.held;
    let later = BURST..BURST + 5;
    for seq in later.clone() {
        peer.send(&rig.overlay_to_gateway(2, 1, &datagram_to(seq)))
            .unwrap();
    }
    let got = capture.receive(WAIT, 5, |f| to_silent(f) && later.contains(&seq_of(f)));
    let want: Vec<_> = later.map(expected).collect();
    assert_eq!(got, want);
    let settled = eventually(WAIT, || rig.stats().total.received == u64::from(BURST + 5));
    let stats = rig.stats();
    assert!(settled, "{stats:#?}");
    assert_eq!(stats.total.held, held, "none held once known: {stats:#?}");
    assert_accounted(&stats, u64::from(BURST + 5), 0);
}

/// A datagram too big for the overlay is answered with ICMP fragmentation
/// needed, and the host's kernel lowers its path MTU to what fits.
#[test]
fn netns_too_big_is_answered_and_path_mtu_discovery_follows() {
    let rig = Rig::up(Family::V4);
    let socket = udp_socket(&rig.net.host, SocketAddr::new(HOST.into(), HOST_PORT));
    socket
        .connect(SocketAddr::new(SITE2_HOST.into(), REMOTE_PORT))
        .unwrap();
    set_dont_fragment(&socket);
    // 1472 bytes of payload: a 1500-byte IP packet, which fits the LAN but
    // not the WAN once 60 bytes of outer IPv4, UDP and GENEVE are added.
    let big = vec![0u8; 1472];
    socket.send(&big).unwrap();
    let lowered = eventually(WAIT, || path_mtu(&socket) < 1500);
    let mtu = path_mtu(&socket);
    assert!(lowered, "the host's path MTU stayed {mtu}");
    assert_eq!(
        usize::from(mtu),
        1500 - IP_OVERHEAD_V4,
        "inner MTU over an IPv4 underlay"
    );
    // The kernel now refuses what would not fit, and sends what does. (The
    // ICMP answer also left its error on the connected socket: cleared.)
    let _ = socket.take_error();
    assert_eq!(
        socket.send(&big).unwrap_err().raw_os_error(),
        Some(libc::EMSGSIZE)
    );
    let capture = rig.peer_socket();
    let _ = socket.take_error();
    socket.send(&vec![0u8; usize::from(mtu) - 28]).unwrap();
    let got = capture.receive(WAIT, 1, is_overlay);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 14 + 1500, "a full-size outer packet");
    let stats = rig.stats();
    assert_eq!(stats.total.answered, 1, "{stats:#?}");
    assert_eq!(stats.total.encapsulated, 1, "{stats:#?}");
}

/// Path MTU discovery on, for the socket's family: the kernel fragments
/// nothing and learns the path MTU from ICMP.
fn set_dont_fragment(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let (level, name, on) = match socket.local_addr().unwrap() {
        SocketAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        ),
        SocketAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        ),
    };
    // SAFETY: an int option of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(r, 0);
}

/// The kernel's path MTU toward the socket's peer (`IP_MTU`, `IPV6_MTU`).
fn path_mtu(socket: &UdpSocket) -> u16 {
    use std::os::fd::AsRawFd;
    let (level, name) = match socket.local_addr().unwrap() {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, libc::IP_MTU),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, libc::IPV6_MTU),
    };
    let mut mtu: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as u32;
    // SAFETY: an int option of the size passed.
    let r = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut mtu).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    mtu as u16
}

/// The gateway's and the host's LAN ends on IPv6 too (the testbed has it
/// off): the gateway at [`GW_LAN_V6`], before the dataplane starts, so that
/// it answers ICMPv6 from that address; the host at [`HOST_V6`], routing
/// through it. No duplicate address detection, no router solicitation.
fn lan_v6(net: &Gateway) {
    for (ns, dev) in [(&net.gw, "lan"), (&net.host, "eth0")] {
        for (key, value) in [
            ("accept_dad", "0"),
            ("router_solicitations", "0"),
            ("disable_ipv6", "0"),
        ] {
            ns.sysctl(&format!("net.ipv6.conf.{dev}.{key}"), value)
                .unwrap();
        }
    }
    net.gw
        .ip(&[
            "addr",
            "add",
            &format!("{GW_LAN_V6}/64"),
            "dev",
            "lan",
            "nodad",
        ])
        .unwrap();
    net.host
        .ip(&[
            "addr",
            "add",
            &format!("{HOST_V6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    net.host
        .ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GW_LAN_V6.to_string(),
        ])
        .unwrap();
    net.host
        .static_neighbour("eth0", &GW_LAN_V6.to_string(), &net.gw.mac("lan").unwrap())
        .unwrap();
}

/// An IPv6 datagram too big for the overlay is answered with ICMPv6
/// packet too big, from the gateway's LAN address, with the inner MTU of
/// the underlay's family; the host's kernel lowers its path MTU to it.
fn too_big_v6_case(family: Family) {
    let rig = Rig::up_with(family, lan_v6);
    let mut snapshot = rig.snapshot(2, 2);
    for (prefix, node) in [("2001:db8:1::/64", 1), ("2001:db8:2::/64", 2)] {
        snapshot.prefixes.push(PrefixSpec {
            prefix: prefix.parse().unwrap(),
            node: NodeId(node),
        });
    }
    rig.install(&snapshot);
    let overhead = match family {
        Family::V4 => IP_OVERHEAD_V4,
        Family::V6 => IP_OVERHEAD_V6,
    };
    let inner_mtu = 1500 - overhead;
    let capture = rig.host_socket();
    let socket = udp_socket(&rig.net.host, SocketAddr::new(HOST_V6.into(), HOST_PORT));
    socket
        .connect(SocketAddr::new(SITE2_HOST_V6.into(), REMOTE_PORT))
        .unwrap();
    set_dont_fragment(&socket);
    // 1452 bytes of payload: a 1500-byte IPv6 packet, which fits the LAN
    // but not the WAN once encapsulated.
    let big = vec![0u8; 1452];
    socket.send(&big).unwrap();

    let is_too_big = |f: &[u8]| {
        f.len() > 14 + 40 + 8 && f[12..14] == [0x86, 0xdd] && f[14 + 6] == 58 && f[14 + 40] == 2
    };
    let got = capture.receive(WAIT, 1, is_too_big);
    assert_eq!(got.len(), 1, "no packet too big reached the host");
    let f = &got[0];
    assert_eq!((&f[..6], &f[6..12]), (&rig.host.0[..], &rig.gw_lan.0[..]));
    let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW_LAN_V6, HOST_V6));
    let icmp = ip.payload();
    assert_eq!(icmp[..2], [2, 0], "type 2 packet too big, code 0");
    assert_eq!(
        u32::from_be_bytes(icmp[4..8].try_into().unwrap()) as usize,
        inner_mtu,
        "the MTU inside the overlay over {family:?}"
    );
    let ph = checksum::pseudo_header_v6(
        &GW_LAN_V6.octets(),
        &HOST_V6.octets(),
        58,
        icmp.len() as u32,
    );
    assert_eq!(checksum::finish(checksum::sum(icmp, ph)), 0, "checksum");
    // The quote: the offending packet's start, the reply within 1280 bytes.
    assert_eq!(f.len(), 14 + 1280);
    // (Cut short, so read by hand: a checked view refuses it.)
    let quoted = &icmp[8..];
    let addr = |at: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&quoted[at..at + 16]).unwrap());
    assert_eq!(
        (
            u16::from_be_bytes([quoted[4], quoted[5]]),
            addr(8),
            addr(24)
        ),
        (8 + 1452, HOST_V6, SITE2_HOST_V6)
    );

    let lowered = eventually(WAIT, || path_mtu(&socket) < 1500);
    let mtu = path_mtu(&socket);
    assert!(lowered, "the host's path MTU stayed {mtu}");
    assert_eq!(usize::from(mtu), inner_mtu);
    // The kernel now refuses what would not fit, and sends what does.
    let _ = socket.take_error();
    assert_eq!(
        socket.send(&big).unwrap_err().raw_os_error(),
        Some(libc::EMSGSIZE)
    );
    let peer = rig.peer_socket();
    let _ = socket.take_error();
    socket.send(&vec![0u8; inner_mtu - 48]).unwrap();
    let got = peer.receive(WAIT, 1, is_overlay);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].len(), 14 + 1500, "a full-size outer packet");
    let stats = rig.stats();
    assert_eq!(stats.total.answered, 1, "{stats:#?}");
    assert_eq!(stats.total.encapsulated, 1, "{stats:#?}");
}

#[test]
fn netns_ipv6_too_big_is_answered_over_an_ipv4_underlay() {
    too_big_v6_case(Family::V4);
}

#[test]
fn netns_ipv6_too_big_is_answered_over_an_ipv6_underlay() {
    too_big_v6_case(Family::V6);
}

/// Frames that pass the classifier but that no worker may forward: each
/// dropped under its reason, counted, and the dataplane still up.
#[test]
fn netns_frames_a_worker_refuses_are_dropped_and_counted() {
    let rig = Rig::up(Family::V4);
    let peer = rig.peer_socket();
    let host = rig.host_socket();
    let sent = rig.frames_a_worker_refuses();
    for (_, f) in &sent {
        peer.send(f).unwrap();
    }
    // From the LAN: to a remote site with TTL 1, answered "time exceeded"
    // as a router does.
    let mut spent = datagram(HOST, SITE2_HOST, 1, 2, 10, 0);
    spent[8] = 1;
    Ipv4Packet::new_checked(&mut spent[..])
        .unwrap()
        .fill_checksum();
    host.send(&ethernet(rig.gw_lan, rig.host, &spent)).unwrap();
    let is_time_exceeded = |f: &[u8]| f.len() > 14 + 20 && f[14 + 9] == 1 && f[14 + 20] == 11;
    let answers = host.receive(WAIT, 1, is_time_exceeded);
    assert_eq!(answers.len(), 1, "time exceeded, back to the host");
    assert_eq!(&answers[0][14 + 28..], &spent[..], "quoting the packet");

    let mut expected = std::collections::BTreeMap::new();
    for (reason, _) in &sent {
        *expected.entry(reason.to_string()).or_insert(0u64) += 1;
    }
    let dropped = sent.len() as u64;
    let total = dropped + 1;
    // The held frame waits 3 s (the default hold_ms) before it counts.
    let counted = eventually(2 * WAIT, || rig.stats().total.dropped == expected);
    let stats = rig.stats();
    assert!(counted, "{stats:#?}");
    assert_eq!(stats.total.answered, 1, "{stats:#?}");
    assert_eq!(
        (stats.total.held, stats.total.holding),
        (1, 0),
        "{stats:#?}"
    );
    assert_accounted(&stats, total, dropped);
    let health = rig.client().health().unwrap();
    assert_eq!(health.workers_running, health.workers);
}

/// Snapshots that move node 2 between its direct path and the path through
/// node 3, a thousand times while traffic flows to node 2's site: every
/// datagram arrives once, at node 2 or at node 3 (as relay), for node 2.
#[test]
fn netns_a_thousand_snapshot_swaps_under_traffic_lose_and_misroute_nothing() {
    const SWAPS: u64 = 1000;
    let rig = Rig::up(Family::V4);
    let sockets: Vec<UdpSocket> = [2, 3]
        .iter()
        .map(|id| {
            udp_socket(
                &rig.net.peer,
                SocketAddr::new(Family::V4.node(*id), OVERLAY_PORT),
            )
        })
        .collect();
    for s in &sockets {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
    }
    let host = Arc::new(rig.host_socket());
    let done = Arc::new(AtomicBool::new(false));
    let (gw_lan, host_mac) = (rig.gw_lan, rig.host);
    let sender = {
        let (host, done) = (Arc::clone(&host), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while !done.load(Ordering::Relaxed) {
                let inner = datagram(HOST, SITE2_HOST, HOST_PORT, REMOTE_PORT, 64, seq);
                host.send(&ethernet(gw_lan, host_mac, &inner)).unwrap();
                seq += 1;
                // About 20,000 datagrams a second: well within what one
                // worker in copy mode forwards, so that a loss is a bug.
                std::thread::sleep(Duration::from_micros(50));
            }
            seq
        })
    };
    let receivers: Vec<_> = sockets
        .into_iter()
        .map(|s| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 2048];
                let mut quiet_since = None;
                loop {
                    match s.recv(&mut buf) {
                        Ok(n) => {
                            quiet_since = None;
                            // GENEVE header and option, then the inner packet.
                            let option = &buf[GENEVE_LEN..DETOUR_GENEVE_LEN];
                            let dst = u16::from_be_bytes([option[6], option[7]]);
                            let inner = &buf[DETOUR_GENEVE_LEN..n];
                            let seq = u32::from_be_bytes(inner[28..32].try_into().unwrap());
                            seen.push((dst, seq));
                        }
                        Err(_) if done.load(Ordering::Relaxed) => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(500) {
                                return seen;
                            }
                        }
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    for version in 2..2 + SWAPS {
        let via = if version % 2 == 0 { 3 } else { 2 };
        rig.install(&rig.snapshot(version, via));
    }
    let swapping = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let mut arrivals: Vec<(usize, u16, u32)> = Vec::new();
    for (i, r) in receivers.into_iter().enumerate() {
        arrivals.extend(r.join().unwrap().into_iter().map(|(d, s)| (i, d, s)));
    }
    eprintln!(
        "{SWAPS} swaps in {swapping:?}; {sent} datagrams, {} arrived ({} through the relay)",
        arrivals.len(),
        arrivals.iter().filter(|a| a.0 == 1).count()
    );
    assert!(
        arrivals.iter().all(|(_, dst, _)| *dst == 2),
        "every datagram is for node 2"
    );
    let mut seqs: Vec<u32> = arrivals.iter().map(|a| a.2).collect();
    seqs.sort_unstable();
    let expected: Vec<u32> = (0..sent).collect();
    assert!(
        seqs == expected,
        "each of the {sent} datagrams arrives exactly once; got {} ({} distinct)",
        seqs.len(),
        {
            let mut d = seqs.clone();
            d.dedup();
            d.len()
        }
    );
    assert!(
        arrivals.iter().any(|a| a.0 == 0) && arrivals.iter().any(|a| a.0 == 1),
        "traffic took both paths"
    );
    let stats = rig.stats();
    assert_accounted(&stats, u64::from(sent), 0);
}

/// The API refuses a stale snapshot, an invalid one and a line that is not
/// a request, each with a clear error, and keeps the installed table.
#[test]
fn netns_api_refuses_stale_invalid_and_malformed_requests_and_changes_nothing() {
    use std::io::{BufRead, BufReader, Write};
    let rig = Rig::up(Family::V4);
    let installed = rig.snapshot(1, 2);
    let refused = |snapshot: RouteSnapshot| match rig
        .client()
        .request(&Request::Install { snapshot })
        .unwrap()
    {
        Response::Error { message } => message,
        other => panic!("installed: {other:?}"),
    };
    assert_eq!(
        refused(rig.snapshot(1, 3)),
        "snapshot refused: snapshot version 1 is not newer than the installed 1"
    );
    let mut invalid = rig.snapshot(2, 2);
    invalid.routes.push(invalid.routes[0]);
    assert_eq!(refused(invalid), "snapshot refused: two routes to node 2");
    let mut foreign = rig.snapshot(3, 2);
    foreign.local = NodeId(2);
    assert!(
        refused(foreign)
            .starts_with("snapshot refused: it is for node 2, and this dataplane is node 1"),
    );

    let mut stream = std::os::unix::net::UnixStream::connect(rig.api.path()).unwrap();
    stream.write_all(b"{\"request\": \"reboot\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).unwrap();
    let response: Response = serde_json::from_str(&line).unwrap();
    let Response::Error { message } = response else {
        panic!("{line}")
    };
    assert!(
        message.starts_with("malformed request: unknown variant `reboot`"),
        "{message}"
    );

    let routes = rig.client().request(&Request::Routes).unwrap();
    assert_eq!(
        routes,
        Response::Routes {
            snapshot: Some(installed)
        }
    );
    // Still forwarding by it.
    let capture = rig.peer_socket();
    let inner = datagram(HOST, SITE2_HOST, HOST_PORT, REMOTE_PORT, 20, 9);
    rig.host_socket()
        .send(&ethernet(rig.gw_lan, rig.host, &inner))
        .unwrap();
    let got = capture.receive(WAIT, 1, is_overlay);
    assert_eq!(got.len(), 1);
    assert_eq!(
        OverlayFrame::parse(&got[0], OVERLAY_PORT)
            .unwrap()
            .outer_dst,
        Family::V4.node(2)
    );
}
