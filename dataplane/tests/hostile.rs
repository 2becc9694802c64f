//! Hostile traffic: the real daemons on the gateway of the test rig
//! (support/rig.rs) flooded on the WAN and the LAN with malformed frames at
//! the highest rate the frame generator gives, for a minute, while real
//! traffic flows both ways through them.
//!
//! The flood is every malformation of the classifier's test table
//! (`detour_testkit::classifier_cases`, all but the well-formed overlay
//! data), the overlay frames a worker must refuse, garbage on the control
//! port, and random bytes: behind a valid outer header, and raw. It comes
//! from the frame generator (`detour_dataplane::generator`: an AF_XDP TX
//! socket, or XDP live frames with `DETOUR_FRAME_GENERATOR=live-frames`),
//! from one thread pinned to one core,
//! taking turns between the peer (WAN) and the host (LAN); the other core
//! is the gateway's.
//!
//! What must hold: both daemons stay up and answer; real traffic arrives
//! in every second of the flood; every frame is accounted for (the
//! kernel's count of frames the XDP program ran on equals the sum of the
//! classifier's counters, what the generator sent reached the gateway or
//! was dropped at its receive ring, what the classifier handed to the
//! workers was received or dropped at the sockets, and a worker's
//! received = forwarded + answered + dropped by reason); and the
//! dataplane's memory does not grow.
//!
//! `DETOUR_HOSTILE_SECONDS` shortens (or lengthens) the flood for a quick
//! look; the suite runs the full minute.
//!
//! Needs root; fails without it.

#[path = "support/rig.rs"]
mod rig;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use detour_common::classify::WanVerdict;
use detour_common::maps::Counter;
use detour_common::wire::{EtherType, MacAddr};
use detour_dataplane::generator::{Generator, MIN_FRAME, Method};
use detour_testkit::classifier_cases::{lan_cases, wan_cases};
use detour_testkit::frames::{self, CONTROL_PORT, LOCAL_V4, PEER_V4, Rng};
use detour_testkit::{Family, Netns, Process, ScratchPath, ethtool, eventually, rss_kb};
use rig::*;

/// Real traffic each way, datagrams a second.
const REAL_RATE: u64 = 500;
/// Frames of one kind sent in a row.
const CHUNK: u32 = 4096;
/// Random frames of each kind.
const RANDOM_FRAMES: usize = 32;

