//! One overlay node's routing core: the prober, the link-state database and
//! the path selector together, driven by messages and the time, doing no
//! I/O (docs/design.md, "The routing core does no I/O", after quinn-proto).
//!
//! A driver (the daemon with a UDP socket and the real clock, the simulator
//! with a virtual one) does four things, in any order, as often as it
//! likes:
//!
//! - hands each authentic message it receives to [`Node::handle_message`];
//! - calls [`Node::handle_timeout`] once [`Node::poll_timeout`] has passed;
//! - sends what [`Node::poll_transmit`] returns, until it returns `None`;
//! - after either call, reads [`Node::routes`] when
//!   [`Node::take_routes_changed`] says they changed, and installs them
//!   once [`Node::is_settled`].
//!
//! ## When routes are computed
//!
//! A computation is due when anything it reads changed: a link of ours
//! going up or down or moving materially (`linkstate::is_material`), a row
//! that says something new, a row expiring, the policy. A link of ours
//! going down is acted on at once, since that is a failover; everything
//! else waits until `compute_interval` has passed since the last
//! computation, so that a burst of rows (a node coming up, or everyone
//! reporting the same failure) costs one computation, not one per row.
//!
//! ## Our row, delivered
//!
//! Each new version of our row goes to every live peer as a delta (see
//! `linkstate`), or whole to a peer that was not sent the version before.
//! A peer acknowledges the version it then holds. One that has not
//! acknowledged what it was sent within [`ProbeConfig::max_timeout`] (the
//! longest round trip the prober waits for), or that asks (it lacks our
//! row), or whose link to us comes up while it lacks our current version,
//! gets the row whole. Likewise we ask a peer for its row when our link to
//! it comes up and we have none, and when it sends a delta we cannot
//! apply. A node that restarts thus gets every row back within a round
//! trip of its links coming up, and a lost delta is repaired within a
//! probe timeout, without any periodic re-sending.
//!
//! ## Settling
//!
//! A node that just started knows nothing: every link reads down until its
//! probes answer. It is *settled* once the probes reached a verdict on
//! every peer (up, or down after `down_after` misses) and every peer that
//! is up has sent its row, or [`SETTLE_LIMIT`] after the start, whichever
//! comes first. Until then it computes no routes: they would not be fit to
//! install (a restarted control process would tell the dataplane, which
//! kept forwarding by its last table, that nothing is reachable), and
//! routes chosen on half a view would then be kept by hysteresis. The
//! first computation, at settling, sees everything; and a node coming up
//! does not compute over all `N²` candidates each time another of its
//! links comes up (in the simulator, that was most of the start-up cost).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::{LinkEstimate, Time};
use crate::linkstate::{Accepted, Advertiser, LinkStateConfig, LinkStateDb};
use crate::members::Members;
use crate::message::{LinkState, Message, Reject};
use crate::paths::{Change, Explanation, Hop, PathSelector, Policy, Route};
use crate::probe::{Action, ProbeConfig, Prober, Transition};

/// The longest a started node waits for its view to settle.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// Everything that tunes one node's routing core.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub probe: ProbeConfig,
    pub linkstate: LinkStateConfig,
    pub policy: Policy,
    /// This node starts drained: it asks the others not to relay through
    /// it (see [`Node::set_drained`]).
    pub drained: bool,
    /// The shortest gap between two route computations, except that a link
    /// of this node going down is acted on at once.
    pub compute_interval: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            probe: ProbeConfig::default(),
            linkstate: LinkStateConfig::default(),
            policy: Policy::default(),
            drained: false,
            compute_interval: Duration::from_millis(50),
        }
    }
}

/// What a node did, for metrics and the simulator. Counts only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    pub probes_sent: u64,
    /// Probes of peers answered.
    pub replies_sent: u64,
    /// Answers to our probes, and those that answered no probe outstanding
    /// (late, duplicated).
    pub replies_received: u64,
    pub stray_replies: u64,
    /// Rows and deltas sent (one per peer per version), and of those the
    /// whole rows; received, and received with news.
    pub rows_sent: u64,
    pub whole_rows_sent: u64,
    pub rows_received: u64,
    pub rows_changed: u64,
    /// Rows asked for (we lacked one), and asked of us.
    pub rows_requested: u64,
    pub row_requests_received: u64,
    /// Rows dropped for silence.
    pub rows_expired: u64,
    pub links_up: u64,
    pub links_down: u64,
    pub computations: u64,
    /// Of those, the ones over every destination (a link of ours changed,
    /// a row expired, the policy changed), not only the destinations a
    /// row named anew.
    pub full_computations: u64,
    /// Destinations whose route changed, over all computations.
    pub route_changes: u64,
}

/// One node's routing core.
#[derive(Debug)]
pub struct Node {
    local: NodeId,
    /// The overlay, this node included, ascending.
    members: Members,
    config: NodeConfig,
    start: Time,
    prober: Prober,
    advertiser: Advertiser,
    db: LinkStateDb,
    selector: PathSelector,
    /// The policy the selector uses: the configured one, with the members
    /// whose rows say they are drained added to its drained relays.
    effective: Policy,
    outbox: VecDeque<(NodeId, Message)>,
    /// When the next computation is due; `None` when nothing changed.
    compute_due: Option<Time>,
    /// What it must cover: every destination, or only these (whose links
    /// from some relay changed), by member index.
    full: bool,
    dirty: Vec<bool>,
    dirty_dsts: Vec<NodeId>,
    last_compute: Option<Time>,
    routes_changed: bool,
    settled: bool,
    /// Per member, by index: the rows between it and us.
    exchanges: Vec<RowExchange>,
    /// When to look for peers that did not acknowledge what they were
    /// sent.
    retransmit_due: Option<Time>,
    /// Our row whole, as of its current version, once built.
    whole: Option<Arc<LinkState>>,
    counters: NodeCounters,
}

/// Our row's delivery to one member, and our asking for its row.
#[derive(Debug, Clone, Copy, Default)]
struct RowExchange {
    /// The version of our row last sent to it (0: none), and when.
    sent: (u64, Time),
    /// The version and time of the last whole row sent to it.
    whole: Option<(u64, Time)>,
    /// The highest version of our row it acknowledged.
    acked: u64,
    /// When we last asked it for its row.
    requested: Option<Time>,
}

