//! Control messages: probes, probe replies, link-state rows (whole or as
//! deltas) and their acknowledgements and requests, as they go over the
//! control port, each authenticated under the overlay key and
//! numbered against replay (docs/wire-format.md, "Control messages").
//!
//! ```text
//! magic "dt" | version 1 | type | sender | receiver | sequence | body | MAC
//!     2            1        1       2         2          8        …     16
//! ```
//!
//! The MAC is HMAC-SHA256 under the 32-byte [`OverlayKey`] over every byte
//! before it, truncated to its first 16 bytes (RFC 2104, section 5, allows
//! truncation to half the output) and compared in constant time (RustCrypto
//! `hmac`). The key is shared by the whole overlay: a valid MAC proves that
//! a member sent the message, not which one.
//!
//! Receiving is two steps, so that the order cannot be got wrong:
//! [`decode`] checks the layout, the MAC and the receiver and returns an
//! [`Authenticated`] message; only [`ReplayGuard::accept`] opens that, after
//! checking its sequence number, so a forged message never moves the replay
//! window. Everything refused comes back as a [`Reject`] naming why, for
//! [`RejectCounters`]. [`Endpoint`] keeps all of it (key, sequence
//! counters, replay windows, counters) for one node.
//!
//! Nothing here does I/O or reads a clock, and decoding never panics,
//! whatever the bytes.
//!
//! ## Sizes
//!
//! A probe and a probe reply are [`PROBE_LEN`] = 40 bytes of UDP payload:
//! 82 bytes on the wire over IPv4 and Ethernet, 102 over IPv6. A link-state
//! row or delta of `n` links is `45 + 9n` bytes, at most [`MAX_LINKS`] =
//! 1024 links ([`MAX_MESSAGE_LEN`] = 9261 bytes): one datagram per row,
//! which the IP layer fragments past about 150 links (docs/wire-format.md
//! has the arithmetic and the probe budget). A row acknowledgement is 40
//! bytes, a row request 32.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use detour_common::wire::NodeId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::link::LinkEstimate;
use crate::replay::ReplayGuard;

/// The first two bytes of every control message: "dt".
pub const MAGIC: [u8; 2] = *b"dt";
/// The format version this module reads and writes.
pub const VERSION: u8 = 1;
/// Magic, version, type, sender, receiver, sequence number.
pub const HEADER_LEN: usize = 16;
/// The truncated HMAC-SHA256 at the end of every message.
pub const MAC_LEN: usize = 16;
/// A probe or probe reply, whole: header, 8-byte probe number, MAC.
pub const PROBE_LEN: usize = HEADER_LEN + 8 + MAC_LEN;
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
/// The largest message: a link-state row of [`MAX_LINKS`] links.
pub const MAX_MESSAGE_LEN: usize =
    HEADER_LEN + LINK_STATE_FIXED_LEN + MAX_LINKS * LINK_LEN + MAC_LEN;

/// A row acknowledgement, whole: header, 8-byte row version, MAC.
pub const ROW_ACK_LEN: usize = HEADER_LEN + 8 + MAC_LEN;
/// A row request, whole: header and MAC, no body.
pub const ROW_REQUEST_LEN: usize = HEADER_LEN + MAC_LEN;

/// Message type codes (byte 3).
const PROBE: u8 = 1;
const PROBE_REPLY: u8 = 2;
const LINK_STATE: u8 = 3;
const LINK_STATE_DELTA: u8 = 4;
const ROW_ACK: u8 = 5;
const ROW_REQUEST: u8 = 6;

type HmacSha256 = Hmac<Sha256>;

/// The overlay's shared secret: 32 bytes, from the key file that the
/// configuration reads (and checks the permissions of).
///
/// It holds the HMAC state keyed once, so that a message costs only the
/// hashing of its own bytes. Its `Debug` does not show the key.
#[derive(Clone)]
pub struct OverlayKey {
    mac: HmacSha256,
}

