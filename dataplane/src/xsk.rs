//! AF_XDP sockets: a UMEM per queue, shared by the WAN and LAN sockets of
//! that queue, and the four rings of each socket, used in batches.
//!
//! Built on libxdp (through libxdp-sys, the library xsk-rs wraps) rather
//! than on xsk-rs's ring types: a transmit descriptor must be able to start
//! anywhere in its frame, so that an encapsulation grows into the headroom
//! and a decapsulation starts where the inner packet does. xsk-rs 0.11 keeps
//! a descriptor's address private and fixed at the start of the received
//! data. Here descriptors are libxdp's own `xdp_desc`, and the UMEM is one
//! byte region the worker indexes by address.
//!
//! libxdp's XDP program is never loaded (`INHIBIT_PROG_LOAD`): the sockets
//! are put into detour's own XSKMAPs by the caller.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};

use libxdp_sys::{
    XDP_COPY, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY, XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD, xdp_desc,
    xsk_ring_cons, xsk_ring_prod, xsk_socket, xsk_socket_config, xsk_socket_config__bindgen_ty_1,
    xsk_umem, xsk_umem_config,
};

pub use libxdp_sys::xdp_desc as Desc;

/// How long a bind waits for a queue that a socket closed a moment ago
/// still holds; a queue that another live socket holds stays busy, and the
/// bind fails with EBUSY after this.
const BIND_BUSY_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// How a socket moves frames between the NIC and the UMEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies each frame.
    Copy,
}

/// The frames of one queue: an anonymous mapping registered with the
/// kernel, cut into `frame_count` frames of `frame_size` bytes.
pub struct Umem {
    area: NonNull<u8>,
    len: usize,
    umem: NonNull<xsk_umem>,
    frame_size: u32,
    frame_count: u32,
    ring_size: u32,
    /// The fill and completion rings created with the UMEM; libxdp hands
    /// them to the first socket bound on it.
    first_rings: Option<(Box<xsk_ring_prod>, Box<xsk_ring_cons>)>,
}

// SAFETY: the UMEM is a memory region and a kernel object; nothing in it is
// tied to the creating thread. It moves to its worker's thread once.
unsafe impl Send for Umem {}

impl Umem {
    /// Maps and registers `frame_count` frames of `frame_size` bytes, with
    /// fill and completion rings of `ring_size` entries.
    pub fn new(frame_size: u32, frame_count: u32, ring_size: u32) -> io::Result<Umem> {
        let len = frame_size as usize * frame_count as usize;
        // SAFETY: an anonymous private mapping; checked for failure below.
        let area = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if area == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // Transparent huge pages, asked for before the memory is touched:
        // with 4 KiB pages every frame is a page of its own and a TLB entry
        // of its own. On a VM, where a page walk is nested, the worker's
        // user time per packet fell by 17 to 50 % (docs/benchmarks.md);
        // the first read of each frame stays the hot spot, a cache miss.
        // Both calls are best effort: without THP the mapping works as
        // before, faulted in below or on first use.
        // SAFETY: advice on the mapping just made, which nothing uses yet.
        unsafe {
            libc::madvise(area, len, libc::MADV_HUGEPAGE);
            libc::madvise(area, len, libc::MADV_POPULATE_WRITE);
        }
        let area = NonNull::new(area.cast::<u8>()).expect("mmap succeeded");
        let mut fill = Box::new(zeroed_prod());
        let mut comp = Box::new(zeroed_cons());
        let config = xsk_umem_config {
            fill_size: ring_size,
            comp_size: ring_size,
            frame_size,
            frame_headroom: 0,
            flags: 0,
        };
        let mut umem = ptr::null_mut();
        // SAFETY: `area` is `len` writable bytes that outlive the UMEM (we
        // unmap them only after deleting it); the ring structs are boxed, so
        // the addresses libxdp keeps stay valid.
        let err = unsafe {
            libxdp_sys::xsk_umem__create(
                &mut umem,
                area.as_ptr().cast(),
                len as u64,
                &mut *fill,
                &mut *comp,
                &config,
            )
        };
        if err != 0 {
            // SAFETY: mapped above, not registered.
            unsafe { libc::munmap(area.as_ptr().cast(), len) };
            return Err(io::Error::from_raw_os_error(-err));
        }
        Ok(Umem {
            area,
            len,
            umem: NonNull::new(umem).expect("created"),
            frame_size,
            frame_count,
            ring_size,
            first_rings: Some((fill, comp)),
        })
    }

    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    /// The address of every frame's start, to hand out to fill rings.
    pub fn frame_addrs(&self) -> impl Iterator<Item = u64> + use<> {
        let size = u64::from(self.frame_size);
        (0..u64::from(self.frame_count)).map(move |i| i * size)
    }

