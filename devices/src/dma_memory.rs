//! Guest RAM as bus-mastering devices (IDE bus-master DMA, the 8237 ISA DMA) reach it.
//!
//! Every access is checked by the implementation: a range that is not entirely RAM fails
//! (a master abort on real hardware) and touches nothing.

use std::sync::Mutex;

/// Guest-physical memory for device DMA.
pub trait DmaMemory: Send + Sync {
    /// Fills `data` from guest-physical `address`; false (and nothing read) unless the whole
    /// range is RAM.
    fn read(&self, address: u64, data: &mut [u8]) -> bool;
    /// Stores `data` at guest-physical `address`; false (and nothing written) unless the whole
    /// range is RAM.
    fn write(&self, address: u64, data: &[u8]) -> bool;
}

/// Guest memory as a vector starting at address 0, for tests.
#[derive(Debug, Default)]
pub struct VecMemory(pub Mutex<Vec<u8>>);

impl VecMemory {
    /// `size` bytes of zeroed memory.
    pub fn new(size: usize) -> Self {
        Self(Mutex::new(vec![0; size]))
    }

    fn range(len: usize, address: u64, n: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(address).ok()?;
        let end = start.checked_add(n)?;
        (end <= len).then_some(start..end)
    }
}

impl DmaMemory for VecMemory {
    fn read(&self, address: u64, data: &mut [u8]) -> bool {
        let m = crate::bus::lock(&self.0);
        match Self::range(m.len(), address, data.len()) {
            Some(r) => {
                data.copy_from_slice(&m[r]);
                true
            }
            None => false,
        }
    }
    fn write(&self, address: u64, data: &[u8]) -> bool {
        let mut m = crate::bus::lock(&self.0);
        match Self::range(m.len(), address, data.len()) {
            Some(r) => {
                m[r].copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}
