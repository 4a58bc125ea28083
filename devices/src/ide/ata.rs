//! One device position on an IDE cable: the task-file registers every device latches, the PIO
//! data buffer, the interrupt request, and the ATA command set of hard disks. ATAPI drives use
//! the same frame; their commands are in [`super::atapi`].

use super::atapi::Cdrom;
use super::bus_master::DmaPort;
use crate::block::BlockBackend;
use std::io;

/// Status register: busy.
pub(super) const BSY: u8 = 0x80;
/// Status: device ready.
pub(super) const DRDY: u8 = 0x40;
/// Status: device seek complete.
pub(super) const DSC: u8 = 0x10;
/// Status: data request.
pub(super) const DRQ: u8 = 0x08;
/// Status: error.
pub(super) const ERR: u8 = 0x01;

/// Error register: command aborted.
pub(super) const ABRT: u8 = 0x04;
/// Error register: address not found.
const IDNF: u8 = 0x10;

/// Device/head register: device 1 selected.
pub(super) const DEV_SELECT: u8 = 0x10;
const DEV_HEAD: u8 = 0x0F;
const DEV_LBA: u8 = 0x40;
const DEV_OBSOLETE: u8 = 0xA0;

/// Bytes in an ATA sector.
pub(super) const SECTOR: u64 = 512;
pub(super) const MAX_MULTIPLE: u32 = 16;
/// Sectors a 28-bit command can address.
const LBA28_SECTORS: u64 = 0x0FFF_FFFF;
/// Largest capacity CHS translation covers (16383 × 16 × 63).
const CHS_LIMIT: u64 = 16_514_064;
pub(super) const FIRMWARE: &str = "1.0";
const DISK_MODEL: &str = "Terrarium HARDDISK";

/// ATA command codes.
pub(super) mod op {
    pub const DEVICE_RESET: u8 = 0x08;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NORETRY: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_NATIVE_MAX_EXT: u8 = 0x27;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NORETRY: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NORETRY: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const EXECUTE_DIAGNOSTIC: u8 = 0x90;
    pub const INITIALIZE_PARAMETERS: u8 = 0x91;
    pub const PACKET: u8 = 0xA0;
    pub const IDENTIFY_PACKET: u8 = 0xA1;
    pub const READ_MULTIPLE: u8 = 0xC4;
    pub const WRITE_MULTIPLE: u8 = 0xC5;
    pub const SET_MULTIPLE: u8 = 0xC6;
    pub const READ_DMA: u8 = 0xC8;
    pub const READ_DMA_NORETRY: u8 = 0xC9;
    pub const WRITE_DMA: u8 = 0xCA;
    pub const WRITE_DMA_NORETRY: u8 = 0xCB;
    pub const STANDBY_IMMEDIATE: u8 = 0xE0;
    pub const IDLE_IMMEDIATE: u8 = 0xE1;
    pub const STANDBY: u8 = 0xE2;
    pub const IDLE: u8 = 0xE3;
    pub const CHECK_POWER_MODE: u8 = 0xE5;
    pub const SLEEP: u8 = 0xE6;
    pub const FLUSH_CACHE: u8 = 0xE7;
    pub const FLUSH_CACHE_EXT: u8 = 0xEA;
    pub const IDENTIFY: u8 = 0xEC;
    pub const SET_FEATURES: u8 = 0xEF;
    pub const READ_NATIVE_MAX: u8 = 0xF8;
    /// Pre-ATA-4 codes of the power commands (0x94-0x99).
    pub const STANDBY_IMMEDIATE_OLD: u8 = 0x94;
    pub const CHECK_POWER_MODE_OLD: u8 = 0x98;
    pub const SLEEP_OLD: u8 = 0x99;
}

/// The command block registers, with the "previous content" bytes LBA48 reads through HOB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TaskFile {
    pub(super) feature: u8,
    pub(super) hob_feature: u8,
    pub(super) nsector: u8,
    pub(super) hob_nsector: u8,
    pub(super) sector: u8,
    pub(super) hob_sector: u8,
    pub(super) lcyl: u8,
    pub(super) hob_lcyl: u8,
    pub(super) hcyl: u8,
    pub(super) hob_hcyl: u8,
    pub(super) select: u8,
}

impl TaskFile {
    fn reset() -> Self {
        Self {
            select: DEV_OBSOLETE,
            ..Self::default()
        }
    }

    /// A host write to command block register `reg` (1..=6).
    pub(super) fn write(&mut self, reg: u16, value: u8) {
        let (current, previous) = match reg {
            1 => (&mut self.feature, &mut self.hob_feature),
            2 => (&mut self.nsector, &mut self.hob_nsector),
            3 => (&mut self.sector, &mut self.hob_sector),
            4 => (&mut self.lcyl, &mut self.hob_lcyl),
            5 => (&mut self.hcyl, &mut self.hob_hcyl),
            6 => {
                self.select = value | DEV_OBSOLETE;
                return;
            }
            _ => return,
        };
        *previous = *current;
        *current = value;
    }