fn flood_for() -> Duration {
    let secs = std::env::var("DETOUR_HOSTILE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// `frame` addressed to `mac`, so that the kernel takes in what the
/// classifier passes (the costlier case) rather than dropping it at once
/// as another host's.
fn to_mac(frame: &[u8], mac: MacAddr) -> Vec<u8> {
    let mut f = frame.to_vec();
    if f.len() >= 6 {
        f[..6].copy_from_slice(&mac.0);
    }
    f
}

fn random_bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// What the flood sends into the gateway's WAN, each with its name.
fn wan_flood(rig: &Rig, rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut flood: Vec<(String, Vec<u8>)> = wan_cases()
        .into_iter()
        .filter(|c| c.verdict != WanVerdict::Overlay)
        .map(|c| (c.name, to_mac(&c.frame, rig.gw_wan)))
        .collect();
    for (reason, f) in rig.frames_a_worker_refuses() {
        flood.push((format!("overlay a worker refuses ({reason})"), f));
    }
    let overlay = rig.overlay_to_gateway(2, 1, &[0x45; 60]);
    let udp_end = frames::layout(&overlay).geneve_offset;
    for i in 0..RANDOM_FRAMES {
        let len = 1 + rng.below(1514);
        flood.push((format!("random bytes {i}"), random_bytes(rng, len)));
        // Past the classifier's first checks: a peer's UDP to the overlay
        // port, GENEVE header and all after it random.
        let mut f = overlay[..udp_end].to_vec();
        let len = 8 + rng.below(200);
        f.extend(random_bytes(rng, len));
        flood.push((format!("random overlay payload {i}"), fix_lengths(f)));
        // Garbage for the control process.
        let mut f = frames::udp(
            PEER_V4.into(),
            LOCAL_V4.into(),
            CONTROL_PORT,
            CONTROL_PORT,
            16 + rng.below(300),
        );
        let payload = f.len() - 42;
        let garbage = random_bytes(rng, payload);
        f[42..].copy_from_slice(&garbage);
        flood.push((
            format!("random control message {i}"),
            to_mac(&f, rig.gw_wan),
        ));
    }
    flood
}

/// An Ethernet + IPv4 + UDP frame with its IP and UDP lengths set to its
/// size (checksums left wrong: the classifier does not check them).
fn fix_lengths(mut f: Vec<u8>) -> Vec<u8> {
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// What the flood sends into the gateway's LAN.
fn lan_flood(rig: &Rig, rng: &mut Rng) -> Vec<(String, Vec<u8>)> {
    let mut flood: Vec<(String, Vec<u8>)> = lan_cases()
        .into_iter()
        .filter(|c| !c.remote)
        .map(|c| (c.name, to_mac(&c.frame, rig.gw_lan)))
        .collect();
    // To a remote site with its TTL spent: the worker's to drop.
    let mut spent = datagram(HOST, SITE2_HOST, 1, 2, 10, 0);
    spent[8] = 1;
    detour_common::wire::Ipv4Packet::new_checked(&mut spent[..])
        .unwrap()
        .fill_checksum();
    flood.push((
        "remote, TTL spent".into(),
        ethernet(rig.gw_lan, rig.host, &spent),
    ));
    // To a remote site, cut short of its IP length.
    let whole = ethernet(
        rig.gw_lan,
        rig.host,
        &datagram(HOST, SITE2_HOST, 1, 2, 100, 0),
    );
    flood.push(("remote, cut short".into(), whole[..60].to_vec()));
    for i in 0..RANDOM_FRAMES {
        let len = 1 + rng.below(1514);
        flood.push((format!("random bytes {i}"), random_bytes(rng, len)));
        // An IPv4 header for a remote site, then random bytes.
        let mut f = whole[..34].to_vec();
        let len = rng.below(400);
        f.extend(random_bytes(rng, len));
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        flood.push((
            format!("remote, random payload {i}"),
            frames::ethernet_between(rig.host, rig.gw_lan, EtherType::IPV4, &f[14..]),
        ));
    }
    flood
}

/// The frames one generator sends, round after round, while it holds the
/// core; what it sent is added to `sent`.
fn generate(
    ns: &Netns,
    method: Method,
    flood: Vec<(String, Vec<u8>)>,
    core: &'static Mutex<()>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    // An empty frame cannot be sent (the kernel wants an Ethernet header);
    // the runts stand for it.
    let (names, frames): (Vec<String>, Vec<Vec<u8>>) = flood
        .into_iter()
        .filter(|(_, frame)| frame.len() >= MIN_FRAME)
        .unzip();
    ns.spawn(move || {
        assert!(
            core_affinity::set_for_current(core_affinity::CoreId { id: 0 }),
            "cannot pin the generator to CPU 0"
        );
        let mut generator = Generator::new(method, "eth0", 0, frames)
            .unwrap_or_else(|e| panic!("the {method} generator: {:#}", anyhow::Error::from(e)));
        'flood: loop {
            for (i, name) in names.iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break 'flood;
                }
                let _turn = core.lock().unwrap();
                generator
                    .send(i, CHUNK)
                    .unwrap_or_else(|e| panic!("sending {name:?}: {:#}", anyhow::Error::from(e)));
                sent.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
            }
        }
    })
    .unwrap()
}

/// Real traffic: numbered datagrams at [`REAL_RATE`] until `stop`; returns
/// how many the kernel took (`send` says whether it did).
fn paced(
    stop: Arc<AtomicBool>,
    mut send: impl FnMut(u32) -> bool + Send + 'static,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let (mut seq, mut sent) = (0u32, 0u32);
        while !stop.load(Ordering::Relaxed) {
            let due = start + Duration::from_nanos(u64::from(seq) * 1_000_000_000 / REAL_RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sent += u32::from(send(seq));
            seq += 1;
        }
        sent
    })
}

/// Arrival times of real traffic, by second since `start`.
#[derive(Default)]
struct Arrivals {
    per_second: BTreeMap<u64, u64>,
    seqs: std::collections::BTreeSet<u32>,
}

/// Receives real traffic on `socket` until `stop`; `seq_of` finds the
/// sequence number in a datagram.
fn receive(
    socket: UdpSocket,
    start: Instant,
    stop: Arc<AtomicBool>,
    seq_of: impl Fn(&[u8]) -> Option<u32> + Send + 'static,
) -> std::thread::JoinHandle<Arrivals> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut arrivals = Arrivals::default();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = socket.recv(&mut buf)
                && let Some(seq) = seq_of(&buf[..n])
            {
                *arrivals
                    .per_second
                    .entry(start.elapsed().as_secs())
                    .or_default() += 1;
                arrivals.seqs.insert(seq);
            }
        }
        arrivals
    })
}

