//! Reloading the configuration while the control process runs (SIGHUP, or
//! `detourctl reload`): what may change live, what needs a restart, and
//! how a change reaches the routing core and the session endpoint.
//!
//! Live: the peers (added, removed, or with a new key, pre-shared key,
//! address, port or prefixes), this node's own key, its prefixes, and the
//! routing policy (metric, hysteresis, pins, drains). A peer added is
//! handshaken and probed at once; a peer removed is cut off at once (its
//! sessions go, so nothing it sends opens; its address leaves the
//! allow-list here, and at the NIC with the next route install). A new
//! key of this node drops every session, and the handshakes that follow
//! are under the new key.
//!
//! Everything else (the node id, addresses, sockets, probe, link-state
//! and session timing) is fixed for the life of the process: a file that changes any
//! of it is refused whole, naming the keys, and the running configuration
//! stays. A file with an error is refused likewise, with its file, line and
//! key.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use crate::config::{Config, Peer};
use crate::link::Time;
use crate::node::Node;
use crate::session::Endpoint;

/// The keys a reload cannot change, by name, that `new` changes.
pub fn fixed_changes(running: &Config, new: &Config) -> Vec<&'static str> {
    let r = running;
    let n = new;
    [
        ("node_id", r.node_id != n.node_id),
        ("underlay", r.underlay != n.underlay),
        ("control.listen", r.listen != n.listen),
        ("dataplane.socket", r.dataplane_socket != n.dataplane_socket),
        ("api.socket", r.api_socket != n.api_socket),
        ("metrics.listen", r.metrics_listen != n.metrics_listen),
        ("encryption", r.encryption != n.encryption),
        ("[probe]", r.node.probe != n.node.probe),
        ("[linkstate]", r.node.linkstate != n.node.linkstate),
        ("[session]", r.session != n.session),
        ("routing.drained", r.node.drained != n.node.drained),
        (
            "routing.compute_interval_ms",
            r.node.compute_interval != n.node.compute_interval,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Applies `new` to the running node and endpoint, whose peers were
/// `running`; what changed, for the answer and the log.
pub fn apply(
    now: Time,
    node: &mut Node,
    endpoint: &mut Endpoint,
    running: &[Peer],
    new: &Config,
) -> String {
    let mut said = Vec::new();
    if new.private_key.public_key() != endpoint.public_key() {
        endpoint.set_private_key(new.private_key.clone());
        said.push(format!(
            "this node's key is now {} (every session starts again)",
            endpoint.public_key()
        ));
    }
    let find = |peers: &[Peer], id| peers.iter().find(|p| p.id == id).cloned();
    let (mut added, mut removed, mut rekeyed) = (Vec::new(), Vec::new(), Vec::new());
    for old in running {
        if find(&new.peers, old.id).is_none() {
            endpoint.remove_peer(old.id);
            removed.push(old.id.to_string());
        }
    }
    for peer in &new.peers {
        let keys = peer.session_keys();
        match find(running, peer.id) {
            None => {
                endpoint.add_peer(keys);
                added.push(peer.id.to_string());
            }
            Some(old)
                if old.public_key != peer.public_key
                    || old.preshared_key.as_bytes() != peer.preshared_key.as_bytes() =>
            {
                endpoint.add_peer(keys);
                rekeyed.push(peer.id.to_string());
            }
            Some(_) => {}
        }
    }
    for (what, ids) in [
        ("added", &added),
        ("removed", &removed),
        ("with new keys", &rekeyed),
    ] {
        if !ids.is_empty() {
            said.push(format!("peers {what}: {}", ids.join(", ")));
        }
    }
    node.reconfigure(now, new.peers.iter().map(|p| p.id), new.node.policy.clone());
    if said.is_empty() {
        "configuration reloaded: no peer or key changed".into()
    } else {
        format!("configuration reloaded: {}", said.join("; "))
    }
}

/// A reload asked for by the API, waiting for the daemon's loop to do it.
#[derive(Default)]
pub struct Requests {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    /// Requests made, and answered.
    asked: u64,
    answered: u64,
    last: Option<Result<String, String>>,
}

/// How long `detourctl reload` waits for the loop (which turns at least
/// every 100 ms).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl Requests {
    /// Asks for a reload and waits for its outcome.
    pub fn ask(&self) -> Result<String, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.asked += 1;
        let mine = state.asked;
        let (state, timeout) = self
            .done
            .wait_timeout_while(state, ANSWER_WITHIN, |s| s.answered < mine)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            return Err("the control process did not get to the reload in time".into());
        }
        state.last.clone().expect("answered")
    }

    /// Whether a reload was asked for since the last answer.
    pub fn pending(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.asked > state.answered
    }

    /// Answers every request made so far.
    pub fn answer(&self, outcome: Result<String, String>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.answered = state.asked;
        state.last = Some(outcome);
        self.done.notify_all();
    }
}
