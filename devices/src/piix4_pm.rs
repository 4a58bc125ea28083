//! PIIX4 power management function (8086:7113 at 00:01.3): the ACPI fixed hardware.
//!
//! PM1 event block (status/enable), PM1 control (SCI_EN, SLP_TYP/SLP_EN), the 24-bit PM timer
//! at 3.579545 MHz, and the APM control port 0xB2 through which the OS switches to ACPI mode
//! (`ACPI_ENABLE` 0xF1 sets SCI_EN). Writing SLP_EN with sleep type 0 powers the machine off,
//! as on QEMU's PIIX4 (whose DSDT, like SeaBIOS's, names `_S5` as type 0).
//!
//! The PM I/O block decodes at [`PM_BASE`]; SeaBIOS programs exactly that base into PMBA, and
//! other values are stored but do not move the block.

use crate::pci::ConfigSpace;
use crate::system_control::{ResetKind, ResetRequest};
use crate::{Clock, Device, IrqLine, PciFunction, PortIo};
use std::sync::Arc;

/// PM I/O block base (PM1 event at +0, PM1 control at +4, PM timer at +8).
pub const PM_BASE: u16 = 0xb000;
/// APM control/status ports.
pub const APM_CONTROL: u16 = 0xb2;
/// Port ranges the function decodes.
pub const PIIX4_PM_PORT_RANGES: [(u16, u16); 2] = [(PM_BASE, 0x40), (APM_CONTROL, 2)];
/// SCI interrupt line.
pub const SCI_IRQ: u32 = 9;
/// The value an OS writes to the APM control port to enter ACPI mode.
pub const ACPI_ENABLE: u8 = 0xf1;
/// The value that leaves ACPI mode.
pub const ACPI_DISABLE: u8 = 0xf0;

const PM_TIMER_HZ: u128 = 3_579_545;
const TMR_STS: u16 = 1 << 0;
const PWRBTN_STS: u16 = 1 << 8;
const WAK_STS: u16 = 1 << 15;
const SCI_EN: u16 = 1 << 0;
const SLP_EN: u16 = 1 << 13;

/// The PIIX4 PM function and its ACPI registers.
pub struct Piix4Pm {
    config: ConfigSpace,
    clock: Arc<dyn Clock>,
    sci: IrqLine,
    request: ResetRequest,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    apm_status: u8,
    sci_level: bool,
}

impl std::fmt::Debug for Piix4Pm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Piix4Pm")
            .field("pm1_cnt", &self.pm1_cnt)
            .finish()
    }
}

impl Piix4Pm {
    /// A PM function timing from `clock`, raising `sci`, reporting power-off to `request`.
    pub fn new(clock: Arc<dyn Clock>, sci: IrqLine, request: ResetRequest) -> Self {
        let mut config = ConfigSpace::new(0x8086, 0x7113, 0x06, 0x80, 0x00, 0x03);
        config.set_interrupt_pin(1);
        // PMBA (I/O space indicator hard-wired), PMREGMISC, SMBus base and host config.
        config.set_u32(0x40, 1);
        config.set_writable(0x40, &[0xc0, 0xff, 0, 0]);
        config.set_writable(0x80, &[0x01]);
        config.set_u32(0x90, 1);
        config.set_writable(0x90, &[0xf0, 0xff, 0, 0]);
        config.set_writable(0xd2, &[0x0f]);
        config.set_writable(0x3c, &[0xff]);
        Self {
            config,
            clock,
            sci,
            request,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            apm_status: 0,
            sci_level: false,
        }
    }

    /// True once the OS has switched to ACPI mode.
    pub fn acpi_enabled(&self) -> bool {
        self.pm1_cnt & SCI_EN != 0
    }

    /// Reports the power button (sets PWRBTN_STS; raises SCI when enabled).
    pub fn press_power_button(&mut self) {
        self.pm1_sts |= PWRBTN_STS;
        self.update_sci();
    }

    fn timer(&self) -> u32 {
        ((u128::from(self.clock.now_ns()) * PM_TIMER_HZ / 1_000_000_000) & 0xff_ffff) as u32
    }

    fn update_sci(&mut self) {
        let level = self.acpi_enabled() && self.pm1_sts & self.pm1_en & (TMR_STS | PWRBTN_STS) != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn read_byte(&self, port: u16) -> u8 {
        match port {
            APM_CONTROL => 0,
            p if p == APM_CONTROL + 1 => self.apm_status,
            p => {
                let off = p.wrapping_sub(PM_BASE);
                let reg: u32 = match off & !3 {
                    0 => u32::from(self.pm1_sts) | (u32::from(self.pm1_en) << 16),
                    4 => u32::from(self.pm1_cnt),
                    8 => self.timer(),
                    _ => 0,
                };
                (reg >> ((off & 3) * 8)) as u8
            }
        }
    }

    fn write_pm(&mut self, off: u16, data: &[u8]) {
        let mut v = 0u32;
        for (k, b) in data.iter().enumerate() {
            v |= u32::from(*b) << (8 * k);
        }
        let shift = u32::from(off & 3) * 8;
        let mask = if data.len() >= 4 {
            u32::MAX
        } else {
            ((1u32 << (8 * data.len())) - 1) << shift
        };
        let v = v << shift;
        match off & !3 {
            0 => {
                // Status bits are write-one-to-clear; enables are plain.
                let sts_clear = (v & mask & 0xffff) as u16;
                self.pm1_sts &= !sts_clear;
                if mask >> 16 != 0 {
                    let en_mask = (mask >> 16) as u16;
                    self.pm1_en = (self.pm1_en & !en_mask) | ((v >> 16) as u16 & en_mask);
                }
            }
            4 => {
                let m = mask as u16;
                let new = (self.pm1_cnt & !m) | (v as u16 & m);
                self.pm1_cnt = new & !SLP_EN;
                if new & SLP_EN != 0 {
                    match (new >> 10) & 7 {
                        0 => (self.request)(ResetKind::PowerOff),
                        typ => {
                            tracing::info!(typ, "ACPI sleep state not supported; ignoring");
                            self.pm1_sts |= WAK_STS;
                        }
                    }
                }
            }
            _ => {}
        }
        self.update_sci();
    }
}

impl Device for Piix4Pm {
    fn name(&self) -> &str {
        "piix4-pm"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        Some(self)
    }
    fn reset(&mut self) {
        let (clock, sci, request) = (self.clock.clone(), self.sci.clone(), self.request.clone());
        if self.sci_level {
            sci.set_level(false);
        }
        *self = Self::new(clock, sci, request);
    }
}

impl PortIo for Piix4Pm {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        for (k, b) in data.iter_mut().enumerate() {
            *b = self.read_byte(port.wrapping_add(k as u16));
        }
    }

