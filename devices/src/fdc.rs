//! Floppy disk controller: an Intel 82077AA-compatible FDC as in a PIIX3 PC, at ports
//! 0x3F0-0x3F5 and 0x3F7 (0x3F6 belongs to the primary IDE channel), interrupting on IRQ 6 and
//! moving data through ISA DMA channel 2 or, after SPECIFY with the non-DMA bit, by programmed
//! I/O through the data FIFO.
//!
//! Registers: SRA/SRB (read as QEMU's default model shows them), DOR (drive select, motor
//! bits, reset, DMA/interrupt gate), TDR, MSR/DSR, the data FIFO and DIR/CCR (disk change line,
//! data rate). Commands: READ DATA, READ DELETED DATA, READ TRACK, WRITE DATA, WRITE DELETED
//! DATA, VERIFY, READ ID, FORMAT TRACK, SPECIFY, SENSE DRIVE STATUS, SENSE INTERRUPT STATUS,
//! RECALIBRATE, SEEK, RELATIVE SEEK, VERSION, CONFIGURE, LOCK, DUMPREG, PERPENDICULAR MODE,
//! PART ID and DRIVE SPECIFICATION; anything else answers ST0 = 0x80 (invalid command).
//!
//! Media geometry comes from the image size ([`FloppyFormat::from_size`]). Sectors are
//! addressed by the ID fields of the command (cylinder, head, sector), as a controller with
//! implied seeks would find them; a read or write ends on terminal count from the DMA
//! controller (normal termination) or after the EOT sector (abnormal termination with the
//! end-of-cylinder bit, as the hardware reports it in non-DMA mode).
//!
//! Lock order: the controller locks the [`Dma8237`] while it holds its own lock; the DMA
//! controller never locks the FDC (it wakes it through a [`TimerWaker`], after which the
//! machine calls [`Poll::poll`]).

use crate::block::BlockBackend;
use crate::bus::lock;
use crate::dma::{Dma8237, DmaStatus};
use crate::rtc::FloppyType;
use crate::{Device, IrqLine, Poll, PortIo, TimerWaker};
use std::sync::{Arc, Mutex};

/// Port ranges the controller answers: `(first port, count)`.
pub const FDC_PORT_RANGES: [(u16, u16); 2] = [(0x3F0, 6), (0x3F7, 1)];
/// ISA interrupt line of the controller.
pub const FDC_IRQ: u32 = 6;
/// ISA DMA channel of the controller.
pub const FDC_DMA_CHANNEL: usize = 2;
/// Drive units the controller addresses (the DOR selects 0-3; CMOS describes 0 and 1).
pub const FDC_DRIVES: usize = 4;
/// Bytes per sector of every supported format (size code 2).
pub const SECTOR_SIZE: usize = 512;

/// Answer to the VERSION command (an enhanced controller).
pub const FDC_VERSION: u8 = 0x90;
/// Answer to the PART ID command.
pub const FDC_PART_ID: u8 = 0x41;

// Register offsets (port & 7).
const REG_SRA: u16 = 0;
const REG_SRB: u16 = 1;
const REG_DOR: u16 = 2;
const REG_TDR: u16 = 3;
const REG_MSR: u16 = 4;
const REG_FIFO: u16 = 5;
const REG_DIR: u16 = 7;

const DOR_SELECT: u8 = 0x03;
const DOR_NRESET: u8 = 0x04;
const DOR_DMA_GATE: u8 = 0x08;
const DOR_MOTOR0: u8 = 0x10;
const DOR_MOTOR1: u8 = 0x20;

const DSR_RATE: u8 = 0x03;
const DSR_RESET: u8 = 0x80;

const MSR_RQM: u8 = 0x80;
const MSR_DIO: u8 = 0x40;
const MSR_NDMA: u8 = 0x20;
const MSR_CB: u8 = 0x10;

const ST0_ABNORMAL: u8 = 0x40;
const ST0_INVALID: u8 = 0x80;
const ST0_READY_CHANGE: u8 = 0xC0;
const ST0_SEEK_END: u8 = 0x20;
const ST0_EQUIPMENT: u8 = 0x10;

const ST1_MISSING_AM: u8 = 0x01;
const ST1_NOT_WRITABLE: u8 = 0x02;
const ST1_NO_DATA: u8 = 0x04;
const ST1_OVERRUN: u8 = 0x10;
const ST1_DATA_ERROR: u8 = 0x20;
const ST1_END_OF_CYLINDER: u8 = 0x80;

const ST2_DATA_ERROR: u8 = 0x20;
const ST2_CONTROL_MARK: u8 = 0x40;

const ST3_WRITE_PROTECT: u8 = 0x40;
const ST3_READY: u8 = 0x20;
const ST3_TRACK0: u8 = 0x10;
const ST3_TWO_SIDE: u8 = 0x08;

const SRA_INT_PENDING: u8 = 0x80;
const SRA_NO_DRIVE2: u8 = 0x40;
const DIR_DISK_CHANGE: u8 = 0x80;

const CFG_EIS: u8 = 0x40;
/// CONFIGURE defaults after a reset: FIFO disabled, polling enabled, no implied seeks.
const CFG_DEFAULT: u8 = 0x20;

/// Drive polling after a reset leaves one status per drive for SENSE INTERRUPT STATUS.
const RESET_SENSE_COUNT: u8 = 4;
/// Size code of 512-byte sectors.
const SIZE_CODE: u8 = 2;

/// Data rate codes of the DSR/CCR.
const RATE_500K: u8 = 0;
const RATE_300K: u8 = 1;
const RATE_250K: u8 = 2;
const RATE_1M: u8 = 3;

/// Errors of the machine-facing drive API.
#[derive(Debug, thiserror::Error)]
pub enum FdcError {
    /// The controller has drive units 0-3 only.
    #[error("floppy drive {0} does not exist (drives 0-3)")]
    NoSuchDrive(usize),
    /// Media was offered to a unit with no drive attached.
    #[error("no floppy drive is attached as unit {0}")]
    NoDrive(usize),
    /// The image size matches no supported format.
    #[error(
        "a floppy image of {0} bytes matches no supported format (360 KB, 720 KB, 1.2 MB, \
         1.44 MB, 1.68 MB DMF or 2.88 MB)"
    )]
    UnsupportedSize(u64),
}

/// Geometry and recording parameters of a diskette format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloppyFormat {
    /// Cylinders (tracks per side).
    pub cylinders: u8,
    /// Heads (sides).
    pub heads: u8,
    /// Sectors per track.
    pub sectors: u8,
    /// Data rate code the medium is read at (0 = 500, 1 = 300, 2 = 250, 3 = 1000 kbit/s).
    pub rate: u8,
    /// The drive type a machine reports in CMOS for this medium.
    pub drive: FloppyType,
}

impl FloppyFormat {
    /// The supported formats: 360 KB, 720 KB, 1.2 MB, 1.44 MB, 1.68 MB DMF, 2.88 MB.
    pub const ALL: [FloppyFormat; 6] = [
        Self::new(40, 9, RATE_300K, FloppyType::M1_2),
        Self::new(80, 9, RATE_250K, FloppyType::M1_44),
        Self::new(80, 15, RATE_500K, FloppyType::M1_2),
        Self::new(80, 18, RATE_500K, FloppyType::M1_44),
        Self::new(80, 21, RATE_500K, FloppyType::M1_44),
        Self::new(80, 36, RATE_1M, FloppyType::M2_88),
    ];

    const fn new(cylinders: u8, sectors: u8, rate: u8, drive: FloppyType) -> Self {
        Self {
            cylinders,
            heads: 2,
            sectors,
            rate,
            drive,
        }
    }

    /// The format of an image of `bytes` bytes, if it is one of [`FloppyFormat::ALL`].
    pub fn from_size(bytes: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.size() == bytes)
    }

    /// Image size in bytes.
    pub fn size(&self) -> u64 {
        u64::from(self.cylinders)
            * u64::from(self.heads)
            * u64::from(self.sectors)
            * SECTOR_SIZE as u64
    }

    /// Byte offset of sector `r` (1-based) of cylinder `c`, head `h`, if it exists.
    fn offset(&self, c: u8, h: u8, r: u8) -> Option<u64> {
        if c >= self.cylinders || h >= self.heads || r == 0 || r > self.sectors {
            return None;
        }
        let track = u64::from(c) * u64::from(self.heads) + u64::from(h);
        Some((track * u64::from(self.sectors) + u64::from(r) - 1) * SECTOR_SIZE as u64)
    }
}

struct Media {
    backend: Box<dyn BlockBackend>,
    format: FloppyFormat,
}

struct Drive {
    connected: bool,
    kind: FloppyType,
    media: Option<Media>,
    /// Present cylinder number as the controller tracks it.
    pcn: u8,
    /// Disk change line: set by media changes, cleared by a step pulse with media present.
    changed: bool,
    perpendicular: bool,
    /// Sector that READ ID finds next (the disk keeps turning between commands).
    next_id: u8,
    /// DRIVE SPECIFICATION byte.
    spec: u8,
}

impl Default for Drive {
    fn default() -> Self {
        Self {
            connected: false,
            kind: FloppyType::None,
            media: None,
            pcn: 0,
            changed: true,
            perpendicular: false,
            next_id: 1,
            spec: 0,
        }
    }
}

impl Drive {
    fn read_only(&self) -> bool {
        self.media.as_ref().is_none_or(|m| m.backend.read_only())
    }

    /// Moves the head to `cylinder`; a move is a step pulse, which clears the disk change
    /// line when a diskette is present.
    fn step_to(&mut self, cylinder: u8) {
        if cylinder != self.pcn && self.media.is_some() {
            self.changed = false;
        }
        self.pcn = cylinder;
    }
}

/// Commands the controller knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Read,
    ReadDeleted,
    ReadTrack,
    Write,
    WriteDeleted,
    Verify,
    ReadId,
    Format,
    Specify,
    SenseDrive,
    Recalibrate,
    SenseInterrupt,
    Seek,
    RelativeSeek,
    Version,
    Dumpreg,
    Perpendicular,
    Configure,
    Lock,
    PartId,
    DriveSpec,
}

impl Cmd {
    /// The command a first byte starts and how many parameter bytes follow.
    fn decode(op: u8) -> Option<(Cmd, usize)> {
        Some(match op {
            _ if op & 0x1F == 0x06 => (Cmd::Read, 8),
            _ if op & 0x1F == 0x0C => (Cmd::ReadDeleted, 8),
            _ if op & 0x1F == 0x05 => (Cmd::Write, 8),
            _ if op & 0x1F == 0x09 => (Cmd::WriteDeleted, 8),
            _ if op & 0xBF == 0x02 => (Cmd::ReadTrack, 8),
            _ if op & 0x1F == 0x16 => (Cmd::Verify, 8),
            _ if op & 0xBF == 0x0A => (Cmd::ReadId, 1),
            _ if op & 0xBF == 0x0D => (Cmd::Format, 5),
            0x03 => (Cmd::Specify, 2),
            0x04 => (Cmd::SenseDrive, 1),
            0x07 => (Cmd::Recalibrate, 1),
            0x08 => (Cmd::SenseInterrupt, 0),
            0x0E => (Cmd::Dumpreg, 0),
            0x0F => (Cmd::Seek, 2),
            0x10 => (Cmd::Version, 0),
            0x12 => (Cmd::Perpendicular, 1),
            0x13 => (Cmd::Configure, 3),
            _ if op & 0x7F == 0x14 => (Cmd::Lock, 0),
            0x18 => (Cmd::PartId, 0),
            0x8E => (Cmd::DriveSpec, 5),
            0x8F | 0xCF => (Cmd::RelativeSeek, 2),
            _ => return None,
        })
    }
}

/// Data-moving operations of the execution phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    ReadDeleted,
    Write,
    Format,
}

impl Op {
    fn to_host(self) -> bool {
        matches!(self, Op::Read | Op::ReadDeleted)
    }
}

