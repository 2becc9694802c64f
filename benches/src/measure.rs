//! The trials: a path's highest forwarding rate, and its latency when
//! offered a share of that rate.
//!
//! Flat out, the generator is `BPF_PROG_RUN` with XDP live frames where the
//! kernel accepts them (the kernel sends one frame, given once, as fast as
//! it can: 3 to 7 Mpps from one core of this machine into an XDP sink), and
//! the AF_XDP TX socket of [`Pacer`], unpaced, where it refuses them
//! (`detour_dataplane::generator::Method::choose`; docs/benchmarks.md
//! compares the two). Paced, for the lossless rate and latency, it is
//! always the AF_XDP socket. One generator thread per queue, on the
//! generator cores; the sink is [`BenchXdp::sink`], counting at the other
//! end.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use detour_testkit::Netns;
use serde::Serialize;

use detour_common::bench::{STAMP_MAGIC, Stamp};
use detour_dataplane::generator::sealer::{HEADROOM, PeerSealer};
use detour_dataplane::generator::{Generator, Method};
use detour_dataplane::xsk::{Desc, Socket, Umem};

use crate::load::{CpuTimes, thread_cpu_ns};

use crate::xdp::BenchXdp;

/// Frames per `BPF_PROG_RUN` call at full rate: long enough that the call's
/// own cost (a page pool set up and torn down, tens of ms with an RCU grace
/// period) vanishes, short enough to stop within a second.
const CHUNK: u32 = 1 << 19;
/// Frames a paced burst holds at most.
const BATCH: u32 = 64;
/// Descriptors the unpaced AF_XDP generator queues at a time.
const FLAT_OUT_BURST: u32 = 256;
/// When pacing, the generator sends a burst every this long.
const PACE_TICK: Duration = Duration::from_micros(20);

/// How long to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Warm-up before each measurement.
    pub warm_s: f64,
    /// Each throughput run.
    pub seconds: f64,
    /// Throughput runs per path and size; the median is reported.
    pub runs: usize,
    /// Each latency trial.
    pub latency_s: f64,
    /// Trials in the search for the lossless rate.
    pub search_steps: u32,
    /// Each of those trials.
    pub trial_s: f64,
}

/// Where the generator runs and what it sends.
pub struct Traffic<'a> {
    pub ns: &'a Netns,
    pub frame: &'a [u8],
    /// One generator thread per core (and so per receive queue: veth picks
    /// the queue of a frame sent with XDP by the sending CPU).
    pub cores: &'a [usize],
    /// The paced generators of `ns`, one per core, loaded with `frame`.
    pub pacers: &'a [Mutex<Pacer>],
    /// The generator flat out.
    pub flat_out: Method,
}

/// A path's forwarding rate, as the ratios compare it.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// The highest rate forwarded with at most 0.1 % lost (RFC 2544's
    /// throughput), as measured at the sink when offered that rate.
    pub lossless_pps: f64,
    /// The same in bits per second, frames as the sink saw them.
    pub lossless_bps: f64,
    /// The paced generator could offer no more: the path may forward more.
    pub generator_bound: bool,
    /// Each CPU's busy share at that rate.
    pub cpu_busy: Vec<f64>,
    /// The hypervisor's steal over the measurement.
    pub steal: f64,
    /// The forwarding threads' own cost at that rate, for paths with
    /// userspace work.
    pub worker: Option<WorkerCost>,
    /// Overloaded: what gets through when offered far more.
    pub flat_out: FlatOut,
}

/// The generator flat out, above what any path here forwards: how a path
/// behaves overloaded.
#[derive(Debug, Clone, Serialize)]
pub struct FlatOut {
    pub offered_pps: f64,
    pub pps: f64,
}

/// What the sink saw while a rate was offered.
pub struct AtRate {
    pub pps: f64,
    pub bps: f64,
    pub cpu_busy: Vec<f64>,
    pub steal: f64,
    pub worker: Option<WorkerCost>,
}

