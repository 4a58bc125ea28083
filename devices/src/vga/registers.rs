//! The legacy VGA register groups behind ports 0x3B0–0x3DF: sequencer, CRT controller,
//! graphics controller, attribute controller, DAC, miscellaneous output, feature control and
//! the input status registers.
//!
//! Reserved bits read back as 0 (the masks follow QEMU's stdvga). Registers past the last
//! defined index of a group ignore writes and read 0. The CRTC sits at 0x3D4/0x3D5 (input
//! status 1 and feature control at 0x3DA) while misc output bit 0 is set, else at the
//! monochrome aliases 0x3B4/0x3B5/0x3BA; the other block reads 0xFF and ignores writes.

/// Sequencer register count (SR0–SR4 defined, SR5–SR7 read 0).
pub(crate) const SR_COUNT: usize = 8;
/// CRT controller register count (CR00–CR18).
pub(crate) const CR_COUNT: usize = 0x19;
/// Graphics controller register count (GR0–GR8 defined, up to GRF readable as 0).
pub(crate) const GR_COUNT: usize = 16;
/// Attribute controller register count (palette 0–15, AR10–AR14).
pub(crate) const AR_COUNT: usize = 0x15;

/// Bits of each sequencer register that exist.
pub(crate) const SR_MASK: [u8; SR_COUNT] = [0x03, 0x3D, 0x0F, 0x3F, 0x0E, 0x00, 0x00, 0x00];
/// Bits of each graphics controller register that exist.
pub(crate) const GR_MASK: [u8; GR_COUNT] = [
    0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF, 0, 0, 0, 0, 0, 0, 0,
];
/// Bits of each attribute controller register that exist (palette 0–15, AR10–AR14).
pub(crate) const AR_MASK: [u8; AR_COUNT] = {
    let mut m = [0x3F; AR_COUNT];
    m[ar::MODE] = !0x10;
    m[ar::OVERSCAN] = 0xFF;
    m[ar::PLANE_ENABLE] = 0x3F;
    m[ar::PANNING] = 0x0F;
    m[ar::COLOR_SELECT] = 0x0F;
    m
};

/// Sequencer indices.
pub(crate) mod sr {
    /// Clocking mode: bit 0 8-dot characters, bit 3 dot clock / 2, bit 5 screen off.
    pub const CLOCKING: usize = 1;
    /// Map mask (planes written).
    pub const MAP_MASK: usize = 2;
    /// Character map select.
    pub const CHAR_MAP: usize = 3;
    /// Memory mode: bit 1 extended memory, bit 2 odd/even disable, bit 3 chain-4.
    pub const MEMORY_MODE: usize = 4;
}

/// CRT controller indices.
pub(crate) mod cr {
    /// Horizontal display end (characters − 1).
    pub const H_DISP_END: usize = 0x01;
    /// Overflow (bits 8/9 of vertical values, bit 4 = line compare bit 8).
    pub const OVERFLOW: usize = 0x07;
    /// Maximum scan line (bits 0–4), line compare bit 9 (bit 6), double scan (bit 7).
    pub const MAX_SCAN: usize = 0x09;
    /// Cursor start (bit 5 = cursor off).
    pub const CURSOR_START: usize = 0x0A;
    /// Cursor end.
    pub const CURSOR_END: usize = 0x0B;
    /// Start address high.
    pub const START_HI: usize = 0x0C;
    /// Start address low.
    pub const START_LO: usize = 0x0D;
    /// Cursor location high.
    pub const CURSOR_HI: usize = 0x0E;
    /// Cursor location low.
    pub const CURSOR_LO: usize = 0x0F;
    /// Vertical retrace end (bit 7 protects CR00–CR07).
    pub const V_RETRACE_END: usize = 0x11;
    /// Vertical display end (low 8 bits).
    pub const V_DISP_END: usize = 0x12;
    /// Offset (line pitch in units of 8 bytes of interleaved VRAM).
    pub const OFFSET: usize = 0x13;
    /// Underline location (bit 6 = double-word addressing).
    pub const UNDERLINE: usize = 0x14;
    /// Mode control (bit 0 CGA, bit 1 Hercules, bit 6 byte mode).
    pub const MODE: usize = 0x17;
    /// Line compare (low 8 bits).
    pub const LINE_COMPARE: usize = 0x18;
}

