//! `detourctl top`: the dataplane's rates and drops, refreshed.
//!
//! On a terminal it redraws in place and quits on `q` or Ctrl-C, leaving
//! the terminal as it found it (its mode is restored on every way out,
//! and Ctrl-C is caught rather than left to kill the process mid-draw).
//! Elsewhere (a pipe, `--json`) it prints one frame after another, for
//! logs and scripts; `--count` stops it.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use detour_common::api as dp;
use serde::Serialize;

use crate::show::{Table, bytes, latency};
use crate::{Failure, Sockets};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0, value_parser = interval)]
    interval: f64,
    /// Stop after this many refreshes (default: until q or Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
}

fn interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0.1 to 3600")),
    }
}

/// One queue's (or the total's) rates over a refresh.
#[derive(Debug, Clone, Default, Serialize)]
struct Rates {
    /// `None` for the total.
    queue: Option<u32>,
    rx_pps: f64,
    rx_bps: f64,
    forwarded_pps: f64,
    tx_bps: f64,
    dropped_pps: f64,
    /// Drops per second by reason; reasons with none left out.
    drops: std::collections::BTreeMap<String, f64>,
}

/// What one refresh shows (`top --json` prints one per line).
#[derive(Debug, Serialize)]
struct Frame {
    interval_s: f64,
    workers: Vec<Rates>,
    total: Rates,
    /// Latency since the dataplane started, all workers.
    latency: dp::Latency,
    /// The XDP classifier's counters per second, those that moved.
    xdp_pps: std::collections::BTreeMap<String, f64>,
}

fn rates(
    queue: Option<u32>,
    now: &dp::WorkerCounters,
    was: &dp::WorkerCounters,
    secs: f64,
) -> Rates {
    let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    Rates {
        queue,
        rx_pps: per_s(now.received, was.received),
        rx_bps: per_s(now.received_bytes, was.received_bytes) * 8.0,
        forwarded_pps: per_s(
            now.forwarded() + now.answered,
            was.forwarded() + was.answered,
        ),
        tx_bps: per_s(now.transmitted_bytes, was.transmitted_bytes) * 8.0,
        dropped_pps: per_s(now.dropped_total(), was.dropped_total()),
        drops: now
            .dropped
            .iter()
            .map(|(reason, n)| {
                let before = was.dropped.get(reason).copied().unwrap_or(0);
                (reason.clone(), per_s(*n, before))
            })
            .filter(|(_, r)| *r > 0.0)
            .collect(),
    }
}

fn frame(now: &dp::Stats, was: &dp::Stats, secs: f64) -> Frame {
    let workers = now
        .workers
        .iter()
        .map(|w| {
            let before = was
                .workers
                .iter()
                .find(|b| b.queue == w.queue)
                .map(|b| b.counters.clone())
                .unwrap_or_default();
            rates(Some(w.queue), &w.counters, &before, secs)
        })
        .collect();
    Frame {
        interval_s: secs,
        workers,
        total: rates(None, &now.total, &was.total, secs),
        latency: now.latency.clone(),
        xdp_pps: now
            .xdp
            .iter()
            .map(|(c, n)| {
                let before = was.xdp.get(c).copied().unwrap_or(0);
                (c.clone(), n.saturating_sub(before) as f64 / secs)
            })
            .filter(|(_, r)| *r > 0.0)
            .collect(),
    }
}

fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} M", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} k", pps / 1e3)
    } else {
        format!("{pps:.0}")
    }
}

fn bits(bps: f64) -> String {
    if bps >= 1e9 {
        format!("{:.2} Gb/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.1} Mb/s", bps / 1e6)
    } else {
        format!("{:.1} kb/s", bps / 1e3)
    }
}