    fn io_write(&mut self, port: u16, data: &[u8]) {
        match port {
            APM_CONTROL => match data.first().copied() {
                Some(ACPI_ENABLE) => {
                    self.pm1_cnt |= SCI_EN;
                    self.update_sci();
                }
                Some(ACPI_DISABLE) => {
                    self.pm1_cnt &= !SCI_EN;
                    self.update_sci();
                }
                _ => {}
            },
            p if p == APM_CONTROL + 1 => self.apm_status = data.first().copied().unwrap_or(0),
            p if (PM_BASE..PM_BASE + 0x40).contains(&p) => self.write_pm(p - PM_BASE, data),
            _ => {}
        }
    }
}

impl PciFunction for Piix4Pm {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.config.read(usize::from(offset), data);
    }
    fn config_write(&mut self, offset: u8, data: &[u8]) {
        self.config.write(usize::from(offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingSink;
    use crate::ManualClock;
    use std::sync::Mutex;

    fn pm() -> (
        Piix4Pm,
        Arc<Mutex<Vec<ResetKind>>>,
        ManualClock,
        Arc<RecordingSink>,
    ) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let clock = ManualClock::new();
        let sink = Arc::new(RecordingSink::default());
        let d = Piix4Pm::new(
            Arc::new(clock.clone()),
            IrqLine::new(sink.clone(), SCI_IRQ),
            Arc::new(move |k| s.lock().unwrap().push(k)),
        );
        (d, seen, clock, sink)
    }

    fn read16(d: &mut Piix4Pm, port: u16) -> u16 {
        let mut b = [0u8; 2];
        d.io_read(port, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn acpi_enable_then_power_off_through_slp_en() {
        let (mut d, seen, _, _) = pm();
        assert_eq!(read16(&mut d, PM_BASE + 4) & SCI_EN, 0);
        d.io_write(APM_CONTROL, &[ACPI_ENABLE]);
        assert_eq!(read16(&mut d, PM_BASE + 4) & SCI_EN, SCI_EN);
        // S3 (type 1) is not supported: nothing happens.
        d.io_write(PM_BASE + 4, &(SCI_EN | (1 << 10) | SLP_EN).to_le_bytes());
        assert!(seen.lock().unwrap().is_empty());
        d.io_write(PM_BASE + 4, &(SCI_EN | SLP_EN).to_le_bytes());
        assert_eq!(*seen.lock().unwrap(), vec![ResetKind::PowerOff]);
        assert_eq!(
            read16(&mut d, PM_BASE + 4) & SLP_EN,
            0,
            "SLP_EN reads as zero"
        );
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_and_wraps_at_24_bits() {
        let (mut d, _, clock, _) = pm();
        clock.set(1_000_000_000);
        let mut b = [0u8; 4];
        d.io_read(PM_BASE + 8, &mut b);
        assert_eq!(u32::from_le_bytes(b), 3_579_545);
        clock.set(5_000_000_000);
        d.io_read(PM_BASE + 8, &mut b);
        assert_eq!(u32::from_le_bytes(b), (5 * 3_579_545) & 0xff_ffff);
    }

    #[test]
    fn power_button_raises_sci_only_when_enabled_and_status_clears_by_writing_one() {
        let (mut d, _, _, sink) = pm();
        d.io_write(APM_CONTROL, &[ACPI_ENABLE]);
        d.press_power_button();
        assert!(!sink.level(SCI_IRQ), "not enabled");
        d.io_write(PM_BASE + 2, &PWRBTN_STS.to_le_bytes());
        assert!(sink.level(SCI_IRQ));
        d.io_write(PM_BASE, &PWRBTN_STS.to_le_bytes());
        assert!(!sink.level(SCI_IRQ));
        assert_eq!(read16(&mut d, PM_BASE) & PWRBTN_STS, 0);
    }

    #[test]
    fn pci_identity_and_pm_base_register() {
        let (mut d, _, _, _) = pm();
        let mut b = [0u8; 4];
        d.config_read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x7113_8086);
        d.config_write(0x40, &(u32::from(PM_BASE) | 1).to_le_bytes());
        d.config_read(0x40, &mut b);
        assert_eq!(u32::from_le_bytes(b), u32::from(PM_BASE) | 1);
    }
}
