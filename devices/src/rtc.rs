//! Motorola MC146818 real-time clock with 128 bytes of CMOS RAM (index port 0x70, bit 7 =
//! NMI mask; data port 0x71), and the PC CMOS layout SeaBIOS reads.
//!
//! The time starts from the host's wall clock (UTC) when the device is built and advances with
//! the device [`Clock`]. Registers 0-9 and the century byte (0x32) are recomputed on access in
//! the format register B selects (BCD or binary, 12 or 24 hours). Periodic, update-ended and
//! alarm interrupts set register C flags and assert IRQ8 while IRQF is set; reading register C
//! clears the flags and the line.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Clock, Device, IrqLine, Poll, PortIo, TimerWaker};
use std::sync::Arc;

/// Port ranges the RTC answers: `(first port, count)`.
pub const RTC_PORT_RANGES: [(u16, u16); 1] = [(0x70, 2)];

const SECONDS: usize = 0x00;
const SECONDS_ALARM: usize = 0x01;
const MINUTES: usize = 0x02;
const MINUTES_ALARM: usize = 0x03;
const HOURS: usize = 0x04;
const HOURS_ALARM: usize = 0x05;
const DAY_OF_WEEK: usize = 0x06;
const DAY_OF_MONTH: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0A;
const REG_B: usize = 0x0B;
const REG_C: usize = 0x0C;
const REG_D: usize = 0x0D;
/// Century byte in the PC layout.
const CENTURY: usize = 0x32;

const A_UIP: u8 = 0x80;
const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_SQWE: u8 = 0x08;
const B_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

const NS_PER_SEC: u64 = 1_000_000_000;
/// Update-in-progress is reported for this long before each second boundary.
const UIP_NS: u64 = 244_140;
const RTC_HZ: u64 = 32_768;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number from [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
}

impl DateTime {
    fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    fn to_unix(self) -> Option<u64> {
        let valid = (1970..=2500).contains(&self.year)
            && (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60;
        if !valid {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        u64::try_from(secs).ok()
    }
}

/// A boot device as the PC CMOS boot-order nibbles name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    /// First floppy drive.
    Floppy = 1,
    /// First hard disk.
    Disk = 2,
    /// CD-ROM.
    Cdrom = 3,
}

/// Floppy drive types for CMOS byte 0x10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloppyType {
    /// No drive.
    #[default]
    None = 0,
    /// 5.25" 360 KiB.
    K360 = 1,
    /// 5.25" 1.2 MiB.
    M1_2 = 2,
    /// 3.5" 720 KiB.
    K720 = 3,
    /// 3.5" 1.44 MiB.
    M1_44 = 4,
    /// 3.5" 2.88 MiB.
    M2_88 = 5,
}

/// Machine facts the PC CMOS layout records (what QEMU's `pc_cmos_init` writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcCmosConfig {
    /// Bytes of RAM below 4 GiB (including the first MiB).
    pub ram_below_4g: u64,
    /// Bytes of RAM mapped from 4 GiB up.
    pub ram_above_4g: u64,
    /// Number of processors (byte 0x5F holds this minus one).
    pub cpus: u32,
    /// Boot devices in order (at most three are recorded).
    pub boot_order: Vec<BootDevice>,
    /// Floppy drives A and B.
    pub floppies: [FloppyType; 2],
}

impl PcCmosConfig {
    /// Writes the layout into `cmos` (the 128-byte RAM) including the checksum.
    pub fn write_to(&self, cmos: &mut [u8; 128]) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        // Base memory: 640 KiB.
        cmos[0x15] = 0x80;
        cmos[0x16] = 0x02;
        // Extended memory above 1 MiB in KiB, capped at 0xFFFF.
        let extended = (self.ram_below_4g / KIB).saturating_sub(1024).min(0xFFFF) as u16;
        let [lo, hi] = extended.to_le_bytes();
        cmos[0x17] = lo;
        cmos[0x18] = hi;
        cmos[0x30] = lo;
        cmos[0x31] = hi;
        // Memory above 16 MiB (below 4 GiB) in 64 KiB units.
        let above16 = (self.ram_below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF) as u16;
        let [lo, hi] = above16.to_le_bytes();
        cmos[0x34] = lo;
        cmos[0x35] = hi;
        // Memory above 4 GiB in 64 KiB units, 24 bits.
        let high = (self.ram_above_4g / (64 * KIB)).min(0xFF_FFFF);
        cmos[0x5B] = high as u8;
        cmos[0x5C] = (high >> 8) as u8;
        cmos[0x5D] = (high >> 16) as u8;
        cmos[0x5F] = self.cpus.saturating_sub(1).min(0xFF) as u8;
        // Boot order: 0x3D low nibble first, high nibble second; 0x38 high nibble third.
        // 0x38 bit 0 clear keeps the boot signature check.
        let nib = |i: usize| self.boot_order.get(i).map_or(0, |d| *d as u8);
        cmos[0x3D] = nib(1) << 4 | nib(0);
        cmos[0x38] = nib(2) << 4;
        cmos[0x10] = (self.floppies[0] as u8) << 4 | self.floppies[1] as u8;
        let drives = self
            .floppies
            .iter()
            .filter(|f| **f != FloppyType::None)
            .count();
        // Equipment: FPU and PS/2 mouse present, VGA, floppy count.
        let mut equipment = 0x06;
        if drives > 0 {
            equipment |= 0x01 | ((drives as u8 - 1) << 6);
        }
        cmos[0x14] = equipment;
        let sum: u16 = cmos[0x10..=0x2D].iter().map(|b| u16::from(*b)).sum();
        let [lo, hi] = sum.to_le_bytes();
        cmos[0x2E] = hi;
        cmos[0x2F] = lo;
    }
}

