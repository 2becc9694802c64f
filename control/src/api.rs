//! The control process's local API: what `detourctl` asks of
//! `detour-control` over its Unix socket (`api.socket`), and what it
//! answers.
//!
//! The transport is the dataplane's: one JSON object per line each way
//! ([`detour_common::local_socket`], mode 0600). The shapes here are the
//! contract, documented in docs/operations.md with `detourctl --json`, which
//! prints them as they come: fields are added, never renamed or removed.
//!
//! The routing core runs on the daemon's thread; the API reads and changes
//! it under the same lock ([`Shared`]), held by the daemon only while it
//! handles an event, never while it waits. A change of policy is picked up
//! by the daemon's loop within its longest wait (100 ms).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use detour_common::local_socket::{Connection, Handler};
use detour_common::wire::NodeId;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::message::Reject;
use crate::node::Node;
use crate::paths::{Hop, Hysteresis, check_relay};
use crate::session::Endpoint;

/// A request to the control process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    Peers,
    Paths,
    /// Pin the path to `dst`: `"direct"` or `"via <relay>"`.
    Pin {
        dst: NodeId,
        path: String,
    },
    Unpin {
        dst: NodeId,
    },
    /// Drain `node`: this node (`None`, or its own id) stops being anyone's
    /// relay, announced in its link state; a peer is no longer used as a
    /// relay by this node.
    Drain {
        node: Option<NodeId>,
    },
    Undrain {
        node: Option<NodeId>,
    },
    /// Read the configuration file again and apply what may change live
    /// (peers, keys, prefixes, routing policy), or refuse it whole.
    Reload,
}

/// The control process's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    Peers {
        peers: Vec<PeerView>,
    },
    Paths(PathsView),
    /// A change was made (or there was nothing to change): what it did.
    Done {
        message: String,
    },
    /// The request was refused or could not be read; nothing changed.
    Error {
        message: String,
    },
}

/// The control process at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    /// The control process's version (its crate version).
    pub version: String,
    pub uptime_s: u64,
    /// The control socket (UDP).
    pub listen: SocketAddr,
    /// Whether the first routes were computed (every peer judged, or 3 s
    /// passed).
    pub settled: bool,
    /// Whether this node is drained (relays for no one).
    pub drained: bool,
    pub peers: usize,
    pub peers_up: usize,
    pub routes_direct: usize,
    pub routes_relayed: usize,
    pub unreachable: usize,
    /// Route installation; `None` when it runs without a dataplane.
    pub dataplane: Option<InstallStatus>,
    pub policy: PolicyView,
    /// Control messages dropped, by reason (every reason, zeros included).
    pub rejected: BTreeMap<String, u64>,
    /// Where the Prometheus endpoint listens, if it is on.
    pub metrics: Option<SocketAddr>,
    /// `encryption`: "aead" (overlay data sealed end to end) or "none".
    pub encryption: String,
}

/// How route installation into the dataplane goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallStatus {
    pub socket: PathBuf,
    /// The version of the last snapshot the dataplane took from us.
    pub installed_version: Option<u64>,
    pub installs: u64,
    /// The last error, while installing fails (the dataplane is down).
    pub error: Option<String>,
    /// The dataplane's run ([`detour_common::api::Health::instance`]), as
    /// last seen.
    pub dataplane_instance: Option<u64>,
    /// How often the dataplane was seen to have restarted (and every
    /// session was rekeyed, so that its keys came from new handshakes).
    pub dataplane_restarts: u64,
}

/// The routing policy in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    pub metric: String,
    pub hysteresis: bool,
    pub pins: Vec<PinView>,
    /// Peers this node does not relay through (configured, or `detourctl
    /// node drain <peer>`).
    pub drained: Vec<NodeId>,
    /// Peers that drained themselves (their link state says so).
    pub drained_by_peers: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinView {
    pub dst: NodeId,
    pub path: String,
}