fn render(f: &Frame, total_bytes: u64) -> String {
    let mut t = Table::new(&[
        "QUEUE",
        "   RX PKT/S",
        "       RX",
        " FWD PKT/S",
        "       TX",
        " DROP PKT/S",
        "DROPS",
    ]);
    for r in f.workers.iter().chain([&f.total]) {
        t.row(vec![
            r.queue.map_or("total".into(), |q| q.to_string()),
            rate(r.rx_pps),
            bits(r.rx_bps),
            rate(r.forwarded_pps),
            bits(r.tx_bps),
            rate(r.dropped_pps),
            if r.drops.is_empty() {
                "-".into()
            } else {
                r.drops
                    .iter()
                    .map(|(reason, pps)| format!("{reason} {}", rate(*pps)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ]);
    }
    let xdp = if f.xdp_pps.is_empty() {
        "-".into()
    } else {
        f.xdp_pps
            .iter()
            .map(|(c, pps)| format!("{c} {}", rate(*pps)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "detour dataplane, every {:.1} s ({} received since start); q quits\n\n{}\nlatency since start: p50 {}, p99 {}, p99.9 {}, max {}\nXDP per second: {xdp}\n",
        f.interval_s,
        bytes(total_bytes),
        t.render(),
        latency(f.latency.count, f.latency.p50_ns),
        latency(f.latency.count, f.latency.p99_ns),
        latency(f.latency.count, f.latency.p999_ns),
        latency(f.latency.count, f.latency.max_ns),
    )
}

pub fn run(sockets: &Sockets, args: &Args, json: bool) -> Result<(), Failure> {
    let interactive = !json && std::io::stdout().is_terminal();
    let quit = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&quit))
            .map_err(|e| Failure::Protocol(format!("catching signals: {e}")))?;
    }
    let _terminal = if interactive { Terminal::take() } else { None };
    let period = Duration::from_secs_f64(args.interval);
    let mut was = sockets.stats()?;
    let mut at = Instant::now();
    let mut shown = 0;
    while args.count.is_none_or(|n| shown < n) {
        if wait(period, &quit, interactive) {
            break;
        }
        let now = sockets.stats()?;
        let secs = at.elapsed().as_secs_f64();
        at = Instant::now();
        let f = frame(&now, &was, secs);
        if json {
            println!("{}", serde_json::to_string(&f).expect("frames serialize"));
        } else if interactive {
            // Home, clear, draw.
            print!("\x1b[H\x1b[2J{}", render(&f, now.total.received_bytes));
        } else {
            println!("{}", render(&f, now.total.received_bytes));
        }
        let _ = std::io::stdout().flush();
        was = now;
        shown += 1;
    }
    Ok(())
}

/// Waits `period`, watching for a quit (a signal, or `q` on a
/// terminal); true if one came.
fn wait(period: Duration, quit: &AtomicBool, interactive: bool) -> bool {
    let until = Instant::now() + period;
    loop {
        if quit.load(Ordering::Relaxed) {
            return true;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let step = left.min(Duration::from_millis(100));
        if interactive {
            if key_pressed(step).is_some_and(|k| k == b'q' || k == b'Q') {
                return true;
            }
        } else {
            std::thread::sleep(step);
        }
    }
}

/// A key from stdin within `timeout`, if one came.
fn key_pressed(timeout: Duration) -> Option<u8> {
    let mut fds = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, its count, a timeout in ms.
    let ready = unsafe { libc::poll(&mut fds, 1, timeout.as_millis() as libc::c_int) };
    if ready <= 0 {
        return None;
    }
    let mut key = 0u8;
    // SAFETY: reading at most one byte into a one-byte buffer.
    let n = unsafe { libc::read(libc::STDIN_FILENO, (&raw mut key).cast(), 1) };
    (n == 1).then_some(key)
}

/// The terminal in key-at-a-time mode, cursor hidden, until this drops.
struct Terminal {
    saved: libc::termios,
}

impl Terminal {
    /// `None` when stdin is no terminal (then only signals quit).
    fn take() -> Option<Terminal> {
        // SAFETY: tcgetattr fills the termios it is given; zeroed is a
        // valid termios to hand it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // No line buffering, no echo; signals (Ctrl-C) still raised, and
        // caught by the flag in `run`.
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: setting the attributes just read, modified.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        print!("\x1b[?25l");
        Some(Terminal { saved })
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        println!("\x1b[?25h");
        let _ = std::io::stdout().flush();
        // SAFETY: restoring the attributes saved in `take`.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_second_and_drops_by_reason() {
        let was = dp::WorkerCounters {
            received: 100,
            received_bytes: 10_000,
            relayed: 90,
            dropped: [("no_route".to_string(), 10)].into(),
            ..Default::default()
        };
        let now = dp::WorkerCounters {
            received: 300,
            received_bytes: 30_000,
            relayed: 270,
            dropped: [("no_route".to_string(), 20), ("malformed".to_string(), 10)].into(),
            ..Default::default()
        };
        let r = rates(Some(0), &now, &was, 2.0);
        assert_eq!(r.rx_pps, 100.0);
        assert_eq!(r.rx_bps, 80_000.0);
        assert_eq!(r.forwarded_pps, 90.0);
        assert_eq!(r.dropped_pps, 10.0);
        assert_eq!(r.drops.len(), 2);
        assert_eq!(r.drops["malformed"], 5.0);
        assert_eq!(rate(1_500_000.0), "1.50 M");
        assert_eq!(bits(2.5e9), "2.50 Gb/s");
    }
}