impl OverlayKey {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; OverlayKey::LEN]) -> OverlayKey {
        OverlayKey {
            mac: HmacSha256::new_from_slice(&bytes).expect("HMAC takes a key of any length"),
        }
    }

    /// The key from a key file's content: 64 hexadecimal digits (either
    /// case), with surrounding whitespace (a final newline) ignored.
    pub fn from_hex(text: &str) -> Result<OverlayKey, KeyError> {
        let digits = text.trim().as_bytes();
        if digits.len() != 2 * OverlayKey::LEN {
            return Err(KeyError::Length(digits.len()));
        }
        let mut bytes = [0u8; OverlayKey::LEN];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let [hi, lo] = [pair[0], pair[1]].map(hex_value);
            *byte = (hi.ok_or(KeyError::NotHex)? << 4) | lo.ok_or(KeyError::NotHex)?;
        }
        Ok(OverlayKey::from_bytes(bytes))
    }

    /// The truncated MAC of `signed`.
    fn tag(&self, signed: &[u8]) -> [u8; MAC_LEN] {
        let full = self
            .mac
            .clone()
            .chain_update(signed)
            .finalize()
            .into_bytes();
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&full[..MAC_LEN]);
        tag
    }

    /// Whether `tag` is the truncated MAC of `signed`, in constant time.
    fn verify(&self, signed: &[u8], tag: &[u8; MAC_LEN]) -> Result<(), Reject> {
        self.mac
            .clone()
            .chain_update(signed)
            .verify_truncated_left(tag)
            .map_err(|_| Reject::BadMac)
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|v| u8::try_from(v).ok())
}

impl fmt::Debug for OverlayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OverlayKey(..)")
    }
}

impl FromStr for OverlayKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<OverlayKey, KeyError> {
        OverlayKey::from_hex(text)
    }
}

/// Why a key file's content is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "an overlay key is 64 hexadecimal digits (32 bytes), this has {0} characters; make one with `head -c 32 /dev/urandom | xxd -p -c 32`"
    )]
    Length(usize),
    #[error("an overlay key is 64 hexadecimal digits (0-9, a-f), this has other characters")]
    NotHex,
}

/// The header fields that vary between messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The node that sent the message (not necessarily the link-state
    /// row's origin, which another node may forward).
    pub sender: NodeId,
    /// The node it is for: a receiver drops what is addressed to another,
    /// so a message cannot be replayed to, or reflected at, anyone else.
    pub receiver: NodeId,
    /// The sender's sequence number toward this receiver (a
    /// [`SequenceCounter`]), against replay.
    pub seq: u64,
}

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
}

