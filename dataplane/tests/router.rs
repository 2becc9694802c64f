//! The dataplane behaves as a router should, end to end on the rig (the
//! real `detour-dataplane` binary, frames crafted on the peer and the
//! host; support/rig.rs): a relay never bounces a frame, an outer
//! congestion mark reaches the inner packet, and the counters are true at
//! the moment a frame arrives.
//!
//! Needs root; fails without it.

#[path = "support/rig.rs"]
mod rig;

use rig::*;

use detour_common::wire::geneve::flags;
use detour_common::wire::{Ipv4Packet, NodeId, OverlayFrame};
use detour_dataplane::ecn;
use detour_testkit::Family;
use detour_testkit::frames::OVERLAY_PORT;

/// Node 1's route to node 2 goes through node 3, while node 3 sends node 1
/// a frame to relay to node 2: two views that contradict each other, as
/// while a route change spreads. Node 1 relays on its own direct path to
/// node 2, not back to node 3; and a frame that was relayed once, handed
/// to a relay again, is dropped and counted: one bounce at most.
#[test]
fn netns_two_relays_with_contradictory_routes_never_bounce_a_frame() {
    let rig = Rig::up(Family::V4);
    rig.install(&rig.snapshot(2, 3));
    let capture = rig.peer_socket();
    let inner = datagram(SITE3_HOST, SITE2_HOST, REMOTE_PORT, REMOTE_PORT, 100, 1);
    rig.peer_socket()
        .send(&rig.overlay_to_gateway(3, 2, &inner))
        .unwrap();
    let from_gateway =
        |f: &[u8]| f[6..12] == rig.gw_wan.0 && OverlayFrame::parse(f, OVERLAY_PORT).is_ok();
    let got = capture.receive(WAIT, 1, from_gateway);
    assert_eq!(got.len(), 1, "{:#?}", rig.stats());
    let o = OverlayFrame::parse(&got[0], OVERLAY_PORT).unwrap();
    assert_eq!(
        o.outer_dst,
        Family::V4.node(2),
        "straight to node 2, not back to 3"
    );
    assert_eq!((o.option.src, o.option.dst), (NodeId(3), NodeId(2)));
    assert_eq!(o.option.flags & flags::RELAYED, flags::RELAYED);

    // Node 2's view is as stale: it hands the frame back to node 1.
    let mut bounced = got[0].clone();
    bounced[..6].copy_from_slice(&rig.gw_wan.0);
    bounced[6..12].copy_from_slice(&rig.peer.0);
    bounced[14 + 12..14 + 16].copy_from_slice(&[192, 0, 2, 1]);
    bounced[14 + 16..14 + 20].copy_from_slice(&[192, 0, 2, 2]);
    Ipv4Packet::new_checked(&mut bounced[14..])
        .unwrap()
        .fill_checksum();
    capture.send(&bounced).unwrap();
    let stats = rig.stats();
    assert_eq!(stats.total.relayed, 1, "{stats:#?}");
    assert_eq!(
        stats.total.dropped.get("already_relayed"),
        Some(&1),
        "{stats:#?}"
    );
    assert!(
        capture
            .receive(std::time::Duration::from_millis(300), 1, from_gateway)
            .is_empty(),
        "not relayed a second time"
    );
}

/// The underlay marked the outer header CE: the host gets its ECN-capable
/// packet marked CE, its header checksum right; a packet that is not
/// ECN-capable is dropped instead (RFC 6040).
#[test]
fn netns_an_outer_ce_mark_reaches_the_inner_header() {
    let rig = Rig::up(Family::V4);
    let host = rig.host_socket();
    let peer = rig.peer_socket();
    let marked = |inner_ecn: u8, seq: u32| {
        let mut inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 32, seq);
        inner[1] |= inner_ecn;
        Ipv4Packet::new_checked(&mut inner[..])
            .unwrap()
            .fill_checksum();
        let mut frame = rig.overlay_to_gateway(2, 1, &inner);
        frame[14 + 1] |= ecn::CE;
        Ipv4Packet::new_checked(&mut frame[14..])
            .unwrap()
            .fill_checksum();
        frame
    };
    let to_host = |f: &[u8]| f.len() > 34 && f[12..14] == [8, 0] && f[30..34] == HOST.octets();
    peer.send(&marked(ecn::ECT_0, 1)).unwrap();
    let got = host.receive(WAIT, 1, to_host);
    assert_eq!(got.len(), 1, "{:#?}", rig.stats());
    let ip = Ipv4Packet::new_checked(&got[0][14..]).unwrap();
    assert_eq!(ip.tos() & ecn::MASK, ecn::CE, "congestion experienced");
    assert!(ip.verify_checksum());

    peer.send(&marked(ecn::NOT_ECT, 2)).unwrap();
    let stats = rig.stats();
    assert_eq!(
        stats.total.dropped.get("ce_not_ect"),
        Some(&1),
        "{stats:#?}"
    );
    assert_eq!(stats.total.decapsulated, 1, "{stats:#?}");
}

