//! Longest-prefix match for the workers: one hash table per prefix length
//! present, probed from the longest.
//!
//! Written by hand because the hot path needs it: a general trie
//! (prefix-trie's `PrefixMap`) cost about 38 ns per lookup here, most of an
//! encapsulation's budget (docs/benchmarks.md). An overlay has few distinct
//! prefix lengths (sites announce /16s, /24s, a few host routes), so a
//! lookup is a handful of FxHash probes of one integer each, a few
//! nanoseconds apiece. Built once per route snapshot, never changed after.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rustc_hash::FxHashMap;

/// Prefixes of one address family, and a value for each.
#[derive(Debug, Clone)]
pub struct Lpm<A, V> {
    /// (prefix length, mask, prefixes of that length), longest first.
    levels: Vec<(u8, A, FxHashMap<A, V>)>,
}

impl<A, V> Default for Lpm<A, V> {
    fn default() -> Self {
        Lpm { levels: Vec::new() }
    }
}

/// An address as an integer to mask and hash.
pub trait Bits: Copy + Eq + std::hash::Hash + std::ops::BitAnd<Output = Self> {
    const WIDTH: u8;
    /// The mask of a prefix of `len` bits.
    fn mask(len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn mask(len: u8) -> u32 {
        u32::MAX.checked_shl(u32::from(32 - len)).unwrap_or(0)
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn mask(len: u8) -> u128 {
        u128::MAX.checked_shl(u32::from(128 - len)).unwrap_or(0)
    }
}

impl<A: Bits, V> Lpm<A, V> {
    /// Adds `addr/len` (host bits ignored) with `value`; a prefix added
    /// twice keeps the later value.
    pub fn insert(&mut self, addr: A, len: u8, value: V) {
        let len = len.min(A::WIDTH);
        let mask = A::mask(len);
        let level = match self.levels.iter().position(|(l, ..)| *l <= len) {
            Some(i) if self.levels[i].0 == len => i,
            Some(i) => {
                self.levels.insert(i, (len, mask, FxHashMap::default()));
                i
            }
            None => {
                self.levels.push((len, mask, FxHashMap::default()));
                self.levels.len() - 1
            }
        };
        self.levels[level].2.insert(addr & mask, value);
    }

    /// The value of the longest prefix covering `addr`.
    #[inline]
    pub fn lookup(&self, addr: A) -> Option<&V> {
        self.levels
            .iter()
            .find_map(|(_, mask, prefixes)| prefixes.get(&(addr & *mask)))
    }

    /// Every prefix, as (address, length, value).
    pub fn iter(&self) -> impl Iterator<Item = (A, u8, &V)> {
        self.levels
            .iter()
            .flat_map(|(len, _, p)| p.iter().map(move |(a, v)| (*a, *len, v)))
    }
}

/// An address as the tables key it: the integer of its family.
///
/// The workers look inner destinations up by this rather than by `IpAddr`:
/// an `IpAddr` is a tag byte followed by the address bytes, which the
/// compiler assembled on the stack and read back at other offsets and
/// widths, a store-forwarding stall that cost encapsulation about a quarter
/// of its time (perf, benches/forwarding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpKey {
    V4(u32),
    V6(u128),
}

impl From<IpAddr> for IpKey {
    #[inline]
    fn from(addr: IpAddr) -> IpKey {
        match addr {
            IpAddr::V4(a) => IpKey::V4(a.to_bits()),
            IpAddr::V6(a) => IpKey::V6(a.to_bits()),
        }
    }
}

/// IPv4 and IPv6 prefixes together.
#[derive(Debug, Clone)]
pub struct IpLpm<V> {
    v4: Lpm<u32, V>,
    v6: Lpm<u128, V>,
}

impl<V> Default for IpLpm<V> {
    fn default() -> Self {
        IpLpm {
            v4: Lpm::default(),
            v6: Lpm::default(),
        }
    }
}

impl<V> IpLpm<V> {
    pub fn insert(&mut self, prefix: IpNet, value: V) {
        match prefix {
            IpNet::V4(p) => self.v4.insert(p.addr().to_bits(), p.prefix_len(), value),
            IpNet::V6(p) => self.v6.insert(p.addr().to_bits(), p.prefix_len(), value),
        }
    }

    #[inline]
    pub fn lookup(&self, addr: impl Into<IpKey>) -> Option<&V> {
        match addr.into() {
            IpKey::V4(a) => self.v4.lookup(a),
            IpKey::V6(a) => self.v6.lookup(a),
        }
    }

    /// Every prefix with its value.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> {
        let v4 = self.v4.iter().map(|(a, l, v)| {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from_bits(a), l).expect("length checked");
            (IpNet::V4(net), v)
        });
        let v6 = self.v6.iter().map(|(a, l, v)| {
            let net = ipnet::Ipv6Net::new(Ipv6Addr::from_bits(a), l).expect("length checked");
            (IpNet::V6(net), v)
        });
        v4.chain(v6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_in_both_families() {
        let mut t = IpLpm::default();
        for (p, v) in [
            ("0.0.0.0/0", 0),
            ("10.0.0.0/8", 8),
            ("10.2.0.0/16", 16),
            ("10.2.5.0/24", 24),
            ("10.2.5.7/32", 32),
            ("10.2.9.9/16", 17), // host bits ignored: replaces 10.2.0.0/16
            ("2001:db8::/32", 32),
            ("2001:db8:2::/48", 48),
        ] {
            t.insert(p.parse().unwrap(), v);
        }
        let get = |a: &str| t.lookup(a.parse::<IpAddr>().unwrap()).copied();
        assert_eq!(get("10.2.5.7"), Some(32));
        assert_eq!(get("10.2.5.8"), Some(24));
        assert_eq!(get("10.2.6.1"), Some(17));
        assert_eq!(get("10.3.0.1"), Some(8));
        assert_eq!(get("192.0.2.1"), Some(0));
        assert_eq!(get("2001:db8:2::1"), Some(48));
        assert_eq!(get("2001:db8:3::1"), Some(32));
        assert_eq!(get("2001:db9::1"), None);
        assert_eq!(t.iter().count(), 7);
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        // Deterministic pseudo-random prefixes and probes.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut t = Lpm::<u32, usize>::default();
        let mut list = Vec::new();
        for i in 0..300 {
            let len = (next() % 33) as u8;
            let addr = (next() as u32) & u32::mask(len) & 0x0fff_ffff;
            t.insert(addr, len, i);
            list.retain(|&(a, l, _)| !(a == addr && l == len));
            list.push((addr, len, i));
        }
        for _ in 0..10_000 {
            let probe = (next() as u32) & 0x0fff_ffff;
            let expected = list
                .iter()
                .filter(|(a, l, _)| probe & u32::mask(*l) == *a)
                .max_by_key(|(_, l, _)| *l)
                .map(|(.., v)| *v);
            assert_eq!(t.lookup(probe).copied(), expected, "{probe:#x}");
        }
    }
}
