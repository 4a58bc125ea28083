//! National Semiconductor 16550A UART (COM1 is at 0x3F8, IRQ4).
//!
//! Transmission is instant: a byte written to THR goes straight to the output sink and THR is
//! empty again (THRE and TEMT stay set). Received bytes are queued host-side (up to
//! [`RX_QUEUE_LIMIT`]); the guest sees them one at a time through RBR. The IRQ output is gated
//! by MCR OUT2 as on a PC, and loopback mode disconnects it.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Device, IrqLine, PortIo};
use std::collections::VecDeque;

/// Host-side receive queue limit; bytes beyond it are dropped and flagged as an overrun.
pub const RX_QUEUE_LIMIT: usize = 4096;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IER_RLS: u8 = 0x04;
const IER_MSR: u8 = 0x08;

const IIR_NONE: u8 = 0x01;
const IIR_MSR: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
const IIR_FIFO: u8 = 0xC0;

const LCR_DLAB: u8 = 0x80;

const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;

const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_BI: u8 = 0x10;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
const LSR_ERRORS: u8 = 0x1E;

const MSR_TERI: u8 = 0x04;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;

/// Where transmitted bytes go.
pub type SerialOutput = Box<dyn FnMut(u8) + Send>;

/// A 16550A UART.
pub struct Uart {
    name: String,
    base: u16,
    irq: IrqLine,
    output: SerialOutput,
    rx: VecDeque<u8>,
    ier: u8,
    lcr: u8,
    mcr: u8,
    lsr_errors: u8,
    /// Modem status lines (high nibble) and delta bits (low nibble).
    msr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    thre_pending: bool,
    line: bool,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart")
            .field("name", &self.name)
            .field("base", &self.base)
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("rx", &self.rx.len())
            .finish()
    }
}

impl Uart {
    /// A UART named `name` at ports `base..base+8` raising `irq`, sending bytes to `output`.
    pub fn new(name: impl Into<String>, base: u16, irq: IrqLine, output: SerialOutput) -> Self {
        let mut uart = Self {
            name: name.into(),
            base,
            irq,
            output,
            rx: VecDeque::new(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr: 0,
            scr: 0,
            fcr: 0,
            divisor: 12,
            thre_pending: false,
            line: false,
        };
        uart.reset_registers();
        uart
    }

    /// The port range `(base, 8)`.
    pub fn port_range(&self) -> (u16, u16) {
        (self.base, 8)
    }

    /// Queues bytes received from the host side.
    pub fn push_input(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.rx.len() >= RX_QUEUE_LIMIT {
                self.lsr_errors |= LSR_OE;
                tracing::debug!(uart = %self.name, "receive overrun");
                break;
            }
            self.rx.push_back(b);
        }
        self.update_irq();
    }

    /// Bytes waiting for the guest to read.
    pub fn pending_input(&self) -> usize {
        self.rx.len()
    }

    /// The divisor latch (baud rate = 115200 / divisor).
    pub fn divisor(&self) -> u16 {
        self.divisor
    }

    fn reset_registers(&mut self) {
        self.rx.clear();
        self.ier = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.lsr_errors = 0;
        self.msr = MSR_DCD | MSR_DSR | MSR_CTS;
        self.scr = 0;
        self.fcr = 0;
        self.divisor = 12;
        self.thre_pending = false;
        self.update_irq();
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & 1 != 0
    }

    fn lsr(&self) -> u8 {
        let dr = if self.rx.is_empty() { 0 } else { LSR_DR };
        dr | self.lsr_errors | LSR_THRE | LSR_TEMT
    }

