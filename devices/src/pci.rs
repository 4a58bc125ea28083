//! PCI: configuration mechanism #1 on bus 0 ([`PciRoot`], ports 0xCF8-0xCFF) and a reusable
//! type-0 configuration space ([`ConfigSpace`]) with per-byte write masks, write-1-to-clear
//! bits and BAR sizing.
//!
//! Only a dword access at 0xCF8 reaches CONFIG_ADDRESS; byte 0xCF9 is the PIIX reset control
//! register (see [`crate::system_control`]), so the machine registers the root at 0xCF8 (1),
//! 0xCFA (2) and 0xCFC (4) — see [`PCI_PORT_RANGES`].

use crate::bus::{lock, SharedDevice};
use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{read_le, write_le, Device, PciFunction, PortIo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// Port ranges the PCI root answers: `(first port, count)` (0xCF9 is left out on purpose).
pub const PCI_PORT_RANGES: [(u16, u16); 3] = [(0xCF8, 1), (0xCFA, 2), (0xCFC, 4)];

/// Standard header offsets.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status register (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID.
    pub const REVISION: usize = 0x08;
    /// Programming interface.
    pub const PROG_IF: usize = 0x09;
    /// Sub-class.
    pub const SUBCLASS: usize = 0x0A;
    /// Base class.
    pub const CLASS: usize = 0x0B;
    /// Cache line size.
    pub const CACHE_LINE_SIZE: usize = 0x0C;
    /// Latency timer.
    pub const LATENCY_TIMER: usize = 0x0D;
    /// Header type (bit 7: multi-function).
    pub const HEADER_TYPE: usize = 0x0E;
    /// First base address register.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID (16 bits).
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2C;
    /// Subsystem ID (16 bits).
    pub const SUBSYSTEM_ID: usize = 0x2E;
    /// Expansion ROM base address.
    pub const ROM_BAR: usize = 0x30;
    /// Capabilities pointer.
    pub const CAPABILITIES: usize = 0x34;
    /// Interrupt line.
    pub const INTERRUPT_LINE: usize = 0x3C;
    /// Interrupt pin (1 = INTA#).
    pub const INTERRUPT_PIN: usize = 0x3D;
}

/// Command register bits.
pub mod command {
    /// I/O space decoding.
    pub const IO: u16 = 1 << 0;
    /// Memory space decoding.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus mastering.
    pub const BUS_MASTER: u16 = 1 << 2;
    /// Parity error response.
    pub const PARITY: u16 = 1 << 6;
    /// SERR# enable.
    pub const SERR: u16 = 1 << 8;
    /// INTx disable.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Errors configuring PCI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// BAR index outside 0..6 (or a 64-bit BAR at index 5).
    #[error("BAR {0} does not exist")]
    BadBar(usize),
    /// BAR already defined, or the upper half of a 64-bit BAR.
    #[error("BAR {0} is already in use")]
    BarInUse(usize),
    /// Size not a power of two or below the minimum for its kind.
    #[error("invalid BAR size {0:#x}")]
    BadSize(u64),
    /// Device or function number out of range.
    #[error("device {0}.{1} is out of range")]
    BadSlot(u8, u8),
    /// Slot already taken.
    #[error("device {0}.{1} is already registered")]
    SlotInUse(u8, u8),
}

/// What a base address register maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Memory32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// 64-bit memory (occupies this BAR and the next).
    Memory64 {
        /// Prefetchable.
        prefetchable: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bar {
    kind: BarKind,
    size: u64,
}

/// A 256-byte type-0 configuration space.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    data: [u8; 256],
    writable: [u8; 256],
    write_one_to_clear: [u8; 256],
    bars: [Option<Bar>; 6],
    rom_size: Option<u64>,
}

/// The saved contents of a [`ConfigSpace`] (saved state, separate from the runtime type).
///
/// Devices embed it in their own versioned saved-state structs, so its encoding is part of
/// every such version: never change this struct; add a new one for a new layout. Only the
/// 256 bytes are saved: write masks, write-1-to-clear masks and BAR definitions belong to the
/// device's construction and stay as built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    /// The 256 bytes of the space as the guest reads them.
    pub data: Vec<u8>,
}

