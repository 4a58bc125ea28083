//! Register-level tests of the standard VGA: each register group, the memory paths and the
//! renderer, with expected pixels computed from the programmed palette.

use super::render::{BLINK_HALF_PERIOD_NS, CURSOR_HALF_PERIOD_NS};
use super::*;
use crate::bus::shared;
use crate::framebuffer::{rgb, Rect};
use crate::pci::PciRoot;
use crate::ManualClock;

const ROM_LEN: usize = 40 * 1024;

fn vga() -> StdVga {
    let mut rom = vec![0u8; ROM_LEN];
    rom[0] = 0x55;
    rom[1] = 0xAA;
    rom[2] = (ROM_LEN / 512) as u8;
    rom[ROM_LEN - 1] = 0x77;
    StdVga::new(rom)
}

fn outb(v: &mut StdVga, port: u16, value: u8) {
    v.io_write(port, &[value]);
}

fn inb(v: &mut StdVga, port: u16) -> u8 {
    let mut b = [0u8];
    v.io_read(port, &mut b);
    b[0]
}

fn outw(v: &mut StdVga, port: u16, value: u16) {
    v.io_write(port, &value.to_le_bytes());
}

fn inw(v: &mut StdVga, port: u16) -> u16 {
    let mut b = [0u8; 2];
    v.io_read(port, &mut b);
    u16::from_le_bytes(b)
}

fn seq(v: &mut StdVga, index: u8, value: u8) {
    outb(v, 0x3C4, index);
    outb(v, 0x3C5, value);
}

fn seq_read(v: &mut StdVga, index: u8) -> u8 {
    outb(v, 0x3C4, index);
    inb(v, 0x3C5)
}

fn crtc(v: &mut StdVga, index: u8, value: u8) {
    outb(v, 0x3D4, index);
    outb(v, 0x3D5, value);
}

fn crtc_read(v: &mut StdVga, index: u8) -> u8 {
    outb(v, 0x3D4, index);
    inb(v, 0x3D5)
}

fn gfx(v: &mut StdVga, index: u8, value: u8) {
    outb(v, 0x3CE, index);
    outb(v, 0x3CF, value);
}

fn gfx_read(v: &mut StdVga, index: u8) -> u8 {
    outb(v, 0x3CE, index);
    inb(v, 0x3CF)
}

/// Writes an attribute register and leaves the palette address source on.
fn attr(v: &mut StdVga, index: u8, value: u8) {
    inb(v, 0x3DA);
    outb(v, 0x3C0, index);
    outb(v, 0x3C0, value);
    outb(v, 0x3C0, 0x20);
}

fn attr_read(v: &mut StdVga, index: u8) -> u8 {
    inb(v, 0x3DA);
    outb(v, 0x3C0, index | 0x20);
    inb(v, 0x3C1)
}

fn dac_set(v: &mut StdVga, index: u8, c: [u8; 3]) {
    outb(v, 0x3C8, index);
    for x in c {
        outb(v, 0x3C9, x);
    }
}

fn memw(v: &mut StdVga, address: u64, value: u8) {
    v.mmio_write(address, &[value]);
}

fn memr(v: &mut StdVga, address: u64) -> u8 {
    let mut b = [0u8];
    v.mmio_read(address, &mut b);
    b[0]
}

fn dispi(v: &mut StdVga, index: u16, value: u16) {
    outw(v, VBE_DISPI_INDEX_PORT, index);
    outw(v, VBE_DISPI_DATA_PORT, value);
}

fn dispi_read(v: &mut StdVga, index: u16) -> u16 {
    outw(v, VBE_DISPI_INDEX_PORT, index);
    inw(v, VBE_DISPI_DATA_PORT)
}

/// The colour a 6-bit DAC entry shows: each component's six bits replicated into eight.
fn dac6(c: [u8; 3]) -> [u8; 4] {
    let e = |v: u8| (v << 2) | (v >> 4);
    rgb(e(c[0]), e(c[1]), e(c[2]))
}

fn pixel(v: &StdVga, x: u32, y: u32) -> [u8; 4] {
    v.framebuffer()
        .lock()
        .pixel(x, y)
        .expect("pixel inside the frame")
}

fn take_dirty(v: &StdVga) -> Vec<Rect> {
    v.framebuffer().lock().take_dirty()
}

/// A standard mode's registers: misc output, SR1–SR4, CR00–CR18, AR00–AR13, GR0–GR8.
struct ModeRegs {
    misc: u8,
    seq: [u8; 4],
    crtc: [u8; 25],
    attr: [u8; 20],
    gfx: [u8; 9],
}

const MODE_03: ModeRegs = ModeRegs {
    misc: 0x67,
    seq: [0x00, 0x03, 0x00, 0x02],
    crtc: [
        0x5F, 0x4F, 0x50, 0x82, 0x55, 0x81, 0xBF, 0x1F, 0x00, 0x4F, 0x0D, 0x0E, 0x00, 0x00, 0x00,
        0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x1F, 0x96, 0xB9, 0xA3, 0xFF,
    ],
    attr: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E,
        0x3F, 0x0C, 0x00, 0x0F, 0x08,
    ],
    gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x0E, 0x0F, 0xFF],
};

const MODE_04: ModeRegs = ModeRegs {
    misc: 0x63,
    seq: [0x09, 0x03, 0x00, 0x02],
    crtc: [
        0x2D, 0x27, 0x28, 0x90, 0x2B, 0x80, 0xBF, 0x1F, 0x00, 0xC1, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x9C, 0x8E, 0x8F, 0x14, 0x00, 0x96, 0xB9, 0xA2, 0xFF,
    ],
    attr: [
        0x00, 0x13, 0x15, 0x17, 0x02, 0x04, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16,
        0x17, 0x01, 0x00, 0x03, 0x00,
    ],
    gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x0F, 0x0F, 0xFF],
};

const MODE_06: ModeRegs = ModeRegs {
    misc: 0x63,
    seq: [0x01, 0x01, 0x00, 0x06],
    crtc: [
        0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0xC1, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x00, 0x96, 0xB9, 0xC2, 0xFF,
    ],
    attr: [
        0x00, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17, 0x17,
        0x17, 0x01, 0x00, 0x01, 0x00,
    ],
    gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0D, 0x0F, 0xFF],
};

const MODE_12: ModeRegs = ModeRegs {
    misc: 0xE3,
    seq: [0x01, 0x0F, 0x00, 0x06],
    crtc: [
        0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF,
    ],
    attr: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E,
        0x3F, 0x01, 0x00, 0x0F, 0x00,
    ],
    gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF],
};

const MODE_13: ModeRegs = ModeRegs {
    misc: 0x63,
    seq: [0x01, 0x0F, 0x00, 0x0E],
    crtc: [
        0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x9C, 0x8E, 0x8F, 0x28, 0x40, 0x96, 0xB9, 0xA3, 0xFF,
    ],
    attr: [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E,
        0x0F, 0x41, 0x00, 0x0F, 0x00,
    ],
    gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x05, 0x0F, 0xFF],
};

/// Programs a mode the way a VGA BIOS does, through the ports only.
fn set_mode(v: &mut StdVga, m: &ModeRegs) {
    outb(v, 0x3C2, m.misc);
    seq(v, 0, 0x01);
    for (i, &x) in m.seq.iter().enumerate() {
        seq(v, i as u8 + 1, x);
    }
    seq(v, 0, 0x03);
    crtc(v, 0x11, 0x00);
    for (i, &x) in m.crtc.iter().enumerate() {
        crtc(v, i as u8, x);
    }
    inb(v, 0x3DA);
    for (i, &x) in m.attr.iter().enumerate() {
        outb(v, 0x3C0, i as u8);
        outb(v, 0x3C0, x);
    }
    outb(v, 0x3C0, 0x20);
    for (i, &x) in m.gfx.iter().enumerate() {
        gfx(v, i as u8, x);
    }
}

