//! The control-message decoder over arbitrary datagrams, and over arbitrary
//! bodies sealed with the right key, so that the body reader behind the MAC
//! is reached too. No input may panic; what decodes must encode back to an
//! equal message. Run with `scripts/fuzz control_message SECONDS`.
#![no_main]

use detour_common::wire::NodeId;
use detour_control::message::{MAC_LEN, OverlayKey, decode, encode};
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: [u8; OverlayKey::LEN] = [7; OverlayKey::LEN];
const LOCAL: NodeId = NodeId(1);

fuzz_target!(|data: &[u8]| {
    let key = OverlayKey::from_bytes(KEY);
    let _ = decode(&key, LOCAL, data);

    // The same bytes as the signed part of a datagram, with its MAC.
    let mut mac = Hmac::<Sha256>::new_from_slice(&KEY).unwrap();
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut sealed = data.to_vec();
    sealed.extend_from_slice(&tag[..MAC_LEN]);
    if let Ok(authenticated) = decode(&key, LOCAL, &sealed) {
        let (header, message) = authenticated.into_parts();
        let mut again = Vec::new();
        encode(&key, &header, &message, &mut again).expect("a decoded message encodes");
        let (header2, message2) = decode(&key, LOCAL, &again)
            .expect("re-encoded decodes")
            .into_parts();
        assert_eq!((header2, message2), (header, message));
    }
});
