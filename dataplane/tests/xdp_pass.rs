//! The pass-through XDP program, end to end: built from `ebpf/` by build.rs,
//! loaded through the verifier, run on crafted frames with BPF_PROG_TEST_RUN,
//! and attached to a veth in a network namespace with real traffic.
//!
//! All of these need root (CAP_BPF, CAP_NET_ADMIN); they fail without it.

use std::net::UdpSocket;
use std::time::Duration;

use aya::programs::{TestRun, TestRunOptions, XdpMode};
use detour_common::maps::PacketCount;
use detour_dataplane::xdp::PassProgram;
use detour_testkit::{Gateway, require_root};

const XDP_PASS: u32 = 2;

#[test]
fn bpf_pass_program_passes_every_frame_and_counts_it() {
    require_root();
    let program = PassProgram::load().expect("load");
    // The smallest frame the kernel will run (an Ethernet header), a minimal
    // frame, a full-size one.
    let frames = [vec![0u8; 14], vec![0xab; 60], vec![0x5a; 1514]];
    for frame in &frames {
        let mut out = vec![0u8; frame.len()];
        let result = program
            .program()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        assert_eq!(result.return_value, XDP_PASS, "frame of {}", frame.len());
        assert_eq!(&out[..result.data_size_out as usize], &frame[..]);
    }
    assert_eq!(
        program.count().unwrap(),
        PacketCount {
            packets: 3,
            bytes: 14 + 60 + 1514
        }
    );
}

fn pass_program_counts_real_frames(mode: XdpMode) {
    require_root();
    const DATAGRAMS: u64 = 200;
    const PAYLOAD: usize = 100;
    // Quiet links: the only frames on the wire are the test's datagrams.
    let net = Gateway::up();

    let mut program = PassProgram::load().unwrap();
    net.gw
        .enter(|| program.attach("wan", mode))
        .unwrap()
        .unwrap();
    assert!(net.gw.xdp_attached("wan"));

    let receiver = net
        .gw
        .enter(|| UdpSocket::bind("192.0.2.2:9000"))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sender = net
        .peer
        .enter(|| UdpSocket::bind("192.0.2.1:0"))
        .unwrap()
        .unwrap();
    // One datagram at a time: in native mode veth hands the socket page-sized
    // buffers, and a burst would overflow the default receive buffer.
    let mut buf = [0u8; 2048];
    for i in 0..DATAGRAMS {
        let mut payload = [0u8; PAYLOAD];
        payload[..8].copy_from_slice(&i.to_be_bytes());
        sender.send_to(&payload, "192.0.2.2:9000").unwrap();
        let (n, _) = receiver
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("datagram {i} was not passed to the socket: {e}"));
        assert_eq!(&buf[..n], &payload[..]);
    }
    let frame_len = (14 + 20 + 8 + PAYLOAD) as u64;
    assert_eq!(
        program.count().unwrap(),
        PacketCount {
            packets: DATAGRAMS,
            bytes: DATAGRAMS * frame_len
        }
    );

    drop(program);
    assert!(
        !net.gw.xdp_attached("wan"),
        "dropping the program detaches it"
    );
}

#[test]
fn netns_pass_program_counts_real_frames_in_native_mode() {
    pass_program_counts_real_frames(XdpMode::Driver);
}

#[test]
fn netns_pass_program_counts_real_frames_in_skb_mode() {
    pass_program_counts_real_frames(XdpMode::Skb);
}