/// A reader who sees a frame arrive sees it counted: the counters are
/// published before the frame is put on its TX ring, so one read of the
/// stats right after each arrival, without waiting for them to settle,
/// counts every frame that arrived.
#[test]
fn netns_a_frame_that_arrived_is_already_counted() {
    const FRAMES: u64 = 50;
    let rig = Rig::up(Family::V4);
    let host = rig.host_socket();
    let peer = rig.peer_socket();
    let to_host = |f: &[u8]| f.len() > 34 && f[12..14] == [8, 0] && f[30..34] == HOST.octets();
    let mut client = rig.client();
    for seq in 0..FRAMES {
        let inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 32, seq as u32);
        peer.send(&rig.overlay_to_gateway(2, 1, &inner)).unwrap();
        assert_eq!(host.receive(WAIT, 1, to_host).len(), 1);
        let seen = client.stats().unwrap().total.decapsulated;
        assert!(seen > seq, "frame {seq} arrived, {seen} counted");
    }
}

/// The WAN interface's MTU lowered under a running dataplane: the kernel
/// announces it, and the next packet that no longer fits is answered with
/// the new size, without a restart.
#[test]
fn netns_a_new_wan_mtu_is_taken_at_once() {
    let rig = Rig::up(Family::V4);
    let host = rig.host_socket();
    let peer = rig.peer_socket();
    // 1400 bytes: fits a WAN MTU of 1500 with the 60 bytes of outer
    // headers (no encryption in the rig), not one of 1400.
    let packet = datagram(HOST, SITE2_HOST, HOST_PORT, REMOTE_PORT, 1400 - 28, 1);
    let is_overlay = |f: &[u8]| OverlayFrame::parse(f, OVERLAY_PORT).is_ok();
    host.send(&ethernet(rig.gw_lan, rig.host, &packet)).unwrap();
    assert_eq!(peer.receive(WAIT, 1, is_overlay).len(), 1, "fits at 1500");

    rig.net
        .gw
        .ip(&["link", "set", "wan", "mtu", "1400"])
        .unwrap();
    let fragmentation_needed = |f: &[u8]| f.len() > 42 && f[14 + 9] == 1 && f[34..36] == [3, 4];
    let mut answer = Vec::new();
    let answered = detour_testkit::eventually(WAIT, || {
        host.send(&ethernet(rig.gw_lan, rig.host, &packet)).unwrap();
        answer = host.receive(
            std::time::Duration::from_millis(100),
            1,
            fragmentation_needed,
        );
        !answer.is_empty()
    });
    assert!(answered, "no answer at the new MTU: {:#?}", rig.stats());
    let mtu = u16::from_be_bytes([answer[0][40], answer[0][41]]);
    assert_eq!(mtu, 1400 - 60, "the largest packet that fits now");
}

/// The WAN next hop toward node 3 stops answering ARP and its entry is
/// gone: frames for node 3's site wait (none is dropped) while it is
/// solicited, and go out, in order, once it answers again.
#[test]
fn netns_frames_for_an_unresolved_underlay_next_hop_wait_until_it_answers() {
    const FRAMES: u32 = 5;
    let rig = Rig::up(Family::V4);
    let host = rig.host_socket();
    let peer = rig.peer_socket();
    rig.net
        .peer
        .ip(&["link", "set", "eth0", "arp", "off"])
        .unwrap();
    rig.net
        .gw
        .ip(&["neigh", "del", "192.0.2.99", "dev", "wan"])
        .unwrap();
    // The table loses the MAC once the kernel announces the flush.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let to_node3 = |f: &[u8]| {
        f[6..12] == rig.gw_wan.0
            && OverlayFrame::parse(f, OVERLAY_PORT).is_ok_and(|o| o.option.dst == NodeId(3))
    };
    for seq in 0..FRAMES {
        let inner = datagram(HOST, SITE3_HOST, HOST_PORT, REMOTE_PORT, 32, seq);
        host.send(&ethernet(rig.gw_lan, rig.host, &inner)).unwrap();
    }
    let early = peer.receive(std::time::Duration::from_millis(300), 1, to_node3);
    let neigh = rig.net.gw.ip(&["neigh", "show", "dev", "wan"]).unwrap();
    assert!(
        early.is_empty(),
        "node 3's next hop is not resolved: {}{:#?}",
        String::from_utf8_lossy(&neigh.stdout),
        rig.stats().total
    );
    let held = rig.client().stats().unwrap().total;
    assert_eq!(held.holding, u64::from(FRAMES), "{held:#?}");

    rig.net
        .peer
        .ip(&["link", "set", "eth0", "arp", "on"])
        .unwrap();
    let got = peer.receive(2 * WAIT, FRAMES as usize, to_node3);
    let seqs: Vec<u32> = got
        .iter()
        .map(|f| {
            let o = OverlayFrame::parse(f, OVERLAY_PORT).unwrap();
            let at = o.inner_offset + 28;
            u32::from_be_bytes(f[at..at + 4].try_into().unwrap())
        })
        .collect();
    assert_eq!(seqs, (0..FRAMES).collect::<Vec<_>>(), "{:#?}", rig.stats());
    let t = rig.stats().total;
    assert_eq!(
        (t.released, t.holding, t.dropped_total()),
        (u64::from(FRAMES), 0, 0),
        "{t:#?}"
    );
}
