//! Frames a worker holds while a neighbour's MAC address is resolved.
//!
//! A router queues a packet whose next hop it has not resolved yet, rather
//! than drop it (Linux: `unres_qlen_bytes`, 212992 bytes per neighbour), so
//! that the first packet of a connection to a new host is not lost and
//! its sender does not wait out a retransmission (1 s for a TCP SYN).
//! A worker does the same with the frames it cannot send yet for want of a
//! MAC address: a decapsulated packet for a LAN host
//! ([`crate::rewrite::Discard::UnresolvedHost`]) or a frame for an underlay
//! next hop ([`crate::rewrite::Discard::Unresolved`]). The frame stays in
//! its UMEM buffer; the worker keeps only where it lies, which neighbour it
//! waits for and since when. When a new route table comes (the daemon
//! recompiles one as soon as the kernel announces a resolved neighbour),
//! the worker takes every held frame up again: sent if the MAC is there,
//! kept if not, dropped if anything else is now wrong with it.
//!
//! The queue is allocated once, at its full size, and is bounded three
//! ways: frames in all (so that held frames never starve the rings of
//! buffers), bytes per neighbour, and age. A frame over a bound is dropped
//! as unresolved; one that waited too long as `hold_expired`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use detour_common::wire::NodeId;

use crate::lpm::IpKey;
use crate::rewrite::Egress;

/// How much a worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// Frames on hold at most, for all neighbours together.
    pub frames: usize,
    /// Bytes on hold at most per neighbour (frame lengths).
    pub bytes_per_neighbour: usize,
    /// How long a frame waits at most.
    pub max_age: Duration,
}

impl Default for HoldLimits {
    /// Linux's bytes per neighbour (`unres_qlen_bytes`) and its time to give
    /// up on one (3 solicitations, 1 s apart); 256 frames, a thirty-second
    /// of a queue's default UMEM.
    fn default() -> Self {
        HoldLimits {
            frames: 256,
            bytes_per_neighbour: 212_992,
            max_age: Duration::from_secs(3),
        }
    }
}

/// The neighbour a held frame waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// A LAN host (or the LAN router in front of it).
    LanHost(IpKey),
    /// The underlay next hop toward a node.
    Underlay(NodeId),
}

/// How a held frame is taken up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Forwarded afresh, as if it had just come in on `ingress` (it was
    /// refused before anything in it was written).
    Forward { ingress: Egress },
    /// Sent to the LAN host: a decapsulated packet, already opened, at
    /// `inner_at` ([`crate::rewrite::deliver`]).
    Deliver { inner_at: u16 },
}

/// A frame on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The UMEM address of its buffer.
    pub base: u64,
    /// Where the frame lies in its buffer.
    pub start: u32,
    pub len: u32,
    pub resume: Resume,
    pub waits_for: Neighbour,
    pub since: Instant,
}

/// What taking a held frame up again came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still no MAC address: the frame stays.
    Wait,
    /// Sent, or dropped: either way no longer held.
    Done,
}

/// One worker's held frames, oldest first.
#[derive(Debug)]
pub struct HoldQueue {
    limits: HoldLimits,
    frames: VecDeque<Held>,
    /// The table generation every held frame was last tried against.
    tried: u64,
}

impl Default for HoldQueue {
    /// A queue that holds nothing (and allocates nothing).
    fn default() -> Self {
        HoldQueue::new(HoldLimits {
            frames: 0,
            bytes_per_neighbour: 0,
            max_age: Duration::ZERO,
        })
    }
}

