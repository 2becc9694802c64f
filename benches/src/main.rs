//! `detour-bench`: detour's forwarding paths against the baselines a user
//! would otherwise run, in one invocation, on a generator → gateway → sink
//! topology of network namespaces. Driven by `scripts/bench`; see
//! docs/benchmarks.md for what it measures and how to read it.

mod bed;
mod forwarders;
mod generators;
mod load;
mod measure;
mod paths;
mod plot;
mod report;
mod sealing;
mod xdp;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use detour_dataplane::generator::Method;
use detour_testkit::machine;

use crate::bed::{Bed, MAX_FRAME, MIN_FRAME, Side};
use crate::measure::{Pacer, Throughput, Timing, Traffic};
use crate::paths::{Frames, Path};
use crate::report::{Entry, Generators, Machine, Report, Settings};
use crate::xdp::BenchXdp;

/// Measures detour's relay, encap and decap paths against Linux IP
/// forwarding (with and without RPS), a userspace UDP relay, an in-kernel
/// XDP_REDIRECT forwarder and a raw AF_XDP forwarder (the AF_XDP ceiling),
/// with 64- and 1500-byte frames: forwarded rate, latency percentiles at
/// 10, 50 and 90 % of each path's highest rate, and the forwarding
/// threads' own cost per packet. Needs root (namespaces, XDP).
#[derive(Debug, Parser)]
#[command(name = "detour-bench", version)]
struct Args {
    /// Short runs (under 5 minutes in all) instead of the full ones.
    #[arg(long)]
    quick: bool,
    /// Print the report as JSON on stdout (the ratio table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Where report.json, report.md and the plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Site frame sizes in bytes, 64 to 1514.
    #[arg(long, value_delimiter = ',', default_value = "64,1500")]
    sizes: Vec<usize>,
    /// Paths to measure: relay, encap, decap, linux, linux-rps, udp-relay,
    /// xdp-redirect, afxdp. Default: all.
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Receive queues on every link, one worker and one generator each.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Where receive work runs: `sender` (veth's own way: on the sending
    /// CPU, so the gateway's on the generator's core and the sink's on the
    /// gateway's) or `steered` (threaded NAPI, the gateway's pinned to the
    /// worker cores and the sink's to the generator cores, as a NIC's
    /// interrupts steered to the cores serving its queues: the gateway has
    /// its cores and nothing else, the tester the others).
    #[arg(long, value_enum, default_value_t = Rx::Steered)]
    rx: Rx,
    /// Seconds per throughput run (default: 2 quick, 5 full).
    #[arg(long)]
    seconds: Option<f64>,
    /// Throughput runs per path and size; the median counts (default: 1
    /// quick, 3 full).
    #[arg(long)]
    runs: Option<usize>,
    /// Rounds over every path, interleaved so that a noisy spell of the
    /// machine hits each path in one round only; each path's median round
    /// is reported (default: 1 quick, 2 full).
    #[arg(long)]
    rounds: Option<usize>,
    /// Flag a measurement when other work kept more than this share of the
    /// machine busy just before it.
    #[arg(long, default_value_t = 0.10)]
    max_other_load: f64,
    /// Measure only the frame generators (XDP live frames where the kernel
    /// accepts them, AF_XDP TX), flat out into an XDP sink on the gateway.
    #[arg(long)]
    generators: bool,
    /// Replace the results section of this Markdown file (between
    /// `<!-- bench:begin -->` and `<!-- bench:end -->`) with this run's.
    #[arg(long)]
    update_docs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Rx {
    Sender,
    Steered,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("detour-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    // Ctrl-C ends the run at the next measurement, and everything it set
    // up goes (a second Ctrl-C kills it at once; the next run sweeps what
    // is left).
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            130,
            std::sync::Arc::clone(&measure::INTERRUPTED),
        )?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&measure::INTERRUPTED))?;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root: it builds network namespaces and attaches XDP programs");
    }
    if let Some(bad) = args
        .sizes
        .iter()
        .find(|s| !(MIN_FRAME..=MAX_FRAME).contains(s))
    {
        bail!("--sizes: {bad} is not between {MIN_FRAME} and {MAX_FRAME}");
    }
    let paths = select_paths(&args.paths)?;
    let timing = Timing {
        warm_s: if args.quick { 0.5 } else { 1.0 },
        seconds: args.seconds.unwrap_or(if args.quick { 2.0 } else { 3.0 }),
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        latency_s: if args.quick { 0.5 } else { 2.0 },
        search_steps: if args.quick { 6 } else { 8 },
        trial_s: if args.quick { 0.5 } else { 1.0 },
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 2 }).max(1);
    let cpus = measure::cpus();
    let queues = args.queues.max(1);
    let generator_cores: Vec<usize> = (0..queues as usize).map(|q| q % cpus).collect();
    let worker_cores: Vec<usize> = (0..queues as usize)
        .map(|q| (queues as usize + q) % cpus)
        .collect();
    let mut rx = args.rx;
    if generator_cores.iter().any(|c| worker_cores.contains(c)) {
        eprintln!(
            "detour-bench: {cpus} CPUs cannot keep {queues} generator(s) and {queues} worker(s) apart; \
             they share cores, so the rates measure this machine's CPU, not the paths"
        );
        if rx == Rx::Steered {
            // Steering receive work to cores that generators, workers and
            // NAPI threads already share only starves one of them (an
            // AF_XDP forwarder lost half its frames that way).
            eprintln!("detour-bench: receive work stays on the sending CPUs (--rx sender)");
            rx = Rx::Sender;
        }
    }
    let generator = Method::choose(Method::LiveFrames)?;
    eprintln!(
        "detour-bench: flat out from {} ({}); paced from {}",
        generator.method,
        generator.why,
        Method::AfXdp
    );
    let bed = Bed::up(queues)?;
    // The paced generators of both ends, one per queue, for the whole run.
    let pacers = |side| -> Result<Vec<Mutex<Pacer>>> {
        (0..queues)
            .map(|q| Ok(Mutex::new(Pacer::new(bed.ns(side), q)?)))
            .collect()
    };
    let (peer_pacers, host_pacers) = (pacers(Side::Peer)?, pacers(Side::Host)?);
    if args.generators {
        let rates = generators::compare(
            &bed,
            &peer_pacers,
            &args.sizes,
            &generator_cores,
            &worker_cores,
            &timing,
        )?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rates)?);
        } else {
            println!("\n{}", generators::table(&rates));
        }
        return Ok(());
    }
    let mut report = Report {
        date: machine::now_utc(),
        command: std::env::var("DETOUR_BENCH_COMMAND")
            .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" ")),
        machine: Machine {
            kernel: machine::kernel(),
            cpu_model: machine::cpu_model(),
            cpus,
            hardware_counters: measure::perf_counts_instructions(),
        },
        settings: Settings {
            quick: args.quick,
            queues,
            frame_sizes: args.sizes.clone(),
            generator_cores: generator_cores.clone(),
            worker_cores: worker_cores.clone(),
            timing: timing.clone(),
            rounds,
            max_other_load: args.max_other_load,
            receive_work: format!("{rx:?}").to_lowercase(),
            generators: Generators {
                flat_out: generator.method.name(),
                flat_out_why: generator.why.clone(),
                paced: Method::AfXdp.name(),
            },
        },
        results: Vec::new(),
        rounds: Vec::new(),
        ratios: Vec::new(),
        targets: Vec::new(),
        flagged: Vec::new(),
        failed: Vec::new(),
    };
    for round in 0..rounds {
        for &path in &paths {
            let napi_before = paths::napi_threads(path.input());
            let dut = path
                .start(&bed, &worker_cores)
                .with_context(|| format!("setting up {}", path.name()))?;
            let (from, to) = path.ends();
            let sink_napi_before = paths::napi_threads("eth0");
            let mut sink = bed.ns(to).enter(|| BenchXdp::sink("eth0"))??;
            if rx == Rx::Steered {
                paths::receive_on(&bed.net.gw, path.input(), &worker_cores, &napi_before)?;
                paths::receive_on(bed.ns(to), "eth0", &generator_cores, &sink_napi_before)?;
            }
            for &size in &args.sizes {
                measure::interrupted()?;
                let frames = path.frames(&bed, size)?;
                let pacers = match from {
                    Side::Peer => &peer_pacers,
                    Side::Host => &host_pacers,
                };
                for p in pacers {
                    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
                    match &frames {
                        Frames::Repeated(frame) => p.load(frame),
                        Frames::SealedAfresh { site_frame, sealer } => {
                            p.load_sealed(site_frame, Arc::clone(sealer))
                        }
                    }
                }
                let traffic = Traffic {
                    ns: bed.ns(from),
                    frame: frames.repeated().unwrap_or_default(),
                    cores: &generator_cores,
                    pacers,
                    // Live frames repeat one frame: the gateway would open
                    // only the first of a sealed one.
                    flat_out: match frames.repeated() {
                        Some(_) => generator.method,
                        None => Method::AfXdp,
                    },
                };
                let other_load = quiet_machine(args.max_other_load);
                let round_note = if rounds > 1 {
                    format!(" (round {})", round + 1)
                } else {
                    String::new()
                };
                eprint!("{:<34} {size:>4} B{round_note}: ", path.name());
                measure::verbose("flat out");
                let flat_out = measure::flat_out(&traffic, &sink, &timing)
                    .with_context(|| format!("{}, {size} B, flat out", path.name()))?;
                measure::interrupted()?;
                measure::verbose("searching for the lossless rate");
                let (lossless, generator_bound) = measure::lossless_rate(
                    &traffic,
                    &sink,
                    flat_out.pps,
                    timing.search_steps,
                    timing.trial_s,
                )?;
                if lossless == 0.0 {
                    let why = format!(
                        "{}, {size} B: lost more than {} % at every rate tried, down to {} pps",
                        path.name(),
                        measure::LOSS_ALLOWED * 100.0,
                        measure::MIN_RATE
                    );
                    eprintln!("failed\ndetour-bench: {why}");
                    report.failed.push(why);
                    continue;
                }
                measure::interrupted()?;
                measure::verbose("at the lossless rate");
                let at =
                    measure::at_rate(&traffic, &sink, lossless, &|| dut.worker_tids(), &timing)?;
                let throughput = Throughput {
                    lossless_pps: at.pps,
                    lossless_bps: at.bps,
                    generator_bound,
                    cpu_busy: at.cpu_busy,
                    steal: at.steal,
                    worker: at.worker,
                    flat_out,
                };
                eprint!(
                    "lossless {}{:.3} Mpps (flat out {:.3})",
                    if generator_bound { "≥ " } else { "" },
                    throughput.lossless_pps / 1e6,
                    throughput.flat_out.pps / 1e6,
                );
                let mut latency = Vec::new();
                if throughput.lossless_pps > 1000.0 && path.stamps_arrive() {
                    for percent in [10, 50, 90] {
                        measure::interrupted()?;
                        measure::verbose(&format!("latency at {percent} %"));
                        let l = measure::latency(
                            &traffic,
                            &mut sink,
                            throughput.lossless_pps,
                            percent,
                            &timing,
                        )?;
                        eprint!(
                            ", p50/p99 at {percent} %: {:.1}/{:.1} µs",
                            l.p50_us, l.p99_us
                        );
                        latency.push(l);
                    }
                }
                eprintln!();
                let mut flagged = None;
                if other_load > args.max_other_load || throughput.steal > args.max_other_load {
                    let why = format!(
                        "{}, {size} B: other load {:.0} %, steal {:.0} %",
                        path.name(),
                        other_load * 100.0,
                        throughput.steal * 100.0
                    );
                    eprintln!("detour-bench: flagged: {why}");
                    flagged = Some(why);
                }
                report.rounds.push(Entry {
                    round,
                    path,
                    name: path.name(),
                    detour: path.is_detour(),
                    frame_bytes: size,
                    other_load,
                    flagged,
                    throughput,
                    latency,
                    drops: dut.dataplane_drops(),
                });
            }
            drop(sink);
            dut.stop(&bed)?;
        }
    }
    drop((peer_pacers, host_pacers));
    drop(bed);
    report.summarise();
    report.write(&args.out)?;
    if let Some(doc) = &args.update_docs {
        update_docs(doc, &report)?;
    }
    let table = report.ratio_table();
    if args.json {
        eprintln!("\n{table}");
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("\n{table}");
    }
    eprintln!("detour-bench: report and plots in {}", args.out.display());
    if !report.failed.is_empty() {
        eprintln!(
            "detour-bench: {} measurement(s) failed; see above",
            report.failed.len()
        );
    }
    if !report.flagged.is_empty() {
        eprintln!(
            "detour-bench: {} measurement(s) flagged: the machine was busy with other work; rerun when it is quiet",
            report.flagged.len()
        );
    }
    Ok(())
}

