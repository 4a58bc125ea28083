//! Big-endian field access for on-disk headers; reads past the buffer give zeros and writes
//! past it are dropped, so a short or hostile header can never panic the parser.

/// The big-endian `u16` at byte `o` (0 when out of range).
pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(o..o + 2) {
        a.copy_from_slice(s);
    }
    u16::from_be_bytes(a)
}

/// The big-endian `u32` at byte `o` (0 when out of range).
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(o..o + 4) {
        a.copy_from_slice(s);
    }
    u32::from_be_bytes(a)
}

/// The big-endian `u64` at byte `o` (0 when out of range).
pub(crate) fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Copies `v` to byte `o` when it fits.
pub(crate) fn put(b: &mut [u8], o: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(o..o + v.len()) {
        s.copy_from_slice(v);
    }
}
