//! Three real `detour-control` processes in network namespaces on one
//! bridge, probing each other over UDP. Node 1 installs into a stand-in
//! dataplane: a Unix socket speaking the dataplane's API (docs/
//! dataplane-api.md), which records every snapshot, so that the test sees
//! exactly what a dataplane would be told. Needs root.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use detour_common::api::{Health, Request, Response, RouteSnapshot};
use detour_common::wire::NodeId;
use detour_testkit::{ScratchPath, eventually};

mod support;
use support::Overlay;

/// What the stand-in dataplane was told, in order.
type Installed = Arc<Mutex<Vec<RouteSnapshot>>>;

/// A stand-in for `detour-dataplane`'s API on `path`: answers installs,
/// health and routes like the real one, until the returned guard drops.
struct FakeDataplane {
    installed: Installed,
    path: std::path::PathBuf,
    /// Every connection, closed on drop as a dataplane that exits closes
    /// them.
    connections: Arc<Mutex<Vec<std::os::unix::net::UnixStream>>>,
}

impl FakeDataplane {
    fn start(path: &std::path::Path) -> FakeDataplane {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let installed: Installed = Arc::default();
        let connections: Arc<Mutex<Vec<_>>> = Arc::default();
        let (shared, open) = (Arc::clone(&installed), Arc::clone(&connections));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                open.lock().unwrap().push(stream.try_clone().unwrap());
                let shared = Arc::clone(&shared);
                thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeDataplane {
            installed,
            path: path.to_owned(),
            connections,
        }
    }

    fn snapshots(&self) -> Vec<RouteSnapshot> {
        self.installed.lock().unwrap().clone()
    }

    fn latest(&self) -> Option<RouteSnapshot> {
        self.installed.lock().unwrap().last().cloned()
    }
}

impl Drop for FakeDataplane {
    fn drop(&mut self) {
        // The listener thread lingers blocked in accept; with the path
        // gone no one reaches it, as with a dataplane that exited.
        let _ = std::fs::remove_file(&self.path);
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The fake dataplane's run, which the keys it is sent must be for.
const FAKE_INSTANCE: u64 = 7;

fn serve(stream: std::os::unix::net::UnixStream, installed: &Installed) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Install { snapshot }) => {
                let mut all = installed.lock().unwrap();
                if all.last().is_some_and(|s| s.version >= snapshot.version) {
                    Response::Error {
                        message: "not newer".into(),
                    }
                } else {
                    let version = snapshot.version;
                    all.push(snapshot);
                    Response::Installed { version }
                }
            }
            Ok(Request::Health) => Response::Health(Health {
                node_id: NodeId(1),
                version: "fake".into(),
                uptime_s: 0,
                instance: FAKE_INSTANCE,
                route_version: installed.lock().unwrap().last().map(|s| s.version),
                workers_running: 0,
                workers: 0,
                interfaces: Vec::new(),
                keys: None,
            }),
            Ok(Request::Routes) => Response::Routes {
                snapshot: installed.lock().unwrap().last().cloned(),
            },
            _ => Response::Error {
                message: "unsupported".into(),
            },
        };
        let mut out = serde_json::to_string(&response).unwrap();
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// The next hop node 1 installed toward `dst`.
fn via(snapshot: &RouteSnapshot, dst: u16) -> Option<u16> {
    snapshot
        .routes
        .iter()
        .find(|r| r.dst == NodeId(dst))
        .map(|r| r.via.0)
}

#[test]
fn netns_control_installs_routes_fails_over_and_survives_restarts() {
    let socket = ScratchPath::new("dataplane.sock");
    let dataplane = FakeDataplane::start(socket.path());
    let mut overlay = Overlay::up(&format!("[dataplane]\nsocket = {:?}\n", socket.path()));

    // Settled: node 1 reaches 2 and 3, with every node and prefix.
    let settled = eventually(Duration::from_secs(10), || {
        dataplane
            .latest()
            .is_some_and(|s| via(&s, 2).is_some() && via(&s, 3).is_some())
    });
    assert!(settled, "routes installed: {:?}", dataplane.snapshots());
    let first = dataplane.latest().unwrap();
    assert_eq!(first.local, NodeId(1));
    assert_eq!(first.nodes.len(), 3);
    assert_eq!(first.prefixes.len(), 3);
    assert!(
        dataplane
            .snapshots()
            .iter()
            .all(|s| via(s, 2).is_some() && via(s, 3).is_some()),
        "nothing was installed before the view settled: {:?}",
        dataplane.snapshots()
    );

    // The link 1–2 dies: node 1 goes to 2 through 3.
    let cut = Instant::now();
    overlay.cut_1_2();
    let failed_over = eventually(Duration::from_secs(5), || {
        dataplane.latest().is_some_and(|s| via(&s, 2) == Some(3))
    });
    assert!(failed_over, "no failover: {:?}", dataplane.latest());
    eprintln!("failover installed {:?} after the cut", cut.elapsed());
    assert_eq!(via(&dataplane.latest().unwrap(), 3), Some(3));

    // The dataplane restarts with no routes: they are pushed again.
    let before_restart = dataplane.latest().unwrap();
    drop(dataplane);
    let dataplane = FakeDataplane::start(socket.path());
    let repushed = eventually(Duration::from_secs(5), || {
        dataplane
            .latest()
            .is_some_and(|s| s.routes == before_restart.routes)
    });
    assert!(repushed, "not re-pushed: {:?}", dataplane.latest());

    // The control process restarts: nothing it installs drops a route.
    let count = dataplane.snapshots().len();
    overlay.stop(1);
    overlay.start(1);
    thread::sleep(Duration::from_secs(4));
    let after: Vec<_> = dataplane.snapshots().split_off(count);
    assert!(
        after
            .iter()
            .all(|s| via(s, 2) == Some(3) && via(s, 3) == Some(3)),
        "a restart disturbed the routes: {after:?}"
    );
}

