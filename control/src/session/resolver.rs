//! The primitives snow runs the handshake and the sessions with: snow's
//! own BLAKE2s and random source, and X25519 and ChaCha20-Poly1305 that
//! zeroize their keys.
//!
//! snow 0.10's default resolver keeps private keys and cipher keys in
//! plain arrays that it never clears, so every handshake would leave a
//! copy of the node's private key in freed memory. These two wrap the same
//! audited crates (x25519-dalek, RustCrypto's chacha20poly1305) with
//! [`Zeroizing`] storage and nothing else: Noise's nonce layout (32 zero
//! bits, then the 64-bit counter little-endian) as the specification
//! (section 12.4) and snow write it, checked against snow's own resolver
//! in the tests. The X25519 here also refuses a shared secret of all
//! zeros (a low-order public key), as WireGuard does.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Resolves what the handshake `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`
/// needs; nothing else.
pub(super) struct ZeroizingResolver;

impl CryptoResolver for ZeroizingResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519::default())),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::Blake2s => DefaultResolver.resolve_hash(choice),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::ChaChaPoly => Some(Box::new(ChaChaPoly::default())),
            _ => None,
        }
    }
}

#[derive(Default)]
struct X25519 {
    private: Zeroizing<[u8; KEY_LEN]>,
    public: [u8; KEY_LEN],
}

impl X25519 {
    fn derive_public(&mut self) {
        self.public = x25519_dalek::x25519(*self.private, x25519_dalek::X25519_BASEPOINT_BYTES);
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, private: &[u8]) {
        self.private.copy_from_slice(&private[..KEY_LEN]);
        self.derive_public();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(self.private.as_mut())?;
        self.derive_public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.private.as_ref()
    }

    fn dh(&self, public: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let public: [u8; KEY_LEN] = public
            .get(..KEY_LEN)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(x25519_dalek::x25519(*self.private, public));
        if *shared == [0; KEY_LEN] {
            return Err(snow::Error::Dh);
        }
        out[..KEY_LEN].copy_from_slice(shared.as_ref());
        Ok(())
    }
}

#[derive(Default)]
struct ChaChaPoly {
    key: Zeroizing<[u8; KEY_LEN]>,
}

impl ChaChaPoly {
    /// The cipher for one message; it zeroizes its copy of the key when
    /// dropped.
    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&*self.key).into())
    }
}

fn noise_nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce.into()
}

impl Cipher for ChaChaPoly {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; KEY_LEN]) {
        self.key.copy_from_slice(key);
    }

    fn encrypt(&self, nonce: u64, ad: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        out[..len].copy_from_slice(plaintext);
        let tag = self
            .cipher()
            .encrypt_in_place_detached(&noise_nonce(nonce), ad, &mut out[..len])
            .expect("snow bounds messages below ChaCha20's limit");
        out[len..len + TAG_LEN].copy_from_slice(&tag);
        len + TAG_LEN
    }

    fn decrypt(
        &self,
        nonce: u64,
        ad: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(len);
        let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        out.copy_from_slice(body);
        self.cipher()
            .decrypt_in_place_detached(&noise_nonce(nonce), ad, out, tag.into())
            .map_err(|_| {
                out.fill(0);
                snow::Error::Decrypt
            })?;
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use snow::Builder;

    use super::*;
    use crate::session::handshake::NOISE_PARAMS;

    /// A handshake and transport messages between a peer on this resolver
    /// and one on snow's default resolver: the same bytes both ways.
    #[test]
    fn interoperates_with_snows_own_primitives() {
        let params = || NOISE_PARAMS.parse().unwrap();
        let ours = || Builder::with_resolver(params(), Box::new(ZeroizingResolver));
        let theirs = || Builder::with_resolver(params(), Box::new(DefaultResolver));
        let a = ours().generate_keypair().unwrap();
        let b = theirs().generate_keypair().unwrap();
        let psk = [3u8; 32];
        for ours_initiates in [true, false] {
            let (init_builder, resp_builder, init_keys, resp_keys) = if ours_initiates {
                (ours(), theirs(), &a, &b)
            } else {
                (theirs(), ours(), &b, &a)
            };
            let mut initiator = init_builder
                .local_private_key(&init_keys.private)
                .unwrap()
                .remote_public_key(&resp_keys.public)
                .unwrap()
                .psk(2, &psk)
                .unwrap()
                .build_initiator()
                .unwrap();
            let mut responder = resp_builder
                .local_private_key(&resp_keys.private)
                .unwrap()
                .psk(2, &psk)
                .unwrap()
                .build_responder()
                .unwrap();
            let (mut m, mut p) = ([0u8; 256], [0u8; 256]);
            let n = initiator.write_message(b"hello", &mut m).unwrap();
            let got = responder.read_message(&m[..n], &mut p).unwrap();
            assert_eq!(&p[..got], b"hello");
            assert_eq!(responder.get_remote_static(), Some(&init_keys.public[..]));
            let n = responder.write_message(b"back", &mut m).unwrap();
            let got = initiator.read_message(&m[..n], &mut p).unwrap();
            assert_eq!(&p[..got], b"back");
            let i = initiator.into_stateless_transport_mode().unwrap();
            let r = responder.into_stateless_transport_mode().unwrap();
            for counter in [0, 1, 7, u64::MAX - 1] {
                let n = i.write_message(counter, b"probe", &mut m).unwrap();
                let got = r.read_message(counter, &m[..n], &mut p).unwrap();
                assert_eq!(&p[..got], b"probe");
                assert!(r.read_message(counter + 1, &m[..n], &mut p).is_err());
                let n = r.write_message(counter, b"reply", &mut m).unwrap();
                assert_eq!(i.read_message(counter, &m[..n], &mut p).unwrap(), 5);
            }
        }
    }

    #[test]
    fn a_low_order_public_key_is_refused() {
        let mut dh = X25519::default();
        dh.set(&[7; 32]);
        let mut out = [0u8; 32];
        assert!(dh.dh(&[0; 32], &mut out).is_err());
        assert!(dh.dh(&[1; 32], &mut out).is_ok());
    }
}
