//! UDP (RFC 768).
//!
//! ```text
//!  0                              16                              31
//! +-------------------------------+-------------------------------+
//! |          source port          |       destination port        |
//! +-------------------------------+-------------------------------+
//! |            length             |           checksum            |
//! +-------------------------------+-------------------------------+
//! ```

use super::checksum;
use super::field::{set_u16, u16_at};
use super::{Error, Result};

pub const HEADER_LEN: usize = 8;

/// A checked view of a UDP datagram.
///
/// `new_checked` guarantees `8 <= length <= buffer length`.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(u16_at(b, 4));
        if len < HEADER_LEN {
            return Err(Error::Length);
        }
        if b.len() < len {
            return Err(Error::Truncated);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        u16_at(self.b(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// Header plus payload, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    /// Never true for a checked datagram (the length includes the header);
    /// present because clippy expects `is_empty` beside `len`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The checksum field; zero means "none" (IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        u16_at(self.b(), 6)
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum is absent (zero) or correct under the given
    /// pseudo-header sum (see [`checksum::pseudo_header_v4`] and `_v6`).
    #[inline]
    pub fn verify_checksum(&self, pseudo_header: u64) -> bool {
        self.checksum() == 0
            || checksum::fold(checksum::sum(
                &self.b()[..usize::from(self.len())],
                pseudo_header,
            )) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    fn b_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        let old = self.src_port();
        set_u16(self.b_mut(), 0, port);
        self.update_checksum(old, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        set_u16(self.b_mut(), 2, port);
        self.update_checksum(old, port);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.b_mut(), 6, value);
    }

    /// Computes the checksum from scratch under the given pseudo-header sum.
    #[inline]
    pub fn fill_checksum(&mut self, pseudo_header: u64) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let c = checksum::finish(checksum::sum(&self.b()[..len], pseudo_header));
        self.set_checksum(transmitted(c));
    }

    /// Adjusts the checksum for a 16-bit word of the datagram or of its
    /// pseudo-header that changed from `old` to `new` (RFC 1624). A zero
    /// checksum means "none" and stays zero.
    #[inline]
    pub fn update_checksum(&mut self, old: u16, new: u16) {
        let hc = self.checksum();
        if hc != 0 {
            self.set_checksum(transmitted(checksum::update(hc, old, new)));
        }
    }

    /// [`Self::update_checksum`] for a changed run of words (an address).
    #[inline(always)]
    pub fn update_checksum_bytes(&mut self, old: &[u8], new: &[u8]) {
        let hc = self.checksum();
        if hc != 0 {
            self.set_checksum(transmitted(checksum::update_bytes(hc, old, new)));
        }
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.b_mut()[HEADER_LEN..len]
    }
}

/// RFC 768: a computed checksum of zero is sent as all ones, since zero on
/// the wire means "no checksum".
fn transmitted(c: u16) -> u16 {
    if c == 0 { 0xffff } else { c }
}

/// The fields of a UDP header other than the ones derived from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: u16,
}

impl UdpRepr {
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Self {
        UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() - HEADER_LEN as u16,
        }
    }

    /// Writes the header at the start of `buf` with a zero checksum; fill
    /// it afterwards with [`UdpPacket::fill_checksum`] once the payload is in.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self
            .payload_len
            .checked_add(HEADER_LEN as u16)
            .ok_or(Error::Length)?;
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        set_u16(b, 0, self.src_port);
        set_u16(b, 2, self.dst_port);
        set_u16(b, 4, len);
        set_u16(b, 6, 0);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram() -> [u8; 12] {
        let mut b = [0u8; 12];
        UdpRepr {
            src_port: 40000,
            dst_port: 6081,
            payload_len: 4,
        }
        .emit(&mut b)
        .unwrap();
        b[8..].copy_from_slice(b"ping");
        b
    }

    #[test]
    fn checksum_fills_verifies_and_follows_a_port_change() {
        let ph = checksum::pseudo_header_v4(&[10, 0, 0, 1], &[10, 0, 0, 2], 17, 12);
        let mut b = datagram();
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.fill_checksum(ph);
        assert!(u.verify_checksum(ph));
        u.set_src_port(1234);
        assert!(u.verify_checksum(ph));
        assert_eq!(u.payload(), b"ping");
    }

    #[test]
    fn zero_checksum_means_none_and_survives_updates() {
        let mut b = datagram();
        let mut u = UdpPacket::new_checked(&mut b[..]).unwrap();
        u.set_dst_port(9);
        assert_eq!(u.checksum(), 0);
        assert!(u.verify_checksum(12345));
    }

    #[test]
    fn length_below_the_header_or_past_the_buffer_is_refused() {
        let mut b = datagram();
        b[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(UdpPacket::new_checked(&b[..]).unwrap_err(), Error::Length);
        b[4..6].copy_from_slice(&13u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }
}
