//! Next-hop and LAN neighbour MAC addresses, read from the kernel over
//! rtnetlink.
//!
//! The dataplane writes whole Ethernet frames (AF_XDP), so it must know the
//! MAC address each frame goes to: for the underlay, that of the next hop
//! toward a peer, exactly as the kernel's own routing would choose it
//! ([`next_hop`]); for packets decapsulated toward the site, that of the LAN
//! host ([`neighbours`]) or of the LAN router a site sits behind
//! ([`gateway_routes`]). [`interface_addrs`] gives the interface's own
//! addresses, the source of the ICMP messages the dataplane answers with.
//!
//! The kernel stays the only resolver: when it does not know a MAC yet,
//! [`solicit`] asks it to resolve one (ARP or neighbour discovery) without
//! waiting for the answer. None of these calls is made by a worker: they run
//! on a background refresher thread, which compiles what they return into the
//! tables the workers read; a worker never blocks on resolution.
//!
//! Every call reads the calling thread's network namespace, with a socket of
//! its own; none needs privileges except [`solicit`] (CAP_NET_ADMIN).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use detour_common::wire::MacAddr;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::{dump, request};
use crate::routes::{Neighbourhood, Survey};

/// Where the kernel would send a packet for some address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The output interface.
    pub ifindex: u32,
    /// The address whose MAC the frame goes to: the route's gateway, or the
    /// destination itself when it is on-link.
    pub gateway: IpAddr,
    /// `gateway`'s MAC, when the kernel's neighbour entry for it is usable;
    /// `None` while it is unresolved, failed or absent ([`solicit`] asks the
    /// kernel to resolve it).
    pub mac: Option<MacAddr>,
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on ifindex {}", self.gateway, self.ifindex)?;
        match self.mac {
            Some(mac) => write!(f, " at {mac}"),
            None => f.write_str(" (unresolved)"),
        }
    }
}

/// The MAC address packets to `addr` go to on the underlay, as the kernel
/// would send them.
///
/// The route lookup is the kernel's own (`RTM_GETROUTE` for `addr`, as
/// `ip route get` does, policy rules included): it gives the output interface
/// and the gateway, or `addr` itself when it is on-link. The neighbour table
/// then gives that next hop's MAC when its entry is usable (reachable, stale,
/// delay, probe, permanent, or noarp with an address); `mac` is `None` when
/// the entry is incomplete, failed or absent.
///
/// Errors: no route (`ENETUNREACH`, `EHOSTUNREACH`: "no route to ..."), or a
/// route that leads to no next hop (a local, broadcast, multicast, blackhole,
/// unreachable or prohibit route: [`io::ErrorKind::InvalidInput`]).
pub fn next_hop(addr: IpAddr) -> io::Result<NextHop> {
    let (ifindex, gateway) = route_get(addr)?;
    let mac = neighbour_mac(gateway, ifindex)
        .map_err(|e| with_context(e, format_args!("neighbour {gateway} (ifindex {ifindex})")))?;
    Ok(NextHop {
        ifindex,
        gateway,
        mac,
    })
}

/// Every usable neighbour (IPv4 and IPv6) on interface `ifindex`, with its
/// MAC: where decapsulated packets to LAN hosts go.
///
/// Usable as for [`next_hop`]; entries for multicast and broadcast addresses
/// (the kernel keeps some, with group MACs) and proxy entries are left out.
/// The order is the kernel's.
pub fn neighbours(ifindex: u32) -> io::Result<Vec<(IpAddr, MacAddr)>> {
    let mut message = NeighbourMessage::default();
    message.header.family = AddressFamily::Unspec;
    message.header.ifindex = ifindex;
    let answer = dump(RouteNetlinkMessage::GetNeighbour(message)).map_err(|e| {
        with_context(
            e,
            format_args!("listing the neighbours of ifindex {ifindex}"),
        )
    })?;
    Ok(answer
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == ifindex => Some(n),
            _ => None,
        })
        .filter(|n| !n.header.flags.contains(NeighbourFlags::Proxy))
        .filter_map(|n| Some((neighbour_ip(n)?, usable_mac(n)?)))
        .filter(|(ip, mac)| !ip.is_multicast() && !mac.is_multicast())
        .collect())
}

