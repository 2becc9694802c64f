//! Types shared by every part of detour: the wire format, the XDP
//! classifier's decisions, and the layouts of the maps through which the XDP
//! programs and userspace meet.
//!
//! `no_std` and allocation-free so that the eBPF crate links it; the `user`
//! feature adds what only userspace needs.
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(all(test, not(feature = "std")))]
extern crate std;

#[cfg(feature = "api")]
pub mod api;
pub mod bench;
pub mod classify;
#[cfg(feature = "api")]
pub mod local_socket;
pub mod maps;
#[cfg(feature = "api")]
pub mod metrics;
#[cfg(feature = "api")]
pub mod privileges;
#[cfg(feature = "api")]
pub mod session_keys;
#[cfg(feature = "std")]
pub mod source_text;
pub mod wire;
