//! The layouts of the maps shared by the XDP programs and userspace.
//!
//! A map's name and its key and value types are the whole contract between
//! the kernel side and the dataplane (Katran's and Cilium's rule): they are
//! defined here once, `#[repr(C)]`, with no padding, and both sides use them.

use core::net::{IpAddr, Ipv6Addr};

use crate::classify::DropReason;

/// The WAN program: overlay data from known peers to the workers' sockets.
pub const WAN_PROGRAM: &str = "detour_wan";
/// The LAN program: traffic for remote sites to the workers' sockets.
pub const LAN_PROGRAM: &str = "detour_lan";
/// The pass-through program: the baseline against which the classifier's
/// cost is measured.
pub const PASS_PROGRAM: &str = "detour_pass";

/// `Array<XdpConfig>`, one slot: the settings both programs read.
pub const CONFIG_MAP: &str = "CONFIG";
/// `PerCpuArray<PacketCount>`, [`Counter::COUNT`] slots, indexed by
/// [`Counter`]: what the classifier did with every frame.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// `HashMap<PeerKey, u16>`: the underlay addresses overlay data may come
/// from, each with the node id of the peer (for operators; the program only
/// tests membership).
pub const PEERS_MAP: &str = "PEERS";
/// `LpmTrie<[u8; 4], u16>`: remote IPv4 prefixes and the node serving each.
pub const REMOTE_V4_MAP: &str = "REMOTE_V4";
/// `LpmTrie<[u8; 16], u16>`: remote IPv6 prefixes and the node serving each.
pub const REMOTE_V6_MAP: &str = "REMOTE_V6";
/// `XskMap` of the WAN interface, indexed by receive queue.
pub const WAN_SOCKETS_MAP: &str = "WAN_SOCKETS";
/// `XskMap` of the LAN interface, indexed by receive queue.
pub const LAN_SOCKETS_MAP: &str = "LAN_SOCKETS";
/// `LruPerCpuHashMap<PeerKey, u64>`: datagrams to the control port the
/// WAN program dropped, by source address (the most recent
/// [`MAX_CONTROL_STRANGERS`] sources).
pub const CONTROL_STRANGERS_MAP: &str = "CONTROL_STRANGERS";
/// `PerCpuArray<PacketCount>`, one slot: what `detour_pass` saw.
pub const PASS_COUNT_MAP: &str = "PASS_COUNT";

/// Slots in each socket map: the most receive queues one interface can hand
/// to workers.
pub const MAX_QUEUES: u32 = 64;
/// Entries in the peer allow-list.
pub const MAX_PEERS: u32 = 4096;
/// Entries in each remote-prefix trie.
pub const MAX_REMOTE_PREFIXES: u32 = 16384;
/// Sources kept in [`CONTROL_STRANGERS_MAP`]; the least recent go first.
pub const MAX_CONTROL_STRANGERS: u32 = 1024;

/// Packets and bytes seen, kept per CPU by a program and summed by userspace.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

impl PacketCount {
    /// Adds another CPU's count (wrapping, as the kernel's counters do).
    pub fn merge(self, other: PacketCount) -> PacketCount {
        PacketCount {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// The settings of the XDP programs, written by the loader before it
/// attaches them.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpConfig {
    /// The UDP port overlay data arrives on.
    pub overlay_port: u16,
    /// [`XdpConfig::DROP_WITHOUT_SOCKET`] or 0.
    pub flags: u16,
    /// The UDP port of the control process, which only peers may reach; 0
    /// (the loader's) until a control process has installed its routes
    /// and with them the peers: nothing to it is filtered before.
    pub control_port: u16,
}

impl XdpConfig {
    /// A frame for a worker whose queue has no socket (the worker is not up
    /// yet, or has gone) is dropped instead of passed to the kernel.
    pub const DROP_WITHOUT_SOCKET: u16 = 1;

    pub const fn new(overlay_port: u16, no_socket: NoSocket) -> Self {
        let flags = match no_socket {
            NoSocket::Pass => 0,
            NoSocket::Drop => Self::DROP_WITHOUT_SOCKET,
        };
        XdpConfig {
            overlay_port,
            flags,
            control_port: 0,
        }
    }

    /// The same with `port` as the control port (0: none).
    pub const fn with_control_port(self, port: u16) -> Self {
        XdpConfig {
            control_port: port,
            ..self
        }
    }

    pub const fn no_socket(&self) -> NoSocket {
        if self.flags & Self::DROP_WITHOUT_SOCKET != 0 {
            NoSocket::Drop
        } else {
            NoSocket::Pass
        }
    }
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig::new(crate::wire::geneve::DEFAULT_PORT, NoSocket::Pass)
    }
}

/// What the programs do with a frame meant for a worker when the receive
/// queue it arrived on has no socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NoSocket {
    /// Hand it to the kernel, as if detour were not there (the default: a
    /// gateway whose dataplane is restarting keeps its local traffic).
    #[default]
    Pass,
    /// Drop it.
    Drop,
}

