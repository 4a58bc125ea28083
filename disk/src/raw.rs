//! Raw images: the file is the disk, byte for byte.

use std::path::{Path, PathBuf};

use crate::storage::{read_zero_fill, Storage};
use crate::{check_range, BlockDevice, Error, Extent, ExtentKind, Format, ImageInfo, Result};

/// A raw image.
#[derive(Debug)]
pub struct Raw<S: Storage> {
    st: S,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl<S: Storage> Raw<S> {
    /// Opens `st` as a raw disk of its current length.
    pub fn open(st: S, path: &Path, read_only: bool) -> Result<Self> {
        let size = st.len().map_err(|e| Error::io(path, "cannot read", e))?;
        Ok(Self {
            st,
            path: path.to_path_buf(),
            size,
            read_only,
        })
    }

    /// Makes `st` a raw disk of `size` bytes (sparse where the host allows).
    pub fn create(st: &mut S, path: &Path, size: u64) -> Result<()> {
        st.set_len(size)
            .map_err(|e| Error::io(path, format!("cannot size the file to {size} bytes"), e))
    }
}

impl<S: Storage + 'static> BlockDevice for Raw<S> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.path, offset, buf.len(), self.size)?;
        read_zero_fill(&mut self.st, offset, buf)
            .map_err(|e| Error::io(&self.path, "read failed", e))
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                path: self.path.clone(),
            });
        }
        check_range(&self.path, offset, buf.len(), self.size)?;
        self.st
            .write_at(offset, buf)
            .map_err(|e| Error::io(&self.path, "write failed", e))
    }

    fn flush(&mut self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.st
            .sync()
            .map_err(|e| Error::io(&self.path, "flush failed", e))
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            path: self.path.clone(),
            format: Format::Raw,
            virtual_size: self.size,
            file_size: self.st.len().unwrap_or(self.size),
            allocated_bytes: self.st.allocated_bytes().unwrap_or(0),
            cluster_size: None,
            format_version: None,
            backing_file: None,
            backing: None,
            unique_id: None,
        }
    }

    fn extent(&mut self, offset: u64, max_len: u64) -> Result<Extent> {
        Ok(Extent {
            kind: ExtentKind::Data,
            len: max_len.min(self.size.saturating_sub(offset)),
        })
    }

    fn backing_mut(&mut self) -> Option<&mut dyn BlockDevice> {
        None
    }
}
