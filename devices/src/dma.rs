//! Intel 8237 DMA controller pair: ports 0x00-0x0F (channels 0-3, 8-bit), 0xC0-0xDF (channels
//! 4-7, 16-bit, one register every two ports) and page registers 0x81-0x8F (0x80 belongs to
//! [`crate::system_control`]).
//!
//! Devices move data with [`Dma8237::write_memory`] (device to memory) and
//! [`Dma8237::read_memory`] (memory to device). Each call runs as many cycles as the channel
//! allows, honouring its mode (transfer type, auto-initialization, address decrement), its mask
//! bit, its page register and its current address and count. A device that cannot proceed
//! because the guest has not made the channel ready yet holds its request with
//! [`Dma8237::hold_dreq`]; the controller wakes it when the guest changes the channel's setup.
//!
//! Sharing: the machine keeps the controller as `Arc<Mutex<Dma8237>>`. Devices lock it while
//! they hold their own lock; the controller never locks a device (it only calls the wakers,
//! which must not lock devices either).

use crate::dma_memory::DmaMemory;
use crate::saved_state::{ensure, RestoreError, SaveRestore, SavedState};
use crate::{Device, PortIo, TimerWaker};
use std::sync::Arc;

/// Port ranges the DMA controllers answer: `(first port, count)`.
pub const DMA_PORT_RANGES: [(u16, u16); 3] = [(0x00, 0x10), (0x81, 0x0F), (0xC0, 0x20)];

/// Number of DMA channels (0-3 on the first controller, 4-7 on the second; 4 is the cascade).
pub const DMA_CHANNELS: usize = 8;

/// Page register port of each channel, as an offset from 0x80.
const PAGE_OFFSET: [usize; DMA_CHANNELS] = [0x7, 0x3, 0x1, 0x2, 0xF, 0xB, 0x9, 0xA];

/// Command register bit: controller disabled.
const CMD_DISABLE: u8 = 0x04;
/// Mode register bits.
const MODE_AUTO_INIT: u8 = 0x10;
const MODE_DECREMENT: u8 = 0x20;
const MODE_CASCADE: u8 = 0xC0;

/// The transfer type a channel's mode register selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferType {
    /// Addresses and counts advance, no memory is touched.
    Verify,
    /// "Write" in 8237 terms: from the device into memory.
    Write,
    /// "Read" in 8237 terms: from memory to the device.
    Read,
    /// The reserved encoding (both bits set); behaves like verify.
    Illegal,
}

/// Why a transfer call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaStatus {
    /// Every byte offered moved and the count has not expired.
    Complete,
    /// The count expired with the last byte moved (the 8237 signalled terminal count / EOP).
    TerminalCount,
    /// The channel cannot run: masked, in cascade mode, or its controller is disabled.
    NotReady,
    /// A guest memory access failed; the transfer stopped before the failing bytes.
    MemoryError,
}

/// Result of a device's transfer call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaTransfer {
    /// Bytes moved (whole words on channels 5-7).
    pub bytes: usize,
    /// Why the call returned.
    pub status: DmaStatus,
}

#[derive(Debug, Clone, Copy, Default)]
struct Channel {
    base_address: u16,
    base_count: u16,
    current_address: u16,
    current_count: u16,
    mode: u8,
}

#[derive(Debug, Clone, Default)]
struct Controller {
    channels: [Channel; 4],
    flip_flop: bool,
    command: u8,
    mask: u8,
    /// Software requests (request register), bits 0-3.
    request: u8,
    /// Terminal count reached since the last status read, bits 0-3.
    tc: u8,
}

impl Controller {
    /// Master clear: command, status, requests and the flip-flop cleared, all channels masked.
    /// Address, count and mode registers keep their values.
    fn master_clear(&mut self) {
        self.flip_flop = false;
        self.command = 0;
        self.mask = 0x0F;
        self.request = 0;
        self.tc = 0;
    }

    fn next_byte_high(&mut self) -> bool {
        let high = self.flip_flop;
        self.flip_flop = !high;
        high
    }
}

/// Both 8237s and the page registers.
#[derive(Clone)]
pub struct Dma8237 {
    controllers: [Controller; 2],
    pages: [u8; 16],
    memory: Option<Arc<dyn DmaMemory>>,
    /// Device requests (DREQ lines), one bit per channel.
    dreq: u8,
    wakers: [Option<TimerWaker>; DMA_CHANNELS],
    /// Warnings already logged, one bit per kind.
    warned: u8,
}

impl std::fmt::Debug for Dma8237 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dma8237")
            .field("controllers", &self.controllers)
            .field("pages", &self.pages)
            .field("memory", &self.memory.is_some())
            .field("dreq", &self.dreq)
            .finish()
    }
}

impl Default for Dma8237 {
    fn default() -> Self {
        Self::new()
    }
}