/// The MC146818 RTC and CMOS RAM.
pub struct Rtc {
    clock: Arc<dyn Clock>,
    irq: IrqLine,
    waker: TimerWaker,
    cmos: [u8; 128],
    index: u8,
    nmi_masked: bool,
    /// RTC time (ns since the Unix epoch) at `anchor_ns` of the device clock.
    time_at_anchor: u64,
    anchor_ns: u64,
    /// The time advances (divider running and SET clear).
    running: bool,
    /// Last 32.768 kHz tick examined for periodic interrupts.
    periodic_tick: u64,
    /// RTC second last examined for update-ended and alarm interrupts.
    update_second: u64,
    line: bool,
    /// Added to the clock's time to get the time the RTC runs on. Zero until a restore, which
    /// sets it so that the periodic interrupt keeps the phase it had when the state was saved.
    offset_ns: u64,
}

impl std::fmt::Debug for Rtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rtc")
            .field("index", &self.index)
            .field("time_at_anchor", &self.time_at_anchor)
            .field("running", &self.running)
            .finish()
    }
}

fn to_bcd(v: u32) -> u8 {
    (((v / 10 % 10) << 4) | (v % 10)) as u8
}

fn from_bcd(v: u8) -> Option<u32> {
    let (hi, lo) = (v >> 4, v & 0xF);
    (hi < 10 && lo < 10).then_some(u32::from(hi) * 10 + u32::from(lo))
}

impl Rtc {
    /// An RTC whose clock reads `start_unix_secs` (UTC) now. Register A = 0x26 (32.768 kHz,
    /// 1024 Hz periodic rate), B = 0x02 (24 hours, BCD), D = 0x80 (valid RAM and time).
    pub fn new(
        clock: Arc<dyn Clock>,
        irq8: IrqLine,
        waker: TimerWaker,
        start_unix_secs: u64,
    ) -> Self {
        let now = clock.now_ns();
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H;
        cmos[REG_D] = 0x80;
        let mut rtc = Self {
            clock,
            irq: irq8,
            waker,
            cmos,
            index: 0,
            nmi_masked: false,
            time_at_anchor: start_unix_secs.saturating_mul(NS_PER_SEC),
            anchor_ns: now,
            running: true,
            periodic_tick: 0,
            update_second: 0,
            line: false,
            offset_ns: 0,
        };
        rtc.restart_tracking(now);
        rtc.sync_registers(now);
        rtc
    }

