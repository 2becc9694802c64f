//! The classifier in the kernel: the verifier-accepted programs run on the
//! crafted case table with BPF_PROG_TEST_RUN, agree with the pure decision
//! functions on random frames, and, attached to veths in namespaces, hand
//! real packets to AF_XDP sockets or to the kernel's sockets; the
//! `detour-dataplane` binary attaches, refuses foreign programs, and leaves
//! nothing attached when stopped or killed.
//!
//! All of these need root (CAP_BPF, CAP_NET_ADMIN); they fail without it.

use std::net::{IpAddr, UdpSocket};
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::{TestRun, TestRunOptions, XdpMode};
use detour_common::classify::{Destination, WanVerdict, classify_wan, lan_destination};
use detour_common::maps::{Counter, NoSocket, XdpConfig};
use detour_common::wire::NodeId;
use detour_dataplane::xdp::{AttachMode, Classifier, Counters, PassProgram, Role};
use detour_testkit::classifier_cases::{PEERS, REMOTE_PREFIXES, is_peer, lan_cases, wan_cases};
use detour_testkit::frames::{self, OVERLAY_PORT, Rng, mutated, overlay_seeds};
use detour_testkit::{Netns, Process, require_root};
use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const ETH_HLEN: usize = 14;

/// Receive queues of the test interface; sockets sit on the first
/// `SOCKET_QUEUES` of them, the rest have none.
const QUEUES: u32 = 4;
const SOCKET_QUEUES: u32 = 2;

/// An AF_XDP socket on one queue, every frame of its UMEM offered to the
/// kernel for receiving.
struct Xsk {
    umem: Umem,
    descs: Vec<FrameDesc>,
    rx: RxQueue,
    _tx: TxQueue,
    _rings: (FillQueue, CompQueue),
}

impl Xsk {
    /// Binds a copy-mode socket to `queue` of `iface`, in the calling
    /// thread's namespace, without libxdp's own XDP program.
    fn bind(iface: &str, queue: u32) -> Xsk {
        let (umem, descs) =
            Umem::new(UmemConfig::default(), NonZeroU32::new(64).unwrap(), false).expect("UMEM");
        let config = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        // SAFETY: one socket per (UMEM, interface, queue); nothing shared.
        let (tx, rx, rings) = unsafe { Socket::new(config, &umem, &iface.parse().unwrap(), queue) }
            .unwrap_or_else(|e| panic!("AF_XDP socket on {iface} queue {queue}: {e}"));
        let (mut fill, comp) = rings.expect("the first socket of a UMEM gets its rings");
        // SAFETY: the descriptors are this UMEM's and not in any other ring.
        let offered = unsafe { fill.produce(&descs) };
        assert_eq!(offered, descs.len());
        Xsk {
            umem,
            descs,
            rx,
            _tx: tx,
            _rings: (fill, comp),
        }
    }

    /// The frames received within `timeout` (at most the UMEM's 64; this
    /// test socket does not recycle them).
    fn receive(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut descs = self.descs.clone();
        while Instant::now() < deadline {
            // SAFETY: descriptors filled by the RX ring are read only.
            let n = unsafe { self.rx.poll_and_consume(&mut descs, 10) }.expect("poll");
            for d in &descs[..n] {
                // SAFETY: the kernel wrote this frame and is done with it.
                frames.push(unsafe { self.umem.data(d) }.contents().to_vec());
            }
            if n == 0 && !frames.is_empty() {
                break;
            }
        }
        frames
    }
}

/// A namespace with a veth of [`QUEUES`] receive queues ("wan", peer
/// "wanp"), the classifier loaded with the table's peers and prefixes, and
/// sockets on the first [`SOCKET_QUEUES`] queues.
struct Bench {
    ns: Netns,
    ifindex: u32,
}

impl Bench {
    fn new() -> Bench {
        require_root();
        let ns = Netns::new("cls").unwrap();
        let q = QUEUES.to_string();
        ns.ip(&[
            "link",
            "add",
            "wan",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "wanp",
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])
        .unwrap();
        ns.ip(&["link", "set", "wan", "up"]).unwrap();
        ns.ip(&["link", "set", "wanp", "up"]).unwrap();
        let ifindex = ns
            .enter(|| detour_dataplane::xdp::iface::ifindex("wan"))
            .unwrap()
            .unwrap();
        Bench { ns, ifindex }
    }

