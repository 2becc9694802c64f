//! detour's wire format: zero-copy views over packet buffers.
//!
//! Each header has a view, `Xxx<T: AsRef<[u8]>>`, built only through
//! `new_checked`, which validates every length the view relies on once; after
//! that no accessor can panic, whatever the bytes say. Setters are available
//! when `T: AsMut<[u8]>` as well. Each header also has a plain `XxxRepr` that
//! `parse`s from a view and `emit`s into one, for tests, tools and the control
//! plane. The byte-by-byte layout is documented in `docs/wire-format.md`.
//!
//! Everything here is `no_std` and allocation-free so that the XDP programs,
//! the workers, the control process and the tests share one definition.

pub mod checksum;
pub mod encap;
pub mod ethernet;
pub mod geneve;
pub mod ipv4;
pub mod ipv6;
pub mod overlay;
pub mod udp;

pub use encap::{EncapRepr, EncapTemplate, Underlay};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr, VlanTag};
pub use geneve::{
    DetourOption, DetourOptionRepr, GeneveHeader, GeneveOption, GeneveRepr, NodeId, Seal,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use overlay::OverlayFrame;
pub use udp::{UdpPacket, UdpRepr};

/// IP protocol numbers (IANA) that detour looks at.
pub mod ip_protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6's fragment extension header (RFC 8200, section 4.5).
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
}

/// Why a buffer is not a valid header of the kind asked for.
///
/// The variants are deliberately coarse: they name what an operator or a drop
/// counter needs to tell apart, not every field that can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer ends before the header, or before a length it declares.
    Truncated,
    /// The version field is not one this parser speaks.
    Version,
    /// A length field contradicts itself or the header's minimum size.
    Length,
    /// A GENEVE option's length runs past the option area.
    OptionLength,
    /// The packet is not of the protocol the caller expected (wrong EtherType,
    /// IP protocol or UDP port, or no detour option).
    Protocol,
    /// The destination buffer has no room for what is to be written.
    NoRoom,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated header",
            Error::Version => "unsupported version",
            Error::Length => "inconsistent length field",
            Error::OptionLength => "option length runs past the option area",
            Error::Protocol => "not the expected protocol",
            Error::NoRoom => "no room in the buffer",
        })
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;

/// Fixed-offset big-endian field access shared by the views.
///
/// The views call these only at offsets their `new_checked` proved to be in
/// bounds; the slice indexing below is then never out of range.
pub(crate) mod field {
    #[inline]
    pub fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    #[inline]
    pub fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    #[inline]
    pub fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(array(b, at))
    }

    #[inline]
    pub fn set_u16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_u64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&b[at..at + N]);
        out
    }
}
