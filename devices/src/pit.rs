//! Intel 8254 programmable interval timer (ports 0x40-0x43) and the PC's port 0x61
//! (channel 2 gate, speaker data, refresh toggle, channel 2 output).
//!
//! Counters are not ticked: each channel remembers when it was loaded and computes its count
//! and output from a [`Clock`] at 1.193182 MHz. Channel 0's output drives IRQ0 through
//! [`Poll`]: each poll delivers at most one rising edge, however many periods were missed.

use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Clock, Device, IrqLine, Poll, PortIo, TimerWaker};
use std::sync::Arc;

/// Input clock of every channel, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Port ranges the PIT answers: `(first port, count)`.
pub const PIT_PORT_RANGES: [(u16, u16); 2] = [(0x40, 4), (0x61, 1)];

fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / 1_000_000_000) as u64
}

/// Nanoseconds until `ticks` have certainly elapsed (rounded up).
fn ticks_to_ns(ticks: u64) -> u64 {
    let ns = (u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(PIT_HZ));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

fn bcd_to_bin(v: u16) -> u32 {
    (0..4)
        .rev()
        .fold(0, |acc, i| acc * 10 + u32::from((v >> (i * 4)) & 0xF))
}

fn bin_to_bcd(v: u32) -> u16 {
    (0..4).fold(0, |acc, i| {
        acc | (((v / 10u32.pow(i)) % 10) as u16) << (i * 4)
    })
}

/// Which bytes of the count a channel reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Low,
    High,
    LowHigh,
}

impl Access {
    fn bits(self) -> u8 {
        match self {
            Access::Low => 1,
            Access::High => 2,
            Access::LowHigh => 3,
        }
    }
}

#[derive(Debug, Clone)]
struct Channel {
    /// Mode as programmed (0-7; 6 and 7 behave as 2 and 3).
    raw_mode: u8,
    bcd: bool,
    access: Access,
    /// Count in input clocks (1..=0x10000, or 1..=10000 in BCD).
    reload: u64,
    /// A count has been written since the control word.
    loaded: bool,
    null_count: bool,
    gate: bool,
    /// Modes 1 and 5: a gate edge started the count.
    triggered: bool,
    /// Elapsed clocks accumulated before `start_ns`.
    base_ticks: u64,
    start_ns: u64,
    running: bool,
    write_low: Option<u8>,
    read_high_next: bool,
    count_latch: Option<u16>,
    latch_high_next: bool,
    status_latch: Option<u8>,
    /// Elapsed clocks at the last poll (channel 0 edge detection).
    polled_ticks: u64,
}

impl Channel {
    fn new(gate: bool, now: u64) -> Self {
        let mut c = Self {
            raw_mode: 3,
            bcd: false,
            access: Access::LowHigh,
            reload: 0x10000,
            loaded: true,
            null_count: false,
            gate,
            triggered: false,
            base_ticks: 0,
            start_ns: now,
            running: false,
            write_low: None,
            read_high_next: false,
            count_latch: None,
            latch_high_next: false,
            status_latch: None,
            polled_ticks: 0,
        };
        c.sync_running(now);
        c
    }

    fn mode(&self) -> u8 {
        match self.raw_mode {
            6 => 2,
            7 => 3,
            m => m,
        }
    }

    fn elapsed(&self, now: u64) -> u64 {
        if self.running {
            // The input clock is free-running: count its edges between the two instants.
            self.base_ticks + ns_to_ticks(now).saturating_sub(ns_to_ticks(self.start_ns))
        } else {
            self.base_ticks
        }
    }

    fn counting_enabled(&self) -> bool {
        self.loaded
            && match self.mode() {
                1 | 5 => self.triggered,
                _ => self.gate,
            }
    }

    /// Pauses or resumes the elapsed-clock count to match the gate and load state.
    fn sync_running(&mut self, now: u64) {
        let enabled = self.counting_enabled();
        if enabled && !self.running {
            self.start_ns = now;
            self.running = true;
        } else if !enabled && self.running {
            self.base_ticks = self.elapsed(now);
            self.running = false;
        }
    }

