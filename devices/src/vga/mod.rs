//! The standard VGA with Bochs VBE extensions, as QEMU's `-vga std` presents it.
//!
//! * PCI function 1234:1111, class 03 00 (subsystem 1AF4:1100). BAR 0 is the 16 MiB
//!   prefetchable linear framebuffer (all of video memory); the expansion ROM BAR holds the VGA
//!   BIOS handed to [`StdVga::new`] (Debian's `vgabios-stdvga.bin`), sized to the next power of
//!   two.
//! * Legacy decoding: ports [`VGA_PORT_RANGES`] (0x3B0–0x3DF, with the CRTC and input status
//!   at the monochrome or colour addresses per misc output bit 0), the memory window
//!   [`VGA_WINDOW_BASE`]..+[`VGA_WINDOW_SIZE`] decoded per GR6, and the Bochs VBE DISPI ports
//!   [`VBE_DISPI_PORT_RANGES`].
//! * 256 KiB of planar memory inside the 16 MiB, interleaved as QEMU keeps it (plane `p` of
//!   planar address `a` is VRAM byte `a * 4 + p`), with latches, write modes 0–3, read modes
//!   0–1, chain-4 and odd/even addressing.
//! * Rendering into a [`SharedFramebuffer`]: text modes, CGA 4- and 2-colour modes, 16-colour
//!   planar modes, mode 13h and VBE modes of 4, 8, 15, 16, 24 and 32 bpp. The machine calls
//!   [`StdVga::render`] (or the [`Poll`] capability) about 60 times a second; each call redraws
//!   only what changed and records dirty rectangles.
//!
//! Input status 1 (0x3DA) toggles display-enable and vertical retrace on an access counter (a
//! 64-read "frame" with 8 reads of retrace), or on real time with [`StdVga::with_clock`], so
//! guests that poll for retrace always make progress.

mod cp437;
mod memory;
mod registers;
mod render;
mod save;
mod vbe;

#[cfg(test)]
mod tests;

pub use memory::VRAM_SIZE;
pub use vbe::dispi;

use crate::framebuffer::{Framebuffer, SharedFramebuffer};
use crate::pci::{BarKind, ConfigSpace};
use crate::{read_bytewise, read_le, write_bytewise, write_le};
use crate::{Clock, Device, Mmio, PciFunction, Poll, PortIo};
use memory::Vram;
use registers::Registers;
use render::{Layout, Renderer};
use std::sync::Arc;
use vbe::Vbe;

/// Legacy VGA I/O ports: `(first port, count)`.
pub const VGA_PORT_RANGES: [(u16, u16); 1] = [(0x3B0, 0x30)];
/// Bochs VBE DISPI index (0x1CE) and data (0x1CF) ports.
pub const VBE_DISPI_PORT_RANGES: [(u16, u16); 1] = [(VBE_DISPI_INDEX_PORT, 2)];
/// The DISPI index port.
pub const VBE_DISPI_INDEX_PORT: u16 = 0x1CE;
/// The DISPI data port.
pub const VBE_DISPI_DATA_PORT: u16 = 0x1CF;
/// Start of the legacy memory window.
pub const VGA_WINDOW_BASE: u64 = 0xA0000;
/// Size of the legacy memory window (0xA0000–0xBFFFF).
pub const VGA_WINDOW_SIZE: u64 = 0x20000;
/// PCI vendor ID.
pub const VGA_PCI_VENDOR_ID: u16 = 0x1234;
/// PCI device ID.
pub const VGA_PCI_DEVICE_ID: u16 = 0x1111;
/// The BAR of the linear framebuffer.
pub const LFB_BAR: u8 = 0;
/// The BAR number [`PciFunction::bar_read`] uses for the expansion ROM.
pub const ROM_BAR: u8 = 6;
/// How often the machine should render (60 Hz).
pub const FRAME_INTERVAL_NS: u64 = 16_666_667;

