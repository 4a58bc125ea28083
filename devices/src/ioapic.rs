//! 82093AA-style I/O APIC with 24 pins, version 0x20 (as QEMU reports it), including the
//! directed EOI register at +0x40 of that version.
//!
//! Interrupts leave as x86 MSI messages through an [`MsiSink`]. The sink is called with the
//! IOAPIC locked and must not lock any device (it should only talk to the hypervisor).
//! Pin polarity is stored but not applied: `set_irq(pin, true)` always means "asserted".

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{read_le, write_le, Device, Mmio};
use hv::MsiMessage;
use std::sync::Arc;

/// Default guest-physical base address.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// Size of the MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// Number of redirection entries (pins).
pub const IOAPIC_PINS: usize = 24;
/// Version register value: 24 entries (max index 23), version 0x20.
pub const IOAPIC_VERSION: u32 = ((IOAPIC_PINS as u32 - 1) << 16) | 0x20;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const EOI: u64 = 0x40;

const VECTOR: u64 = 0xFF;
const DELIVERY_MODE_SHIFT: u32 = 8;
const DEST_MODE: u64 = 1 << 11;
const DELIVERY_STATUS: u64 = 1 << 12;
const REMOTE_IRR: u64 = 1 << 14;
const LEVEL: u64 = 1 << 15;
const MASKED: u64 = 1 << 16;
/// Bits the guest cannot write.
const READ_ONLY: u64 = DELIVERY_STATUS | REMOTE_IRR;

/// Where the IOAPIC's interrupts go (the hypervisor's MSI injection).
pub trait MsiSink: Send + Sync {
    /// Delivers one interrupt message.
    fn deliver(&self, msi: MsiMessage);
    /// Pin `pin`'s redirection entry changed; `msi` is the message it now produces (`None`
    /// while masked). Lets a hypervisor learn which vectors are level-triggered.
    fn route_changed(&self, _pin: u8, _msi: Option<MsiMessage>) {}
}

/// The I/O APIC.
pub struct IoApic {
    base: u64,
    sink: Arc<dyn MsiSink>,
    id: u8,
    select: u8,
    entries: [u64; IOAPIC_PINS],
    /// Asserted pins.
    levels: u32,
}

impl std::fmt::Debug for IoApic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoApic")
            .field("base", &self.base)
            .field("id", &self.id)
            .field("entries", &self.entries)
            .field("levels", &self.levels)
            .finish()
    }
}

impl IoApic {
    /// An IOAPIC at `base` (usually [`IOAPIC_BASE`]) with ID 0, every pin masked.
    pub fn new(base: u64, sink: Arc<dyn MsiSink>) -> Self {
        Self {
            base,
            sink,
            id: 0,
            select: 0,
            entries: [MASKED; IOAPIC_PINS],
            levels: 0,
        }
    }

    /// The MMIO base address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The 64-bit redirection entry of `pin` (all-ones for a nonexistent pin).
    pub fn entry(&self, pin: usize) -> u64 {
        self.entries.get(pin).copied().unwrap_or(u64::MAX)
    }

    /// The MSI message an entry produces.
    pub fn entry_msi(entry: u64) -> MsiMessage {
        let dest = (entry >> 56) & 0xFF;
        let dest_mode = u64::from(entry & DEST_MODE != 0);
        let delivery_mode = ((entry >> DELIVERY_MODE_SHIFT) & 7) as u32;
        let level = u32::from(entry & LEVEL != 0);
        MsiMessage {
            address: 0xFEE0_0000 | dest << 12 | dest_mode << 2,
            data: (entry & VECTOR) as u32 | delivery_mode << 8 | 1 << 14 | level << 15,
        }
    }

    /// Drives input `pin` (0..24) to `level` (true = asserted).
    pub fn set_irq(&mut self, pin: u8, level: bool) {
        let index = usize::from(pin);
        let Some(&entry) = self.entries.get(index) else {
            tracing::warn!(pin, "ioapic: no such pin");
            return;
        };
        let bit = 1u32 << pin;
        let was = self.levels & bit != 0;
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
        if !level || entry & MASKED != 0 {
            return;
        }
        if entry & LEVEL != 0 {
            self.service_level(index);
        } else if !was {
            self.sink.deliver(Self::entry_msi(entry));
        }
    }