    fn restart(&mut self, now: u64) {
        self.base_ticks = 0;
        self.start_ns = now;
        self.polled_ticks = 0;
        self.running = false;
        self.sync_running(now);
    }

    fn period(&self) -> u64 {
        match self.mode() {
            2 | 3 => self.reload.max(2),
            _ => self.reload,
        }
    }

    fn output(&self, now: u64) -> bool {
        if !self.loaded {
            return self.mode() != 0;
        }
        let n = self.period();
        let d = self.elapsed(now);
        match self.mode() {
            0 => d >= n,
            1 => !self.triggered || d >= n,
            2 => !self.gate || d % n != n - 1,
            3 => !self.gate || d % n < n.div_ceil(2),
            4 => d != n,
            _ => !self.triggered || d != n,
        }
    }

    /// Elapsed-clock value of the first rising edge of the output after `d`.
    fn next_rising(&self, d: u64) -> Option<u64> {
        if !self.running {
            return None;
        }
        let n = self.period();
        match self.mode() {
            0 | 1 => (d < n).then_some(n),
            2 | 3 => Some((d / n + 1) * n),
            _ => (d <= n).then_some(n + 1),
        }
    }

    fn count(&self, now: u64) -> u16 {
        let modulus: u64 = if self.bcd { 10_000 } else { 0x10000 };
        let n = self.period();
        let value = if !self.loaded {
            self.reload
        } else {
            let d = self.elapsed(now);
            match self.mode() {
                2 => n - d % n,
                3 => n - (2 * (d % n)) % n,
                _ => (n + modulus - d % modulus) % modulus,
            }
        } % modulus;
        if self.bcd {
            bin_to_bcd(value as u32)
        } else {
            value as u16
        }
    }

    fn status(&self, now: u64) -> u8 {
        u8::from(self.output(now)) << 7
            | u8::from(self.null_count) << 6
            | self.access.bits() << 4
            | (self.raw_mode & 7) << 1
            | u8::from(self.bcd)
    }

    fn latch_count(&mut self, now: u64) {
        if self.count_latch.is_none() {
            self.count_latch = Some(self.count(now));
            self.latch_high_next = false;
        }
    }

    fn latch_status(&mut self, now: u64) {
        if self.status_latch.is_none() {
            self.status_latch = Some(self.status(now));
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(status) = self.status_latch.take() {
            return status;
        }
        if let Some(latched) = self.count_latch {
            let [lo, hi] = latched.to_le_bytes();
            return match self.access {
                Access::Low => {
                    self.count_latch = None;
                    lo
                }
                Access::High => {
                    self.count_latch = None;
                    hi
                }
                Access::LowHigh if !self.latch_high_next => {
                    self.latch_high_next = true;
                    lo
                }
                Access::LowHigh => {
                    self.count_latch = None;
                    self.latch_high_next = false;
                    hi
                }
            };
        }
        let [lo, hi] = self.count(now).to_le_bytes();
        match self.access {
            Access::Low => lo,
            Access::High => hi,
            Access::LowHigh => {
                self.read_high_next = !self.read_high_next;
                if self.read_high_next {
                    lo
                } else {
                    hi
                }
            }
        }
    }

    /// Returns true when a full count was loaded.
    fn write(&mut self, value: u8, now: u64) -> bool {
        let raw = match self.access {
            Access::Low => u16::from(value),
            Access::High => u16::from(value) << 8,
            Access::LowHigh => match self.write_low.take() {
                None => {
                    self.write_low = Some(value);
                    return false;
                }
                Some(low) => u16::from_le_bytes([low, value]),
            },
        };
        self.reload = match (raw, self.bcd) {
            (0, false) => 0x10000,
            (0, true) => 10_000,
            (v, false) => u64::from(v),
            (v, true) => u64::from(bcd_to_bin(v)).max(1),
        };
        self.loaded = true;
        self.null_count = false;
        if matches!(self.mode(), 1 | 5) {
            self.triggered = false;
        }
        self.restart(now);
        true
    }

    fn control(&mut self, value: u8, now: u64) {
        self.access = match (value >> 4) & 3 {
            1 => Access::Low,
            2 => Access::High,
            _ => Access::LowHigh,
        };
        self.raw_mode = (value >> 1) & 7;
        self.bcd = value & 1 != 0;
        self.loaded = false;
        self.null_count = true;
        self.triggered = false;
        self.write_low = None;
        self.read_high_next = false;
        self.count_latch = None;
        self.status_latch = None;
        self.restart(now);
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate && !self.gate {
            match self.mode() {
                1 | 5 => {
                    self.triggered = true;
                    self.restart_keep_gate(now, gate);
                    return;
                }
                2 | 3 => {
                    self.restart_keep_gate(now, gate);
                    return;
                }
                _ => {}
            }
        }
        self.gate = gate;
        self.sync_running(now);
    }

    fn restart_keep_gate(&mut self, now: u64, gate: bool) {
        self.gate = gate;
        self.restart(now);
    }
}

/// The 8254 with the PC's port 0x61.
pub struct Pit {
    clock: Arc<dyn Clock>,
    irq0: IrqLine,
    waker: TimerWaker,
    channels: [Channel; 3],
    /// Level last driven on IRQ0.
    line: bool,
    /// Port 0x61 bits 0-3 as written.
    port61: u8,
    /// Added to the clock's time to get the time the channels count in. Zero until a
    /// restore, which sets it so that the input clock (and the refresh toggle) keep the
    /// phase they had when the state was saved.
    offset_ns: u64,
}

impl std::fmt::Debug for Pit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pit")
            .field("channels", &self.channels)
            .field("port61", &self.port61)
            .finish()
    }
}