#[test]
fn pci_header_bars_and_rom() {
    let mut v = vga();
    let mut b = [0u8; 4];
    v.config_read(0x00, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1111_1234);
    v.config_read(0x08, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x0300_0000);
    v.config_read(0x2C, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1100_1AF4);
    // BAR 0: 16 MiB prefetchable 32-bit memory.
    v.config_write(0x10, &u32::MAX.to_le_bytes());
    v.config_read(0x10, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xFF00_0008);
    // ROM: 40 KiB rounds up to 64 KiB.
    v.config_write(0x30, &u32::MAX.to_le_bytes());
    v.config_read(0x30, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0xFFFF_0001);
    let mut r = [0u8; 3];
    v.bar_read(ROM_BAR, 0, &mut r);
    assert_eq!(r, [0x55, 0xAA, 80]);
    let mut r = [0u8; 2];
    v.bar_read(ROM_BAR, ROM_LEN as u64 - 1, &mut r);
    assert_eq!(r, [0x77, 0x00], "padding after the image reads 0");
    v.bar_write(ROM_BAR, 0, &[1, 2]);
    v.bar_read(ROM_BAR, 0, &mut r);
    assert_eq!(r, [0x55, 0xAA], "the ROM is read-only");
    // The linear framebuffer is video memory.
    v.bar_write(LFB_BAR, 0x12_3456, &[1, 2, 3, 4]);
    let mut q = [0u8; 4];
    v.bar_read(LFB_BAR, 0x12_3456, &mut q);
    assert_eq!(q, [1, 2, 3, 4]);
    assert_eq!(&v.vram.bytes[0x12_3456..0x12_345A], &[1, 2, 3, 4]);

    // The PCI root finds both BARs through config_space().
    let dev = shared(vga());
    let mut root = PciRoot::new();
    root.register(2, 0, dev.clone()).unwrap();
    let w = root.windows();
    root.config_write(2, 0, 0x10, &0xFD00_0000u32.to_le_bytes());
    root.config_write(2, 0, 0x30, &0xFEB0_0001u32.to_le_bytes());
    root.config_write(2, 0, 0x04, &[0x03, 0x00]);
    assert!(w.mmio_write(0xFD00_0010, &[0xAB]));
    assert_eq!(dev.lock().unwrap().vram.bytes[0x10], 0xAB);
    let mut two = [0u8; 2];
    assert!(w.mmio_read(0xFEB0_0000, &mut two));
    assert_eq!(two, [0x55, 0xAA]);
}

#[test]
fn sequencer_registers_read_back() {
    let mut v = vga();
    let masks = [0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0x00];
    for (i, &m) in masks.iter().enumerate() {
        seq(&mut v, i as u8, 0xFF);
        assert_eq!(seq_read(&mut v, i as u8), m, "SR{i}");
        seq(&mut v, i as u8, 0x55);
        assert_eq!(seq_read(&mut v, i as u8), 0x55 & m, "SR{i}");
    }
    outb(&mut v, 0x3C4, 0xFC);
    assert_eq!(inb(&mut v, 0x3C4), 0x04, "index has three bits");
    // SR1 dot width, SR2 map mask, SR3 character maps, SR4 memory mode.
    seq(&mut v, 1, 0x01);
    seq(&mut v, 2, 0x04);
    seq(&mut v, 3, 0x2D);
    seq(&mut v, 4, 0x0E);
    assert_eq!(
        [1, 2, 3, 4].map(|i| seq_read(&mut v, i)),
        [0x01, 0x04, 0x2D, 0x0E]
    );
}

#[test]
fn graphics_controller_registers_read_back() {
    let mut v = vga();
    let masks = [
        0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF, 0, 0, 0, 0, 0, 0, 0,
    ];
    for (i, &m) in masks.iter().enumerate() {
        gfx(&mut v, i as u8, 0xFF);
        assert_eq!(gfx_read(&mut v, i as u8), m, "GR{i}");
        gfx(&mut v, i as u8, 0xA5);
        assert_eq!(gfx_read(&mut v, i as u8), 0xA5 & m, "GR{i}");
    }
    outb(&mut v, 0x3CE, 0xF8);
    assert_eq!(inb(&mut v, 0x3CE), 0x08);
}

#[test]
fn crtc_registers_read_back_with_protection_and_mono_aliases() {
    let mut v = vga();
    // Power-on: misc output bit 0 clear, so the CRTC answers at 0x3B4/0x3B5 only.
    outb(&mut v, 0x3B4, 0x0C);
    outb(&mut v, 0x3B5, 0x12);
    assert_eq!(inb(&mut v, 0x3B5), 0x12);
    assert_eq!(inb(&mut v, 0x3D4), 0xFF);
    outb(&mut v, 0x3D5, 0x34);
    assert_eq!(inb(&mut v, 0x3B5), 0x12, "colour port ignored in mono mode");
    outb(&mut v, 0x3C2, 0x01);
    assert_eq!(inb(&mut v, 0x3B4), 0xFF);
    assert_eq!(
        crtc_read(&mut v, 0x0C),
        0x12,
        "same registers, colour address"
    );

    let val = |i: u8| i.wrapping_mul(7).wrapping_add(3) & 0x7F;
    for i in 0..0x19u8 {
        crtc(&mut v, i, val(i));
    }
    for i in 0..0x19u8 {
        assert_eq!(crtc_read(&mut v, i), val(i), "CR{i:x}");
    }
    outb(&mut v, 0x3D4, 0x40);
    assert_eq!(inb(&mut v, 0x3D4), 0x40, "index reads back");
    outb(&mut v, 0x3D5, 0x99);
    assert_eq!(inb(&mut v, 0x3D5), 0x00, "undefined register");

    // CR11 bit 7 protects CR00–CR07 except the line compare bit in CR07.
    crtc(&mut v, 0x07, 0x00);
    crtc(&mut v, 0x11, 0x80);
    crtc(&mut v, 0x01, 0x4F);
    crtc(&mut v, 0x07, 0xFF);
    crtc(&mut v, 0x12, 0x8F);
    assert_eq!(crtc_read(&mut v, 0x01), val(1));
    assert_eq!(crtc_read(&mut v, 0x07), 0x10);
    assert_eq!(crtc_read(&mut v, 0x12), 0x8F);
    crtc(&mut v, 0x11, 0x00);
    crtc(&mut v, 0x01, 0x4F);
    assert_eq!(crtc_read(&mut v, 0x01), 0x4F);

    // Cursor location, shape, start address, offset, line compare, overflow bits.
    for (i, x) in [
        (0x0A, 0x0D),
        (0x0B, 0x0E),
        (0x0C, 0x12),
        (0x0D, 0x34),
        (0x0E, 0x07),
    ] {
        crtc(&mut v, i, x);
    }
    crtc(&mut v, 0x0F, 0xD0);
    crtc(&mut v, 0x12, 0x8F);
    crtc(&mut v, 0x07, 0x1F);
    crtc(&mut v, 0x09, 0x4F);
    crtc(&mut v, 0x18, 0xFF);
    assert_eq!(v.regs.cursor_address(), 0x07D0);
    assert_eq!(v.regs.start_address(), 0x1234);
    assert_eq!(v.regs.display_lines(), 400);
    assert_eq!(v.regs.line_compare(), 0x3FF);
}

#[test]
fn attribute_flip_flop_and_registers() {
    let mut v = vga();
    outb(&mut v, 0x3C2, 0x01);
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x10); // index
    outb(&mut v, 0x3C0, 0xFF); // data
    assert_eq!(inb(&mut v, 0x3C1), 0xEF, "AR10 bit 4 is reserved");
    outb(&mut v, 0x3C0, 0x32); // index again (flip-flop toggled back), with PAS
    assert_eq!(inb(&mut v, 0x3C0), 0x32);
    outb(&mut v, 0x3C0, 0xFF);
    assert_eq!(
        inb(&mut v, 0x3C1),
        0x3F,
        "AR12 keeps the plane bits and the mux"
    );

    // A read of input status 1 resets the flip-flop to "index".
    outb(&mut v, 0x3C0, 0x13);
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x13);
    outb(&mut v, 0x3C0, 0xFF);
    assert_eq!(attr_read(&mut v, 0x13), 0x0F);
    for i in 0..16u8 {
        attr(&mut v, i, 0xC0 | i);
    }
    for i in 0..16u8 {
        assert_eq!(attr_read(&mut v, i), i, "palette registers keep six bits");
    }
    attr(&mut v, 0x11, 0xA5);
    attr(&mut v, 0x14, 0xFF);
    attr(&mut v, 0x12, 0xFF);
    assert_eq!(attr_read(&mut v, 0x11), 0xA5);
    assert_eq!(attr_read(&mut v, 0x14), 0x0F);
    assert_eq!(attr_read(&mut v, 0x12), 0x3F);
    assert_eq!(attr_read(&mut v, 0x15), 0x00, "no register 0x15");

    // Monochrome: 0x3BA resets the flip-flop and 0x3DA is not decoded.
    outb(&mut v, 0x3C2, 0x00);
    outb(&mut v, 0x3C0, 0x10);
    assert_eq!(inb(&mut v, 0x3DA), 0xFF);
    inb(&mut v, 0x3BA);
    outb(&mut v, 0x3C0, 0x10);
    outb(&mut v, 0x3C0, 0x08);
    assert_eq!(inb(&mut v, 0x3C1), 0x08);
}

