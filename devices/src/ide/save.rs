//! Saved state of the PIIX3 IDE function (see [`crate::saved_state`]).
//!
//! Kept: the PCI configuration space, and per channel the selected device, the device control
//! register and the bus-master registers; per device position the task file, status, error,
//! INTRQ, the PIO buffer with the transfer position and what follows it, a DMA request waiting
//! for the bus master, and the drive's own state: for a hard disk the geometry translation,
//! MULTIPLE count, write cache and transfer mode features and the progress of the data command;
//! for a CD-ROM drive the tray, lock, sense data, media-change reporting, pending media event,
//! transfer mode and the reply of a packet command in flight.
//!
//! The media are not saved: the same images must be attached at the same positions before
//! restoring. The state records what each position held (a disk of so many sectors, a CD-ROM
//! drive with or without a medium of so many bytes) and restore refuses a mismatch. Not kept:
//! the IRQ line handles, the DMA memory handle, the drive serial numbers (they follow the
//! position) and the log-once flags.

use super::ata::{
    Addressing, AtaDevice, Chs, Disk, DmaMode, DmaRequest, Kind, Next, Phase, TaskFile, Xfer,
    MAX_MULTIPLE, SECTOR,
};
use super::atapi::{Cdrom, MediaChange, Reply, Sense, Source, RAW_SECTOR};
use super::bus_master::{BusMaster, CMD_START, CMD_TO_MEMORY};
use super::{Channel, Piix3Ide, NIEN};
use crate::pci::ConfigSpaceState;
use crate::saved_state::{decode, encode, ensure, RestoreError, SaveRestore, SavedState};
use serde::{Deserialize, Serialize};

/// Version of [`IdeStateV1`].
pub(super) const VERSION: u32 = 1;
/// The device name saved states carry.
pub(super) const DEVICE: &str = "piix3-ide";

/// Largest PIO buffer a device uses (an ATAPI chunk is at most 0xFFFE bytes).
const MAX_BUFFER: usize = 0x1_0000;
/// Largest DMA transfer: 2^32 raw CD sectors.
const MAX_DMA: u64 = (1 << 32) * RAW_SECTOR;
/// Bus-master status bits that exist.
const BM_STATUS_BITS: u8 = 0x67;

/// The whole IDE function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IdeStateV1 {
    pub(super) config: ConfigSpaceState,
    /// Primary, then secondary.
    pub(super) channels: Vec<ChannelStateV1>,
}

/// One channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChannelStateV1 {
    /// Master, then slave.
    pub(super) devices: Vec<DeviceStateV1>,
    pub(super) selected: u8,
    /// Device control register.
    pub(super) control: u8,
    pub(super) bus_master: BusMasterStateV1,
}

/// A channel's bus-master registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BusMasterStateV1 {
    pub(super) command: u8,
    pub(super) status: u8,
    pub(super) prd_table: u32,
}

/// The command block registers, with their previous (HOB) contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TaskFileV1 {
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

/// What runs after the current PIO block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum NextV1 {
    /// The command ends.
    Stop,
    /// The next block of a sector read.
    ReadBlock,
    /// The block of a sector write is stored.
    WriteBlock,
    /// The ATAPI command packet runs.
    Packet,
    /// The next ATAPI data chunk.
    PacketData,
}

/// The PIO data phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PhaseV1 {
    /// No data phase.
    Idle,
    /// Device to host.
    In(NextV1),
    /// Host to device.
    Out(NextV1),
}

/// A data command waiting for its bus-master transfer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DmaRequestV1 {
    pub(super) to_memory: bool,
    pub(super) total: u64,
    pub(super) done: u64,
}