/// An execution phase in progress.
#[derive(Debug, Clone)]
struct Exec {
    op: Op,
    drive: usize,
    /// ID of the sector being transferred (the result phase reports it, advanced).
    c: u8,
    h: u8,
    r: u8,
    n: u8,
    eot: u8,
    multi_track: bool,
    dma: bool,
    /// ST0 bits gathered on the way (seek end after an implied seek).
    st0: u8,
    st2: u8,
    /// The DMA controller signalled terminal count.
    tc: bool,
    /// Bytes of the current sector (or format ID) moved so far.
    pos: usize,
    /// The sector buffer holds the current sector (reads).
    loaded: bool,
    /// Format: fill byte, IDs still to come, last ID received.
    fill: u8,
    remaining: u8,
    last_id: [u8; 4],
    /// Some sector was written (flush at the end).
    wrote: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Command,
    Execution,
    Result,
}

/// Outcome of finishing one sector.
enum Step {
    Next,
    Done { st0: u8, st1: u8 },
}

/// Warnings logged once per controller.
const WARN_RESULT_WRITE: u32 = 1;
const WARN_IDLE_READ: u32 = 2;
const WARN_BACKEND: u32 = 4;
const WARN_FORMAT_GEOMETRY: u32 = 8;
const WARN_NO_DMA: u32 = 16;
const WARN_SIZE_CODE: u32 = 32;

/// The floppy disk controller and its drives.
pub struct Fdc {
    irq: IrqLine,
    dma: Option<Arc<Mutex<Dma8237>>>,
    waker: TimerWaker,
    drives: [Drive; FDC_DRIVES],
    dor: u8,
    tdr: u8,
    /// DSR bits other than the software reset (data rate in bits 0-1, precompensation).
    dsr: u8,
    phase: Phase,
    cmd: [u8; 10],
    cmd_len: usize,
    cmd_need: usize,
    result: [u8; 10],
    result_len: usize,
    result_pos: usize,
    exec: Option<Exec>,
    buf: Vec<u8>,
    /// Interrupt from a result or data phase (cleared by reading the first result byte).
    int_result: bool,
    /// Seek/recalibrate completions per drive, waiting for SENSE INTERRUPT STATUS.
    seek_status: [Option<u8>; FDC_DRIVES],
    /// Drive polling statuses left after a reset.
    poll_pending: u8,
    line: bool,
    specify: [u8; 2],
    config: u8,
    pretrk: u8,
    lock: bool,
    /// PERPENDICULAR MODE GAP and WGATE bits.
    perp_gap: u8,
    last_eot: u8,
    warned: u32,
    warned_ops: [u64; 4],
}

impl std::fmt::Debug for Fdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdc")
            .field("dor", &self.dor)
            .field("phase", &self.phase)
            .field("exec", &self.exec)
            .finish_non_exhaustive()
    }
}

impl Fdc {
    /// A controller interrupting on `irq`, moving data through channel 2 of `dma` (`None`: DMA
    /// transfers fail with an overrun), with no drives attached. `waker` is handed to the DMA
    /// controller while a transfer waits for the guest to unmask the channel; the machine then
    /// calls [`Poll::poll`].
    pub fn new(irq: IrqLine, dma: Option<Arc<Mutex<Dma8237>>>, waker: TimerWaker) -> Self {
        let mut f = Self {
            irq,
            dma,
            waker,
            drives: Default::default(),
            dor: 0,
            tdr: 0,
            dsr: 0,
            phase: Phase::Command,
            cmd: [0; 10],
            cmd_len: 0,
            cmd_need: 0,
            result: [0; 10],
            result_len: 0,
            result_pos: 0,
            exec: None,
            buf: vec![0; SECTOR_SIZE],
            int_result: false,
            seek_status: [None; FDC_DRIVES],
            poll_pending: 0,
            line: false,
            specify: [0; 2],
            config: CFG_DEFAULT,
            pretrk: 0,
            lock: false,
            perp_gap: 0,
            last_eot: 0,
            warned: 0,
            warned_ops: [0; 4],
        };
        f.hardware_reset();
        f
    }

    /// Connects a drive as unit `drive`, with a diskette (`Some`) or empty. The drive type
    /// follows the diskette's format (a 3.5" 1.44 MB drive when empty); an image whose size
    /// matches no format is refused.
    pub fn attach(
        &mut self,
        drive: usize,
        media: Option<Box<dyn BlockBackend>>,
    ) -> Result<(), FdcError> {
        if drive >= FDC_DRIVES {
            return Err(FdcError::NoSuchDrive(drive));
        }
        let media = media.map(Self::media_for).transpose()?;
        let d = &mut self.drives[drive];
        d.connected = true;
        d.kind = media.as_ref().map_or(FloppyType::M1_44, |m| m.format.drive);
        d.media = media;
        d.changed = true;
        Ok(())
    }

    fn media_for(backend: Box<dyn BlockBackend>) -> Result<Media, FdcError> {
        let size = backend.len();
        let format = FloppyFormat::from_size(size).ok_or(FdcError::UnsupportedSize(size))?;
        Ok(Media { backend, format })
    }

    /// Puts a diskette into attached drive `drive` (replacing any), raising the disk change
    /// line.
    pub fn insert_media(
        &mut self,
        drive: usize,
        backend: Box<dyn BlockBackend>,
    ) -> Result<(), FdcError> {
        if drive >= FDC_DRIVES {
            return Err(FdcError::NoSuchDrive(drive));
        }
        if !self.drives[drive].connected {
            return Err(FdcError::NoDrive(drive));
        }
        let media = Self::media_for(backend)?;
        let d = &mut self.drives[drive];
        d.media = Some(media);
        d.changed = true;
        Ok(())
    }

    /// Takes the diskette out of drive `drive`, raising the disk change line; returns it.
    pub fn eject(&mut self, drive: usize) -> Option<Box<dyn BlockBackend>> {
        let d = self.drives.get_mut(drive)?;
        if !d.connected {
            return None;
        }
        d.changed = true;
        d.media.take().map(|m| m.backend)
    }

    /// True if unit `drive` holds a diskette.
    pub fn has_media(&self, drive: usize) -> bool {
        self.drives.get(drive).is_some_and(|d| d.media.is_some())
    }

    /// Format of the diskette in unit `drive`.
    pub fn media_format(&self, drive: usize) -> Option<FloppyFormat> {
        self.drives.get(drive)?.media.as_ref().map(|m| m.format)
    }

    /// The drive type of unit `drive` ([`FloppyType::None`] when nothing is attached).
    pub fn drive_type(&self, drive: usize) -> FloppyType {
        self.drives
            .get(drive)
            .filter(|d| d.connected)
            .map_or(FloppyType::None, |d| d.kind)
    }

    /// Drive types of units 0 and 1, for CMOS byte 0x10
    /// ([`crate::rtc::PcCmosConfig::floppies`]).
    pub fn cmos_drive_types(&self) -> [FloppyType; 2] {
        [self.drive_type(0), self.drive_type(1)]
    }

    fn warn_once(&mut self, kind: u32) -> bool {
        let first = self.warned & kind == 0;
        self.warned |= kind;
        first
    }

    // ---- interrupts -------------------------------------------------------------------

    fn int_pending(&self) -> bool {
        self.int_result || self.poll_pending > 0 || self.seek_status.iter().any(Option::is_some)
    }

    fn update_irq(&mut self) {
        let level =
            self.dor & DOR_NRESET != 0 && self.dor & DOR_DMA_GATE != 0 && self.int_pending();
        if level != self.line {
            self.line = level;
            self.irq.set_level(level);
        }
    }

    /// A new interrupt event: the line goes (or pulses) high so that an edge-triggered
    /// controller sees it even while an older one is still pending.
    fn raise(&mut self) {
        if self.line {
            self.line = false;
            self.irq.set_level(false);
        }
        self.update_irq();
    }

    // ---- resets ---------------------------------------------------------------------

    /// Stops any execution phase and returns to the command phase with no interrupt pending.
    fn controller_reset(&mut self) {
        if self.exec.take().is_some_and(|x| x.dma) {
            self.release_dreq();
        }
        self.phase = Phase::Command;
        self.cmd_len = 0;
        self.cmd_need = 0;
        self.result_len = 0;
        self.result_pos = 0;
        self.int_result = false;
        self.seek_status = [None; FDC_DRIVES];
        self.poll_pending = 0;
        if !self.lock {
            self.config = CFG_DEFAULT;
            self.pretrk = 0;
        }
        self.perp_gap = 0;
        for d in &mut self.drives {
            d.pcn = 0;
        }
        self.update_irq();
    }

    /// Reset completion: drive polling leaves a status per drive and interrupts.
    fn reset_done(&mut self) {
        self.poll_pending = RESET_SENSE_COUNT;
        self.raise();
    }

    fn hardware_reset(&mut self) {
        self.lock = false;
        self.controller_reset();
        self.dor = DOR_NRESET | DOR_DMA_GATE;
        self.tdr = 0;
        self.dsr = RATE_500K;
        self.specify = [0; 2];
        self.last_eot = 0;
        for d in &mut self.drives {
            d.perpendicular = false;
            d.spec = 0;
        }
        self.update_irq();
    }

    fn release_dreq(&mut self) {
        if let Some(dma) = self.dma.clone() {
            lock(&dma).release_dreq(FDC_DMA_CHANNEL);
        }
    }

    // ---- registers ------------------------------------------------------------------

    fn in_reset(&self) -> bool {
        self.dor & DOR_NRESET == 0
    }

    fn msr(&self) -> u8 {
        if self.in_reset() {
            return 0;
        }
        match self.phase {
            Phase::Command if self.cmd_len == 0 => MSR_RQM,
            Phase::Command => MSR_RQM | MSR_CB,
            Phase::Result => MSR_RQM | MSR_DIO | MSR_CB,
            Phase::Execution => match &self.exec {
                Some(x) if !x.dma => {
                    MSR_RQM | MSR_NDMA | MSR_CB | if x.op.to_host() { MSR_DIO } else { 0 }
                }
                _ => MSR_CB,
            },
        }
    }

    fn write_dor(&mut self, value: u8) {
        let old = self.dor;
        self.dor = value;
        if value & DOR_NRESET == 0 {
            if old & DOR_NRESET != 0 {
                self.controller_reset();
            }
        } else if old & DOR_NRESET == 0 {
            self.reset_done();
        }
        self.update_irq();
        if value & DOR_DMA_GATE != 0 && old & DOR_DMA_GATE == 0 {
            self.run_dma();
        }
    }

