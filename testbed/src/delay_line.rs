//! The delay line: holds each packet the router hands it for its path's
//! delay, then gives it back to the router.
//!
//! It owns the TAP device [`DELAY_DEVICE`] in the router namespace (the
//! device goes away with the process, so a killed delay line leaves
//! nothing behind). The router's nftables rules forward the delayed paths'
//! frames into the TAP ([`crate::internet`]); here each is read, kept until
//! `arrival + delay(source, destination)`, given the TAP's own MAC as its
//! destination (so that the kernel takes it as addressed to the router) and
//! written back, after which the kernel forwards it. Packets of one
//! direction keep their order: they share one delay.
//!
//! Run by `detour-testbed delay-line` inside the router namespace;
//! SIGHUP rereads the delays file, SIGINT or SIGTERM stops it.

use std::collections::{BTreeMap, BinaryHeap};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::internet::{DELAY_DEVICE, parse_delays};

/// Frames held at once; more are dropped, as a full router queue would.
const MAX_HELD: usize = 100_000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const ETH_HEADER: usize = 14;

/// Runs the delay line until SIGINT or SIGTERM.
pub fn run(delays_file: &Path) -> anyhow::Result<()> {
    let mut delays = load(delays_file)?;
    let tap = open_tap(DELAY_DEVICE)?;
    let mac = prepare(DELAY_DEVICE)?;
    let reload = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(libc::SIGHUP, reload.clone())?;
    signal_hook::flag::register(libc::SIGINT, stop.clone())?;
    signal_hook::flag::register(libc::SIGTERM, stop.clone())?;
    eprintln!(
        "delay line: {DELAY_DEVICE} up, {} delayed directions",
        delays.len()
    );

    let mut line = Line::default();
    let mut tap = tap;
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        if reload.swap(false, Ordering::Relaxed) {
            match load(delays_file) {
                Ok(d) => {
                    delays = d;
                    eprintln!("delay line: reloaded, {} delayed directions", delays.len());
                }
                Err(e) => eprintln!("delay line: keeping the old delays: {e:#}"),
            }
        }
        wait_readable(&tap, line.next_due())?;
        // Everything that arrived, then everything that is due.
        loop {
            match tap.read(&mut buf) {
                Ok(n) => line.hold(&buf[..n], &delays, mac, Instant::now()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e).context("reading the TAP"),
            }
        }
        while let Some(frame) = line.pop_due(Instant::now()) {
            // A full backlog drops the frame, as a router would.
            let _ = tap.write(&frame);
        }
    }
    eprintln!(
        "delay line: stopped ({} dropped for a full queue)",
        line.overflow
    );
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<BTreeMap<(Ipv4Addr, Ipv4Addr), u64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_delays(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The frames held, soonest due first.
#[derive(Default)]
struct Line {
    held: BinaryHeap<Held>,
    sequence: u64,
    overflow: u64,
}

struct Held {
    due: Instant,
    /// Arrival order, so that equal due times keep it.
    sequence: u64,
    frame: Vec<u8>,
}

impl Line {
    fn hold(
        &mut self,
        frame: &[u8],
        delays: &BTreeMap<(Ipv4Addr, Ipv4Addr), u64>,
        mac: [u8; 6],
        now: Instant,
    ) {
        if frame.len() < ETH_HEADER + 20 || self.held.len() >= MAX_HELD {
            self.overflow += u64::from(self.held.len() >= MAX_HELD);
            return;
        }
        let ip = &frame[ETH_HEADER..];
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        // A direction whose delay was just taken away goes straight on.
        let delay = delays.get(&(src, dst)).copied().unwrap_or(0);
        let mut frame = frame.to_vec();
        frame[..6].copy_from_slice(&mac);
        self.sequence += 1;
        self.held.push(Held {
            due: now + Duration::from_micros(delay),
            sequence: self.sequence,
            frame,
        });
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.peek().map(|h| h.due)
    }

    fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.held.peek()?.due > now {
            return None;
        }
        self.held.pop().map(|h| h.frame)
    }
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        self.sequence == other.sequence
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    /// Reversed: the heap's top is the soonest due, then the first come.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}

/// Opens the TAP device `name` (created here, gone when the file closes).
fn open_tap(name: &str) -> anyhow::Result<File> {
    let tap = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .context("cannot open /dev/net/tun (CONFIG_TUN)")?;
    let mut ifreq = [0u8; 40];
    ifreq[..name.len()].copy_from_slice(name.as_bytes());
    let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u16;
    ifreq[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes) that
    // `ifreq` holds for the duration of the call.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot create TAP {name}"));
    }
    Ok(tap)
}