    /// The whole frame that contains UMEM address `addr`, and the offset of
    /// `addr` within it.
    #[inline]
    pub fn frame_mut(&mut self, addr: u64) -> (&mut [u8], usize) {
        let size = self.frame_size as usize;
        let addr = (addr as usize).min(self.len - 1);
        let start = addr - addr % size;
        // SAFETY: `start..start + size` lies in the mapping (`addr` clamped
        // into it; frames tile it exactly), and `&mut self` keeps the
        // slice unique on this side. The kernel writes a frame only while it
        // owns it (between fill and RX), never while the worker holds it.
        let frame = unsafe { std::slice::from_raw_parts_mut(self.area.as_ptr().add(start), size) };
        (frame, addr - start)
    }

    /// Opens an AF_XDP socket on `queue` of `iface` over this UMEM.
    ///
    /// `zero_copy`: `Some(true)` requires zero-copy, `Some(false)` asks for
    /// copy mode, `None` tries zero-copy and falls back to copy mode.
    pub fn socket(
        &mut self,
        iface: &str,
        queue: u32,
        zero_copy: Option<bool>,
    ) -> io::Result<Socket> {
        match zero_copy {
            Some(true) => self.bind(iface, queue, BindMode::ZeroCopy),
            Some(false) => self.bind(iface, queue, BindMode::Copy),
            None => self
                .bind(iface, queue, BindMode::ZeroCopy)
                .or_else(|_| self.bind(iface, queue, BindMode::Copy)),
        }
    }

    /// Binds, waiting up to [`BIND_BUSY_FOR`] while the queue is busy: the
    /// kernel releases a closed socket's hold on its queue in deferred work,
    /// so a socket bound right after another on the same queue was closed
    /// (a restarted worker, the next benchmark path) briefly finds it taken.
    fn bind(&mut self, iface: &str, queue: u32, mode: BindMode) -> io::Result<Socket> {
        let deadline = std::time::Instant::now() + BIND_BUSY_FOR;
        loop {
            match self.bind_once(iface, queue, mode) {
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                bound => return bound,
            }
        }
    }

