//! The forwarding paths measured: detour's three, and the baselines a user
//! would otherwise run, each set up on the gateway (the device under test)
//! and torn down when its [`Dut`] drops.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use aya::programs::XdpMode;
use detour_common::api::Client;
use detour_dataplane::config::ConfigFile;
use detour_dataplane::daemon;
use detour_dataplane::generator::sealer::PeerSealer;
use detour_dataplane::xdp::PassProgram;
use detour_testkit::{Family, Gateway, Netns, ScratchPath, eventually};
use serde::Serialize;

use crate::bed::{Bed, Side};
use crate::forwarders::{self, Forwarder};
use crate::sealing;
use crate::xdp::BenchXdp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// detour: overlay in from node 3, out again to node 2.
    Relay,
    /// The same with the frames sealed by node 3 for node 2, whose key the
    /// gateway does not hold (`encryption = "aead"`).
    RelaySealed,
    /// detour: a site packet in on the LAN, out encapsulated to node 2.
    Encap,
    /// The same, sealed on the way out.
    EncapSealed,
    /// detour: overlay in from node 2, out decapsulated to the site host.
    Decap,
    /// The same with every frame sealed by node 2 under a new counter,
    /// opened on the way in.
    DecapSealed,
    /// Linux IP forwarding, LAN to WAN, all on the receiving CPU.
    KernelForward,
    /// The same with RPS steering the forwarding to the worker core.
    KernelForwardRps,
    /// A userspace UDP relay (recvmmsg/sendmmsg, batches of 64).
    UdpRelay,
    /// An XDP program redirecting LAN to WAN.
    XdpRedirect,
    /// AF_XDP, MAC swap only: the most an AF_XDP forwarder gets here.
    AfXdpSwap,
}

