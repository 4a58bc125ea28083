//! The PIIX bus-master IDE engine of one channel: command and status registers, the PRD table
//! pointer, and the walk over the physical region descriptors that moves a drive's data to or
//! from guest memory.
//!
//! A PRD entry is 8 bytes: a 32-bit physical address (bit 0 ignored), a byte count in bits
//! 15:1 (0 means 64 KiB) and the end-of-table flag in bit 31. The transfer runs to completion
//! in one call; the outcome says how the PIIX would have left its status bits.

use crate::dma_memory::DmaMemory;

/// Command: start/stop bus master.
pub(super) const CMD_START: u8 = 0x01;
/// Command: direction, set when the engine writes memory (a drive read).
pub(super) const CMD_TO_MEMORY: u8 = 0x08;
/// Status: transfer active.
pub(super) const STATUS_ACTIVE: u8 = 0x01;
/// Status: a PCI master or target abort ended the transfer (write 1 to clear).
pub(super) const STATUS_ERROR: u8 = 0x02;
/// Status: the drive raised its interrupt (write 1 to clear).
pub(super) const STATUS_INTERRUPT: u8 = 0x04;
/// Status: drive 0 / drive 1 DMA capable (plain read/write bits for the driver's use).
const STATUS_DRIVE_CAPABLE: u8 = 0x60;

const PRD_END_OF_TABLE: u32 = 1 << 31;
/// Fail-safe: at most this many descriptors per start (a 4 KiB table).
const MAX_PRD_ENTRIES: u32 = 512;
/// Data is staged between the drive and guest memory in pieces of at most this size.
const STAGE_SIZE: usize = 256 * 1024;

/// What a register write did to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    /// Nothing that needs the controller's attention.
    None,
    /// The start bit went from 0 to 1.
    Started,
}

/// The registers of one channel's engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct BusMaster {
    pub(super) command: u8,
    pub(super) status: u8,
    pub(super) prd_table: u32,
}

impl BusMaster {
    /// Reads the byte at `offset` (0..8) of the channel's register block.
    pub(super) fn read(&self, offset: u64) -> u8 {
        match offset {
            0 => self.command,
            2 => self.status,
            4..=7 => (self.prd_table >> (8 * (offset - 4))) as u8,
            _ => 0,
        }
    }

    /// Writes the byte at `offset` (0..8) of the channel's register block.
    pub(super) fn write(&mut self, offset: u64, value: u8) -> Control {
        match offset {
            0 => {
                let old = self.command;
                self.command = value & (CMD_START | CMD_TO_MEMORY);
                if old & CMD_START == 0 && value & CMD_START != 0 {
                    self.status |= STATUS_ACTIVE;
                    return Control::Started;
                }
                if old & CMD_START != 0 && value & CMD_START == 0 {
                    self.status &= !STATUS_ACTIVE;
                }
            }
            2 => {
                let cleared = value & (STATUS_ERROR | STATUS_INTERRUPT);
                self.status = (self.status & !STATUS_DRIVE_CAPABLE & !cleared)
                    | (value & STATUS_DRIVE_CAPABLE);
            }
            4..=7 => {
                let shift = 8 * (offset - 4);
                let mask = 0xFFu32 << shift;
                self.prd_table = ((self.prd_table & !mask) | (u32::from(value) << shift)) & !0x3;
            }
            _ => {}
        }
        Control::None
    }

    /// True while started and active: the engine moves data as soon as a drive asks.
    pub(super) fn running(&self) -> bool {
        self.command & CMD_START != 0 && self.status & STATUS_ACTIVE != 0
    }

    /// True when the engine is set to write guest memory.
    pub(super) fn to_memory(&self) -> bool {
        self.command & CMD_TO_MEMORY != 0
    }
}

/// The drive side of a DMA transfer.
pub(super) trait DmaPort {
    /// Direction (true: drive to memory) and bytes still to move, when the drive waits for DMA.
    fn dma_request(&self) -> Option<(bool, u64)>;
    /// Fills `buf` with the drive's data starting `offset` bytes past what has already been
    /// moved. False when the drive failed (it has then ended the command itself).
    fn dma_read(&mut self, offset: u64, buf: &mut [u8]) -> bool;
    /// Hands the drive `data` to store starting `offset` bytes past what has already been
    /// moved. False when the drive failed (it has then ended the command itself).
    fn dma_write(&mut self, offset: u64, data: &[u8]) -> bool;
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DmaEnd {
    /// The drive got or gave all its data; `prd_left` when the table described more.
    Done {
        /// The PRD table was longer than the transfer.
        prd_left: bool,
    },
    /// The table ended before the drive's data did.
    ShortTable,
    /// A descriptor or data access hit something that is not guest RAM.
    MemoryError,
    /// The drive failed and has ended the command.
    DriveError,
}

/// Position in the PRD table.
struct Cursor {
    next_entry: u64,
    entries: u32,
    address: u64,
    left: usize,
    last: bool,
}

impl Cursor {
    fn new(table: u32) -> Self {
        Self {
            next_entry: u64::from(table),
            entries: 0,
            address: 0,
            left: 0,
            last: false,
        }
    }

