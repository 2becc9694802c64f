//! The XDP classifier's decisions, as pure functions over a frame.
//!
//! The XDP programs (`ebpf/`) call these on the packet in the NIC's buffer;
//! the tests call them on byte slices and compare, frame by frame, with what
//! the kernel program did (`dataplane/tests/xdp_classifier.rs`). One
//! definition, two places it runs: the decision logic is tested like any
//! other Rust, and the kernel test proves the verifier-accepted build of the
//! same code agrees with it.
//!
//! The rule for the WAN side: a frame is dropped only when it provably is
//! addressed to the overlay (UDP to the overlay port, readable as such) and
//! is malformed or comes from an unknown peer, or when it provably is UDP to
//! detour's control port from an address that is no peer's (strangers reach
//! no userspace code). Anything else is the kernel's, which validates its
//! own traffic: a frame cut off inside its IP header, a non-first IPv4
//! fragment, an IPv6 packet with extension headers (but a fragment header
//! in front of UDP to the control port, which is read), another protocol or
//! port.
//!
//! Written for the eBPF verifier as much as for people: every read goes
//! through [`Frame::bytes`], which checks its bounds; offsets are bounded
//! (at most a VLAN tag and a 60-byte IPv4 header); there are no loops.

use crate::maps::PeerKey;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::geneve::{
    DETOUR_OPTION_CLASS, DETOUR_OPTION_DATA_WORDS, DETOUR_OPTION_LEN, DETOUR_OPTION_TYPE,
    HEADER_LEN as GENEVE_LEN,
};
use crate::wire::{ip_protocol, ipv4, ipv6, udp};

/// Read access to a received frame; every read is bounds-checked.
pub trait Frame {
    /// The frame's length in bytes.
    fn len(&self) -> usize;

    /// `N` bytes at `offset`, or `None` when the frame ends before them.
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Frame for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
}

/// Why the WAN program dropped a frame addressed to the overlay port (or,
/// for [`DropReason::ControlStranger`], the control port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame ends inside the overlay headers, or before the length its
    /// IP header declares.
    Truncated,
    /// An IP or UDP length field is shorter than the headers it covers, or
    /// the UDP length runs past the IP packet.
    Length,
    /// An IPv4 fragment (the first; later ones carry no port and go to the
    /// kernel). Overlay senders set DF and never fragment.
    Fragment,
    /// A GENEVE version other than 0.
    GeneveVersion,
    /// An option area other than exactly detour's one option, or an option
    /// whose class, type or length is not detour's.
    GeneveOptions,
    /// A GENEVE OAM frame, or an inner protocol other than IPv4 or IPv6.
    GenevePayload,
    /// The detour option's hop limit is zero: the frame has travelled as far
    /// as it may.
    HopLimit,
    /// The outer source address is not a peer's.
    UnknownPeer,
    /// UDP to the control port (its first fragment included) from an
    /// address that is not a peer's.
    ControlStranger,
}

/// What the WAN program does with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WanVerdict {
    /// Well-formed overlay data from a known peer: to a worker.
    Overlay,
    /// Not overlay data: to the kernel.
    Pass,
    /// Addressed to the overlay port but malformed or from a stranger.
    Drop(DropReason),
}

