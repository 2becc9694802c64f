//! IPv4 (RFC 791). Options and fragments are recognised, not interpreted.
//!
//! ```text
//!  0       4       8              16    19                        31
//! +-------+-------+---------------+-----+--------------------------+
//! |version|  IHL  |   DSCP | ECN  |        total length           |
//! +-------+-------+---------------+-----+--------------------------+
//! |        identification         |flags|     fragment offset      |
//! +---------------+---------------+-----+--------------------------+
//! |     TTL       |   protocol    |        header checksum         |
//! +---------------+---------------+--------------------------------+
//! |                        source address                          |
//! |                      destination address                       |
//! |                  options (IHL > 5), up to 40 bytes             |
//! ```

use core::net::Ipv4Addr;

use super::checksum;
use super::field::{array, set_u16, u16_at};
use super::{Error, Result};

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// The longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A checked view of an IPv4 packet.
///
/// `new_checked` guarantees `20 <= header_len <= total_len <= buffer length`;
/// bytes after `total_len` (Ethernet padding) are not part of the packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(Error::Version);
        }
        let header_len = usize::from(b[0] & 0x0f) * 4;
        if header_len < HEADER_LEN {
            return Err(Error::Length);
        }
        if b.len() < header_len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(u16_at(b, 2));
        if total_len < header_len {
            return Err(Error::Length);
        }
        if b.len() < total_len {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Header length in bytes, options included (20 to 60).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[0] & 0x0f) * 4
    }

    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > HEADER_LEN
    }

    /// The option bytes, uninterpreted.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The whole type-of-service byte: DSCP and ECN.
    #[inline]
    pub fn tos(&self) -> u8 {
        self.b()[1]
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x3
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        u16_at(self.b(), 6) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        u16_at(self.b(), 6) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (u16_at(self.b(), 6) & OFFSET_MASK) << 3
    }

    /// True for any fragment, first or later.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        u16_at(self.b(), 6) & (FLAG_MF | OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.b()[8]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.b()[9]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 10)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.b(), 12))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(array::<4>(self.b(), 16))
    }

    /// True when the header checksum is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(&self.b()[..self.header_len()], 0)) == 0xffff
    }

    /// The bytes after the header, up to `total_len`.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn b_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the TTL and updates the checksum incrementally (RFC 1624).
    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let old = u16_at(self.b(), 8);
        self.b_mut()[8] = ttl;
        let new = u16_at(self.b(), 8);
        let hc = checksum::update(self.checksum(), old, new);
        self.set_checksum(hc);
    }

    /// Sets the source address and updates the checksum incrementally.
    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.replace_words(12, &addr.octets());
    }

    /// Sets the destination address and updates the checksum incrementally.
    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.replace_words(16, &addr.octets());
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.b_mut(), 10, value);
    }

    /// Recomputes the header checksum from scratch.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.b()[..hl]);
        self.set_checksum(c);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.b_mut()[start..end]
    }

    #[inline]
    fn replace_words(&mut self, at: usize, new: &[u8; 4]) {
        let old: [u8; 4] = array(self.b(), at);
        self.b_mut()[at..at + 4].copy_from_slice(new);
        let hc = checksum::update_bytes(self.checksum(), &old, new);
        self.set_checksum(hc);
    }
}

/// The fields of an IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Length of what follows the header.
    pub payload_len: u16,
}

impl Ipv4Repr {
    /// Reads the fields of an unfragmented packet; options are skipped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Self {
        Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            payload_len: p.total_len() - p.header_len() as u16,
        }
    }

    /// Writes a 20-byte header with a correct checksum at the start of `buf`.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let total = self
            .payload_len
            .checked_add(HEADER_LEN as u16)
            .ok_or(Error::Length)?;
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        b[0] = 0x45;
        b[1] = self.tos;
        set_u16(b, 2, total);
        set_u16(b, 4, self.ident);
        set_u16(b, 6, if self.dont_frag { FLAG_DF } else { 0 });
        b[8] = self.ttl;
        b[9] = self.protocol;
        set_u16(b, 10, 0);
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        let c = checksum::checksum(b);
        set_u16(b, 10, c);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_packet() -> [u8; 28] {
        let mut b = [0u8; 28];
        Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(198, 51, 100, 7),
            protocol: 17,
            ttl: 64,
            tos: 0xb8,
            ident: 0x1234,
            dont_frag: true,
            payload_len: 8,
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn emitted_header_has_a_valid_checksum_and_reads_back() {
        let b = udp_packet();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.dscp(), 46);
        assert!(p.dont_frag() && !p.is_fragment() && !p.has_options());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn bytes_after_total_length_are_padding_not_payload() {
        let mut b = [0u8; 60];
        b[..28].copy_from_slice(&udp_packet());
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn fragments_and_options_are_recognised() {
        let mut b = [0u8; 32];
        b[..28].copy_from_slice(&udp_packet());
        b[0] = 0x46; // IHL 6: four bytes of options
        b[2..4].copy_from_slice(&32u16.to_be_bytes());
        b[6..8].copy_from_slice(&FLAG_MF.to_be_bytes()); // first fragment
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.has_options() && p.is_fragment() && p.more_frags());
        assert_eq!(p.options().len(), 4);
        b[6..8].copy_from_slice(&0x0010u16.to_be_bytes()); // last fragment, offset 128
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.is_fragment() && !p.more_frags());
        assert_eq!(p.frag_offset(), 128);
    }

    #[test]
    fn lying_lengths_are_refused() {
        let good = udp_packet();
        type Edit = fn(&mut [u8; 28]);
        let cases: [(Edit, Error); 5] = [
            (|b| b[0] = 0x65, Error::Version),
            (|b| b[0] = 0x44, Error::Length),
            (|b| b[0] = 0x4f, Error::Truncated),
            (
                |b| b[2..4].copy_from_slice(&19u16.to_be_bytes()),
                Error::Length,
            ),
            (
                |b| b[2..4].copy_from_slice(&29u16.to_be_bytes()),
                Error::Truncated,
            ),
        ];
        for (edit, want) in cases {
            let mut b = good;
            edit(&mut b);
            assert_eq!(Ipv4Packet::new_checked(&b[..]).unwrap_err(), want);
        }
        assert_eq!(
            Ipv4Packet::new_checked(&good[..19]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn address_and_ttl_setters_keep_the_checksum_valid() {
        let mut b = udp_packet();
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        p.set_src_addr(Ipv4Addr::new(10, 1, 2, 3));
        p.set_dst_addr(Ipv4Addr::new(10, 255, 0, 9));
        p.set_ttl(1);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(p.ttl(), 1);
    }
}
