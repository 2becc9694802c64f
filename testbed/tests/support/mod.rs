//! What the end-to-end test files share: the four-site topology, building
//! a testbed of one's own, and the report of measurements.

use std::path::Path;

use detour_testbed::{Layout, Testbed, Topology};
use detour_testkit::{require_root, unique_name};

/// Four sites, 2 ms apart one way.
pub const FOUR_SITES: &str = "
    [defaults]
    delay_ms = 2
    [[nodes]]
    id = 1
    [[nodes]]
    id = 2
    [[nodes]]
    id = 3
    [[nodes]]
    id = 4
";

/// A testbed of `topology`, named by the test kit (`dt-<pid>-…`) so that
/// one a killed test left is swept by the next run; down on drop.
pub fn up(topology: &str) -> Testbed {
    require_root();
    let name = unique_name("tb");
    let layout = Layout {
        dir: std::env::temp_dir().join(&name),
        prefix: name,
        bin_dir: Path::new(env!("CARGO_BIN_EXE_detour-testbed"))
            .parent()
            .unwrap()
            .to_owned(),
    };
    Testbed::up(Topology::parse(topology).unwrap(), layout).unwrap()
}

/// Prints a measurement, and keeps it for `scripts/test`'s report.
pub fn report(line: String) {
    detour_testkit::report(env!("CARGO_TARGET_TMPDIR"), &line);
}
