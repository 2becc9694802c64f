//! Sealed frames (`encryption = "aead"`) at a gateway with two receive
//! queues and a worker on each: the replay window of a peer's key is one,
//! shared by the workers, so a frame opened by one worker is a replay to
//! the other, and frames reordered across the queues inside the window are
//! all taken.
//!
//! The peer seals as a detour peer does (`generator::sealer`, detour's own
//! encap with node 2's key) and sends each frame out of a chosen TX queue
//! of its veth end with an AF_XDP socket bound to that queue; veth hands a
//! frame to the receive queue of the same number at the gateway, whose
//! worker on that queue takes it.
//!
//! Needs root; fails without it.

#[path = "support/rig.rs"]
mod rig;

use rig::*;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use detour_common::api::{Cipher, KeySpec, SecretKey, SessionKeys, Stats};
use detour_common::wire::NodeId;
use detour_dataplane::generator::sealer::PeerSealer;
use detour_dataplane::generator::{Generator, Method};
use detour_dataplane::table::{Links, RouteSpec};
use detour_testkit::Family;

/// Node 2's key toward the gateway, as both hold it.
fn key() -> KeySpec {
    KeySpec {
        id: 9,
        cipher: Cipher::Aes256Gcm,
        key: SecretKey::new([0x29; 32]),
    }
}

/// The gateway with two queues, holding node 2's key.
fn gateway() -> Rig {
    let rig = Rig::up_with_queues(Family::V4, 2);
    let mut snapshot = rig.snapshot(2, 2);
    snapshot.dataplane_instance = Some(rig.client().health().unwrap().instance);
    snapshot.sessions = Some(vec![SessionKeys {
        peer: NodeId(2),
        tx: None,
        rx: vec![key()],
    }]);
    rig.install(&snapshot);
    rig
}

/// Node 2's worker, sealing toward the gateway.
fn node_2(rig: &Rig) -> PeerSealer {
    let mut view = rig.snapshot(1, 2);
    view.local = NodeId(2);
    view.routes = vec![RouteSpec {
        dst: NodeId(1),
        via: NodeId(1),
    }];
    PeerSealer::new(
        &view,
        &Links::new(rig.peer, None),
        rig.gw_wan,
        NodeId(1),
        key(),
    )
    .unwrap()
}

/// Datagram `seq` from node 2's site to the gateway's host, sealed.
fn sealed(rig: &Rig, sealer: &PeerSealer, seq: u32) -> Vec<u8> {
    let inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 32, seq);
    sealer
        .sealed(&ethernet(rig.gw_lan, rig.peer, &inner))
        .unwrap()
}

/// Sends `frame` from the peer out of its TX queue `queue`.
fn send_on_queue(rig: &Rig, queue: u32, frame: &[u8]) {
    rig.net
        .peer
        .enter(|| {
            let mut generator = Generator::new(Method::AfXdp, "eth0", queue, vec![frame.to_vec()])?;
            generator.send(0, 1)
        })
        .unwrap()
        .unwrap();
}

/// The sequence numbers of the datagrams the host receives until it is
/// quiet for a moment.
fn arrived(host: &UdpSocket) -> Vec<u32> {
    host.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut seqs = Vec::new();
    while let Ok(n) = host.recv(&mut buf) {
        assert!(n >= 4);
        seqs.push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
    }
    seqs
}

/// What the worker on `queue` counted.
fn worker(stats: &Stats, queue: u32) -> (u64, u64) {
    let w = stats
        .workers
        .iter()
        .find(|w| w.queue == queue)
        .expect("a worker per queue");
    let replayed = w.counters.dropped.get("replayed").copied().unwrap_or(0);
    (w.counters.decapsulated, replayed)
}

#[test]
fn netns_a_frame_replayed_onto_the_other_queue_is_dropped_there() {
    let rig = gateway();
    let host = udp_socket(&rig.net.host, SocketAddr::new(HOST.into(), HOST_PORT));
    let sealer = node_2(&rig);
    let (first, second) = (sealed(&rig, &sealer, 1), sealed(&rig, &sealer, 2));

    // Each opened on one queue, then replayed onto the other.
    send_on_queue(&rig, 0, &first);
    send_on_queue(&rig, 1, &second);
    assert_eq!(arrived(&host), [1, 2], "each genuine frame, once");
    send_on_queue(&rig, 1, &first);
    send_on_queue(&rig, 0, &second);
    send_on_queue(&rig, 0, &first);
    assert_eq!(
        arrived(&host),
        Vec::<u32>::new(),
        "no replay reached the host"
    );

    let stats = rig.stats();
    assert_eq!(
        worker(&stats, 0),
        (1, 2),
        "queue 0: opened 1, dropped 2 replays"
    );
    assert_eq!(
        worker(&stats, 1),
        (1, 1),
        "queue 1: opened 1, dropped 1 replay"
    );
    assert_eq!(stats.total.dropped.len(), 1, "{:?}", stats.total.dropped);
}

#[test]
fn netns_frames_reordered_across_queues_inside_the_window_are_all_taken() {
    let rig = gateway();
    let host = udp_socket(&rig.net.host, SocketAddr::new(HOST.into(), HOST_PORT));
    let sealer = node_2(&rig);
    let frames: Vec<Vec<u8>> = (1..=4).map(|seq| sealed(&rig, &sealer, seq)).collect();

    // The newest first, the older ones after it on the other queue.
    send_on_queue(&rig, 0, &frames[3]);
    send_on_queue(&rig, 1, &frames[0]);
    send_on_queue(&rig, 1, &frames[2]);
    send_on_queue(&rig, 0, &frames[1]);
    let mut got = arrived(&host);
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3, 4], "every frame, once");
    let stats = rig.stats();
    assert_eq!(stats.total.decapsulated, 4);
    assert!(stats.total.dropped.is_empty(), "{:?}", stats.total.dropped);
}
