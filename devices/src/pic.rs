//! Intel 8259A programmable interrupt controller pair (master at 0x20, slave at 0xA0,
//! cascaded on master input 2) and the PIIX edge/level control registers (ELCR, 0x4D0/0x4D1).
//!
//! Lines 0..16 are the ISA IRQs. Edge-triggered inputs latch a request on a rising edge;
//! inputs marked level-triggered in the ELCR request while they are high. The INT output
//! (`interrupt_pending`) is reported to an [`PicOutput`] notifier on every change so the
//! machine can kick the boot processor; the notifier is called with the PIC locked and must
//! not lock any device.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Device, PortIo};
use std::sync::Arc;

/// Called with the new level whenever the PIC's INT output changes.
pub type PicOutput = Arc<dyn Fn(bool) + Send + Sync>;

/// Port ranges the PIC answers: `(first port, count)`.
pub const PIC_PORT_RANGES: [(u16, u16); 3] = [(0x20, 2), (0xA0, 2), (0x4D0, 2)];

/// One 8259A.
#[derive(Debug, Clone, Default)]
struct Chip {
    /// Current input levels (edge detection).
    inputs: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    /// IR number that currently has the highest priority.
    lowest_priority_base: u8,
    vector_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// 0: ready; 1: expecting ICW2; 2: ICW3; 3: ICW4.
    init_state: u8,
    icw4_needed: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    elcr: u8,
    elcr_mask: u8,
}

impl Chip {
    fn new(elcr_mask: u8) -> Self {
        Self {
            elcr_mask,
            ..Self::default()
        }
    }

    /// State after ICW1 (the ELCR belongs to the chipset and is kept).
    fn init_reset(&mut self) {
        *self = Self {
            irr: self.irr & self.elcr,
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
            ..Self::default()
        };
    }

