//! The classifier: the WAN and LAN programs, their maps, and their
//! attachment to interfaces.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::str::FromStr;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, XskMap};
use aya::programs::{Xdp, XdpMode};
use detour_common::maps::{
    CONFIG_MAP, CONTROL_STRANGERS_MAP, COUNTERS_MAP, Counter, LAN_PROGRAM, LAN_SOCKETS_MAP,
    MAX_QUEUES, PEERS_MAP, PacketCount, PeerKey, REMOTE_V4_MAP, REMOTE_V6_MAP, WAN_PROGRAM,
    WAN_SOCKETS_MAP, XdpConfig,
};
use detour_common::wire::NodeId;
use ipnet::IpNet;

use super::iface;
use super::{Counters, OBJECT, XdpError, map_error, program_error};

/// Which side of the gateway a program serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The interface toward the underlay, where overlay data arrives.
    Wan,
    /// The interface toward the local site's hosts.
    Lan,
}

impl Role {
    pub const fn program(self) -> &'static str {
        match self {
            Role::Wan => WAN_PROGRAM,
            Role::Lan => LAN_PROGRAM,
        }
    }

    const fn sockets_map(self) -> &'static str {
        match self {
            Role::Wan => WAN_SOCKETS_MAP,
            Role::Lan => LAN_SOCKETS_MAP,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Wan => "WAN",
            Role::Lan => "LAN",
        })
    }
}

/// The XDP mode asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// In the driver, before any socket buffer exists; the fast one. Falls
    /// back to skb mode, with a warning, where the driver refuses it.
    #[default]
    Native,
    /// Generic XDP, after the driver; works on every interface.
    Skb,
}

impl AttachMode {
    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        })
    }
}

impl FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(AttachMode::Native),
            "skb" => Ok(AttachMode::Skb),
            other => Err(format!(
                "unknown XDP mode {other:?}: expected native or skb"
            )),
        }
    }
}

/// A program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub role: Role,
    pub iface: String,
    pub ifindex: u32,
    /// The mode it runs in, which is skb where native was refused.
    pub mode: AttachMode,
}

/// The classifier programs, loaded, with their maps.
///
/// Attachments are bpf links owned by this value: they are removed when it
/// drops, and by the kernel when the process dies, even by SIGKILL.
pub struct Classifier {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
}

