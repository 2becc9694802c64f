//! The simulator: the routing core of every node of a synthetic overlay,
//! on a virtual clock, with failures injected (`detour-control sim`).
//!
//! Each node is a [`Node`], the very code the daemon drives; only the
//! network is simulated. Messages go between nodes as values, not bytes
//! (authentication is tested on its own and would only cost time here),
//! but are counted at their size on the wire. The same seed gives the same
//! run, event for event: the randomness (the overlay, loss, jitter) comes
//! from one seeded generator and the event queue breaks ties in a fixed
//! order. Only the route computation times, read off the real clock, vary.
//!
//! ## The synthetic overlay
//!
//! Nodes are scattered uniformly over a square; the one-way delay between
//! two is 2 ms plus 0.4 ms per unit of distance (2 to 59 ms), and 15 % of
//! pairs are inflated 1.2 to 2.5 times, as Internet paths are by policy
//! routing, which is what gives one-hop detours something to win (RON,
//! section 6). One pair in ten (`SimConfig::lossy_share`) loses up to 2 %
//! of its packets. Each message's
//! delay varies by up to 5 % above the pair's.
//!
//! ## What is measured
//!
//! A route *works* when following the next hops of the nodes' current
//! routes from the source, as the dataplanes would forward a packet
//! (each relay forwards by its own route, at most [`MAX_HOPS`] overlay
//! hops), reaches the destination over links that are really up. At the
//! event, the routes that cross the failure are *affected*; the failover
//! time of one is how long after the event until it works again.
//! Detection is how long until the nodes at the failure declared it down.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use detour_common::wire::NodeId;
use serde::Serialize;

use crate::link::Time;
use crate::message::Message;
use crate::node::{Node, NodeConfig, NodeCounters};
use crate::paths::{Change, Hop};

mod queue;
use queue::EventQueue;

/// The most overlay hops a packet takes: the dataplane's default hop
/// limit of 4 (docs/dataplane-config.md, `overlay.hop_limit`).
pub const MAX_HOPS: usize = 4;

/// IPv4 payload per fragment at a 1500-byte MTU.
const FRAGMENT_PAYLOAD: usize = 1480;
/// Ethernet and IPv4 headers, on every fragment.
const FRAGMENT_HEADERS: usize = 14 + 20;

/// Bytes on an Ethernet wire for a UDP payload of `len` over IPv4, with
/// the fragments a row longer than the MTU needs.
pub fn wire_bytes(len: usize) -> usize {
    let ip_payload = len + 8; // the UDP header
    let fragments = ip_payload.div_ceil(FRAGMENT_PAYLOAD);
    ip_payload + fragments * FRAGMENT_HEADERS
}

/// What goes wrong in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Nothing: the overlay runs steady, and no route should change.
    Steady,
    /// The most used direct link is cut both ways.
    LinkCut,
    /// The node that relays the most routes fails.
    RelayFailure,
    /// The most used link goes down and up every second.
    Flapping,
    /// The nodes split in two halves that cannot reach each other.
    Partition,
    /// The most used link loses more and more, up to half its packets.
    GradualLoss,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Steady,
        Scenario::LinkCut,
        Scenario::RelayFailure,
        Scenario::Flapping,
        Scenario::Partition,
        Scenario::GradualLoss,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::LinkCut => "link-cut",
            Scenario::RelayFailure => "relay-failure",
            Scenario::Flapping => "flapping",
            Scenario::Partition => "partition",
            Scenario::GradualLoss => "gradual-loss",
        }
    }

    /// How long the run goes on after the event, by default.
    pub const fn default_after(self) -> Duration {
        match self {
            Scenario::Flapping | Scenario::GradualLoss => Duration::from_secs(12),
            _ => Duration::from_secs(3),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?}; one of {}", names.join(", "))
            })
    }
}

/// One run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub seed: u64,
    pub scenario: Scenario,
    /// Every node's routing settings.
    pub node: NodeConfig,
    /// When the event happens: the overlay has settled by then.
    pub warmup: Duration,
    /// How long the run goes on after the event.
    pub after: Duration,
    /// The share of node pairs that lose up to 2 % of their packets.
    pub lossy_share: f64,
}

