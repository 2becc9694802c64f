//! A testbed's topology: its nodes and the Internet between them, from a
//! TOML file (`examples/testbed/`), checked before anything is built.
//!
//! Addresses are not configured; they follow from each node's id, so that
//! every file, test and demo names the same things the same way:
//!
//! | what | address |
//! | --- | --- |
//! | node `i`'s underlay address (its `wan` interface) | `198.18.i.2/24` (RFC 2544's benchmarking range) |
//! | the router's side of that link (interface `n<i>`) | `198.18.i.1/24` |
//! | site `i`'s prefix | `10.i.0.0/24` |
//! | node `i`'s LAN address (interface `lan`) | `10.i.0.1` |
//! | site `i`'s host (interface `eth0`) | `10.i.0.2` |

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Node ids the addressing plan has room for (one octet, 0 and 255 left
/// out).
pub const MAX_NODE_ID: u16 = 250;
/// The longest one-way delay a path may be given.
pub const MAX_DELAY_MS: u32 = 10_000;

/// The whole testbed as the file describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// What every path has unless a `[[paths]]` entry says otherwise.
    #[serde(default)]
    pub defaults: Impairment,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub paths: Vec<PathSpec>,
}

/// One overlay node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: u16,
    /// Whether the node serves a site (a LAN and a host behind it);
    /// `false` makes a pure relay.
    #[serde(default = "yes")]
    pub site: bool,
    /// The node starts drained: it relays for no one.
    #[serde(default)]
    pub drained: bool,
    /// The node runs with a key other than the one the other nodes list
    /// it under, as an intruder claiming its place would: everyone else
    /// must refuse its handshakes.
    #[serde(default)]
    pub wrong_key: bool,
    /// Its control process's `encryption` ("aead", the default, or
    /// "none"), for comparisons and for a node that disagrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Its control process's `session.rekey_after_s` (120 s by default):
    /// shorter, to see sessions and their keys rotate within a test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_after_s: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The Internet between two nodes, the same both ways.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Impairment {
    /// Added one-way delay, each direction (the round trip gets twice it).
    #[serde(default)]
    pub delay_ms: u32,
    /// Share of packets dropped, each direction, 0 to 100 in steps of 0.1.
    #[serde(default)]
    pub loss_percent: f64,
    /// Nothing gets through.
    #[serde(default)]
    pub cut: bool,
}

/// A path other than the defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// The two nodes, in either order.
    pub between: [u16; 2],
    #[serde(flatten)]
    pub impairment: Impairment,
}

impl Topology {
    /// Reads and checks a topology file.
    pub fn load(path: &Path) -> anyhow::Result<Topology> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the topology {}", path.display()))?;
        Topology::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Topology> {
        let topology: Topology = toml::from_str(text)?;
        topology.check()?;
        Ok(topology)
    }

    /// The checks the file format cannot express.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.nodes.len() < 2 {
            bail!("nodes: an overlay needs at least 2 nodes");
        }
        let mut seen = BTreeMap::new();
        for node in &self.nodes {
            if !(1..=MAX_NODE_ID).contains(&node.id) {
                bail!("nodes: id {} is not from 1 to {MAX_NODE_ID}", node.id);
            }
            if seen.insert(node.id, ()).is_some() {
                bail!("nodes: id {} is listed twice", node.id);
            }
        }
        self.defaults.check().context("defaults")?;
        let mut pairs = BTreeMap::new();
        for path in &self.paths {
            let [a, b] = path.between;
            let pair = Pair::new(a, b);
            for id in [a, b] {
                if !seen.contains_key(&id) {
                    bail!("paths: between [{a}, {b}]: {id} is not a node");
                }
            }
            if a == b {
                bail!("paths: between [{a}, {b}]: a path joins two different nodes");
            }
            if pairs.insert(pair, ()).is_some() {
                bail!("paths: between [{a}, {b}] is listed twice");
            }
            path.impairment
                .check()
                .with_context(|| format!("paths: between [{a}, {b}]"))?;
        }
        Ok(())
    }

    pub fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().map(|n| n.id)
    }

    /// The nodes that carry the demo's and the soak's traffic: those with a
    /// site, not drained, holding the overlay's key.
    pub fn traffic_sites(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.site && !n.drained && !n.wrong_key)
            .map(|n| n.id)
            .collect()
    }

    pub fn node(&self, id: u16) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Every pair of nodes with what its path has at the start.
    pub fn impairments(&self) -> BTreeMap<Pair, Impairment> {
        let ids: Vec<u16> = self.ids().collect();
        let mut all = BTreeMap::new();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                all.insert(Pair::new(a, b), self.defaults);
            }
        }
        for path in &self.paths {
            all.insert(Pair::new(path.between[0], path.between[1]), path.impairment);
        }
        all
    }
}

