//! Saved state of the standard VGA (see [`crate::saved_state`]).
//!
//! Kept: the PCI configuration space; every legacy register file (sequencer, CRTC, graphics
//! and attribute controllers with their indices and the attribute flip-flop, misc output,
//! feature control); the DAC with its palette, pel mask and port state machine; the
//! graphics controller latches; the Bochs VBE DISPI registers; the whole video memory (pages
//! that are all zero are left out of the encoding); the input status read counter and, with a
//! clock, where the clock stands in the retrace frame.
//!
//! Not kept: the host framebuffer and the renderer's caches (the first render after a restore
//! redraws everything), the clock and the expansion ROM (it belongs to the construction; the
//! configuration space check refuses a state from a VGA with another ROM size).

use super::memory::{Vram, VRAM_SIZE};
use super::registers::{
    Dac, Registers, AR_COUNT, AR_MASK, CR_COUNT, GR_COUNT, GR_MASK, SR_COUNT, SR_MASK,
};
use super::render::Renderer;
use super::vbe::{dispi::INDEX_COUNT, Vbe};
use super::{StdVga, FRAME_LINES, LINE_NS};
use crate::pci::ConfigSpaceState;
use crate::saved_state::{decode, encode, ensure, RestoreError, SaveRestore, SavedState};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Version of [`VgaStateV1`].
pub(super) const VERSION: u32 = 1;
/// The device name saved states carry.
pub(super) const DEVICE: &str = "vga";
/// Video memory is saved in pages of this many bytes.
pub(super) const PAGE: usize = 4096;

/// Bytes encoded as one byte string (a length and the bytes) rather than a sequence of
/// numbers, so that megabytes of video memory encode and decode quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bytes(pub(super) Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(v.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PAGE));
        while let Some(b) = seq.next_element()? {
            v.push(b);
        }
        Ok(Bytes(v))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// The whole VGA.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VgaStateV1 {
    pub(super) config: ConfigSpaceState,
    pub(super) regs: RegistersV1,
    pub(super) vbe: VbeV1,
    /// Size of the video memory the state was saved from (must equal this VGA's).
    pub(super) vram_size: u64,
    /// The pages of video memory that are not all zero, in ascending order.
    pub(super) vram_pages: Vec<VramPageV1>,
    /// The graphics controller's latches (plane 0 in the low byte).
    pub(super) latch: u32,
    /// Input status 1 reads so far (the retrace counter without a clock).
    pub(super) status_reads: u32,
    /// With a clock: nanoseconds into the 60 Hz retrace frame at the moment of saving.
    pub(super) retrace_phase_ns: u64,
}

/// One saved page of video memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VramPageV1 {
    /// Page number (byte offset / [`PAGE`]).
    pub(super) index: u32,
    /// Its [`PAGE`] bytes.
    pub(super) bytes: Bytes,
}

/// The legacy register files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RegistersV1 {
    pub(super) sr_index: u8,
    pub(super) sr: [u8; SR_COUNT],
    pub(super) cr_index: u8,
    pub(super) cr: [u8; CR_COUNT],
    pub(super) gr_index: u8,
    pub(super) gr: [u8; GR_COUNT],
    pub(super) ar_index: u8,
    pub(super) ar: [u8; AR_COUNT],
    pub(super) ar_flip_flop: bool,
    pub(super) misc: u8,
    pub(super) feature: u8,
    pub(super) dac: DacV1,
}

/// The DAC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DacV1 {
    /// 256 × (red, green, blue).
    pub(super) palette: Bytes,
    pub(super) pel_mask: u8,
    pub(super) read_index: u8,
    pub(super) write_index: u8,
    pub(super) sub_index: u8,
    pub(super) state: u8,
    pub(super) cache: [u8; 3],
    pub(super) eight_bit: bool,
}

/// The Bochs VBE DISPI interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VbeV1 {
    pub(super) index: u16,
    pub(super) regs: [u16; INDEX_COUNT],
    pub(super) line_offset: u32,
    pub(super) start: u32,
}

const FRAME_NS: u64 = LINE_NS * FRAME_LINES;

impl VgaStateV1 {
    fn from_device(v: &StdVga) -> Self {
        let r = &v.regs;
        let (regs, line_offset, start) = v.vbe.saved_parts();
        let zero = [0u8; PAGE];
        let vram_pages = v
            .vram
            .bytes
            .chunks(PAGE)
            .enumerate()
            .filter(|(_, page)| *page != &zero[..])
            .map(|(i, page)| VramPageV1 {
                index: i as u32,
                bytes: Bytes(page.to_vec()),
            })
            .collect();
        Self {
            config: v.config.saved(),
            regs: RegistersV1 {
                sr_index: r.sr_index,
                sr: r.sr,
                cr_index: r.cr_index,
                cr: r.cr,
                gr_index: r.gr_index,
                gr: r.gr,
                ar_index: r.ar_index,
                ar: r.ar,
                ar_flip_flop: r.ar_flip_flop,
                misc: r.misc,
                feature: r.feature,
                dac: DacV1 {
                    palette: Bytes(r.dac.palette.to_vec()),
                    pel_mask: r.dac.pel_mask,
                    read_index: r.dac.read_index,
                    write_index: r.dac.write_index,
                    sub_index: r.dac.sub_index,
                    state: r.dac.state,
                    cache: r.dac.cache,
                    eight_bit: r.dac.eight_bit,
                },
            },
            vbe: VbeV1 {
                index: v.vbe.index,
                regs,
                line_offset,
                start,
            },
            vram_size: v.vram.bytes.len() as u64,
            vram_pages,
            latch: v.vram.latch(),
            status_reads: v.status_reads,
            retrace_phase_ns: v.clock.as_ref().map_or(0, |c| v.retrace_ns(c.now_ns())),
        }
    }

