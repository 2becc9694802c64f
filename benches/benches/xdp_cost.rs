//! What the XDP classifier costs per packet, measured in the kernel with
//! BPF_PROG_TEST_RUN and `repeat`: the kernel runs the program on the same
//! frame many times and reports the mean time per run.
//!
//! The baseline is `detour_pass`, which counts the frame and passes it: the
//! least a program that keeps counters can do, run by the same loop. The
//! difference is what the classifier's parsing and map lookups add.
//!
//! Needs root. `cargo bench -p detour-benches --bench xdp_cost`; prints a
//! Markdown table (docs/benchmarks.md keeps the latest).

use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use detour_common::maps::{NoSocket, XdpConfig};
use detour_common::wire::NodeId;
use detour_dataplane::xdp::{Classifier, PassProgram, Role, iface};
use detour_dataplane::xsk::Receiver;
use detour_testkit::frames::{self, LOCAL_V4, OTHER_PORT, OVERLAY_PORT, PEER_V4, STRANGER_V4};
use detour_testkit::{Netns, require_root};

/// Runs per measurement, and measurements per case (the median is shown).
const REPEAT: u32 = 2_000_000;
const ROUNDS: usize = 7;

struct Case {
    name: &'static str,
    role: Role,
    frame: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let to_remote = frames::udp(
        "10.1.0.5".parse().unwrap(),
        "10.2.0.9".parse().unwrap(),
        40000,
        443,
        64,
    );
    let to_local = frames::udp(
        "10.1.0.5".parse().unwrap(),
        "10.1.0.9".parse().unwrap(),
        40000,
        443,
        64,
    );
    vec![
        Case {
            name: "WAN overlay hit, IPv4 underlay (to socket)",
            role: Role::Wan,
            frame: frames::overlay_v4(),
        },
        Case {
            name: "WAN overlay hit, IPv6 underlay (to socket)",
            role: Role::Wan,
            frame: frames::overlay_v6(),
        },
        Case {
            name: "WAN pass-through, UDP to another port",
            role: Role::Wan,
            frame: frames::udp(PEER_V4.into(), LOCAL_V4.into(), 5000, OTHER_PORT, 64),
        },
        Case {
            name: "WAN drop, unknown peer",
            role: Role::Wan,
            frame: frames::overlay(STRANGER_V4.into(), LOCAL_V4.into(), 64),
        },
        Case {
            name: "LAN remote prefix hit (to socket)",
            role: Role::Lan,
            frame: to_remote,
        },
        Case {
            name: "LAN pass-through, local destination",
            role: Role::Lan,
            frame: to_local,
        },
    ]
}

/// The median of `ROUNDS` measurements of `program` on `frame`, in ns per
/// run, with the context of queue 0 of interface `ifindex`.
fn ns_per_run(program: &Xdp, frame: &[u8], ifindex: u32) -> f64 {
    let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect();
    let mut rounds: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            program
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat: REPEAT,
                    ..TestRunOptions::default()
                })
                .expect("BPF_PROG_TEST_RUN")
                .duration
        })
        .collect();
    rounds.sort();
    rounds[ROUNDS / 2].as_nanos() as f64
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass
    // nothing: run only when asked to benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    require_root();
    let ns = Netns::new("cost").unwrap();
    ns.ip(&["link", "add", "wan", "type", "veth", "peer", "name", "wanp"])
        .unwrap();
    ns.ip(&["link", "set", "wan", "up"]).unwrap();
    ns.ip(&["link", "set", "wanp", "up"]).unwrap();

    let rows = ns
        .enter(|| {
            let ifindex = iface::ifindex("wan").unwrap();
            let mut classifier =
                Classifier::load(XdpConfig::new(OVERLAY_PORT, NoSocket::Pass)).unwrap();
            let peers = [
                (PEER_V4.into(), NodeId(1)),
                (frames::PEER_V6.into(), NodeId(1)),
            ];
            classifier.set_peers(&peers).unwrap();
            classifier
                .set_remote_prefixes(&[("10.2.0.0/16".parse().unwrap(), NodeId(2))])
                .unwrap();
            let socket = Receiver::bind("wan", 0).unwrap();
            for role in [Role::Wan, Role::Lan] {
                classifier.register_socket(role, 0, socket.fd()).unwrap();
            }
            let pass = PassProgram::load().unwrap();
            let pass = pass.program().unwrap();

            cases()
                .iter()
                .map(|case| {
                    let program = classifier.program(case.role).unwrap();
                    // Interleaved, so that both see the same machine state.
                    let base = ns_per_run(pass, &case.frame, ifindex);
                    let cost = ns_per_run(program, &case.frame, ifindex);
                    (case.name, case.frame.len(), cost, base)
                })
                .collect::<Vec<_>>()
        })
        .unwrap();

    println!(
        "| case | frame bytes | classifier ns/pkt | baseline (detour_pass) ns/pkt | added ns | ratio |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, len, cost, base) in rows {
        println!(
            "| {name} | {len} | {cost:.1} | {base:.1} | {:.1} | {:.2} |",
            cost - base,
            cost / base
        );
    }
    println!(
        "\nmedian of {ROUNDS} BPF_PROG_TEST_RUN measurements of {REPEAT} runs each; \
         {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