/// The status of node `i`'s control process.
fn status(overlay: &Overlay, i: usize) -> Option<detour_control::api::Status> {
    let mut client = detour_control::api::Client::connect(&overlay.api_sockets[i - 1]).ok()?;
    match client.request(&detour_control::api::Request::Status).ok()? {
        detour_control::api::Response::Status(status) => Some(*status),
        _ => None,
    }
}

/// libfaketime, as Debian installs it (`scripts/setup` does).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Node 2's control process restarts with its clock an hour behind
/// (libfaketime moves its wall clock, not its monotonic one): its peers
/// take it back at once, since nothing on the wire comes from a clock.
/// (With sequence numbers from the wall clock, as before sessions, every
/// message of the restarted node read as a replay for the next hour.)
#[test]
fn netns_control_a_node_whose_clock_stepped_back_an_hour_stays_in_the_overlay() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: run scripts/setup (it installs faketime)"
    );
    let mut overlay = Overlay::up("[dataplane]\ninstall = false\n");
    let all_up = |overlay: &Overlay| {
        (1..=3).all(|i| status(overlay, i).is_some_and(|s| s.settled && s.peers_up == 2))
    };
    assert!(
        eventually(Duration::from_secs(10), || all_up(&overlay)),
        "never settled"
    );

    overlay.stop(2);
    let restarted = Instant::now();
    let clock_back = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "-1h"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ];
    overlay.start_with(2, &clock_back);
    // The clock really is an hour behind in what the test starts so.
    let shifted = overlay.nodes[1]
        .command("date")
        .arg("+%s")
        .envs(clock_back)
        .output()
        .unwrap();
    let shifted: u64 = String::from_utf8_lossy(&shifted.stdout)
        .trim()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (3590..=3610).contains(&(now - shifted)),
        "faketime moved the clock by {}",
        now - shifted
    );

    let back = eventually(Duration::from_secs(10), || {
        all_up(&overlay) && status(&overlay, 2).is_some_and(|s| s.uptime_s >= 1)
    });
    assert!(back, "node 2 with its clock back is not in the overlay");
    eprintln!(
        "node 2, its clock an hour back, was up everywhere {:?} after its restart",
        restarted.elapsed()
    );
    for i in [1, 3] {
        let rejected = status(&overlay, i).unwrap().rejected;
        assert_eq!(rejected["replayed"], 0, "node {i}: {rejected:?}");
    }
}

/// Asks node `i`'s control process to reload its configuration.
fn reload(overlay: &Overlay, i: usize) -> detour_control::api::Response {
    let mut client = detour_control::api::Client::connect(&overlay.api_sockets[i - 1]).unwrap();
    client
        .request(&detour_control::api::Request::Reload)
        .unwrap()
}

/// Node 1's file without its `[[peers]]` section for `id` (its lines up
/// to the blank line after them).
fn without_peer(text: &str, id: u16) -> String {
    let start = text
        .find(&format!("[[peers]]\nid = {id}\n"))
        .expect("the peer is in the file");
    let end = text[start..]
        .find("\n\n")
        .map_or(text.len(), |e| start + e + 1);
    format!("{}{}", &text[..start], &text[end..])
}

