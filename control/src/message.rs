//! Control messages: probes, probe replies, link-state rows (whole or as
//! deltas) and their acknowledgements and requests, and handshakes passed
//! on through a relay ([`crate::handshake_relay`]), as they are encoded
//! inside a session's sealed transport message ([`crate::session`]; the
//! layout is in docs/wire-format.md, "Control messages").
//!
//! ```text
//! type | body
//!   1     …
//! ```
//!
//! This module knows nothing of keys: who sent a message, whether it is
//! authentic and whether it was seen before is the session's to check,
//! before [`decode`] reads a byte of it. What is refused, here or there,
//! comes back as a [`Reject`] naming why, for [`RejectCounters`].
//!
//! Nothing here does I/O or reads a clock, and decoding never panics,
//! whatever the bytes.
//!
//! ## Sizes
//!
//! A probe and a probe reply are 9 bytes encoded, 41 as a datagram (the
//! session adds 16 bytes of header and a 16-byte tag): 83 bytes on the
//! wire over IPv4 and Ethernet, 103 over IPv6. A link-state row or delta of
//! `n` links is `14 + 9n` bytes encoded, at most [`MAX_LINKS`] = 1024
//! links: one datagram per row, which the IP layer fragments past about
//! 150 links (docs/wire-format.md has the arithmetic and the probe budget).
//! A row acknowledgement is 9 bytes, a row request 1, a forwarded
//! handshake 3 more than the handshake message it carries.

use std::sync::Arc;
use std::time::Duration;

use detour_common::wire::NodeId;

use crate::link::LinkEstimate;

/// The most links one link-state row may carry.
pub const MAX_LINKS: usize = 1024;
/// A link-state body before its links: origin, version, link count, flags.
pub const LINK_STATE_FIXED_LEN: usize = 13;
/// Where a link-state body holds its link count.
const LINK_COUNT_AT: usize = 10;
/// Link-state flag: the origin relays for no one (an operator drained it).
const ROW_DRAINED: u8 = 0x01;
/// One link in a link-state row: node, up, RTT, loss.
pub const LINK_LEN: usize = 9;
/// A probe or probe reply, encoded: type and 8-byte probe number.
pub const PROBE_LEN: usize = 1 + 8;
/// The largest encoded message: a link-state row of [`MAX_LINKS`] links.
pub const MAX_ENCODED_LEN: usize = 1 + LINK_STATE_FIXED_LEN + MAX_LINKS * LINK_LEN;

/// Message type codes (the first byte).
const PROBE: u8 = 1;
const PROBE_REPLY: u8 = 2;
const LINK_STATE: u8 = 3;
const LINK_STATE_DELTA: u8 = 4;
const ROW_ACK: u8 = 5;
const ROW_REQUEST: u8 = 6;
const FORWARD: u8 = 7;
const FORWARDED: u8 = 8;
const KEEPALIVE: u8 = 9;

/// The longest datagram a [`Message::Forward`] or [`Message::Forwarded`]
/// carries: room for any handshake message (the longest, an initiation, is
/// 145 bytes).
pub const MAX_FORWARDED_LEN: usize = 256;

/// A control message's body.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A probe, numbered by the prober ([`crate::probe::Prober`]).
    Probe { seq: u64 },
    /// The answer to probe `seq`.
    ProbeReply { seq: u64 },
    /// A node's measured row of the link table, whole or as a delta;
    /// shared, because one row goes to every peer.
    LinkState(Arc<LinkState>),
    /// The receiver of a row (or delta) now holds the sender's row at
    /// `version`: the sender need not send it again.
    RowAck { version: u64 },
    /// The sender lacks the receiver's row (it has just started, or a
    /// delta came that it cannot apply): send it whole.
    RowRequest,
    /// For the receiver, a relay: pass `datagram`, a handshake message of
    /// the session layer, on to node `to`, to which the sender's direct
    /// path is down.
    Forward { to: NodeId, datagram: Vec<u8> },
    /// `datagram`, a handshake message of node `from`, which the sender (a
    /// relay) passes on because `from`'s direct path to the receiver is
    /// down.
    Forwarded { from: NodeId, datagram: Vec<u8> },
    /// Nothing but the session it comes in: the first message of a session
    /// the sender initiated, which confirms it to the receiver when
    /// nothing else would (it goes through a relay while the direct path
    /// is down).
    Keepalive,
}

