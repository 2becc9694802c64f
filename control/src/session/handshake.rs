//! The handshake's two messages on the wire, and the MACs in front of the
//! Noise bytes that let a responder drop most forgeries before any
//! Diffie-Hellman.
//!
//! ```text
//! initiation  "dt" 3 | 1 | sender index | Noise e, s, payload | mac1 | mac2
//!                 3     1       4                105             16     16   = 145
//! response    "dt" 3 | 2 | sender index | receiver index | Noise e, payload | mac1 | mac2
//!                 3     1       4              4                57           16     16  = 101
//! ```
//!
//! The Noise part is `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` as WireGuard
//! runs it (snow does the cryptography): the initiator knows the
//! responder's public key, sends its own encrypted (identity hiding), and
//! both mix in the pair's pre-shared key. Each side's payload ([`Hello`],
//! 9 bytes) is its *incarnation*, a random number drawn when its control
//! process starts (a peer whose incarnation changed restarted, and
//! everything learnt from its previous run goes), and what it does with
//! overlay data ([`DataMode`]).
//!
//! `mac1` is keyed BLAKE2s-128 over the bytes before it, under
//! BLAKE2s("mac1----" ‖ the receiver's public key), as in WireGuard: only
//! who knows the receiver's public key can make one, and checking it costs
//! a hash. `mac2` is the cookie MAC ([`super::cookie`]); zero without a
//! cookie.
//!
//! Neither message carries a timestamp (WireGuard's TAI64N): a replayed
//! initiation gets an answer and a pending session that is never
//! confirmed, since only the initiator holds the ephemeral key that the
//! session needs; a node's clock plays no part.

use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use snow::{Builder, HandshakeState, StatelessTransportState};

use super::data_keys::DataMode;
use super::resolver::ZeroizingResolver;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::message::Reject;

pub(crate) const NOISE_PARAMS: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Bound into every handshake: a different protocol never completes one.
const PROLOGUE: &[u8] = b"detour control 3";
/// Where IKpsk2 mixes the pre-shared key in: after the second message.
const PSK_LOCATION: u8 = 2;

pub const INITIATION: u8 = 1;
pub const RESPONSE: u8 = 2;

/// Magic, version, type.
pub const PREFIX_LEN: usize = 4;
/// Incarnation (8), data mode (1).
const HELLO_LEN: usize = 9;
const TAG_LEN: usize = 16;
const DH_LEN: usize = 32;
pub const MAC_LEN: usize = 16;
const INITIATION_NOISE_LEN: usize = DH_LEN + DH_LEN + TAG_LEN + HELLO_LEN + TAG_LEN;
const RESPONSE_NOISE_LEN: usize = DH_LEN + HELLO_LEN + TAG_LEN;
pub const INITIATION_LEN: usize = PREFIX_LEN + 4 + INITIATION_NOISE_LEN + 2 * MAC_LEN;
pub const RESPONSE_LEN: usize = PREFIX_LEN + 8 + RESPONSE_NOISE_LEN + 2 * MAC_LEN;

/// What each side of a handshake says of itself, encrypted in its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Hello {
    pub incarnation: u64,
    pub data: DataMode,
}

impl Hello {
    fn to_bytes(self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..8].copy_from_slice(&self.incarnation.to_be_bytes());
        b[8] = self.data.to_byte();
        b
    }

    fn parse(payload: &[u8]) -> Result<Hello, Reject> {
        let b: &[u8; HELLO_LEN] = payload.try_into().map_err(|_| Reject::Malformed)?;
        Ok(Hello {
            incarnation: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            data: DataMode::from_byte(b[8])?,
        })
    }
}

/// The key that MACs messages to one node: derived from its public key.
#[derive(Clone)]
pub(super) struct MacKey([u8; 32]);

impl MacKey {
    pub(super) fn new(label: &[u8; 8], public: &PublicKey) -> MacKey {
        MacKey(
            Blake2s256::new()
                .chain_update(label)
                .chain_update(public.as_bytes())
                .finalize()
                .into(),
        )
    }

    pub(super) fn mac1(public: &PublicKey) -> MacKey {
        MacKey::new(b"mac1----", public)
    }

