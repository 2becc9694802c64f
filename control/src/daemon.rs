//! The control process: the routing core ([`Node`]) on a UDP socket and the
//! real clock, installing its routes in the dataplane.
//!
//! One thread runs the core: it waits on the control socket until the
//! core's next deadline, hands it what arrives (opened, authenticated and
//! checked against replay by the session [`Endpoint`], which answers
//! handshakes itself), and sends what it asks, sealed by the endpoint. A second
//! thread, the [`Installer`], pushes route snapshots to the dataplane's
//! API, so that a slow or restarting dataplane never holds up probing.
//! The local API ([`crate::api`]) answers `detourctl` on threads of its
//! own, and the metrics endpoint, if on, on another; both read the core
//! under the lock the core's thread takes for each turn of its loop. One
//! socket and one timer need no async runtime: a few threads do it with
//! nothing added to the build (docs/design.md, "The routing core does no
//! I/O").
//!
//! ## Installation
//!
//! Snapshots are built when the routes change and the node is settled
//! (see `node`, "Settling"); only the newest waits to go out, so a burst of
//! changes is one install. The installer re-sends the newest snapshot
//! whenever the dataplane has an older one or none, which is what a
//! restarted dataplane has: it checks the dataplane's health every
//! half second, and reconnects after an error. At start the control process
//! reads the routes the dataplane still forwards by, adopts them as its
//! current paths and numbers its snapshots above them, so that its own
//! restart changes nothing in the dataplane until a route really changes.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use detour_common::api::{Client, NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec};
use detour_common::local_socket::Server;
use detour_common::privileges;
use detour_common::wire::NodeId;
use tracing::{debug, info, warn};

use crate::api::{Core, Shared};
use crate::config::{Config, Peer};
use crate::data_plane_keys::KeyTracker;
use crate::handshake_relay;
use crate::message::{MAX_ENCODED_LEN, Message, Reject};
use crate::metrics;
use crate::node::Node;
use crate::paths::Hop;
use crate::session::{Encryption, Endpoint, Event, Recipient, Sent, TAG_LEN, TRANSPORT_HEADER_LEN};

/// The largest datagram on the control port: a sealed row of the most
/// links.
const MAX_DATAGRAM_LEN: usize = TRANSPORT_HEADER_LEN + MAX_ENCODED_LEN + TAG_LEN;

