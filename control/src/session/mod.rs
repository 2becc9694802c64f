//! Sessions between peers: every control message travels in a session
//! that a Noise handshake between the two nodes' key pairs set up, and is
//! sealed (ChaCha20-Poly1305) and numbered under it (docs/security.md,
//! docs/wire-format.md "Control messages").
//!
//! [`Endpoint`] is one node's end of all of them, doing no I/O and reading
//! no clock (the driver passes the time, as to [`crate::node::Node`]):
//!
//! - [`Endpoint::send`] seals a message under the peer's newest session;
//!   without one it starts a handshake and holds the message (a few per
//!   peer) until the session is up; probes and their replies it drops
//!   instead, since held they would measure the handshake.
//! - [`Endpoint::open`] takes every datagram from the control port:
//!   handshake messages it answers itself, control messages it returns
//!   with their sender, everything else it refuses, counting why.
//! - [`Endpoint::poll_transmit`] gives what to send, [`Endpoint::poll_event`]
//!   what the node must know (a peer restarted).
//!
//! ## Sessions and rekeying
//!
//! As in WireGuard: a session is started by either side; the initiator may
//! send on it as soon as the response arrives, the responder once the
//! initiator's first message under it arrived (which proves the initiator
//! holds the keys: a replayed initiation never gets that far). Messages go
//! out on the newest session; the older ones (at most [`MAX_SESSIONS`])
//! still take what arrives until they expire, so nothing in flight during
//! a rekey is lost. A session's initiator starts a new handshake once it
//! is [`Limits::rekey_after_time`] old (the responder a little later, in
//! case the initiator went quiet); after [`Limits::reject_after_time`] it
//! is dropped.
//!
//! Counters start at 0 in every session and travel in each message; each
//! session has its own replay window ([`crate::replay`]). A session lives
//! only as long as the process: after a restart, nothing recorded before
//! it opens, and liveness comes only from the current sessions.
//!
//! ## Incarnations
//!
//! Each handshake carries the sender's incarnation, a random number drawn
//! at start. When a peer's confirmed session brings a new one, the peer
//! restarted: its older sessions go and [`Event::PeerRestarted`] tells the
//! node to forget what the peer said before (its row, whose versions now
//! start again). No wall clock is read anywhere: a node whose clock steps
//! back is not locked out.
//!
//! ## Cost for strangers
//!
//! An initiation's `mac1` is checked first (a hash, keyed by our public
//! key); then a repeated ephemeral key is refused as a replay; only then
//! does the handshake cost Diffie-Hellman. Past
//! [`Limits::handshakes_per_second`] a second, an initiation without a
//! valid `mac2` gets a cookie reply instead ([`cookie`]). An initiation
//! under a key that is no peer's is dropped and counted, unanswered.

mod cookie;
mod data_keys;
mod handshake;
mod receive;
mod resolver;
mod transport;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use detour_common::api::{KeySpec, SessionKeys};
use detour_common::wire::NodeId;

pub use cookie::{COOKIE_LIFETIME, COOKIE_REPLY, COOKIE_REPLY_LEN};
pub use data_keys::{DataKeys, DataMode, Encryption};
pub use handshake::{INITIATION, INITIATION_LEN, RESPONSE, RESPONSE_LEN};
pub use transport::{TAG_LEN, TRANSPORT, TRANSPORT_HEADER_LEN};

use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::link::Time;
use crate::message::{EncodeError, Message, Reject, RejectCounters};
use cookie::CookieJar;
use detour_common::api::Cipher;
use handshake::MacKey;
use transport::Session;

/// The first two bytes of every control datagram: "dt".
pub const MAGIC: [u8; 2] = *b"dt";
/// The format version this module reads and writes (1 was the shared-key
/// format, 2 the handshake without a data mode; both refused).
pub const VERSION: u8 = 3;
/// The most confirmed sessions kept per peer.
pub const MAX_SESSIONS: usize = 3;
/// The most answered, unconfirmed handshakes kept per peer.
pub const MAX_PENDING: usize = 4;
/// The most messages held per peer while a handshake is under way.
pub const MAX_HELD: usize = 16;
/// How many recent initiations' ephemeral keys are remembered.
const RECENT_EPHEMERALS: usize = 1024;
/// How often expired sessions are looked for.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long a new session waits before overlay data goes out under its
/// key: time for the peer's control process to install the new key in
/// its dataplane, which it does as it answers or confirms the handshake
/// (a few milliseconds).
pub const DATA_KEY_SWITCH_DELAY: Duration = Duration::from_millis(50);

