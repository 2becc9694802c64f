//! detour's control process: the RON-style routing core and, as they land,
//! its drivers (DESIGN.md, "Routing").
//!
//! The routing core does no I/O (STYLE.md, after quinn-proto): it takes
//! events with the current time and returns what to do. The daemon drives
//! it with sockets and timers, `detour-control sim` with a virtual clock.
//!
//! - [`link`]: what a node knows of one overlay link (up, RTT, loss).
//! - [`members`]: the overlay's nodes, and each one's index among them.
//! - [`probe`]: probing one peer: the schedule, the estimators, up and down.
//! - [`paths`]: the best direct or one-hop path to every node.
//! - [`message`]: control messages (probe, reply, link-state rows and
//!   deltas, their acknowledgements and requests) on the wire,
//!   authenticated under the overlay key; why a message was dropped.
//! - [`replay`]: per-sender sliding windows that refuse replayed messages.
//! - [`linkstate`]: flooding this node's row; the rows of the others.
//! - [`node`]: all of the above for one node, driven by events and time.
//! - [`sim`]: every node of a synthetic overlay on a virtual clock.
//! - [`daemon`]: a node on a UDP socket and the real clock, installing its
//!   routes in the dataplane.
//! - [`config`]: the control process's TOML configuration and key file,
//!   checked, every error naming the file, line and key.

pub mod api;
pub mod config;
pub mod daemon;
pub mod link;
pub mod linkstate;
pub mod members;
pub mod message;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod probe;
pub mod replay;
pub mod sim;