    fn set_input(&mut self, irq: u8, level: bool) {
        let bit = 1u8 << (irq & 7);
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.inputs & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.inputs |= bit;
        } else {
            self.inputs &= !bit;
        }
    }

    /// Priority (0 = highest) of the best request in `mask`, or 8 when `mask` is empty.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|p| mask & (1 << ((p + self.lowest_priority_base) & 7)) != 0)
            .unwrap_or(8)
    }

    /// The IR the chip would present on INTA, if any.
    fn pending(&self, master: bool) -> Option<u8> {
        let requested = self.priority(self.irr & !self.imr);
        if requested == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if master && self.special_fully_nested {
            in_service &= !(1 << 2);
        }
        (requested < self.priority(in_service))
            .then_some((requested + self.lowest_priority_base) & 7)
    }

    /// The INTA cycle for `irq` on this chip.
    fn acknowledge(&mut self, irq: u8) {
        let bit = 1u8 << (irq & 7);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority_base = (irq + 1) & 7;
            }
        } else {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn poll_read(&mut self, master: bool) -> u8 {
        self.poll = false;
        match self.pending(master) {
            Some(irq) => {
                self.acknowledge(irq);
                0x80 | irq
            }
            None => 0,
        }
    }

    fn write_command(&mut self, name: &str, value: u8) {
        if value & 0x10 != 0 {
            // ICW1.
            self.init_reset();
            self.init_state = 1;
            self.icw4_needed = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            if value & 0x08 != 0 {
                tracing::debug!(
                    pic = name,
                    "ICW1 LTIM ignored (the ELCR selects level mode)"
                );
            }
        } else if value & 0x08 != 0 {
            // OCW3.
            if value & 0x04 != 0 {
                self.poll = true;
            }
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let level = value & 7;
            match value >> 5 {
                0 => self.rotate_on_auto_eoi = false,
                4 => self.rotate_on_auto_eoi = true,
                1 | 5 => {
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let irq = (p + self.lowest_priority_base) & 7;
                        self.isr &= !(1 << irq);
                        if value >> 5 == 5 {
                            self.lowest_priority_base = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << level),
                7 => {
                    self.isr &= !(1 << level);
                    self.lowest_priority_base = (level + 1) & 7;
                }
                6 => self.lowest_priority_base = (level + 1) & 7,
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_state {
            1 => {
                self.vector_base = value & 0xF8;
                self.init_state = match (self.single, self.icw4_needed) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_state = if self.icw4_needed { 3 } else { 0 },
            3 => {
                self.special_fully_nested = value & 0x10 != 0;
                self.auto_eoi = value & 0x02 != 0;
                if value & 0x01 == 0 {
                    tracing::debug!("8259 ICW4 without 8086 mode bit; treated as 8086 mode");
                }
                self.init_state = 0;
            }
            _ => self.imr = value,
        }
    }
}

/// The master/slave 8259A pair with the ELCR.
pub struct Pic {
    chips: [Chip; 2],
    output: bool,
    notify: PicOutput,
}

impl std::fmt::Debug for Pic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pic")
            .field("chips", &self.chips)
            .field("output", &self.output)
            .finish()
    }
}

impl Pic {
    /// A PIC pair in its power-on state; `notify` hears every change of the INT output.
    pub fn new(notify: PicOutput) -> Self {
        Self {
            chips: [Chip::new(0xF8), Chip::new(0xDE)],
            output: false,
            notify,
        }
    }

    /// A PIC whose output changes go nowhere (tests, or a machine that polls).
    pub fn without_notifier() -> Self {
        Self::new(Arc::new(|_| {}))
    }

    /// Drives ISA IRQ `line` (0..16) to `level`. Line 2 is the internal cascade and ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            2 => tracing::debug!("pic: IRQ2 is the cascade input; ignored"),
            0..=7 => self.chips[0].set_input(line, level),
            8..=15 => self.chips[1].set_input(line - 8, level),
            _ => {
                tracing::warn!(line, "pic: no such IRQ line");
                return;
            }
        }
        self.update();
    }

    /// True while the INT output to the processor is asserted.
    pub fn interrupt_pending(&self) -> bool {
        self.output
    }

    /// The INTA cycle: returns the vector and moves the request from IRR to ISR. When the
    /// request went away (or nothing is pending) the chip answers the spurious IRQ7 (or IRQ15
    /// through the cascade) vector, as hardware does.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let vector = match self.chips[0].pending(true) {
            None => {
                tracing::debug!("pic: spurious IRQ7");
                self.chips[0].vector_base | 7
            }
            Some(2) => {
                self.chips[0].acknowledge(2);
                match self.chips[1].pending(false) {
                    Some(irq) => {
                        self.chips[1].acknowledge(irq);
                        self.chips[1].vector_base | irq
                    }
                    None => {
                        tracing::debug!("pic: spurious IRQ15");
                        self.chips[1].vector_base | 7
                    }
                }
            }
            Some(irq) => {
                self.chips[0].acknowledge(irq);
                self.chips[0].vector_base | irq
            }
        };
        self.update();
        Some(vector)
    }

    /// Interrupt request register of the master (low byte) and slave (high byte).
    pub fn irr(&self) -> u16 {
        u16::from(self.chips[0].irr) | u16::from(self.chips[1].irr) << 8
    }

    /// In-service register of the master (low byte) and slave (high byte).
    pub fn isr(&self) -> u16 {
        u16::from(self.chips[0].isr) | u16::from(self.chips[1].isr) << 8
    }

    /// Interrupt mask register of the master (low byte) and slave (high byte).
    pub fn imr(&self) -> u16 {
        u16::from(self.chips[0].imr) | u16::from(self.chips[1].imr) << 8
    }

    /// Edge/level control: bit n set means IRQ n is level-triggered.
    pub fn elcr(&self) -> u16 {
        u16::from(self.chips[0].elcr) | u16::from(self.chips[1].elcr) << 8
    }

    fn update(&mut self) {
        self.update_output(false);
    }

    /// Recomputes the cascade and the INT output; `force` reports the output to the notifier
    /// even when it did not change (after a restore).
    fn update_output(&mut self, force: bool) {
        let slave_out = self.chips[1].pending(false).is_some();
        self.chips[0].set_input(2, slave_out);
        if !slave_out {
            // The cascade request follows the slave's INT: a slave request withdrawn before
            // INTA must not leave a stale request (a spurious IRQ15) on the master.
            self.chips[0].irr &= !(1 << 2);
        }
        let out = self.chips[0].pending(true).is_some();
        if out != self.output || force {
            self.output = out;
            (self.notify)(out);
        }
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 => {
                let index = usize::from(port >= 0xA0);
                let chip = &mut self.chips[index];
                if chip.poll {
                    let v = chip.poll_read(index == 0);
                    self.update();
                    return v;
                }
                if port & 1 == 1 {
                    chip.imr
                } else if chip.read_isr {
                    chip.isr
                } else {
                    chip.irr
                }
            }
            0x4D0 => self.chips[0].elcr,
            0x4D1 => self.chips[1].elcr,
            _ => {
                tracing::warn!(port, "pic: read of unowned port");
                0xFF
            }
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x20 | 0x21 | 0xA0 | 0xA1 => {
                let index = usize::from(port >= 0xA0);
                let chip = &mut self.chips[index];
                if port & 1 == 0 {
                    chip.write_command(if index == 0 { "master" } else { "slave" }, value);
                } else {
                    chip.write_data(value);
                }
            }
            0x4D0 | 0x4D1 => {
                let chip = &mut self.chips[usize::from(port & 1)];
                chip.elcr = value & chip.elcr_mask;
            }
            _ => {
                tracing::warn!(port, value, "pic: write to unowned port");
                return;
            }
        }
        self.update();
    }
}

