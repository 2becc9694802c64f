//! The demo: detour doing its job on a testbed, in five acts.
//!
//! 1. The overlay as node A sees it (`detourctl paths`, `routes`).
//!
//! A steady flow from site A to site B runs through acts 2 to 4:
//!
//! 2. The direct path gets a far longer delay than a path through a relay;
//!    detour moves the traffic to the relay for its latency, as RON did,
//!    and back when the direct path is fast again.
//! 3. The direct path is cut; the traffic goes on through a relay. The
//!    failover time is measured from the flow: from the cut to the arrival
//!    of the first datagram sent after it.
//! 4. The path is restored and its link comes back up. The traffic stays
//!    on the relay until the direct path's loss estimate (its last 100
//!    probes, 20 s) has forgotten the cut.
//! 5. Throughput from site A to site B on the direct path (pinned for the
//!    act): the highest rate with at most 0.1 % loss, found by trials.
//!    Last, because trials past the limit fill both cores and delay
//!    probes, and the loss the probes see stays in their estimate (the
//!    last 100 probes) for 20 s.
//!
//! Then a summary ([`Summary`]), as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use detour_testkit::eventually;
use serde::Serialize;

use detour_control::api as cp;

use crate::bed::Testbed;
use crate::topology::host_address;
use crate::totals::Totals;
use crate::traffic::{self, Flow, Throughput};

/// The steady flow: datagrams a second, and their UDP payload.
const FLOW_RATE: u32 = 1000;
const FLOW_SIZE: usize = 200;
/// The throughput test's UDP payload: a full inner packet of 1228 bytes
/// leaves room for the encapsulation within a 1500-byte underlay MTU.
const BLAST_SIZE: usize = 1200;
/// Each throughput trial's length, and the loss it may have.
const TRIAL_TIME: Duration = Duration::from_secs(1);
const LOSS_ALLOWED: f64 = 0.001;
/// The direct path's one-way delay in act 2.
const SLOW_DELAY_MS: u32 = 100;
/// How long any route change may take before the demo gives up.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// What the demo measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The two sites the traffic ran between (node ids).
    pub from: u16,
    pub to: u16,
    pub nodes: usize,
    pub latency: Latency,
    pub failover: Failover,
    pub restore: Restore,
    /// The path the throughput was measured on (`"direct"`, `"via 3"`).
    pub throughput_path: String,
    pub throughput: Throughput,
    /// Datagrams of the steady flow sent, lost and duplicated over all of
    /// acts 2 to 4.
    pub flow_rate_per_second: u32,
    pub flow_sent: u64,
    pub flow_lost: u64,
    pub flow_duplicates: u64,
    /// What every node's dataplane dropped during acts 2 to 4, by reason.
    pub dataplane_drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failover {
    /// From the cut to the first datagram delivered through the relay.
    pub failover_ms: f64,
    /// The path node `from` used afterwards (`"via 3"`).
    pub path_after: String,
    /// Datagrams the relays forwarded in the 2 s after the cut (from their
    /// dataplanes' counters).
    pub relayed_by_relays: u64,
    /// Datagrams sent from the cut until the first was delivered again,
    /// and how many of them were lost.
    pub sent_during: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Restore {
    /// From the restore to node `from`'s probes finding the link up.
    pub link_up_after_ms: f64,
    /// The path a second later: the relay stays until the direct path's
    /// loss estimate (its last 100 probes) has forgotten the cut.
    pub path_after: String,
    /// Datagrams lost from the restore to the end of the act.
    pub lost: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median one-way latency on the direct path, before anything.
    pub direct_ms: f64,
    /// The direct path's added one-way delay in act 2.
    pub direct_delay_added_ms: u32,
    /// Median one-way latency while the traffic was still on the slowed
    /// direct path.
    pub slowed_direct_ms: f64,
    /// From the slowdown to the first datagram that took the faster path.
    pub moved_after_ms: f64,
    /// The path chosen (`"via 3"`) and its median one-way latency.
    pub path_after: String,
    pub after_ms: f64,
    /// What detour saved: `slowed_direct_ms - after_ms`.
    pub gain_ms: f64,
    /// From the direct path being fast again to the route going back.
    pub back_on_direct_after_ms: f64,
    /// Datagrams lost in act 2.
    pub lost: u64,
}

/// Prints progress lines (to stdout, or stderr when stdout is JSON).
pub struct Progress {
    to_stderr: bool,
    start: Instant,
}

impl Progress {
    pub fn new(to_stderr: bool) -> Progress {
        Progress {
            to_stderr,
            start: Instant::now(),
        }
    }

    pub fn say(&self, text: &str) {
        let line = format!("[{:6.1} s] {text}\n", self.start.elapsed().as_secs_f64());
        self.raw(&line);
    }

    /// Prints a block of output (a command's), indented.
    pub fn block(&self, text: &str) {
        let mut s = String::new();
        for line in text.lines() {
            let _ = writeln!(s, "    {line}");
        }
        self.raw(&s);
    }

    fn raw(&self, text: &str) {
        if self.to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    }
}

/// Stops the demo between steps when the user pressed Ctrl-C.
struct Steps<'a> {
    stop: &'a AtomicBool,
}

