//! The harness's XDP programs (`detour_common::bench`), loaded from the
//! object the dataplane's build embeds: the sink and the two kernel-side
//! baseline forwarders (the generator is the dataplane's
//! `xdp::FrameGenerator`).

use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context as _, Result};
use aya::Ebpf;
use aya::maps::{Array, DevMap, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use detour_common::bench::{
    FORWARD_MAP, Forward, LATENCY_BUCKETS, LATENCY_MAP, REDIRECT_PROGRAM, SINK_COUNT_MAP,
    SINK_PROGRAM, TO_XSK_PROGRAM, TX_PORT_MAP, XSKS_MAP, bucket_range,
};
use detour_common::maps::PacketCount;
use detour_dataplane::xdp::BENCH_OBJECT;
pub use detour_dataplane::xdp::iface::ifindex;
use hdrhistogram::Histogram;

/// One program of the bench object, loaded with its own copy of the maps.
///
/// Attach and run it from a thread in the namespace of the interfaces it
/// names: interface names and indexes are resolved there. The attachment
/// goes when the value drops.
pub struct BenchXdp {
    ebpf: Ebpf,
    name: &'static str,
}

impl BenchXdp {
    fn load(name: &'static str) -> Result<BenchXdp> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).context("loading the bench XDP object")?;
        program(&mut ebpf, name)?
            .load()
            .with_context(|| format!("loading {name}"))?;
        Ok(BenchXdp { ebpf, name })
    }

    /// The sink, counting, timing and dropping what `iface` receives.
    pub fn sink(iface: &str) -> Result<BenchXdp> {
        let mut sink = Self::load(SINK_PROGRAM)?;
        sink.attach(iface)?;
        Ok(sink)
    }

    /// The in-kernel forwarder: what `input` receives goes out of `output`
    /// from `src_mac` to `dst_mac`.
    pub fn redirect(input: &str, output: &str, src: [u8; 6], dst: [u8; 6]) -> Result<BenchXdp> {
        let mut fwd = Self::load(REDIRECT_PROGRAM)?;
        Array::<_, Forward>::try_from(fwd.map_mut(FORWARD_MAP)?)?.set(
            0,
            Forward { dst, src },
            0,
        )?;
        DevMap::try_from(fwd.map_mut(TX_PORT_MAP)?)?.set(0, ifindex(output)?, None, 0)?;
        fwd.attach(input)?;
        Ok(fwd)
    }

    /// Every frame `iface` receives to the AF_XDP socket of its queue
    /// (register them with [`BenchXdp::add_socket`]).
    pub fn to_xsk(iface: &str) -> Result<BenchXdp> {
        let mut prog = Self::load(TO_XSK_PROGRAM)?;
        prog.attach(iface)?;
        Ok(prog)
    }

    pub fn add_socket(&mut self, queue: u32, socket: BorrowedFd<'_>) -> Result<()> {
        XskMap::try_from(self.map_mut(XSKS_MAP)?)?.set(queue, socket.as_fd(), 0)?;
        Ok(())
    }

    /// Native (driver) mode: veth runs XDP in its own NAPI poll.
    fn attach(&mut self, iface: &str) -> Result<()> {
        let name = self.name;
        program(&mut self.ebpf, name)?
            .attach(iface, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {iface}"))?;
        Ok(())
    }

    /// Frames and bytes the sink has counted, all CPUs.
    pub fn received(&self) -> Result<PacketCount> {
        let counts = PerCpuArray::<_, PacketCount>::try_from(self.map(SINK_COUNT_MAP)?)?;
        Ok(counts
            .get(&0, 0)?
            .iter()
            .fold(PacketCount::default(), |a, c| a.merge(*c)))
    }

    /// The stamped frames the sink has timed, as an HDR histogram of
    /// nanoseconds (each bucket recorded at its middle).
    pub fn latency(&self) -> Result<Histogram<u64>> {
        let buckets = PerCpuArray::<_, u64>::try_from(self.map(LATENCY_MAP)?)?;
        let mut histogram = Histogram::new(3)?;
        for b in 0..LATENCY_BUCKETS {
            let n: u64 = buckets.get(&b, 0)?.iter().sum();
            if n > 0 {
                let (low, width) = bucket_range(b);
                histogram.record_n(low + width / 2, n)?;
            }
        }
        Ok(histogram)
    }

    /// Forgets what the sink has timed so far.
    pub fn clear_latency(&mut self) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let mut buckets = PerCpuArray::<_, u64>::try_from(self.map_mut(LATENCY_MAP)?)?;
        for b in 0..LATENCY_BUCKETS {
            buckets.set(b, aya::maps::PerCpuValues::try_from(vec![0u64; cpus])?, 0)?;
        }
        Ok(())
    }

    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .with_context(|| format!("the bench object has no map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .with_context(|| format!("the bench object has no map {name}"))
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("the bench object has no program {name}"))?
        .try_into()?)
}
