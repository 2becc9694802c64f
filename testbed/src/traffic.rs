//! Traffic between two sites' hosts, and what it shows.
//!
//! A [`Flow`] sends numbered UDP datagrams from one host to another at a
//! steady rate; each carries its sequence number and when it was sent, and
//! the receiver notes when it arrived. Both ends are threads of this
//! process (each entered its host's namespace), so both read one clock:
//! one-way latency, loss and the failover time are measured from the
//! traffic itself ([`Record`]), not from any daemon's logs.
//! [`blast`] measures the most the overlay delivers.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use detour_testkit::Netns;
use serde::Serialize;

/// The receiving host's port.
pub const PORT: u16 = 9000;
/// Sequence number and send time.
const HEADER: usize = 16;
/// The most trials [`throughput`] runs.
const MAX_TRIALS: usize = 12;

/// A steady flow of numbered datagrams.
pub struct Flow {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    /// The latest send time among the datagrams that arrived.
    latest_sent: Arc<AtomicU64>,
    sender: JoinHandle<anyhow::Result<Vec<u64>>>,
    receiver: JoinHandle<anyhow::Result<Vec<Arrival>>>,
}

/// One datagram that arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    pub seq: u64,
    /// Nanoseconds since the flow's epoch.
    pub sent_ns: u64,
    pub received_ns: u64,
}

impl Flow {
    /// Starts sending `rate` datagrams a second of `size` bytes of UDP
    /// payload from `from` to `to_addr`, received in `to`.
    pub fn start(
        from: &Netns,
        to: &Netns,
        to_addr: Ipv4Addr,
        rate: u32,
        size: usize,
    ) -> anyhow::Result<Flow> {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let done_sending = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let latest_sent = Arc::new(AtomicU64::new(0));
        let (socket, out) = sockets(from, to, to_addr, Duration::from_millis(20))?;
        // Late datagrams are waited for this long after the last was sent.
        let linger = Duration::from_millis(500);
        let receiver = {
            let (done, counts) = (
                done_sending.clone(),
                (received.clone(), latest_sent.clone()),
            );
            std::thread::spawn(move || receive(socket, epoch, done, linger, counts))
        };
        let sender = {
            let (stop, done) = (stop.clone(), done_sending);
            let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
            std::thread::spawn(move || {
                let sent = send(out, epoch, interval, size.max(HEADER), &stop);
                done.store(true, Ordering::Relaxed);
                sent
            })
        };
        Ok(Flow {
            epoch,
            stop,
            received,
            latest_sent,
            sender,
            receiver,
        })
    }

    /// Like [`Flow::start`], after a first flow that runs until 100
    /// datagrams got through: the neighbours on the way are resolved then
    /// (the first datagrams to a host the far node has not heard from wait
    /// for ARP), and nothing of that is counted.
    pub fn start_warm(
        from: &Netns,
        to: &Netns,
        to_addr: Ipv4Addr,
        rate: u32,
        size: usize,
    ) -> anyhow::Result<Flow> {
        let warm_up = Flow::start(from, to, to_addr, rate, size)?;
        let through = warm_up.wait_for_more(100, Duration::from_secs(10));
        warm_up.stop()?;
        if !through {
            anyhow::bail!("no traffic gets through to {to_addr}");
        }
        Flow::start(from, to, to_addr, rate, size)
    }

    /// Now, on the flow's clock (nanoseconds since it started).
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether a datagram sent at `at` (flow clock) or later arrived.
    pub fn delivered_since(&self, at: u64) -> bool {
        self.latest_sent.load(Ordering::Relaxed) >= at
    }

    /// Waits up to `timeout` for `n` more datagrams to arrive; whether
    /// they did.
    pub fn wait_for_more(&self, n: u64, timeout: Duration) -> bool {
        let target = self.received() + n;
        detour_testkit::eventually(timeout, || self.received() >= target)
    }