/// Graphics controller indices.
pub(crate) mod gr {
    /// Set/reset.
    pub const SET_RESET: usize = 0;
    /// Enable set/reset.
    pub const ENABLE_SET_RESET: usize = 1;
    /// Colour compare.
    pub const COLOR_COMPARE: usize = 2;
    /// Data rotate (bits 0–2) and function select (bits 3–4).
    pub const DATA_ROTATE: usize = 3;
    /// Read map select.
    pub const READ_MAP: usize = 4;
    /// Mode: write mode (0–1), read mode (3), host odd/even (4), shift control (5–6).
    pub const MODE: usize = 5;
    /// Miscellaneous: graphics (0), chain odd/even (1), memory map (2–3).
    pub const MISC: usize = 6;
    /// Colour don't care.
    pub const COLOR_DONT_CARE: usize = 7;
    /// Bit mask.
    pub const BIT_MASK: usize = 8;
}

/// Attribute controller indices.
pub(crate) mod ar {
    /// Mode control: bit 2 line graphics, bit 3 blink, bit 5 pixel panning mode, bit 6 8-bit
    /// colour, bit 7 palette bits 5–4 select.
    pub const MODE: usize = 0x10;
    /// Overscan colour.
    pub const OVERSCAN: usize = 0x11;
    /// Colour plane enable.
    pub const PLANE_ENABLE: usize = 0x12;
    /// Horizontal pixel panning.
    pub const PANNING: usize = 0x13;
    /// Colour select.
    pub const COLOR_SELECT: usize = 0x14;
}

/// The 256-entry colour look-up table and its port state machine.
#[derive(Debug, Clone)]
pub(crate) struct Dac {
    /// 256 × (red, green, blue), 6-bit values unless the 8-bit DAC is on.
    pub palette: [u8; 768],
    /// Pel mask (0x3C6), ANDed with the colour index.
    pub pel_mask: u8,
    /// Next entry 0x3C9 reads.
    pub read_index: u8,
    /// Next entry 0x3C9 writes.
    pub write_index: u8,
    /// Component (0–2) of the entry being read or written.
    pub sub_index: u8,
    /// 0 after the write index was set, 3 after the read index was set (0x3C7 reads).
    pub state: u8,
    /// Components written so far for the entry at the write index.
    pub cache: [u8; 3],
    /// 8 bits per component (set through the Bochs VBE ENABLE register).
    pub eight_bit: bool,
}

impl Default for Dac {
    fn default() -> Self {
        Self {
            palette: [0; 768],
            pel_mask: 0xFF,
            read_index: 0,
            write_index: 0,
            sub_index: 0,
            state: 0,
            cache: [0; 3],
            eight_bit: false,
        }
    }
}

impl Dac {
    fn write_data(&mut self, value: u8) {
        let value = if self.eight_bit { value } else { value & 0x3F };
        self.cache[usize::from(self.sub_index)] = value;
        self.sub_index += 1;
        if self.sub_index == 3 {
            let i = usize::from(self.write_index) * 3;
            self.palette[i..i + 3].copy_from_slice(&self.cache);
            self.sub_index = 0;
            self.write_index = self.write_index.wrapping_add(1);
        }
    }

    fn read_data(&mut self) -> u8 {
        let v = self.palette[usize::from(self.read_index) * 3 + usize::from(self.sub_index)];
        self.sub_index += 1;
        if self.sub_index == 3 {
            self.sub_index = 0;
            self.read_index = self.read_index.wrapping_add(1);
        }
        v
    }

