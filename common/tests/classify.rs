//! The classifier's pure decisions: the case table, and agreement with the
//! full wire parser on random frames.
//!
//! The kernel programs are held to the same table, and to these functions,
//! in `dataplane/tests/xdp_classifier.rs`.

use std::net::IpAddr;

use detour_common::classify::{Destination, DropReason, WanVerdict, classify_wan, lan_destination};
use detour_common::maps::PeerKey;
use detour_common::wire::{EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, OverlayFrame};
use detour_testkit::classifier_cases::{is_peer, lan_cases, wan_cases};
use detour_testkit::frames::{CONTROL_PORT, OVERLAY_PORT, mutated, overlay_seeds};
use proptest::prelude::*;

#[test]
fn every_wan_case_gets_its_verdict() {
    let mut wrong = Vec::new();
    for case in wan_cases() {
        let got = classify_wan(&case.frame[..], OVERLAY_PORT, CONTROL_PORT, is_peer);
        if got != case.verdict {
            wrong.push(format!(
                "{}: expected {:?}, got {got:?}",
                case.name, case.verdict
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn without_a_control_port_nothing_to_it_is_filtered() {
    for case in wan_cases() {
        if case.verdict == WanVerdict::Drop(DropReason::ControlStranger) {
            let got = classify_wan(&case.frame[..], OVERLAY_PORT, 0, is_peer);
            assert_eq!(got, WanVerdict::Pass, "{}", case.name);
        }
    }
}

#[test]
fn lan_destinations_are_read_exactly_when_the_header_is_whole() {
    for case in lan_cases() {
        assert_eq!(
            lan_destination(&case.frame[..]),
            destination_by_views(&case.frame),
            "{}",
            case.name
        );
    }
}

/// What the full parser says the classifier should do: overlay data exactly
/// when the frame parses as overlay, its hop limit is not spent and it comes
/// from a peer (by its real address: an IPv4-mapped IPv6 source is not the
/// IPv4 peer).
fn oracle_is_overlay(frame: &[u8]) -> bool {
    let Ok(o) = OverlayFrame::parse(frame, OVERLAY_PORT) else {
        return false;
    };
    let spoofed_v4 = matches!(o.outer_src, IpAddr::V6(a) if a.to_ipv4_mapped().is_some());
    o.option.hop_limit != 0 && !spoofed_v4 && is_peer(&PeerKey::from(o.outer_src))
}

/// The LAN destination as the checked wire views see it.
fn destination_by_views(frame: &[u8]) -> Option<Destination> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            Some(Destination::V4(ip.dst_addr().octets()))
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            Some(Destination::V6(ip.dst_addr().octets()))
        }
        _ => None,
    }
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8)>> {
    proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Damaged overlay frames: the classifier sends to a worker exactly what
    /// the full parser accepts from a peer.
    #[test]
    fn wan_agrees_with_the_wire_parser(seed in 0..overlay_seeds().len(), edits in edits(),
                                       cut in 0usize..200) {
        let seeds = overlay_seeds();
        let seed = &seeds[seed];
        // Half the cases whole, half cut somewhere.
        let cut = if cut >= 100 { seed.len() } else { cut };
        let frame = mutated(seed, &edits, cut);
        let verdict = classify_wan(&frame[..], OVERLAY_PORT, CONTROL_PORT, is_peer);
        prop_assert_eq!(verdict == WanVerdict::Overlay, oracle_is_overlay(&frame),
                        "verdict {:?} for {:02x?}", verdict, frame);
    }

    #[test]
    fn lan_agrees_with_the_wire_views(seed in 0..overlay_seeds().len(), edits in edits(),
                                      cut in 0usize..200) {
        let seeds = overlay_seeds();
        let frame = mutated(&seeds[seed], &edits, cut);
        prop_assert_eq!(lan_destination(&frame[..]), destination_by_views(&frame));
    }

    #[test]
    fn random_bytes_never_reach_a_worker_unparsed(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let verdict = classify_wan(&bytes[..], OVERLAY_PORT, CONTROL_PORT, |_| true);
        if verdict == WanVerdict::Overlay {
            prop_assert!(OverlayFrame::parse(&bytes, OVERLAY_PORT).is_ok());
        }
        prop_assert_eq!(lan_destination(&bytes[..]), destination_by_views(&bytes));
    }
}