    /// A host read of register `reg` (2..=5), the previous content when `hob` is set.
    pub(super) fn read(&self, reg: u16, hob: bool) -> u8 {
        match (reg, hob) {
            (2, false) => self.nsector,
            (2, true) => self.hob_nsector,
            (3, false) => self.sector,
            (3, true) => self.hob_sector,
            (4, false) => self.lcyl,
            (4, true) => self.hob_lcyl,
            (5, false) => self.hcyl,
            (5, true) => self.hob_hcyl,
            _ => 0,
        }
    }

    fn lba28(&self) -> u64 {
        u64::from(self.select & DEV_HEAD) << 24
            | u64::from(self.hcyl) << 16
            | u64::from(self.lcyl) << 8
            | u64::from(self.sector)
    }

    fn lba48(&self) -> u64 {
        u64::from(self.hob_hcyl) << 40
            | u64::from(self.hob_lcyl) << 32
            | u64::from(self.hob_sector) << 24
            | u64::from(self.hcyl) << 16
            | u64::from(self.lcyl) << 8
            | u64::from(self.sector)
    }

    fn count28(&self) -> u32 {
        match self.nsector {
            0 => 256,
            n => u32::from(n),
        }
    }

    fn count48(&self) -> u32 {
        match u32::from(self.hob_nsector) << 8 | u32::from(self.nsector) {
            0 => 65536,
            n => n,
        }
    }

    /// The ATAPI byte count limit (LBA mid/high).
    pub(super) fn byte_count(&self) -> u16 {
        u16::from(self.lcyl) | u16::from(self.hcyl) << 8
    }

    /// Stores `lba` back into the address registers in the command's addressing mode.
    fn set_position(&mut self, lba: u64, addressing: Addressing, chs: Chs) {
        match addressing {
            Addressing::Lba48 => {
                self.sector = lba as u8;
                self.lcyl = (lba >> 8) as u8;
                self.hcyl = (lba >> 16) as u8;
                self.hob_sector = (lba >> 24) as u8;
                self.hob_lcyl = (lba >> 32) as u8;
                self.hob_hcyl = (lba >> 40) as u8;
            }
            Addressing::Lba28 => {
                self.select = (self.select & !DEV_HEAD) | ((lba >> 24) as u8 & DEV_HEAD);
                self.hcyl = (lba >> 16) as u8;
                self.lcyl = (lba >> 8) as u8;
                self.sector = lba as u8;
            }
            Addressing::Chs => {
                let per_cylinder = u64::from(chs.heads) * u64::from(chs.sectors);
                if per_cylinder == 0 {
                    return;
                }
                let cylinder = lba / per_cylinder;
                let rest = lba % per_cylinder;
                self.hcyl = (cylinder >> 8) as u8;
                self.lcyl = cylinder as u8;
                let head = (rest / u64::from(chs.sectors)) as u8;
                self.select = (self.select & !DEV_HEAD) | (head & DEV_HEAD);
                self.sector = (rest % u64::from(chs.sectors)) as u8 + 1;
            }
        }
    }

    fn set_count(&mut self, count: u32, addressing: Addressing) {
        self.nsector = count as u8;
        if addressing == Addressing::Lba48 {
            self.hob_nsector = (count >> 8) as u8;
        }
    }
}

/// A cylinder/head/sector geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chs {
    pub(super) cylinders: u16,
    pub(super) heads: u8,
    pub(super) sectors: u8,
}

impl Chs {
    /// The default translation for `total` sectors: 16 heads, 63 sectors, 2–16383 cylinders.
    pub(super) fn for_capacity(total: u64) -> Self {
        Self {
            cylinders: (total / (16 * 63)).clamp(2, 16383) as u16,
            heads: 16,
            sectors: 63,
        }
    }

    fn capacity(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }
}

/// The DMA mode SET FEATURES selected (reported in IDENTIFY words 63 and 88).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DmaMode {
    /// Multiword DMA mode 0-2.
    Multiword(u8),
    /// Ultra DMA mode 0-5.
    Ultra(u8),
}

impl DmaMode {
    pub(super) const DEFAULT: Self = Self::Ultra(5);

    /// IDENTIFY words 63 and 88: modes supported, and the selected one.
    pub(super) fn words(self) -> (u16, u16) {
        let (mut w63, mut w88) = (0x0007, 0x003F);
        match self {
            Self::Multiword(n) => w63 |= 0x100 << n,
            Self::Ultra(n) => w88 |= 0x100 << n,
        }
        (w63, w88)
    }

