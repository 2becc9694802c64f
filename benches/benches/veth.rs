//! Forwarding throughput on the veth testbed: an AF_XDP generator, the
//! dataplane, a sink, and Linux's own IP forwarding on the same wires as
//! the baseline, all in one invocation (the machines are shared and noisy,
//! so only ratios within a run mean much).
//!
//! ```text
//!   peer 192.0.2.1, .99 ── wan [gw: detour-dataplane, node 1] lan ── host 10.1.0.5
//! ```
//!
//! | path   | generator        | sink      | what the gateway does                |
//! | ------ | ---------------- | --------- | ------------------------------------ |
//! | ceiling | host            | gateway   | nothing: drops at ingress            |
//! | kernel | host             | peer      | Linux IP forwarding, no XDP attached |
//! | encap  | host             | peer      | LAN frame → overlay to node 2        |
//! | decap  | peer (node 2)    | host      | overlay for node 1 → LAN frame       |
//! | relay  | peer (node 3)    | peer      | overlay for node 2, out the WAN again |
//!
//! The generator is a copy-mode AF_XDP transmitter pinned to CPU 0 and the
//! dataplane's one worker is pinned to CPU 1, as in ENVIRONMENT.md's raw
//! figures. The sinks drop at ingress (nftables, netdev family), counted by
//! the interface's receive counter. 64-byte frames from the generator.
//!
//! `cargo bench -p detour-benches --bench veth [-- --seconds S --runs N]`,
//! as root. Prints a Markdown table; results go in docs/benchmarks.md.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use detour_common::api::{Client, Stats};
use detour_common::wire::{DetourOptionRepr, EncapRepr, EtherType, NodeId, Underlay};
use detour_dataplane::config::ConfigFile;
use detour_dataplane::daemon;
use detour_dataplane::xsk::{Desc, Umem};
use detour_testkit::frames::{self, OVERLAY_PORT};
use detour_testkit::{Family, Gateway, Netns, ScratchPath, eventually, require_root};

/// The generator's IP packets: 50 bytes, a 64-byte frame (the size the
/// usual figures quote) behind the 14-byte Ethernet header. (`frames::udp`
/// builds a whole Ethernet frame; its IP packet is what is used.)
const INNER_LEN: usize = 50;
const GENERATOR_CPU: usize = 0;
/// The baseline the dataplane's rates are divided by.
const KERNEL: &str = "kernel IP forwarding";
const WORKER_CPU: usize = 1;

fn main() {
    require_root();
    let (seconds, runs) = arguments();
    let net = Gateway::up();
    let (gw, peer, host) = (&net.gw, &net.peer, &net.host);
    for ns in [peer, host] {
        drop_at_ingress(ns, "eth0");
    }
    // The dataplane's table needs node 3's and the host's MACs too.
    let peer_mac = peer.mac_addr("eth0").unwrap();
    let host_mac = host.mac_addr("eth0").unwrap();
    gw.static_neighbour("wan", "192.0.2.99", &peer_mac.to_string())
        .unwrap();
    gw.static_neighbour("lan", "10.1.0.5", &host_mac.to_string())
        .unwrap();
    let gw_lan = gw.mac_addr("lan").unwrap();
    let gw_wan = gw.mac_addr("wan").unwrap();

    let host_to = |dst: Ipv4Addr| {
        let ip = frames::udp(
            Ipv4Addr::new(10, 1, 0, 5).into(),
            dst.into(),
            40000,
            7000,
            INNER_LEN - 28,
        );
        frames::ethernet_between(host_mac, gw_lan, EtherType::IPV4, &ip[14..])
    };
    let overlay_from = |node: u16, src: Ipv4Addr, dst_node: u16, inner_dst: Ipv4Addr| {
        let inner = frames::udp(
            Ipv4Addr::new(10, 2, 0, 7).into(),
            inner_dst.into(),
            40000,
            7000,
            INNER_LEN - 28,
        );
        let repr = EncapRepr {
            src_mac: peer_mac,
            dst_mac: gw_wan,
            underlay: Underlay::V4 {
                src,
                dst: Ipv4Addr::new(192, 0, 2, 2),
            },
            ttl: 64,
            dst_port: OVERLAY_PORT,
            vni: 0,
            option: DetourOptionRepr {
                src: NodeId(node),
                dst: NodeId(dst_node),
                hop_limit: 4,
                flags: 0,
            },
        };
        frames::encapsulate(&repr, &inner[14..])
    };

    // The ceiling: what the generator gets into the gateway at all, the
    // gateway dropping it at ingress.
    let mut results = Vec::new();
    drop_at_ingress(gw, "lan");
    results.push(measure(
        "generator only (gateway drops)",
        (host, &host_to(Ipv4Addr::new(192, 0, 2, 1))),
        (gw, "lan"),
        None,
        seconds,
        runs,
    ));
    let out = gw.exec("nft", &["delete table netdev sink"]).unwrap();
    assert!(out.status.success(), "nft delete: {out:?}");

    gw.sysctl("net.ipv4.ip_forward", "1").unwrap();
    results.push(measure(
        KERNEL,
        (host, &host_to(Ipv4Addr::new(192, 0, 2, 1))),
        (peer, "eth0"),
        None,
        seconds,
        runs,
    ));
    gw.sysctl("net.ipv4.ip_forward", "0").unwrap();

    let cases = [
        (
            "dataplane encap",
            host,
            host_to(Ipv4Addr::new(10, 2, 0, 7)),
            peer,
        ),
        (
            "dataplane decap",
            peer,
            overlay_from(
                2,
                Ipv4Addr::new(192, 0, 2, 1),
                1,
                Ipv4Addr::new(10, 1, 0, 5),
            ),
            host,
        ),
        (
            "dataplane relay",
            peer,
            overlay_from(
                3,
                Ipv4Addr::new(192, 0, 2, 99),
                2,
                Ipv4Addr::new(10, 2, 0, 8),
            ),
            peer,
        ),
    ];
    for (name, from, frame, sink) in cases {
        let dataplane = Dataplane::start(gw);
        results.push(measure(
            name,
            (from, &frame),
            (sink, "eth0"),
            Some(&dataplane),
            seconds,
            runs,
        ));
    }
    report(&results, seconds, runs);
}

