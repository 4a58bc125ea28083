//! Turning the VGA/VBE state into framebuffer pixels, redrawing only what changed.
//!
//! Each frame the display geometry ([`Layout`]) and the palette are derived from the registers
//! and compared with the previous frame's; any difference redraws everything. Otherwise text
//! mode redraws the cells whose character, attribute, cursor or blink state changed, and
//! graphics modes decode only the scan lines whose VRAM pages were written. A decoded line is
//! compared with what the framebuffer already shows, so the dirty rectangles name the pixels
//! that really changed.
//!
//! Geometry follows QEMU's stdvga: a mode's picture is as many pixels as the CRTC scans (mode
//! 13h and the CGA modes show as 640×400, 80×25 text with 9-dot cells as 720×400).

use super::memory::{Vram, PLANAR_BYTES, VRAM_SIZE};
use super::registers::{ar, cr, sr, Registers};
use super::vbe::Vbe;
use crate::framebuffer::{rgb, Framebuffer, Rect, BYTES_PER_PIXEL};

/// Largest picture drawn (pixels); taller VBE modes lose their bottom lines.
pub(crate) const MAX_PIXELS: u32 = 8 << 20;
/// The text cursor changes state every 16 frames at 60 Hz.
pub(crate) const CURSOR_HALF_PERIOD_NS: u64 = 266_666_667;
/// Blinking characters change state every 32 frames at 60 Hz.
pub(crate) const BLINK_HALF_PERIOD_NS: u64 = 533_333_333;

const BLACK: [u8; 4] = rgb(0, 0, 0);
const NO_CELL: u32 = u32::MAX;

/// Each bit `j` of a plane byte moved to bit `4 * j`, so four planes OR together into eight
/// 4-bit pixels (leftmost pixel in the top nibble).
const EXPAND4: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut v = 0u32;
        let mut j = 0;
        while j < 8 {
            v |= ((i as u32 >> j) & 1) << (4 * j);
            j += 1;
        }
        t[i] = v;
        i += 1;
    }
    t
};

/// How graphics-mode memory turns into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GraphicsKind {
    /// Four planes give one 4-bit pixel per bit (EGA/VGA 16-colour modes, VBE 4 bpp).
    Planar16,
    /// CGA 4-colour: 2-bit pixels, even bytes from plane 0 and odd ones from plane 1.
    Cga4,
    /// VGA 256-colour: the four plane bytes of an address are four pixels, each shown twice.
    Packed256,
    /// VBE packed or direct colour at this depth (8, 15, 16, 24 or 32).
    Vbe(u16),
}

/// Graphics-mode geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GraphicsLayout {
    pub kind: GraphicsKind,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in lines.
    pub height: u32,
    /// Each source pixel shown twice (dot clock / 2).
    pub doubled: bool,
    /// VRAM byte address of the first line.
    pub start: u32,
    /// Bytes from one line to the next.
    pub line_offset: u32,
    /// Addresses wrap at this many bytes (a power of two).
    pub wrap: u32,
    /// Display line after which the address restarts at 0.
    pub line_compare: u32,
    /// Extra times each line is shown (double scan, maximum scan line).
    pub multi_scan: u32,
    /// CRTC mode control (CGA/Hercules address substitution, byte mode).
    pub crtc_mode: u8,
    /// Horizontal pixel panning.
    pub pan: u8,
    /// Panning stops below the line compare split.
    pub pan_split: bool,
    /// Colour plane enable.
    pub plane_enable: u8,
}

/// Text-mode geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextLayout {
    pub columns: u32,
    pub rows: u32,
    /// Cell width in pixels (8, 9, 16 or 18).
    pub char_width: u32,
    /// Cell height in scan lines (1–32).
    pub char_height: u32,
    pub nine_dot: bool,
    pub doubled: bool,
    /// Planar address of the first cell.
    pub start: u32,
    /// Planar addresses from one row to the next.
    pub line_offset: u32,
    pub line_compare: u32,
    /// Characters 0xC0–0xDF extend into the ninth column.
    pub line_graphics: bool,
    /// Attribute bit 7 blinks instead of brightening the background.
    pub blink: bool,
    /// Planar addresses of the fonts for attribute bit 3 clear / set.
    pub fonts: [u32; 2],
}

/// What the display shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Blank,
    Text(TextLayout),
    Graphics(GraphicsLayout),
}

