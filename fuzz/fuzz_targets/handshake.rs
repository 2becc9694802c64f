//! Every datagram the control port can receive, through the session
//! endpoint: arbitrary bytes, and real handshake and transport messages
//! (an initiation, its response, a cookie reply, a sealed message) altered
//! by the input, so that the parsers behind the MACs and snow's handshake
//! are reached too. No input may panic, and nothing altered may open.
//! Run with `scripts/fuzz handshake SECONDS`.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use detour_common::wire::NodeId;
use detour_control::keys::{PresharedKey, PrivateKey};
use detour_control::message::Message;
use detour_control::session::{Endpoint, Limits, PeerKeys};
use libfuzzer_sys::fuzz_target;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn endpoint(id: NodeId, peer: NodeId, limits: Limits) -> Endpoint {
    let private = |id: NodeId| PrivateKey::from_bytes([id.0 as u8; 32]);
    let keys = PeerKeys {
        id: peer,
        public: private(peer).public_key(),
        psk: PresharedKey::default(),
    };
    Endpoint::new(id, private(id), [keys], u64::from(id.0), limits)
}

/// `real` with the input XORed over it (the input cycled, or cut short).
fn altered(real: &[u8], data: &[u8]) -> Vec<u8> {
    let Some((&len, mask)) = data.split_first() else {
        return real.to_vec();
    };
    let mut out = real.to_vec();
    for (i, byte) in out.iter_mut().enumerate() {
        *byte ^= mask.get(i).copied().unwrap_or(0);
    }
    // Sometimes truncated or padded, by the first byte.
    match len % 4 {
        0 => out.truncate(usize::from(len)),
        1 => out.extend_from_slice(mask),
        _ => {}
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let from: SocketAddr = "192.0.2.1:6082".parse().unwrap();
    let now = Duration::from_secs(1);
    let mut b = endpoint(B, A, Limits::default());
    let _ = b.open(now, from, data);
    // The first byte picks the real message to alter (each costs a
    // handshake or two, so one per input keeps the rate up).
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let mut a = endpoint(A, B, Limits::default());
    a.send(now, B, Message::RowAck { version: 7 }).unwrap();
    let initiation = a.poll_transmit().unwrap().datagram;
    match pick % 4 {
        0 => {
            let forged = altered(&initiation, data);
            let answered = b.open(now, from, &forged).is_ok() && b.poll_transmit().is_some();
            assert!(forged == initiation || !answered, "an altered initiation was answered");
        }
        1 => {
            b.open(now, from, &initiation).unwrap();
            let response = b.poll_transmit().unwrap().datagram;
            let forged = altered(&response, data);
            let opened = a.open(now, from, &forged);
            assert!(forged == response || opened.is_err(), "an altered response was taken");
        }
        2 => {
            b.open(now, from, &initiation).unwrap();
            let response = b.poll_transmit().unwrap().datagram;
            a.open(now, from, &response).unwrap();
            let sealed = a.poll_transmit().unwrap().datagram;
            let forged = altered(&sealed, data);
            let opened = b.open(now, from, &forged);
            assert!(forged == sealed || opened.is_err(), "an altered message opened");
        }
        _ => {
            // A cookie reply, from a responder always under load.
            let loaded = Limits {
                handshakes_per_second: 0,
                ..Limits::default()
            };
            let mut busy = endpoint(B, A, loaded);
            let _ = busy.open(now, from, &initiation);
            if let Some(reply) = busy.poll_transmit() {
                let _ = a.open(now, from, &altered(&reply.datagram, data));
            }
        }
    }
});
