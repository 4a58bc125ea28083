//! Floppy controller and ISA DMA controller driven by arbitrary guest port accesses.
#![no_main]

use devices::block::MemoryBlock;
use devices::dma::{Dma8237, DMA_PORT_RANGES};
use devices::dma_memory::VecMemory;
use devices::fdc::{Fdc, FDC_IRQ};
use devices::{Device, IrqLine, Poll, PortIo, TimerWaker};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};

/// Image sizes of the supported diskette formats.
const SIZES: [usize; 6] = [368_640, 737_280, 1_228_800, 1_474_560, 1_720_320, 2_949_120];

fn disk(sel: u8) -> Box<MemoryBlock> {
    let mut b = MemoryBlock::new(vec![0x5A; SIZES[usize::from(sel) % SIZES.len()]]);
    b.read_only = sel & 0x80 != 0;
    Box::new(b)
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(first) = next() else { return };
    let dma = Arc::new(Mutex::new(Dma8237::with_memory(Arc::new(VecMemory::new(
        0x2_0000,
    )))));
    let mut fdc = Fdc::new(
        IrqLine::new(Arc::new(devices::irq::RecordingSink::default()), FDC_IRQ),
        Some(dma.clone()),
        TimerWaker::noop(),
    );
    let _ = fdc.attach(0, Some(disk(first)));
    let _ = fdc.attach(1, None);
    let dma_ports: Vec<u16> = DMA_PORT_RANGES
        .iter()
        .flat_map(|&(start, len)| start..start + len)
        .collect();
    while let Some(op) = next() {
        match op % 10 {
            0..=3 => {
                let (Some(port), Some(v)) = (next(), next()) else {
                    return;
                };
                fdc.io_write(0x3F0 + u16::from(port & 7), &[v]);
            }
            4..=5 => {
                let Some(port) = next() else { return };
                let mut b = [0u8; 1];
                fdc.io_read(0x3F0 + u16::from(port & 7), &mut b);
            }
            6 => {
                let (Some(i), Some(v)) = (next(), next()) else {
                    return;
                };
                let port = dma_ports[usize::from(i) % dma_ports.len()];
                dma.lock().unwrap().io_write(port, &[v]);
            }
            7 => {
                let Some(i) = next() else { return };
                let port = dma_ports[usize::from(i) % dma_ports.len()];
                let mut b = [0u8; 1];
                dma.lock().unwrap().io_read(port, &mut b);
            }
            8 => {
                Poll::poll(&mut fdc, 0);
            }
            _ => {
                let Some(sel) = next() else { return };
                match sel % 4 {
                    0 => {
                        fdc.eject(usize::from(sel >> 2) % 5);
                    }
                    1 => {
                        let _ = fdc.insert_media(usize::from(sel >> 2) % 5, disk(sel));
                    }
                    2 => fdc.reset(),
                    _ => dma.lock().unwrap().reset(),
                }
            }
        }
    }
});
