//! The route table: an immutable snapshot the workers forward by.
//!
//! The control process describes the overlay in a [`RouteSnapshot`]: the
//! nodes and their underlay addresses, the next hop toward every destination
//! node, and the site prefixes each node serves. The dataplane compiles it,
//! together with what it knows of its own links ([`Links`]) and of the
//! neighbours' MAC addresses, into a [`RouteTable`]: longest-prefix-match
//! tables for the prefixes, and per destination node an encapsulation
//! template already holding every outer header byte. Workers never see a
//! snapshot being built: a new table replaces the old one whole
//! (docs/design.md, "Hot-path rules": arc-swap, loaded once per turn).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use detour_common::wire::encap::DEFAULT_OUTER_TTL;
use detour_common::wire::geneve::{DEFAULT_HOP_LIMIT, DEFAULT_PORT};
use detour_common::wire::{
    DetourOptionRepr, EncapRepr, EncapTemplate, MacAddr, NodeId, Seal, Underlay,
};
use ipnet::IpNet;

pub use detour_common::api::{NodeSpec, PrefixSpec, RouteSnapshot, RouteSpec};

use crate::crypto::KeyTable;
use crate::lpm::{IpKey, IpLpm};

/// Why a snapshot cannot be installed. Nothing of it is used then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node id {0} is reserved (0 and 65535 name no node)")]
    InvalidNode(u16),
    #[error("node {0} is listed twice")]
    DuplicateNode(u16),
    #[error("the local node {0} is not among the nodes")]
    MissingLocal(u16),
    #[error("route to node {dst} via node {via}: {what} is not among the nodes")]
    UnknownRouteNode {
        dst: u16,
        via: u16,
        what: &'static str,
    },
    #[error("two routes to node {0}")]
    DuplicateRoute(u16),
    #[error("a route to the local node {0}")]
    RouteToLocal(u16),
    #[error("route to node {dst} via node {via}: the relay has no direct route itself")]
    RelayNotDirect { dst: u16, via: u16 },
    #[error("node {node}'s underlay address {addr} is not of the local node's family ({local})")]
    UnderlayFamily {
        node: u16,
        addr: IpAddr,
        local: IpAddr,
    },
    #[error("prefix {prefix} is served by node {node}, which is not among the nodes")]
    UnknownPrefixNode { prefix: IpNet, node: u16 },
    #[error("prefix {0} is listed twice")]
    DuplicatePrefix(IpNet),
    #[error("snapshot version {offered} is not newer than the installed {installed}")]
    Stale { offered: u64, installed: u64 },
    #[error(
        "the snapshot's keys are for dataplane run {offered:?}, this is run {running}: a restarted dataplane takes only keys of sessions set up since it started"
    )]
    KeysForAnotherRun { offered: Option<u64>, running: u64 },
}

/// What the dataplane knows of its own links and of the overlay's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    /// MAC address of the WAN interface: the source of every outer frame.
    pub wan_mac: MacAddr,
    /// MAC address of the LAN interface, when there is one.
    pub lan_mac: Option<MacAddr>,
    /// The WAN MTU: an encapsulated packet larger than this is too big.
    pub wan_mtu: u16,
    pub overlay_port: u16,
    pub vni: u32,
    /// Hop limit written into the detour option of every encapsulation.
    pub hop_limit: u8,
    /// TTL / hop limit of the outer IP header.
    pub outer_ttl: u8,
}

impl Links {
    /// Defaults for everything but the MAC addresses.
    pub fn new(wan_mac: MacAddr, lan_mac: Option<MacAddr>) -> Links {
        Links {
            wan_mac,
            lan_mac,
            wan_mtu: 1500,
            overlay_port: DEFAULT_PORT,
            vni: 0,
            hop_limit: DEFAULT_HOP_LIMIT,
            outer_ttl: DEFAULT_OUTER_TTL,
        }
    }
}

