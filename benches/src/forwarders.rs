//! The two userspace baselines, each a thread in the gateway's namespace
//! pinned to a worker core: what a socket-based overlay does (recvmmsg and
//! sendmmsg, 64 datagrams a call), and the least an AF_XDP forwarder can do
//! (swap the MAC addresses and send the frame back out: this machine's
//! AF_XDP ceiling, against which detour's own work is measured).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use detour_dataplane::xsk::{Desc, Umem};
use detour_testkit::Netns;

use crate::bed::RELAY_PORT;
use crate::measure::pin;
use crate::xdp::BenchXdp;

const BATCH: usize = 64;

/// A forwarding thread and what stops it; stopped and joined on drop.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// The threads' kernel ids, for their CPU time.
    pub tids: Vec<i32>,
    /// The XDP program that feeds the AF_XDP forwarder's sockets.
    _program: Option<BenchXdp>,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn gettid() -> i32 {
    // SAFETY: no arguments, no failure.
    unsafe { libc::gettid() }
}

/// Datagrams to 192.0.2.2:[`RELAY_PORT`] go on to 192.0.2.99, same port.
pub fn udp_relay(gw: &Netns, core: usize) -> Result<Forwarder> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready, started) = mpsc::channel();
    let thread = {
        let stop = Arc::clone(&stop);
        gw.spawn(move || {
            let socket = pin(core).and_then(|()| {
                let s =
                    UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 2), RELAY_PORT))?;
                // Wakes up to look at `stop` when nothing comes.
                s.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(s)
            });
            match socket {
                Ok(s) => {
                    let _ = ready.send(Ok(gettid()));
                    relay_loop(&s, &stop);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })?
    };
    let tid = started.recv().context("the UDP relay thread died")??;
    Ok(Forwarder {
        stop,
        threads: vec![thread],
        tids: vec![tid],
        _program: None,
    })
}

fn relay_loop(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buffers = vec![[0u8; 2048]; BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: RELAY_PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::new(192, 0, 2, 99)).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: all-zero is a valid mmsghdr.
    let mut messages: Vec<libc::mmsghdr> =
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let fd = socket.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        for (m, iov) in messages.iter_mut().zip(iovecs.iter_mut()) {
            iov.iov_len = 2048;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = std::ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
        }
        // SAFETY: every message points at a live buffer of its length.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                messages.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        for (m, iov) in messages.iter_mut().zip(iovecs.iter_mut()).take(n) {
            iov.iov_len = m.msg_len as usize;
            m.msg_hdr.msg_name = (&to as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        }
        let mut sent = 0;
        while sent < n && !stop.load(Ordering::Relaxed) {
            // SAFETY: as above; the destination outlives the call.
            let k =
                unsafe { libc::sendmmsg(fd, messages[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if k <= 0 {
                break;
            }
            sent += k as usize;
        }
    }
}

/// One socket per queue of the gateway's WAN link, each frame sent back out
/// with its MAC addresses swapped, one thread per queue on `cores`.
pub fn af_xdp_swap(gw: &Netns, queues: u32, cores: &[usize]) -> Result<Forwarder> {
    let mut program = gw.enter(|| BenchXdp::to_xsk("wan"))??;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut tids = Vec::new();
    for queue in 0..queues {
        let core = cores[queue as usize % cores.len()];
        let (ready, started) = mpsc::channel();
        let stop = Arc::clone(&stop);
        threads.push(gw.spawn(move || {
            let socket = pin(core).and_then(|()| {
                let mut umem = Umem::new(2048, 4096, 2048)?;
                let socket = umem.socket("wan", queue, Some(false))?;
                Ok((umem, socket))
            });
            match socket {
                Ok((mut umem, mut socket)) => {
                    let _ = ready.send(Ok((gettid(), socket.fd())));
                    swap_loop(&mut umem, &mut socket, &stop);
                    // The socket first: a UMEM with a socket still bound
                    // refuses to go, and keeps the queue.
                    drop(socket);
                    drop(umem);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })?);
        let (tid, fd) = started
            .recv()
            .context("an AF_XDP forwarder thread died")??;
        // SAFETY: the socket lives until its thread ends, after `stop`.
        program.add_socket(queue, unsafe { BorrowedFd::borrow_raw(fd) })?;
        tids.push(tid);
    }
    Ok(Forwarder {
        stop,
        threads,
        tids,
        _program: Some(program),
    })
}

fn swap_loop(umem: &mut Umem, socket: &mut detour_dataplane::xsk::Socket, stop: &AtomicBool) {
    let mut free: Vec<u64> = umem.frame_addrs().collect();
    let mut received = [Desc {
        addr: 0,
        len: 0,
        options: 0,
    }; BATCH];
    let mut done = [0u64; BATCH];
    while !stop.load(Ordering::Relaxed) {
        let n = socket.complete(&mut done);
        free.extend_from_slice(&done[..n]);
        socket.refill(&mut free);
        let n = socket.receive(&mut received);
        if n == 0 {
            socket.kick();
            let _ = socket.poll(10);
            continue;
        }
        for d in &received[..n] {
            let (frame, offset) = umem.frame_mut(d.addr);
            let eth = &mut frame[offset..offset + 12];
            let (dst, src) = eth.split_at_mut(6);
            dst.swap_with_slice(src);
        }
        let queued = socket.transmit(&received[..n]);
        // What the TX ring had no room for is dropped, back to the free list.
        free.extend(received[queued..n].iter().map(|d| d.addr));
        socket.kick();
    }
}