/// `--seconds S` (per run, default 3) and `--runs N` (default 3); cargo's
/// own `--bench` and anything else are ignored.
fn arguments() -> (f64, usize) {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{flag} takes a number"))
            })
    };
    let seconds = value("--seconds").unwrap_or(3.0);
    let runs = value("--runs").map_or(3, |r: f64| r as usize).max(1);
    (seconds, runs)
}

/// What one path measured: the medians of its runs.
struct PathResult {
    name: &'static str,
    offered_pps: f64,
    forwarded_pps: f64,
    busy: [f64; 2],
    /// Frames the dataplane received and dropped, by reason (all runs).
    dropped: Vec<(String, u64)>,
    /// The worker's time per batch, p50 and p99, in µs.
    latency_us: Option<(f64, f64)>,
}

fn measure(
    name: &'static str,
    (from, frame): (&Netns, &[u8]),
    (sink, sink_iface): (&Netns, &str),
    dataplane: Option<&Dataplane>,
    seconds: f64,
    runs: usize,
) -> PathResult {
    let sent = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let mut offered = Vec::new();
    let mut forwarded = Vec::new();
    let mut busy = Vec::new();
    std::thread::scope(|s| {
        let generator = s.spawn(|| {
            from.enter(|| generate("eth0", frame, &sent, &stop))
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: generator: {e}"))
        });
        // Warm up: caches, the neighbour entries, NAPI.
        std::thread::sleep(Duration::from_secs(1));
        for _ in 0..runs {
            let (s0, r0, c0, t0) = (
                sent.load(Ordering::Relaxed),
                rx_packets(sink, sink_iface),
                cpu_times(),
                Instant::now(),
            );
            std::thread::sleep(Duration::from_secs_f64(seconds));
            let (s1, r1, c1, elapsed) = (
                sent.load(Ordering::Relaxed),
                rx_packets(sink, sink_iface),
                cpu_times(),
                t0.elapsed().as_secs_f64(),
            );
            offered.push((s1 - s0) as f64 / elapsed);
            forwarded.push((r1 - r0) as f64 / elapsed);
            busy.push([busy_share(&c0[0], &c1[0]), busy_share(&c0[1], &c1[1])]);
        }
        stop.store(true, Ordering::Relaxed);
        generator.join().unwrap();
    });
    let stats = dataplane.map(Dataplane::stats);
    let median_of = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut busy0: Vec<f64> = busy.iter().map(|b| b[0]).collect();
    let mut busy1: Vec<f64> = busy.iter().map(|b| b[1]).collect();
    PathResult {
        name,
        offered_pps: median_of(&mut offered),
        forwarded_pps: median_of(&mut forwarded),
        busy: [median_of(&mut busy0), median_of(&mut busy1)],
        dropped: stats.as_ref().map_or_else(Vec::new, |s| {
            s.total
                .dropped
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| (k.clone(), *n))
                .collect()
        }),
        latency_us: stats
            .as_ref()
            .map(|s| (s.latency.p50_ns as f64 / 1e3, s.latency.p99_ns as f64 / 1e3)),
    }
}

