//! Path selection: for every destination, the best of the direct path and
//! every one-hop path through a live relay (docs/design.md, "Routing";
//! RON, SOSP 2001).
//!
//! [`PathSelector::select`] reads a [`LinkTable`] (our own row from the
//! prober, every other node's row from link state) and a [`Policy`], and
//! returns a [`Route`] per destination and the [`Change`]s since the last
//! call, so that the installer pushes a snapshot only when there are some.
//!
//! ## Metrics
//!
//! RON optimised latency and loss separately; [`Metric`] offers both and a
//! combined default:
//!
//! - [`Metric::Latency`]: the sum of the links' RTTs, in seconds.
//! - [`Metric::Loss`]: `1 − Π(1 − loss)`, the chance that a packet is lost
//!   somewhere on the path; equal losses (most often zero) are broken by
//!   latency, so a loss-optimised overlay does not take a detour for nothing.
//! - [`Metric::Combined`]: the expected time to get a packet through when
//!   every loss costs a retransmission timeout and another try:
//!   `(rtt + q·T) / (1 − q)` with `q` the path's loss and
//!   `T` = [`LOSS_TIMEOUT`]. It is the latency on a clean path and has the
//!   same unit, so one hysteresis margin fits both; and it prices loss as
//!   traffic feels it, which a plain `rtt / (1 − q)` does not (that would
//!   take a 20 ms path with 20% loss over a clean 30 ms one). Here 1% loss
//!   on 20 ms costs 22 ms; 5% costs 32 ms, so a clean 30 ms path wins.
//!
//! ## Hysteresis
//!
//! Estimates move with every probe, and a route that followed each move
//! would flap and reorder traffic. A live current path is left only for a
//! candidate better by both a relative fraction and an absolute margin
//! ([`Hysteresis`]): the fraction keeps long paths from switching on noise,
//! the margin keeps short ones from switching on a fraction of a
//! millisecond. A current path that went down is left at once, for the best
//! live one. With [`Hysteresis::OFF`] the choice is the best candidate,
//! a pure function of the links.
//!
//! The direct path is the default, as the Internet's own path is in RON: a
//! relay costs the relay's capacity and one more node that can fail. A
//! destination without a live current path (a new one, or its path went
//! down) takes a relay only for a clear gain over the direct path, and a
//! relay in use is left for the direct path once it is no longer worth
//! half a clear gain over it (a band, so that it does not flap). Without
//! that, a relay taken while the direct path had a bad spell (a delayed
//! probe on a loaded machine) would keep the traffic for as long as the
//! two paths stay within the margin of each other: for ever, on equal
//! paths.
//!
//! ## Ties
//!
//! Equal candidates are ordered by cost, then summed RTT, then the direct
//! path before any relay, then the lowest relay id, so that runs (and the
//! simulator) are reproducible.
//!
//! ## Operator overrides
//!
//! A pinned path ([`Policy::pins`]) is used, whatever its cost, while it is
//! live; while it is down the destination falls back to the best live path
//! (an operator pins a route to steer traffic, not to lose it), and it
//! returns to the pin as soon as the pin is live again. A drained node
//! ([`Policy::drained`]) relays for no one, a pinned path through it
//! included (draining is what an operator does before taking a node away),
//! but it stays a destination.
//!
//! ## Cost
//!
//! One call is O(N) destinations × O(N) relays: our own leg to each relay is
//! looked up once, then one [`LinkTable::link`] per (relay, destination).
//! Buffers are kept between calls, so a call on a steady membership does not
//! allocate. At 1000 nodes over a [`LinkMatrix`] a call took 7 to 8 ms
//! (release build, 2-vCPU machine of this project's kind, all metrics).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::LinkEstimate;

/// What [`Metric::Combined`] charges for each lost try: Linux's minimum TCP
/// retransmission timeout (`TCP_RTO_MIN`), and about the gap a lost packet
/// leaves in interactive traffic.
pub const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// How paths are compared. Lower cost is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Metric {
    /// Sum of the links' RTTs, in seconds.
    Latency,
    /// Chance of losing a packet on the path, 0.0 to 1.0.
    Loss,
    /// Expected time to deliver a packet, losses retried after
    /// [`LOSS_TIMEOUT`], in seconds. See the module documentation.
    #[default]
    Combined,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Latency, Metric::Loss, Metric::Combined];

    /// The name used in configuration and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Loss => "loss",
            Metric::Combined => "combined",
        }
    }

    /// The cost of a path made of `legs`, in this metric's unit. An empty
    /// path costs nothing. Does not look at `up`: liveness is the caller's.
    pub fn cost(self, legs: &[LinkEstimate]) -> f64 {
        let (rtt, delivery) = totals(legs);
        self.cost_of(rtt, delivery)
    }

    /// The cost of a path whose RTTs add to `rtt` seconds and which
    /// delivers a share `delivery` of its packets.
    fn cost_of(self, rtt: f64, delivery: f64) -> f64 {
        match self {
            Metric::Latency => rtt,
            Metric::Loss => 1.0 - delivery,
            // Tries until one gets through are geometric: 1/p of them, the
            // (1 − p)/p failed ones each costing a timeout and a round trip.
            // Infinite when nothing gets through, which still orders.
            Metric::Combined => (rtt + (1.0 - delivery) * LOSS_TIMEOUT.as_secs_f64()) / delivery,
        }
    }
}

/// Summed RTT in seconds and the share of packets delivered.
fn totals(legs: &[LinkEstimate]) -> (f64, f64) {
    legs.iter().fold((0.0, 1.0), |(rtt, delivery), leg| {
        (
            rtt + leg.rtt.as_secs_f64(),
            delivery * delivery_rate(leg.loss),
        )
    })
}

/// `1 − loss`, kept within 0..=1 so a bad estimate cannot make a cost NaN
/// or negative.
fn delivery_rate(loss: f64) -> f64 {
    if loss.is_nan() {
        0.0
    } else {
        (1.0 - loss).clamp(0.0, 1.0)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMetric(s.to_owned()))
    }
}

/// A metric name that is none of [`Metric::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMetric(pub String);

impl fmt::Display for UnknownMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown routing metric {:?}: use \"latency\", \"loss\" or \"combined\"",
            self.0
        )
    }
}

impl std::error::Error for UnknownMetric {}

/// How much better a candidate must be before a live current path is left.
/// Both conditions must hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    /// Gain as a fraction of the current path's cost, e.g. 0.1 for 10%.
    pub relative: f64,
    /// Gain in the metric's unit (seconds, or a loss fraction).
    pub absolute: f64,
}

impl Hysteresis {
    /// Always take the best candidate.
    pub const OFF: Hysteresis = Hysteresis {
        relative: 0.0,
        absolute: 0.0,
    };