/// One peer as this node's probes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub id: NodeId,
    /// Its control address.
    pub address: SocketAddr,
    /// `up`, `down`, or `starting` (not judged yet).
    pub state: String,
    /// Smoothed RTT and its mean deviation, microseconds; `None` before
    /// the first answer.
    pub rtt_us: Option<u64>,
    pub rtt_dev_us: Option<u64>,
    /// Share of the last probes lost, 0 to 1.
    pub loss: f64,
    /// Milliseconds since it last answered a probe; `None`: never.
    pub last_heard_ms: Option<u64>,
    /// The version of its link-state row held; `None`: none held.
    pub row_version: Option<u64>,
    /// Whether it drained itself.
    pub drained: bool,
    /// Its public key, base64 (as its configuration lists it).
    #[serde(default)]
    pub public_key: String,
    /// Seconds since the session messages now go out on was set up;
    /// `None`: no session (yet).
    #[serde(default)]
    pub session_age_s: Option<u64>,
}

/// The link table and each destination's choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathsView {
    pub local: NodeId,
    /// The metric costs are in: seconds for `latency` and `combined`, a
    /// loss fraction for `loss`.
    pub metric: String,
    /// Every member, this node included, ascending.
    pub nodes: Vec<NodeId>,
    /// Every link known: this node's from its probes (as advertised), the
    /// others' from their link state.
    pub links: Vec<LinkView>,
    pub routes: Vec<RouteView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    pub from: NodeId,
    pub to: NodeId,
    pub up: bool,
    pub rtt_us: u64,
    pub loss: f64,
}

/// One destination: the path in use and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub dst: NodeId,
    /// The path in use (`"direct"`, `"via 3"`); `None`: unreachable.
    pub path: Option<String>,
    /// Where packets for `dst` are sent: `dst` or the relay.
    pub next_hop: Option<NodeId>,
    /// Its cost by the metric; `None` when unreachable (or nothing gets
    /// through).
    pub cost: Option<f64>,
    /// `best`, `hysteresis` (a cheaper path is not enough cheaper),
    /// `pinned`, `pin-down` (the pinned path is down), `unreachable`, or
    /// `pending` (links changed; the next computation, within
    /// `routing.compute_interval_ms`, may change the path).
    pub reason: String,
    /// The cheapest live path and its cost, chosen or not.
    pub best: Option<String>,
    pub best_cost: Option<f64>,
    /// The direct path's cost, if it is live.
    pub direct_cost: Option<f64>,
    pub pin: Option<String>,
}

/// The routing core and its endpoint, as the daemon's loop and the API
/// share them.
pub struct Core {
    pub node: Node,
    pub endpoint: Endpoint,
    /// The peers as configured now (a reload changes them).
    pub peers: Vec<crate::config::Peer>,
}

/// What the daemon shares with its API and metrics.
pub struct Shared {
    core: Mutex<Core>,
    /// The routing core's clock: its `Time` is the time since this.
    pub clock: Instant,
    /// The configuration the process started with: what a reload cannot
    /// change is as here (the peers as they are now are in [`Core`]).
    pub config: Config,
    install: Mutex<InstallStatus>,
    /// Reloads asked for by `detourctl reload`.
    pub reloads: crate::reload::Requests,
}

impl Shared {
    pub fn new(core: Core, clock: Instant, config: Config) -> Shared {
        let install = InstallStatus {
            socket: config.dataplane_socket.clone().unwrap_or_default(),
            ..InstallStatus::default()
        };
        Shared {
            core: Mutex::new(core),
            clock,
            config,
            install: Mutex::new(install),
            reloads: crate::reload::Requests::default(),
        }
    }

