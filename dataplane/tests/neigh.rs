//! `detour_dataplane::neigh` against real kernels' tables: next hops, neighbours,
//! gateway routes and interface addresses read in test namespaces, and
//! `solicit` making the kernel resolve a neighbour it did not know.
//!
//! All of these need root (namespaces, CAP_NET_ADMIN); they fail without it.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use detour_common::wire::MacAddr;
use detour_dataplane::neigh::{
    NextHop, gateway_routes, interface_addrs, neighbours, next_hop, solicit,
};
use detour_dataplane::xdp::iface::ifindex;
use detour_testkit::{Gateway, Netns, eventually, require_root};
use ipnet::IpNet;

/// Runs `f` inside `ns`.
fn inside<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> R {
    ns.enter(f).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn prefix(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Two namespaces joined by a veth ("eth0" in both), IPv6 on and without
/// duplicate address detection (so that addresses are usable at once and no
/// solicitation is sent that the test did not ask for), no neighbour known:
///
/// ```text
///   a 10.9.0.1, fd00::1 ── b 10.9.0.2, fd00::2
/// ```
fn pair() -> (Netns, Netns) {
    require_root();
    let a = Netns::new("na").unwrap();
    let b = Netns::new("nb").unwrap();
    for ns in [&a, &b] {
        for scope in ["all", "default"] {
            ns.sysctl(&format!("net.ipv6.conf.{scope}.disable_ipv6"), "0")
                .unwrap();
            ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")
                .unwrap();
        }
    }
    a.veth("eth0", &b, "eth0").unwrap();
    for (ns, v4, v6) in [
        (&a, "10.9.0.1/24", "fd00::1/64"),
        (&b, "10.9.0.2/24", "fd00::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"]).unwrap();
        ns.ip(&["-6", "addr", "add", v6, "dev", "eth0", "nodad"])
            .unwrap();
    }
    (a, b)
}

#[test]
fn netns_next_hop_on_link_gives_the_static_neighbours_mac() {
    let net = Gateway::up();
    let peer_mac = net.peer.mac_addr("eth0").unwrap();
    let (hop, wan) = inside(&net.gw, || {
        (next_hop(ip("192.0.2.1")).unwrap(), ifindex("wan").unwrap())
    });
    assert_eq!(
        hop,
        NextHop {
            ifindex: wan,
            gateway: ip("192.0.2.1"),
            mac: Some(peer_mac),
        }
    );
}

#[test]
fn netns_next_hop_through_a_gateway_route_gives_the_gateways_mac() {
    let net = Gateway::up();
    net.gw
        .ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"])
        .unwrap();
    let peer_mac = net.peer.mac_addr("eth0").unwrap();
    let (hop, wan) = inside(&net.gw, || {
        (
            next_hop(ip("198.51.100.7")).unwrap(),
            ifindex("wan").unwrap(),
        )
    });
    assert_eq!(
        hop,
        NextHop {
            ifindex: wan,
            gateway: ip("192.0.2.1"),
            mac: Some(peer_mac),
        }
    );
}

#[test]
fn netns_next_hop_without_a_usable_neighbour_entry_has_no_mac() {
    let net = Gateway::up();
    // An entry the kernel is still resolving is no more usable than none.
    net.gw
        .ip(&[
            "neigh",
            "add",
            "10.1.0.9",
            "dev",
            "lan",
            "nud",
            "incomplete",
        ])
        .unwrap();
    let (absent, incomplete, wan, lan) = inside(&net.gw, || {
        (
            next_hop(ip("192.0.2.99")).unwrap(),
            next_hop(ip("10.1.0.9")).unwrap(),
            ifindex("wan").unwrap(),
            ifindex("lan").unwrap(),
        )
    });
    assert_eq!(
        absent,
        NextHop {
            ifindex: wan,
            gateway: ip("192.0.2.99"),
            mac: None,
        }
    );
    assert_eq!(
        incomplete,
        NextHop {
            ifindex: lan,
            gateway: ip("10.1.0.9"),
            mac: None,
        }
    );
}

#[test]
fn netns_neighbours_lists_the_usable_entries_of_one_interface() {
    let net = Gateway::up();
    let host_mac = net.host.mac_addr("eth0").unwrap();
    let peer_mac = net.peer.mac_addr("eth0").unwrap();
    let other = MacAddr([0x02, 0, 0, 0, 0, 0x06]);
    net.gw
        .static_neighbour("lan", "10.1.0.5", &host_mac.to_string())
        .unwrap();
    // Stale is usable (the kernel still sends to it, and re-checks).
    net.gw
        .ip(&[
            "neigh",
            "add",
            "10.1.0.6",
            "lladdr",
            &other.to_string(),
            "dev",
            "lan",
            "nud",
            "stale",
        ])
        .unwrap();
    // Incomplete and failed are not.
    net.gw
        .ip(&[
            "neigh",
            "add",
            "10.1.0.7",
            "dev",
            "lan",
            "nud",
            "incomplete",
        ])
        .unwrap();
    net.gw
        .ip(&["neigh", "add", "10.1.0.8", "dev", "lan", "nud", "failed"])
        .unwrap();
    let (lan, wan) = inside(&net.gw, || {
        (
            neighbours(ifindex("lan").unwrap()).unwrap(),
            neighbours(ifindex("wan").unwrap()).unwrap(),
        )
    });
    assert_eq!(
        lan.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([(ip("10.1.0.5"), host_mac), (ip("10.1.0.6"), other)])
    );
    assert_eq!(wan, vec![(ip("192.0.2.1"), peer_mac)]);
}

#[test]
fn netns_gateway_routes_lists_the_main_tables_via_routes_of_one_interface() {
    let net = Gateway::up();
    for route in [
        &["route", "add", "198.51.100.0/24", "via", "192.0.2.1"][..],
        &["route", "add", "default", "via", "192.0.2.1"],
        &["route", "add", "203.0.113.0/24", "via", "10.1.0.5"],
        // Another table: policy routing, not listed.
        &[
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            "192.0.2.1",
            "table",
            "100",
        ],
        // On-link, no gateway: not listed.
        &["route", "add", "192.168.7.0/24", "dev", "wan"],
    ] {
        net.gw.ip(route).unwrap();
    }
    let (wan, lan) = inside(&net.gw, || {
        (
            gateway_routes(ifindex("wan").unwrap()).unwrap(),
            gateway_routes(ifindex("lan").unwrap()).unwrap(),
        )
    });
    assert_eq!(
        wan.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            (prefix("0.0.0.0/0"), ip("192.0.2.1")),
            (prefix("198.51.100.0/24"), ip("192.0.2.1")),
        ])
    );
    assert_eq!(lan, vec![(prefix("203.0.113.0/24"), ip("10.1.0.5"))]);
}

