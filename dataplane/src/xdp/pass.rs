//! `detour_pass`: lets every frame through and counts it.

use aya::Ebpf;
use aya::maps::PerCpuArray;
use aya::programs::{Xdp, XdpMode};
use detour_common::maps::{PASS_COUNT_MAP, PASS_PROGRAM, PacketCount};

use super::{OBJECT, XdpError, map_error, program_error};

/// The pass-through program, loaded into the kernel.
///
/// Attachments are bpf links owned by this value: they are removed when it
/// drops, and by the kernel when the process dies, even by SIGKILL.
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
    /// namespace, in exactly the mode given.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), XdpError> {
        program_mut(&mut self.ebpf)?
            .attach(iface, mode)
            .map_err(|e| program_error(PASS_PROGRAM, e))?;
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
        let map = self
            .ebpf
            .map(PASS_COUNT_MAP)
            .ok_or(XdpError::MissingMap(PASS_COUNT_MAP))?;
        let counts =
            PerCpuArray::<_, PacketCount>::try_from(map).map_err(map_error(PASS_COUNT_MAP))?;
        let per_cpu = counts.get(&0, 0).map_err(map_error(PASS_COUNT_MAP))?;
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