    /// SET FEATURES 03h: applies the transfer mode in the sector count register, false when
    /// the mode is not supported.
    pub(super) fn set(&mut self, value: u8) -> bool {
        let n = value & 0x07;
        match value >> 3 {
            0 => true,
            1 => n <= 4,
            4 if n <= 2 => {
                *self = Self::Multiword(n);
                true
            }
            8 if n <= 5 => {
                *self = Self::Ultra(n);
                true
            }
            _ => false,
        }
    }
}

/// How a data command addressed its first sector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Addressing {
    #[default]
    Lba28,
    Lba48,
    Chs,
}

/// Progress of a PIO or DMA data command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Xfer {
    pub(super) lba: u64,
    pub(super) remaining: u32,
    pub(super) block: u32,
    pub(super) addressing: Addressing,
    pub(super) write: bool,
}

/// An ATA hard disk.
pub(super) struct Disk {
    pub(super) backend: Box<dyn BlockBackend>,
    pub(super) sectors: u64,
    default_chs: Chs,
    pub(super) chs: Chs,
    pub(super) multiple: u32,
    pub(super) write_cache: bool,
    pub(super) mode: DmaMode,
    pub(super) xfer: Xfer,
}

impl Disk {
    pub(super) fn new(backend: Box<dyn BlockBackend>) -> Self {
        let sectors = backend.len() / SECTOR;
        let chs = Chs::for_capacity(sectors);
        Self {
            backend,
            sectors,
            default_chs: chs,
            chs,
            multiple: MAX_MULTIPLE,
            write_cache: true,
            mode: DmaMode::DEFAULT,
            xfer: Xfer::default(),
        }
    }

    fn power_on(&mut self) {
        self.chs = self.default_chs;
        self.multiple = MAX_MULTIPLE;
        self.write_cache = true;
        self.mode = DmaMode::DEFAULT;
        self.xfer = Xfer::default();
    }

    /// First sector, count and addressing mode of the data command in `regs`, if the whole
    /// range exists.
    fn range(&self, regs: &TaskFile, ext: bool) -> Option<(u64, u32, Addressing)> {
        let (lba, count, addressing, limit) = if ext {
            (
                regs.lba48(),
                regs.count48(),
                Addressing::Lba48,
                self.sectors,
            )
        } else if regs.select & DEV_LBA != 0 {
            let limit = self.sectors.min(LBA28_SECTORS);
            (regs.lba28(), regs.count28(), Addressing::Lba28, limit)
        } else {
            let chs = self.chs;
            let cylinder = u64::from(regs.lcyl) | u64::from(regs.hcyl) << 8;
            let head = regs.select & DEV_HEAD;
            let sector = regs.sector;
            if sector == 0
                || sector > chs.sectors
                || head >= chs.heads
                || cylinder >= u64::from(chs.cylinders)
            {
                return None;
            }
            let lba = (cylinder * u64::from(chs.heads) + u64::from(head)) * u64::from(chs.sectors)
                + u64::from(sector - 1);
            let limit = self.sectors.min(chs.capacity());
            (lba, regs.count28(), Addressing::Chs, limit)
        };
        let end = lba.checked_add(u64::from(count))?;
        (end <= limit).then_some((lba, count, addressing))
    }

    fn identify(&self, serial: &str, unit: u8) -> Identify {
        let mut id = Identify::new();
        let d = self.default_chs;
        id.set(0, 0x0040);
        id.set(1, d.cylinders);
        id.set(3, u16::from(d.heads));
        id.set(4, 512 * u16::from(d.sectors));
        id.set(5, 512);
        id.set(6, u16::from(d.sectors));
        id.string(10, 20, serial);
        id.set(20, 3);
        id.set(21, 512);
        id.set(22, 4);
        id.string(23, 8, FIRMWARE);
        id.string(27, 40, DISK_MODEL);
        id.set(47, 0x8000 | MAX_MULTIPLE as u16);
        id.set(48, 1);
        id.set(49, 1 << 11 | 1 << 9 | 1 << 8);
        id.set(51, 0x200);
        id.set(52, 0x200);
        id.set(53, 0x0007);
        let c = self.chs;
        id.set(54, c.cylinders);
        id.set(55, u16::from(c.heads));
        id.set(56, u16::from(c.sectors));
        let current = c.capacity().min(u64::from(u32::MAX)) as u32;
        id.set(57, current as u16);
        id.set(58, (current >> 16) as u16);
        if self.multiple > 0 {
            id.set(59, 0x100 | self.multiple as u16);
        }
        let lba28 = self.sectors.min(LBA28_SECTORS) as u32;
        id.set(60, lba28 as u16);
        id.set(61, (lba28 >> 16) as u16);
        let (w63, w88) = self.mode.words();
        id.set(63, w63);
        id.set(64, 0x0003);
        for w in 65..=68 {
            id.set(w, 120);
        }
        id.set(80, 0x00F0);
        id.set(81, 0x0016);
        id.set(82, 1 << 14 | 1 << 5);
        id.set(83, 1 << 14 | 1 << 13 | 1 << 12 | 1 << 10);
        id.set(84, 1 << 14);
        id.set(85, 1 << 14 | u16::from(self.write_cache) << 5);
        id.set(86, 1 << 13 | 1 << 12 | 1 << 10);
        id.set(87, 1 << 14);
        id.set(88, w88);
        id.set(93, reset_result(unit));
        for i in 0..4 {
            id.set(100 + i, (self.sectors >> (16 * i)) as u16);
        }
        id
    }
}