/// The routes of the main table that go through a gateway on interface
/// `ifindex`, as (prefix, gateway), IPv4 and IPv6: sites behind a LAN router.
///
/// A default route is there as `0.0.0.0/0` or `::/0`; each path of a
/// multipath route that leaves through `ifindex` counts as one route. An IPv4
/// route through an IPv6 gateway (`via inet6`) gives that IPv6 gateway. Routes
/// in other tables (policy routing) are not listed.
pub fn gateway_routes(ifindex: u32) -> io::Result<Vec<(IpNet, IpAddr)>> {
    let mut routes = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut message = RouteMessage::default();
        message.header.address_family = family;
        let answer = match dump(RouteNetlinkMessage::GetRoute(message)) {
            Ok(answer) => answer,
            // A kernel without IPv6 has no IPv6 routes.
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => continue,
            Err(e) => {
                return Err(with_context(
                    e,
                    format_args!("listing the routes ({family:?}) of ifindex {ifindex}"),
                ));
            }
        };
        for m in &answer {
            if let RouteNetlinkMessage::NewRoute(route) = m {
                gateways_of(route, ifindex, &mut routes);
            }
        }
    }
    Ok(routes)
}

/// The interface's own addresses, to source ICMP answers from: its first
/// IPv4 address, and its first global IPv6 address, else its first
/// link-local one.
///
/// Addresses still in duplicate address detection (tentative) or that failed
/// it are skipped: the kernel does not send from them either.
pub fn interface_addrs(ifindex: u32) -> io::Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Unspec;
    message.header.index = ifindex;
    let answer = dump(RouteNetlinkMessage::GetAddress(message)).map_err(|e| {
        with_context(
            e,
            format_args!("listing the addresses of ifindex {ifindex}"),
        )
    })?;
    let mut v4 = None;
    let mut v6_global = None;
    let mut v6_link = None;
    for m in &answer {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        if a.header.index != ifindex {
            continue;
        }
        let mut flags = u32::from(a.header.flags.bits());
        let mut local = None;
        let mut address = None;
        for attr in &a.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                AddressAttribute::Flags(f) => flags |= f.bits(),
                _ => {}
            }
        }
        if AddressFlags::from_bits_retain(flags)
            .intersects(AddressFlags::Tentative | AddressFlags::Dadfailed)
        {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the same,
        // except on point-to-point links where it is the far end's.
        match local.or(address) {
            Some(IpAddr::V4(ip)) if v4.is_none() => v4 = Some(ip),
            Some(IpAddr::V6(ip)) => match a.header.scope {
                AddressScope::Universe if v6_global.is_none() => v6_global = Some(ip),
                AddressScope::Link if v6_link.is_none() => v6_link = Some(ip),
                _ => {}
            },
            _ => {}
        }
    }
    Ok((v4, v6_global.or(v6_link)))
}

/// Asks the kernel to resolve `addr` on interface `ifindex` (ARP for IPv4,
/// neighbour discovery for IPv6) and returns without waiting: a later
/// [`next_hop`] or [`neighbours`] finds the MAC once the neighbour answered.
///
/// This is `RTM_NEWNEIGH` with `NTF_USE` (`ip neigh replace ADDR dev IF use`):
/// the kernel creates the entry if it has none and, instead of setting a
/// state, treats it as used by a packet (`neigh_event_send`), which is what
/// sends a solicitation: an absent or failed entry becomes incomplete and
/// the kernel probes at once (multicast for ARP and ND, then retries as its
/// `mcast_solicit`/`ucast_solicit` settings say); a stale entry goes through
/// delay to a unicast probe. An entry that is already usable is left as it
/// is. No packet is sent to `addr` itself, only the solicitation. Needs
/// CAP_NET_ADMIN.
pub fn solicit(addr: IpAddr, ifindex: u32) -> io::Result<()> {
    let mut message = NeighbourMessage::default();
    message.header.family = family_of(addr);
    message.header.ifindex = ifindex;
    message.header.flags = NeighbourFlags::Use;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            addr,
        )));
    request(
        RouteNetlinkMessage::NewNeighbour(message),
        NLM_F_ACK | NLM_F_CREATE,
    )
    .map_err(|e| with_context(e, format_args!("soliciting {addr} on ifindex {ifindex}")))?;
    Ok(())
}

