//! Giving up the capabilities a daemon needed only to start.
//!
//! Both daemons start as root: the dataplane to load and attach XDP
//! programs and open AF_XDP sockets, the control process to bind its
//! sockets (a port below 1024 needs it) and read the root-only key file.
//! Once started they keep only what their steady state needs
//! (docs/security.md): the control process nothing, the dataplane's
//! API and housekeeping threads `CAP_NET_ADMIN` and `CAP_BPF`, its workers
//! nothing. They stay uid 0, so the root-owned files they use (their API
//! sockets, mode 0600) remain theirs as owner, with no capability.
//!
//! Linux keeps capabilities per thread: [`keep_only`] changes the calling
//! thread and the threads it starts afterwards, so a daemon calls it before
//! it starts any. It also sets `no_new_privs`, so that nothing the thread
//! executes can gain capabilities back.

use std::io;

/// The capabilities a daemon keeps once started, by their numbers in
/// `linux/capability.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Capability {
    NetAdmin = 12,
    Bpf = 39,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit halves.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's (effective, permitted) sets.
fn get() -> io::Result<(u64, u64)> {
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget with a version-3 header and room for its two halves.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let join = |low: u32, high: u32| u64::from(low) | u64::from(high) << 32;
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
    ))
}

/// The calling thread's effective capabilities, as a bit set.
pub fn effective() -> io::Result<u64> {
    get().map(|(effective, _)| effective)
}

/// The bit set of `caps`.
pub fn mask(caps: &[Capability]) -> u64 {
    caps.iter().fold(0, |m, &c| m | 1 << c as u32)
}

/// Keeps only `keep` of the calling thread's capabilities, those it has
/// (effective and permitted; the inheritable set is cleared), and sets
/// `no_new_privs`. Returns the effective set now held.
pub fn keep_only(keep: &[Capability]) -> io::Result<u64> {
    let (_, permitted) = get()?;
    let kept = mask(keep) & permitted;
    let half = |set: u64, i: usize| (set >> (32 * i)) as u32;
    let data = [0, 1].map(|i| Data {
        effective: half(kept, i),
        permitted: half(kept, i),
        inheritable: 0,
    });
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with a version-3 header and its two halves.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    effective()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a thread of its own: what it gives up stays given up there.
    #[test]
    fn a_thread_keeps_only_what_it_asks_for_and_its_children_inherit_that() {
        std::thread::spawn(|| {
            let (_, permitted) = get().unwrap();
            let keep = [Capability::NetAdmin, Capability::Bpf];
            let now = keep_only(&keep).unwrap();
            assert_eq!(now, mask(&keep) & permitted);
            assert_eq!(get().unwrap().1, now, "permitted went with effective");
            let child = std::thread::spawn(effective).join().unwrap().unwrap();
            assert_eq!(child, now, "a thread started afterwards inherits it");
            assert_eq!(keep_only(&[]).unwrap(), 0);
            // Gone for good: asking for one back does not get it.
            assert_eq!(keep_only(&keep).unwrap(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn masks_are_bits_by_number() {
        assert_eq!(mask(&[]), 0);
        assert_eq!(
            mask(&[Capability::NetAdmin, Capability::Bpf]),
            1 << 12 | 1 << 39
        );
    }
}