/// One device position (the registers exist whether or not a drive is attached).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeviceStateV1 {
    pub(super) regs: TaskFileV1,
    pub(super) status: u8,
    pub(super) error: u8,
    pub(super) intrq: bool,
    pub(super) irq_event: bool,
    /// The PIO data buffer.
    pub(super) buf: Vec<u8>,
    /// Bytes of the current block transferred.
    pub(super) pos: u32,
    /// Length of the current block.
    pub(super) end: u32,
    pub(super) phase: PhaseV1,
    pub(super) dma: Option<DmaRequestV1>,
    pub(super) drive: DriveStateV1,
}

/// The drive at a position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum DriveStateV1 {
    /// No drive.
    Absent,
    /// An ATA hard disk.
    Disk(DiskStateV1),
    /// An ATAPI CD/DVD-ROM drive.
    Cdrom(CdromStateV1),
}

/// A cylinder/head/sector translation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ChsV1 {
    pub(super) cylinders: u16,
    pub(super) heads: u8,
    pub(super) sectors: u8,
}

/// The transfer mode SET FEATURES selected.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum DmaModeV1 {
    /// Multiword DMA mode 0–2.
    Multiword(u8),
    /// Ultra DMA mode 0–5.
    Ultra(u8),
}

/// How a data command addressed its first sector.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum AddressingV1 {
    /// 28-bit LBA.
    Lba28,
    /// 48-bit LBA.
    Lba48,
    /// Cylinder/head/sector.
    Chs,
}

/// Progress of a disk data command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct XferV1 {
    pub(super) lba: u64,
    pub(super) remaining: u32,
    pub(super) block: u32,
    pub(super) addressing: AddressingV1,
    pub(super) write: bool,
}

/// An ATA hard disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DiskStateV1 {
    /// 512-byte sectors of the attached image (checked on restore).
    pub(super) sectors: u64,
    pub(super) chs: ChsV1,
    pub(super) multiple: u32,
    pub(super) write_cache: bool,
    pub(super) mode: DmaModeV1,
    pub(super) xfer: XferV1,
}

/// Media-change reporting of a CD-ROM drive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) enum MediaChangeV1 {
    /// Nothing to report.
    None,
    /// "Not ready" comes next.
    NotReady,
    /// "Medium may have changed" comes next.
    Attention,
}

/// Where a packet reply's bytes come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum SourceV1 {
    /// Bytes the command produced.
    Buffer(Vec<u8>),
    /// Sectors of the medium from `lba`, cooked or raw (2352 bytes).
    Sectors { lba: u64, raw: bool },
}

/// A packet reply being sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReplyV1 {
    pub(super) source: SourceV1,
    pub(super) total: u64,
    pub(super) done: u64,
    pub(super) limit: u64,
}

/// An ATAPI CD/DVD-ROM drive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CdromStateV1 {
    /// Size in bytes of the medium in the drive, `None` when empty (checked on restore).
    pub(super) media_bytes: Option<u64>,
    pub(super) tray_open: bool,
    pub(super) locked: bool,
    /// Sense key, additional sense code and qualifier.
    pub(super) sense: [u8; 3],
    pub(super) change: MediaChangeV1,
    /// Pending GET EVENT STATUS NOTIFICATION media event code.
    pub(super) event: u8,
    pub(super) mode: DmaModeV1,
    pub(super) dma: bool,
    pub(super) reply: Option<ReplyV1>,
}

// ---- runtime → saved --------------------------------------------------------------------

fn next_to_saved(n: Next) -> NextV1 {
    match n {
        Next::Stop => NextV1::Stop,
        Next::ReadBlock => NextV1::ReadBlock,
        Next::WriteBlock => NextV1::WriteBlock,
        Next::Packet => NextV1::Packet,
        Next::PacketData => NextV1::PacketData,
    }
}

fn next_from_saved(n: NextV1) -> Next {
    match n {
        NextV1::Stop => Next::Stop,
        NextV1::ReadBlock => Next::ReadBlock,
        NextV1::WriteBlock => Next::WriteBlock,
        NextV1::Packet => Next::Packet,
        NextV1::PacketData => Next::PacketData,
    }
}