    fn bind_once(&mut self, iface: &str, queue: u32, mode: BindMode) -> io::Result<Socket> {
        let name = CString::new(iface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let copy = match mode {
            BindMode::ZeroCopy => XDP_ZEROCOPY,
            BindMode::Copy => XDP_COPY,
        };
        let config = xsk_socket_config {
            rx_size: self.ring_size,
            tx_size: self.ring_size,
            __bindgen_anon_1: xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: (copy | XDP_USE_NEED_WAKEUP) as u16,
        };
        // The first socket takes the UMEM's own fill and completion rings;
        // a later one (another interface) gets rings of its own.
        let first = self.first_rings.take();
        let took_first = first.is_some();
        let (mut fill, mut comp) =
            first.unwrap_or_else(|| (Box::new(zeroed_prod()), Box::new(zeroed_cons())));
        let mut rx = Box::new(zeroed_cons());
        let mut tx = Box::new(zeroed_prod());
        let mut xsk = ptr::null_mut();
        // SAFETY: every ring struct is boxed and moves into the returned
        // socket, so the pointers libxdp keeps stay valid until
        // `xsk_socket__delete`; `name` outlives the call.
        let err = unsafe {
            libxdp_sys::xsk_socket__create_shared(
                &mut xsk,
                name.as_ptr(),
                queue,
                self.umem.as_ptr(),
                &mut *rx,
                &mut *tx,
                &mut *fill,
                &mut *comp,
                &config,
            )
        };
        if err != 0 {
            // A failed bind leaves the UMEM's rings to it (libxdp keeps them
            // for the next attempt, in copy mode after zero-copy say).
            if took_first {
                self.first_rings = Some((fill, comp));
            }
            return Err(io::Error::from_raw_os_error(-err));
        }
        let xsk = NonNull::new(xsk).expect("created");
        // SAFETY: a live socket.
        let fd = unsafe { libxdp_sys::xsk_socket__fd(xsk.as_ptr()) };
        Ok(Socket {
            xsk,
            fd,
            mode,
            rx,
            tx,
            fill,
            comp,
        })
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: every socket borrowed the UMEM mutably only to be created
        // and is dropped before it (a worker owns both, sockets declared
        // after the UMEM); then the region is unmapped.
        unsafe {
            libxdp_sys::xsk_umem__delete(self.umem.as_ptr());
            libc::munmap(self.area.as_ptr().cast(), self.len);
        }
    }
}

/// One AF_XDP socket and its rings: RX and TX, and the fill and
/// completion rings of its (interface, queue).
pub struct Socket {
    xsk: NonNull<xsk_socket>,
    fd: RawFd,
    mode: BindMode,
    rx: Box<xsk_ring_cons>,
    tx: Box<xsk_ring_prod>,
    fill: Box<xsk_ring_prod>,
    comp: Box<xsk_ring_cons>,
}

// SAFETY: as for `Umem`: kernel objects and mapped rings, used by one
// thread at a time.
unsafe impl Send for Socket {}

impl Socket {
    /// The socket's descriptor, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn mode(&self) -> BindMode {
        self.mode
    }

    /// Offers frame addresses to the kernel for receiving, as many as the
    /// fill ring has room for (libxdp's reserve is all-or-nothing, so the
    /// offer is capped at the free count); returns how many were taken.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        // SAFETY: the fill ring's slots are UMEM addresses.
        unsafe { produce(&mut self.fill, addrs) as usize }
    }

    /// Moves frames from the end of `free` into the fill ring, as many as
    /// it has room for; returns how many.
    #[inline]
    pub fn refill(&mut self, free: &mut Vec<u64>) -> usize {
        // SAFETY: reads our ring's indices.
        let room = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.fill, free.len() as u32) };
        let offer = free.len() - (room as usize).min(free.len());
        let n = self.fill(&free[offer..]);
        free.truncate(free.len() - n);
        n
    }

    /// Whether the kernel asks to be woken to take fill-ring frames (a
    /// zero-copy driver that ran dry); [`Socket::poll`] wakes it.
    #[inline]
    pub fn fill_needs_wakeup(&self) -> bool {
        // SAFETY: reads the ring's flags word.
        unsafe { libxdp_sys::xsk_ring_prod__needs_wakeup(&*self.fill) != 0 }
    }

    /// Free slots in the TX ring: what may be transmitted without refusal.
    #[inline]
    pub fn transmit_room(&mut self) -> u32 {
        let size = self.tx.size;
        // SAFETY: refreshes the cached consumer index of our ring.
        unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.tx, size) }
    }

    /// Takes received descriptors, up to `out.len()`; returns how many.
    pub fn receive(&mut self, out: &mut [Desc]) -> usize {
        // SAFETY: the RX ring's slots are descriptors.
        unsafe { consume(&mut self.rx, out) as usize }
    }

    /// Queues descriptors for transmission, as many as fit; wakes the
    /// kernel only if something was queued and it asks to be woken.
    /// Returns how many were queued.
    pub fn transmit(&mut self, descs: &[Desc]) -> usize {
        // SAFETY: the TX ring's slots are descriptors.
        let n = unsafe { produce(&mut self.tx, descs) };
        if n > 0 {
            self.kick();
        }
        n as usize
    }

    /// Descriptors in the TX ring that the kernel has not taken yet.
    pub fn pending_transmit(&mut self) -> u32 {
        self.tx.size - self.transmit_room()
    }

    /// Wakes the kernel to transmit what the TX ring holds, if it holds
    /// anything and the kernel asks to be woken. In copy mode one wake-up
    /// sends at most 32 frames (docs/design.md), so a worker calls this on
    /// every turn of its loop; an empty ring costs no system call.
    pub fn kick(&mut self) {
        // SAFETY: reads the ring's flags word.
        let asks = unsafe { libxdp_sys::xsk_ring_prod__needs_wakeup(&*self.tx) != 0 };
        if asks && self.pending_transmit() > 0 {
            // SAFETY: a zero-length send on our socket: the TX wake-up.
            // EAGAIN and EBUSY only mean "busy, call again", which the next
            // turn of the loop does.
            unsafe {
                libc::sendto(self.fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0);
            }
        }
    }

    /// Takes the addresses of transmitted frames, up to `out.len()`.
    pub fn complete(&mut self, out: &mut [u64]) -> usize {
        // SAFETY: the completion ring's slots are UMEM addresses.
        unsafe { consume(&mut self.comp, out) as usize }
    }

    /// Waits up to `timeout_ms` for received frames (and wakes the kernel's
    /// receive side); true if there are some.
    pub fn poll(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut pfd, 1, timeout_ms) } {
            n if n < 0 => Err(io::Error::last_os_error()),
            n => Ok(n > 0),
        }
    }
    /// What the kernel dropped on the way into this socket since it was
    /// opened (`XDP_STATISTICS`): frames the XDP program redirected here
    /// that the worker never saw.
    pub fn drops(&self) -> io::Result<SocketDrops> {
        let mut stats = libc::xdp_statistics {
            rx_dropped: 0,
            rx_invalid_descs: 0,
            tx_invalid_descs: 0,
            rx_ring_full: 0,
            rx_fill_ring_empty_descs: 0,
            tx_ring_empty_descs: 0,
        };
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `stats`.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SocketDrops {
            ring_full: stats.rx_ring_full,
            no_frame: stats.rx_dropped,
        })
    }
}

