//! Builds the XDP programs (`../ebpf`) for the BPF target with the nightly
//! toolchain and bpf-linker, and leaves the object in OUT_DIR for
//! `include_bytes_aligned!`.

use anyhow::Context as _;
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // aya-build relays the nested cargo's stderr as `cargo:warning` lines;
    // without this every rebuild prints its "Compiling ..." progress as
    // warnings. Compiler diagnostics still come through (they travel as JSON).
    // SAFETY: the build script is single-threaded at this point.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    let ebpf = Package {
        name: "detour-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::Nightly).context(
        "building the XDP programs failed; scripts/setup installs what they need \
         (the nightly's rust-src and bpf-linker built against LLVM 22)",
    )
}