const WARN_NO_MEMORY: u8 = 1;
const WARN_MEMORY_ERROR: u8 = 2;
const WARN_TYPE_MISMATCH: u8 = 4;
const WARN_BAD_CHANNEL: u8 = 8;

impl Dma8237 {
    /// Controllers after a master clear (all channels masked), without guest memory: transfers
    /// fail with [`DmaStatus::MemoryError`] until [`Dma8237::set_memory`] is called.
    pub fn new() -> Self {
        let mut d = Self {
            controllers: Default::default(),
            pages: [0; 16],
            memory: None,
            dreq: 0,
            wakers: Default::default(),
            warned: 0,
        };
        d.controllers.iter_mut().for_each(Controller::master_clear);
        d
    }

    /// Controllers after a master clear that reach guest RAM through `memory`.
    pub fn with_memory(memory: Arc<dyn DmaMemory>) -> Self {
        let mut d = Self::new();
        d.memory = Some(memory);
        d
    }

    /// Connects guest RAM.
    pub fn set_memory(&mut self, memory: Arc<dyn DmaMemory>) {
        self.memory = Some(memory);
    }

    fn warn_once(&mut self, kind: u8) -> bool {
        let first = self.warned & kind == 0;
        self.warned |= kind;
        first
    }

    fn split(channel: usize) -> (usize, usize) {
        (channel / 4, channel % 4)
    }

    /// The transfer type channel `channel` is programmed for (`None` for a channel number
    /// outside 0-7).
    pub fn transfer_type(&self, channel: usize) -> Option<TransferType> {
        if channel >= DMA_CHANNELS {
            return None;
        }
        let (c, i) = Self::split(channel);
        Some(match (self.controllers[c].channels[i].mode >> 2) & 3 {
            0 => TransferType::Verify,
            1 => TransferType::Write,
            2 => TransferType::Read,
            _ => TransferType::Illegal,
        })
    }

    /// True if `channel` would run cycles now: unmasked, not in cascade mode, its controller
    /// enabled. Channel 4 is the cascade and never serves a device.
    pub fn channel_ready(&self, channel: usize) -> bool {
        if channel >= DMA_CHANNELS || channel == 4 {
            return false;
        }
        let (c, i) = Self::split(channel);
        let ctl = &self.controllers[c];
        ctl.mask & (1 << i) == 0
            && ctl.command & CMD_DISABLE == 0
            && ctl.channels[i].mode & MODE_CASCADE != MODE_CASCADE
    }

    /// A device asserts its request line on `channel`; `waker` (if any) is called when the
    /// guest later reprograms the controller so that the channel may run.
    pub fn hold_dreq(&mut self, channel: usize, waker: Option<TimerWaker>) {
        if channel >= DMA_CHANNELS {
            return;
        }
        self.dreq |= 1 << channel;
        self.wakers[channel] = waker;
    }

    /// A device drops its request line on `channel`.
    pub fn release_dreq(&mut self, channel: usize) {
        if channel >= DMA_CHANNELS {
            return;
        }
        self.dreq &= !(1 << channel);
        self.wakers[channel] = None;
    }

    /// Wakes devices whose held request can now be served.
    fn wake_ready(&self) {
        for ch in 0..DMA_CHANNELS {
            if self.dreq & (1 << ch) != 0 && self.channel_ready(ch) {
                if let Some(w) = &self.wakers[ch] {
                    w.wake();
                }
            }
        }
    }

    /// The current address register of `channel` (words on channels 4-7).
    pub fn current_address(&self, channel: usize) -> u16 {
        let (c, i) = Self::split(channel % DMA_CHANNELS);
        self.controllers[c].channels[i].current_address
    }

    /// The current count register of `channel` (units left minus one).
    pub fn current_count(&self, channel: usize) -> u16 {
        let (c, i) = Self::split(channel % DMA_CHANNELS);
        self.controllers[c].channels[i].current_count
    }

    /// Moves `data` from a device into guest memory on `channel` (a device read such as a
    /// floppy READ DATA). Memory is written only if the channel is programmed for a write
    /// transfer; in verify (or mismatched) mode the cycles run without touching memory.
    pub fn write_memory(&mut self, channel: usize, data: &[u8]) -> DmaTransfer {
        self.run(channel, data.len(), Xfer::ToMemory(data))
    }

    /// Fills `data` from guest memory on `channel` for a device (a floppy WRITE DATA). Bytes
    /// the channel does not fetch from memory (verify or mismatched mode) read as 0xFF.
    pub fn read_memory(&mut self, channel: usize, data: &mut [u8]) -> DmaTransfer {
        let len = data.len();
        self.run(channel, len, Xfer::FromMemory(data))
    }

