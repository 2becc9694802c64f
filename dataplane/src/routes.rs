//! Installing route snapshots: checked, compiled against the neighbours the
//! kernel knows, and published to the workers and the XDP classifier.
//!
//! The order of a change matters for traffic in flight. The workers' table
//! is swapped first (one atomic store; a worker sees the old or the new
//! table for a whole batch, never a mix), then the classifier's peer and
//! prefix maps are brought up to date (each adds before it removes). So a
//! frame the classifier redirects because of the new snapshot meets a
//! worker that already forwards by it.
//!
//! A snapshot is recompiled, under the same version, whenever a next hop's
//! MAC address changes ([`Installer::refresh`]); the workers never wait for
//! a resolution, they count the frame as unresolved.
//!
//! The session keys a snapshot carries become the table's [`KeyTable`]
//! and leave the snapshot: the installed snapshot (which the Routes answer
//! shows) holds none. A key kept from one snapshot to the next keeps its
//! counter and replay window; one the control process dropped still opens
//! frames for [`crate::crypto::keys::RETIRE_AFTER`], then `refresh` retires
//! it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use detour_common::api::HeldKeys;
use detour_common::wire::{MacAddr, NodeId};
use ipnet::IpNet;

use crate::crypto::KeyTable;
use crate::table::{LanNeighbours, Links, RouteSnapshot, RouteTable, SnapshotError};
use crate::worker::SharedTable;
use crate::xdp::{Classifier, XdpError};

/// What the kernel knows of the neighbours a table needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Neighbourhood {
    /// The MAC address of the underlay next hop toward each node's address
    /// (`None`: not resolved).
    pub underlay: Vec<(IpAddr, Option<MacAddr>)>,
    /// LAN hosts (full-length prefixes) and prefixes behind LAN routers.
    pub lan: Vec<(IpNet, MacAddr)>,
}

impl Neighbourhood {
    fn underlay_mac(&self, addr: IpAddr) -> Option<MacAddr> {
        self.underlay
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, mac)| *mac)
    }

    fn lan_neighbours(&self) -> LanNeighbours {
        let mut lan = LanNeighbours::default();
        for (prefix, mac) in &self.lan {
            lan.insert(*prefix, *mac);
        }
        lan
    }
}

/// Finds out what the kernel knows of the underlay next hops toward
/// `addrs` and of the LAN's neighbours (netlink in the daemon; a fixed
/// answer in tests).
pub trait Survey: Send {
    fn survey(&mut self, addrs: &[IpAddr]) -> Neighbourhood;
}

/// Why an install was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    #[error("updating the XDP classifier: {0}")]
    Classifier(#[from] XdpError),
}

/// The installed snapshot and everything derived from it.
pub struct Installer {
    links: Links,
    table: SharedTable,
    classifier: Option<Classifier>,
    survey: Box<dyn Survey>,
    snapshot: Option<RouteSnapshot>,
    neighbourhood: Neighbourhood,
    /// The installed snapshot's keys; `None`: encryption off.
    keys: Option<Arc<KeyTable>>,
    /// This run of the dataplane ([`detour_common::api::Health::instance`]).
    instance: u64,
}

impl Installer {
    /// Publishes into `table`; keeps `classifier`'s maps in step (`None`:
    /// no classifier, for tests of the table alone).
    pub fn new(
        links: Links,
        table: SharedTable,
        classifier: Option<Classifier>,
        survey: Box<dyn Survey>,
    ) -> Self {
        Installer {
            links,
            table,
            classifier,
            survey,
            snapshot: None,
            neighbourhood: Neighbourhood::default(),
            keys: None,
            instance: random_instance(),
        }
    }

    /// Which run of the dataplane this is: keys come only for it.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The installed snapshot.
    pub fn snapshot(&self) -> Option<&RouteSnapshot> {
        self.snapshot.as_ref()
    }

    pub fn classifier(&self) -> Option<&Classifier> {
        self.classifier.as_ref()
    }

    /// The classifier, to unregister sockets at shutdown.
    pub fn classifier_mut(&mut self) -> Option<&mut Classifier> {
        self.classifier.as_mut()
    }

    /// Takes the classifier out (dropping it detaches the programs).
    pub fn take_classifier(&mut self) -> Option<Classifier> {
        self.classifier.take()
    }