    fn write_dsr(&mut self, value: u8) {
        self.dsr = value & 0x7F;
        if value & DSR_RESET != 0 {
            self.controller_reset();
            self.reset_done();
        }
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port & 7 {
            REG_SRA => {
                let mut v = 0;
                if self.int_pending() {
                    v |= SRA_INT_PENDING;
                }
                if !self.drives[1].connected {
                    v |= SRA_NO_DRIVE2;
                }
                v
            }
            REG_SRB => {
                let mut v = 0xC0;
                if self.dor & DOR_MOTOR0 != 0 {
                    v |= 0x01;
                }
                if self.dor & DOR_MOTOR1 != 0 {
                    v |= 0x02;
                }
                if self.dor & 1 != 0 {
                    v |= 0x20;
                }
                v
            }
            REG_DOR => self.dor,
            REG_TDR => self.tdr,
            REG_MSR => self.msr(),
            REG_FIFO => self.read_fifo(),
            REG_DIR => {
                let d = &self.drives[usize::from(self.dor & DOR_SELECT)];
                if d.changed || !d.connected {
                    DIR_DISK_CHANGE
                } else {
                    0
                }
            }
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        let reg = port & 7;
        if reg == REG_DOR {
            self.write_dor(value);
            return;
        }
        if self.in_reset() {
            return;
        }
        match reg {
            REG_TDR => self.tdr = value & 0x03,
            REG_MSR => self.write_dsr(value),
            REG_FIFO => self.write_fifo(value),
            REG_DIR => self.dsr = (self.dsr & !DSR_RATE) | (value & DSR_RATE),
            _ => {}
        }
    }

    fn rate(&self) -> u8 {
        self.dsr & DSR_RATE
    }

    // ---- FIFO -----------------------------------------------------------------------

    fn read_fifo(&mut self) -> u8 {
        if self.in_reset() {
            return 0xFF;
        }
        match self.phase {
            Phase::Result => {
                let v = self.result.get(self.result_pos).copied().unwrap_or(0xFF);
                if self.result_pos == 0 && self.int_result {
                    self.int_result = false;
                    self.update_irq();
                }
                self.result_pos += 1;
                if self.result_pos >= self.result_len {
                    self.enter_command_phase();
                }
                v
            }
            Phase::Execution if self.exec.as_ref().is_some_and(|x| !x.dma && x.op.to_host()) => {
                self.pio_read()
            }
            _ => {
                if self.warn_once(WARN_IDLE_READ) {
                    tracing::debug!("fdc: data register read with no data to give");
                }
                0xFF
            }
        }
    }

    fn write_fifo(&mut self, value: u8) {
        match self.phase {
            Phase::Command => self.command_byte(value),
            Phase::Execution
                if self
                    .exec
                    .as_ref()
                    .is_some_and(|x| !x.dma && !x.op.to_host()) =>
            {
                self.pio_write(value)
            }
            _ => {
                if self.warn_once(WARN_RESULT_WRITE) {
                    tracing::debug!(value, "fdc: data register write while not accepting bytes");
                }
            }
        }
    }

    fn enter_command_phase(&mut self) {
        self.phase = Phase::Command;
        self.cmd_len = 0;
        self.cmd_need = 0;
        self.result_len = 0;
        self.result_pos = 0;
    }

    fn enter_result_phase(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.result.len());
        self.result[..n].copy_from_slice(&bytes[..n]);
        self.result_len = n;
        self.result_pos = 0;
        self.phase = Phase::Result;
    }

    fn command_byte(&mut self, value: u8) {
        if self.cmd_len == 0 {
            let Some((_, params)) = Cmd::decode(value) else {
                let (i, bit) = (usize::from(value >> 6), 1u64 << (value & 63));
                if self.warned_ops[i] & bit == 0 {
                    self.warned_ops[i] |= bit;
                    tracing::warn!(command = value, "fdc: invalid command");
                }
                self.enter_result_phase(&[ST0_INVALID]);
                return;
            };
            self.cmd[0] = value;
            self.cmd_len = 1;
            self.cmd_need = params + 1;
        } else if self.cmd_len < self.cmd.len() {
            self.cmd[self.cmd_len] = value;
            self.cmd_len += 1;
        }
        let Some((cmd, _)) = Cmd::decode(self.cmd[0]) else {
            return;
        };
        // DRIVE SPECIFICATION ends with its first byte that has bit 7 set.
        let done = self.cmd_len >= self.cmd_need
            || (cmd == Cmd::DriveSpec && self.cmd_len > 1 && value & 0x80 != 0);
        if done {
            self.execute(cmd);
        }
    }

    // ---- commands -------------------------------------------------------------------

    fn execute(&mut self, cmd: Cmd) {
        let p = self.cmd;
        let ds = usize::from(p[1] & 3);
        let head = (p[1] >> 2) & 1;
        match cmd {
            Cmd::Specify => {
                self.specify = [p[1], p[2]];
                self.enter_command_phase();
            }
            Cmd::SenseDrive => {
                let d = &self.drives[ds];
                let mut st3 = head << 2 | ds as u8;
                if d.connected {
                    st3 |= ST3_READY | ST3_TWO_SIDE;
                    if d.read_only() {
                        st3 |= ST3_WRITE_PROTECT;
                    }
                    if d.pcn == 0 {
                        st3 |= ST3_TRACK0;
                    }
                }
                self.enter_result_phase(&[st3]);
            }
            Cmd::Recalibrate => {
                let d = &mut self.drives[ds];
                let st0 = if d.connected {
                    d.step_to(0);
                    ST0_SEEK_END | ds as u8
                } else {
                    // No track-0 signal ever comes back.
                    d.pcn = 0;
                    ST0_ABNORMAL | ST0_SEEK_END | ST0_EQUIPMENT | ds as u8
                };
                self.seek_done(ds, st0);
            }
            Cmd::Seek => {
                self.drives[ds].step_to(p[2]);
                self.seek_done(ds, ST0_SEEK_END | head << 2 | ds as u8);
            }
            Cmd::RelativeSeek => {
                let d = &mut self.drives[ds];
                let target = if p[0] & 0x40 != 0 {
                    d.pcn.saturating_add(p[2])
                } else {
                    d.pcn.saturating_sub(p[2])
                };
                d.step_to(target);
                self.seek_done(ds, ST0_SEEK_END | head << 2 | ds as u8);
            }
            Cmd::SenseInterrupt => self.sense_interrupt(),
            Cmd::Version => self.enter_result_phase(&[FDC_VERSION]),
            Cmd::PartId => self.enter_result_phase(&[FDC_PART_ID]),
            Cmd::Lock => {
                self.lock = p[0] & 0x80 != 0;
                self.enter_result_phase(&[u8::from(self.lock) << 4]);
            }
            Cmd::Dumpreg => {
                let mut perp = 0;
                for (i, d) in self.drives.iter().enumerate() {
                    perp |= u8::from(d.perpendicular) << (2 + i);
                }
                let r = [
                    self.drives[0].pcn,
                    self.drives[1].pcn,
                    self.drives[2].pcn,
                    self.drives[3].pcn,
                    self.specify[0],
                    self.specify[1],
                    self.last_eot,
                    u8::from(self.lock) << 7 | perp | self.perp_gap,
                    self.config,
                    self.pretrk,
                ];
                self.enter_result_phase(&r);
            }
            Cmd::Perpendicular => {
                if p[1] & 0x80 != 0 {
                    for (i, d) in self.drives.iter_mut().enumerate() {
                        d.perpendicular = p[1] & (1 << (2 + i)) != 0;
                    }
                }
                self.perp_gap = p[1] & 3;
                self.enter_command_phase();
            }
            Cmd::Configure => {
                self.config = p[2] & 0x7F;
                self.pretrk = p[3];
                self.enter_command_phase();
            }
            Cmd::DriveSpec => {
                let n = self.cmd_len;
                for &b in &p[1..n] {
                    if b & 0x80 == 0 {
                        self.drives[usize::from((b >> 3) & 3)].spec = b & 0x1F;
                    }
                }
                let last = p[n - 1];
                if last & 0x80 != 0 && last & 0x40 != 0 {
                    // No result phase requested.
                    self.enter_command_phase();
                } else {
                    let r = [
                        self.drives[0].spec,
                        self.drives[1].spec,
                        self.drives[2].spec,
                        self.drives[3].spec,
                    ];
                    self.enter_result_phase(&r);
                }
            }
            Cmd::ReadId => self.read_id(ds, head, p[0] & 0x40 != 0),
            Cmd::Read | Cmd::ReadTrack => self.start_rw(Op::Read, cmd == Cmd::ReadTrack),
            Cmd::ReadDeleted => self.start_rw(Op::ReadDeleted, false),
            Cmd::Write | Cmd::WriteDeleted => self.start_rw(Op::Write, false),
            Cmd::Verify => self.verify(),
            Cmd::Format => self.start_format(),
        }
    }

    fn seek_done(&mut self, drive: usize, st0: u8) {
        self.enter_command_phase();
        self.seek_status[drive] = Some(st0);
        self.raise();
    }

    fn sense_interrupt(&mut self) {
        if self.poll_pending > 0 {
            let n = RESET_SENSE_COUNT - self.poll_pending;
            self.poll_pending -= 1;
            let pcn = self.drives[usize::from(n)].pcn;
            self.enter_result_phase(&[ST0_READY_CHANGE | n, pcn]);
        } else if let Some(d) = self.seek_status.iter().position(Option::is_some) {
            let st0 = self.seek_status[d].take().unwrap_or(ST0_SEEK_END);
            let pcn = self.drives[d].pcn;
            self.enter_result_phase(&[st0, pcn]);
        } else {
            self.enter_result_phase(&[ST0_INVALID]);
        }
        self.update_irq();
    }

    /// Checks that the drive can read its diskette at the programmed data rate.
    fn check_medium(&self, drive: usize, mfm: bool) -> Result<FloppyFormat, u8> {
        let d = &self.drives[drive];
        let format = match &d.media {
            Some(m) if d.connected => m.format,
            _ => return Err(ST1_MISSING_AM),
        };
        if !mfm || self.rate() != format.rate {
            return Err(ST1_MISSING_AM);
        }
        Ok(format)
    }

    fn read_id(&mut self, drive: usize, head: u8, mfm: bool) {
        let st0 = head << 2 | drive as u8;
        let d = &self.drives[drive];
        let pcn = d.pcn;
        let checked = self.check_medium(drive, mfm).and_then(|f| {
            if pcn >= f.cylinders || head >= f.heads {
                Err(ST1_MISSING_AM)
            } else {
                Ok(f)
            }
        });
        match checked {
            Ok(f) => {
                let d = &mut self.drives[drive];
                let r = d.next_id.clamp(1, f.sectors);
                d.next_id = r % f.sectors + 1;
                self.finish_result(&[st0, 0, 0, pcn, head, r, SIZE_CODE]);
            }
            Err(st1) => {
                self.finish_result(&[st0 | ST0_ABNORMAL, st1, 0, pcn, head, 1, SIZE_CODE]);
            }
        }
    }

    /// Enters the result phase of a command with an execution phase (interrupting).
    fn finish_result(&mut self, bytes: &[u8]) {
        self.enter_result_phase(bytes);
        self.int_result = true;
        self.raise();
    }

    fn new_exec(&self, op: Op) -> Exec {
        let p = &self.cmd;
        Exec {
            op,
            drive: usize::from(p[1] & 3),
            c: p[2],
            h: p[3],
            r: p[4],
            n: p[5],
            eot: p[6],
            multi_track: p[0] & 0x80 != 0,
            dma: self.specify[1] & 1 == 0,
            st0: 0,
            st2: 0,
            tc: false,
            pos: 0,
            loaded: false,
            fill: 0,
            remaining: 0,
            last_id: [0; 4],
            wrote: false,
        }
    }

    /// Validates the addressing of a read/write/verify command; applies an implied seek.
    fn check_rw(&mut self, x: &mut Exec, writes: bool) -> Result<(), u8> {
        let format = self.check_medium(x.drive, self.cmd[0] & 0x40 != 0)?;
        if self.config & CFG_EIS != 0 && self.drives[x.drive].pcn != x.c {
            self.drives[x.drive].step_to(x.c);
            x.st0 |= ST0_SEEK_END;
        }
        if x.c >= format.cylinders {
            return Err(ST1_MISSING_AM);
        }
        if x.h > 1 || x.n != SIZE_CODE {
            if x.n != SIZE_CODE && self.warn_once(WARN_SIZE_CODE) {
                tracing::debug!(n = x.n, "fdc: sector size code other than 512 bytes");
            }
            return Err(ST1_NO_DATA);
        }
        if x.h >= format.heads {
            return Err(ST1_MISSING_AM);
        }
        if x.r == 0 || x.r > format.sectors {
            return Err(ST1_NO_DATA);
        }
        if writes && self.drives[x.drive].read_only() {
            return Err(ST1_NOT_WRITABLE);
        }
        Ok(())
    }