impl Message {
    /// The message's size encoded (before the session seals it).
    pub fn wire_len(&self) -> usize {
        match self {
            Message::Probe { .. } | Message::ProbeReply { .. } | Message::RowAck { .. } => {
                PROBE_LEN
            }
            Message::LinkState(row) => 1 + LINK_STATE_FIXED_LEN + row.links.len() * LINK_LEN,
            Message::RowRequest | Message::Keepalive => 1,
            Message::Forward { datagram, .. } | Message::Forwarded { datagram, .. } => {
                1 + 2 + datagram.len()
            }
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Message::Probe { .. } => PROBE,
            Message::ProbeReply { .. } => PROBE_REPLY,
            Message::LinkState(row) => match row.kind {
                RowKind::Full => LINK_STATE,
                RowKind::Delta => LINK_STATE_DELTA,
            },
            Message::RowAck { .. } => ROW_ACK,
            Message::RowRequest => ROW_REQUEST,
            Message::Forward { .. } => FORWARD,
            Message::Forwarded { .. } => FORWARDED,
            Message::Keepalive => KEEPALIVE,
        }
    }
}

/// Whether a [`LinkState`] is the origin's whole row or only what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Every link of the row; a link it does not name is unknown.
    Full,
    /// The links that changed since the row's previous version
    /// (`version - 1`): it applies only on top of that version.
    Delta,
}

/// One node's measured links, as it floods them.
///
/// On the wire the RTT is whole microseconds (saturating at `u32::MAX`,
/// about 71 minutes) and the loss a fraction of 65535; [`quantise`] says
/// what a receiver reads for an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    /// The node whose links these are.
    pub origin: NodeId,
    /// The origin's number for this row, one more for each newer row;
    /// from a base that grows across restarts, like the header's sequence
    /// number, so that a restarted origin's rows are not taken for stale
    /// ones.
    pub version: u64,
    pub kind: RowKind,
    /// The origin asks not to be used as a relay (it was drained); carried
    /// in every version, whole or delta.
    pub drained: bool,
    /// The links from `origin` (all of them, or those that changed), by
    /// ascending node id, at most [`MAX_LINKS`].
    pub links: Vec<(NodeId, LinkEstimate)>,
}

/// The estimate a receiver reads back for `estimate`: the RTT truncated to
/// whole microseconds (at most `u32::MAX` µs), the loss rounded to a
/// multiple of 1/65535 within 0 to 1 (an undefined loss reads as 1).
pub fn quantise(estimate: LinkEstimate) -> LinkEstimate {
    let (up, rtt, loss) = link_fields(&estimate);
    LinkEstimate {
        up: up == 1,
        rtt: rtt_from_wire(rtt),
        loss: loss_from_wire(loss),
    }
}

/// The wire's fields for `estimate`: the up byte, the RTT in whole
/// microseconds, the loss in 65535ths.
pub(crate) fn link_fields(estimate: &LinkEstimate) -> (u8, u32, u16) {
    let rtt = u32::try_from(estimate.rtt.as_micros()).unwrap_or(u32::MAX);
    let loss = if estimate.loss.is_nan() {
        u16::MAX
    } else {
        // In 0..=65535 after the clamp, so the cast is exact.
        (estimate.loss.clamp(0.0, 1.0) * f64::from(u16::MAX)).round() as u16
    };
    (u8::from(estimate.up), rtt, loss)
}

pub(crate) fn rtt_from_wire(micros: u32) -> Duration {
    Duration::from_micros(u64::from(micros))
}

pub(crate) fn loss_from_wire(loss: u16) -> f64 {
    f64::from(loss) / f64::from(u16::MAX)
}

