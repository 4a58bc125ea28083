//! Byte sources the detectors read from, and a bounds-checked, budgeted reader over them.

/// Why a read failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The range lies (partly) outside the source.
    OutOfRange,
    /// The read budget of this probe is used up.
    Budget,
    /// The image container failed (damaged qcow2 table, I/O error, ...).
    Device(disk::Error),
}

/// Random-access bytes: a disk image or a memory buffer.
pub(crate) trait Source {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from byte `off`; the whole range must lie inside the source.
    fn read_at(&mut self, buf: &mut [u8], off: u64) -> Result<(), ReadError>;
}

fn in_range(off: u64, len: usize, size: u64) -> bool {
    off.checked_add(len as u64).is_some_and(|end| end <= size)
}

impl Source for Box<dyn disk::BlockDevice> {
    fn size(&self) -> u64 {
        disk::BlockDevice::size(self.as_ref())
    }

    fn read_at(&mut self, buf: &mut [u8], off: u64) -> Result<(), ReadError> {
        if !in_range(off, buf.len(), Source::size(self)) {
            return Err(ReadError::OutOfRange);
        }
        disk::BlockDevice::read_at(self.as_mut(), off, buf).map_err(ReadError::Device)
    }
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&mut self, buf: &mut [u8], off: u64) -> Result<(), ReadError> {
        let start = usize::try_from(off).map_err(|_| ReadError::OutOfRange)?;
        let end = start.checked_add(buf.len()).ok_or(ReadError::OutOfRange)?;
        let src = self.get(start..end).ok_or(ReadError::OutOfRange)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Most bytes one probe reads, whatever the image says (keeps hostile images cheap).
const READ_BUDGET: u64 = 48 << 20;

/// Most read calls one probe makes (FAT chains are followed one entry at a time).
const CALL_BUDGET: u32 = 200_000;

/// A [`Source`] with a read budget; parsers use the `Option` helpers and treat `None` as
/// "not there".
pub(crate) struct Reader<'s> {
    src: &'s mut dyn Source,
    bytes_left: u64,
    calls_left: u32,
    /// The first container error met, for the caller to report when nothing was found.
    pub(crate) device_error: Option<disk::Error>,
}

impl<'s> Reader<'s> {
    /// A reader over `src` with a fresh budget.
    pub(crate) fn new(src: &'s mut dyn Source) -> Self {
        Self {
            src,
            bytes_left: READ_BUDGET,
            calls_left: CALL_BUDGET,
            device_error: None,
        }
    }

    /// Size of the source in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.src.size()
    }

    /// Fills `buf` from `off`, reporting why it could not.
    pub(crate) fn try_read(&mut self, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let len = buf.len() as u64;
        if self.calls_left == 0 || len > self.bytes_left {
            return Err(ReadError::Budget);
        }
        self.calls_left -= 1;
        self.bytes_left -= len;
        self.src.read_at(buf, off)
    }

    /// Fills `buf` from `off`; `None` if the range is outside the source or the read failed.
    pub(crate) fn read(&mut self, off: u64, buf: &mut [u8]) -> Option<()> {
        match self.try_read(off, buf) {
            Ok(()) => Some(()),
            Err(ReadError::Device(e)) => {
                tracing::debug!("media-detect: read at {off} failed: {e}");
                if self.device_error.is_none() {
                    self.device_error = Some(e);
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Reads `N` bytes at `off`.
    pub(crate) fn array<const N: usize>(&mut self, off: u64) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.read(off, &mut b)?;
        Some(b)
    }

    /// Reads `min(len, cap)` bytes at `off`, or as many of them as lie inside the source.
    pub(crate) fn vec_capped(&mut self, off: u64, len: u64, cap: usize) -> Option<Vec<u8>> {
        let avail = self.size().checked_sub(off)?;
        let n = usize::try_from(len.min(avail).min(cap as u64)).ok()?;
        let mut v = vec![0u8; n];
        self.read(off, &mut v)?;
        Some(v)
    }
}

/// Little-endian `u16` at `at` in `b`, or 0 when out of range.
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at.saturating_add(2)) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

/// Little-endian `u32` at `at` in `b`, or 0 when out of range.
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.saturating_add(4)) {
        Some(&[a, c, d, e]) => u32::from_le_bytes([a, c, d, e]),
        _ => 0,
    }
}

/// Little-endian `u64` at `at` in `b`, or 0 when out of range.
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    match b.get(at..at.saturating_add(8)) {
        Some(s) => {
            v.copy_from_slice(s);
            u64::from_le_bytes(v)
        }
        None => 0,
    }
}

/// Byte at `at`, or 0 when out of range.
pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// The `len` bytes at `at`, or an empty slice when out of range.
pub(crate) fn slice(b: &[u8], at: usize, len: usize) -> &[u8] {
    b.get(at..at.saturating_add(len)).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_source_checks_bounds() {
        let data = [1u8, 2, 3, 4];
        let mut s: &[u8] = &data;
        let mut b = [0u8; 2];
        assert!(s.read_at(&mut b, 2).is_ok());
        assert_eq!(b, [3, 4]);
        assert!(s.read_at(&mut b, 3).is_err());
        assert!(s.read_at(&mut b, u64::MAX).is_err());
        let mut r = Reader::new(&mut s);
        assert_eq!(r.vec_capped(1, 100, 2), Some(vec![2, 3]));
        assert_eq!(r.vec_capped(5, 1, 2), None);
        assert_eq!(le32(&data, 0), 0x0403_0201);
        assert_eq!(le32(&data, 1), 0);
        assert_eq!(le16(&data, usize::MAX), 0);
    }
}