    /// Loads the next descriptor when the current one is used up. `Ok(false)` at the end of
    /// the table.
    fn ensure(&mut self, memory: &dyn DmaMemory) -> Result<bool, ()> {
        if self.left > 0 {
            return Ok(true);
        }
        if self.last || self.entries >= MAX_PRD_ENTRIES {
            return Ok(false);
        }
        let mut entry = [0u8; 8];
        if !memory.read(self.next_entry, &mut entry) {
            return Err(());
        }
        self.next_entry += 8;
        self.entries += 1;
        let address = u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let count = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        self.address = u64::from(address & !1);
        self.left = match count & 0xFFFE {
            0 => 0x1_0000,
            n => n as usize,
        };
        self.last = count & PRD_END_OF_TABLE != 0;
        Ok(true)
    }

    fn table_left(&self) -> bool {
        self.left > 0 || !self.last
    }
}

/// Moves the data `port` asks for through the PRD table at `table`. Returns how the transfer
/// ended and how many bytes crossed to or from guest memory.
pub(super) fn transfer(
    table: u32,
    memory: &dyn DmaMemory,
    port: &mut dyn DmaPort,
) -> (DmaEnd, u64) {
    let Some((to_memory, total)) = port.dma_request() else {
        return (DmaEnd::Done { prd_left: true }, 0);
    };
    let mut cursor = Cursor::new(table);
    let mut moved = 0u64;
    let mut stage: Vec<u8> = Vec::new();
    if to_memory {
        // Drive → stage → memory. `staged` counts bytes the drive has produced.
        let mut staged = 0u64;
        let mut pos = 0usize;
        while moved < total {
            match cursor.ensure(memory) {
                Ok(true) => {}
                Ok(false) => return (DmaEnd::ShortTable, moved),
                Err(()) => return (DmaEnd::MemoryError, moved),
            }
            if pos == stage.len() {
                let n = (total - staged).min(STAGE_SIZE as u64) as usize;
                stage.clear();
                stage.resize(n, 0);
                if !port.dma_read(staged, &mut stage) {
                    return (DmaEnd::DriveError, moved);
                }
                staged += n as u64;
                pos = 0;
            }
            let n = cursor.left.min(stage.len() - pos);
            if !memory.write(cursor.address, &stage[pos..pos + n]) {
                return (DmaEnd::MemoryError, moved);
            }
            pos += n;
            cursor.address += n as u64;
            cursor.left -= n;
            moved += n as u64;
        }
    } else {
        // Memory → stage → drive. `moved` counts bytes handed to the drive.
        let mut gathered = 0u64;
        loop {
            let flush = |stage: &mut Vec<u8>, moved: &mut u64, port: &mut dyn DmaPort| {
                if stage.is_empty() {
                    return true;
                }
                if !port.dma_write(*moved, stage) {
                    return false;
                }
                *moved += stage.len() as u64;
                stage.clear();
                true
            };
            if gathered == total {
                if !flush(&mut stage, &mut moved, port) {
                    return (DmaEnd::DriveError, moved);
                }
                break;
            }
            match cursor.ensure(memory) {
                Ok(true) => {}
                Ok(false) => {
                    if !flush(&mut stage, &mut moved, port) {
                        return (DmaEnd::DriveError, moved);
                    }
                    return (DmaEnd::ShortTable, moved);
                }
                Err(()) => return (DmaEnd::MemoryError, moved),
            }
            let room = STAGE_SIZE - stage.len();
            let n = cursor.left.min(room).min((total - gathered) as usize);
            let start = stage.len();
            stage.resize(start + n, 0);
            if !memory.read(cursor.address, &mut stage[start..]) {
                return (DmaEnd::MemoryError, moved);
            }
            cursor.address += n as u64;
            cursor.left -= n;
            gathered += n as u64;
            if stage.len() == STAGE_SIZE && !flush(&mut stage, &mut moved, port) {
                return (DmaEnd::DriveError, moved);
            }
        }
    }
    (
        DmaEnd::Done {
            prd_left: cursor.table_left(),
        },
        moved,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma_memory::VecMemory;

    struct Source {
        data: Vec<u8>,
        done: u64,
        to_memory: bool,
        fail_at: Option<u64>,
    }

    impl DmaPort for Source {
        fn dma_request(&self) -> Option<(bool, u64)> {
            Some((self.to_memory, self.data.len() as u64 - self.done))
        }
        fn dma_read(&mut self, offset: u64, buf: &mut [u8]) -> bool {
            let start = (self.done + offset) as usize;
            if self.fail_at.is_some_and(|f| f < (start + buf.len()) as u64) {
                return false;
            }
            buf.copy_from_slice(&self.data[start..start + buf.len()]);
            true
        }
        fn dma_write(&mut self, offset: u64, data: &[u8]) -> bool {
            let start = (self.done + offset) as usize;
            self.data[start..start + data.len()].copy_from_slice(data);
            true
        }
    }

    fn prd(memory: &VecMemory, at: u64, entries: &[(u32, u32)]) {
        for (i, &(address, count)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&address.to_le_bytes());
            e[4..].copy_from_slice(&count.to_le_bytes());
            assert!(memory.write(at + 8 * i as u64, &e));
        }
    }

    #[test]
    fn registers() {
        let mut bm = BusMaster::default();
        assert_eq!(bm.write(0, 0xFF), Control::Started);
        assert_eq!(bm.read(0), 0x09);
        assert_eq!(bm.read(2), STATUS_ACTIVE);
        assert_eq!(bm.write(0, 0x09), Control::None);
        bm.status |= STATUS_ERROR | STATUS_INTERRUPT;
        bm.write(2, 0x64);
        assert_eq!(bm.read(2), 0x60 | STATUS_ACTIVE | STATUS_ERROR);
        bm.write(2, 0x02);
        assert_eq!(bm.read(2), STATUS_ACTIVE);
        bm.write(0, 0x00);
        assert_eq!(bm.read(2), 0);
        for (i, b) in [0x07u8, 0x12, 0x34, 0x56].iter().enumerate() {
            bm.write(4 + i as u64, *b);
        }
        assert_eq!(bm.prd_table, 0x5634_1204);
        assert_eq!(bm.read(4), 0x04);
        assert_eq!(bm.read(1), 0);
    }

    #[test]
    fn scatter_and_gather() {
        let memory = VecMemory::new(0x40000);
        prd(
            &memory,
            0x100,
            &[(0x1000, 1000), (0x3000, 0x8000_0000 | 1048)],
        );
        let data: Vec<u8> = (0..2048).map(|i| (i * 7) as u8).collect();
        let mut src = Source {
            data: data.clone(),
            done: 0,
            to_memory: true,
            fail_at: None,
        };
        let (end, moved) = transfer(0x100, &memory, &mut src);
        assert_eq!((end, moved), (DmaEnd::Done { prd_left: false }, 2048));
        let mut back = vec![0u8; 1000];
        memory.read(0x1000, &mut back);
        assert_eq!(back, data[..1000]);
        let mut back = vec![0u8; 1048];
        memory.read(0x3000, &mut back);
        assert_eq!(back, data[1000..]);

        let mut sink = Source {
            data: vec![0; 2048],
            done: 0,
            to_memory: false,
            fail_at: None,
        };
        let (end, moved) = transfer(0x100, &memory, &mut sink);
        assert_eq!((end, moved), (DmaEnd::Done { prd_left: false }, 2048));
        assert_eq!(sink.data, data);
    }

    #[test]
    fn short_long_and_bad_tables() {
        let memory = VecMemory::new(0x40000);
        // Zero count means 64 KiB: longer than 512 bytes.
        prd(&memory, 0x0, &[(0x10000, 0x8000_0000)]);
        let mut src = Source {
            data: vec![1; 512],
            done: 0,
            to_memory: true,
            fail_at: None,
        };
        assert_eq!(
            transfer(0, &memory, &mut src),
            (DmaEnd::Done { prd_left: true }, 512)
        );
        // Shorter than the data.
        prd(&memory, 0x0, &[(0x10000, 0x8000_0000 | 256)]);
        assert_eq!(transfer(0, &memory, &mut src), (DmaEnd::ShortTable, 256));
        // Descriptor pointing outside RAM.
        prd(&memory, 0x0, &[(0xFFFF_0000, 0x8000_0000 | 512)]);
        assert_eq!(transfer(0, &memory, &mut src), (DmaEnd::MemoryError, 0));
        // Table itself outside RAM.
        assert_eq!(
            transfer(0xFFFF_FFF0, &memory, &mut src),
            (DmaEnd::MemoryError, 0)
        );
        // The drive fails.
        prd(&memory, 0x0, &[(0x10000, 0x8000_0000 | 512)]);
        src.fail_at = Some(0);
        assert_eq!(transfer(0, &memory, &mut src), (DmaEnd::DriveError, 0));
        // A table without an end stops after the fail-safe.
        let memory = VecMemory::new(0x10000);
        assert_eq!(
            transfer(
                0,
                &memory,
                &mut Source {
                    data: vec![0; 0x210_0000],
                    done: 0,
                    to_memory: false,
                    fail_at: None,
                }
            ),
            (DmaEnd::ShortTable, 0x200_0000)
        );
    }
}