impl Message {
    /// The message's size on the wire (the UDP payload), MAC included.
    pub fn wire_len(&self) -> usize {
        match self {
            Message::Probe { .. } | Message::ProbeReply { .. } => PROBE_LEN,
            Message::LinkState(row) => {
                HEADER_LEN + LINK_STATE_FIXED_LEN + row.links.len() * LINK_LEN + MAC_LEN
            }
            Message::RowAck { .. } => ROW_ACK_LEN,
            Message::RowRequest => ROW_REQUEST_LEN,
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

/// Why a message was dropped. Each has a counter ([`RejectCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    /// Not a control message of a known layout: too short, bad magic, an
    /// unknown type, a length that does not add up (truncated, or trailing
    /// bytes), a reserved node id, links out of order, a bad field value.
    #[error("malformed control message")]
    Malformed,
    /// A control message of a format version this node does not speak.
    #[error("control message of an unknown format version")]
    UnknownVersion,
    /// The MAC does not match: forged, corrupted, or under another key.
    #[error("control message with a bad MAC (forged, or another overlay key)")]
    BadMac,
    /// Authentic, but addressed to another node.
    #[error("control message for another node")]
    NotForUs,
    /// Authentic, but its sequence number was seen already or is too old.
    #[error("replayed control message")]
    Replayed,
    /// An authentic link-state row no newer than the one held (counted by
    /// the link-state database).
    #[error("stale link-state row")]
    Stale,
    /// Authentic, but its sender (or a row's origin) is not a member of
    /// this node's overlay: a node missing from the configuration.
    #[error("control message from a node not in the overlay")]
    UnknownNode,
    /// From an address that is no configured peer's underlay address:
    /// dropped before anything about it is computed (the dataplane's WAN
    /// program drops most of these before they reach the socket).
    #[error("control message from an address that is no peer's")]
    Stranger,
}

impl Reject {
    pub const ALL: [Reject; 8] = [
        Reject::Malformed,
        Reject::UnknownVersion,
        Reject::BadMac,
        Reject::NotForUs,
        Reject::Replayed,
        Reject::Stale,
        Reject::UnknownNode,
        Reject::Stranger,
    ];

    /// The reason's name as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::UnknownVersion => "unknown_version",
            Reject::BadMac => "bad_mac",
            Reject::NotForUs => "not_for_us",
            Reject::Replayed => "replayed",
            Reject::Stale => "stale",
            Reject::UnknownNode => "unknown_node",
            Reject::Stranger => "stranger",
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

/// A message whose layout, MAC and receiver were checked, and whose
/// sequence number was not yet: [`ReplayGuard::accept`] opens it.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    header: Header,
    message: Message,
}

impl Authenticated {
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header and the message: for the replay guard, once the
    /// sequence number passed (and for the fuzz target's round trip).
    pub fn into_parts(self) -> (Header, Message) {
        (self.header, self.message)
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
}

/// Appends `message`, from and to the nodes and with the sequence number
/// of `header`, sealed with `key`'s MAC, to `out`. On error `out` is left
/// as it was.
pub fn encode(
    key: &OverlayKey,
    header: &Header,
    message: &Message,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for id in [header.sender, header.receiver] {
        check_id(id)?;
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

    let start = out.len();
    out.reserve(message.wire_len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, message.kind()]);
    out.extend_from_slice(&header.sender.0.to_be_bytes());
    out.extend_from_slice(&header.receiver.0.to_be_bytes());
    out.extend_from_slice(&header.seq.to_be_bytes());
    match message {
        Message::Probe { seq } | Message::ProbeReply { seq } => {
            out.extend_from_slice(&seq.to_be_bytes());
        }
        Message::RowAck { version } => out.extend_from_slice(&version.to_be_bytes()),
        Message::RowRequest => {}
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
    let tag = key.tag(&out[start..]);
    out.extend_from_slice(&tag);
    Ok(())
}

fn check_id(id: NodeId) -> Result<(), EncodeError> {
    if id.is_valid() {
        Ok(())
    } else {
        Err(EncodeError::ReservedNodeId(id))
    }
}

/// Checks a datagram received on the control port by node `local`: its
/// layout, then its MAC under `key`, then that it is addressed to `local`;
/// then reads its body. The sequence number is for [`ReplayGuard::accept`]
/// to check.
///
/// Lengths are checked before the MAC, so that a truncated or padded
/// message is reported as [`Reject::Malformed`] rather than a bad MAC; the
/// body's values are read only once the MAC verified.
pub fn decode(key: &OverlayKey, local: NodeId, datagram: &[u8]) -> Result<Authenticated, Reject> {
    // The version comes first: a later version may lay out the rest, MAC
    // included, differently.
    match datagram {
        [m0, m1, version, ..] if [*m0, *m1] == MAGIC => {
            if *version != VERSION {
                return Err(Reject::UnknownVersion);
            }
        }
        _ => return Err(Reject::Malformed),
    }
    let (signed, tag) = datagram
        .split_last_chunk::<MAC_LEN>()
        .ok_or(Reject::Malformed)?;
    let mut r = Reader(signed);
    let [_, _, _, kind] = r.array()?;
    let header = Header {
        sender: NodeId(r.u16()?),
        receiver: NodeId(r.u16()?),
        seq: r.u64()?,
    };
    if !header.sender.is_valid() || !header.receiver.is_valid() {
        return Err(Reject::Malformed);
    }
    let body = r.0;
    let body_len = match kind {
        PROBE | PROBE_REPLY | ROW_ACK => 8,
        ROW_REQUEST => 0,
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
        _ => return Err(Reject::Malformed),
    };
    if body.len() != body_len {
        return Err(Reject::Malformed);
    }

    key.verify(signed, tag)?;
    if header.receiver != local {
        return Err(Reject::NotForUs);
    }

    let message = read_body(kind, Reader(body))?;
    Ok(Authenticated { header, message })
}

/// Reads a body whose length [`decode`] checked.
fn read_body(kind: u8, mut r: Reader<'_>) -> Result<Message, Reject> {
    let message = match kind {
        PROBE => Message::Probe { seq: r.u64()? },
        PROBE_REPLY => Message::ProbeReply { seq: r.u64()? },
        ROW_ACK => Message::RowAck { version: r.u64()? },
        ROW_REQUEST => Message::RowRequest,
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

/// A sender's sequence numbers toward one receiver.
///
/// Start it at a value above every number used before, across restarts:
/// the daemon passes the microseconds since the Unix epoch at its start
/// (see [`crate::replay`], "Restarts").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceCounter {
    next: u64,
}

impl SequenceCounter {
    pub fn new(base: u64) -> SequenceCounter {
        SequenceCounter { next: base }
    }

    /// The number for the next message (it stops at `u64::MAX`, which
    /// about 580,000 years of microseconds do not reach).
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next = seq.saturating_add(1);
        seq
    }
}

/// One node's end of the control channel: seals what it sends to each peer
/// with the next sequence number for that peer, and opens what it receives,
/// counting what it drops.
#[derive(Debug, Clone)]
pub struct Endpoint {
    key: OverlayKey,
    local: NodeId,
    seq_base: u64,
    /// One counter per peer, so that a receiver's replay window sees each
    /// sender's numbers without gaps and tolerates reordering by up to
    /// [`crate::replay::WINDOW`] messages. Never forgotten: a peer that
    /// left and came back may still hold a window for us.
    sequences: HashMap<NodeId, SequenceCounter>,
    replay: ReplayGuard,
    rejects: RejectCounters,
}

impl Endpoint {
    /// `seq_base`: where every peer's sequence numbers start, above any
    /// this node used before (microseconds since the Unix epoch at start).
    pub fn new(key: OverlayKey, local: NodeId, seq_base: u64) -> Endpoint {
        Endpoint {
            key,
            local,
            seq_base,
            sequences: HashMap::new(),
            replay: ReplayGuard::new(),
            rejects: RejectCounters::default(),
        }
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Appends `message` for `to`, sealed, to `out`: one datagram.
    pub fn seal(
        &mut self,
        to: NodeId,
        message: &Message,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let base = self.seq_base;
        let seq = self
            .sequences
            .entry(to)
            .or_insert_with(|| SequenceCounter::new(base))
            .next_seq();
        let header = Header {
            sender: self.local,
            receiver: to,
            seq,
        };
        encode(&self.key, &header, message, out)
    }

    /// The sender and message of a datagram received on the control port,
    /// if it is well-formed, authentic, for this node and not a replay;
    /// otherwise why not, counted.
    pub fn open(&mut self, datagram: &[u8]) -> Result<(NodeId, Message), Reject> {
        let opened = decode(&self.key, self.local, datagram)
            .and_then(|authenticated| self.replay.accept(authenticated));
        match opened {
            Ok((header, message)) => Ok((header.sender, message)),
            Err(reject) => {
                self.rejects.record(reject);
                Err(reject)
            }
        }
    }

    pub fn rejects(&self) -> &RejectCounters {
        &self.rejects
    }

    /// Counts a drop decided after [`Self::open`], such as
    /// [`Reject::Stale`] by the link-state database.
    pub fn record(&mut self, reject: Reject) {
        self.rejects.record(reject);
    }

    /// Forgets the replay window of `peer` (one that left the overlay).
    pub fn forget(&mut self, peer: NodeId) {
        self.replay.forget(peer);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    fn key() -> OverlayKey {
        OverlayKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    fn header(seq: u64) -> Header {
        Header {
            sender: A,
            receiver: B,
            seq,
        }
    }

    fn sealed(header: &Header, message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&key(), header, message, &mut out).expect("encodable");
        out
    }

    fn open(bytes: &[u8]) -> Result<(Header, Message), Reject> {
        decode(&key(), B, bytes).map(Authenticated::into_parts)
    }

    fn est(up: bool, rtt_us: u64, loss: f64) -> LinkEstimate {
        LinkEstimate {
            up,
            rtt: Duration::from_micros(rtt_us),
            loss,
        }
    }

    fn row(links: &[(u16, LinkEstimate)]) -> Message {
        Message::LinkState(Arc::new(LinkState {
            origin: NodeId(3),
            version: 1_700_000_000_000_123,
            kind: RowKind::Full,
            drained: false,
            links: links.iter().map(|&(n, e)| (NodeId(n), e)).collect(),
        }))
    }

    fn delta(links: &[(u16, LinkEstimate)]) -> Message {
        let Message::LinkState(full) = row(links) else {
            unreachable!()
        };
        Message::LinkState(Arc::new(LinkState {
            kind: RowKind::Delta,
            ..LinkState::clone(&full)
        }))
    }

    fn sample_row() -> Message {
        row(&[
            (1, est(true, 12_345, 0.0)),
            (2, est(false, 0, 1.0)),
            (7, est(true, 250_000, 0.2)), // 13107 / 65535: exact on the wire
        ])
    }

    /// Bytes of the golden probe below (also in docs/wire-format.md).
    const GOLDEN_PROBE: [u8; PROBE_LEN] = [
        0x64, 0x74, 0x01, 0x01, 0x00, 0x01, 0x00, 0x02, // "dt", v1, probe, 1 → 2
        0x00, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00, // sequence
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // probe 7
        0x81, 0xb5, 0xb4, 0xe6, 0x04, 0x8f, 0xf1, 0x0e, // MAC
        0x84, 0x75, 0x7e, 0xcd, 0x25, 0xe3, 0xdb, 0x4a,
    ];

    #[test]
    fn probe_has_the_documented_layout() {
        // Key 00 01 … 1f; sender 1, receiver 2; sequence number
        // 1,700,000,000,000,000 (µs since the epoch at start); probe 7.
        let bytes = sealed(&header(1_700_000_000_000_000), &Message::Probe { seq: 7 });
        assert_eq!(bytes, GOLDEN_PROBE, "{bytes:02x?}");
    }

    #[test]
    fn each_message_type_round_trips() {
        for message in [
            Message::Probe { seq: 7 },
            Message::ProbeReply { seq: u64::MAX },
            sample_row(),
            row(&[]),
            delta(&[(2, est(true, 1, 0.2))]),
            delta(&[]),
            Message::RowAck { version: 42 },
            Message::RowRequest,
        ] {
            let bytes = sealed(&header(99), &message);
            assert_eq!(bytes.len(), message.wire_len());
            assert_eq!(open(&bytes), Ok((header(99), message)));
        }
    }

    #[test]
    fn probe_and_reply_fit_the_probe_budget() {
        let probe = sealed(&header(1), &Message::Probe { seq: 1 });
        let reply = sealed(&header(1), &Message::ProbeReply { seq: 1 });
        assert_eq!((probe.len(), reply.len()), (40, 40));
        assert_eq!(
            sealed(&header(1), &Message::RowAck { version: 1 }).len(),
            40
        );
        assert_eq!(sealed(&header(1), &Message::RowRequest).len(), 32);
        // Per peer, one direction: our probes plus our replies to its
        // probes, 5 a second each when steady, 10 when suspect. Frame =
        // UDP payload + UDP 8 + IP 20 or 40 + Ethernet 14.
        let ipv4 = 40 + 8 + 20 + 14;
        let ipv6 = 40 + 8 + 40 + 14;
        assert_eq!((ipv4, ipv6), (82, 102));
        assert_eq!((10 * ipv4, 10 * ipv6), (820, 1020), "steady, B/s");
        assert_eq!((20 * ipv4, 20 * ipv6), (1640, 2040), "worst, B/s");
        assert!(20 * ipv6 <= 2048);
    }

    #[test]
    fn link_state_sizes_are_as_documented() {
        let links = |n: usize| {
            (1..=n as u16)
                .map(|i| (i, est(true, 1, 0.0)))
                .collect::<Vec<_>>()
        };
        assert_eq!(sealed(&header(1), &row(&[])).len(), 45);
        assert_eq!(sealed(&header(1), &row(&links(10))).len(), 45 + 90);
        assert_eq!(sealed(&header(1), &delta(&links(10))).len(), 45 + 90);
        let full = sealed(&header(1), &row(&links(MAX_LINKS)));
        assert_eq!(full.len(), MAX_MESSAGE_LEN);
        assert_eq!(MAX_MESSAGE_LEN, 9261);
        assert!(open(&full).is_ok());
        // Unfragmented up to: IPv4 MTU 1500, IPv6 MTU 1500, IPv6 MTU 1280.
        assert_eq!(
            [1472, 1452, 1232].map(|p| (p - 45) / LINK_LEN),
            [158, 156, 131]
        );
        let mut out = vec![0xaa];
        assert_eq!(
            encode(&key(), &header(1), &row(&links(MAX_LINKS + 1)), &mut out),
            Err(EncodeError::TooManyLinks(MAX_LINKS + 1))
        );
        assert_eq!(out, [0xaa], "left as it was");
    }

    #[test]
    fn encode_refuses_what_decode_would_reject() {
        let mut out = Vec::new();
        let bad_sender = Header {
            sender: NodeId(0),
            ..header(1)
        };
        assert_eq!(
            encode(&key(), &bad_sender, &Message::Probe { seq: 1 }, &mut out),
            Err(EncodeError::ReservedNodeId(NodeId(0)))
        );
        let unsorted = row(&[(5, est(true, 1, 0.0)), (4, est(true, 1, 0.0))]);
        assert_eq!(
            encode(&key(), &header(1), &unsorted, &mut out),
            Err(EncodeError::LinksOutOfOrder(NodeId(4)))
        );
        let repeated = row(&[(5, est(true, 1, 0.0)), (5, est(true, 1, 0.0))]);
        assert_eq!(
            encode(&key(), &header(1), &repeated, &mut out),
            Err(EncodeError::LinksOutOfOrder(NodeId(5)))
        );
        let reserved = row(&[(u16::MAX, est(true, 1, 0.0))]);
        assert_eq!(
            encode(&key(), &header(1), &reserved, &mut out),
            Err(EncodeError::ReservedNodeId(NodeId(u16::MAX)))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn estimates_are_quantised_as_documented() {
        let cases = [
            (
                est(true, 12_345, 0.25),
                est(true, 12_345, 16384.0 / 65535.0),
            ),
            (
                LinkEstimate {
                    up: true,
                    rtt: Duration::from_nanos(1_999),
                    loss: 0.0,
                },
                est(true, 1, 0.0),
            ),
            (
                LinkEstimate {
                    up: false,
                    rtt: Duration::from_secs(1 << 20),
                    loss: 2.0,
                },
                est(false, u64::from(u32::MAX), 1.0),
            ),
            (est(true, 5, -1.0), est(true, 5, 0.0)),
            (est(true, 5, f64::NAN), est(true, 5, 1.0)),
        ];
        for (sent, read) in cases {
            assert_eq!(quantise(sent), read, "{sent:?}");
            let bytes = sealed(&header(1), &row(&[(9, sent)]));
            let Ok((_, Message::LinkState(got))) = open(&bytes) else {
                panic!("decodes")
            };
            assert_eq!(got.links, [(NodeId(9), read)]);
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_is_never_accepted() {
        for message in [
            Message::Probe { seq: 7 },
            Message::ProbeReply { seq: 7 },
            sample_row(),
        ] {
            let bytes = sealed(&header(5), &message);
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let expected: &[Reject] = if bit / 8 == 2 {
                    &[Reject::UnknownVersion]
                } else {
                    &[Reject::BadMac, Reject::Malformed]
                };
                let got = open(&flipped).map(|_| ()).unwrap_err();
                assert!(expected.contains(&got), "bit {bit}: {got:?}");
            }
        }
    }

    #[test]
    fn a_wrong_key_is_a_bad_mac() {
        let bytes = sealed(&header(5), &sample_row());
        let other = OverlayKey::from_bytes([0x5a; 32]);
        assert_eq!(decode(&other, B, &bytes), Err(Reject::BadMac));
    }

    #[test]
    fn truncated_at_every_length_is_malformed() {
        for message in [Message::Probe { seq: 7 }, sample_row()] {
            let bytes = sealed(&header(5), &message);
            for len in 0..bytes.len() {
                assert_eq!(
                    open(&bytes[..len]).map(|_| ()),
                    Err(Reject::Malformed),
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        for message in [Message::Probe { seq: 7 }, sample_row()] {
            for extra in [&[0u8][..], &[0; 9], &[0xff; 16]] {
                let mut bytes = sealed(&header(5), &message);
                bytes.extend_from_slice(extra);
                assert_eq!(open(&bytes).map(|_| ()), Err(Reject::Malformed));
            }
        }
    }

    #[test]
    fn an_unknown_version_is_reported_as_such() {
        let mut bytes = sealed(&header(5), &Message::Probe { seq: 7 });
        for version in [0, 2, 0xff] {
            bytes[2] = version;
            assert_eq!(open(&bytes).map(|_| ()), Err(Reject::UnknownVersion));
            assert_eq!(open(&bytes[..3]).map(|_| ()), Err(Reject::UnknownVersion));
        }
        let mut not_ours = sealed(&header(5), &Message::Probe { seq: 7 });
        not_ours[0] = b'D';
        assert_eq!(open(&not_ours).map(|_| ()), Err(Reject::Malformed));
    }

    #[test]
    fn authentic_values_out_of_range_are_malformed() {
        // Sealed with the right key, so only the values are wrong.
        let reseal = |mut bytes: Vec<u8>| {
            let end = bytes.len() - MAC_LEN;
            let tag = key().tag(&bytes[..end]);
            bytes[end..].copy_from_slice(&tag);
            bytes
        };
        let good = sealed(&header(5), &sample_row());
        let first_link = HEADER_LEN + LINK_STATE_FIXED_LEN;
        for (at, value) in [
            (first_link + 2, 2),     // up is 0 or 1
            (first_link + 1, 0),     // node id 0
            (first_link + 1 + 9, 1), // a repeat of the first node
            (HEADER_LEN + 1, 0),     // origin 0
            (first_link - 1, 2),     // a reserved flag
            (3, 9),                  // unknown type
            (5, 0),                  // sender 0
        ] {
            let mut bytes = good.clone();
            bytes[at] = value;
            assert_eq!(
                open(&reseal(bytes)).map(|_| ()),
                Err(Reject::Malformed),
                "{at}"
            );
        }
        let mut count_too_high = good.clone();
        count_too_high[HEADER_LEN + LINK_COUNT_AT..][..2].copy_from_slice(&1025u16.to_be_bytes());
        assert_eq!(
            open(&reseal(count_too_high)).map(|_| ()),
            Err(Reject::Malformed)
        );
    }

    #[test]
    fn a_message_for_another_node_is_not_for_us() {
        let bytes = sealed(&header(5), &Message::Probe { seq: 7 });
        assert_eq!(decode(&key(), NodeId(3), &bytes), Err(Reject::NotForUs));
    }

    #[test]
    fn replay_is_checked_only_after_the_mac() {
        let mut guard = ReplayGuard::new();
        let probe = |seq| sealed(&header(seq), &Message::Probe { seq: 1 });
        let accept = |guard: &mut ReplayGuard, bytes: &[u8]| {
            decode(&key(), B, bytes).and_then(|a| guard.accept(a))
        };
        assert!(accept(&mut guard, &probe(1_000)).is_ok());
        // A forgery far ahead: refused, and the window has not moved.
        let mut forged = probe(1_000_000);
        forged[PROBE_LEN - 1] ^= 1;
        assert_eq!(accept(&mut guard, &forged), Err(Reject::BadMac));
        assert_eq!(guard.window(A).map(|w| w.highest()), Some(1_000));
        assert!(accept(&mut guard, &probe(1_001)).is_ok());
        assert_eq!(accept(&mut guard, &probe(1_001)), Err(Reject::Replayed));
        assert!(accept(&mut guard, &probe(999)).is_ok(), "reordered");
        assert_eq!(accept(&mut guard, &probe(999)), Err(Reject::Replayed));
        assert_eq!(
            accept(&mut guard, &probe(900)),
            Err(Reject::Replayed),
            "too old"
        );
    }

    #[test]
    fn a_restarted_sender_is_accepted_and_its_old_messages_are_not() {
        let (mut a, mut b) = endpoints();
        let before_restart = sent(&mut a, B, &Message::Probe { seq: 1 });
        assert!(b.open(&before_restart).is_ok());
        assert!(b.open(&sent(&mut a, B, &Message::Probe { seq: 2 })).is_ok());
        // A restarts ten seconds later, its base the clock at start.
        let mut a = Endpoint::new(key(), A, START + 10_000_000);
        assert_eq!(
            b.open(&sent(&mut a, B, &Message::Probe { seq: 1 })),
            Ok((A, Message::Probe { seq: 1 }))
        );
        assert_eq!(b.open(&before_restart), Err(Reject::Replayed));
    }

    const START: u64 = 1_700_000_000_000_000;

    fn endpoints() -> (Endpoint, Endpoint) {
        (
            Endpoint::new(key(), A, START),
            Endpoint::new(key(), B, START + 7),
        )
    }

    fn sent(from: &mut Endpoint, to: NodeId, message: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        from.seal(to, message, &mut out).expect("encodable");
        out
    }

    #[test]
    fn endpoints_number_each_peer_separately() {
        let (mut a, _) = endpoints();
        let seq = |bytes: Vec<u8>| u64::from_be_bytes(bytes[8..16].try_into().unwrap());
        let m = Message::Probe { seq: 1 };
        assert_eq!(seq(sent(&mut a, B, &m)), START);
        assert_eq!(seq(sent(&mut a, B, &m)), START + 1);
        assert_eq!(seq(sent(&mut a, NodeId(3), &m)), START);
        a.forget(B);
        assert_eq!(seq(sent(&mut a, B, &m)), START + 2, "kept across forget");
    }

    #[test]
    fn reject_counters_name_every_reason() {
        let mut c = RejectCounters::default();
        c.record(Reject::BadMac);
        c.record(Reject::BadMac);
        c.record(Reject::Stale);
        let named: Vec<_> = c.iter().collect();
        assert_eq!(
            named,
            [
                ("malformed", 0),
                ("unknown_version", 0),
                ("bad_mac", 2),
                ("not_for_us", 0),
                ("replayed", 0),
                ("stale", 1),
                ("unknown_node", 0),
                ("stranger", 0),
            ]
        );
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn key_parses_from_hex_and_never_shows() {
        let text = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n";
        let parsed: OverlayKey = text.parse().expect("a key");
        let probe = Message::Probe { seq: 7 };
        let mut out = Vec::new();
        encode(&parsed, &header(1_700_000_000_000_000), &probe, &mut out).unwrap();
        assert_eq!(out, GOLDEN_PROBE);
        assert_eq!(format!("{parsed:?}"), "OverlayKey(..)");
        assert_eq!(
            OverlayKey::from_hex("abcd").unwrap_err(),
            KeyError::Length(4)
        );
        let plus = format!("+f{}", &text[2..64]);
        assert_eq!(OverlayKey::from_hex(&plus).unwrap_err(), KeyError::NotHex);
        let wide = format!("é{}", &text[2..64]);
        assert!(OverlayKey::from_hex(&wide).is_err());
    }

    // Forged, replayed and truncated messages through the node (routes
    // unchanged, each counted): `node::tests`, the issue's acceptance test.

    fn arb_estimate() -> impl Strategy<Value = LinkEstimate> {
        (
            any::<bool>(),
            0u64..(1 << 34),
            prop_oneof![Just(0.0), Just(1.0), 0.0..=1.0f64],
        )
            .prop_map(|(up, rtt_us, loss)| LinkEstimate {
                up,
                // Up to four times what the wire holds, with sub-µs parts.
                rtt: Duration::from_nanos(rtt_us * 1000 + rtt_us % 1000),
                loss,
            })
    }

    fn arb_row() -> impl Strategy<Value = LinkState> {
        (
            1u16..u16::MAX,
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            proptest::collection::btree_map(1u16..u16::MAX, arb_estimate(), 0..200),
        )
            .prop_map(
                |(origin, version, full, drained, links): (
                    u16,
                    u64,
                    bool,
                    bool,
                    BTreeMap<u16, LinkEstimate>,
                )| {
                    LinkState {
                        origin: NodeId(origin),
                        version,
                        kind: if full { RowKind::Full } else { RowKind::Delta },
                        drained,
                        links: links.into_iter().map(|(n, e)| (NodeId(n), e)).collect(),
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = decode(&key(), B, &bytes);
        }

        /// Past the MAC: any body, sealed with the right key, is read
        /// without panicking; whatever is accepted encodes back to itself.
        #[test]
        fn authentic_arbitrary_bodies_never_panic_and_decode_canonically(
            kind in 0u8..8,
            body in proptest::collection::vec(any::<u8>(), 0..200),
            count in proptest::option::of(0u16..30),
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&[VERSION, kind, 0, 1, 0, 2]);
            bytes.extend_from_slice(&9u64.to_be_bytes());
            bytes.extend_from_slice(&body);
            // Often a consistent link count, so that the body is read.
            if let (Some(count), LINK_STATE | LINK_STATE_DELTA) = (count, kind) {
                bytes.truncate(HEADER_LEN + LINK_STATE_FIXED_LEN);
                bytes.resize(HEADER_LEN + LINK_STATE_FIXED_LEN, 1);
                bytes[HEADER_LEN + LINK_COUNT_AT..][..2].copy_from_slice(&count.to_be_bytes());
                bytes[HEADER_LEN + LINK_COUNT_AT + 2] = body.first().copied().unwrap_or(0) % 3;
                let links = (0..usize::from(count) * LINK_LEN).map(|i| body.get(i).copied().unwrap_or(0) % 3);
                bytes.extend(links);
            }
            let tag = key().tag(&bytes);
            bytes.extend_from_slice(&tag);
            if let Ok((header, message)) = open(&bytes) {
                prop_assert_eq!(sealed(&header, &message), bytes);
            }
        }

        #[test]
        fn link_state_rows_round_trip(row in arb_row(), seq in any::<u64>()) {
            let bytes = sealed(&header(seq), &Message::LinkState(Arc::new(row.clone())));
            prop_assert_eq!(bytes.len(), 45 + 9 * row.links.len());
            let expected = LinkState {
                links: row.links.iter().map(|&(n, e)| (n, quantise(e))).collect(),
                ..row
            };
            prop_assert_eq!(open(&bytes), Ok((header(seq), Message::LinkState(Arc::new(expected)))));
        }

        #[test]
        fn altered_messages_are_never_accepted(
            row in arb_row(),
            at in any::<prop::sample::Index>(),
            mask in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = sealed(&header(3), &Message::LinkState(Arc::new(row)));
            let mut altered = bytes.clone();
            altered[at.index(bytes.len())] ^= mask;
            prop_assert!(open(&altered).is_err());
            prop_assert_eq!(open(&bytes[..cut.index(bytes.len())]).map(|_| ()), Err(Reject::Malformed));
        }
    }
}