impl Device for Pic {
    fn name(&self) -> &str {
        "pic"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.chips = [Chip::new(0xF8), Chip::new(0xDE)];
        self.update();
    }
}

impl PortIo for Pic {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        crate::read_bytewise(port, data, |p| self.read_port(p));
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        crate::write_bytewise(port, data, |p, v| self.write_port(p, v));
    }
}

/// Saved state of the PIC pair (separate from the runtime types).
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`PicStateV1`].
    pub const VERSION: u32 = 1;

    /// One 8259A's saved state.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ChipStateV1 {
        /// Input levels as last driven (edge detection).
        pub inputs: u8,
        /// Interrupt request register.
        pub irr: u8,
        /// Interrupt mask register.
        pub imr: u8,
        /// In-service register.
        pub isr: u8,
        /// IR with the highest priority (0..8).
        pub lowest_priority_base: u8,
        /// ICW2 vector base (low three bits clear).
        pub vector_base: u8,
        /// OCW3: reads of the command port return ISR.
        pub read_isr: bool,
        /// OCW3: the next command-port read is a poll.
        pub poll: bool,
        /// OCW3: special mask mode.
        pub special_mask: bool,
        /// Initialization sequence: 0 ready, 1 expecting ICW2, 2 ICW3, 3 ICW4.
        pub init_state: u8,
        /// ICW1: ICW4 follows.
        pub icw4_needed: bool,
        /// ICW1: single (no cascade).
        pub single: bool,
        /// ICW4: automatic EOI.
        pub auto_eoi: bool,
        /// OCW2: rotate on automatic EOI.
        pub rotate_on_auto_eoi: bool,
        /// ICW4: special fully nested mode.
        pub special_fully_nested: bool,
        /// Edge/level control register.
        pub elcr: u8,
    }

    /// The PIC pair's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PicStateV1 {
        /// Master (IRQ 0-7) and slave (IRQ 8-15).
        pub chips: [ChipStateV1; 2],
    }
}

impl Chip {
    fn saved(&self) -> save::ChipStateV1 {
        save::ChipStateV1 {
            inputs: self.inputs,
            irr: self.irr,
            imr: self.imr,
            isr: self.isr,
            lowest_priority_base: self.lowest_priority_base,
            vector_base: self.vector_base,
            read_isr: self.read_isr,
            poll: self.poll,
            special_mask: self.special_mask,
            init_state: self.init_state,
            icw4_needed: self.icw4_needed,
            single: self.single,
            auto_eoi: self.auto_eoi,
            rotate_on_auto_eoi: self.rotate_on_auto_eoi,
            special_fully_nested: self.special_fully_nested,
            elcr: self.elcr,
        }
    }