impl Steps<'_> {
    fn check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Sleeps, waking for Ctrl-C.
    fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.check()?;
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
        Ok(())
    }

    /// Waits for `cond` (or Ctrl-C); whether it came within `timeout`.
    fn until(&self, timeout: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<bool> {
        let held = eventually(timeout, || self.stop.load(Ordering::Relaxed) || cond());
        self.check()?;
        Ok(held)
    }
}

/// Runs the five acts on a testbed that is up.
pub fn run(bed: &mut Testbed, progress: &Progress, stop: &AtomicBool) -> anyhow::Result<Summary> {
    let steps = Steps { stop };
    let sites = bed.topology().traffic_sites();
    if sites.len() < 2 || bed.topology().nodes.len() < 3 {
        bail!("the demo needs at least two sites and a third node to relay");
    }
    let (a, b) = (sites[0], sites[1]);
    let (host_a, host_b) = (bed.layout().host(a), bed.layout().host(b));
    let original = bed.path(a, b).context("no path between the sites")?;

    progress.say(&format!(
        "act 1: the overlay ({} nodes), as node {a} sees it",
        bed.topology().nodes.len()
    ));
    for args in [["paths"], ["routes"]] {
        progress.say(&format!("$ detourctl {}   (on node {a})", args[0]));
        let out = bed.detourctl(a, &args)?;
        progress.block(&String::from_utf8_lossy(&out.stdout));
    }
    steps.check()?;

    progress.say(&format!(
        "a steady flow from {} to {} ({FLOW_RATE} datagrams/s) runs through acts 2 to 4",
        host_address(a),
        host_address(b)
    ));
    let flow = Flow::start_warm(&host_a, &host_b, host_address(b), FLOW_RATE, FLOW_SIZE)?;
    let before = Totals::read(bed)?;
    let acts = run_flow_acts(bed, progress, &steps, &flow, a, b, original);
    let record = flow.stop()?;
    let t = acts?;
    let dataplane_drops = Totals::read(bed)?.since(&before).dropped;
    steps.check()?;

    progress.say(&format!(
        "act 5: throughput from site {a} to site {b} on the direct path (pinned for it: \
         detourctl route pin {b} direct), {BLAST_SIZE}-byte datagrams"
    ));
    let pinned = bed.detourctl(a, &["route", "pin", &b.to_string(), "direct"])?;
    if !pinned.status.success() {
        bail!(
            "detourctl route pin: {}",
            String::from_utf8_lossy(&pinned.stderr)
        );
    }
    let throughput = traffic::throughput(
        &host_a,
        &host_b,
        host_address(b),
        BLAST_SIZE,
        TRIAL_TIME,
        LOSS_ALLOWED,
    )?;
    bed.detourctl(a, &["route", "unpin", &b.to_string()])?;
    progress.say(&format!(
        "  {:.0} datagrams/s, {:.0} Mbit/s delivered with at most {} % loss ({} trials){}",
        throughput.packets_per_second,
        throughput.megabits_per_second,
        LOSS_ALLOWED * 100.0,
        throughput.trials,
        if throughput.sender_limited {
            "; the sender could not go faster"
        } else {
            ""
        }
    ));

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    const SECOND: u64 = 1_000_000_000;
    let direct = record
        .median_latency(t.slowed.saturating_sub(SECOND), t.slowed)
        .context("nothing arrived before the slowdown")?;
    // A datagram faster than the added delay took another path.
    let added = Duration::from_millis(u64::from(SLOW_DELAY_MS));
    let moved = record
        .first_faster_than(t.slowed, added)
        .context("the traffic never left the slowed path")?;
    let slowed = record.median_latency(t.slowed, moved).unwrap_or(added);
    let after = record
        .median_latency(t.sped_up.saturating_sub(SECOND), t.sped_up)
        .context("nothing arrived through the relay")?;
    // From when the rules started to go in, to the first datagram sent
    // after they were in (so it can only have come through a relay).
    let failover_end = record
        .first_arrival_sent_after(t.cut_done)
        .context("no datagram sent after the cut arrived")?;
    let failover = Duration::from_nanos(failover_end - t.cut);
    Ok(Summary {
        from: a,
        to: b,
        nodes: bed.topology().nodes.len(),
        throughput_path: "direct".to_owned(),
        throughput,
        latency: Latency {
            direct_ms: ms(direct),
            direct_delay_added_ms: SLOW_DELAY_MS,
            slowed_direct_ms: ms(slowed),
            moved_after_ms: (moved - t.slowed) as f64 / 1e6,
            path_after: t.slow_path.clone(),
            after_ms: ms(after),
            gain_ms: ms(slowed) - ms(after),
            back_on_direct_after_ms: ms(t.back_on_direct),
            lost: record.lost(t.slowed, t.cut),
        },
        failover: Failover {
            failover_ms: ms(failover),
            path_after: t.cut_path.clone(),
            relayed_by_relays: t.relayed,
            sent_during: record.sent_between(t.cut, failover_end),
            lost: record.lost(t.cut, failover_end),
        },
        restore: Restore {
            link_up_after_ms: ms(t.link_up),
            path_after: t.restored_path.clone(),
            lost: record.lost(t.restored, t.end),
        },
        flow_rate_per_second: FLOW_RATE,
        flow_sent: record.sent.len() as u64,
        flow_lost: record.lost(0, u64::MAX),
        flow_duplicates: record.duplicates,
        dataplane_drops,
    })
}

