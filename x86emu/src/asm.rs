//! A small x86-64 assembler for the native block generator: the instruction forms
//! [`crate::native`] emits, encoded straight into bytes in one pass. Branches to labels are
//! always `rel32` and patched when the code is finished.
//!
//! Register and operand names follow the usual assembler spelling (`rax`, `qword_ptr(rdi +
//! 8)`), so the generator reads like the code it makes.
#![allow(non_upper_case_globals)]

use std::ops::{Add, Mul, Sub};

/// An operand the assembler cannot encode (a generator mistake, never guest input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AsmError;

/// The result of emitting one instruction.
pub(crate) type Res = Result<(), AsmError>;

/// A 64-bit general register (0..16 in encoding order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R64(u8);
/// A 32-bit general register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R32(u8);
/// A 16-bit general register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R16(u8);
/// An 8-bit general register: the low byte of register `n`, or (`high`) AH..BH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct R8 {
    n: u8,
    high: bool,
}

pub(crate) const rax: R64 = R64(0);
pub(crate) const rcx: R64 = R64(1);
pub(crate) const rdx: R64 = R64(2);
pub(crate) const rsi: R64 = R64(6);
pub(crate) const rdi: R64 = R64(7);
pub(crate) const r8: R64 = R64(8);
pub(crate) const r9: R64 = R64(9);
pub(crate) const r10: R64 = R64(10);
pub(crate) const r11: R64 = R64(11);
pub(crate) const eax: R32 = R32(0);
pub(crate) const ecx: R32 = R32(1);
pub(crate) const edx: R32 = R32(2);
pub(crate) const r9d: R32 = R32(9);
pub(crate) const r10d: R32 = R32(10);
pub(crate) const r11d: R32 = R32(11);
pub(crate) const ax: R16 = R16(0);
pub(crate) const cx: R16 = R16(1);
pub(crate) const r11w: R16 = R16(11);
pub(crate) const al: R8 = R8 { n: 0, high: false };
pub(crate) const cl: R8 = R8 { n: 1, high: false };
pub(crate) const r10b: R8 = R8 { n: 10, high: false };
pub(crate) const ah: R8 = R8 { n: 0, high: true };

/// `[base + index * scale + disp]`; `scale` is the shift (0..=3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mem {
    base: Option<u8>,
    index: Option<(u8, u8)>,
    disp: i32,
}

/// A scaled index register (`rcx * 4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Index(u8, u8);

impl From<R64> for Mem {
    fn from(r: R64) -> Mem {
        Mem {
            base: Some(r.0),
            index: None,
            disp: 0,
        }
    }
}

impl From<Index> for Mem {
    fn from(i: Index) -> Mem {
        Mem {
            base: None,
            index: Some((i.0, i.1)),
            disp: 0,
        }
    }
}

impl Add<i32> for R64 {
    type Output = Mem;
    fn add(self, d: i32) -> Mem {
        Mem::from(self) + d
    }
}

impl Sub<i32> for R64 {
    type Output = Mem;
    fn sub(self, d: i32) -> Mem {
        Mem {
            disp: d.wrapping_neg(),
            ..Mem::from(self)
        }
    }
}

impl Add<R64> for R64 {
    type Output = Mem;
    fn add(self, i: R64) -> Mem {
        self + i * 1
    }
}

impl Mul<u32> for R64 {
    type Output = Index;
    fn mul(self, scale: u32) -> Index {
        Index(self.0, scale.trailing_zeros().min(3) as u8)
    }
}

impl Add<Index> for R64 {
    type Output = Mem;
    fn add(self, i: Index) -> Mem {
        Mem {
            base: Some(self.0),
            index: Some((i.0, i.1)),
            disp: 0,
        }
    }
}

impl Add<i32> for Index {
    type Output = Mem;
    fn add(self, d: i32) -> Mem {
        Mem::from(self) + d
    }
}

impl Add<i32> for Mem {
    type Output = Mem;
    fn add(self, d: i32) -> Mem {
        Mem {
            disp: self.disp.wrapping_add(d),
            ..self
        }
    }
}

/// A memory operand of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ptr {
    mem: Mem,
    size: u8,
}

pub(crate) fn qword_ptr(m: impl Into<Mem>) -> Ptr {
    Ptr {
        mem: m.into(),
        size: 8,
    }
}

