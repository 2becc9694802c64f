//! Cookies, for a responder under load (WireGuard's, section 5.4.7 of its
//! paper): instead of answering an initiation, which costs four
//! Diffie-Hellman operations, a loaded responder answers with a cookie
//! reply, a MAC of the initiator's address under a secret that changes
//! every two minutes, sealed so that only the initiator of that
//! initiation can read it. The initiator's next initiation carries `mac2`,
//! a MAC under the cookie, which proves that it receives at its address:
//! a flood from spoofed addresses is then answered by cookie replies only,
//! and a flood from a real address can be limited per address.
//!
//! ```text
//! cookie reply  "dt" 2 | 3 | receiver index | nonce | XChaCha20-Poly1305(cookie) | tag
//!                   3     1        4            24            16                   16  = 64
//! ```
//!
//! The reply's key is BLAKE2s("cookie--" ‖ the responder's public key),
//! its associated data the `mac1` of the initiation it answers.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use zeroize::Zeroizing;

use super::handshake::{MAC_LEN, MacKey, PREFIX_LEN, mac};
use super::{MAGIC, VERSION};
use crate::keys::PublicKey;
use crate::link::Time;
use crate::message::Reject;

pub const COOKIE_REPLY: u8 = 3;
const NONCE_LEN: usize = 24;
pub const COOKIE_REPLY_LEN: usize = PREFIX_LEN + 4 + NONCE_LEN + MAC_LEN + MAC_LEN;
/// How long a cookie secret, and so a cookie, lives.
pub const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

pub(super) fn cookie_key(public: &PublicKey) -> MacKey {
    MacKey::new(b"cookie--", public)
}

/// The responder's side: the secret, and the key its replies are sealed
/// under.
pub(super) struct CookieJar {
    secret: Zeroizing<[u8; 32]>,
    born: Option<Time>,
    key: MacKey,
}

impl CookieJar {
    pub fn new(public: &PublicKey) -> CookieJar {
        CookieJar {
            secret: Zeroizing::new([0; 32]),
            born: None,
            key: cookie_key(public),
        }
    }

    /// The cookie of `source` at `now`, drawing a new secret when the last
    /// is two minutes old.
    fn cookie(&mut self, now: Time, source: SocketAddr) -> [u8; MAC_LEN] {
        if self.born.is_none_or(|born| now >= born + COOKIE_LIFETIME) {
            getrandom::fill(self.secret.as_mut()).expect("the OS random source");
            self.born = Some(now);
        }
        let mut address = [0u8; 18];
        let ip = match source.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        address[..16].copy_from_slice(&ip);
        address[16..].copy_from_slice(&source.port().to_be_bytes());
        mac(self.secret.as_ref(), &address)
    }

    /// Whether an initiation's `mac2` is the cookie of its source.
    pub fn mac2_ok(&mut self, now: Time, source: SocketAddr, initiation: &[u8]) -> bool {
        let cookie = self.cookie(now, source);
        super::handshake::mac2_ok(&cookie, initiation)
    }

    /// The reply to an initiation from `source` with index
    /// `receiver_index` and `mac1`.
    pub fn reply(
        &mut self,
        now: Time,
        source: SocketAddr,
        receiver_index: u32,
        mac1: &[u8; MAC_LEN],
    ) -> [u8; COOKIE_REPLY_LEN] {
        let mut cookie = self.cookie(now, source);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let tag = XChaCha20Poly1305::new(self.key.as_bytes().into())
            .encrypt_in_place_detached(&nonce.into(), mac1, &mut cookie)
            .expect("16 bytes are in bounds");
        let mut bytes = [0u8; COOKIE_REPLY_LEN];
        bytes[..PREFIX_LEN].copy_from_slice(&[MAGIC[0], MAGIC[1], VERSION, COOKIE_REPLY]);
        bytes[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&receiver_index.to_be_bytes());
        let rest = &mut bytes[PREFIX_LEN + 4..];
        rest[..NONCE_LEN].copy_from_slice(&nonce);
        rest[NONCE_LEN..NONCE_LEN + MAC_LEN].copy_from_slice(&cookie);
        rest[NONCE_LEN + MAC_LEN..].copy_from_slice(&tag);
        bytes
    }
}

/// The receiver index of a cookie reply.
pub(super) fn reply_index(bytes: &[u8; COOKIE_REPLY_LEN]) -> u32 {
    u32::from_be_bytes(
        bytes[PREFIX_LEN..PREFIX_LEN + 4]
            .try_into()
            .expect("in bounds"),
    )
}

/// The cookie in a reply to our initiation whose `mac1` was `mac1`, sealed
/// under the responder's cookie key `key`.
pub(super) fn open_reply(
    key: &MacKey,
    mac1: &[u8; MAC_LEN],
    bytes: &[u8; COOKIE_REPLY_LEN],
) -> Result<[u8; MAC_LEN], Reject> {
    let rest = &bytes[PREFIX_LEN + 4..];
    let nonce: [u8; NONCE_LEN] = rest[..NONCE_LEN].try_into().expect("in bounds");
    let mut cookie: [u8; MAC_LEN] = rest[NONCE_LEN..NONCE_LEN + MAC_LEN]
        .try_into()
        .expect("in bounds");
    let tag: [u8; MAC_LEN] = rest[NONCE_LEN + MAC_LEN..].try_into().expect("in bounds");
    XChaCha20Poly1305::new(key.as_bytes().into())
        .decrypt_in_place_detached(&nonce.into(), mac1, &mut cookie, &tag.into())
        .map_err(|_| Reject::BadMac)?;
    Ok(cookie)
}
