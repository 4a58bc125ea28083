//! Register-level tests of the PIIX3 IDE controller, its ATA disks and ATAPI drives.

use super::*;
use crate::block::MemoryBlock;
use crate::dma_memory::VecMemory;
use crate::irq::RecordingSink;
use std::io;
use std::sync::Mutex;

const BASE: [u16; 2] = [0x1F0, 0x170];
const CTRL: [u16; 2] = [0x3F6, 0x376];
const IRQ: [u32; 2] = [PRIMARY_IRQ, SECONDARY_IRQ];

/// A memory disk the test can still look at after handing it to the controller.
#[derive(Clone)]
struct Shared(Arc<Mutex<MemoryBlock>>);

impl Shared {
    fn new(data: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(MemoryBlock::new(data))))
    }
    fn bytes(&self, range: std::ops::Range<usize>) -> Vec<u8> {
        self.0.lock().unwrap().data[range].to_vec()
    }
    fn flushes(&self) -> u64 {
        self.0.lock().unwrap().flushes
    }
}

impl BlockBackend for Shared {
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

/// A huge disk whose bytes are a function of their offset; writes are dropped.
struct Pattern(u64);

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8 ^ (offset >> 9) as u8 ^ (offset >> 33) as u8
}

impl BlockBackend for Pattern {
    fn len(&self) -> u64 {
        self.0
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern(offset + i as u64);
        }
        Ok(())
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A disk whose every access fails.
struct Failing(u64);

impl BlockBackend for Failing {
    fn len(&self) -> u64 {
        self.0
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, _: u64, _: &mut [u8]) -> io::Result<()> {
        Err(io::Error::other("broken"))
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::Error::other("broken"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::other("broken"))
    }
}

fn image(len: usize) -> Vec<u8> {
    (0..len as u64).map(pattern).collect()
}

struct Rig {
    ide: Piix3Ide,
    sink: Arc<RecordingSink>,
    memory: Arc<VecMemory>,
}

impl Rig {
    fn new() -> Self {
        let sink = Arc::new(RecordingSink::default());
        let memory = Arc::new(VecMemory::new(1 << 20));
        let ide = Piix3Ide::new(
            memory.clone(),
            IrqLine::new(sink.clone(), PRIMARY_IRQ),
            IrqLine::new(sink.clone(), SECONDARY_IRQ),
        );
        Self { ide, sink, memory }
    }

    /// A rig with a disk of `sectors` sectors as primary master.
    fn with_disk(sectors: usize) -> (Self, Shared) {
        let mut rig = Self::new();
        let disk = Shared::new(image(sectors * 512));
        rig.ide
            .attach(0, 0, Drive::HardDisk(Box::new(disk.clone())))
            .unwrap();
        (rig, disk)
    }

    /// A rig with a CD-ROM drive holding `sectors` 2048-byte sectors as secondary master.
    fn with_cdrom(sectors: usize) -> Self {
        let mut rig = Self::new();
        let media: Option<Box<dyn BlockBackend>> = (sectors > 0)
            .then(|| Box::new(MemoryBlock::new(image(sectors * 2048))) as Box<dyn BlockBackend>);
        rig.ide.attach(1, 0, Drive::Cdrom(media)).unwrap();
        rig
    }

    fn out8(&mut self, port: u16, value: u8) {
        self.ide.io_write(port, &[value]);
    }
    fn in8(&mut self, port: u16) -> u8 {
        let mut b = [0u8];
        self.ide.io_read(port, &mut b);
        b[0]
    }
    fn reg(&mut self, ch: usize, reg: u16) -> u8 {
        self.in8(BASE[ch] + reg)
    }
    fn set(&mut self, ch: usize, reg: u16, value: u8) {
        self.out8(BASE[ch] + reg, value);
    }
    fn status(&mut self, ch: usize) -> u8 {
        self.reg(ch, 7)
    }
    fn alt_status(&mut self, ch: usize) -> u8 {
        self.in8(CTRL[ch])
    }
    fn control(&mut self, ch: usize, value: u8) {
        self.out8(CTRL[ch], value);
    }
    fn command(&mut self, ch: usize, cmd: u8) {
        self.set(ch, 7, cmd);
    }
    fn irq(&self, ch: usize) -> bool {
        self.sink.level(IRQ[ch])
    }
    /// Rising edges of `ch`'s line since the last call.
    fn irq_edges(&self, ch: usize) -> usize {
        self.sink
            .take_changes()
            .iter()
            .filter(|&&(line, level)| line == IRQ[ch] && level)
            .count()
    }

    fn lba28(&mut self, ch: usize, unit: u8, lba: u32, count: u8) {
        self.set(ch, 6, 0xE0 | unit << 4 | (lba >> 24) as u8 & 0x0F);
        self.set(ch, 2, count);
        self.set(ch, 3, lba as u8);
        self.set(ch, 4, (lba >> 8) as u8);
        self.set(ch, 5, (lba >> 16) as u8);
    }

    fn lba48(&mut self, ch: usize, unit: u8, lba: u64, count: u16) {
        self.set(ch, 6, 0x40 | unit << 4);
        self.set(ch, 2, (count >> 8) as u8);
        self.set(ch, 3, (lba >> 24) as u8);
        self.set(ch, 4, (lba >> 32) as u8);
        self.set(ch, 5, (lba >> 40) as u8);
        self.set(ch, 2, count as u8);
        self.set(ch, 3, lba as u8);
        self.set(ch, 4, (lba >> 8) as u8);
        self.set(ch, 5, (lba >> 16) as u8);
    }

    fn read_data(&mut self, ch: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 1);
        while out.len() < len {
            let mut w = [0u8; 2];
            self.ide.io_read(BASE[ch], &mut w);
            out.extend_from_slice(&w);
        }
        out.truncate(len);
        out
    }

    fn read_data32(&mut self, ch: usize, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let mut w = [0u8; 4];
            self.ide.io_read(BASE[ch], &mut w);
            out.extend_from_slice(&w);
        }
        out
    }

    fn write_data(&mut self, ch: usize, data: &[u8]) {
        for w in data.chunks(2) {
            self.ide.io_write(BASE[ch], w);
        }
    }

    fn identify(&mut self, ch: usize, cmd: u8) -> [u16; 256] {
        self.command(ch, cmd);
        let bytes = self.read_data(ch, 512);
        let mut words = [0u16; 256];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]);
        }
        words
    }

    fn enable_bus_master(&mut self) {
        self.ide.config_write(0x20, &0xC001u32.to_le_bytes());
        self.ide.config_write(0x04, &[0x05, 0x00]);
    }
    fn bm_read(&mut self, ch: usize, reg: u64) -> u8 {
        let mut b = [0u8];
        self.ide
            .bar_read(BUS_MASTER_BAR, ch as u64 * 8 + reg, &mut b);
        b[0]
    }
    fn bm_write(&mut self, ch: usize, reg: u64, value: u8) {
        self.ide
            .bar_write(BUS_MASTER_BAR, ch as u64 * 8 + reg, &[value]);
    }
    fn bm_table(&mut self, ch: usize, table: u32) {
        self.ide
            .bar_write(BUS_MASTER_BAR, ch as u64 * 8 + 4, &table.to_le_bytes());
    }
    fn prd(&self, table: u64, entries: &[(u32, u32)]) {
        for (i, &(address, count)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&address.to_le_bytes());
            e[4..].copy_from_slice(&count.to_le_bytes());
            assert!(self.memory.write(table + 8 * i as u64, &e));
        }
    }
    fn memory(&self, address: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        assert!(self.memory.read(address, &mut v));
        v
    }

    /// Sends a PACKET command by PIO and collects its data, or returns status and error.
    fn packet(&mut self, ch: usize, cdb: &[u8], limit: u16) -> Result<Vec<u8>, (u8, u8)> {
        self.set(ch, 1, 0);
        self.set(ch, 4, limit as u8);
        self.set(ch, 5, (limit >> 8) as u8);
        self.command(ch, 0xA0);
        let st = self.status(ch);
        assert_eq!(st & 0x89, 0x08, "packet phase: status {st:#x}");
        assert_eq!(self.reg(ch, 2) & 3, 1, "packet phase: CoD");
        let mut packet = [0u8; 12];
        packet[..cdb.len()].copy_from_slice(cdb);
        self.write_data(ch, &packet);
        let mut data = Vec::new();
        loop {
            let st = self.status(ch);
            assert_eq!(st & 0x80, 0);
            if st & 0x01 != 0 {
                assert_eq!(self.reg(ch, 2) & 3, 3);
                return Err((st, self.reg(ch, 1)));
            }
            if st & 0x08 == 0 {
                break;
            }
            assert_eq!(self.reg(ch, 2) & 3, 2, "data phase: IO, not CoD");
            let n = usize::from(self.reg(ch, 4)) | usize::from(self.reg(ch, 5)) << 8;
            assert!(n > 0 && n <= usize::from(limit.max(2)));
            data.extend(self.read_data(ch, n));
        }
        assert_eq!(self.reg(ch, 2) & 3, 3, "completion: IO and CoD");
        Ok(data)
    }

    fn request_sense(&mut self, ch: usize) -> (u8, u8, u8) {
        let s = self.packet(ch, &[0x03, 0, 0, 0, 18], 18).unwrap();
        assert_eq!(s.len(), 18);
        assert_eq!(s[0], 0x70);
        (s[2] & 0x0F, s[12], s[13])
    }
}

