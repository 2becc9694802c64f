//! The classifier in the kernel: the verifier-accepted programs run on the
//! crafted case table with BPF_PROG_TEST_RUN, agree with the pure decision
//! functions on random frames, and, attached to veths in namespaces, hand
//! real packets to AF_XDP sockets or to the kernel's sockets; the
//! `detour-dataplane` binary attaches, refuses foreign programs, and leaves
//! nothing attached when stopped or killed.
//!
//! All of these need root (CAP_BPF, CAP_NET_ADMIN); they fail without it.

mod support;

use std::io::Read;
use std::net::{IpAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, XdpMode};
use detour_common::classify::{
    self, Destination, DropReason, WanVerdict, classify_wan, lan_destination,
};
use detour_common::maps::{Counter, NoSocket, XdpConfig};
use detour_common::wire::NodeId;
use detour_dataplane::xdp::{AttachMode, Classifier, Counters, PassProgram, Role};
use detour_dataplane::xsk::Receiver;
use detour_testkit::classifier_cases::{PEERS, REMOTE_PREFIXES, is_peer, lan_cases, wan_cases};
use detour_testkit::frames::{self, CONTROL_PORT, OVERLAY_PORT, Rng, mutated, overlay_seeds};
use detour_testkit::{Gateway, Netns, Process, ScratchPath, eventually, require_root};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const ETH_HLEN: usize = 14;

