//! Test helpers: RAM regions and a [`CpuIo`] that records what it is asked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use hv::{CpuIo, GuestRegionMmap};
use vm_memory::GuestAddress;

/// A RAM region of `len` bytes at `start`.
pub(crate) fn ram(start: u64, len: usize) -> Arc<GuestRegionMmap> {
    Arc::new(GuestRegionMmap::from_range(GuestAddress(start), len, None).expect("region"))
}

/// One recorded call: kind, address or port, bytes written or returned.
pub(crate) type Call = (String, u64, Vec<u8>);

/// Records every callback; reads return queued answers, else all-ones.
#[derive(Default)]
pub(crate) struct Recorder {
    calls: RefCell<Vec<Call>>,
    answers: RefCell<HashMap<u64, Vec<u8>>>,
    pic: RefCell<Vec<u8>>,
    eois: RefCell<Vec<u8>>,
}

impl Recorder {
    /// The calls so far, clearing the record.
    pub(crate) fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    /// Answers reads of address or port `at` with `bytes` (repeated as needed).
    pub(crate) fn answer(&self, at: u64, bytes: &[u8]) {
        self.answers.borrow_mut().insert(at, bytes.to_vec());
    }

    /// Queues a PIC vector.
    pub(crate) fn raise_pic(&self, vector: u8) {
        self.pic.borrow_mut().push(vector);
    }

    /// EOIs received.
    pub(crate) fn eois(&self) -> Vec<u8> {
        self.eois.borrow().clone()
    }

    fn fill(&self, at: u64, data: &mut [u8]) {
        match self.answers.borrow().get(&at) {
            Some(a) if !a.is_empty() => {
                for (i, d) in data.iter_mut().enumerate() {
                    *d = a[i % a.len()];
                }
            }
            _ => data.fill(0xff),
        }
    }
}

impl CpuIo for Recorder {
    fn io_read(&self, _vp: u32, port: u16, data: &mut [u8]) {
        self.fill(u64::from(port), data);
        self.calls
            .borrow_mut()
            .push(("io_read".into(), u64::from(port), data.to_vec()));
    }
    fn io_write(&self, _vp: u32, port: u16, data: &[u8]) {
        self.calls
            .borrow_mut()
            .push(("io_write".into(), u64::from(port), data.to_vec()));
    }
    fn mmio_read(&self, _vp: u32, address: u64, data: &mut [u8]) {
        self.fill(address, data);
        self.calls
            .borrow_mut()
            .push(("mmio_read".into(), address, data.to_vec()));
    }
    fn mmio_write(&self, _vp: u32, address: u64, data: &[u8]) {
        self.calls
            .borrow_mut()
            .push(("mmio_write".into(), address, data.to_vec()));
    }
    fn eoi(&self, _vp: u32, vector: u8) {
        self.eois.borrow_mut().push(vector);
    }
    fn pic_interrupt_pending(&self, _vp: u32) -> bool {
        !self.pic.borrow().is_empty()
    }
    fn pic_acknowledge(&self, _vp: u32) -> Option<u8> {
        let mut p = self.pic.borrow_mut();
        (!p.is_empty()).then(|| p.remove(0))
    }
}