impl Pit {
    /// A PIT in its reset state (channels 0 and 1 counting in mode 3 from 0x10000, channel 2
    /// gated off). `irq0` is channel 0's output; `waker` is woken when the guest reprograms
    /// channel 0.
    pub fn new(clock: Arc<dyn Clock>, irq0: IrqLine, waker: TimerWaker) -> Self {
        let now = clock.now_ns();
        Self {
            clock,
            irq0,
            waker,
            channels: [
                Channel::new(true, now),
                Channel::new(true, now),
                Channel::new(false, now),
            ],
            line: false,
            port61: 0,
            offset_ns: 0,
        }
    }

    /// The time the channels count in (the clock's time plus the restore offset).
    fn now(&self) -> u64 {
        self.clock.now_ns().saturating_add(self.offset_ns)
    }

    /// Output of `channel` (0..3) now; `false` for a nonexistent channel.
    pub fn output(&self, channel: usize) -> bool {
        let now = self.now();
        self.channels.get(channel).is_some_and(|c| c.output(now))
    }

    fn read_port(&mut self, port: u16) -> u8 {
        let now = self.now();
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(now),
            0x43 => 0xFF, // the control word register is write-only
            0x61 => {
                let refresh = ((now / 15_085) & 1) as u8;
                (self.port61 & 0x0F) | refresh << 4 | u8::from(self.channels[2].output(now)) << 5
            }
            _ => {
                tracing::warn!(port, "pit: read of unowned port");
                0xFF
            }
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        let now = self.now();
        match port {
            0x40..=0x42 => {
                let index = usize::from(port - 0x40);
                if self.channels[index].write(value, now) && index == 0 {
                    self.waker.wake();
                }
            }
            0x43 => {
                let select = value >> 6;
                if select == 3 {
                    for (i, c) in self.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        if value & 0x20 == 0 {
                            c.latch_count(now);
                        }
                        if value & 0x10 == 0 {
                            c.latch_status(now);
                        }
                    }
                } else {
                    let c = &mut self.channels[usize::from(select)];
                    if value & 0x30 == 0 {
                        c.latch_count(now);
                    } else {
                        c.control(value, now);
                        if select == 0 {
                            self.waker.wake();
                        }
                    }
                }
            }
            0x61 => {
                self.port61 = value & 0x0F;
                self.channels[2].set_gate(value & 1 != 0, now);
            }
            _ => tracing::warn!(port, value, "pit: write to unowned port"),
        }
    }
}

