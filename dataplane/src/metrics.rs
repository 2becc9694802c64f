//! The dataplane's Prometheus metrics (`metrics.listen`): packets, bytes
//! and drops by reason per worker, forwarding latency per worker, and the
//! XDP classifier's verdicts, read from what the workers publish (never
//! from a worker itself) at each scrape. Names and labels are in
//! docs/operations.md.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use detour_common::api::{WorkerCounters, WorkerStats};
use detour_common::metrics::{self as m, Collector, DescriptorEncoder};

use crate::api::State;
use crate::stats::{Stat, merged_latency, prometheus_buckets};

/// The exposition text of `state` now.
pub fn render(state: &Arc<State>) -> String {
    m::render(Scrape(Arc::clone(state)))
}

struct Scrape(Arc<State>);

/// Each of `reasons` for every worker, zeros included, labelled by queue
/// and reason.
fn by_reason<'a>(
    workers: &'a [WorkerStats],
    reasons: impl Iterator<Item = &'static str> + Clone + 'a,
    counts: fn(&WorkerCounters) -> &BTreeMap<String, u64>,
) -> impl Iterator<Item = ([(&'static str, String); 2], u64)> + 'a {
    workers.iter().flat_map(move |w| {
        reasons.clone().map(move |reason| {
            let n = counts(&w.counters).get(reason).copied().unwrap_or(0);
            (
                [("queue", w.queue.to_string()), ("reason", reason.into())],
                n,
            )
        })
    })
}

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dataplane metrics")
    }
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let state = &self.0;
        let e = &mut e;
        let stats = state.stats();
        let health = state.health();
        let queue = |q: u32| q.to_string();

        m::gauge(
            e,
            "detour_dataplane_uptime_seconds",
            "Seconds since the dataplane started.",
            health.uptime_s,
        )?;
        m::gauge(
            e,
            "detour_dataplane_workers_running",
            "Workers still forwarding (of detour_dataplane_workers).",
            health.workers_running,
        )?;
        m::gauge(
            e,
            "detour_dataplane_workers",
            "Workers started, one per queue.",
            health.workers,
        )?;
        m::gauge(
            e,
            "detour_dataplane_route_version",
            "Version of the installed route snapshot; 0 before the first.",
            health.route_version.unwrap_or(0),
        )?;
        m::counters(
            e,
            "detour_dataplane_received_packets",
            "Frames a worker took from its sockets.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.received)),
        )?;
        m::counters(
            e,
            "detour_dataplane_received_bytes",
            "Bytes of the frames a worker took from its sockets.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.received_bytes)),
        )?;
        m::counters(
            e,
            "detour_dataplane_forwarded_packets",
            "Frames forwarded, by path: encap (LAN to overlay), relay, decap (overlay to LAN).",
            stats.workers.iter().flat_map(|w| {
                let c = &w.counters;
                [
                    ("encap", c.encapsulated),
                    ("relay", c.relayed),
                    ("decap", c.decapsulated),
                ]
                .map(|(path, n)| ([("queue", queue(w.queue)), ("path", path.into())], n))
            }),
        )?;
        m::counters(
            e,
            "detour_dataplane_answered_packets",
            "Frames answered with ICMP (\"too big\", \"time exceeded\") instead of forwarded.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.answered)),
        )?;
        m::counters(
            e,
            "detour_dataplane_icmp_suppressed_packets",
            "ICMP answers not sent, over the per-source rate limit.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.icmp_suppressed)),
        )?;
        m::counters(
            e,
            "detour_dataplane_held_packets",
            "Frames put on hold while a neighbour's MAC address was resolved.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.held)),
        )?;
        m::counters(
            e,
            "detour_dataplane_released_packets",
            "Held frames forwarded once the neighbour's MAC address came.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.released)),
        )?;
        m::gauges(
            e,
            "detour_dataplane_holding_packets",
            "Frames on hold now, waiting for a neighbour's MAC address.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.holding as i64)),
        )?;
        m::counters(
            e,
            "detour_dataplane_transmitted_bytes",
            "Bytes sent: forwarded frames and ICMP answers.",
            stats
                .workers
                .iter()
                .map(|w| ([("queue", queue(w.queue))], w.counters.transmitted_bytes)),
        )?;
        m::counters(
            e,
            "detour_dataplane_dropped_packets",
            "Frames a worker dropped, by reason (docs/dataplane-api.md).",
            by_reason(&stats.workers, Stat::drop_reasons(), |c| &c.dropped),
        )?;
        m::counters(
            e,
            "detour_dataplane_socket_dropped_packets",
            "Frames the kernel dropped on the way into a worker's AF_XDP sockets, by reason (docs/dataplane-api.md).",
            by_reason(&stats.workers, Stat::socket_drop_reasons(), |c| {
                &c.socket_dropped
            }),
        )?;
        m::histograms(
            e,
            "detour_dataplane_forwarding_latency_seconds",
            "Time from a batch's receipt to its frames being queued for transmission, per frame.",
            state.workers.iter().map(|w| {
                let mut h = merged_latency();
                w.published.merge_latency(&mut h);
                ([("queue", queue(w.queue))], prometheus_buckets(&h))
            }),
        )?;
        m::counters(
            e,
            "detour_dataplane_xdp_packets",
            "The XDP classifier's verdicts, by counter (docs/classifier.md), summed over CPUs.",
            stats
                .xdp
                .iter()
                .map(|(counter, n)| ([("counter", counter.clone())], *n)),
        )?;
        Ok(())
    }
}
