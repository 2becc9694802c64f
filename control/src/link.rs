//! What a node knows of one overlay link, from its own probes or from the
//! link state another node flooded, and the clock the routing core runs on.

use std::time::Duration;

/// A point in time, as the time since the driver's origin: the daemon's
/// start for the real clock, zero for the simulator's virtual one. The
/// routing core never reads a clock; it is handed this with every event.
pub type Time = Duration;

/// The measured state of a link from one node to another.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkEstimate {
    /// Whether the link is live (answers probes).
    pub up: bool,
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Fraction of probes lost over the recent window, 0.0 to 1.0.
    pub loss: f64,
}

impl LinkEstimate {
    /// A link that is down: no RTT known, everything lost.
    pub const DOWN: LinkEstimate = LinkEstimate {
        up: false,
        rtt: Duration::ZERO,
        loss: 1.0,
    };
}
