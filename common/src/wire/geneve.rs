//! GENEVE (RFC 8926) and detour's option.
//!
//! ```text
//! base header
//!  0   2           8 9 10         16                              31
//! +---+-----------+-+-+-----------+-------------------------------+
//! |Ver|  Opt Len  |O|C|   Rsvd    |         Protocol Type         |
//! +---+-----------+-+-+-----------+---------------+---------------+
//! |       Virtual Network Identifier (VNI)        |   Reserved    |
//! +-----------------------------------------------+---------------+
//! |                   options (Opt Len × 4 bytes)                 |
//!
//! detour option (class 0xFFFD, type 0x82, length 5: 24 bytes in all)
//! +-------------------------------+---------------+-----+---------+
//! |      Option Class = FFFD      | Type = 0x82   | R R R|Len = 5 |
//! +-------------------------------+---------------+-----+---------+
//! |        source node id         |     destination node id       |
//! +---------------+---------------+-------------------------------+
//! |   hop limit   |     flags     |        reserved (zero)        |
//! +---------------+---------------+-------------------------------+
//! |                 key id (0: not encrypted)                     |
//! +---------------------------------------------------------------+
//! |                                                               |
//! +                 counter (the AEAD's nonce)                    +
//! |                                                               |
//! +---------------------------------------------------------------+
//! ```
//!
//! With a key id, the inner packet behind the option is sealed under that
//! key of the session between the two nodes, and a 16-byte tag follows it
//! (the end of the UDP payload). What a relay does not change is the
//! associated data ([`associated_data`]): the whole header but the hop
//! limit and flags, which a relay rewrites.

use super::field::{set_u16, set_u32, set_u64, u16_at, u32_at, u64_at};
use super::{Error, Result};

/// Length of the GENEVE base header.
pub const HEADER_LEN: usize = 8;
/// The IANA-assigned GENEVE port.
pub const DEFAULT_PORT: u16 = 6081;

/// detour's option class, from the range RFC 8926 (section 7.2) leaves for
/// experimental use (0xFFF0 to 0xFFFF); "D" for "detour". tcpdump prints it
/// as "class Experimental (0xfffd)".
pub const DETOUR_OPTION_CLASS: u16 = 0xfffd;
/// detour's option type: the high bit marks the option critical (an endpoint
/// that does not understand it must drop the packet, RFC 8926 section 3.5.1);
/// the low bits number the layout, so that a new layout gets a new type.
/// (0x81 was the layout without key id and counter.)
pub const DETOUR_OPTION_TYPE: u8 = 0x82;
/// Length of the option's data in 4-byte words, as the Length field says.
pub const DETOUR_OPTION_DATA_WORDS: u8 = 5;
/// Length of the whole option, its 4-byte header included.
pub const DETOUR_OPTION_LEN: usize = 4 + 4 * DETOUR_OPTION_DATA_WORDS as usize;
/// The GENEVE header a detour packet carries: base header and the one option.
pub const DETOUR_GENEVE_LEN: usize = HEADER_LEN + DETOUR_OPTION_LEN;

/// The key id of a frame that is not encrypted (`encryption = "none"`).
pub const NO_KEY: u32 = 0;

/// Offsets of the option's fields, from the option header on.
mod option_field {
    pub const SRC: usize = 4;
    pub const DST: usize = 6;
    pub const HOP_LIMIT: usize = 8;
    pub const FLAGS: usize = 9;
    pub const RESERVED: usize = 10;
    pub const KEY_ID: usize = 12;
    pub const COUNTER: usize = 16;
}

/// Length of what the AEAD's tag covers besides the inner packet.
pub const ASSOCIATED_DATA_LEN: usize = DETOUR_GENEVE_LEN;

/// The associated data of a sealed frame, from its GENEVE header (base
/// header and detour option): all of it but the hop limit and flags, which
/// relays rewrite (zero in their place).
#[inline]
pub fn associated_data(geneve: &[u8; DETOUR_GENEVE_LEN]) -> [u8; ASSOCIATED_DATA_LEN] {
    let mut ad = *geneve;
    ad[HEADER_LEN + option_field::HOP_LIMIT] = 0;
    ad[HEADER_LEN + option_field::FLAGS] = 0;
    ad
}

