//! x87 floating point.
//!
//! The canonical state is `cpu.state.fpu` in the FXSAVE layout: `st[k]` is ST(k) relative to
//! TOP (80-bit value in the low 10 bytes), `ftw` the abridged tag (bit per physical register,
//! 1 = valid) and TOP lives in FSW bits 11..13. Pushes and pops rotate `st` so that the
//! physical registers keep their contents.
//!
//! Core arithmetic (add, sub, mul, div, sqrt, remainders, compares, rounding to integer,
//! scale, extract and all format conversions) is exact extended precision with the x87
//! rounding control, precision control, exception flags and masked responses ([`f80`]).
//! The transcendental instructions (F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS,
//! FSINCOS) are computed with the host's double-precision math and rounded into the 80-bit
//! format, so their results are only accurate to about 53 bits.
//!
//! Exceptions: unmasked exceptions set ES and B; the next waiting x87 instruction raises
//! #MF when CR0.NE is set. With CR0.NE clear a PC would signal FERR#/IRQ13 instead; that
//! legacy path is not modelled, the pending exception is simply not delivered.
//!
//! FCS and FDS are stored as zero (as on processors with CPUID.7.EBX[13]), FIP/FDP hold
//! offsets in every environment format.

mod f80;

use crate::cpu::{seg_index, Bus, Cpu, Fault, R};
use crate::mmu::Access;
use crate::state::{cr, seg};
use f80::{Cmp, Ctx, Kind, DBL, DE, F80, IE, OE, PE, SGL, UE, ZE};
use hv::FpuState;
use iced_x86::{Instruction, MemorySize, Mnemonic as M, OpKind, Register};

const SF: u16 = 0x40;
const ES: u16 = 0x80;
const C0: u16 = 0x100;
const C1: u16 = 0x200;
const C2: u16 = 0x400;
const C3: u16 = 0x4000;
const B: u16 = 0x8000;
const CC: u16 = C0 | C1 | C2 | C3;

/// How an instruction interacts with pending exceptions and the last-instruction pointers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// WAIT/FWAIT.
    Wait,
    /// Non-waiting control instruction (FN...): no #MF check.
    NoWait,
    /// Waiting control instruction: #MF check, FIP/FOP not updated.
    Control,
    /// Everything else.
    Normal,
}

fn classify(m: M) -> Option<Class> {
    Some(match m {
        M::Wait => Class::Wait,
        M::Fninit
        | M::Fnclex
        | M::Fnstsw
        | M::Fnstcw
        | M::Fnstenv
        | M::Fnsave
        | M::Fneni
        | M::Fndisi
        | M::Fnsetpm => Class::NoWait,
        M::Finit
        | M::Fclex
        | M::Fstsw
        | M::Fstcw
        | M::Fstenv
        | M::Fsave
        | M::Fldcw
        | M::Fldenv
        | M::Frstor
        | M::Feni
        | M::Fdisi
        | M::Fsetpm => Class::Control,
        M::F2xm1
        | M::Fabs
        | M::Fadd
        | M::Faddp
        | M::Fbld
        | M::Fbstp
        | M::Fchs
        | M::Fcmovb
        | M::Fcmovbe
        | M::Fcmove
        | M::Fcmovnb
        | M::Fcmovnbe
        | M::Fcmovne
        | M::Fcmovnu
        | M::Fcmovu
        | M::Fcom
        | M::Fcomi
        | M::Fcomip
        | M::Fcomp
        | M::Fcompp
        | M::Fcos
        | M::Fdecstp
        | M::Fdiv
        | M::Fdivp
        | M::Fdivr
        | M::Fdivrp
        | M::Ffree
        | M::Ffreep
        | M::Fiadd
        | M::Ficom
        | M::Ficomp
        | M::Fidiv
        | M::Fidivr
        | M::Fild
        | M::Fimul
        | M::Fincstp
        | M::Fist
        | M::Fistp
        | M::Fisttp
        | M::Fisub
        | M::Fisubr
        | M::Fld
        | M::Fld1
        | M::Fldl2e
        | M::Fldl2t
        | M::Fldlg2
        | M::Fldln2
        | M::Fldpi
        | M::Fldz
        | M::Fmul
        | M::Fmulp
        | M::Fnop
        | M::Fpatan
        | M::Fprem
        | M::Fprem1
        | M::Fptan
        | M::Frndint
        | M::Fscale
        | M::Fsin
        | M::Fsincos
        | M::Fsqrt
        | M::Fst
        | M::Fstp
        | M::Fstpnce
        | M::Fsub
        | M::Fsubp
        | M::Fsubr
        | M::Fsubrp
        | M::Ftst
        | M::Fucom
        | M::Fucomi
        | M::Fucomip
        | M::Fucomp
        | M::Fucompp
        | M::Fxam
        | M::Fxch
        | M::Fxtract
        | M::Fyl2x
        | M::Fyl2xp1 => Class::Normal,
        _ => return None,
    })
}