    /// An RTC starting from the host's wall clock (UTC).
    pub fn with_host_time(clock: Arc<dyn Clock>, irq8: IrqLine, waker: TimerWaker) -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self::new(clock, irq8, waker, secs)
    }

    /// Fills the PC CMOS layout from machine facts (memory, processors, boot order, floppies)
    /// and the century byte, then updates the checksum.
    pub fn apply_pc_config(&mut self, config: &PcCmosConfig) {
        config.write_to(&mut self.cmos);
        let now = self.now();
        self.sync_registers(now);
    }

    /// Raw CMOS byte at `index` (0..128; other indexes read 0xFF).
    pub fn cmos(&self, index: usize) -> u8 {
        self.cmos.get(index).copied().unwrap_or(0xFF)
    }

    /// Sets a raw CMOS byte (machine setup); ignored for indexes outside 0..128.
    pub fn set_cmos(&mut self, index: usize, value: u8) {
        if let Some(b) = self.cmos.get_mut(index) {
            *b = value;
        }
    }

    /// True when the guest set the NMI mask bit (bit 7 of the index port).
    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// The RTC's current time in seconds since the Unix epoch.
    pub fn unix_time(&self) -> u64 {
        self.time_ns(self.now()) / NS_PER_SEC
    }

    /// The time the RTC runs on (the clock's time plus the restore offset).
    fn now(&self) -> u64 {
        self.clock.now_ns().saturating_add(self.offset_ns)
    }

    fn time_ns(&self, now: u64) -> u64 {
        if self.running {
            self.time_at_anchor
                .saturating_add(now.saturating_sub(self.anchor_ns))
        } else {
            self.time_at_anchor
        }
    }

    fn divider_running(&self) -> bool {
        self.cmos[REG_A] & 0x60 != 0x60
    }

    fn should_run(&self) -> bool {
        self.divider_running() && self.cmos[REG_B] & B_SET == 0
    }

    fn binary(&self) -> bool {
        self.cmos[REG_B] & B_BINARY != 0
    }

    fn encode(&self, v: u32) -> u8 {
        if self.binary() {
            v as u8
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> Option<u32> {
        if self.binary() {
            Some(u32::from(v))
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = if hour.is_multiple_of(12) {
                12
            } else {
                hour % 12
            };
            self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, v: u8) -> Option<u32> {
        if self.cmos[REG_B] & B_24H != 0 {
            self.decode(v)
        } else {
            let h12 = self.decode(v & 0x7F)?;
            if !(1..=12).contains(&h12) {
                return None;
            }
            Some(h12 % 12 + if v & 0x80 != 0 { 12 } else { 0 })
        }
    }

    /// Writes the current time into the time registers (when the clock runs).
    fn sync_registers(&mut self, now: u64) {
        if !self.running {
            return;
        }
        let t = DateTime::from_unix(self.time_ns(now) / NS_PER_SEC);
        self.cmos[SECONDS] = self.encode(t.second);
        self.cmos[MINUTES] = self.encode(t.minute);
        self.cmos[HOURS] = self.encode_hour(t.hour);
        self.cmos[DAY_OF_WEEK] = self.encode(t.weekday + 1);
        self.cmos[DAY_OF_MONTH] = self.encode(t.day);
        self.cmos[MONTH] = self.encode(t.month);
        self.cmos[YEAR] = self.encode((t.year.rem_euclid(100)) as u32);
        self.cmos[CENTURY] = self.encode((t.year / 100) as u32);
    }

    /// The time the registers hold, if they hold a valid date.
    fn registers_time(&self) -> Option<u64> {
        let century = self.decode(self.cmos[CENTURY])?;
        let year = self.decode(self.cmos[YEAR])?;
        let t = DateTime {
            year: i64::from(century) * 100 + i64::from(year),
            month: self.decode(self.cmos[MONTH])?,
            day: self.decode(self.cmos[DAY_OF_MONTH])?,
            hour: self.decode_hour(self.cmos[HOURS])?,
            minute: self.decode(self.cmos[MINUTES])?,
            second: self.decode(self.cmos[SECONDS])?,
            weekday: 0,
        };
        t.to_unix()
    }

    /// Restarts the clock from the registers, keeping `subsec_ns` of the current second.
    fn load_registers(&mut self, now: u64, subsec_ns: u64) {
        match self.registers_time() {
            Some(secs) => {
                self.time_at_anchor = secs.saturating_mul(NS_PER_SEC).saturating_add(subsec_ns);
                self.anchor_ns = now;
            }
            None => tracing::warn!(
                registers = ?&self.cmos[..10],
                "rtc: guest wrote an invalid date; time unchanged"
            ),
        }
    }

    fn restart_tracking(&mut self, now: u64) {
        self.periodic_tick = now_tick(now);
        self.update_second = self.time_ns(now) / NS_PER_SEC;
    }

    /// Follows a change of register A's divider or register B's SET bit.
    fn set_running(&mut self, now: u64, leaving_divider_reset: bool) {
        let run = self.should_run();
        if run == self.running {
            return;
        }
        if run {
            let subsec = if leaving_divider_reset {
                // The first update comes 500 ms after the divider leaves reset.
                NS_PER_SEC / 2
            } else {
                self.time_at_anchor % NS_PER_SEC
            };
            // Resume from the frozen time; valid registers then replace it.
            self.anchor_ns = now;
            self.running = true;
            self.load_registers(now, subsec);
        } else {
            self.sync_registers(now);
            self.time_at_anchor = self.time_ns(now);
            self.running = false;
        }
        self.restart_tracking(now);
    }

    fn periodic_period(&self) -> Option<u64> {
        if !self.divider_running() {
            return None;
        }
        match self.cmos[REG_A] & 0x0F {
            0 => None,
            1 => Some(128),
            2 => Some(256),
            r => Some(1 << (r - 1)),
        }
    }

    fn raise_flags(&mut self, flags: u8) {
        self.cmos[REG_C] |= flags;
        if self.cmos[REG_C] & self.cmos[REG_B] & (C_PF | C_AF | C_UF) != 0 {
            self.cmos[REG_C] |= C_IRQF;
            if !self.line {
                self.line = true;
                self.irq.set_level(true);
            }
        }
    }

    fn alarm_matches(&self, secs: u64) -> bool {
        let t = DateTime::from_unix(secs);
        let hit = |alarm: u8, value: u8| alarm & 0xC0 == 0xC0 || alarm == value;
        hit(self.cmos[SECONDS_ALARM], self.encode(t.second))
            && hit(self.cmos[MINUTES_ALARM], self.encode(t.minute))
            && hit(self.cmos[HOURS_ALARM], self.encode_hour(t.hour))
    }

    /// Sets the register C flags for everything that happened up to `now` (coalesced).
    fn update_flags(&mut self, now: u64) {
        let mut flags = 0;
        if let Some(period) = self.periodic_period() {
            let tick = now_tick(now);
            if tick / period > self.periodic_tick / period {
                flags |= C_PF;
            }
            self.periodic_tick = tick;
        }
        if self.running {
            let second = self.time_ns(now) / NS_PER_SEC;
            if second > self.update_second {
                flags |= C_UF;
                let first = (self.update_second + 1).max(second.saturating_sub(86_400));
                if (first..=second).any(|s| self.alarm_matches(s)) {
                    flags |= C_AF;
                }
            }
            self.update_second = second;
        }
        if flags != 0 {
            self.raise_flags(flags);
        }
    }

    fn next_deadline(&self, now: u64) -> Option<u64> {
        let b = self.cmos[REG_B];
        let periodic = if b & B_PIE != 0 {
            self.periodic_period().map(|period| {
                let next = (now_tick(now) / period + 1) * period;
                tick_to_ns(next)
            })
        } else {
            None
        };
        let update = if self.running && b & (B_UIE | B_AIE) != 0 {
            let t = self.time_ns(now);
            let to_next = NS_PER_SEC - t % NS_PER_SEC;
            Some(now.saturating_add(to_next))
        } else {
            None
        };
        match (periodic, update) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn read_data(&mut self) -> u8 {
        let now = self.now();
        let index = usize::from(self.index);
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                self.sync_registers(now);
                self.cmos[index]
            }
            REG_A => {
                let uip = self.running && self.time_ns(now) % NS_PER_SEC >= NS_PER_SEC - UIP_NS;
                self.cmos[REG_A] | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.update_flags(now);
                let value = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                if self.line {
                    self.line = false;
                    self.irq.set_level(false);
                }
                value
            }
            _ => self.cmos.get(index).copied().unwrap_or(0xFF),
        }
    }

    fn write_data(&mut self, value: u8) {
        let now = self.now();
        let index = usize::from(self.index);
        match index {
            SECONDS | MINUTES | HOURS | DAY_OF_WEEK | DAY_OF_MONTH | MONTH | YEAR | CENTURY => {
                if self.running {
                    self.update_flags(now);
                    self.sync_registers(now);
                    self.cmos[index] = value;
                    let subsec = self.time_ns(now) % NS_PER_SEC;
                    self.load_registers(now, subsec);
                    self.restart_tracking(now);
                } else {
                    self.cmos[index] = value;
                }
            }
            REG_A => {
                self.update_flags(now);
                let was_reset = !self.divider_running();
                let old_rate = self.cmos[REG_A] & 0x0F;
                self.cmos[REG_A] = value & 0x7F;
                if old_rate != value & 0x0F {
                    self.periodic_tick = now_tick(now);
                }
                self.set_running(now, was_reset && self.divider_running());
                self.waker.wake();
            }
            REG_B => {
                self.update_flags(now);
                let mut value = value;
                if value & B_SET != 0 {
                    value &= !B_UIE;
                }
                let old = self.cmos[REG_B];
                self.cmos[REG_B] = value;
                if (old ^ value) & (B_BINARY | B_24H) != 0 {
                    self.sync_registers(now);
                }
                self.set_running(now, false);
                // An enabled flag that is already set raises the interrupt now.
                self.raise_flags(0);
                self.waker.wake();
            }
            REG_C | REG_D => {
                tracing::debug!(index, value, "rtc: write to read-only register ignored");
            }
            _ => {
                if let Some(b) = self.cmos.get_mut(index) {
                    *b = value;
                }
            }
        }
    }
}

fn now_tick(now: u64) -> u64 {
    (u128::from(now) * u128::from(RTC_HZ) / u128::from(NS_PER_SEC)) as u64
}

fn tick_to_ns(tick: u64) -> u64 {
    let ns = (u128::from(tick) * u128::from(NS_PER_SEC)).div_ceil(u128::from(RTC_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

impl Device for Rtc {
    fn name(&self) -> &str {
        "rtc"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn poll(&mut self) -> Option<&mut dyn Poll> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.cmos[REG_B] &= !(B_PIE | B_AIE | B_UIE | B_SQWE);
        self.cmos[REG_C] = 0;
        if self.line {
            self.line = false;
            self.irq.set_level(false);
        }
        self.waker.wake();
    }
}

impl Poll for Rtc {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        let now = now_ns.saturating_add(self.offset_ns);
        self.update_flags(now);
        self.next_deadline(now)
            .map(|deadline| deadline.saturating_sub(self.offset_ns))
    }
}

/// Saved state of the RTC (separate from the runtime type). The RTC's own time is saved as it
/// reads now; the periodic interrupt's progress relative to the clock.
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`RtcStateV1`].
    pub const VERSION: u32 = 1;

    /// The RTC's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RtcStateV1 {
        /// The 128 bytes of CMOS RAM, registers 0x00-0x0D included.
        pub cmos: Vec<u8>,
        /// Index register (0..128).
        pub index: u8,
        /// NMI mask bit of the index port.
        pub nmi_masked: bool,
        /// The RTC's time at the save, in nanoseconds since the Unix epoch.
        pub time_ns: u64,
        /// The time advances (divider running and SET clear).
        pub running: bool,
        /// 32.768 kHz ticks since the periodic interrupt was last examined, capped at the
        /// start of the previous 0.5 s (beyond that every rate has had its edge).
        pub periodic_ticks_since: u64,
        /// RTC second last examined for update-ended and alarm interrupts.
        pub update_second: u64,
        /// Time within a second at the save: the phase of the periodic interrupt.
        pub clock_phase_ns: u64,
    }
}

