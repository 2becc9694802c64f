//! The control-message decoder (the plaintext inside a session's sealed
//! message) over arbitrary bytes. No input may panic; what decodes must
//! encode back to the same bytes. Run with `scripts/fuzz control_message
//! SECONDS`.
#![no_main]

use detour_control::message::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(data) {
        let mut again = Vec::new();
        encode(&message, &mut again).expect("a decoded message encodes");
        assert_eq!(decode(&again).expect("re-encoded decodes"), message);
    }
});