fn mode_to_saved(m: DmaMode) -> DmaModeV1 {
    match m {
        DmaMode::Multiword(n) => DmaModeV1::Multiword(n),
        DmaMode::Ultra(n) => DmaModeV1::Ultra(n),
    }
}

fn mode_from_saved(m: DmaModeV1) -> DmaMode {
    match m {
        DmaModeV1::Multiword(n) => DmaMode::Multiword(n),
        DmaModeV1::Ultra(n) => DmaMode::Ultra(n),
    }
}

fn task_file_to_saved(t: &TaskFile) -> TaskFileV1 {
    TaskFileV1 {
        feature: t.feature,
        hob_feature: t.hob_feature,
        nsector: t.nsector,
        hob_nsector: t.hob_nsector,
        sector: t.sector,
        hob_sector: t.hob_sector,
        lcyl: t.lcyl,
        hob_lcyl: t.hob_lcyl,
        hcyl: t.hcyl,
        hob_hcyl: t.hob_hcyl,
        select: t.select,
    }
}

fn task_file_from_saved(t: &TaskFileV1) -> TaskFile {
    TaskFile {
        feature: t.feature,
        hob_feature: t.hob_feature,
        nsector: t.nsector,
        hob_nsector: t.hob_nsector,
        sector: t.sector,
        hob_sector: t.hob_sector,
        lcyl: t.lcyl,
        hob_lcyl: t.hob_lcyl,
        hcyl: t.hcyl,
        hob_hcyl: t.hob_hcyl,
        select: t.select,
    }
}

fn disk_to_saved(d: &Disk) -> DiskStateV1 {
    DiskStateV1 {
        sectors: d.sectors,
        chs: ChsV1 {
            cylinders: d.chs.cylinders,
            heads: d.chs.heads,
            sectors: d.chs.sectors,
        },
        multiple: d.multiple,
        write_cache: d.write_cache,
        mode: mode_to_saved(d.mode),
        xfer: XferV1 {
            lba: d.xfer.lba,
            remaining: d.xfer.remaining,
            block: d.xfer.block,
            addressing: match d.xfer.addressing {
                Addressing::Lba28 => AddressingV1::Lba28,
                Addressing::Lba48 => AddressingV1::Lba48,
                Addressing::Chs => AddressingV1::Chs,
            },
            write: d.xfer.write,
        },
    }
}

fn cdrom_to_saved(cd: &Cdrom) -> CdromStateV1 {
    CdromStateV1 {
        media_bytes: cd.media.as_ref().map(|m| m.len()),
        tray_open: cd.tray_open,
        locked: cd.locked,
        sense: [cd.sense.key, cd.sense.asc, cd.sense.ascq],
        change: match cd.change {
            MediaChange::None => MediaChangeV1::None,
            MediaChange::NotReady => MediaChangeV1::NotReady,
            MediaChange::Attention => MediaChangeV1::Attention,
        },
        event: cd.event,
        mode: mode_to_saved(cd.mode),
        dma: cd.dma,
        reply: cd.reply.as_ref().map(|r| ReplyV1 {
            source: match &r.source {
                Source::Buffer(bytes) => SourceV1::Buffer(bytes.clone()),
                Source::Sectors { lba, raw } => SourceV1::Sectors {
                    lba: *lba,
                    raw: *raw,
                },
            },
            total: r.total,
            done: r.done,
            limit: r.limit,
        }),
    }
}

