//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is the ones' complement of the ones' complement sum of 16-bit
//! big-endian words. Because 2^16 ≡ 1 (mod 2^16 − 1), the sum may be
//! accumulated in wider words and folded at the end; [`sum`] adds 32-bit words
//! into a 64-bit accumulator, which cannot overflow for any frame.

/// Adds `data`, as big-endian 16-bit words, to the running sum `acc`.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 says; only
/// the last piece of a checksummed region may have odd length.
#[inline(always)]
pub fn sum(data: &[u8], acc: u64) -> u64 {
    let mut acc = acc;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (the ones' complement sum, not yet inverted).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum to store in a header: the complement of the folded sum.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// The Internet checksum of `data`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data, 0))
}

/// The running sum of the IPv4 pseudo-header (RFC 768, RFC 793).
#[inline]
pub fn pseudo_header_v4(src: &[u8; 4], dst: &[u8; 4], protocol: u8, len: u16) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    acc + u64::from(protocol) + u64::from(len)
}

/// The running sum of the IPv6 pseudo-header (RFC 8200, section 8.1).
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u64 {
    let acc = sum(src, 0);
    let acc = sum(dst, acc);
    acc + u64::from(next_header) + u64::from(len)
}

/// RFC 1624, equation 3: the checksum `hc` after one 16-bit word of the
/// covered data changed from `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline]
pub fn update(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u64::from(!hc) + u64::from(!old) + u64::from(new);
    !fold(acc)
}

/// [`update`] for a run of words that changed together, such as an address.
///
/// `old` and `new` must have the same, even length (addresses and ports do);
/// bytes past the shorter of the two, or an odd last byte, are ignored.
///
/// Σ~m over the old words is ≡ −Σm (mod 0xffff), so the old bytes are
/// summed like the new ones (32 bits at a time) and subtracted from a
/// multiple of 0xffff that is never less than their sum (n·0xffff_ffff for
/// n bytes: 0xffff_ffff = 0xffff · 0x10001). Always inlined: the callers pass short fixed-length
/// slices, which then unroll into a handful of additions.
#[inline(always)]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let n = old.len().min(new.len()) & !1;
    let acc = u64::from(!hc) + n as u64 * 0xffff_ffff - sum(&old[..n], 0);
    !fold(sum(&new[..n], acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_sums_to_the_published_value() {
        // RFC 1071, section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_the_last_byte_with_zero() {
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[0x01, 0x02, 0xab], 0)), 0x0102 + 0xab00);
    }

    #[test]
    fn a_header_with_its_checksum_in_place_sums_to_all_ones() {
        // A real IPv4 header (from a capture), checksum b861.
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&header, 0)), 0xffff);
        let mut zeroed = header;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn incremental_update_matches_recomputation_for_a_ttl_decrement() {
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let hc = checksum(&header);
        let old = u16::from_be_bytes([header[8], header[9]]);
        header[8] -= 1;
        let new = u16::from_be_bytes([header[8], header[9]]);
        assert_eq!(update(hc, old, new), checksum(&header));
    }
}
