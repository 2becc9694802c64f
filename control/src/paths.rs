//! Path selection: to come.
