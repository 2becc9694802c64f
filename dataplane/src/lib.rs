//! detour's packet engine.
//!
//! Today: the embedded XDP programs, their loader and maps ([`xdp`]), and the
//! next-hop and neighbour MACs read from the kernel ([`neigh`]). The AF_XDP
//! sockets, the workers, the route table and the rewrite paths arrive with the
//! dataplane issue (DESIGN.md).

pub mod config;
pub mod icmp;
pub mod lpm;
pub mod neigh;
mod netlink;
pub mod rewrite;
pub mod table;
pub mod xdp;
pub mod xsk;