#[test]
fn dac_read_and_write_sequences() {
    let mut v = vga();
    outb(&mut v, 0x3C8, 5);
    assert_eq!(inb(&mut v, 0x3C7), 0, "write mode");
    for x in [10, 20, 30, 40, 50, 0xFF] {
        outb(&mut v, 0x3C9, x);
    }
    assert_eq!(inb(&mut v, 0x3C8), 7, "write index advanced twice");
    outb(&mut v, 0x3C7, 5);
    assert_eq!(inb(&mut v, 0x3C7), 3, "read mode");
    let got: Vec<u8> = (0..6).map(|_| inb(&mut v, 0x3C9)).collect();
    assert_eq!(got, vec![10, 20, 30, 40, 50, 0x3F], "six-bit components");
    // A partial write is not committed until the third component.
    outb(&mut v, 0x3C8, 9);
    outb(&mut v, 0x3C9, 1);
    outb(&mut v, 0x3C9, 2);
    outb(&mut v, 0x3C7, 9);
    assert_eq!([0; 3].map(|_| inb(&mut v, 0x3C9)), [0, 0, 0]);
    // Index 255 wraps to 0.
    dac_set(&mut v, 255, [1, 2, 3]);
    assert_eq!(inb(&mut v, 0x3C8), 0);
    outb(&mut v, 0x3C7, 255);
    assert_eq!([0; 4].map(|_| inb(&mut v, 0x3C9)), [1, 2, 3, 0]);
    // Pel mask.
    outb(&mut v, 0x3C6, 0x0F);
    assert_eq!(inb(&mut v, 0x3C6), 0x0F);
    // The 8-bit DAC (Bochs VBE ENABLE bit 5) keeps all eight bits.
    dispi(&mut v, dispi::INDEX_ENABLE, dispi::DAC_8BIT);
    dac_set(&mut v, 1, [0xFF, 0x80, 0x41]);
    outb(&mut v, 0x3C7, 1);
    assert_eq!([0; 3].map(|_| inb(&mut v, 0x3C9)), [0xFF, 0x80, 0x41]);
    assert_eq!(v.regs.dac.rgb(1), [0xFF, 0x80, 0x41]);
    dispi(&mut v, dispi::INDEX_ENABLE, 0);
    dac_set(&mut v, 1, [0x3F, 0x2A, 0x15]);
    assert_eq!(v.regs.dac.rgb(1), [0xFF, 0xAA, 0x55]);
}

#[test]
fn misc_output_feature_control_and_input_status() {
    let mut v = vga();
    outb(&mut v, 0x3C2, 0xFF);
    assert_eq!(inb(&mut v, 0x3CC), 0xEF);
    outb(&mut v, 0x3C2, 0x67);
    assert_eq!(inb(&mut v, 0x3CC), 0x67);
    outb(&mut v, 0x3DA, 0xFF);
    assert_eq!(inb(&mut v, 0x3CA), 0x0B);
    outb(&mut v, 0x3BA, 0x00);
    assert_eq!(
        inb(&mut v, 0x3CA),
        0x0B,
        "mono address not decoded in colour mode"
    );
    assert_eq!(inb(&mut v, 0x3C2), 0x00, "input status 0");
    assert_eq!(inb(&mut v, 0x3B0), 0xFF);

    // Polling for the end and then the start of vertical retrace terminates.
    for _ in 0..3 {
        let mut n = 0;
        while inb(&mut v, 0x3DA) & 0x08 != 0 {
            n += 1;
            assert!(n < 1000);
        }
        while inb(&mut v, 0x3DA) & 0x08 == 0 {
            n += 1;
            assert!(n < 1000);
        }
    }
    let states: Vec<u8> = (0..8).map(|_| inb(&mut v, 0x3DA) & 0x01).collect();
    assert!(
        states.contains(&0) && states.contains(&1),
        "display enable toggles"
    );

    // With a clock, the bits follow a 60 Hz frame.
    let clock = ManualClock::new();
    let mut v = vga().with_clock(Arc::new(clock.clone()));
    outb(&mut v, 0x3C2, 0x01);
    clock.set(100 * LINE_NS);
    assert_eq!(inb(&mut v, 0x3DA) & 0x09, 0x00, "active display");
    clock.set(495 * LINE_NS);
    assert_eq!(inb(&mut v, 0x3DA) & 0x09, 0x09, "vertical retrace");
    clock.set(485 * LINE_NS);
    assert_eq!(inb(&mut v, 0x3DA) & 0x09, 0x01, "vertical blanking");
}

/// Planar 16-colour access: mode 12h register values.
fn planar_vga() -> StdVga {
    let mut v = vga();
    set_mode(&mut v, &MODE_12);
    v
}

#[test]
fn write_modes_and_read_modes_with_latches() {
    let mut v = planar_vga();
    let a = VGA_WINDOW_BASE;
    let planes = |v: &StdVga, planar: usize| -> [u8; 4] {
        let i = planar * 4;
        [
            v.vram.bytes[i],
            v.vram.bytes[i + 1],
            v.vram.bytes[i + 2],
            v.vram.bytes[i + 3],
        ]
    };

    // Write mode 0 with set/reset on all planes: colour 0101b.
    gfx(&mut v, 1, 0x0F);
    gfx(&mut v, 0, 0x05);
    memw(&mut v, a, 0x00);
    assert_eq!(planes(&v, 0), [0xFF, 0x00, 0xFF, 0x00]);
    for p in 0..4u8 {
        gfx(&mut v, 4, p);
        assert_eq!(
            memr(&mut v, a),
            [0xFF, 0x00, 0xFF, 0x00][usize::from(p)],
            "read map {p}"
        );
    }

    // Map mask selects planes: load 12 34 56 78 into address 1 one plane at a time.
    gfx(&mut v, 1, 0x00);
    for (p, x) in [0x12u8, 0x34, 0x56, 0x78].into_iter().enumerate() {
        seq(&mut v, 2, 1 << p);
        memw(&mut v, a + 1, x);
    }
    seq(&mut v, 2, 0x0F);
    assert_eq!(planes(&v, 1), [0x12, 0x34, 0x56, 0x78]);

    // Write mode 0, rotate right 4, XOR with the latches, bit mask F0.
    memr(&mut v, a + 1); // latches = 12 34 56 78
    gfx(&mut v, 3, 0x18 | 4);
    gfx(&mut v, 8, 0xF0);
    memw(&mut v, a + 1, 0xAB); // rotated: BA
    let expect = [0x12u8, 0x34, 0x56, 0x78].map(|l| ((0xBA ^ l) & 0xF0) | (l & 0x0F));
    assert_eq!(planes(&v, 1), expect);
    assert_eq!(expect, [0xA2, 0x84, 0xE6, 0xC8]);

    // Write mode 1 copies the latches.
    gfx(&mut v, 3, 0x00);
    gfx(&mut v, 8, 0xFF);
    gfx(&mut v, 5, 0x01);
    memr(&mut v, a + 1);
    memw(&mut v, a + 2, 0x00);
    assert_eq!(planes(&v, 2), [0xA2, 0x84, 0xE6, 0xC8]);

    // Write mode 2: the value's low nibble is the colour, under the bit mask.
    gfx(&mut v, 5, 0x02);
    gfx(&mut v, 8, 0x0F);
    memr(&mut v, a + 3); // latches = 0
    memw(&mut v, a + 3, 0xF9);
    assert_eq!(planes(&v, 3), [0x0F, 0x00, 0x00, 0x0F]);

    // Write mode 3: rotated value AND bit mask selects bits, set/reset gives the colour.
    gfx(&mut v, 5, 0x03);
    gfx(&mut v, 0, 0x06);
    gfx(&mut v, 8, 0xCC);
    memr(&mut v, a + 4);
    memw(&mut v, a + 4, 0xF0);
    assert_eq!(planes(&v, 4), [0x00, 0xC0, 0xC0, 0x00]);

    // Function select AND / OR with write mode 2.
    gfx(&mut v, 5, 0x02);
    gfx(&mut v, 8, 0xFF);
    gfx(&mut v, 3, 0x08); // AND
    memr(&mut v, a + 1);
    memw(&mut v, a + 5, 0x03);
    assert_eq!(planes(&v, 5), [0xA2, 0x84, 0x00, 0x00]);
    gfx(&mut v, 3, 0x10); // OR
    memr(&mut v, a + 4);
    memw(&mut v, a + 6, 0x01);
    assert_eq!(planes(&v, 6), [0xFF, 0xC0, 0xC0, 0x00]);
    gfx(&mut v, 3, 0x00);

    // Read mode 1: colour compare 0101 on all planes of A2 84 E6 C8.
    gfx(&mut v, 5, 0x08);
    gfx(&mut v, 2, 0x05);
    gfx(&mut v, 7, 0x0F);
    assert_eq!(memr(&mut v, a + 1), 0b0010_0010);
    gfx(&mut v, 7, 0x01); // only plane 0 matters: its set bits
    assert_eq!(memr(&mut v, a + 1), 0xA2);
    gfx(&mut v, 7, 0x00); // nothing matters: all ones
    assert_eq!(memr(&mut v, a + 1), 0xFF);
    // The read loaded the latches: write mode 1 stores them elsewhere.
    gfx(&mut v, 5, 0x09);
    memw(&mut v, a + 7, 0);
    assert_eq!(planes(&v, 7), [0xA2, 0x84, 0xE6, 0xC8]);
}

