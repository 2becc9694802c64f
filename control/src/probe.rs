//! Probing: to come.