fn set_bytes(array: &mut [u8; 256], offset: usize, bytes: &[u8]) {
    if let Some(dst) = array.get_mut(offset..offset + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

impl ConfigSpace {
    /// A header-type-0 space with the given identity. The command register's I/O, memory,
    /// bus-master, parity, SERR and INTx-disable bits, cache line size, latency timer and
    /// interrupt line are writable; the status error bits are write-1-to-clear.
    pub fn new(vendor: u16, device: u16, class: u8, subclass: u8, prog_if: u8, rev: u8) -> Self {
        let mut c = Self {
            data: [0; 256],
            writable: [0; 256],
            write_one_to_clear: [0; 256],
            bars: [None; 6],
            rom_size: None,
        };
        c.set_u16(reg::VENDOR_ID, vendor);
        c.set_u16(reg::DEVICE_ID, device);
        c.set_u8(reg::REVISION, rev);
        c.set_u8(reg::PROG_IF, prog_if);
        c.set_u8(reg::SUBCLASS, subclass);
        c.set_u8(reg::CLASS, class);
        let cmd_mask = command::IO
            | command::MEMORY
            | command::BUS_MASTER
            | command::PARITY
            | command::SERR
            | command::INTX_DISABLE;
        c.set_writable(reg::COMMAND, &cmd_mask.to_le_bytes());
        c.set_write_one_to_clear(reg::STATUS, &0xF900u16.to_le_bytes());
        c.set_writable(reg::CACHE_LINE_SIZE, &[0xFF, 0xFF]);
        c.set_writable(reg::INTERRUPT_LINE, &[0xFF]);
        c
    }

    /// Sets the header type byte (0x80 marks a multi-function device).
    pub fn set_header_type(&mut self, header_type: u8) {
        self.set_u8(reg::HEADER_TYPE, header_type);
    }

    /// Sets the subsystem vendor and subsystem IDs.
    pub fn set_subsystem(&mut self, vendor: u16, id: u16) {
        self.set_u16(reg::SUBSYSTEM_VENDOR_ID, vendor);
        self.set_u16(reg::SUBSYSTEM_ID, id);
    }

    /// Sets the interrupt pin (1 = INTA# .. 4 = INTD#, 0 = none).
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        self.set_u8(reg::INTERRUPT_PIN, pin);
    }

    /// Makes the bits in `mask` at `offset..` guest-writable (replacing the previous masks).
    pub fn set_writable(&mut self, offset: usize, mask: &[u8]) {
        set_bytes(&mut self.writable, offset, mask);
    }

    /// Makes the bits in `mask` at `offset..` write-1-to-clear.
    pub fn set_write_one_to_clear(&mut self, offset: usize, mask: &[u8]) {
        set_bytes(&mut self.write_one_to_clear, offset, mask);
    }

    /// Defines BAR `index` (0..6) of `kind` and `size` bytes (a power of two, at least 16 for
    /// memory and 4 for I/O). A 64-bit BAR also takes `index + 1`.
    pub fn add_bar(&mut self, index: usize, kind: BarKind, size: u64) -> Result<(), PciError> {
        let is64 = matches!(kind, BarKind::Memory64 { .. });
        if index >= 6 || (is64 && index >= 5) {
            return Err(PciError::BadBar(index));
        }
        let used = |i: usize| {
            self.bars[i].is_some()
                || (i > 0
                    && matches!(
                        self.bars[i - 1],
                        Some(Bar {
                            kind: BarKind::Memory64 { .. },
                            ..
                        })
                    ))
        };
        if used(index) || (is64 && used(index + 1)) {
            return Err(PciError::BarInUse(index));
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 1 << 16),
            BarKind::Memory32 { .. } => (16, 1 << 31),
            BarKind::Memory64 { .. } => (16, 1 << 63),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(PciError::BadSize(size));
        }
        let mask = !(size - 1);
        let offset = reg::BAR0 + index * 4;
        let (low_flags, low_mask) = match kind {
            BarKind::Io => (0x1u32, mask as u32 & !0x3),
            BarKind::Memory32 { prefetchable } => {
                (u32::from(prefetchable) << 3, mask as u32 & !0xF)
            }
            BarKind::Memory64 { prefetchable } => {
                (0x4 | u32::from(prefetchable) << 3, mask as u32 & !0xF)
            }
        };
        self.set_u32(offset, low_flags);
        self.set_writable(offset, &low_mask.to_le_bytes());
        if is64 {
            self.set_u32(offset + 4, 0);
            self.set_writable(offset + 4, &((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(Bar { kind, size });
        Ok(())
    }

    /// Defines the expansion ROM BAR (0x30) of `size` bytes (a power of two, at least 2 KiB).
    pub fn add_rom(&mut self, size: u64) -> Result<(), PciError> {
        if !size.is_power_of_two() || !(0x800..=1 << 31).contains(&size) {
            return Err(PciError::BadSize(size));
        }
        let mask = (!(size - 1) as u32 & 0xFFFF_F800) | 1;
        self.set_u32(reg::ROM_BAR, 0);
        self.set_writable(reg::ROM_BAR, &mask.to_le_bytes());
        self.rom_size = Some(size);
        Ok(())
    }

    /// Kind and size of BAR `index`, if defined.
    pub fn bar(&self, index: usize) -> Option<(BarKind, u64)> {
        self.bars
            .get(index)
            .copied()
            .flatten()
            .map(|b| (b.kind, b.size))
    }

    /// Address BAR `index` is programmed to (whether or not decoding is enabled).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self.bars.get(index).copied().flatten()?;
        let offset = reg::BAR0 + index * 4;
        let low = u64::from(self.u32(offset));
        Some(match bar.kind {
            BarKind::Io => low & !0x3,
            BarKind::Memory32 { .. } => low & !0xF,
            BarKind::Memory64 { .. } => (low & !0xF) | u64::from(self.u32(offset + 4)) << 32,
        })
    }

    /// Address of the expansion ROM when it is defined and its enable bit is set.
    pub fn rom_address(&self) -> Option<u64> {
        self.rom_size?;
        let v = self.u32(reg::ROM_BAR);
        (v & 1 != 0).then_some(u64::from(v & 0xFFFF_F800))
    }

    /// Size of the expansion ROM, if defined.
    pub fn rom_size(&self) -> Option<u64> {
        self.rom_size
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.u16(reg::COMMAND)
    }

    /// Sets bits in the status register (device side, e.g. interrupt status bit 3).
    pub fn set_status_bits(&mut self, bits: u16) {
        let v = self.u16(reg::STATUS) | bits;
        self.set_u16(reg::STATUS, v);
    }

    /// Clears bits in the status register (device side).
    pub fn clear_status_bits(&mut self, bits: u16) {
        let v = self.u16(reg::STATUS) & !bits;
        self.set_u16(reg::STATUS, v);
    }

    /// Byte at `offset` (0xFF outside the space).
    pub fn u8(&self, offset: usize) -> u8 {
        self.data.get(offset).copied().unwrap_or(0xFF)
    }

    /// Little-endian word at `offset` (all-ones outside the space).
    pub fn u16(&self, offset: usize) -> u16 {
        self.data
            .get(offset..offset + 2)
            .map_or(u16::MAX, |b| u16::from_le_bytes([b[0], b[1]]))
    }

    /// Little-endian dword at `offset` (all-ones outside the space).
    pub fn u32(&self, offset: usize) -> u32 {
        self.data
            .get(offset..offset + 4)
            .map_or(u32::MAX, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Sets a byte, ignoring write masks (device side).
    pub fn set_u8(&mut self, offset: usize, value: u8) {
        set_bytes(&mut self.data, offset, &[value]);
    }

    /// Sets a word, ignoring write masks (device side).
    pub fn set_u16(&mut self, offset: usize, value: u16) {
        set_bytes(&mut self.data, offset, &value.to_le_bytes());
    }

    /// Sets a dword, ignoring write masks (device side).
    pub fn set_u32(&mut self, offset: usize, value: u32) {
        set_bytes(&mut self.data, offset, &value.to_le_bytes());
    }

    /// Guest read of `data.len()` bytes at `offset` (all-ones beyond the space).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        match self.data.get(offset..offset + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => {
                tracing::warn!(
                    offset,
                    len = data.len(),
                    "pci: config read beyond 256 bytes"
                );
                data.fill(0xFF);
            }
        }
    }

    /// The space's contents, for the owning device's saved state.
    pub fn saved(&self) -> ConfigSpaceState {
        ConfigSpaceState {
            data: self.data.to_vec(),
        }
    }

    /// Puts the contents from `s` back, refusing (with [`RestoreError::Corrupt`] naming
    /// `device`) a state that is not 256 bytes long or whose read-only bits differ from this
    /// space's anywhere but in the status register (which the device itself sets): such a
    /// state belongs to another device, or is damaged. On error the space is unchanged.
    pub fn restore_saved(
        &mut self,
        s: &ConfigSpaceState,
        device: &str,
    ) -> Result<(), RestoreError> {
        let data: [u8; 256] = match s.data.as_slice().try_into() {
            Ok(data) => data,
            Err(_) => {
                return Err(RestoreError::Corrupt {
                    device: device.to_string(),
                    reason: format!(
                        "PCI configuration space of {} bytes (expected 256)",
                        s.data.len()
                    ),
                })
            }
        };
        for (offset, (&saved, &current)) in data.iter().zip(self.data.iter()).enumerate() {
            if (reg::STATUS..reg::STATUS + 2).contains(&offset) {
                continue;
            }
            let fixed = !self.writable[offset];
            ensure(
                (saved ^ current) & fixed == 0,
                device,
                format!(
                    "PCI configuration byte {offset:#04x} is {saved:#04x}, but its read-only \
                     bits {fixed:#04x} are {current:#04x} on this device"
                ),
            )?;
        }
        self.data = data;
        Ok(())
    }

    /// Guest write of `data` at `offset`, honouring writable and write-1-to-clear masks.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        if offset + data.len() > 256 {
            tracing::warn!(
                offset,
                len = data.len(),
                "pci: config write beyond 256 bytes"
            );
            return;
        }
        for (i, &value) in data.iter().enumerate() {
            let o = offset + i;
            let w = self.writable[o];
            let w1c = self.write_one_to_clear[o];
            self.data[o] = ((self.data[o] & !w) | (value & w)) & !(value & w1c);
        }
    }
}