    /// Stops sending, waits for stragglers, and returns what happened.
    pub fn stop(self) -> anyhow::Result<Record> {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("sender thread")?;
        let arrivals = self.receiver.join().expect("receiver thread")?;
        Ok(Record::new(sent, arrivals))
    }
}

/// The receiving socket, on [`PORT`] in `to` (reads time out after
/// `read_timeout`, so that its thread can look at its stop flag), and the
/// sending one in `from`, connected to it.
fn sockets(
    from: &Netns,
    to: &Netns,
    to_addr: Ipv4Addr,
    read_timeout: Duration,
) -> anyhow::Result<(UdpSocket, UdpSocket)> {
    let receiver = to.enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)))??;
    receiver.set_read_timeout(Some(read_timeout))?;
    let sender = from.enter(|| -> std::io::Result<UdpSocket> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        s.connect(SocketAddr::from((to_addr, PORT)))?;
        Ok(s)
    })??;
    Ok((receiver, sender))
}

fn send(
    socket: UdpSocket,
    epoch: Instant,
    interval: Duration,
    size: usize,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<u64>> {
    let mut sent = Vec::new();
    let mut buf = vec![0u8; size];
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        buf[..8].copy_from_slice(&(sent.len() as u64).to_be_bytes());
        buf[8..16].copy_from_slice(&sent_ns.to_be_bytes());
        // A path that is down may refuse it at once (an ICMP error
        // reported on the connected socket): that datagram is lost, as it
        // would be on the wire.
        let _ = socket.send(&buf);
        sent.push(sent_ns);
    }
    Ok(sent)
}

fn receive(
    socket: UdpSocket,
    epoch: Instant,
    done_sending: Arc<AtomicBool>,
    linger: Duration,
    (received, latest_sent): (Arc<AtomicU64>, Arc<AtomicU64>),
) -> anyhow::Result<Vec<Arrival>> {
    let mut arrivals = Vec::new();
    let mut buf = [0u8; 65_536];
    let mut done_at = None;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) if n >= HEADER => {
                let received_ns = epoch.elapsed().as_nanos() as u64;
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                let sent_ns = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                arrivals.push(Arrival {
                    seq,
                    sent_ns,
                    received_ns,
                });
                received.fetch_add(1, Ordering::Relaxed);
                latest_sent.fetch_max(sent_ns, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("receiving"),
        }
        if done_sending.load(Ordering::Relaxed) {
            let since = *done_at.get_or_insert_with(Instant::now);
            if since.elapsed() > linger {
                return Ok(arrivals);
            }
        }
    }
}

/// What a flow did: every datagram sent, and those that arrived.
#[derive(Debug, Clone)]
pub struct Record {
    /// Send time of each sequence number, nanoseconds on the flow's clock.
    pub sent: Vec<u64>,
    /// First arrival of each sequence number that arrived, by arrival.
    pub arrivals: Vec<Arrival>,
    /// Arrivals of a sequence number already seen.
    pub duplicates: u64,
}

impl Record {
    pub fn new(sent: Vec<u64>, all: Vec<Arrival>) -> Record {
        let mut seen = vec![false; sent.len()];
        let mut arrivals = Vec::with_capacity(all.len());
        let mut duplicates = 0;
        for a in all {
            match seen.get_mut(a.seq as usize) {
                Some(s) if !*s => {
                    *s = true;
                    arrivals.push(a);
                }
                Some(_) => duplicates += 1,
                None => {} // Not this flow's.
            }
        }
        Record {
            sent,
            arrivals,
            duplicates,
        }
    }

    /// Datagrams sent in `[from, to)` (flow-clock nanoseconds) that never
    /// arrived.
    pub fn lost(&self, from: u64, to: u64) -> u64 {
        self.lost_send_times()
            .into_iter()
            .filter(|&t| t >= from && t < to)
            .count() as u64
    }

