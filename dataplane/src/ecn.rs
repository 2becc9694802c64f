//! Explicit Congestion Notification across the tunnel (RFC 6040).
//!
//! Encapsulation copies the inner packet's whole TOS / traffic class, ECN
//! field included, into the outer header (RFC 6040's normal mode; the
//! encapsulation template does it, `detour_common::wire::encap`), so that a
//! congested underlay router can mark the outer header CE. Decapsulation
//! carries that mark into the inner packet by the table of RFC 6040, section
//! 4.2, here [`combine`]; without it the congestion signal would end at the
//! tunnel and the senders would learn of it only from loss.

use detour_common::wire::checksum;

use crate::rewrite::Discard;

/// The ECN field: the low two bits of the TOS / traffic class.
pub const MASK: u8 = 0b11;
pub const NOT_ECT: u8 = 0b00;
pub const ECT_1: u8 = 0b01;
pub const ECT_0: u8 = 0b10;
pub const CE: u8 = 0b11;

/// The inner packet's ECN field after decapsulation, from its own and the
/// outer header's (RFC 6040, section 4.2, figure 4); `None`: drop it. Outer
/// CE on a packet that is not ECN-capable is the one combination dropped;
/// the rest keep the inner field, but for CE (and ECT(1), which outer ECT(1)
/// over inner ECT(0) carries) coming from outside.
#[inline]
pub fn combine(inner: u8, outer: u8) -> Option<u8> {
    match (inner, outer) {
        (NOT_ECT, CE) => None,
        (NOT_ECT, _) => Some(NOT_ECT),
        (ECT_0, ECT_1) => Some(ECT_1),
        (_, CE) => Some(CE),
        (inner, _) => Some(inner),
    }
}

/// Writes into the inner IP packet `ip` (header checked by the caller) the
/// ECN field [`combine`] gives for the outer field `outer`, keeping an IPv4
/// header checksum right (RFC 1624); refuses the packet that must be
/// dropped.
#[inline]
pub fn decapsulate(outer: u8, ip: &mut [u8]) -> Result<(), Discard> {
    // The common case, nothing to combine, in one compare.
    if outer == NOT_ECT {
        return Ok(());
    }
    let v4 = match ip.first() {
        Some(b) => b >> 4 == 4,
        None => return Err(Discard::Malformed),
    };
    let Some(&b1) = ip.get(1) else {
        return Err(Discard::Malformed);
    };
    let inner = if v4 { b1 & MASK } else { (b1 >> 4) & MASK };
    let combined = combine(inner, outer).ok_or(Discard::CeNotEct)?;
    if combined == inner {
        return Ok(());
    }
    if v4 {
        let checksum_at = ip.get(10..12).ok_or(Discard::Malformed)?;
        let old = [ip[0], b1];
        let new = [ip[0], (b1 & !MASK) | combined];
        let c = u16::from_be_bytes([checksum_at[0], checksum_at[1]]);
        let c = checksum::update_bytes(c, &old, &new);
        ip[1] = new[1];
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        ip[1] = (b1 & !(MASK << 4)) | (combined << 4);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use detour_common::wire::{Ipv4Packet, Ipv6Packet};
    use detour_testkit::frames;

    use super::*;

    const ALL: [u8; 4] = [NOT_ECT, ECT_1, ECT_0, CE];

    /// A UDP packet from `src` to `dst`, without its Ethernet header.
    fn ip_packet(src: &str, dst: &str) -> Vec<u8> {
        frames::udp(src.parse().unwrap(), dst.parse().unwrap(), 1, 2, 12)[14..].to_vec()
    }

    #[test]
    fn the_combinations_are_rfc_6040s_figure_4() {
        // Rows: inner Not-ECT, ECT(0), ECT(1), CE; columns: outer Not-ECT,
        // ECT(0), ECT(1), CE, as the RFC draws it.
        let figure: [(u8, [Option<u8>; 4]); 4] = [
            (NOT_ECT, [Some(NOT_ECT), Some(NOT_ECT), Some(NOT_ECT), None]),
            (ECT_0, [Some(ECT_0), Some(ECT_0), Some(ECT_1), Some(CE)]),
            (ECT_1, [Some(ECT_1), Some(ECT_1), Some(ECT_1), Some(CE)]),
            (CE, [Some(CE), Some(CE), Some(CE), Some(CE)]),
        ];
        for (inner, row) in figure {
            for (outer, expected) in [NOT_ECT, ECT_0, ECT_1, CE].into_iter().zip(row) {
                assert_eq!(combine(inner, outer), expected, "{inner:02b} {outer:02b}");
            }
        }
    }

    fn v4_with_tos(tos: u8) -> Vec<u8> {
        let mut ip = ip_packet("10.1.0.5", "10.2.0.9");
        ip[1] = tos;
        let mut p = Ipv4Packet::new_checked(&mut ip[..]).unwrap();
        p.fill_checksum();
        ip
    }

    #[test]
    fn ipv4_takes_the_mark_with_its_dscp_and_checksum_kept() {
        for inner in ALL {
            for outer in ALL {
                let mut ip = v4_with_tos(0xb8 | inner);
                let result = decapsulate(outer, &mut ip);
                match combine(inner, outer) {
                    None => {
                        assert_eq!(result, Err(Discard::CeNotEct));
                        assert_eq!(ip, v4_with_tos(0xb8 | inner), "a drop writes nothing");
                    }
                    Some(combined) => {
                        assert_eq!(result, Ok(()));
                        assert_eq!(ip[1], 0xb8 | combined, "DSCP kept");
                        assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().verify_checksum());
                    }
                }
            }
        }
    }

    #[test]
    fn ipv6_takes_the_mark_in_its_traffic_class() {
        for inner in ALL {
            for outer in ALL {
                let mut ip = ip_packet("2001:db8:1::5", "2001:db8:2::9");
                // Traffic class 0xb8 | inner, flow label 0x12345.
                ip[0] = 0x60 | 0x0b;
                ip[1] = ((0x8 | inner) << 4) | 0x1;
                ip[2..4].copy_from_slice(&[0x23, 0x45]);
                let result = decapsulate(outer, &mut ip);
                let p = Ipv6Packet::new_checked(&ip[..]).unwrap();
                match combine(inner, outer) {
                    None => assert_eq!(result, Err(Discard::CeNotEct)),
                    Some(combined) => {
                        assert_eq!(result, Ok(()));
                        assert_eq!(p.traffic_class(), 0xb8 | combined);
                        assert_eq!(p.flow_label(), 0x12345, "the flow label kept");
                    }
                }
            }
        }
    }

    #[test]
    fn a_packet_too_short_to_mark_is_malformed() {
        assert_eq!(decapsulate(CE, &mut []), Err(Discard::Malformed));
        assert_eq!(decapsulate(CE, &mut [0x45]), Err(Discard::Malformed));
        assert_eq!(
            decapsulate(CE, &mut [0x45, 0x02, 0, 0]),
            Err(Discard::Malformed)
        );
        assert_eq!(decapsulate(NOT_ECT, &mut []), Ok(()), "nothing to combine");
    }
}
