//! What storage devices (IDE disks, ATAPI CD-ROMs, floppy drives) need from a disk image.
//!
//! The machine adapts the `disk` crate's images to [`BlockBackend`]; unit tests use
//! [`MemoryBlock`].

use std::io;

/// A virtual disk as a device model sees it: a byte-addressed store of fixed length.
pub trait BlockBackend: Send {
    /// Size in bytes.
    fn len(&self) -> u64;
    /// True if the medium has no bytes (an empty drive).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True if writes are refused (CD-ROM images, write-protected floppies).
    fn read_only(&self) -> bool;
    /// Fills `buf` from byte `offset`; the range lies inside [`BlockBackend::len`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `buf` at byte `offset`; the range lies inside [`BlockBackend::len`].
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes earlier writes durable.
    fn flush(&mut self) -> io::Result<()>;
}

/// A disk held in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryBlock {
    /// The bytes of the disk.
    pub data: Vec<u8>,
    /// Refuse writes.
    pub read_only: bool,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl MemoryBlock {
    /// A writable disk with `data` as its content.
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            read_only: false,
            flushes: 0,
        }
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
        let end = start.checked_add(len).ok_or(io::ErrorKind::InvalidInput)?;
        if end > self.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "access beyond the end of the disk",
            ));
        }
        Ok(start..end)
    }
}

impl BlockBackend for MemoryBlock {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only disk",
            ));
        }
        let r = self.range(offset, buf.len())?;
        self.data[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}