fn model(words: &[u16; 256]) -> String {
    let bytes: Vec<u8> = words[27..47].iter().flat_map(|w| w.to_be_bytes()).collect();
    String::from_utf8(bytes).unwrap().trim_end().to_string()
}

fn checksum_ok(words: &[u16; 256]) -> bool {
    let sum = words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0u8, |s, b| s.wrapping_add(b));
    words[255] & 0xFF == 0xA5 && sum == 0
}

#[test]
fn pci_identity_bars_and_timing_registers() {
    let mut rig = Rig::new();
    let mut b = [0u8; 4];
    rig.ide.config_read(0x00, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x7010_8086);
    rig.ide.config_read(0x08, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x0101_8000);
    rig.ide.config_read(0x0C, &mut b);
    assert_eq!(b[2], 0x00, "header type");
    // Only I/O and bus-master enable are writable.
    rig.ide.config_write(0x04, &[0xFF, 0xFF]);
    rig.ide.config_read(0x04, &mut b);
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x0005);
    assert_eq!(u16::from_le_bytes([b[2], b[3]]), 0x0280);
    // BAR4: 16 I/O ports.
    rig.ide.config_write(0x20, &u32::MAX.to_le_bytes());
    rig.ide.config_read(0x20, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xFFFF_FFF1);
    rig.ide.config_write(0x20, &0xC040u32.to_le_bytes());
    let space = rig.ide.config_space().unwrap();
    assert_eq!(space.bar(4), Some((BarKind::Io, 16)));
    assert_eq!(space.bar_address(4), Some(0xC040));
    // IDETIM decode enable set, Linux's ata_piix checks bit 7 of 0x41 and 0x43.
    rig.ide.config_read(0x40, &mut b);
    assert_eq!(b, [0x00, 0x80, 0x00, 0x80]);
    rig.ide.config_write(0x40, &[0x77, 0xE3, 0x12, 0x34]);
    rig.ide.config_write(0x44, &[0xAB]);
    rig.ide.config_read(0x40, &mut b);
    assert_eq!(b, [0x77, 0xE3, 0x12, 0x34]);
    rig.ide.config_read(0x44, &mut b);
    assert_eq!(b[0], 0xAB);
    rig.ide.reset();
    rig.ide.config_read(0x40, &mut b);
    assert_eq!(b, [0x00, 0x80, 0x00, 0x80]);
}

#[test]
fn idetim_decode_enable_gates_the_legacy_ports() {
    let (mut rig, _) = Rig::with_disk(64);
    assert_eq!(rig.status(0), 0x50);
    rig.ide.config_write(0x40, &[0x00, 0x00]);
    assert_eq!(rig.status(0), 0xFF);
    rig.set(0, 2, 0x12);
    rig.ide.config_write(0x40, &[0x00, 0x80]);
    assert_eq!(rig.status(0), 0x50);
    assert_ne!(rig.reg(0, 2), 0x12, "write while disabled was dropped");
}

#[test]
fn signatures_after_soft_reset() {
    let mut rig = Rig::new();
    rig.ide
        .attach(
            0,
            0,
            Drive::HardDisk(Box::new(MemoryBlock::new(vec![0; 512 * 64]))),
        )
        .unwrap();
    rig.ide.attach(0, 1, Drive::Cdrom(None)).unwrap();
    rig.set(0, 6, 0xB0);
    rig.set(0, 2, 0x77);
    rig.control(0, 0x04 | 0x02);
    assert_eq!(rig.alt_status(0), 0x80, "busy while SRST is asserted");
    rig.control(0, 0x02);
    // Device 0 is selected after the reset.
    assert_eq!(rig.reg(0, 6) & 0x10, 0);
    assert_eq!(
        [1, 2, 3, 4, 5].map(|r| rig.reg(0, r)),
        [0x01, 0x01, 0x01, 0x00, 0x00]
    );
    assert_eq!(rig.status(0), 0x50);
    rig.set(0, 6, 0xB0);
    assert_eq!(
        [1, 2, 3, 4, 5].map(|r| rig.reg(0, r)),
        [0x01, 0x01, 0x01, 0x14, 0xEB]
    );
    assert_eq!(rig.status(0), 0x00, "packet device: status 0 after reset");
    // A channel without drives reads 0.
    assert_eq!([2, 6, 7].map(|r| rig.reg(1, r)), [0, 0, 0]);
}

#[test]
fn absent_slave_reads_status_zero_but_latches_registers() {
    let (mut rig, _) = Rig::with_disk(64);
    rig.set(0, 6, 0xB0);
    assert_eq!(rig.status(0), 0);
    assert_eq!(rig.alt_status(0), 0);
    assert_eq!(rig.reg(0, 6), 0xB0);
    rig.set(0, 2, 0x55);
    rig.set(0, 3, 0xAA);
    assert_eq!((rig.reg(0, 2), rig.reg(0, 3)), (0x55, 0xAA));
    // Commands to the missing slave go nowhere.
    rig.command(0, 0xEC);
    assert_eq!(rig.status(0), 0);
    assert_eq!(rig.reg(0, 1), 0);
    assert!(!rig.irq(0));
    // The master saw the same register writes.
    rig.set(0, 6, 0xA0);
    assert_eq!(
        (rig.reg(0, 2), rig.reg(0, 3), rig.status(0)),
        (0x55, 0xAA, 0x50)
    );
}

#[test]
fn probing_commands_tell_disks_and_packet_devices_apart() {
    let mut rig = Rig::new();
    rig.ide
        .attach(
            0,
            0,
            Drive::HardDisk(Box::new(MemoryBlock::new(vec![0; 512 * 64]))),
        )
        .unwrap();
    rig.ide.attach(0, 1, Drive::Cdrom(None)).unwrap();
    // IDENTIFY PACKET DEVICE aborts on the disk.
    rig.command(0, 0xA1);
    assert_eq!(rig.status(0), 0x41);
    assert_eq!(rig.reg(0, 1), 0x04);
    // IDENTIFY DEVICE aborts on the CD-ROM and leaves the signature.
    rig.set(0, 6, 0xB0);
    rig.set(0, 4, 0);
    rig.set(0, 5, 0);
    rig.command(0, 0xEC);
    assert_eq!(rig.status(0) & 0x01, 0x01);
    assert_eq!(rig.reg(0, 1), 0x04);
    assert_eq!((rig.reg(0, 4), rig.reg(0, 5)), (0x14, 0xEB));
    let id = rig.identify(0, 0xA1);
    assert_eq!(id[0], 0x85C0);
    assert_eq!(model(&id), "Terrarium DVD-ROM");
    assert!(checksum_ok(&id));
    assert_eq!(rig.status(0), 0x50);
}