/// The longest the core sleeps, so that a stop request is seen promptly.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// How often the installer checks that the dataplane has our routes.
/// Half a second: a restarted dataplane forwards nothing (it has no keys)
/// until this check sees it and every peer is rekeyed.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);
/// How long the installer waits before reconnecting after an error.
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// Microseconds since the Unix epoch: the floor of snapshot versions, so
/// that a dataplane that lost the control process's count (both
/// restarted) still sees newer snapshots as newer. Only the dataplane on
/// this machine reads these numbers; nothing on the wire comes from a
/// clock.
fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Runs the control process until `stop` is set, reloading the
/// configuration from `path` whenever `reload` is set (SIGHUP) or
/// `detourctl reload` asks.
pub fn run(
    config: Config,
    path: &Path,
    stop: &AtomicBool,
    reload: &AtomicBool,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(config.listen)
        .with_context(|| format!("binding the control socket {}", config.listen))?;
    let clock = Instant::now();
    let (mut peers, mut peer_addrs) = peer_addresses(&config.peers);
    let mut endpoint = Endpoint::new(
        config.node_id,
        config.private_key.clone(),
        config.peers.iter().map(Peer::session_keys),
        incarnation()?,
        config.session.clone(),
    );
    endpoint.set_encryption(config.encryption);
    info!(public_key = %endpoint.public_key(), "identity");
    if config.encryption == Encryption::None {
        warn!(
            "encryption = \"none\": overlay data goes out in the clear and unauthenticated; \
             only for an underlay that is protected otherwise"
        );
    }
    // Row versions start at 1 in every run: a peer learns of the restart
    // from the handshake (see `session`, "Incarnations").
    let mut node = Node::new(
        config.node_id,
        peers.keys().copied(),
        config.node.clone(),
        1,
        Duration::ZERO,
    );
    let mut snapshots = SnapshotBuilder::new(&config, epoch_micros());
    let at_start = config.dataplane_socket.as_deref().and_then(dataplane_state);
    let dataplane_instance = at_start.as_ref().map(|(instance, _)| *instance);
    let adopted = at_start
        .as_ref()
        .is_some_and(|(_, routes)| routes.is_some());
    if let Some((_, Some(installed))) = at_start {
        info!(
            version = installed.version,
            routes = installed.routes.len(),
            "adopting the dataplane's routes"
        );
        snapshots.version = snapshots.version.max(installed.version);
        snapshots.adopted = Some(installed.routes.clone());
        node.assume_routes(installed.routes.iter().map(|r| {
            let hop = if r.via == r.dst {
                Hop::Direct
            } else {
                Hop::Via(r.via)
            };
            (r.dst, hop)
        }));
    }
    let core = Core {
        node,
        endpoint,
        peers: config.peers.clone(),
    };
    let shared = Arc::new(Shared::new(core, clock, config));
    shared.install().dataplane_instance = dataplane_instance;
    let config = &shared.config;
    let api = Server::bind(&config.api_socket, "control process")
        .with_context(|| "serving the control API".to_string())?;
    let metrics_listener = config
        .metrics_listen
        .map(|listen| {
            detour_common::metrics::bind(listen)
                .with_context(|| format!("serving metrics on {listen}"))
        })
        .transpose()?;
    // Every socket is bound and the key read: nothing from here on needs a
    // capability (the dataplane's socket is root's, and so is this
    // process). Before any thread starts, so that none has one.
    let kept = privileges::keep_only(&[]).context("giving up capabilities")?;
    debug!(capabilities = kept, "capabilities given up");
    api.spawn(Arc::clone(&shared))?;
    if let Some(listener) = metrics_listener {
        let metrics = Arc::clone(&shared);
        let endpoint = detour_common::metrics::serve(listener, move || metrics::render(&metrics))?;
        info!(%endpoint, "metrics");
    }
    let installer = config
        .dataplane_socket
        .as_ref()
        .map(|path| Installer::start(path.clone(), Arc::clone(&shared)));
    info!(
        node = %config.node_id,
        listen = %config.listen,
        peers = peers.len(),
        api = %api.path().display(),
        "control process running"
    );

    let mut buf = vec![0u8; MAX_DATAGRAM_LEN + 1];
    let mut routes_pending = false;
    let mut keys_pending = false;
    let mut keys = KeyTracker::default();
    let mut installed_once = false;
    let mut was_settled = false;
    while !stop.load(Ordering::Relaxed) {
        let wait = {
            let core = shared.core();
            core.node
                .poll_timeout()
                .saturating_sub(clock.elapsed())
                .clamp(Duration::from_millis(1), MAX_WAIT)
        };
        socket.set_read_timeout(Some(wait))?;
        let received = socket.recv_from(&mut buf);
        // The core is locked only from here to the end of the turn, never
        // while waiting: the API reads it in between.
        let mut core = shared.core();
        let now = clock.elapsed();
        if reload.swap(false, Ordering::Relaxed) || shared.reloads.pending() {
            let outcome = reload_config(path, config, &mut core, &mut snapshots, now);
            match &outcome {
                Ok(message) => {
                    info!("{message}");
                    (peers, peer_addrs) = peer_addresses(&core.peers);
                    routes_pending = true;
                }
                Err(e) => warn!(error = %e, "reload refused; the running configuration stays"),
            }
            shared.reloads.answer(outcome);
        }
        let Core { node, endpoint, .. } = &mut *core;
        match received {
            Ok((_, from)) if !peer_addrs.contains(&from.ip().to_canonical()) => {
                endpoint.record(Reject::Stranger);
                debug!(%from, reject = %Reject::Stranger, "control message dropped");
            }
            Ok((len, from)) => match endpoint.open(now, from, &buf[..len]) {
                Ok(Some((sender, message))) => {
                    let member_of = (node.members(), node.local());
                    let handled =
                        handshake_relay::receive(endpoint, now, &peers, member_of, sender, message)
                            .and_then(|message| match message {
                                Some(message) => node.handle_message(now, sender, &message),
                                None => Ok(()),
                            });
                    if let Err(reject) = handled {
                        endpoint.record(reject);
                        debug!(%from, %reject, "control message dropped");
                    }
                }
                Ok(None) => {}
                Err(reject) => debug!(%from, %reject, "control message dropped"),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ICMP errors from earlier sends (port unreachable) surface
            // here on Linux; the prober sees the loss anyway.
            Err(e) => debug!(error = %e, "control socket"),
        }
        while let Some(event) = endpoint.poll_event() {
            match event {
                Event::SessionUp(peer) => {
                    debug!(%peer, "session up");
                    node.session_up(peer);
                    let relay_toward = |p| handshake_relay::relay_toward(node, now, p);
                    handshake_relay::confirm(endpoint, now, &relay_toward, peer);
                }
                Event::PeerRestarted(peer) => {
                    info!(%peer, "peer restarted");
                    node.peer_restarted(now, peer);
                }
            }
        }
        let now = clock.elapsed();
        let instance = shared.install().dataplane_instance;
        if keys.update(now, endpoint, instance) {
            keys_pending = true;
            shared.install().dataplane_restarts = keys.restarts();
        }
        if node.poll_timeout() <= now {
            node.handle_timeout(now);
        }
        while let Some((to, message)) = node.poll_transmit() {
            let probe = match message {
                Message::Probe { seq } => Some(seq),
                _ => None,
            };
            match endpoint.send(now, to, message) {
                Ok(Sent::Dropped) => {
                    if let Some(seq) = probe {
                        node.probe_unsent(now, to, seq);
                    }
                }
                Ok(_) => {}
                Err(e) => warn!(peer = %to, error = %e, "cannot encode a control message"),
            }
        }
        let relay_toward = |p| handshake_relay::relay_toward(node, now, p);
        while let Some(transmit) = endpoint.poll_transmit() {
            let Some(transmit) =
                handshake_relay::divert(endpoint, now, &peers, &relay_toward, transmit)
            else {
                continue;
            };
            let addr = match transmit.to {
                Recipient::Node(id) => match peers.get(&id) {
                    Some(addr) => *addr,
                    None => continue,
                },
                Recipient::Address(addr) => addr,
            };
            if let Err(e) = socket.send_to(&transmit.datagram, addr) {
                debug!(%addr, error = %e, "control message not sent");
            }
        }
        routes_pending |= node.take_routes_changed();
        if node.is_settled() && !was_settled {
            was_settled = true;
            info!(routes = reachable(node), "routes settled");
        }
        // New keys go out at once where routes are in place already (the
        // dataplane's, adopted, or ours); otherwise with the first routes.
        let keys_due = keys_pending && (installed_once || adopted);
        if keys_due || (node.is_settled() && (routes_pending || !installed_once)) {
            routes_pending = false;
            keys_pending = false;
            installed_once = true;
            let snapshot = snapshots.build(node, &keys);
            debug!(version = snapshot.version, "routes changed");
            if let Some(installer) = &installer {
                installer.submit(snapshot);
            }
        }
    }
    info!("control process stopping; the dataplane keeps its routes");
    if let Some(installer) = installer {
        installer.stop();
    }
    Ok(())
}

/// Where each peer's control process listens, and the underlay addresses
/// its control messages come from.
fn peer_addresses(peers: &[Peer]) -> (BTreeMap<NodeId, SocketAddr>, HashSet<IpAddr>) {
    let listen = peers.iter().map(|p| (p.id, p.control_addr())).collect();
    let underlay = peers.iter().map(|p| p.underlay.to_canonical()).collect();
    (listen, underlay)
}

/// Reads the configuration at `path` again and applies it (see
/// [`crate::reload`]); what changed, or why nothing did.
fn reload_config(
    path: &Path,
    running: &Config,
    core: &mut Core,
    snapshots: &mut SnapshotBuilder,
    now: Duration,
) -> Result<String, String> {
    let new = Config::read(path).map_err(|e| e.to_string())?;
    let fixed = crate::reload::fixed_changes(running, &new);
    if !fixed.is_empty() {
        return Err(format!(
            "{}: {} cannot change while the control process runs (restart it); nothing was reloaded",
            path.display(),
            fixed.join(", ")
        ));
    }
    let message = crate::reload::apply(now, &mut core.node, &mut core.endpoint, &core.peers, &new);
    core.peers.clone_from(&new.peers);
    let version = snapshots.version;
    *snapshots = SnapshotBuilder::new(&new, version);
    Ok(message)
}

/// This run's incarnation: a random number, so that peers tell a restart
/// from a rekey without trusting any clock.
fn incarnation() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).context("reading the OS random source")?;
    Ok(u64::from_be_bytes(bytes))
}