#[test]
fn netns_interface_addrs_gives_the_first_ipv4_and_the_preferred_ipv6() {
    let net = Gateway::up();
    let (gw_wan, peer) = (
        inside(&net.gw, || {
            interface_addrs(ifindex("wan").unwrap()).unwrap()
        }),
        inside(&net.peer, || {
            interface_addrs(ifindex("eth0").unwrap()).unwrap()
        }),
    );
    // IPv6 is off in the gateway topology.
    assert_eq!(gw_wan, (Some(Ipv4Addr::new(192, 0, 2, 2)), None));
    assert_eq!(peer, (Some(Ipv4Addr::new(192, 0, 2, 1)), None));

    let (a, _b) = pair();
    let read = || inside(&a, || interface_addrs(ifindex("eth0").unwrap()).unwrap());
    // A global address wins over the link-local one.
    assert_eq!(
        read(),
        (
            Some(Ipv4Addr::new(10, 9, 0, 1)),
            Some("fd00::1".parse().unwrap())
        )
    );
    // Without one, the link-local address (fe80::/64 from the MAC) is it.
    a.ip(&["-6", "addr", "del", "fd00::1/64", "dev", "eth0"])
        .unwrap();
    let (v4, v6) = read();
    assert_eq!(v4, Some(Ipv4Addr::new(10, 9, 0, 1)));
    let v6 = v6.expect("a link-local address");
    assert_eq!(v6.segments()[..4], [0xfe80, 0, 0, 0], "{v6}");
    // A tentative address (still in duplicate address detection) is not
    // one the kernel sends from.
    a.sysctl("net.ipv6.conf.eth0.accept_dad", "1").unwrap();
    a.ip(&["-6", "addr", "add", "fd00::7/64", "dev", "eth0"])
        .unwrap();
    let during_dad = read().1;
    let tentative = a
        .ip(&["-6", "addr", "show", "dev", "eth0", "tentative"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tentative.stdout).contains("fd00::7"),
        "fd00::7 left duplicate address detection before it was read"
    );
    assert_eq!(during_dad, Some(v6));
}

