//! MMX, SSE and SSE2, FXSAVE/FXRSTOR and MXCSR.
//!
//! Every value is handled as a `u128` (XMM) or the low 64 bits of one (MMX). Floating point
//! goes through [`fp`], a software implementation that honours MXCSR exactly (rounding
//! control, FTZ, DAZ, exception flags); the host FPU is used only for the RCP/RSQRT
//! approximations.
//!
//! MMX registers alias the x87 registers: every MMX instruction first sets TOP to 0 and tags
//! all registers valid, so that MMk is `fpu.st[k]` (ST(k) = physical register k); writes store
//! the 64-bit significand and set the exponent field to all ones.

mod fp;
#[cfg(test)]
mod tests;

use crate::alu::{AF, CF, OF, PF, SF, ZF};
use crate::cpu::{seg_index, Bus, Cpu, Fault, R};
use crate::mmu::Access;
use crate::state::cr;
use fp::{Env, Fmt, F32, F64};
use iced_x86::{Instruction, Mnemonic as M, OpKind, Register};

/// MXCSR bits that software may set (FXSAVE reports it as MXCSR_MASK; DAZ included).
pub(crate) const MXCSR_MASK: u32 = 0xffff;

const LO64: u128 = u64::MAX as u128;
const LO32: u128 = u32::MAX as u128;