    /// This chip (for its ELCR mask) with the state `s`, checked.
    fn restored(&self, s: &save::ChipStateV1, which: &str) -> Result<Chip, RestoreError> {
        let dev = "pic";
        ensure(
            s.lowest_priority_base < 8,
            dev,
            format!("{which}: priority base {}", s.lowest_priority_base),
        )?;
        ensure(
            s.vector_base & 7 == 0,
            dev,
            format!("{which}: vector base {:#04x}", s.vector_base),
        )?;
        ensure(
            s.init_state <= 3,
            dev,
            format!("{which}: initialization step {}", s.init_state),
        )?;
        ensure(
            s.elcr & !self.elcr_mask == 0,
            dev,
            format!("{which}: ELCR {:#04x} marks edge-only IRQs level", s.elcr),
        )?;
        Ok(Chip {
            inputs: s.inputs,
            irr: s.irr,
            imr: s.imr,
            isr: s.isr,
            lowest_priority_base: s.lowest_priority_base,
            vector_base: s.vector_base,
            read_isr: s.read_isr,
            poll: s.poll,
            special_mask: s.special_mask,
            init_state: s.init_state,
            icw4_needed: s.icw4_needed,
            single: s.single,
            auto_eoi: s.auto_eoi,
            rotate_on_auto_eoi: s.rotate_on_auto_eoi,
            special_fully_nested: s.special_fully_nested,
            elcr: s.elcr,
            elcr_mask: self.elcr_mask,
        })
    }
}