pub(crate) fn dword_ptr(m: impl Into<Mem>) -> Ptr {
    Ptr {
        mem: m.into(),
        size: 4,
    }
}

pub(crate) fn word_ptr(m: impl Into<Mem>) -> Ptr {
    Ptr {
        mem: m.into(),
        size: 2,
    }
}

pub(crate) fn byte_ptr(m: impl Into<Mem>) -> Ptr {
    Ptr {
        mem: m.into(),
        size: 1,
    }
}

/// Any operand, as the encoder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Register `n` of `size` bytes (`high`: AH..BH).
    Reg {
        n: u8,
        size: u8,
        high: bool,
    },
    Mem(Ptr),
    /// An immediate; `wide`: given as a 64-bit value that may not fit 32 bits signed.
    Imm {
        v: i64,
        wide: bool,
    },
}

impl From<R64> for Op {
    fn from(r: R64) -> Op {
        Op::Reg {
            n: r.0,
            size: 8,
            high: false,
        }
    }
}

impl From<R32> for Op {
    fn from(r: R32) -> Op {
        Op::Reg {
            n: r.0,
            size: 4,
            high: false,
        }
    }
}

impl From<R16> for Op {
    fn from(r: R16) -> Op {
        Op::Reg {
            n: r.0,
            size: 2,
            high: false,
        }
    }
}

impl From<R8> for Op {
    fn from(r: R8) -> Op {
        Op::Reg {
            n: r.n,
            size: 1,
            high: r.high,
        }
    }
}

impl From<Ptr> for Op {
    fn from(p: Ptr) -> Op {
        Op::Mem(p)
    }
}

impl From<i32> for Op {
    fn from(v: i32) -> Op {
        Op::Imm {
            v: i64::from(v),
            wide: false,
        }
    }
}

impl From<u32> for Op {
    fn from(v: u32) -> Op {
        Op::Imm {
            v: i64::from(v),
            wide: false,
        }
    }
}

impl From<i64> for Op {
    fn from(v: i64) -> Op {
        Op::Imm { v, wide: true }
    }
}

impl From<u64> for Op {
    fn from(v: u64) -> Op {
        Op::Imm {
            v: v as i64,
            wide: true,
        }
    }
}

/// A place in the code, bound by [`Asm::set_label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CodeLabel(u32);

/// Where a JMP goes: a label or an address in memory.
pub(crate) enum Target {
    Label(CodeLabel),
    Mem(Ptr),
}

impl From<CodeLabel> for Target {
    fn from(l: CodeLabel) -> Target {
        Target::Label(l)
    }
}

impl From<Ptr> for Target {
    fn from(p: Ptr) -> Target {
        Target::Mem(p)
    }
}

/// The register or memory operand of a ModRM byte.
#[derive(Clone, Copy)]
enum Rm {
    Reg(u8, bool),
    Mem(Mem),
}

/// Condition codes in encoding order.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(crate) enum Cc {
    O,
    No,
    B,
    Ae,
    E,
    Ne,
    Be,
    A,
    S,
    Ns,
    P,
    Np,
    L,
    Ge,
    Le,
    G,
}

/// Code being assembled.
#[derive(Default)]
pub(crate) struct Asm {
    buf: Vec<u8>,
    /// Offset of each label once bound.
    labels: Vec<Option<usize>>,
    /// `rel32` fields to patch: their offset and label.
    fixups: Vec<(usize, CodeLabel)>,
}

fn fits_i8(v: i64) -> bool {
    v == i64::from(v as i8)
}

fn fits_i32(v: i64) -> bool {
    v == i64::from(v as i32)
}

fn rm_of(o: Op) -> Result<(Rm, u8), AsmError> {
    match o {
        Op::Reg { n, size, high } => Ok((Rm::Reg(n, high), size)),
        Op::Mem(p) => Ok((Rm::Mem(p.mem), p.size)),
        Op::Imm { .. } => Err(AsmError),
    }
}

macro_rules! conditions {
    ($($j:ident $set:ident $cmov:ident = $cc:ident;)*) => {
        impl Asm {
            $(
                pub(crate) fn $j(&mut self, l: CodeLabel) -> Res {
                    self.jcc(Cc::$cc, l)
                }
                pub(crate) fn $set(&mut self, r: R8) -> Res {
                    self.setcc(Cc::$cc, r)
                }
                pub(crate) fn $cmov(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
                    self.cmovcc(Cc::$cc, a.into(), b.into())
                }
            )*
        }
    };
}

