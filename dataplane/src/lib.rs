//! detour's packet engine.
//!
//! The packet path: the XDP classifier ([`xdp`]) hands overlay and
//! remote-site frames to AF_XDP sockets ([`xsk`]); a pinned [`worker`] per
//! queue rewrites each frame in place ([`rewrite`], [`icmp`]) by the route
//! table ([`table`], [`lpm`]); [`crypto`] holds what will seal and open
//! inner packets end to end. [`routes`] installs that table from the
//! control process's snapshots, which arrive over the local [`api`], with
//! next-hop MAC addresses from the kernel ([`neigh`]); LAN hosts that
//! decapsulated packets were dropped for are resolved through it
//! ([`resolve`]). Counters and latency:
//! [`stats`]. Settings: [`config`]. The process: [`daemon`]. Frame
//! generators for the benchmarks and tests (never the dataplane's own):
//! [`generator`].

pub mod api;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod doorbell;
pub mod ecn;
pub mod generator;
pub mod hold;
pub mod icmp;
pub mod lpm;
pub mod metrics;
pub mod neigh;
mod netlink;
pub mod resolve;
pub mod rewrite;
pub mod routes;
pub mod stats;
pub mod table;
pub mod watch;
pub mod worker;
pub mod xdp;
pub mod xsk;
