//! Video memory and the legacy window's planar access paths.
//!
//! VRAM is [`VRAM_SIZE`] bytes. Its first 256 KiB are the VGA's four 64 KiB planes,
//! interleaved the way QEMU's stdvga keeps them: byte `a * 4 + p` is plane `p` at planar
//! address `a`. So a chain-4 (mode 13h) byte, a packed VBE pixel seen through the linear
//! framebuffer BAR and the planes the graphics controller writes are the same bytes QEMU shows.
//!
//! Every write, whichever path it takes (legacy window, LFB BAR, VBE clear), marks its 4 KiB
//! page in a dirty bitmap that the renderer consults and clears once per frame. Writes that can
//! reach plane 2 also raise `font_dirty`, since the text-mode font lives there.

use super::registers::{cr, gr, sr, Registers};

/// Bytes of video memory (the size of BAR 0).
pub const VRAM_SIZE: usize = 16 << 20;
/// Bytes of VRAM the legacy VGA planes occupy (4 × 64 KiB, interleaved).
pub(crate) const PLANAR_BYTES: usize = 256 << 10;
const PAGE_SHIFT: u32 = 12;
const PAGES: usize = VRAM_SIZE >> PAGE_SHIFT;

/// How the legacy window reaches VRAM, derived from the Bochs VBE state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WindowMode {
    /// VBE packed-pixel mode: the 64 KiB bank at this byte offset, linear.
    Linear(usize),
    /// Planar access: `bank` is added to the planar address, which is masked with `mask`.
    Planar {
        /// Planar address of the window's start (VBE 4-bpp bank).
        bank: u32,
        /// Planar addresses wrap at `mask + 1`.
        mask: u32,
    },
}

impl WindowMode {
    /// The plain VGA decoding: 64 KiB planes, no bank.
    pub const VGA: WindowMode = WindowMode::Planar {
        bank: 0,
        mask: (PLANAR_BYTES / 4 - 1) as u32,
    };
}

/// Video memory with its dirty-page bitmap and the graphics controller's latches.
pub(crate) struct Vram {
    pub bytes: Vec<u8>,
    dirty: Vec<u64>,
    any_dirty: bool,
    /// Plane 2 (the font) may have changed since the last text frame.
    pub font_dirty: bool,
    latch: u32,
}

impl std::fmt::Debug for Vram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vram")
            .field("any_dirty", &self.any_dirty)
            .field("font_dirty", &self.font_dirty)
            .field("latch", &self.latch)
            .finish()
    }
}

/// Byte `b` in all four planes.
fn replicate(b: u8) -> u32 {
    u32::from(b) * 0x0101_0101
}

/// 0xFF in plane `p`'s byte for each bit `p` set in the low nibble of `m`.
fn plane_mask(m: u8) -> u32 {
    let mut v = 0;
    for p in 0..4 {
        if m & (1 << p) != 0 {
            v |= 0xFF << (p * 8);
        }
    }
    v
}

/// Offset inside the memory region GR6 maps, for an offset inside 0xA0000–0xBFFFF.
fn decode_window(misc: u8, offset: u32) -> Option<u32> {
    let offset = offset & 0x1FFFF;
    match (misc >> 2) & 3 {
        0 => Some(offset),
        1 => (offset < 0x10000).then_some(offset),
        2 => offset.checked_sub(0x10000).filter(|&a| a < 0x8000),
        _ => offset.checked_sub(0x18000).filter(|&a| a < 0x8000),
    }
}

impl Vram {
    /// Zeroed video memory.
    pub fn new() -> Self {
        Self {
            bytes: vec![0; VRAM_SIZE],
            dirty: vec![0; PAGES / 64],
            any_dirty: false,
            font_dirty: true,
            latch: 0,
        }
    }

    /// Video memory holding `bytes` (exactly [`VRAM_SIZE`] of them, else `None`) with the
    /// latches at `latch`, everything marked as written.
    pub fn restored(bytes: Vec<u8>, latch: u32) -> Option<Self> {
        if bytes.len() != VRAM_SIZE {
            return None;
        }
        let mut v = Self {
            bytes,
            dirty: vec![0; PAGES / 64],
            any_dirty: false,
            font_dirty: true,
            latch,
        };
        v.mark_pages(0, VRAM_SIZE);
        Some(v)
    }

