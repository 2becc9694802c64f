//! detour end to end: real `detour-dataplane` and `detour-control`
//! processes on every node of a testbed (`detour_testbed`), traffic between
//! two sites' hosts, and what the traffic shows when paths, relays and
//! daemons fail.
//!
//! Every test builds its own testbed, named by the test kit (`dt-<pid>-…`)
//! so that one killed midway is swept by the next run, and takes it down on
//! drop. They run one at a time: each has eight daemons, and two testbeds
//! sharing two cores would measure each other.
//!
//! Needs root; fails without it.

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use detour_testbed::internet::router_interface;
use detour_testbed::topology::{host_address, underlay};
use detour_testbed::traffic::{Flow, Record};
use detour_testbed::{Daemon, Testbed};
use detour_testkit::packet::PacketSocket;
use detour_testkit::{eventually, proc_status_field};

mod support;

use support::{FOUR_SITES, report, up};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Datagrams a second of the test flows, and their payload.
const RATE: u32 = 1000;
const SIZE: usize = 100;
const ROUTE_TIMEOUT: Duration = Duration::from_secs(10);

/// A warm flow of numbered datagrams from site `a`'s host to site `b`'s.
fn flow(bed: &Testbed, a: u16, b: u16) -> Flow {
    let l = bed.layout();
    Flow::start_warm(&l.host(a), &l.host(b), host_address(b), RATE, SIZE).unwrap()
}

fn route(bed: &Testbed, a: u16, b: u16) -> String {
    bed.route(a, b)
        .unwrap()
        .unwrap_or_else(|| "unreachable".into())
}

fn wait_route(bed: &Testbed, a: u16, b: u16, want: impl Fn(&str) -> bool) -> String {
    let held = eventually(ROUTE_TIMEOUT, || want(&route(bed, a, b)));
    let now = route(bed, a, b);
    assert!(held, "node {a}'s route to {b} is still {now}");
    now
}

/// Waits for a datagram sent from now on to arrive; how long that took.
fn resumes(flow: &Flow, what: &str) -> Duration {
    let from = flow.now();
    assert!(
        eventually(Duration::from_secs(10), || flow.delivered_since(from)),
        "{what}: no datagram got through within 10 s"
    );
    Duration::from_nanos(flow.now() - from)
}

fn relayed(bed: &Testbed, id: u16) -> u64 {
    bed.dataplane_stats(id).unwrap().total.relayed
}

/// Let the flow run a little longer, stop it, and show what it did.
fn finish(flow: Flow) -> Record {
    std::thread::sleep(Duration::from_millis(500));
    let record = flow.stop().unwrap();
    eprintln!(
        "flow: {} sent, {} lost, {} duplicated",
        record.sent.len(),
        record.lost(0, u64::MAX),
        record.duplicates
    );
    record
}

/// The direct path cut under traffic: the traffic goes on through a relay.
/// Then that relay dies (both daemons killed): the traffic goes on through
/// the other. Each failover is measured from the traffic.
#[test]
fn netns_e2e_traffic_survives_a_cut_path_and_then_a_dead_relay() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = up(FOUR_SITES);
    let flow = flow(&bed, 1, 2);
    wait_route(&bed, 1, 2, |r| r == "direct");

    let cut = flow.now();
    bed.cut(1, 2).unwrap();
    let cut_done = flow.now();
    wait_route(&bed, 1, 2, |r| r.starts_with("via"));
    assert!(eventually(Duration::from_secs(10), || flow.delivered_since(cut_done)));
    // The first choice may change as the other nodes' link state comes in
    // (both relays cost the same); the relay to fail is the one the
    // traffic settled on, carrying it now.
    std::thread::sleep(Duration::from_millis(1500));
    let relay_path = route(&bed, 1, 2);
    let relay: u16 = relay_path["via ".len()..].parse().unwrap();
    let carried = relayed(&bed, relay);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        relayed(&bed, relay) > carried,
        "node {relay} relays nothing"
    );

    let relay_dies = flow.now();
    bed.stop_daemon(relay, Daemon::Control, true).unwrap();
    bed.stop_daemon(relay, Daemon::Dataplane, true).unwrap();
    let other = wait_route(&bed, 1, 2, |r| r.starts_with("via") && r != relay_path);
    let relay_died = flow.now();
    assert!(eventually(Duration::from_secs(10), || flow.delivered_since(relay_died)));
    let other_relay: u16 = other["via ".len()..].parse().unwrap();
    assert!(
        relayed(&bed, other_relay) > 0,
        "node {other_relay} relayed nothing"
    );

    let record = finish(flow);
    let failover = record.first_arrival_sent_after(cut_done).unwrap() - cut;
    let relay_failover = record.first_arrival_sent_after(relay_died).unwrap() - relay_dies;
    report(format!(
        "failover under traffic: {:.0} ms from the cut of 1-2 to {relay_path}; \
         {:.0} ms from the death of relay {relay} to {other}",
        failover as f64 / 1e6,
        relay_failover as f64 / 1e6
    ));
    // Nothing lost once the traffic was through the second relay.
    assert_eq!(record.lost(relay_died + 100_000_000, u64::MAX), 0);
}

