//! The endpoint against every forged, replayed, truncated and stale thing
//! a datagram can be, and across handshakes, restarts and rekeys.

use super::test_peers::{addr, keys, private};
use super::*;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn secs(n: u64) -> Time {
    Duration::from_secs(n)
}

/// Two nodes, A and B, and everything that went between them.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    /// Every datagram sent, by sender, in order.
    wire: Vec<(NodeId, Vec<u8>)>,
    /// What each delivered to its node.
    delivered: Vec<(NodeId, Message)>,
    incarnations: u64,
}

impl Pair {
    fn new() -> Pair {
        Pair::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> Pair {
        Pair {
            a: Endpoint::new(A, private(A), [keys(B)], 1, limits.clone()),
            b: Endpoint::new(B, private(B), [keys(A)], 2, limits),
            wire: Vec::new(),
            delivered: Vec::new(),
            incarnations: 2,
        }
    }

    fn end(&mut self, id: NodeId) -> &mut Endpoint {
        if id == A { &mut self.a } else { &mut self.b }
    }

    /// Restarts `id`: new keys in memory, a new incarnation.
    fn restart(&mut self, id: NodeId) {
        self.incarnations += 1;
        let peer = if id == A { B } else { A };
        *self.end(id) = Endpoint::new(
            id,
            private(id),
            [keys(peer)],
            self.incarnations,
            Limits::default(),
        );
    }

    /// Delivers everything both sides have to send, until both are quiet.
    fn pump(&mut self, now: Time) {
        loop {
            let mut moved = false;
            for from in [A, B] {
                while let Some(t) = self.end(from).poll_transmit() {
                    moved = true;
                    self.wire.push((from, t.datagram.clone()));
                    let to = if from == A { B } else { A };
                    if let Ok(Some(m)) = self.end(to).open(now, addr(from), &t.datagram) {
                        self.delivered.push((to, m.1));
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, now: Time, from: NodeId, seq: u64) {
        let to = if from == A { B } else { A };
        self.end(from)
            .send(now, to, Message::RowAck { version: seq })
            .unwrap();
        self.pump(now);
    }

    /// The transport datagrams `from` sent.
    fn transports(&self, from: NodeId) -> Vec<Vec<u8>> {
        self.wire
            .iter()
            .filter(|(f, d)| *f == from && d[3] == TRANSPORT)
            .map(|(_, d)| d.clone())
            .collect()
    }
}

/// The numbers of the messages delivered at `at` (row acknowledgements:
/// unlike probes, they wait for a session).
fn probes(delivered: &[(NodeId, Message)], at: NodeId) -> Vec<u64> {
    delivered
        .iter()
        .filter(|(to, _)| *to == at)
        .filter_map(|(_, m)| match m {
            Message::RowAck { version: seq } => Some(*seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_message_waits_for_the_handshake_and_then_goes() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    assert_eq!(probes(&pair.delivered, B), [1]);
    let kinds: Vec<u8> = pair.wire.iter().map(|(_, d)| d[3]).collect();
    assert_eq!(kinds, [INITIATION, RESPONSE, TRANSPORT]);
    assert_eq!(pair.wire[0].1.len(), INITIATION_LEN);
    assert_eq!((INITIATION_LEN, RESPONSE_LEN), (145, 101));
    // A probe or an acknowledgement is 41 bytes sealed.
    assert_eq!(pair.wire[2].1.len(), 41);
    // B answers on the session A started: no new handshake.
    pair.send(secs(0), B, 2);
    assert_eq!(probes(&pair.delivered, A), [2]);
    assert_eq!(pair.wire.len(), 4);
    assert_eq!(pair.a.counters().sessions_established, 1);
    assert_eq!(pair.b.counters().sessions_established, 1);
}

#[test]
fn both_sides_starting_at_once_both_get_sessions() {
    let mut pair = Pair::new();
    pair.a
        .send(secs(0), B, Message::RowAck { version: 1 })
        .unwrap();
    pair.b
        .send(secs(0), A, Message::RowAck { version: 2 })
        .unwrap();
    pair.pump(secs(0));
    assert_eq!(probes(&pair.delivered, B), [1]);
    assert_eq!(probes(&pair.delivered, A), [2]);
    for seq in 3..10 {
        pair.send(secs(1), A, seq);
        pair.send(secs(1), B, seq);
    }
    assert_eq!(probes(&pair.delivered, B).len(), 8);
    assert_eq!(pair.a.rejects().total() + pair.b.rejects().total(), 0);
}

#[test]
fn a_probe_without_a_session_is_not_held() {
    let mut pair = Pair::new();
    pair.a.send(secs(0), B, Message::Probe { seq: 1 }).unwrap();
    pair.pump(secs(0));
    assert!(pair.delivered.is_empty());
    assert_eq!(pair.a.counters().probes_unsent, 1);
    pair.a.send(secs(0), B, Message::Probe { seq: 2 }).unwrap();
    pair.pump(secs(0));
    assert_eq!(pair.delivered, [(B, Message::Probe { seq: 2 })]);
}

#[test]
fn held_messages_are_bounded() {
    let mut pair = Pair::new();
    for seq in 0..(MAX_HELD as u64 + 5) {
        pair.a
            .send(secs(0), B, Message::RowAck { version: seq })
            .unwrap();
    }
    assert_eq!(pair.a.counters().messages_dropped, 5);
    pair.pump(secs(0));
    let got = probes(&pair.delivered, B);
    assert_eq!(
        got,
        (5..MAX_HELD as u64 + 5).collect::<Vec<_>>(),
        "the newest"
    );
}

#[test]
fn forged_altered_replayed_and_truncated_messages_change_nothing() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    pair.send(secs(0), A, 2);
    let captured = pair.transports(A);
    let delivered = pair.delivered.len();

    // Replayed, each of them.
    for datagram in &captured {
        assert_eq!(
            pair.b.open(secs(0), addr(A), datagram),
            Err(Reject::Replayed)
        );
    }
    // Altered: every bit of a real message flipped in turn.
    let real = captured[1].clone();
    for bit in 0..real.len() * 8 {
        let mut flipped = real.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let got = pair
            .b
            .open(secs(0), addr(A), &flipped)
            .map(|_| ())
            .unwrap_err();
        let expected: &[Reject] = match bit / 8 {
            0 | 1 | 3 => &[Reject::Malformed],
            2 => &[Reject::UnknownVersion],
            4..=7 => &[Reject::UnknownSession],
            // A counter moved: new to the window, but the tag fails.
            _ => &[Reject::BadMac, Reject::Replayed],
        };
        assert!(expected.contains(&got), "bit {bit}: {got:?}");
    }
    // Truncated at every length, and padded.
    for len in 0..real.len() {
        let got = pair.b.open(secs(0), addr(A), &real[..len]).unwrap_err();
        assert!(
            // Long enough for a counter, one already seen: a replay.
            [Reject::Malformed, Reject::Replayed, Reject::UnknownVersion].contains(&got),
            "{len}: {got:?}"
        );
    }
    // Padded, and forged: A's next message, not yet delivered, one byte
    // longer, or with its sealed part made up.
    pair.a
        .send(secs(0), B, Message::RowAck { version: 3 })
        .unwrap();
    let fresh = pair.a.poll_transmit().unwrap().datagram;
    let mut padded = fresh.clone();
    padded.push(0);
    assert_eq!(pair.b.open(secs(0), addr(A), &padded), Err(Reject::BadMac));
    let mut forged = fresh.clone();
    forged[TRANSPORT_HEADER_LEN..].fill(0x5a);
    assert_eq!(pair.b.open(secs(0), addr(A), &forged), Err(Reject::BadMac));
    assert_eq!(pair.delivered.len(), delivered, "nothing reached the node");
    // None of it moved the window: A's real message is taken.
    let (_, message) = pair.b.open(secs(0), addr(A), &fresh).unwrap().unwrap();
    assert_eq!(message, Message::RowAck { version: 3 });
}

#[test]
fn a_message_reordered_within_the_window_is_taken_once() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 0);
    let mut sealed = Vec::new();
    for seq in 1..=5 {
        pair.a
            .send(secs(0), B, Message::RowAck { version: seq })
            .unwrap();
        sealed.push(pair.a.poll_transmit().unwrap().datagram);
    }
    for datagram in sealed.iter().rev().chain(sealed.iter()) {
        if let Ok(Some((_, m))) = pair.b.open(secs(0), addr(A), datagram) {
            pair.delivered.push((B, m));
        }
    }
    assert_eq!(probes(&pair.delivered, B), [0, 5, 4, 3, 2, 1]);
    assert_eq!(pair.b.rejects().get(Reject::Replayed), 5);
}

#[test]
fn after_a_restart_nothing_recorded_before_it_opens() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    pair.send(secs(1), B, 2); // a probe reply, say, captured by an attacker
    let before_a = pair.transports(A);
    let before_b = pair.transports(B);

    // B restarts: whatever A sent it before opens nothing.
    pair.restart(B);
    for datagram in &before_a {
        assert_eq!(
            pair.b.open(secs(2), addr(A), datagram),
            Err(Reject::UnknownSession)
        );
    }
    // A restarts too: B's old reply, replayed at A, keeps nothing up.
    pair.restart(A);
    for datagram in &before_b {
        assert_eq!(
            pair.a.open(secs(2), addr(B), datagram),
            Err(Reject::UnknownSession)
        );
    }
    // Even the old initiation, replayed, gets only an answer that opens
    // no session: A has no such handshake.
    let old_initiation = pair.wire[0].1.clone();
    assert_eq!(pair.b.open(secs(2), addr(A), &old_initiation), Ok(None));
    let answer = pair.b.poll_transmit().unwrap();
    assert_eq!(
        pair.a.open(secs(2), addr(B), &answer.datagram),
        Err(Reject::UnknownSession)
    );
    pair.delivered.clear();
    pair.send(secs(3), A, 7);
    assert_eq!(probes(&pair.delivered, B), [7]);
}

#[test]
fn a_peer_that_restarted_is_reported_and_its_old_sessions_go() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    pair.send(secs(0), B, 2);
    let from_old_b = pair.transports(B);
    pair.restart(B);
    pair.send(secs(1), B, 3);
    let events: Vec<Event> = std::iter::from_fn(|| pair.a.poll_event()).collect();
    assert_eq!(
        events,
        [
            Event::SessionUp(B),
            Event::PeerRestarted(B),
            Event::SessionUp(B)
        ]
    );
    assert_eq!(pair.a.counters().peers_restarted, 1);
    assert_eq!(
        pair.a.open(secs(1), addr(B), &from_old_b[0]),
        Err(Reject::UnknownSession)
    );
    // A rekey is no restart.
    let mut rekeyed = Pair::new();
    rekeyed.send(secs(0), A, 1);
    rekeyed.send(secs(121), A, 2);
    rekeyed.send(secs(121), A, 3);
    assert_eq!(rekeyed.a.counters().sessions_established, 2);
    let events: Vec<Event> = std::iter::from_fn(|| rekeyed.b.poll_event()).collect();
    assert!(!events.contains(&Event::PeerRestarted(A)), "{events:?}");
}

#[test]
fn rekeying_loses_nothing_in_flight() {
    let mut pair = Pair::new();
    // Ten minutes of a probe a second each way. A's probes arrive a
    // second late, so that some are always in flight across a rekey.
    let mut late: Vec<Vec<u8>> = Vec::new();
    for t in 0..=600u64 {
        let now = secs(t);
        for datagram in late.drain(..) {
            if let Ok(Some((_, m))) = pair.b.open(now, addr(A), &datagram) {
                pair.delivered.push((B, m));
            }
        }
        if t == 600 {
            break;
        }
        pair.a.send(now, B, Message::RowAck { version: t }).unwrap();
        pair.b.send(now, A, Message::RowAck { version: t }).unwrap();
        loop {
            let mut moved = false;
            while let Some(tx) = pair.a.poll_transmit() {
                moved = true;
                if tx.datagram[3] == TRANSPORT {
                    late.push(tx.datagram);
                } else if let Ok(Some((_, m))) = pair.b.open(now, addr(A), &tx.datagram) {
                    pair.delivered.push((B, m));
                }
            }
            while let Some(tx) = pair.b.poll_transmit() {
                moved = true;
                if let Ok(Some((_, m))) = pair.a.open(now, addr(B), &tx.datagram) {
                    pair.delivered.push((A, m));
                }
            }
            if !moved {
                break;
            }
        }
    }
    let all: Vec<u64> = (0..600).collect();
    assert_eq!(probes(&pair.delivered, B), all);
    assert_eq!(probes(&pair.delivered, A), all);
    // A rekeys its sessions every 120 s, B those it answered a bit later.
    let (a, b) = (pair.a.counters(), pair.b.counters());
    assert!(a.initiations_sent >= 5, "{a:?}");
    assert!(
        a.sessions_established + b.sessions_established >= 10,
        "{a:?} {b:?}"
    );
    assert_eq!(pair.a.rejects().total() + pair.b.rejects().total(), 0);
}

#[test]
fn a_peer_that_restarted_under_a_new_key_is_still_reported_as_restarted() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    pair.send(secs(0), B, 2);
    while pair.a.poll_event().is_some() {}
    // B restarts with a new key; A's configuration lists it (a reload).
    let new_b = PrivateKey::from_bytes([0x66; 32]);
    pair.b = Endpoint::new(B, new_b.clone(), [keys(A)], 9, Limits::default());
    pair.a.add_peer(PeerKeys {
        id: B,
        public: new_b.public_key(),
        psk: PresharedKey::default(),
    });
    pair.send(secs(1), B, 3);
    let events: Vec<Event> = std::iter::from_fn(|| pair.a.poll_event()).collect();
    assert!(events.contains(&Event::PeerRestarted(B)), "{events:?}");
    // Re-keyed in place (B reloaded, same incarnation): no restart.
    let newer_b = PrivateKey::from_bytes([0x67; 32]);
    pair.b.set_private_key(newer_b.clone());
    pair.a.add_peer(PeerKeys {
        id: B,
        public: newer_b.public_key(),
        psk: PresharedKey::default(),
    });
    pair.send(secs(2), B, 4);
    let events: Vec<Event> = std::iter::from_fn(|| pair.a.poll_event()).collect();
    assert_eq!(events, [Event::SessionUp(B)]);
    assert_eq!(probes(&pair.delivered, A), [2, 3, 4]);
}

#[test]
fn sessions_past_their_age_are_used_for_nothing() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    let old = pair.transports(A)[0].clone();
    // Nothing sent for four minutes: the session is gone at both ends.
    pair.delivered.clear();
    pair.send(secs(240), A, 2);
    assert_eq!(probes(&pair.delivered, B), [2]);
    assert_eq!(pair.a.counters().initiations_sent, 2, "a new handshake");
    assert_eq!(
        pair.b.open(secs(240), addr(A), &old),
        Err(Reject::UnknownSession)
    );
}

#[test]
fn a_handshake_under_a_key_that_is_no_peers_gets_no_answer() {
    let mut pair = Pair::new();
    let mut stranger = Endpoint::new(C, private(C), [keys(B)], 9, Limits::default());
    stranger
        .send(secs(0), B, Message::RowAck { version: 1 })
        .unwrap();
    let initiation = stranger.poll_transmit().unwrap().datagram;
    assert_eq!(
        pair.b.open(secs(0), addr(C), &initiation),
        Err(Reject::UnknownKey)
    );
    assert_eq!(pair.b.poll_transmit(), None, "no reply");
    assert_eq!(pair.b.counters().responses_sent, 0);
}

#[test]
fn an_initiation_without_our_public_key_costs_no_diffie_hellman() {
    let mut pair = Pair::new();
    // C takes A for B: its mac1 is keyed by A's public key.
    let mut confused = Endpoint::new(C, private(C), [keys(A)], 9, Limits::default());
    confused
        .send(secs(0), A, Message::RowAck { version: 1 })
        .unwrap();
    let initiation = confused.poll_transmit().unwrap().datagram;
    assert_eq!(
        pair.b.open(secs(0), addr(C), &initiation),
        Err(Reject::BadMac)
    );
    // Random bytes of the right length and type.
    let mut noise = vec![0xa5u8; INITIATION_LEN];
    noise[..4].copy_from_slice(&[b'd', b't', VERSION, INITIATION]);
    assert_eq!(pair.b.open(secs(0), addr(C), &noise), Err(Reject::BadMac));
    // Ephemeral keys seen are remembered only once past mac1: none here.
    assert!(pair.b.recent_ephemerals.is_empty());
    assert_eq!(pair.b.poll_transmit(), None);
}

#[test]
fn a_replayed_initiation_is_refused_before_any_diffie_hellman() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    let initiation = pair.wire[0].1.clone();
    assert_eq!(
        pair.b.open(secs(1), addr(A), &initiation),
        Err(Reject::Replayed)
    );
    assert_eq!(pair.b.counters().responses_sent, 1);
}