/// How to send toward one destination node.
#[derive(Debug, Clone)]
pub struct Route {
    /// The node the packet goes to next (the destination, or a relay).
    pub via: NodeId,
    /// The whole encapsulation toward `via` for packets to this destination
    /// (a relay takes its Ethernet header and addresses from it too); `None`
    /// until the next hop's MAC is resolved.
    pub encap: Option<EncapTemplate>,
}

/// Another node, as this one reaches it on its own direct path.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The node's underlay address.
    pub underlay: IpAddr,
    /// The encapsulation straight to the node, whatever the route to it
    /// says: what a relay sends a frame on with (one hop means one hop);
    /// `None` until the next hop's MAC toward the node is resolved.
    pub direct: Option<EncapTemplate>,
}

/// The compiled table the workers forward by.
#[derive(Debug)]
pub struct RouteTable {
    pub version: u64,
    /// Distinct for every table compiled in this process, recompiles of
    /// one snapshot included: a worker holding frames for a neighbour
    /// tries them again when it sees a new generation.
    pub generation: u64,
    pub local: NodeId,
    /// This node's underlay address.
    pub local_underlay: IpAddr,
    links: Links,
    remote: IpLpm<NodeId>,
    /// Indexed by destination node id.
    routes: Vec<Option<Route>>,
    /// Indexed by node id: every node but this one.
    peers: Vec<Option<Peer>>,
    lan: LanNeighbours,
    /// The peers' session keys; `None`: encryption is off.
    keys: Option<Arc<KeyTable>>,
}

/// MAC addresses on the LAN for decapsulated packets: hosts (full-length
/// prefixes) and the routers behind which further prefixes lie.
#[derive(Debug, Clone, Default)]
pub struct LanNeighbours(IpLpm<MacAddr>);

impl LanNeighbours {
    /// Packets to `prefix` go to `mac` on the LAN.
    pub fn insert(&mut self, prefix: IpNet, mac: MacAddr) {
        self.0.insert(prefix, mac);
    }

    /// The LAN MAC address packets to `addr` go to.
    #[inline]
    pub fn lookup(&self, addr: impl Into<IpKey>) -> Option<MacAddr> {
        self.0.lookup(addr).copied()
    }
}

impl RouteTable {
    /// Compiles `snapshot`, checking it whole first. `resolve` gives the MAC
    /// address of the underlay next hop toward a node's address (the node
    /// itself on a shared segment, or a router); a route whose MAC is not
    /// resolved yet is kept and its packets counted as unresolved.
    pub fn compile(
        snapshot: &RouteSnapshot,
        links: &Links,
        lan: LanNeighbours,
        resolve: impl Fn(IpAddr) -> Option<MacAddr>,
    ) -> Result<RouteTable, SnapshotError> {
        let underlay_of = check(snapshot)?;
        let local_underlay = underlay_of(snapshot.local).expect("checked");

        let template = |dst: NodeId, via_addr: IpAddr| {
            let underlay = match (local_underlay, via_addr) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => Underlay::V4 { src, dst },
                (IpAddr::V6(src), IpAddr::V6(dst)) => Underlay::V6 { src, dst },
                _ => unreachable!("families checked"),
            };
            resolve(via_addr).map(|dst_mac| {
                EncapTemplate::new(&EncapRepr {
                    src_mac: links.wan_mac,
                    dst_mac,
                    underlay,
                    ttl: links.outer_ttl,
                    dst_port: links.overlay_port,
                    vni: links.vni,
                    option: DetourOptionRepr {
                        src: snapshot.local,
                        dst,
                        hop_limit: links.hop_limit,
                        flags: 0,
                        seal: Seal::NONE,
                    },
                })
            })
        };
        let mut routes: Vec<Option<Route>> = Vec::new();
        for r in &snapshot.routes {
            let via_addr = underlay_of(r.via).expect("checked");
            let encap = template(r.dst, via_addr);
            put_by_id(&mut routes, r.dst, Route { via: r.via, encap });
        }
        let mut peers: Vec<Option<Peer>> = Vec::new();
        for n in snapshot.nodes.iter().filter(|n| n.id != snapshot.local) {
            let direct = template(n.id, n.underlay);
            let peer = Peer {
                underlay: n.underlay,
                direct,
            };
            put_by_id(&mut peers, n.id, peer);
        }