/// The control process restarts (on both ends of the flow) while traffic
/// flows: the dataplane forwards by the last routes meanwhile, and the new
/// control process installs the same routes again. Not one datagram is
/// lost.
#[test]
fn netns_e2e_a_control_process_restart_loses_no_packets() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(FOUR_SITES);
    let flow = flow(&bed, 1, 2);
    wait_route(&bed, 1, 2, |r| r == "direct");
    let installs_before = bed
        .control_status(1)
        .unwrap()
        .dataplane
        .unwrap()
        .installed_version;
    for id in [1, 2] {
        bed.stop_daemon(id, Daemon::Control, false).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        bed.start_daemon(id, Daemon::Control).unwrap();
        bed.wait_ready(id, Daemon::Control).unwrap();
    }
    // The new process installed its own snapshot.
    let installs_after = bed
        .control_status(1)
        .unwrap()
        .dataplane
        .unwrap()
        .installed_version;
    assert_ne!(installs_before, installs_after);
    std::thread::sleep(Duration::from_secs(1));
    wait_route(&bed, 1, 2, |r| r == "direct");
    let record = finish(flow);
    assert!(record.sent.len() > 1000);
    let lost = record.lost(0, u64::MAX);
    report(format!(
        "control restart on nodes 1 and 2: {lost} of {} datagrams lost",
        record.sent.len()
    ));
    assert_eq!(lost, 0, "datagrams lost");
}

/// The dataplane of the receiving node restarts: traffic stops while it is
/// down and resumes once it is back and the control process reinstalled
/// its routes.
#[test]
fn netns_e2e_traffic_resumes_after_a_dataplane_restart() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(FOUR_SITES);
    let flow = flow(&bed, 1, 2);
    for id in [2, 1] {
        bed.stop_daemon(id, Daemon::Dataplane, false).unwrap();
        let stopped = flow.now();
        bed.start_daemon(id, Daemon::Dataplane).unwrap();
        bed.wait_ready(id, Daemon::Dataplane).unwrap();
        let back = resumes(&flow, &format!("node {id}'s dataplane restarted"));
        report(format!(
            "dataplane restart on node {id}: traffic back {:.0} ms after it was stopped, \
             {:.0} ms after it answered again",
            (flow.now() - stopped) as f64 / 1e6,
            back.as_secs_f64() * 1e3
        ));
        // The control process put its routes back.
        assert!(eventually(ROUTE_TIMEOUT, || {
            bed.dataplane(id)
                .and_then(|mut c| Ok(c.routes()?))
                .is_ok_and(|r| r.is_some())
        }));
    }
    let record = finish(flow);
    let after = record.sent.last().unwrap() - 400_000_000;
    assert_eq!(record.lost(after, u64::MAX), 0, "lost after the restarts");
}

/// How long the kernel may take to release what a killed process held: its
/// files go when its last thread has exited, and closing its AF_XDP
/// sockets and bpf links waits for RCU grace periods. Usually well under a
/// second; on a loaded 2-core machine (`scripts/test --stress`) 2 s was
/// once not enough.
const KERNEL_RELEASE: Duration = Duration::from_secs(10);

/// Kills node `id`'s daemon with SIGKILL and waits until the kernel has
/// taken away what it held: for the dataplane, the XDP programs on both
/// interfaces (the kernel releases a dead process's files a moment after
/// it is reaped).
fn kill(bed: &Testbed, id: u16, daemon: Daemon) {
    bed.stop_daemon(id, daemon, true).unwrap();
    assert!(bed.pid(id, daemon).is_none());
    if daemon == Daemon::Dataplane {
        let node = bed.layout().node(id);
        for iface in ["wan", "lan"] {
            assert!(
                eventually(KERNEL_RELEASE, || !node.xdp_attached(iface)),
                "node {id}'s {iface} still carries an XDP program after the dataplane was killed"
            );
        }
    }
}

/// Kills node 1's `daemons` in that order, starts them again in the other,
/// and waits for traffic through both `flows`; the milliseconds from the
/// kill to the traffic back, as the report shows them.
fn restart(bed: &Testbed, daemons: &[Daemon], flows: [&Flow; 2], what: &str) -> String {
    let killed = flows[0].now();
    for &daemon in daemons {
        kill(bed, 1, daemon);
    }
    for &daemon in daemons.iter().rev() {
        bed.start_daemon(1, daemon).unwrap();
    }
    for &daemon in daemons.iter().rev() {
        bed.wait_ready(1, daemon).unwrap();
    }
    for flow in flows {
        resumes(flow, &format!("{what} restarted"));
    }
    format!("{:.0}", (flows[0].now() - killed) as f64 / 1e6)
}

