//! A local APIC in user space: IRR/ISR/TMR, task priority, LVT, timer (one-shot, periodic),
//! spurious vector, and the ICR that sends IPIs (fixed, NMI, INIT, SIPI).

/// Register offsets.
mod reg {
    pub const ID: usize = 0x20;
    pub const VERSION: usize = 0x30;
    pub const TPR: usize = 0x80;
    pub const APR: usize = 0x90;
    pub const PPR: usize = 0xa0;
    pub const EOI: usize = 0xb0;
    pub const LDR: usize = 0xd0;
    pub const DFR: usize = 0xe0;
    pub const SVR: usize = 0xf0;
    pub const ISR: usize = 0x100;
    pub const TMR: usize = 0x180;
    pub const IRR: usize = 0x200;
    pub const ESR: usize = 0x280;
    pub const ICR_LO: usize = 0x300;
    pub const ICR_HI: usize = 0x310;
    pub const LVT_TIMER: usize = 0x320;
    pub const LVT_THERMAL: usize = 0x330;
    pub const LVT_PERF: usize = 0x340;
    pub const LVT_LINT0: usize = 0x350;
    pub const LVT_LINT1: usize = 0x360;
    pub const LVT_ERROR: usize = 0x370;
    pub const TIMER_INITIAL: usize = 0x380;
    pub const TIMER_CURRENT: usize = 0x390;
    pub const TIMER_DIVIDE: usize = 0x3e0;
}

const MASKED: u32 = 1 << 16;
/// Bus clock of the APIC timer before the divider (1 GHz: one tick per nanosecond).
const TIMER_HZ: u64 = 1_000_000_000;

/// An IPI the APIC wants sent (the partition routes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    /// ICR low word (vector, delivery mode, destination mode, shorthand).
    pub icr_lo: u32,
    /// Destination field (ICR high bits 31:24).
    pub dest: u8,
    /// Sender's APIC ID.
    pub source: u8,
}

/// The local APIC registers and interrupt state.
#[derive(Debug, Clone)]
pub struct Lapic {
    regs: [u32; 256],
    timer_start_ns: u64,
    timer_deadline_ns: Option<u64>,
    tsc_deadline: u64,
    /// NMI waiting to be taken.
    pub nmi_pending: bool,
    /// INIT received.
    pub init_pending: bool,
    /// SIPI vector received.
    pub sipi_pending: Option<u8>,
}

impl Lapic {
    /// Power-on state for APIC `id`.
    pub fn new(id: u8) -> Self {
        let mut l = Self {
            regs: [0; 256],
            timer_start_ns: 0,
            timer_deadline_ns: None,
            tsc_deadline: 0,
            nmi_pending: false,
            init_pending: false,
            sipi_pending: None,
        };
        l.reset(id);
        l
    }

    /// Back to the power-on register values.
    pub fn reset(&mut self, id: u8) {
        self.regs = [0; 256];
        self.set(reg::ID, u32::from(id) << 24);
        self.set(reg::VERSION, 0x0005_0014);
        self.set(reg::DFR, 0xffff_ffff);
        self.set(reg::SVR, 0xff);
        for r in [
            reg::LVT_TIMER,
            reg::LVT_THERMAL,
            reg::LVT_PERF,
            reg::LVT_LINT0,
            reg::LVT_LINT1,
            reg::LVT_ERROR,
        ] {
            self.set(r, MASKED);
        }
        self.timer_deadline_ns = None;
        self.nmi_pending = false;
        self.init_pending = false;
        self.sipi_pending = None;
    }

    fn get(&self, off: usize) -> u32 {
        self.regs[(off >> 4) & 0xff]
    }

    fn set(&mut self, off: usize, v: u32) {
        self.regs[(off >> 4) & 0xff] = v;
    }

    fn bit(&self, base: usize, v: u8) -> bool {
        self.get(base + usize::from(v >> 5) * 0x10) & (1 << (v & 31)) != 0
    }

    fn set_bit(&mut self, base: usize, v: u8, on: bool) {
        let off = base + usize::from(v >> 5) * 0x10;
        let mut w = self.get(off);
        if on {
            w |= 1 << (v & 31);
        } else {
            w &= !(1 << (v & 31));
        }
        self.set(off, w);
    }

    fn highest(&self, base: usize) -> Option<u8> {
        (0..8).rev().find_map(|i| {
            let w = self.get(base + i * 0x10);
            (w != 0).then(|| (i as u32 * 32 + 31 - w.leading_zeros()) as u8)
        })
    }

    /// APIC ID.
    pub fn id(&self) -> u8 {
        (self.get(reg::ID) >> 24) as u8
    }

    /// Software-enabled (SVR bit 8).
    pub fn software_enabled(&self) -> bool {
        self.get(reg::SVR) & 0x100 != 0
    }

    /// True when LINT0 passes PIC interrupts (ExtINT, unmasked) or the APIC is disabled.
    pub fn accepts_pic(&self) -> bool {
        let lvt0 = self.get(reg::LVT_LINT0);
        !self.software_enabled() || (lvt0 & MASKED == 0 && (lvt0 >> 8) & 7 == 7)
    }