impl Device for Pit {
    fn name(&self) -> &str {
        "pit"
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
        let now = self.now();
        self.channels = [
            Channel::new(true, now),
            Channel::new(true, now),
            Channel::new(false, now),
        ];
        self.port61 = 0;
        self.waker.wake();
    }
}

impl Poll for Pit {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        let offset = self.offset_ns;
        let now_ns = now_ns.saturating_add(offset);
        let c = &mut self.channels[0];
        let d = c.elapsed(now_ns);
        let edge = c.next_rising(c.polled_ticks).is_some_and(|t| t <= d);
        c.polled_ticks = d;
        let out = c.output(now_ns);
        if edge {
            // One edge per poll: missed periods are coalesced.
            if self.line {
                self.irq0.set_level(false);
            }
            self.irq0.set_level(true);
            if !out {
                self.irq0.set_level(false);
            }
            self.line = out;
        } else if out != self.line {
            self.irq0.set_level(out);
            self.line = out;
        }
        let next = c.next_rising(d)?;
        let start = ns_to_ticks(c.start_ns);
        let deadline = ticks_to_ns(start.saturating_add(next.saturating_sub(c.base_ticks)));
        Some(deadline.saturating_sub(offset))
    }
}

/// Saved state of the PIT (separate from the runtime types). Times are relative: each channel
/// saves the input clocks it has counted, and the PIT the phase of its input clock.
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`PitStateV1`].
    pub const VERSION: u32 = 1;

    /// One channel's saved state.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ChannelStateV1 {
        /// Mode as programmed (0-7).
        pub mode: u8,
        /// BCD counting.
        pub bcd: bool,
        /// Access bits of the control word: 1 low byte, 2 high byte, 3 low then high.
        pub access: u8,
        /// Count in input clocks (1..=0x10000, or 1..=10000 in BCD).
        pub reload: u32,
        /// A count has been written since the control word.
        pub loaded: bool,
        /// Null count status bit.
        pub null_count: bool,
        /// Gate input.
        pub gate: bool,
        /// Modes 1 and 5: a gate edge started the count.
        pub triggered: bool,
        /// Input clocks counted since the count was loaded (or the trigger).
        pub elapsed_ticks: u64,
        /// The channel is counting.
        pub running: bool,
        /// Low byte of a low-then-high count write in progress.
        pub write_low: Option<u8>,
        /// Unlatched low-then-high reads: the next read returns the high byte.
        pub read_high_next: bool,
        /// Latched count.
        pub count_latch: Option<u16>,
        /// The next latched read returns the high byte.
        pub latch_high_next: bool,
        /// Latched status byte.
        pub status_latch: Option<u8>,
        /// `elapsed_ticks` at the last poll (edge detection of channel 0).
        pub polled_ticks: u64,
    }

    /// The PIT's saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PitStateV1 {
        /// Channels 0, 1 and 2.
        pub channels: [ChannelStateV1; 3],
        /// Level last driven on IRQ0.
        pub irq0_level: bool,
        /// Port 0x61 bits 0-3.
        pub port61: u8,
        /// Time within [`super::PHASE_PERIOD_NS`] at the save: the phase of the input clock
        /// and of the refresh toggle.
        pub clock_phase_ns: u64,
    }
}

/// A period after which both the 1.193182 MHz input clock (in phase every second) and the
/// refresh toggle (every 30 170 ns) are back in phase: lcm(10^9, 30 170) ns, about 50 minutes.
const PHASE_PERIOD_NS: u64 = 3_017_000_000_000;

/// Counts beyond this many input clocks (about 7 700 years) are refused as damaged.
const MAX_SAVED_TICKS: u64 = 1 << 58;

impl Channel {
    fn saved(&self, now: u64) -> save::ChannelStateV1 {
        save::ChannelStateV1 {
            mode: self.raw_mode,
            bcd: self.bcd,
            access: self.access.bits(),
            reload: self.reload as u32,
            loaded: self.loaded,
            null_count: self.null_count,
            gate: self.gate,
            triggered: self.triggered,
            elapsed_ticks: self.elapsed(now),
            running: self.running,
            write_low: self.write_low,
            read_high_next: self.read_high_next,
            count_latch: self.count_latch,
            latch_high_next: self.latch_high_next,
            status_latch: self.status_latch,
            polled_ticks: self.polled_ticks,
        }
    }