/// What the forwarding threads spent per packet forwarded.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerCost {
    /// User and system time together (the system part is mostly the
    /// kernel's AF_XDP copy path on veth, which a zero-copy NIC skips).
    pub ns_per_packet: f64,
    pub user_ns_per_packet: f64,
    pub system_ns_per_packet: f64,
    /// From `perf stat`, where the machine exposes hardware counters.
    pub instructions_per_packet: Option<f64>,
    pub cycles_per_packet: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// The share of the path's highest rate offered, in per cent.
    pub load_percent: u32,
    pub offered_pps: f64,
    pub received_pps: f64,
    /// Percentiles of the time from the generator's stamp to the sink, µs.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// (µs, share of frames at or below), for the CDF plot.
    pub cdf: Vec<(f64, f64)>,
}

/// Runs the generator flat out for `seconds` and counts what reaches `sink`.
pub fn flat_out(traffic: &Traffic, sink: &BenchXdp, timing: &Timing) -> Result<FlatOut> {
    let mut result = FlatOut {
        offered_pps: 0.0,
        pps: 0.0,
    };
    run_generators(traffic, None, |sent| {
        std::thread::sleep(Duration::from_secs_f64(timing.warm_s));
        let (s0, r0, t0) = (sent(), sink.received()?.packets, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(timing.seconds));
        let elapsed = t0.elapsed().as_secs_f64();
        result.offered_pps = (sent() - s0) as f64 / elapsed;
        result.pps = (sink.received()?.packets - r0) as f64 / elapsed;
        Ok(())
    })?;
    Ok(result)
}

/// Offers `rate` for `runs` runs of `seconds` and measures what reaches
/// `sink`, what the CPUs and the forwarding threads `workers` spent: the
/// median run by forwarded rate.
pub fn at_rate(
    traffic: &Traffic,
    sink: &BenchXdp,
    rate: f64,
    workers: &dyn Fn() -> Vec<i32>,
    timing: &Timing,
) -> Result<AtRate> {
    let mut runs = Vec::new();
    run_generators(traffic, Some(rate), |_sent| {
        std::thread::sleep(Duration::from_secs_f64(timing.warm_s));
        for _ in 0..timing.runs {
            let tids = workers();
            let (r0, c0, w0, t0) = (
                sink.received()?,
                CpuTimes::now(),
                cpu_of(&tids),
                Instant::now(),
            );
            let counters = perf_stat(&tids, timing.seconds);
            let elapsed = t0.elapsed().as_secs_f64();
            let (r1, c1, w1) = (sink.received()?, CpuTimes::now(), cpu_of(&tids));
            let packets = (r1.packets - r0.packets).max(1) as f64;
            let worker = (!tids.is_empty()).then(|| {
                let user = (w1.0 - w0.0) as f64 / packets;
                let system = (w1.1 - w0.1) as f64 / packets;
                WorkerCost {
                    ns_per_packet: user + system,
                    user_ns_per_packet: user,
                    system_ns_per_packet: system,
                    instructions_per_packet: counters.instructions.map(|n| n as f64 / packets),
                    cycles_per_packet: counters.cycles.map(|n| n as f64 / packets),
                }
            });
            runs.push(AtRate {
                pps: packets / elapsed,
                bps: (r1.bytes - r0.bytes) as f64 * 8.0 / elapsed,
                cpu_busy: (0..cpus()).map(|c| c1.busy_since(&c0, c)).collect(),
                steal: c1.steal_since(&c0),
                worker,
            });
        }
        Ok(())
    })?;
    runs.sort_by(|a, b| a.pps.total_cmp(&b.pps));
    let middle = runs.len() / 2;
    runs.into_iter()
        .nth(middle)
        .ok_or_else(|| anyhow!("no run"))
}