impl core::str::FromStr for NoSocket {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pass" => Ok(NoSocket::Pass),
            "drop" => Ok(NoSocket::Drop),
            _ => Err("expected pass or drop"),
        }
    }
}

impl core::fmt::Display for NoSocket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            NoSocket::Pass => "pass",
            NoSocket::Drop => "drop",
        })
    }
}

/// A peer's underlay address as the allow-list keys it: IPv6, or IPv4
/// mapped into IPv6 (`::ffff:a.b.c.d`), so one map serves both underlays.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerKey {
    pub addr: [u8; 16],
}

impl PeerKey {
    pub const fn v4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        PeerKey {
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        }
    }

    pub const fn v6(octets: [u8; 16]) -> Self {
        PeerKey { addr: octets }
    }

    /// True for the keys of IPv4 addresses (`::ffff:0:0/96`).
    pub const fn is_ipv4_mapped(&self) -> bool {
        matches!(self.addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ..])
    }
}

impl From<IpAddr> for PeerKey {
    fn from(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => PeerKey::v4(a.octets()),
            IpAddr::V6(a) => PeerKey::v6(a.octets()),
        }
    }
}

impl From<PeerKey> for IpAddr {
    fn from(key: PeerKey) -> Self {
        let v6 = Ipv6Addr::from(key.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}

/// What the classifier does with a frame, then an index into
/// [`COUNTERS_MAP`].
///
/// Every frame a program sees moves exactly one counter, so the counters
/// account for all of them: received = to a worker + passed + dropped.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// WAN: overlay data from a peer, redirected to the queue's socket.
    WanToWorker = 0,
    /// WAN: not overlay data (control messages, everything else): passed.
    WanPass,
    /// WAN: overlay data for a queue without a socket, passed.
    WanNoSocketPass,
    /// WAN: overlay data for a queue without a socket, dropped.
    WanNoSocketDrop,
    /// WAN drop: the frame ends inside the overlay headers or before the
    /// length its IP header declares.
    DropTruncated,
    /// WAN drop: an IP or UDP length field contradicts the headers around it.
    DropLength,
    /// WAN drop: an IPv4 fragment for the overlay port (overlay senders set DF).
    DropFragment,
    /// WAN drop: a GENEVE version other than 0.
    DropGeneveVersion,
    /// WAN drop: options other than exactly detour's one option.
    DropGeneveOptions,
    /// WAN drop: an OAM frame, or an inner protocol other than IPv4 or IPv6.
    DropGenevePayload,
    /// WAN drop: the detour option's hop limit is zero.
    DropHopLimit,
    /// WAN drop: the outer source address is not in the peer allow-list.
    DropUnknownPeer,
    /// WAN drop: UDP to the control port from an address not in the peer
    /// allow-list.
    DropControlStranger,
    /// LAN: for a remote prefix, redirected to the queue's socket.
    LanToWorker,
    /// LAN: local traffic, ARP, ND, anything not for a remote prefix: passed.
    LanPass,
    /// LAN: for a remote prefix, on a queue without a socket, passed.
    LanNoSocketPass,
    /// LAN: for a remote prefix, on a queue without a socket, dropped.
    LanNoSocketDrop,
}

/// What became of a frame the counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    ToWorker,
    Passed,
    Dropped,
}

impl Counter {
    pub const COUNT: u32 = 17;

