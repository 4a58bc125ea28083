//! Storage: disk images opened for the VM's drives, and guest RAM as DMA-capable devices see it.
//!
//! Placement follows the PC convention: hard disks on the primary IDE channel (master, slave),
//! the CD-ROM drive as secondary master, a further disk as secondary slave; a fourth disk takes
//! the secondary master when there is no CD-ROM image.

use crate::MachineConfig;
use devices::block::BlockBackend;
use devices::dma::Dma8237;
use devices::dma_memory::DmaMemory;
use devices::fdc::Fdc;
use devices::ide::{Drive, Piix3Ide};
use devices::{IrqLine, TimerWaker};
use hv::Partition;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};

/// Errors opening the VM's disk images; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The image could not be opened or is not a valid image.
    #[error("{0}")]
    Image(#[from] disk::Error),
    /// More drives than the IDE channels hold.
    #[error(
        "too many IDE drives: {disks} disks and a CD-ROM; the two IDE channels hold four \
         drives (at most three disks with a CD-ROM)"
    )]
    TooManyDrives {
        /// Hard disks asked for.
        disks: usize,
    },
    /// The floppy image has a size no floppy drive reads.
    #[error("{path}: {reason}")]
    Floppy {
        /// The image.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
}

/// Bytes a class of drives has read and written, for the UI's activity lights.
#[derive(Debug, Default)]
pub struct IoCounter {
    read: AtomicU64,
    written: AtomicU64,
}