/// Node `id`'s dataplane holds exactly the routes its control process
/// installed last: the same version, and toward every destination the path
/// the control process chose (retried while a new computation races the
/// reads).
fn assert_routes_whole(bed: &Testbed, id: u16) {
    let mut last = String::new();
    let whole = eventually(ROUTE_TIMEOUT, || {
        let (Ok(status), Ok(paths), Ok(Some(snapshot))) = (
            bed.control_status(id),
            bed.control_paths(id),
            bed.dataplane(id).and_then(|mut c| Ok(c.routes()?)),
        ) else {
            return false;
        };
        last = format!("{:?} / {:?}", paths.routes, snapshot.routes);
        status.dataplane.and_then(|d| d.installed_version) == Some(snapshot.version)
            && paths.routes.iter().all(|r| {
                let via = snapshot
                    .routes
                    .iter()
                    .find(|s| s.dst == r.dst)
                    .map(|s| s.via.0);
                match r.path.as_deref() {
                    // No live path: sent direct all the same.
                    // No live path: sent direct all the same.
                    None | Some("direct") => via == Some(r.dst.0),
                    Some(path) => via.is_some_and(|v| path == format!("via {v}")),
                }
            })
    });
    assert!(
        whole,
        "node {id}: the dataplane's routes are not the control process's: {last}"
    );
}

/// Sends garbage, a line that is not UTF-8 and a request over the 16 MiB
/// limit to the API socket at `path`; each is answered with an error, and
/// the daemon answers the next client as before.
fn api_garbage(path: &Path) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::UnixStream;
    let mut stream = UnixStream::connect(path).unwrap();
    stream
        .write_all(b"{\"request\": \"reboot\"}\n\xff\xfe\n\x00\x01\x02\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.contains("\"error\"") && line.contains("malformed request"),
            "{line}"
        );
    }
    let huge = vec![b'x'; (16 << 20) + 1];
    // The daemon stops reading at the limit and closes.
    let _ = stream.write_all(&huge);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("request longer than"), "{line}");
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    assert!(rest.is_empty());
}

/// SIGKILL, again and again, under traffic both ways between sites 1 and
/// 2: node 1's dataplane (the kernel takes its programs and sockets away,
/// nothing stays attached, and the new one forwards again once the control
/// process has reinstalled its routes), node 1's control process (the
/// dataplane forwards on by the last routes: nothing it sends is lost), and
/// both at once; garbage and oversized requests on both API sockets in
/// between. After every restart the dataplane holds exactly the routes the
/// control process computed.
///
/// Traffic toward node 1 while only its control process is dead is
/// reported, not asserted: its peers, no longer probed back, judge it down
/// one by one, and while their views differ a frame can go from relay to
/// relay until its hop limit ends (about 50 datagrams in 2 of 5 runs; a
/// listed node with no live path is still sent to directly, so the loss no
/// longer lasts the whole outage).
#[test]
fn netns_e2e_sigkill_again_and_again_leaves_nothing_attached_and_routes_whole() {
    const ROUNDS: usize = 3;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(FOUR_SITES);
    let there = flow(&bed, 1, 2);
    let back = flow(&bed, 2, 1);
    wait_route(&bed, 1, 2, |r| r == "direct");
    // Kill to traffic back, ms: the dataplane alone, both daemons.
    let (mut dataplane_back, mut both_back) = (Vec::new(), Vec::new());
    let mut control_dead = Vec::new();
    for round in 1..=ROUNDS {
        // The dataplane.
        dataplane_back.push(restart(
            &bed,
            &[Daemon::Dataplane],
            [&there, &back],
            &format!("round {round}, the dataplane"),
        ));
        assert_routes_whole(&bed, 1);

        // The control process: the dataplane forwards on meanwhile.
        let from = (there.now(), back.now());
        kill(&bed, 1, Daemon::Control);
        std::thread::sleep(Duration::from_millis(300));
        bed.start_daemon(1, Daemon::Control).unwrap();
        bed.wait_ready(1, Daemon::Control).unwrap();
        control_dead.push((from, (there.now(), back.now())));
        assert_routes_whole(&bed, 1);

        // Garbage on both API sockets changes nothing.
        api_garbage(&bed.layout().dataplane_socket(1));
        api_garbage(&bed.layout().control_socket(1));
        assert_routes_whole(&bed, 1);

        // Both at once.
        both_back.push(restart(
            &bed,
            &[Daemon::Control, Daemon::Dataplane],
            [&there, &back],
            &format!("round {round}, both daemons"),
        ));
        assert_routes_whole(&bed, 1);
    }
    let there = finish(there);
    let back = finish(back);
    // Each flow on its own clock.
    let lost_there: u64 = control_dead
        .iter()
        .map(|&(from, to)| there.lost(from.0, to.0))
        .sum();
    let lost_back: u64 = control_dead
        .iter()
        .map(|&(from, to)| back.lost(from.1, to.1))
        .sum();
    report(format!(
        "SIGKILL x{ROUNDS} on node 1: traffic back {} ms after the dataplane was killed, {} ms \
         after both daemons were; while only the control process was dead, {lost_there} \
         datagrams lost 1 -> 2 and {lost_back} 2 -> 1",
        dataplane_back.join(", "),
        both_back.join(", ")
    ));
    assert_eq!(
        lost_there, 0,
        "lost by node 1's dataplane while it had its routes"
    );
    for record in [&there, &back] {
        let after = record.sent.last().unwrap() - 400_000_000;
        assert_eq!(
            record.lost(after, u64::MAX),
            0,
            "lost after the last restart"
        );
        assert_eq!(record.duplicates, 0);
    }
}