/// Executes `i` if it is an MMX/SSE/SSE2/FXSAVE-family instruction; `None` when it is not one.
pub(crate) fn execute(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> Option<R<()>> {
    if !ours(i.mnemonic()) {
        return None;
    }
    if i.has_lock_prefix() {
        return Some(Err(Fault::ud()));
    }
    Some(checks(cpu, i).and_then(|()| run(cpu, i, bus)))
}

fn ours(m: M) -> bool {
    matches!(
        m,
        M::Movd
            | M::Movq
            | M::Movaps
            | M::Movups
            | M::Movapd
            | M::Movupd
            | M::Movdqa
            | M::Movdqu
            | M::Lddqu
            | M::Movss
            | M::Movsd
            | M::Movlps
            | M::Movhps
            | M::Movlpd
            | M::Movhpd
            | M::Movhlps
            | M::Movlhps
            | M::Movnti
            | M::Movntdq
            | M::Movntps
            | M::Movntpd
            | M::Movntq
            | M::Maskmovdqu
            | M::Maskmovq
            | M::Movmskps
            | M::Movmskpd
            | M::Pmovmskb
            | M::Movq2dq
            | M::Movdq2q
            | M::Pand
            | M::Pandn
            | M::Por
            | M::Pxor
            | M::Andps
            | M::Andnps
            | M::Orps
            | M::Xorps
            | M::Andpd
            | M::Andnpd
            | M::Orpd
            | M::Xorpd
            | M::Paddb
            | M::Paddw
            | M::Paddd
            | M::Paddq
            | M::Psubb
            | M::Psubw
            | M::Psubd
            | M::Psubq
            | M::Paddsb
            | M::Paddsw
            | M::Paddusb
            | M::Paddusw
            | M::Psubsb
            | M::Psubsw
            | M::Psubusb
            | M::Psubusw
            | M::Pmullw
            | M::Pmulhw
            | M::Pmulhuw
            | M::Pmuludq
            | M::Pmaddwd
            | M::Pavgb
            | M::Pavgw
            | M::Pminub
            | M::Pmaxub
            | M::Pminsw
            | M::Pmaxsw
            | M::Psadbw
            | M::Pcmpeqb
            | M::Pcmpeqw
            | M::Pcmpeqd
            | M::Pcmpgtb
            | M::Pcmpgtw
            | M::Pcmpgtd
            | M::Psllw
            | M::Pslld
            | M::Psllq
            | M::Psrlw
            | M::Psrld
            | M::Psrlq
            | M::Psraw
            | M::Psrad
            | M::Pslldq
            | M::Psrldq
            | M::Pshufd
            | M::Pshuflw
            | M::Pshufhw
            | M::Pshufw
            | M::Shufps
            | M::Shufpd
            | M::Punpcklbw
            | M::Punpcklwd
            | M::Punpckldq
            | M::Punpcklqdq
            | M::Punpckhbw
            | M::Punpckhwd
            | M::Punpckhdq
            | M::Punpckhqdq
            | M::Unpcklps
            | M::Unpckhps
            | M::Unpcklpd
            | M::Unpckhpd
            | M::Packsswb
            | M::Packssdw
            | M::Packuswb
            | M::Pinsrw
            | M::Pextrw
            | M::Addps
            | M::Addpd
            | M::Addss
            | M::Addsd
            | M::Subps
            | M::Subpd
            | M::Subss
            | M::Subsd
            | M::Mulps
            | M::Mulpd
            | M::Mulss
            | M::Mulsd
            | M::Divps
            | M::Divpd
            | M::Divss
            | M::Divsd
            | M::Sqrtps
            | M::Sqrtpd
            | M::Sqrtss
            | M::Sqrtsd
            | M::Minps
            | M::Minpd
            | M::Minss
            | M::Minsd
            | M::Maxps
            | M::Maxpd
            | M::Maxss
            | M::Maxsd
            | M::Cmpps
            | M::Cmppd
            | M::Cmpss
            | M::Cmpsd
            | M::Comiss
            | M::Comisd
            | M::Ucomiss
            | M::Ucomisd
            | M::Rcpps
            | M::Rcpss
            | M::Rsqrtps
            | M::Rsqrtss
            | M::Cvtsi2ss
            | M::Cvtsi2sd
            | M::Cvtss2si
            | M::Cvtsd2si
            | M::Cvttss2si
            | M::Cvttsd2si
            | M::Cvtss2sd
            | M::Cvtsd2ss
            | M::Cvtps2pd
            | M::Cvtpd2ps
            | M::Cvtdq2ps
            | M::Cvtps2dq
            | M::Cvttps2dq
            | M::Cvtdq2pd
            | M::Cvtpd2dq
            | M::Cvttpd2dq
            | M::Cvtpi2ps
            | M::Cvtps2pi
            | M::Cvttps2pi
            | M::Cvtpi2pd
            | M::Cvtpd2pi
            | M::Cvttpd2pi
            | M::Ldmxcsr
            | M::Stmxcsr
            | M::Fxsave
            | M::Fxsave64
            | M::Fxrstor
            | M::Fxrstor64
            | M::Emms
    )
}

// ---- state access ----

fn xmm_index(r: Register) -> usize {
    r as usize - Register::XMM0 as usize
}

fn mm_index(r: Register) -> usize {
    r as usize - Register::MM0 as usize
}

fn get_xmm(cpu: &Cpu, k: usize) -> u128 {
    u128::from_le_bytes(cpu.state.fpu.xmm[k])
}

fn set_xmm(cpu: &mut Cpu, k: usize, v: u128) {
    cpu.state.fpu.xmm[k] = v.to_le_bytes();
}

fn get_mm(cpu: &Cpu, k: usize) -> u64 {
    let s = &cpu.state.fpu.st[k];
    u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
}

fn set_mm(cpu: &mut Cpu, k: usize, v: u64) {
    let s = &mut cpu.state.fpu.st[k];
    s[..8].copy_from_slice(&v.to_le_bytes());
    s[8] = 0xff;
    s[9] = 0xff;
}

/// The x87 → MMX transition: TOP = 0 (ST(k) becomes physical register k) and all tags valid.
fn mmx_transition(cpu: &mut Cpu) {
    let f = &mut cpu.state.fpu;
    let top = usize::from((f.fsw >> 11) & 7);
    if top != 0 {
        let old = f.st;
        for (k, slot) in f.st.iter_mut().enumerate() {
            *slot = old[(k + 8 - top) & 7];
        }
        f.fsw &= !(7 << 11);
    }
    f.ftw = 0xff;
}

/// #XM when CR4.OSXMMEXCPT, else #UD.
fn simd_fault(cpu: &Cpu) -> Fault {
    if cpu.state.cr4 & cr::OSXMMEXCPT != 0 {
        Fault {
            vector: 19,
            error: None,
            cr2: None,
        }
    } else {
        Fault::ud()
    }
}

/// Merges the flags an instruction raised into MXCSR; an unmasked one faults (and the caller
/// then leaves the destination alone).
fn finish(cpu: &mut Cpu, env: &Env) -> R<()> {
    let mx = cpu.state.fpu.mxcsr;
    cpu.state.fpu.mxcsr = mx | env.flags;
    if env.flags & !(mx >> 7) & 0x3f != 0 {
        return Err(simd_fault(cpu));
    }
    Ok(())
}

/// CR0/CR4 checks and the MMX transition.
fn checks(cpu: &mut Cpu, i: &Instruction) -> R<()> {
    let m = i.mnemonic();
    let cr0 = cpu.state.cr0;
    match m {
        M::Movnti => return Ok(()),
        M::Fxsave | M::Fxsave64 | M::Fxrstor | M::Fxrstor64 => {
            return if cr0 & (cr::EM | cr::TS) != 0 {
                Err(Fault::nm())
            } else {
                Ok(())
            };
        }
        _ => {}
    }
    let (mut has_mm, mut has_xmm) = (false, false);
    for n in 0..i.op_count() {
        if i.op_kind(n) == OpKind::Register {
            let r = i.op_register(n);
            has_mm |= r.is_mm();
            has_xmm |= r.is_xmm();
        }
    }
    let sse = has_xmm || matches!(m, M::Ldmxcsr | M::Stmxcsr);
    if cr0 & cr::EM != 0 {
        return Err(Fault::ud());
    }
    if sse && cpu.state.cr4 & cr::OSFXSR == 0 {
        return Err(Fault::ud());
    }
    if cr0 & cr::TS != 0 {
        return Err(Fault::nm());
    }
    if has_mm {
        mmx_transition(cpu);
    }
    Ok(())
}

// ---- operands ----

/// 16-byte memory operands must be aligned except for the explicitly unaligned forms.
fn needs_align(i: &Instruction) -> bool {
    i.memory_size().size() == 16
        && !matches!(
            i.mnemonic(),
            M::Movups | M::Movupd | M::Movdqu | M::Lddqu | M::Maskmovdqu
        )
}

fn check_align(cpu: &Cpu, segi: usize, ea: u64, len: u64) -> R<()> {
    let lin = cpu.linear(segi, ea, len, Access::Read)?;
    if lin & 15 != 0 {
        return Err(Fault::gp(0));
    }
    Ok(())
}

fn mem_read(cpu: &mut Cpu, i: &Instruction, size: usize, bus: &mut dyn Bus) -> R<u128> {
    let segi = seg_index(i.memory_segment());
    let ea = cpu.ea(i);
    if size == 16 && needs_align(i) {
        check_align(cpu, segi, ea, 16)?;
    }
    let mut b = [0u8; 16];
    cpu.read_mem(segi, ea, &mut b[..size], bus)?;
    Ok(u128::from_le_bytes(b))
}

/// Reads operand `n`: XMM (128 bits), MM (64), general register, memory (its size,
/// zero-extended) or immediate.
fn read(cpu: &mut Cpu, i: &Instruction, n: u32, bus: &mut dyn Bus) -> R<u128> {
    match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            Ok(if r.is_xmm() {
                get_xmm(cpu, xmm_index(r))
            } else if r.is_mm() {
                u128::from(get_mm(cpu, mm_index(r)))
            } else {
                u128::from(cpu.reg(r))
            })
        }
        OpKind::Memory => mem_read(cpu, i, i.memory_size().size(), bus),
        _ => Ok(u128::from(i.immediate(n))),
    }
}

