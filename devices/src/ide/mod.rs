//! The PIIX3 IDE controller (PCI 00:01.1, 8086:7010, class 01 01, prog-if 80h): two
//! legacy-mode channels with a master and a slave each, holding ATA hard disks and ATAPI
//! CD/DVD-ROM drives, and the bus-master DMA engines behind BAR4.
//!
//! The command blocks sit at the fixed legacy ports of [`IDE_PORT_RANGES`] (primary
//! 0x1F0–0x1F7 and 0x3F6 on IRQ14, secondary 0x170–0x177 and 0x376 on IRQ15); a channel
//! decodes them while the decode-enable bit of its IDETIM register (config 0x40/0x42, bit 15)
//! is set. Each channel's interrupt line follows the INTRQ of its selected device, gated by
//! nIEN. A bus-master transfer runs to completion inside the register access that lets it
//! start (the start bit, the drive's command, or enabling bus mastering), and only while the
//! PCI command register enables bus mastering.

mod ata;
mod atapi;
mod bus_master;
mod save;
#[cfg(test)]
mod tests;

use crate::block::BlockBackend;
use crate::dma_memory::DmaMemory;
use crate::pci::{self, BarKind, ConfigSpace};
use crate::{Device, IrqLine, PciFunction, PortIo};
use ata::{AtaDevice, Kind, BSY, DEV_SELECT, DRQ};
use bus_master::{BusMaster, Control, DmaEnd, STATUS_ACTIVE, STATUS_ERROR, STATUS_INTERRUPT};
use std::sync::Arc;

/// Legacy port ranges `(first port, count)`: primary command block and control register,
/// then the secondary ones.
pub const IDE_PORT_RANGES: [(u16, u16); 4] = [(0x1F0, 8), (0x3F6, 1), (0x170, 8), (0x376, 1)];
/// ISA IRQ of the primary channel.
pub const PRIMARY_IRQ: u32 = 14;
/// ISA IRQ of the secondary channel.
pub const SECONDARY_IRQ: u32 = 15;
/// The BAR holding the 16 bus-master I/O ports (8 per channel).
pub const BUS_MASTER_BAR: u8 = 4;
/// Configuration offset of the primary channel's IDETIM register (the secondary's is +2).
pub const IDETIM: usize = 0x40;
/// IDETIM bit 15: the channel decodes its legacy ports.
pub const IDETIM_DECODE_ENABLE: u16 = 0x8000;
/// Configuration offset of SIDETIM, the slave timing register.
pub const SIDETIM: usize = 0x44;

const COMMAND_BLOCK: [u16; 2] = [0x1F0, 0x170];
const CONTROL_REGISTER: [u16; 2] = [0x3F6, 0x376];

/// Device control register bits.
const NIEN: u8 = 0x02;
const SRST: u8 = 0x04;
const HOB: u8 = 0x80;

/// PCI status: received master abort.
const PCI_STATUS_MASTER_ABORT: u16 = 1 << 13;

/// A drive to attach to an IDE position.
pub enum Drive {
    /// An ATA hard disk over an image (its size rounded down to 512-byte sectors).
    HardDisk(Box<dyn BlockBackend>),
    /// An ATAPI CD/DVD-ROM drive, with or without a medium (2048-byte sectors).
    Cdrom(Option<Box<dyn BlockBackend>>),
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HardDisk(b) => write!(f, "HardDisk({} bytes)", b.len()),
            Self::Cdrom(Some(b)) => write!(f, "Cdrom({} bytes)", b.len()),
            Self::Cdrom(None) => f.write_str("Cdrom(empty)"),
        }
    }
}

