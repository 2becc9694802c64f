//! detour's built-in testbed: overlay nodes in network namespaces around a
//! simulated Internet, both daemons on every node, traffic between the
//! sites, and the demo and end-to-end tests built on them.
//!
//! - [`topology`]: the TOML topology and the addressing plan.
//! - [`internet`]: what the router does to each path (nftables rules for
//!   cuts, loss and delay).
//! - [`delay_line`]: the program that delays packets, as this kernel has
//!   no netem.
//! - [`bed`]: building, driving and taking down a testbed.
//! - [`traffic`]: flows between sites, and loss, latency and failover as
//!   the traffic shows them.
//! - [`demo`]: the demo's scenario and its summary.
//! - [`soak`]: the overlay under traffic and route changes for many
//!   minutes: memory over time, drops, unexpected loss.
//! - [`totals`]: every node's counters summed, for the demo and the soak.
//! - [`tcp`]: the TCP benchmark, detour encrypted and in the clear against
//!   wireguard-go.

pub mod bed;
pub mod delay_line;
pub mod demo;
pub mod internet;
pub mod soak;
pub mod tcp;
pub mod topology;
pub mod totals;
pub mod traffic;

pub use bed::{Daemon, Layout, Testbed};
pub use topology::{Impairment, Topology};
