//! detour's control process, to come with its issue: configuration, the
//! RON-style prober, link-state flooding, path selection, route installation
//! into the dataplane, the local API, and the simulator that runs the same
//! routing core on a virtual clock (DESIGN.md, "Routing").
//!
//! The crate exists now so that the workspace has its final shape; it holds
//! no code until that issue lands.