impl Path {
    pub const ALL: [Path; 11] = [
        Path::Relay,
        Path::RelaySealed,
        Path::Encap,
        Path::EncapSealed,
        Path::Decap,
        Path::DecapSealed,
        Path::KernelForward,
        Path::KernelForwardRps,
        Path::UdpRelay,
        Path::XdpRedirect,
        Path::AfXdpSwap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::Relay => "detour relay",
            Path::RelaySealed => "detour relay, sealed",
            Path::Encap => "detour encap",
            Path::EncapSealed => "detour encap, sealed",
            Path::Decap => "detour decap",
            Path::DecapSealed => "detour decap, sealed",
            Path::KernelForward => "Linux IP forwarding",
            Path::KernelForwardRps => "Linux IP forwarding + RPS",
            Path::UdpRelay => "UDP relay (recvmmsg/sendmmsg 64)",
            Path::XdpRedirect => "XDP_REDIRECT forwarder",
            Path::AfXdpSwap => "AF_XDP MAC swap (ceiling)",
        }
    }

    /// The short name `--paths` takes.
    pub fn key(self) -> &'static str {
        match self {
            Path::Relay => "relay",
            Path::RelaySealed => "relay-sealed",
            Path::Encap => "encap",
            Path::EncapSealed => "encap-sealed",
            Path::Decap => "decap",
            Path::DecapSealed => "decap-sealed",
            Path::KernelForward => "linux",
            Path::KernelForwardRps => "linux-rps",
            Path::UdpRelay => "udp-relay",
            Path::XdpRedirect => "xdp-redirect",
            Path::AfXdpSwap => "afxdp",
        }
    }

    pub fn is_detour(self) -> bool {
        self.dataplane().is_some()
    }

    /// For detour's paths, whether the gateway's dataplane encrypts.
    fn dataplane(self) -> Option<Encryption> {
        match self {
            Path::Relay | Path::Encap | Path::Decap => Some(Encryption::None),
            Path::RelaySealed | Path::EncapSealed | Path::DecapSealed => Some(Encryption::Aead),
            _ => None,
        }
    }

    /// A sealed path's twin in the clear, what its rate is compared with.
    pub fn in_the_clear(self) -> Option<Path> {
        match self {
            Path::RelaySealed => Some(Path::Relay),
            Path::EncapSealed => Some(Path::Encap),
            Path::DecapSealed => Some(Path::Decap),
            _ => None,
        }
    }

    /// Whether the generator's stamp reaches the sink readable: not where
    /// the gateway seals it (it arrives encrypted, the tag behind it).
    pub fn stamps_arrive(self) -> bool {
        self != Path::EncapSealed
    }

    /// Where the generator sends from and the sink counts.
    pub fn ends(self) -> (Side, Side) {
        match self {
            Path::Relay | Path::RelaySealed | Path::UdpRelay | Path::AfXdpSwap => {
                (Side::Peer, Side::Peer)
            }
            Path::Encap
            | Path::EncapSealed
            | Path::KernelForward
            | Path::KernelForwardRps
            | Path::XdpRedirect => (Side::Host, Side::Peer),
            Path::Decap | Path::DecapSealed => (Side::Peer, Side::Host),
        }
    }

    /// What the generator sends, for `size`-byte site frames.
    pub fn frames(self, bed: &Bed, size: usize) -> Result<Frames> {
        let peer = Ipv4Addr::new(192, 0, 2, 1);
        let relayed = || bed.site_frame(3, Ipv4Addr::new(10, 2, 0, 8), size);
        let to_host = || bed.site_frame(2, Ipv4Addr::new(10, 1, 0, 5), size);
        Ok(Frames::Repeated(match self {
            Path::Relay => bed.overlay(
                3,
                Ipv4Addr::new(192, 0, 2, 99),
                2,
                Ipv4Addr::new(10, 2, 0, 8),
                size,
            ),
            Path::RelaySealed => bed
                .sealer(3, 2, 1)?
                .sealed(&relayed())
                .map_err(|why| anyhow!("sealing the relayed frame: {why:?}"))?,
            Path::Decap => bed.overlay(2, peer, 1, Ipv4Addr::new(10, 1, 0, 5), size),
            Path::DecapSealed => {
                return Ok(Frames::SealedAfresh {
                    site_frame: to_host(),
                    sealer: bed.node_2_sealer()?,
                });
            }
            Path::Encap | Path::EncapSealed => bed.host_frame(Ipv4Addr::new(10, 2, 0, 7), size),
            Path::KernelForward | Path::KernelForwardRps | Path::XdpRedirect => {
                bed.host_frame(peer, size)
            }
            Path::UdpRelay | Path::AfXdpSwap => bed.peer_frame(size),
        }))
    }

    /// The gateway's interface the generator's frames arrive on.
    pub fn input(self) -> &'static str {
        match self.ends().0 {
            Side::Peer => "wan",
            Side::Host => "lan",
        }
    }

    /// Sets the path up on the gateway, its work on `cores`.
    pub fn start(self, bed: &Bed, cores: &[usize]) -> Result<Dut> {
        let gw = &bed.net.gw;
        let mut dut = Dut::default();
        match self {
            Path::Relay
            | Path::RelaySealed
            | Path::Encap
            | Path::EncapSealed
            | Path::Decap
            | Path::DecapSealed => {
                let encryption = self.dataplane().expect("one of detour's paths");
                dut.dataplane = Some(Dataplane::start(bed, cores, encryption)?);
            }
            Path::KernelForward | Path::KernelForwardRps => {
                // veth hands frames sent with XDP (the generator) only to a
                // peer that runs XDP: a pass-through program, as a NIC
                // driver with XDP support would run.
                dut.pass = Some(pass_on(bed, "lan")?);
                gw.sysctl("net.ipv4.ip_forward", "1")?;
                dut.forwarding = true;
                if self == Path::KernelForwardRps {
                    let mask = cores.iter().fold(0u64, |m, c| m | 1 << c);
                    set_rps(bed, &format!("{mask:x}"))?;
                    dut.rps = true;
                }
            }
            Path::UdpRelay => {
                dut.pass = Some(pass_on(bed, "wan")?);
                dut.forwarder = Some(forwarders::udp_relay(gw, cores[0])?);
            }
            Path::XdpRedirect => {
                let (src, dst) = (bed.gw_wan.0, bed.peer_mac.0);
                dut.redirect = Some(gw.enter(|| BenchXdp::redirect("lan", "wan", src, dst))??);
            }
            Path::AfXdpSwap => {
                dut.forwarder = Some(forwarders::af_xdp_swap(gw, bed.queues, cores)?);
            }
        }
        Ok(dut)
    }
}

fn pass_on(bed: &Bed, iface: &str) -> Result<PassProgram> {
    bed.net.gw.enter(|| -> Result<PassProgram> {
        let mut pass = PassProgram::load()?;
        pass.attach(iface, XdpMode::Driver)?;
        Ok(pass)
    })?
}

/// The NAPI threads of interfaces named `iface` (in any namespace).
pub fn napi_threads(iface: &str) -> Vec<i32> {
    tasks_named("/proc", &format!("napi/{iface}-"))
}