#[test]
fn identify_device_contents() {
    let (mut rig, _) = Rig::with_disk(100_000);
    let id = rig.identify(0, 0xEC);
    assert_eq!(rig.status(0), 0x50, "no DRQ after the block");
    assert_eq!(id[0], 0x0040);
    assert_eq!((id[1], id[3], id[6]), (99, 16, 63));
    assert_eq!((id[54], id[55], id[56]), (99, 16, 63));
    assert_eq!(u32::from(id[57]) | u32::from(id[58]) << 16, 99 * 16 * 63);
    assert_eq!(model(&id), "Terrarium HARDDISK");
    let serial: Vec<u8> = id[10..20].iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(&serial, b"TM00001             ");
    let firmware: Vec<u8> = id[23..27].iter().flat_map(|w| w.to_be_bytes()).collect();
    assert_eq!(&firmware, b"1.0     ");
    assert_eq!(id[47], 0x8010);
    assert_eq!(id[49] & 0x0300, 0x0300, "LBA and DMA");
    assert_eq!(id[59], 0x0110);
    assert_eq!(u32::from(id[60]) | u32::from(id[61]) << 16, 100_000);
    assert_eq!(id[83] & 0x7400, 0x7400, "LBA48, FLUSH CACHE (EXT)");
    assert_eq!(id[85] & 0x20, 0x20, "write cache enabled");
    assert_eq!(
        id[100..104],
        [100_000u32 as u16, (100_000u32 >> 16) as u16, 0, 0]
    );
    assert_eq!(id[93], 0x600B);
    assert_eq!((id[63], id[88]), (0x0007, 0x203F), "UDMA5 selected");
    assert!(checksum_ok(&id));

    // SET FEATURES: transfer mode MWDMA2, then UDMA2; write cache off.
    rig.set(0, 1, 0x03);
    rig.set(0, 2, 0x22);
    rig.command(0, 0xEF);
    assert_eq!(rig.status(0), 0x50);
    let id = rig.identify(0, 0xEC);
    assert_eq!((id[63], id[88]), (0x0407, 0x003F));
    rig.set(0, 2, 0x42);
    rig.command(0, 0xEF);
    rig.set(0, 1, 0x82);
    rig.command(0, 0xEF);
    let id = rig.identify(0, 0xEC);
    assert_eq!((id[63], id[88]), (0x0007, 0x043F));
    assert_eq!(id[85] & 0x20, 0);
    // Unsupported mode (UDMA6) and subcommand abort.
    rig.set(0, 1, 0x03);
    rig.set(0, 2, 0x46);
    rig.command(0, 0xEF);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04));
    rig.set(0, 1, 0x77);
    rig.command(0, 0xEF);
    assert_eq!(rig.status(0), 0x41);
}

#[test]
fn identify_of_a_large_disk_caps_chs_and_lba28() {
    let mut rig = Rig::new();
    let sectors: u64 = 0x3_0000_0000;
    rig.ide
        .attach(0, 0, Drive::HardDisk(Box::new(Pattern(sectors * 512))))
        .unwrap();
    let id = rig.identify(0, 0xEC);
    assert_eq!((id[1], id[3], id[6]), (16383, 16, 63));
    assert_eq!(u32::from(id[60]) | u32::from(id[61]) << 16, 0x0FFF_FFFF);
    let lba48 = (0..4).fold(0u64, |v, i| v | u64::from(id[100 + i]) << (16 * i));
    assert_eq!(lba48, sectors);
    // READ NATIVE MAX ADDRESS EXT.
    rig.set(0, 6, 0x40);
    rig.command(0, 0x27);
    rig.control(0, 0x80);
    let high = [3, 4, 5].map(|r| rig.reg(0, r));
    rig.control(0, 0x00);
    let low = [3, 4, 5].map(|r| rig.reg(0, r));
    let max = u64::from(high[2]) << 40
        | u64::from(high[1]) << 32
        | u64::from(high[0]) << 24
        | u64::from(low[2]) << 16
        | u64::from(low[1]) << 8
        | u64::from(low[0]);
    assert_eq!(max, sectors - 1);
}

#[test]
fn pio_read_interrupts_per_block_and_clears_on_status_read() {
    let (mut rig, disk) = Rig::with_disk(64);
    rig.control(0, 0x00);
    rig.irq_edges(0);
    rig.lba28(0, 0, 5, 3);
    rig.command(0, 0x20);
    for block in 0..3 {
        assert!(rig.irq(0), "INTRQ for block {block}");
        assert_eq!(rig.alt_status(0), 0x58);
        assert!(rig.irq(0), "alternate status leaves INTRQ alone");
        assert_eq!(rig.status(0), 0x58);
        assert!(!rig.irq(0), "status read clears INTRQ");
        let data = if block == 1 {
            rig.read_data32(0, 512)
        } else {
            rig.read_data(0, 512)
        };
        let start = (5 + block) * 512;
        assert_eq!(data, disk.bytes(start..start + 512));
    }
    // No interrupt after the last block of a read.
    assert!(!rig.irq(0));
    assert_eq!(rig.irq_edges(0), 3);
    assert_eq!(rig.status(0), 0x50);
    // The address registers point past the last sector.
    assert_eq!((rig.reg(0, 3), rig.reg(0, 2)), (8, 0));
    // Data register reads outside a data phase return 0 and change nothing.
    assert_eq!(rig.read_data(0, 2), [0, 0]);
}

#[test]
fn nien_gates_the_interrupt_line() {
    let (mut rig, _) = Rig::with_disk(64);
    rig.control(0, 0x02);
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x20);
    assert!(!rig.irq(0));
    rig.control(0, 0x00);
    assert!(
        rig.irq(0),
        "a pending INTRQ drives the line once nIEN clears"
    );
    rig.control(0, 0x02);
    assert!(!rig.irq(0));
    assert_eq!(rig.status(0), 0x58);
    rig.control(0, 0x00);
    assert!(!rig.irq(0));
    // The line follows the selected device.
    rig.read_data(0, 512);
    rig.command(0, 0xE5);
    assert!(rig.irq(0));
    rig.set(0, 6, 0xB0);
    assert!(!rig.irq(0));
    rig.set(0, 6, 0xA0);
    assert!(rig.irq(0));
    assert_eq!(rig.reg(0, 2), 0xFF, "CHECK POWER MODE: active");
}

#[test]
fn pio_write_interrupts_after_each_block() {
    let (mut rig, disk) = Rig::with_disk(64);
    rig.irq_edges(0);
    rig.lba28(0, 0, 10, 2);
    rig.command(0, 0x30);
    assert_eq!(rig.alt_status(0), 0x58);
    assert!(!rig.irq(0), "no interrupt before the first block");
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 13) as u8).collect();
    rig.write_data(0, &payload[..512]);
    assert!(rig.irq(0));
    assert_eq!(rig.status(0), 0x58);
    rig.write_data(0, &payload[512..]);
    assert!(rig.irq(0));
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.irq_edges(0), 2);
    assert_eq!(disk.bytes(10 * 512..12 * 512), payload);
    // Write cache on: no flush until FLUSH CACHE.
    assert_eq!(disk.flushes(), 0);
    rig.command(0, 0xE7);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(disk.flushes(), 1);
    rig.command(0, 0xEA);
    assert_eq!(disk.flushes(), 2);
    // Write cache off: each write command is flushed.
    rig.set(0, 1, 0x82);
    rig.command(0, 0xEF);
    let flushes = disk.flushes();
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x30);
    rig.write_data(0, &[0xEE; 512]);
    assert_eq!(disk.flushes(), flushes + 1);
    assert_eq!(disk.bytes(0..512), vec![0xEE; 512]);
}

#[test]
fn read_and_write_multiple() {
    let (mut rig, disk) = Rig::with_disk(64);
    rig.set(0, 2, 3);
    rig.command(0, 0xC6);
    assert_eq!(
        (rig.status(0), rig.reg(0, 1)),
        (0x41, 0x04),
        "not a power of two"
    );
    rig.set(0, 2, 4);
    rig.command(0, 0xC6);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.identify(0, 0xEC)[59], 0x0104);
    rig.irq_edges(0);
    rig.lba28(0, 0, 1, 10);
    rig.command(0, 0xC4);
    let mut data = Vec::new();
    for len in [4, 4, 2] {
        assert_eq!(rig.status(0), 0x58);
        data.extend(rig.read_data(0, len * 512));
    }
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.irq_edges(0), 3);
    assert_eq!(data, disk.bytes(512..11 * 512));

    let payload: Vec<u8> = (0..6 * 512u32).map(|i| (i / 7) as u8).collect();
    rig.lba28(0, 0, 20, 6);
    rig.command(0, 0xC5);
    assert!(!rig.irq(0));
    rig.write_data(0, &payload[..4 * 512]);
    assert!(rig.irq(0));
    assert_eq!(rig.status(0), 0x58);
    rig.write_data(0, &payload[4 * 512..]);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(disk.bytes(20 * 512..26 * 512), payload);
    // LBA48 variant.
    rig.lba48(0, 0, 20, 6);
    rig.command(0, 0x29);
    assert_eq!(rig.read_data(0, 4 * 512), payload[..4 * 512]);
    assert_eq!(rig.read_data(0, 2 * 512), payload[4 * 512..]);
    assert_eq!(rig.status(0), 0x50);
    // Multiple mode disabled: READ MULTIPLE aborts.
    rig.set(0, 2, 0);
    rig.command(0, 0xC6);
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0xC4);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04));
}