    /// The channel `s` describes, counting on from `now`, checked.
    fn restored(s: &save::ChannelStateV1, now: u64, i: usize) -> Result<Channel, RestoreError> {
        let dev = "pit";
        ensure(s.mode <= 7, dev, format!("channel {i}: mode {}", s.mode))?;
        let access = match s.access {
            1 => Access::Low,
            2 => Access::High,
            3 => Access::LowHigh,
            a => {
                return Err(RestoreError::Corrupt {
                    device: dev.to_string(),
                    reason: format!("channel {i}: access mode {a}"),
                })
            }
        };
        let max = if s.bcd { 10_000 } else { 0x10000 };
        ensure(
            (1..=max).contains(&s.reload),
            dev,
            format!("channel {i}: count {} (BCD: {})", s.reload, s.bcd),
        )?;
        ensure(
            s.elapsed_ticks <= MAX_SAVED_TICKS && s.polled_ticks <= s.elapsed_ticks,
            dev,
            format!(
                "channel {i}: {} clocks elapsed, {} at the last poll",
                s.elapsed_ticks, s.polled_ticks
            ),
        )?;
        let c = Channel {
            raw_mode: s.mode,
            bcd: s.bcd,
            access,
            reload: u64::from(s.reload),
            loaded: s.loaded,
            null_count: s.null_count,
            gate: s.gate,
            triggered: s.triggered,
            base_ticks: s.elapsed_ticks,
            start_ns: now,
            running: s.running,
            write_low: s.write_low,
            read_high_next: s.read_high_next,
            count_latch: s.count_latch,
            latch_high_next: s.latch_high_next,
            status_latch: s.status_latch,
            polled_ticks: s.polled_ticks,
        };
        ensure(
            c.running == c.counting_enabled(),
            dev,
            format!("channel {i}: counting state disagrees with its gate and count"),
        )?;
        Ok(c)
    }
}

impl SaveRestore for Pit {
    fn save(&mut self) -> SavedState {
        let now = self.now();
        let [c0, c1, c2] = &self.channels;
        let state = save::PitStateV1 {
            channels: [c0.saved(now), c1.saved(now), c2.saved(now)],
            irq0_level: self.line,
            port61: self.port61,
            clock_phase_ns: now % PHASE_PERIOD_NS,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the channels counting on from now, drives IRQ0 to its saved level and wakes
    /// the timer loop (channel 0's deadline moved).
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::PitStateV1 = crate::saved_state::decode(state, "pit", save::VERSION)?;
        ensure(
            s.clock_phase_ns < PHASE_PERIOD_NS,
            "pit",
            format!("clock phase {} ns", s.clock_phase_ns),
        )?;
        ensure(
            s.port61 & !0x0F == 0,
            "pit",
            format!("port 0x61 bits {:#04x}", s.port61),
        )?;
        let [c0, c1, c2] = &s.channels;
        ensure(
            c0.gate && c1.gate && c2.gate == (s.port61 & 1 != 0),
            "pit",
            "channel gates disagree with port 0x61",
        )?;
        let clock_now = self.clock.now_ns();
        let offset =
            (s.clock_phase_ns + PHASE_PERIOD_NS - clock_now % PHASE_PERIOD_NS) % PHASE_PERIOD_NS;
        let now = clock_now.saturating_add(offset);
        let channels = [
            Channel::restored(c0, now, 0)?,
            Channel::restored(c1, now, 1)?,
            Channel::restored(c2, now, 2)?,
        ];
        self.offset_ns = offset;
        self.channels = channels;
        self.port61 = s.port61;
        self.line = s.irq0_level;
        self.irq0.set_level(self.line);
        self.waker.wake();
        Ok(())
    }
}

impl PortIo for Pit {
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
    use crate::irq::RecordingSink;
    use crate::ManualClock;

    struct Rig {
        clock: ManualClock,
        sink: Arc<RecordingSink>,
        pit: Pit,
    }

