//! The benchmark harness's XDP programs (`ebpf/src/bin/bench.rs`) and the
//! layouts of their maps: a generator, a sink that counts and times what
//! arrives, and the in-kernel and AF_XDP baseline forwarders. Nothing in the
//! dataplane uses them.
//!
//! Latency: the paced generator writes [`Stamp`] (a magic word and
//! `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns`) into the last 16
//! bytes of each frame as it sends it; the sink reads the last 16 bytes of
//! what arrives (every path under test keeps the payload at the end,
//! whatever headers it adds or removes) and counts the difference into a
//! log-linear histogram ([`latency_bucket`]) in the kernel.

/// Sends the frame given to `BPF_PROG_RUN` with live frames (`XDP_TX`).
pub const GENERATE_PROGRAM: &str = "bench_generate";
/// Counts every frame into [`SINK_COUNT_MAP`], times stamped ones into
/// [`LATENCY_MAP`], and drops them.
pub const SINK_PROGRAM: &str = "bench_sink";
/// The in-kernel forwarder: rewrites the Ethernet addresses
/// ([`FORWARD_MAP`]) and redirects to the device in [`TX_PORT_MAP`].
pub const REDIRECT_PROGRAM: &str = "bench_redirect";
/// Hands every frame to the AF_XDP socket of its receive queue
/// ([`XSKS_MAP`]), for the raw AF_XDP forwarder.
pub const TO_XSK_PROGRAM: &str = "bench_to_xsk";

/// `PerCpuArray<PacketCount>`, one slot: what the sink received.
pub const SINK_COUNT_MAP: &str = "SINK_COUNT";
/// `PerCpuArray<u64>`, [`LATENCY_BUCKETS`] slots: stamped frames by latency.
pub const LATENCY_MAP: &str = "LATENCY";
/// `Array<Forward>`, one slot: the redirect forwarder's Ethernet addresses.
pub const FORWARD_MAP: &str = "FORWARD";
/// `DevMap`, one slot: the redirect forwarder's output device.
pub const TX_PORT_MAP: &str = "TX_PORT";
/// `XskMap`, indexed by receive queue.
pub const XSKS_MAP: &str = "XSKS";
/// Slots in [`XSKS_MAP`].
pub const MAX_XSKS: u32 = 64;

/// The 16 bytes the paced generator writes: [`STAMP_MAGIC`], then the
/// send time.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub magic: u64,
    pub sent_ns: u64,
}

/// Tells a stamp from payload bytes that happen to lie at its offset.
pub const STAMP_MAGIC: u64 = 0x6465_746f_7572_7473; // "detourts"
/// The largest frame the programs look for a stamp in (the verifier needs a
/// bound on the offset).
pub const MAX_STAMPED_FRAME: usize = 4096;

/// The redirect forwarder's rewrite: destination, then source address.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forward {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// Sub-buckets per power of two: latencies are binned to within 1/16
/// (6.25 %), as an HDR histogram with one significant hex digit.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets up to 2^40 ns (18 minutes); anything longer lands in the last.
pub const LATENCY_BUCKETS: u32 = (40 - SUB_BITS + 1) * SUB as u32;

/// The bucket of a latency of `ns` nanoseconds: exact below 16 ns, then 16
/// buckets per power of two. Branches only, no loop: the verifier's taste.
#[inline(always)]
pub fn latency_bucket(ns: u64) -> u32 {
    if ns < SUB {
        return ns as u32;
    }
    let e = floor_log2(ns);
    let sub = (ns >> (e - SUB_BITS)) & (SUB - 1);
    let bucket = (e - SUB_BITS + 1) as u64 * SUB + sub;
    bucket.min(u64::from(LATENCY_BUCKETS) - 1) as u32
}

/// The latencies bucket `b` holds: `low..low + width` nanoseconds.
pub fn bucket_range(b: u32) -> (u64, u64) {
    let b = u64::from(b);
    if b < SUB {
        return (b, 1);
    }
    let e = b / SUB + u64::from(SUB_BITS) - 1;
    let sub = b % SUB;
    let width = 1 << (e - u64::from(SUB_BITS));
    ((SUB + sub) * width, width)
}

#[inline(always)]
fn floor_log2(mut v: u64) -> u32 {
    let mut e = 0;
    for shift in [32, 16, 8, 4, 2, 1] {
        if v >> shift != 0 {
            v >>= shift;
            e += shift;
        }
    }
    e
}

// SAFETY: `repr(C)`, no padding (sizes asserted below): any bits are valid.
#[cfg(feature = "user")]
mod pod {
    use super::Forward;
    unsafe impl aya::Pod for Forward {}
}

const _: () = assert!(core::mem::size_of::<Stamp>() == 16);
const _: () = assert!(core::mem::size_of::<Forward>() == 12);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_latency_lies_in_its_buckets_range() {
        let mut samples = vec![0, 1, 15, 16, 17, 31, 32, 33, 1000, 1023, 1024, 123_456_789];
        samples.extend((0..40).map(|e| 1u64 << e));
        samples.extend((1..40).map(|e| (1u64 << e) - 1));
        for ns in samples {
            let (low, width) = bucket_range(latency_bucket(ns));
            assert!(low <= ns && ns < low + width, "{ns}: {low}+{width}");
            assert!(width * 16 <= low.max(16), "{ns}: bucket too wide");
        }
    }

    #[test]
    fn buckets_are_ordered_and_contiguous() {
        let mut next = 0;
        for b in 0..LATENCY_BUCKETS {
            let (low, width) = bucket_range(b);
            assert_eq!(low, next, "bucket {b}");
            next = low + width;
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }
}