    /// Runs `f` inside the namespace with a loaded classifier and its
    /// sockets.
    fn run<R: Send>(&self, config: XdpConfig, f: impl FnOnce(&mut Classifier) -> R + Send) -> R {
        self.ns
            .enter(|| {
                let mut classifier = Classifier::load(config).expect("load the classifier");
                let peers: Vec<(IpAddr, NodeId)> = PEERS.iter().map(|p| (*p, NodeId(1))).collect();
                classifier.set_peers(&peers).unwrap();
                let prefixes: Vec<_> = REMOTE_PREFIXES
                    .iter()
                    .map(|(p, n)| (p.parse().unwrap(), NodeId(*n)))
                    .collect();
                classifier.set_remote_prefixes(&prefixes).unwrap();
                let sockets: Vec<Xsk> = (0..SOCKET_QUEUES).map(|q| Xsk::bind("wan", q)).collect();
                for (q, s) in sockets.iter().enumerate() {
                    // Both programs see this interface in the test runs.
                    for role in [Role::Wan, Role::Lan] {
                        classifier
                            .register_socket(role, q as u32, s.rx.fd().as_raw_fd())
                            .unwrap();
                    }
                }
                f(&mut classifier)
            })
            .unwrap()
    }

    /// Runs `role`'s program once on `frame` as if received on `queue`;
    /// returns the action and the counters that moved.
    fn test_run(
        &self,
        classifier: &Classifier,
        role: Role,
        frame: &[u8],
        queue: u32,
    ) -> (u32, Counters) {
        let before = classifier.counters().unwrap();
        let action = self
            .try_test_run(classifier, role, frame, queue)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes: {e}", frame.len()));
        let moved = classifier.counters().unwrap().since(&before);
        (action, moved)
    }

    fn try_test_run(
        &self,
        classifier: &Classifier,
        role: Role,
        frame: &[u8],
        queue: u32,
    ) -> Result<u32, aya::programs::ProgramError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, self.ifindex, queue, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let result = classifier.program(role).unwrap().test_run(TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            ..TestRunOptions::default()
        })?;
        Ok(result.return_value)
    }
}

/// Whether `dst` lies in one of the table's remote prefixes.
fn is_remote(dst: Destination) -> bool {
    let addr = match dst {
        Destination::V4(a) => IpAddr::from(a),
        Destination::V6(a) => IpAddr::from(a),
    };
    REMOTE_PREFIXES
        .iter()
        .any(|(p, _)| p.parse::<ipnet::IpNet>().unwrap().contains(&addr))
}

/// The action and the one counter a frame must produce, given the pure
/// verdict, whether its queue has a socket, and the no-socket policy.
fn expected_wan(verdict: WanVerdict, socket: bool, no_socket: NoSocket) -> (u32, Counter) {
    match (verdict, socket, no_socket) {
        (WanVerdict::Overlay, true, _) => (XDP_REDIRECT, Counter::WanToWorker),
        (WanVerdict::Overlay, false, NoSocket::Pass) => (XDP_PASS, Counter::WanNoSocketPass),
        (WanVerdict::Overlay, false, NoSocket::Drop) => (XDP_DROP, Counter::WanNoSocketDrop),
        (WanVerdict::Pass, ..) => (XDP_PASS, Counter::WanPass),
        (WanVerdict::Drop(reason), ..) => (XDP_DROP, reason.into()),
    }
}

fn expected_lan(remote: bool, socket: bool, no_socket: NoSocket) -> (u32, Counter) {
    match (remote, socket, no_socket) {
        (true, true, _) => (XDP_REDIRECT, Counter::LanToWorker),
        (true, false, NoSocket::Pass) => (XDP_PASS, Counter::LanNoSocketPass),
        (true, false, NoSocket::Drop) => (XDP_DROP, Counter::LanNoSocketDrop),
        (false, ..) => (XDP_PASS, Counter::LanPass),
    }
}

/// Checks that exactly `counter` moved, by one frame of `len` bytes.
fn only_moved(moved: &Counters, counter: Counter, len: usize) -> Result<(), String> {
    let mut expected = Counters::default().nonzero();
    expected.push((counter.name(), 1));
    let got = moved.nonzero();
    if got != expected || moved.get(counter).bytes != len as u64 {
        return Err(format!(
            "counters moved {got:?} ({} bytes), expected {counter:?} by one frame of {len}",
            moved.get(counter).bytes
        ));
    }
    Ok(())
}

