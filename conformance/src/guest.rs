//! The conformance guests, assembled with iced-x86.
//!
//! Every guest starts in real mode at 0000:1000. For protected and long mode a prologue loads
//! the GDT and switches modes itself; the body is then assembled for the target bitness. Bodies
//! use EBX (= 0) as the base for result stores and ESI (FS-relative) for MMIO, which encode in
//! all three bitnesses.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use std::collections::HashMap;

/// Processor mode a case runs its body in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 16-bit real mode.
    Real,
    /// 32-bit protected mode, flat segments, no paging.
    Protected32,
    /// 64-bit long mode, identity-mapped with 2 MiB pages.
    Long64,
}

/// Guest RAM size (below the legacy video hole).
pub const RAM_SIZE: u64 = 0xa_0000;
/// Unclaimed-by-RAM address that the harness answers as MMIO.
pub const MMIO_BASE: u64 = 0xa_0000;
/// Where results are stored by the guests.
pub const RESULTS: u64 = 0x8200;
/// Source buffer of `rep outsb`.
pub const OUT_BUFFER: u64 = 0x8000;
/// Destination buffer of `rep insb`.
pub const IN_BUFFER: u64 = 0x8100;
/// Vector base the guest programs into the master PIC.
pub const PIC_BASE: u8 = 0x30;
/// ISA interrupt line the harness pulses.
pub const PIC_IRQ: u8 = 5;
/// Vector the PIC delivers for [`PIC_IRQ`].
pub const PIC_VECTOR: u8 = PIC_BASE + PIC_IRQ;
/// Real-mode stack top.
pub const STACK: u64 = 0x7000;
/// GDT location and its pseudo-descriptor.
pub const GDT: u64 = 0x9000;
/// GDTR pseudo-descriptor.
pub const GDTR: u64 = 0x9100;
/// IDTR pseudo-descriptor (protected and long mode).
pub const IDTR: u64 = 0x9200;
/// An IDTR with limit 0 (triple fault case).
pub const NULL_IDTR: u64 = 0x9300;
/// Protected-mode IDT.
pub const IDT32: u64 = 0x9800;
/// Long-mode IDT.
pub const IDT64: u64 = 0xb000;
/// Page tables: PML4, PDPT, PD.
pub const PAGE_TABLES: u64 = 0x2_0000;
/// Reset vector code (in the read-only ROM slot at 4 GiB − 64 KiB).
pub const ROM_BASE: u64 = 0xffff_0000;

const ENTRY16: u64 = 0x1000;
const ENTRY32: u64 = 0x2000;
const ENTRY64: u64 = 0x3000;
const CODE32_SEL: u16 = 0x08;
const DATA32_SEL: u16 = 0x10;
const CODE64_SEL: u16 = 0x18;

/// An assembled guest: byte chunks to place in memory and named addresses.
#[derive(Debug, Default)]
pub struct GuestImage {
    /// (guest-physical address, bytes) to copy into RAM.
    pub chunks: Vec<(u64, Vec<u8>)>,
    /// Named addresses (labels) inside the code.
    pub symbols: HashMap<&'static str, u64>,
    /// Mode of the body (selects the interrupt table written by the harness).
    pub mode: Option<Mode>,
}

/// A body: emits code into an assembler, naming labels it wants exported.
type Body<'a> = &'a dyn Fn(&mut Asm) -> Result<(), IcedError>;

/// An assembler for one chunk plus its exported labels.
pub struct Asm {
    /// The iced assembler.
    pub a: CodeAssembler,
    labels: Vec<(&'static str, CodeLabel)>,
}

impl Asm {
    fn new(bits: u32) -> Self {
        Self {
            a: CodeAssembler::new(bits).expect("valid bitness"),
            labels: Vec::new(),
        }
    }

    /// Places an exported label before the next instruction.
    pub fn label(&mut self, name: &'static str) -> Result<(), IcedError> {
        let mut l = self.a.create_label();
        self.a.set_label(&mut l)?;
        self.labels.push((name, l));
        Ok(())
    }