impl Node {
    /// Node `local` of an overlay of `members` (`local` among them or not),
    /// starting at `now`. `version_base` numbers this node's rows: above
    /// any it used before (microseconds since the Unix epoch at start).
    pub fn new(
        local: NodeId,
        members: impl IntoIterator<Item = NodeId>,
        config: NodeConfig,
        version_base: u64,
        now: Time,
    ) -> Node {
        let members = Members::new(members.into_iter().chain([local]));
        let peers = members.ids().iter().copied().filter(|m| *m != local);
        let mut prober = Prober::new(config.probe.clone());
        for peer in peers.clone() {
            prober.add_peer(peer, now);
        }
        let count = members.len();
        let mut advertiser = Advertiser::new(config.linkstate.clone(), local, peers, version_base);
        advertiser.set_drained(config.drained);
        Node {
            local,
            advertiser,
            db: LinkStateDb::new(
                local,
                members.ids().iter().copied(),
                config.linkstate.max_age,
            ),
            members,
            start: now,
            prober,
            selector: PathSelector::new(),
            effective: config.policy.clone(),
            outbox: VecDeque::new(),
            compute_due: Some(now),
            full: true,
            dirty: vec![false; count],
            dirty_dsts: Vec::new(),
            last_compute: None,
            routes_changed: false,
            settled: false,
            exchanges: vec![RowExchange::default(); count],
            retransmit_due: None,
            whole: None,
            counters: NodeCounters::default(),
            config,
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The overlay's members, this node included, ascending.
    pub fn members(&self) -> &[NodeId] {
        self.members.ids()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Our probes' view of every peer.
    pub fn prober(&self) -> &Prober {
        &self.prober
    }

    /// The other nodes' rows.
    pub fn link_state(&self) -> &LinkStateDb {
        &self.db
    }

    /// The link from `from` to `to` as this node sees it: its own probes
    /// for its links, the last row of `from` otherwise.
    pub fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate> {
        if from == self.local {
            self.prober.peer(to).map(|p| p.estimate())
        } else {
            self.db.link(from, to)
        }
    }

    /// A message from `from`, authentic and not a replay (the driver
    /// checked that with `message::Endpoint`). Refused, for the driver to
    /// count: a sender outside the overlay, a stale row.
    pub fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        message: &Message,
    ) -> Result<(), Reject> {
        let Some(k) = self.members.index(from) else {
            return Err(Reject::UnknownNode);
        };
        if from == self.local {
            return Err(Reject::UnknownNode);
        }
        if let Message::LinkState(row) = message
            && row.origin != from
        {
            // Rows travel only from their origin, over its own session:
            // a member can lie about its own links, not about another's.
            return Err(Reject::ForgedOrigin);
        }
        self.db.heard(now, from);
        match message {
            Message::Probe { seq } => {
                self.counters.replies_sent += 1;
                self.outbox
                    .push_back((from, Message::ProbeReply { seq: *seq }));
            }
            Message::ProbeReply { seq } => {
                self.counters.replies_received += 1;
                match self.prober.handle_reply(now, from, *seq) {
                    Ok(transition) => self.link_changed(now, from, transition),
                    Err(_) => self.counters.stray_replies += 1,
                }
            }
            Message::LinkState(row) => {
                self.counters.rows_received += 1;
                match self.db.accept(now, row)? {
                    Accepted::NeedsWholeRow => self.request_row(now, k),
                    Accepted::Unchanged => self.acknowledge(from),
                    Accepted::Changed => {
                        self.acknowledge(from);
                        self.counters.rows_changed += 1;
                        if self.db.drain_changed() {
                            self.policy_changed(now);
                        }
                        // Only the paths through the origin toward the
                        // destinations it reported anew can have changed.
                        for i in 0..self.db.last_changed().len() {
                            let dst = self.db.last_changed()[i];
                            if let Some(k) = self.members.index(dst)
                                && !std::mem::replace(&mut self.dirty[k], true)
                            {
                                self.dirty_dsts.push(dst);
                            }
                        }
                        self.routes_due(now, false);
                    }
                }
            }
            Message::RowAck { version } => {
                let acked = &mut self.exchanges[k].acked;
                *acked = (*acked).max(*version);
            }
            Message::RowRequest => {
                self.counters.row_requests_received += 1;
                // It holds nothing of ours, whatever it acknowledged
                // before (it restarted, or expired our row).
                let exchange = &mut self.exchanges[k];
                exchange.acked = 0;
                let whole_on_its_way = exchange.whole.is_some_and(|(version, at)| {
                    version == self.advertiser.version()
                        && now < at + self.config.linkstate.min_interval
                });
                if !whole_on_its_way {
                    self.send_row(now, k, None);
                }
            }
            // The driver's to pass on or to open (`handshake_relay`), never
            // the routing core's.
            Message::Forward { .. } | Message::Forwarded { .. } => return Err(Reject::Malformed),
            // It confirmed the session it came in; nothing else to do.
            Message::Keepalive => {}
        }
        Ok(())
    }

    /// The overlay's peers and the policy changed (a reload). Peers that
    /// stay keep everything (their probes, their rows, the routes to
    /// them); new ones start down and are probed at once; those that left
    /// are forgotten, and no route goes to or through them. Our row goes
    /// whole to every live peer, and routes are computed again at once.
    pub fn reconfigure(
        &mut self,
        now: Time,
        peers: impl IntoIterator<Item = NodeId>,
        policy: Policy,
    ) {
        let local = self.local;
        let members = Members::new(peers.into_iter().chain([local]));
        let old = std::mem::replace(&mut self.members, members);
        let ids = self.members.ids().to_vec();
        for &gone in old
            .ids()
            .iter()
            .filter(|id| self.members.index(**id).is_none())
        {
            self.prober.remove_peer(gone);
        }
        for &peer in ids.iter().filter(|id| **id != local) {
            self.prober.add_peer(peer, now);
        }
        self.advertiser.set_peers(ids.iter().copied());
        self.db.set_members(ids.iter().copied());
        let exchanges: Vec<RowExchange> = ids
            .iter()
            .map(|id| {
                old.index(*id)
                    .map(|k| self.exchanges[k])
                    .unwrap_or_default()
            })
            .collect();
        self.exchanges = exchanges;
        self.dirty = vec![false; ids.len()];
        self.dirty_dsts.clear();
        self.whole = None;
        self.config.policy = policy;
        self.policy_changed(now);
        for k in 0..ids.len() {
            if self.is_up(k) {
                self.send_row(now, k, None);
            }
        }
    }

    /// Our probe `seq` of `peer` could not be sent (no session with it):
    /// lost at once (see [`crate::probe::PeerProbe::unsent`]).
    pub fn probe_unsent(&mut self, now: Time, peer: NodeId, seq: u64) {
        let transition = self.prober.unsent(peer, seq);
        self.link_changed(now, peer, transition);
    }

    /// A session with `peer` came up: a peer not yet up is probed at once,
    /// so that a start or restart costs a round trip, not a probe interval.
    pub fn session_up(&mut self, peer: NodeId) {
        if self.prober.peer(peer).is_some_and(|p| !p.is_up()) {
            self.prober.hurry(peer);
        }
    }

    /// `peer` restarted (its session says so): the rows it sent before are
    /// from its previous run. Its next whole row replaces the one held,
    /// whatever its version, and ours goes to it whole.
    pub fn peer_restarted(&mut self, now: Time, peer: NodeId) {
        let Some(k) = self.members.index(peer) else {
            return;
        };
        self.db.restarted(peer);
        self.exchanges[k] = RowExchange::default();
        self.request_row(now, k);
    }

    /// When [`Self::handle_timeout`] is next needed.
    /// `Duration::MAX` when nothing is (a node with no peers).
    pub fn poll_timeout(&self) -> Time {
        let mut next = Duration::MAX;
        for t in [
            self.prober.poll_timeout(),
            self.advertiser.poll_timeout(),
            self.retransmit_due,
            self.db.poll_timeout(),
            self.compute_due,
            (!self.settled).then_some(self.start + SETTLE_LIMIT),
        ]
        .into_iter()
        .flatten()
        {
            next = next.min(t);
        }
        next
    }

    /// Does what is due at `now`: probes to send or give up on, rows to
    /// expire, routes to compute, our row to send.
    pub fn handle_timeout(&mut self, now: Time) {
        loop {
            match self.prober.poll(now) {
                Action::Send(peer, seq) => {
                    self.counters.probes_sent += 1;
                    self.outbox.push_back((peer, Message::Probe { seq }));
                }
                Action::Transition(peer, t) => self.link_changed(now, peer, Some(t)),
                Action::Lost(peer) => self.link_changed(now, peer, None),
                Action::Idle => break,
            }
        }
        let expired = self.db.expire(now);
        if expired > 0 {
            self.counters.rows_expired += expired as u64;
            // An expired row drains no one any more.
            self.refresh_effective_policy();
            self.full = true;
            self.routes_due(now, false);
        }
        if !self.settled {
            // Checked when a computation would be due, so at most once a
            // `compute_interval` (it is a scan of the peers).
            let due = self.compute_due.is_some_and(|due| due <= now);
            if now >= self.start + SETTLE_LIMIT || (due && self.view_is_complete()) {
                self.settled = true;
                self.full = true;
                self.compute_due = Some(now);
            } else if due {
                self.compute_due = Some(now + self.config.compute_interval);
            }
        }
        if self.compute_due.is_some_and(|due| due <= now) {
            self.compute(now);
        }
        if let Some(delta) = self.advertiser.poll_transmit(now) {
            let delta = Arc::new(delta);
            self.whole = None;
            for k in 0..self.members.len() {
                if self.is_up(k) {
                    self.send_row(now, k, Some(&delta));
                }
            }
        }
        if self.retransmit_due.is_some_and(|due| due <= now) {
            self.retransmit(now);
        }
    }

    /// The next message to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        self.outbox.pop_front()
    }

    /// The routes of the last computation, by destination.
    pub fn routes(&self) -> &[Route] {
        self.selector.routes()
    }

    /// What the last computation changed.
    pub fn last_changes(&self) -> &[Change] {
        self.selector.changes()
    }

    /// The hop in use toward `dst`.
    pub fn route(&self, dst: NodeId) -> Option<Hop> {
        self.selector.current(dst)
    }

    /// Whether the routes changed since the last call.
    pub fn take_routes_changed(&mut self) -> bool {
        std::mem::take(&mut self.routes_changed)
    }

    /// Whether the routes are fit to install (see "Settling" above).
    pub fn is_settled(&self) -> bool {
        self.settled
    }

    /// Adopts the routes a dataplane already forwards by, before the first
    /// computation (see [`PathSelector::assume`]).
    pub fn assume_routes(&mut self, routes: impl IntoIterator<Item = (NodeId, Hop)>) {
        for (dst, hop) in routes {
            self.selector.assume(dst, Some(hop));
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.config.policy
    }

    /// The policy routes are chosen by: [`Self::policy`], with the nodes
    /// drained by their own rows among the drained relays.
    pub fn effective_policy(&self) -> &Policy {
        &self.effective
    }

    /// Replaces the policy (pins, drains, metric); routes follow at once.
    pub fn set_policy(&mut self, now: Time, policy: Policy) {
        self.config.policy = policy;
        self.policy_changed(now);
    }

    /// Drains this node (its row asks every other node not to relay
    /// through it; it stays a destination) or undrains it. Goes out with
    /// the next version of the row, within `linkstate.min_interval`.
    pub fn set_drained(&mut self, drained: bool) {
        self.advertiser.set_drained(drained);
    }

    /// Whether this node is drained.
    pub fn is_drained(&self) -> bool {
        self.advertiser.is_drained()
    }

    fn refresh_effective_policy(&mut self) {
        self.effective.clone_from(&self.config.policy);
        self.effective.drained.extend(self.db.drained());
    }

    /// The configured policy or the drains advertised changed: every route
    /// is chosen again, at once.
    fn policy_changed(&mut self, now: Time) {
        self.refresh_effective_policy();
        self.full = true;
        self.routes_due(now, true);
    }

    /// Our link to `peer` changed: tell the overlay if it matters, and
    /// compute routes (at once if it went down).
    fn link_changed(&mut self, now: Time, peer: NodeId, transition: Option<Transition>) {
        match transition {
            Some(Transition::Up) => self.counters.links_up += 1,
            Some(Transition::Down) => self.counters.links_down += 1,
            None => {}
        }
        let Some(estimate) = self.prober.peer(peer).map(|p| p.estimate()) else {
            return;
        };
        if transition == Some(Transition::Up) {
            // A peer back in reach gets our row if it lacks the current
            // version, and gives us its own if we have none.
            let k = self.members.index(peer).expect("a member");
            if self.exchanges[k].acked < self.advertiser.version() {
                self.send_row(now, k, None);
            }
            if self.db.row_info(peer).is_none() {
                self.request_row(now, k);
            }
        }
        if self.advertiser.update(peer, estimate) || transition.is_some() {
            // Our leg to `peer` is in every path through it.
            self.full = true;
            self.routes_due(now, transition == Some(Transition::Down));
        }
    }

    fn routes_due(&mut self, now: Time, urgent: bool) {
        let due = match self.last_compute {
            Some(last) if !urgent => now.max(last + self.config.compute_interval),
            _ => now,
        };
        self.compute_due = Some(self.compute_due.map_or(due, |d| d.min(due)));
    }

    fn compute(&mut self, now: Time) {
        self.compute_due = None;
        self.last_compute = Some(now);
        self.counters.computations += 1;
        let links = routing_links(self.local, &self.advertiser, &self.db);
        let policy = &self.effective;
        let selection = if self.full {
            self.counters.full_computations += 1;
            self.selector
                .select(self.local, self.members.ids(), &links, policy)
        } else {
            self.selector.reselect(
                self.local,
                self.members.ids(),
                &self.dirty_dsts,
                &links,
                policy,
            )
        };
        self.full = false;
        for dst in self.dirty_dsts.drain(..) {
            let k = self.members.index(dst).expect("a member");
            self.dirty[k] = false;
        }
        if selection.changed() {
            self.counters.route_changes += selection.changes.len() as u64;
            self.routes_changed = true;
        }
    }

    /// Why the route to `dst` is what it is, weighed on the links as they
    /// are now (a computation may be due: then `chosen` can differ from
    /// [`Self::route`] until it runs).
    pub fn explain(&self, dst: NodeId) -> Explanation {
        let links = routing_links(self.local, &self.advertiser, &self.db);
        self.selector
            .explain(self.local, self.members.ids(), dst, &links, &self.effective)
    }

    /// Whether our link to the member of index `k` is up.
    fn is_up(&self, k: usize) -> bool {
        self.prober
            .peer(self.members.ids()[k])
            .is_some_and(|p| p.is_up())
    }

    /// Sends our row to the member of index `k`: `delta` if it was sent
    /// the version before, else whole.
    fn send_row(&mut self, now: Time, k: usize, delta: Option<&Arc<LinkState>>) {
        let version = self.advertiser.version();
        let exchange = &mut self.exchanges[k];
        let row = match delta {
            Some(delta) if exchange.sent.0 + 1 == version => Arc::clone(delta),
            _ => {
                exchange.whole = Some((version, now));
                self.counters.whole_rows_sent += 1;
                Arc::clone(
                    self.whole
                        .get_or_insert_with(|| Arc::new(self.advertiser.whole())),
                )
            }
        };
        self.counters.rows_sent += 1;
        self.outbox
            .push_back((self.members.ids()[k], Message::LinkState(row)));
        exchange.sent = (version, now);
        let due = now + self.config.probe.max_timeout;
        self.retransmit_due = Some(self.retransmit_due.map_or(due, |d| d.min(due)));
    }

    /// Sends our row whole to each live peer that has not acknowledged what
    /// it was sent a probe timeout ago; looks again when the next one is
    /// due.
    fn retransmit(&mut self, now: Time) {
        self.retransmit_due = None;
        let wait = self.config.probe.max_timeout;
        for k in 0..self.members.len() {
            let RowExchange {
                sent: (version, at),
                acked,
                ..
            } = self.exchanges[k];
            if acked >= version || !self.is_up(k) {
                continue;
            }
            let due = at + wait;
            if due <= now {
                self.send_row(now, k, None);
            } else {
                self.retransmit_due = Some(self.retransmit_due.map_or(due, |d| d.min(due)));
            }
        }
    }

    /// Acknowledges the row of `origin` that we now hold.
    fn acknowledge(&mut self, origin: NodeId) {
        if let Some((version, _)) = self.db.row_info(origin) {
            self.outbox.push_back((origin, Message::RowAck { version }));
        }
    }

    /// Asks the member of index `k` for its row whole, unless we did
    /// within a probe timeout (a burst of deltas we cannot apply asks
    /// once).
    fn request_row(&mut self, now: Time, k: usize) {
        let requested = &mut self.exchanges[k].requested;
        if requested.is_some_and(|at| now < at + self.config.probe.max_timeout) {
            return;
        }
        *requested = Some(now);
        self.counters.rows_requested += 1;
        self.outbox
            .push_back((self.members.ids()[k], Message::RowRequest));
    }

    /// Every peer has a verdict, and every live one sent its row.
    fn view_is_complete(&self) -> bool {
        self.prober
            .peers()
            .all(|(peer, p)| p.is_settled() && (!p.is_up() || self.db.row_info(peer).is_some()))
    }
}

/// The links routes are computed on: our own as advertised, not as last
/// measured (the advertised row moves only on a material change, so
/// estimates wandering within the noise of the probes cannot flip a near
/// tie back and forth), the others' as their origins reported them, which
/// filters them the same way.
fn routing_links<'a>(
    local: NodeId,
    advertiser: &'a Advertiser,
    db: &'a LinkStateDb,
) -> impl Fn(NodeId, NodeId) -> Option<LinkEstimate> + 'a {
    move |from, to| {
        if from == local {
            advertiser.link(to)
        } else {
            db.link(from, to)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::keys::{PresharedKey, PrivateKey};
    use crate::message::RowKind;
    use crate::session::test_peers::{addr, keys, private};
    use crate::session::{Endpoint, Event, Limits, PeerKeys, Recipient, Sent, TRANSPORT};

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Node `id`'s end of the sessions with the other two; `incarnation`
    /// new at each (re)start.
    fn endpoint(id: NodeId, incarnation: u64) -> Endpoint {
        let peers = [A, B, C].into_iter().filter(|p| *p != id).map(keys);
        Endpoint::new(id, private(id), peers, incarnation, Limits::default())
    }

    /// Three nodes over links with the given one-way delays (a missing
    /// pair is cut), driven in 1 ms steps. Every message goes through the
    /// wire as the daemon sends it: sealed by the sender's endpoint, in a
    /// session it handshook, and opened (or refused, and counted) by the
    /// receiver's.
    struct Trio {
        nodes: Vec<Node>,
        endpoints: Vec<Endpoint>,
        delay: fn(NodeId, NodeId) -> Option<Duration>,
        /// Link-state messages on this directed pair are lost.
        lose_rows: Option<(NodeId, NodeId)>,
        in_flight: Vec<(Time, NodeId, NodeId, Vec<u8>)>,
        /// Every datagram sent, as a wiretap sees it.
        sent: Vec<(NodeId, NodeId, Vec<u8>)>,
        now: Time,
        incarnations: u64,
    }

    impl Trio {
        fn new(delay: fn(NodeId, NodeId) -> Option<Duration>) -> Trio {
            Trio {
                nodes: [A, B, C]
                    .map(|id| Node::new(id, [A, B, C], NodeConfig::default(), 1, Time::ZERO))
                    .into(),
                endpoints: [A, B, C].map(|id| endpoint(id, u64::from(id.0))).into(),
                delay,
                lose_rows: None,
                in_flight: Vec::new(),
                sent: Vec::new(),
                now: Time::ZERO,
                incarnations: 3,
            }
        }

        fn node(&mut self, id: NodeId) -> &mut Node {
            &mut self.nodes[usize::from(id.0) - 1]
        }

        fn endpoint(&mut self, id: NodeId) -> &mut Endpoint {
            &mut self.endpoints[usize::from(id.0) - 1]
        }

        /// Node `id` restarts: a new process, with new sessions, row
        /// versions from 1 again, and nothing learnt.
        fn restart(&mut self, id: NodeId) {
            let now = self.now;
            self.incarnations += 1;
            *self.node(id) = Node::new(id, [A, B, C], NodeConfig::default(), 1, now);
            *self.endpoint(id) = endpoint(id, self.incarnations);
        }

        /// `datagram` from `from` arrives at `to` now, as the daemon takes
        /// it in: the endpoint counts what it refuses, the daemon what the
        /// node does.
        fn deliver(&mut self, from: NodeId, to: NodeId, datagram: &[u8]) {
            let now = self.now;
            let i = usize::from(to.0) - 1;
            if let Ok(Some((from, message))) = self.endpoints[i].open(now, addr(from), datagram)
                && let Err(reject) = self.nodes[i].handle_message(now, from, &message)
            {
                self.endpoints[i].record(reject);
            }
            while let Some(event) = self.endpoints[i].poll_event() {
                match event {
                    Event::SessionUp(peer) => self.nodes[i].session_up(peer),
                    Event::PeerRestarted(peer) => self.nodes[i].peer_restarted(now, peer),
                }
            }
        }

        /// Seals `message` from `from` to `to` and puts what the endpoint
        /// then sends on the wire.
        fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
            let now = self.now;
            let i = usize::from(from.0) - 1;
            let lost =
                matches!(message, Message::LinkState(_)) && self.lose_rows == Some((from, to));
            if !lost {
                let sent = self.endpoints[i].send(now, to, message.clone());
                if let (Ok(Sent::Dropped), Message::Probe { seq }) = (sent, message) {
                    self.nodes[i].probe_unsent(now, to, seq);
                }
            }
            self.flush(from);
        }

        fn flush(&mut self, from: NodeId) {
            let now = self.now;
            let i = usize::from(from.0) - 1;
            while let Some(transmit) = self.endpoints[i].poll_transmit() {
                let Recipient::Node(to) = transmit.to else {
                    panic!("no cookies between members")
                };
                self.sent.push((from, to, transmit.datagram.clone()));
                if let Some(d) = (self.delay)(from, to) {
                    self.in_flight.push((now + d, from, to, transmit.datagram));
                }
            }
        }

        fn run_until(&mut self, until: Time) {
            while self.now <= until {
                let now = self.now;
                let (due, later): (Vec<_>, Vec<_>) =
                    self.in_flight.drain(..).partition(|(at, ..)| *at <= now);
                self.in_flight = later;
                for (_, from, to, datagram) in due {
                    self.deliver(from, to, &datagram);
                    self.flush(to);
                }
                for i in 0..self.nodes.len() {
                    let node = &mut self.nodes[i];
                    if node.poll_timeout() <= now {
                        node.handle_timeout(now);
                    }
                    let from = node.local();
                    while let Some((to, message)) = self.nodes[i].poll_transmit() {
                        self.send(from, to, message);
                    }
                }
                self.now += ms(1);
            }
        }
    }

    /// A–B slow (50 ms), A–C and C–B fast (5 ms): A reaches B via C.
    fn slow_a_b(a: NodeId, b: NodeId) -> Option<Duration> {
        let pair = (a.0.min(b.0), a.0.max(b.0));
        Some(match pair {
            (1, 2) => ms(50),
            _ => ms(5),
        })
    }

    #[test]
    fn three_nodes_settle_route_and_fail_over_through_the_relay() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        let a = trio.node(A);
        assert!(a.is_settled());
        assert!(a.take_routes_changed());
        assert_eq!(a.route(B), Some(Hop::Via(C)));
        assert_eq!(a.route(C), Some(Hop::Direct));
        assert!(a.counters().rows_changed > 0);
        assert!(a.link_state().row_info(C).is_some());

        // Steady: no more changes.
        trio.run_until(ms(6000));
        assert!(!trio.node(A).take_routes_changed());

        // C dies: A falls back to the direct path within a second.
        fn without_c(a: NodeId, b: NodeId) -> Option<Duration> {
            (a != C && b != C).then_some(ms(50))
        }
        trio.delay = without_c;
        let cut = trio.now;
        let mut switched = None;
        while trio.now < cut + ms(2000) && switched.is_none() {
            let step = trio.now;
            trio.run_until(step);
            if trio.node(A).route(B) == Some(Hop::Direct) {
                switched = Some(trio.now - cut);
            }
        }
        let took = switched.expect("A fails over to the direct path");
        assert!(took < ms(1000), "took {took:?}");
        // Once B's row says that it lost C too, C is unreachable.
        trio.run_until(cut + ms(2000));
        assert_eq!(trio.node(A).route(C), None, "C is unreachable");
        assert!(trio.node(A).counters().links_down >= 1);
    }