/// The highest rate the path forwards with at most [`LOSS_ALLOWED`] lost
/// (RFC 2544's throughput, with its loss allowance), in `steps` trials of
/// `trial_s` seconds: from the rate forwarded flat out, doubling while
/// trials pass, then bisecting in log space between the best rate that
/// passed (at first [`MIN_RATE`]) and the lowest that failed, so that a
/// start far too high costs a few trials, not the whole budget. Returns 0
/// if no trial passed, and whether the paced generator could not offer
/// more (the path may then forward more than found).
pub fn lossless_rate(
    traffic: &Traffic,
    sink: &BenchXdp,
    start: f64,
    steps: u32,
    trial_s: f64,
) -> Result<(f64, bool)> {
    let (mut ok, mut too_much) = (0.0_f64, f64::INFINITY);
    let mut rate = start.max(MIN_RATE);
    let mut confirming = false;
    let mut step = 0;
    while step < steps {
        interrupted()?;
        let (lost, offered_pps) = trial(traffic, sink, rate, trial_s)?;
        verbose(&format!(
            "search: asked {rate:.0} pps, offered {offered_pps:.0}, lost {:.3} %",
            lost * 100.0
        ));
        let short = offered_pps < 0.97 * rate;
        if (lost > LOSS_ALLOWED || short) && !confirming {
            // A shared machine has hiccups: a failed trial counts only if
            // its repeat fails too (the repeat is not a step of its own).
            confirming = true;
            continue;
        }
        confirming = false;
        step += 1;
        if lost > LOSS_ALLOWED {
            too_much = rate;
        } else if short {
            // The generator's limit, not the path's: nothing higher can be
            // shown.
            return Ok((offered_pps.max(ok), true));
        } else {
            ok = rate;
        }
        if ok == 0.0 && too_much <= MIN_RATE {
            break;
        }
        rate = if too_much.is_finite() {
            (ok.max(MIN_RATE / 2.0) * too_much).sqrt()
        } else {
            rate * 2.0
        };
    }
    Ok((ok, false))
}

/// Offers `rate` for `seconds`: the share lost, and the rate offered.
fn trial(traffic: &Traffic, sink: &BenchXdp, rate: f64, seconds: f64) -> Result<(f64, f64)> {
    let mut result = (0.0, 0.0);
    run_generators(traffic, Some(rate), |sent| {
        std::thread::sleep(Duration::from_millis(100));
        let (s0, r0) = (sent(), sink.received()?.packets);
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let s1 = sent();
        // What is in flight when counting stops still arrives.
        std::thread::sleep(Duration::from_millis(20));
        let r1 = sink.received()?.packets;
        let offered = (s1 - s0).max(1) as f64;
        result = (
            (offered - (r1 - r0) as f64).max(0.0) / offered,
            offered / seconds,
        );
        Ok(())
    })?;
    Ok(result)
}

/// Set by SIGINT or SIGTERM: the run stops at the next trial.
pub static INTERRUPTED: LazyLock<Arc<AtomicBool>> =
    LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// An error once the run was interrupted.
pub fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err(anyhow!("interrupted; everything it set up is removed"));
    }
    Ok(())
}

/// With `DETOUR_BENCH_VERBOSE` set, says what the harness is doing, and
/// when.
pub fn verbose(what: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    if std::env::var_os("DETOUR_BENCH_VERBOSE").is_some() {
        let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
        eprintln!("\n  [{t:7.2} s] {what}");
    }
}

/// The lowest rate the search tries.
pub const MIN_RATE: f64 = 10_000.0;

/// Loss tolerated at the "lossless" rate: frames in flight when the count
/// is taken and the odd drop on a shared machine, not a loss regime.
pub const LOSS_ALLOWED: f64 = 0.001;