    fn rig() -> Rig {
        let clock = ManualClock::new();
        let sink = Arc::new(RecordingSink::default());
        let pit = Pit::new(
            Arc::new(clock.clone()),
            IrqLine::new(sink.clone(), 0),
            TimerWaker::noop(),
        );
        Rig { clock, sink, pit }
    }

    impl Rig {
        fn out(&mut self, port: u16, v: u8) {
            self.pit.io_write(port, &[v]);
        }
        fn inb(&mut self, port: u16) -> u8 {
            let mut b = [0];
            self.pit.io_read(port, &mut b);
            b[0]
        }
        /// Advances the clock by `ticks` PIT clocks (exactly).
        fn tick(&mut self, ticks: u64) {
            self.clock
                .set(ticks_to_ns(ns_to_ticks(self.clock.now_ns()) + ticks));
        }
        fn poll(&mut self, now: u64) -> Option<u64> {
            Poll::poll(&mut self.pit, now)
        }
        fn rising_edges(&self) -> usize {
            self.sink.take_changes().iter().filter(|(_, l)| *l).count()
        }
    }

    #[test]
    fn reset_state_is_mode3_full_count() {
        let mut r = rig();
        r.out(0x43, 0xC2); // read-back status+count, channel 0
        assert_eq!(r.inb(0x40), 0x80 | 0x30 | 0x06); // out high, lohi, mode 3
        assert_eq!(r.inb(0x40), 0x00);
        assert_eq!(r.inb(0x40), 0x00); // count 0x10000 reads as 0
        assert_eq!(r.poll(0), Some(ticks_to_ns(0x10000)));
    }

    #[test]
    fn mode0_one_shot_and_latch() {
        let mut r = rig();
        r.out(0x43, 0x30); // ch0 lohi mode 0 binary
        assert!(!r.pit.output(0));
        r.out(0x40, 0x00);
        r.out(0x40, 0x10); // 0x1000
        r.tick(0x100);
        r.out(0x43, 0x00); // latch
        r.tick(0x10);
        assert_eq!(r.inb(0x40), 0x00);
        assert_eq!(r.inb(0x40), 0x0F); // 0x0F00 as latched
                                       // Unlatched read follows the clock.
        assert_eq!(r.inb(0x40), 0xF0);
        assert_eq!(r.inb(0x40), 0x0E);
        assert!(!r.pit.output(0));
        r.sink.take_changes();
        let deadline = r.poll(r.clock.now_ns()).unwrap();
        assert_eq!(r.rising_edges(), 0);
        r.clock.set(deadline);
        assert!(r.pit.output(0));
        assert_eq!(r.poll(deadline), None);
        assert_eq!(r.rising_edges(), 1);
        assert!(r.sink.level(0));
        // Count wraps to 0xFFFF after terminal count.
        r.tick(1);
        assert_eq!(r.inb(0x40), 0xFF);
        assert_eq!(r.inb(0x40), 0xFF);
    }

    #[test]
    fn mode2_rate_generator() {
        let mut r = rig();
        r.out(0x43, 0x34); // ch0 lohi mode 2
        r.out(0x40, 100);
        r.out(0x40, 0);
        r.sink.take_changes();
        assert_eq!(r.inb(0x40), 100);
        assert_eq!(r.inb(0x40), 0);
        r.tick(98);
        assert!(r.pit.output(0));
        r.tick(1); // count 1: output low
        assert!(!r.pit.output(0));
        r.out(0x43, 0x00);
        assert_eq!(r.inb(0x40), 1);
        assert_eq!(r.inb(0x40), 0);
        r.tick(1);
        assert!(r.pit.output(0));
        assert_eq!(r.inb(0x40), 100);
        assert_eq!(r.inb(0x40), 0);
        // Poll once per period: one edge each.
        let mut now = r.clock.now_ns();
        let mut edges = 0;
        for _ in 0..10 {
            r.poll(now);
            edges += r.rising_edges();
            now = r.poll(now).unwrap();
        }
        assert_eq!(edges, 10);
    }