/// Ticks after which every periodic rate (all powers of two up to 2 Hz) is back in phase.
const PERIODIC_CYCLE_TICKS: u64 = RTC_HZ / 2;

impl SaveRestore for Rtc {
    fn save(&mut self) -> SavedState {
        let now = self.now();
        let tick = now_tick(now);
        // Any earlier tick than the start of the previous cycle behaves the same way.
        let cycle_start = tick - tick % PERIODIC_CYCLE_TICKS;
        let periodic_tick = self.periodic_tick.max(cycle_start.saturating_sub(1));
        let state = save::RtcStateV1 {
            cmos: self.cmos.to_vec(),
            index: self.index,
            nmi_masked: self.nmi_masked,
            time_ns: self.time_ns(now),
            running: self.running,
            periodic_ticks_since: tick.saturating_sub(periodic_tick),
            update_second: self.update_second,
            clock_phase_ns: now % NS_PER_SEC,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores registers, CMOS RAM and time, drives IRQ8 to match register C's IRQF and
    /// wakes the timer loop.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let dev = "rtc";
        let s: save::RtcStateV1 = crate::saved_state::decode(state, dev, save::VERSION)?;
        let cmos: [u8; 128] = match s.cmos.as_slice().try_into() {
            Ok(cmos) => cmos,
            Err(_) => {
                return Err(RestoreError::Corrupt {
                    device: dev.to_string(),
                    reason: format!("{} bytes of CMOS RAM (expected 128)", s.cmos.len()),
                })
            }
        };
        ensure(
            s.index < 128,
            dev,
            format!("index register {:#04x}", s.index),
        )?;
        ensure(
            cmos[REG_A] & A_UIP == 0 && cmos[REG_C] & 0x0F == 0,
            dev,
            format!(
                "register A {:#04x} or C {:#04x} holds bits that are never stored",
                cmos[REG_A], cmos[REG_C]
            ),
        )?;
        ensure(
            s.clock_phase_ns < NS_PER_SEC,
            dev,
            format!("clock phase {} ns", s.clock_phase_ns),
        )?;
        let phase_tick = now_tick(s.clock_phase_ns) % PERIODIC_CYCLE_TICKS;
        ensure(
            s.periodic_ticks_since <= phase_tick + 1,
            dev,
            format!("{} ticks since the periodic check", s.periodic_ticks_since),
        )?;
        ensure(
            s.update_second <= s.time_ns / NS_PER_SEC,
            dev,
            format!(
                "update second {} is after the time {} s",
                s.update_second,
                s.time_ns / NS_PER_SEC
            ),
        )?;
        // A second or more ahead of the clock, so the periodic tick never goes below zero.
        let clock_now = self.clock.now_ns();
        let offset =
            NS_PER_SEC + (s.clock_phase_ns + NS_PER_SEC - clock_now % NS_PER_SEC) % NS_PER_SEC;
        let now = clock_now.saturating_add(offset);
        let restored = Rtc {
            clock: self.clock.clone(),
            irq: self.irq.clone(),
            waker: self.waker.clone(),
            cmos,
            index: s.index,
            nmi_masked: s.nmi_masked,
            time_at_anchor: s.time_ns,
            anchor_ns: now,
            running: s.running,
            periodic_tick: now_tick(now).saturating_sub(s.periodic_ticks_since),
            update_second: s.update_second,
            line: cmos[REG_C] & C_IRQF != 0,
            offset_ns: offset,
        };
        ensure(
            restored.running == restored.should_run(),
            dev,
            "running state disagrees with registers A and B",
        )?;
        restored.irq.set_level(restored.line);
        restored.waker.wake();
        *self = restored;
        Ok(())
    }
}

impl PortIo for Rtc {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match port.wrapping_add(i as u16) {
                0x71 => self.read_data(),
                // The index register is write-only.
                0x70 => 0xFF,
                p => {
                    tracing::warn!(port = p, "rtc: read of unowned port");
                    0xFF
                }
            };
        }
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            match port.wrapping_add(i as u16) {
                0x70 => {
                    self.index = byte & 0x7F;
                    self.nmi_masked = byte & 0x80 != 0;
                }
                0x71 => self.write_data(*byte),
                p => tracing::warn!(port = p, "rtc: write to unowned port"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::RecordingSink;
    use crate::ManualClock;

    /// 2024-02-29 23:59:58 UTC, a Thursday.
    const START: u64 = 1_709_251_198;

    struct Rig {
        clock: ManualClock,
        sink: Arc<RecordingSink>,
        rtc: Rtc,
    }

    fn rig() -> Rig {
        let clock = ManualClock::new();
        let sink = Arc::new(RecordingSink::default());
        let rtc = Rtc::new(
            Arc::new(clock.clone()),
            IrqLine::new(sink.clone(), 8),
            TimerWaker::noop(),
            START,
        );
        Rig { clock, sink, rtc }
    }

    impl Rig {
        fn read(&mut self, index: u8) -> u8 {
            self.rtc.io_write(0x70, &[index]);
            let mut b = [0];
            self.rtc.io_read(0x71, &mut b);
            b[0]
        }
        fn write(&mut self, index: u8, value: u8) {
            self.rtc.io_write(0x70, &[index]);
            self.rtc.io_write(0x71, &[value]);
        }
        fn poll(&mut self, now: u64) -> Option<u64> {
            Poll::poll(&mut self.rtc, now)
        }
    }

    #[test]
    fn calendar_round_trip() {
        for secs in [0u64, 951_782_400, START, 4_102_444_800, 4_107_542_399] {
            let t = DateTime::from_unix(secs);
            assert_eq!(t.to_unix(), Some(secs));
        }
        let t = DateTime::from_unix(START);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2024, 2, 29, 23, 59, 58)
        );
        assert_eq!(t.weekday, 4);
    }