/// Classifies a frame received on the WAN interface.
///
/// `overlay_port` is the UDP port overlay data arrives on; `control_port`
/// the one control messages do, 0 while no control process has said (then
/// nothing to it is filtered); `is_peer` answers whether an outer source
/// address belongs to a peer (the XDP program asks its allow-list map). The
/// peer is checked before the GENEVE header, so that frames from strangers
/// cost the least.
#[inline(always)]
pub fn classify_wan<F: Frame + ?Sized>(
    frame: &F,
    overlay_port: u16,
    control_port: u16,
    is_peer: impl Fn(&PeerKey) -> bool,
) -> WanVerdict {
    let Some((ip_offset, ethertype)) = ip_header(frame) else {
        return WanVerdict::Pass;
    };
    let outer = match ethertype {
        EtherType::IPV4 => outer_ipv4(frame, ip_offset, overlay_port),
        EtherType::IPV6 => outer_ipv6(frame, ip_offset, overlay_port),
        _ => return WanVerdict::Pass,
    };
    let outer = match outer {
        Outer::NotOverlay => {
            return match control_source(frame, ip_offset, ethertype, control_port) {
                Some(Sender::Peer(src)) if is_peer(&src) => WanVerdict::Pass,
                Some(_) => WanVerdict::Drop(DropReason::ControlStranger),
                None => WanVerdict::Pass,
            };
        }
        Outer::Malformed(reason) => return WanVerdict::Drop(reason),
        Outer::Udp(outer) => outer,
    };
    if !is_peer(&outer.src) {
        return WanVerdict::Drop(DropReason::UnknownPeer);
    }
    match detour_geneve(frame, outer.udp_offset, outer.ip_end) {
        Ok(()) => WanVerdict::Overlay,
        Err(reason) => WanVerdict::Drop(reason),
    }
}

/// Who sent a datagram to the control port.
enum Sender {
    /// Its source address, to look up.
    Peer(PeerKey),
    /// An IPv6 packet with an IPv4-mapped source: no peer's, whatever the
    /// allow-list holds (IPv4 peers are keyed as such).
    Forged,
}

/// The sender of a datagram to UDP port `port` (0: none), if the frame
/// provably is one: unfragmented or the first fragment (whose reassembly
/// the kernel would hand to the control process), behind an IPv4 header
/// with or without options or an IPv6 header with or without one fragment
/// header. The lengths are not checked: from a peer it is the kernel's to
/// validate, from anyone else it is dropped either way.
#[inline(always)]
fn control_source<F: Frame + ?Sized>(
    frame: &F,
    ip: usize,
    ethertype: EtherType,
    port: u16,
) -> Option<Sender> {
    if port == 0 {
        return None;
    }
    match ethertype {
        EtherType::IPV4 => {
            let h = frame.bytes::<{ ipv4::HEADER_LEN }>(ip)?;
            let header_len = usize::from(h[0] & 0x0f) * 4;
            const OFFSET_MASK: u16 = 0x1fff;
            let first = u16::from_be_bytes([h[6], h[7]]) & OFFSET_MASK == 0;
            let to_port = h[0] >> 4 == 4
                && header_len >= ipv4::HEADER_LEN
                && h[9] == ip_protocol::UDP
                && first
                && be16(frame, ip + header_len + 2) == Some(port);
            to_port.then(|| Sender::Peer(PeerKey::v4([h[12], h[13], h[14], h[15]])))
        }
        EtherType::IPV6 => {
            let h = frame.bytes::<8>(ip)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let mut udp = ip + ipv6::HEADER_LEN;
            match h[6] {
                ip_protocol::UDP => {}
                ip_protocol::IPV6_FRAGMENT => {
                    // Next header, reserved, offset and flags, id.
                    let f = frame.bytes::<4>(udp)?;
                    let offset = u16::from_be_bytes([f[2], f[3]]) >> 3;
                    if f[0] != ip_protocol::UDP || offset != 0 {
                        return None;
                    }
                    udp += 8;
                }
                _ => return None,
            }
            if be16(frame, udp + 2) != Some(port) {
                return None;
            }
            let src = PeerKey::v6(frame.bytes::<16>(ip + 8)?);
            Some(if src.is_ipv4_mapped() {
                Sender::Forged
            } else {
                Sender::Peer(src)
            })
        }
        _ => None,
    }
}

/// The source address of an IPv4 or IPv6 frame, as the allow-list keys
/// it: for counting what [`DropReason::ControlStranger`] dropped by sender.
/// `None` for an IPv6 source that is IPv4-mapped, which would read as that
/// IPv4 host (a peer, say) where it is a forgery.
#[inline(always)]
pub fn outer_source<F: Frame + ?Sized>(frame: &F) -> Option<PeerKey> {
    let (ip, ethertype) = ip_header(frame)?;
    match ethertype {
        EtherType::IPV4 => frame.bytes::<4>(ip + 12).map(PeerKey::v4),
        EtherType::IPV6 => frame
            .bytes::<16>(ip + 8)
            .map(PeerKey::v6)
            .filter(|key| !key.is_ipv4_mapped()),
        _ => None,
    }
}