impl SaveRestore for Pic {
    fn save(&mut self) -> SavedState {
        let state = save::PicStateV1 {
            chips: [self.chips[0].saved(), self.chips[1].saved()],
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores both chips and reports the resulting INT output to the notifier.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::PicStateV1 = crate::saved_state::decode(state, "pic", save::VERSION)?;
        let [master, slave] = &s.chips;
        let chips = [
            self.chips[0].restored(master, "master")?,
            self.chips[1].restored(slave, "slave")?,
        ];
        self.chips = chips;
        self.update_output(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn out(pic: &mut Pic, port: u16, v: u8) {
        pic.io_write(port, &[v]);
    }
    fn inb(pic: &mut Pic, port: u16) -> u8 {
        let mut b = [0];
        pic.io_read(port, &mut b);
        b[0]
    }

    /// Programs the pair like a PC BIOS: vectors 0x08 / 0x70, cascade on IRQ2, 8086 mode.
    fn bios_init(pic: &mut Pic, icw4: u8) {
        out(pic, 0x20, 0x11);
        out(pic, 0x21, 0x08);
        out(pic, 0x21, 0x04);
        out(pic, 0x21, icw4);
        out(pic, 0xA0, 0x11);
        out(pic, 0xA1, 0x70);
        out(pic, 0xA1, 0x02);
        out(pic, 0xA1, icw4);
        out(pic, 0x21, 0x00);
        out(pic, 0xA1, 0x00);
    }

    #[test]
    fn priority_and_eoi() {
        let rises = Arc::new(AtomicUsize::new(0));
        let r = rises.clone();
        let mut pic = Pic::new(Arc::new(move |level| {
            if level {
                r.fetch_add(1, Ordering::SeqCst);
            }
        }));
        bios_init(&mut pic, 0x01);
        assert!(!pic.interrupt_pending());
        pic.set_irq(4, true);
        pic.set_irq(1, true);
        assert!(pic.interrupt_pending());
        assert_eq!(rises.load(Ordering::SeqCst), 1);
        assert_eq!(inb(&mut pic, 0x20), 0x12); // IRR
        assert_eq!(pic.acknowledge(), Some(0x09));
        // IRQ4 is lower priority than IRQ1 in service: no output.
        assert!(!pic.interrupt_pending());
        out(&mut pic, 0x20, 0x0B); // read ISR
        assert_eq!(inb(&mut pic, 0x20), 0x02);
        // IRQ0 preempts.
        pic.set_irq(0, true);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x08));
        assert_eq!(inb(&mut pic, 0x20), 0x03);
        out(&mut pic, 0x20, 0x20); // non-specific EOI clears IRQ0
        assert_eq!(inb(&mut pic, 0x20), 0x02);
        out(&mut pic, 0x20, 0x61); // specific EOI IRQ1
        assert_eq!(inb(&mut pic, 0x20), 0x00);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x0C));
        out(&mut pic, 0x20, 0x20);
        assert!(!pic.interrupt_pending());
        out(&mut pic, 0x20, 0x0A); // read IRR again
        assert_eq!(inb(&mut pic, 0x20), 0x00);
    }

    #[test]
    fn mask_and_slave_cascade() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x01);
        out(&mut pic, 0xA1, 0x01); // mask IRQ8
        pic.set_irq(8, true);
        assert!(!pic.interrupt_pending());
        assert_eq!(inb(&mut pic, 0xA1), 0x01);
        pic.set_irq(14, true);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x76));
        assert_eq!(pic.isr(), 0x4004);
        out(&mut pic, 0xA0, 0x20);
        out(&mut pic, 0x20, 0x20);
        assert_eq!(pic.isr(), 0);
        out(&mut pic, 0xA1, 0x00);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x70));
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x01);
        out(&mut pic, 0x4D1, 0xFF);
        assert_eq!(inb(&mut pic, 0x4D1), 0xDE); // IRQ8 and IRQ13 cannot be level
        out(&mut pic, 0x4D0, 0xFF);
        assert_eq!(inb(&mut pic, 0x4D0), 0xF8);
        pic.set_irq(10, true);
        assert_eq!(pic.acknowledge(), Some(0x72));
        out(&mut pic, 0xA0, 0x20);
        out(&mut pic, 0x20, 0x20);
        // Still asserted: requests again without a new edge.
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x72));
        out(&mut pic, 0xA0, 0x20);
        out(&mut pic, 0x20, 0x20);
        pic.set_irq(10, false);
        assert!(!pic.interrupt_pending());
        // An edge line (IRQ1 cannot be level) does not re-request without a new edge.
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), Some(0x09));
        out(&mut pic, 0x20, 0x20);
        assert!(!pic.interrupt_pending());
        pic.set_irq(1, true);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn poll_mode() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x01);
        out(&mut pic, 0x20, 0x0C); // OCW3 poll
        assert_eq!(inb(&mut pic, 0x20), 0x00);
        pic.set_irq(5, true);
        out(&mut pic, 0x20, 0x0C);
        assert_eq!(inb(&mut pic, 0x20), 0x85);
        assert_eq!(pic.isr(), 0x20);
        assert_eq!(pic.irr(), 0x00);
        // Poll is one-shot: next read is IRR again.
        assert_eq!(inb(&mut pic, 0x20), 0x00);
    }

    #[test]
    fn spurious_irq7() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x01);
        // A slave request withdrawn before INTA leaves no cascade request behind.
        pic.set_irq(12, true);
        assert!(pic.interrupt_pending());
        out(&mut pic, 0xA1, 0x10);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x0F));
        assert_eq!(pic.isr(), 0);
        // A level request dropped before INTA answers IRQ7 without setting ISR.
        out(&mut pic, 0x4D0, 0x20);
        pic.set_irq(5, true);
        assert!(pic.interrupt_pending());
        pic.set_irq(5, false);
        assert_eq!(pic.acknowledge(), Some(0x0F));
        assert_eq!(pic.isr(), 0);
        // The masked IRQ12 request stays latched on the slave.
        assert_eq!(pic.irr(), 0x1000);
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x03); // auto-EOI
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), Some(0x0B));
        assert_eq!(pic.isr(), 0);
        // Specific rotation: make IRQ4 the highest priority (lowest = 3).
        out(&mut pic, 0x20, 0xC3);
        pic.set_irq(1, true);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), Some(0x0D));
        assert_eq!(pic.acknowledge(), Some(0x09));
        // Rotate-on-auto-EOI.
        out(&mut pic, 0x20, 0x80);
        pic.set_irq(6, true);
        pic.set_irq(7, true);
        assert_eq!(pic.acknowledge(), Some(0x0E)); // priorities start at 4 now
                                                   // IRQ6 became lowest priority; IRQ7 is now the highest.
        pic.set_irq(0, true);
        assert_eq!(pic.acknowledge(), Some(0x0F));
        assert_eq!(pic.acknowledge(), Some(0x08));
    }

    #[test]
    fn special_mask_mode_allows_lower_priority() {
        let mut pic = Pic::without_notifier();
        bios_init(&mut pic, 0x01);
        pic.set_irq(1, true);
        assert_eq!(pic.acknowledge(), Some(0x09));
        pic.set_irq(4, true);
        assert!(!pic.interrupt_pending());
        out(&mut pic, 0x21, 0x02); // mask the in-service IRQ1
        out(&mut pic, 0x20, 0x68); // set special mask mode
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x0C));
    }
}

#[cfg(test)]
mod save_tests {
    use super::*;
    use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
    use std::sync::atomic::{AtomicBool, Ordering};