    /// The highest-priority pending interrupt (IIR bits 0-3).
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.lsr_errors & LSR_ERRORS != 0 {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && !self.rx.is_empty() {
            IIR_RDA
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_MSR != 0 && self.msr & 0x0F != 0 {
            IIR_MSR
        } else {
            IIR_NONE
        }
    }

    fn update_irq(&mut self) {
        let gate = self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2;
        let level = gate && self.interrupt_id() != IIR_NONE;
        if level != self.line {
            self.line = level;
            self.irq.set_level(level);
        }
    }

    /// Sets the modem status lines (high nibble), recording deltas.
    fn set_modem_lines(&mut self, lines: u8) {
        let old = self.msr;
        let changed = (old ^ lines) & 0xF0;
        let mut delta = old & 0x0F;
        delta |= (changed & (MSR_CTS | MSR_DSR | MSR_DCD)) >> 4;
        if old & MSR_RI != 0 && lines & MSR_RI == 0 {
            delta |= MSR_TERI;
        }
        self.msr = (lines & 0xF0) | delta;
    }

    fn loopback_lines(&self) -> u8 {
        let m = self.mcr;
        let bit = |mask: u8, out: u8| if m & mask != 0 { out } else { 0 };
        bit(MCR_RTS, MSR_CTS)
            | bit(MCR_DTR, MSR_DSR)
            | bit(MCR_OUT1, MSR_RI)
            | bit(MCR_OUT2, MSR_DCD)
    }

    fn transmit(&mut self, byte: u8) {
        self.thre_pending = false;
        self.update_irq();
        if self.mcr & MCR_LOOP != 0 {
            if self.rx.len() < RX_QUEUE_LIMIT {
                self.rx.push_back(byte);
            } else {
                self.lsr_errors |= LSR_OE;
            }
        } else {
            (self.output)(byte);
        }
        // The shift register empties at once: THR is empty again.
        self.thre_pending = true;
        self.update_irq();
    }

    fn read_register(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.divisor as u8,
            0 => {
                let byte = self.rx.pop_front().unwrap_or(0);
                self.update_irq();
                byte
            }
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            2 => {
                let id = self.interrupt_id();
                if id == IIR_THRE {
                    self.thre_pending = false;
                    self.update_irq();
                }
                id | if self.fifo_enabled() { IIR_FIFO } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let lsr = self.lsr();
                self.lsr_errors = 0;
                self.update_irq();
                lsr
            }
            6 => {
                let msr = self.msr;
                self.msr &= 0xF0;
                self.update_irq();
                msr
            }
            7 => self.scr,
            _ => 0xFF,
        }
    }

    fn write_register(&mut self, offset: u16, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset {
            0 if dlab => self.divisor = (self.divisor & 0xFF00) | u16::from(value),
            0 => self.transmit(value),
            1 if dlab => self.divisor = (self.divisor & 0x00FF) | u16::from(value) << 8,
            1 => {
                self.ier = value & 0x0F;
                // Enabling (or re-writing) ETBEI with THR empty raises THRE again.
                self.thre_pending = self.ier & IER_THRE != 0;
                self.update_irq();
            }
            2 => {
                if (self.fcr ^ value) & 1 != 0 || value & 0x02 != 0 {
                    self.rx.clear();
                }
                self.fcr = value & 0xC9;
                self.update_irq();
            }
            3 => self.lcr = value,
            4 => {
                let was_loop = self.mcr & MCR_LOOP != 0;
                self.mcr = value & 0x1F;
                if self.mcr & MCR_LOOP != 0 {
                    self.set_modem_lines(self.loopback_lines());
                } else if was_loop {
                    self.set_modem_lines(MSR_DCD | MSR_DSR | MSR_CTS);
                }
                self.update_irq();
            }
            5 => {
                // LSR is read-only on a 16550A except for factory test; errors may be forced.
                self.lsr_errors = value & (LSR_ERRORS | LSR_BI);
                self.update_irq();
            }
            6 => {}
            7 => self.scr = value,
            _ => {}
        }
    }
}

impl Device for Uart {
    fn name(&self) -> &str {
        &self.name
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.reset_registers();
    }
}