/// Errors configuring the IDE controller's drives.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdeError {
    /// Channel or unit out of range (two channels, two units each).
    #[error("IDE position {channel}:{unit} does not exist")]
    NoSuchPosition {
        /// Channel asked for.
        channel: usize,
        /// Unit asked for.
        unit: usize,
    },
    /// A drive is already attached there.
    #[error("IDE position {channel}:{unit} already holds a drive")]
    PositionInUse {
        /// Channel asked for.
        channel: usize,
        /// Unit asked for.
        unit: usize,
    },
    /// The position holds no CD-ROM drive.
    #[error("IDE position {channel}:{unit} holds no CD-ROM drive")]
    NotCdrom {
        /// Channel asked for.
        channel: usize,
        /// Unit asked for.
        unit: usize,
    },
    /// A hard disk image smaller than one sector.
    #[error("a {0}-byte image is too small for an IDE hard disk")]
    DiskTooSmall(u64),
    /// The position holds no hard disk.
    #[error("IDE position {channel}:{unit} holds no hard disk")]
    NotDisk {
        /// Channel asked for.
        channel: usize,
        /// Unit asked for.
        unit: usize,
    },
    /// A replacement image of another size than the disk it replaces.
    #[error("the replacement image has {new} bytes, the disk it replaces {old}")]
    SizeChanged {
        /// Size of the disk in use.
        old: u64,
        /// Size of the replacement.
        new: u64,
    },
    /// The image in use could not be flushed before it was replaced.
    #[error("cannot flush the disk image before switching: {0}")]
    Flush(String),
}

/// Which register of a channel a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Register {
    /// Command block register 0–7 (0 is the data register).
    Command(u16),
    /// Alternate status / device control.
    Control,
}

fn decode(port: u16) -> Option<(usize, Register)> {
    (0..2).find_map(|channel| {
        let base = COMMAND_BLOCK[channel];
        if (base..base + 8).contains(&port) {
            Some((channel, Register::Command(port - base)))
        } else if port == CONTROL_REGISTER[channel] {
            Some((channel, Register::Control))
        } else {
            None
        }
    })
}

/// One IDE channel: two device positions sharing the register interface, the device control
/// register, the bus-master engine and the interrupt line.
struct Channel {
    devices: [AtaDevice; 2],
    selected: usize,
    control: u8,
    bm: BusMaster,
    irq: IrqLine,
    irq_level: bool,
}

impl Channel {
    fn new(index: usize, irq: IrqLine) -> Self {
        Self {
            devices: [AtaDevice::new(index, 0), AtaDevice::new(index, 1)],
            selected: 0,
            control: 0,
            bm: BusMaster::default(),
            irq,
            irq_level: false,
        }
    }

    fn power_on_reset(&mut self) {
        for d in &mut self.devices {
            d.power_on_reset();
        }
        self.selected = 0;
        self.control = 0;
        self.bm = BusMaster::default();
        self.sync_irq();
    }

    fn any_present(&self) -> bool {
        self.devices.iter().any(AtaDevice::present)
    }

    fn read_register(&mut self, reg: u16) -> u8 {
        if !self.any_present() {
            return 0;
        }
        let hob = self.control & HOB != 0;
        let d = &mut self.devices[self.selected];
        match reg {
            1 if !d.present() => 0,
            1 if hob => d.regs.hob_feature,
            1 => d.error,
            2..=5 => d.regs.read(reg, hob),
            6 => d.regs.select,
            7 if !d.present() => 0,
            7 => {
                d.intrq = false;
                d.status
            }
            _ => 0xFF,
        }
    }

    fn alternate_status(&self) -> u8 {
        let d = &self.devices[self.selected];
        if d.present() {
            d.status
        } else {
            0
        }
    }

    fn write_register(&mut self, reg: u16, value: u8) {
        self.control &= !HOB;
        let current = &self.devices[self.selected];
        let busy = current.present() && current.status & (BSY | DRQ) != 0;
        if reg == 7 {
            if !current.present() {
                return;
            }
            // Writing the command register deasserts INTRQ before the new command can assert
            // it again, so an edge-triggered interrupt controller sees every interrupt.
            if current.accepts(value) {
                self.devices[self.selected].intrq = false;
                self.sync_irq();
            }
            if value == ata::op::EXECUTE_DIAGNOSTIC && !busy {
                for d in self.devices.iter_mut().filter(|d| d.present()) {
                    d.intrq = false;
                    d.diagnostic();
                }
            } else {
                self.devices[self.selected].command(value);
            }
            return;
        }
        if busy {
            tracing::debug!(reg, value, "ide: register write while busy ignored");
            return;
        }
        for d in &mut self.devices {
            d.regs.write(reg, value);
        }
        if reg == 6 {
            self.selected = usize::from(value & DEV_SELECT != 0);
        }
    }

