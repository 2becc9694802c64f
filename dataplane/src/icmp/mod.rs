//! ICMP errors, "packet too big" and "time exceeded", answered to a LAN
//! sender in place.
//!
//! detour does not fragment: a packet from the LAN that would exceed the WAN
//! MTU once encapsulated is dropped ([`crate::rewrite::Discard::TooBig`]).
//! Path MTU discovery only works if the sender hears why, so the worker
//! answers with ICMPv4 "fragmentation needed" (type 3, code 4, with the
//! next-hop MTU of RFC 1191 in the low 16 bits of the second word; RFC 792)
//! or ICMPv6 "packet too big" (type 2, code 0, a 32-bit MTU; RFC 4443,
//! section 3.2, as RFC 8201 uses it).
//!
//! The answer is written over the dropped frame, in its own UMEM buffer, and
//! sent back on the LAN: no allocation and no copy of the quote. An ICMP
//! error quotes the start of the offending IP packet right after its own
//! headers, and that packet already lies in the buffer, so only the new
//! Ethernet, IP and ICMP headers are written, into the old Ethernet header
//! and the headroom before it. The quote is cut so that the whole IPv4 reply
//! stays within 576 bytes (RFC 1812, section 4.3.2.3: every host must accept
//! a datagram that size) and the IPv6 reply within 1280 bytes, the IPv6
//! minimum MTU (RFC 4443, section 2.4 (c)).
//!
//! The rules on when not to answer (RFC 1122 section 3.2.2, RFC 1812 section
//! 4.3.2.7, RFC 4443 section 2.4 (e)) keep errors from multiplying: never
//! about an ICMP error, never to an address that is not one host, never about
//! a later fragment (only the first carries the transport header the sender
//! needs). IPv6 packets with extension headers are not answered at all: to
//! tell whether one carries an ICMPv6 error, or is a later fragment, the
//! chain would have to be walked, and the senders that matter (TCP, QUIC,
//! ICMPv6 echo) send none.
//!
//! A packet from the LAN whose TTL (hop limit) is spent is answered with
//! ICMPv4 "time exceeded in transit" (type 11, code 0; RFC 792) or ICMPv6
//! "hop limit exceeded" (type 3, code 0; RFC 4443, section 3.3), so that
//! traceroute shows the gateway. The TTL is checked before the size, as a
//! router does (RFC 1812, section 5.3.1). Packets that spent their TTL
//! coming out of the overlay are dropped without an answer: the sender is
//! at another site, and the answer would have to go back through the
//! overlay.
//!
//! Every answer is rate-limited per source ([`limit`]): suppressed answers
//! are counted, their frames dropped.
//!
//! A frame with one 802.1Q tag is answered with the same tag, so the reply
//! goes back on the VLAN the packet came from.

pub mod limit;

use std::net::{Ipv4Addr, Ipv6Addr};

use detour_common::wire::checksum;
use detour_common::wire::{
    EtherType, EthernetFrame, EthernetRepr, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, MacAddr,
    ip_protocol, ipv4, ipv6,
};

use crate::rewrite::{Egress, Forward};

pub use limit::{IcmpLimiter, IcmpRate};

/// The error a LAN sender is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Too big for the WAN once encapsulated; `mtu` is the largest inner
    /// packet that fits, the value the error reports.
    TooBig { mtu: u16 },
    /// The TTL or hop limit ran out here.
    TimeExceeded,
}

impl IcmpError {
    /// The ICMP header, checksum zero: type, code and the second word.
    fn header(self, v6: bool) -> [u8; ICMP_HEADER_LEN] {
        match (self, v6) {
            // Type 3 "destination unreachable", code 4 "fragmentation
            // needed and DF set"; 16 unused bits, then the next-hop MTU
            // (RFC 1191).
            (IcmpError::TooBig { mtu }, false) => {
                let [hi, lo] = mtu.to_be_bytes();
                [3, 4, 0, 0, 0, 0, hi, lo]
            }
            // Type 2 "packet too big", code 0, then the MTU.
            (IcmpError::TooBig { mtu }, true) => {
                let [m0, m1, m2, m3] = u32::from(mtu).to_be_bytes();
                [2, 0, 0, 0, m0, m1, m2, m3]
            }
            // Type 11 "time exceeded", code 0 "in transit"; unused word.
            (IcmpError::TimeExceeded, false) => [11, 0, 0, 0, 0, 0, 0, 0],
            // Type 3 "time exceeded", code 0 "hop limit exceeded".
            (IcmpError::TimeExceeded, true) => [3, 0, 0, 0, 0, 0, 0, 0],
        }
    }
}