/// Saved state of a UART (separate from the runtime type).
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`UartStateV1`].
    pub const VERSION: u32 = 1;

    /// A UART's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UartStateV1 {
        /// Received bytes the guest has not read yet, oldest first (at most
        /// [`super::RX_QUEUE_LIMIT`]).
        pub rx: Vec<u8>,
        /// Interrupt enable register.
        pub ier: u8,
        /// Line control register.
        pub lcr: u8,
        /// Modem control register.
        pub mcr: u8,
        /// Line status error bits (overrun, parity, framing, break).
        pub lsr_errors: u8,
        /// Modem status register: lines and deltas.
        pub msr: u8,
        /// Scratch register.
        pub scr: u8,
        /// FIFO control register as stored.
        pub fcr: u8,
        /// Divisor latch.
        pub divisor: u16,
        /// A THR-empty interrupt is pending.
        pub thre_pending: bool,
    }
}

impl SaveRestore for Uart {
    fn save(&mut self) -> SavedState {
        let state = save::UartStateV1 {
            rx: self.rx.iter().copied().collect(),
            ier: self.ier,
            lcr: self.lcr,
            mcr: self.mcr,
            lsr_errors: self.lsr_errors,
            msr: self.msr,
            scr: self.scr,
            fcr: self.fcr,
            divisor: self.divisor,
            thre_pending: self.thre_pending,
        };
        crate::saved_state::encode(&self.name, save::VERSION, &state)
    }

    /// Restores registers and received bytes and drives the IRQ line to match them.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::UartStateV1 = crate::saved_state::decode(state, &self.name, save::VERSION)?;
        let dev = self.name.as_str();
        ensure(
            s.rx.len() <= RX_QUEUE_LIMIT,
            dev,
            format!(
                "{} received bytes queued (at most {RX_QUEUE_LIMIT})",
                s.rx.len()
            ),
        )?;
        ensure(s.ier & !0x0F == 0, dev, format!("IER {:#04x}", s.ier))?;
        ensure(s.mcr & !0x1F == 0, dev, format!("MCR {:#04x}", s.mcr))?;
        ensure(s.fcr & !0xC9 == 0, dev, format!("FCR {:#04x}", s.fcr))?;
        ensure(
            s.lsr_errors & !(LSR_ERRORS | LSR_BI) == 0,
            dev,
            format!("LSR error bits {:#04x}", s.lsr_errors),
        )?;
        self.rx = s.rx.into();
        self.ier = s.ier;
        self.lcr = s.lcr;
        self.mcr = s.mcr;
        self.lsr_errors = s.lsr_errors;
        self.msr = s.msr;
        self.scr = s.scr;
        self.fcr = s.fcr;
        self.divisor = s.divisor;
        self.thre_pending = s.thre_pending;
        self.update_irq();
        self.irq.set_level(self.line);
        Ok(())
    }
}

