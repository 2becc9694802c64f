//! The frame generators on a veth pair: every frame a generator says it
//! sent reached the other end, where an XDP program counts it, or was
//! refused by that end's full receive ring, which the sending veth counts;
//! each way the kernel runs (AF_XDP always, XDP live frames where it
//! accepts them, and where it refuses them the choice falls back and says
//! why).
//!
//! Needs root; fails without it.

use aya::programs::XdpMode;
use detour_dataplane::generator::{Generator, Method, live_frames_refused};
use detour_dataplane::xdp::PassProgram;
use detour_testkit::{Netns, frames, require_root};

/// Frames of each of the two kinds sent.
const EACH: u32 = 5000;

fn tx_dropped(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip(&["-j", "-s", "link", "show", "dev", dev]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json[0]["stats64"]["tx"]["dropped"].as_u64().unwrap()
}

fn methods() -> Vec<Method> {
    match live_frames_refused() {
        None => vec![Method::AfXdp, Method::LiveFrames],
        Some(why) => {
            eprintln!("XDP live frames not tested: {why}");
            let fallback = Method::choose(Method::LiveFrames).unwrap();
            if std::env::var_os(detour_dataplane::generator::METHOD_VARIABLE).is_none() {
                assert_eq!(fallback.method, Method::AfXdp);
                assert!(fallback.why.contains("refused"), "{}", fallback.why);
            }
            vec![Method::AfXdp]
        }
    }
}

#[test]
fn netns_every_frame_a_generator_sends_is_received_or_refused_and_counted() {
    require_root();
    let sender = Netns::new("gen-tx").unwrap();
    let receiver = Netns::new("gen-rx").unwrap();
    for ns in [&sender, &receiver] {
        ns.quiet().unwrap();
    }
    sender.veth("eth0", &receiver, "eth0").unwrap();
    for ns in [&sender, &receiver] {
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    // A veth takes XDP frames only while its peer has an XDP program.
    let pass = receiver
        .enter(|| {
            let mut pass = PassProgram::load().unwrap();
            pass.attach("eth0", XdpMode::default()).unwrap();
            pass
        })
        .unwrap();
    let kinds = vec![frames::overlay_v4(), frames::arp()];
    for method in methods() {
        let (counted, dropped) = (pass.count().unwrap().packets, tx_dropped(&sender, "eth0"));
        sender
            .enter(|| {
                let mut generator = Generator::new(method, "eth0", 0, kinds.clone()).unwrap();
                assert_eq!(generator.method(), method);
                for kind in 0..kinds.len() {
                    generator.send(kind, EACH).unwrap();
                }
            })
            .unwrap();
        let sent = u64::from(EACH) * kinds.len() as u64;
        let arrived = pass.count().unwrap().packets - counted;
        let refused = tx_dropped(&sender, "eth0") - dropped;
        eprintln!("{method}: {sent} sent, {arrived} arrived, {refused} refused");
        assert_eq!(arrived + refused, sent, "{method}");
        assert!(arrived > 0, "{method}: nothing arrived");
    }
}
