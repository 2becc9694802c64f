//! Resolving LAN hosts that decapsulated packets wait for.
//!
//! The table knows a LAN host's MAC address only once the kernel's
//! neighbour table has an entry for it ([`crate::neigh::NetlinkSurvey`]).
//! The kernel makes one when it sends the host something, or hears from
//! it; decapsulated packets go out through AF_XDP and never make the
//! kernel resolve anything, so a host that has not spoken would stay
//! unreachable. So a worker that holds (or drops) a packet for want of the
//! host's MAC ([`crate::rewrite::Discard::UnresolvedHost`]) notes the
//! destination in its [`UnresolvedHosts`] and rings the daemon's
//! [`crate::doorbell`]; the daemon's [`HostResolver`] takes those addresses
//! at once, asks the kernel to resolve each one that lies on the LAN
//! ([`crate::neigh::solicit`]), and the table is recompiled when the kernel
//! announces the answer ([`crate::watch`]), or soon after at the latest.
//!
//! The worker side is a fixed array of atomic slots: recording an address
//! takes no lock, allocates nothing and makes no system call, and when
//! every slot is taken the address is simply not recorded (a later drop
//! records it once the daemon has emptied the slots).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::lpm::IpKey;
use crate::neigh::{self, NextHop};

/// How many addresses a worker holds for the daemon between two looks.
pub const SLOTS: usize = 16;

// A slot's state. Only a recorder moves a slot from EMPTY (through
// WRITING) to V4 or V6; only a taker moves it back from V4 or V6 to EMPTY.
// So the address words are never written while a taker may read them.
const EMPTY: u64 = 0;
const WRITING: u64 = 1;
const V4: u64 = 2;
const V6: u64 = 3;

#[derive(Default)]
struct Slot {
    state: AtomicU64,
    hi: AtomicU64,
    lo: AtomicU64,
}

/// Addresses of LAN hosts a worker dropped packets for, waiting for the
/// daemon to take them: at most [`SLOTS`], each at most once.
pub struct UnresolvedHosts {
    slots: [Slot; SLOTS],
}

