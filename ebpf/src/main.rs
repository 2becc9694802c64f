//! detour's XDP programs.
//!
//! Built for `bpfel-unknown-none` by `dataplane/build.rs` (aya-build) and
//! embedded in the dataplane binary. Map layouts come from
//! `detour_common::maps`, the one definition both sides share.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext,
};
use detour_common::maps::PacketCount;

/// Per-CPU count of what `detour_pass` saw; one slot.
#[map(name = "PASS_COUNT")]
static PASS_COUNT: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(1, 0);

/// Lets every frame through to the kernel and counts it: the smallest
/// program that proves the toolchain, the loader and the map contract.
#[xdp]
pub fn detour_pass(ctx: XdpContext) -> u32 {
    if let Some(count) = PASS_COUNT.get_ptr_mut(0) {
        let len = (ctx.data_end() - ctx.data()) as u64;
        // SAFETY: the pointer is the map slot of this CPU; XDP programs do
        // not migrate mid-run, so nothing else writes it meanwhile.
        unsafe {
            (*count).packets += 1;
            (*count).bytes += len;
        }
    }
    xdp_action::XDP_PASS
}

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible
/// licence; the project's licence (MIT OR Apache-2.0) is one, declared as the
/// kernel spells it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable panic path, so this
    // is never entered at run time.
    loop {}
}
