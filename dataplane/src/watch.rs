//! What the kernel announces of the dataplane's neighbours, links and
//! routes, as it happens.
//!
//! The route table holds MAC addresses and the WAN MTU, all of which the
//! kernel owns. Instead of asking it over and over, the daemon subscribes to
//! rtnetlink's groups (`RTNLGRP_NEIGH`, `RTNLGRP_LINK` and the route groups)
//! and looks again only when something changed: a neighbour answered a
//! solicitation, went stale or failed; an interface changed its MAC, MTU or
//! carrier; a route (a gateway) moved. So a frame held for a neighbour
//! ([`crate::hold`]) goes out about as soon as the neighbour's answer is in,
//! not at the next poll.
//!
//! An announcement only says that something changed: what changed is read
//! afresh (the daemon's survey), so a missed announcement (the socket's
//! buffer overflowed) costs nothing but a full look, which the daemon makes
//! then, and every few seconds besides.

use std::io;
use std::os::fd::RawFd;

use netlink_packet_route::RouteNetlinkMessage;

use crate::netlink::Subscription;

/// What one look at the announcements found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// A neighbour entry on the WAN or the LAN changed.
    pub neighbours: bool,
    /// The WAN or the LAN interface changed (MAC, MTU, carrier, ...).
    pub links: bool,
    /// A route was added or removed (any interface: a route elsewhere can
    /// change where a peer's next hop lies).
    pub routes: bool,
}

impl Changes {
    /// Everything, for when announcements were missed.
    pub const ALL: Changes = Changes {
        neighbours: true,
        links: true,
        routes: true,
    };

    pub fn any(&self) -> bool {
        self.neighbours || self.links || self.routes
    }

    /// What `message` says changed, for a dataplane on interfaces `ours`.
    pub fn of(message: &RouteNetlinkMessage, ours: &[u32]) -> Changes {
        use RouteNetlinkMessage as M;
        match message {
            M::NewNeighbour(n) | M::DelNeighbour(n) => Changes {
                neighbours: ours.contains(&n.header.ifindex),
                ..Changes::default()
            },
            M::NewLink(l) | M::DelLink(l) => Changes {
                links: ours.contains(&l.header.index),
                ..Changes::default()
            },
            M::NewRoute(_) | M::DelRoute(_) => Changes {
                routes: true,
                ..Changes::default()
            },
            _ => Changes::default(),
        }
    }

    fn add(&mut self, other: Changes) {
        self.neighbours |= other.neighbours;
        self.links |= other.links;
        self.routes |= other.routes;
    }
}

/// The groups subscribed to (`RTMGRP_*` of `<linux/rtnetlink.h>`).
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH | libc::RTMGRP_IPV4_ROUTE | libc::RTMGRP_IPV6_ROUTE)
        as u32;

/// The subscription, for the dataplane's WAN and LAN interfaces.
pub struct KernelWatch {
    subscription: Subscription,
    ours: Vec<u32>,
}

impl KernelWatch {
    /// Subscribes; announcements about interfaces other than `wan` and
    /// `lan` are read and ignored (neighbours and links; every route
    /// counts).
    pub fn open(wan: u32, lan: Option<u32>) -> io::Result<KernelWatch> {
        Ok(KernelWatch {
            subscription: Subscription::open(GROUPS)?,
            ours: std::iter::once(wan).chain(lan).collect(),
        })
    }

    /// The socket, to wait on.
    pub fn fd(&self) -> RawFd {
        self.subscription.fd()
    }

    /// Reads every announcement waiting; what they say changed
    /// ([`Changes::ALL`] when some were lost).
    pub fn changes(&mut self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        let ours = &self.ours;
        let complete = self
            .subscription
            .drain(|m| changes.add(Changes::of(&m, ours)))?;
        Ok(if complete { changes } else { Changes::ALL })
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::neighbour::NeighbourMessage;
    use netlink_packet_route::route::RouteMessage;

    use super::*;

    #[test]
    fn only_our_interfaces_neighbours_and_links_count_and_every_route() {
        let neighbour = |ifindex| {
            let mut n = NeighbourMessage::default();
            n.header.ifindex = ifindex;
            RouteNetlinkMessage::NewNeighbour(n)
        };
        let link = |index| {
            let mut l = LinkMessage::default();
            l.header.index = index;
            RouteNetlinkMessage::DelLink(l)
        };
        let ours = [3, 7];
        assert!(Changes::of(&neighbour(7), &ours).neighbours);
        assert!(!Changes::of(&neighbour(9), &ours).any());
        assert!(Changes::of(&link(3), &ours).links);
        assert!(!Changes::of(&link(9), &ours).any());
        let route = RouteNetlinkMessage::NewRoute(RouteMessage::default());
        assert_eq!(
            Changes::of(&route, &ours),
            Changes {
                routes: true,
                ..Changes::default()
            }
        );
    }
}