/// Receive queues of the test interface; sockets sit on the first
/// `SOCKET_QUEUES` of them, the rest have none.
const QUEUES: u32 = 4;
const SOCKET_QUEUES: u32 = 2;

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
        ns.veth_with_queues("wan", &ns, "wanp", QUEUES).unwrap();
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
                let sockets: Vec<Receiver> = (0..SOCKET_QUEUES)
                    .map(|q| Receiver::bind("wan", q).unwrap())
                    .collect();
                for (q, s) in sockets.iter().enumerate() {
                    // Both programs see this interface in the test runs.
                    for role in [Role::Wan, Role::Lan] {
                        classifier.register_socket(role, q as u32, s.fd()).unwrap();
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

/// What the table says of a frame.
enum Case {
    Wan(WanVerdict),
    Lan { remote: bool },
}

impl Case {
    fn expected(&self, socket: bool, no_socket: NoSocket) -> (u32, Counter) {
        match *self {
            Case::Wan(verdict) => expected_wan(verdict, socket, no_socket),
            Case::Lan { remote } => expected_lan(remote, socket, no_socket),
        }
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
        let config = XdpConfig::new(OVERLAY_PORT, no_socket).with_control_port(CONTROL_PORT);
        bench.run(config, |classifier| {
            let wan = wan_cases()
                .into_iter()
                .map(|c| (Role::Wan, c.name, c.frame, Case::Wan(c.verdict)));
            let lan = lan_cases()
                .into_iter()
                .map(|c| (Role::Lan, c.name, c.frame, Case::Lan { remote: c.remote }));
            for (i, (role, name, frame, case)) in wan.chain(lan).enumerate() {
                if frame.len() < ETH_HLEN {
                    // No XDP program ever sees less than an Ethernet header:
                    // drivers discard such runts, and BPF_PROG_TEST_RUN
                    // refuses them. The pure tests cover these cases.
                    assert!(bench.try_test_run(classifier, role, &frame, 0).is_err());
                    continue;
                }
                for queue in [i as u32 % SOCKET_QUEUES, SOCKET_QUEUES + i as u32 % 2] {
                    let (action, counter) = case.expected(queue < SOCKET_QUEUES, no_socket);
                    let (got, moved) = bench.test_run(classifier, role, &frame, queue);
                    runs += 1;
                    let result = if got != action {
                        Err(format!("action {got}, expected {action}"))
                    } else {
                        only_moved(&moved, counter, frame.len())
                    };
                    if let Err(e) = result {
                        failures.push(format!("{role} {name:?} queue {queue} {no_socket:?}: {e}"));
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

/// Every datagram to the control port from a stranger is counted under its
/// source address, whatever wraps it; one from an IPv6 address that claims
/// to be an IPv4 peer (IPv4-mapped) is counted, but under no source (it
/// would read as that peer).
#[test]
fn bpf_strangers_on_the_control_port_are_counted_by_source() {
    let bench = Bench::new();
    let config = XdpConfig::new(OVERLAY_PORT, NoSocket::Pass).with_control_port(CONTROL_PORT);
    bench.run(config, |classifier| {
        let mut expected: std::collections::BTreeMap<IpAddr, u64> = Default::default();
        let mut forged = 0;
        for case in wan_cases() {
            if case.verdict != WanVerdict::Drop(DropReason::ControlStranger) {
                continue;
            }
            let (action, moved) = bench.test_run(classifier, Role::Wan, &case.frame, 0);
            assert_eq!(action, XDP_DROP, "{}", case.name);
            only_moved(&moved, Counter::DropControlStranger, case.frame.len())
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            match classify::outer_source(&case.frame[..]) {
                Some(key) => *expected.entry(IpAddr::from(key)).or_default() += 1,
                None => forged += 1,
            }
        }
        let counted: std::collections::BTreeMap<IpAddr, u64> = classifier
            .control_strangers()
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(counted, expected);
        assert!(
            expected.len() >= 2 && forged == 1,
            "{expected:?}, {forged} forged"
        );
    });
}

/// The kernel program and the pure function agree on damaged frames.
#[test]
fn bpf_kernel_programs_agree_with_the_pure_functions_on_random_frames() {
    const FRAMES: usize = 3000;
    let bench = Bench::new();
    let seeds = overlay_seeds();
    let mut rng = Rng::new(0x6465_746f_7572);
    let config = XdpConfig::new(OVERLAY_PORT, NoSocket::Pass).with_control_port(CONTROL_PORT);
    let mut overlay = 0;
    bench.run(config, |classifier| {
        for n in 0..FRAMES {
            let seed = &seeds[rng.below(seeds.len())];
            let edits: Vec<(usize, u8)> = (0..rng.below(4))
                .map(|_| (rng.below(usize::MAX), rng.next_u64() as u8))
                .collect();
            let cut = if rng.below(2) == 0 {
                seed.len()
            } else {
                14 + rng.below(100)
            };
            let frame = mutated(seed, &edits, cut);

            let verdict = classify_wan(&frame[..], OVERLAY_PORT, CONTROL_PORT, is_peer);
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

fn bind_udp(ns: &Netns, addr: &str) -> UdpSocket {
    let socket = ns.enter(|| UdpSocket::bind(addr)).unwrap().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Sends `count` datagrams of `payload` from `from` to `to`; with `echo`,
/// waits for each to reach it first (in native mode veth hands sockets
/// page-sized buffers, and a burst would overflow the receive buffer).
fn send(from: &UdpSocket, to: &str, payload: &[u8], count: usize, echo: Option<&UdpSocket>) {
    let mut buf = [0u8; 2048];
    for i in 0..count {
        from.send_to(payload, to).unwrap();
        if let Some(receiver) = echo {
            let (n, _) = receiver
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("datagram {i} to {to} never reached its socket: {e}"));
            assert_eq!(&buf[..n], payload);
        }
    }
}

/// Real packets through an attached classifier: overlay data from the peer
/// and LAN traffic for a remote prefix reach the AF_XDP sockets; control
/// traffic and local LAN traffic reach the kernel's sockets; strangers and
/// malformed overlay frames are dropped; the counters say exactly that.
fn real_packets_go_where_classified(mode: AttachMode) {
    const OVERLAY: usize = 20;
    const OTHER: usize = 10;
    let net = Gateway::up();
    let mut classifier = Classifier::load(XdpConfig::new(OVERLAY_PORT, NoSocket::Pass)).unwrap();
    let (mut wan_xsk, mut lan_xsk) = net
        .gw
        .enter(|| {
            for (role, iface) in [(Role::Wan, "wan"), (Role::Lan, "lan")] {
                let a = classifier.attach(role, iface, mode, false).unwrap();
                assert_eq!(a.mode, mode, "{iface} runs in the mode asked for");
            }
            classifier
                .set_peers(&[("192.0.2.1".parse().unwrap(), NodeId(1))])
                .unwrap();
            classifier
                .set_remote_prefixes(&[("10.2.0.0/16".parse().unwrap(), NodeId(2))])
                .unwrap();
            let wan = Receiver::bind("wan", 0).unwrap();
            let lan = Receiver::bind("lan", 0).unwrap();
            classifier.register_socket(Role::Wan, 0, wan.fd()).unwrap();
            classifier.register_socket(Role::Lan, 0, lan.fd()).unwrap();
            (wan, lan)
        })
        .unwrap();
    let expected_mode = match mode {
        AttachMode::Native => "prog/xdp",
        AttachMode::Skb => "xdpgeneric",
    };
    assert!(net.gw.link_details("wan").unwrap().contains(expected_mode));

    // The UDP payload of an overlay frame: GENEVE, the option, the inner packet.
    let geneve = frames::overlay_v4()[42..].to_vec();
    let mut bad_version = geneve.clone();
    bad_version[0] |= 0x40;
    let control = bind_udp(&net.gw, "192.0.2.2:6082");
    let local = bind_udp(&net.gw, "10.1.0.1:7000");
    let peer = bind_udp(&net.peer, "192.0.2.1:6081");
    let stranger = bind_udp(&net.peer, "192.0.2.99:6081");
    let host = bind_udp(&net.host, "10.1.0.5:40000");

    send(&peer, "192.0.2.2:6081", &geneve, OVERLAY, None);
    send(&peer, "192.0.2.2:6082", b"probe", OTHER, Some(&control));
    send(&stranger, "192.0.2.2:6081", &geneve, 3, None);
    send(&peer, "192.0.2.2:6081", &bad_version, 1, None);
    send(&host, "10.2.0.9:5000", b"to a remote site", OVERLAY, None);
    send(
        &host,
        "10.1.0.1:7000",
        b"to the gateway",
        OTHER,
        Some(&local),
    );

    let wan_frames = wan_xsk.receive(Duration::from_secs(2));
    assert_eq!(
        wan_frames.len(),
        OVERLAY,
        "overlay frames on the WAN socket"
    );
    for f in &wan_frames {
        assert_eq!(&f[42..], &geneve[..], "the whole overlay frame, untouched");
        assert_eq!(&f[26..30], &[192, 0, 2, 1], "from the peer");
    }
    let lan_frames = lan_xsk.receive(Duration::from_secs(2));
    assert_eq!(
        lan_frames.len(),
        OVERLAY,
        "remote-site frames on the LAN socket"
    );
    for f in &lan_frames {
        assert_eq!(&f[30..34], &[10, 2, 0, 9]);
        assert_eq!(&f[42..], b"to a remote site");
    }

    let counters = classifier.counters().unwrap();
    let packets = |c| counters.get(c).packets;
    assert_eq!(
        [
            Counter::WanToWorker,
            Counter::WanPass,
            Counter::DropUnknownPeer,
            Counter::DropGeneveVersion,
            Counter::LanToWorker,
            Counter::LanPass,
        ]
        .map(packets),
        [OVERLAY, OTHER, 3, 1, OVERLAY, OTHER].map(|n| n as u64),
        "{:?}",
        counters.nonzero()
    );
    assert_eq!(counters.nonzero().len(), 6, "{:?}", counters.nonzero());

    drop(classifier);
    assert!(!net.gw.xdp_attached("wan") && !net.gw.xdp_attached("lan"));
}

#[test]
fn netns_real_packets_go_where_classified_in_native_mode() {
    real_packets_go_where_classified(AttachMode::Native);
}

#[test]
fn netns_real_packets_go_where_classified_in_skb_mode() {
    real_packets_go_where_classified(AttachMode::Skb);
}

/// A gateway namespace with "wan" and "lan" veths (peers in a second
/// namespace), for the binary's tests.
fn two_links() -> (Netns, Netns) {
    require_root();
    let gw = Netns::new("bin").unwrap();
    let far = Netns::new("far").unwrap();
    gw.veth("wan", &far, "wanp").unwrap();
    gw.veth("lan", &far, "lanp").unwrap();
    (gw, far)
}

/// The `detour-dataplane` binary in `ns`; its log discarded unless the test
/// pipes it.
fn dataplane(ns: &Netns, api: &ScratchPath, args: &[&str]) -> Command {
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_detour-dataplane"));
    // An API socket of its own: tests run side by side.
    cmd.args(["--node-id", "1", "--api-socket"])
        .arg(api.path())
        .args(args)
        .env("DETOUR_LOG", "info")
        .stderr(Stdio::null());
    cmd
}

fn signal(process: &Process, signal: i32) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(process.id() as i32, signal) }, 0);
}

#[test]
fn netns_binary_detaches_on_sigterm_and_sigint_and_the_kernel_on_sigkill() {
    let api = ScratchPath::new("api");
    let (gw, _far) = two_links();
    let attached = || gw.xdp_attached("wan") && gw.xdp_attached("lan");
    let detached = || !gw.xdp_attached("wan") && !gw.xdp_attached("lan");
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL] {
        let mut process =
            Process::spawn(&mut dataplane(&gw, &api, &["--wan", "wan", "--lan", "lan"])).unwrap();
        assert!(
            eventually(Duration::from_secs(10), attached),
            "the dataplane attached nothing"
        );
        assert!(gw.link_details("wan").unwrap().contains("name detour_wan"));
        assert!(gw.link_details("lan").unwrap().contains("name detour_lan"));
        signal(&process, sig);
        let status = process.child().wait().unwrap();
        if sig == libc::SIGKILL {
            assert!(!status.success());
        } else {
            assert!(status.success(), "exit after signal {sig}: {status}");
        }
        assert!(
            eventually(Duration::from_secs(2), detached),
            "XDP still attached after signal {sig}:\n{}",
            gw.link_details("wan").unwrap()
        );
    }
}

#[test]
fn netns_binary_refuses_a_foreign_program_unless_told_to_replace_it() {
    let api = ScratchPath::new("api");
    let (gw, _far) = two_links();
    let mut foreign = PassProgram::load().unwrap();
    gw.enter(|| foreign.attach("wan", XdpMode::Skb))
        .unwrap()
        .unwrap();

    let out = dataplane(&gw, &api, &["--wan", "wan"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("interface \"wan\" already carries XDP program \"detour_pass\"")
            && stderr.contains("skb mode")
            && stderr.contains("--xdp-replace"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, no backtrace: {stderr}"
    );
    assert!(gw.link_details("wan").unwrap().contains("name detour_pass"));

    let process = Process::spawn(&mut dataplane(
        &gw,
        &api,
        &["--wan", "wan", "--xdp-replace"],
    ))
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gw
            .link_details("wan")
            .unwrap()
            .contains("name detour_wan")),
        "{}",
        gw.link_details("wan").unwrap()
    );
    assert!(!gw.link_details("wan").unwrap().contains("detour_pass"));
    drop(process);
    drop(foreign);
    assert!(eventually(Duration::from_secs(2), || !gw.xdp_attached("wan")));
}

#[test]
fn netns_binary_falls_back_to_skb_mode_when_native_is_refused() {
    let api = ScratchPath::new("api");
    let (gw, far) = two_links();
    // veth refuses native XDP when its peer's MTU exceeds a page.
    far.ip(&["link", "set", "wanp", "mtu", "9000"]).unwrap();
    let mut cmd = dataplane(&gw, &api, &["--wan", "wan"]);
    cmd.stderr(Stdio::piped());
    let mut process = Process::spawn(&mut cmd).unwrap();
    assert!(eventually(Duration::from_secs(10), || gw.xdp_attached("wan")));
    assert!(gw.link_details("wan").unwrap().contains("xdpgeneric"));
    signal(&process, libc::SIGTERM);
    assert!(process.child().wait().unwrap().success());
    let mut stderr = String::new();
    process
        .child()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("WARN") && stderr.contains("the driver refused native XDP"),
        "{stderr}"
    );
    assert!(stderr.contains("mode=skb"), "{stderr}");
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays within it;
    // sched_setaffinity(0, ..) changes only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Real frames that arrive on receive queue q reach the socket in slot q
/// and no other: the sender's CPU picks its transmit queue (XPS), which veth
/// maps to the same receive queue on the other side.
#[test]
fn netns_frames_reach_the_socket_of_their_receive_queue() {
    require_root();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs 2 CPUs to steer frames to 2 queues; the machine has {cpus}"
    );
    let gw = Netns::new("mq").unwrap();
    let peer = Netns::new("mqpeer").unwrap();
    for ns in [&gw, &peer] {
        ns.quiet().unwrap();
    }
    gw.ip(&[
        "link",
        "add",
        "wan",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "numtxqueues",
        "2",
        "numrxqueues",
        "2",
        "netns",
        peer.name(),
    ])
    .unwrap();
    gw.ip(&["link", "set", "wan", "up"]).unwrap();
    peer.ip(&["link", "set", "eth0", "up"]).unwrap();
    gw.ip(&["addr", "add", "192.0.2.2/24", "dev", "wan"])
        .unwrap();
    peer.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"])
        .unwrap();
    peer.static_neighbour("eth0", "192.0.2.2", &gw.mac("wan").unwrap())
        .unwrap();
    for q in 0..2 {
        let xps = format!("/sys/class/net/eth0/queues/tx-{q}/xps_cpus");
        peer.exec("sh", &["-c", &format!("echo {} > {xps}", 1 << q)])
            .unwrap();
    }

    let (classifier, mut sockets) = gw
        .enter(|| {
            let mut classifier = support::wan_classifier();
            let sockets: Vec<Receiver> =
                (0..2).map(|q| Receiver::bind("wan", q).unwrap()).collect();
            for (q, s) in sockets.iter().enumerate() {
                classifier
                    .register_socket(Role::Wan, q as u32, s.fd())
                    .unwrap();
            }
            (classifier, sockets)
        })
        .unwrap();

    let geneve = frames::overlay_v4()[42..].to_vec();
    for queue in 0..2usize {
        peer.enter(|| {
            pin_to(queue);
            let sender = UdpSocket::bind("192.0.2.1:6081").unwrap();
            for _ in 0..5 {
                sender.send_to(&geneve, "192.0.2.2:6081").unwrap();
            }
        })
        .unwrap();
        let received: Vec<usize> = sockets
            .iter_mut()
            .map(|s| s.receive(Duration::from_millis(500)).len())
            .collect();
        let mut expected = vec![0, 0];
        expected[queue] = 5;
        assert_eq!(
            received, expected,
            "frames sent on queue {queue}, per socket"
        );
    }
    let counters = classifier.counters().unwrap();
    assert_eq!(counters.nonzero(), vec![(Counter::WanToWorker.name(), 10)]);
}

/// Installing a new peer list or prefix set replaces the old one: entries
/// only in the old set stop matching, entries in both or only in the new one
/// match.
#[test]
fn bpf_peer_and_prefix_updates_replace_the_installed_sets() {
    let bench = Bench::new();
    let config = XdpConfig::new(OVERLAY_PORT, NoSocket::Pass);
    bench.run(config, |classifier| {
        let from = |src: &str| {
            let src: IpAddr = src.parse().unwrap();
            let dst: IpAddr = match src {
                IpAddr::V4(_) => frames::LOCAL_V4.into(),
                IpAddr::V6(_) => frames::LOCAL_V6.into(),
            };
            frames::overlay(src, dst, 64)
        };
        let to =
            |dst: &str| frames::udp("10.1.0.5".parse().unwrap(), dst.parse().unwrap(), 1, 2, 8);
        let wan = |c: &Classifier, frame: &[u8]| bench.test_run(c, Role::Wan, frame, 0).0;
        let lan = |c: &Classifier, frame: &[u8]| bench.test_run(c, Role::Lan, frame, 0).0;

        // Installed by `run`: 192.0.2.1 and 2001:db8::1; 10.2.0.0/16 and more.
        assert_eq!(wan(classifier, &from("192.0.2.1")), XDP_REDIRECT);
        assert_eq!(lan(classifier, &to("10.2.3.4")), XDP_REDIRECT);

        let peers = [
            ("2001:db8::1".parse().unwrap(), NodeId(1)),
            ("192.0.2.50".parse().unwrap(), NodeId(5)),
        ];
        classifier.set_peers(&peers).unwrap();
        classifier
            .set_remote_prefixes(&[
                ("10.2.3.0/24".parse().unwrap(), NodeId(2)),
                ("10.9.0.0/16".parse().unwrap(), NodeId(9)),
                ("2001:db8:2::/48".parse().unwrap(), NodeId(2)),
            ])
            .unwrap();
        assert_eq!(
            wan(classifier, &from("192.0.2.1")),
            XDP_DROP,
            "removed peer"
        );
        assert_eq!(
            wan(classifier, &from("2001:db8::1")),
            XDP_REDIRECT,
            "kept peer"
        );
        assert_eq!(
            wan(classifier, &from("192.0.2.50")),
            XDP_REDIRECT,
            "added peer"
        );
        assert_eq!(
            lan(classifier, &to("10.2.3.4")),
            XDP_REDIRECT,
            "kept by the new /24"
        );
        assert_eq!(
            lan(classifier, &to("10.2.4.4")),
            XDP_PASS,
            "only the removed /16 had it"
        );
        assert_eq!(
            lan(classifier, &to("198.51.100.7")),
            XDP_PASS,
            "removed /32"
        );
        assert_eq!(
            lan(classifier, &to("10.9.200.1")),
            XDP_REDIRECT,
            "added /16"
        );

        // A worker that goes takes its socket out of the map: its queue's
        // frames then meet the no-socket policy (pass, here).
        classifier.unregister_socket(Role::Wan, 0).unwrap();
        assert_eq!(wan(classifier, &from("192.0.2.50")), XDP_PASS);

        classifier.set_peers(&[]).unwrap();
        classifier.set_remote_prefixes(&[]).unwrap();
        assert_eq!(wan(classifier, &from("2001:db8::1")), XDP_DROP);
        assert_eq!(lan(classifier, &to("10.9.200.1")), XDP_PASS);
    });
}