#[test]
fn a_forged_response_does_not_cost_the_real_one() {
    let mut pair = Pair::new();
    pair.a
        .send(secs(0), B, Message::RowAck { version: 1 })
        .unwrap();
    let initiation = pair.a.poll_transmit().unwrap().datagram;
    pair.b.open(secs(0), addr(A), &initiation).unwrap();
    let response = pair.b.poll_transmit().unwrap().datagram;
    // Altered past its MACs (re-MACed, as anyone with A's public key can).
    let mut forged = response.clone();
    forged[20] ^= 1;
    let at = handshake::mac1_at(forged.len());
    let mac1 = handshake::mac(
        MacKey::mac1(&private(A).public_key()).as_bytes(),
        &forged[..at],
    );
    forged[at..at + 16].copy_from_slice(&mac1);
    assert_eq!(pair.a.open(secs(0), addr(B), &forged), Err(Reject::BadMac));
    assert_eq!(pair.a.open(secs(0), addr(B), &response), Ok(None));
    pair.pump(secs(0));
    assert_eq!(probes(&pair.delivered, B), [1]);
}

#[test]
fn under_load_a_handshake_needs_a_cookie_and_then_succeeds() {
    let limits = Limits {
        handshakes_per_second: 1,
        ..Limits::default()
    };
    let mut b = Endpoint::new(B, private(B), [keys(A), keys(C)], 2, limits);
    // C's handshake uses up the second's budget.
    let mut c = Endpoint::new(C, private(C), [keys(B)], 3, Limits::default());
    c.send(secs(0), B, Message::RowAck { version: 1 }).unwrap();
    b.open(secs(0), addr(C), &c.poll_transmit().unwrap().datagram)
        .unwrap();
    assert!(matches!(
        b.poll_transmit(),
        Some(Transmit {
            to: Recipient::Node(C),
            ..
        })
    ));

    let mut a = Endpoint::new(A, private(A), [keys(B)], 1, Limits::default());
    a.send(secs(0), B, Message::RowAck { version: 2 }).unwrap();
    let initiation = a.poll_transmit().unwrap().datagram;
    assert_eq!(b.open(secs(0), addr(A), &initiation), Ok(None));
    let reply = b.poll_transmit().unwrap();
    assert_eq!(reply.to, Recipient::Address(addr(A)));
    assert_eq!(reply.datagram.len(), COOKIE_REPLY_LEN);
    assert_eq!(b.counters().responses_sent, 1, "no handshake for A yet");
    // The cookie is A's only: from another address it does not count, and
    // altered it does not open.
    let mut altered = reply.datagram.clone();
    altered[40] ^= 1;
    assert_eq!(a.open(secs(0), addr(B), &altered), Err(Reject::BadMac));
    assert_eq!(a.open(secs(0), addr(B), &reply.datagram), Ok(None));
    let with_cookie = a.poll_transmit().unwrap().datagram;
    assert_eq!(a.counters().cookies_received, 1);
    let elsewhere = SocketAddr::new(addr(A).ip(), 7000);
    assert_eq!(b.open(secs(0), elsewhere, &with_cookie), Ok(None));
    assert_eq!(b.poll_transmit().unwrap().datagram.len(), COOKIE_REPLY_LEN);
    // From A's address, with the cookie: answered.
    let mut again = Endpoint::new(A, private(A), [keys(B)], 1, Limits::default());
    again.peers.get_mut(&B).unwrap().cookie = a.peers[&B].cookie;
    again
        .send(secs(0), B, Message::RowAck { version: 2 })
        .unwrap();
    let initiation = again.poll_transmit().unwrap().datagram;
    assert_eq!(b.open(secs(0), addr(A), &initiation), Ok(None));
    assert_eq!(b.poll_transmit().unwrap().datagram.len(), RESPONSE_LEN);
}