    fn out(pic: &mut Pic, port: u16, v: u8) {
        pic.io_write(port, &[v]);
    }
    fn inb(pic: &mut Pic, port: u16) -> u8 {
        let mut b = [0];
        pic.io_read(port, &mut b);
        b[0]
    }

    fn with_output() -> (Pic, Arc<AtomicBool>) {
        let level = Arc::new(AtomicBool::new(false));
        let l = level.clone();
        (
            Pic::new(Arc::new(move |v| l.store(v, Ordering::SeqCst))),
            level,
        )
    }

    /// Every port read, in a fixed order, IRR and ISR both.
    fn reads(pic: &mut Pic) -> Vec<u8> {
        let mut v = Vec::new();
        for cmd in [0x20u16, 0xA0] {
            out(pic, cmd, 0x0A);
            v.push(inb(pic, cmd));
            out(pic, cmd, 0x0B);
            v.push(inb(pic, cmd));
        }
        for port in [0x21, 0xA1, 0x4D0, 0x4D1] {
            v.push(inb(pic, port));
        }
        v.push(u8::from(pic.interrupt_pending()));
        v
    }

    fn programmed() -> (Pic, Arc<AtomicBool>) {
        let (mut pic, level) = with_output();
        for (port, v) in [(0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01)] {
            out(&mut pic, port, v);
        }
        for (port, v) in [(0xA0, 0x11), (0xA1, 0x70), (0xA1, 0x02), (0xA1, 0x01)] {
            out(&mut pic, port, v);
        }
        out(&mut pic, 0x21, 0x20); // mask IRQ5
        out(&mut pic, 0xA1, 0x40); // mask IRQ14
        out(&mut pic, 0x4D1, 0x0C); // IRQ10, IRQ11 level
        out(&mut pic, 0xA0, 0xC1); // slave rotation: IRQ10 highest there
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), Some(0x0C)); // IRQ4 in service
        pic.set_irq(6, true); // pending behind IRQ4
        pic.set_irq(5, true); // masked request
        pic.set_irq(10, true); // level, slave, pending through the cascade
        pic.set_irq(1, true); // pending, above IRQ4
        out(&mut pic, 0x20, 0x0B); // reads return ISR
        (pic, level)
    }

    #[test]
    fn round_trip() {
        let (mut pic, level) = programmed();
        let saved = pic.save();
        assert_eq!(saved.device, "pic");
        let (mut fresh, fresh_level) = with_output();
        fresh.restore(&saved).unwrap();
        assert_eq!(fresh.save(), saved);
        assert!(pic.interrupt_pending());
        assert_eq!(
            fresh_level.load(Ordering::SeqCst),
            level.load(Ordering::SeqCst),
            "the restore reported the INT output"
        );
        assert_eq!(reads(&mut fresh), reads(&mut pic));
        // Behaviour continues identically: acknowledges, EOIs, new edges, level lines.
        for p in [&mut pic, &mut fresh] {
            p.set_irq(7, true);
            p.set_irq(12, true);
        }
        for step in 0..6 {
            assert_eq!(fresh.acknowledge(), pic.acknowledge(), "step {step}");
            assert_eq!(reads(&mut fresh), reads(&mut pic), "step {step}");
            for p in [&mut pic, &mut fresh] {
                out(p, 0xA0, 0x20);
                out(p, 0x20, 0x20);
            }
            assert_eq!(
                fresh_level.load(Ordering::SeqCst),
                level.load(Ordering::SeqCst)
            );
        }
        assert_eq!(fresh.save(), pic.save());
    }

    #[test]
    fn refusals() {
        let (mut pic, _) = programmed();
        let saved = pic.save();
        let (mut fresh, _) = with_output();
        out(&mut fresh, 0x21, 0x5A);
        check_refusals(&mut fresh, &saved);
        let bad = edited(&saved, |s: &mut save::PicStateV1| s.chips[1].init_state = 4);
        check_corrupt(&mut fresh, &bad);
        // IRQ0 cannot be level-triggered.
        let bad = edited(&saved, |s: &mut save::PicStateV1| s.chips[0].elcr = 0x01);
        check_corrupt(&mut fresh, &bad);
        let bad = edited(&saved, |s: &mut save::PicStateV1| {
            s.chips[0].vector_base = 0x09
        });
        check_corrupt(&mut fresh, &bad);
        assert_eq!(inb(&mut fresh, 0x21), 0x5A, "still works");
    }
}