/// Offers `percent` of `max_pps`, stamped, and reads the sink's latencies.
pub fn latency(
    traffic: &Traffic,
    sink: &mut BenchXdp,
    max_pps: f64,
    percent: u32,
    timing: &Timing,
) -> Result<Latency> {
    let rate = max_pps * f64::from(percent) / 100.0;
    let mut window = (0, 0, 0.0);
    let sink_cell = std::cell::RefCell::new(sink);
    run_generators(traffic, Some(rate), |sent| {
        std::thread::sleep(Duration::from_millis(200));
        sink_cell.borrow_mut().clear_latency()?;
        let (s0, r0, t0) = (
            sent(),
            sink_cell.borrow().received()?.packets,
            Instant::now(),
        );
        std::thread::sleep(Duration::from_secs_f64(timing.latency_s));
        window = (
            sent() - s0,
            sink_cell.borrow().received()?.packets - r0,
            t0.elapsed().as_secs_f64(),
        );
        Ok(())
    })?;
    // What was in flight lands now.
    std::thread::sleep(Duration::from_millis(50));
    let histogram = sink_cell.borrow().latency()?;
    let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1e3;
    let total = histogram.len().max(1) as f64;
    let cdf = histogram
        .iter_quantiles(4)
        .map(|v| {
            (
                v.value_iterated_to() as f64 / 1e3,
                v.count_since_last_iteration() as f64,
            )
        })
        .scan(0.0, |seen, (value, n)| {
            *seen += n;
            Some((value, *seen / total))
        })
        .collect();
    Ok(Latency {
        load_percent: percent,
        offered_pps: window.0 as f64 / window.2,
        received_pps: window.1 as f64 / window.2,
        p50_us: us(0.5),
        p90_us: us(0.9),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: histogram.max() as f64 / 1e3,
        cdf,
    })
}

/// Runs one generator per core while `measure` runs, then stops them;
/// `measure` gets a function that reads the frames sent so far.
fn run_generators(
    traffic: &Traffic,
    rate: Option<f64>,
    measure: impl FnOnce(&dyn Fn() -> u64) -> Result<()>,
) -> Result<()> {
    let sent = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let per_core = rate.map(|r| r / traffic.cores.len() as f64);
    std::thread::scope(|s| {
        let generators: Vec<_> = traffic
            .cores
            .iter()
            .enumerate()
            .map(|(queue, &core)| {
                let (sent, stop) = (&sent, &stop);
                s.spawn(move || {
                    let pacer = || {
                        traffic.pacers[queue]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                    };
                    let result = match (per_core, traffic.flat_out) {
                        (None, Method::LiveFrames) => traffic
                            .ns
                            .enter(|| live_frames(traffic.frame, queue, core, sent, stop))
                            .map_err(anyhow::Error::from)
                            .and_then(|r| r),
                        (rate, _) => pin(core).and_then(|()| pacer().run(rate, sent, stop)),
                    };
                    // The others stop too if this one could not go on.
                    stop.store(true, Ordering::Relaxed);
                    result
                })
            })
            .collect();
        let measured = measure(&|| sent.load(Ordering::Relaxed));
        stop.store(true, Ordering::Relaxed);
        for g in generators {
            g.join().map_err(|_| anyhow!("a generator panicked"))??;
        }
        measured
    })
}

/// The flat-out generator where the kernel accepts live frames:
/// `BPF_PROG_RUN` out of the namespace's `eth0`, from a thread pinned to
/// `core`.
fn live_frames(
    frame: &[u8],
    queue: usize,
    core: usize,
    sent: &AtomicU64,
    stop: &AtomicBool,
) -> Result<()> {
    pin(core)?;
    let mut generator = Generator::new(
        Method::LiveFrames,
        "eth0",
        queue as u32,
        vec![frame.to_vec()],
    )?;
    while !stop.load(Ordering::Relaxed) {
        generator.send(0, CHUNK)?;
        sent.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
    }
    Ok(())
}

/// Pins the calling thread to CPU `core`.
pub fn pin(core: usize) -> Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(anyhow!("cannot pin a thread to CPU {core}"))
    }
}

/// The paced generator of one queue: an AF_XDP socket on `eth0` of a
/// namespace, sending bursts every [`PACE_TICK`], each frame stamped just
/// before it goes. (`BPF_PROG_RUN` sets up a page pool per call, tens of
/// ms: fine flat out, far too slow to pace small bursts.) Copy mode tops out
/// near 0.8 Mpps here; a rate above that is offered as fast as it goes, and
/// the search counts only what was offered. Unpaced, it is the flat-out
/// generator where the kernel refuses live frames.
///
/// Made once for the whole run, not per trial: a bind right after a close
/// on the same queue waits for the kernel's deferred release.
pub struct Pacer {
    // Declared before the UMEM: it must go first.
    socket: Socket,
    umem: Umem,
    free: Vec<u64>,
    frame_len: usize,
    /// What each frame is sealed afresh from, as it is queued: the site
    /// frame and the peer's worker that seals it.
    sealing: Option<(Vec<u8>, Arc<PeerSealer>)>,
}

