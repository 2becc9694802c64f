//! `detour-bench --generators`: the frame generators themselves, flat out
//! from the peer into an XDP sink on the gateway's WAN interface, with
//! nothing forwarding in between: how much each one offers, and so which
//! one can overload a path (docs/benchmarks.md).

use std::sync::Mutex;

use anyhow::{Context as _, Result};
use detour_dataplane::generator::{Method, live_frames_refused};
use serde::Serialize;

use crate::bed::{Bed, Side};
use crate::measure::{self, Pacer, Timing, Traffic};
use crate::paths;
use crate::xdp::BenchXdp;

/// One generator's rate at one frame size.
#[derive(Debug, Serialize)]
pub struct GeneratorRate {
    pub generator: &'static str,
    pub frame_bytes: usize,
    /// What the generator sent.
    pub offered_pps: f64,
    /// What reached the sink.
    pub received_pps: f64,
}

/// Measures every generator this kernel runs, at every size in `sizes`,
/// `runs` times each (the median counts), the sink's receive work on
/// `sink_cores` and the generators on `generator_cores`.
pub fn compare(
    bed: &Bed,
    pacers: &[Mutex<Pacer>],
    sizes: &[usize],
    generator_cores: &[usize],
    sink_cores: &[usize],
    timing: &Timing,
) -> Result<Vec<GeneratorRate>> {
    let mut methods = vec![Method::AfXdp];
    match live_frames_refused() {
        None => methods.insert(0, Method::LiveFrames),
        Some(why) => eprintln!("detour-bench: XDP live frames not measured: {why}"),
    }
    let napi_before = paths::napi_threads("wan");
    let sink = bed.net.gw.enter(|| BenchXdp::sink("wan"))??;
    paths::receive_on(&bed.net.gw, "wan", sink_cores, &napi_before)?;
    let mut rates = Vec::new();
    for &size in sizes {
        let frame = bed.peer_frame(size);
        for p in pacers {
            p.lock().unwrap_or_else(|e| e.into_inner()).load(&frame);
        }
        for &method in &methods {
            measure::interrupted()?;
            let traffic = Traffic {
                ns: bed.ns(Side::Peer),
                frame: &frame,
                cores: generator_cores,
                pacers,
                flat_out: method,
            };
            let mut runs = (0..timing.runs)
                .map(|_| measure::flat_out(&traffic, &sink, timing))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("{method}, {size} B"))?;
            runs.sort_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps));
            let median = &runs[runs.len() / 2];
            eprintln!(
                "{:<16} {size:>4} B: offered {:.3} Mpps, {:.3} Mpps reached the sink",
                method.name(),
                median.offered_pps / 1e6,
                median.pps / 1e6
            );
            rates.push(GeneratorRate {
                generator: method.name(),
                frame_bytes: size,
                offered_pps: median.offered_pps,
                received_pps: median.pps,
            });
        }
    }
    Ok(rates)
}

/// The rates as a Markdown table.
pub fn table(rates: &[GeneratorRate]) -> String {
    let mut out = String::from(
        "| generator | frame | offered Mpps | reached the sink Mpps |\n| --- | ---: | ---: | ---: |\n",
    );
    for r in rates {
        out.push_str(&format!(
            "| {} | {} B | {:.3} | {:.3} |\n",
            r.generator,
            r.frame_bytes,
            r.offered_pps / 1e6,
            r.received_pps / 1e6
        ));
    }
    out
}