    fn run(&mut self, channel: usize, len: usize, mut xfer: Xfer<'_>) -> DmaTransfer {
        if channel >= DMA_CHANNELS {
            if self.warn_once(WARN_BAD_CHANNEL) {
                tracing::warn!(channel, "dma: transfer on a channel that does not exist");
            }
            return DmaTransfer {
                bytes: 0,
                status: DmaStatus::NotReady,
            };
        }
        if !self.channel_ready(channel) {
            return DmaTransfer {
                bytes: 0,
                status: DmaStatus::NotReady,
            };
        }
        let (c, i) = Self::split(channel);
        let wide = c == 1;
        let unit = if wide { 2 } else { 1 };
        let page = u64::from(self.pages[PAGE_OFFSET[channel]]);
        let ttype = self.transfer_type(channel).unwrap_or(TransferType::Verify);
        let wanted = match xfer {
            Xfer::ToMemory(_) => TransferType::Write,
            Xfer::FromMemory(_) => TransferType::Read,
        };
        let touches_memory = ttype == wanted;
        if !touches_memory && ttype != TransferType::Verify && self.warn_once(WARN_TYPE_MISMATCH) {
            tracing::warn!(
                channel,
                ?ttype,
                "dma: channel programmed for the opposite direction; memory left alone"
            );
        }
        let memory = self.memory.clone();
        let mut moved = 0usize;
        loop {
            let ch = self.controllers[c].channels[i];
            let decrement = ch.mode & MODE_DECREMENT != 0;
            let avail = (len - moved) / unit;
            if avail == 0 {
                return DmaTransfer {
                    bytes: moved,
                    status: DmaStatus::Complete,
                };
            }
            let to_tc = u32::from(ch.current_count) + 1;
            let to_wrap = if decrement {
                u32::from(ch.current_address) + 1
            } else {
                0x1_0000 - u32::from(ch.current_address)
            };
            let n = (avail as u32).min(to_tc).min(to_wrap);
            let bytes = n as usize * unit;
            // Lowest register address touched by this run of cycles.
            let low = if decrement {
                u32::from(ch.current_address) + 1 - n
            } else {
                u32::from(ch.current_address)
            };
            let physical = if wide {
                ((page & 0xFE) << 16) | (u64::from(low) << 1)
            } else {
                (page << 16) | u64::from(low)
            };
            let slice = moved..moved + bytes;
            if touches_memory {
                let Some(mem) = memory.as_ref() else {
                    if self.warn_once(WARN_NO_MEMORY) {
                        tracing::warn!(channel, "dma: no guest memory connected");
                    }
                    return DmaTransfer {
                        bytes: moved,
                        status: DmaStatus::MemoryError,
                    };
                };
                let ok = match &mut xfer {
                    Xfer::ToMemory(data) => {
                        let src = &data[slice];
                        if decrement {
                            mem.write(physical, &reverse_units(src, unit))
                        } else {
                            mem.write(physical, src)
                        }
                    }
                    Xfer::FromMemory(data) => {
                        let dst = &mut data[slice];
                        let ok = mem.read(physical, dst);
                        if ok && decrement {
                            let r = reverse_units(dst, unit);
                            dst.copy_from_slice(&r);
                        }
                        ok
                    }
                };
                if !ok {
                    if self.warn_once(WARN_MEMORY_ERROR) {
                        tracing::warn!(
                            channel,
                            address = physical,
                            bytes,
                            "dma: guest memory access failed; transfer stopped"
                        );
                    }
                    return DmaTransfer {
                        bytes: moved,
                        status: DmaStatus::MemoryError,
                    };
                }
            } else if let Xfer::FromMemory(data) = &mut xfer {
                data[slice].fill(0xFF);
            }
            moved += bytes;
            let ctl = &mut self.controllers[c];
            let chm = &mut ctl.channels[i];
            chm.current_address = if decrement {
                chm.current_address.wrapping_sub(n as u16)
            } else {
                chm.current_address.wrapping_add(n as u16)
            };
            if n == to_tc {
                ctl.tc |= 1 << i;
                if chm.mode & MODE_AUTO_INIT != 0 {
                    chm.current_address = chm.base_address;
                    chm.current_count = chm.base_count;
                } else {
                    chm.current_count = 0xFFFF;
                    ctl.mask |= 1 << i;
                }
                return DmaTransfer {
                    bytes: moved,
                    status: DmaStatus::TerminalCount,
                };
            }
            chm.current_count = chm.current_count.wrapping_sub(n as u16);
        }
    }

    fn read_controller(&mut self, c: usize, reg: u16) -> u8 {
        let dreq = (self.dreq >> (4 * c)) & 0x0F;
        let ctl = &mut self.controllers[c];
        match reg {
            0..=7 => {
                let ch = &ctl.channels[usize::from(reg / 2)];
                let v = if reg & 1 == 0 {
                    ch.current_address
                } else {
                    ch.current_count
                };
                let high = ctl.next_byte_high();
                if high {
                    (v >> 8) as u8
                } else {
                    v as u8
                }
            }
            8 => {
                let v = ctl.tc | ((ctl.request | dreq) << 4);
                ctl.tc = 0;
                v
            }
            13 => 0, // temporary register (memory-to-memory only)
            15 => 0xF0 | ctl.mask,
            _ => 0xFF,
        }
    }

