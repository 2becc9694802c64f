//! The AF_XDP socket layer on real traffic: frames the classifier redirects
//! arrive on the RX ring, go back out through the TX ring from an address
//! the worker chose inside the frame's headroom, complete, and return to
//! the fill ring.
//!
//! Needs root; fails without it.

mod support;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use detour_dataplane::xdp::Role;
use detour_dataplane::xsk::{BindMode, EMPTY, Umem};
use detour_testkit::frames;
use detour_testkit::{Gateway, Netns, require_root};

/// Swaps source and destination of Ethernet, IPv4 and UDP in place: the
/// datagram goes back where it came from.
///
/// The UDP checksum is cleared ("none", allowed over IPv4): a local sender
/// on a veth leaves only the pseudo-header's partial sum in the field
/// (checksum offload that no hardware completes), which AF_XDP hands over
/// as it is.
fn reflect(p: &mut [u8]) {
    for (a, b, n) in [(0, 6, 6), (26, 30, 4), (34, 36, 2)] {
        for i in 0..n {
            p.swap(a + i, b + i);
        }
    }
    p[40..42].fill(0);
}

#[test]
fn netns_frames_come_in_on_rx_and_leave_on_tx_from_the_headroom() {
    require_root();
    const DATAGRAMS: usize = 50;
    const SHIFT: usize = 64;
    let net = Gateway::up();
    let sender = net
        .peer
        .enter(|| UdpSocket::bind("192.0.2.1:6081"))
        .unwrap()
        .unwrap();
    sender
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let payload = frames::overlay_v4()[42..].to_vec();

    let echoed = net
        .gw
        .enter(|| {
            let mut classifier = support::wan_classifier();
            let mut umem = Umem::new(4096, 256, 128).unwrap();
            let mut socket = umem.socket("wan", 0, None).unwrap();
            assert_eq!(socket.mode(), BindMode::Copy, "veth has no zero-copy");
            classifier
                .register_socket(Role::Wan, 0, socket.fd())
                .unwrap();
            let addrs: Vec<u64> = umem.frame_addrs().collect();
            assert_eq!(socket.fill(&addrs), 128, "the fill ring takes what fits");

            // The peer sends only once the socket is ready.
            for _ in 0..DATAGRAMS {
                sender.send_to(&payload, "192.0.2.2:6081").unwrap();
            }

            let mut rx = [EMPTY; 64];
            let mut done = [0u64; 64];
            let mut echoed = 0;
            let mut completed = 0;
            let deadline = Instant::now() + Duration::from_secs(3);
            while echoed < DATAGRAMS && Instant::now() < deadline {
                socket.poll(10).unwrap();
                let n = socket.receive(&mut rx);
                for d in &mut rx[..n] {
                    let (frame, at) = umem.frame_mut(d.addr);
                    let len = d.len as usize;
                    assert!(at >= SHIFT, "at least {SHIFT} bytes of headroom, got {at}");
                    // Move the packet into the headroom, to send from there.
                    frame.copy_within(at..at + len, at - SHIFT);
                    reflect(&mut frame[at - SHIFT..at - SHIFT + len]);
                    d.addr -= SHIFT as u64;
                }
                assert_eq!(socket.transmit(&rx[..n]), n);
                echoed += n;
                socket.kick();
                let c = socket.complete(&mut done);
                completed += c;
                socket.fill(&done[..c]);
            }
            // Let the last transmissions complete and recycle them.
            let deadline = Instant::now() + Duration::from_secs(1);
            while completed < echoed && Instant::now() < deadline {
                socket.kick();
                let c = socket.complete(&mut done);
                completed += c;
                socket.fill(&done[..c]);
                if c == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            assert_eq!(socket.pending_transmit(), 0, "everything was sent");
            let counters = classifier.counters().unwrap();
            (echoed, completed, counters.nonzero())
        })
        .unwrap();
    assert_eq!(echoed.0, DATAGRAMS, "frames seen on the RX ring");
    assert_eq!(echoed.1, DATAGRAMS, "transmissions completed and refilled");
    assert_eq!(
        echoed.2,
        vec![(
            detour_common::maps::Counter::WanToWorker.name(),
            DATAGRAMS as u64
        )]
    );

    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        let (n, from) = sender
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("echo {i} never came back: {e}"));
        assert_eq!(&buf[..n], &payload[..]);
        assert_eq!(from.to_string(), "192.0.2.2:6081");
    }
}

