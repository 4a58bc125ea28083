//! Interrupt router for the user-space interrupt controllers (KVM split irqchip, WHP):
//! line n < 16 drives PIC input n and IOAPIC pin n (ISA IRQs map 1:1, no IRQ0→pin 2
//! override); lines 16..24 drive only IOAPIC pins.
//!
//! Lock order: the router locks the PIC, releases it, then locks the IOAPIC; it never holds
//! both. Neither controller calls into another device while locked (the PIC's output notifier
//! and the IOAPIC's [`crate::ioapic::MsiSink`] must be lock-free with respect to devices), so
//! any device may raise a line while holding its own lock, as long as that device is not the
//! PIC or the IOAPIC.
//!
//! Lines are not shared: a line's level is whatever its one source last set. PCI INTx sharing
//! (several functions on one PIRQ) needs an OR in front of the router.

use crate::bus::lock;
use crate::ioapic::{IoApic, IOAPIC_PINS};
use crate::pic::Pic;
use crate::LineSink;
use std::sync::{Arc, Mutex};

/// Routes interrupt lines to the PIC and the IOAPIC.
#[derive(Debug, Clone)]
pub struct IrqRouter {
    pic: Arc<Mutex<Pic>>,
    ioapic: Arc<Mutex<IoApic>>,
}

impl IrqRouter {
    /// A router driving `pic` and `ioapic`.
    pub fn new(pic: Arc<Mutex<Pic>>, ioapic: Arc<Mutex<IoApic>>) -> Self {
        Self { pic, ioapic }
    }
}

impl LineSink for IrqRouter {
    fn set_line(&self, line: u32, level: bool) {
        if line >= IOAPIC_PINS as u32 {
            tracing::warn!(line, "irq router: no such line");
            return;
        }
        if line < 16 {
            lock(&self.pic).set_irq(line as u8, level);
        }
        lock(&self.ioapic).set_irq(line as u8, level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioapic::{MsiSink, IOAPIC_BASE};
    use crate::{IrqLine, Mmio, PortIo};
    use hv::MsiMessage;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<MsiMessage>>);
    impl MsiSink for Recorder {
        fn deliver(&self, msi: MsiMessage) {
            self.0.lock().unwrap().push(msi);
        }
    }

    fn program_pin(io: &Arc<Mutex<IoApic>>, pin: u8, vector: u8) {
        let mut io = io.lock().unwrap();
        io.mmio_write(IOAPIC_BASE, &[0x10 + pin * 2, 0, 0, 0]);
        io.mmio_write(IOAPIC_BASE + 0x10, &u32::from(vector).to_le_bytes());
    }

    #[test]
    fn isa_lines_reach_both_controllers_and_high_lines_only_ioapic() {
        let rec = Arc::new(Recorder::default());
        let pic = Arc::new(Mutex::new(Pic::without_notifier()));
        let ioapic = Arc::new(Mutex::new(IoApic::new(IOAPIC_BASE, rec.clone())));
        let router: Arc<dyn LineSink> = Arc::new(IrqRouter::new(pic.clone(), ioapic.clone()));
        {
            let mut p = pic.lock().unwrap();
            for (port, v) in [(0x20, 0x11), (0x21, 0x08), (0x21, 0x04), (0x21, 0x01)] {
                p.io_write(port, &[v]);
            }
            for (port, v) in [(0xA0, 0x11), (0xA1, 0x70), (0xA1, 0x02), (0xA1, 0x01)] {
                p.io_write(port, &[v]);
            }
            p.io_write(0x21, &[0]);
            p.io_write(0xA1, &[0]);
        }
        program_pin(&ioapic, 0, 0x30);
        program_pin(&ioapic, 2, 0x32);
        program_pin(&ioapic, 19, 0x43);
        let irq0 = IrqLine::new(router.clone(), 0);
        irq0.set_level(true);
        assert!(pic.lock().unwrap().interrupt_pending());
        assert_eq!(pic.lock().unwrap().acknowledge(), Some(0x08));
        // 1:1: IRQ0 is pin 0, not pin 2.
        assert_eq!(
            rec.0
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.vector())
                .collect::<Vec<_>>(),
            [0x30]
        );
        irq0.set_level(false);
        let pci = IrqLine::new(router.clone(), 19);
        pci.set_level(true);
        assert_eq!(pic.lock().unwrap().irr(), 0);
        assert_eq!(rec.0.lock().unwrap().last().map(|m| m.vector()), Some(0x43));
        IrqLine::new(router, 40).set_level(true); // ignored
        assert_eq!(rec.0.lock().unwrap().len(), 2);
    }
}