impl Classifier {
    /// Loads both programs (the verifier runs here) and writes `config`.
    pub fn load(config: XdpConfig) -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
        for role in [Role::Wan, Role::Lan] {
            program_mut(&mut ebpf, role)?
                .load()
                .map_err(|e| program_error(role.program(), e))?;
        }
        let mut classifier = Classifier {
            ebpf,
            attachments: Vec::new(),
        };
        classifier.set_config(config)?;
        Ok(classifier)
    }

    /// Replaces the programs' settings; takes effect with the next frame.
    pub fn set_config(&mut self, config: XdpConfig) -> Result<(), XdpError> {
        let mut map: Array<_, XdpConfig> = self.map_mut(CONFIG_MAP)?;
        map.set(0, config, 0).map_err(map_error(CONFIG_MAP))
    }

    /// The programs' settings as written last.
    pub fn config(&self) -> Result<XdpConfig, XdpError> {
        let map = self
            .ebpf
            .map(CONFIG_MAP)
            .ok_or(XdpError::MissingMap(CONFIG_MAP))?;
        let map: Array<_, XdpConfig> = Array::try_from(map).map_err(map_error(CONFIG_MAP))?;
        map.get(&0, 0).map_err(map_error(CONFIG_MAP))
    }

    /// Filters UDP to `port` (0: nothing) from every address not in the
    /// peer allow-list; the other settings stay.
    pub fn set_control_port(&mut self, port: u16) -> Result<(), XdpError> {
        let config = self.config()?;
        if config.control_port != port {
            self.set_config(config.with_control_port(port))?;
        }
        Ok(())
    }

    /// Attaches `role`'s program to `iface` (in the calling thread's network
    /// namespace) through a bpf link.
    ///
    /// An interface that carries another XDP program is refused, unless
    /// `replace` is set: then that program is detached first. In native
    /// mode, a driver that refuses native XDP gets the program in skb mode,
    /// with a warning; the returned attachment says which mode runs.
    pub fn attach(
        &mut self,
        role: Role,
        iface: &str,
        mode: AttachMode,
        replace: bool,
    ) -> Result<Attachment, XdpError> {
        if let Some(taken) = self.attachments.iter().find(|a| a.role == role) {
            return Err(XdpError::RoleTaken {
                role,
                iface: taken.iface.clone(),
            });
        }
        let ifindex = iface::ifindex(iface).map_err(|source| XdpError::NoInterface {
            iface: iface.to_owned(),
            source,
        })?;
        let netlink = |source| XdpError::Netlink {
            iface: iface.to_owned(),
            source,
        };
        if let Some(foreign) = iface::attached_program(ifindex).map_err(netlink)? {
            let name = iface::program_name(foreign.id).unwrap_or_else(|| "?".to_owned());
            if !replace {
                return Err(XdpError::Foreign {
                    iface: iface.to_owned(),
                    name,
                    id: foreign.id,
                    mode: foreign.mode,
                });
            }
            tracing::warn!(
                iface,
                program = name,
                id = foreign.id,
                mode = %foreign.mode,
                "replacing the XDP program already on the interface"
            );
            iface::detach(ifindex, &foreign).map_err(netlink)?;
        }

        let program = program_mut(&mut self.ebpf, role)?;
        let mode = match (mode, program.attach(iface, mode.flags())) {
            (_, Ok(_)) => mode,
            (AttachMode::Native, Err(native)) => {
                tracing::warn!(
                    iface,
                    error = %native,
                    "the driver refused native XDP; attaching in skb mode, which is slower"
                );
                program
                    .attach(iface, XdpMode::Skb)
                    .map_err(|source| attach_error(role, iface, AttachMode::Skb, source))?;
                AttachMode::Skb
            }
            (AttachMode::Skb, Err(source)) => {
                return Err(attach_error(role, iface, AttachMode::Skb, source));
            }
        };
        let attachment = Attachment {
            role,
            iface: iface.to_owned(),
            ifindex,
            mode,
        };
        tracing::info!(iface, role = %role, %mode, "XDP program attached");
        self.attachments.push(attachment.clone());
        Ok(attachment)
    }

    /// Makes the peer allow-list exactly `peers`. New peers are added before
    /// stale ones are removed, so a peer in both the old and the new list is
    /// never missing.
    pub fn set_peers(&mut self, peers: &[(IpAddr, NodeId)]) -> Result<(), XdpError> {
        let mut map: HashMap<_, PeerKey, u16> = self.map_mut(PEERS_MAP)?;
        let wanted: HashSet<PeerKey> = peers.iter().map(|(a, _)| PeerKey::from(*a)).collect();
        for (addr, node) in peers {
            map.insert(PeerKey::from(*addr), node.0, 0)
                .map_err(map_error(PEERS_MAP))?;
        }
        let stale: Vec<PeerKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            map.remove(&key).map_err(map_error(PEERS_MAP))?;
        }
        Ok(())
    }

    /// Makes the remote prefixes (the LAN destinations that go to the
    /// overlay) exactly `prefixes`, each with the node that serves it. New
    /// prefixes are added before stale ones are removed.
    pub fn set_remote_prefixes(&mut self, prefixes: &[(IpNet, NodeId)]) -> Result<(), XdpError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for (prefix, node) in prefixes {
            match prefix.trunc() {
                IpNet::V4(p) => {
                    v4.push((Key::new(p.prefix_len().into(), p.addr().octets()), node.0))
                }
                IpNet::V6(p) => {
                    v6.push((Key::new(p.prefix_len().into(), p.addr().octets()), node.0))
                }
            }
        }
        sync_trie(self.map_mut(REMOTE_V4_MAP)?, REMOTE_V4_MAP, &v4)?;
        sync_trie(self.map_mut(REMOTE_V6_MAP)?, REMOTE_V6_MAP, &v6)
    }

    /// Puts the AF_XDP socket `socket`, bound to receive queue `queue` of
    /// `role`'s interface, where that program redirects the queue's frames.
    pub fn register_socket(
        &mut self,
        role: Role,
        queue: u32,
        socket: impl AsRawFd,
    ) -> Result<(), XdpError> {
        check_queue(queue)?;
        let name = role.sockets_map();
        let mut map: XskMap<_> = self.map_mut(name)?;
        map.set(queue, socket, 0).map_err(map_error(name))
    }

    /// Empties queue `queue`'s socket slot; its frames then meet the
    /// no-socket policy.
    pub fn unregister_socket(&mut self, role: Role, queue: u32) -> Result<(), XdpError> {
        check_queue(queue)?;
        let name = role.sockets_map();
        let mut map: XskMap<_> = self.map_mut(name)?;
        map.unset(queue).map_err(map_error(name))
    }

    /// Every counter, summed over the CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(XdpError::MissingMap(COUNTERS_MAP))?;
        let map = PerCpuArray::<_, PacketCount>::try_from(map).map_err(map_error(COUNTERS_MAP))?;
        let mut slots = [PacketCount::default(); Counter::COUNT as usize];
        for (i, slot) in slots.iter_mut().enumerate() {
            let per_cpu = map.get(&(i as u32), 0).map_err(map_error(COUNTERS_MAP))?;
            *slot = per_cpu
                .iter()
                .fold(PacketCount::default(), |a, c| a.merge(*c));
        }
        Ok(Counters::from_slots(slots))
    }

    /// The sources whose datagrams to the control port the WAN program
    /// dropped, with how many each (summed over the CPUs), most first; the
    /// map keeps the most recent [`detour_common::maps::MAX_CONTROL_STRANGERS`].
    pub fn control_strangers(&self) -> Result<Vec<(IpAddr, u64)>, XdpError> {
        let map = self
            .ebpf
            .map(CONTROL_STRANGERS_MAP)
            .ok_or(XdpError::MissingMap(CONTROL_STRANGERS_MAP))?;
        let map = PerCpuHashMap::<_, PeerKey, u64>::try_from(map)
            .map_err(map_error(CONTROL_STRANGERS_MAP))?;
        let mut strangers: Vec<(IpAddr, u64)> = map
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| (IpAddr::from(key), per_cpu.iter().sum()))
            .collect();
        strangers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(strangers)
    }

    /// `role`'s program, for `BPF_PROG_TEST_RUN` (aya's `TestRun`).
    pub fn program(&self, role: Role) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(role.program())
            .ok_or(XdpError::MissingProgram(role.program()))?
            .try_into()
            .map_err(|e| program_error(role.program(), e))
    }

    fn map_mut<'a, M>(&'a mut self, name: &'static str) -> Result<M, XdpError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.ebpf.map_mut(name).ok_or(XdpError::MissingMap(name))?;
        M::try_from(map).map_err(map_error(name))
    }
}