/// A peer removed from node 1's file (SIGHUP) is cut off within a second
/// (node 3 then sees node 1 down, as node 1's sessions with it are gone),
/// and added back (`detourctl reload`) is up again within a second; a
/// file with an error, or a change that needs a restart, is refused with
/// where it is, and the running configuration stays. Then node 2's key is
/// replaced, its peers list the new one, and all reload: the overlay
/// stays whole under the new key.
#[test]
fn netns_control_a_reload_adds_and_removes_peers_within_a_second() {
    let overlay = Overlay::up("[dataplane]\ninstall = false\n");
    let up = |overlay: &Overlay, i, peers| {
        status(overlay, i).is_some_and(|s| s.settled && s.peers == peers && s.peers_up == peers)
    };
    assert!(eventually(Duration::from_secs(10), || up(&overlay, 1, 2)
        && up(&overlay, 3, 2)));
    let file = overlay.configs[0].clone();
    let original = std::fs::read_to_string(&file).unwrap();

    std::fs::write(&file, without_peer(&original, 3)).unwrap();
    let pid = overlay.pid(1).unwrap();
    let removed = Instant::now();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let cut = eventually(Duration::from_secs(1), || {
        status(&overlay, 1).is_some_and(|s| s.peers == 1 && s.peers_up == 1)
    });
    assert!(
        cut,
        "node 1 still has 3 as a peer: {:?}",
        status(&overlay, 1)
    );
    let dropped = eventually(Duration::from_secs(2), || {
        // From an address that is no peer's any more: dropped first thing.
        status(&overlay, 1).is_some_and(|s| s.rejected["stranger"] > 0)
    });
    assert!(dropped, "node 3's messages still open at node 1");
    let seen_down = eventually(Duration::from_secs(2), || {
        status(&overlay, 3).is_some_and(|s| s.peers_up == 1)
    });
    assert!(seen_down, "node 3 still sees node 1 up");
    eprintln!(
        "peer 3 removed by SIGHUP: node 3 saw node 1 down {:?} later",
        removed.elapsed()
    );
    assert!(overlay.pid(1) == Some(pid), "node 1 still runs");

    // An error: refused, with its line; nothing changes.
    std::fs::write(
        &file,
        format!("{}\n[probe]\ninterval_ms = 0\n", without_peer(&original, 3)),
    )
    .unwrap();
    match reload(&overlay, 1) {
        detour_control::api::Response::Error { message } => {
            assert!(
                message.contains("probe.interval_ms: 0 is not allowed"),
                "{message}"
            )
        }
        other => panic!("a bad file was taken: {other:?}"),
    }
    std::fs::write(
        &file,
        original.replace("underlay = \"192.0.2.1\"", "underlay = \"192.0.2.9\""),
    )
    .unwrap();
    match reload(&overlay, 1) {
        detour_control::api::Response::Error { message } => {
            assert!(
                message.contains("underlay cannot change while the control process runs"),
                "{message}"
            )
        }
        other => panic!("a fixed key changed live: {other:?}"),
    }
    assert_eq!(
        status(&overlay, 1).unwrap().peers,
        1,
        "the running configuration stays"
    );

    // Back: node 3 is a peer again within a second.
    std::fs::write(&file, &original).unwrap();
    let added = Instant::now();
    match reload(&overlay, 1) {
        detour_control::api::Response::Done { message } => {
            assert!(message.contains("peers added: 3"), "{message}")
        }
        other => panic!("reload refused: {other:?}"),
    }
    let back = eventually(Duration::from_secs(1), || {
        up(&overlay, 1, 2) && up(&overlay, 3, 2)
    });
    assert!(back, "node 3 not back: {:?}", status(&overlay, 1));
    eprintln!(
        "peer 3 added back by detourctl reload: up both ways {:?} later",
        added.elapsed()
    );

    // Node 2 gets a new key; its peers list it; all three reload: node 2
    // is back under its new key, and its old one opens nothing.
    let node2 = std::fs::read_to_string(&overlay.configs[1]).unwrap();
    let key_file = node2
        .lines()
        .find_map(|l| l.strip_prefix("private_key_file = "))
        .map(|quoted| quoted.trim_matches('"').to_string())
        .unwrap();
    let old_public = support::private_key(2).public_key().to_string();
    let new_key = detour_control::keys::PrivateKey::from_bytes([0x99; 32]);
    std::fs::write(&key_file, new_key.to_base64()).unwrap();
    for i in [1, 3] {
        let text = std::fs::read_to_string(&overlay.configs[i - 1]).unwrap();
        assert!(text.contains(&old_public));
        std::fs::write(
            &overlay.configs[i - 1],
            text.replace(&old_public, &new_key.public_key().to_string()),
        )
        .unwrap();
    }
    let rotated = Instant::now();
    for i in [1, 3, 2] {
        assert!(
            matches!(
                reload(&overlay, i),
                detour_control::api::Response::Done { .. }
            ),
            "node {i}"
        );
    }
    let back = eventually(Duration::from_secs(2), || {
        (1..=3).all(|i| up(&overlay, i, 2))
    });
    assert!(
        back,
        "node 2 not back under its new key: {:?}",
        status(&overlay, 1)
    );
    // Every session started again under the new key: a link that could
    // not handshake would be down within three probes (600 ms).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        (1..=3).all(|i| up(&overlay, i, 2)),
        "{:?}",
        status(&overlay, 1)
    );
    eprintln!(
        "node 2's key replaced: up everywhere {:?} after the reloads, and still",
        rotated.elapsed()
    );
}