    /// The default for `metric`: 10%, and at least 5 ms for the metrics in
    /// seconds (RTT estimates of a steady link wander by about that) or 5
    /// points of loss (five probes of the prober's 100-probe window; a
    /// link losing 2 % at random wanders by about that).
    pub const fn for_metric(metric: Metric) -> Hysteresis {
        match metric {
            Metric::Latency | Metric::Combined => Hysteresis {
                relative: 0.10,
                absolute: 0.005,
            },
            Metric::Loss => Hysteresis {
                relative: 0.10,
                absolute: 0.05,
            },
        }
    }

    /// Half of both margins: what keeps a relay against the direct path.
    pub fn half(&self) -> Hysteresis {
        Hysteresis {
            relative: self.relative / 2.0,
            absolute: self.absolute / 2.0,
        }
    }

    /// Whether a candidate costing `candidate` is a clear enough gain over
    /// a live current path costing `current`.
    pub fn is_clear_gain(&self, current: f64, candidate: f64) -> bool {
        // Equal costs (both infinite included) gain nothing rather than NaN,
        // so that with hysteresis off a tie still goes to the canonical best.
        let gain = if current == candidate {
            0.0
        } else {
            current - candidate
        };
        // 0 × ∞ is NaN: a zero fraction asks for nothing, whatever the cost.
        let relative = if self.relative > 0.0 {
            self.relative * current
        } else {
            0.0
        };
        gain >= self.absolute && gain >= relative
    }
}

/// The shape of a path to a destination.
///
/// Ordered as ties are broken: direct first, then by relay id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    /// Straight to the destination.
    Direct,
    /// Through this relay, then to the destination.
    Via(NodeId),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Direct => f.write_str("direct"),
            Hop::Via(relay) => write!(f, "via {relay}"),
        }
    }
}

/// `"direct"` or `"via <relay id>"`, as [`Hop`]'s `Display` writes it.
impl FromStr for Hop {
    type Err = String;

    fn from_str(text: &str) -> Result<Hop, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        match words[..] {
            ["direct"] => Ok(Hop::Direct),
            ["via", relay] => match relay.parse::<u16>() {
                Ok(id) if NodeId(id).is_valid() => Ok(Hop::Via(NodeId(id))),
                _ => Err(format!("{relay:?} is not a node id (1 to 65534)")),
            },
            _ => Err(format!(
                "{text:?} is not a path: say \"direct\" or \"via <relay id>\""
            )),
        }
    }
}

/// A live path and what it costs by the policy's metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Path {
    pub hop: Hop,
    pub cost: f64,
}

/// The choice for one destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Route {
    pub dst: NodeId,
    /// `None`: no live path, the destination is unreachable.
    pub path: Option<Path>,
}

impl Route {
    pub fn hop(&self) -> Option<Hop> {
        self.path.map(|p| p.hop)
    }

    /// The node packets for `dst` are sent to: the destination itself or
    /// the relay; `None` when unreachable.
    pub fn next_hop(&self) -> Option<NodeId> {
        self.hop().map(|hop| match hop {
            Hop::Direct => self.dst,
            Hop::Via(relay) => relay,
        })
    }
}

/// A destination whose route changed. `None` is unreachable (or, in
/// `to`, no longer a member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub dst: NodeId,
    pub from: Option<Hop>,
    pub to: Option<Hop>,
}

/// Why a route is what it is ([`PathSelector::explain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The cheapest live path.
    Best,
    /// The path in use, kept: the cheapest is not better by the
    /// hysteresis margins.
    Hysteresis,
    /// The operator's pin, live.
    Pinned,
    /// Pinned, but the pinned path is down: the best live path meanwhile.
    PinDown,
    /// No live path.
    Unreachable,
}

impl Reason {
    /// The name operators see (`detourctl paths`, its JSON).
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Best => "best",
            Reason::Hysteresis => "hysteresis",
            Reason::Pinned => "pinned",
            Reason::PinDown => "pin-down",
            Reason::Unreachable => "unreachable",
        }
    }
}

/// One destination's choice, with what it was weighed against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Explanation {
    pub dst: NodeId,
    /// The path the policy picks now; `None`: unreachable.
    pub chosen: Option<Path>,
    /// The cheapest live path, chosen or not.
    pub best: Option<Path>,
    /// The direct path, if live.
    pub direct: Option<Path>,
    pub pin: Option<Hop>,
    pub reason: Reason,
}

/// What the selector may use, besides the links themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub metric: Metric,
    pub hysteresis: Hysteresis,
    /// Operator-pinned paths, by destination: used while live, whatever
    /// they cost; the best live path while they are down.
    pub pins: BTreeMap<NodeId, Hop>,
    /// Nodes that relay for no one (they remain destinations).
    pub drained: BTreeSet<NodeId>,
}

impl Policy {
    /// `metric` with its default hysteresis, no pins, nothing drained.
    pub fn new(metric: Metric) -> Policy {
        Policy {
            metric,
            hysteresis: Hysteresis::for_metric(metric),
            pins: BTreeMap::new(),
            drained: BTreeSet::new(),
        }
    }
}

/// Why `relay` cannot carry a pinned path from `local` to `dst`, if it
/// cannot; `is_peer` says which nodes are peers of `local`.
pub fn check_relay(
    local: NodeId,
    dst: NodeId,
    relay: NodeId,
    is_peer: impl Fn(NodeId) -> bool,
) -> Result<(), String> {
    let reason = if relay == local {
        "is this node: say \"direct\""
    } else if relay == dst {
        "is the destination itself: say \"direct\""
    } else if !is_peer(relay) {
        "is not a peer (no [[peers]] has that id)"
    } else {
        return Ok(());
    };
    Err(format!("relay {relay} {reason}"))
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Metric::default())
    }
}

/// What is known of the overlay's links, as the selector reads it.
pub trait LinkTable {
    /// The link from `from` to `to`: our own measurement when `from` is the
    /// local node, otherwise what `from` last reported. `None` when nothing
    /// is known, which the selector treats as down. A row too old to trust
    /// should read as `None` or down: the selector does not judge age.
    fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate>;
}

/// A closure is a table, e.g. to read our own row from the prober and the
/// rest from link state.
impl<F> LinkTable for F
where
    F: Fn(NodeId, NodeId) -> Option<LinkEstimate>,
{
    // The selector's inner loop calls this per candidate; once select
    // and reselect shared their helpers, LLVM stopped inlining the closure
    // and a computation took 15 % longer (sim, N = 150, relay-failure).
    #[inline(always)]
    fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate> {
        self(from, to)
    }
}

/// A dense table of every link between a set of nodes, for tests and the
/// simulator: one lookup is two array indexings.
#[derive(Debug, Clone, Default)]
pub struct LinkMatrix {
    /// By `NodeId.0`: the node's index plus one, 0 for none.
    index: Vec<u32>,
    nodes: Vec<NodeId>,
    /// `nodes.len()` squared, by destination: the links into one node
    /// side by side, as the path selector reads them.
    cells: Vec<Option<LinkEstimate>>,
}