/// Scan line period of the 640×480 timing (25.175 MHz, 800 clocks).
const LINE_NS: u64 = 31_778;
/// Scan lines per frame of that timing.
const FRAME_LINES: u64 = 525;

/// What the display currently shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayMode {
    /// Nothing (screen off or palette address source cleared, or an unusable geometry).
    Blank,
    /// Alphanumeric mode.
    Text {
        /// Characters per row.
        columns: u32,
        /// Rows.
        rows: u32,
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
    },
    /// A graphics mode.
    Graphics {
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
        /// Bits per pixel (2 for CGA 4-colour, 4 for planar, 8, 15, 16, 24 or 32).
        bpp: u8,
        /// True for a Bochs VBE mode.
        vbe: bool,
    },
}

impl std::fmt::Display for DisplayMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            DisplayMode::Blank => f.write_str("blank"),
            DisplayMode::Text {
                columns,
                rows,
                width,
                height,
            } => write!(f, "text {columns}x{rows} ({width}x{height})"),
            DisplayMode::Graphics {
                width,
                height,
                bpp,
                vbe,
            } => {
                let kind = if vbe { "VBE" } else { "VGA" };
                write!(f, "{kind} graphics {width}x{height}x{bpp}")
            }
        }
    }
}

/// The standard VGA (QEMU stdvga) with its Bochs VBE extensions.
pub struct StdVga {
    config: ConfigSpace,
    rom: Vec<u8>,
    regs: Registers,
    vbe: Vbe,
    vram: Vram,
    renderer: Renderer,
    framebuffer: SharedFramebuffer,
    clock: Option<Arc<dyn Clock>>,
    /// Added to the clock's time to place it in the retrace frame (keeps a restored state's
    /// retrace phase).
    retrace_offset: u64,
    status_reads: u32,
}

impl std::fmt::Debug for StdVga {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdVga")
            .field("mode", &self.mode())
            .field("rom", &self.rom.len())
            .finish()
    }
}

fn config_space(rom_size: Option<u64>) -> ConfigSpace {
    let mut c = ConfigSpace::new(VGA_PCI_VENDOR_ID, VGA_PCI_DEVICE_ID, 0x03, 0x00, 0x00, 0x00);
    c.set_subsystem(0x1AF4, 0x1100);
    if let Err(e) = c.add_bar(
        usize::from(LFB_BAR),
        BarKind::Memory32 { prefetchable: true },
        VRAM_SIZE as u64,
    ) {
        tracing::error!(%e, "vga: cannot define the framebuffer BAR");
    }
    if let Some(size) = rom_size {
        if let Err(e) = c.add_rom(size) {
            tracing::error!(%e, "vga: cannot define the ROM BAR");
        }
    }
    c
}

impl StdVga {
    /// A VGA whose expansion ROM holds `vga_bios` (empty: no ROM BAR), drawing into a new
    /// framebuffer (see [`Self::framebuffer`]).
    pub fn new(vga_bios: Vec<u8>) -> Self {
        Self::with_framebuffer(vga_bios, SharedFramebuffer::new(Framebuffer::new(640, 480)))
    }

    /// Like [`Self::new`], drawing into `framebuffer`.
    pub fn with_framebuffer(vga_bios: Vec<u8>, framebuffer: SharedFramebuffer) -> Self {
        let mut rom = vga_bios;
        let rom_size = (!rom.is_empty()).then(|| (rom.len() as u64).next_power_of_two().max(0x800));
        if let Some(size) = rom_size {
            rom.resize(size as usize, 0);
        }
        Self {
            config: config_space(rom_size),
            rom,
            regs: Registers::default(),
            vbe: Vbe::default(),
            vram: Vram::new(),
            renderer: Renderer::default(),
            framebuffer,
            clock: None,
            retrace_offset: 0,
            status_reads: 0,
        }
    }

