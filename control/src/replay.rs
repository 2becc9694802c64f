//! Replay protection for control messages: a sliding window over the
//! counters of one session, as IPsec ESP keeps one (RFC 4303, section
//! 3.4.3) and WireGuard one per session.
//!
//! Every transport message carries its session's counter, from 0 up, which
//! is also its AEAD nonce ([`crate::session`]). The receiver remembers the
//! highest counter seen and which of the [`WINDOW`] counters below it have
//! been seen: a counter above the highest, or inside the window and not
//! seen yet, is accepted once; one seen already, or too far below the
//! highest, is [`Reject::Replayed`]. Reordering by fewer than [`WINDOW`]
//! messages is therefore tolerated, and a message older than that is
//! refused even if it was never seen (it could be a replay of one that fell
//! out of the window).
//!
//! ## Only after the tag
//!
//! A forged message must not move the window, or an attacker could push it
//! far ahead and lock the real sender out. So the session [`check`]s the
//! counter before opening the message and [`accept`]s it only once the tag
//! verified.
//!
//! A window lives as long as its session: there is no state to carry
//! across a restart, and nothing a restart could let through (a message
//! from before it names a session that no longer exists).
//!
//! [`check`]: ReplayWindow::check
//! [`accept`]: ReplayWindow::accept

use crate::message::Reject;

/// How far below the highest sequence number seen a message may still be
/// accepted (RFC 4303's default; its minimum is 32).
pub const WINDOW: u64 = 64;

/// One session's window: the highest counter accepted and a bitmap of the
/// [`WINDOW`] counters up to it (bit `i`: `highest − i` was seen). The
/// default has seen nothing, and accepts 0 first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// A window that has accepted `first`.
    pub fn new(first: u64) -> ReplayWindow {
        ReplayWindow {
            highest: first,
            seen: 1,
        }
    }

    /// The highest sequence number accepted.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether `seq` would be accepted; changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), Reject> {
        if seq > self.highest {
            return Ok(());
        }
        let behind = self.highest - seq;
        if behind >= WINDOW || self.seen & (1 << behind) != 0 {
            return Err(Reject::Replayed);
        }
        Ok(())
    }

    /// Accepts `seq` if [`Self::check`] allows it, and records it.
    pub fn accept(&mut self, seq: u64) -> Result<(), Reject> {
        self.check(seq)?;
        if seq > self.highest {
            let ahead = seq - self.highest;
            self.seen = if ahead >= WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.highest = seq;
            self.seen |= 1;
        } else {
            self.seen |= 1 << (self.highest - seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_is_rejected() {
        let mut w = ReplayWindow::new(1_000);
        assert_eq!(w.accept(1_000), Err(Reject::Replayed));
        assert_eq!(w.accept(1_001), Ok(()));
        assert_eq!(w.accept(1_001), Err(Reject::Replayed));
    }

    #[test]
    fn reordered_within_the_window_is_accepted_once() {
        let mut w = ReplayWindow::new(1_000);
        assert_eq!(w.accept(1_010), Ok(()));
        for seq in (1_001..1_010).rev() {
            assert_eq!(w.accept(seq), Ok(()), "{seq}");
            assert_eq!(w.accept(seq), Err(Reject::Replayed), "{seq} again");
        }
        // The oldest number still inside the window, never seen: accepted.
        let mut w = ReplayWindow::new(1_000);
        assert_eq!(w.accept(1_000 + WINDOW - 1), Ok(()));
        assert_eq!(w.accept(1_000), Err(Reject::Replayed), "seen");
        let mut w = ReplayWindow::new(1_000);
        assert_eq!(w.accept(1_000 + WINDOW), Ok(()));
        assert_eq!(w.accept(1_001), Ok(()), "last slot of the window");
    }

    #[test]
    fn too_old_is_rejected_even_if_never_seen() {
        let mut w = ReplayWindow::new(1_000);
        assert_eq!(w.accept(1_000 + WINDOW), Ok(()));
        assert_eq!(w.accept(1_000), Err(Reject::Replayed));
        assert_eq!(w.accept(999), Err(Reject::Replayed));
        assert_eq!(w.accept(0), Err(Reject::Replayed));
        // A jump past the whole window forgets the bitmap but not the floor.
        let mut w = ReplayWindow::new(5);
        assert_eq!(w.accept(u64::MAX), Ok(()));
        assert_eq!(w.accept(u64::MAX), Err(Reject::Replayed));
        assert_eq!(w.accept(u64::MAX - 1), Ok(()));
        assert_eq!(w.accept(6), Err(Reject::Replayed));
    }

    #[test]
    fn an_empty_window_takes_counters_from_0() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(0), Err(Reject::Replayed));
        assert_eq!(w.accept(2), Ok(()));
        assert_eq!(w.accept(1), Ok(()), "reordered");
        assert_eq!(w.accept(1), Err(Reject::Replayed));
    }

    #[test]
    fn check_changes_nothing() {
        let w = ReplayWindow::new(7);
        let before = w;
        assert_eq!(w.check(8), Ok(()));
        assert_eq!(w.check(7), Err(Reject::Replayed));
        assert_eq!(w, before);
    }

    #[test]
    fn window_matches_a_set_of_seen_numbers() {
        // Against a model: accepted iff never accepted before and within
        // WINDOW of the highest accepted so far.
        let mut x: u64 = 42;
        let mut w = ReplayWindow::new(10_000);
        let mut seen = std::collections::BTreeSet::from([10_000u64]);
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let highest = *seen.last().unwrap();
            // Mostly near the top, sometimes a jump ahead.
            let seq = highest + (x >> 40) % 8 - ((x >> 20) % 100).min(highest);
            let seq = if (x >> 10).is_multiple_of(50) {
                seq + 200
            } else {
                seq
            };
            let expect = !seen.contains(&seq) && (seq > highest || highest - seq < WINDOW);
            assert_eq!(
                w.accept(seq).is_ok(),
                expect,
                "seq {seq}, highest {highest}"
            );
            if expect {
                seen.insert(seq);
            }
            assert_eq!(w.highest(), *seen.last().unwrap());
        }
    }
}