fn sync_trie<const N: usize>(
    mut map: LpmTrie<&mut MapData, [u8; N], u16>,
    name: &'static str,
    wanted: &[(Key<[u8; N]>, u16)],
) -> Result<(), XdpError> {
    for (key, node) in wanted {
        map.insert(key, node, 0).map_err(map_error(name))?;
    }
    let wanted: HashSet<(u32, [u8; N])> = wanted
        .iter()
        .map(|(k, _)| (k.prefix_len(), k.data()))
        .collect();
    let stale: Vec<Key<[u8; N]>> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
        .collect();
    for key in stale {
        map.remove(&key).map_err(map_error(name))?;
    }
    Ok(())
}

fn check_queue(queue: u32) -> Result<(), XdpError> {
    if queue < MAX_QUEUES {
        Ok(())
    } else {
        Err(XdpError::QueueOutOfRange {
            queue,
            max: MAX_QUEUES,
        })
    }
}

fn program_mut(ebpf: &mut Ebpf, role: Role) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(role.program())
        .ok_or(XdpError::MissingProgram(role.program()))?
        .try_into()
        .map_err(|e| program_error(role.program(), e))
}

fn attach_error(
    role: Role,
    iface: &str,
    mode: AttachMode,
    source: aya::programs::ProgramError,
) -> XdpError {
    XdpError::Attach {
        program: role.program(),
        iface: iface.to_owned(),
        mode,
        source: Box::new(source),
    }
}