/// The kernel's counts of one side of the gateway, read before the
/// traffic and after it.
struct SideCounts {
    /// Frames the gateway's interface received (for a veth with an XDP
    /// program: every frame the program ran on).
    rx_packets: u64,
    /// The sending veth's driver statistics (`ethtool -S`): the XDP frames
    /// it handed to the gateway's receive ring, and those the ring refused.
    driver: BTreeMap<String, u64>,
    /// The sending veth's `tx_dropped`: the frames of its own stack the
    /// full ring refused, and the refused XDP frames once more.
    tx_dropped: u64,
}

/// The counts of the side whose gateway interface is `iface`, fed by
/// `eth0` of `sender`.
fn side_counts(rig: &Rig, iface: &str, sender: &Netns) -> SideCounts {
    let stats64 = |ns: &Netns, dev: &str| -> serde_json::Value {
        let out = ns.ip(&["-j", "-s", "link", "show", "dev", dev]).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json[0]["stats64"].clone()
    };
    SideCounts {
        rx_packets: stats64(&rig.net.gw, iface)["rx"]["packets"]
            .as_u64()
            .unwrap(),
        driver: sender.enter(|| ethtool::stats("eth0")).unwrap().unwrap(),
        tx_dropped: stats64(sender, "eth0")["tx"]["dropped"].as_u64().unwrap(),
    }
}

/// The counts of the WAN side (fed by the peer) and the LAN side (by the
/// host).
fn sides(rig: &Rig) -> [SideCounts; 2] {
    [
        side_counts(rig, "wan", &rig.net.peer),
        side_counts(rig, "lan", &rig.net.host),
    ]
}

/// The XDP frames the sending veth handed to the gateway's receive ring,
/// and those the ring refused, from `before` to `after`.
fn xdp_xmit(before: &SideCounts, after: &SideCounts) -> (u64, u64) {
    let sum = |suffix: &str| -> u64 {
        after
            .driver
            .iter()
            .filter(|(name, _)| name.starts_with("tx_queue_") && name.ends_with(suffix))
            .map(|(name, n)| n - before.driver.get(name).copied().unwrap_or(0))
            .sum()
    };
    (sum("_xdp_xmit"), sum("_xdp_xmit_errors"))
}

/// The control process on the gateway, node 1, listening where the flood's
/// control garbage goes; it installs nothing (the rig's snapshot stays).
fn control(rig: &Rig, dir: &Path) -> (Process, std::path::PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    // Node 1's private key and node 2's public key: any 32 bytes are one.
    let key = dir.join("private.key");
    std::fs::write(&key, "ERERERERERERERERERERERERERERERERERERERERERE=\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let api = dir.join("control.sock");
    let config = dir.join("control.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\nprivate_key_file = \"private.key\"\nunderlay = \"{LOCAL_V4}\"\n\
             [control]\nlisten = \"{LOCAL_V4}:{CONTROL_PORT}\"\n\
             [[peers]]\nid = 2\nunderlay = \"{PEER_V4}\"\n\
             public_key = \"IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=\"\n\
             [dataplane]\ninstall = false\n[api]\nsocket = {api:?}\n"
        ),
    )
    .unwrap();
    // Another package's binary: `cargo test` at the workspace's root (as
    // scripts/test runs it) builds it next to this package's.
    let binary = Path::new(env!("CARGO_BIN_EXE_detour-dataplane")).with_file_name("detour-control");
    assert!(
        binary.exists(),
        "{} is not built: run the workspace's tests (scripts/test), or cargo build --bins first",
        binary.display()
    );
    let process = Process::spawn(
        rig.net
            .gw
            .command(&binary)
            .arg("-c")
            .arg(&config)
            .env("DETOUR_LOG", "warn")
            .stdout(Stdio::null()),
    )
    .unwrap();
    (process, api)
}

/// The control messages the control process dropped, by reason, from its
/// API (JSON lines; docs/operations.md).
fn control_rejected(api: &Path) -> Option<BTreeMap<String, u64>> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(api).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"{\"request\": \"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    let status: serde_json::Value = serde_json::from_str(&line).ok()?;
    serde_json::from_value(status["rejected"].clone()).ok()
}