    /// The routing core, locked. A panic elsewhere while it was held
    /// leaves it as it was: events are handled whole or not at all.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn install(&self) -> MutexGuard<'_, InstallStatus> {
        self.install.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> Status {
        let core = self.core();
        let node = &core.node;
        let peers = node.prober().peers().count();
        let peers_up = node.prober().peers().filter(|(_, p)| p.is_up()).count();
        let (mut direct, mut relayed, mut unreachable) = (0, 0, 0);
        for route in node.routes() {
            match route.hop() {
                Some(Hop::Direct) => direct += 1,
                Some(Hop::Via(_)) => relayed += 1,
                None => unreachable += 1,
            }
        }
        let rejects = core.endpoint.rejects();
        Status {
            node_id: node.local(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.clock.elapsed().as_secs(),
            listen: self.config.listen,
            settled: node.is_settled(),
            drained: node.is_drained(),
            peers,
            peers_up,
            routes_direct: direct,
            routes_relayed: relayed,
            unreachable,
            dataplane: self
                .config
                .dataplane_socket
                .as_ref()
                .map(|_| self.install().clone()),
            policy: policy_view(node),
            rejected: Reject::ALL
                .iter()
                .map(|r| (r.name().to_string(), rejects.get(*r)))
                .collect(),
            metrics: self.config.metrics_listen,
            encryption: core.endpoint.encryption().name().to_string(),
        }
    }

    fn peers(&self) -> Vec<PeerView> {
        let core = self.core();
        let node = &core.node;
        let now = self.clock.elapsed();
        let addresses: BTreeMap<NodeId, (SocketAddr, String)> = core
            .peers
            .iter()
            .map(|p| (p.id, (p.control_addr(), p.public_key.to_string())))
            .collect();
        node.prober()
            .peers()
            .map(|(id, probe)| {
                let estimate = probe.estimate();
                let state = if probe.is_up() {
                    "up"
                } else if probe.is_settled() {
                    "down"
                } else {
                    "starting"
                };
                let heard = probe.last_answer();
                let (address, public_key) = addresses[&id].clone();
                let session = core.endpoint.session_info(id).and_then(|s| s.established);
                PeerView {
                    id,
                    address,
                    public_key,
                    session_age_s: session.map(|at| now.saturating_sub(at).as_secs()),
                    state: state.to_string(),
                    rtt_us: heard.map(|_| micros(estimate.rtt)),
                    rtt_dev_us: probe.rtt_deviation().map(micros),
                    loss: estimate.loss,
                    last_heard_ms: heard.map(|t| now.saturating_sub(t).as_millis() as u64),
                    row_version: node.link_state().row_info(id).map(|(v, _)| v),
                    drained: node.link_state().is_drained(id),
                }
            })
            .collect()
    }

    fn paths(&self) -> PathsView {
        let core = self.core();
        let node = &core.node;
        let nodes = node.members().to_vec();
        let mut links = Vec::new();
        for &from in &nodes {
            for &to in &nodes {
                if let Some(link) = node.link(from, to).filter(|_| from != to) {
                    links.push(LinkView {
                        from,
                        to,
                        up: link.up,
                        rtt_us: micros(link.rtt),
                        loss: link.loss,
                    });
                }
            }
        }
        let routes = node
            .routes()
            .iter()
            .map(|route| {
                let why = node.explain(route.dst);
                let in_use = route.hop();
                let reason = if why.chosen.map(|p| p.hop) != in_use {
                    "pending"
                } else {
                    why.reason.name()
                };
                RouteView {
                    dst: route.dst,
                    path: in_use.map(|h| h.to_string()),
                    next_hop: route.next_hop(),
                    cost: route.path.and_then(|p| finite(p.cost)),
                    reason: reason.to_string(),
                    best: why.best.map(|p| p.hop.to_string()),
                    best_cost: why.best.and_then(|p| finite(p.cost)),
                    direct_cost: why.direct.and_then(|p| finite(p.cost)),
                    pin: why.pin.map(|h| h.to_string()),
                }
            })
            .collect();
        PathsView {
            local: node.local(),
            metric: node.policy().metric.name().to_string(),
            nodes,
            links,
            routes,
        }
    }

    fn pin(&self, dst: NodeId, path: &str) -> Result<String, String> {
        let hop: Hop = path.parse()?;
        let mut core = self.core();
        let node = &mut core.node;
        let local = node.local();
        let is_peer = |n: NodeId| n != local && node.members().binary_search(&n).is_ok();
        if dst == local {
            return Err(format!("{dst} is this node, which needs no path"));
        }
        if !is_peer(dst) {
            return Err(format!("{dst} is not a peer"));
        }
        if let Hop::Via(relay) = hop {
            check_relay(local, dst, relay, is_peer)?;
        }
        let mut policy = node.policy().clone();
        if policy.pins.insert(dst, hop) == Some(hop) {
            return Ok(format!("the path to {dst} was pinned {hop} already"));
        }
        node.set_policy(self.clock.elapsed(), policy);
        Ok(format!(
            "pinned the path to {dst}: {hop} (until the control process restarts; routing.pins keeps it)"
        ))
    }

    fn unpin(&self, dst: NodeId) -> Result<String, String> {
        let mut core = self.core();
        let node = &mut core.node;
        if !node.members().contains(&dst) || dst == node.local() {
            return Err(format!("{dst} is not a peer"));
        }
        let mut policy = node.policy().clone();
        if policy.pins.remove(&dst).is_none() {
            return Ok(format!("the path to {dst} was not pinned"));
        }
        node.set_policy(self.clock.elapsed(), policy);
        Ok(format!("unpinned the path to {dst}"))
    }

    fn drain(&self, target: Option<NodeId>, drained: bool) -> Result<String, String> {
        let mut core = self.core();
        let node = &mut core.node;
        let local = node.local();
        let verb = if drained { "drained" } else { "undrained" };
        match target {
            None => {}
            Some(id) if id == local => {}
            Some(peer) => {
                if !node.members().contains(&peer) {
                    return Err(format!("{peer} is not a peer"));
                }
                let mut policy = node.policy().clone();
                let changed = if drained {
                    policy.drained.insert(peer)
                } else {
                    policy.drained.remove(&peer)
                };
                if !changed {
                    return Ok(format!("{peer} was {verb} here already"));
                }
                node.set_policy(self.clock.elapsed(), policy);
                return Ok(format!(
                    "{peer} {verb}: this node {} relay through it",
                    if drained { "does not" } else { "may again" }
                ));
            }
        }
        if node.is_drained() == drained {
            return Ok(format!("this node ({local}) was {verb} already"));
        }
        node.set_drained(drained);
        Ok(format!(
            "this node ({local}) {verb}: its link state tells every peer{}",
            if drained {
                " not to relay through it"
            } else {
                " that it relays again"
            }
        ))
    }
}

impl Handler for Shared {
    type Request = Request;
    type Response = Response;

