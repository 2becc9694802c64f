//! Both daemons' configuration parsers and checks over arbitrary text: no
//! input may panic; every error names where it is. Run with
//! `scripts/fuzz config SECONDS`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = detour_dataplane::config::ConfigFile::parse(text) {
        let _ = file.check(4);
    }
    let _ = detour_control::config::Config::parse(Path::new("fuzz.toml"), text);
});
