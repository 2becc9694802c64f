//! detour's XDP programs.
//!
//! - `detour_wan`: overlay data from known peers to the workers' AF_XDP
//!   sockets; malformed overlay frames and strangers dropped, and strangers'
//!   datagrams to the control port (counted by source); the rest to the
//!   kernel.
//! - `detour_lan`: packets for remote sites to the workers' sockets; the
//!   rest (local traffic, ARP, ND) to the kernel.
//! - `detour_pass`: passes and counts everything; the baseline the
//!   classifier's cost is measured against.
//!
//! The decisions are `detour_common::classify`, shared with userspace and
//! tested there; this file binds them to the packet, the maps and the
//! counters. Built for `bpfel-unknown-none` by `dataplane/build.rs`
//! (aya-build) and embedded in the dataplane binary. Map layouts come from
//! `detour_common::maps`, the one definition both sides share.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{Array, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, XskMap};
use aya_ebpf::programs::XdpContext;
use detour_common::classify::{self, Destination, DropReason, Frame, WanVerdict};
use detour_common::maps::{
    Counter, MAX_CONTROL_STRANGERS, MAX_PEERS, MAX_QUEUES, MAX_REMOTE_PREFIXES, NoSocket,
    PacketCount, PeerKey, XdpConfig,
};

#[map(name = "CONFIG")]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "PEERS")]
static PEERS: HashMap<PeerKey, u16> = HashMap::with_max_entries(MAX_PEERS, 0);

#[map(name = "REMOTE_V4")]
static REMOTE_V4: LpmTrie<[u8; 4], u16> = LpmTrie::with_max_entries(MAX_REMOTE_PREFIXES, 0);

#[map(name = "REMOTE_V6")]
static REMOTE_V6: LpmTrie<[u8; 16], u16> = LpmTrie::with_max_entries(MAX_REMOTE_PREFIXES, 0);

#[map(name = "WAN_SOCKETS")]
static WAN_SOCKETS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "LAN_SOCKETS")]
static LAN_SOCKETS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map(name = "CONTROL_STRANGERS")]
static CONTROL_STRANGERS: LruPerCpuHashMap<PeerKey, u64> =
    LruPerCpuHashMap::with_max_entries(MAX_CONTROL_STRANGERS, 0);

#[map(name = "PASS_COUNT")]
static PASS_COUNT: PerCpuArray<PacketCount> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn detour_wan(ctx: XdpContext) -> u32 {
    let packet = Packet(&ctx);
    let config = config();
    let is_peer = |key: &PeerKey| PEERS.get_ptr(key).is_some();
    let verdict =
        classify::classify_wan(&packet, config.overlay_port, config.control_port, is_peer);
    match verdict {
        WanVerdict::Overlay => to_worker(
            &packet,
            &WAN_SOCKETS,
            config.no_socket(),
            [
                Counter::WanToWorker,
                Counter::WanNoSocketPass,
                Counter::WanNoSocketDrop,
            ],
        ),
        WanVerdict::Pass => count(&packet, Counter::WanPass, XDP_PASS),
        WanVerdict::Drop(DropReason::ControlStranger) => {
            if let Some(source) = classify::outer_source(&packet) {
                count_stranger(&source);
            }
            count(&packet, Counter::DropControlStranger, XDP_DROP)
        }
        WanVerdict::Drop(reason) => count(&packet, reason.into(), XDP_DROP),
    }
}

/// Counts one more datagram from `source` to the control port, on this CPU.
#[inline(always)]
fn count_stranger(source: &PeerKey) {
    match CONTROL_STRANGERS.get_ptr_mut(source) {
        // SAFETY: this CPU's value; an XDP program does not migrate mid-run.
        Some(n) => unsafe { *n += 1 },
        // A new source, or one the LRU let go: this CPU's count is 1 (an
        // update of a key another CPU has just added sets only this CPU's).
        None => {
            let _ = CONTROL_STRANGERS.insert(source, 1u64, 0);
        }
    }
}

#[xdp]
pub fn detour_lan(ctx: XdpContext) -> u32 {
    let packet = Packet(&ctx);
    let remote = match classify::lan_destination(&packet) {
        Some(Destination::V4(addr)) => REMOTE_V4.get(Key::new(32, addr)).is_some(),
        Some(Destination::V6(addr)) => REMOTE_V6.get(Key::new(128, addr)).is_some(),
        None => false,
    };
    if !remote {
        return count(&packet, Counter::LanPass, XDP_PASS);
    }
    to_worker(
        &packet,
        &LAN_SOCKETS,
        config().no_socket(),
        [
            Counter::LanToWorker,
            Counter::LanNoSocketPass,
            Counter::LanNoSocketDrop,
        ],
    )
}

/// Lets every frame through to the kernel and counts it.
#[xdp]
pub fn detour_pass(ctx: XdpContext) -> u32 {
    let packet = Packet(&ctx);
    add(&PASS_COUNT, 0, packet.len());
    XDP_PASS
}

/// The received frame, read through bounds checks the verifier can follow.
struct Packet<'a>(&'a XdpContext);

impl Frame for Packet<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let start = self.0.data() + offset;
        // Compared as packet pointers, which is what the verifier needs to
        // see to accept the read below.
        if start + N > self.0.data_end() {
            return None;
        }
        // SAFETY: `start..start + N` lies within the packet, checked above.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }
}

/// Redirects the frame to the socket of the queue it arrived on; without a
/// socket there, passes or drops it as configured. `counters` are: to a
/// worker, no socket and passed, no socket and dropped.
#[inline(always)]
fn to_worker(
    packet: &Packet,
    sockets: &XskMap,
    no_socket: NoSocket,
    counters: [Counter; 3],
) -> u32 {
    let fallback = match no_socket {
        NoSocket::Pass => XDP_PASS,
        NoSocket::Drop => XDP_DROP,
    };
    // The low bits of the flags are the action when the slot is empty.
    match sockets.redirect(packet.0.rx_queue_index(), u64::from(fallback)) {
        Ok(_) => count(packet, counters[0], XDP_REDIRECT),
        Err(_) if fallback == XDP_PASS => count(packet, counters[1], XDP_PASS),
        Err(_) => count(packet, counters[2], XDP_DROP),
    }
}

/// Counts the frame under `counter` and returns `action`.
#[inline(always)]
fn count(packet: &Packet, counter: Counter, action: u32) -> u32 {
    add(&COUNTERS, counter.index(), packet.len());
    action
}

#[inline(always)]
fn add(counters: &PerCpuArray<PacketCount>, index: u32, len: usize) {
    if let Some(slot) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer is this CPU's slot; an XDP program does not
        // migrate mid-run, so nothing else writes it meanwhile.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += len as u64;
        }
    }
}

/// The loader writes the configuration before it attaches the programs; an
/// unwritten slot reads as all zeroes (no overlay port, pass without socket).
#[inline(always)]
fn config() -> XdpConfig {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => XdpConfig {
            overlay_port: 0,
            flags: 0,
            control_port: 0,
        },
    }
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