#[test]
fn lba48_addressing_and_hob_readback() {
    let mut rig = Rig::new();
    rig.ide
        .attach(
            0,
            0,
            Drive::HardDisk(Box::new(Pattern(0x2_0000_0000 * 512))),
        )
        .unwrap();
    let lba = 0x1_2345_6789u64;
    rig.lba48(0, 0, lba, 2);
    rig.control(0, 0x80);
    assert_eq!(
        [2, 3, 4, 5].map(|r| rig.reg(0, r)),
        [0x00, 0x23, 0x01, 0x00]
    );
    rig.control(0, 0x00);
    assert_eq!(
        [2, 3, 4, 5].map(|r| rig.reg(0, r)),
        [0x02, 0x89, 0x67, 0x45]
    );
    rig.command(0, 0x24);
    let data = rig.read_data(0, 1024);
    let expected: Vec<u8> = (0..1024).map(|i| pattern(lba * 512 + i)).collect();
    assert_eq!(data, expected);
    assert_eq!(rig.status(0), 0x50);
    // Registers now hold lba + 2, high bytes under HOB.
    let next = lba + 2;
    assert_eq!(rig.reg(0, 3), next as u8);
    rig.control(0, 0x80);
    assert_eq!(rig.reg(0, 3), (next >> 24) as u8);
    // Any register write clears HOB.
    rig.set(0, 1, 0);
    assert_eq!(rig.reg(0, 3), next as u8);
    rig.control(0, 0x00);
    // A 28-bit command cannot reach beyond 2^28 sectors.
    rig.lba28(0, 0, 0x0FFF_FFFF, 1);
    rig.command(0, 0x20);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x10));
    // Beyond the end of the disk.
    rig.lba48(0, 0, 0x2_0000_0000 - 1, 2);
    rig.command(0, 0x24);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x10));
}

#[test]
fn chs_addressing_and_initialize_device_parameters() {
    let (mut rig, disk) = Rig::with_disk(1008 * 20);
    let chs = |rig: &mut Rig, c: u16, h: u8, s: u8| {
        rig.set(0, 6, 0xA0 | h);
        rig.set(0, 2, 1);
        rig.set(0, 3, s);
        rig.set(0, 4, c as u8);
        rig.set(0, 5, (c >> 8) as u8);
        rig.command(0, 0x20);
    };
    chs(&mut rig, 2, 3, 4);
    let lba = (2 * 16 + 3) * 63 + 3;
    assert_eq!(rig.status(0), 0x58);
    assert_eq!(
        rig.read_data(0, 512),
        disk.bytes(lba * 512..lba * 512 + 512)
    );
    // Sector 0 does not exist in CHS.
    chs(&mut rig, 0, 0, 0);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x10));
    // 8 heads, 32 sectors per track.
    rig.set(0, 6, 0xA7);
    rig.set(0, 2, 32);
    rig.command(0, 0x91);
    assert_eq!(rig.status(0), 0x50);
    let id = rig.identify(0, 0xEC);
    assert_eq!((id[54], id[55], id[56]), (1008 * 20 / 256, 8, 32));
    assert_eq!(
        (id[1], id[3], id[6]),
        (20, 16, 63),
        "default geometry unchanged"
    );
    chs(&mut rig, 1, 2, 3);
    let lba = (8 + 2) * 32 + 2;
    assert_eq!(
        rig.read_data(0, 512),
        disk.bytes(lba * 512..lba * 512 + 512)
    );
    chs(&mut rig, 0, 0, 33);
    assert_eq!(rig.status(0), 0x41);
}

#[test]
fn verify_seek_recalibrate_power_and_diagnostic() {
    let mut rig = Rig::new();
    rig.ide
        .attach(
            0,
            0,
            Drive::HardDisk(Box::new(MemoryBlock::new(vec![0; 512 * 64]))),
        )
        .unwrap();
    rig.ide.attach(0, 1, Drive::Cdrom(None)).unwrap();
    for cmd in [0x10, 0x70, 0xE0, 0xE1, 0xE2, 0xE3, 0x94, 0x95, 0xE6] {
        rig.command(0, cmd);
        assert_eq!(rig.status(0), 0x50, "command {cmd:#x}");
    }
    rig.lba28(0, 0, 60, 4);
    rig.command(0, 0x40);
    assert_eq!(rig.status(0), 0x50);
    rig.lba28(0, 0, 61, 4);
    rig.command(0, 0x40);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x10));
    rig.command(0, 0x90);
    assert_eq!(rig.reg(0, 1), 0x01, "diagnostic passed");
    assert_eq!([2, 3, 4, 5].map(|r| rig.reg(0, r)), [1, 1, 0, 0]);
    assert_eq!(rig.status(0), 0x50);
    rig.set(0, 6, 0xB0);
    assert_eq!([1, 4, 5].map(|r| rig.reg(0, r)), [1, 0x14, 0xEB]);
    assert_eq!(rig.status(0), 0x00);
}

#[test]
fn unknown_ata_commands_abort() {
    let (mut rig, _) = Rig::with_disk(64);
    for cmd in [0x00, 0xA0, 0xB0, 0xFF, 0x08] {
        rig.irq_edges(0);
        rig.command(0, cmd);
        assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04), "{cmd:#x}");
        assert_eq!(rig.irq_edges(0), 1);
    }
    // The next command clears the error.
    rig.command(0, 0xE5);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x50, 0x00));
}

#[test]
fn disk_io_errors_abort() {
    let mut rig = Rig::new();
    rig.ide
        .attach(0, 0, Drive::HardDisk(Box::new(Failing(512 * 64))))
        .unwrap();
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x20);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04));
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x30);
    rig.write_data(0, &[0; 512]);
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04));
    rig.command(0, 0xE7);
    assert_eq!(rig.status(0), 0x41);
    // A read-only disk refuses writes.
    let mut rig = Rig::new();
    let mut disk = MemoryBlock::new(vec![0; 512 * 8]);
    disk.read_only = true;
    rig.ide
        .attach(0, 0, Drive::HardDisk(Box::new(disk)))
        .unwrap();
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x30);
    assert_eq!(rig.status(0), 0x41);
}

#[test]
fn dma_read_and_write_through_a_prd_table() {
    let (mut rig, disk) = Rig::with_disk(256);
    rig.enable_bus_master();
    rig.prd(0x1000, &[(0x2000, 1024), (0x8000, 0x8000_0000 | 3072)]);
    rig.bm_table(0, 0x1000);
    rig.bm_write(0, 0, 0x08);
    rig.bm_write(0, 2, 0x06);
    rig.lba28(0, 0, 7, 8);
    rig.command(0, 0xC8);
    assert_eq!(rig.alt_status(0), 0x58, "waiting for the bus master");
    assert!(!rig.irq(0));
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x04, "interrupt, not active");
    assert!(rig.irq(0));
    assert_eq!(rig.status(0), 0x50);
    assert!(!rig.irq(0));
    assert_eq!(rig.memory(0x2000, 1024), disk.bytes(7 * 512..9 * 512));
    assert_eq!(rig.memory(0x8000, 3072), disk.bytes(9 * 512..15 * 512));
    rig.bm_write(0, 0, 0x08);
    rig.bm_write(0, 2, 0x04);
    assert_eq!(rig.bm_read(0, 2), 0x00);

    // Write: start the engine first, then issue the command.
    let payload: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    assert!(rig.memory.write(0x20000, &payload));
    rig.prd(0x1000, &[(0x20000, 0x8000_0000 | 4096)]);
    rig.bm_write(0, 0, 0x01);
    assert_eq!(rig.bm_read(0, 2), 0x01);
    rig.lba48(0, 0, 100, 8);
    rig.command(0, 0x35);
    assert_eq!(rig.bm_read(0, 2), 0x04);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(disk.bytes(100 * 512..108 * 512), payload);
    rig.bm_write(0, 0, 0x00);

    // READ DMA EXT, one 64 KiB entry (count 0) exactly matching 128 sectors.
    rig.prd(0x1000, &[(0x40000, 0x8000_0000)]);
    rig.bm_write(0, 2, 0x04);
    rig.lba48(0, 0, 128, 128);
    rig.command(0, 0x25);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x04);
    assert_eq!(
        rig.memory(0x40000, 0x10000),
        disk.bytes(128 * 512..256 * 512)
    );
}