    fn write_controller(&mut self, c: usize, reg: u16, value: u8) {
        let ctl = &mut self.controllers[c];
        match reg {
            0..=7 => {
                let high = ctl.next_byte_high();
                let ch = &mut ctl.channels[usize::from(reg / 2)];
                let (base, current) = if reg & 1 == 0 {
                    (&mut ch.base_address, &mut ch.current_address)
                } else {
                    (&mut ch.base_count, &mut ch.current_count)
                };
                *base = if high {
                    (*base & 0x00FF) | u16::from(value) << 8
                } else {
                    (*base & 0xFF00) | u16::from(value)
                };
                *current = *base;
            }
            8 => ctl.command = value,
            9 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    ctl.request |= bit;
                } else {
                    ctl.request &= !bit;
                }
            }
            10 => {
                let bit = 1 << (value & 3);
                if value & 4 != 0 {
                    ctl.mask |= bit;
                } else {
                    ctl.mask &= !bit;
                }
            }
            11 => ctl.channels[usize::from(value & 3)].mode = value,
            12 => ctl.flip_flop = false,
            13 => ctl.master_clear(),
            14 => ctl.mask = 0,
            _ => ctl.mask = value & 0x0F,
        }
        if reg >= 8 {
            self.wake_ready();
        }
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x00..=0x0F => self.read_controller(0, port),
            0x81..=0x8F => self.pages[usize::from(port - 0x80)],
            0xC0..=0xDF => self.read_controller(1, (port - 0xC0) >> 1),
            _ => {
                tracing::warn!(port, "dma: read of unowned port");
                0xFF
            }
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x00..=0x0F => self.write_controller(0, port, value),
            0x81..=0x8F => self.pages[usize::from(port - 0x80)] = value,
            0xC0..=0xDF => self.write_controller(1, (port - 0xC0) >> 1, value),
            _ => tracing::warn!(port, value, "dma: write to unowned port"),
        }
    }
}

/// Direction and buffer of one transfer call.
enum Xfer<'a> {
    ToMemory(&'a [u8]),
    FromMemory(&'a mut [u8]),
}

/// `data` with its `unit`-byte units in reverse order (bytes inside a unit keep their order).
fn reverse_units(data: &[u8], unit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(unit).rev() {
        out.extend_from_slice(chunk);
    }
    out
}

impl Device for Dma8237 {
    fn name(&self) -> &str {
        "dma"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        let memory = self.memory.take();
        let dreq = self.dreq;
        let wakers = std::mem::take(&mut self.wakers);
        *self = Self::new();
        self.memory = memory;
        self.dreq = dreq;
        self.wakers = wakers;
    }
}

/// Saved state of the DMA controllers (separate from the runtime types). The request lines
/// (DREQ) are not saved: they belong to the requesting devices, which hold them again.
mod save {
    use serde::{Deserialize, Serialize};

    /// Version of [`DmaStateV1`].
    pub const VERSION: u32 = 1;

    /// One channel's registers.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ChannelStateV1 {
        /// Base address register.
        pub base_address: u16,
        /// Base count register.
        pub base_count: u16,
        /// Current address register.
        pub current_address: u16,
        /// Current count register.
        pub current_count: u16,
        /// Mode register as written (bits 0-1 select the channel).
        pub mode: u8,
    }

    /// One 8237's registers.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ControllerStateV1 {
        /// Its four channels.
        pub channels: [ChannelStateV1; 4],
        /// Byte pointer flip-flop: the next byte is the high one.
        pub flip_flop: bool,
        /// Command register.
        pub command: u8,
        /// Mask register, bits 0-3.
        pub mask: u8,
        /// Software request register, bits 0-3.
        pub request: u8,
        /// Terminal-count status bits 0-3.
        pub tc: u8,
    }

    /// The DMA controllers' saved state, version 1.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DmaStateV1 {
        /// Controller 1 (channels 0-3) and controller 2 (channels 4-7).
        pub controllers: [ControllerStateV1; 2],
        /// Page registers at ports 0x80-0x8F (0x80 itself is never written here).
        pub pages: [u8; 16],
    }
}

impl Controller {
    fn saved(&self) -> save::ControllerStateV1 {
        let channel = |c: &Channel| save::ChannelStateV1 {
            base_address: c.base_address,
            base_count: c.base_count,
            current_address: c.current_address,
            current_count: c.current_count,
            mode: c.mode,
        };
        save::ControllerStateV1 {
            channels: [
                channel(&self.channels[0]),
                channel(&self.channels[1]),
                channel(&self.channels[2]),
                channel(&self.channels[3]),
            ],
            flip_flop: self.flip_flop,
            command: self.command,
            mask: self.mask,
            request: self.request,
            tc: self.tc,
        }
    }