    /// The graphics controller's four latch bytes (plane 0 in the low byte).
    pub fn latch(&self) -> u32 {
        self.latch
    }

    /// Clears the latches (machine reset); memory contents survive like QEMU's.
    pub fn reset(&mut self) {
        self.latch = 0;
        self.font_dirty = true;
    }

    /// Marks `len` bytes from `start` as written (and the font as possibly changed when a
    /// plane-2 byte is among them).
    pub fn mark(&mut self, start: usize, len: usize) {
        self.mark_pages(start, len);
        if start < PLANAR_BYTES && (len >= 4 || (start..start + len).any(|i| i % 4 == 2)) {
            self.font_dirty = true;
        }
    }

    fn mark_pages(&mut self, start: usize, len: usize) {
        if len == 0 || start >= VRAM_SIZE {
            return;
        }
        let end = (start + len).min(VRAM_SIZE) - 1;
        for page in (start >> PAGE_SHIFT)..=(end >> PAGE_SHIFT) {
            self.dirty[page / 64] |= 1 << (page % 64);
        }
        self.any_dirty = true;
    }

    /// True when any byte of `start..start + len` (clipped to VRAM) was written since the
    /// last [`Self::clear_dirty`].
    pub fn range_dirty(&self, start: usize, len: usize) -> bool {
        if !self.any_dirty || len == 0 || start >= VRAM_SIZE {
            return false;
        }
        let end = (start + len).min(VRAM_SIZE) - 1;
        ((start >> PAGE_SHIFT)..=(end >> PAGE_SHIFT))
            .any(|page| self.dirty[page / 64] & (1 << (page % 64)) != 0)
    }

    /// Like [`Self::range_dirty`] for a range that wraps at `wrap` bytes (a power of two).
    pub fn range_dirty_wrapping(&self, start: usize, len: usize, wrap: usize) -> bool {
        let start = start & (wrap - 1);
        if start + len <= wrap {
            self.range_dirty(start, len)
        } else {
            self.range_dirty(start, wrap - start) || self.range_dirty(0, start + len - wrap)
        }
    }

    /// True when anything was written since the last [`Self::clear_dirty`].
    pub fn any_dirty(&self) -> bool {
        self.any_dirty
    }

    /// Forgets the written pages (after a frame).
    pub fn clear_dirty(&mut self) {
        if self.any_dirty {
            self.dirty.fill(0);
            self.any_dirty = false;
        }
    }