/// Every case of the table, on a queue with a socket and on one without,
/// under both no-socket policies: the action, the slot (redirect only where
/// the arrival queue's slot holds a socket) and the counter.
#[test]
fn bpf_table_every_case_gets_its_verdict_slot_and_counter() {
    let bench = Bench::new();
    let mut failures = Vec::new();
    let mut runs = 0;
    for no_socket in [NoSocket::Pass, NoSocket::Drop] {
        let config = XdpConfig::new(OVERLAY_PORT, no_socket);
        bench.run(config, |classifier| {
            for (i, case) in wan_cases().iter().enumerate() {
                if case.frame.len() < ETH_HLEN {
                    // No XDP program ever sees less than an Ethernet header:
                    // drivers discard such runts, and BPF_PROG_TEST_RUN
                    // refuses them. The pure tests cover these cases.
                    assert!(
                        bench
                            .try_test_run(classifier, Role::Wan, &case.frame, 0)
                            .is_err()
                    );
                    continue;
                }
                for queue in [i as u32 % SOCKET_QUEUES, SOCKET_QUEUES + i as u32 % 2] {
                    let socket = queue < SOCKET_QUEUES;
                    let (action, counter) = expected_wan(case.verdict, socket, no_socket);
                    let (got, moved) = bench.test_run(classifier, Role::Wan, &case.frame, queue);
                    runs += 1;
                    let result = if got != action {
                        Err(format!("action {got}, expected {action}"))
                    } else {
                        only_moved(&moved, counter, case.frame.len())
                    };
                    if let Err(e) = result {
                        failures.push(format!(
                            "WAN {:?} queue {queue} {no_socket:?}: {e}",
                            case.name
                        ));
                    }
                }
            }
            for (i, case) in lan_cases().iter().enumerate() {
                if case.frame.len() < ETH_HLEN {
                    assert!(
                        bench
                            .try_test_run(classifier, Role::Lan, &case.frame, 0)
                            .is_err()
                    );
                    continue;
                }
                for queue in [i as u32 % SOCKET_QUEUES, SOCKET_QUEUES + i as u32 % 2] {
                    let socket = queue < SOCKET_QUEUES;
                    let (action, counter) = expected_lan(case.remote, socket, no_socket);
                    let (got, moved) = bench.test_run(classifier, Role::Lan, &case.frame, queue);
                    runs += 1;
                    let result = if got != action {
                        Err(format!("action {got}, expected {action}"))
                    } else {
                        only_moved(&moved, counter, case.frame.len())
                    };
                    if let Err(e) = result {
                        failures.push(format!(
                            "LAN {:?} queue {queue} {no_socket:?}: {e}",
                            case.name
                        ));
                    }
                }
            }
        });
    }
    assert!(
        failures.is_empty(),
        "{} of {runs} runs wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(runs >= 4 * 40);
}

/// The kernel program and the pure function agree on damaged frames.
#[test]
fn bpf_kernel_programs_agree_with_the_pure_functions_on_random_frames() {
    const FRAMES: usize = 3000;
    let bench = Bench::new();
    let seeds = overlay_seeds();
    let mut rng = Rng::new(0x6465_746f_7572);
    let config = XdpConfig::new(OVERLAY_PORT, NoSocket::Pass);
    let mut overlay = 0;
    bench.run(config, |classifier| {
        for n in 0..FRAMES {
            let seed = &seeds[rng.below(seeds.len())];
            let edits: Vec<(usize, u8)> = (0..rng.below(4))
                .map(|_| (rng.below(usize::MAX), rng.next() as u8))
                .collect();
            let cut = if rng.below(2) == 0 {
                seed.len()
            } else {
                14 + rng.below(100)
            };
            let frame = mutated(seed, &edits, cut);

            let verdict = classify_wan(&frame[..], OVERLAY_PORT, is_peer);
            overlay += usize::from(verdict == WanVerdict::Overlay);
            let (action, counter) = expected_wan(verdict, true, NoSocket::Pass);
            let (got, moved) = bench.test_run(classifier, Role::Wan, &frame, 0);
            assert_eq!(
                got, action,
                "frame {n} {frame:02x?}: pure verdict {verdict:?}"
            );
            only_moved(&moved, counter, frame.len())
                .unwrap_or_else(|e| panic!("frame {n} {frame:02x?}: {e}"));

            let remote = lan_destination(&frame[..]).is_some_and(is_remote);
            let (lan_action, _) = expected_lan(remote, true, NoSocket::Pass);
            let (got, _) = bench.test_run(classifier, Role::Lan, &frame, 0);
            assert_eq!(got, lan_action, "LAN frame {n} {frame:02x?}");
        }
    });
    // The derived frames must exercise both sides of the decision.
    assert!(
        overlay > FRAMES / 20 && overlay < FRAMES / 2,
        "{overlay} of {FRAMES} frames were overlay data"
    );
}