#[test]
fn netns_a_minute_of_malformed_frames_at_full_rate_loses_no_real_traffic_and_no_count() {
    static CORE: Mutex<()> = Mutex::new(());
    // AF_XDP: about 4× the rate of live frames with this many kinds of frame
    // (docs/benchmarks.md), and it works on every kernel here.
    let generator = Method::choose(Method::AfXdp).unwrap();
    eprintln!("generator: {} ({})", generator.method, generator.why);
    let mut rig = Rig::up(Family::V4);
    let dir = ScratchPath::new("hostile");
    let (mut control, control_api) = control(&rig, dir.path());
    assert!(
        eventually(Duration::from_secs(10), || control_rejected(&control_api)
            .is_some()),
        "the control process never answered"
    );
    let mut rng = Rng::new(9);
    let wan = wan_flood(&rig, &mut rng);
    let lan = lan_flood(&rig, &mut rng);
    eprintln!("flood: {} WAN frames, {} LAN frames", wan.len(), lan.len());

    // Real traffic: host → site 2 (encapsulated, received by node 2's
    // overlay socket on the peer) and site 2 → host (decapsulated).
    let node2 = rig
        .net
        .peer
        .enter(|| UdpSocket::bind(SocketAddr::new(PEER_V4.into(), frames::OVERLAY_PORT)))
        .unwrap()
        .unwrap();
    let host_rx = rig
        .net
        .host
        .enter(|| UdpSocket::bind(SocketAddr::new(HOST.into(), HOST_PORT)))
        .unwrap()
        .unwrap();
    let host_tx = rig
        .net
        .host
        .enter(|| UdpSocket::bind(SocketAddr::new(HOST.into(), HOST_PORT + 1)))
        .unwrap()
        .unwrap();
    let peer_tx = rig.peer_socket();

    let before_sides = sides(&rig);
    let before = rig.stats();
    let stop_real = Arc::new(AtomicBool::new(false));
    let stop_flood = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    const PAYLOAD: usize = 64;
    // The flood's LAN frames for a remote site are encapsulated too: real
    // datagrams are told apart by their marker.
    const MARK: [u8; 8] = *b"detour!!";
    let encap_rx = receive(node2, start, stop_real.clone(), |d| {
        // GENEVE, its option, the inner IPv4 and UDP headers, then the
        // host's payload: the marker and the sequence number.
        let at = d.len().checked_sub(PAYLOAD)?;
        (d.get(at..at + 8)? == MARK)
            .then(|| u32::from_be_bytes(d[at + 8..at + 12].try_into().unwrap()))
    });
    let decap_rx = receive(host_rx, start, stop_real.clone(), |d| {
        Some(u32::from_be_bytes(d.get(..4)?.try_into().ok()?))
    });
    let site2 = SocketAddr::new(IpAddr::V4(SITE2_HOST), REMOTE_PORT);
    let encap_tx = paced(stop_real.clone(), move |seq| {
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&MARK);
        payload[8..12].copy_from_slice(&seq.to_be_bytes());
        host_tx.send_to(&payload, site2).is_ok()
    });
    let decap_frames: Vec<Vec<u8>> = (0..(REAL_RATE as u32 * (flood_for().as_secs() as u32 + 10)))
        .map(|seq| {
            let inner = datagram(SITE2_HOST, HOST, REMOTE_PORT, HOST_PORT, 16, seq);
            rig.overlay_to_gateway(2, 1, &inner)
        })
        .collect();
    let decap_tx = paced(stop_real.clone(), move |seq| {
        decap_frames
            .get(seq as usize)
            .is_some_and(|f| peer_tx.send(f).is_ok())
    });

    // A second of real traffic alone, then the flood.
    std::thread::sleep(Duration::from_secs(1));
    let flood_start = start.elapsed().as_secs() + 1;
    let wan_sent = Arc::new(AtomicU64::new(0));
    let lan_sent = Arc::new(AtomicU64::new(0));
    let generators = [
        generate(
            &rig.net.peer,
            generator.method,
            wan,
            &CORE,
            stop_flood.clone(),
            wan_sent.clone(),
        ),
        generate(
            &rig.net.host,
            generator.method,
            lan,
            &CORE,
            stop_flood.clone(),
            lan_sent.clone(),
        ),
    ];
    std::thread::sleep(Duration::from_secs(5));
    let rss_early = rss_kb(rig.dataplane.id()).unwrap();
    let control_rss_early = rss_kb(control.id()).unwrap();
    let mut samples = Vec::new();
    let flood_end = Instant::now() + flood_for() - Duration::from_secs(5);
    while Instant::now() < flood_end {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(rss_kb(rig.dataplane.id()).unwrap());
        assert!(
            matches!(rig.dataplane.child().try_wait(), Ok(None)),
            "the dataplane died under the flood"
        );
    }
    stop_flood.store(true, Ordering::Relaxed);
    for g in generators {
        g.join().expect("a generator failed");
    }
    let flood_secs = start.elapsed().as_secs();
    let rss_late = rss_kb(rig.dataplane.id()).unwrap();
    let control_rss_late = rss_kb(control.id()).unwrap();
    // A second of real traffic alone again, then let everything settle.
    std::thread::sleep(Duration::from_secs(1));
    stop_real.store(true, Ordering::Relaxed);
    let encap_sent = encap_tx.join().unwrap();
    let decap_sent = decap_tx.join().unwrap();
    let encap = encap_rx.join().unwrap();
    let decap = decap_rx.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stats = rig.stats();
    let after_sides = sides(&rig);
    let wan_sent = wan_sent.load(Ordering::Relaxed);
    let lan_sent = lan_sent.load(Ordering::Relaxed);

    // What happened: the details for a failure, the gist for the report.
    eprintln!("worker counters: {:#?}", stats.total);
    eprintln!("classifier: {:?}", stats.xdp);
    eprintln!("encapsulated per second: {:?}", encap.per_second);
    eprintln!("decapsulated per second: {:?}", decap.per_second);
    eprintln!("dataplane RSS samples (kB): {samples:?}");
    let rejected = control_rejected(&control_api);
    let secs = flood_for().as_secs_f64();
    let report = |line: String| detour_testkit::report(env!("CARGO_TARGET_TMPDIR"), &line);
    let refused = |i: usize| after_sides[i].tx_dropped - before_sides[i].tx_dropped;
    report(format!(
        "hostile traffic, {secs:.0} s, from {}: {:.3} Mpps of malformed frames into the WAN, {:.3} Mpps into the LAN \
         ({} and {} frames refused at the full receive ring); real traffic delivered: encapsulated {}/{encap_sent}, \
         decapsulated {}/{decap_sent}; dataplane RSS {rss_early} -> {rss_late} kB, control {control_rss_early} -> \
         {control_rss_late} kB; socket drops {:?}; control rejected {:?}",
        generator.method,
        wan_sent as f64 / secs / 1e6,
        lan_sent as f64 / secs / 1e6,
        refused(0),
        refused(1),
        encap.seqs.len(),
        decap.seqs.len(),
        stats.total.socket_dropped,
        rejected.as_ref().map(|r| r.values().sum::<u64>()),
    ));

    // Both daemons up and answering.
    assert!(
        matches!(rig.dataplane.child().try_wait(), Ok(None)),
        "the dataplane died"
    );
    let health = rig.client().health().unwrap();
    assert_eq!(health.workers_running, health.workers, "{health:?}");
    assert!(
        matches!(control.child().try_wait(), Ok(None)),
        "the control process died"
    );
    let rejected = rejected.expect("the control process answers");
    assert!(
        rejected.values().sum::<u64>() > 0,
        "the control process saw none of the garbage: {rejected:?}"
    );

    // Real traffic in every second of the flood, both ways. A worker's
    // receive ring under a flood drops real frames with the rest, and the
    // LAN flood reaches the worker far more than the WAN's (most of the
    // WAN's is passed to the kernel or dropped by the classifier). Ten
    // runs of this test on a 2-core machine (kernel 6.18.44-fc-v1272, the
    // AF_XDP generator, 0.27 Mpps into each side) delivered 81.4 to 84.5 %
    // encapsulated and 99.1 to 99.5 % decapsulated (docs/security.md);
    // with live frames, a lighter flood here (0.08 Mpps), 94.1 to 94.5 and
    // 99.97 % in three runs. The floors leave 6 and 4 points for a busier
    // machine.
    for (what, arrivals, sent, floor_percent) in [
        ("encapsulated", &encap, encap_sent, 75),
        ("decapsulated", &decap, decap_sent, 95),
    ] {
        let silent: Vec<u64> = (flood_start..flood_secs)
            .filter(|s| !arrivals.per_second.contains_key(s))
            .collect();
        assert!(
            silent.is_empty(),
            "no {what} traffic arrived in seconds {silent:?} of the flood"
        );
        let arrived = arrivals.seqs.len() as u64;
        assert!(
            arrived * 100 >= u64::from(sent) * floor_percent,
            "only {arrived} of {sent} {what} datagrams arrived, under {floor_percent} %"
        );
    }

    // Every frame accounted for. The kernel counts the frames the XDP
    // program ran on; the classifier moves one counter per frame.
    let xdp = |wan: bool| -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_wan() == wan)
            .map(|c| {
                let count =
                    |s: &detour_common::api::Stats| s.xdp.get(c.name()).copied().unwrap_or(0);
                count(&stats) - count(&before)
            })
            .sum()
    };
    // Everything offered to the sending veth was taken into the gateway's
    // receive ring or refused there (`tx_dropped` counts every refusal):
    // the generator's frames, the real traffic its kernel sent and a
    // little of the kernels' own (neighbour, ICMP). What was taken is what
    // the classifier saw, and it counted every frame the kernel says its
    // program ran on. With live frames, the driver also counts the
    // generator's frames on their own (`xdp_xmit`, `xdp_xmit_errors`), an
    // exact check of the generator's count; AF_XDP's frames travel as
    // skbs, among the rest.
    for (i, (what, generated, real)) in
        [("WAN", wan_sent, decap_sent), ("LAN", lan_sent, encap_sent)]
            .into_iter()
            .enumerate()
    {
        let (before_side, after_side) = (&before_sides[i], &after_sides[i]);
        let seen = xdp(i == 0);
        let xmit = xdp_xmit(before_side, after_side);
        let dropped = after_side.tx_dropped - before_side.tx_dropped;
        eprintln!(
            "{what}: generated {generated}, xdp_xmit {xmit:?}, real {real}, dropped {dropped}, classified {seen}"
        );
        assert_eq!(
            seen,
            after_side.rx_packets - before_side.rx_packets,
            "{what}: the classifier's counters and the kernel's frame count disagree"
        );
        if generator.method == Method::LiveFrames {
            assert_eq!(
                xmit.0 + xmit.1,
                generated,
                "{what}: the generator's count and the kernel's disagree"
            );
        }
        let offered = seen + dropped;
        let expected = generated + u64::from(real);
        assert!(
            (expected..expected + 1000).contains(&offered),
            "{what}: {seen} frames taken and {dropped} refused, for {generated} generated and {real} real"
        );
    }
    // These hold since the dataplane started.
    let to_workers =
        stats.xdp[Counter::WanToWorker.name()] + stats.xdp[Counter::LanToWorker.name()];
    let t = &stats.total;
    assert_eq!(
        to_workers,
        t.received + t.socket_dropped_total(),
        "handed to the workers = received + dropped at the sockets"
    );
    assert_eq!(
        t.received,
        t.forwarded() + t.answered + t.dropped_total() + t.holding,
        "received = forwarded + answered + dropped + held now"
    );
    // The worker's drops are the flood's (frames for hosts that never
    // answer fill the hold, and the rest overflow it: `unresolved`).
    for reason in [
        "malformed",
        "unreachable",
        "hop_limit",
        "ttl_expired",
        "unresolved",
    ] {
        assert!(
            t.dropped.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} drop: {t:?}"
        );
    }
    // Datagrams to the control port from addresses that are no node's
    // (the table's IPv6 ones: this rig's nodes are IPv4) stop at the WAN
    // program, counted by source; the peer's garbage reached the control
    // process (its rejects, above).
    let nodes: Vec<IpAddr> = rig
        .snapshot(1, 2)
        .nodes
        .iter()
        .map(|n| n.underlay)
        .collect();
    let strangers: Vec<IpAddr> = stats.control_strangers.iter().map(|s| s.addr).collect();
    assert!(
        strangers.contains(&IpAddr::V6(frames::STRANGER_V6))
            && strangers.iter().all(|s| !nodes.contains(s)),
        "the control port's strangers: {:?}",
        stats.control_strangers
    );

    // Memory: flat once the flood is on (within 1 %).
    let highest = samples.iter().copied().chain([rss_late]).max().unwrap();
    assert!(
        highest <= rss_early + rss_early / 100,
        "the dataplane grew from {rss_early} to {highest} kB under the flood"
    );
    assert!(
        control_rss_late <= control_rss_early + control_rss_early / 100,
        "the control process grew from {control_rss_early} to {control_rss_late} kB under the flood"
    );
}