/// RX packets counted by `iface`'s device in `ns`.
fn rx_packets(ns: &Netns, iface: &str) -> u64 {
    let stats = ns
        .exec(
            "cat",
            &[&format!("/sys/class/net/{iface}/statistics/rx_packets")],
        )
        .unwrap();
    String::from_utf8_lossy(&stats.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// One UMEM under the WAN and the LAN socket of a queue: a frame received
/// on the WAN leaves on the LAN without a copy, its completion arrives on
/// the LAN socket's completion ring and goes back to the WAN fill ring.
#[test]
fn netns_a_shared_umem_forwards_between_interfaces_without_copying() {
    require_root();
    const DATAGRAMS: usize = 40;
    let net = Gateway::up();
    let host_mac = net.host.mac("eth0").unwrap();
    let host_mac: Vec<u8> = host_mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    let sender = net
        .peer
        .enter(|| UdpSocket::bind("192.0.2.1:6081"))
        .unwrap()
        .unwrap();
    let payload = frames::overlay_v4()[42..].to_vec();
    let before = rx_packets(&net.host, "eth0");

    let (forwarded, recycled) = net
        .gw
        .enter(|| {
            let mut classifier = support::wan_classifier();
            let mut umem = Umem::new(4096, 256, 64).unwrap();
            let mut wan = umem.socket("wan", 0, Some(false)).unwrap();
            let mut lan = umem.socket("lan", 0, Some(false)).unwrap();
            classifier.register_socket(Role::Wan, 0, wan.fd()).unwrap();
            let addrs: Vec<u64> = umem.frame_addrs().collect();
            assert_eq!(wan.fill(&addrs[..64]), 64);
            assert_eq!(lan.fill(&addrs[64..128]), 64);

            for _ in 0..DATAGRAMS {
                sender.send_to(&payload, "192.0.2.2:6081").unwrap();
            }
            let mut rx = [EMPTY; 64];
            let mut done = [0u64; 64];
            let (mut forwarded, mut recycled) = (0, 0);
            let deadline = Instant::now() + Duration::from_secs(3);
            while recycled < DATAGRAMS && Instant::now() < deadline {
                wan.poll(10).unwrap();
                let n = wan.receive(&mut rx);
                for d in &rx[..n] {
                    let (frame, at) = umem.frame_mut(d.addr);
                    frame[at..at + 6].copy_from_slice(&host_mac);
                }
                assert_eq!(lan.transmit(&rx[..n]), n);
                forwarded += n;
                lan.kick();
                // Sent on the LAN, completed there, refilled on the WAN.
                let c = lan.complete(&mut done);
                assert_eq!(wan.fill(&done[..c]), c);
                recycled += c;
                assert_eq!(wan.complete(&mut done), 0, "nothing was sent on the WAN");
            }
            (forwarded, recycled)
        })
        .unwrap();
    assert_eq!((forwarded, recycled), (DATAGRAMS, DATAGRAMS));
    assert!(
        detour_testkit::eventually(Duration::from_secs(2), || rx_packets(&net.host, "eth0")
            - before
            == DATAGRAMS as u64),
        "the host's interface saw {} frames",
        rx_packets(&net.host, "eth0") - before
    );
}

/// The kernel lets go of a closed socket's queue in deferred work: a socket
/// bound right after, as a restarted worker's is, must wait for that rather
/// than fail with EBUSY.
#[test]
fn netns_a_queue_closed_a_moment_ago_can_be_bound_again() {
    require_root();
    let net = Gateway::up();
    net.gw
        .enter(|| {
            for round in 0..20 {
                let mut umem = Umem::new(4096, 64, 64).unwrap();
                let socket = umem
                    .socket("wan", 0, Some(false))
                    .unwrap_or_else(|e| panic!("bind {round}: {e}"));
                // The socket before its UMEM, as a worker drops them.
                drop(socket);
                drop(umem);
            }
        })
        .unwrap();
}