fn device_to_saved(d: &AtaDevice) -> DeviceStateV1 {
    DeviceStateV1 {
        regs: task_file_to_saved(&d.regs),
        status: d.status,
        error: d.error,
        intrq: d.intrq,
        irq_event: d.irq_event,
        buf: d.buf.clone(),
        pos: d.pos as u32,
        end: d.end as u32,
        phase: match d.phase {
            Phase::Idle => PhaseV1::Idle,
            Phase::In(n) => PhaseV1::In(next_to_saved(n)),
            Phase::Out(n) => PhaseV1::Out(next_to_saved(n)),
        },
        dma: d.dma.map(|r| DmaRequestV1 {
            to_memory: r.to_memory,
            total: r.total,
            done: r.done,
        }),
        drive: match &d.kind {
            Kind::Absent => DriveStateV1::Absent,
            Kind::Disk(disk) => DriveStateV1::Disk(disk_to_saved(disk)),
            Kind::Cdrom(cd) => DriveStateV1::Cdrom(cdrom_to_saved(cd)),
        },
    }
}

impl IdeStateV1 {
    fn from_device(ide: &Piix3Ide) -> Self {
        Self {
            config: ide.config.saved(),
            channels: ide
                .channels
                .iter()
                .map(|c| ChannelStateV1 {
                    devices: c.devices.iter().map(device_to_saved).collect(),
                    selected: c.selected as u8,
                    control: c.control,
                    bus_master: BusMasterStateV1 {
                        command: c.bm.command,
                        status: c.bm.status,
                        prd_table: c.bm.prd_table,
                    },
                })
                .collect(),
        }
    }
}

// ---- checks -----------------------------------------------------------------------------

fn describe_kind(kind: &Kind) -> String {
    match kind {
        Kind::Absent => "no drive".into(),
        Kind::Disk(d) => format!("a hard disk of {} sectors", d.sectors),
        Kind::Cdrom(_) => "a CD-ROM drive".into(),
    }
}

fn describe_saved(drive: &DriveStateV1) -> String {
    match drive {
        DriveStateV1::Absent => "no drive".into(),
        DriveStateV1::Disk(d) => format!("a hard disk of {} sectors", d.sectors),
        DriveStateV1::Cdrom(_) => "a CD-ROM drive".into(),
    }
}

fn describe_medium(bytes: Option<u64>) -> String {
    match bytes {
        Some(n) => format!("a {n}-byte medium"),
        None => "no medium".into(),
    }
}

fn mode_ok(m: DmaModeV1) -> bool {
    match m {
        DmaModeV1::Multiword(n) => n <= 2,
        DmaModeV1::Ultra(n) => n <= 5,
    }
}

