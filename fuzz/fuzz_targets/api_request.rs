//! The local API's requests, as the daemons read them (one JSON line), and
//! a route snapshot handed to the dataplane's table compiler. No input may
//! panic. Run with `scripts/fuzz api_request SECONDS`.
#![no_main]

use detour_common::api::Request;
use detour_common::wire::MacAddr;
use detour_dataplane::table::{LanNeighbours, Links, RouteTable};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let _ = serde_json::from_str::<detour_control::api::Request>(line);
    if let Ok(Request::Install { snapshot }) = serde_json::from_str::<Request>(line) {
        let links = Links::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            Some(MacAddr([2, 0, 0, 0, 1, 1])),
        );
        let _ = RouteTable::compile(&snapshot, &links, LanNeighbours::default(), |_| {
            Some(MacAddr([2, 0, 0, 0, 0, 9]))
        });
    }
});