    /// Linear read (LFB BAR); bytes past the end read 0xFF.
    pub fn read_linear(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset + i as u64)
                .ok()
                .and_then(|o| self.bytes.get(o).copied())
                .unwrap_or(0xFF);
        }
    }

    /// Linear write (LFB BAR); bytes past the end are dropped.
    pub fn write_linear(&mut self, offset: u64, data: &[u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= VRAM_SIZE {
            return;
        }
        let n = data.len().min(VRAM_SIZE - start);
        self.bytes[start..start + n].copy_from_slice(&data[..n]);
        self.mark(start, n);
    }

    fn dword(&self, planar: usize) -> u32 {
        let i = planar * 4;
        u32::from_le_bytes([
            self.bytes[i],
            self.bytes[i + 1],
            self.bytes[i + 2],
            self.bytes[i + 3],
        ])
    }

    fn store(&mut self, planar: usize, value: u32, planes: u8) {
        if planes == 0 {
            return;
        }
        let i = planar * 4;
        let wm = plane_mask(planes);
        let old = self.dword(planar);
        let new = (old & !wm) | (value & wm);
        self.bytes[i..i + 4].copy_from_slice(&new.to_le_bytes());
        self.mark_pages(i, 4);
        self.font_dirty |= planes & 0x04 != 0;
    }

    /// A CPU read at `offset` (0–0x1FFFF) inside the legacy window.
    pub fn window_read(&mut self, regs: &Registers, mode: WindowMode, offset: u32) -> u8 {
        let Some(addr) = decode_window(regs.gr[gr::MISC], offset) else {
            return 0xFF;
        };
        let (bank, mask) = match mode {
            WindowMode::Linear(base) => {
                return self
                    .bytes
                    .get(base + addr as usize)
                    .copied()
                    .unwrap_or(0xFF);
            }
            WindowMode::Planar { bank, mask } => (bank, mask),
        };
        let g = &regs.gr;
        let sr4 = regs.sr[sr::MEMORY_MODE];
        let chain4 = sr4 & 0x08 != 0;
        let host_odd_even = g[gr::MODE] & 0x10 != 0;
        let mut a = addr.wrapping_add(bank);
        let plane = if chain4 {
            let p = a & 3;
            a &= !3;
            p
        } else if host_odd_even {
            (u32::from(g[gr::READ_MAP]) & 2) | (a & 1)
        } else {
            u32::from(g[gr::READ_MAP]) & 3
        };
        if g[gr::MISC] & 0x02 != 0 {
            a &= !1;
        }
        if regs.cr[cr::UNDERLINE] & 0x40 != 0 {
            a >>= 2;
        } else if host_odd_even && regs.cr[cr::MODE] & 0x40 == 0 {
            a >>= 1;
        }
        let a = (a & mask) as usize;
        if chain4 {
            return self.bytes[a * 4 + plane as usize];
        }
        self.latch = self.dword(a);
        if g[gr::MODE] & 0x08 == 0 {
            (self.latch >> (plane * 8)) as u8
        } else {
            // Read mode 1: a bit is set where every plane that is not "don't care" matches
            // the colour compare value.
            let diff = (self.latch ^ plane_mask(g[gr::COLOR_COMPARE]))
                & plane_mask(g[gr::COLOR_DONT_CARE]);
            let diff = diff | diff >> 16;
            let diff = diff | diff >> 8;
            !(diff as u8)
        }
    }

    /// A CPU write of `value` at `offset` (0–0x1FFFF) inside the legacy window.
    pub fn window_write(&mut self, regs: &Registers, mode: WindowMode, offset: u32, value: u8) {
        let Some(addr) = decode_window(regs.gr[gr::MISC], offset) else {
            return;
        };
        let (bank, mask) = match mode {
            WindowMode::Linear(base) => {
                let i = base + addr as usize;
                if i < VRAM_SIZE {
                    self.bytes[i] = value;
                    self.mark(i, 1);
                }
                return;
            }
            WindowMode::Planar { bank, mask } => (bank, mask),
        };
        let g = &regs.gr;
        let sr4 = regs.sr[sr::MEMORY_MODE];
        let chain4 = sr4 & 0x08 != 0;
        let mut planes = regs.sr[sr::MAP_MASK] & 0x0F;
        let mut a = addr.wrapping_add(bank);
        let mut plane = 0;
        if chain4 {
            plane = a & 3;
            planes &= 1 << plane;
            a &= !3;
        } else {
            if sr4 & 0x04 == 0 {
                // Odd/even: even addresses reach planes 0/2, odd ones planes 1/3.
                planes &= if a & 1 != 0 { 0x0A } else { 0x05 };
            }
            if g[gr::MISC] & 0x02 != 0 {
                a &= !1;
            }
        }
        if regs.cr[cr::UNDERLINE] & 0x40 != 0 {
            a >>= 2;
        } else if sr4 & 0x04 == 0 && regs.cr[cr::MODE] & 0x40 == 0 {
            a >>= 1;
        }
        let a = (a & mask) as usize;
        if chain4 {
            if planes != 0 {
                let i = a * 4 + plane as usize;
                self.bytes[i] = value;
                self.mark(i, 1);
            }
            return;
        }
        let latch = self.latch;
        let rotate = u32::from(g[gr::DATA_ROTATE] & 7);
        let (data, bit_mask) = match g[gr::MODE] & 3 {
            0 => {
                let v = replicate(value.rotate_right(rotate));
                let enable = plane_mask(g[gr::ENABLE_SET_RESET]);
                let v = (v & !enable) | (plane_mask(g[gr::SET_RESET]) & enable);
                (v, g[gr::BIT_MASK])
            }
            1 => {
                // Write mode 1: the latches go straight back to memory.
                self.store(a, latch, planes);
                return;
            }
            2 => (plane_mask(value & 0x0F), g[gr::BIT_MASK]),
            _ => {
                let v = value.rotate_right(rotate);
                (plane_mask(g[gr::SET_RESET]), g[gr::BIT_MASK] & v)
            }
        };
        let data = match (g[gr::DATA_ROTATE] >> 3) & 3 {
            0 => data,
            1 => data & latch,
            2 => data | latch,
            _ => data ^ latch,
        };
        let bm = replicate(bit_mask);
        let data = (data & bm) | (latch & !bm);
        self.store(a, data, planes);
    }
}