/// Writes operand `n` (XMM: all 128 bits; MM: 64; general register with x86 width rules;
/// memory: the operand's size).
fn write(cpu: &mut Cpu, i: &Instruction, n: u32, v: u128, bus: &mut dyn Bus) -> R<()> {
    match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            if r.is_xmm() {
                set_xmm(cpu, xmm_index(r), v);
            } else if r.is_mm() {
                set_mm(cpu, mm_index(r), v as u64);
            } else {
                cpu.set_reg(r, v as u64);
            }
            Ok(())
        }
        OpKind::Memory => {
            let size = i.memory_size().size();
            let segi = seg_index(i.memory_segment());
            let ea = cpu.ea(i);
            if size == 16 && needs_align(i) {
                check_align(cpu, segi, ea, 16)?;
            }
            cpu.write_mem(segi, ea, &v.to_le_bytes()[..size], bus)
        }
        _ => Err(Fault::ud()),
    }
}

/// Vector length in bytes: 16 when operand `n` is an XMM register, else 8 (MMX).
fn vlen(i: &Instruction, n: u32) -> usize {
    if i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm() {
        16
    } else {
        8
    }
}

fn width_mask(len: usize) -> u128 {
    if len == 16 {
        u128::MAX
    } else {
        LO64
    }
}

// ---- lane helpers ----

fn lane(v: u128, k: usize, w: u32) -> u64 {
    let m = if w == 64 { u64::MAX } else { (1 << w) - 1 };
    (v >> (k as u32 * w)) as u64 & m
}

fn put(r: &mut u128, k: usize, w: u32, x: u64) {
    let m: u128 = if w == 64 { LO64 } else { (1 << w) - 1 };
    let sh = k as u32 * w;
    *r = (*r & !(m << sh)) | ((u128::from(x) & m) << sh);
}

fn map2(a: u128, b: u128, len: usize, w: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0;
    for k in 0..len * 8 / w as usize {
        put(&mut r, k, w, f(lane(a, k, w), lane(b, k, w)));
    }
    r
}

fn sx(v: u64, w: u32) -> i64 {
    ((v << (64 - w)) as i64) >> (64 - w)
}

fn ssat(v: i64, w: u32) -> u64 {
    v.clamp(-(1i64 << (w - 1)), (1i64 << (w - 1)) - 1) as u64
}

fn usat(v: i64, w: u32) -> u64 {
    v.clamp(0, (1i64 << w) - 1) as u64
}

fn unpack_lanes(a: u128, b: u128, len: usize, w: u32, high: bool) -> u128 {
    let n = len * 4 / w as usize;
    let base = if high { n } else { 0 };
    let mut r = 0;
    for k in 0..n {
        put(&mut r, 2 * k, w, lane(a, base + k, w));
        put(&mut r, 2 * k + 1, w, lane(b, base + k, w));
    }
    r
}

fn pack(a: u128, b: u128, len: usize, w: u32, sat: impl Fn(i64) -> u64) -> u128 {
    let n = len * 8 / w as usize;
    let mut r = 0;
    for k in 0..n {
        put(&mut r, k, w / 2, sat(sx(lane(a, k, w), w)));
        put(&mut r, n + k, w / 2, sat(sx(lane(b, k, w), w)));
    }
    r
}