    fn finish(mut self, base: u64, image: &mut GuestImage) {
        let r = self
            .a
            .assemble_options(base, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .expect("conformance guest assembles");
        for (name, l) in &self.labels {
            image
                .symbols
                .insert(name, r.label_ip(l).expect("label placed"));
        }
        image.chunks.push((base, r.inner.code_buffer));
    }
}

fn build(mode: Mode, body: Body) -> GuestImage {
    build_result(mode, body).expect("conformance guest assembles")
}

fn build_result(mode: Mode, body: Body) -> Result<GuestImage, IcedError> {
    let mut image = GuestImage {
        mode: Some(mode),
        ..GuestImage::default()
    };
    let mut r = Asm::new(16);
    r.a.cli()?;
    r.a.xor(eax, eax)?;
    r.a.mov(ds, ax)?;
    r.a.mov(es, ax)?;
    r.a.mov(ss, ax)?;
    r.a.mov(sp, STACK as u32)?;
    r.a.mov(ax, (MMIO_BASE >> 4) as u32)?;
    r.a.mov(fs, ax)?;
    r.a.xor(ebx, ebx)?;
    r.a.xor(esi, esi)?;
    if mode == Mode::Real {
        body(&mut r)?;
        r.finish(ENTRY16, &mut image);
        return Ok(image);
    }
    r.a.lgdt(ptr(GDTR))?;
    r.a.mov(eax, cr0)?;
    r.a.or(eax, 1)?;
    r.a.mov(cr0, eax)?;
    // jmp far dword CODE32_SEL:ENTRY32
    let mut far = vec![0x66, 0xea];
    far.extend_from_slice(&(ENTRY32 as u32).to_le_bytes());
    far.extend_from_slice(&CODE32_SEL.to_le_bytes());
    r.a.db(&far)?;
    r.finish(ENTRY16, &mut image);

    let mut p = Asm::new(32);
    p.a.mov(ax, u32::from(DATA32_SEL))?;
    p.a.mov(ds, ax)?;
    p.a.mov(es, ax)?;
    p.a.mov(ss, ax)?;
    p.a.mov(fs, ax)?;
    p.a.mov(gs, ax)?;
    p.a.mov(esp, STACK as u32)?;
    p.a.xor(ebx, ebx)?;
    p.a.mov(esi, MMIO_BASE as u32)?;
    if mode == Mode::Protected32 {
        body(&mut p)?;
        p.finish(ENTRY32, &mut image);
        return Ok(image);
    }
    p.a.mov(eax, cr4)?;
    p.a.or(eax, 0x20)?; // PAE
    p.a.mov(cr4, eax)?;
    p.a.mov(eax, PAGE_TABLES as u32)?;
    p.a.mov(cr3, eax)?;
    p.a.mov(ecx, 0xc000_0080u32)?; // EFER
    p.a.rdmsr()?;
    p.a.or(eax, 0x100)?; // LME
    p.a.wrmsr()?;
    p.a.mov(eax, cr0)?;
    p.a.or(eax, 0x8000_0000u32 as i32)?; // PG
    p.a.mov(cr0, eax)?;
    let mut far = vec![0xea];
    far.extend_from_slice(&(ENTRY64 as u32).to_le_bytes());
    far.extend_from_slice(&CODE64_SEL.to_le_bytes());
    p.a.db(&far)?;
    p.finish(ENTRY32, &mut image);

    let mut l = Asm::new(64);
    l.a.mov(esp, STACK as u32)?;
    body(&mut l)?;
    l.finish(ENTRY64, &mut image);
    Ok(image)
}

fn res(disp: u64) -> AsmMemoryOperand {
    dword_ptr(ebx + disp as i32)
}

fn power_off_port(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.out(0xf4, al)?;
    a.hlt()
}

/// Port I/O of each size to port 0x10, then reads of each size from port 0x16.
pub fn port_io(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        let a = &mut s.a;
        a.mov(dx, 0x10u32)?;
        a.mov(al, 0x11u32)?;
        a.out(dx, al)?;
        a.mov(ax, 0x2233u32)?;
        a.out(dx, ax)?;
        a.mov(eax, 0x4455_6677u32)?;
        a.out(dx, eax)?;
        a.mov(dx, 0x16u32)?;
        a.xor(eax, eax)?;
        a.in_(al, dx)?;
        a.mov(res(RESULTS), eax)?;
        a.xor(eax, eax)?;
        a.in_(ax, dx)?;
        a.mov(res(RESULTS + 4), eax)?;
        a.in_(eax, dx)?;
        a.mov(res(RESULTS + 8), eax)?;
        power_off_port(a)
    })
}

/// `rep outsb` of five bytes to port 0x11 and `rep insb` of five bytes from port 0x12.
pub fn string_io(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        let a = &mut s.a;
        a.cld()?;
        a.mov(esi, OUT_BUFFER as u32)?;
        a.mov(ecx, 5u32)?;
        a.mov(dx, 0x11u32)?;
        a.rep().outsb()?;
        a.mov(edi, IN_BUFFER as u32)?;
        a.mov(ecx, 5u32)?;
        a.mov(dx, 0x12u32)?;
        a.rep().insb()?;
        a.mov(res(RESULTS), ecx)?;
        a.mov(res(RESULTS + 4), esi)?;
        a.mov(res(RESULTS + 8), edi)?;
        power_off_port(a)
    })
}

