//! Where an image's bytes live: a host file or, for tests and fuzzing, memory.

use std::fs::File;
use std::io;

/// A byte store with positioned I/O. The format code works on this, so every parser can run
/// on a host file ([`FileStorage`]) or on a buffer ([`MemStorage`]).
pub trait Storage: Send {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (fewer only at the
    /// end of the store).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, growing the store if needed.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True if the store holds no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (sparsely, where the host can) to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes earlier writes durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Bytes the store occupies on the host (less than `len` for sparse files).
    fn allocated_bytes(&self) -> io::Result<u64> {
        self.len()
    }
}

/// Reads exactly `buf.len()` bytes; past the end of the store is an `UnexpectedEof` error.
pub(crate) fn read_exact(st: &mut dyn Storage, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = offset
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        let n = st.read_at(pos, &mut buf[done..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "only {} of {} bytes at offset {offset} exist",
                    done,
                    buf.len()
                ),
            ));
        }
        done += n;
    }
    Ok(())
}

/// Reads `buf.len()` bytes, filling whatever lies past the end of the store with zeros.
pub(crate) fn read_zero_fill(st: &mut dyn Storage, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let pos = offset
            .checked_add(done as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflow"))?;
        let n = st.read_at(pos, &mut buf[done..])?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// A host file.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Wraps an open file.
    pub fn new(file: File) -> Self {
        Self { file }
    }
}

impl Storage for FileStorage {
    #[cfg(unix)]
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    #[cfg(windows)]
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::windows::fs::FileExt;
        match self.file.seek_read(buf, offset) {
            Err(e) if e.raw_os_error() == Some(38) => Ok(0), // ERROR_HANDLE_EOF
            r => r,
        }
    }

    #[cfg(unix)]
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(buf, offset)
    }

    #[cfg(windows)]
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        let mut done = 0usize;
        while done < buf.len() {
            let n = self.file.seek_write(&buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[cfg(unix)]
    fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.blocks().saturating_mul(512))
    }
}

/// An image held in memory, with a cap on how far writes may grow it.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    /// The bytes of the store.
    pub data: Vec<u8>,
    /// Writes that would grow the store past this many bytes fail.
    pub limit: u64,
    /// Number of `sync` calls seen.
    pub syncs: u64,
}

impl MemStorage {
    /// A store holding `data` that may grow to `limit` bytes.
    pub fn new(data: Vec<u8>, limit: u64) -> Self {
        Self {
            data,
            limit,
            syncs: 0,
        }
    }
}

impl Storage for MemStorage {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.data.len() as u64;
        if offset >= len {
            return Ok(0);
        }
        let start = offset as usize;
        let n = buf.len().min(self.data.len() - start);
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        Ok(n)
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.limit)
            .ok_or_else(|| io::Error::other("write past the in-memory store's limit"))?;
        let end = usize::try_from(end).map_err(io::Error::other)?;
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.len() as u64)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        if len > self.limit {
            return Err(io::Error::other("length past the in-memory store's limit"));
        }
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.data.resize(len, 0);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }
}
