//! The PC memory map: RAM below 640 KiB and from 768 KiB up (the 0xC0000–0xFFFFF shadow area
//! is RAM, as after SeaBIOS unlocks the PAM registers), the PCI hole below 4 GiB, RAM above
//! 4 GiB, and the BIOS image mapped read-only just below 4 GiB.

use std::path::Path;
use std::sync::Arc;
use vm_memory::{
    Bytes, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MemoryRegionAddress,
};

/// End of conventional memory; 0xA0000–0xBFFFF is the legacy video window (MMIO).
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Start of the option-ROM / BIOS shadow area (RAM).
pub const SHADOW_START: u64 = 0xc_0000;
/// Highest RAM address below 4 GiB; above it lies the PCI hole (MMIO, IOAPIC, LAPIC, BIOS).
pub const PCI_HOLE_START: u64 = 0xe000_0000;
/// 4 GiB.
pub const FOUR_GIB: u64 = 0x1_0000_0000;

/// Errors building guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host could not allocate the guest RAM.
    #[error("cannot allocate {mib} MiB of guest memory: {reason}")]
    Allocate {
        /// Size requested.
        mib: u64,
        /// Why.
        reason: String,
    },
}

/// Guest memory and where each part lives.
#[derive(Debug, Clone)]
pub struct MemoryMap {
    /// Total RAM in bytes.
    pub ram_size: u64,
    /// RAM regions, in address order.
    pub ram: Vec<Arc<GuestRegionMmap>>,
    /// All RAM as one address space (for loaders).
    pub guest: GuestMemoryMmap,
    /// RAM below 4 GiB (bytes from 0, including the holes' gaps).
    pub below_4g: u64,
    /// RAM above 4 GiB.
    pub above_4g: u64,
}

fn region(start: u64, size: u64) -> Result<Arc<GuestRegionMmap>, MemoryError> {
    GuestRegionMmap::from_range(GuestAddress(start), size as usize, None)
        .map(Arc::new)
        .map_err(|e| MemoryError::Allocate {
            mib: size >> 20,
            reason: e.to_string(),
        })
}

/// A RAM region at guest `start` of `size` bytes mapped privately from `file` at `offset`.
#[cfg(unix)]
fn private_file_region(
    file: &std::fs::File,
    offset: u64,
    start: u64,
    size: u64,
) -> Result<Arc<GuestRegionMmap>, String> {
    let clone = file.try_clone().map_err(|e| e.to_string())?;
    let mapping = vm_memory::MmapRegion::build(
        Some(vm_memory::FileOffset::new(clone, offset)),
        size as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_NORESERVE | libc::MAP_PRIVATE,
    )
    .map_err(|e| e.to_string())?;
    GuestRegionMmap::new(mapping, GuestAddress(start))
        .map(Arc::new)
        .ok_or_else(|| "invalid guest region".to_string())
}

/// Without private file mappings the region is read into anonymous memory.
#[cfg(not(unix))]
fn private_file_region(
    file: &std::fs::File,
    offset: u64,
    start: u64,
    size: u64,
) -> Result<Arc<GuestRegionMmap>, String> {
    use std::io::{Read, Seek};
    let r = region(start, size).map_err(|e| e.to_string())?;
    let mut f = file.try_clone().map_err(|e| e.to_string())?;
    f.seek(std::io::SeekFrom::Start(offset))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).map_err(|e| e.to_string())?;
        r.write_slice(&buf[..n], MemoryRegionAddress(done))
            .map_err(|e| e.to_string())?;
        done += n as u64;
    }
    Ok(r)
}

impl MemoryMap {
    /// Lays out `ram_size` bytes of RAM (at least 1 MiB).
    pub fn new(ram_size: u64) -> Result<Self, MemoryError> {
        let ram = Self::new_layout(ram_size)
            .into_iter()
            .map(|(start, size)| region(start, size))
            .collect::<Result<Vec<_>, _>>()?;
        Self::assemble(ram_size, ram)
    }

    /// Lays out `ram_size` bytes of RAM whose contents come from `file` (the regions back to
    /// back, as [`MemoryMap::save`] writes them), mapped privately: pages load when first
    /// touched and guest writes never reach the file.
    pub fn from_file(ram_size: u64, file: &Path) -> Result<Self, MemoryError> {
        let err = |reason: String| MemoryError::Allocate {
            mib: ram_size >> 20,
            reason,
        };
        let f = std::fs::File::open(file).map_err(|e| err(format!("{}: {e}", file.display())))?;
        let len = f
            .metadata()
            .map_err(|e| err(format!("{}: {e}", file.display())))?
            .len();
        let layout = Self::new_layout(ram_size);
        let expected: u64 = layout.iter().map(|&(_, size)| size).sum();
        if len != expected {
            return Err(err(format!(
                "{} holds {len} bytes of RAM, the VM has {expected}",
                file.display()
            )));
        }
        let mut ram = Vec::new();
        let mut offset = 0u64;
        for (start, size) in layout {
            ram.push(private_file_region(&f, offset, start, size).map_err(err)?);
            offset += size;
        }
        Self::assemble(ram_size, ram)
    }