    /// Matches a logical or physical destination.
    pub fn matches(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.id();
        }
        let ldr = (self.get(reg::LDR) >> 24) as u8;
        if self.get(reg::DFR) >> 28 == 0xf {
            dest & ldr != 0
        } else {
            (dest >> 4 == ldr >> 4 || dest >> 4 == 0xf) && (dest & ldr & 0xf) != 0
        }
    }

    /// Accepts a fixed interrupt.
    pub fn set_irr(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            return;
        }
        self.set_bit(reg::IRR, vector, true);
        self.set_bit(reg::TMR, vector, level);
    }

    fn ppr(&self) -> u32 {
        let tpr = self.get(reg::TPR) & 0xff;
        let isr = self.highest(reg::ISR).map_or(0, u32::from);
        if tpr >> 4 >= isr >> 4 {
            tpr
        } else {
            isr & 0xf0
        }
    }

    /// The vector to deliver now, if any (IRR above the processor priority).
    pub fn deliverable(&self) -> Option<u8> {
        if !self.software_enabled() {
            return None;
        }
        let v = self.highest(reg::IRR)?;
        (u32::from(v) >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// Moves `vector` from IRR to ISR (interrupt acknowledged by the processor).
    pub fn accept(&mut self, vector: u8) {
        self.set_bit(reg::IRR, vector, false);
        self.set_bit(reg::ISR, vector, true);
    }

    fn eoi(&mut self) -> Option<u8> {
        let v = self.highest(reg::ISR)?;
        self.set_bit(reg::ISR, v, false);
        self.bit(reg::TMR, v).then_some(v)
    }

    fn timer_period_ns(&self) -> u64 {
        let d = self.get(reg::TIMER_DIVIDE);
        let code = (d & 3) | ((d >> 1) & 4);
        let div = if code == 7 { 1 } else { 2u64 << code };
        u64::from(self.get(reg::TIMER_INITIAL)) * div * 1_000_000_000 / TIMER_HZ
    }

    fn tsc_deadline_mode(&self) -> bool {
        (self.get(reg::LVT_TIMER) >> 17) & 3 == 2
    }

    /// IA32_TSC_DEADLINE write: arms (non-zero) or disarms (zero) the timer in TSC-deadline
    /// mode; ignored in the other modes. The TSC counts nanoseconds.
    pub fn write_tsc_deadline(&mut self, deadline: u64) {
        self.tsc_deadline = deadline;
        if self.tsc_deadline_mode() {
            self.timer_deadline_ns = (deadline != 0).then_some(deadline);
        }
    }

    /// IA32_TSC_DEADLINE read (zero once fired or disarmed).
    pub fn tsc_deadline(&self) -> u64 {
        if self.tsc_deadline_mode() {
            self.timer_deadline_ns.unwrap_or(0)
        } else {
            0
        }
    }

    /// Fires the timer when due; returns the next deadline.
    pub fn poll_timer(&mut self, now: u64) -> Option<u64> {
        let deadline = self.timer_deadline_ns?;
        if now < deadline {
            return Some(deadline);
        }
        let lvt = self.get(reg::LVT_TIMER);
        if lvt & MASKED == 0 {
            self.set_irr(lvt as u8, false);
        }
        let periodic = (lvt >> 17) & 3 == 1;
        if self.tsc_deadline_mode() {
            self.tsc_deadline = 0;
            self.timer_deadline_ns = None;
            return None;
        }
        let period = self.timer_period_ns();
        if periodic && period > 0 {
            // Coalesce missed periods into one interrupt.
            let missed = (now - deadline) / period + 1;
            self.timer_start_ns = deadline + (missed - 1) * period;
            self.timer_deadline_ns = Some(deadline + missed * period);
        } else {
            self.timer_deadline_ns = None;
        }
        self.timer_deadline_ns
    }

    /// Reads a 32-bit register at `offset` within the APIC page.
    pub fn read(&self, offset: usize, now: u64) -> u32 {
        match offset & 0xff0 {
            reg::PPR => self.ppr(),
            reg::APR => 0,
            reg::TIMER_CURRENT => match self.timer_deadline_ns {
                Some(d) if d > now => {
                    let period = self.timer_period_ns().max(1);
                    let left = d - now;
                    (u128::from(left) * u128::from(self.get(reg::TIMER_INITIAL))
                        / u128::from(period)) as u32
                }
                _ => 0,
            },
            o if o < 0x400 => self.get(o),
            _ => 0,
        }
    }

    /// Writes a 32-bit register. Returns an IPI to send, and a level-triggered vector whose EOI
    /// must reach the IOAPIC.
    pub fn write(&mut self, offset: usize, v: u32, now: u64) -> (Option<Ipi>, Option<u8>) {
        match offset & 0xff0 {
            reg::ID => self.set(reg::ID, v & 0xff00_0000),
            reg::TPR => self.set(reg::TPR, v & 0xff),
            reg::EOI => return (None, self.eoi()),
            reg::LDR => self.set(reg::LDR, v & 0xff00_0000),
            reg::DFR => self.set(reg::DFR, v | 0x0fff_ffff),
            reg::SVR => {
                self.set(reg::SVR, v & 0x13ff);
                if v & 0x100 == 0 {
                    for r in [
                        reg::LVT_TIMER,
                        reg::LVT_THERMAL,
                        reg::LVT_PERF,
                        reg::LVT_LINT0,
                        reg::LVT_LINT1,
                        reg::LVT_ERROR,
                    ] {
                        let cur = self.get(r);
                        self.set(r, cur | MASKED);
                    }
                }
            }
            reg::ESR => self.set(reg::ESR, 0),
            reg::ICR_HI => self.set(reg::ICR_HI, v & 0xff00_0000),
            reg::ICR_LO => {
                self.set(reg::ICR_LO, v & !(1 << 12));
                let ipi = Ipi {
                    icr_lo: v,
                    dest: (self.get(reg::ICR_HI) >> 24) as u8,
                    source: self.id(),
                };
                return (Some(ipi), None);
            }
            reg::LVT_TIMER
            | reg::LVT_THERMAL
            | reg::LVT_PERF
            | reg::LVT_LINT0
            | reg::LVT_LINT1
            | reg::LVT_ERROR => {
                let mut v = v & 0x0007_17ff;
                if !self.software_enabled() {
                    v |= MASKED;
                }
                let off = offset & 0xff0;
                if off == reg::LVT_TIMER && (self.get(off) ^ v) & (3 << 17) != 0 {
                    // A timer mode change disarms the timer.
                    self.timer_deadline_ns = None;
                    self.tsc_deadline = 0;
                }
                self.set(off, v);
            }
            reg::TIMER_INITIAL if self.tsc_deadline_mode() => {}
            reg::TIMER_INITIAL => {
                self.set(reg::TIMER_INITIAL, v);
                self.timer_start_ns = now;
                let period = self.timer_period_ns();
                self.timer_deadline_ns = (v != 0).then_some(now + period.max(1));
            }
            reg::TIMER_DIVIDE => self.set(reg::TIMER_DIVIDE, v & 0xb),
            _ => {}
        }
        (None, None)
    }

    /// The register page as saved state (offsets 0..0x400).
    pub fn page(&self) -> Vec<u8> {
        let mut p = vec![0u8; hv::LAPIC_STATE_SIZE];
        for (i, chunk) in p.chunks_mut(16).enumerate() {
            chunk[..4].copy_from_slice(&self.regs[i].to_le_bytes());
        }
        p
    }

    /// Loads registers from a saved page.
    pub fn load_page(&mut self, page: &[u8]) {
        for (i, chunk) in page.chunks(16).take(64).enumerate() {
            if chunk.len() >= 4 {
                self.regs[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_eoi_and_level_tracking() {
        let mut l = Lapic::new(0);
        l.write(reg::SVR, 0x1ff, 0);
        l.set_irr(0x31, false);
        l.set_irr(0x52, true);
        assert_eq!(l.deliverable(), Some(0x52));
        l.accept(0x52);
        assert_eq!(l.deliverable(), None, "0x31 is below the in-service class");
        assert_eq!(l.write(reg::EOI, 0, 0), (None, Some(0x52)));
        assert_eq!(l.deliverable(), Some(0x31));
        l.write(reg::TPR, 0x40, 0);
        assert_eq!(l.deliverable(), None, "TPR masks class 3");
    }

    #[test]
    fn tsc_deadline_mode() {
        let mut l = Lapic::new(0);
        l.write(reg::SVR, 0x1ff, 0);
        l.write(reg::LVT_TIMER, 0x42 | (2 << 17), 0);
        l.write_tsc_deadline(5000);
        assert_eq!(l.tsc_deadline(), 5000);
        assert_eq!(l.poll_timer(4999), Some(5000));
        assert_eq!(l.poll_timer(5000), None);
        assert_eq!(l.deliverable(), Some(0x42));
        assert_eq!(l.tsc_deadline(), 0, "cleared once fired");
        l.write_tsc_deadline(9000);
        l.write_tsc_deadline(0);
        assert_eq!(l.poll_timer(10_000), None, "disarmed by writing zero");
    }

    #[test]
    fn one_shot_and_periodic_timer() {
        let mut l = Lapic::new(0);
        l.write(reg::SVR, 0x1ff, 0);
        l.write(reg::TIMER_DIVIDE, 0xb, 0); // divide by 1
        l.write(reg::LVT_TIMER, 0x40 | (1 << 17), 0); // periodic, vector 0x40
        l.write(reg::TIMER_INITIAL, 1000, 0);
        assert_eq!(l.read(reg::TIMER_CURRENT, 250), 750);
        assert_eq!(l.poll_timer(999), Some(1000));
        assert_eq!(l.poll_timer(1000), Some(2000));
        assert_eq!(l.deliverable(), Some(0x40));
        l.write(reg::LVT_TIMER, 0x41, 0); // one-shot
        l.write(reg::TIMER_INITIAL, 10, 5000);
        assert_eq!(l.poll_timer(5010), None);
    }
}