fn shift_count(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> R<u64> {
    Ok(if i.op_kind(1) == OpKind::Immediate8 {
        u64::from(i.immediate8())
    } else {
        read(cpu, i, 1, bus)? as u64
    })
}

// ---- execution ----

/// dst = f(dst, src) over the vector length of operand 0.
fn int_op(
    cpu: &mut Cpu,
    i: &Instruction,
    bus: &mut dyn Bus,
    f: impl Fn(u128, u128, usize) -> u128,
) -> R<()> {
    let len = vlen(i, 0);
    let a = read(cpu, i, 0, bus)?;
    let b = read(cpu, i, 1, bus)?;
    write(cpu, i, 0, f(a, b, len) & width_mask(len), bus)
}

/// Lane-wise floating point: packed (all lanes) or scalar (lane 0, the rest from dst).
fn fp_op(
    cpu: &mut Cpu,
    i: &Instruction,
    bus: &mut dyn Bus,
    f: Fmt,
    scalar: bool,
    op: impl Fn(&mut Env, u64, u64) -> u64,
) -> R<()> {
    let a = read(cpu, i, 0, bus)?;
    let b = read(cpu, i, 1, bus)?;
    let mut env = Env::new(cpu.state.fpu.mxcsr);
    let w = f.bits();
    let n = if scalar { 1 } else { 128 / w as usize };
    let mut r = a;
    for k in 0..n {
        let z = op(&mut env, lane(a, k, w), lane(b, k, w));
        put(&mut r, k, w, z);
    }
    finish(cpu, &env)?;
    write(cpu, i, 0, r, bus)
}

/// Converts `n` lanes of `src` (width `wi`) into lanes of width `wo` placed over `base`.
#[allow(clippy::too_many_arguments)]
fn cvt(
    cpu: &mut Cpu,
    i: &Instruction,
    bus: &mut dyn Bus,
    n: usize,
    wi: u32,
    wo: u32,
    base: u128,
    op: impl Fn(&mut Env, u64) -> u64,
) -> R<()> {
    let b = read(cpu, i, 1, bus)?;
    let mut env = Env::new(cpu.state.fpu.mxcsr);
    let mut r = base;
    for k in 0..n {
        let z = op(&mut env, lane(b, k, wi));
        put(&mut r, k, wo, z);
    }
    finish(cpu, &env)?;
    write(cpu, i, 0, r, bus)
}

fn fmt_of(m: M) -> (Fmt, bool) {
    use M::*;
    match m {
        Addps | Subps | Mulps | Divps | Sqrtps | Minps | Maxps | Cmpps | Rcpps | Rsqrtps => {
            (F32, false)
        }
        Addss | Subss | Mulss | Divss | Sqrtss | Minss | Maxss | Cmpss | Rcpss | Rsqrtss
        | Comiss | Ucomiss => (F32, true),
        Addpd | Subpd | Mulpd | Divpd | Sqrtpd | Minpd | Maxpd | Cmppd => (F64, false),
        _ => (F64, true),
    }
}

fn run(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> R<()> {
    use M::*;
    let m = i.mnemonic();
    match m {
        // ---- data movement ----
        Movaps | Movups | Movapd | Movupd | Movdqa | Movdqu | Lddqu | Movntps | Movntpd
        | Movntdq | Movntq | Movnti | Movq2dq => {
            let v = read(cpu, i, 1, bus)?;
            write(cpu, i, 0, v, bus)
        }
        Movdq2q => {
            let v = read(cpu, i, 1, bus)?;
            write(cpu, i, 0, v & LO64, bus)
        }
        Movd | Movq => {
            let mask = if m == Movd { LO32 } else { LO64 };
            let v = read(cpu, i, 1, bus)? & mask;
            write(cpu, i, 0, v, bus)
        }
        Movss | Movsd => {
            let mask = if m == Movss { LO32 } else { LO64 };
            let v = read(cpu, i, 1, bus)? & mask;
            if i.op_kind(0) == OpKind::Register && i.op_kind(1) == OpKind::Register {
                let d = read(cpu, i, 0, bus)?;
                write(cpu, i, 0, (d & !mask) | v, bus)
            } else {
                write(cpu, i, 0, v, bus)
            }
        }
        Movlps | Movlpd => {
            let v = read(cpu, i, 1, bus)? & LO64;
            if i.op_kind(0) == OpKind::Memory {
                write(cpu, i, 0, v, bus)
            } else {
                let d = read(cpu, i, 0, bus)?;
                write(cpu, i, 0, (d & !LO64) | v, bus)
            }
        }
        Movhps | Movhpd => {
            let v = read(cpu, i, 1, bus)?;
            if i.op_kind(0) == OpKind::Memory {
                write(cpu, i, 0, v >> 64, bus)
            } else {
                let d = read(cpu, i, 0, bus)?;
                write(cpu, i, 0, (d & LO64) | (v << 64), bus)
            }
        }
        Movhlps => int_op(cpu, i, bus, |a, b, _| (a & !LO64) | (b >> 64)),
        Movlhps => int_op(cpu, i, bus, |a, b, _| (a & LO64) | (b << 64)),
        Movmskps | Movmskpd | Pmovmskb => {
            let (w, len) = match m {
                Movmskps => (32, 16),
                Movmskpd => (64, 16),
                _ => (8, vlen(i, 1)),
            };
            let v = read(cpu, i, 1, bus)?;
            let mut r = 0u128;
            for k in 0..len * 8 / w {
                r |= ((v >> ((k + 1) * w - 1)) & 1) << k;
            }
            write(cpu, i, 0, r, bus)
        }
        Maskmovdqu | Maskmovq => {
            let len = vlen(i, 1);
            let data = read(cpu, i, 1, bus)?;
            let mask = read(cpu, i, 2, bus)?;
            let di = match i.op_kind(0) {
                OpKind::MemorySegDI => cpu.state.gpr[7] & 0xffff,
                OpKind::MemorySegEDI => cpu.state.gpr[7] & 0xffff_ffff,
                _ => cpu.state.gpr[7],
            };
            let segi = seg_index(i.memory_segment());
            for k in 0..len {
                if (mask >> (k * 8 + 7)) & 1 != 0 {
                    let b = [(data >> (k * 8)) as u8];
                    cpu.write_mem(segi, di.wrapping_add(k as u64), &b, bus)?;
                }
            }
            Ok(())
        }

        // ---- logic ----
        Pand | Andps | Andpd => int_op(cpu, i, bus, |a, b, _| a & b),
        Pandn | Andnps | Andnpd => int_op(cpu, i, bus, |a, b, _| !a & b),
        Por | Orps | Orpd => int_op(cpu, i, bus, |a, b, _| a | b),
        Pxor | Xorps | Xorpd => int_op(cpu, i, bus, |a, b, _| a ^ b),

        // ---- packed integer arithmetic ----
        Paddb | Paddw | Paddd | Paddq | Psubb | Psubw | Psubd | Psubq => {
            let w = match m {
                Paddb | Psubb => 8,
                Paddw | Psubw => 16,
                Paddd | Psubd => 32,
                _ => 64,
            };
            let sub = matches!(m, Psubb | Psubw | Psubd | Psubq);
            int_op(cpu, i, bus, |a, b, len| {
                map2(a, b, len, w, |x, y| {
                    if sub {
                        x.wrapping_sub(y)
                    } else {
                        x.wrapping_add(y)
                    }
                })
            })
        }
        Paddsb | Paddsw | Psubsb | Psubsw | Paddusb | Paddusw | Psubusb | Psubusw => {
            let w = if matches!(m, Paddsb | Psubsb | Paddusb | Psubusb) {
                8
            } else {
                16
            };
            let sub = matches!(m, Psubsb | Psubsw | Psubusb | Psubusw);
            let signed = matches!(m, Paddsb | Paddsw | Psubsb | Psubsw);
            int_op(cpu, i, bus, |a, b, len| {
                map2(a, b, len, w, |x, y| {
                    let (x, y) = if signed {
                        (sx(x, w), sx(y, w))
                    } else {
                        (x as i64, y as i64)
                    };
                    let r = if sub { x - y } else { x + y };
                    if signed {
                        ssat(r, w)
                    } else {
                        usat(r, w)
                    }
                })
            })
        }
        Pmullw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 16, |x, y| x.wrapping_mul(y))
        }),
        Pmulhw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 16, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64)
        }),
        Pmulhuw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 16, |x, y| (x * y) >> 16)
        }),
        Pmuludq => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 64, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff))
        }),
        Pmaddwd => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 32, |x, y| {
                (sx(x & 0xffff, 16) * sx(y & 0xffff, 16) + sx(x >> 16, 16) * sx(y >> 16, 16)) as u64
            })
        }),
        Pavgb | Pavgw => {
            let w = if m == Pavgb { 8 } else { 16 };
            int_op(cpu, i, bus, |a, b, len| {
                map2(a, b, len, w, |x, y| (x + y + 1) >> 1)
            })
        }
        Pminub => int_op(cpu, i, bus, |a, b, len| map2(a, b, len, 8, u64::min)),
        Pmaxub => int_op(cpu, i, bus, |a, b, len| map2(a, b, len, 8, u64::max)),
        Pminsw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 16, |x, y| sx(x, 16).min(sx(y, 16)) as u64)
        }),
        Pmaxsw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 16, |x, y| sx(x, 16).max(sx(y, 16)) as u64)
        }),
        Psadbw => int_op(cpu, i, bus, |a, b, len| {
            map2(a, b, len, 64, |x, y| {
                (0..8)
                    .map(|k| ((x >> (8 * k)) as u8).abs_diff((y >> (8 * k)) as u8) as u64)
                    .sum()
            })
        }),
        Pcmpeqb | Pcmpeqw | Pcmpeqd | Pcmpgtb | Pcmpgtw | Pcmpgtd => {
            let w = match m {
                Pcmpeqb | Pcmpgtb => 8,
                Pcmpeqw | Pcmpgtw => 16,
                _ => 32,
            };
            let eq = matches!(m, Pcmpeqb | Pcmpeqw | Pcmpeqd);
            int_op(cpu, i, bus, |a, b, len| {
                map2(a, b, len, w, |x, y| {
                    let t = if eq { x == y } else { sx(x, w) > sx(y, w) };
                    if t {
                        u64::MAX
                    } else {
                        0
                    }
                })
            })
        }
        Psllw | Pslld | Psllq | Psrlw | Psrld | Psrlq | Psraw | Psrad => {
            let w = match m {
                Psllw | Psrlw | Psraw => 16,
                Pslld | Psrld | Psrad => 32,
                _ => 64,
            };
            let count = shift_count(cpu, i, bus)?;
            let len = vlen(i, 0);
            let a = read(cpu, i, 0, bus)?;
            let r = map2(a, 0, len, w, |x, _| match m {
                Psllw | Pslld | Psllq if count < u64::from(w) => x << count,
                Psrlw | Psrld | Psrlq if count < u64::from(w) => x >> count,
                Psraw | Psrad => (sx(x, w) >> count.min(u64::from(w) - 1)) as u64,
                _ => 0,
            });
            write(cpu, i, 0, r, bus)
        }
        Pslldq | Psrldq => {
            let count = u32::from(i.immediate8());
            let a = read(cpu, i, 0, bus)?;
            let r = if count > 15 {
                0
            } else if m == Pslldq {
                a << (count * 8)
            } else {
                a >> (count * 8)
            };
            write(cpu, i, 0, r, bus)
        }

        // ---- shuffles, unpacks, packs ----
        Pshufd | Pshuflw | Pshufhw | Pshufw => {
            let imm = usize::from(i.immediate8());
            let b = read(cpu, i, 1, bus)?;
            let sel = |k: usize| (imm >> (2 * k)) & 3;
            let mut r = b;
            match m {
                Pshufd => (0..4).for_each(|k| put(&mut r, k, 32, lane(b, sel(k), 32))),
                Pshuflw | Pshufw => (0..4).for_each(|k| put(&mut r, k, 16, lane(b, sel(k), 16))),
                _ => (0..4).for_each(|k| put(&mut r, 4 + k, 16, lane(b, 4 + sel(k), 16))),
            }
            write(cpu, i, 0, r & width_mask(vlen(i, 0)), bus)
        }
        Shufps => {
            let imm = usize::from(i.immediate8());
            int_op(cpu, i, bus, |a, b, _| {
                let sel = |k: usize| (imm >> (2 * k)) & 3;
                let mut r = 0;
                put(&mut r, 0, 32, lane(a, sel(0), 32));
                put(&mut r, 1, 32, lane(a, sel(1), 32));
                put(&mut r, 2, 32, lane(b, sel(2), 32));
                put(&mut r, 3, 32, lane(b, sel(3), 32));
                r
            })
        }
        Shufpd => {
            let imm = usize::from(i.immediate8());
            int_op(cpu, i, bus, |a, b, _| {
                u128::from(lane(a, imm & 1, 64)) | (u128::from(lane(b, (imm >> 1) & 1, 64)) << 64)
            })
        }
        Punpcklbw | Punpcklwd | Punpckldq | Punpcklqdq | Punpckhbw | Punpckhwd | Punpckhdq
        | Punpckhqdq | Unpcklps | Unpckhps | Unpcklpd | Unpckhpd => {
            let w = match m {
                Punpcklbw | Punpckhbw => 8,
                Punpcklwd | Punpckhwd => 16,
                Punpckldq | Punpckhdq | Unpcklps | Unpckhps => 32,
                _ => 64,
            };
            let high = matches!(
                m,
                Punpckhbw | Punpckhwd | Punpckhdq | Punpckhqdq | Unpckhps | Unpckhpd
            );
            int_op(cpu, i, bus, |a, b, len| unpack_lanes(a, b, len, w, high))
        }
        Packsswb => int_op(cpu, i, bus, |a, b, len| pack(a, b, len, 16, |v| ssat(v, 8))),
        Packssdw => int_op(cpu, i, bus, |a, b, len| {
            pack(a, b, len, 32, |v| ssat(v, 16))
        }),
        Packuswb => int_op(cpu, i, bus, |a, b, len| pack(a, b, len, 16, |v| usat(v, 8))),
        Pinsrw => {
            let len = vlen(i, 0);
            let k = usize::from(i.immediate8()) & (len / 2 - 1);
            let v = read(cpu, i, 1, bus)? as u64;
            let mut d = read(cpu, i, 0, bus)?;
            put(&mut d, k, 16, v);
            write(cpu, i, 0, d, bus)
        }
        Pextrw => {
            let len = vlen(i, 1);
            let k = usize::from(i.immediate8()) & (len / 2 - 1);
            let v = read(cpu, i, 1, bus)?;
            write(cpu, i, 0, u128::from(lane(v, k, 16)), bus)
        }

        // ---- floating point ----
        Addps | Addpd | Addss | Addsd | Subps | Subpd | Subss | Subsd => {
            let (f, s) = fmt_of(m);
            let sub = matches!(m, Subps | Subpd | Subss | Subsd);
            fp_op(cpu, i, bus, f, s, |e, x, y| e.add(f, x, y, sub))
        }
        Mulps | Mulpd | Mulss | Mulsd => {
            let (f, s) = fmt_of(m);
            fp_op(cpu, i, bus, f, s, |e, x, y| e.mul(f, x, y))
        }
        Divps | Divpd | Divss | Divsd => {
            let (f, s) = fmt_of(m);
            fp_op(cpu, i, bus, f, s, |e, x, y| e.div(f, x, y))
        }
        Sqrtps | Sqrtpd | Sqrtss | Sqrtsd => {
            let (f, s) = fmt_of(m);
            fp_op(cpu, i, bus, f, s, |e, _, y| e.sqrt(f, y))
        }
        Minps | Minpd | Minss | Minsd | Maxps | Maxpd | Maxss | Maxsd => {
            let (f, s) = fmt_of(m);
            let max = matches!(m, Maxps | Maxpd | Maxss | Maxsd);
            fp_op(cpu, i, bus, f, s, |e, x, y| e.minmax(f, x, y, max))
        }
        Cmpps | Cmppd | Cmpss | Cmpsd => {
            let (f, s) = fmt_of(m);
            let pred = i.immediate8() & 7;
            fp_op(cpu, i, bus, f, s, |e, x, y| {
                if e.cmp_pred(f, x, y, pred) {
                    f.mask()
                } else {
                    0
                }
            })
        }
        Rcpps | Rcpss => fp_op(cpu, i, bus, F32, m == Rcpss, |_, _, y| {
            u64::from(Env::rcp(y as u32))
        }),
        Rsqrtps | Rsqrtss => fp_op(cpu, i, bus, F32, m == Rsqrtss, |_, _, y| {
            u64::from(Env::rsqrt(y as u32))
        }),
        Comiss | Comisd | Ucomiss | Ucomisd => {
            let (f, _) = fmt_of(m);
            let a = lane(read(cpu, i, 0, bus)?, 0, f.bits());
            let b = lane(read(cpu, i, 1, bus)?, 0, f.bits());
            let mut env = Env::new(cpu.state.fpu.mxcsr);
            let o = env.compare(f, a, b, matches!(m, Comiss | Comisd));
            finish(cpu, &env)?;
            let v = match o {
                None => ZF | PF | CF,
                Some(std::cmp::Ordering::Less) => CF,
                Some(std::cmp::Ordering::Equal) => ZF,
                Some(std::cmp::Ordering::Greater) => 0,
            };
            cpu.set_flags(ZF | PF | CF | OF | SF | AF, v);
            Ok(())
        }

        // ---- conversions ----
        Cvtsi2ss | Cvtsi2sd => {
            let f = if m == Cvtsi2ss { F32 } else { F64 };
            let bits = match i.op_kind(1) {
                OpKind::Register => i.op_register(1).size() as u32 * 8,
                _ => i.memory_size().size() as u32 * 8,
            };
            let d = read(cpu, i, 0, bus)?;
            cvt(cpu, i, bus, 1, bits, f.bits(), d, |e, v| {
                e.int_to_float(f, sx(v, bits))
            })
        }
        Cvtss2si | Cvtsd2si | Cvttss2si | Cvttsd2si => {
            let f = if matches!(m, Cvtss2si | Cvttss2si) {
                F32
            } else {
                F64
            };
            let trunc = matches!(m, Cvttss2si | Cvttsd2si);
            let bits = i.op0_register().size() as u32 * 8;
            cvt(cpu, i, bus, 1, f.bits(), 64, 0, |e, v| {
                e.float_to_int(f, v, bits, trunc)
            })
        }
        Cvtss2sd => {
            let d = read(cpu, i, 0, bus)?;
            cvt(cpu, i, bus, 1, 32, 64, d, |e, v| e.convert(F32, F64, v))
        }
        Cvtsd2ss => {
            let d = read(cpu, i, 0, bus)?;
            cvt(cpu, i, bus, 1, 64, 32, d, |e, v| e.convert(F64, F32, v))
        }
        Cvtps2pd => cvt(cpu, i, bus, 2, 32, 64, 0, |e, v| e.convert(F32, F64, v)),
        Cvtpd2ps => cvt(cpu, i, bus, 2, 64, 32, 0, |e, v| e.convert(F64, F32, v)),
        Cvtdq2ps => cvt(cpu, i, bus, 4, 32, 32, 0, |e, v| {
            e.int_to_float(F32, sx(v, 32))
        }),
        Cvtps2dq | Cvttps2dq => {
            let t = m == Cvttps2dq;
            cvt(cpu, i, bus, 4, 32, 32, 0, |e, v| {
                e.float_to_int(F32, v, 32, t)
            })
        }
        Cvtdq2pd | Cvtpi2pd => cvt(cpu, i, bus, 2, 32, 64, 0, |e, v| {
            e.int_to_float(F64, sx(v, 32))
        }),
        Cvtpd2dq | Cvttpd2dq | Cvtpd2pi | Cvttpd2pi => {
            let t = matches!(m, Cvttpd2dq | Cvttpd2pi);
            cvt(cpu, i, bus, 2, 64, 32, 0, |e, v| {
                e.float_to_int(F64, v, 32, t)
            })
        }
        Cvtpi2ps => {
            let d = read(cpu, i, 0, bus)?;
            cvt(cpu, i, bus, 2, 32, 32, d, |e, v| {
                e.int_to_float(F32, sx(v, 32))
            })
        }
        Cvtps2pi | Cvttps2pi => {
            let t = m == Cvttps2pi;
            cvt(cpu, i, bus, 2, 32, 32, 0, |e, v| {
                e.float_to_int(F32, v, 32, t)
            })
        }

        // ---- state ----
        Ldmxcsr => {
            let v = read(cpu, i, 0, bus)? as u32;
            if v & !MXCSR_MASK != 0 {
                return Err(Fault::gp(0));
            }
            cpu.state.fpu.mxcsr = v;
            Ok(())
        }
        Stmxcsr => {
            let v = cpu.state.fpu.mxcsr;
            write(cpu, i, 0, u128::from(v), bus)
        }
        Emms => {
            cpu.state.fpu.ftw = 0;
            Ok(())
        }
        Fxsave | Fxsave64 => fxsave(cpu, i, m == Fxsave64, bus),
        Fxrstor | Fxrstor64 => fxrstor(cpu, i, m == Fxrstor64, bus),
        _ => Err(cpu.unimplemented(i)),
    }
}