/// The size of `message` as a datagram on the control port: sealed in a
/// session, header and tag included.
pub fn datagram_len(message: &Message) -> usize {
    TRANSPORT_HEADER_LEN + message.wire_len() + TAG_LEN
}

/// Session timers and limits: WireGuard's, except the handshake retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// REKEY_AFTER_TIME: a session's initiator starts a new one then.
    pub rekey_after_time: Duration,
    /// How much later the responder starts one, if the initiator did not.
    pub responder_rekey_delay: Duration,
    /// REJECT_AFTER_TIME: nothing is sent or taken on a session older.
    pub reject_after_time: Duration,
    /// REKEY_AFTER_MESSAGES.
    pub rekey_after_messages: u64,
    /// REJECT_AFTER_MESSAGES.
    pub reject_after_messages: u64,
    /// How long an unanswered initiation waits before another is sent
    /// (WireGuard's REKEY_TIMEOUT is 5 s; a control channel that is down
    /// is a link that reads down, so this retries sooner).
    pub handshake_retry: Duration,
    /// Past this many handshakes answered within a second, an initiation
    /// needs a cookie.
    pub handshakes_per_second: u32,
}

impl Limits {
    /// WireGuard's timers scaled to another rekey time (a config's
    /// `session.rekey_after_s`): the responder rekeys a twelfth of it
    /// later, a session is rejected at one and a half times it (10 s and
    /// 180 s for WireGuard's 120 s).
    pub fn rekeying_after(rekey: Duration) -> Limits {
        Limits {
            rekey_after_time: rekey,
            responder_rekey_delay: rekey / 12,
            reject_after_time: rekey * 3 / 2,
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rekey_after_time: Duration::from_secs(120),
            responder_rekey_delay: Duration::from_secs(10),
            reject_after_time: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            reject_after_messages: u64::MAX - (1 << 13),
            handshake_retry: Duration::from_secs(1),
            handshakes_per_second: 200,
        }
    }
}

/// What this node knows of one peer's keys.
#[derive(Debug, Clone)]
pub struct PeerKeys {
    pub id: NodeId,
    pub public: PublicKey,
    pub psk: PresharedKey,
}

/// Where a datagram goes: a peer (at its configured address), or the
/// address a handshake came from (a cookie reply, before the sender is
/// known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipient {
    Node(NodeId),
    Address(SocketAddr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Recipient,
    pub datagram: Vec<u8>,
}

/// What became of a message handed to [`Endpoint::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Sealed, and waiting in [`Endpoint::poll_transmit`].
    Sealed,
    /// Held until a session with the peer is up.
    Held,
    /// A probe or probe reply with no session to go on: dropped.
    Dropped,
    /// Not a peer of this endpoint.
    NoSuchPeer,
}

/// What the node must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A session with the peer came up (a first one, or a rekey).
    SessionUp(NodeId),
    /// The peer restarted (a confirmed session brought a new incarnation):
    /// what it said before is void.
    PeerRestarted(NodeId),
}

/// What the endpoint did, for metrics. Counts only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    pub initiations_sent: u64,
    pub responses_sent: u64,
    pub sessions_established: u64,
    pub cookie_replies_sent: u64,
    pub cookies_received: u64,
    pub peers_restarted: u64,
    /// Messages given up while waiting for a session (too many held).
    pub messages_dropped: u64,
    /// Probes and replies not sent for want of a session (never held:
    /// late, they would measure the handshake).
    pub probes_unsent: u64,
}

/// One peer's sessions as `detourctl` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// When the newest confirmed session was set up.
    pub established: Option<Time>,
    /// Messages sent on it.
    pub messages_sent: u64,
    pub sessions: usize,
}