/// When things were done, on the flow's clock, and what the routes were.
struct Timeline {
    slowed: u64,
    slow_path: String,
    sped_up: u64,
    back_on_direct: Duration,
    /// When the cut began to be made, and when it was in force.
    cut: u64,
    cut_done: u64,
    cut_path: String,
    relayed: u64,
    restored: u64,
    link_up: Duration,
    restored_path: String,
    end: u64,
}

fn run_flow_acts(
    bed: &mut Testbed,
    progress: &Progress,
    steps: &Steps,
    flow: &Flow,
    a: u16,
    b: u16,
    original: crate::Impairment,
) -> anyhow::Result<Timeline> {
    if !flow.wait_for_more(500, Duration::from_secs(10)) {
        bail!("the flow from site {a} to site {b} does not get through");
    }
    let route = |bed: &Testbed| bed.route(a, b).ok().flatten().unwrap_or_default();
    let on_direct = |bed: &Testbed| route(bed) == "direct";
    if !steps.until(ROUTE_TIMEOUT, || on_direct(bed))? {
        bail!("node {a} does not use the direct path to {b} to begin with");
    }
    steps.pause(Duration::from_secs(1))?;

    progress.say(&format!(
        "act 2: the direct path {a}-{b} slows down to {SLOW_DELAY_MS} ms one way (the others: {} ms)",
        bed.topology().defaults.delay_ms
    ));
    let mut slow = original;
    slow.delay_ms = SLOW_DELAY_MS;
    bed.set_path(a, b, slow)?;
    let slowed = flow.now();
    if !steps.until(ROUTE_TIMEOUT, || route(bed).starts_with("via"))? {
        bail!("node {a} kept the slow direct path to {b}");
    }
    let slow_path = route(bed);
    progress.say(&format!(
        "  node {a} now sends to {b} {slow_path}, {:.1} s after the slowdown (probes measured the RTT)",
        (flow.now() - slowed) as f64 / 1e9
    ));
    // Shown once the slow path's cost is measured, so that the table
    // shows a choice made for latency.
    steps.until(ROUTE_TIMEOUT, || {
        bed.control_paths(a).is_ok_and(|p| {
            p.routes.iter().any(|r| {
                r.dst.0 == b
                    && r.direct_cost
                        .is_some_and(|c| c > f64::from(SLOW_DELAY_MS) / 1e3)
            })
        })
    })?;
    steps.pause(Duration::from_secs(1))?;
    progress.say(&format!("$ detourctl paths   (on node {a})"));
    progress.block(&String::from_utf8_lossy(
        &bed.detourctl(a, &["paths"])?.stdout,
    ));

    let sped_up = flow.now();
    bed.set_path(a, b, original)?;
    progress.say(&format!(
        "  the direct path is fast again ({} ms)",
        original.delay_ms
    ));
    let back = steps.until(ROUTE_TIMEOUT, || on_direct(bed))?;
    let back_on_direct = Duration::from_nanos(flow.now() - sped_up);
    if !back {
        bail!("node {a} did not go back to the direct path to {b}");
    }
    progress.say(&format!(
        "  node {a} is back on the direct path after {:.1} s",
        back_on_direct.as_secs_f64()
    ));
    steps.pause(Duration::from_secs(1))?;

    progress.say(&format!("act 3: the direct path {a}-{b} is cut"));
    let relayed_before = Totals::read(bed)?.relayed;
    let cut = flow.now();
    bed.cut(a, b)?;
    // A datagram sent once the rules are in can only arrive through a
    // relay.
    let cut_done = flow.now();
    if !steps.until(Duration::from_secs(5), || flow.delivered_since(cut_done))? {
        bail!("the traffic did not come back within 5 s of the cut");
    }
    progress.say(&format!(
        "  traffic flows again through a relay, {:.0} ms after the cut",
        (flow.now() - cut) as f64 / 1e6
    ));
    steps.pause(Duration::from_secs(2))?;
    let cut_path = route(bed);
    let relayed = Totals::read(bed)?.relayed - relayed_before;
    progress.say(&format!(
        "  node {a} now sends to {b} {cut_path}; relays forwarded {relayed} datagrams"
    ));
    progress.say(&format!("$ detourctl paths   (on node {a})"));
    progress.block(&String::from_utf8_lossy(
        &bed.detourctl(a, &["paths"])?.stdout,
    ));

    progress.say(&format!("act 4: the path {a}-{b} is restored"));
    bed.restore(a, b)?;
    let restored = flow.now();
    let peer_up = |bed: &Testbed| {
        bed.control(a)
            .and_then(|mut c| Ok(c.request(&cp::Request::Peers)?))
            .is_ok_and(|r| match r {
                cp::Response::Peers { peers } => {
                    peers.iter().any(|p| p.id.0 == b && p.state == "up")
                }
                _ => false,
            })
    };
    let up = steps.until(ROUTE_TIMEOUT, || peer_up(bed))?;
    let link_up = Duration::from_nanos(flow.now() - restored);
    if !up {
        bail!("the link {a}-{b} did not come back up");
    }
    steps.pause(Duration::from_secs(1))?;
    let restored_path = route(bed);
    progress.say(&format!(
        "  the link is up again after {:.0} ms; node {a} sends to {b} {restored_path}{}",
        link_up.as_secs_f64() * 1e3,
        if restored_path == "direct" {
            ""
        } else {
            " until the direct path's loss estimate (its last 100 probes) forgets the cut"
        }
    ));
    let end = flow.now();
    Ok(Timeline {
        slowed,
        slow_path,
        sped_up,
        back_on_direct,
        cut,
        cut_done,
        cut_path,
        relayed,
        restored,
        link_up,
        restored_path,
        end,
    })
}