    /// Checks the register values and builds the runtime registers.
    fn registers(&self) -> Result<Registers, RestoreError> {
        let r = &self.regs;
        let c = |ok, reason: &str| ensure(ok, DEVICE, reason);
        let within =
            |values: &[u8], masks: &[u8]| values.iter().zip(masks).all(|(v, m)| v & !m == 0);
        c(
            usize::from(r.sr_index) < SR_COUNT,
            "sequencer index out of range",
        )?;
        c(
            usize::from(r.gr_index) < GR_COUNT,
            "graphics index out of range",
        )?;
        c(r.ar_index <= 0x3F, "attribute index out of range")?;
        c(
            within(&r.sr, &SR_MASK),
            "sequencer register bits that do not exist",
        )?;
        c(
            within(&r.gr, &GR_MASK),
            "graphics register bits that do not exist",
        )?;
        c(
            within(&r.ar, &AR_MASK),
            "attribute register bits that do not exist",
        )?;
        c(r.misc & 0x10 == 0, "misc output bit 4 set")?;
        c(
            r.feature & !0x0B == 0,
            "feature control bits that do not exist",
        )?;
        let d = &r.dac;
        let palette: [u8; 768] =
            d.palette
                .0
                .as_slice()
                .try_into()
                .map_err(|_| RestoreError::Corrupt {
                    device: DEVICE.into(),
                    reason: format!("DAC palette of {} bytes (expected 768)", d.palette.0.len()),
                })?;
        c(d.sub_index < 3, "DAC component index out of range")?;
        c(matches!(d.state, 0 | 3), "DAC state is not 0 or 3")?;
        Ok(Registers {
            sr_index: r.sr_index,
            sr: r.sr,
            cr_index: r.cr_index,
            cr: r.cr,
            gr_index: r.gr_index,
            gr: r.gr,
            ar_index: r.ar_index,
            ar: r.ar,
            ar_flip_flop: r.ar_flip_flop,
            misc: r.misc,
            feature: r.feature,
            dac: Dac {
                palette,
                pel_mask: d.pel_mask,
                read_index: d.read_index,
                write_index: d.write_index,
                sub_index: d.sub_index,
                state: d.state,
                cache: d.cache,
                eight_bit: d.eight_bit,
            },
        })
    }

    /// Checks the page list and builds the video memory.
    fn vram(&self) -> Result<Vram, RestoreError> {
        let c = |ok, reason: String| ensure(ok, DEVICE, reason);
        c(
            self.vram_size == VRAM_SIZE as u64,
            format!(
                "video memory of {} bytes, this VGA has {VRAM_SIZE}",
                self.vram_size
            ),
        )?;
        let pages = VRAM_SIZE / PAGE;
        let mut bytes = vec![0u8; VRAM_SIZE];
        let mut next = 0usize;
        for p in &self.vram_pages {
            let index = p.index as usize;
            c(
                index >= next && index < pages,
                format!("video memory page {index} out of order or past the end"),
            )?;
            c(
                p.bytes.0.len() == PAGE,
                format!("video memory page {index} of {} bytes", p.bytes.0.len()),
            )?;
            bytes[index * PAGE..(index + 1) * PAGE].copy_from_slice(&p.bytes.0);
            next = index + 1;
        }
        Vram::restored(bytes, self.latch).ok_or_else(|| RestoreError::Corrupt {
            device: DEVICE.into(),
            reason: "video memory size".into(),
        })
    }
}

impl SaveRestore for StdVga {
    fn save(&mut self) -> SavedState {
        encode(DEVICE, VERSION, &VgaStateV1::from_device(self))
    }

    fn restore(&mut self, state: &SavedState) -> Result<(), RestoreError> {
        let s: VgaStateV1 = decode(state, DEVICE, VERSION)?;
        let regs = s.registers()?;
        let b = &s.vbe;
        let vbe = Vbe::from_saved(b.index, b.regs, b.line_offset, b.start);
        let Some(vbe) = vbe else {
            return Err(RestoreError::Corrupt {
                device: DEVICE.into(),
                reason: "VBE DISPI registers out of range".into(),
            });
        };
        ensure(
            s.retrace_phase_ns < FRAME_NS,
            DEVICE,
            "retrace phase longer than a frame",
        )?;
        let mut config = self.config.clone();
        config.restore_saved(&s.config, DEVICE)?;
        let vram = s.vram()?;
        // Nothing can fail from here on.
        self.config = config;
        self.regs = regs;
        self.vbe = vbe;
        self.vram = vram;
        self.status_reads = s.status_reads;
        if let Some(clock) = &self.clock {
            let now = clock.now_ns() % FRAME_NS;
            self.retrace_offset = (s.retrace_phase_ns + FRAME_NS - now) % FRAME_NS;
        }
        // The host framebuffer was not saved: the next render redraws all of it.
        self.renderer = Renderer::default();
        self.renderer.invalidate();
        self.framebuffer.lock().mark_all_dirty();
        Ok(())
    }
}