    #[test]
    fn bcd_and_binary_time() {
        let mut r = rig();
        assert_eq!(r.read(0x0A), 0x26);
        assert_eq!(r.read(0x0B), 0x02);
        assert_eq!(r.read(0x0D), 0x80);
        assert_eq!(r.read(0x00), 0x58);
        assert_eq!(r.read(0x02), 0x59);
        assert_eq!(r.read(0x04), 0x23);
        assert_eq!(r.read(0x06), 0x05); // Thursday
        assert_eq!(r.read(0x07), 0x29);
        assert_eq!(r.read(0x08), 0x02);
        assert_eq!(r.read(0x09), 0x24);
        assert_eq!(r.read(0x32), 0x20);
        // Three seconds later it is March 1st.
        r.clock.advance(3 * NS_PER_SEC);
        assert_eq!(r.read(0x00), 0x01);
        assert_eq!(r.read(0x07), 0x01);
        assert_eq!(r.read(0x08), 0x03);
        // Binary, 12-hour mode.
        r.write(0x0B, 0x04);
        assert_eq!(r.read(0x00), 1);
        assert_eq!(r.read(0x04), 12); // midnight is 12 AM
        assert_eq!(r.read(0x09), 24);
        assert_eq!(r.read(0x32), 20);
        // Set the time to 15:30:00 (binary, 24h) with SET.
        r.write(0x0B, 0x86);
        r.write(0x04, 15);
        r.write(0x02, 30);
        r.write(0x00, 0);
        r.clock.advance(5 * NS_PER_SEC);
        assert_eq!(r.read(0x00), 0); // frozen while SET
        r.write(0x0B, 0x06);
        r.clock.advance(2 * NS_PER_SEC);
        assert_eq!(r.read(0x00), 2);
        assert_eq!(r.read(0x04), 15);
        r.write(0x0B, 0x04); // 12-hour: 3 PM
        assert_eq!(r.read(0x04), 0x83);
    }