    #[test]
    fn late_poll_coalesces() {
        let mut r = rig();
        r.out(0x43, 0x34);
        r.out(0x40, 100);
        r.out(0x40, 0);
        r.poll(0);
        r.sink.take_changes();
        r.tick(100 * 1000 + 50);
        let next = r.poll(r.clock.now_ns()).unwrap();
        assert_eq!(r.rising_edges(), 1);
        assert_eq!(next, ticks_to_ns(100 * 1001));
    }

    #[test]
    fn mode3_square_wave_and_readback_status() {
        let mut r = rig();
        r.out(0x43, 0x36); // ch0 lohi mode 3
        r.out(0x40, 10);
        r.out(0x40, 0);
        assert!(r.pit.output(0));
        r.tick(2);
        assert_eq!(r.inb(0x40), 6); // counts down by two
        assert_eq!(r.inb(0x40), 0);
        r.tick(3);
        assert!(!r.pit.output(0)); // second half period
        assert_eq!(r.inb(0x40), 10);
        r.inb(0x40);
        r.out(0x43, 0xE2); // read-back status only, channel 0
        assert_eq!(r.inb(0x40), 0x36); // out low, lohi, mode 3, binary
        r.tick(5);
        assert!(r.pit.output(0));
        // BCD mode 3 counts in decimal.
        r.out(0x43, 0x37);
        r.out(0x40, 0x00);
        r.out(0x40, 0x10); // 1000 decimal
        r.tick(1);
        r.out(0x43, 0x00);
        assert_eq!(r.inb(0x40), 0x98);
        assert_eq!(r.inb(0x40), 0x09);
    }

    #[test]
    fn channel2_gate_and_port61() {
        let mut r = rig();
        assert_eq!(r.inb(0x61) & 0x2F, 0x20); // gate off, mode 3 output high
        r.out(0x61, 0x01); // gate on, speaker off (SeaBIOS TSC calibration)
        r.out(0x43, 0xB0); // ch2 lohi mode 0
        r.out(0x42, 0x00);
        r.out(0x42, 0x01); // 256
        assert_eq!(r.inb(0x61) & 0x21, 0x01);
        r.tick(255);
        assert_eq!(r.inb(0x61) & 0x20, 0x00);
        r.tick(1);
        assert_eq!(r.inb(0x61) & 0x21, 0x21);
        // Read-back count of channel 2.
        r.out(0x43, 0xD8);
        assert_eq!(r.inb(0x42), 0x00);
        assert_eq!(r.inb(0x42), 0x00);
        // Gate low pauses mode 0 counting.
        r.out(0x43, 0xB0);
        r.out(0x42, 0x00);
        r.out(0x42, 0x01);
        r.tick(16);
        r.out(0x61, 0x00);
        r.tick(1000);
        r.out(0x43, 0x80);
        assert_eq!(r.inb(0x42), 0xF0);
        assert_eq!(r.inb(0x42), 0x00);
        assert_eq!(r.inb(0x61) & 0x20, 0x00);
    }

    #[test]
    fn refresh_bit_toggles() {
        let mut r = rig();
        let a = r.inb(0x61) & 0x10;
        r.clock.advance(15_085);
        let b = r.inb(0x61) & 0x10;
        assert_ne!(a, b);
    }

    fn rig_at(ns: u64) -> Rig {
        let clock = ManualClock::new();
        clock.set(ns);
        let sink = Arc::new(RecordingSink::default());
        let pit = Pit::new(
            Arc::new(clock.clone()),
            IrqLine::new(sink.clone(), 0),
            TimerWaker::noop(),
        );
        Rig { clock, sink, pit }
    }

    /// Every register as the guest reads it (with the read side effects, the same on both).
    fn reads(r: &mut Rig) -> Vec<u8> {
        let mut v: Vec<u8> = [0x40, 0x40, 0x41, 0x41, 0x42, 0x42, 0x43, 0x61]
            .into_iter()
            .map(|p| r.inb(p))
            .collect();
        v.extend((0..3).map(|c| u8::from(r.pit.output(c))));
        v
    }

    /// Read-back of status and count of every channel.
    fn read_back(r: &mut Rig) -> Vec<u8> {
        r.out(0x43, 0xCE);
        (0x40..=0x42)
            .flat_map(|p| [r.inb(p), r.inb(p), r.inb(p)])
            .collect()
    }