    fn start_rw(&mut self, op: Op, read_track: bool) {
        let mut x = self.new_exec(op);
        self.last_eot = x.eot;
        if read_track {
            // READ TRACK starts with the first sector after the index hole; no multi-track.
            x.r = 1;
            x.multi_track = false;
        }
        if let Err(st1) = self.check_rw(&mut x, op == Op::Write) {
            return self.finish_exec(x, ST0_ABNORMAL, st1);
        }
        if op == Op::ReadDeleted && self.cmd[0] & 0x20 != 0 {
            // Every sector has a normal data mark and SK skips them all.
            x.r = x.eot;
            return self.finish_exec(x, ST0_ABNORMAL, ST1_END_OF_CYLINDER);
        }
        self.begin_execution(x);
    }

    fn start_format(&mut self) {
        let p = self.cmd;
        let drive = usize::from(p[1] & 3);
        let head = (p[1] >> 2) & 1;
        let mut x = self.new_exec(Op::Format);
        x.h = head;
        x.c = self.drives[drive].pcn;
        x.r = 1;
        x.n = p[2];
        x.remaining = p[3];
        x.fill = p[5];
        x.last_id = [x.c, head, 1, p[2]];
        let checked = self.check_medium(drive, p[0] & 0x40 != 0).and_then(|f| {
            if self.drives[drive].read_only() {
                Err(ST1_NOT_WRITABLE)
            } else {
                Ok(f)
            }
        });
        match checked {
            Err(st1) => self.finish_exec(x, ST0_ABNORMAL, st1),
            Ok(f) => {
                if (p[2] != SIZE_CODE || p[3] != f.sectors) && self.warn_once(WARN_FORMAT_GEOMETRY)
                {
                    tracing::warn!(
                        size_code = p[2],
                        sectors = p[3],
                        "fdc: format differs from the image geometry; only matching sectors kept"
                    );
                }
                if x.remaining == 0 {
                    self.finish_exec(x, 0, 0);
                } else {
                    self.begin_execution(x);
                }
            }
        }
    }

    fn verify(&mut self) {
        let mut x = self.new_exec(Op::Read);
        self.last_eot = x.eot;
        let count_mode = self.cmd[1] & 0x80 != 0;
        let mut left = self.cmd[8].max(1);
        if let Err(st1) = self.check_rw(&mut x, false) {
            return self.finish_exec(x, ST0_ABNORMAL, st1);
        }
        let Some(format) = self.media_format(x.drive) else {
            return self.finish_exec(x, ST0_ABNORMAL, ST1_MISSING_AM);
        };
        loop {
            if format.offset(x.c, x.h, x.r).is_none() {
                return self.finish_exec(x, ST0_ABNORMAL, ST1_NO_DATA);
            }
            left = left.saturating_sub(1);
            x.tc = count_mode && left == 0;
            match advance(&mut x, format.sectors) {
                Step::Next => {}
                // Without a sector count, reaching EOT is the normal end of VERIFY.
                Step::Done { st1, .. } if st1 == ST1_END_OF_CYLINDER && !count_mode => {
                    return self.finish_exec(x, 0, 0);
                }
                Step::Done { st0, st1 } => return self.finish_exec(x, st0, st1),
            }
        }
    }

    fn begin_execution(&mut self, mut x: Exec) {
        self.phase = Phase::Execution;
        if x.dma {
            self.exec = Some(x);
            self.run_dma();
            return;
        }
        if x.op.to_host() {
            if let Err(st1) = self.load_sector(&x) {
                return self.finish_exec(x, ST0_ABNORMAL, st1);
            }
            x.loaded = true;
        }
        self.exec = Some(x);
        // Non-DMA mode: the interrupt asks the host for the data bytes.
        self.int_result = true;
        self.raise();
    }

    /// Ends an execution phase: seven result bytes and an interrupt.
    fn finish_exec(&mut self, x: Exec, st0: u8, st1: u8) {
        if x.wrote {
            if let Some(m) = self.drives[x.drive].media.as_mut() {
                if let Err(e) = m.backend.flush() {
                    tracing::warn!(error = %e, "fdc: flushing the diskette image failed");
                }
            }
        }
        self.exec = None;
        let st0 = st0 | x.st0 | (x.h & 1) << 2 | x.drive as u8;
        let chrn = if x.op == Op::Format {
            x.last_id
        } else {
            [x.c, x.h, x.r, x.n]
        };
        self.finish_result(&[st0, st1, x.st2, chrn[0], chrn[1], chrn[2], chrn[3]]);
    }

    // ---- sectors --------------------------------------------------------------------

    fn load_sector(&mut self, x: &Exec) -> Result<(), u8> {
        let d = &mut self.drives[x.drive];
        let Some(m) = d.media.as_mut() else {
            return Err(ST1_MISSING_AM);
        };
        let Some(offset) = m.format.offset(x.c, x.h, x.r) else {
            return Err(if x.h >= m.format.heads {
                ST1_MISSING_AM
            } else {
                ST1_NO_DATA
            });
        };
        if let Err(e) = m.backend.read_at(offset, &mut self.buf) {
            if self.warned & WARN_BACKEND == 0 {
                self.warned |= WARN_BACKEND;
                tracing::warn!(error = %e, offset, "fdc: reading the diskette image failed");
            }
            return Err(ST1_DATA_ERROR);
        }
        Ok(())
    }

    fn store(&mut self, drive: usize, c: u8, h: u8, r: u8) -> Result<(), u8> {
        let d = &mut self.drives[drive];
        let Some(m) = d.media.as_mut() else {
            return Err(ST1_MISSING_AM);
        };
        if m.backend.read_only() {
            return Err(ST1_NOT_WRITABLE);
        }
        let Some(offset) = m.format.offset(c, h, r) else {
            return Err(ST1_NO_DATA);
        };
        if let Err(e) = m.backend.write_at(offset, &self.buf) {
            if self.warned & WARN_BACKEND == 0 {
                self.warned |= WARN_BACKEND;
                tracing::warn!(error = %e, offset, "fdc: writing the diskette image failed");
            }
            return Err(ST1_DATA_ERROR);
        }
        Ok(())
    }

    /// The current sector's bytes are all moved: write it (writes), then step to the next
    /// one. Returns the termination status, or `None` to go on (reads: next sector loaded).
    fn sector_done(&mut self, x: &mut Exec) -> Option<(u8, u8)> {
        x.pos = 0;
        x.loaded = false;
        match x.op {
            Op::Write => {
                if let Err(st1) = self.store(x.drive, x.c, x.h, x.r) {
                    return Some((ST0_ABNORMAL, st1));
                }
                x.wrote = true;
            }
            Op::ReadDeleted => {
                // A normal data mark ends READ DELETED DATA after this sector.
                x.st2 |= ST2_CONTROL_MARK;
                x.tc = true;
            }
            Op::Read | Op::Format => {}
        }
        let sectors = self.media_format(x.drive).map_or(0, |f| f.sectors);
        match advance(x, sectors) {
            Step::Done { st0, st1 } => Some((st0, st1)),
            Step::Next => {
                if x.op.to_host() {
                    if let Err(st1) = self.load_sector(x) {
                        x.st2 |= if st1 == ST1_DATA_ERROR {
                            ST2_DATA_ERROR
                        } else {
                            0
                        };
                        return Some((ST0_ABNORMAL, st1));
                    }
                    x.loaded = true;
                }
                None
            }
        }
    }

    /// Writes one sector as FORMAT TRACK lays it down from its four ID bytes.
    fn format_sector(&mut self, x: &mut Exec, id: [u8; 4]) -> Result<(), u8> {
        x.last_id = id;
        let [c, h, r, n] = id;
        let fits = self
            .media_format(x.drive)
            .and_then(|f| f.offset(c, h, r))
            .is_some();
        if n != SIZE_CODE || !fits {
            if self.warn_once(WARN_FORMAT_GEOMETRY) {
                tracing::warn!(
                    ?id,
                    "fdc: formatted sector outside the image geometry dropped"
                );
            }
            return Ok(());
        }
        self.buf.fill(x.fill);
        self.store(x.drive, c, h, r)?;
        x.wrote = true;
        Ok(())
    }

    // ---- programmed I/O -------------------------------------------------------------

    fn pio_read(&mut self) -> u8 {
        let Some(mut x) = self.exec.take() else {
            return 0xFF;
        };
        let v = self.buf.get(x.pos).copied().unwrap_or(0xFF);
        x.pos += 1;
        if x.pos >= SECTOR_SIZE {
            if let Some((st0, st1)) = self.sector_done(&mut x) {
                self.finish_exec(x, st0, st1);
                return v;
            }
        }
        self.exec = Some(x);
        v
    }

    fn pio_write(&mut self, value: u8) {
        let Some(mut x) = self.exec.take() else {
            return;
        };
        if x.op == Op::Format {
            if let Some(b) = x.last_id.get_mut(x.pos) {
                *b = value;
            }
            x.pos += 1;
            if x.pos >= 4 {
                x.pos = 0;
                let id = x.last_id;
                if let Err(st1) = self.format_sector(&mut x, id) {
                    return self.finish_exec(x, ST0_ABNORMAL, st1);
                }
                x.remaining = x.remaining.saturating_sub(1);
                if x.remaining == 0 {
                    return self.finish_exec(x, 0, 0);
                }
            }
            self.exec = Some(x);
            return;
        }
        if let Some(b) = self.buf.get_mut(x.pos) {
            *b = value;
        }
        x.pos += 1;
        if x.pos >= SECTOR_SIZE {
            if let Some((st0, st1)) = self.sector_done(&mut x) {
                return self.finish_exec(x, st0, st1);
            }
        }
        self.exec = Some(x);
    }

    // ---- DMA ------------------------------------------------------------------------

    /// Moves data through the DMA controller until the command ends or the channel stalls.
    fn run_dma(&mut self) {
        if !self.exec.as_ref().is_some_and(|x| x.dma) {
            return;
        }
        let Some(mut x) = self.exec.take() else {
            return;
        };
        let Some(dma) = self.dma.clone() else {
            if self.warn_once(WARN_NO_DMA) {
                tracing::warn!("fdc: DMA transfer without a DMA controller");
            }
            return self.finish_exec(x, ST0_ABNORMAL, ST1_OVERRUN);
        };
        if self.dor & DOR_DMA_GATE == 0 {
            // DRQ is gated off: the request waits for the DOR.
            self.exec = Some(x);
            return;
        }
        let mut d = lock(&dma);
        let ch = FDC_DMA_CHANNEL;
        let end = loop {
            if x.op.to_host() && !x.loaded {
                if let Err(st1) = self.load_sector(&x) {
                    break (ST0_ABNORMAL, st1);
                }
                x.loaded = true;
                x.pos = 0;
            }
            let unit = if x.op == Op::Format { 4 } else { SECTOR_SIZE };
            let t = match x.op {
                Op::Read | Op::ReadDeleted => d.write_memory(ch, &self.buf[x.pos..]),
                Op::Write => d.read_memory(ch, &mut self.buf[x.pos..]),
                Op::Format => d.read_memory(ch, &mut x.last_id[x.pos..]),
            };
            x.pos += t.bytes;
            match t.status {
                DmaStatus::Complete => {}
                DmaStatus::TerminalCount => x.tc = true,
                DmaStatus::NotReady => {
                    d.hold_dreq(ch, Some(self.waker.clone()));
                    drop(d);
                    self.exec = Some(x);
                    return;
                }
                DmaStatus::MemoryError => break (ST0_ABNORMAL, ST1_OVERRUN),
            }
            if x.pos < unit && !x.tc {
                continue;
            }
            if x.op == Op::Format {
                // A short ID (terminal count inside it) formats nothing more.
                let whole = x.pos >= 4;
                x.pos = 0;
                if whole {
                    let id = x.last_id;
                    if let Err(st1) = self.format_sector(&mut x, id) {
                        break (ST0_ABNORMAL, st1);
                    }
                    x.remaining = x.remaining.saturating_sub(1);
                }
                if x.remaining == 0 || x.tc {
                    break (0, 0);
                }
                continue;
            }
            if x.op == Op::Write && x.pos < SECTOR_SIZE {
                // Terminal count inside a sector: the rest is written as zeros.
                self.buf[x.pos..].fill(0);
            }
            if let Some(status) = self.sector_done(&mut x) {
                break status;
            }
        };
        d.release_dreq(ch);
        drop(d);
        self.finish_exec(x, end.0, end.1);
    }
}