/// Our initiation under way with one peer.
struct Initiating {
    state: snow::HandshakeState,
    index: u32,
    sent: Time,
    mac1: [u8; handshake::MAC_LEN],
}

/// A handshake we answered, waiting for the initiator's first message.
struct Pending {
    session: Session,
    incarnation: u64,
}

struct Peer {
    keys: PeerKeys,
    cookie_key: MacKey,
    /// Its incarnation, once a session with it was confirmed.
    incarnation: Option<u64>,
    /// Confirmed sessions, oldest first.
    sessions: Vec<Session>,
    pending: Vec<Pending>,
    initiating: Option<Initiating>,
    /// The last cookie it gave us, and when.
    cookie: Option<([u8; handshake::MAC_LEN], Time)>,
    held: VecDeque<Message>,
    /// Its handshakes were refused for a differing `encryption`, and that
    /// was logged (once, not at every retry).
    mismatch_logged: bool,
}

impl Peer {
    fn new(keys: PeerKeys) -> Peer {
        Peer {
            cookie_key: cookie::cookie_key(&keys.public),
            keys,
            incarnation: None,
            sessions: Vec::new(),
            pending: Vec::new(),
            initiating: None,
            cookie: None,
            held: VecDeque::new(),
            mismatch_logged: false,
        }
    }

    fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        let sessions = self.sessions.iter().map(|s| s.local_index);
        let pending = self.pending.iter().map(|p| p.session.local_index);
        sessions
            .chain(pending)
            .chain(self.initiating.as_ref().map(|i| i.index))
    }
}

/// Handshakes answered in the current second.
#[derive(Default)]
struct LoadMeter {
    since: Time,
    count: u32,
}

impl LoadMeter {
    fn over(&mut self, now: Time, limit: u32) -> bool {
        if now >= self.since + Duration::from_secs(1) {
            self.since = now;
            self.count = 0;
        }
        self.count >= limit
    }
}

