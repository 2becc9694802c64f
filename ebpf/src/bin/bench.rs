//! The benchmark harness's XDP programs (`benches/`), built into an object of
//! their own so that the dataplane's never carries them. Their contract with
//! userspace is `detour_common::bench`.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_TX};
use aya_ebpf::helpers::bpf_ktime_get_ns;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, DevMap, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use detour_common::bench::{
    Forward, LATENCY_BUCKETS, MAX_STAMPED_FRAME, MAX_XSKS, STAMP_MAGIC, Stamp, latency_bucket,
};
use detour_common::maps::PacketCount;

#[map(name = "SINK_COUNT")]
static SINK_COUNT: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "LATENCY")]
static LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(LATENCY_BUCKETS, 0);

#[map(name = "FORWARD")]
static FORWARD: Array<Forward> = Array::with_max_entries(1, 0);

#[map(name = "TX_PORT")]
static TX_PORT: DevMap = DevMap::with_max_entries(1, 0);

#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(MAX_XSKS, 0);

/// Run by `BPF_PROG_RUN` with live frames: the kernel transmits what this
/// returns `XDP_TX` for out of the device named in the context.
#[xdp]
pub fn bench_generate(_ctx: XdpContext) -> u32 {
    XDP_TX
}

#[xdp]
pub fn bench_sink(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    if let Some(count) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; an XDP program does not migrate mid-run.
        unsafe {
            (*count).packets += 1;
            (*count).bytes += len;
        }
    }
    if let Some(stamp) = stamp_in(&ctx) {
        // SAFETY: `stamp_in` checked that the 16 bytes lie in the frame;
        // the helper has no preconditions.
        let (stamp, now) = unsafe { (stamp.read_unaligned(), bpf_ktime_get_ns()) };
        if stamp.magic == STAMP_MAGIC {
            let latency = now.saturating_sub(stamp.sent_ns);
            if let Some(n) = LATENCY.get_ptr_mut(latency_bucket(latency)) {
                // SAFETY: as above, this CPU's slot.
                unsafe { *n += 1 };
            }
        }
    }
    XDP_DROP
}

#[xdp]
pub fn bench_redirect(ctx: XdpContext) -> u32 {
    let Some(forward) = FORWARD.get(0) else {
        return XDP_ABORTED;
    };
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return XDP_DROP;
    }
    // SAFETY: the first 12 bytes lie in the frame, checked above.
    unsafe { (start as *mut Forward).write_unaligned(*forward) };
    TX_PORT.redirect(0, 0).unwrap_or(XDP_ABORTED)
}

#[xdp]
pub fn bench_to_xsk(ctx: XdpContext) -> u32 {
    XSKS.redirect(ctx.rx_queue_index(), u64::from(XDP_DROP))
        .unwrap_or(XDP_DROP)
}

/// The stamp's place in this frame: its last 16 bytes.
#[inline(always)]
fn stamp_in(ctx: &XdpContext) -> Option<*mut Stamp> {
    const SIZE: usize = core::mem::size_of::<Stamp>();
    let len = ctx.data_end() - ctx.data();
    if !(SIZE..=MAX_STAMPED_FRAME).contains(&len) {
        return None;
    }
    // Masked so that the verifier sees the offset's bound.
    let start = ctx.data() + ((len - SIZE) & (MAX_STAMPED_FRAME - 1));
    if start + SIZE > ctx.data_end() {
        return None;
    }
    Some(start as *mut Stamp)
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
