//! Fuzzes the standard VGA: the input is a stream of port, legacy-window, linear-framebuffer,
//! configuration-space and render operations. Nothing a guest does may panic.
#![no_main]

use devices::vga::{StdVga, LFB_BAR, ROM_BAR, VGA_WINDOW_BASE, VGA_WINDOW_SIZE, VRAM_SIZE};
use devices::{Mmio, PciFunction, PortIo};
use libfuzzer_sys::fuzz_target;

/// Takes bytes from the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u32(&mut self) -> Option<u32> {
        let mut v = [0u8; 4];
        for b in &mut v {
            *b = self.byte()?;
        }
        Some(u32::from_le_bytes(v))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut vga = StdVga::new(vec![0x55; 0x2000]);
    let mut input = Input(data);
    let mut now = 0u64;
    let mut renders = 0;
    while let Some(op) = input.byte() {
        let size = [1usize, 2, 4, 8][usize::from(op >> 6)];
        let Some(arg) = input.u32() else { break };
        let mut buf = [0u8; 8];
        for (i, b) in buf.iter_mut().enumerate().take(size) {
            *b = input.byte().unwrap_or(i as u8);
        }
        let bytes = &mut buf[..size];
        match op & 0x0F {
            0 => vga.io_write(0x3B0 + (arg % 0x30) as u16, &bytes[..size.min(4)]),
            1 => vga.io_read(0x3B0 + (arg % 0x30) as u16, &mut bytes[..size.min(4)]),
            2 => vga.io_write(0x1CE + (arg & 1) as u16, &bytes[..size.min(4)]),
            3 => vga.io_read(0x1CE + (arg & 1) as u16, &mut bytes[..size.min(4)]),
            4 | 5 => vga.mmio_write(VGA_WINDOW_BASE + u64::from(arg) % VGA_WINDOW_SIZE, bytes),
            6 => vga.mmio_read(VGA_WINDOW_BASE + u64::from(arg) % VGA_WINDOW_SIZE, bytes),
            7 => vga.bar_write(LFB_BAR, u64::from(arg) % (VRAM_SIZE as u64 - 8), bytes),
            8 => vga.bar_read(LFB_BAR, u64::from(arg) % (VRAM_SIZE as u64 - 8), bytes),
            9 => vga.bar_read(ROM_BAR, u64::from(arg & 0x1FFF), bytes),
            10 => vga.config_write((arg as u8) & !3, &bytes[..size.min(4)]),
            11 => vga.config_read((arg as u8) & !3, &mut bytes[..size.min(4)]),
            12 if renders < 16 => {
                renders += 1;
                now += u64::from(arg);
                vga.render(now);
                let fb = vga.framebuffer();
                let mut f = fb.lock();
                for r in f.take_dirty() {
                    assert!(r.right() <= u64::from(f.width()));
                    assert!(r.bottom() <= u64::from(f.height()));
                }
                drop(f);
                let _ = vga.text_screen();
                let _ = vga.mode();
            }
            _ => {}
        }
    }
    vga.render(now);
});
