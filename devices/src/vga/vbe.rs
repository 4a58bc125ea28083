//! The Bochs VBE "DISPI" interface: an index register at port 0x1CE and a 16-bit data
//! register at 0x1CF that select a linear-framebuffer video mode (SeaBIOS's VBE, Linux's
//! bochs-drm and Windows' Bochs drivers program it).
//!
//! Guest values are corrected the way QEMU does (there is no way to report an error): the
//! depth falls back to 8 bpp, widths round down to multiples of 8, the height, virtual size and
//! panning offsets shrink until the visible picture fits in video memory, and the bank number
//! wraps at the number of 64 KiB banks.

use super::memory::{Vram, WindowMode, VRAM_SIZE};
use super::registers::{cr, gr, Registers};

/// DISPI register indices and bits.
pub mod dispi {
    /// Interface ID (reads 0xB0C5 after reset; B0C0–B0C5 may be written).
    pub const INDEX_ID: u16 = 0x0;
    /// Horizontal resolution.
    pub const INDEX_XRES: u16 = 0x1;
    /// Vertical resolution.
    pub const INDEX_YRES: u16 = 0x2;
    /// Bits per pixel: 4, 8, 15, 16, 24 or 32.
    pub const INDEX_BPP: u16 = 0x3;
    /// Enable and flag bits.
    pub const INDEX_ENABLE: u16 = 0x4;
    /// 64 KiB bank shown in the legacy window at 0xA0000.
    pub const INDEX_BANK: u16 = 0x5;
    /// Virtual (scan line) width in pixels.
    pub const INDEX_VIRT_WIDTH: u16 = 0x6;
    /// Virtual height: how many lines of the virtual width fit in video memory (read-only).
    pub const INDEX_VIRT_HEIGHT: u16 = 0x7;
    /// Horizontal panning offset in pixels.
    pub const INDEX_X_OFFSET: u16 = 0x8;
    /// Vertical panning offset in lines.
    pub const INDEX_Y_OFFSET: u16 = 0x9;
    /// Video memory size in 64 KiB units (read-only).
    pub const INDEX_VIDEO_MEMORY_64K: u16 = 0xA;
    /// Number of ordinary registers (0–9).
    pub const INDEX_COUNT: usize = 10;

    /// Oldest interface ID.
    pub const ID0: u16 = 0xB0C0;
    /// Newest interface ID (the reset value).
    pub const ID5: u16 = 0xB0C5;

    /// ENABLE: the VBE mode is on.
    pub const ENABLED: u16 = 0x01;
    /// ENABLE: XRES, YRES and BPP read their maximums.
    pub const GETCAPS: u16 = 0x02;
    /// ENABLE: the DAC takes 8-bit components.
    pub const DAC_8BIT: u16 = 0x20;
    /// ENABLE: the linear framebuffer is in use (informational).
    pub const LFB_ENABLED: u16 = 0x40;
    /// ENABLE: do not clear video memory when enabling.
    pub const NOCLEARMEM: u16 = 0x80;

    /// Largest horizontal resolution.
    pub const MAX_XRES: u16 = 16000;
    /// Largest vertical resolution.
    pub const MAX_YRES: u16 = 12000;
    /// Largest depth.
    pub const MAX_BPP: u16 = 32;
}

use dispi::*;

/// The DISPI registers and the geometry derived from them.
#[derive(Debug, Clone)]
pub(crate) struct Vbe {
    pub index: u16,
    regs: [u16; INDEX_COUNT],
    line_offset: u32,
    start: u32,
}

impl Default for Vbe {
    fn default() -> Self {
        let mut regs = [0; INDEX_COUNT];
        regs[usize::from(INDEX_ID)] = ID5;
        Self {
            index: 0,
            regs,
            line_offset: 0,
            start: 0,
        }
    }
}

impl Vbe {
    /// The ten ordinary DISPI registers, the pitch and the start offset, for saved state.
    pub fn saved_parts(&self) -> ([u16; INDEX_COUNT], u32, u32) {
        (self.regs, self.line_offset, self.start)
    }