/// IDENTIFY word 93 (hardware reset result) as a device on an 80-conductor cable reports it.
pub(super) fn reset_result(unit: u8) -> u16 {
    if unit == 0 {
        0x600B
    } else {
        0x6B00
    }
}

/// 256 IDENTIFY words, written out with the integrity word.
pub(super) struct Identify([u16; 256]);

impl Identify {
    pub(super) fn new() -> Self {
        Self([0; 256])
    }

    pub(super) fn set(&mut self, word: usize, value: u16) {
        if let Some(w) = self.0.get_mut(word) {
            *w = value;
        }
    }

    /// An ATA string of `len` bytes at `word`: two characters a word, the first in the high
    /// byte, padded with spaces.
    pub(super) fn string(&mut self, word: usize, len: usize, text: &str) {
        let bytes = text.as_bytes();
        for i in (0..len).step_by(2) {
            let hi = bytes.get(i).copied().unwrap_or(b' ');
            let lo = bytes.get(i + 1).copied().unwrap_or(b' ');
            self.set(word + i / 2, u16::from(hi) << 8 | u16::from(lo));
        }
    }

    /// The 512-byte block, with signature A5h and checksum in word 255.
    pub(super) fn bytes(mut self) -> [u8; 512] {
        self.0[255] = 0x00A5;
        let mut out = [0u8; 512];
        for (i, w) in self.0.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
        let sum = out[..511].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        out[511] = sum.wrapping_neg();
        out
    }
}

/// What a drive is at a position.
pub(super) enum Kind {
    Absent,
    Disk(Box<Disk>),
    Cdrom(Box<Cdrom>),
}

/// What runs when the current PIO block has been transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Nothing more: the command is over.
    Stop,
    /// Load the next block of a sector read.
    ReadBlock,
    /// Store the block of a sector write.
    WriteBlock,
    /// Execute the ATAPI command packet.
    Packet,
    /// Send the next ATAPI data chunk.
    PacketData,
}

/// The PIO data phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Idle,
    /// Device to host.
    In(Next),
    /// Host to device.
    Out(Next),
}

/// A data command waiting for (or in the middle of) its bus-master transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DmaRequest {
    pub(super) to_memory: bool,
    pub(super) total: u64,
    pub(super) done: u64,
}

/// Why reading the medium failed.
pub(super) enum Fault {
    NoMedia,
    Io(io::Error),
}

/// Reads `buf` at `offset` after checking the range lies inside the image.
pub(super) fn read_checked(
    backend: &mut dyn BlockBackend,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let end = offset.checked_add(buf.len() as u64);
    if end.is_none_or(|end| end > backend.len()) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "read beyond the end of the image",
        ));
    }
    backend.read_at(offset, buf)
}

fn write_checked(backend: &mut dyn BlockBackend, offset: u64, buf: &[u8]) -> io::Result<()> {
    let end = offset.checked_add(buf.len() as u64);
    if end.is_none_or(|end| end > backend.len()) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "write beyond the end of the image",
        ));
    }
    backend.write_at(offset, buf)
}

/// One device position (master or slave) of a channel. The registers exist whether or not a
/// drive is attached, as both devices latch every command block write.
pub(super) struct AtaDevice {
    pub(super) serial: String,
    pub(super) unit: u8,
    pub(super) regs: TaskFile,
    pub(super) status: u8,
    pub(super) error: u8,
    /// The device's INTRQ is pending (cleared by a Status read or a new command).
    pub(super) intrq: bool,
    /// INTRQ was (re)asserted since the channel last looked.
    pub(super) irq_event: bool,
    pub(super) kind: Kind,
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) end: usize,
    pub(super) phase: Phase,
    pub(super) dma: Option<DmaRequest>,
    io_error_logged: bool,
}

impl AtaDevice {
    pub(super) fn new(channel: usize, unit: usize) -> Self {
        let mut device = Self {
            serial: format!("TM{:05}", channel * 2 + unit + 1),
            unit: unit as u8,
            regs: TaskFile::reset(),
            status: 0,
            error: 0,
            intrq: false,
            irq_event: false,
            kind: Kind::Absent,
            buf: vec![0; SECTOR as usize],
            pos: 0,
            end: 0,
            phase: Phase::Idle,
            dma: None,
            io_error_logged: false,
        };
        device.power_on_reset();
        device
    }

    pub(super) fn present(&self) -> bool {
        !matches!(self.kind, Kind::Absent)
    }