    /// Writes all RAM to `out`, region after region, straight from guest memory.
    pub fn save(&self, out: &mut std::fs::File) -> std::io::Result<()> {
        ram_snapshot::write_regions(&self.ram, out)
    }

    /// The RAM regions (start, size) for `ram_size` bytes.
    fn new_layout(ram_size: u64) -> Vec<(u64, u64)> {
        let below_4g = ram_size.min(PCI_HOLE_START);
        let above_4g = ram_size - below_4g;
        let mut v = vec![(0, LOW_RAM_END), (SHADOW_START, below_4g - SHADOW_START)];
        if above_4g > 0 {
            v.push((FOUR_GIB, above_4g));
        }
        v
    }

    fn assemble(ram_size: u64, ram: Vec<Arc<GuestRegionMmap>>) -> Result<Self, MemoryError> {
        let below_4g = ram_size.min(PCI_HOLE_START);
        let guest =
            GuestMemoryMmap::from_arc_regions(ram.clone()).map_err(|e| MemoryError::Allocate {
                mib: ram_size >> 20,
                reason: e.to_string(),
            })?;
        Ok(Self {
            ram_size,
            ram,
            guest,
            below_4g,
            above_4g: ram_size - below_4g,
        })
    }

    /// Copies `bytes` to guest-physical `address` (RAM only).
    pub fn write(&self, address: u64, bytes: &[u8]) -> bool {
        self.guest.write_slice(bytes, GuestAddress(address)).is_ok()
    }

    /// Reads guest RAM at `address`, or `None` outside RAM.
    pub fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        let mut v = vec![0; len];
        self.guest.read_slice(&mut v, GuestAddress(address)).ok()?;
        Some(v)
    }

    /// Zeroes all RAM (machine reset keeps contents, like a PC; power-on starts clean).
    pub fn clear(&self) {
        for r in &self.ram {
            let zero = vec![0u8; 1 << 20];
            let mut off = 0u64;
            let len = r.len();
            while off < len {
                let n = (len - off).min(zero.len() as u64) as usize;
                let _ = r.write_slice(&zero[..n], MemoryRegionAddress(off));
                off += n as u64;
            }
        }
    }
}

/// The firmware image mapped read-only below 4 GiB, with its top 128 KiB aliased into RAM at
/// 0xE0000 (reloaded on every reset).
#[derive(Debug, Clone)]
pub struct BiosRom {
    /// The ROM region (at 4 GiB − size).
    pub region: Arc<GuestRegionMmap>,
    /// The image bytes.
    pub image: Arc<Vec<u8>>,
}

impl BiosRom {
    /// Maps `image`, whose size must be a multiple of 64 KiB up to 16 MiB (checked by the
    /// caller's firmware loader).
    pub fn new(image: Vec<u8>) -> Result<Self, MemoryError> {
        let size = image.len() as u64;
        let r = region(FOUR_GIB - size, size)?;
        r.write_slice(&image, MemoryRegionAddress(0))
            .map_err(|e| MemoryError::Allocate {
                mib: 0,
                reason: e.to_string(),
            })?;
        Ok(Self {
            region: r,
            image: Arc::new(image),
        })
    }

    /// Copies the image's last 128 KiB (or all of a smaller image) to the top of the first
    /// megabyte, as the chipset's reset-time shadow would.
    pub fn load_low_alias(&self, memory: &MemoryMap) {
        let n = self.image.len().min(128 << 10);
        let tail = &self.image[self.image.len() - n..];
        memory.write(0x10_0000 - n as u64, tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_skips_the_video_hole_and_splits_at_the_pci_hole() {
        let m = MemoryMap::new(128 << 20).unwrap();
        assert_eq!(m.ram.len(), 2);
        assert!(m.write(0x9_ffff, &[1]));
        assert!(!m.write(0xa_0000, &[1]));
        assert!(m.write(0xc_0000, &[1]));
        assert!(m.write((128 << 20) - 1, &[1]));
        assert!(!m.write(128 << 20, &[1]));
        let big = MemoryMap::new(4 << 30).unwrap();
        assert_eq!(big.below_4g, PCI_HOLE_START);
        assert_eq!(big.above_4g, (4 << 30) - PCI_HOLE_START);
        assert!(big.write(FOUR_GIB + big.above_4g - 1, &[1]));
    }

    #[test]
    fn bios_alias_is_the_image_tail() {
        let m = MemoryMap::new(16 << 20).unwrap();
        let mut image = vec![0u8; 256 << 10];
        image[(128 << 10) - 1] = 0x11;
        *image.last_mut().unwrap() = 0xea;
        let rom = BiosRom::new(image).unwrap();
        rom.load_low_alias(&m);
        assert_eq!(m.read(0xf_ffff, 1).unwrap(), vec![0xea]);
        assert_eq!(m.read(0xe_0000, 1).unwrap(), vec![0]);
    }
}
