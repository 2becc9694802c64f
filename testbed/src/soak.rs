//! The soak: the demo's overlay under steady traffic for many minutes while
//! its routes change every few seconds, watching for what only time shows:
//! memory that grows, drops that should not happen, traffic lost where no
//! failure explains it.
//!
//! Four flows run throughout, both ways between sites A and B and between
//! sites C and D. Every [`CHANGE_EVERY`] the next of four changes comes:
//!
//! 1. the path A–B slows down (the traffic moves to a relay, both paths
//!    live: nothing may be lost);
//! 2. it is fast again (the traffic comes back: nothing may be lost);
//! 3. the path C–D is cut (the traffic fails over to a relay: what was
//!    sent within [`FAILOVER_ALLOWANCE`] of the cut may be lost);
//! 4. it is restored.
//!
//! Every [`SAMPLE_EVERY`] it samples each daemon's resident memory, the
//! dataplanes' drops by reason and the control processes' rejected
//! messages. At the end: the memory each daemon grew by after its warm-up
//! (the first sample), the drops, and the lost datagrams, split into those
//! a cut explains and the unexpected rest. It passes when no daemon grew
//! by [`MAX_GROWTH_PERCENT`] or more, none died, and nothing was lost
//! unexpectedly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use detour_testkit::rss_kb;

use crate::bed::{Daemon, Testbed};
use crate::demo::Progress;
use crate::topology::{Impairment, host_address};
use crate::totals::Totals;
use crate::traffic::{Flow, Record};

/// Each flow: datagrams a second, and their UDP payload.
const FLOW_RATE: u32 = 1000;
const FLOW_SIZE: usize = 200;
/// Between two route changes.
const CHANGE_EVERY: Duration = Duration::from_secs(3);
/// Between two samples of memory and counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The slow path's one-way delay: far above a relay's.
const SLOW_DELAY_MS: u32 = 60;
/// What a cut may cost: datagrams sent from just before it (in flight on
/// the cut path) to this long after it.
const FAILOVER_ALLOWANCE: Duration = Duration::from_millis(1500);
const IN_FLIGHT: Duration = Duration::from_millis(100);
/// The most a daemon may grow after its warm-up, in percent.
pub const MAX_GROWTH_PERCENT: f64 = 1.0;

/// What the soak measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub minutes: f64,
    pub nodes: usize,
    /// Route-changing events: slowdowns, speedups, cuts, restores.
    pub changes: usize,
    pub cuts: usize,
    pub flows: Vec<FlowReport>,
    /// Memory over time, one entry per sample.
    pub samples: Vec<Sample>,
    pub daemons: Vec<DaemonReport>,
    /// Every node's dataplane drops by reason, summed, over the soak.
    pub dataplane_drops: BTreeMap<String, u64>,
    /// Every node's dataplane socket drops (the kernel's, before a worker).
    pub socket_drops: BTreeMap<String, u64>,
    /// Control messages rejected, by reason, summed over nodes.
    pub control_rejected: BTreeMap<String, u64>,
    /// Datagrams the dataplanes relayed: the traffic did take the relays.
    pub relayed: u64,
    pub unexpected_lost: u64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub from: u16,
    pub to: u16,
    pub sent: u64,
    pub lost: u64,
    /// Lost within a cut's allowance.
    pub lost_to_cuts: u64,
    pub unexpected_lost: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub seconds: u64,
    /// Resident memory of each daemon, kB, as `node/daemon`.
    pub rss_kb: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonReport {
    pub name: String,
    pub first_kb: u64,
    pub last_kb: u64,
    pub max_kb: u64,
    pub growth_percent: f64,
    /// Whether it ran the whole soak (same process throughout).
    pub stayed_up: bool,
}