#[test]
fn odd_even_chain4_and_memory_map() {
    let mut v = vga();
    set_mode(&mut v, &MODE_03);
    memw(&mut v, 0xB8000, b'A');
    memw(&mut v, 0xB8001, 0x1F);
    memw(&mut v, 0xB8002, b'B');
    assert_eq!(&v.vram.bytes[0..2], &[b'A', 0x1F]);
    assert_eq!(v.vram.bytes[4], b'B');
    assert_eq!(memr(&mut v, 0xB8001), 0x1F);
    assert_eq!(memr(&mut v, 0xB8002), b'B');
    // Memory map 3: only 0xB8000–0xBFFFF decodes.
    assert_eq!(memr(&mut v, 0xA0000), 0xFF);
    assert_eq!(memr(&mut v, 0xB0000), 0xFF);
    memw(&mut v, 0xB0000, 0x55);
    assert!(v.vram.bytes[..0x40000].iter().all(|&b| b != 0x55));
    // Memory map 2 (0xB0000–0xB7FFF).
    gfx(&mut v, 6, 0x0A);
    assert_eq!(memr(&mut v, 0xB0002), b'B');
    assert_eq!(memr(&mut v, 0xB8000), 0xFF);

    set_mode(&mut v, &MODE_13);
    for n in [0u64, 1, 2, 3, 4, 321, 63999] {
        memw(&mut v, 0xA0000 + n, n as u8 ^ 0x5A);
    }
    for n in [0usize, 1, 2, 3, 4, 321, 63999] {
        assert_eq!(v.vram.bytes[n], n as u8 ^ 0x5A, "chain-4 byte {n}");
        assert_eq!(memr(&mut v, 0xA0000 + n as u64), n as u8 ^ 0x5A);
    }
    // Map mask still gates chain-4 writes.
    seq(&mut v, 2, 0x0E);
    memw(&mut v, 0xA0000, 0x11);
    memw(&mut v, 0xA0001, 0x22);
    assert_eq!(&v.vram.bytes[0..2], &[0x5A, 0x22]);
}

#[test]
fn mode_13h_renders_through_the_dac() {
    let mut v = vga();
    set_mode(&mut v, &MODE_13);
    let colors = [
        [0, 0, 0],
        [0x3F, 0, 0],
        [0x00, 0x2A, 0x15],
        [0x10, 0x20, 0x30],
    ];
    for (i, c) in colors.iter().enumerate() {
        dac_set(&mut v, i as u8, *c);
    }
    memw(&mut v, 0xA0000, 1);
    memw(&mut v, 0xA0000 + 319, 2);
    memw(&mut v, 0xA0000 + 199 * 320 + 10, 3);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 400,
            bpp: 8,
            vbe: false
        }
    );
    let fb = v.framebuffer();
    let size = {
        let f = fb.lock();
        (f.width(), f.height())
    };
    assert_eq!(size, (640, 400));
    for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        assert_eq!(pixel(&v, x, y), dac6(colors[1]));
    }
    assert_eq!(pixel(&v, 2, 0), dac6(colors[0]));
    assert_eq!(pixel(&v, 638, 1), dac6(colors[2]));
    assert_eq!(pixel(&v, 639, 0), dac6(colors[2]));
    assert_eq!(pixel(&v, 20, 398), dac6(colors[3]));
    assert_eq!(pixel(&v, 21, 399), dac6(colors[3]));
    assert_eq!(pixel(&v, 22, 399), dac6(colors[0]));

    // A palette change redraws everything with the new colour.
    take_dirty(&v);
    dac_set(&mut v, 1, [0, 0, 0x3F]);
    v.render(0);
    assert_eq!(pixel(&v, 0, 0), dac6([0, 0, 0x3F]));
    assert_eq!(take_dirty(&v), vec![Rect::new(0, 0, 640, 400)]);

    // The pel mask applies before the DAC.
    outb(&mut v, 0x3C6, 0xFE);
    v.render(0);
    assert_eq!(pixel(&v, 20, 398), dac6(colors[2]), "3 & 0xFE = 2");
}

#[test]
fn mode_12h_renders_planar_pixels_with_start_address_and_offset() {
    let mut v = planar_vga();
    // DAC entries the attribute palette of mode 12h selects for colours 0, 5, 9, 12.
    let dac = [
        (0u8, [0, 0, 0]),
        (1, [0, 0, 0x2A]),
        (5, [0x2A, 0, 0x2A]),
        (0x39, [0x15, 0x15, 0x3F]),
        (0x3C, [0x3F, 0x15, 0x15]),
    ];
    for (i, c) in dac {
        dac_set(&mut v, i, c);
    }
    let color = |c: u8| {
        dac6(
            dac.iter()
                .find(|d| d.0 == MODE_12.attr[usize::from(c)])
                .unwrap()
                .1,
        )
    };
    // Write mode 2, one pixel at a time through the bit mask.
    gfx(&mut v, 5, 0x02);
    let put = |v: &mut StdVga, x: u64, y: u64, c: u8| {
        let addr = VGA_WINDOW_BASE + y * 80 + x / 8;
        gfx(v, 8, 0x80 >> (x % 8));
        memr(v, addr);
        memw(v, addr, c);
    };
    put(&mut v, 0, 0, 12);
    put(&mut v, 639, 479, 5);
    put(&mut v, 3, 1, 9);
    put(&mut v, 0, 2, 5);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 480,
            bpp: 4,
            vbe: false
        }
    );
    assert_eq!(pixel(&v, 0, 0), color(12));
    assert_eq!(pixel(&v, 1, 0), color(0));
    assert_eq!(pixel(&v, 639, 479), color(5));
    assert_eq!(pixel(&v, 3, 1), color(9));
    // Start address one line down.
    crtc(&mut v, 0x0C, 0);
    crtc(&mut v, 0x0D, 80);
    v.render(0);
    assert_eq!(pixel(&v, 3, 0), color(9));
    assert_eq!(pixel(&v, 0, 0), color(0));
    // Twice the line offset: line 1 shows memory line 2.
    crtc(&mut v, 0x0D, 0);
    crtc(&mut v, 0x13, 0x50);
    v.render(0);
    assert_eq!(pixel(&v, 0, 1), color(5));
    // Colour plane enable masks planes before the palette.
    crtc(&mut v, 0x13, 0x28);
    attr(&mut v, 0x12, 0x03);
    v.render(0);
    assert_eq!(pixel(&v, 3, 1), color(9 & 3));
    attr(&mut v, 0x12, 0x0F);
    // Line compare: below line 100 the picture restarts at address 0.
    crtc(&mut v, 0x0C, 0);
    crtc(&mut v, 0x0D, 80);
    crtc(&mut v, 0x18, 99);
    crtc(&mut v, 0x07, MODE_12.crtc[7] & !0x10);
    crtc(&mut v, 0x09, MODE_12.crtc[9] & !0x40);
    v.render(0);
    assert_eq!(pixel(&v, 3, 0), color(9));
    assert_eq!(pixel(&v, 0, 100), color(12));
    assert_eq!(pixel(&v, 3, 101), color(9));
}

#[test]
fn cga_modes_4_and_6_render_interleaved_rows() {
    let mut v = vga();
    set_mode(&mut v, &MODE_04);
    for (i, c) in [
        (0u8, [0, 0, 0]),
        (0x13, [0, 0x3F, 0x3F]),
        (0x15, [0x3F, 0, 0x3F]),
        (0x17, [0x3F, 0x3F, 0x3F]),
    ] {
        dac_set(&mut v, i, c);
    }
    // Row 1 lives in the odd bank at 0xBA000: pixels 3, 2, 1, 0.
    memw(&mut v, 0xBA000, 0b11_10_01_00);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 400,
            bpp: 2,
            vbe: false
        }
    );
    // 320×200 shown as 640×400: each pixel 2×2.
    let expect = [
        [0x3F, 0x3F, 0x3F],
        [0x3F, 0, 0x3F],
        [0, 0x3F, 0x3F],
        [0, 0, 0],
    ];
    for (i, c) in expect.iter().enumerate() {
        let x = i as u32 * 2;
        for (dx, y) in [(0, 2), (1, 3)] {
            assert_eq!(pixel(&v, x + dx, y), dac6(*c), "pixel {i}");
        }
    }
    assert_eq!(pixel(&v, 0, 0), dac6([0, 0, 0]), "row 0 untouched");

    set_mode(&mut v, &MODE_06);
    memw(&mut v, 0xBA000, 0x80);
    memw(&mut v, 0xB8001, 0x01);
    v.render(0);
    assert_eq!(pixel(&v, 0, 2), dac6([0x3F, 0x3F, 0x3F]));
    assert_eq!(pixel(&v, 0, 3), dac6([0x3F, 0x3F, 0x3F]));
    assert_eq!(pixel(&v, 1, 2), dac6([0, 0, 0]));
    assert_eq!(pixel(&v, 15, 0), dac6([0x3F, 0x3F, 0x3F]));
    assert_eq!(pixel(&v, 15, 2), dac6([0, 0, 0]));
}

