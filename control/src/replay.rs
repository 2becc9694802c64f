//! Replay protection for control messages: a sliding window over each
//! sender's sequence numbers, as IPsec ESP keeps one (RFC 4303, section
//! 3.4.3).
//!
//! Every control message carries its sender's sequence number for this
//! receiver in its authenticated header ([`crate::message`]). The receiver
//! remembers, per sender, the highest number seen and which of the
//! [`WINDOW`] numbers below it have been seen: a number above the highest,
//! or inside the window and not seen yet, is accepted once; a number seen
//! already, or too far below the highest, is [`Reject::Replayed`]. Reordering
//! by fewer than [`WINDOW`] messages is therefore tolerated, and a message
//! older than that is refused even if it was never seen (it could be a
//! replay of one that fell out of the window).
//!
//! ## Only after the MAC
//!
//! A forged message must not move the window, or an attacker could push it
//! far ahead and lock the real sender out. So the window is reached only
//! through [`ReplayGuard::accept`], which takes an
//! [`Authenticated`]: a value only
//! [`decode`](crate::message::decode) makes, after the MAC verified.
//!
//! ## Restarts
//!
//! A sender numbers its messages from a base that grows across restarts:
//! the daemon passes the microseconds since the Unix epoch at its start
//! ([`SequenceCounter::new`](crate::message::SequenceCounter::new)); this
//! module never reads a clock. A sender sends far fewer than a million
//! messages a second to one peer, so the base of its next run is above
//! every number it used before, and a restarted node is accepted at once,
//! as long as its clock did not go back past its previous start. (If it
//! did, its messages read as replays until the receiver forgets it:
//! [`ReplayGuard::forget`].)
//!
//! A receiver that restarts knows no window: the first authentic message
//! from each sender is accepted whatever its number, so one message
//! recorded before the restart can be replayed once, until the sender's
//! next message moves the window past it. What that can do is bounded: a
//! probe is answered, a reply is stray ([`crate::probe::StrayReply`]), and
//! a link-state row is superseded by the next one (and refused by the
//! link-state database if it is not newer than the row held).

use std::collections::HashMap;

use detour_common::wire::NodeId;

use crate::message::{Authenticated, Header, Message, Reject};

/// How far below the highest sequence number seen a message may still be
/// accepted (RFC 4303's default; its minimum is 32).
pub const WINDOW: u64 = 64;

/// One sender's window: the highest sequence number accepted and a bitmap
/// of the [`WINDOW`] numbers up to it (bit `i`: `highest − i` was seen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: u64,
    seen: u64,
}

impl ReplayWindow {
    /// A window that has accepted `first`, the first number from a sender.
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

/// Every sender's window, at one receiver.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    windows: HashMap<NodeId, ReplayWindow>,
}

impl ReplayGuard {
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// The message inside `message`, if its sequence number is new for its
    /// sender; [`Reject::Replayed`] if it was seen or is too old. Only an
    /// accepted message moves the window.
    pub fn accept(&mut self, message: Authenticated) -> Result<(Header, Message), Reject> {
        let header = *message.header();
        match self.windows.get_mut(&header.sender) {
            Some(window) => window.accept(header.seq)?,
            None => {
                self.windows
                    .insert(header.sender, ReplayWindow::new(header.seq));
            }
        }
        Ok(message.into_parts())
    }

    /// The window kept for `sender`, if any message from it was accepted.
    pub fn window(&self, sender: NodeId) -> Option<&ReplayWindow> {
        self.windows.get(&sender)
    }

    /// Forgets `sender` (a peer that left the overlay): its next message is
    /// accepted whatever its number.
    pub fn forget(&mut self, sender: NodeId) {
        self.windows.remove(&sender);
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