    fn write_control(&mut self, value: u8) {
        let old = self.control;
        self.control = value;
        if old & SRST == 0 && value & SRST != 0 {
            for d in &mut self.devices {
                d.begin_soft_reset();
            }
        } else if old & SRST != 0 && value & SRST == 0 {
            for d in &mut self.devices {
                d.finish_soft_reset();
            }
            self.selected = 0;
        }
    }

    fn read_data(&mut self, data: &mut [u8]) {
        let d = &mut self.devices[self.selected];
        if d.present() {
            d.data_read(data);
        } else {
            data.fill(0);
        }
    }

    fn write_data(&mut self, data: &[u8]) {
        let d = &mut self.devices[self.selected];
        if d.present() {
            d.data_write(data);
        }
    }

    /// Drives the interrupt line from the selected device's INTRQ and nIEN, and latches the
    /// bus-master interrupt bit when the device interrupts.
    fn sync_irq(&mut self) {
        let enabled = self.control & NIEN == 0;
        for (i, d) in self.devices.iter_mut().enumerate() {
            if std::mem::take(&mut d.irq_event) && i == self.selected && enabled && d.intrq {
                self.bm.status |= STATUS_INTERRUPT;
            }
        }
        let d = &self.devices[self.selected];
        let level = enabled && d.present() && d.intrq;
        if level && !self.irq_level {
            self.bm.status |= STATUS_INTERRUPT;
        }
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }
}

/// The PIIX3 IDE function with its two channels.
pub struct Piix3Ide {
    config: ConfigSpace,
    channels: [Channel; 2],
    memory: Arc<dyn DmaMemory>,
}

impl std::fmt::Debug for Piix3Ide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let present: Vec<bool> = self
            .channels
            .iter()
            .flat_map(|c| c.devices.iter().map(AtaDevice::present))
            .collect();
        f.debug_struct("Piix3Ide")
            .field("present", &present)
            .finish()
    }
}

fn reset_config() -> ConfigSpace {
    let mut c = ConfigSpace::new(0x8086, 0x7010, 0x01, 0x01, 0x80, 0x00);
    // Only I/O space and bus-master enable exist in the command register.
    let command = pci::command::IO | pci::command::BUS_MASTER;
    c.set_writable(pci::reg::COMMAND, &command.to_le_bytes());
    // Fast back-to-back capable, medium DEVSEL timing.
    c.set_u16(pci::reg::STATUS, 0x0280);
    c.set_writable(pci::reg::CACHE_LINE_SIZE, &[0x00, 0xF0]);
    if let Err(e) = c.add_bar(usize::from(BUS_MASTER_BAR), BarKind::Io, 16) {
        tracing::error!(%e, "ide: cannot define the bus-master BAR");
    }
    c.set_u16(IDETIM, IDETIM_DECODE_ENABLE);
    c.set_u16(IDETIM + 2, IDETIM_DECODE_ENABLE);
    c.set_writable(IDETIM, &[0xFF; 4]);
    c.set_writable(SIDETIM, &[0xFF]);
    c
}

impl Piix3Ide {
    /// A controller without drives. DMA reaches guest RAM through `memory`; the channels
    /// interrupt on `primary_irq` (IRQ14) and `secondary_irq` (IRQ15).
    pub fn new(memory: Arc<dyn DmaMemory>, primary_irq: IrqLine, secondary_irq: IrqLine) -> Self {
        Self {
            config: reset_config(),
            channels: [Channel::new(0, primary_irq), Channel::new(1, secondary_irq)],
            memory,
        }
    }

    fn position(&self, channel: usize, unit: usize) -> Result<&AtaDevice, IdeError> {
        self.channels
            .get(channel)
            .and_then(|c| c.devices.get(unit))
            .ok_or(IdeError::NoSuchPosition { channel, unit })
    }

    fn position_mut(&mut self, channel: usize, unit: usize) -> Result<&mut AtaDevice, IdeError> {
        self.channels
            .get_mut(channel)
            .and_then(|c| c.devices.get_mut(unit))
            .ok_or(IdeError::NoSuchPosition { channel, unit })
    }

    fn cdrom_mut(&mut self, channel: usize, unit: usize) -> Result<&mut atapi::Cdrom, IdeError> {
        match &mut self.position_mut(channel, unit)?.kind {
            Kind::Cdrom(cd) => Ok(cd),
            _ => Err(IdeError::NotCdrom { channel, unit }),
        }
    }