impl IoCounter {
    /// Bytes read so far.
    pub fn read_bytes(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written so far.
    pub fn written_bytes(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Activity counters of the machine's drives, by kind.
#[derive(Debug, Clone, Default)]
pub struct DriveActivity {
    /// The hard disks.
    pub disk: Arc<IoCounter>,
    /// The CD-ROM drive.
    pub cdrom: Arc<IoCounter>,
    /// The floppy drive.
    pub floppy: Arc<IoCounter>,
}

/// A `disk` image as the device models see it.
pub struct ImageBackend {
    image: Box<dyn disk::BlockDevice>,
    path: PathBuf,
    counter: Arc<IoCounter>,
}

impl ImageBackend {
    /// Opens `path` (any supported format); `read_only` for CD-ROM images and protected media.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, StorageError> {
        let options = if read_only {
            disk::OpenOptions::read_only()
        } else {
            disk::OpenOptions::read_write()
        };
        let image = disk::open(path, &options)?;
        Ok(Self {
            image,
            path: path.to_path_buf(),
            counter: Arc::default(),
        })
    }

    /// Counts this image's traffic in `counter`.
    pub fn counting(mut self, counter: &Arc<IoCounter>) -> Self {
        self.counter = counter.clone();
        self
    }

    /// The image file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(e: disk::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl BlockBackend for ImageBackend {
    fn len(&self) -> u64 {
        self.image.size()
    }
    fn read_only(&self) -> bool {
        self.image.read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.counter
            .read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.image.read_at(offset, buf).map_err(io_error)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.counter
            .written
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.image.write_at(offset, buf).map_err(io_error)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.image.flush().map_err(io_error)
    }
}

/// Opens removable media (a floppy image): writable when the file is, else write-protected, as
/// a floppy with its tab set.
pub fn open_removable(path: &Path) -> Result<ImageBackend, StorageError> {
    match ImageBackend::open(path, false) {
        Ok(b) => Ok(b),
        Err(first) => match std::fs::OpenOptions::new().write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => ImageBackend::open(path, true),
            _ => Err(first),
        },
    }
}

/// Where a drive sits: IDE channel (0 primary, 1 secondary) and unit (0 master, 1 slave).
pub type IdeSlot = (usize, usize);

/// IDE slots for `disks` hard disks with or without a CD-ROM drive: the disks' slots in order,
/// and the CD-ROM drive's.
pub fn ide_layout(
    disks: usize,
    cdrom: bool,
) -> Result<(Vec<IdeSlot>, Option<IdeSlot>), StorageError> {
    const DISK_ORDER: [IdeSlot; 4] = [(0, 0), (0, 1), (1, 1), (1, 0)];
    let cd_slot = (1, 0);
    // A CD-ROM drive is present when asked for, and otherwise whenever a slot is free for it,
    // so that media can be inserted later.
    let with_cd = cdrom || disks < 4;
    let capacity = if with_cd { 3 } else { 4 };
    if disks > capacity {
        return Err(StorageError::TooManyDrives { disks });
    }
    Ok((DISK_ORDER[..disks].to_vec(), with_cd.then_some(cd_slot)))
}

/// The PIIX3 IDE function with the VM's disks and CD-ROM drive attached (see [`ide_layout`]).
pub(crate) fn ide_controller(
    config: &MachineConfig,
    ram: Arc<dyn DmaMemory>,
    primary_irq: IrqLine,
    secondary_irq: IrqLine,
    activity: &DriveActivity,
) -> Result<(Piix3Ide, Option<IdeSlot>), String> {
    let mut ide = Piix3Ide::new(ram, primary_irq, secondary_irq);
    let (disk_slots, cd_slot) =
        ide_layout(config.disks.len(), config.cdrom.is_some()).map_err(|e| e.to_string())?;
    for (path, &(channel, unit)) in config.disks.iter().zip(&disk_slots) {
        let image = ImageBackend::open(path, false)
            .map_err(|e| e.to_string())?
            .counting(&activity.disk);
        ide.attach(channel, unit, Drive::HardDisk(Box::new(image)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some((channel, unit)) = cd_slot {
        let media: Option<Box<dyn BlockBackend>> = match &config.cdrom {
            Some(path) => Some(Box::new(
                ImageBackend::open(path, true)
                    .map_err(|e| e.to_string())?
                    .counting(&activity.cdrom),
            )),
            None => None,
        };
        ide.attach(channel, unit, Drive::Cdrom(media))
            .map_err(|e| e.to_string())?;
    }
    Ok((ide, cd_slot))
}

/// The floppy controller on ISA DMA, with the VM's floppy image (if any) in drive A.
pub(crate) fn floppy_controller(
    config: &MachineConfig,
    irq: IrqLine,
    dma: Arc<Mutex<Dma8237>>,
    waker: TimerWaker,
    activity: &DriveActivity,
) -> Result<Fdc, String> {
    let mut fdc = Fdc::new(irq, Some(dma), waker);
    if let Some(path) = &config.floppy {
        let image = open_removable(path)
            .map_err(|e| e.to_string())?
            .counting(&activity.floppy);
        fdc.attach(0, Some(Box::new(image)))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(fdc)
}

/// Guest RAM for device DMA. Writes are reported to the partition so that a software CPU
/// drops decoded code it held for the written pages.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    partition: Arc<dyn Partition>,
}

impl GuestRam {
    /// DMA access to `memory` (RAM only: ROM and MMIO are not DMA targets here).
    pub fn new(memory: GuestMemoryMmap, partition: Arc<dyn Partition>) -> Self {
        Self { memory, partition }
    }
}

impl DmaMemory for GuestRam {
    fn read(&self, address: u64, data: &mut [u8]) -> bool {
        self.memory.read_slice(data, GuestAddress(address)).is_ok()
    }

    fn write(&self, address: u64, data: &[u8]) -> bool {
        // Check the whole range first so that a failing write changes nothing.
        if !self.memory.check_range(
            GuestAddress(address),
            data.len(),
            vm_memory::Permissions::Write,
        ) {
            return false;
        }
        let ok = self.memory.write_slice(data, GuestAddress(address)).is_ok();
        if ok {
            self.partition.guest_memory_written(address, data.len());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_places_disks_and_cd_like_a_pc() {
        assert_eq!(ide_layout(0, false).unwrap(), (vec![], Some((1, 0))));
        assert_eq!(ide_layout(1, true).unwrap(), (vec![(0, 0)], Some((1, 0))));
        assert_eq!(
            ide_layout(3, true).unwrap(),
            (vec![(0, 0), (0, 1), (1, 1)], Some((1, 0)))
        );
        assert_eq!(
            ide_layout(4, false).unwrap(),
            (vec![(0, 0), (0, 1), (1, 1), (1, 0)], None)
        );
        assert!(ide_layout(4, true).is_err());
        assert!(ide_layout(5, false).is_err());
    }
}