/// Why a datagram on the control port was dropped. Each has a counter
/// ([`RejectCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// Not a control datagram of a known layout: too short, bad magic, an
    /// unknown type, a length that does not add up (truncated, or trailing
    /// bytes); or, inside an authentic message, a reserved node id, links
    /// out of order, a bad field value.
    #[error("malformed control message")]
    Malformed,
    /// A control datagram of a format version this node does not speak
    /// (version 1 was the shared overlay key's).
    #[error("control message of an unknown format version")]
    UnknownVersion,
    /// Not authentic: a handshake's `mac1` or Noise bytes, or a transport
    /// message's tag, do not check out (forged, corrupted, or for another
    /// node's key).
    #[error("control message that is not authentic (forged, corrupted, or for another key)")]
    BadMac,
    /// Authentic, but seen already or too old for the session's window; or
    /// an initiation whose ephemeral key was seen already.
    #[error("replayed control message")]
    Replayed,
    /// An authentic link-state row no newer than the one held (counted by
    /// the link-state database).
    #[error("stale link-state row")]
    Stale,
    /// Authentic, but its sender is not a member of this node's overlay.
    #[error("control message from a node not in the overlay")]
    UnknownNode,
    /// From an address that is no configured peer's underlay address:
    /// dropped before anything about it is computed (the dataplane's WAN
    /// program drops most of these before they reach the socket).
    #[error("control message from an address that is no peer's")]
    Stranger,
    /// A handshake under a public key that no configured peer has:
    /// dropped unanswered.
    #[error("handshake from a key that is no peer's")]
    UnknownKey,
    /// For a session (or handshake) this node does not have: from before
    /// a restart, expired, or made up.
    #[error("control message for an unknown session")]
    UnknownSession,
    /// A link-state row that its sender sent for another origin: rows
    /// travel only from their origin, over its own session.
    #[error("link-state row sent by another node than its origin")]
    ForgedOrigin,
    /// A handshake from a peer that encrypts overlay data where this node
    /// does not, or the other way round (`encryption` differs): refused,
    /// so that neither end sends what the other drops.
    #[error("handshake from a peer whose `encryption` setting differs from ours")]
    EncryptionMismatch,
}

impl Reject {
    pub const ALL: [Reject; 11] = [
        Reject::Malformed,
        Reject::UnknownVersion,
        Reject::BadMac,
        Reject::Replayed,
        Reject::Stale,
        Reject::UnknownNode,
        Reject::Stranger,
        Reject::UnknownKey,
        Reject::UnknownSession,
        Reject::ForgedOrigin,
        Reject::EncryptionMismatch,
    ];

    /// The reason's name as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnknownVersion => "unknown_version",
            Reject::BadMac => "bad_mac",
            Reject::Replayed => "replayed",
            Reject::Stale => "stale",
            Reject::UnknownNode => "unknown_node",
            Reject::Stranger => "stranger",
            Reject::UnknownKey => "unknown_key",
            Reject::UnknownSession => "unknown_session",
            Reject::ForgedOrigin => "forged_origin",
            Reject::EncryptionMismatch => "encryption_mismatch",
        }
    }
}

/// Messages dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounters {
    counts: [u64; Reject::ALL.len()],
}

impl RejectCounters {
    pub fn record(&mut self, reject: Reject) {
        let count = &mut self.counts[reject as usize];
        *count = count.saturating_add(1);
    }

    pub fn get(&self, reject: Reject) -> u64 {
        self.counts[reject as usize]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Every reason's name and count, in [`Reject::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Reject::ALL.iter().map(|r| (r.name(), self.get(*r)))
    }
}

/// Why a message cannot be encoded: [`encode`] writes only what [`decode`]
/// accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("node id {0} is reserved: 0 and 65535 name no node")]
    ReservedNodeId(NodeId),
    #[error("a link-state row of {0} links is over the limit of {MAX_LINKS}")]
    TooManyLinks(usize),
    #[error("link-state links must be in ascending node order, without repeats: {0} is not")]
    LinksOutOfOrder(NodeId),
    #[error("a forwarded datagram of {0} bytes: it must have 1 to {MAX_FORWARDED_LEN}")]
    ForwardedLength(usize),
}