/// The effective capabilities of each thread of process `pid`, by thread
/// name.
fn capabilities(pid: u32) -> Vec<(String, u64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = task.unwrap().path().join("status");
        // A thread may end between the listing and the reading.
        let (Some(name), Some(caps)) = (
            proc_status_field(&status, "Name"),
            proc_status_field(&status, "CapEff"),
        ) else {
            continue;
        };
        threads.push((name, u64::from_str_radix(&caps, 16).unwrap()));
    }
    threads
}

/// Once started, the control process holds no capability in any thread,
/// the dataplane only CAP_NET_ADMIN and CAP_BPF, and its workers none; and
/// routes still install and traffic flows (docs/security.md).
#[test]
fn netns_e2e_daemons_give_up_their_capabilities_once_started() {
    const NET_ADMIN_AND_BPF: u64 = 1 << 12 | 1 << 39;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(FOUR_SITES);
    let flow = flow(&bed, 1, 2);
    wait_route(&bed, 1, 2, |r| r == "direct");
    let control = capabilities(bed.pid(1, Daemon::Control).unwrap());
    assert!(control.len() > 1, "{control:?}");
    assert!(
        control.iter().all(|(_, caps)| *caps == 0),
        "control: {control:?}"
    );
    let dataplane = capabilities(bed.pid(1, Daemon::Dataplane).unwrap());
    let workers: Vec<_> = dataplane
        .iter()
        .filter(|(name, _)| name.starts_with("worker-q"))
        .collect();
    assert!(!workers.is_empty(), "{dataplane:?}");
    for (name, caps) in &dataplane {
        let allowed = if name.starts_with("worker-q") {
            0
        } else {
            NET_ADMIN_AND_BPF
        };
        assert_eq!(*caps, allowed, "dataplane thread {name}: {dataplane:?}");
    }
    assert!(flow.wait_for_more(100, Duration::from_secs(5)));
    finish(flow);
}

/// Node 5 runs with a key other than the one the others list it under, and
/// claims the best links of all (no delay at all, against 2 ms elsewhere).
/// Its handshakes are refused (`unknown_key`), so no one takes it as a
/// relay or as up: when the direct path 1-2 is cut, node 1 goes through 3
/// or 4, never 5.
#[test]
fn netns_e2e_a_node_with_the_wrong_key_changes_no_routes() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let topology = format!(
        "{FOUR_SITES}
        [[nodes]]
        id = 5
        wrong_key = true
        {}",
        (1..=4)
            .map(|i| format!("[[paths]]\nbetween = [{i}, 5]\ndelay_ms = 0\n"))
            .collect::<String>()
    );
    let mut bed = up(&topology);
    let rejected = |id: u16| bed.control_status(id).unwrap().rejected["unknown_key"];
    let before: Vec<u64> = (1..=4).map(rejected).collect();
    std::thread::sleep(Duration::from_secs(1));
    for id in 1..=4u16 {
        assert!(
            rejected(id) > before[usize::from(id) - 1],
            "node {id} rejected nothing from 5"
        );
        assert_eq!(route(&bed, id, 5), "unreachable", "node {id}");
        // Direct or through an honest node: which of those wins depends on
        // RTT samples that a loaded machine makes noisy, but never node 5.
        for dst in (1..=4).filter(|&d| d != id) {
            let now = route(&bed, id, dst);
            assert!(
                ["direct", "via 1", "via 2", "via 3", "via 4"].contains(&now.as_str()),
                "node {id} to {dst}: {now}"
            );
        }
    }
    let flow = flow(&bed, 1, 2);
    bed.cut(1, 2).unwrap();
    let relay = wait_route(&bed, 1, 2, |r| r.starts_with("via"));
    assert!(relay == "via 3" || relay == "via 4", "{relay}");
    resumes(&flow, "through a relay");
    assert_eq!(relayed(&bed, 5), 0);
    finish(flow);
}

