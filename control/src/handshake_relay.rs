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
//! No I/O here: the daemon hands every datagram its endpoint queues to
//! [`divert`], every new session to [`confirm`] and every message it opens
//! to [`receive`], and sends what is left. Which peer is reached through
//! which relay comes from the routing core ([`relay_toward`]), passed in as
//! a function, so that the tests drive the same code with a cut of their
//! own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use detour_common::wire::NodeId;
use tracing::{debug, warn};

use crate::link::Time;
use crate::message::{MAX_FORWARDED_LEN, Message, Reject};
use crate::node::Node;
use crate::paths::Hop;
use crate::session::{
    COOKIE_REPLY, Endpoint, INITIATION, MAGIC, RESPONSE, Recipient, TRANSPORT, Transmit, VERSION,
};

/// The relay a peer is reached through while this node's link to it is not
/// up, if any: [`relay_toward`] for the daemon.
pub type RelayToward<'a> = &'a dyn Fn(NodeId) -> Option<NodeId>;

/// A datagram the endpoint queued for `transmit.to`: handed back to go
/// straight there, or, a handshake message for a peer reached through a
/// relay, sent to the relay inside a [`Message::Forward`] (`None`).
/// `peers` are the peers' control addresses (a cookie reply names an
/// address, not a node).
pub fn divert(
    endpoint: &mut Endpoint,
    now: Time,
    peers: &BTreeMap<NodeId, SocketAddr>,
    relay_toward: RelayToward,
    transmit: Transmit,
) -> Option<Transmit> {
    let peer = match transmit.to {
        Recipient::Node(id) => Some(id),
        Recipient::Address(addr) => peer_at(peers, addr),
    };
    let route = peer
        .filter(|_| is_handshake(&transmit.datagram))
        .and_then(|peer| Some((peer, relay_toward(peer)?)));
    let Some((peer, relay)) = route else {
        return Some(transmit);
    };
    debug!(%peer, %relay, "handshake passed on through a relay");
    let forward = Message::Forward {
        to: peer,
        datagram: transmit.datagram,
    };
    if let Err(e) = endpoint.send(now, relay, forward) {
        warn!(%peer, %relay, error = %e, "cannot pass a handshake on");
    }
    None
}

/// A session with `peer` just came up: while `peer` is reached through a
/// relay, the keepalive that confirms the session to it goes there too.
pub fn confirm(endpoint: &mut Endpoint, now: Time, relay_toward: RelayToward, peer: NodeId) {
    let Some(relay) = relay_toward(peer) else {
        return;
    };
    if let Ok(Some(datagram)) = endpoint.seal(now, peer, &Message::Keepalive) {
        debug!(%peer, %relay, "session confirmed through a relay");
        let _ = endpoint.send(now, relay, Message::Forward { to: peer, datagram });
    }
}

/// A message `sender` sent this node (`local`, of `members`): a
/// [`Message::Forward`] is passed on, a [`Message::Forwarded`] opened as if
/// it had come from its origin's address; anything else is handed back,
/// for the routing core.
pub fn receive(
    endpoint: &mut Endpoint,
    now: Time,
    peers: &BTreeMap<NodeId, SocketAddr>,
    (members, local): (&[NodeId], NodeId),
    sender: NodeId,
    message: Message,
) -> Result<Option<Message>, Reject> {
    match message {
        Message::Forward { to, datagram } => {
            let (to, forwarded) = pass_on(members, local, sender, to, datagram)?;
            debug!(from = %sender, %to, "passing a handshake on");
            endpoint
                .send(now, to, forwarded)
                .map_err(|_| Reject::Malformed)?;
            Ok(None)
        }
        Message::Forwarded { from, datagram } => {
            accept(members, local, sender, from, &datagram)?;
            let addr = *peers.get(&from).ok_or(Reject::UnknownNode)?;
            // A handshake opens to nothing, a keepalive to itself, which
            // confirmed the session on its way; a refusal the endpoint
            // counts.
            let _ = endpoint.open(now, addr, &datagram);
            Ok(None)
        }
        message => Ok(Some(message)),
    }
}

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

/// How long after a peer's last answer to a probe its handshakes still go
/// straight to it, link down or not: a link down for less is more likely
/// the peer's control process restarting (back within a second or two,
/// before its sessions with the relays are) than the path gone, and a
/// session outlives its rekey by a minute.
pub const DIRECT_FIRST: Duration = Duration::from_secs(3);

/// The relay this node reaches `peer` through, at `now`, while its own link
/// to `peer` is not up and has not answered for [`DIRECT_FIRST`] (or ever):
/// its route's.
pub fn relay_toward(node: &Node, now: Time, peer: NodeId) -> Option<NodeId> {
    let probe = node.prober().peer(peer)?;
    let heard_lately = probe
        .last_answer()
        .is_some_and(|at| now < at + DIRECT_FIRST);
    if probe.is_up() || heard_lately {
        return None;
    }
    match node.route(peer)? {
        Hop::Via(relay) => Some(relay),
        Hop::Direct => None,
    }
}

/// The peer whose control port `addr` is (a cookie reply goes to the
/// address an initiation came from).
fn peer_at(peers: &BTreeMap<NodeId, SocketAddr>, addr: SocketAddr) -> Option<NodeId> {
    peers.iter().find(|(_, a)| **a == addr).map(|(id, _)| *id)
}

/// What this node, as a relay, sends for a [`Message::Forward`] from
/// `from` to `to`: the [`Message::Forwarded`] for `to`. Refused: `to` no
/// other member, or a datagram that is no session-layer message.
fn pass_on(
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
fn accept(
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