impl Impairment {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.delay_ms > MAX_DELAY_MS {
            bail!("delay_ms: {} is more than {MAX_DELAY_MS}", self.delay_ms);
        }
        if !(0.0..=100.0).contains(&self.loss_percent) {
            bail!("loss_percent: {} is not from 0 to 100", self.loss_percent);
        }
        Ok(())
    }

    /// The loss in thousandths, as the nftables rule draws it.
    pub fn loss_per_mille(&self) -> u32 {
        (self.loss_percent * 10.0).round() as u32
    }
}

/// Two nodes, smaller id first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pair(pub u16, pub u16);

impl Pair {
    pub fn new(a: u16, b: u16) -> Pair {
        Pair(a.min(b), a.max(b))
    }
}

impl std::fmt::Display for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Node `id`'s underlay address.
pub fn underlay(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, id as u8, 2)
}

/// The router's address on node `id`'s link: the node's default gateway.
pub fn router_address(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, id as u8, 1)
}

/// Site `id`'s prefix, as the control process's configuration writes it.
pub fn site_prefix(id: u16) -> String {
    format!("10.{id}.0.0/24")
}

/// Node `id`'s address on its LAN: the site host's gateway.
pub fn lan_address(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, id as u8, 0, 1)
}

/// Site `id`'s host.
pub fn host_address(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(10, id as u8, 0, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOUR: &str = r#"
        [defaults]
        delay_ms = 5

        [[nodes]]
        id = 1
        [[nodes]]
        id = 2
        [[nodes]]
        id = 3
        site = false
        [[nodes]]
        id = 4

        [[paths]]
        between = [2, 1]
        delay_ms = 1
        loss_percent = 0.5
    "#;

    #[test]
    fn paths_not_listed_take_the_defaults() {
        let t = Topology::parse(FOUR).unwrap();
        let all = t.impairments();
        assert_eq!(all.len(), 6);
        assert_eq!(all[&Pair(1, 2)].delay_ms, 1);
        assert_eq!(all[&Pair(1, 2)].loss_per_mille(), 5);
        assert_eq!(all[&Pair(3, 4)].delay_ms, 5);
        assert!(!t.node(3).unwrap().site);
        assert!(t.node(4).unwrap().site);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[[nodes]]\nid = 1\n", "at least 2"),
            ("[[nodes]]\nid = 1\n[[nodes]]\nid = 1\n", "listed twice"),
            (
                "[[nodes]]\nid = 1\n[[nodes]]\nid = 251\n",
                "251 is not from 1",
            ),
            (
                "[[nodes]]\nid = 1\n[[nodes]]\nid = 2\n[[paths]]\nbetween = [1, 3]\n",
                "3 is not a node",
            ),
            (
                "[[nodes]]\nid = 1\n[[nodes]]\nid = 2\n[[paths]]\nbetween = [1, 1]\n",
                "two different nodes",
            ),
            (
                "[[nodes]]\nid = 1\n[[nodes]]\nid = 2\n[[paths]]\nbetween = [1, 2]\nloss_percent = 101\n",
                "loss_percent: 101",
            ),
            ("[[nodes]]\nid = 1\nsites = true\n", "unknown field `sites`"),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Topology::parse(text).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn addresses_follow_the_id() {
        assert_eq!(underlay(7).to_string(), "198.18.7.2");
        assert_eq!(router_address(7).to_string(), "198.18.7.1");
        assert_eq!(site_prefix(7), "10.7.0.0/24");
        assert_eq!(host_address(7).to_string(), "10.7.0.2");
    }
}