    /// Power-on or hardware reset: registers, signature and drive settings.
    pub(super) fn power_on_reset(&mut self) {
        match &mut self.kind {
            Kind::Disk(disk) => disk.power_on(),
            Kind::Cdrom(cd) => cd.power_on(),
            Kind::Absent => {}
        }
        self.reset_registers();
        self.status = if self.present() { DRDY | DSC } else { 0 };
    }

    fn reset_registers(&mut self) {
        self.stop_transfer();
        self.dma = None;
        self.intrq = false;
        self.irq_event = false;
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.reply = None;
        }
        self.regs = TaskFile::reset();
        self.set_signature();
        self.error = 0x01;
    }

    /// SRST asserted: everything stops and the device is busy until SRST is released.
    pub(super) fn begin_soft_reset(&mut self) {
        self.stop_transfer();
        self.dma = None;
        self.intrq = false;
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.reply = None;
        }
        if self.present() {
            self.status = BSY;
        }
    }

    /// SRST released: the device shows its signature; settings are kept.
    pub(super) fn finish_soft_reset(&mut self) {
        self.reset_registers();
        self.status = match self.kind {
            Kind::Disk(_) => DRDY | DSC,
            _ => 0,
        };
    }

    /// The signature in sector count, LBA low, mid and high.
    pub(super) fn set_signature(&mut self) {
        self.regs.select &= !DEV_HEAD;
        self.regs.nsector = 1;
        self.regs.sector = 1;
        (self.regs.lcyl, self.regs.hcyl) = match self.kind {
            Kind::Disk(_) => (0x00, 0x00),
            Kind::Cdrom(_) => (0x14, 0xEB),
            Kind::Absent => (0xFF, 0xFF),
        };
    }

    /// EXECUTE DEVICE DIAGNOSTIC: signature, code 01h (passed); packet devices leave Status 0.
    pub(super) fn diagnostic(&mut self) {
        self.stop_transfer();
        self.dma = None;
        self.set_signature();
        self.error = 0x01;
        if matches!(self.kind, Kind::Disk(_)) {
            self.status = DRDY | DSC;
            self.raise_irq();
        } else {
            self.status = 0;
        }
    }

    pub(super) fn raise_irq(&mut self) {
        self.intrq = true;
        self.irq_event = true;
    }

    pub(super) fn stop_transfer(&mut self) {
        self.phase = Phase::Idle;
        self.pos = 0;
        self.end = 0;
        self.status &= !DRQ;
    }

    /// Offers `len` bytes of `buf` to the host.
    pub(super) fn start_in(&mut self, len: usize, next: Next) {
        self.pos = 0;
        self.end = len.min(self.buf.len());
        self.phase = Phase::In(next);
        self.status |= DRQ;
    }

    /// Asks the host for `len` bytes.
    pub(super) fn start_out(&mut self, len: usize, next: Next) {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.pos = 0;
        self.end = len;
        self.phase = Phase::Out(next);
        self.status |= DRQ;
    }

    fn complete(&mut self) {
        self.status = DRDY | DSC;
        self.raise_irq();
    }

    /// Ends the command with ABRT.
    pub(super) fn abort(&mut self) {
        self.fail(ABRT);
    }

    fn fail(&mut self, error: u8) {
        self.stop_transfer();
        self.dma = None;
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.reply = None;
        }
        self.status = DRDY | ERR;
        self.error = error;
        self.raise_irq();
    }

    /// Logs a medium error: the first one as a warning, later ones at debug level.
    pub(super) fn io_error(&mut self, what: &str, error: &io::Error) {
        if self.io_error_logged {
            tracing::debug!(serial = %self.serial, %error, "ide: {what} failed");
        } else {
            self.io_error_logged = true;
            tracing::warn!(serial = %self.serial, %error, "ide: {what} failed");
        }
    }

    /// A host read of the data register (2 or 4 bytes).
    pub(super) fn data_read(&mut self, out: &mut [u8]) {
        let Phase::In(next) = self.phase else {
            out.fill(0);
            return;
        };
        if self.status & DRQ == 0 {
            out.fill(0);
            return;
        }
        for b in out.iter_mut() {
            *b = if self.pos < self.end {
                self.pos += 1;
                self.buf[self.pos - 1]
            } else {
                0
            };
        }
        if self.pos >= self.end {
            self.stop_transfer();
            match next {
                Next::ReadBlock => self.read_block(),
                Next::PacketData => self.packet_data_next(),
                Next::Stop | Next::WriteBlock | Next::Packet => {}
            }
        }
    }

    /// A host write of the data register (2 or 4 bytes).
    pub(super) fn data_write(&mut self, data: &[u8]) {
        let Phase::Out(next) = self.phase else {
            return;
        };
        if self.status & DRQ == 0 {
            return;
        }
        for &b in data {
            if self.pos < self.end {
                self.buf[self.pos] = b;
                self.pos += 1;
            }
        }
        if self.pos >= self.end {
            self.stop_transfer();
            match next {
                Next::WriteBlock => self.write_block(),
                Next::Packet => self.execute_packet(),
                Next::Stop | Next::ReadBlock | Next::PacketData => {}
            }
        }
    }

    /// True when the device takes command `cmd` now: only DEVICE RESET to a packet device
    /// gets through while BSY or DRQ is set.
    pub(super) fn accepts(&self, cmd: u8) -> bool {
        self.status & (BSY | DRQ) == 0
            || (cmd == op::DEVICE_RESET && matches!(self.kind, Kind::Cdrom(_)))
    }

    /// A write of the command register to this (present) device.
    pub(super) fn command(&mut self, cmd: u8) {
        if !self.accepts(cmd) {
            tracing::debug!(cmd, status = self.status, "ide: command while busy ignored");
            return;
        }
        self.intrq = false;
        self.error = 0;
        match self.kind {
            Kind::Disk(_) => self.disk_command(cmd),
            Kind::Cdrom(_) => self.cdrom_command(cmd),
            Kind::Absent => {}
        }
    }

    fn disk_command(&mut self, cmd: u8) {
        match cmd {
            op::IDENTIFY => self.identify(),
            op::READ_SECTORS | op::READ_SECTORS_NORETRY => self.read_pio(false, false),
            op::READ_SECTORS_EXT => self.read_pio(true, false),
            op::READ_MULTIPLE => self.read_pio(false, true),
            op::READ_MULTIPLE_EXT => self.read_pio(true, true),
            op::WRITE_SECTORS | op::WRITE_SECTORS_NORETRY => self.write_pio(false, false),
            op::WRITE_SECTORS_EXT => self.write_pio(true, false),
            op::WRITE_MULTIPLE => self.write_pio(false, true),
            op::WRITE_MULTIPLE_EXT => self.write_pio(true, true),
            op::READ_DMA | op::READ_DMA_NORETRY => self.start_dma(false, false),
            op::READ_DMA_EXT => self.start_dma(true, false),
            op::WRITE_DMA | op::WRITE_DMA_NORETRY => self.start_dma(false, true),
            op::WRITE_DMA_EXT => self.start_dma(true, true),
            op::READ_VERIFY | op::READ_VERIFY_NORETRY => self.verify(false),
            op::READ_VERIFY_EXT => self.verify(true),
            op::SET_MULTIPLE => self.set_multiple(),
            op::INITIALIZE_PARAMETERS => self.initialize_parameters(),
            op::EXECUTE_DIAGNOSTIC => self.diagnostic(),
            op::FLUSH_CACHE | op::FLUSH_CACHE_EXT => {
                if self.flush() {
                    self.complete();
                }
            }
            op::SET_FEATURES => self.set_features(),
            op::READ_NATIVE_MAX => self.native_max(false),
            op::READ_NATIVE_MAX_EXT => self.native_max(true),
            // RECALIBRATE (1xh) and SEEK (7xh).
            0x10..=0x1F | 0x70..=0x7F => self.complete(),
            op::CHECK_POWER_MODE | op::CHECK_POWER_MODE_OLD => {
                self.regs.nsector = 0xFF;
                self.complete();
            }
            op::STANDBY_IMMEDIATE
            | op::IDLE_IMMEDIATE
            | op::STANDBY
            | op::IDLE
            | op::SLEEP
            | op::STANDBY_IMMEDIATE_OLD..=0x97
            | op::SLEEP_OLD => self.complete(),
            _ => {
                tracing::debug!(cmd, "ide: unsupported ATA command aborted");
                self.abort();
            }
        }
    }

    fn identify(&mut self) {
        let Kind::Disk(disk) = &self.kind else {
            return self.abort();
        };
        let block = disk.identify(&self.serial, self.unit).bytes();
        self.buf[..512].copy_from_slice(&block);
        self.status = DRDY | DSC;
        self.start_in(512, Next::Stop);
        self.raise_irq();
    }

    /// Sets up a PIO transfer of the sectors the registers name, in blocks of one sector or of
    /// the MULTIPLE size; aborts (and returns `None`) when the command cannot run.
    fn begin_pio(&mut self, ext: bool, multiple: bool, write: bool) -> Option<Xfer> {
        let Kind::Disk(disk) = &mut self.kind else {
            self.abort();
            return None;
        };
        let block = if multiple { disk.multiple } else { 1 };
        if block == 0 || (write && disk.backend.read_only()) {
            self.abort();
            return None;
        }
        let Some((lba, remaining, addressing)) = disk.range(&self.regs, ext) else {
            self.fail(IDNF);
            return None;
        };
        disk.xfer = Xfer {
            lba,
            remaining,
            block,
            addressing,
            write,
        };
        Some(disk.xfer)
    }

    fn read_pio(&mut self, ext: bool, multiple: bool) {
        if self.begin_pio(ext, multiple, false).is_some() {
            self.read_block();
        }
    }

    /// Loads the next block of a PIO read and raises INTRQ, or ends the command.
    fn read_block(&mut self) {
        let Kind::Disk(disk) = &mut self.kind else {
            return;
        };
        let x = disk.xfer;
        if x.remaining == 0 {
            self.status = DRDY | DSC;
            return;
        }
        let n = x.remaining.min(x.block);
        let len = n as usize * SECTOR as usize;
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        if let Err(e) = read_checked(&mut *disk.backend, x.lba * SECTOR, &mut self.buf[..len]) {
            self.io_error("disk read", &e);
            return self.abort();
        }
        disk.xfer.lba += u64::from(n);
        disk.xfer.remaining -= n;
        let chs = disk.chs;
        self.regs
            .set_position(x.lba + u64::from(n), x.addressing, chs);
        self.regs.set_count(x.remaining - n, x.addressing);
        self.status = DRDY | DSC;
        self.start_in(len, Next::ReadBlock);
        self.raise_irq();
    }

    fn write_pio(&mut self, ext: bool, multiple: bool) {
        let Some(x) = self.begin_pio(ext, multiple, true) else {
            return;
        };
        self.status = DRDY | DSC;
        self.start_out(
            x.remaining.min(x.block) as usize * SECTOR as usize,
            Next::WriteBlock,
        );
    }

    /// Stores the block the host wrote; asks for the next one or ends the command.
    fn write_block(&mut self) {
        let Kind::Disk(disk) = &mut self.kind else {
            return;
        };
        let x = disk.xfer;
        let n = x.remaining.min(x.block);
        if n == 0 {
            return;
        }
        let len = n as usize * SECTOR as usize;
        if let Err(e) = write_checked(&mut *disk.backend, x.lba * SECTOR, &self.buf[..len]) {
            self.io_error("disk write", &e);
            return self.abort();
        }
        disk.xfer.lba += u64::from(n);
        disk.xfer.remaining -= n;
        let remaining = x.remaining - n;
        let (chs, write_cache) = (disk.chs, disk.write_cache);
        self.regs
            .set_position(x.lba + u64::from(n), x.addressing, chs);
        self.regs.set_count(remaining, x.addressing);
        if remaining > 0 {
            self.status = DRDY | DSC;
            self.start_out(
                remaining.min(x.block) as usize * SECTOR as usize,
                Next::WriteBlock,
            );
            self.raise_irq();
        } else if write_cache || self.flush() {
            self.complete();
        }
    }

    fn start_dma(&mut self, ext: bool, write: bool) {
        let Kind::Disk(disk) = &mut self.kind else {
            return self.abort();
        };
        if write && disk.backend.read_only() {
            return self.abort();
        }
        let Some((lba, count, addressing)) = disk.range(&self.regs, ext) else {
            return self.fail(IDNF);
        };
        disk.xfer = Xfer {
            lba,
            remaining: count,
            block: count,
            addressing,
            write,
        };
        self.dma = Some(DmaRequest {
            to_memory: !write,
            total: u64::from(count) * SECTOR,
            done: 0,
        });
        self.status = DRDY | DSC | DRQ;
    }

    /// Accounts `moved` bytes of the pending DMA; at the end the command completes.
    pub(super) fn dma_advance(&mut self, moved: u64) {
        let Some(req) = &mut self.dma else {
            return;
        };
        req.done = req.done.saturating_add(moved).min(req.total);
        if req.done < req.total {
            return;
        }
        self.dma = None;
        self.status &= !DRQ;
        match &mut self.kind {
            Kind::Disk(disk) => {
                let x = disk.xfer;
                disk.xfer.lba += u64::from(x.remaining);
                disk.xfer.remaining = 0;
                let (chs, write_cache) = (disk.chs, disk.write_cache);
                self.regs
                    .set_position(x.lba + u64::from(x.remaining), x.addressing, chs);
                self.regs.set_count(0, x.addressing);
                if !x.write || write_cache || self.flush() {
                    self.complete();
                }
            }
            Kind::Cdrom(cd) => {
                cd.reply = None;
                self.packet_ok();
            }
            Kind::Absent => {}
        }
    }

    /// The bus master failed (PCI abort): the command ends with ABRT.
    pub(super) fn dma_abort(&mut self) {
        if self.dma.is_some() {
            self.abort();
        }
    }

    fn verify(&mut self, ext: bool) {
        let Kind::Disk(disk) = &self.kind else {
            return self.abort();
        };
        let Some((lba, count, addressing)) = disk.range(&self.regs, ext) else {
            return self.fail(IDNF);
        };
        let chs = disk.chs;
        self.regs
            .set_position(lba + u64::from(count), addressing, chs);
        self.regs.set_count(0, addressing);
        self.complete();
    }

    fn set_multiple(&mut self) {
        let Kind::Disk(disk) = &mut self.kind else {
            return self.abort();
        };
        let n = u32::from(self.regs.nsector);
        if n > MAX_MULTIPLE || (n != 0 && !n.is_power_of_two()) {
            return self.abort();
        }
        disk.multiple = n;
        self.complete();
    }

    fn initialize_parameters(&mut self) {
        let Kind::Disk(disk) = &mut self.kind else {
            return self.abort();
        };
        let sectors = self.regs.nsector;
        let heads = (self.regs.select & DEV_HEAD) + 1;
        if sectors == 0 {
            return self.abort();
        }
        let per_cylinder = u64::from(heads) * u64::from(sectors);
        let cylinders = (disk.sectors.min(CHS_LIMIT) / per_cylinder).min(65535) as u16;
        disk.chs = Chs {
            cylinders,
            heads,
            sectors,
        };
        self.complete();
    }

    fn native_max(&mut self, ext: bool) {
        let Kind::Disk(disk) = &self.kind else {
            return self.abort();
        };
        let (last, addressing) = if ext {
            (disk.sectors - 1, Addressing::Lba48)
        } else {
            (disk.sectors.min(LBA28_SECTORS) - 1, Addressing::Lba28)
        };
        let chs = disk.chs;
        self.regs.set_position(last, addressing, chs);
        self.complete();
    }

    /// Flushes the disk; on failure the command is aborted and false returned.
    fn flush(&mut self) -> bool {
        let Kind::Disk(disk) = &mut self.kind else {
            return true;
        };
        match disk.backend.flush() {
            Ok(()) => true,
            Err(e) => {
                self.io_error("disk flush", &e);
                self.abort();
                false
            }
        }
    }

    pub(super) fn set_features(&mut self) {
        let (feature, value) = (self.regs.feature, self.regs.nsector);
        let ok = match &mut self.kind {
            Kind::Disk(disk) => match feature {
                0x02 => {
                    disk.write_cache = true;
                    true
                }
                0x82 => {
                    disk.write_cache = false;
                    if !self.flush() {
                        return;
                    }
                    true
                }
                0x03 => disk.mode.set(value),
                // Power-on defaults, read look-ahead, APM, AAM: accepted, nothing to do.
                0x05 | 0x42 | 0x55 | 0x66 | 0x85 | 0xAA | 0xC2 | 0xCC => true,
                _ => false,
            },
            Kind::Cdrom(cd) => match feature {
                0x03 => cd.mode.set(value),
                0x02 | 0x55 | 0x66 | 0x82 | 0xAA | 0xCC => true,
                _ => false,
            },
            Kind::Absent => false,
        };
        if ok {
            self.complete();
        } else {
            tracing::debug!(feature, value, "ide: SET FEATURES subcommand aborted");
            self.abort();
        }
    }
}