/// `ip route get addr`: the output interface and the address whose MAC is
/// needed.
fn route_get(addr: IpAddr) -> io::Result<(u32, IpAddr)> {
    let mut message = RouteMessage::default();
    message.header.address_family = family_of(addr);
    message.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
    message
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::from(addr)));
    let answer = match request(RouteNetlinkMessage::GetRoute(message), 0) {
        Ok(answer) => answer,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) =>
        {
            return Err(with_context(e, format_args!("no route to {addr}")));
        }
        Err(e) => return Err(with_context(e, format_args!("route lookup for {addr}"))),
    };
    let Some(RouteNetlinkMessage::NewRoute(route)) = answer else {
        return Err(io::Error::other(format!(
            "route lookup for {addr}: rtnetlink answered without a route"
        )));
    };
    if route.header.kind != RouteType::Unicast {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{addr} is routed as {:?}, not through a next hop",
                route.header.kind
            ),
        ));
    }
    let mut oif = None;
    let mut gateway = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => gateway = route_ip(g).or(gateway),
            RouteAttribute::Via(v) => gateway = via_ip(v).or(gateway),
            _ => {}
        }
    }
    let oif = oif.ok_or_else(|| {
        io::Error::other(format!(
            "route lookup for {addr}: the route names no output interface"
        ))
    })?;
    Ok((oif, gateway.unwrap_or(addr)))
}

/// The usable MAC of `addr`'s neighbour entry on `ifindex`, if any.
fn neighbour_mac(addr: IpAddr, ifindex: u32) -> io::Result<Option<MacAddr>> {
    let mut message = NeighbourMessage::default();
    message.header.family = family_of(addr);
    message.header.ifindex = ifindex;
    message
        .attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(
            addr,
        )));
    match request(RouteNetlinkMessage::GetNeighbour(message), 0) {
        Ok(Some(RouteNetlinkMessage::NewNeighbour(n))) => Ok(usable_mac(&n)),
        Ok(_) => Err(io::Error::other(
            "rtnetlink answered a neighbour request without a neighbour",
        )),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The (prefix, gateway) pairs of `route` that leave through `ifindex`.
fn gateways_of(route: &RouteMessage, ifindex: u32, out: &mut Vec<(IpNet, IpAddr)>) {
    let header = &route.header;
    if header.kind != RouteType::Unicast || header.flags.contains(RouteFlags::Cloned) {
        return;
    }
    let mut table = u32::from(header.table);
    let mut destination = None;
    let mut oif = None;
    let mut gateway = None;
    let mut paths = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => destination = route_ip(d),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(g) => gateway = route_ip(g).or(gateway),
            RouteAttribute::Via(v) => gateway = via_ip(v).or(gateway),
            RouteAttribute::MultiPath(hops) => paths = Some(hops),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return;
    }
    let destination = destination.unwrap_or(match header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    });
    let Ok(prefix) = IpNet::new(destination, header.destination_prefix_length) else {
        return;
    };
    if let (Some(gateway), Some(oif)) = (gateway, oif)
        && oif == ifindex
    {
        out.push((prefix, gateway));
    }
    for hop in paths.into_iter().flatten() {
        if hop.interface_index != ifindex {
            continue;
        }
        let gateway = hop.attributes.iter().find_map(|a| match a {
            RouteAttribute::Gateway(g) => route_ip(g),
            RouteAttribute::Via(v) => via_ip(v),
            _ => None,
        });
        if let Some(gateway) = gateway {
            out.push((prefix, gateway));
        }
    }
}

/// Whether a neighbour state holds a MAC that frames may be sent to:
/// the kernel's `NUD_VALID` (reachable, stale, delay, probe, permanent,
/// noarp).
fn is_usable(state: NeighbourState) -> bool {
    const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;
    u16::from(state) & NUD_VALID != 0
}

/// The neighbour's MAC, if its state is usable and it has an Ethernet one.
fn usable_mac(n: &NeighbourMessage) -> Option<MacAddr> {
    if !is_usable(n.header.state) {
        return None;
    }
    n.attributes
        .iter()
        .find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        })
        .map(MacAddr)
}

