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
                route_version: installed.lock().unwrap().last().map(|s| s.version),
                workers_running: 0,
                workers: 0,
                interfaces: Vec::new(),
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