conditions! {
    jo seto cmovo = O;
    jno setno cmovno = No;
    jb setb cmovb = B;
    jae setae cmovae = Ae;
    je sete cmove = E;
    jne setne cmovne = Ne;
    jbe setbe cmovbe = Be;
    ja seta cmova = A;
    js sets cmovs = S;
    jns setns cmovns = Ns;
    jp setp cmovp = P;
    jnp setnp cmovnp = Np;
    jl setl cmovl = L;
    jge setge cmovge = Ge;
    jle setle cmovle = Le;
    jg setg cmovg = G;
}

macro_rules! alu_ops {
    ($($name:ident = $n:expr;)*) => {
        impl Asm {
            $(
                pub(crate) fn $name(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
                    self.alu($n, a.into(), b.into())
                }
            )*
        }
    };
}

alu_ops! {
    add = 0;
    or = 1;
    adc = 2;
    sbb = 3;
    and = 4;
    sub = 5;
    xor = 6;
    cmp = 7;
}

macro_rules! group2 {
    ($($name:ident = $n:expr;)*) => {
        impl Asm {
            $(
                pub(crate) fn $name(&mut self, a: impl Into<Op>, count: impl Into<Op>) -> Res {
                    self.shift($n, a.into(), count.into())
                }
            )*
        }
    };
}

group2! {
    rol = 0;
    ror = 1;
    shl = 4;
    shr = 5;
    sar = 7;
}

macro_rules! group3 {
    ($($name:ident = $op:expr, $n:expr;)*) => {
        impl Asm {
            $(
                pub(crate) fn $name(&mut self, a: impl Into<Op>) -> Res {
                    let (rm, size) = rm_of(a.into())?;
                    self.modrm(size, true, &[$op | u8::from(size != 1)], $n, rm)
                }
            )*
        }
    };
}

group3! {
    inc = 0xfe, 0;
    dec = 0xfe, 1;
    not = 0xf6, 2;
    neg = 0xf6, 3;
    mul = 0xf6, 4;
    div = 0xf6, 6;
}