/// Brings the TAP up, lets the router forward what comes out of it, and
/// returns its MAC.
fn prepare(name: &str) -> anyhow::Result<[u8; 6]> {
    detour_testkit::run(std::process::Command::new("ip").args(["link", "set", name, "up"]))?;
    // Frames come back with the sources of other links: no reverse-path
    // check on this one.
    std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0")
        .context("rp_filter")?;
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))?;
    let mac = detour_testkit::parse_mac(&text).with_context(|| format!("{name}: MAC {text:?}"))?;
    Ok(mac.0)
}

/// Sleeps until the TAP has a frame or `due` comes (at most 100 ms, to
/// look at the signal flags).
fn wait_readable(tap: &File, due: Option<Instant>) -> anyhow::Result<()> {
    let timeout = due
        .map(|d| d.saturating_duration_since(Instant::now()))
        .unwrap_or(Duration::from_millis(100))
        .min(Duration::from_millis(100));
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    let mut fds = [libc::pollfd {
        fd: tap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, a valid timespec, no signal mask.
    let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 1, &ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("ppoll");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(src: [u8; 4], dst: [u8; 4], tag: u8) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[ETH_HEADER + 12..ETH_HEADER + 16].copy_from_slice(&src);
        f[ETH_HEADER + 16..ETH_HEADER + 20].copy_from_slice(&dst);
        f[59] = tag;
        f
    }

    #[test]
    fn frames_come_out_after_their_directions_delay_in_order() {
        let mut delays = BTreeMap::new();
        let (a, b) = (Ipv4Addr::new(198, 18, 1, 2), Ipv4Addr::new(198, 18, 2, 2));
        delays.insert((a, b), 30_000);
        delays.insert((b, a), 10_000);
        let mac = [2, 0, 0, 0, 0, 9];
        let t0 = Instant::now();
        let mut line = Line::default();
        line.hold(&frame(a.octets(), b.octets(), 1), &delays, mac, t0);
        line.hold(&frame(a.octets(), b.octets(), 2), &delays, mac, t0);
        line.hold(&frame(b.octets(), a.octets(), 3), &delays, mac, t0);
        // Unknown direction: no delay.
        line.hold(&frame([1, 1, 1, 1], b.octets(), 4), &delays, mac, t0);

        assert_eq!(line.next_due(), Some(t0));
        let out = line.pop_due(t0).unwrap();
        assert_eq!((out[59], &out[..6]), (4, &mac[..]));
        assert!(line.pop_due(t0 + Duration::from_millis(9)).is_none());
        assert_eq!(line.pop_due(t0 + Duration::from_millis(10)).unwrap()[59], 3);
        assert_eq!(line.next_due(), Some(t0 + Duration::from_millis(30)));
        let later = t0 + Duration::from_millis(31);
        assert_eq!(line.pop_due(later).unwrap()[59], 1);
        assert_eq!(line.pop_due(later).unwrap()[59], 2);
        assert!(line.pop_due(later).is_none());
    }

    #[test]
    fn runts_are_dropped() {
        let mut line = Line::default();
        line.hold(&[0u8; 20], &BTreeMap::new(), [0; 6], Instant::now());
        assert_eq!(line.next_due(), None);
    }
}
