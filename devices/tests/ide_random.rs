//! A guest can never crash the VMM through the IDE controller: thousands of random register
//! writes and reads, data-port bursts, command packets, PRD tables and bus-master starts, with
//! media coming and going, never panic.

use devices::block::{BlockBackend, MemoryBlock};
use devices::dma_memory::{DmaMemory, VecMemory};
use devices::ide::{Drive, Piix3Ide, PRIMARY_IRQ, SECONDARY_IRQ};
use devices::irq::RecordingSink;
use devices::{Device, IrqLine, PciFunction, PortIo};
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const MEMORY: usize = 256 * 1024;
const TABLE: u64 = 0x1000;
const PORTS: [u16; 19] = [
    0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6, 0x170, 0x171, 0x172, 0x173,
    0x174, 0x175, 0x176, 0x177, 0x376, 0x3F7,
];
const ATA_COMMANDS: [u8; 40] = [
    0x00, 0x08, 0x10, 0x20, 0x21, 0x24, 0x25, 0x27, 0x29, 0x30, 0x31, 0x34, 0x35, 0x39, 0x40, 0x42,
    0x70, 0x90, 0x91, 0xA0, 0xA1, 0xB0, 0xC4, 0xC5, 0xC6, 0xC8, 0xC9, 0xCA, 0xCB, 0xE0, 0xE1, 0xE5,
    0xE6, 0xE7, 0xEA, 0xEC, 0xEF, 0xF8, 0x94, 0xFF,
];
const PACKET_COMMANDS: [u8; 22] = [
    0x00, 0x03, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A, 0x2B, 0x43, 0x46, 0x4A, 0x51, 0x5A, 0xA8,
    0xAD, 0xBB, 0xBD, 0xBE, 0xFF, 0x55,
];

fn media(rng: &mut Rng, sectors: usize, sector: usize) -> Box<dyn BlockBackend> {
    let mut data = vec![0u8; sectors * sector];
    for b in data.iter_mut().step_by(97) {
        *b = rng.byte();
    }
    Box::new(MemoryBlock::new(data))
}

fn value(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.byte()).collect()
}

