//! Node identities: an X25519 key pair per node, written as `wg genkey`
//! and `wg pubkey` write theirs (32 bytes, standard base64 with padding,
//! 44 characters), and the optional pre-shared key of a pair of peers
//! (WireGuard's PSK: mixed into the handshake, so that recorded traffic
//! stays safe from a future quantum computer as long as the PSK does).
//!
//! Private and pre-shared keys are zeroized when dropped, never shown by
//! `Debug`, and leave this module only as bytes for the handshake.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// The length of every key here.
pub const KEY_LEN: usize = 32;

/// A node's private key: its identity in the overlay.
#[derive(Clone)]
pub struct PrivateKey(StaticSecret);

impl PrivateKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<PrivateKey, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(bytes.as_mut())?;
        Ok(PrivateKey::from_bytes(*bytes))
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PrivateKey {
        // Clamped at each use (RFC 7748), as `wg` leaves it to the curve.
        PrivateKey(StaticSecret::from(bytes))
    }

    /// The key from a key file's text (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<PrivateKey, KeyError> {
        Ok(PrivateKey::from_bytes(*decode(text)?))
    }

    /// The key as a key file holds it, with a final newline.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(STANDARD.encode(self.0.as_bytes()));
        text.push('\n');
        text
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw bytes, for the handshake only.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// A node's public key: what its peers' configurations name it by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<PublicKey, KeyError> {
        Ok(PublicKey(*decode(text)?))
    }
}

/// A pre-shared key of two peers; all zeros when none is configured, as
/// in WireGuard.
#[derive(Clone, Default)]
pub struct PresharedKey(Zeroizing<[u8; KEY_LEN]>);

impl PresharedKey {
    pub fn from_base64(text: &str) -> Result<PresharedKey, KeyError> {
        Ok(PresharedKey(decode(text)?))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

/// Why a text is not a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "not a key: a key is 32 bytes in base64 (44 characters, as `detourctl genkey` or `wg genkey` writes it)"
    )]
    NotBase64,
    #[error("a key is 32 bytes, this base64 holds {0}")]
    Length(usize),
}

fn decode(text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let mut bytes = Zeroizing::new([0u8; KEY_LEN + 3]);
    let len = STANDARD
        .decode_slice(text.trim().as_bytes(), bytes.as_mut())
        .map_err(|e| match e {
            base64::DecodeSliceError::OutputSliceTooSmall => KeyError::Length(KEY_LEN + 1),
            base64::DecodeSliceError::DecodeError(_) => KeyError::NotBase64,
        })?;
    if len != KEY_LEN {
        return Err(KeyError::Length(len));
    }
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    key.copy_from_slice(&bytes[..KEY_LEN]);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_wireguards_encoding() {
        // RFC 7748, section 6.1: Alice's private key and its public key.
        let private = PrivateKey::from_bytes(hex(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let public = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(private.public_key(), PublicKey(public));
        let text = private.to_base64();
        assert_eq!(
            text.as_str(),
            "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n"
        );
        assert_eq!(
            PrivateKey::from_base64(&text).unwrap().public_key().0,
            public
        );
        let shown = private.public_key().to_string();
        assert_eq!(shown, "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert_eq!(shown.parse::<PublicKey>(), Ok(PublicKey(public)));
    }

    #[test]
    fn secrets_never_show() {
        let private = PrivateKey::generate().unwrap();
        assert_eq!(format!("{private:?}"), "PrivateKey(..)");
        let psk = PresharedKey::from_base64(&STANDARD.encode([9u8; 32])).unwrap();
        assert_eq!(format!("{psk:?}"), "PresharedKey(..)");
        assert_ne!(
            PrivateKey::generate().unwrap().public_key(),
            private.public_key()
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        for (text, error) in [
            ("", KeyError::Length(0)),
            ("abcd", KeyError::Length(3)),
            ("not base64 at all!", KeyError::NotBase64),
            (&STANDARD.encode([1u8; 31]), KeyError::Length(31)),
            (&STANDARD.encode([1u8; 33]), KeyError::Length(33)),
            (&STANDARD.encode([1u8; 64]), KeyError::Length(33)),
        ] {
            assert_eq!(text.parse::<PublicKey>(), Err(error), "{text:?}");
            assert_eq!(PrivateKey::from_base64(text).map(|_| ()), Err(error));
        }
        let padded = format!("  {}\n", STANDARD.encode([1u8; 32]));
        assert_eq!(padded.parse::<PublicKey>(), Ok(PublicKey([1; 32])));
    }

    fn hex(text: &str) -> [u8; 32] {
        std::array::from_fn(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
    }
}