fn vbe_mode(v: &mut StdVga, x: u16, y: u16, bpp: u16) {
    dispi(v, dispi::INDEX_ENABLE, 0);
    dispi(v, dispi::INDEX_BPP, bpp);
    dispi(v, dispi::INDEX_XRES, x);
    dispi(v, dispi::INDEX_YRES, y);
    dispi(v, dispi::INDEX_BANK, 0);
    dispi(v, dispi::INDEX_ENABLE, dispi::ENABLED | dispi::LFB_ENABLED);
    // The VBE BIOS turns the attribute palette source back on.
    inb(v, 0x3DA);
    outb(v, 0x3C0, 0x20);
}

#[test]
fn vbe_640x480x32_through_ports_and_lfb() {
    let mut v = vga();
    assert_eq!(dispi_read(&mut v, dispi::INDEX_ID), dispi::ID5);
    dispi(&mut v, dispi::INDEX_ID, dispi::ID0);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_ID), dispi::ID0);
    dispi(&mut v, dispi::INDEX_ID, 0x1234);
    assert_eq!(
        dispi_read(&mut v, dispi::INDEX_ID),
        dispi::ID0,
        "bad IDs ignored"
    );
    assert_eq!(dispi_read(&mut v, dispi::INDEX_VIDEO_MEMORY_64K), 256);
    dispi(&mut v, dispi::INDEX_ENABLE, dispi::GETCAPS);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_XRES), dispi::MAX_XRES);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_YRES), dispi::MAX_YRES);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_BPP), 32);

    v.bar_write(LFB_BAR, 0, &[9; 64]);
    vbe_mode(&mut v, 640, 480, 32);
    assert_eq!(v.vram.bytes[0], 0, "enabling clears video memory");
    assert_eq!(dispi_read(&mut v, dispi::INDEX_VIRT_WIDTH), 640);
    assert_eq!(
        dispi_read(&mut v, dispi::INDEX_VIRT_HEIGHT),
        (VRAM_SIZE / 2560) as u16
    );
    assert_eq!(
        dispi_read(&mut v, dispi::INDEX_ENABLE),
        dispi::ENABLED | dispi::LFB_ENABLED
    );
    let put = |v: &mut StdVga, x: u64, y: u64, c: [u8; 3]| {
        v.bar_write(LFB_BAR, (y * 640 + x) * 4, &[c[2], c[1], c[0], 0]);
    };
    put(&mut v, 0, 0, [0x10, 0x20, 0x30]);
    put(&mut v, 639, 479, [0xFF, 0x80, 0x01]);
    put(&mut v, 5, 1, [1, 2, 3]);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 480,
            bpp: 32,
            vbe: true
        }
    );
    assert_eq!(pixel(&v, 0, 0), rgb(0x10, 0x20, 0x30));
    assert_eq!(pixel(&v, 639, 479), rgb(0xFF, 0x80, 0x01));
    assert_eq!(pixel(&v, 1, 0), rgb(0, 0, 0));
    // Vertical panning.
    dispi(&mut v, dispi::INDEX_Y_OFFSET, 1);
    v.render(0);
    assert_eq!(pixel(&v, 5, 0), rgb(1, 2, 3));
    // Horizontal panning and a wider virtual screen.
    dispi(&mut v, dispi::INDEX_Y_OFFSET, 0);
    dispi(&mut v, dispi::INDEX_VIRT_WIDTH, 1024);
    dispi(&mut v, dispi::INDEX_X_OFFSET, 4);
    v.bar_write(LFB_BAR, (1024 + 4) * 4, &[0x33, 0x22, 0x11, 0]);
    v.render(0);
    assert_eq!(pixel(&v, 0, 1), rgb(0x11, 0x22, 0x33));
    // NOCLEARMEM keeps memory.
    dispi(&mut v, dispi::INDEX_ENABLE, 0);
    dispi(
        &mut v,
        dispi::INDEX_ENABLE,
        dispi::ENABLED | dispi::NOCLEARMEM,
    );
    assert_eq!(v.vram.bytes[(1024 + 4) * 4], 0x33);
}

#[test]
fn vbe_800x600x16_and_the_banked_window() {
    let mut v = vga();
    vbe_mode(&mut v, 800, 600, 16);
    // The legacy window now maps 64 KiB banks linearly.
    assert_eq!(gfx_read(&mut v, 6) & 0x0D, 0x05);
    v.mmio_write(0xA0000, &0xF800u16.to_le_bytes());
    v.mmio_write(0xA0002, &0x07E0u16.to_le_bytes());
    v.mmio_write(0xA0004, &0x001Fu16.to_le_bytes());
    v.mmio_write(0xA0006, &0x8410u16.to_le_bytes());
    dispi(&mut v, dispi::INDEX_BANK, 1);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_BANK), 1);
    // Byte 0x10000 is pixel 32768: x = 768, y = 40.
    v.mmio_write(0xA0000, &0xFFFFu16.to_le_bytes());
    assert_eq!(&v.vram.bytes[0x10000..0x10002], &[0xFF, 0xFF]);
    let mut w = [0u8; 2];
    v.mmio_read(0xA0000, &mut w);
    assert_eq!(w, [0xFF, 0xFF]);
    v.render(0);
    let e5 = |c: u8| (c << 3) | (c >> 2);
    let e6 = |c: u8| (c << 2) | (c >> 4);
    assert_eq!(pixel(&v, 0, 0), rgb(0xFF, 0, 0));
    assert_eq!(pixel(&v, 1, 0), rgb(0, 0xFF, 0));
    assert_eq!(pixel(&v, 2, 0), rgb(0, 0, 0xFF));
    assert_eq!(pixel(&v, 3, 0), rgb(e5(0x10), e6(0x20), e5(0x10)));
    assert_eq!(pixel(&v, 768, 40), rgb(0xFF, 0xFF, 0xFF));
    assert_eq!(v.framebuffer().lock().width(), 800);
}

#[test]
fn vbe_8_15_and_24_bpp() {
    let mut v = vga();
    vbe_mode(&mut v, 320, 200, 8);
    dac_set(&mut v, 7, [0x3F, 0x20, 0x00]);
    v.bar_write(LFB_BAR, 321, &[7]);
    v.render(0);
    assert_eq!(pixel(&v, 1, 1), dac6([0x3F, 0x20, 0x00]));
    // 8-bit DAC.
    dispi(
        &mut v,
        dispi::INDEX_ENABLE,
        dispi::ENABLED | dispi::DAC_8BIT,
    );
    dac_set(&mut v, 7, [0x12, 0x34, 0x56]);
    v.render(0);
    assert_eq!(pixel(&v, 1, 1), rgb(0x12, 0x34, 0x56));

    vbe_mode(&mut v, 320, 200, 15);
    v.bar_write(LFB_BAR, 2, &0x7C1Fu16.to_le_bytes());
    v.render(0);
    assert_eq!(pixel(&v, 1, 0), rgb(0xFF, 0, 0xFF));

    vbe_mode(&mut v, 320, 200, 24);
    v.bar_write(LFB_BAR, 3 * 321, &[0x01, 0x02, 0x03]);
    v.render(0);
    assert_eq!(pixel(&v, 1, 1), rgb(0x03, 0x02, 0x01));
    assert_eq!(v.mode().to_string(), "VBE graphics 320x200x24");
}

