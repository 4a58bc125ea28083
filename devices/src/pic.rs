//! Intel 8259A programmable interrupt controller pair (master at 0x20, slave at 0xA0,
//! cascaded on master input 2) and the PIIX edge/level control registers (ELCR, 0x4D0/0x4D1).
//!
//! Lines 0..16 are the ISA IRQs. Edge-triggered inputs latch a request on a rising edge;
//! inputs marked level-triggered in the ELCR request while they are high. The INT output
//! (`interrupt_pending`) is reported to an [`PicOutput`] notifier on every change so the
//! machine can kick the boot processor; the notifier is called with the PIC locked and must
//! not lock any device.

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
        let slave_out = self.chips[1].pending(false).is_some();
        self.chips[0].set_input(2, slave_out);
        if !slave_out {
            // The cascade request follows the slave's INT: a slave request withdrawn before
            // INTA must not leave a stale request (a spurious IRQ15) on the master.
            self.chips[0].irr &= !(1 << 2);
        }
        let out = self.chips[0].pending(true).is_some();
        if out != self.output {
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