/// Text geometry from the registers, when it describes a usable screen.
pub(crate) fn text_layout(regs: &Registers) -> Option<TextLayout> {
    let char_height = u32::from(regs.cr[cr::MAX_SCAN] & 0x1F) + 1;
    let clocking = regs.sr[sr::CLOCKING];
    let nine_dot = clocking & 0x01 == 0;
    let doubled = clocking & 0x08 != 0;
    let char_width = if nine_dot { 9 } else { 8 } << u32::from(doubled);
    let columns = regs.display_chars();
    let rows = regs.display_lines() / char_height;
    if rows == 0 || columns * rows <= 1 {
        return None;
    }
    let map = regs.sr[sr::CHAR_MAP];
    let map_b = u32::from(((map >> 4) & 1) | ((map << 1) & 6));
    let map_a = u32::from(((map >> 5) & 1) | ((map >> 1) & 6));
    Some(TextLayout {
        columns,
        rows,
        char_width,
        char_height,
        nine_dot,
        doubled,
        start: regs.start_address(),
        line_offset: u32::from(regs.cr[cr::OFFSET]) * 2,
        line_compare: regs.line_compare(),
        line_graphics: regs.ar[ar::MODE] & 0x04 != 0,
        blink: regs.ar[ar::MODE] & 0x08 != 0,
        fonts: [map_b * 8192, map_a * 8192],
    })
}

/// The geometry the registers describe.
pub(crate) fn layout(regs: &Registers, vbe: &Vbe) -> Layout {
    if !regs.palette_source_on() || regs.screen_off() {
        return Layout::Blank;
    }
    if vbe.enabled() {
        let bpp = vbe.bpp();
        let width = vbe.xres();
        let height = vbe.yres().min(MAX_PIXELS / width.max(1));
        if width == 0 || height == 0 {
            return Layout::Blank;
        }
        return Layout::Graphics(GraphicsLayout {
            kind: if bpp == 4 {
                GraphicsKind::Planar16
            } else {
                GraphicsKind::Vbe(bpp)
            },
            width,
            height,
            doubled: false,
            start: vbe.start(),
            line_offset: vbe.line_offset(),
            wrap: VRAM_SIZE as u32,
            line_compare: u32::MAX,
            multi_scan: 0,
            crtc_mode: 0x03,
            pan: 0,
            pan_split: false,
            plane_enable: 0x0F,
        });
    }
    if !regs.graphics_mode() {
        return text_layout(regs).map_or(Layout::Blank, Layout::Text);
    }
    let shift = (regs.gr[super::registers::gr::MODE] >> 5) & 3;
    let crtc_mode = regs.cr[cr::MODE];
    let max_scan = regs.cr[cr::MAX_SCAN];
    let double_scan = u32::from(max_scan >> 7);
    let multi_scan = if crtc_mode & 0x01 != 0 {
        ((u32::from(max_scan & 0x1F) + 1) << double_scan) - 1
    } else {
        double_scan
    };
    let doubled = regs.sr[sr::CLOCKING] & 0x08 != 0;
    let chars = regs.display_chars();
    let (kind, width, doubled) = match shift {
        0 => (
            GraphicsKind::Planar16,
            (chars * 8) << u32::from(doubled),
            doubled,
        ),
        1 => (
            GraphicsKind::Cga4,
            (chars * 8) << u32::from(doubled),
            doubled,
        ),
        _ => (GraphicsKind::Packed256, chars * 8, false),
    };
    Layout::Graphics(GraphicsLayout {
        kind,
        width,
        height: regs.display_lines(),
        doubled,
        start: regs.start_address() * 4,
        line_offset: regs.line_offset(),
        wrap: PLANAR_BYTES as u32,
        line_compare: regs.line_compare(),
        multi_scan,
        crtc_mode,
        pan: regs.ar[ar::PANNING],
        pan_split: regs.ar[ar::MODE] & 0x20 != 0,
        plane_enable: regs.ar[ar::PLANE_ENABLE] & 0x0F,
    })
}

fn rgba(c: [u8; 3]) -> [u8; 4] {
    rgb(c[0], c[1], c[2])
}

/// The 16 colours the attribute controller maps pixel values 0–15 to.
pub(crate) fn palette16(regs: &Registers) -> [[u8; 4]; 16] {
    let mut p = [BLACK; 16];
    for (i, c) in p.iter_mut().enumerate() {
        *c = rgba(regs.dac.rgb(regs.attribute_to_dac(i) & regs.dac.pel_mask));
    }
    p
}