/// Node 3 is drained, and the better relay (1 ms paths, against 5 ms
/// through node 4): when the direct path 1-2 is cut, the traffic goes
/// through node 4, and node 3 relays nothing.
#[test]
fn netns_e2e_a_drained_node_carries_no_relayed_traffic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = up("
        [defaults]
        delay_ms = 5
        [[nodes]]
        id = 1
        [[nodes]]
        id = 2
        [[nodes]]
        id = 3
        drained = true
        [[nodes]]
        id = 4
        [[paths]]
        between = [1, 3]
        delay_ms = 1
        [[paths]]
        between = [2, 3]
        delay_ms = 1
    ");
    let flow = flow(&bed, 1, 2);
    wait_route(&bed, 1, 2, |r| r == "direct");
    bed.cut(1, 2).unwrap();
    assert_eq!(wait_route(&bed, 1, 2, |r| r.starts_with("via")), "via 4");
    resumes(&flow, "through node 4");
    std::thread::sleep(Duration::from_millis(500));
    assert!(relayed(&bed, 4) > 0);
    assert_eq!(relayed(&bed, 3), 0, "the drained node relayed");
    // Still a destination (direct, unless a loaded machine's late probes
    // made the 1 ms path look worse for a moment: CI saw "via 4").
    let to_drained = route(&bed, 1, 3);
    assert!(
        to_drained == "direct" || to_drained == "via 4",
        "{to_drained}"
    );
    finish(flow);
}

/// A testbed whose builder is gone (as after a crash: nothing but the
/// namespaces, processes and files it left) is taken down completely from
/// its layout alone.
#[test]
fn netns_testbed_down_removes_what_a_crashed_run_left() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(FOUR_SITES);
    let layout = bed.layout().clone();
    let namespaces = [layout.router(), layout.node(1), layout.host(4)];
    let pids: Vec<u32> = namespaces
        .iter()
        .flat_map(|ns| ns.pids().unwrap())
        .collect();
    // The router's delay line and node 1's two daemons.
    assert_eq!(pids.len(), 3, "{pids:?}");
    drop(bed.keep());
    assert!(namespaces.iter().all(|ns| ns.exists()) && layout.dir.exists());

    detour_testbed::bed::down(&layout).unwrap();
    for ns in &namespaces {
        assert!(!ns.exists(), "{} is left", ns.name());
    }
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is left"
        );
    }
    assert!(!layout.dir.exists());
    // Twice is fine.
    detour_testbed::bed::down(&layout).unwrap();
}

/// What a site's host sends, so that a capture can look for it.
const MARKER: &[u8] = b"detour plaintext marker: never on the wire";

