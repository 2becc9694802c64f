//! The XDP programs: the object built from `ebpf/`, loading, attaching to
//! interfaces, their maps and counters.
//!
//! - [`Classifier`]: the WAN and LAN programs that hand packets to the
//!   workers' AF_XDP sockets (`detour_common::classify` decides).
//! - [`PassProgram`]: passes everything; the baseline for the classifier's
//!   cost and the smallest proof that loading works.
//! - [`iface`]: what an interface carries, and removing a foreign program.

mod classifier;
mod counters;
pub mod iface;
mod pass;

use aya::EbpfError;
use aya::programs::ProgramError;

pub use classifier::{AttachMode, Attachment, Classifier, Role};
pub use counters::Counters;
pub use pass::PassProgram;

/// The eBPF object, built by `build.rs` and aligned as the ELF parser needs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detour-xdp"));

/// The benchmark harness's programs (`detour_common::bench`), built from
/// the same crate; the dataplane never loads them.
pub static BENCH_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detour-bench-xdp"));

/// What can go wrong between the object and an attached program.
///
/// aya's errors are large (they carry verifier logs); they are boxed so that
/// a `Result` of this type stays small.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("loading the XDP object failed (needs root or CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(#[source] Box<EbpfError>),
    #[error("the XDP object has no program {0:?}; was it built from this source tree?")]
    MissingProgram(&'static str),
    #[error("the XDP object has no map {0:?}; was it built from this source tree?")]
    MissingMap(&'static str),
    #[error("XDP program {program:?}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("no interface {iface:?} in this network namespace")]
    NoInterface {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {iface:?} already carries XDP program {name:?} (id {id}, {mode} mode); \
         detour does not replace another program unless told to (--xdp-replace)"
    )]
    Foreign {
        iface: String,
        name: String,
        id: u32,
        mode: iface::AttachedMode,
    },
    #[error("reading or changing the XDP state of interface {iface:?}: {source}")]
    Netlink {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "attaching XDP program {program:?} to interface {iface:?} ({mode} mode) failed: {source}"
    )]
    Attach {
        program: &'static str,
        iface: String,
        mode: AttachMode,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("the {role} program is already attached, to {iface:?}; one interface per role")]
    RoleTaken { role: Role, iface: String },
    #[error("queue {queue} is beyond the {max} queues the socket maps hold")]
    QueueOutOfRange { queue: u32, max: u32 },
    #[error("map {map:?}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
}

pub(crate) fn program_error(program: &'static str, source: ProgramError) -> XdpError {
    XdpError::Program {
        program,
        source: Box::new(source),
    }
}

fn map_error(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |source| XdpError::Map {
        map,
        source: Box::new(source),
    }
}
