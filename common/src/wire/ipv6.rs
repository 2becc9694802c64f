//! IPv6 (RFC 8200). Extension headers are recognised, not followed.
//!
//! ```text
//!  0       4               12                                     31
//! +-------+---------------+---------------------------------------+
//! |version| traffic class |              flow label               |
//! +-------+-------+-------+-------+---------------+---------------+
//! |        payload length         |  next header  |   hop limit   |
//! +-------------------------------+---------------+---------------+
//! |                 source address (16 bytes)                     |
//! |               destination address (16 bytes)                  |
//! ```

use core::net::Ipv6Addr;

use super::field::{array, set_u16, set_u32, u16_at, u32_at};
use super::{Error, Result};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Next-header values that are IPv6 extension headers (RFC 8200 and the IANA
/// "IPv6 Extension Header Types" registry), not upper-layer protocols.
pub const EXTENSION_HEADERS: [u8; 11] = [0, 43, 44, 50, 51, 60, 135, 139, 140, 253, 254];

/// True when `next_header` names an extension header.
#[inline]
pub fn is_extension_header(next_header: u8) -> bool {
    EXTENSION_HEADERS.contains(&next_header)
}

/// A checked view of an IPv6 packet.
///
/// `new_checked` guarantees `40 + payload_len <= buffer length`.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Version);
        }
        if b.len() < HEADER_LEN + usize::from(u16_at(b, 4)) {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn traffic_class(&self) -> u8 {
        ((u16_at(self.b(), 0) >> 4) & 0xff) as u8
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        u32_at(self.b(), 0) & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        u16_at(self.b(), 4)
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.b()[6]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.b()[7]
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.b(), 8))
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(array::<16>(self.b(), 24))
    }

    /// True when an extension header follows the fixed header, so that the
    /// upper-layer protocol is not `next_header`.
    #[inline]
    pub fn has_extension_headers(&self) -> bool {
        is_extension_header(self.next_header())
    }

    /// The bytes after the fixed header, up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    fn b_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.b_mut()[7] = hop_limit;
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.b_mut()[8..24].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.b_mut()[24..40].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.b_mut()[HEADER_LEN..end]
    }
}

/// The fields of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// 20 bits; higher bits are ignored on emit.
    pub flow_label: u32,
    pub payload_len: u16,
}

impl Ipv6Repr {
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Self {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: p.payload_len(),
        }
    }

    /// Writes the 40-byte header at the start of `buf`.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        let word0 =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        set_u32(b, 0, word0);
        set_u16(b, 4, self.payload_len);
        b[6] = self.next_header;
        b[7] = self.hop_limit;
        b[8..24].copy_from_slice(&self.src.octets());
        b[24..40].copy_from_slice(&self.dst.octets());
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Ipv6Repr {
        Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8:ffff::42".parse().unwrap(),
            next_header: 17,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0xabcde,
            payload_len: 4,
        }
    }

    #[test]
    fn fields_read_back_as_emitted() {
        let mut b = [0u8; 44];
        repr().emit(&mut b).unwrap();
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), repr());
        assert_eq!(p.payload().len(), 4);
        assert!(!p.has_extension_headers());
    }

    #[test]
    fn extension_headers_are_recognised() {
        let mut b = [0u8; 44];
        for (nh, ext) in [
            (0, true),
            (43, true),
            (44, true),
            (60, true),
            (6, false),
            (58, false),
        ] {
            Ipv6Repr {
                next_header: nh,
                ..repr()
            }
            .emit(&mut b)
            .unwrap();
            let p = Ipv6Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.has_extension_headers(), ext, "next header {nh}");
        }
    }

    #[test]
    fn short_buffers_and_wrong_versions_are_refused() {
        let mut b = [0u8; 44];
        repr().emit(&mut b).unwrap();
        assert_eq!(
            Ipv6Packet::new_checked(&b[..43]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).unwrap_err(),
            Error::Truncated
        );
        b[0] = 0x45;
        assert_eq!(Ipv6Packet::new_checked(&b[..]).unwrap_err(), Error::Version);
    }
}