    /// Attaches `drive` as `unit` (0 master, 1 slave) of `channel` (0 primary, 1 secondary).
    pub fn attach(&mut self, channel: usize, unit: usize, drive: Drive) -> Result<(), IdeError> {
        let device = self.position_mut(channel, unit)?;
        if device.present() {
            return Err(IdeError::PositionInUse { channel, unit });
        }
        device.kind = match drive {
            Drive::HardDisk(backend) => {
                if backend.len() < ata::SECTOR {
                    return Err(IdeError::DiskTooSmall(backend.len()));
                }
                Kind::Disk(Box::new(ata::Disk::new(backend)))
            }
            Drive::Cdrom(media) => Kind::Cdrom(Box::new(atapi::Cdrom::new(media))),
        };
        device.power_on_reset();
        Ok(())
    }

    /// Switches the hard disk at `channel`:`unit` to `backend`, an image of the same size with
    /// the same contents (a new snapshot layer over the one in use), after flushing the one in
    /// use, which it returns. The guest sees no change; call it with the machine paused.
    pub fn replace_disk_backend(
        &mut self,
        channel: usize,
        unit: usize,
        backend: Box<dyn BlockBackend>,
    ) -> Result<Box<dyn BlockBackend>, IdeError> {
        let device = self.position_mut(channel, unit)?;
        let Kind::Disk(disk) = &mut device.kind else {
            return Err(IdeError::NotDisk { channel, unit });
        };
        let (old, new) = (disk.backend.len(), backend.len());
        if old != new {
            return Err(IdeError::SizeChanged { old, new });
        }
        disk.backend
            .flush()
            .map_err(|e| IdeError::Flush(e.to_string()))?;
        Ok(std::mem::replace(&mut disk.backend, backend))
    }

    /// True when a drive is attached at `channel`:`unit`.
    pub fn is_attached(&self, channel: usize, unit: usize) -> bool {
        self.position(channel, unit).is_ok_and(AtaDevice::present)
    }

    /// Puts `media` into the CD-ROM drive at `channel`:`unit` (closing its tray) and returns
    /// the medium it replaced. The guest sees the change as a real drive reports it: NOT
    /// READY, then UNIT ATTENTION (medium may have changed), and a new-media event.
    pub fn insert_media(
        &mut self,
        channel: usize,
        unit: usize,
        media: Box<dyn BlockBackend>,
    ) -> Result<Option<Box<dyn BlockBackend>>, IdeError> {
        Ok(self.cdrom_mut(channel, unit)?.insert(media))
    }

    /// Takes the medium out of the CD-ROM drive at `channel`:`unit`, even if the guest
    /// locked it, and returns it.
    pub fn eject(
        &mut self,
        channel: usize,
        unit: usize,
    ) -> Result<Option<Box<dyn BlockBackend>>, IdeError> {
        Ok(self.cdrom_mut(channel, unit)?.eject())
    }

    /// True when the guest locked the medium in the CD-ROM drive (PREVENT MEDIUM REMOVAL).
    pub fn medium_locked(&self, channel: usize, unit: usize) -> Result<bool, IdeError> {
        match &self.position(channel, unit)?.kind {
            Kind::Cdrom(cd) => Ok(cd.locked),
            _ => Err(IdeError::NotCdrom { channel, unit }),
        }
    }

    /// True when the guest opened the CD-ROM drive's tray (START STOP UNIT with eject).
    pub fn tray_open(&self, channel: usize, unit: usize) -> Result<bool, IdeError> {
        match &self.position(channel, unit)?.kind {
            Kind::Cdrom(cd) => Ok(cd.tray_open),
            _ => Err(IdeError::NotCdrom { channel, unit }),
        }
    }

    /// The PCI configuration space.
    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    fn decodes(&self, channel: usize) -> bool {
        self.config.u16(IDETIM + 2 * channel) & IDETIM_DECODE_ENABLE != 0
    }

