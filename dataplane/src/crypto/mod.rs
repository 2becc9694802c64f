//! End-to-end encryption of overlay data: the AEAD the workers will seal
//! and open inner packets with ([`aead`]), the replay window the workers
//! of one node share ([`window`]), and the keys per peer the control
//! process installs ([`keys`]).
//!
//! Not on the forwarding path yet: the wire format's key id and counter,
//! the rewrite and the control process's data keys come next (issue 23).

pub mod aead;
pub mod keys;
pub mod window;

pub use aead::{Cipher, DataKey};
pub use keys::{KeyTable, Opened, RxKey, TxKey};
pub use window::ReplayWindow;