impl PciFunction for ConfigSpace {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.read(usize::from(offset), data);
    }
    fn config_write(&mut self, offset: u8, data: &[u8]) {
        self.write(usize::from(offset), data);
    }
    fn config_space(&self) -> Option<&ConfigSpace> {
        Some(self)
    }
}

/// One enabled BAR: where it decodes and whose it is.
#[derive(Clone)]
struct Window {
    start: u64,
    len: u64,
    bar: u8,
    function: SharedDevice,
}

#[derive(Default)]
struct WindowTable {
    io: Vec<Window>,
    memory: Vec<Window>,
}

/// The address windows of every enabled BAR on bus 0, kept current by [`PciRoot`] as the guest
/// programs BARs and command registers. The machine sends port and MMIO accesses that no fixed
/// device claims here.
#[derive(Clone, Default)]
pub struct PciWindows(Arc<RwLock<WindowTable>>);

impl std::fmt::Debug for PciWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        let ranges = |w: &[Window]| w.iter().map(|w| (w.start, w.len)).collect::<Vec<_>>();
        f.debug_struct("PciWindows")
            .field("io", &ranges(&t.io))
            .field("memory", &ranges(&t.memory))
            .finish()
    }
}

impl PciWindows {
    fn find(&self, io: bool, address: u64, len: usize) -> Option<(SharedDevice, u8, u64)> {
        let t = self.0.read().unwrap_or_else(|e| e.into_inner());
        let list = if io { &t.io } else { &t.memory };
        list.iter()
            .find(|w| {
                address >= w.start
                    && address
                        .checked_add(len as u64)
                        .is_some_and(|end| end <= w.start + w.len)
            })
            .map(|w| (w.function.clone(), w.bar, address - w.start))
    }

    fn access(
        &self,
        io: bool,
        address: u64,
        len: usize,
        f: impl FnOnce(&mut dyn PciFunction, u8, u64),
    ) -> bool {
        let Some((function, bar, offset)) = self.find(io, address, len) else {
            return false;
        };
        let mut dev = lock(&function);
        match dev.pci() {
            Some(pci) => {
                f(pci, bar, offset);
                true
            }
            None => false,
        }
    }

    /// Serves a port read inside an enabled I/O BAR; false when none contains it.
    pub fn io_read(&self, port: u16, data: &mut [u8]) -> bool {
        self.access(true, u64::from(port), data.len(), |f, bar, off| {
            f.bar_read(bar, off, data)
        })
    }

    /// Serves a port write inside an enabled I/O BAR; false when none contains it.
    pub fn io_write(&self, port: u16, data: &[u8]) -> bool {
        self.access(true, u64::from(port), data.len(), |f, bar, off| {
            f.bar_write(bar, off, data)
        })
    }

    /// Serves a memory read inside an enabled memory BAR or expansion ROM; false when none
    /// contains it.
    pub fn mmio_read(&self, address: u64, data: &mut [u8]) -> bool {
        self.access(false, address, data.len(), |f, bar, off| {
            f.bar_read(bar, off, data)
        })
    }

    /// Serves a memory write inside an enabled memory BAR; false when none contains it.
    pub fn mmio_write(&self, address: u64, data: &[u8]) -> bool {
        self.access(false, address, data.len(), |f, bar, off| {
            f.bar_write(bar, off, data)
        })
    }
}