/// Checks one position's state against itself and against the drive attached there.
fn check_device(s: &DeviceStateV1, d: &AtaDevice, at: &str) -> Result<(), RestoreError> {
    let c = |ok, reason: &str| ensure(ok, DEVICE, format!("IDE {at}: {reason}"));
    let (pos, end, len) = (s.pos as usize, s.end as usize, s.buf.len());
    c(
        (SECTOR as usize..=MAX_BUFFER).contains(&len),
        &format!("PIO buffer of {len} bytes"),
    )?;
    c(
        pos <= end && end <= len,
        &format!("PIO position {pos} and end {end} outside the {len}-byte buffer"),
    )?;
    c(
        s.phase != PhaseV1::Idle || (pos == 0 && end == 0),
        "PIO position without a data phase",
    )?;
    if let Some(r) = &s.dma {
        c(
            r.done <= r.total && r.total <= MAX_DMA,
            "DMA progress past the transfer",
        )?;
    }
    match (&s.drive, &d.kind) {
        (DriveStateV1::Absent, Kind::Absent) => {
            c(
                s.phase == PhaseV1::Idle && s.dma.is_none(),
                "a transfer with no drive",
            )?;
        }
        (DriveStateV1::Disk(sd), Kind::Disk(disk)) => {
            ensure(
                sd.sectors == disk.sectors,
                DEVICE,
                format!(
                    "the disk attached at IDE {at} has {} sectors, the snapshot expects {}",
                    disk.sectors, sd.sectors
                ),
            )?;
            c(
                (1..=16).contains(&sd.chs.heads) && sd.chs.sectors >= 1,
                "CHS translation out of range",
            )?;
            c(
                sd.multiple <= MAX_MULTIPLE && (sd.multiple == 0 || sd.multiple.is_power_of_two()),
                "MULTIPLE count out of range",
            )?;
            c(mode_ok(sd.mode), "transfer mode out of range")?;
            let x = &sd.xfer;
            c(
                x.lba
                    .checked_add(u64::from(x.remaining))
                    .is_some_and(|e| e <= disk.sectors),
                "transfer past the end of the disk",
            )?;
            c(x.block <= 0x1_0000, "transfer block out of range")?;
            if matches!(
                s.phase,
                PhaseV1::In(NextV1::ReadBlock) | PhaseV1::Out(NextV1::WriteBlock)
            ) {
                c(
                    (1..=MAX_MULTIPLE).contains(&x.block),
                    "PIO block size out of range",
                )?;
            }
            if s.phase == PhaseV1::Out(NextV1::WriteBlock) {
                let block = x.remaining.min(x.block) as usize * SECTOR as usize;
                c(block <= len, "PIO write block larger than the buffer")?;
            }
        }
        (DriveStateV1::Cdrom(sc), Kind::Cdrom(cd)) => {
            let attached = cd.media.as_ref().map(|m| m.len());
            ensure(
                attached == sc.media_bytes,
                DEVICE,
                format!(
                    "the CD-ROM drive at IDE {at} holds {}, the snapshot expects {}",
                    describe_medium(attached),
                    describe_medium(sc.media_bytes)
                ),
            )?;
            c(mode_ok(sc.mode), "transfer mode out of range")?;
            // No event, new media, media removal.
            c(matches!(sc.event, 0 | 2 | 3), "unknown media event")?;
            if let Some(r) = &sc.reply {
                c(r.done <= r.total, "packet reply progress past its end")?;
                c(r.limit <= 0xFFFE, "byte count limit out of range")?;
                match &r.source {
                    SourceV1::Buffer(bytes) => c(
                        bytes.len() <= MAX_BUFFER && r.total == bytes.len() as u64,
                        "packet reply length inconsistent",
                    )?,
                    SourceV1::Sectors { lba, .. } => c(
                        *lba <= u64::from(u32::MAX) && r.total <= MAX_DMA,
                        "packet reply sectors out of range",
                    )?,
                }
            }
        }
        (saved, kind) => {
            return Err(RestoreError::Corrupt {
                device: DEVICE.into(),
                reason: format!(
                    "IDE {at} holds {}, the snapshot expects {}",
                    describe_kind(kind),
                    describe_saved(saved)
                ),
            })
        }
    }
    Ok(())
}

impl IdeStateV1 {
    /// Checks every value, and that the drives and media attached to `ide` are those saved.
    fn check(&self, ide: &Piix3Ide) -> Result<(), RestoreError> {
        ensure(
            self.channels.len() == 2,
            DEVICE,
            format!("{} channels (expected 2)", self.channels.len()),
        )?;
        for (ch, (s, c)) in self.channels.iter().zip(&ide.channels).enumerate() {
            ensure(
                s.devices.len() == 2,
                DEVICE,
                format!("channel {ch} has {} devices (expected 2)", s.devices.len()),
            )?;
            ensure(s.selected <= 1, DEVICE, "selected device out of range")?;
            let bm = &s.bus_master;
            ensure(
                bm.command & !(CMD_START | CMD_TO_MEMORY) == 0
                    && bm.status & !BM_STATUS_BITS == 0
                    && bm.prd_table & 3 == 0,
                DEVICE,
                format!("channel {ch}: bus-master register value impossible"),
            )?;
            for (unit, (sd, d)) in s.devices.iter().zip(&c.devices).enumerate() {
                check_device(sd, d, &format!("{ch}:{unit}"))?;
            }
        }
        Ok(())
    }
}

// ---- saved → runtime (after the checks) -------------------------------------------------

