//! Every wire view over arbitrary bytes: no input may panic or read out of
//! bounds. Run with `scripts/fuzz wire SECONDS`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    detour_testkit::wire::exercise_views(data);
});