#[test]
fn vbe_values_are_corrected() {
    let mut v = vga();
    dispi(&mut v, dispi::INDEX_XRES, 0xFFFF);
    assert_eq!(
        dispi_read(&mut v, dispi::INDEX_XRES),
        0xFFFF,
        "stored raw while disabled"
    );
    dispi(&mut v, dispi::INDEX_BPP, 7);
    dispi(&mut v, dispi::INDEX_YRES, 0xFFFF);
    dispi(
        &mut v,
        dispi::INDEX_ENABLE,
        dispi::ENABLED | dispi::NOCLEARMEM,
    );
    assert_eq!(dispi_read(&mut v, dispi::INDEX_XRES), dispi::MAX_XRES);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_BPP), 8);
    let max_y = (VRAM_SIZE / usize::from(dispi::MAX_XRES)) as u16;
    assert_eq!(dispi_read(&mut v, dispi::INDEX_YRES), max_y);
    dispi(&mut v, dispi::INDEX_XRES, 13);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_XRES), 8);
    dispi(&mut v, dispi::INDEX_XRES, 1024);
    dispi(&mut v, dispi::INDEX_YRES, 0);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_YRES), 1);
    dispi(&mut v, dispi::INDEX_YRES, 768);
    dispi(&mut v, dispi::INDEX_Y_OFFSET, 60000);
    assert_eq!(
        dispi_read(&mut v, dispi::INDEX_Y_OFFSET),
        0,
        "does not fit: reset"
    );
    dispi(&mut v, dispi::INDEX_Y_OFFSET, 100);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_Y_OFFSET), 100);
    dispi(&mut v, dispi::INDEX_BANK, 0x1234);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_BANK), 0x34);
    outw(&mut v, VBE_DISPI_INDEX_PORT, 0x55);
    assert_eq!(inw(&mut v, VBE_DISPI_INDEX_PORT), 0x55);
    assert_eq!(inw(&mut v, VBE_DISPI_DATA_PORT), 0);
    outw(&mut v, VBE_DISPI_DATA_PORT, 0x1234);
    v.render(0);
    // A mode that does not fit the framebuffer cap is cut, not refused.
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x20);
    dispi(&mut v, dispi::INDEX_XRES, dispi::MAX_XRES);
    dispi(&mut v, dispi::INDEX_YRES, dispi::MAX_YRES);
    v.render(0);
    let fb = v.framebuffer();
    let (w, h) = {
        let f = fb.lock();
        (f.width(), f.height())
    };
    assert_eq!(w, u32::from(dispi::MAX_XRES));
    assert!(w * h <= render::MAX_PIXELS);
}

/// Loads 8×16 glyphs into font map 0 of plane 2 the way a BIOS does.
fn load_glyphs(v: &mut StdVga, glyphs: &[(u8, [u8; 16])]) {
    seq(v, 2, 0x04);
    seq(v, 4, 0x07);
    gfx(v, 4, 0x02);
    gfx(v, 5, 0x00);
    gfx(v, 6, 0x04);
    for (ch, rows) in glyphs {
        for (i, &r) in rows.iter().enumerate() {
            memw(v, 0xA0000 + u64::from(*ch) * 32 + i as u64, r);
        }
    }
    seq(v, 2, 0x03);
    seq(v, 4, 0x02);
    gfx(v, 4, 0x00);
    gfx(v, 5, 0x10);
    gfx(v, 6, 0x0E);
}

const GLYPH_A: [u8; 16] = [
    0x00, 0x00, 0x10, 0x38, 0x6C, 0xC6, 0xC6, 0xFE, 0xC6, 0xC6, 0xC6, 0xC6, 0x00, 0x00, 0x81, 0xFF,
];
const GLYPH_LINE: [u8; 16] = [0x01; 16];

fn text_vga() -> StdVga {
    let mut v = vga();
    set_mode(&mut v, &MODE_03);
    for (i, c) in [
        (0u8, [0, 0, 0]),
        (1, [0, 0, 0x2A]),
        (7, [0x2A, 0x2A, 0x2A]),
        (0x39, [0x15, 0x15, 0x3F]),
        (0x3E, [0x3F, 0x3F, 0x15]),
    ] {
        dac_set(&mut v, i, c);
    }
    load_glyphs(&mut v, &[(b'A', GLYPH_A), (0xC4, GLYPH_LINE)]);
    v
}

fn text_color(attr_index: u8) -> [u8; 4] {
    let dac = MODE_03.attr[usize::from(attr_index)];
    let c = match dac {
        0 => [0, 0, 0],
        1 => [0, 0, 0x2A],
        7 => [0x2A, 0x2A, 0x2A],
        0x39 => [0x15, 0x15, 0x3F],
        0x3E => [0x3F, 0x3F, 0x15],
        _ => panic!("colour {attr_index} not programmed"),
    };
    dac6(c)
}

/// Checks one 9×16 cell against a glyph.
fn assert_cell(
    v: &StdVga,
    col: u32,
    row: u32,
    glyph: &[u8; 16],
    fg: [u8; 4],
    bg: [u8; 4],
    ninth: bool,
) {
    for y in 0..16 {
        for x in 0..9 {
            let on = if x < 8 {
                glyph[y as usize] >> (7 - x) & 1 != 0
            } else {
                ninth && glyph[y as usize] & 1 != 0
            };
            let want = if on { fg } else { bg };
            assert_eq!(
                pixel(v, col * 9 + x, row * 16 + y),
                want,
                "cell {col},{row} at {x},{y}"
            );
        }
    }
}

#[test]
fn text_mode_renders_glyphs_line_graphics_cursor_and_blink() {
    let mut v = text_vga();
    let cell = |v: &mut StdVga, col: u64, row: u64, ch: u8, attr: u8| {
        let a = 0xB8000 + (row * 80 + col) * 2;
        memw(v, a, ch);
        memw(v, a + 1, attr);
    };
    cell(&mut v, 0, 0, b'A', 0x1E);
    cell(&mut v, 1, 0, 0xC4, 0x07);
    cell(&mut v, 2, 0, b'A', 0x9E);
    cell(&mut v, 5, 0, b' ', 0x07);
    // Cursor on cell 5, scan lines 13–14.
    crtc(&mut v, 0x0E, 0);
    crtc(&mut v, 0x0F, 5);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Text {
            columns: 80,
            rows: 25,
            width: 720,
            height: 400
        }
    );
    assert_cell(&v, 0, 0, &GLYPH_A, text_color(0xE), text_color(1), false);
    // 0xC4 is a line-drawing character: column 8 repeats into column 9.
    assert_cell(&v, 1, 0, &GLYPH_LINE, text_color(7), text_color(0), true);
    // Blinking character, visible phase; the background uses three bits.
    assert_cell(&v, 2, 0, &GLYPH_A, text_color(0xE), text_color(1), false);
    let mut cursor = [0u8; 16];
    cursor[13] = 0xFF;
    cursor[14] = 0xFF;
    assert_cell(&v, 5, 0, &cursor, text_color(7), text_color(0), true);
    for x in 0..9 {
        assert_eq!(
            pixel(&v, 5 * 9 + x, 13),
            text_color(7),
            "cursor covers the ninth column"
        );
    }

    // Cursor off phase: only the cursor cell changes.
    take_dirty(&v);
    v.render(CURSOR_HALF_PERIOD_NS);
    assert_cell(&v, 5, 0, &[0; 16], text_color(7), text_color(0), false);
    assert_eq!(take_dirty(&v), vec![Rect::new(45, 0, 9, 16)]);
    // Blink off phase: the blinking character shows only its background.
    v.render(BLINK_HALF_PERIOD_NS);
    assert_cell(&v, 2, 0, &[0; 16], text_color(0xE), text_color(1), false);
    assert_cell(&v, 0, 0, &GLYPH_A, text_color(0xE), text_color(1), false);
    // Blink disabled: bit 7 brightens the background instead.
    attr(&mut v, 0x10, 0x04);
    v.render(BLINK_HALF_PERIOD_NS);
    assert_cell(&v, 2, 0, &GLYPH_A, text_color(0xE), text_color(9), false);
    // 8-dot cells.
    seq(&mut v, 1, 0x01);
    v.render(0);
    assert_eq!(v.framebuffer().lock().width(), 640);
    assert_eq!(pixel(&v, 8 + 7, 0), text_color(7), "cell 1 starts at x=8");
    // A cursor shape change redraws the cursor cell: now a full block.
    seq(&mut v, 1, 0x00);
    v.render(0);
    take_dirty(&v);
    crtc(&mut v, 0x0A, 0x00);
    crtc(&mut v, 0x0B, 0x0F);
    v.render(0);
    assert_cell(&v, 5, 0, &[0xFF; 16], text_color(7), text_color(0), true);
    assert_eq!(take_dirty(&v), vec![Rect::new(45, 0, 9, 16)]);
    // Cursor disabled through CR0A bit 5.
    crtc(&mut v, 0x0A, 0x2D);
    v.render(0);
    assert_cell(&v, 5, 0, &[0; 16], text_color(7), text_color(0), false);
}

