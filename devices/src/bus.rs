//! Address-range dispatch for port I/O and MMIO: a sorted table, searched by binary search.

use crate::Device;
use std::sync::{Arc, Mutex};

/// A device shared between vCPU threads and the timer loop.
pub type SharedDevice = Arc<Mutex<dyn Device>>;

/// Wraps a device for the bus.
pub fn shared<D: Device + 'static>(device: D) -> Arc<Mutex<D>> {
    Arc::new(Mutex::new(device))
}

/// Errors building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range overlaps one already registered.
    #[error("{new} at {start:#x}..{end:#x} overlaps {existing}")]
    Overlap {
        /// Device being added.
        new: String,
        /// Device already there.
        existing: String,
        /// Start of the new range.
        start: u64,
        /// End (exclusive) of the new range.
        end: u64,
    },
    /// Zero-length range.
    #[error("empty range for {0}")]
    Empty(String),
}

struct Range {
    start: u64,
    end: u64,
    device: SharedDevice,
}

/// Which kind of access a bus dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    /// Port I/O (addresses are port numbers).
    Port,
    /// Memory-mapped I/O.
    Mmio,
}

/// Sorted, non-overlapping address ranges, each owned by one device.
pub struct Bus {
    kind: BusKind,
    ranges: Vec<Range>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("kind", &self.kind)
            .field("ranges", &self.ranges.len())
            .finish()
    }
}

impl Bus {
    /// An empty bus of `kind`.
    pub fn new(kind: BusKind) -> Self {
        Self {
            kind,
            ranges: Vec::new(),
        }
    }

    /// Registers `device` for `start..start+len`.
    pub fn insert(&mut self, start: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        let name = device
            .lock()
            .map(|d| d.name().to_string())
            .unwrap_or_default();
        if len == 0 {
            return Err(BusError::Empty(name));
        }
        let end = start.saturating_add(len);
        let pos = self.ranges.partition_point(|r| r.start < start);
        let clash = [pos.checked_sub(1), Some(pos)]
            .into_iter()
            .flatten()
            .filter_map(|i| self.ranges.get(i))
            .find(|r| r.start < end && start < r.end);
        if let Some(r) = clash {
            let existing = r
                .device
                .lock()
                .map(|d| d.name().to_string())
                .unwrap_or_default();
            return Err(BusError::Overlap {
                new: name,
                existing,
                start,
                end,
            });
        }
        self.ranges.insert(pos, Range { start, end, device });
        Ok(())
    }

    /// The device owning `address`, if any.
    pub fn find(&self, address: u64) -> Option<&SharedDevice> {
        let pos = self.ranges.partition_point(|r| r.start <= address);
        let r = self.ranges.get(pos.checked_sub(1)?)?;
        (address < r.end).then_some(&r.device)
    }

    /// Reads at `address`; returns false (leaving `data` untouched) when nothing claims it.
    pub fn read(&self, address: u64, data: &mut [u8]) -> bool {
        let Some(device) = self.find(address) else {
            return false;
        };
        let mut d = lock(device);
        match self.kind {
            BusKind::Port => match d.port_io() {
                Some(p) => p.io_read(address as u16, data),
                None => return false,
            },
            BusKind::Mmio => match d.mmio() {
                Some(m) => m.mmio_read(address, data),
                None => return false,
            },
        }
        true
    }

    /// Writes at `address`; returns false when nothing claims it.
    pub fn write(&self, address: u64, data: &[u8]) -> bool {
        let Some(device) = self.find(address) else {
            return false;
        };
        let mut d = lock(device);
        match self.kind {
            BusKind::Port => match d.port_io() {
                Some(p) => p.io_write(address as u16, data),
                None => return false,
            },
            BusKind::Mmio => match d.mmio() {
                Some(m) => m.mmio_write(address, data),
                None => return false,
            },
        }
        true
    }
}

/// Locks a device, recovering from a poisoned lock (a panicking thread must not wedge the VM).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortIo;

    struct Echo(&'static str, u8);
    impl Device for Echo {
        fn name(&self) -> &str {
            self.0
        }
        fn port_io(&mut self) -> Option<&mut dyn PortIo> {
            Some(self)
        }
    }
    impl PortIo for Echo {
        fn io_read(&mut self, _port: u16, data: &mut [u8]) {
            data.fill(self.1);
        }
        fn io_write(&mut self, _port: u16, data: &[u8]) {
            self.1 = data[0];
        }
    }

    #[test]
    fn dispatch_by_range_and_reject_overlap() {
        let mut bus = Bus::new(BusKind::Port);
        bus.insert(0x20, 2, shared(Echo("a", 1))).unwrap();
        bus.insert(0x40, 4, shared(Echo("b", 2))).unwrap();
        assert!(bus.insert(0x43, 2, shared(Echo("c", 3))).is_err());
        assert!(bus.insert(0x1f, 2, shared(Echo("c", 3))).is_err());
        bus.insert(0x22, 1, shared(Echo("d", 4))).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x21, &mut b));
        assert_eq!(b[0], 1);
        assert!(bus.read(0x22, &mut b));
        assert_eq!(b[0], 4);
        assert!(!bus.read(0x23, &mut b));
        assert!(bus.write(0x43, &[9]));
        assert!(bus.read(0x40, &mut b));
        assert_eq!(b[0], 9);
        assert!(!bus.read(0x44, &mut b));
    }
}