    #[test]
    fn update_in_progress_window() {
        let mut r = rig();
        assert_eq!(r.read(0x0A) & 0x80, 0);
        r.clock.set(NS_PER_SEC - UIP_NS - 1);
        assert_eq!(r.read(0x0A) & 0x80, 0);
        r.clock.set(NS_PER_SEC - UIP_NS);
        assert_eq!(r.read(0x0A), 0xA6);
        r.clock.set(NS_PER_SEC);
        assert_eq!(r.read(0x0A), 0x26);
        // Divider in reset: no updates, no UIP.
        r.write(0x0A, 0x66);
        r.clock.set(2 * NS_PER_SEC - 1000);
        assert_eq!(r.read(0x0A), 0x66);
    }

    #[test]
    fn register_c_clears_on_read() {
        let mut r = rig();
        r.write(0x0B, 0x02 | B_UIE);
        r.clock.advance(NS_PER_SEC);
        r.poll(r.clock.now_ns());
        assert!(r.sink.level(8));
        // PF is set too: the periodic flag runs whether or not PIE is set.
        assert_eq!(r.read(0x0C), 0xD0);
        assert!(!r.sink.level(8));
        assert_eq!(r.read(0x0C), 0x00);
        // Flags without their enable set no IRQF.
        r.write(0x0B, 0x02);
        r.clock.advance(NS_PER_SEC);
        // Midnight also matches the all-zero alarm registers.
        assert_eq!(r.read(0x0C), C_PF | C_AF | C_UF);
        assert!(!r.sink.level(8));
    }

    #[test]
    fn periodic_rate_1024hz() {
        let mut r = rig();
        r.write(0x0B, 0x02 | B_PIE);
        r.sink.take_changes();
        let mut now = 0;
        let mut deadline = r.poll(now).unwrap();
        // Simulate a guest that reads C on every interrupt for 1 s.
        while deadline <= NS_PER_SEC {
            now = deadline;
            r.clock.set(now);
            deadline = r.poll(now).unwrap();
            if r.sink.level(8) {
                assert_eq!(r.read(0x0C) & 0xC0, 0xC0);
            }
        }
        let rises = r
            .sink
            .take_changes()
            .iter()
            .filter(|(l, v)| *l == 8 && *v)
            .count();
        assert_eq!(rises, 1024);
        // Rate 15 is 2 Hz.
        r.write(0x0A, 0x2F);
        r.sink.take_changes();
        let start = r.clock.now_ns();
        let mut deadline = r.poll(start).unwrap();
        while deadline <= start + NS_PER_SEC {
            r.clock.set(deadline);
            deadline = r.poll(deadline).unwrap();
            r.read(0x0C);
        }
        let rises = r.sink.take_changes().iter().filter(|(_, v)| *v).count();
        assert_eq!(rises, 2);
    }

    #[test]
    fn periodic_late_poll_is_one_interrupt() {
        let mut r = rig();
        r.write(0x0B, 0x02 | B_PIE);
        r.clock.set(NS_PER_SEC);
        r.poll(NS_PER_SEC);
        assert_eq!(r.sink.take_changes(), vec![(8, true)]);
    }

    #[test]
    fn alarm_interrupt() {
        let mut r = rig();
        // Alarm at hh:00:00 any hour (BCD).
        r.write(0x01, 0x00);
        r.write(0x03, 0x00);
        r.write(0x05, 0xC0);
        r.write(0x0B, 0x02 | B_AIE);
        let d = r.poll(0).unwrap();
        assert_eq!(d, NS_PER_SEC);
        r.poll(d);
        assert!(!r.sink.level(8));
        r.poll(2 * NS_PER_SEC);
        assert!(r.sink.level(8));
        assert_eq!(r.read(0x0C), 0xF0);
    }