    /// Delivers a level-triggered pin if it is asserted, unmasked and not awaiting EOI.
    fn service_level(&mut self, index: usize) {
        let entry = self.entries[index];
        if self.levels & (1 << index) != 0 && entry & (MASKED | REMOTE_IRR) == 0 {
            self.entries[index] |= REMOTE_IRR;
            self.sink.deliver(Self::entry_msi(entry));
        }
    }

    /// A local APIC's EOI for `vector`: clears remote IRR on matching level-triggered pins and
    /// delivers again those still asserted.
    pub fn end_of_interrupt(&mut self, vector: u8) {
        for index in 0..IOAPIC_PINS {
            let entry = self.entries[index];
            if entry & VECTOR == u64::from(vector) && entry & LEVEL != 0 && entry & REMOTE_IRR != 0
            {
                self.entries[index] &= !REMOTE_IRR;
                self.service_level(index);
            }
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            0x00 => u32::from(self.id) << 24,
            0x01 => IOAPIC_VERSION,
            0x02 => u32::from(self.id) << 24,
            sel @ 0x10..=0x3F => {
                let entry = self.entries[usize::from((sel - 0x10) / 2)];
                if sel & 1 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            sel => {
                tracing::warn!(select = sel, "ioapic: read of undefined register");
                u32::MAX
            }
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.select {
            0x00 => self.id = ((value >> 24) & 0x0F) as u8,
            0x01 | 0x02 => tracing::debug!(select = self.select, "ioapic: read-only register"),
            sel @ 0x10..=0x3F => {
                let index = usize::from((sel - 0x10) / 2);
                let old = self.entries[index];
                let mut new = if sel & 1 == 0 {
                    (old & !0xFFFF_FFFF) | u64::from(value)
                } else {
                    (old & 0xFFFF_FFFF) | u64::from(value) << 32
                };
                new = (new & !READ_ONLY) | (old & READ_ONLY);
                if new & LEVEL == 0 {
                    new &= !REMOTE_IRR;
                }
                self.entries[index] = new;
                if new != old {
                    let msi = (new & MASKED == 0).then(|| Self::entry_msi(new));
                    self.sink.route_changed(index as u8, msi);
                }
                // Unmasking an asserted level pin delivers it.
                if new & LEVEL != 0 {
                    self.service_level(index);
                }
            }
            sel => tracing::warn!(select = sel, value, "ioapic: write to undefined register"),
        }
    }
}

impl Device for IoApic {
    fn name(&self) -> &str {
        "ioapic"
    }
    fn mmio(&mut self) -> Option<&mut dyn Mmio> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.id = 0;
        self.select = 0;
        for (pin, entry) in self.entries.iter_mut().enumerate() {
            if *entry != MASKED {
                *entry = MASKED;
                self.sink.route_changed(pin as u8, None);
            }
        }
    }
}

/// Saved state of the IOAPIC (separate from the runtime type).
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`IoApicStateV1`].
    pub const VERSION: u32 = 1;

    /// The IOAPIC's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct IoApicStateV1 {
        /// APIC ID (0..16).
        pub id: u8,
        /// IOREGSEL.
        pub select: u8,
        /// The 24 redirection entries, remote IRR included.
        pub entries: Vec<u64>,
        /// Asserted input pins, one bit per pin.
        pub levels: u32,
    }
}