/// The key id and counter of a sealed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seal {
    pub key_id: u32,
    pub counter: u64,
}

impl Seal {
    /// What a frame that is not encrypted carries.
    pub const NONE: Seal = Seal {
        key_id: NO_KEY,
        counter: 0,
    };

    #[inline]
    pub fn is_sealed(&self) -> bool {
        self.key_id != NO_KEY
    }

    /// Writes the key id and counter into a detour option that starts at
    /// `option[0]` (at least [`DETOUR_OPTION_LEN`] bytes).
    #[inline]
    pub fn emit(&self, option: &mut [u8]) {
        set_u32(option, option_field::KEY_ID, self.key_id);
        set_u64(option, option_field::COUNTER, self.counter);
    }
}

/// A node of the overlay. 0 and 0xFFFF are reserved and never name a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "api",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct NodeId(pub u16);

impl NodeId {
    /// True for ids that may name a node (1 to 65534).
    #[inline]
    pub const fn is_valid(&self) -> bool {
        self.0 != 0 && self.0 != u16::MAX
    }
}

impl core::fmt::Display for NodeId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The hop limit an encapsulating node writes unless configured otherwise:
/// a direct path needs 1, a path through one relay 2; the rest is slack.
pub const DEFAULT_HOP_LIMIT: u8 = 4;

/// Bits of the detour option's flags byte.
pub mod flags {
    /// Set by a relay when it forwards the packet toward its destination.
    pub const RELAYED: u8 = 0x01;
}

/// A checked view of a GENEVE header and what follows it.
///
/// `new_checked` guarantees that the whole option area is in the buffer.
#[derive(Debug, Clone)]
pub struct GeneveHeader<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GeneveHeader<T> {
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 6 != 0 {
            return Err(Error::Version);
        }
        if b.len() < HEADER_LEN + usize::from(b[0] & 0x3f) * 4 {
            return Err(Error::Truncated);
        }
        Ok(GeneveHeader { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Length of the option area in bytes.
    #[inline]
    pub fn options_len(&self) -> usize {
        usize::from(self.b()[0] & 0x3f) * 4
    }

    /// Length of the base header and the options.
    #[inline]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options_len()
    }

    /// The O bit: a control (OAM) packet.
    #[inline]
    pub fn oam(&self) -> bool {
        self.b()[1] & 0x80 != 0
    }

    /// The C bit: at least one option is critical.
    #[inline]
    pub fn critical(&self) -> bool {
        self.b()[1] & 0x40 != 0
    }

    /// The EtherType of the payload.
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        u16_at(self.b(), 2)
    }

    /// The 24-bit virtual network identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        u32_at(self.b(), 4) >> 8
    }

    /// The option area, uninterpreted.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.header_len()]
    }

    /// The options, one by one; an option whose length runs past the option
    /// area yields [`Error::OptionLength`] and ends the iteration.
    #[inline]
    pub fn option_iter(&self) -> GeneveOptions<'_> {
        GeneveOptions {
            rest: self.options(),
        }
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GeneveHeader<T> {
    #[inline]
    pub fn set_protocol_type(&mut self, ethertype: u16) {
        set_u16(self.buffer.as_mut(), 2, ethertype);
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

/// One GENEVE option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneveOption<'a> {
    pub class: u16,
    /// The type byte; its high bit marks the option critical.
    pub kind: u8,
    pub data: &'a [u8],
}

impl GeneveOption<'_> {
    #[inline]
    pub fn is_critical(&self) -> bool {
        self.kind & 0x80 != 0
    }
}