    /// Installs `snapshot` if it is newer than the installed one and valid.
    pub fn install(&mut self, mut snapshot: RouteSnapshot) -> Result<u64, InstallError> {
        if let Some(installed) = &self.snapshot
            && snapshot.version <= installed.version
        {
            return Err(SnapshotError::Stale {
                offered: snapshot.version,
                installed: installed.version,
            }
            .into());
        }
        if snapshot.has_keys() && snapshot.dataplane_instance != Some(self.instance) {
            return Err(SnapshotError::KeysForAnotherRun {
                offered: snapshot.dataplane_instance,
                running: self.instance,
            }
            .into());
        }
        snapshot.dataplane_instance = None;
        let keys = snapshot.sessions.take().map(|sessions| {
            Arc::new(KeyTable::build(
                &sessions,
                self.keys.as_deref(),
                Instant::now(),
            ))
        });
        let neighbourhood = self.survey.survey(&next_hops(&snapshot));
        let table = self.compile(&snapshot, &neighbourhood, keys.clone())?;
        self.publish(table, &snapshot)?;
        let version = snapshot.version;
        self.snapshot = Some(snapshot);
        self.neighbourhood = neighbourhood;
        self.keys = keys;
        Ok(version)
    }

    /// Whether the installed snapshot encrypts.
    pub fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The ids of the keys the workers hold, by peer, if encrypting.
    pub fn held_keys(&self) -> Option<Vec<HeldKeys>> {
        self.keys.as_ref().map(|k| k.held())
    }

    /// Looks at the neighbours again, and retires the keys whose grace ran
    /// out; recompiles the installed snapshot if either changed anything
    /// (true if it did).
    pub fn refresh(&mut self) -> Result<bool, InstallError> {
        let Some(snapshot) = self.snapshot.take() else {
            return Ok(false);
        };
        let result = self.recompile(&snapshot);
        self.snapshot = Some(snapshot);
        result
    }

    /// What the dataplane knows of its own links changed (the kernel
    /// announced a new MTU or MAC address): the installed snapshot is
    /// compiled again with `links`; true if they differ from the old.
    pub fn set_links(&mut self, links: Links) -> Result<bool, InstallError> {
        if links == self.links {
            return Ok(false);
        }
        self.links = links;
        if let Some(snapshot) = &self.snapshot {
            let table = self.compile(snapshot, &self.neighbourhood, self.keys.clone())?;
            self.table.store(Some(Arc::new(table)));
        }
        Ok(true)
    }

    pub fn links(&self) -> &Links {
        &self.links
    }

    fn recompile(&mut self, snapshot: &RouteSnapshot) -> Result<bool, InstallError> {
        let neighbourhood = self.survey.survey(&next_hops(snapshot));
        let expired = self.keys.as_ref().and_then(|k| k.expire(Instant::now()));
        if neighbourhood == self.neighbourhood && expired.is_none() {
            return Ok(false);
        }
        let keys = expired.map(Arc::new).or_else(|| self.keys.clone());
        let table = self.compile(snapshot, &neighbourhood, keys.clone())?;
        self.table.store(Some(Arc::new(table)));
        self.neighbourhood = neighbourhood;
        self.keys = keys;
        Ok(true)
    }

    fn compile(
        &self,
        snapshot: &RouteSnapshot,
        neighbourhood: &Neighbourhood,
        keys: Option<Arc<KeyTable>>,
    ) -> Result<RouteTable, SnapshotError> {
        let table = RouteTable::compile(
            snapshot,
            &self.links,
            neighbourhood.lan_neighbours(),
            |addr| neighbourhood.underlay_mac(addr),
        )?;
        Ok(table.with_keys(keys))
    }

    /// Swaps `table` in, then brings the classifier's maps into step. If a
    /// map refuses the update, the previous table and (as far as the maps
    /// allow) the previous maps come back: a refused snapshot leaves
    /// nothing behind.
    fn publish(&mut self, table: RouteTable, snapshot: &RouteSnapshot) -> Result<(), XdpError> {
        let prefixes = table.remote_prefixes();
        let previous = self.table.swap(Some(Arc::new(table)));
        let Err(e) = self.set_maps(snapshot, &prefixes) else {
            return Ok(());
        };
        self.table.store(previous.clone());
        if let (Some(table), Some(installed)) = (previous, self.snapshot.take()) {
            let _ = self.set_maps(&installed, &table.remote_prefixes());
            self.snapshot = Some(installed);
        }
        Err(e)
    }

