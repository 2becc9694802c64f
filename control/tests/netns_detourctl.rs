//! `detourctl` against the real daemons: three `detour-control` processes
//! in namespaces on one bridge, node 1 with a real `detour-dataplane` on
//! its `eth0` and both daemons' metrics on. Every command is run, its
//! human output read and its `--json` checked against the shape
//! docs/operations.md documents; then the error paths (a daemon down, a
//! socket without permission, an unknown peer), and a scrape of each
//! metrics endpoint through an OpenMetrics parser. Needs root.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use detour_common::api::Client;
use detour_testkit::{Process, ScratchPath, eventually};
use openmetrics_parser::{MetricNumber, OpenMetricsType, OpenMetricsValue};
use serde_json::Value;

mod support;
use support::Overlay;

const CONTROL_METRICS: &str = "127.0.0.1:9482";
const DATAPLANE_METRICS: &str = "127.0.0.1:9481";
/// Node 1's routes, fixed so that what detourctl shows does not depend on
/// how a loaded machine answers probes.
const PINS: &str = "[routing.pins]\n2 = \"direct\"\n3 = \"direct\"\n";

/// The dataplane's binary: built with the workspace, beside detourctl.
fn dataplane_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_detourctl")).with_file_name("detour-dataplane");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test builds it; cargo test -p detour-control alone does not)",
        path.display()
    );
    path
}

struct Node1 {
    overlay: Overlay,
    dataplane_socket: ScratchPath,
    _dataplane: Process,
}

impl Node1 {
    fn up() -> Node1 {
        let dataplane_socket = ScratchPath::new("dataplane.sock");
        let mut overlay = Overlay::configured(&format!(
            "[dataplane]\nsocket = {:?}\n\n[metrics]\nlisten = \"{CONTROL_METRICS}\"\n\n{PINS}",
            dataplane_socket.path()
        ));
        let dataplane = Process::spawn(
            overlay.nodes[0]
                .command(dataplane_binary())
                .args(["--node-id", "1", "--wan", "eth0"])
                .arg("--api-socket")
                .arg(dataplane_socket.path())
                .args(["--metrics-listen", DATAPLANE_METRICS])
                .env("DETOUR_LOG", "warn")
                .stdout(Stdio::null()),
        )
        .unwrap();
        let up = eventually(Duration::from_secs(10), || {
            Client::connect(dataplane_socket.path())
                .and_then(|mut c| c.health())
                .is_ok()
        });
        assert!(up, "the dataplane's API never answered");
        for i in 1..=3 {
            overlay.start(i);
        }
        Node1 {
            overlay,
            dataplane_socket,
            _dataplane: dataplane,
        }
    }

    /// `detourctl ARGS` against node `node`'s sockets.
    fn ctl_command(&self, node: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_detourctl"));
        cmd.arg("--control-socket")
            .arg(&self.overlay.api_sockets[node - 1])
            .arg("--dataplane-socket")
            .arg(self.dataplane_socket.path())
            .args(args);
        cmd
    }

    fn ctl(&self, node: usize, args: &[&str]) -> Output {
        self.ctl_command(node, args).output().unwrap()
    }