/// Steps `x` past the sector just transferred, as the controller updates its ID registers.
fn advance(x: &mut Exec, sectors: u8) -> Step {
    if x.tc {
        // Terminal count: normal end; the ID registers point after the last sector.
        if x.r == x.eot {
            x.r = 1;
            if x.multi_track && x.h & 1 == 0 {
                x.h |= 1;
            } else {
                if x.multi_track {
                    x.h &= !1;
                }
                x.c = x.c.wrapping_add(1);
            }
        } else {
            x.r = x.r.wrapping_add(1);
        }
        return Step::Done { st0: 0, st1: 0 };
    }
    if x.r == x.eot {
        if x.multi_track && x.h & 1 == 0 {
            x.h |= 1;
            x.r = 1;
            return Step::Next;
        }
        return Step::Done {
            st0: ST0_ABNORMAL,
            st1: ST1_END_OF_CYLINDER,
        };
    }
    x.r = x.r.wrapping_add(1);
    if x.r == 0 || x.r > sectors {
        return Step::Done {
            st0: ST0_ABNORMAL,
            st1: ST1_NO_DATA,
        };
    }
    Step::Next
}

impl Device for Fdc {
    fn name(&self) -> &str {
        "fdc"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn poll(&mut self) -> Option<&mut dyn Poll> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn crate::saved_state::SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.hardware_reset();
    }
}

impl PortIo for Fdc {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        crate::read_bytewise(port, data, |p| self.read_port(p));
    }
    fn io_write(&mut self, port: u16, data: &[u8]) {
        crate::write_bytewise(port, data, |p, v| self.write_port(p, v));
    }
}

impl Poll for Fdc {
    fn poll(&mut self, _now_ns: u64) -> Option<u64> {
        self.run_dma();
        None
    }
}

/// Saved state of the controller and its drives (see [`crate::saved_state`]).
///
/// Kept: the DOR/TDR/DSR, the command phase with the command bytes received, the result
/// bytes and how many were read, an execution phase in progress with its sector buffer, the
/// pending interrupt conditions (result, seek completions, reset polling), SPECIFY/CONFIGURE/
/// LOCK/PERPENDICULAR settings and, per drive, the head position, disk change line, READ ID
/// position and drive specification. The diskettes are not saved: the same images must be
/// attached (same sizes, so the same formats) before restoring; the state records what each
/// drive held and restore refuses a mismatch. Not kept: the IRQ line handle, the DMA controller
/// handle, the waker and the log-once flags.
mod save {
    use super::*;
    use crate::saved_state::{decode, encode, ensure, RestoreError, SaveRestore, SavedState};
    use serde::{Deserialize, Serialize};

    /// Version of [`FdcStateV1`].
    pub(super) const VERSION: u32 = 1;
    /// The device name saved states carry.
    const DEVICE: &str = "fdc";

