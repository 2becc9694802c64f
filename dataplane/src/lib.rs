//! detour's packet engine.
//!
//! Today: the embedded XDP object and its loader ([`xdp`]). The AF_XDP
//! sockets, the workers, the route table and the rewrite paths arrive with
//! their issues (see docs and DESIGN.md).

pub mod xdp;