/// A LAN packet's IP destination, as the remote-prefix tries key it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// The IP destination of a frame received on the LAN interface, if it is an
/// IPv4 or IPv6 packet whose header is whole; `None` for everything else
/// (ARP, truncated or malformed packets), which the kernel handles.
#[inline(always)]
pub fn lan_destination<F: Frame + ?Sized>(frame: &F) -> Option<Destination> {
    let (ip, ethertype) = ip_header(frame)?;
    let first = frame.bytes::<1>(ip)?[0];
    match ethertype {
        EtherType::IPV4 => {
            let header_len = usize::from(first & 0x0f) * 4;
            let total_len = usize::from(be16(frame, ip + 2)?);
            let well_formed = first >> 4 == 4
                && header_len >= ipv4::HEADER_LEN
                && total_len >= header_len
                && ip + total_len <= frame.len();
            if !well_formed {
                return None;
            }
            Some(Destination::V4(frame.bytes(ip + 16)?))
        }
        EtherType::IPV6 => {
            let payload_len = usize::from(be16(frame, ip + 4)?);
            if first >> 4 != 6 || ip + ipv6::HEADER_LEN + payload_len > frame.len() {
                return None;
            }
            Some(Destination::V6(frame.bytes(ip + 24)?))
        }
        _ => None,
    }
}

/// The offset of the IP header behind the Ethernet header and at most one
/// 802.1Q tag, and the EtherType that names it.
#[inline(always)]
fn ip_header<F: Frame + ?Sized>(frame: &F) -> Option<(usize, EtherType)> {
    let ethertype = EtherType(be16(frame, 12)?);
    if ethertype == EtherType::VLAN {
        let inner = EtherType(be16(frame, ethernet::TAGGED_HEADER_LEN - 2)?);
        Some((ethernet::TAGGED_HEADER_LEN, inner))
    } else {
        Some((ethernet::HEADER_LEN, ethertype))
    }
}

/// The outer IP and UDP headers of a candidate overlay frame.
enum Outer {
    /// Not UDP to the overlay port, or not readable as such.
    NotOverlay,
    /// UDP to the overlay port, with headers that lie.
    Malformed(DropReason),
    Udp(OuterUdp),
}

struct OuterUdp {
    src: PeerKey,
    udp_offset: usize,
    /// Where the IP packet ends, as its header says (within the frame).
    ip_end: usize,
}

#[inline(always)]
fn outer_ipv4<F: Frame + ?Sized>(frame: &F, ip: usize, port: u16) -> Outer {
    // Fixed part of the header: version/IHL, total length, fragment field,
    // protocol, addresses.
    let Some(h) = frame.bytes::<{ ipv4::HEADER_LEN }>(ip) else {
        return Outer::NotOverlay;
    };
    let header_len = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || header_len < ipv4::HEADER_LEN || h[9] != ip_protocol::UDP {
        return Outer::NotOverlay;
    }
    let fragment = u16::from_be_bytes([h[6], h[7]]);
    const MORE_FRAGMENTS: u16 = 0x2000;
    const OFFSET_MASK: u16 = 0x1fff;
    if fragment & OFFSET_MASK != 0 {
        // A later fragment has no UDP header to tell its port by.
        return Outer::NotOverlay;
    }
    let udp_offset = ip + header_len;
    if be16(frame, udp_offset + 2) != Some(port) {
        return Outer::NotOverlay;
    }
    if fragment & MORE_FRAGMENTS != 0 {
        return Outer::Malformed(DropReason::Fragment);
    }
    let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if total_len < header_len + udp::HEADER_LEN {
        return Outer::Malformed(DropReason::Length);
    }
    let ip_end = ip + total_len;
    if ip_end > frame.len() {
        return Outer::Malformed(DropReason::Truncated);
    }
    Outer::Udp(OuterUdp {
        src: PeerKey::v4([h[12], h[13], h[14], h[15]]),
        udp_offset,
        ip_end,
    })
}

