//! One session with a peer, from a completed handshake: the two keys
//! (snow's stateless transport state, so that the counter travels in each
//! message), our next counter and the replay window of theirs.
//!
//! ```text
//! transport  "dt" 2 | 4 | receiver index | counter | ChaCha20-Poly1305(message) | tag
//!                3     1        4             8          1 + body                   16
//! ```
//!
//! The receiver index is the receiver's name for the session (it chose it
//! in the handshake), so it finds the key without trying any; the counter
//! is the AEAD nonce, so altering either fails the tag. The plaintext is
//! a control message ([`crate::message::encode`]).

use snow::StatelessTransportState;

use super::data_keys::DataKeys;
use super::{Limits, MAGIC, VERSION};
use crate::link::Time;
use crate::message::{self, EncodeError, Message, Reject};
use crate::replay::ReplayWindow;

pub const TRANSPORT: u8 = 4;
/// Magic, version, type, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = 16;
pub const TAG_LEN: usize = 16;

/// One direction pair of keys with a peer.
pub(super) struct Session {
    /// Our index: what the peer puts in the messages it sends us.
    pub local_index: u32,
    /// The peer's index, for the messages we send.
    pub remote_index: u32,
    keys: StatelessTransportState,
    next_counter: u64,
    window: ReplayWindow,
    /// When the keys were derived.
    pub born: Time,
    /// We sent the initiation (and so rekey it first).
    pub initiated: bool,
    /// The overlay data's keys of this session; none without encryption.
    pub data: Option<DataKeys>,
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        keys: StatelessTransportState,
        data: Option<DataKeys>,
        born: Time,
    ) -> Session {
        Session {
            local_index,
            remote_index,
            initiated: keys.is_initiator(),
            keys,
            next_counter: 0,
            window: ReplayWindow::default(),
            born,
            data,
        }
    }

    /// Whether messages may still be sent on it at `now`.
    pub fn can_send(&self, now: Time, limits: &Limits) -> bool {
        now < self.born + limits.reject_after_time
            && self.next_counter < limits.reject_after_messages
    }

    /// Whether messages on it are still accepted at `now`.
    pub fn can_receive(&self, now: Time, limits: &Limits) -> bool {
        now < self.born + limits.reject_after_time
    }

    /// Whether it is time to replace it with a new handshake.
    pub fn wants_rekey(&self, now: Time, limits: &Limits) -> bool {
        let after = if self.initiated {
            limits.rekey_after_time
        } else {
            // Its initiator rekeys first; we step in only if it does not.
            limits.rekey_after_time + limits.responder_rekey_delay
        };
        now >= self.born + after || self.next_counter >= limits.rekey_after_messages
    }

    pub fn messages_sent(&self) -> u64 {
        self.next_counter
    }

    /// Appends `message`, sealed under this session, to `out`.
    pub fn seal(&mut self, message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut plain = Vec::with_capacity(message.wire_len());
        message::encode(message, &mut plain)?;
        let counter = self.next_counter;
        self.next_counter += 1;
        let start = out.len();
        out.extend_from_slice(&[MAGIC[0], MAGIC[1], VERSION, TRANSPORT]);
        out.extend_from_slice(&self.remote_index.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        let at = out.len();
        out.resize(at + plain.len() + TAG_LEN, 0);
        let written = self
            .keys
            .write_message(counter, &plain, &mut out[at..])
            .expect("a control message is far below Noise's 65535 bytes");
        out.truncate(at + written);
        debug_assert_eq!(
            out.len() - start,
            TRANSPORT_HEADER_LEN + plain.len() + TAG_LEN
        );
        Ok(())
    }

    /// Opens a transport message addressed to this session (its receiver
    /// index is ours): the counter is checked against the window before
    /// the tag and recorded only after, so that neither a replay nor a
    /// forgery costs more than a lookup or moves the window.
    pub fn open(&mut self, datagram: &[u8]) -> Result<Message, Reject> {
        let counter = transport_counter(datagram).ok_or(Reject::Malformed)?;
        self.window.check(counter)?;
        let sealed = &datagram[TRANSPORT_HEADER_LEN..];
        let mut plain = vec![0u8; sealed.len()];
        let len = self
            .keys
            .read_message(counter, sealed, &mut plain)
            .map_err(|_| Reject::BadMac)?;
        self.window.accept(counter)?;
        message::decode(&plain[..len])
    }
}

/// The receiver index of a transport message, if it is long enough to be
/// one.
pub(super) fn transport_index(datagram: &[u8]) -> Option<u32> {
    (datagram.len() >= TRANSPORT_HEADER_LEN + 1 + TAG_LEN)
        .then(|| u32::from_be_bytes(datagram[4..8].try_into().expect("in bounds")))
}

fn transport_counter(datagram: &[u8]) -> Option<u64> {
    transport_index(datagram)?;
    Some(u64::from_be_bytes(
        datagram[8..16].try_into().expect("in bounds"),
    ))
}