/// Iterator over the options of a [`GeneveHeader`].
#[derive(Debug, Clone)]
pub struct GeneveOptions<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for GeneveOptions<'a> {
    type Item = Result<GeneveOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = (|| {
            let head = self.rest.get(..4).ok_or(Error::OptionLength)?;
            let len = 4 + usize::from(head[3] & 0x1f) * 4;
            let whole = self.rest.get(..len).ok_or(Error::OptionLength)?;
            Ok((
                GeneveOption {
                    class: u16_at(head, 0),
                    kind: head[2],
                    data: &whole[4..],
                },
                len,
            ))
        })();
        match parsed {
            Ok((option, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(option))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

/// The fields of a GENEVE base header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneveRepr {
    pub oam: bool,
    pub critical: bool,
    pub protocol_type: u16,
    /// 24 bits; higher bits are ignored on emit.
    pub vni: u32,
    /// Length of the options that follow, in bytes: a multiple of 4, at most 252.
    pub options_len: u8,
}

impl GeneveRepr {
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(g: &GeneveHeader<T>) -> Self {
        GeneveRepr {
            oam: g.oam(),
            critical: g.critical(),
            protocol_type: g.protocol_type(),
            vni: g.vni(),
            options_len: g.options_len() as u8,
        }
    }

    /// Writes the 8-byte base header; the caller writes the options after it.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if !self.options_len.is_multiple_of(4) || self.options_len > 252 {
            return Err(Error::Length);
        }
        let b = buf.get_mut(..HEADER_LEN).ok_or(Error::NoRoom)?;
        b[0] = self.options_len / 4;
        b[1] = (u8::from(self.oam) << 7) | (u8::from(self.critical) << 6);
        set_u16(b, 2, self.protocol_type);
        set_u32(b, 4, (self.vni & 0x00ff_ffff) << 8);
        Ok(HEADER_LEN)
    }
}