    /// Runs the channel's bus-master transfer if the engine is started, bus mastering is
    /// enabled and the selected drive waits for DMA.
    fn try_dma(&mut self, channel: usize) {
        if self.config.command() & pci::command::BUS_MASTER == 0 {
            return;
        }
        let c = &mut self.channels[channel];
        if !c.bm.running() {
            return;
        }
        let device = &mut c.devices[c.selected];
        let Some((to_memory, _)) = bus_master::DmaPort::dma_request(device) else {
            return;
        };
        if to_memory != c.bm.to_memory() {
            tracing::debug!(
                channel,
                "ide: bus-master direction does not match the command"
            );
            return;
        }
        let (end, moved) = bus_master::transfer(c.bm.prd_table, &*self.memory, device);
        match end {
            DmaEnd::Done { prd_left } => {
                if !prd_left {
                    c.bm.status &= !STATUS_ACTIVE;
                }
                device.dma_advance(moved);
            }
            DmaEnd::ShortTable => {
                c.bm.status &= !STATUS_ACTIVE;
                device.dma_advance(moved);
            }
            DmaEnd::MemoryError => {
                tracing::debug!(channel, "ide: bus-master access outside guest RAM");
                c.bm.status = (c.bm.status & !STATUS_ACTIVE) | STATUS_ERROR;
                device.dma_abort();
                self.config.set_status_bits(PCI_STATUS_MASTER_ABORT);
            }
            DmaEnd::DriveError => c.bm.status &= !STATUS_ACTIVE,
        }
        c.sync_irq();
    }

    fn read_port(&mut self, port: u16) -> u8 {
        let Some((channel, register)) = decode(port) else {
            return 0xFF;
        };
        if !self.decodes(channel) {
            return 0xFF;
        }
        let c = &mut self.channels[channel];
        let value = match register {
            // Byte access to the data register: 16-bit PIO only.
            Register::Command(0) => 0xFF,
            Register::Command(reg) => c.read_register(reg),
            Register::Control => c.alternate_status(),
        };
        c.sync_irq();
        value
    }

    fn write_port(&mut self, port: u16, value: u8) {
        let Some((channel, register)) = decode(port) else {
            return;
        };
        if !self.decodes(channel) {
            return;
        }
        let c = &mut self.channels[channel];
        match register {
            Register::Command(0) => {}
            Register::Command(reg) => c.write_register(reg, value),
            Register::Control => c.write_control(value),
        }
        self.try_dma(channel);
        self.channels[channel].sync_irq();
    }
}

impl Device for Piix3Ide {
    fn name(&self) -> &str {
        "piix3-ide"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn crate::saved_state::SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.config = reset_config();
        for c in &mut self.channels {
            c.power_on_reset();
        }
    }
}

impl PortIo for Piix3Ide {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        match decode(port) {
            Some((channel, Register::Command(0))) if data.len() >= 2 => {
                if self.decodes(channel) {
                    let c = &mut self.channels[channel];
                    c.read_data(data);
                    c.sync_irq();
                } else {
                    data.fill(0xFF);
                }
            }
            _ => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = self.read_port(port.wrapping_add(i as u16));
                }
            }
        }
    }

    fn io_write(&mut self, port: u16, data: &[u8]) {
        match decode(port) {
            Some((channel, Register::Command(0))) if data.len() >= 2 => {
                if self.decodes(channel) {
                    self.channels[channel].write_data(data);
                    self.try_dma(channel);
                    self.channels[channel].sync_irq();
                }
            }
            _ => {
                for (i, &b) in data.iter().enumerate() {
                    self.write_port(port.wrapping_add(i as u16), b);
                }
            }
        }
    }
}

impl PciFunction for Piix3Ide {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.config.read(usize::from(offset), data);
    }

    fn config_write(&mut self, offset: u8, data: &[u8]) {
        let before = self.config.command();
        self.config.write(usize::from(offset), data);
        let enabled = self.config.command() & !before & pci::command::BUS_MASTER != 0;
        if enabled {
            for channel in 0..2 {
                self.try_dma(channel);
            }
        }
    }

    fn config_space(&self) -> Option<&ConfigSpace> {
        Some(&self.config)
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *b = match self.channels.get((at / 8) as usize) {
                Some(c) if bar == BUS_MASTER_BAR => c.bm.read(at % 8),
                _ => 0xFF,
            };
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar != BUS_MASTER_BAR {
            return;
        }
        for (i, &value) in data.iter().enumerate() {
            let at = offset.saturating_add(i as u64);
            let channel = (at / 8) as usize;
            let Some(c) = self.channels.get_mut(channel) else {
                continue;
            };
            if c.bm.write(at % 8, value) == Control::Started {
                self.try_dma(channel);
            }
        }
    }
}