fn apply_device(s: &DeviceStateV1, d: &mut AtaDevice) {
    d.regs = task_file_from_saved(&s.regs);
    d.status = s.status;
    d.error = s.error;
    d.intrq = s.intrq;
    d.irq_event = s.irq_event;
    d.buf = s.buf.clone();
    d.pos = s.pos as usize;
    d.end = s.end as usize;
    d.phase = match s.phase {
        PhaseV1::Idle => Phase::Idle,
        PhaseV1::In(n) => Phase::In(next_from_saved(n)),
        PhaseV1::Out(n) => Phase::Out(next_from_saved(n)),
    };
    d.dma = s.dma.as_ref().map(|r| DmaRequest {
        to_memory: r.to_memory,
        total: r.total,
        done: r.done,
    });
    match (&s.drive, &mut d.kind) {
        (DriveStateV1::Disk(sd), Kind::Disk(disk)) => {
            disk.chs = Chs {
                cylinders: sd.chs.cylinders,
                heads: sd.chs.heads,
                sectors: sd.chs.sectors,
            };
            disk.multiple = sd.multiple;
            disk.write_cache = sd.write_cache;
            disk.mode = mode_from_saved(sd.mode);
            disk.xfer = Xfer {
                lba: sd.xfer.lba,
                remaining: sd.xfer.remaining,
                block: sd.xfer.block,
                addressing: match sd.xfer.addressing {
                    AddressingV1::Lba28 => Addressing::Lba28,
                    AddressingV1::Lba48 => Addressing::Lba48,
                    AddressingV1::Chs => Addressing::Chs,
                },
                write: sd.xfer.write,
            };
        }
        (DriveStateV1::Cdrom(sc), Kind::Cdrom(cd)) => {
            cd.tray_open = sc.tray_open;
            cd.locked = sc.locked;
            let [key, asc, ascq] = sc.sense;
            cd.sense = Sense { key, asc, ascq };
            cd.change = match sc.change {
                MediaChangeV1::None => MediaChange::None,
                MediaChangeV1::NotReady => MediaChange::NotReady,
                MediaChangeV1::Attention => MediaChange::Attention,
            };
            cd.event = sc.event;
            cd.mode = mode_from_saved(sc.mode);
            cd.dma = sc.dma;
            cd.reply = sc.reply.as_ref().map(|r| Reply {
                source: match &r.source {
                    SourceV1::Buffer(bytes) => Source::Buffer(bytes.clone()),
                    SourceV1::Sectors { lba, raw } => Source::Sectors {
                        lba: *lba,
                        raw: *raw,
                    },
                },
                total: r.total,
                done: r.done,
                limit: r.limit,
            });
        }
        // Checked: the kinds match.
        _ => {}
    }
}

fn apply_channel(s: &ChannelStateV1, c: &mut Channel) {
    for (sd, d) in s.devices.iter().zip(c.devices.iter_mut()) {
        apply_device(sd, d);
    }
    c.selected = usize::from(s.selected);
    c.control = s.control;
    c.bm = BusMaster {
        command: s.bus_master.command,
        status: s.bus_master.status,
        prd_table: s.bus_master.prd_table,
    };
    // Re-assert the line to match the restored INTRQ, without latching the bus-master
    // interrupt bit again.
    let d = &c.devices[c.selected];
    let level = c.control & NIEN == 0 && d.present() && d.intrq;
    c.irq_level = level;
    c.irq.set_level(level);
}

impl SaveRestore for Piix3Ide {
    fn save(&mut self) -> SavedState {
        encode(DEVICE, VERSION, &IdeStateV1::from_device(self))
    }

    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: IdeStateV1 = decode(state, DEVICE, VERSION)?;
        s.check(self)?;
        let mut config = self.config.clone();
        config.restore_saved(&s.config, DEVICE)?;
        // Nothing can fail from here on.
        self.config = config;
        for (sc, c) in s.channels.iter().zip(self.channels.iter_mut()) {
            apply_channel(sc, c);
        }
        Ok(())
    }
}