#[test]
fn a_removed_peer_is_cut_off_and_a_replaced_key_takes_over() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    pair.b.remove_peer(A);
    pair.a
        .send(secs(0), B, Message::RowAck { version: 2 })
        .unwrap();
    let datagram = pair.a.poll_transmit().unwrap().datagram;
    assert_eq!(
        pair.b.open(secs(0), addr(A), &datagram),
        Err(Reject::UnknownSession)
    );
    // A gets a new key; B lists it: A's handshakes under the old key are
    // refused, under the new one taken.
    let new_private = PrivateKey::from_bytes([0x77; 32]);
    pair.b.add_peer(PeerKeys {
        id: A,
        public: new_private.public_key(),
        psk: PresharedKey::default(),
    });
    let mut old_a = Endpoint::new(A, private(A), [keys(B)], 5, Limits::default());
    old_a
        .send(secs(1), B, Message::RowAck { version: 3 })
        .unwrap();
    let old = old_a.poll_transmit().unwrap().datagram;
    assert_eq!(pair.b.open(secs(1), addr(A), &old), Err(Reject::UnknownKey));
    pair.a = Endpoint::new(A, new_private, [keys(B)], 6, Limits::default());
    pair.delivered.clear();
    pair.send(secs(1), A, 4);
    assert_eq!(probes(&pair.delivered, B), [4]);
}

