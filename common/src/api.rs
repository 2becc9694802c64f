//! The dataplane's local API: what the control process and `detourctl` say
//! to `detour-dataplane` over its Unix socket, and what it answers.
//!
//! One JSON object per line each way ([`crate::local_socket`]); a
//! connection may carry any number of requests, each answered in order.
//! The shapes here are the contract
//! (documented in docs/dataplane-api.md): fields are added, never renamed.
//! [`Client`] speaks it, for the control process, `detourctl` and tests,
//! none of which need the dataplane's crate for it.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::local_socket::Connection;
pub use crate::session_keys::{Cipher, KeySpec, SecretKey, SessionKeys};
use crate::wire::NodeId;

/// A node of the overlay and the underlay address it is reached at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub id: NodeId,
    pub underlay: IpAddr,
}

/// Toward destination node `dst`, send to node `via` (`dst` itself for the
/// direct path, a relay otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub dst: NodeId,
    pub via: NodeId,
}

/// A site prefix and the node that serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixSpec {
    pub prefix: IpNet,
    pub node: NodeId,
}

/// The overlay as the control process describes it to the dataplane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSnapshot {
    /// Increases with every snapshot the control process computes; the
    /// dataplane refuses one not newer than what it has.
    pub version: u64,
    /// This node.
    pub local: NodeId,
    /// Every node, this one included.
    pub nodes: Vec<NodeSpec>,
    /// The next hop toward each reachable destination; a node without a
    /// route is unreachable.
    pub routes: Vec<RouteSpec>,
    /// Site prefixes; those of this node are local and never encapsulated.
    pub prefixes: Vec<PrefixSpec>,
    /// The UDP port of the control process that sent the snapshot: the WAN
    /// program drops what comes to it from anyone but the nodes listed.
    /// Absent (older control processes, tests): nothing to it is filtered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_port: Option<u16>,
    /// The session keys of every peer, for the workers to seal frames to
    /// it and open frames from it. `None`: encryption is off
    /// (`encryption = "none"`), frames go out and are accepted in the
    /// clear; `Some`, even empty: every frame is sealed, and one without a
    /// key is dropped. Never in an answer (the Routes answer leaves it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<SessionKeys>>,
    /// The run of the dataplane the keys are for ([`Health::instance`]): a
    /// dataplane refuses keys meant for another run, since a restart lost
    /// their counters and a counter must never seal twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_instance: Option<u64>,
}

impl RouteSnapshot {
    /// The same routes without a key: for a dataplane that must not have
    /// these keys (and, encrypting, forwards nothing until it gets new
    /// ones).
    pub fn without_keys(&self) -> RouteSnapshot {
        RouteSnapshot {
            nodes: self.nodes.clone(),
            routes: self.routes.clone(),
            prefixes: self.prefixes.clone(),
            sessions: self.sessions.as_ref().map(|_| Vec::new()),
            dataplane_instance: None,
            ..*self
        }
    }

    /// Whether it carries any key.
    pub fn has_keys(&self) -> bool {
        self.sessions
            .iter()
            .flatten()
            .any(|s| s.tx.is_some() || !s.rx.is_empty())
    }
}

/// A request to the dataplane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Replace the route table with this snapshot, if it is valid and newer
    /// than the installed one.
    Install { snapshot: RouteSnapshot },
    /// The installed snapshot.
    Routes,
    /// Counters and latency, per worker and in total.
    Stats,
    /// Whether the dataplane is up and forwarding.
    Health,
}

/// The dataplane's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    /// The snapshot is the route table now.
    Installed {
        version: u64,
    },
    /// The installed snapshot, if any.
    Routes {
        snapshot: Option<RouteSnapshot>,
    },
    Stats(Stats),
    Health(Health),
    /// The request was refused or could not be read; nothing changed.
    Error {
        message: String,
    },
}

/// Every counter of the dataplane.
///
/// The accounting holds at every read, per worker and in total:
/// `received = forwarded + answered + Σ dropped + holding`, where
/// `forwarded` is encapsulated + relayed + decapsulated, `answered` the
/// frames turned into ICMP answers and `holding` the frames waiting for a
/// neighbour's MAC address right now. What the XDP programs kept from the workers (passed to
/// the kernel, dropped as malformed) is in `xdp`, by verdict. Once traffic
/// stops, what they handed to the workers is what the workers received
/// plus what the kernel dropped in between: `xdp.wan_to_worker +
/// xdp.lan_to_worker = received + Σ socket_dropped`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub workers: Vec<WorkerStats>,
    /// The sums over all workers.
    pub total: WorkerCounters,
    /// Time each packet spent in a worker, merged over all workers.
    pub latency: Latency,
    /// The XDP classifier's counters by name (docs/classifier.md), summed
    /// over CPUs.
    pub xdp: BTreeMap<String, u64>,
    /// Who sent the datagrams to the control port that the WAN program
    /// dropped (`wan_drop_control_stranger`), most first; the classifier
    /// keeps the most recent 1024 sources.
    #[serde(default)]
    pub control_strangers: Vec<Stranger>,
}

/// A source of datagrams to the control port that is no peer's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stranger {
    pub addr: IpAddr,
    pub dropped: u64,
}

/// One worker: the queue it serves, its core, its counters and latency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub queue: u32,
    pub core: Option<usize>,
    pub counters: WorkerCounters,
    pub latency: Latency,
}

