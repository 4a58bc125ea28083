//! The floppy controller and the DMA controller never panic, whatever a guest writes: seeded
//! random port accesses, mixed with well-formed commands so that transfers really run, with
//! diskettes changing underneath.

use devices::block::MemoryBlock;
use devices::dma::{Dma8237, DMA_PORT_RANGES};
use devices::dma_memory::VecMemory;
use devices::fdc::{Fdc, FDC_IRQ};
use devices::irq::RecordingSink;
use devices::{IrqLine, Poll, PortIo, TimerWaker};
use std::sync::{Arc, Mutex};

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
}

/// First bytes of the commands the controller knows (with their option bits).
const OPCODES: [u8; 24] = [
    0x03, 0x04, 0x07, 0x08, 0x0E, 0x0F, 0x10, 0x12, 0x13, 0x14, 0x94, 0x18, 0x8E, 0x8F, 0xCF, 0x4A,
    0x4D, 0xE6, 0x46, 0xC5, 0x45, 0x4C, 0x42, 0x56,
];

fn disk(rng: &mut Rng) -> Box<MemoryBlock> {
    let sizes = [368_640, 737_280, 1_228_800, 1_474_560, 1_720_320, 2_949_120];
    let size = sizes[rng.below(sizes.len() as u64) as usize];
    let mut b = MemoryBlock::new(vec![0xA5; size]);
    b.read_only = rng.below(4) == 0;
    Box::new(b)
}

fn run(seed: u64, steps: usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // Smaller than the 16 MiB ISA DMA reach, so some transfers hit missing memory.
    let mem = Arc::new(VecMemory::new(0x10_0000));
    let dma = Arc::new(Mutex::new(Dma8237::with_memory(mem)));
    let sink = Arc::new(RecordingSink::default());
    let mut fdc = Fdc::new(
        IrqLine::new(sink, FDC_IRQ),
        Some(dma.clone()),
        TimerWaker::noop(),
    );
    fdc.attach(0, Some(disk(&mut rng))).unwrap();
    fdc.attach(1, None).unwrap();
    let dma_port = |rng: &mut Rng| -> u16 {
        let (start, len) = DMA_PORT_RANGES[rng.below(3) as usize];
        start + rng.below(u64::from(len)) as u16
    };
    for _ in 0..steps {
        match rng.below(100) {
            0..=24 => {
                let port = 0x3F0 + rng.below(8) as u16;
                let width = [1, 1, 1, 2, 4][rng.below(5) as usize];
                let data: Vec<u8> = (0..width).map(|_| rng.byte()).collect();
                fdc.io_write(port, &data);
            }
            25..=49 => {
                let port = 0x3F0 + rng.below(8) as u16;
                let width = [1, 1, 1, 2, 4][rng.below(5) as usize];
                let mut data = vec![0; width];
                fdc.io_read(port, &mut data);
            }
            50..=54 => {
                // A read, write, verify or format that addresses the diskette sensibly.
                let rate = fdc.media_format(0).map_or(0, |f| f.rate);
                let spt = fdc.media_format(0).map_or(18, |f| f.sectors);
                fdc.io_write(0x3F7, &[if rng.below(8) == 0 { rng.byte() } else { rate }]);
                let ops = [0xE6, 0x46, 0xC5, 0x45, 0x66, 0x4C, 0x42, 0x56, 0x4D];
                let op = ops[rng.below(ops.len() as u64) as usize];
                let hd = rng.below(2) as u8;
                let r = 1 + rng.below(u64::from(spt) + 1) as u8;
                let params = if op == 0x4D {
                    vec![hd << 2, 2, spt, 0x6C, rng.byte()]
                } else {
                    vec![
                        hd << 2,
                        rng.below(82) as u8,
                        hd,
                        r,
                        if rng.below(10) == 0 {
                            rng.below(4) as u8
                        } else {
                            2
                        },
                        r.saturating_add(rng.below(4) as u8),
                        0x1B,
                        0xFF,
                    ]
                };
                fdc.io_write(0x3F5, &[op]);
                for v in params {
                    fdc.io_write(0x3F5, &[v]);
                }
            }
            55..=59 => {
                // A whole command with plausible parameters.
                let op = OPCODES[rng.below(OPCODES.len() as u64) as usize];
                fdc.io_write(0x3F5, &[op]);
                for _ in 0..rng.below(10) {
                    let v = match rng.below(4) {
                        0 => rng.below(90) as u8,
                        1 => rng.below(4) as u8 | (rng.below(2) as u8) << 2,
                        2 => 1 + rng.below(40) as u8,
                        _ => rng.byte(),
                    };
                    fdc.io_write(0x3F5, &[v]);
                }
            }
            60..=69 => {
                // Drain the FIFO as a polling driver would.
                for _ in 0..rng.below(600) {
                    let mut b = [0];
                    fdc.io_read(0x3F4, &mut b);
                    if b[0] & 0xC0 == 0xC0 {
                        fdc.io_read(0x3F5, &mut b);
                    } else if b[0] & 0xC0 == 0x80 && rng.below(2) == 0 {
                        fdc.io_write(0x3F5, &[rng.byte()]);
                    }
                }
            }
            70..=77 => {
                // Channel 2 set up like a driver, with random address, count and mode.
                let mut d = dma.lock().unwrap();
                let addr = rng.next() as u32;
                let count = rng.below(0x2000) as u16;
                let modes = [0x46, 0x4A, 0x56, 0x66, 0x42, 0x86, 0xC6, rng.byte()];
                let mode = modes[rng.below(modes.len() as u64) as usize];
                for (port, v) in [
                    (0x0A, 0x06),
                    (0x0C, 0),
                    (0x04, addr as u8),
                    (0x04, (addr >> 8) as u8),
                    (0x05, count as u8),
                    (0x05, (count >> 8) as u8),
                    (0x0B, (mode & !3) | 2),
                    (0x81, (addr >> 16) as u8),
                    (0x0A, 0x02),
                ] {
                    d.io_write(port, &[v]);
                }
            }
            78..=85 => {
                let port = dma_port(&mut rng);
                let mut d = dma.lock().unwrap();
                if rng.below(2) == 0 {
                    d.io_write(port, &[rng.byte()]);
                } else {
                    let mut b = [0];
                    d.io_read(port, &mut b);
                }
            }
            86..=93 => {
                fdc.poll(rng.next());
            }
            94..=96 => {
                let drive = rng.below(5) as usize;
                if rng.below(2) == 0 {
                    fdc.eject(drive);
                } else {
                    let _ = fdc.insert_media(drive, disk(&mut rng));
                }
            }
            97 => {
                // Devices transfer on random channels, including the cascade and 16-bit ones.
                let mut d = dma.lock().unwrap();
                let ch = rng.below(9) as usize;
                let mut buf = vec![0u8; rng.below(700) as usize];
                if rng.below(2) == 0 {
                    d.write_memory(ch, &buf);
                } else {
                    d.read_memory(ch, &mut buf);
                }
            }
            98 => devices::Device::reset(&mut fdc),
            _ => devices::Device::reset(&mut *dma.lock().unwrap()),
        }
    }
}

#[test]
fn random_floppy_and_dma_accesses_never_panic() {
    for seed in 1..=24 {
        run(seed, 20_000);
    }
}