#[test]
fn text_rows_follow_max_scan_line_and_font_maps() {
    let mut v = text_vga();
    crtc(&mut v, 0x11, 0x0E); // unprotect CR00–CR07
                              // 8-line characters: 400 / 8 = 50 rows.
    crtc(&mut v, 0x09, 0x47);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Text {
            columns: 80,
            rows: 50,
            width: 720,
            height: 400
        }
    );
    // 14-line characters with a 350-line display: 25 rows; 43 rows with 8 lines.
    crtc(&mut v, 0x09, 0x4D);
    crtc(&mut v, 0x12, 0x5D);
    crtc(&mut v, 0x07, 0x1F);
    assert!(matches!(v.mode(), DisplayMode::Text { rows: 25, .. }));
    crtc(&mut v, 0x09, 0x47);
    assert!(matches!(v.mode(), DisplayMode::Text { rows: 43, .. }));
    // 40 columns with the halved dot clock: 18-pixel cells.
    crtc(&mut v, 0x09, 0x4F);
    crtc(&mut v, 0x12, 0x8F);
    crtc(&mut v, 0x01, 0x27);
    seq(&mut v, 1, 0x08);
    assert_eq!(
        v.mode(),
        DisplayMode::Text {
            columns: 40,
            rows: 25,
            width: 720,
            height: 400
        }
    );
    seq(&mut v, 1, 0x00);
    crtc(&mut v, 0x01, 0x4F);

    // Attribute bit 3 picks map A (SR3 bits 5,3,2); map 1 lives at plane-2 offset 16 KiB.
    memw(&mut v, 0xB8000, b'A');
    memw(&mut v, 0xB8001, 0x0F);
    seq(&mut v, 3, 0x04);
    seq(&mut v, 2, 0x04);
    seq(&mut v, 4, 0x07);
    gfx(&mut v, 4, 0x02);
    gfx(&mut v, 5, 0x00);
    gfx(&mut v, 6, 0x04);
    for i in 0..16 {
        memw(&mut v, 0xA0000 + 0x4000 + u64::from(b'A') * 32 + i, 0xF0);
    }
    seq(&mut v, 2, 0x03);
    seq(&mut v, 4, 0x02);
    gfx(&mut v, 5, 0x10);
    gfx(&mut v, 6, 0x0E);
    dac_set(&mut v, 0x3F, [0x3F, 0x3F, 0x3F]);
    v.render(0);
    let white = dac6([0x3F, 0x3F, 0x3F]);
    assert_eq!(pixel(&v, 0, 0), white);
    assert_eq!(pixel(&v, 4, 0), text_color(0));
    // Attribute bit 3 clear: map B (map 0), the original glyph.
    memw(&mut v, 0xB8001, 0x07);
    v.render(0);
    assert_eq!(pixel(&v, 0, 0), text_color(0));
    assert_eq!(pixel(&v, 3, 2), text_color(7));
}

#[test]
fn text_screen_reads_characters() {
    let mut v = text_vga();
    let msg = "SeaBIOS (version 1.16)";
    for (i, b) in msg.bytes().enumerate() {
        memw(&mut v, 0xB8000 + 3 * 160 + i as u64 * 2, b);
    }
    memw(&mut v, 0xB8000 + 4 * 160, 0xC9);
    memw(&mut v, 0xB8000 + 4 * 160 + 2, 0x01);
    let screen = v.text_screen().expect("text mode");
    assert_eq!(screen.len(), 25);
    assert_eq!(screen[3].chars().count(), 80);
    assert!(screen[3].starts_with(msg));
    assert!(screen[4].starts_with("╔☺"));
    assert!(screen.iter().any(|l| l.contains("SeaBIOS")));
    // Start address scrolls.
    crtc(&mut v, 0x0C, 0);
    crtc(&mut v, 0x0D, 80 * 3);
    assert!(v.text_screen().unwrap()[0].starts_with("SeaBIOS"));
    set_mode(&mut v, &MODE_13);
    assert_eq!(v.text_screen(), None);
}

#[test]
fn dirty_tracking_reports_only_what_changed() {
    // VBE: one pixel.
    let mut v = vga();
    vbe_mode(&mut v, 640, 480, 32);
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(0, 0, 640, 480)]);
    v.render(0);
    assert!(take_dirty(&v).is_empty(), "nothing written, nothing dirty");
    v.bar_write(LFB_BAR, (200 * 640 + 100) * 4, &[1, 2, 3, 0]);
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(100, 200, 1, 1)]);
    // Writing the same value again redraws the line but reports nothing.
    v.bar_write(LFB_BAR, (200 * 640 + 100) * 4, &[1, 2, 3, 0]);
    v.render(0);
    assert!(take_dirty(&v).is_empty());
    // A small rectangle.
    for y in 10..20u64 {
        for x in 30..40u64 {
            v.bar_write(LFB_BAR, (y * 640 + x) * 4, &[0xFF, 0, 0, 0]);
        }
    }
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(30, 10, 10, 10)]);

    // Mode 13h: one byte is a 2×2 block.
    let mut v = vga();
    set_mode(&mut v, &MODE_13);
    dac_set(&mut v, 1, [0x3F, 0x3F, 0x3F]);
    v.render(0);
    take_dirty(&v);
    memw(&mut v, 0xA0000 + 50 * 320 + 7, 1);
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(14, 100, 2, 2)]);

    // Text: one cell.
    let mut v = text_vga();
    crtc(&mut v, 0x0A, 0x20);
    v.render(0);
    take_dirty(&v);
    memw(&mut v, 0xB8000 + 3 * 160 + 10 * 2, b'A');
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(90, 48, 9, 16)]);
    // A font change redraws the whole screen.
    load_glyphs(&mut v, &[(b'B', GLYPH_A)]);
    v.render(0);
    assert_eq!(take_dirty(&v), vec![Rect::new(0, 0, 720, 400)]);
}

#[test]
fn blanking_reset_and_poll() {
    let mut v = text_vga();
    v.render(0);
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x00); // palette address source off
    assert_eq!(v.mode(), DisplayMode::Blank);
    v.render(0);
    assert_eq!(pixel(&v, 0, 0), rgb(0, 0, 0));
    assert!(
        v.text_screen().is_some(),
        "text is still readable while blanked"
    );
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x20);
    seq(&mut v, 1, 0x20);
    assert_eq!(v.mode(), DisplayMode::Blank, "SR1 screen off");
    seq(&mut v, 1, 0x00);

    assert_eq!(Poll::poll(&mut v, 1_000), Some(1_000 + FRAME_INTERVAL_NS));
    Device::reset(&mut v);
    assert_eq!(v.mode(), DisplayMode::Blank);
    assert_eq!(inb(&mut v, 0x3CC), 0);
    assert_eq!(dispi_read(&mut v, dispi::INDEX_ID), dispi::ID5);
    let mut b = [0u8; 4];
    v.config_read(0x10, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x0000_0008);
}

#[test]
fn mode_0dh_doubles_pixels_and_lines_and_mode_10h_is_640x350() {
    let mode_0d = ModeRegs {
        misc: 0x63,
        seq: [0x09, 0x0F, 0x00, 0x06],
        crtc: [
            0x2D, 0x27, 0x28, 0x90, 0x2B, 0x80, 0xBF, 0x1F, 0x00, 0xC0, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x9C, 0x8E, 0x8F, 0x14, 0x00, 0x96, 0xB9, 0xE3, 0xFF,
        ],
        attr: [
            0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
            0x16, 0x17, 0x01, 0x00, 0x0F, 0x00,
        ],
        gfx: [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF],
    };
    let mut v = vga();
    set_mode(&mut v, &mode_0d);
    dac_set(&mut v, 0x11, [0x3F, 0x00, 0x00]);
    // Pixel (1, 1) in colour 9 (AR9 = 0x11): 40 bytes per line.
    gfx(&mut v, 5, 0x02);
    gfx(&mut v, 8, 0x40);
    memr(&mut v, 0xA0000 + 40);
    memw(&mut v, 0xA0000 + 40, 9);
    v.render(0);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 400,
            bpp: 4,
            vbe: false
        }
    );
    for (x, y) in [(2, 2), (3, 2), (2, 3), (3, 3)] {
        assert_eq!(pixel(&v, x, y), dac6([0x3F, 0, 0]), "({x},{y})");
    }
    for (x, y) in [(1, 2), (4, 2), (2, 1), (2, 4)] {
        assert_eq!(pixel(&v, x, y), dac6([0, 0, 0]), "({x},{y})");
    }
    // Horizontal panning by one pixel moves it left (two screen pixels when doubled).
    attr(&mut v, 0x13, 1);
    v.render(0);
    assert_eq!(pixel(&v, 0, 2), dac6([0x3F, 0, 0]));
    assert_eq!(pixel(&v, 2, 2), dac6([0, 0, 0]));

    let mut m10 = mode_0d;
    m10.misc = 0xA3;
    m10.seq = [0x01, 0x0F, 0x00, 0x06];
    m10.crtc = [
        0x5F, 0x4F, 0x50, 0x82, 0x54, 0x80, 0xBF, 0x1F, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x83, 0x85, 0x5D, 0x28, 0x0F, 0x63, 0xBA, 0xE3, 0xFF,
    ];
    m10.attr = MODE_12.attr;
    set_mode(&mut v, &m10);
    assert_eq!(
        v.mode(),
        DisplayMode::Graphics {
            width: 640,
            height: 350,
            bpp: 4,
            vbe: false
        }
    );
}