#[test]
fn a_pre_shared_key_must_match() {
    let psk = |byte| PresharedKey::from_base64(&base64_of([byte; 32])).unwrap();
    let mut a = Endpoint::new(
        A,
        private(A),
        [PeerKeys {
            psk: psk(1),
            ..keys(B)
        }],
        1,
        Limits::default(),
    );
    let mut b = Endpoint::new(
        B,
        private(B),
        [PeerKeys {
            psk: psk(2),
            ..keys(A)
        }],
        2,
        Limits::default(),
    );
    a.send(secs(0), B, Message::RowAck { version: 1 }).unwrap();
    b.open(secs(0), addr(A), &a.poll_transmit().unwrap().datagram)
        .unwrap();
    let response = b.poll_transmit().unwrap().datagram;
    assert_eq!(a.open(secs(0), addr(B), &response), Err(Reject::BadMac));
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn other_versions_and_layouts_are_refused() {
    let mut pair = Pair::new();
    let mut v1 = vec![b'd', b't', 1, 1];
    v1.resize(40, 0);
    assert_eq!(
        pair.b.open(secs(0), addr(A), &v1),
        Err(Reject::UnknownVersion)
    );
    // Version 2: the handshake without a data mode.
    let mut v2 = vec![b'd', b't', 2, 1];
    v2.resize(INITIATION_LEN - 1, 0);
    assert_eq!(
        pair.b.open(secs(0), addr(A), &v2),
        Err(Reject::UnknownVersion)
    );
    assert_eq!(
        pair.b.open(secs(0), addr(A), &v1[..3]),
        Err(Reject::UnknownVersion)
    );
    for datagram in [
        &b""[..],
        b"d",
        b"dt",
        b"xx\x02\x04",
        b"dt\x03\x09aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        assert_eq!(
            pair.b.open(secs(0), addr(A), datagram),
            Err(Reject::Malformed),
            "{datagram:?}"
        );
    }
    for kind in [INITIATION, RESPONSE, COOKIE_REPLY] {
        let short = [b'd', b't', VERSION, kind, 0, 0, 0, 0];
        assert_eq!(
            pair.b.open(secs(0), addr(A), &short),
            Err(Reject::Malformed)
        );
    }
    assert_eq!(pair.b.rejects().total(), 11);
}

