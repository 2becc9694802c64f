//! The XDP programs: the object built from `ebpf/`, loading, attaching to an
//! interface, and reading the programs' counters.

use aya::maps::PerCpuArray;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError};
use detour_common::maps::{PASS_COUNT_MAP, PASS_PROGRAM, PacketCount};

/// The eBPF object, built by `build.rs` and aligned as the ELF parser needs.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detour-xdp"));

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
    #[error(
        "attaching XDP program {program:?} to interface {iface:?} ({mode:?} mode) failed: {source}"
    )]
    Attach {
        program: &'static str,
        iface: String,
        mode: XdpMode,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("reading map {map:?}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// The pass-through program, loaded into the kernel.
///
/// It lets every frame through and counts it per CPU. Attachments are bpf
/// links owned by this value: they are removed when it drops, and by the
/// kernel when the process dies, even by SIGKILL.
pub struct PassProgram {
    ebpf: Ebpf,
}

impl PassProgram {
    /// Loads the object and the program into the kernel (verifier included).
    pub fn load() -> Result<Self, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|e| program_error(PASS_PROGRAM, e))?;
        Ok(PassProgram { ebpf })
    }

    /// Attaches the program to `iface`, in the calling thread's network
    /// namespace.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), XdpError> {
        program_mut(&mut self.ebpf)?
            .attach(iface, mode)
            .map_err(|source| XdpError::Attach {
                program: PASS_PROGRAM,
                iface: iface.to_owned(),
                mode,
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// The program itself, for `BPF_PROG_TEST_RUN` (aya's `TestRun`).
    pub fn program(&self) -> Result<&Xdp, XdpError> {
        self.ebpf
            .program(PASS_PROGRAM)
            .ok_or(XdpError::MissingProgram(PASS_PROGRAM))?
            .try_into()
            .map_err(|e| program_error(PASS_PROGRAM, e))
    }

    /// Frames and bytes seen, summed over every CPU.
    pub fn count(&self) -> Result<PacketCount, XdpError> {
        let map_err = |source| XdpError::Map {
            map: PASS_COUNT_MAP,
            source,
        };
        let map = self
            .ebpf
            .map(PASS_COUNT_MAP)
            .ok_or(XdpError::MissingMap(PASS_COUNT_MAP))?;
        let counts = PerCpuArray::<_, PacketCount>::try_from(map).map_err(map_err)?;
        let per_cpu = counts.get(&0, 0).map_err(map_err)?;
        Ok(per_cpu
            .iter()
            .fold(PacketCount::default(), |a, c| a.merge(*c)))
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(PASS_PROGRAM)
        .ok_or(XdpError::MissingProgram(PASS_PROGRAM))?
        .try_into()
        .map_err(|e| program_error(PASS_PROGRAM, e))
}

fn program_error(program: &'static str, source: ProgramError) -> XdpError {
    XdpError::Program {
        program,
        source: Box::new(source),
    }
}