/// The kernel's drops on the way into one AF_XDP socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketDrops {
    /// The RX ring was full: the worker fell behind.
    pub ring_full: u64,
    /// No frame to copy into (the fill ring was empty), or the frame was
    /// larger than a UMEM frame.
    pub no_frame: u64,
}

impl std::ops::Add for SocketDrops {
    type Output = SocketDrops;

    fn add(self, other: SocketDrops) -> SocketDrops {
        SocketDrops {
            ring_full: self.ring_full + other.ring_full,
            no_frame: self.no_frame + other.no_frame,
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: created by xsk_socket__create_shared; deleted once. The
        // boxed rings it points at are dropped after this.
        unsafe { libxdp_sys::xsk_socket__delete(self.xsk.as_ptr()) };
    }
}

/// Waits up to `timeout_ms` until one of the sockets `fds` has received
/// frames (waking the kernel's receive side of each); true if one has.
pub fn wait_readable(fds: &[RawFd], timeout_ms: i32) -> io::Result<bool> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    let n = fds.len().min(pfds.len());
    for (p, fd) in pfds.iter_mut().zip(&fds[..n]) {
        p.fd = *fd;
    }
    // SAFETY: `n` valid pollfds.
    match unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, timeout_ms) } {
        r if r < 0 => Err(io::Error::last_os_error()),
        r => Ok(r > 0),
    }
}

