//! Helpers shared by the machine's integration tests.
#![allow(dead_code)] // Each test binary uses its own subset of these helpers.

use std::path::PathBuf;

/// The test asset folder (`scripts/fetch-assets.sh` fills it).
pub fn assets() -> PathBuf {
    std::env::var_os("TERRARIUM_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/assets"))
}

/// SeaBIOS's bios.bin from the asset folder; fails with the fix when it is missing.
pub fn seabios() -> PathBuf {
    let p = assets().join("bios.bin");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-assets.sh",
        p.display()
    );
    p
}
