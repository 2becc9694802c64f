//! A worker: one thread, pinned to one core, forwarding every frame its
//! queue's AF_XDP sockets receive.
//!
//! One turn of the loop: frames the kernel has finished transmitting come
//! back from the completion rings into the worker's free list; free frames
//! go to the fill rings; frames held for a neighbour's MAC address
//! ([`crate::hold`]) are tried again if the route table is new; then, per
//! socket, a batch is taken off the RX ring, each frame rewritten in place
//! ([`crate::rewrite`]) by the route table loaded once for the turn; the
//! counters are published, and only then are the frames put on the TX ring
//! of the interface each leaves by, so that a reader never sees a frame
//! delivered that is not counted yet. The WAN and LAN sockets share one
//! UMEM, so a frame crosses from one interface to the other without a
//! copy.
//!
//! Hot-path rules (docs/design.md): nothing here locks, allocates or makes a
//! system call per packet. The system calls are per turn, and only when the
//! kernel asks for them (`need_wakeup`) or when there is nothing to do
//! (`poll`, unless busy polling). The free list and the batch buffers are
//! allocated once, at start; frames only move between them and the rings.
//!
//! A batch takes from the RX ring no more frames than both TX rings have
//! room for, so a rewritten frame is never refused by its TX ring: when the
//! wire is slower than the worker, frames wait in the RX ring (and the
//! kernel drops at the ring, where its own counters see it), not in the
//! worker.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::doorbell::Doorbell;
use crate::hold::{Held, HoldLimits, HoldQueue, Neighbour, Outcome, Resume};
use crate::icmp::{self, IcmpError, IcmpLimiter, IcmpRate, IcmpSource, NoAnswer};
use crate::lpm::IpKey;
use crate::resolve::UnresolvedHosts;
use crate::rewrite::{self, Discard, Egress, Forward};
use crate::stats::{LatencyRecorder, Published, Stat, Tally};
use crate::table::RouteTable;
use crate::xsk::{BindMode, Desc, EMPTY, Socket, SocketDrops, Umem, wait_readable};

/// The route table the workers forward by; `None` until the first install.
pub type SharedTable = Arc<ArcSwapOption<RouteTable>>;

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub queue: u32,
    /// The core to pin the thread to; `None` leaves it unpinned.
    pub core: Option<usize>,
    pub batch_size: u32,
    pub ring_size: u32,
    pub frame_size: u32,
    pub frame_count: u32,
    /// `Some(true)`: zero-copy or fail; `Some(false)`: copy; `None`: try
    /// zero-copy, fall back to copy.
    pub zero_copy: Option<bool>,
    pub busy_poll: bool,
    /// Where ICMP answers to the LAN come from.
    pub icmp_source: IcmpSource,
    /// How often one LAN source is answered.
    pub icmp_rate: IcmpRate,
    /// How many frames wait for a neighbour's MAC address.
    pub hold: HoldLimits,
    /// Rung when a LAN host is newly recorded for the daemon to resolve.
    pub doorbell: Option<Arc<Doorbell>>,
}

/// How long an idle worker sleeps in `poll` before it looks at the stop
/// flag again.
const IDLE_POLL_MS: i32 = 50;

/// How long it sleeps while it holds frames: it looks for a new table (and
/// so for the MAC address they wait for) this often.
const HOLDING_POLL_MS: i32 = 1;

/// How often a worker reads the kernel's drops on its sockets (two
/// `getsockopt` calls, per turn at most).
const SOCKET_DROPS_EVERY: Duration = Duration::from_millis(100);

/// How long a stopping worker keeps going to send what it already took.
const DRAIN_FOR: Duration = Duration::from_millis(200);