/// Why a frame got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoAnswer {
    /// It must not be answered, or cannot be (see the module documentation).
    Unanswerable,
    /// Its source had its answers for now ([`limit`]).
    Limited,
}

/// The addresses this gateway answers from on the LAN.
///
/// Without one for a family the reply comes from the offending packet's
/// destination, as if the far end had answered: always an address the
/// sender knows a route to, but one a firewall on the LAN might not expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpSource {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

/// Type, code, checksum and one 32-bit word, in ICMPv4 and ICMPv6 alike.
const ICMP_HEADER_LEN: usize = 8;
/// The largest IPv4 reply (RFC 1812, section 4.3.2.3).
const MAX_REPLY_V4: usize = 576;
/// The largest IPv6 reply: the IPv6 minimum MTU (RFC 4443, section 2.4 (c)).
const MAX_REPLY_V6: usize = 1280;
/// The ICMPv4 error types (RFC 792, RFC 1812 section 4.3.2.7): destination
/// unreachable, source quench, redirect, time exceeded, parameter problem.
const ICMPV4_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
/// ICMPv6 types below this are errors (RFC 4443, section 2.1).
const ICMPV6_INFORMATIONAL: u8 = 128;
/// Precedence 6, "internetwork control", as RFC 1812 section 4.3.2.5 asks
/// of ICMP errors (and Linux sends).
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// The TTL or hop limit of the reply, the usual default.
const HOP_LIMIT: u8 = 64;

/// Turns the frame at `buf[start..start + len]`, received on the LAN and
/// not forwarded for `error`, into the ICMP error for its sender, in place,
/// if `limiter` lets its source have one more.
///
/// The reply starts before `start`, in the headroom (42 bytes before the
/// IPv4 header, 62 before the IPv6 one, 4 more with a VLAN tag). An error
/// means send nothing, just drop: not an IPv4 or IPv6 packet, no room
/// before it, a packet that must not be answered (see the module
/// documentation), or one over the rate. The buffer is written only when
/// there is an answer.
///
/// An IPv4 packet is answered whether or not it has DF set: detour
/// fragments nothing, so one without DF is dropped as well, and its sender
/// learns the size to fragment to.
pub fn answer(
    buf: &mut [u8],
    (start, len): (usize, usize),
    error: IcmpError,
    lan_mac: MacAddr,
    source: IcmpSource,
    (limiter, now): (&mut IcmpLimiter, std::time::Instant),
) -> Result<Forward, NoAnswer> {
    let plan = (|| {
        let end = start.checked_add(len)?;
        let eth = EthernetFrame::new_checked(buf.get(start..end)?).ok()?;
        let link = EthernetRepr::parse(&eth);
        // No Ethernet source is a group address; one that claims to be
        // cannot be answered.
        if link.src.is_multicast() {
            return None;
        }
        let plan = match link.ethertype {
            EtherType::IPV4 => plan_v4(eth.payload(), link.dst.is_multicast(), source.v4, error)?,
            EtherType::IPV6 => plan_v6(eth.payload(), source.v6, error)?,
            _ => return None,
        };
        Some((link, start + eth.header_len(), plan))
    })();
    let (link, ip_start, plan) = plan.ok_or(NoAnswer::Unanswerable)?;
    if !limiter.allow(limit::source_key(&buf[ip_start..]), now) {
        return Err(NoAnswer::Limited);
    }
    write(buf, link, ip_start, plan, lan_mac).ok_or(NoAnswer::Unanswerable)
}