    fn restored(s: &save::ControllerStateV1, which: usize) -> Result<Self, RestoreError> {
        let dev = "dma";
        for (name, bits) in [("mask", s.mask), ("request", s.request), ("TC", s.tc)] {
            ensure(
                bits & !0x0F == 0,
                dev,
                format!("controller {which}: {name} bits {bits:#04x}"),
            )?;
        }
        let mut channels = [Channel::default(); 4];
        for (i, (c, saved)) in channels.iter_mut().zip(&s.channels).enumerate() {
            ensure(
                saved.mode == 0 || usize::from(saved.mode & 3) == i,
                dev,
                format!(
                    "controller {which}: channel {i} holds the mode {:#04x} of another",
                    saved.mode
                ),
            )?;
            *c = Channel {
                base_address: saved.base_address,
                base_count: saved.base_count,
                current_address: saved.current_address,
                current_count: saved.current_count,
                mode: saved.mode,
            };
        }
        Ok(Controller {
            channels,
            flip_flop: s.flip_flop,
            command: s.command,
            mask: s.mask,
            request: s.request,
            tc: s.tc,
        })
    }
}

impl SaveRestore for Dma8237 {
    fn save(&mut self) -> SavedState {
        let state = save::DmaStateV1 {
            controllers: [self.controllers[0].saved(), self.controllers[1].saved()],
            pages: self.pages,
        };
        crate::saved_state::encode(self.name(), save::VERSION, &state)
    }

    /// Restores the registers. Guest memory, the devices' held requests and their wakers stay
    /// as they are; a held request whose channel the restored state makes ready is woken.
    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: save::DmaStateV1 = crate::saved_state::decode(state, "dma", save::VERSION)?;
        let [c1, c2] = &s.controllers;
        let controllers = [Controller::restored(c1, 1)?, Controller::restored(c2, 2)?];
        self.controllers = controllers;
        self.pages = s.pages;
        self.wake_ready();
        Ok(())
    }
}

impl PortIo for Dma8237 {
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
    use crate::dma_memory::VecMemory;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn inb(d: &mut Dma8237, port: u16) -> u8 {
        let mut b = [0];
        d.io_read(port, &mut b);
        b[0]
    }

    fn outb(d: &mut Dma8237, port: u16, v: u8) {
        d.io_write(port, &[v]);
    }

    fn mem_bytes(m: &VecMemory, at: usize, n: usize) -> Vec<u8> {
        m.0.lock().unwrap()[at..at + n].to_vec()
    }

    /// Programs an 8-bit channel (0-3) as a BIOS does.
    fn setup8(d: &mut Dma8237, ch: u8, addr: u32, count: u16, mode: u8) {
        let ch16 = u16::from(ch);
        outb(d, 0x0A, 0x04 | ch);
        outb(d, 0x0C, 0);
        outb(d, ch16 * 2, addr as u8);
        outb(d, ch16 * 2, (addr >> 8) as u8);
        outb(d, 0x0C, 0);
        outb(d, ch16 * 2 + 1, count as u8);
        outb(d, ch16 * 2 + 1, (count >> 8) as u8);
        outb(d, 0x0B, mode | ch);
        outb(
            d,
            0x80 + PAGE_OFFSET[usize::from(ch)] as u16,
            (addr >> 16) as u8,
        );
        outb(d, 0x0A, ch);
    }

    fn setup(size: usize) -> (Arc<VecMemory>, Dma8237) {
        let mem = Arc::new(VecMemory::new(size));
        let d = Dma8237::with_memory(mem.clone());
        (mem, d)
    }

    #[test]
    fn registers_read_back() {
        let mut d = Dma8237::new();
        assert_eq!(inb(&mut d, 0x0F), 0xFF);
        d.io_write(0x0C, &[0]);
        d.io_write(0x04, &[0x34]);
        d.io_write(0x04, &[0x12]);
        d.io_write(0x0C, &[0]);
        assert_eq!(inb(&mut d, 0x04), 0x34);
        assert_eq!(inb(&mut d, 0x04), 0x12);
        d.io_write(0x0A, &[0x02]); // unmask channel 2
        assert_eq!(inb(&mut d, 0x0F), 0xFB);
        d.io_write(0x8F, &[0x77]);
        assert_eq!(inb(&mut d, 0x8F), 0x77);
        d.io_write(0xD6, &[0x4A]); // mode, controller 2
        d.io_write(0xDE, &[0x00]); // clear masks
        assert_eq!(inb(&mut d, 0xDE), 0xF0);
        d.io_write(0xDA, &[0]); // master clear
        assert_eq!(inb(&mut d, 0xDE), 0xFF);
        assert_eq!(inb(&mut d, 0x08), 0x00);
    }