    /// Times the retrace bits of input status 1 from `clock` (a 60 Hz 640×480 frame) instead
    /// of counting reads.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The framebuffer this device draws into.
    pub fn framebuffer(&self) -> SharedFramebuffer {
        self.framebuffer.clone()
    }

    /// Updates the framebuffer and its dirty rectangles. `now_ns` drives cursor and character
    /// blinking.
    pub fn render(&mut self, now_ns: u64) {
        let mut fb = self.framebuffer.lock();
        self.renderer
            .render(&self.regs, &self.vbe, &mut self.vram, &mut fb, now_ns);
    }

    /// Makes the next [`Self::render`] redraw everything.
    pub fn invalidate(&mut self) {
        self.renderer.invalidate();
    }

    /// What the display currently shows.
    pub fn mode(&self) -> DisplayMode {
        match render::layout(&self.regs, &self.vbe) {
            Layout::Blank => DisplayMode::Blank,
            Layout::Text(t) => DisplayMode::Text {
                columns: t.columns,
                rows: t.rows,
                width: t.columns * t.char_width,
                height: t.rows * t.char_height,
            },
            Layout::Graphics(g) => {
                let (bpp, vbe) = match g.kind {
                    render::GraphicsKind::Planar16 => (4, self.vbe.enabled()),
                    render::GraphicsKind::Cga4 => (2, false),
                    render::GraphicsKind::Packed256 => (8, false),
                    render::GraphicsKind::Vbe(b) => (b as u8, true),
                };
                DisplayMode::Graphics {
                    width: g.width,
                    height: g.height,
                    bpp,
                    vbe,
                }
            }
        }
    }

    /// The text-mode screen as one string per row (code page 437 mapped to Unicode), or `None`
    /// outside alphanumeric mode. Works while the display is blanked too.
    pub fn text_screen(&self) -> Option<Vec<String>> {
        if self.vbe.enabled() || self.regs.graphics_mode() {
            return None;
        }
        let t = render::text_layout(&self.regs)?;
        let mut lines = Vec::with_capacity(t.rows as usize);
        let mut row_addr = t.start;
        let mut line = 0;
        for _ in 0..t.rows {
            let text = (0..t.columns)
                .map(|col| {
                    let a = ((row_addr + col) & 0xFFFF) as usize;
                    cp437::to_char(self.vram.bytes[a * 4])
                })
                .collect();
            lines.push(text);
            row_addr += t.line_offset;
            let next = line + t.char_height;
            if line < t.line_compare && next >= t.line_compare {
                row_addr = 0;
            }
            line = next;
        }
        Some(lines)
    }

    fn input_status_1(&mut self) -> u8 {
        self.regs.ar_flip_flop = false;
        let (display_off, retrace) = match &self.clock {
            Some(clock) => {
                let t = self.retrace_ns(clock.now_ns());
                let line = t / LINE_NS;
                let blank = line >= 480 || t % LINE_NS >= LINE_NS * 4 / 5;
                (blank, (490..500).contains(&line))
            }
            None => {
                let phase = self.status_reads % 64;
                self.status_reads = self.status_reads.wrapping_add(1);
                let retrace = phase >= 56;
                (retrace || phase & 1 != 0, retrace)
            }
        };
        u8::from(display_off) | u8::from(retrace) << 3
    }

    /// Where time `now_ns` of the clock falls inside the 60 Hz frame of the retrace bits.
    fn retrace_ns(&self, now_ns: u64) -> u64 {
        now_ns.wrapping_add(self.retrace_offset) % (LINE_NS * FRAME_LINES)
    }

    fn read_port(&mut self, port: u16) -> u8 {
        match port {
            0x3BA | 0x3DA if !self.regs.port_disabled(port) => self.input_status_1(),
            0x3B0..=0x3DF => self.regs.read(port),
            _ => 0xFF,
        }
    }

    fn write_port(&mut self, port: u16, value: u8) {
        match port {
            0x3B0..=0x3DF => self.regs.write(port, value),
            _ => tracing::debug!(port, value, "vga: write to an unowned port"),
        }
    }