impl LinkMatrix {
    /// A table of `nodes` with no link known.
    pub fn new(nodes: impl IntoIterator<Item = NodeId>) -> LinkMatrix {
        let mut matrix = LinkMatrix::default();
        let nodes: Vec<NodeId> = nodes.into_iter().collect();
        for &node in &nodes {
            matrix.insert_index(node);
        }
        matrix.cells = vec![None; matrix.nodes.len() * matrix.nodes.len()];
        matrix
    }

    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    /// Record the link from `from` to `to`, adding either node if new
    /// (which re-lays the table: add nodes up front where there are many).
    pub fn set(&mut self, from: NodeId, to: NodeId, estimate: LinkEstimate) {
        let cell = self.cell_or_insert(from, to);
        self.cells[cell] = Some(estimate);
    }

    /// Record the same estimate both ways.
    pub fn set_both(&mut self, a: NodeId, b: NodeId, estimate: LinkEstimate) {
        self.set(a, b, estimate);
        self.set(b, a, estimate);
    }

    /// Forget the link from `from` to `to`: it reads as unknown again.
    pub fn forget(&mut self, from: NodeId, to: NodeId) {
        if let Some(cell) = self.cell(from, to) {
            self.cells[cell] = None;
        }
    }

    fn slot(&self, node: NodeId) -> Option<usize> {
        match self.index.get(usize::from(node.0)) {
            Some(&i) if i > 0 => Some(i as usize - 1),
            _ => None,
        }
    }

    fn cell(&self, from: NodeId, to: NodeId) -> Option<usize> {
        Some(self.slot(to)? * self.nodes.len() + self.slot(from)?)
    }

    fn cell_or_insert(&mut self, from: NodeId, to: NodeId) -> usize {
        for node in [from, to] {
            if self.slot(node).is_none() {
                self.add_node(node);
            }
        }
        self.cell(from, to).expect("both nodes were just added")
    }

    /// Add `node` with no links known, keeping the links already set.
    fn add_node(&mut self, node: NodeId) {
        let old = self.nodes.len();
        self.insert_index(node);
        let new = self.nodes.len();
        let mut cells = vec![None; new * new];
        for to in 0..old {
            cells[to * new..to * new + old].copy_from_slice(&self.cells[to * old..to * old + old]);
        }
        self.cells = cells;
    }

    fn insert_index(&mut self, node: NodeId) {
        if self.slot(node).is_some() {
            return;
        }
        let at = usize::from(node.0);
        if self.index.len() <= at {
            self.index.resize(at + 1, 0);
        }
        self.nodes.push(node);
        self.index[at] = u32::try_from(self.nodes.len()).expect("at most 65536 nodes");
    }
}

impl LinkTable for LinkMatrix {
    fn link(&self, from: NodeId, to: NodeId) -> Option<LinkEstimate> {
        self.cells[self.cell(from, to)?]
    }
}

/// The result of one [`PathSelector::select`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection<'a> {
    /// One route per destination, in the order of the `nodes` given.
    pub routes: &'a [Route],
    /// Destinations whose route changed since the last call: those in
    /// `routes` order, then members that left, by id.
    pub changes: &'a [Change],
}

impl Selection<'_> {
    /// Whether anything changed, i.e. whether to install a new snapshot.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// Chooses one node's routes and remembers them, so that hysteresis can
/// compare the next candidates with the paths in use. One per local node.
#[derive(Debug, Default)]
pub struct PathSelector {
    /// The hop chosen per destination at the last call (`None`:
    /// unreachable).
    current: HashMap<NodeId, Option<Hop>>,
    /// Buffers kept between calls so that a call does not allocate.
    next: HashMap<NodeId, Option<Hop>>,
    /// Usable relays: our leg's summed RTT and delivery rate.
    relays: Vec<(NodeId, f64, f64)>,
    routes: Vec<Route>,
    changes: Vec<Change>,
}

impl PathSelector {
    pub fn new() -> PathSelector {
        PathSelector::default()
    }

    /// The hop in use for `dst`: `None` if unreachable or never selected.
    pub fn current(&self, dst: NodeId) -> Option<Hop> {
        self.current.get(&dst).copied().flatten()
    }

    /// Takes `hop` as the path in use for `dst`, as if a call had chosen
    /// it: a restarted control process adopts the routes the dataplane
    /// still forwards by, so that hysteresis keeps them rather than
    /// switching for no clear gain.
    pub fn assume(&mut self, dst: NodeId, hop: Option<Hop>) {
        self.current.insert(dst, hop);
    }

    /// The routes of the last call.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// What the last call changed.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Choose a route from `local` to every other node of `nodes` (the
    /// overlay's members; `local` and repeats are skipped), through any
    /// member as relay, and report what changed since the last call.
    pub fn select(
        &mut self,
        local: NodeId,
        nodes: &[NodeId],
        links: &impl LinkTable,
        policy: &Policy,
    ) -> Selection<'_> {
        self.next.clear();
        self.routes.clear();
        self.changes.clear();
        self.gather_relays(local, nodes, links, policy);

        for &dst in nodes {
            // `next` doubles as the set of destinations seen so far.
            if dst == local || self.next.insert(dst, None).is_some() {
                continue;
            }
            let search = self.search(local, dst, links, policy);
            let (hop, path) = search.decide(&policy.hysteresis);
            self.next.insert(dst, hop);
            self.routes.push(Route { dst, path });
            self.changes.extend(search.change(hop));
        }

        // Members that left lose their route; by id, so runs reproduce.
        let first_left = self.changes.len();
        for (&dst, &hop) in &self.current {
            if hop.is_some() && !self.next.contains_key(&dst) {
                self.changes.push(Change {
                    dst,
                    from: hop,
                    to: None,
                });
            }
        }
        self.changes[first_left..].sort_unstable_by_key(|c| c.dst);