fn size(rng: &mut Rng) -> usize {
    rng.pick(&[1, 1, 1, 2, 2, 4])
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let sink = Arc::new(RecordingSink::default());
    let memory = Arc::new(VecMemory::new(MEMORY));
    let mut ide = Piix3Ide::new(
        memory.clone(),
        IrqLine::new(sink.clone(), PRIMARY_IRQ),
        IrqLine::new(sink.clone(), SECONDARY_IRQ),
    );
    ide.attach(0, 0, Drive::HardDisk(media(&mut rng, 96, 512)))
        .unwrap();
    ide.attach(0, 1, Drive::Cdrom(None)).unwrap();
    ide.attach(1, 0, Drive::Cdrom(Some(media(&mut rng, 24, 2048))))
        .unwrap();
    let mut read_only = MemoryBlock::new(vec![0; 512 * 8]);
    read_only.read_only = true;
    ide.attach(1, 1, Drive::HardDisk(Box::new(read_only)))
        .unwrap();
    ide.config_write(0x20, &0xC001u32.to_le_bytes());
    ide.config_write(0x04, &[0x05, 0x00]);

    for _ in 0..steps {
        let channel = rng.below(2) as usize;
        let base = [0x1F0u16, 0x170][channel];
        match rng.below(23) {
            // Register writes, often a command with plausible parameters.
            0..=3 => {
                let port = rng.pick(&PORTS);
                let len = size(&mut rng);
                let data = value(&mut rng, len);
                ide.io_write(port, &data);
            }
            4..=5 => {
                ide.io_write(base + 6, &[rng.pick(&[0xA0, 0xB0, 0xE0, 0xF0, 0x40, 0x50])]);
                ide.io_write(base + 2, &[rng.pick(&[0, 1, 2, 8, 16, 255])]);
                for reg in 3..=5 {
                    let v = if rng.below(3) == 0 { rng.byte() } else { 0 };
                    ide.io_write(base + reg, &[v]);
                }
                ide.io_write(base + 1, &[rng.pick(&[0, 1, 3, 2, 0x82, 0x02])]);
                ide.io_write(base + 7, &[rng.pick(&ATA_COMMANDS)]);
            }
            // Register reads of every width.
            6..=8 => {
                let port = rng.pick(&PORTS);
                let mut data = vec![0u8; size(&mut rng)];
                ide.io_read(port, &mut data);
            }
            // Data-port bursts.
            9..=10 => {
                let words = rng.pick(&[1, 6, 256, 1024]);
                let wide = rng.below(2) == 0;
                for _ in 0..words {
                    if rng.below(2) == 0 {
                        let mut data = vec![0u8; if wide { 4 } else { 2 }];
                        ide.io_read(base, &mut data);
                    } else {
                        let data = value(&mut rng, if wide { 4 } else { 2 });
                        ide.io_write(base, &data);
                    }
                }
            }
            // A command packet.
            11 => {
                ide.io_write(base + 1, &[rng.pick(&[0, 0, 1, 2])]);
                ide.io_write(base + 4, &[rng.byte()]);
                let random = rng.byte();
                ide.io_write(base + 5, &[rng.pick(&[0, 0x08, 0xFF, random])]);
                ide.io_write(base + 7, &[0xA0]);
                let mut packet = value(&mut rng, 12);
                packet[0] = rng.pick(&PACKET_COMMANDS);
                if rng.below(2) == 0 {
                    packet[2..6].fill(0);
                }
                for w in packet.chunks(2) {
                    ide.io_write(base, w);
                }
            }
            // PRD tables: mostly inside RAM, sometimes not.
            12 => {
                let entries = rng.below(4) + 1;
                for i in 0..entries {
                    let address = if rng.below(8) == 0 {
                        rng.next() as u32
                    } else {
                        0x2000 + rng.below((MEMORY - 0x22000) as u64) as u32
                    };
                    let random = rng.next() as u32;
                    let mut count = rng.pick(&[512u32, 1024, 2048, 4096, 0, 3, random]);
                    if i + 1 == entries && rng.below(4) != 0 {
                        count |= 0x8000_0000;
                    }
                    let mut e = [0u8; 8];
                    e[..4].copy_from_slice(&address.to_le_bytes());
                    e[4..].copy_from_slice(&count.to_le_bytes());
                    memory.write(TABLE + 8 * i, &e);
                }
            }
            // Bus-master registers.
            13..=14 => {
                let offset = channel as u64 * 8;
                match rng.below(4) {
                    0 => ide.bar_write(4, offset + 4, &(TABLE as u32).to_le_bytes()),
                    1 => ide.bar_write(4, offset, &[rng.pick(&[0x00, 0x01, 0x08, 0x09])]),
                    2 => {
                        let at = rng.below(16);
                        let len = size(&mut rng).min(16 - at as usize);
                        let data = value(&mut rng, len);
                        ide.bar_write(4, at, &data);
                    }
                    _ => {
                        let at = rng.below(16);
                        let mut data = vec![0u8; size(&mut rng).min(16 - at as usize)];
                        ide.bar_read(4, at, &mut data);
                    }
                }
            }
            // Configuration space.
            15 => {
                let len = size(&mut rng);
                let offset = (rng.below(256) as usize / len * len) as u8;
                if rng.below(2) == 0 {
                    let data = value(&mut rng, len);
                    ide.config_write(offset, &data);
                } else {
                    let mut data = vec![0u8; len];
                    ide.config_read(offset, &mut data);
                }
            }
            16 => {
                ide.config_write(0x04, &[0x05, 0x00]);
                ide.config_write(0x40, &[0x00, 0x80, 0x00, 0x80]);
            }
            // Media changes from the host.
            17 => {
                let unit = rng.below(2) as usize;
                if rng.below(2) == 0 {
                    let sectors = rng.pick(&[0, 1, 4, 24]);
                    let _ = ide.insert_media(channel, unit, media(&mut rng, sectors, 2048));
                } else {
                    let _ = ide.eject(channel, unit);
                }
            }
            18 => {
                // Memory garbage where guests put their buffers.
                let at = rng.below(MEMORY as u64 - 64);
                let data = value(&mut rng, 64);
                memory.write(at, &data);
            }
            // A whole DMA command: table, engine, command, start (in some order).
            19..=21 => {
                let write = rng.below(2) == 0;
                let atapi = rng.below(3) == 0;
                let offset = channel as u64 * 8;
                if rng.below(2) == 0 {
                    // Unstick a drive left in a data phase by earlier garbage.
                    ide.io_write([0x3F6, 0x376][channel], &[0x04]);
                    ide.io_write([0x3F6, 0x376][channel], &[0x00]);
                }
                ide.bar_write(4, offset, &[if write { 0x00 } else { 0x08 }]);
                ide.bar_write(4, offset + 2, &[0x06]);
                ide.bar_write(4, offset + 4, &(TABLE as u32).to_le_bytes());
                let early = rng.below(2) == 0;
                if early {
                    ide.bar_write(4, offset, &[if write { 0x01 } else { 0x09 }]);
                }
                ide.io_write(base + 6, &[rng.pick(&[0xE0, 0xF0, 0x40])]);
                if atapi {
                    ide.io_write(base + 1, &[1]);
                    ide.io_write(base + 7, &[0xA0]);
                    let mut packet = [0u8; 12];
                    packet[0] = rng.pick(&[0x28, 0xA8, 0xBE, 0x12, 0x25, 0x43, 0x46]);
                    packet[5] = rng.below(30) as u8;
                    packet[8] = rng.below(8) as u8;
                    packet[9] = rng.pick(&[0x10, 0xF8, 0x00]);
                    packet[4] = rng.byte();
                    for w in packet.chunks(2) {
                        ide.io_write(base, w);
                    }
                } else {
                    ide.io_write(base + 2, &[rng.below(40) as u8]);
                    ide.io_write(base + 3, &[rng.below(100) as u8]);
                    ide.io_write(base + 4, &[0]);
                    ide.io_write(base + 5, &[0]);
                    let cmd = match (write, rng.below(2)) {
                        (false, 0) => 0xC8,
                        (false, _) => 0x25,
                        (true, 0) => 0xCA,
                        (true, _) => 0x35,
                    };
                    ide.io_write(base + 7, &[cmd]);
                }
                if !early {
                    ide.bar_write(4, offset, &[if write { 0x01 } else { 0x09 }]);
                }
                let mut status = [0u8];
                ide.io_read(base + 7, &mut status);
            }
            _ => {
                if rng.below(50) == 0 {
                    ide.reset();
                    ide.config_write(0x20, &0xC001u32.to_le_bytes());
                    ide.config_write(0x04, &[0x05, 0x00]);
                } else {
                    ide.io_write(
                        [0x3F6, 0x376][channel],
                        &[rng.pick(&[0x00, 0x02, 0x04, 0x06, 0x80])],
                    );
                }
            }
        }
    }
    let _ = sink.take_changes();
}

#[test]
fn random_ide_traffic_never_panics() {
    for seed in [1, 0x1234_5678, 0xDEAD_BEEF_CAFE, 42, 7777] {
        run(seed, 40_000);
    }
}