    /// Entry `index` as 8-bit red, green, blue.
    pub fn rgb(&self, index: u8) -> [u8; 3] {
        let i = usize::from(index) * 3;
        let c = &self.palette[i..i + 3];
        if self.eight_bit {
            [c[0], c[1], c[2]]
        } else {
            [six_to_eight(c[0]), six_to_eight(c[1]), six_to_eight(c[2])]
        }
    }
}

/// Expands a 6-bit DAC component to 8 bits by bit replication (0x3F → 0xFF, 0x2A → 0xAA).
pub(crate) fn six_to_eight(v: u8) -> u8 {
    let v = v & 0x3F;
    (v << 2) | (v >> 4)
}

/// The legacy register file.
#[derive(Debug, Clone)]
pub(crate) struct Registers {
    pub sr_index: u8,
    pub sr: [u8; SR_COUNT],
    pub cr_index: u8,
    pub cr: [u8; CR_COUNT],
    pub gr_index: u8,
    pub gr: [u8; GR_COUNT],
    pub ar_index: u8,
    pub ar: [u8; AR_COUNT],
    pub ar_flip_flop: bool,
    pub misc: u8,
    pub feature: u8,
    pub dac: Dac,
}

impl Default for Registers {
    fn default() -> Self {
        Self {
            sr_index: 0,
            sr: [0; SR_COUNT],
            cr_index: 0,
            cr: [0; CR_COUNT],
            gr_index: 0,
            gr: [0; GR_COUNT],
            ar_index: 0,
            ar: [0; AR_COUNT],
            ar_flip_flop: false,
            misc: 0,
            feature: 0,
            dac: Dac::default(),
        }
    }
}

impl Registers {
    /// True when misc output selects the colour I/O block (0x3Dx).
    pub fn color_io(&self) -> bool {
        self.misc & 0x01 != 0
    }

    /// True when `port` belongs to the I/O block misc output deselects.
    pub fn port_disabled(&self, port: u16) -> bool {
        if self.color_io() {
            (0x3B0..=0x3BF).contains(&port)
        } else {
            (0x3D0..=0x3DF).contains(&port)
        }
    }

    /// Reads one port of 0x3B0–0x3DF, except input status 1 (the caller adds the retrace
    /// bits and resets the flip-flop).
    pub fn read(&mut self, port: u16) -> u8 {
        if self.port_disabled(port) {
            return 0xFF;
        }
        match port {
            0x3C0 => self.ar_index,
            0x3C1 => self
                .ar
                .get(usize::from(self.ar_index & 0x1F))
                .copied()
                .unwrap_or(0),
            0x3C2 => 0x00, // input status 0: no switch sense, no CRT interrupt
            0x3C4 => self.sr_index,
            0x3C5 => self.sr[usize::from(self.sr_index)],
            0x3C6 => self.dac.pel_mask,
            0x3C7 => self.dac.state,
            0x3C8 => self.dac.write_index,
            0x3C9 => self.dac.read_data(),
            0x3CA => self.feature,
            0x3CC => self.misc,
            0x3CE => self.gr_index,
            0x3CF => self.gr[usize::from(self.gr_index)],
            0x3B4 | 0x3D4 => self.cr_index,
            0x3B5 | 0x3D5 => self
                .cr
                .get(usize::from(self.cr_index))
                .copied()
                .unwrap_or(0),
            _ => 0xFF,
        }
    }

    /// Writes one port of 0x3B0–0x3DF.
    pub fn write(&mut self, port: u16, value: u8) {
        if self.port_disabled(port) {
            return;
        }
        match port {
            0x3C0 => {
                if self.ar_flip_flop {
                    self.write_ar(value);
                } else {
                    // The index also carries the palette address source bit (bit 5).
                    self.ar_index = value & 0x3F;
                }
                self.ar_flip_flop = !self.ar_flip_flop;
            }
            0x3C2 => self.misc = value & !0x10,
            0x3C4 => self.sr_index = value & 0x07,
            0x3C5 => {
                let i = usize::from(self.sr_index);
                self.sr[i] = value & SR_MASK[i];
            }
            0x3C6 => self.dac.pel_mask = value,
            0x3C7 => {
                self.dac.read_index = value;
                self.dac.sub_index = 0;
                self.dac.state = 3;
            }
            0x3C8 => {
                self.dac.write_index = value;
                self.dac.sub_index = 0;
                self.dac.state = 0;
            }
            0x3C9 => self.dac.write_data(value),
            0x3CE => self.gr_index = value & 0x0F,
            0x3CF => {
                let i = usize::from(self.gr_index);
                self.gr[i] = value & GR_MASK[i];
            }
            0x3B4 | 0x3D4 => self.cr_index = value,
            0x3B5 | 0x3D5 => self.write_cr(value),
            0x3BA | 0x3DA => self.feature = value & 0x0B,
            _ => {}
        }
    }

