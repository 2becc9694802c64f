//! The data keys the control process is to hand the dataplane, per peer:
//! what it seals with and what it opens with.
//!
//! Key bytes are to travel as base64 in the install request and nowhere
//! else: `Debug` prints none, and the bytes are zeroized when dropped.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::wire::NodeId;

/// The AEAD of overlay data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cipher {
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
    #[serde(rename = "chacha20-poly1305")]
    Chacha20Poly1305,
}

impl Cipher {
    /// Whether this CPU has the instructions that make AES-GCM fast (and
    /// constant-time): AES and carry-less multiplication. Where it does
    /// not, ChaCha20-Poly1305 is the faster and the safer.
    pub fn aes_in_hardware() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }
}

/// 32 secret bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn new(bytes: [u8; 32]) -> SecretKey {
        SecretKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// Equal when every byte is, compared without an early exit.
impl PartialEq for SecretKey {
    fn eq(&self, other: &SecretKey) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl Eq for SecretKey {}

impl Serialize for SecretKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let text =
            zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SecretKey, D::Error> {
        use base64::Engine;
        let text = zeroize::Zeroizing::new(String::deserialize(d)?);
        let bytes = zeroize::Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map_err(|_| serde::de::Error::custom("a key is 32 bytes in base64"))?,
        );
        let key: [u8; 32] = bytes[..]
            .try_into()
            .map_err(|_| serde::de::Error::custom("a key is 32 bytes in base64"))?;
        Ok(SecretKey(key))
    }
}

/// A key and the id frames under it carry (the receiver's index of the
/// session: never 0, which names no key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    pub id: u32,
    pub cipher: Cipher,
    pub key: SecretKey,
}

/// The keys of the sessions with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionKeys {
    pub peer: NodeId,
    /// What frames to the peer are sealed under: its newest confirmed
    /// session's; none while there is no session.
    #[serde(default)]
    pub tx: Option<KeySpec>,
    /// What frames from the peer may be sealed under: every session still
    /// open, newest last.
    #[serde(default)]
    pub rx: Vec<KeySpec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_out_as_base64_and_never_in_debug() {
        let spec = KeySpec {
            id: 9,
            cipher: Cipher::Aes256Gcm,
            key: SecretKey::new([0xab; 32]),
        };
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("q6urq6ur"), "{json}");
        assert_eq!(serde_json::from_str::<KeySpec>(&json).unwrap(), spec);
        assert!(!format!("{spec:?}").contains("171"));
        assert!(!format!("{spec:?}").to_lowercase().contains("ab, ab"));
        for bad in [
            r#"{"id":1,"cipher":"aes-256-gcm","key":"q6ur"}"#,
            r#"{"id":1,"cipher":"aes-256-gcm","key":"!!"}"#,
        ] {
            assert!(serde_json::from_str::<KeySpec>(bad).is_err(), "{bad}");
        }
    }
}
