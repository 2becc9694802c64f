//! The three forwarding paths, rewriting a frame in place in its buffer.
//!
//! A worker hands each received frame to [`encap`] (from the LAN) or
//! [`from_wan`] (relay or decap), with the whole UMEM frame as the buffer:
//! the packet lies at `start..start + len`, and the bytes before `start` are
//! headroom the encapsulation grows into. The result says where the
//! rewritten frame now lies and which interface sends it, or why it is
//! dropped. Nothing here allocates, locks or blocks; every header is read
//! through the checked views of `detour_common::wire`, so no frame, however
//! malformed, can make it panic.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Range;

use detour_common::wire::EncapTemplate;
use detour_common::wire::checksum;
use detour_common::wire::encap::{IP_OVERHEAD_V4, IP_OVERHEAD_V6, Outer};
use detour_common::wire::geneve::{
    DETOUR_GENEVE_LEN, DETOUR_OPTION_LEN, HEADER_LEN as GENEVE_LEN, Seal, associated_data, flags,
};
use detour_common::wire::{
    EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, MacAddr, NodeId, OverlayFrame, UdpPacket,
    ethernet, ipv4, ipv6,
};

use crate::crypto::aead::AEAD_TAG_LEN;
use crate::crypto::{KeyTable, Opened};
use crate::ecn;
use crate::lpm::IpKey;
use crate::table::RouteTable;

/// Where the outer addresses lie in an encapsulation template: behind the
/// 14-byte Ethernet header, at offset 12 of an IPv4 header, 8 of an IPv6 one.
const ADDRS_V4: Range<usize> = 14 + 12..14 + 20;
const ADDRS_V6: Range<usize> = 14 + 8..14 + 40;

/// Which interface a rewritten frame leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Egress {
    Wan,
    Lan,
}

/// A rewritten frame: at `buf[start..start + len]`, to send on `egress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub egress: Egress,
    pub start: usize,
    pub len: usize,
}

/// Why a worker discarded a frame (named so as not to shadow the `Drop`
/// trait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Not a whole IPv4 or IPv6 packet (LAN), or not a valid overlay frame
    /// for our port and VNI (WAN).
    Malformed,
    /// LAN: no remote prefix covers the destination.
    NoRoute,
    /// The destination node has no route (no live path).
    Unreachable,
    /// The MAC address of the underlay next hop toward node `via` is not
    /// resolved yet. The frame is left as it was: the worker may hold it
    /// and forward it again once the table has the MAC.
    Unresolved { via: NodeId },
    /// Decap: the LAN host's MAC address (or that of the LAN router in
    /// front of it) is not known. Counted as unresolved, like
    /// [`Discard::Unresolved`]; kept apart so that the worker can ask for
    /// the host to be resolved and hold the frame: the inner IP packet,
    /// opened and with its ECN field combined, lies at `inner_at` in the
    /// buffer, unchanged otherwise ([`host_address`]; [`deliver`] takes it
    /// up again; a UMEM frame is at most 4 KiB).
    ///
    /// A position rather than the address keeps this type 4 bytes, and the
    /// `Result` every frame returns as it was; and the position is one
    /// decap holds in a register anyway, so that the forwarding paths
    /// compile to the same instructions as without it (an offset from
    /// `start` instead took one more register spill in every `from_wan`).
    UnresolvedHost { inner_at: u16 },
    /// The overlay hop limit would reach zero at this relay.
    HopLimit,
    /// A relay was handed a frame another relay already forwarded (its
    /// RELAYED flag set): one hop means one hop, so two nodes with
    /// contradictory routes drop a frame rather than bounce it.
    AlreadyRelayed,
    /// Decap: the outer header says congestion was experienced (CE), but
    /// the inner packet is not ECN-capable: RFC 6040 (section 4.2) drops it,
    /// as the only way left to signal the congestion.
    CeNotEct,
    /// The inner packet's TTL or hop limit is spent.
    TtlExpired,
    /// After encapsulation the packet would exceed the WAN MTU; `mtu` is the
    /// largest inner packet that fits (for the ICMP answer).
    TooBig { mtu: u16 },
    /// Not enough headroom before the packet for the outer headers.
    NoHeadroom,
    /// A frame for this node's LAN, but the dataplane has no LAN interface.
    NoLan,
    /// Encap: no session key toward the destination yet (or its counters
    /// are spent). Decap: a frame that is not encrypted, where encryption
    /// is on.
    NoKey,
    /// Decap: a key id the sender has no key under here (or any key id,
    /// with encryption off).
    UnknownKey,
    /// Decap: a key of the sender that was retired.
    ExpiredKey,
    /// Decap: a counter already accepted, or older than the window.
    Replayed,
    /// Decap: the tag does not match: forged, damaged or under another key.
    AuthFailed,
    /// Decap over IPv6: the UDP checksum is wrong, or zero on a frame in
    /// the clear (docs/wire-format.md, "UDP checksums").
    BadChecksum,
}

/// Encapsulates a frame received on the LAN toward the node serving its
/// destination.
pub fn encap(
    table: &RouteTable,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<Forward, Discard> {
    let end = start.checked_add(len).ok_or(Discard::Malformed)?;
    let frame = buf.get(start..end).ok_or(Discard::Malformed)?;
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Discard::Malformed)?;
    let ip_start = start + eth.header_len();
    let (dst, inner_len) = inner_destination(eth.ethertype(), eth.payload())?;
    let node = table.node_for(dst).ok_or(Discard::NoRoute)?;
    let route = table.route(node).ok_or(Discard::Unreachable)?;
    let template = route
        .encap
        .as_ref()
        .ok_or(Discard::Unresolved { via: route.via })?;
    // A router checks the TTL before the size (RFC 1812, 5.3.1 and 5.2.7):
    // a packet whose TTL is spent is "time exceeded", whatever its size.
    let inner = &buf[ip_start..ip_start + inner_len];
    if ttl_spent(inner) {
        return Err(Discard::TtlExpired);
    }

    let keys = table.keys();
    let tag_len = if keys.is_some() { AEAD_TAG_LEN } else { 0 };
    let overhead = tag_len
        + if template.is_ipv6() {
            IP_OVERHEAD_V6
        } else {
            IP_OVERHEAD_V4
        };
    let mtu = usize::from(table.links().wan_mtu);
    if inner_len + overhead > mtu {
        return Err(Discard::TooBig {
            mtu: mtu.saturating_sub(overhead) as u16,
        });
    }
    let inner = &mut buf[ip_start..ip_start + inner_len];
    let src_port = flow_port(inner);
    decrement_ttl(inner)?;
    let new_start = match keys {
        None => template.write(buf, ip_start, inner_len, src_port),
        Some(keys) => {
            let tx = keys.tx(node).ok_or(Discard::NoKey)?;
            let seal = Seal {
                key_id: tx.id,
                counter: tx.next_counter().ok_or(Discard::NoKey)?,
            };
            let sealed = Sealed {
                template,
                inner_start: ip_start,
                inner_len,
                seal,
            };
            sealed.write(buf, src_port, tx.key())
        }
    }
    .map_err(|_| Discard::NoHeadroom)?;
    Ok(Forward {
        egress: Egress::Wan,
        start: new_start,
        len: ip_start + inner_len + tag_len - new_start,
    })
}

/// An inner packet to encapsulate and seal under one counter of a key.
struct Sealed<'a> {
    template: &'a EncapTemplate,
    inner_start: usize,
    inner_len: usize,
    seal: Seal,
}

impl Sealed<'_> {
    /// Writes the outer headers, encrypts the inner packet in place and
    /// puts the tag behind it; the frame's new start. [`NoRoom`] when the
    /// buffer has no room for headers or tag.
    ///
    /// [`NoRoom`]: detour_common::wire::Error::NoRoom
    #[inline(always)]
    fn write(
        &self,
        buf: &mut [u8],
        src_port: u16,
        key: &crate::crypto::DataKey,
    ) -> detour_common::wire::Result<usize> {
        let payload_len = self.inner_len + AEAD_TAG_LEN;
        let end = self.inner_start + payload_len;
        let start =
            self.template
                .write_headers(buf, self.inner_start, payload_len, src_port, self.seal)?;
        let ad = associated_data(geneve_header(buf, start + self.template.geneve_at()));
        let (inner, tag) = buf[self.inner_start..end].split_at_mut(self.inner_len);
        tag.copy_from_slice(&key.seal(self.seal.counter, &ad, inner));
        self.template.finish(buf, start, end);
        Ok(start)
    }
}