    fn handle(&self, request: Request) -> Response {
        let done = |result: Result<String, String>| match result {
            Ok(message) => {
                tracing::info!("{message}");
                Response::Done { message }
            }
            Err(message) => Response::Error { message },
        };
        match request {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Peers => Response::Peers {
                peers: self.peers(),
            },
            Request::Paths => Response::Paths(self.paths()),
            Request::Pin { dst, path } => done(self.pin(dst, &path)),
            Request::Unpin { dst } => done(self.unpin(dst)),
            Request::Drain { node } => done(self.drain(node, true)),
            Request::Undrain { node } => done(self.drain(node, false)),
            Request::Reload => done(self.reloads.ask()),
        }
    }

    fn refuse(&self, message: String) -> Response {
        Response::Error { message }
    }
}

fn policy_view(node: &Node) -> PolicyView {
    let policy = node.policy();
    PolicyView {
        metric: policy.metric.name().to_string(),
        hysteresis: policy.hysteresis != Hysteresis::OFF,
        pins: policy
            .pins
            .iter()
            .map(|(dst, hop)| PinView {
                dst: *dst,
                path: hop.to_string(),
            })
            .collect(),
        drained: policy.drained.iter().copied().collect(),
        drained_by_peers: node.link_state().drained().collect(),
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// JSON has no infinity: a path nothing gets through has no cost to show.
fn finite(cost: f64) -> Option<f64> {
    cost.is_finite().then_some(cost)
}

/// A client of the control process's API.
pub struct Client(Connection);

impl Client {
    pub fn connect(path: &Path) -> io::Result<Client> {
        Connection::connect(path, "control").map(Client)
    }

    /// See [`Connection::set_timeout`].
    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.0.set_timeout(timeout)
    }

    pub fn request(&mut self, request: &Request) -> io::Result<Response> {
        self.0.request(request)
    }
}