/// One peer's data keys as `end` would install them.
fn data_keys_for(end: &Endpoint, now: Time, since: Time, peer: NodeId) -> SessionKeys {
    end.data_keys(now, since)
        .expect("encrypting")
        .into_iter()
        .find(|s| s.peer == peer)
        .expect("a peer")
}

#[test]
fn each_session_gives_both_ends_the_same_data_keys_crosswise() {
    let mut pair = Pair::new();
    assert_eq!(data_keys_for(&pair.a, secs(0), secs(0), B).tx, None);
    let epoch = pair.a.keys_epoch();
    pair.send(secs(0), A, 1);
    assert!(pair.a.keys_epoch() > epoch);
    assert_eq!(
        data_keys_for(&pair.a, secs(0), secs(0), B).tx,
        None,
        "not before the peer's dataplane can have it"
    );
    let now = secs(1);
    let a = data_keys_for(&pair.a, now, secs(0), B);
    let b = data_keys_for(&pair.b, now, secs(0), A);
    let (a_tx, b_tx) = (a.tx.clone().unwrap(), b.tx.clone().unwrap());
    assert_eq!(b.rx, std::slice::from_ref(&a_tx), "what A seals, B opens");
    assert_eq!(a.rx, std::slice::from_ref(&b_tx), "and the other way");
    assert_ne!(a_tx.key, b_tx.key, "one key per direction");
    assert_ne!(a_tx.id, 0);
    assert_ne!(b_tx.id, 0);
    let expected = if detour_common::api::Cipher::aes_in_hardware() {
        detour_common::api::Cipher::Aes256Gcm
    } else {
        detour_common::api::Cipher::Chacha20Poly1305
    };
    assert_eq!(a_tx.cipher, expected);
    // Not the control session's own keys: those seal control messages
    // with counters of their own.
    for datagram in pair.transports(A) {
        let sealed = &datagram[TRANSPORT_HEADER_LEN..];
        assert!(!sealed.windows(32).any(|w| w == a_tx.key.as_bytes()));
    }
    // A session from before `since` (the dataplane's restart) seals and
    // opens nothing.
    let later = data_keys_for(&pair.a, now, secs(1), B);
    assert_eq!((later.tx, later.rx.len()), (None, 0));
}

