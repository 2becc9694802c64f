//! One rtnetlink exchange at a time: a request and its answer, or a dump and
//! all of its parts.
//!
//! Every call opens its own socket, so that no answer of an earlier call (or
//! of another thread) can be read as this one's; the callers ([`crate::neigh`],
//! [`crate::xdp::iface`]) run on control paths where a socket per call costs
//! nothing that matters.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How often a dump that the kernel marks inconsistent (`NLM_F_DUMP_INTR`:
/// the table changed while it was being read) is started again.
const DUMP_ATTEMPTS: usize = 3;

/// The only request number used: each exchange has a socket of its own.
const SEQUENCE: u32 = 1;

/// Sends one request (`NLM_F_REQUEST` is added to `flags`) and returns the
/// message answering it, or `None` for a bare acknowledgement (`NLM_F_ACK`).
/// An `NLMSG_ERROR` answer becomes an [`io::Error`] with its errno.
pub(crate) fn request(
    message: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<Option<RouteNetlinkMessage>> {
    let (mut messages, _) = exchange(message, NLM_F_REQUEST | flags)?;
    Ok(if messages.is_empty() {
        None
    } else {
        Some(messages.swap_remove(0))
    })
}

/// Sends a dump request (`NLM_F_DUMP`) and returns every message of the
/// answer, in the kernel's order. A dump the kernel reports as interrupted by
/// a change is read again, a few times, before giving up with
/// [`io::ErrorKind::Interrupted`].
pub(crate) fn dump(message: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
    for _ in 0..DUMP_ATTEMPTS {
        let (messages, interrupted) = exchange(message.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
        if !interrupted {
            return Ok(messages);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::Interrupted,
        format!(
            "rtnetlink dump kept changing while it was read ({DUMP_ATTEMPTS} attempts, \
             NLM_F_DUMP_INTR)"
        ),
    ))
}

/// Sends `message` and reads until its answer is complete: the end of a dump
/// (`NLMSG_DONE`), an acknowledgement or error (`NLMSG_ERROR`), or, when
/// neither a dump nor an acknowledgement was asked for, the first message that
/// is not part of a multipart answer. Returns the answer's messages and
/// whether any carried `NLM_F_DUMP_INTR`.
fn exchange(
    message: RouteNetlinkMessage,
    flags: u16,
) -> io::Result<(Vec<RouteNetlinkMessage>, bool)> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = SEQUENCE;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let wants_ack = flags & NLM_F_ACK != 0;
    let mut answer = Vec::new();
    let mut interrupted = false;
    loop {
        let (datagram, _) = socket.recv_from_full()?;
        if datagram.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "rtnetlink closed the answer before it was complete",
            ));
        }
        for reply in messages(&datagram) {
            let reply = reply?;
            if reply.header.sequence_number != SEQUENCE {
                // Not an answer to this request (the socket has no groups,
                // so nothing else is expected; ignore it all the same).
                continue;
            }
            interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
            let multipart = reply.header.flags & NLM_F_MULTIPART != 0;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => {
                    answer.push(m);
                    if !multipart && !is_dump && !wants_ack {
                        return Ok((answer, interrupted));
                    }
                }
                NetlinkPayload::Done(done) => {
                    // A dump that failed part way ends with its errno here.
                    if done.code < 0 {
                        return Err(io::Error::from_raw_os_error(-done.code));
                    }
                    return Ok((answer, interrupted));
                }
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok((answer, interrupted)),
                        Some(code) => Err(io::Error::from_raw_os_error(code.get().abs())),
                    };
                }
                NetlinkPayload::Noop => {}
                NetlinkPayload::Overrun(_) => {
                    return Err(io::Error::other(
                        "rtnetlink reported an overrun; its answer was lost",
                    ));
                }
                // `NetlinkPayload` is non-exhaustive: skip what is new.
                _ => {}
            }
        }
    }
}

/// The messages of one datagram, in order; the first unreadable one ends
/// it with an error.
fn messages(
    datagram: &[u8],
) -> impl Iterator<Item = io::Result<NetlinkMessage<RouteNetlinkMessage>>> + '_ {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let parsed = NetlinkBuffer::new_checked(rest)
            .map_err(|e| unreadable(&e))
            .and_then(|b| {
                let length = b.length() as usize;
                // Messages are aligned to four bytes; the last may end
                // unpadded.
                let this = &rest[..length];
                rest = &rest[length.next_multiple_of(4).min(rest.len())..];
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(this).map_err(|e| unreadable(&e))
            });
        if parsed.is_err() {
            rest = &[];
        }
        Some(parsed)
    })
}

/// A socket subscribed to rtnetlink's multicast groups: the kernel's
/// announcements of changes, as they happen. Non-blocking.
pub(crate) struct Subscription {
    socket: Socket,
}

impl Subscription {
    /// Subscribes to `groups`, the `RTMGRP_*` bits.
    pub(crate) fn open(groups: u32) -> io::Result<Subscription> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        socket.set_non_blocking(true)?;
        Ok(Subscription { socket })
    }

    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// Hands every announcement waiting to `seen`, until none is left.
    /// `Ok(false)`: the kernel dropped some (`ENOBUFS`: the socket's buffer
    /// overflowed), so what was missed must be read afresh.
    pub(crate) fn drain(&mut self, mut seen: impl FnMut(RouteNetlinkMessage)) -> io::Result<bool> {
        let mut complete = true;
        loop {
            match self.socket.recv_from_full() {
                Ok((datagram, _)) => {
                    for message in messages(&datagram) {
                        // One unreadable announcement is no reason to stop
                        // reading the others: treat it as missed.
                        match message.map(|m| m.payload) {
                            Ok(NetlinkPayload::InnerMessage(m)) => seen(m),
                            Ok(_) => {}
                            Err(_) => complete = false,
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(complete),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => complete = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn unreadable(e: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unreadable rtnetlink answer: {e}"),
    )
}
