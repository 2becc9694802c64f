//! The replay window of one receiving key, shared by every worker.
//!
//! A peer's packets arrive on whichever RX queue the NIC's hash picks, so
//! the same counter may reach two workers (a replay sent to another queue).
//! Each counter is therefore recorded in one window per key that all
//! workers share, without a lock: 64 slots of one `AtomicU64`, each holding
//! the bits of 32 consecutive counters and, in its high half, which block
//! of 32 they are (the block number's low 32 bits). Recording a counter is
//! one compare-and-swap of its slot: the bit set, or the slot taken over
//! from a block that has left the window. So two workers that see the same
//! counter cannot both record it; one of them drops the frame as replayed.
//!
//! The window spans 2048 counters, as WireGuard's: any counter less than
//! 2048 behind the highest seen is accepted once, in any order, except
//! that the oldest block shares its slot with the newest, so the last 2016
//! are always tracked and up to 32 more may be refused as too old. A
//! block's tag is the low 32 bits of its number; two blocks 2^32 apart
//! (2^37 counters) are told apart by the window bound, which a sender that
//! counts up one by one never jumps.
//!
//! Why a shared window rather than per-queue sender counters: the receiver
//! would still need one window per sender queue shared by all its
//! workers, since RSS spreads a sender queue's flows over every receive
//! queue; per-queue counters only move the sharing.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many counters behind the highest one are still accepted.
pub const WINDOW: u64 = 2048;
const PER_SLOT: u64 = 32;
const SLOTS: usize = (WINDOW / PER_SLOT) as usize;

pub struct ReplayWindow {
    /// One more than the highest counter recorded; 0 before the first.
    top: AtomicU64,
    slots: [AtomicU64; SLOTS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            top: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("top", &self.top.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Whether `counter` may be new: not too old, not recorded. Changes
    /// nothing; a frame passes this before its tag is checked (cheap
    /// refusal of replays), and [`Self::record`] after.
    #[inline]
    pub fn may_accept(&self, counter: u64) -> bool {
        if self.too_old(counter) {
            return false;
        }
        let (slot, tag, bit) = place(counter);
        let s = self.slots[slot].load(Ordering::Acquire);
        !(s >> 32 == tag && s & bit != 0)
    }

    /// Records `counter`; false if it was already recorded or is out of
    /// the window, in which case the frame is a replay (or too late).
    #[inline]
    pub fn record(&self, counter: u64) -> bool {
        if self.too_old(counter) {
            return false;
        }
        let (slot, tag, bit) = place(counter);
        let slot = &self.slots[slot];
        let mut s = slot.load(Ordering::Acquire);
        loop {
            let held = s >> 32;
            let new = if held == tag {
                if s & bit != 0 {
                    return false;
                }
                s | bit
            } else if s as u32 == 0 || (tag as u32).wrapping_sub(held as u32) as i32 > 0 {
                // The slot is unused, or holds an older block, out of the
                // window now.
                tag << 32 | bit
            } else {
                // A newer block took the slot: this counter is too old.
                return false;
            };
            match slot.compare_exchange_weak(s, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        self.top
            .fetch_max(counter.saturating_add(1), Ordering::AcqRel);
        true
    }

    #[inline]
    fn too_old(&self, counter: u64) -> bool {
        counter.saturating_add(WINDOW) < self.top.load(Ordering::Acquire)
    }
}

/// The slot of `counter`, its block's tag, and its bit in the slot.
#[inline]
fn place(counter: u64) -> (usize, u64, u64) {
    let block = counter / PER_SLOT;
    (
        (block % SLOTS as u64) as usize,
        block & 0xffff_ffff,
        1 << (counter % PER_SLOT),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn each_counter_once_in_any_order_within_the_window() {
        let w = ReplayWindow::default();
        for c in [0, 5, 3, 4, 1, 2, 100, 99, 2000] {
            assert!(w.may_accept(c));
            assert!(w.record(c), "{c} the first time");
            assert!(!w.may_accept(c));
            assert!(!w.record(c), "{c} again");
        }
        // 2047 behind the highest (2000 + 2047 = 4047): still fine if its
        // slot is not the newest block's.
        assert!(w.record(4047));
        assert!(w.record(2016), "2031 behind the highest");
        assert!(!w.record(1999), "2048 behind the highest");
        assert!(!w.record(0), "recorded and out of the window");
        assert!(!w.may_accept(1500));
    }

    #[test]
    fn a_jump_forward_clears_what_left_the_window() {
        let w = ReplayWindow::default();
        for c in 0..64 {
            assert!(w.record(c));
        }
        // Same slots, a block 64 blocks later.
        assert!(w.record(2048));
        assert!(w.record(2049));
        assert!(!w.record(1), "out of the window");
        assert!(w.record(1_000_000));
        assert!(!w.record(2050), "far behind now");
        assert!(w.record(1_000_000 - 2000));
        assert!(w.record(u64::MAX - 1));
        assert!(!w.record(u64::MAX - 1));
    }

    /// Two workers offered the same counters, each counter recorded by
    /// exactly one of them.
    #[test]
    fn two_threads_never_both_accept_a_counter() {
        let w = Arc::new(ReplayWindow::default());
        let run = |w: Arc<ReplayWindow>| {
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for c in 0..200_000u64 {
                    // A little reordering, as RSS and batches make it.
                    let c = c ^ 7;
                    if w.record(c) {
                        accepted.push(c);
                    }
                }
                accepted
            })
        };
        let (a, b) = (run(Arc::clone(&w)), run(Arc::clone(&w)));
        let mut all = a.join().unwrap();
        all.extend(b.join().unwrap());
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a counter accepted twice");
        assert!(n > 190_000, "most counters accepted once: {n}");
    }
}