    pub(super) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Keyed BLAKE2s-128 of `data`.
pub(super) fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .expect("BLAKE2s takes keys of up to 32 bytes");
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

/// Whether `tag` is the MAC of `data`, in constant time.
pub(super) fn verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .expect("BLAKE2s takes keys of up to 32 bytes");
    Update::update(&mut m, data);
    m.verify_slice(tag).is_ok()
}

/// Where a handshake message's MACs are: `mac1` covers `..at`, `mac2`
/// covers `..at + MAC_LEN`.
pub(super) fn mac1_at(len: usize) -> usize {
    len - 2 * MAC_LEN
}

fn builder() -> Builder<'static> {
    Builder::with_resolver(
        NOISE_PARAMS.parse().expect("a valid Noise pattern"),
        Box::new(ZeroizingResolver),
    )
}

fn header(kind: u8) -> [u8; PREFIX_LEN] {
    [super::MAGIC[0], super::MAGIC[1], super::VERSION, kind]
}

/// Our half-done handshake as initiator, and the initiation that started
/// it.
pub(super) struct Initiation {
    pub state: HandshakeState,
    pub bytes: [u8; INITIATION_LEN],
}

/// Starts a handshake with the peer whose public key is `peer`. `mac2_key`
/// is a cookie the peer gave us, if any and still fresh.
pub(super) fn initiate(
    local: &PrivateKey,
    peer: &PublicKey,
    psk: &PresharedKey,
    sender_index: u32,
    hello: Hello,
    mac2_key: Option<&[u8; MAC_LEN]>,
) -> Result<Initiation, snow::Error> {
    let mut state = builder()
        .local_private_key(local.as_bytes())?
        .remote_public_key(peer.as_bytes())?
        .psk(PSK_LOCATION, psk.as_bytes())?
        .prologue(PROLOGUE)?
        .build_initiator()?;
    let mut bytes = [0u8; INITIATION_LEN];
    bytes[..PREFIX_LEN].copy_from_slice(&header(INITIATION));
    bytes[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&sender_index.to_be_bytes());
    let noise = &mut bytes[PREFIX_LEN + 4..PREFIX_LEN + 4 + INITIATION_NOISE_LEN];
    let written = state.write_message(&hello.to_bytes(), noise)?;
    debug_assert_eq!(written, INITIATION_NOISE_LEN);
    seal_macs(&mut bytes, &MacKey::mac1(peer), mac2_key);
    Ok(Initiation { state, bytes })
}

/// Writes `mac1` under `mac1_key` and `mac2` under the cookie, if any.
fn seal_macs(bytes: &mut [u8], mac1_key: &MacKey, cookie: Option<&[u8; MAC_LEN]>) {
    let at = mac1_at(bytes.len());
    let mac1 = mac(mac1_key.as_bytes(), &bytes[..at]);
    bytes[at..at + MAC_LEN].copy_from_slice(&mac1);
    let mac2 = cookie.map_or([0; MAC_LEN], |c| mac(c, &bytes[..at + MAC_LEN]));
    bytes[at + MAC_LEN..].copy_from_slice(&mac2);
}

/// An initiation read by its responder: who sent it (a public key, still
/// to be looked up), its index and hello, and the state to answer it
/// from.
pub(super) struct Initiated {
    pub state: HandshakeState,
    pub remote: PublicKey,
    pub sender_index: u32,
    pub hello: Hello,
}

/// The initiator's ephemeral public key, in the clear at the start of the
/// Noise bytes: what tells a repeated initiation apart without any DH.
pub(super) fn initiation_ephemeral(bytes: &[u8; INITIATION_LEN]) -> [u8; DH_LEN] {
    bytes[PREFIX_LEN + 4..PREFIX_LEN + 4 + DH_LEN]
        .try_into()
        .expect("in bounds")
}

