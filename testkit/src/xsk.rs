//! A receive-only AF_XDP socket for tests and benchmarks: what the XDP
//! programs redirect to a queue, read back out.

use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use xsk_rs::config::{BindFlags, LibxdpFlags, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// An AF_XDP socket on one queue, every frame of its UMEM offered to the
/// kernel for receiving.
pub struct XskReceiver {
    umem: Umem,
    descs: Vec<FrameDesc>,
    rx: RxQueue,
    _tx: TxQueue,
    _rings: (FillQueue, CompQueue),
}

impl XskReceiver {
    /// Binds a copy-mode socket to `queue` of `iface`, in the calling
    /// thread's namespace, without libxdp's own XDP program.
    pub fn bind(iface: &str, queue: u32) -> XskReceiver {
        let (umem, descs) =
            Umem::new(UmemConfig::default(), NonZeroU32::new(64).unwrap(), false).expect("UMEM");
        let config = SocketConfig::builder()
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        // SAFETY: one socket per (UMEM, interface, queue); nothing shared.
        let (tx, rx, rings) = unsafe { Socket::new(config, &umem, &iface.parse().unwrap(), queue) }
            .unwrap_or_else(|e| panic!("AF_XDP socket on {iface} queue {queue}: {e}"));
        let (mut fill, comp) = rings.expect("the first socket of a UMEM gets its rings");
        // SAFETY: the descriptors are this UMEM's and not in any other ring.
        let offered = unsafe { fill.produce(&descs) };
        assert_eq!(offered, descs.len());
        XskReceiver {
            umem,
            descs,
            rx,
            _tx: tx,
            _rings: (fill, comp),
        }
    }

    /// The socket's descriptor, for an XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// The frames received within `timeout` (at most the UMEM's 64; this
    /// test socket does not recycle them).
    pub fn receive(&mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut descs = self.descs.clone();
        while Instant::now() < deadline {
            // SAFETY: descriptors filled by the RX ring are read only.
            let n = unsafe { self.rx.poll_and_consume(&mut descs, 10) }.expect("poll");
            for d in &descs[..n] {
                // SAFETY: the kernel wrote this frame and is done with it.
                frames.push(unsafe { self.umem.data(d) }.contents().to_vec());
            }
            if n == 0 && !frames.is_empty() {
                break;
            }
        }
        frames
    }
}
