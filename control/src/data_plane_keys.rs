//! Which data keys the dataplane is to hold, and when they change: the
//! sessions' keys ([`Endpoint::data_keys`]), for the dataplane run that
//! will seal with them.
//!
//! A dataplane's senders count from 0 under each key they are given. So a
//! key handed to one run of the dataplane must never reach another: a
//! restarted dataplane would seal under it again from counter 0, and a
//! counter sealed twice under one AES-GCM or ChaCha20-Poly1305 key gives
//! away both plaintexts and the key's authenticity. Every snapshot with
//! keys names the run they are for (the dataplane refuses keys for
//! another); when the run changes, every peer is rekeyed and only the
//! sessions set up since count.

use detour_common::api::SessionKeys;

use crate::link::Time;
use crate::session::{DATA_KEY_SWITCH_DELAY, Endpoint};

#[derive(Debug, Default)]
pub struct KeyTracker {
    /// The dataplane run the keys are for, once known.
    instance: Option<u64>,
    /// Sessions older than this never seal in this run.
    since: Time,
    /// The keys last computed.
    keys: Option<Vec<SessionKeys>>,
    /// The endpoint's [`Endpoint::keys_epoch`] they were computed at, and
    /// until when they hold at the latest.
    epoch: Option<u64>,
    recheck_at: Time,
    restarts: u64,
}

impl KeyTracker {
    /// Takes in the dataplane run the installer saw last; true when the
    /// keys changed since the last call (rekeying every peer first, if
    /// the dataplane restarted).
    pub fn update(&mut self, now: Time, endpoint: &mut Endpoint, instance: Option<u64>) -> bool {
        let mut changed = false;
        if instance.is_some() && instance != self.instance {
            // The first run seen took no key of ours yet (it refuses keys
            // for no run): only a later one means a restart.
            if self.instance.is_some() {
                tracing::info!(
                    "the dataplane restarted: rekeying every peer, so that it seals only under new keys"
                );
                self.since = now;
                self.restarts += 1;
                endpoint.rekey_all(now);
            }
            self.instance = instance;
            changed = true;
        }
        let epoch = endpoint.keys_epoch();
        if self.epoch == Some(epoch) && now < self.recheck_at && !changed {
            return false;
        }
        if self.epoch != Some(epoch) {
            self.recheck_at = now + DATA_KEY_SWITCH_DELAY;
        } else if now >= self.recheck_at {
            self.recheck_at = Time::MAX;
        }
        self.epoch = Some(epoch);
        let keys = endpoint.data_keys(now, self.since);
        if keys != self.keys {
            self.keys = keys;
            changed = true;
        }
        changed
    }

    /// The keys for the next snapshot, and the run they are for.
    pub fn snapshot_keys(&self) -> (Option<Vec<SessionKeys>>, Option<u64>) {
        (self.keys.clone(), self.instance)
    }

    /// How often the dataplane was seen to restart.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }
}