fn reachable(node: &Node) -> usize {
    node.routes().iter().filter(|r| r.path.is_some()).count()
}

/// The run of the dataplane at `path` and the routes it has installed,
/// if it answers.
fn dataplane_state(path: &Path) -> Option<(u64, Option<RouteSnapshot>)> {
    let mut client = Client::connect(path).ok()?;
    let instance = client.health().ok()?.instance;
    Some((instance, client.routes().ok()?))
}

/// Turns the core's routes into the dataplane's snapshots.
struct SnapshotBuilder {
    local: NodeId,
    nodes: Vec<NodeSpec>,
    prefixes: Vec<PrefixSpec>,
    /// Ours, which the dataplane's WAN program then keeps strangers from.
    control_port: u16,
    /// The last version handed out.
    version: u64,
    /// The routes the dataplane had at start: what goes out with new keys
    /// until the node settled on routes of its own.
    adopted: Option<Vec<RouteSpec>>,
}

impl SnapshotBuilder {
    fn new(config: &Config, base: u64) -> SnapshotBuilder {
        let mut nodes = vec![NodeSpec {
            id: config.node_id,
            underlay: config.underlay,
        }];
        let mut prefixes: Vec<PrefixSpec> = config
            .prefixes
            .iter()
            .map(|&prefix| PrefixSpec {
                prefix,
                node: config.node_id,
            })
            .collect();
        for peer in &config.peers {
            nodes.push(NodeSpec {
                id: peer.id,
                underlay: peer.underlay,
            });
            prefixes.extend(peer.prefixes.iter().map(|&prefix| PrefixSpec {
                prefix,
                node: peer.id,
            }));
        }
        SnapshotBuilder {
            local: config.node_id,
            nodes,
            prefixes,
            control_port: config.listen.port(),
            version: base,
            adopted: None,
        }
    }

