//! PIIX4 power management function (8086:7113 at 00:01.3): the ACPI fixed hardware.
//!
//! PM1 event block (status/enable), PM1 control (SCI_EN, SLP_TYP/SLP_EN), the 24-bit PM timer
//! at 3.579545 MHz, and the APM control port 0xB2 through which the OS switches to ACPI mode
//! (`ACPI_ENABLE` 0xF1 sets SCI_EN). Writing SLP_EN with sleep type 0 powers the machine off,
//! as on QEMU's PIIX4 (whose DSDT, like SeaBIOS's, names `_S5` as type 0).
//!
//! The PM I/O block decodes at [`PM_BASE`]; SeaBIOS programs exactly that base into PMBA, and
//! other values are stored but do not move the block.
//!
//! The function also answers the ports that SeaBIOS's ACPI tables name beside the fixed
//! hardware: the GPE0 block at [`GPE0_BASE`] and the PCI and CPU hotplug registers at
//! [`PCI_HOTPLUG_BASE`] and [`CPU_HOTPLUG_BASE`]. Nothing is hot-pluggable here, so no general
//! purpose event ever becomes pending and the hotplug registers read 0. Left unclaimed, those
//! ports would read all-ones: the OS would see every GPE pending and run the DSDT's PCI hotplug
//! handler, which then reports every slot as removed and makes the OS eject its PCI devices.

use crate::pci::ConfigSpace;
use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::system_control::{ResetKind, ResetRequest};
use crate::{Clock, Device, IrqLine, PciFunction, PortIo};
use std::sync::Arc;

/// PM I/O block base (PM1 event at +0, PM1 control at +4, PM timer at +8).
pub const PM_BASE: u16 = 0xb000;
/// APM control/status ports.
pub const APM_CONTROL: u16 = 0xb2;
/// GPE0 block: status (2 bytes, write one to clear) then enable (2 bytes).
pub const GPE0_BASE: u16 = 0xafe0;
/// PCI hotplug registers (slots up, slots down, eject, removable, bus select).
pub const PCI_HOTPLUG_BASE: u16 = 0xae00;
/// CPU hotplug register (bitmap of processors present).
pub const CPU_HOTPLUG_BASE: u16 = 0xaf00;
/// Port ranges the function decodes.
pub const PIIX4_PM_PORT_RANGES: [(u16, u16); 5] = [
    (PM_BASE, 0x40),
    (APM_CONTROL, 2),
    (GPE0_BASE, 4),
    (PCI_HOTPLUG_BASE, 0x14),
    (CPU_HOTPLUG_BASE, 0x20),
];
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
    /// GPE0 enable bits (no GPE has a source, so the status half always reads 0).
    gpe0_en: u16,
    sci_level: bool,
    /// Added to the clock's time for the PM timer. Zero until a restore, which sets it so that
    /// the timer goes on from the value (and phase) it had when the state was saved.
    timer_offset_ns: u64,
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
            gpe0_en: 0,
            sci_level: false,
            timer_offset_ns: 0,
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

    /// Time the PM timer counts in: the clock's time plus the restore offset.
    fn timer_ns(&self) -> u64 {
        self.clock.now_ns().saturating_add(self.timer_offset_ns)
    }

    fn timer(&self) -> u32 {
        ((u128::from(self.timer_ns()) * PM_TIMER_HZ / 1_000_000_000) & 0xff_ffff) as u32
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
            p if p == GPE0_BASE + 2 => self.gpe0_en as u8,
            p if p == GPE0_BASE + 3 => (self.gpe0_en >> 8) as u8,
            p if !(PM_BASE..PM_BASE + 0x40).contains(&p) => 0,
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
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        let (clock, sci, request) = (self.clock.clone(), self.sci.clone(), self.request.clone());
        if self.sci_level {
            sci.set_level(false);
        }
        // The PM timer runs on through a reset.
        let timer_offset_ns = self.timer_offset_ns;
        *self = Self::new(clock, sci, request);
        self.timer_offset_ns = timer_offset_ns;
    }
}

/// Saved state of the PM function (separate from the runtime type).
mod save {
    use crate::pci::ConfigSpaceState;
    use serde::{Deserialize, Serialize};

    /// Version of [`Piix4PmStateV2`], the one written.
    pub const VERSION: u32 = 2;
    /// Version of [`Piix4PmStateV1`], still read.
    pub const VERSION_V1: u32 = 1;