    #[test]
    fn a_node_drained_by_its_own_row_is_left_as_a_relay_and_taken_back() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        assert_eq!(trio.node(A).route(B), Some(Hop::Via(C)));

        // C drains itself: one delta, and A stops relaying through it at
        // once, C staying a destination.
        let drained = trio.now;
        trio.node(C).set_drained(true);
        assert!(trio.node(C).is_drained());
        while trio.node(A).route(B) != Some(Hop::Direct) {
            assert!(trio.now < drained + ms(200), "A still relays through C");
            let step = trio.now;
            trio.run_until(step);
        }
        // One-way delay 5 ms, plus at most a computation interval.
        assert!(trio.now - drained <= ms(60), "{:?}", trio.now - drained);
        let a = trio.node(A);
        assert_eq!(a.route(C), Some(Hop::Direct));
        assert!(a.link_state().is_drained(C));
        assert!(a.effective_policy().drained.contains(&C));
        assert!(
            a.policy().drained.is_empty(),
            "the configured policy is A's own"
        );
        // B learnt it too.
        assert!(trio.node(B).effective_policy().drained.contains(&C));

        // Undrained: back through C, the better path.
        trio.node(C).set_drained(false);
        let step = trio.now + ms(100);
        trio.run_until(step);
        assert_eq!(trio.node(A).route(B), Some(Hop::Via(C)));
        assert!(!trio.node(A).link_state().is_drained(C));