    fn write_ar(&mut self, value: u8) {
        let index = usize::from(self.ar_index & 0x1F);
        if let Some(&mask) = AR_MASK.get(index) {
            self.ar[index] = value & mask;
        }
    }

    fn write_cr(&mut self, value: u8) {
        let index = usize::from(self.cr_index);
        if index >= CR_COUNT {
            return;
        }
        // CR11 bit 7 write-protects CR00–CR07, except the line compare bit 8 in CR07.
        if self.cr[cr::V_RETRACE_END] & 0x80 != 0 && index <= cr::OVERFLOW {
            if index == cr::OVERFLOW {
                self.cr[index] = (self.cr[index] & !0x10) | (value & 0x10);
            }
            return;
        }
        self.cr[index] = value;
    }

    /// Start address (CR0C:CR0D) in planar (double-word) units.
    pub fn start_address(&self) -> u32 {
        u32::from(self.cr[cr::START_HI]) << 8 | u32::from(self.cr[cr::START_LO])
    }

    /// Cursor location (CR0E:CR0F) in planar units.
    pub fn cursor_address(&self) -> u32 {
        u32::from(self.cr[cr::CURSOR_HI]) << 8 | u32::from(self.cr[cr::CURSOR_LO])
    }

    /// Vertical display end + 1: the number of displayed scan lines.
    pub fn display_lines(&self) -> u32 {
        let o = self.cr[cr::OVERFLOW];
        (u32::from(self.cr[cr::V_DISP_END]) | u32::from(o & 0x02) << 7 | u32::from(o & 0x40) << 3)
            + 1
    }

    /// The 10-bit line compare value (scan line where the address counter restarts at 0).
    pub fn line_compare(&self) -> u32 {
        u32::from(self.cr[cr::LINE_COMPARE])
            | u32::from(self.cr[cr::OVERFLOW] & 0x10) << 4
            | u32::from(self.cr[cr::MAX_SCAN] & 0x40) << 3
    }

    /// Character clocks per line (CR01 + 1).
    pub fn display_chars(&self) -> u32 {
        u32::from(self.cr[cr::H_DISP_END]) + 1
    }

    /// Line pitch in bytes of interleaved VRAM (CR13 × 8).
    pub fn line_offset(&self) -> u32 {
        u32::from(self.cr[cr::OFFSET]) << 3
    }

    /// True when the attribute index's palette address source bit lets the display run.
    pub fn palette_source_on(&self) -> bool {
        self.ar_index & 0x20 != 0
    }

    /// True when SR1 turns the screen off.
    pub fn screen_off(&self) -> bool {
        self.sr[sr::CLOCKING] & 0x20 != 0
    }

    /// True when GR6 selects graphics (not alphanumeric) mode.
    pub fn graphics_mode(&self) -> bool {
        self.gr[gr::MISC] & 0x01 != 0
    }

    /// The DAC index attribute palette entry `i` (0–15) selects, before the pel mask.
    pub fn attribute_to_dac(&self, i: usize) -> u8 {
        let v = self.ar[i & 0x0F];
        let select = self.ar[ar::COLOR_SELECT];
        if self.ar[ar::MODE] & 0x80 != 0 {
            (select & 0x0F) << 4 | (v & 0x0F)
        } else {
            (select & 0x0C) << 4 | (v & 0x3F)
        }
    }
}