    /// The PM function's saved state, version 2.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Piix4PmStateV2 {
        /// PCI configuration space.
        pub config: ConfigSpaceState,
        /// PM1 status.
        pub pm1_sts: u16,
        /// PM1 enable.
        pub pm1_en: u16,
        /// PM1 control (SLP_EN always reads 0).
        pub pm1_cnt: u16,
        /// APM status port 0xB3.
        pub apm_status: u8,
        /// The PM timer's time at the save, in nanoseconds modulo
        /// [`super::TIMER_CYCLE_NS`]: its count and the phase of its 3.58 MHz clock.
        pub timer_ns: u64,
        /// GPE0 enable register.
        pub gpe0_en: u16,
    }

    /// Version 1: version 2 without the GPE0 block (restored with GPE0 enables clear).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Piix4PmStateV1 {
        /// PCI configuration space.
        pub config: ConfigSpaceState,
        /// PM1 status.
        pub pm1_sts: u16,
        /// PM1 enable.
        pub pm1_en: u16,
        /// PM1 control.
        pub pm1_cnt: u16,
        /// APM status port 0xB3.
        pub apm_status: u8,
        /// PM timer time, as in version 2.
        pub timer_ns: u64,
    }

    impl From<Piix4PmStateV1> for Piix4PmStateV2 {
        fn from(s: Piix4PmStateV1) -> Self {
            Self {
                config: s.config,
                pm1_sts: s.pm1_sts,
                pm1_en: s.pm1_en,
                pm1_cnt: s.pm1_cnt,
                apm_status: s.apm_status,
                timer_ns: s.timer_ns,
                gpe0_en: 0,
            }
        }
    }
}

/// Time after which the PM timer's 24-bit count and its input clock are both back where they
/// were: 2^24 seconds (3 579 545 × 2^24 ticks).
const TIMER_CYCLE_NS: u64 = 1_000_000_000 << 24;