/// The summary as the demo prints it at the end.
pub fn render(s: &Summary) -> String {
    let (a, b) = (s.from, s.to);
    let l = &s.latency;
    let f = &s.failover;
    let r = &s.restore;
    let t = &s.throughput;
    format!(
        "\nsummary: {nodes} nodes; traffic from site {a} to site {b}\n\
         latency:    {direct:.1} ms one way on the direct path; {slowed:.1} ms once it was slowed \
         by {added} ms; {after:.1} ms {lat_path}, chosen {moved:.1} s later: {gain:.1} ms saved \
         ({lat_lost} datagrams lost); back on the direct path {back:.1} s after it was fast again\n\
         failover:   {fo:.0} ms from the cut of {a}-{b} to the first datagram through a relay \
         ({fo_path}); {fo_lost} of the {fo_sent} datagrams sent meanwhile lost\n\
         restore:    the link up again after {up:.0} ms; traffic {re_path}; {re_lost} datagrams lost\n\
         flow:       {sent} datagrams sent at {rate}/s, {lost} lost in all, {dups} duplicated; \
         dataplanes dropped {drops}\n\
         throughput: {mbit:.0} Mbit/s, {pps:.0} datagrams/s of {size} bytes with at most {allowed} % \
         loss ({tp_path}; one sending thread{limited}; every daemon and host shares this machine's \
         cores)\n",
        nodes = s.nodes,
        direct = l.direct_ms,
        slowed = l.slowed_direct_ms,
        added = l.direct_delay_added_ms,
        after = l.after_ms,
        lat_path = l.path_after,
        moved = l.moved_after_ms / 1e3,
        gain = l.gain_ms,
        lat_lost = l.lost,
        back = l.back_on_direct_after_ms / 1e3,
        fo = f.failover_ms,
        fo_path = f.path_after,
        fo_lost = f.lost,
        fo_sent = f.sent_during,
        up = r.link_up_after_ms,
        re_path = r.path_after,
        re_lost = r.lost,
        sent = s.flow_sent,
        rate = s.flow_rate_per_second,
        lost = s.flow_lost,
        dups = s.flow_duplicates,
        drops = if s.dataplane_drops.is_empty() {
            "nothing".to_owned()
        } else {
            s.dataplane_drops
                .iter()
                .map(|(r, n)| format!("{n} {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        mbit = t.megabits_per_second,
        pps = t.packets_per_second,
        size = t.payload_bytes,
        tp_path = s.throughput_path,
        allowed = t.loss_allowed * 100.0,
        limited = if t.sender_limited {
            ", which could not go faster"
        } else {
            ""
        },
    )
}