impl SaveRestore for IoApic {
    fn save(&mut self) -> SavedState {
        let state = save::IoApicStateV1 {
            id: self.id,
            select: self.select,
            entries: self.entries.to_vec(),
            levels: self.levels,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the registers and pin levels, tells the sink every pin's route
    /// ([`MsiSink::route_changed`]), then delivers any asserted, unmasked level-triggered pin
    /// not awaiting EOI (none in a state saved from a running IOAPIC).
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let dev = "ioapic";
        let s: save::IoApicStateV1 = crate::saved_state::decode(state, dev, save::VERSION)?;
        ensure(s.id < 16, dev, format!("APIC ID {}", s.id))?;
        let entries: [u64; IOAPIC_PINS] = match s.entries.as_slice().try_into() {
            Ok(entries) => entries,
            Err(_) => {
                return Err(RestoreError::Corrupt {
                    device: dev.to_string(),
                    reason: format!("{} redirection entries (expected 24)", s.entries.len()),
                })
            }
        };
        for (pin, &entry) in entries.iter().enumerate() {
            ensure(
                entry & DELIVERY_STATUS == 0 && (entry & REMOTE_IRR == 0 || entry & LEVEL != 0),
                dev,
                format!("pin {pin}: entry {entry:#018x} has impossible status bits"),
            )?;
        }
        ensure(
            s.levels >> IOAPIC_PINS == 0,
            dev,
            format!("pin levels {:#x} name pins beyond 23", s.levels),
        )?;
        self.id = s.id;
        self.select = s.select;
        self.entries = entries;
        self.levels = s.levels;
        for (pin, &entry) in entries.iter().enumerate() {
            let msi = (entry & MASKED == 0).then(|| Self::entry_msi(entry));
            self.sink.route_changed(pin as u8, msi);
        }
        for (pin, &entry) in entries.iter().enumerate() {
            if entry & LEVEL != 0 {
                self.service_level(pin);
            }
        }
        Ok(())
    }
}

impl Mmio for IoApic {
    fn mmio_read(&mut self, address: u64, data: &mut [u8]) {
        let offset = address.wrapping_sub(self.base);
        let register = offset & !3;
        let shift = (offset & 3) * 8;
        let value = match register {
            IOREGSEL => u64::from(self.select),
            IOWIN => u64::from(self.read_register()),
            _ => {
                tracing::warn!(offset, len = data.len(), "ioapic: read of undefined offset");
                u64::MAX
            }
        };
        if (offset & 3) as usize + data.len() > 4 {
            tracing::warn!(
                offset,
                len = data.len(),
                "ioapic: access crosses a register"
            );
            data.fill(0xFF);
            return;
        }
        write_le(data, value >> shift);
    }