/// Puts as many of `items` into the producer ring as it has room for, and
/// submits them; returns how many. libxdp's reserve is all-or-nothing, so
/// the request is capped at the free count first (docs/design.md: an
/// uncapped offer starved the fill ring). The slots are written here rather
/// than through libxdp's per-slot accessors: one function call per batch,
/// not per packet.
///
/// # Safety
///
/// `ring` is a set-up ring whose slots are of type `T` (`u64` for fill,
/// `xdp_desc` for TX).
unsafe fn produce<T: Copy>(ring: &mut xsk_ring_prod, items: &[T]) -> u32 {
    // A worker offers every turn, often nothing: no load of the kernel's
    // consumer index and no store to the producer's for that.
    if items.is_empty() {
        return 0;
    }
    let mut idx = 0;
    // SAFETY: per the contract; the `n` reserved slots are ours to write,
    // and `idx + i` masked stays inside the ring.
    unsafe {
        let free = libxdp_sys::xsk_prod_nb_free(ring, items.len() as u32);
        let n = libxdp_sys::xsk_ring_prod__reserve(ring, free.min(items.len() as u32), &mut idx);
        let slots = ring.ring.cast::<T>();
        for (i, item) in items[..n as usize].iter().enumerate() {
            *slots.add((idx.wrapping_add(i as u32) & ring.mask) as usize) = *item;
        }
        libxdp_sys::xsk_ring_prod__submit(ring, n);
        n
    }
}

/// Takes up to `out.len()` entries from the consumer ring; returns how
/// many. As [`produce`], one function call per batch.
///
/// # Safety
///
/// `ring` is a set-up ring whose slots are of type `T` (`xdp_desc` for RX,
/// `u64` for completion).
unsafe fn consume<T: Copy>(ring: &mut xsk_ring_cons, out: &mut [T]) -> u32 {
    let mut idx = 0;
    // SAFETY: per the contract; only the `n` peeked slots are read.
    unsafe {
        let n = libxdp_sys::xsk_ring_cons__peek(ring, out.len() as u32, &mut idx);
        let slots = ring.ring.cast::<T>();
        for (i, o) in out[..n as usize].iter_mut().enumerate() {
            *o = *slots.add((idx.wrapping_add(i as u32) & ring.mask) as usize);
        }
        libxdp_sys::xsk_ring_cons__release(ring, n);
        n
    }
}

fn zeroed_prod() -> xsk_ring_prod {
    // SAFETY: a plain C struct of integers and pointers; all-zero is the
    // "not set up" state libxdp expects to fill in.
    unsafe { std::mem::zeroed() }
}

fn zeroed_cons() -> xsk_ring_cons {
    // SAFETY: as above.
    unsafe { std::mem::zeroed() }
}

/// An empty descriptor, for receive buffers.
pub const EMPTY: Desc = xdp_desc {
    addr: 0,
    len: 0,
    options: 0,
};

/// A receive-only socket with a small UMEM of its own, handing out copies of
/// what arrives: for tests, benchmarks and diagnostics, not the forwarding
/// path.
pub struct Receiver {
    // Dropped in this order: the socket before its UMEM.
    socket: Socket,
    umem: Umem,
}

impl Receiver {
    /// Frames in the UMEM: enough for a test's burst, never recycled.
    const FRAMES: u32 = 64;

    /// A copy-mode socket on `queue` of `iface`, in the calling thread's
    /// namespace, with every frame offered for receiving.
    pub fn bind(iface: &str, queue: u32) -> io::Result<Receiver> {
        let mut umem = Umem::new(4096, Self::FRAMES, Self::FRAMES)?;
        let mut socket = umem.socket(iface, queue, Some(false))?;
        let addrs: Vec<u64> = umem.frame_addrs().collect();
        socket.fill(&addrs);
        Ok(Receiver { socket, umem })
    }

    /// The socket's descriptor, for an XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.socket.fd()
    }

    /// Copies of the frames received within `timeout`, returning early once
    /// some came and the ring is quiet; at most 64 over the receiver's life.
    pub fn receive(&mut self, timeout: std::time::Duration) -> Vec<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut descs = [EMPTY; Self::FRAMES as usize];
        while std::time::Instant::now() < deadline {
            // A failed poll only ends the wait early; the ring is read anyway.
            let _ = self.socket.poll(10);
            let n = self.socket.receive(&mut descs);
            for d in &descs[..n] {
                let (frame, at) = self.umem.frame_mut(d.addr);
                frames.push(frame[at..at + d.len as usize].to_vec());
            }
            if n == 0 && !frames.is_empty() {
                break;
            }
        }
        frames
    }
}
