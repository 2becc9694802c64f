//! detour's control process: the RON-style routing core and, as they land,
//! its drivers (docs/design.md, "Routing").
//!
//! The routing core does no I/O (docs/design.md, after quinn-proto): it takes
//! events with the current time and returns what to do. The daemon drives
//! it with sockets and timers, `detour-control sim` with a virtual clock.
//!
//! - [`link`]: what a node knows of one overlay link (up, RTT, loss).
//! - [`members`]: the overlay's nodes, and each one's index among them.
//! - [`probe`]: probing one peer: the schedule, the estimators, up and down.
//! - [`paths`]: the best direct or one-hop path to every node.
//! - [`keys`]: node identities (X25519 key pairs) and pre-shared keys.
//! - [`message`]: control messages (probe, reply, link-state rows and
//!   deltas, their acknowledgements and requests) encoded; why a message
//!   was dropped.
//! - [`session`]: Noise handshakes between peers, and the sessions that
//!   seal every control message.
//! - [`handshake_relay`]: handshakes passed on through a relay while two
//!   peers' direct path is down.
//! - [`replay`]: the per-session sliding window that refuses replays.
//! - [`linkstate`]: flooding this node's row; the rows of the others.
//! - [`node`]: all of the above for one node, driven by events and time.
//! - [`sim`]: every node of a synthetic overlay on a virtual clock.
//! - [`daemon`]: a node on a UDP socket and the real clock, installing its
//!   routes in the dataplane.
//! - [`reload`]: what a reload of the configuration may change, and
//!   applying it.
//! - [`config`]: the control process's TOML configuration and key
//!   files, checked, every error naming the file, line and key.

pub mod api;
pub mod config;
pub mod daemon;
pub mod data_plane_keys;
pub mod handshake_relay;
pub mod keys;
pub mod link;
pub mod linkstate;
pub mod members;
pub mod message;
pub mod metrics;
pub mod node;
pub mod paths;
pub mod probe;
pub mod reload;
pub mod replay;
pub mod session;
pub mod sim;
