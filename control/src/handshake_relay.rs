//! Handshakes through a relay, when two peers' direct path is down.
//!
//! Overlay data between two sites is sealed under the keys of their
//! gateways' session, and a session comes from a handshake between the
//! two. While their direct path is down, the data goes through a relay,
//! but a handshake over the direct path cannot: without this, relayed
//! traffic would stop when their last session expires (at 1.5 times the
//! rekey time: 180 s), and two sites cut off from each other from the
//! start would never talk at all.
//!
//! So a handshake message (an initiation, a response or a cookie reply)
//! for a peer whose direct link is down, and whose route goes through a
//! relay, goes to that relay inside its session with it, as a
//! [`Message::Forward`]; the relay passes it on inside its session with
//! the peer as a [`Message::Forwarded`], and the peer opens it as if it had
//! come straight from the sender. A responder takes a session only once
//! the initiator's first message under it arrives, which over the dead
//! path it never would: so the initiator, its session up, sends a
//! [`Message::Keepalive`] under it the same way.
//!
//! Noise authenticates the handshake end to end: the relay can drop or
//! delay it (as it can the traffic it relays), not read, change or forge
//! it, and a forwarded initiation goes through the same checks as any
//! (`mac1`, a repeated ephemeral, the static key); the keepalive is sealed
//! in the session. Nothing else is sent this way: probes and link-state
//! rows measure and describe the direct links.
//!
//! Everything here decides; the daemon sends.

use std::net::SocketAddr;

use detour_common::wire::NodeId;

use crate::message::{MAX_FORWARDED_LEN, Message, Reject};
use crate::node::Node;
use crate::paths::Hop;
use crate::session::{COOKIE_REPLY, INITIATION, MAGIC, RESPONSE, TRANSPORT, VERSION};

/// Whether `datagram` is a handshake message of the session layer, which
/// a node sends through a relay whenever its direct link is down.
pub fn is_handshake(datagram: &[u8]) -> bool {
    session_datagram_kind(datagram)
        .is_some_and(|kind| matches!(kind, INITIATION | RESPONSE | COOKIE_REPLY))
}

/// The type of a session-layer datagram of this version short enough to
/// pass on: what a relay passes on (a handshake message, or a transport
/// message: the keepalive that confirms a session).
fn session_datagram_kind(datagram: &[u8]) -> Option<u8> {
    match datagram {
        [m0, m1, version, kind, ..]
            if [*m0, *m1] == MAGIC
                && *version == VERSION
                && datagram.len() <= MAX_FORWARDED_LEN =>
        {
            matches!(*kind, INITIATION | RESPONSE | COOKIE_REPLY | TRANSPORT).then_some(*kind)
        }
        _ => None,
    }
}

/// The relay a handshake `datagram` for `peer` goes through; `None`
/// (straight to the peer) for any other datagram, or while a relay is not
/// needed.
pub fn relay_for(node: &Node, peer: NodeId, datagram: &[u8]) -> Option<NodeId> {
    is_handshake(datagram)
        .then(|| relay_toward(node, peer))
        .flatten()
}

/// The relay this node reaches `peer` through while its own link to `peer`
/// is not up: its route's.
pub fn relay_toward(node: &Node, peer: NodeId) -> Option<NodeId> {
    if node.prober().peer(peer).is_some_and(|p| p.is_up()) {
        return None;
    }
    match node.route(peer)? {
        Hop::Via(relay) => Some(relay),
        Hop::Direct => None,
    }
}

/// The peer whose control port `addr` is (a cookie reply goes to the
/// address an initiation came from).
pub fn peer_at(
    peers: &std::collections::BTreeMap<NodeId, SocketAddr>,
    addr: SocketAddr,
) -> Option<NodeId> {
    peers.iter().find(|(_, a)| **a == addr).map(|(id, _)| *id)
}

/// What this node, as a relay, sends for a [`Message::Forward`] from
/// `from` to `to`: the [`Message::Forwarded`] for `to`. Refused: `to` no
/// other member, or a datagram that is no session-layer message.
pub fn pass_on(
    members: &[NodeId],
    local: NodeId,
    from: NodeId,
    to: NodeId,
    datagram: Vec<u8>,
) -> Result<(NodeId, Message), Reject> {
    if to == local || to == from || !members.contains(&to) {
        return Err(Reject::UnknownNode);
    }
    if session_datagram_kind(&datagram).is_none() {
        return Err(Reject::Malformed);
    }
    Ok((to, Message::Forwarded { from, datagram }))
}

/// What a [`Message::Forwarded`] from `relay` holds, to open as a datagram
/// from node `origin`. Refused: `origin` no other member (or the relay
/// itself, which needs no relay), or a datagram that is no session-layer
/// message.
pub fn accept(
    members: &[NodeId],
    local: NodeId,
    relay: NodeId,
    origin: NodeId,
    datagram: &[u8],
) -> Result<(), Reject> {
    if origin == local || origin == relay || !members.contains(&origin) {
        return Err(Reject::UnknownNode);
    }
    if session_datagram_kind(datagram).is_none() {
        return Err(Reject::Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