// ---- saved state ------------------------------------------------------------------------

use crate::saved_state::{RestoreError, SaveRestore, SavedState};

/// Every register the guest reads through the ports, read in the same order on any VGA
/// (leaves the attribute flip-flop reset and the DAC read index moved).
fn register_dump(v: &mut StdVga) -> Vec<u16> {
    let mut d: Vec<u16> = Vec::new();
    let ports = [
        0x3C0, 0x3C2, 0x3C4, 0x3C6, 0x3C7, 0x3C8, 0x3CA, 0x3CC, 0x3CE, 0x3D4,
    ];
    d.extend(ports.iter().map(|&p| u16::from(inb(v, p))));
    d.extend((0..8).map(|i| u16::from(seq_read(v, i))));
    d.extend((0..0x19).map(|i| u16::from(crtc_read(v, i))));
    d.extend((0..16).map(|i| u16::from(gfx_read(v, i))));
    d.extend((0..0x15).map(|i| u16::from(attr_read(v, i))));
    d.extend((0..=dispi::INDEX_VIDEO_MEMORY_64K).map(|i| dispi_read(v, i)));
    outb(v, 0x3C7, 0);
    d.extend((0..768).map(|_| u16::from(inb(v, 0x3C9))));
    d
}

fn frame(v: &StdVga) -> (u32, u32, Vec<u8>) {
    let fb = v.framebuffer();
    let fb = fb.lock();
    (fb.width(), fb.height(), fb.pixels().to_vec())
}

/// Mode 12h with a programmed palette, planar content, loaded latches, a DAC write one
/// component in and the attribute flip-flop waiting for a data byte.
fn planar_snapshot_vga(clock: &ManualClock) -> StdVga {
    let mut v = planar_vga().with_clock(Arc::new(clock.clone()));
    for i in 0..16u8 {
        dac_set(
            &mut v,
            MODE_12.attr[usize::from(i)],
            [i * 4, 63 - i * 4, i * 2],
        );
    }
    gfx(&mut v, 5, 0x02);
    for y in 0..480u64 {
        let addr = VGA_WINDOW_BASE + y * 80 + (y % 80);
        gfx(&mut v, 8, 0xFF >> (y % 8));
        memr(&mut v, addr);
        memw(&mut v, addr, (y % 16) as u8);
    }
    gfx(&mut v, 5, 0x00);
    gfx(&mut v, 8, 0xFF);
    memr(&mut v, VGA_WINDOW_BASE + 80 * 7 + 7);
    v.render(0);
    outb(&mut v, 0x3C8, 0x40);
    outb(&mut v, 0x3C9, 0x11);
    gfx(&mut v, 5, 0x01);
    inb(&mut v, 0x3DA);
    outb(&mut v, 0x3C0, 0x32);
    v
}

#[test]
fn saved_state_round_trip_mode_12h() {
    let clock_a = ManualClock::new();
    clock_a.set(12_345_678);
    let mut a = planar_snapshot_vga(&clock_a);
    let saved = a.save();
    assert_eq!(saved.device, "vga");
    let clock_b = ManualClock::new();
    clock_b.set(987_654_321_000);
    let mut b = vga().with_clock(Arc::new(clock_b.clone()));
    b.render(0);
    b.restore(&saved).unwrap();
    assert_eq!(b.save(), saved, "saving the restored device");
    assert_eq!(b.mode(), a.mode());
    assert_eq!(b.vram.bytes, a.vram.bytes);
    assert_eq!(b.vram.latch(), a.vram.latch());

    // The restored VGA redraws everything and draws the same picture.
    a.render(5);
    b.render(5);
    assert!(b.framebuffer().lock().is_full_dirty());
    assert_eq!(frame(&a), frame(&b));
    // Retrace bits follow the same phase while both clocks run.
    let retrace = |v: &mut StdVga, c: &ManualClock| -> Vec<u8> {
        (0..64)
            .map(|_| {
                c.advance(260_000);
                inb(v, 0x3DA)
            })
            .collect()
    };
    let ra = retrace(&mut a, &clock_a);
    assert_eq!(ra, retrace(&mut b, &clock_b));
    assert!(ra.contains(&0x09) && ra.contains(&0x00));
    // The flip-flop was reset by those reads; the half-written DAC entry and the latches
    // (write mode 1 copies them) carry on the same way.
    for v in [&mut a, &mut b] {
        outb(v, 0x3C9, 0x22);
        outb(v, 0x3C9, 0x33);
        memw(v, VGA_WINDOW_BASE + 80 * 300, 0);
        gfx(v, 5, 0x00);
        v.render(10);
    }
    assert_eq!(frame(&a), frame(&b));
    assert_eq!(register_dump(&mut a), register_dump(&mut b));
    outb(&mut b, 0x3C7, 0x40);
    assert_eq!([0x3C9; 3].map(|p| inb(&mut b, p)), [0x11, 0x22, 0x33]);
}

#[test]
fn saved_state_round_trip_vbe_1024x768x32() {
    let mut a = vga();
    vbe_mode(&mut a, 1024, 768, 32);
    for y in (0..768u64).step_by(7) {
        let line: Vec<u8> = (0..1024u64 * 4).map(|i| (i ^ y) as u8).collect();
        a.bar_write(LFB_BAR, y * 4096, &line);
    }
    // Through the banked window too.
    dispi(&mut a, dispi::INDEX_BANK, 40);
    memw(&mut a, VGA_WINDOW_BASE + 0x1234, 0xAB);
    a.render(0);
    let saved = a.save();
    let mut b = vga();
    b.restore(&saved).unwrap();
    assert_eq!(b.save(), saved, "saving the restored device");
    assert_eq!(b.mode(), a.mode());
    a.render(0);
    b.render(0);
    assert_eq!(frame(&a), frame(&b));
    assert_eq!(frame(&b).0, 1024);
    assert_eq!(memr(&mut b, VGA_WINDOW_BASE + 0x1234), 0xAB, "bank kept");
    // Panning goes on the same way.
    for v in [&mut a, &mut b] {
        dispi(v, dispi::INDEX_Y_OFFSET, 3);
        v.render(0);
    }
    assert_eq!(frame(&a), frame(&b));
    assert_eq!(register_dump(&mut a), register_dump(&mut b));
}

#[test]
fn saved_state_refusals() {
    let clock = ManualClock::new();
    let saved = planar_snapshot_vga(&clock).save();
    let mut fresh = vga();
    let mut other = saved.clone();
    other.version = 3;
    assert!(matches!(
        fresh.restore(&other),
        Err(RestoreError::Version { found: 3, .. })
    ));
    let mut cut = saved.clone();
    cut.data.truncate(cut.data.len() - 5000);
    assert!(matches!(
        fresh.restore(&cut),
        Err(RestoreError::Corrupt { .. })
    ));
    let foreign = SavedState {
        device: "piix3-ide".into(),
        ..saved.clone()
    };
    assert!(matches!(
        fresh.restore(&foreign),
        Err(RestoreError::WrongDevice { .. })
    ));
    let tamper = |f: &dyn Fn(&mut save::VgaStateV1)| {
        let mut s: save::VgaStateV1 = postcard::from_bytes(&saved.data).unwrap();
        f(&mut s);
        crate::saved_state::encode(save::DEVICE, save::VERSION, &s)
    };
    let e = fresh
        .restore(&tamper(&|s| s.vram_size = 8 << 20))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the saved state of vga is damaged: video memory of 8388608 bytes, this VGA has 16777216"
    );
    for bad in [
        tamper(&|s| s.vram_pages[0].index = 1 << 20),
        tamper(&|s| s.vram_pages[0].bytes.0.push(0)),
        tamper(&|s| s.regs.dac.sub_index = 3),
        tamper(&|s| s.regs.sr_index = 9),
        tamper(&|s| s.vbe.regs[usize::from(dispi::INDEX_BANK)] = 999),
    ] {
        assert!(matches!(
            fresh.restore(&bad),
            Err(RestoreError::Corrupt { .. })
        ));
    }
    // A mode's registers that do not follow from each other.
    let mut v = vga();
    vbe_mode(&mut v, 640, 480, 32);
    let vbe_saved = v.save();
    let mut s: save::VgaStateV1 = postcard::from_bytes(&vbe_saved.data).unwrap();
    s.vbe.line_offset = 1;
    let bad = crate::saved_state::encode(save::DEVICE, save::VERSION, &s);
    assert!(matches!(
        fresh.restore(&bad),
        Err(RestoreError::Corrupt { .. })
    ));
    // The refused VGA still works as a fresh one.
    assert_eq!(register_dump(&mut fresh), register_dump(&mut vga()));
    set_mode(&mut fresh, &MODE_12);
    fresh.render(0);
    assert_eq!(fresh.mode(), planar_vga().mode());
}