/// The 256 DAC colours after the pel mask.
pub(crate) fn palette256(regs: &Registers) -> [[u8; 4]; 256] {
    let mut p = [BLACK; 256];
    for (i, c) in p.iter_mut().enumerate() {
        *c = rgba(regs.dac.rgb(i as u8 & regs.dac.pel_mask));
    }
    p
}

/// Index of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let mut i = 0;
    for (x, y) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
        if x != y {
            break;
        }
        i += 64;
    }
    (i..a.len().min(b.len())).find(|&j| a[j] != b[j])
}

/// Index of the last byte where `a` and `b` (of equal length) differ.
fn last_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let mut end = a.len().min(b.len());
    for (x, y) in a.rchunks_exact(64).zip(b.rchunks_exact(64)) {
        if x != y {
            break;
        }
        end -= 64;
    }
    (0..end).rev().find(|&j| a[j] != b[j])
}

/// A run of consecutive changed lines, gathered into one dirty rectangle.
#[derive(Debug, Clone, Copy)]
struct Band {
    y0: u32,
    y1: u32,
    x0: u32,
    x1: u32,
}

/// Render state kept between frames.
pub(crate) struct Renderer {
    last: Option<Layout>,
    force_full: bool,
    palette16: [[u8; 4]; 16],
    palette256: [[u8; 4]; 256],
    text_cache: Vec<u32>,
    scratch: Vec<u8>,
    wrap_buf: Vec<u8>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self {
            last: None,
            force_full: true,
            palette16: [BLACK; 16],
            palette256: [BLACK; 256],
            text_cache: Vec::new(),
            scratch: Vec::new(),
            wrap_buf: Vec::new(),
        }
    }
}

impl Renderer {
    /// Makes the next frame a full redraw.
    pub fn invalidate(&mut self) {
        self.force_full = true;
    }

    /// Draws one frame into `fb`.
    pub fn render(
        &mut self,
        regs: &Registers,
        vbe: &Vbe,
        vram: &mut Vram,
        fb: &mut Framebuffer,
        now_ns: u64,
    ) {
        let layout = layout(regs, vbe);
        let full = std::mem::take(&mut self.force_full) || self.last != Some(layout);
        match layout {
            Layout::Blank => {
                if full {
                    fb.fill(BLACK);
                }
            }
            Layout::Text(t) => self.render_text(&t, regs, vram, fb, now_ns, full),
            Layout::Graphics(g) => self.render_graphics(&g, regs, vram, fb, full),
        }
        self.last = Some(layout);
        vram.clear_dirty();
        vram.font_dirty = false;
    }

    fn render_text(
        &mut self,
        t: &TextLayout,
        regs: &Registers,
        vram: &Vram,
        fb: &mut Framebuffer,
        now_ns: u64,
        mut full: bool,
    ) {
        full |= fb.resize(t.columns * t.char_width, t.rows * t.char_height);
        let palette = palette16(regs);
        full |= palette != self.palette16;
        self.palette16 = palette;
        full |= vram.font_dirty;
        let cells = (t.columns * t.rows) as usize;
        if full || self.text_cache.len() != cells {
            self.text_cache.clear();
            self.text_cache.resize(cells, NO_CELL);
        }

        let cursor_start = u32::from(regs.cr[cr::CURSOR_START] & 0x1F);
        let cursor_end = u32::from(regs.cr[cr::CURSOR_END] & 0x1F).min(t.char_height - 1);
        let cursor_visible = regs.cr[cr::CURSOR_START] & 0x20 == 0
            && cursor_start <= cursor_end
            && (now_ns / CURSOR_HALF_PERIOD_NS) & 1 == 0;
        let cursor_addr = regs.cursor_address() & 0xFFFF;
        let blink_visible = (now_ns / BLINK_HALF_PERIOD_NS) & 1 == 0;

        let stride = fb.stride();
        let pixels = fb.pixels_mut();
        let mut dirty = Vec::new();
        let mut row_addr = t.start;
        let mut line = 0;
        for row in 0..t.rows {
            let mut first = u32::MAX;
            let mut last = 0;
            for col in 0..t.columns {
                let addr = (row_addr + col) & 0xFFFF;
                let ch = vram.bytes[addr as usize * 4];
                let attr = vram.bytes[addr as usize * 4 + 1];
                let cursor = cursor_visible && addr == cursor_addr;
                let hidden = t.blink && attr & 0x80 != 0 && !blink_visible;
                let shape = if cursor {
                    1 | cursor_start << 1 | cursor_end << 6
                } else {
                    0
                };
                let key =
                    u32::from(ch) | u32::from(attr) << 8 | u32::from(hidden) << 16 | shape << 17;
                let cell = &mut self.text_cache[(row * t.columns + col) as usize];
                if *cell == key {
                    continue;
                }
                *cell = key;
                first = first.min(col);
                last = col;
                let cursor_lines = cursor.then_some((cursor_start, cursor_end));
                draw_cell(
                    pixels,
                    stride,
                    (col * t.char_width, row * t.char_height),
                    t,
                    vram,
                    &palette,
                    (ch, attr, hidden),
                    cursor_lines,
                );
            }
            if first <= last {
                dirty.push(Rect::new(
                    first * t.char_width,
                    row * t.char_height,
                    (last - first + 1) * t.char_width,
                    t.char_height,
                ));
            }
            row_addr += t.line_offset;
            let next = line + t.char_height;
            if line < t.line_compare && next >= t.line_compare {
                row_addr = 0;
            }
            line = next;
        }
        if full {
            fb.mark_all_dirty();
        } else {
            for r in dirty {
                fb.mark_dirty(r);
            }
        }
    }