    #[test]
    fn divider_reset_and_invalid_dates() {
        let mut r = rig();
        r.write(0x0A, 0x76); // divider in reset: time stops
        r.clock.advance(10 * NS_PER_SEC);
        assert_eq!(r.read(0x00), 0x58);
        r.write(0x00, 0x10);
        r.write(0x0A, 0x26); // first update 500 ms later
        r.clock.advance(NS_PER_SEC / 2 - 1);
        assert_eq!(r.read(0x00), 0x10);
        r.clock.advance(1);
        assert_eq!(r.read(0x00), 0x11);
        // An invalid BCD value leaves the clock where it was.
        r.write(0x00, 0x7A);
        assert_eq!(r.rtc.unix_time(), START - 47);
        assert_eq!(r.read(0x00), 0x11);
        // Same while SET is held: the invalid date is refused when SET clears.
        r.write(0x0B, 0x82);
        r.write(0x08, 0x13);
        r.clock.advance(5 * NS_PER_SEC);
        r.write(0x0B, 0x02);
        assert_eq!(r.rtc.unix_time(), START - 47);
        r.clock.advance(NS_PER_SEC);
        assert_eq!(r.rtc.unix_time(), START - 46);
    }

    #[test]
    fn reset_clears_interrupt_enables() {
        let mut r = rig();
        r.write(0x0B, 0x02 | B_PIE);
        r.clock.advance(NS_PER_SEC);
        r.poll(NS_PER_SEC);
        assert!(r.sink.level(8));
        Device::reset(&mut r.rtc);
        assert!(!r.sink.level(8));
        assert_eq!(r.read(0x0B), 0x02);
        assert_eq!(r.read(0x0C), 0x00);
        assert_eq!(r.poll(2 * NS_PER_SEC), None);
    }

    #[test]
    fn shutdown_byte_and_nmi_mask() {
        let mut r = rig();
        r.write(0x8F, 0x0A);
        assert!(r.rtc.nmi_masked());
        assert_eq!(r.read(0x0F), 0x0A);
        assert!(!r.rtc.nmi_masked());
        let mut b = [0];
        r.rtc.io_read(0x70, &mut b);
        assert_eq!(b[0], 0xFF);
    }

    #[test]
    fn pc_layout_128mib() {
        let mut r = rig();
        r.rtc.apply_pc_config(&PcCmosConfig {
            ram_below_4g: 128 << 20,
            ram_above_4g: 0,
            cpus: 2,
            boot_order: vec![BootDevice::Cdrom, BootDevice::Disk, BootDevice::Floppy],
            floppies: [FloppyType::M1_44, FloppyType::None],
        });
        let c = |i: u8| r.rtc.cmos(usize::from(i));
        assert_eq!((c(0x15), c(0x16)), (0x80, 0x02));
        // 127 MiB above 1 MiB = 130048 KiB, capped to 0xFFFF.
        assert_eq!((c(0x17), c(0x18)), (0xFF, 0xFF));
        assert_eq!((c(0x30), c(0x31)), (0xFF, 0xFF));
        // (128 - 16) MiB / 64 KiB = 1792 = 0x0700.
        assert_eq!((c(0x34), c(0x35)), (0x00, 0x07));
        assert_eq!((c(0x5B), c(0x5C), c(0x5D)), (0, 0, 0));
        assert_eq!(c(0x5F), 1);
        assert_eq!(c(0x3D), 0x23);
        assert_eq!(c(0x38), 0x10);
        assert_eq!(c(0x10), 0x40);
        assert_eq!(c(0x14), 0x07);
        let sum: u16 = (0x10..=0x2D).map(|i| u16::from(c(i))).sum();
        assert_eq!(u16::from(c(0x2E)) << 8 | u16::from(c(0x2F)), sum);
        assert_eq!(r.read(0x32), 0x20);
    }

    #[test]
    fn pc_layout_5gib() {
        let mut r = rig();
        let below = 0xE000_0000u64; // 3.5 GiB below 4 GiB, 1.5 GiB above
        r.rtc.apply_pc_config(&PcCmosConfig {
            ram_below_4g: below,
            ram_above_4g: (5 << 30) - below,
            cpus: 1,
            boot_order: vec![BootDevice::Disk],
            floppies: [FloppyType::None; 2],
        });
        let c = |i: u8| r.rtc.cmos(usize::from(i));
        assert_eq!((c(0x30), c(0x31)), (0xFF, 0xFF));
        // (3.5 GiB - 16 MiB) / 64 KiB = 57088 = 0xDF00.
        assert_eq!((c(0x34), c(0x35)), (0x00, 0xDF));
        // 1.5 GiB / 64 KiB = 24576 = 0x006000.
        assert_eq!((c(0x5B), c(0x5C), c(0x5D)), (0x00, 0x60, 0x00));
        assert_eq!(c(0x5F), 0);
        assert_eq!((c(0x3D), c(0x38)), (0x02, 0x00));
        assert_eq!((c(0x10), c(0x14)), (0x00, 0x06));
    }