impl HoldQueue {
    pub fn new(limits: HoldLimits) -> HoldQueue {
        HoldQueue {
            limits,
            frames: VecDeque::with_capacity(limits.frames),
            tried: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Holds `frame` unless a bound refuses it (then it is the caller's to
    /// drop); true if held. `generation` is that of the table that refused
    /// to forward it.
    pub fn hold(&mut self, frame: Held, generation: u64) -> bool {
        if self.frames.len() >= self.limits.frames {
            return false;
        }
        let waiting: usize = self
            .frames
            .iter()
            .filter(|h| h.waits_for == frame.waits_for)
            .map(|h| h.len as usize)
            .sum();
        if waiting + frame.len as usize > self.limits.bytes_per_neighbour {
            return false;
        }
        if self.frames.is_empty() {
            self.tried = generation;
        }
        self.frames.push_back(frame);
        true
    }

    /// Removes the frames that waited longer than the limit, oldest first,
    /// and hands each to `expired`.
    pub fn expire(&mut self, now: Instant, mut expired: impl FnMut(Held)) {
        while let Some(oldest) = self.frames.front()
            && now.duration_since(oldest.since) > self.limits.max_age
        {
            expired(self.frames.pop_front().expect("a front"));
        }
    }

    /// Whether a table of `generation` may resolve what the frames wait for:
    /// it is not the one they were last tried against.
    pub fn worth_trying(&self, generation: u64) -> bool {
        !self.frames.is_empty() && generation != self.tried
    }

    /// Takes every held frame up again against the table of `generation`,
    /// in the order they came, keeping those `resume` says still wait.
    /// `resume` may refuse to try one (there is no room to send it yet):
    /// it answers `None`, and the frames are tried again with the next
    /// turn, not only with the next table.
    pub fn resume(&mut self, generation: u64, mut resume: impl FnMut(&Held) -> Option<Outcome>) {
        let mut all_tried = true;
        self.frames.retain(|held| match resume(held) {
            Some(Outcome::Wait) => true,
            Some(Outcome::Done) => false,
            None => {
                all_tried = false;
                true
            }
        });
        if all_tried {
            self.tried = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HoldLimits {
        HoldLimits {
            frames: 4,
            bytes_per_neighbour: 3000,
            max_age: Duration::from_millis(100),
        }
    }

    fn host(last: u32) -> Neighbour {
        Neighbour::LanHost(IpKey::V4(0x0a01_0000 | last))
    }

    fn held(base: u64, len: u32, waits_for: Neighbour, since: Instant) -> Held {
        Held {
            base,
            start: 256,
            len,
            resume: Resume::Forward {
                ingress: Egress::Lan,
            },
            waits_for,
            since,
        }
    }

    #[test]
    fn bounded_by_frames_and_by_bytes_per_neighbour() {
        let now = Instant::now();
        let mut q = HoldQueue::new(limits());
        assert!(q.hold(held(0, 1500, host(5), now), 1));
        assert!(q.hold(held(1, 1500, host(5), now), 1));
        assert!(
            !q.hold(held(2, 1, host(5), now), 1),
            "3000 bytes wait for this host already"
        );
        assert!(q.hold(held(3, 1500, host(6), now), 1), "another host");
        assert!(q.hold(held(4, 64, Neighbour::Underlay(NodeId(2)), now), 1));
        assert!(!q.hold(held(5, 64, host(7), now), 1), "4 frames in all");
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn frames_expire_oldest_first_after_the_age_limit() {
        let t0 = Instant::now();
        let mut q = HoldQueue::new(limits());
        q.hold(held(0, 100, host(5), t0), 1);
        q.hold(held(1, 100, host(6), t0 + Duration::from_millis(50)), 1);
        let mut gone = Vec::new();
        q.expire(t0 + Duration::from_millis(100), |h| gone.push(h.base));
        assert!(gone.is_empty(), "100 ms is not more than the limit");
        q.expire(t0 + Duration::from_millis(120), |h| gone.push(h.base));
        assert_eq!(gone, [0]);
        q.expire(t0 + Duration::from_secs(1), |h| gone.push(h.base));
        assert_eq!(gone, [0, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn frames_are_tried_again_once_per_new_table_in_their_order() {
        let now = Instant::now();
        let mut q = HoldQueue::new(limits());
        q.hold(held(0, 100, host(5), now), 7);
        q.hold(held(1, 100, host(6), now), 7);
        q.hold(held(2, 100, host(5), now), 7);
        assert!(!q.worth_trying(7), "the table that refused them");
        assert!(q.worth_trying(8));
        let mut order = Vec::new();
        q.resume(8, |h| {
            order.push(h.base);
            Some(match h.waits_for == host(5) {
                true => Outcome::Done,
                false => Outcome::Wait,
            })
        });
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(q.len(), 1);
        assert!(!q.worth_trying(8), "tried against this table");
        assert!(q.worth_trying(9));
    }

    #[test]
    fn frames_not_tried_for_want_of_room_are_tried_with_the_next_turn() {
        let now = Instant::now();
        let mut q = HoldQueue::new(limits());
        q.hold(held(0, 100, host(5), now), 1);
        q.hold(held(1, 100, host(5), now), 1);
        let mut room = 1;
        q.resume(2, |_| match room {
            0 => None,
            _ => {
                room -= 1;
                Some(Outcome::Done)
            }
        });
        assert_eq!(q.len(), 1);
        assert!(q.worth_trying(2), "one frame was not tried against table 2");
        q.resume(2, |_| Some(Outcome::Done));
        assert!(q.is_empty());
        assert!(!q.worth_trying(3), "nothing held");
    }
}
