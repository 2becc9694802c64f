//! End-to-end encryption of overlay data: the AEAD the workers seal and
//! open inner packets with ([`aead`]), the replay window the workers of one
//! node share ([`window`]), and the keys per peer the control process
//! installs with the route snapshot ([`keys`]). The rewrite seals on encap
//! and opens on decap (`crate::rewrite`); relays forward ciphertext.

pub mod aead;
pub mod keys;
pub mod window;

pub use aead::{Cipher, DataKey};
pub use keys::{KeyTable, Opened, RxKey, TxKey};
pub use window::ReplayWindow;