    /// `detourctl --json ARGS` on node `node`, which must succeed.
    fn json(&self, node: usize, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend(args);
        let out = self.ctl(node, &all);
        assert!(out.status.success(), "detourctl {args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// The human output of `detourctl ARGS` on node 1, which must succeed.
    fn human(&self, args: &[&str]) -> String {
        let out = self.ctl(1, args);
        assert!(out.status.success(), "detourctl {args:?}: {}", text(&out));
        assert!(out.stderr.is_empty(), "{}", text(&out));
        let human = String::from_utf8(out.stdout).unwrap();
        // Shown with the failure, or with --nocapture.
        eprintln!("$ detourctl {}\n{human}", args.join(" "));
        human
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `value` is an object with exactly these keys.
fn assert_keys(value: &Value, keys: &[&str]) {
    let mut got: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "in {value}");
}

/// A failed command: its exit code and its single line on stderr.
fn assert_fails(out: &Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {}", text(out));
    assert!(stderr.starts_with("detourctl: "), "{}", text(out));
    assert!(stderr.contains(says), "wanted {says:?}: {}", text(out));
    assert!(!stderr.contains("panicked"), "{}", text(out));
}

// The documented shapes (docs/operations.md, "detourctl --json").
const STATUS_CONTROL: &[&str] = &[
    "node_id",
    "version",
    "uptime_s",
    "listen",
    "settled",
    "drained",
    "peers",
    "peers_up",
    "routes_direct",
    "routes_relayed",
    "unreachable",
    "dataplane",
    "policy",
    "rejected",
    "metrics",
    "encryption",
];
const STATUS_DATAPLANE: &[&str] = &[
    "node_id",
    "version",
    "uptime_s",
    "instance",
    "route_version",
    "workers_running",
    "workers",
    "interfaces",
    // Key ids only, by peer: the keys never leave the dataplane.
    "keys",
];
const PEER: &[&str] = &[
    "id",
    "address",
    "state",
    "rtt_us",
    "rtt_dev_us",
    "loss",
    "last_heard_ms",
    "row_version",
    "drained",
    "public_key",
    "session_age_s",
];
const ROUTE: &[&str] = &[
    "dst",
    "path",
    "next_hop",
    "cost",
    "reason",
    "best",
    "best_cost",
    "direct_cost",
    "pin",
];

fn route_of(paths: &Value, dst: u64) -> Value {
    paths["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dst"] == dst)
        .cloned()
        .unwrap_or_else(|| panic!("no route to {dst} in {paths}"))
}

fn installed_via(node: &Node1, dst: u64) -> Option<u64> {
    let routes = node.json(1, &["routes"]);
    routes["routes"]
        .as_array()?
        .iter()
        .find(|r| r["dst"] == dst)
        .and_then(|r| r["via"].as_u64())
}

#[test]
fn netns_detourctl_drives_both_daemons_and_their_metrics_parse() {
    let node = Node1::up();

    // Settled, both peers up, routes installed.
    let settled = eventually(Duration::from_secs(15), || {
        let out = node.ctl(1, &["--json", "status"]);
        let Ok(status) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        status["control"]["settled"] == true
            && status["control"]["peers_up"] == 2
            && status["control"]["dataplane"]["installed_version"].is_u64()
    });
    assert!(settled, "{}", text(&node.ctl(1, &["status"])));
    // Both routes are pinned direct by the config (PINS): this test is
    // about what detourctl shows, and on a loaded machine the metric alone
    // can take a relay for a while (CI saw 20 ms to one peer, 0.3 ms to
    // the other). Route selection is tested in paths.rs and the simulator.
    let direct = eventually(Duration::from_secs(15), || {
        let out = node.ctl(1, &["--json", "paths"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|paths| {
            [2, 3]
                .iter()
                .all(|&dst| route_of(&paths, dst)["path"] == "direct")
        })
    });
    assert!(direct, "{}", text(&node.ctl(1, &["paths"])));

    // status
    let status = node.json(1, &["status"]);
    assert_keys(&status, &["control", "dataplane", "errors"]);
    assert_keys(&status["control"], STATUS_CONTROL);
    assert_keys(&status["dataplane"], STATUS_DATAPLANE);
    for held in status["dataplane"]["keys"].as_array().expect("key ids") {
        assert_keys(held, &["peer", "tx", "rx"]);
    }
    assert_eq!(status["errors"], serde_json::json!({}));
    assert_eq!(status["control"]["node_id"], 1);
    assert_eq!(status["dataplane"]["node_id"], 1);
    assert_eq!(
        status["dataplane"]["route_version"],
        status["control"]["dataplane"]["installed_version"]
    );
    let iface = &status["dataplane"]["interfaces"][0];
    assert_keys(iface, &["name", "role", "xdp_mode", "afxdp_mode"]);
    assert_eq!(
        (iface["name"].as_str(), iface["role"].as_str()),
        (Some("eth0"), Some("wan"))
    );
    assert_keys(
        &status["control"]["policy"],
        &[
            "metric",
            "hysteresis",
            "pins",
            "drained",
            "drained_by_peers",
        ],
    );
    assert_eq!(status["control"]["rejected"]["bad_mac"], 0);
    assert_eq!(status["control"]["metrics"], CONTROL_METRICS);
    assert_eq!(status["control"]["encryption"], "aead", "the default");
    let human = node.human(&["status"]);
    for line in [
        "node ",
        "2 of 2 up",
        "2 direct, 0 relayed, 0 unreachable",
        "aead: overlay data sealed end to end",
        "wan eth0: XDP ",
    ] {
        assert!(human.contains(line), "{line:?} in\n{human}");
    }

    // peers
    let peers = node.json(1, &["peers"]);
    let peers = peers.as_array().unwrap();
    assert_eq!(peers.len(), 2);
    for (peer, id) in peers.iter().zip([2, 3]) {
        assert_keys(peer, PEER);
        assert_eq!(peer["id"], id);
        assert_eq!(peer["state"], "up");
        assert_eq!(peer["address"], format!("192.0.2.{id}:6082"));
        assert!(peer["rtt_us"].as_u64().unwrap() < 100_000, "{peer}");
        assert!(peer["last_heard_ms"].as_u64().unwrap() < 2_000, "{peer}");
        assert_eq!(
            peer["public_key"],
            support::private_key(id).public_key().to_string()
        );
        assert!(peer["session_age_s"].as_u64().unwrap() < 180, "{peer}");
    }
    // No key material in any answer, as JSON or for people.
    let secret = support::private_key(1).to_base64();
    for command in ["status", "peers", "paths"] {
        for out in [node.json(1, &[command]).to_string(), node.human(&[command])] {
            assert!(
                !out.contains(secret.trim()),
                "{command} shows the private key"
            );
        }
    }
    let human = node.human(&["peers"]);
    assert!(human.starts_with("PEER"), "{human}");
    assert!(human.contains("192.0.2.2:6082  up"), "{human}");

    // paths
    let paths = node.json(1, &["paths"]);
    assert_keys(&paths, &["local", "metric", "nodes", "links", "routes"]);
    assert_eq!(paths["nodes"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        paths["links"].as_array().unwrap().len(),
        6,
        "every pair, both ways"
    );
    assert_keys(&paths["links"][0], &["from", "to", "up", "rtt_us", "loss"]);
    for dst in [2, 3] {
        let route = route_of(&paths, dst);
        assert_keys(&route, ROUTE);
        assert_eq!(route["path"], "direct", "{route}");
        assert_eq!(route["next_hop"], dst);
        assert_eq!(route["reason"], "pinned", "{route}");
        assert_eq!(route["pin"], "direct", "{route}");
    }
    let human = node.human(&["paths"]);
    assert!(human.contains("FROM \\ TO"), "{human}");
    assert!(human.contains("direct"), "{human}");

    // routes: the dataplane's snapshot
    let routes = node.json(1, &["routes"]);
    assert_keys(
        &routes,
        &[
            "version",
            "local",
            "nodes",
            "routes",
            "prefixes",
            "control_port",
        ],
    );
    assert_eq!(installed_via(&node, 2), Some(2));
    let human = node.human(&["routes"]);
    assert!(human.contains("route snapshot version"), "{human}");
    assert!(human.contains("10.2.0.0/16"), "{human}");

    // stats
    let stats = node.json(1, &["stats"]);
    assert_keys(
        &stats,
        &["workers", "total", "latency", "xdp", "control_strangers"],
    );
    assert_keys(
        &stats["workers"][0],
        &["queue", "core", "counters", "latency"],
    );
    let human = node.human(&["stats"]);
    assert!(human.contains("total"), "{human}");
    assert!(human.contains("drops by reason"), "{human}");

    // top, not on a terminal: frames one after another
    let out = node.ctl(1, &["--json", "top", "--interval", "0.2", "--count", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let frames: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(frames.len(), 2);
    assert_keys(
        &frames[0],
        &["interval_s", "workers", "total", "latency", "xdp_pps"],
    );
    let human = node.human(&["top", "--interval", "0.2", "--count", "1"]);
    assert!(human.contains("RX PKT/S"), "{human}");

    // route pin / unpin: installed in the dataplane too
    let out = node.human(&["route", "pin", "2", "via", "3"]);
    assert!(out.contains("pinned the path to 2: via 3"), "{out}");
    let pinned = eventually(Duration::from_secs(3), || {
        installed_via(&node, 2) == Some(3)
    });
    assert!(pinned, "{}", node.human(&["routes"]));
    let route = route_of(&node.json(1, &["paths"]), 2);
    assert_eq!(
        (route["path"].as_str(), route["reason"].as_str()),
        (Some("via 3"), Some("pinned"))
    );
    assert_eq!(route["pin"], "via 3");
    assert!(
        node.human(&["route", "pin", "2", "via", "3"])
            .contains("already")
    );
    let answer = node.json(1, &["route", "unpin", "2"]);
    assert_eq!(answer["response"], "done", "{answer}");
    // Unpinned, the metric chooses: whichever path it takes, the pin is
    // gone from the answer and the reason is the metric's own.
    let unpinned = route_of(&node.json(1, &["paths"]), 2);
    assert_eq!(unpinned["pin"], Value::Null, "{unpinned}");
    assert_ne!(unpinned["reason"], "pinned", "{unpinned}");
    // Pinned direct again, as the config had it: installed too.
    node.human(&["route", "pin", "2", "direct"]);
    let back = eventually(Duration::from_secs(3), || {
        installed_via(&node, 2) == Some(2)
    });
    assert!(back, "{}", node.human(&["routes"]));

    // The daemon refuses what cannot be: exit 1, one line.
    assert_fails(
        &node.ctl(1, &["route", "pin", "9", "direct"]),
        1,
        "9 is not a peer",
    );
    assert_fails(
        &node.ctl(1, &["route", "pin", "2", "via", "2"]),
        1,
        "is the destination itself",
    );
    assert_fails(
        &node.ctl(1, &["route", "pin", "2", "through", "3"]),
        1,
        "is not a path",
    );
    assert_fails(&node.ctl(1, &["node", "drain", "9"]), 1, "9 is not a peer");
    // Bad arguments: exit 2 (clap's own message).
    assert_eq!(
        node.ctl(1, &["route", "pin", "0", "direct"]).status.code(),
        Some(2)
    );

    // node drain: node 1 drains itself, node 2 learns it from its row.
    let out = node.human(&["node", "drain"]);
    assert!(out.contains("this node (1) drained"), "{out}");
    let learnt = eventually(Duration::from_secs(3), || {
        let peers = node.json(2, &["peers"]);
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == 1 && p["drained"] == true)
    });
    assert!(learnt, "{}", node.json(2, &["peers"]));
    assert_eq!(
        node.json(2, &["status"])["control"]["policy"]["drained_by_peers"],
        serde_json::json!([1])
    );
    assert_eq!(node.json(1, &["status"])["control"]["drained"], true);
    node.human(&["node", "undrain"]);
    let back = eventually(Duration::from_secs(3), || {
        node.json(2, &["status"])["control"]["policy"]["drained_by_peers"] == serde_json::json!([])
    });
    assert!(back);
    // A peer drained here only.
    assert!(node.human(&["node", "drain", "3"]).contains("3 drained"));
    assert_eq!(
        node.json(1, &["status"])["control"]["policy"]["drained"],
        serde_json::json!([3])
    );
    node.human(&["node", "undrain", "3"]);

    // Metrics: each endpoint, through an OpenMetrics parser.
    let control = scrape(&node, CONTROL_METRICS);
    let up = family(&control, "detour_control_peer_up", OpenMetricsType::Gauge);
    assert_eq!(up.iter_samples().count(), 2);
    for sample in up.iter_samples() {
        assert!(
            matches!(sample.value, OpenMetricsValue::Gauge(MetricNumber::Int(1))),
            "{sample:?}"
        );
    }
    family(
        &control,
        "detour_control_peer_rtt_seconds",
        OpenMetricsType::Gauge,
    );
    family(
        &control,
        "detour_control_peer_loss_ratio",
        OpenMetricsType::Gauge,
    );
    let changes = family(
        &control,
        "detour_control_route_changes",
        OpenMetricsType::Counter,
    );
    assert!(
        counter(changes.iter_samples().next().unwrap()) >= 3.0,
        "the first two routes and the pin"
    );
    let rejected = family(
        &control,
        "detour_control_messages_rejected",
        OpenMetricsType::Counter,
    );
    assert_eq!(
        rejected.iter_samples().count(),
        detour_control::message::Reject::ALL.len(),
        "every reason"
    );

    let dataplane = scrape(&node, DATAPLANE_METRICS);
    let drops = family(
        &dataplane,
        "detour_dataplane_dropped_packets",
        OpenMetricsType::Counter,
    );
    assert_eq!(
        drops.get_label_names(),
        ["queue".to_string(), "reason".to_string()]
    );
    assert_eq!(
        drops.iter_samples().count(),
        19,
        "every reason (the keys' five, already_relayed, ce_not_ect, hold_expired and bad_checksum among them), for the one queue"
    );
    let socket_drops = family(
        &dataplane,
        "detour_dataplane_socket_dropped_packets",
        OpenMetricsType::Counter,
    );
    assert_eq!(
        socket_drops.get_label_names(),
        ["queue".to_string(), "reason".to_string()]
    );
    assert_eq!(
        socket_drops.iter_samples().count(),
        2,
        "ring_full and no_frame, for the one queue"
    );
    family(
        &dataplane,
        "detour_dataplane_received_packets",
        OpenMetricsType::Counter,
    );
    family(
        &dataplane,
        "detour_dataplane_forwarded_packets",
        OpenMetricsType::Counter,
    );
    family(
        &dataplane,
        "detour_dataplane_xdp_packets",
        OpenMetricsType::Counter,
    );
    let latency = family(
        &dataplane,
        "detour_dataplane_forwarding_latency_seconds",
        OpenMetricsType::Histogram,
    );
    let OpenMetricsValue::Histogram(h) = &latency.iter_samples().next().unwrap().value else {
        panic!("{latency:?}");
    };
    assert_eq!(h.buckets.len(), 17);
    assert_eq!(h.buckets.last().unwrap().upper_bound, f64::INFINITY);
    let version = family(
        &dataplane,
        "detour_dataplane_route_version",
        OpenMetricsType::Gauge,
    );
    assert!(version.iter_samples().next().is_some());

    // No permission: the sockets are root's, mode 0600.
    let out = node
        .ctl_command(1, &["peers"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_fails(&out, 4, "no permission");

    // A daemon down: no socket, or one nobody answers on.
    let nowhere = ScratchPath::new("nothing.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_detourctl"))
        .arg("--control-socket")
        .arg(nowhere.path())
        .arg("peers")
        .output()
        .unwrap();
    assert_fails(&out, 3, "is not running: no socket at");
    let dead = ScratchPath::new("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(dead.path()).unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_detourctl"))
        .arg("--dataplane-socket")
        .arg(dead.path())
        .arg("stats")
        .output()
        .unwrap();
    assert_fails(&out, 3, "nobody answers");

    // The control process stops: status says so, shows the dataplane and
    // exits 3.
    let mut overlay = node.overlay;
    overlay.stop(1);
    let out = Command::new(env!("CARGO_BIN_EXE_detourctl"))
        .arg("--control-socket")
        .arg(&overlay.api_sockets[0])
        .arg("--dataplane-socket")
        .arg(node.dataplane_socket.path())
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str, says: &str| {
        human
            .lines()
            .any(|l| l.starts_with(key) && l[key.len()..].trim_start().starts_with(says))
    };
    assert!(
        line("control ", "DOWN: the control process"),
        "{}",
        text(&out)
    );
    assert!(line("dataplane ", "running"), "{}", text(&out));
}

/// Handshake initiations to node 1's control port from an address that is
/// no peer's stop at its dataplane's WAN program: counted by source in
/// `detourctl stats`, never seen by the control process (its rejects do
/// not move, and 10,000 a second cost it no more CPU than the same time
/// idle), while its peers stay up. Node 2, without a dataplane, drops them in its control
/// process, by source, before anything else.
#[test]
fn netns_a_strangers_flood_of_the_control_port_stops_at_the_nic() {
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 5;
    let node = Node1::up();
    let settled = eventually(Duration::from_secs(15), || {
        let out = node.ctl(1, &["--json", "status"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|s| {
            s["control"]["peers_up"] == 2 && s["control"]["dataplane"]["installed_version"].is_u64()
        })
    });
    assert!(settled, "{}", text(&node.ctl(1, &["status"])));
    // The stranger: another address on node 3's link, in no one's config.
    let stranger = &node.overlay.nodes[2];
    stranger
        .ip(&["addr", "add", "192.0.2.77/24", "dev", "eth0"])
        .unwrap();
    let socket = stranger
        .enter(|| UdpSocket::bind("192.0.2.77:0"))
        .unwrap()
        .unwrap();
    let rejected = |node: &Node1| -> u64 {
        let status = node.json(1, &["status"]);
        let reasons = status["control"]["rejected"].as_object().unwrap().clone();
        reasons.values().map(|n| n.as_u64().unwrap()).sum()
    };
    let pid = node.overlay.pid(1).unwrap();
    let cpu = || {
        let (user, system) =
            detour_testkit::cpu_ns(Path::new(&format!("/proc/{pid}/stat"))).unwrap();
        user + system
    };
    let rejected_before = rejected(&node);

    // The same time idle, then flooded.
    let idle_from = cpu();
    std::thread::sleep(Duration::from_secs(SECONDS));
    let idle_ns = cpu() - idle_from;
    // Each the size and shape of a handshake initiation (version 2, type
    // 1), its Noise bytes and MACs made up.
    let mut garbage = [0x5au8; detour_control::session::INITIATION_LEN];
    garbage[..4].copy_from_slice(&[b'd', b't', detour_control::session::VERSION, 1]);
    let flood_from = cpu();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        let due = start.elapsed().as_nanos() as u64 * RATE / 1_000_000_000;
        while sent < due {
            socket.send_to(&garbage, "192.0.2.1:6082").unwrap();
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // What is in flight lands.
    std::thread::sleep(Duration::from_millis(200));
    let flood_ns = cpu() - flood_from;

    let stats = node.json(1, &["stats"]);
    let dropped = stats["xdp"]["wan_drop_control_stranger"].as_u64().unwrap();
    detour_testkit::report(
        env!("CARGO_TARGET_TMPDIR"),
        &format!(
            "control port flooded by a stranger: {sent} handshake initiations in {SECONDS} s, {dropped} dropped at the NIC; \
             the control process spent {:.1} ms of CPU flooded, {:.1} ms idle over the same time",
            flood_ns as f64 / 1e6,
            idle_ns as f64 / 1e6
        ),
    );
    assert_eq!(dropped, sent, "every datagram dropped by the WAN program");
    assert_eq!(
        stats["control_strangers"][0],
        serde_json::json!({"addr": "192.0.2.77", "dropped": sent})
    );
    let human = node.human(&["stats"]);
    assert!(
        human.contains(&format!("dropped from strangers: 192.0.2.77 {sent}")),
        "{human}"
    );
    assert_eq!(
        rejected(&node),
        rejected_before,
        "the control process saw some"
    );
    // A tick is 10 ms; parsing and refusing 50,000 datagrams in userspace
    // would cost hundreds of ms.
    assert!(
        flood_ns <= idle_ns + 50_000_000,
        "the control process spent {flood_ns} ns flooded, {idle_ns} ns idle"
    );
    let status = node.json(1, &["status"]);
    assert_eq!(status["control"]["peers_up"], 2, "{status}");

    // Node 2 has no dataplane: its control process drops them itself, by
    // their source, before it computes anything.
    let before = node.json(2, &["status"])["control"]["rejected"].clone();
    for _ in 0..100 {
        socket.send_to(&garbage, "192.0.2.2:6082").unwrap();
    }
    let counted = eventually(Duration::from_secs(5), || {
        node.json(2, &["status"])["control"]["rejected"]["stranger"]
            == before["stranger"].as_u64().unwrap() + 100
    });
    let after = node.json(2, &["status"])["control"]["rejected"].clone();
    assert!(counted, "{before} -> {after}");
    assert_eq!(after["malformed"], before["malformed"], "{after}");
}

/// `GET /metrics` at `addr` in node 1's namespace, parsed.
fn scrape(
    node: &Node1,
    addr: &str,
) -> openmetrics_parser::MetricsExposition<OpenMetricsType, OpenMetricsValue> {
    let response = node.overlay.nodes[0]
        .enter(|| {
            let mut stream = TcpStream::connect(addr)?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok::<_, std::io::Error>(response)
        })
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    openmetrics_parser::openmetrics::parse_openmetrics(body)
        .unwrap_or_else(|e| panic!("{addr}: {e:?}\n{body}"))
}

fn family<'a>(
    exposition: &'a openmetrics_parser::MetricsExposition<OpenMetricsType, OpenMetricsValue>,
    name: &str,
    kind: OpenMetricsType,
) -> &'a openmetrics_parser::MetricFamily<OpenMetricsType, OpenMetricsValue> {
    let family = exposition
        .families
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", exposition.families.keys()));
    assert_eq!(family.family_type, kind, "{name}");
    assert!(!family.help.is_empty(), "{name} has help");
    family
}

fn counter(sample: &openmetrics_parser::Sample<OpenMetricsValue>) -> f64 {
    match &sample.value {
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        other => panic!("not a counter: {other:?}"),
    }
}