/// Runs the soak for `minutes` on a testbed that is up.
pub fn run(
    bed: &mut Testbed,
    minutes: f64,
    progress: &Progress,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let sites = bed.topology().traffic_sites();
    if sites.len() < 4 {
        bail!("the soak needs four sites: two pairs, one slowed and one cut");
    }
    let (a, b, c, d) = (sites[0], sites[1], sites[2], sites[3]);
    let slowed = bed.path(a, b).context("no path A-B")?;
    let duration = Duration::from_secs_f64(minutes * 60.0);

    let pids = daemons(bed);
    let mut flows = Vec::new();
    for (from, to) in [(a, b), (b, a), (c, d), (d, c)] {
        let l = bed.layout();
        flows.push((
            from,
            to,
            Flow::start_warm(
                &l.host(from),
                &l.host(to),
                host_address(to),
                FLOW_RATE,
                FLOW_SIZE,
            )?,
        ));
    }
    progress.say(&format!(
        "soaking {minutes} min: flows {a}<->{b} and {c}<->{d} at {FLOW_RATE} datagrams/s each; \
         every {} s a route change (slow {a}-{b}, fast again, cut {c}-{d}, restore)",
        CHANGE_EVERY.as_secs()
    ));
    let before = Totals::read(bed)?;
    let start = Instant::now();
    let mut next_change = start + CHANGE_EVERY;
    let mut next_sample = start;
    let mut changes = 0;
    // When each cut came, on each flow's clock.
    let mut cuts: Vec<Vec<u64>> = vec![Vec::new(); flows.len()];
    let mut samples = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        while start.elapsed() < duration {
            if stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let now = Instant::now();
            if now >= next_sample {
                samples.push(Sample {
                    seconds: start.elapsed().as_secs(),
                    rss_kb: pids
                        .iter()
                        .map(|(name, pid)| (name.clone(), rss_kb(*pid).unwrap_or(0)))
                        .collect(),
                });
                if samples.len() % 6 == 1 {
                    progress.say(&format!(
                        "  {:>4.1} min: {changes} route changes so far",
                        start.elapsed().as_secs_f64() / 60.0
                    ));
                }
                next_sample += SAMPLE_EVERY;
            }
            if now >= next_change {
                match changes % 4 {
                    0 => bed.set_path(
                        a,
                        b,
                        Impairment {
                            delay_ms: SLOW_DELAY_MS,
                            ..slowed
                        },
                    )?,
                    1 => bed.set_path(a, b, slowed)?,
                    2 => {
                        for (cut, (_, _, flow)) in cuts.iter_mut().zip(&flows) {
                            cut.push(flow.now());
                        }
                        bed.cut(c, d)?;
                    }
                    _ => bed.restore(c, d)?,
                }
                changes += 1;
                next_change += CHANGE_EVERY;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })();
    // Leave the paths as they were, whatever happened.
    let _ = bed.set_path(a, b, slowed);
    let _ = bed.restore(c, d);
    std::thread::sleep(FAILOVER_ALLOWANCE);
    let records: Vec<(u16, u16, Record)> = flows
        .into_iter()
        .map(|(from, to, flow)| Ok((from, to, flow.stop()?)))
        .collect::<anyhow::Result<_>>()?;
    result?;
    let counted = Totals::read(bed)?.since(&before);

    let cut_count = cuts.first().map_or(0, Vec::len);
    let flows: Vec<FlowReport> = records
        .iter()
        .zip(&cuts)
        .map(|((from, to, record), cuts)| flow_report(*from, *to, record, cuts))
        .collect();
    let now_pids = daemons(bed);
    let daemons: Vec<DaemonReport> = pids
        .iter()
        .map(|(name, pid)| {
            let series: Vec<u64> = samples.iter().map(|s| s.rss_kb[name]).collect();
            let first = series.first().copied().unwrap_or(0);
            let last = series.last().copied().unwrap_or(0);
            DaemonReport {
                name: name.clone(),
                first_kb: first,
                last_kb: last,
                max_kb: series.iter().copied().max().unwrap_or(0),
                growth_percent: if first > 0 {
                    (last as f64 - first as f64) * 100.0 / first as f64
                } else {
                    f64::INFINITY
                },
                stayed_up: now_pids.get(name) == Some(pid),
            }
        })
        .collect();
    let unexpected_lost = flows.iter().map(|f| f.unexpected_lost).sum();
    let passed = unexpected_lost == 0
        && daemons
            .iter()
            .all(|d| d.stayed_up && d.growth_percent < MAX_GROWTH_PERCENT);
    Ok(Report {
        minutes,
        nodes: bed.topology().nodes.len(),
        changes,
        cuts: cut_count,
        flows,
        samples,
        daemons,
        dataplane_drops: counted.dropped,
        socket_drops: counted.socket_dropped,
        control_rejected: counted.rejected,
        relayed: counted.relayed,
        unexpected_lost,
        passed,
    })
}

