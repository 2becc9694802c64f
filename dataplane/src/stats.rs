//! A worker's counters and latency histogram, and how readers see them
//! without ever holding the worker up.
//!
//! The worker counts into plain integers it owns ([`Tally`]) and, once per
//! batch, stores them into atomics readers load ([`Published`]): relaxed
//! stores of values only the worker writes, so no lock and no
//! read-modify-write on the hot path. Latency goes into a worker-local HDR
//! histogram that is merged into a shared one every few milliseconds, and
//! only when the shared one is free (`try_lock`): a reader holding it delays
//! the merge, never the worker.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use detour_common::api::{Latency, WorkerCounters};
use hdrhistogram::Histogram;

use crate::rewrite::Discard;

/// What a worker counts: one slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stat {
    Received,
    ReceivedBytes,
    Encapsulated,
    Relayed,
    Decapsulated,
    Answered,
    /// ICMP answers not sent: over the rate limit.
    IcmpSuppressed,
    TransmittedBytes,
    /// Frames put on hold for a neighbour's MAC, released once it came,
    /// and on hold now (a level, not a count).
    Held,
    Released,
    Holding,
    // The kernel's drops before the worker (`xsk::SocketDrops`): not
    // received, so outside the worker's own accounting.
    SocketRingFull,
    SocketNoFrame,
    // Drops, by reason.
    Malformed,
    NoRoute,
    Unreachable,
    Unresolved,
    HopLimit,
    AlreadyRelayed,
    CeNotEct,
    HoldExpired,
    TtlExpired,
    TooBig,
    NoHeadroom,
    NoLan,
    NoTable,
    NoKey,
    UnknownKey,
    ExpiredKey,
    Replayed,
    AuthFailed,
    BadChecksum,
}

impl Stat {
    const COUNT: usize = Stat::BadChecksum as usize + 1;

    /// The drop reasons, with the names the API reports them under.
    const DROPS: [(Stat, &'static str); 19] = [
        (Stat::Malformed, "malformed"),
        (Stat::NoRoute, "no_route"),
        (Stat::Unreachable, "unreachable"),
        (Stat::Unresolved, "unresolved"),
        (Stat::HopLimit, "hop_limit"),
        (Stat::AlreadyRelayed, "already_relayed"),
        (Stat::CeNotEct, "ce_not_ect"),
        (Stat::HoldExpired, "hold_expired"),
        (Stat::TtlExpired, "ttl_expired"),
        (Stat::TooBig, "too_big"),
        (Stat::NoHeadroom, "no_headroom"),
        (Stat::NoLan, "no_lan"),
        (Stat::NoTable, "no_table"),
        (Stat::NoKey, "no_key"),
        (Stat::UnknownKey, "unknown_key"),
        (Stat::ExpiredKey, "expired_key"),
        (Stat::Replayed, "replayed"),
        (Stat::AuthFailed, "auth_failed"),
        (Stat::BadChecksum, "bad_checksum"),
    ];

    /// The kernel's drops on the way into the worker's sockets, with
    /// their API names.
    const SOCKET_DROPS: [(Stat, &'static str); 2] = [
        (Stat::SocketRingFull, "ring_full"),
        (Stat::SocketNoFrame, "no_frame"),
    ];

    /// The names of the drop reasons, as the API and the metrics report
    /// them.
    pub fn drop_reasons() -> impl Iterator<Item = &'static str> + Clone {
        Stat::DROPS.iter().map(|(_, name)| *name)
    }

    /// The names of the sockets' drop reasons.
    pub fn socket_drop_reasons() -> impl Iterator<Item = &'static str> + Clone {
        Stat::SOCKET_DROPS.iter().map(|(_, name)| *name)
    }

    /// The counter of a discarded frame.
    #[inline]
    pub fn of(discard: Discard) -> Stat {
        match discard {
            Discard::Malformed => Stat::Malformed,
            Discard::NoRoute => Stat::NoRoute,
            Discard::Unreachable => Stat::Unreachable,
            Discard::Unresolved { .. } | Discard::UnresolvedHost { .. } => Stat::Unresolved,
            Discard::HopLimit => Stat::HopLimit,
            Discard::AlreadyRelayed => Stat::AlreadyRelayed,
            Discard::CeNotEct => Stat::CeNotEct,
            Discard::TtlExpired => Stat::TtlExpired,
            Discard::TooBig { .. } => Stat::TooBig,
            Discard::NoHeadroom => Stat::NoHeadroom,
            Discard::NoLan => Stat::NoLan,
            Discard::NoKey => Stat::NoKey,
            Discard::UnknownKey => Stat::UnknownKey,
            Discard::ExpiredKey => Stat::ExpiredKey,
            Discard::Replayed => Stat::Replayed,
            Discard::AuthFailed => Stat::AuthFailed,
            Discard::BadChecksum => Stat::BadChecksum,
        }
    }
}