    #[test]
    fn increment_write_with_page_and_terminal_count() {
        let (mem, mut d) = setup(0x40000);
        // Single mode, increment, write (device to memory), channel 2, page 2.
        setup8(&mut d, 2, 0x2_1000, 7, 0x44);
        let t = d.write_memory(2, &[1, 2, 3, 4]);
        assert_eq!(
            t,
            DmaTransfer {
                bytes: 4,
                status: DmaStatus::Complete
            }
        );
        // Current registers advance and read back.
        outb(&mut d, 0x0C, 0);
        assert_eq!(inb(&mut d, 0x04), 0x04);
        assert_eq!(inb(&mut d, 0x04), 0x10);
        assert_eq!(inb(&mut d, 0x05), 3);
        assert_eq!(inb(&mut d, 0x05), 0);
        // No terminal count yet.
        assert_eq!(inb(&mut d, 0x08) & 0x0F, 0);
        let t = d.write_memory(2, &[5, 6, 7, 8, 9, 10]);
        assert_eq!(
            t,
            DmaTransfer {
                bytes: 4,
                status: DmaStatus::TerminalCount
            }
        );
        assert_eq!(mem_bytes(&mem, 0x2_1000, 9), [1, 2, 3, 4, 5, 6, 7, 8, 0]);
        // TC bit set, cleared by the read; the channel masked itself.
        assert_eq!(inb(&mut d, 0x08) & 0x0F, 0x04);
        assert_eq!(inb(&mut d, 0x08) & 0x0F, 0);
        assert_eq!(inb(&mut d, 0x0F) & 0x04, 0x04);
        assert_eq!(d.write_memory(2, &[1]).status, DmaStatus::NotReady);
    }

    #[test]
    fn decrement_read_from_memory() {
        let (mem, mut d) = setup(0x10000);
        mem.0.lock().unwrap()[0x100..0x108].copy_from_slice(&[10, 11, 12, 13, 14, 15, 16, 17]);
        // Read (memory to device), decrement, channel 1 starting at 0x107.
        setup8(&mut d, 1, 0x107, 7, 0x68);
        let mut buf = [0u8; 8];
        let t = d.read_memory(1, &mut buf);
        assert_eq!(t.status, DmaStatus::TerminalCount);
        assert_eq!(buf, [17, 16, 15, 14, 13, 12, 11, 10]);
        assert_eq!(d.current_address(1), 0xFF);
    }

    #[test]
    fn decrement_write_to_memory() {
        let (mem, mut d) = setup(0x10000);
        setup8(&mut d, 3, 0x203, 3, 0x64);
        assert_eq!(
            d.write_memory(3, &[1, 2, 3, 4]).status,
            DmaStatus::TerminalCount
        );
        assert_eq!(mem_bytes(&mem, 0x200, 4), [4, 3, 2, 1]);
    }

    #[test]
    fn auto_init_reloads_base_registers() {
        let (mem, mut d) = setup(0x10000);
        // Auto-init, write, channel 2, 4 bytes at 0x500.
        setup8(&mut d, 2, 0x500, 3, 0x54);
        let t = d.write_memory(2, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            t,
            DmaTransfer {
                bytes: 4,
                status: DmaStatus::TerminalCount
            }
        );
        assert_eq!(d.current_address(2), 0x500);
        assert_eq!(d.current_count(2), 3);
        // Still unmasked: the next call starts over at the base address.
        assert_eq!(d.write_memory(2, &[9, 9]).bytes, 2);
        assert_eq!(mem_bytes(&mem, 0x500, 4), [9, 9, 3, 4]);
        assert_eq!(inb(&mut d, 0x08) & 0x04, 0x04);
    }

    #[test]
    fn address_wraps_inside_the_page() {
        let (mem, mut d) = setup(0x30000);
        setup8(&mut d, 2, 0x1_FFFE, 3, 0x44);
        let t = d.write_memory(2, &[1, 2, 3, 4]);
        assert_eq!(t.status, DmaStatus::TerminalCount);
        assert_eq!(t.bytes, 4);
        assert_eq!(mem_bytes(&mem, 0x1_FFFE, 2), [1, 2]);
        assert_eq!(mem_bytes(&mem, 0x1_0000, 2), [3, 4]);
        assert_eq!(mem_bytes(&mem, 0x2_0000, 2), [0, 0]);
    }