/// Bytes of the FXSAVE image this mode defines (x87 + MXCSR + 8 or 16 XMM registers).
fn fx_len(cpu: &Cpu) -> usize {
    160 + 16 * if cpu.state.code64() { 16 } else { 8 }
}

fn fx_addr(cpu: &Cpu, i: &Instruction) -> R<(usize, u64)> {
    let segi = seg_index(i.memory_segment());
    let ea = cpu.ea(i);
    check_align(cpu, segi, ea, 512)?;
    Ok((segi, ea))
}

/// FXSAVE/FXSAVE64. FCS and FDS are stored as zero (the state keeps no selectors, as on
/// processors with the FCS/FDS deprecation); bytes 288/416..511 are left untouched.
fn fxsave(cpu: &mut Cpu, i: &Instruction, wide: bool, bus: &mut dyn Bus) -> R<()> {
    let (segi, ea) = fx_addr(cpu, i)?;
    let f = cpu.state.fpu;
    let mut b = [0u8; 512];
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.ftw;
    b[6..8].copy_from_slice(&f.fop.to_le_bytes());
    if wide {
        b[8..16].copy_from_slice(&f.fip.to_le_bytes());
        b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
    }
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for (k, st) in f.st.iter().enumerate() {
        b[32 + 16 * k..48 + 16 * k].copy_from_slice(st);
    }
    for (k, x) in f.xmm.iter().enumerate() {
        b[160 + 16 * k..176 + 16 * k].copy_from_slice(x);
    }
    let len = fx_len(cpu);
    cpu.write_mem(segi, ea, &b[..len], bus)
}