/// Executes `i` if it is an x87 instruction; `None` when it is not one.
pub(crate) fn execute(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> Option<R<()>> {
    let m = i.mnemonic();
    let class = classify(m)?;
    Some(run(cpu, i, bus, m, class))
}

// ---- register stack ----

fn top(f: &FpuState) -> usize {
    usize::from((f.fsw >> 11) & 7)
}

fn set_top(f: &mut FpuState, t: usize) {
    f.fsw = (f.fsw & !0x3800) | (((t & 7) as u16) << 11);
}

fn phys(f: &FpuState, k: usize) -> usize {
    (top(f) + k) & 7
}

fn is_empty(f: &FpuState, k: usize) -> bool {
    f.ftw & (1 << phys(f, k)) == 0
}

fn get(f: &FpuState, k: usize) -> F80 {
    F80::from_bytes(&f.st[k & 7][..10])
}

fn set(f: &mut FpuState, k: usize, v: F80) {
    let k = k & 7;
    f.st[k][..10].copy_from_slice(&v.to_bytes());
    f.st[k][10..].fill(0);
    f.ftw |= 1 << phys(f, k);
}

fn push(f: &mut FpuState, v: F80) {
    f.st.rotate_right(1);
    let t = top(f).wrapping_sub(1);
    set_top(f, t);
    set(f, 0, v);
}

fn pop(f: &mut FpuState) {
    f.ftw &= !(1 << phys(f, 0));
    f.st.rotate_left(1);
    let t = top(f) + 1;
    set_top(f, t);
}

fn update_es(f: &mut FpuState) {
    if f.fsw & 0x3f & !(f.fcw & 0x3f) != 0 {
        f.fsw |= ES | B;
    } else {
        f.fsw &= !(ES | B);
    }
}

/// The full 16-bit tag word (FSTENV/FSAVE).
fn full_tag(f: &FpuState) -> u16 {
    let t = top(f);
    let mut tw = 0u16;
    for p in 0..8 {
        let tag = if f.ftw & (1 << p) == 0 {
            3
        } else {
            match get(f, (p + 8 - t) & 7).kind() {
                Kind::Zero => 1,
                Kind::Normal => 0,
                _ => 2,
            }
        };
        tw |= tag << (2 * p);
    }
    tw
}

fn abridged_tag(tw: u16) -> u8 {
    (0..8).fold(0u8, |a, p| {
        if (tw >> (2 * p)) & 3 != 3 {
            a | (1 << p)
        } else {
            a
        }
    })
}

fn st_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

/// Per-instruction bookkeeping: rounding context and stack fault.
struct Op {
    ctx: Ctx,
    /// Stack fault: Some(true) overflow, Some(false) underflow.
    sf: Option<bool>,
}

impl Op {
    fn new(f: &FpuState) -> Self {
        Op {
            ctx: Ctx::new(f.fcw),
            sf: None,
        }
    }
    fn stack_fault(&mut self, overflow: bool) {
        self.ctx.flags |= IE;
        self.sf = Some(overflow);
    }
    /// True when the result may be written (no unmasked IE, DE or ZE).
    fn writable(&self) -> bool {
        self.ctx.flags & !self.ctx.mask & (IE | DE | ZE) == 0
    }
    /// True when an unmasked exception suppresses a memory store.
    fn storable(&self) -> bool {
        self.ctx.flags & !self.ctx.mask & (IE | DE | ZE | OE | UE) == 0
    }
    /// Unmasked denormal operand: flags DE and tells the caller to skip the operation
    /// (invalid operands take precedence).
    fn denormal_fault(&mut self, xs: &[F80]) -> bool {
        if !self.ctx.unmasked(DE)
            || xs
                .iter()
                .any(|x| x.is_nan() || x.kind() == Kind::Unsupported)
        {
            return false;
        }
        if xs.iter().any(|x| x.kind() == Kind::Denormal) {
            self.ctx.flags |= DE;
            return true;
        }
        false
    }
    /// Reads ST(k), or flags a stack underflow and gives the indefinite.
    fn read(&mut self, f: &FpuState, k: usize) -> Option<F80> {
        if is_empty(f, k) {
            self.stack_fault(false);
            None
        } else {
            Some(get(f, k))
        }
    }
    /// Commits flags and condition codes: `cc` within `cmask`, C1 from a stack fault.
    fn finish(&self, f: &mut FpuState, cc: u16, cmask: u16) {
        let (mut cc, mut cmask) = (cc, cmask);
        if let Some(over) = self.sf {
            f.fsw |= SF;
            cmask |= C1;
            cc = (cc & !C1) | if over { C1 } else { 0 };
        }
        f.fsw = (f.fsw & !cmask) | (cc & cmask);
        f.fsw |= self.ctx.flags & 0x3f;
        update_es(f);
    }
    /// Finish for arithmetic: C1 = rounded up.
    fn finish_arith(&self, f: &mut FpuState) {
        self.finish(f, if self.ctx.c1 { C1 } else { 0 }, C1);
    }
}

// ---- memory operands ----

fn mem_read(cpu: &mut Cpu, i: &Instruction, buf: &mut [u8], bus: &mut dyn Bus) -> R<()> {
    let off = cpu.ea(i);
    cpu.read_mem(seg_index(i.memory_segment()), off, buf, bus)
}

fn mem_write(cpu: &mut Cpu, i: &Instruction, buf: &[u8], bus: &mut dyn Bus) -> R<()> {
    let off = cpu.ea(i);
    cpu.write_mem(seg_index(i.memory_segment()), off, buf, bus)
}

/// A memory operand converted to extended: (value, source was denormal).
fn load_operand(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> R<(F80, bool)> {
    let size = i.memory_size();
    let mut b = [0u8; 10];
    let n = match size {
        MemorySize::Float32 | MemorySize::Int32 => 4,
        MemorySize::Float64 | MemorySize::Int64 => 8,
        MemorySize::Int16 => 2,
        _ => 10,
    };
    mem_read(cpu, i, &mut b[..n], bus)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    let v = u64::from_le_bytes(w);
    Ok(match size {
        MemorySize::Float32 => f80::from_fmt(v & 0xffff_ffff, &SGL),
        MemorySize::Float64 => f80::from_fmt(v, &DBL),
        MemorySize::Int16 => (f80::from_i64(i64::from(v as u16 as i16)), false),
        MemorySize::Int32 => (f80::from_i64(i64::from(v as u32 as i32)), false),
        MemorySize::Int64 => (f80::from_i64(v as i64), false),
        MemorySize::Bcd => (bcd_to_f80(&b), false),
        _ => (F80::from_bytes(&b), false),
    })
}

fn bcd_to_f80(b: &[u8; 10]) -> F80 {
    let mut v: i64 = 0;
    for k in (0..9).rev() {
        v = v * 100 + i64::from(b[k] >> 4) * 10 + i64::from(b[k] & 0xf);
    }
    let sign = b[9] & 0x80 != 0;
    if v == 0 {
        F80::zero(sign)
    } else {
        f80::from_i64(if sign { -v } else { v })
    }
}

/// Opcode for FOP: the low 3 bits of the escape byte and the ModRM byte.
fn fop_of(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus) -> u16 {
    let len = i.len().min(15);
    let base = if cpu.state.code64() {
        0
    } else {
        cpu.state.seg[seg::CS].base
    };
    let mut lin = base.wrapping_add(i.ip());
    if !cpu.state.code64() {
        lin &= 0xffff_ffff;
    }
    let mut b = [0u8; 15];
    if cpu
        .read_linear(lin, &mut b[..len], Access::Fetch, bus)
        .is_err()
    {
        return 0;
    }
    match b[..len].iter().position(|&x| (0xd8..=0xdf).contains(&x)) {
        Some(k) if k + 1 < len => (u16::from(b[k] & 7) << 8) | u16::from(b[k + 1]),
        _ => 0,
    }
}

// ---- execution ----

fn run(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M, class: Class) -> R<()> {
    let cr0 = cpu.state.cr0;
    if class == Class::Wait {
        if cr0 & cr::TS != 0 && cr0 & cr::MP != 0 {
            return Err(Fault::nm());
        }
    } else if cr0 & (cr::EM | cr::TS) != 0 {
        return Err(Fault::nm());
    }
    if class != Class::NoWait && cpu.state.fpu.fsw & ES != 0 && cr0 & cr::NE != 0 {
        return Err(Fault {
            vector: 16,
            error: None,
            cr2: None,
        });
    }
    match class {
        Class::Wait => return Ok(()),
        Class::NoWait | Class::Control => return control(cpu, i, bus, m),
        Class::Normal => {}
    }
    let has_mem = (0..i.op_count()).any(|k| i.op_kind(k) == OpKind::Memory);
    let fop = fop_of(cpu, i, bus);
    {
        let f = &mut cpu.state.fpu;
        f.fop = fop & 0x7ff;
        f.fip = i.ip();
    }
    if has_mem {
        cpu.state.fpu.fdp = cpu.ea(i);
    }
    match m {
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => arith(cpu, i, bus, m, has_mem),
        M::Fld | M::Fild | M::Fbld => load(cpu, i, bus, m, has_mem),
        M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => {
            let f = &mut cpu.state.fpu;
            let mut op = Op::new(f);
            let v = constant(m, op.ctx.rc);
            push_checked(f, &mut op, v);
            op.finish(f, 0, C1);
            Ok(())
        }
        M::Fst | M::Fstp | M::Fstpnce | M::Fist | M::Fistp | M::Fisttp | M::Fbstp => {
            store(cpu, i, bus, m, has_mem)
        }
        M::Fcom
        | M::Fcomp
        | M::Fcompp
        | M::Fucom
        | M::Fucomp
        | M::Fucompp
        | M::Ficom
        | M::Ficomp
        | M::Ftst
        | M::Fcomi
        | M::Fcomip
        | M::Fucomi
        | M::Fucomip => compare(cpu, i, bus, m, has_mem),
        _ => {
            misc(cpu, i, m);
            Ok(())
        }
    }
}

/// Pushes `v`, or handles a stack overflow (masked: pushes the indefinite).
fn push_checked(f: &mut FpuState, op: &mut Op, v: F80) {
    if !is_empty(f, 7) {
        op.stack_fault(true);
        if op.writable() {
            push(f, F80::INDEFINITE);
        }
        return;
    }
    if op.writable() {
        push(f, v);
    }
}

fn constant(m: M, rc: u8) -> F80 {
    let (e, sig): (i32, u128) = match m {
        M::Fld1 => return F80::ONE,
        M::Fldz => return F80::zero(false),
        M::Fldpi => (1, 0xc90f_daa2_2168_c234_c4c6_628b_80dc_1cd1),
        M::Fldl2e => (0, 0xb8aa_3b29_5c17_f0bb_be87_fed0_691d_3e88),
        M::Fldl2t => (1, 0xd49a_784b_cd1b_8afe_492b_f6ff_4daf_db4c),
        M::Fldlg2 => (-2, 0x9a20_9a84_fbcf_f798_8f89_59ac_0b7c_9178),
        _ => (-1, 0xb172_17f7_d1cf_79ab_c9e3_b398_03f2_f6af),
    };
    let mut c = Ctx::new(0x037f | (u16::from(rc) << 10));
    f80::round_pack(&mut c, false, e, sig, 64)
}

fn arith(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M, has_mem: bool) -> R<()> {
    let (dest, src) = if has_mem {
        (0, Err(load_operand(cpu, i, bus)?))
    } else {
        (st_index(i.op0_register()), Ok(st_index(i.op1_register())))
    };
    let pop_after = matches!(
        m,
        M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp
    );
    let f = &mut cpu.state.fpu;
    let mut op = Op::new(f);
    let a = op.read(f, dest);
    let mut mem_den = false;
    let b = match src {
        Ok(k) => op.read(f, k),
        Err((v, den)) => {
            mem_den = den;
            Some(v)
        }
    };
    if let (Some(a), Some(b)) = (a, b) {
        if mem_den && !divide_by_zero(m, a, b) && !a.is_nan() {
            op.ctx.flags |= DE;
        }
    }
    let result = match (a, b) {
        (Some(a), Some(b)) if !divide_by_zero(m, a, b) && op.denormal_fault(&[a, b]) => None,
        (Some(a), Some(b)) if op.writable() => {
            let c = &mut op.ctx;
            Some(match m {
                M::Fadd | M::Faddp | M::Fiadd => f80::add(c, a, b, false),
                M::Fsub | M::Fsubp | M::Fisub => f80::add(c, a, b, true),
                M::Fsubr | M::Fsubrp | M::Fisubr => f80::add(c, b, a, true),
                M::Fmul | M::Fmulp | M::Fimul => f80::mul(c, a, b),
                M::Fdiv | M::Fdivp | M::Fidiv => f80::div(c, a, b),
                _ => f80::div(c, b, a),
            })
        }
        (Some(_), Some(_)) => None,
        _ => Some(F80::INDEFINITE),
    };
    if let Some(r) = result {
        if op.writable() {
            set(f, dest, r);
        }
    }
    if pop_after && (op.writable() || op.sf.is_none()) {
        pop(f);
    }
    op.finish_arith(f);
    Ok(())
}

/// A division whose divisor is zero: ZE takes precedence over a denormal dividend.
fn divide_by_zero(m: M, a: F80, b: F80) -> bool {
    let divisor = match m {
        M::Fdiv | M::Fdivp | M::Fidiv => b,
        M::Fdivr | M::Fdivrp | M::Fidivr => a,
        _ => return false,
    };
    divisor.kind() == Kind::Zero
}

fn load(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M, has_mem: bool) -> R<()> {
    let src = if has_mem {
        Err(load_operand(cpu, i, bus)?)
    } else {
        Ok(st_index(i.op0_register()))
    };
    let f = &mut cpu.state.fpu;
    let mut op = Op::new(f);
    let v = match src {
        Ok(k) => op.read(f, k).unwrap_or(F80::INDEFINITE),
        Err((v, den)) => {
            if den {
                op.ctx.flags |= DE;
            }
            if m == M::Fld && i.memory_size() != MemorySize::Float80 && v.kind() == Kind::SNaN {
                op.ctx.flags |= IE;
                v.quiet()
            } else {
                v
            }
        }
    };
    push_checked(f, &mut op, v);
    op.finish(f, 0, C1);
    Ok(())
}

fn store(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M, has_mem: bool) -> R<()> {
    let pop_after = matches!(m, M::Fstp | M::Fstpnce | M::Fistp | M::Fisttp | M::Fbstp);
    let f = &cpu.state.fpu;
    let mut op = Op::new(f);
    let x = op.read(f, 0);
    if !has_mem {
        let f = &mut cpu.state.fpu;
        let d = st_index(i.op0_register());
        if op.writable() {
            set(f, d, x.unwrap_or(F80::INDEFINITE));
        }
        if pop_after && op.writable() {
            pop(f);
        }
        op.finish(f, 0, C1);
        return Ok(());
    }
    let size = i.memory_size();
    let mut buf = [0u8; 10];
    let len;
    match m {
        M::Fst | M::Fstp | M::Fstpnce => match size {
            MemorySize::Float32 => {
                let bits = match x {
                    Some(x) => f80::to_fmt(&mut op.ctx, x, &SGL),
                    None => 0xffc0_0000,
                };
                buf[..4].copy_from_slice(&(bits as u32).to_le_bytes());
                len = 4;
            }
            MemorySize::Float64 => {
                let bits = match x {
                    Some(x) => f80::to_fmt(&mut op.ctx, x, &DBL),
                    None => 0xfff8_0000_0000_0000,
                };
                buf[..8].copy_from_slice(&bits.to_le_bytes());
                len = 8;
            }
            _ => {
                buf = x.unwrap_or(F80::INDEFINITE).to_bytes();
                len = 10;
            }
        },
        M::Fbstp => {
            buf = match x {
                Some(x) => to_bcd(&mut op.ctx, x),
                None => BCD_INDEFINITE,
            };
            len = 10;
        }
        _ => {
            let bits = match size {
                MemorySize::Int16 => 16,
                MemorySize::Int32 => 32,
                _ => 64,
            };
            let v = match x {
                Some(x) => f80::to_int(&mut op.ctx, x, bits, m == M::Fisttp),
                None => i64::MIN >> (64 - bits),
            };
            len = bits as usize / 8;
            buf[..8].copy_from_slice(&v.to_le_bytes());
        }
    }
    if op.storable() {
        mem_write(cpu, i, &buf[..len], bus)?;
        if pop_after {
            pop(&mut cpu.state.fpu);
        }
    }
    op.finish_arith(&mut cpu.state.fpu);
    Ok(())
}

const BCD_INDEFINITE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff];

fn to_bcd(ctx: &mut Ctx, x: F80) -> [u8; 10] {
    let mut c = *ctx;
    let rc = c.rc;
    match f80::to_int_mag(&mut c, x, rc) {
        Some((s, q)) if q <= 999_999_999_999_999_999 => {
            *ctx = c;
            let mut b = [0u8; 10];
            let mut v = q as u64;
            for byte in b.iter_mut().take(9) {
                let lo = (v % 10) as u8;
                v /= 10;
                let hi = (v % 10) as u8;
                v /= 10;
                *byte = (hi << 4) | lo;
            }
            b[9] = if s { 0x80 } else { 0 };
            b
        }
        _ => {
            ctx.flags |= IE;
            BCD_INDEFINITE
        }
    }
}

fn compare(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M, has_mem: bool) -> R<()> {
    let src = if m == M::Ftst {
        Err((F80::zero(false), false))
    } else if has_mem {
        Err(load_operand(cpu, i, bus)?)
    } else if i.op_count() == 0 {
        Ok(1)
    } else {
        Ok(st_index(i.op_register(i.op_count() - 1)))
    };
    let f = &mut cpu.state.fpu;
    let mut op = Op::new(f);
    let a = op.read(f, 0);
    let b = match src {
        Ok(k) => op.read(f, k),
        Err((v, den)) => {
            if den {
                op.ctx.flags |= DE;
            }
            Some(v)
        }
    };
    let quiet = matches!(
        m,
        M::Fucom | M::Fucomp | M::Fucompp | M::Fucomi | M::Fucomip
    );
    let r = match (a, b) {
        (Some(a), Some(b)) if op.denormal_fault(&[a, b]) => Cmp::Unordered,
        (Some(a), Some(b)) => f80::compare(&mut op.ctx, a, b, quiet),
        _ => Cmp::Unordered,
    };
    let pops = match m {
        M::Fcomp | M::Fucomp | M::Ficomp | M::Fcomip | M::Fucomip => 1,
        M::Fcompp | M::Fucompp => 2,
        _ => 0,
    };
    let ok = op.writable();
    if matches!(m, M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip) {
        if ok {
            let (zf, pf, cf) = match r {
                Cmp::Greater => (0, 0, 0),
                Cmp::Less => (0, 0, 1),
                Cmp::Equal => (1, 0, 0),
                Cmp::Unordered => (1, 1, 1),
            };
            let v = (zf << 6) | (pf << 2) | cf;
            // ZF, PF, CF from the comparison; OF, SF, AF cleared.
            cpu.set_flags(0x8d5, v);
        }
        let f = &mut cpu.state.fpu;
        if ok {
            for _ in 0..pops {
                pop(f);
            }
        }
        op.finish(f, 0, C1);
        return Ok(());
    }
    let cc = match r {
        Cmp::Greater => 0,
        Cmp::Less => C0,
        Cmp::Equal => C3,
        Cmp::Unordered => C0 | C2 | C3,
    };
    let f = &mut cpu.state.fpu;
    if ok {
        for _ in 0..pops {
            pop(f);
        }
        op.finish(f, cc, CC);
    } else {
        op.finish(f, 0, C1);
    }
    Ok(())
}

/// Instructions on registers only.
fn misc(cpu: &mut Cpu, i: &Instruction, m: M) {
    let rflags = cpu.state.rflags;
    let f = &mut cpu.state.fpu;
    let mut op = Op::new(f);
    match m {
        M::Fxch => {
            let k = if i.op_count() == 2 {
                st_index(i.op1_register())
            } else {
                st_index(i.op0_register())
            };
            let a = op.read(f, 0);
            let b = op.read(f, k);
            if op.writable() {
                set(f, 0, b.unwrap_or(F80::INDEFINITE));
                set(f, k, a.unwrap_or(F80::INDEFINITE));
            }
            op.finish(f, 0, C1);
        }
        M::Fchs | M::Fabs => {
            if let Some(x) = op.read(f, 0) {
                let s = m == M::Fchs && !x.sign();
                set(f, 0, x.with_sign(s));
            } else if op.writable() {
                set(f, 0, F80::INDEFINITE);
            }
            op.finish(f, 0, C1);
        }
        M::Fsqrt | M::Frndint => {
            let r = match op.read(f, 0) {
                Some(x) if op.denormal_fault(&[x]) => x,
                Some(x) if m == M::Fsqrt => f80::sqrt(&mut op.ctx, x),
                Some(x) => f80::round_int(&mut op.ctx, x),
                None => F80::INDEFINITE,
            };
            if op.writable() {
                set(f, 0, r);
            }
            op.finish_arith(f);
        }
        M::Fscale => {
            op.ctx.pc = 64;
            let a = op.read(f, 0);
            let b = op.read(f, 1);
            let r = match (a, b) {
                (Some(a), Some(b)) if op.denormal_fault(&[a, b]) => a,
                (Some(a), Some(b)) => f80::scale(&mut op.ctx, a, b),
                _ => F80::INDEFINITE,
            };
            if op.writable() {
                set(f, 0, r);
            }
            op.finish_arith(f);
        }
        M::Fprem | M::Fprem1 => {
            let a = op.read(f, 0);
            let b = op.read(f, 1);
            let (r, cc) = match (a, b) {
                (Some(a), Some(b)) if op.denormal_fault(&[a, b]) => (a, 0),
                (Some(a), Some(b)) => f80::prem(&mut op.ctx, a, b, m == M::Fprem1),
                _ => (F80::INDEFINITE, 0),
            };
            if op.writable() {
                set(f, 0, r);
                op.finish(f, cc, CC);
            } else {
                op.finish(f, 0, C1);
            }
        }
        M::Fxtract => {
            let a = op.read(f, 0);
            if a.is_some() && !is_empty(f, 7) {
                op.stack_fault(true);
                if op.writable() {
                    set(f, 0, F80::INDEFINITE);
                    push(f, F80::INDEFINITE);
                }
            } else {
                let (e, s) = match a {
                    Some(a) => f80::extract(&mut op.ctx, a),
                    None => (F80::INDEFINITE, F80::INDEFINITE),
                };
                if op.writable() {
                    set(f, 0, e);
                    push(f, s);
                }
            }
            op.finish(f, 0, C1);
        }
        M::Fxam => {
            let x = get(f, 0);
            let class = if is_empty(f, 0) {
                C3 | C0
            } else {
                match x.kind() {
                    Kind::Unsupported => 0,
                    Kind::QNaN | Kind::SNaN => C0,
                    Kind::Normal => C2,
                    Kind::Inf => C2 | C0,
                    Kind::Zero => C3,
                    Kind::Denormal => C3 | C2,
                }
            };
            let s = if x.sign() { C1 } else { 0 };
            op.finish(f, class | s, CC);
        }
        M::Fcmovb
        | M::Fcmovbe
        | M::Fcmove
        | M::Fcmovnb
        | M::Fcmovnbe
        | M::Fcmovne
        | M::Fcmovnu
        | M::Fcmovu => {
            let cf = rflags & 1 != 0;
            let zf = rflags & 0x40 != 0;
            let pf = rflags & 4 != 0;
            let cond = match m {
                M::Fcmovb => cf,
                M::Fcmovnb => !cf,
                M::Fcmove => zf,
                M::Fcmovne => !zf,
                M::Fcmovbe => cf || zf,
                M::Fcmovnbe => !(cf || zf),
                M::Fcmovu => pf,
                _ => !pf,
            };
            let k = st_index(i.op1_register());
            let a = op.read(f, 0);
            let b = op.read(f, k);
            if op.sf.is_some() {
                if op.writable() {
                    set(f, 0, F80::INDEFINITE);
                }
            } else if cond {
                set(f, 0, b.or(a).unwrap_or(F80::INDEFINITE));
            }
            op.finish(f, 0, C1);
        }
        M::Ffree | M::Ffreep => {
            let p = phys(f, st_index(i.op0_register()));
            f.ftw &= !(1 << p);
            if m == M::Ffreep {
                pop(f);
            }
        }
        M::Fincstp => {
            f.st.rotate_left(1);
            let t = top(f) + 1;
            set_top(f, t);
            op.finish(f, 0, C1);
        }
        M::Fdecstp => {
            f.st.rotate_right(1);
            let t = top(f).wrapping_sub(1);
            set_top(f, t);
            op.finish(f, 0, C1);
        }
        M::Fnop => {}
        _ => transcendental(f, &mut op, m),
    }
}

// ---- transcendental functions (host double precision) ----

/// Finishes a transcendental result: rounds the double into extended and flags PE.
fn inexact(op: &mut Op, v: f64) -> F80 {
    let r = f80::from_f64_ctx(&mut op.ctx, v);
    if v.is_finite() && v != 0.0 && v != 1.0 && v != -1.0 {
        op.ctx.flags |= PE;
    }
    r
}

fn transcendental(f: &mut FpuState, op: &mut Op, m: M) {
    op.ctx.pc = 64;
    match m {
        M::Fsin | M::Fcos | M::Fptan | M::Fsincos => {
            let x = match op.read(f, 0) {
                Some(x) => x,
                None => {
                    if op.writable() {
                        set(f, 0, F80::INDEFINITE);
                        if matches!(m, M::Fptan | M::Fsincos) && is_empty(f, 7) {
                            push(f, F80::INDEFINITE);
                        }
                    }
                    op.finish(f, 0, C1 | C2);
                    return;
                }
            };
            let pushes = matches!(m, M::Fptan | M::Fsincos);
            if pushes && !is_empty(f, 7) {
                op.stack_fault(true);
                if op.writable() {
                    set(f, 0, F80::INDEFINITE);
                    push(f, F80::INDEFINITE);
                }
                op.finish(f, 0, C1 | C2);
                return;
            }
            let (r0, r1) = if let Some(n) = f80::check1(&mut op.ctx, x) {
                (n, n)
            } else {
                match x.kind() {
                    Kind::Inf => {
                        op.ctx.flags |= IE;
                        (F80::INDEFINITE, F80::INDEFINITE)
                    }
                    Kind::Zero => (x, F80::ONE),
                    _ => {
                        let (_, e, _) = x.unpack();
                        if e >= 63 {
                            // Out of range: operand unchanged, C2 set.
                            op.finish(f, C2, C1 | C2);
                            return;
                        }
                        if x.kind() == Kind::Denormal && x.sig >> 63 == 0 && m != M::Fcos {
                            op.ctx.flags |= UE;
                        }
                        if e < -40 {
                            // sin x = tan x = x and cos x = 1 to extended precision
                            // (pseudo-denormals come back normalized).
                            op.ctx.flags |= PE;
                            let v = if x.exp() == 0 && x.sig >> 63 != 0 {
                                F80::new(x.sign(), 1, x.sig)
                            } else {
                                x
                            };
                            (v, F80::ONE)
                        } else {
                            let (sv, cv) = sin_cos(x);
                            match m {
                                M::Fptan => (inexact(op, sv / cv), F80::ONE),
                                _ => (inexact(op, sv), inexact(op, cv)),
                            }
                        }
                    }
                }
            };
            if op.writable() {
                match m {
                    M::Fsin => set(f, 0, r0),
                    M::Fcos => set(f, 0, r1),
                    M::Fptan => {
                        set(f, 0, r0);
                        push(f, if r0.is_nan() { r0 } else { F80::ONE });
                    }
                    _ => {
                        set(f, 0, r0);
                        push(f, r1);
                    }
                }
            }
            op.finish(f, 0, C1 | C2);
        }
        M::F2xm1 => {
            let r = match op.read(f, 0) {
                None => F80::INDEFINITE,
                Some(x) => {
                    if let Some(n) = f80::check1(&mut op.ctx, x) {
                        n
                    } else {
                        match x.kind() {
                            Kind::Zero => x,
                            Kind::Inf if x.sign() => F80::ONE.with_sign(true),
                            Kind::Inf => x,
                            _ if x.exp() >= 0x3fff && x.se & 0x7fff != 0x3fff
                                || (x.exp() == 0x3fff && x.sig != 1 << 63) =>
                            {
                                // Outside [-1, 1] (undefined): the operand is left unchanged,
                                // as the processors this was compared against do.
                                op.ctx.flags |= PE;
                                x
                            }
                            _ => {
                                let (_, e, _) = x.unpack();
                                op.ctx.flags |= PE;
                                if x.exp() == 0 || e < -16000 {
                                    op.ctx.flags |= UE;
                                }
                                if e < -60 {
                                    {
                                        let c = constant(M::Fldln2, op.ctx.rc);
                                        f80::mul(&mut op.ctx, x, c)
                                    }
                                } else {
                                    let v = f80::to_f64(x);
                                    inexact(op, (v * std::f64::consts::LN_2).exp_m1())
                                }
                            }
                        }
                    }
                }
            };
            if op.writable() {
                set(f, 0, r);
            }
            op.finish(f, 0, C1);
        }
        M::Fyl2x | M::Fyl2xp1 | M::Fpatan => {
            let x = op.read(f, 0);
            let y = op.read(f, 1);
            let r = match (x, y) {
                (Some(x), Some(y)) => match m {
                    M::Fyl2x => yl2x(op, x, y),
                    M::Fyl2xp1 => yl2xp1(op, x, y),
                    _ => patan(op, x, y),
                },
                _ => F80::INDEFINITE,
            };
            if op.writable() {
                set(f, 1, r);
                pop(f);
            }
            op.finish(f, 0, C1);
        }
        _ => {}
    }
}

/// sin and cos of a finite value with |x| < 2^63, reduced modulo π/2 exactly against the
/// 66-bit π the x87 uses, then evaluated in double precision.
fn sin_cos(x: F80) -> (f64, f64) {
    // π × 2^64 to 66 bits: π/2 = PI66 × 2^-65.
    const PI66: u128 = 0x3_243f_6a88_85a3_08d3;
    let (s, e, m) = x.unpack();
    if e < -1 {
        let v = f80::to_f64(x);
        return (v.sin(), v.cos());
    }
    let n = u128::from(m) << (e + 2) as u32; // |x| × 2^65
    let mut q = n / PI66;
    let mut r = (n % PI66) as i128;
    if r > (PI66 / 2) as i128 {
        r -= PI66 as i128;
        q += 1;
    }
    let rv = r as f64 * 2f64.powi(-65);
    let (sr, cr) = (rv.sin(), rv.cos());
    let (sv, cv) = match q & 3 {
        0 => (sr, cr),
        1 => (cr, -sr),
        2 => (-sr, -cr),
        _ => (-cr, sr),
    };
    (if s { -sv } else { sv }, cv)
}

fn nan2(op: &mut Op, x: F80, y: F80) -> Option<F80> {
    // Reuse the arithmetic NaN rules (0 + 0 never raises anything else).
    if x.is_nan() || y.is_nan() || x.kind() == Kind::Unsupported || y.kind() == Kind::Unsupported {
        return Some(f80::add(&mut op.ctx, y, x, false));
    }
    if x.kind() == Kind::Denormal || y.kind() == Kind::Denormal {
        op.ctx.flags |= DE;
    }
    None
}

/// log2 of a finite positive value as a double.
fn log2_f64(x: F80) -> f64 {
    let (_, e, m) = x.unpack();
    if (-1000..1000).contains(&e) {
        f80::to_f64(x).log2()
    } else {
        f64::from(e) + (m as f64 / 9_223_372_036_854_775_808.0).log2()
    }
}

fn yl2x(op: &mut Op, x: F80, y: F80) -> F80 {
    if x.sign() && matches!(x.kind(), Kind::Normal | Kind::Denormal) && !y.is_nan() {
        op.ctx.flags |= IE;
        return F80::INDEFINITE;
    }
    if let Some(n) = nan2(op, x, y) {
        return n;
    }
    let (kx, ky) = (x.kind(), y.kind());
    if x.sign() && kx != Kind::Zero {
        op.ctx.flags |= IE;
        return F80::INDEFINITE;
    }
    match kx {
        Kind::Zero => {
            if ky == Kind::Zero {
                op.ctx.flags |= IE;
                return F80::INDEFINITE;
            }
            if ky != Kind::Inf {
                op.ctx.flags |= ZE;
            }
            return F80::inf(!y.sign());
        }
        Kind::Inf => {
            if ky == Kind::Zero {
                op.ctx.flags |= IE;
                return F80::INDEFINITE;
            }
            return F80::inf(y.sign());
        }
        _ => {}
    }
    if x == F80::ONE {
        if ky == Kind::Inf {
            op.ctx.flags |= IE;
            return F80::INDEFINITE;
        }
        return F80::zero(y.sign());
    }
    let l = log2_f64(x);
    let lf = inexact(op, l);
    f80::mul(&mut op.ctx, y, lf)
}

fn yl2xp1(op: &mut Op, x: F80, y: F80) -> F80 {
    if let Some(n) = nan2(op, x, y) {
        return n;
    }
    let (kx, ky) = (x.kind(), y.kind());
    if kx == Kind::Inf && x.sign() {
        op.ctx.flags |= IE;
        return F80::INDEFINITE;
    }
    match (kx, ky) {
        (Kind::Zero, Kind::Inf) | (Kind::Inf, Kind::Zero) => {
            op.ctx.flags |= IE;
            return F80::INDEFINITE;
        }
        (Kind::Zero, _) | (_, Kind::Zero) => return F80::zero(x.sign() ^ y.sign()),
        (Kind::Inf, _) | (_, Kind::Inf) => return F80::inf(x.sign() ^ y.sign()),
        _ => {}
    }
    let (_, e, _) = x.unpack();
    if x.sign() && e >= 0 && !(e == 0 && x.sig == 1 << 63) || x.sign() && e > 0 {
        // x < −1: log of a negative number.
        op.ctx.flags |= IE;
        return F80::INDEFINITE;
    }
    let l = if e < -60 {
        // log2(1 + x) = x · log2(e) to extended precision (intermediate flags dropped).
        let c = constant(M::Fldl2e, op.ctx.rc);
        let mut scratch = op.ctx;
        op.ctx.flags |= PE;
        f80::mul(&mut scratch, x, c)
    } else {
        let v = f80::to_f64(x);
        inexact(op, v.ln_1p() * std::f64::consts::LOG2_E)
    };
    f80::mul(&mut op.ctx, y, l)
}

fn patan(op: &mut Op, x: F80, y: F80) -> F80 {
    if let Some(n) = nan2(op, x, y) {
        return n;
    }
    let finite = |v: F80| matches!(v.kind(), Kind::Normal | Kind::Denormal);
    let (xv, yv) = if finite(x) && finite(y) {
        let (_, ex, _) = x.unpack();
        let (_, ey, _) = y.unpack();
        if ey - ex < -70 && !x.sign() {
            // atan(y/x) = y/x.
            op.ctx.flags |= PE;
            return f80::div(&mut op.ctx, y, x);
        }
        let k = ex.max(ey);
        let mut c = Ctx::new(0x37f);
        let sc = f80::from_i64(i64::from(-k));
        (
            f80::to_f64(f80::scale(&mut c, x, sc)),
            f80::to_f64(f80::scale(&mut c, y, sc)),
        )
    } else {
        (f80::to_f64(x), f80::to_f64(y))
    };
    inexact(op, yv.atan2(xv))
}

// ---- control instructions ----

fn real_layout(cpu: &Cpu) -> bool {
    !cpu.state.protected() || cpu.state.v86()
}

/// Encodes the environment (14 or 28 bytes).
fn store_env(cpu: &Cpu, big: bool) -> Vec<u8> {
    let f = &cpu.state.fpu;
    let real = real_layout(cpu);
    let (fcw, fsw, ftw) = (u32::from(f.fcw), u32::from(f.fsw), u32::from(full_tag(f)));
    let (fip, fdp, fop) = (f.fip as u32, f.fdp as u32, u32::from(f.fop & 0x7ff));
    if big {
        let w: [u32; 7] = if real {
            [
                0xffff_0000 | fcw,
                0xffff_0000 | fsw,
                0xffff_0000 | ftw,
                0xffff_0000 | (fip & 0xffff),
                ((fip >> 16) << 12) | fop,
                0xffff_0000 | (fdp & 0xffff),
                (fdp >> 16) << 12,
            ]
        } else {
            [
                0xffff_0000 | fcw,
                0xffff_0000 | fsw,
                0xffff_0000 | ftw,
                fip,
                fop << 16,
                fdp,
                0xffff_0000,
            ]
        };
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    } else {
        let w: [u32; 7] = if real {
            [
                fcw,
                fsw,
                ftw,
                fip & 0xffff,
                (((fip >> 16) & 0xf) << 12) | fop,
                fdp & 0xffff,
                ((fdp >> 16) & 0xf) << 12,
            ]
        } else {
            [fcw, fsw, ftw, fip & 0xffff, 0, fdp & 0xffff, 0]
        };
        w.iter().flat_map(|x| (*x as u16).to_le_bytes()).collect()
    }
}

/// Decodes an environment image into the state.
fn load_env(cpu: &mut Cpu, b: &[u8], big: bool) {
    let real = real_layout(cpu);
    let w: Vec<u32> = if big {
        b.chunks(4)
            .take(7)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        b.chunks(2)
            .take(7)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    };
    let f = &mut cpu.state.fpu;
    f.fcw = (w[0] as u16 & 0x1f7f) | 0x40;
    f.fsw = w[1] as u16;
    f.ftw = abridged_tag(w[2] as u16);
    if real {
        let hi = if big { 0xffff } else { 0xf };
        f.fip = u64::from((w[3] & 0xffff) | (((w[4] >> 12) & hi) << 16));
        f.fop = (w[4] & 0x7ff) as u16;
        f.fdp = u64::from((w[5] & 0xffff) | (((w[6] >> 12) & hi) << 16));
    } else if big {
        f.fip = u64::from(w[3]);
        f.fop = ((w[4] >> 16) & 0x7ff) as u16;
        f.fdp = u64::from(w[5]);
    } else {
        f.fip = u64::from(w[3]);
        f.fdp = u64::from(w[5]);
    }
    update_es(f);
}

fn init(f: &mut FpuState) {
    f.fcw = 0x37f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
}

fn control(cpu: &mut Cpu, i: &Instruction, bus: &mut dyn Bus, m: M) -> R<()> {
    match m {
        M::Fninit | M::Finit => init(&mut cpu.state.fpu),
        M::Fnclex | M::Fclex => cpu.state.fpu.fsw &= 0x7f00,
        M::Fnstsw | M::Fstsw => {
            let v = cpu.state.fpu.fsw;
            if i.op0_kind() == OpKind::Register {
                cpu.set_reg(Register::AX, u64::from(v));
            } else {
                mem_write(cpu, i, &v.to_le_bytes(), bus)?;
            }
        }
        M::Fnstcw | M::Fstcw => {
            let v = cpu.state.fpu.fcw;
            mem_write(cpu, i, &v.to_le_bytes(), bus)?;
        }
        M::Fldcw => {
            let mut b = [0u8; 2];
            mem_read(cpu, i, &mut b, bus)?;
            let f = &mut cpu.state.fpu;
            f.fcw = (u16::from_le_bytes(b) & 0x1f7f) | 0x40;
            update_es(f);
        }
        M::Fnstenv | M::Fstenv => {
            let big = i.memory_size() == MemorySize::FpuEnv28;
            let env = store_env(cpu, big);
            mem_write(cpu, i, &env, bus)?;
            cpu.state.fpu.fcw |= 0x3f;
        }
        M::Fldenv => {
            let big = i.memory_size() == MemorySize::FpuEnv28;
            let mut b = [0u8; 28];
            let n = if big { 28 } else { 14 };
            mem_read(cpu, i, &mut b[..n], bus)?;
            load_env(cpu, &b[..n], big);
        }
        M::Fnsave | M::Fsave => {
            let big = i.memory_size() == MemorySize::FpuState108;
            let mut img = store_env(cpu, big);
            for k in 0..8 {
                img.extend_from_slice(&cpu.state.fpu.st[k][..10]);
            }
            mem_write(cpu, i, &img, bus)?;
            init(&mut cpu.state.fpu);
        }
        M::Frstor => {
            let big = i.memory_size() == MemorySize::FpuState108;
            let n = if big { 108 } else { 94 };
            let e = n - 80;
            let mut b = [0u8; 108];
            mem_read(cpu, i, &mut b[..n], bus)?;
            load_env(cpu, &b[..e], big);
            let f = &mut cpu.state.fpu;
            for k in 0..8 {
                f.st[k][..10].copy_from_slice(&b[e + 10 * k..e + 10 * k + 10]);
                f.st[k][10..].fill(0);
            }
        }
        // 8087/287 leftovers: no-ops on the 387 and later.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_rotate() {
        let mut f = FpuState::default();
        push(&mut f, F80::ONE);
        assert_eq!(top(&f), 7);
        assert_eq!(f.ftw, 0x80);
        push(&mut f, F80::zero(false));
        assert_eq!(get(&f, 1), F80::ONE);
        assert_eq!(full_tag(&f), 0x1fff);
        pop(&mut f);
        assert_eq!(get(&f, 0), F80::ONE);
        assert_eq!(f.ftw, 0x80);
        assert_eq!(abridged_tag(0x3fff), 0x80);
    }

    #[test]
    fn constants_round() {
        assert_eq!(constant(M::Fldpi, 0).sig, 0xc90f_daa2_2168_c235);
        assert_eq!(constant(M::Fldpi, 1).sig, 0xc90f_daa2_2168_c234);
        assert_eq!(constant(M::Fldl2t, 0).sig, 0xd49a_784b_cd1b_8afe);
        assert_eq!(constant(M::Fldl2t, 2).sig, 0xd49a_784b_cd1b_8aff);
        assert_eq!(constant(M::Fldl2e, 0).sig, 0xb8aa_3b29_5c17_f0bc);
    }
}