impl Pacer {
    const FRAMES: u32 = 4096;
    const FRAME_SIZE: u32 = 2048;

    pub fn new(ns: &Netns, queue: u32) -> Result<Pacer> {
        let pacer = ns.enter(|| -> std::io::Result<Pacer> {
            let mut umem = Umem::new(Self::FRAME_SIZE, Self::FRAMES, 2048)?;
            let socket = umem.socket("eth0", queue, Some(false))?;
            let free = umem.frame_addrs().collect();
            Ok(Pacer {
                socket,
                umem,
                free,
                frame_len: 0,
                sealing: None,
            })
        })??;
        Ok(pacer)
    }

    /// Makes every frame a copy of `frame` (the frames in flight, once they
    /// complete, are not sent again before this is called next).
    pub fn load(&mut self, frame: &[u8]) {
        self.settle();
        for &addr in &self.free {
            let (buf, _) = self.umem.frame_mut(addr);
            buf[..frame.len()].copy_from_slice(frame);
        }
        self.frame_len = frame.len();
        self.sealing = None;
    }

    /// Makes every frame `site_frame` sealed by `sealer` afresh, under a
    /// new counter, each time it is queued (stamped first when paced, so
    /// that the stamp arrives once the gateway has opened it).
    pub fn load_sealed(&mut self, site_frame: &[u8], sealer: Arc<PeerSealer>) {
        self.settle();
        self.frame_len = site_frame.len();
        self.sealing = Some((site_frame.to_vec(), sealer));
    }

    /// Gives the kernel a moment to finish what is in flight.
    fn settle(&mut self) {
        let mut done = [0u64; BATCH as usize];
        let deadline = Instant::now() + Duration::from_millis(100);
        while self.free.len() < Self::FRAMES as usize && Instant::now() < deadline {
            let n = self.socket.complete(&mut done);
            self.free.extend_from_slice(&done[..n]);
            self.socket.kick();
        }
    }