/// The GENEVE header and detour option at `buf[at..]`, which a parse or a
/// write just put in bounds.
#[inline(always)]
fn geneve_header(buf: &[u8], at: usize) -> &[u8; DETOUR_GENEVE_LEN] {
    buf[at..at + DETOUR_GENEVE_LEN]
        .try_into()
        .expect("a whole header")
}

/// Forwards an overlay frame received on the WAN: decapsulated onto the LAN
/// when this node is its destination, relayed toward it otherwise.
pub fn from_wan(
    table: &RouteTable,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<Forward, Discard> {
    let links = table.links();
    let end = start.checked_add(len).ok_or(Discard::Malformed)?;
    let frame = buf.get(start..end).ok_or(Discard::Malformed)?;
    let o = OverlayFrame::parse(frame, links.overlay_port).map_err(|_| Discard::Malformed)?;
    if o.vni != links.vni || o.option.hop_limit == 0 {
        return Err(Discard::Malformed);
    }
    if o.option.dst == table.local {
        decap(table, buf, start, o)
    } else {
        relay(table, buf, start, o)
    }
}

/// The destination of the IP packet `ip`, whose header [`from_wan`]
/// already checked: for the worker to read the LAN host's address from a
/// frame dropped as [`Discard::UnresolvedHost`] (which leaves the frame as
/// it was).
///
/// Plain reads, no call into the wire views: a second caller of the views
/// that [`from_wan`] inlines (a re-parse of the overlay frame) made the
/// compiler call them out of line there, on every frame: 2 to 3 ns more
/// per decap and relay (benches/forwarding).
pub fn host_address(ip: &[u8]) -> Option<IpKey> {
    match ip.first()? >> 4 {
        4 => Some(IpKey::V4(u32::from_be_bytes(
            ip.get(16..20)?.try_into().ok()?,
        ))),
        6 => Some(IpKey::V6(u128::from_be_bytes(
            ip.get(24..40)?.try_into().ok()?,
        ))),
        _ => None,
    }
}

// decap, relay and forward_option are always inlined and take the parsed
// frame by value, so that its fields stay in registers: read back from the
// stack, they cost a store-forwarding stall per frame (perf, relay_v6).
#[inline(always)]
fn decap(
    table: &RouteTable,
    buf: &mut [u8],
    start: usize,
    o: OverlayFrame,
) -> Result<Forward, Discard> {
    let lan_mac = table.links().lan_mac.ok_or(Discard::NoLan)?;
    let inner_start = start + o.inner_offset;
    if let (IpAddr::V6(src), IpAddr::V6(dst)) = (o.outer_src, o.outer_dst) {
        let udp = &buf[start + o.udp_offset..inner_start + o.inner_len];
        verify_udp_v6(udp, (src, dst), o.option.seal.is_sealed())?;
    }
    let outer_ecn = outer_tos(&buf[start + o.ip_offset..]) & ecn::MASK;
    let plain_len = open(table.keys(), buf, start, &o)?;
    let inner = &mut buf[inner_start..inner_start + plain_len];
    let ethertype = EtherType(o.protocol_type);
    let (dst, inner_len) = inner_destination(ethertype, inner)?;
    ecn::decapsulate(outer_ecn, &mut inner[..inner_len])?;
    to_lan_host(
        table,
        lan_mac,
        buf,
        inner_start,
        (ethertype, dst, inner_len),
    )
}

/// Sends a decapsulated inner IP packet, already opened, that lies at
/// `buf[inner_start..end]` (Ethernet padding may follow it) onto the LAN:
/// what a worker does with a frame it held for want of the LAN host's MAC
/// ([`Discard::UnresolvedHost`]) once the table has it. Errors as decap's,
/// that one again when the MAC is still unknown.
pub fn deliver(
    table: &RouteTable,
    buf: &mut [u8],
    inner_start: usize,
    end: usize,
) -> Result<Forward, Discard> {
    let lan_mac = table.links().lan_mac.ok_or(Discard::NoLan)?;
    let inner = buf.get(inner_start..end).ok_or(Discard::Malformed)?;
    let ethertype = match inner.first().map(|b| b >> 4) {
        Some(4) => EtherType::IPV4,
        Some(6) => EtherType::IPV6,
        _ => return Err(Discard::Malformed),
    };
    let (dst, inner_len) = inner_destination(ethertype, inner)?;
    to_lan_host(
        table,
        lan_mac,
        buf,
        inner_start,
        (ethertype, dst, inner_len),
    )
}

/// The last step of a decap: the LAN host's MAC, the TTL, and the inner
/// Ethernet header where the end of the GENEVE option was. `inner` is the
/// inner packet's EtherType, destination and length.
#[inline(always)]
fn to_lan_host(
    table: &RouteTable,
    lan_mac: MacAddr,
    buf: &mut [u8],
    inner_start: usize,
    inner: (EtherType, IpKey, usize),
) -> Result<Forward, Discard> {
    let (ethertype, dst, inner_len) = inner;
    // Nothing is written to the frame before this point but the ECN field
    // (and the plaintext), so that the worker can read the destination
    // again after this drop, and hold the frame.
    let host_mac = table.lan_mac_for(dst).ok_or(Discard::UnresolvedHost {
        inner_at: inner_start as u16,
    })?;
    decrement_ttl(&mut buf[inner_start..inner_start + inner_len])?;
    let eth_start = inner_start
        .checked_sub(ethernet::HEADER_LEN)
        .ok_or(Discard::NoHeadroom)?;
    let eth = &mut buf[eth_start..inner_start];
    eth[..6].copy_from_slice(&host_mac.0);
    eth[6..12].copy_from_slice(&lan_mac.0);
    eth[12..14].copy_from_slice(&ethertype.0.to_be_bytes());
    Ok(Forward {
        egress: Egress::Lan,
        start: eth_start,
        len: ethernet::HEADER_LEN + inner_len,
    })
}

/// Checks the UDP checksum of an overlay datagram `udp` that came over IPv6
/// between `addrs`, where it is mandatory (RFC 8200, section 8.1) but for
/// tunnels that can do without (RFC 6935, RFC 6936): a zero checksum is
/// taken on a sealed frame, whose tag covers the inner packet and the
/// GENEVE header better than a checksum could, and refused on a frame in
/// the clear. Only the destination checks: a relay updates the checksum
/// incrementally (RFC 1624), which keeps a wrong one wrong.
#[inline(always)]
fn verify_udp_v6(udp: &[u8], addrs: (Ipv6Addr, Ipv6Addr), sealed: bool) -> Result<(), Discard> {
    let zero = matches!(udp, [_, _, _, _, _, _, 0, 0, ..]);
    if zero {
        return if sealed {
            Ok(())
        } else {
            Err(Discard::BadChecksum)
        };
    }
    let pseudo = checksum::pseudo_header_v6(
        &addrs.0.octets(),
        &addrs.1.octets(),
        detour_common::wire::ip_protocol::UDP,
        udp.len() as u32,
    );
    match checksum::fold(checksum::sum(udp, pseudo)) {
        0xffff => Ok(()),
        _ => Err(Discard::BadChecksum),
    }
}

/// Authenticates and decrypts the inner packet of `o` in place, if this
/// node encrypts (`keys`); the length of the plaintext. The replay window
/// is asked before the tag is checked (a replay costs no decryption) and
/// takes the counter only after it (a forged counter takes nothing).
#[inline(always)]
fn open(
    keys: Option<&KeyTable>,
    buf: &mut [u8],
    start: usize,
    o: &OverlayFrame,
) -> Result<usize, Discard> {
    let seal = o.option.seal;
    let Some(keys) = keys else {
        return match seal.is_sealed() {
            true => Err(Discard::UnknownKey),
            false => Ok(o.inner_len),
        };
    };
    if !seal.is_sealed() {
        return Err(Discard::NoKey);
    }
    let key = match keys.rx(o.option.src, seal.key_id) {
        Opened::Key(key) => key,
        Opened::Expired => return Err(Discard::ExpiredKey),
        Opened::Unknown => return Err(Discard::UnknownKey),
    };
    if !key.window.may_accept(seal.counter) {
        return Err(Discard::Replayed);
    }
    let plain_len = o
        .inner_len
        .checked_sub(AEAD_TAG_LEN)
        .ok_or(Discard::AuthFailed)?;
    let ad = associated_data(geneve_header(buf, start + o.geneve_offset));
    let inner_start = start + o.inner_offset;
    key.key()
        .open(
            seal.counter,
            &ad,
            &mut buf[inner_start..inner_start + o.inner_len],
        )
        .map_err(|_| Discard::AuthFailed)?;
    // Two workers may have opened the same counter at once: one wins.
    if !key.window.record(seal.counter) {
        return Err(Discard::Replayed);
    }
    Ok(plain_len)
}

#[inline(always)]
fn relay(
    table: &RouteTable,
    buf: &mut [u8],
    start: usize,
    o: OverlayFrame,
) -> Result<Forward, Discard> {
    if o.option.flags & flags::RELAYED != 0 {
        return Err(Discard::AlreadyRelayed);
    }
    if o.option.hop_limit <= 1 {
        return Err(Discard::HopLimit);
    }
    // On this node's own direct path, whatever its route to the destination
    // says: the origin chose this relay for that path, and a relay that
    // followed its own route could send the frame through another relay,
    // or back where it came from.
    let dst = o.option.dst;
    let peer = table.peer(dst).ok_or(Discard::Unreachable)?;
    let template = peer
        .direct
        .as_ref()
        .ok_or(Discard::Unresolved { via: dst })?;
    let outer_ttl = table.links().outer_ttl;
    let same_layout = o.ip_offset == ethernet::HEADER_LEN
        && o.udp_offset - o.ip_offset
            == if template.is_ipv6() {
                ipv6::HEADER_LEN
            } else {
                ipv4::HEADER_LEN
            };
    let end = start + o.inner_offset + o.inner_len;
    if !same_layout {
        // A VLAN tag, IPv4 options or the other underlay family: write the
        // outer headers afresh, with what the frame says (its payload may
        // be ciphertext), then the option's fields, then the checksum.
        let inner_start = start + o.inner_offset;
        let outer = Outer {
            src_port: o.src_port,
            seal: o.option.seal,
            ethertype: EtherType(o.protocol_type),
            tos: outer_tos(&buf[start + o.ip_offset..]),
        };
        let new_start = template
            .write_headers_as(buf, inner_start, o.inner_len, &outer)
            .map_err(|_| Discard::NoHeadroom)?;
        let option = new_start + template.geneve_at() + GENEVE_LEN;
        buf[option + 4..option + 10].copy_from_slice(&relayed_fields(&o));
        template.finish(buf, new_start, end);
        return Ok(Forward {
            egress: Egress::Wan,
            start: new_start,
            len: end - new_start,
        });
    }

    let v6 = template.is_ipv6();
    let template = template.headers();
    buf[start..start + ethernet::HEADER_LEN].copy_from_slice(&template[..ethernet::HEADER_LEN]);
    let ip = start + o.ip_offset;
    // The old addresses, for the UDP checksum's pseudo-header.
    let mut old = [0u8; 32];
    let (old, new) = if !v6 {
        // The fixed header only (checked above): new addresses and TTL, the
        // checksum updated from the old values (RFC 1624). Summing the
        // header afresh would read back the bytes just written, at other
        // widths, which the CPU cannot forward from its store buffer: that
        // stall cost more than the whole update (perf, benches/forwarding).
        let h = &mut buf[ip..ip + ipv4::HEADER_LEN];
        old[..8].copy_from_slice(&h[12..20]);
        let ttl_word = [h[8], h[9]];
        let hc = u16::from_be_bytes([h[10], h[11]]);
        let hc = checksum::update_bytes(hc, &old[..8], &template[ADDRS_V4]);
        let hc = checksum::update_bytes(hc, &ttl_word, &[outer_ttl, ttl_word[1]]);
        h[12..20].copy_from_slice(&template[ADDRS_V4]);
        h[8] = outer_ttl;
        h[10..12].copy_from_slice(&hc.to_be_bytes());
        (&old[..8], &template[ADDRS_V4])
    } else {
        // The fixed header only (checked above): addresses at 8..40.
        let h = &mut buf[ip..ip + ipv6::HEADER_LEN];
        old.copy_from_slice(&h[8..40]);
        h[8..40].copy_from_slice(&template[ADDRS_V6]);
        h[7] = outer_ttl;
        (&old[..], &template[ADDRS_V6])
    };
    let udp = start + o.udp_offset;
    let mut udp = UdpPacket::new_checked(&mut buf[udp..end]).map_err(|_| Discard::Malformed)?;
    // Over IPv4 the checksum is normally zero, and then stays so.
    udp.update_checksum_bytes(old, new);
    forward_option(&mut udp, &o);
    Ok(Forward {
        egress: Egress::Wan,
        start,
        len: end - start,
    })
}

/// Writes the relayed option's fields into the option behind `udp`; the
/// UDP checksum (if any) follows.
#[inline(always)]
fn forward_option(udp: &mut UdpPacket<&mut [u8]>, o: &OverlayFrame) {
    let opt = &udp.payload_mut()[GENEVE_LEN..GENEVE_LEN + DETOUR_OPTION_LEN];
    let old: [u8; 6] = [opt[4], opt[5], opt[6], opt[7], opt[8], opt[9]];
    let new = relayed_fields(o);
    let opt = &mut udp.payload_mut()[GENEVE_LEN..GENEVE_LEN + DETOUR_OPTION_LEN];
    opt[4..10].copy_from_slice(&new);
    udp.update_checksum_bytes(&old, &new);
}

/// The option's node ids, hop limit and flags as a relay sends them on:
/// the origin node kept, the hop limit one less, the relayed flag set. Key
/// id and counter are the origin's, untouched.
#[inline(always)]
fn relayed_fields(o: &OverlayFrame) -> [u8; 6] {
    let [s0, s1] = o.option.src.0.to_be_bytes();
    let [d0, d1] = o.option.dst.0.to_be_bytes();
    [
        s0,
        s1,
        d0,
        d1,
        o.option.hop_limit - 1,
        o.option.flags | flags::RELAYED,
    ]
}

/// The TOS (IPv4) or traffic class (IPv6) of the outer IP header `ip`.
#[inline]
fn outer_tos(ip: &[u8]) -> u8 {
    match ip {
        [b0, b1, ..] if b0 >> 4 == 6 => (b0 << 4) | (b1 >> 4),
        [_, tos, ..] => *tos,
        _ => 0,
    }
}

/// The destination and the length (without Ethernet padding) of the IP
/// packet `ip`, which an EtherType says is IPv4 or IPv6.
#[inline]
fn inner_destination(ethertype: EtherType, ip: &[u8]) -> Result<(IpKey, usize), Discard> {
    match ethertype {
        EtherType::IPV4 => {
            let p = Ipv4Packet::new_checked(ip).map_err(|_| Discard::Malformed)?;
            Ok((
                IpKey::V4(p.dst_addr().to_bits()),
                usize::from(p.total_len()),
            ))
        }
        EtherType::IPV6 => {
            let p = Ipv6Packet::new_checked(ip).map_err(|_| Discard::Malformed)?;
            Ok((
                IpKey::V6(p.dst_addr().to_bits()),
                40 + usize::from(p.payload_len()),
            ))
        }
        _ => Err(Discard::Malformed),
    }
}

/// Whether the TTL or hop limit of the IP packet `ip` is too small to
/// forward it once more (a packet that is no IP packet is left to the
/// checks that follow).
#[inline]
fn ttl_spent(ip: &[u8]) -> bool {
    match ip {
        [b0, ..] if b0 >> 4 == 4 => ip.get(8).is_some_and(|&ttl| ttl <= 1),
        [b0, ..] if b0 >> 4 == 6 => ip.get(7).is_some_and(|&hops| hops <= 1),
        _ => false,
    }
}

/// Decrements the TTL or hop limit of the IP packet `ip`, as a router
/// forwarding it; refuses one that is spent.
#[inline]
fn decrement_ttl(ip: &mut [u8]) -> Result<(), Discard> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let mut p = Ipv4Packet::new_checked(ip).map_err(|_| Discard::Malformed)?;
            let ttl = p.ttl();
            if ttl <= 1 {
                return Err(Discard::TtlExpired);
            }
            p.set_ttl(ttl - 1);
        }
        Some(6) => {
            let mut p = Ipv6Packet::new_checked(ip).map_err(|_| Discard::Malformed)?;
            let hops = p.hop_limit();
            if hops <= 1 {
                return Err(Discard::TtlExpired);
            }
            p.set_hop_limit(hops - 1);
        }
        _ => return Err(Discard::Malformed),
    }
    Ok(())
}

