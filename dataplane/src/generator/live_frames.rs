//! `BPF_PROG_RUN` with XDP live frames: the kernel sends one frame, given
//! once, out of an interface millions of times a second, with no socket, no
//! copy from userspace and no skb per frame.
//!
//! The program (`detour_common::bench::GENERATE_PROGRAM`, in
//! [`crate::xdp::BENCH_OBJECT`]) answers `XDP_TX`, which the kernel turns
//! into a transmit on the interface the frame "arrived" on. Over a veth, the
//! frame lands in the peer's XDP receive ring, which exists only while the
//! peer has an XDP program attached; a full ring drops it and counts it in
//! the sending veth's driver statistics (`tx_queue_N_xdp_xmit_errors`).

use aya::Ebpf;
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp};
use detour_common::bench::GENERATE_PROGRAM;

use crate::xdp::{BENCH_OBJECT, XdpError, program_error};

/// The generator program, loaded (never attached).
pub struct LiveFrames {
    ebpf: Ebpf,
}

impl LiveFrames {
    pub fn load() -> Result<LiveFrames, XdpError> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).map_err(|e| XdpError::Load(Box::new(e)))?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(|e| program_error(GENERATE_PROGRAM, e))?;
        Ok(LiveFrames { ebpf })
    }

    /// Sends `frame` `count` times out of the interface with index
    /// `ifindex` (in the calling thread's network namespace), `batch` frames
    /// per transmit flush. Returns when all are handed to the interface.
    pub fn send(&self, frame: &[u8], ifindex: u32, count: u32, batch: u32) -> Result<(), XdpError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let program: &Xdp = self
            .ebpf
            .program(GENERATE_PROGRAM)
            .ok_or(XdpError::MissingProgram(GENERATE_PROGRAM))?
            .try_into()
            .map_err(|e| program_error(GENERATE_PROGRAM, e))?;
        program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map_err(|e| program_error(GENERATE_PROGRAM, e))?;
        Ok(())
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(GENERATE_PROGRAM)
        .ok_or(XdpError::MissingProgram(GENERATE_PROGRAM))?
        .try_into()
        .map_err(|e| program_error(GENERATE_PROGRAM, e))
}
