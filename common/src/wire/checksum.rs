//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! A checksum is the ones' complement of the ones' complement sum of 16-bit
//! big-endian words. Because 2^16 ≡ 1 (mod 2^16 − 1), the sum may be
//! accumulated in wider words and folded at the end; a running sum is a `u64`
//! that callers may add further words to, folded when the checksum is
//! finished.

/// Adds `data`, as big-endian 16-bit words, to the running sum `acc`.
///
/// An odd trailing byte is padded with a zero byte, as RFC 1071 says; only
/// the last piece of a checksummed region may have odd length.
///
/// The words are added in the machine's byte order, 64 bits at a time with
/// end-around carry, and the folded sum is swapped once at the end: the
/// ones' complement sum is independent of byte order (RFC 1071, section
/// 2(B)). A byte swap per 32-bit word cost the IPv6 relay, which sums two
/// addresses per packet, more than its budget (benches/forwarding).
#[inline(always)]
pub fn sum(data: &[u8], acc: u64) -> u64 {
    let mut native = 0u64;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        native = add_carry(
            native,
            u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
        );
    }
    // At most 7 bytes left: a 32-bit word, a 16-bit word, a byte, each at an
    // even offset, so each lines up with the 16-bit words summed.
    let mut rest = words.remainder();
    let mut tail = 0u64;
    if let [a, b, c, d, more @ ..] = rest {
        tail += u64::from(u32::from_ne_bytes([*a, *b, *c, *d]));
        rest = more;
    }
    if let [a, b, more @ ..] = rest {
        tail += u64::from(u16::from_ne_bytes([*a, *b]));
        rest = more;
    }
    if let [last] = rest {
        tail += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    let native = fold(add_carry(native, tail));
    acc + u64::from(u16::from_be(native))
}

/// `a + b` with the carry out of bit 63 added back in (end-around carry).
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, carry) = a.overflowing_add(b);
    s + u64::from(carry)
}

/// Folds a running sum to 16 bits (the ones' complement sum, not yet inverted).
#[inline(always)]
pub fn fold(acc: u64) -> u16 {
    let (s, carry) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let acc = s + u32::from(carry);
    let (s, carry) = (acc as u16).overflowing_add((acc >> 16) as u16);
    s + u16::from(carry)
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
/// summed like the new ones and their folded sum complemented. Always
/// inlined: the callers pass short fixed-length slices, which then unroll
/// into a handful of additions.
#[inline(always)]
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let n = old.len().min(new.len()) & !1;
    let acc = u64::from(!hc) + u64::from(!fold(sum(&old[..n], 0)));
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

    /// RFC 1071's definition, word by word, for the fast sum to match.
    fn reference(data: &[u8], acc: u64) -> u16 {
        let mut acc = acc;
        for pair in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    proptest::proptest! {
        #[test]
        fn sum_matches_the_definition(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            acc in 0u64..1 << 40,
        ) {
            proptest::prop_assert_eq!(fold(sum(&data, acc)), reference(&data, acc));
        }

        #[test]
        fn incremental_update_matches_recomputation(
            mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 40..41),
            at in 0usize..20,
            new in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..21),
        ) {
            let at = at & !1;
            let hc = checksum(&data);
            let old = data[at..at + 20].to_vec();
            data[at..at + 20].copy_from_slice(&new);
            // Equal as ones' complement numbers: 0x0000 and 0xffff are both zero.
            let (a, b) = (update_bytes(hc, &old, &new), checksum(&data));
            proptest::prop_assert!(a == b || (a | b == 0xffff && a & b == 0), "{a:#x} {b:#x}");
        }
    }
}
