//! What several of the dataplane's test files set up the same way.

use detour_common::maps::{NoSocket, XdpConfig};
use detour_common::wire::NodeId;
use detour_dataplane::xdp::{AttachMode, Classifier, Role};
use detour_testkit::frames::OVERLAY_PORT;

/// The classifier on the gateway's WAN (`testkit::Gateway`), overlay data
/// from the peer (192.0.2.1, node 1) going to the sockets; attached in the
/// calling thread's namespace.
pub fn wan_classifier() -> Classifier {
    let mut classifier = Classifier::load(XdpConfig::new(OVERLAY_PORT, NoSocket::Drop)).unwrap();
    classifier
        .attach(Role::Wan, "wan", AttachMode::Native, false)
        .unwrap();
    classifier
        .set_peers(&[("192.0.2.1".parse().unwrap(), NodeId(1))])
        .unwrap();
    classifier
}