impl DmaPort for AtaDevice {
    fn dma_request(&self) -> Option<(bool, u64)> {
        self.dma.map(|r| (r.to_memory, r.total - r.done))
    }

    fn dma_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let Some(req) = self.dma else {
            return false;
        };
        let at = req.done.saturating_add(offset);
        let result = match &mut self.kind {
            Kind::Disk(disk) => {
                let start = disk.xfer.lba * SECTOR + at;
                read_checked(&mut *disk.backend, start, buf).map_err(Fault::Io)
            }
            Kind::Cdrom(cd) => cd.fill(at, buf),
            Kind::Absent => return false,
        };
        match result {
            Ok(()) => true,
            Err(fault) => {
                self.medium_fault(fault);
                false
            }
        }
    }

    fn dma_write(&mut self, offset: u64, data: &[u8]) -> bool {
        let Some(req) = self.dma else {
            return false;
        };
        let Kind::Disk(disk) = &mut self.kind else {
            return false;
        };
        let start = disk.xfer.lba * SECTOR + req.done.saturating_add(offset);
        match write_checked(&mut *disk.backend, start, data) {
            Ok(()) => true,
            Err(e) => {
                self.io_error("disk write", &e);
                self.abort();
                false
            }
        }
    }
}

impl AtaDevice {
    /// Ends the current command after the medium failed: ABRT for a disk, a CHECK CONDITION
    /// for a packet device.
    pub(super) fn medium_fault(&mut self, fault: Fault) {
        match (&self.kind, fault) {
            (Kind::Cdrom(cd), Fault::NoMedia) => {
                let sense = cd.not_ready();
                self.check_condition(sense);
            }
            (Kind::Cdrom(_), Fault::Io(e)) => {
                self.io_error("CD-ROM read", &e);
                self.check_condition(super::atapi::Sense::READ_ERROR);
            }
            (_, Fault::Io(e)) => {
                self.io_error("disk read", &e);
                self.abort();
            }
            (_, Fault::NoMedia) => self.abort(),
        }
    }
}