/// Whether a config write at `offset` of `len` bytes can move or enable a BAR.
fn touches_decoding(offset: u8, len: usize) -> bool {
    let (start, end) = (usize::from(offset), usize::from(offset) + len);
    let hits = |a: usize, b: usize| start < b && a < end;
    hits(reg::COMMAND, reg::COMMAND + 2)
        || hits(reg::BAR0, reg::BAR0 + 24)
        || hits(reg::ROM_BAR, reg::ROM_BAR + 4)
}

/// Configuration mechanism #1 for bus 0.
pub struct PciRoot {
    address: u32,
    functions: BTreeMap<(u8, u8), SharedDevice>,
    windows: PciWindows,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("address", &self.address)
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// An empty bus 0.
    pub fn new() -> Self {
        Self {
            address: 0,
            functions: BTreeMap::new(),
            windows: PciWindows::default(),
        }
    }

    /// The shared table of enabled BAR windows.
    pub fn windows(&self) -> PciWindows {
        self.windows.clone()
    }

    /// Recomputes the BAR windows from every function's configuration space. Windows at
    /// address 0 are left out (a BAR the firmware has not placed yet), as are I/O windows
    /// beyond the 64 KiB port space.
    pub fn update_windows(&self) {
        let mut table = WindowTable::default();
        for f in self.functions.values() {
            let mut dev = lock(f);
            let Some(cs) = dev.pci().and_then(|p| p.config_space()) else {
                continue;
            };
            let cmd = cs.command();
            for i in 0..6 {
                let (Some((kind, len)), Some(start)) = (cs.bar(i), cs.bar_address(i)) else {
                    continue;
                };
                let window = Window {
                    start,
                    len,
                    bar: i as u8,
                    function: f.clone(),
                };
                match kind {
                    BarKind::Io
                        if cmd & command::IO != 0 && start != 0 && start + len <= 0x1_0000 =>
                    {
                        table.io.push(window)
                    }
                    BarKind::Memory32 { .. } | BarKind::Memory64 { .. }
                        if cmd & command::MEMORY != 0 && start != 0 =>
                    {
                        table.memory.push(window)
                    }
                    _ => {}
                }
            }
            if let (Some(start), Some(len)) = (cs.rom_address(), cs.rom_size()) {
                if cmd & command::MEMORY != 0 && start != 0 {
                    table.memory.push(Window {
                        start,
                        len,
                        bar: 6,
                        function: f.clone(),
                    });
                }
            }
        }
        *self.windows.0.write().unwrap_or_else(|e| e.into_inner()) = table;
    }

    /// Places `function` at 00:`device`.`func` (device 0..32, function 0..8). Its
    /// [`Device::pci`] capability serves the configuration space.
    pub fn register(
        &mut self,
        device: u8,
        func: u8,
        function: SharedDevice,
    ) -> Result<(), PciError> {
        if device >= 32 || func >= 8 {
            return Err(PciError::BadSlot(device, func));
        }
        if self.functions.contains_key(&(device, func)) {
            return Err(PciError::SlotInUse(device, func));
        }
        self.functions.insert((device, func), function);
        Ok(())
    }

    /// The function at 00:`device`.`func`, if registered.
    pub fn function(&self, device: u8, func: u8) -> Option<&SharedDevice> {
        self.functions.get(&(device, func))
    }

    /// CONFIG_ADDRESS as the guest last wrote it (reserved bits read 0).
    pub fn config_address(&self) -> u32 {
        self.address
    }

    /// Reads configuration space of 00:`device`.`func` at `offset` (all-ones when absent).
    /// Unaligned accesses are split into bytes.
    pub fn config_read(&self, device: u8, func: u8, offset: u8, data: &mut [u8]) {
        let Some(f) = self.functions.get(&(device, func)) else {
            data.fill(0xFF);
            return;
        };
        let mut dev = lock(f);
        let Some(pci) = dev.pci() else {
            data.fill(0xFF);
            return;
        };
        if usize::from(offset) % data.len().max(1) == 0 {
            pci.config_read(offset, data);
        } else {
            for (i, b) in data.iter_mut().enumerate() {
                pci.config_read(offset.wrapping_add(i as u8), std::slice::from_mut(b));
            }
        }
    }

    /// Writes configuration space of 00:`device`.`func` (ignored when absent). A write to
    /// the command register, a BAR or the ROM BAR updates the BAR windows.
    pub fn config_write(&self, device: u8, func: u8, offset: u8, data: &[u8]) {
        let Some(f) = self.functions.get(&(device, func)) else {
            return;
        };
        {
            let mut dev = lock(f);
            let Some(pci) = dev.pci() else { return };
            if usize::from(offset) % data.len().max(1) == 0 {
                pci.config_write(offset, data);
            } else {
                for (i, b) in data.iter().enumerate() {
                    pci.config_write(offset.wrapping_add(i as u8), std::slice::from_ref(b));
                }
            }
        }
        if touches_decoding(offset, data.len()) {
            self.update_windows();
        }
    }

    /// The target of a data-port access at `port` of `len` bytes, if enabled and on bus 0.
    fn target(&self, port: u16, len: usize) -> Option<(u8, u8, u8)> {
        let within = usize::from(port.wrapping_sub(0xCFC));
        if within + len > 4 {
            tracing::warn!(port, len, "pci: data access crosses the dword");
            return None;
        }
        if self.address & 0x8000_0000 == 0 || (self.address >> 16) & 0xFF != 0 {
            return None;
        }
        let device = ((self.address >> 11) & 0x1F) as u8;
        let func = ((self.address >> 8) & 0x7) as u8;
        let offset = (self.address & 0xFC) as u8 | within as u8;
        Some((device, func, offset))
    }
}

