//! Render cost of the standard VGA: a full 80×25 text frame, a full 1024×768×32 VBE update and
//! an update where 1 % of that picture changed. Prints nanoseconds per frame.
//!
//! `cargo run --release -p devices --example vga_render`

use devices::vga::{dispi, StdVga, LFB_BAR, VBE_DISPI_DATA_PORT, VBE_DISPI_INDEX_PORT};
use devices::{Mmio, PciFunction, PortIo};
use std::time::Instant;

fn out(v: &mut StdVga, port: u16, value: u8) {
    v.io_write(port, &[value]);
}

fn indexed(v: &mut StdVga, port: u16, index: u8, value: u8) {
    out(v, port, index);
    out(v, port + 1, value);
}

/// Mode 3 (80×25 text, 9-dot cells) through the ports, with a font and a full screen of text.
fn text_mode(v: &mut StdVga) {
    const SEQ: [u8; 4] = [0x00, 0x03, 0x00, 0x02];
    const CRTC: [u8; 25] = [
        0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00,
        0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF,
    ];
    const ATTR: [u8; 20] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E,
        0x3F, 0x0C, 0x00, 0x0F, 0x08,
    ];
    const GFX: [u8; 9] = [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x0F, 0xFF];
    out(v, 0x3C2, 0x67);
    for (i, &x) in SEQ.iter().enumerate() {
        indexed(v, 0x3C4, i as u8 + 1, x);
    }
    indexed(v, 0x3D4, 0x11, 0);
    for (i, &x) in CRTC.iter().enumerate() {
        indexed(v, 0x3D4, i as u8, x);
    }
    let mut b = [0u8];
    v.io_read(0x3DA, &mut b);
    for (i, &x) in ATTR.iter().enumerate() {
        out(v, 0x3C0, i as u8);
        out(v, 0x3C0, x);
    }
    out(v, 0x3C0, 0x20);
    for (i, &x) in GFX.iter().enumerate() {
        indexed(v, 0x3CE, i as u8, x);
    }
    out(v, 0x3C8, 0);
    for i in 0..64u8 {
        for c in [i & 0x30, (i & 0x0C) << 2, (i & 0x03) << 4] {
            out(v, 0x3C9, c);
        }
    }
    // Font: a pseudo-random pattern for every character, through plane 2.
    indexed(v, 0x3C4, 2, 0x04);
    indexed(v, 0x3C4, 4, 0x07);
    indexed(v, 0x3CE, 4, 0x02);
    indexed(v, 0x3CE, 5, 0x00);
    indexed(v, 0x3CE, 6, 0x04);
    let mut x = 0x1234_5678u32;
    for a in 0..256 * 32 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.mmio_write(0xA0000 + a, &[x as u8]);
    }
    indexed(v, 0x3C4, 2, 0x03);
    indexed(v, 0x3C4, 4, 0x02);
    indexed(v, 0x3CE, 4, 0x00);
    indexed(v, 0x3CE, 5, 0x10);
    indexed(v, 0x3CE, 6, 0x0E);
    for cell in 0..80 * 25u64 {
        v.mmio_write(0xB8000 + cell * 2, &[cell as u8, (cell >> 3) as u8 & 0x7F]);
    }
}

fn dispi_write(v: &mut StdVga, index: u16, value: u16) {
    v.io_write(VBE_DISPI_INDEX_PORT, &index.to_le_bytes());
    v.io_write(VBE_DISPI_DATA_PORT, &value.to_le_bytes());
}

fn vbe_mode(v: &mut StdVga) {
    dispi_write(v, dispi::INDEX_ENABLE, 0);
    dispi_write(v, dispi::INDEX_BPP, 32);
    dispi_write(v, dispi::INDEX_XRES, 1024);
    dispi_write(v, dispi::INDEX_YRES, 768);
    dispi_write(v, dispi::INDEX_ENABLE, dispi::ENABLED | dispi::LFB_ENABLED);
    let mut b = [0u8];
    v.io_read(0x3DA, &mut b);
    out(v, 0x3C0, 0x20);
}

/// Times `frames` calls of `step` (which prepares a frame, untimed) followed by a render.
fn time(name: &str, v: &mut StdVga, frames: u32, mut step: impl FnMut(&mut StdVga, u32)) -> f64 {
    let mut total = std::time::Duration::ZERO;
    for i in 0..frames {
        step(v, i);
        let start = Instant::now();
        v.render(u64::from(i) * 1_000);
        total += start.elapsed();
        v.framebuffer().lock().take_dirty();
    }
    let ns = total.as_nanos() as f64 / f64::from(frames);
    println!("{name:<40} {ns:>12.0} ns/frame");
    ns
}

fn main() {
    let mut v = StdVga::new(Vec::new());
    text_mode(&mut v);
    v.render(0);
    time("text 80x25 (720x400), full redraw", &mut v, 2000, |v, _| {
        v.invalidate()
    });
    time("text 80x25, one cell changed", &mut v, 2000, |v, i| {
        v.mmio_write(0xB8000 + u64::from(i % 2000) * 2, &[i as u8]);
    });
    time("text 80x25, nothing changed", &mut v, 2000, |_, _| {});

    vbe_mode(&mut v);
    let frame_bytes = 1024 * 768 * 4;
    let frames: [Vec<u8>; 2] = [
        (0..frame_bytes).map(|i| (i * 7) as u8).collect(),
        (0..frame_bytes).map(|i| (i * 13 + 5) as u8).collect(),
    ];
    v.bar_write(LFB_BAR, 0, &frames[0]);
    v.render(0);
    time("VBE 1024x768x32, full update", &mut v, 200, |v, i| {
        v.bar_write(LFB_BAR, 0, &frames[(i as usize + 1) % 2]);
    });
    // 1 %: a 100×79 box (7900 of 786432 pixels) changes every frame.
    let mut color = 0u32;
    time("VBE 1024x768x32, 1% dirty", &mut v, 2000, |v, _| {
        color = color.wrapping_add(0x010203);
        let row: Vec<u8> = (0..100).flat_map(|_| color.to_le_bytes()).collect();
        for y in 300..379u64 {
            v.bar_write(LFB_BAR, (y * 1024 + 400) * 4, &row);
        }
    });
    time("VBE 1024x768x32, nothing changed", &mut v, 2000, |_, _| {});
}