    /// Rebuilds the interface from [`Self::saved_parts`] and the index register, or `None`
    /// when the values are not ones the interface can hold: an ID outside B0C0–B0C5, a bank
    /// past the end of video memory, or (while a mode is on) registers that are not in range
    /// or a pitch and start that do not follow from them.
    pub fn from_saved(
        index: u16,
        regs: [u16; INDEX_COUNT],
        line_offset: u32,
        start: u32,
    ) -> Option<Self> {
        let v = Self {
            index,
            regs,
            line_offset,
            start,
        };
        let banks = (VRAM_SIZE >> 16) as u16;
        if !(ID0..=ID5).contains(&v.reg(INDEX_ID)) || v.reg(INDEX_BANK) >= banks {
            return None;
        }
        if v.enabled() {
            let mut fixed = v.clone();
            fixed.fixup();
            let same = fixed.regs == v.regs
                && fixed.line_offset == v.line_offset
                && fixed.start == v.start;
            if !same {
                return None;
            }
        }
        Some(v)
    }

    fn reg(&self, index: u16) -> u16 {
        self.regs[usize::from(index)]
    }

    fn set(&mut self, index: u16, value: u16) {
        self.regs[usize::from(index)] = value;
    }

    /// True while a VBE mode is on.
    pub fn enabled(&self) -> bool {
        self.reg(INDEX_ENABLE) & ENABLED != 0
    }

    /// Depth as programmed (valid while enabled: 4, 8, 15, 16, 24 or 32).
    pub fn bpp(&self) -> u16 {
        self.reg(INDEX_BPP)
    }

    /// Visible width in pixels.
    pub fn xres(&self) -> u32 {
        u32::from(self.reg(INDEX_XRES))
    }

    /// Visible height in lines.
    pub fn yres(&self) -> u32 {
        u32::from(self.reg(INDEX_YRES))
    }

    /// Bytes from one line to the next.
    pub fn line_offset(&self) -> u32 {
        self.line_offset
    }

    /// Byte offset of the first visible pixel.
    pub fn start(&self) -> u32 {
        self.start
    }

    /// How the legacy window reaches VRAM.
    pub fn window_mode(&self) -> WindowMode {
        if !self.enabled() {
            return WindowMode::VGA;
        }
        let bank = u32::from(self.reg(INDEX_BANK)) << 16;
        if self.bpp() == 4 {
            WindowMode::Planar {
                bank,
                mask: (VRAM_SIZE / 4 - 1) as u32,
            }
        } else {
            WindowMode::Linear(bank as usize)
        }
    }

    /// Reads the data register.
    pub fn read_data(&self) -> u16 {
        match self.index {
            INDEX_XRES if self.reg(INDEX_ENABLE) & GETCAPS != 0 => MAX_XRES,
            INDEX_YRES if self.reg(INDEX_ENABLE) & GETCAPS != 0 => MAX_YRES,
            INDEX_BPP if self.reg(INDEX_ENABLE) & GETCAPS != 0 => MAX_BPP,
            i if usize::from(i) < INDEX_COUNT => self.reg(i),
            INDEX_VIDEO_MEMORY_64K => (VRAM_SIZE >> 16) as u16,
            _ => 0,
        }
    }

    /// Writes the data register. Enabling a mode reprograms the VGA registers QEMU touches
    /// (graphics mode, 64 KiB window, pitch, size) and clears the visible memory unless
    /// NOCLEARMEM is set; the ENABLE write also selects the DAC width.
    pub fn write_data(&mut self, value: u16, regs: &mut Registers, vram: &mut Vram) {
        match self.index {
            INDEX_ID if (ID0..=ID5).contains(&value) => self.set(INDEX_ID, value),
            INDEX_XRES | INDEX_YRES | INDEX_BPP | INDEX_VIRT_WIDTH | INDEX_X_OFFSET
            | INDEX_Y_OFFSET => {
                self.set(self.index, value);
                self.fixup();
                self.program_vga(regs);
            }
            INDEX_BANK => {
                let banks = (VRAM_SIZE >> 16) as u16;
                self.set(INDEX_BANK, value & (banks - 1));
            }
            INDEX_ENABLE => {
                if value & ENABLED != 0 && !self.enabled() {
                    self.set(INDEX_VIRT_WIDTH, 0);
                    self.set(INDEX_X_OFFSET, 0);
                    self.set(INDEX_Y_OFFSET, 0);
                    self.set(INDEX_ENABLE, self.reg(INDEX_ENABLE) | ENABLED);
                    self.fixup();
                    self.program_vga(regs);
                    if value & NOCLEARMEM == 0 {
                        let len = (self.yres() as usize * self.line_offset as usize).min(VRAM_SIZE);
                        vram.bytes[..len].fill(0);
                        vram.mark(0, len);
                    }
                    tracing::debug!(
                        xres = self.xres(),
                        yres = self.yres(),
                        bpp = self.bpp(),
                        "vga: VBE mode enabled"
                    );
                }
                regs.dac.eight_bit = value & DAC_8BIT != 0;
                self.set(INDEX_ENABLE, value);
            }
            _ => {}
        }
    }