        std::mem::swap(&mut self.current, &mut self.next);
        Selection {
            routes: &self.routes,
            changes: &self.changes,
        }
    }

    /// Chooses again for `dsts` only, keeping every other route: for when
    /// only links toward them changed (a relay's row naming them), which
    /// costs a scan of the relays per destination instead of a full
    /// [`Self::select`]. `nodes` must be those of the last full call, in
    /// ascending order; destinations not among them are skipped. The
    /// changes reported are those of `dsts`.
    pub fn reselect(
        &mut self,
        local: NodeId,
        nodes: &[NodeId],
        dsts: &[NodeId],
        links: &impl LinkTable,
        policy: &Policy,
    ) -> Selection<'_> {
        debug_assert!(nodes.is_sorted());
        self.changes.clear();
        self.gather_relays(local, nodes, links, policy);
        for &dst in dsts {
            let Ok(slot) = self.routes.binary_search_by_key(&dst, |r| r.dst) else {
                continue;
            };
            let search = self.search(local, dst, links, policy);
            let (hop, path) = search.decide(&policy.hysteresis);
            self.current.insert(dst, hop);
            self.routes[slot].path = path;
            self.changes.extend(search.change(hop));
        }
        Selection {
            routes: &self.routes,
            changes: &self.changes,
        }
    }

    /// Why the route to `dst` is what it is, weighed on `links` now: for
    /// operators (`detourctl paths`). Allocates nothing; costs a scan of
    /// the members.
    pub fn explain(
        &self,
        local: NodeId,
        nodes: &[NodeId],
        dst: NodeId,
        links: &impl LinkTable,
        policy: &Policy,
    ) -> Explanation {
        let mut search = Search::start(local, dst, self.current(dst), links, policy);
        for &relay in nodes {
            if relay == local || policy.drained.contains(&relay) {
                continue;
            }
            if let Some(leg) = links.link(local, relay)
                && leg.up
            {
                let (rtt, delivery) = totals(&[leg]);
                search.offer_via((relay, rtt, delivery), links, policy.metric);
            }
        }
        let path = |c: Candidate| Path {
            hop: c.hop,
            cost: c.cost,
        };
        let chosen = search.choose(&policy.hysteresis);
        let reason = match (chosen, search.best) {
            (None, _) => Reason::Unreachable,
            _ if search.pinned.is_some() => Reason::Pinned,
            _ if search.pin.is_some() => Reason::PinDown,
            (Some(chosen), Some(best)) if chosen.hop != best.hop => Reason::Hysteresis,
            _ => Reason::Best,
        };
        let direct = links.link(local, dst).filter(|leg| leg.up).map(|leg| Path {
            hop: Hop::Direct,
            cost: policy.metric.cost(&[leg]),
        });
        Explanation {
            dst,
            chosen: chosen.map(path),
            best: search.best.map(path),
            direct,
            pin: search.pin,
            reason,
        }
    }

    /// Weighs every candidate path to `dst`: direct, and through each relay
    /// of [`Self::gather_relays`].
    ///
    /// The relays' legs toward one destination are read in a row: the
    /// link tables store the links into a node side by side
    /// (`LinkStateDb`, `LinkMatrix`), so this is a scan of adjacent
    /// memory, not a cache miss per candidate (in the simulator, N = 200:
    /// a route computation took 98 µs with the table stored by origin).
    fn search(
        &self,
        local: NodeId,
        dst: NodeId,
        links: &impl LinkTable,
        policy: &Policy,
    ) -> Search {
        let mut search = Search::start(local, dst, self.current(dst), links, policy);
        for &relay in &self.relays {
            search.offer_via(relay, links, policy.metric);
        }
        search
    }

    /// Our leg to each usable relay, looked up once rather than per
    /// destination.
    fn gather_relays(
        &mut self,
        local: NodeId,
        nodes: &[NodeId],
        links: &impl LinkTable,
        policy: &Policy,
    ) {
        self.relays.clear();
        for &relay in nodes {
            if relay == local || policy.drained.contains(&relay) {
                continue;
            }
            if let Some(leg) = links.link(local, relay)
                && leg.up
            {
                let (rtt, delivery) = totals(&[leg]);
                self.relays.push((relay, rtt, delivery));
            }
        }
    }
}

/// A live candidate path.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    hop: Hop,
    cost: f64,
    /// Summed RTT in seconds: the first tie-break.
    rtt: f64,
}

impl Candidate {
    fn order(&self, other: &Candidate) -> Ordering {
        self.cost
            .total_cmp(&other.cost)
            .then(self.rtt.total_cmp(&other.rtt))
            .then(self.hop.cmp(&other.hop))
    }
}

/// The scan of one destination's candidates.
#[derive(Debug)]
struct Search {
    dst: NodeId,
    previous: Option<Hop>,
    pin: Option<Hop>,
    best: Option<Candidate>,
    /// The direct path, if it is live.
    direct: Option<Candidate>,
    /// The previous path, if it is still live.
    current: Option<Candidate>,
    /// The pinned path, if it is live.
    pinned: Option<Candidate>,
}

impl Search {
    fn new(dst: NodeId, previous: Option<Hop>, pin: Option<Hop>) -> Search {
        Search {
            dst,
            previous,
            pin,
            best: None,
            direct: None,
            current: None,
            pinned: None,
        }
    }

    fn offer(&mut self, hop: Hop, cost: f64, rtt: f64) {
        let candidate = Candidate { hop, cost, rtt };
        if self
            .best
            .is_none_or(|best| candidate.order(&best) == Ordering::Less)
        {
            self.best = Some(candidate);
        }
        if hop == Hop::Direct {
            self.direct = Some(candidate);
        }
        if self.previous == Some(hop) {
            self.current = Some(candidate);
        }
        if self.pin == Some(hop) {
            self.pinned = Some(candidate);
        }
    }

    /// A search toward `dst` whose path in use is `previous`, offered the
    /// direct path if it is live.
    fn start(
        local: NodeId,
        dst: NodeId,
        previous: Option<Hop>,
        links: &impl LinkTable,
        policy: &Policy,
    ) -> Search {
        let mut search = Search::new(dst, previous, policy.pins.get(&dst).copied());
        if let Some(leg) = links.link(local, dst)
            && leg.up
        {
            let (rtt, delivery) = totals(&[leg]);
            search.offer(Hop::Direct, policy.metric.cost_of(rtt, delivery), rtt);
        }
        search
    }

    /// Offers the path through `relay` (our leg's summed RTT and delivery
    /// rate, from [`PathSelector::gather_relays`]) if its second leg is
    /// live.
    fn offer_via(
        &mut self,
        (relay, first_rtt, first_delivery): (NodeId, f64, f64),
        links: &impl LinkTable,
        metric: Metric,
    ) {
        if relay == self.dst {
            return;
        }
        if let Some(second) = links.link(relay, self.dst)
            && second.up
        {
            let rtt = first_rtt + second.rtt.as_secs_f64();
            let delivery = first_delivery * delivery_rate(second.loss);
            self.offer(Hop::Via(relay), metric.cost_of(rtt, delivery), rtt);
        }
    }

    /// The hop chosen and its path: `None` when nothing is live.
    fn decide(&self, hysteresis: &Hysteresis) -> (Option<Hop>, Option<Path>) {
        let chosen = self.choose(hysteresis);
        (
            chosen.map(|c| c.hop),
            chosen.map(|c| Path {
                hop: c.hop,
                cost: c.cost,
            }),
        )
    }