/// Each daemon's pid, as `node N dataplane` / `node N control`.
fn daemons(bed: &Testbed) -> BTreeMap<String, u32> {
    let mut pids = BTreeMap::new();
    for id in bed.topology().ids() {
        for daemon in [Daemon::Dataplane, Daemon::Control] {
            if let Some(pid) = bed.pid(id, daemon) {
                pids.insert(format!("node {id} {}", daemon.name()), pid);
            }
        }
    }
    pids
}

/// A flow's losses, split into those within a cut's allowance and the
/// rest.
fn flow_report(from: u16, to: u16, record: &Record, cuts: &[u64]) -> FlowReport {
    let explained = |sent: u64| {
        cuts.iter().any(|&cut| {
            sent + IN_FLIGHT.as_nanos() as u64 >= cut
                && sent < cut + FAILOVER_ALLOWANCE.as_nanos() as u64
        })
    };
    let lost = record.lost_send_times();
    let lost_to_cuts = lost.iter().filter(|&&t| explained(t)).count() as u64;
    FlowReport {
        from,
        to,
        sent: record.sent.len() as u64,
        lost: lost.len() as u64,
        lost_to_cuts,
        unexpected_lost: lost.len() as u64 - lost_to_cuts,
        duplicates: record.duplicates,
    }
}

/// The report as Markdown (docs/soak.md).
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let verdict = if r.passed { "passed" } else { "FAILED" };
    let _ = writeln!(
        s,
        "{} minutes, {} nodes, {} route changes ({} cuts), {} datagrams relayed: **{verdict}** \
         ({} datagrams lost unexpectedly; largest memory growth {:.2} %, limit {MAX_GROWTH_PERCENT} %).\n",
        r.minutes,
        r.nodes,
        r.changes,
        r.cuts,
        r.relayed,
        r.unexpected_lost,
        r.daemons
            .iter()
            .map(|d| d.growth_percent)
            .fold(f64::MIN, f64::max)
    );
    let _ = writeln!(
        s,
        "| flow | sent | lost | lost within {:.1} s of a cut | unexpected | duplicates |",
        FAILOVER_ALLOWANCE.as_secs_f64()
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for f in &r.flows {
        let _ = writeln!(
            s,
            "| {} → {} | {} | {} | {} | {} | {} |",
            f.from, f.to, f.sent, f.lost, f.lost_to_cuts, f.unexpected_lost, f.duplicates
        );
    }
    let _ = writeln!(
        s,
        "\n| daemon | RSS at the first sample (kB) | at the last | max | growth | ran throughout |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- |");
    for d in &r.daemons {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:+.2} % | {} |",
            d.name,
            d.first_kb,
            d.last_kb,
            d.max_kb,
            d.growth_percent,
            if d.stayed_up { "yes" } else { "NO" }
        );
    }
    let list = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let _ = writeln!(
        s,
        "\nDataplane drops by reason (all nodes): {}.  \nDropped by the kernel before a \
         worker: {}.  \nControl messages rejected: {}.",
        list(&r.dataplane_drops),
        list(&r.socket_drops),
        list(&r.control_rejected)
    );
    let _ = writeln!(
        s,
        "\nResident memory over time (kB, every {} s):\n",
        SAMPLE_EVERY.as_secs()
    );
    let names: Vec<&String> = r.daemons.iter().map(|d| &d.name).collect();
    let _ = writeln!(
        s,
        "| s | {} |",
        names
            .iter()
            .map(|n| n.replace("node ", ""))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "| ---: |{}", " ---: |".repeat(names.len()));
    // Every minute, and the last sample.
    let per_minute = (60 / SAMPLE_EVERY.as_secs()) as usize;
    for (i, sample) in r.samples.iter().enumerate() {
        if i % per_minute == 0 || i + 1 == r.samples.len() {
            let _ = writeln!(
                s,
                "| {} | {} |",
                sample.seconds,
                names
                    .iter()
                    .map(|n| sample.rss_kb[*n].to_string())
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }
    s
}