/// Reads an initiation whose MACs were checked: two DHs.
pub(super) fn read_initiation(
    local: &PrivateKey,
    bytes: &[u8; INITIATION_LEN],
) -> Result<Initiated, Reject> {
    let mut state = builder()
        .local_private_key(local.as_bytes())
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(|_| Reject::BadMac)?;
    let sender_index = u32::from_be_bytes(bytes[PREFIX_LEN..PREFIX_LEN + 4].try_into().unwrap());
    let noise = &bytes[PREFIX_LEN + 4..PREFIX_LEN + 4 + INITIATION_NOISE_LEN];
    let mut payload = [0u8; INITIATION_NOISE_LEN];
    let len = state
        .read_message(noise, &mut payload)
        .map_err(|_| Reject::BadMac)?;
    let hello = Hello::parse(&payload[..len])?;
    let remote = state
        .get_remote_static()
        .and_then(|s| s.try_into().ok())
        .map(PublicKey)
        .ok_or(Reject::Malformed)?;
    Ok(Initiated {
        state,
        remote,
        sender_index,
        hello,
    })
}

/// Answers a read initiation: the response, and the handshake completed
/// as responder (for the caller to take the keys from).
pub(super) fn respond(
    initiated: &mut Initiated,
    psk: &PresharedKey,
    sender_index: u32,
    hello: Hello,
) -> Result<[u8; RESPONSE_LEN], snow::Error> {
    initiated
        .state
        .set_psk(usize::from(PSK_LOCATION), psk.as_bytes())?;
    let mut bytes = [0u8; RESPONSE_LEN];
    bytes[..PREFIX_LEN].copy_from_slice(&header(RESPONSE));
    bytes[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&sender_index.to_be_bytes());
    bytes[PREFIX_LEN + 4..PREFIX_LEN + 8].copy_from_slice(&initiated.sender_index.to_be_bytes());
    let noise = &mut bytes[PREFIX_LEN + 8..PREFIX_LEN + 8 + RESPONSE_NOISE_LEN];
    let written = initiated.state.write_message(&hello.to_bytes(), noise)?;
    debug_assert_eq!(written, RESPONSE_NOISE_LEN);
    seal_macs(&mut bytes, &MacKey::mac1(&initiated.remote), None);
    Ok(bytes)
}

/// The control session's keys of a completed handshake.
pub(super) fn into_transport(state: HandshakeState) -> Result<StatelessTransportState, Reject> {
    state
        .into_stateless_transport_mode()
        .map_err(|_| Reject::Malformed)
}

/// The two indices of a response: the responder's, and ours it answers.
pub(super) fn response_indices(bytes: &[u8; RESPONSE_LEN]) -> (u32, u32) {
    let at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (at(PREFIX_LEN), at(PREFIX_LEN + 4))
}

/// Reads the response to our initiation: the responder's hello. On error
/// the handshake is left as it was (snow restores it), so that a forged
/// response does not cost us the real one.
pub(super) fn read_response(
    state: &mut HandshakeState,
    bytes: &[u8; RESPONSE_LEN],
) -> Result<Hello, Reject> {
    let noise = &bytes[PREFIX_LEN + 8..PREFIX_LEN + 8 + RESPONSE_NOISE_LEN];
    let mut payload = [0u8; RESPONSE_NOISE_LEN];
    let len = state
        .read_message(noise, &mut payload)
        .map_err(|_| Reject::BadMac)?;
    Hello::parse(&payload[..len])
}

/// Whether the `mac1` of a handshake message is right for the holder of
/// `key`'s public key: a hash, no DH.
pub(super) fn mac1_ok(key: &MacKey, bytes: &[u8]) -> bool {
    let at = mac1_at(bytes.len());
    verify(key.as_bytes(), &bytes[..at], &bytes[at..at + MAC_LEN])
}

/// Whether the `mac2` of a handshake message is right for `cookie`.
pub(super) fn mac2_ok(cookie: &[u8; MAC_LEN], bytes: &[u8]) -> bool {
    let at = mac1_at(bytes.len()) + MAC_LEN;
    verify(cookie, &bytes[..at], &bytes[at..])
}

/// The `mac1` of a handshake message, as sent.
pub(super) fn mac1_of(bytes: &[u8]) -> [u8; MAC_LEN] {
    let at = mac1_at(bytes.len());
    bytes[at..at + MAC_LEN].try_into().expect("in bounds")
}