/// FXRSTOR/FXRSTOR64: #GP(0) when the image sets reserved MXCSR bits.
fn fxrstor(cpu: &mut Cpu, i: &Instruction, wide: bool, bus: &mut dyn Bus) -> R<()> {
    let (segi, ea) = fx_addr(cpu, i)?;
    let mut b = [0u8; 512];
    cpu.read_mem(segi, ea, &mut b, bus)?;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let mxcsr = u32_at(24);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp(0));
    }
    let nxmm = (fx_len(cpu) - 160) / 16;
    let f = &mut cpu.state.fpu;
    f.fcw = u16_at(0);
    f.fsw = u16_at(2);
    f.ftw = b[4];
    f.fop = u16_at(6) & 0x7ff;
    if wide {
        f.fip = u64_at(8);
        f.fdp = u64_at(16);
    } else {
        f.fip = u64::from(u32_at(8));
        f.fdp = u64::from(u32_at(16));
    }
    f.mxcsr = mxcsr;
    for k in 0..8 {
        f.st[k].copy_from_slice(&b[32 + 16 * k..48 + 16 * k]);
        f.st[k][10..].fill(0);
    }
    for k in 0..nxmm {
        f.xmm[k].copy_from_slice(&b[160 + 16 * k..176 + 16 * k]);
    }
    Ok(())
}