/// Writes the answer `plan` describes over the frame whose IP packet lies
/// at `ip_start`.
fn write(
    buf: &mut [u8],
    link: EthernetRepr,
    ip_start: usize,
    plan: Plan,
    lan_mac: MacAddr,
) -> Option<Forward> {
    // Everything needed from the old headers is now in `link` and `plan`:
    // the new headers may overwrite the old Ethernet header.
    let link = EthernetRepr {
        dst: link.src,
        src: lan_mac,
        ..link
    };
    let icmp = ip_start.checked_sub(ICMP_HEADER_LEN)?;
    let ip = icmp.checked_sub(plan.header_len())?;
    let new_start = ip.checked_sub(link.header_len())?;
    // In bounds: new_start <= ip <= icmp <= ip_start, and the quote lies
    // inside the packet, which `plan_*` checked lies inside the frame.
    let quote_end = ip_start + plan.quote_len;
    link.emit(&mut buf[new_start..ip]).ok()?;
    match plan.header {
        Header::V4(h) => h.emit(&mut buf[ip..icmp]),
        Header::V6(h) => h.emit(&mut buf[ip..icmp]),
    }
    .ok()?;
    buf[icmp..ip_start].copy_from_slice(&plan.icmp);
    let c = checksum::finish(checksum::sum(&buf[icmp..quote_end], plan.pseudo_header));
    buf[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    Some(Forward {
        egress: Egress::Lan,
        start: new_start,
        len: quote_end - new_start,
    })
}

/// The reply's IP header.
enum Header {
    V4(Ipv4Repr),
    V6(Ipv6Repr),
}

/// What the reply needs from the offending packet, read before anything is
/// overwritten.
struct Plan {
    header: Header,
    /// The ICMP header, checksum zero.
    icmp: [u8; ICMP_HEADER_LEN],
    /// The running sum of the pseudo-header the checksum covers (ICMPv6), or 0.
    pseudo_header: u64,
    /// How much of the offending packet the reply quotes.
    quote_len: usize,
}

impl Plan {
    fn header_len(&self) -> usize {
        match self.header {
            Header::V4(_) => ipv4::HEADER_LEN,
            Header::V6(_) => ipv6::HEADER_LEN,
        }
    }
}

/// The "fragmentation needed" for the IPv4 packet `ip` (Ethernet padding
/// included), or `None` when it must not be answered.
fn plan_v4(
    ip: &[u8],
    link_multicast: bool,
    source: Option<Ipv4Addr>,
    error: IcmpError,
) -> Option<Plan> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    // A bad header checksum may mean a damaged source address: whoever it
    // names did not send this.
    if link_multicast
        || !p.verify_checksum()
        || p.frag_offset() != 0
        || !is_host_v4(p.src_addr())
        || !is_host_v4(p.dst_addr())
    {
        return None;
    }
    // An ICMP packet too short to show its type is not answered either.
    if p.protocol() == ip_protocol::ICMP
        && p.payload()
            .first()
            .is_none_or(|t| ICMPV4_ERRORS.contains(t))
    {
        return None;
    }
    let quote_len =
        usize::from(p.total_len()).min(MAX_REPLY_V4 - ipv4::HEADER_LEN - ICMP_HEADER_LEN);
    Some(Plan {
        header: Header::V4(Ipv4Repr {
            src: source.unwrap_or(p.dst_addr()),
            dst: p.src_addr(),
            protocol: ip_protocol::ICMP,
            ttl: HOP_LIMIT,
            tos: TOS_INTERNETWORK_CONTROL,
            ident: 0,
            dont_frag: false,
            // At most 556: fits.
            payload_len: (ICMP_HEADER_LEN + quote_len) as u16,
        }),
        icmp: error.header(false),
        pseudo_header: 0,
        quote_len,
    })
}

/// The "packet too big" for the IPv6 packet `ip` (Ethernet padding
/// included), or `None` when it must not be answered.
///
/// Unlike IPv4, a packet to a multicast address is answered (RFC 4443,
/// section 2.4 (e.3)), so that path MTU discovery works for multicast, but
/// only from a configured source: the multicast destination cannot be one.
fn plan_v6(ip: &[u8], source: Option<Ipv6Addr>, error: IcmpError) -> Option<Plan> {
    let p = Ipv6Packet::new_checked(ip).ok()?;
    if p.has_extension_headers() || !is_host_v6(p.src_addr()) {
        return None;
    }
    if p.next_header() == ip_protocol::ICMPV6
        && p.payload()
            .first()
            .is_none_or(|&t| t < ICMPV6_INFORMATIONAL)
    {
        return None;
    }
    let src = source.unwrap_or(p.dst_addr());
    let dst = p.src_addr();
    if !is_host_v6(src) {
        return None;
    }
    let quote_len = (ipv6::HEADER_LEN + usize::from(p.payload_len()))
        .min(MAX_REPLY_V6 - ipv6::HEADER_LEN - ICMP_HEADER_LEN);
    // At most 1240: fits.
    let payload_len = (ICMP_HEADER_LEN + quote_len) as u16;
    Some(Plan {
        header: Header::V6(Ipv6Repr {
            src,
            dst,
            next_header: ip_protocol::ICMPV6,
            hop_limit: HOP_LIMIT,
            traffic_class: 0,
            flow_label: 0,
            payload_len,
        }),
        icmp: error.header(true),
        pseudo_header: checksum::pseudo_header_v6(
            &src.octets(),
            &dst.octets(),
            ip_protocol::ICMPV6,
            u32::from(payload_len),
        ),
        quote_len,
    })
}

