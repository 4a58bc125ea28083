//! ATAPI CD/DVD-ROM drives: the PACKET protocol (a 12-byte command packet through the data
//! register, data phases no longer than the host's byte count limit, or DMA through the bus
//! master) and the MMC commands firmware and operating systems use. Sectors are 2048 bytes.

use super::ata::{
    self, op, AtaDevice, DmaMode, DmaRequest, Fault, Identify, Kind, Next, DEV_SELECT, DRDY, DRQ,
    DSC, ERR,
};
use crate::block::BlockBackend;

/// Bytes in a CD-ROM user-data sector.
pub(super) const SECTOR: u64 = 2048;
pub(super) const RAW_SECTOR: u64 = 2352;
/// Larger media are reported as DVDs.
const CD_MAX_BYTES: u64 = 80 * 60 * 75 * SECTOR;
const MODEL: &str = "Terrarium DVD-ROM";
const VENDOR: &str = "TRRM";
const PRODUCT: &str = "Terrarium DVDROM";

/// Interrupt reason (sector count register): command/data.
const REASON_COD: u8 = 0x01;
/// Interrupt reason: transfer to the host.
const REASON_IO: u8 = 0x02;
const REASON_MASK: u8 = 0x07;

const NOT_READY: u8 = 0x02;
const MEDIUM_ERROR: u8 = 0x03;
const ILLEGAL_REQUEST: u8 = 0x05;
const UNIT_ATTENTION: u8 = 0x06;

/// Media event codes of GET EVENT STATUS NOTIFICATION.
const EVENT_NONE: u8 = 0;
const EVENT_NEW_MEDIA: u8 = 2;
const EVENT_MEDIA_REMOVAL: u8 = 3;

/// The command may run while a unit attention is pending.
const ALLOW_UA: u8 = 0x01;
/// The command needs a medium.
const CHECK_READY: u8 = 0x02;

/// Sense key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sense {
    pub(super) key: u8,
    pub(super) asc: u8,
    pub(super) ascq: u8,
}

impl Sense {
    const NONE: Self = Self::new(0, 0, 0);
    const INVALID_OPCODE: Self = Self::new(ILLEGAL_REQUEST, 0x20, 0x00);
    const LBA_OUT_OF_RANGE: Self = Self::new(ILLEGAL_REQUEST, 0x21, 0x00);
    const INVALID_FIELD: Self = Self::new(ILLEGAL_REQUEST, 0x24, 0x00);
    const SAVING_NOT_SUPPORTED: Self = Self::new(ILLEGAL_REQUEST, 0x39, 0x00);
    const ILLEGAL_MODE: Self = Self::new(ILLEGAL_REQUEST, 0x64, 0x00);
    const MEDIUM_CHANGED: Self = Self::new(UNIT_ATTENTION, 0x28, 0x00);
    const MEDIUM_GONE: Self = Self::new(NOT_READY, 0x3A, 0x00);
    /// Unrecovered read error.
    pub(super) const READ_ERROR: Self = Self::new(MEDIUM_ERROR, 0x11, 0x00);

    const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self { key, asc, ascq }
    }
}

/// Reporting of a media change, as a drive does it to hosts that only poll TEST UNIT READY:
/// first "not ready", then "medium may have changed".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum MediaChange {
    #[default]
    None,
    NotReady,
    Attention,
}

/// Where a reply's bytes come from.
pub(super) enum Source {
    Buffer(Vec<u8>),
    Sectors { lba: u64, raw: bool },
}

/// A reply being sent to the host.
pub(super) struct Reply {
    pub(super) source: Source,
    pub(super) total: u64,
    pub(super) done: u64,
    /// The byte count limit the host gave with the command.
    pub(super) limit: u64,
}

/// What a packet command produced.
enum Response {
    Done,
    Data(Vec<u8>),
    Sectors { lba: u64, count: u64, raw: bool },
}