    /// A snapshot of the node's routes, numbered above every one before.
    ///
    /// A destination with no live path is sent direct, as RON falls back on
    /// the Internet's own path: the probes may be wrong (the peer's control
    /// process restarting, a burst of lost probes), and a packet sent on a
    /// path believed down may arrive, where one dropped here never does.
    /// The control process still shows it unreachable; the dataplane's
    /// `unreachable` drops are for nodes the snapshot does not know. (The
    /// core's routes are for the configured peers, every one in `nodes`.)
    fn build(&mut self, node: &Node, keys: &KeyTracker) -> RouteSnapshot {
        self.version = (self.version + 1).max(epoch_micros());
        let (sessions, dataplane_instance) = keys.snapshot_keys();
        let routes = match &self.adopted {
            Some(adopted) if !node.is_settled() => adopted.clone(),
            _ => node
                .routes()
                .iter()
                .map(|r| RouteSpec {
                    dst: r.dst,
                    via: r.next_hop().unwrap_or(r.dst),
                })
                .collect(),
        };
        RouteSnapshot {
            version: self.version,
            local: self.local,
            nodes: self.nodes.clone(),
            routes,
            prefixes: self.prefixes.clone(),
            control_port: Some(self.control_port),
            sessions,
            dataplane_instance,
        }
    }
}

/// The newest snapshot waiting to go out, and the stop flag.
#[derive(Default)]
struct Mailbox {
    newest: Option<RouteSnapshot>,
    fresh: bool,
    stop: bool,
}

/// Pushes snapshots to the dataplane on its own thread.
struct Installer {
    shared: Arc<(Mutex<Mailbox>, Condvar)>,
    thread: thread::JoinHandle<()>,
}