#[test]
fn dma_prd_longer_or_shorter_than_the_transfer() {
    let (mut rig, disk) = Rig::with_disk(64);
    rig.enable_bus_master();
    // Longer: the engine stays active, the drive interrupts.
    rig.prd(0x1000, &[(0x2000, 0x8000_0000 | 4096)]);
    rig.bm_table(0, 0x1000);
    rig.lba28(0, 0, 0, 2);
    rig.command(0, 0xC8);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x05, "interrupt and still active");
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.memory(0x2000, 1024), disk.bytes(0..1024));
    rig.bm_write(0, 0, 0x08);
    rig.bm_write(0, 2, 0x04);
    // Shorter: the engine stops without an interrupt, the drive still waits.
    rig.prd(0x1000, &[(0x2000, 0x8000_0000 | 512)]);
    rig.lba28(0, 0, 4, 2);
    rig.command(0, 0xC8);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x00);
    assert!(!rig.irq(0));
    assert_eq!(rig.alt_status(0), 0x58);
    // Restarting with a table for the rest finishes the command.
    rig.prd(0x1000, &[(0x3000, 0x8000_0000 | 512)]);
    rig.bm_write(0, 0, 0x08);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x04);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.memory(0x2000, 512), disk.bytes(4 * 512..5 * 512));
    assert_eq!(rig.memory(0x3000, 512), disk.bytes(5 * 512..6 * 512));
}

#[test]
fn dma_to_a_bad_address_sets_the_error_bit() {
    let (mut rig, _) = Rig::with_disk(64);
    rig.enable_bus_master();
    rig.prd(0x1000, &[(0xF000_0000, 0x8000_0000 | 512)]);
    rig.bm_table(0, 0x1000);
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0xC8);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x06, "error and interrupt, not active");
    assert_eq!((rig.status(0), rig.reg(0, 1)), (0x41, 0x04));
    let mut b = [0u8; 2];
    rig.ide.config_read(0x06, &mut b);
    assert_ne!(u16::from_le_bytes(b) & 0x2000, 0, "received master abort");
    rig.bm_write(0, 2, 0x06);
    assert_eq!(rig.bm_read(0, 2), 0x00);
    // A PRD table outside RAM fails the same way.
    rig.bm_write(0, 0, 0x08);
    rig.bm_table(0, 0xFFFF_FFF0);
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0xC8);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2) & 0x03, 0x02);
    assert_eq!(rig.status(0) & 0x01, 0x01);
}

#[test]
fn dma_waits_for_bus_master_enable() {
    let (mut rig, disk) = Rig::with_disk(64);
    rig.ide.config_write(0x04, &[0x01, 0x00]);
    rig.prd(0x1000, &[(0x2000, 0x8000_0000 | 512)]);
    rig.bm_table(0, 0x1000);
    rig.lba28(0, 0, 3, 1);
    rig.command(0, 0xC8);
    rig.bm_write(0, 0, 0x09);
    assert_eq!(rig.bm_read(0, 2), 0x01);
    assert_eq!(rig.alt_status(0), 0x58);
    rig.ide.config_write(0x04, &[0x05, 0x00]);
    assert_eq!(rig.bm_read(0, 2), 0x04);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.memory(0x2000, 512), disk.bytes(3 * 512..4 * 512));
}

#[test]
fn atapi_inquiry_capacity_read_and_sense() {
    let mut rig = Rig::with_cdrom(40);
    let inquiry = rig.packet(1, &[0x12, 0, 0, 0, 36], 0xFFFF).unwrap();
    assert_eq!(inquiry.len(), 36);
    assert_eq!(inquiry[0], 0x05);
    assert_eq!(inquiry[1], 0x80, "removable");
    assert_eq!(&inquiry[8..32], b"TRRM    Terrarium DVDROM");
    // Allocation length truncates.
    assert_eq!(rig.packet(1, &[0x12, 0, 0, 0, 5], 0xFFFF).unwrap().len(), 5);
    let capacity = rig.packet(1, &[0x25], 8).unwrap();
    assert_eq!(capacity, [0, 0, 0, 39, 0, 0, 0x08, 0x00]);
    rig.irq_edges(1);
    let data = rig
        .packet(1, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 2048)
        .unwrap();
    assert_eq!(data, image(40 * 2048)[3 * 2048..5 * 2048]);
    assert_eq!(rig.irq_edges(1), 3, "two data chunks and the completion");
    let data = rig
        .packet(1, &[0xA8, 0, 0, 0, 0, 38, 0, 0, 0, 2], 0xFFFF)
        .unwrap();
    assert_eq!(data, image(40 * 2048)[38 * 2048..]);
    // Out of range.
    assert_eq!(
        rig.packet(1, &[0x28, 0, 0, 0, 0, 39, 0, 0, 2], 2048),
        Err((0x41, 0x50))
    );
    assert_eq!(rig.request_sense(1), (0x05, 0x21, 0x00));
    assert_eq!(
        rig.request_sense(1),
        (0x00, 0x00, 0x00),
        "sense was consumed"
    );
    assert!(rig.packet(1, &[0x00], 0).is_ok());
    assert!(rig.packet(1, &[0xBB, 0, 0xFF, 0xFF], 0).is_ok());
}

#[test]
fn atapi_byte_count_limit_splits_the_data() {
    let mut rig = Rig::with_cdrom(4);
    rig.irq_edges(1);
    let mut sizes = Vec::new();
    rig.set(1, 1, 0);
    rig.set(1, 4, (1001u16) as u8);
    rig.set(1, 5, (1001u16 >> 8) as u8);
    rig.command(1, 0xA0);
    rig.write_data(1, &[0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0]);
    let mut data = Vec::new();
    while rig.status(1) & 0x08 != 0 {
        let n = usize::from(rig.reg(1, 4)) | usize::from(rig.reg(1, 5)) << 8;
        sizes.push(n);
        data.extend(rig.read_data(1, n));
    }
    assert_eq!(sizes, [1000, 1000, 1000, 1000, 96]);
    assert_eq!(data, image(4 * 2048)[2048..3 * 2048]);
    assert_eq!(rig.irq_edges(1), 6);
    assert_eq!(rig.status(1), 0x50);
    // A zero byte count limit aborts a PIO data command at the ATA level.
    assert_eq!(rig.packet(1, &[0x25], 0), Err((0x41, 0x04)));
}

#[test]
fn atapi_without_media_reports_not_ready() {
    let mut rig = Rig::with_cdrom(0);
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x20)));
    assert_eq!(rig.request_sense(1), (0x02, 0x3A, 0x01));
    assert_eq!(rig.packet(1, &[0x25], 8), Err((0x41, 0x20)));
    assert_eq!(
        rig.packet(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1], 2048),
        Err((0x41, 0x20))
    );
    // INQUIRY and GET EVENT STATUS still work.
    assert!(rig.packet(1, &[0x12, 0, 0, 0, 36], 36).is_ok());
    let events = rig
        .packet(1, &[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8], 8)
        .unwrap();
    assert_eq!(events, [0, 6, 4, 0x10, 0, 0, 0, 0]);
    assert_eq!(rig.ide.eject(1, 0).map(|m| m.is_none()), Ok(true));
    assert_eq!(
        rig.ide.eject(0, 0).map(|m| m.is_none()),
        Err(IdeError::NotCdrom {
            channel: 0,
            unit: 0
        })
    );
}