/// The ids of the tasks listed in `dir` (`/proc`, or a process's `task`
/// folder) whose name starts with `prefix`.
fn tasks_named(dir: &str, prefix: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Moves the receive work of `iface` in `ns` off the sending CPU (where
/// veth does it) into NAPI threads pinned to `cores`, as a NIC's interrupts
/// would be steered to the cores that serve its queues. Needs an XDP
/// program attached (veth's NAPI exists only then). The threads are told
/// from other namespaces' by being new: `before` lists the NAPI threads of
/// interfaces of this name from before the program was attached.
pub fn receive_on(ns: &Netns, iface: &str, cores: &[usize], before: &[i32]) -> Result<()> {
    let out = ns.exec(
        "sh",
        &["-c", &format!("echo 1 > /sys/class/net/{iface}/threaded")],
    )?;
    if !out.status.success() {
        return Err(anyhow!(
            "threaded NAPI on {iface}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ours: Vec<i32> = napi_threads(iface)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    if ours.is_empty() {
        return Err(anyhow!("no NAPI thread appeared for {iface}"));
    }
    for (i, pid) in ours.iter().enumerate() {
        let core = cores[i % cores.len()];
        // SAFETY: a zeroed cpu_set_t with one bit set, passed by pointer.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(core, &mut set);
            libc::sched_setaffinity(*pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc != 0 {
            return Err(anyhow!(
                "pinning NAPI thread {pid} to CPU {core}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// RPS on every receive queue of the gateway's LAN link.
fn set_rps(bed: &Bed, mask: &str) -> Result<()> {
    let script =
        format!("for q in /sys/class/net/lan/queues/rx-*/rps_cpus; do echo {mask} > $q; done");
    let out = bed.net.gw.exec("sh", &["-c", &script])?;
    if !out.status.success() {
        return Err(anyhow!(
            "setting RPS: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// What one path set up on the gateway: its programs and threads go on
/// drop; [`Dut::stop`] also puts the sysctls back.
#[derive(Default)]
pub struct Dut {
    dataplane: Option<Dataplane>,
    pass: Option<PassProgram>,
    redirect: Option<BenchXdp>,
    forwarder: Option<Forwarder>,
    forwarding: bool,
    rps: bool,
}

impl Dut {
    /// The threads doing the path's userspace work, if it has any.
    pub fn worker_tids(&self) -> Vec<i32> {
        if let Some(f) = &self.forwarder {
            return f.tids.clone();
        }
        if self.dataplane.is_some() {
            return tasks_named("/proc/self/task", "worker-q");
        }
        Vec::new()
    }

    /// The dataplane's drops by reason, if it ran.
    pub fn dataplane_drops(&self) -> Option<Vec<(String, u64)>> {
        let d = self.dataplane.as_ref()?;
        let stats = Client::connect(d.api.path())
            .and_then(|mut c| c.stats())
            .ok()?;
        Some(
            stats
                .total
                .dropped
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    pub fn stop(mut self, bed: &Bed) -> Result<()> {
        let gw = &bed.net.gw;
        if self.forwarding {
            gw.sysctl("net.ipv4.ip_forward", "0")?;
        }
        if self.rps {
            set_rps(bed, "0")?;
        }
        self.dataplane.take();
        self.forwarder.take();
        // Programs are detached as they drop.
        Ok(())
    }
}

/// What a path's generator sends.
pub enum Frames {
    /// One frame, over and over.
    Repeated(Vec<u8>),
    /// A site frame that a peer's worker seals afresh each time it goes, so
    /// that the gateway opens every one (it drops a counter seen before).
    SealedAfresh {
        site_frame: Vec<u8>,
        sealer: Arc<PeerSealer>,
    },
}

impl Frames {
    /// The frame a generator that sends one frame over and over would
    /// send, if it may.
    pub fn repeated(&self) -> Option<&[u8]> {
        match self {
            Frames::Repeated(frame) => Some(frame),
            Frames::SealedAfresh { .. } => None,
        }
    }
}

/// Whether detour's dataplane seals and opens (as `encryption` in the
/// control process's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encryption {
    None,
    Aead,
}

/// detour's dataplane in the gateway's namespace, in this process (its
/// workers are threads here, so their CPU time can be read), as node 1 of
/// testkit's three-node table: nodes 2 and 3 direct; with its sessions'
/// keys when it encrypts.
struct Dataplane {
    api: ScratchPath,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Dataplane {
    fn start(bed: &Bed, cores: &[usize], encryption: Encryption) -> Result<Dataplane> {
        let api = ScratchPath::new("bench-api");
        let queues: Vec<u32> = (0..bed.queues).collect();
        let cores: Vec<usize> = (0..bed.queues as usize)
            .map(|q| cores[q % cores.len()])
            .collect();
        let config = ConfigFile::parse(&format!(
            "node_id = 1\n[wan]\ninterface = \"wan\"\n[lan]\ninterface = \"lan\"\n\
             [afxdp]\nqueues = {queues:?}\ncores = {cores:?}\n[api]\nsocket = {:?}\n",
            api.path()
        ))
        .map_err(|e| anyhow!("the bench's dataplane config: {e}"))?
        .check(&detour_dataplane::config::usable_cores())?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            bed.net.gw.spawn(move || daemon::run(&config, &stop))?
        };
        let mut dataplane = Dataplane {
            api,
            stop,
            thread: Some(thread),
        };
        let up = eventually(Duration::from_secs(10), || {
            Client::connect(dataplane.api.path())
                .and_then(|mut c| c.health())
                .is_ok()
        });
        if !up {
            let error = dataplane.finish().err();
            return Err(anyhow!("the dataplane's API never answered: {error:?}"));
        }
        let mut snapshot = Gateway::snapshot(Family::V4, 1, 2);
        let mut api = Client::connect(dataplane.api.path())?;
        if encryption == Encryption::Aead {
            // Keys are taken only for the run they were made for.
            snapshot.dataplane_instance = Some(api.health()?.instance);
            snapshot.sessions = Some(sealing::gateway_sessions());
        }
        api.install(snapshot)
            .context("installing the route table")?;
        Ok(dataplane)
    }

    fn finish(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(anyhow!("the dataplane panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("bench: the dataplane stopped with an error: {e:#}");
        }
    }
}