impl Device for PciRoot {
    fn name(&self) -> &str {
        "pci-root"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.address = 0;
        // The functions reset their own configuration spaces; the windows follow once
        // they have (the machine calls `update_windows` after a reset).
    }
}

impl PortIo for PciRoot {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            0xCF8 if data.len() == 4 => write_le(data, u64::from(self.address)),
            0xCFC..=0xCFF => match self.target(port, data.len()) {
                Some((device, func, offset)) => self.config_read(device, func, offset, data),
                None => data.fill(0xFF),
            },
            _ => {
                tracing::debug!(port, len = data.len(), "pci: non-dword CONFIG_ADDRESS read");
                data.fill(0xFF);
            }
        }
    }

    fn io_write(&mut self, port: u16, data: &[u8]) {
        match port {
            0xCF8 if data.len() == 4 => self.address = read_le(data) as u32 & 0x80FF_FFFC,
            0xCFC..=0xCFF => {
                if let Some((device, func, offset)) = self.target(port, data.len()) {
                    self.config_write(device, func, offset, data);
                }
            }
            _ => tracing::debug!(
                port,
                len = data.len(),
                "pci: non-dword CONFIG_ADDRESS write"
            ),
        }
    }
}

/// Saved state of [`PciRoot`]: the CONFIG_ADDRESS latch. The functions on the bus save their
/// own configuration spaces.
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`PciRootStateV1`].
    pub const VERSION: u32 = 1;

    /// The root's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PciRootStateV1 {
        /// CONFIG_ADDRESS as the guest last wrote it.
        pub address: u32,
    }
}

/// Bits of CONFIG_ADDRESS that can be set (enable, bus, device, function, dword register).
const CONFIG_ADDRESS_MASK: u32 = 0x80FF_FFFC;

impl SaveRestore for PciRoot {
    fn save(&mut self) -> SavedState {
        let state = save::PciRootStateV1 {
            address: self.address,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores CONFIG_ADDRESS, then recomputes the BAR windows from the functions' current
    /// configuration spaces: restore the functions first (or call
    /// [`PciRoot::update_windows`] once they are).
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let name = self.name().to_string();
        let s: save::PciRootStateV1 = crate::saved_state::decode(state, &name, save::VERSION)?;
        ensure(
            s.address & !CONFIG_ADDRESS_MASK == 0,
            &name,
            format!("CONFIG_ADDRESS {:#010x} has reserved bits set", s.address),
        )?;
        self.address = s.address;
        self.update_windows();
        Ok(())
    }
}

/// Checks shared by the saved-state tests of every device.
#[cfg(test)]
pub(crate) mod saved_state_checks {
    use crate::saved_state::{RestoreError, SaveRestore, SavedState};

    /// Asserts that `dev` refuses `good` with another version, truncated or garbage data and
    /// another device's name, and that each refusal leaves `dev` saving what it saved before.
    pub(crate) fn check_refusals(dev: &mut dyn SaveRestore, good: &SavedState) {
        let before = dev.save();
        let mut other_version = good.clone();
        other_version.version += 1;
        assert!(
            matches!(
                dev.restore(&other_version),
                Err(RestoreError::Version { .. })
            ),
            "another version"
        );
        let mut other_device = good.clone();
        other_device.device.push_str("-other");
        assert!(
            matches!(
                dev.restore(&other_device),
                Err(RestoreError::WrongDevice { .. })
            ),
            "another device's state"
        );
        let mut truncated = good.clone();
        truncated.data.truncate(good.data.len() - 1);
        assert!(
            matches!(dev.restore(&truncated), Err(RestoreError::Corrupt { .. })),
            "truncated data"
        );
        let mut garbage = good.clone();
        garbage.data = vec![0xFF; 3];
        assert!(
            matches!(dev.restore(&garbage), Err(RestoreError::Corrupt { .. })),
            "garbage data"
        );
        let mut empty = good.clone();
        empty.data.clear();
        assert!(
            matches!(dev.restore(&empty), Err(RestoreError::Corrupt { .. })),
            "empty data"
        );
        assert_eq!(dev.save(), before, "a refused restore changed the device");
    }