/// One node's end of every session.
pub struct Endpoint {
    local: NodeId,
    private: PrivateKey,
    mac1_key: MacKey,
    incarnation: u64,
    data_mode: DataMode,
    limits: Limits,
    peers: BTreeMap<NodeId, Peer>,
    by_key: HashMap<PublicKey, NodeId>,
    /// Our session and handshake indices, to the peer each is with.
    by_index: HashMap<u32, NodeId>,
    recent_ephemerals: VecDeque<[u8; 32]>,
    cookies: CookieJar,
    load: LoadMeter,
    next_expiry: Time,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rejects: RejectCounters,
    counters: SessionCounters,
    /// Grows whenever a session (and so a data key) comes or goes.
    keys_epoch: u64,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Node `local`'s end, under `private`, for `peers` (each key distinct
    /// and not ours: the configuration checks that). `incarnation`: a
    /// random number, new at every start.
    pub fn new(
        local: NodeId,
        private: PrivateKey,
        peers: impl IntoIterator<Item = PeerKeys>,
        incarnation: u64,
        limits: Limits,
    ) -> Endpoint {
        let public = private.public_key();
        let mut endpoint = Endpoint {
            local,
            mac1_key: MacKey::mac1(&public),
            cookies: CookieJar::new(&public),
            private,
            incarnation,
            data_mode: DataMode::local(Encryption::Aead),
            limits,
            peers: BTreeMap::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            recent_ephemerals: VecDeque::new(),
            load: LoadMeter::default(),
            next_expiry: Time::ZERO,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            rejects: RejectCounters::default(),
            counters: SessionCounters::default(),
            keys_epoch: 0,
        };
        for peer in peers {
            endpoint.add_peer(peer);
        }
        endpoint
    }

    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Whether overlay data is encrypted (`encryption`; the default is
    /// [`Encryption::Aead`]). For the handshakes from now on.
    pub fn set_encryption(&mut self, encryption: Encryption) {
        self.data_mode = DataMode::local(encryption);
    }

    pub fn encryption(&self) -> Encryption {
        match self.data_mode.encrypted {
            true => Encryption::Aead,
            false => Encryption::None,
        }
    }

    /// What our handshakes say of us.
    fn hello(&self) -> handshake::Hello {
        handshake::Hello {
            incarnation: self.incarnation,
            data: self.data_mode,
        }
    }

    /// The cipher of a session with `peer`, who said `theirs` of its data;
    /// a mismatch is logged once per peer.
    fn agree_data(&mut self, peer: NodeId, theirs: DataMode) -> Result<Option<Cipher>, Reject> {
        let agreed = self.data_mode.agree(theirs);
        if let (Err(_), Some(p)) = (&agreed, self.peers.get_mut(&peer))
            && !std::mem::replace(&mut p.mismatch_logged, true)
        {
            tracing::warn!(
                %peer,
                ours = self.encryption().name(),
                theirs = if theirs.encrypted { "aead" } else { "none" },
                "peer refused: its `encryption` differs from ours; both ends must set the same"
            );
        }
        agreed
    }

    /// The overlay data keys of every peer, for the dataplane: `None`
    /// without encryption. Only sessions set up at `since` or later count
    /// (a dataplane that restarted lost the counters of the older ones,
    /// which must never seal again).
    ///
    /// What goes out to a peer is sealed under its newest confirmed
    /// session's key once that is [`DATA_KEY_SWITCH_DELAY`] old, under the
    /// one before until then; with none (the first session, or the old
    /// ones dropped for the peer's restart) there is no tx key, and the
    /// dataplane seals under the key it had for a short grace. What comes in
    /// may be under any session still open, an answered handshake's
    /// included (its initiator sends as soon as it has our answer). A
    /// key's id is the receiver's index of the session.
    pub fn data_keys(&self, now: Time, since: Time) -> Option<Vec<SessionKeys>> {
        if !self.data_mode.encrypted {
            return None;
        }
        let limits = &self.limits;
        let keyed = |s: &Session| s.born >= since && s.data.is_some();
        let spec = |s: &Session, id: u32, tx: bool| {
            let data = s.data.as_ref().expect("keyed");
            KeySpec {
                id,
                cipher: data.cipher,
                key: if tx { data.tx.clone() } else { data.rx.clone() },
            }
        };
        let peers = self.peers.values().map(|peer| {
            let tx = peer
                .sessions
                .iter()
                .rev()
                .filter(|s| keyed(s) && s.can_send(now, limits))
                .find(|s| now >= s.born + DATA_KEY_SWITCH_DELAY)
                .map(|s| spec(s, s.remote_index, true));
            let open = peer.sessions.iter().filter(|s| s.can_receive(now, limits));
            let answered = peer.pending.iter().map(|p| &p.session);
            let rx = open
                .chain(answered)
                .filter(|s| keyed(s))
                .map(|s| spec(s, s.local_index, false))
                .collect();
            SessionKeys {
                peer: peer.keys.id,
                tx,
                rx,
            }
        });
        Some(peers.collect())
    }

    /// Grows whenever a session comes or goes, so that what
    /// [`Self::data_keys`] says can change; it also changes with time,
    /// [`DATA_KEY_SWITCH_DELAY`] after a session came.
    pub fn keys_epoch(&self) -> u64 {
        self.keys_epoch
    }

    /// Starts a new handshake with every peer now, whatever their sessions'
    /// age: the dataplane restarted, and only new sessions' keys may seal.
    pub fn rekey_all(&mut self, now: Time) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            self.initiate(now, id, true);
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.private.public_key()
    }

    /// Replaces this node's own key: every session and handshake under way
    /// goes, and the next handshakes are under the new key.
    pub fn set_private_key(&mut self, private: PrivateKey) {
        let public = private.public_key();
        self.mac1_key = MacKey::mac1(&public);
        self.cookies = CookieJar::new(&public);
        self.private = private;
        let peers: Vec<PeerKeys> = self.peers.values().map(|p| p.keys.clone()).collect();
        for keys in peers {
            self.add_peer(keys);
        }
    }