#[test]
fn media_change_is_reported_as_unit_attention() {
    let mut rig = Rig::with_cdrom(8);
    assert!(rig.packet(1, &[0x00], 0).is_ok());
    let old = rig.ide.eject(1, 0).unwrap();
    assert!(old.is_some());
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x20)));
    assert_eq!(rig.request_sense(1), (0x02, 0x3A, 0x01));
    let events = rig
        .packet(1, &[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8], 8)
        .unwrap();
    assert_eq!(events[4..6], [3, 0], "media removal, no media");

    let new = MemoryBlock::new(vec![0x5A; 2048 * 16]);
    assert!(rig.ide.insert_media(1, 0, Box::new(new)).unwrap().is_none());
    // GET EVENT STATUS NOTIFICATION reports the new medium once.
    let events = rig
        .packet(1, &[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8], 8)
        .unwrap();
    assert_eq!(events[4..6], [2, 2], "new media, media present");
    let events = rig
        .packet(1, &[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8], 8)
        .unwrap();
    assert_eq!(events[4..6], [0, 2]);
    // TEST UNIT READY: not ready, then unit attention until REQUEST SENSE.
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x20)));
    assert_eq!(rig.request_sense(1), (0x02, 0x3A, 0x00));
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x60)));
    assert_eq!(rig.packet(1, &[0x25], 8), Err((0x41, 0x60)));
    assert!(
        rig.packet(1, &[0x12, 0, 0, 0, 36], 36).is_ok(),
        "INQUIRY passes"
    );
    assert_eq!(rig.request_sense(1), (0x06, 0x28, 0x00));
    assert!(rig.packet(1, &[0x00], 0).is_ok());
    assert_eq!(
        rig.packet(1, &[0x25], 8).unwrap(),
        [0, 0, 0, 15, 0, 0, 8, 0]
    );
    let data = rig
        .packet(1, &[0x28, 0, 0, 0, 0, 2, 0, 0, 1], 0xFFFF)
        .unwrap();
    assert_eq!(data, vec![0x5A; 2048]);
}

#[test]
fn atapi_unknown_commands_and_fields() {
    let mut rig = Rig::with_cdrom(8);
    assert_eq!(rig.packet(1, &[0xFF], 0xFFFF), Err((0x41, 0x50)));
    assert_eq!(rig.request_sense(1), (0x05, 0x20, 0x00));
    // WRITE(10) is not supported either.
    assert_eq!(
        rig.packet(1, &[0x2A, 0, 0, 0, 0, 0, 0, 0, 1], 0xFFFF),
        Err((0x41, 0x50))
    );
    assert_eq!(rig.request_sense(1), (0x05, 0x20, 0x00));
    // MODE SENSE of an unknown page, saved values.
    assert_eq!(
        rig.packet(1, &[0x5A, 0, 0x05, 0, 0, 0, 0, 0, 64], 64),
        Err((0x41, 0x50))
    );
    assert_eq!(rig.request_sense(1), (0x05, 0x24, 0x00));
    assert_eq!(
        rig.packet(1, &[0x5A, 0, 0xEA, 0, 0, 0, 0, 0, 64], 64),
        Err((0x41, 0x50))
    );
    assert_eq!(rig.request_sense(1), (0x05, 0x39, 0x00));
    // Overlapped PACKET is aborted.
    rig.set(1, 1, 0x02);
    rig.command(1, 0xA0);
    assert_eq!((rig.status(1), rig.reg(1, 1)), (0x41, 0x04));
    // ATA commands a packet device does not have abort.
    rig.command(1, 0xC8);
    assert_eq!(rig.status(1), 0x41);
    rig.command(1, 0xFF);
    assert_eq!(rig.status(1), 0x41);
    rig.command(1, 0xE5);
    assert_eq!(rig.status(1), 0x50);
}

