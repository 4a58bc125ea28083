//! PIIX3 IDE controller (ATA disks, ATAPI CD-ROMs, bus-master DMA) driven by arbitrary guest
//! port, bus-master and configuration accesses.
#![no_main]

use devices::block::{BlockBackend, MemoryBlock};
use devices::dma_memory::{DmaMemory, VecMemory};
use devices::ide::{Drive, Piix3Ide, PRIMARY_IRQ, SECONDARY_IRQ};
use devices::irq::RecordingSink;
use devices::{Device, IrqLine, PciFunction, PortIo};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const MEMORY: usize = 0x4_0000;
const PORTS: [u16; 18] = [
    0x1F0, 0x1F1, 0x1F2, 0x1F3, 0x1F4, 0x1F5, 0x1F6, 0x1F7, 0x3F6, 0x170, 0x171, 0x172, 0x173,
    0x174, 0x175, 0x176, 0x177, 0x376,
];

fn media(sectors: usize, sector: usize, fill: u8, read_only: bool) -> Box<dyn BlockBackend> {
    let mut b = MemoryBlock::new(vec![fill; sectors * sector]);
    b.read_only = read_only;
    Box::new(b)
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(layout) = next() else { return };
    let sink = Arc::new(RecordingSink::default());
    let memory = Arc::new(VecMemory::new(MEMORY));
    let mut ide = Piix3Ide::new(
        memory.clone(),
        IrqLine::new(sink.clone(), PRIMARY_IRQ),
        IrqLine::new(sink, SECONDARY_IRQ),
    );
    // Bits of the first byte choose what sits at each of the four positions.
    for position in 0..4 {
        let (channel, unit) = (position / 2, position % 2);
        let drive = match (layout >> (2 * position)) & 3 {
            0 => continue,
            1 => Drive::HardDisk(media(64, 512, 0xA5, position == 3)),
            2 => Drive::Cdrom(None),
            _ => Drive::Cdrom(Some(media(16, 2048, 0x5A, true))),
        };
        let _ = ide.attach(channel, unit, drive);
    }
    ide.config_write(0x20, &0xC001u32.to_le_bytes());
    ide.config_write(0x04, &[0x05, 0x00]);

    let mut wide = [0u8; 4];
    while let Some(op) = next() {
        let channel = usize::from(op >> 7);
        let base = [0x1F0u16, 0x170][channel];
        match op & 0x0F {
            0..=3 => {
                let (Some(i), Some(v)) = (next(), next()) else {
                    return;
                };
                let len = [1, 1, 2, 4][usize::from(i >> 6)];
                wide.fill(v);
                ide.io_write(PORTS[usize::from(i) % PORTS.len()], &wide[..len]);
            }
            4..=5 => {
                let Some(i) = next() else { return };
                let len = [1, 1, 2, 4][usize::from(i >> 6)];
                ide.io_read(PORTS[usize::from(i) % PORTS.len()], &mut wide[..len]);
            }
            6 => {
                // A data-port burst.
                let (Some(n), Some(v)) = (next(), next()) else {
                    return;
                };
                for _ in 0..usize::from(n) * 4 {
                    if v & 1 == 0 {
                        ide.io_read(base, &mut wide[..2]);
                    } else {
                        ide.io_write(base, &[v, n]);
                    }
                }
            }
            7 => {
                // A command with its parameters.
                let mut regs = [0u8; 7];
                for r in regs.iter_mut() {
                    let Some(v) = next() else { return };
                    *r = v;
                }
                for (reg, v) in (1u16..=7).zip(regs) {
                    ide.io_write(base + reg, &[v]);
                }
            }
            8 => {
                // A command packet.
                let Some(features) = next() else { return };
                ide.io_write(base + 1, &[features & 3]);
                ide.io_write(base + 4, &[0x00]);
                ide.io_write(base + 5, &[0x08]);
                ide.io_write(base + 7, &[0xA0]);
                for _ in 0..6 {
                    let (Some(a), Some(b)) = (next(), next()) else {
                        return;
                    };
                    ide.io_write(base, &[a, b]);
                }
            }
            9 => {
                let (Some(at), Some(v)) = (next(), next()) else {
                    return;
                };
                ide.bar_write(4, u64::from(at & 0x0F), &[v]);
            }
            10 => {
                let Some(at) = next() else { return };
                ide.bar_read(4, u64::from(at & 0x0F), &mut wide[..1]);
            }
            11 => {
                // PRD table pointer and one entry.
                let mut e = [0u8; 8];
                for b in e.iter_mut() {
                    let Some(v) = next() else { return };
                    *b = v;
                }
                let table = 0x1000 + u32::from(op >> 4 & 7) * 8;
                memory.write(u64::from(table), &e);
                ide.bar_write(4, channel as u64 * 8 + 4, &table.to_le_bytes());
            }
            12 => {
                let (Some(offset), Some(v)) = (next(), next()) else {
                    return;
                };
                ide.config_write(offset, &[v]);
            }
            13 => {
                let Some(sel) = next() else { return };
                let (channel, unit) = (usize::from(sel & 1), usize::from(sel >> 1 & 1));
                if sel & 4 == 0 {
                    let _ = ide.eject(channel, unit);
                } else {
                    let sectors = usize::from(sel >> 3);
                    let _ = ide.insert_media(channel, unit, media(sectors, 2048, sel, true));
                }
            }
            14 => {
                let Some(v) = next() else { return };
                ide.io_write([0x3F6, 0x376][channel], &[v]);
            }
            _ => ide.reset(),
        }
    }
});