impl Installer {
    /// Installs into the dataplane at `path`, reporting how that goes in
    /// `status`.
    fn start(path: PathBuf, status: Arc<Shared>) -> Installer {
        let shared = Arc::new((Mutex::new(Mailbox::default()), Condvar::new()));
        let thread = thread::Builder::new()
            .name("installer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || install_loop(&path, &shared, &status)
            })
            .expect("spawning the installer thread");
        Installer { shared, thread }
    }

    /// Replaces whatever snapshot still waits with `snapshot`.
    fn submit(&self, snapshot: RouteSnapshot) {
        let (lock, wake) = &*self.shared;
        let mut mailbox = lock.lock().expect("installer mailbox");
        mailbox.newest = Some(snapshot);
        mailbox.fresh = true;
        wake.notify_one();
    }

    fn stop(self) {
        let (lock, wake) = &*self.shared;
        lock.lock().expect("installer mailbox").stop = true;
        wake.notify_one();
        let _ = self.thread.join();
    }
}

fn install_loop(path: &Path, shared: &(Mutex<Mailbox>, Condvar), status: &Shared) {
    let (lock, wake) = shared;
    let mut client: Option<Client> = None;
    let mut failing = false;
    loop {
        let (snapshot, fresh) = {
            let mailbox = lock.lock().expect("installer mailbox");
            let wait = if failing {
                RETRY_INTERVAL
            } else {
                HEALTH_INTERVAL
            };
            let (mut mailbox, _) = wake
                .wait_timeout_while(mailbox, wait, |m| !m.fresh && !m.stop)
                .expect("installer mailbox");
            if mailbox.stop {
                return;
            }
            let fresh = std::mem::take(&mut mailbox.fresh);
            (mailbox.newest.clone(), fresh)
        };
        let Some(snapshot) = snapshot else { continue };
        match install(path, &mut client, &snapshot, fresh) {
            Ok((instance, installed)) => {
                if failing {
                    info!(path = %path.display(), "dataplane reachable again");
                }
                let mut status = status.install();
                status.dataplane_instance = Some(instance);
                status.error = None;
                failing = false;
                let version = match installed {
                    Installed::Nothing => continue,
                    Installed::WithKeys(version) => version,
                    Installed::WithoutKeys(version) => {
                        info!(
                            "the dataplane restarted: routes installed without keys until every session is rekeyed"
                        );
                        version
                    }
                };
                info!(version, routes = snapshot.routes.len(), "routes installed");
                status.installed_version = Some(version);
                status.installs += 1;
            }
            Err(e) => {
                if !failing {
                    warn!(path = %path.display(), error = %e, "cannot install routes; retrying");
                }
                status.install().error = Some(e.to_string());
                client = None;
                failing = true;
            }
        }
    }
}

/// What an install did.
enum Installed {
    /// The dataplane had the snapshot already.
    Nothing,
    WithKeys(u64),
    /// The snapshot's keys were for another run of the dataplane: its
    /// routes went in alone.
    WithoutKeys(u64),
}

/// Installs `snapshot` if it is `fresh` or the dataplane lacks it, its
/// keys only if they are for the dataplane's current run; that run, and
/// what was installed.
fn install(
    path: &Path,
    client: &mut Option<Client>,
    snapshot: &RouteSnapshot,
    fresh: bool,
) -> io::Result<(u64, Installed)> {
    if client.is_none() {
        *client = Some(Client::connect(path)?);
    }
    let client = client.as_mut().expect("connected");
    let health = client.health()?;
    let lacks = health.route_version.is_none_or(|v| v < snapshot.version);
    if !fresh && !lacks {
        return Ok((health.instance, Installed::Nothing));
    }
    if !fresh {
        info!(
            installed = ?health.route_version,
            "the dataplane lacks our routes (restarted?); re-installing"
        );
    }
    if snapshot.has_keys() && snapshot.dataplane_instance != Some(health.instance) {
        let version = client.install(snapshot.without_keys())?;
        return Ok((health.instance, Installed::WithoutKeys(version)));
    }
    let version = client.install(snapshot.clone())?;
    Ok((health.instance, Installed::WithKeys(version)))
}