/// The worker's own counts.
#[derive(Debug, Default)]
pub struct Tally([u64; Stat::COUNT]);

impl Tally {
    #[inline]
    pub fn add(&mut self, stat: Stat, n: u64) {
        self.0[stat as usize] += n;
    }

    /// Sets a count kept elsewhere (the kernel's socket drops).
    #[inline]
    pub fn set(&mut self, stat: Stat, n: u64) {
        self.0[stat as usize] = n;
    }

    #[inline]
    pub fn get(&self, stat: Stat) -> u64 {
        self.0[stat as usize]
    }
}

/// Latency histograms cover 1 ns to 10 s at 3 significant digits; every
/// histogram of the dataplane has these bounds, so merging one into another
/// never resizes (allocates).
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

/// How often a worker merges its latency into the shared histogram.
const MERGE_EVERY: Duration = Duration::from_millis(20);

/// A worker's latency, recorded locally and merged out now and then.
pub struct LatencyRecorder {
    local: Histogram<u64>,
    last_merge: Instant,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            local: histogram(),
            last_merge: Instant::now(),
        }
    }
}

impl LatencyRecorder {
    /// `packets` each spent `spent` in the worker.
    #[inline]
    pub fn record(&mut self, spent: Duration, packets: u64) {
        let ns = (spent.as_nanos() as u64).clamp(1, 10_000_000_000);
        // In bounds by the clamp, so this cannot fail.
        let _ = self.local.record_n(ns, packets);
    }

    /// Merges into `published` if it is time and the shared histogram is
    /// free; otherwise keeps recording locally.
    #[inline]
    pub fn maybe_merge(&mut self, now: Instant, published: &Published) {
        if now.duration_since(self.last_merge) < MERGE_EVERY || self.local.is_empty() {
            return;
        }
        if let Ok(mut shared) = published.latency.try_lock() {
            // Same bounds: no resize, no allocation.
            let _ = shared.add(&self.local);
            self.local.reset();
            self.last_merge = now;
        }
    }
}

/// What readers see of one worker.
pub struct Published {
    counters: [AtomicU64; Stat::COUNT],
    latency: Mutex<Histogram<u64>>,
}

impl Default for Published {
    fn default() -> Self {
        Published {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Mutex::new(histogram()),
        }
    }
}

