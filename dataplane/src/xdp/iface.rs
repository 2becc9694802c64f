//! What XDP program an interface carries, and taking a foreign one off.
//!
//! The kernel reports an interface's XDP program in the `IFLA_XDP` attribute
//! of its link message (rtnetlink); that covers programs attached through
//! netlink (`ip link set dev X xdp ...`, libxdp) and through bpf links alike.
//! A program attached through netlink is detached through netlink; one held
//! by a bpf link is detached with `BPF_LINK_DETACH` (as `bpftool link detach`
//! does), which the kernel allows to any holder of CAP_NET_ADMIN.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::NLM_F_ACK;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};

use crate::netlink::request;

/// The mode an XDP program runs in on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachedMode {
    /// In the driver (native XDP).
    Native,
    /// On the socket buffer, after the driver (generic XDP).
    Skb,
    /// Offloaded to the NIC.
    Hardware,
    /// More than one of the above at once.
    Multiple,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
            AttachedMode::Hardware => "hardware",
            AttachedMode::Multiple => "multiple",
        })
    }
}

/// An XDP program found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// The kernel's id of the program (`bpftool prog show id N`).
    pub id: u32,
    pub mode: AttachedMode,
}

/// The interface index of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// The XDP program attached to interface `ifindex`, if any.
pub fn attached_program(ifindex: u32) -> io::Result<Option<AttachedProgram>> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    let reply = request(RouteNetlinkMessage::GetLink(message), 0)?;
    let Some(RouteNetlinkMessage::NewLink(link)) = reply else {
        return Err(io::Error::other(
            "rtnetlink answered GetLink without a link",
        ));
    };
    let xdp = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Xdp(xdp) => Some(xdp),
        _ => None,
    });
    let Some(xdp) = xdp else { return Ok(None) };
    let mut mode = None;
    let mut id = None;
    for attr in xdp {
        match attr {
            LinkXdp::Attached(XdpAttached::None) => return Ok(None),
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some(AttachedMode::Native),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some(AttachedMode::Skb),
            LinkXdp::Attached(XdpAttached::Hardware) => mode = Some(AttachedMode::Hardware),
            LinkXdp::Attached(_) => mode = Some(AttachedMode::Multiple),
            LinkXdp::ProgId(p) => id = Some(*p),
            _ => {}
        }
    }
    Ok(mode.map(|mode| AttachedProgram {
        // With several modes attached, the kernel names no single program;
        // the per-mode ids then tell them apart (`ip -d link` shows them).
        id: id.unwrap_or(0),
        mode,
    }))
}

/// The name the program with kernel id `id` was loaded under, if it can be
/// read.
pub fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

/// Takes the XDP program `program` off interface `ifindex`, however it was
/// attached.
pub fn detach(ifindex: u32, program: &AttachedProgram) -> io::Result<()> {
    match detach_netlink(ifindex, program.mode) {
        Ok(()) => {}
        // The kernel refuses to detach a bpf link's program through netlink.
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => detach_link(program.id)?,
        Err(e) => return Err(e),
    }
    match attached_program(ifindex)? {
        None => Ok(()),
        Some(p) => Err(io::Error::other(format!(
            "XDP program id {} is still attached ({} mode)",
            p.id, p.mode
        ))),
    }
}

/// `ip link set dev X xdp off`, for the given mode.
fn detach_netlink(ifindex: u32, mode: AttachedMode) -> io::Result<()> {
    // include/uapi/linux/if_link.h
    const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
    const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
    const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
    let flags = match mode {
        AttachedMode::Native => XDP_FLAGS_DRV_MODE,
        AttachedMode::Skb => XDP_FLAGS_SKB_MODE,
        AttachedMode::Hardware => XDP_FLAGS_HW_MODE,
        AttachedMode::Multiple => 0,
    };
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    message.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::Flags(flags),
    ]));
    request(RouteNetlinkMessage::SetLink(message), NLM_F_ACK)?;
    Ok(())
}

/// Detaches the bpf link that holds program `program_id` on an interface.
fn detach_link(program_id: u32) -> io::Result<()> {
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| {
            l.program_id() == program_id
                && matches!(l.link_type(), Ok(aya::programs::links::LinkType::Xdp))
        })
        .ok_or_else(|| io::Error::other(format!("no bpf link holds program id {program_id}")))?;
    // include/uapi/linux/bpf.h
    const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
    const BPF_LINK_DETACH: libc::c_long = 34;
    // `bpf_attr` for both commands starts with one u32 (link id, then link
    // fd); the rest must be zero. Sixteen bytes cover what either reads.
    let mut attr = [link.id(), 0, 0, 0];
    let fd = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: BPF_LINK_GET_FD_BY_ID returned a new descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut attr = [fd.as_raw_fd() as u32, 0, 0, 0];
    bpf(BPF_LINK_DETACH, &mut attr)?;
    Ok(())
}

fn bpf(cmd: libc::c_long, attr: &mut [u32; 4]) -> io::Result<i32> {
    // SAFETY: `attr` is a valid, writable bpf_attr prefix of the size
    // passed; the kernel zero-extends what it reads beyond it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as i32)
    }
}
