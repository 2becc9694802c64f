//! detour's packet engine.
//!
//! The packet path: the XDP classifier ([`xdp`]) hands overlay and
//! remote-site frames to AF_XDP sockets ([`xsk`]); a pinned [`worker`] per
//! queue rewrites each frame in place ([`rewrite`], [`ecn`], [`icmp`]) by
//! the route table ([`table`], [`lpm`]); [`crypto`] seals and opens inner
//! packets end to end. [`routes`] installs that table from the control
//! process's snapshots, which arrive over the local [`api`], with next-hop
//! MAC addresses from the kernel ([`neigh`]), recompiled when the kernel
//! announces a change ([`watch`]). Frames for a neighbour not resolved yet
//! wait in the worker ([`hold`]) while the daemon, woken by the worker's
//! [`doorbell`], has it solicited ([`resolve`]). Counters and latency:
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