    /// The send times of the datagrams that never arrived.
    pub fn lost_send_times(&self) -> Vec<u64> {
        let mut arrived = vec![false; self.sent.len()];
        for a in &self.arrivals {
            arrived[a.seq as usize] = true;
        }
        self.sent
            .iter()
            .zip(arrived)
            .filter(|&(_, arrived)| !arrived)
            .map(|(&t, _)| t)
            .collect()
    }

    pub fn sent_between(&self, from: u64, to: u64) -> u64 {
        self.sent.iter().filter(|&&t| t >= from && t < to).count() as u64
    }

    /// When the first datagram sent at or after `at` arrived: after a cut
    /// at `at`, the end of the failover.
    pub fn first_arrival_sent_after(&self, at: u64) -> Option<u64> {
        self.arrivals
            .iter()
            .filter(|a| a.sent_ns >= at)
            .map(|a| a.received_ns)
            .min()
    }

    /// The one-way latencies of the datagrams sent in `[from, to)` that
    /// arrived, sorted.
    fn latencies(&self, from: u64, to: u64) -> Vec<u64> {
        let mut l: Vec<u64> = self
            .arrivals
            .iter()
            .filter(|a| a.sent_ns >= from && a.sent_ns < to)
            .map(|a| a.received_ns.saturating_sub(a.sent_ns))
            .collect();
        l.sort_unstable();
        l
    }

    /// The median one-way latency of the datagrams sent in `[from, to)`.
    pub fn median_latency(&self, from: u64, to: u64) -> Option<Duration> {
        let l = self.latencies(from, to);
        l.get(l.len() / 2).map(|&ns| Duration::from_nanos(ns))
    }

    /// When the first datagram sent after `from` with a one-way latency
    /// under `threshold` was sent: when the traffic moved to a faster path.
    pub fn first_faster_than(&self, from: u64, threshold: Duration) -> Option<u64> {
        self.arrivals
            .iter()
            .filter(|a| {
                a.sent_ns >= from
                    && a.received_ns.saturating_sub(a.sent_ns) < threshold.as_nanos() as u64
            })
            .map(|a| a.sent_ns)
            .min()
    }
}

/// The highest rate at which the overlay delivered nearly everything
/// (RFC 2544's throughput, with a loss allowance), found by trials.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Throughput {
    pub payload_bytes: usize,
    /// The loss a trial may have and still pass.
    pub loss_allowed: f64,
    /// The best passing trial: datagrams a second sent and delivered.
    pub offered_per_second: f64,
    pub packets_per_second: f64,
    /// Inner IPv4 packets' bits delivered a second (UDP payload plus 28
    /// bytes of headers).
    pub megabits_per_second: f64,
    /// Whether the sender could not go faster: then the overlay took more
    /// than this.
    pub sender_limited: bool,
    pub trials: usize,
}

/// The outcome of one trial.
#[derive(Debug, Clone, Copy)]
struct Trial {
    seconds: f64,
    sent: u64,
    received: u64,
}

impl Trial {
    fn loss(&self) -> f64 {
        1.0 - self.received as f64 / self.sent.max(1) as f64
    }
}