    /// The classifier's peers (every node but this one), remote prefixes
    /// and control port.
    fn set_maps(
        &mut self,
        snapshot: &RouteSnapshot,
        prefixes: &[(IpNet, NodeId)],
    ) -> Result<(), XdpError> {
        let Some(classifier) = &mut self.classifier else {
            return Ok(());
        };
        let peers: Vec<_> = snapshot
            .nodes
            .iter()
            .filter(|n| n.id != snapshot.local)
            .map(|n| (n.underlay, n.id))
            .collect();
        classifier.set_peers(&peers)?;
        classifier.set_remote_prefixes(prefixes)?;
        // After the peers: a port filtered before its peers are listed
        // would cut them off for a moment.
        classifier.set_control_port(snapshot.control_port.unwrap_or(0))
    }
}

/// A random, nonzero number for this run.
fn random_instance() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random source");
    u64::from_be_bytes(bytes).max(1)
}

/// The underlay addresses of every other node: a route may send to any of
/// them, and a relay sends to each on its own direct path.
fn next_hops(snapshot: &RouteSnapshot) -> Vec<IpAddr> {
    let mut addrs: Vec<IpAddr> = snapshot
        .nodes
        .iter()
        .filter(|n| n.id != snapshot.local)
        .map(|n| n.underlay)
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::{links, snapshot};
    use arc_swap::ArcSwapOption;
    use std::sync::Mutex;

    /// Every next hop resolved to one MAC address, or none; the test may
    /// change it.
    struct Fixed(Arc<Mutex<Option<MacAddr>>>);

    impl Survey for Fixed {
        fn survey(&mut self, addrs: &[IpAddr]) -> Neighbourhood {
            let mac = *self.0.lock().unwrap();
            Neighbourhood {
                underlay: addrs.iter().map(|a| (*a, mac)).collect(),
                lan: Vec::new(),
            }
        }
    }

    fn installer(mac: Option<MacAddr>) -> (Installer, SharedTable, Arc<Mutex<Option<MacAddr>>>) {
        let table: SharedTable = Arc::new(ArcSwapOption::empty());
        let mac = Arc::new(Mutex::new(mac));
        let survey = Box::new(Fixed(Arc::clone(&mac)));
        (
            Installer::new(links(), Arc::clone(&table), None, survey),
            table,
            mac,
        )
    }

    #[test]
    fn a_newer_snapshot_replaces_the_table_and_an_older_or_equal_one_is_refused() {
        let (mut installer, table, _) = installer(Some(MacAddr([2; 6])));
        assert!(table.load().is_none());
        let mut s = snapshot();
        s.version = 7;
        assert_eq!(installer.install(s.clone()).unwrap(), 7);
        assert_eq!(table.load().as_ref().unwrap().version, 7);
        for stale in [7, 6] {
            s.version = stale;
            let err = installer.install(s.clone()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("snapshot version {stale} is not newer than the installed 7")
            );
        }
        assert_eq!(table.load().as_ref().unwrap().version, 7);
    }

    #[test]
    fn a_malformed_snapshot_changes_nothing() {
        let (mut installer, table, _) = installer(Some(MacAddr([2; 6])));
        let good = snapshot();
        installer.install(good.clone()).unwrap();
        let mut bad = good.clone();
        bad.version += 1;
        bad.routes.push(bad.routes[0]);
        assert!(installer.install(bad).is_err());
        assert_eq!(installer.snapshot(), Some(&good));
        assert_eq!(table.load().as_ref().unwrap().version, good.version);
    }

    #[test]
    fn a_resolved_mac_recompiles_the_installed_snapshot() {
        let (mut installer, table, mac) = installer(None);
        installer.install(snapshot()).unwrap();
        let dst = snapshot().routes[0].dst;
        let unresolved = |t: &SharedTable| {
            t.load()
                .as_ref()
                .unwrap()
                .route(dst)
                .unwrap()
                .encap
                .is_none()
        };
        assert!(unresolved(&table));
        assert!(!installer.refresh().unwrap(), "nothing changed yet");
        *mac.lock().unwrap() = Some(MacAddr([9; 6]));
        assert!(installer.refresh().unwrap());
        assert!(!unresolved(&table));
        assert_eq!(table.load().as_ref().unwrap().version, snapshot().version);
        assert_ne!(dst, NodeId(0));
    }
}