/// The outer UDP source port for an inner packet: a hash of its addresses
/// and the first 4 bytes of its transport header (the ports of TCP and UDP),
/// in the dynamic range, so that the underlay's ECMP keeps a flow on one
/// path and spreads flows (RFC 8926, section 3.3).
#[inline]
pub fn flow_port(ip: &[u8]) -> u16 {
    let word = |at: usize| {
        ip.get(at..at + 4)
            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    // IPv4: the two addresses at 12..20; IPv6: the last words of each.
    let (a, b, ports) = match ip.first().map(|b| b >> 4) {
        Some(4) => (word(12), word(16), word(usize::from(ip[0] & 0x0f) * 4)),
        Some(6) => (word(20) ^ word(16), word(36) ^ word(32), word(40)),
        _ => (0, 0, 0),
    };
    // A multiply-xorshift mix (as in FxHash and splitmix): two multiplies,
    // every input bit reaches the high bits kept.
    let h = (u64::from(a) << 32 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(ports).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    // 49152 itself is left out: tcpdump decodes any UDP datagram with that
    // port, source or destination, as Broadcom's LI shim, not as GENEVE.
    (0xc000 | ((h >> 50) as u16 & 0x3fff)).max(0xc001)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use detour_common::wire::checksum;
    use detour_common::wire::{DetourOptionRepr, MacAddr, NodeId, Underlay, ip_protocol};
    use detour_testkit::frames;

    use super::*;
    use crate::table::tests::{links, resolved, snapshot};
    use crate::table::{LanNeighbours, Links, RouteSnapshot};

    const HEADROOM: usize = 256;
    const HOST_MAC: MacAddr = MacAddr([2, 1, 1, 1, 1, 5]);

    fn table_with(snapshot: &RouteSnapshot, links: &Links) -> RouteTable {
        let mut lan = LanNeighbours::default();
        lan.insert("10.1.0.0/16".parse().unwrap(), HOST_MAC);
        lan.insert("2001:db8:1::/48".parse().unwrap(), HOST_MAC);
        RouteTable::compile(snapshot, links, lan, resolved).unwrap()
    }

    fn table() -> RouteTable {
        let mut l = links();
        l.vni = 7;
        table_with(&snapshot(), &l)
    }

    /// The same overlay as `table::tests::snapshot`, on an IPv6 underlay.
    fn table_v6() -> RouteTable {
        let mut s = snapshot();
        for n in &mut s.nodes {
            n.underlay = format!("2001:db8::{}", n.id.0).parse().unwrap();
        }
        let mut l = links();
        l.vni = 7;
        table_with(&s, &l)
    }

    /// An IPv4 packet of `len` bytes from `src` to `dst`.
    fn inner_v4(src: &str, dst: &str, len: usize) -> Vec<u8> {
        frames::ipv4_packet(src.parse().unwrap(), dst.parse().unwrap(), len)
    }

    /// A buffer with headroom and `frame` after it.
    fn buffer(frame: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADROOM];
        b.extend_from_slice(frame);
        b.resize(HEADROOM + frame.len() + 64, 0);
        b
    }

    fn lan_frame(inner: &[u8]) -> Vec<u8> {
        frames::ethernet(EtherType::IPV4, inner)
    }

    /// An overlay frame as node `src` sends it for `dst`, from a MAC and
    /// with an outer TTL that a relay must replace.
    fn overlay_frame(
        underlay: Underlay,
        src: u16,
        dst: u16,
        hop_limit: u8,
        inner: &[u8],
    ) -> Vec<u8> {
        let mut repr = frames::encap_repr(underlay);
        repr.src_mac = MacAddr([2, 0, 0, 0, 0, 9]);
        repr.dst_mac = MacAddr([2, 0, 0, 0, 0, 1]);
        repr.ttl = 60;
        repr.option = DetourOptionRepr {
            src: NodeId(src),
            dst: NodeId(dst),
            hop_limit,
            flags: 0,
            seal: Seal::NONE,
        };
        frames::encapsulate(&repr, inner)
    }

    fn v4(a: &str, b: &str) -> Underlay {
        Underlay::V4 {
            src: a.parse::<Ipv4Addr>().unwrap(),
            dst: b.parse::<Ipv4Addr>().unwrap(),
        }
    }

    fn v6(a: &str, b: &str) -> Underlay {
        Underlay::V6 {
            src: a.parse::<Ipv6Addr>().unwrap(),
            dst: b.parse::<Ipv6Addr>().unwrap(),
        }
    }

    /// The inner packet after one router hop: TTL one less, checksum fixed.
    fn forwarded(inner: &[u8]) -> Vec<u8> {
        let mut p = inner.to_vec();
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        ip.set_ttl(ip.ttl() - 1);
        assert!(ip.verify_checksum());
        p
    }

    fn out<'a>(buf: &'a [u8], f: &Forward) -> &'a [u8] {
        &buf[f.start..f.start + f.len]
    }

    /// Checks the outer checksums of an overlay frame as a receiver would.
    fn assert_checksums(frame: &[u8]) {
        let o = OverlayFrame::parse(frame, 6081).unwrap();
        let udp =
            UdpPacket::new_checked(&frame[o.udp_offset..o.inner_offset + o.inner_len]).unwrap();
        match (o.outer_src, o.outer_dst) {
            (IpAddr::V4(_), IpAddr::V4(_)) => {
                assert!(
                    Ipv4Packet::new_checked(&frame[o.ip_offset..])
                        .unwrap()
                        .verify_checksum()
                );
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                assert_ne!(udp.checksum(), 0, "mandatory over IPv6");
                let ph = checksum::pseudo_header_v6(
                    &s.octets(),
                    &d.octets(),
                    ip_protocol::UDP,
                    u32::from(udp.len()),
                );
                assert!(udp.verify_checksum(ph), "UDP checksum over IPv6");
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn encap_direct_and_through_a_relay() {
        let t = table();
        for (dst, via) in [("10.2.0.9", 2), ("10.3.1.1", 2)] {
            let inner = inner_v4("10.1.0.5", dst, 100);
            let mut buf = buffer(&lan_frame(&inner));
            let f = encap(&t, &mut buf, HEADROOM, 114).unwrap();
            assert_eq!((f.egress, f.len), (Egress::Wan, 74 + 100));
            assert_eq!(f.start, HEADROOM + 14 - 74);
            let frame = out(&buf, &f);
            let o = OverlayFrame::parse(frame, 6081).unwrap();
            assert_eq!(o.outer_src, "192.0.2.1".parse::<IpAddr>().unwrap());
            assert_eq!(
                o.outer_dst,
                format!("192.0.2.{via}").parse::<IpAddr>().unwrap()
            );
            assert_eq!(
                frame[..6],
                [2, 0, 0, 0, 0, via as u8],
                "toward the next hop's MAC"
            );
            assert_eq!((o.option.src, o.option.hop_limit), (NodeId(1), 4));
            assert_eq!(
                o.option.dst,
                t.node_for(dst.parse::<IpAddr>().unwrap()).unwrap()
            );
            assert_eq!(
                &frame[74..],
                &forwarded(&inner)[..],
                "inner packet, one hop on"
            );
            assert!(o.src_port > 0xc000);
            assert_checksums(frame);
        }
    }

    #[test]
    fn encap_takes_tagged_frames_and_trims_padding() {
        let inner = inner_v4("10.1.0.5", "10.2.0.9", 28);
        let mut frame = lan_frame(&inner);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        frame.resize(frame.len() + 14, 0xee);
        let mut buf = buffer(&frame);
        let f = encap(&table(), &mut buf, HEADROOM, frame.len()).unwrap();
        assert_eq!(f.len, 74 + 28);
        assert_eq!(&out(&buf, &f)[74..], &forwarded(&inner)[..]);
    }

    #[test]
    fn encap_drops_and_says_why() {
        let t = table();
        let mut cases = vec![
            (
                inner_v4("10.1.0.5", "8.8.8.8", 40),
                HEADROOM,
                Discard::NoRoute,
            ),
            (
                inner_v4("10.1.0.5", "10.1.0.9", 40),
                HEADROOM,
                Discard::NoRoute,
            ),
            (
                inner_v4("10.1.0.5", "10.4.0.1", 40),
                HEADROOM,
                Discard::Unreachable,
            ),
            (
                inner_v4("10.1.0.5", "10.2.0.9", 1441),
                HEADROOM,
                Discard::TooBig { mtu: 1440 },
            ),
            (
                inner_v4("10.1.0.5", "10.2.0.9", 40),
                10,
                Discard::NoHeadroom,
            ),
        ];
        let mut expired = inner_v4("10.1.0.5", "10.2.0.9", 40);
        Ipv4Packet::new_checked(&mut expired[..])
            .unwrap()
            .set_ttl(1);
        cases.push((expired, HEADROOM, Discard::TtlExpired));
        let mut lying = inner_v4("10.1.0.5", "10.2.0.9", 40);
        lying[3] = 200;
        cases.push((lying, HEADROOM, Discard::Malformed));
        for (inner, start, expected) in cases {
            let frame = lan_frame(&inner);
            let mut buf = vec![0u8; start];
            buf.extend_from_slice(&frame);
            assert_eq!(encap(&t, &mut buf, start, frame.len()), Err(expected));
        }
        let inner = inner_v4("10.1.0.5", "10.2.0.9", 1440);
        let mut buf = buffer(&lan_frame(&inner));
        assert!(
            encap(&t, &mut buf, HEADROOM, 14 + 1440).is_ok(),
            "exactly the MTU"
        );
        let unresolved =
            RouteTable::compile(&snapshot(), &links(), LanNeighbours::default(), |_| None).unwrap();
        let mut buf = buffer(&lan_frame(&inner_v4("10.1.0.5", "10.2.0.9", 40)));
        assert_eq!(
            encap(&unresolved, &mut buf, HEADROOM, 54),
            Err(Discard::Unresolved { via: NodeId(2) })
        );
    }

    #[test]
    fn decap_onto_the_lan() {
        let inner = inner_v4("10.2.0.9", "10.1.0.5", 60);
        let frame = overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, 1, 4, &inner);
        let mut buf = buffer(&frame);
        let f = from_wan(&table(), &mut buf, HEADROOM, frame.len()).unwrap();
        assert_eq!(
            (f.egress, f.start, f.len),
            (Egress::Lan, HEADROOM + 60, 14 + 60)
        );
        let lan = out(&buf, &f);
        assert_eq!(lan[..6], HOST_MAC.0);
        assert_eq!(lan[6..12], [2, 0, 0, 0, 1, 1], "from the LAN interface");
        assert_eq!(lan[12..14], [0x08, 0x00]);
        assert_eq!(&lan[14..], &forwarded(&inner)[..]);
    }

    /// `frame` (IPv4 underlay) with the outer ECN field set to `ecn`, its
    /// header checksum kept right.
    fn with_outer_ecn(frame: &[u8], ecn: u8) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[14 + 1] = (f[14 + 1] & !ecn::MASK) | ecn;
        Ipv4Packet::new_checked(&mut f[14..])
            .unwrap()
            .fill_checksum();
        f
    }

    /// `inner` (IPv4) with its ECN field set to `ecn`.
    fn with_ecn(inner: &[u8], ecn: u8) -> Vec<u8> {
        let mut p = inner.to_vec();
        p[1] = (p[1] & !ecn::MASK) | ecn;
        Ipv4Packet::new_checked(&mut p[..]).unwrap().fill_checksum();
        p
    }

    #[test]
    fn decap_carries_an_outer_ce_mark_into_the_inner_header() {
        let t = table();
        let decap = |inner: &[u8], outer_ecn: u8| {
            let frame = overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, 1, 4, inner);
            let frame = with_outer_ecn(&frame, outer_ecn);
            let mut buf = buffer(&frame);
            from_wan(&t, &mut buf, HEADROOM, frame.len()).map(|f| out(&buf, &f)[14..].to_vec())
        };
        let ect0 = with_ecn(&inner_v4("10.2.0.9", "10.1.0.5", 60), ecn::ECT_0);
        let marked = decap(&ect0, ecn::CE).unwrap();
        assert_eq!(marked[1] & ecn::MASK, ecn::CE, "congestion experienced");
        assert_eq!(
            marked,
            forwarded(&with_ecn(&ect0, ecn::CE)),
            "and the rest as always"
        );
        assert_eq!(decap(&ect0, ecn::ECT_0).unwrap(), forwarded(&ect0));
        let not_ect = inner_v4("10.2.0.9", "10.1.0.5", 60);
        assert_eq!(decap(&not_ect, ecn::CE), Err(Discard::CeNotEct));
        assert_eq!(decap(&not_ect, ecn::ECT_1).unwrap(), forwarded(&not_ect));

        // Encapsulation copies the inner field out, so that the underlay
        // can mark it (RFC 6040, normal mode).
        let mut buf = buffer(&lan_frame(&with_ecn(
            &inner_v4("10.1.0.5", "10.2.0.9", 60),
            ecn::ECT_1,
        )));
        let f = encap(&t, &mut buf, HEADROOM, 14 + 60).unwrap();
        assert_eq!(out(&buf, &f)[14 + 1] & ecn::MASK, ecn::ECT_1);
    }

    #[test]
    fn a_decap_refused_for_want_of_the_hosts_mac_is_delivered_later() {
        let inner = inner_v4("10.2.0.9", "10.1.0.5", 60);
        let frame = overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, 1, 4, &inner);
        let mut l = links();
        l.vni = 7;
        let unknown =
            RouteTable::compile(&snapshot(), &l, LanNeighbours::default(), resolved).unwrap();
        let mut buf = buffer(&frame);
        let end = HEADROOM + frame.len();
        let Err(Discard::UnresolvedHost { inner_at }) =
            from_wan(&unknown, &mut buf, HEADROOM, frame.len())
        else {
            panic!("no MAC for 10.1.0.5 in this table");
        };
        let inner_at = usize::from(inner_at);
        assert_eq!(
            deliver(&unknown, &mut buf, inner_at, end),
            Err(Discard::UnresolvedHost {
                inner_at: inner_at as u16
            }),
            "still unknown"
        );
        let f = deliver(&table(), &mut buf, inner_at, end).unwrap();
        let mut direct = buffer(&frame);
        let expected = from_wan(&table(), &mut direct, HEADROOM, frame.len()).unwrap();
        assert_eq!(f, expected);
        assert_eq!(
            out(&buf, &f),
            out(&direct, &expected),
            "as if it had never waited"
        );
    }

    #[test]
    fn decap_over_ipv6_verifies_the_udp_checksum() {
        let t = table_v6();
        let inner = inner_v4("10.2.0.9", "10.1.0.5", 60);
        let frame = overlay_frame(v6("2001:db8::2", "2001:db8::1"), 2, 1, 4, &inner);
        assert_checksums(&frame);
        let decap = |frame: &[u8]| {
            let mut buf = buffer(frame);
            from_wan(&t, &mut buf, HEADROOM, frame.len()).map(|f| out(&buf, &f).to_vec())
        };
        assert_eq!(&decap(&frame).unwrap()[14..], &forwarded(&inner)[..]);
        let udp = OverlayFrame::parse(&frame, 6081).unwrap().udp_offset;
        // One payload bit flipped on the way: the checksum no longer adds up.
        let mut damaged = frame.clone();
        *damaged.last_mut().unwrap() ^= 0x10;
        assert_eq!(decap(&damaged), Err(Discard::BadChecksum));
        assert_eq!(
            decap(&frames::set_u16(&frame, udp + 6, 0)),
            Err(Discard::BadChecksum),
            "no checksum on a frame in the clear over IPv6"
        );
        // A relay leaves the check to the destination.
        let relayed = overlay_frame(v6("2001:db8::2", "2001:db8::1"), 2, 4, 4, &inner);
        let mut damaged = relayed.clone();
        *damaged.last_mut().unwrap() ^= 0x10;
        assert!(decap(&damaged).is_ok());
    }

    #[test]
    fn a_spent_ttl_is_refused_before_the_size() {
        let t = table();
        let mut inner = inner_v4("10.1.0.5", "10.2.0.9", 1480);
        inner[8] = 1;
        Ipv4Packet::new_checked(&mut inner[..])
            .unwrap()
            .fill_checksum();
        let mut buf = buffer(&lan_frame(&inner));
        assert_eq!(
            encap(&t, &mut buf, HEADROOM, 14 + 1480),
            Err(Discard::TtlExpired)
        );
        assert_eq!(buf, buffer(&lan_frame(&inner)), "written nothing");
    }

    #[test]
    fn relay_in_place_over_both_underlays() {
        let inner = inner_v4("10.4.0.9", "10.2.0.5", 80);
        for (t, underlay, src, dst) in [
            (
                table(),
                v4("192.0.2.4", "192.0.2.1"),
                "192.0.2.1",
                "192.0.2.2",
            ),
            (
                table_v6(),
                v6("2001:db8::4", "2001:db8::1"),
                "2001:db8::1",
                "2001:db8::2",
            ),
        ] {
            let frame = overlay_frame(underlay, 4, 2, 3, &inner);
            let mut buf = buffer(&frame);
            let f = from_wan(&t, &mut buf, HEADROOM, frame.len()).unwrap();
            assert_eq!(
                (f.egress, f.start, f.len),
                (Egress::Wan, HEADROOM, frame.len())
            );
            let relayed = out(&buf, &f);
            let o = OverlayFrame::parse(relayed, 6081).unwrap();
            assert_eq!(relayed[..6], [2, 0, 0, 0, 0, 2]);
            assert_eq!(relayed[6..12], [2, 0, 0, 0, 0, 1]);
            assert_eq!(o.outer_src, src.parse::<IpAddr>().unwrap());
            assert_eq!(o.outer_dst, dst.parse::<IpAddr>().unwrap());
            assert_eq!((o.option.src, o.option.dst), (NodeId(4), NodeId(2)));
            assert_eq!((o.option.hop_limit, o.option.flags), (2, flags::RELAYED));
            assert_eq!(o.src_port, frames::FLOW_PORT, "the flow's entropy is kept");
            assert_eq!(&relayed[o.inner_offset..], &inner[..], "inner untouched");
            assert_checksums(relayed);
        }
    }

    #[test]
    fn relay_rewrites_tagged_frames_whole() {
        let inner = inner_v4("10.4.0.9", "10.2.0.5", 80);
        let t = table_v6();
        let mut frame = overlay_frame(v6("2001:db8::4", "2001:db8::1"), 4, 2, 3, &inner);
        frame.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        let mut buf = buffer(&frame);
        let f = from_wan(&t, &mut buf, HEADROOM, frame.len()).unwrap();
        let relayed = out(&buf, &f);
        assert_eq!(f.len, 94 + 80, "untagged now");
        let o = OverlayFrame::parse(relayed, 6081).unwrap();
        assert_eq!(
            (o.option.src, o.option.hop_limit, o.option.flags),
            (NodeId(4), 2, 1)
        );
        assert_eq!(&relayed[94..], &inner[..]);
        assert_checksums(relayed);
    }

    #[test]
    fn a_relay_sends_on_its_own_direct_path_and_never_relays_twice() {
        // Node 1's own route to node 3 goes through node 2, and it has none
        // to node 4: a frame node 4 (or 3) chose node 1 to relay still goes
        // straight to its destination, not through another relay.
        let inner = inner_v4("10.4.0.9", "10.3.0.5", 40);
        let t = table();
        for (dst, addr) in [(3, "192.0.2.3"), (4, "192.0.2.4")] {
            let frame = overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, dst, 3, &inner);
            let mut buf = buffer(&frame);
            let f = from_wan(&t, &mut buf, HEADROOM, frame.len()).unwrap();
            let relayed = out(&buf, &f);
            let o = OverlayFrame::parse(relayed, 6081).unwrap();
            assert_eq!(
                relayed[..6],
                [2, 0, 0, 0, 0, dst as u8],
                "the destination's MAC"
            );
            assert_eq!(o.outer_dst, addr.parse::<IpAddr>().unwrap());
            assert_eq!(o.option.flags, flags::RELAYED);
            assert_checksums(relayed);

            // Handed back to a relay (two nodes with contradictory views),
            // the relayed frame is dropped, not relayed again.
            let mut again = relayed.to_vec();
            let at = frames::option_offset(&again);
            again[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            let len = again.len();
            let mut buf = buffer(&again);
            assert_eq!(
                from_wan(&t, &mut buf, HEADROOM, len),
                Err(Discard::AlreadyRelayed),
                "option flags {:#x}",
                again[at + 9]
            );
            assert_eq!(buf, buffer(&again), "a drop writes nothing");
        }
        let mut l = links();
        l.vni = 7;
        let unresolved = RouteTable::compile(&snapshot(), &l, LanNeighbours::default(), |a| {
            (a != "192.0.2.3".parse::<IpAddr>().unwrap()).then(|| resolved(a).unwrap())
        })
        .unwrap();
        let frame = overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, 3, 3, &inner);
        let mut buf = buffer(&frame);
        assert_eq!(
            from_wan(&unresolved, &mut buf, HEADROOM, frame.len()),
            Err(Discard::Unresolved { via: NodeId(3) }),
            "the direct next hop is what must be resolved"
        );
        assert_eq!(buf, buffer(&frame), "left as it was, to hold");
    }

    #[test]
    fn from_wan_drops_and_says_why() {
        let inner = inner_v4("10.4.0.9", "10.2.0.5", 40);
        let t = table();
        let cases = [
            (
                overlay_frame(v4("192.0.2.4", "192.0.2.1"), 4, 2, 1, &inner),
                Discard::HopLimit,
            ),
            (
                overlay_frame(v4("192.0.2.4", "192.0.2.1"), 4, 2, 0, &inner),
                Discard::Malformed,
            ),
            (
                overlay_frame(v4("192.0.2.4", "192.0.2.1"), 2, 9, 3, &inner),
                Discard::Unreachable,
            ),
            (
                overlay_frame(
                    v4("192.0.2.2", "192.0.2.1"),
                    2,
                    1,
                    3,
                    &inner_v4("10.2.0.5", "10.9.0.1", 40),
                ),
                Discard::UnresolvedHost {
                    inner_at: (HEADROOM + 74) as u16,
                },
            ),
            (
                overlay_frame(v4("192.0.2.4", "192.0.2.1"), 4, 2, 3, &inner)[..70].to_vec(),
                Discard::Malformed,
            ),
        ];
        for (frame, expected) in cases {
            let mut buf = buffer(&frame);
            assert_eq!(from_wan(&t, &mut buf, HEADROOM, frame.len()), Err(expected));
        }
        let mut other_vni = links();
        other_vni.vni = 8;
        let t8 = table_with(&snapshot(), &other_vni);
        let frame = overlay_frame(v4("192.0.2.4", "192.0.2.1"), 4, 2, 3, &inner);
        let mut buf = buffer(&frame);
        assert_eq!(
            from_wan(&t8, &mut buf, HEADROOM, frame.len()),
            Err(Discard::Malformed)
        );
        let mut no_lan = links();
        no_lan.vni = 7;
        no_lan.lan_mac = None;
        let t = table_with(&snapshot(), &no_lan);
        let frame = overlay_frame(
            v4("192.0.2.2", "192.0.2.1"),
            2,
            1,
            3,
            &inner_v4("10.2.0.5", "10.1.0.1", 40),
        );
        let mut buf = buffer(&frame);
        assert_eq!(
            from_wan(&t, &mut buf, HEADROOM, frame.len()),
            Err(Discard::NoLan)
        );
    }

    #[test]
    fn an_unknown_lan_host_is_dropped_untouched_and_its_address_read_back() {
        for (t, underlay) in [
            (table(), v4("192.0.2.2", "192.0.2.1")),
            (table_v6(), v6("2001:db8::2", "2001:db8::1")),
        ] {
            let frame = overlay_frame(underlay, 2, 1, 3, &inner_v4("10.2.0.5", "10.9.0.1", 40));
            let mut buf = buffer(&frame);
            let before = buf.clone();
            let Err(Discard::UnresolvedHost { inner_at }) =
                from_wan(&t, &mut buf, HEADROOM, frame.len())
            else {
                panic!("not dropped as an unresolved host");
            };
            assert_eq!(buf, before, "nothing written");
            let ip = &buf[usize::from(inner_at)..HEADROOM + frame.len()];
            assert_eq!(
                host_address(ip),
                Some(IpKey::V4(u32::from_be_bytes([10, 9, 0, 1])))
            );
        }
        let v6 = frames::udp(
            "2001:db8:2::5".parse().unwrap(),
            "2001:db8:1::8000:0:0:9".parse().unwrap(),
            1,
            2,
            8,
        );
        assert_eq!(
            host_address(&v6[14..]),
            Some(IpKey::V6(
                "2001:db8:1::8000:0:0:9"
                    .parse::<Ipv6Addr>()
                    .unwrap()
                    .to_bits()
            ))
        );
        assert_eq!(host_address(&v6[14..30]), None, "cut short");
        assert_eq!(host_address(&[]), None);
    }

    #[test]
    fn flow_ports_stay_in_the_dynamic_range_and_follow_the_flow() {
        let a = inner_v4("10.1.0.5", "10.2.0.9", 40);
        let mut b = a.clone();
        b[21] ^= 1; // another source port
        assert_eq!(flow_port(&a), flow_port(&a.clone()));
        assert_ne!(flow_port(&a), flow_port(&b));
        assert!(flow_port(&a) > 0xc000 && flow_port(&[]) > 0xc000);
    }

    /// End-to-end encryption: node 1 seals toward node 2, node 3 relays,
    /// node 2 opens.
    mod sealed {
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        use detour_common::api::{Cipher, KeySpec, SecretKey, SessionKeys};

        use super::*;
        use crate::crypto::KeyTable;
        use crate::crypto::keys::RETIRE_AFTER;
        use crate::table::tests::route;

        /// Node 1's key toward node 2, as both hold it.
        fn key_1_to_2(id: u32) -> KeySpec {
            KeySpec {
                id,
                cipher: Cipher::Aes256Gcm,
                key: SecretKey::new([0x42; 32]),
            }
        }

        fn keys(sessions: Vec<SessionKeys>) -> Option<Arc<KeyTable>> {
            Some(Arc::new(KeyTable::build(&sessions, None, Instant::now())))
        }

        /// A key both ways with each of `peers`, ids 5 and 6.
        pub(super) fn keys_for(peers: &[u16]) -> Option<Arc<KeyTable>> {
            keys(
                peers
                    .iter()
                    .map(|&p| SessionKeys {
                        peer: NodeId(p),
                        tx: Some(key_1_to_2(5)),
                        rx: vec![key_1_to_2(5), key_1_to_2(6)],
                    })
                    .collect(),
            )
        }

        /// Node 1, sealing to 2 under key 5 and to no one else.
        fn node_1() -> RouteTable {
            table().with_keys(keys(vec![SessionKeys {
                peer: NodeId(2),
                tx: Some(key_1_to_2(5)),
                rx: Vec::new(),
            }]))
        }

        /// Node `local` of the same overlay, every node direct.
        fn node(local: u16, keys: Option<Arc<KeyTable>>) -> RouteTable {
            let mut s = snapshot();
            s.local = NodeId(local);
            s.routes = [1, 2, 3, 4]
                .into_iter()
                .filter(|&n| n != local)
                .map(|n| route(n, n))
                .collect();
            let mut lan = LanNeighbours::default();
            lan.insert(format!("10.{local}.0.0/16").parse().unwrap(), HOST_MAC);
            let mut l = links();
            l.vni = 7;
            RouteTable::compile(&s, &l, lan, resolved)
                .unwrap()
                .with_keys(keys)
        }

        /// Node 2, opening what node 1 sealed under `key`.
        fn node_2(key: KeySpec) -> RouteTable {
            node(
                2,
                keys(vec![SessionKeys {
                    peer: NodeId(1),
                    tx: None,
                    rx: vec![key],
                }]),
            )
        }

        /// What node 1 sends for `inner`: the frame and the buffer it is in.
        fn seal(t: &RouteTable, inner: &[u8]) -> Vec<u8> {
            let mut buf = buffer(&lan_frame(inner));
            let f = encap(t, &mut buf, HEADROOM, 14 + inner.len()).unwrap();
            out(&buf, &f).to_vec()
        }

        fn open(t: &RouteTable, frame: &[u8]) -> Result<Vec<u8>, Discard> {
            let mut buf = buffer(frame);
            from_wan(t, &mut buf, HEADROOM, frame.len()).map(|f| out(&buf, &f).to_vec())
        }

        #[test]
        fn sealed_on_encap_and_opened_on_decap() {
            let inner = inner_v4("10.1.0.5", "10.2.0.9", 100);
            let t = node_1();
            let frame = seal(&t, &inner);
            assert_eq!(frame.len(), 74 + 100 + 16, "headers, packet, tag");
            let o = OverlayFrame::parse(&frame, 6081).unwrap();
            assert_eq!(
                o.option.seal,
                Seal {
                    key_id: 5,
                    counter: 0
                }
            );
            assert_eq!(o.inner_len, 116);
            assert!(
                !frame
                    .windows(20)
                    .any(|w| inner[20..].windows(20).any(|p| p == w)),
                "no plaintext on the wire"
            );
            assert_checksums(&frame);
            assert_eq!(seal(&t, &inner).len(), frame.len());
            let next = OverlayFrame::parse(&seal(&t, &inner), 6081).unwrap();
            assert_eq!(next.option.seal.counter, 2, "a counter per frame");

            let lan = open(&node_2(key_1_to_2(5)), &frame).unwrap();
            assert_eq!(lan[..6], HOST_MAC.0);
            assert_eq!(
                &lan[14..],
                &forwarded(&forwarded(&inner))[..],
                "two hops on"
            );
        }

        #[test]
        fn a_sealed_frame_held_for_the_hosts_mac_is_delivered_opened_once() {
            let inner = inner_v4("10.1.0.5", "10.2.0.9", 100);
            let frame = seal(&node_1(), &inner);
            let keys = keys(vec![SessionKeys {
                peer: NodeId(1),
                tx: None,
                rx: vec![key_1_to_2(5)],
            }]);
            let mut s = snapshot();
            s.local = NodeId(2);
            s.routes = vec![route(1, 1)];
            let mut l = links();
            l.vni = 7;
            let unknown = RouteTable::compile(&s, &l, LanNeighbours::default(), resolved)
                .unwrap()
                .with_keys(keys.clone());
            let mut buf = buffer(&frame);
            let end = HEADROOM + frame.len();
            let Err(Discard::UnresolvedHost { inner_at }) =
                from_wan(&unknown, &mut buf, HEADROOM, frame.len())
            else {
                panic!("no MAC for 10.2.0.9 at node 2");
            };
            // Node 2's table once the host answered: the same keys.
            let mut lan = LanNeighbours::default();
            lan.insert("10.2.0.0/16".parse().unwrap(), HOST_MAC);
            let known = RouteTable::compile(&s, &l, lan, resolved)
                .unwrap()
                .with_keys(keys);
            let f = deliver(&known, &mut buf, usize::from(inner_at), end).unwrap();
            assert_eq!(
                &out(&buf, &f)[14..],
                &forwarded(&forwarded(&inner))[..],
                "opened once, before it waited"
            );
            assert_eq!(
                open(&known, &frame),
                Err(Discard::Replayed),
                "its counter was taken when it was opened"
            );
        }

        #[test]
        fn an_ipv6_underlay_checksums_the_ciphertext() {
            let mut s = snapshot();
            for n in &mut s.nodes {
                n.underlay = format!("2001:db8::{}", n.id.0).parse().unwrap();
            }
            let mut l = links();
            l.vni = 7;
            let t = table_with(&s, &l).with_keys(keys(vec![SessionKeys {
                peer: NodeId(2),
                tx: Some(key_1_to_2(5)),
                rx: Vec::new(),
            }]));
            let frame = seal(&t, &inner_v4("10.1.0.5", "10.2.0.9", 60));
            assert_eq!(frame.len(), 94 + 60 + 16);
            assert_checksums(&frame);

            // Node 2 opens it; with no checksum too (RFC 6935: the tag
            // covers what it would), but not with a wrong one.
            let mut s2 = s.clone();
            s2.local = NodeId(2);
            s2.routes = vec![route(1, 1)];
            let mut lan = LanNeighbours::default();
            lan.insert("10.2.0.0/16".parse().unwrap(), HOST_MAC);
            let rx = |counter_frame: &[u8]| {
                let node_2 = RouteTable::compile(&s2, &l, lan.clone(), resolved)
                    .unwrap()
                    .with_keys(keys(vec![SessionKeys {
                        peer: NodeId(1),
                        tx: None,
                        rx: vec![key_1_to_2(5)],
                    }]));
                open(&node_2, counter_frame)
            };
            assert!(rx(&frame).is_ok());
            let udp = OverlayFrame::parse(&frame, 6081).unwrap().udp_offset;
            let without = frames::set_u16(&frame, udp + 6, 0);
            assert!(rx(&without).is_ok(), "a sealed frame needs no checksum");
            let wrong = frames::set_u16(&frame, udp + 6, 0x1234);
            assert_eq!(rx(&wrong), Err(Discard::BadChecksum));
        }

        #[test]
        fn a_relay_forwards_ciphertext_without_keys() {
            let inner = inner_v4("10.1.0.5", "10.2.0.9", 100);
            let frame = seal(&node_1(), &inner);
            let relayed = open(&node(3, None), &frame).unwrap();
            let o = OverlayFrame::parse(&relayed, 6081).unwrap();
            assert_eq!(o.option.flags, flags::RELAYED);
            assert_eq!(
                o.option.seal,
                Seal {
                    key_id: 5,
                    counter: 0
                }
            );
            assert_eq!(relayed[74..], frame[74..], "ciphertext and tag untouched");
            assert_checksums(&relayed);
            // Behind a VLAN tag the relay writes the headers afresh.
            let mut tagged = frame.clone();
            tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
            let rewritten = open(&node(3, None), &tagged).unwrap();
            assert_eq!(rewritten, relayed, "the same frame either way");
            // Hop limit and flags are not associated data: it still opens.
            let lan = open(&node_2(key_1_to_2(5)), &relayed).unwrap();
            assert_eq!(&lan[14..], &forwarded(&forwarded(&inner))[..]);
        }

        #[test]
        fn replayed_forged_and_damaged_frames_change_nothing() {
            let inner = inner_v4("10.1.0.5", "10.2.0.9", 60);
            let t = node_1();
            let frame = seal(&t, &inner);
            let node_2 = node_2(key_1_to_2(5));
            // Every byte from the GENEVE header on, damaged: refused, and
            // the genuine frame still opens afterwards (nothing taken).
            let geneve = 14 + 20 + 8;
            // (Hop limit and flags, which relays rewrite, are not covered:
            // a_relay_forwards_ciphertext_without_keys.)
            let rewritable = geneve + 16..geneve + 18;
            for at in (geneve..frame.len()).filter(|at| !rewritable.contains(at)) {
                let mut damaged = frame.clone();
                damaged[at] ^= 0x01;
                let why = match open(&node_2, &damaged) {
                    // The destination node id, damaged: relayed toward
                    // the node it now names, not delivered here.
                    Ok(relayed) if (geneve + 14..geneve + 16).contains(&at) => {
                        assert_ne!(relayed[..6], HOST_MAC.0, "byte {at}");
                        continue;
                    }
                    Ok(_) => panic!("byte {at} damaged, and delivered"),
                    Err(why) => why,
                };
                let expected = match at - geneve {
                    // Version and option length, the inner EtherType, the
                    // VNI, the option's header: not a frame of ours.
                    0 | 2..=6 | 8..=11 => Discard::Malformed,
                    // The source node names another peer, the key id
                    // another key.
                    12..=13 | 20..=23 => Discard::UnknownKey,
                    // Reserved, counter, ciphertext, tag: AuthFailed below.
                    14..=15 => Discard::Unreachable,
                    _ => Discard::AuthFailed,
                };
                assert_eq!(why, expected, "byte {at}");
            }
            assert!(open(&node_2, &frame).is_ok());
            assert_eq!(open(&node_2, &frame), Err(Discard::Replayed));
            // Forged: the right header, under a key node 2 does not hold.
            let forger = table().with_keys(keys(vec![SessionKeys {
                peer: NodeId(2),
                tx: Some(KeySpec {
                    key: SecretKey::new([0x43; 32]),
                    ..key_1_to_2(5)
                }),
                rx: Vec::new(),
            }]));
            let _ = seal(&forger, &inner);
            assert_eq!(
                open(&node_2, &seal(&forger, &inner)),
                Err(Discard::AuthFailed),
                "counter 1, not taken yet"
            );
            assert!(
                open(&node_2, &seal(&t, &inner)).is_ok(),
                "counter 1, genuine"
            );
            // Cut short: less than a tag behind the header.
            let mut repr = frames::encap_repr(v4("192.0.2.1", "192.0.2.2"));
            repr.option.src = NodeId(1);
            repr.option.dst = NodeId(2);
            repr.option.seal = Seal {
                key_id: 5,
                counter: 9,
            };
            let short = frames::encapsulate(&repr, &[0x45; 10]);
            assert_eq!(open(&node_2, &short), Err(Discard::AuthFailed));
        }

        #[test]
        fn frames_without_a_key_or_under_a_stale_one_are_refused() {
            let inner = inner_v4("10.1.0.5", "10.2.0.9", 60);
            let plain = seal(&table(), &inner);
            let sealed = seal(&node_1(), &inner);
            assert_eq!(open(&node_2(key_1_to_2(5)), &plain), Err(Discard::NoKey));
            assert_eq!(open(&node(2, None), &sealed), Err(Discard::UnknownKey));
            assert_eq!(
                open(&node_2(key_1_to_2(6)), &sealed),
                Err(Discard::UnknownKey)
            );
            // No session toward node 3 yet: nothing goes out in the clear.
            let mut buf = buffer(&lan_frame(&inner_v4("10.1.0.5", "10.3.0.9", 60)));
            assert_eq!(
                encap(&node_1(), &mut buf, HEADROOM, 74),
                Err(Discard::NoKey)
            );
            // Key 5 dropped by the control process: open for its grace,
            // expired after it.
            let start = Instant::now();
            let old = KeyTable::build(
                &[SessionKeys {
                    peer: NodeId(1),
                    tx: None,
                    rx: vec![key_1_to_2(5)],
                }],
                None,
                start,
            );
            let new = KeyTable::build(
                &[SessionKeys {
                    peer: NodeId(1),
                    tx: None,
                    rx: vec![key_1_to_2(6)],
                }],
                Some(&old),
                start,
            );
            let graced = Arc::new(new);
            let expired = graced
                .expire(start + RETIRE_AFTER + Duration::from_millis(1))
                .unwrap();
            let second = seal(&node_1(), &inner);
            assert!(
                open(&node(2, Some(graced)), &second).is_ok(),
                "in its grace"
            );
            assert_eq!(
                open(&node(2, Some(Arc::new(expired))), &sealed),
                Err(Discard::ExpiredKey)
            );
        }

        #[test]
        fn the_mtu_shrinks_by_the_tag() {
            let mut buf = buffer(&lan_frame(&inner_v4("10.1.0.5", "10.2.0.9", 1425)));
            assert_eq!(
                encap(&node_1(), &mut buf, HEADROOM, 14 + 1425),
                Err(Discard::TooBig { mtu: 1424 })
            );
            let mut buf = buffer(&lan_frame(&inner_v4("10.1.0.5", "10.2.0.9", 1424)));
            let f = encap(&node_1(), &mut buf, HEADROOM, 14 + 1424).unwrap();
            assert_eq!(f.len - 14, 1500, "exactly the underlay's MTU");
            // No room behind the packet for the tag.
            let frame = lan_frame(&inner_v4("10.1.0.5", "10.2.0.9", 60));
            let mut buf = vec![0u8; HEADROOM];
            buf.extend_from_slice(&frame);
            assert_eq!(
                encap(&node_1(), &mut buf, HEADROOM, frame.len()),
                Err(Discard::NoHeadroom)
            );
        }
    }

    type Path = fn(&RouteTable, &mut [u8], usize, usize) -> Result<Forward, Discard>;

    proptest::proptest! {
        /// Whatever arrives, at whatever offset: no panic, and a frame that
        /// is forwarded lies inside the buffer.
        #[test]
        fn arbitrary_frames_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            start in 0usize..300,
            edits in proptest::collection::vec((0usize..160, proptest::prelude::any::<u8>()), 0..4),
            seed in 0usize..4,
        ) {
            let t = table();
            let inner = inner_v4("10.4.0.9", "10.2.0.5", 60);
            // Real frames, damaged a little, or random bytes.
            let mut frame = match seed {
                0 => overlay_frame(v4("192.0.2.4", "192.0.2.1"), 4, 2, 3, &inner),
                1 => overlay_frame(v4("192.0.2.2", "192.0.2.1"), 2, 1, 3, &inner_v4("10.2.0.5", "10.1.0.1", 60)),
                2 => lan_frame(&inner_v4("10.1.0.5", "10.2.0.9", 60)),
                _ => bytes.clone(),
            };
            for (at, b) in edits {
                if let Some(x) = frame.get_mut(at) {
                    *x = b;
                }
            }
            let start = start.min(HEADROOM);
            // In the clear, and sealing and opening (keys for nodes 2 and
            // 4, so that damaged key ids and node ids meet keys too).
            let sealing = table().with_keys(sealed::keys_for(&[2, 4]));
            for (t, path) in [(&t, encap as Path), (&t, from_wan), (&sealing, encap), (&sealing, from_wan)] {
                let mut buf = vec![0u8; start];
                buf.extend_from_slice(&frame);
                let len = frame.len();
                for (s, l) in [(start, len), (start, len + 7), (buf.len() + 1, 0)] {
                    if let Ok(f) = path(t, &mut buf, s, l) {
                        proptest::prop_assert!(f.start + f.len <= buf.len());
                    }
                }
            }
        }
    }
}
