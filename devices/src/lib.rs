//! Device models of the emulated PC.
//!
//! Every device implements [`Device`] and says which capabilities it has: port I/O
//! ([`PortIo`]), MMIO ([`Mmio`]), PCI configuration space ([`PciFunction`]), timed work
//! ([`Poll`]), saved state ([`saved_state::SaveRestore`]). Interrupt outputs are [`IrqLine`]s handed to the device when it is built.
//! The [`bus`] module dispatches accesses by sorted address ranges.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod bus;
pub mod clock;
pub mod debugcon;
pub mod dma;
pub mod dma_memory;
pub mod fdc;
pub mod framebuffer;
pub mod fw_cfg;
pub mod i440fx;
pub mod i8042;
pub mod ide;
pub mod input;
pub mod ioapic;
pub mod irq;
pub mod pci;
pub mod pic;
pub mod piix3;
pub mod piix4_pm;
pub mod pit;
pub mod router;
pub mod rtc;
pub mod saved_state;
pub mod system_control;
pub mod uart;
pub mod vga;

pub use clock::{Clock, HostClock, ManualClock};
pub use irq::{IrqLine, LineSink};

/// A device model. Capabilities default to "not supported".
pub trait Device: Send {
    /// Short name for logs ("pic", "uart0").
    fn name(&self) -> &str;
    /// Port I/O capability.
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        None
    }
    /// MMIO capability.
    fn mmio(&mut self) -> Option<&mut dyn Mmio> {
        None
    }
    /// PCI function capability.
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        None
    }
    /// Timed-work capability.
    fn poll(&mut self) -> Option<&mut dyn Poll> {
        None
    }
    /// Save/restore capability (snapshots and saved state).
    fn save_restore(&mut self) -> Option<&mut dyn saved_state::SaveRestore> {
        None
    }
    /// Returns the device to its power-on state (machine reset).
    fn reset(&mut self) {}
}

/// Port I/O. `data` is 1, 2 or 4 bytes, little-endian; `port` is the absolute port number.
pub trait PortIo {
    /// Fills `data` for a read of `port`.
    fn io_read(&mut self, port: u16, data: &mut [u8]);
    /// Handles a write to `port`.
    fn io_write(&mut self, port: u16, data: &[u8]);
}

/// Memory-mapped I/O. `address` is the absolute guest-physical address.
pub trait Mmio {
    /// Fills `data` for a read at `address`.
    fn mmio_read(&mut self, address: u64, data: &mut [u8]);
    /// Handles a write at `address`.
    fn mmio_write(&mut self, address: u64, data: &[u8]);
}

/// A PCI function's 256-byte configuration space. `offset` is aligned to the access size.
pub trait PciFunction {
    /// Reads `data.len()` bytes at `offset`.
    fn config_read(&mut self, offset: u8, data: &mut [u8]);
    /// Writes `data` at `offset`, honouring read-only bits.
    fn config_write(&mut self, offset: u8, data: &[u8]);
    /// The configuration space, so that the PCI root can decode this function's BARs.
    /// Functions without BARs keep the default.
    fn config_space(&self) -> Option<&pci::ConfigSpace> {
        None
    }
    /// Reads `data.len()` bytes at `offset` inside BAR `bar` (0–5; 6 is the expansion ROM).
    /// Only called while the BAR is enabled and the access lies inside it.
    fn bar_read(&mut self, _bar: u8, _offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }
    /// Writes `data` at `offset` inside BAR `bar` (0–5). Only called while the BAR is
    /// enabled and the access lies inside it.
    fn bar_write(&mut self, _bar: u8, _offset: u64, _data: &[u8]) {}
}

/// Devices with timed behaviour (timers). The machine calls `poll` at or after the deadline the
/// device last returned, and whenever the device's [`TimerWaker`] is woken.
pub trait Poll {
    /// Does the work due at `now_ns` (raise interrupts, advance state) and returns the next
    /// deadline in the device clock's nanoseconds, or `None` when nothing is scheduled.
    fn poll(&mut self, now_ns: u64) -> Option<u64>;
}

/// Lets a device tell the machine's timer loop that its deadline changed.
#[derive(Clone)]
pub struct TimerWaker(std::sync::Arc<dyn Fn() + Send + Sync>);

impl TimerWaker {
    /// Wraps the function that wakes the timer loop.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }
    /// A waker that does nothing (unit tests poll by hand).
    pub fn noop() -> Self {
        Self::new(|| {})
    }
    /// Wakes the timer loop.
    pub fn wake(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for TimerWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerWaker")
    }
}

/// Serves a port read of any width as byte reads of consecutive ports, as an 8-bit ISA
/// device decodes a wide access.
pub fn read_bytewise(port: u16, data: &mut [u8], mut read: impl FnMut(u16) -> u8) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = read(port.wrapping_add(i as u16));
    }
}

/// Serves a port write of any width as byte writes to consecutive ports.
pub fn write_bytewise(port: u16, data: &[u8], mut write: impl FnMut(u16, u8)) {
    for (i, &byte) in data.iter().enumerate() {
        write(port.wrapping_add(i as u16), byte);
    }
}

/// Little-endian value of an access of 1, 2, 4 or 8 bytes.
pub fn read_le(data: &[u8]) -> u64 {
    let mut v = [0u8; 8];
    let n = data.len().min(8);
    v[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(v)
}

/// Stores `value` little-endian into `data` (its length is the access size).
pub fn write_le(data: &mut [u8], value: u64) {
    let n = data.len().min(8);
    data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
}