/// The MAC address of `iface` in `ns`.
fn mac_of(ns: &detour_testkit::Netns, iface: &str) -> [u8; 6] {
    let out = ns.ip(&["-br", "link", "show", "dev", iface]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mac = text.split_whitespace().nth(2).expect("a MAC address");
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().expect("6 bytes")
}

/// Overlay data from node 1 to node 2 as the router receives it: IPv4 to
/// 198.18.2.2, UDP to the overlay port.
fn is_data_for_node_2(frame: &[u8]) -> bool {
    frame.len() > 74 + 16
        && frame[12..14] == [0x08, 0x00]
        && frame[30..34] == underlay(2).octets()
        && frame[36..38] == 6081u16.to_be_bytes()
}

/// Overlay data is sealed end to end: a capture of the underlay holds none
/// of what the hosts sent, and captured frames played again toward the
/// destination gateway (replayed), with a flipped bit, or with a counter
/// of the forger's choosing reach no host, each counted under its reason.
#[test]
fn netns_e2e_overlay_data_is_sealed_and_replays_and_forgeries_reach_no_host() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = up(FOUR_SITES);
    let l = bed.layout();
    wait_route(&bed, 1, 2, |r| r == "direct");
    let router = l.router();
    let pcap = std::env::temp_dir().join(format!("{}-underlay.pcap", l.prefix));
    let mut tcpdump = router
        .command("tcpdump")
        // Immediate mode: libpcap otherwise hands over packets in blocks,
        // after up to a second, and a SIGINT before that loses them.
        .args(["-i", &router_interface(1), "--immediate-mode", "-U", "-w"])
        .arg(&pcap)
        .args(["udp", "port", "6081"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump (scripts/setup installs it)");
    let from_node_1 = router
        .enter(|| PacketSocket::bind(&router_interface(1)))
        .unwrap()
        .unwrap();
    let toward_node_2 = router
        .enter(|| PacketSocket::bind(&router_interface(2)))
        .unwrap()
        .unwrap();
    let receiver = l
        .host(2)
        .enter(|| UdpSocket::bind((host_address(2), 7000)))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let sender = l
        .host(1)
        .enter(|| UdpSocket::bind((host_address(1), 0)))
        .unwrap()
        .unwrap();
    // Node 2 learns host 2's MAC address from the first datagrams (which
    // it drops as unresolved meanwhile); tcpdump gets going.
    for _ in 0..3 {
        sender.send_to(b"warm", (host_address(2), 7000)).unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    received(&receiver);
    let drain =
        |socket: &PacketSocket| socket.receive(Duration::from_millis(100), usize::MAX, |_| true);
    drain(&from_node_1);

    const SENT: usize = 100;
    let capturing = std::thread::scope(|s| {
        let capture =
            s.spawn(|| from_node_1.receive(Duration::from_secs(5), SENT, is_data_for_node_2));
        for seq in 0..SENT {
            let mut payload = MARKER.to_vec();
            payload.push(seq as u8);
            sender.send_to(&payload, (host_address(2), 7000)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        capture.join().unwrap()
    });
    let arrived = received(&receiver);
    assert_eq!(arrived, SENT, "every datagram arrives, once");
    assert_eq!(capturing.len(), SENT, "every one captured on its way");
    // The key id and counter are there; the marker is not.
    for frame in &capturing {
        assert_ne!(frame[62..66], [0; 4], "a key id");
        assert!(!frame.windows(MARKER.len()).any(|w| w == MARKER));
    }
    // SAFETY: a signal to the tcpdump this test started.
    unsafe { libc::kill(tcpdump.id() as i32, libc::SIGINT) };
    tcpdump.wait().unwrap();
    let underlay_capture = std::fs::read(&pcap).unwrap();
    let _ = std::fs::remove_file(&pcap);
    assert!(
        underlay_capture.len() > SENT * 100,
        "tcpdump saw the transfer: {} bytes",
        underlay_capture.len()
    );
    assert!(
        !underlay_capture.windows(MARKER.len()).any(|w| w == MARKER),
        "the underlay capture holds no plaintext"
    );

    // Played again toward node 2, as the router would forward them.
    let (node_2_mac, router_mac) = (
        mac_of(&l.node(2), "wan"),
        mac_of(&router, &router_interface(2)),
    );
    let toward_2 = |frame: &[u8]| {
        let mut f = frame.to_vec();
        f[..6].copy_from_slice(&node_2_mac);
        f[6..12].copy_from_slice(&router_mac);
        f
    };
    // Three more, which the router does not forward (the path is cut for
    // them): genuine frames whose counters node 2 never took.
    bed.cut(1, 2).unwrap();
    drain(&from_node_1);
    let unseen = std::thread::scope(|s| {
        let capture =
            s.spawn(|| from_node_1.receive(Duration::from_secs(3), 3, is_data_for_node_2));
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..3 {
            sender.send_to(MARKER, (host_address(2), 7000)).unwrap();
        }
        capture.join().unwrap()
    });
    bed.restore(1, 2).unwrap();
    assert_eq!(unseen.len(), 3, "captured before the cut dropped them");
    assert_eq!(received(&receiver), 0, "cut");

    let before = bed.dataplane_stats(2).unwrap().total.dropped;
    for frame in &capturing {
        toward_node_2.send(&toward_2(frame)).unwrap();
    }
    let mut flipped = toward_2(&unseen[0]);
    *flipped.last_mut().unwrap() ^= 0x01; // the tag
    let mut damaged = toward_2(&unseen[1]);
    damaged[80] ^= 0x80; // the ciphertext
    let mut forged = toward_2(&unseen[2]);
    // A counter ahead of any taken (the window accepts it before the tag).
    forged[66..74].copy_from_slice(&5000u64.to_be_bytes());
    for frame in [&flipped, &damaged, &forged] {
        toward_node_2.send(frame).unwrap();
    }
    assert_eq!(received(&receiver), 0, "nothing reached the host");
    let counted = |reason: &str| {
        let after = bed.dataplane_stats(2).unwrap().total.dropped;
        after.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0)
    };
    let settled = eventually(Duration::from_secs(3), || {
        counted("replayed") == SENT as u64 && counted("auth_failed") == 3
    });
    assert!(
        settled,
        "replayed {} of {SENT}, auth_failed {} of 3",
        counted("replayed"),
        counted("auth_failed")
    );
    // None of the forgeries took a counter: the genuine frame goes through.
    toward_node_2.send(&toward_2(&unseen[0])).unwrap();
    assert_eq!(received(&receiver), 1, "the genuine frame, once");
    report(format!(
        "sealed end to end: {SENT} datagrams delivered, none of their plaintext in the underlay capture; \
         {SENT} replayed, 1 with a flipped tag bit, 1 with a flipped ciphertext bit and 1 with a forged counter reached no host"
    ));
}

/// How many datagrams `socket` receives before it is quiet for its
/// timeout.
fn received(socket: &UdpSocket) -> usize {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while socket.recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// Two sites whose sessions rekey every 10 s (rejected 15 s after they
/// began), 2 ms apart.
const REKEYING: &str = "
    [defaults]
    delay_ms = 2
    [[nodes]]
    id = 1
    rekey_after_s = 10
    [[nodes]]
    id = 2
    rekey_after_s = 10
";

/// How long after a session began its key has surely left the dataplane:
/// rejected at 1.5 times the rekey time, then the dataplane's grace of 2 s,
/// and room for the install.
const FIRST_KEY_GONE: Duration = Duration::from_secs(15 + 2 + 3);

/// A minute of traffic both ways across at least two rekeys loses no
/// datagram to them; a frame captured under the first key and played
/// again once that key is over reaches no host and counts as
/// `expired_key`.
#[test]
fn netns_e2e_a_minute_across_rekeys_loses_nothing_and_an_old_key_stays_dead() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(REKEYING);
    let l = bed.layout();
    wait_route(&bed, 1, 2, |r| r == "direct");
    let router = l.router();
    let from_node_1 = router
        .enter(|| PacketSocket::bind(&router_interface(1)))
        .unwrap()
        .unwrap();
    let toward_node_2 = router
        .enter(|| PacketSocket::bind(&router_interface(2)))
        .unwrap()
        .unwrap();
    let (node_2_mac, router_mac) = (
        mac_of(&l.node(2), "wan"),
        mac_of(&router, &router_interface(2)),
    );
    let (to_2, to_1) = (flow(&bed, 1, 2), flow(&bed, 2, 1));
    let key_ids = Mutex::new(std::collections::BTreeSet::new());
    let first: Mutex<Option<(Vec<u8>, std::time::Instant)>> = Mutex::new(None);
    let mut expired = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            from_node_1.receive(Duration::from_secs(60), usize::MAX, |frame| {
                if is_data_for_node_2(frame) {
                    let id = u32::from_be_bytes(frame[62..66].try_into().unwrap());
                    key_ids.lock().unwrap().insert(id);
                    let mut first = first.lock().unwrap();
                    if first.is_none() {
                        *first = Some((frame.to_vec(), std::time::Instant::now()));
                    }
                }
                false
            });
        });
        let (frame, seen) = loop {
            if let Some(f) = first.lock().unwrap().clone() {
                break f;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        std::thread::sleep(FIRST_KEY_GONE.saturating_sub(seen.elapsed()));
        let before = bed.dataplane_stats(2).unwrap().total.dropped;
        let mut replay = frame;
        replay[..6].copy_from_slice(&node_2_mac);
        replay[6..12].copy_from_slice(&router_mac);
        toward_node_2.send(&replay).unwrap();
        let counted = || {
            let after = bed.dataplane_stats(2).unwrap().total.dropped;
            after.get("expired_key").copied().unwrap_or(0)
                - before.get("expired_key").copied().unwrap_or(0)
        };
        eventually(Duration::from_secs(3), || counted() >= 1);
        expired = counted();
    });
    let (to_2, to_1) = (finish(to_2), finish(to_1));
    let key_ids = key_ids.into_inner().unwrap();
    assert!(
        key_ids.len() >= 3,
        "at least two rekeys in a minute: keys {key_ids:?}"
    );
    assert_eq!(expired, 1, "the replay under the first key counted expired");
    for (what, r) in [("1 -> 2", &to_2), ("2 -> 1", &to_1)] {
        assert_eq!(r.lost(0, u64::MAX), 0, "{what}: lost across the rekeys");
        assert_eq!(r.duplicates, 0, "{what}: the replay reached the host");
    }
    report(format!(
        "a minute across rekeys (every 10 s): {} keys seen 1 -> 2, {} + {} datagrams, none lost; \
         a frame under the first key played again {} s after it was seen: expired_key, reached no host",
        key_ids.len(),
        to_2.sent.len(),
        to_1.sent.len(),
        FIRST_KEY_GONE.as_secs()
    ));
}

/// Three sites, 2 ms apart.
const THREE_SITES: &str = "
    [defaults]
    delay_ms = 2
    [[nodes]]
    id = 1
    [[nodes]]
    id = 2
    [[nodes]]
    id = 3
";

/// Every key id a node's dataplane holds, for any peer.
fn key_ids_held(bed: &Testbed, id: u16) -> Vec<(u16, u32)> {
    let health = bed.dataplane(id).unwrap().health().unwrap();
    let held = health
        .keys
        .expect("an encrypting dataplane lists its key ids");
    held.iter()
        .flat_map(|k| k.tx.iter().chain(&k.rx).map(move |&key| (k.peer.0, key)))
        .collect()
}

/// Encryption is end to end: once their direct path is cut, frames from
/// site 1 to site 2 relayed by node 3 arrive and open, while node 3 holds
/// no key they are sealed under (only its own sessions' with 1 and 2);
/// node 2 holds it, from node 1.
#[test]
fn netns_e2e_a_relay_forwards_what_it_holds_no_key_for() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = up(THREE_SITES);
    wait_route(&bed, 1, 2, |r| r == "direct");
    bed.cut(1, 2).unwrap();
    wait_route(&bed, 1, 2, |r| r == "via 3");
    let l = bed.layout();
    let from_node_1 = l
        .router()
        .enter(|| PacketSocket::bind(&router_interface(1)))
        .unwrap()
        .unwrap();
    let relayed_before = relayed(&bed, 3);
    let to_2 = flow(&bed, 1, 2);
    // Overlay data from node 1 for node 2, on its way to the relay.
    let for_2_via_3 = |frame: &[u8]| {
        frame.len() > 74 + 16
            && frame[12..14] == [0x08, 0x00]
            && frame[30..34] == underlay(3).octets()
            && frame[36..38] == 6081u16.to_be_bytes()
            && frame[56..58] == 2u16.to_be_bytes()
    };
    let mut sealed_under = std::collections::BTreeSet::new();
    from_node_1.receive(Duration::from_secs(2), usize::MAX, |frame| {
        if for_2_via_3(frame) {
            sealed_under.insert(u32::from_be_bytes(frame[62..66].try_into().unwrap()));
        }
        false
    });
    let (relay_keys, node_2_keys) = (key_ids_held(&bed, 3), key_ids_held(&bed, 2));
    let record = finish(to_2);
    assert!(!sealed_under.is_empty(), "relayed frames were captured");
    assert!(
        relay_keys.iter().all(|(_, id)| !sealed_under.contains(id)),
        "the relay holds {relay_keys:?}, frames are sealed under {sealed_under:?}"
    );
    assert!(
        relay_keys.iter().all(|(peer, _)| [1, 2].contains(peer)),
        "the relay's keys are its own sessions' with 1 and 2: {relay_keys:?}"
    );
    assert!(
        sealed_under
            .iter()
            .all(|id| node_2_keys.contains(&(1, *id))),
        "node 2 opens them under its keys from node 1: {node_2_keys:?}, frames under {sealed_under:?}"
    );
    assert_eq!(record.lost(0, u64::MAX), 0, "relayed, nothing lost");
    assert!(relayed(&bed, 3) - relayed_before >= record.sent.len() as u64);
    report(format!(
        "relayed end to end: {} datagrams 1 -> 3 -> 2 delivered under key(s) {sealed_under:?}; \
         the relay holds only {} key id(s) of its own sessions, none of them",
        record.sent.len(),
        relay_keys.len()
    ));
}

/// Three sites rekeying every 10 s, the direct path between 1 and 2 cut
/// from the start.
const CUT_OFF_FROM_THE_START: &str = "
    [defaults]
    delay_ms = 2
    [[nodes]]
    id = 1
    rekey_after_s = 10
    [[nodes]]
    id = 2
    rekey_after_s = 10
    [[nodes]]
    id = 3
    rekey_after_s = 10
    [[paths]]
    between = [1, 2]
    cut = true
";

/// Long enough for every session 1 and 2 had at the start to have been
/// refused (15 s after it began), twice.
const PAST_TWO_SESSIONS: Duration = Duration::from_secs(35);

/// Two sites that never had a direct path handshake through the relay
/// (their sessions' keys seal the traffic it carries), and keep doing so
/// as their sessions expire: the traffic between them goes on.
#[test]
fn netns_e2e_sites_cut_off_from_the_start_talk_through_a_relay_across_rekeys() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bed = up(CUT_OFF_FROM_THE_START);
    wait_route(&bed, 1, 2, |r| r == "via 3");
    wait_route(&bed, 2, 1, |r| r == "via 3");
    let (to_2, to_1) = (flow(&bed, 1, 2), flow(&bed, 2, 1));
    let opens_from_1 = || -> Vec<u32> {
        key_ids_held(&bed, 2)
            .into_iter()
            .filter(|(peer, _)| *peer == 1)
            .map(|(_, id)| id)
            .collect()
    };
    let keys_before = opens_from_1();
    std::thread::sleep(PAST_TWO_SESSIONS);
    let keys_after = opens_from_1();
    let (to_2, to_1) = (finish(to_2), finish(to_1));
    assert!(
        keys_after.iter().all(|id| !keys_before.contains(id)),
        "node 2's keys from node 1 were all replaced: {keys_before:?}, then {keys_after:?}"
    );
    for (what, r) in [("1 -> 2", &to_2), ("2 -> 1", &to_1)] {
        assert_eq!(r.lost(0, u64::MAX), 0, "{what}: lost through the relay");
    }
    assert!(relayed(&bed, 3) >= (to_2.sent.len() + to_1.sent.len()) as u64);
    report(format!(
        "sites cut off from each other from the start: {} + {} datagrams through the relay over {} s, \
         none lost, while their sessions (handshaken through the relay) rekeyed every 10 s",
        to_2.sent.len(),
        to_1.sent.len(),
        PAST_TWO_SESSIONS.as_secs()
    ));
}