/// A worker's packet and byte counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub received: u64,
    pub received_bytes: u64,
    pub encapsulated: u64,
    pub relayed: u64,
    pub decapsulated: u64,
    /// Frames answered with ICMP ("too big", "time exceeded") instead of
    /// forwarded.
    pub answered: u64,
    /// ICMP answers not sent, over the per-source rate limit (their frames
    /// are counted as dropped, `too_big` or `ttl_expired`).
    #[serde(default)]
    pub icmp_suppressed: u64,
    /// Frames put on hold while a neighbour's MAC address was resolved.
    #[serde(default)]
    pub held: u64,
    /// Held frames forwarded once the MAC address came (counted as
    /// forwarded too).
    #[serde(default)]
    pub released: u64,
    /// Frames on hold now: `received` = forwarded + answered + dropped +
    /// holding.
    #[serde(default)]
    pub holding: u64,
    pub transmitted_bytes: u64,
    /// Drops by reason (the names in docs/dataplane-api.md), zeros left out.
    pub dropped: BTreeMap<String, u64>,
    /// Frames the kernel dropped on the way into the worker's sockets, so
    /// never received (`ring_full`: the worker fell behind; `no_frame`: no
    /// free frame to copy into), zeros left out. Read from the kernel every
    /// 100 ms or so.
    #[serde(default)]
    pub socket_dropped: BTreeMap<String, u64>,
}

impl WorkerCounters {
    pub fn forwarded(&self) -> u64 {
        self.encapsulated + self.relayed + self.decapsulated
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub fn socket_dropped_total(&self) -> u64 {
        self.socket_dropped.values().sum()
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &WorkerCounters) {
        self.received += other.received;
        self.received_bytes += other.received_bytes;
        self.encapsulated += other.encapsulated;
        self.relayed += other.relayed;
        self.decapsulated += other.decapsulated;
        self.answered += other.answered;
        self.icmp_suppressed += other.icmp_suppressed;
        self.held += other.held;
        self.released += other.released;
        self.holding += other.holding;
        self.transmitted_bytes += other.transmitted_bytes;
        for (reason, n) in &other.dropped {
            *self.dropped.entry(reason.clone()).or_default() += n;
        }
        for (reason, n) in &other.socket_dropped {
            *self.socket_dropped.entry(reason.clone()).or_default() += n;
        }
    }
}

/// Percentiles of a latency histogram, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Packets measured.
    pub count: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// The dataplane's state at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub node_id: NodeId,
    /// The dataplane's version (its crate version).
    pub version: String,
    pub uptime_s: u64,
    /// A random number drawn at start: which run of the dataplane this is
    /// (0 from a dataplane too old to say).
    #[serde(default)]
    pub instance: u64,
    /// The installed snapshot's version; none before the first install.
    pub route_version: Option<u64>,
    /// Workers running / started.
    pub workers_running: usize,
    pub workers: usize,
    pub interfaces: Vec<InterfaceHealth>,
    /// The ids (never the bytes) of the session keys the workers hold, by
    /// peer; `None` while the installed snapshot does not encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<HeldKeys>>,
}

/// The key ids a dataplane holds for one peer: the one frames to it are
/// sealed under, and those frames from it open under (retiring ones
/// included). Ids travel in every sealed frame; the keys never leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldKeys {
    pub peer: NodeId,
    pub tx: Option<u32>,
    pub rx: Vec<u32>,
}

/// How the dataplane holds one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceHealth {
    pub name: String,
    /// "wan" or "lan".
    pub role: String,
    /// "native" or "skb".
    pub xdp_mode: String,
    /// "zero-copy" or "copy", for each socket on it.
    pub afxdp_mode: String,
}

/// A client of the dataplane's API: one request, one response.
pub struct Client(Connection);

impl Client {
    pub fn connect(path: &Path) -> io::Result<Client> {
        Connection::connect(path, "dataplane").map(Client)
    }

    /// See [`Connection::set_timeout`].
    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.0.set_timeout(timeout)
    }

    pub fn request(&mut self, request: &Request) -> io::Result<Response> {
        self.0.request(request)
    }

    /// Installs `snapshot`; its version once it is the route table. A
    /// refusal (stale, invalid) is an error carrying the dataplane's reason.
    pub fn install(&mut self, snapshot: RouteSnapshot) -> io::Result<u64> {
        match self.request(&Request::Install { snapshot })? {
            Response::Installed { version } => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    pub fn stats(&mut self) -> io::Result<Stats> {
        match self.request(&Request::Stats)? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    pub fn health(&mut self) -> io::Result<Health> {
        match self.request(&Request::Health)? {
            Response::Health(health) => Ok(health),
            other => Err(unexpected(other)),
        }
    }

    /// The installed snapshot; `None` before the first install.
    pub fn routes(&mut self) -> io::Result<Option<RouteSnapshot>> {
        match self.request(&Request::Routes)? {
            Response::Routes { snapshot } => Ok(snapshot),
            other => Err(unexpected(other)),
        }
    }
}

/// The error for an answer of the wrong kind: the dataplane's own message
/// for a refusal, the answer itself otherwise.
fn unexpected(response: Response) -> io::Error {
    match response {
        Response::Error { message } => io::Error::other(message),
        other => io::Error::other(format!("unexpected answer from the dataplane: {other:?}")),
    }
}