fn data(mut bytes: Vec<u8>, allocation: usize) -> Response {
    bytes.truncate(allocation);
    Response::Data(bytes)
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn msf(lba: u64) -> [u8; 3] {
    let frames = lba + 150;
    [
        (frames / 75 / 60) as u8,
        (frames / 75 % 60) as u8,
        (frames % 75) as u8,
    ]
}

fn push_address(out: &mut Vec<u8>, lba: u64, as_msf: bool) {
    if as_msf {
        out.push(0);
        out.extend_from_slice(&msf(lba));
    } else {
        out.extend_from_slice(&(lba.min(u64::from(u32::MAX)) as u32).to_be_bytes());
    }
}

fn padded(text: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = text.bytes().take(len).collect();
    v.resize(len, b' ');
    v
}

fn flags(opcode: u8) -> Option<u8> {
    Some(match opcode {
        0x00 => CHECK_READY,        // TEST UNIT READY
        0x03 => ALLOW_UA,           // REQUEST SENSE
        0x12 => ALLOW_UA,           // INQUIRY
        0x1A | 0x5A => 0,           // MODE SENSE (6), (10)
        0x1B => 0,                  // START STOP UNIT
        0x1E => 0,                  // PREVENT ALLOW MEDIUM REMOVAL
        0x25 => CHECK_READY,        // READ CAPACITY
        0x28 | 0xA8 => CHECK_READY, // READ (10), (12)
        0x2B => CHECK_READY,        // SEEK (10)
        0x43 => CHECK_READY,        // READ TOC/PMA/ATIP
        0x46 => ALLOW_UA,           // GET CONFIGURATION
        0x4A => ALLOW_UA,           // GET EVENT STATUS NOTIFICATION
        0x51 => CHECK_READY,        // READ DISC INFORMATION
        0xBB => 0,                  // SET CD SPEED
        0xBD => 0,                  // MECHANISM STATUS
        0xBE => CHECK_READY,        // READ CD
        _ => return None,
    })
}

/// An ATAPI CD/DVD-ROM drive.
pub(super) struct Cdrom {
    pub(super) media: Option<Box<dyn BlockBackend>>,
    pub(super) tray_open: bool,
    pub(super) locked: bool,
    pub(super) sense: Sense,
    pub(super) change: MediaChange,
    pub(super) event: u8,
    pub(super) mode: DmaMode,
    /// The current packet command transfers its data by DMA.
    pub(super) dma: bool,
    pub(super) reply: Option<Reply>,
}

impl Cdrom {
    pub(super) fn new(media: Option<Box<dyn BlockBackend>>) -> Self {
        Self {
            media,
            tray_open: false,
            locked: false,
            sense: Sense::NONE,
            change: MediaChange::None,
            event: EVENT_NONE,
            mode: DmaMode::DEFAULT,
            dma: false,
            reply: None,
        }
    }

    pub(super) fn power_on(&mut self) {
        self.tray_open = false;
        self.locked = false;
        self.sense = Sense::NONE;
        self.mode = DmaMode::DEFAULT;
        self.dma = false;
        self.reply = None;
    }

    /// The host puts a medium in (closing the tray); returns the one it replaced.
    pub(super) fn insert(&mut self, media: Box<dyn BlockBackend>) -> Option<Box<dyn BlockBackend>> {
        let old = self.media.replace(media);
        self.tray_open = false;
        self.change = MediaChange::NotReady;
        self.event = EVENT_NEW_MEDIA;
        old
    }

    /// The host takes the medium out, whether or not the guest locked it.
    pub(super) fn eject(&mut self) -> Option<Box<dyn BlockBackend>> {
        let old = self.media.take();
        self.locked = false;
        if old.is_some() {
            self.change = MediaChange::NotReady;
            self.event = EVENT_MEDIA_REMOVAL;
        }
        old
    }

    fn bytes(&self) -> u64 {
        match (&self.media, self.tray_open) {
            (Some(m), false) => m.len(),
            _ => 0,
        }
    }

    /// 2048-byte sectors on the medium (0 without one).
    fn sectors(&self) -> u64 {
        self.bytes() / SECTOR
    }

    fn medium_present(&self) -> bool {
        self.sectors() > 0
    }

    fn is_dvd(&self) -> bool {
        self.bytes() > CD_MAX_BYTES
    }

    pub(super) fn not_ready(&self) -> Sense {
        Sense::new(NOT_READY, 0x3A, if self.tray_open { 0x02 } else { 0x01 })
    }

    /// Fills `out` with reply bytes from `offset`.
    pub(super) fn fill(&mut self, offset: u64, out: &mut [u8]) -> Result<(), Fault> {
        let Some(reply) = &self.reply else {
            out.fill(0);
            return Ok(());
        };
        match reply.source {
            Source::Buffer(ref bytes) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let n = out.len().min(bytes.len() - start);
                out[..n].copy_from_slice(&bytes[start..start + n]);
                out[n..].fill(0);
                Ok(())
            }
            Source::Sectors { lba, raw } => {
                let media = match (&mut self.media, self.tray_open) {
                    (Some(m), false) => m,
                    _ => return Err(Fault::NoMedia),
                };
                if !raw {
                    let at = lba.saturating_mul(SECTOR).saturating_add(offset);
                    return ata::read_checked(&mut **media, at, out).map_err(Fault::Io);
                }
                let mut sector = [0u8; RAW_SECTOR as usize];
                let mut done = 0usize;
                while done < out.len() {
                    let pos = offset + done as u64;
                    let number = lba + pos / RAW_SECTOR;
                    let within = (pos % RAW_SECTOR) as usize;
                    sector.fill(0);
                    sector[1..11].fill(0xFF);
                    sector[12..15].copy_from_slice(&msf(number));
                    sector[15] = 0x01;
                    let user = &mut sector[16..16 + SECTOR as usize];
                    ata::read_checked(&mut **media, number.saturating_mul(SECTOR), user)
                        .map_err(Fault::Io)?;
                    let n = (RAW_SECTOR as usize - within).min(out.len() - done);
                    out[done..done + n].copy_from_slice(&sector[within..within + n]);
                    done += n;
                }
                Ok(())
            }
        }
    }

    fn identify(&self, serial: &str, unit: u8) -> Identify {
        let mut id = Identify::new();
        // ATAPI, CD-ROM, removable, DRQ within 50 µs, 12-byte packets.
        id.set(0, 0x85C0);
        id.string(10, 20, serial);
        id.set(20, 3);
        id.set(21, 512);
        id.set(22, 4);
        id.string(23, 8, ata::FIRMWARE);
        id.string(27, 40, MODEL);
        id.set(49, 1 << 11 | 1 << 9 | 1 << 8);
        id.set(53, 0x0007);
        let (w63, w88) = self.mode.words();
        id.set(63, w63);
        id.set(64, 0x0003);
        id.set(65, 0x00B4);
        id.set(66, 0x00B4);
        id.set(67, 0x012C);
        id.set(68, 0x00B4);
        id.set(71, 30);
        id.set(72, 30);
        id.set(80, 0x001E);
        // NOP, DEVICE RESET and PACKET supported and enabled.
        let features = 1 << 14 | 1 << 9 | 1 << 4;
        id.set(82, features);
        id.set(83, 1 << 14);
        id.set(84, 1 << 14);
        id.set(85, features);
        id.set(87, 1 << 14);
        id.set(88, w88);
        id.set(93, ata::reset_result(unit));
        id
    }

    /// Runs one command packet.
    fn execute(&mut self, cdb: &[u8; 12], serial: &str) -> Result<Response, Sense> {
        let opcode = cdb[0];
        let flags = flags(opcode);
        let allow_ua = flags.is_some_and(|f| f & ALLOW_UA != 0);
        if self.sense.key == UNIT_ATTENTION && !allow_ua {
            return Err(self.sense);
        }
        if !allow_ua && self.medium_present() {
            match self.change {
                MediaChange::NotReady => {
                    self.change = MediaChange::Attention;
                    return Err(Sense::MEDIUM_GONE);
                }
                MediaChange::Attention => {
                    self.change = MediaChange::None;
                    return Err(Sense::MEDIUM_CHANGED);
                }
                MediaChange::None => {}
            }
        }
        let Some(flags) = flags else {
            tracing::debug!(opcode, "atapi: unsupported packet command");
            return Err(Sense::INVALID_OPCODE);
        };
        if flags & CHECK_READY != 0 && !self.medium_present() {
            return Err(self.not_ready());
        }
        match opcode {
            0x00 | 0xBB => Ok(Response::Done),
            0x03 => Ok(self.request_sense(cdb)),
            0x12 => inquiry(cdb, serial),
            0x1A | 0x5A => self.mode_sense(cdb),
            0x1B => self.start_stop(cdb),
            0x1E => {
                self.locked = cdb[4] & 0x01 != 0;
                Ok(Response::Done)
            }
            0x25 => {
                let last = (self.sectors() - 1).min(u64::from(u32::MAX)) as u32;
                let mut v = last.to_be_bytes().to_vec();
                v.extend_from_slice(&(SECTOR as u32).to_be_bytes());
                Ok(Response::Data(v))
            }
            0x28 | 0xA8 => {
                let lba = be32(&cdb[2..6]);
                let count = if opcode == 0x28 {
                    be16(&cdb[7..9]) as u64
                } else {
                    be32(&cdb[6..10])
                };
                self.read(lba, count, false)
            }
            0x2B => {
                if be32(&cdb[2..6]) >= self.sectors() {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                Ok(Response::Done)
            }
            0x43 => self.read_toc(cdb),
            0x46 => self.get_configuration(cdb),
            0x4A => self.event_status(cdb),
            0x51 => {
                if cdb[1] & 0x07 != 0 {
                    return Err(Sense::INVALID_FIELD);
                }
                let mut v = vec![0u8; 34];
                v[1] = 32;
                v[2] = 0x0E; // last session complete, disc finalized
                v[3] = 1; // first track
                v[4] = 1; // sessions
                v[5] = 1; // first track of the last session
                v[6] = 1; // last track of the last session
                v[7] = 0x20; // unrestricted use
                Ok(data(v, be16(&cdb[7..9])))
            }
            0xBD => {
                let door = if self.tray_open { 0x10 } else { 0x00 };
                Ok(data(vec![0, door, 0, 0, 0, 1, 0, 0], be16(&cdb[8..10])))
            }
            0xBE => self.read_cd(cdb),
            _ => Err(Sense::INVALID_OPCODE),
        }
    }

    fn read(&self, lba: u64, count: u64, raw: bool) -> Result<Response, Sense> {
        if count == 0 {
            return Ok(Response::Done);
        }
        if lba.saturating_add(count) > self.sectors() {
            return Err(Sense::LBA_OUT_OF_RANGE);
        }
        Ok(Response::Sectors { lba, count, raw })
    }

    fn request_sense(&mut self, cdb: &[u8; 12]) -> Response {
        let sense = if self.sense == Sense::NONE && !self.medium_present() {
            self.not_ready()
        } else {
            self.sense
        };
        self.sense = Sense::NONE;
        let mut v = vec![0u8; 18];
        v[0] = 0x70;
        v[2] = sense.key;
        v[7] = 10;
        v[12] = sense.asc;
        v[13] = sense.ascq;
        data(v, usize::from(cdb[4]))
    }

    fn mode_page(&self, page: u8, out: &mut Vec<u8>) {
        match page {
            // Read/write error recovery: read retry count 5.
            0x01 => out.extend_from_slice(&[0x01, 0x06, 0x00, 0x05, 0, 0, 0, 0]),
            // CD audio control: both channels at full volume.
            0x0E => out.extend_from_slice(&[
                0x0E, 0x0E, 0x04, 0, 0, 0, 0, 0, 0x01, 0xFF, 0x02, 0xFF, 0, 0, 0, 0,
            ]),
            // Capabilities and mechanical status.
            0x2A => {
                let lock = u8::from(self.locked) << 1;
                out.extend_from_slice(&[
                    0x2A,
                    0x14, // page, length
                    0x3B,
                    0x00, // reads CD-R/RW and DVD-ROM/R/RAM, writes nothing
                    0x71,
                    0x60, // audio play, mode 2 form 1/2, multisession; ISRC, UPC
                    0x29 | lock,
                    0x00, // lock, eject, tray loader
                ]);
                out.extend_from_slice(&704u16.to_be_bytes()); // max speed (KB/s)
                out.extend_from_slice(&2u16.to_be_bytes()); // volume levels
                out.extend_from_slice(&512u16.to_be_bytes()); // buffer (KiB)
                out.extend_from_slice(&704u16.to_be_bytes()); // current speed
                out.extend_from_slice(&[0; 6]);
            }
            _ => {}
        }
    }

    fn mode_sense(&self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        let ten = cdb[0] == 0x5A;
        let allocation = if ten {
            be16(&cdb[7..9])
        } else {
            usize::from(cdb[4])
        };
        let control = cdb[2] >> 6;
        let page = cdb[2] & 0x3F;
        if control == 3 {
            return Err(Sense::SAVING_NOT_SUPPORTED);
        }
        let mut pages = Vec::new();
        match page {
            0x01 | 0x0E | 0x2A => self.mode_page(page, &mut pages),
            0x3F => {
                for p in [0x01, 0x0E, 0x2A] {
                    self.mode_page(p, &mut pages);
                }
            }
            _ => return Err(Sense::INVALID_FIELD),
        }
        if control == 1 {
            // Changeable values: nothing is.
            let mut i = 0;
            while i + 1 < pages.len() {
                let len = usize::from(pages[i + 1]);
                let end = (i + 2 + len).min(pages.len());
                pages[i + 2..end].fill(0);
                i = end;
            }
        }
        let medium = if self.tray_open {
            0x71
        } else if self.medium_present() {
            0x01
        } else {
            0x70
        };
        let mut v = if ten {
            let len = (pages.len() + 6) as u16;
            let [hi, lo] = len.to_be_bytes();
            vec![hi, lo, medium, 0, 0, 0, 0, 0]
        } else {
            vec![(pages.len() + 3) as u8, medium, 0, 0]
        };
        v.extend_from_slice(&pages);
        Ok(data(v, allocation))
    }

    fn start_stop(&mut self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        let start = cdb[4] & 0x01 != 0;
        let load_eject = cdb[4] & 0x02 != 0;
        if cdb[4] & 0xF0 != 0 || !load_eject {
            return Ok(Response::Done);
        }
        if !start {
            if self.locked && !self.tray_open {
                let key = if self.medium_present() {
                    NOT_READY
                } else {
                    ILLEGAL_REQUEST
                };
                return Err(Sense::new(key, 0x53, 0x02));
            }
            self.tray_open = true;
        } else if self.tray_open {
            self.tray_open = false;
            if self.media.is_some() {
                self.event = EVENT_NEW_MEDIA;
            }
        }
        Ok(Response::Done)
    }

    fn read_toc(&self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        let as_msf = cdb[1] & 0x02 != 0;
        let allocation = be16(&cdb[7..9]);
        let format = match cdb[2] & 0x0F {
            0 => cdb[9] >> 6,
            f => f,
        };
        let track = cdb[6];
        let total = self.sectors();
        let mut v = vec![0, 0, 1, 1];
        match format {
            0 => {
                if track > 1 && track != 0xAA {
                    return Err(Sense::INVALID_FIELD);
                }
                if track <= 1 {
                    v.extend_from_slice(&[0, 0x14, 1, 0]);
                    push_address(&mut v, 0, as_msf);
                }
                v.extend_from_slice(&[0, 0x14, 0xAA, 0]);
                push_address(&mut v, total, as_msf);
            }
            1 => {
                v.extend_from_slice(&[0, 0x14, 1, 0]);
                push_address(&mut v, 0, as_msf);
            }
            2 => {
                // Points A0 (first track), A1 (last track), A2 (lead-out), then track 1.
                v.extend_from_slice(&[1, 0x14, 0, 0xA0, 0, 0, 0, 0, 1, 0, 0]);
                v.extend_from_slice(&[1, 0x14, 0, 0xA1, 0, 0, 0, 0, 1, 0, 0]);
                v.extend_from_slice(&[1, 0x14, 0, 0xA2, 0, 0, 0]);
                push_address(&mut v, total, as_msf);
                v.extend_from_slice(&[1, 0x14, 0, 1, 0, 0, 0]);
                push_address(&mut v, 0, as_msf);
            }
            _ => return Err(Sense::INVALID_FIELD),
        }
        let len = (v.len() - 2) as u16;
        v[..2].copy_from_slice(&len.to_be_bytes());
        Ok(data(v, allocation))
    }

    fn get_configuration(&self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        let request = cdb[1] & 0x03;
        if request == 3 {
            return Err(Sense::INVALID_FIELD);
        }
        let start = u16::from_be_bytes([cdb[2], cdb[3]]);
        let allocation = be16(&cdb[7..9]);
        let media = self.medium_present();
        let dvd = media && self.is_dvd();
        let cd = media && !dvd;
        let profile: u16 = if dvd {
            0x0010
        } else if cd {
            0x0008
        } else {
            0
        };
        let blocking: u16 = if dvd { 16 } else { 1 };
        let [bh, bl] = blocking.to_be_bytes();
        // (feature code, persistent, current, additional data)
        let features: [(u16, bool, bool, Vec<u8>); 6] = [
            (
                0x0000,
                true,
                true,
                vec![0x00, 0x10, u8::from(dvd), 0, 0x00, 0x08, u8::from(cd), 0],
            ),
            (0x0001, true, true, vec![0, 0, 0, 2]),
            (0x0003, true, true, vec![0x29, 0, 0, 0]),
            (0x0010, false, media, vec![0, 0, 0x08, 0x00, bh, bl, 0, 0]),
            (0x001E, false, cd, vec![0, 0, 0, 0]),
            (0x001F, false, dvd, vec![]),
        ];
        let mut v = vec![0u8; 8];
        v[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, persistent, current, bytes) in features {
            let wanted = match request {
                0 => code >= start,
                1 => code >= start && current,
                _ => code == start,
            };
            if wanted {
                v.extend_from_slice(&code.to_be_bytes());
                v.push(u8::from(persistent) << 1 | u8::from(current));
                v.push(bytes.len() as u8);
                v.extend_from_slice(&bytes);
            }
        }
        let len = (v.len() - 4) as u32;
        v[..4].copy_from_slice(&len.to_be_bytes());
        Ok(data(v, allocation))
    }

    fn event_status(&mut self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        if cdb[1] & 0x01 == 0 {
            // Only polled operation.
            return Err(Sense::INVALID_FIELD);
        }
        let allocation = be16(&cdb[7..9]);
        let v = if cdb[4] & 0x10 != 0 {
            let status = if self.tray_open {
                0x01
            } else if self.media.is_some() {
                0x02
            } else {
                0x00
            };
            let event = std::mem::replace(&mut self.event, EVENT_NONE);
            vec![0, 6, 0x04, 0x10, event, status, 0, 0]
        } else {
            vec![0, 2, 0x80, 0x10]
        };
        Ok(data(v, allocation))
    }

    fn read_cd(&self, cdb: &[u8; 12]) -> Result<Response, Sense> {
        let sector_type = (cdb[1] >> 2) & 0x07;
        let lba = be32(&cdb[2..6]);
        let count = u64::from(u32::from_be_bytes([0, cdb[6], cdb[7], cdb[8]]));
        if count == 0 {
            return Ok(Response::Done);
        }
        if sector_type != 0 && sector_type != 2 {
            return Err(Sense::ILLEGAL_MODE);
        }
        match cdb[9] & 0xF8 {
            0x00 => {
                if lba.saturating_add(count) > self.sectors() {
                    return Err(Sense::LBA_OUT_OF_RANGE);
                }
                Ok(Response::Done)
            }
            0x10 => self.read(lba, count, false),
            0xF8 => self.read(lba, count, true),
            _ => Err(Sense::INVALID_FIELD),
        }
    }
}

fn inquiry(cdb: &[u8; 12], serial: &str) -> Result<Response, Sense> {
    let allocation = be16(&cdb[3..5]);
    let v = if cdb[1] & 0x01 != 0 {
        match cdb[2] {
            0x00 => vec![0x05, 0x00, 0x00, 0x02, 0x00, 0x80],
            0x80 => {
                let mut v = vec![0x05, 0x80, 0x00, 20];
                v.extend(padded(serial, 20));
                v
            }
            _ => return Err(Sense::INVALID_FIELD),
        }
    } else {
        if cdb[2] != 0 {
            return Err(Sense::INVALID_FIELD);
        }
        // CD/DVD device, removable, SPC-ish version, ATAPI response format.
        let mut v = vec![0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0];
        v.extend(padded(VENDOR, 8));
        v.extend(padded(PRODUCT, 16));
        v.extend(padded(ata::FIRMWARE, 4));
        v
    };
    Ok(data(v, allocation))
}

impl AtaDevice {
    pub(super) fn cdrom_command(&mut self, cmd: u8) {
        match cmd {
            op::PACKET => self.packet_start(),
            op::IDENTIFY_PACKET => {
                let Kind::Cdrom(cd) = &self.kind else {
                    return;
                };
                let block = cd.identify(&self.serial, self.unit).bytes();
                self.buf[..512].copy_from_slice(&block);
                self.status = DRDY | DSC;
                self.start_in(512, Next::Stop);
                self.raise_irq();
            }
            op::DEVICE_RESET => {
                // Like a soft reset of this device alone: the selection stays.
                let select = self.regs.select & DEV_SELECT;
                self.finish_soft_reset();
                self.regs.select |= select;
            }
            // A packet device answers these with its signature and an abort.
            op::IDENTIFY
            | op::READ_SECTORS
            | op::READ_SECTORS_NORETRY
            | op::READ_SECTORS_EXT
            | op::READ_DMA
            | op::READ_DMA_EXT => {
                self.set_signature();
                self.abort();
            }
            op::SET_FEATURES => self.set_features(),
            op::EXECUTE_DIAGNOSTIC => self.diagnostic(),
            op::CHECK_POWER_MODE | op::CHECK_POWER_MODE_OLD => {
                self.regs.nsector = 0xFF;
                self.status = DRDY | DSC;
                self.raise_irq();
            }
            op::STANDBY_IMMEDIATE
            | op::IDLE_IMMEDIATE
            | op::SLEEP
            | op::STANDBY_IMMEDIATE_OLD
            | 0x95
            | op::SLEEP_OLD
            | op::FLUSH_CACHE => {
                self.status = DRDY | DSC;
                self.raise_irq();
            }
            _ => {
                tracing::debug!(cmd, "atapi: unsupported ATA command aborted");
                self.abort();
            }
        }
    }

    fn packet_start(&mut self) {
        if self.regs.feature & 0x02 != 0 {
            // Overlapped commands are not supported.
            return self.abort();
        }
        let Kind::Cdrom(cd) = &mut self.kind else {
            return;
        };
        cd.dma = self.regs.feature & 0x01 != 0;
        cd.reply = None;
        self.regs.nsector = (self.regs.nsector & !REASON_MASK) | REASON_COD;
        self.status = DRDY | DSC;
        self.start_out(12, Next::Packet);
    }

    /// The host has written the whole command packet.
    pub(super) fn execute_packet(&mut self) {
        let mut cdb = [0u8; 12];
        cdb.copy_from_slice(&self.buf[..12]);
        let Kind::Cdrom(cd) = &mut self.kind else {
            return;
        };
        match cd.execute(&cdb, &self.serial) {
            Err(sense) => self.check_condition(sense),
            Ok(Response::Done) => self.packet_ok(),
            Ok(Response::Data(bytes)) => {
                if bytes.is_empty() {
                    self.packet_ok();
                } else {
                    let total = bytes.len() as u64;
                    self.start_reply(Source::Buffer(bytes), total);
                }
            }
            Ok(Response::Sectors { lba, count, raw }) => {
                let size = if raw { RAW_SECTOR } else { SECTOR };
                self.start_reply(Source::Sectors { lba, raw }, count.saturating_mul(size));
            }
        }
    }

    fn start_reply(&mut self, source: Source, total: u64) {
        let Kind::Cdrom(cd) = &mut self.kind else {
            return;
        };
        let dma = cd.dma;
        let limit = match self.regs.byte_count() {
            0xFFFF => 0xFFFE,
            n => u64::from(n),
        };
        if !dma && limit == 0 {
            // A PIO data command needs a byte count limit: aborted at the ATA level.
            self.regs.nsector = (self.regs.nsector & !REASON_MASK) | REASON_IO | REASON_COD;
            return self.abort();
        }
        cd.reply = Some(Reply {
            source,
            total,
            done: 0,
            limit,
        });
        if dma {
            self.dma = Some(DmaRequest {
                to_memory: true,
                total,
                done: 0,
            });
            self.status = DRDY | DSC | DRQ;
        } else {
            self.packet_data_next();
        }
    }

    /// Offers the next data chunk of the reply, or completes the command.
    pub(super) fn packet_data_next(&mut self) {
        let Kind::Cdrom(cd) = &mut self.kind else {
            return;
        };
        let Some(reply) = &cd.reply else {
            return;
        };
        let remaining = reply.total - reply.done;
        if remaining == 0 {
            cd.reply = None;
            return self.packet_ok();
        }
        let mut chunk = remaining.min(reply.limit);
        if chunk < remaining && chunk % 2 == 1 {
            chunk -= 1;
        }
        if chunk == 0 {
            chunk = remaining.min(2);
        }
        let chunk = chunk as usize;
        let offset = reply.done;
        if self.buf.len() < chunk {
            self.buf.resize(chunk, 0);
        }
        if let Err(fault) = cd.fill(offset, &mut self.buf[..chunk]) {
            cd.reply = None;
            return self.medium_fault(fault);
        }
        if let Some(reply) = &mut cd.reply {
            reply.done += chunk as u64;
        }
        self.regs.lcyl = chunk as u8;
        self.regs.hcyl = (chunk >> 8) as u8;
        self.regs.nsector = (self.regs.nsector & !REASON_MASK) | REASON_IO;
        self.status = DRDY | DSC;
        self.start_in(chunk, Next::PacketData);
        self.raise_irq();
    }

    /// Ends the packet command with CHECK CONDITION and `sense`.
    pub(super) fn check_condition(&mut self, sense: Sense) {
        if let Kind::Cdrom(cd) = &mut self.kind {
            cd.sense = sense;
            cd.reply = None;
        }
        self.stop_transfer();
        self.dma = None;
        self.error = sense.key << 4;
        self.status = DRDY | ERR;
        self.regs.nsector = (self.regs.nsector & !REASON_MASK) | REASON_IO | REASON_COD;
        self.raise_irq();
    }

    /// Ends the packet command successfully.
    pub(super) fn packet_ok(&mut self) {
        if let Kind::Cdrom(cd) = &mut self.kind {
            if cd.sense.key != UNIT_ATTENTION {
                cd.sense = Sense::NONE;
            }
            cd.reply = None;
        }
        self.stop_transfer();
        self.error = 0;
        self.status = DRDY | DSC;
        self.regs.nsector = (self.regs.nsector & !REASON_MASK) | REASON_IO | REASON_COD;
        self.raise_irq();
    }
}