#[inline(always)]
fn outer_ipv6<F: Frame + ?Sized>(frame: &F, ip: usize, port: u16) -> Outer {
    // Version, payload length, next header; the source address follows.
    let Some(h) = frame.bytes::<8>(ip) else {
        return Outer::NotOverlay;
    };
    // An extension header (never sent by an overlay sender) hides the UDP
    // header; such a packet is the kernel's.
    if h[0] >> 4 != 6 || h[6] != ip_protocol::UDP {
        return Outer::NotOverlay;
    }
    let udp_offset = ip + ipv6::HEADER_LEN;
    if be16(frame, udp_offset + 2) != Some(port) {
        return Outer::NotOverlay;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if payload_len < udp::HEADER_LEN {
        return Outer::Malformed(DropReason::Length);
    }
    let ip_end = udp_offset + payload_len;
    if ip_end > frame.len() {
        return Outer::Malformed(DropReason::Truncated);
    }
    let Some(src) = frame.bytes::<16>(ip + 8) else {
        return Outer::Malformed(DropReason::Truncated);
    };
    // The allow-list keys IPv4 peers as IPv4-mapped IPv6 addresses; an IPv6
    // packet claiming such a source must not pass as the IPv4 peer.
    if PeerKey::v6(src).is_ipv4_mapped() {
        return Outer::Malformed(DropReason::UnknownPeer);
    }
    Outer::Udp(OuterUdp {
        src: PeerKey::v6(src),
        udp_offset,
        ip_end,
    })
}

/// Checks the UDP length, the GENEVE header and the detour option that
/// follow the UDP header at `udp_offset`, in an IP packet ending at `ip_end`.
#[inline(always)]
fn detour_geneve<F: Frame + ?Sized>(
    frame: &F,
    udp_offset: usize,
    ip_end: usize,
) -> Result<(), DropReason> {
    let udp_len = usize::from(be16(frame, udp_offset + 4).ok_or(DropReason::Truncated)?);
    if udp_len < udp::HEADER_LEN || udp_offset + udp_len > ip_end {
        return Err(DropReason::Length);
    }
    let udp_end = udp_offset + udp_len;
    let geneve = udp_offset + udp::HEADER_LEN;
    // Base header and option together: 20 bytes, read at once.
    const LEN: usize = GENEVE_LEN + DETOUR_OPTION_LEN;
    if geneve + GENEVE_LEN > udp_end {
        return Err(DropReason::Truncated);
    }
    let g = frame
        .bytes::<GENEVE_LEN>(geneve)
        .ok_or(DropReason::Truncated)?;
    if g[0] >> 6 != 0 {
        return Err(DropReason::GeneveVersion);
    }
    if usize::from(g[0] & 0x3f) * 4 != DETOUR_OPTION_LEN {
        return Err(DropReason::GeneveOptions);
    }
    if geneve + LEN > udp_end {
        return Err(DropReason::Truncated);
    }
    let inner = EtherType(u16::from_be_bytes([g[2], g[3]]));
    let oam = g[1] & 0x80 != 0;
    if oam || !(inner == EtherType::IPV4 || inner == EtherType::IPV6) {
        return Err(DropReason::GenevePayload);
    }
    let o = frame
        .bytes::<DETOUR_OPTION_LEN>(geneve + GENEVE_LEN)
        .ok_or(DropReason::Truncated)?;
    let ours = u16::from_be_bytes([o[0], o[1]]) == DETOUR_OPTION_CLASS
        && o[2] == DETOUR_OPTION_TYPE
        && o[3] & 0x1f == DETOUR_OPTION_DATA_WORDS;
    if !ours {
        return Err(DropReason::GeneveOptions);
    }
    // Option data: source node, destination node, hop limit, flags.
    if o[8] == 0 {
        return Err(DropReason::HopLimit);
    }
    Ok(())
}

#[inline(always)]
fn be16<F: Frame + ?Sized>(frame: &F, offset: usize) -> Option<u16> {
    frame.bytes::<2>(offset).map(u16::from_be_bytes)
}