    #[test]
    fn small_memory_extended_bytes() {
        let mut cmos = [0u8; 128];
        PcCmosConfig {
            ram_below_4g: 8 << 20,
            ram_above_4g: 0,
            cpus: 1,
            boot_order: vec![],
            floppies: [FloppyType::None; 2],
        }
        .write_to(&mut cmos);
        // 7 MiB = 7168 KiB = 0x1C00; nothing above 16 MiB.
        assert_eq!((cmos[0x17], cmos[0x18]), (0x00, 0x1C));
        assert_eq!((cmos[0x34], cmos[0x35]), (0, 0));
    }

    fn rig_at(ns: u64, start: u64) -> Rig {
        let clock = ManualClock::new();
        clock.set(ns);
        let sink = Arc::new(RecordingSink::default());
        let rtc = Rtc::new(
            Arc::new(clock.clone()),
            IrqLine::new(sink.clone(), 8),
            TimerWaker::noop(),
            start,
        );
        Rig { clock, sink, rtc }
    }

    /// Every CMOS byte as the guest reads it (register C last: reading it clears it).
    fn reads(r: &mut Rig) -> Vec<u8> {
        let mut v: Vec<u8> = (0..128u8)
            .filter(|&i| i != 0x0C)
            .map(|i| r.read(i))
            .collect();
        v.push(r.read(0x0C));
        v
    }

    fn programmed() -> Rig {
        let mut r = rig_at(3_250_000_123, START);
        for i in 0x40..0x50 {
            r.write(i, i * 3);
        }
        r.write(0x0F, 0x0A);
        // Alarm at hh:00:00, any hour (BCD).
        r.write(0x01, 0x00);
        r.write(0x03, 0x00);
        r.write(0x05, 0xC0);
        r.write(0x0A, 0x2A); // 64 Hz periodic rate
        r.write(0x0B, 0x02 | B_PIE | B_AIE);
        r.clock.advance(300_000_000);
        r.poll(r.clock.now_ns());
        r.clock.advance(4_000_000);
        r.rtc.io_write(0x70, &[0x80 | 0x10]); // NMI masked, index 0x10
        r
    }

    #[test]
    fn save_restore_round_trip() {
        let mut a = programmed();
        assert!(a.sink.level(8));
        let saved = a.rtc.save();
        assert_eq!(saved.device, "rtc");
        // Another process, another clock origin and another wall-clock time at start-up.
        let mut b = rig_at(17, START + 86_400 * 40);
        b.rtc.restore(&saved).unwrap();
        assert_eq!(b.rtc.save(), saved);
        assert!(b.sink.level(8), "IRQ8 follows the restored IRQF");
        assert!(b.rtc.nmi_masked());
        assert_eq!(b.rtc.unix_time(), a.rtc.unix_time());
        let mut data = [0u8];
        b.rtc.io_read(0x71, &mut data);
        assert_eq!(data[0], a.rtc.cmos(0x10), "the index register survived");
        assert_eq!(reads(&mut b), reads(&mut a));
        assert_eq!(b.sink.level(8), a.sink.level(8));
        // Time, periodic, update and alarm interrupts continue identically.
        a.sink.take_changes();
        b.sink.take_changes();
        let mut rises = 0;
        for step in [
            1u64,
            30_517,
            7_812_499,
            7_812_501,
            333_333_333,
            1_000_000_000,
            999,
        ] {
            a.clock.advance(step);
            b.clock.advance(step);
            let da = a.poll(a.clock.now_ns()).map(|d| d - a.clock.now_ns());
            let db = b.poll(b.clock.now_ns()).map(|d| d - b.clock.now_ns());
            assert_eq!(db, da, "deadline after {step}");
            let changes = a.sink.take_changes();
            rises += changes.iter().filter(|(_, l)| *l).count();
            assert_eq!(b.sink.take_changes(), changes, "IRQ8 after {step}");
            assert_eq!(b.read(0x0C), a.read(0x0C), "register C after {step}");
            for i in [0x00, 0x02, 0x04, 0x07, 0x08, 0x0A] {
                assert_eq!(b.read(i), a.read(i), "register {i:#x} after {step}");
            }
        }
        assert!(rises >= 3, "{rises}");
        assert_eq!(b.rtc.save(), a.rtc.save());
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = programmed();
        let saved = a.rtc.save();
        let mut b = rig();
        b.write(0x20, 0x77);
        check_refusals(&mut b.rtc, &saved);
        let bad = edited(&saved, |s: &mut save::RtcStateV1| {
            s.cmos.pop();
        });
        check_corrupt(&mut b.rtc, &bad);
        let bad = edited(&saved, |s: &mut save::RtcStateV1| s.index = 0x80);
        check_corrupt(&mut b.rtc, &bad);
        // Running with the divider held in reset.
        let bad = edited(&saved, |s: &mut save::RtcStateV1| s.cmos[REG_A] = 0x76);
        check_corrupt(&mut b.rtc, &bad);
        let bad = edited(&saved, |s: &mut save::RtcStateV1| {
            s.update_second = u64::MAX
        });
        check_corrupt(&mut b.rtc, &bad);
        let bad = edited(&saved, |s: &mut save::RtcStateV1| {
            s.periodic_ticks_since = 1 << 20
        });
        check_corrupt(&mut b.rtc, &bad);
        assert_eq!(b.read(0x20), 0x77, "still works");
        assert_eq!(b.read(0x00), 0x58);
    }
}