    #[test]
    fn sixteen_bit_channel_uses_words() {
        let (mem, mut d) = setup(0x40000);
        // Channel 5: word address 0x1000 in page 2 (bit 0 of the page ignored) = 0x2_2000.
        outb(&mut d, 0xD4, 0x05);
        outb(&mut d, 0xD8, 0);
        outb(&mut d, 0xC4, 0x00);
        outb(&mut d, 0xC4, 0x10);
        outb(&mut d, 0xC6, 1); // two words
        outb(&mut d, 0xC6, 0);
        outb(&mut d, 0xD6, 0x45);
        outb(&mut d, 0x8B, 0x03);
        outb(&mut d, 0xD4, 0x01);
        let t = d.write_memory(5, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(
            t,
            DmaTransfer {
                bytes: 4,
                status: DmaStatus::TerminalCount
            }
        );
        assert_eq!(mem_bytes(&mem, 0x2_2000, 5), [1, 2, 3, 4, 0]);
        assert_eq!(d.current_address(5), 0x1002);
        assert_eq!(inb(&mut d, 0xD0) & 0x0F, 0x02);
    }

    #[test]
    fn sixteen_bit_decrement_keeps_word_byte_order() {
        let (mem, mut d) = setup(0x40000);
        outb(&mut d, 0xD8, 0);
        outb(&mut d, 0xC8, 0x01); // channel 6, word address 0x0101
        outb(&mut d, 0xC8, 0x01);
        outb(&mut d, 0xCA, 1);
        outb(&mut d, 0xCA, 0);
        outb(&mut d, 0xD6, 0x66);
        outb(&mut d, 0x89, 0);
        outb(&mut d, 0xD4, 0x02);
        assert_eq!(
            d.write_memory(6, &[1, 2, 3, 4]).status,
            DmaStatus::TerminalCount
        );
        assert_eq!(mem_bytes(&mem, 0x200, 4), [3, 4, 1, 2]);
    }

    #[test]
    fn masked_channel_does_nothing() {
        let (mem, mut d) = setup(0x10000);
        setup8(&mut d, 2, 0x100, 3, 0x44);
        outb(&mut d, 0x0A, 0x06); // mask channel 2
        assert_eq!(
            d.write_memory(2, &[1, 2]),
            DmaTransfer {
                bytes: 0,
                status: DmaStatus::NotReady
            }
        );
        assert_eq!(mem_bytes(&mem, 0x100, 2), [0, 0]);
        assert_eq!(d.current_address(2), 0x100);
        // The controller disable bit stops every channel too.
        outb(&mut d, 0x0A, 0x02);
        outb(&mut d, 0x08, CMD_DISABLE);
        assert_eq!(d.write_memory(2, &[1]).status, DmaStatus::NotReady);
        // The cascade channel never serves a device.
        assert_eq!(d.write_memory(4, &[1, 2]).status, DmaStatus::NotReady);
    }

    #[test]
    fn verify_mode_counts_without_memory() {
        let (mem, mut d) = setup(0x10000);
        setup8(&mut d, 2, 0x100, 1, 0x40);
        assert_eq!(d.write_memory(2, &[1, 2]).status, DmaStatus::TerminalCount);
        assert_eq!(mem_bytes(&mem, 0x100, 2), [0, 0]);
        // Mismatched direction: memory is not written.
        setup8(&mut d, 2, 0x100, 1, 0x48);
        assert_eq!(d.write_memory(2, &[1, 2]).bytes, 2);
        assert_eq!(mem_bytes(&mem, 0x100, 2), [0, 0]);
    }

    #[test]
    fn memory_failure_stops_without_panic() {
        let (_mem, mut d) = setup(0x1000);
        setup8(&mut d, 2, 0x8_0000, 0x1FF, 0x44);
        let t = d.write_memory(2, &[0; 16]);
        assert_eq!(
            t,
            DmaTransfer {
                bytes: 0,
                status: DmaStatus::MemoryError
            }
        );
        let mut no_mem = Dma8237::new();
        setup8(&mut no_mem, 2, 0, 3, 0x48);
        let mut b = [0u8; 2];
        assert_eq!(no_mem.read_memory(2, &mut b).status, DmaStatus::MemoryError);
    }

    #[test]
    fn held_request_wakes_on_unmask_and_shows_in_status() {
        let (_mem, mut d) = setup(0x10000);
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        let waker = TimerWaker::new(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        setup8(&mut d, 2, 0x100, 3, 0x44);
        outb(&mut d, 0x0A, 0x06);
        d.hold_dreq(2, Some(waker));
        assert_eq!(inb(&mut d, 0x08) & 0xF0, 0x40);
        outb(&mut d, 0x0C, 0);
        assert_eq!(woken.load(Ordering::SeqCst), 0);
        outb(&mut d, 0x0A, 0x02);
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        d.release_dreq(2);
        assert_eq!(inb(&mut d, 0x08) & 0xF0, 0);
    }

    #[test]
    fn reset_keeps_memory() {
        let (mem, mut d) = setup(0x10000);
        d.reset();
        setup8(&mut d, 2, 0x10, 0, 0x44);
        assert_eq!(d.write_memory(2, &[7]).status, DmaStatus::TerminalCount);
        assert_eq!(mem_bytes(&mem, 0x10, 1), [7]);
    }

    /// Every port as the guest reads it (with the flip-flop and status side effects, the same
    /// on both).
    fn reads(d: &mut Dma8237) -> Vec<u8> {
        let ports = (0x00..=0x0F)
            .chain(0x81..=0x8F)
            .chain((0xC0..=0xDF).step_by(2));
        ports.map(|p| inb(d, p)).collect()
    }

    fn programmed() -> (Arc<VecMemory>, Dma8237) {
        let (mem, mut d) = setup(0x40000);
        setup8(&mut d, 2, 0x2_1000, 15, 0x44); // write, 16 bytes, 4 done below
        assert_eq!(d.write_memory(2, &[1, 2, 3, 4]).bytes, 4);
        setup8(&mut d, 1, 0x107, 7, 0x68); // read, decrement
        setup8(&mut d, 3, 0x300, 1, 0x54); // auto-init, terminal count reached
        assert_eq!(d.write_memory(3, &[9, 9]).status, DmaStatus::TerminalCount);
        outb(&mut d, 0x09, 0x05); // software request on channel 1
                                  // Channel 5: word address 0x1000 in page 2, two words, write mode, unmasked.
        outb(&mut d, 0xD8, 0);
        outb(&mut d, 0xC4, 0x00);
        outb(&mut d, 0xC4, 0x10);
        outb(&mut d, 0xC6, 1);
        outb(&mut d, 0xC6, 0);
        outb(&mut d, 0xD6, 0x45);
        outb(&mut d, 0x8B, 0x03);
        outb(&mut d, 0xD4, 0x01);
        outb(&mut d, 0x8F, 0x5A);
        outb(&mut d, 0x0C, 0);
        outb(&mut d, 0x00, 0x34); // low byte of channel 0's address: flip-flop now high
        (mem, d)
    }

    #[test]
    fn save_restore_round_trip() {
        let (mem_a, mut a) = programmed();
        let saved = a.save();
        assert_eq!(saved.device, "dma");
        let (mem_b, mut b) = setup(0x40000);
        mem_b.write(0, &mem_bytes(&mem_a, 0, 0x40000));
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(b.current_address(2), 0x1004);
        assert_eq!(reads(&mut b), reads(&mut a));
        // Transfers continue identically, from where they stopped.
        outb(&mut a, 0x0C, 0);
        outb(&mut b, 0x0C, 0);
        for d in [&mut a, &mut b] {
            outb(d, 0x00, 0x12); // completes channel 0's address with the high byte
        }
        let data: Vec<u8> = (10..30).collect();
        assert_eq!(b.write_memory(2, &data), a.write_memory(2, &data));
        assert_eq!(b.write_memory(5, &data), a.write_memory(5, &data));
        assert_eq!(b.write_memory(3, &data[..1]), a.write_memory(3, &data[..1]));
        let mut buf_a = [0u8; 8];
        let mut buf_b = [0u8; 8];
        assert_eq!(b.read_memory(1, &mut buf_b), a.read_memory(1, &mut buf_a));
        assert_eq!(buf_b, buf_a);
        assert_eq!(mem_bytes(&mem_b, 0, 0x40000), mem_bytes(&mem_a, 0, 0x40000));
        assert_eq!(mem_bytes(&mem_a, 0x2_1000, 6), [1, 2, 3, 4, 10, 11]);
        assert_eq!(reads(&mut b), reads(&mut a));
        assert_eq!(b.save(), a.save());
    }

    #[test]
    fn save_restore_wakes_a_held_request() {
        let (_, mut a) = programmed();
        let saved = a.save();
        let (_, mut b) = setup(0x1000);
        let woken = Arc::new(AtomicUsize::new(0));
        let w = woken.clone();
        b.hold_dreq(
            2,
            Some(TimerWaker::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            })),
        );
        b.restore(&saved).unwrap();
        assert_eq!(woken.load(Ordering::SeqCst), 1);
        assert_eq!(inb(&mut b, 0x08) & 0x40, 0x40, "the held request stays");
    }

    #[test]
    fn save_restore_refusals() {
        use crate::pci::saved_state_checks::{check_corrupt, check_refusals, edited};
        let (_, mut a) = programmed();
        let saved = a.save();
        let (_, mut b) = setup(0x10000);
        setup8(&mut b, 2, 0x100, 3, 0x44);
        check_refusals(&mut b, &saved);
        let bad = edited(&saved, |s: &mut save::DmaStateV1| {
            s.controllers[1].mask = 0x1F
        });
        check_corrupt(&mut b, &bad);
        let bad = edited(&saved, |s: &mut save::DmaStateV1| {
            s.controllers[0].channels[2].mode = 0x45
        });
        check_corrupt(&mut b, &bad);
        assert_eq!(b.write_memory(2, &[1]).bytes, 1, "still works");
    }
}