/// MMIO writes of 4, 2, 1 bytes and reads of 4, 2, 1 bytes plus one unclaimed read.
pub fn mmio(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        let a = &mut s.a;
        a.mov(eax, 0xcafe_babeu32)?;
        a.mov(dword_ptr(esi + 4).fs(), eax)?;
        a.mov(ax, 0x1234u32)?;
        a.mov(word_ptr(esi + 2).fs(), ax)?;
        a.mov(al, 0x56u32)?;
        a.mov(byte_ptr(esi + 1).fs(), al)?;
        a.mov(eax, dword_ptr(esi + 8).fs())?;
        a.mov(res(RESULTS), eax)?;
        a.movzx(eax, word_ptr(esi + 8).fs())?;
        a.mov(res(RESULTS + 4), eax)?;
        a.movzx(eax, byte_ptr(esi + 8).fs())?;
        a.mov(res(RESULTS + 8), eax)?;
        a.mov(eax, dword_ptr(esi + 0x100).fs())?;
        a.mov(res(RESULTS + 12), eax)?;
        power_off_port(a)
    })
}

/// Signals on port 0xF0, then `cli; hlt`.
pub fn hlt(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        s.a.out(0xf0, al)?;
        s.a.cli()?;
        s.a.hlt()?;
        s.label("after_hlt")?;
        power_off_port(&mut s.a)
    })
}

/// Programs the 8259 pair (master vectors at [`PIC_BASE`], only [`PIC_IRQ`] unmasked), loads
/// its IDT, enables interrupts, signals on port 0xF0 and halts; the handler for
/// [`PIC_VECTOR`] writes the vector to port 0x13 and powers off.
pub fn pic_interrupt(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        for (port, value) in [
            (0x20, 0x11),
            (0x21, u32::from(PIC_BASE)),
            (0x21, 0x04),
            (0x21, 0x01),
            (0xa0, 0x11),
            (0xa1, 0x70),
            (0xa1, 0x02),
            (0xa1, 0x01),
            (0x21, 0xff & !(1u32 << PIC_IRQ)),
            (0xa1, 0xff),
        ] {
            s.a.mov(al, value)?;
            s.a.out(port, al)?;
        }
        if mode != Mode::Real {
            s.a.lidt(ptr(IDTR))?;
        }
        s.a.sti()?;
        s.a.out(0xf0, al)?;
        let mut again = s.a.create_label();
        s.a.set_label(&mut again)?;
        s.a.hlt()?;
        s.a.jmp(again)?;
        s.label("handler")?;
        s.a.mov(al, u32::from(PIC_VECTOR))?;
        s.a.out(0x13, al)?;
        power_off_port(&mut s.a)
    })
}

/// Powers off through the port right after setting AL.
pub fn power_off(mode: Mode) -> GuestImage {
    build(mode, &|s| {
        s.a.mov(al, 0x99u32)?;
        s.a.out(0xf4, al)?;
        s.label("after_power_off")?;
        s.a.hlt()
    })
}

/// Requests a reset through port 0xCF9. The ROM's reset vector writes 0x5A to port 0x14.
pub fn reset() -> GuestImage {
    let mut image = build(Mode::Real, &|s| {
        s.a.mov(al, 6u32)?;
        s.a.mov(dx, 0xcf9u32)?;
        s.a.out(dx, al)?;
        s.a.hlt()
    });
    let mut rom = Asm::new(16);
    rom.a.mov(al, 0x5au32).expect("asm");
    rom.a.out(0x14, al).expect("asm");
    power_off_port(&mut rom.a).expect("asm");
    let mut chunk = GuestImage::default();
    rom.finish(0xfff0, &mut chunk);
    image
        .chunks
        .extend(chunk.chunks.into_iter().map(|(a, b)| (ROM_BASE + a, b)));
    image
}

/// In protected mode, loads an empty IDT and executes an undefined opcode:
/// #UD → #GP → #DF → triple fault.
pub fn triple_fault() -> GuestImage {
    build(Mode::Protected32, &|s| {
        s.a.lidt(ptr(NULL_IDTR))?;
        s.a.ud2()?;
        s.a.hlt()
    })
}