    /// Sends until `stop`: `rate` frames a second, stamped; or with no
    /// rate as fast as the socket takes them, unstamped. Counts into `sent`
    /// the frames the kernel completed.
    fn run(&mut self, rate: Option<f64>, sent: &AtomicU64, stop: &AtomicBool) -> Result<()> {
        // With a rate: bursts of `burst` frames every `interval`.
        let pace = rate.map(|rate| {
            let burst = (rate * PACE_TICK.as_secs_f64())
                .round()
                .clamp(1.0, f64::from(BATCH)) as usize;
            (burst, Duration::from_secs_f64(burst as f64 / rate))
        });
        let burst = pace.map_or(FLAT_OUT_BURST as usize, |(burst, _)| burst);
        let mut descs = Vec::with_capacity(burst);
        let mut done = [0u64; FLAT_OUT_BURST as usize];
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let n = self.socket.complete(&mut done);
            // A sealed frame went from its UMEM frame's middle.
            let frame = u64::from(Self::FRAME_SIZE);
            self.free.extend(done[..n].iter().map(|a| a - a % frame));
            sent.fetch_add(n as u64, Ordering::Relaxed);
            let now = Instant::now();
            if pace.is_some() && now < next {
                // The TX ring may still hold frames a wake-up did not send.
                self.socket.kick();
                // The sink's receive work shares this core: let it run.
                std::thread::yield_now();
                continue;
            }
            let room = (self.socket.transmit_room() as usize)
                .min(self.free.len())
                .min(burst);
            descs.clear();
            let stamp = pace.map(|_| Stamp {
                magic: STAMP_MAGIC,
                sent_ns: monotonic_ns(),
            });
            let len = self.frame_len as u32;
            descs.extend(self.free.drain(self.free.len() - room..).map(|addr| Desc {
                addr,
                len,
                options: 0,
            }));
            for d in &mut descs {
                self.fill(d, stamp)?;
            }
            let queued = self.socket.transmit(&descs);
            self.free
                .extend(descs[queued..].iter().map(|d| d.addr - d.addr % frame));
            if queued == 0 {
                // Waiting for completions: the ring may hold frames a
                // wake-up left; and the sink's receive work, which shares
                // this core, is what frees them.
                self.socket.kick();
                std::thread::yield_now();
            }
            if let Some((_, interval)) = pace {
                next += interval;
                // Fallen behind (descheduled): do not catch up in one burst.
                if now > next + Duration::from_millis(1) {
                    next = now;
                }
            }
        }
        Ok(())
    }

    /// Makes the frame of `desc` ready to go: stamped in its last 16
    /// bytes, and when sealing, the site frame copied in, stamped, and
    /// sealed (`desc` then points at the overlay frame).
    fn fill(&mut self, desc: &mut Desc, stamp: Option<Stamp>) -> Result<()> {
        let (buf, _) = self.umem.frame_mut(desc.addr);
        match &self.sealing {
            None => {
                if let Some(stamp) = stamp {
                    write_stamp(&mut buf[..self.frame_len], stamp);
                }
            }
            Some((site, sealer)) => {
                let end = HEADROOM + site.len();
                buf[HEADROOM..end].copy_from_slice(site);
                if let Some(stamp) = stamp {
                    write_stamp(&mut buf[..end], stamp);
                }
                let (start, len) = sealer
                    .seal(buf, site.len())
                    .map_err(|why| anyhow!("the tester could not seal a frame: {why:?}"))?;
                desc.addr += start as u64;
                desc.len = len as u32;
            }
        }
        Ok(())
    }
}

/// Writes `stamp` into the last 16 bytes of `frame` (every frame sent is
/// at least that long).
fn write_stamp(frame: &mut [u8], stamp: Stamp) {
    let at = frame.len() - size_of::<Stamp>();
    // SAFETY: the stamp's 16 bytes are `frame[at..]`, in bounds.
    unsafe {
        frame
            .as_mut_ptr()
            .add(at)
            .cast::<Stamp>()
            .write_unaligned(stamp)
    };
}

/// `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`, in ns.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// The (user, system) ns of `tids`, summed.
fn cpu_of(tids: &[i32]) -> (u64, u64) {
    tids.iter()
        .filter_map(|&t| thread_cpu_ns(t))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[derive(Default)]
struct Counters {
    instructions: Option<u64>,
    cycles: Option<u64>,
}

/// Counts instructions and cycles of `tids` for `seconds` with `perf stat`
/// where the machine has hardware counters; otherwise just waits.
fn perf_stat(tids: &[i32], seconds: f64) -> Counters {
    if tids.is_empty() || !perf_counts_instructions() {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        return Counters::default();
    }
    let list = tids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "instructions,cycles",
            "-t",
            &list,
            "--",
            "sleep",
        ])
        .arg(format!("{seconds}"))
        .output();
    let Ok(out) = out else {
        return Counters::default();
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let value = |event: &str| {
        text.lines()
            .find(|l| l.split(',').nth(2) == Some(event))
            .and_then(|l| l.split(',').next()?.parse().ok())
    };
    Counters {
        instructions: value("instructions"),
        cycles: value("cycles"),
    }
}

/// Whether `perf stat` can count instructions here (virtual machines often
/// hide the hardware counters).
pub fn perf_counts_instructions() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Command::new("perf")
            .args(["stat", "-x,", "-e", "instructions", "true"])
            .output()
            .is_ok_and(|o| {
                o.status.success()
                    && String::from_utf8_lossy(&o.stderr).lines().any(|l| {
                        l.split(',')
                            .next()
                            .is_some_and(|v| v.parse::<u64>().is_ok())
                    })
            })
    })
}

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
