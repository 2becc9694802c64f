//! The XDP programs are the binary target (`src/main.rs`); this empty library
//! lets `dataplane` name the crate as a build dependency so that cargo
//! rebuilds the object when the programs change.
#![no_std]