#[test]
fn atapi_mode_sense_pages() {
    let mut rig = Rig::with_cdrom(8);
    let caps = rig
        .packet(1, &[0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(caps.len(), 8 + 22);
    assert_eq!(
        u16::from_be_bytes([caps[0], caps[1]]) as usize,
        caps.len() - 2
    );
    assert_eq!(caps[8..10], [0x2A, 0x14]);
    assert_eq!(caps[14] & 0x0B, 0x09, "lock and eject supported, unlocked");
    // MODE SENSE(6), error recovery page.
    let page = rig.packet(1, &[0x1A, 0, 0x01, 0, 0xFF], 0xFFFF).unwrap();
    assert_eq!(page, [11, 0x01, 0, 0, 0x01, 0x06, 0x00, 0x05, 0, 0, 0, 0]);
    // All pages; changeable values are all zero.
    let all = rig
        .packet(1, &[0x5A, 0, 0x3F, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(all.len(), 8 + 8 + 16 + 22);
    let changeable = rig
        .packet(1, &[0x5A, 0, 0x7F, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(changeable.len(), all.len());
    assert_eq!(changeable[8..10], [0x01, 0x06]);
    assert!(changeable[10..16].iter().all(|&b| b == 0));
    // PREVENT shows in the capabilities page and blocks eject.
    assert!(rig.packet(1, &[0x1E, 0, 0, 0, 1], 0).is_ok());
    assert_eq!(rig.ide.medium_locked(1, 0), Ok(true));
    let caps = rig
        .packet(1, &[0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(caps[14] & 0x02, 0x02);
    assert_eq!(rig.packet(1, &[0x1B, 0, 0, 0, 0x02], 0), Err((0x41, 0x20)));
    assert_eq!(rig.request_sense(1), (0x02, 0x53, 0x02));
    assert!(rig.packet(1, &[0x1E, 0, 0, 0, 0], 0).is_ok());
    assert!(rig.packet(1, &[0x1B, 0, 0, 0, 0x02], 0).is_ok());
    assert_eq!(rig.ide.tray_open(1, 0), Ok(true));
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x20)));
    assert_eq!(rig.request_sense(1), (0x02, 0x3A, 0x02), "tray open");
    let mech = rig
        .packet(1, &[0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8], 0xFFFF)
        .unwrap();
    assert_eq!(mech[1] & 0x10, 0x10);
    assert!(rig.packet(1, &[0x1B, 0, 0, 0, 0x03], 0).is_ok());
    assert_eq!(rig.ide.tray_open(1, 0), Ok(false));
    assert!(rig.packet(1, &[0x00], 0).is_ok());
}

#[test]
fn atapi_read_toc_configuration_and_disc_information() {
    let mut rig = Rig::with_cdrom(1000);
    // Format 0, LBA.
    let toc = rig
        .packet(1, &[0x43, 0, 0, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(
        toc,
        [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xAA, 0, 0, 0, 0x03, 0xE8]
    );
    // Format 0, MSF: track 1 at 00:02:00, lead-out at 1150 frames = 00:15:25.
    let toc = rig
        .packet(1, &[0x43, 2, 0, 0, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(toc[8..12], [0, 0, 2, 0]);
    assert_eq!(toc[16..20], [0, 0, 15, 25]);
    // Only the lead-out.
    let toc = rig
        .packet(1, &[0x43, 0, 0, 0, 0, 0, 0xAA, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(toc.len(), 12);
    assert_eq!(
        rig.packet(1, &[0x43, 0, 0, 0, 0, 0, 2, 0, 0xFF], 0xFFFF),
        Err((0x41, 0x50))
    );
    // Format 1 (sessions), via byte 9 as older hosts send it and via byte 2.
    let sessions = rig
        .packet(1, &[0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40], 0xFFFF)
        .unwrap();
    assert_eq!(sessions, [0, 10, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0]);
    let sessions2 = rig
        .packet(1, &[0x43, 0, 1, 0, 0, 0, 0, 0, 12], 0xFFFF)
        .unwrap();
    assert_eq!(sessions2, sessions);
    // Format 2 (raw TOC): four 11-byte descriptors.
    let raw = rig
        .packet(1, &[0x43, 2, 2, 0, 0, 0, 1, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(raw.len(), 4 + 44);
    assert_eq!(raw[4 + 3], 0xA0);
    assert_eq!(raw[4 + 22 + 3], 0xA2);
    assert_eq!(raw[4 + 22 + 8..4 + 22 + 11], [0, 15, 25]);

    // GET CONFIGURATION: CD-ROM profile current.
    let config = rig
        .packet(1, &[0x46, 0, 0, 0, 0, 0, 0, 0x02, 0], 0xFFFF)
        .unwrap();
    assert_eq!(config[6..8], [0x00, 0x08]);
    assert_eq!(
        u32::from_be_bytes([config[0], config[1], config[2], config[3]]) as usize,
        config.len() - 4
    );
    assert_eq!(config[8..12], [0, 0, 0x03, 8]);
    assert_eq!(config[12..20], [0x00, 0x10, 0, 0, 0x00, 0x08, 1, 0]);
    // One feature only (RT = 2).
    let core = rig
        .packet(1, &[0x46, 2, 0, 1, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(core, [0, 0, 0, 12, 0, 0, 0, 8, 0, 1, 3, 4, 0, 0, 0, 2]);
    let none = rig
        .packet(1, &[0x46, 2, 0, 0x20, 0, 0, 0, 0, 0xFF], 0xFFFF)
        .unwrap();
    assert_eq!(none.len(), 8);

    let info = rig
        .packet(1, &[0x51, 0, 0, 0, 0, 0, 0, 0, 34], 0xFFFF)
        .unwrap();
    assert_eq!(info.len(), 34);
    assert_eq!(info[..8], [0, 32, 0x0E, 1, 1, 1, 1, 0x20]);

    // READ CD: user data and raw sectors.
    let user = rig
        .packet(1, &[0xBE, 0, 0, 0, 0, 5, 0, 0, 1, 0x10], 0xFFFF)
        .unwrap();
    assert_eq!(user, image(1000 * 2048)[5 * 2048..6 * 2048]);
    let raw = rig
        .packet(1, &[0xBE, 0, 0, 0, 0, 5, 0, 0, 2, 0xF8], 0xFFFF)
        .unwrap();
    assert_eq!(raw.len(), 2 * 2352);
    assert_eq!(
        raw[..12],
        [0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0]
    );
    assert_eq!(raw[12..16], [0, 2, 5, 1]);
    assert_eq!(raw[16..2064], image(1000 * 2048)[5 * 2048..6 * 2048]);
    assert_eq!(
        raw[2352 + 16..2352 + 2064],
        image(1000 * 2048)[6 * 2048..7 * 2048]
    );
    assert_eq!(
        rig.packet(1, &[0xBE, 0x04, 0, 0, 0, 5, 0, 0, 1, 0x10], 0xFFFF),
        Err((0x41, 0x50)),
        "CD-DA sectors on a data disc"
    );
}

#[test]
fn atapi_dma_read() {
    let mut rig = Rig::with_cdrom(16);
    rig.enable_bus_master();
    rig.prd(0x1000, &[(0x10000, 0x8000_0000 | 0x3000)]);
    rig.bm_table(1, 0x1000);
    rig.bm_write(1, 0, 0x08);
    rig.set(1, 1, 0x01);
    rig.set(1, 4, 0);
    rig.set(1, 5, 0);
    rig.command(1, 0xA0);
    rig.write_data(1, &[0x28, 0, 0, 0, 0, 4, 0, 0, 6, 0, 0, 0]);
    assert_eq!(rig.alt_status(1), 0x58);
    assert!(!rig.irq(1));
    rig.bm_write(1, 0, 0x09);
    assert_eq!(rig.bm_read(1, 2), 0x04);
    assert!(rig.irq(1));
    assert_eq!(rig.status(1), 0x50);
    assert_eq!(rig.reg(1, 2) & 3, 3);
    assert_eq!(
        rig.memory(0x10000, 0x3000),
        image(16 * 2048)[4 * 2048..10 * 2048]
    );
    // A small reply (INQUIRY) by DMA too, into a longer table.
    rig.bm_write(1, 0, 0x08);
    rig.bm_write(1, 2, 0x04);
    rig.command(1, 0xA0);
    rig.write_data(1, &[0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0]);
    rig.bm_write(1, 0, 0x09);
    assert_eq!(rig.bm_read(1, 2), 0x05);
    assert_eq!(rig.status(1), 0x50);
    assert_eq!(rig.memory(0x10000, 2), [0x05, 0x80]);
    // Errors are reported without a data phase.
    rig.bm_write(1, 0, 0x08);
    rig.command(1, 0xA0);
    rig.write_data(1, &[0x28, 0, 0, 0, 0, 40, 0, 0, 1, 0, 0, 0]);
    assert_eq!(rig.status(1), 0x41);
    assert!(rig.ide.is_attached(1, 0));
}

#[test]
fn attach_errors() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.ide.attach(2, 0, Drive::Cdrom(None)),
        Err(IdeError::NoSuchPosition {
            channel: 2,
            unit: 0
        })
    );
    assert_eq!(
        rig.ide.attach(0, 2, Drive::Cdrom(None)),
        Err(IdeError::NoSuchPosition {
            channel: 0,
            unit: 2
        })
    );
    assert_eq!(
        rig.ide.attach(
            0,
            0,
            Drive::HardDisk(Box::new(MemoryBlock::new(vec![0; 100])))
        ),
        Err(IdeError::DiskTooSmall(100))
    );
    rig.ide.attach(0, 0, Drive::Cdrom(None)).unwrap();
    assert_eq!(
        rig.ide.attach(0, 0, Drive::Cdrom(None)),
        Err(IdeError::PositionInUse {
            channel: 0,
            unit: 0
        })
    );
    assert!(rig.ide.is_attached(0, 0));
    assert!(!rig.ide.is_attached(0, 1));
    assert!(!rig.ide.is_attached(5, 1));
    assert_eq!(format!("{:?}", Drive::Cdrom(None)), "Cdrom(empty)");
}

#[test]
fn machine_reset_restores_power_on_state() {
    let (mut rig, _) = Rig::with_disk(64);
    rig.enable_bus_master();
    rig.set(0, 2, 2);
    rig.command(0, 0xC6);
    rig.lba28(0, 0, 0, 1);
    rig.command(0, 0x20);
    assert!(rig.irq(0));
    rig.bm_write(0, 0, 0x09);
    rig.ide.reset();
    assert!(!rig.irq(0));
    assert_eq!(rig.bm_read(0, 0), 0);
    assert_eq!(rig.status(0), 0x50);
    assert_eq!(rig.identify(0, 0xEC)[59], 0x0110);
}

#[test]
fn device_reset_stops_a_packet_device_mid_command() {
    let mut rig = Rig::new();
    rig.ide
        .attach(
            0,
            0,
            Drive::HardDisk(Box::new(MemoryBlock::new(vec![0; 512 * 8]))),
        )
        .unwrap();
    rig.ide
        .attach(
            0,
            1,
            Drive::Cdrom(Some(Box::new(MemoryBlock::new(vec![1; 2048 * 4])))),
        )
        .unwrap();
    rig.set(0, 6, 0xB0);
    rig.set(0, 4, 0x00);
    rig.set(0, 5, 0x08);
    rig.command(0, 0xA0);
    rig.write_data(0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(rig.status(0), 0x58);
    // Other commands are ignored during the data phase; DEVICE RESET is not.
    rig.command(0, 0xEC);
    assert_eq!(rig.status(0), 0x58);
    rig.irq_edges(0);
    rig.command(0, 0x08);
    assert_eq!(rig.status(0), 0x00);
    assert_eq!(rig.irq_edges(0), 0, "DEVICE RESET does not interrupt");
    assert_eq!(rig.reg(0, 6) & 0x10, 0x10, "still selected");
    assert_eq!([1, 4, 5].map(|r| rig.reg(0, r)), [0x01, 0x14, 0xEB]);
    assert_eq!(rig.read_data(0, 2), [0, 0]);
    // The drive works again.
    assert_eq!(rig.packet(0, &[0x25], 8).unwrap(), [0, 0, 0, 3, 0, 0, 8, 0]);
    // DEVICE RESET is not a disk command.
    rig.set(0, 6, 0xA0);
    rig.command(0, 0x08);
    assert_eq!(rig.status(0), 0x41);
}

// ---- saved state ------------------------------------------------------------------------

use crate::saved_state::{RestoreError, SaveRestore, SavedState};

/// A rig with a 64-sector disk as primary master and a CD-ROM drive holding `cd` as
/// secondary master; guest RAM holds a PRD table at 0x1000 (one 4 KiB entry at 0x10000).
fn snapshot_rig(disk: Vec<u8>, cd: Vec<u8>) -> Rig {
    let mut rig = Rig::new();
    rig.ide
        .attach(0, 0, Drive::HardDisk(Box::new(MemoryBlock::new(disk))))
        .unwrap();
    rig.ide
        .attach(1, 0, Drive::Cdrom(Some(Box::new(MemoryBlock::new(cd)))))
        .unwrap();
    rig.prd(0x1000, &[(0x10000, 0x8000_0000 | 4096)]);
    rig
}

/// Drives the rig into a state worth saving: bus mastering enabled and both engines'
/// registers programmed; the disk with MULTIPLE 4, Multiword DMA 2 and INITIALIZE DEVICE
/// PARAMETERS applied, 700 bytes into a READ MULTIPLE of 10 sectors; the CD-ROM drive locked,
/// its medium changed by the host (a UNIT ATTENTION pending) and in the middle of an
/// INQUIRY reply sent in 8-byte chunks.
fn busy_ide() -> Rig {
    let mut rig = snapshot_rig(image(64 * 512), image(8 * 2048));
    rig.enable_bus_master();
    rig.bm_table(0, 0x1000);
    rig.bm_write(0, 0, 0x08);
    rig.bm_write(0, 2, 0x20);
    rig.bm_table(1, 0x1800);
    rig.bm_write(1, 2, 0x40);
    rig.set(0, 2, 4);
    rig.command(0, 0xC6);
    rig.set(0, 1, 0x03);
    rig.set(0, 2, 0x22);
    rig.command(0, 0xEF);
    rig.set(0, 2, 32);
    rig.set(0, 6, 0xA7);
    rig.command(0, 0x91);
    assert_eq!(rig.status(0), 0x50);
    rig.lba28(0, 0, 3, 10);
    rig.command(0, 0xC4);
    assert_eq!(
        rig.read_data(0, 700),
        image(64 * 512)[3 * 512..3 * 512 + 700]
    );

    assert!(rig.packet(1, &[0x1E, 0, 0, 0, 1], 0).is_ok());
    rig.ide
        .insert_media(1, 0, Box::new(MemoryBlock::new(image(16 * 2048))))
        .unwrap();
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x20)));
    assert_eq!(rig.packet(1, &[0x00], 0), Err((0x41, 0x60)));
    rig.set(1, 1, 0);
    rig.set(1, 4, 8);
    rig.set(1, 5, 0);
    rig.command(1, 0xA0);
    rig.write_data(1, &[0x12, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(rig.read_data(1, 8)[..2], [0x05, 0x80]);
    rig
}

/// What the guest can read without changing anything: per channel the alternate status,
/// registers 1–6 and the bus-master block; the configuration space; the interrupt lines.
fn observe(rig: &mut Rig) -> Vec<u8> {
    let mut v = Vec::new();
    for ch in 0..2 {
        v.push(rig.alt_status(ch));
        for reg in 1..=6 {
            v.push(rig.reg(ch, reg));
        }
        for reg in 0..8 {
            v.push(rig.bm_read(ch, reg));
        }
        v.push(u8::from(rig.irq(ch)));
    }
    let mut config = [0u8; 256];
    for (i, chunk) in config.chunks_mut(4).enumerate() {
        rig.ide.config_read(4 * i as u8, chunk);
    }
    v.extend_from_slice(&config);
    v
}

#[test]
fn saved_state_round_trip() {
    let mut a = busy_ide();
    let saved = a.ide.save();
    assert_eq!(saved.device, "piix3-ide");
    let mut b = snapshot_rig(image(64 * 512), image(16 * 2048));
    b.ide.restore(&saved).unwrap();
    assert_eq!(observe(&mut a), observe(&mut b));
    assert!(b.irq(0) && b.irq(1), "both lines re-asserted");
    assert_eq!(b.ide.save(), saved, "saving the restored device");
    assert_eq!(b.ide.medium_locked(1, 0), Ok(true));

    // The rest of the PIO read, in blocks of 4, 4 and 2 sectors.
    let expected = &image(64 * 512)[3 * 512 + 700..13 * 512];
    for rig in [&mut a, &mut b] {
        let mut data = rig.read_data(0, 4 * 512 - 700);
        for len in [4, 2] {
            assert_eq!(rig.status(0), 0x58);
            data.extend(rig.read_data(0, len * 512));
        }
        assert_eq!(rig.status(0), 0x50);
        assert_eq!(data, expected);
        assert_eq!(rig.identify(0, 0xEC)[59], 0x0104, "MULTIPLE 4 kept");
    }
    assert_eq!(a.identify(0, 0xEC), b.identify(0, 0xEC));

    // The INQUIRY reply goes on; the unit attention and the lock are still there.
    for rig in [&mut a, &mut b] {
        let mut inquiry = Vec::new();
        while rig.status(1) & 0x08 != 0 {
            let n = usize::from(rig.reg(1, 4)) | usize::from(rig.reg(1, 5)) << 8;
            inquiry.extend(rig.read_data(1, n));
        }
        assert_eq!(inquiry.len(), 28);
        assert_eq!(&inquiry[..4], b"TRRM");
        assert_eq!(rig.request_sense(1), (0x06, 0x28, 0x00));
        assert_eq!(
            rig.packet(1, &[0x1B, 0, 0, 0, 0x02], 0),
            Err((0x41, 0x20)),
            "the locked tray does not open"
        );
        assert_eq!(rig.request_sense(1), (0x02, 0x53, 0x02));
        let events = rig
            .packet(1, &[0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8], 8)
            .unwrap();
        assert_eq!(events[4..6], [2, 2], "new medium event still pending");
    }

    // The programmed bus-master engine moves a READ DMA into the same place.
    for rig in [&mut a, &mut b] {
        rig.bm_write(0, 2, 0x24);
        rig.lba28(0, 0, 40, 8);
        rig.command(0, 0xC8);
        rig.bm_write(0, 0, 0x09);
        assert_eq!(rig.bm_read(0, 2), 0x24);
        assert_eq!(rig.status(0), 0x50);
        assert_eq!(
            rig.memory(0x10000, 4096),
            image(64 * 512)[40 * 512..48 * 512]
        );
    }
    assert_eq!(observe(&mut a), observe(&mut b));
}

#[test]
fn saved_state_refusals() {
    let saved = busy_ide().ide.save();
    let mut fresh = snapshot_rig(image(64 * 512), image(16 * 2048));
    let mut other = saved.clone();
    other.version = 2;
    assert!(matches!(
        fresh.ide.restore(&other),
        Err(RestoreError::Version { found: 2, .. })
    ));
    let mut cut = saved.clone();
    cut.data.truncate(cut.data.len() - 100);
    assert!(matches!(
        fresh.ide.restore(&cut),
        Err(RestoreError::Corrupt { .. })
    ));
    let foreign = SavedState {
        device: "vga".into(),
        ..saved.clone()
    };
    assert!(matches!(
        fresh.ide.restore(&foreign),
        Err(RestoreError::WrongDevice { .. })
    ));
    // A PIO position past the end of its block.
    let mut s: save::IdeStateV1 = postcard::from_bytes(&saved.data).unwrap();
    let d = &mut s.channels[0].devices[0];
    d.pos = d.end + 2;
    let bad = crate::saved_state::encode(save::DEVICE, save::VERSION, &s);
    let e = fresh.ide.restore(&bad).unwrap_err();
    assert!(e.to_string().contains("PIO position"), "{e}");
    // Another disk size, another CD, another drive kind.
    let mut small = snapshot_rig(image(32 * 512), image(16 * 2048));
    assert_eq!(
        small.ide.restore(&saved).unwrap_err().to_string(),
        "the saved state of piix3-ide is damaged: the disk attached at IDE 0:0 has 32 \
         sectors, the snapshot expects 64"
    );
    let mut old_cd = snapshot_rig(image(64 * 512), image(8 * 2048));
    let e = old_cd.ide.restore(&saved).unwrap_err();
    assert!(
        e.to_string()
            .contains("IDE 1:0 holds a 16384-byte medium, the snapshot expects a 32768-byte"),
        "{e}"
    );
    let (mut disk_only, _) = Rig::with_disk(64);
    let e = disk_only.ide.restore(&saved).unwrap_err();
    assert!(
        e.to_string()
            .contains("IDE 1:0 holds no drive, the snapshot expects a CD-ROM drive"),
        "{e}"
    );
    // The refused controllers still work.
    for rig in [&mut fresh, &mut small] {
        rig.lba28(0, 0, 1, 1);
        rig.command(0, 0x20);
        assert_eq!(rig.read_data(0, 512), image(64 * 512)[512..1024]);
        assert_eq!(rig.status(0), 0x50);
    }
}