    fn write_dispi_data(&mut self, value: u16) {
        self.vbe.write_data(value, &mut self.regs, &mut self.vram);
    }
}

impl Device for StdVga {
    fn name(&self) -> &str {
        "vga"
    }
    fn port_io(&mut self) -> Option<&mut dyn PortIo> {
        Some(self)
    }
    fn mmio(&mut self) -> Option<&mut dyn Mmio> {
        Some(self)
    }
    fn pci(&mut self) -> Option<&mut dyn PciFunction> {
        Some(self)
    }
    fn poll(&mut self) -> Option<&mut dyn Poll> {
        Some(self)
    }
    fn save_restore(&mut self) -> Option<&mut dyn crate::saved_state::SaveRestore> {
        Some(self)
    }
    fn reset(&mut self) {
        self.config = config_space(self.config.rom_size());
        self.regs = Registers::default();
        self.vbe = Vbe::default();
        self.vram.reset();
        self.renderer.invalidate();
        self.status_reads = 0;
    }
}

impl PortIo for StdVga {
    fn io_read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            VBE_DISPI_INDEX_PORT => {
                let v = u64::from(self.vbe.index) | u64::from(self.vbe.read_data()) << 16;
                write_le(data, v);
            }
            VBE_DISPI_DATA_PORT => {
                write_le(data, u64::from(self.vbe.read_data()) | 0xFFFF_0000);
            }
            _ => read_bytewise(port, data, |p| self.read_port(p)),
        }
    }

    fn io_write(&mut self, port: u16, data: &[u8]) {
        let value = read_le(data);
        match port {
            VBE_DISPI_INDEX_PORT => {
                self.vbe.index = value as u16;
                if data.len() == 4 {
                    self.write_dispi_data((value >> 16) as u16);
                }
            }
            VBE_DISPI_DATA_PORT => self.write_dispi_data(value as u16),
            _ => write_bytewise(port, data, |p, v| self.write_port(p, v)),
        }
    }
}

impl Mmio for StdVga {
    fn mmio_read(&mut self, address: u64, data: &mut [u8]) {
        let mode = self.vbe.window_mode();
        for (i, b) in data.iter_mut().enumerate() {
            let a = address.wrapping_add(i as u64).wrapping_sub(VGA_WINDOW_BASE);
            *b = if a < VGA_WINDOW_SIZE {
                self.vram.window_read(&self.regs, mode, a as u32)
            } else {
                0xFF
            };
        }
    }

    fn mmio_write(&mut self, address: u64, data: &[u8]) {
        let mode = self.vbe.window_mode();
        for (i, &b) in data.iter().enumerate() {
            let a = address.wrapping_add(i as u64).wrapping_sub(VGA_WINDOW_BASE);
            if a < VGA_WINDOW_SIZE {
                self.vram.window_write(&self.regs, mode, a as u32, b);
            }
        }
    }
}

impl PciFunction for StdVga {
    fn config_read(&mut self, offset: u8, data: &mut [u8]) {
        self.config.read(usize::from(offset), data);
    }

    fn config_write(&mut self, offset: u8, data: &[u8]) {
        self.config.write(usize::from(offset), data);
    }

    fn config_space(&self) -> Option<&ConfigSpace> {
        Some(&self.config)
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            LFB_BAR => self.vram.read_linear(offset, data),
            ROM_BAR => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = usize::try_from(offset + i as u64)
                        .ok()
                        .and_then(|o| self.rom.get(o).copied())
                        .unwrap_or(0xFF);
                }
            }
            _ => data.fill(0xFF),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        if bar == LFB_BAR {
            self.vram.write_linear(offset, data);
        }
    }
}

impl Poll for StdVga {
    fn poll(&mut self, now_ns: u64) -> Option<u64> {
        self.render(now_ns);
        Some(now_ns.saturating_add(FRAME_INTERVAL_NS))
    }
}