    /// Every counter, in index order.
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::WanToWorker,
        Counter::WanPass,
        Counter::WanNoSocketPass,
        Counter::WanNoSocketDrop,
        Counter::DropTruncated,
        Counter::DropLength,
        Counter::DropFragment,
        Counter::DropGeneveVersion,
        Counter::DropGeneveOptions,
        Counter::DropGenevePayload,
        Counter::DropHopLimit,
        Counter::DropUnknownPeer,
        Counter::DropControlStranger,
        Counter::LanToWorker,
        Counter::LanPass,
        Counter::LanNoSocketPass,
        Counter::LanNoSocketDrop,
    ];

    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The counter's stable name, as the API and metrics show it.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::WanToWorker => "wan_to_worker",
            Counter::WanPass => "wan_pass",
            Counter::WanNoSocketPass => "wan_no_socket_pass",
            Counter::WanNoSocketDrop => "wan_no_socket_drop",
            Counter::DropTruncated => "wan_drop_truncated",
            Counter::DropLength => "wan_drop_length",
            Counter::DropFragment => "wan_drop_fragment",
            Counter::DropGeneveVersion => "wan_drop_geneve_version",
            Counter::DropGeneveOptions => "wan_drop_geneve_options",
            Counter::DropGenevePayload => "wan_drop_geneve_payload",
            Counter::DropHopLimit => "wan_drop_hop_limit",
            Counter::DropUnknownPeer => "wan_drop_unknown_peer",
            Counter::DropControlStranger => "wan_drop_control_stranger",
            Counter::LanToWorker => "lan_to_worker",
            Counter::LanPass => "lan_pass",
            Counter::LanNoSocketPass => "lan_no_socket_pass",
            Counter::LanNoSocketDrop => "lan_no_socket_drop",
        }
    }

    pub const fn fate(self) -> Fate {
        match self {
            Counter::WanToWorker | Counter::LanToWorker => Fate::ToWorker,
            Counter::WanPass
            | Counter::WanNoSocketPass
            | Counter::LanPass
            | Counter::LanNoSocketPass => Fate::Passed,
            _ => Fate::Dropped,
        }
    }

    /// True for the counters of the WAN program.
    pub const fn is_wan(self) -> bool {
        (self as u32) < Counter::LanToWorker as u32
    }
}

impl From<DropReason> for Counter {
    fn from(reason: DropReason) -> Self {
        match reason {
            DropReason::Truncated => Counter::DropTruncated,
            DropReason::Length => Counter::DropLength,
            DropReason::Fragment => Counter::DropFragment,
            DropReason::GeneveVersion => Counter::DropGeneveVersion,
            DropReason::GeneveOptions => Counter::DropGeneveOptions,
            DropReason::GenevePayload => Counter::DropGenevePayload,
            DropReason::HopLimit => Counter::DropHopLimit,
            DropReason::UnknownPeer => Counter::DropUnknownPeer,
            DropReason::ControlStranger => Counter::DropControlStranger,
        }
    }
}

// SAFETY: each is `repr(C)` with fields of one size or fields that leave no
// padding (checked by the size assertions below): every bit pattern is valid.
#[cfg(feature = "user")]
mod pod {
    use super::{PacketCount, PeerKey, XdpConfig};
    unsafe impl aya::Pod for PacketCount {}
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for PeerKey {}
}

const _: () = assert!(core::mem::size_of::<PacketCount>() == 16);
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 6);
const _: () = assert!(core::mem::size_of::<PeerKey>() == 16);
const _: () = assert!(Counter::ALL.len() == Counter::COUNT as usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_indexed_in_order_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            assert!(Counter::ALL[..i].iter().all(|o| o.name() != c.name()));
            assert_eq!(c.is_wan(), c.name().starts_with("wan_"));
        }
    }

    #[test]
    fn peer_keys_round_trip_both_families() {
        for a in ["192.0.2.7", "2001:db8::7", "::ffff:0:1"] {
            let a: IpAddr = a.parse().unwrap();
            assert_eq!(IpAddr::from(PeerKey::from(a)), a.to_canonical());
        }
        assert_eq!(
            PeerKey::v4([192, 0, 2, 7]).addr[10..],
            [0xff, 0xff, 192, 0, 2, 7]
        );
    }

    #[test]
    fn config_defaults_to_the_geneve_port_and_passing() {
        let c = XdpConfig::default();
        assert_eq!((c.overlay_port, c.no_socket()), (6081, NoSocket::Pass));
        assert_eq!(
            XdpConfig::new(1, NoSocket::Drop).no_socket(),
            NoSocket::Drop
        );
    }
}