    fn render_graphics(
        &mut self,
        g: &GraphicsLayout,
        regs: &Registers,
        vram: &Vram,
        fb: &mut Framebuffer,
        mut full: bool,
    ) {
        full |= fb.resize(g.width, g.height);
        match g.kind {
            GraphicsKind::Planar16 | GraphicsKind::Cga4 => {
                let p = palette16(regs);
                full |= p != self.palette16;
                self.palette16 = p;
            }
            GraphicsKind::Packed256 | GraphicsKind::Vbe(8) => {
                let p = palette256(regs);
                full |= p != self.palette256;
                self.palette256 = p;
            }
            GraphicsKind::Vbe(_) => {}
        }
        if !full && !vram.any_dirty() {
            return;
        }

        let wrap = g.wrap as usize;
        let mask = g.wrap - 1;
        let source_pixels = g.width >> u32::from(g.doubled);
        let line_bytes = match g.kind {
            GraphicsKind::Planar16 | GraphicsKind::Cga4 => source_pixels / 2 + 4,
            GraphicsKind::Packed256 => g.width / 2 + 4,
            GraphicsKind::Vbe(bpp) => g.width * u32::from(bpp).div_ceil(8),
        } as usize;

        let mut addr1 = g.start & mask;
        let mut line_counter = 0u32;
        let mut multi_run = g.multi_scan;
        let mut pan = g.pan;
        let mut decoded: Option<(u32, u8)> = None;
        let mut band: Option<Band> = None;
        let row_bytes = g.width as usize * BYTES_PER_PIXEL;
        for y in 0..g.height {
            let mut addr = addr1;
            if g.crtc_mode & 0x01 == 0 {
                let shift = 14 + u32::from((g.crtc_mode >> 6) & 1);
                addr = (addr & !(1 << shift)) | ((line_counter & 1) << shift);
            }
            if g.crtc_mode & 0x02 == 0 {
                addr = (addr & !0x8000) | ((line_counter & 2) << 14);
            }
            addr &= mask;
            if full || vram.range_dirty_wrapping(addr as usize, line_bytes, wrap) {
                if decoded != Some((addr, pan)) {
                    self.decode_line(g, vram, addr, pan);
                    decoded = Some((addr, pan));
                }
                let skip = self.scratch_skip(g, pan);
                let src = &self.scratch[skip..skip + row_bytes];
                if let Some(dst) = fb.row_mut(y) {
                    if let (Some(a), Some(b)) =
                        (first_difference(src, dst), last_difference(src, dst))
                    {
                        let (x0, x1) = (a / BYTES_PER_PIXEL, b / BYTES_PER_PIXEL + 1);
                        dst[x0 * BYTES_PER_PIXEL..x1 * BYTES_PER_PIXEL]
                            .copy_from_slice(&src[x0 * BYTES_PER_PIXEL..x1 * BYTES_PER_PIXEL]);
                        let (x0, x1) = (x0 as u32, x1 as u32);
                        band = match band {
                            Some(b) if b.y1 == y => Some(Band {
                                y1: y + 1,
                                x0: b.x0.min(x0),
                                x1: b.x1.max(x1),
                                ..b
                            }),
                            other => {
                                if let Some(b) = other {
                                    fb.mark_dirty(Rect::new(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0));
                                }
                                Some(Band {
                                    y0: y,
                                    y1: y + 1,
                                    x0,
                                    x1,
                                })
                            }
                        };
                    }
                }
            }
            if multi_run == 0 {
                let m = u32::from(g.crtc_mode & 3) ^ 3;
                if line_counter & m == m {
                    addr1 = (addr1 + g.line_offset) & mask;
                }
                line_counter = line_counter.wrapping_add(1);
                multi_run = g.multi_scan;
            } else {
                multi_run -= 1;
            }
            if y == g.line_compare {
                addr1 = 0;
                if g.pan_split {
                    pan = 0;
                }
            }
        }
        if let Some(b) = band {
            fb.mark_dirty(Rect::new(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0));
        }
        if full {
            fb.mark_all_dirty();
        }
    }

