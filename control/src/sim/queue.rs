//! The simulator's event queue: items by time, ties in the order they were
//! queued, so that a run is the same for a seed.
//!
//! A plain binary heap of every event in flight was a quarter of the
//! simulator's time at 500 nodes: some 100 000 events, each pop a walk down
//! 17 levels that mostly miss the cache. Nearly every event is due within a
//! second (a probe's flight, a probe's timeout), so this is a calendar
//! queue: a ring of one bucket per millisecond over the next
//! [`HORIZON_MS`], where a push is an append; only the bucket of the
//! current millisecond is a heap, a few thousand events that stay in
//! cache. Events due later wait in a heap of their own until the ring
//! reaches them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::mem;

use crate::link::Time;

/// How far ahead the ring reaches, in milliseconds.
pub const HORIZON_MS: u64 = 1024;

/// An item due at `at`, ordered by (`at`, `order`) and never by what it
/// carries.
#[derive(Debug)]
struct Entry<T> {
    at: Time,
    order: u64,
    item: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (Time, u64) {
        (self.at, self.order)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn millis(at: Time) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// Items by time; see the module documentation.
#[derive(Debug)]
pub struct EventQueue<T> {
    /// The millisecond whose bucket is `current`.
    now_ms: u64,
    /// The items of millisecond `now_ms`, and any queued for earlier.
    current: BinaryHeap<Reverse<Entry<T>>>,
    /// The items of the milliseconds after `now_ms`, up to
    /// [`HORIZON_MS`] ahead, at their millisecond modulo the ring's size.
    ring: Vec<Vec<Entry<T>>>,
    /// The items due later than the ring reaches.
    far: BinaryHeap<Reverse<Entry<T>>>,
    order: u64,
    len: usize,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        EventQueue {
            now_ms: 0,
            current: BinaryHeap::new(),
            ring: (0..HORIZON_MS).map(|_| Vec::new()).collect(),
            far: BinaryHeap::new(),
            order: 0,
            len: 0,
        }
    }
}

impl<T> EventQueue<T> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `item` for `at`, after every item already queued for `at`.
    pub fn push(&mut self, at: Time, item: T) {
        self.order += 1;
        self.len += 1;
        let entry = Entry {
            at,
            order: self.order,
            item,
        };
        let ms = millis(at);
        if ms <= self.now_ms {
            self.current.push(Reverse(entry));
        } else if ms - self.now_ms < HORIZON_MS {
            self.ring[(ms % HORIZON_MS) as usize].push(entry);
        } else {
            self.far.push(Reverse(entry));
        }
    }

    /// The earliest item, if it is due by `until`.
    pub fn pop_until(&mut self, until: Time) -> Option<(Time, T)> {
        while self.current.is_empty() && !self.is_empty() && self.now_ms < millis(until) {
            self.advance();
        }
        if self.current.peek()?.0.at > until {
            return None;
        }
        let Reverse(entry) = self.current.pop()?;
        self.len -= 1;
        Some((entry.at, entry.item))
    }

    /// Moves on to the next millisecond: its bucket becomes the heap, and
    /// the far items that the ring now reaches move into the ring.
    fn advance(&mut self) {
        debug_assert!(self.current.is_empty());
        self.now_ms += 1;
        let slot = (self.now_ms % HORIZON_MS) as usize;
        self.current = mem::take(&mut self.ring[slot])
            .into_iter()
            .map(Reverse)
            .collect();
        while let Some(Reverse(entry)) = self.far.peek() {
            let ms = millis(entry.at);
            if ms.saturating_sub(self.now_ms) >= HORIZON_MS {
                break;
            }
            let Reverse(entry) = self.far.pop().expect("peeked");
            if ms <= self.now_ms {
                self.current.push(Reverse(entry));
            } else {
                self.ring[(ms % HORIZON_MS) as usize].push(entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever is pushed, and whenever, items come out as a heap
        /// ordered by (time, order queued) would give them.
        #[test]
        fn pops_in_time_then_queueing_order(
            steps in proptest::collection::vec((0u64..3_000_000, 0u8..4, 0u64..5_000), 1..400),
        ) {
            let mut queue = EventQueue::default();
            let mut reference = BinaryHeap::new();
            let (mut now, mut order) = (Time::ZERO, 0u64);
            for (delay_us, pops, advance_us) in steps {
                order += 1;
                let at = now + Duration::from_micros(delay_us);
                queue.push(at, order);
                reference.push(Reverse((at, order)));
                now += Duration::from_micros(advance_us);
                for _ in 0..pops {
                    let expected = match reference.peek() {
                        Some(Reverse((at, _))) if *at <= now => reference.pop().map(|Reverse(e)| e),
                        _ => None,
                    };
                    prop_assert_eq!(queue.pop_until(now), expected);
                    if let Some((at, _)) = expected {
                        // The driver's clock follows the events it runs.
                        now = now.max(at);
                    }
                }
                prop_assert_eq!(queue.len(), reference.len());
            }
            let end = Time::from_secs(10_000);
            while let Some(Reverse(expected)) = reference.pop() {
                prop_assert_eq!(queue.pop_until(end), Some(expected));
            }
            prop_assert!(queue.is_empty());
            prop_assert_eq!(queue.pop_until(end), None);
        }
    }
}
