//! Three endpoints, A and B cut off from each other and both with R,
//! driven as the daemon drives them (handshakes for a peer across the cut,
//! and the keepalive that confirms a new session, go through R; everything
//! else across it is lost), until both ends have sessions whose data keys
//! match crosswise.

use std::collections::BTreeMap;
use std::time::Duration;

use detour_common::api::SessionKeys;

use super::*;
use crate::link::Time;
use crate::session::test_peers::{addr, keys, private};
use crate::session::{Encryption, Endpoint, Limits, Recipient};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const R: NodeId = NodeId(3);
const MEMBERS: [NodeId; 3] = [A, B, R];

#[derive(Default)]
struct Counts {
    forwarded: usize,
    lost: usize,
}

struct Overlay {
    ends: BTreeMap<NodeId, Endpoint>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    cut: bool,
    counts: Counts,
}

impl Overlay {
    fn new() -> Overlay {
        let ends = MEMBERS
            .iter()
            .map(|&id| {
                let peers = MEMBERS.iter().filter(|&&p| p != id).map(|&p| keys(p));
                let mut end =
                    Endpoint::new(id, private(id), peers, u64::from(id.0), Limits::default());
                end.set_encryption(Encryption::Aead);
                (id, end)
            })
            .collect();
        Overlay {
            ends,
            addrs: MEMBERS.iter().map(|&id| (id, addr(id))).collect(),
            cut: false,
            counts: Counts::default(),
        }
    }

    fn end(&mut self, id: NodeId) -> &mut Endpoint {
        self.ends.get_mut(&id).expect("a member")
    }

    /// Has `from` send `to` a message (a handshake first, if need be).
    fn send(&mut self, now: Time, from: NodeId, to: NodeId) {
        self.end(from).send(now, to, Message::RowRequest).unwrap();
    }