        let mut remote = IpLpm::default();
        let remote_prefixes = snapshot
            .prefixes
            .iter()
            .filter(|p| p.node != snapshot.local);
        for p in remote_prefixes {
            remote.insert(p.prefix, p.node);
        }
        Ok(RouteTable {
            version: snapshot.version,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            local: snapshot.local,
            local_underlay,
            links: *links,
            remote,
            routes,
            peers,
            lan,
            keys: None,
        })
    }

    /// The table, sealing and opening under `keys` (`None`: not at all).
    pub fn with_keys(mut self, keys: Option<Arc<KeyTable>>) -> Self {
        self.keys = keys;
        self
    }

    /// The peers' session keys; `None` when encryption is off.
    #[inline]
    pub fn keys(&self) -> Option<&KeyTable> {
        self.keys.as_deref()
    }

    /// The remote node serving `addr`, by longest prefix; `None` for local
    /// and unknown destinations.
    #[inline]
    pub fn node_for(&self, addr: impl Into<IpKey>) -> Option<NodeId> {
        self.remote.lookup(addr).copied()
    }

    /// How to reach destination node `dst`; `None` when it is unreachable.
    #[inline]
    pub fn route(&self, dst: NodeId) -> Option<&Route> {
        self.routes.get(usize::from(dst.0))?.as_ref()
    }

    /// Node `id` as this node reaches it directly; `None` for this node
    /// and for nodes the snapshot does not list.
    #[inline]
    pub fn peer(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(usize::from(id.0))?.as_ref()
    }

    /// The LAN MAC address for a decapsulated packet to `addr`.
    #[inline]
    pub fn lan_mac_for(&self, addr: impl Into<IpKey>) -> Option<MacAddr> {
        self.lan.lookup(addr)
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The remote prefixes, for the XDP LAN program's tries.
    pub fn remote_prefixes(&self) -> Vec<(IpNet, NodeId)> {
        self.remote.iter().map(|(p, n)| (p, *n)).collect()
    }
}

/// Puts `entry` at index `id` of a table indexed by node id.
fn put_by_id<T: Clone>(entries: &mut Vec<Option<T>>, id: NodeId, entry: T) {
    let index = usize::from(id.0);
    if entries.len() <= index {
        entries.resize(index + 1, None);
    }
    entries[index] = Some(entry);
}