impl SimConfig {
    pub fn new(scenario: Scenario, nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            scenario,
            node: NodeConfig::default(),
            warmup: Duration::from_secs(5),
            after: scenario.default_after(),
            lossy_share: 0.1,
        }
    }
}

/// What a run measured. Times in milliseconds of simulated time, except
/// the computation times, which are real.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub nodes: usize,
    pub seed: u64,
    /// What failed, in words.
    pub event: String,
    /// How long until every node at the failure declared it (the last of
    /// them); `None` without a failure, or if one never did.
    pub detection_ms: Option<f64>,
    /// Routes crossing the failure at the event.
    pub affected_routes: usize,
    /// Of those, how many worked again by the end of the run, and how
    /// long after the event: the median and the slowest (the time until
    /// every affected node had a working route).
    pub recovered_routes: usize,
    pub failover_median_ms: Option<f64>,
    pub failover_max_ms: Option<f64>,
    /// Routes that cannot work (across a partition, to a failed node) and
    /// how long until every source marked them unreachable.
    pub unreachable_routes: usize,
    pub unreachable_marked_ms: Option<f64>,
    /// Share of the affected routes' time after the event that they
    /// worked, sampled every millisecond (flapping, gradual loss).
    pub affected_availability: Option<f64>,
    /// For gradual loss: the link's loss when the last route left it.
    pub loss_at_switch: Option<f64>,
    /// Route changes over all nodes in the two seconds before the event
    /// (a steady overlay: flaps), and after it.
    pub route_changes_before: u64,
    pub route_changes_after: u64,
    /// Routes that changed back to what they were within [`FLAP_WINDOW`],
    /// from 2 s before the event to the end.
    pub flaps: u64,
    /// Sent per node and second on an IPv4 Ethernet wire, from 2 s before
    /// the event to the end: probes and replies, and link-state rows.
    pub probe_bytes_per_node_s: f64,
    pub linkstate_bytes_per_node_s: f64,
    /// Route computations: per node and second over the same window, and
    /// the real time each took.
    pub computations_per_node_s: f64,
    /// Of those, over every destination (the rest cover only those a row
    /// named anew).
    pub full_computations_per_node_s: f64,
    pub compute_mean_us: f64,
    pub compute_max_us: f64,
    /// Answers that came after their probe's timeout (or twice), and links
    /// declared down, over all nodes, from 2 s before the event.
    pub late_replies: u64,
    pub links_declared_down: u64,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub messages: u64,
}

/// The ground truth: delays, loss, what is cut.
struct Underlay {
    n: usize,
    /// One-way delay in microseconds, by `from * n + to` (symmetric).
    delay_us: Vec<u32>,
    loss: Vec<f32>,
    cut: Vec<bool>,
    alive: Vec<bool>,
}

impl Underlay {
    fn generate(n: usize, lossy_share: f64, rng: &mut fastrand::Rng) -> Underlay {
        let points: Vec<(f64, f64)> = (0..n)
            .map(|_| (rng.f64() * 100.0, rng.f64() * 100.0))
            .collect();
        let mut u = Underlay {
            n,
            delay_us: vec![0; n * n],
            loss: vec![0.0; n * n],
            cut: vec![false; n * n],
            alive: vec![true; n],
        };
        for a in 0..n {
            for b in a + 1..n {
                let (dx, dy) = (points[a].0 - points[b].0, points[a].1 - points[b].1);
                let mut ms = 2.0 + 0.4 * (dx * dx + dy * dy).sqrt();
                if rng.f64() < 0.15 {
                    ms *= 1.2 + 1.3 * rng.f64();
                }
                let loss = if rng.f64() < lossy_share {
                    (rng.f64() * 0.02) as f32
                } else {
                    0.0
                };
                for (x, y) in [(a, b), (b, a)] {
                    u.delay_us[x * n + y] = (ms * 1000.0) as u32;
                    u.loss[x * n + y] = loss;
                }
            }
        }
        u
    }

    fn up(&self, a: usize, b: usize) -> bool {
        self.alive[a] && self.alive[b] && !self.cut[a * self.n + b]
    }

    fn set_cut(&mut self, a: usize, b: usize, cut: bool) {
        self.cut[a * self.n + b] = cut;
        self.cut[b * self.n + a] = cut;
    }

