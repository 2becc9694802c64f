//! The control process's Prometheus metrics (`metrics.listen`): probes per
//! peer, route changes, link state and the messages refused, read from the
//! routing core at each scrape. Names and labels are in docs/operations.md.

use std::fmt;
use std::sync::Arc;

use detour_common::metrics::{self as m, Collector, DescriptorEncoder};

use crate::api::Shared;
use crate::message::Reject;
use crate::paths::Hop;

/// The exposition text of `shared` now.
pub fn render(shared: &Arc<Shared>) -> String {
    m::render(Scrape(Arc::clone(shared)))
}

#[derive(Clone)]
struct Scrape(Arc<Shared>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("control metrics")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let shared = &self.0;
        let e = &mut e;
        let installed = shared.install().clone();
        let core = shared.core();
        let node = &core.node;
        let c = node.counters();

        m::gauge(
            e,
            "detour_control_uptime_seconds",
            "Seconds since the control process started.",
            shared.clock.elapsed().as_secs(),
        )?;
        let peer = |id: detour_common::wire::NodeId| [("peer", id.to_string())];
        m::gauges(
            e,
            "detour_control_peer_up",
            "1 while the link to the peer answers probes, 0 while it is down.",
            node.prober()
                .peers()
                .map(|(id, p)| (peer(id), i64::from(p.is_up()))),
        )?;
        m::gauges(
            e,
            "detour_control_peer_rtt_seconds",
            "Smoothed probe round-trip time to the peer (peers that answered at least once).",
            node.prober()
                .peers()
                .filter(|(_, p)| p.last_answer().is_some())
                .map(|(id, p)| (peer(id), p.estimate().rtt.as_secs_f64())),
        )?;
        m::gauges(
            e,
            "detour_control_peer_loss_ratio",
            "Share of the last probes to the peer that went unanswered, 0 to 1.",
            node.prober()
                .peers()
                .map(|(id, p)| (peer(id), p.estimate().loss)),
        )?;
        let (mut direct, mut relayed, mut unreachable) = (0i64, 0i64, 0i64);
        for route in node.routes() {
            match route.hop() {
                Some(Hop::Direct) => direct += 1,
                Some(Hop::Via(_)) => relayed += 1,
                None => unreachable += 1,
            }
        }
        m::gauges(
            e,
            "detour_control_routes",
            "Destinations by the path in use: direct, relayed or unreachable.",
            [
                ([("path", "direct")], direct),
                ([("path", "relayed")], relayed),
                ([("path", "unreachable")], unreachable),
            ],
        )?;
        m::counter(
            e,
            "detour_control_route_changes",
            "Destinations whose route changed, over all computations.",
            c.route_changes,
        )?;
        m::counter(
            e,
            "detour_control_route_computations",
            "Route computations.",
            c.computations,
        )?;
        m::counters(
            e,
            "detour_control_link_transitions",
            "Links of this node going up or down.",
            [
                ([("to", "up")], c.links_up),
                ([("to", "down")], c.links_down),
            ],
        )?;
        m::counters(
            e,
            "detour_control_messages_sent",
            "Control messages sent, by kind.",
            [
                ([("kind", "probe")], c.probes_sent),
                ([("kind", "probe_reply")], c.replies_sent),
                ([("kind", "row")], c.rows_sent),
                ([("kind", "row_request")], c.rows_requested),
            ],
        )?;
        m::counters(
            e,
            "detour_control_messages_received",
            "Control messages taken in, by kind (after authentication).",
            [
                ([("kind", "probe_reply")], c.replies_received),
                ([("kind", "row")], c.rows_received),
                ([("kind", "row_request")], c.row_requests_received),
            ],
        )?;
        let rejects = core.endpoint.rejects();
        m::counters(
            e,
            "detour_control_messages_rejected",
            "Control messages dropped, by reason (bad_mac: not authentic; unknown_key: a handshake under a key no peer has).",
            Reject::ALL
                .iter()
                .map(|r| ([("reason", r.name())], rejects.get(*r))),
        )?;
        m::gauge(
            e,
            "detour_control_drained",
            "1 while this node is drained (relays for no one).",
            i64::from(node.is_drained()),
        )?;
        m::counter(
            e,
            "detour_control_route_installs",
            "Route snapshots the dataplane took.",
            installed.installs,
        )?;
        m::gauge(
            e,
            "detour_control_dataplane_reachable",
            "1 while route installation works (0 also when running without a dataplane).",
            i64::from(shared.config.dataplane_socket.is_some() && installed.error.is_none()),
        )?;
        Ok(())
    }
}