/// Appends `message` encoded to `out`. On error `out` is left as it was.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Message::Forward { to: node, datagram }
    | Message::Forwarded {
        from: node,
        datagram,
    } = message
    {
        check_id(*node)?;
        if !(1..=MAX_FORWARDED_LEN).contains(&datagram.len()) {
            return Err(EncodeError::ForwardedLength(datagram.len()));
        }
    }
    if let Message::LinkState(row) = message {
        check_id(row.origin)?;
        if row.links.len() > MAX_LINKS {
            return Err(EncodeError::TooManyLinks(row.links.len()));
        }
        let mut previous = None;
        for &(node, _) in &row.links {
            check_id(node)?;
            if previous.is_some_and(|p: NodeId| p.0 >= node.0) {
                return Err(EncodeError::LinksOutOfOrder(node));
            }
            previous = Some(node);
        }
    }

    out.reserve(message.wire_len());
    out.push(message.kind());
    match message {
        Message::Probe { seq } | Message::ProbeReply { seq } => {
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Message::RowAck { version } => out.extend_from_slice(&version.to_be_bytes()),
        Message::RowRequest | Message::Keepalive => {}
        Message::Forward { to: node, datagram }
        | Message::Forwarded {
            from: node,
            datagram,
        } => {
            out.extend_from_slice(&node.0.to_be_bytes());
            out.extend_from_slice(datagram);
        }
        Message::LinkState(row) => {
            out.extend_from_slice(&row.origin.0.to_be_bytes());
            out.extend_from_slice(&row.version.to_be_bytes());
            let count = u16::try_from(row.links.len()).expect("checked against MAX_LINKS");
            out.extend_from_slice(&count.to_be_bytes());
            out.push(if row.drained { ROW_DRAINED } else { 0 });
            for (node, estimate) in &row.links {
                let (up, rtt, loss) = link_fields(estimate);
                out.extend_from_slice(&node.0.to_be_bytes());
                out.push(up);
                out.extend_from_slice(&rtt.to_be_bytes());
                out.extend_from_slice(&loss.to_be_bytes());
            }
        }
    }
    Ok(())
}

fn check_id(id: NodeId) -> Result<(), EncodeError> {
    if id.is_valid() {
        Ok(())
    } else {
        Err(EncodeError::ReservedNodeId(id))
    }
}

/// Reads an encoded message: the plaintext of a transport message that
/// its session authenticated. Anything but exactly what [`encode`] writes
/// is [`Reject::Malformed`].
pub fn decode(bytes: &[u8]) -> Result<Message, Reject> {
    let (&kind, body) = bytes.split_first().ok_or(Reject::Malformed)?;
    let body_len = match kind {
        PROBE | PROBE_REPLY | ROW_ACK => 8,
        ROW_REQUEST | KEEPALIVE => 0,
        LINK_STATE | LINK_STATE_DELTA => {
            let count = body
                .get(LINK_COUNT_AT..LINK_COUNT_AT + 2)
                .ok_or(Reject::Malformed)?;
            let count = usize::from(u16::from_be_bytes([count[0], count[1]]));
            if count > MAX_LINKS {
                return Err(Reject::Malformed);
            }
            LINK_STATE_FIXED_LEN + count * LINK_LEN
        }
        // A node id, then the datagram: the rest.
        FORWARD | FORWARDED if (3..=2 + MAX_FORWARDED_LEN).contains(&body.len()) => body.len(),
        _ => return Err(Reject::Malformed),
    };
    if body.len() != body_len {
        return Err(Reject::Malformed);
    }
    read_body(kind, Reader(body))
}