    fn set_loss(&mut self, a: usize, b: usize, loss: f32) {
        self.loss[a * self.n + b] = loss;
        self.loss[b * self.n + a] = loss;
    }
}

#[derive(Debug)]
enum Kind {
    Timer(u32),
    Deliver(u32, u32, Message),
}

/// Per node: bytes sent, and computation time.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    probe_bytes: u64,
    linkstate_bytes: u64,
    computations: u64,
    route_changes: u64,
    compute_time: Duration,
    /// The longest computation (since the window began, once it did).
    compute_max: Duration,
}

/// A running simulation.
pub struct Sim {
    now: Time,
    nodes: Vec<Node>,
    underlay: Underlay,
    queue: EventQueue<Kind>,
    /// Each node's earliest queued timer.
    timers: Vec<Option<Time>>,
    rng: fastrand::Rng,
    tally: Vec<Tally>,
    messages: u64,
    /// The last route change of each (node, destination), to spot flaps.
    last_change: HashMap<(NodeId, NodeId), (Change, Time)>,
    flaps: u64,
}

/// A route that changes back within this long flapped.
pub const FLAP_WINDOW: Duration = Duration::from_secs(10);

fn id(i: usize) -> NodeId {
    NodeId(u16::try_from(i + 1).expect("at most 65534 nodes"))
}

fn index(node: NodeId) -> usize {
    usize::from(node.0) - 1
}

impl Sim {
    /// An overlay of `n` nodes (1 to 65534) from `seed`, every node
    /// started at time zero with `config`; `lossy_share` of the pairs lose
    /// up to 2 % of their packets.
    pub fn new(n: usize, seed: u64, lossy_share: f64, config: &NodeConfig) -> Sim {
        assert!((1..=65534).contains(&n), "1 to 65534 nodes");
        let mut rng = fastrand::Rng::with_seed(seed);
        let underlay = Underlay::generate(n, lossy_share, &mut rng);
        let members: Vec<_> = (0..n).map(id).collect();
        let nodes = (0..n)
            .map(|i| {
                Node::new(
                    id(i),
                    members.iter().copied(),
                    config.clone(),
                    1,
                    Time::ZERO,
                )
            })
            .collect();
        let mut sim = Sim {
            now: Time::ZERO,
            nodes,
            underlay,
            queue: EventQueue::default(),
            timers: vec![None; n],
            rng,
            tally: vec![Tally::default(); n],
            messages: 0,
            last_change: HashMap::new(),
            flaps: 0,
        };
        for i in 0..n {
            sim.schedule(i);
        }
        sim
    }

    pub fn now(&self) -> Time {
        self.now
    }

    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[index(node)]
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Queues node `i`'s timer if it is due before the one queued.
    fn schedule(&mut self, i: usize) {
        let due = self.nodes[i].poll_timeout().max(self.now);
        if self.timers[i].is_none_or(|queued| due < queued) {
            self.timers[i] = Some(due);
            self.queue.push(due, Kind::Timer(i as u32));
        }
    }