    /// Asserts that `dev` refuses `bad` as corrupt, naming the device, and is unchanged.
    pub(crate) fn check_corrupt(dev: &mut dyn SaveRestore, bad: &SavedState) {
        let before = dev.save();
        match dev.restore(bad) {
            Err(e @ RestoreError::Corrupt { .. }) => {
                assert!(e.to_string().contains(&bad.device), "{e}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(dev.save(), before, "a refused restore changed the device");
    }

    /// Re-encodes `state` after `edit` changed its decoded value.
    pub(crate) fn edited<T: serde::Serialize + serde::de::DeserializeOwned>(
        state: &SavedState,
        edit: impl FnOnce(&mut T),
    ) -> SavedState {
        let mut value: T = postcard::from_bytes(&state.data).expect("decodes");
        edit(&mut value);
        crate::saved_state::encode(&state.device, state.version, &value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::shared;

    struct Func(ConfigSpace);
    impl Device for Func {
        fn name(&self) -> &str {
            "func"
        }
        fn pci(&mut self) -> Option<&mut dyn PciFunction> {
            Some(&mut self.0)
        }
    }

    fn sample() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x1234, 0x5678, 0x03, 0x00, 0x00, 0x02);
        c.add_bar(0, BarKind::Memory32 { prefetchable: true }, 16 << 20)
            .unwrap();
        c.add_bar(1, BarKind::Io, 0x20).unwrap();
        c.add_bar(
            2,
            BarKind::Memory64 {
                prefetchable: false,
            },
            1 << 33,
        )
        .unwrap();
        c.add_rom(0x10000).unwrap();
        c.set_interrupt_pin(1);
        c
    }

    fn root() -> PciRoot {
        let mut r = PciRoot::new();
        r.register(3, 0, shared(Func(sample()))).unwrap();
        r
    }

    fn select(r: &mut PciRoot, dev: u8, func: u8, offset: u8) {
        let a = 0x8000_0000u32 | u32::from(dev) << 11 | u32::from(func) << 8 | u32::from(offset);
        r.io_write(0xCF8, &a.to_le_bytes());
    }

    fn read(r: &mut PciRoot, port: u16, len: usize) -> u32 {
        let mut b = vec![0u8; len];
        r.io_read(port, &mut b);
        read_le(&b) as u32
    }

    #[test]
    fn config_address_reads_back() {
        let mut r = root();
        r.io_write(0xCF8, &0x8000_0000u32.to_le_bytes());
        assert_eq!(read(&mut r, 0xCF8, 4), 0x8000_0000);
        r.io_write(0xCF8, &0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(read(&mut r, 0xCF8, 4), 0x80FF_FFFC);
        assert_eq!(read(&mut r, 0xCF8, 2), 0xFFFF);
        r.io_write(0xCF8, &[0x12, 0x34]); // not a dword: ignored
        assert_eq!(r.config_address(), 0x80FF_FFFC);
    }

    #[test]
    fn byte_word_dword_reads_at_every_offset() {
        let mut r = root();
        let expected = sample();
        for offset in (0..=0xFCu8).step_by(4) {
            select(&mut r, 3, 0, offset);
            let dword = expected.u32(usize::from(offset));
            assert_eq!(read(&mut r, 0xCFC, 4), dword, "dword {offset:#x}");
            for i in 0..4u16 {
                assert_eq!(read(&mut r, 0xCFC + i, 1), (dword >> (8 * i)) & 0xFF);
            }
            for i in 0..3u16 {
                assert_eq!(read(&mut r, 0xCFC + i, 2), (dword >> (8 * i)) & 0xFFFF);
            }
            // Crossing the dword boundary reads all-ones.
            assert_eq!(read(&mut r, 0xCFD, 4), 0xFFFF_FFFF);
        }
        select(&mut r, 3, 0, 0);
        assert_eq!(read(&mut r, 0xCFC, 4), 0x5678_1234);
        select(&mut r, 3, 0, 8);
        assert_eq!(read(&mut r, 0xCFC, 4), 0x0300_0002);
        assert_eq!(read(&mut r, 0xCFF, 1), 0x03);
        assert_eq!(read(&mut r, 0xCFE, 2), 0x0300);
    }

    #[test]
    fn absent_functions_and_disabled_cycles_read_all_ones() {
        let mut r = root();
        select(&mut r, 4, 0, 0);
        assert_eq!(read(&mut r, 0xCFC, 4), 0xFFFF_FFFF);
        select(&mut r, 3, 1, 0);
        assert_eq!(read(&mut r, 0xCFC, 2), 0xFFFF);
        // Bus 1.
        r.io_write(0xCF8, &0x8001_1800u32.to_le_bytes());
        assert_eq!(read(&mut r, 0xCFC, 4), 0xFFFF_FFFF);
        // Enable bit clear.
        r.io_write(0xCF8, &0x0000_1800u32.to_le_bytes());
        assert_eq!(read(&mut r, 0xCFC, 4), 0xFFFF_FFFF);
        assert!(r.register(3, 0, shared(Func(sample()))).is_err());
        assert!(r.register(32, 0, shared(Func(sample()))).is_err());
    }

    #[test]
    fn bar_sizing() {
        let mut r = root();
        let size_of = |r: &mut PciRoot, offset: u8| {
            select(r, 3, 0, offset);
            r.io_write(0xCFC, &u32::MAX.to_le_bytes());
            read(r, 0xCFC, 4)
        };
        assert_eq!(size_of(&mut r, 0x10), 0xFF00_0008); // 16 MiB prefetchable
        assert_eq!(size_of(&mut r, 0x14), 0xFFFF_FFE1); // 32 ports of I/O
        assert_eq!(size_of(&mut r, 0x18), 0x0000_0004); // 64-bit, 8 GiB: low half
        assert_eq!(size_of(&mut r, 0x1C), 0xFFFF_FFFE); // high half
        assert_eq!(size_of(&mut r, 0x20), 0x0000_0000); // no BAR
        assert_eq!(size_of(&mut r, 0x30), 0xFFFF_0001); // 64 KiB ROM
                                                        // Program addresses.
        let dev = r.function(3, 0).unwrap().clone();
        select(&mut r, 3, 0, 0x18);
        r.io_write(0xCFC, &0x0000_0000u32.to_le_bytes());
        select(&mut r, 3, 0, 0x1C);
        r.io_write(0xCFC, &0x0000_0004u32.to_le_bytes());
        select(&mut r, 3, 0, 0x10);
        r.io_write(0xCFC, &0xE000_0000u32.to_le_bytes());
        select(&mut r, 3, 0, 0x14);
        r.io_write(0xCFC, &0x0000_C001u32.to_le_bytes());
        select(&mut r, 3, 0, 0x30);
        r.io_write(0xCFC, &0xFEB0_0001u32.to_le_bytes());
        let mut d = dev.lock().unwrap();
        let mut c = [0u8; 4];
        d.pci().unwrap().config_read(0x10, &mut c);
        assert_eq!(u32::from_le_bytes(c), 0xE000_0008);
        drop(d);
        let mut cs = sample();
        cs.write(0x18, &0u32.to_le_bytes());
        cs.write(0x1C, &4u32.to_le_bytes());
        cs.write(0x10, &0xE000_0000u32.to_le_bytes());
        cs.write(0x14, &0xC001u32.to_le_bytes());
        cs.write(0x30, &0xFEB0_0001u32.to_le_bytes());
        assert_eq!(cs.bar_address(0), Some(0xE000_0000));
        assert_eq!(cs.bar_address(1), Some(0xC000));
        assert_eq!(cs.bar_address(2), Some(0x4_0000_0000));
        assert_eq!(cs.bar_address(3), None);
        assert_eq!(cs.rom_address(), Some(0xFEB0_0000));
        cs.write(0x30, &0xFEB0_0000u32.to_le_bytes());
        assert_eq!(cs.rom_address(), None);
    }

    #[test]
    fn bar_definition_errors() {
        let mut c = ConfigSpace::new(1, 2, 0, 0, 0, 0);
        assert_eq!(c.add_bar(6, BarKind::Io, 4), Err(PciError::BadBar(6)));
        assert_eq!(
            c.add_bar(
                5,
                BarKind::Memory64 {
                    prefetchable: false
                },
                16
            ),
            Err(PciError::BadBar(5))
        );
        assert_eq!(c.add_bar(0, BarKind::Io, 3), Err(PciError::BadSize(3)));
        c.add_bar(
            0,
            BarKind::Memory64 {
                prefetchable: false,
            },
            4096,
        )
        .unwrap();
        assert_eq!(c.add_bar(1, BarKind::Io, 4), Err(PciError::BarInUse(1)));
        assert_eq!(c.add_rom(100), Err(PciError::BadSize(100)));
    }

    #[test]
    fn command_and_status_masks() {
        let mut c = sample();
        c.write(0x04, &0xFFFFu16.to_le_bytes());
        assert_eq!(c.command(), 0x0547);
        c.set_status_bits(0x8000 | 0x2000 | 0x0010);
        c.write(0x06, &0x2000u16.to_le_bytes());
        assert_eq!(c.u16(0x06), 0x8010);
        c.write(0x00, &[0, 0, 0, 0]); // IDs are read-only
        assert_eq!(c.u32(0), 0x5678_1234);
        c.write(0x3C, &[0x0B, 0x04]);
        assert_eq!(c.u16(0x3C), 0x010B);
        let mut b = [0u8; 4];
        c.read(254, &mut b);
        assert_eq!(b, [0xFF; 4]);
        c.write(254, &[1, 2, 3, 4]);
    }

    #[test]
    fn unaligned_word_at_cfd_is_split() {
        let mut r = root();
        select(&mut r, 3, 0, 0x00);
        assert_eq!(read(&mut r, 0xCFD, 2), 0x7812);
        select(&mut r, 3, 0, 0x04);
        r.io_write(0xCFD, &[0x05, 0xFF]); // command high byte, status low byte
        select(&mut r, 3, 0, 0x04);
        assert_eq!(read(&mut r, 0xCFC, 4), 0x0000_0500);
    }

    /// A function whose BAR reads return the BAR number and offset, and which records writes.
    struct BarFunc(ConfigSpace, Vec<(u8, u64, Vec<u8>)>);
    impl Device for BarFunc {
        fn name(&self) -> &str {
            "bars"
        }
        fn pci(&mut self) -> Option<&mut dyn PciFunction> {
            Some(self)
        }
    }
    impl PciFunction for BarFunc {
        fn config_read(&mut self, offset: u8, data: &mut [u8]) {
            self.0.config_read(offset, data)
        }
        fn config_write(&mut self, offset: u8, data: &[u8]) {
            self.0.config_write(offset, data)
        }
        fn config_space(&self) -> Option<&ConfigSpace> {
            Some(&self.0)
        }
        fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
            data.fill(0);
            data[0] = bar;
            if data.len() > 1 {
                data[1] = offset as u8;
            }
        }
        fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
            self.1.push((bar, offset, data.to_vec()));
        }
    }

    #[test]
    fn bar_windows_follow_programming_and_command_bits() {
        let f = shared(BarFunc(sample(), Vec::new()));
        let mut r = PciRoot::new();
        r.register(3, 0, f.clone()).unwrap();
        let w = r.windows();
        let mut b = [0u8; 2];
        assert!(
            !w.io_read(0xC010, &mut b),
            "nothing decodes before programming"
        );
        select(&mut r, 3, 0, 0x14);
        r.io_write(0xCFC, &0xC000u32.to_le_bytes());
        select(&mut r, 3, 0, 0x10);
        r.io_write(0xCFC, &0xE000_0000u32.to_le_bytes());
        assert!(!w.io_read(0xC010, &mut b), "I/O decoding still disabled");
        select(&mut r, 3, 0, 0x04);
        r.io_write(0xCFC, &[0x01, 0x00]);
        assert!(w.io_read(0xC010, &mut b));
        assert_eq!(b, [1, 0x10]);
        assert!(
            !w.io_read(0xC01F, &mut b),
            "access crossing the window's end"
        );
        assert!(
            !w.mmio_read(0xE000_0000, &mut b),
            "memory decoding disabled"
        );
        r.io_write(0xCFC, &[0x03, 0x00]);
        assert!(w.mmio_write(0xE000_0100, &[7]));
        assert_eq!(lock(&f).1, vec![(0, 0x100, vec![7])]);
        // The ROM decodes only with its enable bit.
        select(&mut r, 3, 0, 0x30);
        r.io_write(0xCFC, &0xD000_0000u32.to_le_bytes());
        assert!(!w.mmio_read(0xD000_0000, &mut b));
        r.io_write(0xCFC, &0xD000_0001u32.to_le_bytes());
        assert!(w.mmio_read(0xD000_0010, &mut b));
        assert_eq!(b, [6, 0x10]);
        // Moving the BAR moves the window.
        select(&mut r, 3, 0, 0x14);
        r.io_write(0xCFC, &0xB000u32.to_le_bytes());
        assert!(!w.io_read(0xC000, &mut b));
        assert!(w.io_read(0xB004, &mut b));
    }
}

#[cfg(test)]
mod save_tests {
    use super::saved_state_checks::{check_corrupt, check_refusals, edited};
    use super::*;
    use crate::bus::shared;

    struct Func(ConfigSpace);
    impl Device for Func {
        fn name(&self) -> &str {
            "func"
        }
        fn pci(&mut self) -> Option<&mut dyn PciFunction> {
            Some(&mut self.0)
        }
    }

    fn sample() -> ConfigSpace {
        let mut c = ConfigSpace::new(0x1234, 0x5678, 0x03, 0x00, 0x00, 0x02);
        c.add_bar(0, BarKind::Memory32 { prefetchable: true }, 16 << 20)
            .unwrap();
        c.add_bar(1, BarKind::Io, 0x20).unwrap();
        c.add_rom(0x10000).unwrap();
        c.set_interrupt_pin(1);
        c
    }

    fn programmed() -> ConfigSpace {
        let mut c = sample();
        c.write(0x10, &0xE000_0000u32.to_le_bytes());
        c.write(0x14, &0xC001u32.to_le_bytes());
        c.write(0x30, &0xFEB0_0001u32.to_le_bytes());
        c.write(reg::COMMAND, &0x0107u16.to_le_bytes());
        c.write(reg::CACHE_LINE_SIZE, &[0x10, 0x40]);
        c.write(reg::INTERRUPT_LINE, &[11]);
        c.set_status_bits(0x2000 | 0x0008);
        c
    }

    fn all_bytes(c: &ConfigSpace) -> Vec<u8> {
        (0..256).map(|o| c.u8(o)).collect()
    }

    #[test]
    fn config_space_round_trip() {
        let original = programmed();
        let saved = original.saved();
        let mut restored = sample();
        restored.restore_saved(&saved, "func").unwrap();
        assert_eq!(all_bytes(&restored), all_bytes(&original));
        assert_eq!(restored.saved(), saved);
        for i in 0..6 {
            assert_eq!(restored.bar_address(i), original.bar_address(i), "BAR {i}");
        }
        assert_eq!(restored.rom_address(), Some(0xFEB0_0000));
        // Masks still apply after the restore, on both.
        let mut original = original;
        for c in [&mut original, &mut restored] {
            c.write(reg::STATUS, &0x2000u16.to_le_bytes());
            c.write(0x00, &[0, 0]);
            c.write(0x14, &u32::MAX.to_le_bytes());
        }
        assert_eq!(all_bytes(&restored), all_bytes(&original));
        assert_eq!(restored.u32(0x14), 0xFFFF_FFE1);
    }

    #[test]
    fn config_space_refuses_foreign_or_damaged_contents() {
        let saved = programmed().saved();
        let mut c = sample();
        c.write(reg::INTERRUPT_LINE, &[5]);
        let before = all_bytes(&c);
        let refuse = |c: &mut ConfigSpace, s: &ConfigSpaceState| {
            let e = c.restore_saved(s, "func").unwrap_err();
            assert!(matches!(e, RestoreError::Corrupt { .. }), "{e:?}");
            assert!(e.to_string().contains("func"), "{e}");
        };
        let mut short = saved.clone();
        short.data.pop();
        refuse(&mut c, &short);
        // Another device's identity.
        let other = ConfigSpace::new(0x8086, 0x1237, 0x06, 0, 0, 2).saved();
        refuse(&mut c, &other);
        // A BAR whose read-only type bits changed (I/O BAR turned into memory).
        let mut bar = saved.clone();
        bar.data[0x14] &= !1;
        refuse(&mut c, &bar);
        // Address bits below the BAR size are read-only zeros.
        let mut low = saved.clone();
        low.data[0x11] = 0x10;
        refuse(&mut c, &low);
        assert_eq!(all_bytes(&c), before, "refusals leave the space unchanged");
        // The status register is the device's own: any bits restore.
        let mut status = saved.clone();
        status.data[reg::STATUS + 1] = 0xFF;
        c.restore_saved(&status, "func").unwrap();
        assert_eq!(c.u16(reg::STATUS) >> 8, 0xFF);
    }

    fn root_with(c: ConfigSpace) -> (PciRoot, SharedDevice) {
        let f = shared(Func(c));
        let mut r = PciRoot::new();
        r.register(3, 0, f.clone()).unwrap();
        (r, f)
    }

    fn read(r: &mut PciRoot, port: u16, len: usize) -> u32 {
        let mut b = vec![0u8; len];
        r.io_read(port, &mut b);
        read_le(&b) as u32
    }

    #[test]
    fn root_round_trip() {
        let (mut r, f) = root_with(sample());
        // Program the function through the root, then leave an address selected.
        for (offset, value) in [(0x14u32, 0xC001u32), (0x10, 0xE000_0000), (0x04, 0x0003)] {
            r.io_write(0xCF8, &(0x8000_1800 | offset).to_le_bytes());
            r.io_write(0xCFC, &value.to_le_bytes());
        }
        r.io_write(0xCF8, &0x8000_1810u32.to_le_bytes());
        let saved = r.save();
        assert_eq!(saved.device, "pci-root");
        let function_state = lock(&f)
            .pci()
            .and_then(|p| p.config_space().map(ConfigSpace::saved))
            .unwrap();

        // A fresh bus whose function has been restored first.
        let mut c = sample();
        c.restore_saved(&function_state, "func").unwrap();
        let (mut fresh, _) = root_with(c);
        assert!(
            !fresh.windows().io_read(0xC004, &mut [0u8; 1]),
            "no windows yet"
        );
        fresh.restore(&saved).unwrap();
        assert_eq!(fresh.save(), saved);
        assert_eq!(read(&mut fresh, 0xCF8, 4), read(&mut r, 0xCF8, 4));
        for port in 0xCFCu16..0xD00 {
            assert_eq!(
                read(&mut fresh, port, 1),
                read(&mut r, port, 1),
                "{port:#x}"
            );
        }
        // The restore recomputed the windows from the function's BARs.
        let mut b = [0u8; 1];
        assert!(fresh.windows().io_read(0xC004, &mut b));
        assert!(fresh.windows().mmio_read(0xE000_0000, &mut b));

        check_refusals(&mut fresh, &saved);
        let bad = edited(&saved, |s: &mut save::PciRootStateV1| {
            s.address = 0x8000_0001
        });
        check_corrupt(&mut fresh, &bad);
        assert_eq!(read(&mut fresh, 0xCF8, 4), 0x8000_1810, "still works");
    }
}