    /// Delivers everything, through the daemon's own calls ([`divert`],
    /// [`confirm`], [`receive`]), until all are quiet: while cut, A and B
    /// reach each other through R, and what goes straight across is lost.
    fn pump(&mut self, now: Time) {
        let cut = self.cut;
        let across = move |a: NodeId, b: NodeId| cut && [a, b].contains(&A) && [a, b].contains(&B);
        loop {
            let mut moved = false;
            for from in MEMBERS {
                let relay_toward = |peer| across(from, peer).then_some(R);
                while let Some(t) = self.end(from).poll_transmit() {
                    moved = true;
                    let addrs = self.addrs.clone();
                    let Some(t) = divert(self.end(from), now, &addrs, &relay_toward, t) else {
                        continue;
                    };
                    let to = match t.to {
                        Recipient::Node(to) => to,
                        Recipient::Address(a) => peer_at(&self.addrs, a).expect("a peer's"),
                    };
                    if across(from, to) {
                        self.counts.lost += 1;
                    } else {
                        self.deliver(now, from, to, &t.datagram);
                    }
                }
                while let Some(event) = self.end(from).poll_event() {
                    if let crate::session::Event::SessionUp(peer) = event {
                        moved = true;
                        confirm(self.end(from), now, &relay_toward, peer);
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// What the daemon of `to` does with a datagram from `from`.
    fn deliver(&mut self, now: Time, from: NodeId, to: NodeId, datagram: &[u8]) {
        let addrs = self.addrs.clone();
        if let Ok(Some((sender, message))) = self.end(to).open(now, addr(from), datagram) {
            if matches!(message, Message::Forward { .. }) {
                self.counts.forwarded += 1;
            }
            receive(self.end(to), now, &addrs, (&MEMBERS, to), sender, message).unwrap();
        }
    }

    fn data_keys(&self, of: NodeId, peer: NodeId, now: Time) -> SessionKeys {
        self.ends[&of]
            .data_keys(now, Duration::ZERO)
            .expect("encrypting")
            .into_iter()
            .find(|s| s.peer == peer)
            .expect("the peer's keys")
    }
}

#[test]
fn peers_cut_off_from_each_other_handshake_through_a_relay_and_both_can_seal() {
    let mut o = Overlay::new();
    let t0 = Duration::from_secs(1);
    o.send(t0, A, R);
    o.send(t0, B, R);
    o.pump(t0);
    o.cut = true;

    // A's message for B starts a handshake, which goes through R; B's
    // answer to it comes back the same way, and A's keepalive confirms it.
    o.send(t0, A, B);
    o.pump(t0);
    assert_eq!(o.counts.forwarded, 4, "initiation, response, keepalives");
    assert_eq!(
        o.ends[&B].session_info(A).unwrap().sessions,
        1,
        "B took the session"
    );
    // B needs no handshake of its own.
    let t1 = t0 + Duration::from_millis(10);
    o.send(t1, B, A);
    o.pump(t1);
    assert_eq!(o.counts.forwarded, 4, "nothing more went through R");

    // Past the switch delay, each seals to the other under a key the
    // other opens.
    let later = t1 + Duration::from_millis(100);
    for (of, peer) in [(A, B), (B, A)] {
        let tx = o
            .data_keys(of, peer, later)
            .tx
            .expect("a key to seal under");
        let rx = o.data_keys(peer, of, later).rx;
        assert!(
            rx.iter()
                .any(|k| k.id == tx.id && k.key.as_bytes() == tx.key.as_bytes()),
            "{peer} opens what {of} seals"
        );
    }
    // Nothing but handshakes crossed the cut.
    assert!(
        o.counts.lost > 0,
        "the held messages went straight, and were lost"
    );
}

#[test]
fn a_relay_passes_on_only_session_messages_between_other_members() {
    let mut o = Overlay::new();
    o.send(Duration::ZERO, A, B);
    let initiation = o.end(A).poll_transmit().expect("an initiation").datagram;
    assert!(is_handshake(&initiation));
    let (to, message) = pass_on(&MEMBERS, R, A, B, initiation.clone()).unwrap();
    assert_eq!(
        (to, message),
        (
            B,
            Message::Forwarded {
                from: A,
                datagram: initiation.clone()
            }
        )
    );
    // Not to itself, back to the sender or to a stranger.
    for to in [R, A, NodeId(9)] {
        assert_eq!(
            pass_on(&MEMBERS, R, A, to, initiation.clone()),
            Err(Reject::UnknownNode),
            "to {to}"
        );
    }
    // A transport message (the keepalive that confirms a session) is
    // passed on, but a node sends none through a relay on its own: a probe
    // passed on would measure the relayed path.
    let mut transport = initiation.clone();
    transport[3] = crate::session::TRANSPORT;
    assert!(pass_on(&MEMBERS, R, A, B, transport.clone()).is_ok());
    assert!(!is_handshake(&transport));
    // Garbage, another version, too long: refused.
    let mut other_version = initiation.clone();
    other_version[2] = VERSION + 1;
    for datagram in [vec![0; 40], other_version, vec![0; MAX_FORWARDED_LEN + 1]] {
        assert_eq!(
            pass_on(&MEMBERS, R, A, B, datagram.clone()),
            Err(Reject::Malformed)
        );
        assert_eq!(accept(&MEMBERS, B, R, A, &datagram), Err(Reject::Malformed));
    }
    // A forwarded datagram names another member as its origin: not this
    // node, not the relay, no stranger.
    assert_eq!(accept(&MEMBERS, B, R, A, &initiation), Ok(()));
    for origin in [B, R, NodeId(9)] {
        assert_eq!(
            accept(&MEMBERS, B, R, origin, &initiation),
            Err(Reject::UnknownNode),
            "from {origin}"
        );
    }
}

#[test]
fn a_forged_handshake_passed_on_opens_nothing() {
    let mut o = Overlay::new();
    o.send(Duration::ZERO, A, B);
    let mut initiation = o.end(A).poll_transmit().expect("an initiation").datagram;
    // A relay that flips a bit of the sealed static key: mac1 no longer
    // matches, no session.
    initiation[40] ^= 1;
    let b = o.end(B);
    assert_eq!(
        b.open(Duration::ZERO, addr(A), &initiation),
        Err(Reject::BadMac)
    );
    assert!(b.poll_transmit().is_none(), "no response");
}
