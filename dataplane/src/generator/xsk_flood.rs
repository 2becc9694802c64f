//! An AF_XDP socket's TX ring as a generator: every frame to send is written
//! once into the UMEM, and each transmit descriptor points at one of them,
//! so a burst of a thousand frames is a thousand 16-byte descriptors and no
//! copy in userspace. A TX descriptor is only read by the kernel (copied
//! into an skb in copy mode, DMAed in zero-copy mode), so many may point at
//! the same frame at once.
//!
//! In copy mode one wake-up (`sendto`) transmits at most 32 frames (the
//! kernel's TX budget; Linux 6.17 lets a socket raise it with
//! `XDP_MAX_TX_SKB_BUDGET`, which made no measurable difference here: the
//! skb per frame is the cost, not the system call). The kernel reserves a
//! completion slot per frame it consumes and posts it when the skb is
//! freed, transmitted or dropped: a frame counts as sent when its
//! completion arrives.

use std::io;
use std::time::{Duration, Instant};

use crate::xsk::{Desc, Socket, Umem};

/// Bytes per UMEM frame: a full Ethernet frame of 1514 bytes fits.
pub const FRAME_SIZE: u32 = 2048;
/// Entries of the TX and completion rings, and so the most frames in
/// flight.
const RING: u32 = 2048;
/// Descriptors queued at a time.
const BURST: usize = 256;
/// How long a send may go without a single completion before it gives up:
/// the kernel completes every frame it consumes, so a stall means the
/// interface stopped taking frames (it went down, say).
const STALL: Duration = Duration::from_secs(5);

pub struct XskFlood {
    // Declared before the UMEM: it must go first.
    socket: Socket,
    _umem: Umem,
    /// The length of each frame; frame `i` starts at `i * FRAME_SIZE`.
    lens: Vec<u32>,
    completions: Vec<u64>,
}

impl XskFlood {
    /// A copy-mode socket on `queue` of `iface` (in the calling thread's
    /// namespace) whose UMEM holds `frames`, each at most [`FRAME_SIZE`]
    /// bytes (the caller checks).
    pub fn new(iface: &str, queue: u32, frames: &[Vec<u8>]) -> io::Result<XskFlood> {
        let mut umem = Umem::new(FRAME_SIZE, frames.len().max(1) as u32, RING)?;
        let socket = umem.socket(iface, queue, Some(false))?;
        let mut addrs = umem.frame_addrs();
        for frame in frames {
            let addr = addrs.next().expect("a UMEM frame per frame");
            let (buf, _) = umem.frame_mut(addr);
            buf[..frame.len()].copy_from_slice(frame);
        }
        Ok(XskFlood {
            socket,
            _umem: umem,
            lens: frames.iter().map(|f| f.len() as u32).collect(),
            completions: vec![0; BURST],
        })
    }

    /// Sends frame `index` `count` times; returns once the kernel has
    /// completed every one of them.
    pub fn send(&mut self, index: usize, count: u32) -> io::Result<()> {
        let desc = Desc {
            addr: index as u64 * u64::from(FRAME_SIZE),
            len: self.lens[index],
            options: 0,
        };
        let burst = [desc; BURST];
        let (mut queued, mut completed) = (0u32, 0u32);
        let mut progress = Instant::now();
        while completed < count {
            let done = self.socket.complete(&mut self.completions) as u32;
            completed += done;
            let in_flight = queued - completed;
            let room = (count - queued).min(RING - in_flight).min(BURST as u32);
            let n = match room {
                0 => 0,
                room => self.socket.transmit(&burst[..room as usize]) as u32,
            };
            queued += n;
            if n == 0 {
                // The ring may hold frames a wake-up left (past its budget,
                // or refused by a full ring at the other end): wake it again.
                self.socket.kick();
            }
            if done > 0 {
                progress = Instant::now();
            } else if progress.elapsed() > STALL {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the kernel completed {completed} of {count} frames and then none for {STALL:?}"
                    ),
                ));
            }
        }
        Ok(())
    }
}