    /// Bytes of the decoded line to skip for horizontal panning.
    fn scratch_skip(&self, g: &GraphicsLayout, pan: u8) -> usize {
        let pixels = match g.kind {
            GraphicsKind::Planar16 | GraphicsKind::Cga4 => {
                usize::from(pan & 7) << usize::from(g.doubled)
            }
            GraphicsKind::Packed256 => usize::from((pan >> 1) & 3) * 2,
            GraphicsKind::Vbe(_) => 0,
        };
        pixels * BYTES_PER_PIXEL
    }

    /// Decodes the line at VRAM byte address `addr` into `scratch` (with the extra pixels
    /// panning needs).
    fn decode_line(&mut self, g: &GraphicsLayout, vram: &Vram, addr: u32, pan: u8) {
        let out = &mut self.scratch;
        out.clear();
        let mask = g.wrap - 1;
        let mem = &vram.bytes;
        let dword = |i: u32| -> u32 {
            let a = ((addr + i * 4) & mask & !3) as usize;
            u32::from_le_bytes([mem[a], mem[a + 1], mem[a + 2], mem[a + 3]])
        };
        match g.kind {
            GraphicsKind::Planar16 | GraphicsKind::Cga4 => {
                let count = (g.width >> u32::from(g.doubled)) / 8 + u32::from(pan & 7 != 0);
                let pal = &self.palette16;
                let enable = expand_planes(g.plane_enable);
                let reps = 1 + usize::from(g.doubled);
                let mut put = |i: u32| {
                    for _ in 0..reps {
                        out.extend_from_slice(&pal[i as usize]);
                    }
                };
                for i in 0..count {
                    let d = dword(i) & enable;
                    if g.kind == GraphicsKind::Planar16 {
                        let v = EXPAND4[(d & 0xFF) as usize]
                            | EXPAND4[((d >> 8) & 0xFF) as usize] << 1
                            | EXPAND4[((d >> 16) & 0xFF) as usize] << 2
                            | EXPAND4[(d >> 24) as usize] << 3;
                        for k in 0..8 {
                            put((v >> (28 - 4 * k)) & 0xF);
                        }
                    } else {
                        let planes = d.to_le_bytes();
                        for (lo, hi) in [(planes[0], planes[2]), (planes[1], planes[3])] {
                            for k in 0..4 {
                                let s = 6 - 2 * k;
                                put(u32::from((lo >> s) & 3) | u32::from((hi >> s) & 3) << 2);
                            }
                        }
                    }
                }
            }
            GraphicsKind::Packed256 => {
                let count = g.width / 8 + u32::from((pan >> 1) & 3 != 0);
                let pal = &self.palette256;
                for i in 0..count {
                    for b in dword(i).to_le_bytes() {
                        let c = &pal[usize::from(b)];
                        out.extend_from_slice(c);
                        out.extend_from_slice(c);
                    }
                }
            }
            GraphicsKind::Vbe(bpp) => {
                let bytes_pp = usize::from(bpp).div_ceil(8);
                let len = g.width as usize * bytes_pp;
                let start = (addr & mask) as usize;
                let src: &[u8] = if start + len <= mem.len() {
                    &mem[start..start + len]
                } else {
                    self.wrap_buf.clear();
                    self.wrap_buf
                        .extend((0..len).map(|i| mem[(start + i) & (mem.len() - 1)]));
                    &self.wrap_buf
                };
                out.reserve(g.width as usize * BYTES_PER_PIXEL);
                match bpp {
                    8 => {
                        let pal = &self.palette256;
                        for &b in src {
                            out.extend_from_slice(&pal[usize::from(b)]);
                        }
                    }
                    15 => {
                        for p in src.chunks_exact(2) {
                            let v = u16::from_le_bytes([p[0], p[1]]);
                            out.extend_from_slice(&rgb(
                                five_to_eight(v >> 10),
                                five_to_eight(v >> 5),
                                five_to_eight(v),
                            ));
                        }
                    }
                    16 => {
                        for p in src.chunks_exact(2) {
                            let v = u16::from_le_bytes([p[0], p[1]]);
                            let g6 = ((v >> 5) & 0x3F) as u8;
                            out.extend_from_slice(&rgb(
                                five_to_eight(v >> 11),
                                (g6 << 2) | (g6 >> 4),
                                five_to_eight(v),
                            ));
                        }
                    }
                    24 => {
                        for p in src.chunks_exact(3) {
                            out.extend_from_slice(&rgb(p[2], p[1], p[0]));
                        }
                    }
                    _ => {
                        for p in src.chunks_exact(4) {
                            out.extend_from_slice(&rgb(p[2], p[1], p[0]));
                        }
                    }
                }
            }
        }
        let needed = self.scratch_skip(g, pan) + g.width as usize * BYTES_PER_PIXEL;
        if self.scratch.len() < needed {
            self.scratch.resize(needed, 0);
        }
    }
}