impl Asm {
    /// An empty assembler.
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(1024),
            ..Self::default()
        }
    }

    /// A new, unbound label.
    pub(crate) fn create_label(&mut self) -> CodeLabel {
        self.labels.push(None);
        CodeLabel(self.labels.len() as u32 - 1)
    }

    /// Binds `l` to the current position.
    pub(crate) fn set_label(&mut self, l: &mut CodeLabel) -> Res {
        let slot = self.labels.get_mut(l.0 as usize).ok_or(AsmError)?;
        if slot.is_some() {
            return Err(AsmError);
        }
        *slot = Some(self.buf.len());
        Ok(())
    }

    /// The offset `l` was bound to.
    pub(crate) fn label_offset(&self, l: &CodeLabel) -> Option<usize> {
        self.labels.get(l.0 as usize).copied().flatten()
    }

    /// Patches the branches and returns the code.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, AsmError> {
        for &(at, l) in &self.fixups {
            let to = self.label_offset(&l).ok_or(AsmError)?;
            let rel = to as i64 - (at as i64 + 4);
            let rel = i32::try_from(rel).map_err(|_| AsmError)?;
            self.buf[at..at + 4].copy_from_slice(&rel.to_le_bytes());
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Raw bytes.
    pub(crate) fn db(&mut self, bytes: &[u8]) -> Res {
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn ret(&mut self) -> Res {
        self.db(&[0xc3])
    }

    pub(crate) fn lahf(&mut self) -> Res {
        self.db(&[0x9f])
    }

    pub(crate) fn sahf(&mut self) -> Res {
        self.db(&[0x9e])
    }

    /// Encodes `opcode` with operand size `size` (REX.W for 8 when `w`), ModRM reg field
    /// `reg` (a register number or an opcode extension) and the register or memory `rm`.
    /// `reg_byte`: `reg` names a byte register.
    fn modrm_full(
        &mut self,
        size: u8,
        w: bool,
        opcode: &[u8],
        reg: u8,
        rm: Rm,
        reg_byte: Option<bool>,
    ) -> Res {
        if size == 2 {
            self.buf.push(0x66);
        }
        let byte = size == 1;
        let mut rex = 0u8;
        if w && size == 8 {
            rex |= 8;
        }
        if reg >= 8 {
            rex |= 4;
        }
        // A low byte register 4..7 (SPL..DIL) needs a REX prefix; AH..BH must not have one.
        let mut force = false;
        let mut high = false;
        let reg_high = byte && reg_byte == Some(true);
        if byte && reg_byte == Some(false) && (4..8).contains(&reg) {
            force = true;
        }
        high |= reg_high;
        match rm {
            Rm::Reg(n, h) => {
                if n >= 8 {
                    rex |= 1;
                }
                if byte {
                    if h {
                        high = true;
                    } else if (4..8).contains(&n) {
                        force = true;
                    }
                }
            }
            Rm::Mem(m) => {
                if m.base.is_some_and(|b| b >= 8) {
                    rex |= 1;
                }
                if m.index.is_some_and(|(i, _)| i >= 8) {
                    rex |= 2;
                }
            }
        }
        if rex != 0 || force {
            if high {
                return Err(AsmError);
            }
            self.buf.push(0x40 | rex);
        }
        self.buf.extend_from_slice(opcode);
        let r = ((if reg_high { reg + 4 } else { reg }) & 7) << 3;
        match rm {
            Rm::Reg(n, h) => {
                let n = if h { n + 4 } else { n };
                self.buf.push(0xc0 | r | (n & 7));
            }
            Rm::Mem(m) => self.mem(r, m)?,
        }
        Ok(())
    }

    fn modrm(&mut self, size: u8, w: bool, opcode: &[u8], reg: u8, rm: Rm) -> Res {
        self.modrm_full(size, w, opcode, reg, rm, None)
    }

    /// ModRM (mod and r/m), SIB and displacement of `m`, with the reg field `r` (shifted).
    fn mem(&mut self, r: u8, m: Mem) -> Res {
        if m.index.is_some_and(|(i, _)| i == 4) {
            // RSP cannot be an index.
            return Err(AsmError);
        }
        let d = i64::from(m.disp);
        match (m.base, m.index) {
            (None, None) => {
                // Absolute [disp32] through a SIB byte without base or index.
                self.buf.extend_from_slice(&[0x04 | r, 0x25]);
                self.buf.extend_from_slice(&m.disp.to_le_bytes());
            }
            (None, Some((i, s))) => {
                self.buf
                    .extend_from_slice(&[0x04 | r, (s << 6) | ((i & 7) << 3) | 5]);
                self.buf.extend_from_slice(&m.disp.to_le_bytes());
            }
            (Some(b), index) => {
                // RBP/R13 as base have no form without a displacement.
                let (mode, disp_len) = if d == 0 && b & 7 != 5 {
                    (0x00, 0)
                } else if fits_i8(d) {
                    (0x40, 1)
                } else {
                    (0x80, 4)
                };
                match index {
                    None if b & 7 != 4 => self.buf.push(mode | r | (b & 7)),
                    // RSP/R12 as base need a SIB byte (index 100: none).
                    None => self.buf.extend_from_slice(&[mode | r | 4, 0x24]),
                    Some((i, s)) => self
                        .buf
                        .extend_from_slice(&[mode | r | 4, (s << 6) | ((i & 7) << 3) | (b & 7)]),
                }
                match disp_len {
                    1 => self.buf.push(m.disp as u8),
                    4 => self.buf.extend_from_slice(&m.disp.to_le_bytes()),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// The immediate of `size` bytes (at most 4; 8-byte operands take a sign-extended 4).
    fn imm(&mut self, size: u8, v: i64) -> Res {
        match size {
            1 => self.buf.push(v as u8),
            2 => self.buf.extend_from_slice(&(v as u16).to_le_bytes()),
            _ => {
                if size == 8 && !fits_i32(v) {
                    return Err(AsmError);
                }
                self.buf.extend_from_slice(&(v as u32).to_le_bytes());
            }
        }
        Ok(())
    }

    /// ADD OR ADC SBB AND SUB XOR CMP (`n` in that order).
    fn alu(&mut self, n: u8, a: Op, b: Op) -> Res {
        let (rm, size) = rm_of(a)?;
        let wide = u8::from(size != 1);
        match b {
            Op::Reg {
                n: r,
                size: rs,
                high,
            } if rs == size => self.modrm_full(size, true, &[(n << 3) | wide], r, rm, Some(high)),
            Op::Mem(p) if p.size == size => match rm {
                Rm::Reg(r, high) => self.modrm_full(
                    size,
                    true,
                    &[(n << 3) | 2 | wide],
                    r,
                    Rm::Mem(p.mem),
                    Some(high),
                ),
                Rm::Mem(_) => Err(AsmError),
            },
            Op::Imm { v, .. } => {
                if size == 1 {
                    self.modrm(size, true, &[0x80], n, rm)?;
                    self.imm(1, v)
                } else if fits_i8(v) {
                    self.modrm(size, true, &[0x83], n, rm)?;
                    self.imm(1, v)
                } else {
                    self.modrm(size, true, &[0x81], n, rm)?;
                    self.imm(size, v)
                }
            }
            _ => Err(AsmError),
        }
    }

    pub(crate) fn test(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
        let (rm, size) = rm_of(a.into())?;
        let wide = u8::from(size != 1);
        match b.into() {
            Op::Reg {
                n: r,
                size: rs,
                high,
            } if rs == size => self.modrm_full(size, true, &[0x84 | wide], r, rm, Some(high)),
            Op::Imm { v, .. } => {
                self.modrm(size, true, &[0xf6 | wide], 0, rm)?;
                self.imm(size, v)
            }
            _ => Err(AsmError),
        }
    }

    pub(crate) fn mov(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
        let (a, b) = (a.into(), b.into());
        let (rm, size) = rm_of(a)?;
        let wide = u8::from(size != 1);
        match (rm, b) {
            (
                _,
                Op::Reg {
                    n: r,
                    size: rs,
                    high,
                },
            ) if rs == size => self.modrm_full(size, true, &[0x88 | wide], r, rm, Some(high)),
            (Rm::Reg(r, high), Op::Mem(p)) if p.size == size => {
                self.modrm_full(size, true, &[0x8a | wide], r, Rm::Mem(p.mem), Some(high))
            }
            (Rm::Reg(r, false), Op::Imm { v, .. }) if size == 8 && !fits_i32(v) => {
                if let Ok(v) = u32::try_from(v) {
                    // MOV r32, imm32 zero-extends.
                    self.modrm_opcode_reg(4, 0xb8, r)?;
                    self.buf.extend_from_slice(&v.to_le_bytes());
                } else {
                    self.modrm_opcode_reg(8, 0xb8, r)?;
                    self.buf.extend_from_slice(&v.to_le_bytes());
                }
                Ok(())
            }
            (Rm::Reg(r, false), Op::Imm { v, .. }) if size == 4 => {
                self.modrm_opcode_reg(4, 0xb8, r)?;
                self.buf.extend_from_slice(&(v as u32).to_le_bytes());
                Ok(())
            }
            (_, Op::Imm { v, .. }) => {
                self.modrm(size, true, &[0xc6 | wide], 0, rm)?;
                self.imm(size, v)
            }
            _ => Err(AsmError),
        }
    }

    /// An opcode with the register in its low three bits (MOV r, imm; BSWAP).
    fn modrm_opcode_reg(&mut self, size: u8, opcode: u8, r: u8) -> Res {
        let rex = if size == 8 { 8 } else { 0 } | if r >= 8 { 1 } else { 0 };
        if rex != 0 {
            self.buf.push(0x40 | rex);
        }
        self.buf.push(opcode | (r & 7));
        Ok(())
    }

    /// MOVZX/MOVSX (`op` 0xB6/0xBE) into a 32- or 64-bit register.
    fn extend(&mut self, op: u8, a: Op, b: Op) -> Res {
        let Op::Reg { n: r, size, .. } = a else {
            return Err(AsmError);
        };
        let (rm, from) = rm_of(b)?;
        let opcode = [0x0f, op | u8::from(from == 2)];
        if from == 1 {
            // The source's byte-register rules decide the REX prefix.
            let Rm::Reg(..) = rm else {
                return self.modrm(size, true, &opcode, r, rm);
            };
            return self.extend_byte(size, &opcode, r, rm);
        }
        self.modrm(size, true, &opcode, r, rm)
    }

    fn extend_byte(&mut self, size: u8, opcode: &[u8], r: u8, rm: Rm) -> Res {
        let Rm::Reg(n, high) = rm else {
            return Err(AsmError);
        };
        let mut rex = if size == 8 { 8 } else { 0 } | if r >= 8 { 4 } else { 0 };
        if n >= 8 {
            rex |= 1;
        }
        let force = !high && (4..8).contains(&n);
        if rex != 0 || force {
            if high {
                return Err(AsmError);
            }
            self.buf.push(0x40 | rex);
        }
        self.buf.extend_from_slice(opcode);
        let n = if high { n + 4 } else { n };
        self.buf.push(0xc0 | ((r & 7) << 3) | (n & 7));
        Ok(())
    }

    pub(crate) fn movzx(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
        self.extend(0xb6, a.into(), b.into())
    }

    pub(crate) fn movsx(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
        self.extend(0xbe, a.into(), b.into())
    }

    pub(crate) fn movsxd(&mut self, a: R64, b: impl Into<Op>) -> Res {
        let (rm, _) = rm_of(b.into())?;
        self.modrm(8, true, &[0x63], a.0, rm)
    }

    pub(crate) fn lea(&mut self, a: R64, b: Ptr) -> Res {
        self.modrm(8, true, &[0x8d], a.0, Rm::Mem(b.mem))
    }

    /// Group 2: ROL ROR RCL RCR SHL SHR - SAR (`n`) by an immediate or CL.
    fn shift(&mut self, n: u8, a: Op, count: Op) -> Res {
        let (rm, size) = rm_of(a)?;
        let wide = u8::from(size != 1);
        match count {
            Op::Imm { v, .. } => {
                self.modrm(size, true, &[0xc0 | wide], n, rm)?;
                self.imm(1, v)
            }
            Op::Reg {
                n: 1,
                size: 1,
                high: false,
            } => self.modrm(size, true, &[0xd2 | wide], n, rm),
            _ => Err(AsmError),
        }
    }

    /// Two-operand IMUL.
    pub(crate) fn imul_2(&mut self, a: impl Into<Op>, b: impl Into<Op>) -> Res {
        let Op::Reg { n: r, size, .. } = a.into() else {
            return Err(AsmError);
        };
        let (rm, _) = rm_of(b.into())?;
        self.modrm(size, true, &[0x0f, 0xaf], r, rm)
    }

    /// BT r/m64, r64.
    pub(crate) fn bt(&mut self, a: R64, b: R64) -> Res {
        self.modrm(8, true, &[0x0f, 0xa3], b.0, Rm::Reg(a.0, false))
    }

    pub(crate) fn bswap(&mut self, a: impl Into<Op>) -> Res {
        let Op::Reg { n, size, .. } = a.into() else {
            return Err(AsmError);
        };
        let rex = if size == 8 { 8 } else { 0 } | if n >= 8 { 1 } else { 0 };
        if rex != 0 {
            self.buf.push(0x40 | rex);
        }
        self.buf.extend_from_slice(&[0x0f, 0xc8 | (n & 7)]);
        Ok(())
    }

    fn jcc(&mut self, cc: Cc, l: CodeLabel) -> Res {
        self.buf.extend_from_slice(&[0x0f, 0x80 | cc as u8]);
        self.rel32(l)
    }

    /// JZ (JE).
    pub(crate) fn jz(&mut self, l: CodeLabel) -> Res {
        self.jcc(Cc::E, l)
    }

    fn setcc(&mut self, cc: Cc, r: R8) -> Res {
        self.modrm_full(
            1,
            true,
            &[0x0f, 0x90 | cc as u8],
            0,
            Rm::Reg(r.n, r.high),
            None,
        )
    }

    fn cmovcc(&mut self, cc: Cc, a: Op, b: Op) -> Res {
        let Op::Reg { n: r, size, .. } = a else {
            return Err(AsmError);
        };
        let (rm, _) = rm_of(b)?;
        self.modrm(size, true, &[0x0f, 0x40 | cc as u8], r, rm)
    }

    pub(crate) fn jmp(&mut self, t: impl Into<Target>) -> Res {
        match t.into() {
            Target::Label(l) => {
                self.buf.push(0xe9);
                self.rel32(l)
            }
            Target::Mem(p) => self.modrm(4, false, &[0xff], 4, Rm::Mem(p.mem)),
        }
    }

    fn rel32(&mut self, l: CodeLabel) -> Res {
        if l.0 as usize >= self.labels.len() {
            return Err(AsmError);
        }
        self.fixups.push((self.buf.len(), l));
        self.buf.extend_from_slice(&[0; 4]);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