    fn programmed() -> Rig {
        let mut r = rig_at(5_123_456_789);
        r.out(0x43, 0x34); // channel 0: mode 2, 1000 clocks
        r.out(0x40, 0xE8);
        r.out(0x40, 0x03);
        r.tick(500);
        r.poll(r.clock.now_ns());
        r.out(0x43, 0x74); // channel 1: mode 2, only the low byte written so far
        r.out(0x41, 0x34);
        r.out(0x61, 0x03); // channel 2 gate on, speaker on
        r.out(0x43, 0xB6); // channel 2: mode 3, 0x200 clocks
        r.out(0x42, 0x00);
        r.out(0x42, 0x02);
        r.tick(77);
        r.out(0x43, 0x80); // latch channel 2 and read its low byte
        r.inb(0x42);
        r.out(0x43, 0xE2); // status latch on channel 0
        r.clock.advance(123);
        r
    }

    #[test]
    fn save_restore_round_trip() {
        let mut a = programmed();
        let saved = a.pit.save();
        assert_eq!(saved.device, "pit");
        // Another process: its clock started elsewhere, at another phase.
        let mut b = rig_at(77_000_000_001);
        b.pit.restore(&saved).unwrap();
        assert_eq!(b.pit.save(), saved);
        assert_eq!(b.sink.level(0), a.sink.level(0));
        assert!(
            b.sink.level(0),
            "channel 0's output was high at the last poll"
        );
        assert_eq!(reads(&mut b), reads(&mut a));
        assert_eq!(read_back(&mut b), read_back(&mut a));
        // Timing continues identically.
        a.sink.take_changes();
        b.sink.take_changes();
        let mut edges = 0;
        for step in [
            1u64,
            837,
            838,
            9_999,
            500_000,
            838_096,
            3,
            1_000_000_000,
            15_085,
        ] {
            a.clock.advance(step);
            b.clock.advance(step);
            let da = a.poll(a.clock.now_ns()).map(|d| d - a.clock.now_ns());
            let db = b.poll(b.clock.now_ns()).map(|d| d - b.clock.now_ns());
            assert_eq!(db, da, "deadline after {step}");
            let changes = a.sink.take_changes();
            edges += changes.iter().filter(|(_, l)| *l).count();
            assert_eq!(b.sink.take_changes(), changes, "IRQ0 after {step}");
            assert_eq!(reads(&mut b), reads(&mut a), "registers after {step}");
        }
        assert!(edges > 2);
        // Reprogramming continues identically too.
        for r in [&mut a, &mut b] {
            r.out(0x41, 0x12);
            r.out(0x61, 0x00);
            r.clock.advance(83_800);
        }
        assert_eq!(read_back(&mut b), read_back(&mut a));
        assert_eq!(b.pit.save(), a.pit.save());
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let mut a = programmed();
        let saved = a.pit.save();
        let mut b = rig_at(42);
        b.out(0x43, 0x34);
        b.out(0x40, 100);
        b.out(0x40, 0);
        check_refusals(&mut b.pit, &saved);
        let bad = edited(&saved, |s: &mut save::PitStateV1| s.channels[1].access = 0);
        check_corrupt(&mut b.pit, &bad);
        let bad = edited(&saved, |s: &mut save::PitStateV1| {
            s.channels[0].reload = 0x10001
        });
        check_corrupt(&mut b.pit, &bad);
        let bad = edited(&saved, |s: &mut save::PitStateV1| {
            s.channels[0].polled_ticks = s.channels[0].elapsed_ticks + 1
        });
        check_corrupt(&mut b.pit, &bad);
        let bad = edited(&saved, |s: &mut save::PitStateV1| s.port61 = 0x02);
        check_corrupt(&mut b.pit, &bad);
        let bad = edited(&saved, |s: &mut save::PitStateV1| {
            s.clock_phase_ns = u64::MAX
        });
        check_corrupt(&mut b.pit, &bad);
        // Still working: channel 0 counts down from 100.
        b.tick(10);
        assert_eq!(b.inb(0x40), 90);
    }
}
