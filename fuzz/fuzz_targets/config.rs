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
    let dataplane = Path::new("dataplane.toml");
    if let Ok(file) = detour_dataplane::config::ConfigFile::from_text(dataplane, text.to_owned()) {
        // A refused value that the file sets is named by its line.
        if let Err(e) = file.check(4) {
            let _ = e.to_string();
        }
    }
    let _ = detour_control::config::Config::parse(Path::new("fuzz.toml"), text);
});
