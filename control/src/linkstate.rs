//! Link state: every node's measured row of the link table, as flooded.

use std::time::Duration;

/// When a node sends its row, and how long it trusts the rows of others.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkStateConfig {
    /// The shortest gap between two advertisements of this node's row:
    /// changes within it go out together.
    pub min_interval: Duration,
    /// The row is sent again after this long without a change, so that a
    /// lost advertisement is repaired and receivers know the origin lives.
    pub refresh_interval: Duration,
    /// A row not heard for this long is dropped: its origin is gone.
    pub max_age: Duration,
}

impl Default for LinkStateConfig {
    fn default() -> Self {
        LinkStateConfig {
            min_interval: Duration::from_millis(50),
            refresh_interval: Duration::from_secs(5),
            max_age: Duration::from_secs(16),
        }
    }
}