impl PortIo for Uart {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let p = port.wrapping_add(i as u16);
            let offset = p.wrapping_sub(self.base);
            *byte = if offset < 8 {
                self.read_register(offset)
            } else {
                tracing::warn!(uart = %self.name, port = p, "read of unowned port");
                0xFF
            };
        }
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let p = port.wrapping_add(i as u16);
            let offset = p.wrapping_sub(self.base);
            if offset < 8 {
                self.write_register(offset, *byte);
            } else {
                tracing::warn!(uart = %self.name, port = p, "write to unowned port");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingSink;
    use std::sync::{Arc, Mutex};

    struct Rig {
        sink: Arc<RecordingSink>,
        out: Arc<Mutex<Vec<u8>>>,
        uart: Uart,
    }

    fn rig() -> Rig {
        let sink = Arc::new(RecordingSink::default());
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let uart = Uart::new(
            "com1",
            0x3F8,
            IrqLine::new(sink.clone(), 4),
            Box::new(move |b| o.lock().unwrap().push(b)),
        );
        Rig { sink, out, uart }
    }

    impl Rig {
        fn out(&mut self, offset: u16, v: u8) {
            self.uart.io_write(0x3F8 + offset, &[v]);
        }
        fn inb(&mut self, offset: u16) -> u8 {
            let mut b = [0];
            self.uart.io_read(0x3F8 + offset, &mut b);
            b[0]
        }
    }

    #[test]
    fn seabios_thre_probe() {
        let mut r = rig();
        assert_eq!(r.inb(2), 0x01);
        r.out(1, 0x02);
        assert_eq!(r.inb(2) & 0x3F, 0x02);
        // The IIR read cleared it.
        assert_eq!(r.inb(2), 0x01);
        // Re-writing IER re-arms it.
        r.out(1, 0x02);
        assert_eq!(r.inb(2), 0x02);
        r.out(1, 0x00);
        assert_eq!(r.inb(2), 0x01);
    }

    #[test]
    fn lsr_and_transmit() {
        let mut r = rig();
        assert_eq!(r.inb(5), 0x60);
        r.out(0, b'h');
        r.out(0, b'i');
        assert_eq!(*r.out.lock().unwrap(), b"hi");
        assert_eq!(r.inb(5), 0x60);
        r.uart.push_input(b"x");
        assert_eq!(r.inb(5), 0x61);
        assert_eq!(r.inb(0), b'x');
        assert_eq!(r.inb(5), 0x60);
        assert_eq!(r.inb(0), 0); // empty RBR
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let mut r = rig();
        r.out(3, 0x83);
        r.out(0, 0x01);
        r.out(1, 0x00);
        assert_eq!(r.inb(0), 0x01);
        assert_eq!(r.inb(1), 0x00);
        r.out(3, 0x03);
        assert_eq!(r.uart.divisor(), 1);
        assert_eq!(r.inb(3), 0x03);
        assert_eq!(r.inb(1), 0x00); // IER, not DLM
        r.out(7, 0x5A);
        assert_eq!(r.inb(7), 0x5A);
        assert!(r.out.lock().unwrap().is_empty());
    }

    #[test]
    fn fifo_ordering_and_iir_bits() {
        let mut r = rig();
        r.out(2, 0xC7);
        assert_eq!(r.inb(2), 0xC1);
        r.uart.push_input(b"abcdefghijklmnopqrstu");
        r.out(1, 0x01);
        assert_eq!(r.inb(2), 0xC4);
        let got: Vec<u8> = (0..21).map(|_| r.inb(0)).collect();
        assert_eq!(got, b"abcdefghijklmnopqrstu");
        assert_eq!(r.inb(2), 0xC1);
        r.uart.push_input(b"zz");
        r.out(2, 0xC3); // clear receive FIFO
        assert_eq!(r.inb(5) & 1, 0);
        r.out(2, 0x00);
        assert_eq!(r.inb(2), 0x01);
    }

    #[test]
    fn loopback_echo_and_modem_status() {
        let mut r = rig();
        r.out(4, 0x10 | 0x01 | 0x02); // loop, DTR, RTS
        r.out(0, 0x42);
        assert!(r.out.lock().unwrap().is_empty());
        assert_eq!(r.inb(5) & 1, 1);
        assert_eq!(r.inb(0), 0x42);
        // CTS and DSR follow RTS and DTR; DCD dropped (OUT2 clear).
        assert_eq!(r.inb(6), 0x30 | 0x08);
        r.out(4, 0x10 | 0x04); // OUT1 -> RI
        assert_eq!(r.inb(6), 0x40 | 0x03);
        r.out(4, 0x10);
        assert_eq!(r.inb(6), 0x04); // trailing edge of RI
        r.out(4, 0x00);
        assert_eq!(r.inb(6) & 0xF0, 0xB0);
    }

    #[test]
    fn interrupt_priority_and_out2_gate() {
        let mut r = rig();
        r.out(1, 0x0F);
        assert!(!r.sink.level(4)); // OUT2 clear: IRQ gated
        r.out(4, 0x08);
        assert!(r.sink.level(4));
        assert_eq!(r.inb(2), 0x02);
        assert!(!r.sink.level(4));
        r.uart.push_input(b"a");
        assert!(r.sink.level(4));
        assert_eq!(r.inb(2), 0x04);
        // Overrun beats received data.
        r.uart.push_input(&[0u8; RX_QUEUE_LIMIT]);
        assert_eq!(r.inb(2), 0x06);
        assert_eq!(r.inb(5), 0x63);
        assert_eq!(r.inb(2), 0x04);
        while r.inb(5) & 1 != 0 {
            r.inb(0);
        }
        assert!(!r.sink.level(4));
        // THR write pulses the THRE interrupt (an edge for the PIC).
        r.sink.take_changes();
        r.out(0, b'!');
        assert_eq!(r.sink.take_changes(), vec![(4, true)]);
        assert_eq!(r.inb(2), 0x02);
        r.out(0, b'!');
        assert_eq!(r.sink.take_changes(), vec![(4, false), (4, true)]);
    }

    /// Every register as the guest reads it (with the read side effects, the same on both).
    fn reads(r: &mut Rig) -> Vec<u8> {
        let mut v: Vec<u8> = [1, 3, 4, 7, 2, 6, 5, 0, 0]
            .into_iter()
            .map(|o| r.inb(o))
            .collect();
        let lcr = r.inb(3);
        r.out(3, lcr | 0x80);
        v.push(r.inb(0));
        v.push(r.inb(1));
        r.out(3, lcr);
        v.push(u8::from(r.sink.level(4)));
        v
    }

    fn programmed() -> Rig {
        let mut r = rig();
        r.out(3, 0x80 | 0x1B); // DLAB, 8 bits, even parity, 1 stop bit
        r.out(0, 0x03);
        r.out(1, 0x00); // 38400 baud
        r.out(3, 0x1B);
        r.out(2, 0xC1); // FIFO on, trigger 14
        r.out(4, 0x0B); // DTR, RTS, OUT2
        r.out(1, 0x07); // received data, THRE, line status
        r.out(7, 0xA5);
        r.uart.push_input(b"hello, world");
        r.inb(0); // 'h' read
        r.out(5, 0x08); // a framing error forced through the factory-test write
        r
    }

    #[test]
    fn save_restore_round_trip() {
        let mut a = programmed();
        let saved = a.uart.save();
        assert_eq!(saved.device, "com1");
        let mut b = rig();
        b.uart.restore(&saved).unwrap();
        assert_eq!(b.uart.save(), saved);
        assert!(a.sink.level(4));
        assert_eq!(b.sink.level(4), a.sink.level(4), "IRQ4 driven on restore");
        assert_eq!(b.uart.divisor(), 3);
        assert_eq!(b.uart.pending_input(), 11);
        assert_eq!(reads(&mut b), reads(&mut a));
        // Behaviour continues identically.
        for r in [&mut a, &mut b] {
            r.uart.push_input(b"!");
            r.out(0, b'x');
        }
        for _ in 0..12 {
            assert_eq!(reads(&mut b), reads(&mut a));
        }
        assert_eq!(*b.out.lock().unwrap(), *a.out.lock().unwrap());
        assert_eq!(b.uart.save(), a.uart.save());
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = programmed();
        let saved = a.uart.save();
        let mut b = rig();
        b.out(7, 0x11);
        check_refusals(&mut b.uart, &saved);
        let bad = edited(&saved, |s: &mut save::UartStateV1| {
            s.rx = vec![0; RX_QUEUE_LIMIT + 1]
        });
        check_corrupt(&mut b.uart, &bad);
        let bad = edited(&saved, |s: &mut save::UartStateV1| s.ier = 0x10);
        check_corrupt(&mut b.uart, &bad);
        let bad = edited(&saved, |s: &mut save::UartStateV1| s.fcr = 0x02);
        check_corrupt(&mut b.uart, &bad);
        assert_eq!(b.inb(7), 0x11, "still works");
    }
}