    fn mmio_write(&mut self, address: u64, data: &[u8]) {
        let offset = address.wrapping_sub(self.base);
        let value = read_le(data) as u32;
        match (offset, data.len()) {
            (IOREGSEL, _) => self.select = value as u8,
            (IOWIN, 4) => self.write_register(value),
            (EOI, 4) => self.end_of_interrupt(value as u8),
            _ => tracing::warn!(offset, len = data.len(), value, "ioapic: ignored write"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        delivered: Mutex<Vec<MsiMessage>>,
        routes: Mutex<Vec<(u8, Option<MsiMessage>)>>,
    }
    impl MsiSink for Recorder {
        fn deliver(&self, msi: MsiMessage) {
            self.delivered.lock().unwrap().push(msi);
        }
        fn route_changed(&self, pin: u8, msi: Option<MsiMessage>) {
            self.routes.lock().unwrap().push((pin, msi));
        }
    }
    impl Recorder {
        fn take(&self) -> Vec<MsiMessage> {
            std::mem::take(&mut *self.delivered.lock().unwrap())
        }
    }

    fn setup() -> (Arc<Recorder>, IoApic) {
        let rec = Arc::new(Recorder::default());
        (rec.clone(), IoApic::new(IOAPIC_BASE, rec))
    }

    fn write_reg(io: &mut IoApic, sel: u8, value: u32) {
        io.mmio_write(IOAPIC_BASE, &(sel as u32).to_le_bytes());
        io.mmio_write(IOAPIC_BASE + 0x10, &value.to_le_bytes());
    }

    fn read_reg(io: &mut IoApic, sel: u8) -> u32 {
        io.mmio_write(IOAPIC_BASE, &(sel as u32).to_le_bytes());
        let mut b = [0u8; 4];
        io.mmio_read(IOAPIC_BASE + 0x10, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn id_version_and_readback() {
        let (_, mut io) = setup();
        assert_eq!(read_reg(&mut io, 1), 0x0017_0020);
        write_reg(&mut io, 0, 0x0F00_0000);
        assert_eq!(read_reg(&mut io, 0), 0x0F00_0000);
        assert_eq!(read_reg(&mut io, 0x10), 0x0001_0000);
        assert_eq!(read_reg(&mut io, 0x11), 0);
        write_reg(&mut io, 0x12, 0x0000_5031); // remote IRR and delivery status are read-only
        assert_eq!(read_reg(&mut io, 0x12), 0x0000_0031);
        write_reg(&mut io, 0x13, 0xFF00_0000);
        assert_eq!(io.entry(1), 0xFF00_0000_0000_0031);
        assert_eq!(read_reg(&mut io, 0x40), 0xFFFF_FFFF);
        let mut b = [0u8; 4];
        io.mmio_read(IOAPIC_BASE + 0x20, &mut b);
        assert_eq!(b, [0xFF; 4]);
        io.mmio_read(IOAPIC_BASE, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x40);
    }

    #[test]
    fn edge_delivery_and_mask() {
        let (rec, mut io) = setup();
        io.set_irq(4, true); // masked: dropped
        io.set_irq(4, false);
        write_reg(&mut io, 0x19, 0x0100_0000); // destination APIC 1
        write_reg(&mut io, 0x18, 0x0000_0034); // vector 0x34, fixed, edge, unmasked
        assert_eq!(rec.take(), vec![]);
        let routes = rec.routes.lock().unwrap().clone();
        assert_eq!(routes.len(), 2);
        io.set_irq(4, true);
        io.set_irq(4, true); // no new edge
        let msi = MsiMessage {
            address: 0xFEE0_1000,
            data: 0x4034,
        };
        assert_eq!(rec.take(), vec![msi]);
        assert_eq!(routes[1], (4, Some(msi)));
        io.set_irq(4, false);
        io.set_irq(4, true);
        assert_eq!(rec.take().len(), 1);
        write_reg(&mut io, 0x18, 0x0001_0034);
        assert_eq!(rec.routes.lock().unwrap().last(), Some(&(4, None)));
        io.set_irq(4, false);
        io.set_irq(4, true);
        assert_eq!(rec.take(), vec![]);
    }

    #[test]
    fn level_remote_irr_and_eoi() {
        let (rec, mut io) = setup();
        // Pin 10: vector 0x51, lowest priority, logical destination, level.
        write_reg(&mut io, 0x25, 0x0300_0000);
        write_reg(&mut io, 0x24, 0x0000_8951);
        io.set_irq(10, true);
        let msi = MsiMessage {
            address: 0xFEE0_3004,
            data: 0xC151,
        };
        assert_eq!(rec.take(), vec![msi]);
        assert_eq!(read_reg(&mut io, 0x24), 0x0000_C951); // remote IRR set
        io.set_irq(10, true);
        assert_eq!(rec.take(), vec![]);
        // EOI via the EOI register while still asserted: delivered again.
        io.mmio_write(IOAPIC_BASE + 0x40, &0x51u32.to_le_bytes());
        assert_eq!(rec.take(), vec![msi]);
        // Deassert, then EOI from the local APIC: remote IRR clear, nothing delivered.
        io.set_irq(10, false);
        io.end_of_interrupt(0x52);
        assert_eq!(read_reg(&mut io, 0x24) & (1 << 14), 1 << 14);
        io.end_of_interrupt(0x51);
        assert_eq!(read_reg(&mut io, 0x24), 0x0000_8951);
        assert_eq!(rec.take(), vec![]);
        // Masked while asserted, unmasking delivers.
        write_reg(&mut io, 0x24, 0x0001_8951);
        io.set_irq(10, true);
        assert_eq!(rec.take(), vec![]);
        write_reg(&mut io, 0x24, 0x0000_8951);
        assert_eq!(rec.take(), vec![msi]);
        // Switching to edge clears remote IRR.
        write_reg(&mut io, 0x24, 0x0000_0951);
        assert_eq!(read_reg(&mut io, 0x24), 0x0000_0951);
    }

    #[test]
    fn bad_pins_and_sizes_are_harmless() {
        let (rec, mut io) = setup();
        io.set_irq(24, true);
        io.set_irq(255, true);
        let mut b = [0u8; 8];
        io.mmio_read(IOAPIC_BASE + 0x10, &mut b);
        assert_eq!(b, [0xFF; 8]);
        io.mmio_write(IOAPIC_BASE + 0x10, &[1, 2]);
        io.mmio_write(IOAPIC_BASE + 0x800, &[1, 2, 3, 4]);
        io.mmio_write(IOAPIC_BASE, &[0x50]);
        assert_eq!(read_reg(&mut io, 0x50), u32::MAX);
        assert!(rec.take().is_empty());
    }

    fn read_all(io: &mut IoApic) -> Vec<u32> {
        let mut b = [0u8; 4];
        io.mmio_read(IOAPIC_BASE, &mut b);
        let mut v = vec![u32::from_le_bytes(b)];
        v.extend((0..=0x3Fu8).map(|sel| read_reg(io, sel)));
        v
    }

    fn programmed() -> (Arc<Recorder>, IoApic) {
        let (rec, mut io) = setup();
        write_reg(&mut io, 0x00, 0x0500_0000); // ID 5
        write_reg(&mut io, 0x19, 0x0100_0000);
        write_reg(&mut io, 0x18, 0x0000_0034); // pin 4: edge, vector 0x34
        write_reg(&mut io, 0x25, 0x0300_0000);
        write_reg(&mut io, 0x24, 0x0000_8951); // pin 10: level, vector 0x51
        write_reg(&mut io, 0x36, 0x0001_8062); // pin 19: level, masked
        write_reg(&mut io, 0x38, 0x0000_0070); // pin 20: edge, vector 0x70
        io.set_irq(4, true); // edge pin held high
        io.set_irq(10, true); // level pin in service (remote IRR)
        io.set_irq(19, true); // masked level pin asserted
        io.mmio_write(IOAPIC_BASE, &[0x24]); // IOREGSEL left at pin 10
        rec.take();
        rec.routes.lock().unwrap().clear();
        (rec, io)
    }

    #[test]
    fn save_restore_round_trip() {
        let (rec_a, mut a) = programmed();
        let saved = a.save();
        assert_eq!(saved.device, "ioapic");
        let (rec_b, mut b) = setup();
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        // The sink learns every route; nothing is delivered again.
        let routes = rec_b.routes.lock().unwrap().clone();
        assert_eq!(routes.len(), IOAPIC_PINS);
        assert_eq!(routes[4], (4, Some(IoApic::entry_msi(a.entry(4)))));
        assert_eq!(routes[19], (19, None));
        assert!(rec_b.take().is_empty());
        let mut sel = [0u8; 4];
        b.mmio_read(IOAPIC_BASE, &mut sel);
        assert_eq!(sel[0], 0x24);
        assert_eq!(read_all(&mut b), read_all(&mut a));
        assert_eq!(
            read_reg(&mut b, 0x24) & (1 << 14),
            1 << 14,
            "remote IRR kept"
        );
        // Behaviour continues identically.
        for io in [&mut a, &mut b] {
            io.set_irq(4, true); // still high: no new edge
            io.end_of_interrupt(0x51); // pin 10 still asserted: delivered again
            io.set_irq(20, true);
            write_reg(io, 0x36, 0x0000_8062); // unmasking asserted pin 19 delivers it
            io.set_irq(4, false);
            io.set_irq(4, true);
        }
        let delivered = rec_a.take();
        assert_eq!(delivered.len(), 4);
        assert_eq!(rec_b.take(), delivered);
        assert_eq!(read_all(&mut b), read_all(&mut a));
        assert_eq!(b.save(), a.save());
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let (_, mut a) = programmed();
        let saved = a.save();
        let (_, mut b) = setup();
        write_reg(&mut b, 0x10, 0x0000_0041);
        check_refusals(&mut b, &saved);
        let bad = edited(&saved, |s: &mut save::IoApicStateV1| {
            s.entries.push(0);
        });
        check_corrupt(&mut b, &bad);
        // Remote IRR on an edge-triggered pin.
        let bad = edited(&saved, |s: &mut save::IoApicStateV1| {
            s.entries[4] |= REMOTE_IRR
        });
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::IoApicStateV1| s.levels |= 1 << 24);
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::IoApicStateV1| s.id = 16);
        check_corrupt(&mut b, &bad);
        assert_eq!(read_reg(&mut b, 0x10), 0x41, "still works");
    }
}