/// True when `a` can name one host, as an error's source or destination
/// must (RFC 1812, section 4.3.2.7): not 0.0.0.0, loopback, multicast, nor
/// 240/4 (class E, the limited broadcast included).
#[inline]
fn is_host_v4(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240)
}

/// True when `a` can name one host (RFC 4443, section 2.4 (e.6)).
#[inline]
fn is_host_v6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast())
}

#[cfg(test)]
mod tests {
    use detour_testkit::frames;

    use super::*;

    const HEADROOM: usize = 256;
    const LAN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const MTU: u16 = 1452;
    const SENDER_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
    const FAR_V4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 9);
    const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const SENDER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 5);
    const FAR_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 9);
    const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    const SOURCE: IcmpSource = IcmpSource {
        v4: Some(GATEWAY_V4),
        v6: Some(GATEWAY_V6),
    };

    /// An Ethernet frame with an IPv4 packet of `len` bytes.
    fn frame_v4(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Vec<u8> {
        frames::ethernet(EtherType::IPV4, &frames::ipv4_packet(src, dst, len))
    }

    /// An Ethernet frame with an IPv6 packet of `len` bytes (UDP).
    fn frame_v6(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Vec<u8> {
        frames::udp(src.into(), dst.into(), 1000, 2000, len - 48)
    }

    /// `frame` (IPv4) turned into an ICMP message of type `icmp_type`.
    fn icmp_v4(frame: &[u8], icmp_type: u8) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[14 + 9] = ip_protocol::ICMP;
        f[14 + 20] = icmp_type;
        Ipv4Packet::new_checked(&mut f[14..])
            .unwrap()
            .fill_checksum();
        f
    }

    /// `frame` (IPv6) turned into an ICMPv6 message of type `icmp_type`.
    fn icmp_v6(frame: &[u8], icmp_type: u8) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[14 + 6] = ip_protocol::ICMPV6;
        f[14 + 40] = icmp_type;
        f
    }

    /// The "too big" answer, with no rate limit.
    fn too_big(
        buf: &mut [u8],
        start: usize,
        len: usize,
        mtu: u16,
        lan_mac: MacAddr,
        source: IcmpSource,
    ) -> Option<Forward> {
        let mut unlimited = IcmpLimiter::new(IcmpRate {
            per_second: 0,
            burst: 0,
        });
        let now = std::time::Instant::now();
        let error = IcmpError::TooBig { mtu };
        super::answer(
            buf,
            (start, len),
            error,
            lan_mac,
            source,
            (&mut unlimited, now),
        )
        .ok()
    }

    /// `frame` at offset `start` of a 4096-byte buffer.
    fn buffer_at(frame: &[u8], start: usize) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        buf[start..start + frame.len()].copy_from_slice(frame);
        buf
    }

    fn answer(frame: &[u8], source: IcmpSource) -> Option<(Vec<u8>, Forward)> {
        let mut buf = buffer_at(frame, HEADROOM);
        let f = too_big(&mut buf, HEADROOM, frame.len(), MTU, LAN_MAC, source)?;
        Some((buf, f))
    }

    /// Checks the reply to the IPv4 packet `original` (untagged frame), sent
    /// from `from`; returns the length of the quote.
    fn check_v4(buf: &[u8], f: &Forward, original: &[u8], from: Ipv4Addr) -> usize {
        assert_eq!(f.egress, Egress::Lan);
        assert_eq!(f.start, HEADROOM + 14 - 42);
        let frame = &buf[f.start..f.start + f.len];
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), frames::SRC_MAC, "back to the sender");
        assert_eq!(eth.src_addr(), LAN_MAC);
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(usize::from(ip.total_len()), f.len - 14, "no padding");
        assert!(ip.verify_checksum());
        assert_eq!((ip.header_len(), ip.tos(), ip.ident()), (20, 0xc0, 0));
        assert!(!ip.dont_frag() && !ip.is_fragment());
        assert_eq!((ip.ttl(), ip.protocol()), (64, ip_protocol::ICMP));
        assert_eq!(ip.src_addr(), from);
        assert_eq!(ip.dst_addr(), SENDER_V4);
        let icmp = ip.payload();
        assert_eq!(checksum::fold(checksum::sum(icmp, 0)), 0xffff, "ICMP sum");
        assert_eq!(icmp[..2], [3, 4], "fragmentation needed");
        assert_eq!(icmp[4..6], [0, 0], "unused");
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), MTU);
        let quote = &icmp[8..];
        assert_eq!(quote, &original[..quote.len()], "the packet's first bytes");
        quote.len()
    }

    /// As [`check_v4`] for IPv6.
    fn check_v6(buf: &[u8], f: &Forward, original: &[u8], from: Ipv6Addr) -> usize {
        assert_eq!(f.egress, Egress::Lan);
        assert_eq!(f.start, HEADROOM + 14 - 62);
        let frame = &buf[f.start..f.start + f.len];
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), frames::SRC_MAC, "back to the sender");
        assert_eq!(eth.src_addr(), LAN_MAC);
        assert_eq!(eth.ethertype(), EtherType::IPV6);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(40 + usize::from(ip.payload_len()), f.len - 14);
        assert_eq!((ip.traffic_class(), ip.flow_label()), (0, 0));
        assert_eq!(
            (ip.next_header(), ip.hop_limit()),
            (ip_protocol::ICMPV6, 64)
        );
        assert_eq!(ip.src_addr(), from);
        assert_eq!(ip.dst_addr(), SENDER_V6);
        let icmp = ip.payload();
        let ph = checksum::pseudo_header_v6(
            &from.octets(),
            &SENDER_V6.octets(),
            ip_protocol::ICMPV6,
            icmp.len() as u32,
        );
        assert_eq!(
            checksum::fold(checksum::sum(icmp, ph)),
            0xffff,
            "ICMPv6 sum"
        );
        assert_eq!(icmp[..2], [2, 0], "packet too big");
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            u32::from(MTU)
        );
        let quote = &icmp[8..];
        assert_eq!(quote, &original[..quote.len()], "the packet's first bytes");
        quote.len()
    }

    #[test]
    fn ipv4_sender_hears_fragmentation_needed_with_the_whole_packet_quoted() {
        let frame = frame_v4(SENDER_V4, FAR_V4, 100);
        let (buf, f) = answer(&frame, SOURCE).unwrap();
        assert_eq!(f.len, 14 + 20 + 8 + 100);
        assert_eq!(check_v4(&buf, &f, &frame[14..], GATEWAY_V4), 100);
    }

    #[test]
    fn ipv4_reply_is_cut_to_576_bytes() {
        let frame = frame_v4(SENDER_V4, FAR_V4, 1500);
        let (buf, f) = answer(&frame, SOURCE).unwrap();
        assert_eq!(f.len, 14 + 576);
        assert_eq!(check_v4(&buf, &f, &frame[14..], GATEWAY_V4), 548);
    }

    #[test]
    fn ipv4_without_a_source_answers_from_the_destination() {
        let frame = frame_v4(SENDER_V4, FAR_V4, 100);
        let (buf, f) = answer(&frame, IcmpSource::default()).unwrap();
        check_v4(&buf, &f, &frame[14..], FAR_V4);
    }

    #[test]
    fn ipv4_quote_keeps_options_and_leaves_padding_out() {
        let frame =
            frames::with_ipv4_options(&frames::udp(SENDER_V4.into(), FAR_V4.into(), 1, 2, 0), 2);
        let mut padded = frame.clone();
        padded.resize(60, 0xee);
        let (buf, f) = answer(&padded, SOURCE).unwrap();
        let quoted = check_v4(&buf, &f, &frame[14..], GATEWAY_V4);
        assert_eq!(quoted, 28 + 8, "options quoted, padding not");
    }

    #[test]
    fn tagged_frames_are_answered_on_their_vlan() {
        for (frame, ip_len) in [
            (frame_v4(SENDER_V4, FAR_V4, 100), 20),
            (frame_v6(SENDER_V6, FAR_V6, 100), 40),
        ] {
            let tagged = frames::with_vlan(&frame, 42);
            let (buf, f) = answer(&tagged, SOURCE).unwrap();
            assert_eq!(f.start, HEADROOM + 18 - 18 - ip_len - 8);
            let eth = EthernetFrame::new_checked(&buf[f.start..f.start + f.len]).unwrap();
            assert_eq!(eth.vlan().map(|t| t.vid), Some(42));
            assert_eq!(eth.ethertype(), EtherType(frames::get_u16(&frame, 12)));
            assert_eq!((eth.dst_addr(), eth.src_addr()), (frames::SRC_MAC, LAN_MAC));
            assert_eq!(&eth.payload()[ip_len + 8..], &frame[14..], "all quoted");
        }
    }

    #[test]
    fn icmpv4_errors_are_not_answered_but_queries_are() {
        let frame = frame_v4(SENDER_V4, FAR_V4, 100);
        for t in ICMPV4_ERRORS {
            assert_eq!(answer(&icmp_v4(&frame, t), SOURCE), None, "type {t}");
        }
        for t in [0, 8, 13] {
            let icmp = icmp_v4(&frame, t);
            let (buf, f) = answer(&icmp, SOURCE).unwrap();
            check_v4(&buf, &f, &icmp[14..], GATEWAY_V4);
        }
        // An ICMP packet with no room for a type.
        let empty = icmp_v4(&frame_v4(SENDER_V4, FAR_V4, 21), 8);
        let mut empty = empty[..34].to_vec();
        empty[14 + 3] = 20;
        Ipv4Packet::new_checked(&mut empty[14..])
            .unwrap()
            .fill_checksum();
        assert_eq!(answer(&empty, SOURCE), None);
    }

    #[test]
    fn ipv4_to_or_from_no_single_host_is_not_answered() {
        let cases = [
            (Ipv4Addr::UNSPECIFIED, FAR_V4),
            (Ipv4Addr::BROADCAST, FAR_V4),
            (Ipv4Addr::new(224, 0, 0, 1), FAR_V4),
            (Ipv4Addr::new(127, 0, 0, 1), FAR_V4),
            (Ipv4Addr::new(240, 0, 0, 1), FAR_V4),
            (SENDER_V4, Ipv4Addr::new(239, 1, 2, 3)),
            (SENDER_V4, Ipv4Addr::BROADCAST),
        ];
        for (src, dst) in cases {
            assert_eq!(
                answer(&frame_v4(src, dst, 100), SOURCE),
                None,
                "{src} -> {dst}"
            );
        }
        let frame = frame_v4(SENDER_V4, FAR_V4, 100);
        let mut broadcast = frame.clone();
        broadcast[..6].copy_from_slice(&MacAddr::BROADCAST.0);
        assert_eq!(answer(&broadcast, SOURCE), None, "link-layer broadcast");
        let mut group_source = frame;
        group_source[6] |= 1;
        assert_eq!(answer(&group_source, SOURCE), None, "group Ethernet source");
    }

    #[test]
    fn only_first_fragments_are_answered() {
        let frame = frame_v4(SENDER_V4, FAR_V4, 100);
        let fragment = |flags_offset: u16| {
            let mut f = frames::set_u16(&frame, 14 + 6, flags_offset);
            Ipv4Packet::new_checked(&mut f[14..])
                .unwrap()
                .fill_checksum();
            f
        };
        let first = fragment(0x2000);
        let (buf, f) = answer(&first, SOURCE).unwrap();
        check_v4(&buf, &f, &first[14..], GATEWAY_V4);
        assert_eq!(answer(&fragment(0x2010), SOURCE), None);
        assert_eq!(answer(&fragment(0x0001), SOURCE), None, "the last one");
    }

    #[test]
    fn ipv6_sender_hears_packet_too_big() {
        let frame = frame_v6(SENDER_V6, FAR_V6, 100);
        let (buf, f) = answer(&frame, SOURCE).unwrap();
        assert_eq!(f.len, 14 + 40 + 8 + 100);
        check_v6(&buf, &f, &frame[14..], GATEWAY_V6);
        let (buf, f) = answer(&frame, IcmpSource::default()).unwrap();
        check_v6(&buf, &f, &frame[14..], FAR_V6);
    }

    #[test]
    fn ipv6_reply_is_cut_to_1280_bytes() {
        let frame = frame_v6(SENDER_V6, FAR_V6, 1500);
        let (buf, f) = answer(&frame, SOURCE).unwrap();
        assert_eq!(f.len, 14 + 1280);
        assert_eq!(check_v6(&buf, &f, &frame[14..], GATEWAY_V6), 1232);
    }

    #[test]
    fn icmpv6_errors_and_extension_headers_are_not_answered() {
        let frame = frame_v6(SENDER_V6, FAR_V6, 100);
        for t in [0, 1, 2, 3, 4, 127] {
            assert_eq!(answer(&icmp_v6(&frame, t), SOURCE), None, "type {t}");
        }
        for t in [128, 129, 135] {
            let icmp = icmp_v6(&frame, t);
            let (buf, f) = answer(&icmp, SOURCE).unwrap();
            check_v6(&buf, &f, &icmp[14..], GATEWAY_V6);
        }
        for nh in [0, 43, 44, 60] {
            let ext = frames::with_ipv6_extension(&frame, nh);
            assert_eq!(answer(&ext, SOURCE), None, "next header {nh}");
        }
    }

    #[test]
    fn ipv6_multicast_destinations_are_answered_from_a_configured_source_only() {
        let group: Ipv6Addr = "ff0e::1".parse().unwrap();
        let mut frame = frame_v6(SENDER_V6, group, 100);
        frame[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        let (buf, f) = answer(&frame, SOURCE).unwrap();
        check_v6(&buf, &f, &frame[14..], GATEWAY_V6);
        assert_eq!(answer(&frame, IcmpSource::default()), None);
        for src in [Ipv6Addr::UNSPECIFIED, Ipv6Addr::LOCALHOST, group] {
            assert_eq!(answer(&frame_v6(src, FAR_V6, 100), SOURCE), None, "{src}");
        }
    }

    #[test]
    fn a_spent_ttl_is_answered_time_exceeded_with_the_packet_quoted() {
        let limiter = &mut IcmpLimiter::new(IcmpRate::default());
        let now = std::time::Instant::now();
        for (frame, v6) in [
            (frame_v4(SENDER_V4, FAR_V4, 100), false),
            (frame_v6(SENDER_V6, FAR_V6, 100), true),
        ] {
            let mut buf = buffer_at(&frame, HEADROOM);
            let f = super::answer(
                &mut buf,
                (HEADROOM, frame.len()),
                IcmpError::TimeExceeded,
                LAN_MAC,
                SOURCE,
                (&mut *limiter, now),
            )
            .unwrap();
            let reply = &buf[f.start..f.start + f.len];
            let (icmp_at, expected) = match v6 {
                false => (14 + 20, [11, 0]),
                true => (14 + 40, [3, 0]),
            };
            assert_eq!(reply[icmp_at..icmp_at + 2], expected, "time exceeded");
            assert_eq!(reply[icmp_at + 4..icmp_at + 8], [0; 4], "unused");
            assert_eq!(reply[icmp_at + 8..], frame[14..], "the whole packet quoted");
        }
    }

    #[test]
    fn answers_over_the_rate_are_suppressed_and_write_nothing() {
        let mut limiter = IcmpLimiter::new(IcmpRate {
            per_second: 1000,
            burst: 3,
        });
        let now = std::time::Instant::now();
        let frame = frame_v4(SENDER_V4, FAR_V4, 1500);
        let mut results = Vec::new();
        for _ in 0..5 {
            let mut buf = buffer_at(&frame, HEADROOM);
            let error = IcmpError::TooBig { mtu: MTU };
            let r = super::answer(
                &mut buf,
                (HEADROOM, frame.len()),
                error,
                LAN_MAC,
                SOURCE,
                (&mut limiter, now),
            );
            if r.is_err() {
                assert_eq!(buf, buffer_at(&frame, HEADROOM), "untouched");
            }
            results.push(r.map(|_| ()));
        }
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err(NoAnswer::Limited),
                Err(NoAnswer::Limited)
            ]
        );
        // An unanswerable packet takes nothing from the budget.
        let mut buf = buffer_at(&icmp_v4(&frame, 3), HEADROOM);
        let r = super::answer(
            &mut buf,
            (HEADROOM, frame.len()),
            IcmpError::TimeExceeded,
            LAN_MAC,
            SOURCE,
            (&mut limiter, now + std::time::Duration::from_millis(1)),
        );
        assert_eq!(r, Err(NoAnswer::Unanswerable));
    }

    #[test]
    fn no_headroom_or_no_packet_is_no_answer() {
        let v4 = frame_v4(SENDER_V4, FAR_V4, 100);
        let v6 = frame_v6(SENDER_V6, FAR_V6, 100);
        // The reply starts 28 (IPv4) or 48 (IPv6) bytes before the frame.
        for (frame, room) in [(&v4, 28), (&v6, 48)] {
            for start in [10, room - 1] {
                let mut buf = buffer_at(frame, start);
                let before = buf.clone();
                assert_eq!(
                    too_big(&mut buf, start, frame.len(), MTU, LAN_MAC, SOURCE),
                    None
                );
                assert_eq!(buf, before, "nothing written");
            }
            let mut buf = buffer_at(frame, room);
            let f = too_big(&mut buf, room, frame.len(), MTU, LAN_MAC, SOURCE).unwrap();
            assert_eq!(f.start, 0);
        }
        let mut bad_checksum = v4.clone();
        bad_checksum[14 + 10] ^= 1;
        let mut lying = v4.clone();
        lying[14 + 3] = 200;
        let cases = [
            frames::arp(),
            bad_checksum,
            lying,
            v4[..33].to_vec(),
            v6[..60].to_vec(),
            frames::set_u8(&v6, 14, 0x45),
            vec![0xff; 64],
            Vec::new(),
        ];
        for frame in cases {
            assert_eq!(answer(&frame, SOURCE), None, "{frame:02x?}");
        }
        let mut buf = buffer_at(&v4, HEADROOM);
        for (start, len) in [(HEADROOM, 4096), (4096, 0), (usize::MAX, 2)] {
            assert_eq!(too_big(&mut buf, start, len, MTU, LAN_MAC, SOURCE), None);
        }
    }

    proptest::proptest! {
        /// Whatever arrives, at whatever offset and length: no panic, and a
        /// reply lies inside the buffer, with valid checksums.
        #[test]
        fn arbitrary_frames_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1600),
            start in 0usize..300,
            extra in 0usize..16,
            edits in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
            seed in 0usize..5,
            mtu in proptest::prelude::any::<u16>(),
        ) {
            let mut frame = match seed {
                0 => frame_v4(SENDER_V4, FAR_V4, 20 + bytes.len()),
                1 => frame_v6(SENDER_V6, FAR_V6, 48 + bytes.len()),
                2 => frames::with_vlan(&frame_v4(SENDER_V4, FAR_V4, 60), 3),
                3 => icmp_v6(&frame_v6(SENDER_V6, FAR_V6, 60), 128),
                _ => bytes.clone(),
            };
            for (at, b) in edits {
                if let Some(x) = frame.get_mut(at) {
                    *x = b;
                }
            }
            let mut buf = vec![0u8; start];
            buf.extend_from_slice(&frame);
            let len = frame.len();
            for (s, l) in [(start, len), (start, len + extra), (buf.len() + extra, 0)] {
                let mut b = buf.clone();
                if let Some(f) = too_big(&mut b, s, l, mtu, LAN_MAC, SOURCE) {
                    proptest::prop_assert!(f.start + f.len <= b.len());
                    proptest::prop_assert!(f.start + f.len <= s + l);
                    let eth = EthernetFrame::new_checked(&b[f.start..f.start + f.len]).unwrap();
                    let ip_len = match eth.ethertype() {
                        EtherType::IPV4 => {
                            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                            proptest::prop_assert!(ip.verify_checksum());
                            proptest::prop_assert_eq!(checksum::fold(checksum::sum(ip.payload(), 0)), 0xffff);
                            usize::from(ip.total_len())
                        }
                        EtherType::IPV6 => 40 + usize::from(Ipv6Packet::new_checked(eth.payload()).unwrap().payload_len()),
                        other => panic!("reply of type {other:?}"),
                    };
                    proptest::prop_assert_eq!(eth.header_len() + ip_len, f.len);
                }
            }
        }
    }
}