    /// Runs every event up to and including `until`.
    pub fn run_until(&mut self, until: Time) {
        while let Some((at, kind)) = self.queue.pop_until(until) {
            self.now = at;
            match kind {
                Kind::Timer(i) => {
                    let i = i as usize;
                    if self.timers[i] == Some(at) {
                        self.timers[i] = None;
                    }
                    if !self.underlay.alive[i] {
                        // A failed node does nothing, ever again.
                        continue;
                    }
                    if self.nodes[i].poll_timeout() > self.now {
                        self.schedule(i);
                        continue;
                    }
                    let before = *self.nodes[i].counters();
                    let started = Instant::now();
                    self.nodes[i].handle_timeout(self.now);
                    let after = *self.nodes[i].counters();
                    if after.computations > before.computations {
                        let took = started.elapsed();
                        let tally = &mut self.tally[i];
                        tally.computations += 1;
                        tally.compute_time += took;
                        tally.compute_max = tally.compute_max.max(took);
                    }
                    self.tally[i].route_changes += after.route_changes - before.route_changes;
                    if after.route_changes > before.route_changes {
                        self.note_changes(i);
                    }
                    self.flush(i);
                }
                Kind::Deliver(from, to, message) => {
                    let to = to as usize;
                    if !self.underlay.alive[to] {
                        continue;
                    }
                    // Everything the simulator sends is well-formed and
                    // between members; a refusal (a stale row) is normal.
                    let _ = self.nodes[to].handle_message(self.now, id(from as usize), &message);
                    self.flush(to);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Counts a flap for each route of node `i` that just went back to
    /// what it was before its last change, within [`FLAP_WINDOW`].
    fn note_changes(&mut self, i: usize) {
        let node = &self.nodes[i];
        for change in node.last_changes() {
            let key = (node.local(), change.dst);
            if let Some((last, at)) = self.last_change.insert(key, (*change, self.now))
                && last.from == change.to
                && last.to == change.from
                && self.now - at < FLAP_WINDOW
            {
                self.flaps += 1;
            }
        }
    }

    /// Sends what node `i` has to send, and requeues its timer.
    fn flush(&mut self, i: usize) {
        while let Some((to, message)) = self.nodes[i].poll_transmit() {
            let bytes = wire_bytes(crate::session::datagram_len(&message)) as u64;
            match message {
                Message::Probe { .. } | Message::ProbeReply { .. } => {
                    self.tally[i].probe_bytes += bytes
                }
                _ => self.tally[i].linkstate_bytes += bytes,
            }
            self.messages += 1;
            let j = index(to);
            let k = i * self.underlay.n + j;
            if !self.underlay.up(i, j) || self.rng.f32() < self.underlay.loss[k] {
                continue;
            }
            let base = u64::from(self.underlay.delay_us[k]);
            let delay = base + self.rng.u64(0..=base / 20);
            let at = self.now + Duration::from_micros(delay);
            self.queue
                .push(at, Kind::Deliver(i as u32, j as u32, message));
        }
        self.schedule(i);
    }

    /// The overlay hops a packet from `src` to `dst` takes by the current
    /// routes; `None` if it is dropped (no route, a dead hop, a loop).
    pub fn forwarding_path(&self, src: NodeId, dst: NodeId) -> Option<Vec<NodeId>> {
        let mut hops = vec![src];
        let mut at = src;
        while at != dst {
            if hops.len() > MAX_HOPS {
                return None;
            }
            let next = match self.nodes[index(at)].route(dst)? {
                Hop::Direct => dst,
                Hop::Via(relay) => relay,
            };
            if !self.underlay.up(index(at), index(next)) {
                return None;
            }
            hops.push(next);
            at = next;
        }
        Some(hops)
    }

    fn works(&self, src: NodeId, dst: NodeId) -> bool {
        self.forwarding_path(src, dst).is_some()
    }

    /// Every working route's hops, by (source, destination).
    fn all_paths(&self) -> Vec<(NodeId, NodeId, Vec<NodeId>)> {
        let n = self.nodes.len();
        let mut paths = Vec::new();
        for s in 0..n {
            for d in 0..n {
                if s != d
                    && let Some(p) = self.forwarding_path(id(s), id(d))
                {
                    paths.push((id(s), id(d), p));
                }
            }
        }
        paths
    }

    fn route_changes(&self) -> u64 {
        self.tally.iter().map(|t| t.route_changes).sum()
    }
}

/// The link most routes cross, either way.
fn busiest_link(paths: &[(NodeId, NodeId, Vec<NodeId>)]) -> (NodeId, NodeId) {
    let mut uses = std::collections::BTreeMap::new();
    for (_, _, p) in paths {
        for w in p.windows(2) {
            let key = (w[0].min(w[1]), w[0].max(w[1]));
            *uses.entry(key).or_insert(0u64) += 1;
        }
    }
    // Most uses; the lowest ids among equals, for a reproducible choice.
    uses.into_iter()
        .max_by_key(|&(key, count)| (count, Reverse(key)))
        .map(|(key, _)| key)
        .expect("a settled overlay has routes")
}

/// The node most routes relay through.
fn busiest_relay(paths: &[(NodeId, NodeId, Vec<NodeId>)]) -> Option<NodeId> {
    let mut uses = std::collections::BTreeMap::new();
    for (_, _, p) in paths {
        for relay in &p[1..p.len() - 1] {
            *uses.entry(*relay).or_insert(0u64) += 1;
        }
    }
    uses.into_iter()
        .max_by_key(|&(node, count)| (count, Reverse(node)))
        .map(|(node, _)| node)
}

fn crosses(path: &[NodeId], a: NodeId, b: NodeId) -> bool {
    path.windows(2)
        .any(|w| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(sorted: &[Duration]) -> Option<f64> {
    (!sorted.is_empty()).then(|| ms(sorted[sorted.len() / 2]))
}

/// Runs one scenario and measures it.
pub fn run(config: &SimConfig) -> Report {
    let wall = Instant::now();
    let n = config.nodes;
    let mut sim = Sim::new(n, config.seed, config.lossy_share, &config.node);
    let event_at = config.warmup;
    let window_start = event_at.saturating_sub(Duration::from_secs(2));
    sim.run_until(window_start);
    for tally in &mut sim.tally {
        tally.compute_max = Duration::ZERO;
    }
    let changes_at_window = sim.route_changes();
    let flaps_at_window = sim.flaps;
    let tally_at_window = sim.tally.clone();
    let counters_at_window: Vec<_> = sim.nodes.iter().map(|n| *n.counters()).collect();
    sim.run_until(event_at);
    let route_changes_before = sim.route_changes() - changes_at_window;

    let paths = sim.all_paths();
    let mut report_event = String::from("none");
    // The node pairs at the failure, as (observer, observed).
    let mut adjacent: Vec<(NodeId, NodeId)> = Vec::new();
    let mut affected: Vec<(NodeId, NodeId)> = Vec::new();
    let mut doomed: Vec<(NodeId, NodeId)> = Vec::new();
    let mut flapping = None;
    let mut lossy = None;
    match config.scenario {
        Scenario::Steady => {}
        Scenario::LinkCut | Scenario::Flapping | Scenario::GradualLoss => {
            let (a, b) = busiest_link(&paths);
            affected = paths
                .iter()
                .filter(|(.., p)| crosses(p, a, b))
                .map(|(s, d, _)| (*s, *d))
                .collect();
            match config.scenario {
                Scenario::LinkCut => {
                    report_event = format!("link {a}–{b} cut");
                    sim.underlay.set_cut(index(a), index(b), true);
                    adjacent = vec![(a, b), (b, a)];
                }
                Scenario::Flapping => {
                    report_event = format!("link {a}–{b} down and up every second");
                    flapping = Some((a, b));
                }
                _ => {
                    report_event = format!("link {a}–{b} losing 0 to 50 % over 10 s");
                    lossy = Some((a, b));
                }
            }
        }
        Scenario::RelayFailure => {
            let r = busiest_relay(&paths).unwrap_or(id(0));
            report_event = format!("node {r} failed");
            sim.underlay.alive[index(r)] = false;
            affected = paths
                .iter()
                .filter(|(s, d, p)| *s != r && *d != r && p.contains(&r))
                .map(|(s, d, _)| (*s, *d))
                .collect();
            doomed = (0..n).map(id).filter(|s| *s != r).map(|s| (s, r)).collect();
            adjacent = doomed.clone();
        }
        Scenario::Partition => {
            let half = n / 2;
            report_event = format!("nodes 1–{half} cut off from {}–{n}", half + 1);
            let side = |x: NodeId| index(x) < half;
            for a in 0..half {
                for b in half..n {
                    sim.underlay.set_cut(a, b, true);
                    adjacent.push((id(a), id(b)));
                    adjacent.push((id(b), id(a)));
                }
            }
            affected = paths
                .iter()
                .filter(|(s, d, p)| side(*s) == side(*d) && p.iter().any(|x| side(*x) != side(*s)))
                .map(|(s, d, _)| (*s, *d))
                .collect();
            doomed = adjacent.clone();
        }
    }

    // Watch, millisecond by millisecond.
    let end = event_at + config.after;
    let step = Duration::from_millis(1);
    let mut detected: Vec<bool> = vec![false; adjacent.len()];
    let mut detection = None;
    let mut recovered: Vec<Option<Duration>> = vec![None; affected.len()];
    let mut marked: Vec<bool> = vec![false; doomed.len()];
    let mut unreachable_marked = None;
    let (mut samples, mut working_samples) = (0u64, 0u64);
    let mut loss_at_switch = None;
    let mut t = event_at;
    while t < end {
        t += step;
        let since = t - event_at;
        if let Some((a, b)) = flapping {
            // Down for the first half of every second, up for the second.
            let down = since.as_millis() % 1000 < 500;
            sim.underlay.set_cut(index(a), index(b), down);
        }
        if let Some((a, b)) = lossy {
            let loss = (since.as_secs_f64() / 10.0).min(1.0) * 0.5;
            sim.underlay.set_loss(index(a), index(b), loss as f32);
        }
        sim.run_until(t);
        if detection.is_none() && !adjacent.is_empty() {
            for (k, &(observer, observed)) in adjacent.iter().enumerate() {
                if !detected[k] {
                    let probe = sim.node(observer).prober().peer(observed);
                    detected[k] =
                        !sim.underlay.alive[index(observer)] || probe.is_none_or(|p| !p.is_up());
                }
            }
            if detected.iter().all(|d| *d) {
                detection = Some(since);
            }
        }
        for (k, &(s, d)) in affected.iter().enumerate() {
            let ok = match lossy {
                // Working, for gradual loss, is off the lossy link.
                Some((a, b)) => sim
                    .forwarding_path(s, d)
                    .is_some_and(|p| !crosses(&p, a, b)),
                None => sim.works(s, d),
            };
            if flapping.is_some() || lossy.is_some() {
                samples += 1;
                working_samples += u64::from(sim.works(s, d));
            }
            if ok && recovered[k].is_none() {
                recovered[k] = Some(since);
            }
        }
        if lossy.is_some() && loss_at_switch.is_none() && recovered.iter().all(Option::is_some) {
            loss_at_switch = Some((since.as_secs_f64() / 10.0).min(1.0) * 0.5);
        }
        if unreachable_marked.is_none() && !doomed.is_empty() {
            for (k, &(s, d)) in doomed.iter().enumerate() {
                marked[k] = marked[k] || sim.node(s).route(d).is_none();
            }
            if marked.iter().all(|m| *m) {
                unreachable_marked = Some(since);
            }
        }
    }

    // A route counts as recovered only if it still works at the end.
    let mut times: Vec<Duration> = affected
        .iter()
        .zip(&recovered)
        .filter(|((s, d), r)| r.is_some() && (lossy.is_some() || sim.works(*s, *d)))
        .map(|(_, r)| r.expect("filtered"))
        .collect();
    times.sort_unstable();

    let window = (sim.now() - window_start).as_secs_f64();
    let per_node_s = |f: &dyn Fn(&Tally) -> u64| {
        let total: u64 = sim
            .tally
            .iter()
            .zip(&tally_at_window)
            .map(|(now, then)| f(now) - f(then))
            .sum();
        total as f64 / n as f64 / window
    };
    let counter_since = |f: &dyn Fn(&NodeCounters) -> u64| -> u64 {
        sim.nodes
            .iter()
            .zip(&counters_at_window)
            .map(|(node, then)| f(node.counters()) - f(then))
            .sum()
    };
    // Computation times over the window too, not the start-up.
    let (mut computations, mut compute_time) = (0, Duration::ZERO);
    for (now, then) in sim.tally.iter().zip(&tally_at_window) {
        computations += now.computations - then.computations;
        compute_time += now.compute_time - then.compute_time;
    }
    let compute_max = sim
        .tally
        .iter()
        .map(|t| t.compute_max)
        .max()
        .unwrap_or_default();
    Report {
        scenario: config.scenario,
        nodes: n,
        seed: config.seed,
        event: report_event,
        detection_ms: detection.map(ms),
        affected_routes: affected.len(),
        recovered_routes: times.len(),
        failover_median_ms: median(&times),
        failover_max_ms: (times.len() == affected.len() && !times.is_empty())
            .then(|| ms(*times.last().expect("not empty"))),
        unreachable_routes: doomed.len(),
        unreachable_marked_ms: unreachable_marked.map(ms),
        affected_availability: (samples > 0).then(|| working_samples as f64 / samples as f64),
        loss_at_switch,
        route_changes_before,
        route_changes_after: sim.route_changes() - changes_at_window - route_changes_before,
        probe_bytes_per_node_s: per_node_s(&|t| t.probe_bytes),
        linkstate_bytes_per_node_s: per_node_s(&|t| t.linkstate_bytes),
        computations_per_node_s: per_node_s(&|t| t.computations),
        full_computations_per_node_s: counter_since(&|c| c.full_computations) as f64
            / n as f64
            / window,
        compute_mean_us: if computations == 0 {
            0.0
        } else {
            compute_time.as_secs_f64() * 1e6 / computations as f64
        },
        compute_max_us: compute_max.as_secs_f64() * 1e6,
        flaps: sim.flaps - flaps_at_window,
        late_replies: counter_since(&|c| c.stray_replies),
        links_declared_down: counter_since(&|c| c.links_down),
        simulated_s: sim.now().as_secs_f64(),
        wall_s: wall.elapsed().as_secs_f64(),
        messages: sim.messages,
    }
}

impl fmt::Display for Report {
    /// The report as an aligned two-column table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("—".to_string(), |v| format!("{v:.1} {unit}"));
        let rows = [
            ("scenario", self.scenario.to_string()),
            ("nodes", self.nodes.to_string()),
            ("seed", self.seed.to_string()),
            ("event", self.event.clone()),
            ("detection", opt(self.detection_ms, "ms")),
            ("affected routes", self.affected_routes.to_string()),
            ("recovered routes", self.recovered_routes.to_string()),
            ("failover, median", opt(self.failover_median_ms, "ms")),
            ("failover, all affected", opt(self.failover_max_ms, "ms")),
            ("unreachable routes", self.unreachable_routes.to_string()),
            ("marked unreachable", opt(self.unreachable_marked_ms, "ms")),
            (
                "affected availability",
                self.affected_availability
                    .map_or("—".into(), |a| format!("{:.1} %", a * 100.0)),
            ),
            (
                "loss when last route left",
                self.loss_at_switch
                    .map_or("—".into(), |l| format!("{:.1} %", l * 100.0)),
            ),
            (
                "route changes, 2 s before",
                self.route_changes_before.to_string(),
            ),
            ("route changes, after", self.route_changes_after.to_string()),
            ("flaps", self.flaps.to_string()),
            ("late probe replies", self.late_replies.to_string()),
            ("links declared down", self.links_declared_down.to_string()),
            (
                "probe traffic",
                format!("{:.0} B/s per node", self.probe_bytes_per_node_s),
            ),
            (
                "link-state traffic",
                format!("{:.0} B/s per node", self.linkstate_bytes_per_node_s),
            ),
            (
                "route computations",
                format!(
                    "{:.1} /s per node, {:.1} of them over every destination",
                    self.computations_per_node_s, self.full_computations_per_node_s
                ),
            ),
            (
                "computation time",
                format!(
                    "{:.0} µs mean, {:.0} µs max",
                    self.compute_mean_us, self.compute_max_us
                ),
            ),
            (
                "run",
                format!(
                    "{:.1} s simulated in {:.1} s, {} messages",
                    self.simulated_s, self.wall_s, self.messages
                ),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            writeln!(f, "{key:width$}  {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_bytes_count_headers_and_fragments() {
        assert_eq!(wire_bytes(40), 82);
        let probe = crate::message::Message::Probe { seq: 1 };
        assert_eq!(wire_bytes(crate::session::datagram_len(&probe)), 83);
        assert_eq!(wire_bytes(1472), 1514);
        assert_eq!(wire_bytes(1473), 1473 + 8 + 2 * 34);
    }

    #[test]
    fn scenarios_parse_by_name() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert!("cut".parse::<Scenario>().unwrap_err().contains("link-cut"));
    }

    #[test]
    fn a_seed_reproduces_its_run() {
        let config = SimConfig {
            warmup: Duration::from_secs(4),
            after: Duration::from_secs(1),
            ..SimConfig::new(Scenario::LinkCut, 12, 7)
        };
        let (a, b) = (run(&config), run(&config));
        assert_eq!(a.event, b.event);
        assert_eq!(a.messages, b.messages);
        assert_eq!(a.failover_max_ms, b.failover_max_ms);
        assert_eq!(a.probe_bytes_per_node_s, b.probe_bytes_per_node_s);
        assert_ne!(
            run(&SimConfig::new(Scenario::LinkCut, 12, 8)).messages,
            a.messages
        );
    }
}
