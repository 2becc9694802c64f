//! The keys of overlay data: one pair per session, derived from the same
//! handshake as the session's control keys, and handed to the dataplane
//! (docs/security.md, "Overlay data").
//!
//! Each handshake's payload says, besides the incarnation, what its sender
//! does with data ([`DataMode`], one byte): whether it encrypts, and
//! whether its CPU has AES instructions. Both ends must encrypt or both
//! not ([`Reject::EncryptionMismatch`] otherwise); they use AES-256-GCM
//! when both have AES instructions, ChaCha20-Poly1305 when either lacks
//! them.
//!
//! The keys come from the handshake's final chaining key, as Noise's
//! `Split()` gives it (snow's raw split: the two 32-byte keys the control
//! transport itself is keyed from), each put through keyed BLAKE2s-256
//! with a label of its own. So the data keys are independent of the
//! control keys (no nonce of one can meet the other's), one per
//! direction, and new with every handshake; nothing but the two ends of
//! the session can compute them.

use blake2::Blake2sMac256;
use blake2::digest::{FixedOutput, KeyInit, Update};
use detour_common::api::{Cipher, SecretKey};
use snow::HandshakeState;
use zeroize::Zeroizing;

use crate::message::Reject;

/// Whether overlay data is encrypted: `encryption` in control.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Sealed end to end between the two sites' gateways (the default).
    #[default]
    Aead,
    /// In the clear: only where the underlay is already protected.
    None,
}

impl Encryption {
    pub fn name(self) -> &'static str {
        match self {
            Encryption::Aead => "aead",
            Encryption::None => "none",
        }
    }
}

/// What one end of a handshake says of its overlay data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataMode {
    pub encrypted: bool,
    /// Its CPU has AES instructions ([`Cipher::aes_in_hardware`]).
    pub aes: bool,
}

const ENCRYPTED: u8 = 0x01;
const AES: u8 = 0x02;

impl DataMode {
    /// This node's, under `encryption`.
    pub fn local(encryption: Encryption) -> DataMode {
        DataMode {
            encrypted: encryption == Encryption::Aead,
            aes: Cipher::aes_in_hardware(),
        }
    }

    pub fn to_byte(self) -> u8 {
        (if self.encrypted { ENCRYPTED } else { 0 }) | (if self.aes { AES } else { 0 })
    }

    /// The byte a peer sent; bits this version does not know are refused,
    /// so that a later meaning is never misread.
    pub fn from_byte(byte: u8) -> Result<DataMode, Reject> {
        if byte & !(ENCRYPTED | AES) != 0 {
            return Err(Reject::Malformed);
        }
        Ok(DataMode {
            encrypted: byte & ENCRYPTED != 0,
            aes: byte & AES != 0,
        })
    }

    /// The cipher this end and `peer` use, `None` when neither encrypts.
    pub fn agree(self, peer: DataMode) -> Result<Option<Cipher>, Reject> {
        match (self.encrypted, peer.encrypted) {
            (false, false) => Ok(None),
            (true, true) if self.aes && peer.aes => Ok(Some(Cipher::Aes256Gcm)),
            (true, true) => Ok(Some(Cipher::Chacha20Poly1305)),
            _ => Err(Reject::EncryptionMismatch),
        }
    }
}

/// One session's data keys, as one end holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeys {
    pub cipher: Cipher,
    /// What this end seals with.
    pub tx: SecretKey,
    /// What this end opens with.
    pub rx: SecretKey,
}

const INITIATOR_TO_RESPONDER: &[u8] = b"detour data i->r";
const RESPONDER_TO_INITIATOR: &[u8] = b"detour data r->i";

impl DataKeys {
    /// The keys of the session whose handshake `state` just completed.
    pub fn derive(state: &mut HandshakeState, cipher: Cipher) -> DataKeys {
        let (i2r, r2i) = state.dangerously_get_raw_split();
        let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
        let i2r = prf(&i2r, INITIATOR_TO_RESPONDER);
        let r2i = prf(&r2i, RESPONDER_TO_INITIATOR);
        let (tx, rx) = if state.is_initiator() {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        DataKeys { cipher, tx, rx }
    }
}

/// Keyed BLAKE2s-256 of `label` under `key`.
fn prf(key: &[u8; 32], label: &[u8]) -> SecretKey {
    let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(key).expect("a 32-byte key");
    Update::update(&mut mac, label);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize_fixed());
    SecretKey::new(*out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_agree_on_a_cipher_or_refuse() {
        let mode = |encrypted, aes| DataMode { encrypted, aes };
        assert_eq!(
            mode(true, true).agree(mode(true, true)),
            Ok(Some(Cipher::Aes256Gcm))
        );
        assert_eq!(
            mode(true, true).agree(mode(true, false)),
            Ok(Some(Cipher::Chacha20Poly1305)),
            "one end without AES instructions"
        );
        assert_eq!(mode(false, true).agree(mode(false, false)), Ok(None));
        assert_eq!(
            mode(true, true).agree(mode(false, true)),
            Err(Reject::EncryptionMismatch)
        );
        for byte in 0..4 {
            assert_eq!(DataMode::from_byte(byte).unwrap().to_byte(), byte);
        }
        assert_eq!(DataMode::from_byte(0x04), Err(Reject::Malformed));
    }
}