/// Finds the highest rate from `from` to `to` that loses at most
/// `loss_allowed`: rates double from 10,000 datagrams a second until a
/// trial fails (or the sender is at its limit), then four bisections.
/// Each trial lasts `trial`; between trials the queues drain.
pub fn throughput(
    from: &Netns,
    to: &Netns,
    to_addr: Ipv4Addr,
    size: usize,
    trial: Duration,
    loss_allowed: f64,
) -> anyhow::Result<Throughput> {
    let size = size.max(HEADER);
    let (socket, out) = sockets(from, to, to_addr, Duration::from_millis(50))?;
    // The receiver counts the datagrams of the current trial only.
    let current = Arc::new(AtomicU64::new(0));
    let counted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (current, counted, stop) = (current.clone(), counted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf)
                    && n >= 8
                    && u64::from_be_bytes(buf[..8].try_into().unwrap())
                        == current.load(Ordering::Relaxed)
                {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let run_trial = |id: u64, rate: f64| -> Trial {
        current.store(id, Ordering::Relaxed);
        counted.store(0, Ordering::Relaxed);
        let mut buf = vec![0u8; size];
        buf[..8].copy_from_slice(&id.to_be_bytes());
        // Paced in bursts of a millisecond's worth.
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < trial {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                if out.send(&buf).is_ok() {
                    sent += 1;
                } else {
                    // A full socket buffer: the sender's own limit.
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let seconds = start.elapsed().as_secs_f64();
        // What is on the way arrives, then the queues drain.
        std::thread::sleep(Duration::from_millis(300));
        Trial {
            seconds,
            sent,
            received: counted.load(Ordering::Relaxed),
        }
    };

    // Warm-up: neighbours resolved before anything counts.
    run_trial(u64::MAX, 1000.0);
    let mut best: Option<Trial> = None;
    let (mut good, mut bad) = (0.0, None::<f64>);
    let mut sender_limited = false;
    let mut rate = 10_000.0;
    let mut trials = 0;
    while trials < MAX_TRIALS {
        trials += 1;
        let t = run_trial(trials as u64, rate);
        if t.loss() <= loss_allowed {
            (good, best) = (rate, Some(t));
            if (t.sent as f64 / t.seconds) < rate * 0.9 {
                sender_limited = true;
                break;
            }
        } else {
            bad = Some(rate);
        }
        rate = match bad {
            None => rate * 2.0,
            Some(b) if b - good < b / 16.0 => break,
            Some(b) => (good + b) / 2.0,
        };
    }
    stop.store(true, Ordering::Relaxed);
    receiver.join().expect("receiver thread");
    let (pps, offered) = best.map_or((0.0, 0.0), |t| {
        (t.received as f64 / t.seconds, t.sent as f64 / t.seconds)
    });
    Ok(Throughput {
        payload_bytes: size,
        loss_allowed,
        offered_per_second: offered,
        packets_per_second: pps,
        megabits_per_second: pps * ((size + 28) * 8) as f64 / 1e6,
        sender_limited,
        trials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Datagrams every ms for 10 ms, 2 ms on the way; those sent at 3 and
    /// 4 ms lost (a cut at 3 ms), then 10 ms on the way (a relay).
    fn record() -> Record {
        let sent: Vec<u64> = (0..10).map(|i| i * MS).collect();
        let mut arrivals = Vec::new();
        for (seq, &t) in sent.iter().enumerate() {
            let latency = match seq {
                3 | 4 => continue,
                0..=2 => 2 * MS,
                _ => 10 * MS,
            };
            arrivals.push(Arrival {
                seq: seq as u64,
                sent_ns: t,
                received_ns: t + latency,
            });
        }
        arrivals.push(arrivals[0]);
        Record::new(sent, arrivals)
    }

    #[test]
    fn loss_recovery_and_latency_come_from_the_datagrams() {
        let r = record();
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.lost(0, 10 * MS), 2);
        assert_eq!(r.lost(5 * MS, 10 * MS), 0);
        assert_eq!(r.sent_between(3 * MS, 5 * MS), 2);
        // Cut at 3 ms: the first datagram sent after it that arrived was
        // sent at 5 ms and arrived at 15 ms.
        assert_eq!(r.first_arrival_sent_after(3 * MS), Some(15 * MS));
        assert_eq!(r.first_arrival_sent_after(11 * MS), None);
        assert_eq!(r.median_latency(0, 3 * MS), Some(Duration::from_millis(2)));
        assert_eq!(
            r.median_latency(5 * MS, 10 * MS),
            Some(Duration::from_millis(10))
        );
        assert_eq!(r.first_faster_than(3 * MS, Duration::from_millis(5)), None);
        assert_eq!(r.first_faster_than(0, Duration::from_millis(5)), Some(0));
    }
}
