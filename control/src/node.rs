//! One overlay node's routing core: prober, link state and path selection
//! together, driven by events and the time, doing no I/O.

use std::time::Duration;

use crate::linkstate::LinkStateConfig;
use crate::paths::Policy;
use crate::probe::ProbeConfig;

/// Everything that tunes one node's routing core.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeConfig {
    pub probe: ProbeConfig,
    pub linkstate: LinkStateConfig,
    pub policy: Policy,
    /// The shortest gap between two route computations, except that a link
    /// of this node going down is acted on at once.
    pub compute_interval: Duration,
}