fn neighbour_ip(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn via_ip(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteVia::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// `e` with what was being done in front of it. The kind stays, and `e`
/// stays reachable as the error's source (with its errno, if it has one).
/// What the dataplane needs of one of its own interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub mac: MacAddr,
    pub mtu: u32,
    /// Whether the link has carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
}

/// The MAC address and MTU of interface `ifindex`.
pub fn link(ifindex: u32) -> io::Result<Link> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    let what = || format!("reading interface {ifindex}");
    let answer = request(RouteNetlinkMessage::GetLink(message), 0)
        .map_err(|e| with_context(e, format_args!("{}", what())))?;
    let Some(RouteNetlinkMessage::NewLink(link)) = answer else {
        return Err(io::Error::other(format!(
            "{}: no link in the answer",
            what()
        )));
    };
    let kind = link.header.link_layer_type;
    if kind != LinkLayerType::Ether {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: not an Ethernet interface (link type {kind}): detour reads and writes Ethernet \
                 frames; run it on the Ethernet interface beneath (for PPPoE, the NIC; a layer-3 \
                 tunnel such as WireGuard cannot carry it)",
                what()
            ),
        ));
    }
    let mut mac = None;
    let mut mtu = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            _ => {}
        }
    }
    let carrier = link.header.flags.contains(LinkFlags::LowerUp);
    match (mac, mtu) {
        (Some(mac), Some(mtu)) => Ok(Link {
            mac: MacAddr(mac),
            mtu,
            carrier,
        }),
        _ => Err(io::Error::other(format!(
            "{}: not an Ethernet interface (no 6-byte address or no MTU)",
            what()
        ))),
    }
}

/// The survey the daemon's route installer makes: the kernel's next hop
/// toward each node (soliciting those not resolved yet), and the LAN's
/// hosts and routers.
pub struct NetlinkSurvey {
    wan: u32,
    lan: Option<u32>,
    /// Peers the kernel routes out of another interface than the WAN,
    /// warned about once (the survey runs every second).
    misrouted: Vec<IpAddr>,
}

impl NetlinkSurvey {
    /// Surveys next hops (which leave by `wan`) and the neighbours on `lan`.
    pub fn new(wan: u32, lan: Option<u32>) -> NetlinkSurvey {
        NetlinkSurvey {
            wan,
            lan,
            misrouted: Vec::new(),
        }
    }

    fn lan(&self, lan: u32) -> Vec<(IpNet, MacAddr)> {
        let hosts = neighbours(lan).unwrap_or_else(|e| {
            tracing::warn!("reading the LAN's neighbours: {e}");
            Vec::new()
        });
        let mut out: Vec<(IpNet, MacAddr)> = hosts
            .iter()
            .map(|(ip, mac)| (IpNet::from(*ip), *mac))
            .collect();
        for (prefix, gateway) in gateway_routes(lan).unwrap_or_default() {
            match hosts.iter().find(|(ip, _)| *ip == gateway) {
                Some((_, mac)) => out.push((prefix, *mac)),
                None => {
                    let _ = solicit(gateway, lan);
                }
            }
        }
        out.sort_by_key(|(p, _)| *p);
        out.dedup_by_key(|(p, _)| *p);
        out
    }
}

impl Survey for NetlinkSurvey {
    fn survey(&mut self, addrs: &[IpAddr]) -> Neighbourhood {
        let mut misrouted = Vec::new();
        let underlay = addrs
            .iter()
            .map(|&addr| {
                let mac = match next_hop(addr) {
                    Ok(hop) if hop.ifindex != self.wan => {
                        if !self.misrouted.contains(&addr) {
                            tracing::warn!(%addr, ifindex = hop.ifindex, "the kernel routes this peer out of another interface than the WAN; its packets count as unresolved");
                        }
                        misrouted.push(addr);
                        None
                    }
                    Ok(NextHop { mac: Some(mac), .. }) => Some(mac),
                    Ok(hop) => {
                        // Resolution runs in the kernel; a later survey
                        // finds the answer.
                        let _ = solicit(hop.gateway, hop.ifindex);
                        None
                    }
                    Err(e) => {
                        tracing::debug!(%addr, "no next hop: {e}");
                        None
                    }
                };
                (addr, mac)
            })
            .collect();
        self.misrouted = misrouted;
        Neighbourhood {
            underlay,
            lan: self.lan.map(|lan| self.lan(lan)).unwrap_or_default(),
        }
    }
}

fn with_context(e: io::Error, what: fmt::Arguments<'_>) -> io::Error {
    io::Error::new(
        e.kind(),
        Context {
            what: what.to_string(),
            source: e,
        },
    )
}

#[derive(Debug)]
struct Context {
    what: String,
    source: io::Error,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