/// The next [`RouteTable::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Checks a snapshot whole; returns the underlay address of each node.
fn check(s: &RouteSnapshot) -> Result<impl Fn(NodeId) -> Option<IpAddr> + '_, SnapshotError> {
    let mut ids = HashSet::new();
    for n in &s.nodes {
        if !n.id.is_valid() {
            return Err(SnapshotError::InvalidNode(n.id.0));
        }
        if !ids.insert(n.id) {
            return Err(SnapshotError::DuplicateNode(n.id.0));
        }
    }
    let underlay_of = |id: NodeId| s.nodes.iter().find(|n| n.id == id).map(|n| n.underlay);
    let local = underlay_of(s.local).ok_or(SnapshotError::MissingLocal(s.local.0))?;
    for n in &s.nodes {
        if n.underlay.is_ipv4() != local.is_ipv4() {
            return Err(SnapshotError::UnderlayFamily {
                node: n.id.0,
                addr: n.underlay,
                local,
            });
        }
    }
    let mut routed = HashSet::new();
    for r in &s.routes {
        for (id, what) in [(r.dst, "the destination"), (r.via, "the next hop")] {
            if !ids.contains(&id) {
                return Err(SnapshotError::UnknownRouteNode {
                    dst: r.dst.0,
                    via: r.via.0,
                    what,
                });
            }
        }
        if r.dst == s.local || r.via == s.local {
            return Err(SnapshotError::RouteToLocal(r.dst.0));
        }
        if !routed.insert(r.dst) {
            return Err(SnapshotError::DuplicateRoute(r.dst.0));
        }
    }
    // A one-hop path: the relay must be reached directly, or packets would
    // need a second relay the hop limit does not budget for.
    for r in s.routes.iter().filter(|r| r.via != r.dst) {
        let direct = s.routes.iter().any(|d| d.dst == r.via && d.via == r.via);
        if !direct {
            return Err(SnapshotError::RelayNotDirect {
                dst: r.dst.0,
                via: r.via.0,
            });
        }
    }
    let mut prefixes = HashSet::new();
    for p in &s.prefixes {
        if !ids.contains(&p.node) {
            return Err(SnapshotError::UnknownPrefixNode {
                prefix: p.prefix,
                node: p.node.0,
            });
        }
        if !prefixes.insert(p.prefix.trunc()) {
            return Err(SnapshotError::DuplicatePrefix(p.prefix));
        }
    }
    Ok(underlay_of)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn node(id: u16, addr: &str) -> NodeSpec {
        NodeSpec {
            id: NodeId(id),
            underlay: addr.parse().unwrap(),
        }
    }

    pub fn route(dst: u16, via: u16) -> RouteSpec {
        RouteSpec {
            dst: NodeId(dst),
            via: NodeId(via),
        }
    }

    pub fn prefix(p: &str, node: u16) -> PrefixSpec {
        PrefixSpec {
            prefix: p.parse().unwrap(),
            node: NodeId(node),
        }
    }

    /// Four sites on 192.0.2.0/24: we are node 1; 2 direct, 3 through 2,
    /// 4 unreachable.
    pub fn snapshot() -> RouteSnapshot {
        RouteSnapshot {
            version: 7,
            local: NodeId(1),
            nodes: vec![
                node(1, "192.0.2.1"),
                node(2, "192.0.2.2"),
                node(3, "192.0.2.3"),
                node(4, "192.0.2.4"),
            ],
            routes: vec![route(2, 2), route(3, 2)],
            prefixes: vec![
                prefix("10.1.0.0/16", 1),
                prefix("10.2.0.0/16", 2),
                prefix("10.3.0.0/16", 3),
                prefix("10.3.7.0/24", 4),
                prefix("10.4.0.0/16", 4),
            ],
            control_port: None,
            sessions: None,
            dataplane_instance: None,
        }
    }

    pub fn links() -> Links {
        Links::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            Some(MacAddr([2, 0, 0, 0, 1, 1])),
        )
    }

    pub fn resolved(addr: IpAddr) -> Option<MacAddr> {
        match addr {
            IpAddr::V4(a) => Some(MacAddr([2, 0, 0, 0, 0, a.octets()[3]])),
            IpAddr::V6(a) => Some(MacAddr([2, 0, 0, 0, 0, a.octets()[15]])),
        }
    }

    #[test]
    fn compiles_prefixes_routes_and_templates() {
        let t =
            RouteTable::compile(&snapshot(), &links(), LanNeighbours::default(), resolved).unwrap();
        let node = |a: &str| t.node_for(a.parse::<IpAddr>().unwrap());
        assert_eq!(node("10.2.3.4"), Some(NodeId(2)));
        assert_eq!(node("10.3.7.1"), Some(NodeId(4)), "the longest prefix wins");
        assert_eq!(node("10.3.8.1"), Some(NodeId(3)));
        assert_eq!(node("10.1.0.1"), None, "local prefixes are not remote");
        assert_eq!(node("8.8.8.8"), None);
        let r3 = t.route(NodeId(3)).unwrap();
        assert_eq!(r3.via, NodeId(2));
        let eth = r3.encap.as_ref().unwrap().headers();
        assert_eq!(eth[..6], [2, 0, 0, 0, 0, 2], "toward the relay's MAC");
        assert_eq!(eth[6..12], [2, 0, 0, 0, 0, 1], "from the WAN interface");
        assert!(t.route(NodeId(4)).is_none(), "unreachable");
        assert!(t.route(NodeId(9999)).is_none());
        assert_eq!(t.remote_prefixes().len(), 4);
    }

    #[test]
    fn unresolved_next_hops_keep_the_route_without_a_template() {
        let t =
            RouteTable::compile(&snapshot(), &links(), LanNeighbours::default(), |_| None).unwrap();
        let r = t.route(NodeId(2)).unwrap();
        assert!(r.encap.is_none());
    }

    #[test]
    fn every_inconsistency_is_named() {
        type Breakage = fn(&mut RouteSnapshot);
        let cases: Vec<(Breakage, SnapshotError)> = vec![
            (
                |s| s.nodes.push(node(0, "192.0.2.9")),
                SnapshotError::InvalidNode(0),
            ),
            (
                |s| s.nodes.push(node(2, "192.0.2.9")),
                SnapshotError::DuplicateNode(2),
            ),
            (|s| s.local = NodeId(8), SnapshotError::MissingLocal(8)),
            (
                |s| s.routes.push(route(9, 2)),
                SnapshotError::UnknownRouteNode {
                    dst: 9,
                    via: 2,
                    what: "the destination",
                },
            ),
            (
                |s| s.routes.push(route(2, 3)),
                SnapshotError::DuplicateRoute(2),
            ),
            (
                |s| s.routes.push(route(1, 2)),
                SnapshotError::RouteToLocal(1),
            ),
            (
                |s| s.routes.push(route(4, 3)),
                SnapshotError::RelayNotDirect { dst: 4, via: 3 },
            ),
            (
                |s| s.nodes.push(node(5, "2001:db8::5")),
                SnapshotError::UnderlayFamily {
                    node: 5,
                    addr: "2001:db8::5".parse().unwrap(),
                    local: "192.0.2.1".parse().unwrap(),
                },
            ),
            (
                |s| s.prefixes.push(prefix("10.9.0.0/16", 9)),
                SnapshotError::UnknownPrefixNode {
                    prefix: "10.9.0.0/16".parse().unwrap(),
                    node: 9,
                },
            ),
            (
                |s| s.prefixes.push(prefix("10.2.9.9/16", 3)),
                SnapshotError::DuplicatePrefix("10.2.9.9/16".parse().unwrap()),
            ),
        ];
        for (break_it, expected) in cases {
            let mut s = snapshot();
            break_it(&mut s);
            let got = RouteTable::compile(&s, &links(), LanNeighbours::default(), resolved);
            assert_eq!(got.err(), Some(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn lan_neighbours_match_hosts_and_routed_prefixes() {
        let mut lan = LanNeighbours::default();
        lan.insert("10.1.0.5/32".parse().unwrap(), MacAddr([2, 1, 1, 1, 1, 5]));
        lan.insert(
            "10.1.0.0/16".parse().unwrap(),
            MacAddr([2, 1, 1, 1, 1, 254]),
        );
        lan.insert(
            "2001:db8:1::/48".parse().unwrap(),
            MacAddr([2, 1, 1, 1, 1, 6]),
        );
        let mac = |a: &str| lan.lookup(a.parse::<IpAddr>().unwrap()).map(|m| m.0[5]);
        assert_eq!(mac("10.1.0.5"), Some(5));
        assert_eq!(mac("10.1.9.9"), Some(254));
        assert_eq!(mac("2001:db8:1::7"), Some(6));
        assert_eq!(mac("10.2.0.1"), None);
    }
}
