//! The layouts of the maps shared by the XDP programs and userspace.
//!
//! A map's name and its key and value types are the whole contract between
//! the kernel side and the dataplane (Katran's and Cilium's rule): they are
//! defined here once, `#[repr(C)]`, with no padding, and both sides use them.

/// Packets and bytes seen, kept per CPU by a program and summed by userspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketCount {
    /// Adds another CPU's count (wrapping, as the kernel's counters do).
    pub fn merge(self, other: PacketCount) -> PacketCount {
        PacketCount {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

// SAFETY: `repr(C)`, two u64 fields, no padding: every bit pattern is valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketCount {}

/// The pass-through program (`detour_pass`): lets every frame through to the
/// kernel and counts it. A per-CPU array with one slot, [`PacketCount`].
pub const PASS_COUNT_MAP: &str = "PASS_COUNT";
/// The name of the pass-through XDP program in the object.
pub const PASS_PROGRAM: &str = "detour_pass";