/// Expands the low five bits of `v` to eight by bit replication.
fn five_to_eight(v: u16) -> u8 {
    let v = (v & 0x1F) as u8;
    (v << 3) | (v >> 2)
}

/// 0xFF in each plane byte whose bit is set in `m`.
fn expand_planes(m: u8) -> u32 {
    (0..4).fold(0, |acc, p| {
        if m & (1 << p) != 0 {
            acc | 0xFF << (8 * p)
        } else {
            acc
        }
    })
}

/// Draws one text cell with its top-left corner at `origin`.
#[allow(clippy::too_many_arguments)]
fn draw_cell(
    pixels: &mut [u8],
    stride: usize,
    origin: (u32, u32),
    t: &TextLayout,
    vram: &Vram,
    palette: &[[u8; 4]; 16],
    (ch, attr, hidden): (u8, u8, bool),
    cursor: Option<(u32, u32)>,
) {
    let fg_index = usize::from(attr & 0x0F);
    let bg_index = usize::from(if t.blink { (attr >> 4) & 7 } else { attr >> 4 });
    let bg = palette[bg_index];
    let fg = if hidden { bg } else { palette[fg_index] };
    let cursor_color = palette[fg_index];
    let font = t.fonts[usize::from((attr >> 3) & 1)] + u32::from(ch) * 32;
    let dots = if t.nine_dot { 9 } else { 8 };
    let extend = t.nine_dot && t.line_graphics && (0xC0..=0xDF).contains(&ch);
    let reps = 1 + usize::from(t.doubled);
    let (x0, y0) = (origin.0 as usize, origin.1 as usize);
    for line in 0..t.char_height {
        let in_cursor = cursor.is_some_and(|(s, e)| line >= s && line <= e);
        let (bits, on) = if in_cursor {
            (0x1FFu16, cursor_color)
        } else {
            let glyph = vram.bytes[((font + line) & 0xFFFF) as usize * 4 + 2];
            let bits = if t.nine_dot {
                u16::from(glyph) << 1 | u16::from(extend && glyph & 1 != 0)
            } else {
                u16::from(glyph)
            };
            (bits, fg)
        };
        let row_start = (y0 + line as usize) * stride + x0 * BYTES_PER_PIXEL;
        let row = &mut pixels[row_start..row_start + dots * reps * BYTES_PER_PIXEL];
        let mut px = row.chunks_exact_mut(BYTES_PER_PIXEL);
        for d in (0..dots).rev() {
            let color = if bits >> d & 1 != 0 { &on } else { &bg };
            for _ in 0..reps {
                if let Some(p) = px.next() {
                    p.copy_from_slice(color);
                }
            }
        }
    }
}