/// One queue's sockets, frames and counters.
pub struct Worker {
    // Declared (and so dropped) before the UMEM they were bound on.
    wan: Socket,
    lan: Option<Socket>,
    umem: Umem,
    config: WorkerConfig,
    /// Frames owned by the worker and not in any ring.
    free: Vec<u64>,
    rx: Vec<Desc>,
    to_wan: Vec<Desc>,
    to_lan: Vec<Desc>,
    completed: Vec<u64>,
    held: HoldQueue,
    icmp_limiter: IcmpLimiter,
    tally: Tally,
    latency: LatencyRecorder,
    /// When the sockets' drops were last read.
    socket_drops_read: Instant,
    published: Arc<Published>,
    /// Neighbours this worker holds or dropped frames for, for the daemon
    /// to have solicited.
    unresolved: Arc<UnresolvedHosts>,
    table: SharedTable,
}

impl Worker {
    /// Opens the sockets of `config.queue` on the WAN interface and, if
    /// there is one, the LAN interface, over one UMEM.
    pub fn open(
        wan: &str,
        lan: Option<&str>,
        config: WorkerConfig,
        table: SharedTable,
    ) -> io::Result<Worker> {
        let mut umem = Umem::new(config.frame_size, config.frame_count, config.ring_size)?;
        let socket = |umem: &mut Umem, iface: &str| {
            umem.socket(iface, config.queue, config.zero_copy)
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("AF_XDP socket on {iface} queue {}: {e}", config.queue),
                    )
                })
        };
        let wan = socket(&mut umem, wan)?;
        let lan = lan.map(|lan| socket(&mut umem, lan)).transpose()?;
        let batch = config.batch_size as usize;
        let free = umem.frame_addrs().collect();
        Ok(Worker {
            wan,
            lan,
            umem,
            free,
            rx: vec![EMPTY; batch],
            to_wan: Vec::with_capacity(batch),
            to_lan: Vec::with_capacity(batch),
            completed: vec![0; batch],
            held: HoldQueue::new(config.hold),
            icmp_limiter: IcmpLimiter::new(config.icmp_rate),
            tally: Tally::default(),
            latency: LatencyRecorder::default(),
            socket_drops_read: Instant::now(),
            published: Arc::new(Published::default()),
            unresolved: Arc::new(UnresolvedHosts::default()),
            table,
            config,
        })
    }

    /// The WAN socket's descriptor and mode, for the XSKMAP and the logs.
    pub fn wan_socket(&self) -> (RawFd, BindMode) {
        (self.wan.fd(), self.wan.mode())
    }

    /// The LAN socket's, when there is a LAN.
    pub fn lan_socket(&self) -> Option<(RawFd, BindMode)> {
        self.lan.as_ref().map(|s| (s.fd(), s.mode()))
    }

    /// What readers see of this worker's counters and latency.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published)
    }

    /// The neighbours (LAN hosts, underlay next hops) this worker holds or
    /// dropped frames for, for the daemon to have solicited.
    pub fn unresolved_hosts(&self) -> Arc<UnresolvedHosts> {
        Arc::clone(&self.unresolved)
    }

    /// Forwards until `stop` is set, then sends what it already took and
    /// returns. Gives up the calling thread's capabilities first, and pins
    /// it, if a core is configured.
    pub fn run(mut self, stop: &AtomicBool) {
        // The sockets are open and bound: rings, wake-ups and statistics
        // need no capability (this thread's only; docs/security.md).
        if let Err(e) = detour_common::privileges::keep_only(&[]) {
            tracing::warn!(
                queue = self.config.queue,
                "could not give up capabilities: {e}"
            );
        }
        if let Some(core) = self.config.core
            && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
        {
            tracing::warn!(queue = self.config.queue, core, "could not pin the worker");
        }
        while !stop.load(Ordering::Relaxed) {
            if !self.turn() {
                self.idle();
            }
        }
        let deadline = Instant::now() + DRAIN_FOR;
        while Instant::now() < deadline && (self.turn() || self.transmitting()) {}
        self.read_socket_drops(Instant::now());
        self.published.publish(&self.tally);
    }

    /// One turn of the loop; true if it moved any frame.
    pub fn turn(&mut self) -> bool {
        self.recycle();
        self.wan.refill(&mut self.free);
        if let Some(lan) = &mut self.lan {
            lan.refill(&mut self.free);
        }
        let guard = self.table.load();
        let table = guard.as_deref();
        let now = Instant::now();
        let mut moved = self.resume_held(table, now);
        moved |= self.forward_batch(table, Egress::Wan);
        if self.lan.is_some() {
            moved |= self.forward_batch(table, Egress::Lan);
        }
        if moved {
            if now.duration_since(self.socket_drops_read) >= SOCKET_DROPS_EVERY {
                self.read_socket_drops(now);
            }
            self.tally.set(Stat::Holding, self.held.len() as u64);
            self.published.publish(&self.tally);
            self.latency.maybe_merge(now, &self.published);
        }
        self.transmit();
        moved
    }

    /// Puts the rewritten frames on the TX rings, and wakes the kernel to
    /// send them if it asks for that.
    fn transmit(&mut self) {
        let queued = self.wan.transmit(&self.to_wan);
        debug_assert_eq!(queued, self.to_wan.len(), "room was checked");
        self.to_wan.clear();
        if let Some(lan) = &mut self.lan {
            let queued = lan.transmit(&self.to_lan);
            debug_assert_eq!(queued, self.to_lan.len(), "room was checked");
        }
        self.to_lan.clear();
        // Copy mode sends at most 32 frames per wake-up (docs/design.md):
        // the rest go out on later turns.
        self.wan.kick();
        if let Some(lan) = &mut self.lan {
            lan.kick();
        }
    }

    /// How many more frames this turn may queue, whichever interface each
    /// leaves by: the room both TX rings have left.
    fn transmit_room(&mut self) -> usize {
        let wan = (self.wan.transmit_room() as usize).saturating_sub(self.to_wan.len());
        let lan = self.lan.as_mut().map_or(usize::MAX, |lan| {
            (lan.transmit_room() as usize).saturating_sub(self.to_lan.len())
        });
        wan.min(lan)
    }

    /// Drops the held frames that waited too long and, if the table is new,
    /// tries the others again; true if any frame left the queue.
    fn resume_held(&mut self, table: Option<&RouteTable>, now: Instant) -> bool {
        if self.held.is_empty() {
            return false;
        }
        let before = self.held.len();
        let (free, tally) = (&mut self.free, &mut self.tally);
        self.held.expire(now, |h| {
            tally.add(Stat::HoldExpired, 1);
            free.push(h.base);
        });
        if let Some(table) = table
            && self.held.worth_trying(table.generation)
        {
            let mut room = self.transmit_room();
            // Out of `self` while `resume_one` forwards with the rest of it.
            let mut held = std::mem::take(&mut self.held);
            held.resume(table.generation, |h| {
                if room == 0 {
                    return None;
                }
                let outcome = self.resume_one(table, h);
                if outcome == Outcome::Done {
                    room -= 1;
                }
                Some(outcome)
            });
            self.held = held;
        }
        self.held.len() != before
    }

    /// Takes the held frame `h` up again: queued to go out, still waiting,
    /// or dropped.
    fn resume_one(&mut self, table: &RouteTable, h: &Held) -> Outcome {
        let (frame, _) = self.umem.frame_mut(h.base);
        let (start, len) = (h.start as usize, h.len as usize);
        let (ingress, result) = match h.resume {
            Resume::Forward { ingress } => {
                (ingress, self::forward(table, ingress, frame, start, len))
            }
            Resume::Deliver { inner_at } => (
                Egress::Wan,
                rewrite::deliver(table, frame, usize::from(inner_at), start + len),
            ),
        };
        match result {
            Err(Discard::Unresolved { .. } | Discard::UnresolvedHost { .. }) => Outcome::Wait,
            Ok(f) => {
                self.tally.add(Stat::Released, 1);
                self.queue(ingress, h.base, f);
                Outcome::Done
            }
            Err(discard) => {
                self.tally.add(Stat::of(discard), 1);
                self.free.push(h.base);
                Outcome::Done
            }
        }
    }

    /// Takes the kernel's counts of the frames it dropped on the way into
    /// the sockets (the worker never saw them) into the tally.
    /// A failed read keeps the counts as they were: they only grow.
    fn read_socket_drops(&mut self, now: Instant) {
        self.socket_drops_read = now;
        let lan = self
            .lan
            .as_ref()
            .map_or(Ok(SocketDrops::default()), Socket::drops);
        if let (Ok(wan), Ok(lan)) = (self.wan.drops(), lan) {
            let drops = wan + lan;
            self.tally.set(Stat::SocketRingFull, drops.ring_full);
            self.tally.set(Stat::SocketNoFrame, drops.no_frame);
        }
    }

    /// Takes transmitted frames back from both completion rings.
    fn recycle(&mut self) {
        let size = u64::from(self.config.frame_size);
        for socket in std::iter::once(&mut self.wan).chain(self.lan.as_mut()) {
            loop {
                let n = socket.complete(&mut self.completed);
                // A transmitted descriptor may start anywhere in its frame.
                self.free
                    .extend(self.completed[..n].iter().map(|a| a - a % size));
                if n < self.completed.len() {
                    break;
                }
            }
        }
    }

    /// Receives one batch on the socket of `ingress` and rewrites it, for
    /// [`Worker::transmit`] to send; true if anything was received.
    fn forward_batch(&mut self, table: Option<&RouteTable>, ingress: Egress) -> bool {
        let want = self.rx.len().min(self.transmit_room());
        let socket = match ingress {
            Egress::Wan => &mut self.wan,
            Egress::Lan => self.lan.as_mut().expect("a LAN socket"),
        };
        let n = socket.receive(&mut self.rx[..want]);
        if n == 0 {
            return false;
        }
        let started = Instant::now();
        self.tally.add(Stat::Received, n as u64);
        for i in 0..n {
            let desc = self.rx[i];
            self.tally.add(Stat::ReceivedBytes, u64::from(desc.len));
            self.forward_one(table, ingress, desc, started);
        }
        self.latency.record(started.elapsed(), n as u64);
        true
    }

    #[inline]
    fn forward_one(
        &mut self,
        table: Option<&RouteTable>,
        ingress: Egress,
        desc: Desc,
        now: Instant,
    ) {
        let (frame, at) = self.umem.frame_mut(desc.addr);
        let base = desc.addr - at as u64;
        let len = desc.len as usize;
        let Some(table) = table else {
            self.tally.add(Stat::NoTable, 1);
            self.free.push(base);
            return;
        };
        match self::forward(table, ingress, frame, at, len) {
            Ok(f) => self.queue(ingress, base, f),
            Err(discard) => self.not_forwarded(table, ingress, (base, at, len), discard, now),
        }
    }

    /// Counts the frame in `base`, rewritten as `f`, by its path and queues
    /// it to go out.
    #[inline]
    fn queue(&mut self, ingress: Egress, base: u64, f: Forward) {
        let path = match (ingress, f.egress) {
            (Egress::Lan, _) => Stat::Encapsulated,
            (Egress::Wan, Egress::Wan) => Stat::Relayed,
            (Egress::Wan, Egress::Lan) => Stat::Decapsulated,
        };
        self.tally.add(path, 1);
        self.push_out(base, f);
    }

    /// Queues the frame in `base`, now `f`, on the TX list of its egress.
    #[inline]
    fn push_out(&mut self, base: u64, f: Forward) {
        self.tally.add(Stat::TransmittedBytes, f.len as u64);
        let out = Desc {
            addr: base + f.start as u64,
            len: f.len as u32,
            options: 0,
        };
        match f.egress {
            Egress::Wan => self.to_wan.push(out),
            Egress::Lan => self.to_lan.push(out),
        }
    }

    /// What becomes of a frame the rewrite refused: answered (ICMP), held
    /// (its neighbour is being resolved) or dropped, and counted so.
    /// `frame` is its buffer's address, and where the frame lies in it.
    #[cold]
    fn not_forwarded(
        &mut self,
        table: &RouteTable,
        ingress: Egress,
        (base, at, len): (u64, usize, usize),
        discard: Discard,
        now: Instant,
    ) {
        let error = match (ingress, discard) {
            (Egress::Lan, Discard::TooBig { mtu }) => Some(IcmpError::TooBig { mtu }),
            (Egress::Lan, Discard::TtlExpired) => Some(IcmpError::TimeExceeded),
            _ => None,
        };
        if let (Some(error), Some(lan_mac)) = (error, table.links().lan_mac) {
            let (frame, _) = self.umem.frame_mut(base);
            let limiter = (&mut self.icmp_limiter, now);
            match icmp::answer(
                frame,
                (at, len),
                error,
                lan_mac,
                self.config.icmp_source,
                limiter,
            ) {
                Ok(f) => {
                    self.tally.add(Stat::Answered, 1);
                    self.push_out(base, f);
                    return;
                }
                Err(NoAnswer::Limited) => self.tally.add(Stat::IcmpSuppressed, 1),
                Err(NoAnswer::Unanswerable) => {}
            }
        }
        let waiting = match discard {
            Discard::Unresolved { via } => {
                if let Some(peer) = table.peer(via) {
                    self.ask_resolution(peer.underlay.into());
                }
                Some((Neighbour::Underlay(via), Resume::Forward { ingress }))
            }
            Discard::UnresolvedHost { inner_at } => {
                let (frame, _) = self.umem.frame_mut(base);
                let dst = frame
                    .get(usize::from(inner_at)..at + len)
                    .and_then(rewrite::host_address);
                dst.map(|dst| {
                    self.ask_resolution(dst);
                    (Neighbour::LanHost(dst), Resume::Deliver { inner_at })
                })
            }
            _ => None,
        };
        if let Some((waits_for, resume)) = waiting {
            let held = Held {
                base,
                start: at as u32,
                len: len as u32,
                resume,
                waits_for,
                since: now,
            };
            if self.held.hold(held, table.generation) {
                self.tally.add(Stat::Held, 1);
                return;
            }
        }
        self.tally.add(Stat::of(discard), 1);
        self.free.push(base);
    }

    /// Has the daemon solicit `addr`, a LAN host or an underlay next hop
    /// frames wait for: a few atomic operations, no lock, no allocation;
    /// the doorbell's one system call only for an address newly recorded
    /// (resolve.rs).
    fn ask_resolution(&self, addr: IpKey) {
        if self.unresolved.record(addr)
            && let Some(bell) = &self.config.doorbell
        {
            bell.ring();
        }
    }

    /// Whether frames still wait in a TX ring.
    fn transmitting(&mut self) -> bool {
        self.wan.pending_transmit() > 0
            || self.lan.as_mut().is_some_and(|l| l.pending_transmit() > 0)
    }

    /// Nothing came in: spin (busy polling) or sleep until something does.
    fn idle(&mut self) {
        // Idle is when the last drops of a burst get counted.
        let now = Instant::now();
        if now.duration_since(self.socket_drops_read) >= SOCKET_DROPS_EVERY {
            self.read_socket_drops(now);
            self.published.publish(&self.tally);
        }
        if self.config.busy_poll && !self.wan.fill_needs_wakeup() {
            std::hint::spin_loop();
            return;
        }
        let mut fds = [self.wan.fd(), -1];
        let mut n = 1;
        if let Some(lan) = &self.lan {
            fds[1] = lan.fd();
            n = 2;
        }
        let nap = match self.held.is_empty() {
            true => IDLE_POLL_MS,
            false => HOLDING_POLL_MS,
        };
        // An error (EINTR) only ends the nap early.
        let _ = wait_readable(&fds[..n], nap);
    }
}

/// Forwards the frame at `frame[start..start + len]` that came in on
/// `ingress`.
#[inline(always)]
fn forward(
    table: &RouteTable,
    ingress: Egress,
    frame: &mut [u8],
    start: usize,
    len: usize,
) -> Result<Forward, Discard> {
    match ingress {
        Egress::Wan => rewrite::from_wan(table, frame, start, len),
        Egress::Lan => rewrite::encap(table, frame, start, len),
    }
}
