//! The AEAD of overlay data, from ring.
//!
//! AES-256-GCM where both ends have AES instructions, ChaCha20-Poly1305
//! otherwise (the control process agrees the cipher per session, from
//! what each end says of its CPU: [`Cipher::aes_in_hardware`]). The nonce is the packet's 64-bit counter behind
//! four zero bytes: one key per direction and session, so a counter never
//! repeats under a key (the sender takes each once, [`super::TxKey`]).
//!
//! ## ring or aws-lc-rs
//!
//! Both are audited and have in-place APIs with a separate tag. Measured on
//! the 2-core AMD EPYC VM this project builds on (AES-NI, VAES, PCLMULQDQ,
//! AVX2), ring 0.17.14 against aws-lc-rs 1.19.0 (aws-lc-sys 0.47.0), a
//! release build of a scratch program sealing and opening one buffer
//! 10^6 times, the best of 5 runs, ns per packet:
//!
//! ```text
//!                               64 B          512 B         1400 B
//!                           seal   open   seal   open    seal   open
//! AES-256-GCM      ring      141    134    177    289     377    505
//!                  aws-lc    225    181    467    411     756    625
//! ChaCha20-Poly1305 ring     218    224    461    478    1005   1168
//!                  aws-lc    238    214    541    489     958   1142
//! ```
//!
//! ring is ahead on AES-GCM at every size and level with aws-lc-rs on
//! ChaCha20-Poly1305; it also builds in seconds where aws-lc-sys builds a C
//! library. ring it is. Neither zeroizes its expanded key schedule on drop
//! (ring documents no zeroization); the raw key bytes detour holds are
//! zeroized ([`detour_common::api::SecretKey`]).

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

pub use detour_common::api::Cipher;

/// The authentication tag after a sealed inner packet.
pub const AEAD_TAG_LEN: usize = 16;
/// What a tag covers besides the packet: the GENEVE header and detour
/// option less what relays change (hop limit, flags).
pub use detour_common::wire::geneve::ASSOCIATED_DATA_LEN;

/// The length of a data key.
pub const KEY_LEN: usize = 32;

/// One direction's key of one session.
pub struct DataKey(LessSafeKey);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({:?}, ..)", self.0.algorithm())
    }
}

/// The tag did not match: forged, damaged, or under another key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

impl DataKey {
    pub fn new(cipher: Cipher, key: &[u8; KEY_LEN]) -> DataKey {
        let algorithm = match cipher {
            Cipher::Aes256Gcm => &AES_256_GCM,
            Cipher::Chacha20Poly1305 => &CHACHA20_POLY1305,
        };
        // Both take 32-byte keys: cannot fail.
        let unbound = UnboundKey::new(algorithm, key).expect("a 32-byte key");
        DataKey(LessSafeKey::new(unbound))
    }

    /// Encrypts `in_out` in place; the tag, to append.
    #[inline]
    pub fn seal(
        &self,
        counter: u64,
        aad: &[u8; ASSOCIATED_DATA_LEN],
        in_out: &mut [u8],
    ) -> [u8; AEAD_TAG_LEN] {
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out)
            // ring refuses only inputs over 2^36 bytes or so.
            .expect("a frame is small");
        let mut out = [0; AEAD_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Decrypts `in_out` (ciphertext, then the tag) in place, if the tag is
    /// right; the plaintext is `in_out` less the tag. On a wrong tag the
    /// bytes are left undefined (ring overwrites them): the frame is
    /// dropped anyway.
    #[inline]
    pub fn open(
        &self,
        counter: u64,
        aad: &[u8; ASSOCIATED_DATA_LEN],
        in_out: &mut [u8],
    ) -> Result<(), AuthFailed> {
        self.0
            .open_in_place(nonce(counter), Aad::from(aad), in_out)
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }
}

#[inline]
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_seals_the_other_opens_and_nothing_else() {
        for cipher in [Cipher::Aes256Gcm, Cipher::Chacha20Poly1305] {
            let key = DataKey::new(cipher, &[7; KEY_LEN]);
            let aad = [1; ASSOCIATED_DATA_LEN];
            let mut data = b"inner packet".to_vec();
            let tag = key.seal(5, &aad, &mut data);
            assert_ne!(&data[..], b"inner packet");
            data.extend_from_slice(&tag);
            let sealed = data.clone();
            assert_eq!(key.open(5, &aad, &mut data), Ok(()));
            assert_eq!(&data[..12], b"inner packet");
            // Another counter, other associated data, another key, a flipped
            // bit anywhere: refused.
            let mut d = sealed.clone();
            assert_eq!(key.open(6, &aad, &mut d), Err(AuthFailed));
            let mut other = aad;
            other[3] ^= 1;
            let mut d = sealed.clone();
            assert_eq!(key.open(5, &other, &mut d), Err(AuthFailed));
            let mut d = sealed.clone();
            let wrong = DataKey::new(cipher, &[8; KEY_LEN]);
            assert_eq!(wrong.open(5, &aad, &mut d), Err(AuthFailed));
            for bit in 0..sealed.len() * 8 {
                let mut d = sealed.clone();
                d[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(key.open(5, &aad, &mut d), Err(AuthFailed), "bit {bit}");
            }
        }
    }
}