impl Published {
    /// Publishes the worker's tally (called by the worker only, once per
    /// batch).
    #[inline]
    pub fn publish(&self, tally: &Tally) {
        for (slot, value) in self.counters.iter().zip(tally.0) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The counters as the API reports them.
    pub fn counters(&self) -> WorkerCounters {
        let get = |s: Stat| self.counters[s as usize].load(Ordering::Relaxed);
        WorkerCounters {
            received: get(Stat::Received),
            received_bytes: get(Stat::ReceivedBytes),
            encapsulated: get(Stat::Encapsulated),
            relayed: get(Stat::Relayed),
            decapsulated: get(Stat::Decapsulated),
            answered: get(Stat::Answered),
            icmp_suppressed: get(Stat::IcmpSuppressed),
            held: get(Stat::Held),
            released: get(Stat::Released),
            holding: get(Stat::Holding),
            transmitted_bytes: get(Stat::TransmittedBytes),
            dropped: Stat::DROPS
                .iter()
                .map(|(s, name)| (name.to_string(), get(*s)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            socket_dropped: Stat::SOCKET_DROPS
                .iter()
                .map(|(s, name)| (name.to_string(), get(*s)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Adds this worker's latency into `into`.
    pub fn merge_latency(&self, into: &mut Histogram<u64>) {
        let shared = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let _ = into.add(&*shared);
    }
}

/// The latency buckets the metrics report, in nanoseconds: 1-2-5 steps
/// from 1 µs to 100 ms (a worker turns a batch around in microseconds; a
/// millisecond is a stall).
pub const LATENCY_BUCKETS_NS: [u64; 16] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
];

/// `h` as a Prometheus histogram in seconds: per-bucket counts over
/// [`LATENCY_BUCKETS_NS`], then the rest up to `+Inf`. The sum is the
/// histogram's mean times its count (HDR keeps no exact sum; the mean is
/// within its 3 significant digits).
pub fn prometheus_buckets(h: &Histogram<u64>) -> detour_common::metrics::Buckets {
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_NS
        .iter()
        .map(|&le| {
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, le)
            };
            let n = upto - below;
            below = upto;
            (le as f64 / 1e9, n)
        })
        .collect();
    buckets.push((f64::INFINITY, h.len() - below));
    detour_common::metrics::Buckets {
        sum: h.mean() * h.len() as f64 / 1e9,
        count: h.len(),
        buckets,
    }
}

/// An empty histogram to merge workers' latency into.
pub fn merged_latency() -> Histogram<u64> {
    histogram()
}

/// The percentiles of `h`.
pub fn summary(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        p50_ns: h.value_at_quantile(0.5),
        p90_ns: h.value_at_quantile(0.9),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_published_under_their_names_and_zeros_left_out() {
        let published = Published::default();
        let mut tally = Tally::default();
        tally.add(Stat::Received, 5);
        tally.add(Stat::Relayed, 2);
        tally.add(Stat::of(Discard::HopLimit), 2);
        tally.add(Stat::of(Discard::TooBig { mtu: 1400 }), 1);
        tally.set(Stat::SocketRingFull, 7);
        tally.set(Stat::SocketRingFull, 9);
        published.publish(&tally);
        let c = published.counters();
        assert_eq!(
            c.socket_dropped.into_iter().collect::<Vec<_>>(),
            [("ring_full".to_string(), 9)],
            "the kernel's count, as read last; not a drop of the worker's"
        );
        assert_eq!(c.received, 5);
        assert_eq!(c.relayed, 2);
        assert_eq!(
            c.dropped.into_iter().collect::<Vec<_>>(),
            [("hop_limit".to_string(), 2), ("too_big".to_string(), 1)]
        );
    }

    #[test]
    fn every_drop_reason_has_a_distinct_name() {
        let mut names: Vec<_> = Stat::DROPS.iter().map(|(_, n)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Stat::DROPS.len());
        assert_eq!(
            Stat::DROPS.len(),
            Stat::COUNT - Stat::Malformed as usize,
            "every slot from Malformed on is a drop"
        );
    }

    #[test]
    fn latency_buckets_add_up_to_the_count() {
        let mut h = histogram();
        let empty = prometheus_buckets(&h);
        assert_eq!((empty.count, empty.buckets.len()), (0, 17));
        assert!(empty.buckets.iter().all(|(_, n)| *n == 0));
        h.record_n(1_500, 10).unwrap();
        h.record_n(40_000, 5).unwrap();
        h.record_n(3_000_000_000, 1).unwrap();
        let b = prometheus_buckets(&h);
        assert_eq!(b.count, 16);
        assert_eq!(b.buckets.iter().map(|(_, n)| n).sum::<u64>(), 16);
        assert_eq!(b.buckets[1], (2e-6, 10), "1.5 µs is under 2 µs");
        assert_eq!(b.buckets[5], (50e-6, 5));
        assert_eq!(b.buckets[16], (f64::INFINITY, 1), "3 s is past 100 ms");
        let sum = 10.0 * 1.5e-6 + 5.0 * 40e-6 + 3.0;
        assert!((b.sum - sum).abs() < sum * 1e-3, "{} vs {sum}", b.sum);
    }

    #[test]
    fn latency_merges_into_the_shared_histogram() {
        let published = Published::default();
        let mut recorder = LatencyRecorder::default();
        recorder.record(Duration::from_nanos(1_000), 63);
        recorder.record(Duration::from_nanos(50_000), 1);
        recorder.maybe_merge(Instant::now() + MERGE_EVERY, &published);
        let mut merged = merged_latency();
        published.merge_latency(&mut merged);
        let s = summary(&merged);
        assert_eq!(s.count, 64);
        assert!((995..=1005).contains(&s.p50_ns), "{s:?}");
        assert!((49_950..=50_050).contains(&s.max_ns), "{s:?}");
    }
}