impl Default for UnresolvedHosts {
    fn default() -> Self {
        UnresolvedHosts {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl UnresolvedHosts {
    /// Notes `addr` unless it is already waiting or every slot is taken;
    /// true if it was noted. Never waits: a few atomic loads, and one
    /// compare-and-swap and three stores when the address is new.
    ///
    /// Meant for one worker (one writer): two writers at once stay safe,
    /// but may both note an address, or neither.
    #[inline]
    pub fn record(&self, addr: IpKey) -> bool {
        let (state, hi, lo) = match addr {
            IpKey::V4(a) => (V4, 0, u64::from(a)),
            IpKey::V6(a) => (V6, (a >> 64) as u64, a as u64),
        };
        let mut free = None;
        for slot in &self.slots {
            match slot.state.load(Ordering::Acquire) {
                EMPTY => {
                    free.get_or_insert(slot);
                }
                s if s == state
                    && slot.lo.load(Ordering::Relaxed) == lo
                    && slot.hi.load(Ordering::Relaxed) == hi =>
                {
                    return false;
                }
                _ => {}
            }
        }
        let Some(slot) = free else {
            return false;
        };
        // Acquire: the taker's reads of this slot's last address happened
        // before (it released the slot after them).
        if slot
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        slot.hi.store(hi, Ordering::Relaxed);
        slot.lo.store(lo, Ordering::Relaxed);
        slot.state.store(state, Ordering::Release);
        true
    }

    /// Moves every waiting address into `out`, freeing its slot.
    pub fn take(&self, out: &mut Vec<IpAddr>) {
        for slot in &self.slots {
            let state = slot.state.load(Ordering::Acquire);
            if state != V4 && state != V6 {
                continue;
            }
            let (hi, lo) = (
                slot.hi.load(Ordering::Relaxed),
                slot.lo.load(Ordering::Relaxed),
            );
            // Only one taker gets the address; Release hands the slot back
            // to the recorder after the reads above.
            if slot
                .state
                .compare_exchange(state, EMPTY, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            out.push(if state == V4 {
                IpAddr::V4(Ipv4Addr::from_bits(lo as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from_bits(u128::from(hi) << 64 | u128::from(lo)))
            });
        }
    }
}

/// How long after soliciting an address the table is recompiled: a LAN
/// host answers ARP or neighbour discovery within milliseconds. One that
/// answers later is found by the next regular refresh.
pub const REFRESH_AFTER: Duration = Duration::from_millis(100);

/// How often one address is looked at, at most: the kernel keeps
/// soliciting on its own (its `mcast_solicit` and `ucast_solicit`
/// settings) after the first request.
pub const SOLICIT_EVERY: Duration = Duration::from_secs(1);

/// The daemon's side: takes the addresses the workers recorded and asks
/// the kernel to resolve those on the LAN, and the underlay next hops on
/// the WAN.
pub struct HostResolver {
    /// The interfaces solicited on: the LAN (if any) and the WAN.
    interfaces: Vec<u32>,
    workers: Vec<Arc<UnresolvedHosts>>,
    /// When each address was last looked at (pruned after
    /// [`SOLICIT_EVERY`]).
    recent: HashMap<IpAddr, Instant>,
    taken: Vec<IpAddr>,
    /// Addresses looked at that the kernel routes elsewhere than the LAN.
    ignored: u64,
}

impl HostResolver {
    /// Takes from `workers`; solicits on the interfaces `interfaces`
    /// (the LAN's and the WAN's).
    pub fn new(interfaces: Vec<u32>, workers: Vec<Arc<UnresolvedHosts>>) -> HostResolver {
        HostResolver {
            interfaces,
            workers,
            recent: HashMap::new(),
            taken: Vec::with_capacity(SLOTS),
            ignored: 0,
        }
    }

    /// Takes what the workers recorded and solicits through the kernel;
    /// returns when the table should be recompiled, if an address was
    /// solicited or found already resolved.
    pub fn poll(&mut self, now: Instant) -> Option<Instant> {
        self.poll_with(now, neigh::next_hop, neigh::solicit)
    }

    /// [`HostResolver::poll`] with the kernel's route lookup and
    /// solicitation given (for tests).
    pub fn poll_with(
        &mut self,
        now: Instant,
        mut next_hop: impl FnMut(IpAddr) -> io::Result<NextHop>,
        mut solicit: impl FnMut(IpAddr, u32) -> io::Result<()>,
    ) -> Option<Instant> {
        self.recent
            .retain(|_, at| now.duration_since(*at) < SOLICIT_EVERY);
        self.taken.clear();
        for worker in &self.workers {
            worker.take(&mut self.taken);
        }
        let mut refresh = None;
        for &addr in &self.taken {
            if self.recent.contains_key(&addr) {
                continue;
            }
            self.recent.insert(addr, now);
            // The kernel's own route says whether the address is on the
            // LAN or the WAN (or behind a router there: then the router is
            // solicited).
            match next_hop(addr) {
                Ok(hop) if !self.interfaces.contains(&hop.ifindex) => {
                    self.ignored += 1;
                    tracing::debug!(%addr, ifindex = hop.ifindex, ignored = self.ignored, "frames wait for this address, but the kernel routes it out of neither the LAN nor the WAN; not soliciting");
                }
                Ok(NextHop { mac: Some(_), .. }) => {
                    // Resolved since the last refresh: recompile now.
                    refresh = Some(now);
                }
                Ok(hop) => match solicit(hop.gateway, hop.ifindex) {
                    Ok(()) => {
                        tracing::debug!(%addr, via = %hop.gateway, "soliciting a neighbour frames wait for");
                        refresh.get_or_insert(now + REFRESH_AFTER);
                    }
                    Err(e) => tracing::debug!(%addr, "soliciting: {e}"),
                },
                Err(e) => {
                    self.ignored += 1;
                    tracing::debug!(%addr, ignored = self.ignored, "not soliciting: {e}");
                }
            }
        }
        refresh
    }

    /// How many recorded addresses were not solicited because the kernel
    /// routes them out of neither the LAN nor the WAN interface.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str) -> IpKey {
        IpKey::from(a.parse::<IpAddr>().unwrap())
    }

    fn taken(hosts: &UnresolvedHosts) -> Vec<IpAddr> {
        let mut out = Vec::new();
        hosts.take(&mut out);
        out
    }

    #[test]
    fn an_address_waits_once_and_comes_back_whole() {
        let hosts = UnresolvedHosts::default();
        let v6: IpAddr = "2001:db8:1::8000:0:0:5".parse().unwrap();
        assert!(hosts.record(v4("10.1.0.9")));
        assert!(!hosts.record(v4("10.1.0.9")), "already waiting");
        assert!(hosts.record(IpKey::from(v6)));
        assert!(!hosts.record(IpKey::from(v6)));
        let mut got = taken(&hosts);
        got.sort();
        assert_eq!(got, ["10.1.0.9".parse::<IpAddr>().unwrap(), v6]);
        assert!(taken(&hosts).is_empty(), "taken once");
        assert!(hosts.record(v4("10.1.0.9")), "recorded again once taken");
    }

    #[test]
    fn a_full_array_refuses_without_waiting() {
        let hosts = UnresolvedHosts::default();
        let addr = |i: usize| IpKey::V4(0x0a01_0000 + i as u32);
        for i in 0..SLOTS {
            assert!(hosts.record(addr(i)));
        }
        assert!(!hosts.record(addr(SLOTS)), "full");
        assert_eq!(taken(&hosts).len(), SLOTS);
        assert!(hosts.record(addr(SLOTS)), "room again");
    }

    /// A recorder and a taker at full speed: every address taken is one
    /// that was recorded, whole (the two words of an IPv6 address are
    /// never mixed), and every address recorded is taken exactly once.
    #[test]
    fn a_recorder_and_a_taker_at_once_lose_and_tear_nothing() {
        const N: u64 = 200_000;
        let hosts = Arc::new(UnresolvedHosts::default());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let taker = {
            let (hosts, done) = (Arc::clone(&hosts), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut all = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    hosts.take(&mut all);
                    if finished {
                        return all;
                    }
                }
            })
        };
        let mut recorded = 0u64;
        for i in 0..N {
            // Both halves carry i: a torn read shows as unequal halves.
            let a = u128::from(i) << 64 | u128::from(i);
            if hosts.record(IpKey::V6(a)) {
                recorded += 1;
            }
        }
        done.store(true, Ordering::Release);
        let all = taker.join().unwrap();
        assert_eq!(all.len() as u64, recorded);
        let mut seen: Vec<u64> = all
            .iter()
            .map(|a| {
                let IpAddr::V6(a) = a else { panic!("{a}") };
                let bits = a.to_bits();
                assert_eq!((bits >> 64) as u64, bits as u64, "torn: {a}");
                bits as u64
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len() as u64, recorded, "each once");
        assert!(recorded > 0);
    }

    const LAN: u32 = 3;
    const WAN: u32 = 2;
    const OTHER: u32 = 4;

    fn hop(ifindex: u32, gateway: &str, mac: bool) -> NextHop {
        NextHop {
            ifindex,
            gateway: gateway.parse().unwrap(),
            mac: mac.then_some(detour_common::wire::MacAddr([2, 0, 0, 0, 0, 7])),
        }
    }

    #[test]
    fn neighbours_are_solicited_once_a_second_on_their_interface_and_others_ignored() {
        let hosts = Arc::new(UnresolvedHosts::default());
        let mut resolver = HostResolver::new(vec![LAN, WAN], vec![Arc::clone(&hosts)]);
        let route = |addr: IpAddr| -> io::Result<NextHop> {
            match addr.to_string().as_str() {
                "10.1.0.6" => Ok(hop(LAN, "10.1.0.6", false)),
                "10.1.9.1" => Ok(hop(LAN, "10.1.0.254", false)),
                "10.1.0.7" => Ok(hop(LAN, "10.1.0.7", true)),
                "192.0.2.50" => Ok(hop(WAN, "192.0.2.1", false)),
                "172.16.0.9" => Ok(hop(OTHER, "172.16.0.9", false)),
                _ => Err(io::Error::other("no route")),
            }
        };
        let mut solicited = Vec::new();
        let t0 = Instant::now();
        for a in [
            "10.1.0.6",
            "10.1.9.1",
            "192.0.2.50",
            "172.16.0.9",
            "10.9.9.9",
        ] {
            hosts.record(v4(a));
        }
        let refresh = resolver.poll_with(t0, route, |a, i| {
            solicited.push((a.to_string(), i));
            Ok(())
        });
        assert_eq!(refresh, Some(t0 + REFRESH_AFTER));
        assert_eq!(
            solicited,
            [
                ("10.1.0.6".to_string(), LAN),
                ("10.1.0.254".to_string(), LAN),
                ("192.0.2.1".to_string(), WAN)
            ],
            "the host on the link, the router in front of the other, the peer's next hop on the WAN"
        );
        assert_eq!(resolver.ignored(), 2);

        // Dropped again within the second: not solicited again.
        solicited.clear();
        hosts.record(v4("10.1.0.6"));
        let t1 = t0 + Duration::from_millis(500);
        let refresh = resolver.poll_with(t1, route, |a, i| {
            solicited.push((a.to_string(), i));
            Ok(())
        });
        assert_eq!((refresh, solicited.len()), (None, 0));
        // After it, again.
        hosts.record(v4("10.1.0.6"));
        let t2 = t0 + SOLICIT_EVERY;
        let refresh = resolver.poll_with(t2, route, |a, i| {
            solicited.push((a.to_string(), i));
            Ok(())
        });
        assert_eq!(refresh, Some(t2 + REFRESH_AFTER));
        assert_eq!(solicited.len(), 1);

        // Already resolved in the kernel: no solicitation, refresh now.
        hosts.record(v4("10.1.0.7"));
        let refresh = resolver.poll_with(t2, route, |_, _| panic!("solicited"));
        assert_eq!(refresh, Some(t2));
    }
}