        // A node configured drained is never used from the start.
        let config = NodeConfig {
            drained: true,
            ..NodeConfig::default()
        };
        trio.nodes[2] = Node::new(C, [A, B, C], config, 1, trio.now);
        trio.incarnations += 1;
        trio.endpoints[2] = endpoint(C, trio.incarnations);
        let restarted = trio.now;
        trio.run_until(restarted + ms(3000));
        assert!(trio.node(A).link_state().is_drained(C));
        assert_eq!(trio.node(A).route(B), Some(Hop::Direct));
    }

    #[test]
    fn a_node_with_a_dead_peer_settles_once_the_peer_is_judged_down() {
        fn delay(a: NodeId, b: NodeId) -> Option<Duration> {
            (a != C && b != C).then_some(ms(5))
        }
        let mut trio = Trio::new(delay);
        trio.run_until(ms(300));
        assert!(!trio.node(A).is_settled(), "C has no verdict yet");
        // No session with C: its probes cannot even go, and each counts
        // lost at once.
        trio.run_until(ms(1500));
        assert!(trio.node(A).is_settled(), "C is down");
        assert!(trio.node(A).view_is_complete(), "before SETTLE_LIMIT");
    }

    #[test]
    fn strangers_are_refused_and_probes_answered() {
        let mut node = Node::new(A, [A, B], NodeConfig::default(), 1, Time::ZERO);
        assert_eq!(
            node.handle_message(ms(1), NodeId(9), &Message::Probe { seq: 1 }),
            Err(Reject::UnknownNode)
        );
        assert_eq!(
            node.handle_message(ms(1), A, &Message::Probe { seq: 1 }),
            Err(Reject::UnknownNode),
            "not from ourselves"
        );
        assert_eq!(node.poll_transmit(), None);
        node.handle_message(ms(1), B, &Message::Probe { seq: 7 })
            .unwrap();
        assert_eq!(
            node.poll_transmit(),
            Some((B, Message::ProbeReply { seq: 7 }))
        );
        node.handle_message(ms(2), B, &Message::ProbeReply { seq: 99 })
            .unwrap();
        assert_eq!(node.counters().stray_replies, 1);
    }

    /// The version of `origin`'s row that `holder` has.
    fn held(trio: &mut Trio, holder: NodeId, origin: NodeId) -> Option<u64> {
        trio.node(holder)
            .link_state()
            .row_info(origin)
            .map(|(version, _)| version)
    }

    #[test]
    fn a_steady_overlay_sends_no_link_state_and_a_lost_delta_is_repaired() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        let rows_sent = |trio: &mut Trio| -> u64 {
            [A, B, C]
                .map(|id| trio.node(id).counters().rows_sent)
                .iter()
                .sum()
        };
        let before = rows_sent(&mut trio);
        trio.run_until(ms(8000));
        assert_eq!(
            rows_sent(&mut trio),
            before,
            "nothing changed, nothing sent"
        );

        // C's link to B dies; the delta saying so is lost on its way to A.
        fn c_b_cut(a: NodeId, b: NodeId) -> Option<Duration> {
            (a.0.min(b.0), a.0.max(b.0))
                .ne(&(2, 3))
                .then(|| slow_a_b(a, b))?
        }
        trio.delay = c_b_cut;
        trio.lose_rows = Some((C, A));
        let version = trio.node(C).advertiser.version();
        while trio.node(C).advertiser.version() == version {
            let next = trio.now;
            trio.run_until(next);
        }
        trio.lose_rows = None;
        let sent_at = trio.now;
        let whole_before = trio.node(C).counters().whole_rows_sent;
        assert!(held(&mut trio, A, C) < Some(version + 1), "A missed it");

        // A gets it whole once C gives up waiting for the acknowledgement.
        while held(&mut trio, A, C) < Some(version + 1) {
            assert!(trio.now < sent_at + ms(1000), "not repaired in time");
            let next = trio.now;
            trio.run_until(next);
        }
        assert!(trio.now - sent_at <= NodeConfig::default().probe.max_timeout + ms(10));
        assert_eq!(trio.node(C).counters().whole_rows_sent, whole_before + 1);
        assert_eq!(trio.node(A).link(C, B).map(|l| l.up), Some(false));
    }

    #[test]
    fn a_restarted_node_gets_every_row_back_at_once_and_its_own_row_is_taken() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(3000));
        assert_eq!(trio.node(B).route(A), Some(Hop::Via(C)));
        let restart = trio.now;
        trio.restart(B);
        let b_version = trio.node(B).advertiser.version();
        while !trio.node(B).view_is_complete() {
            assert!(trio.now < restart + SETTLE_LIMIT, "B never had every row");
            let next = trio.now;
            trio.run_until(next);
        }
        // B's slowest link (100 ms round trips) has a session after one
        // round trip and is up at its third answer, 600 ms in; the row it
        // then asks for comes a round trip later.
        assert!(trio.now - restart <= ms(710), "{:?}", trio.now - restart);
        trio.run_until(restart + ms(1000));
        assert!(trio.node(B).is_settled());
        assert_eq!(trio.node(B).route(A), Some(Hop::Via(C)));
        for peer in [A, C] {
            assert!(
                held(&mut trio, peer, B) >= Some(b_version),
                "{peer} has B's new row"
            );
            assert_eq!(trio.endpoint(peer).rejects().total(), 0);
        }
        assert!(trio.node(B).counters().rows_requested >= 2);
    }

    /// The acceptance test, through the endpoint and the node as
    /// the daemon runs them: with A routing to B through C, forged,
    /// altered, replayed and truncated control messages change no route,
    /// no state, and are each counted by reason.
    #[test]
    fn forged_replayed_or_truncated_control_messages_change_no_route_and_are_counted() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        assert_eq!(trio.node(A).route(B), Some(Hop::Via(C)));
        // What is still in flight is lost: it is not replayed below, which
        // is only for datagrams delivered once already.
        let lost: Vec<Vec<u8>> = trio.in_flight.drain(..).map(|(.., d)| d).collect();
        let counters = *trio.node(A).counters();
        let routes = trio.node(A).routes().to_vec();
        let c_version = trio.node(C).advertiser.version();

        // What C would say if its link to B died.
        let c_b_down = |version| {
            Message::LinkState(Arc::new(LinkState {
                origin: C,
                version,
                kind: RowKind::Full,
                drained: false,
                links: vec![(A, trio_link()), (B, LinkEstimate::DOWN)],
            }))
        };
        fn trio_link() -> LinkEstimate {
            LinkEstimate {
                up: true,
                rtt: ms(10),
                loss: 0.0,
            }
        }

        // Forged: C's row by an intruder under a key of its own (it has
        // only C's address): its handshake is dropped, unanswered.
        let intruder_key = PrivateKey::from_bytes([9; 32]);
        let a_keys = PeerKeys {
            id: A,
            public: private(A).public_key(),
            psk: PresharedKey::default(),
        };
        let mut intruder = Endpoint::new(C, intruder_key, [a_keys], 99, Limits::default());
        intruder.send(trio.now, A, c_b_down(c_version + 1)).unwrap();
        let forged = intruder.poll_transmit().unwrap().datagram;
        trio.deliver(C, A, &forged);
        // Replayed: everything C ever sent A, handshakes included.
        let captured: Vec<Vec<u8>> = trio
            .sent
            .iter()
            .filter(|(from, to, d)| (*from, *to) == (C, A) && !lost.contains(d))
            .map(|(.., d)| d.clone())
            .collect();
        let transports = captured.iter().filter(|d| d[3] == TRANSPORT).count();
        assert!(transports > 10);
        for datagram in &captured {
            trio.deliver(C, A, datagram);
        }
        // Altered and truncated: C's real next row, one bit flipped at a
        // time, then cut at every length.
        trio.endpoints[2]
            .send(trio.now, A, c_b_down(c_version + 1))
            .unwrap();
        let authentic = trio.endpoints[2].poll_transmit().unwrap().datagram;
        for bit in 0..authentic.len() * 8 {
            let mut flipped = authentic.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            trio.deliver(C, A, &flipped);
        }
        for len in 0..authentic.len() {
            trio.deliver(C, A, &authentic[..len]);
        }

        let a = trio.node(A);
        assert_eq!(a.routes(), routes, "no route moved");
        assert_eq!(*a.counters(), counters, "nothing reached the node");
        assert_eq!(a.poll_transmit(), None, "nothing to answer");
        let rejects = *trio.endpoint(A).rejects();
        assert_eq!(trio.endpoint(A).poll_transmit(), None, "nothing answered");
        assert_eq!(rejects.get(Reject::UnknownKey), 1);
        // Every transport replayed is refused as such (the handshakes as
        // replays, or as answers to handshakes A has finished).
        assert!(
            rejects.get(Reject::Replayed) >= transports as u64,
            "{rejects:?}"
        );
        assert_eq!(rejects.get(Reject::UnknownVersion), 8, "{rejects:?}");
        assert_eq!(
            rejects.total(),
            (1 + captured.len() + authentic.len() * 8 + authentic.len()) as u64
        );

        // None of it moved C's replay window at A: C's real message, whole,
        // is taken, and A routes around the link it reports dead.
        trio.deliver(C, A, &authentic);
        assert_eq!(trio.node(A).link(C, B).map(|l| l.up), Some(false));
        trio.run_until(trio.now + ms(100));
        assert_eq!(trio.node(A).route(B), Some(Hop::Direct));
    }

    /// Replies B sent A before A's control process restarted, replayed to
    /// A after it while B is dead, keep nothing up: they belong to sessions
    /// the new process never had, and the link goes down on time.
    #[test]
    fn replies_replayed_from_before_a_restart_keep_no_dead_link_up() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        let captured: Vec<Vec<u8>> = trio
            .sent
            .iter()
            .filter(|(from, to, _)| (*from, *to) == (B, A))
            .map(|(.., d)| d.clone())
            .collect();
        assert!(captured.len() > 20);
        trio.restart(A);
        trio.run_until(ms(4000));
        assert_eq!(trio.node(A).link(A, B).map(|l| l.up), Some(true));

        // B dies; its old datagrams keep arriving at A, ten a millisecond.
        fn b_dead(a: NodeId, b: NodeId) -> Option<Duration> {
            (a != B && b != B).then(|| slow_a_b(a, b))?
        }
        trio.delay = b_dead;
        let died = trio.now;
        let mut replayed = captured.iter().cycle();
        while trio.node(A).link(A, B).is_some_and(|l| l.up) {
            assert!(trio.now < died + ms(1000), "B kept up by replays");
            for datagram in replayed.by_ref().take(10) {
                trio.deliver(B, A, datagram);
            }
            let next = trio.now;
            trio.run_until(next);
        }
        // As fast as without the replays (probe bound: 440 ms).
        assert!(trio.now - died <= ms(460), "{:?}", trio.now - died);
        let rejects = *trio.endpoint(A).rejects();
        assert!(rejects.get(Reject::UnknownSession) >= 1000, "{rejects:?}");
        assert_eq!(
            rejects.total(),
            rejects.get(Reject::UnknownSession) + rejects.get(Reject::Replayed)
        );
    }

    /// B, a member, sends A a row that says it is C's: refused whatever it
    /// says, since rows come only from their origin over its own session.
    #[test]
    fn a_member_forging_another_members_row_changes_no_route() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        assert_eq!(trio.node(A).route(B), Some(Hop::Via(C)));
        let routes = trio.node(A).routes().to_vec();
        let link = trio.node(A).link(C, B);
        let c_version = trio.node(C).advertiser.version();
        let forged = Message::LinkState(Arc::new(LinkState {
            origin: C,
            version: c_version + 100,
            kind: RowKind::Full,
            drained: false,
            links: vec![(A, LinkEstimate::DOWN), (B, LinkEstimate::DOWN)],
        }));
        trio.send(B, A, forged);
        trio.run_until(trio.now + ms(200));
        assert_eq!(trio.endpoint(A).rejects().get(Reject::ForgedOrigin), 1);
        assert_eq!(trio.node(A).link(C, B), link);
        assert_eq!(trio.node(A).routes(), routes, "no route moved");
        assert_eq!(held(&mut trio, A, C), Some(c_version));
    }

    /// Four minutes of probing, across two rekeys of every session (and
    /// the responders' own): not one probe or row lost to a rekey, nothing
    /// refused.
    #[test]
    fn probing_across_rekeys_loses_nothing() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(3000));
        let counters = |trio: &mut Trio| [A, B, C].map(|id| *trio.node(id).counters());
        let sessions =
            |trio: &mut Trio| [A, B, C].map(|id| trio.endpoint(id).counters().sessions_established);
        let (before, sessions_before) = (counters(&mut trio), sessions(&mut trio));
        trio.run_until(ms(250_000));
        let (after, sessions_after) = (counters(&mut trio), sessions(&mut trio));
        for i in 0..3 {
            let sent = after[i].probes_sent - before[i].probes_sent;
            let answered = after[i].replies_received - before[i].replies_received;
            assert!(sent > 2400, "{sent}");
            // Only the last round trip's probes are still out.
            assert!(
                sent - answered <= 2,
                "node {}: {sent} sent, {answered} answered",
                i + 1
            );
            assert_eq!(after[i].stray_replies, before[i].stray_replies);
            assert_eq!(after[i].links_down, before[i].links_down);
            assert!(
                sessions_after[i] >= sessions_before[i] + 4,
                "{sessions_after:?}"
            );
        }
        for id in [A, B, C] {
            assert_eq!(trio.endpoint(id).rejects().total(), 0, "{id}");
        }
    }

    /// A reload on A removes C, then brings it back: C is cut off at once
    /// (its datagrams open nothing, no route goes to or through it), and
    /// back in the overlay within a second, A's other state kept.
    #[test]
    fn a_peer_removed_and_added_again_by_a_reload() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        assert_eq!(trio.node(A).route(B), Some(Hop::Via(C)));
        let b_rtt = trio.node(A).link(A, B).unwrap().rtt;

        let now = trio.now;
        trio.node(A).reconfigure(now, [B], Policy::default());
        trio.endpoint(A).remove_peer(C);
        trio.run_until(now + ms(100));
        let a = trio.node(A);
        assert_eq!(a.members(), [A, B]);
        assert_eq!(a.route(B), Some(Hop::Direct), "not through C");
        assert_eq!(a.route(C), None);
        assert_eq!(a.link(A, C), None);
        assert_eq!(a.link(C, B), None);
        assert_eq!(
            a.link(A, B).map(|l| (l.up, l.rtt)),
            Some((true, b_rtt)),
            "kept"
        );
        trio.run_until(now + ms(1000));
        let rejects = *trio.endpoint(A).rejects();
        assert!(
            rejects.get(Reject::UnknownSession) > 5,
            "C's messages: {rejects:?}"
        );
        assert_eq!(trio.node(A).route(C), None);

        let now = trio.now;
        trio.node(A).reconfigure(now, [B, C], Policy::default());
        trio.endpoint(A).add_peer(PeerKeys {
            id: C,
            public: private(C).public_key(),
            psk: PresharedKey::default(),
        });
        while trio.node(A).route(B) != Some(Hop::Via(C)) {
            assert!(trio.now < now + ms(1000), "C not back within a second");
            let next = trio.now;
            trio.run_until(next);
        }
        assert_eq!(trio.node(A).route(C), Some(Hop::Direct));
        // B kept its view of A all along: A's rows after the reload were
        // taken, not refused as stale.
        let b_rejects = *trio.endpoint(B).rejects();
        assert_eq!(b_rejects.get(Reject::Stale), 0, "{b_rejects:?}");
    }

    #[test]
    fn a_request_right_after_a_delta_gets_the_row_whole_at_once() {
        let mut trio = Trio::new(slow_a_b);
        trio.run_until(ms(2000));
        // C's link to B dies: C sends A a delta of the new version...
        fn c_b_cut(a: NodeId, b: NodeId) -> Option<Duration> {
            (a.0.min(b.0), a.0.max(b.0))
                .ne(&(2, 3))
                .then(|| slow_a_b(a, b))?
        }
        trio.delay = c_b_cut;
        let version = trio.node(C).advertiser.version();
        while trio.node(C).advertiser.version() == version {
            let next = trio.now;
            trio.run_until(next);
        }
        // ...and A, which (say) lost its row of C, asks for it at once. A
        // delta is not a whole row on its way: C answers with the row.
        let now = trio.now;
        let c = trio.node(C);
        while c.poll_transmit().is_some() {}
        c.handle_message(now, A, &Message::RowRequest).unwrap();
        match c.poll_transmit() {
            Some((to, Message::LinkState(row))) => {
                assert_eq!((to, row.kind, row.version), (A, RowKind::Full, version + 1));
            }
            other => panic!("no whole row: {other:?}"),
        }
        // A second request at once is answered by that one.
        c.handle_message(now, A, &Message::RowRequest).unwrap();
        assert_eq!(c.poll_transmit(), None);
    }
}