/// A checked view of the detour option, from its option header on.
#[derive(Debug, Clone)]
pub struct DetourOption<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DetourOption<T> {
    /// Checks class, type and length; the option must start at `buffer[0]`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < DETOUR_OPTION_LEN {
            return Err(Error::Truncated);
        }
        if u16_at(b, 0) != DETOUR_OPTION_CLASS || b[2] != DETOUR_OPTION_TYPE {
            return Err(Error::Protocol);
        }
        if b[3] & 0x1f != DETOUR_OPTION_DATA_WORDS {
            return Err(Error::OptionLength);
        }
        Ok(DetourOption { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    pub fn src_node(&self) -> NodeId {
        NodeId(u16_at(self.b(), option_field::SRC))
    }

    #[inline]
    pub fn dst_node(&self) -> NodeId {
        NodeId(u16_at(self.b(), option_field::DST))
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.b()[option_field::HOP_LIMIT]
    }

    #[inline]
    pub fn flags(&self) -> u8 {
        self.b()[option_field::FLAGS]
    }

    #[inline]
    pub fn seal(&self) -> Seal {
        Seal {
            key_id: u32_at(self.b(), option_field::KEY_ID),
            counter: u64_at(self.b(), option_field::COUNTER),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DetourOption<T> {
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[option_field::HOP_LIMIT] = hop_limit;
    }

    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[option_field::FLAGS] = flags;
    }
}

/// The fields of the detour option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetourOptionRepr {
    pub src: NodeId,
    pub dst: NodeId,
    pub hop_limit: u8,
    pub flags: u8,
    pub seal: Seal,
}

impl DetourOptionRepr {
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(o: &DetourOption<T>) -> Self {
        DetourOptionRepr {
            src: o.src_node(),
            dst: o.dst_node(),
            hop_limit: o.hop_limit(),
            flags: o.flags(),
            seal: o.seal(),
        }
    }

    /// Writes the whole option, header included; returns its length (24).
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        use option_field::{DST, FLAGS, HOP_LIMIT, RESERVED, SRC};
        let b = buf.get_mut(..DETOUR_OPTION_LEN).ok_or(Error::NoRoom)?;
        set_u16(b, 0, DETOUR_OPTION_CLASS);
        b[2] = DETOUR_OPTION_TYPE;
        b[3] = DETOUR_OPTION_DATA_WORDS;
        set_u16(b, SRC, self.src.0);
        set_u16(b, DST, self.dst.0);
        b[HOP_LIMIT] = self.hop_limit;
        b[FLAGS] = self.flags;
        set_u16(b, RESERVED, 0);
        self.seal.emit(b);
        Ok(DETOUR_OPTION_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detour_geneve() -> [u8; DETOUR_GENEVE_LEN] {
        let mut b = [0u8; DETOUR_GENEVE_LEN];
        GeneveRepr {
            oam: false,
            critical: true,
            protocol_type: 0x0800,
            vni: 0x00abcd,
            options_len: DETOUR_OPTION_LEN as u8,
        }
        .emit(&mut b)
        .unwrap();
        DetourOptionRepr {
            src: NodeId(7),
            dst: NodeId(300),
            hop_limit: 4,
            flags: flags::RELAYED,
            seal: Seal {
                key_id: 0x0102_0304,
                counter: 0x1112_1314_1516_1718,
            },
        }
        .emit(&mut b[HEADER_LEN..])
        .unwrap();
        b
    }

    #[test]
    fn detour_header_is_thirty_two_bytes_with_one_critical_option() {
        let b = detour_geneve();
        let g = GeneveHeader::new_checked(&b[..]).unwrap();
        assert_eq!(g.header_len(), 32);
        assert!(g.critical() && !g.oam());
        assert_eq!(g.vni(), 0xabcd);
        let mut options = g.option_iter();
        let o = options.next().unwrap().unwrap();
        assert_eq!((o.class, o.kind, o.data.len()), (0xfffd, 0x82, 20));
        assert!(o.is_critical());
        assert!(options.next().is_none());
        let d = DetourOption::new_checked(g.options()).unwrap();
        assert_eq!((d.src_node(), d.dst_node()), (NodeId(7), NodeId(300)));
        assert_eq!((d.hop_limit(), d.flags()), (4, flags::RELAYED));
        assert_eq!(
            (d.seal().key_id, d.seal().counter),
            (0x0102_0304, 0x1112_1314_1516_1718)
        );
        assert!(d.seal().is_sealed() && !Seal::NONE.is_sealed());
    }

    #[test]
    fn associated_data_is_what_a_relay_leaves_alone() {
        let b = detour_geneve();
        let ad = associated_data(&b);
        assert_eq!(ad[..16], b[..16], "base header, option header, node ids");
        assert_eq!(ad[16..18], [0, 0], "hop limit and flags left out");
        assert_eq!(ad[18..], b[18..], "reserved, key id, counter");
        // A relay's rewrite of hop limit and flags changes none of it.
        let mut relayed = b;
        relayed[HEADER_LEN + 8] -= 1;
        relayed[HEADER_LEN + 9] ^= flags::RELAYED;
        assert_eq!(associated_data(&relayed), ad);
    }

    #[test]
    fn option_whose_length_lies_ends_the_iteration_with_an_error() {
        let mut b = detour_geneve();
        b[HEADER_LEN + 3] = 8; // claims 32 bytes of data, 20 are there
        let g = GeneveHeader::new_checked(&b[..]).unwrap();
        let mut options = g.option_iter();
        assert_eq!(options.next(), Some(Err(Error::OptionLength)));
        assert_eq!(options.next(), None);
        assert_eq!(
            DetourOption::new_checked(g.options()).unwrap_err(),
            Error::OptionLength
        );
    }

    #[test]
    fn wrong_version_class_or_type_is_refused() {
        let mut b = detour_geneve();
        b[0] |= 0x40;
        assert_eq!(
            GeneveHeader::new_checked(&b[..]).unwrap_err(),
            Error::Version
        );
        let mut b = detour_geneve();
        b[HEADER_LEN + 2] = 0x01;
        assert_eq!(
            DetourOption::new_checked(&b[HEADER_LEN..]).unwrap_err(),
            Error::Protocol
        );
    }

    #[test]
    fn option_area_longer_than_the_buffer_is_truncated() {
        let b = detour_geneve();
        assert_eq!(
            GeneveHeader::new_checked(&b[..31]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn reserved_node_ids_are_not_valid() {
        assert!(!NodeId(0).is_valid());
        assert!(!NodeId(u16::MAX).is_valid());
        assert!(NodeId(1).is_valid());
    }
}