    /// The controller phase.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) enum PhaseV1 {
        /// Waiting for (or receiving) command bytes.
        Command,
        /// Moving data.
        Execution,
        /// Result bytes waiting to be read.
        Result,
    }

    /// The data-moving operation of an execution phase.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub(super) enum OpV1 {
        /// READ DATA, READ TRACK, VERIFY.
        Read,
        /// READ DELETED DATA.
        ReadDeleted,
        /// WRITE (DELETED) DATA.
        Write,
        /// FORMAT TRACK.
        Format,
    }

    /// An execution phase in progress.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct ExecV1 {
        pub(super) op: OpV1,
        pub(super) drive: u8,
        pub(super) c: u8,
        pub(super) h: u8,
        pub(super) r: u8,
        pub(super) n: u8,
        pub(super) eot: u8,
        pub(super) multi_track: bool,
        pub(super) dma: bool,
        pub(super) st0: u8,
        pub(super) st2: u8,
        pub(super) tc: bool,
        /// Bytes of the current sector (or format ID) moved.
        pub(super) pos: u16,
        pub(super) loaded: bool,
        pub(super) fill: u8,
        pub(super) remaining: u8,
        pub(super) last_id: [u8; 4],
        pub(super) wrote: bool,
    }

    /// One drive unit.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct DriveStateV1 {
        /// A drive was attached at this unit (machine configuration, checked on restore).
        pub(super) connected: bool,
        /// Its CMOS drive type code (checked on restore).
        pub(super) kind: u8,
        /// Size in bytes of the diskette it held, `None` when empty (checked on restore).
        pub(super) media_bytes: Option<u64>,
        pub(super) pcn: u8,
        /// The disk change line.
        pub(super) changed: bool,
        pub(super) perpendicular: bool,
        pub(super) next_id: u8,
        pub(super) spec: u8,
    }

    /// The whole controller.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub(super) struct FdcStateV1 {
        pub(super) drives: Vec<DriveStateV1>,
        pub(super) dor: u8,
        pub(super) tdr: u8,
        pub(super) dsr: u8,
        pub(super) phase: PhaseV1,
        pub(super) cmd: [u8; 10],
        pub(super) cmd_len: u8,
        pub(super) cmd_need: u8,
        pub(super) result: [u8; 10],
        pub(super) result_len: u8,
        pub(super) result_pos: u8,
        pub(super) exec: Option<ExecV1>,
        /// The sector buffer (512 bytes).
        pub(super) buf: Vec<u8>,
        pub(super) int_result: bool,
        pub(super) seek_status: [Option<u8>; FDC_DRIVES],
        pub(super) poll_pending: u8,
        pub(super) specify: [u8; 2],
        pub(super) config: u8,
        pub(super) pretrk: u8,
        pub(super) lock: bool,
        pub(super) perp_gap: u8,
        pub(super) last_eot: u8,
    }

    fn op_to_saved(op: Op) -> OpV1 {
        match op {
            Op::Read => OpV1::Read,
            Op::ReadDeleted => OpV1::ReadDeleted,
            Op::Write => OpV1::Write,
            Op::Format => OpV1::Format,
        }
    }

    fn op_from_saved(op: OpV1) -> Op {
        match op {
            OpV1::Read => Op::Read,
            OpV1::ReadDeleted => Op::ReadDeleted,
            OpV1::Write => Op::Write,
            OpV1::Format => Op::Format,
        }
    }

    fn describe(bytes: Option<u64>) -> String {
        match bytes {
            Some(n) => format!("a {n}-byte diskette"),
            None => "no diskette".to_string(),
        }
    }

    impl FdcStateV1 {
        fn from_device(f: &Fdc) -> Self {
            Self {
                drives: f
                    .drives
                    .iter()
                    .map(|d| DriveStateV1 {
                        connected: d.connected,
                        kind: d.kind as u8,
                        media_bytes: d.media.as_ref().map(|m| m.format.size()),
                        pcn: d.pcn,
                        changed: d.changed,
                        perpendicular: d.perpendicular,
                        next_id: d.next_id,
                        spec: d.spec,
                    })
                    .collect(),
                dor: f.dor,
                tdr: f.tdr,
                dsr: f.dsr,
                phase: match f.phase {
                    Phase::Command => PhaseV1::Command,
                    Phase::Execution => PhaseV1::Execution,
                    Phase::Result => PhaseV1::Result,
                },
                cmd: f.cmd,
                cmd_len: f.cmd_len as u8,
                cmd_need: f.cmd_need as u8,
                result: f.result,
                result_len: f.result_len as u8,
                result_pos: f.result_pos as u8,
                exec: f.exec.as_ref().map(|x| ExecV1 {
                    op: op_to_saved(x.op),
                    drive: x.drive as u8,
                    c: x.c,
                    h: x.h,
                    r: x.r,
                    n: x.n,
                    eot: x.eot,
                    multi_track: x.multi_track,
                    dma: x.dma,
                    st0: x.st0,
                    st2: x.st2,
                    tc: x.tc,
                    pos: x.pos as u16,
                    loaded: x.loaded,
                    fill: x.fill,
                    remaining: x.remaining,
                    last_id: x.last_id,
                    wrote: x.wrote,
                }),
                buf: f.buf.clone(),
                int_result: f.int_result,
                seek_status: f.seek_status,
                poll_pending: f.poll_pending,
                specify: f.specify,
                config: f.config,
                pretrk: f.pretrk,
                lock: f.lock,
                perp_gap: f.perp_gap,
                last_eot: f.last_eot,
            }
        }

        /// Checks every value against itself and against the drives and diskettes attached to
        /// `f`; returns the execution phase to restore.
        fn check(&self, f: &Fdc) -> Result<Option<Exec>, RestoreError> {
            let c = |ok, reason: &str| ensure(ok, DEVICE, reason);
            c(
                self.drives.len() == FDC_DRIVES,
                &format!("{} drive units (expected {FDC_DRIVES})", self.drives.len()),
            )?;
            for (i, (s, d)) in self.drives.iter().zip(&f.drives).enumerate() {
                c(
                    s.connected == d.connected && s.kind == d.kind as u8,
                    &format!(
                        "floppy unit {i} is {}, the snapshot expects {}",
                        describe_drive(d.connected, d.kind as u8),
                        describe_drive(s.connected, s.kind)
                    ),
                )?;
                let attached = d.media.as_ref().map(|m| m.format.size());
                c(
                    attached == s.media_bytes,
                    &format!(
                        "floppy drive {i} holds {}, the snapshot expects {}",
                        describe(attached),
                        describe(s.media_bytes)
                    ),
                )?;
                c(
                    s.spec <= 0x1F,
                    &format!("drive {i} specification out of range"),
                )?;
            }
            c(self.tdr & !0x03 == 0, "TDR bits out of range")?;
            c(self.dsr & DSR_RESET == 0, "DSR holds the reset bit")?;
            c(self.config & 0x80 == 0, "CONFIGURE byte out of range")?;
            c(
                self.perp_gap <= 3,
                "PERPENDICULAR MODE gap bits out of range",
            )?;
            c(
                self.poll_pending <= RESET_SENSE_COUNT,
                "more reset polling statuses than drives",
            )?;
            c(
                self.buf.len() == SECTOR_SIZE,
                "sector buffer is not 512 bytes",
            )?;
            let (cmd_len, cmd_need) = (usize::from(self.cmd_len), usize::from(self.cmd_need));
            c(
                cmd_len <= self.cmd.len() && cmd_need <= self.cmd.len(),
                "command byte count out of range",
            )?;
            c(
                self.result_len as usize <= self.result.len() && self.result_pos <= self.result_len,
                "result byte position past the result bytes",
            )?;
            match self.phase {
                PhaseV1::Command => {
                    if cmd_len > 0 {
                        let params = Cmd::decode(self.cmd[0]).map(|(_, p)| p);
                        c(
                            params.is_some_and(|p| cmd_need == p + 1 && cmd_len < cmd_need),
                            "partial command inconsistent",
                        )?;
                    }
                }
                PhaseV1::Result => c(
                    self.result_pos < self.result_len,
                    "result phase with no result byte left",
                )?,
                PhaseV1::Execution => {}
            }
            c(
                self.exec.is_some() == (self.phase == PhaseV1::Execution),
                "execution phase and transfer state disagree",
            )?;
            let Some(x) = &self.exec else {
                return Ok(None);
            };
            let unit = if x.op == OpV1::Format { 4 } else { SECTOR_SIZE };
            c(
                usize::from(x.drive) < FDC_DRIVES,
                "transfer on a drive that does not exist",
            )?;
            c(
                usize::from(x.pos) <= unit,
                "transfer position past the sector",
            )?;
            Ok(Some(Exec {
                op: op_from_saved(x.op),
                drive: usize::from(x.drive),
                c: x.c,
                h: x.h,
                r: x.r,
                n: x.n,
                eot: x.eot,
                multi_track: x.multi_track,
                dma: x.dma,
                st0: x.st0,
                st2: x.st2,
                tc: x.tc,
                pos: usize::from(x.pos),
                loaded: x.loaded,
                fill: x.fill,
                remaining: x.remaining,
                last_id: x.last_id,
                wrote: x.wrote,
            }))
        }
    }

    fn describe_drive(connected: bool, kind: u8) -> String {
        if connected {
            format!("a drive of CMOS type {kind}")
        } else {
            "empty".to_string()
        }
    }

    impl SaveRestore for Fdc {
        fn save(&mut self) -> SavedState {
            encode(DEVICE, VERSION, &FdcStateV1::from_device(self))
        }

        fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
            let s: FdcStateV1 = decode(state, DEVICE, VERSION)?;
            let exec = s.check(self)?;
            // Nothing can fail from here on.
            for (d, sd) in self.drives.iter_mut().zip(&s.drives) {
                d.pcn = sd.pcn;
                d.changed = sd.changed;
                d.perpendicular = sd.perpendicular;
                d.next_id = sd.next_id;
                d.spec = sd.spec;
            }
            self.dor = s.dor;
            self.tdr = s.tdr;
            self.dsr = s.dsr;
            self.phase = match s.phase {
                PhaseV1::Command => Phase::Command,
                PhaseV1::Execution => Phase::Execution,
                PhaseV1::Result => Phase::Result,
            };
            self.cmd = s.cmd;
            self.cmd_len = usize::from(s.cmd_len);
            self.cmd_need = usize::from(s.cmd_need);
            self.result = s.result;
            self.result_len = usize::from(s.result_len);
            self.result_pos = usize::from(s.result_pos);
            let dma_waits = exec.as_ref().is_some_and(|x| x.dma);
            self.exec = exec;
            self.buf = s.buf;
            self.int_result = s.int_result;
            self.seek_status = s.seek_status;
            self.poll_pending = s.poll_pending;
            self.specify = s.specify;
            self.config = s.config;
            self.pretrk = s.pretrk;
            self.lock = s.lock;
            self.perp_gap = s.perp_gap;
            self.last_eot = s.last_eot;
            // Re-assert the interrupt line to match.
            self.line =
                self.dor & DOR_NRESET != 0 && self.dor & DOR_DMA_GATE != 0 && self.int_pending();
            self.irq.set_level(self.line);
            if dma_waits {
                // The DMA request is re-raised on the next poll, once the DMA controller has
                // its state back too.
                self.waker.wake();
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemoryBlock;
    use crate::dma_memory::VecMemory;
    use crate::irq::RecordingSink;
    use std::io;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const IRQ: u32 = FDC_IRQ;
    const DMA_BUF: u32 = 0x1_0000;

    /// A diskette image the test can look at after the controller owns it.
    #[derive(Clone)]
    struct SharedDisk(Arc<Mutex<MemoryBlock>>);

    impl BlockBackend for SharedDisk {
        fn len(&self) -> u64 {
            self.0.lock().unwrap().len()
        }
        fn read_only(&self) -> bool {
            self.0.lock().unwrap().read_only
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.lock().unwrap().read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().write_at(offset, buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().flush()
        }
    }

    /// Byte `i` of logical sector `lba`: the sector number in the first two bytes.
    fn pattern(lba: usize, i: usize) -> u8 {
        match i {
            0 => lba as u8,
            1 => (lba >> 8) as u8,
            _ => (i as u8).wrapping_mul(7) ^ (lba as u8),
        }
    }

    fn image(format: FloppyFormat) -> Vec<u8> {
        let n = format.size() as usize;
        (0..n).map(|o| pattern(o / 512, o % 512)).collect()
    }

    fn lba(f: FloppyFormat, c: u8, h: u8, r: u8) -> usize {
        (usize::from(c) * 2 + usize::from(h)) * usize::from(f.sectors) + usize::from(r) - 1
    }

    struct Rig {
        fdc: Fdc,
        dma: Arc<Mutex<Dma8237>>,
        mem: Arc<VecMemory>,
        sink: Arc<RecordingSink>,
        disk: SharedDisk,
        woken: Arc<AtomicUsize>,
    }

    const F144: FloppyFormat = FloppyFormat::ALL[3];

    impl Rig {
        fn new(format: FloppyFormat, read_only: bool) -> Self {
            let mut block = MemoryBlock::new(image(format));
            block.read_only = read_only;
            let disk = SharedDisk(Arc::new(Mutex::new(block)));
            let mut rig = Self::empty();
            rig.fdc.attach(0, Some(Box::new(disk.clone()))).unwrap();
            rig.disk = disk;
            rig
        }

        fn empty() -> Self {
            let mem = Arc::new(VecMemory::new(0x4_0000));
            let dma = Arc::new(Mutex::new(Dma8237::with_memory(mem.clone())));
            let sink = Arc::new(RecordingSink::default());
            let woken = Arc::new(AtomicUsize::new(0));
            let w = woken.clone();
            let waker = TimerWaker::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            });
            let fdc = Fdc::new(IrqLine::new(sink.clone(), IRQ), Some(dma.clone()), waker);
            Self {
                fdc,
                dma,
                mem,
                sink,
                disk: SharedDisk(Arc::new(Mutex::new(MemoryBlock::default()))),
                woken,
            }
        }

        fn inb(&mut self, port: u16) -> u8 {
            let mut b = [0];
            self.fdc.io_read(port, &mut b);
            b[0]
        }

        fn outb(&mut self, port: u16, v: u8) {
            self.fdc.io_write(port, &[v]);
        }

        fn dma_out(&mut self, port: u16, v: u8) {
            lock(&self.dma).io_write(port, &[v]);
        }

        fn dma_in(&mut self, port: u16) -> u8 {
            let mut b = [0];
            lock(&self.dma).io_write(0x0C, &[0]);
            lock(&self.dma).io_read(port, &mut b);
            b[0]
        }

        fn irq(&self) -> bool {
            self.sink.level(IRQ)
        }

        /// Programs channel 2 as SeaBIOS does: `mode` 0x46 reads from the disk into memory,
        /// 0x4A writes memory to the disk.
        fn setup_dma(&mut self, addr: u32, len: u32, mode: u8) {
            self.dma_out(0x0A, 0x06);
            self.dma_out(0x0C, 0);
            self.dma_out(0x04, addr as u8);
            self.dma_out(0x04, (addr >> 8) as u8);
            self.dma_out(0x0C, 0);
            self.dma_out(0x05, (len - 1) as u8);
            self.dma_out(0x05, ((len - 1) >> 8) as u8);
            self.dma_out(0x0B, mode);
            self.dma_out(0x81, (addr >> 16) as u8);
            self.dma_out(0x0A, 0x02);
        }

        fn command(&mut self, bytes: &[u8]) {
            for &b in bytes {
                assert_eq!(
                    self.inb(0x3F4) & (MSR_RQM | MSR_DIO),
                    MSR_RQM,
                    "not ready for {b:#x}"
                );
                self.outb(0x3F5, b);
            }
        }

        fn results(&mut self) -> Vec<u8> {
            let mut r = Vec::new();
            while self.inb(0x3F4) & (MSR_RQM | MSR_DIO) == MSR_RQM | MSR_DIO {
                r.push(self.inb(0x3F5));
                assert!(r.len() <= 16);
            }
            assert_eq!(self.inb(0x3F4), MSR_RQM);
            r
        }

        fn sense(&mut self) -> Vec<u8> {
            self.command(&[0x08]);
            self.results()
        }

        /// DOR reset pulse and the four polling statuses.
        fn reset(&mut self) {
            self.outb(0x3F2, 0x08);
            self.outb(0x3F2, 0x1C);
            assert!(self.irq());
            for n in 0..4 {
                assert_eq!(self.sense(), [0xC0 | n, 0]);
            }
            assert!(!self.irq());
        }

        fn mem(&self, at: u32, n: usize) -> Vec<u8> {
            let at = at as usize;
            self.mem.0.lock().unwrap()[at..at + n].to_vec()
        }

        fn sector(&self, lba: usize) -> Vec<u8> {
            self.disk.0.lock().unwrap().data[lba * 512..(lba + 1) * 512].to_vec()
        }

        fn seek(&mut self, drive: u8, cyl: u8) {
            self.command(&[0x0F, drive, cyl]);
            assert!(self.irq());
            assert_eq!(self.sense(), [0x20 | drive, cyl]);
        }
    }

    fn expected(f: FloppyFormat, c: u8, h: u8, r: u8) -> Vec<u8> {
        let l = lba(f, c, h, r);
        (0..512).map(|i| pattern(l, i)).collect()
    }

    /// The port sequence SeaBIOS uses to load a boot sector (src/hw/dma.c, src/hw/floppy.c).
    #[test]
    fn firmware_boot_sector_load() {
        let mut rig = Rig::new(F144, false);
        // dma_setup: master clear both controllers, cascade mode on channel 4, unmask it.
        rig.dma_out(0x0D, 0);
        rig.dma_out(0xDA, 0);
        rig.dma_out(0xD6, 0xC0);
        rig.dma_out(0xD4, 0x00);
        // floppy_enable_controller: reset with IRQ/DMA enabled, four SENSE INTERRUPTs.
        rig.outb(0x3F2, 0x08);
        rig.outb(0x3F2, 0x0C);
        assert!(rig.irq());
        for n in 0..4 {
            assert_eq!(rig.sense(), [0xC0 | n, 0]);
        }
        // Motor on, recalibrate, sense.
        rig.outb(0x3F2, 0x1C);
        rig.command(&[0x07, 0x00]);
        assert!(rig.irq());
        assert_eq!(rig.sense(), [0x20, 0]);
        // Media sense: data rate, READ ID.
        rig.outb(0x3F7, 0x00);
        rig.command(&[0x4A, 0x00]);
        assert!(rig.irq());
        assert_eq!(rig.results()[..3], [0, 0, 0]);
        rig.command(&[0x03, 0xAF, 0x02]);
        // dma_floppy for 512 bytes at 0x7C00, then READ DATA with EOT = last sector.
        rig.setup_dma(0x7C00, 512, 0x46);
        rig.command(&[0xE6, 0x00, 0, 0, 1, 2, 1, 0x1B, 0xFF]);
        assert!(rig.irq());
        let r = rig.results();
        assert_eq!(r[0] & 0xC0, 0);
        assert_eq!(rig.mem(0x7C00, 512), expected(F144, 0, 0, 1));
    }

    #[test]
    fn reset_gives_four_sense_interrupts() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        assert_eq!(rig.sense(), [0x80]);
        // Software reset through the DSR does the same.
        rig.outb(0x3F4, 0x80);
        assert!(rig.irq());
        assert_eq!(rig.inb(0x3F0) & 0x80, 0x80);
        for n in 0..4 {
            assert_eq!(rig.sense(), [0xC0 | n, 0]);
        }
        assert_eq!(rig.inb(0x3F0) & 0x80, 0);
        // Held in reset: not ready, writes ignored.
        rig.outb(0x3F2, 0x00);
        assert_eq!(rig.inb(0x3F4), 0);
        rig.outb(0x3F5, 0x10);
        rig.outb(0x3F2, 0x0C);
        for _ in 0..4 {
            rig.sense();
        }
        rig.command(&[0x10]);
        assert_eq!(rig.results(), [0x90]);
    }

    #[test]
    fn interrupt_is_gated_by_the_dor() {
        let mut rig = Rig::new(F144, false);
        rig.outb(0x3F2, 0x00);
        rig.outb(0x3F2, 0x04);
        assert!(!rig.irq());
        assert_eq!(rig.inb(0x3F0) & 0x80, 0x80);
        rig.outb(0x3F2, 0x0C);
        assert!(rig.irq());
    }

    #[test]
    fn identification_and_configuration_commands() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.command(&[0x10]);
        assert_eq!(rig.results(), [FDC_VERSION]);
        rig.command(&[0x18]);
        assert_eq!(rig.results(), [FDC_PART_ID]);
        // CONFIGURE as Linux sends it: implied seek off, FIFO on, polling off, threshold 10.
        rig.command(&[0x13, 0x00, 0x1A, 0x00]);
        rig.command(&[0x94]);
        assert_eq!(rig.results(), [0x10]);
        rig.command(&[0x12, 0x00]);
        rig.command(&[0x03, 0xAF, 0x02]);
        rig.command(&[0x0E]);
        let r = rig.results();
        assert_eq!(r.len(), 10);
        assert_eq!(&r[4..6], [0xAF, 0x02]);
        assert_eq!(r[7] & 0x80, 0x80);
        assert_eq!(r[8], 0x1A);
        // Locked: a reset keeps the configuration.
        rig.reset();
        rig.command(&[0x0E]);
        assert_eq!(rig.results()[8], 0x1A);
        rig.command(&[0x14]);
        assert_eq!(rig.results(), [0x00]);
        rig.reset();
        rig.command(&[0x0E]);
        assert_eq!(rig.results()[8], CFG_DEFAULT);
        // Perpendicular mode for drive 1 shows in DUMPREG.
        rig.command(&[0x12, 0x88]);
        rig.command(&[0x0E]);
        assert_eq!(rig.results()[7] & 0x3C, 0x08);
        // Unknown command.
        rig.command(&[0x1F]);
        assert_eq!(rig.results(), [0x80]);
        rig.command(&[0x00]);
        assert_eq!(rig.results(), [0x80]);
        // DRIVE SPECIFICATION without and with a result phase.
        rig.command(&[0x8E, 0x00, 0xC0]);
        assert_eq!(rig.inb(0x3F4), MSR_RQM);
        rig.command(&[0x8E, 0x09, 0x80]);
        assert_eq!(rig.results(), [0, 0x09, 0, 0]);
    }

    #[test]
    fn specify_recalibrate_seek_with_interrupts() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.command(&[0x03, 0xAF, 0x02]);
        assert_eq!(rig.inb(0x3F4), MSR_RQM);
        assert!(!rig.irq());
        rig.command(&[0x0F, 0x04, 40]);
        assert!(rig.irq());
        assert_eq!(rig.sense(), [0x24, 40]);
        assert!(!rig.irq());
        rig.command(&[0x04, 0x00]);
        assert_eq!(rig.results(), [0x28]);
        rig.command(&[0xCF, 0x00, 5]);
        assert_eq!(rig.sense(), [0x20, 45]);
        rig.command(&[0x8F, 0x00, 50]);
        assert_eq!(rig.sense(), [0x20, 0]);
        rig.seek(0, 3);
        rig.command(&[0x07, 0x00]);
        assert!(rig.irq());
        assert_eq!(rig.sense(), [0x20, 0]);
        rig.command(&[0x04, 0x00]);
        assert_eq!(rig.results(), [0x38]);
        // A drive that is not there never reports track 0.
        rig.command(&[0x07, 0x01]);
        assert_eq!(rig.sense(), [0x71, 0]);
        // Two seeks queue two statuses.
        rig.command(&[0x0F, 0x00, 7]);
        rig.command(&[0x0F, 0x02, 9]);
        assert_eq!(rig.sense(), [0x20, 7]);
        assert!(rig.irq());
        assert_eq!(rig.sense(), [0x22, 9]);
        assert!(!rig.irq());
    }

    /// READ DATA over DMA as SeaBIOS issues it (sector count in the DMA count and EOT).
    #[test]
    fn read_data_by_dma() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.command(&[0x03, 0xAF, 0x02]);
        rig.seek(0, 2);
        rig.setup_dma(DMA_BUF, 3 * 512, 0x46);
        rig.command(&[0xE6, 0x04, 2, 1, 5, 2, 7, 0x1B, 0xFF]);
        assert!(rig.irq());
        // Terminal count on EOT of head 1: the IDs point at the next cylinder.
        assert_eq!(rig.results(), [0x00, 0, 0, 3, 0, 1, 2]);
        assert!(!rig.irq());
        for i in 0..3u8 {
            assert_eq!(
                rig.mem(DMA_BUF + 512 * u32::from(i), 512),
                expected(F144, 2, 1, 5 + i)
            );
        }
        // Terminal count shows in the DMA status register.
        assert_eq!(rig.dma_in(0x08) & 0x04, 0x04);
        assert_eq!(rig.dma_in(0x05), 0xFF);
    }

    /// Linux reads with EOT = sectors per track and stops the transfer by terminal count.
    #[test]
    fn read_multi_track_ends_on_terminal_count() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.seek(0, 1);
        rig.setup_dma(DMA_BUF, 4 * 512, 0x46);
        rig.command(&[0xE6, 0x00, 1, 0, 17, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x04, 0, 0, 1, 1, 3, 2]);
        let want: Vec<u8> = [(0, 17), (0, 18), (1, 1), (1, 2)]
            .iter()
            .flat_map(|&(h, r)| expected(F144, 1, h, r))
            .collect();
        assert_eq!(rig.mem(DMA_BUF, 4 * 512), want);
        // Terminal count at the end of the cylinder: C+1, H back to 0, R=1.
        rig.setup_dma(DMA_BUF, 2 * 512, 0x46);
        rig.command(&[0xE6, 0x04, 1, 1, 17, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x00, 0, 0, 2, 0, 1, 2]);
        // Without multi-track, terminal count at EOT: C+1, same head.
        rig.setup_dma(DMA_BUF, 512, 0x46);
        rig.command(&[0x46, 0x04, 1, 1, 18, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x04, 0, 0, 2, 1, 1, 2]);
    }

    #[test]
    fn read_past_end_of_track_reports_end_of_cylinder() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.setup_dma(DMA_BUF, 4 * 512, 0x46);
        rig.command(&[0x46, 0x00, 0, 0, 17, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x40, 0x80, 0, 0, 0, 18, 2]);
        assert_eq!(rig.mem(DMA_BUF + 512, 512), expected(F144, 0, 0, 18));
        assert_eq!(rig.mem(DMA_BUF + 1024, 16), [0; 16]);
        // EOT beyond the track: the sector after the last one is not found.
        rig.setup_dma(DMA_BUF, 4 * 512, 0x46);
        rig.command(&[0x46, 0x00, 0, 0, 18, 2, 20, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x40, 0x04, 0, 0, 0, 19, 2]);
    }

    #[test]
    fn write_data_by_dma() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.seek(0, 79);
        {
            let mut m = rig.mem.0.lock().unwrap();
            for (i, b) in m[DMA_BUF as usize..DMA_BUF as usize + 1024]
                .iter_mut()
                .enumerate()
            {
                *b = (i % 251) as u8;
            }
        }
        rig.setup_dma(DMA_BUF, 1024, 0x4A);
        rig.command(&[0xC5, 0x00, 79, 0, 18, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x04, 0, 0, 79, 1, 2, 2]);
        let written: Vec<u8> = (0..1024).map(|i| (i % 251) as u8).collect();
        assert_eq!(rig.sector(lba(F144, 79, 0, 18)), written[..512]);
        assert_eq!(rig.sector(lba(F144, 79, 1, 1)), written[512..]);
        assert_eq!(rig.sector(lba(F144, 79, 1, 2)), expected(F144, 79, 1, 2));
        assert!(rig.disk.0.lock().unwrap().flushes > 0);
        // Terminal count in the middle of a sector: the rest is zero filled.
        rig.setup_dma(DMA_BUF, 100, 0x4A);
        rig.command(&[0x45, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x00, 0, 0, 0, 0, 2, 2]);
        let s = rig.sector(0);
        assert_eq!(s[..100], written[..100]);
        assert!(s[100..].iter().all(|&b| b == 0));
        assert_eq!(rig.sector(1), expected(F144, 0, 0, 2));
    }

    #[test]
    fn read_and_write_in_non_dma_mode() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.command(&[0x03, 0xAF, 0x03]);
        rig.command(&[0x46, 0x00, 0, 0, 2, 2, 3, 0x1B, 0xFF]);
        assert!(rig.irq());
        assert_eq!(rig.inb(0x3F4), MSR_RQM | MSR_DIO | MSR_NDMA | MSR_CB);
        let mut data = Vec::new();
        while rig.inb(0x3F4) & MSR_NDMA != 0 {
            data.push(rig.inb(0x3F5));
        }
        assert_eq!(data.len(), 1024);
        assert_eq!(data[..512], expected(F144, 0, 0, 2));
        assert_eq!(data[512..], expected(F144, 0, 0, 3));
        // No terminal count without DMA: the read ends past EOT.
        assert_eq!(rig.results(), [0x40, 0x80, 0, 0, 0, 3, 2]);
        rig.command(&[0x45, 0x00, 0, 0, 5, 2, 5, 0x1B, 0xFF]);
        assert_eq!(rig.inb(0x3F4), MSR_RQM | MSR_NDMA | MSR_CB);
        for i in 0..512 {
            rig.outb(0x3F5, (i * 3) as u8);
        }
        assert_eq!(rig.results(), [0x40, 0x80, 0, 0, 0, 5, 2]);
        let s = rig.sector(4);
        assert!(s.iter().enumerate().all(|(i, &b)| b == (i * 3) as u8));
    }

    #[test]
    fn write_protected_media() {
        let mut rig = Rig::new(F144, true);
        rig.reset();
        rig.command(&[0x04, 0x00]);
        assert_eq!(rig.results()[0] & 0x40, 0x40);
        rig.setup_dma(DMA_BUF, 512, 0x4A);
        rig.command(&[0x45, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x40, 0x02, 0, 0, 0, 1, 2]);
        assert_eq!(rig.sector(0), expected(F144, 0, 0, 1));
        rig.command(&[0x4D, 0x00, 2, 18, 0x6C, 0xF6]);
        assert_eq!(rig.results()[..2], [0x40, 0x02]);
    }

    #[test]
    fn no_media_and_bad_addresses() {
        let mut rig = Rig::empty();
        rig.fdc.attach(0, None).unwrap();
        rig.reset();
        rig.setup_dma(DMA_BUF, 512, 0x46);
        rig.command(&[0x46, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x40, 0x01, 0, 0, 0, 1, 2]);
        rig.command(&[0x4A, 0x00]);
        assert_eq!(rig.results()[..2], [0x40, 0x01]);
        // Empty drives look write protected.
        rig.command(&[0x04, 0x00]);
        assert_eq!(rig.results()[0] & 0x40, 0x40);

        let mut rig = Rig::new(F144, false);
        rig.reset();
        // Sector 19 of an 18-sector track, sector 0, a cylinder past the disk.
        rig.command(&[0x46, 0x00, 0, 0, 19, 2, 19, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x04]);
        rig.command(&[0x46, 0x00, 0, 0, 0, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x04]);
        rig.command(&[0x46, 0x00, 80, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x01]);
        // Wrong size code, head field, FM mode, data rate.
        rig.command(&[0x46, 0x00, 0, 0, 1, 3, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x04]);
        rig.command(&[0x46, 0x00, 0, 2, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x04]);
        rig.command(&[0x06, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x01]);
        rig.outb(0x3F7, 0x02);
        rig.command(&[0x46, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x01]);
        rig.outb(0x3F7, 0x00);
        // Nothing went to memory.
        assert_eq!(rig.mem(DMA_BUF, 16), [0; 16]);
    }

    #[test]
    fn read_id_follows_the_data_rate() {
        let mut rig = Rig::new(FloppyFormat::ALL[1], false);
        rig.reset();
        rig.outb(0x3F7, 0x00);
        rig.command(&[0x4A, 0x00]);
        assert_eq!(rig.results()[..2], [0x40, 0x01]);
        rig.outb(0x3F7, 0x02);
        rig.command(&[0x4A, 0x04]);
        let r = rig.results();
        assert_eq!(r[..5], [0x04, 0, 0, 0, 1]);
        assert_eq!(r[6], 2);
        rig.command(&[0x4A, 0x04]);
        assert_eq!(rig.results()[5], r[5] % 9 + 1);
        // A 720 KB disk reads at 250 kbit/s.
        rig.setup_dma(DMA_BUF, 512, 0x46);
        rig.command(&[0x66, 0x04, 79, 1, 9, 2, 9, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x04, 0, 0, 80, 1, 1, 2]);
        assert_eq!(
            rig.mem(DMA_BUF, 512),
            expected(FloppyFormat::ALL[1], 79, 1, 9)
        );
    }

    #[test]
    fn disk_change_line_after_eject_and_insert() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.outb(0x3F2, 0x1C);
        assert_eq!(rig.inb(0x3F7) & 0x80, 0x80);
        // A seek that does not move the head keeps the line; a step clears it.
        rig.seek(0, 0);
        assert_eq!(rig.inb(0x3F7) & 0x80, 0x80);
        rig.seek(0, 1);
        assert_eq!(rig.inb(0x3F7) & 0x80, 0);
        assert!(rig.fdc.eject(0).is_some());
        assert!(!rig.fdc.has_media(0));
        assert_eq!(rig.inb(0x3F7) & 0x80, 0x80);
        // Without a diskette, stepping does not clear it.
        rig.seek(0, 0);
        assert_eq!(rig.inb(0x3F7) & 0x80, 0x80);
        rig.fdc
            .insert_media(0, Box::new(MemoryBlock::new(vec![0; 737_280])))
            .unwrap();
        assert_eq!(rig.inb(0x3F7) & 0x80, 0x80);
        rig.seek(0, 1);
        assert_eq!(rig.inb(0x3F7) & 0x80, 0);
        assert_eq!(rig.fdc.media_format(0), Some(FloppyFormat::ALL[1]));
    }

    #[test]
    fn attach_checks_sizes_and_reports_cmos_types() {
        let mut fdc = Rig::empty().fdc;
        assert_eq!(fdc.cmos_drive_types(), [FloppyType::None; 2]);
        let err = fdc.attach(0, Some(Box::new(MemoryBlock::new(vec![0; 1000]))));
        assert!(matches!(err, Err(FdcError::UnsupportedSize(1000))));
        assert!(matches!(fdc.attach(4, None), Err(FdcError::NoSuchDrive(4))));
        assert!(matches!(
            fdc.insert_media(1, Box::new(MemoryBlock::new(vec![0; 1_474_560]))),
            Err(FdcError::NoDrive(1))
        ));
        fdc.attach(0, Some(Box::new(MemoryBlock::new(vec![0; 2_949_120]))))
            .unwrap();
        fdc.attach(1, None).unwrap();
        assert_eq!(
            fdc.cmos_drive_types(),
            [FloppyType::M2_88, FloppyType::M1_44]
        );
        for (size, kind) in [
            (368_640, FloppyType::M1_2),
            (737_280, FloppyType::M1_44),
            (1_228_800, FloppyType::M1_2),
            (1_474_560, FloppyType::M1_44),
            (1_720_320, FloppyType::M1_44),
            (2_949_120, FloppyType::M2_88),
        ] {
            let f = FloppyFormat::from_size(size).unwrap();
            assert_eq!(f.drive, kind);
            assert_eq!(f.size(), size);
        }
    }

    #[test]
    fn dma_waits_for_the_channel_to_be_unmasked() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.setup_dma(DMA_BUF, 512, 0x46);
        rig.dma_out(0x0A, 0x06);
        rig.command(&[0x46, 0x00, 0, 0, 3, 2, 3, 0x1B, 0xFF]);
        assert_eq!(rig.inb(0x3F4), MSR_CB);
        assert!(!rig.irq());
        assert_eq!(rig.dma_in(0x08) & 0x40, 0x40);
        Poll::poll(&mut rig.fdc, 0);
        assert_eq!(rig.inb(0x3F4), MSR_CB);
        let before = rig.woken.load(Ordering::SeqCst);
        rig.dma_out(0x0A, 0x02);
        assert!(rig.woken.load(Ordering::SeqCst) > before);
        Poll::poll(&mut rig.fdc, 0);
        assert!(rig.irq());
        assert_eq!(rig.results(), [0x00, 0, 0, 1, 0, 1, 2]);
        assert_eq!(rig.mem(DMA_BUF, 512), expected(F144, 0, 0, 3));
        assert_eq!(rig.dma_in(0x08) & 0x40, 0);
    }

    #[test]
    fn dma_memory_failure_is_an_overrun() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.setup_dma(0x3_FF00, 512, 0x46);
        lock(&rig.dma).io_write(0x81, &[0x7F]);
        rig.command(&[0x46, 0x00, 0, 0, 1, 2, 1, 0x1B, 0xFF]);
        assert_eq!(rig.results()[..2], [0x40, 0x10]);
    }

    #[test]
    fn format_track_by_dma() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.seek(0, 5);
        {
            let mut m = rig.mem.0.lock().unwrap();
            for s in 0..18u8 {
                let at = DMA_BUF as usize + usize::from(s) * 4;
                m[at..at + 4].copy_from_slice(&[5, 1, s + 1, 2]);
            }
        }
        rig.setup_dma(DMA_BUF, 18 * 4, 0x4A);
        rig.command(&[0x4D, 0x04, 2, 18, 0x6C, 0xF6]);
        assert!(rig.irq());
        let r = rig.results();
        assert_eq!(r[..3], [0x04, 0, 0]);
        for s in 1..=18 {
            assert!(rig.sector(lba(F144, 5, 1, s)).iter().all(|&b| b == 0xF6));
        }
        assert_eq!(rig.sector(lba(F144, 5, 0, 18)), expected(F144, 5, 0, 18));
        assert_eq!(rig.sector(lba(F144, 6, 0, 1)), expected(F144, 6, 0, 1));
    }

    #[test]
    fn verify_and_read_track() {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.command(&[0x56, 0x00, 0, 0, 1, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x00, 0, 0, 0, 0, 18, 2]);
        rig.command(&[0x56, 0x80, 0, 0, 1, 2, 18, 0x1B, 4]);
        assert_eq!(rig.results(), [0x00, 0, 0, 0, 0, 5, 2]);
        rig.setup_dma(DMA_BUF, 2 * 512, 0x46);
        rig.command(&[0x42, 0x00, 0, 0, 9, 2, 18, 0x1B, 0xFF]);
        assert_eq!(rig.results(), [0x00, 0, 0, 0, 0, 3, 2]);
        assert_eq!(rig.mem(DMA_BUF, 512), expected(F144, 0, 0, 1));
    }

    // ---- saved state ----------------------------------------------------------------

    use crate::saved_state::{RestoreError, SaveRestore, SavedState};

    /// Every register a read does not change, and the interrupt line.
    fn observe(rig: &mut Rig) -> ([u8; 6], bool) {
        let regs = [0x3F0, 0x3F1, 0x3F2, 0x3F3, 0x3F4, 0x3F7].map(|p| rig.inb(p));
        (regs, rig.irq())
    }

    /// Motor on, SPECIFY/CONFIGURE programmed, seeked to cylinder 5, a second seek to 7 not
    /// yet sensed, and READ ID in its result phase with two of its seven bytes read.
    fn busy_fdc() -> Rig {
        let mut rig = Rig::new(F144, false);
        rig.reset();
        rig.outb(0x3F2, 0x1C);
        rig.command(&[0x03, 0xAF, 0x02]);
        rig.command(&[0x13, 0x00, 0x57, 0x03]);
        rig.seek(0, 5);
        rig.command(&[0x0F, 0x00, 7]);
        rig.command(&[0x4A, 0x00]);
        assert!(rig.irq());
        assert_eq!([rig.inb(0x3F5), rig.inb(0x3F5)], [0x00, 0x00]);
        rig
    }

    #[test]
    fn saved_state_round_trip() {
        let mut a = busy_fdc();
        let saved = a.fdc.save();
        assert_eq!(saved.device, "fdc");
        let mut b = Rig::new(F144, false);
        b.fdc.restore(&saved).unwrap();
        assert_eq!(observe(&mut a), observe(&mut b));
        assert!(b.irq(), "the line follows the pending interrupts");
        assert_eq!(b.fdc.save(), saved, "saving the restored device");
        // The unread result bytes, then the pending seek, come out the same.
        let r = a.results();
        assert_eq!(r, [0x00, 7, 0, 1, 2]);
        assert_eq!(b.results(), r);
        assert_eq!(a.sense(), [0x20, 7]);
        assert_eq!(b.sense(), [0x20, 7]);
        assert_eq!(observe(&mut a), observe(&mut b));
        // The controller keeps working the same: CONFIGURE read back, a DMA read.
        a.command(&[0x0E]);
        b.command(&[0x0E]);
        assert_eq!(a.results(), b.results());
        for rig in [&mut a, &mut b] {
            rig.setup_dma(DMA_BUF, 512, 0x46);
            rig.command(&[0xE6, 0x00, 7, 0, 3, 2, 3, 0x1B, 0xFF]);
            assert_eq!(rig.results(), [0x04, 0, 0, 7, 1, 1, 2]);
            assert_eq!(rig.mem(DMA_BUF, 512), expected(F144, 7, 0, 3));
        }
    }

    #[test]
    fn saved_state_round_trip_mid_pio_sector() {
        let mut a = Rig::new(F144, false);
        a.reset();
        a.command(&[0x03, 0xAF, 0x03]);
        a.command(&[0x46, 0x00, 0, 0, 2, 2, 3, 0x1B, 0xFF]);
        let first: Vec<u8> = (0..100).map(|_| a.inb(0x3F5)).collect();
        let saved = a.fdc.save();
        let mut b = Rig::new(F144, false);
        b.fdc.restore(&saved).unwrap();
        assert_eq!(b.fdc.save(), saved);
        assert_eq!(observe(&mut a), observe(&mut b));
        let rest = |rig: &mut Rig| {
            let mut data = Vec::new();
            while rig.inb(0x3F4) & MSR_NDMA != 0 {
                data.push(rig.inb(0x3F5));
            }
            (data, rig.results())
        };
        let (ra, rb) = (rest(&mut a), rest(&mut b));
        assert_eq!(ra, rb);
        assert_eq!([first, ra.0].concat()[..512], expected(F144, 0, 0, 2));
    }

    #[test]
    fn saved_state_refusals() {
        let saved = busy_fdc().fdc.save();
        let mut fresh = Rig::new(F144, false);
        let mut other = saved.clone();
        other.version = 9;
        assert!(matches!(
            fresh.fdc.restore(&other),
            Err(RestoreError::Version { found: 9, .. })
        ));
        let mut cut = saved.clone();
        cut.data.truncate(20);
        assert!(matches!(
            fresh.fdc.restore(&cut),
            Err(RestoreError::Corrupt { .. })
        ));
        let foreign = SavedState {
            device: "i8042".into(),
            ..saved.clone()
        };
        assert!(matches!(
            fresh.fdc.restore(&foreign),
            Err(RestoreError::WrongDevice { .. })
        ));
        let mut s: save::FdcStateV1 = postcard::from_bytes(&saved.data).unwrap();
        s.result_pos = s.result_len + 1;
        let bad = crate::saved_state::encode("fdc", save::VERSION, &s);
        assert!(matches!(
            fresh.fdc.restore(&bad),
            Err(RestoreError::Corrupt { .. })
        ));
        // Another diskette size in the drive.
        let mut small = Rig::new(FloppyFormat::ALL[1], false);
        let e = small.fdc.restore(&saved).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the saved state of fdc is damaged: floppy drive 0 holds a 737280-byte diskette, \
             the snapshot expects a 1474560-byte diskette"
        );
        // The refused controllers still work.
        for rig in [&mut fresh, &mut small] {
            rig.reset();
            rig.command(&[0x10]);
            assert_eq!(rig.results(), [FDC_VERSION]);
        }
    }
}