    fn choose(&self, hysteresis: &Hysteresis) -> Option<Candidate> {
        if self.pinned.is_some() {
            return self.pinned;
        }
        let best = self.best?;
        // The path to beat: the one in use while it is live; with none (a
        // new destination, or its path went down), the direct path.
        let choice = match self.current.or(self.direct) {
            Some(incumbent) if !hysteresis.is_clear_gain(incumbent.cost, best.cost) => incumbent,
            _ => best,
        };
        // A relay stays only while it is worth half a clear gain over the
        // direct path: one taken while the direct path had a bad spell
        // hands the traffic back once it is as good again, rather than
        // keeping it for ever on equal paths.
        match (choice.hop, self.direct) {
            (Hop::Via(_), Some(direct))
                if !hysteresis.half().is_clear_gain(direct.cost, choice.cost) =>
            {
                Some(direct)
            }
            _ => Some(choice),
        }
    }

    /// The change from the path in use to `hop`, if it is one.
    fn change(&self, hop: Option<Hop>) -> Option<Change> {
        (hop != self.previous).then_some(Change {
            dst: self.dst,
            from: self.previous,
            to: hop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(id: u16) -> NodeId {
        NodeId(id)
    }

    fn up(rtt_ms: u64, loss: f64) -> LinkEstimate {
        LinkEstimate {
            up: true,
            rtt: Duration::from_millis(rtt_ms),
            loss,
        }
    }

    fn ids(count: u16) -> Vec<NodeId> {
        (1..=count).map(NodeId).collect()
    }

    /// A matrix of nodes 1..=count with the given links set both ways.
    fn matrix(count: u16, links: &[(u16, u16, LinkEstimate)]) -> LinkMatrix {
        let mut m = LinkMatrix::new(ids(count));
        for &(a, b, est) in links {
            m.set_both(n(a), n(b), est);
        }
        m
    }

    fn latency_off() -> Policy {
        Policy {
            hysteresis: Hysteresis::OFF,
            ..Policy::new(Metric::Latency)
        }
    }

    fn hop_to(
        selector: &mut PathSelector,
        links: &LinkMatrix,
        policy: &Policy,
        dst: u16,
    ) -> Option<Hop> {
        let nodes = links.nodes().to_vec();
        let selection = selector.select(n(1), &nodes, links, policy);
        selection
            .routes
            .iter()
            .find(|r| r.dst == n(dst))
            .expect("a route per destination")
            .hop()
    }

    const MS: f64 = 0.001;

    #[test]
    fn latency_metric_adds_round_trip_times() {
        let cost = Metric::Latency.cost(&[up(20, 0.1), up(30, 0.0)]);
        assert!((cost - 50.0 * MS).abs() < 1e-12);
    }

    #[test]
    fn loss_metric_compounds_delivery_rates() {
        let cost = Metric::Loss.cost(&[up(20, 0.1), up(30, 0.2)]);
        assert!((cost - (1.0 - 0.9 * 0.8)).abs() < 1e-12);
    }

    #[test]
    fn combined_metric_is_latency_on_a_clean_path() {
        let legs = [up(20, 0.0), up(30, 0.0)];
        assert_eq!(Metric::Combined.cost(&legs), Metric::Latency.cost(&legs));
    }

    #[test]
    fn combined_metric_prefers_a_clean_path_over_a_slightly_faster_lossy_one() {
        let lossy = Metric::Combined.cost(&[up(20, 0.05)]);
        let clean = Metric::Combined.cost(&[up(30, 0.0)]);
        assert!(clean < lossy, "clean {clean} lossy {lossy}");
        // A little loss still loses to a clearly longer path.
        assert!(Metric::Combined.cost(&[up(20, 0.01)]) < clean);
    }

    #[test]
    fn combined_metric_of_a_path_that_delivers_nothing_is_infinite() {
        assert_eq!(Metric::Combined.cost(&[up(20, 1.0)]), f64::INFINITY);
        assert_eq!(Metric::Combined.cost(&[up(20, f64::NAN)]), f64::INFINITY);
    }

    #[test]
    fn metric_names_round_trip_through_from_str_and_display() {
        for metric in Metric::ALL {
            assert_eq!(metric.to_string().parse::<Metric>(), Ok(metric));
        }
        assert_eq!(Metric::default(), Metric::Combined);
    }

    #[test]
    fn unknown_metric_name_is_rejected_with_the_valid_names() {
        let err = "fastest".parse::<Metric>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown routing metric \"fastest\": use \"latency\", \"loss\" or \"combined\""
        );
    }

    #[test]
    fn one_hop_path_is_chosen_when_it_beats_direct() {
        let links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(20, 0.0)),
                (2, 3, up(20, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(
            hop_to(&mut selector, &links, &latency_off(), 3),
            Some(Hop::Via(n(2)))
        );
        let route = selector.routes().iter().find(|r| r.dst == n(3)).unwrap();
        assert_eq!(route.next_hop(), Some(n(2)));
        assert!((route.path.unwrap().cost - 40.0 * MS).abs() < 1e-12);
    }

    #[test]
    fn one_hop_path_needs_both_legs_up() {
        for (first, second) in [
            (LinkEstimate::DOWN, up(1, 0.0)),
            (up(1, 0.0), LinkEstimate::DOWN),
        ] {
            let links = matrix(3, &[(1, 3, up(100, 0.0)), (1, 2, first), (2, 3, second)]);
            assert_eq!(
                hop_to(&mut PathSelector::new(), &links, &latency_off(), 3),
                Some(Hop::Direct)
            );
        }
        // Nothing known of the relay's leg reads as down.
        let mut links = matrix(3, &[(1, 3, up(100, 0.0)), (1, 2, up(1, 0.0))]);
        links.forget(n(2), n(3));
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &latency_off(), 3),
            Some(Hop::Direct)
        );
    }

    #[test]
    fn destination_with_no_live_path_is_unreachable() {
        let links = matrix(
            3,
            &[
                (1, 3, LinkEstimate::DOWN),
                (1, 2, up(10, 0.0)),
                (2, 3, LinkEstimate::DOWN),
            ],
        );
        let mut selector = PathSelector::new();
        let selection = selector.select(n(1), &ids(3), &links, &Policy::default());
        assert_eq!(
            selection.routes,
            &[
                Route {
                    dst: n(2),
                    path: Some(Path {
                        hop: Hop::Direct,
                        cost: 10.0 * MS
                    })
                },
                Route {
                    dst: n(3),
                    path: None
                },
            ]
        );
        assert_eq!(selection.routes[1].next_hop(), None);
    }

    #[test]
    fn local_node_and_repeated_members_get_no_extra_route() {
        let links = matrix(2, &[(1, 2, up(10, 0.0))]);
        let mut selector = PathSelector::new();
        let selection =
            selector.select(n(1), &[n(1), n(2), n(2), n(1)], &links, &Policy::default());
        assert_eq!(selection.routes.len(), 1);
        assert_eq!(selection.routes[0].dst, n(2));
    }

    #[test]
    fn hysteresis_keeps_the_current_path_against_a_small_gain() {
        let policy = Policy::new(Metric::Latency);
        let mut links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(50, 0.0)),
                (2, 3, up(50, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        // 8 ms better: above the 5 ms margin, under 10% of 100 ms.
        links.set_both(n(2), n(3), up(42, 0.0));
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
    }

    #[test]
    fn hysteresis_keeps_a_short_path_against_a_large_fraction_of_little() {
        let policy = Policy::new(Metric::Latency);
        let mut links = matrix(
            3,
            &[
                (1, 3, up(10, 0.0)),
                (1, 2, up(50, 0.0)),
                (2, 3, up(50, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        // 40% better, but only 4 ms: under the absolute margin.
        links.set_both(n(1), n(2), up(3, 0.0));
        links.set_both(n(2), n(3), up(3, 0.0));
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
    }

    #[test]
    fn hysteresis_switches_for_a_clear_gain() {
        let policy = Policy::new(Metric::Latency);
        let mut links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(50, 0.0)),
                (2, 3, up(50, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        links.set_both(n(2), n(3), up(30, 0.0));
        let nodes = ids(3);
        let selection = selector.select(n(1), &nodes, &links, &policy);
        assert_eq!(
            selection.changes,
            &[Change {
                dst: n(3),
                from: Some(Hop::Direct),
                to: Some(Hop::Via(n(2)))
            }]
        );
    }

    #[test]
    fn explain_names_each_reason_and_agrees_with_select() {
        let mut policy = Policy::new(Metric::Latency);
        let mut links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(50, 0.0)),
                (2, 3, up(50, 0.0)),
            ],
        );
        let nodes = ids(3);
        let mut selector = PathSelector::new();
        let explain = |selector: &mut PathSelector, links: &LinkMatrix, policy: &Policy| {
            let hop = hop_to(selector, links, policy, 3);
            let e = selector.explain(n(1), &nodes, n(3), links, policy);
            assert_eq!(e.chosen.map(|p| p.hop), hop, "explain agrees with select");
            e
        };
        let e = explain(&mut selector, &links, &policy);
        assert_eq!((e.reason, e.pin), (Reason::Best, None));
        assert_eq!(e.best, e.chosen);
        assert_eq!(e.direct.map(|p| p.hop), Some(Hop::Direct));
        assert!((e.direct.unwrap().cost - 0.1).abs() < 1e-9);

        // 8 ms better through 2: kept direct by hysteresis.
        links.set_both(n(2), n(3), up(42, 0.0));
        let e = explain(&mut selector, &links, &policy);
        assert_eq!(e.reason, Reason::Hysteresis);
        assert_eq!(e.chosen.map(|p| p.hop), Some(Hop::Direct));
        assert_eq!(e.best.map(|p| p.hop), Some(Hop::Via(n(2))));

        policy.pins.insert(n(3), Hop::Via(n(2)));
        let e = explain(&mut selector, &links, &policy);
        assert_eq!((e.reason, e.pin), (Reason::Pinned, Some(Hop::Via(n(2)))));

        links.set_both(n(2), n(3), LinkEstimate::DOWN);
        let e = explain(&mut selector, &links, &policy);
        assert_eq!(e.reason, Reason::PinDown);
        assert_eq!(e.chosen.map(|p| p.hop), Some(Hop::Direct));

        links.set_both(n(1), n(3), LinkEstimate::DOWN);
        let e = explain(&mut selector, &links, &policy);
        assert_eq!(
            (e.reason, e.chosen, e.direct),
            (Reason::Unreachable, None, None)
        );
    }

    #[test]
    fn a_new_destination_takes_a_relay_only_for_a_clear_gain_over_the_direct_path() {
        let policy = Policy::new(Metric::Latency);
        // Via 2: 4 ms better than direct, under the 5 ms margin.
        let mut links = matrix(
            3,
            &[(1, 3, up(10, 0.0)), (1, 2, up(3, 0.0)), (2, 3, up(3, 0.0))],
        );
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 3),
            Some(Hop::Direct)
        );
        // 8 ms better (and more than 10 %): a clear gain.
        links.set_both(n(1), n(3), up(14, 0.0));
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn a_relay_taken_for_a_bad_spell_of_the_direct_path_hands_back_once_it_is_over() {
        let policy = Policy::new(Metric::Latency);
        // Equal paths, 1 ms each leg and direct 2 ms: direct.
        let mut links = matrix(
            3,
            &[(1, 3, up(2, 0.0)), (1, 2, up(1, 0.0)), (2, 3, up(1, 0.0))],
        );
        let mut selector = PathSelector::new();
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        // A bad spell of the direct path: 20 ms. Via 2 is a clear gain.
        links.set_both(n(1), n(3), up(20, 0.0));
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
        // Still 3 ms worse than the relay: worth half the 5 ms margin, kept.
        links.set_both(n(1), n(3), up(5, 0.0));
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
        // Over: the paths are equal again, and the direct path takes the
        // traffic back (plain hysteresis would keep the relay for ever).
        links.set_both(n(1), n(3), up(2, 0.0));
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        let e = selector.explain(n(1), &ids(3), n(3), &links, &policy);
        assert_eq!(e.chosen.map(|p| p.hop), Some(Hop::Direct));
    }

    #[test]
    fn a_better_relay_than_the_one_in_use_is_taken_only_if_it_beats_the_direct_path_too() {
        let policy = Policy::new(Metric::Latency);
        // Direct 30 ms; via 2 is 20, via 4 is 28.
        let mut links = matrix(
            4,
            &[
                (1, 3, up(30, 0.0)),
                (1, 2, up(10, 0.0)),
                (2, 3, up(10, 0.0)),
                (1, 4, up(14, 0.0)),
                (4, 3, up(14, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
        // Via 2 slows to 60 ms; via 4 (28) is clearly better than it but
        // only 2 ms better than direct (30): direct.
        links.set_both(n(2), n(3), up(50, 0.0));
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
    }

    #[test]
    fn down_current_path_is_left_at_once_despite_hysteresis() {
        let policy = Policy::new(Metric::Latency);
        let mut links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(51, 0.0)),
                (2, 3, up(51, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        // The one-hop path is worse, but the direct one is gone.
        links.set_both(n(1), n(3), LinkEstimate::DOWN);
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn ties_prefer_direct_then_the_lowest_relay_id() {
        // Direct 40 ms; via 2, 3 and 4 also 40 ms each.
        let mut links = matrix(5, &[(1, 5, up(40, 0.0))]);
        for relay in [4, 3, 2] {
            links.set_both(n(1), n(relay), up(20, 0.0));
            links.set_both(n(relay), n(5), up(20, 0.0));
        }
        let policy = latency_off();
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 5),
            Some(Hop::Direct)
        );
        links.set_both(n(1), n(5), LinkEstimate::DOWN);
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 5),
            Some(Hop::Via(n(2)))
        );
        // With hysteresis off a tie goes to the same path whatever was in use.
        let mut selector = PathSelector::new();
        links.set_both(n(2), n(5), LinkEstimate::DOWN);
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 5),
            Some(Hop::Via(n(3)))
        );
        links.set_both(n(2), n(5), up(20, 0.0));
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 5),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn loss_metric_breaks_equal_loss_by_latency() {
        let links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(10, 0.0)),
                (2, 3, up(10, 0.0)),
            ],
        );
        let policy = Policy {
            hysteresis: Hysteresis::OFF,
            ..Policy::new(Metric::Loss)
        };
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn drained_node_is_never_a_relay_but_still_a_destination() {
        let links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(10, 0.0)),
                (2, 3, up(10, 0.0)),
            ],
        );
        let mut policy = latency_off();
        policy.drained.insert(n(2));
        let mut selector = PathSelector::new();
        let nodes = ids(3);
        let selection = selector.select(n(1), &nodes, &links, &policy);
        assert_eq!(
            selection.routes[0].hop(),
            Some(Hop::Direct),
            "node 2 itself"
        );
        assert_eq!(
            selection.routes[1].hop(),
            Some(Hop::Direct),
            "node 3 not via 2"
        );
    }

    #[test]
    fn draining_the_relay_in_use_moves_off_it_at_once() {
        let links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(10, 0.0)),
                (2, 3, up(10, 0.0)),
            ],
        );
        let mut policy = Policy::new(Metric::Latency);
        let mut selector = PathSelector::new();
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
        policy.drained.insert(n(2));
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
    }

    #[test]
    fn pinned_path_is_chosen_while_live_even_if_worse() {
        let links = matrix(
            3,
            &[
                (1, 3, up(10, 0.0)),
                (1, 2, up(100, 0.0)),
                (2, 3, up(100, 0.0)),
            ],
        );
        let mut policy = Policy::new(Metric::Latency);
        policy.pins.insert(n(3), Hop::Via(n(2)));
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn pinned_path_that_is_down_falls_back_to_the_best_and_returns_when_up() {
        let mut links = matrix(
            3,
            &[
                (1, 3, up(10, 0.0)),
                (1, 2, up(100, 0.0)),
                (2, 3, up(100, 0.0)),
            ],
        );
        let mut policy = Policy::new(Metric::Latency);
        policy.pins.insert(n(3), Hop::Via(n(2)));
        let mut selector = PathSelector::new();
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
        links.set_both(n(2), n(3), LinkEstimate::DOWN);
        assert_eq!(hop_to(&mut selector, &links, &policy, 3), Some(Hop::Direct));
        // Back to the pin though it is far worse: hysteresis is for the metric.
        links.set_both(n(2), n(3), up(100, 0.0));
        assert_eq!(
            hop_to(&mut selector, &links, &policy, 3),
            Some(Hop::Via(n(2)))
        );
    }

    #[test]
    fn pin_through_a_drained_node_is_not_used() {
        let links = matrix(
            3,
            &[
                (1, 3, up(10, 0.0)),
                (1, 2, up(100, 0.0)),
                (2, 3, up(100, 0.0)),
            ],
        );
        let mut policy = Policy::new(Metric::Latency);
        policy.pins.insert(n(3), Hop::Via(n(2)));
        policy.drained.insert(n(2));
        assert_eq!(
            hop_to(&mut PathSelector::new(), &links, &policy, 3),
            Some(Hop::Direct)
        );
    }

    #[test]
    fn steady_network_reports_no_change_on_recompute() {
        let links = matrix(
            3,
            &[
                (1, 3, up(100, 0.0)),
                (1, 2, up(10, 0.0)),
                (2, 3, up(10, 0.0)),
            ],
        );
        let mut selector = PathSelector::new();
        let nodes = ids(3);
        let first = selector.select(n(1), &nodes, &links, &Policy::default());
        assert_eq!(first.changes.len(), 2, "both destinations newly reachable");
        assert!(
            !selector
                .select(n(1), &nodes, &links, &Policy::default())
                .changed()
        );
    }

    #[test]
    fn member_that_left_is_reported_as_a_change() {
        let links = matrix(3, &[(1, 2, up(10, 0.0)), (1, 3, up(10, 0.0))]);
        let mut selector = PathSelector::new();
        selector.select(n(1), &ids(3), &links, &Policy::default());
        let selection = selector.select(n(1), &ids(2), &links, &Policy::default());
        assert_eq!(
            selection.changes,
            &[Change {
                dst: n(3),
                from: Some(Hop::Direct),
                to: None
            }]
        );
        assert_eq!(selector.current(n(3)), None);
    }

    #[test]
    fn link_matrix_keeps_links_when_nodes_are_added() {
        let mut links = LinkMatrix::new([n(1), n(2)]);
        links.set(n(1), n(2), up(5, 0.0));
        links.set(n(7), n(1), up(9, 0.0));
        assert_eq!(links.nodes(), &[n(1), n(2), n(7)]);
        assert_eq!(links.link(n(1), n(2)), Some(up(5, 0.0)));
        assert_eq!(links.link(n(2), n(1)), None);
        assert_eq!(links.link(n(7), n(1)), Some(up(9, 0.0)));
        assert_eq!(links.link(n(1), n(9)), None);
    }

    #[test]
    fn closure_serves_as_a_link_table() {
        let table = |from: NodeId, to: NodeId| (from == n(1) && to == n(2)).then(|| up(10, 0.0));
        let mut selector = PathSelector::new();
        let selection = selector.select(n(1), &ids(2), &table, &Policy::default());
        assert_eq!(selection.routes[0].hop(), Some(Hop::Direct));
    }

    // ---- Properties, over small random overlays ----

    /// A random overlay of nodes 1..=`count`: any link unknown, down, or up
    /// with RTTs in whole milliseconds (so that ties happen) and losses from
    /// none to total.
    fn overlay(count: u16) -> impl Strategy<Value = LinkMatrix> {
        let link = prop_oneof![
            1 => Just(None),
            1 => Just(Some(LinkEstimate::DOWN)),
            4 => (1u64..60, prop_oneof![3 => Just(0.0), 3 => 0.0..0.3f64, 1 => Just(1.0)])
                .prop_map(|(rtt, loss)| Some(up(rtt, loss))),
        ];
        let count = usize::from(count);
        proptest::collection::vec(link, count * count).prop_map(move |cells| {
            let nodes = ids(count as u16);
            let mut m = LinkMatrix::new(nodes.clone());
            for (i, cell) in cells.into_iter().enumerate() {
                let (from, to) = (nodes[i / count], nodes[i % count]);
                if let Some(est) = cell
                    && from != to
                {
                    m.set(from, to, est);
                }
            }
            m
        })
    }

    /// Two overlays of the same nodes (a history, then now), the local
    /// node, and a policy: any metric, each node drained and pinned with
    /// odds of 1 in 4.
    fn scenario() -> impl Strategy<Value = (LinkMatrix, LinkMatrix, Policy, u16)> {
        (2u16..=7)
            .prop_flat_map(|count| {
                (
                    overlay(count),
                    overlay(count),
                    proptest::sample::select(Metric::ALL.to_vec()),
                    proptest::collection::vec((0u8..4, 0u8..4, 0..=count), usize::from(count)),
                    1..=count,
                )
            })
            .prop_map(|(before, now, metric, draws, local)| {
                let mut policy = Policy::new(metric);
                for (node, (drain, pin, relay)) in before.nodes().iter().copied().zip(draws) {
                    if drain == 0 {
                        policy.drained.insert(node);
                    }
                    if pin == 0 {
                        let hop = if relay == 0 {
                            Hop::Direct
                        } else {
                            Hop::Via(n(relay))
                        };
                        policy.pins.insert(node, hop);
                    }
                }
                (before, now, policy, local)
            })
    }

    /// Every live path from `local` to `dst` and its cost, found the long
    /// way, independently of the selector's scan.
    fn live_candidates(
        links: &LinkMatrix,
        policy: &Policy,
        local: NodeId,
        dst: NodeId,
    ) -> Vec<(Hop, f64)> {
        let is_up = |a, b| links.link(a, b).is_some_and(|l| l.up);
        let mut out = Vec::new();
        if is_up(local, dst) {
            out.push((
                Hop::Direct,
                policy.metric.cost(&[links.link(local, dst).unwrap()]),
            ));
        }
        for &relay in links.nodes() {
            let usable = relay != local && relay != dst && !policy.drained.contains(&relay);
            if usable && is_up(local, relay) && is_up(relay, dst) {
                let legs = [
                    links.link(local, relay).unwrap(),
                    links.link(relay, dst).unwrap(),
                ];
                out.push((Hop::Via(relay), policy.metric.cost(&legs)));
            }
        }
        out
    }

    fn without_pins(mut policy: Policy) -> Policy {
        policy.pins.clear();
        policy
    }

    proptest! {
        #[test]
        fn with_hysteresis_off_the_chosen_path_is_no_worse_than_any_live_candidate(
            (before, now, policy, local) in scenario()
        ) {
            let policy = Policy { hysteresis: Hysteresis::OFF, ..without_pins(policy) };
            let (local, nodes) = (n(local), now.nodes().to_vec());
            let mut selector = PathSelector::new();
            selector.select(local, &nodes, &before, &policy);
            for route in selector.select(local, &nodes, &now, &policy).routes {
                let candidates = live_candidates(&now, &policy, local, route.dst);
                match route.path {
                    None => prop_assert!(candidates.is_empty()),
                    Some(path) => {
                        prop_assert!(candidates.contains(&(path.hop, path.cost)), "{path:?} not live");
                        for (hop, cost) in candidates {
                            prop_assert!(path.cost <= cost, "{path:?} worse than {hop} at {cost}");
                        }
                    }
                }
            }
        }

        #[test]
        fn the_chosen_path_is_always_live_and_never_through_a_drained_node(
            (before, now, policy, local) in scenario()
        ) {
            let (local, nodes) = (n(local), now.nodes().to_vec());
            let mut selector = PathSelector::new();
            selector.select(local, &nodes, &before, &policy);
            for route in selector.select(local, &nodes, &now, &policy).routes {
                // Candidates exclude down links and drained relays.
                let candidates = live_candidates(&now, &policy, local, route.dst);
                match route.path {
                    None => prop_assert!(candidates.is_empty(), "{:?} unreachable", route.dst),
                    Some(path) => prop_assert!(candidates.contains(&(path.hop, path.cost))),
                }
            }
        }

        #[test]
        fn a_live_pinned_path_is_always_chosen((before, now, policy, local) in scenario()) {
            let (local, nodes) = (n(local), now.nodes().to_vec());
            let mut selector = PathSelector::new();
            selector.select(local, &nodes, &before, &policy);
            for route in selector.select(local, &nodes, &now, &policy).routes {
                if let Some(&pin) = policy.pins.get(&route.dst) {
                    let live = live_candidates(&now, &policy, local, route.dst)
                        .iter()
                        .any(|&(hop, _)| hop == pin);
                    prop_assert_eq!(live, route.hop() == Some(pin));
                }
            }
        }

        #[test]
        fn with_hysteresis_off_the_choice_does_not_depend_on_history(
            (before, now, policy, local) in scenario()
        ) {
            let policy = Policy { hysteresis: Hysteresis::OFF, ..policy };
            let (local, nodes) = (n(local), now.nodes().to_vec());
            let mut seasoned = PathSelector::new();
            seasoned.select(local, &nodes, &before, &policy);
            seasoned.select(local, &nodes, &now, &policy);
            let mut fresh = PathSelector::new();
            fresh.select(local, &nodes, &now, &policy);
            prop_assert_eq!(seasoned.routes(), fresh.routes());
        }

        #[test]
        fn a_steady_network_never_changes_a_route_on_recompute(
            (before, now, policy, local) in scenario(),
            off in any::<bool>(),
        ) {
            let policy = if off { Policy { hysteresis: Hysteresis::OFF, ..policy } } else { policy };
            let (local, nodes) = (n(local), now.nodes().to_vec());
            let mut selector = PathSelector::new();
            selector.select(local, &nodes, &before, &policy);
            selector.select(local, &nodes, &now, &policy);
            let again = selector.select(local, &nodes, &now, &policy);
            prop_assert!(!again.changed(), "{:?}", again.changes);
        }

        #[test]
        fn reselecting_the_destinations_whose_links_changed_equals_a_full_selection(
            (before, now, policy, local) in scenario(),
            mask in any::<u8>(),
        ) {
            // `mixed` is `before`, but for the relays' links toward the
            // destinations picked by `mask`, which are as in `now`.
            let (local, nodes) = (n(local), before.nodes().to_vec());
            let dsts: Vec<NodeId> =
                nodes.iter().copied().filter(|d| mask & (1 << (d.0 % 8)) != 0).collect();
            let mut mixed = before.clone();
            for &relay in nodes.iter().filter(|r| **r != local) {
                for &dst in &dsts {
                    match now.link(relay, dst) {
                        Some(estimate) => mixed.set(relay, dst, estimate),
                        None => mixed.forget(relay, dst),
                    }
                }
            }
            let mut partial = PathSelector::new();
            partial.select(local, &nodes, &before, &policy);
            let changes = partial.reselect(local, &nodes, &dsts, &mixed, &policy).changes.to_vec();
            let mut full = PathSelector::new();
            full.select(local, &nodes, &before, &policy);
            let expected = full.select(local, &nodes, &mixed, &policy).changes.to_vec();
            prop_assert_eq!(partial.routes(), full.routes());
            prop_assert_eq!(changes, expected);
        }
    }
}