    /// Brings the registers into range (only while enabled, like QEMU) and derives the pitch
    /// and start offset.
    fn fixup(&mut self) {
        if !self.enabled() {
            return;
        }
        let bits: u32 = match self.bpp() {
            b @ (4 | 8 | 16 | 24 | 32) => u32::from(b),
            15 => 16,
            _ => {
                self.set(INDEX_BPP, 8);
                8
            }
        };
        let xres = (self.reg(INDEX_XRES) & !7).clamp(8, MAX_XRES);
        self.set(INDEX_XRES, xres);
        let virt_width = (self.reg(INDEX_VIRT_WIDTH) & !7).min(MAX_XRES).max(xres);
        self.set(INDEX_VIRT_WIDTH, virt_width);

        let vram = VRAM_SIZE as u32;
        let line = u32::from(virt_width) * bits / 8;
        let max_y = vram / line;
        let yres = u32::from(self.reg(INDEX_YRES))
            .clamp(1, u32::from(MAX_YRES))
            .min(max_y);
        self.set(INDEX_YRES, yres as u16);

        let x = self.reg(INDEX_X_OFFSET).min(MAX_XRES);
        let y = self.reg(INDEX_Y_OFFSET).min(MAX_YRES);
        self.set(INDEX_X_OFFSET, x);
        self.set(INDEX_Y_OFFSET, y);
        let mut offset = u32::from(x) * bits / 8 + u32::from(y) * line;
        if offset + yres * line > vram {
            self.set(INDEX_Y_OFFSET, 0);
            offset = u32::from(x) * bits / 8;
            if offset + yres * line > vram {
                self.set(INDEX_X_OFFSET, 0);
                offset = 0;
            }
        }
        self.set(INDEX_VIRT_HEIGHT, max_y.min(u32::from(u16::MAX)) as u16);
        self.line_offset = line;
        self.start = offset;
    }

    /// Sets the VGA registers a VBE mode implies, so that they read back consistently and the
    /// legacy window decodes the 64 KiB bank at 0xA0000.
    fn program_vga(&self, regs: &mut Registers) {
        if !self.enabled() {
            return;
        }
        regs.gr[gr::MISC] = (regs.gr[gr::MISC] & !0x0C) | 0x05;
        regs.cr[cr::MODE] |= 0x03;
        regs.cr[cr::OFFSET] = (self.line_offset >> 3) as u8;
        regs.cr[cr::H_DISP_END] = ((self.xres() >> 3).max(1) - 1) as u8;
        let h = self.yres().max(1) - 1;
        regs.cr[cr::V_DISP_END] = h as u8;
        regs.cr[cr::OVERFLOW] = (regs.cr[cr::OVERFLOW] & !0x42)
            | ((h >> 7) & 0x02) as u8
            | ((h >> 3) & 0x40) as u8
            | 0x10;
        regs.cr[cr::LINE_COMPARE] = 0xFF;
        let shift = if self.bpp() == 4 { 0 } else { 2 };
        regs.gr[gr::MODE] = (regs.gr[gr::MODE] & !0x60) | (shift << 5);
        regs.cr[cr::MAX_SCAN] = (regs.cr[cr::MAX_SCAN] | 0x40) & !0x9F;
    }
}
