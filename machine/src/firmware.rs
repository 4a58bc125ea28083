//! Finding and checking the BIOS image (SeaBIOS from the `seabios` package by default).

use std::path::{Path, PathBuf};

/// Where distributions install SeaBIOS's 128 KiB `bios.bin`.
pub const SEARCH_PATHS: &[&str] = &[
    "/usr/share/seabios/bios.bin",
    "/usr/share/qemu/bios.bin",
    "/usr/share/qemu/seabios/bios.bin",
    "/usr/share/seabios/bios-256k.bin",
    "/usr/local/share/qemu/bios.bin",
];

/// Firmware problems, each naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// Nothing found in the usual places.
    #[error(
        "firmware not found (looked for {}); install the seabios package (apt-get install seabios) \
         or pass --firmware FILE",
        SEARCH_PATHS.join(", ")
    )]
    NotFound,
    /// The file could not be read.
    #[error("cannot read firmware {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Wrong size for a PC BIOS image.
    #[error(
        "firmware {path} is {size} bytes; a PC BIOS image must be a multiple of 64 KiB between \
         64 KiB and 16 MiB (use SeaBIOS's bios.bin)"
    )]
    BadSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// The default firmware path: the first of [`SEARCH_PATHS`] that exists.
pub fn find_default() -> Result<PathBuf, FirmwareError> {
    SEARCH_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or(FirmwareError::NotFound)
}

/// File name of the standard VGA's option ROM in the `seabios` package.
pub const VGA_BIOS_NAME: &str = "vgabios-stdvga.bin";

/// Where distributions install the VGA option ROMs.
pub const VGA_SEARCH_DIRS: &[&str] = &["/usr/share/seabios", "/usr/share/qemu"];

/// The standard VGA's option ROM: next to `firmware` if it is given, else in
/// [`VGA_SEARCH_DIRS`].
pub fn find_vga_bios(firmware: Option<&Path>) -> Option<PathBuf> {
    let beside = firmware
        .and_then(Path::parent)
        .map(|d| d.join(VGA_BIOS_NAME));
    beside
        .into_iter()
        .chain(
            VGA_SEARCH_DIRS
                .iter()
                .map(|d| Path::new(d).join(VGA_BIOS_NAME)),
        )
        .find(|p| p.is_file())
}

/// Reads and checks a firmware image.
pub fn load(path: &Path) -> Result<Vec<u8>, FirmwareError> {
    let image = std::fs::read(path).map_err(|source| FirmwareError::Read {
        path: path.into(),
        source,
    })?;
    let size = image.len() as u64;
    if !(64 << 10..=16 << 20).contains(&size) || !size.is_multiple_of(64 << 10) {
        return Err(FirmwareError::BadSize {
            path: path.into(),
            size,
        });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_missing_and_oddly_sized_files() {
        let dir = std::env::temp_dir().join(format!("terrarium-fw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.bin");
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.bin"), "{e}");
        let odd = dir.join("odd.bin");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let e = load(&odd).unwrap_err().to_string();
        assert!(e.contains("odd.bin") && e.contains("1000 bytes"), "{e}");
        let good = dir.join("good.bin");
        std::fs::write(&good, vec![0u8; 128 << 10]).unwrap();
        assert_eq!(load(&good).unwrap().len(), 128 << 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
