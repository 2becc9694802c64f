//! How often the worker answers one source with an ICMP error.
//!
//! A sender that keeps sending what cannot be forwarded (too big, TTL
//! spent) would otherwise get one answer per packet: a reflector, and work
//! for nothing. As Linux does (`icmp_msgs_per_sec`, `icmp_msgs_burst`), the
//! answers are paced by a token bucket, here one per source address: by
//! default 1000 answers a second with a burst of 50. The buckets are a fixed
//! array indexed by a hash of the source, so the limiter never allocates;
//! sources that share a bucket share its budget (more limiting, never
//! less).
//!
//! Each bucket is kept as the time its budget is next whole again (the
//! generic cell rate algorithm, RFC 2697's token bucket in one number): an
//! answer moves that time one interval later, and an answer is refused
//! when that time lies more than a burst of intervals ahead.

use std::time::{Duration, Instant};

/// The rate and burst of ICMP answers per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpRate {
    /// Answers per second, per source; 0: no limit.
    pub per_second: u32,
    /// Answers in a row before the rate applies.
    pub burst: u32,
}

impl Default for IcmpRate {
    /// Linux's: `icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50.
    fn default() -> Self {
        IcmpRate {
            per_second: 1000,
            burst: 50,
        }
    }
}

/// Buckets per worker: a power of two.
const BUCKETS: usize = 256;

/// One worker's limiter.
#[derive(Debug)]
pub struct IcmpLimiter {
    /// Between two answers at the rate; zero: no limit.
    interval: u64,
    /// How far ahead a bucket's time may lie and still answer.
    tolerance: u64,
    epoch: Instant,
    /// Per bucket, nanoseconds after `epoch` when its budget is whole.
    full_at: Box<[u64; BUCKETS]>,
}

impl IcmpLimiter {
    pub fn new(rate: IcmpRate) -> IcmpLimiter {
        let interval = match rate.per_second {
            0 => 0,
            n => 1_000_000_000 / u64::from(n),
        };
        IcmpLimiter {
            interval,
            tolerance: interval * u64::from(rate.burst.saturating_sub(1)),
            epoch: Instant::now(),
            full_at: Box::new([0; BUCKETS]),
        }
    }

    /// Whether an answer to `source` (a hash of its address) may go out at
    /// `now`; if so, it is taken from the source's budget.
    #[inline]
    pub fn allow(&mut self, source: u64, now: Instant) -> bool {
        if self.interval == 0 {
            return true;
        }
        let now = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        // The high bits of a multiplicative hash (Fibonacci hashing).
        let index = (source.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % BUCKETS;
        let full_at = self.full_at[index].max(now);
        if full_at - now > self.tolerance {
            return false;
        }
        self.full_at[index] = full_at + self.interval;
        true
    }
}

/// A source address as the limiter keys it.
#[inline]
pub fn source_key(ip: &[u8]) -> u64 {
    let word = |r: std::ops::Range<usize>| {
        ip.get(r).map_or(0, |b| {
            b.iter()
                .fold(0u64, |acc, &x| acc.rotate_left(8) ^ u64::from(x))
        })
    };
    match ip.first().map(|b| b >> 4) {
        Some(4) => word(12..16),
        Some(6) => word(8..16) ^ word(16..24).rotate_left(32),
        _ => 0,
    }
}

/// How long a burst takes to come back whole, for the docs and tests.
pub fn refill_time(rate: IcmpRate) -> Duration {
    match rate.per_second {
        0 => Duration::ZERO,
        n => Duration::from_secs(u64::from(rate.burst)) / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = IcmpLimiter::new(IcmpRate::default());
        let t0 = Instant::now();
        let answered = (0..100).filter(|_| l.allow(1, t0)).count();
        assert_eq!(answered, 50, "the burst, at one instant");
        assert!(!l.allow(1, t0 + MS / 2));
        assert!(l.allow(1, t0 + MS), "one more each millisecond");
        assert!(!l.allow(1, t0 + MS));
        let later = t0 + MS + refill_time(IcmpRate::default());
        assert_eq!(
            (0..100).filter(|_| l.allow(1, later)).count(),
            50,
            "whole again"
        );
    }

    #[test]
    fn sources_have_budgets_of_their_own() {
        let mut l = IcmpLimiter::new(IcmpRate {
            per_second: 10,
            burst: 2,
        });
        let t0 = Instant::now();
        let a = source_key(&[0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 0, 5]);
        let b = source_key(&[0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 0, 6]);
        assert!(l.allow(a, t0) && l.allow(a, t0));
        assert!(!l.allow(a, t0), "a's burst is spent");
        assert!(l.allow(b, t0), "b still has its own");
    }

    #[test]
    fn zero_per_second_is_no_limit() {
        let mut l = IcmpLimiter::new(IcmpRate {
            per_second: 0,
            burst: 0,
        });
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| l.allow(7, t0)));
    }
}