/// Transmits `frame` on queue 0 of `iface` as fast as the kernel takes it,
/// from CPU 0, until `stop`; counts completed frames into `sent`.
fn generate(iface: &str, frame: &[u8], sent: &AtomicU64, stop: &AtomicBool) -> std::io::Result<()> {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: GENERATOR_CPU }) {
        return Err(std::io::Error::other("cannot pin to CPU 0"));
    }
    const FRAMES: u32 = 4096;
    let mut umem = Umem::new(2048, FRAMES, 2048)?;
    let mut socket = umem.socket(iface, 0, Some(false))?;
    let mut free: Vec<u64> = umem.frame_addrs().collect();
    for &addr in &free {
        let (buf, _) = umem.frame_mut(addr);
        buf[..frame.len()].copy_from_slice(frame);
    }
    let mut descs = Vec::with_capacity(64);
    let mut done = [0u64; 64];
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        let n = socket.complete(&mut done);
        free.extend_from_slice(&done[..n]);
        count += n as u64;
        sent.store(count, Ordering::Relaxed);
        let room = (socket.transmit_room() as usize).min(free.len()).min(64);
        descs.clear();
        descs.extend(free.drain(free.len() - room..).map(|addr| Desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        }));
        let queued = socket.transmit(&descs);
        // What the ring refused goes back (it had room, so nothing should).
        free.extend(descs[queued..].iter().map(|d| d.addr));
        // Copy mode sends at most 32 frames per wake-up: wake it every turn.
        socket.kick();
    }
    Ok(())
}

/// The dataplane running in the gateway namespace, its worker on CPU 1,
/// with a table for nodes 1 to 3: 2 and 3 direct.
struct Dataplane {
    api: ScratchPath,
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dataplane {
    fn start(gw: &Netns) -> Dataplane {
        let api = ScratchPath::new("bench-api");
        let config = ConfigFile::parse(&format!(
            "node_id = 1\n[wan]\ninterface = \"wan\"\n[lan]\ninterface = \"lan\"\n\
             [afxdp]\ncores = [{WORKER_CPU}]\n[api]\nsocket = {:?}\n",
            api.path()
        ))
        .unwrap()
        .check(2)
        .unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // The workers the daemon starts inherit the namespace.
        let thread = {
            let stop = stop.clone();
            gw.spawn(move || {
                daemon::run(&config, &stop).expect("the dataplane stopped with an error")
            })
            .unwrap()
        };
        let up = eventually(Duration::from_secs(10), || {
            Client::connect(api.path())
                .and_then(|mut c| c.health())
                .is_ok()
        });
        assert!(up, "the dataplane's API never answered");
        let dataplane = Dataplane {
            api,
            stop,
            thread: Some(thread),
        };
        dataplane.install();
        dataplane
    }

    fn install(&self) {
        let snapshot = Gateway::snapshot(Family::V4, 1, 2);
        let version = Client::connect(self.api.path())
            .and_then(|mut c| c.install(snapshot))
            .unwrap();
        assert_eq!(version, 1);
    }

    fn stats(&self) -> Stats {
        Client::connect(self.api.path())
            .and_then(|mut c| c.stats())
            .unwrap()
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An nftables ingress hook on `iface` that drops everything: the sink
/// costs its CPU as little as the kernel allows once the frame is an skb.
fn drop_at_ingress(ns: &Netns, iface: &str) {
    let rules = format!(
        "table netdev sink {{ chain ingress {{ type filter hook ingress device \"{iface}\" priority 0; policy drop; }}; }}"
    );
    let out = ns.exec("nft", &[rules.as_str()]).unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rx_packets(ns: &Netns, iface: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/rx_packets");
    let out = ns.exec("cat", &[path.as_str()]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// (busy, total) jiffies of CPUs 0 and 1, from /proc/stat.
fn cpu_times() -> [(u64, u64); 2] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let mut out = [(0, 0); 2];
    for (i, cpu) in ["cpu0 ", "cpu1 "].iter().enumerate() {
        let line = stat.lines().find(|l| l.starts_with(cpu)).unwrap();
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap())
            .collect();
        let total: u64 = v.iter().take(8).sum();
        let idle = v[3] + v[4];
        out[i] = (total - idle, total);
    }
    out
}

fn busy_share(before: &(u64, u64), after: &(u64, u64)) -> f64 {
    let total = (after.1 - before.1).max(1);
    (after.0 - before.0) as f64 / total as f64
}

fn report(results: &[PathResult], seconds: f64, runs: usize) {
    let kernel = results
        .iter()
        .find(|r| r.name == KERNEL)
        .map_or(f64::NAN, |r| r.forwarded_pps);
    println!(
        "\n64-byte frames, generator on CPU {GENERATOR_CPU}, worker on CPU {WORKER_CPU}; \
         median of {runs} runs of {seconds} s\n"
    );
    println!(
        "| path | offered Mpps | forwarded Mpps | × kernel | CPU0 busy | CPU1 busy | worker batch p50 / p99 µs | dropped |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in results {
        let latency = r.latency_us.map_or("—".to_owned(), |(p50, p99)| {
            format!("{p50:.1} / {p99:.1}")
        });
        let dropped = if r.dropped.is_empty() {
            "none".to_owned()
        } else {
            r.dropped
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | {:.3} | {:.3} | {:.2} | {:.0} % | {:.0} % | {latency} | {dropped} |",
            r.name,
            r.offered_pps / 1e6,
            r.forwarded_pps / 1e6,
            r.forwarded_pps / kernel,
            r.busy[0] * 100.0,
            r.busy[1] * 100.0,
        );
    }
}