#[test]
fn netns_ipv6_next_hops_neighbours_and_gateway_routes() {
    let (a, b) = pair();
    let b_mac = b.mac_addr("eth0").unwrap();
    a.static_neighbour("eth0", "fd00::2", &b_mac.to_string())
        .unwrap();
    a.ip(&["-6", "route", "add", "2001:db8:5::/48", "via", "fd00::2"])
        .unwrap();
    // An IPv4 route through an IPv6 gateway (RTA_VIA).
    a.ip(&[
        "route",
        "add",
        "198.18.0.0/24",
        "via",
        "inet6",
        "fd00::2",
        "dev",
        "eth0",
    ])
    .unwrap();
    let (eth0, on_link, routed, v4_via_v6, listed, routes) = inside(&a, || {
        let eth0 = ifindex("eth0").unwrap();
        (
            eth0,
            next_hop(ip("fd00::2")).unwrap(),
            next_hop(ip("2001:db8:5::1")).unwrap(),
            next_hop(ip("198.18.0.1")).unwrap(),
            neighbours(eth0).unwrap(),
            gateway_routes(eth0).unwrap(),
        )
    });
    let expected = NextHop {
        ifindex: eth0,
        gateway: ip("fd00::2"),
        mac: Some(b_mac),
    };
    assert_eq!(on_link, expected);
    assert_eq!(routed, expected);
    assert_eq!(v4_via_v6, expected);
    // The kernel's multicast entries (ff02::..., 33:33:... MACs) are not
    // neighbours.
    assert_eq!(listed, vec![(ip("fd00::2"), b_mac)]);
    assert_eq!(
        routes.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            (prefix("198.18.0.0/24"), ip("fd00::2")),
            (prefix("2001:db8:5::/48"), ip("fd00::2")),
        ])
    );
}

#[test]
fn netns_solicit_makes_the_kernel_resolve_an_unknown_neighbour() {
    let (a, b) = pair();
    let b_mac = b.mac_addr("eth0").unwrap();
    let targets = [ip("10.9.0.2"), ip("fd00::2")];
    a.enter(|| {
        let eth0 = ifindex("eth0").unwrap();
        let known = |addr: IpAddr| {
            neighbours(eth0)
                .unwrap()
                .into_iter()
                .any(|(ip, mac)| ip == addr && mac == b_mac)
        };
        for addr in targets {
            assert!(!known(addr), "{addr} known before it was solicited");
            assert_eq!(next_hop(addr).unwrap().mac, None);
        }
        for addr in targets {
            solicit(addr, eth0).unwrap();
        }
        for addr in targets {
            assert!(
                eventually(Duration::from_secs(2), || known(addr)),
                "{addr} not resolved after solicit: {:?}",
                neighbours(eth0)
            );
            assert_eq!(next_hop(addr).unwrap().mac, Some(b_mac));
        }
        // Soliciting a known neighbour leaves it as it is.
        solicit(targets[0], eth0).unwrap();
        assert!(known(targets[0]));
    })
    .unwrap();
}

#[test]
fn netns_errors_name_what_failed() {
    let net = Gateway::up();
    let (no_route_v4, no_route_v6, local, bad_solicit, nothing) = inside(&net.gw, || {
        (
            next_hop(ip("8.8.8.8")).unwrap_err(),
            next_hop(ip("2001:db8::1")).unwrap_err(),
            next_hop(ip("192.0.2.2")).unwrap_err(),
            solicit(ip("192.0.2.50"), 999_999).unwrap_err(),
            (
                neighbours(999_999).unwrap(),
                gateway_routes(999_999).unwrap(),
                interface_addrs(999_999).unwrap(),
            ),
        )
    });
    assert_eq!(no_route_v4.kind(), io::ErrorKind::NetworkUnreachable);
    assert!(
        no_route_v4.to_string().starts_with("no route to 8.8.8.8: "),
        "{no_route_v4}"
    );
    // IPv6 is off in the gateway: no route either.
    assert_eq!(no_route_v6.kind(), io::ErrorKind::NetworkUnreachable);
    assert!(
        no_route_v6
            .to_string()
            .starts_with("no route to 2001:db8::1: "),
        "{no_route_v6}"
    );
    assert_eq!(local.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(
        local.to_string(),
        "192.0.2.2 is routed as Local, not through a next hop"
    );
    assert_eq!(
        bad_solicit.to_string(),
        format!(
            "soliciting 192.0.2.50 on ifindex 999999: {}",
            io::Error::from_raw_os_error(libc::ENODEV)
        )
    );
    // The errno stays reachable under the context.
    let source = std::error::Error::source(bad_solicit.get_ref().unwrap())
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error);
    assert_eq!(source, Some(libc::ENODEV));
    // An interface that does not exist has nothing to list.
    assert_eq!(nothing, (vec![], vec![], (None, None)));
}

/// An interface without Ethernet framing (a tun device: link type NONE,
/// as wg0 or ppp0) is refused with the reason, not taken and failed later.
#[test]
fn netns_an_interface_that_is_not_ethernet_is_refused_with_the_reason() {
    require_root();
    let ns = Netns::new("tun").unwrap();
    ns.ip(&["tuntap", "add", "tun7", "mode", "tun"]).unwrap();
    let err = inside(&ns, || {
        let index = ifindex("tun7").unwrap();
        detour_dataplane::neigh::link(index).unwrap_err()
    });
    let message = err.to_string();
    assert!(
        message.contains("not an Ethernet interface (link type NONE)"),
        "{message}"
    );
}
