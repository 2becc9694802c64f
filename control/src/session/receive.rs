//! The receiving half of [`Endpoint`]: every datagram of the control
//! port, by type, checked in the order docs/wire-format.md gives ("What a
//! receiver checks"), cheapest first.

use std::net::SocketAddr;

use detour_common::wire::NodeId;

use super::cookie::{self, COOKIE_REPLY, COOKIE_REPLY_LEN};
use super::data_keys::DataKeys;
use super::handshake::{self, INITIATION, INITIATION_LEN, RESPONSE, RESPONSE_LEN};
use super::transport::{self, Session, TRANSPORT};
use super::{
    Endpoint, MAGIC, MAX_PENDING, Peer, Pending, RECENT_EPHEMERALS, Recipient, Transmit, VERSION,
};
use crate::link::Time;
use crate::message::{Message, Reject};

impl Endpoint {
    pub(super) fn dispatch(
        &mut self,
        now: Time,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<(NodeId, Message)>, Reject> {
        // The version comes first: a later version may lay out the rest
        // differently.
        let kind = match datagram {
            [m0, m1, version, kind, ..] if [*m0, *m1] == MAGIC => {
                if *version != VERSION {
                    return Err(Reject::UnknownVersion);
                }
                *kind
            }
            [m0, m1, version] if [*m0, *m1] == MAGIC && *version != VERSION => {
                return Err(Reject::UnknownVersion);
            }
            _ => return Err(Reject::Malformed),
        };
        let sized = |len: usize| (datagram.len() == len).then_some(datagram);
        match kind {
            INITIATION => {
                let bytes = sized(INITIATION_LEN).ok_or(Reject::Malformed)?;
                self.on_initiation(now, from, bytes.try_into().expect("sized"))?;
                Ok(None)
            }
            RESPONSE => {
                let bytes = sized(RESPONSE_LEN).ok_or(Reject::Malformed)?;
                self.on_response(now, bytes.try_into().expect("sized"))?;
                Ok(None)
            }
            COOKIE_REPLY => {
                let bytes = sized(COOKIE_REPLY_LEN).ok_or(Reject::Malformed)?;
                self.on_cookie_reply(now, bytes.try_into().expect("sized"))?;
                Ok(None)
            }
            TRANSPORT => self.on_transport(now, datagram).map(Some),
            _ => Err(Reject::Malformed),
        }
    }

    fn on_initiation(
        &mut self,
        now: Time,
        from: SocketAddr,
        bytes: &[u8; INITIATION_LEN],
    ) -> Result<(), Reject> {
        if !handshake::mac1_ok(&self.mac1_key, bytes) {
            return Err(Reject::BadMac);
        }
        if self.load.over(now, self.limits.handshakes_per_second)
            && !self.cookies.mac2_ok(now, from, bytes)
        {
            let sender = u32::from_be_bytes(bytes[4..8].try_into().expect("in bounds"));
            let reply = self
                .cookies
                .reply(now, from, sender, &handshake::mac1_of(bytes));
            self.counters.cookie_replies_sent += 1;
            self.outbox.push_back(Transmit {
                to: Recipient::Address(from),
                datagram: reply.to_vec(),
            });
            return Ok(());
        }
        let ephemeral = handshake::initiation_ephemeral(bytes);
        if self.recent_ephemerals.contains(&ephemeral) {
            return Err(Reject::Replayed);
        }
        if self.recent_ephemerals.len() == RECENT_EPHEMERALS {
            self.recent_ephemerals.pop_front();
        }
        self.recent_ephemerals.push_back(ephemeral);
        self.load.count += 1;

        let mut initiated = handshake::read_initiation(&self.private, bytes)?;
        let id = *self
            .by_key
            .get(&initiated.remote)
            .ok_or(Reject::UnknownKey)?;
        let cipher = self.agree_data(id, initiated.hello.data)?;
        let index = self.new_index();
        let hello = self.hello();
        let peer = self.peers.get_mut(&id).expect("by_key names peers");
        let (remote_index, incarnation) = (initiated.sender_index, initiated.hello.incarnation);
        let response = handshake::respond(&mut initiated, &peer.keys.psk, index, hello)
            .map_err(|_| Reject::BadMac)?;
        let data = cipher.map(|c| DataKeys::derive(&mut initiated.state, c));
        let keys = handshake::into_transport(initiated.state)?;
        if peer.pending.len() == MAX_PENDING {
            let oldest = peer.pending.remove(0);
            self.by_index.remove(&oldest.session.local_index);
        }
        peer.pending.push(Pending {
            session: Session::new(index, remote_index, keys, data, now),
            incarnation,
        });
        self.by_index.insert(index, id);
        self.keys_epoch += 1;
        self.counters.responses_sent += 1;
        self.outbox.push_back(Transmit {
            to: Recipient::Node(id),
            datagram: response.to_vec(),
        });
        Ok(())
    }

    fn on_response(&mut self, now: Time, bytes: &[u8; RESPONSE_LEN]) -> Result<(), Reject> {
        if !handshake::mac1_ok(&self.mac1_key, bytes) {
            return Err(Reject::BadMac);
        }
        let (remote_index, index) = handshake::response_indices(bytes);
        let (id, peer) = self.handshake_under_way(index)?;
        let initiating = peer.initiating.as_mut().expect("under way");
        // A failed read leaves the handshake as it was: a forged response
        // does not cost us the real one.
        let hello = handshake::read_response(&mut initiating.state, bytes)?;
        let mut initiating = peer.initiating.take().expect("just read");
        let cipher = self.agree_data(id, hello.data).inspect_err(|_| {
            self.by_index.remove(&initiating.index);
        })?;
        let data = cipher.map(|c| DataKeys::derive(&mut initiating.state, c));
        let keys = handshake::into_transport(initiating.state)?;
        self.establish(
            now,
            id,
            Session::new(index, remote_index, keys, data, now),
            hello.incarnation,
        );
        Ok(())
    }

    fn on_cookie_reply(&mut self, now: Time, bytes: &[u8; COOKIE_REPLY_LEN]) -> Result<(), Reject> {
        let index = cookie::reply_index(bytes);
        let (id, peer) = self.handshake_under_way(index)?;
        let mac1 = peer.initiating.as_ref().expect("under way").mac1;
        let cookie = cookie::open_reply(&peer.cookie_key, &mac1, bytes)?;
        peer.cookie = Some((cookie, now));
        self.counters.cookies_received += 1;
        // At once, with the cookie.
        self.initiate(now, id, true);
        Ok(())
    }

    /// The peer with which our handshake of index `index` is under way.
    fn handshake_under_way(&mut self, index: u32) -> Result<(NodeId, &mut Peer), Reject> {
        let id = *self.by_index.get(&index).ok_or(Reject::UnknownSession)?;
        let peer = self.peers.get_mut(&id).expect("by_index names peers");
        match &peer.initiating {
            Some(initiating) if initiating.index == index => Ok((id, peer)),
            _ => Err(Reject::UnknownSession),
        }
    }

    fn on_transport(&mut self, now: Time, datagram: &[u8]) -> Result<(NodeId, Message), Reject> {
        let index = transport::transport_index(datagram).ok_or(Reject::Malformed)?;
        let id = *self.by_index.get(&index).ok_or(Reject::UnknownSession)?;
        let limits = &self.limits;
        let peer = self.peers.get_mut(&id).expect("by_index names peers");
        if let Some(session) = peer.sessions.iter_mut().find(|s| s.local_index == index) {
            if !session.can_receive(now, limits) {
                return Err(Reject::UnknownSession);
            }
            return session.open(datagram).map(|message| (id, message));
        }
        let k = peer
            .pending
            .iter()
            .position(|p| p.session.local_index == index)
            .ok_or(Reject::UnknownSession)?;
        let message = peer.pending[k].session.open(datagram)?;
        let pending = peer.pending.remove(k);
        self.establish(now, id, pending.session, pending.incarnation);
        Ok((id, message))
    }
}