    /// Adds a peer, or replaces its keys (its sessions go with the old
    /// ones). The incarnation it was last seen with stays: a peer that
    /// restarted under a new key is still reported as restarted, so that
    /// its rows, numbered from 1 again, are not refused as stale.
    pub fn add_peer(&mut self, keys: PeerKeys) {
        let known = self.peers.get(&keys.id).and_then(|p| p.incarnation);
        self.remove_peer(keys.id);
        self.by_key.insert(keys.public, keys.id);
        let mut peer = Peer::new(keys);
        peer.incarnation = known;
        self.peers.insert(peer.keys.id, peer);
        self.keys_epoch += 1;
    }

    /// Drops a peer and every session with it: nothing it sends opens any
    /// more.
    pub fn remove_peer(&mut self, id: NodeId) {
        if let Some(peer) = self.peers.remove(&id) {
            for index in peer.indices() {
                self.by_index.remove(&index);
            }
            self.by_key.remove(&peer.keys.public);
            self.keys_epoch += 1;
        }
    }

    /// Seals `message` for `to` under its newest session, or holds it
    /// until a handshake sets one up. A peer this endpoint does not know
    /// is ignored.
    pub fn send(&mut self, now: Time, to: NodeId, message: Message) -> Result<Sent, EncodeError> {
        self.expire(now);
        let limits = &self.limits;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Ok(Sent::NoSuchPeer);
        };
        let session = peer
            .sessions
            .iter_mut()
            .rev()
            .find(|s| s.can_send(now, limits));
        let (sent, rekey) = match session {
            Some(session) => {
                let mut datagram = Vec::with_capacity(TRANSPORT_HEADER_LEN + message.wire_len());
                session.seal(&message, &mut datagram)?;
                self.outbox.push_back(Transmit {
                    to: Recipient::Node(to),
                    datagram,
                });
                (Sent::Sealed, session.wants_rekey(now, limits))
            }
            // A probe held would measure the handshake, not the link.
            None if matches!(message, Message::Probe { .. } | Message::ProbeReply { .. }) => {
                self.counters.probes_unsent += 1;
                (Sent::Dropped, true)
            }
            None => {
                crate::message::encode(&message, &mut Vec::new())?;
                if peer.held.len() == MAX_HELD {
                    peer.held.pop_front();
                    self.counters.messages_dropped += 1;
                }
                peer.held.push_back(message);
                (Sent::Held, true)
            }
        };
        if rekey {
            self.initiate(now, to, false);
        }
        Ok(sent)
    }

    /// `message` sealed for `to` in the newest session this node may send
    /// on, for the caller to deliver its own way (through a relay); `None`
    /// without such a session.
    pub fn seal(
        &mut self,
        now: Time,
        to: NodeId,
        message: &Message,
    ) -> Result<Option<Vec<u8>>, EncodeError> {
        let limits = &self.limits;
        let Some(peer) = self.peers.get_mut(&to) else {
            return Ok(None);
        };
        let Some(session) = peer
            .sessions
            .iter_mut()
            .rev()
            .find(|s| s.can_send(now, limits))
        else {
            return Ok(None);
        };
        let mut datagram = Vec::with_capacity(TRANSPORT_HEADER_LEN + message.wire_len());
        session.seal(message, &mut datagram)?;
        Ok(Some(datagram))
    }

    /// Starts a handshake with `to`, unless one started less than
    /// [`Limits::handshake_retry`] ago (and this is no `retry`: the answer
    /// to it was a cookie).
    fn initiate(&mut self, now: Time, to: NodeId, retry: bool) {
        let index = self.new_index();
        let hello = self.hello();
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        if !retry
            && peer
                .initiating
                .as_ref()
                .is_some_and(|i| now < i.sent + self.limits.handshake_retry)
        {
            return;
        }
        let cookie = peer
            .cookie
            .as_ref()
            .filter(|(_, at)| now < *at + COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let initiation = match handshake::initiate(
            &self.private,
            &peer.keys.public,
            &peer.keys.psk,
            index,
            hello,
            cookie,
        ) {
            Ok(initiation) => initiation,
            Err(e) => {
                tracing::warn!(peer = %to, error = %e, "cannot start a handshake");
                return;
            }
        };
        if let Some(old) = peer.initiating.take() {
            self.by_index.remove(&old.index);
        }
        peer.initiating = Some(Initiating {
            state: initiation.state,
            index,
            sent: now,
            mac1: handshake::mac1_of(&initiation.bytes),
        });
        self.by_index.insert(index, to);
        self.counters.initiations_sent += 1;
        self.outbox.push_back(Transmit {
            to: Recipient::Node(to),
            datagram: initiation.bytes.to_vec(),
        });
    }

    /// An index of ours that names nothing yet, and never 0 (the key id
    /// of a frame that is not encrypted).
    fn new_index(&self) -> u32 {
        loop {
            let index = fastrand::u32(1..);
            if !self.by_index.contains_key(&index) {
                return index;
            }
        }
    }

    /// A datagram from `from`, received on the control port at `now`: a
    /// control message and its sender, `None` for a handshake message
    /// (answered through [`Self::poll_transmit`]), or why it was refused
    /// (counted).
    pub fn open(
        &mut self,
        now: Time,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<(NodeId, Message)>, Reject> {
        self.expire(now);
        let opened = self.dispatch(now, from, datagram);
        if let Err(reject) = opened {
            self.rejects.record(reject);
        }
        opened
    }

    /// A session with `id` is confirmed: it becomes the one to send on,
    /// and what was held for the peer goes out on it.
    fn establish(&mut self, now: Time, id: NodeId, session: Session, incarnation: u64) {
        let peer = self.peers.get_mut(&id).expect("a known peer");
        if peer.incarnation.is_some_and(|known| known != incarnation) {
            // Its older sessions are from its previous run.
            for old in peer.sessions.drain(..) {
                self.by_index.remove(&old.local_index);
            }
            for old in peer.pending.drain(..) {
                self.by_index.remove(&old.session.local_index);
            }
            self.counters.peers_restarted += 1;
            self.events.push_back(Event::PeerRestarted(id));
        }
        peer.incarnation = Some(incarnation);
        if peer.sessions.len() == MAX_SESSIONS {
            let oldest = peer.sessions.remove(0);
            self.by_index.remove(&oldest.local_index);
        }
        peer.sessions.push(session);
        self.keys_epoch += 1;
        self.counters.sessions_established += 1;
        self.events.push_back(Event::SessionUp(id));
        let held: Vec<Message> = peer.held.drain(..).collect();
        for message in held {
            // Encodable: checked when it was held.
            let _ = self.send(now, id, message);
        }
    }

    /// Drops expired sessions and stale answered handshakes, at most once
    /// an [`EXPIRY_INTERVAL`].
    fn expire(&mut self, now: Time) {
        if now < self.next_expiry {
            return;
        }
        self.next_expiry = now + EXPIRY_INTERVAL;
        let limits = &self.limits;
        let mut removed = false;
        for peer in self.peers.values_mut() {
            peer.sessions.retain(|s| {
                let keep = s.can_receive(now, limits);
                if !keep {
                    self.by_index.remove(&s.local_index);
                    removed = true;
                }
                keep
            });
            peer.pending.retain(|p| {
                // Confirmed within a few retries, or never.
                let keep = now < p.session.born + 4 * limits.handshake_retry;
                if !keep {
                    self.by_index.remove(&p.session.local_index);
                    removed = true;
                }
                keep
            });
        }
        if removed {
            self.keys_epoch += 1;
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn rejects(&self) -> &RejectCounters {
        &self.rejects
    }

    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// Counts a drop decided after [`Self::open`], such as
    /// [`Reject::Stale`] by the link-state database.
    pub fn record(&mut self, reject: Reject) {
        self.rejects.record(reject);
    }

    /// The sessions with `peer`, if it is one.
    pub fn session_info(&self, peer: NodeId) -> Option<SessionInfo> {
        let peer = self.peers.get(&peer)?;
        let newest = peer.sessions.last();
        Some(SessionInfo {
            established: newest.map(|s| s.born),
            messages_sent: newest.map_or(0, Session::messages_sent),
            sessions: peer.sessions.len(),
        })
    }
}

#[cfg(test)]
pub(crate) mod test_peers;
#[cfg(test)]
mod tests;