/// Reads a body whose length [`decode`] checked.
fn read_body(kind: u8, mut r: Reader<'_>) -> Result<Message, Reject> {
    let message = match kind {
        PROBE => Message::Probe { seq: r.u64()? },
        PROBE_REPLY => Message::ProbeReply { seq: r.u64()? },
        ROW_ACK => Message::RowAck { version: r.u64()? },
        ROW_REQUEST => Message::RowRequest,
        KEEPALIVE => Message::Keepalive,
        FORWARD | FORWARDED => {
            let node = NodeId(r.u16()?);
            if !node.is_valid() {
                return Err(Reject::Malformed);
            }
            let datagram = std::mem::take(&mut r.0).to_vec();
            if kind == FORWARD {
                Message::Forward { to: node, datagram }
            } else {
                Message::Forwarded {
                    from: node,
                    datagram,
                }
            }
        }
        LINK_STATE | LINK_STATE_DELTA => {
            let origin = NodeId(r.u16()?);
            let version = r.u64()?;
            let count = usize::from(r.u16()?);
            // The other bits are reserved and must be 0, as the up byte
            // must be 0 or 1: a change of meaning is a new header version.
            let drained = match r.u8()? {
                0 => false,
                ROW_DRAINED => true,
                _ => return Err(Reject::Malformed),
            };
            if !origin.is_valid() {
                return Err(Reject::Malformed);
            }
            let mut links = Vec::with_capacity(count.min(MAX_LINKS));
            let mut previous = 0;
            for _ in 0..count {
                let node = NodeId(r.u16()?);
                let up = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(Reject::Malformed),
                };
                let rtt = rtt_from_wire(r.u32()?);
                let loss = loss_from_wire(r.u16()?);
                if !node.is_valid() || node.0 <= previous {
                    return Err(Reject::Malformed);
                }
                previous = node.0;
                links.push((node, LinkEstimate { up, rtt, loss }));
            }
            let kind = if kind == LINK_STATE {
                RowKind::Full
            } else {
                RowKind::Delta
            };
            Message::LinkState(Arc::new(LinkState {
                origin,
                version,
                kind,
                drained,
                links,
            }))
        }
        _ => return Err(Reject::Malformed),
    };
    if r.0.is_empty() {
        Ok(message)
    } else {
        Err(Reject::Malformed)
    }
}

/// Reads big-endian fields off the front of a slice; running short is
/// [`Reject::Malformed`].
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Reject> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Reject::Malformed)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, Reject> {
        self.array().map(u8::from_be_bytes)
    }

    fn u16(&mut self) -> Result<u16, Reject> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, Reject> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, Reject> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_handshakes_and_keepalives_round_trip() {
        for message in [
            Message::Forward {
                to: NodeId(7),
                datagram: vec![1; 145],
            },
            Message::Forwarded {
                from: NodeId(3),
                datagram: vec![2; 1],
            },
            Message::Keepalive,
        ] {
            let mut out = Vec::new();
            encode(&message, &mut out).unwrap();
            assert_eq!(out.len(), message.wire_len());
            assert_eq!(decode(&out).unwrap(), message);
        }
    }

    #[test]
    fn a_forward_without_a_datagram_too_long_or_to_no_node_is_refused() {
        let forward = |to, len| Message::Forward {
            to: NodeId(to),
            datagram: vec![0; len],
        };
        for (message, error) in [
            (forward(7, 0), EncodeError::ForwardedLength(0)),
            (
                forward(7, MAX_FORWARDED_LEN + 1),
                EncodeError::ForwardedLength(MAX_FORWARDED_LEN + 1),
            ),
            (forward(0, 10), EncodeError::ReservedNodeId(NodeId(0))),
        ] {
            let mut out = Vec::new();
            assert_eq!(encode(&message, &mut out), Err(error));
            assert!(out.is_empty());
        }
        // The same on the way in: no datagram, too long, node 0 or 65535.
        for bytes in [
            vec![FORWARD, 0, 7],
            [vec![FORWARDED, 0, 7], vec![0; MAX_FORWARDED_LEN + 1]].concat(),
            vec![FORWARD, 0, 0, 1],
            vec![FORWARDED, 0xff, 0xff, 1],
            vec![FORWARD, 0],
        ] {
            assert_eq!(decode(&bytes), Err(Reject::Malformed), "{bytes:?}");
        }
    }
}
