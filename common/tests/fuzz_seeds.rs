//! The fuzzer's seed frames (fuzz/seeds/wire) are what their names say, so
//! that fuzzing starts from real overlay frames, not from noise.

use std::path::Path;

use detour_common::wire::{Error, OverlayFrame, geneve::DEFAULT_PORT};

#[test]
fn overlay_seeds_parse_as_overlay_and_the_others_do_not() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/wire");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parsed = OverlayFrame::parse(&std::fs::read(&path).unwrap(), DEFAULT_PORT);
        if name.starts_with("overlay_") {
            let o = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(o.option.hop_limit, 4, "{name}");
        } else {
            assert_eq!(parsed.unwrap_err(), Error::Protocol, "{name}");
        }
        seen += 1;
    }
    assert!(seen >= 4, "seeds missing from {}", dir.display());
}