#[test]
fn a_responder_opens_at_once_and_a_new_key_seals_only_after_a_delay() {
    let mut pair = Pair::new();
    pair.send(secs(0), A, 1);
    let first = data_keys_for(&pair.a, secs(1), secs(0), B).tx.unwrap();
    // B starts a new session; A answers it, and opens under it at once.
    pair.b.rekey_all(secs(2));
    pair.pump(secs(2));
    let a = data_keys_for(&pair.a, secs(2), secs(0), B);
    assert_eq!(a.rx.len(), 2, "the old session and the new");
    // B, the initiator, has it confirmed, but seals under the old one for
    // a moment: time for A's dataplane to take the new key.
    let b = data_keys_for(&pair.b, secs(2), secs(0), A);
    assert_eq!(b.tx.unwrap().id, a.rx[0].id);
    let b = data_keys_for(&pair.b, secs(2) + DATA_KEY_SWITCH_DELAY, secs(0), A);
    assert_eq!(b.tx.unwrap().id, a.rx[1].id, "then under the new one");
    assert_eq!(
        data_keys_for(&pair.a, secs(2), secs(0), B).tx.unwrap().id,
        first.id,
        "A has not confirmed it yet"
    );
}

#[test]
fn both_ends_must_agree_on_encryption() {
    let mut pair = Pair::new();
    pair.b.set_encryption(Encryption::None);
    pair.send(secs(0), A, 1);
    assert!(probes(&pair.delivered, B).is_empty(), "no session");
    assert_eq!(pair.b.rejects().get(Reject::EncryptionMismatch), 1);
    assert!(pair.b.data_keys(secs(0), secs(0)).is_none());
    // B starting it: refused by A this time.
    pair.b.rekey_all(secs(5));
    pair.pump(secs(5));
    assert_eq!(pair.a.rejects().get(Reject::EncryptionMismatch), 1);
    // Both without: sessions, and no data keys.
    pair.a.set_encryption(Encryption::None);
    pair.send(secs(10), A, 2);
    assert_eq!(probes(&pair.delivered, B), [1, 2], "what was held, then 2");
    assert_eq!(pair.a.data_keys(secs(10), secs(0)), None);
}