fn select_paths(keys: &[String]) -> Result<Vec<Path>> {
    if keys.is_empty() {
        return Ok(Path::ALL.to_vec());
    }
    keys.iter()
        .map(|k| {
            Path::ALL
                .into_iter()
                .find(|p| p.key() == k)
                .with_context(|| {
                    let known: Vec<_> = Path::ALL.iter().map(|p| p.key()).collect();
                    format!("--paths: no path {k:?} (known: {})", known.join(", "))
                })
        })
        .collect()
}

/// Samples the load others put on the machine; while it is above `max`,
/// waits a little and samples again (three tries). Returns the last sample.
fn quiet_machine(max: f64) -> f64 {
    let mut load = load::other_load(Duration::from_millis(500));
    for _ in 0..3 {
        if load <= max {
            break;
        }
        eprintln!(
            "detour-bench: the machine is {:.0} % busy with other work; waiting",
            load * 100.0
        );
        std::thread::sleep(Duration::from_secs(2));
        load = load::other_load(Duration::from_millis(500));
    }
    load
}

fn update_docs(doc: &std::path::Path, report: &Report) -> Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let text =
        std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        bail!("{} has no {BEGIN} … {END} section", doc.display());
    };
    let body = report
        .markdown()
        .replacen("# detour benchmark", "### Latest run", 1)
        .replace("\n## ", "\n#### ");
    let updated = format!("{}{BEGIN}\n{body}\n{}", &text[..b], &text[e..]);
    std::fs::write(doc, updated).with_context(|| format!("writing {}", doc.display()))
}