impl SaveRestore for Piix4Pm {
    fn save(&mut self) -> SavedState {
        let state = save::Piix4PmStateV2 {
            config: self.config.saved(),
            pm1_sts: self.pm1_sts,
            pm1_en: self.pm1_en,
            pm1_cnt: self.pm1_cnt,
            apm_status: self.apm_status,
            timer_ns: self.timer_ns() % TIMER_CYCLE_NS,
            gpe0_en: self.gpe0_en,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores configuration space, PM registers and timer, and drives SCI to match them.
    /// Reads versions 1 and 2.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let dev = "piix4-pm";
        let s: save::Piix4PmStateV2 = if state.device == dev && state.version == save::VERSION_V1 {
            crate::saved_state::decode::<save::Piix4PmStateV1>(state, dev, save::VERSION_V1)?.into()
        } else {
            crate::saved_state::decode(state, dev, save::VERSION)?
        };
        let mut config = self.config.clone();
        config.restore_saved(&s.config, dev)?;
        ensure(
            s.pm1_cnt & SLP_EN == 0,
            dev,
            format!("PM1 control {:#06x} has SLP_EN set", s.pm1_cnt),
        )?;
        ensure(
            s.timer_ns < TIMER_CYCLE_NS,
            dev,
            format!("PM timer time {} ns", s.timer_ns),
        )?;
        let clock_now = self.clock.now_ns() % TIMER_CYCLE_NS;
        self.timer_offset_ns = (s.timer_ns + TIMER_CYCLE_NS - clock_now) % TIMER_CYCLE_NS;
        self.config = config;
        self.pm1_sts = s.pm1_sts;
        self.pm1_en = s.pm1_en;
        self.pm1_cnt = s.pm1_cnt;
        self.apm_status = s.apm_status;
        self.gpe0_en = s.gpe0_en;
        self.update_sci();
        self.sci.set_level(self.sci_level);
        Ok(())
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
            p if (GPE0_BASE..GPE0_BASE + 4).contains(&p) => {
                // Status bytes clear nothing (none is ever set); enable bytes are stored.
                for (k, b) in data.iter().enumerate() {
                    match p.wrapping_add(k as u16).wrapping_sub(GPE0_BASE) {
                        2 => self.gpe0_en = (self.gpe0_en & 0xff00) | u16::from(*b),
                        3 => self.gpe0_en = (self.gpe0_en & 0x00ff) | (u16::from(*b) << 8),
                        _ => {}
                    }
                }
            }
            p => tracing::debug!(port = p, ?data, "hotplug register write ignored"),
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
    fn no_gpe_is_ever_pending_and_hotplug_registers_read_zero() {
        let (mut d, _, _, sink) = pm();
        d.io_write(APM_CONTROL, &[ACPI_ENABLE]);
        // Enable every GPE, as an OS does for those the DSDT has handlers for.
        d.io_write(GPE0_BASE + 2, &[0xff]);
        d.io_write(GPE0_BASE + 3, &[0xff]);
        let mut gpe = [0u8; 4];
        d.io_read(GPE0_BASE, &mut gpe);
        assert_eq!(gpe, [0, 0, 0xff, 0xff], "status clear, enables read back");
        d.io_write(GPE0_BASE, &[0xff, 0xff, 0x02, 0x00]);
        d.io_read(GPE0_BASE, &mut gpe);
        assert_eq!(gpe, [0, 0, 0x02, 0x00]);
        assert!(!sink.level(SCI_IRQ));
        // Slots up / down / removable, and the CPU present bitmap: nothing to report.
        for (base, len) in [(PCI_HOTPLUG_BASE, 0x14), (CPU_HOTPLUG_BASE, 0x20)] {
            d.io_write(base + 8, &u32::MAX.to_le_bytes());
            for off in (0..len).step_by(4) {
                let mut b = [0xa5u8; 4];
                d.io_read(base + off, &mut b);
                assert_eq!(b, [0; 4], "port {:#x}", base + off);
            }
        }
    }

    #[test]
    fn restores_a_version_1_state_with_gpe0_disabled() {
        let (mut a, _, _) = programmed();
        let v2: save::Piix4PmStateV2 =
            crate::saved_state::decode(&a.save(), "piix4-pm", save::VERSION).unwrap();
        let v1 = save::Piix4PmStateV1 {
            config: v2.config.clone(),
            pm1_sts: v2.pm1_sts,
            pm1_en: v2.pm1_en,
            pm1_cnt: v2.pm1_cnt,
            apm_status: v2.apm_status,
            timer_ns: v2.timer_ns,
        };
        let old = crate::saved_state::encode("piix4-pm", save::VERSION_V1, &v1);
        let (mut b, _, sink) = pm_at(5);
        b.restore(&old).unwrap();
        assert!(sink.level(SCI_IRQ), "power button still pending");
        a.io_write(GPE0_BASE + 2, &[0, 0]);
        let (ra, rb) = (reads(&mut a), reads(&mut b));
        // Timers differ (different clocks); everything else matches.
        assert_eq!(ra[..8], rb[..8]);
        assert_eq!(ra[12..], rb[12..]);
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

    fn pm_at(ns: u64) -> (Piix4Pm, ManualClock, Arc<RecordingSink>) {
        let (d, _, clock, sink) = pm();
        clock.set(ns);
        (d, clock, sink)
    }

    /// Every register as the guest reads it: PM block, APM ports, GPE0, configuration space.
    fn reads(d: &mut Piix4Pm) -> Vec<u8> {
        let mut v = vec![0u8; 0x40 + 2 + 4 + 256];
        let (pm, rest) = v.split_at_mut(0x40);
        let (apm, rest) = rest.split_at_mut(2);
        let (gpe, config) = rest.split_at_mut(4);
        d.io_read(PM_BASE, pm);
        d.io_read(APM_CONTROL, &mut apm[..1]);
        d.io_read(APM_CONTROL + 1, &mut apm[1..]);
        d.io_read(GPE0_BASE, gpe);
        for (i, chunk) in config.chunks_mut(4).enumerate() {
            d.config_read((i * 4) as u8, chunk);
        }
        v
    }

    fn programmed() -> (Piix4Pm, ManualClock, Arc<RecordingSink>) {
        let (mut d, clock, sink) = pm_at(123_456_789_012);
        d.config_write(0x40, &(u32::from(PM_BASE) | 1).to_le_bytes());
        d.config_write(0x80, &[0x01]);
        d.config_write(0x3c, &[9]);
        d.io_write(APM_CONTROL, &[ACPI_ENABLE]);
        d.io_write(APM_CONTROL + 1, &[0x5A]);
        d.io_write(PM_BASE + 2, &(PWRBTN_STS | TMR_STS).to_le_bytes());
        d.io_write(PM_BASE + 4, &(SCI_EN | (5 << 10)).to_le_bytes());
        d.io_write(GPE0_BASE + 2, &0x0f0eu16.to_le_bytes());
        d.press_power_button();
        (d, clock, sink)
    }

    #[test]
    fn save_restore_round_trip() {
        let (mut a, clock_a, sink_a) = programmed();
        assert!(sink_a.level(SCI_IRQ));
        let saved = a.save();
        assert_eq!(saved.device, "piix4-pm");
        let (mut b, clock_b, sink_b) = pm_at(999);
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert!(sink_b.level(SCI_IRQ), "SCI driven on restore");
        assert_eq!(reads(&mut b), reads(&mut a));
        // The timer runs on from the same value, tick for tick.
        for step in [1u64, 279, 280, 1_000_000, 4_686_999_999, 1] {
            clock_a.advance(step);
            clock_b.advance(step);
            assert_eq!(reads(&mut b), reads(&mut a), "after {step}");
        }
        for d in [&mut a, &mut b] {
            d.io_write(PM_BASE, &PWRBTN_STS.to_le_bytes());
        }
        assert!(!sink_b.level(SCI_IRQ));
        assert_eq!(sink_b.level(SCI_IRQ), sink_a.level(SCI_IRQ));
        assert_eq!(b.save(), a.save());
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let (mut a, _, _) = programmed();
        let saved = a.save();
        let (mut b, _, _) = pm_at(5);
        b.io_write(APM_CONTROL + 1, &[0x11]);
        check_refusals(&mut b, &saved);
        let bad = edited(&saved, |s: &mut save::Piix4PmStateV2| s.pm1_cnt |= SLP_EN);
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::Piix4PmStateV2| {
            s.timer_ns = TIMER_CYCLE_NS
        });
        check_corrupt(&mut b, &bad);
        // Another function's configuration space.
        let bad = edited(&saved, |s: &mut save::Piix4PmStateV2| {
            s.config = crate::i440fx::I440fx::new().config().saved()
        });
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::Piix4PmStateV2| {
            s.config.data.truncate(64)
        });
        check_corrupt(&mut b, &bad);
        let mut apm = [0u8];
        b.io_read(APM_CONTROL + 1, &mut apm);
        assert_eq!(apm[0], 0x11, "still works");
    }
}
